// common/model_file.h: the model file (checkpoint weights), llm.c-compatible, shared by both trainers.
//
// Layout: a 256 x int32 little-endian header, then every parameter tensor as float32 in the order of config.h's
// ParamId table (absent tensors take no space).
//   version 3 = llm.c's GPT-2 file, byte for byte: [0] 20240326 [1] 3 [2] maxT [3] V [4] L [5] NH [6] C [7] Vp.
//     It implies the gpt2 architecture (LayerNorm eps 1e-5, pre-norm, tanh-GELU, F = 4C, learned positions, tied,
//     biases, causal softmax). llm.c checkpoints load unchanged; ours of that architecture load in llm.c.
//   version 4 = sinkscope, any configuration, self-describing: [0..7] as version 3, [8] F [9] norm [10] placement
//     [11] ffn [12] positions [13] tied [14] biases [15] rope base (float32 bits) [16] norm eps (float32 bits)
//     [17..32] the attention variant (AttnSpec: row map, mask, mask param, normaliser, feature map, slot, v* mode,
//     v* value, value bias, slot shared, sink token, gate, row mass, sigmoid bias, clip zeta, clip alpha; floats as
//     float32 bits; docs/formats.md lists the codes); [33] clip length; [34..255] zero.
//   The writer picks version 3 exactly when the configuration is the gpt2 architecture.
// Readers: parse_model_file takes a ByteSource (a file, or memory for dev/fuzz/fuzz_model_file.cpp). The header's sizes
// are range-checked before any arithmetic uses them, the file length must match the parameter count they imply before
// anything is allocated, and every parameter must be finite. The writer refuses non-finite parameters, so a diverged
// run cannot replace a good checkpoint with a poisoned one.
#pragma once
#include <math.h>
#include <vector>

#include "config.h"
#include "file_io.h"

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
    h[14] = c.bias; h[15] = float_bits(c.rope_base); h[16] = float_bits(c.norm_eps);
    const AttnSpec& a = c.attn;
    h[17] = a.variant; h[18] = a.mask; h[19] = a.mask_param; h[20] = a.normaliser; h[21] = a.phi; h[22] = a.slot;
    h[23] = a.vstar; h[24] = float_bits(a.vstar_value); h[25] = a.value_bias; h[26] = a.slot_shared;
    h[27] = a.sink_token; h[28] = a.gate; h[29] = float_bits(a.row_mass); h[30] = float_bits(a.sigmoid_bias);
    h[31] = float_bits(a.clip_zeta); h[32] = float_bits(a.clip_alpha); h[33] = a.clip_len;
}

// A size field of the header, checked before any arithmetic uses it (V + 127, 4 C and the tensor sizes would
// otherwise overflow on a corrupt header).
static inline int model_header_size(const int32_t* h, int i, const char* name, int max, const char* path) {
    if (h[i] < 1 || h[i] > max)
        fail("model file '%s': %s (header[%d]) is %d, expected 1..%d (corrupt header)", path, name, i, h[i], max);
    return h[i];
}

static inline ModelConfig model_config_from_header(const int32_t* h, const std::string& path) {
    const char* p = path.c_str();
    if (h[0] != MODEL_MAGIC)
        fail("model file '%s': magic (header[0]) is %d, expected %d (%s)", p, h[0], MODEL_MAGIC, describe_magic(h[0]));
    if (h[1] != MODEL_VERSION_LLMC && h[1] != MODEL_VERSION_SINKSCOPE)
        fail("model file '%s': version (header[1]) is %d, expected 3 (llm.c fp32) or 4 (sinkscope); llm.c's bf16 files "
             "(version 5) must be exported as fp32", p, h[1]);
    int maxT = model_header_size(h, 2, "maxT", SK_MAX_SEQ_LEN, p), V = model_header_size(h, 3, "vocab", SK_MAX_VOCAB, p),
        L = model_header_size(h, 4, "layers", SK_MAX_LAYERS, p), NH = model_header_size(h, 5, "heads", SK_MAX_HEADS, p),
        C = model_header_size(h, 6, "channels", SK_MAX_CHANNELS, p);
    ModelConfig c = make_config(maxT, V, L, NH, C, 4 * C, NORM_LAYERNORM, PLACE_PRE, FFN_GELU, POS_LEARNED, 1, 1,
                                INIT_GPT2);
    if (h[1] == MODEL_VERSION_SINKSCOPE) {
        model_header_size(h, 8, "ffn hidden", SK_MAX_FFN_HIDDEN, p);
        c.ffn_hidden = h[8]; c.norm = h[9]; c.placement = h[10]; c.ffn = h[11]; c.positions = h[12]; c.tied = h[13];
        c.bias = h[14]; c.rope_base = header_float(h, 15); c.norm_eps = header_float(h, 16);
        AttnSpec& a = c.attn;
        a.variant = h[17]; a.mask = h[18]; a.mask_param = h[19]; a.normaliser = h[20]; a.phi = h[21]; a.slot = h[22];
        a.vstar = h[23]; a.vstar_value = header_float(h, 24); a.value_bias = h[25]; a.slot_shared = h[26];
        a.sink_token = h[27]; a.gate = h[28]; a.row_mass = header_float(h, 29); a.sigmoid_bias = header_float(h, 30);
        a.clip_zeta = header_float(h, 31); a.clip_alpha = header_float(h, 32); a.clip_len = h[33];
        for (int i : {15, 16, 24, 29, 30, 31, 32})
            if (!isfinite(header_float(h, i)))
                fail("model file '%s': header field %d (a float) is %g, expected a finite number (corrupt header)", p,
                     i, header_float(h, i));
    }
    config_finalize(&c);
    if (c.padded_vocab_size != h[7])
        fail("model file '%s': padded vocab (header[7]) is %d, expected %d for vocab %d (a multiple of 128; corrupt "
             "header)", p, h[7], c.padded_vocab_size, c.vocab_size);
    std::string where = "model file '" + path + "'";
    validate_model_config(c, where.c_str());
    return c;
}

// The first NaN or Inf among values laid out like the parameters (weights, gradients, AdamW moments), named by tensor,
// layer and element, e.g. "qkvw, layer 1, element 37 (nan)"; empty when all are finite.
static inline std::string first_nonfinite_param(const ModelConfig& c, const float* values) {
    size_t sizes[NUM_PARAM_TENSORS], off = 0;
    param_sizes(c, sizes);
    for (int id = 0; id < NUM_PARAM_TENSORS; id++) {
        for (size_t k = 0; k < sizes[id]; k++)
            if (!std::isfinite(values[off + k])) {
                // the per-layer tensors (ln1w .. fcprojb) hold L equal slices
                bool per_layer = id >= P_LN1W && id <= P_FCPROJB;
                size_t per = sizes[id] / c.num_layers;
                char buf[160];
                if (per_layer)
                    snprintf(buf, sizeof buf, "%s, layer %zu, element %zu (%g)", param_names[id], k / per, k % per,
                             values[off + k]);
                else
                    snprintf(buf, sizeof buf, "%s, element %zu (%g)", param_names[id], k, values[off + k]);
                return buf;
            }
        off += sizes[id];
    }
    return "";
}

// Parses a model file: its config and all parameters (the length checked against the header before anything is read).
static inline ModelConfig parse_model_file(const ByteSource& src, std::vector<float>* params) {
    int32_t h[256];
    source_header(src, h);
    ModelConfig c = model_config_from_header(h, src.path);
    uint64_t n = param_count(c), expect = 1024 + n * sizeof(float);
    if (src.size != expect)
        fail("model file '%s': %zu bytes, but its header describes %llu parameters = %llu bytes (truncated or corrupt; "
             "use an earlier checkpoint)", src.path.c_str(), src.size, (unsigned long long)n,
             (unsigned long long)expect);
    check_fits_in_memory(src.size, "model file", src.path, "a smaller model");
    params->resize(n);
    source_read(src, 1024, params->data(), n * sizeof(float), "the parameters");
    std::string bad = first_nonfinite_param(c, params->data());
    if (!bad.empty())
        fail("model file '%s': parameter %s is not finite (a checkpoint of a diverged run; use an earlier one)",
             src.path.c_str(), bad.c_str());
    return c;
}

static inline ModelConfig read_model_file(const std::string& path, std::vector<float>* params) {
    ByteSource src(path, "model file");
    return parse_model_file(src, params);
}

static inline void write_model_file(const std::string& path, const ModelConfig& c, const float* params) {
    std::string bad = first_nonfinite_param(c, params);
    if (!bad.empty())
        fail("refusing to write model file '%s': parameter %s is not finite (the run diverged; the previous "
             "checkpoints are untouched)", path.c_str(), bad.c_str());
    int32_t h[256];
    model_header_from_config(c, h);
    AtomicWriter w = atomic_open(path);
    atomic_write(&w, h, sizeof h);
    atomic_write(&w, params, param_count(c) * sizeof(float));
    atomic_commit(&w);
}
