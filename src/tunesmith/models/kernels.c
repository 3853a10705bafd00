/* tunesmith's CPU kernels: what PyTorch's CPU operators do slowly for this project's training.
 *
 * Compiled once per machine by tunesmith.models.native with the system's C compiler
 * (-O3 -march=native) and called through ctypes on contiguous tensors. Every function here has a
 * reference implementation in PyTorch operators that gives bit-identical results; the tests pin
 * one against the other.
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
        int16_t v[4 * WORDS];                                                          \
        for (int64_t base = 0; base < n; base += 4 * WORDS) {                          \
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
    float x[MAX_LEN];
    for (int64_t r = 0; r < rows; r++) {
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
