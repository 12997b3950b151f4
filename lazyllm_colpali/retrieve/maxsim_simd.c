/* Fused exact MaxSim on the CPU's dot-product instructions, one pass over the page tokens.
 *
 * For each page: its tokens are read once, a block of 24 at a time, in the stored format (fp16, bf16, fp32,
 * or int8 codes with a per-token fp16 scale); each block is dotted with every query token, whose packed copy
 * stays in L1 and is loaded into registers 8 query tokens per ymm register; the running maximum of every
 * query token stays in registers too. No similarity matrix is ever written. Variants, chosen by the caller
 * among those lcm_variants() reports for this CPU:
 *
 *   ARITH_BF16  AVX-512 BF16 vdpbf16ps: fp16 / fp32 page tokens rounded to bf16 in L1 (vcvtneps2bf16),
 *               bf16 read as stored; fp32 accumulation. Twice the fp32 FMA rate.
 *   ARITH_INT8  AVX-512 VNNI vpdpbusd (unsigned x signed bytes): the page's int8 codes offset by +128 to
 *               unsigned while staged in L1, against the int8-quantised query as is; the offset comes
 *               back as -128 x (sum of the query token's codes), one constant per query token that the
 *               caller computes once. Exact int32 dots, times the page token's scale before the max.
 *               Four times the fp32 FMA rate.
 *   ARITH_FP32  fp32 FMA on tokens widened to float32 (the arithmetic of the numba kernel): AVX-512
 *               (32 registers) or AVX2 + FMA + F16C (16 registers).
 *
 * Any dim up to 1024: a dim that is not a multiple of 16 is staged into zero-padded rows (the query is
 * padded alike by the caller), so the inner loops never need a tail.
 *
 * Threads: the caller runs one call per thread, all sharing an atomic page counter (dynamic scheduling,
 * so a descheduled thread on a busy machine does not hold the others at a barrier). Plain C entry points,
 * called through ctypes (kernel_simd.py), which releases the GIL during the call.
 *
 * The compiler flags are the defaults (no -march): each variant carries its own target attribute, so one
 * build runs everywhere and lcm_variants() says which variants this CPU can run.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

enum { DT_FP16 = 0, DT_BF16 = 1, DT_FP32 = 2, DT_INT8 = 3 };
enum { ARITH_FP32_AVX2 = 0, ARITH_FP32_AVX512 = 1, ARITH_BF16 = 2, ARITH_INT8 = 3 };
enum { BLOCK = 24, MAX_GROUPS = 64, MAX_DIM = 1024 };   /* 24 = lcm of the register blockings below */

int lcm_variants(void) {
    __builtin_cpu_init();
    int v = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        v |= 1 << ARITH_FP32_AVX2;
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                 && __builtin_cpu_supports("avx512bw");
    if (avx512) v |= 1 << ARITH_FP32_AVX512;
    if (avx512 && __builtin_cpu_supports("avx512bf16")) v |= 1 << ARITH_BF16;
    if (avx512 && __builtin_cpu_supports("avx512vnni")) v |= 1 << ARITH_INT8;
    return v;
}

typedef struct {
    const void *tokens;        /* (T, dim) in dtype */
    const uint16_t *scales;    /* int8: fp16 scale per token */
    const int64_t *offsets;    /* page p: rows offsets[p] .. offsets[p+1] */
    const int64_t *pages;      /* which pages, in output order */
    const void *q;             /* packed query, see the Python side (kernel_simd.pack_queries) */
    const float *weights;      /* per query token: 1, or the int8 query scale */
    const int32_t *qbase;      /* int8: per query token, -128 x the sum of its codes (the page offset back) */
    const int64_t *q_starts;   /* query s owns query tokens q_starts[s] .. q_starts[s+1] */
    float *out;                /* (n_queries, n_pages) */
    int64_t *next;             /* shared page counter */
    int64_t n_pages, chunk;
    int32_t dtype, dim, pdim, groups, n_queries;   /* pdim: dim rounded up to 16 (staged rows, query) */
} job_t;

/* Lanes [0, 16) of a 16-wide step at coordinate k that hold coordinates below dim. */
static inline uint32_t lanes16(int dim, int k) {
    int rem = dim - k;
    return rem >= 16 ? 0xFFFFu : rem <= 0 ? 0u : (1u << rem) - 1u;
}

/* The per-page tail: sum of each query's maxima (weighted), written to its column. */
static void finish_page(const job_t *j, const float *best, int64_t n) {
    for (int s = 0; s < j->n_queries; s++) {
        float total = 0.0f;
        for (int64_t i = j->q_starts[s]; i < j->q_starts[s + 1]; i++) total += best[i] * j->weights[i];
        j->out[s * j->n_pages + n] = total;
    }
}

/* Each query token's max over the tile's P tokens into best (G registers of 8 query tokens). */
#define FOLD_MAX(acc, best, G, P)                                                             \
    for (int g = 0; g < (G); g++) {                                                           \
        __m256 m_ = (acc)[g];                                                                 \
        for (int p = 1; p < (P); p++) m_ = _mm256_max_ps(m_, (acc)[p * (G) + g]);             \
        (best)[g] = _mm256_max_ps((best)[g], m_);                                             \
    }

/* acc += a * b in one vfmadd231ps: through the FMA intrinsic GCC 12 stored every accumulator of the AVX-512
 * tile to the stack after each FMA (one store per FMA, measured at half the AVX2 tile's rate). */
#define FMA_PS(acc, a, b) __asm__("vfmadd231ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

/* fp32 FMA tile: P page tokens (float32 rows of dim) against G registers of 8 query tokens; defined once,
 * compiled in the AVX2 and the AVX-512 sections (N_ACC: the accumulators their register files hold). */
#define DEFINE_F32_TILE(NAME, N_ACC)                                                          \
static inline __attribute__((always_inline))                                                  \
void NAME(const float *tok, int dim, const float *q, int gstride, __m256 *best, int G, int P) { \
    __m256 acc[N_ACC];                                                                        \
    for (int a = 0; a < G * P; a++) acc[a] = _mm256_setzero_ps();                            \
    for (int k = 0; k < dim; k++) {                                                           \
        const float *qk = q + (size_t)k * gstride;                                            \
        __m256 qv[4];                                                                         \
        for (int g = 0; g < G; g++) qv[g] = _mm256_loadu_ps(qk + 8 * g);                     \
        for (int p = 0; p < P; p++) {                                                         \
            __m256 b = _mm256_broadcast_ss(tok + (size_t)p * dim + k);                        \
            for (int g = 0; g < G; g++) FMA_PS(acc[p * G + g], qv[g], b);                     \
        }                                                                                     \
    }                                                                                         \
    FOLD_MAX(acc, best, G, P)                                                                 \
}

/* The page loop every variant shares: take chunks of pages from the shared counter; per page, reset the
 * maxima, run BLOCK_STMT on each block of rows [r, r + m), then write the page's scores. */
#define PAGE_LOOP(j, buf, best, ...)                                                          \
    int64_t start_;                                                                           \
    while ((buf) && (start_ = __atomic_fetch_add((j)->next, (j)->chunk, __ATOMIC_RELAXED)) < (j)->n_pages) { \
        int64_t stop_ = start_ + (j)->chunk < (j)->n_pages ? start_ + (j)->chunk : (j)->n_pages; \
        for (int64_t n = start_; n < stop_; n++) {                                            \
            int64_t p_ = (j)->pages[n], a_ = (j)->offsets[p_], e_ = (j)->offsets[p_ + 1];     \
            for (int i = 0; i < (j)->groups * 8; i++) (best)[i] = -INFINITY;                  \
            for (int64_t r = a_; r < e_; r += BLOCK) {                                        \
                int m = e_ - r < BLOCK ? (int)(e_ - r) : BLOCK;                               \
                __VA_ARGS__;                                                                  \
            }                                                                                 \
            finish_page((j), (best), n);                                                      \
        }                                                                                     \
    }

/* ------------------------------------------------------------------------------------------------------ */
/* fp32 FMA, AVX2 (16 registers: G groups x P tokens accumulators + G query registers + 1 broadcast)      */

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

DEFINE_F32_TILE(avx2_tile, 12)

static void avx2_block(const float *tok, int n_tok, int dim, const float *q, int groups, float *best) {
    int gstride = groups * 8;
    for (int g0 = 0; g0 < groups; g0 += 4) {
        int G = groups - g0 < 4 ? groups - g0 : 4;
        __m256 b[4];
        for (int g = 0; g < G; g++) b[g] = _mm256_loadu_ps(best + 8 * (g0 + g));
        const float *qg = q + 8 * g0;
        switch (G) {   /* P: the most tokens whose accumulators fit beside G query registers */
        case 1: for (int p = 0; p < n_tok; p += 12) avx2_tile(tok + (size_t)p * dim, dim, qg, gstride, b, 1, 12); break;
        case 2: for (int p = 0; p < n_tok; p += 6) avx2_tile(tok + (size_t)p * dim, dim, qg, gstride, b, 2, 6); break;
        case 3: for (int p = 0; p < n_tok; p += 4) avx2_tile(tok + (size_t)p * dim, dim, qg, gstride, b, 3, 4); break;
        default: for (int p = 0; p < n_tok; p += 3) avx2_tile(tok + (size_t)p * dim, dim, qg, gstride, b, 4, 3); break;
        }
        for (int g = 0; g < G; g++) _mm256_storeu_ps(best + 8 * (g0 + g), b[g]);
    }
}

/* Widen rows [r, r + m) to float32 into buf (BLOCK rows of pdim, zero past dim), repeating row r past m (a
 * repeat changes no max). */
static void avx2_widen(const job_t *j, int64_t r, int m, float *buf) {
    int dim = j->dim, full = dim & ~7;
    for (int i = 0; i < BLOCK; i++) {
        int64_t row = r + (i < m ? i : 0);
        float *dst = buf + (size_t)i * j->pdim;
        if (j->dtype == DT_FP16) {
            const uint16_t *src = (const uint16_t *)j->tokens + row * dim;
            for (int k = 0; k < full; k += 8)
                _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + k))));
            for (int k = full; k < dim; k++) dst[k] = _cvtsh_ss(src[k]);
        } else if (j->dtype == DT_BF16) {
            const uint16_t *src = (const uint16_t *)j->tokens + row * dim;
            for (int k = 0; k < dim; k++) {
                uint32_t bits = (uint32_t)src[k] << 16;
                memcpy(dst + k, &bits, 4);
            }
        } else {
            memcpy(dst, (const float *)j->tokens + row * dim, sizeof(float) * dim);
        }
        memset(dst + dim, 0, sizeof(float) * (j->pdim - dim));
    }
}

static void run_fp32_avx2(const job_t *j) {
    float *buf = aligned_alloc(64, sizeof(float) * BLOCK * MAX_DIM);
    float best[MAX_GROUPS * 8];
    PAGE_LOOP(j, buf, best, avx2_widen(j, r, m, buf);
                            avx2_block(buf, m, j->pdim, (const float *)j->q, j->groups, best))
    free(buf);
}
#pragma GCC pop_options

/* ------------------------------------------------------------------------------------------------------ */
/* AVX-512 (VL/BW): 32 registers; fp32 FMA, bf16 dot products, int8 dot products                          */

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx512vnni")

/* The dot-product instructions through inline asm: GCC 12 wraps each intrinsic call on an accumulator array in
 * register copies and stack spills (measured 2-3x slower); "+v" keeps the accumulator in its register. AT&T
 * operand order: second source (the broadcast page token), first source (the query), accumulator. */
static inline __attribute__((always_inline)) __m256i dpbusd(__m256i acc, __m256i u8, __m256i s8) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
    return acc;
}

static inline __attribute__((always_inline)) __m256 dpbf16(__m256 acc, __m256bh a, __m256bh b) {
    __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

/* Register blocking for G query groups: P tokens, G * P accumulators + G query registers <= 28. */
#define FOR_BLOCKING(G, CALL) \
    switch (G) { case 1: CALL(1, 12); break; case 2: CALL(2, 12); break; case 3: CALL(3, 8); break; \
                 default: CALL(4, 6); break; }

DEFINE_F32_TILE(f32_tile, 24)

/* bf16 pairs: tok and q hold 32-bit (even, odd) bf16 pairs; dim2 = dim / 2 pairs per token. */
static inline __attribute__((always_inline))
void bf16_tile(const uint32_t *tok, int dim2, const uint32_t *q, int gstride, __m256 *best, int G, int P) {
    __m256 acc[24];
    for (int a = 0; a < G * P; a++) acc[a] = _mm256_setzero_ps();
    for (int k = 0; k < dim2; k++) {
        const uint32_t *qk = q + (size_t)k * gstride;
        __m256bh qv[4];
        for (int g = 0; g < G; g++) qv[g] = (__m256bh)_mm256_loadu_si256((const __m256i *)(qk + 8 * g));
        for (int p = 0; p < P; p++) {
            __m256bh b = (__m256bh)_mm256_set1_epi32((int)tok[(size_t)p * dim2 + k]);
            for (int g = 0; g < G; g++) acc[p * G + g] = dpbf16(acc[p * G + g], qv[g], b);
        }
    }
    FOLD_MAX(acc, best, G, P)
}

/* int8: tok holds 4-byte groups of the page's codes + 128 (unsigned), q the query's signed codes; dim4 = dim / 4
 * groups per token; qb[g] = -128 x (sum of each query token's codes) takes the offset back, scale[p] is page
 * token p's fp32 scale. */
static inline __attribute__((always_inline))
void int8_tile(const uint32_t *tok, int dim4, const uint32_t *q, int gstride, const __m256i *qb,
               const float *scale, __m256 *best, int G, int P) {
    __m256i acc[24];
    for (int p = 0; p < P; p++)
        for (int g = 0; g < G; g++) acc[p * G + g] = qb[g];
    for (int k = 0; k < dim4; k++) {
        const uint32_t *qk = q + (size_t)k * gstride;
        __m256i qv[4];
        for (int g = 0; g < G; g++) qv[g] = _mm256_loadu_si256((const __m256i *)(qk + 8 * g));
        for (int p = 0; p < P; p++) {
            __m256i b = _mm256_set1_epi32((int)tok[(size_t)p * dim4 + k]);
            for (int g = 0; g < G; g++) acc[p * G + g] = dpbusd(acc[p * G + g], b, qv[g]);
        }
    }
    for (int g = 0; g < G; g++) {
        __m256 m = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[g]), _mm256_set1_ps(scale[0]));
        for (int p = 1; p < P; p++)
            m = _mm256_max_ps(m, _mm256_mul_ps(_mm256_cvtepi32_ps(acc[p * G + g]), _mm256_set1_ps(scale[p])));
        best[g] = _mm256_max_ps(best[g], m);
    }
}

/* One block of n_tok (<= BLOCK, padded to BLOCK) tokens against every query group, 4 groups at a time. */
static void avx512_block(int arith, const void *tok, int n_tok, int dim, const void *q, int groups,
                         const int32_t *qbase, const float *scale, float *best) {
    int gstride = groups * 8;   /* elements (floats or 32-bit pairs / quads) per k step of the packed query */
    for (int g0 = 0; g0 < groups; g0 += 4) {
        int G = groups - g0 < 4 ? groups - g0 : 4;
        __m256 b[4];
        for (int g = 0; g < G; g++) b[g] = _mm256_loadu_ps(best + 8 * (g0 + g));
        if (arith == ARITH_FP32_AVX512) {
            const float *t = tok, *qg = (const float *)q + 8 * g0;
#define CALL(GG, PP) for (int p = 0; p < n_tok; p += PP) f32_tile(t + (size_t)p * dim, dim, qg, gstride, b, GG, PP)
            FOR_BLOCKING(G, CALL)
#undef CALL
        } else if (arith == ARITH_BF16) {
            const uint32_t *t = tok, *qg = (const uint32_t *)q + 8 * g0;
            int d2 = dim / 2;
#define CALL(GG, PP) for (int p = 0; p < n_tok; p += PP) bf16_tile(t + (size_t)p * d2, d2, qg, gstride, b, GG, PP)
            FOR_BLOCKING(G, CALL)
#undef CALL
        } else {
            const uint32_t *t = tok, *qg = (const uint32_t *)q + 8 * g0;
            int d4 = dim / 4;
            __m256i qb[4];
            for (int g = 0; g < G; g++) qb[g] = _mm256_loadu_si256((const __m256i *)(qbase + 8 * (g0 + g)));
#define CALL(GG, PP) for (int p = 0; p < n_tok; p += PP) \
                int8_tile(t + (size_t)p * d4, d4, qg, gstride, qb, scale + p, b, GG, PP)
            FOR_BLOCKING(G, CALL)
#undef CALL
        }
        for (int g = 0; g < G; g++) _mm256_storeu_ps(best + 8 * (g0 + g), b[g]);
    }
}

/* Stage rows [r, r + m) for the arithmetic into buf (BLOCK rows of pdim, zero past dim; row r repeated past
 * m). Returns the rows to score: buf, or the stored rows themselves when they are already in the
 * arithmetic's format and shape. int8 rows are always staged (offset to unsigned, zero past dim: a zero
 * byte adds nothing, whatever the query holds there) and fill scale per row. */
static const void *avx512_stage(const job_t *j, int arith, int64_t r, int m, void *buf, float *scale) {
    int dim = j->dim, pdim = j->pdim, direct = m == BLOCK && dim == pdim;
    if (arith == ARITH_INT8) {
        const int8_t *codes = (const int8_t *)j->tokens;
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        for (int i = 0; i < BLOCK; i++) {
            int64_t row = r + (i < m ? i : 0);
            const int8_t *src = codes + row * dim;
            uint8_t *dst = (uint8_t *)buf + (size_t)i * pdim;
            for (int k = 0; k < pdim; k += 64) {
                __mmask64 in = dim - k >= 64 ? ~0ULL : dim <= k ? 0ULL : (1ULL << (dim - k)) - 1;
                __mmask64 out = pdim - k >= 64 ? ~0ULL : (1ULL << (pdim - k)) - 1;
                __m512i c = _mm512_maskz_mov_epi8(in, _mm512_xor_si512(_mm512_maskz_loadu_epi8(in, src + k), flip));
                _mm512_mask_storeu_epi8(dst + k, out, c);
            }
            scale[i] = _cvtsh_ss(j->scales[row]);
        }
        return buf;
    }
    if (direct && arith == ARITH_BF16 && j->dtype == DT_BF16) return (const uint16_t *)j->tokens + r * dim;
    if (direct && arith == ARITH_FP32_AVX512 && j->dtype == DT_FP32) return (const float *)j->tokens + r * dim;
    for (int i = 0; i < BLOCK; i++) {
        int64_t row = r + (i < m ? i : 0);
        for (int k = 0; k < pdim; k += 16) {
            __mmask16 in = (__mmask16)lanes16(dim, k);
            __m512 x;
            if (j->dtype == DT_FP16) {
                x = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(in, (const uint16_t *)j->tokens + row * dim + k));
            } else if (j->dtype == DT_BF16) {
                __m256i w = _mm256_maskz_loadu_epi16(in, (const uint16_t *)j->tokens + row * dim + k);
                x = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(w), 16));
            } else {
                x = _mm512_maskz_loadu_ps(in, (const float *)j->tokens + row * dim + k);
            }
            if (arith == ARITH_BF16)   /* round to nearest even; bf16 input comes back unchanged */
                _mm256_storeu_si256((__m256i *)((uint16_t *)buf + (size_t)i * pdim + k),
                                    (__m256i)_mm512_cvtneps_pbh(x));
            else
                _mm512_storeu_ps((float *)buf + (size_t)i * pdim + k, x);
        }
    }
    return buf;
}

static void run_avx512(const job_t *j, int arith) {
    void *buf = aligned_alloc(64, sizeof(float) * BLOCK * MAX_DIM);
    float best[MAX_GROUPS * 8];
    float scale[BLOCK];
    PAGE_LOOP(j, buf, best, const void *rows = avx512_stage(j, arith, r, m, buf, scale);
                            avx512_block(arith, rows, m, j->pdim, j->q, j->groups, j->qbase, scale, best))
    free(buf);
}
#pragma GCC pop_options

/* ------------------------------------------------------------------------------------------------------ */

/* Score pages until the shared counter runs out. Returns 0, or -1 for arguments this build cannot take
 * (checked before any work: the caller then uses another path). */
int lcm_maxsim(int arith, int dtype, const void *tokens, const uint16_t *scales, const int64_t *offsets,
               const int64_t *pages, int64_t n_pages, const void *q, int groups, const float *weights,
               const int32_t *qbase, const int64_t *q_starts, int n_queries, int dim, float *out, int64_t *next,
               int64_t chunk) {
    int pdim = (dim + 15) & ~15;
    if (arith < 0 || arith > ARITH_INT8 || !(lcm_variants() >> arith & 1) || groups < 1 || groups > MAX_GROUPS
        || dim < 1 || pdim > MAX_DIM || chunk < 1 || dtype < DT_FP16 || dtype > DT_INT8
        || (arith == ARITH_INT8) != (dtype == DT_INT8) || (dtype == DT_INT8 && !(scales && qbase)))
        return -1;
    job_t j = {tokens, scales, offsets, pages, q, weights, qbase, q_starts, out, next, n_pages, chunk,
               dtype, dim, pdim, groups, n_queries};
    if (arith == ARITH_FP32_AVX2) run_fp32_avx2(&j);
    else run_avx512(&j, arith);
    return 0;
}
