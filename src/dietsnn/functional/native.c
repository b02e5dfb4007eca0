/* dietsnn's native CPU kernels: the LIF recurrence over time (forward and BPTT) and 2D average
 * pooling over non-overlapping windows, float32. Built once per machine by native.py with the
 * system C compiler and loaded with ctypes: no PyTorch headers, no Python in the loops.
 *
 * Layout: a layer's currents are [T, N] (time first, N neurons contiguous); the time stride is N,
 * or 0 for a current that is the same at every step (direct encoding's first layer). Work is
 * split over N into one contiguous chunk per thread of an OpenMP team, PyTorch's own where it
 * is built with OpenMP (the process has one libgomp: no second thread pool competes with
 * PyTorch's); every sum is reduced in thread order, so results depend only on the thread count.
 *
 * The arithmetic is the one of neuron.py's eager loops, operation by operation: built without
 * implicit floating-point contraction, with a fused multiply-add exactly where PyTorch's
 * vectorised CPU kernels use one (addcmul) on CPUs that have it, so forward results are
 * bit-identical to the eager loops.
 */
#include <math.h>
#include <stdlib.h>
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

/* ---- forward ------------------------------------------------------------------------------ */

typedef struct {
    const float *x; long sx; long T; long N; long n0; long n1;
    float leak; float v;
    float *u;       /* [N] membrane: read (unless zero_u) and written back */
    int zero_u;
    float *spikes;  /* [T, N] */
    float *ut;      /* [T, N] or NULL */
} fwd_args;

static void fwd_range(const fwd_args *a) {
    const float leak = a->leak, v = a->v;
    float ub[BLK];
    for (long b = a->n0; b < a->n1; b += BLK) {
        const long m = (a->n1 - b < BLK) ? a->n1 - b : BLK;
        for (long i = 0; i < m; i++) ub[i] = a->zero_u ? 0.0f : a->u[b + i];
        for (long t = 0; t < a->T; t++) {
            const float *xt = a->x + t * a->sx + b;
            float *st = a->spikes + t * a->N + b;
            float *utt = a->ut ? a->ut + t * a->N + b : 0;
            if (utt) {
                for (long i = 0; i < m; i++) {
                    float s = MADD(ub[i], leak, xt[i]);
                    float o = s > v ? 1.0f : 0.0f;
                    utt[i] = s;
                    st[i] = o;
                    ub[i] = s - o * v;
                }
            } else {
                for (long i = 0; i < m; i++) {
                    float s = MADD(ub[i], leak, xt[i]);
                    float o = s > v ? 1.0f : 0.0f;
                    st[i] = o;
                    ub[i] = s - o * v;
                }
            }
        }
        if (a->u) for (long i = 0; i < m; i++) a->u[b + i] = ub[i];
    }
}

/* ---- backward ----------------------------------------------------------------------------- */

typedef struct {
    const float *saved; /* u~ [T, N], or with steps the one-step current [N] */
    const float *grad;  /* dL/dspikes [T, N] */
    long T; long N; long n0; long n1; int steps;
    float leak; float v; float gamma; int kind; float coef;
    float *gx;          /* [T, N], or [N] (summed over time) with steps */
    double g_leak; double g_v; int failed;
} bwd_args;

#define INLINE static inline __attribute__((always_inline))

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
 * case, chosen once per call (has_prev: prev is not NULL; store: gxt is written, else summed) */
static void bwd_step_any(long m, const float *utt, const float *gt, const float *prev,
                         float *gxt, float *d, float *gl, float *gv, float *sum, float leak,
                         float v, float inv_v, float gamma, float coef, int kind) {
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
static void recompute_u_tilde(long m, long T, const float *restrict x, float leak, float v,
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

static void bwd_block(bwd_args *a, long b, long m, float *scratch) {
    const float leak = a->leak, v = a->v, gamma = a->gamma, inv_v = 1.0f / v;
    const long N = a->N, T = a->T;
    float d[BLK], gl[BLK], gv[BLK], sum[BLK];
    const float *ut;
    long sut;
    if (a->steps) { /* recompute u~ of the constant current into scratch [T, BLK] */
        recompute_u_tilde(m, T, a->saved + b, leak, v, d, scratch, BLK);
        ut = scratch; sut = BLK;
    } else {
        ut = a->saved + b; sut = N;
    }
    for (long i = 0; i < m; i++) { d[i] = 0.0f; gl[i] = 0.0f; gv[i] = 0.0f; sum[i] = 0.0f; }
    for (long t = T - 1; t >= 0; t--) {
        const float *prev = t > 0 ? ut + (t - 1) * sut : 0;
        bwd_step_any(m, ut + t * sut, a->grad + t * N + b, prev,
                     a->steps ? 0 : a->gx + t * N + b, d, gl, gv, sum, leak, v, inv_v, gamma,
                     a->coef, a->kind);
    }
    double sl = 0.0, sv = 0.0;
    for (long i = 0; i < m; i++) { sl += gl[i]; sv += gv[i]; }
    a->g_leak += sl; a->g_v += sv;
    if (a->steps) for (long i = 0; i < m; i++) a->gx[b + i] = sum[i];
}

static void bwd_range(bwd_args *a) {
    float *scratch = 0;
    if (a->steps) {
        scratch = (float *)malloc(sizeof(float) * (size_t)a->T * BLK);
        if (!scratch) { a->failed = 1; return; }
    }
    for (long b = a->n0; b < a->n1; b += BLK)
        bwd_block(a, b, (a->n1 - b < BLK) ? a->n1 - b : BLK, scratch);
    free(scratch);
}

/* ---- threads ------------------------------------------------------------------------------ */

#define MAX_THREADS 256

/* chunk boundaries over N, multiples of 64 neurons (whole cache lines) */
static long chunk(long N, int k, int n) {
    long per = ((N + n - 1) / n + 63) / 64 * 64;
    long e = per * k;
    return e < N ? e : N;
}

static int clamp_threads(int threads, long N) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    long most = (N + 63) / 64;
    return threads > most ? (int)(most > 0 ? most : 1) : threads;
}

/* Runs the LIF forward. Returns 0. */
int dietsnn_lif_forward(const float *x, long sx, long T, long N, float leak, float v, float *u,
                        int zero_u, float *spikes, float *ut, int threads) {
    threads = clamp_threads(threads, N);
#pragma omp parallel num_threads(threads)
    {
        const int k = THREAD_ID(), n = THREAD_COUNT();
        fwd_args a = {x, sx, T, N, chunk(N, k, n), chunk(N, k + 1, n), leak, v, u, zero_u,
                      spikes, ut};
        fwd_range(&a);
    }
    return 0;
}

/* BPTT of the forward; g_out receives (dL/dleak, dL/dv). Returns 0, or -1 out of memory. */
int dietsnn_lif_backward(const float *saved, const float *grad, long T, long N, int steps,
                         float leak, float v, float gamma, int kind, float coef, float *gx,
                         double *g_out, int threads) {
    threads = clamp_threads(threads, N);
    bwd_args args[MAX_THREADS];
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
        const int k = THREAD_ID(), n = THREAD_COUNT();
        bwd_args a = {saved, grad, T, N, chunk(N, k, n), chunk(N, k + 1, n), steps, leak, v,
                      gamma, kind, coef, gx, 0.0, 0.0, 0};
        bwd_range(&a);
        args[k] = a;
        if (k == 0) used = n;
    }
    double gl = 0.0, gv = 0.0;
    int failed = 0;
    for (int k = 0; k < used; k++) { gl += args[k].g_leak; gv += args[k].g_v; failed |= args[k].failed; }
    g_out[0] = gl; g_out[1] = gv;
    return failed ? -1 : 0;
}

/* ---- average pooling ---------------------------------------------------------------------- */

typedef struct {
    const float *x; float *y; long planes; long H; long W; long C; int k; int cl;
    long p0; long p1;
} pool_args;

/* k x k windows, stride k, no padding, floor mode. NCHW: planes = N * C, C unused.
 * Channels-last (NHWC): planes = N, vectorised over C. */
static void pool_range(const pool_args *a) {
    const int k = a->k;
    const long H = a->H, W = a->W, Ho = H / k, Wo = W / k, C = a->C;
    const float div = (float)(k * k); /* divided, as PyTorch's kernel does */
    for (long p = a->p0; p < a->p1; p++) {
        if (!a->cl) {
            const float *xp = a->x + p * H * W;
            float *yp = a->y + p * Ho * Wo;
            for (long i = 0; i < Ho; i++) {
                float *restrict out = yp + i * Wo;
                if (k == 2) {
                    const float *restrict r0 = xp + 2 * i * W, *restrict r1 = r0 + W;
                    for (long j = 0; j < Wo; j++)
                        out[j] = (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]) / div;
                    continue;
                }
                for (long j = 0; j < Wo; j++) {
                    float acc = 0.0f;
                    for (int di = 0; di < k; di++)
                        for (int dj = 0; dj < k; dj++) acc += xp[(i * k + di) * W + j * k + dj];
                    out[j] = acc / div;
                }
            }
        } else {
            const float *xp = a->x + p * H * W * C;
            float *yp = a->y + p * Ho * Wo * C;
            for (long i = 0; i < Ho; i++)
                for (long j = 0; j < Wo; j++) {
                    float *restrict out = yp + (i * Wo + j) * C;
                    for (long c = 0; c < C; c++) out[c] = 0.0f;
                    for (int di = 0; di < k; di++)
                        for (int dj = 0; dj < k; dj++) {
                            const float *restrict in = xp + ((i * k + di) * W + j * k + dj) * C;
                            for (long c = 0; c < C; c++) out[c] += in[c];
                        }
                    for (long c = 0; c < C; c++) out[c] /= div;
                }
        }
    }
}

int dietsnn_avg_pool2d(const float *x, float *y, long planes, long H, long W, long C, int k,
                       int channels_last, int threads) {
    if (threads < 1) threads = 1;
    if (threads > planes) threads = planes > 0 ? (int)planes : 1;
#pragma omp parallel num_threads(threads)
    {
        const long q = THREAD_ID(), n = THREAD_COUNT();
        pool_args a = {x, y, planes, H, W, C, k, channels_last, planes * q / n,
                       planes * (q + 1) / n};
        pool_range(&a);
    }
    return 0;
}

/* ---- LIF -> dropout -> k x k average pooling, fused --------------------------------------- */
/* The block "neuron, dropout, pooling" of the VGG networks as one operation, NCHW: currents
 * [T, P, H, W] (P = batch x channels planes; time stride P*H*W, or 0 for a constant current),
 * output [T, P, H/k, W/k] (k = 1: dropout only). The spikes and the dropped-out spikes are never
 * stored. Dropout is a per-neuron keep flag (uint8, the same at every step) with the value
 * `scale` where kept; NULL: no dropout. Each thread takes whole planes through all steps. Values are those of the unfused layers,
 * bit for bit in forward: o * (keep ? scale : 0), summed over the window row by row, divided
 * by k*k; rows and columns that the pooling's floor mode drops get no gradient. */

typedef struct {
    const float *x; long sx; long T; long P; long H; long W; int k;
    float leak; float v; const unsigned char *keep; float scale;
    float *out; float *ut; /* ut: [T, P, H, W] u~, or NULL */
    const float *grad; float gamma; int kind; float coef; float *gx; int steps;
    double g_leak; double g_v; int failed;
} lp_args;

/* the input gradient of one step's plane: the pooled gradient spread over its windows, times
 * 1/k^2, times the dropout mask (zero where the pooling drops rows or columns) */
static void lp_spread(const lp_args *a, long p, const float *restrict gp, float *restrict g) {
    const int k = a->k;
    const long H = a->H, W = a->W, Ho = H / k, Wo = W / k, HW = H * W;
    const float inv = (float)(1.0 / (double)(k * k));
    for (long q = 0; q < HW; q++) g[q] = 0.0f;
    for (long row = 0; row < Ho * k; row++) {
        const float *restrict src = gp + (row / k) * Wo;
        float *restrict dst = g + row * W;
        if (k == 1) {
            for (long j = 0; j < Wo; j++) dst[j] = src[j] * inv;
        } else if (k == 2) {
            for (long j = 0; j < Wo; j++) {
                float gw = src[j] * inv;
                dst[2 * j] = gw;
                dst[2 * j + 1] = gw;
            }
        } else {
            for (long w = 0; w < Wo * k; w++) dst[w] = src[w / k] * inv;
        }
    }
    if (a->keep) {
        const unsigned char *restrict kp = a->keep + p * HW;
        const float scale = a->scale;
        for (long q = 0; q < HW; q++) g[q] = g[q] * (kp[q] ? scale : 0.0f);
    }
}

/* one plane through all steps: whole planes keep the loops long (vectorised) */
static void lp_forward_plane(lp_args *a, long p, float *restrict u, float *restrict val) {
    const int k = a->k;
    const long H = a->H, W = a->W, Ho = H / k, Wo = W / k, HW = H * W;
    const float leak = a->leak, v = a->v, div = (float)(k * k);
    const unsigned char *restrict kp = a->keep ? a->keep + p * HW : 0;
    for (long q = 0; q < HW; q++) u[q] = 0.0f;
    for (long t = 0; t < a->T; t++) {
        const float *restrict x = a->x + t * a->sx + p * HW;
        if (a->ut) {
            float *restrict ut = a->ut + t * a->P * HW + p * HW;
            for (long q = 0; q < HW; q++) {
                float s = MADD(u[q], leak, x[q]);
                float o = s > v ? 1.0f : 0.0f;
                ut[q] = s;
                u[q] = s - o * v;
                val[q] = o;
            }
        } else {
            for (long q = 0; q < HW; q++) {
                float s = MADD(u[q], leak, x[q]);
                float o = s > v ? 1.0f : 0.0f;
                u[q] = s - o * v;
                val[q] = o;
            }
        }
        if (kp) {
            const float scale = a->scale;
            for (long q = 0; q < HW; q++) val[q] = val[q] * (kp[q] ? scale : 0.0f);
        }
        float *restrict out = a->out + (t * a->P + p) * Ho * Wo;
        if (k == 1) {
            for (long q = 0; q < HW; q++) out[q] = val[q] / div;
        } else if (k == 2) { /* the same sums in the same order, vectorised */
            for (long i = 0; i < Ho; i++) {
                const float *restrict v0 = val + 2 * i * W, *restrict v1 = v0 + W;
                float *restrict o = out + i * Wo;
                for (long j = 0; j < Wo; j++)
                    o[j] = (v0[2 * j] + v0[2 * j + 1] + v1[2 * j] + v1[2 * j + 1]) / div;
            }
        } else {
            for (long i = 0; i < Ho; i++)
                for (long j = 0; j < Wo; j++) {
                    float acc = 0.0f;
                    for (int r = 0; r < k; r++)
                        for (int dj = 0; dj < k; dj++) acc += val[(i * k + r) * W + j * k + dj];
                    out[i * Wo + j] = acc / div;
                }
        }
    }
}

/* BPTT through pooling, dropout and the LIF for one plane. scratch: [T][H*W] for the
 * recomputed u~ of a constant current. */
static void lp_backward_plane(lp_args *a, long p, float *d, float *gl, float *gv, float *g,
                              float *sum, float *scratch) {
    const long HW = a->H * a->W, T = a->T, P = a->P;
    const long Ho = a->H / a->k, Wo = a->W / a->k;
    const float leak = a->leak, v = a->v, gamma = a->gamma, inv_v = 1.0f / v;
    const float *ut;
    long sut;
    if (a->steps) { /* d as the membrane while recomputing */
        recompute_u_tilde(HW, T, a->x + p * HW, leak, v, d, scratch, HW);
        ut = scratch; sut = HW;
    } else {
        ut = a->x + p * HW; sut = P * HW;
    }
    for (long q = 0; q < HW; q++) { d[q] = 0.0f; sum[q] = 0.0f; }
    for (long t = T - 1; t >= 0; t--) {
        lp_spread(a, p, a->grad + (t * P + p) * Ho * Wo, g);
        const float *prev = t > 0 ? ut + (t - 1) * sut : 0;
        bwd_step_any(HW, ut + t * sut, g, prev, a->steps ? 0 : a->gx + t * P * HW + p * HW, d,
                     gl, gv, sum, leak, v, inv_v, gamma, a->coef, a->kind);
    }
    if (a->steps) {
        float *restrict gx = a->gx + p * HW;
        for (long q = 0; q < HW; q++) gx[q] = sum[q];
    }
}

static void lp_range(lp_args *a, long p0, long p1, int backward) {
    const long n = a->H * a->W;
    float *buf = (float *)malloc(sizeof(float) * (size_t)(6 * n + (a->steps ? a->T * n : 0)) + 64);
    if (!buf) { a->failed = 1; return; }
    float *d = buf, *gl = d + n, *gv = gl + n, *g = gv + n, *sum = g + n, *val = sum + n;
    float *scratch = val + n;
    double sl = 0.0, sv = 0.0;
    for (long p = p0; p < p1; p++) {
        if (!backward) { lp_forward_plane(a, p, d, val); continue; }
        for (long q = 0; q < n; q++) { gl[q] = 0.0f; gv[q] = 0.0f; }
        lp_backward_plane(a, p, d, gl, gv, g, sum, scratch);
        for (long q = 0; q < n; q++) { sl += gl[q]; sv += gv[q]; } /* per plane, in double */
    }
    a->g_leak = sl; a->g_v = sv;
    free(buf);
}

static int lp_run(lp_args *proto, int threads, int backward, double *g_out) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > proto->P) threads = proto->P > 0 ? (int)proto->P : 1;
    lp_args args[MAX_THREADS];
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
        const int q = THREAD_ID(), n = THREAD_COUNT();
        lp_args a = *proto;
        lp_range(&a, a.P * q / n, a.P * (q + 1) / n, backward);
        args[q] = a;
        if (q == 0) used = n;
    }
    double gl = 0.0, gv = 0.0;
    int failed = 0;
    for (int q = 0; q < used; q++) { gl += args[q].g_leak; gv += args[q].g_v; failed |= args[q].failed; }
    if (g_out) { g_out[0] = gl; g_out[1] = gv; }
    return failed ? -1 : 0;
}

int dietsnn_lif_pool_forward(const float *x, long sx, long T, long P, long H, long W, int k,
                             float leak, float v, const unsigned char *keep, float scale,
                             float *out, float *ut, int threads) {
    lp_args a = {x, sx, T, P, H, W, k, leak, v, keep, scale, out, ut, 0, 0.0f, 0, 0.0f, 0, 0,
                 0.0, 0.0, 0};
    return lp_run(&a, threads, 0, 0);
}

/* saved: u~ [T, P, H, W], or with steps the constant current [P, H, W]; grad [T, P, Ho, Wo];
 * gx [T, P, H, W] or [P, H, W] with steps. g_out receives (dL/dleak, dL/dv). */
int dietsnn_lif_pool_backward(const float *saved, const float *grad, long T, long P, long H,
                              long W, int k, int steps, float leak, float v, float gamma,
                              int kind, float coef, const unsigned char *keep, float scale,
                              float *gx, double *g_out, int threads) {
    lp_args a = {saved, 0, T, P, H, W, k, leak, v, keep, scale, 0, 0, grad, gamma, kind, coef, gx,
                 steps, 0.0, 0.0, 0};
    return lp_run(&a, threads, 1, g_out);
}
