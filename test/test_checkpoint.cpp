// Checkpoints and determinism: llm.c byte layout, round trips, bit-identical resume, thread-count independence.
#include "test_helpers.h"

TEST_CASE("a gpt2-architecture model file has llm.c's exact byte layout (version 3)", "[checkpoint]") {
    const int maxT = 16, V = 53, L = 2, NH = 4, C = 16, Vp = 128;
    ModelConfig c = make_config(maxT, V, L, NH, C, 4 * C, NORM_LAYERNORM, PLACE_PRE, FFN_GELU, POS_LEARNED, 1, 1, INIT_GPT2);
    REQUIRE(config_is_gpt2_arch(c));
    Model<float> m;
    model_build(&m, c);
    for (int t = 0; t < NUM_PARAM_TENSORS; t++)
        for (size_t i = 0; i < m.sizes[t]; i++) m.p[t][i] = (float)(t + 1);
    std::string dir = temp_dir();
    write_model_file(dir + "/m.bin", c, m.params.data());
    std::string bytes = slurp(dir + "/m.bin");
    // llm.c's train_gpt2.c fill_in_parameter_sizes, written out independently here
    size_t llmc_sizes[16] = {(size_t)Vp * C, (size_t)maxT * C, (size_t)L * C, (size_t)L * C, (size_t)L * 3 * C * C,
                             (size_t)L * 3 * C, (size_t)L * C * C, (size_t)L * C, (size_t)L * C, (size_t)L * C,
                             (size_t)L * 4 * C * C, (size_t)L * 4 * C, (size_t)L * C * 4 * C, (size_t)L * C, (size_t)C,
                             (size_t)C};
    int our_ids[16] = {P_WTE, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB, P_LN2W, P_LN2B, P_FCW,
                       P_FCB, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB};
    size_t total = 0;
    for (size_t s : llmc_sizes) total += s;
    REQUIRE(bytes.size() == 1024 + 4 * total);
    const int32_t* h = (const int32_t*)bytes.data();
    int expect_header[8] = {20240326, 3, maxT, V, L, NH, C, Vp};
    for (int i = 0; i < 8; i++) CHECK(h[i] == expect_header[i]);
    for (int i = 8; i < 256; i++) CHECK(h[i] == 0);
    size_t off = 1024;
    for (int k = 0; k < 16; k++) {
        float first, last;
        memcpy(&first, &bytes[off], 4);
        memcpy(&last, &bytes[off + 4 * (llmc_sizes[k] - 1)], 4);
        INFO("llm.c tensor " << k);
        CHECK(first == (float)(our_ids[k] + 1));
        CHECK(last == (float)(our_ids[k] + 1));
        off += 4 * llmc_sizes[k];
    }
}

TEST_CASE("our writer reproduces the PyTorch reference's model files byte for byte", "[checkpoint]") {
    std::string dir = temp_dir();
    std::vector<std::string> models = expand_glob(fixture("*_model.bin"), "fixtures");
    CHECK(models.size() >= 35);
    for (const std::string& path : models) {
        INFO("fixture " << path);
        std::vector<float> params;
        ModelConfig c = read_model_file(path, &params);
        write_model_file(dir + "/copy.bin", c, params.data());
        CHECK(slurp(dir + "/copy.bin") == slurp(path));
    }
}

TEST_CASE("version-4 round trip keeps every architecture field and every parameter bit", "[checkpoint]") {
    std::string dir = temp_dir();
    for (int ffn = 0; ffn < FFN_NUM_KINDS; ffn++)
        for (int pos = 0; pos < POS_NUM_KINDS; pos++) {
            ModelConfig c = make_config(12, 70, 2, 2, 8, 20, ffn % 2, pos % 2, ffn, pos, pos % 2, ffn % 2, INIT_LLAMA);
            c.rope_base = 500.0f + ffn;
            c.norm_eps = 1e-6f;
            Model<float> m;
            model_build(&m, c);
            model_init(&m, 7);
            write_model_file(dir + "/m.bin", c, m.params.data());
            CHECK(((const int32_t*)slurp(dir + "/m.bin").data())[1] == 4);
            std::vector<float> back;
            ModelConfig b = read_model_file(dir + "/m.bin", &back);
            CHECK(b.max_seq_len == 12); CHECK(b.vocab_size == 70); CHECK(b.padded_vocab_size == 128);
            CHECK(b.ffn_hidden == 20); CHECK(b.norm == c.norm); CHECK(b.placement == c.placement); CHECK(b.ffn == ffn);
            CHECK(b.positions == pos); CHECK(b.tied == c.tied); CHECK(b.bias == c.bias);
            CHECK(b.rope_base == c.rope_base); CHECK(b.norm_eps == 1e-6f);
            CHECK(memcmp(back.data(), m.params.data(), m.num_params * 4) == 0);
        }
}

TEST_CASE("init: padded vocabulary rows are zero, norms are one, the seed decides everything", "[checkpoint]") {
    ModelConfig c = presets[0].cfg;
    c.vocab_size = 200;
    config_finalize(&c);
    Model<float> a, b;
    model_build(&a, c); model_init(&a, 5);
    model_build(&b, c); model_init(&b, 5);
    CHECK(memcmp(a.params.data(), b.params.data(), a.num_params * 4) == 0);
    for (size_t i = (size_t)200 * c.channels; i < a.sizes[P_WTE]; i++) REQUIRE(a.p[P_WTE][i] == 0.0f);
    for (size_t i = 0; i < a.sizes[P_LN1W]; i++) REQUIRE(a.p[P_LN1W][i] == 1.0f);
    // the paper's init: std sqrt(2/(5 C)) for qkvw
    double s = 0;
    for (size_t i = 0; i < a.sizes[P_QKVW]; i++) s += (double)a.p[P_QKVW][i] * a.p[P_QKVW][i];
    CHECK(sqrt(s / a.sizes[P_QKVW]) == Approx(sqrt(2.0 / (5 * c.channels))).epsilon(0.02));
}

TEST_CASE("resume continues bit-identically to an uninterrupted run", "[checkpoint][resume]") {
    TinyRun straight = tiny_run(6);
    straight.cl.train.save_every = 3;
    REQUIRE(train(&straight.cl) == 0);
    TinyRun split = tiny_run(3);
    REQUIRE(train(&split.cl) == 0);
    CHECK(slurp(split.dir + "/run/model_00000003.bin") == slurp(straight.dir + "/run/model_00000003.bin"));
    CommandLine again = split.cl;
    again.train.resume_dir = split.dir + "/run";
    again.train.steps = 6;
    again.given = {"--resume", "--steps"};  // as on a command line: every other flag comes back from the checkpoint
    again.model_flag_seen = false;
    REQUIRE(train(&again) == 0);
    std::string a = slurp(straight.dir + "/run/model_00000006.bin"), b = slurp(split.dir + "/run/model_00000006.bin");
    REQUIRE(!a.empty());
    CHECK(a == b);
    CHECK(state_numbers(straight.dir + "/run/state_00000006.bin") == state_numbers(split.dir + "/run/state_00000006.bin"));
    // and training moved the weights
    CHECK(a != slurp(straight.dir + "/run/model_00000003.bin"));
    // the JSON-lines log holds config, train, val and sink records
    std::string log = slurp(straight.dir + "/run/log.jsonl");
    CHECK(log.find("\"type\":\"config\"") != std::string::npos);
    CHECK(log.find("\"type\":\"train\",\"step\":6") != std::string::npos);
    CHECK(log.find("\"type\":\"sink\",\"step\":6") != std::string::npos);
    CHECK(log.find("\"alpha1\":[[") != std::string::npos);
}

// test_gpu.cpp runs the same check on train_gpt, where cuBLAS's choices could break it
TEST_CASE("fast engine: the same bits run to run, and a resumed run continues bit for bit (fp32 and bf16)",
          "[checkpoint][resume][fast]") {
    TinyRun r = tiny_run(1);
    for (const char* precision : {"fp32", "bf16"}) {
        INFO("--precision " << precision);
        check_repeat_and_resume("./train_gpt_cpu", tiny_run_flags(r) + " --engine fast --precision " + precision);
    }
}

TEST_CASE("results do not depend on the OpenMP thread count (1 vs 2 threads, same bits)", "[determinism]") {
    std::string out[2];
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        TinyRun r = tiny_run(4);
        REQUIRE(train(&r.cl) == 0);
        out[threads - 1] = slurp(r.dir + "/run/model_00000004.bin") + state_numbers(r.dir + "/run/state_00000004.bin");
    }
    omp_set_num_threads(2);
    REQUIRE(!out[0].empty());
    CHECK(out[0] == out[1]);
    // a wider model exercises full gemm tiles and several blocks per thread
    ModelConfig c = make_config(32, 300, 2, 4, 64, 160, NORM_LAYERNORM, PLACE_POST, FFN_GEGLU, POS_ALIBI, 1, 1, INIT_GPT2);
    std::vector<float> grads[2];
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        Model<float> m;
        model_build(&m, c);
        model_init(&m, 3);
        Acts<float> a;
        std::vector<int> x(4 * 32), y(4 * 32);
        for (size_t i = 0; i < x.size(); i++) { x[i] = (i * 7) % 300; y[i] = (i * 13) % 300; }
        model_forward(&m, &a, x.data(), y.data(), 4, 32);
        model_backward(&m, &a, 1.0f);
        grads[threads - 1] = m.grads.to_host();
    }
    omp_set_num_threads(2);
    CHECK(memcmp(grads[0].data(), grads[1].data(), grads[0].size() * 4) == 0);
}
