"""Elementwise activations over a flat, contiguous array (in place allowed).

Each thread takes one contiguous slice of the array (aligned to a cache line, so two
threads never write the same line), and every element is computed by the same scalar
formula whatever the split: results are bit-identical for any thread count. ``x`` and
``out`` may be the same buffer; each element is read before it is written. No extra
memory.

Formulas are chosen to be accurate and overflow-free over the whole real line:

* sigmoid: ``e = exp(-|x|)``, ``1/(1+e)`` or ``e/(1+e)``: ``exp`` never overflows
  (an inline exp for arguments <= 0, below, so that the loop vectorises).
* gelu (erf): ``0.5*x*erfc(-x/sqrt 2)``, equal to ``0.5*x*(1+erf(x/sqrt 2))`` but
  without the cancellation of ``1 + erf`` for negative x (relative accuracy in the tail).
  float32 uses an inline, branch-free erfc (below) so that the loop vectorises; float64
  calls libc's erfc.

The float32 polynomials are evaluated by Estrin's scheme and the long formulas run
over two halves of the slice at once: both shorten the dependency chains that left
these loops latency-bound.
* gelu (tanh): ``0.5*(1+tanh(u)) = sigmoid(2u)``, computed as above.
* elu: ``alpha*expm1(x)`` (accurate near 0).

NaN inputs give NaN (as PyTorch). ``x = -inf`` gives ``-0.0`` for both gelus (the
limit; ``-inf * 0`` would be NaN).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY, erfc, expm1, expm1f, tanh, tanhf

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Branch-free helpers, so that the loops using them vectorise: libc's exp is a
       call per element, and gcc (under the default -ftrapping-math) will not turn a
       branch around a floating-point operation into a vector select, so selects
       are done on the bits. */
    static inline float pyconv_sel_f(int c, float a, float b) {  /* c ? a : b */
        uint32_t ua, ub, m = (uint32_t)0 - (uint32_t)(c != 0);
        float r;
        memcpy(&ua, &a, 4);
        memcpy(&ub, &b, 4);
        ua = (ua & m) | (ub & ~m);
        memcpy(&r, &ua, 4);
        return r;
    }
    static inline double pyconv_sel_d(int c, double a, double b) {
        uint64_t ua, ub, m = (uint64_t)0 - (uint64_t)(c != 0);
        double r;
        memcpy(&ua, &a, 8);
        memcpy(&ub, &b, 8);
        ua = (ua & m) | (ub & ~m);
        memcpy(&r, &ua, 8);
        return r;
    }
    /* exp(a) for a <= 0 (or NaN). Cephes' reduction and polynomials (about 1 ulp):
       a = n*ln2 + r, |r| <= ln2/2, exp(a) = 2^n * exp(r); n is read from the bits
       of a*log2(e) + 1.5*2^23 (round to nearest, no float-to-int conversion), and
       2^n is applied in two halves so that subnormal results are rounded once.
       (The float64 version does not vectorise on SSE2; it still saves the call.)
       Below the underflow threshold the result is 0; NaN gives NaN. */
    static inline float pyconv_exp_nonpos_f(float a) {
        const float magic = 12582912.0f;                 /* 1.5 * 2^23 */
        int below = a < -104.0f;                         /* exp(a) < 2^-150 */
        float c = pyconv_sel_f(below, -104.0f, a);
        float t = c * 1.44269504088896341f + magic;
        float n = t - magic;
        uint32_t b1, b2;
        float r, rr, p, s1, s2, t1, t2;
        r = c - n * 0.693359375f;
        r = r - n * -2.12194440e-4f;
        rr = r * r;                                      /* Estrin: short chains */
        p = (5.0000001201e-1f + 1.6666665459e-1f * r)
            + (4.1665795894e-2f + 8.3334519073e-3f * r) * rr
            + (1.3981999507e-3f + 1.9875691500e-4f * r) * (rr * rr);
        p = p * rr + r + 1.0f;
        /* 2^n as 2^n1 * 2^n2, n1 = round(n/2): both halves are normal numbers */
        t1 = n * 0.5f + magic;
        t2 = (n - (t1 - magic)) + magic;
        memcpy(&b1, &t1, 4);
        memcpy(&b2, &t2, 4);
        b1 = (b1 - 0x4B400000u + 127u) << 23;
        b2 = (b2 - 0x4B400000u + 127u) << 23;
        memcpy(&s1, &b1, 4);
        memcpy(&s2, &b2, 4);
        return pyconv_sel_f(below, 0.0f, p * s1 * s2);
    }
    static inline double pyconv_exp_nonpos_d(double a) {
        const double magic = 6755399441055744.0;         /* 1.5 * 2^52 */
        double c = pyconv_sel_d(a < -746.0, -746.0, a);  /* exp(a) < 2^-1076 below */
        double t = c * 1.4426950408889634074 + magic;
        double n = t - magic;
        uint64_t b1, b2;
        double r, rr, px, qx, s1, s2, t1, t2;
        r = c - n * 6.93145751953125e-1;
        r = r - n * 1.42860682030941723212e-6;
        rr = r * r;
        px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                  + 9.99999999999999999910e-1);
        qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
              + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0;
        r = 1.0 + 2.0 * (px / (qx - px));
        t1 = n * 0.5 + magic;
        t2 = (n - (t1 - magic)) + magic;
        memcpy(&b1, &t1, 8);
        memcpy(&b2, &t2, 8);
        b1 = (b1 - 0x4338000000000000ULL + 1023u) << 52;
        b2 = (b2 - 0x4338000000000000ULL + 1023u) << 52;
        memcpy(&s1, &b1, 8);
        memcpy(&s2, &b2, 8);
        return pyconv_sel_d(a < -746.0, 0.0, r * s1 * s2);
    }
    /* erfc(z) in float32, branch-free so that loops vectorise (libc's erfcf is a
       call per element). For a = |z| (clamped to 10.5, where erfc is below the
       smallest subnormal): erfc(a) = t * exp(P(t) - a*a), t = 2/(2 + a), with the
       Numerical Recipes fit P (relative error of the formula < 1.2e-7 for all
       a >= 0); erfc(z) = 2 - erfc(a) for z < 0 (no cancellation: it lies in
       [1, 2]). Error: at most 3.4 ulp (relative to erfc; measured against mpmath
       on float32 arguments) plus the rounding of the exponent, up to
       a*a * 2^-24 relative: that is erfc's own sensitivity to a one-ulp change of
       its argument (its condition number is 2a^2), so the result is as accurate
       as the argument allows, until it becomes subnormal. NaN gives NaN. */
    static inline float pyconv_erfc_f(float z) {
        float a = fabsf(z);
        float t, t2, t4, p, r;
        a = pyconv_sel_f(a < 10.5f, a, 10.5f);            /* NaN: 10.5 (see caller) */
        t = 2.0f / (2.0f + a);
        /* P(t) by Estrin's scheme: a shallow dependency chain, so that the
           out-of-order core overlaps neighbouring vectors (Horner's 10-deep chain
           left the loop latency-bound). */
        t2 = t * t;
        t4 = t2 * t2;
        p = ((-1.26551223f + 1.00002368f * t) + (0.37409196f + 0.09678418f * t) * t2)
            + ((-0.18628806f + 0.27886807f * t) + (-1.13520398f + 1.48851587f * t) * t2) * t4
            + (-0.82215223f + 0.17087277f * t) * (t4 * t4);
        r = t * pyconv_exp_nonpos_f(pyconv_sel_f(p - a * a < 0.0f, p - a * a, 0.0f));
        return pyconv_sel_f(z < 0.0f, 2.0f - r, r);
    }
    /* sigmoid(v) through e = exp(-|v|) in (0, 1]: 1/(1+e) or e/(1+e); no overflow. */
    static inline float pyconv_sigmoid_f(float v) {
        float e = pyconv_exp_nonpos_f(-fabsf(v));
        float r = 1.0f / (1.0f + e);
        return pyconv_sel_f(v >= 0.0f, r, e * r);
    }
    static inline double pyconv_sigmoid_d(double v) {
        double e = pyconv_exp_nonpos_d(-fabs(v));
        double r = 1.0 / (1.0 + e);
        return pyconv_sel_d(v >= 0.0, r, e * r);
    }
    static inline float pyconv_gelu_f(float v) {
        /* 0.5*x*erfc(-x/sqrt 2); NaN: erfc's clamp gives a number, NaN * it is NaN;
           -inf: the limit -0.0 */
        float r = 0.5f * v * pyconv_erfc_f(-v * 0.70710678118654752440f);
        return pyconv_sel_f(v == -INFINITY, -0.0f, r);
    }
    /* gelu (tanh): 0.5*x*(1 + tanh(u)) = x*sigmoid(2u), u = c*(x + k*x^3); the
       constants rounded from their double values, as the Cython loop did. */
    static inline float pyconv_gelu_tanh_f(float v) {
        const float c = (float)0.79788456080286535588, k = (float)0.044715;
        float u = c * (v + k * v * v * v);
        float w = v * pyconv_sigmoid_f(u + u);
        return pyconv_sel_f(v == -INFINITY, -0.0f, w);
    }
    /* y[i] = F(x[i]) over two halves at once: the two independent dependency chains
       per iteration let the out-of-order core overlap them (one chain alone left
       these long formulas latency-bound). x may be y: each element is read before
       it is written. */
    #define PYCONV_TWO_STREAMS(NAME, T, F, ATTR) \
    ATTR static void NAME(const T* x, T* y, Py_ssize_t n) { \
        Py_ssize_t h = n / 2, i; \
        for (i = 0; i < h; i++) { \
            T a = x[i], b = x[i + h]; \
            y[i] = F(a); \
            y[i + h] = F(b); \
        } \
        if (n & 1) y[n - 1] = F(x[n - 1]); \
    }
    /* The AVX2 build made by GCC also holds each loop compiled for AVX-512 (16-wide
       vectors, 32 registers), taken where pyconv_wide_loops is set: the CPU has
       AVX-512 F/VL/BW/DQ with the OS saving its registers (NumPy's AVX512_SKX, asked
       from Python). The same operations without contraction: the same bits. float32
       8x64x112x112, one thread: gelu 14.5 -> 8.1 ms, sigmoid 6.5 -> 4.0 ms. */
    #if defined(__AVX2__) && defined(__x86_64__) && defined(__GNUC__) \
        && !defined(__clang__) && __GNUC__ >= 8
      #define PYCONV_WIDE_BUILT 1
      #define PYCONV_WIDE_ATTR __attribute__((target( \
          "avx512f,avx512vl,avx512bw,avx512dq,prefer-vector-width=512")))
    #else
      #define PYCONV_WIDE_BUILT 0
    #endif
    static int pyconv_wide_loops = 0;
    #if PYCONV_WIDE_BUILT
      #define PYCONV_LOOP(NAME, T, F) \
      PYCONV_TWO_STREAMS(NAME##_narrow, T, F, ) \
      PYCONV_TWO_STREAMS(NAME##_wide, T, F, PYCONV_WIDE_ATTR) \
      static void NAME(const T* x, T* y, Py_ssize_t n) { \
          if (pyconv_wide_loops) NAME##_wide(x, y, n); else NAME##_narrow(x, y, n); \
      }
    #else
      #define PYCONV_LOOP(NAME, T, F) PYCONV_TWO_STREAMS(NAME, T, F, )
    #endif
    PYCONV_LOOP(pyconv_gelu_loop_f, float, pyconv_gelu_f)
    PYCONV_LOOP(pyconv_gelu_tanh_loop_f, float, pyconv_gelu_tanh_f)
    PYCONV_LOOP(pyconv_sigmoid_loop_f, float, pyconv_sigmoid_f)
    PYCONV_LOOP(pyconv_sigmoid_loop_d, double, pyconv_sigmoid_d)
    static int pyconv_set_wide_loops(int on) {
        pyconv_wide_loops = PYCONV_WIDE_BUILT && on;
        return pyconv_wide_loops;
    }
    """
    float pyconv_sel_f(bint, float, float) noexcept nogil
    double pyconv_sel_d(bint, double, double) noexcept nogil
    float pyconv_sigmoid_f(float) noexcept nogil
    float pyconv_erfc_f(float) noexcept nogil
    void pyconv_gelu_loop_f(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void pyconv_gelu_tanh_loop_f(const float* x, float* y, Py_ssize_t n) noexcept nogil
    int pyconv_set_wide_loops(int on) noexcept nogil
    int PYCONV_WIDE_BUILT
    void pyconv_sigmoid_loop_f(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void pyconv_sigmoid_loop_d(const double* x, double* y, Py_ssize_t n) noexcept nogil
    double pyconv_sigmoid_d(double) noexcept nogil


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


cdef inline floating f_sigmoid(floating v) noexcept nogil:
    if floating is float:
        return pyconv_sigmoid_f(v)
    else:
        return pyconv_sigmoid_d(v)


cdef inline floating f_sel(bint c, floating a, floating b) noexcept nogil:
    if floating is float:
        return pyconv_sel_f(c, a, b)
    else:
        return pyconv_sel_d(c, a, b)


cdef void relu_loop(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        y[i] = 0 if v < 0 else v  # NaN and -0.0 pass through, as PyTorch


cdef void leaky_loop(const floating* x, floating* y, Py_ssize_t n,
                     floating slope) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v, w
    for i in range(n):
        v = x[i]
        w = v * slope
        y[i] = v if v > 0 else w


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
    if floating is float:
        pyconv_gelu_loop_f(x, y, n)
    else:
        for i in range(n):
            v = x[i]
            r = half * v * erfc(-v * c)
            y[i] = -0.0 if v == -INFINITY else r


cdef void gelu_tanh_loop(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v, u, w
    cdef floating c = <floating>SQRT_2_OVER_PI
    cdef floating k = <floating>GELU_CUBIC
    if floating is float:
        pyconv_gelu_tanh_loop_f(x, y, n)
    else:
        for i in range(n):
            v = x[i]
            u = c * (v + k * v * v * v)
            w = v * f_sigmoid(u + u)   # 2 * u would be computed in double (Cython)
            y[i] = f_sel(v == -INFINITY, -0.0, w)


cdef void sigmoid_loop(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        pyconv_sigmoid_loop_f(x, y, n)
    else:
        pyconv_sigmoid_loop_d(x, y, n)


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


#: Whether this build holds AVX-512 copies of the long float32 loops (and sigmoid's
#: float64 one): the AVX2 build made by GCC.
WIDE_LOOPS_BUILT = bool(PYCONV_WIDE_BUILT)


def set_wide_loops(bint on):
    """Run the AVX-512 copies of the loops (``on``; only where built, and only on a
    CPU with AVX-512 F/VL/BW/DQ: the caller checks) or the AVX2 ones. Returns
    whether the AVX-512 copies now run. Both give the same bits."""
    return bool(pyconv_set_wide_loops(on))


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
