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
            float hashed = (float)(int32_t)lowbias32(k + (uint32_t)i);
            float factor = hashed > t ? s : 0.0f;
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

/* Cross-entropy gradient of feature-major logits z [n, c, batch] (bias b [n, c] not yet added):
 * g = (softmax over c of (z + b) - onehot(label)) * weight, written over z; gb[m, k] = sum of g[m, k, :].
 * Labels are y[index[m, i]]; the weight is w[m, i] if w is given, else the scalar ws. */
void softmax_xent_grad(float *z, const float *b, const int64_t *y, const int64_t *index, const float *w, float ws,
                       float *gb, int64_t n, int64_t c, int64_t batch) {
#pragma omp parallel
    {
        float *scratch = malloc((size_t)(4 * batch) * sizeof(float));
        float *restrict top = scratch, *restrict sum = scratch + batch;
        float *restrict weight = scratch + 2 * batch, *restrict label = scratch + 3 * batch;
#pragma omp for schedule(static)
        for (int64_t m = 0; m < n; m++) {
            float *restrict zm = z + m * c * batch;
            for (int64_t i = 0; i < batch; i++) {
                top[i] = -INFINITY;
                sum[i] = 0.0f;
                weight[i] = w ? w[m * batch + i] : ws;
                label[i] = (float)y[index[m * batch + i]];
            }
            for (int64_t k = 0; k < c; k++) {
                float *restrict zk = zm + k * batch;
                const float bias = b ? b[m * c + k] : 0.0f;
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
                if (gb) gb[m * c + k] = acc;
            }
        }
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
