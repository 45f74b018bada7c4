"""Plain float64 NumPy references for the pooling ops, written from the definitions.

Padding goes through ``np.pad`` (never pyconv's tables): the input and an array of
element indices are padded the same way, so a padding cell knows which input element
it copies (-1 for none). Every window is scanned explicitly in row-major order. Slow on
purpose: use small shapes.
"""
import itertools
import math

import numpy as np

NP_PAD_MODE = {"neg_inf": "constant", "zeros": "constant", "constant": "constant",
               "reflect": "reflect", "symmetric": "symmetric", "replicate": "edge",
               "circular": "wrap"}


def out_length(length, k, s, d, lo, hi, ceil_mode):
    """PyTorch's pooling length with (lo, hi) padding; None if the output is empty."""
    ek = d * (k - 1) + 1
    num = length + lo + hi - ek + ((s - 1) if ceil_mode else 0)
    out = math.floor(num / s) + 1
    if ceil_mode and (out - 1) * s >= length + lo:
        out -= 1
    return out if out >= 1 else None


def pad_both(plane, pads, mode, value):
    """Padded values and padded source indices (-1: a cell with no source)."""
    width = [tuple(p) for p in pads]
    idx = np.arange(plane.size).reshape(plane.shape)
    if NP_PAD_MODE[mode] == "constant":
        fill = -np.inf if mode == "neg_inf" else (0.0 if mode == "zeros" else value)
        return (np.pad(plane, width, mode="constant", constant_values=fill),
                np.pad(idx, width, mode="constant", constant_values=-1))
    return (np.pad(plane, width, mode=NP_PAD_MODE[mode]),
            np.pad(idx, width, mode=NP_PAD_MODE[mode]))


def windows(out_shape, padded_shape, k, s, d):
    """For each output position, the list of in-extent padded positions of its window."""
    for o in itertools.product(*(range(n) for n in out_shape)):
        cells = []
        for t in itertools.product(*(range(kk) for kk in k)):
            pos = tuple(oo * ss + tt * dd for oo, ss, tt, dd in zip(o, s, t, d))
            if all(p < n for p, n in zip(pos, padded_shape)):
                cells.append(pos)
        yield o, cells


def _geometry(x, k, s, d, pads, ceil_mode):
    spatial = x.shape[2:]
    out = [out_length(n, kk, ss, dd, lo, hi, ceil_mode)
           for n, kk, ss, dd, (lo, hi) in zip(spatial, k, s, d, pads)]
    assert all(o is not None for o in out), "empty output"
    return tuple(out)


def max_pool(x, k, s, d, pads, ceil_mode, mode="neg_inf", value=0.0):
    """Values and indices; the first cell is taken, then ``v > m or isnan(v)``."""
    x = np.asarray(x, np.float64)
    out = _geometry(x, k, s, d, pads, ceil_mode)
    N, C = x.shape[:2]
    vals = np.empty((N, C, *out))
    inds = np.empty((N, C, *out), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            xp, ip = pad_both(x[n, c], pads, mode, value)
            for o, cells in windows(out, xp.shape, k, s, d):
                m, mi, first = -np.inf, -1, True
                for pos in cells:
                    v, vi = xp[pos], ip[pos]
                    if mode == "neg_inf" and vi < 0:
                        continue  # implicit padding never takes part
                    if first or v > m or np.isnan(v):
                        m, mi, first = v, vi, False
                vals[(n, c, *o)] = m
                inds[(n, c, *o)] = mi
    return vals, inds


def avg_pool(x, k, s, pads, ceil_mode, count_include_pad=True, divisor_override=None,
             mode="zeros", value=0.0):
    """Window sum over the padded extent divided by PyTorch's divisor."""
    x = np.asarray(x, np.float64)
    rank = len(k)
    out = _geometry(x, k, s, (1,) * rank, pads, ceil_mode)
    N, C = x.shape[:2]
    res = np.empty((N, C, *out))
    for n in range(N):
        for c in range(C):
            xp, ip = pad_both(x[n, c], pads, mode, value)
            for o, cells in windows(out, xp.shape, k, s, (1,) * rank):
                total = sum(xp[pos] for pos in cells)
                if divisor_override is not None:
                    div = divisor_override
                elif count_include_pad:
                    div = len(cells)
                else:
                    div = sum(1 for pos in cells if ip[pos] >= 0)
                res[(n, c, *o)] = total / div
    return res


def lp_pool(x, p, k, s, ceil_mode):
    """``(mean of x**p over the window * prod(k)) ** (1/p)``; p=inf: max |x|."""
    x = np.asarray(x, np.float64)
    rank = len(k)
    out = _geometry(x, k, s, (1,) * rank, [(0, 0)] * rank, ceil_mode)
    N, C = x.shape[:2]
    res = np.empty((N, C, *out))
    K = math.prod(k)
    with np.errstate(invalid="ignore"):
        for n in range(N):
            for c in range(C):
                plane = x[n, c]
                for o, cells in windows(out, plane.shape, k, s, (1,) * rank):
                    vals = np.array([plane[pos] for pos in cells])
                    if math.isinf(p):
                        a = np.abs(vals)
                        res[(n, c, *o)] = np.nan if np.isnan(a).any() else a.max()
                    else:
                        res[(n, c, *o)] = np.power(np.mean(np.power(vals, p)) * K, 1.0 / p)
    return res


def adaptive_windows(length, out):
    return [(i * length // out, -((-(i + 1) * length) // out)) for i in range(out)]


def adaptive_pool(x, out_size, kind):
    """Adaptive avg (values) or max (values, indices) by explicit loops."""
    x = np.asarray(x, np.float64)
    N, C = x.shape[:2]
    spatial = x.shape[2:]
    wins = [adaptive_windows(n, o) for n, o in zip(spatial, out_size)]
    vals = np.empty((N, C, *out_size))
    inds = np.empty((N, C, *out_size), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            plane = x[n, c]
            for o in itertools.product(*(range(m) for m in out_size)):
                ranges = [range(*wins[a][o[a]]) for a in range(len(o))]
                cells = list(itertools.product(*ranges))
                if kind == "avg":
                    vals[(n, c, *o)] = sum(plane[pos] for pos in cells) / len(cells)
                    continue
                m, mi, first = -np.inf, -1, True
                for pos in cells:
                    v = plane[pos]
                    if first or v > m or np.isnan(v):
                        m, mi, first = v, int(np.ravel_multi_index(pos, spatial)), False
                vals[(n, c, *o)] = m
                inds[(n, c, *o)] = mi
    return vals if kind == "avg" else (vals, inds)


def max_unpool(x, indices, out_spatial):
    """Zeros, then ``out[n, c].flat[indices[n, c, i]] = x[n, c, i]`` in order."""
    x = np.asarray(x, np.float64)
    N, C = x.shape[:2]
    out = np.zeros((N, C, *out_spatial))
    for n in range(N):
        for c in range(C):
            flat = out[n, c].reshape(-1)
            for v, i in zip(x[n, c].reshape(-1), indices[n, c].reshape(-1)):
                flat[i] = v
    return out
