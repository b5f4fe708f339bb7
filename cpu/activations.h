// cpu/activations.h: the FFN activations with a transcendental (swish, SwiGLU; tanh-GELU, GEGLU), their exps and
// tanhs taken sixteen at a time.
//
//   swish forward:  act = x / (1 + e^-x)                 out = act(h1) (* h2 when gated)
//   swish backward: sig = 1 / (1 + e^-x), act' = sig (1 + x (1 - sig))
//   GELU forward:   th = tanh(s (x + 0.044715 x^3)), s = sqrt(2/pi), act = x (1 + th) / 2
//   GELU backward:  act' = (1 + th) / 2 + x (1 - th^2) s (1 + 3 * 0.044715 x^2) / 2
//   both:           dh1 += dout (* h2) act'(h1),  dh2 += dout act(h1)
// CPU twins of ffn_act_forward / ffn_act_backward (train_gpt_cpu.cpp), which the tests hold them to bit for bit. The
// formulas are those of act_forward / act_grad, statement for statement; only e^-x or tanh is computed a block at a
// time (sk_exp_n / sk_tanh_n, common/numerics.h, equal to sk_exp / sk_tanh bit for bit) and reused where the
// reference computes it twice. The elementwise loops around them are plain float arithmetic, which the compiler
// vectorises without reordering anything (-ffp-contract=off: no fused a*b+c).
#pragma once
#include <stddef.h>

#include "../common/backend.h"
#include "../common/numerics.h"

namespace cpu_act {
constexpr size_t BLOCK = 512;  // elements per loop index: a block's transcendentals sit on the stack

// For each block of at most BLOCK elements starting at i0: t[k] = arg(h1[i0 + k]), then the transcendental of the
// whole block at once (many(t, t, n): sk_exp_n or sk_tanh_n), then body(i0, n, t) with the block's values.
template <typename Arg, typename Many, typename Body>
static inline void for_blocks(const float* h1, size_t N, Arg arg, Many many, Body body) {
    sk_for((N + BLOCK - 1) / BLOCK, [=](size_t blk) {
        size_t i0 = blk * BLOCK, n = N - i0 < BLOCK ? N - i0 : BLOCK;
        float t[BLOCK] = {};  // (initialised only to quiet a false -Wmaybe-uninitialized on the masked tail)
        for (size_t k = 0; k < n; k++) t[k] = arg(h1[i0 + k]);
        many(t, t, (int)n);
        body(i0, n, (const float*)t);
    });
}
static inline void exp_many(float* x, float* y, int n) { sk_exp_n(x, y, n); }
static inline void tanh_many(float* x, float* y, int n) { sk_tanh_n(x, y, n); }
static inline float negate(float x) { return -x; }

// the argument of GELU's tanh, written as act_forward writes it (F(c): the double constant rounded to float)
static inline float gelu_tanh_arg(float x) {
    const float s = float(0.7978845608028654);
    return s * (x + float(0.044715) * x * x * x);
}
}  // namespace cpu_act

static inline void swish_forward_blocked(float* out, const float* h1, const float* h2, size_t N) {
    using namespace cpu_act;
    for_blocks(h1, N, negate, exp_many, [=](size_t i0, size_t n, const float* e) {  // e = e^-x
        for (size_t k = 0; k < n; k++) {
            float x = h1[i0 + k], act = x / (1.0f + e[k]);
            out[i0 + k] = h2 ? act * h2[i0 + k] : act;
        }
    });
}

static inline void swish_backward_blocked(float* dh1, float* dh2, const float* dout, const float* h1, const float* h2,
                                          size_t N) {
    using namespace cpu_act;
    for_blocks(h1, N, negate, exp_many, [=](size_t i0, size_t n, const float* e) {
        for (size_t k = 0; k < n; k++) {
            size_t i = i0 + k;
            float x = h1[i], g = h2 ? dout[i] * h2[i] : dout[i];
            float sig = 1.0f / (1.0f + e[k]);
            dh1[i] += g * (sig * (1.0f + x * (1.0f - sig)));
            if (h2) dh2[i] += dout[i] * (x / (1.0f + e[k]));
        }
    });
}

static inline void gelu_forward_blocked(float* out, const float* h1, const float* h2, size_t N) {
    using namespace cpu_act;
    for_blocks(h1, N, gelu_tanh_arg, tanh_many, [=](size_t i0, size_t n, const float* th) {
        for (size_t k = 0; k < n; k++) {
            float x = h1[i0 + k], act = 0.5f * x * (1.0f + th[k]);
            out[i0 + k] = h2 ? act * h2[i0 + k] : act;
        }
    });
}

static inline void gelu_backward_blocked(float* dh1, float* dh2, const float* dout, const float* h1, const float* h2,
                                         size_t N) {
    using namespace cpu_act;
    const float s = float(0.7978845608028654);
    for_blocks(h1, N, gelu_tanh_arg, tanh_many, [=](size_t i0, size_t n, const float* th) {
        for (size_t k = 0; k < n; k++) {
            size_t i = i0 + k;
            float x = h1[i], t = th[k], g = h2 ? dout[i] * h2[i] : dout[i];
            float grad = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * s * (1.0f + float(3 * 0.044715) * x * x);
            dh1[i] += g * grad;
            if (h2) dh2[i] += dout[i] * (0.5f * x * (1.0f + t));
        }
    });
}
