"""Thread scaling: pyconv conv2d and max_pool2d at 1, 2, 4, 8, 16 threads.

Two layers of a ResNet-style network, float32:

* ``conv2d`` 16x64x56x56 -> 64, 3x3, padding 1 (compute-bound; ``algorithm="auto"``),
* ``max_pool2d`` 16x64x112x112, kernel 3, stride 2, padding 1 (memory-bound).

For every thread count up to the CPUs this process may use (``--threads`` to choose),
each op runs twice to warm up and then ``--repeats`` times; the table gives the median
time, the speed-up over one thread (t1 / tn) and the parallel efficiency
(speed-up / n); with ``--threads`` not starting at 1, both are relative to the
first count given. PyTorch, when installed, is timed the same way at the same thread
count for reference (``--no-torch`` skips it). Every result is checked bit for bit
against the one-thread result (pyconv's kernels promise identical results at any
thread count) and, once, against PyTorch.

Memory-bound ops scale only as far as the memory system does: each row also gives the
copy bandwidth the same number of threads reach (``np.copyto`` of disjoint slices of
a 256 MiB array from a thread pool; NumPy releases the GIL while copying), and the
max_pool2d rows the fraction of it that they use. Compute-bound ops scale only as far
as the cores do when all are busy (clocks drop as more cores run wide vector code;
SMT siblings share one core): ``ceil`` is the speed-up that ``n`` threads reach when
each runs its own single-threaded 512x512x512 ``sgemm`` (pyconv's pinned OpenBLAS,
from one OpenMP loop, no shared work: ``n * t1 / tn``) for conv2d, and the copy
bandwidth's gain over one thread for max_pool2d; ``of ceil`` is the layer's speed-up
as a fraction of it.

A third ceiling needs no model of the machine: ``indep`` is the speed-up of ``n``
processes each running the same layer single-threaded on its own share of the batch
(``np.array_split``), all released together, over one thread on the whole batch: the
same arithmetic and memory traffic as the ``n``-thread call, with nothing shared
between the workers (processes, so that the GIL does not serialize pyconv's Python
layer, about 0.05-0.2 ms a call). Each worker times its own call; a round lasts from
the first call's start to the last one's end. ``of indep`` near 100 % says the
parallel call loses nothing to its own scheduling; what it still lacks of ``n`` is the
machine's. Where ``n`` does not divide the batch (12 threads on 16 images), the shares
are unequal and ``indep`` is lower than the machine allows.

Logical CPUs include SMT siblings: efficiency past the number of physical cores says
little. On a machine shared with other work, use it only as a rough guide.

On a shared machine one pass says little: ``--passes 3`` runs the whole measurement
three times and ends with a summary, each row the median of the passes (speed-up and
efficiency from the median times), with the range of the passes' speed-ups.

Run: ``python benchmarks/scaling.py --passes 5 --json scaling.json --rst
docs/scaling_table.rst`` (about 20 s a pass on 16 cores, most of it starting the
independent processes; about 15 s a pass at 1 and 2 threads on a 2-core machine);
``--from-json scaling.json --rst FILE`` re-renders the table without timing.
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import json
import multiprocessing
import os
import queue
import sys
import threading
import time

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _independent  # noqa: E402
from benchmarks.harness import _rst_text, agreement, machine_line  # noqa: E402

import pyconv  # noqa: E402
from pyconv._threads import cpu_count  # noqa: E402

LAYERS = [
    # name, input shape, spec, torch.nn.functional call (needs the weights by name),
    # memory-bound (GB/s reported) or not
    ("conv2d 3x3 p1", (16, 64, 56, 56),
     {"op": "conv2d", "in_channels": 64, "out_channels": 64, "kernel_size": 3,
      "padding": 1},
     lambda F, x, p: F.conv2d(x, p["weight"], p["bias"], padding=1), False),
    ("max_pool2d k3 s2 p1", (16, 64, 112, 112),
     {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
     lambda F, x, p: F.max_pool2d(x, 3, 2, 1), True),
]
THREADS = (1, 2, 4, 8, 16)


def default_threads():
    """1, 2, 4, 8, 16 up to the usable CPUs, and the CPU count itself if in between."""
    n = cpu_count()
    chosen = [t for t in THREADS if t <= n]
    if n < THREADS[-1] and n not in chosen:
        chosen.append(n)
    return chosen


def median_ms(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def copy_bandwidth(n_threads, repeats=5, nbytes=256 << 20):
    """GB/s (bytes read + written) of ``n_threads`` threads copying disjoint slices."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, src.size, n_threads + 1).astype(int)
    pieces = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with ThreadPoolExecutor(n_threads) as pool:
        def copy():
            list(pool.map(lambda p: np.copyto(*p), pieces))
        ms = median_ms(copy, repeats)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def gemm_ms(n_threads, repeats=5):
    """Median ms of ``n_threads`` independent single-threaded 512^3 sgemms, one per
    OpenMP thread (shared operands, own results; all start together and the call
    ends with the slowest)."""
    from pyconv import _kernels, _threads

    with _threads.blas_pinned:
        work = np.ones((2 + n_threads) * 512 * 512, np.float32)
        kernel = _kernels.load("_conv").warm_sgemm
        return median_ms(lambda: kernel(work, 512, n_threads), repeats)


def independent_rounds(spec, shape, n, rounds, timeout=120):
    """Run ``n`` processes, each applying the layer single-threaded to its own share of
    the batch, ``rounds`` times, all released together each time.

    Parameters
    ----------
    spec : dict
        The layer's spec (float32, parameters from seed 0).
    shape : tuple of int
        The whole batch's shape; the shares are ``np.array_split(x, n)`` (unequal
        where ``n`` does not divide the batch).
    n : int
        Worker processes: processes, not threads, so that no GIL and no shared state
        couple them. They run the same pyconv as this process.
    rounds : int
        Calls per worker.
    timeout : float
        Seconds a round may wait for the workers.

    Returns
    -------
    round_ms : list of float
        Per round, the first call's start to the last call's end, in ms (each worker
        times its own call, so the barriers' hand-over is not counted).
    shares : list of tuple
        Each worker's input shape, in worker order.

    Raises
    ------
    RuntimeError
        A worker failed (its traceback in the message), or a round timed out.
    """
    ctx = multiprocessing.get_context("spawn")
    start, end = ctx.Barrier(n + 1), ctx.Barrier(n + 1)
    reports = ctx.Queue()
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyconv.__file__)))
    procs = [ctx.Process(target=_independent.worker, daemon=True,
                         args=(spec, shape, i, n, start, end, rounds, reports, here))
             for i in range(n)]
    for p in procs:
        p.start()
    try:
        try:
            for _ in range(rounds):
                start.wait(timeout)
                end.wait(timeout)
            done = [reports.get(timeout=timeout) for _ in procs]
        except (threading.BrokenBarrierError, queue.Empty):
            done = []
        failed = [r for r in done if r[0] == "error"]
        if not done or failed:
            try:  # a failed worker reports before it breaks the barriers, but the
                failed = failed or [reports.get(timeout=10)]  # report comes on a thread
            except queue.Empty:
                pass
            raise RuntimeError("independent workers failed:\n" + (
                failed[0][2] if failed and failed[0][0] == "error" else
                f"no report within {timeout} s (a worker hung or died)"))
    finally:
        start.abort()  # frees any worker still waiting (an interrupt, a timeout)
        end.abort()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    done.sort(key=lambda r: r[1])
    spans = [r[3] for r in done]
    round_ms = [(max(s[k][1] for s in spans) - min(s[k][0] for s in spans)) * 1e3
                for k in range(rounds)]
    return round_ms, [tuple(r[2]) for r in done]


def independent_ms(spec, shape, n, repeats, warmup=2, timeout=120):
    """Median ms of :func:`independent_rounds` over ``repeats`` rounds, after
    ``warmup`` rounds."""
    round_ms, _ = independent_rounds(spec, shape, n, warmup + repeats, timeout)
    return float(np.median(round_ms[warmup:]))


def measure(threads, repeats=5, use_torch=True, out=print):
    """Time every layer at every thread count; return the result rows."""
    torch = F = None
    if use_torch:
        try:
            import torch
            import torch.nn.functional as F
        except ImportError:
            out("# torch is not installed: timing pyconv only")
    rows = []
    copy_gbs = {n: copy_bandwidth(n, repeats) for n in threads}
    gemm = {n: gemm_ms(n, repeats) for n in threads}
    ceilings = {True: {n: copy_gbs[n] / copy_gbs[threads[0]] for n in threads},
                False: {n: n / threads[0] * gemm[threads[0]] / gemm[n] for n in threads}}
    head = (f"{'layer':<20} {'shape':<16} {'thr':>3} {'pyconv ms':>10} {'speed-up':>8} "
            f"{'effic.':>7} {'ceil':>6} {'of ceil':>7} {'indep':>6} {'of ind':>7} "
            f"{'GB/s':>6} {'copy':>6} {'torch ms':>9} {'speed-up':>8} {'effic.':>7}")
    out(head)
    out("-" * len(head))
    for name, shape, spec, torch_fn, memory_bound in LAYERS:
        layer = pyconv.Conv(spec, seed=0, dtype=np.float32)
        x = _independent.batch(shape)
        out_buf = np.empty(layer.output_shape(shape), np.float32)
        # each value read or written once; GB/s only where memory is the limit
        traffic = x.nbytes + out_buf.nbytes if memory_bound else float("nan")
        if torch is not None:
            xt = torch.from_numpy(x)
            pt = {k: torch.from_numpy(np.array(v)) for k, v in layer.params.items()}
        first = base_ms = base_torch = None
        for n in threads:
            y = layer.apply(x, n_threads=n)
            if first is None:
                first = y
            elif not np.array_equal(y, first):
                raise AssertionError(f"{name}: {n} threads changed the result")
            ms = median_ms(lambda: layer.apply(x, out=out_buf, n_threads=n), repeats)
            base_ms = base_ms or ms
            indep = base_ms / independent_ms(spec, shape, n, repeats)
            row = {"layer": name, "shape": "x".join(map(str, shape)), "dtype": "float32",
                   "threads": n, "pyconv_ms": ms, "speedup": base_ms / ms,
                   "efficiency": base_ms / ms * threads[0] / n,
                   "ceiling": ceilings[memory_bound][n],
                   "of_ceiling": base_ms / ms / ceilings[memory_bound][n],
                   "independent": indep, "of_independent": base_ms / ms / indep,
                   "gbs": traffic / (ms * 1e-3) / 1e9, "copy_gbs": copy_gbs[n],
                   "torch_ms": float("nan"),
                   "torch_speedup": float("nan"), "torch_efficiency": float("nan")}
            if torch is not None:
                torch.set_num_threads(n)
                with torch.no_grad():
                    if n == threads[-1]:
                        err = agreement(y, torch_fn(F, xt, pt))
                        if not err <= 1e-4:
                            raise AssertionError(f"{name}: pyconv and torch disagree "
                                                 f"(relative error {err:.1e})")
                    t_ms = median_ms(lambda: torch_fn(F, xt, pt), repeats)
                base_torch = base_torch or t_ms
                row.update(torch_ms=t_ms, torch_speedup=base_torch / t_ms,
                           torch_efficiency=base_torch / t_ms * threads[0] / n)
            rows.append(row)
            out(f"{name:<20} {row['shape']:<16} {n:>3} {ms:>10.2f} {row['speedup']:>8.2f} "
                f"{row['efficiency']:>7.0%} {row['ceiling']:>6.2f} "
                f"{row['of_ceiling']:>7.0%} {indep:>6.2f} {row['of_independent']:>7.0%} "
                f"{row['gbs']:>6.1f} {copy_gbs[n]:>6.1f} "
                f"{row['torch_ms']:>9.2f} "
                f"{row['torch_speedup']:>8.2f} {row['torch_efficiency']:>7.0%}", flush=True)
    return rows


def summarize(passes):
    """Summarize passes of :func:`measure`.

    Parameters
    ----------
    passes : list of list of dict
        The rows of each pass, the same (layer, threads) in the same order.

    Returns
    -------
    list of dict
        One row per (layer, threads): the median over passes of every timed column,
        speed-up and efficiency recomputed from the median times, and the range of
        the passes' own speed-ups (``speedup_min``, ``speedup_max``).
    """
    summary = []
    for i, first in enumerate(passes[0]):
        same = [rows[i] for rows in passes]
        if any((r["layer"], r["threads"]) != (first["layer"], first["threads"])
               for r in same):
            raise ValueError("passes timed different rows")
        row = dict(first)
        for key in ("pyconv_ms", "torch_ms", "ceiling", "independent", "gbs", "copy_gbs"):
            row[key] = float(np.median([r[key] for r in same]))
        summary.append(row)
    for row in summary:
        base = next(r for r in summary if r["layer"] == row["layer"])
        speedups = [r["speedup"] for rows in passes for r in rows
                    if (r["layer"], r["threads"]) == (row["layer"], row["threads"])]
        row.update(speedup=base["pyconv_ms"] / row["pyconv_ms"],
                   speedup_min=min(speedups), speedup_max=max(speedups),
                   torch_speedup=base["torch_ms"] / row["torch_ms"])
        row.update(efficiency=row["speedup"] * base["threads"] / row["threads"],
                   of_ceiling=row["speedup"] / row["ceiling"],
                   of_independent=row["speedup"] / row["independent"],
                   torch_efficiency=row["torch_speedup"] * base["threads"] / row["threads"])
    return summary


def print_rows(rows, out=print):
    """Print summary rows (:func:`summarize`) as a text table."""
    head = (f"{'layer':<20} {'thr':>3} {'pyconv ms':>10} {'speed-up':>8} {'range':>11} "
            f"{'effic.':>7} {'ceil':>6} {'of ceil':>7} {'indep':>6} {'of ind':>7} "
            f"{'GB/s':>6} {'copy':>6} {'torch ms':>9} {'speed-up':>8}")
    out(head)
    out("-" * len(head))
    for r in rows:
        span = f"{r['speedup_min']:.2f}-{r['speedup_max']:.2f}"
        out(f"{r['layer']:<20} {r['threads']:>3} {r['pyconv_ms']:>10.2f} "
            f"{r['speedup']:>8.2f} {span:>11} {r['efficiency']:>7.0%} "
            f"{r['ceiling']:>6.2f} {r['of_ceiling']:>7.0%} {r['independent']:>6.2f} "
            f"{r['of_independent']:>7.0%} {r['gbs']:>6.1f} "
            f"{r['copy_gbs']:>6.1f} {r['torch_ms']:>9.2f} {r['torch_speedup']:>8.2f}")


SCALING_HEAD = ("layer", "threads", "pyconv ms", "speed-up (range)", "efficiency",
                "independent", "GEMM / copy ceiling", "GB/s", "PyTorch ms",
                "PyTorch speed-up")


def scaling_rst(rows, machine, date, passes=None):
    """The summary rows as a reStructuredText ``list-table``, the machine line on top.

    ``independent`` and ``GEMM / copy ceiling`` are speed-ups over one thread (see the
    module docstring); ``GB/s`` only for the memory-bound layers.
    """
    def fmt(value, spec):
        return f"{value:{spec}}" if value == value else "n/a"  # NaN: not measured

    what = f"medians of {passes} passes" if passes and passes > 1 else "one pass"
    lines = [f"Measured {date} with {_rst_text(machine)} ({what}).", "",
             ".. list-table::", "   :header-rows: 1", ""]
    body = []
    for r in rows:
        span = (f" ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})"
                if "speedup_min" in r and r["speedup_min"] != r["speedup_max"] else "")
        body.append((r["layer"], str(r["threads"]), fmt(r["pyconv_ms"], ".2f"),
                     fmt(r["speedup"], ".2f") + span,
                     fmt(r["efficiency"] * 100, ".0f") + " %",
                     fmt(r["independent"], ".2f"), fmt(r["ceiling"], ".2f"),
                     fmt(r["gbs"], ".0f"), fmt(r["torch_ms"], ".2f"),
                     fmt(r["torch_speedup"], ".2f")))
    for row in (SCALING_HEAD, *body):
        lines.append("   * - " + _rst_text(row[0]))
        lines += [f"     - {_rst_text(cell)}" for cell in row[1:]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", help="comma-separated thread counts (default: "
                        "1,2,4,8,16 up to the usable CPUs)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passes", type=int, default=1, help="run the whole "
                        "measurement this many times and summarize (medians)")
    parser.add_argument("--no-torch", action="store_true", help="time pyconv only")
    parser.add_argument("--json", help="write the rows and the machine line to this file")
    parser.add_argument("--rst", help="write the summary as a reStructuredText table "
                        "(e.g. docs/scaling_table.rst)")
    parser.add_argument("--from-json", help="time nothing: take the rows from this file "
                        "written by --json, for --rst")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        missing = {"speedup_min", "independent"} - set(saved["rows"][0])
        if missing:
            parser.error(f"{args.from_json} lacks {', '.join(sorted(missing))}: written "
                         "by an older scaling.py; measure again")
        print_rows(saved["rows"])
        if args.rst:
            with open(args.rst, "w", encoding="utf-8") as f:
                f.write(scaling_rst(saved["rows"], saved["machine"], saved["date"],
                                    len(saved.get("passes", ()))))
        return saved["rows"]
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else default_threads())
    if any(t < 1 for t in threads):
        parser.error("--threads expects positive ints")
    if args.passes < 1:
        parser.error("--passes expects a positive int")
    machine = machine_line()
    print("# " + machine)
    t0 = time.perf_counter()
    passes = []
    for k in range(args.passes):
        if args.passes > 1:
            print(f"# pass {k + 1} of {args.passes}")
        passes.append(measure(threads, args.repeats, use_torch=not args.no_torch))
    rows = summarize(passes)
    if args.passes > 1:
        print(f"# summary: medians of {args.passes} passes, speed-up range over passes")
        print_rows(rows)
    print(f"# {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "date": time.strftime("%Y-%m-%d"),
                       "repeats": args.repeats, "rows": rows, "passes": passes},
                      f, indent=1)
    if args.rst:
        with open(args.rst, "w", encoding="utf-8") as f:
            f.write(scaling_rst(rows, machine, time.strftime("%Y-%m-%d"), args.passes))
    return rows


if __name__ == "__main__":
    main()
