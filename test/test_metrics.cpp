// Sink metrics on hand-built attention matrices and hidden states with known answers.
#include "test_helpers.h"

TEST_CASE("alpha_k is the mean over the queries that see key k", "[sink]") {
    const int T = 4;
    double A[T * T] = {1.0, 0, 0, 0,
                       0.5, 0.5, 0, 0,
                       0.25, 0.25, 0.5, 0,
                       0.25, 0.25, 0.25, 0.25};
    double alpha[SINK_MAX_K];
    sink_alpha(A, T, SINK_MAX_K, alpha);
    CHECK(alpha[0] == Approx((1.0 + 0.5 + 0.25 + 0.25) / 4).epsilon(1e-15));
    CHECK(alpha[1] == Approx((0.5 + 0.25 + 0.25) / 3).epsilon(1e-15));
    CHECK(alpha[2] == Approx((0.5 + 0.25) / 2).epsilon(1e-15));
    CHECK(alpha[3] == 0.25);
    for (int k = T; k < SINK_MAX_K; k++) CHECK(alpha[k] == 0.0);  // keys beyond the probe
}

TEST_CASE("Sink_k counts heads with alpha_k strictly above eps, averaged over sequences", "[sink]") {
    const int T = 4, L = 2, NH = 2;
    // head kinds: a sink on key 0 (all mass on key 0), uniform causal rows, and exactly eps on key 0
    std::vector<double> sink(T * T, 0), uniform(T * T, 0), edge(T * T, 0);
    for (int t = 0; t < T; t++) {
        sink[t * T] = 1.0;
        for (int j = 0; j <= t; j++) uniform[t * T + j] = 1.0 / (t + 1);
        edge[t * T] = 0.5;
        if (t > 0) edge[t * T + t] = 0.5;
        else edge[0] = 1.0;
    }
    // uniform causal rows give alpha_0 = (1 + 1/2 + 1/3 + 1/4) / 4 = 0.5208; eps 0.55 separates them from the sinks
    double uniform_alpha0 = (1.0 + 0.5 + 1.0 / 3 + 0.25) / 4;
    SinkAccumulator acc;
    sink_begin(&acc, L, NH, T, 0.55f);
    // sequence 1: 3 sink heads of 4. sequence 2: 1 sink head of 4.
    sink_add_head(&acc, 0, 0, sink.data()); sink_add_head(&acc, 0, 1, sink.data());
    sink_add_head(&acc, 1, 0, sink.data()); sink_add_head(&acc, 1, 1, uniform.data());
    sink_end_sequence(&acc);
    sink_add_head(&acc, 0, 0, sink.data()); sink_add_head(&acc, 0, 1, uniform.data());
    sink_add_head(&acc, 1, 0, uniform.data()); sink_add_head(&acc, 1, 1, uniform.data());
    sink_end_sequence(&acc);
    SinkReport r = sink_finish(&acc);
    CHECK(r.sink[0] == Approx((75.0 + 25.0) / 2));
    CHECK(r.sink[1] == 0.0);  // key 1 of a sink head gets nothing; of a uniform head (1/2+1/3+1/4)/3 = 0.36 < 0.55
    CHECK(r.alpha1[0] == 1.0);                                               // sink in both sequences
    CHECK(r.alpha1[1] == Approx((1.0 + uniform_alpha0) / 2).epsilon(1e-15));  // sink, then uniform
    CHECK(r.alpha1[3] == Approx(uniform_alpha0).epsilon(1e-15));
    CHECK(r.alpha1_mean == Approx((1.0 + 2 * (1.0 + uniform_alpha0) / 2 + uniform_alpha0) / 4).epsilon(1e-12));
    // strictness: alpha_0 of `edge` is (1 + 0.5 * 3) / 4 = 0.625; with eps = 0.625 it must not count
    sink_begin(&acc, 1, 1, T, 0.625f);
    sink_add_head(&acc, 0, 0, edge.data());
    sink_end_sequence(&acc);
    CHECK(sink_finish(&acc).sink[0] == 0.0);
    sink_begin(&acc, 1, 1, T, 0.62f);
    sink_add_head(&acc, 0, 0, edge.data());
    sink_end_sequence(&acc);
    CHECK(sink_finish(&acc).sink[0] == 100.0);
}

TEST_CASE("normalised attention entropy: 1 for uniform rows, 0 for one-hot rows", "[sink]") {
    const int T = 5;
    std::vector<double> uniform(T * T, 0), onehot(T * T, 0);
    for (int t = 0; t < T; t++) {
        for (int j = 0; j <= t; j++) uniform[t * T + j] = 1.0 / (t + 1);
        onehot[t * T] = 1.0;
    }
    CHECK(sink_row_entropy(uniform.data(), T) == Approx(1.0).epsilon(1e-12));
    CHECK(sink_row_entropy(onehot.data(), T) == 0.0);
}

TEST_CASE("massive-activation ratios on hand-built hidden states", "[sink]") {
    // rows of width 2: norms 5, 1, 2, 3 -> ||h_0|| / mean_{t>0} ||h_t|| = 5 / 2
    const int T = 4, C = 2;
    double h[T * C] = {3, 4, 1, 0, 0, 2, 3, 0};
    CHECK(sink_first_norm_ratio(h, T, C, C) == Approx(2.5).epsilon(1e-15));
    // max |x| / median |x|: values 1..5 and -100 -> |x| sorted 1 2 3 4 5 100, upper median 4
    double v[6] = {1, -100, 3, 2, 5, 4};
    CHECK(sink_top1_over_median(v, 6) == Approx(25.0).epsilon(1e-12));
    // keys and values read at a row stride (the fused qkv layout): k rows 0.5, 1, 1 -> ratio 0.5
    double qkv[3 * 3] = {9, 0.5, 2, 9, 1, 2, 9, 1, 4};
    SinkAccumulator acc;
    sink_begin(&acc, 1, 1, 3, 0.3f);
    sink_add_kv(&acc, 0, qkv + 1, qkv + 2, 1, 3);
    sink_end_sequence(&acc);
    SinkReport r = sink_finish(&acc);
    CHECK(r.k1_ratio[0] == Approx(0.5).epsilon(1e-15));
    CHECK(r.v1_ratio[0] == Approx(2.0 / 3.0).epsilon(1e-15));
    std::string js = sink_report_json_fields(r);
    CHECK(js.find("\"k1_ratio\":[0.5]") != std::string::npos);
    CHECK(js.find("\"sink\":[") != std::string::npos);
}

TEST_CASE("measure_sinks reads a hand-made model whose first token is a perfect sink", "[sink]") {
    // One layer, RoPE-free: with q = 0 every row is uniform; make key 0 dominate by giving token 0 a huge key.
    ModelConfig c = make_config(8, 4, 1, 1, 4, 8, NORM_RMSNORM, PLACE_PRE, FFN_SWIGLU, POS_NONE, 1, 1, INIT_GPT2);
    ModelEngine e(c, EngineOptions());
    Model<float>& m = e.model;
    for (int i = 0; i < 4; i++) m.p[P_WTE][i * 4 + i] = 1.0f;   // one-hot embeddings
    std::fill(m.p[P_LN1W], m.p[P_LN1W] + 4, 1.0f);
    std::fill(m.p[P_LN2W], m.p[P_LN2W] + 4, 1.0f);
    std::fill(m.p[P_LNFW], m.p[P_LNFW] + 4, 1.0f);
    m.p[P_QKVB][0] = 10.0f;                      // every query is 10 * e_0
    m.p[P_QKVW][(4 + 0) * 4 + 0] = 10.0f;        // key channel 0 = 10 * (normed) x_0: large only for token id 0
    std::vector<int> probe = {0, 1, 2, 3, 1, 2, 3, 1, 0, 2, 2, 3, 1, 1, 2, 3};  // 2 sequences of 8, both start with 0
    SinkReport r = measure_sinks(e, probe, 2, 8, 0.3f);
    CHECK(r.sink[0] == 100.0);
    CHECK(r.alpha1[0] > 0.99);
    CHECK(r.sink[1] == 0.0);
}
