// data/debug_state.h: the debug state, one reference forward/backward for --check-state and the tests.
//
// version 2 = llm.c's format (train_gpt2.py write_state), byte for byte: 256 x int32 header [0] 20240327 [1] 2 [2] B
//   [3] T; then inputs int32[B*T], targets int32[B*T], logits float32[B*T*V] (unpadded V), loss float32, and the
//   gradients of every parameter float32[num_params] in model-file order (padded vocab rows zero).
// version 3 = sinkscope, for any configuration: header [0] 20240327 [1] 3 [2] B [3] T [4] V [5] num_params
//   [6] n_steps [7] lr [8] beta1 [9] beta2 [10] adam eps [11] weight decay [12] grad clip (floats as float32 bits);
//   the same arrays as version 2, then losses float32[n_steps]: a loss curve of n_steps AdamW steps on this batch
//   from the loaded weights (losses[i] = loss before update i; clip when the global norm exceeds grad clip; weight decay
//   on every parameter; constant lr; bias correction with t = i+1).
#pragma once
#include <vector>

#include "file_io.h"

#define STATE_MAGIC 20240327

struct DebugState {
    int version = 0, B = 0, T = 0, n_steps = 0;
    float lr = 0, beta1 = 0, beta2 = 0, adam_eps = 0, weight_decay = 0, grad_clip = 0;
    std::vector<int> inputs, targets;
    std::vector<float> logits, grads, losses;
    float loss = 0;
};

// Reads a debug state for a model with vocabulary V and num_params parameters (taken from the loaded checkpoint).
static inline DebugState read_debug_state(const std::string& path, int V, size_t num_params) {
    const char* p = path.c_str();
    FileBytes fb = read_file_bytes(path, "debug state");
    const int32_t* h = file_header(fb, "debug state");
    if (h[0] != STATE_MAGIC)
        fail("debug state '%s': magic is %d, expected %d (not a debug state)", p, h[0], STATE_MAGIC);
    DebugState s;
    s.version = h[1];
    if (s.version != 2 && s.version != 3) fail("debug state '%s': version is %d, expected 2 (llm.c) or 3", p, h[1]);
    s.B = h[2];
    s.T = h[3];
    if (s.B <= 0 || s.T <= 0 || (long long)s.B * s.T > (1 << 28))
        fail("debug state '%s': B = %d, T = %d are not valid sizes (corrupt header)", p, s.B, s.T);
    if (s.version == 3) {
        if (h[4] != V) fail("debug state '%s': vocab is %d but the model's is %d (state for another model?)", p, h[4], V);
        if ((size_t)h[5] != num_params)
            fail("debug state '%s': %d parameters but the model has %zu (state for another model?)", p, h[5], num_params);
        s.n_steps = h[6];
        if (s.n_steps < 0 || s.n_steps > 100000) fail("debug state '%s': n_steps %d is out of range", p, s.n_steps);
        s.lr = header_float(h, 7); s.beta1 = header_float(h, 8); s.beta2 = header_float(h, 9);
        s.adam_eps = header_float(h, 10); s.weight_decay = header_float(h, 11); s.grad_clip = header_float(h, 12);
    }
    size_t BT = (size_t)s.B * s.T;
    size_t expect = 1024 + BT * 8 + BT * V * 4 + 4 + num_params * 4 + (size_t)s.n_steps * 4;
    if (fb.bytes.size() != expect)
        fail("debug state '%s': %zu bytes, expected %zu for B %d, T %d, V %d, %zu parameters (truncated, or a state "
             "for another model)", p, fb.bytes.size(), expect, s.B, s.T, V, num_params);
    const char* at = fb.bytes.data() + 1024;
    auto take = [&](void* dst, size_t bytes) { memcpy(dst, at, bytes); at += bytes; };
    s.inputs.resize(BT); s.targets.resize(BT); s.logits.resize(BT * V); s.grads.resize(num_params);
    s.losses.resize(s.n_steps);
    take(s.inputs.data(), BT * 4);
    take(s.targets.data(), BT * 4);
    take(s.logits.data(), BT * V * 4);
    take(&s.loss, 4);
    take(s.grads.data(), num_params * 4);
    take(s.losses.data(), (size_t)s.n_steps * 4);
    for (size_t i = 0; i < BT; i++)
        if (s.inputs[i] < 0 || s.inputs[i] >= V || s.targets[i] < 0 || s.targets[i] >= V)
            fail("debug state '%s': token %zu (input %d, target %d) is outside the vocabulary of %d", p, i,
                 s.inputs[i], s.targets[i], V);
    return s;
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
