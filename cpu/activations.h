// cpu/activations.h: the swish family of FFN activations (swish, SwiGLU) with their exps taken sixteen at a time.
//
//   forward:  act = x / (1 + e^-x)                       out = act(h1) (* h2 when gated)
//   backward: sig = 1 / (1 + e^-x), act' = sig (1 + x (1 - sig))
//             dh1 += dout (* h2) act'(h1),  dh2 += dout act(h1)
// CPU twins of ffn_act_forward / ffn_act_backward (train_gpt_cpu.cpp) for FFN_SWISH and FFN_SWIGLU, which the tests
// hold them to bit for bit. The formulas are those of act_forward / act_grad, statement for statement; only e^-x is
// computed a block at a time (sk_exp_n, common/numerics.h, equal to sk_exp bit for bit) and reused where the
// reference computes it twice.
#pragma once
#include <stddef.h>

#include "../common/backend.h"
#include "../common/numerics.h"

namespace cpu_act {
constexpr size_t BLOCK = 512;  // elements per loop index: e^-x of a block sits on the stack
}

static inline void swish_forward_blocked(float* out, const float* h1, const float* h2, size_t N) {
    using cpu_act::BLOCK;
    sk_for((N + BLOCK - 1) / BLOCK, [=](size_t blk) {
        size_t i0 = blk * BLOCK, n = N - i0 < BLOCK ? N - i0 : BLOCK;
        float e[BLOCK] = {};  // (initialised only to quiet a false -Wmaybe-uninitialized on the masked tail)
        for (size_t k = 0; k < n; k++) e[k] = -h1[i0 + k];
        sk_exp_n(e, e, (int)n);
        for (size_t k = 0; k < n; k++) {
            float x = h1[i0 + k], act = x / (1.0f + e[k]);
            out[i0 + k] = h2 ? act * h2[i0 + k] : act;
        }
    });
}

static inline void swish_backward_blocked(float* dh1, float* dh2, const float* dout, const float* h1, const float* h2,
                                          size_t N) {
    using cpu_act::BLOCK;
    sk_for((N + BLOCK - 1) / BLOCK, [=](size_t blk) {
        size_t i0 = blk * BLOCK, n = N - i0 < BLOCK ? N - i0 : BLOCK;
        float e[BLOCK] = {};  // (initialised only to quiet a false -Wmaybe-uninitialized on the masked tail)
        for (size_t k = 0; k < n; k++) e[k] = -h1[i0 + k];
        sk_exp_n(e, e, (int)n);
        for (size_t k = 0; k < n; k++) {
            size_t i = i0 + k;
            float x = h1[i], g = h2 ? dout[i] * h2[i] : dout[i];
            float sig = 1.0f / (1.0f + e[k]);
            dh1[i] += g * (sig * (1.0f + x * (1.0f - sig)));
            if (h2) dh2[i] += dout[i] * (x / (1.0f + e[k]));
        }
    });
}
