// attention_variants.cuh: the catalogue of attention variants. Each variant is defined once, here, and used by the
// CPU reference (train_gpt_cpu.cpp), the GPU kernels and the tests.
//
// What it is: for every variant, the row map from scores to attention weights (forward), the derivative the backward
// pass uses, and what the sink metric reads; plus the masks (which keys a query sees). Plain C++ usable from host code;
// the functions are __host__ __device__ under nvcc.
// What it is not: the attention layer itself (that is in the trainers: scores, the weighted sum of values, RoPE and
// ALiBi live there); nothing here allocates or knows about batches and heads.
//
// The contract every variant follows. For one query row with n visible keys:
//   forward:  p[0..n) = map(s[0..n))          s = tau * q.k (+ ALiBi), tau = 1/sqrt(hs)
//   backward: ds[0..n) = g(s, p, dp)           dp_j = dO . v_j is computed by the caller
// Reductions inside a row run over j = 0..n-1 in increasing order (fixed order: the GPU exact mode relies on it).
//
// Adding a variant: one enum value, one row in attn_variant_table, one case in each switch below, and its tests.
#pragma once
#include "numerics.h"

enum AttnVariant {
    // softmax: p_j = exp(s_j - m) / sum_j' exp(s_j' - m), m = max_j s_j.
    //   backward: ds_j = p_j (dp_j - D), D = sum_j p_j dp_j (= dO . O).
    //   metric: p is a probability distribution; Sink_k reads p directly.
    ATTN_SOFTMAX = 0,
    ATTN_NUM_VARIANTS
};

enum AttnMask {
    // causal: query t sees keys 0..t.
    MASK_CAUSAL = 0,
    MASK_NUM_KINDS
};

struct AttnVariantInfo {
    const char* name;   // the value of --attn
    int is_probability; // 1: rows are distributions and the metric reads them; 0: the metric reads proxy scores
};

static const AttnVariantInfo attn_variant_table[ATTN_NUM_VARIANTS] = {
    {"softmax", 1},
};

static const char* const attn_mask_names[MASK_NUM_KINDS] = {"causal"};

struct AttnSpec {
    int variant = ATTN_SOFTMAX;
    int mask = MASK_CAUSAL;
};

// The keys query t (0-based) may see: [*lo, *hi).
SK_HD inline void attn_visible_keys(const AttnSpec& spec, int t, int* lo, int* hi) {
    switch (spec.mask) {
    default: // MASK_CAUSAL
        *lo = 0;
        *hi = t + 1;
    }
}

template <typename F>
SK_HD inline void attn_row_forward(const AttnSpec& spec, const F* s, F* p, int n) {
    switch (spec.variant) {
    default: { // ATTN_SOFTMAX
        F m = s[0];
        for (int j = 1; j < n; j++) m = s[j] > m ? s[j] : m;
        F sum = 0;
        for (int j = 0; j < n; j++) {
            p[j] = sk_exp(s[j] - m);
            sum += p[j];
        }
        for (int j = 0; j < n; j++) p[j] = p[j] / sum;
    }
    }
}

template <typename F>
SK_HD inline void attn_row_backward(const AttnSpec& spec, const F* s, const F* p, const F* dp, F* ds, int n) {
    (void)s;
    switch (spec.variant) {
    default: { // ATTN_SOFTMAX: ds_j = p_j (dp_j - D)
        F D = 0;
        for (int j = 0; j < n; j++) D = sk_fma(p[j], dp[j], D);
        for (int j = 0; j < n; j++) ds[j] = p[j] * (dp[j] - D);
    }
    }
}
