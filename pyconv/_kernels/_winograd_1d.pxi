# Winograd F(2, 3) and F(4, 3) for 1-D convolution with a 3-tap kernel, stride 1 and
# any dilation d (included into _winograd.pyx: it shares the packed GEMM and the
# module's AVX-512 build).
#
# A dilated 1-D convolution is d interleaved undilated ones. The tiles of m outputs
# are grouped into "super-tiles" of m*d consecutive outputs: super-tile s holds the d
# tiles r = 0 .. d-1 whose outputs are s*m*d + r + k*d (k < m), and tile (s, r) reads
# the padded inputs s*m*d + r + i*d (i < m + 2). The d tiles of a super-tile read d
# consecutive inputs at each i, so the transforms run across them in vectors, with
# no gather or transpose: tile t = s*d + r of a unit is column t of its V and M rows.
#
# Where d is smaller than a vector, the AVX2 and AVX-512 builds step through several
# whole super-tiles at once if d divides the lanes (permutes move values between tile
# lanes and input / output positions). Otherwise a step computes a whole vector and
# keeps the first d lanes: it stores the others too, and a later step (a larger r
# chunk of the same super-tile is stepped first, then the next k, then the next
# super-tile) overwrites them. Steps whose stores would reach past the unit's
# outputs store lane by lane.

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
      #if defined(__AVX512F__)
        #define PYCONV_W1_VBYTES 64
      #elif defined(__AVX__)
        #define PYCONV_W1_VBYTES 32
      #else
        #define PYCONV_W1_VBYTES 16
      #endif
      typedef float pyconv_w1_vf __attribute__((vector_size(PYCONV_W1_VBYTES)));
      typedef double pyconv_w1_vd __attribute__((vector_size(PYCONV_W1_VBYTES)));
      typedef int pyconv_w1_mf __attribute__((vector_size(PYCONV_W1_VBYTES)));
      typedef long long pyconv_w1_md __attribute__((vector_size(PYCONV_W1_VBYTES)));
      typedef float pyconv_w1_vfu
          __attribute__((vector_size(PYCONV_W1_VBYTES), aligned(4), may_alias));
      typedef double pyconv_w1_vdu
          __attribute__((vector_size(PYCONV_W1_VBYTES), aligned(8), may_alias));
      #define PYCONV_W1_VWF (PYCONV_W1_VBYTES / 4)
      #define PYCONV_W1_VWD (PYCONV_W1_VBYTES / 8)
      /* ReLU keeping NaN and -0.0: clear the lanes where v < 0. */
      #define PYCONV_W1_RELU(M, v) do { M m_ = (M)((v) < 0); M b_;                  \\
          memcpy(&b_, &(v), sizeof b_); b_ &= ~m_; memcpy(&(v), &b_, sizeof b_); }  \\
          while (0)
    #else
      typedef float pyconv_w1_vf;
      typedef double pyconv_w1_vd;
      typedef int pyconv_w1_mf;
      typedef long long pyconv_w1_md;
      typedef float pyconv_w1_vfu;
      typedef double pyconv_w1_vdu;
      #define PYCONV_W1_VWF 1
      #define PYCONV_W1_VWD 1
      #define PYCONV_W1_RELU(M, v) do { if ((v) < 0) (v) = 0; } while (0)
    #endif
    /* Lanes of the widest vector of any build: the slack after V and M rows and
       after the input segment, which whole-vector steps read or write past. */
    #define PYCONV_W1_SLACK 16

    /* B^T of one step (mt 2: d0..d3; 4: d0..d5), the values of output row a stored
       at o + a*ldv. */
    #define PYCONV_W1_BT(T, V, VU, mt, d0, d1, d2, d3, d4, d5, o, ldv)             \\
        do {                                                                        \\
            if ((mt) == 2) {                                                        \\
                *(VU*)(o) = d0 - d2;                                                \\
                *(VU*)((o) + (ldv)) = d1 + d2;                                      \\
                *(VU*)((o) + 2 * (ldv)) = d2 - d1;                                  \\
                *(VU*)((o) + 3 * (ldv)) = d1 - d3;                                  \\
            } else {                                                                \\
                V a_ = d4 - (T)4 * d2, b_ = d3 - (T)4 * d1;                         \\
                V e_ = d4 - d2, f_ = (T)2 * (d3 - d1);                              \\
                *(VU*)(o) = ((T)4 * d0 - (T)5 * d2) + d4;                           \\
                *(VU*)((o) + (ldv)) = a_ + b_;                                      \\
                *(VU*)((o) + 2 * (ldv)) = a_ - b_;                                  \\
                *(VU*)((o) + 3 * (ldv)) = e_ + f_;                                  \\
                *(VU*)((o) + 4 * (ldv)) = e_ - f_;                                  \\
                *(VU*)((o) + 5 * (ldv)) = ((T)4 * d1 - (T)5 * d3) + d5;             \\
            }                                                                       \\
        } while (0)
    /* A^T of one step: y[0 .. mt-1] from the M rows at p + a*ldm. */
    #define PYCONV_W1_AT(T, V, VU, mt, p, ldm, y)                                   \\
        do {                                                                        \\
            V m0 = *(const VU*)(p), m1 = *(const VU*)((p) + (ldm));                 \\
            V m2 = *(const VU*)((p) + 2 * (ldm)), m3 = *(const VU*)((p) + 3 * (ldm)); \\
            if ((mt) == 2) {                                                        \\
                y[0] = (m0 + m1) + m2;                                              \\
                y[1] = (m1 - m2) - m3;                                              \\
            } else {                                                                \\
                V m4 = *(const VU*)((p) + 4 * (ldm));                               \\
                V m5 = *(const VU*)((p) + 5 * (ldm));                               \\
                V p12 = m1 + m2, p34 = m3 + m4, n12 = m1 - m2, n34 = m3 - m4;       \\
                y[0] = (m0 + p12) + p34;                                            \\
                y[1] = n12 + (T)2 * n34;                                            \\
                y[2] = p12 + (T)4 * p34;                                            \\
                y[3] = (n12 + (T)8 * n34) + m5;                                     \\
            }                                                                       \\
        } while (0)

    /* The probe (v - v is NaN exactly for inf and NaN), bias and ReLU of y[0 .. mt-1]. */
    #define PYCONV_W1_EPILOGUE(M, mt, y, probe, b, relu)                            \\
        do {                                                                        \\
            for (int k_ = 0; k_ < (mt); k_++) {                                     \\
                probe += y[k_] - y[k_];                                             \\
                y[k_] += b;                                                         \\
                if (relu) PYCONV_W1_RELU(M, y[k_]);                                 \\
            }                                                                       \\
        } while (0)

    /* The AVX2 and AVX-512 builds step through VW / d whole super-tiles at once
       where d divides VW: a step's lanes are its VW tiles t = s*d + r, read and
       written whole, and two-source permutes and blends move the values between the
       lanes of the tiles and those of the inputs and outputs (AVX-512: vpermt2ps/pd
       and masked blends; AVX2: GCC's variable shuffles, two vpermps/pd and a blend,
       and a select by a lane mask). Where d is smaller than a vector the plain steps
       keep d of VW lanes. */
    #if defined(__AVX512F__)
      #include <immintrin.h>
      #define PYCONV_W1_PERM 1
      typedef __m512i pyconv_w1_if;
      typedef __m512i pyconv_w1_id;
      #define PYCONV_W1_PERM2_f(a, i, b) \\
          ((pyconv_w1_vf)_mm512_permutex2var_ps((__m512)(a), (i), (__m512)(b)))
      #define PYCONV_W1_PERM2_d(a, i, b) \\
          ((pyconv_w1_vd)_mm512_permutex2var_pd((__m512d)(a), (i), (__m512d)(b)))
      /* lanes of b where bit l of the mask is set, else of a */
      #define PYCONV_W1_BLEND_f(bits, lanes, a, b) \\
          ((pyconv_w1_vf)_mm512_mask_blend_ps((__mmask16)(bits), (__m512)(a), (__m512)(b)))
      #define PYCONV_W1_BLEND_d(bits, lanes, a, b) \\
          ((pyconv_w1_vd)_mm512_mask_blend_pd((__mmask8)(bits), (__m512d)(a), (__m512d)(b)))
    #elif defined(__AVX2__) && defined(__GNUC__) && !defined(__clang__)
      #define PYCONV_W1_PERM 1
      typedef pyconv_w1_mf pyconv_w1_if;
      typedef pyconv_w1_md pyconv_w1_id;
      #define PYCONV_W1_PERM2_f(a, i, b) __builtin_shuffle((a), (b), (i))
      #define PYCONV_W1_PERM2_d(a, i, b) __builtin_shuffle((a), (b), (i))
      #define PYCONV_W1_BLEND_f(bits, lanes, a, b) ((pyconv_w1_vf) \\
          (((pyconv_w1_mf)(a) & ~(lanes)) | ((pyconv_w1_mf)(b) & (lanes))))
      #define PYCONV_W1_BLEND_d(bits, lanes, a, b) ((pyconv_w1_vd) \\
          (((pyconv_w1_md)(a) & ~(lanes)) | ((pyconv_w1_md)(b) & (lanes))))
    #else
      #define PYCONV_W1_PERM 0
    #endif
    #if PYCONV_W1_PERM
      /* Index vectors of one (d, mt), lane values as ints of the data's width; the
         blend masks both as bits (AVX-512) and as lanes of all ones (AVX2). */
      #define PYCONV_W1_TABLES(S, IT, VW)                                           \\
      typedef struct {                                                              \\
          pyconv_w1_i##S in[6], out[4], in_lanes[4], out_lanes[4];                  \\
          unsigned in_hi[4], out_hi[4];                                             \\
      } pyconv_w1_perm_##S;                                                         \\
      static int pyconv_w1_tables_##S(void* buf, Py_ssize_t d, int mt) {           \\
          pyconv_w1_perm_##S* t = (pyconv_w1_perm_##S*)buf;                        \\
          const Py_ssize_t md = mt * d;                                             \\
          if (d >= VW || VW % d) return 0;                                          \\
          for (int i = 0; i < mt + 2; i++) {                                        \\
              IT idx[VW], lanes[VW];                                                \\
              unsigned hi = 0;                                                      \\
              for (int l = 0; l < VW; l++) {                                        \\
                  Py_ssize_t j = l / d, r = l % d;                                  \\
                  lanes[l] = 0;                                                     \\
                  if (i < mt) {   /* from the mt vectors of the J super-tiles */    \\
                      Py_ssize_t pos = j * md + d * i + r;                          \\
                      idx[l] = (IT)(pos % VW + ((pos / VW) & 1) * VW);              \\
                      hi |= (unsigned)((pos / VW) >> 1) << l;                       \\
                      lanes[l] = -(IT)((pos / VW) >> 1);                            \\
                  } else {        /* row i - mt shifted by a super-tile */          \\
                      idx[l] = (IT)(l < VW - d ? l + d                               \\
                                    : VW + d * (i - mt) + l - (VW - d));             \\
                  }                                                                 \\
              }                                                                     \\
              memcpy(&t->in[i], idx, sizeof idx);                                   \\
              if (i < mt) {                                                         \\
                  t->in_hi[i] = hi;                                                 \\
                  memcpy(&t->in_lanes[i], lanes, sizeof lanes);                     \\
              }                                                                     \\
          }                                                                         \\
          for (int q = 0; q < mt; q++) {                                            \\
              IT idx[VW], lanes[VW];                                                \\
              unsigned hi = 0;                                                      \\
              for (int l = 0; l < VW; l++) {                                        \\
                  Py_ssize_t pos = q * VW + l, j = pos / md;                        \\
                  Py_ssize_t k = pos % md / d, r = pos % d;                         \\
                  idx[l] = (IT)(j * d + r + (k & 1) * VW);                          \\
                  hi |= (unsigned)(k >> 1) << l;                                    \\
                  lanes[l] = -(IT)(k >> 1);                                         \\
              }                                                                     \\
              memcpy(&t->out[q], idx, sizeof idx);                                  \\
              t->out_hi[q] = hi;                                                    \\
              memcpy(&t->out_lanes[q], lanes, sizeof lanes);                        \\
          }                                                                         \\
          return 1;                                                                 \\
      }
      PYCONV_W1_TABLES(f, int, PYCONV_W1_VWF)
      PYCONV_W1_TABLES(d, long long, PYCONV_W1_VWD)
      /* Lanes from vectors z[0 .. mt-1] through one table row. */
      #define PYCONV_W1_GATHER(S, mt, z, idx, hi, lanes)                            \\
          ((mt) == 2 ? PYCONV_W1_PERM2_##S(z[0], idx, z[1])                         \\
                     : PYCONV_W1_BLEND_##S(hi, lanes,                               \\
                                           PYCONV_W1_PERM2_##S(z[0], idx, z[1]),    \\
                                           PYCONV_W1_PERM2_##S(z[2], idx, z[3])))
      #define PYCONV_W1_TABLES_f(buf, d, mt) pyconv_w1_tables_f(buf, d, mt)
      #define PYCONV_W1_TABLES_d(buf, d, mt) pyconv_w1_tables_d(buf, d, mt)
    #else
      #define PYCONV_W1_TABLES_f(buf, d, mt) 0
      #define PYCONV_W1_TABLES_d(buf, d, mt) 0
    #endif
    /* Bytes of the permute tables (64-byte aligned), and their set-up for one (d, mt):
       returns 1 where the permuted steps apply, else 0 (tables unused). */
    #define PYCONV_W1_TABLE_BYTES 2048
    static int pyconv_w1_tables_for_f(void* buf, Py_ssize_t d, int mt) {
        return PYCONV_W1_TABLES_f(buf, d, mt);
    }
    static int pyconv_w1_tables_for_d(void* buf, Py_ssize_t d, int mt) {
        return PYCONV_W1_TABLES_d(buf, d, mt);
    }

    /* Input transform of one channel: seg holds the padded inputs of ns super-tiles
       (ns*mt*d + 2d values, then PYCONV_W1_SLACK zeros); row t = s*d + r of
       v[a*ldv + t] gets (B^T x)[a] of tile (s, r). Rows need PYCONV_W1_SLACK values
       past ns*d. */
    #define PYCONV_W1_INPUT(S, T, V, VU, VW)                                         \\
    static void pyconv_w1_input_##S(const T* seg, Py_ssize_t ns, Py_ssize_t d,     \\
                                    int mt, T* v, Py_ssize_t ldv,                   \\
                                    const void* tables) {                           \\
        const Py_ssize_t md = mt * d;                                               \\
        Py_ssize_t s = 0;                                                           \\
        PYCONV_W1_INPUT_PERM(S, T, V, VU, VW)                                       \\
        for (; s < ns; s++) {                                                       \\
            for (Py_ssize_t r0 = (d - 1) / VW * VW; r0 >= 0; r0 -= VW) {            \\
                const T* p = seg + s * md + r0;                                     \\
                V d0 = *(const VU*)p, d1 = *(const VU*)(p + d);                     \\
                V d2 = *(const VU*)(p + 2 * d), d3 = *(const VU*)(p + 3 * d);       \\
                V d4 = d0, d5 = d0;                                                 \\
                if (mt == 4) {                                                      \\
                    d4 = *(const VU*)(p + 4 * d);                                   \\
                    d5 = *(const VU*)(p + 5 * d);                                   \\
                }                                                                   \\
                PYCONV_W1_BT(T, V, VU, mt, d0, d1, d2, d3, d4, d5, v + s * d + r0, ldv); \\
            }                                                                       \\
        }                                                                           \\
    }
    #if PYCONV_W1_PERM
      /* whole steps of J = VW / d super-tiles (loads: mt + 1 vectors) */
      #define PYCONV_W1_INPUT_PERM(S, T, V, VU, VW)                                 \\
        if (tables != NULL) {                                                       \\
            const pyconv_w1_perm_##S tb = *(const pyconv_w1_perm_##S*)tables;       \\
            const Py_ssize_t J = VW / d;                                            \\
            for (; s + J <= ns; s += J) {                                           \\
                const T* p = seg + s * md;                                          \\
                V z[5], x[6];                                                       \\
                for (int q = 0; q <= mt; q++) z[q] = *(const VU*)(p + q * VW);      \\
                for (int i = 0; i < 2; i++)   /* (seen as set by GCC) */            \\
                    x[i] = PYCONV_W1_GATHER(S, mt, z, tb.in[i], tb.in_hi[i],        \\
                                            tb.in_lanes[i]);                        \\
                for (int i = 2; i < mt; i++)                                        \\
                    x[i] = PYCONV_W1_GATHER(S, mt, z, tb.in[i], tb.in_hi[i],        \\
                                            tb.in_lanes[i]);                        \\
                x[mt] = PYCONV_W1_PERM2_##S(x[0], tb.in[mt], z[mt]);                \\
                x[mt + 1] = PYCONV_W1_PERM2_##S(x[1], tb.in[mt + 1], z[mt]);        \\
                if (mt == 2) { x[4] = x[0]; x[5] = x[0]; }                          \\
                PYCONV_W1_BT(T, V, VU, mt, x[0], x[1], x[2], x[3], x[4], x[5],      \\
                             v + s * d, ldv);                                       \\
            }                                                                       \\
        }
    #else
      #define PYCONV_W1_INPUT_PERM(S, T, V, VU, VW)
    #endif

    /* Output transform of one output channel: m[a*ldm + t] (rows valid up to ns*d,
       finite slack after) -> o[s*mt*d + k*d + r] = act((A^T M)[k] of tile (s, r) +
       b) for positions below limit. Returns 0 if a value before bias and ReLU was
       inf or NaN (v - v is NaN exactly then), else 1. */
    #define PYCONV_W1_OUTPUT(S, T, V, VU, VW, M)                                     \\
    static int pyconv_w1_output_##S(const T* m, Py_ssize_t ldm, Py_ssize_t ns,     \\
                                    Py_ssize_t d, int mt, T* out, Py_ssize_t limit, \\
                                    T b, int relu, const void* tables) {            \\
        const Py_ssize_t md = mt * d;                                               \\
        V probe = (V){0}, y[4];                                                     \\
        Py_ssize_t s = 0;                                                           \\
        PYCONV_W1_OUTPUT_PERM(S, T, V, VU, VW, M)                                   \\
        for (; s < ns; s++) {                                                       \\
            for (Py_ssize_t r0 = (d - 1) / VW * VW; r0 >= 0; r0 -= VW) {            \\
                PYCONV_W1_AT(T, V, VU, mt, m + s * d + r0, ldm, y);                 \\
                T* o = out + s * md + r0;                                           \\
                PYCONV_W1_EPILOGUE(M, mt, y, probe, b, relu);                       \\
                if (s * md + (mt - 1) * d + r0 + VW <= limit) {                     \\
                    for (int k = 0; k < mt; k++) *(VU*)(o + k * d) = y[k];          \\
                } else {                                                            \\
                    Py_ssize_t lanes = d - r0 < VW ? d - r0 : VW;                   \\
                    for (int k = 0; k < mt; k++) {                                  \\
                        T lane[VW];                                                 \\
                        memcpy(lane, &y[k], sizeof lane);                           \\
                        for (Py_ssize_t l = 0; l < lanes; l++)                      \\
                            if (s * md + k * d + r0 + l < limit) o[k * d + l] = lane[l]; \\
                    }                                                               \\
                }                                                                   \\
            }                                                                       \\
        }                                                                           \\
        T lanes_[VW];                                                               \\
        memcpy(lanes_, &probe, sizeof lanes_);                                      \\
        for (int l = 0; l < VW; l++)                                                \\
            if (lanes_[l] != lanes_[l]) return 0;                                   \\
        return 1;                                                                   \\
    }
    #if PYCONV_W1_PERM
      /* whole steps of J = VW / d super-tiles whose outputs all lie below limit */
      #define PYCONV_W1_OUTPUT_PERM(S, T, V, VU, VW, M)                             \\
        if (tables != NULL) {                                                       \\
            const pyconv_w1_perm_##S tb = *(const pyconv_w1_perm_##S*)tables;       \\
            const Py_ssize_t J = VW / d;                                            \\
            for (; s + J <= ns && (s + J) * md <= limit; s += J) {                  \\
                PYCONV_W1_AT(T, V, VU, mt, m + s * d, ldm, y);                      \\
                PYCONV_W1_EPILOGUE(M, mt, y, probe, b, relu);                       \\
                for (int q = 0; q < mt; q++)                                        \\
                    *(VU*)(out + s * md + q * VW) =                                 \\
                        PYCONV_W1_GATHER(S, mt, y, tb.out[q], tb.out_hi[q],         \\
                                         tb.out_lanes[q]);                          \\
            }                                                                       \\
        }
    #else
      #define PYCONV_W1_OUTPUT_PERM(S, T, V, VU, VW, M)
    #endif

    PYCONV_W1_INPUT(f, float, pyconv_w1_vf, pyconv_w1_vfu, PYCONV_W1_VWF)
    PYCONV_W1_INPUT(d, double, pyconv_w1_vd, pyconv_w1_vdu, PYCONV_W1_VWD)
    PYCONV_W1_OUTPUT(f, float, pyconv_w1_vf, pyconv_w1_vfu, PYCONV_W1_VWF, pyconv_w1_mf)
    PYCONV_W1_OUTPUT(d, double, pyconv_w1_vd, pyconv_w1_vdu, PYCONV_W1_VWD, pyconv_w1_md)
    """
    int PYCONV_W1_SLACK, PYCONV_W1_VWF, PYCONV_W1_VWD
    enum: PYCONV_W1_TABLE_BYTES
    int PYCONV_W1_PERM
    int pyconv_w1_tables_for_f(void* buf, Py_ssize_t d, int mt) noexcept nogil
    int pyconv_w1_tables_for_d(void* buf, Py_ssize_t d, int mt) noexcept nogil
    void pyconv_w1_input_f(const float* seg, Py_ssize_t ns, Py_ssize_t d, int mt,
                           float* v, Py_ssize_t ldv, const void* tables) noexcept nogil
    void pyconv_w1_input_d(const double* seg, Py_ssize_t ns, Py_ssize_t d, int mt,
                           double* v, Py_ssize_t ldv, const void* tables) noexcept nogil
    int pyconv_w1_output_f(const float* m, Py_ssize_t ldm, Py_ssize_t ns, Py_ssize_t d,
                           int mt, float* out, Py_ssize_t limit, float b,
                           int relu, const void* tables) noexcept nogil
    int pyconv_w1_output_d(const double* m, Py_ssize_t ldm, Py_ssize_t ns, Py_ssize_t d,
                           int mt, double* out, Py_ssize_t limit, double b,
                           int relu, const void* tables) noexcept nogil


def workspace_row_1d(Py_ssize_t mt, Py_ssize_t d, Py_ssize_t cin_g, Py_ssize_t cout_g,
                     Py_ssize_t chunk):
    """Values one thread's workspace row needs for :func:`winograd_1d` with ``chunk``
    super-tiles per unit: V and M (rows of ``chunk * d`` tiles plus slack, skewed), the
    padded input segment of one channel, and one column panel of the packed GEMM."""
    cdef Py_ssize_t ldt = chunk * d + PYCONV_W1_SLACK
    return ((mt + 2) * ((cin_g + cout_g) * ldt + 2 * SKEW)
            + chunk * mt * d + 2 * d + PYCONV_W1_SLACK + cin_g * PG_NR_FLOAT)


cdef bint unit_1d(const floating* x, Py_ssize_t L, Py_ssize_t lo, const Py_ssize_t* left,
                  const Py_ssize_t* right, Py_ssize_t s0, Py_ssize_t ns, Py_ssize_t d,
                  Py_ssize_t mt, Py_ssize_t cin_g, Py_ssize_t cout_g,
                  const floating* u, Py_ssize_t u_ld, const floating* up, Py_ssize_t up_ld,
                  floating* vbuf, floating* mbuf, floating* seg, floating* panel,
                  Py_ssize_t ldt, floating* out, Py_ssize_t OL, const floating* bias,
                  floating pad, bint relu, int stages) noexcept nogil:
    # One image's group of channels (x: its first input row, out: its first output
    # row), super-tiles s0 <= s < s0 + ns. Returns whether every output was finite.
    cdef Py_ssize_t alpha = mt + 2
    cdef Py_ssize_t md = mt * d
    # GEMM columns: the tiles of the last super-tile that hold outputs below OL (with
    # a dilation near the output length, most of a super-tile's tiles hold none)
    cdef Py_ssize_t nt = (ns - 1) * d + min(d, OL - (s0 + ns - 1) * mt * d)
    cdef Py_ssize_t ldv = cin_g * ldt + SKEW
    cdef Py_ssize_t ldm = cout_g * ldt + SKEW
    cdef Py_ssize_t p0 = s0 * md
    cdef Py_ssize_t n_seg = ns * md + 2 * d
    cdef Py_ssize_t c, j, p, idx, run, a, limit
    cdef const floating* row
    cdef const floating* src
    cdef bint finite = True
    cdef floating b
    cdef char tbuf[PYCONV_W1_TABLE_BYTES + 64]
    cdef void* tables = <void*>((<size_t>tbuf + 63) & ~(<size_t>63))
    if floating is float:
        if not pyconv_w1_tables_for_f(tables, d, <int>mt):
            tables = NULL
    else:
        if not pyconv_w1_tables_for_d(tables, d, <int>mt):
            tables = NULL
    for j in range(n_seg, n_seg + PYCONV_W1_SLACK):
        seg[j] = 0
    # 1. input transform, a channel at a time through its padded segment
    for c in range(cin_g if stages & 1 else 0):
        row = x + c * L
        src = seg
        if p0 >= lo and p0 + n_seg + PYCONV_W1_SLACK <= lo + L:
            # inside the input, with the values the whole-vector steps read past it
            src = row + (p0 - lo)
        j = 0 if src == seg else n_seg
        while j < n_seg:   # the input's run as one copy, the edges through tables
            p = p0 + j
            if lo <= p < lo + L:
                run = lo + L - p
                if run > n_seg - j:
                    run = n_seg - j
                memcpy(seg + j, row + (p - lo), run * sizeof(floating))
                j = j + run
                continue
            idx = left[p] if p < lo else right[p - lo - L]
            if idx >= 0:
                seg[j] = row[idx]
            else:
                seg[j] = pad if idx == -1 else 0
            j = j + 1
        if floating is float:
            pyconv_w1_input_f(src, ns, d, <int>mt, vbuf + c * ldt, ldv, tables)
        else:
            pyconv_w1_input_d(src, ns, d, <int>mt, vbuf + c * ldt, ldv, tables)
    # 2. alpha GEMMs M[a] (cout_g x nt) = U[a] (cout_g x cin_g) @ V[a] (cin_g x nt)
    for a in range(alpha if stages & 2 else 0):
        if up != NULL:
            packed_gemm(up + a * up_ld, vbuf + a * ldv, ldt, mbuf + a * ldm, ldt,
                        cout_g, nt, cin_g, False, panel)
        else:
            gemm_rm(u + a * u_ld, vbuf + a * ldv, mbuf + a * ldm, cout_g, nt, cin_g,
                    cin_g, ldt, ldt, 0)
        # the output steps read the rest of the last super-tile and up to a vector
        # past it: finite values
        for c in range(cout_g):
            for j in range(nt, ns * d + PYCONV_W1_SLACK):
                mbuf[a * ldm + c * ldt + j] = 0
    # 3. output transform, bias and ReLU, only the outputs below OL
    limit = OL - p0
    if limit > ns * md:
        limit = ns * md
    for c in range(cout_g if stages & 4 else 0):
        b = bias[c] if bias != NULL else 0
        if floating is float:
            finite &= pyconv_w1_output_f(mbuf + c * ldt, ldm, ns, d, <int>mt,
                                         out + c * OL + p0, limit, b, relu, tables)
        else:
            finite &= pyconv_w1_output_d(mbuf + c * ldt, ldm, ns, d, <int>mt,
                                         out + c * OL + p0, limit, b, relu, tables)
    return finite


def winograd_1d(const floating[::1] x, const floating[:, :, ::1] u,
                const floating[::1] bias, floating[::1] out, Py_ssize_t N,
                Py_ssize_t C_in, Py_ssize_t L, Py_ssize_t OL,
                Py_ssize_t lo, const Py_ssize_t[::1] left, const Py_ssize_t[::1] right,
                Py_ssize_t d, Py_ssize_t mt, Py_ssize_t groups, floating pad_value,
                bint has_bias, bint relu, Py_ssize_t chunk, floating[:, ::1] work,
                int n_threads, const floating[:, ::1] u_packed=None, int stages=7):
    """out = conv1d(x, g, dilation d) + bias by Winograd F(mt, 3), mt in {2, 4}.

    x: (N, C_in, L) and out: (N, C_out, OL), C-contiguous, flattened; u: (mt+2, C_out,
    C_in/groups), the transformed filter. The output is tiled in super-tiles of mt*d
    outputs, S = ceil(OL / (mt*d)) per image, reading padded positions 0 .. S*mt*d +
    2*d - 1: position p is input p - lo for lo <= p < lo + L; left (lo,) and right
    (S*mt*d + 2*d - lo - L,) hold the input index at the positions before and after
    (-1: a pad, -2: zero, past the padded extent). A work unit is
    ``chunk`` super-tiles of one image and group; ``work`` has one row of at least
    ``workspace_row_1d(mt, d, cin_g, cout_g, chunk)`` values per thread. ``u_packed``
    (optional, when ``PACKED_VECTOR``): u in ``packed_filter``'s layout; the GEMMs then
    run on pyconv's packed tiles instead of OpenBLAS. ``stages`` (a bit mask of the
    three steps) exists for profiling only.

    Returns True when every output computed (before bias and ReLU) is finite.
    """
    cdef Py_ssize_t C_out = u.shape[1]
    cdef Py_ssize_t cin_g = C_in // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t alpha = mt + 2
    cdef Py_ssize_t md = mt * d
    cdef Py_ssize_t S = (OL + md - 1) // md if md > 0 else 0
    cdef Py_ssize_t n_chunks = (S + chunk - 1) // chunk if chunk > 0 else 0
    cdef Py_ssize_t n_units = N * groups * n_chunks
    cdef Py_ssize_t ldt = chunk * d + PYCONV_W1_SLACK
    cdef Py_ssize_t uu, k, g, img, s0, ns
    cdef Py_ssize_t up_ld = 0
    cdef floating* vbuf = NULL
    cdef floating* mbuf = NULL
    cdef floating* seg = NULL
    cdef floating* panel = NULL
    cdef const floating* bias_ptr = &bias[0] if has_bias else NULL
    cdef unsigned char[::1] finite
    cdef const Py_ssize_t* left_ptr = NULL
    cdef const Py_ssize_t* right_ptr = NULL
    if N == 0 or C_out == 0 or OL == 0:
        return True
    if (mt not in (2, 4) or d < 1 or chunk < 1 or groups < 1 or C_in % groups
            or C_out % groups or u.shape[0] != alpha or u.shape[2] != cin_g
            or lo < 0 or left.shape[0] < lo or right.shape[0] < S * md + 2 * d - lo - L
            or x.shape[0] < N * C_in * L or out.shape[0] < N * C_out * OL
            or (has_bias and bias.shape[0] < C_out)
            or work.shape[1] < workspace_row_1d(mt, d, cin_g, cout_g, chunk)):
        raise ValueError("winograd_1d: inconsistent shapes or tables")
    for k in range(left.shape[0]):
        if left[k] >= L or left[k] < -2:
            raise ValueError("winograd_1d: edge table out of range")
    for k in range(right.shape[0]):
        if right[k] >= L or right[k] < -2:
            raise ValueError("winograd_1d: edge table out of range")
    if u_packed is not None and u_packed.shape[0] > 0:
        up_ld = u_packed.shape[1] // alpha
        if (not PG_VECTOR or u_packed.shape[0] != groups
                or up_ld != (cout_g + PG_MR - 1) // PG_MR * PG_MR * cin_g
                or u_packed.shape[1] != alpha * up_ld):
            raise ValueError("winograd_1d: u_packed of the wrong shape, or no packed GEMM")
    if left.shape[0] > 0:
        left_ptr = &left[0]
    if right.shape[0] > 0:
        right_ptr = &right[0]
    finite = bytearray(n_units)
    with nogil, parallel(num_threads=n_threads):
        vbuf = &work[omp_get_thread_num(), 0]
        mbuf = vbuf + alpha * (cin_g * ldt + SKEW)
        seg = mbuf + alpha * (cout_g * ldt + SKEW)
        panel = seg + chunk * md + 2 * d + PYCONV_W1_SLACK
        for uu in prange(n_units, schedule='static'):
            k = uu % n_chunks
            g = (uu // n_chunks) % groups
            img = uu // (n_chunks * groups)
            s0 = k * chunk
            ns = S - s0 if S - s0 < chunk else chunk
            finite[uu] = unit_1d(&x[(img * C_in + g * cin_g) * L], L, lo, left_ptr,
                                 right_ptr, s0, ns, d, mt, cin_g, cout_g,
                                 &u[0, g * cout_g, 0], C_out * cin_g,
                                 &u_packed[g, 0] if up_ld > 0 else NULL, up_ld,
                                 vbuf, mbuf, seg, panel, ldt,
                                 &out[(img * C_out + g * cout_g) * OL], OL,
                                 bias_ptr + g * cout_g if has_bias else NULL,
                                 pad_value, relu, stages)
    for uu in range(n_units):
        if not finite[uu]:
            return False
    return True


#: Lanes of the 1-D transforms' vector steps in this build, by dtype name: a step
#: covers up to this many tiles of one super-tile, so where the dilation is smaller,
#: lanes / dilation times the work of the tiles it keeps.
TRANSFORM_LANES_1D = {"float32": PYCONV_W1_VWF, "float64": PYCONV_W1_VWD}
#: Whether this build steps through whole super-tiles with permutes where the
#: dilation divides the lanes (the AVX2 and AVX-512 builds, made by GCC): those
#: dilations waste no lanes.
PERMUTED_STEPS_1D = bool(PYCONV_W1_PERM)
