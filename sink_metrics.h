// sink_metrics.h: the attention-sink measurements of Gu et al. (ICLR 2025; docs/metrics.md), shared by both trainers.
//
// What it is: pure functions over one probe sequence's attention matrices and hidden states, and an accumulator that
// averages them over the probe and prints them as JSON. The trainers call it on what their forward pass already holds
// (attention probabilities, residual streams, keys and values); nothing here runs the model.
// What it is not: a probe sampler (common/token_shards.h read_probe) or a plotter (dev/).
//
// Definitions (positions 0-based here, 1-based in the paper):
//   alpha_k^{l,h} = mean of A[t,k] over the queries t that see key k (causal: 1/(T-k) * sum_{t=k..T-1} A[t,k])
//   Sink_k        = 100 * mean over sequences of (1/(L*NH)) * #{(l,h): alpha_k^{l,h} > eps}     (strict >)
//   alpha1[l][h]  = mean over sequences of alpha_0^{l,h}
//   norm_ratio[l] = mean over sequences of ||h_0|| / mean_{t>0} ||h_t||, l = 0 the embedding output, l = 1..L the
//                   residual stream after block l
//   top1_median[l]= mean over sequences of max |h| / median |h| over that sequence's T x C entries (Sun et al. 2024)
//   k1_ratio[l], v1_ratio[l] = mean over sequences of ||k_0|| / mean_{t>0} ||k_t|| (whole C-wide key/value of layer l)
//   entropy[l]    = mean over sequences, heads and rows with 2+ visible keys of -sum_j A[t,j] log A[t,j] / log(visible)
// Variants (docs/variants.md, docs/metrics.md): rows that are not probability distributions are read as proxy
// scores |w_j| / sum_j |w_j|, and row_mass[l] = the mean of sum_j w_j over real query rows. With a slot (k*, a sink
// logit, softmax_1's zero logit, or the sink token) A is (T+1) x (T+1) with the slot at index 0 and its own row
// one-hot on itself: alpha_* = mean_t A[t, 0] over all T+1 rows, Sink_* counts alpha_* > eps, and Sink_k reads index k.
// Hidden states and keys/values are those of the T real tokens.
// All sums are in double, in index order.
#pragma once
#include <math.h>
#include <stdio.h>
#include <algorithm>
#include <string>
#include <vector>

#include "common/json_write.h"

#define SINK_MAX_K 10

// Which keys each row of a T x T matrix sees: row t sees [lo[t], hi[t]), plus key 0 in every row when slot0 (a k*,
// sink-logit or softmax_1 slot). Null lo/hi = causal (row t sees [0, t]).
struct SinkVisibility {
    const int* lo = nullptr;
    const int* hi = nullptr;
    bool slot0 = false;
};

static inline bool sink_visible(const SinkVisibility& v, int t, int k) {
    if (!v.lo) return k <= t;
    return (v.slot0 && k == 0) || (v.lo[t] <= k && k < v.hi[t]);
}

// How many keys k in [0, T) row t sees: the count of sink_visible over k, from the interval's ends.
static inline int sink_visible_count(const SinkVisibility& v, int t, int T) {
    if (!v.lo) return std::min(t + 1, T);
    int lo = std::max(v.lo[t], 0), hi = std::min(v.hi[t], T);
    int n = hi > lo ? hi - lo : 0;
    if (v.slot0 && T > 0 && !(lo <= 0 && 0 < hi)) n++;  // key 0, outside the interval
    return n;
}

// alpha[k] for k = 0..kmax-1 from one T x T attention matrix: the mean of A[t,k] over the rows t that see key k (for
// the causal mask the paper's 1/(T-k) sum_{t>=k}; for a sliding window only the w queries that see k, so a window does
// not cap alpha at w/(T-k) by construction).
template <typename F>
static inline void sink_alpha(const F* A, int T, int kmax, double* alpha, const SinkVisibility& v = SinkVisibility()) {
    for (int k = 0; k < kmax; k++) {
        double s = 0;
        int n = 0;
        for (int t = 0; t < T; t++)
            if (k < T && sink_visible(v, t, k)) {
                s += A[(size_t)t * T + k];
                n++;
            }
        alpha[k] = n ? s / n : 0.0;
    }
}

// Mean normalised entropy of rows t = first..T-1 of a T x T matrix, each divided by the log of its number of visible
// keys; rows with one visible key have no entropy to normalise and are skipped.
template <typename F>
static inline double sink_row_entropy(const F* A, int T, int first = 1, const SinkVisibility& v = SinkVisibility()) {
    double total = 0;
    int rows = 0;
    for (int t = first; t < T; t++) {
        int n = sink_visible_count(v, t, T);
        if (n < 2) continue;
        double h = 0;
        for (int j = 0; j < T; j++) {
            double a = A[(size_t)t * T + j];
            if (a > 0) h -= a * log(a);
        }
        total += h / log((double)n);
        rows++;
    }
    return rows ? total / rows : 0.0;
}

// ||x_0|| / mean_{t>0} ||x_t|| for T rows of width C at the given row stride.
template <typename F>
static inline double sink_first_norm_ratio(const F* x, int T, int C, size_t stride) {
    double first = 0, rest = 0;
    for (int t = 0; t < T; t++) {
        double s = 0;
        for (int c = 0; c < C; c++) s += (double)x[t * stride + c] * x[t * stride + c];
        if (t == 0) first = sqrt(s);
        else rest += sqrt(s);
    }
    return T > 1 && rest > 0 ? first / (rest / (T - 1)) : 0.0;
}

// max |x| / median |x| over n values (the upper median for even n).
template <typename F>
static inline double sink_top1_over_median(const F* x, size_t n) {
    std::vector<float> a(n);
    for (size_t i = 0; i < n; i++) a[i] = fabsf((float)x[i]);
    float top = *std::max_element(a.begin(), a.end());
    std::nth_element(a.begin(), a.begin() + n / 2, a.end());
    float med = a[n / 2];
    return med > 0 ? (double)top / med : 0.0;
}

struct SinkReport {
    int L = 0, NH = 0, seqs = 0, T = 0, slot_column = 0, proxy = 0;
    float eps = 0.3f;
    double sink[SINK_MAX_K] = {0};           // percent
    double sink_star = 0;                    // percent, with a slot
    std::vector<double> alpha1;              // L*NH
    std::vector<double> alpha_star;          // L*NH, with a slot
    std::vector<double> norm_ratio;          // L+1
    std::vector<double> top1_median;         // L+1
    std::vector<double> k1_ratio, v1_ratio;  // L
    std::vector<double> entropy;             // L
    std::vector<double> row_mass;            // L
    double alpha1_mean = 0, entropy_mean = 0;
};

// Accumulates over probe sequences. Per sequence: add every (layer, head) matrix, every layer's states, then
// sink_end_sequence. sink_finish turns the sums into means.
struct SinkAccumulator {
    SinkReport r;
    std::vector<double> seq_alpha;  // L*NH*(SINK_MAX_K+1) of the current sequence: [alpha_* (slot only), alpha_1..]
};

// T real tokens per sequence; slot_column: the matrices are (T+1) x (T+1) with a slot (or the sink token) at index
// 0; proxy: read |w| / sum |w| per row instead of w.
static inline void sink_begin(SinkAccumulator* a, int L, int NH, int T, float eps, int slot_column = 0, int proxy = 0) {
    a->r = SinkReport();
    a->r.L = L; a->r.NH = NH; a->r.T = T; a->r.eps = eps; a->r.slot_column = slot_column; a->r.proxy = proxy;
    a->r.alpha1.assign((size_t)L * NH, 0); a->r.norm_ratio.assign(L + 1, 0); a->r.top1_median.assign(L + 1, 0);
    a->r.k1_ratio.assign(L, 0); a->r.v1_ratio.assign(L, 0); a->r.entropy.assign(L, 0); a->r.row_mass.assign(L, 0);
    a->r.alpha_star.assign(slot_column ? (size_t)L * NH : 0, 0);
    a->seq_alpha.assign((size_t)L * NH * (SINK_MAX_K + 1), 0);
}

// What one head's matrix adds to a sequence's sums. Each head's are computed alone, so heads can be measured in
// parallel, then added in (layer, head) order: the same sums, in the same order, as one head after the other.
struct SinkHeadStats {
    double mass = 0, entropy = 0;
    double alpha[SINK_MAX_K + 1] = {0};  // [alpha_* (slot only), alpha_1..alpha_10]
};

// One head's attention weights: a Tm x Tm matrix, Tm = T + slot_column, row t holding the weights of the keys query t
// sees (zero elsewhere); v says which those are (default: causal). r gives T, the slot column and the proxy reading.
template <typename F>
static inline SinkHeadStats sink_head_stats(const SinkReport& r, const F* W,
                                            const SinkVisibility& v = SinkVisibility()) {
    SinkHeadStats st;
    int Tm = r.T + r.slot_column;
    for (int t = r.slot_column; t < Tm; t++)
        for (int j = 0; j < Tm; j++) st.mass += W[(size_t)t * Tm + j];
    double* alpha = st.alpha + 1 - r.slot_column;
    if (r.proxy) {
        std::vector<double> normalised((size_t)Tm * Tm);
        for (int t = 0; t < Tm; t++) {
            double s = 0;
            for (int j = 0; j < Tm; j++) s += fabs((double)W[(size_t)t * Tm + j]);
            for (int j = 0; j < Tm; j++) normalised[(size_t)t * Tm + j] = s > 0 ? fabs((double)W[(size_t)t * Tm + j]) / s : 0.0;
        }
        sink_alpha(normalised.data(), Tm, SINK_MAX_K + r.slot_column, alpha, v);
        st.entropy = sink_row_entropy(normalised.data(), Tm, 1, v);
    } else {
        sink_alpha(W, Tm, SINK_MAX_K + r.slot_column, alpha, v);
        st.entropy = sink_row_entropy(W, Tm, 1, v);
    }
    return st;
}

static inline void sink_add_head_stats(SinkAccumulator* a, int l, int h, const SinkHeadStats& st) {
    SinkReport& r = a->r;
    r.row_mass[l] += st.mass / r.T / r.NH;
    std::copy(st.alpha, st.alpha + SINK_MAX_K + 1, &a->seq_alpha[((size_t)l * r.NH + h) * (SINK_MAX_K + 1)]);
    r.alpha1[(size_t)l * r.NH + h] += st.alpha[1];
    if (r.slot_column) r.alpha_star[(size_t)l * r.NH + h] += st.alpha[0];
    r.entropy[l] += st.entropy / r.NH;
}

template <typename F>
static inline void sink_add_head(SinkAccumulator* a, int l, int h, const F* W,
                                 const SinkVisibility& v = SinkVisibility()) {
    sink_add_head_stats(a, l, h, sink_head_stats(a->r, W, v));
}

// What a layer's hidden states, or its keys and values, add to a sequence's sums: computed alone, added in order.
struct SinkHiddenStats {
    double norm_ratio = 0, top1_median = 0;
};
struct SinkKVStats {
    double k1_ratio = 0, v1_ratio = 0;
};

// Hidden state of a layer (0 = embeddings): T rows of C channels, contiguous.
template <typename F>
static inline SinkHiddenStats sink_hidden_stats(const SinkReport& r, const F* x, int C) {
    SinkHiddenStats st;
    st.norm_ratio = sink_first_norm_ratio(x, r.T, C, C);
    st.top1_median = sink_top1_over_median(x, (size_t)r.T * C);
    return st;
}
static inline void sink_add_hidden_stats(SinkAccumulator* a, int l, const SinkHiddenStats& st) {
    a->r.norm_ratio[l] += st.norm_ratio;
    a->r.top1_median[l] += st.top1_median;
}
template <typename F>
static inline void sink_add_hidden(SinkAccumulator* a, int l, const F* x, int C) {
    sink_add_hidden_stats(a, l, sink_hidden_stats(a->r, x, C));
}

// Keys and values of a block: T rows of C channels at a row stride (3C inside the fused qkv buffer).
template <typename F>
static inline SinkKVStats sink_kv_stats(const SinkReport& r, const F* k, const F* v, int C, size_t stride) {
    SinkKVStats st;
    st.k1_ratio = sink_first_norm_ratio(k, r.T, C, stride);
    st.v1_ratio = sink_first_norm_ratio(v, r.T, C, stride);
    return st;
}
static inline void sink_add_kv_stats(SinkAccumulator* a, int l, const SinkKVStats& st) {
    a->r.k1_ratio[l] += st.k1_ratio;
    a->r.v1_ratio[l] += st.v1_ratio;
}
template <typename F>
static inline void sink_add_kv(SinkAccumulator* a, int l, const F* k, const F* v, int C, size_t stride) {
    sink_add_kv_stats(a, l, sink_kv_stats(a->r, k, v, C, stride));
}

static inline void sink_end_sequence(SinkAccumulator* a) {
    int heads = a->r.L * a->r.NH;
    for (int k = 0; k <= SINK_MAX_K; k++) {
        int hits = 0;
        for (int i = 0; i < heads; i++) hits += a->seq_alpha[(size_t)i * (SINK_MAX_K + 1) + k] > a->r.eps;
        if (k == 0) a->r.sink_star += 100.0 * hits / heads;
        else a->r.sink[k - 1] += 100.0 * hits / heads;
    }
    a->r.seqs++;
}

static inline SinkReport sink_finish(SinkAccumulator* a) {
    SinkReport r = a->r;
    double n = r.seqs > 0 ? r.seqs : 1;
    for (double& x : r.sink) x /= n;
    r.sink_star = r.slot_column ? r.sink_star / n : 0.0;
    for (auto* v : {&r.alpha1, &r.alpha_star, &r.norm_ratio, &r.top1_median, &r.k1_ratio, &r.v1_ratio, &r.entropy,
                    &r.row_mass})
        for (double& x : *v) x /= n;
    r.alpha1_mean = 0;
    for (double x : r.alpha1) r.alpha1_mean += x / r.alpha1.size();
    r.entropy_mean = 0;
    for (double x : r.entropy) r.entropy_mean += x / r.entropy.size();
    return r;
}

// The report as JSON fields (no braces), so a caller can prepend its own ("step": ...).
static inline std::string sink_report_json_fields(const SinkReport& r) {
    char buf[160];
    snprintf(buf, sizeof buf, "\"probe_seqs\":%d,\"probe_len\":%d,\"eps\":%.9g,\"alpha1_mean\":%.9g,\"entropy_mean\":%.9g",
             r.seqs, r.T, r.eps, r.alpha1_mean, r.entropy_mean);
    std::string s = buf;
    s += ",\"sink\":" + json_list(r.sink, SINK_MAX_K);
    s += ",\"alpha1\":[";
    for (int l = 0; l < r.L; l++) s += (l ? "," : "") + json_list(&r.alpha1[(size_t)l * r.NH], r.NH);
    s += "]";
    s += ",\"norm_ratio\":" + json_list(r.norm_ratio.data(), r.norm_ratio.size());
    s += ",\"top1_median\":" + json_list(r.top1_median.data(), r.top1_median.size());
    s += ",\"k1_ratio\":" + json_list(r.k1_ratio.data(), r.k1_ratio.size());
    s += ",\"v1_ratio\":" + json_list(r.v1_ratio.data(), r.v1_ratio.size());
    s += ",\"entropy\":" + json_list(r.entropy.data(), r.entropy.size());
    s += std::string(",\"proxy\":") + (r.proxy ? "true" : "false");
    s += ",\"row_mass\":" + json_list(r.row_mass.data(), r.row_mass.size());
    if (r.slot_column) {
        snprintf(buf, sizeof buf, ",\"sink_star\":%.9g,\"alpha_star\":[", r.sink_star);
        s += buf;
        for (int l = 0; l < r.L; l++) s += (l ? "," : "") + json_list(&r.alpha_star[(size_t)l * r.NH], r.NH);
        s += "]";
    }
    return s;
}
