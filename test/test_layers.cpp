// Every layer's backward against central finite differences in double precision: loss = sum(out * R) for a random R,
// so d loss / d out = R is fed to the backward pass and every input and weight gradient is compared. Also the
// correctly rounded math of common/numerics.h, and the CPU's fast twins (cpu/: gemm, attention, activations) against
// their plain code, bit for bit.
#include "test_helpers.h"

static const double FD_TOL = 1e-6;  // relative; double-precision central differences with h = 1e-5 reach ~1e-9

// numerics.h: the float exp, log and tanh both trainers use must be the correctly rounded values (libm's double
// result rounded to float) on a sample of a million inputs spread over every exponent, and on the special values.
// dev/numerics_check.cpp does all 2^32.
TEST_CASE("sk_exp, sk_log and sk_tanh are correctly rounded (a million inputs and the special values)", "[layers]") {
    auto same = [](float a, float b) { return (isnan(a) && isnan(b)) || memcmp(&a, &b, 4) == 0; };
    std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, 1e-45f, -1e-45f, 88.72283f, 88.72284f,
                             -87.33654f, -103.972f, -104.0f, 89.0f, 0.5f, -0.5f, 0.49999997f, 9.0f, 10.0f, 10.000001f};
    for (uint64_t u = 0; u < (1ull << 32); u += 4093) {
        uint32_t bits = (uint32_t)u;
        float x;
        memcpy(&x, &bits, 4);
        xs.push_back(x);
    }
    int64_t bad_exp = 0, bad_log = 0, bad_tanh = 0;
    for (float x : xs) {
        bad_exp += !same(sk_exp(x), (float)exp((double)x));
        bad_log += !same(sk_log(x), (float)log((double)x));
        bad_tanh += !same(sk_tanh(x), (float)tanh((double)x));
    }
    CHECK(xs.size() > 1000000);
    CHECK(bad_exp == 0);
    CHECK(bad_log == 0);
    CHECK(bad_tanh == 0);
    CHECK(std::signbit(sk_tanh(-0.0f)));
    CHECK(sk_exp(-200.0f) == 0.0f);
    CHECK(sk_exp(100.0f) == INFINITY);
    CHECK(sk_log(0.0f) == -INFINITY);
    CHECK(isnan(sk_log(-1.0f)));
}

TEST_CASE("matmul backward matches finite differences", "[layers]") {
    std::mt19937_64 rng(1);
    const int BT = 7, C = 5, OC = 9;
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        auto x = random_vec(BT * C, rng), w = random_vec(OC * C, rng), b = random_vec(OC, rng), R = random_vec(BT * OC, rng);
        std::vector<double> out(BT * OC);
        auto loss = [&] {
            matmul_forward(out.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, BT, C, OC);
            return dot(R, out.data());
        };
        loss();
        std::vector<double> dx(BT * C, 0), dw(OC * C, 0), db(OC, 0);
        matmul_backward(dx.data(), dw.data(), with_bias ? db.data() : nullptr, R.data(), x.data(), w.data(), BT, C, OC);
        CHECK(fd_check(x, dx, loss) < FD_TOL);
        CHECK(fd_check(w, dw, loss) < FD_TOL);
        if (with_bias) CHECK(fd_check(b, db, loss) < FD_TOL);
    }
}

// The CPU's gemm (cpu/gemm.h: packed, cache-blocked, AVX-512 for float) and gemm_by_element (the definition, which the
// GPU build's gemm_exact_tiled equals: test_gemm_exact.cpp) must both give exactly the documented sum, acc =
// fma(A(m,k), B(k,n), acc) for k in order from the init, for every layout of A and B, ragged tiles and blocks (K across
// the KC = 256 blocks, N across the NC = 1024 blocks), bias and accumulate.
template <typename F>
static void check_gemm_exact(std::mt19937_64& rng) {
    auto draw = [&](size_t n) { std::vector<F> v(n); for (F& x : v) x = (F)random_vec(1, rng)[0]; return v; };
    int cases = 0;
    for (int M : {1, 6, 13}) for (int N : {1, 33, 64, 200, 1100}) for (int K : {1, 7, 300, 600})
    for (int layout = 0; layout < 4; layout++) for (int init = 0; init < 3; init++) {
        if (N == 1100 && (K > 300 || layout % 2)) continue;  // the large N once per K block shape is enough
        bool a_t = layout & 1, b_t = layout & 2;
        std::vector<F> A = draw((size_t)M * K), Bm = draw((size_t)K * N), bias = draw(N), start = draw((size_t)M * N);
        int lda = a_t ? M : K, ldb = b_t ? K : N;
        std::vector<F> blocked = start, by_element = start, expect = start;
        const F* b = init == 1 ? bias.data() : nullptr;
        gemm_blocked(blocked.data(), A.data(), lda, a_t, Bm.data(), ldb, b_t, M, K, N, b, init == 2);
        gemm_by_element(by_element.data(), A.data(), lda, a_t, Bm.data(), ldb, b_t, M, K, N, b, init == 2);
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                F acc = init == 2 ? start[(size_t)m * N + n] : b ? b[n] : F(0);
                for (int k = 0; k < K; k++)
                    acc = sk_fma(a_t ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k],
                                 b_t ? Bm[(size_t)n * ldb + k] : Bm[(size_t)k * ldb + n], acc);
                expect[(size_t)m * N + n] = acc;
            }
        INFO("M " << M << " N " << N << " K " << K << " a_t " << a_t << " b_t " << b_t << " init " << init);
        REQUIRE(memcmp(blocked.data(), expect.data(), expect.size() * sizeof(F)) == 0);
        REQUIRE(memcmp(by_element.data(), expect.data(), expect.size() * sizeof(F)) == 0);
        if (init == 2) REQUIRE(blocked != start);  // accumulate really added to the previous values
        cases++;
    }
    CHECK(cases > 300);
}

TEST_CASE("gemm (CPU, blocked) and gemm_by_element give the exact sequential fma sum", "[layers]") {
    std::mt19937_64 rng(21);
    check_gemm_exact<float>(rng);
    check_gemm_exact<double>(rng);
}

TEST_CASE("layernorm and rmsnorm backward match finite differences", "[layers]") {
    std::mt19937_64 rng(3);
    const int BT = 6, C = 10;
    for (int kind : {NORM_LAYERNORM, NORM_RMSNORM}) {
        auto x = random_vec(BT * C, rng), w = random_vec(C, rng), b = random_vec(C, rng), R = random_vec(BT * C, rng);
        std::vector<double> out(BT * C), mean(BT), rstd(BT);
        const double* bp = kind == NORM_LAYERNORM ? b.data() : nullptr;
        auto loss = [&] {
            norm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), bp, BT, C, kind, 1e-5f);
            return dot(R, out.data());
        };
        loss();
        std::vector<double> dx(BT * C, 0), dw(C, 0), db(C, 0);
        norm_backward(dx.data(), dw.data(), kind == NORM_LAYERNORM ? db.data() : nullptr, R.data(), x.data(), w.data(),
                      mean.data(), rstd.data(), BT, C, kind);
        INFO("norm " << norm_names[kind]);
        CHECK(fd_check(x, dx, loss) < FD_TOL);
        CHECK(fd_check(w, dw, loss) < FD_TOL);
        if (kind == NORM_LAYERNORM) CHECK(fd_check(b, db, loss) < FD_TOL);
    }
}

TEST_CASE("every FFN activation (plain and gated) matches finite differences", "[layers]") {
    std::mt19937_64 rng(4);
    const size_t N = 40;
    for (int ffn = 0; ffn < FFN_NUM_KINDS; ffn++) {
        bool gated = ffn_is_gated(ffn);
        auto h1 = random_vec(N, rng, 2.0), h2 = random_vec(N, rng), R = random_vec(N, rng);
        for (double& v : h1) if (fabs(v) < 1e-3) v = 0.5;  // keep relu's kink away from the FD stencil
        std::vector<double> out(N);
        auto loss = [&] {
            ffn_act_forward(out.data(), h1.data(), gated ? h2.data() : nullptr, N, ffn);
            return dot(R, out.data());
        };
        loss();
        std::vector<double> d1(N), d2(N);
        ffn_act_backward(d1.data(), d2.data(), R.data(), h1.data(), gated ? h2.data() : nullptr, N, ffn);
        INFO("ffn " << ffn_names[ffn]);
        CHECK(fd_check(h1, d1, loss) < FD_TOL);
        if (gated) CHECK(fd_check(h2, d2, loss) < FD_TOL);
    }
    // values against closed forms
    CHECK(act_forward(FFN_GELU, 1.0) == Approx(0.8411919906082768).epsilon(1e-12));
    CHECK(act_forward(FFN_SWISH, 1.0) == Approx(0.7310585786300049).epsilon(1e-12));
    CHECK(act_forward(FFN_RELU, -2.0) == 0.0);
}

TEST_CASE("RoPE: backward is the inverse rotation, norms are preserved", "[layers]") {
    std::mt19937_64 rng(5);
    ModelConfig c = make_config(8, 50, 1, 2, 8, 16, NORM_RMSNORM, PLACE_PRE, FFN_SWIGLU, POS_ROPE, 0, 0, INIT_LLAMA);
    Model<double> m;
    model_build(&m, c);
    const int B = 2, T = 5, C = 8, NH = 2;
    auto qkv = random_vec(B * T * 3 * C, rng), R = random_vec(B * T * 3 * C, rng);
    std::vector<double> out;
    auto loss = [&] {
        out = qkv;
        rope_apply(out.data(), m.rope_cos.data(), m.rope_sin.data(), B, T, C, NH, false);
        return dot(R, out.data());
    };
    loss();
    // norm of each head's q is preserved, v untouched
    for (int h = 0; h < NH; h++) {
        double n0 = 0, n1 = 0;
        for (int d = 0; d < 4; d++) {
            n0 += qkv[(1 * 3 * C) + h * 4 + d] * qkv[(1 * 3 * C) + h * 4 + d];
            n1 += out[(1 * 3 * C) + h * 4 + d] * out[(1 * 3 * C) + h * 4 + d];
        }
        CHECK(n1 == Approx(n0).epsilon(1e-12));
    }
    for (int i = 2 * C; i < 3 * C; i++) CHECK(out[3 * C + i] == qkv[3 * C + i]);
    std::vector<double> d = R;
    rope_apply(d.data(), m.rope_cos.data(), m.rope_sin.data(), B, T, C, NH, true);
    CHECK(fd_check(qkv, d, loss) < FD_TOL);
    // position 0 is the identity; position 1, pair 0 rotates by exactly 1 radian (base^0)
    CHECK(m.rope_cos[0] == 1.0);
    CHECK(m.rope_cos[2] == Approx(cos(1.0)).epsilon(1e-15));
}

TEST_CASE("attention backward matches finite differences (plain and ALiBi)", "[layers]") {
    std::mt19937_64 rng(6);
    const int B = 2, T = 6, C = 8, NH = 2;
    std::vector<float> slopes = {0.25f, 0.0625f};
    for (int use_alibi = 0; use_alibi < 2; use_alibi++) {
        auto qkv = random_vec(B * T * 3 * C, rng), R = random_vec(B * T * C, rng);
        std::vector<double> work(3 * B * NH * T * (T + 1)), ds(B * NH * T * (T + 1));
        std::vector<double> out(B * T * C), att(B * NH * T * T);
        AttnSpec spec;
        AttnParams<double> ap{spec, use_alibi ? slopes.data() : nullptr, nullptr, nullptr, nullptr, nullptr, 0};
        auto loss = [&] {
            attention_forward(out.data(), att.data(), (double*)nullptr, work.data(), qkv.data(), qkv.data() + C, 3 * C,
                              qkv.data() + 2 * C, ap, B, T, C, NH);
            return dot(R, out.data());
        };
        loss();
        // rows are causal distributions
        for (int bh = 0; bh < B * NH; bh++)
            for (int t = 0; t < T; t++) {
                double s = 0;
                for (int j = 0; j < T; j++) {
                    s += att[(bh * T + t) * T + j];
                    if (j > t) CHECK(att[(bh * T + t) * T + j] == 0.0);
                }
                CHECK(s == Approx(1.0).epsilon(1e-12));
            }
        std::vector<double> dqkv(B * T * 3 * C, 0);
        AttnParamGrads<double> g{nullptr, nullptr, nullptr, nullptr, nullptr};
        attention_backward(dqkv.data(), dqkv.data() + C, 3 * C, dqkv.data() + 2 * C, g, ds.data(), work.data(), R.data(), qkv.data(),
                           qkv.data() + C, qkv.data() + 2 * C, att.data(), (const double*)nullptr, ap, B, T, C, NH);
        INFO("alibi " << use_alibi);
        CHECK(fd_check(qkv, dqkv, loss) < FD_TOL);
    }
}

TEST_CASE("embedding backward, grouped by token, adds each element's terms in (b, t) order (the bits of one walk)",
          "[layers]") {
    std::mt19937_64 rng(17);
    const int B = 3, T = 37, C = 5, Vp = 16;
    std::vector<int> tok(B * T);
    for (int i = 0; i < B * T; i++) tok[i] = i % T == 0 ? -1 : (int)(rng() % 6) * 2;  // a sink token, many repeats
    std::vector<float> dx(B * T * C), wte_init(Vp * C), pe_init(T * C), sink_init(C);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto* v : {&dx, &wte_init, &pe_init, &sink_init})
        for (float& x : *v) x = nd(rng) * (rng() % 4 == 0 ? 1e4f : 1.0f);  // mixed magnitudes: order shows in the bits
    // the reference: one walk over the positions in (b, t) order, one += per term
    std::vector<float> wte_ref = wte_init, pe_ref = pe_init, sink_ref = sink_init;
    for (int bt = 0; bt < B * T; bt++)
        for (int i = 0; i < C; i++) {
            float d = dx[(size_t)bt * C + i];
            (tok[bt] >= 0 ? wte_ref[(size_t)tok[bt] * C + i] : sink_ref[i]) += d;
            pe_ref[(size_t)(bt % T) * C + i] += d;
        }
    std::vector<int> groups;
    int n = group_positions_by_token(tok.data(), B * T, &groups);
    CHECK(n == 7);  // -1 and six even ids
    std::vector<float> wte = wte_init, pe = pe_init, sink = sink_init;
    embedding_backward(wte.data(), sink.data(), pe.data(), dx.data(), groups.data(), n, B, T, C);
    CHECK(wte == wte_ref);
    CHECK(pe == pe_ref);
    CHECK(sink == sink_ref);
}

TEST_CASE("embedding and cross-entropy backward match finite differences", "[layers]") {
    std::mt19937_64 rng(7);
    const int B = 2, T = 4, C = 3, V = 5, Vp = 8;
    std::vector<int> tok = {1, 3, 1, 0, 4, 4, 2, 1};  // repeats exercise the accumulation
    auto wte = random_vec(Vp * C, rng), wpe = random_vec(T * C, rng), R = random_vec(B * T * C, rng);
    std::vector<double> out(B * T * C);
    auto loss = [&] {
        embedding_forward(out.data(), tok.data(), wte.data(), (const double*)nullptr, wpe.data(), B, T, C);
        return dot(R, out.data());
    };
    loss();
    std::vector<double> dwte(Vp * C, 0), dwpe(T * C, 0);
    std::vector<int> groups;
    int n = group_positions_by_token(tok.data(), B * T, &groups);
    CHECK(n == 5);  // ids 0..4
    embedding_backward(dwte.data(), (double*)nullptr, dwpe.data(), R.data(), groups.data(), n, B, T, C);
    CHECK(fd_check(wte, dwte, loss) < FD_TOL);
    CHECK(fd_check(wpe, dwpe, loss) < FD_TOL);

    auto logits = random_vec(B * T * Vp, rng, 2.0);
    std::vector<double> probs(B * T * Vp), losses(B * T);
    auto ce = [&] {
        crossentropy_forward(losses.data(), probs.data(), logits.data(), tok.data(), B * T, V, Vp);
        double s = 0;
        for (double l : losses) s += l;
        return s;
    };
    ce();
    std::vector<double> dl(B * T * Vp);
    crossentropy_backward(dl.data(), probs.data(), tok.data(), 1.0, B * T, V, Vp);
    CHECK(fd_check(logits, dl, ce) < FD_TOL);
    for (int bt = 0; bt < B * T; bt++)
        for (int i = V; i < Vp; i++) CHECK(dl[bt * Vp + i] == 0.0);  // padded columns take no gradient
}

// The trainer writes the logits' gradient over the logits (model_backward): both backward forms must write every value
// (whatever the buffer held), 0 for the padding and for positions without a loss, and give in place the bits they give
// into a zeroed buffer of their own.
TEST_CASE("cross-entropy backward writes every logit's gradient, in place over the logits too", "[layers]") {
    std::mt19937_64 rng(12);
    const int BT = 6, V = 37, Vp = 40;
    std::vector<int> tok = {3, -1, 36, 0, -1, 17};  // -1: a position without a loss
    std::vector<double> drawn = random_vec(BT * Vp, rng, 2.0);
    std::vector<float> logits(drawn.begin(), drawn.end()), probs(BT * Vp), losses(BT), stats(2 * BT),
        lanes(2 * BT * CE_LANES);
    crossentropy_forward(losses.data(), probs.data(), logits.data(), tok.data(), BT, V, Vp);
    crossentropy_forward_stats(losses.data(), stats.data(), lanes.data(), logits.data(), tok.data(), BT, V, Vp);
    for (int fast = 0; fast < 2; fast++) {
        INFO("fast " << fast);
        auto backward = [&](float* d) {
            if (fast)
                crossentropy_backward_stats(d, logits.data(), stats.data(), tok.data(), 0.25f, BT, V, Vp);
            else
                crossentropy_backward(d, probs.data(), tok.data(), 0.25f, BT, V, Vp);
        };
        std::vector<float> zeroed(BT * Vp, 0.0f), garbage(BT * Vp, NAN), in_place = logits;
        backward(zeroed.data());
        backward(garbage.data());
        if (fast) {  // in place: each thread reads its logit, then writes its gradient there
            const std::vector<float> saved = logits;
            backward(logits.data());
            in_place = logits;
            logits = saved;
        } else {
            backward(in_place.data());  // (the exact form reads only probs)
        }
        CHECK(memcmp(garbage.data(), zeroed.data(), zeroed.size() * sizeof(float)) == 0);
        CHECK(memcmp(in_place.data(), zeroed.data(), zeroed.size() * sizeof(float)) == 0);
        int nonzero = 0;
        for (int bt = 0; bt < BT; bt++)
            for (int i = 0; i < Vp; i++) {
                float d = zeroed[bt * Vp + i];
                if (i >= V || tok[bt] < 0) CHECK(d == 0.0f);
                nonzero += d != 0.0f;
            }
        CHECK(nonzero == 4 * V);  // the four positions with a loss have a gradient on every real logit
    }
}

// The whole model in double, for every combination of norm, placement, FFN, positions, tying and biases: the gradient
// of every parameter tensor against finite differences at sampled entries.
TEST_CASE("whole-model backward matches finite differences for every architecture option", "[layers][model]") {
    std::mt19937_64 rng(8);  // the batch
    const int B = 2, T = 5;
    std::vector<int> x(B * T), y(B * T);
    for (int i = 0; i < B * T; i++) { x[i] = rng() % 11; y[i] = rng() % 11; }
    int configs = 0;
    for (int norm = 0; norm < NORM_NUM_KINDS; norm++)
    for (int place = 0; place < PLACE_NUM_KINDS; place++)
    for (int ffn = 0; ffn < FFN_NUM_KINDS; ffn++)
    for (int pos = 0; pos < POS_NUM_KINDS; pos++)
    for (int tied = 0; tied < 2; tied++)
    for (int bias = 0; bias < 2; bias++) {
        ModelConfig c = make_config(8, 11, 2, 2, 8, 12, norm, place, ffn, pos, tied, bias, INIT_GPT2);
        INFO(norm_names[norm] << " " << placement_names[place] << " " << ffn_names[ffn] << " " << pos_names[pos]
             << " tied " << tied << " bias " << bias);
        // relu's kink must not fall inside the difference stencil: a smaller step for relu and reglu
        bool kink = ffn == FFN_RELU || ffn == FFN_REGLU;
        check_model_gradients(c, x, y, B, T, 42 + configs, 6, kink ? 1e-7 : 1e-5, 1e-5);
        configs++;
    }
    CHECK(configs == 480);
}

// The student's entry point, attention_forward_causal / attention_backward_causal (what the default model runs), must
// compute exactly what the general attention computes for the plain spec: the same bits, forward and backward.
template <typename F>
static void check_plain_attention_equals_general(std::mt19937_64& rng) {
    for (int B : {1, 3}) for (int T : {1, 5, 33}) for (int NH : {1, 4}) {
        const int C = 8 * NH;
        auto draw = [&](size_t n) { std::vector<F> v(n); for (F& x : v) x = (F)random_vec(1, rng, 1.5)[0]; return v; };
        std::vector<F> qkv = draw((size_t)B * T * 3 * C), dout = draw((size_t)B * T * C);
        size_t rows = (size_t)B * NH * T;
        std::vector<F> out_p(B * T * C), out_g(B * T * C), att_p(rows * T), att_g(rows * T);
        std::vector<F> work(3 * rows * (T + 1)), ds_p(rows * (T + 1)), ds_g(rows * (T + 1));
        AttnSpec spec;
        AttnParams<F> ap{spec, nullptr, nullptr, nullptr, nullptr, nullptr, 0};
        attention_forward_causal(out_p.data(), att_p.data(), qkv.data(), B, T, C, NH);
        attention_forward(out_g.data(), att_g.data(), (F*)nullptr, work.data(), qkv.data(), qkv.data() + C, 3 * C,
                          qkv.data() + 2 * C, ap, B, T, C, NH);
        INFO("B " << B << " T " << T << " NH " << NH);
        REQUIRE(memcmp(out_p.data(), out_g.data(), out_p.size() * sizeof(F)) == 0);
        REQUIRE(memcmp(att_p.data(), att_g.data(), att_p.size() * sizeof(F)) == 0);
        std::vector<F> start = draw(qkv.size());  // backward accumulates into whatever is there
        std::vector<F> d_p = start, d_g = start;
        attention_backward_causal(d_p.data(), ds_p.data(), dout.data(), qkv.data(), att_p.data(), B, T, C, NH);
        AttnParamGrads<F> none{nullptr, nullptr, nullptr, nullptr, nullptr};
        attention_backward(d_g.data(), d_g.data() + C, 3 * C, d_g.data() + 2 * C, none, ds_g.data(), work.data(),
                           dout.data(), qkv.data(), qkv.data() + C, qkv.data() + 2 * C, att_g.data(), (const F*)nullptr,
                           ap, B, T, C, NH);
        REQUIRE(memcmp(d_p.data(), d_g.data(), d_p.size() * sizeof(F)) == 0);
        REQUIRE(d_p != start);
    }
}

// cpu/attention.h (a head at a time, sums side by side) against the per-row plain attention, bit for bit.
TEST_CASE("the CPU's blocked causal attention equals the per-row form bit for bit", "[layers]") {
    std::mt19937_64 rng(29);
    for (int B : {1, 2}) for (int T : {1, 7, 16, 17, 40}) for (int NH : {1, 3})
    for (int hs : {2, 8, 16, 24, 32, 64}) {  // each head size with a compiled copy, and others
        const int C = hs * NH;
        auto draw = [&](size_t n) { std::vector<float> v(n); for (float& x : v) x = (float)random_vec(1, rng, 1.5)[0]; return v; };
        std::vector<float> qkv = draw((size_t)B * T * 3 * C), dout = draw((size_t)B * T * C);
        size_t rows = (size_t)B * NH * T;
        std::vector<float> out_r(B * T * C), out_b(B * T * C), att_r(rows * T), att_b(rows * T);
        attention_forward_causal(out_r.data(), att_r.data(), qkv.data(), B, T, C, NH);
        attention_forward_causal_blocked(out_b.data(), att_b.data(), qkv.data(), B, T, C, NH);
        INFO("B " << B << " T " << T << " NH " << NH << " hs " << hs);
        REQUIRE(memcmp(out_r.data(), out_b.data(), out_r.size() * 4) == 0);
        REQUIRE(memcmp(att_r.data(), att_b.data(), att_r.size() * 4) == 0);
        std::vector<float> start = draw(qkv.size()), d_r = start, d_b = start;
        std::vector<float> ds_r(rows * (T + 1)), ds_b(rows * (T + 1));
        attention_backward_causal(d_r.data(), ds_r.data(), dout.data(), qkv.data(), att_r.data(), B, T, C, NH);
        attention_backward_causal_blocked(d_b.data(), ds_b.data(), dout.data(), qkv.data(), att_r.data(), B, T, C, NH);
        REQUIRE(memcmp(d_r.data(), d_b.data(), d_r.size() * 4) == 0);
    }
}

TEST_CASE("plain causal softmax attention equals the general attention bit for bit", "[layers]") {
    std::mt19937_64 rng(23);
    check_plain_attention_equals_general<float>(rng);
    check_plain_attention_equals_general<double>(rng);
    // and the model takes the plain path exactly when the spec is plain softmax without ALiBi
    ModelConfig c = presets[0].cfg;
    CHECK(attention_is_plain(c));
    c.positions = POS_ALIBI;
    CHECK(!attention_is_plain(c));
    c = presets[0].cfg;
    c.attn.slot = SLOT_ZERO;
    CHECK(!attention_is_plain(c));
}

// sk_exp_n and sk_tanh_n (many lanes at a time; AVX-512 where the CPU has it) must equal sk_exp and sk_tanh bit for
// bit everywhere: a million inputs over every exponent, the edges of each branch and clamped range, NaN and
// infinities, and every tail length.
template <typename Many, typename One>
static void check_many_lanes(Many many, One one, std::vector<float> xs) {
    for (uint64_t u = 0; u < (1ull << 32); u += 4093) {
        uint32_t bits = (uint32_t)u;
        float x;
        memcpy(&x, &bits, 4);
        xs.push_back(x);
    }
    std::vector<float> fast(xs.size());
    many(xs.data(), fast.data(), (int)xs.size());
    int64_t bad = 0;
    for (size_t i = 0; i < xs.size(); i++) {
        float ref = one(xs[i]);
        bad += !((isnan(ref) && isnan(fast[i])) || memcmp(&ref, &fast[i], 4) == 0);
    }
    CHECK(bad == 0);
    for (int n = 0; n <= 33; n++) {  // tails: what lies past n is not written
        std::vector<float> y(40, 7.0f);
        many(xs.data() + 100, y.data(), n);
        for (int i = 0; i < 40; i++) {
            float ref = i < n ? one(xs[100 + i]) : 7.0f;
            REQUIRE(memcmp(&ref, &y[i], 4) == 0);
        }
    }
}

TEST_CASE("sk_exp_n equals sk_exp bit for bit", "[layers]") {
    check_many_lanes([](const float* x, float* y, int n) { sk_exp_n(x, y, n); }, [](float x) { return sk_exp(x); },
                     {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f, 88.72283f, 88.72284f,
                      -87.33654f, -103.972f, -104.0f, -104.00001f, 89.0f, 89.00001f, -88.0f, 0.5f});
}

TEST_CASE("sk_tanh_n equals sk_tanh bit for bit", "[layers]") {
    std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f, 1e-20f};
    for (float edge : {0.5f, 10.0f, 9.0109f, 0.25f})
        for (float x : {edge, nextafterf(edge, 0.0f), nextafterf(edge, INFINITY)}) {
            xs.push_back(x);
            xs.push_back(-x);
        }
    for (int i = -4000; i <= 4000; i++) xs.push_back(i * 0.003f);  // where GELU's arguments live
    check_many_lanes([](const float* x, float* y, int n) { sk_tanh_n(x, y, n); }, [](float x) { return sk_tanh(x); },
                     xs);
}

// cpu/activations.h (the swish family, exps a block at a time) against the element-by-element reference bit for bit:
// the reference is the same lambda the GPU build runs (act_forward / act_grad), written out here per element.
TEST_CASE("the CPU's blocked swish, SwiGLU, GELU and GEGLU equal the per-element reference bit for bit", "[layers]") {
    std::mt19937_64 rng(31);
    for (size_t N : {1, 15, 16, 511, 512, 513, 5000}) {
        std::vector<float> h1(N), h2(N), dout(N);
        for (size_t i = 0; i < N; i++) {
            h1[i] = (float)random_vec(1, rng, 4.0)[0];
            h2[i] = (float)random_vec(1, rng)[0];
            dout[i] = (float)random_vec(1, rng)[0];
        }
        h1[0] = -200.0f;  // e^-x overflows: the clamped range
        if (N > 3) h1[1] = 200.0f, h1[2] = 0.0f, h1[3] = -1e-30f;  // tanh saturated; zero; the series' range
        for (int kind = 0; kind < 4; kind++) {
            int ffn = (int[]){FFN_SWISH, FFN_SWIGLU, FFN_GELU, FFN_GEGLU}[kind], gated = kind % 2;
            const float* g2 = gated ? h2.data() : nullptr;
            std::vector<float> out(N), d1(N, 0.25f), d2(N, -0.5f), ref_out(N), ref_d1(N, 0.25f), ref_d2(N, -0.5f);
            ffn_act_forward(out.data(), h1.data(), g2, N, ffn);
            ffn_act_backward(d1.data(), d2.data(), dout.data(), h1.data(), g2, N, ffn);
            for (size_t i = 0; i < N; i++) {
                ref_out[i] = g2 ? act_forward(ffn, h1[i]) * g2[i] : act_forward(ffn, h1[i]);
                float g = g2 ? dout[i] * g2[i] : dout[i];
                ref_d1[i] += g * act_grad(ffn, h1[i]);
                if (g2) ref_d2[i] += dout[i] * act_forward(ffn, h1[i]);
            }
            INFO("N " << N << " ffn " << ffn);
            REQUIRE(memcmp(out.data(), ref_out.data(), N * 4) == 0);
            REQUIRE(memcmp(d1.data(), ref_d1.data(), N * 4) == 0);
            REQUIRE(memcmp(d2.data(), ref_d2.data(), N * 4) == 0);
        }
    }
}
