/*
train_gpt_cpu.cpp: the CPU reference trainer of sinkscope. fp32, OpenMP, one translation unit plus shared headers.

What it is: a GPT/LLaMA-family language model (config.h: LayerNorm or RMSNorm, pre- or post-norm, six FFN kinds, five
kinds of positions, tied or untied embeddings, biases on or off) with a hand-written forward and backward pass for every
layer, AdamW, a data loader, checkpoints that llm.c reads and writes, and the attention-sink metrics of the paper
measured inside the training loop (sink_metrics.h). Attention variants come from attention_variants.cuh.
What it is not: fast at scale (see train_gpt.cu for the GPU), or a tokenizer.

Build and run:  make train_gpt_cpu && ./train_gpt_cpu --help      (make train: data + a short emergence run)
Tests:          make test   (the test files #include this file with TESTING defined, as llm.c's test does)

Reading order: numerics and the matmul; the layers, each a forward/backward pair (backward accumulates into gradients
with +=, and quotes the forward line it differentiates); the model (parameters, activations, forward, backward, update);
sink measurement; checkpoints; check-state; the training loop and main.

Exactness. Every layer is a template over the float type (float in the trainer, double in the finite-difference tests).
Each output element is reduced by exactly one thread in one fixed order, documented at each reduction, so results do
not depend on the number of OpenMP threads, and a GPU kernel that follows the same order reproduces them bit for bit:
  - dot products and matmuls: acc = init; for k = 0..K-1 in order: acc = fma(a_k, b_k, acc)  (init = bias, 0, or the
    gradient already there when backward accumulates);
  - row statistics (norm means, softmax sums, the loss): plain sequential sums in index order;
  - the global gradient norm: squares summed in double over fixed 4096-element chunks, chunks summed in order.
exp/log/tanh/sqrt/fma go through numerics.h. Shapes: B batch, T time, C channels, NH heads, hs = C/NH head size,
F ffn hidden, V vocab, Vp padded vocab, L layers, OC output channels.
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
#include "config.h"
#include "numerics.h"
#include "sink_metrics.h"
#include "data/debug_state.h"
#include "data/model_file.h"
#include "data/token_shards.h"

// ----------------------------------------------------------------------------------------------------------------
// matmul. One kernel serves the forward and both backward products:
//   out[m,n] = init[m,n] + sum_{k=0..K-1} A[m,k] * Bm[k,n]     (k in increasing order, one fma per term)
// Register blocking: RM rows x RN columns of `out` per task, RN a multiple of the SIMD width, so the compiler keeps
// the accumulators in registers and vectorises over n; each output element still sees its own sequential sum.

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

// dst (cols, rows) = src (rows, cols)^T
template <typename F>
static void transpose(F* dst, const F* src, int rows, int cols) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
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
    if (dbias) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < OC; o++) {
            F s = dbias[o];
            for (int bt = 0; bt < BT; bt++) s += dout[(size_t)bt * OC + o];
            dbias[o] = s;
        }
    }
}

// ----------------------------------------------------------------------------------------------------------------
// normalisation. LayerNorm: y = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + eps) (biased variance).
// RMSNorm: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). mean is unused (0) for RMSNorm.

template <typename F>
static void norm_forward(F* out, F* mean, F* rstd, const F* inp, const F* w, const F* b, int BT, int C, int kind,
                         float eps) {
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < BT; bt++) {
        const F* x = inp + (size_t)bt * C;
        F* y = out + (size_t)bt * C;
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
    }
}

// backward of: y = n * w + b, n = (x - mean) * rstd
//   dx += rstd * (dn - mean(dn) - n * mean(dn * n))   (LayerNorm; RMSNorm drops the mean(dn) term), dn = dy * w
//   dw += sum_bt dy * n,  db += sum_bt dy             (sums over bt in order, one thread per channel)
template <typename F>
static void norm_backward(F* dinp, F* dw, F* db, const F* dout, const F* inp, const F* w, const F* mean,
                          const F* rstd, int BT, int C, int kind) {
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < BT; bt++) {
        const F* x = inp + (size_t)bt * C;
        const F* dy = dout + (size_t)bt * C;
        F* dx = dinp + (size_t)bt * C;
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
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++) {
        F gw = dw[i], gb = db ? db[i] : F(0);
        for (int bt = 0; bt < BT; bt++) {
            F n = (inp[(size_t)bt * C + i] - mean[bt]) * rstd[bt];
            F dy = dout[(size_t)bt * C + i];
            gw = sk_fma(dy, n, gw);
            gb += dy;
        }
        dw[i] = gw;
        if (db) db[i] = gb;
    }
}

// ----------------------------------------------------------------------------------------------------------------
// activations: relu, tanh-GELU, swish (SiLU). act_grad is d act(x) / dx.

template <typename F>
static inline F act_forward(int ffn, F x) {
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
static inline F act_grad(int ffn, F x) {
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
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) out[i] = h2 ? act_forward(ffn, h1[i]) * h2[i] : act_forward(ffn, h1[i]);
}

// backward of: out = act(h1) * h2  (or act(h1)):  dh1 = dout * h2 * act'(h1),  dh2 = dout * act(h1)
template <typename F>
static void ffn_act_backward(F* dh1, F* dh2, const F* dout, const F* h1, const F* h2, size_t N, int ffn) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        F g = h2 ? dout[i] * h2[i] : dout[i];
        dh1[i] = g * act_grad(ffn, h1[i]);
        if (h2) dh2[i] = dout[i] * act_forward(ffn, h1[i]);
    }
}

// ----------------------------------------------------------------------------------------------------------------
// positions. Tables are computed once in double and rounded, so every platform gets the same values.

// RoPE (rotate-half) on q and k of every head of qkv (B,T,3C), in place; `inverse` rotates backwards (the backward
// pass: the rotation is orthogonal, so its gradient is the inverse rotation of the incoming gradient).
//   for i < hs/2: a' = a cos - b sin, b' = b cos + a sin, (a, b) = (x[i], x[i + hs/2]), angle t * base^(-2i/hs)
template <typename F>
static void rope_apply(F* qkv, const F* cos_t, const F* sin_t, int B, int T, int C, int NH, bool inverse) {
    int hs = C / NH, half = hs / 2;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const F* cs = cos_t + (size_t)t * half;
            const F* sn = sin_t + (size_t)t * half;
            for (int part = 0; part < 2; part++)  // q, then k
                for (int h = 0; h < NH; h++) {
                    F* x = qkv + ((size_t)b * T + t) * 3 * C + part * C + h * hs;
                    for (int i = 0; i < half; i++) {
                        F a = x[i], bb = x[i + half], s = inverse ? -sn[i] : sn[i];
                        x[i] = a * cs[i] - bb * s;
                        x[i + half] = bb * cs[i] + a * s;
                    }
                }
        }
}

// x0 (B,T,C) = wte[tok] + wpe[t] (learned) or + pe[t] (sinusoidal table)
template <typename F>
static void embedding_forward(F* out, const int* tokens, const F* wte, const F* pos_table, int B, int T, int C) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            F* o = out + ((size_t)b * T + t) * C;
            const F* e = wte + (size_t)tokens[b * T + t] * C;
            for (int i = 0; i < C; i++) o[i] = pos_table ? e[i] + pos_table[(size_t)t * C + i] : e[i];
        }
}

// backward of: x0[b,t] = wte[tok[b,t]] + wpe[t].  One thread per channel, (b,t) in order, so repeated tokens
// accumulate in a fixed order:  dwte[tok] += dx0[b,t];  dwpe[t] += dx0[b,t]
template <typename F>
static void embedding_backward(F* dwte, F* dwpe, const F* dout, const int* tokens, int B, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++)
        for (int bt = 0; bt < B * T; bt++) {
            F d = dout[(size_t)bt * C + i];
            dwte[(size_t)tokens[bt] * C + i] += d;
            if (dwpe) dwpe[(size_t)(bt % T) * C + i] += d;
        }
}

// ----------------------------------------------------------------------------------------------------------------
// attention. qkv (B,T,3C) holds q | k | v after RoPE; head h owns channels [h*hs, (h+1)*hs) of each.
//   s[t,j] = tau * (q_t . k_j) + alibi[h] * (j - t),  tau = 1/sqrt(hs)    (dot product over d in order, fma)
//   P[t, lo..hi) = variant map of s (attention_variants.cuh); entries outside [lo,hi) are 0
//   y_t = sum_j P[t,j] v_j                                               (j in order, fma)
// att (B,NH,T,T) keeps P for the backward pass and the sink metrics. Parallel over (b, h): every output is written by
// the thread that owns its (b, h).

template <typename F>
static void attention_forward(F* out, F* att, const F* qkv, const float* alibi, const AttnSpec& spec, int B, int T,
                              int C, int NH) {
    int hs = C / NH;
    F tau = F(1) / sk_sqrt(F(hs));
#pragma omp parallel
    {
        std::vector<F> s(T);
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                for (int t = 0; t < T; t++) {
                    const F* q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                    F* p = att + (((size_t)b * NH + h) * T + t) * T;
                    int lo, hi;
                    attn_visible_keys(spec, t, &lo, &hi);
                    for (int j = lo; j < hi; j++) {
                        const F* k = qkv + ((size_t)b * T + j) * 3 * C + C + h * hs;
                        F dot = 0;
                        for (int d = 0; d < hs; d++) dot = sk_fma(q[d], k[d], dot);
                        s[j] = dot * tau;
                        if (alibi) s[j] += F(alibi[h]) * F(j - t);
                    }
                    for (int j = 0; j < T; j++) p[j] = 0;
                    attn_row_forward(spec, s.data() + lo, p + lo, hi - lo);
                    F* y = out + ((size_t)b * T + t) * C + h * hs;
                    for (int d = 0; d < hs; d++) y[d] = 0;
                    for (int j = lo; j < hi; j++) {
                        const F* v = qkv + ((size_t)b * T + j) * 3 * C + 2 * C + h * hs;
                        for (int d = 0; d < hs; d++) y[d] = sk_fma(p[j], v[d], y[d]);
                    }
                }
            }
    }
}

// backward of the attention core, O(T^2 hs) per head:
//   dP[t,j] = dO_t . v_j;  dS = variant derivative (softmax: P (dP - D));
//   dq_t += tau * sum_j dS[t,j] k_j;  dk_j += tau * dS[t,j] q_t;  dv_j += P[t,j] dO_t
// Queries t run in order, so every dk_j and dv_j accumulates over t in increasing order.
template <typename F>
static void attention_backward(F* dqkv, const F* dout, const F* qkv, const F* att, const AttnSpec& spec, int B,
                               int T, int C, int NH) {
    int hs = C / NH;
    F tau = F(1) / sk_sqrt(F(hs));
#pragma omp parallel
    {
        std::vector<F> dp(T), ds(T);
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                for (int t = 0; t < T; t++) {
                    const F* q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                    const F* p = att + (((size_t)b * NH + h) * T + t) * T;
                    const F* dy = dout + ((size_t)b * T + t) * C + h * hs;
                    F* dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
                    int lo, hi;
                    attn_visible_keys(spec, t, &lo, &hi);
                    for (int j = lo; j < hi; j++) {
                        const F* v = qkv + ((size_t)b * T + j) * 3 * C + 2 * C + h * hs;
                        F dot = 0;
                        for (int d = 0; d < hs; d++) dot = sk_fma(dy[d], v[d], dot);
                        dp[j] = dot;
                    }
                    attn_row_backward(spec, (const F*)nullptr, p + lo, dp.data() + lo, ds.data() + lo, hi - lo);
                    for (int j = lo; j < hi; j++) {
                        const F* k = qkv + ((size_t)b * T + j) * 3 * C + C + h * hs;
                        F* dk = dqkv + ((size_t)b * T + j) * 3 * C + C + h * hs;
                        F* dv = dqkv + ((size_t)b * T + j) * 3 * C + 2 * C + h * hs;
                        F g = ds[j] * tau;
                        for (int d = 0; d < hs; d++) {
                            dq[d] = sk_fma(g, k[d], dq[d]);
                            dk[d] = sk_fma(g, q[d], dk[d]);
                            dv[d] = sk_fma(p[j], dy[d], dv[d]);
                        }
                    }
                }
            }
    }
}

// ----------------------------------------------------------------------------------------------------------------
// cross-entropy over the first V of Vp logits (padded columns are ignored).
//   probs = softmax(logits[0..V));  losses[bt] = -log probs[target]

template <typename F>
static void crossentropy_forward(F* losses, F* probs, const F* logits, const int* targets, int BT, int V, int Vp) {
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < BT; bt++) {
        const F* z = logits + (size_t)bt * Vp;
        F* p = probs + (size_t)bt * Vp;
        F m = z[0];
        for (int i = 1; i < V; i++) m = z[i] > m ? z[i] : m;
        F sum = 0;
        for (int i = 0; i < V; i++) {
            p[i] = sk_exp(z[i] - m);
            sum += p[i];
        }
        for (int i = 0; i < V; i++) p[i] = p[i] / sum;
        for (int i = V; i < Vp; i++) p[i] = 0;
        if (targets) losses[bt] = -sk_log(p[targets[bt]]);
    }
}

// backward of: loss = dloss * sum_bt losses[bt]  ->  dlogits[bt,i] = dloss * (probs[i] - [i == target]), i < V
template <typename F>
static void crossentropy_backward(F* dlogits, const F* probs, const int* targets, F dloss, int BT, int V, int Vp) {
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < BT; bt++) {
        F* d = dlogits + (size_t)bt * Vp;
        const F* p = probs + (size_t)bt * Vp;
        for (int i = 0; i < V; i++) d[i] = dloss * (p[i] - (i == targets[bt] ? F(1) : F(0)));
        for (int i = V; i < Vp; i++) d[i] = 0;
    }
}

template <typename F>
static void residual_forward(F* out, const F* a, const F* b, size_t N) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

// ----------------------------------------------------------------------------------------------------------------
// the model: parameters (one buffer, pointed into by the ParamId table), gradients, AdamW moments, and the tables of
// positions. Activations live apart (Acts) so a training batch and the sink probe can each have their own.

template <typename F>
struct Model {
    ModelConfig config;
    size_t sizes[NUM_PARAM_TENSORS];
    size_t num_params = 0;
    std::vector<F> params, grads, adam_m, adam_v;
    F* p[NUM_PARAM_TENSORS];
    F* g[NUM_PARAM_TENSORS];
    std::vector<F> pos_table;          // sinusoidal (maxT, C)
    std::vector<F> rope_cos, rope_sin; // (maxT, hs/2)
    std::vector<float> alibi;          // (NH) slopes
    std::vector<F> scratch;            // matmul transposes
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
    if (c.positions == POS_ALIBI)
        for (int h = 0; h < NH; h++) m->alibi.push_back((float)pow(2.0, -8.0 * (h + 1) / NH));
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
// Padded vocabulary rows stay zero.
template <typename F>
static void model_init(Model<F>* m, uint64_t seed) {
    const ModelConfig& c = m->config;
    uint64_t rng = seed;
    int C = c.channels, F_ = c.ffn_hidden, L = c.num_layers;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (!m->sizes[i]) continue;
        double std = 0, fill = 0;
        bool gpt2 = c.init == INIT_GPT2;
        switch (i) {
        case P_LN1W: case P_LN2W: case P_LNFW: fill = 1; break;
        case P_LN1B: case P_LN2B: case P_LNFB: case P_QKVB: case P_ATTPROJB: case P_FCB: case P_FCB2: case P_FCPROJB: break;
        case P_WTE: case P_WPE: case P_LMHEAD: std = gpt2 ? 0.02 : sqrt(2.0 / (5.0 * C)); break;
        case P_ATTPROJW: std = gpt2 ? 0.02 / sqrt(2.0 * L) : sqrt(2.0 / (5.0 * C)); break;
        case P_FCPROJW: std = gpt2 ? 0.02 / sqrt(2.0 * L) : 1.0 / sqrt((double)F_) / L; break;
        default: std = gpt2 ? 0.02 : sqrt(2.0 / (5.0 * C)); break;  // qkvw, fcw, fcw2: fan_in = C
        }
        size_t rows_used = m->sizes[i];
        if (i == P_WTE || i == P_LMHEAD) rows_used = (size_t)c.vocab_size * C;
        for (size_t k = 0; k < m->sizes[i]; k++)
            m->p[i][k] = std > 0 ? (k < rows_used ? (F)(std * rng_normal(&rng)) : F(0)) : (F)fill;
    }
}

// Activations of one forward pass at a fixed (B, T), and the gradient scratch for its backward pass.
template <typename F>
struct Acts {
    int B = 0, T = 0;
    std::vector<F> mem;
    F *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *atty, *residual2, *ln2, *ln2_mean, *ln2_rstd;
    F *fch, *fch2, *fcact, *residual3, *lnf, *lnf_mean, *lnf_rstd, *logits, *probs, *losses, *block_out;
    // backward scratch
    F *dres, *dtmp, *dln, *datty, *dqkv, *dfch, *dfch2, *dfcact, *dlogits;
    std::vector<int> inputs, targets;
};

template <typename F>
static void acts_alloc(Acts<F>* a, const ModelConfig& c, int B, int T) {
    if (a->B == B && a->T == T) return;
    size_t BT = (size_t)B * T, C = c.channels, L = c.num_layers, NH = c.num_heads, F_ = c.ffn_hidden,
           Vp = c.padded_vocab_size;
    size_t Fg = ffn_is_gated(c.ffn) ? F_ : 0;
    struct Slot { F** ptr; size_t n; } slots[] = {
        {&a->encoded, BT * C}, {&a->ln1, L * BT * C}, {&a->ln1_mean, L * BT}, {&a->ln1_rstd, L * BT},
        {&a->qkv, L * BT * 3 * C}, {&a->att, L * B * NH * T * T}, {&a->atty, L * BT * C},
        {&a->residual2, L * BT * C}, {&a->ln2, L * BT * C}, {&a->ln2_mean, L * BT}, {&a->ln2_rstd, L * BT},
        {&a->fch, L * BT * F_}, {&a->fch2, L * BT * Fg}, {&a->fcact, L * BT * F_}, {&a->residual3, L * BT * C},
        {&a->lnf, BT * C}, {&a->lnf_mean, BT}, {&a->lnf_rstd, BT}, {&a->logits, BT * Vp}, {&a->probs, BT * Vp},
        {&a->losses, BT}, {&a->block_out, BT * C},
        {&a->dres, BT * C}, {&a->dtmp, BT * C}, {&a->dln, BT * C}, {&a->datty, BT * C}, {&a->dqkv, BT * 3 * C},
        {&a->dfch, BT * F_}, {&a->dfch2, BT * Fg}, {&a->dfcact, BT * F_}, {&a->dlogits, BT * Vp}};
    size_t total = 0;
    for (const Slot& s : slots) total += s.n;
    double gib = (double)total * sizeof(F) / (1 << 30);
    double ram_gib = (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) / (1 << 30);
    if (gib > 0.9 * ram_gib)
        fail("activations for B %d x T %d need %.1f GiB, more than this machine's %.1f GiB of memory (lower --batch "
             "or --seq-len; use --total-batch to keep the tokens per step)", B, T, gib, ram_gib);
    a->mem.assign(total, 0);
    F* base = a->mem.data();
    for (const Slot& s : slots) {
        *s.ptr = s.n ? base : nullptr;
        base += s.n;
    }
    a->B = B;
    a->T = T;
}

static inline size_t scratch_size(const ModelConfig& c, int B, int T) {
    size_t BT = (size_t)B * T, C = c.channels, mx = 0;
    size_t outs[] = {3 * C, C, (size_t)c.ffn_hidden, (size_t)c.padded_vocab_size};
    for (size_t oc : outs) {
        mx = std::max(mx, oc * std::max(C, (size_t)c.ffn_hidden));
        mx = std::max(mx, oc * BT);
    }
    return mx;
}

template <typename F>
static const F* lm_head_weight(const Model<F>& m) {
    return m.config.tied ? m.p[P_WTE] : m.p[P_LMHEAD];
}

// Forward pass over inputs (B,T); returns the mean loss when targets is given (else 0; probs are still filled).
// with_head = false stops after the last block (the sink probe needs no logits).
template <typename F>
static double model_forward(Model<F>* m, Acts<F>* a, const int* inputs, const int* targets, int B, int T,
                            bool with_head = true) {
    const ModelConfig& c = m->config;
    if (T > c.max_seq_len) fail("sequence length %d exceeds the model's max_seq_len %d", T, c.max_seq_len);
    acts_alloc(a, c, B, T);
    size_t need = scratch_size(c, B, T);
    if (m->scratch.size() < need) m->scratch.resize(need);
    F* scratch = m->scratch.data();
    int C = c.channels, NH = c.num_heads, L = c.num_layers, F_ = c.ffn_hidden, V = c.vocab_size,
        Vp = c.padded_vocab_size, BT = B * T;
    size_t BTC = (size_t)BT * C, BTF = (size_t)BT * F_;
    bool pre = c.placement == PLACE_PRE, gated = ffn_is_gated(c.ffn);
    a->inputs.assign(inputs, inputs + BT);
    if (targets) a->targets.assign(targets, targets + BT);
    const F* pos = c.positions == POS_LEARNED ? m->p[P_WPE] : c.positions == POS_SINUSOIDAL ? m->pos_table.data() : nullptr;
    embedding_forward(a->encoded, inputs, m->p[P_WTE], pos, B, T, C);
    for (int l = 0; l < L; l++) {
        const F* res_in = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * BTC;
        F* ln1 = a->ln1 + l * BTC;
        F* qkv = a->qkv + l * BTC * 3;
        F* att = a->att + (size_t)l * B * NH * T * T;
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
        attention_forward(atty, att, qkv, c.positions == POS_ALIBI ? m->alibi.data() : nullptr, c.attn, B, T, C, NH);
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
    crossentropy_forward(a->losses, a->probs, a->logits, targets, BT, V, Vp);
    if (!targets) return 0;
    double sum = 0;  // in order of bt
    for (int i = 0; i < BT; i++) sum += a->losses[i];
    return sum / BT;
}

// Backward pass of the last forward. Gradients accumulate (+=) into m->grads scaled by `scale` (1/accumulation
// steps), so micro-batches add up to the gradient of the mean loss over the whole batch.
template <typename F>
static void model_backward(Model<F>* m, Acts<F>* a, F scale) {
    const ModelConfig& c = m->config;
    int B = a->B, T = a->T, C = c.channels, NH = c.num_heads, L = c.num_layers, F_ = c.ffn_hidden,
        V = c.vocab_size, Vp = c.padded_vocab_size, BT = B * T;
    size_t BTC = (size_t)BT * C, BTF = (size_t)BT * F_;
    bool pre = c.placement == PLACE_PRE, gated = ffn_is_gated(c.ffn);
    F* scratch = m->scratch.data();
    F** g = m->g;
    // zero the gradient scratch (backward accumulates into it)
    F* zero_from = a->dres;
    std::fill(zero_from, a->mem.data() + a->mem.size(), F(0));
    // loss = scale * mean_bt losses
    crossentropy_backward(a->dlogits, a->probs, a->targets.data(), scale / F(BT), BT, V, Vp);
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
            std::fill(a->dtmp, a->dtmp + BTC, F(0));
            norm_backward(a->dtmp, dln2w, dln2b, a->dres, ln2, ln2w, m2, r2, BT, C, c.norm);
            std::copy(a->dtmp, a->dtmp + BTC, a->dres);  // the residual path: d res2 = d ln2 (+ the ffn part below)
            dffn_out = a->dtmp;
        }
        const F* ffn_in = pre ? ln2 : res2;
        F* dffn_in = pre ? a->dln : a->dres;
        if (pre) std::fill(a->dln, a->dln + BTC, F(0));
        std::fill(a->dfcact, a->dfcact + BTF, F(0));
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
            std::fill(a->dtmp, a->dtmp + BTC, F(0));
            norm_backward(a->dtmp, dln1w, dln1b, a->dres, ln1, ln1w, m1, r1, BT, C, c.norm);
            std::copy(a->dtmp, a->dtmp + BTC, a->dres);
            dattn_out = a->dtmp;
        }
        const F* attn_in = pre ? ln1 : res_in;
        F* dattn_in = pre ? a->dln : a->dres;
        if (pre) std::fill(a->dln, a->dln + BTC, F(0));
        std::fill(a->datty, a->datty + BTC, F(0));
        std::fill(a->dqkv, a->dqkv + 3 * BTC, F(0));
        matmul_backward(a->datty, g[P_ATTPROJW] + lC * C, dprojb, dattn_out, atty, m->p[P_ATTPROJW] + lC * C, BT, C,
                        C, scratch);
        attention_backward(a->dqkv, a->datty, qkv, att, c.attn, B, T, C, NH);
        if (c.positions == POS_ROPE) rope_apply(a->dqkv, m->rope_cos.data(), m->rope_sin.data(), B, T, C, NH, true);
        matmul_backward(dattn_in, g[P_QKVW] + lC * 3 * C, dqkvb, a->dqkv, attn_in, m->p[P_QKVW] + lC * 3 * C, BT, C,
                        3 * C, scratch);
        if (pre) norm_backward(a->dres, dln1w, dln1b, a->dln, res_in, ln1w, m1, r1, BT, C, c.norm);
    }
    embedding_backward(g[P_WTE], g[P_WPE], a->dres, a->inputs.data(), B, T, C);
}

// ----------------------------------------------------------------------------------------------------------------
// optimizer

// Global L2 norm of the gradients: squares summed in double over fixed 4096-element chunks, chunks added in order.
template <typename F>
static double grad_norm(const Model<F>& m) {
    const size_t chunk = 4096, n = m.num_params, nchunks = (n + chunk - 1) / chunk;
    std::vector<double> part(nchunks);
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nchunks; k++) {
        double s = 0;
        for (size_t i = k * chunk; i < std::min(n, (k + 1) * chunk); i++) s += (double)m.grads[i] * m.grads[i];
        part[k] = s;
    }
    double total = 0;
    for (double s : part) total += s;
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
        size_t n = m->sizes[id];
#pragma omp parallel for schedule(static)
        for (size_t k = off; k < off + n; k++) {
            F gr = m->grads[k] * grad_scale;
            F mm = F(beta1) * m->adam_m[k] + F(1 - beta1) * gr;
            F vv = F(beta2) * m->adam_v[k] + F(1 - beta2) * gr * gr;
            m->adam_m[k] = mm;
            m->adam_v[k] = vv;
            F mhat = mm / bc1, vhat = vv / bc2;
            m->params[k] -= F(lr) * (mhat / (sk_sqrt(vhat) + F(eps)) + decay * m->params[k]);
        }
        off += n;
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
    int C = c.channels, NH = c.num_heads, L = c.num_layers;
    const int chunk = 8;
    SinkAccumulator acc;
    sink_begin(&acc, L, NH, T, eps);
    for (int s0 = 0; s0 < S; s0 += chunk) {
        int n = std::min(chunk, S - s0);
        model_forward(m, a, probe.data() + (size_t)s0 * T, (const int*)nullptr, n, T, false);
        size_t BTC = (size_t)n * T * C;
        for (int b = 0; b < n; b++) {
            size_t off = (size_t)b * T * C;
            sink_add_hidden(&acc, 0, a->encoded + off, C);
            for (int l = 0; l < L; l++) {
                for (int h = 0; h < NH; h++)
                    sink_add_head(&acc, l, h, a->att + (size_t)l * n * NH * T * T + ((size_t)b * NH + h) * T * T);
                sink_add_hidden(&acc, l + 1, a->residual3 + l * BTC + off, C);
                const F* qkv = a->qkv + l * BTC * 3 + off * 3;
                sink_add_kv(&acc, l, qkv + C, qkv + 2 * C, C, (size_t)3 * C);
            }
            sink_end_sequence(&acc);
        }
    }
    return sink_finish(&acc);
}

// ----------------------------------------------------------------------------------------------------------------
// training state file (resume): model_<step>.bin holds the weights (data/model_file.h); state_<step>.bin holds the
// rest. 256 x int32 header: [0] 20240528 [1] 1 [2] step [3] B [4] T [5] total batch [6..7] seed [8..9] loader epoch
// [10..11] loader index [12..13] rng [14..15] num_params (64-bit values as low, high int32); then AdamW m and v as
// float32[num_params] each. Both files are written atomically, the state first, so a model file never exists without
// its state.

#define TRAIN_STATE_MAGIC 20240528

struct TrainProgress {
    int step = 0;
    uint64_t epoch = 0, index = 0, rng = 0;
};

static inline void put_u64(int32_t* h, int i, uint64_t x) { h[i] = (int32_t)(uint32_t)x; h[i + 1] = (int32_t)(uint32_t)(x >> 32); }
static inline uint64_t get_u64(const int32_t* h, int i) { return (uint64_t)(uint32_t)h[i] | ((uint64_t)(uint32_t)h[i + 1] << 32); }

static std::string ckpt_path(const std::string& dir, const char* kind, int step) {
    char buf[64];
    snprintf(buf, sizeof buf, "/%s_%08d.bin", kind, step);
    return dir + buf;
}

static void save_checkpoint(const std::string& dir, Model<float>* m, const TrainConfig& tc, const TrainProgress& pr) {
    int32_t h[256] = {0};
    h[0] = TRAIN_STATE_MAGIC; h[1] = 1; h[2] = pr.step; h[3] = tc.batch_size; h[4] = tc.seq_len;
    h[5] = tc.total_batch_size;
    put_u64(h, 6, tc.seed); put_u64(h, 8, pr.epoch); put_u64(h, 10, pr.index); put_u64(h, 12, pr.rng);
    put_u64(h, 14, m->num_params);
    AtomicWriter w = atomic_open(ckpt_path(dir, "state", pr.step));
    atomic_write(&w, h, sizeof h);
    atomic_write(&w, m->adam_m.data(), m->num_params * sizeof(float));
    atomic_write(&w, m->adam_v.data(), m->num_params * sizeof(float));
    atomic_commit(&w);
    write_model_file(ckpt_path(dir, "model", pr.step), m->config, m->params.data());
}

// The latest step in dir with both a model and a state file; -1 if none.
static int latest_checkpoint(const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (!d) fail("--resume '%s': cannot open the directory: %s", dir.c_str(), strerror(errno));
    int best = -1;
    while (struct dirent* e = readdir(d)) {
        int step;
        char tail;
        if (sscanf(e->d_name, "model_%8d.bi%c", &step, &tail) == 2 && tail == 'n' && strlen(e->d_name) == 18) {
            struct stat st;
            if (stat(ckpt_path(dir, "state", step).c_str(), &st) == 0 && step > best) best = step;
        }
    }
    closedir(d);
    return best;
}

static TrainProgress load_train_state(const std::string& path, Model<float>* m, const TrainConfig& tc) {
    FileBytes fb = read_file_bytes(path, "training state");
    const int32_t* h = file_header(fb, "training state");
    const char* p = path.c_str();
    if (h[0] != TRAIN_STATE_MAGIC || h[1] != 1)
        fail("training state '%s': magic/version %d/%d, expected %d/1", p, h[0], h[1], TRAIN_STATE_MAGIC);
    if (get_u64(h, 14) != m->num_params)
        fail("training state '%s': %llu parameters, but its model file has %zu", p,
             (unsigned long long)get_u64(h, 14), m->num_params);
    if (fb.bytes.size() != 1024 + 2 * m->num_params * sizeof(float))
        fail("training state '%s': %zu bytes, expected %zu (truncated)", p, fb.bytes.size(),
             1024 + 2 * m->num_params * sizeof(float));
    if (h[3] != tc.batch_size || h[4] != tc.seq_len || h[5] != tc.total_batch_size || get_u64(h, 6) != tc.seed)
        fail("--resume: the run was saved with --batch %d --seq-len %d --total-batch %d --seed %llu; pass the same "
             "values to continue it bit-identically", h[3], h[4], h[5], (unsigned long long)get_u64(h, 6));
    TrainProgress pr;
    pr.step = h[2]; pr.epoch = get_u64(h, 8); pr.index = get_u64(h, 10); pr.rng = get_u64(h, 12);
    memcpy(m->adam_m.data(), fb.bytes.data() + 1024, m->num_params * sizeof(float));
    memcpy(m->adam_v.data(), fb.bytes.data() + 1024 + m->num_params * sizeof(float), m->num_params * sizeof(float));
    return pr;
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
    for (size_t bt = 0; bt < (size_t)s.B * s.T; bt++)
        memcpy(&logits[bt * V], a.logits + bt * Vp, V * sizeof(float));
    check_tensor(&r, "logits", logits.data(), s.logits.data(), logits.size(), 1e-4, verbose);
    check_tensor(&r, "loss", &loss, &s.loss, 1, 1e-4, verbose);
    std::fill(m.grads.begin(), m.grads.end(), 0.0f);
    model_backward(&m, &a, 1.0f);
    size_t off = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (m.sizes[i]) check_tensor(&r, param_names[i], m.p[i] ? m.g[i] : nullptr, s.grads.data() + off, m.sizes[i], 1e-4, verbose);
        off += m.sizes[i];
    }
    if (s.n_steps > 0) {
        std::vector<float> curve;
        for (int t = 0; t < s.n_steps; t++) {
            std::fill(m.grads.begin(), m.grads.end(), 0.0f);
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

static double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Mean loss over the first `batches` micro-batches of the validation windows, in file order (the same every time).
static double validation_loss(Model<float>* m, Acts<float>* a, DataLoader* val, int B, int batches) {
    std::vector<int> x((size_t)B * val->T), y((size_t)B * val->T);
    val->index = 0;
    val->epoch = 0;
    double sum = 0;
    for (int i = 0; i < batches; i++) {
        loader_next_batch(val, B, x.data(), y.data());
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

static std::string config_json(const ModelConfig& c, const TrainConfig& tc, const std::string& preset, size_t nparams) {
    char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"type\":\"config\",\"preset\":\"%s\",\"num_params\":%zu,\"max_seq_len\":%d,\"vocab\":%d,"
             "\"padded_vocab\":%d,\"layers\":%d,\"heads\":%d,\"channels\":%d,\"ffn_hidden\":%d,\"norm\":\"%s\","
             "\"placement\":\"%s\",\"ffn\":\"%s\",\"pos\":\"%s\",\"tied\":%d,\"bias\":%d,\"rope_base\":%.9g,"
             "\"norm_eps\":%.9g,\"attn\":\"%s\",\"mask\":\"%s\",\"train\":\"%s\",\"val\":\"%s\",\"batch\":%d,"
             "\"seq_len\":%d,\"total_batch\":%d,\"steps\":%d,\"lr\":%.9g,\"warmup\":%d,\"schedule\":\"%s\","
             "\"min_lr_frac\":%.9g,\"beta1\":%.9g,\"beta2\":%.9g,\"adam_eps\":%.9g,\"wd\":%.9g,\"wd_exempt\":%d,"
             "\"grad_clip\":%.9g,\"seed\":%llu,\"sink_every\":%d,\"probe_seqs\":%d,\"probe_len\":%d,\"eps\":%.9g,"
             "\"threads\":%d}",
             preset.c_str(), nparams, c.max_seq_len, c.vocab_size, c.padded_vocab_size, c.num_layers, c.num_heads,
             c.channels, c.ffn_hidden, norm_names[c.norm], placement_names[c.placement], ffn_names[c.ffn],
             pos_names[c.positions], c.tied, c.bias, c.rope_base, c.norm_eps, attn_variant_table[c.attn.variant].name,
             attn_mask_names[c.attn.mask], tc.train_glob.c_str(), tc.val_glob.c_str(), tc.batch_size, tc.seq_len,
             tc.total_batch_size, tc.steps, tc.lr, tc.warmup_steps, lr_schedule_names[tc.lr_schedule], tc.min_lr_frac,
             tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay, tc.wd_exempt, tc.grad_clip,
             (unsigned long long)tc.seed, tc.sink_every, tc.probe_seqs, tc.probe_len, tc.sink_eps,
             omp_get_max_threads());
    return buf;
}

static FILE* open_log(const std::string& dir) {
    std::string path = dir + "/log.jsonl";
    FILE* f = fopen(path.c_str(), "a");
    if (!f) fail("cannot open log '%s': %s", path.c_str(), strerror(errno));
    return f;
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
        model_build(&m, cl->model);
        model_init(&m, tc.seed);
    }
    const ModelConfig& c = m.config;
    if (tc.seq_len == 0) tc.seq_len = c.max_seq_len;
    int B = tc.batch_size, T = tc.seq_len;
    if (T > c.max_seq_len) fail("flag --seq-len: %d exceeds the model's max_seq_len %d", T, c.max_seq_len);
    if (tc.probe_len > c.max_seq_len)
        fail("flag --probe-len: %d exceeds the model's max_seq_len %d", tc.probe_len, c.max_seq_len);
    if (tc.total_batch_size == 0) tc.total_batch_size = B * T;
    if (tc.total_batch_size % (B * T) != 0)
        fail("flag --total-batch: %d is not a multiple of --batch x --seq-len = %d", tc.total_batch_size, B * T);
    int accum = tc.total_batch_size / (B * T);
    if (resume_step >= 0) pr = load_train_state(ckpt_path(tc.resume_dir, "state", resume_step), &m, tc);
    else pr.rng = tc.seed;

    DataLoader train_data, val_data;
    loader_init(&train_data, tc.train_glob, "--train", T, c.vocab_size, tc.seed, true);
    loader_init(&val_data, tc.val_glob, "--val", T, c.vocab_size, tc.seed, false);
    loader_seek(&train_data, pr.epoch, pr.index);
    std::string probe_path = tc.probe_path.empty() ? expand_glob(tc.val_glob, "--val")[0] : tc.probe_path;
    std::vector<int> probe = read_probe(probe_path, tc.probe_seqs, tc.probe_len, c.vocab_size);

    mkdir_p(out_dir);
    FILE* logf = open_log(out_dir);
    log_line(logf, config_json(c, tc, resume_step >= 0 ? "resume" : cl->preset, m.num_params));
    printf("sinkscope CPU trainer | %zu parameters | L %d C %d NH %d F %d | %s %s %s %s | B %d T %d accum %d | "
           "%d threads\n", m.num_params, c.num_layers, c.channels, c.num_heads, c.ffn_hidden, norm_names[c.norm],
           placement_names[c.placement], ffn_names[c.ffn], pos_names[c.positions], B, T, accum, omp_get_max_threads());
    printf("train: %zu windows of %d tokens | val: %zu windows | probe: %d x %d from %s | log: %s/log.jsonl\n",
           train_data.num_windows, T, val_data.num_windows, tc.probe_seqs, tc.probe_len, probe_path.c_str(),
           out_dir.c_str());

    Acts<float> acts, probe_acts;
    std::vector<int> x((size_t)B * T), y((size_t)B * T);
    double train_ms = 0, sink_ms = 0;
    for (int step = pr.step;; step++) {
        bool last = step == tc.steps;
        char buf[256];
        if (step > pr.step || resume_step < 0) {  // a resumed run does not re-measure its saved step
            if ((tc.val_every && step % tc.val_every == 0) || last) {
                double vl = validation_loss(&m, &acts, &val_data, B, std::min<size_t>(tc.val_batches, std::max<size_t>(1, val_data.num_windows / B)));
                snprintf(buf, sizeof buf, "{\"type\":\"val\",\"step\":%d,\"val_loss\":%.9g}", step, vl);
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
                printf("step %6d | Sink_1 %.2f%% | alpha_1 %.4f | norm ratio (last layer) %.2f | entropy %.3f | %.0f ms\n",
                       step, r.sink[0], r.alpha1_mean, r.norm_ratio.back(), r.entropy_mean, dt);
            }
            if (tc.save_every && step % tc.save_every == 0 && step > pr.step && !last)
                save_checkpoint(out_dir, &m, tc, TrainProgress{step, train_data.epoch, train_data.index, pr.rng});
        }
        if (last) break;
        double t0 = now_ms();
        std::fill(m.grads.begin(), m.grads.end(), 0.0f);
        double loss = 0;
        for (int micro = 0; micro < accum; micro++) {
            loader_next_batch(&train_data, B, x.data(), y.data());
            loss += model_forward(&m, &acts, x.data(), y.data(), B, T) / accum;
            model_backward(&m, &acts, 1.0f / accum);
        }
        double gn = grad_norm(m);
        float lr = lr_at(tc, step);
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
    save_checkpoint(out_dir, &m, tc, TrainProgress{tc.steps, train_data.epoch, train_data.index, pr.rng});
    char buf[256];
    snprintf(buf, sizeof buf, "{\"type\":\"done\",\"step\":%d,\"train_ms\":%.1f,\"sink_ms\":%.1f,\"sink_overhead\":%.5f}",
             tc.steps, train_ms, sink_ms, train_ms > 0 ? sink_ms / train_ms : 0.0);
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
    if (tc.probe_len > m.config.max_seq_len)
        fail("flag --probe-len: %d exceeds the model's max_seq_len %d", tc.probe_len, m.config.max_seq_len);
    std::vector<int> probe = read_probe(tc.probe_path, tc.probe_seqs, tc.probe_len, m.config.vocab_size);
    Acts<float> a;
    SinkReport r = measure_sinks(&m, &a, probe, tc.probe_seqs, tc.probe_len, tc.sink_eps);
    printf("{\"checkpoint\":\"%s\",\"probe\":\"%s\",%s}\n", tc.load_path.c_str(), tc.probe_path.c_str(),
           sink_report_json_fields(r).c_str());
    return 0;
}

#ifndef TESTING
int main(int argc, char** argv) {
    CommandLine cl;
    parse_command_line(argc, argv, &cl);
    if (cl.train.threads > 0) omp_set_num_threads(cl.train.threads);
    if (!cl.train.check_state_path.empty() || cl.train.eval_sink) {
        if (cl.train.load_path.empty()) fail("--check-state and --eval-sink need --load CKPT");
        if (cl.model_flag_seen) fail("--load reads the architecture from the checkpoint; drop the model flags");
        if (!cl.train.check_state_path.empty()) {
            CheckResult r = check_state(cl.train.load_path, cl.train.check_state_path, true);
            printf("%s: %d tensor(s) beyond tolerance (worst error %.3g of its allowance)\n",
                   r.failures ? "FAIL" : "OK", r.failures, r.worst);
            return r.failures ? 1 : 0;
        }
        return eval_sink(&cl);
    }
    return train(&cl);
}
#endif
