// common/config.h: what a sinkscope model and a training run are, in one place, shared by both trainers.
//
// What it is: the model config (architecture choices and shapes) with its validation, the presets, the table of
// parameter tensors (names, shapes, file order) and their init, the training config, and the checks of sizes that
// several places need (a sequence against the model's length, tokens per micro-batch).
// What it is not: the flags that set these (common/flags.h), model math (the trainers) or files (the other headers).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <string>

#include "../attention_variants.cuh"
#include "errors.h"
#include "random.h"

// ----------------------------------------------------------------------------------------------------------------
// model config. The integer codes are the ones stored in the version-4 model file header (common/model_file.h).

enum NormKind { NORM_LAYERNORM = 0, NORM_RMSNORM = 1, NORM_NUM_KINDS };
enum NormPlacement { PLACE_PRE = 0, PLACE_POST = 1, PLACE_NUM_KINDS };
enum FfnKind { FFN_RELU = 0, FFN_GELU, FFN_SWISH, FFN_REGLU, FFN_GEGLU, FFN_SWIGLU, FFN_NUM_KINDS };
enum PosKind { POS_NONE = 0, POS_SINUSOIDAL, POS_LEARNED, POS_ROPE, POS_ALIBI, POS_NUM_KINDS };
enum InitKind { INIT_GPT2 = 0, INIT_LLAMA = 1, INIT_NUM_KINDS };

static const char* const norm_names[NORM_NUM_KINDS] = {"layernorm", "rmsnorm"};
static const char* const placement_names[PLACE_NUM_KINDS] = {"pre", "post"};
static const char* const ffn_names[FFN_NUM_KINDS] = {"relu", "gelu", "swish", "reglu", "geglu", "swiglu"};
static const char* const pos_names[POS_NUM_KINDS] = {"none", "sinusoidal", "learned", "rope", "alibi"};
static const char* const init_names[INIT_NUM_KINDS] = {"gpt2", "llama"};

static inline bool ffn_is_gated(int ffn) { return ffn == FFN_REGLU || ffn == FFN_GEGLU || ffn == FFN_SWIGLU; }

// Largest architecture sizes (the flag table's ranges). They keep every tensor size and param_count far inside 64 bits
// (the largest tensor, L x 3C x C, stays below 2^44 elements), so no file header can make the size arithmetic overflow.
#define SK_MAX_SEQ_LEN (1 << 20)
#define SK_MAX_VOCAB (1 << 20)
#define SK_MAX_LAYERS 1024
#define SK_MAX_HEADS 4096
#define SK_MAX_CHANNELS (1 << 16)
#define SK_MAX_FFN_HIDDEN (1 << 18)

struct ModelConfig {
    int max_seq_len = 64;   // maxT: longest sequence (learned position table size)
    int vocab_size = 256;   // V
    int padded_vocab_size;  // Vp: V rounded up to a multiple of 128 (llm.c), set by config_finalize
    int num_layers = 2;     // L
    int num_heads = 16;     // NH
    int channels = 128;     // C
    int ffn_hidden = 256;   // FF
    int norm = NORM_RMSNORM;
    int placement = PLACE_PRE;
    int ffn = FFN_SWIGLU;
    int positions = POS_ROPE;
    int tied = 0;           // 1: logits = h wte^T; 0: a separate lm_head
    int bias = 0;           // 1: every linear layer has a bias
    float rope_base = 10000.0f;
    float norm_eps = 1e-5f;
    int init = INIT_LLAMA;  // init scheme for a run from scratch (not stored in files)
    AttnSpec attn;
};

static inline void config_finalize(ModelConfig* c) {
    c->padded_vocab_size = (c->vocab_size + 127) / 128 * 128;
}

// The llm.c GPT-2 architecture: what a version-3 model file implies.
static inline bool attn_is_plain_softmax(const AttnSpec& a) {
    AttnSpec d;
    return a.variant == d.variant && a.normaliser == d.normaliser && a.phi == d.phi && a.slot == d.slot && a.vstar == d.vstar &&
           a.vstar_value == d.vstar_value && a.value_bias == d.value_bias && a.slot_shared == d.slot_shared &&
           a.sink_token == d.sink_token && a.gate == d.gate && a.mask == d.mask && a.mask_param == d.mask_param &&
           a.row_mass == d.row_mass && a.sigmoid_bias == d.sigmoid_bias && a.clip_zeta == d.clip_zeta &&
           a.clip_alpha == d.clip_alpha && a.clip_len == d.clip_len;
}

static inline bool config_is_gpt2_arch(const ModelConfig& c) {
    return c.norm == NORM_LAYERNORM && c.placement == PLACE_PRE && c.ffn == FFN_GELU && c.positions == POS_LEARNED &&
           c.tied == 1 && c.bias == 1 && c.norm_eps == 1e-5f && c.ffn_hidden == 4 * c.channels &&
           c.rope_base == 10000.0f && attn_is_plain_softmax(c.attn);
}

// Presets. `tiny` is the default CPU emergence run (2 layers x 16 heads of size 8, LLaMA style: the smallest shape in
// which an independent PyTorch model grew a first-token sink within minutes on 2 cores; docs/results.md).
struct Preset {
    const char* name;
    const char* what;
    ModelConfig cfg;
};

static inline ModelConfig make_config(int maxT, int V, int L, int NH, int C, int FF, int norm, int place, int ffn,
                                      int pos, int tied, int bias, int init) {
    ModelConfig c;
    c.max_seq_len = maxT; c.vocab_size = V; c.num_layers = L; c.num_heads = NH; c.channels = C; c.ffn_hidden = FF;
    c.norm = norm; c.placement = place; c.ffn = ffn; c.positions = pos; c.tied = tied; c.bias = bias; c.init = init;
    config_finalize(&c);
    return c;
}

static const Preset presets[] = {
    {"tiny", "LLaMA style, L 2, C 128, 16 heads of 8, FFN 256, byte vocab, maxT 128: trains in minutes on 2 cores",
     make_config(128, 256, 2, 16, 128, 256, NORM_RMSNORM, PLACE_PRE, FFN_SWIGLU, POS_ROPE, 0, 0, INIT_LLAMA)},
    {"llama", "the paper's architecture (RMSNorm pre-norm, SwiGLU, RoPE, untied, no biases, paper init) at L 4, C 256, 8 heads",
     make_config(256, 256, 4, 8, 256, 512, NORM_RMSNORM, PLACE_PRE, FFN_SWIGLU, POS_ROPE, 0, 0, INIT_LLAMA)},
    {"llama-60m", "the paper's 60M model: d 768, L 10, H 8, FFN 1536, T 2048, vocab 50432",
     make_config(2048, 50432, 10, 8, 768, 1536, NORM_RMSNORM, PLACE_PRE, FFN_SWIGLU, POS_ROPE, 0, 0, INIT_LLAMA)},
    {"gpt2", "exactly llm.c's GPT-2 124M: LayerNorm, tanh-GELU, learned positions, tied, biases",
     make_config(1024, 50257, 12, 12, 768, 3072, NORM_LAYERNORM, PLACE_PRE, FFN_GELU, POS_LEARNED, 1, 1, INIT_GPT2)},
};
static const int num_presets = (int)(sizeof(presets) / sizeof(presets[0]));

// ----------------------------------------------------------------------------------------------------------------
// parameter tensors: names, shapes and file order. Absent tensors have size 0 and take no space in the file.
// With the gpt2 architecture the non-empty tensors are exactly llm.c's 16, in llm.c's order.

enum ParamId {
    P_WTE, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB, P_LN2W, P_LN2B,
    P_FCW, P_FCB, P_FCW2, P_FCB2, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB, P_LMHEAD,
    // attention-variant parameters (attention_variants.cuh)
    P_SINKTOK, P_KSTAR, P_VSTAR, P_VBIAS, P_SINKLOGIT, P_PHIW1, P_PHIW2, P_GATEW, NUM_PARAM_TENSORS
};

static const char* const param_names[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
    "fcw", "fcb", "fcw2", "fcb2", "fcprojw", "fcprojb", "lnfw", "lnfb", "lm_head",
    "sink_token", "kstar", "vstar", "vbias", "sink_logit", "phi_w1", "phi_w2", "gate_w"};

// Heads that own a separate slot vector: NH, or 1 when shared.
static inline int slot_heads(const ModelConfig& c) { return c.attn.slot_shared ? 1 : c.num_heads; }

static inline void param_sizes(const ModelConfig& c, size_t sizes[NUM_PARAM_TENSORS]) {
    size_t Vp = c.padded_vocab_size, C = c.channels, L = c.num_layers, FF = c.ffn_hidden, maxT = c.max_seq_len;
    bool ln = c.norm == NORM_LAYERNORM, b = c.bias, gated = ffn_is_gated(c.ffn), pre = c.placement == PLACE_PRE;
    sizes[P_WTE] = Vp * C;
    sizes[P_WPE] = c.positions == POS_LEARNED ? maxT * C : 0;
    sizes[P_LN1W] = L * C;
    sizes[P_LN1B] = ln ? L * C : 0;
    sizes[P_QKVW] = L * 3 * C * C;
    sizes[P_QKVB] = b ? L * 3 * C : 0;
    sizes[P_ATTPROJW] = L * C * C;
    sizes[P_ATTPROJB] = b ? L * C : 0;
    sizes[P_LN2W] = L * C;
    sizes[P_LN2B] = ln ? L * C : 0;
    sizes[P_FCW] = L * FF * C;
    sizes[P_FCB] = b ? L * FF : 0;
    sizes[P_FCW2] = gated ? L * FF * C : 0;
    sizes[P_FCB2] = gated && b ? L * FF : 0;
    sizes[P_FCPROJW] = L * C * FF;
    sizes[P_FCPROJB] = b ? L * C : 0;
    sizes[P_LNFW] = pre ? C : 0;
    sizes[P_LNFB] = pre && ln ? C : 0;
    sizes[P_LMHEAD] = c.tied ? 0 : Vp * C;
    const AttnSpec& a = c.attn;
    size_t hs = C / c.num_heads, S = slot_heads(c), NH = c.num_heads;
    sizes[P_SINKTOK] = a.sink_token ? C : 0;
    sizes[P_KSTAR] = a.slot == SLOT_KV ? L * S * hs : 0;
    sizes[P_VSTAR] = a.slot == SLOT_KV && a.vstar == VSTAR_LEARN ? L * S * hs : 0;
    sizes[P_VBIAS] = a.value_bias ? L * S * hs : 0;
    sizes[P_SINKLOGIT] = a.slot == SLOT_LOGIT ? L * NH : 0;
    sizes[P_PHIW1] = a.phi == PHI_MLP ? L * hs * hs : 0;
    sizes[P_PHIW2] = a.phi == PHI_MLP ? L * hs * hs : 0;
    sizes[P_GATEW] = a.gate == GATE_ELEMENTWISE ? L * C * C : a.gate == GATE_HEADWISE ? L * NH * C : 0;
}

static inline size_t param_count(const ModelConfig& c) {
    size_t sizes[NUM_PARAM_TENSORS], n = 0;
    param_sizes(c, sizes);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) n += sizes[i];
    return n;
}

// The floating-point operations of a training pass over one sequence of T tokens, forward and backward, counted as
// for MFU (model flops utilisation; a multiply-add is 2): the useful work of the model, not what the kernels run.
// 6 a position for each weight that takes part in a product (2 in the forward, 2 for the input's gradient, 2 for the
// weight's), over the T positions and a sink token's; the classifier's V x C over the T positions that predict a
// token (the kernels also run the sink token's row and the padded vocabulary). Per layer 12 C for each key a position
// sees (the forward's score and weighted value, 2 C each; the backward's four products: dp, dv, dq, dk), and for a kv
// slot 6 C for its score and 6 C for its value: 2 C with a fixed v* (no dv*), none with v* = 0. Not counted: norms,
// activations, row maps, the loss, the optimizer, recomputed scores. GPT-2 124M at T 1024: 817.0 GFLOP.
static inline double model_flops_per_seq(const ModelConfig& c, int T) {
    size_t s[NUM_PARAM_TENSORS];
    param_sizes(c, s);
    const AttnSpec& a = c.attn;
    // every layer's weights (the sizes count all L); the --phi mlp map's two run on q and k of every head
    double layer_weights = (double)s[P_QKVW] + s[P_ATTPROJW] + s[P_GATEW] + s[P_FCW] + s[P_FCW2] + s[P_FCPROJW] +
                           2.0 * c.num_heads * (s[P_PHIW1] + s[P_PHIW2]);
    int positions = T + a.sink_token;
    double keys = 0;  // summed over the positions: the keys each sees
    for (int t = 0; t < positions; t++) {
        int lo, hi;
        attn_visible_keys(a, t, positions, &lo, &hi);
        keys += hi - lo;
    }
    // a kv slot, in keys' worth of work: its score, and its value unless v* is 0 (fixed: no gradient of v*)
    double slot = a.slot != SLOT_KV ? 0 : a.vstar == VSTAR_ZERO ? 0.5 : a.vstar == VSTAR_FIXED ? 10.0 / 12 : 1;
    return 6.0 * (layer_weights * positions + (double)c.vocab_size * c.channels * T) +
           12.0 * c.num_layers * c.channels * (keys + slot * positions);
}

// Tensors that AdamW leaves undecayed under --wd-exempt 1: norms, biases, embeddings.
static inline bool param_is_decay_exempt(int id) {
    return id == P_WTE || id == P_WPE || id == P_LN1W || id == P_LN1B || id == P_LN2W || id == P_LN2B ||
           id == P_QKVB || id == P_ATTPROJB || id == P_FCB || id == P_FCB2 || id == P_FCPROJB || id == P_LNFW ||
           id == P_LNFB || id == P_SINKTOK || id == P_KSTAR || id == P_VSTAR || id == P_VBIAS || id == P_SINKLOGIT;
}

// ----------------------------------------------------------------------------------------------------------------
// training config

enum LrSchedule { LR_CONSTANT = 0, LR_COSINE, LR_LINEAR, LR_NUM_KINDS };
static const char* const lr_schedule_names[LR_NUM_KINDS] = {"constant", "cosine", "linear"};

// What a training step does when its loss or a gradient is NaN or Inf: stop (exit 1, nothing saved) or skip the update.
enum NonfinitePolicy { NONFINITE_STOP = 0, NONFINITE_SKIP, NONFINITE_NUM_KINDS };
static const char* const nonfinite_names[NONFINITE_NUM_KINDS] = {"stop", "skip"};

// Which engine computes the model (--engine, --precision; docs/gpu.md):
//   exact  the reference: every element in a fixed order, the same bits on the CPU and a GPU.
//   fast   attention streamed key tile by key tile (no T x T matrices; equal up to rounding), and on a GPU the matmuls
//          by cuBLAS in the chosen precision (fp32, or tensor cores on tf32 or bf16 inputs, fp32 accumulation; at bf16
//          the weights' bf16 copy, written by AdamW beside the fp32 masters; the CPU emulates those two by rounding
//          the inputs, at bf16 through the same copy).
//   auto   exact on the CPU, fast on a GPU.
enum EngineKind { ENGINE_AUTO, ENGINE_EXACT, ENGINE_FAST, ENGINE_NUM_KINDS };
static const char* const engine_names[ENGINE_NUM_KINDS] = {"auto", "exact", "fast"};
enum MatmulPrecision { PRECISION_FP32, PRECISION_TF32, PRECISION_BF16, PRECISION_NUM_KINDS };
static const char* const precision_names[PRECISION_NUM_KINDS] = {"fp32", "tf32", "bf16"};
static const int precision_mantissa_bits[PRECISION_NUM_KINDS] = {23, 10, 7};  // what a tensor core multiplies

struct TrainConfig {
    std::string train_glob = "data/brown/brown_train.bin";
    std::string val_glob = "data/brown/brown_val.bin";
    std::string out_dir = "runs/default";
    std::string resume_dir;
    std::string load_path;
    std::string check_state_path;
    int check_fast = 0;         // --check-fast: the exact and the fast engine on one batch
    int engine = ENGINE_AUTO;
    int exact = 0;              // --exact: --engine exact
    int precision = PRECISION_FP32;
    std::string probe_path;     // eval-sink probe shard; training defaults to the first val shard
    int eval_sink = 0;
    int batch_size = 64;        // B
    int seq_len = 64;           // T (the paper's probe length; the sink token adds one position)
    int total_batch_size = 0;   // tokens per optimizer step; 0 = B*T (no accumulation)
    int steps = 300;
    float lr = 3e-3f;
    float min_lr_frac = 0.0f;   // decay ends at lr * min_lr_frac
    int warmup_steps = 20;
    int lr_schedule = LR_CONSTANT;
    float beta1 = 0.9f, beta2 = 0.95f, adam_eps = 1e-8f;
    float weight_decay = 0.1f;
    int wd_exempt = 0;          // 1: no weight decay on norms, biases, embeddings
    float grad_clip = 1.0f;     // 0 = off
    unsigned long long seed = 1337;
    int val_every = 100, val_batches = 4;
    int sink_every = 100;       // one probe of 100 x 64 costs about one training step: ~1% at 100
    int probe_seqs = 100, probe_len = 64;
    float sink_eps = 0.3f;
    int save_every = 100;       // 0 = only at the end
    int keep_last = 3;          // checkpoints kept in the run directory (0 = all)
    int from_step = -1;         // with --resume: the checkpoint to continue from (-1 = the latest)
    int overwrite = 0;          // a fresh run may replace the run already in --out
    int print_every = 10;       // console line every N steps
    int json = 0;               // --eval-sink: the JSON line only
    int threads = 0;            // 0 = OpenMP's default
    int on_nonfinite = NONFINITE_STOP;
    // data manipulations of the paper's section 5, applied to training batches and the probe alike
    int fixed_token = -1, fixed_pos = 0;       // token id at position fixed_pos of every sequence (-1 = off)
    int random_from = 0, random_to = 0;        // positions [from, to) get uniformly random tokens
    float data_fraction = 1.0f;                // train on the first fraction of the training windows
    // text generation
    int sample_every = 100, sample_len = 64, top_k = 40, sample = 0;
    float temperature = 1.0f;
    std::string prompt, tokenizer_path, bpe_dir = "data/gpt2";
};

// ----------------------------------------------------------------------------------------------------------------
// validation

// Attention-variant checks: codes in range and combinations that are defined.
static inline void validate_attn_spec(const AttnSpec& a, const char* where) {
    if (a.variant < 0 || a.variant >= ATTN_NUM_VARIANTS || a.normaliser < 0 || a.normaliser >= ANORM_NUM_KINDS || a.phi < 0 ||
        a.phi >= PHI_NUM_KINDS || a.slot < 0 || a.slot >= SLOT_NUM_KINDS || a.vstar < 0 || a.vstar >= VSTAR_NUM_KINDS ||
        a.gate < 0 || a.gate >= GATE_NUM_KINDS || a.mask < 0 || a.mask >= MASK_NUM_KINDS || (a.value_bias & ~1) ||
        (a.slot_shared & ~1) || (a.sink_token & ~1) || a.mask_param < 0 || a.clip_len < 0 ||
        a.clip_len > SK_MAX_SEQ_LEN)
        fail("%s: an attention-variant code is out of range", where);
    if (a.normaliser != ANORM_NONE && !attn_variant_table[a.variant].uses_normaliser)
        fail("%s: --attn-norm %s applies to sigmoid, elu1 and linear only, not --attn %s", where, attn_normaliser_names[a.normaliser],
             attn_variant_names[a.variant]);
    if (a.slot == SLOT_KV && a.phi != PHI_NONE)
        fail("%s: --slot kv with a feature map (--phi %s) is not defined (k* is neither rotated nor mapped)", where,
             attn_phi_names[a.phi]);
    if ((a.mask == MASK_PREFIX || a.mask == MASK_WINDOW) && a.mask_param < 1)
        fail("%s: --mask %s needs --mask-param >= 1", where, attn_mask_names[a.mask]);
    if (!(a.row_mass > 0) || !(a.clip_zeta > 0) || !(a.clip_alpha >= 0))
        fail("%s: --row-mass and --clip-zeta must be > 0, --clip-alpha >= 0", where);
    if (a.vstar != VSTAR_LEARN && a.slot != SLOT_KV)
        fail("%s: --vstar %s needs --slot kv", where, vstar_names[a.vstar]);
    if (a.slot_shared && a.slot != SLOT_KV && !a.value_bias)
        fail("%s: --slot-shared 1 needs --slot kv or --value-bias 1", where);
    if (a.sink_token && a.slot != SLOT_NONE)
        fail("%s: --sink-token 1 is itself a slot; combine it with --slot none", where);
}

// Architecture checks shared by every way a config comes into being (flags, model files). `where` names the source;
// fields are named by their flag.
static inline void validate_model_config(const ModelConfig& c, const char* where) {
    struct { int value, max; const char* flag; } sizes[] = {
        {c.max_seq_len, SK_MAX_SEQ_LEN, "--max-seq-len"}, {c.vocab_size, SK_MAX_VOCAB, "--vocab"},
        {c.num_layers, SK_MAX_LAYERS, "--layers"},        {c.num_heads, SK_MAX_HEADS, "--heads"},
        {c.channels, SK_MAX_CHANNELS, "--channels"},      {c.ffn_hidden, SK_MAX_FFN_HIDDEN, "--ffn-hidden"}};
    for (const auto& s : sizes)
        if (s.value < 1 || s.value > s.max) fail("%s: %s %d is out of range [1, %d]", where, s.flag, s.value, s.max);
    struct { int value, kinds; const char* flag; } codes[] = {
        {c.norm, NORM_NUM_KINDS, "--norm"}, {c.placement, PLACE_NUM_KINDS, "--placement"}, {c.ffn, FFN_NUM_KINDS, "--ffn"},
        {c.positions, POS_NUM_KINDS, "--pos"}, {c.tied, 2, "--tied"}, {c.bias, 2, "--bias"}};
    for (const auto& k : codes)
        if (k.value < 0 || k.value >= k.kinds)
            fail("%s: %s code %d is out of range [0, %d] (see --help for the choices)", where, k.flag, k.value, k.kinds - 1);
    if (c.channels % c.num_heads != 0)
        fail("%s: --channels %d is not divisible by --heads %d (the head size C/NH must be a whole number)", where,
             c.channels, c.num_heads);
    int hs = c.channels / c.num_heads;
    if (c.positions == POS_ROPE && hs % 2 != 0)
        fail("%s: --pos rope needs an even head size, but --channels %d / --heads %d = %d", where, c.channels,
             c.num_heads, hs);
    if (c.positions == POS_SINUSOIDAL && c.channels % 2 != 0)
        fail("%s: --pos sinusoidal needs an even --channels, got %d", where, c.channels);
    validate_attn_spec(c.attn, where);
    if (!(c.norm_eps > 0 && c.norm_eps <= 1))
        fail("%s: --norm-eps %g is out of range (0, 1]", where, c.norm_eps);
    if (!(c.rope_base > 1 && c.rope_base <= 1e12f)) fail("%s: --rope-base %g is out of range (1, 1e12]", where, c.rope_base);
}

// A JSON string body: quotes, backslashes and control characters escaped, and every byte that is not part of valid

// ----------------------------------------------------------------------------------------------------------------
// init from scratch, tensors in file order, each filled in index order from one generator seeded with `seed`:
//   gpt2:  N(0, 0.02) weights and embeddings, residual projections N(0, 0.02/sqrt(2L)), biases 0, norms 1.
//   llama (the paper): linears N(0, sqrt(2/(5 fan_in))), embeddings N(0, sqrt(2/(5 C))), FFN down projection
//          N(0, 1/sqrt(FF)/L), norms 1, biases 0.
//   attention-variant slots (sink token, k*, v*, value bias, sink logit): N(0, 0.02) (the paper); feature-map MLP
//   and gate weights: as linears with fan_in hs and C.
// Padded vocabulary rows stay zero. The values are drawn in double and rounded once to F.
template <typename F>
static void init_params(const ModelConfig& c, uint64_t seed, F* params) {
    size_t sizes[NUM_PARAM_TENSORS];
    param_sizes(c, sizes);
    uint64_t rng = seed;
    int C = c.channels, FF = c.ffn_hidden, L = c.num_layers, hs = C / c.num_heads;
    bool gpt2 = c.init == INIT_GPT2;
    double linear_std = gpt2 ? 0.02 : sqrt(2.0 / (5.0 * C));
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        double std = 0, fill = 0;
        switch (i) {
        case P_LN1W: case P_LN2W: case P_LNFW: fill = 1; break;
        case P_LN1B: case P_LN2B: case P_LNFB: case P_QKVB: case P_ATTPROJB: case P_FCB: case P_FCB2:
        case P_FCPROJB: break;
        case P_ATTPROJW: std = gpt2 ? 0.02 / sqrt(2.0 * L) : linear_std; break;
        case P_FCPROJW: std = gpt2 ? 0.02 / sqrt(2.0 * L) : 1.0 / sqrt((double)FF) / L; break;
        case P_SINKTOK: case P_KSTAR: case P_VSTAR: case P_VBIAS: case P_SINKLOGIT: std = 0.02; break;
        case P_PHIW1: case P_PHIW2: std = gpt2 ? 0.02 : sqrt(2.0 / (5.0 * hs)); break;
        default: std = linear_std; break;  // wte, wpe, lm_head, qkvw, fcw, fcw2, gate_w: fan_in = C
        }
        size_t rows_used = sizes[i];
        if (i == P_WTE || i == P_LMHEAD) rows_used = (size_t)c.vocab_size * C;
        for (size_t k = 0; k < sizes[i]; k++)
            params[k] = std > 0 ? (k < rows_used ? (F)(std * rng_normal(&rng)) : F(0)) : (F)fill;
        params += sizes[i];
    }
}

// ----------------------------------------------------------------------------------------------------------------
// checks that several places need, each written once

// A sequence of T data tokens (plus the sink token's position when the model has one) must fit the model's positions.
// `what` names the source of T: "flag --seq-len", "debug state 'x.bin'", ...
static inline void check_seq_len(const char* what, int T, const ModelConfig& c) {
    int off = c.attn.sink_token;
    if (T + off > c.max_seq_len)
        fail("%s: %d%s exceeds the model's max_seq_len %d (--max-seq-len)", what, T, off ? " + 1 (sink token)" : "",
             c.max_seq_len);
}

// Token positions are int: B x T of one micro-batch stays at most 2^30.
static inline void check_tokens_per_batch(long long B, long long T) {
    if (B * T > (1 << 30))
        fail("flags --batch %lld x --seq-len %lld = %lld tokens per micro-batch, more than 2^30 (lower them; "
             "--total-batch accumulates micro-batches)", B, T, B * T);
}

// The data-manipulation flags against the vocabulary and a sequence length they apply to (`t_flag` names it).
static inline void validate_data_manipulations(const TrainConfig& tc, int V, int T, const char* t_flag) {
    if (tc.fixed_token >= V)
        fail("flag --fixed-token: %d is outside the vocabulary of %d", tc.fixed_token, V);
    if (tc.fixed_token >= 0 && tc.fixed_pos >= T)
        fail("flag --fixed-pos: %d is not a position of a %d-token sequence (%s)", tc.fixed_pos, T, t_flag);
    if (tc.fixed_token >= 0 && tc.fixed_pos >= tc.random_from && tc.fixed_pos < tc.random_to)
        fail("flags --fixed-pos %d and --random-from %d --random-to %d overlap: the random tokens would overwrite the "
             "fixed one", tc.fixed_pos, tc.random_from, tc.random_to);
    if (tc.random_to > 0 && (tc.random_from >= tc.random_to || tc.random_to > T))
        fail("flags --random-from %d --random-to %d: need from < to <= %d (%s)", tc.random_from, tc.random_to, T,
             t_flag);
}

// A training run against its model, checked once the model is known (from the flags, or from the checkpoint of
// --load/--resume): the training and probe sequences fit its positions, B x T fits, --total-batch is a whole number
// of micro-batches, the prefix mask leaves positions with a loss, and the data manipulations fit. Returns the training
// T (--seq-len 0 = the model's length).
static inline int check_run_shape(const TrainConfig& t, const ModelConfig& c) {
    int off = c.attn.sink_token;
    int T = t.seq_len ? t.seq_len : c.max_seq_len - off;
    check_seq_len("flag --seq-len", T, c);
    check_seq_len("flag --probe-len", t.probe_len, c);
    check_tokens_per_batch(t.batch_size, T);
    long long BT = (long long)t.batch_size * T;
    if (t.total_batch_size % BT != 0)
        fail("flag --total-batch: %d is not a multiple of --batch x --seq-len = %d x %d = %lld", t.total_batch_size,
             t.batch_size, T, BT);
    if (c.attn.mask == MASK_PREFIX && c.attn.mask_param > T + off)
        fail("flag --mask-param: a prefix of %d leaves no position with a loss in sequences of %d%s (the loss starts "
             "at position p - 1); use a prefix of at most %d", c.attn.mask_param, T, off ? " + 1 (sink token)" : "",
             T + off);
    validate_data_manipulations(t, c.vocab_size, T, "--seq-len");
    validate_data_manipulations(t, c.vocab_size, t.probe_len, "--probe-len");
    return T;
}
