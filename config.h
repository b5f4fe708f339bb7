// config.h: the whole configuration of a sinkscope run in one place, shared by train_gpt_cpu.cpp and train_gpt.cu.
//
// What it is: the model config (architecture choices + shapes), the presets, the table of parameter tensors (names,
// shapes, file order), the training config, and the command-line parser whose usage text lists every flag with its
// default. What it is not: model math (the trainers) or file I/O (data/*.h).
#pragma once

// The program these flags belong to: the CPU trainer, or the same code built by nvcc as the GPU trainer.
#ifdef __CUDACC__
#define SK_PROGRAM "train_gpt"
#else
#define SK_PROGRAM "train_gpt_cpu"
#endif
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>

#include "attention_variants.cuh"

// ----------------------------------------------------------------------------------------------------------------
// errors: one place that prints "error: ..." and exits non-zero, so every failure reads the same. Under TESTING it
// throws SkError instead, so a test can assert on the message of an error path without a subprocess.

#ifdef TESTING
#include <stdexcept>
struct SkError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
#endif

[[noreturn]] static inline void fail(const char* fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
#ifdef TESTING
    throw SkError(msg);
#else
    fprintf(stderr, "error: %s\n", msg);
    exit(1);
#endif
}

// ----------------------------------------------------------------------------------------------------------------
// model config. The integer codes are the ones stored in the version-4 model file header (data/model_file.h).

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
    int ffn_hidden = 256;   // F
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
    return a.variant == d.variant && a.norm == d.norm && a.phi == d.phi && a.slot == d.slot && a.vstar == d.vstar &&
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

// Presets. `tiny` is the default CPU emergence run of paper.md section 6 (2 layers x 16 heads of size 8, LLaMA style).
struct Preset {
    const char* name;
    const char* what;
    ModelConfig cfg;
};

static inline ModelConfig make_config(int maxT, int V, int L, int NH, int C, int F, int norm, int place, int ffn,
                                      int pos, int tied, int bias, int init) {
    ModelConfig c;
    c.max_seq_len = maxT; c.vocab_size = V; c.num_layers = L; c.num_heads = NH; c.channels = C; c.ffn_hidden = F;
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
    size_t Vp = c.padded_vocab_size, C = c.channels, L = c.num_layers, F = c.ffn_hidden, maxT = c.max_seq_len;
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
    sizes[P_FCW] = L * F * C;
    sizes[P_FCB] = b ? L * F : 0;
    sizes[P_FCW2] = gated ? L * F * C : 0;
    sizes[P_FCB2] = gated && b ? L * F : 0;
    sizes[P_FCPROJW] = L * C * F;
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

struct TrainConfig {
    std::string train_glob = "data/brown/brown_train.bin";
    std::string val_glob = "data/brown/brown_val.bin";
    std::string out_dir = "runs/default";
    std::string resume_dir;
    std::string load_path;
    std::string check_state_path;
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
    int save_every = 0;         // 0 = only at the end
    int threads = 0;            // 0 = OpenMP's default
    int on_nonfinite = NONFINITE_STOP;
    // data manipulations of the paper's section 5, applied to training batches and the probe alike
    int fixed_token = -1, fixed_pos = 0;       // token id at position fixed_pos of every sequence (-1 = off)
    int random_from = 0, random_to = 0;        // positions [from, to) get uniformly random tokens
    float data_fraction = 1.0f;                // train on the first fraction of the training windows
    // text generation
    int sample_every = 100, sample_len = 64, top_k = 40, sample = 0;
    float temperature = 1.0f;
    std::string prompt, tokenizer_path, bpe_dir = "test/fixtures/gpt2";
};

// ----------------------------------------------------------------------------------------------------------------
// command line. One table drives parsing, validation and the usage text.

enum FlagKind { FLAG_INT, FLAG_FLOAT, FLAG_U64, FLAG_STR, FLAG_CHOICE, FLAG_SWITCH };

struct Flag {
    const char* name;
    FlagKind kind;
    void* ptr;
    const char* help;
    double lo, hi;                   // inclusive range for numbers
    const char* const* choices;      // FLAG_CHOICE
    int num_choices;
    bool is_model;                   // describes the architecture (not allowed together with --load/--resume)
    bool seen;
    bool auto_ok;                    // FLAG_FLOAT also takes the word "auto" (stored as NaN, resolved later)
};

struct CommandLine {
    ModelConfig model;
    TrainConfig train;
    std::string preset = "tiny";
    bool model_flag_seen = false;
};

static inline std::string flag_value_string(const Flag& f) {
    char buf[64];
    switch (f.kind) {
    case FLAG_INT: snprintf(buf, sizeof buf, "%d", *(int*)f.ptr); return buf;
    case FLAG_FLOAT:
        if (f.auto_ok && isnan(*(float*)f.ptr)) return "auto";
        snprintf(buf, sizeof buf, "%g", *(float*)f.ptr);
        return buf;
    case FLAG_U64: snprintf(buf, sizeof buf, "%llu", *(unsigned long long*)f.ptr); return buf;
    case FLAG_STR: return ((std::string*)f.ptr)->empty() ? "(none)" : *(std::string*)f.ptr;
    case FLAG_CHOICE: return f.choices[*(int*)f.ptr];
    case FLAG_SWITCH: return *(int*)f.ptr ? "on" : "off";
    }
    return "";
}

#define SK_NUM_FLAGS 80
struct FlagTable {
    Flag flags[SK_NUM_FLAGS];
    int n = 0;
};

static inline void add_flag(FlagTable* t, const char* name, FlagKind kind, void* ptr, const char* help, double lo = 0,
                            double hi = 0, const char* const* choices = nullptr, int num_choices = 0,
                            bool is_model = false) {
    if (t->n >= SK_NUM_FLAGS) fail("internal: too many flags (raise SK_NUM_FLAGS)");
    t->flags[t->n++] = Flag{name, kind, ptr, help, lo, hi, choices, num_choices, is_model, false, false};
}

static inline FlagTable make_flag_table(CommandLine* cl) {
    FlagTable t;
    ModelConfig* m = &cl->model;
    TrainConfig* r = &cl->train;
    static const char* const onoff[2] = {"0", "1"};
    // model (a preset fills all of them; any can be overridden)
    add_flag(&t, "--max-seq-len", FLAG_INT, &m->max_seq_len, "maxT, longest sequence", 1, SK_MAX_SEQ_LEN, 0, 0, true);
    add_flag(&t, "--vocab", FLAG_INT, &m->vocab_size, "vocabulary size V (padded to a multiple of 128)", 2, SK_MAX_VOCAB, 0, 0, true);
    add_flag(&t, "--layers", FLAG_INT, &m->num_layers, "L, transformer blocks", 1, SK_MAX_LAYERS, 0, 0, true);
    add_flag(&t, "--heads", FLAG_INT, &m->num_heads, "NH, attention heads", 1, SK_MAX_HEADS, 0, 0, true);
    add_flag(&t, "--channels", FLAG_INT, &m->channels, "C, model width", 1, SK_MAX_CHANNELS, 0, 0, true);
    add_flag(&t, "--ffn-hidden", FLAG_INT, &m->ffn_hidden, "F, FFN hidden width", 1, SK_MAX_FFN_HIDDEN, 0, 0, true);
    add_flag(&t, "--norm", FLAG_CHOICE, &m->norm, "normalisation", 0, 0, norm_names, NORM_NUM_KINDS, true);
    add_flag(&t, "--placement", FLAG_CHOICE, &m->placement, "norm placement: pre x=x+f(N(x)); post x=N(x+f(x))", 0, 0,
             placement_names, PLACE_NUM_KINDS, true);
    add_flag(&t, "--ffn", FLAG_CHOICE, &m->ffn, "FFN activation (reglu/geglu/swiglu are gated)", 0, 0, ffn_names,
             FFN_NUM_KINDS, true);
    add_flag(&t, "--pos", FLAG_CHOICE, &m->positions, "positional encoding", 0, 0, pos_names, POS_NUM_KINDS, true);
    add_flag(&t, "--tied", FLAG_CHOICE, &m->tied, "tie input and output embeddings", 0, 0, onoff, 2, true);
    add_flag(&t, "--bias", FLAG_CHOICE, &m->bias, "biases on every linear layer", 0, 0, onoff, 2, true);
    add_flag(&t, "--rope-base", FLAG_FLOAT, &m->rope_base, "RoPE base", 1, 1e12, 0, 0, true);
    add_flag(&t, "--norm-eps", FLAG_FLOAT, &m->norm_eps, "epsilon of LayerNorm/RMSNorm", 0, 1, 0, 0, true);
    add_flag(&t, "--init", FLAG_CHOICE, &m->init, "init scheme for a run from scratch", 0, 0, init_names, INIT_NUM_KINDS, true);
    // attention variant (README "Attention variants"; attention_variants.cuh)
    AttnSpec* a = &m->attn;
    add_flag(&t, "--attn", FLAG_CHOICE, &a->variant, "attention row map", 0, 0, attn_variant_names, ATTN_NUM_VARIANTS, true);
    add_flag(&t, "--attn-norm", FLAG_CHOICE, &a->norm, "normaliser of sigmoid/elu1/linear: Z = 1, sum + 1e-8, max(|sum|, 1)",
             0, 0, attn_norm_names, ANORM_NUM_KINDS, true);
    add_flag(&t, "--phi", FLAG_CHOICE, &a->phi, "feature map on q and k after RoPE", 0, 0, attn_phi_names, PHI_NUM_KINDS, true);
    add_flag(&t, "--slot", FLAG_CHOICE, &a->slot, "extra slot per row: k*/v*, a learned sink logit, softmax_1's zero logit",
             0, 0, attn_slot_names, SLOT_NUM_KINDS, true);
    add_flag(&t, "--vstar", FLAG_CHOICE, &a->vstar, "value of the kv slot", 0, 0, vstar_names, VSTAR_NUM_KINDS, true);
    add_flag(&t, "--vstar-value", FLAG_FLOAT, &a->vstar_value, "every entry of a fixed v*", -1e6, 1e6, 0, 0, true);
    add_flag(&t, "--value-bias", FLAG_CHOICE, &a->value_bias, "add a learned v* to every attention output", 0, 0, onoff, 2, true);
    add_flag(&t, "--slot-shared", FLAG_CHOICE, &a->slot_shared, "k*, v*, value bias shared by all heads", 0, 0, onoff, 2, true);
    add_flag(&t, "--sink-token", FLAG_CHOICE, &a->sink_token, "prepend a learned sink token (no loss on it)", 0, 0, onoff, 2, true);
    add_flag(&t, "--gate", FLAG_CHOICE, &a->gate, "sigmoid gate on the attention output (G1)", 0, 0, attn_gate_names, GATE_NUM_KINDS, true);
    add_flag(&t, "--mask", FLAG_CHOICE, &a->mask, "attention mask", 0, 0, attn_mask_names, MASK_NUM_KINDS, true);
    add_flag(&t, "--mask-param", FLAG_INT, &a->mask_param, "prefix length p or window w", 0, 1 << 20, 0, 0, true);
    add_flag(&t, "--row-mass", FLAG_FLOAT, &a->row_mass, "softmax rows sum to this (paper Table 14)", 1e-6, 1e6, 0, 0, true);
    add_flag(&t, "--sigmoid-bias", FLAG_FLOAT, &a->sigmoid_bias, "b of sigmoid(s + b); auto = -log T", -1e6, 1e6, 0, 0, true);
    t.flags[t.n - 1].auto_ok = true;
    add_flag(&t, "--clip-zeta", FLAG_FLOAT, &a->clip_zeta, "clipped softmax zeta", 1e-6, 1e6, 0, 0, true);
    add_flag(&t, "--clip-alpha", FLAG_FLOAT, &a->clip_alpha, "clipped softmax: gamma = -alpha / T", 0, 1e6, 0, 0, true);
    add_flag(&t, "--clip-len", FLAG_INT, &a->clip_len, "T of the clipped softmax's gamma (0 = the training --seq-len)", 0,
             SK_MAX_SEQ_LEN, 0, 0, true);
    // data and run
    add_flag(&t, "--train", FLAG_STR, &r->train_glob, "training token shards (file or glob)");
    add_flag(&t, "--val", FLAG_STR, &r->val_glob, "validation token shards (file or glob)");
    add_flag(&t, "--out", FLAG_STR, &r->out_dir, "output directory: log.jsonl, checkpoints");
    add_flag(&t, "--resume", FLAG_STR, &r->resume_dir, "continue the run saved in this directory (its latest checkpoint)");
    add_flag(&t, "--load", FLAG_STR, &r->load_path, "start from (or evaluate) this model file");
    add_flag(&t, "--check-state", FLAG_STR, &r->check_state_path, "with --load: compare one forward/backward with this debug state");
    add_flag(&t, "--eval-sink", FLAG_SWITCH, &r->eval_sink, "(no value) with --load: measure sink metrics on --probe, print one JSON line");
    add_flag(&t, "--probe", FLAG_STR, &r->probe_path, "probe shard: first --probe-seqs windows of --probe-len tokens (default: first val shard)");
    add_flag(&t, "--batch", FLAG_INT, &r->batch_size, "B, sequences per micro-batch", 1, 1 << 20);
    add_flag(&t, "--seq-len", FLAG_INT, &r->seq_len, "T, tokens per sequence (0 = max-seq-len)", 0, 1 << 20);
    add_flag(&t, "--total-batch", FLAG_INT, &r->total_batch_size, "tokens per optimizer step, a multiple of B*T (0 = B*T)", 0, 1 << 30);
    add_flag(&t, "--steps", FLAG_INT, &r->steps, "optimizer steps", 0, 1 << 30);
    add_flag(&t, "--lr", FLAG_FLOAT, &r->lr, "peak learning rate", 0, 10);
    add_flag(&t, "--warmup", FLAG_INT, &r->warmup_steps, "linear warmup steps", 0, 1 << 30);
    add_flag(&t, "--schedule", FLAG_CHOICE, &r->lr_schedule, "after warmup: constant, or cosine/linear decay to lr*min-lr-frac", 0, 0,
             lr_schedule_names, LR_NUM_KINDS);
    add_flag(&t, "--min-lr-frac", FLAG_FLOAT, &r->min_lr_frac, "final lr as a fraction of --lr", 0, 1);
    add_flag(&t, "--beta1", FLAG_FLOAT, &r->beta1, "AdamW beta1", 0, 0.999999);
    add_flag(&t, "--beta2", FLAG_FLOAT, &r->beta2, "AdamW beta2", 0, 0.999999);
    add_flag(&t, "--adam-eps", FLAG_FLOAT, &r->adam_eps, "AdamW epsilon", 0, 1);
    add_flag(&t, "--wd", FLAG_FLOAT, &r->weight_decay, "AdamW weight decay (decoupled)", 0, 100);
    add_flag(&t, "--wd-exempt", FLAG_CHOICE, &r->wd_exempt, "1: no weight decay on norms, biases, embeddings", 0, 0, onoff, 2);
    add_flag(&t, "--grad-clip", FLAG_FLOAT, &r->grad_clip, "global gradient-norm clip (0 = off)", 0, 1e9);
    add_flag(&t, "--seed", FLAG_U64, &r->seed, "seed for init and batch order");
    add_flag(&t, "--val-every", FLAG_INT, &r->val_every, "validation loss every N steps (0 = only at the end)", 0, 1 << 30);
    add_flag(&t, "--val-batches", FLAG_INT, &r->val_batches, "micro-batches per validation", 1, 1 << 20);
    add_flag(&t, "--sink-every", FLAG_INT, &r->sink_every, "sink metrics every N steps (0 = only at the end)", 0, 1 << 30);
    add_flag(&t, "--probe-seqs", FLAG_INT, &r->probe_seqs, "S, probe sequences", 1, 1 << 20);
    add_flag(&t, "--probe-len", FLAG_INT, &r->probe_len, "T of the probe (keep it fixed: Sink falls as T grows)", 2, 1 << 20);
    add_flag(&t, "--eps", FLAG_FLOAT, &r->sink_eps, "Sink_k threshold: alpha_k > eps", 0, 1);
    add_flag(&t, "--save-every", FLAG_INT, &r->save_every, "checkpoint every N steps (0 = only at the end)", 0, 1 << 30);
    add_flag(&t, "--threads", FLAG_INT, &r->threads, "OpenMP threads (0 = default); results do not depend on it", 0, 4096);
    add_flag(&t, "--on-nonfinite", FLAG_CHOICE, &r->on_nonfinite,
             "NaN/Inf loss or gradient: stop (exit 1, nothing saved) or skip that update", 0, 0, nonfinite_names,
             NONFINITE_NUM_KINDS);
    add_flag(&t, "--fixed-token", FLAG_INT, &r->fixed_token, "put this token at --fixed-pos of every sequence (-1 = off)", -1, 1 << 20);
    add_flag(&t, "--fixed-pos", FLAG_INT, &r->fixed_pos, "position of --fixed-token (0 = the first token)", 0, 1 << 20);
    add_flag(&t, "--random-from", FLAG_INT, &r->random_from, "positions [from, to) get uniformly random tokens", 0, 1 << 20);
    add_flag(&t, "--random-to", FLAG_INT, &r->random_to, "end of the random positions (0 = off)", 0, 1 << 20);
    add_flag(&t, "--data-fraction", FLAG_FLOAT, &r->data_fraction, "train on the first fraction of the training windows", 1e-9, 1);
    add_flag(&t, "--sample-every", FLAG_INT, &r->sample_every, "generate text every N steps (0 = only at the end)", 0, 1 << 30);
    add_flag(&t, "--sample-len", FLAG_INT, &r->sample_len, "tokens to generate (0 = no generation)", 0, 1 << 20);
    add_flag(&t, "--temperature", FLAG_FLOAT, &r->temperature, "sampling temperature (0 = greedy)", 0, 100);
    add_flag(&t, "--top-k", FLAG_INT, &r->top_k, "sample among the k most likely tokens (0 = all)", 0, 1 << 20);
    add_flag(&t, "--prompt", FLAG_STR, &r->prompt, "text to continue (default: start from end-of-text)");
    add_flag(&t, "--tokenizer", FLAG_STR, &r->tokenizer_path, "llm.c tokenizer file (default: bytes for vocab 256, else *_tokenizer.bin beside --train)");
    add_flag(&t, "--bpe-dir", FLAG_STR, &r->bpe_dir, "GPT-2 encoder.json and vocab.bpe, to encode --prompt");
    add_flag(&t, "--sample", FLAG_SWITCH, &r->sample, "(no value) with --load: generate --sample-len tokens and exit");
    return t;
}

static inline void print_usage(FILE* f, CommandLine* cl) {
    FlagTable t = make_flag_table(cl);
    fprintf(f, "usage: %s [--preset NAME] [flags]   (defaults shown are the %s preset's)\n\n", SK_PROGRAM,
            cl->preset.c_str());
    fprintf(f, "  %-16s %-28s %s\n", "--preset", cl->preset.c_str(), "model preset:");
    for (int i = 0; i < num_presets; i++) fprintf(f, "  %-16s %-28s   %s: %s\n", "", "", presets[i].name, presets[i].what);
    for (int i = 0; i < t.n; i++) {
        const Flag& fl = t.flags[i];
        std::string help = fl.help;
        if (fl.kind == FLAG_CHOICE) {
            help += " {";
            for (int c = 0; c < fl.num_choices; c++) help += std::string(c ? "|" : "") + fl.choices[c];
            help += "}";
        }
        fprintf(f, "  %-16s %-28s %s\n", fl.name, flag_value_string(fl).c_str(), help.c_str());
    }
    fprintf(f, "  %-16s %-28s %s\n", "--help", "", "print this text");
}

static inline void parse_flag_value(Flag* f, const char* v) {
    char* end = nullptr;
    errno = 0;
    // strtol/strtoull/strtod skip leading blanks, and strtoull turns " -1" into 2^64 - 1: numbers start with a sign or digit
    bool numeric = f->kind == FLAG_INT || f->kind == FLAG_U64 || f->kind == FLAG_FLOAT;
    if (numeric && (*v == 0 || isspace((unsigned char)*v)))
        fail("flag %s: '%s' is not a number (no blanks around it)", f->name, v);
    switch (f->kind) {
    case FLAG_INT: {
        long x = strtol(v, &end, 10);
        if (*end != 0) fail("flag %s: '%s' is not an integer", f->name, v);
        if (errno) fail("flag %s: %s is out of range [%g, %g]", f->name, v, f->lo, f->hi);
        if (x < f->lo || x > f->hi) fail("flag %s: %ld is out of range [%g, %g]", f->name, x, f->lo, f->hi);
        *(int*)f->ptr = (int)x;
        break;
    }
    case FLAG_U64: {
        if (*v == '-') fail("flag %s: '%s' must be a non-negative integer", f->name, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (*end != 0) fail("flag %s: '%s' is not a non-negative integer", f->name, v);
        if (errno) fail("flag %s: %s is out of range [0, 2^64 - 1]", f->name, v);
        *(unsigned long long*)f->ptr = x;
        break;
    }
    case FLAG_FLOAT: {
        if (f->auto_ok && strcmp(v, "auto") == 0) {
            *(float*)f->ptr = NAN;
            break;
        }
        double x = strtod(v, &end);
        if (*end != 0 || !isfinite(x)) fail("flag %s: '%s' is not a finite number", f->name, v);
        if (errno) fail("flag %s: %s is out of range [%g, %g]", f->name, v, f->lo, f->hi);
        if (x < f->lo || x > f->hi) fail("flag %s: %g is out of range [%g, %g]", f->name, x, f->lo, f->hi);
        *(float*)f->ptr = (float)x;
        break;
    }
    case FLAG_STR:
        if (*v == 0) fail("flag %s: the value is empty", f->name);
        *(std::string*)f->ptr = v;
        break;
    case FLAG_SWITCH: break;
    case FLAG_CHOICE: {
        for (int c = 0; c < f->num_choices; c++)
            if (strcmp(v, f->choices[c]) == 0) { *(int*)f->ptr = c; return; }
        std::string all;
        for (int c = 0; c < f->num_choices; c++) all += std::string(c ? ", " : "") + f->choices[c];
        fail("flag %s: '%s' is not one of: %s", f->name, v, all.c_str());
    }
    }
}

// Combinations of flags that cannot work, caught before anything is loaded. model_flag is the first model flag given
// (nullptr if none). The checks that need the model of --load or --resume (T against its max_seq_len, --total-batch
// against B x T) run in the trainer once the model is loaded.
static inline void validate_model_config(const ModelConfig& c, const char* where);
static inline void validate_command_line(const CommandLine* cl, const char* model_flag) {
    const TrainConfig& t = cl->train;
    const ModelConfig& m = cl->model;
    bool check = !t.check_state_path.empty(), resume = !t.resume_dir.empty(), load = !t.load_path.empty();
    const char* mode = check ? "--check-state" : t.eval_sink ? "--eval-sink" : t.sample ? "--sample" : nullptr;
    if (resume && (load || mode))
        fail("flag --resume continues a training run from its own checkpoint: drop %s", load ? "--load" : mode);
    if (mode && !load) fail("flag %s needs --load MODEL (the model to check, measure or sample)", mode);
    if (check + t.eval_sink + t.sample > 1)
        fail("flags --check-state, --eval-sink and --sample are separate modes: give one of them");
    if ((resume || load) && model_flag)
        fail("flag %s: %s reads the architecture from the checkpoint; drop the model flags", model_flag,
             resume ? "--resume" : "--load");
    if (!(t.adam_eps > 0))
        fail("flag --adam-eps: %g must be > 0 (AdamW divides by sqrt(v) + eps, and v stays 0 for weights that never "
             "get a gradient, such as the padded vocabulary rows: 0/0 would be NaN)", t.adam_eps);
    if ((int64_t)t.batch_size * t.seq_len > (1 << 30))
        fail("flags --batch %d x --seq-len %d = %lld tokens per micro-batch, more than 2^30 (lower them; --total-batch "
             "accumulates micro-batches)", t.batch_size, t.seq_len, (long long)t.batch_size * t.seq_len);
    if (resume || load) return;
    validate_model_config(m, "command line");
    if (m.vocab_size > 65536)
        fail("flag --vocab: %d is above 65536: token shards hold uint16 ids (0..65535), so the rows above could never be "
             "trained (llm.c's uint32 shards are not supported)", m.vocab_size);
    int off = m.attn.sink_token;  // the sink token takes one position in front of every sequence
    if (t.seq_len + off > m.max_seq_len)
        fail("flag --seq-len: %d%s exceeds --max-seq-len %d", t.seq_len, off ? " + 1 (sink token)" : "", m.max_seq_len);
    if (t.probe_len + off > m.max_seq_len)
        fail("flag --probe-len: %d%s exceeds --max-seq-len %d (the probe runs the model on sequences of --probe-len)",
             t.probe_len, off ? " + 1 (sink token)" : "", m.max_seq_len);
    int T = t.seq_len ? t.seq_len : m.max_seq_len - off;
    int64_t BT = (int64_t)t.batch_size * T;
    if (BT > (1 << 30))
        fail("flags --batch %d x --seq-len %d (0 = --max-seq-len) = %lld tokens per micro-batch, more than 2^30 (lower "
             "them; --total-batch accumulates micro-batches)", t.batch_size, T, (long long)BT);
    if (t.total_batch_size % BT != 0)
        fail("flag --total-batch: %d is not a multiple of --batch x --seq-len = %d x %d = %lld", t.total_batch_size,
             t.batch_size, T, (long long)BT);
}

// Parses argv into cl. The preset is applied first, then every other flag overrides it.
static inline void parse_command_line(int argc, char** argv, CommandLine* cl) {
    int preset_at = 0;
    bool help = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) help = true;
        if (strcmp(argv[i], "--preset") == 0) {
            if (preset_at) fail("flag --preset is given twice");
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)
                fail("flag --preset needs a value (one of the presets in --help)");
            preset_at = i;
            cl->preset = argv[++i];
        }
    }
    const Preset* p = nullptr;
    for (int i = 0; i < num_presets; i++)
        if (cl->preset == presets[i].name) p = &presets[i];
    if (!p) fail("flag --preset: unknown preset '%s' (see --help for the list)", cl->preset.c_str());
    cl->model = p->cfg;
    if (help) {  // the defaults shown are the chosen preset's
        print_usage(stdout, cl);
        exit(0);
    }
    FlagTable t = make_flag_table(cl);
    const char* model_flag = nullptr;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (i == preset_at) { i++; continue; }
        Flag* f = nullptr;
        for (int k = 0; k < t.n; k++)
            if (strcmp(a, t.flags[k].name) == 0) f = &t.flags[k];
        if (!f && strncmp(a, "--", 2) != 0) {
            std::string hint;
            for (int k = 0; k < t.n; k++)
                if (t.flags[k].kind == FLAG_SWITCH && strcmp(argv[i - 1], t.flags[k].name) == 0)
                    hint = std::string("; ") + t.flags[k].name + " takes none";
            fail("unexpected argument '%s' (flags start with --, and each takes one value%s)", a, hint.c_str());
        }
        if (!f) fail("unknown flag '%s' (run with --help for the list)", a);
        if (f->seen) fail("flag %s is given twice", a);
        f->seen = true;
        if (f->is_model) {
            cl->model_flag_seen = true;
            if (!model_flag) model_flag = f->name;
        }
        if (f->kind == FLAG_SWITCH) {
            *(int*)f->ptr = 1;
            continue;
        }
        if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) fail("flag %s needs a value", a);
        parse_flag_value(f, argv[++i]);
    }
    config_finalize(&cl->model);
    validate_command_line(cl, model_flag);
}

// Attention-variant checks: codes in range and combinations that are defined.
static inline void validate_attn_spec(const AttnSpec& a, const char* where) {
    if (a.variant < 0 || a.variant >= ATTN_NUM_VARIANTS || a.norm < 0 || a.norm >= ANORM_NUM_KINDS || a.phi < 0 ||
        a.phi >= PHI_NUM_KINDS || a.slot < 0 || a.slot >= SLOT_NUM_KINDS || a.vstar < 0 || a.vstar >= VSTAR_NUM_KINDS ||
        a.gate < 0 || a.gate >= GATE_NUM_KINDS || a.mask < 0 || a.mask >= MASK_NUM_KINDS || (a.value_bias & ~1) ||
        (a.slot_shared & ~1) || (a.sink_token & ~1) || a.mask_param < 0 || a.clip_len < 0 ||
        a.clip_len > SK_MAX_SEQ_LEN)
        fail("%s: an attention-variant code is out of range", where);
    if (a.norm != ANORM_NONE && !attn_variant_table[a.variant].uses_norm)
        fail("%s: --attn-norm %s applies to sigmoid, elu1 and linear only, not --attn %s", where, attn_norm_names[a.norm],
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
// UTF-8 (generated text can cut a character in two) replaced by U+FFFD, so every log line parses.
static inline std::string json_escape(const std::string& x) {
    std::string out;
    size_t i = 0;
    while (i < x.size()) {
        unsigned char ch = x[i];
        int len = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : (ch >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= x.size();
        for (int k = 1; ok && k < len; k++) ok = ((unsigned char)x[i + k] >> 6) == 2;
        if (!ok) {
            out += "\\ufffd";
            i++;
            continue;
        }
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += (char)ch;
        } else if (ch < 0x20) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", ch);
            out += buf;
        } else {
            out.append(x, i, len);
        }
        i += len;
    }
    return out;
}

// The config record of the JSON-lines log: every flag's value (keys are the flag names without "--"), so the log
// describes the run completely and a new flag appears in it without further code.
static inline std::string config_json(const ModelConfig& model, const TrainConfig& train, const std::string& preset,
                                      size_t num_params, int threads) {
    CommandLine cl;
    cl.model = model;
    cl.train = train;
    FlagTable t = make_flag_table(&cl);
    char buf[160];
    snprintf(buf, sizeof buf, "{\"type\":\"config\",\"num_params\":%zu,\"padded_vocab\":%d,\"threads_used\":%d",
             num_params, model.padded_vocab_size, threads);
    std::string s = buf;
    s += ",\"preset\":\"" + json_escape(preset) + "\"";
    for (int i = 0; i < t.n; i++) {
        const Flag& f = t.flags[i];
        std::string v = f.kind == FLAG_STR ? *(std::string*)f.ptr : flag_value_string(f);
        bool quoted = f.kind == FLAG_STR || f.kind == FLAG_CHOICE || f.kind == FLAG_SWITCH || v == "auto";
        s += ",\"" + std::string(f.name + 2) + "\":" + (quoted ? "\"" + json_escape(v) + "\"" : v);
    }
    return s + "}";
}
