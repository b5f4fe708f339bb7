// kernels/attention_flash.cuh: the per-row work of a flash-style attention forward, for every variant.
//
//   y_t = p_* v* + sum_j p_tj v_j,  p_t = the row map of [s_*, s_lo .. s_hi-1],  s_tj = tau q_t . k_j
//
// computed key tile by key tile with the streaming forms of attention_variants.cuh: a row never holds more than one
// tile of scores. CPU twin: attention_forward in train_gpt_cpu.cpp (the row form, attn_row_forward).
//
// What it is: host-and-device functions for one query row (its query, output accumulator and row state) and one
// query tile (the key interval its rows see). A kernel stages each key tile of K and V in shared memory and calls
// flash_row_tile from every thread; test_variants.cpp runs the same functions on the CPU over random shapes, every row
// map, slot and mask, against the row form. The kernel that uses them is version 2 of dev/cuda/attention_forward.cu.
// What it is not: the kernel (the staging, the synchronisation and the launch are the kernel's), nor ALiBi or the
// feature maps (they change the scores, not this structure).
#pragma once
#include "../attention_variants.cuh"

// The keys any row of the query tile [t0, t1) may see: one interval, since each row's keys are one interval and
// lo and hi never decrease with t. The tile loop starts at lo rounded down to a multiple of `tile`.
SK_HD inline void flash_tile_keys(const AttnSpec& spec, int t0, int t1, int T, int* lo, int* hi) {
    int lo0, hi0, lo1, hi1;
    attn_visible_keys(spec, t0, T, &lo0, &hi0);
    attn_visible_keys(spec, t1 - 1, T, &lo1, &hi1);
    *lo = lo0 < lo1 ? lo0 : lo1;
    *hi = hi0 > hi1 ? hi0 : hi1;
}

// One query row. HS, the head size, sizes the registers.
template <int HS>
struct FlashRow {
    float q[HS], acc[HS];
    AttnStreamState<float> st;
    int lo, hi;  // the row's visible keys
};

// Start row t: load its query (HS values at q), empty its state. Then, for each pass (flash_passes), the slot
// (flash_row_slot, when the variant has one) and every key tile in order (flash_row_tile); then flash_row_finish.
template <int HS>
SK_HD inline void flash_row_begin(FlashRow<HS>* r, const AttnSpec& spec, const float* q, int t, int T) {
    for (int d = 0; d < HS; d++) r->q[d] = q[d];
    for (int d = 0; d < HS; d++) r->acc[d] = 0;
    r->st = attn_stream_init<float>(spec);
    attn_visible_keys(spec, t, T, &r->lo, &r->hi);
}

// The slot's entry (when the variant has one) in the given pass: 0 = the one pass (or the statistics pass of a
// two-pass map), 1 = the weights pass of a two-pass map.
template <int HS>
SK_HD inline void flash_row_slot(FlashRow<HS>* r, const AttnSpec& spec, float s_slot, const float* v_slot, int pass,
                                 int T) {
    if (pass == 0)
        attn_stream_tile(spec, &r->st, &s_slot, v_slot, HS, 1, HS, attn_stream_one_pass(spec) ? r->acc : nullptr);
    else
        attn_stream_accumulate(spec, r->st, &s_slot, v_slot, HS, 1, HS, r->acc, T);
}

// One key tile: keys k0 .. k0 + kn - 1, their K and V rows at ks and vs (stride HS: the staged tile). Only the row's
// own visible keys in the tile count. `s` holds kn floats of scratch.
template <int HS>
SK_HD inline void flash_row_tile(FlashRow<HS>* r, const AttnSpec& spec, const float* ks, const float* vs, int k0,
                                 int kn, float tau, int pass, int T, float* s) {
    int j0 = r->lo > k0 ? r->lo : k0, j1 = r->hi < k0 + kn ? r->hi : k0 + kn;
    if (j0 >= j1) return;
    for (int j = j0; j < j1; j++) {
        const float* kj = ks + (size_t)(j - k0) * HS;
        float dot = 0;
        for (int d = 0; d < HS; d++) dot = sk_fma(r->q[d], kj[d], dot);
        s[j - j0] = dot * tau;
    }
    const float* v = vs + (size_t)(j0 - k0) * HS;
    if (pass == 0)
        attn_stream_tile(spec, &r->st, s, v, HS, j1 - j0, HS, attn_stream_one_pass(spec) ? r->acc : nullptr);
    else
        attn_stream_accumulate(spec, r->st, s, v, HS, j1 - j0, HS, r->acc, T);
}

// The row's output (HS values), after every tile of every pass.
template <int HS>
SK_HD inline void flash_row_finish(const FlashRow<HS>* r, const AttnSpec& spec, float* y) {
    float f = attn_stream_out_scale(spec, r->st);
    for (int d = 0; d < HS; d++) y[d] = r->acc[d] * f;
}

// How many passes over the keys the variant takes: 1, or 2 for clipped softmax (statistics, then weights).
SK_HD inline int flash_passes(const AttnSpec& spec) { return attn_stream_one_pass(spec) ? 1 : 2; }
