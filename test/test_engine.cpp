// The two engines (common/engine.h): exact, and fast, whose training passes stream their attention
// (attention_forward_stream in train_gpt_cpu.cpp), take the loss from row statistics and sum rows in chunks (on a GPU
// its matmuls are also cuBLAS's, which only a GPU can run).
//
// What it is: the fast model against the exact one through the whole model, in double (so only a wrong formula can
// make a difference above rounding) and in float (what the fast engine runs), on every fixture configuration and
// more; the fast engine against the PyTorch fixtures at --check-state's tolerance; --check-fast, its flags and its
// ability to fail; the column-major arguments of the cuBLAS call. What it is not: a run of cuBLAS (test_gpu.cpp runs
// --check-fast on a GPU).
#include "test_helpers.h"

#include "../kernels/matmul_cublas.cuh"

// The command line of `args` (args[0] the program's name), parsed as the trainer parses it.
static CommandLine parse_args(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(&a[0]);
    CommandLine cl;
    parse_command_line((int)argv.size(), argv.data(), &cl);
    return cl;
}

// The space-separated words of `flags` appended to args.
static void append_words(std::vector<std::string>* args, const char* flags) {
    for (const char* p = flags; *p;) {
        const char* e = strchr(p, ' ');
        args->push_back(e ? std::string(p, e) : std::string(p));
        p = e ? e + 1 : p + strlen(p);
    }
}

// The model of a fixture in float or double, its parameters from the fixture's floats.
template <typename F>
static void fixture_model(Model<F>* m, const std::string& name, DebugState* batch) {
    std::vector<float> params;
    ModelConfig c = read_model_file(fixture(name + "_model.bin"), &params);
    model_build(m, c);
    std::vector<F> p(params.begin(), params.end());
    m->params.upload(p.data(), p.size());
    *batch = read_debug_state(fixture(name + "_state.bin"), c.vocab_size, m->num_params);
}

// Model and attention variants beyond the fixtures' combinations: slots with every row map, and the masks with slots
// and ALiBi; head size 8 at T 47 (one tile of the streamed attention's blocks), then longer rows over several query
// and key tiles (blocks of 64 rows or keys, 32 at head sizes 96 and 128), windows and prefixes that start mid-tile,
// head sizes 32, 96 and 128.
struct Variant {
    const char* flags;
    int T;
};
static const Variant engine_variants[] = {
    {"--attn clipped --slot zero", 47}, {"--attn clipped --slot kv --vstar learn", 47},
    {"--attn softpick --slot logit", 47}, {"--attn sigmoid --attn-norm clamp --slot kv", 47},
    {"--attn elu1 --attn-norm sum --slot zero --value-bias 1", 47},
    {"--attn linear --slot logit --mask window --mask-param 7", 47},
    {"--attn clipped --mask prefix --mask-param 9", 47},
    {"--pos alibi --slot kv --mask prefix --mask-param 11 --slot-shared 1", 47},
    {"--attn softmax --row-mass 2 --slot kv", 47},
    {"--attn clipped --slot kv --mask window --mask-param 70", 199},
    {"--pos alibi --attn softpick --slot logit --heads 1 --channels 32", 199},
    {"--attn sigmoid --attn-norm sum --mask prefix --mask-param 80 --value-bias 1", 150},
    {"--slot kv --vstar learn --heads 1 --channels 128", 150},
    {"--pos alibi --attn sigmoid --mask window --mask-param 33 --heads 1 --channels 128", 100},
    {"--slot kv --heads 1 --channels 96", 100},  // llama-60m's head size (768 / 8)
    {"--attn clipped --mask window --mask-param 45 --value-bias 1 --heads 1 --channels 96", 150},
};

// n inputs and n targets, token ids below 40, drawn alternately from splitmix64(seed)
static void random_tokens(std::vector<int>* x, std::vector<int>* y, size_t n, uint64_t seed) {
    x->resize(n);
    y->resize(n);
    for (size_t i = 0; i < n; i++) {
        (*x)[i] = (int)(splitmix64(&seed) % 40);
        (*y)[i] = (int)(splitmix64(&seed) % 40);
    }
}

// The model of variant v (2 layers, vocabulary 40, 2 heads of 8 unless v says otherwise), every parameter moved away
// from its init (the slot vectors and sink logits too), and a batch of 2 random sequences of v.T tokens.
template <typename F>
static void variant_model(Model<F>* m, const Variant& v, DebugState* s) {
    std::vector<std::string> args = {"train_gpt_cpu", "--vocab", "40", "--max-seq-len", std::to_string(v.T + 1),
                                     "--layers", "2", "--ffn-hidden", "32", "--seq-len", std::to_string(v.T),
                                     "--probe-len", "16"};
    if (!strstr(v.flags, "--heads")) args.insert(args.end(), {"--heads", "2", "--channels", "16"});
    append_words(&args, v.flags);
    CommandLine cl = parse_args(args);
    model_build(m, model_from_flags(&cl));
    model_init(m, 7);
    std::vector<F> p = m->params.to_host();
    std::mt19937_64 rng(11);
    std::normal_distribution<double> nd(0.0, 0.3);
    for (F& x : p) x += (F)nd(rng);
    m->params.upload(p.data(), p.size());
    s->B = 2;
    s->T = v.T;
    random_tokens(&s->inputs, &s->targets, (size_t)s->B * s->T, 13);
}

// The gradients of the batch's loss by the exact model or the fast engine's (streamed attention, loss from row
// statistics, chunked row sums, warp norms); the loss and logits into *loss and *logits.
static std::vector<double> model_grads(Model<double>* m, const DebugState& s, bool fast, double* loss,
                                       std::vector<double>* logits) {
    Acts<double> a;
    a.streamed = a.fast_loss = fast_row_kernels = fast;
    sk_fill(m->grads.data(), m->num_params, 0.0);
    *loss = model_forward(m, &a, s.inputs.data(), s.targets.data(), s.B, s.T);
    *logits = std::vector<double>(a.logits, a.logits + (size_t)a.B * a.T * m->config.padded_vocab_size);
    model_backward(m, &a, 1.0);
    fast_row_kernels = false;
    CHECK((a.att == nullptr) == fast);  // fast: no T x T matrices at all
    CHECK((a.grad.att_ds == nullptr) == fast);
    CHECK((a.probs == nullptr) == fast);  // nor B x T x Vp probabilities
    return m->grads.to_host();
}

// max |a - b| / max |b| and ||a - b|| / ||b|| over n values: the larger of the two
static double relative_error(const double* a, const double* b, size_t n) {
    double maxerr = 0, maxref = 0, err2 = 0, ref2 = 0;
    for (size_t i = 0; i < n; i++) {
        maxerr = std::max(maxerr, fabs(a[i] - b[i]));
        maxref = std::max(maxref, fabs(b[i]));
        err2 += (a[i] - b[i]) * (a[i] - b[i]);
        ref2 += b[i] * b[i];
    }
    if (!std::isfinite(maxerr) || !std::isfinite(err2)) return INFINITY;
    return std::max(maxref > 0 ? maxerr / maxref : maxerr, ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2));
}

// The fast and the exact model on one batch: the largest per-tensor error of the logits and gradients.
static double fast_against_exact(Model<double>* m, const DebugState& s) {
    double loss[2], worst = 0;
    std::vector<double> logits[2], grads[2];
    for (int fast = 0; fast < 2; fast++) grads[fast] = model_grads(m, s, fast, &loss[fast], &logits[fast]);
    CHECK(fabs(loss[1] - loss[0]) <= 1e-12 * fabs(loss[0]));
    double e = relative_error(logits[1].data(), logits[0].data(), logits[0].size());
    CHECK(e < 1e-12);
    worst = std::max(worst, e);
    size_t off = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        if (!m->sizes[t]) continue;
        INFO("gradient " << param_names[t]);
        e = relative_error(grads[1].data() + off, grads[0].data() + off, m->sizes[t]);
        CHECK(e < 1e-12);  // measured: at most 9e-15
        worst = std::max(worst, e);
        off += m->sizes[t];
    }
    return worst;
}

TEST_CASE("the fast engine's model equals the exact one through the whole model in double (fixtures and more variants)",
          "[engine]") {
    std::vector<std::string> names = fixture_names("_state.bin");
    REQUIRE(names.size() >= 35);
    double worst = 0;
    for (const std::string& name : names) {
        INFO("fixture " << name);
        Model<double> m;
        DebugState s;
        fixture_model(&m, name, &s);
        worst = std::max(worst, fast_against_exact(&m, s));
    }
    for (const Variant& v : engine_variants) {
        INFO("variant " << v.flags << " T " << v.T);
        Model<double> m;
        DebugState s;
        variant_model(&m, v, &s);
        worst = std::max(worst, fast_against_exact(&m, s));
    }
    WARN("the fast engine's model against the exact one, double, every fixture and " << std::size(engine_variants)
         << " more variants: worst per-tensor error " << worst);
}

// One forward and backward of the exact engine in float, its attention in the row form (the CPU's) or as the GPU's
// per-element passes (attention_passes): the loss, logits, attention weights and gradients.
struct ExactPass {
    float loss;
    std::vector<float> logits, att, att_slot, grads;
};
static ExactPass exact_pass(Model<float>* m, const DebugState& s, bool passes) {
    attention_passes = passes;
    Acts<float> a;
    sk_fill(m->grads.data(), m->num_params, 0.0f);
    ExactPass r;
    r.loss = (float)model_forward(m, &a, s.inputs.data(), s.targets.data(), s.B, s.T);
    r.logits.assign(a.logits, a.logits + (size_t)a.B * a.T * m->config.padded_vocab_size);
    size_t rows = (size_t)m->config.num_layers * a.B * m->config.num_heads * a.T;
    r.att.assign(a.att, a.att + rows * a.T);
    if (a.att_slot) r.att_slot.assign(a.att_slot, a.att_slot + rows);
    model_backward(m, &a, 1.0f);
    attention_passes = false;
    CHECK((a.att_work != nullptr) == passes);  // the passes hold every row's scratch; the CPU's rows, none
    r.grads = m->grads.to_host();
    return r;
}

// Equal bit for bit: memcmp, so -0 against 0 or two NaNs of different payloads count as different.
template <typename T>
static bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

TEST_CASE("the exact engine's attention as per-element passes (a GPU's form) gives the row form's bits, whole model, "
          "every fixture and variant", "[engine]") {
    auto compare = [](Model<float>* m, const DebugState& s) {
        ExactPass rows = exact_pass(m, s, false), passes = exact_pass(m, s, true);
        CHECK(memcmp(&rows.loss, &passes.loss, sizeof(float)) == 0);
        CHECK(same_bits(rows.logits, passes.logits));
        CHECK(same_bits(rows.att, passes.att));
        CHECK(same_bits(rows.att_slot, passes.att_slot));
        size_t off = 0;
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
            if (!m->sizes[t]) continue;
            INFO("gradient " << param_names[t]);
            CHECK(memcmp(rows.grads.data() + off, passes.grads.data() + off, m->sizes[t] * sizeof(float)) == 0);
            off += m->sizes[t];
        }
        return !rows.att.empty();
    };
    int runs = 0;
    for (const std::string& name : fixture_names("_state.bin")) {
        INFO("fixture " << name);
        Model<float> m;
        DebugState s;
        fixture_model(&m, name, &s);
        runs += compare(&m, s);
    }
    for (const Variant& v : engine_variants) {
        INFO("variant " << v.flags << " T " << v.T);
        Model<float> m;
        DebugState s;
        variant_model(&m, v, &s);
        runs += compare(&m, s);
    }
    CHECK(runs >= 35 + (int)std::size(engine_variants));
}

TEST_CASE("the fast engine's chunked row sums equal the exact ones up to rounding (bias and norm-weight gradients)",
          "[engine]") {
    std::mt19937_64 rng(3);
    for (int BT : {1, 255, 256, 257, 1000}) {
        INFO("BT " << BT);
        int C = 24;
        std::vector<double> x = random_vec((size_t)BT * C, rng), dy = random_vec((size_t)BT * C, rng);
        std::vector<double> mean = random_vec(BT, rng), rstd = random_vec(BT, rng), w = random_vec(C, rng);
        std::vector<double> sums[2], dw[2], db[2], dx(x.size());
        for (int chunked = 0; chunked < 2; chunked++) {
            fast_row_kernels = chunked;
            sums[chunked] = dw[chunked] = db[chunked] = random_vec(C, rng = std::mt19937_64(9));
            column_sums(sums[chunked].data(), dy.data(), BT, C);
            norm_backward(dx.data(), dw[chunked].data(), db[chunked].data(), dy.data(), x.data(), w.data(),
                          mean.data(), rstd.data(), BT, C, (int)NORM_LAYERNORM);
        }
        fast_row_kernels = false;
        CHECK(relative_error(sums[1].data(), sums[0].data(), C) < 1e-13);
        CHECK(relative_error(dw[1].data(), dw[0].data(), C) < 1e-13);
        CHECK(relative_error(db[1].data(), db[0].data(), C) < 1e-13);
        if (BT == 1) CHECK(sums[1] == sums[0]);  // one term: nothing to reorder
    }
}

TEST_CASE("a warp's sum follows the GPU's butterfly order, lane l adding lane l ^ 16, l ^ 8, ... l ^ 1", "[engine]") {
    // values whose float sum depends on the order: 2^24 then 31 ones (in lane order each 1 is lost to rounding)
    SkWarpLanes<float> v;
    for (int l = 0; l < SK_WARP; l++) v.v[l] = l == 0 ? 16777216.0f : 1.0f;
    float x[SK_WARP];
    for (int l = 0; l < SK_WARP; l++) x[l] = v.v[l];
    for (int off = 16; off > 0; off /= 2) {  // the shuffles' butterfly, lane by lane
        float y[SK_WARP];
        for (int l = 0; l < SK_WARP; l++) y[l] = x[l] + x[l ^ off];
        for (int l = 0; l < SK_WARP; l++) x[l] = y[l];
    }
    for (int l = 1; l < SK_WARP; l++) CHECK(x[l] == x[0]);  // every lane ends with the same bits
    float in_order = 0;
    for (int l = 0; l < SK_WARP; l++) in_order += v.v[l];
    SkWarp w;
    CHECK(w.sum(v) == x[0]);
    CHECK(x[0] == 16777216.0f + 30);  // the pairs of ones survive; lane 16's one is lost to lane 0's 2^24
    CHECK(in_order == 16777216.0f);    // so a sum in lane order would fail the check above
}

TEST_CASE("the fast engine's norms (a warp per row) equal the exact ones up to rounding, fused residual included",
          "[engine]") {
    std::mt19937_64 rng(7);
    for (int kind : {(int)NORM_LAYERNORM, (int)NORM_RMSNORM})
        for (int C : {1, 16, 31, 32, 33, 96, 100}) {
            INFO("norm " << kind << " C " << C);
            int BT = 5;
            size_t n = (size_t)BT * C;
            std::vector<double> x = random_vec(n, rng), add = random_vec(n, rng), dy = random_vec(n, rng);
            std::vector<double> w = random_vec(C, rng), b = random_vec(C, rng);
            for (size_t i = 0; i < n; i++) x[i] += 3.0;  // a mean far from 0, as a residual stream has
            std::vector<double> y[2], mean[2], rstd[2], dx[2], sum[2], y_fused(n), sum_fused(n), m_fused(BT),
                r_fused(BT);
            for (int fast = 0; fast < 2; fast++) {
                y[fast].assign(n, 0);
                mean[fast].assign(BT, 0);
                rstd[fast].assign(BT, 0);
                dx[fast] = std::vector<double>(n, 0.5);  // dx accumulates
                fast_row_kernels = fast;
                norm_forward(y[fast].data(), mean[fast].data(), rstd[fast].data(), x.data(), w.data(), b.data(), BT, C,
                             kind, 1e-5f);
                std::vector<double> dw(C, 0), db(C, 0);
                norm_backward(dx[fast].data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean[fast].data(),
                              rstd[fast].data(), BT, C, kind);
            }
            fast_row_kernels = false;
            CHECK(relative_error(y[1].data(), y[0].data(), n) < 1e-13);
            CHECK(relative_error(mean[1].data(), mean[0].data(), BT) < 1e-13);
            CHECK(relative_error(rstd[1].data(), rstd[0].data(), BT) < 1e-13);
            CHECK(relative_error(dx[1].data(), dx[0].data(), n) < 1e-12);
            // the fused residual: the norm of x + add, and x + add itself
            std::vector<double> xa(n);
            for (size_t i = 0; i < n; i++) xa[i] = x[i] + add[i];
            norm_forward(y[0].data(), mean[0].data(), rstd[0].data(), xa.data(), w.data(), b.data(), BT, C, kind,
                         1e-5f);
            norm_forward_warp(y_fused.data(), m_fused.data(), r_fused.data(), x.data(), w.data(), b.data(), BT, C, kind,
                              1e-5f, add.data(), sum_fused.data());
            CHECK(sum_fused == xa);
            CHECK(relative_error(y_fused.data(), y[0].data(), n) < 1e-13);
            CHECK(relative_error(r_fused.data(), rstd[0].data(), BT) < 1e-13);
        }
}

// One forward (the training one, or the sink probe's: no head) and backward of the fast engine in float, the
// residual add and the norm after it in one pass or two (residual_norm_one_pass): the loss, the logits, the stream,
// every norm's output and every gradient, and how many loops (kernels on a GPU) the forward and the backward ran.
struct FastPass {
    float loss = 0;
    std::vector<float> logits, acts, grads;
    size_t forward_loops = 0, backward_loops = 0;
};
static FastPass fast_pass(Model<float>* m, const DebugState& s, bool one_pass, bool with_head) {
    residual_norm_one_pass = one_pass;
    Acts<float> a;
    a.streamed = a.fast_loss = fast_row_kernels = true;
    sk_fill(m->grads.data(), m->num_params, 0.0f);
    FastPass r;
    size_t n0 = sk_launch_count();
    if (with_head) {
        r.loss = (float)model_forward(m, &a, s.inputs.data(), s.targets.data(), s.B, s.T);
    } else {
        model_forward_pass(m, &a, s.inputs.data(), (const int*)nullptr, s.B, s.T, false);
    }
    r.forward_loops = sk_launch_count() - n0;
    const ModelConfig& c = m->config;
    size_t LBTC = (size_t)c.num_layers * a.B * a.T * c.channels, BTC = (size_t)a.B * a.T * c.channels;
    for (const float* p : {a.residual2, a.residual3, a.ln1, a.ln2})  // (post-norm: no ln1, ln2)
        if (p) r.acts.insert(r.acts.end(), p, p + LBTC);
    if (with_head) {
        r.logits.assign(a.logits, a.logits + (size_t)a.B * a.T * c.padded_vocab_size);
        if (a.lnf) r.acts.insert(r.acts.end(), a.lnf, a.lnf + BTC);
        n0 = sk_launch_count();
        model_backward(m, &a, 1.0f);
        r.backward_loops = sk_launch_count() - n0;
        r.grads = m->grads.to_host();
    }
    fast_row_kernels = false;
    residual_norm_one_pass = true;
    return r;
}

TEST_CASE("pre-norm fast engine: each residual add runs in the next norm's pass, forward and backward, with the two "
          "passes' bits in 4 L fewer loops", "[engine]") {
    struct Case {
        const char* flags;
        bool pre;
    };
    const Case cases[] = {{"", true},  // the tiny preset's: RMSNorm, SwiGLU, RoPE, no biases
                          {"--norm layernorm --ffn gelu --bias 1 --pos learned", true},
                          {"--gate elementwise --slot kv --heads 4 --channels 32", true},
                          {"--placement post --norm layernorm", false}};
    for (const Case& k : cases) {
        INFO("flags: " << k.flags);
        Model<float> m;
        DebugState s;
        variant_model(&m, Variant{k.flags, 47}, &s);
        int L = m.config.num_layers;
        REQUIRE((m.config.placement == PLACE_PRE) == k.pre);
        for (bool with_head : {true, false}) {
            INFO("with head " << with_head);
            FastPass two = fast_pass(&m, s, false, with_head), one = fast_pass(&m, s, true, with_head);
            CHECK(memcmp(&one.loss, &two.loss, sizeof(float)) == 0);
            CHECK(same_bits(one.logits, two.logits));
            CHECK(same_bits(one.acts, two.acts));
            CHECK(same_bits(one.grads, two.grads));
            // pre-norm, a forward saves a residual pass per sub-block but the probe's last (nothing norms it), and a
            // backward a residual pass per sub-block; post-norm already had the one pass
            size_t fewer_forward = k.pre ? (with_head ? 2 * L : 2 * L - 1) : 0;
            CHECK(two.forward_loops - one.forward_loops == fewer_forward);
            CHECK(two.backward_loops - one.backward_loops == (k.pre && with_head ? 2 * (size_t)L : 0));
        }
    }
}

// BLAS's column-major product, the definition cuBLAS and cuBLASLt implement, each matrix read through its
// cublaslt_layout (element (r, c) of a stored matrix at r + c ld): C (m x n) += op(X) op(Y), p in order, one fma per
// term; with a bias, C = op(X) op(Y) + the bias broadcast over C's columns, after the sum (cuBLASLt's epilogue).
// Operands of type T (float, double, or bf16 read as float) into outputs of type F.
static inline float operand_value(bf16 x) { return float_from_bf16(x); }
template <typename F>
static inline F operand_value(F x) { return x; }
template <typename T, typename F>
static void column_major_reference(F* C, const ColumnMajorGemm<T>& g, const F* bias) {
    LtLayout a = cublaslt_layout(g, 0), b = cublaslt_layout(g, 1), c = cublaslt_layout(g, 2);
    for (int j = 0; j < c.cols; j++)
        for (int i = 0; i < c.rows; i++) {
            F acc = bias ? F(0) : C[(size_t)j * c.ld + i];
            for (int p = 0; p < g.k; p++) {
                F x = operand_value(g.trans_first ? g.first[(size_t)i * a.ld + p] : g.first[(size_t)p * a.ld + i]);
                F y = operand_value(g.trans_second ? g.second[(size_t)p * b.ld + j] : g.second[(size_t)j * b.ld + p]);
                acc = sk_fma(x, y, acc);
            }
            C[(size_t)j * c.ld + i] = bias ? acc + bias[i] : acc;
        }
}

TEST_CASE("the cuBLAS calls' column-major arguments and cuBLASLt's layouts compute the row-major product, the bias on "
          "out's columns (every transpose, padded rows)", "[engine]") {
    std::mt19937_64 rng(21);
    for (int M : {1, 5, 17})
        for (int K : {1, 4, 9})
            for (int N : {1, 3, 12})
                for (int t = 0; t < 4; t++) {
                    bool a_t = t & 1, b_t = t & 2;
                    int lda = (a_t ? M : K) + 3, ldb = (b_t ? K : N) + 2;  // rows longer than the matrix
                    INFO("M " << M << " K " << K << " N " << N << " a_t " << a_t << " b_t " << b_t);
                    std::vector<double> A = random_vec((size_t)(a_t ? K : M) * lda, rng);
                    std::vector<double> B = random_vec((size_t)(b_t ? N : K) * ldb, rng);
                    std::vector<double> bias = random_vec(N, rng), init = random_vec((size_t)M * N, rng);
                    ColumnMajorGemm<double> g = column_major_gemm(A.data(), lda, a_t, B.data(), ldb, b_t, M, K, N);
                    for (int w = 0; w < 3; w++) {
                        LtLayout l = cublaslt_layout(g, w);
                        CHECK(l.ld >= l.rows);  // cuBLASLt's rule: a column fits in its leading dimension
                    }
                    std::vector<double> ours = init, ref = init;
                    gemm_by_element(ref.data(), A.data(), lda, a_t, B.data(), ldb, b_t, M, K, N, (const double*)nullptr,
                                    true);
                    column_major_reference(ours.data(), g, (const double*)nullptr);
                    CHECK(ours == ref);  // the same products in the same order: the same bits
                    gemm_by_element(ref.data(), A.data(), lda, a_t, B.data(), ldb, b_t, M, K, N, bias.data(), false);
                    column_major_reference(ours.data(), g, bias.data());  // the bias after the sum: rounding apart
                    CHECK(relative_error(ours.data(), ref.data(), ours.size()) < 1e-14);
                }
}

// cuBLASLt's epilogues (kernels/matmul_cublas.cuh LtEpilogue) by their definitions in cuBLAS's column-major terms,
// each matrix through its cublaslt_layout and aux through out's: D = op(first) op(second) (+ D when beta is 1), then
//   LT_GELU_BIAS  aux = D + bias (bias down D's rows), D = gelu(aux);  LT_DGELU  D = D * gelu'(aux);
//   LT_BGRADB     bias[j] = sum over p of op(second)(p, j), one per column j of D.
template <typename F>
static void column_major_epilogue(F* D, const ColumnMajorGemm<F>& g, LtEpilogue kind, F* bias, F* aux, bool beta) {
    LtLayout a = cublaslt_layout(g, 0), b = cublaslt_layout(g, 1), c = cublaslt_layout(g, 2);
    auto first = [&](int i, int p) {
        return g.trans_first ? g.first[(size_t)i * a.ld + p] : g.first[(size_t)p * a.ld + i];
    };
    auto second = [&](int p, int j) {
        return g.trans_second ? g.second[(size_t)p * b.ld + j] : g.second[(size_t)j * b.ld + p];
    };
    for (int j = 0; j < c.cols; j++) {
        if (kind == LT_BGRADB) {
            F sum = 0;
            for (int p = 0; p < g.k; p++) sum += second(p, j);
            bias[j] = sum;
        }
        for (int i = 0; i < c.rows; i++) {
            size_t at = (size_t)j * c.ld + i;
            F acc = beta ? D[at] : F(0);
            for (int p = 0; p < g.k; p++) acc = sk_fma(first(i, p), second(p, j), acc);
            if (kind == LT_GELU_BIAS) {
                aux[at] = acc + (bias ? bias[i] : F(0));
                acc = act_forward(FFN_GELU, aux[at]);
            } else if (kind == LT_DGELU) {
                acc = acc * act_grad(FFN_GELU, aux[at]);
            }
            D[at] = acc;
        }
    }
}

TEST_CASE("cuBLASLt's epilogues as the trainer calls them: the GELU's pre-activation in out's layout, its gradient "
          "through the forward's, the bias gradient of the weight-gradient GEMM the sums of dout's columns",
          "[engine]") {
    std::mt19937_64 rng(22);
    for (int BT : {1, 6, 19})
        for (int C : {1, 4, 7})
            for (int OC : {1, 5, 8}) {
                INFO("BT " << BT << " C " << C << " OC " << OC);
                std::vector<double> inp = random_vec((size_t)BT * C, rng), w = random_vec((size_t)OC * C, rng);
                std::vector<double> bias = random_vec(OC, rng), dout = random_vec((size_t)BT * OC, rng);
                // forward: out = gelu(inp @ w^T + bias), pre = inp @ w^T + bias (matmul_forward_gelu's call)
                std::vector<double> out((size_t)BT * OC), pre((size_t)BT * OC), ref_pre((size_t)BT * OC);
                auto g = linear_forward_gemm(inp.data(), w.data(), BT, C, OC);
                column_major_epilogue(out.data(), g, LT_GELU_BIAS, bias.data(), pre.data(), false);
                gemm_by_element(ref_pre.data(), inp.data(), C, false, w.data(), C, true, BT, C, OC, bias.data(), false);
                CHECK(relative_error(pre.data(), ref_pre.data(), pre.size()) < 1e-14);
                double worst = 0;
                for (size_t i = 0; i < out.size(); i++)
                    worst = std::max(worst, fabs(out[i] - act_forward(FFN_GELU, ref_pre[i])));
                CHECK(worst < 1e-14);
                // backward through the GELU: dpre = (dout2 @ w2) * gelu'(pre), w2 (C2 x OC) the next product's weight
                // (matmul_backward_input_gelu's call, with BT x OC the GELU's shape and C2 = C)
                std::vector<double> w2 = random_vec((size_t)C * OC, rng), dout2 = random_vec((size_t)BT * C, rng);
                std::vector<double> dpre((size_t)BT * OC), ref_dact((size_t)BT * OC, 0.0);
                auto gd = linear_input_grad_gemm(dout2.data(), w2.data(), BT, OC, C);
                column_major_epilogue(dpre.data(), gd, LT_DGELU, (double*)nullptr, pre.data(), false);
                gemm_by_element(ref_dact.data(), dout2.data(), C, false, w2.data(), OC, false, BT, C, OC,
                                (const double*)nullptr, true);
                worst = 0;
                for (size_t i = 0; i < dpre.size(); i++)
                    worst = std::max(worst, fabs(dpre[i] - ref_dact[i] * act_grad(FFN_GELU, ref_pre[i])));
                CHECK(worst < 1e-13);
                // the weight gradient dw += dout^T @ inp with the bias gradient's sums (matmul_backward_weights_fused)
                std::vector<double> dw = random_vec((size_t)OC * C, rng), ref_dw = dw;
                std::vector<double> sums(OC, -1.0), ref_sums(OC, 0.0);
                auto gw = linear_weight_grad_gemm(dout.data(), inp.data(), BT, C, OC);
                REQUIRE(cublaslt_layout(gw, 2).cols == OC);  // one sum per column of D: per output channel
                column_major_epilogue(dw.data(), gw, LT_BGRADB, sums.data(), (double*)nullptr, true);
                gemm_by_element(ref_dw.data(), dout.data(), OC, true, inp.data(), C, false, OC, BT, C,
                                (const double*)nullptr, true);
                CHECK(dw == ref_dw);
                column_sums(ref_sums.data(), dout.data(), BT, OC);
                CHECK(relative_error(sums.data(), ref_sums.data(), OC) < 1e-14);
            }
}

// cublasGemmStridedBatchedEx by its definition: batch i is the call g0 with each matrix i strides further on.
template <typename T, typename F>
static void strided_batch_reference(F* out0, const ColumnMajorGemm<T>& g0, const BatchStrides& st, int batches) {
    for (int i = 0; i < batches; i++) {
        ColumnMajorGemm<T> g = g0;
        g.first += i * st.first;
        g.second += i * st.second;
        column_major_reference(out0 + i * st.out, g, (const F*)nullptr);
    }
}

// gemm_cublaslt keeps each product's plan (its descriptors and the heuristic's algorithm) under an LtKey: what the
// heuristic is told. Two products may share a plan only when they agree in all of it; each layer's products do.
TEST_CASE("cuBLASLt's plans are kept by everything the heuristic is told: the products of different layers share "
          "one, a change of shape, transpose, epilogue, precision, type or any pointer's alignment does not",
          "[engine]") {
    const int BT = 64, C = 48, OC = 96, L = 3, BIAS = 128;  // the bias's slot padded to 64 floats' multiple
    alignas(256) static float buf[L * (BT * C + OC * C + BT * OC + BIAS)];
    // layer l's input, weight, output and bias, each at a 256-byte boundary (as the trainer's layer slices are where
    // their sizes are multiples of 64 floats, as in GPT-2's shapes; where not, their products get keys of their own)
    auto at = [&](int l, int which) {
        size_t per = BT * C + OC * C + BT * OC + BIAS, offs[4] = {0, (size_t)BT * C, (size_t)BT * C + OC * C,
                                                                   (size_t)BT * C + OC * C + BT * OC};
        return buf + l * per + offs[which];
    };
    // the sizes are multiples of 64 floats, so every tensor above is 256-byte aligned
    for (int l = 0; l < L; l++)
        for (int w = 0; w < 4; w++) REQUIRE(sk_alignment(at(l, w)) == 256);
    auto key = [&](int l, LtEpilogue kind, int precision, bool bf16, int shift_out, bool bias) {
        auto g = linear_forward_gemm((const float*)at(l, 0), (const float*)at(l, 1), BT, C, OC);
        return lt_key(g, kind, bf16, precision, at(l, 2) + shift_out, bias ? at(l, 3) : nullptr, nullptr);
    };
    LtKey k0 = key(0, LT_BIAS, PRECISION_FP32, false, 0, true);
    for (int l = 1; l < L; l++) CHECK(key(l, LT_BIAS, PRECISION_FP32, false, 0, true) == k0);
    CHECK(!(key(0, LT_GELU_BIAS, PRECISION_FP32, false, 0, true) == k0));
    CHECK(!(key(0, LT_BIAS, PRECISION_TF32, false, 0, true) == k0));
    CHECK(!(key(0, LT_BIAS, PRECISION_FP32, true, 0, true) == k0));
    CHECK(!(key(0, LT_BIAS, PRECISION_FP32, false, 4, true) == k0));  // out 16 bytes off a 256-byte boundary
    CHECK(!(key(0, LT_BIAS, PRECISION_FP32, false, 0, false) == k0));  // no bias
    // the other fields, one at a time
    auto g = linear_forward_gemm((const float*)at(0, 0), (const float*)at(0, 1), BT, C, OC);
    auto other = [&](auto change) {
        ColumnMajorGemm<float> h = g;
        change(h);
        return lt_key(h, LT_BIAS, false, PRECISION_FP32, at(0, 2), at(0, 3), nullptr);
    };
    CHECK(other([](ColumnMajorGemm<float>&) {}) == k0);
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.trans_first = !h.trans_first; }) == k0));
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.trans_second = !h.trans_second; }) == k0));
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.m++; }) == k0));
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.n++; }) == k0));
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.k++; }) == k0));
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.ld_first++; }) == k0));
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.ld_second++; }) == k0));
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.ldc++; }) == k0));
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.first += 2; }) == k0));   // 8-byte aligned
    CHECK(!(other([](ColumnMajorGemm<float>& h) { h.second += 1; }) == k0));  // 4-byte aligned
    // the bias's and aux's alignments
    auto gl = linear_forward_gemm((const float*)at(0, 0), (const float*)at(0, 1), BT, C, OC);
    LtKey ka = lt_key(gl, LT_GELU_BIAS, false, PRECISION_FP32, at(0, 2), at(0, 3), at(1, 2));
    CHECK(lt_key(gl, LT_GELU_BIAS, false, PRECISION_FP32, at(0, 2), at(1, 3), at(2, 2)) == ka);
    CHECK(!(lt_key(gl, LT_GELU_BIAS, false, PRECISION_FP32, at(0, 2), at(0, 3) + 4, at(1, 2)) == ka));
    CHECK(!(lt_key(gl, LT_GELU_BIAS, false, PRECISION_FP32, at(0, 2), at(0, 3), at(1, 2) + 4) == ka));
    CHECK(!(lt_key(gl, LT_GELU_BIAS, false, PRECISION_FP32, at(0, 2), at(0, 3), nullptr) == ka));
    // the list of plans: found by key, one entry a key
    LtPlans<int> plans;
    CHECK(plans.find(k0) == nullptr);
    *plans.add(k0, 7) += 1;
    plans.add(ka, 9);
    REQUIRE(plans.find(key(2, LT_BIAS, PRECISION_FP32, false, 0, true)) != nullptr);
    CHECK(*plans.find(key(2, LT_BIAS, PRECISION_FP32, false, 0, true)) == 8);
    CHECK(*plans.find(ka) == 9);
    CHECK(plans.find(key(0, LT_BIAS, PRECISION_BF16, false, 0, true)) == nullptr);
    CHECK(plans.plans.size() == 2);
}

TEST_CASE("the gated FFN's two products as one strided batch: each batch is its own product, forward and weight "
          "gradient; calls of other shapes, out of order or with overlapping outputs are refused", "[engine]") {
    std::mt19937_64 rng(23);
    for (int BT : {1, 7, 16})
        for (int C : {1, 5})
            for (int FF : {1, 6}) {
                INFO("BT " << BT << " C " << C << " FF " << FF);
                // the two weights in one array with a gap between them (as W1 and W2 sit in the parameters), the two
                // outputs likewise
                std::vector<double> w = random_vec((size_t)2 * FF * C + 3, rng), inp = random_vec((size_t)BT * C, rng);
                const double *w0 = w.data(), *w1 = w.data() + FF * C + 3;
                std::vector<double> out((size_t)2 * BT * FF + 5, 0.0), ref0((size_t)BT * FF, 0.0), ref1 = ref0;
                double *out0 = out.data(), *out1 = out.data() + BT * FF + 5;
                auto g0 = linear_forward_gemm(inp.data(), w0, BT, C, FF);
                auto g1 = linear_forward_gemm(inp.data(), w1, BT, C, FF);
                BatchStrides st = batch_strides(g0, g1, (const double*)out0, (const double*)out1);
                REQUIRE(st.ok);
                CHECK(st.second == 0);  // the shared input
                strided_batch_reference(out0, g0, st, 2);
                const double* none = nullptr;
                gemm_by_element(ref0.data(), inp.data(), C, false, w0, C, true, BT, C, FF, none, false);
                gemm_by_element(ref1.data(), inp.data(), C, false, w1, C, true, BT, C, FF, none, false);
                CHECK(std::vector<double>(out0, out0 + BT * FF) == ref0);
                CHECK(std::vector<double>(out1, out1 + BT * FF) == ref1);
                // weight gradients: dw_i += dout_i^T inp, the input shared, the douts and dws apart
                std::vector<double> douts = random_vec((size_t)2 * BT * FF + 1, rng);
                std::vector<double> dws = random_vec((size_t)2 * FF * C, rng);
                const double *d0 = douts.data(), *d1 = douts.data() + BT * FF + 1;
                double *dw0 = dws.data(), *dw1 = dws.data() + FF * C;
                std::vector<double> rdw0(dw0, dw0 + FF * C), rdw1(dw1, dw1 + FF * C);
                auto h0 = linear_weight_grad_gemm(d0, inp.data(), BT, C, FF);
                auto h1 = linear_weight_grad_gemm(d1, inp.data(), BT, C, FF);
                BatchStrides sw = batch_strides(h0, h1, (const double*)dw0, (const double*)dw1);
                REQUIRE(sw.ok);
                CHECK(sw.first == 0);
                strided_batch_reference(dw0, h0, sw, 2);
                gemm_by_element(rdw0.data(), d0, FF, true, inp.data(), C, false, FF, BT, C, none, true);
                gemm_by_element(rdw1.data(), d1, FF, true, inp.data(), C, false, FF, BT, C, none, true);
                CHECK(std::vector<double>(dw0, dw0 + FF * C) == rdw0);
                CHECK(std::vector<double>(dw1, dw1 + FF * C) == rdw1);
                // two products of different shapes are not one batch
                CHECK(!batch_strides(g0, linear_forward_gemm(inp.data(), w1, BT, C, FF + 1), (const double*)out0,
                                     (const double*)out1).ok);
                // nor two with an operand or the outputs in the wrong order (a negative stride), nor two whose outputs
                // overlap by one element; outputs side by side are
                CHECK(!batch_strides(g1, g0, (const double*)out0, (const double*)out1).ok);  // the weights
                CHECK(!batch_strides(h1, h0, (const double*)dw0, (const double*)dw1).ok);    // the output gradients
                CHECK(!batch_strides(g0, g1, (const double*)out1, (const double*)out0).ok);  // the outputs
                CHECK(!batch_strides(g0, g1, (const double*)out0, (const double*)out0 + BT * FF - 1).ok);
                CHECK(batch_strides(g0, g1, (const double*)out0, (const double*)out0 + BT * FF).ok);
                CHECK(!batch_strides(h0, h1, (const double*)dw0, (const double*)dw0 + FF * C - 1).ok);
                CHECK(batch_strides(h0, h1, (const double*)dw0, (const double*)dw0 + FF * C).ok);
            }
}

TEST_CASE("at bf16 the gated FFN's strided batch takes its operands as the trainer makes them: the weights' copy, "
          "and the gradients rounded into consecutive slots", "[engine]") {
    std::mt19937_64 rng(29);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    int saved = matmul_fast_precision;
    Bf16Copy saved_copy = matmul_bf16_weights;
    matmul_fast_precision = PRECISION_BF16;
    for (int BT : {1, 7, 40})
        for (int FF : {3, 130}) {  // 130: a gradient's slot is padded past its span
            INFO("BT " << BT << " FF " << FF);
            const int C = 5;
            auto randn = [&](size_t n) {
                std::vector<float> v(n);
                for (float& x : v) x = nd(rng);
                return v;
            };
            std::vector<float> W = randn((size_t)2 * FF * C + 3), inp = randn((size_t)BT * C);
            std::vector<float> d0 = randn((size_t)BT * FF), d1 = randn((size_t)BT * FF);  // apart, as dfch and dfch2
            std::vector<bf16> copy(W.size());
            for (size_t k = 0; k < W.size(); k++) copy[k] = bf16_from_float(W[k]);
            matmul_bf16_weights = Bf16Copy{W.data(), copy.data(), W.size()};
            const float *w0 = W.data(), *w1 = W.data() + FF * C + 3;
            // forward: out_i = inp @ w_i^T, as matmul_forward_pair hands it to gemm_cublas_pair
            Bf16Operand f[3] = {{inp.data(), (size_t)BT * C, nullptr}, {w0, (size_t)FF * C, nullptr},
                                {w1, (size_t)FF * C, nullptr}};
            bf16_operands(f, 3);
            CHECK(f[1].out == copy.data());
            CHECK(f[2].out == copy.data() + FF * C + 3);
            std::vector<float> out((size_t)2 * BT * FF + 7, 0.0f);
            float *out0 = out.data(), *out1 = out.data() + BT * FF + 7;
            auto g0 = linear_forward_gemm(f[0].out, f[1].out, BT, C, FF), g1 = linear_forward_gemm(f[0].out, f[2].out,
                                                                                                  BT, C, FF);
            BatchStrides st = batch_strides(g0, g1, (const float*)out0, (const float*)out1);
            REQUIRE(st.ok);
            REQUIRE(st.out == BT * FF + 7);  // in the outputs' floats
            strided_batch_reference(out0, g0, st, 2);
            // weight gradients: dw_i += d_i^T @ inp, as matmul_backward_weights_pair hands them over
            std::vector<float> dws = randn((size_t)2 * FF * C), dws_start = dws;
            Bf16Operand b[3] = {{d0.data(), (size_t)BT * FF, nullptr}, {d1.data(), (size_t)BT * FF, nullptr},
                                {inp.data(), (size_t)BT * C, nullptr}};
            bf16_operands(b, 3);
            CHECK(b[1].out - b[0].out == (ptrdiff_t)bf16_slot((size_t)BT * FF));
            auto h0 = linear_weight_grad_gemm(b[0].out, b[2].out, BT, C, FF),
                 h1 = linear_weight_grad_gemm(b[1].out, b[2].out, BT, C, FF);
            BatchStrides sw = batch_strides(h0, h1, (const float*)dws.data(), (const float*)dws.data() + FF * C);
            REQUIRE(sw.ok);
            strided_batch_reference(dws.data(), h0, sw, 2);
            // each against its own product on the CPU's bf16 path (which rounds the operands anew)
            std::vector<float> ref((size_t)BT * FF), rdw(dws_start);
            for (int i = 0; i < 2; i++) {
                std::fill(ref.begin(), ref.end(), 0.0f);
                gemm_rounded_inputs(ref.data(), inp.data(), C, false, i ? w1 : w0, C, true, BT, C, FF, nullptr, false,
                                    PRECISION_BF16);
                CHECK(memcmp(ref.data(), i ? out1 : out0, ref.size() * sizeof(float)) == 0);
                gemm_rounded_inputs(rdw.data() + i * FF * C, (i ? d1 : d0).data(), FF, true, inp.data(), C, false, FF,
                                    BT, C, nullptr, true, PRECISION_BF16);
            }
            CHECK(same_bits(rdw, dws));
            // the input stored in bf16 (a norm's output: ProductIn's h, no fp32 values) goes in as it is
            std::vector<bf16> inp16(inp.size());
            for (size_t k = 0; k < inp.size(); k++) inp16[k] = bf16_from_float(inp[k]);
            Bf16Operand sf[3] = {{nullptr, (size_t)BT * C, nullptr, inp16.data()}, {w0, (size_t)FF * C, nullptr},
                                 {w1, (size_t)FF * C, nullptr}};
            Bf16Operand sb[3] = {{d0.data(), (size_t)BT * FF, nullptr}, {d1.data(), (size_t)BT * FF, nullptr},
                                 {nullptr, (size_t)BT * C, nullptr, inp16.data()}};
            bf16_operands(sf, 3);
            CHECK((sf[0].out == inp16.data() && sf[1].out == f[1].out && sf[2].out == f[2].out));
            bf16_operands(sb, 3);
            CHECK(sb[2].out == inp16.data());
            CHECK(sb[1].out - sb[0].out == (ptrdiff_t)bf16_slot((size_t)BT * FF));
        }
    matmul_fast_precision = saved;
    matmul_bf16_weights = saved_copy;
}

TEST_CASE("the fast engine passes every PyTorch fixture at --check-state's tolerance", "[engine][reference]") {
    EngineOptions fast;
    fast.kind = ENGINE_FAST;
    std::vector<std::string> names = fixture_names("_state.bin");
    REQUIRE(names.size() >= 35);
    for (const std::string& name : names) {
        INFO("fixture " << name);
        std::unique_ptr<Engine> e = load_engine(fixture(name + "_model.bin"), fast);
        CHECK(e->describe() == "fast: streamed attention, exact matmuls, row sums in chunks, norms a warp per row, "
                               "loss from row statistics");
        CheckResult r = check_state(fixture(name + "_model.bin"), fixture(name + "_state.bin"), false, fast);
        CHECK(r.failures == 0);
        CHECK(r.worst < 0.2);  // the exact engine's worst is 0.126 (test_reference.cpp)
    }
}

TEST_CASE("--check-fast passes on the CPU (the fast engine in float) over model and attention variants",
          "[engine]") {
    const char* variants[][2] = {
        {"", ""},
        {"--pos", "alibi"}, {"--slot", "kv"}, {"--value-bias", "1"}, {"--attn", "sigmoid"}, {"--attn", "softpick"},
        {"--attn", "clipped"}, {"--phi", "mlp"}, {"--sink-token", "1"}, {"--mask", "window"}, {"--mask", "prefix"},
        {"--bias", "1"},  // with --batch 12: 384 rows, two chunks of the row sums
    };
    double worst = 0;
    for (auto& v : variants) {
        INFO("variant " << v[0] << " " << v[1]);
        TinyRun r = tiny_run(1);
        std::vector<std::string> args = {"train_gpt_cpu", "--check-fast", "--train", r.cl.train.train_glob,
                                         "--val", r.cl.train.val_glob, "--vocab", "32", "--max-seq-len", "33",
                                         "--layers", "2", "--heads", "4", "--channels", "32", "--ffn-hidden", "64",
                                         "--seq-len", "32", "--probe-seqs", "3", "--probe-len", "16",
                                         "--mask-param", "6"};
        bool rows = strcmp(v[0], "--bias") == 0;
        args.insert(args.end(), {"--batch", rows ? "12" : "4", "--norm", rows ? "layernorm" : "rmsnorm"});
        if (v[0][0]) {
            args.push_back(v[0]);
            args.push_back(v[1]);
        }
        CommandLine cl = parse_args(args);
        CheckResult res = check_fast(&cl, false);
        CHECK(res.failures == 0);
        CHECK(res.worst < 0.1);  // measured: at most 0.008 of the fp32 allowance
        worst = std::max(worst, res.worst);
    }
    WARN("--check-fast on the CPU over " << sizeof variants / sizeof *variants << " variants: worst " << worst
         << " of the fp32 allowance");
}

// --check-fast of a command line, its table not printed.
static CheckResult check_fast_quiet(const std::vector<std::string>& args) {
    CommandLine cl = parse_args(args);
    return check_fast(&cl, false);
}

// round_mantissa by another route: the two neighbours of x with `bits` mantissa bits (x cut, and one unit of the last
// kept bit above), the nearer in double arithmetic (exact for these), a tie to the one whose last kept bit is 0.
static float round_mantissa_reference(float x, int bits) {
    if (!std::isfinite(x) || bits >= 23) return x;
    uint32_t u;
    memcpy(&u, &x, 4);
    int drop = 23 - bits;
    uint32_t lo_bits = u & ~((1u << drop) - 1), hi_bits = lo_bits + (1u << drop);  // hi may carry into the exponent
    float lo, hi;
    memcpy(&lo, &lo_bits, 4);
    memcpy(&hi, &hi_bits, 4);
    double dlo = fabs((double)x - (double)lo), dhi = fabs((double)hi - (double)x);
    if (std::isinf(hi)) dhi = fabs(ldexp(1.0, 128) - fabs((double)x));  // past the largest: toward 2^128, infinite
    if (dlo != dhi) return dlo < dhi ? lo : hi;
    return (lo_bits >> drop) & 1 ? hi : lo;
}

TEST_CASE("--precision tf32 and bf16 on the CPU: matmul inputs rounded to nearest even, and --check-fast passes",
          "[engine]") {
    // the rounding: chosen values, then random bit patterns against the reference
    auto f = [](double x) { return (float)x; };
    CHECK(round_mantissa(f(1 + ldexp(1, -8)), 7) == 1.0f);                            // a tie, to even
    CHECK(round_mantissa(f(1 + 3 * ldexp(1, -8)), 7) == f(1 + ldexp(1, -6)));         // a tie, to even (up)
    CHECK(round_mantissa(f(1 + ldexp(1, -8) + ldexp(1, -20)), 7) == f(1 + ldexp(1, -7)));  // past half
    CHECK(round_mantissa(f(-(1 + 3 * ldexp(1, -8))), 7) == f(-(1 + ldexp(1, -6))));
    CHECK(round_mantissa(f(1 + ldexp(1, -11)), 10) == 1.0f);
    CHECK(round_mantissa(f(1 + 3 * ldexp(1, -11)), 10) == f(1 + ldexp(1, -9)));
    CHECK(round_mantissa(f(2 - ldexp(1, -10)), 7) == 2.0f);  // carries into the exponent
    CHECK(std::isinf(round_mantissa(std::numeric_limits<float>::max(), 7)));
    CHECK(std::isnan(round_mantissa(NAN, 7)));
    CHECK(round_mantissa(-INFINITY, 10) == -INFINITY);
    CHECK(round_mantissa(f(ldexp(1, -133)), 7) == f(ldexp(1, -133)));  // bf16's smallest subnormal
    CHECK(round_mantissa(f(ldexp(1, -134) * 1.5), 7) == f(ldexp(1, -133)));
    CHECK(round_mantissa(f(ldexp(1, -140)), 7) == 0.0f);  // below half of it
    CHECK(round_mantissa(0.1f, 23) == 0.1f);
    CHECK(precision_mantissa_bits[PRECISION_TF32] == 10);  // the formats' mantissas (explicit bits)
    CHECK(precision_mantissa_bits[PRECISION_BF16] == 7);
    std::mt19937_64 rng(11);
    int wrong[2] = {0, 0};
    for (int i = 0; i < 400000; i++) {
        uint32_t u = (uint32_t)rng();
        float x;
        memcpy(&x, &u, 4);
        if (!std::isfinite(x)) continue;
        for (int j = 0; j < 2; j++) {
            int bits = j ? 7 : 10;
            float a = round_mantissa(x, bits), b = round_mantissa_reference(x, bits);
            wrong[j] += memcmp(&a, &b, 4) != 0;
        }
    }
    CHECK(wrong[0] == 0);
    CHECK(wrong[1] == 0);

    // the product: gemm_rounded_inputs gives the bits of the plain product of rounded copies, for every layout, with
    // leading dimensions wider than the rows used, a bias and accumulation; and not those of the unrounded product
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int precision : {PRECISION_TF32, PRECISION_BF16}) {
        for (int layout = 0; layout < 4; layout++) {
            bool a_t = layout & 1, b_t = layout & 2, acc = layout == 3;
            int M = 13, K = 70, N = 33, lda = (a_t ? M : K) + 5, ldb = (b_t ? K : N) + 3;
            std::vector<float> A((size_t)(a_t ? K : M) * lda), Bm((size_t)(b_t ? N : K) * ldb), bias(N), start(M * N);
            for (auto* v : {&A, &Bm, &bias, &start})
                for (float& x : *v) x = nd(rng);
            std::vector<float> ra = A, rb = Bm, got = start, want = start, plain = start;
            for (float& x : ra) x = round_mantissa(x, precision_mantissa_bits[precision]);
            for (float& x : rb) x = round_mantissa(x, precision_mantissa_bits[precision]);
            gemm_rounded_inputs(got.data(), A.data(), lda, a_t, Bm.data(), ldb, b_t, M, K, N,
                                acc ? nullptr : bias.data(), acc, precision);
            gemm_by_element(want.data(), ra.data(), lda, a_t, rb.data(), ldb, b_t, M, K, N, acc ? nullptr : bias.data(),
                            acc);
            gemm_by_element(plain.data(), A.data(), lda, a_t, Bm.data(), ldb, b_t, M, K, N, acc ? nullptr : bias.data(),
                            acc);
            INFO(precision_names[precision] << " a_t " << a_t << " b_t " << b_t);
            CHECK(memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
            CHECK(memcmp(got.data(), plain.data(), got.size() * sizeof(float)) != 0);
        }
    }

    // the whole model: --check-fast at each precision, within the fixed allowance for smooth row maps, with errors far
    // above fp32's (the rounding happens: fp32 measures about 1e-6 per tensor). Softpick's relu at 0 is a kink: rounded
    // scores cross it, so at tf32 its errors exceed the allowance (nothing is relaxed below fp32), while at fp32 it
    // passes (docs/gpu.md)
    auto check_at = [](const std::vector<std::string>& variant, int precision) {
        TinyRun r = tiny_run(1);
        std::vector<std::string> args = {"train_gpt_cpu", "--check-fast", "--train", r.cl.train.train_glob, "--val",
                                         r.cl.train.val_glob, "--vocab", "32", "--max-seq-len", "33", "--layers", "2",
                                         "--heads", "4", "--channels", "32", "--ffn-hidden", "64", "--seq-len", "32",
                                         "--batch", "4", "--probe-seqs", "3", "--probe-len", "16", "--precision",
                                         precision_names[precision]};
        args.insert(args.end(), variant.begin(), variant.end());
        return check_fast_quiet(args);
    };
    double worst[PRECISION_NUM_KINDS] = {0, 0, 0};
    for (auto variant : std::vector<std::vector<std::string>>{
             {"--attn", "softmax"}, {"--attn", "sigmoid"}, {"--attn", "elu1", "--attn-norm", "sum"}, {"--slot", "kv"}})
        for (int precision : {PRECISION_TF32, PRECISION_BF16}) {
            INFO(variant[1] << " at " << precision_names[precision]);
            CheckResult res = check_at(variant, precision);
            CHECK(res.failures == 0);
            CHECK(res.sensitive == 0);
            CHECK(res.worst < 0.5);
            CHECK(res.worst * fast_tolerances[precision].tensor > 1e-5);
            worst[precision] = std::max(worst[precision], res.worst);
        }
    WARN("--check-fast on the CPU with rounded matmul inputs: worst " << worst[PRECISION_TF32] << " of the tf32 "
         "allowance, " << worst[PRECISION_BF16] << " of the bf16 allowance");
    CHECK(check_at({"--attn", "softpick"}, PRECISION_FP32).failures == 0);
    CheckResult softpick = check_at({"--attn", "softpick"}, PRECISION_TF32);
    CHECK(softpick.failures > 0);
    CHECK(softpick.sensitive == 0);
}

TEST_CASE("bf16 as stored: a float's upper half rounded to nearest even (round_mantissa's bits), back exactly",
          "[engine]") {
    // every 997th bit pattern of the 2^32 (all exponents, both signs, subnormals, ties among them), then edges
    size_t off = 0, back = 0, tried = 0;
    for (uint64_t u64 = 0; u64 < ((uint64_t)1 << 32); u64 += 997) {
        uint32_t u = (uint32_t)u64;
        float x;
        memcpy(&x, &u, 4);
        if (std::isnan(x)) continue;
        tried++;
        float want = round_mantissa(x, 7);
        uint32_t w;
        memcpy(&w, &want, 4);
        bf16 b = bf16_from_float(x);
        off += b.bits != (uint16_t)(w >> 16) || (w & 0xffffu) != 0;
        float wide = float_from_bf16(b);
        back += memcmp(&want, &wide, 4) != 0;
    }
    CHECK(tried > 4000000);
    CHECK(off == 0);
    CHECK(back == 0);
    auto f = [](double x) { return (float)x; };
    CHECK(bf16_from_float(1.0f).bits == 0x3f80);
    CHECK(bf16_from_float(f(1 + ldexp(1, -8))).bits == 0x3f80);                 // a tie, to even (down)
    CHECK(bf16_from_float(f(1 + 3 * ldexp(1, -8))).bits == 0x3f82);             // a tie, to even (up)
    CHECK(bf16_from_float(-2.0f).bits == 0xc000);
    CHECK(bf16_from_float(std::numeric_limits<float>::max()).bits == 0x7f80);  // past the largest: infinite
    CHECK(bf16_from_float(INFINITY).bits == 0x7f80);
    CHECK(bf16_from_float(-INFINITY).bits == 0xff80);
    uint32_t quiet_low = 0x7f800001u;  // a NaN whose payload lies below the kept bits stays a NaN
    float nan_low;
    memcpy(&nan_low, &quiet_low, 4);
    CHECK(std::isnan(float_from_bf16(bf16_from_float(nan_low))));
    CHECK(std::isnan(float_from_bf16(bf16_from_float(NAN))));
    CHECK(float_from_bf16(bf16{0x0001}) == f(ldexp(1, -133)));  // the smallest subnormal
}

TEST_CASE("bf16 products read the weights' bf16 copy and round every other operand as it comes", "[engine]") {
    std::mt19937_64 rng(5);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int M = 9, K = 40, N = 11;
    std::vector<float> weights((size_t)N * K + 64), inp((size_t)M * K);  // the weights: a product's B, and more
    for (auto* v : {&weights, &inp})
        for (float& x : *v) x = nd(rng);
    std::vector<bf16> copy(weights.size());
    for (size_t k = 0; k < weights.size(); k++) copy[k] = bf16_from_float(weights[k]);
    const float* w = weights.data() + 32;  // B (N x K, transposed) inside the weights
    auto product = [&](const Bf16Copy& c) {
        int saved = matmul_fast_precision;
        Bf16Copy saved_copy = matmul_bf16_weights;
        matmul_fast_precision = PRECISION_BF16;
        matmul_bf16_weights = c;
        std::vector<float> out((size_t)M * N);
        gemm(out.data(), inp.data(), K, false, w, K, true, M, K, N, (const float*)nullptr, false);
        matmul_fast_precision = saved;
        matmul_bf16_weights = saved_copy;
        return out;
    };
    std::vector<float> rounded = product(Bf16Copy{});  // no copy: both operands rounded at the product
    Bf16Copy c{weights.data(), copy.data(), weights.size()};
    CHECK(same_bits(product(c), rounded));  // the copy is the weights rounded: the same bits
    // the copy is what is read: one of B's values changed in the copy alone moves the products of its column
    bf16 was = copy[32 + 3 * K + 5];
    copy[32 + 3 * K + 5] = bf16_from_float(float_from_bf16(was) * 2 + 1);
    std::vector<float> moved = product(c);
    int changed = 0, elsewhere = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) (n == 3 ? changed : elsewhere) += moved[m * N + n] != rounded[m * N + n];
    CHECK(changed == M);
    CHECK(elsewhere == 0);
    // an operand reaching past the weights' end is rounded, not read from the copy
    Bf16Copy short_copy{weights.data(), copy.data(), (size_t)(32 + N * K - 1)};
    CHECK(same_bits(product(short_copy), rounded));
    copy[32 + 3 * K + 5] = was;
}

TEST_CASE("--precision bf16: the FFN's activation is stored in bf16, rounded where it is written, and its two "
          "products read it as stored",
          "[engine]") {
    std::mt19937_64 rng(9);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    const int BT = 37, FF = 48, C = 20;
    std::vector<float> h1((size_t)BT * FF), h2(h1.size()), w((size_t)C * FF), b(C), dout((size_t)BT * C);
    for (auto* v : {&h1, &h2, &w, &b, &dout})
        for (float& x : *v) x = nd(rng);
    int saved = matmul_fast_precision;
    matmul_fast_precision = PRECISION_BF16;
    for (int ffn : {(int)FFN_GELU, (int)FFN_RELU, (int)FFN_SWIGLU, (int)FFN_GEGLU}) {
        INFO("ffn " << ffn_names[ffn]);
        const float* gate = ffn_is_gated(ffn) ? h2.data() : nullptr;
        std::vector<float> act(h1.size()), widened(h1.size());
        std::vector<bf16> act16(h1.size());
        ffn_act_forward(act.data(), h1.data(), gate, act.size(), ffn);
        ffn_act_forward(act16.data(), h1.data(), gate, act.size(), ffn);
        size_t off = 0;
        for (size_t i = 0; i < act.size(); i++) {
            off += act16[i].bits != bf16_from_float(act[i]).bits;
            widened[i] = float_from_bf16(act16[i]);
        }
        CHECK(off == 0);
        // out = act @ w^T + b and dw += dout^T @ act, the activation as stored, against the fp32 path on its values
        std::vector<float> out16((size_t)BT * C), out32(out16.size()), dw16(w.size(), 0.5f), dw32 = dw16,
            db16(C, 0.25f), db32 = db16;
        matmul_forward(out16.data(), (const bf16*)act16.data(), w.data(), b.data(), BT, FF, C);
        matmul_forward(out32.data(), (const float*)widened.data(), w.data(), b.data(), BT, FF, C);
        matmul_backward_weights(dw16.data(), db16.data(), dout.data(), (const bf16*)act16.data(), BT, FF, C);
        matmul_backward_weights(dw32.data(), db32.data(), dout.data(), (const float*)widened.data(), BT, FF, C);
        CHECK(same_bits(out16, out32));
        CHECK(same_bits(dw16, dw32));
        CHECK(same_bits(db16, db32));
        std::vector<float> plain(out32.size());  // and the fp32 activation, unrounded, gives other numbers
        matmul_forward(plain.data(), (const float*)act.data(), w.data(), b.data(), BT, FF, C);
        matmul_fast_precision = PRECISION_FP32;
        matmul_forward(plain.data(), (const float*)act.data(), w.data(), b.data(), BT, FF, C);
        matmul_fast_precision = PRECISION_BF16;
        CHECK(!same_bits(plain, out32));
    }
    matmul_fast_precision = saved;
    // the activations: act(fch), the pre-norm outputs, the gated attention output and the --phi mlp map's input and
    // hidden activation in 2 bytes a value instead of 4 (post-norm: no norm outputs; no gate: the attention output
    // stays fp32; --phi elu1: its input stays fp32, its backward reads it), and the probe's (headless: no final norm)
    for (const char* placement : {"pre", "post"})
        for (const char* gate : {"none", "headwise"})
            for (const char* phi : {"none", "elu1", "mlp"})
                for (bool headless : {false, true}) {
                    INFO(placement << ", gate " << gate << ", phi " << phi << (headless ? ", headless" : ""));
                    CommandLine cl = parse_args({"train_gpt_cpu", "--layers", "2", "--channels", "16", "--heads", "2",
                                                 "--ffn-hidden", "48", "--max-seq-len", "32", "--seq-len", "32",
                                                 "--probe-len", "32", "--placement", placement, "--gate", gate,
                                                 "--phi", phi});
                    ModelConfig c = model_from_flags(&cl);
                    Acts<float> a32, a16;
                    a16.bf16_acts = true;
                    a32.headless = a16.headless = headless;
                    acts_alloc(&a32, c, 3, 32);
                    acts_alloc(&a16, c, 3, 32);
                    bool pre = c.placement == PLACE_PRE, gated = c.attn.gate != GATE_NONE, mlp = c.attn.phi == PHI_MLP;
                    size_t BTC = (size_t)3 * 32 * 16,
                           n = (size_t)2 * 3 * 32 * 48 + pre * (2 * 2 * BTC + !headless * BTC) + gated * 2 * BTC +
                               mlp * 2 * (2 * 2 * BTC);
                    CHECK(a16.mem16.size() == n);
                    CHECK(a32.mem.size() - a16.mem.size() == n);
                    CHECK(a16.fcact == nullptr);
                    CHECK(a16.ln1 == nullptr);
                    CHECK(a16.ln2 == nullptr);
                    CHECK(a16.lnf == nullptr);
                    CHECK(a16.fcact_16 != nullptr);
                    CHECK((a16.ln1_16 != nullptr) == pre);
                    CHECK((a16.ln2_16 != nullptr) == pre);
                    CHECK((a16.lnf_16 != nullptr) == (pre && !headless));
                    CHECK((a16.atty_16 != nullptr) == gated);
                    CHECK((a16.atty != nullptr) == !gated);
                    CHECK((a16.phi_in_16 != nullptr) == mlp);
                    CHECK((a16.phi_relu_16 != nullptr) == mlp);
                    CHECK((a16.phi_in != nullptr) == (c.attn.phi == PHI_ELU1));
                    CHECK(a16.phi_relu == nullptr);
                    CHECK((a16.phi_hidden != nullptr) == mlp);
                    CHECK(a32.mem16.size() == 0);
                    CHECK((a32.fcact_16 == nullptr && a32.ln1_16 == nullptr && a32.ln2_16 == nullptr &&
                           a32.lnf_16 == nullptr && a32.atty_16 == nullptr && a32.phi_in_16 == nullptr &&
                           a32.phi_relu_16 == nullptr));
                }
}

TEST_CASE("--precision bf16: the classifier's gradient, in chunks of rows rounded once, gives the fp32 products of the "
          "rounded operands",
          "[engine]") {
    std::mt19937_64 rng(13);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int BT = 23, C = 12, Vp = 40;
    std::vector<float> dlogits((size_t)BT * Vp), h((size_t)BT * C), W((size_t)Vp * C), dh0(h.size()), dW0(W.size());
    for (auto* v : {&dlogits, &h, &W, &dh0, &dW0})
        for (float& x : *v) x = nd(rng);
    // the reference: every operand rounded (round_mantissa), then the exact products in fp32
    auto rounded = [](std::vector<float> v) {
        for (float& x : v) x = round_mantissa(x, 7);
        return v;
    };
    std::vector<float> rl = rounded(dlogits), rh = rounded(h), rw = rounded(W), dh_want = dh0, dW_want = dW0;
    int saved = matmul_fast_precision;
    size_t whole = bf16_chunk_values;
    matmul_fast_precision = -1;
    matmul_backward(dh_want.data(), dW_want.data(), (float*)nullptr, rl.data(), rh.data(), rw.data(), BT, C, Vp);
    matmul_fast_precision = PRECISION_BF16;
    for (size_t chunk_rows : {1, 5, 23, 100}) {
        INFO("chunks of " << chunk_rows << " rows");
        bf16_chunk_values = chunk_rows * Vp;
        std::vector<float> dh = dh0, dW = dW0;
        classifier_backward(dh.data(), dW.data(), dlogits.data(), ProductIn<float>{h.data()}, W.data(), BT, C, Vp);
        CHECK(same_bits(dh, dh_want));
        CHECK(same_bits(dW, dW_want));
        // and with h stored in bf16 (Acts::lnf_16), each chunk reading its own rows of it
        std::vector<bf16> h16(h.size());
        for (size_t i = 0; i < h.size(); i++) h16[i] = bf16_from_float(h[i]);
        dh = dh0, dW = dW0;
        classifier_backward(dh.data(), dW.data(), dlogits.data(), ProductIn<float>{nullptr, h16.data()}, W.data(), BT,
                            C, Vp);
        CHECK(same_bits(dh, dh_want));
        CHECK(same_bits(dW, dW_want));
    }
    bf16_chunk_values = whole;
    matmul_fast_precision = saved;
}

// One fast-engine pass at --precision bf16 on activations a (bf16_acts or not): with the head, the forward and
// backward (the loss, the logits, every gradient); without, the probe's headless forward, its attention materialised.
// And the residual stream.
struct Bf16Pass {
    double loss = 0;
    std::vector<float> logits, residual, grads;
};
static Bf16Pass bf16_pass(Model<float>* m, Acts<float>* a, const std::vector<int>& x, const std::vector<int>& y, int B,
                          int T, bool with_head) {
    const ModelConfig& c = m->config;
    int saved = matmul_fast_precision;
    matmul_fast_precision = PRECISION_BF16;
    fast_row_kernels = true;
    a->streamed = a->fast_loss = with_head;
    a->headless = !with_head;
    sk_fill(m->grads.data(), m->num_params, 0.0f);
    Bf16Pass r;
    if (with_head) {
        r.loss = model_forward(m, a, x.data(), y.data(), B, T);
        r.logits.assign(a->logits, a->logits + (size_t)a->B * a->T * c.padded_vocab_size);
    } else {
        model_forward_pass(m, a, x.data(), (const int*)nullptr, B, T, false);
    }
    r.residual.assign(a->residual3, a->residual3 + (size_t)c.num_layers * a->B * a->T * c.channels);
    if (with_head) {
        model_backward(m, a, 1.0f);
        r.grads = m->grads.to_host();
    }
    fast_row_kernels = false;
    matmul_fast_precision = saved;
    return r;
}

TEST_CASE("--precision bf16: the norms' outputs, act(fch), the gated attention output and the --phi mlp map's "
          "activations stored in bf16 give the bits of rounding them at every product, with the residual add in the "
          "norm's pass or not, in training and in the probe",
          "[engine]") {
    const std::vector<std::vector<std::string>> variants = {
        {"--ffn", "gelu", "--bias", "1"},
        {"--ffn", "swiglu", "--gate", "elementwise", "--norm", "rmsnorm"},
        {"--ffn", "geglu", "--gate", "headwise", "--tied", "0", "--bias", "1"},
        {"--placement", "post", "--ffn", "gelu", "--gate", "elementwise"},
        {"--phi", "mlp", "--sink-token", "1", "--ffn", "relu"}};
    for (const auto& variant : variants) {
        std::vector<std::string> args = {"train_gpt_cpu", "--vocab", "40", "--max-seq-len", "24", "--seq-len", "23",
                                         "--probe-len", "23", "--layers", "2", "--heads", "2", "--channels", "16",
                                         "--ffn-hidden", "32"};
        std::string name;
        for (const std::string& f : variant) args.push_back(f), name += f + " ";
        CommandLine cl = parse_args(args);
        ModelConfig c = model_from_flags(&cl);
        Model<float> m;
        model_build(&m, c);
        model_init(&m, 5);
        const int B = 2, T = 23;  // (24 positions with the sink token)
        std::vector<int> x, y;
        random_tokens(&x, &y, B * T, 31);
        int P = T + c.attn.sink_token;  // the model's positions
        size_t LBTC = (size_t)c.num_layers * B * P * c.channels, BTC = (size_t)B * P * c.channels;
        // the stored values: the fp32 ones rounded
        auto rounded_from = [](const float* f32, const bf16* f16, size_t n) {
            size_t off = 0;
            for (size_t i = 0; i < n; i++) off += f16[i].bits != bf16_from_float(f32[i]).bits;
            return off;
        };
        for (bool one_pass : {true, false})
            for (bool with_head : {true, false}) {
                INFO(name << (one_pass ? "one pass" : "two passes") << (with_head ? "" : ", the probe's pass"));
                residual_norm_one_pass = one_pass;
                Acts<float> a32, a16;
                a16.bf16_acts = true;
                Bf16Pass r32 = bf16_pass(&m, &a32, x, y, B, T, with_head);
                Bf16Pass r16 = bf16_pass(&m, &a16, x, y, B, T, with_head);
                size_t n16 = a16.mem16.size();
                residual_norm_one_pass = true;
                CHECK(memcmp(&r16.loss, &r32.loss, sizeof(double)) == 0);
                CHECK(same_bits(r16.logits, r32.logits));
                CHECK(same_bits(r16.residual, r32.residual));
                CHECK(same_bits(r16.grads, r32.grads));
                if (c.placement == PLACE_PRE) {
                    REQUIRE(a16.ln1_16);
                    REQUIRE(a16.ln2_16);
                    CHECK(rounded_from(a32.ln1, a16.ln1_16, LBTC) == 0);
                    CHECK(rounded_from(a32.ln2, a16.ln2_16, LBTC) == 0);
                    if (with_head) CHECK(rounded_from(a32.lnf, a16.lnf_16, BTC) == 0);
                }
                CHECK(rounded_from(a32.fcact, a16.fcact_16, (size_t)c.num_layers * B * P * c.ffn_hidden) == 0);
                if (c.attn.gate != GATE_NONE) CHECK(rounded_from(a32.atty, a16.atty_16, LBTC) == 0);
                CHECK((a16.atty_16 != nullptr) == (c.attn.gate != GATE_NONE));
                if (c.attn.phi == PHI_MLP) {
                    REQUIRE(a16.phi_in_16);
                    REQUIRE(a16.phi_relu_16);
                    CHECK(rounded_from(a32.phi_in, a16.phi_in_16, 2 * LBTC) == 0);
                    CHECK(rounded_from(a32.phi_relu, a16.phi_relu_16, 2 * LBTC) == 0);
                }
                // the same activations again at a smaller B x T (a probe chunk, a sampled prefix), in their memory
                Acts<float> fresh32;
                Bf16Pass s32 = bf16_pass(&m, &fresh32, x, y, 1, 13, with_head);
                Bf16Pass s16 = bf16_pass(&m, &a16, x, y, 1, 13, with_head);
                CHECK(a16.mem16.size() == n16);
                CHECK(memcmp(&s16.loss, &s32.loss, sizeof(double)) == 0);
                CHECK(same_bits(s16.logits, s32.logits));
                CHECK(same_bits(s16.residual, s32.residual));
                CHECK(same_bits(s16.grads, s32.grads));
            }
    }
}

TEST_CASE("--precision bf16: AdamW keeps the weights' bf16 copy, and training with it (and the classifier's gradient "
          "in chunks of rows) gives the bits of rounding every product's weights",
          "[engine]") {
    for (const char* ffn : {"swiglu", "gelu"}) {
        INFO("ffn " << ffn);
        CommandLine cl = parse_args({"train_gpt_cpu", "--vocab", "40", "--max-seq-len", "24", "--seq-len", "24",
                                     "--probe-len", "16", "--layers", "2", "--heads", "2", "--channels", "16",
                                     "--ffn-hidden", "32", "--ffn", ffn, "--bias", "1"});
        ModelConfig c = model_from_flags(&cl);
        EngineOptions o;
        o.kind = ENGINE_FAST;
        o.precision = PRECISION_BF16;
        std::unique_ptr<Engine> e[2] = {make_engine(c, o), make_engine(c, o)};
        ModelEngine* with = dynamic_cast<ModelEngine*>(e[0].get());
        ModelEngine* without = dynamic_cast<ModelEngine*>(e[1].get());
        REQUIRE(with->model.params_bf16.size() == with->model.num_params);
        without->model.params_bf16.clear();  // every product rounds its weights itself
        Model<float> init;
        model_build(&init, c);
        model_init(&init, 5);
        std::vector<float> p0 = init.params.to_host();
        const int B = 2, T = 24;
        std::vector<int> x, y;
        random_tokens(&x, &y, B * T, 23);
        TrainConfig tc;
        auto copy_is_fresh = [&] {
            const Model<float>& m = with->model;
            size_t off = 0;
            for (size_t k = 0; k < m.num_params; k++) off += m.params_bf16[k].bits != bf16_from_float(m.params[k]).bits;
            return off == 0;
        };
        for (int i = 0; i < 2; i++) {
            e[i]->reserve(B, T, B, T, 0);
            e[i]->set_params(p0.data());
        }
        CHECK(copy_is_fresh());
        double loss[2] = {0, 0};
        size_t whole = bf16_chunk_values;
        for (int step = 0; step < 3; step++)
            for (int i = 0; i < 2; i++) {
                // the copy's engine takes the classifier's gradient 5 rows at a time (10 chunks), the other whole
                bf16_chunk_values = i == 0 ? 5 * (size_t)c.padded_vocab_size + 3 : whole;
                REQUIRE(bf16_chunk_rows(B * T, c.padded_vocab_size) == (i == 0 ? 5 : B * T));
                e[i]->zero_grad();
                e[i]->train_micro(x.data(), y.data(), B, T, 1);
                e[i]->guarded_update(adamw_step(tc, 1e-2f, step, 0.0), tc.grad_clip);
                loss[i] = e[i]->step_result().loss;
            }
        bf16_chunk_values = whole;
        CHECK(copy_is_fresh());
        CHECK(memcmp(&loss[0], &loss[1], sizeof(double)) == 0);
        size_t n = e[0]->num_params();
        std::vector<float> p[2], g[2];
        for (int i = 0; i < 2; i++) {
            p[i].resize(n), g[i].resize(n);
            e[i]->get_params(p[i].data());
            e[i]->get_grads(g[i].data());
        }
        CHECK(same_bits(p[0], p[1]));
        CHECK(same_bits(g[0], g[1]));
        CHECK(!same_bits(p[0], p0));
        // the probe reads the copy too
        ProbeView v[2] = {e[0]->probe(x.data(), B, T), e[1]->probe(x.data(), B, T)};
        CHECK(memcmp(v[0].residual, v[1].residual, (size_t)c.num_layers * B * T * c.channels * sizeof(float)) == 0);
        // and the products read it: a copy one value off changes the loss
        size_t at = with->model.p[P_QKVW] - with->model.params.data() + 7;  // a value of the first qkv weight
        bf16 was = with->model.params_bf16[at];
        with->model.params_bf16[at] = bf16_from_float(float_from_bf16(was) + 1);
        double moved = e[0]->forward(x.data(), y.data(), B, T), kept = e[1]->forward(x.data(), y.data(), B, T);
        CHECK(moved != kept);
        with->model.params_bf16[at] = was;
    }
    // fp32 and tf32 keep no copy
    for (int precision : {PRECISION_FP32, PRECISION_TF32}) {
        EngineOptions o;
        o.kind = ENGINE_FAST;
        o.precision = precision;
        CommandLine cl = parse_args({"train_gpt_cpu", "--layers", "1", "--channels", "16", "--heads", "2"});
        std::unique_ptr<Engine> e = make_engine(model_from_flags(&cl), o);
        CHECK(dynamic_cast<ModelEngine*>(e.get())->model.params_bf16.empty());
    }
}

TEST_CASE("--check-fast allows a sensitive model its own change under a rounding-sized nudge, but never the forward",
          "[engine]") {
    auto item = [](const char* name, double err, bool curve) { return FastCheckItem{name, "", err, curve}; };
    const FastTolerance& tol = fast_tolerances[PRECISION_FP32];
    std::vector<FastCheckItem> items = {item("loss", 1e-6, false), item("logits", 3e-4, false),
                                        item("wte", 5e-4, false), item("qkvw", 5e-4, false),
                                        item("alpha_1", 2e-3, true), item("curve", 2e-3, true)};
    // without the nudged run: the fixed allowances (1e-4, 1e-3): logits, both gradients, alpha_1 and the curve fail
    CHECK(judge_fast_check(items, {}, tol, false).failures == 5);
    // a sensitive model (its own change 1e-4 on wte, 3e-4 on the curve): 10x that is allowed where it is larger than
    // the fixed allowance, never for the logits
    std::vector<FastCheckItem> own = {item("loss", 1e-7, false), item("logits", 1e-3, false),
                                      item("wte", 1e-4, false), item("qkvw", 1e-6, false),
                                      item("alpha_1", 1e-5, true), item("curve", 3e-4, true)};
    CheckResult r = judge_fast_check(items, own, tol, false);
    CHECK(r.failures == 3);  // logits (not relaxed), qkvw (own change too small), alpha_1 (likewise)
    CHECK(r.worst == Approx(5.0));  // qkvw: 5e-4 / 1e-4 (the logits: 3)
    items[1].err = 5e-5;
    items[3].err = 5e-5;
    items[4].err = 5e-4;
    r = judge_fast_check(items, own, tol, false);
    CHECK(r.failures == 0);
    CHECK(r.sensitive == 2);  // wte and the curve passed by their own change (alpha_1 by its fixed allowance)
    CHECK(r.worst == Approx(2e-3 / 3e-3));  // the curve: 2e-3 of 10 x 3e-4
    items[2].err = 2e-3;  // twice 10x wte's own change
    CHECK(judge_fast_check(items, own, tol, false).failures == 1);

    // the whole model: softpick on --check-fast's default model passes at fp32 only through its own sensitivity (its
    // relu at 0: scores that the fast engine's rounding moves across 0 change their gradients by a jump)
    CommandLine cl = parse_args({"train_gpt_cpu", "--check-fast", "--attn", "softpick"});
    CheckResult ok = check_fast(&cl, false);
    CHECK(ok.failures == 0);
    CHECK(ok.sensitive > 0);
    CHECK(ok.worst < 0.5);  // measured 0.095
}

TEST_CASE("--check-fast's comparison fails a gradient 0.5% off at fp32 and passes it at bf16", "[engine]") {
    std::vector<float> exact(1000), fast;
    std::mt19937_64 rng(5);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& x : exact) x = nd(rng);
    fast = exact;
    for (float& x : fast) x *= 1 + 5e-3f;
    CheckResult strict, loose;
    check_fast_tensor(&strict, "scaled", fast.data(), exact.data(), exact.size(), fast_tolerances[PRECISION_FP32].tensor,
                      false);
    check_fast_tensor(&loose, "scaled", fast.data(), exact.data(), exact.size(), fast_tolerances[PRECISION_BF16].tensor,
                      false);
    CHECK(strict.failures == 1);
    CHECK(loose.failures == 0);
    fast = exact;
    fast[17] = NAN;  // a non-finite value fails whatever the allowance
    CheckResult nan;
    check_fast_tensor(&nan, "nan", fast.data(), exact.data(), exact.size(), fast_tolerances[PRECISION_BF16].tensor, false);
    CHECK(nan.failures == 1);
    TensorError e = tensor_error(exact.data(), exact.data(), exact.size());
    CHECK(e.rel_l2 == 0);
    CHECK(e.cosine == Approx(1.0).epsilon(1e-12));
}

TEST_CASE("the fast engine holds no T x T matrices: its training memory is smaller by at least their size",
          "[engine]") {
    CommandLine cl = parse_args({"train_gpt_cpu", "--seq-len", "128"});  // the tiny preset: L 2, 16 heads, maxT 128
    ModelConfig c = model_from_flags(&cl);
    const int B = 4, T = 128;
    std::vector<int> x(B * T), y(B * T);
    for (int i = 0; i < B * T; i++) x[i] = y[(i + B * T - 1) % (B * T)] = i * 7 % c.vocab_size;
    size_t used[2];
    for (int fast = 0; fast < 2; fast++) {
        EngineOptions o;
        o.kind = fast ? ENGINE_FAST : ENGINE_EXACT;
        size_t before = sk_memory_use().now;
        std::unique_ptr<Engine> e = make_engine(c, o);
        e->forward(x.data(), y.data(), B, T);
        e->zero_grad();
        e->backward(1.0f);
        used[fast] = sk_memory_use().now - before;
    }
    size_t att = (size_t)c.num_layers * B * c.num_heads * T * T * sizeof(float);
    CHECK(used[0] >= used[1] + att);
    WARN("tiny preset, B 4 x T 128, forward and backward: exact " << used[0] / 1048576.0 << " MiB, fast "
         << used[1] / 1048576.0 << " MiB (the attention matrices alone: " << att / 1048576.0 << " MiB)");
}

TEST_CASE("the sink probe's activations hold no head (final norm, logits, probabilities, losses) and give the same "
          "hidden states and weights", "[engine]") {
    for (const char* flags : {"", "--placement post --norm layernorm"})
        for (int fast = 0; fast < 2; fast++) {
            INFO("flags: " << flags << " fast " << fast);
            Model<float> m;
            DebugState s;
            variant_model(&m, Variant{flags, 47}, &s);
            const ModelConfig& c = m.config;
            Acts<float> full, probe;
            probe.headless = true;
            full.fast_loss = probe.fast_loss = fast_row_kernels = fast;  // the probe materialises its attention
            model_forward_pass(&m, &full, s.inputs.data(), (const int*)nullptr, s.B, s.T, false);
            model_forward_pass(&m, &probe, s.inputs.data(), (const int*)nullptr, s.B, s.T, false);
            fast_row_kernels = false;
            size_t BT = (size_t)s.B * s.T, L = c.num_layers, C = c.channels, Vp = c.padded_vocab_size;
            size_t rows = L * s.B * c.num_heads * s.T;
            CHECK(memcmp(full.residual3, probe.residual3, L * BT * C * sizeof(float)) == 0);
            CHECK(memcmp(full.att, probe.att, rows * s.T * sizeof(float)) == 0);
            CHECK((probe.logits == nullptr && probe.probs == nullptr && probe.losses == nullptr &&
                   probe.lnf == nullptr && probe.loss_stats == nullptr));
            // what the head holds: the logits, then the probabilities (exact) or the row statistics and their lanes
            // (fast), the losses, and pre-norm the final norm's output, mean and rstd
            size_t head = BT * Vp + (fast ? BT * 2 + BT * 2 * CE_LANES : BT * Vp) + BT +
                          (c.placement == PLACE_PRE ? BT * C + 2 * BT : 0);
            CHECK(full.mem.size() - probe.mem.size() == head);
        }
    // the engines' probe is headless: a probe one sequence longer costs them one headless sequence's activations
    CommandLine cl = parse_args({"train_gpt_cpu", "--seq-len", "64"});
    ModelConfig c = model_from_flags(&cl);
    auto headless_values = [&](int B) {
        Acts<float> a;
        a.headless = true;
        acts_alloc(&a, c, B, 64);
        return a.mem.size();
    };
    for (int fast = 0; fast < 2; fast++) {
        INFO("fast " << fast);
        EngineOptions o;
        o.kind = fast ? ENGINE_FAST : ENGINE_EXACT;
        size_t used[2];
        for (int probe_B = 1; probe_B <= 2; probe_B++) {
            std::unique_ptr<Engine> e = make_engine(c, o);
            size_t before = sk_memory_use().now;
            e->reserve(2, 64, probe_B, 64, 0);
            used[probe_B - 1] = sk_memory_use().now - before;
        }
        CHECK(used[1] - used[0] == (headless_values(2) - headless_values(1)) * sizeof(float));
    }
}

TEST_CASE("the logits' gradient has no buffer of its own (written over the logits): a large vocabulary's activation "
          "gradients hold less than one B x T x Vp", "[engine]") {
    CommandLine cl = parse_args({"train_gpt_cpu", "--vocab", "5000", "--layers", "1", "--channels", "16", "--heads",
                                 "2", "--ffn-hidden", "32", "--seq-len", "8"});
    ModelConfig c = model_from_flags(&cl);
    const int B = 2, T = 8;
    for (bool streamed : {false, true}) {
        GradActs<float> g;
        grad_acts_alloc(&g, c, B, T, streamed);
        size_t BTVp = (size_t)B * T * c.padded_vocab_size;
        INFO("streamed " << streamed << ": " << g.mem.size() << " values, B x T x Vp = " << BTVp);
        CHECK(g.mem.size() < BTVp / 4);
    }
}

TEST_CASE("the gradients inside a layer are held for one layer: a deeper model adds only its residual stream's",
          "[engine]") {
    const int B = 2, T = 8;
    for (const char* extra : {"--placement pre", "--placement post --gate elementwise --phi mlp --ffn swiglu"})
        for (bool streamed : {false, true}) {
            INFO(extra << " streamed " << streamed);
            size_t values[2];
            ModelConfig c;
            for (int deep = 0; deep < 2; deep++) {
                std::vector<std::string> args = {"train_gpt_cpu", "--layers", deep ? "5" : "1", "--channels", "16",
                                                 "--heads", "2", "--ffn-hidden", "32", "--seq-len", "8"};
                append_words(&args, extra);
                CommandLine cl = parse_args(args);
                c = model_from_flags(&cl);
                GradActs<float> g;
                grad_acts_alloc(&g, c, B, T, streamed);
                values[deep] = g.mem.size();
            }
            CHECK(values[1] - values[0] == 4 * (size_t)B * T * c.channels);  // residual3 of 4 more layers
        }
}

// What only a GPU would show in the streamed attention's blocks: a race between two sync()s, or a read of shared
// memory or a State before it was written. sk_block_threads runs each block's threads as a GPU may (each thread to
// its next sync() before the next starts, in order or reversed, from NaN-filled States and shared memory); the
// forward and backward must keep the default order's bits.
// A GPU block has 48 KB of shared memory (sk_for_blocks refuses more there, at the first step); the CPU has no such
// limit, so a layout that outgrew it would pass every other test here.
template <int HS>
static void check_stream_shared() {
    INFO("head size " << HS);
    for (int pass : {STREAM_FORWARD, STREAM_GRAD_ROWS, STREAM_GRAD_KEYS})
        CHECK(stream_shared_bytes<HS, float>(pass) <= 48 * 1024);
}
TEST_CASE("the streamed attention's float blocks fit a GPU block's 48 KB of shared memory at every head size",
          "[engine]") {
    check_stream_shared<4>(), check_stream_shared<8>(), check_stream_shared<16>(), check_stream_shared<32>();
    check_stream_shared<64>(), check_stream_shared<96>(), check_stream_shared<128>();  // attention_stream_supports'
    // head size 64 (GPT-2): the key tile of 64 rows 68 floats apart and v*; the dk/dv block's own rows and 16 query
    // rows of 800 bytes (12 hs + 28, rounded up to 16)
    CHECK(stream_shared_bytes<64, float>(STREAM_FORWARD) == (2 * 64 * 68 + 64) * 4);
    CHECK(sizeof(FlashGradRow<64, float>) == 800);
    CHECK(stream_shared_bytes<64, float>(STREAM_GRAD_KEYS) == 2 * 64 * 68 * 4 + 16 * 800);
}

TEST_CASE("block threads as a GPU may run them: the streamed attention keeps its bits, in order and reversed",
          "[engine][blocks]") {
    const int B = 2, T = 80;  // query and key tiles of 64 (32 at head sizes 96 and 128), the last ones partial
    const char* variants[] = {
        "--heads 2 --channels 32",
        "--heads 2 --channels 32 --attn clipped --mask window --mask-param 40 --value-bias 1",
        "--heads 2 --channels 32 --slot kv --pos alibi --attn sigmoid --attn-norm sum",
        "--heads 1 --channels 96 --slot logit --mask prefix --mask-param 20 --gate headwise",
        "--heads 1 --channels 128 --attn softpick --sink-token 1",
    };
    for (const char* v : variants) {
        INFO(v);
        std::vector<std::string> args = {"train_gpt_cpu", "--vocab", "40", "--max-seq-len", "81", "--seq-len", "80",
                                         "--probe-len", "16", "--layers", "1", "--ffn-hidden", "64"};
        append_words(&args, v);
        CommandLine cl = parse_args(args);
        ModelConfig c = model_from_flags(&cl);
        REQUIRE(attention_stream_supports(c.channels / c.num_heads));
        EngineOptions o;
        o.kind = ENGINE_FAST;
        std::unique_ptr<Engine> e = make_engine(c, o);
        std::vector<float> p(e->num_params());
        init_params(c, 11, p.data());
        for (float& w : p) w *= 3;  // sharper attention than at initialisation
        e->set_params(p.data());
        std::vector<int> x, y;
        random_tokens(&x, &y, B * T, 5);
        double loss[3];
        std::vector<float> grads[3];
        for (int mode : {0, 1, -1}) {
            struct Mode {  // sk_block_threads for this pass, 0 again however it ends
                explicit Mode(int m) { sk_block_threads = m; }
                ~Mode() { sk_block_threads = 0; }
            } as_threads(mode);
            e->zero_grad();
            loss[mode + 1] = e->forward(x.data(), y.data(), B, T);
            e->backward(1.0f);
            grads[mode + 1].resize(e->num_params());
            e->get_grads(grads[mode + 1].data());
        }
        REQUIRE(std::isfinite(loss[1]));
        for (int mode : {0, 2}) {
            INFO("sk_block_threads " << (mode == 0 ? -1 : 1));
            CHECK(memcmp(&loss[mode], &loss[1], sizeof(double)) == 0);
            CHECK(memcmp(grads[mode].data(), grads[1].data(), grads[1].size() * sizeof(float)) == 0);
        }
    }
}

TEST_CASE("engine flags: auto is exact on the CPU; contradictions and a precision for the exact engine are refused",
          "[engine]") {
    std::string out;
    CHECK(run_command("./train_gpt_cpu --precision tf32 --steps 1", &out) == 1);
    CHECK(out.find("--precision tf32 applies to the fast engine (--engine fast") != std::string::npos);
    CHECK(run_command("./train_gpt_cpu --exact --engine fast --steps 1", &out) == 1);
    CHECK(out.find("--exact and --engine fast contradict") != std::string::npos);
    CHECK(run_command("./train_gpt_cpu --check-fast --exact", &out) == 1);
    CHECK(out.find("--check-fast compares the fast engine with the exact one") != std::string::npos);
    CHECK(run_command("./train_gpt_cpu --check-fast --eval-sink --load x.bin", &out) == 1);
    CHECK(out.find("separate modes") != std::string::npos);
    CommandLine cl;
    CHECK(engine_options(cl.train).kind == ENGINE_EXACT);  // auto, on the CPU
    cl.train.engine = ENGINE_FAST;
    CHECK(engine_options(cl.train).kind == ENGINE_FAST);
}

TEST_CASE("a fast-engine run resumes bit for bit and keeps its engine", "[engine]") {
    TinyRun r = tiny_run(4);
    r.cl.train.engine = ENGINE_FAST;
    r.cl.train.save_every = 2;
    r.cl.train.keep_last = 0;
    REQUIRE(train(&r.cl) == 0);
    std::string full = slurp(r.cl.train.out_dir + "/model_00000004.bin");
    REQUIRE(!full.empty());
    std::string log = slurp(r.cl.train.out_dir + "/log.jsonl");
    CHECK(log.find("\"engine\":\"fast\"") != std::string::npos);
    // resume from step 2 without --engine: the saved flags bring the fast engine back
    REQUIRE(system(("rm " + r.cl.train.out_dir + "/model_00000004.bin " + r.cl.train.out_dir + "/state_00000004.bin")
                       .c_str()) == 0);
    CommandLine resume = r.cl;
    resume.train.resume_dir = r.cl.train.out_dir;
    resume.train.from_step = 2;
    resume.train.engine = ENGINE_AUTO;
    resume.given = {"--resume", "--from-step"};  // as on a command line: every other flag comes back from the checkpoint
    resume.model_flag_seen = false;
    REQUIRE(train(&resume) == 0);
    CHECK(resume.train.engine == ENGINE_FAST);
    CHECK(slurp(r.cl.train.out_dir + "/model_00000004.bin") == full);
}

TEST_CASE("a run allocates nothing after its first steps: validation, sink probes (a shorter last chunk), samples "
          "(a growing context) and checkpoints reuse what it holds", "[engine]") {
    // Two runs whose every step measures everything; the longer one's extra steps must add no allocation (on a GPU
    // each is a cudaMalloc, and its cudaFree waits for the device).
    for (int kind : {0, 1, 2}) {  // exact, fast fp32, fast bf16
        INFO("engine " << (kind ? "fast" : "exact") << (kind == 2 ? " bf16" : ""));
        auto allocations = [&](int steps) {
            TinyRun r = tiny_run(steps);
            TrainConfig& t = r.cl.train;
            t.engine = kind ? ENGINE_FAST : ENGINE_EXACT;
            t.precision = kind == 2 ? PRECISION_BF16 : PRECISION_FP32;
            t.val_every = t.sink_every = t.sample_every = t.save_every = 1;
            t.probe_seqs = 11;  // chunks of 8 and 3
            t.sample_len = 20;  // from 1 token to the context's 16: every length
            size_t before = sk_memory_use().allocations;
            REQUIRE(train(&r.cl) == 0);
            return sk_memory_use().allocations - before;
        };
        allocations(2);  // the first run in this process sizes the trainers' kept scratch buffers
        size_t two = allocations(2), seven = allocations(7);
        CHECK(two > 0);
        CHECK(seven == two);
    }
}

TEST_CASE("the GPU's AdamW in one launch (each element finds its tensor's decay) gives the CPU's per-tensor bits",
          "[engine]") {
    // a model with tensors of every decay kind and empty ones between them (no slot, no gate: size 0)
    CommandLine cl = parse_args({"train_gpt_cpu", "--layers", "2", "--channels", "16", "--heads", "2", "--ffn-hidden",
                                 "32", "--max-seq-len", "17", "--seq-len", "16", "--probe-len", "16", "--bias", "1",
                                 "--sink-token", "1"});
    Model<float> m;
    model_build(&m, model_from_flags(&cl));
    model_init(&m, 3);
    std::mt19937_64 rng(4);
    std::vector<double> g = random_vec(m.num_params, rng), mv = random_vec(m.num_params, rng);
    for (size_t k = 0; k < m.num_params; k++) {
        m.grads[k] = (float)g[k];
        m.adam_m[k] = (float)mv[k];
        m.adam_v[k] = (float)(mv[k] * mv[k]);
    }
    AdamWStep s;
    s.lr = 0.01f, s.weight_decay = 0.1f, s.wd_exempt = true, s.t = 3, s.grad_scale = 0.5f;
    AdamWConstants<float> a = adamw_constants(m, s);
    // every element's tensor, the empty tensors skipped
    int empty = 0, decays = 0;
    for (int id = 0; id < NUM_PARAM_TENSORS; id++) {
        if (m.sizes[id] == 0) {
            empty++;
            continue;
        }
        decays += a.decay[id] > 0;
        CHECK(adamw_tensor_of(a, a.end[id] - m.sizes[id]) == id);
        CHECK(adamw_tensor_of(a, a.end[id] - 1) == id);
    }
    CHECK(empty > 0);
    CHECK(decays > 0);
    CHECK(decays < NUM_PARAM_TENSORS - empty);  // some tensors decay, some do not
    // the one-launch form, run here, against adamw_update
    std::vector<float> p = m.params.to_host(), am = m.adam_m.to_host(), av = m.adam_v.to_host();
    const std::vector<float> grads = m.grads.to_host();
    for (size_t k = 0; k < m.num_params; k++)
        adamw_element(a, a.decay[adamw_tensor_of(a, k)], p.data(), am.data(), av.data(), grads.data(), nullptr, k);
    m.params_bf16.assign(m.num_params, bf16{0});  // at bf16 the same pass writes the weights' copy
    adamw_update(&m, s);
    CHECK(m.params.to_host() == p);
    CHECK(m.adam_m.to_host() == am);
    CHECK(m.adam_v.to_host() == av);
    size_t off = 0;
    for (size_t k = 0; k < m.num_params; k++) off += m.params_bf16[k].bits != bf16_from_float(p[k]).bits;
    CHECK(off == 0);
}

// The guarded step (train_micro, guarded_update, step_result: the host reads nothing until the step is queued) against
// the step the host drives (forward, backward, grad_norm, clip, update), on the same engine kind from the same start.
TEST_CASE("the guarded training step gives the host-driven step's bits, and a non-finite step updates nothing",
          "[engine]") {
    for (int kind : {(int)ENGINE_EXACT, (int)ENGINE_FAST}) {
        INFO("engine " << kind);
        CommandLine cl = parse_args({"train_gpt_cpu", "--vocab", "40", "--max-seq-len", "24", "--seq-len", "24",
                                     "--probe-len", "16", "--layers", "2", "--heads", "2", "--channels", "16",
                                     "--ffn-hidden", "32", "--slot", "kv"});
        ModelConfig c = model_from_flags(&cl);
        EngineOptions o;
        o.kind = kind;
        std::unique_ptr<Engine> e[2] = {make_engine(c, o), make_engine(c, o)};
        Model<float> init;
        model_build(&init, c);
        model_init(&init, 5);
        std::vector<float> p0 = init.params.to_host();
        const int B = 2, T = 24, accum = 3;
        std::vector<int> x, y;
        random_tokens(&x, &y, B * T * accum, 21);
        TrainConfig tc;
        tc.grad_clip = 0.05f;  // below the norm: the clip scale matters
        double loss[2], gn[2];
        for (int i = 0; i < 2; i++) {
            e[i]->set_params(p0.data());
            for (int step = 0; step < 2; step++) {
                e[i]->zero_grad();
                loss[i] = 0;
                for (int m = 0; m < accum; m++) {
                    const int* xm = x.data() + m * B * T;
                    const int* ym = y.data() + m * B * T;
                    if (i == 0) {
                        loss[i] += e[i]->forward(xm, ym, B, T) / accum;
                        e[i]->backward(1.0f / accum);
                    } else {
                        e[i]->train_micro(xm, ym, B, T, accum);
                    }
                }
                if (i == 0) {
                    gn[i] = e[i]->grad_norm();
                    e[i]->update(adamw_step(tc, 1e-2f, step, gn[i]));
                } else {
                    e[i]->guarded_update(adamw_step(tc, 1e-2f, step, 0.0), tc.grad_clip);
                    StepResult r = e[i]->step_result();
                    CHECK(r.updated);
                    loss[i] = r.loss;
                    gn[i] = r.grad_norm;
                }
            }
        }
        CHECK(gn[0] > tc.grad_clip);
        CHECK(memcmp(&loss[0], &loss[1], sizeof(double)) == 0);
        CHECK(memcmp(&gn[0], &gn[1], sizeof(double)) == 0);
        size_t n = e[0]->num_params();
        std::vector<float> p[2], m[2], v[2];
        for (int i = 0; i < 2; i++) {
            p[i].resize(n), m[i].resize(n), v[i].resize(n);
            e[i]->get_params(p[i].data());
            e[i]->get_adam(m[i].data(), v[i].data());
        }
        CHECK(same_bits(p[0], p[1]));
        CHECK(same_bits(m[0], m[1]));
        CHECK(same_bits(v[0], v[1]));
        // a NaN weight: the loss and the gradients turn NaN; the guarded step leaves weights and moments as they were
        std::vector<float> poisoned = p[1];
        poisoned[3] = NAN;
        e[1]->set_params(poisoned.data());
        e[1]->zero_grad();
        e[1]->train_micro(x.data(), y.data(), B, T, 1);
        e[1]->guarded_update(adamw_step(tc, 1e-2f, 2, 0.0), tc.grad_clip);
        StepResult r = e[1]->step_result();
        CHECK(!r.updated);
        CHECK(std::isnan(r.loss));
        std::vector<float> after(n), am(n), av(n);
        e[1]->get_params(after.data());
        e[1]->get_adam(am.data(), av.data());
        CHECK(same_bits(after, poisoned));
        CHECK(same_bits(am, m[1]));
        CHECK(same_bits(av, v[1]));
    }
}

// The guard's verdict on its own: a non-finite loss with finite gradients (a target whose probability underflows to 0)
// must stop the update too, as must a non-finite gradient with a finite loss.
TEST_CASE("the device-side guard refuses a step whose loss alone, or whose gradient alone, is not finite", "[engine]") {
    CommandLine cl = parse_args({"train_gpt_cpu", "--vocab", "40", "--max-seq-len", "16", "--seq-len", "16",
                                 "--probe-len", "16", "--layers", "1", "--heads", "2", "--channels", "16",
                                 "--ffn-hidden", "32"});
    Model<float> m;
    model_build(&m, model_from_flags(&cl));
    model_init(&m, 3);
    std::vector<float> p0 = m.params.to_host();
    AdamWStep s;
    s.lr = 1e-2f;
    struct Case {
        double loss;
        float grad;
        bool ok;
    };
    for (Case c : {Case{2.5, 0.1f, true}, Case{INFINITY, 0.1f, false}, Case{NAN, 0.1f, false},
                   Case{2.5, INFINITY, false}}) {
        INFO("loss " << c.loss << " gradient " << c.grad);
        m.params.upload(p0.data(), p0.size());
        sk_fill(m.grads.data(), m.num_params, 0.1f);
        m.grads[7] = c.grad;
        sk_fill(m.step_stats.data(), (size_t)STEP_STATS, 0.0);
        m.step_stats[STEP_LOSS] = c.loss;
        guard_step(&m, 0.0f);
        CHECK((m.step_stats[STEP_OK] != 0) == c.ok);
        adamw_update(&m, s, (const double*)m.step_stats.data());
        CHECK(same_bits(m.params.to_host(), p0) == !c.ok);  // updated exactly when the step was finite
    }
}
