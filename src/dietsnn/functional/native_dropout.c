/* dietsnn's native dropout: masks from a counter-based generator (SplitMix64 of the seed and the
 * word index), the same bits as functional/dropout.py's PyTorch definition. Element i is kept
 * where 16-bit lane i % 4 of word i / 4, read as a signed number, is >= `thr`. Every element
 * depends only on the seed and its index, so the result does not depend on the thread count.
 * dietsnn_dropout multiplies float32 or bfloat16 x (with `relu`: max(x, 0), as torch.relu,
 * -0 and NaN kept) by (keep ? scale : 0), as x * mask in x's dtype (bfloat16: the product in
 * float32, rounded to nearest even). dietsnn_relu_dropout_backward is the gradient of that
 * ReLU -> dropout given its output y: g * scale where y > 0, else 0.
 */
#include "native.h"

INLINE uint64_t splitmix(uint64_t seed, uint64_t w) {
    uint64_t z = seed + (w + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

INLINE int kept(uint64_t z, int lane, int thr) { return (int16_t)(uint16_t)(z >> (16 * lane)) >= thr; }

/* words [w0, w1) of the mask: keep flags (mask) or y = x * (keep ? scale : 0), the pointers at
 * element 4 * w0; one loop per kind, branch-free, that the compiler vectorises over words */
static void range_mask(long w0, long w1, uint64_t seed, int thr, unsigned char *restrict mask) {
    for (long w = w0; w < w1; w++) {
        uint64_t z = splitmix(seed, (uint64_t)w);
        for (int j = 0; j < 4; j++) mask[4 * (w - w0) + j] = (unsigned char)kept(z, j, thr);
    }
}

INLINE float relu_if(float v, int relu) { return relu && v < 0.0f ? 0.0f : v; }

/* `relu` is a constant in each call of these from `range`, so each loop is compiled twice */
INLINE void range_f32(long w0, long w1, uint64_t seed, int thr, const float *restrict x,
                      float *restrict y, float scale, int relu) {
    for (long w = w0; w < w1; w++) {
        uint64_t z = splitmix(seed, (uint64_t)w);
        for (int j = 0; j < 4; j++)
            y[4 * (w - w0) + j] = relu_if(x[4 * (w - w0) + j], relu) * (kept(z, j, thr) ? scale : 0.0f);
    }
}

INLINE void range_bf16(long w0, long w1, uint64_t seed, int thr, const uint16_t *restrict x,
                       uint16_t *restrict y, float scale, int relu) {
    for (long w = w0; w < w1; w++) {
        uint64_t z = splitmix(seed, (uint64_t)w);
        for (int j = 0; j < 4; j++)
            y[4 * (w - w0) + j] = float_to_bf16(relu_if(bf16_to_float(x[4 * (w - w0) + j]), relu) * (kept(z, j, thr) ? scale : 0.0f));
    }
}

static void range(long w0, long w1, uint64_t seed, int thr, const void *x, void *y,
                  unsigned char *mask, int bf16, float scale, int relu) {
    if (mask) { range_mask(w0, w1, seed, thr, mask + 4 * w0); return; } /* x and y are NULL */
    const uint16_t *xh = (const uint16_t *)x + 4 * w0;
    const float *xf = (const float *)x + 4 * w0;
    uint16_t *yh = (uint16_t *)y + 4 * w0;
    float *yf = (float *)y + 4 * w0;
    if (bf16 && relu) range_bf16(w0, w1, seed, thr, xh, yh, scale, 1);
    else if (bf16) range_bf16(w0, w1, seed, thr, xh, yh, scale, 0);
    else if (relu) range_f32(w0, w1, seed, thr, xf, yf, scale, 1);
    else range_f32(w0, w1, seed, thr, xf, yf, scale, 0);
}

/* n elements; x/y NULL and out_mask set: write the keep flags (0/1 bytes) */
int dietsnn_dropout(const void *x, void *y, unsigned char *out_mask, long n, int bf16,
                    int64_t seed, int thr, float scale, int relu, int threads) {
    long words = n / 4; /* whole words in parallel, then the last partial word */
    if (threads < 1) threads = 1;
    if ((long)threads * 4096 > words) threads = words / 4096 > 0 ? (int)(words / 4096) : 1;
#pragma omp parallel num_threads(threads)
    {
        const long q = THREAD_ID(), c = THREAD_COUNT();
        range(words * q / c, words * (q + 1) / c, (uint64_t)seed, thr, x, y, out_mask, bf16,
              scale, relu);
    }
    if (n % 4) { /* through a 4-element buffer */
        long i0 = 4 * words, m = n - i0;
        float xb[4] = {0}, yb[4];
        uint16_t hb[4] = {0}, hy[4];
        unsigned char mb[4];
        int es = bf16 ? 2 : 4;
        if (x) memcpy(bf16 ? (void *)hb : (void *)xb, (const char *)x + i0 * es, m * es);
        if (out_mask) range_mask(words, words + 1, (uint64_t)seed, thr, mb);
        else if (bf16) range_bf16(words, words + 1, (uint64_t)seed, thr, hb, hy, scale, relu);
        else range_f32(words, words + 1, (uint64_t)seed, thr, xb, yb, scale, relu);
        if (out_mask) memcpy(out_mask + i0, mb, m);
        else memcpy((char *)y + i0 * es, bf16 ? (void *)hy : (void *)yb, m * es);
    }
    return 0;
}

/* dx = (y > 0 ? g * scale : 0) over n elements of float32 or bfloat16 g, y, dx */
int dietsnn_relu_dropout_backward(const void *g, const void *y, void *dx, long n, int bf16,
                                  float scale, int threads) {
    if (threads < 1) threads = 1;
    if ((long)threads * 16384 > n) threads = n / 16384 > 0 ? (int)(n / 16384) : 1;
#pragma omp parallel num_threads(threads)
    {
        const long q = THREAD_ID(), c = THREAD_COUNT(), i0 = n * q / c, i1 = n * (q + 1) / c;
        if (bf16) {
            const uint16_t *restrict gh = g, *restrict yh = y;
            uint16_t *restrict dh = dx;
            for (long i = i0; i < i1; i++) { /* both sides computed: a select */
                uint16_t v = float_to_bf16(bf16_to_float(gh[i]) * scale);
                dh[i] = bf16_to_float(yh[i]) > 0.0f ? v : 0;
            }
        } else {
            const float *restrict gf = g;
            const int32_t *restrict yb = y; /* y > 0 (not NaN) on its bits: integer compares */
            int32_t *restrict db = dx;      /* and an integer select, which gcc vectorises */
            for (long i = i0; i < i1; i++) {
                float v = gf[i] * scale;
                int32_t b;
                memcpy(&b, &v, 4);
                db[i] = b & -((yb[i] > 0) & (yb[i] <= 0x7f800000));
            }
        }
    }
    return 0;
}
