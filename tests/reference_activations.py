"""Plain float64 references for the activations, one element at a time, from the
definitions (``math`` functions only). The exact gelu uses ``1 + erf(z) = erfc(-z)``
so that its negative tail is not lost to cancellation in the reference itself."""
import math

import numpy as np


def _relu(v, **_):
    return v if (v > 0 or math.isnan(v)) else 0.0


def _leaky_relu(v, negative_slope=0.01):
    return v if v > 0 else negative_slope * v


def _relu6(v, **_):
    if math.isnan(v):
        return v
    return min(max(v, 0.0), 6.0)


def _elu(v, alpha=1.0):
    return v if v > 0 else alpha * math.expm1(v)


def _gelu(v, approximate="none"):
    if math.isnan(v):
        return v
    if v == -math.inf:
        return -0.0
    if approximate == "none":
        return 0.5 * v * math.erfc(-v / math.sqrt(2.0))
    u = math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3) if abs(v) < 1e100 else v
    return 0.5 * v * (1.0 + math.tanh(u))


def _sigmoid(v, **_):
    if math.isnan(v):
        return v
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def _tanh(v, **_):
    return math.tanh(v)


FUNCS = {"relu": _relu, "leaky_relu": _leaky_relu, "relu6": _relu6, "elu": _elu,
         "gelu": _gelu, "sigmoid": _sigmoid, "tanh": _tanh}


def activation(spec, x):
    """float64 result of the activation ``spec`` (a dict with "op") on ``x``."""
    f = FUNCS[spec["op"]]
    keys = {k: v for k, v in spec.items() if k != "op"}
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(x.shape)
    flat_in, flat_out = x.ravel(), out.ravel()
    for i in range(flat_in.size):
        flat_out[i] = f(float(flat_in[i]), **keys)
    return out
