// data/train_state.h: the training state file state_%08d.bin, the half of a checkpoint that --resume needs besides the
// weights (model_%08d.bin, data/model_file.h). Shared by both trainers.
//
// Layout: a 256 x int32 little-endian header [0] 20240528 [1] 1 [2] step [3] B [4] T [5] total batch [6..7] seed
// [8..9] loader epoch [10..11] loader index [12..13] rng [14..15] num_params (64-bit values as low, high int32); then
// AdamW's m and v as float32[num_params] each.
// What it is not: the weights, or the run's flags (only the four that decide the batch order, which a resume must repeat).
// Readers: parse_train_state takes a ByteSource (a file, or memory for dev/fuzz/fuzz_train_state.cpp); every header
// field is range-checked, the parameter count must be the model's and the length must match before anything is read;
// m must be finite and v finite and >= 0 (a negative v would make AdamW's sqrt(v) a NaN). The writer refuses
// non-finite moments, so a diverged run cannot save a state that poisons its resume.
#pragma once
#include <math.h>
#include <string>

#include "model_file.h"

#define TRAIN_STATE_VERSION 1

struct TrainState {
    int step = 0, B = 0, T = 0, total_batch = 0;
    uint64_t seed = 0, epoch = 0, index = 0, rng = 0;
};

// Parses a training state for a model of num_params parameters, filling adam_m and adam_v (num_params floats each).
static inline TrainState parse_train_state(const ByteSource& src, const ModelConfig& c, size_t num_params,
                                           float* adam_m, float* adam_v) {
    const char* p = src.path.c_str();
    int32_t h[256];
    source_header(src, h);
    if (h[0] != TRAIN_STATE_MAGIC)
        fail("training state '%s': magic (header[0]) is %d, expected %d (%s)", p, h[0], TRAIN_STATE_MAGIC,
             describe_magic(h[0]));
    if (h[1] != TRAIN_STATE_VERSION)
        fail("training state '%s': version (header[1]) is %d, expected %d (written by another sinkscope version?)", p,
             h[1], TRAIN_STATE_VERSION);
    TrainState s;
    s.step = h[2]; s.B = h[3]; s.T = h[4]; s.total_batch = h[5];
    s.seed = header_get_u64(h, 6); s.epoch = header_get_u64(h, 8); s.index = header_get_u64(h, 10);
    s.rng = header_get_u64(h, 12);
    if (s.step < 0) fail("training state '%s': step (header[2]) is %d, expected >= 0 (corrupt header)", p, s.step);
    if (s.B < 1) fail("training state '%s': B (header[3]) is %d, expected >= 1 (corrupt header)", p, s.B);
    if (s.T < 1 || s.T > c.max_seq_len)
        fail("training state '%s': T (header[4]) is %d, expected 1..%d, the model's max_seq_len (corrupt header, or a "
             "state for another model)", p, s.T, c.max_seq_len);
    if (s.total_batch < 1 || s.total_batch % ((int64_t)s.B * s.T) != 0)
        fail("training state '%s': total batch (header[5]) is %d, expected a positive multiple of B x T = %lld "
             "(corrupt header)", p, s.total_batch, (long long)s.B * s.T);
    uint64_t n = header_get_u64(h, 14);
    if (n != num_params)
        fail("training state '%s': parameter count (header[14..15]) is %llu, but its model file has %zu (the model "
             "and state files of different checkpoints?)", p, (unsigned long long)n, num_params);
    uint64_t expect = 1024 + 2 * (uint64_t)num_params * sizeof(float);
    if (src.size != expect)
        fail("training state '%s': %zu bytes, expected %llu = header + AdamW m and v for %zu parameters (truncated; "
             "resume from an earlier checkpoint)", p, src.size, (unsigned long long)expect, num_params);
    source_read(src, 1024, adam_m, num_params * sizeof(float), "AdamW m");
    source_read(src, 1024 + num_params * sizeof(float), adam_v, num_params * sizeof(float), "AdamW v");
    std::string bad = first_nonfinite_param(c, adam_m);
    if (!bad.empty())
        fail("training state '%s': AdamW m holds a non-finite value at %s (a diverged run; resume from an earlier "
             "checkpoint)", p, bad.c_str());
    bad = first_nonfinite_param(c, adam_v);
    if (!bad.empty())
        fail("training state '%s': AdamW v holds a non-finite value at %s (a diverged run; resume from an earlier "
             "checkpoint)", p, bad.c_str());
    for (size_t i = 0; i < num_params; i++)
        if (adam_v[i] < 0)
            fail("training state '%s': AdamW v[%zu] is %g, expected >= 0 (a second moment cannot be negative: corrupt "
                 "file; resume from an earlier checkpoint)", p, i, adam_v[i]);
    return s;
}

static inline TrainState read_train_state(const std::string& path, const ModelConfig& c, size_t num_params,
                                          float* adam_m, float* adam_v) {
    ByteSource src(path, "training state");
    return parse_train_state(src, c, num_params, adam_m, adam_v);
}

static inline void write_train_state(const std::string& path, const TrainState& s, const ModelConfig& c,
                                     size_t num_params, const float* adam_m, const float* adam_v) {
    for (const float* x : {adam_m, adam_v}) {
        std::string bad = first_nonfinite_param(c, x);
        if (!bad.empty())
            fail("refusing to write training state '%s': AdamW %s holds a non-finite value at %s (the run diverged; "
                 "the previous checkpoints are untouched)", path.c_str(), x == adam_m ? "m" : "v", bad.c_str());
    }
    int32_t h[256] = {0};
    h[0] = TRAIN_STATE_MAGIC; h[1] = TRAIN_STATE_VERSION; h[2] = s.step; h[3] = s.B; h[4] = s.T; h[5] = s.total_batch;
    header_put_u64(h, 6, s.seed); header_put_u64(h, 8, s.epoch); header_put_u64(h, 10, s.index);
    header_put_u64(h, 12, s.rng); header_put_u64(h, 14, num_params);
    AtomicWriter w = atomic_open(path);
    atomic_write(&w, h, sizeof h);
    atomic_write(&w, adam_m, num_params * sizeof(float));
    atomic_write(&w, adam_v, num_params * sizeof(float));
    atomic_commit(&w);
}
