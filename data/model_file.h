// data/model_file.h: the model file (checkpoint weights), llm.c-compatible, shared by both trainers.
//
// Layout: a 256 x int32 little-endian header, then every parameter tensor as float32 in the order of config.h's
// ParamId table (absent tensors take no space).
//   version 3 = llm.c's GPT-2 file, byte for byte: [0] 20240326 [1] 3 [2] maxT [3] V [4] L [5] NH [6] C [7] Vp.
//     It implies the gpt2 architecture (LayerNorm eps 1e-5, pre-norm, tanh-GELU, F = 4C, learned positions, tied,
//     biases, causal softmax). llm.c checkpoints load unchanged; ours of that architecture load in llm.c.
//   version 4 = sinkscope, any configuration, self-describing: [0..7] as version 3, [8] F [9] norm [10] placement
//     [11] ffn [12] positions [13] tied [14] biases [15] rope base (float32 bits) [16] norm eps (float32 bits)
//     [17] attention variant [18] mask; [19..255] zero (reserved for variant parameters).
//   The writer picks version 3 exactly when the configuration is the gpt2 architecture.
#pragma once
#include <vector>

#include "file_io.h"

#define MODEL_MAGIC 20240326
#define MODEL_VERSION_LLMC 3
#define MODEL_VERSION_SINKSCOPE 4

static inline void model_header_from_config(const ModelConfig& c, int32_t h[256]) {
    memset(h, 0, 256 * sizeof(int32_t));
    h[0] = MODEL_MAGIC;
    h[1] = config_is_gpt2_arch(c) ? MODEL_VERSION_LLMC : MODEL_VERSION_SINKSCOPE;
    h[2] = c.max_seq_len; h[3] = c.vocab_size; h[4] = c.num_layers; h[5] = c.num_heads; h[6] = c.channels;
    h[7] = c.padded_vocab_size;
    if (h[1] == MODEL_VERSION_LLMC) return;
    h[8] = c.ffn_hidden; h[9] = c.norm; h[10] = c.placement; h[11] = c.ffn; h[12] = c.positions; h[13] = c.tied;
    h[14] = c.bias; h[15] = float_bits(c.rope_base); h[16] = float_bits(c.norm_eps); h[17] = c.attn.variant;
    h[18] = c.attn.mask;
}

static inline ModelConfig model_config_from_header(const int32_t* h, const std::string& path) {
    const char* p = path.c_str();
    if (h[0] != MODEL_MAGIC)
        fail("model file '%s': magic is %d, expected %d (not a model checkpoint; a state_*.bin or debug state?)", p,
             h[0], MODEL_MAGIC);
    if (h[1] != MODEL_VERSION_LLMC && h[1] != MODEL_VERSION_SINKSCOPE)
        fail("model file '%s': version is %d, expected 3 (llm.c fp32) or 4 (sinkscope); llm.c's bf16 files (version 5) "
             "must be exported as fp32", p, h[1]);
    ModelConfig c = make_config(h[2], h[3], h[4], h[5], h[6], 4 * h[6], NORM_LAYERNORM, PLACE_PRE, FFN_GELU,
                                POS_LEARNED, 1, 1, INIT_GPT2);
    for (int i = 2; i <= 7; i++)
        if (h[i] <= 0) fail("model file '%s': header field %d is %d, expected a positive size (corrupt header)", p, i, h[i]);
    if (h[1] == MODEL_VERSION_SINKSCOPE) {
        c.ffn_hidden = h[8]; c.norm = h[9]; c.placement = h[10]; c.ffn = h[11]; c.positions = h[12]; c.tied = h[13];
        c.bias = h[14]; c.rope_base = header_float(h, 15); c.norm_eps = header_float(h, 16); c.attn.variant = h[17];
        c.attn.mask = h[18];
        if (c.ffn_hidden <= 0 || (c.tied != 0 && c.tied != 1) || (c.bias != 0 && c.bias != 1) || c.attn.mask < 0 ||
            c.attn.mask >= MASK_NUM_KINDS)
            fail("model file '%s': an architecture field in the header is out of range (corrupt header)", p);
    }
    config_finalize(&c);
    if (c.padded_vocab_size != h[7])
        fail("model file '%s': padded vocab is %d, expected %d for vocab %d (multiple of 128)", p, h[7],
             c.padded_vocab_size, c.vocab_size);
    validate_model_config(c, p);
    return c;
}

// Reads a model file: its config and all parameters (checked against the file length before anything is trusted).
static inline ModelConfig read_model_file(const std::string& path, std::vector<float>* params) {
    FileBytes fb = read_file_bytes(path, "model file");
    ModelConfig c = model_config_from_header(file_header(fb, "model file"), path);
    size_t n = param_count(c);
    if (fb.bytes.size() != 1024 + n * sizeof(float))
        fail("model file '%s': %zu bytes, but its header describes %zu parameters = %zu bytes (truncated or corrupt)",
             path.c_str(), fb.bytes.size(), n, 1024 + n * sizeof(float));
    params->resize(n);
    memcpy(params->data(), fb.bytes.data() + 1024, n * sizeof(float));
    return c;
}

static inline void write_model_file(const std::string& path, const ModelConfig& c, const float* params) {
    int32_t h[256];
    model_header_from_config(c, h);
    AtomicWriter w = atomic_open(path);
    atomic_write(&w, h, sizeof h);
    atomic_write(&w, params, param_count(c) * sizeof(float));
    atomic_commit(&w);
}
