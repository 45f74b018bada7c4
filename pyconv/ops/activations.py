"""Elementwise activations: ``relu``, ``leaky_relu``, ``relu6``, ``elu``, ``gelu``,
``sigmoid``, ``tanh``.

They take an input of any shape (at least one axis; the output has the input's shape)
and have no parameters. They follow ``torch.nn.functional``:

========== ================================ =========================================
op         keys                             value
========== ================================ =========================================
relu                                        ``max(x, 0)``
leaky_relu ``negative_slope`` (0.01)        ``x if x > 0 else negative_slope * x``
relu6                                       ``min(max(x, 0), 6)``
elu        ``alpha`` (1.0)                  ``x if x > 0 else alpha * (exp(x) - 1)``
gelu       ``approximate`` ("none"/"tanh")  ``x * Phi(x)`` (erf), or the tanh formula
sigmoid                                     ``1 / (1 + exp(-x))``
tanh                                        ``tanh(x)``
========== ================================ =========================================

The kernels evaluate overflow-free, cancellation-free forms of these formulas (see
``pyconv/_kernels/_activations.pyx``): sigmoid and the tanh gelu through
``exp(-|x|)`` (an inline, branch-free Cephes exp that vectorises in float32, about
1 ulp), the exact gelu as ``0.5 * x * erfc(-x / sqrt(2))`` (float32: an inline,
branch-free erfc that vectorises, at most 3.4 ulp plus erfc's own sensitivity to the
rounding of its argument; float64: libc ``erfc``), so all are accurate to a few ulp
times the condition number over the whole real line. NaN gives NaN, ``-0.0`` stays ``-0.0`` where
PyTorch keeps it, and ``gelu(-inf)`` is ``-0.0`` (its limit; PyTorch returns NaN).
float32 inputs are computed in float32 (``negative_slope`` and ``alpha`` are rounded
to float32 first, as PyTorch does).

In place: ``conv.apply(x, out=x)`` overwrites a C-contiguous float32/float64 ``x``.
No extra memory is used beyond the output.

FLOPs count one per arithmetic operation, comparison or elementary function (exp,
expm1, erf, tanh) per element; see each op's ``formulas["flops"]``. MACs are 0.

Examples
--------
>>> import numpy as np, pyconv
>>> act = pyconv.Conv({"op": "leaky_relu", "negative_slope": 0.1})
>>> act.apply(np.array([[-2.0, 0.5, 3.0]]))
array([[-0.2,  0.5,  3. ]])
>>> x = np.array([-1.0, 0.0, 1.0])
>>> y = pyconv.Conv({"op": "sigmoid"}).apply(x, out=x)  # in place
>>> y is x, x.round(4).tolist()
(True, [0.2689, 0.5, 0.7311])
>>> pyconv.Conv({"op": "gelu"}).flops((2, 3))
30
"""
from __future__ import annotations

from pyconv import _threads
from pyconv._spec import choice, key, real
from pyconv.ops._base import Op, prod

# Kernel op codes (kept in sync with pyconv/_kernels/_activations.pyx).
(CODE_RELU, CODE_LEAKY_RELU, CODE_RELU6, CODE_ELU, CODE_GELU, CODE_GELU_TANH, CODE_SIGMOID,
 CODE_TANH) = range(8)

#: Work estimate per element handed to the thread policy (a cheap select is a few
#: FLOP-equivalents of memory traffic; exp/erf/tanh cost tens of FLOPs).
_CHEAP, _TRANSCENDENTAL = 8, 40


class Activation(Op):
    """An elementwise activation; subclasses set the keys, code and counts."""

    inputs = ()
    inplace_ok = True
    #: FLOPs per element (see the module docstring for the convention).
    flops_per_element = 1
    #: Work estimate per element for the thread policy.
    cost = _CHEAP

    def code(self, spec):
        raise NotImplementedError

    def param(self, spec):
        return 0.0

    def output_shape(self, spec, input_shape):
        try:
            shape = tuple(int(n) for n in input_shape)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}: input shape must be a sequence of ints; got "
                             f"{input_shape!r}") from None
        if len(shape) < 1:
            raise ValueError(f"{self.name}: expected an input with at least one axis; "
                             f"got shape {shape}")
        if any(n < 0 for n in shape):
            raise ValueError(f"{self.name}: negative size in input shape {shape}")
        return shape

    def flops(self, spec, input_shape):
        return self.flops_per_element * prod(self.output_shape(spec, input_shape))

    def receptive_field(self, spec):
        """None: an elementwise op does not change the receptive field."""
        return None

    def forward(self, spec, x, params, out, n_threads):
        from pyconv import _kernels
        _activations = _kernels.load("_activations")

        n = x.size
        n_threads = _threads.resolve(n_threads, self.cost * n, -(-n // 4096),
                                     x.nbytes + out.nbytes)
        _activations.unary(x.reshape(-1), out.reshape(-1), self.code(spec),
                           self.param(spec), n_threads)
        return out


def _flops_doc(per_element, how):
    return f"{per_element} * numel ({how})"


_OUTPUT = "same shape as the input (any rank >= 1)"


class ReLU(Activation):
    name = "relu"
    summary = "Rectified linear unit max(x, 0), elementwise (NaN propagates)."
    flops_per_element = 1
    formulas = {"output": _OUTPUT, "params": "0", "macs": "0",
                "flops": _flops_doc(1, "one max")}

    def code(self, spec):
        return CODE_RELU


class LeakyReLU(Activation):
    name = "leaky_relu"
    summary = "Leaky ReLU: x if x > 0 else negative_slope * x, elementwise."
    keys = (key("negative_slope", real(), 0.01, "Slope for x <= 0 (PyTorch default 0.01)."),)
    flops_per_element = 2
    formulas = {"output": _OUTPUT, "params": "0", "macs": "0",
                "flops": _flops_doc(2, "compare, multiply")}

    def code(self, spec):
        return CODE_LEAKY_RELU

    def param(self, spec):
        return spec["negative_slope"]


class ReLU6(Activation):
    name = "relu6"
    summary = "ReLU capped at 6: min(max(x, 0), 6), elementwise."
    flops_per_element = 2
    formulas = {"output": _OUTPUT, "params": "0", "macs": "0",
                "flops": _flops_doc(2, "max, min")}

    def code(self, spec):
        return CODE_RELU6


class ELU(Activation):
    name = "elu"
    summary = "Exponential linear unit: x if x > 0 else alpha * (exp(x) - 1)."
    keys = (key("alpha", real(), 1.0, "Scale of the negative part (PyTorch default 1.0)."),)
    flops_per_element = 3
    cost = _TRANSCENDENTAL
    formulas = {"output": _OUTPUT, "params": "0", "macs": "0",
                "flops": _flops_doc(3, "compare, expm1, multiply")}

    def code(self, spec):
        return CODE_ELU

    def param(self, spec):
        return spec["alpha"]


class GELU(Activation):
    name = "gelu"
    summary = ("Gaussian error linear unit x * Phi(x): exact (erf) or PyTorch's tanh "
               "approximation.")
    keys = (key("approximate", choice("none", "tanh"), "none",
                "'none': 0.5*x*(1 + erf(x/sqrt(2))); 'tanh': 0.5*x*(1 + tanh(sqrt(2/pi)"
                "*(x + 0.044715*x^3))), as torch.nn.functional.gelu."),)
    cost = _TRANSCENDENTAL
    formulas = {"output": _OUTPUT, "params": "0", "macs": "0",
                "flops": "5 * numel for 'none' (scale, erf, add, two multiplies); "
                         "9 * numel for 'tanh' (cube: 2, multiply, add, multiply, tanh, "
                         "add, two multiplies)"}

    def code(self, spec):
        return CODE_GELU if spec["approximate"] == "none" else CODE_GELU_TANH

    def flops(self, spec, input_shape):
        per = 5 if spec["approximate"] == "none" else 9
        return per * prod(self.output_shape(spec, input_shape))


class Sigmoid(Activation):
    name = "sigmoid"
    summary = "Logistic sigmoid 1 / (1 + exp(-x)), overflow-free for any x."
    flops_per_element = 4
    cost = _TRANSCENDENTAL
    formulas = {"output": _OUTPUT, "params": "0", "macs": "0",
                "flops": _flops_doc(4, "negate, exp, add, divide")}

    def code(self, spec):
        return CODE_SIGMOID


class Tanh(Activation):
    name = "tanh"
    summary = "Hyperbolic tangent, elementwise."
    flops_per_element = 1
    cost = _TRANSCENDENTAL
    formulas = {"output": _OUTPUT, "params": "0", "macs": "0",
                "flops": _flops_doc(1, "one tanh")}

    def code(self, spec):
        return CODE_TANH


OPS = [ReLU(), LeakyReLU(), ReLU6(), ELU(), GELU(), Sigmoid(), Tanh()]
