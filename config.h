// config.h: the whole configuration of a sinkscope run in one place, shared by train_gpt_cpu.cpp and train_gpt.cu.
//
// What it is: the model config (architecture choices + shapes), the presets, the table of parameter tensors (names,
// shapes, file order), the training config, and the command-line parser whose usage text lists every flag with its
// default. What it is not: model math (the trainers) or file I/O (data/*.h).
#pragma once
#include <errno.h>
#include <math.h>
#include <stdarg.h>
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
static inline bool config_is_gpt2_arch(const ModelConfig& c) {
    return c.norm == NORM_LAYERNORM && c.placement == PLACE_PRE && c.ffn == FFN_GELU && c.positions == POS_LEARNED &&
           c.tied == 1 && c.bias == 1 && c.norm_eps == 1e-5f && c.ffn_hidden == 4 * c.channels &&
           c.attn.variant == ATTN_SOFTMAX && c.attn.mask == MASK_CAUSAL;
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
    {"tiny", "LLaMA style, L 2, C 128, 16 heads of 8, FFN 256, byte vocab, T 64: trains in minutes on 2 cores",
     make_config(64, 256, 2, 16, 128, 256, NORM_RMSNORM, PLACE_PRE, FFN_SWIGLU, POS_ROPE, 0, 0, INIT_LLAMA)},
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
    P_FCW, P_FCB, P_FCW2, P_FCB2, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB, P_LMHEAD, NUM_PARAM_TENSORS
};

static const char* const param_names[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
    "fcw", "fcb", "fcw2", "fcb2", "fcprojw", "fcprojb", "lnfw", "lnfb", "lm_head"};

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
           id == P_LNFB;
}

// ----------------------------------------------------------------------------------------------------------------
// training config

enum LrSchedule { LR_CONSTANT = 0, LR_COSINE, LR_LINEAR, LR_NUM_KINDS };
static const char* const lr_schedule_names[LR_NUM_KINDS] = {"constant", "cosine", "linear"};

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
    int seq_len = 0;            // T; 0 = the model's max_seq_len
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
    case FLAG_FLOAT: snprintf(buf, sizeof buf, "%g", *(float*)f.ptr); return buf;
    case FLAG_U64: snprintf(buf, sizeof buf, "%llu", *(unsigned long long*)f.ptr); return buf;
    case FLAG_STR: return ((std::string*)f.ptr)->empty() ? "(none)" : *(std::string*)f.ptr;
    case FLAG_CHOICE: return f.choices[*(int*)f.ptr];
    case FLAG_SWITCH: return *(int*)f.ptr ? "on" : "off";
    }
    return "";
}

#define SK_NUM_FLAGS 48
struct FlagTable {
    Flag flags[SK_NUM_FLAGS];
    int n = 0;
};

static inline void add_flag(FlagTable* t, const char* name, FlagKind kind, void* ptr, const char* help, double lo = 0,
                            double hi = 0, const char* const* choices = nullptr, int num_choices = 0,
                            bool is_model = false) {
    if (t->n >= SK_NUM_FLAGS) fail("internal: too many flags (raise SK_NUM_FLAGS)");
    t->flags[t->n++] = Flag{name, kind, ptr, help, lo, hi, choices, num_choices, is_model, false};
}

static inline FlagTable make_flag_table(CommandLine* cl) {
    FlagTable t;
    ModelConfig* m = &cl->model;
    TrainConfig* r = &cl->train;
    static const char* const onoff[2] = {"0", "1"};
    // model (a preset fills all of them; any can be overridden)
    add_flag(&t, "--max-seq-len", FLAG_INT, &m->max_seq_len, "maxT, longest sequence", 1, 1 << 20, 0, 0, true);
    add_flag(&t, "--vocab", FLAG_INT, &m->vocab_size, "vocabulary size V (padded to a multiple of 128)", 2, 1 << 20, 0, 0, true);
    add_flag(&t, "--layers", FLAG_INT, &m->num_layers, "L, transformer blocks", 1, 1024, 0, 0, true);
    add_flag(&t, "--heads", FLAG_INT, &m->num_heads, "NH, attention heads", 1, 4096, 0, 0, true);
    add_flag(&t, "--channels", FLAG_INT, &m->channels, "C, model width", 1, 1 << 16, 0, 0, true);
    add_flag(&t, "--ffn-hidden", FLAG_INT, &m->ffn_hidden, "F, FFN hidden width", 1, 1 << 18, 0, 0, true);
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
    return t;
}

static inline void print_usage(FILE* f, CommandLine* cl) {
    FlagTable t = make_flag_table(cl);
    fprintf(f, "usage: train_gpt_cpu [--preset NAME] [flags]   (defaults shown are the tiny preset's)\n\n");
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
    switch (f->kind) {
    case FLAG_INT: {
        long x = strtol(v, &end, 10);
        if (*v == 0 || *end != 0 || errno) fail("flag %s: '%s' is not an integer", f->name, v);
        if (x < f->lo || x > f->hi) fail("flag %s: %ld is out of range [%g, %g]", f->name, x, f->lo, f->hi);
        *(int*)f->ptr = (int)x;
        break;
    }
    case FLAG_U64: {
        if (*v == '-') fail("flag %s: '%s' must be a non-negative integer", f->name, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (*v == 0 || *end != 0 || errno) fail("flag %s: '%s' is not a non-negative integer", f->name, v);
        *(unsigned long long*)f->ptr = x;
        break;
    }
    case FLAG_FLOAT: {
        double x = strtod(v, &end);
        if (*v == 0 || *end != 0 || errno || !isfinite(x)) fail("flag %s: '%s' is not a finite number", f->name, v);
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

// Parses argv into cl. The preset is applied first, then every other flag overrides it.
static inline void parse_command_line(int argc, char** argv, CommandLine* cl) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_usage(stdout, cl);
            exit(0);
        }
        if (strcmp(argv[i], "--preset") == 0) {
            if (i + 1 >= argc) fail("flag --preset needs a value (one of the presets in --help)");
            cl->preset = argv[i + 1];
        }
    }
    const Preset* p = nullptr;
    for (int i = 0; i < num_presets; i++)
        if (cl->preset == presets[i].name) p = &presets[i];
    if (!p) fail("flag --preset: unknown preset '%s' (see --help for the list)", cl->preset.c_str());
    cl->model = p->cfg;
    FlagTable t = make_flag_table(cl);
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (strcmp(a, "--preset") == 0) { i++; continue; }
        Flag* f = nullptr;
        for (int k = 0; k < t.n; k++)
            if (strcmp(a, t.flags[k].name) == 0) f = &t.flags[k];
        if (!f) fail("unknown flag '%s' (run with --help for the list)", a);
        if (f->seen) fail("flag %s is given twice", a);
        f->seen = true;
        if (f->is_model) cl->model_flag_seen = true;
        if (f->kind == FLAG_SWITCH) {
            *(int*)f->ptr = 1;
            continue;
        }
        if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) fail("flag %s needs a value", a);
        parse_flag_value(f, argv[++i]);
    }
    config_finalize(&cl->model);
}

// Architecture checks shared by every way a config comes into being (flags, model files).
static inline void validate_model_config(const ModelConfig& c, const char* where) {
    if (c.channels % c.num_heads != 0)
        fail("%s: channels %d is not divisible by heads %d", where, c.channels, c.num_heads);
    int hs = c.channels / c.num_heads;
    if (c.positions == POS_ROPE && hs % 2 != 0) fail("%s: RoPE needs an even head size, got %d", where, hs);
    if (c.positions == POS_SINUSOIDAL && c.channels % 2 != 0)
        fail("%s: sinusoidal positions need an even channel count, got %d", where, c.channels);
    if (c.norm < 0 || c.norm >= NORM_NUM_KINDS || c.placement < 0 || c.placement >= PLACE_NUM_KINDS || c.ffn < 0 ||
        c.ffn >= FFN_NUM_KINDS || c.positions < 0 || c.positions >= POS_NUM_KINDS || c.attn.variant < 0 ||
        c.attn.variant >= ATTN_NUM_VARIANTS)
        fail("%s: an architecture code is out of range", where);
    if (!(c.norm_eps > 0) || !(c.rope_base > 1)) fail("%s: norm eps must be > 0 and rope base > 1", where);
}
