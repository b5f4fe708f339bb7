// common/debug_state.h: the debug state, one reference forward/backward for --check-state and the tests.
//
// version 2 = llm.c's format (train_gpt2.py write_state), byte for byte: 256 x int32 header [0] 20240327 [1] 2 [2] B
//   [3] T; then inputs int32[B*T], targets int32[B*T], logits float32[B*T*V] (unpadded V), loss float32, and the
//   gradients of every parameter float32[num_params] in model-file order (padded vocab rows zero).
// version 3 = sinkscope, for any configuration: header [0] 20240327 [1] 3 [2] B [3] T [4] V [5] num_params
//   [6] n_steps [7] lr [8] beta1 [9] beta2 [10] adam eps [11] weight decay [12] grad clip (floats as float32 bits);
//   the same arrays as version 2, then losses float32[n_steps]: a loss curve of n_steps AdamW steps on this batch
//   from the loaded weights (losses[i] = loss before update i; clip when the global norm exceeds grad clip; weight decay
//   on every parameter; constant lr; bias correction with t = i+1).
// Readers: parse_debug_state takes a ByteSource (a file, or memory for dev/fuzz/fuzz_debug_state.cpp); every header
// field is range-checked and the file length must match the header exactly before anything is allocated; token ids are
// checked against the model's vocabulary and every reference number must be finite (a NaN would compare as "ok").
#pragma once
#include <math.h>
#include <vector>

#include "file_io.h"

// Largest B*T of a debug state (2^28): with V <= 2^20 every array size stays below 2^50 bytes, far inside 64 bits.
#define DEBUG_STATE_MAX_TOKENS (1 << 28)
#define DEBUG_STATE_MAX_STEPS 100000

struct DebugState {
    int version = 0, B = 0, T = 0, n_steps = 0;
    float lr = 0, beta1 = 0, beta2 = 0, adam_eps = 0, weight_decay = 0, grad_clip = 0;
    std::vector<int> inputs, targets;
    std::vector<float> logits, grads, losses;
    float loss = 0;
};

static inline void debug_state_require_finite(const float* x, size_t n, const char* path, const char* field) {
    for (size_t i = 0; i < n; i++)
        if (!std::isfinite(x[i]))
            fail("debug state '%s': %s[%zu] is %g, expected a finite number (a reference must be finite; regenerate "
                 "the state)", path, field, i, x[i]);
}

static inline void debug_state_require_tokens(const std::vector<int>& x, int V, const char* path, const char* field) {
    for (size_t i = 0; i < x.size(); i++)
        if (x[i] < 0 || x[i] >= V)
            fail("debug state '%s': %s[%zu] is %d, outside the model's vocabulary [0, %d) (a state for another "
                 "model? pass the model file it was made with)", path, field, i, x[i], V);
}

// One float hyperparameter of a version-3 header: finite and in [lo, hi] (hi_open: strictly below hi).
static inline float debug_state_hyper(const int32_t* h, int i, const char* name, float lo, float hi, bool hi_open,
                                      const char* path) {
    float x = header_float(h, i);
    if (!std::isfinite(x) || x < lo || x > hi || (hi_open && x == hi))
        fail("debug state '%s': %s (header[%d]) is %g, expected a finite number in [%g, %g%c (corrupt header)", path,
             name, i, x, lo, hi, hi_open ? ')' : ']');
    return x;
}

// Parses a debug state for a model with vocabulary V and num_params parameters (taken from the loaded checkpoint).
static inline DebugState parse_debug_state(const ByteSource& src, int V, size_t num_params) {
    const char* p = src.path.c_str();
    int32_t h[256];
    source_header(src, h);
    if (h[0] != STATE_MAGIC)
        fail("debug state '%s': magic (header[0]) is %d, expected %d (%s)", p, h[0], STATE_MAGIC, describe_magic(h[0]));
    DebugState s;
    s.version = h[1];
    if (s.version != 2 && s.version != 3)
        fail("debug state '%s': version (header[1]) is %d, expected 2 (llm.c) or 3 (sinkscope)", p, h[1]);
    s.B = h[2];
    s.T = h[3];
    if (s.B < 1 || s.B > DEBUG_STATE_MAX_TOKENS)
        fail("debug state '%s': B (header[2]) is %d, expected 1..%d (corrupt header)", p, s.B, DEBUG_STATE_MAX_TOKENS);
    if (s.T < 1 || s.T > DEBUG_STATE_MAX_TOKENS)
        fail("debug state '%s': T (header[3]) is %d, expected 1..%d (corrupt header)", p, s.T, DEBUG_STATE_MAX_TOKENS);
    if ((int64_t)s.B * s.T > DEBUG_STATE_MAX_TOKENS)
        fail("debug state '%s': B x T (header[2] x header[3]) is %d x %d = %lld tokens, expected at most %d (corrupt "
             "header)", p, s.B, s.T, (long long)s.B * s.T, DEBUG_STATE_MAX_TOKENS);
    if (s.version == 3) {
        if (h[4] != V)
            fail("debug state '%s': vocab (header[4]) is %d but the model's is %d (a state for another model? pass the "
                 "model file it was made with)", p, h[4], V);
        if (h[5] < 0 || (size_t)h[5] != num_params)
            fail("debug state '%s': parameter count (header[5]) is %d but the model has %zu (a state for another "
                 "model? pass the model file it was made with)", p, h[5], num_params);
        s.n_steps = h[6];
        if (s.n_steps < 0 || s.n_steps > DEBUG_STATE_MAX_STEPS)
            fail("debug state '%s': n_steps (header[6]) is %d, expected 0..%d (corrupt header)", p, s.n_steps,
                 DEBUG_STATE_MAX_STEPS);
        s.lr = debug_state_hyper(h, 7, "lr", 0, 1e3f, false, p);
        s.beta1 = debug_state_hyper(h, 8, "beta1", 0, 1, true, p);
        s.beta2 = debug_state_hyper(h, 9, "beta2", 0, 1, true, p);
        s.adam_eps = debug_state_hyper(h, 10, "adam eps", 1e-30f, 1, false, p);
        s.weight_decay = debug_state_hyper(h, 11, "weight decay", 0, 1e3f, false, p);
        s.grad_clip = debug_state_hyper(h, 12, "grad clip", 0, 1e30f, false, p);
    }
    uint64_t BT = (uint64_t)s.B * s.T;
    uint64_t expect = 1024 + BT * 8 + BT * (uint64_t)V * 4 + 4 + (uint64_t)num_params * 4 + (uint64_t)s.n_steps * 4;
    if (src.size != expect)
        fail("debug state '%s': %zu bytes, expected %llu for B %d, T %d, V %d, %zu parameters and %d loss-curve steps "
             "(truncated, or a state for another model)", p, src.size, (unsigned long long)expect, s.B, s.T, V,
             num_params, s.n_steps);
    check_fits_in_memory(src.size, "debug state", src.path, "a smaller B x T");
    s.inputs.resize(BT); s.targets.resize(BT); s.logits.resize(BT * V); s.grads.resize(num_params);
    s.losses.resize(s.n_steps);
    size_t at = 1024;
    auto take = [&](void* dst, size_t bytes, const char* field) { source_read(src, at, dst, bytes, field); at += bytes; };
    take(s.inputs.data(), BT * 4, "inputs");
    take(s.targets.data(), BT * 4, "targets");
    take(s.logits.data(), BT * V * 4, "logits");
    take(&s.loss, 4, "loss");
    take(s.grads.data(), num_params * 4, "gradients");
    take(s.losses.data(), (size_t)s.n_steps * 4, "losses");
    debug_state_require_tokens(s.inputs, V, p, "inputs");
    debug_state_require_tokens(s.targets, V, p, "targets");
    debug_state_require_finite(s.logits.data(), s.logits.size(), p, "logits");
    debug_state_require_finite(&s.loss, 1, p, "loss");
    debug_state_require_finite(s.grads.data(), s.grads.size(), p, "gradients");
    debug_state_require_finite(s.losses.data(), s.losses.size(), p, "losses");
    return s;
}

static inline DebugState read_debug_state(const std::string& path, int V, size_t num_params) {
    ByteSource src(path, "debug state");
    return parse_debug_state(src, V, num_params);
}

static inline void write_debug_state(const std::string& path, const DebugState& s, int V) {
    int32_t h[256] = {0};
    h[0] = STATE_MAGIC; h[1] = s.version; h[2] = s.B; h[3] = s.T;
    if (s.version == 3) {
        h[4] = V; h[5] = (int32_t)s.grads.size(); h[6] = s.n_steps; h[7] = float_bits(s.lr);
        h[8] = float_bits(s.beta1); h[9] = float_bits(s.beta2); h[10] = float_bits(s.adam_eps);
        h[11] = float_bits(s.weight_decay); h[12] = float_bits(s.grad_clip);
    }
    AtomicWriter w = atomic_open(path);
    atomic_write(&w, h, sizeof h);
    atomic_write(&w, s.inputs.data(), s.inputs.size() * 4);
    atomic_write(&w, s.targets.data(), s.targets.size() * 4);
    atomic_write(&w, s.logits.data(), s.logits.size() * 4);
    atomic_write(&w, &s.loss, 4);
    atomic_write(&w, s.grads.data(), s.grads.size() * 4);
    if (s.version == 3) atomic_write(&w, s.losses.data(), s.losses.size() * 4);
    atomic_commit(&w);
}
