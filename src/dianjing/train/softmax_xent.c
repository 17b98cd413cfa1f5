/* The output layer's softmax cross-entropy on the CPU, in two passes over a chunk of logits.

   The chunk is laid out [vocab, rows] (column j is one supervised position), as
   src/dianjing/train/loss.py computes it: W @ h^T, in bf16 or fp32. PyTorch's element-wise
   ops take about fifteen passes over it (to fp32, soft-cap, max, exp, sum, divide, one-hot,
   the soft-cap's derivative, back to bf16), each reading and writing the whole chunk; this
   file takes two, and works in fp32 registers in between:

     dj_xent_stats  for a range of vocabulary rows: each column's running max and sum of
                    exp(x - max), x the soft-capped logit (blocks of BLK rows, so one
                    exp per logit);
     dj_xent_grad   for a range of rows, once log-sum-exp is known: d loss / d logits =
                    (softmax - one-hot) * d softcap, written over the logits in place.

   Python splits the vocabulary between threads (ctypes releases the GIL) and combines the
   ranges' statistics; see softmax_xent.py. No OpenMP: one OpenMP runtime (PyTorch's) in the
   process is enough. exp is a Cephes-style polynomial (relative error ~2e-7) written so that
   gcc vectorises it with AVX-512/AVX2 without -ffast-math; tanh(a) = 1 - 2 / (exp(2a) + 1). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLK 16

static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as PyTorch's cast does */
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float exp_f(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float k = x * 1.44269504088896341f;
    k = (k + 12582912.0f) - 12582912.0f; /* round to nearest (no -ffast-math, so not folded away) */
    float r = x - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)k + 127) << 23;
    float s;
    memcpy(&s, &bits, 4);
    return p * s;
}

static inline float tanh_f(float a) { return 1.0f - 2.0f / (exp_f(2.0f * a) + 1.0f); }

/* row v of the chunk as fp32, soft-capped when cap > 0 (t: tanh(x / cap), for the derivative) */
static void load_row(const void *z, int bf16, int64_t m, int64_t v, float cap, float *x, float *t) {
    if (bf16) {
        const uint16_t *p = (const uint16_t *)z + v * m;
        for (int64_t j = 0; j < m; j++) x[j] = bf16_to_f32(p[j]);
    } else {
        const float *p = (const float *)z + v * m;
        for (int64_t j = 0; j < m; j++) x[j] = p[j];
    }
    if (cap > 0.0f) {
        const float inv = 1.0f / cap;
        for (int64_t j = 0; j < m; j++) {
            float tj = tanh_f(x[j] * inv);
            t[j] = tj;
            x[j] = cap * tj;
        }
    }
}

/* rows [v0, v1): mx[j] = max_v x[v, j], sm[j] = sum_v exp(x[v, j] - mx[j]). Returns 0, or -1 when out of memory. */
int dj_xent_stats(const void *z, int bf16, int64_t m, int64_t v0, int64_t v1, float cap, float *mx, float *sm) {
    float *buf = (float *)malloc(sizeof(float) * (size_t)m * (BLK + 2));
    if (!buf) return -1;
    float *bm = buf + (size_t)m * BLK, *t = bm + m;
    for (int64_t j = 0; j < m; j++) {
        mx[j] = -3.0e38f;
        sm[j] = 0.0f;
    }
    for (int64_t b = v0; b < v1; b += BLK) {
        int64_t nb = v1 - b < BLK ? v1 - b : BLK;
        for (int64_t r = 0; r < nb; r++) load_row(z, bf16, m, b + r, cap, buf + r * m, t);
        for (int64_t j = 0; j < m; j++) bm[j] = mx[j];
        for (int64_t r = 0; r < nb; r++) {
            const float *x = buf + r * m;
            for (int64_t j = 0; j < m; j++) bm[j] = x[j] > bm[j] ? x[j] : bm[j];
        }
        for (int64_t j = 0; j < m; j++) {
            sm[j] *= exp_f(mx[j] - bm[j]);
            mx[j] = bm[j];
        }
        for (int64_t r = 0; r < nb; r++) {
            const float *x = buf + r * m;
            for (int64_t j = 0; j < m; j++) sm[j] += exp_f(x[j] - mx[j]);
        }
    }
    free(buf);
    return 0;
}

/* rows [v0, v1): z[v, j] := (exp(x[v, j] - lse[j]) - [v == y[j]]) * (1 - t[v, j]^2 when capped), in z's dtype. */
int dj_xent_grad(void *z, int bf16, int64_t m, int64_t v0, int64_t v1, float cap, const float *lse, const int64_t *y) {
    float *x = (float *)malloc(sizeof(float) * (size_t)m * 2);
    if (!x) return -1;
    float *t = x + m;
    for (int64_t v = v0; v < v1; v++) {
        load_row(z, bf16, m, v, cap, x, t);
        for (int64_t j = 0; j < m; j++) x[j] = exp_f(x[j] - lse[j]) - (y[j] == v ? 1.0f : 0.0f);
        if (cap > 0.0f)
            for (int64_t j = 0; j < m; j++) x[j] *= 1.0f - t[j] * t[j];
        if (bf16) {
            uint16_t *p = (uint16_t *)z + v * m;
            for (int64_t j = 0; j < m; j++) p[j] = f32_to_bf16(x[j]);
        } else {
            memcpy((float *)z + v * m, x, sizeof(float) * (size_t)m);
        }
    }
    free(x);
    return 0;
}

/* xy[j] = the soft-capped logit of column j's target, z[y[j], j] (read before dj_xent_grad overwrites it) */
void dj_xent_target(const void *z, int bf16, int64_t m, float cap, const int64_t *y, float *xy) {
    for (int64_t j = 0; j < m; j++) {
        int64_t i = y[j] * m + j;
        float x = bf16 ? bf16_to_f32(((const uint16_t *)z)[i]) : ((const float *)z)[i];
        xy[j] = cap > 0.0f ? cap * tanh_f(x / cap) : x;
    }
}
