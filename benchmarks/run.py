"""The benchmark suite: every ``benchmarks/bench_*.py`` module's cases in one run.

Each module defines ``make_cases()`` returning :class:`benchmarks.harness.Case`
objects. Cases whose peer is not installed are skipped with a note.

Run from the repository root::

    python -m benchmarks.run --threads 1,2 --json results.json --png ratios.png
    python -m benchmarks.run --threads 1,2 --rst docs/performance_table.rst

``--from-json results.json`` renders ``--rst``/``--png`` from an earlier run's file
without timing anything again. Given several files (repeated runs of the same cases,
e.g. on a shared machine), each row is taken from the run whose ratio is the median
of that case's ratios, and the table names the files' count.

``--memory-only --json memory.json`` times nothing: it measures each case's peak
memory (NumPy allocations and resident-set growth, one call after a warm-up);
``--memory-json memory.json`` beside ``--from-json`` puts those columns into the
rows of the same cases.

Timed runs from the command line restart themselves once with glibc's malloc set
never to hand memory back to the kernel (:data:`STEADY_MALLOC`; ``--malloc default``
keeps glibc's defaults). Every PyTorch call allocates its output, and oneDNN its
scratch; with the defaults, whether those come back as fresh pages depends on the
machine's state: the grouped 8x256x56x56 layer took 18,800 page faults per PyTorch
call in some processes (24-28 ms) and none in others (8-9 ms). The setting times
the kernels, not the page faults, for the peers and for pyconv's "new output" cases.
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

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import (machine_line, measure_ceilings,  # noqa: E402
                                measure_memory, run_cases, write_rst)


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


def load_runs(paths):
    """``(results, machine, date)`` from ``--json`` files (or a family's row lists).

    With several files, each case (name, shape, dtype, threads) keeps the row of the
    run with the median ratio (the lower middle one for an even count), so that every
    column of a row comes from one measurement; cases missing from some files keep
    the rows they have. Machine line and date are the first file's.
    """
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if isinstance(saved, list):  # a family script's --json: results only
            saved = {"results": saved}
        runs.append(saved)
    machine, date = runs[0].get("machine"), runs[0].get("date")
    if len(runs) == 1:
        return runs[0]["results"], machine, date
    rows = {}
    for saved in runs:
        for row in saved["results"]:
            key = (row["case"], row["shape"], row["dtype"], row["threads"])
            rows.setdefault(key, []).append(row)
    results = []
    for candidates in rows.values():
        ranked = sorted(candidates, key=lambda r: (not np.isfinite(r["ratio"]), r["ratio"]))
        results.append(ranked[(len(ranked) - 1) // 2])
    most = max(len(c) for c in rows.values())
    if machine:
        machine = f"{machine}; each row: the median-ratio run of up to {most} runs"
    return results, machine, date


MEMORY_COLUMNS = ("peak_extra_mib", "peak_rss_growth_mib")


def with_memory(results, path):
    """``results`` with the memory columns of the same cases (name, shape, dtype,
    threads) taken from a ``--memory-only`` file; rows it lacks keep theirs."""
    rows, _, _ = load_runs([path])
    memory = {(r["case"], r["shape"], r["dtype"], r["threads"]): r for r in rows}
    merged = []
    for row in results:
        found = memory.get((row["case"], row["shape"], row["dtype"], row["threads"]))
        merged.append(row if found is None else
                      {**row, **{k: found[k] for k in MEMORY_COLUMNS if k in found}})
    return merged


#: glibc tunables for timed runs: no allocation is mmap'ed or trimmed, so freed memory
#: is reused rather than returned and faulted in again.
STEADY_MALLOC = ("glibc.malloc.mmap_threshold=4294967296:"
                 "glibc.malloc.trim_threshold=17179869184")


def restart_with_steady_malloc(argv):
    """Run this command again (same interpreter and arguments) with
    :data:`STEADY_MALLOC`, unless GLIBC_TUNABLES is set already or this is not Linux;
    returns only in those cases."""
    if "GLIBC_TUNABLES" in os.environ or not sys.platform.startswith("linux"):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv],
              dict(os.environ, GLIBC_TUNABLES=STEADY_MALLOC))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", help="run only cases whose name contains this text")
    parser.add_argument("--modules", help="comma-separated families (conv, pooling, ...)")
    parser.add_argument("--json", help="write results (and ceilings) to this file; with "
                        "--from-json, the merged results")
    parser.add_argument("--png", help="write a bar chart of the ratios (matplotlib)")
    parser.add_argument("--rst", help="write the results as a reStructuredText table "
                        "(e.g. docs/performance_table.rst)")
    parser.add_argument("--from-json", metavar="FILE", nargs="+",
                        help="time nothing: take the results (and machine line) from "
                        "these files written by --json, for --rst/--png (several "
                        "files: the median run of each case)")
    parser.add_argument("--memory-only", action="store_true",
                        help="time nothing: measure each case's peak memory (for "
                        "--memory-json)")
    parser.add_argument("--memory-json", metavar="FILE",
                        help="with --from-json: take the memory columns from this "
                        "file written by --memory-only --json")
    parser.add_argument("--malloc", choices=("steady", "default"), default="steady",
                        help="timed runs from the command line: restart with glibc's "
                        "malloc never returning memory (steady, see above) or not")
    args = parser.parse_args(argv)
    if args.memory_json and not args.from_json:
        parser.error("--memory-json goes with --from-json")
    if argv is None and args.malloc == "steady" and not (args.from_json
                                                         or args.memory_only):
        restart_with_steady_malloc(sys.argv[1:])

    if args.memory_only:
        threads = [int(t) for t in args.threads.split(",")]
        machine, date = machine_line(), time.strftime("%Y-%m-%d")
        print("# " + machine)
        modules = args.modules.split(",") if args.modules else None
        results = measure_memory(collect_cases(args.only, modules), threads)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "date": date, "results": results}, f,
                          indent=1)
        return results
    if args.from_json:
        results, machine, date = load_runs(args.from_json)
        if args.memory_json:
            results = with_memory(results, args.memory_json)
        if args.json:   # the merged rows, for a later --from-json
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "date": date, "results": results}, f,
                          indent=1)
    else:
        threads = [int(t) for t in args.threads.split(",")]
        ceilings = measure_ceilings(threads=threads)
        machine, date = machine_line(ceilings), time.strftime("%Y-%m-%d")
        tunables = os.environ.get("GLIBC_TUNABLES")
        if tunables:
            machine += f"; GLIBC_TUNABLES={tunables}"
        print("# " + machine)
        modules = args.modules.split(",") if args.modules else None
        cases = collect_cases(args.only, modules)
        results = run_cases(cases, threads, repeats=args.repeats, ceilings=ceilings)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "date": date, "ceilings": ceilings,
                           "results": results}, f, indent=1)
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
