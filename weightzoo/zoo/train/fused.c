/* Fused CPU kernels of the vectorized trainer's dense path (see fused.py).
 *
 * Each kernel does in one pass over memory what the PyTorch path does in several (bias add +
 * ReLU; ReLU derivative + bias gradient; bias + softmax + cross-entropy gradient + bias
 * gradient; Adam / SGD with per-member learning rates and weight decay). Members are
 * independent: every loop over members is split across OpenMP threads (PyTorch's own OpenMP
 * runtime, which is already loaded) and nothing a member computes depends on the others or on
 * the number of threads. All tensors are contiguous float32 (int64 for indices).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* exp(x) for float32, vectorizable: x = k ln2 + r, |r| <= ln2/2, exp(r) by its Taylor series to
 * degree 7 (relative error below 2e-8 on that interval), 2^k through the exponent bits. */
static inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x); /* ternaries vectorize; fminf/fmaxf do not */
    float k = rintf(x * 1.44269504088896341f);
    float r = fmaf(k, -0.693145751953125f, x); /* ln2 split in two parts: the product is exact */
    r = fmaf(k, -1.42860682030941723e-6f, r);
    float p = 1.98412698412698413e-4f;
    p = fmaf(p, r, 1.38888888888888889e-3f);
    p = fmaf(p, r, 8.33333333333333333e-3f);
    p = fmaf(p, r, 4.16666666666666667e-2f);
    p = fmaf(p, r, 1.66666666666666667e-1f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    int32_t bits;
    memcpy(&bits, &p, sizeof bits);
    bits += (int32_t)k << 23; /* multiply by 2^k: add k to the exponent */
    memcpy(&p, &bits, sizeof bits);
    return p;
}

/* Chris Wellons' lowbias32 hash, as randomness.hash32_ computes it with int32 tensor ops. */
static inline uint32_t lowbias32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* The inverted-dropout factor of counter i under member key k: s if float32(int32(lowbias32(k + i))) > t,
 * else 0 (randomness.dropout_factors_ on the hashed counters, bit for bit). */
static inline float dropout_factor(uint32_t k, uint32_t i, float t, float s) {
    return (float)(int32_t)lowbias32(k + i) > t ? s : 0.0f;
}

/* Inverted dropout of h [n, rows, f] into out, the factors into factors: element (m, r, j) is kept,
 * with factor scale[m], when float32(int32(lowbias32(key[m] + r * f + j))) > threshold[m]; else 0.
 * The same masks as randomness.dropout_factors_ on the hashed counters (bit for bit). */
void dropout(const float *h, float *out, float *factors, const int32_t *key, const float *threshold,
             const float *scale, int64_t n, int64_t rows, int64_t f) {
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < n; m++) {
        const uint32_t k = (uint32_t)key[m];
        const float t = threshold[m], s = scale[m];
        const int64_t base = m * rows * f;
#pragma omp simd
        for (int64_t i = 0; i < rows * f; i++) {
            float factor = dropout_factor(k, (uint32_t)i, t, s);
            factors[base + i] = factor;
            out[base + i] = h[base + i] * factor;
        }
    }
}

/* z[m, r, :] = relu(z[m, r, :] + b[m, :]) for z [n, rows, f] (batch-major), in place. */
void bias_relu(float *z, const float *b, int64_t n, int64_t rows, int64_t f) {
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < n; m++) {
        const float *bm = b + m * f;
        for (int64_t r = 0; r < rows; r++) {
            float *zr = z + (m * rows + r) * f;
#pragma omp simd
            for (int64_t j = 0; j < f; j++) {
                float v = zr[j] + bm[j];
                zr[j] = v > 0.0f ? v : 0.0f;
            }
        }
    }
}

/* g[m, r, :] *= (y[m, r, :] > 0) for the ReLU outputs y (and by the dropout factors d, if given),
 * and gb[m, :] = sum over r of g[m, r, :]. */
void relu_grad_bias(float *g, const float *y, const float *d, float *gb, int64_t n, int64_t rows, int64_t f) {
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < n; m++) {
        float *acc = gb + m * f;
        memset(acc, 0, (size_t)f * sizeof(float));
        for (int64_t r = 0; r < rows; r++) {
            float *gr = g + (m * rows + r) * f;
            const float *yr = y + (m * rows + r) * f, *dr = d ? d + (m * rows + r) * f : NULL;
#pragma omp simd
            for (int64_t j = 0; j < f; j++) {
                float v = yr[j] > 0.0f ? (dr ? gr[j] * dr[j] : gr[j]) : 0.0f;
                gr[j] = v;
                acc[j] += v;
            }
        }
    }
}

/* One member's cross-entropy gradient, in place on feature-major logits zm [c, batch] (bias bm [c] not
 * yet added, or NULL): g = (softmax over c of (zm + bm) - onehot(label)) * weight; gbm[k] = sum of
 * g[k, :] if gbm is given. Labels are y[idx[i]]; the weight of sample i is wm[i] if wm is given, else
 * ws. scratch holds 4 * batch floats. */
static void xent_member(float *restrict zm, const float *bm, const int64_t *y, const int64_t *idx, const float *wm,
                        float ws, float *gbm, int64_t c, int64_t batch, float *scratch) {
    float *restrict top = scratch, *restrict sum = scratch + batch;
    float *restrict weight = scratch + 2 * batch, *restrict label = scratch + 3 * batch;
    for (int64_t i = 0; i < batch; i++) {
        top[i] = -INFINITY;
        sum[i] = 0.0f;
        weight[i] = wm ? wm[i] : ws;
        label[i] = (float)y[idx[i]];
    }
    for (int64_t k = 0; k < c; k++) {
        float *restrict zk = zm + k * batch;
        const float bias = bm ? bm[k] : 0.0f;
#pragma omp simd
        for (int64_t i = 0; i < batch; i++) {
            float v = zk[i] + bias;
            zk[i] = v;
            top[i] = v > top[i] ? v : top[i];
        }
    }
    for (int64_t k = 0; k < c; k++) {
        float *restrict zk = zm + k * batch;
#pragma omp simd
        for (int64_t i = 0; i < batch; i++) {
            float e = exp_f32(zk[i] - top[i]);
            zk[i] = e;
            sum[i] += e;
        }
    }
#pragma omp simd
    for (int64_t i = 0; i < batch; i++) sum[i] = weight[i] / sum[i];
    for (int64_t k = 0; k < c; k++) {
        float *restrict zk = zm + k * batch, acc = 0.0f;
        const float kf = (float)k;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < batch; i++) {
            float v = zk[i] * sum[i] - (label[i] == kf ? weight[i] : 0.0f);
            zk[i] = v;
            acc += v;
        }
        if (gbm) gbm[k] = acc;
    }
}

/* Cross-entropy gradient of feature-major logits z [n, c, batch] (bias b [n, c] not yet added):
 * g = (softmax over c of (z + b) - onehot(label)) * weight, written over z; gb[m, k] = sum of g[m, k, :].
 * Labels are y[index[m, i]]; the weight is w[m, i] if w is given, else the scalar ws. */
void softmax_xent_grad(float *z, const float *b, const int64_t *y, const int64_t *index, const float *w, float ws,
                       float *gb, int64_t n, int64_t c, int64_t batch) {
#pragma omp parallel
    {
        float *scratch = malloc((size_t)(4 * batch) * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t m = 0; m < n; m++)
            xent_member(z + m * c * batch, b ? b + m * c : NULL, y, index + m * batch, w ? w + m * batch : NULL, ws,
                        gb ? gb + m * c : NULL, c, batch, scratch);
        free(scratch);
    }
}

/* Adam (decoupled = 0, L2 weight decay added to the gradient) or AdamW (decoupled = 1) on rows of
 * parameters p [rows, width], as torch.optim computes it: row r has learning rate lr[r] and weight
 * decay wd[r]; bc1 = 1 - beta1^t, bc2_sqrt = sqrt(1 - beta2^t). */
void adam_rows(float *p, const float *g, float *m1, float *m2, int64_t rows, int64_t width, const float *lr,
               const float *wd, int decoupled, float beta1, float beta2, float eps, float bc1, float bc2_sqrt) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *pr = p + r * width, *ar = m1 + r * width, *vr = m2 + r * width;
        const float *gr = g + r * width;
        float l2 = decoupled ? 0.0f : wd[r], shrink = decoupled ? 1.0f - lr[r] * wd[r] : 1.0f;
        float step = lr[r] / bc1;
#pragma omp simd
        for (int64_t j = 0; j < width; j++) {
            float grad = fmaf(l2, pr[j], gr[j]);
            float a = fmaf(1.0f - beta1, grad - ar[j], ar[j]);
            float v = fmaf(1.0f - beta2, grad * grad, beta2 * vr[j]);
            ar[j] = a;
            vr[j] = v;
            pr[j] = pr[j] * shrink - step * a / (sqrtf(v) / bc2_sqrt + eps);
        }
    }
}

/* SGD with L2 weight decay, with momentum (buf not NULL: buf = momentum * buf + grad) or without. */
void sgd_rows(float *p, const float *g, float *buf, int64_t rows, int64_t width, const float *lr, const float *wd,
              float momentum) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *pr = p + r * width, *br = buf ? buf + r * width : NULL;
        const float *gr = g + r * width;
        float l2 = wd[r], rate = lr[r];
        if (br) {
#pragma omp simd
            for (int64_t j = 0; j < width; j++) {
                float d = fmaf(momentum, br[j], fmaf(l2, pr[j], gr[j]));
                br[j] = d;
                pr[j] -= rate * d;
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < width; j++) pr[j] -= rate * fmaf(l2, pr[j], gr[j]);
        }
    }
}

/* Each member's training order for one epoch (randomness.epoch_order): its positions p < sizes[m] sorted
 * by lowbias32(keys[m] + p) read as a signed int32, ties by p (a stable LSD radix sort, digits of 11, 11
 * and 10 bits), mapped through the member's subset row (subsets [n, ld] ascending, or NULL: the positions
 * are the samples) into out[s, m, b] (int64 [steps, n, batch]) at p = s * batch + b; index 0 past the
 * member's size. Returns 1, or 0 if a thread could not allocate its buffers. */
int epoch_order(int64_t n, int64_t steps, int64_t batch, const int32_t *keys, const int64_t *sizes,
                const int64_t *subsets, int64_t ld, int64_t *out) {
    const int64_t length = steps * batch;
    int ok = 1;
#pragma omp parallel reduction(min : ok)
    {
        uint32_t *buf = malloc((size_t)(4 * length) * sizeof(uint32_t)), *counts = malloc(3 * 2048 * sizeof(uint32_t));
        ok = buf != NULL && counts != NULL;
#pragma omp for schedule(static)
        for (int64_t m = 0; m < n; m++) {
            if (!ok) continue;
            uint32_t *key = buf, *pos = buf + length, *key2 = buf + 2 * length, *pos2 = buf + 3 * length;
            const int64_t size = sizes[m] < length ? sizes[m] : length;
            memset(counts, 0, 3 * 2048 * sizeof(uint32_t));
            for (int64_t p = 0; p < size; p++) {
                const uint32_t k = lowbias32((uint32_t)keys[m] + (uint32_t)p) ^ 0x80000000u; /* signed order */
                key[p] = k, pos[p] = (uint32_t)p;
                counts[k & 2047]++, counts[2048 + ((k >> 11) & 2047)]++, counts[4096 + (k >> 22)]++;
            }
            for (int d = 0; d < 3; d++) {
                uint32_t *start = counts + 2048 * d, total = 0;
                for (int v = 0; v < 2048; v++) {
                    const uint32_t c = start[v];
                    start[v] = total, total += c;
                }
                for (int64_t p = 0; p < size; p++) {
                    const uint32_t at = start[(key[p] >> (11 * d)) & 2047]++;
                    key2[at] = key[p], pos2[at] = pos[p];
                }
                uint32_t *swap = key;
                key = key2, key2 = swap, swap = pos, pos = pos2, pos2 = swap;
            }
            for (int64_t s = 0, p = 0; s < steps; s++) {
                int64_t *row = out + (s * n + m) * batch;
                for (int64_t b = 0; b < batch; b++, p++)
                    row[b] = p >= size ? 0 : subsets ? subsets[m * ld + pos[p]] : (int64_t)pos[p];
            }
        }
        free(buf);
        free(counts);
    }
    return ok;
}

/* ------------------------------------------------------------------ whole steps of MLP classifiers
 *
 * mlp_step does forward, softmax cross-entropy gradient and backward of each member in one go, its
 * activations held in per-thread buffers that stay in cache; the batched matmuls of the PyTorch path
 * instead stream every activation through memory between passes. mlp_eval runs the same forward pass
 * for the checkpoint metrics. The matmuls are small register-blocked kernels (AVX-512, or AVX2 + FMA,
 * where the compiler targets them, else plain loops); feature counts are padded to a multiple of VL
 * floats with zeros, so every kernel works on whole vectors. */

#define VL 16 /* feature counts are padded to a multiple of VL floats */
#define MR 16 /* the most rows of a register tile */

static inline int64_t padded(int64_t d) { return (d + VL - 1) / VL * VL; }

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#ifdef __AVX512F__
#define KERNEL_ISA 2
typedef __m512 vec;
#define LANES 16
#define MAX_NV 3 /* 32 registers: tiles of 16 x 1, 12 x 2 or 8 x 3 vectors of VL floats */
static const int TILE_ROWS_FOR[MAX_NV + 1] = {0, 16, 12, 8};
#define vzero _mm512_setzero_ps
#define vset1 _mm512_set1_ps
#define vload _mm512_loadu_ps
#define vstore _mm512_storeu_ps
#define vfma _mm512_fmadd_ps
#else
#define KERNEL_ISA 1
typedef __m256 vec;
#define LANES 8
#define MAX_NV 1 /* 16 registers: tiles of 6 rows x VL floats (two registers each) */
static const int TILE_ROWS_FOR[MAX_NV + 1] = {0, 6};
#define vzero _mm256_setzero_ps
#define vset1 _mm256_set1_ps
#define vload _mm256_loadu_ps
#define vstore _mm256_storeu_ps
#define vfma _mm256_fmadd_ps
#endif
#define SUB (VL / LANES) /* registers per VL floats */

/* C[r, :nv*VL] = sum over k < K of A[r*am + k*ak] * B[k*ldb + :nv*VL] for r < mr, accumulated in
 * mr x nv*SUB registers (constant after inlining: the compiler unrolls the loops). */
static inline __attribute__((always_inline)) void tile(const int mr, const int nv, int64_t K, const float *A,
                                                       int64_t am, int64_t ak, const float *B, int64_t ldb,
                                                       float *C, int64_t ldc) {
    vec acc[MR][MAX_NV * SUB];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv * SUB; v++) acc[r][v] = vzero();
    for (int64_t k = 0; k < K; k++) {
        vec b[MAX_NV * SUB];
        for (int v = 0; v < nv * SUB; v++) b[v] = vload(B + k * ldb + v * LANES);
        for (int r = 0; r < mr; r++) {
            const vec a = vset1(A[r * am + k * ak]);
            for (int v = 0; v < nv * SUB; v++) acc[r][v] = vfma(a, b[v], acc[r][v]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv * SUB; v++) vstore(C + r * ldc + v * LANES, acc[r][v]);
}

#define TILE(mr, nv)                                                                                               \
    case mr: tile(mr, nv, K, A, am, ak, B, ldb, C, ldc); break;
#define TILE_ROWS(nv)                                                                                              \
    switch (mr) {                                                                                                  \
        TILE(16, nv) TILE(12, nv) TILE(8, nv) TILE(6, nv) TILE(4, nv) TILE(2, nv) TILE(1, nv)                      \
    }

static void tile_any(int mr, int nv, int64_t K, const float *A, int64_t am, int64_t ak, const float *B, int64_t ldb,
                     float *C, int64_t ldc) {
#if MAX_NV == 3
    if (nv == 3) {
        TILE_ROWS(3)
        return;
    }
    if (nv == 2) {
        TILE_ROWS(2)
        return;
    }
#else
    (void)nv; /* always 1 */
#endif
    TILE_ROWS(1)
}
#else
#define KERNEL_ISA 0
#define MAX_NV 1
static const int TILE_ROWS_FOR[MAX_NV + 1] = {0, 8};

static void tile_any(int mr, int nv, int64_t K, const float *A, int64_t am, int64_t ak, const float *B, int64_t ldb,
                     float *C, int64_t ldc) {
    for (int r = 0; r < mr; r++) {
        float *restrict cr = C + r * ldc;
        for (int64_t j = 0; j < nv * VL; j++) cr[j] = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const float a = A[r * am + k * ak], *restrict bk = B + k * ldb;
#pragma omp simd
            for (int64_t j = 0; j < nv * VL; j++) cr[j] = fmaf(a, bk[j], cr[j]);
        }
    }
}
#endif

/* Which register tiles the matmuls were compiled with (fused.ISAS): 2 AVX-512, 1 AVX2 + FMA, 0 plain loops.
 * Trained parameters depend on it (the tiles' summation order), so it is part of the numeric path. */
int kernel_isa(void) { return KERNEL_ISA; }

/* C[m, :np] = sum over k < K of A[m*am + k*ak] * B[k*ldb + :np] for m < M; np a multiple of VL. */
static void gemm(int64_t M, int64_t np, int64_t K, const float *A, int64_t am, int64_t ak, const float *B,
                 int64_t ldb, float *C, int64_t ldc) {
    const int64_t vecs = np / VL;
    for (int64_t v0 = 0; v0 < vecs;) {
        const int64_t left = vecs - v0;
        const int nv = left == 4 && MAX_NV == 3 ? 2 : (int)(left < MAX_NV ? left : MAX_NV), rows = TILE_ROWS_FOR[nv];
        for (int64_t m0 = 0, mr; m0 < M; m0 += mr) {
            mr = M - m0 < rows ? M - m0 : rows;
            /* the row counts TILE_ROWS instantiates */
            mr = mr >= 16 ? 16 : mr >= 12 ? 12 : mr >= 8 ? 8 : mr >= 6 ? 6 : mr >= 4 ? 4 : mr >= 2 ? 2 : 1;
            tile_any((int)mr, nv, K, A + m0 * am, am, ak, B + v0 * VL, ldb, C + m0 * ldc + v0 * VL, ldc);
        }
        v0 += nv;
    }
}

/* w [rows, cols] into out [cols, ld] transposed (transpose = 1) or [rows, ld] as is, zero-padded to ld. */
static void pack(const float *restrict w, int64_t rows, int64_t cols, int transpose, float *restrict out, int64_t ld) {
    const int64_t outer = transpose ? cols : rows, inner = transpose ? rows : cols;
    for (int64_t o = 0; o < outer; o++) {
        float *restrict row = out + o * ld;
        for (int64_t i = 0; i < inner; i++) row[i] = transpose ? w[i * cols + o] : w[o * cols + i];
        for (int64_t i = inner; i < ld; i++) row[i] = 0.0f;
    }
}

/* Hidden activations of mlp_step (codes: MLP_ACTIVATIONS in fused.py): tanh, sigmoid and GELU through
 * exp_f32 and erf_f32, within a few 1e-7 of PyTorch's. */
enum { ACT_RELU = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_GELU = 3 };

/* erf(x) for float32 given exp(-x^2), vectorizable: Abramowitz & Stegun 7.1.26 (absolute error below
 * 1.5e-7). */
static inline float erf_f32(float x, float exp_minus_x2) {
    const float ax = x < 0.0f ? -x : x, t = 1.0f / fmaf(0.3275911f, ax, 1.0f);
    float p = 1.061405429f;
    p = fmaf(p, t, -1.453152027f);
    p = fmaf(p, t, 1.421413741f);
    p = fmaf(p, t, -0.284496736f);
    p = fmaf(p, t, 0.254829592f);
    const float e = 1.0f - p * t * exp_minus_x2;
    return x < 0.0f ? -e : e;
}

/* y[i, j] = act(z[i, j] + b[j]) in place, rows i < batch of stride ld, units j < d; GELU also keeps its
 * derivative in deriv (the others' derivatives follow from their outputs). */
static void bias_act(float *restrict z, float *restrict deriv, const float *restrict b, int act, int64_t batch,
                     int64_t d, int64_t ld) {
    for (int64_t i = 0; i < batch; i++) {
        float *restrict row = z + i * ld, *restrict dr = deriv + i * ld;
        if (act == ACT_RELU) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) row[j] = row[j] + b[j] > 0.0f ? row[j] + b[j] : 0.0f;
        } else if (act == ACT_TANH) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) row[j] = 1.0f - 2.0f / (exp_f32(2.0f * (row[j] + b[j])) + 1.0f);
        } else if (act == ACT_SIGMOID) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) row[j] = 1.0f / (1.0f + exp_f32(-(row[j] + b[j])));
        } else {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) { /* GELU(v) = v cdf(v); GELU'(v) = cdf(v) + v pdf(v) */
                const float v = row[j] + b[j], gauss = exp_f32(-0.5f * v * v);
                const float cdf = 0.5f * (1.0f + erf_f32(v * 0.70710678118654752f, gauss));
                dr[j] = fmaf(v * 0.39894228040143268f, gauss, cdf); /* pdf = exp(-v^2/2) / sqrt(2 pi) */
                row[j] = v * cdf;
            }
        }
    }
}

/* g *= f (the dropout factors, if f), then g *= act'(z): from the output y as PyTorch's threshold/tanh/
 * sigmoid_backward compute it, or GELU's saved deriv; gb[j] = sum over i of g[i, j]. */
static void act_backward(float *restrict g, const float *restrict y, const float *restrict deriv,
                         const float *restrict f, float *restrict gb, int act, int64_t batch, int64_t d, int64_t ld) {
    memset(gb, 0, (size_t)d * sizeof(float));
    if (f)
        for (int64_t i = 0; i < batch * ld; i++) g[i] *= f[i];
    for (int64_t i = 0; i < batch; i++) {
        float *restrict row = g + i * ld;
        const float *restrict yr = y + i * ld, *restrict dr = deriv + i * ld;
        if (act == ACT_RELU) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) row[j] = yr[j] > 0.0f ? row[j] : 0.0f;
        } else if (act == ACT_TANH) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) row[j] = row[j] * (1.0f - yr[j] * yr[j]);
        } else if (act == ACT_SIGMOID) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) row[j] = row[j] * (1.0f - yr[j]) * yr[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) row[j] = row[j] * dr[j];
        }
#pragma omp simd
        for (int64_t j = 0; j < d; j++) gb[j] += row[j];
    }
}

/* One member's buffers, rows of pad(width) floats: each layer's input in[l] [batch, pad(dims[l])] (in[0]
 * the samples; in[l] = y[l] without dropout), hidden outputs y[l] before dropout, GELU's derivatives
 * deriv[l] and the dropout factors f[l], feature-major logits / their gradient [c, batch], two hidden
 * gradients, packed weights, a weight gradient and the loss's scratch. */
typedef struct {
    float *in[64], *y[64], *deriv[64], *f[64], *logits, *grad[2], *packed, *wgrad, *scratch, *base;
} Buffers;

static int buffers_alloc(Buffers *bf, int64_t layers, const int64_t *dims, int64_t batch, int dropout) {
    int64_t widest = 0, packed = 0, total = 0;
    for (int64_t l = 0; l <= layers; l++) widest = padded(dims[l]) > widest ? padded(dims[l]) : widest;
    for (int64_t l = 1; l <= layers; l++) {
        int64_t a = dims[l - 1] * padded(dims[l]), b = dims[l] * padded(dims[l - 1]);
        packed = a > packed ? a : packed;
        packed = b > packed ? b : packed;
    }
    for (int64_t l = 0; l < layers; l++) total += batch * padded(dims[l]) * (l == 0 ? 1 : dropout ? 4 : 2);
    total += batch * padded(dims[layers]) + 2 * batch * widest + 2 * packed + 5 * batch; /* scratch: the losses' */
    float *p = aligned_alloc(64, (size_t)(padded(total)) * sizeof(float));
    if (!p) return 0;
    memset(p, 0, (size_t)(padded(total)) * sizeof(float));
    bf->base = p;
    for (int64_t l = 0; l < layers; l++) {
        const int64_t size = batch * padded(dims[l]);
        bf->in[l] = bf->y[l] = p, p += size;
        if (l > 0) bf->deriv[l] = p, p += size;
        if (dropout && l > 0) bf->f[l] = p, bf->in[l] = p + size, p += 2 * size;
    }
    bf->logits = p, p += batch * padded(dims[layers]);
    bf->grad[0] = p, p += batch * widest;
    bf->grad[1] = p, p += batch * widest;
    bf->packed = p, p += packed;
    bf->wgrad = p, p += packed;
    bf->scratch = p;
    return 1;
}

/* n same-shaped MLPs: layers linear layers with biases, dims[0] -> ... -> dims[layers] classes, the
 * activation acts[l] after hidden layer l; params[4 l .. 4 l + 3] are the addresses of member 0's weight
 * [dims[l+1], dims[l]], bias, weight gradient and bias gradient of layer l (members follow each other). */
typedef struct {
    int64_t layers;
    const int64_t *dims, *acts, *params;
} Mlp;

static inline const float *weight_of(const Mlp *net, int64_t l, int64_t m) {
    return (const float *)net->params[4 * l] + m * net->dims[l + 1] * net->dims[l];
}
static inline const float *bias_of(const Mlp *net, int64_t l, int64_t m) {
    return (const float *)net->params[4 * l + 1] + m * net->dims[l + 1];
}

/* Samples x[rows[i]], i < count (rows of d floats), into in (rows of pad(d) floats). */
static void gather(float *in, const float *x, const int64_t *rows, int64_t count, int64_t d) {
    for (int64_t i = 0; i < count; i++) memcpy(in + i * padded(d), x + rows[i] * d, (size_t)d * sizeof(float));
}

/* Member m's forward pass on the batch in bf->in[0]: in[l] = dropout(act(in[l-1] W^T + b)) (dropout when
 * keys, member m's per hidden layer, are given), then the logits without their bias, feature-major in
 * bf->logits [c, batch]. */
static void forward(Buffers *bf, const Mlp *net, int64_t m, int64_t batch, const int32_t *keys, float t, float s) {
    const int64_t layers = net->layers, c = net->dims[layers];
    for (int64_t l = 1; l <= layers; l++) {
        const int64_t din = net->dims[l - 1], dout = net->dims[l], pin = padded(din), pout = padded(dout);
        pack(weight_of(net, l - 1, m), dout, din, 1, bf->packed, pout);
        float *out = l < layers ? bf->y[l] : bf->grad[0]; /* the gradients are not in use yet */
        gemm(batch, pout, din, bf->in[l - 1], pin, 1, bf->packed, pout, out, pout);
        if (l == layers) {
            for (int64_t j = 0; j < c; j++)
                for (int64_t i = 0; i < batch; i++) bf->logits[j * batch + i] = out[i * pout + j];
            return;
        }
        bias_act(out, bf->deriv[l], bias_of(net, l - 1, m), (int)net->acts[l - 1], batch, dout, pout);
        if (!keys) continue;
        const uint32_t key = (uint32_t)keys[l - 1];
        for (int64_t i = 0; i < batch; i++) {
            const float *restrict yr = out + i * pout;
            float *restrict fr = bf->f[l] + i * pout, *restrict dr = bf->in[l] + i * pout;
#pragma omp simd
            for (int64_t j = 0; j < dout; j++) {
                fr[j] = dropout_factor(key, (uint32_t)(i * dout + j), t, s);
                dr[j] = yr[j] * fr[j];
            }
        }
    }
}

/* Gradients of the summed, weighted softmax cross-entropy of n MLPs (see Mlp; inverted dropout after
 * every hidden layer when keys [n, layers - 1] is not NULL, with the factors of dropout()) on one batch
 * each, into the gradient buffers: what DensePath computes with PyTorch ops. Sample i of member m is
 * x[index[m, i]] with label y[label_index[m, i]] and weight w[m, i] (or ws). Returns 1, or 0 if a thread
 * could not allocate its buffers (the gradients are then incomplete). */
int mlp_step(int64_t n, int64_t batch, int64_t layers, const int64_t *dims, const int64_t *acts, const int64_t *params,
             const float *x, const int64_t *index, const int64_t *y, const int64_t *label_index, const float *w,
             float ws, const int32_t *keys, const float *threshold, const float *scale) {
    if (layers < 1 || layers > 63) return 0; /* MLP_MAX_LAYERS in fused.py */
    const Mlp net = {layers, dims, acts, params};
    int ok = 1;
#pragma omp parallel reduction(min : ok)
    {
        Buffers bf = {0};
        ok = buffers_alloc(&bf, layers, dims, batch, keys != NULL);
#pragma omp for schedule(static)
        for (int64_t m = 0; m < n; m++) {
            if (!ok) continue;
            const int64_t c = dims[layers];
            gather(bf.in[0], x, index + m * batch, batch, dims[0]);
            if (keys)
                forward(&bf, &net, m, batch, keys + m * (layers - 1), threshold[m], scale[m]);
            else
                forward(&bf, &net, m, batch, NULL, 0.0f, 0.0f);
            float *gb_last = (float *)params[4 * (layers - 1) + 3] + m * c;
            xent_member(bf.logits, bias_of(&net, layers - 1, m), y, label_index + m * batch, w ? w + m * batch : NULL,
                        ws, gb_last, c, batch, bf.scratch);

            /* backward: g (sample i, unit j) at g[i * gi + j * gj] */
            const float *g = bf.logits;
            int64_t gi = 1, gj = batch;
            for (int64_t l = layers; l >= 1; l--) {
                const int64_t din = dims[l - 1], dout = dims[l], pin = padded(din);
                float *gw = (float *)params[4 * (l - 1) + 2] + m * dout * din;
                gemm(dout, pin, batch, g, gj, gi, bf.in[l - 1], pin, bf.wgrad, pin);
                for (int64_t j = 0; j < dout; j++) /* drop the padding */
                    memcpy(gw + j * din, bf.wgrad + j * pin, (size_t)din * sizeof(float));
                if (l == 1) break;
                float *next = bf.grad[l % 2], *gb = (float *)params[4 * (l - 2) + 3] + m * din;
                pack(weight_of(&net, l - 1, m), dout, din, 0, bf.packed, pin);
                gemm(batch, pin, dout, g, gi, gj, bf.packed, pin, next, pin);
                const float *f = keys ? bf.f[l - 1] : NULL;
                act_backward(next, bf.y[l - 1], bf.deriv[l - 1], f, gb, (int)acts[l - 2], batch, din, pin);
                g = next, gi = pin, gj = 1;
            }
        }
        free(bf.base);
    }
    return ok;
}

/* Adds each sample's cross-entropy (float32, as F.cross_entropy computes it) to *loss and 1 to *hits where
 * the first largest logit is the label (a row with a NaN never hits); logits zm [c, count] feature-major,
 * bias bm, labels y[rows[i] + offset]. scratch holds 5 * count floats. */
static void xent_metrics(const float *zm, const float *bm, const int64_t *y, const int64_t *rows, int64_t offset,
                         int64_t c, int64_t count, double *loss, double *hits, float *scratch) {
    float *restrict top = scratch, *restrict sum = scratch + count, *restrict best = scratch + 2 * count;
    float *restrict nan = scratch + 3 * count, *restrict at_label = scratch + 4 * count;
    for (int64_t i = 0; i < count; i++) {
        const int64_t label = y[rows[i] + offset];
        top[i] = -INFINITY, sum[i] = 0.0f, best[i] = 0.0f, nan[i] = 0.0f;
        at_label[i] = label >= 0 && label < c ? zm[label * count + i] + bm[label] : NAN;
    }
    for (int64_t k = 0; k < c; k++) {
        const float *restrict zk = zm + k * count, kf = (float)k;
#pragma omp simd
        for (int64_t i = 0; i < count; i++) {
            const float v = zk[i] + bm[k];
            nan[i] = v != v ? 1.0f : nan[i];
            best[i] = v > top[i] ? kf : best[i];
            top[i] = v > top[i] ? v : top[i];
        }
    }
    for (int64_t k = 0; k < c; k++) {
        const float *restrict zk = zm + k * count;
#pragma omp simd
        for (int64_t i = 0; i < count; i++) sum[i] += exp_f32(zk[i] + bm[k] - top[i]);
    }
    double l = 0.0, h = 0.0;
    for (int64_t i = 0; i < count; i++) {
        l += (double)(logf(sum[i]) + top[i] - at_label[i]);
        h += nan[i] == 0.0f && best[i] == (float)y[rows[i] + offset] ? 1.0 : 0.0;
    }
    *loss += l, *hits += h;
}

/* Summed cross-entropy loss[m] and hits[m] (see xent_metrics) of n MLP classifiers (see Mlp, no dropout)
 * over their samples: member m reads x[rows[m * rows_stride + i]] for i < counts[m], with labels
 * y[rows[...] + offset[m]], batch samples at a time. Returns 1, or 0 if a thread could not allocate its
 * buffers. */
int mlp_eval(int64_t n, int64_t batch, int64_t layers, const int64_t *dims, const int64_t *acts, const int64_t *params,
             const float *x, const int64_t *rows, int64_t rows_stride, const int64_t *counts, const int64_t *y,
             const int64_t *offset, double *loss, double *hits) {
    if (layers < 1 || layers > 63) return 0;
    const Mlp net = {layers, dims, acts, params};
    int ok = 1;
#pragma omp parallel reduction(min : ok)
    {
        Buffers bf = {0};
        ok = buffers_alloc(&bf, layers, dims, batch, 0);
#pragma omp for schedule(static)
        for (int64_t m = 0; m < n; m++) {
            if (!ok) continue;
            const int64_t *r = rows + m * rows_stride;
            loss[m] = hits[m] = 0.0;
            for (int64_t s0 = 0; s0 < counts[m]; s0 += batch) {
                const int64_t count = counts[m] - s0 < batch ? counts[m] - s0 : batch;
                gather(bf.in[0], x, r + s0, count, dims[0]);
                forward(&bf, &net, m, count, NULL, 0.0f, 0.0f);
                xent_metrics(bf.logits, bias_of(&net, layers - 1, m), y, r + s0, offset[m], dims[layers], count,
                             &loss[m], &hits[m], bf.scratch);
            }
        }
        free(bf.base);
    }
    return ok;
}
