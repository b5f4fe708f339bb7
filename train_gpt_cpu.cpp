/*
train_gpt_cpu.cpp: the CPU reference trainer of sinkscope. fp32, OpenMP, one translation unit plus shared headers.

What it is: a GPT/LLaMA-family language model (config.h: LayerNorm or RMSNorm, pre- or post-norm, six FFN kinds, five
kinds of positions, tied or untied embeddings, biases on or off) with a hand-written forward and backward pass for every
layer, AdamW, a data loader, checkpoints that llm.c reads and writes, and the attention-sink metrics of the paper
measured inside the training loop (sink_metrics.h). Attention variants come from attention_variants.cuh.
What it is not: fast at scale, or a tokenizer. train_gpt.cu is this file built by nvcc: every layer below is a loop
over output elements, sk_for (backend.h), which runs as OpenMP threads here and as a CUDA kernel there.

Build and run:  make train_gpt_cpu && ./train_gpt_cpu --help      (make train: data + a short emergence run)
Tests:          make test   (the test files #include this file with TESTING defined, as llm.c's test does)

Reading order: numerics and the matmul; the layers, each a forward/backward pair (backward accumulates into gradients
with +=, and quotes the forward line it differentiates); the model (parameters, activations, forward, backward, update);
sink measurement; checkpoints; check-state; the training loop and main.

Exactness. Every layer is a template over the float type (float in the trainer, double in the finite-difference tests).
Each output element is reduced by exactly one thread in one fixed order, documented at each reduction, so results do
not depend on the number of OpenMP threads, and the GPU build, which runs the same loop bodies, reproduces them bit
for bit:
  - dot products and matmuls: acc = init; for k = 0..K-1 in order: acc = fma(a_k, b_k, acc)  (init = bias, 0, or the
    gradient already there when backward accumulates);
  - row statistics (norm means, softmax sums, the loss): plain sequential sums in index order;
  - the global gradient norm: squares summed in double over fixed 4096-element chunks, chunks summed in order.
exp/log/tanh/sqrt/fma go through numerics.h, whose float versions use IEEE operations only (the same bits on every
CPU and GPU). Shapes: B batch, T time, C channels, NH heads, hs = C/NH head size, F ffn hidden, V vocab, Vp padded
vocab, L layers, OC output channels.
*/
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <dirent.h>
#include <string>
#include <vector>

#include "attention_variants.cuh"
#include "backend.h"
#include "config.h"
#include "numerics.h"
#include "sampling.h"
#include "sink_metrics.h"
#include "data/debug_state.h"
#include "data/model_file.h"
#include "data/text_codec.h"
#include "data/token_shards.h"
#include "data/train_state.h"

// ----------------------------------------------------------------------------------------------------------------
// matmul. One kernel serves the forward and both backward products:
//   out[m,n] = init[m,n] + sum_{k=0..K-1} A[m,k] * Bm[k,n]     (k in increasing order, one fma per term)
// gemm_by_element is that formula, one output element per loop index: the GPU build runs it, and the tests hold the
// CPU's gemm to it bit for bit. The CPU's gemm computes the same sums with register blocking: RM rows x RN columns of
// `out` per task, RN a multiple of the SIMD width, so the accumulators stay in registers and the compiler vectorises
// over n; each output element still sees its own sequential sum.

template <typename F>
static void gemm_by_element(F* out, const F* A, const F* Bm, int M, int K, int N, const F* bias, bool accumulate) {
    sk_for((size_t)M * N, SK_LAMBDA(size_t i) {
        size_t m = i / N, n = i % N;
        F acc = accumulate ? out[i] : bias ? bias[n] : F(0);
        for (int k = 0; k < K; k++) acc = sk_fma(A[m * K + k], Bm[(size_t)k * N + n], acc);
        out[i] = acc;
    });
}

#ifdef __CUDACC__
template <typename F>
static void gemm(F* out, const F* A, const F* Bm, int M, int K, int N, const F* bias, bool accumulate) {
    gemm_by_element(out, A, Bm, M, K, N, bias, accumulate);
}
#else
template <typename F>
static void gemm(F* out, const F* A, const F* Bm, int M, int K, int N, const F* bias, bool accumulate) {
    constexpr int RM = 4, RN = 256 / sizeof(F);
    int mblocks = (M + RM - 1) / RM, nblocks = (N + RN - 1) / RN;
#pragma omp parallel for collapse(2) schedule(static)
    for (int mb = 0; mb < mblocks; mb++) {
        for (int nb = 0; nb < nblocks; nb++) {
            int m0 = mb * RM, n0 = nb * RN;
            int mr = M - m0 < RM ? M - m0 : RM, nr = N - n0 < RN ? N - n0 : RN;
            F acc[RM][RN];
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < nr; c++)
                    acc[r][c] = accumulate ? out[(size_t)(m0 + r) * N + n0 + c] : bias ? bias[n0 + c] : F(0);
            if (mr == RM && nr == RN) {
                for (int k = 0; k < K; k++) {
                    const F* b = Bm + (size_t)k * N + n0;
                    for (int r = 0; r < RM; r++) {
                        F a = A[(size_t)(m0 + r) * K + k];
                        for (int c = 0; c < RN; c++) acc[r][c] = sk_fma(a, b[c], acc[r][c]);
                    }
                }
            } else {
                for (int k = 0; k < K; k++) {
                    const F* b = Bm + (size_t)k * N + n0;
                    for (int r = 0; r < mr; r++) {
                        F a = A[(size_t)(m0 + r) * K + k];
                        for (int c = 0; c < nr; c++) acc[r][c] = sk_fma(a, b[c], acc[r][c]);
                    }
                }
            }
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < nr; c++) out[(size_t)(m0 + r) * N + n0 + c] = acc[r][c];
        }
    }
}
#endif

// dst (cols, rows) = src (rows, cols)^T
template <typename F>
static void transpose(F* dst, const F* src, int rows, int cols) {
    sk_for((size_t)cols * rows, SK_LAMBDA(size_t i) { dst[i] = src[(i % rows) * cols + i / rows]; });
}

// out (BT, OC) = inp (BT, C) @ weight (OC, C)^T + bias (OC). scratch holds OC*C.
template <typename F>
static void matmul_forward(F* out, const F* inp, const F* weight, const F* bias, int BT, int C, int OC, F* scratch) {
    transpose(scratch, weight, OC, C);
    gemm(out, inp, scratch, BT, C, OC, bias, false);
}

// backward of: out = inp @ weight^T + bias. scratch holds BT*OC.
//   dinp    += dout @ weight               (sum over o in order)
//   dweight += dout^T @ inp                (sum over bt in order)
//   dbias   += sum_bt dout                 (sum over bt in order)
template <typename F>
static void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight, int BT,
                            int C, int OC, F* scratch) {
    gemm(dinp, dout, weight, BT, OC, C, (const F*)nullptr, true);
    transpose(scratch, dout, BT, OC);
    gemm(dweight, scratch, inp, OC, BT, C, (const F*)nullptr, true);
    if (dbias)
        sk_for(OC, SK_LAMBDA(size_t o) {
            F s = dbias[o];
            for (int bt = 0; bt < BT; bt++) s += dout[(size_t)bt * OC + o];
            dbias[o] = s;
        });
}

// ----------------------------------------------------------------------------------------------------------------
// normalisation. LayerNorm: y = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + eps) (biased variance).
// RMSNorm: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). mean is unused (0) for RMSNorm.

template <typename F>
static void norm_forward(F* out, F* mean, F* rstd, const F* inp, const F* w, const F* b, int BT, int C, int kind,
                         float eps) {
    sk_for(BT, SK_LAMBDA(size_t bt) {
        const F* x = inp + bt * C;
        F* y = out + bt * C;
        F m = 0;
        if (kind == NORM_LAYERNORM) {
            for (int i = 0; i < C; i++) m += x[i];
            m = m / C;
        }
        F v = 0;
        for (int i = 0; i < C; i++) v = sk_fma(x[i] - m, x[i] - m, v);
        v = v / C;
        F s = F(1) / sk_sqrt(v + F(eps));
        for (int i = 0; i < C; i++) y[i] = (x[i] - m) * s * w[i] + (b ? b[i] : F(0));
        mean[bt] = m;
        rstd[bt] = s;
    });
}

// backward of: y = n * w + b, n = (x - mean) * rstd
//   dx += rstd * (dn - mean(dn) - n * mean(dn * n))   (LayerNorm; RMSNorm drops the mean(dn) term), dn = dy * w
//   dw += sum_bt dy * n,  db += sum_bt dy             (sums over bt in order, one thread per channel)
template <typename F>
static void norm_backward(F* dinp, F* dw, F* db, const F* dout, const F* inp, const F* w, const F* mean,
                          const F* rstd, int BT, int C, int kind) {
    sk_for(BT, SK_LAMBDA(size_t bt) {
        const F* x = inp + bt * C;
        const F* dy = dout + bt * C;
        F* dx = dinp + bt * C;
        F m = mean[bt], s = rstd[bt];
        F dn_mean = 0, dn_n_mean = 0;
        for (int i = 0; i < C; i++) {
            F n = (x[i] - m) * s;
            F dn = dy[i] * w[i];
            dn_mean += dn;
            dn_n_mean = sk_fma(dn, n, dn_n_mean);
        }
        dn_mean = kind == NORM_LAYERNORM ? dn_mean / C : F(0);
        dn_n_mean = dn_n_mean / C;
        for (int i = 0; i < C; i++) {
            F n = (x[i] - m) * s;
            dx[i] += s * (dy[i] * w[i] - dn_mean - n * dn_n_mean);
        }
    });
    sk_for(C, SK_LAMBDA(size_t i) {
        F gw = dw[i], gb = db ? db[i] : F(0);
        for (int bt = 0; bt < BT; bt++) {
            F n = (inp[(size_t)bt * C + i] - mean[bt]) * rstd[bt];
            F dy = dout[(size_t)bt * C + i];
            gw = sk_fma(dy, n, gw);
            gb += dy;
        }
        dw[i] = gw;
        if (db) db[i] = gb;
    });
}

// ----------------------------------------------------------------------------------------------------------------
// activations: relu, tanh-GELU, swish (SiLU). act_grad is d act(x) / dx.

template <typename F>
SK_HD static inline F act_forward(int ffn, F x) {
    switch (ffn) {
    case FFN_RELU: case FFN_REGLU: return x > 0 ? x : F(0);
    case FFN_GELU: case FFN_GEGLU: {
        const F s = F(0.7978845608028654);  // sqrt(2/pi)
        return F(0.5) * x * (F(1) + sk_tanh(s * (x + F(0.044715) * x * x * x)));
    }
    default: return x / (F(1) + sk_exp(-x));  // swish, swiglu
    }
}

template <typename F>
SK_HD static inline F act_grad(int ffn, F x) {
    switch (ffn) {
    case FFN_RELU: case FFN_REGLU: return x > 0 ? F(1) : F(0);
    case FFN_GELU: case FFN_GEGLU: {
        const F s = F(0.7978845608028654);
        F th = sk_tanh(s * (x + F(0.044715) * x * x * x));
        return F(0.5) * (F(1) + th) + F(0.5) * x * (F(1) - th * th) * s * (F(1) + F(3 * 0.044715) * x * x);
    }
    default: {
        F sig = F(1) / (F(1) + sk_exp(-x));
        return sig * (F(1) + x * (F(1) - sig));
    }
    }
}

// act = gated ? act(h1) * h2 : act(h1), elementwise over N values
template <typename F>
static void ffn_act_forward(F* out, const F* h1, const F* h2, size_t N, int ffn) {
    sk_for(N, SK_LAMBDA(size_t i) { out[i] = h2 ? act_forward(ffn, h1[i]) * h2[i] : act_forward(ffn, h1[i]); });
}

// backward of: out = act(h1) * h2  (or act(h1)):  dh1 = dout * h2 * act'(h1),  dh2 = dout * act(h1)
template <typename F>
static void ffn_act_backward(F* dh1, F* dh2, const F* dout, const F* h1, const F* h2, size_t N, int ffn) {
    sk_for(N, SK_LAMBDA(size_t i) {
        F g = h2 ? dout[i] * h2[i] : dout[i];
        dh1[i] = g * act_grad(ffn, h1[i]);
        if (h2) dh2[i] = dout[i] * act_forward(ffn, h1[i]);
    });
}

// ----------------------------------------------------------------------------------------------------------------
// positions. Tables are computed once in double and rounded, so every platform gets the same values.

// RoPE (rotate-half) on q and k of every head of qkv (B,T,3C), in place; `inverse` rotates backwards (the backward
// pass: the rotation is orthogonal, so its gradient is the inverse rotation of the incoming gradient).
//   for i < hs/2: a' = a cos - b sin, b' = b cos + a sin, (a, b) = (x[i], x[i + hs/2]), angle t * base^(-2i/hs)
template <typename F>
static void rope_apply(F* qkv, const F* cos_t, const F* sin_t, int B, int T, int C, int NH, bool inverse) {
    int hs = C / NH, half = hs / 2;
    sk_for((size_t)B * T, SK_LAMBDA(size_t bt) {
        size_t t = bt % T;
        const F* cs = cos_t + t * half;
        const F* sn = sin_t + t * half;
        for (int part = 0; part < 2; part++)  // q, then k
            for (int h = 0; h < NH; h++) {
                F* x = qkv + bt * 3 * C + part * C + h * hs;
                for (int i = 0; i < half; i++) {
                    F a = x[i], bb = x[i + half], s = inverse ? -sn[i] : sn[i];
                    x[i] = a * cs[i] - bb * s;
                    x[i + half] = bb * cs[i] + a * s;
                }
            }
    });
}

// x0 (B,T,C) = wte[tok] + wpe[t] (learned) or + pe[t] (sinusoidal table); token id -1 is the learned sink token.
template <typename F>
static void embedding_forward(F* out, const int* tokens, const F* wte, const F* sink_token, const F* pos_table, int B,
                              int T, int C) {
    sk_for((size_t)B * T, SK_LAMBDA(size_t bt) {
        F* o = out + bt * C;
        int tok = tokens[bt];
        const F* e = tok >= 0 ? wte + (size_t)tok * C : sink_token;
        for (int i = 0; i < C; i++) o[i] = pos_table ? e[i] + pos_table[(bt % T) * C + i] : e[i];
    });
}

// backward of: x0[b,t] = wte[tok[b,t]] + wpe[t].  One thread per channel, (b,t) in order, so repeated tokens
// accumulate in a fixed order:  dwte[tok] += dx0[b,t] (dsink_token for id -1);  dwpe[t] += dx0[b,t]
template <typename F>
static void embedding_backward(F* dwte, F* dsink_token, F* dwpe, const F* dout, const int* tokens, int B, int T, int C) {
    sk_for(C, SK_LAMBDA(size_t i) {
        for (int bt = 0; bt < B * T; bt++) {
            F d = dout[(size_t)bt * C + i];
            if (tokens[bt] >= 0) dwte[(size_t)tokens[bt] * C + i] += d;
            else dsink_token[i] += d;
            if (dwpe) dwpe[(size_t)(bt % T) * C + i] += d;
        }
    });
}

// ----------------------------------------------------------------------------------------------------------------
// attention. q, k and v of head h are hs-vectors at a row stride: q(b,t,h) = q + (b*T + t) * qk_stride + h * hs (the
// fused qkv buffer, stride 3C, or the feature-mapped q|k block, stride C), v likewise with stride 3C. One row:
//   s_* = the slot score (attention_variants.cuh: tau q.k*, sigma_h or 0), then for the visible keys j in [lo, hi)
//   s_j = tau * (q_t . k_j) - alibi[h] * |t - j|,  tau = 1/sqrt(hs)      (dot product over d in order, fma)
//   p = the variant's row map of [s_*, s_lo .. s_hi-1]                    (attention_variants.cuh)
//   y_t = p_* v* + sum_j p_j v_j (+ v_bias)                              (slot first, then j in order, fma)
// att (B,NH,T,T) keeps p of the keys (zero outside [lo,hi)) and att_slot (B,NH,T) the slot's weight, for the backward
// pass and the sink metrics. One loop index per row (b, h, t); the row's scores s and weights p (and dp in backward)
// are T+1 values each of the loop's scratch (sk_for_scratch, backend.h; `work` is its GPU storage).

// The parameters of one layer's attention core besides q, k, v (null when the variant has none). The spec is a
// copy, so a loop body on the GPU carries it by value.
template <typename F>
struct AttnParams {
    AttnSpec spec;
    const float* alibi;   // (NH) slopes
    const F* kstar;       // (S, hs) SLOT_KV
    const F* vstar;       // (S, hs) SLOT_KV with a learned v*
    const F* sink_logit;  // (NH) SLOT_LOGIT
    const F* vbias;       // (S, hs) value bias
    int shared;           // slot vectors shared by all heads (index 0) instead of one per head
};

// Gradients of those parameters. Each (b, h) first sums its rows into `partial` (t in order), then every parameter
// entry adds the partial sums over b in order: the same result whatever the thread count. Layout of partial: (B, NH)
// blocks of [dk* (hs), dv* (hs), dv_bias (hs), dsigma].
template <typename F>
struct AttnParamGrads {
    F* dkstar;
    F* dvstar;
    F* dsink_logit;
    F* dvbias;
    F* partial;
};

// The scores of query t of head h: s[0] = the slot score when the variant has a slot, then keys lo..hi-1.
// Returns the row length. Forward and backward both call this, so recomputed scores are bit-identical.
template <typename F>
SK_HD static inline int attention_row_scores(F* s, const AttnParams<F>& ap, const F* q, const F* k, int qk_stride,
                                             int b, int h, int t, int T, int hs, F tau, int lo, int hi) {
    const AttnSpec& spec = ap.spec;
    const F* qt = q + ((size_t)b * T + t) * qk_stride + h * hs;
    int n = 0;
    if (spec.slot == SLOT_KV) {
        const F* ks = ap.kstar + (size_t)(ap.shared ? 0 : h) * hs;
        F dot = 0;
        for (int d = 0; d < hs; d++) dot = sk_fma(qt[d], ks[d], dot);
        s[n++] = dot * tau;
    } else if (spec.slot == SLOT_LOGIT) {
        s[n++] = ap.sink_logit[h];
    } else if (spec.slot == SLOT_ZERO) {
        s[n++] = 0;
    }
    for (int j = lo; j < hi; j++) {
        const F* kj = k + ((size_t)b * T + j) * qk_stride + h * hs;
        F dot = 0;
        for (int d = 0; d < hs; d++) dot = sk_fma(qt[d], kj[d], dot);
        F sj = dot * tau;
        if (ap.alibi) sj -= F(ap.alibi[h]) * F(t > j ? t - j : j - t);  // -m_h |t - j| (prefix rows see j > t)
        s[n++] = sj;
    }
    return n;
}

// Entry d of v* of head h: learned or the fixed value (only when attention_slot_has_value).
SK_HD static inline bool attention_slot_has_value(const AttnSpec& spec) {
    return spec.slot == SLOT_KV && spec.vstar != VSTAR_ZERO;
}
template <typename F>
SK_HD static inline F attention_slot_value(const AttnParams<F>& ap, int h, int hs, int d) {
    return ap.spec.vstar == VSTAR_LEARN ? ap.vstar[(size_t)(ap.shared ? 0 : h) * hs + d] : F(ap.spec.vstar_value);
}

template <typename F>
static void attention_forward(F* out, F* att, F* att_slot, F* work, const F* q, const F* k, int qk_stride,
                              const F* v, const AttnParams<F>& ap_, int B, int T, int C, int NH) {
    AttnParams<F> ap = ap_;
    int hs = C / NH, has_slot = attn_has_slot(ap.spec);
    F tau = F(1) / sk_sqrt(F(hs));
    sk_for_scratch((size_t)B * NH * T, 3 * (size_t)(T + 1), work, SK_LAMBDA(size_t r, F* scratch) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), t = (int)(r % T);
        const AttnSpec& spec = ap.spec;
        F *s = scratch, *p = scratch + (T + 1);
        int lo, hi;
        attn_visible_keys(spec, t, T, &lo, &hi);
        int n = attention_row_scores(s, ap, q, k, qk_stride, b, h, t, T, hs, tau, lo, hi);
        attn_row_forward(spec, s, p, n, T);
        F* arow = att + r * T;
        for (int j = 0; j < T; j++) arow[j] = 0;
        for (int j = lo; j < hi; j++) arow[j] = p[has_slot + j - lo];
        if (has_slot) att_slot[r] = p[0];
        bool slot_value = attention_slot_has_value(spec);
        F* y = out + ((size_t)b * T + t) * C + h * hs;
        for (int d = 0; d < hs; d++) y[d] = slot_value ? p[0] * attention_slot_value(ap, h, hs, d) : F(0);
        for (int j = lo; j < hi; j++) {
            const F* vj = v + ((size_t)b * T + j) * 3 * C + h * hs;
            for (int d = 0; d < hs; d++) y[d] = sk_fma(arow[j], vj[d], y[d]);
        }
        if (ap.vbias)
            for (int d = 0; d < hs; d++) y[d] += ap.vbias[(size_t)(ap.shared ? 0 : h) * hs + d];
    });
}

// backward of the attention core, O(T^2 hs) per head, in four loops:
//   rows (b,h,t):  dp_j = dO_t . v_j (dp_* = dO_t . v*);  ds = the variant's derivative, kept in ds_rows;
//                  dq_t += tau (ds_* k* + sum_j ds_j k_j)                      (slot first, then j in order)
//   keys (b,h,j):  dk_j += tau ds_tj q_t;  dv_j += p_tj dO_t     (over the rows t that see j, in order: t_lo..t_hi-1)
//   heads (b,h):   partial: dk* += tau ds_t* q_t;  dv* += p_t* dO_t;  dsigma_h += ds_t*;  dv_bias += dO_t  (t in order)
//   parameters:    dk*, dv*, dv_bias, dsigma += the partials, b in order, then the heads that share the entry in order
template <typename F>
static void attention_backward(F* dq, F* dk, int qk_stride, F* dv, const AttnParamGrads<F>& g, F* ds_rows, F* work,
                               const F* dout, const F* q, const F* k, const F* v, const F* att, const F* att_slot,
                               const AttnParams<F>& ap_, int B, int T, int C, int NH) {
    AttnParams<F> ap = ap_;
    int hs = C / NH, has_slot = attn_has_slot(ap.spec);
    bool need_s = attn_variant_table[ap.spec.variant].needs_scores;
    F tau = F(1) / sk_sqrt(F(hs));
    sk_for_scratch((size_t)B * NH * T, 3 * (size_t)(T + 1), work, SK_LAMBDA(size_t r, F* scratch) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), t = (int)(r % T);
        const AttnSpec& spec = ap.spec;
        F *s = scratch, *p = scratch + (T + 1), *dp = scratch + 2 * (T + 1);
        F* ds = ds_rows + r * (T + 1);
        int lo, hi;
        attn_visible_keys(spec, t, T, &lo, &hi);
        int n = has_slot + hi - lo;
        if (need_s) attention_row_scores(s, ap, q, k, qk_stride, b, h, t, T, hs, tau, lo, hi);
        const F* arow = att + r * T;
        const F* dy = dout + ((size_t)b * T + t) * C + h * hs;
        if (has_slot) {
            p[0] = att_slot[r];
            F dot = 0;
            if (attention_slot_has_value(spec))
                for (int d = 0; d < hs; d++) dot = sk_fma(dy[d], attention_slot_value(ap, h, hs, d), dot);
            dp[0] = dot;
        }
        for (int j = lo; j < hi; j++) {
            const F* vj = v + ((size_t)b * T + j) * 3 * C + h * hs;
            F dot = 0;
            for (int d = 0; d < hs; d++) dot = sk_fma(dy[d], vj[d], dot);
            p[has_slot + j - lo] = arow[j];
            dp[has_slot + j - lo] = dot;
        }
        attn_row_backward(spec, need_s ? (const F*)s : (const F*)nullptr, p, dp, ds, n, T);
        F* dqt = dq + ((size_t)b * T + t) * qk_stride + h * hs;
        if (spec.slot == SLOT_KV) {
            const F* ks = ap.kstar + (size_t)(ap.shared ? 0 : h) * hs;
            F gs = ds[0] * tau;
            for (int d = 0; d < hs; d++) dqt[d] = sk_fma(gs, ks[d], dqt[d]);
        }
        for (int j = lo; j < hi; j++) {
            const F* kj = k + ((size_t)b * T + j) * qk_stride + h * hs;
            F gj = ds[has_slot + j - lo] * tau;
            for (int d = 0; d < hs; d++) dqt[d] = sk_fma(gj, kj[d], dqt[d]);
        }
    });
    sk_for((size_t)B * NH * T, SK_LAMBDA(size_t r) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), j = (int)(r % T);
        F* dkj = dk + ((size_t)b * T + j) * qk_stride + h * hs;
        F* dvj = dv + ((size_t)b * T + j) * 3 * C + h * hs;
        size_t head = r - j;  // row (b, h, 0)
        int t_lo, t_hi;
        attn_visible_queries(ap.spec, j, T, &t_lo, &t_hi);
        for (int t = t_lo; t < t_hi; t++) {
            int lo, hi;
            attn_visible_keys(ap.spec, t, T, &lo, &hi);
            const F* qt = q + ((size_t)b * T + t) * qk_stride + h * hs;
            const F* dy = dout + ((size_t)b * T + t) * C + h * hs;
            F gj = ds_rows[(head + t) * (T + 1) + has_slot + j - lo] * tau, pj = att[(head + t) * T + j];
            for (int d = 0; d < hs; d++) {
                dkj[d] = sk_fma(gj, qt[d], dkj[d]);
                dvj[d] = sk_fma(pj, dy[d], dvj[d]);
            }
        }
    });
    if (!g.partial) return;
    F* partial = g.partial;
    const size_t pstride = 3 * (size_t)hs + 1;
    sk_for((size_t)B * NH, SK_LAMBDA(size_t bh) {
        const AttnSpec& spec = ap.spec;
        int b = (int)(bh / NH), h = (int)(bh % NH);
        F* part = partial + bh * pstride;
        for (size_t i = 0; i < pstride; i++) part[i] = 0;
        for (int t = 0; t < T; t++) {
            size_t r = bh * T + t;
            const F* qt = q + ((size_t)b * T + t) * qk_stride + h * hs;
            const F* dy = dout + ((size_t)b * T + t) * C + h * hs;
            if (spec.slot == SLOT_KV) {
                F gs = ds_rows[r * (T + 1)] * tau, ps = att_slot[r];
                for (int d = 0; d < hs; d++) {
                    part[d] = sk_fma(gs, qt[d], part[d]);
                    if (spec.vstar == VSTAR_LEARN) part[hs + d] = sk_fma(ps, dy[d], part[hs + d]);
                }
            } else if (spec.slot == SLOT_LOGIT) {
                part[3 * hs] += ds_rows[r * (T + 1)];
            }
            if (ap.vbias)
                for (int d = 0; d < hs; d++) part[2 * hs + d] += dy[d];
        }
    });
    int S = ap.shared ? 1 : NH, shared = ap.shared;
    F *dkstar = g.dkstar, *dvstar = g.dvstar, *dvbias = g.dvbias, *dsink_logit = g.dsink_logit;
    sk_for((size_t)S * hs, SK_LAMBDA(size_t e) {
        int sh = (int)(e / hs), d = (int)(e % hs);
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                if (!shared && h != sh) continue;
                const F* part = partial + ((size_t)b * NH + h) * pstride;
                if (dkstar) dkstar[e] += part[d];
                if (dvstar) dvstar[e] += part[hs + d];
                if (dvbias) dvbias[e] += part[2 * hs + d];
            }
    });
    if (dsink_logit)
        sk_for(NH, SK_LAMBDA(size_t h) {
            for (int b = 0; b < B; b++) dsink_logit[h] += partial[((size_t)b * NH + h) * pstride + 3 * hs];
        });
}

// Feature maps on q and k (paper Table 6), after RoPE. q and k of every position and head are first gathered into
// one contiguous (2, B*T, C) block: q rows then k rows, so the block is a (2*B*T*NH, hs) matrix of head vectors.
template <typename F>
static void phi_gather(F* qk, const F* qkv, int BT, int C) {
    sk_for(BT, SK_LAMBDA(size_t bt) {
        for (int i = 0; i < C; i++) {
            qk[bt * C + i] = qkv[bt * 3 * C + i];
            qk[((size_t)BT + bt) * C + i] = qkv[bt * 3 * C + C + i];
        }
    });
}

// backward of phi_gather: dqkv[q and k parts] += dqk
template <typename F>
static void phi_scatter_grad(F* dqkv, const F* dqk, int BT, int C) {
    sk_for(BT, SK_LAMBDA(size_t bt) {
        for (int i = 0; i < C; i++) {
            dqkv[bt * 3 * C + i] += dqk[bt * C + i];
            dqkv[bt * 3 * C + C + i] += dqk[((size_t)BT + bt) * C + i];
        }
    });
}

// elu1: y = elu(x) + 1 = (x > 0 ? x + 1 : e^x), elementwise over N values
template <typename F>
static void phi_elu1_forward(F* y, const F* x, size_t N) {
    sk_for(N, SK_LAMBDA(size_t i) { y[i] = x[i] > 0 ? x[i] + F(1) : sk_exp(x[i]); });
}

// backward of: y = elu(x) + 1  ->  dx += dy * (x > 0 ? 1 : e^x)
template <typename F>
static void phi_elu1_backward(F* dx, const F* dy, const F* x, size_t N) {
    sk_for(N, SK_LAMBDA(size_t i) { dx[i] += dy[i] * (x[i] > 0 ? F(1) : sk_exp(x[i])); });
}

template <typename F>
static void relu_forward(F* y, const F* x, size_t N) {
    sk_for(N, SK_LAMBDA(size_t i) { y[i] = x[i] > 0 ? x[i] : F(0); });
}

// backward of: y = relu(x)  ->  dx = dy * [x > 0]   (assigns)
template <typename F>
static void relu_backward(F* dx, const F* dy, const F* x, size_t N) {
    sk_for(N, SK_LAMBDA(size_t i) { dx[i] = x[i] > 0 ? dy[i] : F(0); });
}

// Gated attention (G1): y = core * sigmoid(z), z = x W_g^T, one gate per channel (G = C) or per head (G = NH).
template <typename F>
static void gate_forward(F* y, F* gate, const F* core, const F* z, int BT, int C, int G) {
    int per = C / G;
    sk_for(BT, SK_LAMBDA(size_t bt) {
        for (int i = 0; i < C; i++) {
            F gv = attn_sigmoid(z[bt * G + i / per]);
            if (i % per == 0) gate[bt * G + i / per] = gv;
            y[bt * C + i] = core[bt * C + i] * gv;
        }
    });
}

// backward of: y = core * g, g = sigmoid(z):  dcore = dy * g;  dz = g (1 - g) * sum over the gate's channels of
// dy * core (channels in order)
template <typename F>
static void gate_backward(F* dcore, F* dz, const F* dy, const F* core, const F* gate, int BT, int C, int G) {
    int per = C / G;
    sk_for(BT, SK_LAMBDA(size_t bt) {
        for (int gi = 0; gi < G; gi++) {
            F gv = gate[bt * G + gi], acc = 0;
            for (int i = gi * per; i < (gi + 1) * per; i++) {
                dcore[bt * C + i] = dy[bt * C + i] * gv;
                acc = sk_fma(dy[bt * C + i], core[bt * C + i], acc);
            }
            dz[bt * G + gi] = acc * gv * (F(1) - gv);
        }
    });
}

// ----------------------------------------------------------------------------------------------------------------
// cross-entropy over the first V of Vp logits (padded columns are ignored). A target < 0 marks a position without
// loss (the sink token, the prefix of a prefix LM): its loss is 0 and it takes no gradient.
//   probs = softmax(logits[0..V));  losses[bt] = -log probs[target]

template <typename F>
static void crossentropy_forward(F* losses, F* probs, const F* logits, const int* targets, int BT, int V, int Vp) {
    sk_for(BT, SK_LAMBDA(size_t bt) {
        const F* z = logits + bt * Vp;
        F* p = probs + bt * Vp;
        sk_softmax_row(z, p, V, F(1));
        for (int i = V; i < Vp; i++) p[i] = 0;
        if (targets) losses[bt] = targets[bt] >= 0 ? -sk_log(p[targets[bt]]) : F(0);
    });
}

// backward of: loss = dloss * sum_bt losses[bt]  ->  dlogits[bt,i] = dloss * (probs[i] - [i == target]), i < V
template <typename F>
static void crossentropy_backward(F* dlogits, const F* probs, const int* targets, F dloss, int BT, int V, int Vp) {
    sk_for(BT, SK_LAMBDA(size_t bt) {
        F* d = dlogits + bt * Vp;
        const F* p = probs + bt * Vp;
        for (int i = 0; i < V; i++) d[i] = targets[bt] >= 0 ? dloss * (p[i] - (i == targets[bt] ? F(1) : F(0))) : F(0);
        for (int i = V; i < Vp; i++) d[i] = 0;
    });
}

template <typename F>
static void residual_forward(F* out, const F* a, const F* b, size_t N) {
    sk_for(N, SK_LAMBDA(size_t i) { out[i] = a[i] + b[i]; });
}

// ----------------------------------------------------------------------------------------------------------------
// the model: parameters (one buffer, pointed into by the ParamId table), gradients, AdamW moments, and the tables of
// positions. Activations live apart (Acts) so a training batch and the sink probe can each have their own.

template <typename F>
struct Model {
    ModelConfig config;
    size_t sizes[NUM_PARAM_TENSORS];
    size_t num_params = 0;
    SkBuffer<F> params, grads, adam_m, adam_v;
    F* p[NUM_PARAM_TENSORS];
    F* g[NUM_PARAM_TENSORS];
    SkBuffer<F> pos_table;          // sinusoidal (maxT, C)
    SkBuffer<F> rope_cos, rope_sin; // (maxT, hs/2)
    SkBuffer<float> alibi;          // (NH) slopes
    SkBuffer<F> scratch;            // matmul transposes
    mutable SkBuffer<double> norm_parts;  // grad_norm's chunk sums, kept so a step allocates nothing
};

template <typename F>
static void point_tensors(F* base, const size_t* sizes, F** ptrs) {
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        ptrs[i] = sizes[i] ? base : nullptr;
        base += sizes[i];
    }
}

// Sizes everything for config c (validated) and builds the position tables. Parameters are zero.
template <typename F>
static void model_build(Model<F>* m, const ModelConfig& c) {
    validate_model_config(c, "model config");
    m->config = c;
    param_sizes(c, m->sizes);
    m->num_params = param_count(c);
    m->params.assign(m->num_params, 0);
    m->grads.assign(m->num_params, 0);
    m->adam_m.assign(m->num_params, 0);
    m->adam_v.assign(m->num_params, 0);
    point_tensors(m->params.data(), m->sizes, m->p);
    point_tensors(m->grads.data(), m->sizes, m->g);
    int C = c.channels, maxT = c.max_seq_len, NH = c.num_heads, hs = C / NH;
    m->pos_table.clear();
    m->rope_cos.clear();
    m->rope_sin.clear();
    m->alibi.clear();
    if (c.positions == POS_SINUSOIDAL) {
        m->pos_table.resize((size_t)maxT * C);
        for (int t = 0; t < maxT; t++)
            for (int i = 0; i < C / 2; i++) {
                double angle = t * pow(10000.0, -2.0 * i / C);
                m->pos_table[(size_t)t * C + 2 * i] = (F)sin(angle);
                m->pos_table[(size_t)t * C + 2 * i + 1] = (F)cos(angle);
            }
    }
    if (c.positions == POS_ROPE) {
        m->rope_cos.resize((size_t)maxT * hs / 2);
        m->rope_sin.resize((size_t)maxT * hs / 2);
        for (int t = 0; t < maxT; t++)
            for (int i = 0; i < hs / 2; i++) {
                double angle = t * pow((double)c.rope_base, -2.0 * i / hs);
                m->rope_cos[(size_t)t * hs / 2 + i] = (F)cos(angle);
                m->rope_sin[(size_t)t * hs / 2 + i] = (F)sin(angle);
            }
    }
    if (c.positions == POS_ALIBI) {
        m->alibi.resize(NH);
        for (int h = 0; h < NH; h++) m->alibi[h] = (float)pow(2.0, -8.0 * (h + 1) / NH);
    }
}

// Box-Muller normal from splitmix64: deterministic across platforms.
static inline double rng_normal(uint64_t* rng) {
    double u1 = ((splitmix64(rng) >> 11) + 1.0) * (1.0 / 9007199254740993.0);  // (0, 1]
    double u2 = (splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

// Init from scratch, tensors in file order, each filled in index order from one generator.
//   gpt2:  N(0, 0.02) weights and embeddings, residual projections N(0, 0.02/sqrt(2L)), biases 0, norms 1.
//   llama (the paper): linears N(0, sqrt(2/(5 fan_in))), embeddings N(0, sqrt(2/(5 C))), FFN down projection
//          N(0, 1/sqrt(F)/L), norms 1, biases 0.
//   attention-variant slots (sink token, k*, v*, value bias, sink logit): N(0, 0.02) (the paper); feature-map MLP
//   and gate weights: as linears with fan_in hs and C.
// Padded vocabulary rows stay zero.
template <typename F>
static void model_init(Model<F>* m, uint64_t seed) {
    const ModelConfig& c = m->config;
    uint64_t rng = seed;
    int C = c.channels, F_ = c.ffn_hidden, L = c.num_layers, hs = C / c.num_heads;
    bool gpt2 = c.init == INIT_GPT2;
    double linear_std = gpt2 ? 0.02 : sqrt(2.0 / (5.0 * C));
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (!m->sizes[i]) continue;
        double std = 0, fill = 0;
        switch (i) {
        case P_LN1W: case P_LN2W: case P_LNFW: fill = 1; break;
        case P_LN1B: case P_LN2B: case P_LNFB: case P_QKVB: case P_ATTPROJB: case P_FCB: case P_FCB2: case P_FCPROJB: break;
        case P_ATTPROJW: std = gpt2 ? 0.02 / sqrt(2.0 * L) : linear_std; break;
        case P_FCPROJW: std = gpt2 ? 0.02 / sqrt(2.0 * L) : 1.0 / sqrt((double)F_) / L; break;
        case P_SINKTOK: case P_KSTAR: case P_VSTAR: case P_VBIAS: case P_SINKLOGIT: std = 0.02; break;
        case P_PHIW1: case P_PHIW2: std = gpt2 ? 0.02 : sqrt(2.0 / (5.0 * hs)); break;
        default: std = linear_std; break;  // wte, wpe, lm_head, qkvw, fcw, fcw2, gate_w: fan_in = C
        }
        size_t rows_used = m->sizes[i];
        if (i == P_WTE || i == P_LMHEAD) rows_used = (size_t)c.vocab_size * C;
        for (size_t k = 0; k < m->sizes[i]; k++)
            m->p[i][k] = std > 0 ? (k < rows_used ? (F)(std * rng_normal(&rng)) : F(0)) : (F)fill;
    }
}

// Activations of one forward pass at a fixed (B, T), and the gradient scratch for its backward pass. T counts the
// model's positions: the data's T plus one with a sink token (tok_offset = 1).
template <typename F>
struct Acts {
    int B = 0, T = 0, tok_offset = 0;
    SkBuffer<F> mem;
    F *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *att_slot, *atty, *atty_core, *gate, *residual2, *ln2;
    F *ln2_mean, *ln2_rstd, *fch, *fch2, *fcact, *residual3, *lnf, *lnf_mean, *lnf_rstd, *logits, *probs, *losses;
    F *block_out, *phi_in, *phi_u, *phi_out, *phi_tmp;
    // backward scratch
    F *dres, *dtmp, *dln, *datty, *dqkv, *dfch, *dfch2, *dfcact, *dlogits, *dgate, *dphi, *dphi_in, *dphi2;
    F *slot_partial, *att_work, *att_ds;  // attention rows: scratch s, p, dp (GPU only); ds, (B, NH, T) rows of T + 1
    SkBuffer<int> inputs, targets;
    int num_targets = 0;  // positions with a loss
};

template <typename F>
static void acts_alloc(Acts<F>* a, const ModelConfig& c, int B, int T) {
    if (a->B == B && a->T == T) return;
    const AttnSpec& at = c.attn;
    size_t BT = (size_t)B * T, C = c.channels, L = c.num_layers, NH = c.num_heads, F_ = c.ffn_hidden,
           Vp = c.padded_vocab_size, hs = C / NH;
    size_t Fg = ffn_is_gated(c.ffn) ? F_ : 0;
    size_t G = at.gate == GATE_ELEMENTWISE ? C : at.gate == GATE_HEADWISE ? NH : 0, Cg = G ? C : 0;
    size_t Cphi = at.phi != PHI_NONE ? 2 * C : 0, Cmlp = at.phi == PHI_MLP ? 2 * C : 0;
    size_t Tslot = attn_has_slot(at) ? T : 0;
    size_t partial = at.slot == SLOT_KV || at.slot == SLOT_LOGIT || at.value_bias ? B * NH * (3 * hs + 1) : 0;
    struct Slot { F** ptr; size_t n; } slots[] = {
        {&a->encoded, BT * C}, {&a->ln1, L * BT * C}, {&a->ln1_mean, L * BT}, {&a->ln1_rstd, L * BT},
        {&a->qkv, L * BT * 3 * C}, {&a->att, L * B * NH * T * T}, {&a->att_slot, L * B * NH * Tslot},
        {&a->atty, L * BT * C}, {&a->atty_core, L * BT * Cg}, {&a->gate, L * BT * G},
        {&a->residual2, L * BT * C}, {&a->ln2, L * BT * C}, {&a->ln2_mean, L * BT}, {&a->ln2_rstd, L * BT},
        {&a->fch, L * BT * F_}, {&a->fch2, L * BT * Fg}, {&a->fcact, L * BT * F_}, {&a->residual3, L * BT * C},
        {&a->lnf, BT * C}, {&a->lnf_mean, BT}, {&a->lnf_rstd, BT}, {&a->logits, BT * Vp}, {&a->probs, BT * Vp},
        {&a->losses, BT}, {&a->block_out, BT * C}, {&a->phi_in, L * BT * Cphi}, {&a->phi_u, L * BT * Cmlp},
        {&a->phi_out, L * BT * Cphi}, {&a->phi_tmp, BT * Cmlp},
        {&a->dres, BT * C}, {&a->dtmp, BT * C}, {&a->dln, BT * C}, {&a->datty, BT * C}, {&a->dqkv, BT * 3 * C},
        {&a->dfch, BT * F_}, {&a->dfch2, BT * Fg}, {&a->dfcact, BT * F_}, {&a->dlogits, BT * Vp},
        {&a->dgate, BT * (Cg + G)}, {&a->dphi, BT * Cphi}, {&a->dphi_in, BT * Cphi}, {&a->dphi2, BT * 2 * Cmlp},
        {&a->slot_partial, partial}, {&a->att_work, sk_scratch_size(B * NH * T, 3 * (T + 1))}, {&a->att_ds, B * NH * T * (T + 1)}};
    // the attention matrices, L B NH T^2, checked in double first: with extreme flags their size_t product wraps 2^64
    if ((double)L * B * NH * T * T * sizeof(F) > 0.9 * sk_memory_bytes())
        fail("attention matrices for B %d x T %d need %.0f GiB, more than this machine's memory (lower --batch or "
             "--seq-len; use --total-batch to keep the tokens per step)", B, T,
             (double)L * B * NH * T * T * sizeof(F) / (1 << 30));
    size_t total = 0;
    for (const Slot& s : slots) total += s.n;
    if (total > a->mem.size()) {  // grow only: a smaller (B, T) (a probe chunk, a generated prefix) reuses the memory
        double gib = (double)total * sizeof(F) / (1 << 30);
        double ram_gib = sk_memory_bytes() / (1 << 30);
        if (gib > 0.9 * ram_gib)
            fail("activations for B %d x T %d need %.1f GiB, more than this machine's %.1f GiB of memory (lower "
                 "--batch or --seq-len; use --total-batch to keep the tokens per step)", B, T, gib, ram_gib);
        a->mem.assign(total, 0);
    }
    F* base = a->mem.data();
    for (const Slot& s : slots) {
        *s.ptr = s.n ? base : nullptr;
        base += s.n;
    }
    a->B = B;
    a->T = T;
}

// The largest transpose any matmul of a forward/backward pass at (B, T) needs.
static inline size_t scratch_size(const ModelConfig& c, int B, int T) {
    size_t BT = (size_t)B * T, C = c.channels, hs = C / c.num_heads, mx = 0;
    size_t shapes[][3] = {  // rows, in, out
        {BT, C, 3 * C}, {BT, C, C}, {BT, C, (size_t)c.ffn_hidden}, {BT, (size_t)c.ffn_hidden, C},
        {BT, C, (size_t)c.padded_vocab_size}, {2 * BT * c.num_heads, hs, hs}};
    for (auto& sh : shapes) mx = std::max(mx, sh[2] * std::max(sh[0], sh[1]));
    return mx;
}

template <typename F>
static const F* lm_head_weight(const Model<F>& m) {
    return m.config.tied ? m.p[P_WTE] : m.p[P_LMHEAD];
}

// The attention parameters of layer l.
template <typename F>
static AttnParams<F> attn_params(const Model<F>& m, int l) {
    const ModelConfig& c = m.config;
    size_t hs = c.channels / c.num_heads, S = slot_heads(c);
    AttnParams<F> ap;
    ap.spec = c.attn;
    ap.alibi = c.positions == POS_ALIBI ? m.alibi.data() : nullptr;
    ap.kstar = m.p[P_KSTAR] ? m.p[P_KSTAR] + l * S * hs : nullptr;
    ap.vstar = m.p[P_VSTAR] ? m.p[P_VSTAR] + l * S * hs : nullptr;
    ap.sink_logit = m.p[P_SINKLOGIT] ? m.p[P_SINKLOGIT] + (size_t)l * c.num_heads : nullptr;
    ap.vbias = m.p[P_VBIAS] ? m.p[P_VBIAS] + l * S * hs : nullptr;
    ap.shared = c.attn.slot_shared;
    return ap;
}

template <typename F>
static AttnParamGrads<F> attn_param_grads(Model<F>& m, Acts<F>* a, int l) {
    const ModelConfig& c = m.config;
    size_t hs = c.channels / c.num_heads, S = slot_heads(c);
    AttnParamGrads<F> g;
    g.dkstar = m.g[P_KSTAR] ? m.g[P_KSTAR] + l * S * hs : nullptr;
    g.dvstar = m.g[P_VSTAR] ? m.g[P_VSTAR] + l * S * hs : nullptr;
    g.dsink_logit = m.g[P_SINKLOGIT] ? m.g[P_SINKLOGIT] + (size_t)l * c.num_heads : nullptr;
    g.dvbias = m.g[P_VBIAS] ? m.g[P_VBIAS] + l * S * hs : nullptr;
    g.partial = a->slot_partial;
    return g;
}

// Forward pass over inputs (B,T); returns the mean loss over the positions with a loss when targets is given (else
// 0; probs are still filled). with_head = false stops after the last block (the sink probe needs no logits).
// With a sink token the model runs T+1 positions: position 0 is the sink (token id -1, no loss).
template <typename F>
static double model_forward(Model<F>* m, Acts<F>* a, const int* inputs, const int* targets, int B, int T_data,
                            bool with_head = true) {
    const ModelConfig& c = m->config;
    const AttnSpec& at = c.attn;
    int off = at.sink_token, T = T_data + off;
    if (T > c.max_seq_len)
        fail("sequence length %d%s exceeds the model's max_seq_len %d", T_data, off ? " + 1 (sink token)" : "",
             c.max_seq_len);
    if (at.phi == PHI_MLP && (int64_t)2 * B * T * c.num_heads > INT32_MAX)
        fail("--phi mlp maps 2 x B %d x T %d x %d heads = %lld head vectors per layer, more than 2^31 (lower --batch or "
             "--seq-len)", B, T, c.num_heads, (long long)2 * B * T * c.num_heads);
    acts_alloc(a, c, B, T);
    a->tok_offset = off;
    size_t need = scratch_size(c, B, T);
    if (m->scratch.size() < need) m->scratch.resize(need);
    F* scratch = m->scratch.data();
    int C = c.channels, NH = c.num_heads, L = c.num_layers, F_ = c.ffn_hidden, V = c.vocab_size,
        Vp = c.padded_vocab_size, BT = B * T;
    int G = at.gate == GATE_ELEMENTWISE ? C : NH;
    size_t BTC = (size_t)BT * C, BTF = (size_t)BT * F_;
    bool pre = c.placement == PLACE_PRE, gated = ffn_is_gated(c.ffn);
    a->inputs.assign(BT, -1);
    a->targets.assign(BT, -1);
    a->num_targets = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T_data; t++) {
            a->inputs[b * T + t + off] = inputs[b * T_data + t];
            if (targets && attn_position_has_loss(at, t + off)) {
                a->targets[b * T + t + off] = targets[b * T_data + t];
                a->num_targets++;
            }
        }
    const F* pos = c.positions == POS_LEARNED ? m->p[P_WPE] : c.positions == POS_SINUSOIDAL ? m->pos_table.data() : nullptr;
    embedding_forward(a->encoded, a->inputs.data(), m->p[P_WTE], m->p[P_SINKTOK], pos, B, T, C);
    for (int l = 0; l < L; l++) {
        const F* res_in = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * BTC;
        F* ln1 = a->ln1 + l * BTC;
        F* qkv = a->qkv + l * BTC * 3;
        F* att = a->att + (size_t)l * B * NH * T * T;
        F* att_slot = a->att_slot ? a->att_slot + (size_t)l * B * NH * T : nullptr;
        F* atty = a->atty + l * BTC;
        F* res2 = a->residual2 + l * BTC;
        F* ln2 = a->ln2 + l * BTC;
        F* fch = a->fch + l * BTF;
        F* fch2 = gated ? a->fch2 + l * BTF : nullptr;
        F* fcact = a->fcact + l * BTF;
        F* res3 = a->residual3 + l * BTC;
        F *m1 = a->ln1_mean + l * BT, *r1 = a->ln1_rstd + l * BT, *m2 = a->ln2_mean + l * BT, *r2 = a->ln2_rstd + l * BT;
        const F* ln1w = m->p[P_LN1W] + l * C;
        const F* ln1b = m->p[P_LN1B] ? m->p[P_LN1B] + l * C : nullptr;
        const F* ln2w = m->p[P_LN2W] + l * C;
        const F* ln2b = m->p[P_LN2B] ? m->p[P_LN2B] + l * C : nullptr;
        const F* qkvb = m->p[P_QKVB] ? m->p[P_QKVB] + l * 3 * C : nullptr;
        const F* projb = m->p[P_ATTPROJB] ? m->p[P_ATTPROJB] + l * C : nullptr;
        const F* fcb = m->p[P_FCB] ? m->p[P_FCB] + (size_t)l * F_ : nullptr;
        const F* fcb2 = m->p[P_FCB2] ? m->p[P_FCB2] + (size_t)l * F_ : nullptr;
        const F* fcprojb = m->p[P_FCPROJB] ? m->p[P_FCPROJB] + l * C : nullptr;
        // attention sub-block. pre: ln1 = N1(res_in), res2 = res_in + attn(ln1). post: ln1 = res_in + attn(res_in),
        // res2 = N1(ln1).
        const F* attn_in = res_in;
        if (pre) {
            norm_forward(ln1, m1, r1, res_in, ln1w, ln1b, BT, C, c.norm, c.norm_eps);
            attn_in = ln1;
        }
        matmul_forward(qkv, attn_in, m->p[P_QKVW] + (size_t)l * 3 * C * C, qkvb, BT, C, 3 * C, scratch);
        if (c.positions == POS_ROPE) rope_apply(qkv, m->rope_cos.data(), m->rope_sin.data(), B, T, C, NH, false);
        const F *q = qkv, *k = qkv + C;
        int qk_stride = 3 * C;
        if (at.phi != PHI_NONE) {  // feature map on q and k: phi_out = phi(phi_in), a (2*BT*NH, hs) matrix
            F* phi_in = a->phi_in + l * BTC * 2;
            F* phi_out = a->phi_out + l * BTC * 2;
            phi_gather(phi_in, qkv, BT, C);
            if (at.phi == PHI_ELU1) {
                phi_elu1_forward(phi_out, phi_in, 2 * BTC);
            } else {
                int hs = C / NH, rows = 2 * BT * NH;
                F* u = a->phi_u + l * BTC * 2;
                matmul_forward(u, phi_in, m->p[P_PHIW1] + (size_t)l * hs * hs, (const F*)nullptr, rows, hs, hs, scratch);
                relu_forward(a->phi_tmp, u, 2 * BTC);
                matmul_forward(phi_out, a->phi_tmp, m->p[P_PHIW2] + (size_t)l * hs * hs, (const F*)nullptr, rows, hs, hs,
                               scratch);
            }
            q = phi_out;
            k = phi_out + BTC;
            qk_stride = C;
        }
        AttnParams<F> ap = attn_params(*m, l);
        F* core = at.gate != GATE_NONE ? a->atty_core + l * BTC : atty;
        attention_forward(core, att, att_slot, a->att_work, q, k, qk_stride, qkv + 2 * C, ap, B, T, C, NH);
        if (at.gate != GATE_NONE) {  // y = core * sigmoid(attn_in W_g^T)
            F* z = a->block_out;     // (BT, G) fits in the (BT, C) scratch
            matmul_forward(z, attn_in, m->p[P_GATEW] + (size_t)l * G * C, (const F*)nullptr, BT, C, G, scratch);
            gate_forward(atty, a->gate + (size_t)l * BT * G, core, z, BT, C, G);
        }
        matmul_forward(a->block_out, atty, m->p[P_ATTPROJW] + (size_t)l * C * C, projb, BT, C, C, scratch);
        if (pre) {
            residual_forward(res2, res_in, a->block_out, BTC);
        } else {
            residual_forward(ln1, res_in, a->block_out, BTC);
            norm_forward(res2, m1, r1, ln1, ln1w, ln1b, BT, C, c.norm, c.norm_eps);
        }
        // FFN sub-block, the same pattern with N2.
        const F* ffn_in = res2;
        if (pre) {
            norm_forward(ln2, m2, r2, res2, ln2w, ln2b, BT, C, c.norm, c.norm_eps);
            ffn_in = ln2;
        }
        matmul_forward(fch, ffn_in, m->p[P_FCW] + (size_t)l * F_ * C, fcb, BT, C, F_, scratch);
        if (gated) matmul_forward(fch2, ffn_in, m->p[P_FCW2] + (size_t)l * F_ * C, fcb2, BT, C, F_, scratch);
        ffn_act_forward(fcact, fch, (const F*)fch2, BTF, c.ffn);
        matmul_forward(a->block_out, fcact, m->p[P_FCPROJW] + (size_t)l * C * F_, fcprojb, BT, F_, C, scratch);
        if (pre) {
            residual_forward(res3, res2, a->block_out, BTC);
        } else {
            residual_forward(ln2, res2, a->block_out, BTC);
            norm_forward(res3, m2, r2, ln2, ln2w, ln2b, BT, C, c.norm, c.norm_eps);
        }
    }
    if (!with_head) return 0;
    const F* h = a->residual3 + (size_t)(L - 1) * BTC;
    if (pre) {
        norm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, h, m->p[P_LNFW], m->p[P_LNFB], BT, C, c.norm, c.norm_eps);
        h = a->lnf;
    }
    matmul_forward(a->logits, h, lm_head_weight(*m), (const F*)nullptr, BT, C, Vp, scratch);
    crossentropy_forward(a->losses, a->probs, a->logits, targets ? a->targets.data() : (const int*)nullptr, BT, V, Vp);
    if (!targets) return 0;
    double sum = 0;  // in order of bt
    for (int i = 0; i < BT; i++) sum += a->losses[i];
    return a->num_targets ? sum / a->num_targets : 0.0;
}

// Backward pass of the last forward. Gradients accumulate (+=) into m->grads scaled by `scale` (1/accumulation
// steps), so micro-batches add up to the gradient of the mean loss over the whole batch.
template <typename F>
static void model_backward(Model<F>* m, Acts<F>* a, F scale) {
    const ModelConfig& c = m->config;
    const AttnSpec& at = c.attn;
    int B = a->B, T = a->T, C = c.channels, NH = c.num_heads, L = c.num_layers, F_ = c.ffn_hidden,
        V = c.vocab_size, Vp = c.padded_vocab_size, BT = B * T, hs = C / NH;
    int G = at.gate == GATE_ELEMENTWISE ? C : NH;
    size_t BTC = (size_t)BT * C, BTF = (size_t)BT * F_;
    bool pre = c.placement == PLACE_PRE, gated = ffn_is_gated(c.ffn);
    F* scratch = m->scratch.data();
    F** g = m->g;
    // the two gradient buffers the first steps accumulate into; every other one is cleared where it is first used
    sk_fill(a->dres, BTC, F(0));
    sk_fill(a->dtmp, BTC, F(0));
    // loss = scale * mean over the positions with a loss
    crossentropy_backward(a->dlogits, a->probs, a->targets.data(), scale / F(std::max(1, a->num_targets)), BT, V, Vp);
    // logits = h @ W_out^T
    const F* h_last = a->residual3 + (size_t)(L - 1) * BTC;
    const F* h = pre ? a->lnf : h_last;
    F* dW_out = c.tied ? g[P_WTE] : g[P_LMHEAD];
    if (pre) {
        matmul_backward(a->dtmp, dW_out, (F*)nullptr, a->dlogits, h, lm_head_weight(*m), BT, C, Vp, scratch);
        // lnf = Nf(h_last)
        norm_backward(a->dres, g[P_LNFW], g[P_LNFB], a->dtmp, h_last, m->p[P_LNFW], a->lnf_mean, a->lnf_rstd, BT, C,
                      c.norm);
    } else {
        matmul_backward(a->dres, dW_out, (F*)nullptr, a->dlogits, h, lm_head_weight(*m), BT, C, Vp, scratch);
    }
    // from here on dres holds d loss / d (residual stream at the current depth)
    for (int l = L - 1; l >= 0; l--) {
        const F* res_in = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * BTC;
        const F* ln1 = a->ln1 + l * BTC;
        F* qkv = a->qkv + l * BTC * 3;
        const F* att = a->att + (size_t)l * B * NH * T * T;
        const F* att_slot = a->att_slot ? a->att_slot + (size_t)l * B * NH * T : nullptr;
        const F* atty = a->atty + l * BTC;
        const F* res2 = a->residual2 + l * BTC;
        const F* ln2 = a->ln2 + l * BTC;
        const F* fch = a->fch + l * BTF;
        const F* fch2 = gated ? a->fch2 + l * BTF : nullptr;
        const F* fcact = a->fcact + l * BTF;
        const F *m1 = a->ln1_mean + l * BT, *r1 = a->ln1_rstd + l * BT, *m2 = a->ln2_mean + l * BT,
                *r2 = a->ln2_rstd + l * BT;
        size_t lC = (size_t)l * C, lF = (size_t)l * F_;
        F* dln1w = g[P_LN1W] + lC;
        F* dln1b = g[P_LN1B] ? g[P_LN1B] + lC : nullptr;
        F* dln2w = g[P_LN2W] + lC;
        F* dln2b = g[P_LN2B] ? g[P_LN2B] + lC : nullptr;
        F* dqkvb = g[P_QKVB] ? g[P_QKVB] + 3 * lC : nullptr;
        F* dprojb = g[P_ATTPROJB] ? g[P_ATTPROJB] + lC : nullptr;
        F* dfcb = g[P_FCB] ? g[P_FCB] + lF : nullptr;
        F* dfcb2 = g[P_FCB2] ? g[P_FCB2] + lF : nullptr;
        F* dfcprojb = g[P_FCPROJB] ? g[P_FCPROJB] + lC : nullptr;
        const F* ln1w = m->p[P_LN1W] + lC;
        const F* ln2w = m->p[P_LN2W] + lC;

        // ---- FFN sub-block. pre: res3 = res2 + ffn(ln2), ln2 = N2(res2). post: res3 = N2(ln2), ln2 = res2 + ffn(res2)
        const F* dffn_out = a->dres;
        if (!pre) {
            sk_fill(a->dtmp, BTC, F(0));
            norm_backward(a->dtmp, dln2w, dln2b, a->dres, ln2, ln2w, m2, r2, BT, C, c.norm);
            sk_copy(a->dres, a->dtmp, BTC);  // the residual path: d res2 = d ln2 (+ the ffn part below)
            dffn_out = a->dtmp;
        }
        const F* ffn_in = pre ? ln2 : res2;
        F* dffn_in = pre ? a->dln : a->dres;
        if (pre) sk_fill(a->dln, BTC, F(0));
        sk_fill(a->dfcact, BTF, F(0));
        matmul_backward(a->dfcact, g[P_FCPROJW] + lC * F_, dfcprojb, dffn_out, fcact, m->p[P_FCPROJW] + lC * F_, BT,
                        F_, C, scratch);
        ffn_act_backward(a->dfch, a->dfch2, a->dfcact, fch, fch2, BTF, c.ffn);
        matmul_backward(dffn_in, g[P_FCW] + lF * C, dfcb, a->dfch, ffn_in, m->p[P_FCW] + lF * C, BT, C, F_, scratch);
        if (gated)
            matmul_backward(dffn_in, g[P_FCW2] + lF * C, dfcb2, a->dfch2, ffn_in, m->p[P_FCW2] + lF * C, BT, C, F_,
                            scratch);
        if (pre) norm_backward(a->dres, dln2w, dln2b, a->dln, res2, ln2w, m2, r2, BT, C, c.norm);

        // ---- attention sub-block. pre: res2 = res_in + attn(ln1), ln1 = N1(res_in). post: res2 = N1(ln1),
        //      ln1 = res_in + attn(res_in)
        const F* dattn_out = a->dres;
        if (!pre) {
            sk_fill(a->dtmp, BTC, F(0));
            norm_backward(a->dtmp, dln1w, dln1b, a->dres, ln1, ln1w, m1, r1, BT, C, c.norm);
            sk_copy(a->dres, a->dtmp, BTC);
            dattn_out = a->dtmp;
        }
        const F* attn_in = pre ? ln1 : res_in;
        F* dattn_in = pre ? a->dln : a->dres;
        if (pre) sk_fill(a->dln, BTC, F(0));
        sk_fill(a->datty, BTC, F(0));
        sk_fill(a->dqkv, 3 * BTC, F(0));
        matmul_backward(a->datty, g[P_ATTPROJW] + lC * C, dprojb, dattn_out, atty, m->p[P_ATTPROJW] + lC * C, BT, C,
                        C, scratch);
        const F* dcore = a->datty;
        const F* core = atty;
        if (at.gate != GATE_NONE) {  // y = core * sigmoid(z), z = attn_in W_g^T
            F* dcore_buf = a->dgate;
            F* dz = a->dgate + BTC;
            core = a->atty_core + l * BTC;
            gate_backward(dcore_buf, dz, a->datty, core, a->gate + (size_t)l * BT * G, BT, C, G);
            matmul_backward(dattn_in, g[P_GATEW] + (size_t)l * G * C, (F*)nullptr, dz, attn_in,
                            m->p[P_GATEW] + (size_t)l * G * C, BT, C, G, scratch);
            dcore = dcore_buf;
        }
        AttnParams<F> ap = attn_params(*m, l);
        AttnParamGrads<F> apg = attn_param_grads(*m, a, l);
        if (at.phi == PHI_NONE) {
            attention_backward(a->dqkv, a->dqkv + C, 3 * C, a->dqkv + 2 * C, apg, a->att_ds, a->att_work, dcore, qkv,
                               qkv + C, qkv + 2 * C, att, att_slot, ap, B, T, C, NH);
        } else {  // through the feature map: dphi_out from the core, then phi_out = phi(phi_in), then the gather
            const F* phi_in = a->phi_in + l * BTC * 2;
            const F* phi_out = a->phi_out + l * BTC * 2;
            F* dphi_out = a->dphi;
            sk_fill(dphi_out, 2 * BTC, F(0));
            attention_backward(dphi_out, dphi_out + BTC, C, a->dqkv + 2 * C, apg, a->att_ds, a->att_work, dcore,
                               phi_out, phi_out + BTC, qkv + 2 * C, att, att_slot, ap, B, T, C, NH);
            F* dphi_in = a->dphi_in;
            sk_fill(dphi_in, 2 * BTC, F(0));
            if (at.phi == PHI_ELU1) {
                phi_elu1_backward(dphi_in, dphi_out, phi_in, 2 * BTC);
            } else {
                int rows = 2 * BT * NH;
                const F* u = a->phi_u + l * BTC * 2;
                F* r = a->dphi2;              // relu(u), recomputed
                F* dr = a->dphi2 + 2 * BTC;   // d relu(u), then d u in place
                relu_forward(r, u, 2 * BTC);
                sk_fill(dr, 2 * BTC, F(0));
                matmul_backward(dr, g[P_PHIW2] + (size_t)l * hs * hs, (F*)nullptr, dphi_out, r,
                                m->p[P_PHIW2] + (size_t)l * hs * hs, rows, hs, hs, scratch);
                relu_backward(dr, dr, u, 2 * BTC);
                matmul_backward(dphi_in, g[P_PHIW1] + (size_t)l * hs * hs, (F*)nullptr, dr, phi_in,
                                m->p[P_PHIW1] + (size_t)l * hs * hs, rows, hs, hs, scratch);
            }
            phi_scatter_grad(a->dqkv, dphi_in, BT, C);
        }
        if (c.positions == POS_ROPE) rope_apply(a->dqkv, m->rope_cos.data(), m->rope_sin.data(), B, T, C, NH, true);
        matmul_backward(dattn_in, g[P_QKVW] + lC * 3 * C, dqkvb, a->dqkv, attn_in, m->p[P_QKVW] + lC * 3 * C, BT, C,
                        3 * C, scratch);
        if (pre) norm_backward(a->dres, dln1w, dln1b, a->dln, res_in, ln1w, m1, r1, BT, C, c.norm);
    }
    embedding_backward(g[P_WTE], g[P_SINKTOK], g[P_WPE], a->dres, a->inputs.data(), B, T, C);
}

// ----------------------------------------------------------------------------------------------------------------
// optimizer

// Global L2 norm of the gradients: squares summed in double over fixed 4096-element chunks, chunks added in order.
template <typename F>
static double grad_norm(const Model<F>& m) {
    const size_t chunk = 4096, n = m.num_params, nchunks = (n + chunk - 1) / chunk;
    if (m.norm_parts.size() != nchunks) m.norm_parts.resize(nchunks);
    double* sums = m.norm_parts.data();
    const F* g = m.grads.data();
    sk_for(nchunks, SK_LAMBDA(size_t k) {
        double s = 0;
        size_t end = (k + 1) * chunk < n ? (k + 1) * chunk : n;
        for (size_t i = k * chunk; i < end; i++) s += (double)g[i] * g[i];
        sums[k] = s;
    });
    double total = 0;
    for (double s : m.norm_parts) total += s;
    return sqrt(total);
}

static inline float lr_at(const TrainConfig& tc, int step) {
    if (step < tc.warmup_steps) return tc.lr * (step + 1) / tc.warmup_steps;
    if (tc.lr_schedule == LR_CONSTANT || tc.steps <= tc.warmup_steps) return tc.lr;
    double frac = (double)(step - tc.warmup_steps) / (tc.steps - tc.warmup_steps);
    double min_lr = (double)tc.lr * tc.min_lr_frac;
    double shape = tc.lr_schedule == LR_COSINE ? 0.5 * (1.0 + cos(M_PI * frac)) : 1.0 - frac;
    return (float)(min_lr + (tc.lr - min_lr) * shape);
}

// AdamW (decoupled weight decay), t = number of this update (1-based):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd p)
// `grad_scale` applies gradient clipping without touching the gradients. Elementwise, so thread-count independent.
template <typename F>
static void adamw_update(Model<F>* m, float lr, float beta1, float beta2, float eps, float wd, bool wd_exempt, int t,
                         F grad_scale) {
    F bc1 = F(1) - F(pow(beta1, t)), bc2 = F(1) - F(pow(beta2, t));
    size_t off = 0;
    for (int id = 0; id < NUM_PARAM_TENSORS; id++) {
        F decay = wd_exempt && param_is_decay_exempt(id) ? F(0) : F(wd);
        F *p = m->params.data() + off, *am = m->adam_m.data() + off, *av = m->adam_v.data() + off;
        const F* grads = m->grads.data() + off;
        sk_for(m->sizes[id], SK_LAMBDA(size_t k) {
            F gr = grads[k] * grad_scale;
            F mm = F(beta1) * am[k] + F(1 - beta1) * gr;
            F vv = F(beta2) * av[k] + F(1 - beta2) * gr * gr;
            am[k] = mm;
            av[k] = vv;
            F mhat = mm / bc1, vhat = vv / bc2;
            p[k] -= F(lr) * (mhat / (sk_sqrt(vhat) + F(eps)) + decay * p[k]);
        });
        off += m->sizes[id];
    }
}

// One optimizer step's clip factor: gn > clip ? clip / gn : 1.
static inline double clip_scale(double gn, float clip) { return clip > 0 && gn > clip ? clip / gn : 1.0; }

// ----------------------------------------------------------------------------------------------------------------
// sink measurement on a probe of S sequences x T tokens, read from what the forward pass holds: the attention
// matrices, the residual streams (embedding output and after every block), and the keys and values in qkv.

template <typename F>
static SinkReport measure_sinks(Model<F>* m, Acts<F>* a, const std::vector<int>& probe, int S, int T, float eps) {
    const ModelConfig& c = m->config;
    const AttnSpec& at = c.attn;
    int C = c.channels, NH = c.num_heads, L = c.num_layers;
    int off = at.sink_token, slot = attn_has_slot(at), Tm = T + off;  // model positions
    int has_slot = off || slot, Tw = T + has_slot;                    // the metric's matrix is Tw x Tw
    const int chunk = 8;
    SinkAccumulator acc;
    sink_begin(&acc, L, NH, T, eps, has_slot, !attn_is_probability(at));
    // the keys each row of the metric's matrix sees: the model's mask, shifted by one behind a slot, whose own row
    // sees itself and which every row sees
    std::vector<int> row_lo(Tw, 0), row_hi(Tw, 1);
    for (int t = 0; t < Tm; t++) {
        attn_visible_keys(at, t, Tm, &row_lo[t + slot], &row_hi[t + slot]);
        row_lo[t + slot] += slot;
        row_hi[t + slot] += slot;
    }
    SinkVisibility vis;
    vis.lo = row_lo.data();
    vis.hi = row_hi.data();
    vis.slot0 = slot;
    std::vector<F> W((size_t)Tw * Tw);
    for (int s0 = 0; s0 < S; s0 += chunk) {
        int n = std::min(chunk, S - s0);
        model_forward(m, a, probe.data() + (size_t)s0 * T, (const int*)nullptr, n, T, false);
        size_t BTC = (size_t)n * Tm * C;
        for (int b = 0; b < n; b++) {
            size_t off_rows = ((size_t)b * Tm + off) * C;  // the first real token of sequence b
            sink_add_hidden(&acc, 0, a->encoded + off_rows, C);
            for (int l = 0; l < L; l++) {
                for (int h = 0; h < NH; h++) {
                    const F* att = a->att + (size_t)l * n * NH * Tm * Tm + ((size_t)b * NH + h) * Tm * Tm;
                    if (!slot) {
                        sink_add_head(&acc, l, h, att, vis);
                        continue;
                    }
                    // the slot as index 0 of a (T+1) x (T+1) matrix; its own row is one-hot on itself
                    const F* ps = a->att_slot + (size_t)l * n * NH * Tm + ((size_t)b * NH + h) * Tm;
                    std::fill(W.begin(), W.end(), F(0));
                    W[0] = 1;
                    for (int t = 0; t < Tm; t++) {
                        W[(size_t)(t + 1) * Tw] = ps[t];
                        for (int j = 0; j < Tm; j++) W[(size_t)(t + 1) * Tw + j + 1] = att[(size_t)t * Tm + j];
                    }
                    sink_add_head(&acc, l, h, W.data(), vis);
                }
                sink_add_hidden(&acc, l + 1, a->residual3 + l * BTC + off_rows, C);
                const F* qkv = a->qkv + l * BTC * 3 + off_rows * 3;
                sink_add_kv(&acc, l, qkv + C, qkv + 2 * C, C, (size_t)3 * C);
            }
            sink_end_sequence(&acc);
        }
    }
    return sink_finish(&acc);
}

// ----------------------------------------------------------------------------------------------------------------
// checkpoints (resume): model_<step>.bin holds the weights (data/model_file.h); state_<step>.bin holds the AdamW
// moments, the step, the data position and the random state (data/train_state.h). Both files are written atomically,
// the state first, so a model file never exists without its state; both writers refuse non-finite numbers.

struct TrainProgress {
    int step = 0;
    uint64_t epoch = 0, index = 0, rng = 0;
};

static std::string ckpt_path(const std::string& dir, const char* kind, int step) {
    char buf[64];
    snprintf(buf, sizeof buf, "/%s_%08d.bin", kind, step);
    return dir + buf;
}

static void save_checkpoint(const std::string& dir, Model<float>* m, const TrainConfig& tc, const TrainProgress& pr) {
    TrainState s;
    s.step = pr.step; s.B = tc.batch_size; s.T = tc.seq_len; s.total_batch = tc.total_batch_size; s.seed = tc.seed;
    s.epoch = pr.epoch; s.index = pr.index; s.rng = pr.rng;
    write_train_state(ckpt_path(dir, "state", pr.step), s, m->config, m->num_params, m->adam_m.data(),
                      m->adam_v.data());
    write_model_file(ckpt_path(dir, "model", pr.step), m->config, m->params.data());
}

// The latest step in dir with both a model and a state file; -1 if none.
static int latest_checkpoint(const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (!d) fail("--resume '%s': cannot open the directory: %s", dir.c_str(), strerror(errno));
    int best = -1;
    while (struct dirent* e = readdir(d)) {
        int step;
        // exactly the names ckpt_path writes (8 digits, 9 from step 10^8 on), not model_*.bin.tmp or a stray file
        if (sscanf(e->d_name, "model_%d", &step) == 1 && step >= 0 &&
            dir + "/" + e->d_name == ckpt_path(dir, "model", step)) {
            struct stat st;
            if (stat(ckpt_path(dir, "state", step).c_str(), &st) == 0 && step > best) best = step;
        }
    }
    closedir(d);
    return best;
}

// Restores the AdamW moments into m and returns the progress of the checkpoint state_<step>.bin at path.
static TrainProgress load_train_state(const std::string& path, int step, Model<float>* m, const TrainConfig& tc) {
    TrainState s = read_train_state(path, m->config, m->num_params, m->adam_m.data(), m->adam_v.data());
    if (s.step != step)
        fail("training state '%s': step (header[2]) is %d, but its file name says %d (files renamed by hand? resume "
             "from a checkpoint whose model and state files agree)", path.c_str(), s.step, step);
    if (s.B != tc.batch_size || s.T != tc.seq_len || s.total_batch != tc.total_batch_size || s.seed != tc.seed)
        fail("--resume: the run was saved with --batch %d --seq-len %d --total-batch %d --seed %llu; pass the same "
             "values to continue it bit-identically", s.B, s.T, s.total_batch, (unsigned long long)s.seed);
    return TrainProgress{s.step, s.epoch, s.index, s.rng};
}

template <typename F>
static void model_load(Model<F>* m, const std::string& path) {
    std::vector<float> params;
    ModelConfig c = read_model_file(path, &params);
    model_build(m, c);
    for (size_t i = 0; i < params.size(); i++) m->params[i] = (F)params[i];
}

// ----------------------------------------------------------------------------------------------------------------
// --check-state: one forward/backward on the debug state's batch against its logits, loss and gradients, then (for a
// version-3 state) its AdamW loss curve.
// Tolerances (fp32 here against a reference computed in fp32 by llm.c's PyTorch script, or in fp64 by ours), per
// tensor: max |ours - ref| <= tol * max(1, max |ref|) with tol = 1e-4 for logits, gradients and the loss, and
// 1e-3 * |ref| for each loss of the curve (Adam's first steps magnify rounding in near-zero gradients).
// These are 10-100x the errors measured on the fixtures (README, "Checking a model against a reference").

struct CheckResult {
    int failures = 0;
    double worst = 0;  // largest error / allowed
};

static void check_tensor(CheckResult* r, const char* name, const float* ours, const float* ref, size_t n, double tol,
                         bool verbose) {
    double maxerr = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        maxerr = std::max(maxerr, fabs((double)ours[i] - ref[i]));
        if (!std::isfinite(ours[i])) maxerr = INFINITY;
        maxref = std::max(maxref, fabs((double)ref[i]));
    }
    double allowed = tol * std::max(1.0, maxref);
    bool ok = maxerr <= allowed;
    r->failures += !ok;
    r->worst = std::max(r->worst, maxerr / allowed);
    if (verbose || !ok)
        printf("%-10s %-4s max abs err %.3e  max |ref| %.3e  rel %.3e  (allowed %.1e)\n", name, ok ? "ok" : "FAIL",
               maxerr, maxref, maxref > 0 ? maxerr / maxref : maxerr, allowed);
}

static CheckResult check_state(const std::string& model_path, const std::string& state_path, bool verbose) {
    Model<float> m;
    model_load(&m, model_path);
    const ModelConfig& c = m.config;
    DebugState s = read_debug_state(state_path, c.vocab_size, m.num_params);
    if (s.T > c.max_seq_len)
        fail("debug state '%s': T = %d exceeds the model's max_seq_len %d", state_path.c_str(), s.T, c.max_seq_len);
    Acts<float> a;
    CheckResult r;
    float loss = (float)model_forward(&m, &a, s.inputs.data(), s.targets.data(), s.B, s.T);
    int V = c.vocab_size, Vp = c.padded_vocab_size;
    std::vector<float> logits((size_t)s.B * s.T * V);
    for (int b = 0; b < s.B; b++)  // the real positions (a sink token adds position 0)
        for (int t = 0; t < s.T; t++)
            memcpy(&logits[((size_t)b * s.T + t) * V], a.logits + ((size_t)b * a.T + t + a.tok_offset) * Vp,
                   V * sizeof(float));
    check_tensor(&r, "logits", logits.data(), s.logits.data(), logits.size(), 1e-4, verbose);
    check_tensor(&r, "loss", &loss, &s.loss, 1, 1e-4, verbose);
    sk_fill(m.grads.data(), m.grads.size(), 0.0f);
    model_backward(&m, &a, 1.0f);
    size_t off = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (m.sizes[i]) check_tensor(&r, param_names[i], m.p[i] ? m.g[i] : nullptr, s.grads.data() + off, m.sizes[i], 1e-4, verbose);
        off += m.sizes[i];
    }
    if (s.n_steps > 0) {
        std::vector<float> curve;
        for (int t = 0; t < s.n_steps; t++) {
            sk_fill(m.grads.data(), m.grads.size(), 0.0f);
            curve.push_back((float)model_forward(&m, &a, s.inputs.data(), s.targets.data(), s.B, s.T));
            model_backward(&m, &a, 1.0f);
            double scale = clip_scale(grad_norm(m), s.grad_clip);
            adamw_update(&m, s.lr, s.beta1, s.beta2, s.adam_eps, s.weight_decay, false, t + 1, (float)scale);
        }
        double maxrel = 0;
        for (int t = 0; t < s.n_steps; t++) maxrel = std::max(maxrel, fabs((double)curve[t] - s.losses[t]) / fabs((double)s.losses[t]));
        bool ok = maxrel <= 1e-3;
        r.failures += !ok;
        r.worst = std::max(r.worst, maxrel / 1e-3);
        if (verbose || !ok)
            printf("%-10s %-4s %d AdamW steps, losses %.6f -> %.6f (ref %.6f -> %.6f), max rel err %.3e (allowed 1e-3)\n",
                   "curve", ok ? "ok" : "FAIL", s.n_steps, curve[0], curve.back(), s.losses[0], s.losses.back(), maxrel);
    }
    return r;
}

// ----------------------------------------------------------------------------------------------------------------
// training

// The seed of the random tokens of the probe and the validation batches: fixed, so every measurement of a run (and
// of every run) sees the same sequences.
#define EVAL_DATA_SEED 20240520ull

// Data manipulations of the paper's section 5 on B sequences of T tokens (targets may be null):
//   a fixed token at position k: inputs[k] = id and targets[k-1] = id;
//   random tokens at positions [from, to): uniform in [0, V) from *rng, written to inputs[t] and targets[t-1].
static void apply_data_manipulations(const TrainConfig& tc, int* inputs, int* targets, int B, int T, int V,
                                     uint64_t* rng) {
    for (int b = 0; b < B; b++) {
        int* in = inputs + (size_t)b * T;
        int* tg = targets ? targets + (size_t)b * T : nullptr;
        if (tc.fixed_token >= 0) {
            in[tc.fixed_pos] = tc.fixed_token;
            if (tg && tc.fixed_pos > 0) tg[tc.fixed_pos - 1] = tc.fixed_token;
        }
        for (int t = tc.random_from; t < tc.random_to; t++) {
            int r = (int)(splitmix64(rng) % (uint64_t)V);
            in[t] = r;
            if (tg && t > 0) tg[t - 1] = r;
        }
    }
}

// Checks the data-manipulation flags against the vocabulary and every sequence length they apply to.
static void validate_data_manipulations(const TrainConfig& tc, int V, int T, const char* t_flag) {
    if (tc.fixed_token >= V)
        fail("flag --fixed-token: %d is outside the vocabulary of %d", tc.fixed_token, V);
    if (tc.fixed_token >= 0 && tc.fixed_pos >= T)
        fail("flag --fixed-pos: %d is not a position of a %d-token sequence (%s)", tc.fixed_pos, T, t_flag);
    if (tc.fixed_token >= 0 && tc.fixed_pos >= tc.random_from && tc.fixed_pos < tc.random_to)
        fail("flags --fixed-pos %d and --random-from %d --random-to %d overlap: the random tokens would overwrite the "
             "fixed one", tc.fixed_pos, tc.random_from, tc.random_to);
    if (tc.random_to > 0 && (tc.random_from >= tc.random_to || tc.random_to > T))
        fail("flags --random-from %d --random-to %d: need from < to <= %d (%s)", tc.random_from, tc.random_to, T,
             t_flag);
}

static double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Mean loss over the first `batches` micro-batches of the validation windows, in file order (the same every time).
static double validation_loss(Model<float>* m, Acts<float>* a, DataLoader* val, const TrainConfig* tc, int B,
                              int batches) {
    std::vector<int> x((size_t)B * val->T), y((size_t)B * val->T);
    val->index = 0;
    val->epoch = 0;
    uint64_t rng = EVAL_DATA_SEED;
    double sum = 0;
    for (int i = 0; i < batches; i++) {
        loader_next_batch(val, B, x.data(), y.data());
        apply_data_manipulations(*tc, x.data(), y.data(), B, val->T, m->config.vocab_size, &rng);
        sum += model_forward(m, a, x.data(), y.data(), B, val->T);
    }
    return sum / batches;
}

static void mkdir_p(const std::string& dir) {
    std::string cur;
    for (size_t i = 0; i <= dir.size(); i++) {
        if (i == dir.size() || dir[i] == '/') {
            if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
                fail("cannot create output directory '%s': %s", cur.c_str(), strerror(errno));
        }
        if (i < dir.size()) cur += dir[i];
    }
}

// Generates n tokens after `ids` with temperature and top-k (sampling.h), one forward pass per token over the last
// max_seq_len positions (no key/value cache: simple, and cheap at the sizes this trainer runs). Only the first
// `vocab_text` ids (the tokenizer's) can be drawn.
static std::vector<int> generate(Model<float>* m, Acts<float>* a, std::vector<int> ids, int n, float temperature,
                                 int top_k, int vocab_text, uint64_t* rng) {
    const ModelConfig& c = m->config;
    size_t ctx_max = c.max_seq_len - c.attn.sink_token;
    std::vector<int> out;
    for (int i = 0; i < n; i++) {
        size_t start = ids.size() > ctx_max ? ids.size() - ctx_max : 0;
        int Tc = (int)(ids.size() - start);
        model_forward(m, a, ids.data() + start, (const int*)nullptr, 1, Tc);
        const float* row = a->logits + (size_t)(Tc - 1 + a->tok_offset) * c.padded_vocab_size;
        int id = sample_token(row, vocab_text, temperature, top_k, rng);
        ids.push_back(id);
        out.push_back(id);
    }
    return out;
}

// The ids of --prompt (token 0 without a tokenizer), checked against the model's context.
static std::vector<int> prompt_ids(Model<float>* m, TextCodec* codec, const TrainConfig& tc) {
    std::vector<int> ids = codec->available ? text_encode(codec, tc.prompt) : std::vector<int>{0};
    int context = m->config.max_seq_len - m->config.attn.sink_token;
    if (ids.size() >= (size_t)context)
        fail("flag --prompt: %zu tokens leave no room in the model's context of %d tokens (shorten it)", ids.size(),
             context);
    return ids;
}

// One text sample: its generator is seeded from the run's seed and the step, so it is reproducible and leaves the
// training stream untouched.
static std::string sample_text(Model<float>* m, Acts<float>* a, TextCodec* codec, const TrainConfig& tc, int step) {
    uint64_t rng = tc.seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(step + 1));
    int vocab_text = codec->available ? (int)codec->decoder.tokens.size() : m->config.vocab_size;
    std::vector<int> prompt = prompt_ids(m, codec, tc);
    return text_decode(*codec, generate(m, a, prompt, tc.sample_len, tc.temperature, tc.top_k, vocab_text, &rng));
}

// Text on one console line: newlines and tabs shown as \n and \t.
static std::string one_line(const std::string& text) {
    std::string out;
    for (char ch : text) out += ch == '\n' ? "\\n" : ch == '\t' ? "\\t" : std::string(1, ch);
    return out;
}

static FILE* open_log(const std::string& dir) {
    std::string path = dir + "/log.jsonl";
    FILE* f = fopen(path.c_str(), "a");
    if (!f) fail("cannot open log '%s': %s", path.c_str(), strerror(errno));
    return f;
}

// A number for the JSON log: NaN and Inf are not JSON, so they are written as null.
static std::string json_number(double x) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", x);
    return std::isfinite(x) ? buf : "null";
}

static void log_line(FILE* f, const std::string& line) {
    fprintf(f, "%s\n", line.c_str());
    fflush(f);
}

static int train(CommandLine* cl) {
    TrainConfig& tc = cl->train;
    Model<float> m;
    TrainProgress pr;
    std::string out_dir = tc.out_dir;
    int resume_step = -1;
    if (!tc.resume_dir.empty()) {
        if (cl->model_flag_seen || !tc.load_path.empty())
            fail("--resume restores the model from its checkpoint; drop the model flags and --load");
        out_dir = tc.resume_dir;
        resume_step = latest_checkpoint(tc.resume_dir);
        if (resume_step < 0)
            fail("--resume '%s': no model_*.bin with a matching state_*.bin there (nothing to resume)",
                 tc.resume_dir.c_str());
        model_load(&m, ckpt_path(tc.resume_dir, "model", resume_step));
    } else if (!tc.load_path.empty()) {
        if (cl->model_flag_seen) fail("--load reads the architecture from '%s'; drop the model flags", tc.load_path.c_str());
        model_load(&m, tc.load_path);
    } else {
        AttnSpec& at = cl->model.attn;
        int train_len = tc.seq_len ? tc.seq_len : cl->model.max_seq_len - at.sink_token;
        if (isnan(at.sigmoid_bias))  // --sigmoid-bias auto: -log of the training length (Apple 2024)
            at.sigmoid_bias = -logf((float)train_len);
        if (at.variant == ATTN_CLIPPED && at.clip_len == 0)  // gamma = -alpha / the training positions, kept for good
            at.clip_len = train_len + at.sink_token;
        model_build(&m, cl->model);
        model_init(&m, tc.seed);
    }
    const ModelConfig& c = m.config;
    int off = c.attn.sink_token;
    if (tc.seq_len == 0) tc.seq_len = c.max_seq_len - off;
    int B = tc.batch_size, T = tc.seq_len;
    if (T + off > c.max_seq_len)
        fail("flag --seq-len: %d%s exceeds the model's max_seq_len %d", T, off ? " + 1 (sink token)" : "", c.max_seq_len);
    if (tc.probe_len + off > c.max_seq_len)
        fail("flag --probe-len: %d%s exceeds the model's max_seq_len %d", tc.probe_len, off ? " + 1 (sink token)" : "",
             c.max_seq_len);
    validate_data_manipulations(tc, c.vocab_size, T, "--seq-len");
    validate_data_manipulations(tc, c.vocab_size, tc.probe_len, "--probe-len");
    if (c.attn.mask == MASK_PREFIX && c.attn.mask_param > T + off)
        fail("flag --mask-param: a prefix of %d leaves no position with a loss in sequences of %d%s (the loss starts "
             "at position p - 1); use a prefix of at most %d", c.attn.mask_param, T, off ? " + 1 (sink token)" : "",
             T + off);
    if ((int64_t)B * T > (1 << 30))
        fail("flags --batch %d x --seq-len %d = %lld tokens per micro-batch, more than 2^30 (lower them; --total-batch "
             "accumulates micro-batches)", B, T, (long long)B * T);
    if (tc.total_batch_size == 0) tc.total_batch_size = B * T;
    if (tc.total_batch_size % (B * T) != 0)
        fail("flag --total-batch: %d is not a multiple of --batch x --seq-len = %d", tc.total_batch_size, B * T);
    int accum = tc.total_batch_size / (B * T);
    if (resume_step >= 0) {
        pr = load_train_state(ckpt_path(tc.resume_dir, "state", resume_step), resume_step, &m, tc);
        if (pr.step > tc.steps)
            fail("flag --steps: %d is below step %d of the checkpoint in '%s' (pass --steps %d or more to continue it)",
                 tc.steps, pr.step, tc.resume_dir.c_str(), pr.step);
    } else {
        pr.rng = tc.seed;
    }

    DataLoader train_data, val_data;
    loader_init(&train_data, tc.train_glob, "--train", T, c.vocab_size, tc.seed, true);
    loader_init(&val_data, tc.val_glob, "--val", T, c.vocab_size, tc.seed, false);
    if (tc.data_fraction < 1.0f)  // the first fraction of the windows, in file order
        train_data.num_windows = std::max<size_t>(1, (size_t)(train_data.num_windows * (double)tc.data_fraction));
    loader_seek(&train_data, pr.epoch, pr.index);
    std::string probe_path = tc.probe_path.empty() ? expand_glob(tc.val_glob, "--val")[0] : tc.probe_path;
    std::vector<int> probe = read_probe(probe_path, tc.probe_seqs, tc.probe_len, c.vocab_size);
    uint64_t probe_rng = EVAL_DATA_SEED;
    apply_data_manipulations(tc, probe.data(), nullptr, tc.probe_seqs, tc.probe_len, c.vocab_size, &probe_rng);
    TextCodec codec;
    text_codec_open(&codec, tc.tokenizer_path, c.vocab_size, train_data.shards[0].path, tc.bpe_dir);
    if (tc.sample_len > 0) prompt_ids(&m, &codec, tc);  // a bad or too long prompt fails now, not at the end

    mkdir_p(out_dir);
    FILE* logf = open_log(out_dir);
    log_line(logf, config_json(c, tc, resume_step >= 0 ? "resume" : cl->preset, m.num_params, omp_get_max_threads()));
    printf("sinkscope %s trainer (%s) | %zu parameters | L %d C %d NH %d F %d | %s %s %s %s | B %d T %d accum %d | "
           "%d threads\n", SK_BACKEND_NAME, sk_device_name(), m.num_params, c.num_layers, c.channels, c.num_heads, c.ffn_hidden, norm_names[c.norm],
           placement_names[c.placement], ffn_names[c.ffn], pos_names[c.positions], B, T, accum, omp_get_max_threads());
    printf("train: %zu windows of %d tokens | val: %zu windows | probe: %d x %d from %s | log: %s/log.jsonl\n",
           train_data.num_windows, T, val_data.num_windows, tc.probe_seqs, tc.probe_len, probe_path.c_str(),
           out_dir.c_str());

    Acts<float> acts, probe_acts;
    std::vector<int> x((size_t)B * T), y((size_t)B * T);
    double train_ms = 0, sink_ms = 0;
    int skipped = 0;  // updates skipped for a non-finite loss or gradient (--on-nonfinite skip)
    for (int step = pr.step;; step++) {
        bool last = step == tc.steps;
        char buf[256];
        if (last)  // the final checkpoint first: nothing after it (metrics, a sample) can lose the run
            save_checkpoint(out_dir, &m, tc, TrainProgress{tc.steps, train_data.epoch, train_data.index, pr.rng});
        if (step > pr.step || resume_step < 0) {  // a resumed run does not re-measure its saved step
            if ((tc.val_every && step % tc.val_every == 0) || last) {
                double vl = validation_loss(&m, &acts, &val_data, &tc, B, std::min<size_t>(tc.val_batches, std::max<size_t>(1, val_data.num_windows / B)));
                snprintf(buf, sizeof buf, "{\"type\":\"val\",\"step\":%d,\"val_loss\":%s}", step,
                         json_number(vl).c_str());
                log_line(logf, buf);
                printf("step %6d | val loss %.4f\n", step, vl);
            }
            if ((tc.sink_every && step % tc.sink_every == 0) || last) {
                double t0 = now_ms();
                SinkReport r = measure_sinks(&m, &probe_acts, probe, tc.probe_seqs, tc.probe_len, tc.sink_eps);
                double dt = now_ms() - t0;
                sink_ms += dt;
                snprintf(buf, sizeof buf, "{\"type\":\"sink\",\"step\":%d,\"ms\":%.3f,", step, dt);
                log_line(logf, buf + sink_report_json_fields(r) + "}");
                char slot_part[64] = "";
                if (r.has_slot) snprintf(slot_part, sizeof slot_part, "Sink_* %.2f%% | ", r.sink_star);
                printf("step %6d | %sSink_1 %.2f%%%s | alpha_1 %.4f | norm ratio (last layer) %.2f | entropy %.3f | "
                       "%.0f ms\n", step, slot_part, r.sink[0], r.proxy ? " (proxy)" : "", r.alpha1_mean,
                       r.norm_ratio.back(), r.entropy_mean, dt);
            }
            if (tc.sample_len > 0 && ((tc.sample_every && step % tc.sample_every == 0 && step > 0) || last)) {
                std::string text = sample_text(&m, &probe_acts, &codec, tc, step);
                log_line(logf, "{\"type\":\"sample\",\"step\":" + std::to_string(step) + ",\"prompt\":\"" +
                                   json_escape(tc.prompt) + "\",\"text\":\"" + json_escape(text) + "\"}");
                printf("step %6d | sample: %s\n", step, one_line(text).c_str());
            }
            if (tc.save_every && step % tc.save_every == 0 && step > pr.step && !last)
                save_checkpoint(out_dir, &m, tc, TrainProgress{step, train_data.epoch, train_data.index, pr.rng});
        }
        if (last) break;
        double t0 = now_ms();
        sk_fill(m.grads.data(), m.grads.size(), 0.0f);
        double loss = 0;
        for (int micro = 0; micro < accum; micro++) {
            loader_next_batch(&train_data, B, x.data(), y.data());
            apply_data_manipulations(tc, x.data(), y.data(), B, T, c.vocab_size, &pr.rng);
            loss += model_forward(&m, &acts, x.data(), y.data(), B, T) / accum;
            model_backward(&m, &acts, 1.0f / accum);
        }
        double gn = grad_norm(m);
        float lr = lr_at(tc, step);
        // A NaN or Inf in the loss or in a gradient (the norm is finite exactly when every gradient is) is caught at
        // the step it appears, before the update would carry it into every weight and both AdamW moments.
        if (!std::isfinite(loss) || !std::isfinite(gn)) {
            std::string first = first_nonfinite_param(c, m.grads.data());
            if (first.empty()) first = "none (only the loss)";
            if (tc.on_nonfinite == NONFINITE_STOP)
                fail("step %d: the loss (%g) or a gradient is not finite; first non-finite gradient: %s. Stopped before "
                     "the update, so no checkpoint holds it (those already in '%s' are intact); lower --lr, raise "
                     "--warmup or set --grad-clip, or pass --on-nonfinite skip to skip such steps", step + 1,
                     std::isnan(loss) ? NAN : loss,  // "nan" whatever the NaN's sign bit
                     first.c_str(), out_dir.c_str());
            skipped++;
            log_line(logf, "{\"type\":\"nonfinite\",\"step\":" + std::to_string(step + 1) + ",\"loss\":" +
                               json_number(loss) + ",\"grad_norm\":" + json_number(gn) + ",\"first\":\"" +
                               json_escape(first) + "\",\"action\":\"skip\"}");
            printf("step %6d/%d | loss %.4f | non-finite gradient (first: %s) | update skipped\n", step + 1, tc.steps,
                   std::isnan(loss) ? NAN : loss, first.c_str());
            continue;
        }
        adamw_update(&m, lr, tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay, tc.wd_exempt, step + 1,
                     (float)clip_scale(gn, tc.grad_clip));
        double dt = now_ms() - t0;
        train_ms += dt;
        double tok_s = tc.total_batch_size / (dt / 1e3);
        snprintf(buf, sizeof buf,
                 "{\"type\":\"train\",\"step\":%d,\"loss\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,\"ms\":%.3f,\"tok_per_s\":%.1f}",
                 step + 1, loss, lr, gn, dt, tok_s);
        log_line(logf, buf);
        printf("step %6d/%d | loss %.4f | lr %.2e | norm %.3f | %.0f ms | %.0f tok/s\n", step + 1, tc.steps, loss, lr,
               gn, dt, tok_s);
        fflush(stdout);
    }
    char buf[256];
    snprintf(buf, sizeof buf,
             "{\"type\":\"done\",\"step\":%d,\"train_ms\":%.1f,\"sink_ms\":%.1f,\"sink_overhead\":%.5f,\"skipped_steps\":%d}",
             tc.steps, train_ms, sink_ms, train_ms > 0 ? sink_ms / train_ms : 0.0, skipped);
    log_line(logf, buf);
    fclose(logf);
    printf("done: checkpoint %s | sink metrics took %.2f%% of training time\n",
           ckpt_path(out_dir, "model", tc.steps).c_str(), train_ms > 0 ? 100.0 * sink_ms / train_ms : 0.0);
    return 0;
}

static int eval_sink(CommandLine* cl) {
    TrainConfig& tc = cl->train;
    if (tc.probe_path.empty()) fail("--eval-sink needs --probe SHARD (an llm.c token shard)");
    Model<float> m;
    model_load(&m, tc.load_path);
    if (tc.probe_len + m.config.attn.sink_token > m.config.max_seq_len)
        fail("flag --probe-len: %d exceeds the model's max_seq_len %d%s", tc.probe_len, m.config.max_seq_len,
             m.config.attn.sink_token ? " - 1 (sink token)" : "");
    std::vector<int> probe = read_probe(tc.probe_path, tc.probe_seqs, tc.probe_len, m.config.vocab_size);
    validate_data_manipulations(tc, m.config.vocab_size, tc.probe_len, "--probe-len");
    uint64_t probe_rng = EVAL_DATA_SEED;
    apply_data_manipulations(tc, probe.data(), nullptr, tc.probe_seqs, tc.probe_len, m.config.vocab_size, &probe_rng);
    Acts<float> a;
    SinkReport r = measure_sinks(&m, &a, probe, tc.probe_seqs, tc.probe_len, tc.sink_eps);
    printf("{\"checkpoint\":\"%s\",\"probe\":\"%s\",%s}\n", tc.load_path.c_str(), tc.probe_path.c_str(),
           sink_report_json_fields(r).c_str());
    return 0;
}

static int eval_sample(CommandLine* cl) {
    TrainConfig& tc = cl->train;
    Model<float> m;
    model_load(&m, tc.load_path);
    TextCodec codec;
    text_codec_open(&codec, tc.tokenizer_path, m.config.vocab_size, "", tc.bpe_dir);
    Acts<float> a;
    printf("%s%s\n", tc.prompt.c_str(), sample_text(&m, &a, &codec, tc, 0).c_str());
    return 0;
}

#ifndef TESTING
int main(int argc, char** argv) {
    CommandLine cl;
    parse_command_line(argc, argv, &cl);
    if (cl.train.threads > 0) omp_set_num_threads(cl.train.threads);
    sk_backend_init();  // the GPU build stops here with a clear message when no GPU exists
    // parse_command_line has checked the mode combinations (validate_command_line in config.h)
    if (cl.train.sample) return eval_sample(&cl);
    if (cl.train.eval_sink) return eval_sink(&cl);
    if (!cl.train.check_state_path.empty()) {
        CheckResult r = check_state(cl.train.load_path, cl.train.check_state_path, true);
        printf("%s: %d tensor(s) beyond tolerance (worst error %.3g of its allowance)\n", r.failures ? "FAIL" : "OK",
               r.failures, r.worst);
        return r.failures ? 1 : 0;
    }
    return train(&cl);
}
#endif
