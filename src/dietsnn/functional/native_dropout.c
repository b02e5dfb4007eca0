/* dietsnn's native dropout: masks from a counter-based generator (SplitMix64 of the seed and the
 * word index), the same bits as functional/dropout.py's PyTorch definition. Element i is kept
 * where 16-bit lane i % 4 of word i / 4, read as a signed number, is >= `thr`. Every element
 * depends only on the seed and its index, so the result does not depend on the thread count.
 * dietsnn_dropout multiplies float32 or bfloat16 x by (keep ? scale : 0), as x * mask in x's
 * dtype (bfloat16: the product in float32, rounded to nearest even).
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

static void range_f32(long w0, long w1, uint64_t seed, int thr, const float *restrict x,
                      float *restrict y, float scale) {
    for (long w = w0; w < w1; w++) {
        uint64_t z = splitmix(seed, (uint64_t)w);
        for (int j = 0; j < 4; j++) y[4 * (w - w0) + j] = x[4 * (w - w0) + j] * (kept(z, j, thr) ? scale : 0.0f);
    }
}

static void range_bf16(long w0, long w1, uint64_t seed, int thr, const uint16_t *restrict x,
                       uint16_t *restrict y, float scale) {
    for (long w = w0; w < w1; w++) {
        uint64_t z = splitmix(seed, (uint64_t)w);
        for (int j = 0; j < 4; j++)
            y[4 * (w - w0) + j] = float_to_bf16(bf16_to_float(x[4 * (w - w0) + j]) * (kept(z, j, thr) ? scale : 0.0f));
    }
}

static void range(long w0, long w1, uint64_t seed, int thr, const void *x, void *y,
                  unsigned char *mask, int bf16, float scale) {
    if (mask) range_mask(w0, w1, seed, thr, mask + 4 * w0);
    else if (bf16) range_bf16(w0, w1, seed, thr, (const uint16_t *)x + 4 * w0, (uint16_t *)y + 4 * w0, scale);
    else range_f32(w0, w1, seed, thr, (const float *)x + 4 * w0, (float *)y + 4 * w0, scale);
}

/* n elements; x/y NULL and out_mask set: write the keep flags (0/1 bytes) */
int dietsnn_dropout(const void *x, void *y, unsigned char *out_mask, long n, int bf16,
                    int64_t seed, int thr, float scale, int threads) {
    long words = n / 4; /* whole words in parallel, then the last partial word */
    if (threads < 1) threads = 1;
    if ((long)threads * 4096 > words) threads = words / 4096 > 0 ? (int)(words / 4096) : 1;
#pragma omp parallel num_threads(threads)
    {
        const long q = THREAD_ID(), c = THREAD_COUNT();
        range(words * q / c, words * (q + 1) / c, (uint64_t)seed, thr, x, y, out_mask, bf16,
              scale);
    }
    if (n % 4) { /* through a 4-element buffer */
        long i0 = 4 * words, m = n - i0;
        float xb[4] = {0}, yb[4];
        uint16_t hb[4] = {0}, hy[4];
        unsigned char mb[4];
        int es = bf16 ? 2 : 4;
        if (x) memcpy(bf16 ? (void *)hb : (void *)xb, (const char *)x + i0 * es, m * es);
        if (out_mask) range_mask(words, words + 1, (uint64_t)seed, thr, mb);
        else if (bf16) range_bf16(words, words + 1, (uint64_t)seed, thr, hb, hy, scale);
        else range_f32(words, words + 1, (uint64_t)seed, thr, xb, yb, scale);
        if (out_mask) memcpy(out_mask + i0, mb, m);
        else memcpy((char *)y + i0 * es, bf16 ? (void *)hy : (void *)yb, m * es);
    }
    return 0;
}
