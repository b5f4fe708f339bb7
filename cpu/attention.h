// cpu/attention.h: plain causal softmax attention for the CPU, a head at a time, with the sums in registers.
//
//   forward:  s_j = tau q_t . k_j (j <= t),  p = softmax(s),  y_t = sum_j p_j v_j
//   backward: dp_j = dy_t . v_j;  ds_j = p_j (dp_j - sum_i p_i dp_i);  dq_t += tau sum_j ds_j k_j;
//             dk_j += tau sum_t ds_tj q_t;  dv_j += sum_t p_tj dy_t
// CPU twins of attention_forward_causal / attention_backward_causal (train_gpt_cpu.cpp), which the tests hold them to
// bit for bit. Every element is still one chain of fma in the reference's order (d in order for a dot product, j or t
// in order for a weighted sum); what changes is which chains run side by side. The dot products of one query with
// LANES keys run as LANES lanes over a transposed copy of the head's keys (values, for dp), and the weighted sums of
// a block of R rows (keys, in the keys pass) run as R independent chains, so the vector units are busy instead of
// waiting on one chain at a time.
#pragma once
#include <stddef.h>
#include <algorithm>

#include "../common/backend.h"
#include "../common/numerics.h"

namespace cpu_attn {
constexpr int LANES = 16;  // keys per vector of dot products
constexpr int R = 8;       // rows (or keys) whose sums run side by side

// The row length of a transposed head: T rounded up to whole vectors of lanes (the padding is zero, never stored).
static inline int padded(int T) { return (T + LANES - 1) / LANES * LANES; }

// xT[d * ld + j] = x[j * stride + d] for the T vectors of one head; the padding columns zero
static inline void transpose_head(float* xT, int ld, const float* x, int T, int hs, size_t stride) {
    for (int d = 0; d < hs; d++) {
        float* row = xT + (size_t)d * ld;
        for (int j = 0; j < T; j++) row[j] = x[(size_t)j * stride + d];
        for (int j = T; j < ld; j++) row[j] = 0;
    }
}

// out[j] = sum_d a[d] * xT[d][j] (d in order, fma from 0) for j < n: n dot products, LANES at a time
template <int HS>
static inline void dots(float* out, const float* a, const float* xT, int ld, int hs_runtime, int n) {
    const int hs = HS ? HS : hs_runtime;
    for (int j0 = 0; j0 < n; j0 += LANES) {
        float acc[LANES] = {};
        for (int d = 0; d < hs; d++) {
            const float* x = xT + (size_t)d * ld + j0;
            for (int l = 0; l < LANES; l++) acc[l] = sk_fma(a[d], x[l], acc[l]);
        }
        int w = std::min(LANES, n - j0);
        for (int l = 0; l < w; l++) out[j0 + l] = acc[l];
    }
}
}  // namespace cpu_attn

// Floats of per-thread scratch for one head: a transposed head, R rows of weights, R rows of head-size sums.
static inline size_t causal_attention_scratch(int T, int hs) {
    using namespace cpu_attn;
    return (size_t)hs * padded(T) + (size_t)R * (T + 1) + 2 * (size_t)R * hs;
}

// HS > 0: the head size as a compile-time constant (the loops over d unroll into whole vectors); 0: C / NH at run time
template <int HS>
static inline void attention_forward_causal_heads(float* out, float* att, const float* qkv, int B, int T, int C,
                                                  int NH) {
    using namespace cpu_attn;
    const int hs = HS ? HS : C / NH, ld = padded(T);
    float tau = 1.0f / sk_sqrt((float)hs);
    sk_for_scratch((size_t)B * NH, causal_attention_scratch(T, hs), (float*)nullptr, [=](size_t bh, float* work) {
        size_t b = bh / NH, h = bh % NH, row = 3 * (size_t)C;
        const float* q0 = qkv + b * T * row + h * hs;
        float *kT = work, *p = kT + (size_t)hs * ld, *y = p + (size_t)R * (T + 1);
        transpose_head(kT, ld, q0 + C, T, hs, row);
        for (int t0 = 0; t0 < T; t0 += R) {
            int rows = std::min(R, T - t0);
            for (int r = 0; r < rows; r++) {
                int t = t0 + r;
                float* pr = p + (size_t)r * (T + 1);
                dots<HS>(pr, q0 + (size_t)t * row, kT, ld, hs, t + 1);
                for (int j = 0; j <= t; j++) pr[j] = pr[j] * tau;
                sk_softmax_row(pr, pr, t + 1, 1.0f);
                float* arow = att + (bh * T + t) * T;
                for (int j = 0; j <= t; j++) arow[j] = pr[j];
                for (int j = t + 1; j < T; j++) arow[j] = 0;
            }
            // y_t = sum_j p_tj v_j for the block's rows side by side, each row's j in order
            std::fill(y, y + (size_t)rows * hs, 0.0f);
            for (int j = 0; j < t0 + rows; j++) {
                const float* v = q0 + (size_t)j * row + 2 * C;
                for (int r = std::max(0, j - t0); r < rows; r++) {
                    float pj = p[(size_t)r * (T + 1) + j], *yr = y + (size_t)r * hs;
                    for (int d = 0; d < hs; d++) yr[d] = sk_fma(pj, v[d], yr[d]);
                }
            }
            for (int r = 0; r < rows; r++)
                std::copy(y + (size_t)r * hs, y + (size_t)(r + 1) * hs, out + (b * T + t0 + r) * C + h * hs);
        }
    });
}

template <int HS>
static inline void attention_backward_causal_heads(float* dqkv, float* ds_rows, const float* dout, const float* qkv,
                                                   const float* att, int B, int T, int C, int NH) {
    using namespace cpu_attn;
    const int hs = HS ? HS : C / NH, ld = padded(T);
    float tau = 1.0f / sk_sqrt((float)hs);
    sk_for_scratch((size_t)B * NH, causal_attention_scratch(T, hs), (float*)nullptr, [=](size_t bh, float* work) {
        size_t b = bh / NH, h = bh % NH, row = 3 * (size_t)C, head = bh * T;  // head: row (b, h, 0)
        const float* q0 = qkv + b * T * row + h * hs;
        const float* dy0 = dout + b * T * C + h * hs;
        float* dq0 = dqkv + b * T * row + h * hs;
        float *vT = work, *acc = work + (size_t)hs * ld + (size_t)R * (T + 1), *acc2 = acc + (size_t)R * hs;
        transpose_head(vT, ld, q0 + 2 * C, T, hs, row);
        // rows: ds of each row into ds_rows, then dq for a block of rows side by side
        for (int t0 = 0; t0 < T; t0 += R) {
            int rows = std::min(R, T - t0);
            for (int r = 0; r < rows; r++) {
                int t = t0 + r;
                const float* p = att + (head + t) * T;
                float* ds = ds_rows + (head + t) * (T + 1);
                dots<HS>(ds, dy0 + (size_t)t * C, vT, ld, hs, t + 1);  // dp_j, in ds until replaced
                float D = 0;
                for (int j = 0; j <= t; j++) D = sk_fma(p[j], ds[j], D);
                for (int j = 0; j <= t; j++) ds[j] = p[j] * (ds[j] - D);
            }
            for (int r = 0; r < rows; r++) std::copy(dq0 + (size_t)(t0 + r) * row, dq0 + (size_t)(t0 + r) * row + hs,
                                                     acc + (size_t)r * hs);
            for (int j = 0; j < t0 + rows; j++) {
                const float* k = q0 + (size_t)j * row + C;
                for (int r = std::max(0, j - t0); r < rows; r++) {
                    float g = ds_rows[(head + t0 + r) * (T + 1) + j] * tau, *a = acc + (size_t)r * hs;
                    for (int d = 0; d < hs; d++) a[d] = sk_fma(g, k[d], a[d]);
                }
            }
            for (int r = 0; r < rows; r++)
                std::copy(acc + (size_t)r * hs, acc + (size_t)(r + 1) * hs, dq0 + (size_t)(t0 + r) * row);
        }
        // keys: dk and dv of a block of keys side by side, each over t in order
        for (int j0 = 0; j0 < T; j0 += R) {
            int keys = std::min(R, T - j0);
            for (int r = 0; r < keys; r++) {
                const float* dk = dq0 + (size_t)(j0 + r) * row + C;
                std::copy(dk, dk + hs, acc + (size_t)r * hs);
                std::copy(dq0 + (size_t)(j0 + r) * row + 2 * C, dq0 + (size_t)(j0 + r) * row + 2 * C + hs,
                          acc2 + (size_t)r * hs);
            }
            for (int t = j0; t < T; t++) {
                const float* q = q0 + (size_t)t * row;
                const float* dy = dy0 + (size_t)t * C;
                int last = std::min(keys, t - j0 + 1);  // keys j0 + r with j <= t
                for (int r = 0; r < last; r++) {
                    int j = j0 + r;
                    float g = ds_rows[(head + t) * (T + 1) + j] * tau, pj = att[(head + t) * T + j];
                    float *dk = acc + (size_t)r * hs, *dv = acc2 + (size_t)r * hs;
                    for (int d = 0; d < hs; d++) {
                        dk[d] = sk_fma(g, q[d], dk[d]);
                        dv[d] = sk_fma(pj, dy[d], dv[d]);
                    }
                }
            }
            for (int r = 0; r < keys; r++) {
                std::copy(acc + (size_t)r * hs, acc + (size_t)(r + 1) * hs, dq0 + (size_t)(j0 + r) * row + C);
                std::copy(acc2 + (size_t)r * hs, acc2 + (size_t)(r + 1) * hs, dq0 + (size_t)(j0 + r) * row + 2 * C);
            }
        }
    });
}


// The entry points: the common head sizes get their own compiled copy (the same operations, in the same order).
static inline void attention_forward_causal_blocked(float* out, float* att, const float* qkv, int B, int T, int C,
                                                    int NH) {
    switch (C / NH) {
    case 8: return attention_forward_causal_heads<8>(out, att, qkv, B, T, C, NH);
    case 16: return attention_forward_causal_heads<16>(out, att, qkv, B, T, C, NH);
    case 32: return attention_forward_causal_heads<32>(out, att, qkv, B, T, C, NH);
    case 64: return attention_forward_causal_heads<64>(out, att, qkv, B, T, C, NH);
    default: return attention_forward_causal_heads<0>(out, att, qkv, B, T, C, NH);
    }
}

static inline void attention_backward_causal_blocked(float* dqkv, float* ds_rows, const float* dout, const float* qkv,
                                                     const float* att, int B, int T, int C, int NH) {
    switch (C / NH) {
    case 8: return attention_backward_causal_heads<8>(dqkv, ds_rows, dout, qkv, att, B, T, C, NH);
    case 16: return attention_backward_causal_heads<16>(dqkv, ds_rows, dout, qkv, att, B, T, C, NH);
    case 32: return attention_backward_causal_heads<32>(dqkv, ds_rows, dout, qkv, att, B, T, C, NH);
    case 64: return attention_backward_causal_heads<64>(dqkv, ds_rows, dout, qkv, att, B, T, C, NH);
    default: return attention_backward_causal_heads<0>(dqkv, ds_rows, dout, qkv, att, B, T, C, NH);
    }
}
