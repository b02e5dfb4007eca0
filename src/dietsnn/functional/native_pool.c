/* dietsnn's native pooling kernels: 2D average pooling over non-overlapping windows, and the
 * fused block LIF -> dropout -> average pooling, forward and BPTT (native.h: what they share
 * with native_lif.c). Each thread of an OpenMP team takes whole planes; every sum is reduced in
 * thread order, so results depend only on the thread count.
 */
#include "native.h"

/* ---- average pooling ---------------------------------------------------------------------- */
/* k x k windows, stride k, no padding, floor mode, float32 or bfloat16 (summed in float32 and
 * rounded once, as PyTorch's kernel does). NCHW: planes = N * C, C unused. Channels-last (NHWC):
 * planes = N, vectorised over C. Backward: each input pixel gets 1/k^2 of its window's
 * gradient; rows and columns the floor mode drops get 0. */

typedef struct {
    const void *x; void *y; long H; long W; long C; int k; int cl; int bf16; int back;
} pool_args;

INLINE float ld(const void *p, long i, const int bf16) {
    return bf16 ? bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

INLINE void st(void *p, long i, float v, const int bf16) {
    if (bf16) ((uint16_t *)p)[i] = float_to_bf16(v);
    else ((float *)p)[i] = v;
}

/* planes [p0, p1); x: the input (forward) or the pooled gradient (backward). NCHW rows run
 * as vectorisable loops over a row; channels-last over C. */
INLINE void pool_planes(const pool_args *a, long p0, long p1, const int bf16, const int back) {
    const int k = a->k;
    const long H = a->H, W = a->W, Ho = H / k, Wo = W / k, C = a->cl ? a->C : 1;
    const float div = (float)(k * k); /* divided, as PyTorch's kernel does */
    const float inv = (float)(1.0 / (double)(k * k));
    const long es = bf16 ? 2 : 4;
    const long in_plane = (back ? Ho * Wo : H * W) * C, out_plane = (back ? H * W : Ho * Wo) * C;
    for (long p = p0; p < p1; p++) {
        const char *xp = (const char *)a->x + p * in_plane * es;
        char *yp = (char *)a->y + p * out_plane * es;
        if (back && !a->cl) {
            for (long r = 0; r < H; r++) {
                char *dst = yp + r * W * es;
                long q0 = 0;
                if (r < Ho * k) {
                    const char *src = xp + (r / k) * Wo * es;
                    if (k == 2)
                        for (long j = 0; j < Wo; j++) {
                            float v = ld(src, j, bf16) * inv;
                            st(dst, 2 * j, v, bf16);
                            st(dst, 2 * j + 1, v, bf16);
                        }
                    else
                        for (long q = 0; q < Wo * k; q++) st(dst, q, ld(src, q / k, bf16) * inv, bf16);
                    q0 = Wo * k;
                }
                for (long q = q0; q < W; q++) st(dst, q, 0.0f, bf16);
            }
        } else if (back) {
            for (long r = 0; r < H; r++)
                for (long q = 0; q < W; q++) {
                    char *dst = yp + (r * W + q) * C * es;
                    if (r < Ho * k && q < Wo * k) {
                        const char *src = xp + ((r / k) * Wo + q / k) * C * es;
                        for (long c = 0; c < C; c++) st(dst, c, ld(src, c, bf16) * inv, bf16);
                    } else {
                        for (long c = 0; c < C; c++) st(dst, c, 0.0f, bf16);
                    }
                }
        } else if (!a->cl) {
            for (long i = 0; i < Ho; i++) {
                const char *r0 = xp + i * k * W * es, *r1 = r0 + W * es;
                char *out = yp + i * Wo * es;
                if (k == 2) {
                    for (long j = 0; j < Wo; j++)
                        st(out, j, (ld(r0, 2 * j, bf16) + ld(r0, 2 * j + 1, bf16) + ld(r1, 2 * j, bf16)
                                    + ld(r1, 2 * j + 1, bf16)) / div, bf16);
                    continue;
                }
                for (long j = 0; j < Wo; j++) {
                    float acc = 0.0f;
                    for (int di = 0; di < k; di++)
                        for (int dj = 0; dj < k; dj++) acc += ld(r0, di * W + j * k + dj, bf16);
                    st(out, j, acc / div, bf16);
                }
            }
        } else {
            for (long i = 0; i < Ho; i++)
                for (long j = 0; j < Wo; j++) {
                    char *out = yp + (i * Wo + j) * C * es;
                    for (long c = 0; c < C; c++) {
                        float acc = 0.0f;
                        for (int di = 0; di < k; di++)
                            for (int dj = 0; dj < k; dj++)
                                acc += ld(xp, ((i * k + di) * W + j * k + dj) * C + c, bf16);
                        st(out, c, acc / div, bf16);
                    }
                }
        }
    }
}

static void pool_range(const pool_args *a, long p0, long p1) {
    if (a->back) {
        if (a->bf16) pool_planes(a, p0, p1, 1, 1);
        else pool_planes(a, p0, p1, 0, 1);
    } else {
        if (a->bf16) pool_planes(a, p0, p1, 1, 0);
        else pool_planes(a, p0, p1, 0, 0);
    }
}

/* forward (back = 0: x the input [planes, H, W(, C)], y the output) or backward (back = 1: x the
 * output's gradient, y the input's gradient) */
int dietsnn_avg_pool2d(const void *x, void *y, long planes, long H, long W, long C, int k,
                       int channels_last, int bf16, int back, int threads) {
    if (threads < 1) threads = 1;
    if (threads > planes) threads = planes > 0 ? (int)planes : 1;
    pool_args a = {x, y, H, W, C, k, channels_last, bf16, back};
#pragma omp parallel num_threads(threads)
    {
        const long q = THREAD_ID(), n = THREAD_COUNT();
        pool_range(&a, planes * q / n, planes * (q + 1) / n);
    }
    return 0;
}

/* ---- LIF -> dropout -> k x k average pooling, fused --------------------------------------- */
/* The block "neuron, dropout, pooling" of the VGG networks as one operation, NCHW: currents
 * [T, P, H, W] (P = batch x channels planes; time stride P*H*W, or 0 for a constant current),
 * output [T, P, H/k, W/k] (k = 1: dropout only). The spikes and the dropped-out spikes are never
 * stored. Dropout is a per-neuron keep flag (uint8, the same at every step) with the value
 * `scale` where kept; NULL: no dropout. Each thread takes whole planes through all steps.
 * Values are those of the unfused layers, bit for bit in forward: o * (keep ? scale : 0),
 * summed over the window row by row, divided by k*k; rows and columns that the pooling's floor
 * mode drops get no gradient. */

typedef struct {
    const float *x; long sx; long T; long P; long H; long W; int k;
    float leak; float v; const unsigned char *keep; float scale;
    float *out; float *ut; /* ut: [T, P, H, W] u~, or NULL */
    const float *grad; float gamma; int kind; float coef; float *gx; int steps;
    double g_leak; double g_v; int failed;
    long *count; /* forward: [T] spikes fired per step (before dropout), or NULL */
    long *tc;    /* forward: this thread's [T] counts (allocated in lp_range) */
    float g_count; /* backward: dL/d(count), added to every spike's gradient */
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

/* one plane through all steps: whole planes keep the loops long (vectorised); adds the spikes
 * fired at each step (an integer sum: exact and vectorised) to a->tc where counting */
static void lp_forward_plane(lp_args *a, long p, float *restrict u, float *restrict val) {
    const int k = a->k;
    const long H = a->H, W = a->W, Ho = H / k, Wo = W / k, HW = H * W;
    const float leak = a->leak, v = a->v, div = (float)(k * k);
    const unsigned char *restrict kp = a->keep ? a->keep + p * HW : 0;
    for (long q = 0; q < HW; q++) u[q] = 0.0f;
    for (long t = 0; t < a->T; t++) {
        const float *restrict x = a->x + t * a->sx + p * HW;
        int n = 0;
        if (a->ut) {
            float *restrict ut = a->ut + t * a->P * HW + p * HW;
            for (long q = 0; q < HW; q++) {
                float s = MADD(u[q], leak, x[q]);
                float o = s > v ? 1.0f : 0.0f;
                n += s > v;
                ut[q] = s;
                u[q] = s - o * v;
                val[q] = o;
            }
        } else {
            for (long q = 0; q < HW; q++) {
                float s = MADD(u[q], leak, x[q]);
                float o = s > v ? 1.0f : 0.0f;
                n += s > v;
                u[q] = s - o * v;
                val[q] = o;
            }
        }
        if (a->tc) a->tc[t] += n;
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
        if (a->g_count != 0.0f) {
            const float gc = a->g_count;
            for (long q = 0; q < HW; q++) g[q] += gc;
        }
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
    const int counting = a->count && !backward;
    if (counting) a->tc = (long *)calloc((size_t)a->T, sizeof(long)); /* freed by lp_run */
    if (!buf || (counting && !a->tc)) { a->failed = 1; free(buf); return; }
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
    if (proto->count)
        for (long t = 0; t < proto->T; t++) proto->count[t] = 0;
    for (int q = 0; q < used; q++) {
        gl += args[q].g_leak; gv += args[q].g_v;
        failed |= args[q].failed;
        if (args[q].tc)
            for (long t = 0; t < proto->T; t++) proto->count[t] += args[q].tc[t];
        free(args[q].tc);
    }
    if (g_out) { g_out[0] = gl; g_out[1] = gv; }
    return failed ? -1 : 0;
}

int dietsnn_lif_pool_forward(const float *x, long sx, long T, long P, long H, long W, int k,
                             float leak, float v, const unsigned char *keep, float scale,
                             float *out, float *ut, long *count, int threads) {
    lp_args a = {.x = x, .sx = sx, .T = T, .P = P, .H = H, .W = W, .k = k, .leak = leak, .v = v,
                 .keep = keep, .scale = scale, .out = out, .ut = ut, .count = count};
    return lp_run(&a, threads, 0, 0);
}

/* saved: u~ [T, P, H, W], or with steps the constant current [P, H, W]; grad [T, P, Ho, Wo];
 * gx [T, P, H, W] or [P, H, W] with steps; g_count: dL/d(spikes fired), added to the gradient
 * of every spike. g_out receives (dL/dleak, dL/dv). */
int dietsnn_lif_pool_backward(const float *saved, const float *grad, long T, long P, long H,
                              long W, int k, int steps, float leak, float v, float gamma,
                              int kind, float coef, const unsigned char *keep, float scale,
                              float g_count, float *gx, double *g_out, int threads) {
    lp_args a = {.x = saved, .T = T, .P = P, .H = H, .W = W, .k = k, .leak = leak, .v = v,
                 .keep = keep, .scale = scale, .grad = grad, .gamma = gamma, .kind = kind,
                 .coef = coef, .gx = gx, .steps = steps, .g_count = g_count};
    return lp_run(&a, threads, 1, g_out);
}
