"""Elementwise activations over a flat, contiguous array (in place allowed).

Each thread takes one contiguous slice of the array (aligned to a cache line, so two
threads never write the same line), and every element is computed by the same scalar
formula whatever the split: results are bit-identical for any thread count. ``x`` and
``out`` may be the same buffer; each element is read before it is written. No extra
memory.

Formulas are chosen to be accurate and overflow-free over the whole real line:

* sigmoid: ``e = exp(-|x|)``, ``1/(1+e)`` or ``e/(1+e)``: ``exp`` never overflows.
* gelu (erf): ``0.5*x*erfc(-x/sqrt 2)``, equal to ``0.5*x*(1+erf(x/sqrt 2))`` but
  without the cancellation of ``1 + erf`` for negative x (relative accuracy in the tail).
* gelu (tanh): ``0.5*(1+tanh(u)) = sigmoid(2u)``, computed as above.
* elu: ``alpha*expm1(x)`` (accurate near 0).

NaN inputs give NaN (as PyTorch). ``x = -inf`` gives ``-0.0`` for both gelus (the
limit; ``-inf * 0`` would be NaN).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport (INFINITY, erfc, erfcf, exp, expf, expm1, expm1f, fabs, fabsf,
                        tanh, tanhf)

# Op codes (kept in sync with pyconv/ops/activations.py).
cdef enum:
    RELU = 0
    LEAKY_RELU = 1
    RELU6 = 2
    ELU = 3
    GELU = 4
    GELU_TANH = 5
    SIGMOID = 6
    TANH = 7

# Slice boundaries are multiples of this many elements (64 bytes of float32).
cdef enum:
    ALIGN = 16

cdef double SQRT1_2 = 0.70710678118654752440
cdef double SQRT_2_OVER_PI = 0.79788456080286535588
cdef double GELU_CUBIC = 0.044715


cdef inline floating f_exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating f_abs(floating v) noexcept nogil:
    if floating is float:
        return fabsf(v)
    else:
        return fabs(v)


cdef inline floating f_sigmoid(floating v) noexcept nogil:
    # exp(-|v|) is in (0, 1]: no overflow; NaN stays NaN through e.
    cdef floating e = f_exp(-f_abs(v))
    cdef floating r = 1 / (1 + e)
    return r if v >= 0 else e * r


cdef void relu_loop(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        y[i] = 0 if v < 0 else v  # NaN and -0.0 pass through, as PyTorch


cdef void leaky_loop(const floating* x, floating* y, Py_ssize_t n,
                     floating slope) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        y[i] = v if v > 0 else v * slope


cdef void relu6_loop(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        v = 0 if v < 0 else v
        y[i] = 6 if v > 6 else v


cdef void elu_loop(const floating* x, floating* y, Py_ssize_t n,
                   floating alpha) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        if v > 0:
            y[i] = v
        elif floating is float:
            y[i] = alpha * expm1f(v)
        else:
            y[i] = alpha * expm1(v)


cdef void gelu_loop(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v, r
    cdef floating c = <floating>SQRT1_2
    cdef floating half = 0.5  # a floating constant: no promotion of float32 to double
    for i in range(n):
        v = x[i]
        if floating is float:
            r = half * v * erfcf(-v * c)
        else:
            r = half * v * erfc(-v * c)
        y[i] = -0.0 if v == -INFINITY else r


cdef void gelu_tanh_loop(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v, u
    cdef floating c = <floating>SQRT_2_OVER_PI
    cdef floating k = <floating>GELU_CUBIC
    for i in range(n):
        v = x[i]
        u = c * (v + k * v * v * v)
        y[i] = -0.0 if v == -INFINITY else v * f_sigmoid(2 * u)


cdef void sigmoid_loop(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = f_sigmoid(x[i])


cdef void tanh_loop(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if floating is float:
            y[i] = tanhf(x[i])
        else:
            y[i] = tanh(x[i])


cdef inline void run_slice(int kind, const floating* x, floating* y, Py_ssize_t n,
                           floating param) noexcept nogil:
    if kind == RELU:
        relu_loop(x, y, n)
    elif kind == LEAKY_RELU:
        leaky_loop(x, y, n, param)
    elif kind == RELU6:
        relu6_loop(x, y, n)
    elif kind == ELU:
        elu_loop(x, y, n, param)
    elif kind == GELU:
        gelu_loop(x, y, n)
    elif kind == GELU_TANH:
        gelu_tanh_loop(x, y, n)
    elif kind == SIGMOID:
        sigmoid_loop(x, y, n)
    else:
        tanh_loop(x, y, n)


def unary(const floating[::1] x, floating[::1] out, int kind, double param,
          int n_threads):
    """out[i] = f(x[i]) for the activation ``kind``; ``out`` may be ``x`` itself.

    ``param`` is leaky_relu's negative slope or elu's alpha (cast to the dtype, as
    PyTorch casts it); other ops ignore it.
    """
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t per, t, lo, hi
    cdef floating p = <floating>param
    if n == 0:
        return
    if n_threads < 1:
        n_threads = 1
    # Slice length rounded up to ALIGN elements; the last slice takes the rest.
    per = (n + n_threads - 1) // n_threads
    per = (per + ALIGN - 1) // ALIGN * ALIGN
    for t in prange(n_threads, nogil=True, schedule='static', num_threads=n_threads):
        lo = t * per
        hi = lo + per
        if hi > n:
            hi = n
        if lo < hi:
            run_slice(kind, &x[0] + lo, &out[0] + lo, hi - lo, p)
