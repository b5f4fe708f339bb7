// attention_variants.cuh: the catalogue of attention variants. Each variant is defined once, here, and used by the
// CPU reference (train_gpt_cpu.cpp), the GPU kernels and the tests. The user-facing table, with the papers each
// variant comes from, is docs/variants.md.
//
// What it is: for every row map, its forward formula and the derivative the backward pass uses (one case in
// attn_row_forward / attn_row_backward and in the streaming forms), its traits (attn_variant_table: whether it takes
// the normaliser, whether its backward needs the scores) and what the sink metric reads (attn_is_probability); the
// normalisers, feature maps, slots, gates and masks as small enums with their visible-key rule; ALiBi's score bias.
// Plain C++ usable from host code; the functions are __host__ __device__ under nvcc.
// What it is not: the attention layer (scores, values, RoPE, slot parameters, the gate and feature-map layers live in
// the trainers); nothing here allocates or knows about batches and heads.
//
// The contract of a row map. One query row has n entries: the optional slot score first, then the visible keys.
//   forward:  p[0..n) = map(s[0..n))                 s = tau * phi(q).phi(k) (+ ALiBi); the slot's s_* as defined below
//   backward: ds[0..n) = derivative(s, p, dp)         dp_j = dO . v_j is computed by the caller
// Reductions inside a row run over j = 0..n-1 in increasing order (fixed order: the GPU exact mode relies on it).
// Backward receives the recomputed scores s for maps that need them (attn_variant_table[].needs_scores).
//
// Streaming forms (the end of this file): the same maps key tile by key tile, from a two-number row state, for kernels
// that never hold a whole row; equal to the row forms up to rounding.
//
// Adding a variant: one enum value, its name in attn_variant_names, one row in attn_variant_table, one case in each
// switch on the variant (attn_is_probability, attn_pointwise for a pointwise map, the row forms' two, the streaming
// forms' three), its tests.
#pragma once
#include "common/numerics.h"

enum AttnVariant {
    // softmax: p_j = A e^{s_j - m} / sum_j' e^{s_j' - m}, m = max_j s_j, A = row mass (1 = the standard softmax;
    //   paper Table 14 trains rows that sum to A).   backward: ds_j = p_j (dp_j - D / A), D = sum_j p_j dp_j.
    //   metric: reads p when A = 1, else the proxy.
    ATTN_SOFTMAX = 0,
    // sigmoid (paper Table 6; with a bias b = -log n: Ramapuram et al., Apple 2024, arXiv 2409.04431):
    //   a_j = sigmoid(s_j + b), then the normaliser.   backward: ds_j = da_j a_j (1 - a_j).
    ATTN_SIGMOID,
    // elu+1 on the logit (paper Table 6): a_j = elu(s_j) + 1 = (s_j > 0 ? s_j + 1 : e^{s_j}), then the normaliser.
    //   backward: ds_j = da_j (s_j > 0 ? 1 : a_j).
    ATTN_ELU1,
    // linear: a_j = s_j, then the normaliser. With a feature map phi this is the paper's kernel attention
    //   phi(q).phi(k)/sqrt(d) (identity, elu+1 or MLP kernel).   backward: ds_j = da_j.
    ATTN_LINEAR,
    // softpick (Zuhri et al. 2025, arXiv 2504.20966): p_j = relu(e^{s_j} - 1) / (sum_j |e^{s_j} - 1| + eps), over the
    //   visible keys only, computed with the shift m = max(0, max_j s_j) (numerator and denominator times e^{-m}).
    //   backward: ds_j = (e^{s_j} / Z) (1[s_j > 0] dp_j - sign(s_j) D), D = sum_j p_j dp_j.   metric: proxy.
    ATTN_SOFTPICK,
    // clipped softmax (Bondarenko et al. 2023, arXiv 2306.12929): p_j = clip((zeta - gamma) softmax_j + gamma, 0, 1),
    //   gamma = -alpha / T.   backward: through the clip where 0 < value < 1, then the softmax.   metric: proxy.
    ATTN_CLIPPED,
    ATTN_NUM_VARIANTS
};

// Normaliser of sigmoid, elu1 and linear (r = sum_j a_j):
//   none:  p = a                       da = dp                          (metric: proxy, row mass logged)
//   sum:   p = a / (r + 1e-8)          da_j = (dp_j - D) / Z            (a distribution when a >= 0)
//   clamp: p = a / max(|r|, 1)         da_j = (dp_j - c D) / Z, c = sign(r) [|r| > 1]    (metric: proxy)
enum AttnNormaliser { ANORM_NONE = 0, ANORM_SUM, ANORM_CLAMP, ANORM_NUM_KINDS };

// Feature map on q and k after RoPE: none; elu1 = elu(x) + 1 elementwise; mlp = W2 relu(W1 x) (hs x hs, one pair per
// layer shared by q, k and all heads; paper Table 6).
enum AttnPhi { PHI_NONE = 0, PHI_ELU1, PHI_MLP, PHI_NUM_KINDS };

// The slot: an extra entry in front of every row.
//   kv:    score tau * q_t . k*_h (k* not rotated, no feature map), value v*_h (learned, zero or fixed)  (paper Table 5)
//   logit: score sigma_h, a learned scalar per head, no value (gpt-oss 2025): dsigma_h = sum_rows ds_*
//   zero:  score 0, no value: softmax_1, "off-by-one" (Miller 2023, "Attention is off by one")
// metric: Sink_* and alpha_* read the slot column of a (T+1) x (T+1) matrix whose index 0 is the slot.
enum AttnSlot { SLOT_NONE = 0, SLOT_KV, SLOT_LOGIT, SLOT_ZERO, SLOT_NUM_KINDS };
enum VStarMode { VSTAR_LEARN = 0, VSTAR_ZERO, VSTAR_FIXED, VSTAR_NUM_KINDS };

// Gated attention at position G1 (Qiu et al., Qwen 2025, arXiv 2505.06708): y = sdpa * sigmoid(x W_g^T), x = the normed
// block input; W_g is (C, C) elementwise or (NH, C) headwise.
enum AttnGate { GATE_NONE = 0, GATE_ELEMENTWISE, GATE_HEADWISE, GATE_NUM_KINDS };

enum AttnMask {
    MASK_CAUSAL = 0,  // query t sees keys [0, t]
    MASK_PREFIX,      // prefix LM, p = mask_param: t < p sees [0, p); t >= p sees [0, t]; loss only at t >= p - 1
    MASK_WINDOW,      // sliding window, w = mask_param: t sees [max(0, t - w + 1), t]
    MASK_NUM_KINDS
};

struct AttnVariantInfo {
    int uses_normaliser;  // takes --attn-norm
    int needs_scores;     // backward needs the scores s, not only p (the caller recomputes them)
};

static const AttnVariantInfo attn_variant_table[ATTN_NUM_VARIANTS] = {
    {0, 0},
    {1, 1},
    {1, 1},
    {1, 1},
    {0, 1},
    {0, 1},
};

// the values of --attn, by AttnVariant
static const char* const attn_variant_names[ATTN_NUM_VARIANTS] = {"softmax", "sigmoid", "elu1", "linear", "softpick", "clipped"};
static const char* const attn_normaliser_names[ANORM_NUM_KINDS] = {"none", "sum", "clamp"};
static const char* const attn_phi_names[PHI_NUM_KINDS] = {"none", "elu1", "mlp"};
static const char* const attn_slot_names[SLOT_NUM_KINDS] = {"none", "kv", "logit", "zero"};
static const char* const vstar_names[VSTAR_NUM_KINDS] = {"learn", "zero", "fixed"};
static const char* const attn_gate_names[GATE_NUM_KINDS] = {"none", "elementwise", "headwise"};
static const char* const attn_mask_names[MASK_NUM_KINDS] = {"causal", "prefix", "window"};

#define ATTN_NORM_EPS 1e-8f
#define SOFTPICK_EPS 1e-6f

struct AttnSpec {
    int variant = ATTN_SOFTMAX;
    int normaliser = ANORM_NONE;  // of sigmoid, elu1, linear (--attn-norm)
    int phi = PHI_NONE;
    int slot = SLOT_NONE;
    int vstar = VSTAR_LEARN;
    float vstar_value = 0.0f;
    int value_bias = 0;
    int slot_shared = 0;
    int sink_token = 0;
    int gate = GATE_NONE;
    int mask = MASK_CAUSAL;
    int mask_param = 0;
    float row_mass = 1.0f;
    float sigmoid_bias = 0.0f;
    float clip_zeta = 1.0f, clip_alpha = 4.0f;
    int clip_len = 0;  // T of gamma = -alpha / T: the training length, fixed when a run starts (0 = each forward's T)
};

// Does the row map produce a probability distribution over the row? If not, the sink metric reads proxy scores.
static inline bool attn_is_probability(const AttnSpec& a) {
    switch (a.variant) {
    case ATTN_SOFTMAX: return a.row_mass == 1.0f;
    case ATTN_SIGMOID: case ATTN_ELU1: return a.normaliser == ANORM_SUM;
    case ATTN_LINEAR: return a.normaliser == ANORM_SUM && a.phi == PHI_ELU1;
    default: return false;
    }
}

SK_HD inline bool attn_has_slot(const AttnSpec& a) { return a.slot != SLOT_NONE; }

// ALiBi's score of query t against key j: the scaled dot product s less the head's slope times their distance. One
// definition for the row form (the trainers' attention_key_score) and the flash kernels (flash_score).
template <typename F>
SK_HD inline F attn_alibi_score(F s, F slope, int t, int j) {
    return s - slope * F(t > j ? t - j : j - t);
}

// The keys query t (0-based) may see among T: [*lo, *hi).
SK_HD inline void attn_visible_keys(const AttnSpec& spec, int t, int T, int* lo, int* hi) {
    switch (spec.mask) {
    case MASK_PREFIX:
        *lo = 0;
        *hi = t < spec.mask_param ? (spec.mask_param < T ? spec.mask_param : T) : t + 1;
        break;
    case MASK_WINDOW:
        *lo = t - spec.mask_param + 1 > 0 ? t - spec.mask_param + 1 : 0;
        *hi = t + 1;
        break;
    default:  // MASK_CAUSAL
        *lo = 0;
        *hi = t + 1;
    }
}

// The queries that see key j among T: [*lo, *hi), the transpose of attn_visible_keys (always one interval).
SK_HD inline void attn_visible_queries(const AttnSpec& spec, int j, int T, int* lo, int* hi) {
    switch (spec.mask) {
    case MASK_PREFIX:  // a prefix key is seen by every query; a later one by the queries from itself on
        *lo = j < spec.mask_param ? 0 : j;
        *hi = T;
        break;
    case MASK_WINDOW:
        *lo = j;
        *hi = j + spec.mask_param < T ? j + spec.mask_param : T;
        break;
    default:  // MASK_CAUSAL
        *lo = j;
        *hi = T;
    }
}

// Does position t's prediction count in the loss? (The prefix LM trains only on what follows the prefix.)
SK_HD inline bool attn_position_has_loss(const AttnSpec& spec, int t) {
    return spec.mask != MASK_PREFIX || t >= spec.mask_param - 1;
}

template <typename F>
SK_HD inline F attn_sigmoid(F x) { return F(1) / (F(1) + sk_exp(-x)); }

// The elementwise map a = g(s) of sigmoid, elu1, linear.
template <typename F>
SK_HD inline F attn_pointwise(const AttnSpec& spec, F s) {
    switch (spec.variant) {
    case ATTN_SIGMOID: return attn_sigmoid(s + F(spec.sigmoid_bias));
    case ATTN_ELU1: return s > 0 ? s + F(1) : sk_exp(s);
    default: return s;  // ATTN_LINEAR
    }
}

// the normaliser z of sigmoid, elu1 and linear for the row sum r, and c = dz/dr (the row forms use the same)
template <typename F>
SK_HD inline void attn_pointwise_norm(const AttnSpec& spec, F r, F* z, F* c) {
    *z = F(1);
    *c = F(0);
    if (spec.normaliser == ANORM_SUM) {
        *z = r + F(ATTN_NORM_EPS);
        *c = F(1);
    } else if (spec.normaliser == ANORM_CLAMP) {
        F ar = r < 0 ? -r : r;
        *z = ar > 1 ? ar : F(1);
        *c = ar > 1 ? (r < 0 ? F(-1) : F(1)) : F(0);
    }
}

// d a / d s of sigmoid, elu1 and linear, from the score and a = attn_pointwise(s)
template <typename F>
SK_HD inline F attn_pointwise_grad(const AttnSpec& spec, F s, F a) {
    return spec.variant == ATTN_SIGMOID ? a * (F(1) - a) : spec.variant == ATTN_ELU1 ? (s > 0 ? F(1) : a) : F(1);
}

// gamma of the clipped softmax: -alpha / the training length (stored with the model, so sampling and probes of other
// lengths use the function that was trained), or / T of the forward when no length is stored.
template <typename F>
SK_HD inline F attn_clip_gamma(const AttnSpec& spec, int T) {
    return -F(spec.clip_alpha) / F(spec.clip_len > 0 ? spec.clip_len : T);
}

// Softpick's shift m = max(0, max_j s_j) and its normaliser Z e^{-m} = sum_j |e^{s_j - m} - e^{-m}| + eps e^{-m}: the
// forward and the backward both need them, computed the same way.
template <typename F>
SK_HD inline void softpick_shift_and_norm(const F* s, int n, F* m_out, F* z_out) {
    F m = 0;
    for (int j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
    F em = sk_exp(-m), z = 0;
    for (int j = 0; j < n; j++) {
        F e = sk_exp(s[j] - m) - em;
        z += e > 0 ? e : -e;
    }
    *m_out = m;
    *z_out = z + F(SOFTPICK_EPS) * em;
}

// The clipped softmax's d loss / d q_j for the softmax value q_j: (zeta - gamma) dp_j where the clip is inactive.
template <typename F>
SK_HD inline F clipped_dq(F q, F dp, F zeta, F gamma) {
    F v = (zeta - gamma) * q + gamma;
    return v > 0 && v < 1 ? (zeta - gamma) * dp : F(0);
}

// forward of one row: p[0..n) from s[0..n). T is the sequence length (for the clipped softmax's gamma).
template <typename F>
SK_HD inline void attn_row_forward(const AttnSpec& spec, const F* s, F* p, int n, int T) {
    switch (spec.variant) {
    case ATTN_SOFTMAX: sk_softmax_row(s, p, n, F(spec.row_mass)); return;
    case ATTN_SOFTPICK: {
        F m, z;
        softpick_shift_and_norm(s, n, &m, &z);
        F em = sk_exp(-m);
        for (int j = 0; j < n; j++) {
            F e = sk_exp(s[j] - m) - em;  // e^{-m} (e^{s_j} - 1)
            p[j] = (e > 0 ? e : F(0)) / z;
        }
        return;
    }
    case ATTN_CLIPPED: {
        F gamma = attn_clip_gamma<F>(spec, T), zeta = F(spec.clip_zeta);
        sk_softmax_row(s, p, n, F(1));
        for (int j = 0; j < n; j++) {
            F v = (zeta - gamma) * p[j] + gamma;
            p[j] = v < 0 ? F(0) : v > 1 ? F(1) : v;
        }
        return;
    }
    default: {  // sigmoid, elu1, linear: a = g(s), then the normaliser
        F r = 0;
        for (int j = 0; j < n; j++) {
            p[j] = attn_pointwise(spec, s[j]);
            r += p[j];
        }
        F z, c;
        attn_pointwise_norm(spec, r, &z, &c);
        if (spec.normaliser != ANORM_NONE)
            for (int j = 0; j < n; j++) p[j] = p[j] / z;
    }
    }
}

// backward of one row: ds[0..n) from p, dp (and s when attn_variant_table[variant].needs_scores).
template <typename F>
SK_HD inline void attn_row_backward(const AttnSpec& spec, const F* s, const F* p, const F* dp, F* ds, int n, int T) {
    F D = 0;
    for (int j = 0; j < n; j++) D = sk_fma(p[j], dp[j], D);
    switch (spec.variant) {
    case ATTN_SOFTMAX: {
        F Dm = D / F(spec.row_mass);
        for (int j = 0; j < n; j++) ds[j] = p[j] * (dp[j] - Dm);
        return;
    }
    case ATTN_SOFTPICK: {
        // e^{s_j}/Z with the forward's shift: e^{s_j - m} / (Z e^{-m})
        F m, z;
        softpick_shift_and_norm(s, n, &m, &z);
        for (int j = 0; j < n; j++) {
            F w = sk_exp(s[j] - m) / z;
            F sign = s[j] > 0 ? F(1) : s[j] < 0 ? F(-1) : F(0);
            ds[j] = w * ((s[j] > 0 ? dp[j] : F(0)) - sign * D);
        }
        return;
    }
    case ATTN_CLIPPED: {
        // recompute the softmax q_j; dq_j = (zeta - gamma) dp_j where the clip is inactive; then softmax backward
        F gamma = attn_clip_gamma<F>(spec, T), zeta = F(spec.clip_zeta);
        sk_softmax_row(s, ds, n, F(1));  // ds holds q = softmax(s) until it is overwritten with the gradient
        F Dq = 0;
        for (int j = 0; j < n; j++) Dq = sk_fma(ds[j], clipped_dq(ds[j], dp[j], zeta, gamma), Dq);
        for (int j = 0; j < n; j++) ds[j] = ds[j] * (clipped_dq(ds[j], dp[j], zeta, gamma) - Dq);
        return;
    }
    default: {  // sigmoid, elu1, linear: a_j = g(s_j) recomputed from the scores
        F r = 0;
        for (int j = 0; j < n; j++) r += attn_pointwise(spec, s[j]);
        F z, c;
        attn_pointwise_norm(spec, r, &z, &c);
        for (int j = 0; j < n; j++)
            ds[j] = (dp[j] - c * D) / z * attn_pointwise_grad(spec, s[j], attn_pointwise(spec, s[j]));
    }
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Streaming forms: the same row maps computed key tile by key tile, never holding a whole row (what a flash-attention
// kernel does on the GPU). A row keeps a two-number state (m, l) and an output accumulator acc[0..d); each tile of
// scores s[0..n) with their values v (n rows of d at stride ldv) updates both; finishing divides by the row's
// normaliser. The slot is the first tile: its score with its value v* (or no value, v = null, for the logit and zero
// slots). Tiles may be any split of the row, in key order.
//   softmax:  m = running max of s, l = sum_j e^{s_j - m}, acc = sum_j e^{s_j - m} v_j; when m grows, l and acc
//             are multiplied by e^{m_old - m_new}.                          out = A acc / l
//   softpick: m = running max(0, s_j), l = sum_j |e^{s_j - m} - e^{-m}|, acc = sum_j relu(e^{s_j - m} - e^{-m}) v_j;
//             the same rescale (every term is e^{-m} (e^{s_j} - 1)).      out = acc / (l + eps e^{-m})
//   sigmoid, elu1, linear: l = sum_j a_j, acc = sum_j a_j v_j, no rescale.  out = acc / z(l) (the normaliser)
//   clipped:  no one-pass form (the clip needs the final sum). Pass 1: attn_stream_tile with acc = null collects
//             softmax's (m, l); pass 2: attn_stream_accumulate adds p_j v_j with the final state; out = acc.
// Any map can be run in the two-pass way. The backward needs per row only the final state and D = dO . O (O = the
// row's output before the value bias): p_j = attn_stream_weight(s_j), ds_j = attn_stream_dscore(s_j, dp_j, D) with
// dp_j = dO . v_j, for each key in any order. Clipped's D is instead sum_j attn_stream_clipped_dterm(s_j, dp_j), one
// more pass over the keys. Results equal the row forms up to rounding (test_variants.cpp checks this over random tile
// splits); the exact engine keeps the row forms, whose order of operations the CPU and GPU share.

template <typename F>
struct AttnStreamState {
    F m, l;
};

SK_HD inline bool attn_stream_one_pass(const AttnSpec& spec) { return spec.variant != ATTN_CLIPPED; }

template <typename F>
SK_HD inline AttnStreamState<F> attn_stream_init(const AttnSpec& spec) {
    AttnStreamState<F> st;
    st.m = spec.variant == ATTN_SOFTMAX || spec.variant == ATTN_CLIPPED ? F(-INFINITY) : F(0);
    st.l = 0;
    return st;
}

// One tile: scores s[0..n), values v (null: no value). acc (null: statistics only) holds d values.
template <typename F>
SK_HD inline void attn_stream_tile(const AttnSpec& spec, AttnStreamState<F>* st, const F* s, const F* v, int ldv,
                                   int n, int d, F* acc) {
    bool shifted = spec.variant == ATTN_SOFTMAX || spec.variant == ATTN_CLIPPED || spec.variant == ATTN_SOFTPICK;
    if (shifted) {
        F m = st->m;
        for (int j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
        if (m > st->m) {  // rescale what was summed with the old shift (nothing yet when the old one is -inf)
            F scale = st->m == F(-INFINITY) ? F(0) : sk_exp(st->m - m);
            st->l *= scale;
            if (acc)
                for (int i = 0; i < d; i++) acc[i] *= scale;
            st->m = m;
        }
    }
    F em = spec.variant == ATTN_SOFTPICK ? sk_exp(-st->m) : F(0);
    for (int j = 0; j < n; j++) {
        F w, wl;  // the term of acc and the term of l
        if (spec.variant == ATTN_SOFTPICK) {
            F e = sk_exp(s[j] - st->m) - em;
            w = e > 0 ? e : F(0);
            wl = e > 0 ? e : -e;
        } else if (shifted) {
            w = wl = sk_exp(s[j] - st->m);
        } else {
            w = wl = attn_pointwise(spec, s[j]);
        }
        st->l += wl;
        if (acc && v)
            for (int i = 0; i < d; i++) acc[i] = sk_fma(w, v[(size_t)j * ldv + i], acc[i]);
    }
}

// The factor that turns the one-pass accumulator into the output.
template <typename F>
SK_HD inline F attn_stream_out_scale(const AttnSpec& spec, const AttnStreamState<F>& st) {
    switch (spec.variant) {
    case ATTN_SOFTMAX: return F(spec.row_mass) / st.l;
    case ATTN_SOFTPICK: return F(1) / (st.l + F(SOFTPICK_EPS) * sk_exp(-st.m));
    case ATTN_CLIPPED: return F(1);  // two-pass: acc already holds the weights
    default: {
        F z, c;
        attn_pointwise_norm(spec, st.l, &z, &c);
        return F(1) / z;
    }
    }
}

// p_j of a score from the row's final state.
template <typename F>
SK_HD inline F attn_stream_weight(const AttnSpec& spec, const AttnStreamState<F>& st, F s, int T) {
    switch (spec.variant) {
    case ATTN_SOFTMAX: return F(spec.row_mass) * sk_exp(s - st.m) / st.l;
    case ATTN_SOFTPICK: {
        F e = sk_exp(s - st.m) - sk_exp(-st.m);
        return (e > 0 ? e : F(0)) / (st.l + F(SOFTPICK_EPS) * sk_exp(-st.m));
    }
    case ATTN_CLIPPED: {
        F gamma = attn_clip_gamma<F>(spec, T), v = (F(spec.clip_zeta) - gamma) * (sk_exp(s - st.m) / st.l) + gamma;
        return v < 0 ? F(0) : v > 1 ? F(1) : v;
    }
    default: {
        F z, c;
        attn_pointwise_norm(spec, st.l, &z, &c);
        return attn_pointwise(spec, s) / z;
    }
    }
}

// Pass 2 of the two-pass form: acc += p_j v_j with the final state.
template <typename F>
SK_HD inline void attn_stream_accumulate(const AttnSpec& spec, const AttnStreamState<F>& st, const F* s, const F* v,
                                         int ldv, int n, int d, F* acc, int T) {
    if (!v) return;
    for (int j = 0; j < n; j++) {
        F p = attn_stream_weight(spec, st, s[j], T);
        for (int i = 0; i < d; i++) acc[i] = sk_fma(p, v[(size_t)j * ldv + i], acc[i]);
    }
}

// Clipped softmax's D is sum_j q_j dq_j (q = the softmax before the clip): this is one term.
template <typename F>
SK_HD inline F attn_stream_clipped_dterm(const AttnSpec& spec, const AttnStreamState<F>& st, F s, F dp, int T) {
    F q = sk_exp(s - st.m) / st.l;
    return q * clipped_dq(q, dp, F(spec.clip_zeta), attn_clip_gamma<F>(spec, T));
}

// ds_j from the final state, the score, dp_j = dO . v_j and D (dO . O; for clipped the sum of its D terms).
template <typename F>
SK_HD inline F attn_stream_dscore(const AttnSpec& spec, const AttnStreamState<F>& st, F s, F dp, F D, int T) {
    switch (spec.variant) {
    case ATTN_SOFTMAX: return attn_stream_weight(spec, st, s, T) * (dp - D / F(spec.row_mass));
    case ATTN_SOFTPICK: {
        F w = sk_exp(s - st.m) / (st.l + F(SOFTPICK_EPS) * sk_exp(-st.m));
        F sign = s > 0 ? F(1) : s < 0 ? F(-1) : F(0);
        return w * ((s > 0 ? dp : F(0)) - sign * D);
    }
    case ATTN_CLIPPED: {
        F q = sk_exp(s - st.m) / st.l;
        return q * (clipped_dq(q, dp, F(spec.clip_zeta), attn_clip_gamma<F>(spec, T)) - D);
    }
    default: {
        F z, c;
        attn_pointwise_norm(spec, st.l, &z, &c);
        return (dp - c * D) / z * attn_pointwise_grad(spec, s, attn_pointwise(spec, s));
    }
    }
}
