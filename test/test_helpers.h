// test/test_helpers.h: shared helpers of the Catch2 tests (each test file #includes the trainer with TESTING defined).
#pragma once
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"
#define TESTING
#include "../train_gpt_cpu.cpp"
#include "../kernels/attention_flash.cuh"

static inline std::vector<double> random_vec(size_t n, std::mt19937_64& rng, double scale = 1.0) {
    std::normal_distribution<double> nd(0.0, scale);
    std::vector<double> v(n);
    for (double& x : v) x = nd(rng);
    return v;
}

// Checks the analytic gradient of loss(x) against central finite differences in double precision at every index of
// x (or at `samples` random indices when given). Returns the largest error relative to max(1e-3, |numeric|).
static inline double fd_check(std::vector<double>& x, const std::vector<double>& analytic,
                              const std::function<double()>& loss, size_t samples = 0, uint64_t seed = 1,
                              double h = 1e-5) {
    double worst = 0;
    std::mt19937_64 rng(seed);
    size_t n = samples ? samples : x.size();
    for (size_t s = 0; s < n; s++) {
        size_t i = samples ? rng() % x.size() : s;
        double keep = x[i];
        x[i] = keep + h;
        double lp = loss();
        x[i] = keep - h;
        double lm = loss();
        x[i] = keep;
        double numeric = (lp - lm) / (2 * h);
        double err = fabs(numeric - analytic[i]) / std::max(1e-3, fabs(numeric));
        worst = std::max(worst, err);
    }
    return worst;
}

// Builds a double-precision model of config c with init from `seed`, nudges every nonzero parameter (so norms are not
// all 1 and symmetric inits are broken), and checks the gradient of every parameter tensor of the loss on (x, y)
// against central finite differences: `samples` random entries per tensor (0 = every entry) for the big tensors,
// every entry of the attention-variant tensors (sink token, slots, feature map, gate), which are small.
static inline void check_model_gradients(const ModelConfig& c, const std::vector<int>& x, const std::vector<int>& y,
                                         int B, int T, uint64_t seed, size_t samples, double h, double tol) {
    std::mt19937_64 rng(seed);
    Model<double> m;
    model_build(&m, c);
    model_init(&m, seed);
    std::normal_distribution<double> nd(0.0, 0.3);
    for (double& p : m.params) p += p != 0 ? nd(rng) : 0.0;
    Acts<double> a;
    model_forward(&m, &a, x.data(), y.data(), B, T);
    model_backward(&m, &a, 1.0);
    std::vector<double> analytic = m.grads.to_host();
    size_t off = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        if (!m.sizes[t]) continue;
        INFO("tensor " << param_names[t]);
        std::vector<double> slice(m.params.begin() + off, m.params.begin() + off + m.sizes[t]);
        std::vector<double> gslice(analytic.begin() + off, analytic.begin() + off + m.sizes[t]);
        auto sliced_loss = [&] {
            std::copy(slice.begin(), slice.end(), m.params.begin() + off);
            return model_forward(&m, &a, x.data(), y.data(), B, T);
        };
        double err = fd_check(slice, gslice, sliced_loss, t >= P_SINKTOK ? 0 : samples, seed * 31 + t, h);
        std::copy(slice.begin(), slice.end(), m.params.begin() + off);
        CHECK(err < tol);
        off += m.sizes[t];
    }
}

static inline double dot(const std::vector<double>& a, const double* b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

// The names <name> of the fixtures <name><suffix> in test/fixtures (suffix "_state.bin": 35, the architecture options
// and every attention variant).
static inline std::vector<std::string> fixture_names(const char* suffix) {
    std::vector<std::string> names;
    for (const std::string& path : expand_glob(fixture(std::string("*") + suffix), "fixtures")) {
        std::string base = path.substr(path.rfind('/') + 1);
        names.push_back(base.substr(0, base.size() - strlen(suffix)));
    }
    return names;
}

// A tiny training setup on synthetic shards (tokens < 32) in its own directory: 2 layers of 4 heads, C 16, T 16.
struct TinyRun {
    std::string dir;
    CommandLine cl;
};

static TinyRun tiny_run(int steps) {
    TinyRun r;
    r.dir = temp_dir();
    // a learnable stream: the next token is the previous one plus 1 (mod 32), or random one time in ten
    std::vector<uint16_t> train_toks(3000), val_toks(600);
    uint64_t s = 99;
    for (auto* toks : {&train_toks, &val_toks})
        for (size_t i = 0; i < toks->size(); i++)
            (*toks)[i] = (uint16_t)(i == 0 || splitmix64(&s) % 10 == 0 ? splitmix64(&s) % 32 : ((*toks)[i - 1] + 1) % 32);
    write_shard(r.dir + "/train.bin", train_toks);
    write_shard(r.dir + "/val.bin", val_toks);
    r.cl.model = make_config(16, 32, 2, 4, 16, 32, NORM_RMSNORM, PLACE_PRE, FFN_SWIGLU, POS_ROPE, 0, 0, INIT_LLAMA);
    TrainConfig& t = r.cl.train;
    t.train_glob = r.dir + "/train.bin";
    t.val_glob = r.dir + "/val.bin";
    t.out_dir = r.dir + "/run";
    t.batch_size = 4; t.seq_len = 16; t.total_batch_size = 128;  // 2 micro-batches per step
    t.steps = steps; t.warmup_steps = 2; t.lr = 1e-2f; t.lr_schedule = LR_COSINE;
    t.val_every = 2; t.val_batches = 2; t.sink_every = 2; t.probe_seqs = 3; t.probe_len = 16;
    return r;
}


// tiny_run's data and model as trainer flags (steps, engine and --out left to the caller), its sink metrics every
// sink_every steps and samples every 3
static std::string tiny_run_flags(const TinyRun& r, int sink_every = 3) {
    return " --train " + r.dir + "/train.bin --val " + r.dir + "/val.bin --vocab 32 --max-seq-len 17 --layers 2 "
           "--heads 4 --channels 16 --ffn-hidden 32 --batch 4 --seq-len 16 --warmup 2 --val-every 3 --val-batches 2 "
           "--sink-every " + std::to_string(sink_every) + " --probe-seqs 12 --probe-len 16 --sample-every 3 "
           "--sample-len 12 --temperature 0.8";
}

// SK_SINK_THREAD (the sink metrics on a host thread) set for the length of a scope.
struct SinkThreadEnv {
    explicit SinkThreadEnv(const char* v) { setenv("SK_SINK_THREAD", v, 1); }
    ~SinkThreadEnv() { unsetenv("SK_SINK_THREAD"); }
};

// The numbers of a training state file: step, data position, random state and AdamW moments (header[2..15] and the
// moments), without what differs between two runs that computed the same (the saved flags, their checksum).
static inline std::string state_numbers(const std::string& path) {
    std::string b = slurp(path);
    if (b.size() < 1024) return b;
    uint64_t n;
    memcpy(&n, &b[56], 8);
    return b.substr(8, 56) + b.substr(1024, 8 * n);
}

// Runs `bin` (a trainer) with `flags` for 6 steps, and again for 3 steps resumed to 6: the two give the same model
// after 3 steps (the same bits run to run) and the same model and training state after 6 (a resumed run continues bit
// for bit), and training moved the weights in between.
static inline void check_repeat_and_resume(const std::string& bin, const std::string& flags) {
    std::string dir = temp_dir();
    auto run = [](const std::string& cmd) {
        std::string out;
        int rc = run_command(cmd, &out);
        INFO(cmd << "\n" << out);
        REQUIRE(rc == 0);
    };
    run(bin + flags + " --steps 6 --save-every 3 --out " + dir + "/straight");
    run(bin + flags + " --steps 3 --out " + dir + "/split");
    run(bin + " --resume " + dir + "/split --steps 6");
    std::string a3 = slurp(dir + "/straight/model_00000003.bin"), b3 = slurp(dir + "/split/model_00000003.bin");
    std::string a6 = slurp(dir + "/straight/model_00000006.bin"), b6 = slurp(dir + "/split/model_00000006.bin");
    REQUIRE(!a3.empty());
    REQUIRE(!a6.empty());
    CHECK(a3 == b3);
    CHECK(a6 == b6);
    CHECK(state_numbers(dir + "/straight/state_00000006.bin") == state_numbers(dir + "/split/state_00000006.bin"));
    CHECK(a6 != a3);
}
