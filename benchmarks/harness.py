"""Timing harness shared by the benchmark scripts.

Each case runs pyconv and its peer in this one process at the same thread count:
warm-up, then ``repeats`` timed runs each, alternating pyconv and peer so drifts in
machine load hit both; the median is reported with the ratio peer / pyconv (> 1 means
pyconv is faster). Every case also checks that both give the same numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Case:
    name: str
    shape: str
    dtype: str
    run: Callable[[int], object]          # run(n_threads) -> pyconv result
    peer: Callable[[int], object] | None  # peer(n_threads) -> numpy-convertible result
    flops: float = 0.0
    nbytes: float = 0.0
    peer_name: str = "torch"
    rtol: float = 1e-4
    extra: dict = field(default_factory=dict)


def torch_conv_cases(configs, torch_keys, dtypes=(np.float32, np.float64)):
    """Cases for ops whose peer is ``torch.nn.functional.<op>(x, weight, bias, **kw)``.

    ``configs``: ``(name, input shape, spec)`` triples; ``torch_keys``: the spec keys
    passed on to torch as keyword arguments.
    """
    import torch
    import torch.nn.functional as F

    import pyconv

    cases = []
    rng = np.random.default_rng(0)
    for name, shape, spec in configs:
        for dtype in dtypes:
            conv = pyconv.Conv(spec, seed=0, dtype=dtype)
            x = rng.standard_normal(shape).astype(dtype)
            out = np.empty(conv.output_shape(shape), dtype)
            xt = torch.from_numpy(x)
            w = torch.from_numpy(np.array(conv.params["weight"]))
            b = torch.from_numpy(np.array(conv.params["bias"]))
            fn = getattr(F, spec["op"])
            kw = {k: spec[k] for k in torch_keys if k in spec}

            def run(n, conv=conv, x=x, out=out):
                return conv.apply(x, out=out, n_threads=n)

            def peer(n, fn=fn, xt=xt, w=w, b=b, kw=kw):
                with torch.no_grad():
                    return fn(xt, w, b, **kw)

            cases.append(Case(name, "x".join(map(str, shape)), np.dtype(dtype).name, run,
                              peer, flops=conv.flops(shape),
                              rtol=1e-4 if dtype == np.float32 else 1e-10))
    return cases


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _as_array(value):
    if isinstance(value, tuple):
        value = value[0]
    if hasattr(value, "detach"):
        value = value.detach().numpy()
    return np.asarray(value, dtype=np.float64)


def agreement(a, b):
    """Largest difference relative to the largest magnitude."""
    a, b = _as_array(a), _as_array(b)
    scale = max(np.abs(b).max(), 1e-30) if b.size else 1.0
    return float(np.abs(a - b).max() / scale) if a.size else 0.0


def measure_ceilings(repeats=5, threads=(1,)):
    """Machine ceilings measured here: single-thread GEMM rates and copy bandwidth.

    GEMM: 1024^3 matrix products through NumPy's OpenBLAS limited to one thread.
    Copy: ``np.copyto`` of a 64 MiB array (read + write counted; the median of at
    least 15), at each of
    ``threads`` (``copy_gbs_threads``, keyed by the thread count as a string) with the
    array split into that many slices copied by as many Python threads at once
    (``np.copyto`` releases the GIL); ``copy_gbs``: one thread. A memory-bound case at
    2 threads is held to what 2 threads can copy.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    rates = {}
    n = 1024
    with threadpool_limits(1, user_api="blas"):
        for dtype in (np.float32, np.float64):
            a = np.random.default_rng(0).random((n, n)).astype(dtype)
            a @ a
            rates[np.dtype(dtype).name] = 2 * n**3 / median_time(lambda: a @ a, repeats) / 1e9
    src = np.ones(8 << 20)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    copies = max(repeats, 15)   # a few ms each; this shared machine's bandwidth varies
    copy_gbs = 2 * src.nbytes / median_time(lambda: np.copyto(dst, src), copies) / 1e9
    by_threads = {}
    for t in threads:
        parts = [slice(src.size * i // t, src.size * (i + 1) // t) for i in range(t)]
        with ThreadPoolExecutor(t) as pool:
            def copy():
                list(pool.map(lambda part: np.copyto(dst[part], src[part]), parts))
            copy()
            by_threads[str(t)] = 2 * src.nbytes / median_time(copy, copies) / 1e9
    return {"gemm_gflops_1thread": rates, "copy_gbs": copy_gbs,
            "copy_gbs_threads": by_threads}


def copy_ceiling(ceilings, n):
    """The copy bandwidth a memory-bound case at ``n`` threads is measured against: the
    parallel copy at ``n`` threads where it was measured, else the 1-thread copy."""
    return ceilings.get("copy_gbs_threads", {}).get(str(n), ceilings["copy_gbs"])


def peak_extra_mib(fn):
    """Peak memory allocated while ``fn`` runs (workspaces and temporaries), MiB.

    NumPy reports its allocations to ``tracemalloc``, and pyconv's workspaces and
    outputs are NumPy arrays; memory a kernel mallocs itself is not seen.
    """
    import tracemalloc

    import pyconv

    pyconv.release_workspaces()  # count the scratch buffers a first call allocates
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - base) / 2**20


def _proc_status_kib(field):
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _return_free_memory():
    """Ask glibc's allocator to hand freed memory back to the system (no-op elsewhere),
    so that what earlier cases freed does not hide this one's growth."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_growth_mib(fn):
    """Peak resident memory that a call of ``fn`` adds to the process, MiB (Linux;
    NaN where the kernel offers no resettable peak).

    Scratch buffers and free outputs are released and freed heap memory returned to
    the system first; then the kernel's peak-RSS mark is reset (``5`` written to
    ``/proc/self/clear_refs``) and the result is that mark after the call
    (``VmHWM``) minus the resident size before it (``VmRSS``). Unlike
    :func:`peak_extra_mib` this sees every allocation (a kernel's own, OpenMP's,
    BLAS's), but only the pages the call touches.
    """
    import gc

    import pyconv

    pyconv.release_workspaces()
    gc.collect()
    _return_free_memory()
    try:
        before = _proc_status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        fn()
        return float("nan")
    fn()
    return max(_proc_status_kib("VmHWM") - before, 0) / 1024


def case_memory(case, n):
    """``(peak_extra_mib, peak_rss_growth_mib)`` of one call of a case at ``n``
    threads, each measured on a call of its own."""
    return (peak_extra_mib(lambda: case.run(n)),
            peak_rss_growth_mib(lambda: case.run(n)))


def set_peer_threads(n):
    """Give PyTorch ``n`` threads, if a case has imported it (no peer needs it else)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def second_opinion(case, n, mine, err, out):
    """The agreement of a case whose first results disagreed, or an AssertionError.

    pyconv's kernels give the same bits on every call; a peer need not (seen once in
    six runs of the suite: PyTorch's float32 ``lp_pool2d``, 2e-4 off the float64 result
    where pyconv's was within 1e-7). So both run once more: if pyconv's result is
    unchanged and the peer's second one agrees with it, the peer varied, and a note
    says so; anything else stops the run.
    """
    again = case.run(n)
    theirs = case.peer(n)
    second = agreement(again, theirs)
    if (np.array_equal(_as_array(again), _as_array(mine), equal_nan=True)
            and second <= case.rtol):
        out(f"# {case.name}, {n} threads: {case.peer_name}'s first result was off by "
            f"{err:.2e}, its second agrees with pyconv's unchanged one")
        return second
    raise AssertionError(f"{case.name}: pyconv and {case.peer_name} disagree "
                         f"(relative error {err:.2e} > {case.rtol:.0e}, then {second:.2e})")


def run_cases(cases, threads, repeats=7, warmup=2, out=print, ceilings=None):
    """Time every case at every thread count; return result dicts.

    ``ceilings`` (from :func:`measure_ceilings`) adds the fraction of the machine
    ceiling: GFLOP/s over (1-thread GEMM rate x threads) for compute-bound cases,
    GB/s over the copy bandwidth at the case's thread count (:func:`copy_ceiling`)
    for memory-bound ones.
    """
    results = []
    header = (f"{'case':<40} {'shape':<22} {'dtype':<8} {'thr':>3} {'pyconv ms':>10} "
              f"{'peer ms':>9} {'peer':<13} {'ratio':>6} {'GFLOP/s':>8} {'GB/s':>7} "
              f"{'ceil%':>6} {'MiB':>7} {'RSS MiB':>8} {'agree':>8}")
    out(header)
    out("-" * len(header))
    for case in cases:
        for n in threads:
            set_peer_threads(n)
            mine = case.run(n)
            err = float("nan")
            if case.peer is not None:
                theirs = case.peer(n)
                err = agreement(mine, theirs)
                if not err <= case.rtol:
                    err = second_opinion(case, n, mine, err, out)
            for _ in range(warmup):
                case.run(n)
                if case.peer is not None:
                    case.peer(n)
            t_mine, t_peer = [], []
            for _ in range(repeats):
                t_mine.append(median_time(lambda: case.run(n), 1))
                if case.peer is not None:
                    t_peer.append(median_time(lambda: case.peer(n), 1))
            ms = float(np.median(t_mine)) * 1e3
            peer_ms = float(np.median(t_peer)) * 1e3 if t_peer else float("nan")
            ratio = peer_ms / ms
            gflops = case.flops / ms / 1e6 if case.flops else float("nan")
            gbs = case.nbytes / ms / 1e6 if case.nbytes else float("nan")
            ceiling = float("nan")
            if ceilings:
                if case.nbytes:
                    ceiling = gbs / copy_ceiling(ceilings, n)
                elif case.flops:
                    rate = ceilings["gemm_gflops_1thread"].get(case.dtype)
                    ceiling = gflops / (rate * n) if rate else float("nan")
            mib, rss = case_memory(case, n)
            row = {"case": case.name, "shape": case.shape, "dtype": case.dtype,
                   "threads": n, "pyconv_ms": ms, "peer_ms": peer_ms, "peer": case.peer_name,
                   "ratio": ratio, "gflops": gflops, "gbs": gbs, "ceiling_fraction": ceiling,
                   "peak_extra_mib": mib, "peak_rss_growth_mib": rss, "agreement": err}
            results.append(row)
            out(f"{case.name:<40} {case.shape:<22} {case.dtype:<8} {n:>3} {ms:>10.2f} "
                f"{peer_ms:>9.2f} {case.peer_name:<13} {ratio:>6.2f} {gflops:>8.1f} "
                f"{gbs:>7.1f} {ceiling * 100:>6.0f} {mib:>7.1f} {rss:>8.1f} {err:>8.1e}")
    return results


def measure_memory(cases, threads, out=print):
    """Memory of every case at every thread count, timing nothing: rows with the
    identifying fields, ``peak_extra_mib`` and ``peak_rss_growth_mib`` (after one
    warm-up call, so that one-time caches such as transformed weights are not
    counted, as in :func:`run_cases`, which measures after its timed runs)."""
    results = []
    header = f"{'case':<40} {'shape':<22} {'dtype':<8} {'thr':>3} {'MiB':>7} {'RSS MiB':>8}"
    out(header)
    out("-" * len(header))
    for case in cases:
        for n in threads:
            case.run(n)
            mib, rss = case_memory(case, n)
            results.append({"case": case.name, "shape": case.shape, "dtype": case.dtype,
                            "threads": n, "peak_extra_mib": mib,
                            "peak_rss_growth_mib": rss})
            out(f"{case.name:<40} {case.shape:<22} {case.dtype:<8} {n:>3} {mib:>7.1f} "
                f"{rss:>8.1f}")
    return results


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line(ceilings=None):
    """One line naming what the numbers were measured with and on."""
    import pyconv

    parts = [f"pyconv {pyconv.__version__}", cpu_model(), f"{os.cpu_count()} CPUs"]
    if ceilings:
        rates = ceilings["gemm_gflops_1thread"]
        parts.append(f"1-thread GEMM {rates['float32']:.0f} GFLOP/s float32, "
                     f"{rates['float64']:.0f} float64")
        copies = ", ".join(f"{rate:.1f} at {n} thread{'' if n == '1' else 's'}"
                           for n, rate in ceilings.get("copy_gbs_threads", {}).items())
        parts.append(f"copy {ceilings['copy_gbs']:.1f} GB/s"
                     + (f" ({copies})" if copies else ""))
    from importlib import metadata

    for name in ("numpy", "torch", "torchvision", "scipy"):
        try:  # the installed version, without importing the package
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return "; ".join(parts)


def _rst_text(text):
    """``text`` as literal reStructuredText inline content (markup characters escaped)."""
    text = str(text).replace("\\", "\\\\")
    for ch in "*`|_[]<>:":
        text = text.replace(ch, "\\" + ch)
    return text or " "


def _fmt(value, spec, suffix=""):
    return f"{value:{spec}}{suffix}" if value == value else "n/a"  # NaN: not measured


RST_HEAD = ("case", "shape", "dtype", "threads", "pyconv ms", "peer", "peer ms",
            "ratio", "GFLOP/s or GB/s", "ceil%", "MiB", "RSS MiB")


def rst_table(results, machine=None, date=None):
    """The results as a reStructuredText ``list-table`` with the machine line on top.

    ``ratio`` is peer time / pyconv time; the rate column is GB/s for memory-bound
    cases (those with a byte count), GFLOP/s otherwise; ``ceil%``, ``MiB`` (NumPy
    allocations at their peak, :func:`peak_extra_mib`) and ``RSS MiB`` (peak resident
    growth, :func:`peak_rss_growth_mib`) as in :func:`run_cases`.
    """
    rows = []
    for r in results:
        if r.get("gbs") == r.get("gbs"):
            rate = _fmt(r["gbs"], ".1f", " GB/s")
        else:
            rate = _fmt(r.get("gflops", float("nan")), ".1f", " GFLOP/s")
        ceiling = r.get("ceiling_fraction", float("nan"))
        rows.append((r["case"], r["shape"], r["dtype"], str(r["threads"]),
                     _fmt(r["pyconv_ms"], ".2f"), r["peer"], _fmt(r["peer_ms"], ".2f"),
                     _fmt(r["ratio"], ".2f"), rate, _fmt(ceiling * 100, ".0f"),
                     _fmt(r.get("peak_extra_mib", float("nan")), ".1f"),
                     _fmt(r.get("peak_rss_growth_mib", float("nan")), ".1f")))
    date = date or time.strftime("%Y-%m-%d")
    lines = [f"Measured {date} with {_rst_text(machine or machine_line())}.", "",
             ".. list-table::", "   :header-rows: 1", ""]
    for row in (RST_HEAD, *rows):
        lines.append("   * - " + _rst_text(row[0]))
        lines += [f"     - {_rst_text(cell)}" for cell in row[1:]]
    return "\n".join(lines) + "\n"


def write_rst(path, results, machine=None, date=None):
    """Write :func:`rst_table` to ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(rst_table(results, machine, date))


def main_for(make_cases, description):
    """Command line shared by the benchmark scripts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--rst", help="write the results as a reStructuredText table")
    parser.add_argument("--only", help="run only cases whose name contains this text")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    cases = [c for c in make_cases() if not args.only or args.only in c.name]
    ceilings = measure_ceilings()
    print("# " + machine_line(ceilings))
    results = run_cases(cases, threads, repeats=args.repeats, ceilings=ceilings)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.rst:
        write_rst(args.rst, results, machine_line(ceilings))
    return results
