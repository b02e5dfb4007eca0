/* dietsnn's native CPU kernels: what native_lif.c (the LIF recurrence over time, forward and
 * BPTT, float32), native_pool.c (2D average pooling, float32 and bfloat16, and the fused LIF ->
 * dropout -> pooling block) and native_dropout.c (dropout masks made and applied in one pass)
 * share. They are built into one shared library, once per machine, by native.py
 * with the system C compiler and loaded with ctypes: no PyTorch headers, no Python in the loops.
 *
 * The arithmetic is the one of neuron.py's eager loops, operation by operation: built without
 * implicit floating-point contraction, with a fused multiply-add exactly where PyTorch's
 * vectorised CPU kernels use one (addcmul) on CPUs that have it, so forward results are
 * bit-identical to the eager loops.
 *
 * The helpers below are static, one private copy in each source, so that the library exports
 * only the dietsnn_* entry points (SHARED: static, without an "unused" warning in a source that
 * does not call it).
 */
#ifndef DIETSNN_NATIVE_H
#define DIETSNN_NATIVE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID() omp_get_thread_num()
#define THREAD_COUNT() omp_get_num_threads()
#else
#define THREAD_ID() 0
#define THREAD_COUNT() 1
#endif

#ifdef __FMA__
#define MADD(a, b, c) fmaf(a, b, c) /* a * b + c, rounded once */
#else
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

#define BLK 256 /* neurons kept in registers/L1 while the loop runs over time */
#define MAX_THREADS 256
#define INLINE static inline __attribute__((always_inline))
#define SHARED static __attribute__((unused))

/* bfloat16 as its 16 bits: to float32 exactly; from float32 rounded to nearest even */
INLINE float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

INLINE uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* The surrogates of surrogate.py, in the order of its SURROGATES; `c` is the coefficient
 * surrogate.kernel_args computes from the one definition there (no constant lives here). */
enum { SG_LINEAR = 0, SG_EXPONENTIAL = 1, SG_SIGMOID = 2, SG_ATAN = 3 };

static inline float surrogate(int kind, float z, float gamma, float c) {
    switch (kind) {
    case SG_LINEAR: { /* gamma * max(0, 1 - |z|) */
        float a = 1.0f - fabsf(z);
        return (a > 0.0f ? a : 0.0f) * gamma;
    }
    case SG_EXPONENTIAL: /* gamma * exp(-c |z|) */
        return expf(-c * fabsf(z)) * gamma;
    case SG_SIGMOID: { /* 4 gamma * s (1 - s), s = sigmoid(c z) */
        float s = 1.0f / (1.0f + expf(-c * z));
        return s * (1.0f - s) * (4.0f * gamma);
    }
    default: { /* gamma / (1 + (c z)^2) */
        float p = c * z;
        return gamma / (1.0f + p * p);
    }
    }
}

/* One step of BPTT over m neurons; kind, has_prev and store are constants at every call, so
 * that each combination compiles to its own branch-free vectorised loop. */
INLINE void bwd_step(long m, const float *restrict utt, const float *restrict gt,
                     const float *restrict prev, float *restrict gxt, float *restrict d,
                     float *restrict gl, float *restrict gv, float *restrict sum, float leak,
                     float v, float inv_v, float gamma, float coef, const int kind,
                     const int has_prev, const int store) {
    for (long i = 0; i < m; i++) {
        float s = utt[i];
        float gs = gt[i] * surrogate(kind, s * inv_v - 1.0f, gamma, coef);
        float carried = d[i] * leak; /* dL/du_t into step t+1 */
        float di = MADD(d[i], leak, gs * inv_v);
        d[i] = di;
        gv[i] -= carried * (s > v ? 1.0f : 0.0f) + gs * s * inv_v * inv_v;
        if (has_prev) gl[i] += di * (prev[i] - (prev[i] > v ? 1.0f : 0.0f) * v);
        if (store) gxt[i] = di; else sum[i] += di;
    }
}

/* bwd_step with the surrogate kind and the two flags as constants: one specialised loop per
 * case, chosen once per call (has_prev: prev is not NULL; store: gxt is written, else summed).
 * Not inlined: with its one caller per source the compiler would inline it, where the single
 * source it came from (two callers) kept it a function; noinline keeps that compiled code. */
SHARED __attribute__((noinline))
void bwd_step_any(long m, const float *utt, const float *gt, const float *prev, float *gxt,
                  float *d, float *gl, float *gv, float *sum, float leak, float v, float inv_v,
                  float gamma, float coef, int kind) {
#define BWD_FLAGS(KIND) \
    if (gxt) { \
        if (prev) bwd_step(m, utt, gt, prev, gxt, d, gl, gv, sum, leak, v, inv_v, gamma, coef, KIND, 1, 1); \
        else bwd_step(m, utt, gt, 0, gxt, d, gl, gv, sum, leak, v, inv_v, gamma, coef, KIND, 0, 1); \
    } else { \
        if (prev) bwd_step(m, utt, gt, prev, 0, d, gl, gv, sum, leak, v, inv_v, gamma, coef, KIND, 1, 0); \
        else bwd_step(m, utt, gt, 0, 0, d, gl, gv, sum, leak, v, inv_v, gamma, coef, KIND, 0, 0); \
    }
    switch (kind) {
    case SG_LINEAR: BWD_FLAGS(SG_LINEAR); break;
    case SG_EXPONENTIAL: BWD_FLAGS(SG_EXPONENTIAL); break;
    case SG_SIGMOID: BWD_FLAGS(SG_SIGMOID); break;
    default: BWD_FLAGS(SG_ATAN); break;
    }
#undef BWD_FLAGS
}

/* u~ of m neurons driven by the same current x at each of T steps, into out [T][stride],
 * as the forward computed it; u: m floats of workspace */
SHARED void recompute_u_tilde(long m, long T, const float *restrict x, float leak, float v,
                              float *restrict u, float *restrict out, long stride) {
    for (long i = 0; i < m; i++) u[i] = 0.0f;
    for (long t = 0; t < T; t++) {
        float *restrict st = out + t * stride;
        for (long i = 0; i < m; i++) {
            float s = MADD(u[i], leak, x[i]);
            st[i] = s;
            u[i] = s - (s > v ? 1.0f : 0.0f) * v;
        }
    }
}

#endif /* DIETSNN_NATIVE_H */
