"""Large outputs reuse the memory of outputs the caller has let go of (the threshold is
lowered to 1 MiB here, to keep the arrays small)."""
import gc
import threading

import numpy as np
import pytest

import pyconv
from pyconv import _output_pool as pool


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    monkeypatch.setattr(pool, "MIN_BYTES", 1 << 20)
    gc.collect()  # outputs of earlier tests waiting in cycles come back first
    pyconv.release_workspaces()
    yield
    pyconv.release_workspaces()


def big_conv():
    # 2x16x128x128 float32 in and out: 2 MiB each, above MIN_BYTES
    return pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 16, "kernel_size": 3,
                        "padding": 1}, seed=0)


def address(a):
    return a.__array_interface__["data"][0]


def test_a_dropped_output_is_reused_and_results_stay_right(rng):
    conv = big_conv()
    x1 = rng.standard_normal((2, 16, 128, 128)).astype(np.float32)
    x2 = rng.standard_normal((2, 16, 128, 128)).astype(np.float32)
    want1 = conv.apply(x1, out=np.empty((2, 16, 128, 128), np.float32))
    want2 = conv.apply(x2, out=np.empty((2, 16, 128, 128), np.float32))
    y = conv.apply(x1)
    assert y.nbytes >= pool.MIN_BYTES and not y.flags.owndata and y.flags.writeable
    np.testing.assert_array_equal(y, want1)
    first = address(y)
    del y
    gc.collect()
    assert pool.free_bytes() == want1.nbytes
    y = conv.apply(x2)
    assert address(y) == first and pool.free_bytes() == 0
    np.testing.assert_array_equal(y, want2)


@pytest.mark.parametrize("keep", ["view", "slice of a view", "memoryview", "reshape",
                                  "base", "base of the base", "frombuffer"])
def test_memory_shared_with_anything_alive_is_not_reused(rng, keep):
    conv = big_conv()
    x1 = rng.standard_normal((2, 16, 128, 128)).astype(np.float32)
    x2 = rng.standard_normal((2, 16, 128, 128)).astype(np.float32)
    y = conv.apply(x1)
    want = y.copy()
    held = {"view": lambda a: a[1], "slice of a view": lambda a: a[1][3:, 2],
            "memoryview": memoryview, "reshape": lambda a: a.reshape(-1),
            "base": lambda a: a.base, "base of the base": lambda a: a.base.base,
            "frombuffer": lambda a: np.frombuffer(a, np.float32)}[keep](y)
    expected = np.array(held, copy=True)
    first = address(y)
    del y
    gc.collect()
    assert pool.free_bytes() == 0
    z = conv.apply(x2)  # may not land on the memory still held
    assert address(z) != first
    np.testing.assert_array_equal(np.asarray(held), expected)
    del held
    gc.collect()
    assert pool.free_bytes() == want.nbytes


def test_small_outputs_are_plain_arrays(rng):
    conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 2, "kernel_size": 3},
                       seed=0)
    y = conv.apply(rng.standard_normal((1, 2, 8, 8)))
    assert y.flags.owndata
    del y
    gc.collect()
    assert pool.free_bytes() == 0


def test_the_free_list_is_bounded_and_released(monkeypatch):
    outs = [pool.new_output((1 << 18,), np.float32)
            for _ in range(pool.MAX_FREE_PER_SIZE + 2)]
    del outs
    gc.collect()
    assert pool.free_bytes() == pool.MAX_FREE_PER_SIZE * (1 << 20)
    monkeypatch.setattr(pool, "MAX_FREE_BYTES", 3 << 20)
    pyconv.release_workspaces()
    outs = [pool.new_output((1 << 18,), np.float32) for _ in range(5)]
    del outs
    gc.collect()
    assert pool.free_bytes() == 3 << 20
    pyconv.release_workspaces()
    assert pool.free_bytes() == 0


def test_the_buffers_freed_longest_ago_make_room(monkeypatch):
    # one-off sizes fill the free list; a size used again and again still gets in
    monkeypatch.setattr(pool, "MAX_FREE_BYTES", 4 << 20)
    for k in range(6):
        out = pool.new_output(((1 << 18) + 64 * k,), np.float32)  # 1 MiB and a bit
        del out
    gc.collect()
    assert pool.free_bytes() <= 4 << 20
    for _ in range(3):
        out = pool.new_output((3 << 18,), np.float32)  # 3 MiB, again and again
        del out
        gc.collect()
        assert sum(b.nbytes == 3 << 20 for b in pool._free) == 1
        assert pool.free_bytes() <= 4 << 20


def test_concurrent_calls_get_their_own_outputs(rng):
    conv = big_conv()
    xs = [rng.standard_normal((2, 16, 128, 128)).astype(np.float32) for _ in range(4)]
    wants = [conv.apply(x, out=np.empty((2, 16, 128, 128), np.float32)) for x in xs]
    errors = []

    def work(i):
        for _ in range(10):
            y = conv.apply(xs[i], n_threads=1)
            if not np.array_equal(y, wants[i]):
                errors.append(i)
            del y

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_an_output_collected_while_the_pool_is_busy_does_not_deadlock():
    # A pooled output in a reference cycle is freed by the cyclic collector, which can
    # run in the middle of the pool's own bookkeeping, in the same thread (an
    # allocation made under the lock can set it off): its finalizer then takes the
    # lock again.
    class Cycle:
        pass

    done = threading.Event()

    def collect_under_the_lock():
        c = Cycle()
        c.self = c
        c.out = pool.new_output((1 << 18,), np.float32)
        del c
        with pool._lock:
            gc.collect()
        done.set()

    t = threading.Thread(target=collect_under_the_lock, daemon=True)
    t.start()
    t.join(timeout=30)
    assert done.is_set(), "the pool deadlocked"
    assert pool.free_bytes() == 1 << 20
