/* tunesmith's CPU kernels: what PyTorch's CPU operators do slowly for this project's training.
 *
 * Compiled once per machine by tunesmith.models.native with the system's C compiler
 * (-O3 -march=native -fopenmp) and called through ctypes on contiguous tensors. Loops over rows or
 * blocks run on OpenMP threads: the process's OpenMP runtime is PyTorch's own (the library is loaded
 * after it), so they share its thread pool and follow torch.set_num_threads. Every function here
 * has a reference implementation in PyTorch operators; the tests pin one against the other (bit for
 * bit, or where the C library's expf or a sum's order differs from PyTorch's, to rounding).
 *
 * Dropout masks. A mask element is kept when its 16-bit uniform number v (signed) is >= t, where
 * t = round(p * 65536) - 32768. The numbers come from SplitMix64 jumped to a position: the 64-bit
 * word j (j = 0, 1, ...) of a mask with seed s is mix(s + (j + 1) * GAMMA), and element i is the
 * 16-bit lane i % 4 of word i / 4 (little-endian). Because any element can be recomputed from the
 * seed alone, the backward pass regenerates the mask instead of keeping it, and one pass computes
 * and applies it (PyTorch's CPU generator draws one Mersenne Twister number at a time).
 */
#include <stdint.h>
#include <math.h>
#include <string.h>

/* Below this many elements a loop runs on one thread: waking the others costs more. */
#define PARALLEL_MIN 32768

#define GAMMA 0x9E3779B97F4A7C15ULL
#define WORDS 64 /* mask words per block: 256 elements, vectorised by the compiler */

static inline uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline void lanes(int16_t *v, uint64_t seed, int64_t first_word) {
    uint64_t h[WORDS];
    for (int b = 0; b < WORDS; b++) h[b] = mix(seed + (uint64_t)(first_word + b + 1) * GAMMA);
    memcpy(v, h, sizeof h);
}

/* out[i] = x[i] where element i is kept, else 0; out may be x. One function per element size:
 * tunesmith_keep16 (bf16, fp16) and tunesmith_keep32 (fp32). */
#define KEEP(NAME, T)                                                                  \
    void NAME(const T *x, T *out, int64_t n, uint64_t seed, int32_t t) {               \
        _Pragma("omp parallel for if (n >= PARALLEL_MIN)")                             \
        for (int64_t base = 0; base < n; base += 4 * WORDS) {                          \
            int16_t v[4 * WORDS];                                                      \
            lanes(v, seed, base / 4);                                                  \
            const T *xs = x + base;                                                    \
            T *os = out + base;                                                        \
            if (n - base >= 4 * WORDS) { /* a whole block: a fixed count vectorises */ \
                for (int i = 0; i < 4 * WORDS; i++) os[i] = v[i] >= t ? xs[i] : 0;     \
            } else {                                                                   \
                for (int64_t i = 0; i < n - base; i++) os[i] = v[i] >= t ? xs[i] : 0;  \
            }                                                                          \
        }                                                                              \
    }

KEEP(tunesmith_keep16, uint16_t)
KEEP(tunesmith_keep32, uint32_t)

/* Causal attention's softmax, for the fast attention path's bf16 scores.
 *
 * scores: rows of length `len` (bf16), `rows` in all; row r is query position r % len, which sees
 * key positions 0..r % len. probs[r, j] = softmax_j(scores[r, j] * scale) over the visible keys,
 * computed in fp32 as PyTorch does (max subtracted, then exp, sum and division) and rounded to
 * bf16 (nearest, ties to even); 0 for the masked keys.
 */
static inline float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#define MAX_LEN 4096

void tunesmith_causal_softmax_bf16(const uint16_t *scores, uint16_t *probs, int64_t rows, int64_t len, float scale) {
#pragma omp parallel for if (rows * len >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float x[MAX_LEN];
        const uint16_t *s = scores + r * len;
        uint16_t *p = probs + r * len;
        int64_t n = r % len + 1;
        float m = -3.4e38f;
        for (int64_t j = 0; j < n; j++) {
            x[j] = bf16_to_float(s[j]) * scale;
            m = x[j] > m ? x[j] : m;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < n; j++) {
            x[j] = expf(x[j] - m);
            sum += x[j];
        }
        for (int64_t j = 0; j < n; j++) p[j] = float_to_bf16(x[j] / sum);
        for (int64_t j = n; j < len; j++) p[j] = 0;
    }
}

/* Its backward: grad_scores = probs * (grad_probs - sum_j grad_probs * probs) * scale, in fp32 from
 * the bf16 probabilities and gradient, rounded to bf16. */
void tunesmith_causal_softmax_backward_bf16(const uint16_t *probs, const uint16_t *grad, uint16_t *out, int64_t rows,
                                            int64_t len, float scale) {
#pragma omp parallel for if (rows * len >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *p = probs + r * len, *g = grad + r * len;
        uint16_t *o = out + r * len;
        int64_t n = r % len + 1;
        float dot = 0.0f;
        for (int64_t j = 0; j < n; j++) dot += bf16_to_float(g[j]) * bf16_to_float(p[j]);
        for (int64_t j = 0; j < n; j++) o[j] = float_to_bf16(bf16_to_float(p[j]) * (bf16_to_float(g[j]) - dot) * scale);
        for (int64_t j = n; j < len; j++) o[j] = 0;
    }
}

/* The gated MLP's silu(gate) * up on bf16 tensors, rounded as PyTorch's bf16 operators round:
 * h = bf16(silu(gate)) with silu in fp32, out = bf16(h * up). */
static inline float silu(float g) { return g / (1.0f + expf(-g)); }

void tunesmith_swiglu_bf16(const uint16_t *gate, const uint16_t *up, uint16_t *out, int64_t n) {
#pragma omp parallel for if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float h = bf16_to_float(float_to_bf16(silu(bf16_to_float(gate[i]))));
        out[i] = float_to_bf16(h * bf16_to_float(up[i]));
    }
}

/* Its backward, as autograd computes it for silu(gate) * up: grad_up = bf16(grad * h) and, with
 * t = bf16(grad * up) and s = sigmoid(gate), grad_gate = bf16(t * s * (1 + gate * (1 - s))). */
void tunesmith_swiglu_backward_bf16(const uint16_t *gate, const uint16_t *up, const uint16_t *grad,
                                    uint16_t *grad_gate, uint16_t *grad_up, int64_t n) {
#pragma omp parallel for if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = bf16_to_float(gate[i]), d = bf16_to_float(grad[i]);
        float s = 1.0f / (1.0f + expf(-g));
        float h = bf16_to_float(float_to_bf16(g * s));
        float t = bf16_to_float(float_to_bf16(d * bf16_to_float(up[i])));
        grad_up[i] = float_to_bf16(d * h);
        grad_gate[i] = float_to_bf16(t * s * (1.0f + g * (1.0f - s)));
    }
}

/* RMSNorm of fp32 rows of width `dim` with an fp32 weight, as Llama computes it in fp32:
 * rstd = 1 / sqrt(mean(x^2) + eps), y = w * (x * rstd). Writes y in fp32 and, unless y16 is NULL,
 * rounded to bf16 (what the next linear layer reads under autocast), and rstd per row for the
 * backward pass. */
void tunesmith_rms_norm(const float *x, const float *w, float *y, uint16_t *y16, float *rstd, int64_t rows,
                        int64_t dim, float eps) {
#pragma omp parallel for if (rows * dim >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float ss = 0.0f;
        for (int64_t j = 0; j < dim; j++) ss += xr[j] * xr[j];
        float k = 1.0f / sqrtf(ss / (float)dim + eps);
        rstd[r] = k;
        for (int64_t j = 0; j < dim; j++) {
            float v = w[j] * (xr[j] * k);
            y[r * dim + j] = v;
            if (y16) y16[r * dim + j] = float_to_bf16(v);
        }
    }
}

/* Its backward for x (the weight is frozen): dx = rstd * (w * dy - x * rstd^2 * mean(w * dy * x)). */
void tunesmith_rms_norm_backward(const float *x, const float *w, const float *rstd, const float *dy, float *dx,
                                 int64_t rows, int64_t dim) {
#pragma omp parallel for if (rows * dim >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim, *gr = dy + r * dim;
        float k = rstd[r], dot = 0.0f;
        for (int64_t j = 0; j < dim; j++) dot += w[j] * gr[j] * xr[j];
        float c = k * k * dot / (float)dim;
        for (int64_t j = 0; j < dim; j++) dx[r * dim + j] = k * (w[j] * gr[j] - xr[j] * c);
    }
}

/* Rotary position embedding on bf16 rows, as Llama's apply_rotary_pos_emb computes it in fp32:
 * x is [rows, heads, dim] (token-major), cos and sin are [rows, dim] (fp32); with h = dim / 2,
 * out[j] = x[j] * cos[j] - x[j + h] * sin[j] for j < h and x[j] * cos[j] + x[j - h] * sin[j]
 * after, rounded to bf16. With backward set it applies the transpose, giving the input's gradient
 * from the output's: out[j] = x[j] * cos[j] + x[j + h] * sin[j + h] for j < h and
 * x[j] * cos[j] - x[j - h] * sin[j - h] after, each product rounded to bf16 before the sum as
 * autograd rounds them (the input is bf16, so each operator's gradient is cast back to it). */
static inline float round16(float f) { return bf16_to_float(float_to_bf16(f)); }

void tunesmith_rotary_bf16(const uint16_t *x, const float *cos, const float *sin, uint16_t *out, int64_t rows,
                           int64_t heads, int64_t dim, int32_t backward) {
    int64_t h = dim / 2;
#pragma omp parallel for if (rows * heads * dim >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *c = cos + r * dim, *s = sin + r * dim;
        for (int64_t k = 0; k < heads; k++) {
            const uint16_t *xs = x + (r * heads + k) * dim;
            uint16_t *os = out + (r * heads + k) * dim;
            for (int64_t j = 0; j < h; j++) {
                float a = bf16_to_float(xs[j]), b = bf16_to_float(xs[j + h]);
                if (backward) { /* autograd rounds each branch's gradient to bf16 before adding them */
                    os[j] = float_to_bf16(round16(a * c[j]) + round16(b * s[j + h]));
                    os[j + h] = float_to_bf16(round16(b * c[j + h]) - round16(a * s[j]));
                } else {
                    os[j] = float_to_bf16(a * c[j] - b * s[j]);
                    os[j + h] = float_to_bf16(b * c[j + h] + a * s[j + h]);
                }
            }
        }
    }
}
