// kernels/attention_flash.cuh: the per-row work of a flash-style attention forward and backward, for every variant.
//
//   y_t = p_* v* + sum_j p_tj v_j,  p_t = the row map of [s_*, s_lo .. s_hi-1],  s_tj = tau q_t . k_j - slope |t - j|
//
// computed key tile by key tile with the streaming forms of attention_variants.cuh: a row never holds more than one
// tile of scores (slope: ALiBi's, 0 without). CPU twin: attention_forward in train_gpt_cpu.cpp (the row form,
// attn_row_forward).
//
// What it is: host-and-device functions for one query row (its query, output accumulator and row state) and one
// query tile (the key interval its rows see), templated on the float type (the tests run them in double). A kernel
// stages each key tile of K and V in shared memory and calls flash_row_tile from every thread. Their users: the fast
// engine's streamed attention (stream_forward_block, stream_dq_block, stream_dkv_block in train_gpt_cpu.cpp, blocks
// of sk_for_blocks that the CPU runs too), version 2 of dev/cuda/attention_forward.cu and attention_backward.cu, and
// test_variants.cpp, which runs them on the CPU over random shapes, every row map, slot and mask, against the row form.
// What it is not: the kernel (the staging, the synchronisation and the launch are the kernel's), nor the feature maps
// (they change q and k before this).
#pragma once
#include "../attention_variants.cuh"

// The union of the intervals [lo, hi) that `visible` gives the indices i0 .. i1 - 1: itself an interval, since each
// is one and neither end ever decreases with the index, so the first and the last index bound it.
template <typename Visible>
SK_HD inline void flash_interval_hull(Visible visible, const AttnSpec& spec, int i0, int i1, int T, int* lo, int* hi) {
    int lo0, hi0, lo1, hi1;
    visible(spec, i0, T, &lo0, &hi0);
    visible(spec, i1 - 1, T, &lo1, &hi1);
    *lo = lo0 < lo1 ? lo0 : lo1;
    *hi = hi0 > hi1 ? hi0 : hi1;
}

// The keys any row of the query tile [t0, t1) may see. The tile loop starts at lo rounded down to a multiple of `tile`.
SK_HD inline void flash_tile_keys(const AttnSpec& spec, int t0, int t1, int T, int* lo, int* hi) {
    flash_interval_hull(attn_visible_keys, spec, t0, t1, T, lo, hi);
}

// The part of a row's visible keys [lo, hi) inside the key tile [k0, k0 + kn): [*j0, *j1), empty when j0 >= j1.
SK_HD inline void flash_tile_span(int lo, int hi, int k0, int kn, int* j0, int* j1) {
    *j0 = lo > k0 ? lo : k0;
    *j1 = hi < k0 + kn ? hi : k0 + kn;
}

// The stride, in values, between the rows of a staged key tile of head size hs: hs + 4 where hs is a multiple of 8,
// else hs. With a sliding window (or a prefix) the threads of a warp start their keys at different rows, so at each
// step they read 32 different rows of the tile at once, in 16-byte vectors (ld.shared.v4, served 8 threads at a
// time). At a stride of hs values, a multiple of 8, the 8 rows of such a group fall in at most 4 of the 8 groups of 4
// banks (hs 8: 4 groups, 2 reads queue in each; hs 16: 2 groups, 4 reads; a multiple of 32: 1 group, all 8); a
// stride whose 16-byte chunks are odd in number puts them in 8 different groups, and keeps every row 16-byte aligned,
// so the vectors stay. (Under a causal mask the threads read the same key at once, a broadcast: no conflict at any
// stride.) test_variants.cpp counts the passes in the commonly described model of the banks (NVIDIA does not publish
// how a 16-byte read is split); on a GPU, ncu's l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum counts them.
SK_HD constexpr int flash_stage_stride(int hs) { return hs % 8 == 0 ? hs + 4 : hs; }

// One query row. HS, the head size, sizes the registers. slope: ALiBi's for the row's head (0 without ALiBi), which
// takes slope |t - j| off each score.
template <int HS, typename F = float>
struct FlashRow {
    F q[HS], acc[HS];
    AttnStreamState<F> st;
    int lo, hi, t;  // the row's visible keys, the row
    F slope;
};

// the score of a query row (its t and slope) against key j: tau q . k_j, d in order, less ALiBi's distance term
template <int HS, typename F>
SK_HD inline F flash_score(const F* q, const F* kj, F tau, F slope, int t, int j) {
    F dot = 0;
    for (int d = 0; d < HS; d++) dot = sk_fma(q[d], kj[d], dot);
    return slope != F(0) ? attn_alibi_score(dot * tau, slope, t, j) : dot * tau;
}

// Start row t: load its query (HS values at q), empty its state. Then, for each pass (flash_passes), the slot
// (flash_row_slot, when the variant has one) and every key tile in order (flash_row_tile); then flash_row_finish.
template <int HS, typename F>
SK_HD inline void flash_row_begin(FlashRow<HS, F>* r, const AttnSpec& spec, const F* q, int t, int T, F slope = 0) {
    for (int d = 0; d < HS; d++) r->q[d] = q[d];
    for (int d = 0; d < HS; d++) r->acc[d] = 0;
    r->st = attn_stream_init<F>(spec);
    attn_visible_keys(spec, t, T, &r->lo, &r->hi);
    r->t = t;
    r->slope = slope;
}

// The first (or only) pass over n scores s and their values v: the statistics, and in a one-pass map the accumulator
// too. Two calls rather than one with `one_pass ? r->acc : nullptr`: a pointer chosen at run time keeps the compiler
// from holding acc in registers (on a GPU it went to local memory). The values' rows are KS apart.
template <int HS, int KS = HS, typename F>
SK_HD inline void flash_stream_tile(FlashRow<HS, F>* r, const AttnSpec& spec, const F* s, const F* v, int n) {
    if (attn_stream_one_pass(spec))
        attn_stream_tile(spec, &r->st, s, v, KS, n, HS, r->acc);
    else
        attn_stream_tile(spec, &r->st, s, v, KS, n, HS, (F*)nullptr);
}

// The slot's entry (when the variant has one) in the given pass: 0 = the one pass (or the statistics pass of a
// two-pass map), 1 = the weights pass of a two-pass map.
template <int HS, typename F>
SK_HD inline void flash_row_slot(FlashRow<HS, F>* r, const AttnSpec& spec, F s_slot, const F* v_slot, int pass,
                                 int T) {
    if (pass == 0)
        flash_stream_tile<HS>(r, spec, &s_slot, v_slot, 1);
    else
        attn_stream_accumulate(spec, r->st, &s_slot, v_slot, HS, 1, HS, r->acc, T);
}

// One key tile: keys k0 .. k0 + kn - 1, their K and V rows at ks and vs, KS values apart (the staged tile: the kernels
// stage at flash_stage_stride(HS)). Only the row's own visible keys in the tile count. `s` holds kn floats of scratch.
template <int HS, int KS = HS, typename F>
SK_HD inline void flash_row_tile(FlashRow<HS, F>* r, const AttnSpec& spec, const F* ks, const F* vs, int k0, int kn,
                                 F tau, int pass, int T, F* s) {
    static_assert(KS >= HS, "a staged row holds HS values");
    int j0, j1;
    flash_tile_span(r->lo, r->hi, k0, kn, &j0, &j1);
    if (j0 >= j1) return;
    for (int j = j0; j < j1; j++)
        s[j - j0] = flash_score<HS>(r->q, ks + (size_t)(j - k0) * KS, tau, r->slope, r->t, j);
    const F* v = vs + (size_t)(j0 - k0) * KS;
    if (pass == 0)
        flash_stream_tile<HS, KS>(r, spec, s, v, j1 - j0);
    else
        attn_stream_accumulate(spec, r->st, s, v, KS, j1 - j0, HS, r->acc, T);
}

// The row's output (HS values), after every tile of every pass.
template <int HS, typename F>
SK_HD inline void flash_row_finish(const FlashRow<HS, F>* r, const AttnSpec& spec, F* y) {
    F f = attn_stream_out_scale(spec, r->st);
    for (int d = 0; d < HS; d++) y[d] = r->acc[d] * f;
}

// How many passes over the keys the variant takes: 1, or 2 for clipped softmax (statistics, then weights).
SK_HD inline int flash_passes(const AttnSpec& spec) { return attn_stream_one_pass(spec) ? 1 : 2; }

// ----------------------------------------------------------------------------------------------------------------
// The backward, from what the forward keeps per row: its final state (m, l) and its output O (before any value bias).
//
//   D_t   = dO_t . O_t   (clipped softmax: sum over the row of attn_stream_clipped_dterm, one more pass)
//   dp_tj = dO_t . v_j,  ds_tj = attn_stream_dscore(state_t, s_tj, dp_tj, D_t),  p_tj = attn_stream_weight(...)
//   dq_t += tau sum_j ds_tj k_j       a pass over the key tiles a query row sees   (flash_dq_tile)
//   dk_j += tau sum_t ds_tj q_t,  dv_j += sum_t p_tj dO_t
//                                     a pass over the query tiles that see a key   (flash_dkv_tile)
// Each output has one owner (a query row, or a key row) that sums in order: no atomics, the same bits every run.
// The slot (one more entry in front of every row) is the dq pass's: flash_dq_slot gives its ds_* and p_*, from which
// the kernel forms dq_t += tau ds_* k*, and the per-row parts of dk* (tau ds_* q_t), dv* (p_* dO_t) and the sink
// logit (ds_*), which it then sums over t in order.

// One query row of the backward: its query and output gradient, its forward state, D, and its visible keys. 16-byte
// aligned: where a kernel stages rows in shared memory, q and dO are read in vectors.
template <int HS, typename F = float>
struct alignas(16) FlashGradRow {
    F q[HS], dout[HS], dq[HS];
    AttnStreamState<F> st;
    F D, slope;
    int lo, hi, t;
};

// Start row t: q, dO (HS values each), the forward's state and output, less the value bias vbias when there is one
// (O = out - vbias), and ALiBi's slope (0 without).
template <int HS, typename F>
SK_HD inline void flash_grad_row_begin(FlashGradRow<HS, F>* r, const AttnSpec& spec, const F* q, const F* dout,
                                       AttnStreamState<F> st, const F* out, int t, int T, F slope = 0,
                                       const F* vbias = nullptr) {
    r->D = 0;
    for (int d = 0; d < HS; d++) {
        r->q[d] = q[d];
        r->dout[d] = dout[d];
        r->dq[d] = 0;
        r->D = sk_fma(dout[d], vbias ? out[d] - vbias[d] : out[d], r->D);
    }
    r->st = st;
    r->slope = slope;
    r->t = t;
    attn_visible_keys(spec, t, T, &r->lo, &r->hi);
    if (spec.variant == ATTN_CLIPPED) r->D = 0;  // summed by flash_clipped_D_slot and flash_clipped_D_tile instead
}

// The score of this row against key j (its rows kj, vj: HS values each), and dO . v_j.
template <int HS, typename F>
SK_HD inline void flash_grad_terms(const FlashGradRow<HS, F>* r, const F* kj, const F* vj, int j, F tau, F* s, F* dp) {
    F dot = 0, dv = 0;  // flash_score's, beside dO . v_j in the same loop
    for (int d = 0; d < HS; d++) {
        dot = sk_fma(r->q[d], kj[d], dot);
        dv = sk_fma(r->dout[d], vj[d], dv);
    }
    *s = r->slope != F(0) ? attn_alibi_score(dot * tau, r->slope, r->t, j) : dot * tau;
    *dp = dv;
}

// Clipped softmax only: add a key tile's terms to D (a pass before the dq and dk/dv passes; the slot's term comes
// from flash_clipped_D_slot). The tile's rows are KS apart, as in flash_row_tile.
template <int HS, int KS = HS, typename F>
SK_HD inline void flash_clipped_D_tile(FlashGradRow<HS, F>* r, const AttnSpec& spec, const F* ks, const F* vs, int k0,
                                       int kn, F tau, int T) {
    static_assert(KS >= HS, "a staged row holds HS values");
    int j0, j1;
    flash_tile_span(r->lo, r->hi, k0, kn, &j0, &j1);
    for (int j = j0; j < j1; j++) {
        F s, dp;
        flash_grad_terms(r, ks + (size_t)(j - k0) * KS, vs + (size_t)(j - k0) * KS, j, tau, &s, &dp);
        r->D += attn_stream_clipped_dterm(spec, r->st, s, dp, T);
    }
}

// dO . v* of the slot (0 without a value)
template <int HS, typename F>
SK_HD inline F flash_slot_dp(const FlashGradRow<HS, F>* r, const F* v_slot) {
    F dp = 0;
    if (v_slot)
        for (int d = 0; d < HS; d++) dp = sk_fma(r->dout[d], v_slot[d], dp);
    return dp;
}

// Clipped softmax only: add the slot's term (score s_slot, value v_slot or null) to D, before the key tiles.
template <int HS, typename F>
SK_HD inline void flash_clipped_D_slot(FlashGradRow<HS, F>* r, const AttnSpec& spec, F s_slot, const F* v_slot, int T) {
    r->D += attn_stream_clipped_dterm(spec, r->st, s_slot, flash_slot_dp(r, v_slot), T);
}

// The slot entry's ds_* and p_* (score s_slot, value v_slot or null), once D is complete.
template <int HS, typename F>
SK_HD inline void flash_dq_slot(const FlashGradRow<HS, F>* r, const AttnSpec& spec, F s_slot, const F* v_slot, int T,
                                F* ds_slot, F* p_slot) {
    *ds_slot = attn_stream_dscore(spec, r->st, s_slot, flash_slot_dp(r, v_slot), r->D, T);
    *p_slot = attn_stream_weight(spec, r->st, s_slot, T);
}

// dq_t over one key tile (keys k0 .. k0 + kn - 1 at ks, vs; rows KS apart, as in flash_row_tile), in two sweeps:
// every key's tau ds_tj into g (kn floats of scratch), then dq_t += g_j k_j, j in order. (In one sweep nvcc keeps a
// key's HS values in registers from its score to its dq update, which with q, dO and dq spills at HS 64.)
template <int HS, int KS = HS, typename F>
SK_HD inline void flash_dq_tile(FlashGradRow<HS, F>* r, const AttnSpec& spec, const F* ks, const F* vs, int k0, int kn,
                                F tau, int T, F* g) {
    static_assert(KS >= HS, "a staged row holds HS values");
    int j0, j1;
    flash_tile_span(r->lo, r->hi, k0, kn, &j0, &j1);
    for (int j = j0; j < j1; j++) {
        F s, dp;
        flash_grad_terms(r, ks + (size_t)(j - k0) * KS, vs + (size_t)(j - k0) * KS, j, tau, &s, &dp);
        g[j - j0] = attn_stream_dscore(spec, r->st, s, dp, r->D, T) * tau;
    }
    for (int j = j0; j < j1; j++) {
        const F* kj = ks + (size_t)(j - k0) * KS;
        for (int d = 0; d < HS; d++) r->dq[d] = sk_fma(g[j - j0], kj[d], r->dq[d]);
    }
}

// dk_j and dv_j (HS values each, accumulated) of key j (its rows kj, vj) over a tile of query rows rows[0..n):
// the rows that see j, in order.
template <int HS, typename F>
SK_HD inline void flash_dkv_tile(F* dk, F* dv, const AttnSpec& spec, const F* kj, const F* vj, int j,
                                 const FlashGradRow<HS, F>* rows, int n, F tau, int T) {
    for (int i = 0; i < n; i++) {
        const FlashGradRow<HS, F>* r = rows + i;
        if (j < r->lo || j >= r->hi) continue;
        F s, dp;
        flash_grad_terms(r, kj, vj, j, tau, &s, &dp);
        F g = attn_stream_dscore(spec, r->st, s, dp, r->D, T) * tau, p = attn_stream_weight(spec, r->st, s, T);
        for (int d = 0; d < HS; d++) {
            dk[d] = sk_fma(g, r->q[d], dk[d]);
            dv[d] = sk_fma(p, r->dout[d], dv[d]);
        }
    }
}

// The query rows that may see some key of the key tile [j0, j1).
SK_HD inline void flash_tile_queries(const AttnSpec& spec, int j0, int j1, int T, int* lo, int* hi) {
    flash_interval_hull(attn_visible_queries, spec, j0, j1, T, lo, hi);
}
