/*
dev/cuda/attention_backward.cu: the attention backward on the GPU, version by version, each checked against the CPU.
The twin of dev/cuda/attention_forward.cu: the same flags, layout and report.

    forward, row t:   s_tj = tau q_t . k_j for the keys j in [lo_t, hi_t) (the slot's s_* first),  tau = 1/sqrt(hs)
                      p_t = the variant's row map of s_t,  y_t = p_* v* + sum_j p_tj v_j
    backward, for dO: dp_tj = dO_t . v_j (dp_* = dO_t . v*),  ds_t = the row map's derivative (attn_row_backward)
                      dq_t = tau (ds_* k* + sum_j ds_tj k_j),  dk_j = tau sum_t ds_tj q_t,  dv_j = sum_t p_tj dO_t,
                      and the slot's ds_* per row (a trainer sums dk*, dv* and the sink logit's gradient from it)

CPU twin: attention_backward in train_gpt_cpu.cpp (a pass over the query rows, then one over the keys). The reference
here is that row form (attn_row_forward, attn_row_backward) in float, one row at a time, every multiply-add an sk_fma,
built the way test_variants.cpp builds its own. (Not double: the row form is __host__ __device__ and numerics.h's
double exp is host-only: a double instance draws nvcc warnings.)
Inputs: q, k, v, dO, k*, v* and the sink logits drawn N(0, 1) (seed 42). The forward's per-row state (m, l) and output
O, which version 2 starts from, come from the reference's pass (attn_stream_tile over the whole row, O = the row
form's output) and are uploaded: the forward ladder checks the forward, this one only the backward.
Kinks: softpick's derivative jumps at a score of 0, clipped softmax's at a clip edge, the clamp normaliser's at a row
sum of +-1. An entry within rounding of one lands on a side by chance, and the other side moves a gradient far beyond
any tolerance (clipped: by (zeta - gamma) q dp in ds). Versions 1 and 2 compute the scores as the reference does (the
same fma chain), so today only nvcc's contraction of clipped's (zeta - gamma) q + gamma can cross one, and only on the
GPU; a version that sums in another order moves every entry. So a query row with an entry within reach of a kink
(row_near_kink: 5 times the worst float rounding or more) gets a new query, drawn until it has none; the first line
of the report counts them (68 of 4096 rows for clipped at T 1024).

  version 1  the row form (the exact engine runs its arithmetic as passes of a thread per element,
             attention_backward_passes): one thread per query row computes its scores, weights, dp and ds
             in global scratch (4 (T + 1) floats per row) and its dq; then one thread per key sums its dk and dv
             from the stored ds and p of the rows that see it. Slow, T x T scratch.
  version 2  flash-style, SIMT, from the forward's state: nothing of size T x T. The per-row work is the backward's
             part of kernels/attention_flash.cuh, which test_variants.cpp runs on the CPU against the row form.
             dq kernel: a block of 64 threads per (b, h, tile of 64 query rows), thread i owns row t0 + i as a
             FlashGradRow in registers (q, dO, dq, state, D); the block walks the key tiles its rows see, each tile
             of K and V (64 x hs) staged in shared memory, its rows hs + 4 floats apart (flash_stage_stride: under a
             sliding window the rows of a warp read 32 different keys at once, which at a stride of hs would share
             their banks). Clipped softmax first takes a pass for D. It writes dq, the slot's ds_* and D per row
             (B, NH, T), which the second kernel reads.
             dk/dv kernel: a block of 64 threads per (b, h, tile of 64 keys), thread i owns key j0 + i (dk, dv in
             registers; its K and V rows in shared memory, hs + 4 floats apart, which it reads in 16-byte vectors
             with no bank conflict). The block walks the query tiles that see its keys (flash_tile_queries), 16 rows
             at a time: their q, dO, state and D staged in shared memory as FlashGradRows, 16-byte aligned, so that
             q and dO are read in vectors too (16 rows and the block's keys fill 46.5 of the 48 KB of static shared
             memory). Every output has one owner: no atomics.

Error: per tensor (dq, dk, dv, the slot's ds_*), the max error over max |ref| and the relative L2 error, each at most
1e-5. Measured with --cpu-check, which runs both versions' device code on the CPU: version 1 equals the reference bit
for bit there (the same operations in the same order); version 2 (the streaming forms, D = dO . O) is below 7e-7 on
every configuration of dev/gpu/check.sh at T 200 and at T 1024 (B 1, 4 heads), and its dv equals the reference's. On
the GPU nvcc fuses some multiply-adds of the row maps (plain nvcc flags, as for the forward ladder), a change of an
ulp or so per operation; 1e-5, the forward ladder's tolerance, is 15 times the CPU's worst. Not covered: rows whose
gradient is all cancellation, 0 in exact arithmetic (softpick with one visible key, --mask window --mask-param 1):
no relative measure applies there, and the check fails them (test_variants.cpp leaves them out the same way).

Layout as in the trainers: qkv (B, T, 3C) with q | k | v of head h at h * hs in each third; dO (B, T, C); the
gradients dq | dk | dv in one (B, T, 3C) array like qkv. hs = 64 (the registers are sized by it). ALiBi and the
feature maps are not here (they change the scores, not the kernels' structure), nor the slot parameters' sums over t.

Build: make dev-cuda (nvcc, sm_80 and sm_90). Run on a GPU:
    build/dev_cuda/attention_backward [--version 0|1|2] [--attn NAME] [--attn-norm none|sum|clamp]
                                      [--slot none|kv|logit|zero] [--mask causal|window|prefix] [--mask-param N]
                                      [-B N] [--heads N] [-T N] [--cpu-check]
Defaults: --version 0 (every version), softmax, none, no slot, causal, B 4, 12 heads, T 1024. It prints each version's
errors against the CPU, its time and TFLOP/s, counting 10 B NH hs flops per visible (query, key) pair: the scores, dp,
dq, dk and dv are each 2 hs per pair (version 2 computes the scores and dp twice, once per kernel; clipped softmax once
more for D; the count is the algorithm's, as the FlashAttention papers count it), and the share of this GPU's fp32
roofline that is (common/roofline.h; at least the inputs read and the gradients written once). It exits 1 when a version
is beyond the tolerance. --cpu-check needs no GPU: it runs the versions' per-thread code on the CPU, version 2 a block
at a time with the shared-memory tiles as host arrays, and checks it the same way (use small sizes: -B 1 --heads 2 -T
200 takes a second).
*/
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <random>
#include <thread>
#include <vector>

#include "../../kernels/attention_flash.cuh"
#include "ladder.cuh"

#define HS 64            // head size (the registers are sized by it)
#define TILE 64          // threads per block: query rows of a dq block, keys of a dk/dv block and of a staged key tile
#define QTILE 16         // query rows per staged tile of the dk/dv kernel
static constexpr int KS = flash_stage_stride(HS);  // floats between the rows of a dq block's staged key tile (68)
#define TOLERANCE 1e-5
#define KINK_MARGIN 1e-4 // row_near_kink's distance, relative to the quantity's scale



// Where a backward reads and writes: device pointers for the kernels, host pointers for --cpu-check.
struct BackwardArgs {
    const float *qkv, *dout;             // (B, T, 3C) and (B, T, C)
    const float *kstar, *vstar, *logit;  // the slot's k*, v* (NH, hs) and sink logit (NH)
    const float *m, *l, *out;            // the forward's row state (B, NH, T) each and its output O (B, T, C)
    float* dqkv;                         // dq | dk | dv (B, T, 3C)
    float* ds_slot;                      // the slot's ds_* per row (B, NH, T)
    float* D;                            // version 2: D per row (B, NH, T), from the dq kernel to the dk/dv kernel
    float* scratch;                      // version 1: s, p, dp, ds of every row, 4 (T + 1) floats each
};

SK_HD static inline bool slot_has_value(const AttnSpec& spec) {
    return spec.slot == SLOT_KV && spec.vstar != VSTAR_ZERO;
}

// the slot's score for the query qt of head h
SK_HD static inline float slot_score(const AttnSpec& spec, const float* qt, const float* kstar, const float* logit,
                                     int h, float tau) {
    if (spec.slot == SLOT_KV) {
        float dot = 0;
        for (int d = 0; d < HS; d++) dot = sk_fma(qt[d], kstar[h * HS + d], dot);
        return dot * tau;
    }
    return spec.slot == SLOT_LOGIT ? logit[h] : 0.0f;
}

// ---------------------------------------------------------------------------------------------------------------
// the inputs and the CPU reference

struct Inputs {
    std::vector<float> qkv, dout, kstar, vstar, logit;
    int redrawn = 0;  // query rows drawn again away from a kink
};

// The scores of row (b, h, t), the slot's first: s[0..n), returns n; its visible keys in [lo, hi).
static int row_scores(float* s, const Inputs& in, const Problem& pr, int b, int h, int t, int* lo, int* hi) {
    int C = pr.NH * HS, n = 0;
    float tau = 1.0f / sqrtf((float)HS);
    const float* qt = &in.qkv[((size_t)b * pr.T + t) * 3 * C + h * HS];
    attn_visible_keys(pr.spec, t, pr.T, lo, hi);
    if (attn_has_slot(pr.spec)) s[n++] = slot_score(pr.spec, qt, in.kstar.data(), in.logit.data(), h, tau);
    for (int j = *lo; j < *hi; j++) {
        const float* kj = &in.qkv[((size_t)b * pr.T + j) * 3 * C + C + h * HS];
        float dot = 0;
        for (int d = 0; d < HS; d++) dot = sk_fma(qt[d], kj[d], dot);
        s[n++] = dot * tau;
    }
    return n;
}

// Does the row (scores s[0..n); s[first_computed..] are dot products, the others exact) hold an entry where float
// rounding decides on which side of a kink of the derivative it falls? The margins, KINK_MARGIN of each quantity's
// scale, are 5 times the worst float rounding or more: a score of N(0, 1) vectors is off by at most
// 64 2^-24 tau sum_d |q_d k_d| ~ 2e-5, and a softmax value or a row sum by that much relatively.
//   softpick: a computed score at 0 (its backward's 1[s > 0] and sign(s))
//   clipped:  v = (zeta - gamma) q + gamma at 0 (|v| < margin |gamma|) or at 1 when zeta > 1, q = softmax(s) (with
//             zeta = 1 the upper edge is q = 1, where the jump, (1 - q) (zeta - gamma) dp, is 0)
//   clamp:    the row sum r of a at +-1 (its c = sign(r) [|r| > 1]), margin relative to sum |a|
static bool row_near_kink(const AttnSpec& spec, const float* s, float* work, int n, int first_computed, int T) {
    if (spec.variant == ATTN_SOFTPICK) {
        for (int j = first_computed; j < n; j++)
            if (fabs(s[j]) < KINK_MARGIN) return true;
    } else if (spec.variant == ATTN_CLIPPED) {
        double gamma = attn_clip_gamma<float>(spec, T), zeta = spec.clip_zeta;
        sk_softmax_row(s, work, n, 1.0f);
        for (int j = 0; j < n; j++) {
            double v = (zeta - gamma) * work[j] + gamma;
            if (fabs(v) < KINK_MARGIN * fabs(gamma) || (zeta > 1 && fabs(v - 1) < KINK_MARGIN)) return true;
        }
    } else if (spec.variant != ATTN_SOFTMAX && spec.normaliser == ANORM_CLAMP) {
        double r = 0, r_abs = 0;
        for (int j = 0; j < n; j++) {
            double a = attn_pointwise(spec, s[j]);
            r += a;
            r_abs += fabs(a);
        }
        if (fabs(fabs(r) - 1) < KINK_MARGIN * r_abs) return true;
    }
    return false;
}

static Inputs draw_inputs(const Problem& pr) {
    int C = pr.NH * HS;
    Inputs in;
    in.qkv.resize((size_t)pr.B * pr.T * 3 * C);
    in.dout.resize((size_t)pr.B * pr.T * C);
    in.kstar.resize(pr.NH * HS);
    in.vstar.resize(pr.NH * HS);
    in.logit.resize(pr.NH);
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto* x : {&in.qkv, &in.dout, &in.kstar, &in.vstar, &in.logit})
        for (float& e : *x) e = nd(rng);
    std::vector<int> redrawn(pr.B * pr.NH, 0);
    int first_computed = pr.spec.slot == SLOT_LOGIT || pr.spec.slot == SLOT_ZERO;
    for_each_head(pr.B * pr.NH, [&](int bh) {  // a row's query is its own: heads and rows redraw independently
        int b = bh / pr.NH, h = bh % pr.NH;
        std::vector<float> s(pr.T + 1), work(pr.T + 1);
        for (int t = 0; t < pr.T; t++) {
            for (unsigned attempt = 1;; attempt++) {
                int lo, hi, n = row_scores(s.data(), in, pr, b, h, t, &lo, &hi);
                if (!row_near_kink(pr.spec, s.data(), work.data(), n, first_computed, pr.T)) break;
                if (attempt > 1000) {
                    fprintf(stderr, "error: row (%d, %d, %d) keeps a score at a kink of --attn %s after 1000 draws "
                                    "(another -T or --mask-param gives it other keys)\n",
                            b, h, t, attn_variant_names[pr.spec.variant]);
                    exit(1);
                }
                std::seed_seq seq{42u, (unsigned)bh, (unsigned)t, attempt};
                std::mt19937 row_rng(seq);
                float* qt = &in.qkv[((size_t)b * pr.T + t) * 3 * C + h * HS];
                for (int d = 0; d < HS; d++) qt[d] = nd(row_rng);
                redrawn[bh]++;
            }
        }
    });
    for (int r : redrawn) in.redrawn += r;
    return in;
}

struct Reference {
    std::vector<float> dqkv, ds_slot;  // the gradients (B, T, 3C) and the slot's ds_* (B, NH, T)
    std::vector<float> m, l, out;      // the forward's state and output, version 2's input
};

// The row form row by row: dq of the row, and the row's terms of dk and dv of the keys it sees (t in order, as the
// exact engine's keys pass sums them). Every multiply-add an sk_fma.
static Reference attention_backward_cpu(const Inputs& in, const Problem& pr) {
    const AttnSpec& spec = pr.spec;
    int C = pr.NH * HS, T = pr.T, key0 = attn_has_slot(spec);
    float tau = 1.0f / sqrtf((float)HS);
    size_t rows = (size_t)pr.B * pr.NH * T;
    Reference ref;
    ref.dqkv.assign((size_t)pr.B * T * 3 * C, 0.0f);
    ref.ds_slot.assign(rows, 0.0f);
    ref.m.resize(rows);
    ref.l.resize(rows);
    ref.out.resize((size_t)pr.B * T * C);
    for_each_head(pr.B * pr.NH, [&](int bh) {
        int b = bh / pr.NH, h = bh % pr.NH;
        std::vector<float> s(T + 1), p(T + 1), dp(T + 1), ds(T + 1);
        const float* vstar = &in.vstar[h * HS];
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)bh * T + t;
            int lo, hi, n = row_scores(s.data(), in, pr, b, h, t, &lo, &hi);
            const float* qt = &in.qkv[((size_t)b * T + t) * 3 * C + h * HS];
            const float* dy = &in.dout[((size_t)b * T + t) * C + h * HS];
            if (key0) {
                dp[0] = 0;
                if (slot_has_value(spec))
                    for (int d = 0; d < HS; d++) dp[0] = sk_fma(dy[d], vstar[d], dp[0]);
            }
            for (int j = lo; j < hi; j++) {
                const float* vj = &in.qkv[((size_t)b * T + j) * 3 * C + 2 * C + h * HS];
                float sum = 0;
                for (int d = 0; d < HS; d++) sum = sk_fma(dy[d], vj[d], sum);
                dp[key0 + j - lo] = sum;
            }
            attn_row_forward(spec, s.data(), p.data(), n, T);
            AttnStreamState<float> st = attn_stream_init<float>(spec);
            attn_stream_tile(spec, &st, s.data(), (const float*)nullptr, 0, n, 0, (float*)nullptr);
            ref.m[r] = st.m;
            ref.l[r] = st.l;
            float* y = &ref.out[((size_t)b * T + t) * C + h * HS];
            for (int d = 0; d < HS; d++) y[d] = slot_has_value(spec) ? p[0] * vstar[d] : 0.0f;
            for (int j = lo; j < hi; j++) {
                const float* vj = &in.qkv[((size_t)b * T + j) * 3 * C + 2 * C + h * HS];
                for (int d = 0; d < HS; d++) y[d] = sk_fma(p[key0 + j - lo], vj[d], y[d]);
            }
            attn_row_backward(spec, s.data(), p.data(), dp.data(), ds.data(), n, T);
            if (key0) ref.ds_slot[r] = ds[0];
            float* dqt = &ref.dqkv[((size_t)b * T + t) * 3 * C + h * HS];
            if (spec.slot == SLOT_KV)
                for (int d = 0; d < HS; d++) dqt[d] = sk_fma(ds[0] * tau, in.kstar[h * HS + d], dqt[d]);
            for (int j = lo; j < hi; j++) {
                const float* kj = &in.qkv[((size_t)b * T + j) * 3 * C + C + h * HS];
                float* dkj = &ref.dqkv[((size_t)b * T + j) * 3 * C + C + h * HS];
                float* dvj = dkj + C;
                float g = ds[key0 + j - lo] * tau, pj = p[key0 + j - lo];
                for (int d = 0; d < HS; d++) {
                    dqt[d] = sk_fma(g, kj[d], dqt[d]);
                    dkj[d] = sk_fma(g, qt[d], dkj[d]);
                    dvj[d] = sk_fma(pj, dy[d], dvj[d]);
                }
            }
        }
    });
    return ref;
}

// ---------------------------------------------------------------------------------------------------------------
// version 1: the row form. Thread r = (b, h, t) of the rows pass, then thread r = (b, h, j) of the keys pass.

SK_HD static void backward_row1(const BackwardArgs& a, const Problem& pr, size_t r) {
    const AttnSpec& spec = pr.spec;
    int NH = pr.NH, T = pr.T, C = NH * HS, key0 = attn_has_slot(spec);
    int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), t = (int)(r % T);
    float tau = 1.0f / sqrtf((float)HS);
    float *s = a.scratch + r * 4 * (T + 1), *p = s + (T + 1), *dp = p + (T + 1), *ds = dp + (T + 1);
    const float* qt = a.qkv + ((size_t)b * T + t) * 3 * C + h * HS;
    const float* dy = a.dout + ((size_t)b * T + t) * C + h * HS;
    int lo, hi, n = 0;
    attn_visible_keys(spec, t, T, &lo, &hi);
    if (key0) {
        s[0] = slot_score(spec, qt, a.kstar, a.logit, h, tau);
        dp[0] = 0;
        if (slot_has_value(spec))
            for (int d = 0; d < HS; d++) dp[0] = sk_fma(dy[d], a.vstar[h * HS + d], dp[0]);
        n = 1;
    }
    for (int j = lo; j < hi; j++, n++) {
        const float* kj = a.qkv + ((size_t)b * T + j) * 3 * C + C + h * HS;
        float qk = 0, dv = 0;
        for (int d = 0; d < HS; d++) {
            qk = sk_fma(qt[d], kj[d], qk);
            dv = sk_fma(dy[d], kj[C + d], dv);
        }
        s[n] = qk * tau;
        dp[n] = dv;
    }
    attn_row_forward(spec, s, p, n, T);
    attn_row_backward(spec, s, p, dp, ds, n, T);
    if (key0) a.ds_slot[r] = ds[0];
    float dq[HS];
    for (int d = 0; d < HS; d++) dq[d] = 0;
    if (spec.slot == SLOT_KV)
        for (int d = 0; d < HS; d++) dq[d] = sk_fma(ds[0] * tau, a.kstar[h * HS + d], dq[d]);
    for (int j = lo; j < hi; j++) {
        const float* kj = a.qkv + ((size_t)b * T + j) * 3 * C + C + h * HS;
        float g = ds[key0 + j - lo] * tau;
        for (int d = 0; d < HS; d++) dq[d] = sk_fma(g, kj[d], dq[d]);
    }
    for (int d = 0; d < HS; d++) a.dqkv[((size_t)b * T + t) * 3 * C + h * HS + d] = dq[d];
}

SK_HD static void backward_key1(const BackwardArgs& a, const Problem& pr, size_t r) {
    const AttnSpec& spec = pr.spec;
    int NH = pr.NH, T = pr.T, C = NH * HS, key0 = attn_has_slot(spec);
    int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), j = (int)(r % T);
    float tau = 1.0f / sqrtf((float)HS), dk[HS], dv[HS];
    for (int d = 0; d < HS; d++) dk[d] = dv[d] = 0;
    size_t head = r - j;  // row (b, h, 0)
    int t_lo, t_hi;
    attn_visible_queries(spec, j, T, &t_lo, &t_hi);
    for (int t = t_lo; t < t_hi; t++) {
        int lo, hi;
        attn_visible_keys(spec, t, T, &lo, &hi);
        const float* row = a.scratch + (head + t) * 4 * (T + 1);  // s, p, dp, ds
        float g = row[3 * (T + 1) + key0 + j - lo] * tau, pj = row[(T + 1) + key0 + j - lo];
        const float* qt = a.qkv + ((size_t)b * T + t) * 3 * C + h * HS;
        const float* dy = a.dout + ((size_t)b * T + t) * C + h * HS;
        for (int d = 0; d < HS; d++) {
            dk[d] = sk_fma(g, qt[d], dk[d]);
            dv[d] = sk_fma(pj, dy[d], dv[d]);
        }
    }
    float* dkj = a.dqkv + ((size_t)b * T + j) * 3 * C + C + h * HS;
    for (int d = 0; d < HS; d++) {
        dkj[d] = dk[d];
        dkj[C + d] = dv[d];
    }
}

__global__ void attention_backward_rows1(BackwardArgs a, Problem pr) {
    size_t r = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (r < (size_t)pr.B * pr.NH * pr.T) backward_row1(a, pr, r);
}

__global__ void attention_backward_keys1(BackwardArgs a, Problem pr) {
    size_t r = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (r < (size_t)pr.B * pr.NH * pr.T) backward_key1(a, pr, r);
}

// ---------------------------------------------------------------------------------------------------------------
// version 2: flash-style. A block body is written once, for the TILE threads of a block: blk.each(step) runs
// step(i, state_i) for every thread i, blk.sync() is the barrier between two steps. On the GPU (DeviceBlock) thread i
// runs its own step with its state in registers; the CPU check (HostBlock) runs every thread's step in turn, one
// step at a time, with the states and the shared-memory tiles in host arrays.

template <typename State>
struct DeviceBlock {
    State mine;  // this thread's
    template <typename Step>
    __device__ void each(Step step) { step((int)threadIdx.x, mine); }
    __device__ void sync() { __syncthreads(); }
};

template <typename State>
struct HostBlock {
    State* states;  // TILE of them, one per thread
    template <typename Step>  // __host__ __device__ only so that the block bodies, which are, may call it
    SK_HD void each(Step step) {
        for (int i = 0; i < TILE; i++) step(i, states[i]);
    }
    SK_HD void sync() {}
};

// Thread i's share of staging keys k0 .. k0 + TILE - 1 of head (b, h): their K and V rows into ks and vs at `stride`
// floats a row, zeros past T. Consecutive threads copy consecutive floats.
SK_HD static void stage_keys(float* ks, float* vs, int stride, const float* qkv, const Problem& pr, int b, int h,
                             int k0, int i) {
    int C = pr.NH * HS;
    for (int e = i; e < TILE * HS; e += TILE) {
        int j = k0 + e / HS;
        const float* kj = qkv + ((size_t)b * pr.T + (j < pr.T ? j : 0)) * 3 * C + C + h * HS + e % HS;
        ks[e / HS * stride + e % HS] = j < pr.T ? kj[0] : 0.0f;
        vs[e / HS * stride + e % HS] = j < pr.T ? kj[C] : 0.0f;
    }
}

// The dq block of query tile `tile` of head bh: dq, the slot's ds_* and D of rows t0 .. t0 + TILE - 1. ks and vs
// hold TILE rows of KS floats each (shared memory; KS = flash_stage_stride(HS), padded so that the rows of a sliding
// window, which start at different keys, do not meet in the same banks).
template <typename Block>
SK_HD void backward_dq_block(Block& blk, float* ks, float* vs, const BackwardArgs& a, const Problem& pr, int tile,
                             int bh) {
    const AttnSpec& spec = pr.spec;
    int NH = pr.NH, T = pr.T, C = NH * HS, b = bh / NH, h = bh % NH, t0 = tile * TILE;
    float tau = 1.0f / sqrtf((float)HS);
    const float* v_slot = slot_has_value(spec) ? a.vstar + h * HS : nullptr;
    blk.each([&](int i, FlashGradRow<HS>& row) {
        int t = t0 + i;
        if (t >= T) return;
        size_t r = (size_t)bh * T + t;
        AttnStreamState<float> st = {a.m[r], a.l[r]};
        flash_grad_row_begin(&row, spec, a.qkv + ((size_t)b * T + t) * 3 * C + h * HS,
                             a.dout + ((size_t)b * T + t) * C + h * HS, st, a.out + ((size_t)b * T + t) * C + h * HS,
                             t, T);
    });
    int klo, khi;
    flash_tile_keys(spec, t0, t0 + TILE < T ? t0 + TILE : T, T, &klo, &khi);
    klo -= klo % TILE;
    if (spec.variant == ATTN_CLIPPED) {  // D is a sum over the row: one pass before the gradients
        blk.each([&](int i, FlashGradRow<HS>& row) {
            if (t0 + i < T && attn_has_slot(spec))
                flash_clipped_D_slot(&row, spec, slot_score(spec, row.q, a.kstar, a.logit, h, tau), v_slot, T);
        });
        for (int k0 = klo; k0 < khi; k0 += TILE) {
            blk.sync();  // every thread is done with the previous tile
            blk.each([&](int i, FlashGradRow<HS>&) { stage_keys(ks, vs, KS, a.qkv, pr, b, h, k0, i); });
            blk.sync();
            blk.each([&](int i, FlashGradRow<HS>& row) {
                if (t0 + i < T)
                    flash_clipped_D_tile<HS, KS>(&row, spec, ks, vs, k0, T - k0 < TILE ? T - k0 : TILE, tau, T);
            });
        }
    }
    blk.each([&](int i, FlashGradRow<HS>& row) {  // the slot first, as in the row form
        if (t0 + i >= T || !attn_has_slot(spec)) return;
        float ds_slot, p_slot;  // p_* is the forward's to keep; this ladder checks ds_*
        flash_dq_slot(&row, spec, slot_score(spec, row.q, a.kstar, a.logit, h, tau), v_slot, T, &ds_slot, &p_slot);
        a.ds_slot[(size_t)bh * T + t0 + i] = ds_slot;
        if (spec.slot == SLOT_KV)
            for (int d = 0; d < HS; d++) row.dq[d] = sk_fma(ds_slot * tau, a.kstar[h * HS + d], row.dq[d]);
    });
    for (int k0 = klo; k0 < khi; k0 += TILE) {
        blk.sync();
        blk.each([&](int i, FlashGradRow<HS>&) { stage_keys(ks, vs, KS, a.qkv, pr, b, h, k0, i); });
        blk.sync();
        blk.each([&](int i, FlashGradRow<HS>& row) {
            float g[TILE];
            if (t0 + i < T) flash_dq_tile<HS, KS>(&row, spec, ks, vs, k0, T - k0 < TILE ? T - k0 : TILE, tau, T, g);
        });
    }
    blk.each([&](int i, FlashGradRow<HS>& row) {
        int t = t0 + i;
        if (t >= T) return;
        for (int d = 0; d < HS; d++) a.dqkv[((size_t)b * T + t) * 3 * C + h * HS + d] = row.dq[d];
        a.D[(size_t)bh * T + t] = row.D;
    });
}

struct KeyGrad {
    float dk[HS], dv[HS];
};

// The dk/dv block of key tile `tile` of head bh: dk and dv of keys j0 .. j0 + TILE - 1, from the query tiles that see
// them. kown and vown hold TILE rows of KS floats each (each thread reads its own row in 16-byte vectors: KS keeps a
// quarter warp's 8 rows in 8 different groups of banks), rows QTILE FlashGradRows (shared memory).
template <typename Block>
SK_HD void backward_dkv_block(Block& blk, float* kown, float* vown, FlashGradRow<HS>* rows, const BackwardArgs& a,
                              const Problem& pr, int tile, int bh) {
    const AttnSpec& spec = pr.spec;
    int NH = pr.NH, T = pr.T, C = NH * HS, b = bh / NH, h = bh % NH, j0 = tile * TILE;
    float tau = 1.0f / sqrtf((float)HS);
    blk.each([&](int i, KeyGrad& g) {
        stage_keys(kown, vown, KS, a.qkv, pr, b, h, j0, i);
        for (int d = 0; d < HS; d++) g.dk[d] = g.dv[d] = 0;
    });
    int qlo, qhi;
    flash_tile_queries(spec, j0, j0 + TILE < T ? j0 + TILE : T, T, &qlo, &qhi);
    qlo -= qlo % QTILE;
    for (int t0 = qlo; t0 < qhi; t0 += QTILE) {
        blk.sync();  // the block's keys are staged; every thread is done with the previous query tile
        blk.each([&](int i, KeyGrad&) {
            for (int e = i; e < QTILE * HS; e += TILE) {
                int t = t0 + e / HS;
                if (t >= T) break;
                rows[e / HS].q[e % HS] = a.qkv[((size_t)b * T + t) * 3 * C + h * HS + e % HS];
                rows[e / HS].dout[e % HS] = a.dout[((size_t)b * T + t) * C + h * HS + e % HS];
            }
            int t = t0 + i;
            if (i >= QTILE || t >= T) return;
            size_t r = (size_t)bh * T + t;
            rows[i].st.m = a.m[r];
            rows[i].st.l = a.l[r];
            rows[i].D = a.D[r];
            rows[i].slope = 0.0f;  // no ALiBi here
            rows[i].t = t;
            attn_visible_keys(spec, t, T, &rows[i].lo, &rows[i].hi);
        });
        blk.sync();
        blk.each([&](int i, KeyGrad& g) {
            if (j0 + i < T)
                flash_dkv_tile(g.dk, g.dv, spec, kown + i * KS, vown + i * KS, j0 + i, rows,
                               T - t0 < QTILE ? T - t0 : QTILE, tau, T);
        });
    }
    blk.each([&](int i, KeyGrad& g) {
        int j = j0 + i;
        if (j >= T) return;
        float* dkj = a.dqkv + ((size_t)b * T + j) * 3 * C + C + h * HS;
        for (int d = 0; d < HS; d++) {
            dkj[d] = g.dk[d];
            dkj[C + d] = g.dv[d];
        }
    });
}

__global__ void __launch_bounds__(TILE) attention_backward_dq2(BackwardArgs a, Problem pr) {
    __shared__ __align__(16) float ks[TILE * KS], vs[TILE * KS];
    DeviceBlock<FlashGradRow<HS>> blk;
    backward_dq_block(blk, ks, vs, a, pr, blockIdx.x, blockIdx.y);
}

__global__ void __launch_bounds__(TILE) attention_backward_dkv2(BackwardArgs a, Problem pr) {
    __shared__ __align__(16) float kown[TILE * KS], vown[TILE * KS];
    __shared__ FlashGradRow<HS> rows[QTILE];
    DeviceBlock<KeyGrad> blk;
    backward_dkv_block(blk, kown, vown, rows, a, pr, blockIdx.x, blockIdx.y);
}

// ---------------------------------------------------------------------------------------------------------------

static void run_version(int version, const BackwardArgs& a, const Problem& pr) {
    if (version == 1) {
        size_t rows = (size_t)pr.B * pr.NH * pr.T;
        unsigned blocks = (unsigned)((rows + 127) / 128);
        attention_backward_rows1<<<blocks, 128>>>(a, pr);
        attention_backward_keys1<<<blocks, 128>>>(a, pr);
    } else {
        dim3 grid((pr.T + TILE - 1) / TILE, pr.B * pr.NH);
        attention_backward_dq2<<<grid, TILE>>>(a, pr);
        attention_backward_dkv2<<<grid, TILE>>>(a, pr);
    }
    CUDA(cudaGetLastError());
}

// The same per-thread code on the CPU: version 1 thread by thread, version 2 block by block (--cpu-check).
static void run_version_on_cpu(int version, const BackwardArgs& a, const Problem& pr) {
    int tiles = (pr.T + TILE - 1) / TILE;
    for_each_head(pr.B * pr.NH, [&](int bh) {
        size_t head = (size_t)bh * pr.T;
        if (version == 1) {
            for (int t = 0; t < pr.T; t++) backward_row1(a, pr, head + t);
            for (int j = 0; j < pr.T; j++) backward_key1(a, pr, head + j);
            return;
        }
        // shared memory and registers start as NaN (all bits set), as a GPU's hold whatever was there before: a
        // block that reads what it did not write gets NaN into its results, which the check rejects
        std::vector<float> ks(TILE * KS, NAN), vs(TILE * KS, NAN);
        std::vector<FlashGradRow<HS>> row_states(TILE), rows(QTILE);
        std::vector<KeyGrad> key_states(TILE);
        memset((void*)row_states.data(), 0xff, row_states.size() * sizeof(row_states[0]));
        memset((void*)rows.data(), 0xff, rows.size() * sizeof(rows[0]));
        memset((void*)key_states.data(), 0xff, key_states.size() * sizeof(key_states[0]));
        for (int tile = 0; tile < tiles; tile++) {
            HostBlock<FlashGradRow<HS>> blk{row_states.data()};
            backward_dq_block(blk, ks.data(), vs.data(), a, pr, tile, bh);
        }
        for (int tile = 0; tile < tiles; tile++) {
            HostBlock<KeyGrad> blk{key_states.data()};
            backward_dkv_block(blk, ks.data(), vs.data(), rows.data(), a, pr, tile, bh);
        }
    });
}

// Per tensor (dq, dk, dv, ds_*): the max error over max |ref| and the relative L2 error, written into report; whether
// all are within the tolerance.
static bool check(const float* dqkv, const float* ds_slot, const Reference& ref, const Problem& pr, char* report,
                  size_t report_size) {
    static const char* const names[4] = {"dq", "dk", "dv", "ds*"};
    double maxerr[4] = {0}, maxref[4] = {0}, err2[4] = {0}, ref2[4] = {0};
    size_t C = (size_t)pr.NH * HS;
    auto add = [&](int k, float got, float want) {
        double d = (double)got - want;
        maxerr[k] = fmax(maxerr[k], isfinite(got) ? fabs(d) : INFINITY);
        maxref[k] = fmax(maxref[k], fabs((double)want));
        err2[k] += d * d;
        ref2[k] += (double)want * want;
    };
    for (size_t i = 0; i < ref.dqkv.size(); i++) add((int)(i / C % 3), dqkv[i], ref.dqkv[i]);
    int tensors = 3;
    if (attn_has_slot(pr.spec)) {
        for (size_t r = 0; r < ref.ds_slot.size(); r++) add(3, ds_slot[r], ref.ds_slot[r]);
        tensors = 4;
    }
    bool ok = true;
    size_t used = 0;
    for (int k = 0; k < tensors; k++) {
        double rel_max = maxerr[k] / fmax(maxref[k], 1e-30), rel_l2 = sqrt(err2[k] / fmax(ref2[k], 1e-60));
        ok = ok && rel_max <= TOLERANCE && rel_l2 <= TOLERANCE;
        used += snprintf(report + used, report_size - used, " %s %.1e %.1e", names[k], rel_max, rel_l2);
    }
    return ok;
}


int main(int argc, char** argv) {
    Problem pr;
    int version = 0;
    bool cpu_check = false;
    parse_attention_flags(argc, argv, "dev/cuda/attention_backward.cu", &pr, &version, "--cpu-check", &cpu_check);
    int count = 0;
    if (!cpu_check && (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)) {
        fprintf(stderr, "error: no CUDA GPU is visible: these kernels need one (sm_80 or newer); --cpu-check runs "
                        "their code on the CPU\n");
        return 1;
    }
    int C = pr.NH * HS;
    size_t n_qkv = (size_t)pr.B * pr.T * 3 * C, rows = (size_t)pr.B * pr.NH * pr.T;
    size_t scratch_floats = rows * 4 * (pr.T + 1);
    Inputs in = draw_inputs(pr);
    Reference ref = attention_backward_cpu(in, pr);
    double flops = 10.0 * pr.B * pr.NH * HS * visible_pairs(pr);
    // at least: q, k, v, y, dy and the row states (m, l) read, dq, dk, dv, D and the slot's ds written, once each
    double bytes = 4.0 * (2 * n_qkv + 2 * (n_qkv / 3) + 4 * rows);
    printf("attention backward%s: --attn %s --attn-norm %s --slot %s --mask %s (%d), B %d, heads %d of %d, T %d "
           "(%d rows drawn again away from a kink)\n",
           cpu_check ? " on the CPU (--cpu-check)" : "", attn_variant_names[pr.spec.variant],
           attn_normaliser_names[pr.spec.normaliser], attn_slot_names[pr.spec.slot], attn_mask_names[pr.spec.mask],
           pr.spec.mask_param, pr.B, pr.NH, HS, pr.T, in.redrawn);
    std::vector<float> dqkv(n_qkv), ds_slot(rows);
    char report[256];
    int failures = 0;
    if (cpu_check) {
        std::vector<float> D(rows), scratch;
        BackwardArgs a = {in.qkv.data(), in.dout.data(), in.kstar.data(), in.vstar.data(), in.logit.data(),
                          ref.m.data(),  ref.l.data(),   ref.out.data(),  dqkv.data(),     ds_slot.data(),
                          D.data(),      nullptr};
        for (int ver = 1; ver <= 2; ver++) {
            if (version && ver != version) continue;
            if (ver == 1) {
                scratch.resize(scratch_floats);
                a.scratch = scratch.data();
            }
            for (auto* x : {&dqkv, &ds_slot}) x->assign(x->size(), NAN);  // an output nobody writes fails the check
            run_version_on_cpu(ver, a, pr);
            bool ok = check(dqkv.data(), ds_slot.data(), ref, pr, report, sizeof report);
            failures += !ok;
            printf("version %d: %s  max err / max |ref|, rel L2:%s (allowed %.0e)\n", ver, ok ? "ok  " : "FAIL", report,
                   TOLERANCE);
        }
        return failures ? 1 : 0;
    }

    float *d_qkv, *d_dout, *d_kstar, *d_vstar, *d_logit, *d_m, *d_l, *d_out, *d_dqkv, *d_ds_slot, *d_D;
    float* d_scratch = nullptr;
    struct Upload {
        float** dst;
        const std::vector<float>* src;
    };
    for (Upload u : {Upload{&d_qkv, &in.qkv}, Upload{&d_dout, &in.dout}, Upload{&d_kstar, &in.kstar},
                     Upload{&d_vstar, &in.vstar}, Upload{&d_logit, &in.logit}, Upload{&d_m, &ref.m},
                     Upload{&d_l, &ref.l}, Upload{&d_out, &ref.out}}) {
        CUDA(cudaMalloc(u.dst, u.src->size() * sizeof(float)));
        CUDA(cudaMemcpy(*u.dst, u.src->data(), u.src->size() * sizeof(float), cudaMemcpyHostToDevice));
    }
    CUDA(cudaMalloc(&d_dqkv, n_qkv * sizeof(float)));
    CUDA(cudaMalloc(&d_ds_slot, rows * sizeof(float)));
    CUDA(cudaMalloc(&d_D, rows * sizeof(float)));
    size_t free_b = 0, total_b = 0;
    CUDA(cudaMemGetInfo(&free_b, &total_b));
    bool v1_fits = scratch_floats * sizeof(float) < free_b / 2;
    if (v1_fits) CUDA(cudaMalloc(&d_scratch, scratch_floats * sizeof(float)));
    BackwardArgs a = {d_qkv, d_dout, d_kstar, d_vstar, d_logit, d_m, d_l, d_out, d_dqkv, d_ds_slot, d_D, d_scratch};
    Roofline roof = gpu_roofline();
    for (int ver = 1; ver <= 2; ver++) {
        if (version && ver != version) continue;
        if (ver == 1 && !v1_fits) {
            printf("version 1: skipped (its %.1f GB of row scratch does not fit)\n", scratch_floats * 4e-9);
            continue;
        }
        CUDA(cudaMemset(d_dqkv, 0xff, n_qkv * sizeof(float)));  // NaN: an output nobody writes fails the check
        CUDA(cudaMemset(d_ds_slot, 0xff, rows * sizeof(float)));
        run_version(ver, a, pr);
        CUDA(cudaDeviceSynchronize());
        CUDA(cudaMemcpy(dqkv.data(), d_dqkv, n_qkv * sizeof(float), cudaMemcpyDeviceToHost));
        CUDA(cudaMemcpy(ds_slot.data(), d_ds_slot, rows * sizeof(float), cudaMemcpyDeviceToHost));
        bool ok = check(dqkv.data(), ds_slot.data(), ref, pr, report, sizeof report);
        failures += !ok;
        float ms = time_ms(10, [&] { run_version(ver, a, pr); });
        printf("version %d: %s  max err / max |ref|, rel L2:%s (allowed %.0e)  %.3f ms  %.2f TFLOP/s%s\n", ver,
               ok ? "ok  " : "FAIL", report, TOLERANCE, ms, flops / (ms * 1e-3) / 1e12,
               fp32_roofline_share(roof, flops, bytes, ms));
    }
    for (float* p : {d_qkv, d_dout, d_kstar, d_vstar, d_logit, d_m, d_l, d_out, d_dqkv, d_ds_slot, d_D}) cudaFree(p);
    if (d_scratch) cudaFree(d_scratch);
    return failures ? 1 : 0;
}
