// test/test_hostile.cpp: hostile inputs and faults. Every file reader against a corrupt-file matrix (truncated inside
// the header and inside the payload, wrong magic and version, absurd and overflow-inducing sizes, out-of-range tokens,
// non-finite numbers), the flag parser against a bad-flag matrix, a diverging run, a writer killed with SIGKILL at
// random moments, and a full disk. Each failure must name the file (or flag) and the field at fault.
// What it is not: resume equality (test_checkpoint.cpp) or the fuzzers (dev/fuzz/, which feed the same readers random
// bytes). Part of `make test`; about a second.
#include "test_helpers.h"

#include <signal.h>
#include <sys/wait.h>


using Catch::Matchers::Contains;

// fn must fail (SkError) with a message holding every needle.
static void require_fails(const std::function<void()>& fn, const std::vector<std::string>& needles) {
    std::string msg;
    try {
        fn();
    } catch (const SkError& e) {
        msg = e.what();
    }
    INFO("message: " << msg);
    REQUIRE(!msg.empty());
    for (const std::string& n : needles) CHECK_THAT(msg, Contains(n));
}

// Writes `good` changed by `edit` to the file `bad`; `load` must then fail naming that file and every needle.
static void require_corrupt_fails(const std::function<void()>& load, const std::string& good, const std::string& bad,
                                  const std::function<void(std::string*)>& edit, std::vector<std::string> needles) {
    std::string b = good;
    edit(&b);
    write_bytes(bad, b);
    needles.push_back(bad);
    require_fails(load, needles);
}

static void set_i32(std::string* bytes, size_t index, int32_t v) { memcpy(&(*bytes)[index * 4], &v, 4); }
static void set_f32(std::string* bytes, size_t index, float v) { memcpy(&(*bytes)[index * 4], &v, 4); }

// A small version-4 model (LayerNorm, gated FFN, untied, biases) written to dir/model.bin.
static ModelConfig small_model(const std::string& path, std::vector<float>* params) {
    ModelConfig c = make_config(16, 40, 2, 2, 8, 12, NORM_LAYERNORM, PLACE_PRE, FFN_SWIGLU, POS_ROPE, 0, 1, INIT_GPT2);
    Model<float> m;
    model_build(&m, c);
    model_init(&m, 11);
    write_model_file(path, c, m.params.data());
    *params = m.params.to_host();
    return c;
}

// Offset in floats of element k of tensor id (layer `layer` for the per-layer tensors) in the parameter buffer.
static size_t param_offset(const ModelConfig& c, int id, int layer, size_t k) {
    size_t sizes[NUM_PARAM_TENSORS], off = 0;
    param_sizes(c, sizes);
    for (int i = 0; i < id; i++) off += sizes[i];
    return off + (size_t)layer * (sizes[id] / c.num_layers) + k;
}

TEST_CASE("model file: every corruption is refused with the file and the field named", "[hostile][model]") {
    std::string dir = temp_dir(), good_path = dir + "/model.bin", bad = dir + "/bad.bin";
    std::vector<float> params;
    ModelConfig c = small_model(good_path, &params);
    const std::string good = slurp(good_path);
    std::vector<float> out;
    auto load = [&] { read_model_file(bad, &out); };
    auto mutated = [&](const std::function<void(std::string*)>& edit, const std::vector<std::string>& needles) {
        require_corrupt_fails(load, good, bad, edit, needles);
    };
    SECTION("truncated inside the header") {
        for (size_t n : {0, 4, 100, 1023}) {
            write_bytes(bad, good.substr(0, n));
            require_fails(load, {bad, "shorter than the 1024-byte header"});
        }
    }
    SECTION("truncated inside the payload, or with bytes appended") {
        for (size_t n : {(size_t)1024, (size_t)1025, (size_t)1024 + 37 * 4, good.size() / 2, good.size() - 1}) {
            write_bytes(bad, good.substr(0, n));
            require_fails(load, {bad, "bytes, but its header describes"});
        }
        write_bytes(bad, good + "xyzw");
        require_fails(load, {bad, "bytes, but its header describes"});
    }
    SECTION("wrong magic and version") {
        mutated([](std::string* b) { set_i32(b, 0, STATE_MAGIC); }, {"magic (header[0]) is 20240327", "debug state"});
        mutated([](std::string* b) { set_i32(b, 0, SHARD_MAGIC); }, {"magic (header[0])", "token shard"});
        mutated([](std::string* b) { set_i32(b, 0, 7); }, {"magic (header[0]) is 7", "not a sinkscope or llm.c file"});
        mutated([](std::string* b) { set_i32(b, 1, 5); }, {"version (header[1]) is 5", "bf16"});
    }
    SECTION("absurd sizes: zero, negative, huge, overflow-inducing") {
        mutated([](std::string* b) { set_i32(b, 2, 0); }, {"maxT (header[2]) is 0"});
        mutated([](std::string* b) { set_i32(b, 2, -1); }, {"maxT (header[2]) is -1"});
        mutated([](std::string* b) { set_i32(b, 3, INT32_MAX); }, {"vocab (header[3]) is 2147483647"});  // V + 127 overflows
        mutated([](std::string* b) { set_i32(b, 4, 1 << 30); }, {"layers (header[4])"});
        mutated([](std::string* b) { set_i32(b, 5, 0); }, {"heads (header[5]) is 0"});
        mutated([](std::string* b) { set_i32(b, 6, 1 << 30); }, {"channels (header[6]) is 1073741824"});  // 3 C^2 L
        mutated([](std::string* b) { set_i32(b, 6, -8); }, {"channels (header[6]) is -8"});
        mutated([](std::string* b) { set_i32(b, 7, 256); }, {"padded vocab (header[7]) is 256, expected 128"});
        mutated([](std::string* b) { set_i32(b, 8, -1); }, {"ffn hidden (header[8]) is -1"});
        // the largest sizes that pass the range checks describe ~2^45 parameters: refused by length, nothing allocated
        mutated(
            [](std::string* b) {
                set_i32(b, 2, SK_MAX_SEQ_LEN); set_i32(b, 4, SK_MAX_LAYERS); set_i32(b, 6, SK_MAX_CHANNELS);
                set_i32(b, 5, 1); set_i32(b, 8, SK_MAX_FFN_HIDDEN);
            },
            {"bytes, but its header describes"});
    }
    SECTION("inconsistent architecture fields") {
        mutated([](std::string* b) { set_i32(b, 5, 3); }, {"--channels 8 is not divisible by --heads 3"});
        mutated([](std::string* b) { set_i32(b, 5, 8); }, {"--pos rope needs an even head size"});
        mutated([](std::string* b) { set_i32(b, 9, 7); }, {"--norm code 7 is out of range"});
        mutated([](std::string* b) { set_i32(b, 12, -1); }, {"--pos code -1 is out of range"});
        mutated([](std::string* b) { set_i32(b, 13, 2); }, {"--tied code 2"});
        mutated([](std::string* b) { set_f32(b, 15, NAN); }, {"header field 15"});
        mutated([](std::string* b) { set_f32(b, 16, 0.0f); }, {"--norm-eps 0 is out of range"});
    }
    SECTION("a non-finite parameter is named by tensor, layer and element") {
        size_t at = param_offset(c, P_QKVW, 1, 5);
        mutated([&](std::string* b) { set_f32(b, 256 + at, NAN); }, {"parameter qkvw, layer 1, element 5 (nan)"});
        mutated([&](std::string* b) { set_f32(b, 256 + 3, INFINITY); }, {"parameter wte, element 3 (inf)"});
    }
    SECTION("the writer refuses to replace a good checkpoint with a poisoned one") {
        std::vector<float> poisoned = params;
        poisoned[param_offset(c, P_LMHEAD, 0, 2)] = NAN;
        require_fails([&] { write_model_file(good_path, c, poisoned.data()); },
                      {"refusing to write model file", good_path, "lm_head, element 2"});
        CHECK(slurp(good_path) == good);
    }
    SECTION("paths that are not model files") {
        require_fails([&] { read_model_file(dir + "/missing.bin", &out); }, {"cannot open model file", "missing.bin"});
        require_fails([&] { read_model_file(dir, &out); }, {"is not a regular file", dir});
    }
    SECTION("the good file still loads, from a path and from memory") {
        CHECK(read_model_file(good_path, &out).channels == 8);
        CHECK(out == params);
        ByteSource mem("in-memory", "model file", good.data(), good.size());
        CHECK(parse_model_file(mem, &out).num_layers == 2);
        CHECK(out == params);
    }
}

TEST_CASE("token shard: every corruption is refused with the file and the field named", "[hostile][shard]") {
    std::string dir = temp_dir(), good_path = dir + "/good.bin", bad = dir + "/bad.bin";
    std::vector<uint16_t> toks(100);
    for (size_t i = 0; i < toks.size(); i++) toks[i] = (uint16_t)(i % 32);
    write_shard(good_path, toks);
    const std::string good = slurp(good_path);
    auto load = [&] { read_token_shard(bad, 32); };
    auto mutated = [&](const std::function<void(std::string*)>& edit, const std::vector<std::string>& needles) {
        require_corrupt_fails(load, good, bad, edit, needles);
    };
    for (size_t n : {0, 3, 1023}) {
        write_bytes(bad, good.substr(0, n));
        require_fails(load, {bad, "shorter than the 1024-byte header"});
    }
    for (size_t n : {(size_t)1025, (size_t)1024 + 50, good.size() - 1}) {
        write_bytes(bad, good.substr(0, n));
        require_fails(load, {bad, "token count (header[2]) is 100"});
    }
    mutated([](std::string* b) { set_i32(b, 0, MODEL_MAGIC); }, {"magic (header[0]) is 20240326", "model file"});
    mutated([](std::string* b) { set_i32(b, 0, SHARD_MAGIC_LLMC_U32); }, {"magic (header[0])", "uint32 (LLaMA-3)"});
    mutated([](std::string* b) { set_i32(b, 1, 2); }, {"version (header[1]) is 2"});
    mutated([](std::string* b) { set_i32(b, 2, -1); }, {"token count (header[2]) is -1"});
    mutated([](std::string* b) { set_i32(b, 2, INT32_MAX); }, {"token count (header[2]) is 2147483647"});
    mutated([](std::string* b) { set_i32(b, 2, 99); }, {"token count (header[2]) is 99"});
    // out-of-vocabulary ids: the first offender and the largest id are named
    toks[7] = 40;
    toks[50] = 65535;
    write_shard(bad, toks);
    require_fails(load, {bad, "token 7 is 40, outside the model's vocabulary of 32", "largest id in the shard is 65535",
                         "--vocab to at least 65536"});
    require_fails([&] { read_token_shard(dir + "/nope.bin", 32); }, {"cannot open token shard", "nope.bin"});
    // the loader and the probe name their flags
    DataLoader dl;
    require_fails([&] { loader_init(&dl, dir + "/*.none", "--train", 8, 32, 1, true); }, {"--train", "matches no file"});
    DataLoader small;
    loader_init(&small, good_path, "--val", 8, 32, 1, false);
    CHECK(small.num_windows == 12);
    require_fails([&] { loader_seek(&small, 3, 13); }, {"window 13 of epoch 3", "only 12 windows", "--train"});
    require_fails([&] { read_probe(good_path, 20, 8, 32); }, {good_path, "--probe-seqs 20 x --probe-len 8"});
    // the good shard reads, from a path and from memory
    CHECK(read_token_shard(good_path, 32).tokens.size() == 100);
    ByteSource mem("in-memory", "token shard", good.data(), good.size());
    CHECK(parse_token_shard(mem, 32).tokens[31] == 31);
}

TEST_CASE("debug state: every corruption is refused with the file and the field named", "[hostile][debug-state]") {
    std::string dir = temp_dir(), bad = dir + "/bad_state.bin";
    std::vector<float> params;
    ModelConfig c = read_model_file(fixture("llama_model.bin"), &params);
    size_t np = params.size();
    int V = c.vocab_size;
    const std::string good = slurp(fixture("llama_state.bin"));
    REQUIRE(((const int32_t*)good.data())[1] == 3);
    auto load = [&] { read_debug_state(bad, V, np); };
    auto mutated = [&](const std::function<void(std::string*)>& edit, const std::vector<std::string>& needles) {
        require_corrupt_fails(load, good, bad, edit, needles);
    };
    const int32_t* h = (const int32_t*)good.data();
    size_t BT = (size_t)h[2] * h[3];
    for (size_t n : {0, 10, 1023}) {
        write_bytes(bad, good.substr(0, n));
        require_fails(load, {bad, "shorter than the 1024-byte header"});
    }
    for (size_t n : {(size_t)1024, (size_t)1024 + 4 * BT + 2, good.size() - 1}) {
        write_bytes(bad, good.substr(0, n));
        require_fails(load, {bad, "bytes, expected"});
    }
    mutated([](std::string* b) { set_i32(b, 0, MODEL_MAGIC); }, {"magic (header[0]) is 20240326", "model file (for --load)"});
    mutated([](std::string* b) { set_i32(b, 1, 4); }, {"version (header[1]) is 4"});
    mutated([](std::string* b) { set_i32(b, 2, 0); }, {"B (header[2]) is 0"});
    mutated([](std::string* b) { set_i32(b, 2, -3); }, {"B (header[2]) is -3"});
    mutated([](std::string* b) { set_i32(b, 3, INT32_MAX); }, {"T (header[3]) is 2147483647"});
    mutated([](std::string* b) { set_i32(b, 2, 1 << 16); set_i32(b, 3, 1 << 16); }, {"B x T", "4294967296 tokens"});
    mutated([](std::string* b) { set_i32(b, 4, 999); }, {"vocab (header[4]) is 999"});
    mutated([](std::string* b) { set_i32(b, 5, -1); }, {"parameter count (header[5]) is -1"});
    mutated([](std::string* b) { set_i32(b, 6, -1); }, {"n_steps (header[6]) is -1"});
    mutated([](std::string* b) { set_i32(b, 6, 1 << 30); }, {"n_steps (header[6]) is 1073741824"});
    mutated([](std::string* b) { set_f32(b, 7, NAN); }, {"lr (header[7]) is nan"});
    mutated([](std::string* b) { set_f32(b, 8, 1.0f); }, {"beta1 (header[8]) is 1"});
    mutated([](std::string* b) { set_f32(b, 10, 0.0f); }, {"adam eps (header[10]) is 0"});
    mutated([](std::string* b) { set_f32(b, 12, -1.0f); }, {"grad clip (header[12]) is -1"});
    // token ids and reference numbers
    mutated([&](std::string* b) { set_i32(b, 256 + 3, V); }, {"inputs[3] is " + std::to_string(V), "vocabulary"});
    mutated([&](std::string* b) { set_i32(b, 256 + BT, -1); }, {"targets[0] is -1"});
    mutated([&](std::string* b) { set_f32(b, 256 + 2 * BT + 5, NAN); }, {"logits[5] is nan"});
    mutated([&](std::string* b) { set_f32(b, 256 + 2 * BT + BT * V, INFINITY); }, {"loss[0] is inf"});
    mutated([&](std::string* b) { set_f32(b, 256 + 2 * BT + BT * V + 1 + 9, NAN); }, {"gradients[9] is nan"});
    // a state checked against another model
    require_fails([&] { read_debug_state(fixture("llama_state.bin"), V, np + 1); },
                  {"llama_state.bin", "parameter count (header[5])", "another model"});
    // llm.c's version 2 has no vocab in the header: the length catches a model mismatch
    std::vector<float> gp;
    ModelConfig g = read_model_file(fixture("gpt2_model.bin"), &gp);
    require_fails([&] { read_debug_state(fixture("gpt2_state_v2.bin"), g.vocab_size + 1, gp.size()); },
                  {"gpt2_state_v2.bin", "bytes, expected"});
    CHECK(read_debug_state(fixture("gpt2_state_v2.bin"), g.vocab_size, gp.size()).version == 2);
    ByteSource mem("in-memory", "debug state", good.data(), good.size());
    CHECK(parse_debug_state(mem, V, np).n_steps == h[6]);
}

TEST_CASE("training state: every corruption is refused with the file and the field named", "[hostile][train-state]") {
    std::string dir = temp_dir(), good_path = dir + "/state.bin", bad = dir + "/bad.bin";
    ModelConfig c = make_config(16, 40, 2, 2, 8, 12, NORM_RMSNORM, PLACE_PRE, FFN_GELU, POS_ROPE, 1, 0, INIT_LLAMA);
    size_t n = param_count(c);
    std::vector<float> m(n), v(n), m2(n), v2(n);
    for (size_t i = 0; i < n; i++) { m[i] = 0.01f * (float)i - 1; v[i] = 1e-4f * (float)i; }
    TrainState s;
    s.step = 7; s.B = 4; s.T = 16; s.total_batch = 128; s.seed = 5; s.epoch = 2; s.index = 9; s.rng = 1ull << 40;
    s.model_checksum = 0x123456789abcdefull;
    s.config = "{\"type\":\"config\",\"lr\":0.003}";
    s.unlogged = "{\"type\":\"val\",\"step\":7,\"val_loss\":2.5}\n";  // a record the log could not take
    write_train_state(good_path, s, c, n, m.data(), v.data());
    const std::string good = slurp(good_path);
    auto load = [&] { read_train_state(bad, c, n, m2.data(), v2.data()); };
    auto mutated = [&](const std::function<void(std::string*)>& edit, const std::vector<std::string>& needles) {
        require_corrupt_fails(load, good, bad, edit, needles);
    };
    for (size_t k : {0, 512, 1023}) {
        write_bytes(bad, good.substr(0, k));
        require_fails(load, {bad, "shorter than the 1024-byte header"});
    }
    for (size_t k : {(size_t)1024, (size_t)1024 + 4 * n, good.size() - 3}) {
        write_bytes(bad, good.substr(0, k));
        require_fails(load, {bad, "bytes, expected", "truncated"});
    }
    mutated([](std::string* b) { set_i32(b, 0, MODEL_MAGIC); }, {"magic (header[0]) is 20240326", "model file"});
    mutated([](std::string* b) { set_i32(b, 1, 4); }, {"version (header[1]) is 4", "expected 1 to 3"});
    mutated([](std::string* b) { set_i32(b, 20, -5); }, {"config length (header[20]) is -5"});
    mutated([](std::string* b) { set_i32(b, 20, 5); }, {"bytes, expected", "config"});
    mutated([](std::string* b) { set_i32(b, 21, -1); }, {"unlogged records length (header[21]) is -1"});
    mutated([](std::string* b) { set_i32(b, 21, 3); }, {"bytes, expected", "unlogged records"});
    // a changed moment that is still a valid number: only the checksum can tell
    mutated([&](std::string* b) { set_f32(b, 256 + 3, 0.5f); }, {"checksum (header[18..19]) does not match"});
    mutated([&](std::string* b) { (*b)[b->size() - 1] ^= 1; }, {"checksum (header[18..19]) does not match"});
    mutated([](std::string* b) { set_i32(b, 2, -1); }, {"step (header[2]) is -1"});
    mutated([](std::string* b) { set_i32(b, 3, 0); }, {"B (header[3]) is 0"});
    mutated([](std::string* b) { set_i32(b, 4, 17); }, {"T (header[4]) is 17", "max_seq_len"});
    mutated([](std::string* b) { set_i32(b, 5, 100); }, {"total batch (header[5]) is 100", "multiple of B x T = 64"});
    mutated([](std::string* b) { set_i32(b, 14, 3); set_i32(b, 15, 1); }, {"parameter count (header[14..15]) is 4294967299"});
    mutated([&](std::string* b) { set_f32(b, 256 + param_offset(c, P_FCW, 1, 2), NAN); },
            {"AdamW m holds a non-finite value at fcw, layer 1, element 2"});
    mutated([&](std::string* b) { set_f32(b, 256 + n + 4, -1.0f); }, {"AdamW v[4] is -1", "cannot be negative"});
    mutated([&](std::string* b) { set_f32(b, 256 + n + 4, INFINITY); }, {"AdamW v holds a non-finite value at wte"});
    // the writer refuses non-finite moments and leaves the previous file alone
    m2 = m;
    m2[1] = NAN;
    require_fails([&] { write_train_state(good_path, s, c, n, m2.data(), v.data()); },
                  {"refusing to write training state", good_path, "AdamW m"});
    CHECK(slurp(good_path) == good);
    // round trip, from a path and from memory
    TrainState back = read_train_state(good_path, c, n, m2.data(), v2.data());
    CHECK(back.step == 7); CHECK(back.B == 4); CHECK(back.T == 16); CHECK(back.total_batch == 128);
    CHECK(back.seed == 5); CHECK(back.epoch == 2); CHECK(back.index == 9); CHECK(back.rng == (1ull << 40));
    CHECK(back.version == 3); CHECK(back.model_checksum == s.model_checksum); CHECK(back.config == s.config);
    CHECK(back.unlogged == s.unlogged);
    CHECK(m2 == m);
    CHECK(v2 == v);
    ByteSource mem("in-memory", "training state", good.data(), good.size());
    CHECK(parse_train_state(mem, c, n, m2.data(), v2.data()).index == 9);
    // a version-1 state (no checksums, no config: written by earlier versions) still reads
    std::string v1 = good.substr(0, 1024 + 8 * n);
    set_i32(&v1, 1, 1);
    for (int i = 16; i <= 21; i++) set_i32(&v1, i, 0);
    ByteSource old("in-memory v1", "training state", v1.data(), v1.size());
    TrainState back1 = parse_train_state(old, c, n, m2.data(), v2.data());
    CHECK(back1.version == 1); CHECK(back1.index == 9); CHECK(back1.config.empty()); CHECK(back1.unlogged.empty());
    CHECK(m2 == m);
    // unlogged records that stop mid-line (the checksum matches: written so) are refused
    s.unlogged.pop_back();
    write_train_state(bad, s, c, n, m.data(), v.data());
    require_fails(load, {bad, "unlogged records do not end a line"});
    // without unlogged records, the file is what it was before the field existed: version 2, header[21] 0, nothing
    // after the config
    s.unlogged.clear();
    write_train_state(bad, s, c, n, m.data(), v.data());
    std::string plain = slurp(bad);
    CHECK(plain.size() == 1024 + 8 * n + s.config.size());
    CHECK(plain.substr(84, 4) == std::string(4, '\0'));
    CHECK(read_train_state(bad, c, n, m2.data(), v2.data()).version == 2);
}

// argv from a list of arguments (argv[0] is the program).
static void parse_args(const std::vector<std::string>& args, CommandLine* cl) {
    std::vector<std::string> all = {"train_gpt_cpu"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(&a[0]);
    parse_command_line((int)argv.size(), argv.data(), cl);
}

TEST_CASE("flags: every bad value and inconsistent combination is refused, naming the flag", "[hostile][flags]") {
    struct Bad {
        std::vector<std::string> args;
        std::vector<std::string> needles;
    };
    const Bad bad[] = {
        {{"--nope"}, {"unknown flag '--nope'"}},
        {{"stray"}, {"unexpected argument 'stray'"}},
        {{"--eval-sink", "1"}, {"unexpected argument '1'", "--eval-sink takes none"}},
        {{"--steps"}, {"flag --steps needs a value"}},
        {{"--steps", "--lr", "1"}, {"flag --steps needs a value"}},
        {{"--steps", "5", "--steps", "6"}, {"flag --steps is given twice"}},
        {{"--steps", "abc"}, {"flag --steps: 'abc' is not an integer"}},
        {{"--steps", "12x"}, {"flag --steps: '12x' is not an integer"}},
        {{"--steps", ""}, {"flag --steps: '' is not a number"}},
        {{"--steps", " 5"}, {"flag --steps: ' 5' is not a number"}},
        {{"--steps", "-5"}, {"flag --steps: -5 is out of range"}},
        {{"--steps", "99999999999999999999"}, {"flag --steps: 99999999999999999999 is out of range"}},
        {{"--heads", "0"}, {"flag --heads: 0 is out of range"}},
        {{"--channels", "1000000"}, {"flag --channels: 1000000 is out of range"}},
        {{"--lr", "nan"}, {"flag --lr: 'nan' is not a finite number"}},
        {{"--lr", "inf"}, {"flag --lr: 'inf' is not a finite number"}},
        {{"--lr", "1e999"}, {"flag --lr: '1e999' is not a finite number"}},
        {{"--lr", "-0.1"}, {"flag --lr: -0.1 is out of range"}},
        {{"--lr", "0.1.2"}, {"flag --lr: '0.1.2' is not a finite number"}},
        {{"--seed", "-1"}, {"flag --seed", "non-negative"}},
        {{"--seed", " -1"}, {"flag --seed: ' -1' is not a number"}},
        {{"--seed", "18446744073709551616"}, {"flag --seed: 18446744073709551616 is out of range"}},
        {{"--norm", "batchnorm"}, {"flag --norm: 'batchnorm' is not one of: layernorm, rmsnorm"}},
        {{"--train", ""}, {"flag --train: the value is empty"}},
        {{"--preset"}, {"flag --preset needs a value"}},
        {{"--preset", "--steps", "5"}, {"flag --preset needs a value"}},
        {{"--preset", "huge"}, {"unknown preset 'huge'"}},
        {{"--preset", "tiny", "--preset", "gpt2"}, {"flag --preset is given twice"}},
        // the architecture
        {{"--heads", "16", "--channels", "100"}, {"--channels 100 is not divisible by --heads 16"}},
        {{"--heads", "8", "--channels", "24"}, {"--pos rope needs an even head size", "--channels 24 / --heads 8 = 3"}},
        {{"--pos", "sinusoidal", "--channels", "17", "--heads", "1"}, {"--pos sinusoidal needs an even --channels"}},
        {{"--norm-eps", "0"}, {"--norm-eps 0 is out of range (0, 1]"}},
        {{"--rope-base", "1"}, {"--rope-base 1 is out of range"}},
        {{"--vocab", "70000"}, {"flag --vocab: 70000 is above 65536", "uint16"}},
        {{"--attn-norm", "sum"}, {"command line", "--attn-norm sum"}},
        {{"--mask", "window"}, {"--mask window needs --mask-param"}},
        // lengths and batch sizes against the model
        {{"--max-seq-len", "64", "--seq-len", "65"}, {"flag --seq-len: 65 exceeds the model's max_seq_len 64"}},
        {{"--max-seq-len", "64", "--probe-len", "100"}, {"flag --probe-len: 100 exceeds the model's max_seq_len 64"}},
        {{"--max-seq-len", "64", "--seq-len", "64", "--sink-token", "1"},
         {"flag --seq-len: 64 + 1 (sink token) exceeds the model's max_seq_len 64"}},
        {{"--batch", "64", "--max-seq-len", "64", "--seq-len", "0", "--total-batch", "1000"},
         {"flag --total-batch: 1000 is not a multiple of --batch x --seq-len = 64 x 64"}},
        {{"--batch", "1048576", "--max-seq-len", "4096", "--seq-len", "4096"}, {"--batch 1048576", "more than 2^30"}},
        {{"--batch", "1048576", "--max-seq-len", "4096", "--seq-len", "0"}, {"--seq-len 4096", "more than 2^30"}},
        {{"--adam-eps", "0"}, {"flag --adam-eps", "must be > 0"}},
        // modes
        {{"--check-state", "s.bin"}, {"flag --check-state needs --load"}},
        {{"--eval-sink"}, {"flag --eval-sink needs --load"}},
        {{"--load", "m.bin", "--check-state", "s.bin", "--eval-sink"}, {"separate modes"}},
        {{"--load", "m.bin", "--sample", "--eval-sink"}, {"separate modes"}},
        {{"--sample"}, {"flag --sample needs --load"}},
        {{"--load", "m.bin", "--sample", "5"}, {"unexpected argument '5'", "--sample takes none"}},
        {{"--resume", "runs/x", "--load", "m.bin"}, {"flag --resume", "drop --load"}},
        {{"--resume", "runs/x", "--eval-sink"}, {"flag --resume", "drop --eval-sink"}},
        {{"--load", "m.bin", "--layers", "3"}, {"flag --layers: --load reads the architecture"}},
        {{"--resume", "runs/x", "--channels", "64"}, {"flag --channels: --resume reads the architecture"}},
        {{"--load", "m.bin", "--batch", "65536", "--seq-len", "65536"}, {"more than 2^30"}},
    };
    for (const Bad& b : bad) {
        std::string joined;
        for (const std::string& a : b.args) joined += "[" + a + "] ";
        INFO("argv: " << joined);
        CommandLine cl;
        require_fails([&] { parse_args(b.args, &cl); }, b.needles);
    }
    // and good command lines still parse
    CommandLine def;
    parse_args({}, &def);
    CHECK(def.model.channels == presets[0].cfg.channels);
    CommandLine cl;
    parse_args({"--preset", "gpt2", "--seq-len", "128", "--batch", "4", "--total-batch", "2048", "--seed", "0",
                "--lr", "6e-4", "--eps", "0.5"}, &cl);
    CHECK(cl.model.num_layers == 12); CHECK(cl.train.seq_len == 128); CHECK(cl.train.total_batch_size == 2048);
    CHECK(cl.train.lr == 6e-4f);
    CommandLine ld;
    parse_args({"--load", "m.bin", "--eval-sink", "--probe", "p.bin", "--probe-len", "512"}, &ld);
    CHECK(ld.train.eval_sink == 1);
}

// A tiny LayerNorm run on synthetic shards (tokens < 32) in its own directory; token 3 appears in every window.
static CommandLine tiny_layernorm_run(const std::string& dir, int steps) {
    std::vector<uint16_t> train_toks(2000), val_toks(400);
    uint64_t s = 7;
    for (uint16_t& t : train_toks) t = (uint16_t)(splitmix64(&s) % 32);
    for (uint16_t& t : val_toks) t = (uint16_t)(splitmix64(&s) % 32);
    for (size_t i = 0; i < train_toks.size(); i += 8) train_toks[i] = 3;
    write_shard(dir + "/train.bin", train_toks);
    write_shard(dir + "/val.bin", val_toks);
    CommandLine cl;
    cl.model = make_config(16, 32, 1, 2, 16, 32, NORM_LAYERNORM, PLACE_PRE, FFN_GELU, POS_LEARNED, 0, 0, INIT_GPT2);
    TrainConfig& t = cl.train;
    t.train_glob = dir + "/train.bin";
    t.val_glob = dir + "/val.bin";
    t.out_dir = dir + "/run";
    t.batch_size = 4; t.seq_len = 16; t.total_batch_size = 64;
    t.steps = steps; t.warmup_steps = 1; t.val_every = 0; t.val_batches = 1; t.sink_every = 0;
    t.probe_seqs = 2; t.probe_len = 16; t.save_every = 1; t.keep_last = 0;
    return cl;
}

static bool any_file_with_prefix(const std::string& dir, const std::string& prefix) {
    DIR* d = opendir(dir.c_str());
    if (!d) return false;
    bool found = false;
    while (struct dirent* e = readdir(d)) found |= strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0;
    closedir(d);
    return found;
}

TEST_CASE("a run whose loss turns NaN stops without writing a poisoned model checkpoint", "[hostile][nonfinite]") {
    std::string dir = temp_dir();
    CommandLine cl = tiny_layernorm_run(dir, 3);
    // an embedding row of 3e38: LayerNorm's mean over 16 channels overflows to inf, and x - mean, var, the
    // normalised value and the loss turn NaN in every window (each holds token 3)
    Model<float> m;
    model_build(&m, cl.model);
    model_init(&m, 1);
    for (int i = 0; i < cl.model.channels; i++) m.p[P_WTE][3 * cl.model.channels + i] = 3e38f;
    write_model_file(dir + "/poison.bin", cl.model, m.params.data());
    cl.train.load_path = dir + "/poison.bin";
    require_fails([&] { train(&cl); }, {"step 1: the loss (nan) or a gradient is not finite",
                                        "first non-finite gradient: wte", "--on-nonfinite skip"});
    CHECK(!any_file_with_prefix(dir + "/run", "model_"));
    CHECK(!any_file_with_prefix(dir + "/run", "state_"));
    // with the sink metrics on a host thread still measuring step 0, its record is logged before the run stops
    SinkThreadEnv env("1");
    sink_thread_delay_ms = 300;
    cl.train.out_dir = dir + "/run2";
    cl.train.sink_every = 1;
    require_fails([&] { train(&cl); }, {"step 1: the loss (nan) or a gradient is not finite"});
    sink_thread_delay_ms = 0;
    CHECK(slurp(dir + "/run2/log.jsonl").find("\"type\":\"sink\",\"step\":0,") != std::string::npos);
}

// SK_MEMORY_GIB set for the length of a scope.
struct MemoryCap {
    explicit MemoryCap(double gib) { setenv("SK_MEMORY_GIB", std::to_string(gib).c_str(), 1); }
    ~MemoryCap() { unsetenv("SK_MEMORY_GIB"); }
};

TEST_CASE("a run too large for the memory stops before it starts, counting what it already holds",
          "[hostile][memory]") {
    std::string dir = temp_dir();
    CommandLine cl = tiny_layernorm_run(dir, 3);
    // what the model holds, then with its activations, then with their gradients (sk_memory_use counts every buffer)
    size_t base, with_acts, with_grads;
    {
        Model<float> m;
        model_build(&m, cl.model);
        base = sk_memory_use().now;
        Acts<float> a;
        acts_alloc(&a, cl.model, 4, 16);
        with_acts = sk_memory_use().now;
        grad_acts_alloc(&a.grad, cl.model, 4, 16, false);
        with_grads = sk_memory_use().now;
    }
    REQUIRE(base < with_acts);
    REQUIRE(with_acts < with_grads);
    // a cap whose 90% lies between two of those sizes
    auto cap_between = [](size_t lo, size_t hi) { return 0.5 * ((double)lo + (double)hi) / 0.9 / 1073741824.0; };
    {
        MemoryCap cap(cap_between(base, with_acts));  // the model fits, its activations do not
        require_fails([&] { train(&cl); }, {"activations for B 4 x T 16 need", "SK_MEMORY_GIB", "Lower --batch",
                                            "--engine fast"});
    }
    // the run stopped before it claimed --out: no directory, so no log and no checkpoint
    struct stat st;
    CHECK(stat((dir + "/run").c_str(), &st) != 0);
    {
        MemoryCap cap(cap_between(with_acts, with_grads));  // the activations fit alone, not beside their gradients
        require_fails([&] { train(&cl); }, {"activation gradients for B 4 x T 16 need", "and the run holds"});
    }
    CHECK(stat((dir + "/run").c_str(), &st) != 0);
    {
        MemoryCap cap(4.0 * (double)with_grads / 1073741824.0);  // room for all of it and the probe: the run trains
        train(&cl);
    }
    CHECK(any_file_with_prefix(dir + "/run", "model_00000003"));
    // a cap that is not a number of GiB is refused, naming the variable
    setenv("SK_MEMORY_GIB", "lots", 1);
    require_fails([&] { host_memory_bytes(); }, {"SK_MEMORY_GIB 'lots' is not a positive number of GiB"});
    unsetenv("SK_MEMORY_GIB");
}

TEST_CASE("a missing data file stops a run, and --check-fast, before the model is built", "[hostile][memory]") {
    // under a memory limit that GPT-2's weights, gradients and moments exceed, the data's error comes first: the run
    // looked for its files before it built the model (which takes seconds at GPT-2's size)
    std::string dir = temp_dir(), limit = "ulimit -v 1500000; ";
    for (const char* mode : {" --steps 1", " --check-fast --batch 1 --seq-len 16"}) {
        INFO(mode);
        std::string out;
        int rc = run_command(limit + "./train_gpt_cpu --preset gpt2 --train " + dir + "/none_*.bin --out " + dir +
                                 "/run" + mode, &out);
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find("--train '" + dir + "/none_*.bin' matches no file") != std::string::npos);
        CHECK(out.find("cannot allocate") == std::string::npos);
        // with the data there, the same limit stops it at the model: the limit bites
        rc = run_command(limit + "./train_gpt_cpu --preset gpt2 --out " + dir + "/run" + mode, &out);
        CHECK(rc == 1);
        CHECK(out.find("cannot allocate") != std::string::npos);
    }
}

TEST_CASE("--on-nonfinite skip skips exactly the steps whose loss is NaN, leaving weights and moments untouched",
          "[hostile][nonfinite]") {
    std::string dir = temp_dir();
    CommandLine cl = tiny_layernorm_run(dir, 40);
    // token 3 only at input position 3 of window 5: the steps whose batch holds window 5 turn NaN, the others train
    std::vector<uint16_t> toks(2000), val(400);
    uint64_t s = 9;
    for (uint16_t& t : toks) t = (uint16_t)(4 + splitmix64(&s) % 28);
    for (uint16_t& t : val) t = (uint16_t)(4 + splitmix64(&s) % 28);
    toks[5 * 16 + 3] = 3;
    write_shard(dir + "/train.bin", toks);
    write_shard(dir + "/val.bin", val);
    Model<float> m;
    model_build(&m, cl.model);
    model_init(&m, 1);
    for (int i = 0; i < cl.model.channels; i++) m.p[P_WTE][3 * cl.model.channels + i] = 3e38f;
    write_model_file(dir + "/poison.bin", cl.model, m.params.data());
    cl.train.load_path = dir + "/poison.bin";
    cl.train.on_nonfinite = NONFINITE_SKIP;
    // the steps to skip, by replaying the loader: those whose inputs hold token 3
    DataLoader dl;
    loader_init(&dl, dir + "/train.bin", "--train", 16, 32, cl.train.seed, true);
    std::vector<int> x(64), y(64), expect;
    for (int step = 1; step <= 40; step++) {
        loader_next_batch(&dl, 4, x.data(), y.data());
        if (std::find(x.begin(), x.end(), 3) != x.end()) expect.push_back(step);
    }
    REQUIRE(!expect.empty());
    REQUIRE(train(&cl) == 0);
    std::string log = slurp(dir + "/run/log.jsonl");
    std::vector<int> skipped;
    const std::string record = "\"type\":\"nonfinite\",\"step\":";
    for (size_t at = log.find(record); at != std::string::npos; at = log.find(record, at + 1))
        skipped.push_back(atoi(log.c_str() + at + record.size()));
    CHECK(skipped == expect);
    CHECK(log.find("\"skipped_steps\":" + std::to_string(expect.size())) != std::string::npos);
    for (const char* not_json : {":nan", ":-nan", ":inf", ":-inf"}) CHECK(log.find(not_json) == std::string::npos);
    auto ckpt = [&](const char* kind, int step) { return slurp(ckpt_path(dir + "/run", kind, step)); };
    for (int k : expect) {
        INFO("skipped step " << k);
        CHECK(ckpt("model", k) == (k == 1 ? slurp(dir + "/poison.bin") : ckpt("model", k - 1)));
        if (k > 1) CHECK(ckpt("state", k).substr(1024) == ckpt("state", k - 1).substr(1024));
    }
    CHECK(ckpt("model", 40) != slurp(dir + "/poison.bin"));  // the other steps trained
}

TEST_CASE("resume refuses --steps below the checkpoint, and a state file whose step disagrees with its name",
          "[hostile][resume]") {
    std::string dir = temp_dir();
    CommandLine cl = tiny_layernorm_run(dir, 2);
    REQUIRE(train(&cl) == 0);
    CommandLine again = cl;
    again.train.resume_dir = dir + "/run";
    again.train.steps = 1;
    again.given = {"--resume", "--steps"};
    require_fails([&] { train(&again); }, {"flag --steps: 1 is below step 2 of the checkpoint", "--steps 2 or more"});
    write_bytes(dir + "/run/model_00000003.bin", slurp(dir + "/run/model_00000002.bin"));
    write_bytes(dir + "/run/state_00000003.bin", slurp(dir + "/run/state_00000001.bin"));
    again.train.steps = 5;
    require_fails([&] { train(&again); }, {"state_00000003.bin", "step (header[2]) is 1, but its file name says 3"});
}

TEST_CASE("a full disk is reported and the previous checkpoint survives", "[hostile][disk-full]") {
    std::string dir = temp_dir(), path = dir + "/model.bin";
    std::vector<float> params;
    ModelConfig c = small_model(path, &params);
    const std::string before = slurp(path);
    std::vector<float> changed = params;
    changed[0] += 1;
    for (long long budget : {0LL, 100LL, 1024LL, 5000LL, (long long)before.size() - 1}) {
        INFO("bytes before the disk fills: " << budget);
        write_budget = budget;
        require_fails([&] { write_model_file(path, c, changed.data()); },
                      {"writing '" + path + "' failed", strerror(ENOSPC), "untouched"});
        write_budget = -1;
        CHECK(slurp(path) == before);
        CHECK(!any_file_with_prefix(dir, "model.bin.tmp"));
    }
    // through the trainer: the checkpoint of step 2 fails, the one of step 1 stays the latest complete one
    std::string rdir = temp_dir();
    CommandLine cl = tiny_layernorm_run(rdir, 2);
    size_t np = param_count(cl.model), state_bytes = 1024 + 8 * np;
    for (long long budget : {(long long)(state_bytes + 1024 + 2 * np), 10LL}) {
        std::string run = rdir + "/run" + std::to_string(budget);
        CommandLine again = cl;
        again.train.out_dir = run;
        again.train.steps = 1;
        REQUIRE(train(&again) == 0);
        const std::string model1 = slurp(run + "/model_00000001.bin"), state1 = slurp(run + "/state_00000001.bin");
        again.train.resume_dir = run;
        again.train.steps = 2;
        again.given = {"--resume", "--steps"};
        // step 2 writes its state (1024 + 8 np bytes) and then its model (1024 + 4 np): the first budget fails inside
        // the model, the second inside the state
        write_budget = budget;
        require_fails([&] { train(&again); }, {"_00000002.bin' failed", strerror(ENOSPC)});
        write_budget = -1;
        CHECK(slurp(run + "/model_00000001.bin") == model1);
        CHECK(slurp(run + "/state_00000001.bin") == state1);
        CHECK(!any_file_with_prefix(run, "model_00000002"));
        CHECK(latest_checkpoint(run) == 1);
    }
}

TEST_CASE("a writer killed with SIGKILL at any moment leaves the old file or the new one, never a truncation",
          "[hostile][kill]") {
    std::string dir = temp_dir(), path = dir + "/model.bin";
    std::vector<float> a;
    ModelConfig c = small_model(path, &a);
    std::vector<float> b = a;
    for (float& x : b) x = -x;
    write_model_file(path, c, a.data());
    const std::string old_bytes = slurp(path);
    write_model_file(path, c, b.data());
    const std::string new_bytes = slurp(path);
    REQUIRE(old_bytes != new_bytes);
    uint64_t rng = 42;
    int saw_old = 0, saw_new = 0;
    for (int trial = 0; trial < 40; trial++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {  // the child rewrites the file, alternating the two contents, until it is killed
            try {
                for (int i = 0;; i++) write_model_file(path, c, (i % 2 ? b : a).data());
            } catch (...) {
            }
            _exit(1);
        }
        usleep((useconds_t)(splitmix64(&rng) % 3000));
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        REQUIRE(WIFSIGNALED(status));
        std::string now = slurp(path);
        REQUIRE((now == old_bytes || now == new_bytes));
        saw_old += now == old_bytes;
        saw_new += now == new_bytes;
        std::vector<float> out;
        read_model_file(path, &out);  // and it loads
    }
    INFO("old " << saw_old << ", new " << saw_new);
    CHECK(saw_old + saw_new == 40);
}

TEST_CASE("a training run killed with SIGKILL at random moments leaves only complete checkpoints, and resumes",
          "[hostile][kill]") {
    std::string dir = temp_dir(), run = dir + "/run";
    CommandLine cl = tiny_layernorm_run(dir, 1 << 20);  // far more steps than a trial lasts
    uint64_t rng = 3;
    int latest = -1;
    for (int trial = 0; trial < 8; trial++) {
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {  // trains (resuming after the first trial) and checkpoints every step until killed
            // one thread: OpenMP's thread pool does not survive fork()
            omp_set_num_threads(1);
            if (!freopen("/dev/null", "w", stdout)) _exit(2);
            try {
                CommandLine c = cl;
                if (trial > 0) c.train.resume_dir = run;
                train(&c);
            } catch (...) {
            }
            _exit(1);
        }
        // the first trial runs until its first checkpoint exists (slow builds, such as the sanitizers', take longer
        // to get there than a random delay), so every later trial has one to resume from
        for (int waited = 0; trial == 0 && waited < 3000; waited++) {
            struct stat st;
            if (stat(ckpt_path(run, "model", 1).c_str(), &st) == 0) break;
            usleep(10000);
        }
        usleep((useconds_t)(20000 + splitmix64(&rng) % 60000));
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        REQUIRE(WIFSIGNALED(status));
        // every checkpoint file in place is complete (a half-written one is only ever a .tmp)
        DIR* d = opendir(run.c_str());
        REQUIRE(d != nullptr);
        std::vector<std::string> names;
        while (struct dirent* e = readdir(d)) names.push_back(e->d_name);
        closedir(d);
        for (const std::string& name : names) {
            INFO("trial " << trial << ": " << name);
            std::vector<float> params, m, v;
            if (name.size() == 18 && name.compare(0, 6, "model_") == 0) CHECK_NOTHROW(read_model_file(run + "/" + name, &params));
            if (name.size() == 18 && name.compare(0, 6, "state_") == 0) {
                size_t n = param_count(cl.model);
                m.resize(n);
                v.resize(n);
                CHECK_NOTHROW(read_train_state(run + "/" + name, cl.model, n, m.data(), v.data()));
            }
        }
        int now = latest_checkpoint(run);
        CHECK(now >= latest);
        latest = now;
    }
    INFO("latest checkpoint after the kills: " << latest);
    CHECK(latest > 0);
}
