"""Direct (no im2col) kernels for depthwise, grouped and separable convolution.

With few input channels per group, im2col + GEMM spends its time copying: the GEMM
has a tiny inner dimension. These kernels compute one output row of a group's output
channels at a time, from padded copies of the input rows it reads:

* **Padded, phase-split rows.** For output row ``(od, oh)`` every input row it reads
  (one per input channel of the group, kernel depth and kernel row) is copied once
  into thread-local scratch as the row the taps see: the pad value or the mirrored,
  clamped or wrapped pixels at the edges (through the precomputed map ``jmap`` of
  padded column -> input column), and, for stride ``s > 1``, split into ``s`` phases
  (``q[r][m] = padded[m*s + r]``). Then tap ``kw`` of output column ``ow`` reads
  ``q[qoff[kw] + ow]``: every tap of every column, edges included, is a unit-stride
  vector load, for any padding mode, stride and dilation.
* **Register blocking.** A block of 4 (or 2, 1) output channels times 2 (or 4, 1)
  vectors of output columns is accumulated in registers over all input channels and
  taps, then stored once: each loaded input vector feeds all channels of the block.
  A row of an odd number of vectors starts with a block 3 vectors wide, so that no
  block of one vector (one broadcast per multiply-add) is left at its end.
  The columns are covered by whole vectors; the last vector of a row overlaps its
  predecessor rather than falling back to scalar code (the overlap recomputes the
  same values).
* Each output value is ``bias + sum`` over (input channel, kd, kh, kw) in that
  order, one multiply-add at a time, whatever the blocking: results do not depend on
  the block, vector width or thread count. The multiply-add is one FMA (one
  rounding) in the AVX2 build made by GCC or Clang, the vector and scalar blocks
  alike (without it, a multiply and an add per tap, the blocks ran at 24 of Zen 1's
  39 GFLOP/s per core; with it, 34-36), and a multiply then an add in the baseline
  build, so the two builds differ in the last bits here.

Vectors are GCC/Clang vector extensions (64 bytes in the AVX-512 build, 32 where AVX
is enabled, else 16), with a plain scalar fallback for other compilers. The AVX-512
build gives the AVX2 build's bits wherever both take the same route; rows narrower
than its vectors (which it would leave to scalar loops) are sent to the AVX2 build
(``pyconv.ops.depthwise._kernels_for``). The plane kernel's strips (below)
also form each kernel row's sum with FMA in the AVX2 build; the other kernels here
use no FMA (the build turns contraction off), so for them the AVX2 and baseline
builds round identically.

``grouped_flat``: the same blocks for 1-D and 2-D layers at stride 1, over a band's
padded rows laid end to end (``pyconv_dw_flat``), ``prange`` over (image, group,
band); the same sums in the same order, so the same bits as ``grouped_direct``.
``grouped_direct``: ``prange`` over (image, group, row tile); depthwise is the case of
one input channel per group. ``plane_conv``: 2-D 3x3, 5x5 or 7x7 convolution at stride
1 or 2 with one input channel per group, units of (image, output channel, band of
rows) in one contiguous run per thread, each band swept in vector-wide strips down
its rows (each input row loaded once for the output rows that read it), the input
read in place, also at the edge strips of a 3x3 stride-1 layer that reach one
column past the row (that lane is replaced by the padding's value), other edge strips
from small padded copies, optionally written out with non-temporal
stores that drain while the next band computes. ``separable``: ``prange`` over
(image, band of output rows); the depthwise result of a band goes into the thread's
row of the caller's workspace and is multiplied at once by the pointwise weight (one
single-threaded GEMM per band), so the intermediate never leaves the cache and its
size is bounded by the band. Scratch for padded rows: ``batch * QS`` values per
thread (see ``row_batch`` in ``pyconv/ops/depthwise.py``); input channels beyond one
batch are accumulated through the output row (exact: a stored float reloads
unchanged).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from pyconv._kernels._blas cimport gemm_rm
from pyconv._kernels._packed cimport (PG_MR, PG_NR_DOUBLE, PG_NR_FLOAT, packed_gemm,
                                      pg_set_tall, pg_set_wide)
from pyconv._kernels._epilogue cimport bias_relu_tile
from pyconv._kernels._openmp_helpers cimport omp_get_thread_num

cdef extern from *:
    """
    #include <string.h>
    #if defined(_MSC_VER)
      #define PYCONV_DW_RESTRICT __restrict
    #else
      #define PYCONV_DW_RESTRICT restrict
    #endif
    #if defined(__GNUC__) || defined(__clang__)
      #if defined(__AVX512F__)
        #define PYCONV_DW_VBYTES 64
      #elif defined(__AVX__)
        #define PYCONV_DW_VBYTES 32
      #else
        #define PYCONV_DW_VBYTES 16
      #endif
      typedef float pyconv_dw_vf __attribute__((vector_size(PYCONV_DW_VBYTES)));
      typedef double pyconv_dw_vd __attribute__((vector_size(PYCONV_DW_VBYTES)));
      typedef int pyconv_dw_mf __attribute__((vector_size(PYCONV_DW_VBYTES)));
      typedef long long pyconv_dw_md __attribute__((vector_size(PYCONV_DW_VBYTES)));
      /* the same, for unaligned loads and stores */
      typedef float pyconv_dw_vfu
          __attribute__((vector_size(PYCONV_DW_VBYTES), aligned(4), may_alias));
      typedef double pyconv_dw_vdu
          __attribute__((vector_size(PYCONV_DW_VBYTES), aligned(8), may_alias));
      #define PYCONV_DW_VWF (PYCONV_DW_VBYTES / 4)
      #define PYCONV_DW_VWD (PYCONV_DW_VBYTES / 8)
      #define PYCONV_DW_UNROLL _Pragma("GCC unroll 16")
      /* relu keeping NaN and -0.0: clear the lanes where v < 0 (bit select). */
      #define PYCONV_DW_RELU(V, M, v) do { M m_ = (M)((v) < 0); M b_; \\
          memcpy(&b_, &(v), sizeof b_); b_ &= ~m_; memcpy(&(v), &b_, sizeof b_); } while (0)
    #else
      typedef float pyconv_dw_vf;
      typedef double pyconv_dw_vd;
      typedef float pyconv_dw_vfu;
      typedef double pyconv_dw_vdu;
      #define PYCONV_DW_VWF 1
      #define PYCONV_DW_VWD 1
      #define PYCONV_DW_UNROLL
      #define PYCONV_DW_RELU(V, M, v) do { if ((v) < 0) (v) = 0; } while (0)
    #endif
    #if defined(__GNUC__) || defined(__clang__)
      #define PYCONV_DW_PREFETCH(p) __builtin_prefetch((p), 0, 3)
      #define PYCONV_DW_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
    #else
      #define PYCONV_DW_PREFETCH(p) ((void)(p))
      #define PYCONV_DW_PREFETCH_L2(p) ((void)(p))
    #endif
    #define PYCONV_DW_SRELU(V, M, v) do { if ((v) < 0) (v) = 0; } while (0)
    #define PYCONV_DW_MIN(a, b) ((a) < (b) ? (a) : (b))
    /* Non-temporal stores: the lines go to memory without first being read into the
       cache (a third of the traffic of an output that does not fit in it). SV stores
       SW values at a SALIGN-aligned address. */
    #if defined(__AVX512F__)
      #include <immintrin.h>
      #define PYCONV_DW_SALIGN 64
      #define PYCONV_DW_SV_f(d, s) _mm512_stream_ps((d), _mm512_loadu_ps(s))
      #define PYCONV_DW_SV_d(d, s) _mm512_stream_pd((d), _mm512_loadu_pd(s))
      #define PYCONV_DW_SFENCE() _mm_sfence()
    #elif defined(__AVX__)
      #include <immintrin.h>
      #define PYCONV_DW_SALIGN 32
      #define PYCONV_DW_SV_f(d, s) _mm256_stream_ps((d), _mm256_loadu_ps(s))
      #define PYCONV_DW_SV_d(d, s) _mm256_stream_pd((d), _mm256_loadu_pd(s))
      #define PYCONV_DW_SFENCE() _mm_sfence()
    #elif defined(__SSE2__)
      #include <emmintrin.h>
      #define PYCONV_DW_SALIGN 16
      #define PYCONV_DW_SV_f(d, s) _mm_stream_ps((d), _mm_loadu_ps(s))
      #define PYCONV_DW_SV_d(d, s) _mm_stream_pd((d), _mm_loadu_pd(s))
      #define PYCONV_DW_SFENCE() _mm_sfence()
    #else
      #define PYCONV_DW_SALIGN 1
      #define PYCONV_DW_SV_f(d, s) (*(d) = *(s))
      #define PYCONV_DW_SV_d(d, s) (*(d) = *(s))
      #define PYCONV_DW_SFENCE() ((void)0)
    #endif
    /* the same from a vector (GCC/Clang vector extensions) */
    #if defined(__AVX512F__)
      #define PYCONV_DW_SVV_f(d, v) _mm512_stream_ps((d), (__m512)(v))
      #define PYCONV_DW_SVV_d(d, v) _mm512_stream_pd((d), (__m512d)(v))
    #elif defined(__AVX__)
      #define PYCONV_DW_SVV_f(d, v) _mm256_stream_ps((d), (__m256)(v))
      #define PYCONV_DW_SVV_d(d, v) _mm256_stream_pd((d), (__m256d)(v))
    #elif defined(__SSE2__)
      #define PYCONV_DW_SVV_f(d, v) _mm_stream_ps((d), (__m128)(v))
      #define PYCONV_DW_SVV_d(d, v) _mm_stream_pd((d), (__m128d)(v))
    #endif
    #if PYCONV_DW_SALIGN > 1
      #define PYCONV_DW_SW_f (PYCONV_DW_SALIGN / 4)
      #define PYCONV_DW_SW_d (PYCONV_DW_SALIGN / 8)
    #else
      #define PYCONV_DW_SW_f 1
      #define PYCONV_DW_SW_d 1
    #endif
    /* A pending copy s[0:n] -> d[0:n] by non-temporal stores, done a strip's share at
       a time (in the plane kernel's strips) between the arithmetic of the next unit
       of work, so that the stores drain while the core computes instead of in one
       burst per band; finish stores what is left. i: values copied so far. The
       stores are fenced once, by whoever ends the last copy (pyconv_dw_sfence),
       before other threads may read them. */
    typedef struct { const void* s; void* d; Py_ssize_t i, n; } pyconv_dw_pend;
    #define PYCONV_DW_PEND(S, T) \\
    static void pyconv_dw_pend_start_##S(pyconv_dw_pend* p, T* d, const T* s, \\
                                         Py_ssize_t n) { \\
        Py_ssize_t i = 0; \\
        for (; i < n && ((size_t)(d + i) & (PYCONV_DW_SALIGN - 1)); i++) d[i] = s[i]; \\
        p->s = s; p->d = d; p->i = i; p->n = n; \\
    } \\
    static void pyconv_dw_pend_finish_##S(pyconv_dw_pend* p) { \\
        Py_ssize_t i = p->i; \\
        T* d = (T*)p->d; \\
        const T* s = (const T*)p->s; \\
        for (; i + PYCONV_DW_SW_##S <= p->n; i += PYCONV_DW_SW_##S) \\
            PYCONV_DW_SV_##S(d + i, s + i); \\
        for (; i < p->n; i++) d[i] = s[i]; \\
        p->i = p->n = 0; \\
    }
    PYCONV_DW_PEND(f, float)
    PYCONV_DW_PEND(d, double)
    static void pyconv_dw_sfence(void) { PYCONV_DW_SFENCE(); }

    /* Geometry of one call; the kernels trust it (pyconv/ops/depthwise.py builds it). */
    typedef struct {
        const Py_ssize_t* idx_d;   /* (KD, OD): input depth of tap kd at od, -1: pad */
        const Py_ssize_t* idx_h;   /* (KH, OH) */
        const Py_ssize_t* jmap;    /* (Wp,): input column of padded column j, -1: pad */
        const Py_ssize_t* qoff;    /* (KW,): offset of tap kw in a phase-split row */
        const Py_ssize_t* phase;   /* (sw, 3): per phase, [copy from, copy to, length) */
        Py_ssize_t D, H, W, HW, plane, OD, OH, OW, KD, KH, KW;
        Py_ssize_t sw, Wp, Mq, QS;  /* stride, padded width, phase length, row stride */
        Py_ssize_t lo;              /* padded column j is input column j - lo */
        Py_ssize_t cin_g, batch;    /* input channels per group; rows per scratch batch */
        int cached;                 /* scratch holds all rows of the group (see below) */
    } pyconv_dw_geom;

    /* acc + w * x for the register blocks below: one rounding (FMA) in a build for
       FMA CPUs, where it runs at the multiply pipes' rate with half the instructions
       of a multiply and an add; a multiply and an add elsewhere. */
    #if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
      #include <immintrin.h>
      #define PYCONV_DW_MADD_vf(a, w, x) \\
          ((pyconv_dw_vf)_mm512_fmadd_ps((__m512)(w), (__m512)(x), (__m512)(a)))
      #define PYCONV_DW_MADD_vd(a, w, x) \\
          ((pyconv_dw_vd)_mm512_fmadd_pd((__m512d)(w), (__m512d)(x), (__m512d)(a)))
      #define PYCONV_DW_MADD_f(a, w, x) __builtin_fmaf((w), (x), (a))
      #define PYCONV_DW_MADD_d(a, w, x) __builtin_fma((w), (x), (a))
    #elif defined(__FMA__) && defined(__AVX__) && (defined(__GNUC__) || defined(__clang__))
      #include <immintrin.h>
      #define PYCONV_DW_MADD_vf(a, w, x) \\
          ((pyconv_dw_vf)_mm256_fmadd_ps((__m256)(w), (__m256)(x), (__m256)(a)))
      #define PYCONV_DW_MADD_vd(a, w, x) \\
          ((pyconv_dw_vd)_mm256_fmadd_pd((__m256d)(w), (__m256d)(x), (__m256d)(a)))
      #define PYCONV_DW_MADD_f(a, w, x) __builtin_fmaf((w), (x), (a))
      #define PYCONV_DW_MADD_d(a, w, x) __builtin_fma((w), (x), (a))
    #else
      #define PYCONV_DW_MADD_vf(a, w, x) ((a) + (w) * (x))
      #define PYCONV_DW_MADD_vd(a, w, x) ((a) + (w) * (x))
      #define PYCONV_DW_MADD_f(a, w, x) ((a) + (w) * (x))
      #define PYCONV_DW_MADD_d(a, w, x) ((a) + (w) * (x))
    #endif

    /* One register block: COB output channels x NV vectors of columns c.. of one
       output row. Row t of the nrows padded rows is at q + ro[t]; w: weights of the
       first channel (channel k at w + k*wstride), row t's taps at t*KW; dst: the
       output row of the first channel (channel k at dst + k*cstride). first: start
       from the bias (NULL: 0), else from dst (a previous batch of rows). */
    /* tap kw of row t of a block below, for a kernel KWN taps wide */
    #define PYCONV_DW_TAP(T, V, VU, VW, MADD, COB, NV, KWN) { \\
        const T* p = q + ro[t] + c + qoff[kw]; \\
        const T* wt = w + t * (KWN) + kw; \\
        PYCONV_DW_UNROLL for (v = 0; v < NV; v++) xv[v] = *(const VU*)(p + v * VW); \\
        PYCONV_DW_UNROLL for (k = 0; k < COB; k++) { \\
            V wk = wt[k * wstride] - (V){0}; \\
            PYCONV_DW_UNROLL for (v = 0; v < NV; v++) \\
                acc[k][v] = MADD(acc[k][v], wk, xv[v]); \\
        } \\
    }
    /* The flat kernel's blocks writing the output rows directly: flat position f of
       a band (map: OW, Wp, nb) is output (f / Wp, f % Wp), kept where f % Wp < OW
       and f / Wp < nb. A vector within one row is one store; one that spans rows,
       a masked store per row (the lanes of a row, at their output offset). */
    #define PYCONV_DW_MAPPED_STORE(T, VU, VW, MSTORE, COB, NV) \\
        Py_ssize_t OW_ = map[0], Wp_ = map[1], nb_ = map[2]; \\
        PYCONV_DW_UNROLL for (v = 0; v < NV; v++) { \\
            Py_ssize_t f_ = c + v * VW, r_ = f_ / Wp_, cc_ = f_ - r_ * Wp_, j_ = 0, n_; \\
            if (cc_ + VW <= OW_ && r_ < nb_) { \\
                PYCONV_DW_UNROLL for (k = 0; k < COB; k++) \\
                    *(VU*)(dst + k * cstride + r_ * OW_ + cc_) = acc[k][v]; \\
                continue; \\
            } \\
            while (j_ < VW && r_ < nb_) { \\
                n_ = cc_ < OW_ ? PYCONV_DW_MIN(VW - j_, OW_ - cc_) : 0; \\
                if (n_ > 0) { \\
                    unsigned long long m_ = ((1ULL << n_) - 1) << j_; \\
                    /* lane l at r_*OW_ + cc_ + (l - j_) */ \\
                    T* b_ = dst + (r_ * OW_ + cc_ - j_); \\
                    PYCONV_DW_UNROLL for (k = 0; k < COB; k++) \\
                        MSTORE(T, VW, b_ + k * cstride, m_, acc[k][v]); \\
                } \\
                j_ += Wp_ - cc_; \\
                r_++; \\
                cc_ = 0; \\
            } \\
        }
    /* a masked store of v's lanes whose bit is set in m, lane l to p[l] */
    #define PYCONV_DW_MSTORE_GEN(T, VW, p, m, v) do { \\
        T l_[VW]; int i_; memcpy(l_, &(v), sizeof l_); \\
        for (i_ = 0; i_ < VW; i_++) if (((m) >> i_) & 1) (p)[i_] = l_[i_]; } while (0)
    #if PYCONV_DW_VBYTES == 64 && (defined(__GNUC__) || defined(__clang__))
      #define PYCONV_DW_MSTORE_f(T, VW, p, m, v) \\
          _mm512_mask_storeu_ps((p), (__mmask16)(m), (__m512)(v))
      #define PYCONV_DW_MSTORE_d(T, VW, p, m, v) \\
          _mm512_mask_storeu_pd((p), (__mmask8)(m), (__m512d)(v))
    #else
      #define PYCONV_DW_MSTORE_f PYCONV_DW_MSTORE_GEN
      #define PYCONV_DW_MSTORE_d PYCONV_DW_MSTORE_GEN
    #endif
    #define PYCONV_DW_BLOCK(NAME, T, V, VU, VW, M, RELU, MADD, MSTORE, COB, NV, K3) \\
    static inline void NAME(T* dst, Py_ssize_t cstride, Py_ssize_t c, const T* q, \\
                            const Py_ssize_t* ro, Py_ssize_t nrows, \\
                            const Py_ssize_t* qoff, Py_ssize_t KW, const T* w, \\
                            Py_ssize_t wstride, const T* bias, int first, int relu, \\
                            const Py_ssize_t* map) { \\
        V acc[COB][NV]; \\
        V xv[NV]; \\
        Py_ssize_t t, kw; \\
        int k, v; \\
        PYCONV_DW_UNROLL for (k = 0; k < COB; k++) { \\
            PYCONV_DW_UNROLL for (v = 0; v < NV; v++) { \\
                if (first) \\
                    /* b - 0 is b exactly, -0.0 included: a broadcast */ \\
                    acc[k][v] = (bias ? bias[k] : (T)0) - (V){0}; \\
                else \\
                    acc[k][v] = *(const VU*)(dst + k * cstride + c + v * VW); \\
            } \\
        } \\
        /* K3: three taps per row, the common case, as one unrolled loop */ \\
        if (K3 && KW == 3) { \\
            for (t = 0; t < nrows; t++) \\
                PYCONV_DW_UNROLL for (kw = 0; kw < 3; kw++) \\
                    PYCONV_DW_TAP(T, V, VU, VW, MADD, COB, NV, 3) \\
        } else { \\
            for (t = 0; t < nrows; t++) \\
                for (kw = 0; kw < KW; kw++) \\
                    PYCONV_DW_TAP(T, V, VU, VW, MADD, COB, NV, KW) \\
        } \\
        if (relu) { \\
            PYCONV_DW_UNROLL for (k = 0; k < COB; k++) \\
                PYCONV_DW_UNROLL for (v = 0; v < NV; v++) RELU(V, M, acc[k][v]); \\
        } \\
        if (K3 && map) { \\
            PYCONV_DW_MAPPED_STORE(T, VU, VW, MSTORE, COB, NV) \\
            return; \\
        } \\
        PYCONV_DW_UNROLL for (k = 0; k < COB; k++) \\
            PYCONV_DW_UNROLL for (v = 0; v < NV; v++) \\
                *(VU*)(dst + k * cstride + c + v * VW) = acc[k][v]; \\
    }

    /* All columns of one output row for COB channels, in blocks of NVBIG, then 2
       (if NVBIG > 2), then 1 vectors; with NVBIG 2 and an odd number of whole
       vectors, one ODD block of 3 vectors comes first. When the block starts from the
       bias and the
       columns left over by the widest blocks are not a whole number of vectors, they
       are covered by one more widest block ending at OW, overlapping the previous
       one (it recomputes the same values); otherwise (a whole number of vectors: 56
       = 3 x 16 + 8 ran 15 % faster so than with 8 columns recomputed), or from dst,
       where an overlap would add twice, narrower blocks and scalars follow. */
    #define PYCONV_DW_COLS(NAME, T, VW, ODD, BIG, MID, NVBIG, ONE, SCALAR) \\
    static void NAME(T* dst, Py_ssize_t cstride, const T* q, const Py_ssize_t* ro, \\
                     Py_ssize_t nrows, const pyconv_dw_geom* g, const T* w, \\
                     Py_ssize_t wstride, const T* bias, int first, int relu) { \\
        Py_ssize_t OW = g->OW, c = 0; \\
        if (NVBIG == 2 && OW / VW >= 3 && (OW / VW) % 2) { \\
            /* an odd number of vectors: one block of 3 first, so that no block of \\
               one vector (a broadcast per multiply-add) is left at the end */ \\
            ODD(dst, cstride, 0, q, ro, nrows, g->qoff, g->KW, w, wstride, bias, \\
                first, relu, NULL); \\
            c = 3 * VW; \\
        } \\
        for (; c + NVBIG * VW <= OW; c += NVBIG * VW) \\
            BIG(dst, cstride, c, q, ro, nrows, g->qoff, g->KW, w, wstride, bias, \\
                first, relu, NULL); \\
        if (c < OW && c > 0 && first && (OW - c) % VW) { \\
            BIG(dst, cstride, OW - NVBIG * VW, q, ro, nrows, g->qoff, g->KW, w, wstride, \\
                bias, first, relu, NULL); \\
            return; \\
        } \\
        if (NVBIG > 2) { \\
            for (; c + 2 * VW <= OW; c += 2 * VW) \\
                MID(dst, cstride, c, q, ro, nrows, g->qoff, g->KW, w, wstride, bias, \\
                    first, relu, NULL); \\
            if (c < OW && c > 0 && first && (OW - c) % VW) { \\
                MID(dst, cstride, OW - 2 * VW, q, ro, nrows, g->qoff, g->KW, w, \\
                    wstride, bias, first, relu, NULL); \\
                return; \\
            } \\
        } \\
        for (; c + VW <= OW; c += VW) \\
            ONE(dst, cstride, c, q, ro, nrows, g->qoff, g->KW, w, wstride, bias, \\
                first, relu, NULL); \\
        if (c < OW && c > 0 && first) { \\
            ONE(dst, cstride, OW - VW, q, ro, nrows, g->qoff, g->KW, w, wstride, \\
                bias, first, relu, NULL); \\
            return; \\
        } \\
        for (; c < OW; c++) \\
            SCALAR(dst, cstride, c, q, ro, nrows, g->qoff, g->KW, w, wstride, bias, \\
                   first, relu, NULL); \\
    }

    /* Block pyconv_dw_b<COB><NV>_<S> on vectors, pyconv_dw_s<COB>_<S> on scalars;
       pyconv_dw_k<COB>3_<S>: 3 vectors, 3 taps per row unrolled, for the flat kernel
       (3x3 8/group 8x256x56x56: float32 5.6 -> 5.0 ms at 2 threads, 10.6 -> 9.4 at
       one, float64 10.8 -> 9.5; the row kernels' blocks ran float64 3x3 s2 grouped
       layers 20 % slower so, and keep the loop). */
    #define PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, COB, NV) \\
    PYCONV_DW_BLOCK(pyconv_dw_b##COB##NV##_##S, T, V, VU, VW, M, PYCONV_DW_RELU, \\
                    PYCONV_DW_MADD_v##S, PYCONV_DW_MSTORE_##S, COB, NV, 0)
    #define PYCONV_DW_KBLOCK(S, T, V, VU, VW, M, COB) \\
    PYCONV_DW_BLOCK(pyconv_dw_k##COB##3_##S, T, V, VU, VW, M, PYCONV_DW_RELU, \\
                    PYCONV_DW_MADD_v##S, PYCONV_DW_MSTORE_##S, COB, 3, 1)
    #define PYCONV_DW_SBLOCK(S, T, M, COB) \\
    PYCONV_DW_BLOCK(pyconv_dw_s##COB##_##S, T, T, T, 1, M, PYCONV_DW_SRELU, \\
                    PYCONV_DW_MADD_##S, PYCONV_DW_MSTORE_GEN, COB, 1, 0)

    /* Everything for one element type S (f, d). */
    #define PYCONV_DW_TYPED(S, T, V, VU, VW, M) \\
    PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, 4, 3) PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, 4, 2) \\
    PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, 4, 1) PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, 2, 3) \\
    PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, 2, 2) PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, 2, 1) \\
    PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, 1, 4) PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, 1, 2) \\
    PYCONV_DW_VBLOCK(S, T, V, VU, VW, M, 1, 1) PYCONV_DW_SBLOCK(S, T, M, 4) \\
    PYCONV_DW_KBLOCK(S, T, V, VU, VW, M, 8) PYCONV_DW_KBLOCK(S, T, V, VU, VW, M, 4) \\
    PYCONV_DW_KBLOCK(S, T, V, VU, VW, M, 2) PYCONV_DW_KBLOCK(S, T, V, VU, VW, M, 1) \\
    PYCONV_DW_SBLOCK(S, T, M, 2) PYCONV_DW_SBLOCK(S, T, M, 1) \\
    PYCONV_DW_COLS(pyconv_dw_cols4_##S, T, VW, pyconv_dw_b43_##S, pyconv_dw_b42_##S, \\
                   pyconv_dw_b42_##S, 2, pyconv_dw_b41_##S, pyconv_dw_s4_##S) \\
    PYCONV_DW_COLS(pyconv_dw_cols2_##S, T, VW, pyconv_dw_b23_##S, pyconv_dw_b22_##S, \\
                   pyconv_dw_b22_##S, 2, pyconv_dw_b21_##S, pyconv_dw_s2_##S) \\
    PYCONV_DW_COLS(pyconv_dw_cols1_##S, T, VW, pyconv_dw_b14_##S, pyconv_dw_b14_##S, \\
                   pyconv_dw_b12_##S, 4, pyconv_dw_b11_##S, pyconv_dw_s1_##S) \\
    /* One padded input row into q (phase-split for stride > 1); src NULL: a row of \\
       padding. Phase r holds m in [0, ph[3r+2]); of those, [ph[3r], ph[3r+1]) are \\
       inside the image (copied), the rest go through jmap. */ \\
    static void pyconv_dw_fill_##S(T* PYCONV_DW_RESTRICT q, \\
                                   const T* PYCONV_DW_RESTRICT src, T pad, \\
                                   const pyconv_dw_geom* g) { \\
        Py_ssize_t sw = g->sw, m, r, iw, ma, mb, mr; \\
        const Py_ssize_t* jm; \\
        T* PYCONV_DW_RESTRICT qr; \\
        const T* PYCONV_DW_RESTRICT s; \\
        if (src == NULL) { \\
            for (m = 0; m < g->QS; m++) q[m] = pad; \\
            return; \\
        } \\
        for (r = 0; r < sw; r++) { \\
            ma = g->phase[3 * r]; \\
            mb = g->phase[3 * r + 1]; \\
            mr = g->phase[3 * r + 2]; \\
            qr = q + r * g->Mq; \\
            jm = g->jmap + r; \\
            for (m = 0; m < ma; m++) { \\
                iw = jm[m * sw]; \\
                qr[m] = iw >= 0 ? src[iw] : pad; \\
            } \\
            s = src + (r - g->lo); \\
            if (sw == 1) { \\
                /* vector copy: a libc memmove call costs more on short rows */ \\
                for (m = ma; m + VW <= mb; m += VW) *(VU*)(qr + m) = *(const VU*)(s + m); \\
                for (; m < mb; m++) qr[m] = s[m]; \\
            } else if (sw != 2) { \\
                for (m = ma; m < mb; m++) qr[m] = s[m * sw]; \\
            } else if (r == 1) { \\
                /* both phases at once where both are inside: a vectorised \\
                   deinterleave; the (at most two) others one by one */ \\
                Py_ssize_t a0 = g->phase[0], b0 = g->phase[1], lo2, hi2; \\
                T* PYCONV_DW_RESTRICT q0 = q; \\
                const T* PYCONV_DW_RESTRICT s0 = src - g->lo; \\
                lo2 = a0 > ma ? a0 : ma; \\
                hi2 = b0 < mb ? b0 : mb; \\
                if (hi2 < lo2) hi2 = lo2; \\
                for (m = lo2; m < hi2; m++) { \\
                    q0[m] = s0[2 * m]; \\
                    qr[m] = s0[2 * m + 1]; \\
                } \\
                for (m = a0; m < PYCONV_DW_MIN(lo2, b0); m++) q0[m] = s0[2 * m]; \\
                for (m = hi2 > a0 ? hi2 : a0; m < b0; m++) q0[m] = s0[2 * m]; \\
                for (m = ma; m < PYCONV_DW_MIN(lo2, mb); m++) qr[m] = s0[2 * m + 1]; \\
                for (m = hi2 > ma ? hi2 : ma; m < mb; m++) qr[m] = s0[2 * m + 1]; \\
            } \\
            for (m = mb; m < mr; m++) { \\
                iw = jm[m * sw]; \\
                qr[m] = iw >= 0 ? src[iw] : pad; \\
            } \\
        } \\
    } \\
    static void pyconv_dw_blocks_##S(T* dst, Py_ssize_t cstride, const T* q, \\
                                     const Py_ssize_t* ro, Py_ssize_t nb, const T* wb, \\
                                     Py_ssize_t wstride, const T* bias, Py_ssize_t cout_g, \\
                                     int first, int relu, const pyconv_dw_geom* g) { \\
        Py_ssize_t co; \\
        for (co = 0; co + 4 <= cout_g; co += 4) \\
            pyconv_dw_cols4_##S(dst + co * cstride, cstride, q, ro, nb, g, \\
                                wb + co * wstride, wstride, bias ? bias + co : NULL, \\
                                first, relu); \\
        if (co + 2 <= cout_g) { \\
            pyconv_dw_cols2_##S(dst + co * cstride, cstride, q, ro, nb, g, \\
                                wb + co * wstride, wstride, bias ? bias + co : NULL, \\
                                first, relu); \\
            co += 2; \\
        } \\
        if (co < cout_g) \\
            pyconv_dw_cols1_##S(dst + co * cstride, cstride, q, ro, nb, g, \\
                                wb + co * wstride, wstride, bias ? bias + co : NULL, \\
                                first, relu); \\
    } \\
    /* Cached mode, start of a unit (output rows [r0, r1) of one group, whose first \\
       input plane is xg): every input row (ci, id, ih) has its own slot in q, at \\
       ((ci*D + id)*H + ih)*QS, and the slot after the last one is a row of \\
       padding. Fills the slots of the rows these output rows read (the range of \\
       depths and heights they touch), each once. */ \\
    static void pyconv_dw_prepare_##S(T* q, const T* xg, T pad, Py_ssize_t r0, \\
                                      Py_ssize_t r1, const pyconv_dw_geom* g) { \\
        Py_ssize_t od = r0 / g->OH, oh = r0 - od * g->OH, r, k, v, ci, id, ih; \\
        Py_ssize_t dlo = g->D, dhi = -1, hlo = g->H, hhi = -1; \\
        for (r = r0; r < r1; r++) { \\
            for (k = 0; k < g->KD; k++) { \\
                v = g->idx_d[k * g->OD + od]; \\
                if (v >= 0 && v < dlo) dlo = v; \\
                if (v > dhi) dhi = v; \\
            } \\
            for (k = 0; k < g->KH; k++) { \\
                v = g->idx_h[k * g->OH + oh]; \\
                if (v >= 0 && v < hlo) hlo = v; \\
                if (v > hhi) hhi = v; \\
            } \\
            if (++oh == g->OH) { oh = 0; od++; } \\
        } \\
        pyconv_dw_fill_##S(q + g->cin_g * g->D * g->H * g->QS, NULL, pad, g); \\
        for (ci = 0; ci < g->cin_g; ci++) \\
            for (id = dlo; id <= dhi; id++) \\
                for (ih = hlo; ih <= hhi; ih++) \\
                    pyconv_dw_fill_##S(q + ((ci * g->D + id) * g->H + ih) * g->QS, \\
                                       xg + ci * g->plane + id * g->HW + ih * g->W, pad, g); \\
    } \\
    /* Output row (od, oh) of the cout_g channels of one group. dst: that row of the \\
       group's first output channel (the next ones cstride apart); xg: the group's \\
       first input plane; w: (cout_g, cin_g*KD*KH*KW) weights, wstride apart; ro: \\
       scratch for cin_g*KD*KH row offsets. Cached mode: the rows are in their \\
       slots already (pyconv_dw_prepare). Otherwise they are filled here, in weight \\
       order (ci, kd, kh), into batches of at most g->batch rows, consumed batch by \\
       batch. */ \\
    static void pyconv_dw_row_##S(T* dst, Py_ssize_t cstride, T* q, Py_ssize_t* ro, \\
                                  const T* xg, const T* w, Py_ssize_t wstride, \\
                                  const T* bias, Py_ssize_t cout_g, Py_ssize_t od, \\
                                  Py_ssize_t oh, T pad, int relu, \\
                                  const pyconv_dw_geom* g) { \\
        Py_ssize_t KH = g->KH, KD = g->KD, KW = g->KW, QS = g->QS; \\
        Py_ssize_t nk = KD * KH, nrows = g->cin_g * nk; \\
        Py_ssize_t t = 0, t0 = 0, ci, kd, kh, id, ih, j, o; \\
        if (g->cached) { \\
            Py_ssize_t pad_off = g->cin_g * g->D * g->H * QS, cstep = g->D * g->H * QS; \\
            for (kd = 0; kd < KD; kd++) { \\
                id = g->idx_d[kd * g->OD + od]; \\
                for (kh = 0; kh < KH; kh++) { \\
                    ih = g->idx_h[kh * g->OH + oh]; \\
                    ro[t++] = (id >= 0 && ih >= 0) ? (id * g->H + ih) * QS : pad_off; \\
                } \\
            } \\
            for (ci = 1; ci < g->cin_g; ci++) \\
                for (j = 0; j < nk; j++) { \\
                    o = ro[j]; \\
                    ro[ci * nk + j] = o == pad_off ? pad_off : o + ci * cstep; \\
                } \\
            pyconv_dw_blocks_##S(dst, cstride, q, ro, nrows, w, wstride, bias, cout_g, \\
                                 1, relu, g); \\
            return; \\
        } \\
        for (ci = 0; ci < g->cin_g; ci++) { \\
            for (kd = 0; kd < KD; kd++) { \\
                id = g->idx_d[kd * g->OD + od]; \\
                for (kh = 0; kh < KH; kh++) { \\
                    ih = g->idx_h[kh * g->OH + oh]; \\
                    pyconv_dw_fill_##S(q + t * QS, (id >= 0 && ih >= 0) \\
                                       ? xg + ci * g->plane + id * g->HW + ih * g->W \\
                                       : NULL, pad, g); \\
                    ro[t] = t * QS; \\
                    t++; \\
                    if (t == g->batch || t0 + t == nrows) { \\
                        pyconv_dw_blocks_##S(dst, cstride, q, ro, t, w + t0 * KW, \\
                                             wstride, bias, cout_g, t0 == 0, \\
                                             relu && t0 + t == nrows, g); \\
                        t0 += t; \\
                        t = 0; \\
                    } \\
                } \\
            } \\
        } \\
    } \\
    /* Output rows [r0, r1) of one group (a unit of work). pf, npf: the input of the \\
       next unit (NULL: none); while computing a row, the next slice of it is \\
       prefetched, so that its reading overlaps this unit's arithmetic. */ \\
    static void pyconv_dw_rows_##S(T* dst, Py_ssize_t cstride, T* q, Py_ssize_t* ro, \\
                                   const T* xg, const T* w, Py_ssize_t wstride, \\
                                   const T* bias, Py_ssize_t cout_g, Py_ssize_t r0, \\
                                   Py_ssize_t r1, T pad, int relu, const T* pf, \\
                                   Py_ssize_t npf, const pyconv_dw_geom* g) { \\
        Py_ssize_t od = r0 / g->OH, oh = r0 - od * g->OH, r, b, b1; \\
        Py_ssize_t line = 64 / (Py_ssize_t)sizeof(T); \\
        Py_ssize_t chunk = r1 > r0 ? (npf + (r1 - r0) - 1) / (r1 - r0) : 0; \\
        if (g->cached) pyconv_dw_prepare_##S(q, xg, pad, r0, r1, g); \\
        for (r = r0; r < r1; r++) { \\
            if (pf) { \\
                b1 = PYCONV_DW_MIN((r - r0 + 1) * chunk, npf); \\
                for (b = (r - r0) * chunk; b < b1; b += line) PYCONV_DW_PREFETCH(pf + b); \\
            } \\
            pyconv_dw_row_##S(dst + (r - r0) * g->OW, cstride, q, ro, xg, w, wstride, \\
                              bias, cout_g, od, oh, pad, relu, g); \\
            if (++oh == g->OH) { oh = 0; od++; } \\
        } \\
    }

    /* The plane kernel's strips: n_rows output rows o[r * OW + 0:VW] of one strip of VW
       output columns of a K x K kernel (3, 5 or 7) at stride ST (1 or 2), from the
       input rows rows[i] + off. Down the rows: each input row is loaded once and
       feeds the output rows that read it through running partial sums (3x3 at stride
       1: three shifted vectors per row, so every output vector costs 3 loads, 3
       multiplies, 6 multiply-adds and 3 adds). Each output is bias + ((...(R_0 +
       R_1) + ...) + R_{K-1}), R_t = (...(w*x_0 + w*x_1) + ...) + w*x_{K-1}, left to
       right, each "+ w*x" within a row one FMA in the AVX2 build made by GCC or Clang
       (PYCONV_DW_MADD: on 8x256x56x56, 3x3, against a multiply and an add, medians
       of 5 alternating processes: one thread float64 12.8 -> 11.6 ms, float32 7.2
       -> 6.7 ms; 2 threads 7.3 -> 6.8 and 4.2 -> 3.7 ms), a multiply and an
       add in the baseline build (as in the other 3x3 paths), so the two builds
       differ in the last bits. Meanwhile: first
       n_rows vectors of the pending copy pend (the strips of a band together copy
       the previous band), then per output vector ST lines of pf[0:npf] prefetched
       (*kp: the next line, carried from strip to strip; a stride-2 band reads about
       four times the values it writes). Not inlined: on its own, the loop keeps the
       weights in registers.

       Stride 2: output column j reads the padded columns 2j .. 2j + K - 1. Per input
       row, pairs of vectors are split into their even and odd lanes, which gives
       the taps' vectors. With 32-byte vectors the split stays within 128-bit lanes
       (one shuffle each, where a full deinterleave costs a cross-lane permute more),
       so the lanes hold the outputs in a fixed permuted order: the arithmetic is lane
       by lane, and one permute per output vector (PYCONV_DW_UNPERM) puts them back in
       order. */
    #if defined(__GNUC__) || defined(__clang__)
      #define PYCONV_DW_NOINLINE __attribute__((noinline))
    #else
      #define PYCONV_DW_NOINLINE
    #endif
    /* d[0:VW] = s[0:VW], unaligned */
    #define PYCONV_DW_VCOPY(S, T, VU) \\
    static inline void pyconv_dw_vcopy_##S(T* d, const T* s) { \\
        *(VU*)d = *(const VU*)s; \\
    }
    #if defined(__clang__)
      #define PYCONV_DW_SHUF2(a, b, M, ...) __builtin_shufflevector((a), (b), __VA_ARGS__)
      #define PYCONV_DW_SHUF1(a, M, ...) __builtin_shufflevector((a), (a), __VA_ARGS__)
    #elif defined(__GNUC__)
      #define PYCONV_DW_SHUF2(a, b, M, ...) __builtin_shuffle((a), (b), (M){__VA_ARGS__})
      #define PYCONV_DW_SHUF1(a, M, ...) __builtin_shuffle((a), (M){__VA_ARGS__})
    #endif
    #if (defined(__GNUC__) || defined(__clang__)) && PYCONV_DW_VBYTES == 32
      #define PYCONV_DW_EVEN_f(a, b) \\
          PYCONV_DW_SHUF2(a, b, pyconv_dw_mf, 0, 2, 8, 10, 4, 6, 12, 14)
      #define PYCONV_DW_ODD_f(a, b) \\
          PYCONV_DW_SHUF2(a, b, pyconv_dw_mf, 1, 3, 9, 11, 5, 7, 13, 15)
      #define PYCONV_DW_UNPERM_f(v) \\
          PYCONV_DW_SHUF1(v, pyconv_dw_mf, 0, 1, 4, 5, 2, 3, 6, 7)
      #define PYCONV_DW_EVEN_d(a, b) PYCONV_DW_SHUF2(a, b, pyconv_dw_md, 0, 4, 2, 6)
      #define PYCONV_DW_ODD_d(a, b) PYCONV_DW_SHUF2(a, b, pyconv_dw_md, 1, 5, 3, 7)
      #define PYCONV_DW_UNPERM_d(v) PYCONV_DW_SHUF1(v, pyconv_dw_md, 0, 2, 1, 3)
    #elif (defined(__GNUC__) || defined(__clang__)) && PYCONV_DW_VBYTES == 64
      #define PYCONV_DW_EVEN_f(a, b) PYCONV_DW_SHUF2(a, b, pyconv_dw_mf, \\
          0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
      #define PYCONV_DW_ODD_f(a, b) PYCONV_DW_SHUF2(a, b, pyconv_dw_mf, \\
          1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
      #define PYCONV_DW_UNPERM_f(v) (v)
      #define PYCONV_DW_EVEN_d(a, b) \\
          PYCONV_DW_SHUF2(a, b, pyconv_dw_md, 0, 2, 4, 6, 8, 10, 12, 14)
      #define PYCONV_DW_ODD_d(a, b) \\
          PYCONV_DW_SHUF2(a, b, pyconv_dw_md, 1, 3, 5, 7, 9, 11, 13, 15)
      #define PYCONV_DW_UNPERM_d(v) (v)
    #elif defined(__GNUC__) || defined(__clang__)
      #define PYCONV_DW_EVEN_f(a, b) PYCONV_DW_SHUF2(a, b, pyconv_dw_mf, 0, 2, 4, 6)
      #define PYCONV_DW_ODD_f(a, b) PYCONV_DW_SHUF2(a, b, pyconv_dw_mf, 1, 3, 5, 7)
      #define PYCONV_DW_UNPERM_f(v) (v)
      #define PYCONV_DW_EVEN_d(a, b) PYCONV_DW_SHUF2(a, b, pyconv_dw_md, 0, 2)
      #define PYCONV_DW_ODD_d(a, b) PYCONV_DW_SHUF2(a, b, pyconv_dw_md, 1, 3)
      #define PYCONV_DW_UNPERM_d(v) (v)
    #endif
    #if !defined(__GNUC__) && !defined(__clang__)
      #define PYCONV_DW_UNPERM_f(v) (v)
      #define PYCONV_DW_UNPERM_d(v) (v)
    #endif
    /* Iteration r reads the ST new input rows ST*r + K - ST .. ST*r + K - 1; input
       row i adds its row sum R_t (t = i - ST*j, the kernel row it is for) to the
       partial sum P[j] of output row r + j, J = ceil(K / ST) of them in flight, the
       conditions on t being constants once the loops are unrolled. x_t: stride 1, the
       row at column t; stride 2, the even or odd lanes of the pair of vectors at
       column t or t - 1 (reading one column past the taps at most). */
    #if defined(__GNUC__) || defined(__clang__)
      #define PYCONV_DW_TAPSK(S, VU, VW, K, ST, q, x) do { \\
          int t_; \\
          PYCONV_DW_UNROLL for (t_ = 0; t_ < K; t_++) { \\
              if (ST == 1) { \\
                  x[t_] = *(const VU*)((q) + t_); \\
              } else { \\
                  const VU lo_ = *(const VU*)((q) + (t_ & ~1)); \\
                  const VU hi_ = *(const VU*)((q) + (t_ & ~1) + VW); \\
                  x[t_] = (t_ & 1) ? PYCONV_DW_ODD_##S(lo_, hi_) \\
                                   : PYCONV_DW_EVEN_##S(lo_, hi_); \\
              } \\
          } } while (0)
    #else
      #define PYCONV_DW_TAPSK(S, VU, VW, K, ST, q, x) do { \\
          int t_; \\
          for (t_ = 0; t_ < K; t_++) x[t_] = (q)[t_]; } while (0)
    #endif
    /* Edge strips of a 3 x 3 kernel at stride 1 whose taps reach one column past the
       input row, on the left (EDGE 1: lane 0 of tap 0) or on the right (EDGE 2: the
       last lane of tap 2): the row is read in place and that lane is replaced by ev,
       the value the padding gives there (a bit select, so the arithmetic is that of
       any other strip). */
    #if defined(__GNUC__) || defined(__clang__)
      #define PYCONV_DW_EDGEMASK(M, VW, EDGE, em) M em; do { int l_; \\
          for (l_ = 0; l_ < VW; l_++) \\
              em[l_] = (EDGE == 1 ? l_ == 0 : l_ == VW - 1) ? -1 : 0; } while (0)
      #define PYCONV_DW_EDGESEL(V, M, EDGE, K, x, e, em) do { \\
          V e_ = (e) - (V){0}; M a_, b_; \\
          memcpy(&a_, &x[EDGE == 1 ? 0 : K - 1], sizeof a_); \\
          memcpy(&b_, &e_, sizeof b_); \\
          a_ = (a_ & ~em) | (b_ & em); \\
          memcpy(&x[EDGE == 1 ? 0 : K - 1], &a_, sizeof a_); } while (0)
    #else
      #define PYCONV_DW_EDGEMASK(M, VW, EDGE, em) int em = 0
      #define PYCONV_DW_EDGESEL(V, M, EDGE, K, x, e, em) \\
          ((void)(em), x[EDGE == 1 ? 0 : K - 1] = (e))
    #endif
    /* input row x, relative index i, into the partial sums P of the rows in flight */
    #define PYCONV_DW_ADDROW(S, V, K, ST, J, wv, x, i, P) do { \\
        int j_, u_; \\
        PYCONV_DW_UNROLL for (j_ = 0; j_ < J; j_++) { \\
            const int t_ = (i) - ST * j_; \\
            if (t_ >= 0 && t_ < K) { \\
                V rt_ = wv[t_ * K] * x[0]; \\
                PYCONV_DW_UNROLL for (u_ = 1; u_ < K; u_++) \\
                    rt_ = PYCONV_DW_MADD_v##S(rt_, wv[t_ * K + u_], x[u_]); \\
                P[j_] = t_ == 0 ? rt_ : P[j_] + rt_; \\
            } \\
        } } while (0)
    #define PYCONV_DW_STRIPK(S, T, V, VU, VW, M, RELU, K, ST) \\
        PYCONV_DW_STRIPKE(S, T, V, VU, VW, M, RELU, K, ST, 0, \\
                          pyconv_dw_strip##K##s##ST##_##S)
    #define PYCONV_DW_STRIPKE(S, T, V, VU, VW, M, RELU, K, ST, EDGE, NAME) \\
    static PYCONV_DW_NOINLINE void NAME( \\
            const T* const* rows, Py_ssize_t off, const T* w, T bias, T* o, \\
            Py_ssize_t OW, Py_ssize_t n_rows, int relu, pyconv_dw_pend* pend, \\
            const T* pf, Py_ssize_t npf, Py_ssize_t* kp, const T* ev) { \\
        enum { J = (K - 1) / ST + 1 }; \\
        Py_ssize_t r, k = *kp, line = 64 / (Py_ssize_t)sizeof(T); \\
        Py_ssize_t si = pend->i, sn = pend->n - PYCONV_DW_SW_##S; \\
        const T* ss = (const T*)pend->s; \\
        T* sd = (T*)pend->d; \\
        V wv[K * K], P[J], x[K], v, vb = bias - (V){0}; \\
        int i, m, j; \\
        PYCONV_DW_EDGEMASK(M, VW, EDGE, em); \\
        PYCONV_DW_UNROLL for (i = 0; i < K * K; i++) wv[i] = w[i] - (V){0}; \\
        PYCONV_DW_UNROLL for (i = 0; i < K - ST; i++) { \\
            PYCONV_DW_TAPSK(S, VU, VW, K, ST, rows[i] + off, x); \\
            if (EDGE) PYCONV_DW_EDGESEL(V, M, EDGE, K, x, ev[i], em); \\
            PYCONV_DW_ADDROW(S, V, K, ST, J, wv, x, i, P); \\
        } \\
        for (r = 0; r < n_rows; r++) { \\
            /* this strip's share of the pending copy (n_rows vectors), a vector per \\
               output row: the non-temporal stores drain between the row's arithmetic \\
               instead of filling the store buffer in one burst ahead of it. \\
               8x256x56x56, 2 threads, medians of 25 alternating calls, against one \\
               burst at the start of the strip: float32 1.66 -> 1.33 ms, float64 \\
               3.97 -> 3.41 ms (one thread, float32 3.09 -> 2.47 ms) */ \\
            if (si <= sn) { \\
                PYCONV_DW_SV_##S(sd + si, ss + si); \\
                si += PYCONV_DW_SW_##S; \\
            } \\
            PYCONV_DW_UNROLL for (m = 0; m < ST; m++) \\
                if (k < npf) { PYCONV_DW_PREFETCH_L2(pf + k); k += line; } \\
            PYCONV_DW_UNROLL for (m = 0; m < ST; m++) { \\
                PYCONV_DW_TAPSK(S, VU, VW, K, ST, rows[ST * r + K - ST + m] + off, x); \\
                if (EDGE) \\
                    PYCONV_DW_EDGESEL(V, M, EDGE, K, x, ev[ST * r + K - ST + m], em); \\
                PYCONV_DW_ADDROW(S, V, K, ST, J, wv, x, K - ST + m, P); \\
            } \\
            v = vb + P[0]; \\
            PYCONV_DW_UNROLL for (j = 0; j + 1 < J; j++) P[j] = P[j + 1]; \\
            if (relu) RELU(V, M, v); \\
            *(VU*)(o + r * OW) = ST == 1 ? v : PYCONV_DW_UNPERM_##S(v); \\
        } \\
        *kp = k; \\
        pend->i = si; \\
    }
    #define PYCONV_DW_STRIPS_K(S, T, V, VU, VW, M, RELU) \\
        PYCONV_DW_VCOPY(S, T, VU) \\
        PYCONV_DW_STRIPK(S, T, V, VU, VW, M, RELU, 3, 1) \\
        PYCONV_DW_STRIPKE(S, T, V, VU, VW, M, RELU, 3, 1, 1, pyconv_dw_strip3l_##S) \\
        PYCONV_DW_STRIPKE(S, T, V, VU, VW, M, RELU, 3, 1, 2, pyconv_dw_strip3r_##S) \\
        PYCONV_DW_STRIPK(S, T, V, VU, VW, M, RELU, 3, 2) \\
        PYCONV_DW_STRIPK(S, T, V, VU, VW, M, RELU, 5, 1) \\
        PYCONV_DW_STRIPK(S, T, V, VU, VW, M, RELU, 5, 2) \\
        PYCONV_DW_STRIPK(S, T, V, VU, VW, M, RELU, 7, 1) \\
        PYCONV_DW_STRIPK(S, T, V, VU, VW, M, RELU, 7, 2)

    #if defined(__GNUC__) || defined(__clang__)
    PYCONV_DW_TYPED(f, float, pyconv_dw_vf, pyconv_dw_vfu, PYCONV_DW_VWF, pyconv_dw_mf)
    PYCONV_DW_TYPED(d, double, pyconv_dw_vd, pyconv_dw_vdu, PYCONV_DW_VWD, pyconv_dw_md)
    PYCONV_DW_STRIPS_K(f, float, pyconv_dw_vf, pyconv_dw_vfu, PYCONV_DW_VWF, pyconv_dw_mf,
                       PYCONV_DW_RELU)
    PYCONV_DW_STRIPS_K(d, double, pyconv_dw_vd, pyconv_dw_vdu, PYCONV_DW_VWD, pyconv_dw_md,
                       PYCONV_DW_RELU)
    #else
    PYCONV_DW_TYPED(f, float, float, float, 1, int)
    PYCONV_DW_TYPED(d, double, double, double, 1, int)
    PYCONV_DW_STRIPS_K(f, float, float, float, 1, int, PYCONV_DW_SRELU)
    PYCONV_DW_STRIPS_K(d, double, double, double, 1, int, PYCONV_DW_SRELU)
    #endif
    /* The flat kernel: 2-D, stride 1 on both axes, any kernel size, dilation and
       padding. The padded input rows of a band of output rows [oh0, oh1) are laid
       end to end, Wp values each, channel after channel, so that output (oh, ow)
       at the flat position f = (oh - oh0)*Wp + ow reads tap (kh, kw) of input
       channel ci at q[ci*CS + kh*dh*Wp + kw*dw + f]: every output row, and the
       seam between two rows, is one run of unit-stride loads. The register blocks
       sweep f in steps of FLAT_NV vectors over whole bands; the Wp - OW positions
       at the end of each row (and past the band) are computed and dropped, Wp - OW
       = (KW-1)*dw of every Wp (2 of 58 for 3x3 on 56 columns, where the row blocks
       compute 80 columns for 56). The blocks write the output rows directly
       (so NULL: PYCONV_DW_MAPPED_STORE), or into the scratch so (Ls per channel),
       copied row by row to dst after the band or, with pend, streamed out during the
       next one. Sums in the same order as pyconv_dw_row: the same bits. hmap[p]: the
       input row of padded row p (-1: padding). */
    #define PYCONV_DW_FLAT_NV 3
    #if PYCONV_DW_VBYTES == 64
      #define PYCONV_DW_FLAT_COB 8   /* 24 accumulators of 32 registers */
    #else
      #define PYCONV_DW_FLAT_COB 4   /* 12 of 16 */
    #endif
    #define PYCONV_DW_FLAT_BLOCK(COB, S) PYCONV_DW_FLAT_BLOCK_(COB, S)
    #define PYCONV_DW_FLAT_BLOCK_(COB, S) pyconv_dw_k##COB##3_##S
    /* A pending copy of a unit's outputs from the scratch so to dst by non-temporal
       stores, done a few vectors at a time between the next unit's register blocks,
       so that the stores drain while the core computes: channel co's values, the
       first OW of each of nb rows of s + co*Ls (Wp apart), go to the nb*OW values at
       d + co*cstride. Each aligned vector of d is one load of s, or where it spans
       two rows, two loads merged lane by lane. i, r, c: progress in channel co. */
    typedef struct {
        void* d; const void* s;
        Py_ssize_t nb, OW, Wp, Ls, cstride, cout_g, co, i, r, c;
    } pyconv_dw_fpend;
    #if (defined(__GNUC__) || defined(__clang__)) && PYCONV_DW_SALIGN > 1
      #define PYCONV_DW_FLAT_STREAM(S, T, V, VU, VW, M) \\
      /* streams up to budget vectors of the pending copy (budget < 0: all of it) */ \\
      static void pyconv_dw_fpend_step_##S(pyconv_dw_fpend* p, Py_ssize_t budget) { \\
          Py_ssize_t l, n = p->nb * p->OW, OW = p->OW, Wp = p->Wp; \\
          M lanes, m, a, b; \\
          V v, v2; \\
          for (l = 0; l < VW; l++) lanes[l] = l; \\
          while (p->co < p->cout_g && budget != 0) { \\
              T* d = (T*)p->d + p->co * p->cstride; \\
              const T* s = (const T*)p->s + p->co * p->Ls; \\
              Py_ssize_t i = p->i, r = p->r, c = p->c; \\
              for (; i < n && ((size_t)(d + i) & (PYCONV_DW_SALIGN - 1)); i++) { \\
                  d[i] = s[r * Wp + c]; \\
                  if (++c == OW) { c = 0; r++; } \\
              } \\
              if (OW >= VW) { \\
                  for (; i + VW <= n && budget != 0; i += VW, budget--) { \\
                      const T* p_ = s + r * Wp + c; \\
                      v = *(const VU*)p_; \\
                      if (c + VW > OW) { \\
                          v2 = *(const VU*)(p_ + Wp - OW); \\
                          m = lanes < (M){0} + (__typeof__(lanes[0]))(OW - c); \\
                          memcpy(&a, &v, sizeof a); \\
                          memcpy(&b, &v2, sizeof b); \\
                          a = (a & m) | (b & ~m); \\
                          memcpy(&v, &a, sizeof v); \\
                      } \\
                      PYCONV_DW_SVV_##S(d + i, v); \\
                      c += VW; \\
                      if (c >= OW) { c -= OW; r++; } \\
                  } \\
              } \\
              if (i + VW > n || OW < VW) { \\
                  for (; i < n; i++) { \\
                      d[i] = s[r * Wp + c]; \\
                      if (++c == OW) { c = 0; r++; } \\
                  } \\
                  p->co++; \\
                  i = r = c = 0; \\
              } \\
              p->i = i; p->r = r; p->c = c; \\
          } \\
      }
    #else
      #define PYCONV_DW_FLAT_STREAM(S, T, V, VU, VW, M) \\
      static void pyconv_dw_fpend_step_##S(pyconv_dw_fpend* p, Py_ssize_t budget) { \\
          Py_ssize_t k, r, c; \\
          for (k = p->co; k < p->cout_g && budget != 0; k++) \\
              for (r = 0; r < p->nb; r++) \\
                  for (c = 0; c < p->OW; c++) \\
                      ((T*)p->d)[k * p->cstride + r * p->OW + c] = \\
                          ((const T*)p->s)[k * p->Ls + r * p->Wp + c]; \\
          if (budget != 0) p->co = p->cout_g; \\
      }
    #endif
    /* the register blocks over f for channels co.. (COB of them), with a share of the
       pending copy and of the prefetches before each block */
    #define PYCONV_DW_FLAT_SWEEP(S, COB) \\
        for (; co + COB <= cout_g; co += COB) \\
            for (f = 0; f < Ls; f += blk) { \\
                if (pend) pyconv_dw_fpend_step_##S(pend, pend_per); \\
                for (m = 0; m < pf_per && pf_c < g->cin_g; m++) { \\
                    PYCONV_DW_PREFETCH_L2((const char*)(pf + pf_c * pfstride) + pf_l * 64); \\
                    if (++pf_l == pf_lines) { pf_l = 0; pf_c++; } \\
                } \\
                PYCONV_DW_FLAT_BLOCK(COB, S)( \\
                    so ? so + co * Ls : dst + co * cstride + oh0 * OW, \\
                    so ? Ls : cstride, f, q, ro, nrows, g->qoff, KW, w + co * wstride, \\
                    wstride, bias ? bias + co : NULL, 1, relu, so ? NULL : map); \\
            }
    #define PYCONV_DW_FLAT(S, T, VU, VW) \\
    static void pyconv_dw_flat_##S(T* dst, Py_ssize_t cstride, T* q, T* so, \\
                                   Py_ssize_t* ro, const T* xg, const T* w, \\
                                   Py_ssize_t wstride, const T* bias, Py_ssize_t cout_g, \\
                                   Py_ssize_t oh0, Py_ssize_t oh1, T pad, int relu, \\
                                   const Py_ssize_t* hmap, Py_ssize_t dh, \\
                                   pyconv_dw_fpend* pend, const T* pf, Py_ssize_t npf, \\
                                   Py_ssize_t pfstride, const pyconv_dw_geom* g) { \\
        Py_ssize_t Wp = g->Wp, KH = g->KH, KW = g->KW, OW = g->OW, W = g->W; \\
        Py_ssize_t nb = oh1 - oh0, nin = nb + (KH - 1) * dh, CS = nin * Wp; \\
        Py_ssize_t blk = PYCONV_DW_FLAT_NV * VW; \\
        Py_ssize_t Ls = (nb * Wp + blk - 1) / blk * blk; \\
        Py_ssize_t nrows = g->cin_g * KH, ci, p, kh, m, f, co, r, c, ih; \\
        Py_ssize_t map[3]; \\
        T* qr; \\
        map[0] = OW; map[1] = Wp; map[2] = nb; \\
        /* rows whose edges are all padding (the zeros and constant modes): the pad \\
           value, then the row, then the pad value, here rather than through the \\
           general fill, which maps every edge column (that fill, even with an \\
           overlapping last vector, took 4.4 ms against 4.0 on 8x256x56x56 g32) */ \\
        Py_ssize_t ma = g->phase[0], mb = g->phase[1]; \\
        int plain = 1; \\
        for (m = 0; m < Wp; m++) \\
            if ((m < ma || m >= mb) && g->jmap[m] >= 0) plain = 0; \\
        for (ci = 0; ci < g->cin_g; ci++) { \\
            for (p = 0; p < nin; p++) { \\
                qr = q + ci * CS + p * Wp; \\
                ih = hmap[oh0 + p]; \\
                if (ih < 0) { \\
                    for (m = 0; m < Wp; m++) qr[m] = pad; \\
                } else if (plain && mb - ma >= VW) { \\
                    const T* s_ = xg + ci * g->plane + ih * W + (ma - g->lo); \\
                    for (m = 0; m < ma; m++) qr[m] = pad; \\
                    for (m = ma; m + VW <= mb; m += VW) \\
                        *(VU*)(qr + m) = *(const VU*)(s_ + m - ma); \\
                    if (m < mb) \\
                        *(VU*)(qr + mb - VW) = *(const VU*)(s_ + mb - VW - ma); \\
                    for (m = mb; m < Wp; m++) qr[m] = pad; \\
                } else { \\
                    pyconv_dw_fill_##S(qr, xg + ci * g->plane + ih * W, pad, g); \\
                } \\
            } \\
            for (kh = 0; kh < KH; kh++) ro[ci * KH + kh] = ci * CS + kh * dh * Wp; \\
        } \\
        /* the last block reads up to Wp + blk values past the rows: zeros, not \\
           whatever was there (a denormal there would slow its multiply-adds) */ \\
        for (m = g->cin_g * CS; m < g->cin_g * CS + Wp + blk; m++) q[m] = 0; \\
        /* the next unit's input rows (npf values in each of cin_g planes pfstride \\
           apart) are prefetched a few lines per block, so that their reading \\
           overlaps this unit's arithmetic */ \\
        Py_ssize_t pf_lines = pf ? (npf * (Py_ssize_t)sizeof(T) + 63) / 64 : 0; \\
        Py_ssize_t pf_total = pf_lines * g->cin_g, pf_c = pf ? 0 : g->cin_g, pf_l = 0; \\
        Py_ssize_t n_blocks = (Ls / blk) * (cout_g / PYCONV_DW_FLAT_COB \\
                                            + (cout_g % PYCONV_DW_FLAT_COB + 3) / 4); \\
        Py_ssize_t pf_per = pf_total / n_blocks + 1; \\
        Py_ssize_t pend_per = pend ? (pend->cout_g * pend->nb * pend->OW / VW) / n_blocks + 1 \\
                                   : 0; \\
        co = 0; \\
        PYCONV_DW_FLAT_SWEEP(S, PYCONV_DW_FLAT_COB) \\
        PYCONV_DW_FLAT_SWEEP(S, 4) \\
        PYCONV_DW_FLAT_SWEEP(S, 2) \\
        PYCONV_DW_FLAT_SWEEP(S, 1) \\
        if (pend) { \\
            /* the previous unit's copy is done; this unit's is the pending one now */ \\
            pyconv_dw_fpend_step_##S(pend, -1); \\
            pend->d = dst + oh0 * OW; pend->s = so; pend->nb = nb; pend->OW = OW; \\
            pend->Wp = Wp; pend->Ls = Ls; pend->cstride = cstride; pend->cout_g = cout_g; \\
            pend->co = pend->i = pend->r = pend->c = 0; \\
            return; \\
        } \\
        if (so == NULL) return;  /* the blocks wrote the output rows */ \\
        for (co = 0; co < cout_g; co++) { \\
            for (r = 0; r < nb; r++) { \\
                const T* s_ = so + co * Ls + r * Wp; \\
                T* d_ = dst + co * cstride + (oh0 + r) * OW; \\
                for (c = 0; c + VW <= OW; c += VW) *(VU*)(d_ + c) = *(const VU*)(s_ + c); \\
                if (c < OW && OW >= VW) { \\
                    *(VU*)(d_ + OW - VW) = *(const VU*)(s_ + OW - VW); \\
                } else { \\
                    for (; c < OW; c++) d_[c] = s_[c]; \\
                } \\
            } \\
        } \\
    }
    #if defined(__GNUC__) || defined(__clang__)
    PYCONV_DW_FLAT_STREAM(f, float, pyconv_dw_vf, pyconv_dw_vfu, PYCONV_DW_VWF, pyconv_dw_mf)
    PYCONV_DW_FLAT_STREAM(d, double, pyconv_dw_vd, pyconv_dw_vdu, PYCONV_DW_VWD, pyconv_dw_md)
    PYCONV_DW_FLAT(f, float, pyconv_dw_vfu, PYCONV_DW_VWF)
    PYCONV_DW_FLAT(d, double, pyconv_dw_vdu, PYCONV_DW_VWD)
    #else
    PYCONV_DW_FLAT_STREAM(f, float, float, float, 1, int)
    PYCONV_DW_FLAT_STREAM(d, double, double, double, 1, int)
    PYCONV_DW_FLAT(f, float, float, 1)
    PYCONV_DW_FLAT(d, double, double, 1)
    #endif
    /* values of the flat kernel's scratch per thread: the padded rows (q) and the
       block outputs (so) of a band of nb output rows */
    static Py_ssize_t pyconv_dw_flat_q(Py_ssize_t cin_g, Py_ssize_t nb, Py_ssize_t KH,
                                       Py_ssize_t dh, Py_ssize_t Wp, Py_ssize_t vw) {
        return cin_g * (nb + (KH - 1) * dh) * Wp + Wp + PYCONV_DW_FLAT_NV * vw;
    }
    static Py_ssize_t pyconv_dw_flat_so(Py_ssize_t cout_g, Py_ssize_t nb, Py_ssize_t Wp,
                                        Py_ssize_t vw) {
        Py_ssize_t blk = PYCONV_DW_FLAT_NV * vw;
        return cout_g * ((nb * Wp + blk - 1) / blk * blk);
    }
    /* One strip of a K x K kernel (3, 5 or 7) at stride s (1 or 2); edge: 0, or for
       3 x 3 at stride 1 the edge strip (1 left, 2 right) with its values ev. */
    #define PYCONV_DW_STRIP_ANY(S, T) \\
    static void pyconv_dw_strip_##S(const T* const* rows, Py_ssize_t off, const T* w, \\
                                    T bias, T* o, Py_ssize_t OW, Py_ssize_t n_rows, \\
                                    int relu, pyconv_dw_pend* pend, const T* pf, \\
                                    Py_ssize_t npf, Py_ssize_t* kp, Py_ssize_t s, \\
                                    Py_ssize_t K, int edge, const T* ev) { \\
        void (*f)(const T* const*, Py_ssize_t, const T*, T, T*, Py_ssize_t, Py_ssize_t, \\
                  int, pyconv_dw_pend*, const T*, Py_ssize_t, Py_ssize_t*, const T*) = \\
            edge == 1 ? pyconv_dw_strip3l_##S : edge == 2 ? pyconv_dw_strip3r_##S \\
            : K == 7 ? (s == 1 ? pyconv_dw_strip7s1_##S : pyconv_dw_strip7s2_##S) \\
            : K == 5 ? (s == 1 ? pyconv_dw_strip5s1_##S : pyconv_dw_strip5s2_##S) \\
            : (s == 1 ? pyconv_dw_strip3s1_##S : pyconv_dw_strip3s2_##S); \\
        f(rows, off, w, bias, o, OW, n_rows, relu, pend, pf, npf, kp, ev); \\
    }
    PYCONV_DW_STRIP_ANY(f, float)
    PYCONV_DW_STRIP_ANY(d, double)
    """
    ctypedef struct pyconv_dw_geom:
        const Py_ssize_t* idx_d
        const Py_ssize_t* idx_h
        const Py_ssize_t* jmap
        const Py_ssize_t* qoff
        const Py_ssize_t* phase
        Py_ssize_t D, H, W, HW, plane, OD, OH, OW, KD, KH, KW
        Py_ssize_t sw, Wp, Mq, QS
        Py_ssize_t lo
        Py_ssize_t cin_g, batch
        int cached

    void pyconv_dw_rows_f(float* dst, Py_ssize_t cstride, float* q, Py_ssize_t* ro,
                          const float* xg, const float* w, Py_ssize_t wstride,
                          const float* bias, Py_ssize_t cout_g, Py_ssize_t r0,
                          Py_ssize_t r1, float pad, int relu, const float* pf,
                          Py_ssize_t npf, const pyconv_dw_geom* g) noexcept nogil
    const Py_ssize_t PYCONV_DW_VWF, PYCONV_DW_VWD   # values per vector
    void pyconv_dw_flat_f(float* dst, Py_ssize_t cstride, float* q, float* so,
                          Py_ssize_t* ro, const float* xg, const float* w,
                          Py_ssize_t wstride, const float* bias, Py_ssize_t cout_g,
                          Py_ssize_t oh0, Py_ssize_t oh1, float pad, int relu,
                          const Py_ssize_t* hmap, Py_ssize_t dh,
                          pyconv_dw_fpend* pend, const float* pf, Py_ssize_t npf,
                          Py_ssize_t pfstride, const pyconv_dw_geom* g) noexcept nogil
    void pyconv_dw_flat_d(double* dst, Py_ssize_t cstride, double* q, double* so,
                          Py_ssize_t* ro, const double* xg, const double* w,
                          Py_ssize_t wstride, const double* bias, Py_ssize_t cout_g,
                          Py_ssize_t oh0, Py_ssize_t oh1, double pad, int relu,
                          const Py_ssize_t* hmap, Py_ssize_t dh,
                          pyconv_dw_fpend* pend, const double* pf, Py_ssize_t npf,
                          Py_ssize_t pfstride, const pyconv_dw_geom* g) noexcept nogil
    ctypedef struct pyconv_dw_fpend:
        const void* s
        Py_ssize_t cout_g, co
    void pyconv_dw_fpend_step_f(pyconv_dw_fpend* p, Py_ssize_t budget) noexcept nogil
    void pyconv_dw_fpend_step_d(pyconv_dw_fpend* p, Py_ssize_t budget) noexcept nogil
    Py_ssize_t pyconv_dw_flat_q(Py_ssize_t cin_g, Py_ssize_t nb, Py_ssize_t KH,
                                Py_ssize_t dh, Py_ssize_t Wp, Py_ssize_t vw) noexcept nogil
    Py_ssize_t pyconv_dw_flat_so(Py_ssize_t cout_g, Py_ssize_t nb, Py_ssize_t Wp,
                                 Py_ssize_t vw) noexcept nogil
    ctypedef struct pyconv_dw_pend:
        const void* s
        void* d
        Py_ssize_t i, n
    void pyconv_dw_pend_start_f(pyconv_dw_pend* p, float* d, const float* s,
                                Py_ssize_t n) noexcept nogil
    void pyconv_dw_pend_start_d(pyconv_dw_pend* p, double* d, const double* s,
                                Py_ssize_t n) noexcept nogil
    void pyconv_dw_pend_finish_f(pyconv_dw_pend* p) noexcept nogil
    void pyconv_dw_pend_finish_d(pyconv_dw_pend* p) noexcept nogil
    void pyconv_dw_sfence() noexcept nogil
    void pyconv_dw_vcopy_f(float* d, const float* s) noexcept nogil
    void pyconv_dw_vcopy_d(double* d, const double* s) noexcept nogil
    void pyconv_dw_strip_f(const float* const* rows, Py_ssize_t off, const float* w,
                           float bias, float* o, Py_ssize_t OW, Py_ssize_t n_rows,
                           int relu, pyconv_dw_pend* pend, const float* pf, Py_ssize_t npf,
                           Py_ssize_t* kp, Py_ssize_t s, Py_ssize_t K, int edge,
                           const float* ev) noexcept nogil
    void pyconv_dw_strip_d(const double* const* rows, Py_ssize_t off, const double* w,
                           double bias, double* o, Py_ssize_t OW, Py_ssize_t n_rows,
                           int relu, pyconv_dw_pend* pend, const double* pf,
                           Py_ssize_t npf, Py_ssize_t* kp, Py_ssize_t s,
                           Py_ssize_t K, int edge, const double* ev) noexcept nogil
    void pyconv_dw_rows_d(double* dst, Py_ssize_t cstride, double* q, Py_ssize_t* ro,
                          const double* xg, const double* w, Py_ssize_t wstride,
                          const double* bias, Py_ssize_t cout_g, Py_ssize_t r0,
                          Py_ssize_t r1, double pad, int relu, const double* pf,
                          Py_ssize_t npf, const pyconv_dw_geom* g) noexcept nogil


# -- row kernel: one input and one output channel per group -----------------------------
# Reads the input rows in place: interior columns in vectorised affine loops, edge
# columns through the width table, 3x3 fused into one pass two output rows at a time
# (four input rows feed two outputs, so each loaded vector is used for up to six
# multiply-adds). Faster than the padded-row kernel there: nothing to copy, and the
# row pairs halve the loads.
cdef inline void tap_edges(floating* acc, const floating* src, const Py_ssize_t* wrow,
                           floating wv, Py_ssize_t o0, Py_ssize_t o1,
                           floating pad_value) noexcept nogil:
    # One tap over output columns [o0, o1) through the width table (-1: the pad value).
    cdef Py_ssize_t ow, iw
    for ow in range(o0, o1):
        iw = wrow[ow]
        if iw >= 0:
            acc[ow] += wv * src[iw]
        else:
            acc[ow] += wv * pad_value


cdef inline void tap_row(floating* acc, const floating* src, const Py_ssize_t* wrow,
                         floating wv, const Py_ssize_t* span, Py_ssize_t sw,
                         Py_ssize_t OW, floating pad_value) noexcept nogil:
    # One tap along a whole output row: affine interior, table edges.
    cdef Py_ssize_t ow
    cdef Py_ssize_t lo = span[0], hi = span[1], start = span[2]
    tap_edges(acc, src, wrow, wv, 0, lo, pad_value)
    if sw == 1:
        for ow in range(lo, hi):
            acc[ow] += wv * src[start + ow]
    else:
        for ow in range(lo, hi):
            acc[ow] += wv * src[start + ow * sw]
    tap_edges(acc, src, wrow, wv, hi, OW, pad_value)


cdef inline void edges3(floating* acc, const floating* src, const Py_ssize_t* idx_w,
                        const floating* w3, Py_ssize_t L, Py_ssize_t R, Py_ssize_t OW,
                        floating pad_value) noexcept nogil:
    # The three taps of a row outside the common interior [L, R).
    cdef Py_ssize_t kw
    for kw in range(3):
        tap_edges(acc, src, idx_w + kw * OW, w3[kw], 0, L, pad_value)
        tap_edges(acc, src, idx_w + kw * OW, w3[kw], R, OW, pad_value)


cdef inline floating tap3(const floating* src, const Py_ssize_t* idx_w, Py_ssize_t ow,
                          Py_ssize_t OW, const floating* w3,
                          floating pad_value) noexcept nogil:
    # Three taps of one row at an edge column, through the width table.
    cdef floating s = 0
    cdef Py_ssize_t kw, iw
    for kw in range(3):
        iw = idx_w[kw * OW + ow]
        s = s + w3[kw] * (src[iw] if iw >= 0 else pad_value)
    return s


cdef inline void edges3x3(floating* acc, const floating* a, const floating* b,
                          const floating* c, const Py_ssize_t* idx_w, const floating* w9,
                          Py_ssize_t o0, Py_ssize_t o1, Py_ssize_t OW, floating pad_value,
                          bint first, floating bias) noexcept nogil:
    # The nine taps at edge columns [o0, o1): one short loop instead of nine.
    cdef Py_ssize_t ow
    cdef floating s
    for ow in range(o0, o1):
        s = (tap3(a, idx_w, ow, OW, w9, pad_value)
             + tap3(b, idx_w, ow, OW, w9 + 3, pad_value)
             + tap3(c, idx_w, ow, OW, w9 + 6, pad_value))
        acc[ow] = (bias if first else acc[ow]) + s


cdef inline void row3(floating* acc, const floating* a, const floating* w3,
                      Py_ssize_t L, Py_ssize_t R, Py_ssize_t base, Py_ssize_t sw,
                      Py_ssize_t dw) noexcept nogil:
    # Three taps of one input row over the common interior, in one pass.
    cdef Py_ssize_t ow, i
    cdef floating w0 = w3[0], w1 = w3[1], w2 = w3[2]
    if sw == 1 and dw == 1:
        for ow in range(L, R):
            i = base + ow
            acc[ow] += w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
    else:
        for ow in range(L, R):
            i = base + ow * sw
            acc[ow] += w0 * a[i] + w1 * a[i + dw] + w2 * a[i + 2 * dw]


cdef inline void rows3x3(floating* acc, const floating* a, const floating* b,
                         const floating* c, const floating* w9, Py_ssize_t L,
                         Py_ssize_t R, Py_ssize_t base, Py_ssize_t sw, Py_ssize_t dw,
                         bint first, floating bias) noexcept nogil:
    # Nine taps from three input rows over the common interior, one write per output.
    # ``first``: the row holds nothing yet, so start from the bias instead of acc.
    cdef Py_ssize_t ow, i
    cdef floating w0 = w9[0], w1 = w9[1], w2 = w9[2]
    cdef floating w3 = w9[3], w4 = w9[4], w5 = w9[5]
    cdef floating w6 = w9[6], w7 = w9[7], w8 = w9[8]
    cdef floating s0, s1, s2
    if sw == 1 and dw == 1:
        if first:
            for ow in range(L, R):
                i = base + ow
                s0 = w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
                s1 = w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2]
                s2 = w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]
                acc[ow] = bias + (s0 + s1 + s2)
        else:
            for ow in range(L, R):
                i = base + ow
                s0 = w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
                s1 = w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2]
                s2 = w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]
                acc[ow] = acc[ow] + (s0 + s1 + s2)
    elif sw == 2 and dw == 1:
        if first:
            for ow in range(L, R):
                i = base + 2 * ow
                s0 = w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
                s1 = w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2]
                s2 = w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]
                acc[ow] = bias + (s0 + s1 + s2)
        else:
            for ow in range(L, R):
                i = base + 2 * ow
                s0 = w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
                s1 = w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2]
                s2 = w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]
                acc[ow] = acc[ow] + (s0 + s1 + s2)
    else:
        for ow in range(L, R):
            i = base + ow * sw
            s0 = w0 * a[i] + w1 * a[i + dw] + w2 * a[i + 2 * dw]
            s1 = w3 * b[i] + w4 * b[i + dw] + w5 * b[i + 2 * dw]
            s2 = w6 * c[i] + w7 * c[i + dw] + w8 * c[i + 2 * dw]
            if first:
                acc[ow] = bias + (s0 + s1 + s2)
            else:
                acc[ow] = acc[ow] + (s0 + s1 + s2)


cdef inline void rows3x3_pair(floating* acc0, floating* acc1, const floating* a,
                              const floating* b, const floating* c, const floating* d,
                              const floating* w9, Py_ssize_t L, Py_ssize_t R,
                              Py_ssize_t base, bint first, floating bias) noexcept nogil:
    # Two consecutive output rows at stride 1, dilation 1: input rows (a, b, c) and
    # (b, c, d). Four input rows feed two outputs, so each loaded vector is used
    # for up to six multiply-adds; the per-row overhead is halved too.
    cdef Py_ssize_t ow, i
    cdef floating w0 = w9[0], w1 = w9[1], w2 = w9[2]
    cdef floating w3 = w9[3], w4 = w9[4], w5 = w9[5]
    cdef floating w6 = w9[6], w7 = w9[7], w8 = w9[8]
    cdef floating s0, s1
    # Two copies of the loop (first pass or not): a branch inside would stop the
    # compiler from vectorising it.
    if first:
        for ow in range(L, R):
            i = base + ow
            s0 = ((w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2])
                  + (w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2])
                  + (w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]))
            s1 = ((w0 * b[i] + w1 * b[i + 1] + w2 * b[i + 2])
                  + (w3 * c[i] + w4 * c[i + 1] + w5 * c[i + 2])
                  + (w6 * d[i] + w7 * d[i + 1] + w8 * d[i + 2]))
            acc0[ow] = bias + s0
            acc1[ow] = bias + s1
    else:
        for ow in range(L, R):
            i = base + ow
            s0 = ((w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2])
                  + (w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2])
                  + (w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]))
            s1 = ((w0 * b[i] + w1 * b[i + 1] + w2 * b[i + 2])
                  + (w3 * c[i] + w4 * c[i + 1] + w5 * c[i + 2])
                  + (w6 * d[i] + w7 * d[i + 1] + w8 * d[i + 2]))
            acc0[ow] = acc0[ow] + s0
            acc1[ow] = acc1[ow] + s1


cdef inline void fill(floating* acc, Py_ssize_t o0, Py_ssize_t o1,
                      floating v) noexcept nogil:
    cdef Py_ssize_t ow
    for ow in range(o0, o1):
        acc[ow] = v


cdef inline void slice_row(floating* acc, const floating* xc, Py_ssize_t id_,
                           const floating* wd, Py_ssize_t oh, bint first, floating bias,
                           const Py_ssize_t* idx_h, const Py_ssize_t* idx_w,
                           const Py_ssize_t* span, Py_ssize_t L, Py_ssize_t R,
                           Py_ssize_t W, Py_ssize_t HW, Py_ssize_t OH, Py_ssize_t OW,
                           Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sw, Py_ssize_t dw,
                           floating pad_value) noexcept nogil:
    # One (input channel, kernel depth) slice of one output row: KH x KW taps.
    # id_ is the input depth index (-1: a plane of padding); wd the slice's weights.
    # ``first``: acc holds nothing yet and starts from the bias.
    cdef Py_ssize_t base = span[2]
    cdef bint fused3 = KW == 3 and L < R
    cdef Py_ssize_t kh, kw, ow, ih, ih0, ih1, ih2
    cdef const floating* xd
    cdef const floating* wk
    cdef const floating* src
    cdef floating v
    if fused3 and KH == 3 and id_ >= 0:
        ih0 = idx_h[oh]
        ih1 = idx_h[OH + oh]
        ih2 = idx_h[2 * OH + oh]
        if ih0 >= 0 and ih1 >= 0 and ih2 >= 0:
            xd = xc + id_ * HW
            edges3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, idx_w,
                     wd, 0, L, OW, pad_value, first, bias)
            rows3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, wd,
                    L, R, base, sw, dw, first, bias)
            edges3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, idx_w,
                     wd, R, OW, OW, pad_value, first, bias)
            return
    if first:
        fill(acc, 0, OW, bias)
    for kh in range(KH):
        ih = idx_h[kh * OH + oh]
        wk = wd + kh * KW
        if id_ < 0 or ih < 0:
            # A whole row of padding: every tap reads the pad value.
            if pad_value != 0:
                for kw in range(KW):
                    v = wk[kw] * pad_value
                    for ow in range(OW):
                        acc[ow] += v
            continue
        src = xc + id_ * HW + ih * W
        if fused3:
            row3(acc, src, wk, L, R, base, sw, dw)
            edges3(acc, src, idx_w, wk, L, R, OW, pad_value)
        else:
            for kw in range(KW):
                tap_row(acc, src, idx_w + kw * OW, wk[kw], span + 3 * kw,
                        sw, OW, pad_value)


cdef inline void relu_row(floating* acc, Py_ssize_t OW) noexcept nogil:
    cdef Py_ssize_t ow
    cdef floating v
    for ow in range(OW):
        v = acc[ow]
        acc[ow] = 0 if v < 0 else v  # NaN stays NaN, as in torch.relu


cdef void conv_rows(const floating* xg, Py_ssize_t cin_g, Py_ssize_t plane,
                    const floating* w, floating bias, floating* dst,
                    Py_ssize_t r0, Py_ssize_t r1,
                    const Py_ssize_t* idx_d, const Py_ssize_t* idx_h,
                    const Py_ssize_t* idx_w, const Py_ssize_t* span,
                    Py_ssize_t L, Py_ssize_t R, Py_ssize_t W, Py_ssize_t HW,
                    Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
                    Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW,
                    Py_ssize_t sw, Py_ssize_t dw, floating pad_value,
                    bint relu) noexcept nogil:
    # Output rows r0 <= r < r1 (r = od*OH + oh) of one output channel into dst (OW
    # values per row, consecutive). xg: the group's cin_g input planes of `plane`
    # values; w: this channel's cin_g * KD*KH*KW weights. L < R is the common interior
    # of all width taps (R <= L when there is none). 3x3 kernels at stride 1 and
    # dilation 1 take two output rows at a time where their input rows overlap.
    cdef Py_ssize_t K = KD * KH * KW
    cdef Py_ssize_t base = span[2]
    cdef bint pairs = KH == 3 and KW == 3 and sw == 1 and dw == 1 and L < R
    cdef Py_ssize_t r, od, oh, ci, kd, id_, ih0, ih1, ih2, jh0, jh1, jh2
    cdef floating* acc
    cdef const floating* xc
    cdef const floating* xd
    cdef const floating* wd
    cdef bint first
    r = r0
    while r < r1:
        od = r // OH
        oh = r - od * OH
        acc = dst + (r - r0) * OW
        first = True
        if pairs and r + 1 < r1 and oh + 1 < OH:
            for ci in range(cin_g):
                xc = xg + ci * plane
                for kd in range(KD):
                    id_ = idx_d[kd * OD + od]
                    wd = w + ci * K + kd * 9
                    ih0 = idx_h[oh]
                    ih1 = idx_h[OH + oh]
                    ih2 = idx_h[2 * OH + oh]
                    jh0 = idx_h[oh + 1]
                    jh1 = idx_h[OH + oh + 1]
                    jh2 = idx_h[2 * OH + oh + 1]
                    if (id_ >= 0 and ih0 >= 0 and ih1 >= 0 and ih2 >= 0 and jh2 >= 0
                            and jh0 == ih1 and jh1 == ih2):
                        xd = xc + id_ * HW
                        edges3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, idx_w,
                                 wd, 0, L, OW, pad_value, first, bias)
                        edges3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, idx_w,
                                 wd, R, OW, OW, pad_value, first, bias)
                        edges3x3(acc + OW, xd + jh0 * W, xd + jh1 * W, xd + jh2 * W,
                                 idx_w, wd, 0, L, OW, pad_value, first, bias)
                        edges3x3(acc + OW, xd + jh0 * W, xd + jh1 * W, xd + jh2 * W,
                                 idx_w, wd, R, OW, OW, pad_value, first, bias)
                        rows3x3_pair(acc, acc + OW, xd + ih0 * W, xd + ih1 * W,
                                     xd + ih2 * W, xd + jh2 * W, wd, L, R, base,
                                     first, bias)
                    else:
                        slice_row(acc, xc, id_, wd, oh, first, bias, idx_h, idx_w,
                                  span, L, R, W, HW, OH, OW, KH, KW, sw, dw, pad_value)
                        slice_row(acc + OW, xc, id_, wd, oh + 1, first, bias, idx_h,
                                  idx_w, span, L, R, W, HW, OH, OW, KH, KW, sw, dw,
                                  pad_value)
                    first = False
            if relu:
                relu_row(acc, OW)
                relu_row(acc + OW, OW)
            r += 2
        else:
            for ci in range(cin_g):
                xc = xg + ci * plane
                for kd in range(KD):
                    slice_row(acc, xc, idx_d[kd * OD + od], w + ci * K + kd * KH * KW,
                              oh, first, bias, idx_h, idx_w, span, L, R, W, HW, OH, OW,
                              KH, KW, sw, dw, pad_value)
                    first = False
            if relu:
                relu_row(acc, OW)
            r += 1




# Order of the integers in the ``dims`` argument (see _Plan.args in ops/depthwise.py).
cdef enum:
    D_D = 0
    D_H
    D_W
    D_OD
    D_OH
    D_OW
    D_KD
    D_KH
    D_KW
    D_SW
    D_WP
    D_MQ
    D_QS
    D_LO
    D_BATCH
    D_CACHED
    N_DIMS


cdef inline void group_rows(floating* dst, Py_ssize_t cstride, floating* q,
                            Py_ssize_t* ro, const floating* xg, const floating* w,
                            Py_ssize_t wstride, const floating* bias, Py_ssize_t cout_g,
                            Py_ssize_t r0, Py_ssize_t r1, floating pad, bint relu,
                            const floating* pf, Py_ssize_t npf,
                            const pyconv_dw_geom* g) noexcept nogil:
    # Output rows r0 <= r < r1 (r = od*OH + oh) of one group's cout_g channels; dst
    # is row r0 of the first channel; pf, npf: the next unit's input to prefetch.
    if floating is float:
        pyconv_dw_rows_f(dst, cstride, q, ro, xg, w, wstride, bias, cout_g, r0, r1, pad,
                         relu, pf, npf, g)
    else:
        pyconv_dw_rows_d(dst, cstride, q, ro, xg, w, wstride, bias, cout_g, r0, r1, pad,
                         relu, pf, npf, g)


cdef int make_geom(pyconv_dw_geom* g, const Py_ssize_t[::1] idx_d,
                   const Py_ssize_t[::1] idx_h, const Py_ssize_t[::1] jmap,
                   const Py_ssize_t[::1] qoff, const Py_ssize_t[::1] phase,
                   const Py_ssize_t[::1] dims, Py_ssize_t cin_g, Py_ssize_t plane,
                   Py_ssize_t scratch, Py_ssize_t iscratch) except -1:
    # Fills g from the tables and dims; checks the scratch sizes against them.
    if dims.shape[0] != N_DIMS or phase.shape[0] != 3 * dims[D_SW]:
        raise ValueError("depthwise kernel: malformed geometry")
    g.idx_d = &idx_d[0]
    g.idx_h = &idx_h[0]
    g.jmap = &jmap[0]
    g.qoff = &qoff[0]
    g.phase = &phase[0]
    g.D = dims[D_D]
    g.H = dims[D_H]
    g.W = dims[D_W]
    g.HW = g.H * g.W
    g.plane = plane
    g.OD = dims[D_OD]
    g.OH = dims[D_OH]
    g.OW = dims[D_OW]
    g.KD = dims[D_KD]
    g.KH = dims[D_KH]
    g.KW = dims[D_KW]
    g.sw = dims[D_SW]
    g.Wp = dims[D_WP]
    g.Mq = dims[D_MQ]
    g.QS = dims[D_QS]
    g.lo = dims[D_LO]
    g.cin_g = cin_g
    g.batch = dims[D_BATCH]
    g.cached = dims[D_CACHED] != 0
    cdef Py_ssize_t slots = cin_g * g.D * g.H
    cdef Py_ssize_t nrows = cin_g * g.KD * g.KH
    if g.cached:
        if scratch < (slots + 1) * g.QS or iscratch < nrows:
            raise ValueError("depthwise kernel: workspace too small")
    elif scratch < g.batch * g.QS or iscratch < nrows or g.batch < 1:
        raise ValueError("depthwise kernel: workspace too small")
    return 0


cdef int check_grouped(str name, const floating[:, :, ::1] x,
                       const floating[:, ::1] weight, const floating[::1] bias,
                       floating[:, :, ::1] out, Py_ssize_t groups, bint has_bias,
                       const pyconv_dw_geom* g) except -1:
    # The arrays' shapes against the geometry: the kernels index them unchecked.
    if (groups < 1 or x.shape[1] % groups or out.shape[1] % groups
            or x.shape[0] != out.shape[0] or x.shape[2] != g.D * g.HW
            or out.shape[2] != g.OD * g.OH * g.OW or weight.shape[0] != out.shape[1]
            or weight.shape[1] != x.shape[1] // groups * g.KD * g.KH * g.KW
            or (has_bias and bias.shape[0] < out.shape[1])):
        raise ValueError(f"{name}: x ({x.shape[0]}, {x.shape[1]}, {x.shape[2]}), weight "
                         f"({weight.shape[0]}, {weight.shape[1]}), out ({out.shape[0]}, "
                         f"{out.shape[1]}, {out.shape[2]}) or groups {groups} do not "
                         "match the geometry")
    return 0


def grouped_direct(const floating[:, :, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, floating[:, :, ::1] out,
                   const Py_ssize_t[::1] idx_d, const Py_ssize_t[::1] idx_h,
                   const Py_ssize_t[::1] jmap, const Py_ssize_t[::1] qoff,
                   const Py_ssize_t[::1] phase, const Py_ssize_t[::1] dims,
                   Py_ssize_t groups, floating pad_value, bint has_bias, bint relu,
                   Py_ssize_t rows_per_tile, floating[:, ::1] work,
                   Py_ssize_t[:, ::1] iwork, int n_threads):
    """out[n, co] = bias[co] + sum_{ci in group(co), taps} weight[co, (ci, tap)] * x[...].

    x: (N, C_in, D*H*W); weight: (C_out, C_in/groups * KD*KH*KW); out: (N, C_out,
    OD*OH*OW). Units are (image, group, tile of rows_per_tile output rows). ``work``
    and ``iwork`` have one row of padded-row scratch per thread (sizes: see
    ``_Plan.scratch`` in pyconv/ops/depthwise.py).
    """
    cdef pyconv_dw_geom g
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t P = out.shape[2]
    cdef Py_ssize_t cin_g = x.shape[1] // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t rows, n_tiles, n_units, u, n, gi, t, r0, r1
    cdef floating* q = NULL
    cdef const floating* pf = NULL
    cdef Py_ssize_t* ro = NULL
    make_geom(&g, idx_d, idx_h, jmap, qoff, phase, dims, cin_g, x.shape[2],
              work.shape[1], iwork.shape[1])
    check_grouped("grouped_direct", x, weight, bias, out, groups, has_bias, &g)
    rows = g.OD * g.OH
    if N == 0 or C_out == 0 or P == 0 or rows == 0:
        return
    if work.shape[0] < n_threads or iwork.shape[0] < n_threads:
        raise ValueError("grouped_direct: workspace too small")
    n_tiles = (rows + rows_per_tile - 1) // rows_per_tile
    n_units = N * groups * n_tiles
    with nogil, parallel(num_threads=n_threads):
        q = &work[omp_get_thread_num(), 0]
        ro = &iwork[omp_get_thread_num(), 0]
        for u in prange(n_units, schedule='static'):
            t = u % n_tiles
            gi = (u // n_tiles) % groups
            n = u // (n_tiles * groups)
            r0 = t * rows_per_tile
            r1 = r0 + rows_per_tile
            if r1 > rows:
                r1 = rows
            # The next unit reads the next group's planes (contiguous in x) unless it
            # is another tile of this group.
            pf = &x[n, gi * cin_g, 0] + cin_g * g.plane
            if t + 1 < n_tiles or u + 1 == n_units:
                pf = NULL
            group_rows(&out[n, gi * cout_g, r0 * g.OW], P, q, ro, &x[n, gi * cin_g, 0],
                       &weight[gi * cout_g, 0], weight.shape[1],
                       &bias[gi * cout_g] if has_bias else NULL, cout_g, r0, r1,
                       pad_value, relu, pf, cin_g * g.plane, &g)


#: Whether this build stores the flat kernel's blocks straight into the output rows,
#: a vector that spans two rows as masked stores (the AVX-512 build; the others, with
#: no such stores, take the output scratch).
FLAT_MASKED_STORES = bool(PYCONV_DW_VWF == 16)


def flat_workspace(Py_ssize_t cin_g, Py_ssize_t cout_g, Py_ssize_t band, Py_ssize_t KH,
                   Py_ssize_t dh, Py_ssize_t Wp, Py_ssize_t itemsize, bint stream=False,
                   bint direct=False):
    """``(values, ints)``: scratch per thread of ``grouped_flat`` for bands of ``band``
    output rows, in the compute dtype (``itemsize`` bytes) and in intp; ``stream``:
    with two output scratches (one is copied out while the other is computed);
    ``direct``: with none (the blocks write the output)."""
    cdef Py_ssize_t vw = PYCONV_DW_VWF if itemsize == 4 else PYCONV_DW_VWD
    cdef Py_ssize_t scratches = 0 if direct else (2 if stream else 1)
    return (pyconv_dw_flat_q(cin_g, band, KH, dh, Wp, vw)
            + scratches * pyconv_dw_flat_so(cout_g, band, Wp, vw), cin_g * KH)


cdef inline void flat_band(floating* dst, Py_ssize_t cstride, floating* q, floating* so,
                           Py_ssize_t* ro, const floating* xg, const floating* w,
                           Py_ssize_t wstride, const floating* bias, Py_ssize_t cout_g,
                           Py_ssize_t r0, Py_ssize_t r1, floating pad, bint relu,
                           const Py_ssize_t* hmap, Py_ssize_t dh, pyconv_dw_fpend* pend,
                           const floating* pf, Py_ssize_t npf, Py_ssize_t pfstride,
                           const pyconv_dw_geom* g) noexcept nogil:
    # Output rows [r0, r1) of one group on the flat kernel of the compute type.
    if floating is float:
        pyconv_dw_flat_f(dst, cstride, q, so, ro, xg, w, wstride, bias, cout_g, r0, r1,
                         pad, relu, hmap, dh, pend, pf, npf, pfstride, g)
    else:
        pyconv_dw_flat_d(dst, cstride, q, so, ro, xg, w, wstride, bias, cout_g, r0, r1,
                         pad, relu, hmap, dh, pend, pf, npf, pfstride, g)


cdef inline void flat_finish(const floating* typed, pyconv_dw_fpend* pend) noexcept nogil:
    # Ends a thread's pending copy (typed: any pointer of the compute type).
    if floating is float:
        pyconv_dw_fpend_step_f(pend, -1)
    else:
        pyconv_dw_fpend_step_d(pend, -1)


cdef inline void band_rows(const Py_ssize_t* hmap, Py_ssize_t r0, Py_ssize_t band,
                           Py_ssize_t OH, Py_ssize_t KH, Py_ssize_t dh, Py_ssize_t* lo,
                           Py_ssize_t* hi) noexcept nogil:
    # The lowest and highest input row read by output rows [r0, r0 + band) (lo > hi:
    # none).
    cdef Py_ssize_t p, ih
    lo[0] = 1 << 62
    hi[0] = -1
    for p in range(r0, min(r0 + band, OH) + (KH - 1) * dh):
        ih = hmap[p]
        if ih >= 0:
            lo[0] = min(lo[0], ih)
            hi[0] = max(hi[0], ih)


def grouped_flat(const floating[:, :, ::1] x, const floating[:, ::1] weight,
                 const floating[::1] bias, floating[:, :, ::1] out,
                 const Py_ssize_t[::1] idx_d, const Py_ssize_t[::1] idx_h,
                 const Py_ssize_t[::1] jmap, const Py_ssize_t[::1] qoff,
                 const Py_ssize_t[::1] phase, const Py_ssize_t[::1] dims,
                 const Py_ssize_t[::1] hmap, Py_ssize_t dh, Py_ssize_t groups,
                 floating pad_value, bint has_bias, bint relu, Py_ssize_t band,
                 bint stream, floating[:, ::1] work, Py_ssize_t[:, ::1] iwork,
                 int n_threads, bint direct=False):
    """``grouped_direct`` for 2-D layers at stride 1 on the flat kernel
    (``pyconv_dw_flat``): units are (image, group, band of ``band`` output rows).

    ``hmap``: the input row of each of the ``OH + (KH-1)*dh`` padded rows (-1:
    padding); ``dh``: the height dilation. ``direct``: the register blocks store
    into the output rows (no scratch); else ``stream``: write the output with
    non-temporal stores, each unit's while the thread computes the next one, or
    neither: copy each band out of the scratch. ``work``/``iwork``: one row per
    thread of at least ``flat_workspace(..., stream, direct)`` values.
    """
    cdef pyconv_dw_geom g
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t P = out.shape[2]
    cdef Py_ssize_t cin_g = x.shape[1] // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t vw = PYCONV_DW_VWF if floating is float else PYCONV_DW_VWD
    cdef Py_ssize_t n_bands, n_units, u, n, gi, t, r0, r1, nq, nso, un, lo, hi
    cdef floating* q = NULL
    cdef floating* so = NULL
    cdef pyconv_dw_fpend* pend = NULL
    cdef const floating* pf = NULL
    cdef Py_ssize_t* ro = NULL
    make_geom(&g, idx_d, idx_h, jmap, qoff, phase, dims, cin_g, x.shape[2],
              work.shape[1], iwork.shape[1])
    if N == 0 or C_out == 0 or P == 0 or g.OH == 0:
        return
    if (g.D != 1 or g.KD != 1 or g.OD != 1 or g.sw != 1 or band < 1 or dh < 1
            or hmap.shape[0] < g.OH + (g.KH - 1) * dh):
        raise ValueError("grouped_flat: not a 2-D stride-1 geometry")
    check_grouped("grouped_flat", x, weight, bias, out, groups, has_bias, &g)
    nq = pyconv_dw_flat_q(cin_g, band, g.KH, dh, g.Wp, vw)
    nso = pyconv_dw_flat_so(cout_g, band, g.Wp, vw)
    if direct and stream:
        raise ValueError("grouped_flat: direct and stream exclude each other")
    if (work.shape[0] < n_threads or iwork.shape[0] < n_threads
            or work.shape[1] < nq + (0 if direct else 2 if stream else 1) * nso
            or iwork.shape[1] < cin_g * g.KH):
        raise ValueError("grouped_flat: workspace too small")
    # per thread: its pending copy (zeroed: nothing pending) and output scratch
    cdef pyconv_dw_fpend* pend_all = NULL
    if stream:
        pend_all = <pyconv_dw_fpend*>calloc(n_threads, sizeof(pyconv_dw_fpend))
        if pend_all == NULL:
            raise MemoryError()
    n_bands = (g.OH + band - 1) // band
    n_units = N * groups * n_bands
    try:
        with nogil, parallel(num_threads=n_threads):
            q = &work[omp_get_thread_num(), 0]
            ro = &iwork[omp_get_thread_num(), 0]
            pend = &pend_all[omp_get_thread_num()] if stream else NULL
            for u in prange(n_units, schedule='static'):
                t = u % n_bands
                gi = (u // n_bands) % groups
                n = u // (n_bands * groups)
                r0 = t * band
                r1 = min(r0 + band, g.OH)
                # the input rows of the next unit, to prefetch
                pf = NULL
                lo = 0       # (assigned here: private to each thread)
                hi = -1
                un = u + 1
                if un < n_units:
                    band_rows(&hmap[0], (un % n_bands) * band, band, g.OH, g.KH, dh, &lo,
                              &hi)
                    if lo <= hi:
                        pf = &x[un // (n_bands * groups),
                                ((un // n_bands) % groups) * cin_g, lo * g.W]
                # streaming: the output scratch that is not the pending copy's source
                so = NULL if direct else q + nq
                if stream and pend.s == <void*>so:
                    so = so + nso
                flat_band(&out[n, gi * cout_g, 0], P, q, so, ro, &x[n, gi * cin_g, 0],
                          &weight[gi * cout_g, 0], weight.shape[1],
                          &bias[gi * cout_g] if has_bias else NULL, cout_g, r0, r1,
                          pad_value, relu, &hmap[0], dh, pend, pf, (hi - lo + 1) * g.W,
                          g.plane, &g)
            # each thread ends its last copy and fences its stores
            if stream:
                flat_finish(q, pend)
                pyconv_dw_sfence()
    finally:
        free(pend_all)


cdef const floating* check_packed(str name, const floating[::1] pw_packed,
                                  Py_ssize_t k_block, floating[:, ::1] panel_work,
                                  Py_ssize_t C_out, Py_ssize_t C_mid,
                                  Py_ssize_t n_threads) except? NULL:
    # The packed pointwise weight (NULL: BLAS), once its sizes are checked.
    cdef Py_ssize_t nr_full = PG_NR_FLOAT if floating is float else PG_NR_DOUBLE
    if pw_packed is None:
        return NULL
    if (k_block < 1 or panel_work is None or panel_work.shape[0] < n_threads
            or panel_work.shape[1] < min(k_block, C_mid) * nr_full
            or pw_packed.shape[0] < (C_out + PG_MR - 1) // PG_MR * PG_MR * C_mid):
        raise ValueError(f"{name}: packed pointwise weight, k_block or panel workspace "
                         "of the wrong size")
    return &pw_packed[0] if pw_packed.shape[0] > 0 else NULL


cdef inline void pointwise_band(const floating* pw, const floating* packed,
                                Py_ssize_t k_block, const floating* buf, floating* c,
                                Py_ssize_t C_out, Py_ssize_t cols, Py_ssize_t C_mid,
                                Py_ssize_t P, floating* panel) noexcept nogil:
    # c[C_out, cols] (rows P apart) = pw[C_out, C_mid] @ buf[C_mid, cols]. On the
    # packed tiles (packed: pw as conv's pack_panels lays it out, in blocks of k_block
    # channels) where given; they serve this shape (few rows, many columns) better
    # than BLAS, and each output is one sum in channel order whatever the band.
    cdef Py_ssize_t m_panels = (C_out + PG_MR - 1) // PG_MR
    cdef Py_ssize_t k0 = 0, kl
    if packed == NULL:
        gemm_rm(pw, buf, c, C_out, cols, C_mid, C_mid, cols, P, 0)
        return
    while k0 < C_mid:
        kl = min(k_block, C_mid - k0)
        packed_gemm(packed + k0 * m_panels * PG_MR, buf + k0 * cols, cols, c, P, C_out,
                    cols, kl, k0 > 0, panel)
        k0 += kl


def separable(const floating[:, :, ::1] x, const floating[:, ::1] dw_weight,
              const floating[::1] dw_bias, const floating[:, ::1] pw_weight,
              const floating[::1] pw_bias, floating[:, :, ::1] out,
              const Py_ssize_t[::1] idx_d, const Py_ssize_t[::1] idx_h,
              const Py_ssize_t[::1] jmap, const Py_ssize_t[::1] qoff,
              const Py_ssize_t[::1] phase, const Py_ssize_t[::1] dims,
              Py_ssize_t multiplier, floating pad_value, bint has_dw_bias,
              bint has_pw_bias, bint relu, Py_ssize_t rows_per_band,
              floating[:, ::1] work, Py_ssize_t[:, ::1] iwork, int n_threads,
              const floating[::1] pw_packed=None, Py_ssize_t k_block=0,
              floating[:, ::1] panel_work=None):
    """Depthwise (multiplier m) then pointwise, fused per band of output rows.

    x: (N, C_in, D*H*W); dw_weight: (m*C_in, KD*KH*KW); pw_weight: (C_out, m*C_in);
    out: (N, C_out, OD*OH*OW). ``work`` has one row per thread: the band
    (``m*C_in * rows_per_band * OW`` values) then the padded-row scratch; ``iwork``
    one row per thread. The pointwise step runs on the packed tiles when
    ``pw_packed`` is given (see ``pointwise_band``), else on BLAS, which the caller
    pins to one thread.
    """
    cdef pyconv_dw_geom g
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C_in = x.shape[1]
    cdef Py_ssize_t C_mid = dw_weight.shape[0]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t P = out.shape[2]
    cdef Py_ssize_t rows, n_bands, n_units, band_size
    cdef Py_ssize_t u, n, t, r0, r1, cols, c
    cdef floating* buf = NULL
    cdef floating* q = NULL
    cdef Py_ssize_t* ro = NULL
    cdef floating* c_ptr
    cdef const floating* pw_bias_ptr = &pw_bias[0] if has_pw_bias else NULL
    band_size = C_mid * rows_per_band * (dims[D_OW] if dims.shape[0] == N_DIMS else 0)
    make_geom(&g, idx_d, idx_h, jmap, qoff, phase, dims, 1, x.shape[2],
              work.shape[1] - band_size, iwork.shape[1])
    rows = g.OD * g.OH
    if N == 0 or P == 0 or rows == 0:
        return
    if work.shape[0] < n_threads or iwork.shape[0] < n_threads:
        raise ValueError("separable: workspace too small")
    cdef const floating* packed = check_packed("separable", pw_packed, k_block,
                                               panel_work, C_out, C_mid, n_threads)
    cdef floating* panel = NULL
    n_bands = (rows + rows_per_band - 1) // rows_per_band
    n_units = N * n_bands
    with nogil, parallel(num_threads=n_threads):
        buf = &work[omp_get_thread_num(), 0]
        q = buf + band_size
        ro = &iwork[omp_get_thread_num(), 0]
        panel = &panel_work[omp_get_thread_num(), 0] if packed != NULL else NULL
        for u in prange(n_units, schedule='static'):
            t = u % n_bands
            n = u // n_bands
            r0 = t * rows_per_band
            r1 = r0 + rows_per_band
            if r1 > rows:
                r1 = rows
            cols = (r1 - r0) * g.OW
            # Channel by channel, so that each input row is padded once per band.
            for c in range(C_in):
                group_rows(buf + c * multiplier * cols, cols, q, ro, &x[n, c, 0],
                           &dw_weight[c * multiplier, 0], dw_weight.shape[1],
                           &dw_bias[c * multiplier] if has_dw_bias else NULL,
                           multiplier, r0, r1, pad_value, False, NULL, 0, &g)
            c_ptr = &out[n, 0, r0 * g.OW]
            pointwise_band(&pw_weight[0, 0], packed, k_block, buf, c_ptr, C_out, cols,
                           C_mid, P, panel)
            if has_pw_bias or relu:
                bias_relu_tile(c_ptr, C_out, cols, P, pw_bias_ptr, has_pw_bias, relu)


def rows_direct(const floating[:, :, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, floating[:, :, ::1] out,
                   const Py_ssize_t[::1] idx_d, const Py_ssize_t[::1] idx_h,
                   const Py_ssize_t[::1] idx_w, const Py_ssize_t[::1] span,
                   Py_ssize_t L, Py_ssize_t R, Py_ssize_t H, Py_ssize_t W,
                   Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
                   Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW,
                   Py_ssize_t sw, Py_ssize_t dw, Py_ssize_t groups,
                   floating pad_value, bint has_bias, bint relu,
                   Py_ssize_t rows_per_tile, int n_threads):
    """``grouped_direct`` on the row kernel (``conv_rows``), for one input and one
    output channel per group. Units are (image, output channel, tile of
    rows_per_tile output rows); no scratch.
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t plane = x.shape[2]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t cin_g = x.shape[1] // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t rows = OD * OH
    cdef Py_ssize_t n_tiles = (rows + rows_per_tile - 1) // rows_per_tile
    cdef Py_ssize_t n_units = N * C_out * n_tiles
    cdef Py_ssize_t u, n, co, t, r0, r1
    if n_units == 0 or out.shape[2] == 0:
        return
    for u in prange(n_units, nogil=True, schedule='static', num_threads=n_threads):
        t = u % n_tiles
        co = (u // n_tiles) % C_out
        n = u // (n_tiles * C_out)
        r0 = t * rows_per_tile
        r1 = r0 + rows_per_tile
        if r1 > rows:
            r1 = rows
        conv_rows(&x[n, (co // cout_g) * cin_g, 0], cin_g, plane, &weight[co, 0],
                  bias[co] if has_bias else 0, &out[n, co, r0 * OW], r0, r1,
                  &idx_d[0], &idx_h[0], &idx_w[0], &span[0], L, R, W, H * W,
                  OD, OH, OW, KD, KH, KW, sw, dw, pad_value, relu)


def separable_rows(const floating[:, :, ::1] x, const floating[:, ::1] dw_weight,
              const floating[::1] dw_bias, const floating[:, ::1] pw_weight,
              const floating[::1] pw_bias, floating[:, :, ::1] out,
              const Py_ssize_t[::1] idx_d, const Py_ssize_t[::1] idx_h,
              const Py_ssize_t[::1] idx_w, const Py_ssize_t[::1] span,
              Py_ssize_t L, Py_ssize_t R, Py_ssize_t H, Py_ssize_t W,
              Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
              Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW,
              Py_ssize_t sw, Py_ssize_t dw, Py_ssize_t multiplier,
              floating pad_value, bint has_dw_bias, bint has_pw_bias, bint relu,
              Py_ssize_t rows_per_band, floating[:, ::1] work, int n_threads,
              const floating[::1] pw_packed=None, Py_ssize_t k_block=0,
              floating[:, ::1] panel_work=None):
    """``separable`` on the row kernel (``conv_rows``), for multiplier 1.

    ``work`` has one row of at least ``C_in * rows_per_band * OW`` values per thread.
    The pointwise step as in ``separable``.
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t plane = x.shape[2]
    cdef Py_ssize_t C_mid = dw_weight.shape[0]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t P = out.shape[2]
    cdef Py_ssize_t rows = OD * OH
    cdef Py_ssize_t n_bands = (rows + rows_per_band - 1) // rows_per_band
    cdef Py_ssize_t n_units = N * n_bands
    cdef Py_ssize_t u, n, t, r0, r1, cols, c2
    cdef floating* buf = NULL
    cdef floating* c_ptr
    cdef const floating* pw_bias_ptr = &pw_bias[0] if has_pw_bias else NULL
    if n_units == 0 or P == 0:
        return
    if work.shape[0] < n_threads or work.shape[1] < C_mid * rows_per_band * OW:
        raise ValueError("separable_rows: workspace too small")
    cdef const floating* packed = check_packed("separable_rows", pw_packed, k_block,
                                               panel_work, C_out, C_mid, n_threads)
    cdef floating* panel = NULL
    with nogil, parallel(num_threads=n_threads):
        buf = &work[omp_get_thread_num(), 0]
        panel = &panel_work[omp_get_thread_num(), 0] if packed != NULL else NULL
        for u in prange(n_units, schedule='static'):
            t = u % n_bands
            n = u // n_bands
            r0 = t * rows_per_band
            r1 = r0 + rows_per_band
            if r1 > rows:
                r1 = rows
            cols = (r1 - r0) * OW
            for c2 in range(C_mid):
                conv_rows(&x[n, c2 // multiplier, 0], 1, plane, &dw_weight[c2, 0],
                          dw_bias[c2] if has_dw_bias else 0, buf + c2 * cols, r0, r1,
                          &idx_d[0], &idx_h[0], &idx_w[0], &span[0], L, R, W, H * W,
                          OD, OH, OW, KD, KH, KW, sw, dw, pad_value, False)
            c_ptr = &out[n, 0, r0 * OW]
            pointwise_band(&pw_weight[0, 0], packed, k_block, buf, c_ptr, C_out, cols,
                           C_mid, P, panel)
            if has_pw_bias or relu:
                bias_relu_tile(c_ptr, C_out, cols, P, pw_bias_ptr, has_pw_bias, relu)


def separable_plane(const floating[:, :, ::1] x, const floating[:, ::1] dw_weight,
                    const floating[::1] dw_bias, const floating[:, ::1] pw_weight,
                    const floating[::1] pw_bias, floating[:, :, ::1] out,
                    const Py_ssize_t[::1] rowidx, const Py_ssize_t[::1] colidx,
                    Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                    Py_ssize_t lo_w, Py_ssize_t stride, Py_ssize_t ksize,
                    floating pad_value, bint has_dw_bias, bint has_pw_bias, bint relu,
                    Py_ssize_t rows_per_band, floating[:, ::1] work,
                    Py_ssize_t[:, ::1] row_work, int n_threads,
                    const floating[::1] pw_packed=None, Py_ssize_t k_block=0,
                    floating[:, ::1] panel_work=None):
    """``separable`` with the depthwise step on the plane kernel (``plane_conv``'s
    geometry: K x K at stride 1 or 2, any multiplier), each band of output rows of
    one image computed channel by channel into the thread's band buffer.

    ``work`` has one row per thread: the band (``C_mid * rows_per_band * OW`` values),
    then ``plane_conv_workspace(rows_per_band, W, OW, False, itemsize, stride,
    ksize)`` values; ``row_work`` that call's pointers. The pointwise step as in
    ``separable``.
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C_in = x.shape[1]
    cdef Py_ssize_t C_mid = dw_weight.shape[0]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t P = out.shape[2]
    cdef Py_ssize_t n_bands, n_units, band_size, u, n, r0, nr, cols
    cdef floating* buf = NULL
    cdef floating* panel = NULL
    cdef floating* c_ptr
    cdef const floating* pw_bias_ptr = &pw_bias[0] if has_pw_bias else NULL
    cdef const floating* dw_bias_ptr = &dw_bias[0] if has_dw_bias else NULL
    if N == 0 or P == 0 or OH == 0 or OW == 0:
        return
    if rows_per_band < 1 or (stride != 1 and stride != 2) \
            or (ksize != 3 and ksize != 5 and ksize != 7):
        raise ValueError("separable_plane: rows_per_band, stride or ksize out of range")
    band_size = C_mid * rows_per_band * OW
    need = plane_conv_workspace(rows_per_band, W, OW, False, sizeof(floating), stride,
                                ksize)
    if work.shape[0] < n_threads or work.shape[1] < band_size + need[0] \
            or row_work.shape[0] < n_threads or row_work.shape[1] < need[1] \
            or sizeof(void*) != sizeof(Py_ssize_t) \
            or rowidx.shape[0] < stride * (OH - 1) + ksize \
            or colidx.shape[0] < stride * OW + ksize - 1 \
            or dw_weight.shape[1] != ksize * ksize or x.shape[2] != H * W \
            or P != OH * OW or C_mid % C_in or pw_weight.shape[1] != C_mid:
        raise ValueError("separable_plane: inconsistent shapes, tables or workspace")
    cdef const floating* packed = check_packed("separable_plane", pw_packed, k_block,
                                               panel_work, C_out, C_mid, n_threads)
    n_bands = (OH + rows_per_band - 1) // rows_per_band
    n_units = N * n_bands
    with nogil, parallel(num_threads=n_threads):
        buf = &work[omp_get_thread_num(), 0]
        panel = &panel_work[omp_get_thread_num(), 0] if packed != NULL else NULL
        for u in prange(n_units, schedule='static'):
            n = u // n_bands
            r0 = (u % n_bands) * rows_per_band
            nr = OH - r0
            if nr > rows_per_band:
                nr = rows_per_band
            cols = nr * OW
            # one band of every channel: the band is the whole "plane" of each unit
            plane_conv_units(&x[n, 0, 0], &dw_weight[0, 0], dw_bias_ptr, buf,
                             &rowidx[stride * r0], &colidx[0], C_in, C_mid, H, W, nr, OW,
                             lo_w, pad_value, False, nr, stride, ksize, False,
                             buf + band_size,
                             <const floating**>&row_work[omp_get_thread_num(), 0], 0,
                             C_mid, stride * r0)
            c_ptr = &out[n, 0, r0 * OW]
            pointwise_band(&pw_weight[0, 0], packed, k_block, buf, c_ptr, C_out, cols,
                           C_mid, P, panel)
            if has_pw_bias or relu:
                bias_relu_tile(c_ptr, C_out, cols, P, pw_bias_ptr, has_pw_bias, relu)


# -- plane kernel, 3x3, 5x5 or 7x7 at stride 1 or 2: one input channel per group ---------
# Units are (image, output channel, band of output rows), swept in strips one vector
# wide, down the band's rows (pyconv_dw_strip<K>s<stride>_*, one macro for every
# kernel size and stride): no scalar edge columns and no column tables in the hot
# loop. Strips whose taps stay inside the
# input row read it in place (rows through the row table, padding rows from a row of
# pad values); a strip at an edge reads a small padded copy of its columns made
# through the tables (any padding mode). Rows narrower than a vector take
# plane_conv_rows on a padded copy of the band. Streamed outputs are computed into
# scratch and copied out with non-temporal stores, a share at the start of each strip
# of the next band, so that memory and arithmetic overlap.

cdef inline void padded_block(floating* dst, Py_ssize_t ld, const floating* xc,
                              Py_ssize_t W, const Py_ssize_t* rowidx, Py_ssize_t n_rows,
                              const Py_ssize_t* colidx, Py_ssize_t n_cols, Py_ssize_t lo,
                              floating pad_value) noexcept nogil:
    # dst[i, :n_cols] = padded input row rowidx[i] (-1: a row of pad_value) at the
    # padded columns colidx[0:n_cols]; lo: where the input row starts among them. The
    # rows are short (those of an edge strip: one vector and two at stride 1, two and
    # two at stride 2): their input run is copied a vector at a time, the last vector
    # overlapping the one before, not by a call to memcpy.
    cdef Py_ssize_t i, c, j
    cdef Py_ssize_t vw = PYCONV_DW_VWD
    if floating is float:
        vw = PYCONV_DW_VWF
    # [c0, c1): the columns inside the input row, clamped to the block (an edge
    # strip's block can lie wholly in a padding wider than itself)
    cdef Py_ssize_t c0 = min(max(lo, 0), n_cols)
    cdef Py_ssize_t c1 = min(max(lo + W, 0), n_cols)
    cdef bint vectors
    cdef const floating* src
    cdef floating* d
    if c1 < c0:
        c1 = c0
    vectors = c1 - c0 >= vw
    for i in range(n_rows):
        d = dst + i * ld
        if rowidx[i] < 0:
            fill(d, 0, n_cols, pad_value)
            continue
        src = xc + rowidx[i] * W
        for c in range(c0):
            j = colidx[c]
            d[c] = src[j] if j >= 0 else pad_value
        if vectors:
            c = c0
            while c + vw < c1:
                vcopy(d + c, src + (c - lo))
                c += vw
            vcopy(d + (c1 - vw), src + (c1 - vw - lo))
        else:
            for c in range(c0, c1):
                d[c] = src[c - lo]
        for c in range(c1, n_cols):
            j = colidx[c]
            d[c] = src[j] if j >= 0 else pad_value


cdef inline void vcopy(floating* d, const floating* s) noexcept nogil:
    if floating is float:
        pyconv_dw_vcopy_f(d, s)
    else:
        pyconv_dw_vcopy_d(d, s)


cdef inline void plane_conv_rows(const floating* p, Py_ssize_t ldp, const floating* w9,
                               floating bias, floating* o, Py_ssize_t OW,
                               Py_ssize_t n_rows, bint relu, Py_ssize_t s,
                               Py_ssize_t K) noexcept nogil:
    # n_rows output rows from s * (n_rows - 1) + K padded rows p (stride ldp) into o
    # (stride OW), K x K at stride s (1 or 2).
    cdef Py_ssize_t r = 0, ow, j, t, u
    cdef floating acc, rt
    cdef floating w0 = w9[0], w1 = w9[1], w2 = w9[2]
    cdef floating w3 = w9[3], w4 = w9[4], w5 = w9[5]
    cdef floating w6 = w9[6], w7 = w9[7], w8 = w9[8]
    cdef const floating* a
    cdef const floating* b
    cdef const floating* c
    cdef const floating* d
    cdef floating* o0
    cdef floating* o1
    cdef floating v
    if K != 3:
        # as the K x K strips: bias + ((R_0 + R_1) + ...), each R_t left to right
        for r in range(n_rows):
            o0 = o + r * OW
            for ow in range(OW):
                acc = 0
                for t in range(K):
                    a = p + (s * r + t) * ldp + s * ow
                    rt = w9[t * K] * a[0]
                    for u in range(1, K):
                        rt = rt + w9[t * K + u] * a[u]
                    acc = rt if t == 0 else acc + rt
                o0[ow] = bias + acc
        r = n_rows
    elif s != 1:
        for r in range(n_rows):
            a = p + s * r * ldp
            b = a + ldp
            c = b + ldp
            o0 = o + r * OW
            for ow in range(OW):
                j = s * ow
                o0[ow] = bias + (((w0 * a[j] + w1 * a[j + 1] + w2 * a[j + 2])
                                  + (w3 * b[j] + w4 * b[j + 1] + w5 * b[j + 2]))
                                 + (w6 * c[j] + w7 * c[j + 1] + w8 * c[j + 2]))
        r = n_rows
    while r + 1 < n_rows:
        a = p + r * ldp
        b = a + ldp
        c = b + ldp
        d = c + ldp
        o0 = o + r * OW
        o1 = o0 + OW
        # same association as rows3x3_pair, so every 3x3 path rounds alike
        for ow in range(OW):
            o0[ow] = bias + (((w0 * a[ow] + w1 * a[ow + 1] + w2 * a[ow + 2])
                              + (w3 * b[ow] + w4 * b[ow + 1] + w5 * b[ow + 2]))
                             + (w6 * c[ow] + w7 * c[ow + 1] + w8 * c[ow + 2]))
            o1[ow] = bias + (((w0 * b[ow] + w1 * b[ow + 1] + w2 * b[ow + 2])
                              + (w3 * c[ow] + w4 * c[ow + 1] + w5 * c[ow + 2]))
                             + (w6 * d[ow] + w7 * d[ow + 1] + w8 * d[ow + 2]))
        r += 2
    if r < n_rows:
        a = p + r * ldp
        b = a + ldp
        c = b + ldp
        o0 = o + r * OW
        for ow in range(OW):
            o0[ow] = bias + (((w0 * a[ow] + w1 * a[ow + 1] + w2 * a[ow + 2])
                              + (w3 * b[ow] + w4 * b[ow + 1] + w5 * b[ow + 2]))
                             + (w6 * c[ow] + w7 * c[ow + 1] + w8 * c[ow + 2]))
    if relu:
        for ow in range(n_rows * OW):
            v = o[ow]
            o[ow] = 0 if v < 0 else v  # NaN stays NaN, as in torch.relu


cdef inline void strip(const floating** rows, Py_ssize_t off, const floating* w9,
                       floating bias, floating* o, Py_ssize_t OW, Py_ssize_t n_rows,
                       bint relu, pyconv_dw_pend* pend, const floating* pf, Py_ssize_t npf,
                       Py_ssize_t* kp, Py_ssize_t s, Py_ssize_t K, int edge=0,
                       const floating* ev=NULL) noexcept nogil:
    # one strip of a K x K kernel (3, 5 or 7) at stride s (1 or 2); edge 1 / 2: a 3x3
    # stride-1 strip one column past the left / right end of the rows, ev: the
    # padding's value there, per row (see plane_conv_units)
    if floating is float:
        pyconv_dw_strip_f(rows, off, w9, bias, o, OW, n_rows, relu, pend, pf, npf, kp, s, K,
                          edge, ev)
    else:
        pyconv_dw_strip_d(rows, off, w9, bias, o, OW, n_rows, relu, pend, pf, npf, kp, s, K,
                          edge, ev)


cdef void plane_conv_units(const floating* x, const floating* weight, const floating* bias,
                         floating* out, const Py_ssize_t* rowidx, const Py_ssize_t* colidx,
                         Py_ssize_t groups, Py_ssize_t C_out, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t lo_w,
                         floating pad_value, bint relu, Py_ssize_t band, Py_ssize_t s,
                         Py_ssize_t K, bint stream, floating* work, const floating** rows,
                         Py_ssize_t u0, Py_ssize_t u1, Py_ssize_t pf_row0=0) noexcept nogil:
    # Units u0 <= u < u1 in order, with one thread's workspace (see plane_conv_workspace);
    # pf_row0: about the input row where band 0 starts (a prefetch hint; rowidx may
    # be a slice of a longer table);
    # rows: 2 * (s * (band - 1) + K) pointers of scratch. K: the kernel size (3, 5 or
    # 7), s: the stride (1 or 2); a band of nr output rows reads s * (nr - 1) + K
    # padded rows, a strip of vw output columns s * vw + K - 1 padded columns (at
    # stride 2, one more than its taps reach).
    cdef Py_ssize_t vw = PYCONV_DW_VWD
    if floating is float:
        vw = PYCONV_DW_VWF
    cdef Py_ssize_t mult = C_out // groups
    cdef Py_ssize_t n_bands = (OH + band - 1) // band
    cdef Py_ssize_t ld = s * vw + K - 1             # padded copies' row length
    cdef Py_ssize_t band_rows = s * (band - 1) + K  # padded rows of a band
    # padrow: pad values, also one before it and up to column W (edge strips read
    # one column past the row), and as many as a band has rows (their edge values)
    cdef floating* padrow = work + 1
    cdef floating* block = padrow + max(W + 1, ld, band_rows)   # band_rows rows of ld
    cdef const floating** block_rows = rows + band_rows
    cdef const floating* ev
    cdef floating* bufs[2]
    cdef floating* dst
    cdef floating* final
    cdef const floating* xc
    cdef const floating* pf
    cdef const floating* w9
    cdef floating b
    cdef Py_ssize_t u, n, co, t, r0, nr, r, c, j, kp, npf
    cdef int cur = 0, edge
    # the end of the images these units read: an edge strip on the plane that ends
    # there (or starts at x) would read one value past them, and takes a padded copy
    cdef const floating* x_hi = x + ((u1 - 1) // (n_bands * C_out) + 1) * groups * H * W
    cdef pyconv_dw_pend pend
    pend.s = pend.d = NULL
    pend.i = pend.n = 0
    bufs[0] = block + band_rows * ld
    bufs[1] = bufs[0] + band * OW
    fill(work, 0, block - work, pad_value)
    for r in range(band_rows):
        block_rows[r] = block + r * ld
    for u in range(u0, u1):
        t = u % n_bands
        co = (u // n_bands) % C_out
        n = u // (n_bands * C_out)
        r0 = t * band
        nr = (band if r0 + band < OH else OH - r0)
        xc = x + (n * groups + co // mult) * H * W
        w9 = weight + co * K * K
        b = bias[co] if bias != NULL else 0
        final = out + (n * C_out + co) * OH * OW + r0 * OW
        dst = bufs[cur] if stream else final
        if OW < vw:
            padded_block(block, ld, xc, W, rowidx + s * r0, s * (nr - 1) + K, colidx,
                         s * (OW - 1) + K, lo_w, pad_value)
            plane_conv_rows(block, ld, w9, b, dst, OW, nr, relu, s, K)
        else:
            for r in range(s * (nr - 1) + K):
                rows[r] = (xc + rowidx[s * r0 + r] * W if rowidx[s * r0 + r] >= 0
                           else padrow)
            # the next unit's input rows, fetched while this band computes
            npf = 0
            kp = 0
            pf = NULL
            t = (u + 1) % n_bands
            r = (s * t * band - 1 if t > 0 else 0) + pf_row0   # about its first row
            if u + 1 < u1 and r < H:
                pf = x + (((u + 1) // (n_bands * C_out)) * groups
                          + ((u + 1) // n_bands) % C_out // mult) * H * W + r * W
                npf = (s * band + K - 1) * W
                if npf > (H - r) * W:
                    npf = (H - r) * W
            c = 0
            while c < OW:
                if c + vw > OW:
                    c = OW - vw    # the last strip overlaps: it recomputes the same values
                if s * c >= lo_w and s * c + ld <= lo_w + W:
                    # the input rows in place (padding rows: padrow)
                    strip(rows, s * c - lo_w, w9, b, dst + c, OW, nr, relu, &pend, pf,
                           npf, &kp, s, K)
                elif s == 1 and K == 3 and (
                        (c == lo_w - 1 and c + ld <= lo_w + W and xc != x)
                        or (c >= lo_w and c + ld == lo_w + W + 1 and xc + H * W != x_hi)):
                    # one column past either end of the rows: read in place (padding
                    # rows from padrow), that lane from ev, the padding's values there
                    edge = 1 if c < lo_w else 2
                    j = colidx[c] if edge == 1 else colidx[c + ld - 1]
                    if j < 0:
                        ev = padrow
                    else:
                        for r in range(nr + 2):
                            block[r] = rows[r][j]
                        ev = block
                    strip(rows, c - lo_w, w9, b, dst + c, OW, nr, relu, &pend, pf, npf,
                          &kp, s, K, edge, ev)
                else:
                    padded_block(block, ld, xc, W, rowidx + s * r0, s * (nr - 1) + K,
                                 colidx + s * c, ld, lo_w - s * c, pad_value)
                    strip(block_rows, 0, w9, b, dst + c, OW, nr, relu, &pend, pf, npf,
                           &kp, s, K)
                c += vw
        if stream:
            # what is left of the previous band's copy, then this band's, to be done
            # while the next band computes
            if floating is float:
                pyconv_dw_pend_finish_f(&pend)
                pyconv_dw_pend_start_f(&pend, final, dst, nr * OW)
            else:
                pyconv_dw_pend_finish_d(&pend)
                pyconv_dw_pend_start_d(&pend, final, dst, nr * OW)
            cur = 1 - cur
    if stream:
        if floating is float:
            pyconv_dw_pend_finish_f(&pend)
        else:
            pyconv_dw_pend_finish_d(&pend)
        pyconv_dw_sfence()


def plane_conv_workspace(Py_ssize_t band, Py_ssize_t W, Py_ssize_t OW, bint stream,
                       Py_ssize_t itemsize, Py_ssize_t stride=1, Py_ssize_t ksize=3):
    """Scratch per thread for ``plane_conv`` on values of ``itemsize`` bytes at
    ``stride`` with a ``ksize`` kernel: the number of values (a row of pad values, the
    ``stride * (band - 1) + ksize`` padded rows of a band, ``stride`` vectors plus
    ``ksize - 1`` wide, and with ``stream`` two bands of output rows) and of pointers
    (two row tables)."""
    cdef Py_ssize_t vw = PYCONV_DW_VWF if itemsize == 4 else PYCONV_DW_VWD
    cdef Py_ssize_t ld = stride * vw + ksize - 1
    cdef Py_ssize_t band_rows = stride * (band - 1) + ksize
    cdef Py_ssize_t values = 1 + max(W + 1, ld, band_rows) + band_rows * ld
    return values + (2 * band * OW if stream else 0), 2 * band_rows


def plane_conv(const floating[:, :, ::1] x, const floating[:, ::1] weight,
             const floating[::1] bias, floating[:, :, ::1] out,
             const Py_ssize_t[::1] rowidx, const Py_ssize_t[::1] colidx,
             Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t lo_w,
             floating pad_value, bint has_bias, bint relu, Py_ssize_t band, bint stream,
             floating[:, ::1] work, Py_ssize_t[:, ::1] row_work, int n_threads,
             Py_ssize_t stride=1, Py_ssize_t ksize=3):
    """Depthwise-style K x K (``ksize`` 3, 5 or 7) dilation-1 convolution at ``stride`` 1
    or 2 (both axes), one input channel per group.

    x: (N, groups, H*W); weight: (C_out, K*K), output channel co reading input channel
    co // (C_out/groups); out: (N, C_out, OH*OW). rowidx (stride * (OH - 1) + K,) /
    colidx (stride * OW + K - 1,): the input row / column at each padded position, -1
    for ``pad_value`` (any padding mode maps through them; at stride 2 the last column
    is read but never used); lo_w: the left padding, so that the columns
    [lo_w, lo_w + W) are the input row itself. Units are (image, output channel, band
    of ``band`` output rows), split into one contiguous run per thread; each output is
    computed by the same arithmetic whatever the band, so results do not depend on it
    or on the thread count. ``stream``: each band is computed into scratch and written
    to ``out`` with non-temporal stores while the next one computes (for outputs
    larger than the cache). ``work`` and ``row_work`` hold, one row per thread, the
    values and pointers that ``plane_conv_workspace(band, W, OW, stream, itemsize,
    stride, ksize)`` gives.
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t groups = x.shape[1]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t n_units, t
    cdef const floating* xp
    if band < 1:
        raise ValueError(f"plane_conv: band must be at least 1, got {band}")
    if stride != 1 and stride != 2:
        raise ValueError(f"plane_conv: stride must be 1 or 2, got {stride}")
    if ksize != 3 and ksize != 5 and ksize != 7:
        raise ValueError(f"plane_conv: ksize must be 3, 5 or 7, got {ksize}")
    n_units = N * C_out * ((OH + band - 1) // band)
    if n_units == 0 or OW == 0:
        return
    need = plane_conv_workspace(band, W, OW, stream, sizeof(floating), stride, ksize)
    if rowidx.shape[0] < stride * (OH - 1) + ksize \
            or colidx.shape[0] < stride * OW + ksize - 1 \
            or work.shape[0] < n_threads or n_threads < 1 \
            or row_work.shape[0] < n_threads or sizeof(void*) != sizeof(Py_ssize_t) \
            or work.shape[1] < need[0] or row_work.shape[1] < need[1] \
            or weight.shape[1] != ksize * ksize or x.shape[2] != H * W \
            or out.shape[2] != OH * OW \
            or out.shape[0] != N or weight.shape[0] != C_out or C_out % groups \
            or bias.shape[0] < (C_out if has_bias else 1):
        raise ValueError("plane_conv: inconsistent shapes, tables or workspace")
    xp = &x[0, 0, 0] if H * W > 0 else NULL
    for t in prange(n_threads, nogil=True, schedule='static', num_threads=n_threads):
        plane_conv_units(xp, &weight[0, 0], &bias[0] if has_bias else NULL, &out[0, 0, 0],
                       &rowidx[0], &colidx[0], groups, C_out, H, W, OH, OW, lo_w,
                       pad_value, relu, band, stride, ksize, stream, &work[t, 0],
                       <const floating**>&row_work[t, 0], n_units * t // n_threads,
                       n_units * (t + 1) // n_threads)


def set_wide_loops(bint on, bint tall=True):
    """Run the packed GEMM's whole tiles two column panels at a time in AVX-512
    registers (``on``; only where built, and only on a CPU with AVX-512: the caller
    checks) or one panel at a time in AVX2 ones. Returns whether the AVX-512 tiles now
    run. ``tall``: those tiles take two weight panels (8 rows) at a time where there
    are two (false: one, for comparisons). All give the same bits."""
    pg_set_tall(tall)
    return bool(pg_set_wide(on))
