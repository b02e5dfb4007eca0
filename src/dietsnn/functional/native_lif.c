/* dietsnn's native LIF kernels: the recurrence over time, forward and BPTT (native.h: what
 * they share with native_pool.c).
 *
 * Layout: a layer's currents are [T, N] (time first, N neurons contiguous); the time stride is N,
 * or 0 for a current that is the same at every step (direct encoding's first layer). Work is
 * split over N into one contiguous chunk per thread of an OpenMP team, PyTorch's own where it
 * is built with OpenMP (the process has one libgomp: no second thread pool competes with
 * PyTorch's); every sum is reduced in thread order, so results depend only on the thread count.
 */
#include "native.h"

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
