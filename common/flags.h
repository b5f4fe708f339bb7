// common/flags.h: the command line of both trainers. One table of flags drives parsing, validation, the usage text
// (--help, and docs/flags.md, which a test holds equal to it) and the config record of the log.
//
// What it is: the generic flag machinery (Flag, FlagTable, add_flag, parse_flag_value, print_flags; dev/data's
// make_shards uses it too), the trainers' flag table, the checks of flag combinations that need no model, and the
// config record of log.jsonl.
// What it is not: the configs themselves (common/config.h) or the checks that need the model of --load/--resume
// (the trainer runs those once the model is loaded, common/trainer.h).
#pragma once
#include <ctype.h>
#include <algorithm>
#include <errno.h>
#include <stdio.h>
#include <string>
#include <vector>

#include "config.h"
#include "json_read.h"
#include "json_write.h"

// The program these flags belong to: the CPU trainer, or the same code built by nvcc as the GPU trainer.
#ifdef __CUDACC__
#define SK_PROGRAM "train_gpt"
#else
#define SK_PROGRAM "train_gpt_cpu"
#endif

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
    const char* section;             // a heading the usage text prints before this flag (null: none)
};

struct CommandLine {
    ModelConfig model;
    TrainConfig train;
    std::string preset = "tiny";
    bool model_flag_seen = false;
    std::vector<std::string> given;  // the flags on the command line, in order
};

// The shortest text that reads back as exactly x (6 significant digits when they suffice, as %g prints).
static inline std::string float_text(float x) {
    char buf[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, x);
        if (strtof(buf, nullptr) == x) break;
    }
    return buf;
}

static inline std::string flag_value_string(const Flag& f) {
    char buf[64];
    switch (f.kind) {
    case FLAG_INT: snprintf(buf, sizeof buf, "%d", *(int*)f.ptr); return buf;
    case FLAG_FLOAT:
        if (f.auto_ok && isnan(*(float*)f.ptr)) return "auto";
        return float_text(*(float*)f.ptr);
    case FLAG_U64: snprintf(buf, sizeof buf, "%llu", *(unsigned long long*)f.ptr); return buf;
    case FLAG_STR: return ((std::string*)f.ptr)->empty() ? "(none)" : *(std::string*)f.ptr;
    case FLAG_CHOICE: return f.choices[*(int*)f.ptr];
    case FLAG_SWITCH: return *(int*)f.ptr ? "on" : "off";
    }
    return "";
}

#define SK_NUM_FLAGS 100
struct FlagTable {
    Flag flags[SK_NUM_FLAGS];
    int n = 0;
    const char* next_section = nullptr;
};

static inline void add_flag(FlagTable* t, const char* name, FlagKind kind, void* ptr, const char* help, double lo = 0,
                            double hi = 0, const char* const* choices = nullptr, int num_choices = 0,
                            bool is_model = false) {
    if (t->n >= SK_NUM_FLAGS) fail("internal: too many flags (raise SK_NUM_FLAGS)");
    t->flags[t->n++] = Flag{name, kind, ptr, help, lo, hi, choices, num_choices, is_model, false, false,
                            t->next_section};
    t->next_section = nullptr;
}

// The flags added next belong under this heading in the usage text.
static inline void flag_section(FlagTable* t, const char* heading) { t->next_section = heading; }

static inline FlagTable make_flag_table(CommandLine* cl) {
    FlagTable t;
    ModelConfig* m = &cl->model;
    TrainConfig* r = &cl->train;
    static const char* const onoff[2] = {"0", "1"};
    flag_section(&t, "model (a preset sets them all; --load and --resume read them from the checkpoint)");
    add_flag(&t, "--max-seq-len", FLAG_INT, &m->max_seq_len, "maxT, longest sequence", 1, SK_MAX_SEQ_LEN, 0, 0, true);
    add_flag(&t, "--vocab", FLAG_INT, &m->vocab_size, "vocabulary size V (padded to a multiple of 128)", 2, SK_MAX_VOCAB, 0, 0, true);
    add_flag(&t, "--layers", FLAG_INT, &m->num_layers, "L, transformer blocks", 1, SK_MAX_LAYERS, 0, 0, true);
    add_flag(&t, "--heads", FLAG_INT, &m->num_heads, "NH, attention heads", 1, SK_MAX_HEADS, 0, 0, true);
    add_flag(&t, "--channels", FLAG_INT, &m->channels, "C, model width", 1, SK_MAX_CHANNELS, 0, 0, true);
    add_flag(&t, "--ffn-hidden", FLAG_INT, &m->ffn_hidden, "FF, FFN hidden width", 1, SK_MAX_FFN_HIDDEN, 0, 0, true);
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
    flag_section(&t, "attention variant (docs/variants.md)");
    AttnSpec* a = &m->attn;
    add_flag(&t, "--attn", FLAG_CHOICE, &a->variant, "attention row map", 0, 0, attn_variant_names, ATTN_NUM_VARIANTS, true);
    add_flag(&t, "--attn-norm", FLAG_CHOICE, &a->normaliser, "normaliser of sigmoid/elu1/linear: Z = 1, sum + 1e-8, max(|sum|, 1)",
             0, 0, attn_normaliser_names, ANORM_NUM_KINDS, true);
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
    flag_section(&t, "data, output and modes");
    add_flag(&t, "--train", FLAG_STR, &r->train_glob, "training token shards (file or glob)");
    add_flag(&t, "--val", FLAG_STR, &r->val_glob, "validation token shards (file or glob)");
    add_flag(&t, "--out", FLAG_STR, &r->out_dir, "output directory: log.jsonl, checkpoints");
    add_flag(&t, "--resume", FLAG_STR, &r->resume_dir,
             "continue the run saved in this directory (its latest checkpoint; its flags unless given again)");
    add_flag(&t, "--from-step", FLAG_INT, &r->from_step, "with --resume: continue from this step's checkpoint (-1 = the latest)",
             -1, 1 << 30);
    add_flag(&t, "--overwrite", FLAG_SWITCH, &r->overwrite, "(no value) start a new run in --out, deleting the run there");
    add_flag(&t, "--load", FLAG_STR, &r->load_path, "start from (or evaluate) this model file");
    add_flag(&t, "--check-state", FLAG_STR, &r->check_state_path, "with --load: compare one forward/backward with this debug state");
    add_flag(&t, "--check-fast", FLAG_SWITCH, &r->check_fast,
             "(no value) the exact and the fast engine on one batch (the model of --load or the flags): per-tensor errors");
    add_flag(&t, "--eval-sink", FLAG_SWITCH, &r->eval_sink, "(no value) with --load: measure and print the sink metrics");
    add_flag(&t, "--json", FLAG_SWITCH, &r->json, "(no value) with --eval-sink: print only the JSON line");
    add_flag(&t, "--probe", FLAG_STR, &r->probe_path, "probe shard: first --probe-seqs windows of --probe-len tokens (default: first val shard)");
    flag_section(&t, "engine (docs/gpu.md)");
    add_flag(&t, "--engine", FLAG_CHOICE, &r->engine, "exact: the reference bits; fast: streamed attention (and cuBLAS on a "
             "GPU); auto: exact on the CPU, fast on a GPU", 0, 0, engine_names, ENGINE_NUM_KINDS);
    add_flag(&t, "--exact", FLAG_SWITCH, &r->exact, "(no value) the same as --engine exact");
    add_flag(&t, "--precision", FLAG_CHOICE, &r->precision, "the fast engine's matmuls: fp32, or tensor cores on tf32 "
             "or bf16 inputs (fp32 accumulation; bf16: the weights' bf16 copy beside fp32 masters; the CPU rounds the "
             "inputs so)", 0, 0, precision_names,
             PRECISION_NUM_KINDS);
    flag_section(&t, "batch and optimizer");
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
    flag_section(&t, "measurements: validation loss and sink metrics (docs/metrics.md)");
    add_flag(&t, "--val-every", FLAG_INT, &r->val_every, "validation loss every N steps (0 = only at the end)", 0, 1 << 30);
    add_flag(&t, "--val-batches", FLAG_INT, &r->val_batches, "micro-batches per validation", 1, 1 << 20);
    add_flag(&t, "--sink-every", FLAG_INT, &r->sink_every, "sink metrics every N steps (0 = only at the end)", 0, 1 << 30);
    add_flag(&t, "--probe-seqs", FLAG_INT, &r->probe_seqs, "S, probe sequences", 1, 1 << 20);
    add_flag(&t, "--probe-len", FLAG_INT, &r->probe_len, "T of the probe (keep it fixed: Sink falls as T grows)", 2, 1 << 20);
    add_flag(&t, "--eps", FLAG_FLOAT, &r->sink_eps, "Sink_k threshold: alpha_k > eps", 0, 1);
    flag_section(&t, "run");
    add_flag(&t, "--save-every", FLAG_INT, &r->save_every, "checkpoint every N steps (0 = only at the end)", 0, 1 << 30);
    add_flag(&t, "--keep-last", FLAG_INT, &r->keep_last, "keep the newest N checkpoints (0 = all)", 0, 1 << 30);
    add_flag(&t, "--print-every", FLAG_INT, &r->print_every, "a console line every N steps (and the first and last)", 1, 1 << 30);
    add_flag(&t, "--threads", FLAG_INT, &r->threads, "OpenMP threads; 0: as many as cores, fewer while other "
             "programs keep them busy (docs/speed.md); results do not depend on it", 0, 4096);
    add_flag(&t, "--on-nonfinite", FLAG_CHOICE, &r->on_nonfinite,
             "NaN/Inf loss or gradient: stop (exit 1, nothing saved) or skip that update", 0, 0, nonfinite_names,
             NONFINITE_NUM_KINDS);
    flag_section(&t, "data manipulations (training batches and the probe alike)");
    add_flag(&t, "--fixed-token", FLAG_INT, &r->fixed_token, "put this token at --fixed-pos of every sequence (-1 = off)", -1, 1 << 20);
    add_flag(&t, "--fixed-pos", FLAG_INT, &r->fixed_pos, "position of --fixed-token (0 = the first token)", 0, 1 << 20);
    add_flag(&t, "--random-from", FLAG_INT, &r->random_from, "positions [from, to) get uniformly random tokens", 0, 1 << 20);
    add_flag(&t, "--random-to", FLAG_INT, &r->random_to, "end of the random positions (0 = off)", 0, 1 << 20);
    add_flag(&t, "--data-fraction", FLAG_FLOAT, &r->data_fraction, "train on the first fraction of the training windows", 1e-9, 1);
    flag_section(&t, "text generation");
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

// One line of the usage text (more when the help wraps): name, default, help, within SK_USAGE_WIDTH columns.
#define SK_USAGE_WIDTH 100
static inline void print_flag_line(FILE* f, const std::string& name, const std::string& value, const std::string& help) {
    const int help_col = 2 + 16 + 1 + 26 + 1;
    std::string line = "  " + name;
    line.resize(std::max(line.size() + 1, (size_t)19), ' ');
    line += value;
    if ((int)line.size() + 1 > help_col) {  // a long default: the help starts on the next line
        fprintf(f, "%s\n", line.c_str());
        line.clear();
    }
    size_t at = 0;
    while (true) {
        line.resize(help_col, ' ');
        size_t room = SK_USAGE_WIDTH - help_col, end = help.size();
        if (end - at > room) {  // wrap at the last blank that fits
            end = help.rfind(' ', at + room);
            if (end == std::string::npos || end <= at) end = at + room;
        }
        line += help.substr(at, end - at);
        fprintf(f, "%s\n", line.c_str());
        line.clear();
        at = end;
        while (at < help.size() && help[at] == ' ') at++;
        if (at >= help.size()) break;
    }
}

// The usage text (--help): every flag with its default (the chosen preset's) and what it does, by section.
static inline void print_usage(FILE* f, CommandLine* cl) {
    FlagTable t = make_flag_table(cl);
    fprintf(f, "usage: %s [--preset NAME] [flags]   (defaults shown are the %s preset's)\n", SK_PROGRAM,
            cl->preset.c_str());
    fprintf(f, "\nmodel preset\n");
    print_flag_line(f, "--preset", cl->preset, "the model; any model flag below overrides it:");
    for (int i = 0; i < num_presets; i++)
        print_flag_line(f, "", "", std::string(presets[i].name) + ": " + presets[i].what);
    for (int i = 0; i < t.n; i++) {
        const Flag& fl = t.flags[i];
        if (fl.section) fprintf(f, "\n%s\n", fl.section);
        std::string help = fl.help;
        if (fl.kind == FLAG_CHOICE) {
            help += " {";
            for (int c = 0; c < fl.num_choices; c++) help += std::string(c ? "|" : "") + fl.choices[c];
            help += "}";
        }
        print_flag_line(f, fl.name, flag_value_string(fl), help);
    }
    fprintf(f, "\n");
    print_flag_line(f, "--help", "", "print this text");
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
        if (errno) fail("flag %s: %s is out of range [%.15g, %.15g]", f->name, v, f->lo, f->hi);
        if (x < f->lo || x > f->hi) fail("flag %s: %ld is out of range [%.15g, %.15g]", f->name, x, f->lo, f->hi);
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
        if (errno) fail("flag %s: %s is out of range [%.15g, %.15g]", f->name, v, f->lo, f->hi);
        if (x < f->lo || x > f->hi) fail("flag %s: %g is out of range [%.15g, %.15g]", f->name, x, f->lo, f->hi);
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
// (nullptr if none). With --load or --resume the model comes from the checkpoint, and the trainer runs
// check_run_shape once it has it.
static inline void validate_command_line(const CommandLine* cl, const char* model_flag) {
    const TrainConfig& t = cl->train;
    const ModelConfig& m = cl->model;
    bool check = !t.check_state_path.empty(), resume = !t.resume_dir.empty(), load = !t.load_path.empty();
    const char* mode = check ? "--check-state" : t.eval_sink ? "--eval-sink" : t.sample ? "--sample" : nullptr;
    if (!mode && t.check_fast) mode = "--check-fast";
    if (resume && (load || mode))
        fail("flag --resume continues a training run from its own checkpoint: drop %s", load ? "--load" : mode);
    if (mode && !t.check_fast && !load) fail("flag %s needs --load MODEL (the model to check, measure or sample)", mode);
    if (check + t.eval_sink + t.sample + t.check_fast > 1)
        fail("flags --check-state, --check-fast, --eval-sink and --sample are separate modes: give one of them");
    if (t.exact && t.engine == ENGINE_FAST) fail("flags --exact and --engine fast contradict each other: give one");
    if (t.check_fast && (t.exact || t.engine == ENGINE_EXACT))
        fail("flag --check-fast compares the fast engine with the exact one: drop %s", t.exact ? "--exact" : "--engine exact");
    if (t.from_step >= 0 && !resume) fail("flag --from-step picks the checkpoint of --resume: give --resume DIR");
    if (t.overwrite && (resume || mode))
        fail("flag --overwrite starts a new run in --out; it does not go with %s", resume ? "--resume" : mode);
    if (t.json && !t.eval_sink) fail("flag --json is the output of --eval-sink: give --eval-sink");
    if ((resume || load) && model_flag)
        fail("flag %s: %s reads the architecture from the checkpoint; drop the model flags", model_flag,
             resume ? "--resume" : "--load");
    if (!(t.adam_eps > 0))
        fail("flag --adam-eps: %g must be > 0 (AdamW divides by sqrt(v) + eps, and v stays 0 for weights that never "
             "get a gradient, such as the padded vocabulary rows: 0/0 would be NaN)", t.adam_eps);
    check_tokens_per_batch(t.batch_size, t.seq_len);  // --seq-len 0 (the model's length) is checked with the model
    if (resume || load) return;
    validate_model_config(m, "command line");
    if (m.vocab_size > 65536)
        fail("flag --vocab: %d is above 65536: token shards hold uint16 ids (0..65535), so the rows above could never be "
             "trained (llm.c's uint32 shards are not supported)", m.vocab_size);
    check_run_shape(t, m);
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
        cl->given.push_back(f->name);
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
    if (cl->train.exact && cl->train.engine != ENGINE_FAST) {  // --engine exact, which the log and --resume keep
        cl->train.engine = ENGINE_EXACT;
        cl->given.push_back("--engine");
    }
    if (preset_at && (!cl->train.resume_dir.empty() || !cl->train.load_path.empty()))
        fail("flag --preset: %s reads the architecture from the checkpoint; drop --preset",
             cl->train.resume_dir.empty() ? "--load" : "--resume");
    validate_command_line(cl, model_flag);
}

// The config record of the JSON-lines log: every flag's value (keys are the flag names without "--"; numbers exact,
// so --resume restores them bit for bit), so the log describes the run completely and a new flag appears in it
// without further code. The training state keeps a copy, which --resume reads back (restore_flags).
static inline std::string config_json(const ModelConfig& model, const TrainConfig& train, const std::string& preset,
                                      size_t num_params, int threads) {
    CommandLine cl;
    cl.model = model;
    cl.train = train;
    FlagTable t = make_flag_table(&cl);
    JsonRecord r("config");
    r.integer("num_params", (long long)num_params).integer("padded_vocab", model.padded_vocab_size);
    r.integer("threads_used", threads).str("preset", preset);
    for (int i = 0; i < t.n; i++) {
        const Flag& f = t.flags[i];
        std::string v = f.kind == FLAG_STR ? *(std::string*)f.ptr : flag_value_string(f);
        bool quoted = f.kind == FLAG_STR || f.kind == FLAG_CHOICE || f.kind == FLAG_SWITCH || v == "auto";
        if (quoted) r.str(f.name + 2, v);
        else r.raw(f.name + 2, v);
    }
    return r.str();
}

// The flags of a saved config record (config_json) put back into cl, except the model flags (the checkpoint has the
// model), those that name this invocation (modes, --out, --resume, --from-step, --overwrite, --threads) and those given
// on this command line. Returns one line saying what was restored and what the command line changed.
static inline std::string restore_flags(CommandLine* cl, const std::string& saved_config) {
    static const char* const own[] = {"--resume", "--from-step", "--overwrite", "--out", "--load", "--check-state",
                                      "--check-fast", "--eval-sink", "--json", "--sample", "--threads", "--exact"};
    std::vector<std::pair<std::string, std::string>> saved;  // flag name without "--", value text
    JsonCursor c = json_cursor(saved_config.data(), saved_config.size(), "the saved config record");
    json_read_object(&c, [&](const std::string& key) {
        json_skip_ws(&c);
        std::string value;
        if (c.p < c.end && *c.p == '"') {
            json_read_string(&c, &value);
        } else {
            const char* start = c.p;
            json_skip_value(&c);
            value.assign(start, c.p);
        }
        saved.push_back({key, value});
    });
    FlagTable t = make_flag_table(cl);
    std::string restored, changed;
    for (int i = 0; i < t.n; i++) {
        Flag* f = &t.flags[i];
        bool skip = f->is_model;
        for (const char* o : own) skip |= strcmp(f->name, o) == 0;
        if (skip) continue;
        const std::string* value = nullptr;
        for (const auto& kv : saved)
            if (kv.first == f->name + 2) value = &kv.second;
        if (!value) continue;
        std::string now = f->kind == FLAG_STR ? *(std::string*)f->ptr : flag_value_string(*f);
        bool given = std::find(cl->given.begin(), cl->given.end(), std::string(f->name)) != cl->given.end();
        if (given) {
            if (now != *value) changed += std::string(" ") + f->name + " " + (value->empty() ? "\"\"" : *value) + " -> " + now;
        } else if (value->empty() && f->kind == FLAG_STR) {
            ((std::string*)f->ptr)->clear();
        } else {
            if (now != *value) restored += std::string(" ") + f->name + " " + *value;
            parse_flag_value(f, value->c_str());
        }
    }
    return (restored.empty() ? std::string("the flags of the run (as they are)") : "restored" + restored) +
           (changed.empty() ? "" : "; changed on this command line:" + changed);
}
