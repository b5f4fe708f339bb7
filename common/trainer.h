// common/trainer.h: everything around the model, shared by both trainers: the modes of the program (training,
// --check-state, --eval-sink, --sample), the training loop, data, validation, the sink probe, checkpoints and resume,
// text sampling, and the log.
//
// What it is: host code written against the Engine interface (common/engine.h), so it never touches the model's
// memory: train_gpt_cpu.cpp's engine runs on the CPU, the same engine built by nvcc runs on a GPU, and both get the
// same loop, files, log and metrics from here. trainer_main(argc, argv) is the whole program around an engine.
// What it is not: model math, or a second copy of any of it.
//
// The log (DIR/log.jsonl, one JSON record per line; docs/output.md): config, then train / val / sink / sample /
// nonfinite records as they happen, then done (and profile, with SK_PROFILE=1), or stopped when a signal ends it.
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/file.h>
#include <unistd.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../sink_metrics.h"
#include "backend.h"
#include "debug_state.h"
#include "engine.h"
#include "flags.h"
#include "json_write.h"
#include "model_file.h"
#include "profile.h"
#include "sampling.h"
#include "text_codec.h"
#include "threads.h"
#include "token_shards.h"
#include "train_state.h"

// ----------------------------------------------------------------------------------------------------------------
// small pieces

static double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void mkdir_p(const std::string& dir) {
    std::string cur;
    for (size_t i = 0; i <= dir.size(); i++) {
        if (i == dir.size() || dir[i] == '/') {
            if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
                fail("cannot create output directory '%s': %s", cur.c_str(), strerror(errno));
        }
        if (i < dir.size()) cur += dir[i];
    }
}

// The console. Output is line-buffered (trainer_main), so `| tee` shows each line as it is printed. A write that fails
// (stdout closed, as with `| head`) ends the console, and asks a training run to save and stop like a signal would.
static volatile sig_atomic_t stop_requested = 0;  // the signal that asked the run to stop (SIGPIPE: stdout closed)
static bool console_lost = false;

static void say(const char* fmt, ...) {
    if (console_lost) return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (ferror(stdout)) {
        console_lost = true;
        if (!stop_requested) stop_requested = SIGPIPE;
    }
}

// SIGINT and SIGTERM ask the training loop to save a checkpoint at the end of the current step (after the next
// step's measurements, when its intervals ask for any) and stop; a second one stops at once. SIGPIPE is ignored, so
// a closed stdout is an error of a write (see say), not a silent death.
static void on_stop_signal(int sig) {
    if (stop_requested && stop_requested != SIGPIPE) _exit(128 + sig);
    stop_requested = sig;
}

static void install_stop_handlers() {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
}

// h:mm:ss
static std::string clock_text(double ms) {
    long s = ms > 0 ? (long)(ms / 1000 + 0.5) : 0;
    char buf[32];
    snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    return buf;
}

// A count of flops with its metric prefix, to three significant figures: "2.26 MFLOP", "79.4 GFLOP".
static std::string flops_text(double flops) {
    const char* prefix[] = {"", "k", "M", "G", "T", "P"};
    int p = 0;
    while (p < 5 && fabs(flops) >= 999.5) {
        flops /= 1000;
        p++;
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%.*f %sFLOP", fabs(flops) >= 99.95 ? 0 : fabs(flops) >= 9.995 ? 1 : 2, flops, prefix[p]);
    return buf;
}

// Text on one console line: newlines and tabs shown as \n and \t.
static std::string one_line(const std::string& text) {
    std::string out;
    for (char ch : text) out += ch == '\n' ? "\\n" : ch == '\t' ? "\\t" : std::string(1, ch);
    return out;
}

// The engine the flags ask for (--engine, --exact, --precision): auto is exact on the CPU and fast on a GPU.
static EngineOptions engine_options(const TrainConfig& tc) {
    bool gpu = strcmp(SK_BACKEND_NAME, "GPU") == 0;
    EngineOptions o;
    o.kind = tc.check_fast ? ENGINE_FAST  // the engine --check-fast checks, whatever --engine says
             : tc.engine == ENGINE_AUTO ? (gpu ? ENGINE_FAST : ENGINE_EXACT) : tc.engine;
    o.precision = tc.precision;
    if (o.precision != PRECISION_FP32 && o.kind == ENGINE_EXACT)
        fail("flag --precision %s applies to the fast engine (--engine fast%s); the exact engine computes in fp32 "
             "(drop --precision or --engine exact)", precision_names[o.precision],
             gpu ? "" : ", which on the CPU emulates the tensor cores' rounding");
    return o;
}

// An engine holding the model file at path.
static std::unique_ptr<Engine> load_engine(const std::string& path, const EngineOptions& o = EngineOptions()) {
    std::vector<float> params;
    ModelConfig c = read_model_file(path, &params);
    std::unique_ptr<Engine> e = make_engine(c, o);
    e->set_params(params.data());
    return e;
}

// ----------------------------------------------------------------------------------------------------------------
// the optimizer's schedule

// Linear warmup from lr/warmup to lr, then constant, or cosine/linear decay to lr * min_lr_frac at tc.steps.
static inline float lr_at(const TrainConfig& tc, int step) {
    if (step < tc.warmup_steps) return tc.lr * (step + 1) / tc.warmup_steps;
    if (tc.lr_schedule == LR_CONSTANT || tc.steps <= tc.warmup_steps) return tc.lr;
    double frac = (double)(step - tc.warmup_steps) / (tc.steps - tc.warmup_steps);
    double min_lr = (double)tc.lr * tc.min_lr_frac;
    double shape = tc.lr_schedule == LR_COSINE ? 0.5 * (1.0 + cos(M_PI * frac)) : 1.0 - frac;
    return (float)(min_lr + (tc.lr - min_lr) * shape);
}

// The AdamW update of step `step` (0-based) at learning rate lr, with the flags' betas, epsilon, decay and clipping of
// the gradient norm gn.
static inline AdamWStep adamw_step(const TrainConfig& tc, float lr, int step, double gn) {
    AdamWStep s;
    s.lr = lr; s.beta1 = tc.beta1; s.beta2 = tc.beta2; s.eps = tc.adam_eps; s.weight_decay = tc.weight_decay;
    s.wd_exempt = tc.wd_exempt; s.t = step + 1; s.grad_scale = (float)clip_scale(gn, tc.grad_clip);
    return s;
}

// ----------------------------------------------------------------------------------------------------------------
// data

// The seed of the random tokens of the probe and the validation batches: fixed, so every measurement of a run (and
// of every run) sees the same sequences.
#define EVAL_DATA_SEED 20240520ull

// Data manipulations of the paper's section 5 on B sequences of T tokens (targets may be null):
//   a fixed token at position k: inputs[k] = id and targets[k-1] = id;
//   random tokens at positions [from, to): uniform in [0, V) from *rng, written to inputs[t] and targets[t-1].
static void apply_data_manipulations(const TrainConfig& tc, int* inputs, int* targets, int B, int T, int V,
                                     uint64_t* rng) {
    for (int b = 0; b < B; b++) {
        int* in = inputs + (size_t)b * T;
        int* tg = targets ? targets + (size_t)b * T : nullptr;
        if (tc.fixed_token >= 0) {
            in[tc.fixed_pos] = tc.fixed_token;
            if (tg && tc.fixed_pos > 0) tg[tc.fixed_pos - 1] = tc.fixed_token;
        }
        for (int t = tc.random_from; t < tc.random_to; t++) {
            int r = (int)(splitmix64(rng) % (uint64_t)V);
            in[t] = r;
            if (tg && t > 0) tg[t - 1] = r;
        }
    }
}

// The probe of `path` with the run's data manipulations applied: tc.probe_seqs windows of tc.probe_len tokens, or as
// many as the shard holds when it is smaller (said on the console; *seqs is then lowered).
static std::vector<int> load_probe(const TrainConfig& tc, const ModelConfig& c, const std::string& path, int* seqs) {
    TokenShard sh = read_token_shard(path, c.vocab_size);
    int available = (int)std::min<size_t>(sh.tokens.size() / tc.probe_len, (size_t)INT32_MAX);
    if (available < 1)
        fail("probe '%s' holds %zu tokens, fewer than one --probe-len %d window (use a shorter --probe-len or a larger "
             "--probe shard)", path.c_str(), sh.tokens.size(), tc.probe_len);
    *seqs = std::min(tc.probe_seqs, available);
    if (*seqs < tc.probe_seqs)
        say("note: probe '%s' holds %d windows of %d tokens, fewer than --probe-seqs %d: measuring on %d\n",
            path.c_str(), available, tc.probe_len, tc.probe_seqs, *seqs);
    std::vector<int> probe(sh.tokens.begin(), sh.tokens.begin() + (size_t)*seqs * tc.probe_len);
    uint64_t rng = EVAL_DATA_SEED;
    apply_data_manipulations(tc, probe.data(), nullptr, *seqs, tc.probe_len, c.vocab_size, &rng);
    return probe;
}

// Mean loss over the first `batches` micro-batches of the validation windows, in file order (the same every time).
static double validation_loss(Engine& e, DataLoader* val, const TrainConfig& tc, int B, int batches) {
    std::vector<int> x((size_t)B * val->T), y((size_t)B * val->T);
    val->index = 0;
    val->epoch = 0;
    uint64_t rng = EVAL_DATA_SEED;
    double sum = 0;
    for (int i = 0; i < batches; i++) {
        loader_next_batch(val, B, x.data(), y.data());
        apply_data_manipulations(tc, x.data(), y.data(), B, val->T, e.config().vocab_size, &rng);
        sum += e.forward(x.data(), y.data(), B, val->T);
    }
    return sum / batches;
}

// ----------------------------------------------------------------------------------------------------------------
// sink measurement on a probe of S sequences x T tokens, from what the engine's forward pass holds: the attention
// matrices, the residual streams (embedding output and after every block), and the keys and values.

#define SINK_PROBE_CHUNK 8  // probe sequences per forward pass

// The keys each row of the metric's matrix sees: the model's mask, shifted by one behind a slot, whose own row sees
// itself and which every row sees. T + 1 rows with a slot column (a slot or the sink token), else T.
struct ProbeVisibility {
    std::vector<int> lo, hi;
    bool slot0 = false;
    ProbeVisibility(const AttnSpec& at, int T) {
        int off = at.sink_token, slot = attn_has_slot(at), Tm = T + off, Tw = T + (off || slot);
        lo.assign(Tw, 0);
        hi.assign(Tw, 1);
        for (int t = 0; t < Tm; t++) {
            attn_visible_keys(at, t, Tm, &lo[t + slot], &hi[t + slot]);
            lo[t + slot] += slot;
            hi[t + slot] += slot;
        }
        slot0 = slot;
    }
    SinkVisibility vis() const {
        SinkVisibility v;
        v.lo = lo.data();
        v.hi = hi.data();
        v.slot0 = slot0;
        return v;
    }
};

// What one probe sequence adds to the report: each (layer, head)'s matrix, the hidden states entering layer 0 and
// leaving each layer, each layer's keys and values.
struct ProbeSequenceStats {
    std::vector<SinkHeadStats> heads;     // L * NH
    std::vector<SinkHiddenStats> hidden;  // L + 1
    std::vector<SinkKVStats> kv;          // L
};

// The metric's (Tm+1) x (Tm+1) matrix of a head with a slot: the slot as index 0, its own row one-hot on itself; row
// t + 1 holds the slot's weight ps[t], then the keys' weights att[t, :] (Tm x Tm).
static void slot_matrix(float* W, const float* att, const float* ps, int Tm) {
    int Tw = Tm + 1;
    std::fill(W, W + (size_t)Tw * Tw, 0.0f);
    W[0] = 1;
    for (int t = 0; t < Tm; t++) {
        W[(size_t)(t + 1) * Tw] = ps[t];
        for (int j = 0; j < Tm; j++) W[(size_t)(t + 1) * Tw + j + 1] = att[(size_t)t * Tm + j];
    }
}

// The stats of the n sequences of one probe chunk, each (sequence, head) and (sequence, layer) a task of its own on
// the host's threads: every task reads only its inputs and writes only its own entry.
static void probe_chunk_stats(const ModelConfig& c, const SinkReport& r, const SinkVisibility& vis, const ProbeView& pv,
                              std::vector<ProbeSequenceStats>* out) {
    const AttnSpec& at = c.attn;
    int C = c.channels, NH = c.num_heads, L = c.num_layers, n = pv.B, Tm = pv.T;
    int off = at.sink_token, slot = attn_has_slot(at), Tw = r.T + r.slot_column;
    size_t BTC = (size_t)n * Tm * C;
    out->resize(n);
    for (ProbeSequenceStats& q : *out) {
        q.heads.resize((size_t)L * NH);
        q.hidden.resize(L + 1);
        q.kv.resize(L);
    }
    int heads = L * NH, layers = 2 * L + 1;  // per sequence: the heads, then L + 1 hidden states and L key/value pairs
    long tasks = (long)n * (heads + layers);
#pragma omp parallel
    {
        std::vector<float> W(slot ? (size_t)Tw * Tw : 0);
#pragma omp for schedule(dynamic)
        for (long i = 0; i < tasks; i++) {
            int b = (int)(i / (heads + layers)), k = (int)(i % (heads + layers));
            ProbeSequenceStats& q = (*out)[b];
            size_t first = ((size_t)b * Tm + off) * C;  // the first real token of sequence b
            if (k >= heads) {
                int l = k - heads;
                if (l == 0) q.hidden[0] = sink_hidden_stats(r, pv.encoded + first, C);
                else if (l <= L) q.hidden[l] = sink_hidden_stats(r, pv.residual + (l - 1) * BTC + first, C);
                else {
                    const float* qkv = pv.qkv + (l - L - 1) * BTC * 3 + first * 3;
                    q.kv[l - L - 1] = sink_kv_stats(r, qkv + C, qkv + 2 * C, C, (size_t)3 * C);
                }
                continue;
            }
            int l = k / NH, h = k % NH;
            const float* att = pv.att + ((size_t)l * n * NH + (size_t)b * NH + h) * Tm * Tm;
            if (!slot) {
                q.heads[k] = sink_head_stats(r, att, vis);
                continue;
            }
            slot_matrix(W.data(), att, pv.att_slot + ((size_t)l * n * NH + (size_t)b * NH + h) * Tm, Tm);
            q.heads[k] = sink_head_stats(r, W.data(), vis);
        }
    }
}

// A sequence's stats into the accumulator, in the order of one head and one layer after the other.
static void probe_add_sequence(SinkAccumulator* acc, const ProbeSequenceStats& q) {
    int L = acc->r.L, NH = acc->r.NH;
    sink_add_hidden_stats(acc, 0, q.hidden[0]);
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < NH; h++) sink_add_head_stats(acc, l, h, q.heads[(size_t)l * NH + h]);
        sink_add_hidden_stats(acc, l + 1, q.hidden[l + 1]);
        sink_add_kv_stats(acc, l, q.kv[l]);
    }
    sink_end_sequence(acc);
}

// A probe measurement under way: the accumulator and what each row of the metric's matrix sees. Chunks go in in
// order; each chunk's sequences are measured on the host's threads, then added one after the other.
struct SinkMeasurement {
    ModelConfig c;
    ProbeVisibility visibility;
    SinkAccumulator acc;
    SinkMeasurement(const ModelConfig& config, int T, float eps) : c(config), visibility(config.attn, T) {
        sink_begin(&acc, c.num_layers, c.num_heads, T, eps, c.attn.sink_token || attn_has_slot(c.attn),
                   !attn_is_probability(c.attn));
    }
    void measure(const ProbeView& pv, std::vector<ProbeSequenceStats>* stats) const {
        probe_chunk_stats(c, acc.r, visibility.vis(), pv, stats);
    }
    void add(const std::vector<ProbeSequenceStats>& stats) {
        for (const ProbeSequenceStats& q : stats) probe_add_sequence(&acc, q);
    }
};

static SinkReport measure_sinks(Engine& e, const std::vector<int>& probe, int S, int T, float eps) {
    SK_PROFILE_WINDOW();
    SK_PROFILE_SCOPE(PROF_PROBE);
    SinkMeasurement m(e.config(), T, eps);
    std::vector<ProbeSequenceStats> stats;
    for (int s0 = 0; s0 < S; s0 += SINK_PROBE_CHUNK) {
        m.measure(e.probe(probe.data() + (size_t)s0 * T, std::min(SINK_PROBE_CHUNK, S - s0), T), &stats);
        m.add(stats);
    }
    return sink_finish(&m.acc);
}

// ----------------------------------------------------------------------------------------------------------------
// the sink metrics beside training (SK_SINK_THREAD; docs/output.md). The engine runs the probe's forward passes at
// the step they measure and keeps copies of what they hold in its keep arena (SkDownloadArena: on a GPU a copy on
// the device, then a download on a second stream while training goes on); a host thread waits for the download and
// measures them while the engine trains on. The record is logged when the thread is done (checked between steps),
// or waited for before the next probe (which reuses the arena), a checkpoint or the end. The same code and order as
// measure_sinks, so the same numbers. Worth it where the engine is a GPU and the host's cores are idle while it
// trains; on a CPU the thread would take the training's cores.

#define SINK_HOLD_GIB 4.0  // the most host memory the held chunks take (and at most 1/8 of the machine's; on a GPU
                           // as much again on the device, staged); the rest of a probe is measured at once, as
                           // without the thread (GPT-2 124M's default probe of 100 x 64: about 1.2 GB)

// Tests: the thread sleeps this long before it measures, so that training is sure to run on meanwhile.
static int sink_thread_delay_ms = 0;

// A probe chunk kept in the engine's arena for the thread (Engine::probe's keep), then its stats.
struct HeldProbeChunk {
    ProbeView kept;  // the views into the copies in the arena (none: the stats were measured at once)
    bool held() const { return kept.att != nullptr; }
    std::vector<ProbeSequenceStats> stats;

    // the bytes of the copies of a chunk of B sequences of the model's T positions
    static size_t bytes(const ModelConfig& c, int B, int T) {
        size_t L = c.num_layers, rows = L * B * c.num_heads * T, BTC = (size_t)B * T * c.channels;
        bool slot = attn_has_slot(c.attn);
        return sizeof(float) * (rows * T + (slot ? rows : 0) + (1 + 4 * L) * BTC);
    }
};

// Which chunks of a probe of S sequences of the model's Tm positions the thread holds: from the first, while their
// copies fit in `budget` values (the rest are measured at once). Returns the values they take.
static size_t sink_held_chunks(const ModelConfig& c, int S, int Tm, size_t budget, std::vector<bool>* held = nullptr) {
    size_t values = 0;
    if (held) held->clear();
    for (int s0 = 0; s0 < S; s0 += SINK_PROBE_CHUNK) {
        size_t v = HeldProbeChunk::bytes(c, std::min(SINK_PROBE_CHUNK, S - s0), Tm) / sizeof(float);
        bool fits = values + v <= budget;
        if (fits) values += v;
        if (held) held->push_back(fits);
    }
    return values;
}

// A measurement on the thread: started at `step`, done when `done` is set (the report is then the thread's to give).
struct SinkJob {
    int step = 0;
    double main_ms = 0;    // the time the training waited: the probe's forward passes and copies
    double thread_ms = 0;  // the thread's time
    SinkMeasurement m;
    std::vector<HeldProbeChunk> chunks;
    SkDownloadArena::Fence arrived;  // the held chunks' copies are in host memory
    const char* error = nullptr;     // what went wrong in their download (the driving thread reports it)
    SinkReport report;
    std::atomic<bool> done{false};
    std::thread worker;
    SinkJob(const ModelConfig& c, int T, float eps) : m(c, T, eps) {}
    ~SinkJob() {
        if (worker.joinable()) worker.join();
    }
};

// Whether the sink metrics run beside training: SK_SINK_THREAD=1 or 0, or by default where the engine is a GPU.
static bool sink_thread_wanted() {
    const char* v = getenv("SK_SINK_THREAD");
    if (!v || !*v || strcmp(v, "auto") == 0) return strcmp(SK_BACKEND_NAME, "GPU") == 0;
    if (strcmp(v, "1") == 0) return true;
    if (strcmp(v, "0") == 0) return false;
    fail("SK_SINK_THREAD '%s' is not 1, 0 or auto (the sink metrics on a host thread beside training; unset it for "
         "the default: on with a GPU)", v);
}

// Whether a run measuring from step `first` to its last will measure a step beside training: a sink step before the
// last (the last step's record comes before the summary, measured at once).
static bool sink_thread_steps(const TrainConfig& tc, int first) {
    if (tc.sink_every <= 0) return false;
    long next = ((long)first + tc.sink_every - 1) / tc.sink_every * tc.sink_every;  // the first sink step from `first`
    return next < tc.steps;
}

// Runs the probe's forward passes now and hands their copies to a thread.
static std::unique_ptr<SinkJob> start_sink_job(Engine& e, const std::vector<int>& probe, int S, int T, float eps,
                                               int step, size_t keep_values) {
    SK_PROFILE_WINDOW();
    SK_PROFILE_SCOPE(PROF_PROBE);
    double t0 = now_ms();
    std::unique_ptr<SinkJob> job(new SinkJob(e.config(), T, eps));
    job->step = step;
    std::vector<bool> held;
    sink_held_chunks(job->m.c, S, T + job->m.c.attn.sink_token, keep_values, &held);
    for (int s0 = 0, i = 0; s0 < S; s0 += SINK_PROBE_CHUNK, i++) {
        int n = std::min(SINK_PROBE_CHUNK, S - s0);
        job->chunks.emplace_back();
        HeldProbeChunk& ch = job->chunks.back();
        if (held[i]) {  // the views into the engine's keep arena
            ch.kept = e.probe(probe.data() + (size_t)s0 * T, n, T, true);
        } else {
            job->m.measure(e.probe(probe.data() + (size_t)s0 * T, n, T), &ch.stats);
        }
    }
    job->arrived = e.probe_send();
    SinkJob* j = job.get();
    int threads = std::max(1, thread_governor().max_threads - 1);  // one core left to the thread driving the engine
    j->worker = std::thread([j, threads] {
        if (sink_thread_delay_ms > 0) usleep(1000 * sink_thread_delay_ms);
        double t1 = now_ms();
        omp_set_num_threads(threads);
        j->error = j->arrived.wait();
        if (!j->error) {
            for (HeldProbeChunk& ch : j->chunks) {
                if (ch.held()) j->m.measure(ch.kept, &ch.stats);
                j->m.add(ch.stats);
            }
            j->report = sink_finish(&j->m.acc);
        }
        j->thread_ms = now_ms() - t1;
        j->done.store(true, std::memory_order_release);
    });
    job->main_ms = now_ms() - t0;
    return job;
}

// ----------------------------------------------------------------------------------------------------------------
// checkpoints: model_<step>.bin holds the weights (common/model_file.h); state_<step>.bin holds the AdamW moments, the
// step, the data position, the random state, the run's flags and the checksums of both files
// (common/train_state.h). Both are written atomically, the state first, so a model file never exists without its
// state; both writers refuse non-finite numbers.

static std::string ckpt_path(const std::string& dir, const char* kind, int step) {
    char buf[64];
    snprintf(buf, sizeof buf, "/%s_%08d.bin", kind, step);
    return dir + buf;
}

// The steps of dir with both a model and a state file, in increasing order.
static std::vector<int> checkpoint_steps(const std::string& dir) {
    std::vector<int> steps;
    DIR* d = opendir(dir.c_str());
    if (!d) fail("--resume '%s': cannot open the directory: %s", dir.c_str(), strerror(errno));
    while (struct dirent* e = readdir(d)) {
        int step;
        // exactly the names ckpt_path writes (8 digits, 9 from step 10^8 on), not model_*.bin.tmp or a stray file
        if (sscanf(e->d_name, "model_%d", &step) == 1 && step >= 0 &&
            dir + "/" + e->d_name == ckpt_path(dir, "model", step)) {
            struct stat st;
            if (stat(ckpt_path(dir, "state", step).c_str(), &st) == 0) steps.push_back(step);
        }
    }
    closedir(d);
    std::sort(steps.begin(), steps.end());
    return steps;
}

// The latest step in dir with both a model and a state file; -1 if none.
static int latest_checkpoint(const std::string& dir) {
    std::vector<int> steps = checkpoint_steps(dir);
    return steps.empty() ? -1 : steps.back();
}

// Saves the engine's weights and moments as checkpoint s.step, then keeps only the newest keep_last (0: all).
static void save_checkpoint(Engine& e, const std::string& dir, TrainState s, int keep_last) {
    size_t n = e.num_params();
    std::vector<float> params(n), m(n), v(n);
    e.get_params(params.data());
    e.get_adam(m.data(), v.data());
    s.model_checksum = params_checksum(params.data(), n);
    write_train_state(ckpt_path(dir, "state", s.step), s, e.config(), n, m.data(), v.data());
    write_model_file(ckpt_path(dir, "model", s.step), e.config(), params.data());
    if (keep_last <= 0) return;
    std::vector<int> steps = checkpoint_steps(dir);
    for (size_t i = 0; i + keep_last < steps.size(); i++) {  // the model first: a model never lacks its state
        unlink(ckpt_path(dir, "model", steps[i]).c_str());
        unlink(ckpt_path(dir, "state", steps[i]).c_str());
    }
}

// A checkpoint read back whole and checked: both files parse, their steps agree, and (version-2 states) both
// checksums match.
struct Checkpoint {
    ModelConfig config;
    std::vector<float> params, m, v;
    TrainState state;
};

static Checkpoint read_checkpoint(const std::string& dir, int step) {
    Checkpoint ck;
    std::string model_path = ckpt_path(dir, "model", step), state_path = ckpt_path(dir, "state", step);
    ck.config = read_model_file(model_path, &ck.params);
    size_t n = ck.params.size();
    ck.m.resize(n);
    ck.v.resize(n);
    ck.state = read_train_state(state_path, ck.config, n, ck.m.data(), ck.v.data());
    if (ck.state.step != step)
        fail("training state '%s': step (header[2]) is %d, but its file name says %d (files renamed by hand? resume "
             "from a checkpoint whose model and state files agree)", state_path.c_str(), ck.state.step, step);
    if (ck.state.version >= 2 && ck.state.model_checksum != params_checksum(ck.params.data(), n))
        fail("model file '%s' does not match the checksum its training state recorded (the file was changed or "
             "damaged after it was saved)", model_path.c_str());
    return ck;
}

// What is wrong with checkpoint `step` of dir ("" when it reads back whole and checked), with *ck filled when not.
static std::string checkpoint_problem(const std::string& dir, int step, Checkpoint* ck) {
    FailCapture capture;
    try {
        *ck = read_checkpoint(dir, step);
    } catch (const SkError& e) {
        return e.what();
    }
    return "";
}

// The checkpoint of `step` for --resume, or a clear error that names the newest good checkpoint before it.
static Checkpoint resume_checkpoint(const std::string& dir, int step) {
    Checkpoint ck;
    std::string problem = checkpoint_problem(dir, step, &ck);
    if (problem.empty()) return ck;
    std::vector<int> steps = checkpoint_steps(dir);
    for (int i = (int)steps.size() - 1; i >= 0; i--) {
        Checkpoint earlier;
        if (steps[i] >= step || !checkpoint_problem(dir, steps[i], &earlier).empty()) continue;
        fail("--resume '%s': the checkpoint of step %d is unusable: %s. The newest good one is step %d: continue "
             "from it with --resume %s --from-step %d", dir.c_str(), step, problem.c_str(), steps[i], dir.c_str(),
             steps[i]);
    }
    fail("--resume '%s': the checkpoint of step %d is unusable: %s; no earlier checkpoint there is usable either",
         dir.c_str(), step, problem.c_str());
}

// ----------------------------------------------------------------------------------------------------------------
// text generation

// Generates n tokens after `ids` with temperature and top-k (common/sampling.h), one forward pass per token over the
// last max_seq_len positions (no key/value cache: simple, and cheap at the sizes this trainer runs). Only the first
// `vocab_text` ids (the tokenizer's) can be drawn.
static std::vector<int> generate(Engine& e, std::vector<int> ids, int n, float temperature, int top_k,
                                 int vocab_text, uint64_t* rng) {
    const ModelConfig& c = e.config();
    size_t ctx_max = c.max_seq_len - c.attn.sink_token;
    std::vector<int> out;
    std::vector<float> row(c.vocab_size);
    for (int i = 0; i < n; i++) {
        size_t start = ids.size() > ctx_max ? ids.size() - ctx_max : 0;
        int Tc = (int)(ids.size() - start);
        e.forward(ids.data() + start, (const int*)nullptr, 1, Tc);
        e.logits_row(0, Tc - 1, row.data());
        int id = sample_token(row.data(), vocab_text, temperature, top_k, rng);
        ids.push_back(id);
        out.push_back(id);
    }
    return out;
}

// The ids of --prompt, checked against the model's context. Without a tokenizer there is no text to encode: an empty
// prompt starts from id 0, and any other is refused.
static std::vector<int> prompt_ids(const ModelConfig& c, TextCodec* codec, const TrainConfig& tc) {
    if (!codec->available && !tc.prompt.empty())
        fail("flag --prompt: no tokenizer for this model's vocabulary of %d, so the prompt cannot be encoded; pass "
             "--tokenizer FILE (an llm.c tokenizer file), or leave --prompt empty", c.vocab_size);
    std::vector<int> ids = codec->available ? text_encode(codec, tc.prompt) : std::vector<int>{0};
    int context = c.max_seq_len - c.attn.sink_token;
    if (ids.size() >= (size_t)context)
        fail("flag --prompt: %zu tokens leave no room in the model's context of %d tokens (shorten it)", ids.size(),
             context);
    return ids;
}

// One text sample: its generator is seeded from the run's seed and the step, so it is reproducible and leaves the
// training stream untouched.
static std::string sample_text(Engine& e, TextCodec* codec, const TrainConfig& tc, int step) {
    uint64_t rng = tc.seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(step + 1));
    int vocab_text = codec->available ? (int)codec->decoder.tokens.size() : e.config().vocab_size;
    std::vector<int> prompt = prompt_ids(e.config(), codec, tc);
    return text_decode(*codec, generate(e, prompt, tc.sample_len, tc.temperature, tc.top_k, vocab_text, &rng));
}

// ----------------------------------------------------------------------------------------------------------------
// --check-state: one forward/backward on the debug state's batch against its logits, loss and gradients, then (for a
// version-3 state) its AdamW loss curve.
// Tolerances (fp32 here against a reference computed in fp32 by llm.c's PyTorch script, or in fp64 by ours) are
// normalised per tensor, so a small tensor is held to the same standard as a large one:
//   max error  max_i |ours_i - ref_i| / max_i |ref_i|   <= 1e-4
//   L2 error   ||ours - ref||_2 / ||ref||_2             <= 1e-4
// for the logits, the loss and every gradient tensor (a reference that is all zeros is compared absolutely), and
// 1e-3 * |ref| for each loss of the curve (Adam's first steps magnify rounding in near-zero gradients). The fixtures
// measure at most 1.3e-5 (docs/checking.md); a GELU constant changed from 0.044715 to 0.04 measures up to 6e-3
// on the GPT-2 fixture.

#define CHECK_TENSOR_TOL 1e-4

struct CheckResult {
    int failures = 0;
    double worst = 0;  // largest error / allowed
    int sensitive = 0;  // --check-fast: items beyond their fixed allowance, within the model's own sensitivity's
};

// A tensor's errors against its reference: max error / max |ref|, relative L2 and the cosine of the two (each
// absolute where the reference is all zeros; infinite errors where ours is not finite).
struct TensorError {
    double rel_max, rel_l2, cosine, maxref;
};

static TensorError tensor_error(const float* ours, const float* ref, size_t n) {
    double maxerr = 0, maxref = 0, err2 = 0, ref2 = 0, ours2 = 0, dot = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)ours[i] - ref[i];
        maxerr = std::max(maxerr, fabs(d));
        if (!std::isfinite(ours[i])) maxerr = INFINITY;
        maxref = std::max(maxref, fabs((double)ref[i]));
        err2 += d * d;
        ref2 += (double)ref[i] * ref[i];
        ours2 += (double)ours[i] * ours[i];
        dot += (double)ours[i] * ref[i];
    }
    TensorError e;
    e.rel_max = maxref > 0 ? maxerr / maxref : maxerr;
    e.rel_l2 = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2);
    e.cosine = ref2 > 0 && ours2 > 0 ? dot / sqrt(ref2 * ours2) : ref2 == ours2 ? 1 : 0;
    e.maxref = maxref;
    if (!std::isfinite(maxerr)) e.rel_max = e.rel_l2 = INFINITY, e.cosine = NAN;
    return e;
}

static void check_tensor(CheckResult* r, const char* name, const float* ours, const float* ref, size_t n,
                         bool verbose) {
    TensorError e = tensor_error(ours, ref, n);
    double worst = std::max(e.rel_max, e.rel_l2) / CHECK_TENSOR_TOL;
    bool ok = worst <= 1;
    r->failures += !ok;
    r->worst = std::max(r->worst, worst);
    if (verbose || !ok)
        printf("%-10s %-4s max err / max |ref| %.3e  rel L2 %.3e  (allowed %.0e; max |ref| %.3e)\n", name,
               ok ? "ok" : "FAIL", e.rel_max, e.rel_l2, CHECK_TENSOR_TOL, e.maxref);
}

static CheckResult check_state(const std::string& model_path, const std::string& state_path, bool verbose,
                               const EngineOptions& o = EngineOptions()) {
    std::unique_ptr<Engine> e = load_engine(model_path, o);
    const ModelConfig& c = e->config();
    size_t np = e->num_params();
    DebugState s = read_debug_state(state_path, c.vocab_size, np);
    check_seq_len(("debug state '" + state_path + "': T").c_str(), s.T, c);
    CheckResult r;
    float loss = (float)e->forward(s.inputs.data(), s.targets.data(), s.B, s.T);
    int V = c.vocab_size;
    std::vector<float> logits((size_t)s.B * s.T * V);
    for (int b = 0; b < s.B; b++)
        for (int t = 0; t < s.T; t++) e->logits_row(b, t, &logits[((size_t)b * s.T + t) * V]);
    check_tensor(&r, "logits", logits.data(), s.logits.data(), logits.size(), verbose);
    check_tensor(&r, "loss", &loss, &s.loss, 1, verbose);
    e->zero_grad();
    e->backward(1.0f);
    std::vector<float> grads(np);
    e->get_grads(grads.data());
    size_t sizes[NUM_PARAM_TENSORS], off = 0;
    param_sizes(c, sizes);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (sizes[i]) check_tensor(&r, param_names[i], grads.data() + off, s.grads.data() + off, sizes[i], verbose);
        off += sizes[i];
    }
    if (s.n_steps > 0) {
        std::vector<float> curve;
        for (int t = 0; t < s.n_steps; t++) {
            e->zero_grad();
            curve.push_back((float)e->forward(s.inputs.data(), s.targets.data(), s.B, s.T));
            e->backward(1.0f);
            AdamWStep step;
            step.lr = s.lr; step.beta1 = s.beta1; step.beta2 = s.beta2; step.eps = s.adam_eps;
            step.weight_decay = s.weight_decay; step.t = t + 1;
            step.grad_scale = (float)clip_scale(e->grad_norm(), s.grad_clip);
            e->update(step);
        }
        double maxrel = 0;
        for (int t = 0; t < s.n_steps; t++)
            maxrel = std::max(maxrel, fabs((double)curve[t] - s.losses[t]) / fabs((double)s.losses[t]));
        bool ok = maxrel <= 1e-3;
        r.failures += !ok;
        r.worst = std::max(r.worst, maxrel / 1e-3);
        if (verbose || !ok)
            printf("%-10s %-4s %d AdamW steps, losses %.6f -> %.6f (ref %.6f -> %.6f), max rel err %.3e (allowed "
                   "1e-3)\n", "curve", ok ? "ok" : "FAIL", s.n_steps, curve[0], curve.back(), s.losses[0],
                   s.losses.back(), maxrel);
    }
    return r;
}

// ----------------------------------------------------------------------------------------------------------------
// training: start_run sets a run up (from scratch, --load or --resume) and claims its directory; the loop alternates
// measure_and_save (at the intervals of --val-every, --sink-every, --sample-every, --save-every) and train_step;
// finish_run saves and summarises. A stop request (a signal, a closed stdout) or a log that cannot be written ends the
// run at a step boundary with a checkpoint of that step, and says how to continue it.

struct Run {
    TrainConfig tc;                  // the flags, with --seq-len and --total-batch resolved
    std::unique_ptr<Engine> engine;
    std::string out_dir, preset, run_id;
    bool resumed = false;
    TrainState state;                // where the run stands: step, data position, random state (saved with it)
    int start_step = 0;              // the step this invocation started from
    int steps_done = 0;              // updates applied so far (skipped ones count): the step a checkpoint would hold
    int saved_step = -1;             // the step of the newest checkpoint written or resumed from
    int accum = 1;                   // micro-batches per step
    DataLoader train_data, val_data;
    std::string probe_path;
    std::vector<int> probe;
    int probe_seqs = 0;              // tc.probe_seqs, or fewer when the probe shard is small
    TextCodec codec;
    std::vector<int> x, y;           // one micro-batch
    // the log and the lock: the run directory belongs to this run while it holds the lock (flock, released by the
    // kernel however the process ends)
    int log_fd = -1, lock_fd = -1;
    off_t log_size = 0;
    // for the console and the summary
    double start_ms = 0, train_ms = 0, sink_ms = 0;
    double step_flops = 0;           // the model's flops in a training step (model_flops_per_seq)
    int skipped = 0;                 // updates skipped for a non-finite loss or gradient (--on-nonfinite skip)
    double last_loss = NAN, last_val = NAN, best_val = NAN, first_sink = NAN, last_sink = NAN;
    int best_val_step = 0;
    bool sink_thread = false;           // the sink metrics beside training (sink_thread_wanted)
    std::unique_ptr<SinkJob> sink_job;  // the measurement on that thread, until its record is logged
    size_t keep_values = 0;             // the engine's keep arena for that thread's copies (0: none)
    // A log write that failed (a full disk) closes the log to this run: that record and every one after it wait here,
    // in order, and go into every checkpoint saved from then on (the training state's unlogged records); the run
    // stops at the end of the step, and the run that resumes it writes them before its own. Nothing is lost, and
    // nothing is measured twice.
    bool log_broken = false;
    int log_errno = 0;
    std::string unlogged;
    size_t saved_unlogged = 0;  // how much of unlogged the newest checkpoint holds

    ~Run() {
        if (log_fd >= 0) close(log_fd);
        if (lock_fd >= 0) {
            unlink((out_dir + "/run.lock").c_str());
            close(lock_fd);
        }
    }
};

static void save(Run* r, int step);

// The log's own simulated disk (tests; common/file_io.h write_budget).
static long long log_write_budget = -1;
// Tests: how many more log writes succeed before the disk fills (-1: no limit).
static int log_writes_left = -1;

// Appends text (whole lines) to the log with one write. A write that fails or falls short (a full disk) is cut back
// off, so the log never holds a torn line. Returns 0, or the error.
static int log_append(Run* r, const std::string& text) {
    size_t ok = log_writes_left == 0 ? 0 : write_allowance(text.size(), &log_write_budget);
    if (log_writes_left > 0) log_writes_left--;
    ssize_t n = ok ? write(r->log_fd, text.data(), ok) : 0;
    if (n == (ssize_t)text.size()) {
        r->log_size += n;
        return 0;
    }
    int err = n < 0 ? errno : ENOSPC;
    if (ftruncate(r->log_fd, r->log_size) != 0) {
        // the partial record stays; say so, since the log is then one line short of valid JSON
        fprintf(stderr, "error: could not cut a partial record off '%s/log.jsonl': %s\n", r->out_dir.c_str(),
                strerror(errno));
    }
    return err;
}

// Appends one record to the log, the run's id added as its last field. When the write fails, the record and every
// one after it wait in r->unlogged instead (see Run), and the run stops at the end of the step (stop_run).
static void log_line(Run* r, const std::string& json) {
    std::string line = json.substr(0, json.size() - 1) + ",\"run\":\"" + r->run_id + "\"}\n";
    if (!r->log_broken) {
        int err = log_append(r, line);
        if (err == 0) return;
        r->log_broken = true;
        r->log_errno = err;
        fprintf(stderr, "error: writing '%s/log.jsonl' failed: %s; the run stops at the end of this step, keeping "
                "the records it cannot write in its checkpoint\n", r->out_dir.c_str(), strerror(err));
    }
    r->unlogged += line;
}

// The number of records (lines) in text.
static int count_records(const std::string& text) { return (int)std::count(text.begin(), text.end(), '\n'); }

// The unlogged records of the checkpoint a run resumes, into the log before the run's own records, in one write.
// A log that already holds them (an earlier resume of the same checkpoint wrote them) is left as it is.
static void replay_unlogged(Run* r) {
    std::string& replay = r->state.unlogged;  // a resumed run's, from its checkpoint (saves take r->unlogged)
    if (replay.empty()) return;
    std::string path = r->out_dir + "/log.jsonl";
    std::string log;
    if (FILE* f = fopen(path.c_str(), "rb")) {
        char buf[1 << 16];
        for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) log.append(buf, n);
        fclose(f);
    }
    int n = count_records(replay);
    if (log.find(replay) == std::string::npos) {
        int err = log_append(r, replay);
        if (err)
            fail("cannot write '%s': %s. The %d records the run before could not log are still in the checkpoint of "
                 "step %d; free disk space, then continue with --resume %s", path.c_str(), strerror(err), n,
                 r->state.step, r->out_dir.c_str());
        say("note: wrote the %d log record%s that the run before could not write (kept in the checkpoint of step "
            "%d)\n", n, n == 1 ? "" : "s", r->state.step);
    }
    replay.clear();
}

// The training state to save at `step`: the loader's position and the random state as they are now.
static TrainState state_at(const Run* r, int step) {
    TrainState s = r->state;
    s.step = step;
    s.unlogged = r->unlogged;
    s.epoch = r->train_data.epoch;
    s.index = r->train_data.index;
    return s;
}

static void save(Run* r, int step) {
    save_checkpoint(*r->engine, r->out_dir, state_at(r, step), r->tc.keep_last);
    r->saved_step = step;
    r->saved_unlogged = r->unlogged.size();
    say("step %6d | saved %s (and its state)\n", step, ckpt_path(r->out_dir, "model", step).c_str());
}

// The model a run from scratch trains: the flags' configuration with its automatic values resolved.
static ModelConfig model_from_flags(const CommandLine* cl) {
    ModelConfig c = cl->model;
    AttnSpec& at = c.attn;
    int train_len = cl->train.seq_len ? cl->train.seq_len : c.max_seq_len - at.sink_token;
    if (isnan(at.sigmoid_bias))  // --sigmoid-bias auto: -log of the training length (Apple 2024)
        at.sigmoid_bias = -logf((float)train_len);
    if (at.variant == ATTN_CLIPPED && at.clip_len == 0)  // gamma = -alpha / the training positions, kept for good
        at.clip_len = train_len + at.sink_token;
    return c;
}

// The engine of a run: from the checkpoint of --resume (its flags restored into cl), from --load, or built from the
// flags and initialised.
static void start_engine(CommandLine* cl, Run* r) {
    const TrainConfig& flags = cl->train;
    r->out_dir = flags.out_dir;
    r->preset = cl->preset;
    if (!flags.resume_dir.empty()) {
        if (cl->model_flag_seen || !flags.load_path.empty())
            fail("--resume restores the model from its checkpoint; drop the model flags and --load");
        std::string dir = flags.resume_dir;
        int step = flags.from_step >= 0 ? flags.from_step : latest_checkpoint(dir);
        if (step < 0)
            fail("--resume '%s': no model_*.bin with a matching state_*.bin there (nothing to resume)", dir.c_str());
        std::vector<int> steps = checkpoint_steps(dir);
        if (std::find(steps.begin(), steps.end(), step) == steps.end())
            fail("flag --from-step: '%s' holds no checkpoint of step %d (it has %zu, the latest of step %d)",
                 dir.c_str(), step, steps.size(), steps.empty() ? -1 : steps.back());
        Checkpoint ck = resume_checkpoint(dir, step);
        std::string what = ck.state.config.empty()
                               ? "a checkpoint without its flags (an older version): the flags of this command line"
                               : restore_flags(cl, ck.state.config);
        say("resuming %s at step %d: %s\n", dir.c_str(), step, what.c_str());
        r->out_dir = dir;
        r->preset = "resume";
        r->resumed = true;
        r->state = ck.state;
        r->saved_step = step;
        r->engine = make_engine(ck.config, engine_options(cl->train));
        r->engine->set_params(ck.params.data());
        r->engine->set_adam(ck.m.data(), ck.v.data());
    } else if (!flags.load_path.empty()) {
        if (cl->model_flag_seen)
            fail("--load reads the architecture from '%s'; drop the model flags", flags.load_path.c_str());
        r->engine = load_engine(flags.load_path, engine_options(flags));
    } else {
        ModelConfig c = model_from_flags(cl);
        r->engine = make_engine(c, engine_options(flags));
        std::vector<float> params(r->engine->num_params());
        init_params(c, flags.seed, params.data());
        r->engine->set_params(params.data());
    }
    r->tc = cl->train;
}

// The run directory belongs to one run: a lock held while the run lives, and a fresh run refuses a directory that
// already holds a run (its log or checkpoints) unless --overwrite says to delete it. Creating the lock file also
// proves the directory writable before any training.
static void claim_out_dir(Run* r) {
    mkdir_p(r->out_dir);
    std::string lock = r->out_dir + "/run.lock";
    int fd = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        fail("cannot create '%s': %s (is --out writable?)", lock.c_str(), strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        close(fd);
        fail("'%s' is in use by another run (process %s holds %s): wait for it to finish, or give this run "
             "another --out", r->out_dir.c_str(), pid[0] ? pid : "?", lock.c_str());
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, len, 0) != len) {
        close(fd);
        fail("cannot write '%s': %s (is --out writable, with free space?)", lock.c_str(), strerror(errno));
    }
    r->lock_fd = fd;
    if (r->resumed) return;
    std::vector<int> steps = checkpoint_steps(r->out_dir);
    struct stat st;
    bool has_log = stat((r->out_dir + "/log.jsonl").c_str(), &st) == 0;
    if (steps.empty() && !has_log) return;
    if (!r->tc.overwrite)
        fail("'%s' already holds a run (%s%s): continue it with --resume %s, start over with --overwrite (which "
             "deletes it), or give this run another --out", r->out_dir.c_str(), has_log ? "log.jsonl" : "",
             steps.empty() ? "" : (std::string(has_log ? ", " : "") + "checkpoints up to step " +
                                   std::to_string(steps.back())).c_str(),
             r->out_dir.c_str());
    for (int s : steps) {
        unlink(ckpt_path(r->out_dir, "model", s).c_str());
        unlink(ckpt_path(r->out_dir, "state", s).c_str());
    }
    unlink((r->out_dir + "/log.jsonl").c_str());
    say("note: --overwrite: deleted the run in %s\n", r->out_dir.c_str());
}

// A name for this invocation, in every log record: runs appended to one log stay apart.
static std::string new_run_id() {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 48);
    char buf[20];
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)splitmix64(&x));
    return buf;
}

// The vocabulary, the tokenizer and the data agree, or the run says so before it trains.
static void check_vocabulary(const Run* r) {
    const ModelConfig& c = r->engine->config();
    int largest = 0;
    for (const TokenShard& sh : r->train_data.shards)
        for (uint16_t t : sh.tokens) largest = std::max(largest, (int)t);
    if (c.vocab_size > 256 && largest < 256)
        say("warning: the training data uses token ids up to %d only, but the model's vocabulary has %d: byte-level "
            "data for a larger vocabulary? (GPT-2 shards: make data-brown-gpt2; a byte model: --vocab 256)\n",
            largest, c.vocab_size);
    if (!r->codec.available && r->tc.sample_len > 0)
        say("note: no tokenizer for a vocabulary of %d (no --tokenizer, no *_tokenizer.bin beside --train): samples "
            "are logged as token ids\n", c.vocab_size);
}

static void start_run(CommandLine* cl, Run* r) {
    r->start_ms = now_ms();
    if (cl->train.resume_dir.empty()) {  // a missing data file stops the run before the model is built (GPT-2: seconds)
        expand_glob(cl->train.train_glob, "--train");
        expand_glob(cl->train.val_glob, "--val");
    }
    start_engine(cl, r);
    TrainConfig& tc = r->tc;
    const ModelConfig& c = r->engine->config();
    tc.seq_len = check_run_shape(tc, c);
    int B = tc.batch_size, T = tc.seq_len;
    if (tc.total_batch_size == 0) tc.total_batch_size = B * T;
    r->accum = tc.total_batch_size / (B * T);
    if (r->resumed) {
        const TrainState& s = r->state;
        if (s.B != tc.batch_size || s.T != tc.seq_len || s.total_batch != tc.total_batch_size || s.seed != tc.seed)
            fail("--resume: the run was saved with --batch %d --seq-len %d --total-batch %d --seed %llu, which decide "
                 "its data stream; continue it with those values", s.B, s.T, s.total_batch,
                 (unsigned long long)s.seed);
        if (s.step > tc.steps)
            fail("flag --steps: %d is below step %d of the checkpoint in '%s' (pass --steps %d or more to continue it)",
                 tc.steps, s.step, r->out_dir.c_str(), s.step);
    } else {
        r->state.rng = tc.seed;
    }
    r->state.B = B;
    r->state.T = T;
    r->state.total_batch = tc.total_batch_size;
    r->state.seed = tc.seed;
    r->start_step = r->steps_done = r->state.step;
    loader_init(&r->train_data, tc.train_glob, "--train", T, c.vocab_size, tc.seed, true);
    loader_init(&r->val_data, tc.val_glob, "--val", T, c.vocab_size, tc.seed, false);
    if (tc.data_fraction < 1.0f)  // the first fraction of the windows, in file order
        r->train_data.num_windows =
            std::max<size_t>(1, (size_t)(r->train_data.num_windows * (double)tc.data_fraction));
    loader_seek(&r->train_data, r->state.epoch, r->state.index);
    r->probe_path = tc.probe_path.empty() ? expand_glob(tc.val_glob, "--val")[0] : tc.probe_path;
    r->probe = load_probe(tc, c, r->probe_path, &r->probe_seqs);
    r->sink_thread = sink_thread_wanted();
    text_codec_open(&r->codec, tc.tokenizer_path, c.vocab_size, r->train_data.shards[0].path, tc.bpe_dir);
    int sample_T = 0;  // the longest context a sample's forward passes see
    if (tc.sample_len > 0)  // a bad or too long prompt fails now, not at the end
        sample_T = std::min((int)prompt_ids(c, &r->codec, tc).size() + tc.sample_len - 1,
                            c.max_seq_len - c.attn.sink_token);
    check_vocabulary(r);
    r->x.resize((size_t)B * T);
    r->y.resize((size_t)B * T);
    // all the memory the run's passes need, now: a run that does not fit stops before it claims --out
    // the keep arena, where the thread will measure: as many of the probe's chunks as the host's budget takes
    size_t keep = 0;
    bool beside = r->sink_thread && sink_thread_steps(tc, r->start_step + (r->resumed ? 1 : 0));
    if (beside) {
        double budget = std::min(SINK_HOLD_GIB * 1073741824.0, host_memory_bytes() / 8);
        keep = sink_held_chunks(c, r->probe_seqs, tc.probe_len + c.attn.sink_token, (size_t)(budget / sizeof(float)));
    }
    r->keep_values = r->engine->reserve(B, T, std::min(SINK_PROBE_CHUNK, r->probe_seqs), tc.probe_len, sample_T, keep);

    claim_out_dir(r);
    r->run_id = new_run_id();
    std::string log_path = r->out_dir + "/log.jsonl";
    r->log_fd = open(log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (r->log_fd < 0) fail("cannot open log '%s': %s", log_path.c_str(), strerror(errno));
    r->log_size = lseek(r->log_fd, 0, SEEK_END);
    std::string config = config_json(c, tc, r->preset, r->engine->num_params(), omp_get_max_threads());
    r->state.config = config;
    replay_unlogged(r);
    log_line(r, config);
    r->step_flops = model_flops_per_seq(c, T) * ((double)tc.total_batch_size / T);
    std::string peak;  // what the step lines' MFU is measured against (a GPU's)
    if (r->engine->peak_flops() > 0) peak = " | MFU against " + flops_text(r->engine->peak_flops()) + "/s";
    say("sinkscope %s trainer (%s) | %zu parameters, %s a token | L %d C %d NH %d FF %d | %s %s %s %s | B %d T %d "
        "accum %d | %d threads | engine %s%s\n", SK_BACKEND_NAME, sk_device_name(), r->engine->num_params(),
        flops_text(r->step_flops / tc.total_batch_size).c_str(), c.num_layers,
        c.channels, c.num_heads, c.ffn_hidden, norm_names[c.norm], placement_names[c.placement], ffn_names[c.ffn],
        pos_names[c.positions], B, T, r->accum, omp_get_max_threads(), r->engine->describe().c_str(), peak.c_str());
    say("train: %zu windows of %d tokens | val: %zu windows | probe: %d x %d from %s | log: %s\n",
        r->train_data.num_windows, T, r->val_data.num_windows, r->probe_seqs, tc.probe_len, r->probe_path.c_str(),
        log_path.c_str());
    if (beside)
        say("note: sink metrics on a host thread beside training (SK_SINK_THREAD=0: at their step), the probe's copies "
            "%.1f MB; a sink record can come a few steps late in the log, under its own step\n",
            r->keep_values * sizeof(float) / 1e6);
}

// The sink record of step `step` into the log, and its line on the console. ms: what the measurement held training
// up; thread_ms: the time it took beside training, on the thread (< 0: it had none).
static void log_sinks(Run* r, int step, const SinkReport& s, double ms, double thread_ms) {
    JsonRecord rec("sink");
    rec.integer("step", step).num("ms", ms, "%.3f");
    if (thread_ms >= 0) rec.num("thread_ms", thread_ms, "%.3f");
    log_line(r, rec.fields(sink_report_json_fields(s)).str());
    char slot_part[64] = "", thread_part[64] = "";
    if (s.slot_column) snprintf(slot_part, sizeof slot_part, "Sink_* %.2f%% | ", s.sink_star);
    if (thread_ms >= 0) snprintf(thread_part, sizeof thread_part, " (and %.0f ms beside training)", thread_ms);
    say("step %6d | %sSink_1 %.2f%%%s | alpha_1 %.4f | norm ratio (last layer) %.2f | entropy %.3f | "
        "probe %.0f ms%s\n", step, slot_part, s.sink[0], s.proxy ? " (proxy)" : "", s.alpha1_mean,
        s.norm_ratio.back(), s.entropy_mean, ms, thread_part);
    if (std::isnan(r->first_sink)) r->first_sink = s.sink[0];
    r->last_sink = s.sink[0];
}

// The record of the measurement on the thread, if there is one and it is done, or (wait) once it is.
static void collect_sinks(Run* r, bool wait) {
    if (!r->sink_job || (!wait && !r->sink_job->done.load(std::memory_order_acquire))) return;
    double t0 = now_ms();
    r->sink_job->worker.join();
    if (r->sink_job->error)
        fail("the download of the sink probe's copies of step %d failed: %s (SK_SYNC=1 names the kernel that caused a "
             "fault; SK_SINK_THREAD=0 measures at the step instead)", r->sink_job->step, r->sink_job->error);
    double waited = now_ms() - t0;
    r->sink_ms += waited;
    const SinkJob& job = *r->sink_job;
    log_sinks(r, job.step, job.report, job.main_ms + waited, job.thread_ms);
    r->sink_job.reset();
}

// Validation, sink metrics, a text sample and a checkpoint, each when its interval (or the last step) says so.
static void measure_and_save(Run* r, int step, bool last) {
    const TrainConfig& tc = r->tc;
    Engine& e = *r->engine;
    if ((tc.val_every && step % tc.val_every == 0) || last) {
        size_t batches = std::min<size_t>(tc.val_batches, std::max<size_t>(1, r->val_data.num_windows / tc.batch_size));
        double vl = validation_loss(e, &r->val_data, tc, tc.batch_size, (int)batches);
        log_line(r, JsonRecord("val").integer("step", step).num("val_loss", vl).str());
        say("step %6d | val loss %.4f\n", step, vl);
        r->last_val = vl;
        if (!(vl >= r->best_val)) {
            r->best_val = vl;
            r->best_val_step = step;
        }
    }
    if ((tc.sink_every && step % tc.sink_every == 0) || last) {
        collect_sinks(r, true);
        double t0 = now_ms();
        if (r->sink_thread && !last) {  // the last step's record comes before the summary: no thread to wait for
            r->sink_job = start_sink_job(e, r->probe, r->probe_seqs, tc.probe_len, tc.sink_eps, step, r->keep_values);
            r->sink_ms += r->sink_job->main_ms;
        } else {
            SinkReport s = measure_sinks(e, r->probe, r->probe_seqs, tc.probe_len, tc.sink_eps);
            double dt = now_ms() - t0;
            r->sink_ms += dt;
            log_sinks(r, step, s, dt, -1);
        }
    }
    if (tc.sample_len > 0 && ((tc.sample_every && step % tc.sample_every == 0 && step > 0) || last)) {
        std::string text = sample_text(e, &r->codec, tc, step);
        log_line(r, JsonRecord("sample").integer("step", step).str("prompt", tc.prompt).str("text", text).str());
        say("step %6d | sample: %s\n", step, one_line(text).c_str());
    }
    if (tc.save_every && step % tc.save_every == 0 && step > r->start_step && !last) {
        collect_sinks(r, true);  // a record of an earlier step goes into the log before the checkpoint after it
        save(r, step);
    }
}

// One optimizer step: accum micro-batches forward and backward, the non-finite guard, clipping, AdamW.
static void train_step(Run* r, int step) {
    const TrainConfig& tc = r->tc;
    Engine& e = *r->engine;
    int B = tc.batch_size, T = tc.seq_len, V = e.config().vocab_size;
    std::string why;
    if (thread_governor().update(&why))
        say("note: %s (results do not depend on it; --threads N fixes it)\n", why.c_str());
    SK_PROFILE_WINDOW();
    double t0 = now_ms();
    e.zero_grad();
    for (int micro = 0; micro < r->accum; micro++) {
        loader_next_batch(&r->train_data, B, r->x.data(), r->y.data());
        apply_data_manipulations(tc, r->x.data(), r->y.data(), B, T, V, &r->state.rng);
        e.train_micro(r->x.data(), r->y.data(), B, T, r->accum);
    }
    float lr = lr_at(tc, step);
    // A NaN or Inf in the loss or in a gradient (the norm is finite exactly when every gradient is) is caught at the
    // step it appears, by the engine, before the update would carry it into every weight and both AdamW moments.
    e.guarded_update(adamw_step(tc, lr, step, 0.0), tc.grad_clip);
    StepResult result = e.step_result();  // the step's one read
    double loss = result.loss, gn = result.grad_norm;
    if (!result.updated) {
        std::vector<float> grads(e.num_params());
        e.get_grads(grads.data());
        std::string first = first_nonfinite_param(e.config(), grads.data());
        if (first.empty()) first = "none (only the loss)";
        if (tc.on_nonfinite == NONFINITE_STOP) {
            collect_sinks(r, true);  // the last measurement before the divergence stays in the log
            fail("step %d: the loss (%g) or a gradient is not finite; first non-finite gradient: %s. Stopped before "
                 "the update, so no checkpoint holds it (those already in '%s' are intact); lower --lr, raise "
                 "--warmup or set --grad-clip, or pass --on-nonfinite skip to skip such steps", step + 1,
                 std::isnan(loss) ? NAN : loss,  // "nan" whatever the NaN's sign bit
                 first.c_str(), r->out_dir.c_str());
        }
        r->skipped++;
        r->steps_done = step + 1;
        log_line(r, JsonRecord("nonfinite").integer("step", step + 1).num("loss", loss).num("grad_norm", gn)
                        .str("first", first).str("action", "skip").str());
        say("step %6d/%d | loss %.4f | non-finite gradient (first: %s) | update skipped\n", step + 1, tc.steps,
            std::isnan(loss) ? NAN : loss, first.c_str());
        return;
    }
    r->steps_done = step + 1;
    r->last_loss = loss;
    double dt = now_ms() - t0;
    r->train_ms += dt;
    double tok_s = tc.total_batch_size / (dt / 1e3);
    // the model's flops a second (model_flops_per_seq), and on a GPU their share of its peak (MFU)
    double rate = r->step_flops / (dt / 1e3), peak = r->engine->peak_flops();
    JsonRecord rec("train");
    rec.integer("step", step + 1).num("loss", loss).num("lr", lr).num("grad_norm", gn).num("ms", dt, "%.3f")
        .num("tok_per_s", tok_s, "%.1f").num("flops_per_s", rate, "%.4g");
    if (peak > 0) rec.num("mfu", rate / peak, "%.4f");
    log_line(r, rec.integer("threads", thread_governor().threads).str());
    int done = step + 1 - r->start_step, left = tc.steps - step - 1;
    if ((step + 1) % tc.print_every == 0 || done == 1 || left == 0) {
        double elapsed = now_ms() - r->start_ms;
        char mfu[32] = "";
        if (peak > 0) snprintf(mfu, sizeof mfu, " %.1f%% MFU", 100 * rate / peak);
        say("step %6d/%d | loss %.4f | lr %.2e | norm %6.3f | %6.0f ms | %7.0f tok/s | %s/s%s | elapsed %s | eta %s\n",
            step + 1, tc.steps, loss, lr, gn, dt, tok_s, flops_text(rate).c_str(), mfu,
            clock_text(elapsed).c_str(), clock_text(elapsed / done * left).c_str());
    }
}

// A checkpoint of the last finished step, unless the newest one is of it and holds every unlogged record.
static void save_if_behind(Run* r) {
    if (r->steps_done != r->saved_step || r->unlogged.size() != r->saved_unlogged) save(r, r->steps_done);
}

// After a stop request or a log that could not be written: a checkpoint of the last finished step (with the records
// the log could not take), a record, and how to continue. Returns the exit status: 128 + the signal (130 for Ctrl-C,
// 143 for SIGTERM, 141 for a closed stdout); a log that could not be written fails (exit 1).
static int stop_run(Run* r) {
    int sig = stop_requested;
    collect_sinks(r, true);
    save_if_behind(r);
    const char* why = sig == SIGINT ? "SIGINT (Ctrl-C)" : sig == SIGTERM ? "SIGTERM" : sig == SIGPIPE ? "closed stdout"
                                                                                                    : "a signal";
    if (sig) {
        log_line(r, JsonRecord("stopped").integer("step", r->steps_done).str("reason", why).str());
        save_if_behind(r);  // when the log is broken, the checkpoint keeps that record too
    }
    if (r->log_broken)
        fail("the run stopped at step %d because its log '%s/log.jsonl' could not be written (%s); every record "
             "before stayed whole, and the %d after it are kept in the checkpoint of step %d, which writes them into "
             "the log when it resumes. Free disk space, then continue it with --resume %s", r->steps_done,
             r->out_dir.c_str(), strerror(r->log_errno), count_records(r->unlogged), r->saved_step,
             r->out_dir.c_str());
    fprintf(stderr, "stopped by %s at step %d of %d; checkpoint %s. Continue with: %s --resume %s\n", why,
            r->steps_done, r->tc.steps, ckpt_path(r->out_dir, "model", r->steps_done).c_str(), SK_PROGRAM,
            r->out_dir.c_str());
    return 128 + sig;
}

// The end of a run: the done record and a summary. Returns the exit status: 1 when most updates were skipped.
static int finish_run(Run* r) {
    const TrainConfig& tc = r->tc;
    int steps = tc.steps - r->start_step;
    log_line(r, JsonRecord("done").integer("step", tc.steps).num("train_ms", r->train_ms, "%.1f")
                    .num("sink_ms", r->sink_ms, "%.1f")
                    .num("sink_overhead", r->train_ms > 0 ? r->sink_ms / r->train_ms : 0.0, "%.5f")
                    .integer("skipped_steps", r->skipped).str());
    bool done_logged = !r->log_broken;
    char loss[48] = "", val[96] = "", sink[64] = "";
    if (!std::isnan(r->last_loss)) snprintf(loss, sizeof loss, " | train loss %.4f", r->last_loss);
    if (!std::isnan(r->last_val))
        snprintf(val, sizeof val, " | val loss %.4f (best %.4f at step %d)", r->last_val, r->best_val,
                 r->best_val_step);
    if (!std::isnan(r->last_sink)) snprintf(sink, sizeof sink, " | Sink_1 %.2f%% -> %.2f%%", r->first_sink, r->last_sink);
    say("done: %d steps, %.3gM tokens in %s%s%s%s | %d updates skipped | sink metrics %.2f%% of training time | "
        "model memory at most %.3f GiB\n", steps, (double)steps * tc.total_batch_size / 1e6,
        clock_text(now_ms() - r->start_ms).c_str(), loss, val, sink, r->skipped,
        r->train_ms > 0 ? 100.0 * r->sink_ms / r->train_ms : 0.0, sk_memory_use().peak / 1073741824.0);
    say("files: %s/log.jsonl, %s\n", r->out_dir.c_str(), ckpt_path(r->out_dir, "model", tc.steps).c_str());
    if (profile().on) {  // SK_PROFILE=1: where the time went (common/profile.h)
        JsonRecord rec("profile");
        double total = r->train_ms + r->sink_ms, known = 0;
        say("time:");
        for (int k = 0; k < PROF_KINDS; k++) {
            rec.num(prof_names[k], profile().ms[k], "%.1f");
            say(" %s %.1f%%", prof_names[k], total > 0 ? 100.0 * profile().ms[k] / total : 0.0);
            known += profile().ms[k];
        }
        rec.num("other", total - known, "%.1f").num("total", total, "%.1f");
        say(" other %.1f%% (of %.0f ms)\n", total > 0 ? 100.0 * (total - known) / total : 0.0, total);
        log_line(r, rec.str());
    }
    if (r->log_broken && done_logged)
        fail("the run finished and its log holds its summary, but the profile record could not be written to '%s/"
             "log.jsonl' (%s); nothing else is missing", r->out_dir.c_str(), strerror(r->log_errno));
    if (r->log_broken)  // the done record: the run that resumes at the last step writes one of its own
        fail("the run finished (its final checkpoint %s is saved), but its log '%s/log.jsonl' could not be written "
             "(%s), so its summary record is missing. Free disk space, then run --resume %s, which writes it",
             ckpt_path(r->out_dir, "model", tc.steps).c_str(), r->out_dir.c_str(), strerror(r->log_errno),
             r->out_dir.c_str());
    if (r->skipped > 0 && 2 * r->skipped > steps) {
        fprintf(stderr, "error: %d of %d updates were skipped for non-finite values (--on-nonfinite skip): the run "
                "diverged; lower --lr, raise --warmup or set --grad-clip\n", r->skipped, steps);
        return 1;
    }
    if (r->skipped > 0)
        fprintf(stderr, "warning: %d of %d updates were skipped for non-finite values (--on-nonfinite skip)\n",
                r->skipped, steps);
    return 0;
}

static int train(CommandLine* cl) {
    Run r;
    start_run(cl, &r);
    for (int step = r.start_step;; step++) {
        bool last = step == r.tc.steps;
        collect_sinks(&r, last);  // a measurement beside training, when it is done (at the end: waited for)
        if (last && step != r.saved_step)  // the final checkpoint first: nothing after it can lose the run
            save(&r, step);
        if (step > r.start_step || !r.resumed)  // a resumed run does not re-measure its saved step
            measure_and_save(&r, step, last);
        // a stop comes after the step's measurements, so the checkpoint it saves has them in the log (the run that
        // resumes it does not measure its step again)
        if (stop_requested || r.log_broken) return stop_run(&r);
        if (last) break;
        train_step(&r, step);
    }
    return finish_run(&r);
}

// ----------------------------------------------------------------------------------------------------------------
// the other modes

// The sink metrics of a report for a person: what the JSON line holds, in a few lines.
static void print_sink_report(const SinkReport& s) {
    say("Sink_1..3 %.2f%% %.2f%% %.2f%%%s (eps %.2g, %d x %d probe)", s.sink[0], s.sink[1], s.sink[2],
        s.proxy ? " (proxy scores)" : "", (double)s.eps, s.seqs, s.T);
    if (s.slot_column) say(" | Sink_* %.2f%%", s.sink_star);
    say("\nalpha_1 mean %.4f | entropy %.3f\n", s.alpha1_mean, s.entropy_mean);
    say("first-token norm ratio by layer (0 = embeddings):");
    for (double x : s.norm_ratio) say(" %.2f", x);
    say("\ntop-1 / median |h| by layer:");
    for (double x : s.top1_median) say(" %.1f", x);
    if (s.proxy) {
        say("\nrow mass by layer:");
        for (double x : s.row_mass) say(" %.3f", x);
    }
    say("\n");
}

// ----------------------------------------------------------------------------------------------------------------
// --check-fast: the fast engine against the exact one in one process on one device, from the same parameters (the
// model of --load, or the flags' model initialised from --seed) on the same batch (the first --batch windows of
// --train in file order, with the data manipulations):
//   one forward/backward: the loss, the logits of the first sequence and every gradient tensor, each by relative L2
//   error (checked), max error / max |exact| and cosine (shown);
//   the probe (as --eval-sink reads it): alpha_1, the mean attention on the first token (checked absolutely);
//   CHECK_FAST_STEPS AdamW steps on that batch at --lr: each step's loss (checked relatively).
// Allowed errors by --precision (provisional, from the issue that asked for this check; to be set at about 10x what
// the first GPU run measures): fp32 1e-4 per tensor and 1e-3 on the losses and alpha_1, tf32 5e-3 and 1e-2, bf16
// 5e-2 and 5e-2. On the CPU (streamed against row-form attention, fp32) the fixtures measure about 1e-6
// (test_engine.cpp). A model that is itself sensitive to rounding (softpick's kink, linear attention's cancelling
// sums) may get more for its gradients, alpha_1 and curve: SENSITIVITY_FACTOR below.

#define CHECK_FAST_STEPS 5

struct FastTolerance {
    double tensor, curve;
};
static const FastTolerance fast_tolerances[PRECISION_NUM_KINDS] = {{1e-4, 1e-3}, {5e-3, 1e-2}, {5e-2, 5e-2}};

// One checked number: its error, against what is allowed.
static void check_fast_value(CheckResult* r, const char* name, double err, double allowed, const std::string& detail,
                             bool verbose) {
    double worst = std::isfinite(err) ? err / allowed : INFINITY;
    bool ok = worst <= 1;
    r->failures += !ok;
    r->worst = std::max(r->worst, worst);
    if (verbose || !ok) printf("%-10s %-4s %s (allowed %.0e)\n", name, ok ? "ok" : "FAIL", detail.c_str(), allowed);
}

// One compared result of --check-fast: its error (a tensor's relative L2; alpha_1's absolute difference; the curve's
// largest relative error of a step's loss) and the line that shows it.
struct FastCheckItem {
    std::string name, detail;
    double err = 0;
    bool curve_kind = false;  // judged by the curve's allowance (alpha_1, the curve)
};

static FastCheckItem fast_check_tensor_item(const char* name, const float* fast, const float* exact, size_t n) {
    TensorError e = tensor_error(fast, exact, n);
    char detail[160];
    snprintf(detail, sizeof detail, "rel L2 %.3e  max err / max |exact| %.3e  cosine %.9f", e.rel_l2, e.rel_max,
             e.cosine);
    return {name, detail, e.rel_l2, false};
}

static void check_fast_tensor(CheckResult* r, const char* name, const float* fast, const float* exact, size_t n,
                              double allowed, bool verbose) {
    FastCheckItem it = fast_check_tensor_item(name, fast, exact, n);
    check_fast_value(r, name, it.err, allowed, it.detail, verbose);
}

// What --check-fast compares of one engine: one forward/backward on the batch (the loss, the first sequence's logits,
// every gradient), alpha_1 on the probe, and the losses of CHECK_FAST_STEPS AdamW steps from fresh moments.
struct FastCheckRun {
    float loss = 0;
    std::vector<float> logits, grads;
    double alpha1 = 0;
    std::vector<double> curve;
};

struct FastCheckInput {
    std::vector<int> x, y, probe;
    int B = 0, T = 0, probe_seqs = 0;
};

static FastCheckRun fast_check_run(Engine& e, const std::vector<float>& params, const FastCheckInput& in,
                                   const TrainConfig& tc) {
    FastCheckRun run;
    size_t n = params.size();
    int V = e.config().vocab_size;
    e.set_params(params.data());
    std::vector<float> zeros(n, 0.0f);
    e.set_adam(zeros.data(), zeros.data());
    run.loss = (float)e.forward(in.x.data(), in.y.data(), in.B, in.T);
    run.logits.resize((size_t)in.T * V);
    for (int t = 0; t < in.T; t++) e.logits_row(0, t, &run.logits[(size_t)t * V]);
    e.zero_grad();
    e.backward(1.0f);
    run.grads.resize(n);
    e.get_grads(run.grads.data());
    run.alpha1 = measure_sinks(e, in.probe, in.probe_seqs, tc.probe_len, tc.sink_eps).alpha1_mean;
    for (int step = 0; step < CHECK_FAST_STEPS; step++) {
        e.zero_grad();
        run.curve.push_back(e.forward(in.x.data(), in.y.data(), in.B, in.T));
        e.backward(1.0f);
        e.update(adamw_step(tc, tc.lr, step, e.grad_norm()));
    }
    return run;
}

// The errors of a run against the exact engine's, in --check-fast's order: the loss, the logits, each gradient
// tensor, alpha_1, the curve.
static std::vector<FastCheckItem> fast_check_items(const FastCheckRun& got, const FastCheckRun& ref,
                                                   const ModelConfig& c, const TrainConfig& tc, const char* label) {
    std::vector<FastCheckItem> items;
    char detail[200];
    items.push_back(fast_check_tensor_item("loss", &got.loss, &ref.loss, 1));
    items.push_back(fast_check_tensor_item("logits", got.logits.data(), ref.logits.data(), ref.logits.size()));
    size_t sizes[NUM_PARAM_TENSORS], off = 0;
    param_sizes(c, sizes);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (sizes[i])
            items.push_back(fast_check_tensor_item(param_names[i], got.grads.data() + off, ref.grads.data() + off,
                                                   sizes[i]));
        off += sizes[i];
    }
    double da = fabs(got.alpha1 - ref.alpha1);
    snprintf(detail, sizeof detail, "%s %.6f  exact %.6f  difference %.3e", label, got.alpha1, ref.alpha1, da);
    items.push_back({"alpha_1", detail, std::isfinite(got.alpha1) ? da : INFINITY, true});
    double worst_step = 0;
    for (int step = 0; step < CHECK_FAST_STEPS; step++) {
        double e = fabs(got.curve[step] - ref.curve[step]) / fabs(ref.curve[step]);
        worst_step = std::isfinite(e) ? std::max(worst_step, e) : INFINITY;
    }
    snprintf(detail, sizeof detail, "%d AdamW steps at lr %g: %s %.6f -> %.6f, exact %.6f -> %.6f, max rel err %.3e",
             CHECK_FAST_STEPS, tc.lr, label, got.curve[0], got.curve.back(), ref.curve[0], ref.curve.back(),
             worst_step);
    items.push_back({"curve", detail, worst_step, true});
    return items;
}

// The exact engine's own sensitivity, at fp32: its run from parameters each moved by SENSITIVITY_NUDGE of themselves
// (p (1 + u 2^-20), u uniform in [-1, 1]: about how far the fast engine's fp32 forward is from the exact one, 1e-6 in
// every design of dev/precision_table.sh, from summing in other orders) against its run from the parameters
// themselves. A well-conditioned model moves its gradients by about that much; where a row map has a kink (softpick's
// relu at 0: a score moved across 0 changes its gradient by a jump) or a sum cancels (linear attention), by 100x more,
// and so do the fast engine's reordered sums. --check-fast at fp32 then allows the gradients, alpha_1 and the curve
// SENSITIVITY_FACTOR times this change where that is more than their fixed allowance, which for a well-conditioned
// model it is not. The loss and the logits (the forward, well-conditioned in every design) keep theirs, and the nudge
// is a constant, so nothing the fast engine computes can widen an allowance. Computed only when something fails its
// fixed allowance. At tf32 and bf16 nothing is relaxed: there a failure is the precision's own effect on a sensitive
// design (dev/precision_table.sh shows which), or a bug; --precision fp32 tells the two apart.
#define SENSITIVITY_FACTOR 10
#define SENSITIVITY_NUDGE 0x1p-20
static std::vector<float> nudged_params(const std::vector<float>& params, double scale, uint64_t seed) {
    std::vector<float> out(params);
    uint64_t rng = seed ^ 0x5eed5eed5eedull;
    for (float& p : out) {
        double u = (double)(splitmix64(&rng) >> 11) * 0x1p-53 * 2 - 1;
        p = (float)(p * (1 + u * scale));
    }
    return out;
}

// The verdict on each item (fast_check_items' order: loss, logits, gradients, alpha_1, curve): its fixed allowance, or
// for a gradient, alpha_1 and the curve SENSITIVITY_FACTOR times the exact engine's own change (own, when measured)
// where that is larger.
static CheckResult judge_fast_check(const std::vector<FastCheckItem>& items, const std::vector<FastCheckItem>& own,
                                    const FastTolerance& tol, bool verbose) {
    CheckResult r;
    for (size_t i = 0; i < items.size(); i++) {
        const FastCheckItem& it = items[i];
        double fixed = it.curve_kind ? tol.curve : tol.tensor, allowed = fixed;
        std::string detail = it.detail;
        bool forward = it.name == "loss" || it.name == "logits";
        if (!forward && i < own.size() && std::isfinite(own[i].err) && SENSITIVITY_FACTOR * own[i].err > fixed) {
            allowed = SENSITIVITY_FACTOR * own[i].err;
            char more[120];
            snprintf(more, sizeof more, "  [exact engine's own change %.3e: allowed %d x that]", own[i].err,
                     SENSITIVITY_FACTOR);
            detail += more;
            r.sensitive += it.err > fixed && it.err <= allowed;
        }
        check_fast_value(&r, it.name.c_str(), it.err, allowed, detail, verbose);
    }
    return r;
}

static CheckResult check_fast(const CommandLine* cl, bool verbose) {
    const TrainConfig& tc = cl->train;
    EngineOptions fast = engine_options(tc), exact;
    std::vector<float> params;
    ModelConfig c;
    if (!tc.load_path.empty()) c = read_model_file(tc.load_path, &params);
    else c = model_from_flags(cl);
    FastCheckInput in;  // the batch and the probe first: a missing data file stops it before the model is built
    in.B = tc.batch_size;
    in.T = tc.seq_len ? tc.seq_len : c.max_seq_len - c.attn.sink_token;
    int V = c.vocab_size;
    check_seq_len("flag --seq-len", in.T, c);
    validate_data_manipulations(tc, V, in.T, "--seq-len");
    DataLoader data;
    loader_init(&data, tc.train_glob, "--train", in.T, V, tc.seed, false);
    in.x.resize((size_t)in.B * in.T);
    in.y.resize((size_t)in.B * in.T);
    loader_next_batch(&data, in.B, in.x.data(), in.y.data());
    uint64_t rng = EVAL_DATA_SEED;
    apply_data_manipulations(tc, in.x.data(), in.y.data(), in.B, in.T, V, &rng);
    std::string probe_path = tc.probe_path.empty() ? expand_glob(tc.val_glob, "--val")[0] : tc.probe_path;
    check_seq_len("flag --probe-len", tc.probe_len, c);
    validate_data_manipulations(tc, V, tc.probe_len, "--probe-len");
    in.probe = load_probe(tc, c, probe_path, &in.probe_seqs);
    if (tc.load_path.empty()) {
        params.resize(param_count(c));
        init_params(c, tc.seed, params.data());
    }
    std::unique_ptr<Engine> engines[2] = {make_engine(c, exact), make_engine(c, fast)};
    const FastTolerance& tol = fast_tolerances[fast.precision];
    say("--check-fast: %s, against the exact engine | %zu parameters | B %d T %d | probe %d x %d\n",
        engines[1]->describe().c_str(), params.size(), in.B, in.T, in.probe_seqs, tc.probe_len);
    FastCheckRun ref = fast_check_run(*engines[0], params, in, tc);
    FastCheckRun got = fast_check_run(*engines[1], params, in, tc);
    std::vector<FastCheckItem> items = fast_check_items(got, ref, c, tc, "fast");
    bool beyond = false;
    for (const FastCheckItem& it : items) beyond |= !(it.err <= (it.curve_kind ? tol.curve : tol.tensor));
    std::vector<FastCheckItem> own;  // the exact engine's sensitivity, when something needs it
    if (beyond && fast.precision == PRECISION_FP32) {
        FastCheckRun nudged = fast_check_run(*engines[0], nudged_params(params, SENSITIVITY_NUDGE, tc.seed), in, tc);
        own = fast_check_items(nudged, ref, c, tc, "nudged");
    }
    CheckResult r = judge_fast_check(items, own, tol, verbose);
    if (r.sensitive)
        say("note: this model is itself sensitive to rounding (a kink like softpick's, or cancelling sums): the exact "
            "engine, run from parameters moved by up to %.1e of themselves, changed some results by more than a tenth "
            "of their allowance, and %d x that change is allowed for them; a bug smaller than that cannot be told "
            "from rounding here (docs/gpu.md)\n", SENSITIVITY_NUDGE, SENSITIVITY_FACTOR);
    if (r.failures && fast.precision != PRECISION_FP32)
        say("note: at %s, rounding alone can exceed these allowances where a design is sensitive to it (softpick, "
            "linear attention: docs/gpu.md). What the rounding alone does to this model: ./train_gpt_cpu "
            "--check-fast with the same flags (the CPU rounds the matmul inputs to %s). A kernel bug also fails "
            "--precision fp32\n", precision_names[fast.precision], precision_names[fast.precision]);
    return r;
}

static int eval_sink(CommandLine* cl) {
    const TrainConfig& tc = cl->train;
    std::string probe_path = tc.probe_path.empty() ? expand_glob(tc.val_glob, "--val")[0] : tc.probe_path;
    std::unique_ptr<Engine> e = load_engine(tc.load_path, engine_options(tc));
    const ModelConfig& c = e->config();
    check_seq_len("flag --probe-len", tc.probe_len, c);
    validate_data_manipulations(tc, c.vocab_size, tc.probe_len, "--probe-len");
    int seqs = 0;
    std::vector<int> probe = load_probe(tc, c, probe_path, &seqs);
    SinkReport r = measure_sinks(*e, probe, seqs, tc.probe_len, tc.sink_eps);
    if (!tc.json) print_sink_report(r);
    say("{\"checkpoint\":\"%s\",\"probe\":\"%s\",%s}\n", json_escape(tc.load_path).c_str(),
        json_escape(probe_path).c_str(), sink_report_json_fields(r).c_str());
    return 0;
}

static int eval_sample(CommandLine* cl) {
    const TrainConfig& tc = cl->train;
    std::unique_ptr<Engine> e = load_engine(tc.load_path, engine_options(tc));
    TextCodec codec;
    text_codec_open(&codec, tc.tokenizer_path, e->config().vocab_size, "", tc.bpe_dir);
    std::string text = sample_text(*e, &codec, tc, 0);
    say("%s%s\n", tc.prompt.c_str(), text.c_str());
    return 0;
}

// The whole program around an engine: parse the flags, then one of the four modes.
static int trainer_main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);  // a line at a time, also into a pipe or a file
    CommandLine cl;
    parse_command_line(argc, argv, &cl);
    thread_governor().start(cl.train.threads);
    engine_options(cl.train);  // a --precision the engine cannot take stops here
    sk_backend_init();         // the GPU build stops here with a clear message when no GPU exists
    if (cl.train.sample) return eval_sample(&cl);
    if (cl.train.eval_sink) return eval_sink(&cl);
    if (cl.train.check_fast) {
        CheckResult r = check_fast(&cl, true);
        say("%s: %d check(s) beyond tolerance (worst error %.3g of its allowance)\n", r.failures ? "FAIL" : "OK",
            r.failures, r.worst);
        return r.failures ? 1 : 0;
    }
    if (!cl.train.check_state_path.empty()) {
        CheckResult r = check_state(cl.train.load_path, cl.train.check_state_path, true, engine_options(cl.train));
        say("%s: %d tensor(s) beyond tolerance (worst error %.3g of its allowance)\n", r.failures ? "FAIL" : "OK",
            r.failures, r.worst);
        return r.failures ? 1 : 0;
    }
    install_stop_handlers();
    return train(&cl);
}
