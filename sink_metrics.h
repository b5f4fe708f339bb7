// sink_metrics.h: the attention-sink measurements of the paper (../shared/paper.md section 1), shared by both trainers.
//
// What it is: pure functions over one probe sequence's attention matrices and hidden states, and an accumulator that
// averages them over the probe and prints them as JSON. The trainers call it on what their forward pass already holds
// (attention probabilities, residual streams, keys and values); nothing here runs the model.
// What it is not: a probe sampler (data/token_shards.h read_probe) or a plotter (dev/).
//
// Definitions (positions 0-based here, 1-based in the paper):
//   alpha_k^{l,h} = 1/(T-k) * sum_{t=k..T-1} A[t,k]   the mean attention key k receives from the queries that see it
//   Sink_k        = 100 * mean over sequences of (1/(L*NH)) * #{(l,h): alpha_k^{l,h} > eps}     (strict >)
//   alpha1[l][h]  = mean over sequences of alpha_0^{l,h}
//   norm_ratio[l] = mean over sequences of ||h_0|| / mean_{t>0} ||h_t||, l = 0 the embedding output, l = 1..L the
//                   residual stream after block l
//   top1_median[l]= mean over sequences of max |h| / median |h| over that sequence's T x C entries (Sun et al. 2024)
//   k1_ratio[l], v1_ratio[l] = mean over sequences of ||k_0|| / mean_{t>0} ||k_t|| (whole C-wide key/value of layer l)
//   entropy[l]    = mean over sequences, heads and rows t >= 1 of -sum_j A[t,j] log A[t,j] / log(t+1)
// All sums are in double, in index order.
#pragma once
#include <math.h>
#include <stdio.h>
#include <algorithm>
#include <string>
#include <vector>

#define SINK_MAX_K 10

// alpha[k] for k = 0..kmax-1 from one T x T attention matrix (row t holds keys 0..t; entries above the diagonal unused).
template <typename F>
static inline void sink_alpha(const F* A, int T, int kmax, double* alpha) {
    for (int k = 0; k < kmax; k++) {
        double s = 0;
        for (int t = k; t < T; t++) s += A[(size_t)t * T + k];
        alpha[k] = k < T ? s / (T - k) : 0.0;
    }
}

// Mean normalised entropy of rows t = 1..T-1 (row 0 sees one key and has no entropy to normalise).
template <typename F>
static inline double sink_row_entropy(const F* A, int T) {
    double total = 0;
    for (int t = 1; t < T; t++) {
        double h = 0;
        for (int j = 0; j <= t; j++) {
            double a = A[(size_t)t * T + j];
            if (a > 0) h -= a * log(a);
        }
        total += h / log((double)t + 1);
    }
    return T > 1 ? total / (T - 1) : 0.0;
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
    int L = 0, NH = 0, seqs = 0, T = 0;
    float eps = 0.3f;
    double sink[SINK_MAX_K] = {0};           // percent
    std::vector<double> alpha1;              // L*NH
    std::vector<double> norm_ratio;          // L+1
    std::vector<double> top1_median;         // L+1
    std::vector<double> k1_ratio, v1_ratio;  // L
    std::vector<double> entropy;             // L
    double alpha1_mean = 0, entropy_mean = 0;
};

// Accumulates over probe sequences. Per sequence: add every (layer, head) matrix, every layer's states, then
// sink_end_sequence. sink_finish turns the sums into means.
struct SinkAccumulator {
    SinkReport r;
    std::vector<double> seq_alpha;  // L*NH*SINK_MAX_K of the current sequence
};

static inline void sink_begin(SinkAccumulator* a, int L, int NH, int T, float eps) {
    a->r = SinkReport();
    a->r.L = L; a->r.NH = NH; a->r.T = T; a->r.eps = eps;
    a->r.alpha1.assign((size_t)L * NH, 0); a->r.norm_ratio.assign(L + 1, 0); a->r.top1_median.assign(L + 1, 0);
    a->r.k1_ratio.assign(L, 0); a->r.v1_ratio.assign(L, 0); a->r.entropy.assign(L, 0);
    a->seq_alpha.assign((size_t)L * NH * SINK_MAX_K, 0);
}

template <typename F>
static inline void sink_add_head(SinkAccumulator* a, int l, int h, const F* A) {
    double* alpha = &a->seq_alpha[((size_t)l * a->r.NH + h) * SINK_MAX_K];
    sink_alpha(A, a->r.T, SINK_MAX_K, alpha);
    a->r.alpha1[(size_t)l * a->r.NH + h] += alpha[0];
    a->r.entropy[l] += sink_row_entropy(A, a->r.T) / a->r.NH;
}

// Hidden state of layer l (0 = embeddings): T rows of C channels, contiguous.
template <typename F>
static inline void sink_add_hidden(SinkAccumulator* a, int l, const F* x, int C) {
    a->r.norm_ratio[l] += sink_first_norm_ratio(x, a->r.T, C, C);
    a->r.top1_median[l] += sink_top1_over_median(x, (size_t)a->r.T * C);
}

// Keys and values of block l: T rows of C channels at a row stride (3C inside the fused qkv buffer).
template <typename F>
static inline void sink_add_kv(SinkAccumulator* a, int l, const F* k, const F* v, int C, size_t stride) {
    a->r.k1_ratio[l] += sink_first_norm_ratio(k, a->r.T, C, stride);
    a->r.v1_ratio[l] += sink_first_norm_ratio(v, a->r.T, C, stride);
}

static inline void sink_end_sequence(SinkAccumulator* a) {
    int heads = a->r.L * a->r.NH;
    for (int k = 0; k < SINK_MAX_K; k++) {
        int hits = 0;
        for (int i = 0; i < heads; i++) hits += a->seq_alpha[(size_t)i * SINK_MAX_K + k] > a->r.eps;
        a->r.sink[k] += 100.0 * hits / heads;
    }
    a->r.seqs++;
}

static inline SinkReport sink_finish(SinkAccumulator* a) {
    SinkReport r = a->r;
    double n = r.seqs > 0 ? r.seqs : 1;
    for (double& x : r.sink) x /= n;
    for (double& x : r.alpha1) x /= n;
    for (double& x : r.norm_ratio) x /= n;
    for (double& x : r.top1_median) x /= n;
    for (double& x : r.k1_ratio) x /= n;
    for (double& x : r.v1_ratio) x /= n;
    for (double& x : r.entropy) x /= n;
    r.alpha1_mean = 0;
    for (double x : r.alpha1) r.alpha1_mean += x / r.alpha1.size();
    r.entropy_mean = 0;
    for (double x : r.entropy) r.entropy_mean += x / r.entropy.size();
    return r;
}

static inline std::string json_list(const double* x, size_t n) {
    std::string s = "[";
    char buf[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "%s%.9g", i ? "," : "", x[i]);
        s += buf;
    }
    return s + "]";
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
    return s;
}
