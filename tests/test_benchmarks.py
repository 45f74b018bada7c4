"""The benchmark suite's machinery: harness, RST/JSON output, the scripts' structure.

Nothing here times a real case (that is the benchmarks' job, not the tests'): the
harness runs on tiny synthetic cases, and each ``bench_*.py`` is checked to define
``make_cases`` and to import.
"""
import ast
import glob
import importlib
import json
import math
import os
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "benchmarks")
if not os.path.isfile(os.path.join(BENCH_DIR, "harness.py")):
    pytest.skip("benchmarks/ is not beside tests/ (installed-package run)",
                allow_module_level=True)
# benchmarks/ from the checkout, pyconv as installed: import it first, and put the
# checkout last, so that its source tree (unbuilt in CI) never shadows the package
import pyconv  # noqa: E402,F401

if ROOT not in sys.path:
    sys.path.append(ROOT)

from benchmarks import harness, run  # noqa: E402
from benchmarks.harness import Case  # noqa: E402

BENCH_FILES = sorted(glob.glob(os.path.join(BENCH_DIR, "bench_*.py")))
CEILINGS = {"gemm_gflops_1thread": {"float32": 100.0, "float64": 50.0}, "copy_gbs": 10.0}


def synthetic_cases():
    x = np.arange(12.0)
    return [
        Case("agreeing double*", "12", "float64", lambda n: x * 2, lambda n: x + x,
             flops=1e6, peer_name="numpy"),
        Case("memory_bound_", "12", "float32", lambda n: x.astype(np.float32),
             lambda n: x, nbytes=2e6, peer_name="numpy"),
        Case("no peer", "12", "float64", lambda n: x, None, flops=1e6),
    ]


# -- the scripts ------------------------------------------------------------------------
def test_there_are_benchmark_scripts():
    names = {os.path.basename(f) for f in BENCH_FILES}
    assert {"bench_conv.py", "bench_winograd.py", "bench_filters.py"} <= names


@pytest.mark.parametrize("path", BENCH_FILES, ids=os.path.basename)
def test_every_bench_module_defines_make_cases_and_a_main(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "make_cases" in functions, f"{os.path.basename(path)} has no make_cases()"
    assert any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
               for node in tree.body), "no `if __name__ == '__main__':` entry point"
    assert ast.get_docstring(tree), "no module docstring (the scripts' --help text)"


@pytest.mark.parametrize("name", ["bench_conv", "bench_winograd", "bench_filters",
                                  "bench_transposed", "bench_activations"])
def test_suite_modules_import_and_expose_make_cases(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.make_cases)


def test_filter_peers_use_the_matching_padding_modes():
    """pyconv 'symmetric' == ndimage 'reflect', pyconv 'reflect' == ndimage 'mirror'."""
    pytest.importorskip("scipy")
    from benchmarks import bench_filters

    rng = np.random.default_rng(0)
    image = rng.standard_normal((23, 19))
    for k in (3, 5):
        kernel = rng.standard_normal((k, k))  # not symmetric: a flip would show
        for mode in bench_filters.MODES:
            conv = pyconv.Conv({"op": "conv2d", "in_channels": 1, "out_channels": 1,
                                "kernel_size": k, "padding": "same", "padding_mode": mode,
                                "bias": False}, params={"weight": kernel[None, None]})
            mine = conv.apply(image[None, None])[0, 0]
            for peer in ("scipy.ndimage", "scipy fftconv", "scipy oaconv"):
                theirs = bench_filters._peer(peer, image, kernel, mode)(1)
                assert theirs.shape == mine.shape
                np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12,
                                           err_msg=f"{k}x{k} {mode} vs {peer}")
    other = {"symmetric": "reflect", "reflect": "symmetric"}
    wrong = bench_filters._peer("scipy.ndimage", image, kernel, other[mode])(1)
    assert harness.agreement(mine, wrong) > 1e-3  # the agreement check can fail


# -- the harness ------------------------------------------------------------------------
def test_run_cases_rows_rates_and_ceilings():
    lines = []
    rows = harness.run_cases(synthetic_cases(), [1, 2], repeats=3, warmup=1,
                             out=lines.append, ceilings=CEILINGS)
    assert [(r["case"], r["threads"]) for r in rows] == [
        ("agreeing double*", 1), ("agreeing double*", 2), ("memory_bound_", 1),
        ("memory_bound_", 2), ("no peer", 1), ("no peer", 2)]
    for r in rows:
        assert r["pyconv_ms"] > 0
        assert r["peak_extra_mib"] >= 0
        assert not r["peak_rss_growth_mib"] < 0
    compute, memory, alone = rows[1], rows[2], rows[4]
    assert compute["ratio"] == pytest.approx(compute["peer_ms"] / compute["pyconv_ms"])
    assert compute["gflops"] == pytest.approx(1e6 / compute["pyconv_ms"] / 1e6)
    assert compute["ceiling_fraction"] == pytest.approx(compute["gflops"] / (50.0 * 2))
    assert memory["ceiling_fraction"] == pytest.approx(memory["gbs"] / 10.0)
    assert compute["agreement"] == 0.0
    assert math.isnan(alone["peer_ms"]) and math.isnan(alone["ratio"])
    assert math.isnan(alone["agreement"])
    assert len(lines) == 2 + len(rows) and "ratio" in lines[0]


def test_memory_bound_cases_meet_the_copy_rate_of_their_thread_count():
    """With a parallel copy measured at each thread count, a memory-bound case is held
    to the one at its own; a count without one falls back to the 1-thread copy."""
    ceilings = {**CEILINGS, "copy_gbs_threads": {"1": 12.0, "2": 16.0}}
    rows = harness.run_cases(synthetic_cases()[1:2], [1, 2, 3], repeats=1, warmup=0,
                             out=lambda s: None, ceilings=ceilings)
    for row, copy in zip(rows, (12.0, 16.0, 10.0)):
        assert row["ceiling_fraction"] == pytest.approx(row["gbs"] / copy)
    line = harness.machine_line(ceilings)
    assert "copy 10.0 GB/s (12.0 at 1 thread, 16.0 at 2 threads)" in line


def test_measured_ceilings_include_the_parallel_copy():
    ceilings = harness.measure_ceilings(repeats=1, threads=(1, 2))
    assert set(ceilings["copy_gbs_threads"]) == {"1", "2"}
    assert all(rate > 0 for rate in ceilings["copy_gbs_threads"].values())
    assert ceilings["copy_gbs"] > 0 and ceilings["gemm_gflops_1thread"]["float32"] > 0


def test_run_cases_stops_when_pyconv_and_the_peer_disagree():
    x = np.ones(5)
    bad = Case("off by 1e-3", "5", "float64", lambda n: x, lambda n: x * (1 + 1e-3),
               peer_name="numpy", rtol=1e-4)
    with pytest.raises(AssertionError, match="off by 1e-3: pyconv and numpy disagree"):
        harness.run_cases([bad], [1], repeats=1, out=lambda s: None)
    nan = Case("nan", "5", "float64", lambda n: x * np.nan, lambda n: x, peer_name="numpy")
    with pytest.raises(AssertionError, match="disagree"):
        harness.run_cases([nan], [1], repeats=1, out=lambda s: None)


def test_a_peer_that_varies_gets_a_second_look_and_a_note():
    """pyconv's result unchanged, the peer's first result off and its second right:
    the run goes on with a note; a peer off twice, or a pyconv result that changes,
    still stops it."""
    x = np.ones(5)
    answers = iter([x * (1 + 1e-3), x])
    flaky = Case("flaky peer", "5", "float64", lambda n: x, lambda n: next(answers, x),
                 peer_name="numpy", rtol=1e-4)
    lines = []
    rows = harness.run_cases([flaky], [1], repeats=1, warmup=0, out=lines.append)
    assert rows[0]["agreement"] == 0.0
    assert any("numpy's first result was off by 9.99e-04" in line for line in lines)
    mine = iter([x, x * 2])
    changing = Case("changing pyconv", "5", "float64", lambda n: next(mine, x),
                    lambda n: x * (1 + 1e-3), peer_name="numpy", rtol=1e-4)
    with pytest.raises(AssertionError, match="disagree"):
        harness.run_cases([changing], [1], repeats=1, out=lambda s: None)


def _can_reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset_peak_rss(), reason="no resettable peak RSS (Linux)")
def test_peak_rss_growth_sees_what_a_call_touches_even_outside_numpy():
    import ctypes

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 << 20

    def c_buffer():      # what a kernel's own malloc would do: NumPy never sees it
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        libc.free(p)

    def numpy_buffer():
        np.ones(size // 8).sum()

    def nothing():
        pass

    assert harness.peak_rss_growth_mib(c_buffer) > 60
    assert harness.peak_extra_mib(c_buffer) < 1
    assert harness.peak_rss_growth_mib(numpy_buffer) > 60
    assert harness.peak_extra_mib(numpy_buffer) > 60
    assert harness.peak_rss_growth_mib(nothing) < 8


def test_memory_only_run_fills_the_memory_columns_of_a_timed_run(tmp_path, monkeypatch):
    fake_suite(monkeypatch)
    run.main(["--threads", "1", "--repeats", "1", "--json", str(tmp_path / "t.json")])
    timed = json.loads((tmp_path / "t.json").read_text())["results"]
    for row in timed:    # an older file: no memory columns
        del row["peak_extra_mib"], row["peak_rss_growth_mib"]
    (tmp_path / "old.json").write_text(json.dumps({"results": timed}))
    monkeypatch.setattr(run, "run_cases", lambda *a, **k: pytest.fail("timed"))
    memory = run.main(["--threads", "1", "--memory-only", "--json", str(tmp_path / "m.json")])
    cases = [(r["case"], r["threads"]) for r in timed]
    assert [(r["case"], r["threads"]) for r in memory] == cases
    assert all(set(r) == {"case", "shape", "dtype", "threads", "peak_extra_mib",
                          "peak_rss_growth_mib"} for r in memory)
    memory[0]["peak_rss_growth_mib"] = 123.25   # a value to find in the table
    (tmp_path / "m.json").write_text(json.dumps({"results": memory[:1]}))
    rows = run.main(["--from-json", str(tmp_path / "old.json"), "--memory-json",
                     str(tmp_path / "m.json"), "--rst", str(tmp_path / "t.rst")])
    assert rows[0]["peak_rss_growth_mib"] == 123.25
    assert "peak_rss_growth_mib" not in rows[1]         # not in the memory file: kept
    assert "     - 123.2" in (tmp_path / "t.rst").read_text()
    with pytest.raises(SystemExit):
        run.main(["--memory-json", str(tmp_path / "m.json")])


def test_agreement_is_relative_to_the_peer_magnitude():
    assert harness.agreement(np.array([100.0, 1.0]), np.array([100.0, 2.0])) == 0.01
    assert harness.agreement(np.empty(0), np.empty(0)) == 0.0


# -- RST and JSON output ----------------------------------------------------------------
def rows_of_synthetic_cases():
    return harness.run_cases(synthetic_cases(), [1], repeats=1, warmup=0,
                             out=lambda s: None, ceilings=CEILINGS)


def test_rst_table_has_the_machine_line_every_column_and_escaped_names():
    rows = rows_of_synthetic_cases()
    text = harness.rst_table(rows, machine="pyconv 9.9; Some CPU; 2 CPUs",
                             date="2001-02-03")
    lines = text.splitlines()
    assert lines[0] == "Measured 2001-02-03 with pyconv 9.9; Some CPU; 2 CPUs."
    assert ".. list-table::" in lines and "   :header-rows: 1" in lines
    cells = [line.split("- ", 1)[1] for line in lines
             if line.lstrip().startswith(("* -", "- "))]
    assert cells[:len(harness.RST_HEAD)] == list(harness.RST_HEAD)
    assert len(cells) == len(harness.RST_HEAD) * (1 + len(rows))
    width = len(harness.RST_HEAD)
    by_row = [cells[i:i + width] for i in range(0, len(cells), width)]
    assert by_row[1][0] == r"agreeing double\*" and by_row[2][0] == r"memory\_bound\_"
    assert by_row[1][8].endswith(" GFLOP/s") and by_row[2][8].endswith(" GB/s")
    assert by_row[3][5:8] == ["torch", "n/a", "n/a"]  # no peer: nothing to report
    assert float(by_row[1][7]) > 0 and float(by_row[1][9]) >= 0


def test_rst_table_is_valid_restructuredtext():
    docutils_core = pytest.importorskip("docutils.core")
    text = harness.rst_table(rows_of_synthetic_cases(), machine="m")
    messages = []
    doctree = docutils_core.publish_doctree(
        text, settings_overrides={"report_level": 1, "halt_level": 5,
                                  "warning_stream": False})
    messages = [m for m in doctree.findall() if m.tagname == "system_message"]
    assert not messages, [m.astext() for m in messages]
    table = [n for n in doctree.findall() if n.tagname == "table"]
    assert len(table) == 1
    assert "agreeing double*" in table[0].astext()


def fake_suite(monkeypatch):
    monkeypatch.setattr(run, "measure_ceilings", lambda threads=(1,): CEILINGS)
    monkeypatch.setattr(run, "collect_cases", lambda only, modules: synthetic_cases())


def test_run_writes_json_and_rst_and_rerenders_from_json(tmp_path, monkeypatch, capsys):
    fake_suite(monkeypatch)
    results = run.main(["--threads", "1", "--repeats", "1", "--json",
                        str(tmp_path / "r.json"), "--rst", str(tmp_path / "t.rst")])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["ceilings"] == CEILINGS and saved["results"] == json.loads(
        json.dumps(results))
    assert saved["machine"].startswith("pyconv ") and "GEMM 100 GFLOP/s" in saved["machine"]
    table = (tmp_path / "t.rst").read_text()
    assert table.startswith(f"Measured {saved['date']} with pyconv ")
    assert "agreeing double\\*" in table
    # Re-rendering from the file times nothing and gives the same table.
    monkeypatch.setattr(run, "run_cases", lambda *a, **k: pytest.fail("timed again"))
    run.main(["--from-json", str(tmp_path / "r.json"), "--rst", str(tmp_path / "u.rst")])
    assert (tmp_path / "u.rst").read_text() == table
    # A family script's --json (a plain list of rows) renders too.
    (tmp_path / "rows.json").write_text(json.dumps(saved["results"]))
    run.main(["--from-json", str(tmp_path / "rows.json"), "--rst", str(tmp_path / "v.rst")])
    assert "memory\\_bound\\_" in (tmp_path / "v.rst").read_text()
    assert "# geometric mean ratio" in capsys.readouterr().out


def test_from_json_of_several_runs_keeps_each_case_median_run(tmp_path):
    def row(case, ratio, ms):
        return {"case": case, "shape": "1", "dtype": "float32", "threads": 2,
                "pyconv_ms": ms, "peer_ms": ms * ratio, "ratio": ratio}
    runs = [[row("a", 1.0, 3.0), row("b", 5.0, 1.0)],
            [row("a", 3.0, 1.0), row("b", 4.0, 1.5)],
            [row("a", 2.0, 2.0)]]
    paths = []
    for i, rows in enumerate(runs):
        paths.append(str(tmp_path / f"r{i}.json"))
        with open(paths[-1], "w") as f:
            json.dump({"machine": "m", "date": "d", "results": rows}, f)
    results, machine, date = run.load_runs(paths)
    by_case = {r["case"]: r for r in results}
    assert by_case["a"] == row("a", 2.0, 2.0)          # the middle of 1, 2, 3
    assert by_case["b"] == row("b", 4.0, 1.5)          # the lower of two
    assert machine == "m; each row: the median-ratio run of up to 3 runs" and date == "d"


def test_run_png_chart(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    fake_suite(monkeypatch)
    run.main(["--threads", "1", "--repeats", "1", "--png", str(tmp_path / "r.png")])
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- scaling script ---------------------------------------------------------------------
@pytest.mark.parametrize("cpus, expected", [(1, [1]), (2, [1, 2]), (12, [1, 2, 4, 8, 12]),
                                            (16, [1, 2, 4, 8, 16]),
                                            (64, [1, 2, 4, 8, 16])])
def test_scaling_thread_counts_are_capped_at_the_cpus(monkeypatch, cpus, expected):
    from benchmarks import scaling

    monkeypatch.setattr(scaling, "cpu_count", lambda: cpus)
    assert scaling.default_threads() == expected


def test_scaling_summary_takes_medians_over_passes():
    from benchmarks import scaling

    def row(threads, ms, torch_ms, speedup):
        return {"layer": "conv", "threads": threads, "pyconv_ms": ms, "speedup": speedup,
                "torch_ms": torch_ms, "ceiling": threads / 2, "independent": threads / 4,
                "gbs": float("nan"),
                "copy_gbs": 10.0 * threads}

    passes = [[row(1, 10.0, 20.0, 1.0), row(4, 4.0, 5.0, 2.5)],
              [row(1, 12.0, 22.0, 1.0), row(4, 3.0, 6.0, 4.0)],
              [row(1, 11.0, 21.0, 1.0), row(4, 5.0, 7.0, 2.2)]]
    one, four = scaling.summarize(passes)
    assert (one["pyconv_ms"], four["pyconv_ms"], four["torch_ms"]) == (11.0, 4.0, 6.0)
    assert four["speedup"] == 11.0 / 4.0 and four["efficiency"] == 11.0 / 16.0
    assert (four["speedup_min"], four["speedup_max"]) == (2.2, 4.0)
    assert four["of_ceiling"] == 11.0 / 4.0 / 2.0 and four["torch_speedup"] == 21.0 / 6.0
    assert four["of_independent"] == 11.0 / 4.0 / 1.0
    with pytest.raises(ValueError, match="different rows"):
        scaling.summarize([passes[0], passes[1][::-1]])


def test_scaling_independent_processes_time_the_shares():
    from benchmarks import scaling

    spec = {"op": "max_pool2d", "kernel_size": 2}
    round_ms, shares = scaling.independent_rounds(spec, (5, 3, 16, 16), 2, rounds=3)
    assert shares == [(3, 3, 16, 16), (2, 3, 16, 16)]  # np.array_split's shares
    assert len(round_ms) == 3 and all(0 < ms < 10_000 for ms in round_ms)
    assert 0 < scaling.independent_ms(spec, (2, 3, 16, 16), 2, repeats=2, warmup=1)


def test_scaling_independent_worker_failure_is_reported_not_waited_for():
    from benchmarks import scaling

    spec = {"op": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="independent workers failed(.|\n)*channels"):
        scaling.independent_ms(spec, (2, 5, 8, 8), 2, repeats=2, warmup=1, timeout=60)
    assert time.perf_counter() - t0 < 50  # reported by the worker, not timed out


def test_scaling_rst_table_is_valid_and_has_every_row(tmp_path):
    docutils_core = pytest.importorskip("docutils.core")
    from benchmarks import scaling

    nan = float("nan")
    rows = [{"layer": "conv_2d*", "threads": t, "pyconv_ms": 8.0 / t, "speedup": float(t),
             "speedup_min": t - 0.5 * (t > 1), "speedup_max": float(t), "efficiency": 1.0,
             "independent": t * 0.9, "of_independent": 1 / 0.9, "ceiling": t * 0.8,
             "of_ceiling": 1 / 0.8, "gbs": nan, "copy_gbs": 10.0, "torch_ms": nan,
             "torch_speedup": nan} for t in (1, 2)]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"machine": "m: 2 CPUs", "date": "2001-02-03",
                                "rows": rows, "passes": [rows, rows, rows]}))
    rst = tmp_path / "t.rst"
    scaling.main(["--from-json", str(path), "--rst", str(rst)])
    text = rst.read_text()
    assert text.startswith("Measured 2001-02-03 with m\\: 2 CPUs (medians of 3 passes).")
    doctree = docutils_core.publish_doctree(
        text, settings_overrides={"report_level": 1, "halt_level": 5,
                                  "warning_stream": False})
    assert not [m for m in doctree.findall() if m.tagname == "system_message"]
    cells = [n.astext() for n in doctree.findall() if n.tagname == "entry"]
    width = len(scaling.SCALING_HEAD)
    assert len(cells) == width * 3 and cells[:width] == list(scaling.SCALING_HEAD)
    assert cells[width:width + 5] == ["conv_2d*", "1", "8.00", "1.00", "100 %"]
    assert cells[2 * width + 3] == "2.00 (1.50-2.00)" and cells[-1] == "n/a"


def test_timed_command_line_runs_restart_once_with_steady_malloc(monkeypatch):
    """From the command line, a timed run execs itself again with STEADY_MALLOC (and
    the same arguments); with GLIBC_TUNABLES set, with --malloc default, or for runs
    that time nothing, it does not."""
    calls = []

    class Restarted(Exception):
        pass

    def fake_execve(path, args, env):
        calls.append((path, args, env.get("GLIBC_TUNABLES")))
        raise Restarted

    monkeypatch.setattr(run.os, "execve", fake_execve)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(run.sys, "platform", "linux")
    monkeypatch.setattr(run.sys, "argv", ["run.py", "--only", "x", "--threads", "1"])
    with pytest.raises(Restarted):
        run.main()
    path, args, tunables = calls[0]
    assert path == sys.executable and args[1].endswith("run.py")
    assert args[2:] == ["--only", "x", "--threads", "1"] and tunables == run.STEADY_MALLOC
    fake_suite(monkeypatch)
    monkeypatch.setattr(run.sys, "argv", ["run.py", "--threads", "1", "--repeats", "1",
                                          "--malloc", "default"])
    run.main()
    monkeypatch.setenv("GLIBC_TUNABLES", run.STEADY_MALLOC)
    monkeypatch.setattr(run.sys, "argv", ["run.py", "--threads", "1", "--repeats", "1"])
    assert run.main() and len(calls) == 1
