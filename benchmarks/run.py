"""The benchmark suite: every ``benchmarks/bench_*.py`` module's cases in one run.

Each module defines ``make_cases()`` returning :class:`benchmarks.harness.Case`
objects. Cases whose peer is not installed are skipped with a note.

Run from the repository root::

    python -m benchmarks.run --threads 1,2 --json results.json --png ratios.png
    python -m benchmarks.run --threads 1,2 --rst docs/performance_table.rst

``--from-json results.json`` renders ``--rst``/``--png`` from an earlier run's file
without timing anything again.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import (machine_line, measure_ceilings, run_cases,  # noqa: E402
                                write_rst)


def collect_cases(only=None, modules=None):
    here = os.path.dirname(os.path.abspath(__file__))
    cases = []
    for info in sorted(pkgutil.iter_modules([here]), key=lambda m: m.name):
        if not info.name.startswith("bench_"):
            continue
        if modules and info.name.removeprefix("bench_") not in modules:
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        make = getattr(module, "make_cases", None)
        if make is None:
            continue
        try:
            found = make()
        except ImportError as e:
            print(f"# skipped {info.name}: {e}")
            continue
        cases.extend(c for c in found if not only or only in c.name)
    return cases


def plot_ratios(results, path):
    """A horizontal bar chart of peer time / pyconv time (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['case']}  {r['shape']} {r['dtype']} ({r['threads']}t)" for r in results]
    ratios = [r["ratio"] for r in results]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(labels) + 1.2))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in ratios]
    ax.barh(range(len(labels)), ratios, color=colors)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("peer time / pyconv time (> 1: pyconv faster)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", help="run only cases whose name contains this text")
    parser.add_argument("--modules", help="comma-separated families (conv, pooling, ...)")
    parser.add_argument("--json", help="write results (and ceilings) to this file")
    parser.add_argument("--png", help="write a bar chart of the ratios (matplotlib)")
    parser.add_argument("--rst", help="write the results as a reStructuredText table "
                        "(e.g. docs/performance_table.rst)")
    parser.add_argument("--from-json", metavar="FILE",
                        help="time nothing: take the results (and machine line) from "
                        "this file written by --json, for --rst/--png")
    args = parser.parse_args(argv)

    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            saved = json.load(f)
        if isinstance(saved, list):  # a family script's --json: results only
            saved = {"results": saved}
        results, machine, date = saved["results"], saved.get("machine"), saved.get("date")
    else:
        threads = [int(t) for t in args.threads.split(",")]
        ceilings = measure_ceilings()
        machine, date = machine_line(ceilings), time.strftime("%Y-%m-%d")
        print("# " + machine)
        modules = args.modules.split(",") if args.modules else None
        cases = collect_cases(args.only, modules)
        results = run_cases(cases, threads, repeats=args.repeats, ceilings=ceilings)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "date": date, "ceilings": ceilings, "results": results},
                          f, indent=1)
    if args.rst:
        write_rst(args.rst, results, machine, date)
    if args.png:
        plot_ratios(results, args.png)
    finite = [r["ratio"] for r in results if np.isfinite(r["ratio"])]
    if finite:
        print(f"# geometric mean ratio: {np.exp(np.mean(np.log(finite))):.2f}")
    return results


if __name__ == "__main__":
    main()
