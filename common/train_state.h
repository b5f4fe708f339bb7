// common/train_state.h: the training state file state_%08d.bin, the half of a checkpoint that --resume needs besides
// the weights (model_%08d.bin, common/model_file.h). Shared by both trainers.
//
// Layout: a 256 x int32 little-endian header [0] 20240528 [1] 2 (3 with unlogged records) [2] step [3] B [4] T
// [5] total batch [6..7] seed [8..9] loader epoch [10..11] loader index [12..13] rng [14..15] num_params [16..17] the
// checksum of the model file saved with it (FNV-1a 64 of its parameter bytes) [18..19] this file's own checksum
// (FNV-1a 64 of everything after the header) [20] the length of the config text [21] the length of the unlogged
// records (64-bit values as low, high int32); then AdamW's m and v as float32[num_params] each, then the config text: the run's config record (its flags
// as JSON, the first line of its log), which --resume restores, then the unlogged records: log lines the run could
// not write (a full disk) before this checkpoint, which the run that resumes it writes first (version 3; usually there
// are none, and the file is version 2, byte for byte what it was before the field existed). Version 1 (no checksums,
// no config) is still read.
// What it is not: the weights (model_%08d.bin, saved beside it).
// Readers: parse_train_state takes a ByteSource (a file, or memory for dev/fuzz/fuzz_train_state.cpp); every header
// field is range-checked, the parameter count must be the model's and the length must match before anything is read;
// m must be finite and v finite and >= 0 (a negative v would make AdamW's sqrt(v) a NaN). The writer refuses
// non-finite moments, so a diverged run cannot save a state that poisons its resume.
#pragma once
#include <math.h>
#include <string>

#include "model_file.h"

#define TRAIN_STATE_VERSION 3  // written only when there are unlogged records; 2 otherwise
#define TRAIN_STATE_MAX_CONFIG (1 << 20)
#define TRAIN_STATE_MAX_UNLOGGED (1 << 26)

struct TrainState {
    int step = 0, B = 0, T = 0, total_batch = 0;
    uint64_t seed = 0, epoch = 0, index = 0, rng = 0;
    int version = TRAIN_STATE_VERSION;
    uint64_t model_checksum = 0;  // version 2: of the model file's parameters
    std::string config;           // version 2: the run's config record (JSON)
    std::string unlogged;         // version 3: whole log lines ('\n' after each) the log lacks, up to this step
};

// The checksum a state records for its model file: of the parameters as stored (float32, file order).
static inline uint64_t params_checksum(const float* params, size_t n) { return fnv1a64(params, n * sizeof(float)); }

// Parses a training state for a model of num_params parameters, filling adam_m and adam_v (num_params floats each).
static inline TrainState parse_train_state(const ByteSource& src, const ModelConfig& c, size_t num_params,
                                           float* adam_m, float* adam_v) {
    const char* p = src.path.c_str();
    int32_t h[256];
    source_header(src, h);
    if (h[0] != TRAIN_STATE_MAGIC)
        fail("training state '%s': magic (header[0]) is %d, expected %d (%s)", p, h[0], TRAIN_STATE_MAGIC,
             describe_magic(h[0]));
    if (h[1] < 1 || h[1] > TRAIN_STATE_VERSION)
        fail("training state '%s': version (header[1]) is %d, expected 1 to %d (written by another sinkscope "
             "version?)", p, h[1], TRAIN_STATE_VERSION);
    TrainState s;
    s.version = h[1];
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
    int config_len = s.version >= 2 ? h[20] : 0;
    if (config_len < 0 || config_len > TRAIN_STATE_MAX_CONFIG)
        fail("training state '%s': config length (header[20]) is %d, expected 0..%d (corrupt header)", p, config_len,
             TRAIN_STATE_MAX_CONFIG);
    int unlogged_len = s.version >= 3 ? h[21] : 0;
    if (unlogged_len < 0 || unlogged_len > TRAIN_STATE_MAX_UNLOGGED)
        fail("training state '%s': unlogged records length (header[21]) is %d, expected 0..%d (corrupt header)", p,
             unlogged_len, TRAIN_STATE_MAX_UNLOGGED);
    uint64_t moments = 2 * (uint64_t)num_params * sizeof(float),
             expect = 1024 + moments + config_len + (uint64_t)unlogged_len;
    if (src.size != expect)
        fail("training state '%s': %zu bytes, expected %llu = header + AdamW m and v for %zu parameters + %d bytes of "
             "config + %d bytes of unlogged records (truncated; resume from an earlier checkpoint)", p, src.size,
             (unsigned long long)expect, num_params, config_len, unlogged_len);
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
    if (s.version >= 2) {
        s.config.resize(config_len);
        source_read(src, 1024 + moments, &s.config[0], config_len, "the config");
        s.unlogged.resize(unlogged_len);
        source_read(src, 1024 + moments + config_len, &s.unlogged[0], unlogged_len, "the unlogged records");
        s.model_checksum = header_get_u64(h, 16);
        uint64_t sum = fnv1a64(adam_m, num_params * sizeof(float));
        sum = fnv1a64(adam_v, num_params * sizeof(float), sum);
        sum = fnv1a64(s.config.data(), s.config.size(), sum);
        sum = fnv1a64(s.unlogged.data(), s.unlogged.size(), sum);
        if (sum != header_get_u64(h, 18))
            fail("training state '%s': its checksum (header[18..19]) does not match its contents (the file was "
                 "changed or damaged after it was written; resume from an earlier checkpoint)", p);
        if (!s.unlogged.empty() && s.unlogged.back() != '\n')
            fail("training state '%s': its unlogged records do not end a line (corrupt file; resume from an earlier "
                 "checkpoint)", p);
    }
    return s;
}

static inline TrainState read_train_state(const std::string& path, const ModelConfig& c, size_t num_params,
                                          float* adam_m, float* adam_v) {
    ByteSource src(path, "training state");
    return parse_train_state(src, c, num_params, adam_m, adam_v);
}

// Writes s with the moments; s.model_checksum must be params_checksum of the model file saved with it.
static inline void write_train_state(const std::string& path, const TrainState& s, const ModelConfig& c,
                                     size_t num_params, const float* adam_m, const float* adam_v) {
    for (const float* x : {adam_m, adam_v}) {
        std::string bad = first_nonfinite_param(c, x);
        if (!bad.empty())
            fail("refusing to write training state '%s': AdamW %s holds a non-finite value at %s (the run diverged; "
                 "the previous checkpoints are untouched)", path.c_str(), x == adam_m ? "m" : "v", bad.c_str());
    }
    int32_t h[256] = {0};
    h[0] = TRAIN_STATE_MAGIC; h[1] = s.unlogged.empty() ? 2 : 3;
    h[2] = s.step; h[3] = s.B; h[4] = s.T; h[5] = s.total_batch;
    header_put_u64(h, 6, s.seed); header_put_u64(h, 8, s.epoch); header_put_u64(h, 10, s.index);
    header_put_u64(h, 12, s.rng); header_put_u64(h, 14, num_params);
    if (s.config.size() > TRAIN_STATE_MAX_CONFIG)
        fail("internal: a config record of %zu bytes does not fit a training state", s.config.size());
    if (s.unlogged.size() > TRAIN_STATE_MAX_UNLOGGED)
        fail("cannot save '%s': %zu bytes of log records the log could not take do not fit a training state (at most "
             "%d); the previous checkpoints are untouched", path.c_str(), s.unlogged.size(), TRAIN_STATE_MAX_UNLOGGED);
    uint64_t sum = fnv1a64(adam_m, num_params * sizeof(float));
    sum = fnv1a64(adam_v, num_params * sizeof(float), sum);
    sum = fnv1a64(s.config.data(), s.config.size(), sum);
    sum = fnv1a64(s.unlogged.data(), s.unlogged.size(), sum);
    header_put_u64(h, 16, s.model_checksum); header_put_u64(h, 18, sum); h[20] = (int32_t)s.config.size();
    h[21] = (int32_t)s.unlogged.size();
    AtomicWriter w = atomic_open(path);
    atomic_write(&w, h, sizeof h);
    atomic_write(&w, adam_m, num_params * sizeof(float));
    atomic_write(&w, adam_v, num_params * sizeof(float));
    atomic_write(&w, s.config.data(), s.config.size());
    atomic_write(&w, s.unlogged.data(), s.unlogged.size());
    atomic_commit(&w);
}
