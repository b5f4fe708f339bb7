// dev/fuzz/make_corpus.cpp: writes the fuzzers' seed corpora, dev/fuzz/corpus/<harness>/, with the project's own
// writers, so the seeds stay valid when a format grows. Small on purpose (a few KB each): libFuzzer mutates short
// inputs much faster. Run by `dev/fuzz/run.sh corpus` (from the repository root).
// What it is not: a fuzzer, or a test (the harnesses and test/test_hostile.cpp are).
#include <sys/stat.h>

#include "../../common/debug_state.h"
#include "../../common/gpt2_tokenizer.h"
#include "../../common/tokenizer_file.h"
#include "../../common/token_shards.h"
#include "../../common/train_state.h"

static std::string dir_of(const char* harness) {
    std::string d = std::string("dev/fuzz/corpus/") + harness;
    mkdir("dev/fuzz/corpus", 0755);
    mkdir(d.c_str(), 0755);
    return d + "/";
}

static void write_raw(const std::string& path, const std::string& bytes) {
    FILE* f = fopen(path.c_str(), "wb");
    if (!f || fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || fclose(f) != 0) fail("cannot write '%s'", path.c_str());
}

// Parameters 0.01 i - 1 (finite, varied).
static std::vector<float> ramp(size_t n) {
    std::vector<float> p(n);
    for (size_t i = 0; i < n; i++) p[i] = 0.01f * (float)(i % 200) - 1.0f;
    return p;
}

// The harnesses' tiny model: 286 parameters (fuzz_train_state.cpp uses the same).
static ModelConfig tiny() { return make_config(8, 2, 1, 1, 2, 2, NORM_RMSNORM, PLACE_PRE, FFN_RELU, POS_NONE, 1, 0, INIT_LLAMA); }

static void model_files() {
    std::string d = dir_of("model_file");
    ModelConfig v4 = tiny();
    write_model_file(d + "v4_tiny.bin", v4, ramp(param_count(v4)).data());
    ModelConfig v3 = make_config(4, 2, 1, 1, 2, 8, NORM_LAYERNORM, PLACE_PRE, FFN_GELU, POS_LEARNED, 1, 1, INIT_GPT2);
    write_model_file(d + "v3_gpt2_arch.bin", v3, ramp(param_count(v3)).data());
    ModelConfig var = make_config(4, 3, 1, 2, 4, 4, NORM_LAYERNORM, PLACE_POST, FFN_SWIGLU, POS_ROPE, 0, 1, INIT_LLAMA);
    var.attn.variant = ATTN_SIGMOID;
    var.attn.normaliser = ANORM_SUM;
    var.attn.slot = SLOT_KV;
    var.attn.gate = GATE_HEADWISE;
    write_model_file(d + "v4_variant.bin", var, ramp(param_count(var)).data());
}

static void shard(const std::string& path, const std::vector<uint16_t>& toks) {
    int32_t h[256] = {0};
    h[0] = SHARD_MAGIC; h[1] = SHARD_VERSION; h[2] = (int32_t)toks.size();
    write_raw(path, std::string((const char*)h, sizeof h) + std::string((const char*)toks.data(), toks.size() * 2));
}

static void token_shards() {
    std::string d = dir_of("token_shard");
    shard(d + "empty.bin", {});
    shard(d + "bytes.bin", {72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 10, 0, 255, 13, 10});
    shard(d + "gpt2_ids.bin", {50256, 15496, 995, 50255, 256, 0, 1, 50256});
}

static void debug_states() {
    std::string d = dir_of("debug_state");
    ModelConfig c = tiny();
    size_t n = param_count(c);
    DebugState s;
    s.B = 1; s.T = 2;
    s.inputs = {0, 1}; s.targets = {1, 0};
    s.logits = {0.5f, -0.5f, 0.25f, 0.0f};
    s.loss = 0.7f;
    s.grads = ramp(n);
    s.version = 3; s.n_steps = 2; s.losses = {0.7f, 0.6f};
    s.lr = 1e-3f; s.beta1 = 0.9f; s.beta2 = 0.95f; s.adam_eps = 1e-8f; s.weight_decay = 0.1f; s.grad_clip = 1.0f;
    write_debug_state(d + "v3.bin", s, c.vocab_size);
    // version 2 (llm.c) lacks V and the parameter count: the harness reads them from header[254..255]
    s.version = 2; s.n_steps = 0; s.losses.clear();
    write_debug_state(d + "v2.bin", s, c.vocab_size);
    std::string v2 = read_file_bytes(d + "v2.bin", "debug state").bytes;
    int32_t vn[2] = {c.vocab_size, (int32_t)n};
    memcpy(&v2[254 * 4], vn, sizeof vn);
    write_raw(d + "v2.bin", v2);
}

static void train_states() {
    std::string d = dir_of("train_state");
    ModelConfig c = tiny();
    size_t n = param_count(c);
    std::vector<float> m = ramp(n), v(n);
    for (size_t i = 0; i < n; i++) v[i] = m[i] * m[i];
    TrainState s;
    s.step = 3; s.B = 2; s.T = 4; s.total_batch = 16; s.seed = 1337; s.epoch = 1; s.index = 5; s.rng = 99;
    write_train_state(d + "state.bin", s, c, n, m.data(), v.data());
}

static void command_lines() {
    std::string d = dir_of("flags");
    const std::vector<std::vector<std::string>> lines = {
        {},
        {"--preset", "gpt2", "--seq-len", "128", "--batch", "4", "--total-batch", "2048"},
        {"--layers", "3", "--heads", "4", "--channels", "64", "--pos", "alibi", "--ffn", "geglu", "--tied", "1"},
        {"--load", "m.bin", "--eval-sink", "--probe", "p.bin", "--probe-seqs", "5", "--probe-len", "16"},
        {"--resume", "runs/x", "--steps", "600", "--lr", "1e-3", "--schedule", "cosine", "--seed", "7"},
        {"--attn", "sigmoid", "--attn-norm", "sum", "--slot", "kv", "--mask", "window", "--mask-param", "8"},
    };
    for (size_t i = 0; i < lines.size(); i++) {
        std::string bytes;
        for (size_t k = 0; k < lines[i].size(); k++) bytes += (k ? std::string(1, '\0') : "") + lines[i][k];
        write_raw(d + "line" + std::to_string(i) + ".txt", bytes);
    }
}

static void tokenizer_files() {
    std::string d = dir_of("tokenizer_file");
    write_tokenizer_file(d + "bytes.bin", byte_tokenizer_tokens(), BYTE_TOKENIZER_EOT);
    write_tokenizer_file(d + "small.bin", {"a", "b", "ab", " the", "\xc3\xa9", "<|endoftext|>"}, 5);
}

// A GPT-2 vocabulary in miniature: the 256 byte tokens, <|endoftext|>, and four merges with their results.
static void gpt2_files() {
    uint32_t byte_to_char[256];
    gpt2_byte_chars(byte_to_char);
    auto spell = [&](const std::string& bytes) {
        std::string s;
        for (unsigned char b : bytes) json_append_utf8(&s, byte_to_char[b]);
        return s;
    };
    auto quoted = [](const std::string& s) {
        std::string q = "\"";
        for (char ch : s) q += ch == '"' || ch == '\\' ? std::string("\\") + ch : std::string(1, ch);
        return q + "\"";
    };
    std::vector<std::string> tokens;
    for (int b = 0; b < 256; b++) tokens.push_back(spell(std::string(1, (char)b)));
    tokens.push_back("<|endoftext|>");
    const std::vector<std::pair<std::string, std::string>> merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {" ", "w"}};
    std::string bpe = "#version: 0.2\n";
    for (const auto& m : merges) {
        tokens.push_back(spell(m.first + m.second));
        bpe += spell(m.first) + " " + spell(m.second) + "\n";
    }
    std::string json = "{";
    for (size_t i = 0; i < tokens.size(); i++) json += (i ? ", " : "") + quoted(tokens[i]) + ": " + std::to_string(i);
    json += "}";
    write_raw(dir_of("gpt2_load") + "mini.txt", json + std::string(1, '\0') + bpe);
    std::string d = dir_of("gpt2_encode");
    // the first byte's low bit allows <|endoftext|> (fuzz_gpt2_encode.cpp)
    const std::vector<std::pair<char, std::string>> texts = {
        {1, "Hello world<|endoftext|>Next document."},
        {0, "It's 2024: caf\xc3\xa9, na\xc3\xafve, \xe4\xb8\xad\xe6\x96\x87!  \n\n"},
        {0, "    \t\t  x   "},
        {1, "\xf0\x9f\x98\x80 emoji 123456789"}};
    for (size_t i = 0; i < texts.size(); i++)
        write_raw(d + "text" + std::to_string(i) + ".txt", std::string(1, texts[i].first) + texts[i].second);
}

int main() {
    model_files();
    token_shards();
    debug_states();
    train_states();
    command_lines();
    tokenizer_files();
    gpt2_files();
    return 0;
}
