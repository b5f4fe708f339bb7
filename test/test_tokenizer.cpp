// test/test_tokenizer.cpp: tests of the data pipeline: the GPT-2 tokenizer, the tokenizer file, the shard tool and
// text sampling.
//
// What it is: Catch2 tests against independent references: ids from the npm gpt-3-encoder's JavaScript encoder (made
// OpenAI-exact, and cross-checked with OpenAI's encoder.py by dev/data/check_tokenizer_vectors.py) in
// test/fixtures/gpt2_vectors.json, including a fingerprint of the whole Brown corpus; encoder.py's merge rule
// re-implemented here the simple way; llm.c's byte layouts; and the sampler against a sort.
// What it is not: a user of the trainer. Unlike the other test files it does not #include train_gpt_cpu.cpp, only the
// headers it tests (with TESTING defined, so fail() throws SkError).
// Needs: the Brown shards of `make data` (data/brown/*.bin) for the whole-corpus test. Build: with the others by
// `make test` (link -lpcre2-8), or alone:
//   g++ -O2 -std=c++17 -o /tmp/tt test/test_tokenizer.cpp /usr/lib/libCatch2WithMain.a -lpcre2-8 && /tmp/tt
#include <math.h>
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "test_util.h"
#define TESTING
#include "../common/sampling.h"
#include "../dev/data/make_shards.h"

using Catch::Matchers::Contains;

// ----------------------------------------------------------------------------------------------------------------
// helpers

static Gpt2Tokenizer& shared_tokenizer() {
    static Gpt2Tokenizer tk;
    static bool loaded = false;
    if (!loaded) {
        gpt2_load_dir(&tk, GPT2_BPE_DIR);
        loaded = true;
    }
    return tk;
}

// A temporary directory (test_util.h's temp_dir) with `d / "name"` for the paths inside it.
struct TempDir {
    std::string path = temp_dir();
    std::string operator/(const std::string& name) const { return path + "/" + name; }
};

static void put_file(const std::string& path, const std::string& bytes) { write_bytes(path, bytes); }

static std::string file_text(const std::string& path) { return read_file_bytes(path, "test file").bytes; }

static std::string shard_as_text(const TokenShard& s) { return std::string(s.tokens.begin(), s.tokens.end()); }

static std::vector<int> shard_ids(const std::string& path) {
    TokenShard s = read_token_shard(path, 50257);
    return std::vector<int>(s.tokens.begin(), s.tokens.end());
}

static std::string fnv1a64_uint16(const std::vector<int>& ids) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int id : ids)
        for (int b : {id & 0xFF, id >> 8}) h = (h ^ (uint64_t)b) * 0x100000001b3ull;
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    return hex;
}

// One entry of test/fixtures/gpt2_vectors.json: a vector (text -> ids) or a corpus fingerprint.
struct VectorEntry {
    std::string kind = "vector", name, text, fnv;
    bool special = false;
    std::vector<int> ids, js_ids;
    int64_t bytes = 0, tokens = 0;
};

static std::vector<int> read_int_array(JsonCursor* c) {
    std::vector<int> v;
    json_read_array(c, [&]() { v.push_back(json_read_int(c)); });
    return v;
}

static std::vector<VectorEntry> read_vectors() {
    std::string path = SK_FIXTURES "/gpt2_vectors.json";
    FileBytes fb = read_file_bytes(path, "test vectors");
    JsonCursor c = json_cursor(fb.bytes.data(), fb.bytes.size(), path);
    std::vector<VectorEntry> out;
    json_read_array(&c, [&]() {
        VectorEntry e;
        json_read_object(&c, [&](const std::string& key) {
            json_skip_ws(&c);
            if (key == "kind") json_read_string(&c, &e.kind);
            else if (key == "name") json_read_string(&c, &e.name);
            else if (key == "text") json_read_string(&c, &e.text);
            else if (key == "fnv1a64") json_read_string(&c, &e.fnv);
            else if (key == "ids") e.ids = read_int_array(&c);
            else if (key == "js_ids") e.js_ids = read_int_array(&c);
            else if (key == "bytes") e.bytes = json_read_int(&c);
            else if (key == "tokens") e.tokens = json_read_int(&c);
            else if (key == "special") e.special = *c.p == 't', json_skip_value(&c);
            else json_skip_value(&c);
        });
        out.push_back(e);
    });
    return out;
}

// encoder.py's bpe() on ids, the simple quadratic way: find the lowest-ranked adjacent pair, merge every
// non-overlapping occurrence left to right, repeat. The reference for the heap-based gpt2_bpe.
static std::vector<int> reference_bpe(const Gpt2Tokenizer& tk, const std::string& piece) {
    std::vector<int> w;
    for (unsigned char b : piece) w.push_back(tk.byte_token[b]);
    for (;;) {
        int best = -1;
        for (size_t i = 0; i + 1 < w.size(); i++) {
            int rank = gpt2_pair_rank(tk, w[i], w[i + 1]);
            if (rank >= 0 && (best < 0 || rank < best)) best = rank;
        }
        if (best < 0) return w;
        std::vector<int> merged;
        for (size_t i = 0; i < w.size(); i++) {
            if (i + 1 < w.size() && w[i] == tk.merge_left[best] && w[i + 1] == tk.merge_right[best]) {
                merged.push_back(tk.merge_result[best]);
                i++;
            } else {
                merged.push_back(w[i]);
            }
        }
        w = merged;
    }
}

// ----------------------------------------------------------------------------------------------------------------
// GPT-2 encoder and decoder

TEST_CASE("gpt2: the files load as GPT-2's vocabulary") {
    Gpt2Tokenizer& tk = shared_tokenizer();
    CHECK(tk.token_bytes.size() == 50257);
    CHECK(tk.merge_left.size() == 50000);
    CHECK(tk.eot == 50256);
    CHECK(tk.token_bytes[50256] == "<|endoftext|>");
    CHECK(tk.token_bytes[tk.byte_token[' ']] == " ");
    CHECK(tk.byte_token['!'] == 0);   // the first printable byte is token 0
    CHECK(tk.byte_token[' '] == 220);  // space is the 33rd remapped byte: U+0120 'Ġ'
}

TEST_CASE("gpt2: encoder ids equal the reference vectors, and decoding gives the text back") {
    Gpt2Tokenizer& tk = shared_tokenizer();
    int vectors = 0, js_differs = 0;
    for (const VectorEntry& v : read_vectors()) {
        if (v.kind != "vector") continue;
        INFO("vector '" << v.name << "'");
        CHECK(gpt2_encode(&tk, v.text, v.special) == v.ids);
        CHECK(gpt2_decode(tk, v.ids) == v.text);
        vectors++;
        js_differs += !v.js_ids.empty();
    }
    CHECK(vectors >= 47);
    // the package's own JavaScript \s differs from Unicode White_Space at U+0085 and U+FEFF only
    CHECK(js_differs == 2);
}

TEST_CASE("gpt2: the whole Brown corpus encodes to the reference fingerprint and decodes back") {
    Gpt2Tokenizer& tk = shared_tokenizer();
    int corpora = 0;
    for (const VectorEntry& v : read_vectors()) {
        if (v.kind != "corpus") continue;
        INFO("corpus " << v.name << " (missing? run `make data`)");
        std::string text = shard_as_text(read_token_shard(v.name, 256));
        REQUIRE((int64_t)text.size() == v.bytes);
        std::vector<int> ids = gpt2_encode(&tk, text, false);
        CHECK((int64_t)ids.size() == v.tokens);
        CHECK(fnv1a64_uint16(ids) == v.fnv);
        CHECK(gpt2_decode(tk, ids) == text);
        CHECK(gpt2_encode(&tk, text, false) == ids);  // again, now from the warm cache
        corpora++;
    }
    CHECK(corpora == 2);
}

TEST_CASE("gpt2: the heap merge loop equals encoder.py's rule on random pieces") {
    Gpt2Tokenizer& tk = shared_tokenizer();
    uint64_t rng = 42;
    const std::string alphabets[3] = {"ab", "etaoinshrdlu", "the quick,brown.fox'sjumped"};
    for (int trial = 0; trial < 3000; trial++) {
        std::string piece;
        int len = 2 + (int)(splitmix64(&rng) % (trial < 2900 ? 40 : 2000));
        const std::string& a = alphabets[trial % 3];
        for (int i = 0; i < len; i++)
            piece.push_back(trial % 10 == 9 ? (char)(splitmix64(&rng) % 256) : a[splitmix64(&rng) % a.size()]);
        std::vector<int> got;
        gpt2_bpe(&tk, (const unsigned char*)piece.data(), (int)piece.size(), &got);
        INFO("trial " << trial << ", piece of " << piece.size() << " bytes");
        REQUIRE(got == reference_bpe(tk, piece));
    }
}

TEST_CASE("gpt2: the piece cache gives the same ids while it grows and when it starts over") {
    Gpt2Tokenizer& shared = shared_tokenizer();
    std::string text;
    for (const VectorEntry& v : read_vectors())
        if (v.kind == "vector") text += v.text + "\n";
    uint64_t rng = 9;
    for (int i = 0; i < 100000; i++) text += " w" + std::to_string(splitmix64(&rng) % 10000000);  // ~100k new pieces
    // 65536 slots at first; at 32768 entries (< 40000) the table doubles, at 65536 (>= 40000) it starts over
    Gpt2Tokenizer small;
    gpt2_load_dir(&small, GPT2_BPE_DIR);
    small.cache_max_entries = 40000;
    std::vector<int> expect = gpt2_encode(&shared, text, false);
    for (int pass = 0; pass < 2; pass++) {
        CHECK(gpt2_encode(&small, text, false) == expect);
        CHECK(small.cache_used < 65536);
        CHECK(small.cache_used <= small.cache.size() / 2);
    }
}

TEST_CASE("gpt2: <|endoftext|> is one token only where allowed") {
    Gpt2Tokenizer& tk = shared_tokenizer();
    std::vector<int> special = gpt2_encode(&tk, "a<|endoftext|>b", true);
    std::vector<int> ordinary = gpt2_encode(&tk, "a<|endoftext|>b", false);
    CHECK(special == std::vector<int>{64, 50256, 65});
    CHECK(std::count(ordinary.begin(), ordinary.end(), 50256) == 0);
    CHECK(ordinary.size() > 3);
    CHECK(gpt2_decode(tk, special) == gpt2_decode(tk, ordinary));
}

TEST_CASE("gpt2: invalid UTF-8 and unknown ids are errors that say where") {
    Gpt2Tokenizer& tk = shared_tokenizer();
    CHECK_THROWS_WITH(gpt2_encode(&tk, "ab\xff" "cd", false), Contains("not valid UTF-8 at byte 2"));
    CHECK_THROWS_WITH(gpt2_encode(&tk, "x\xc0\xaf", false), Contains("at byte 1"));      // overlong '/'
    CHECK_THROWS_WITH(gpt2_encode(&tk, "\xed\xa0\x80", false), Contains("at byte 0"));   // a surrogate
    CHECK_THROWS_WITH(gpt2_encode(&tk, "ok\xe2\x82", false), Contains("at byte 2"));     // cut short
    CHECK_THROWS_WITH(gpt2_encode(&tk, "\xf4\x90\x80\x80", false), Contains("at byte 0"));  // above U+10FFFF
    CHECK_THROWS_WITH(gpt2_decode(tk, {15496, 50257}), Contains("id 50257 at position 1"));
}

TEST_CASE("gpt2: missing or corrupt encoder.json and vocab.bpe name the file and the fix") {
    TempDir d;
    std::string enc = file_text(GPT2_BPE_DIR "/encoder.json"), bpe = file_text(GPT2_BPE_DIR "/vocab.bpe");
    Gpt2Tokenizer tk;
    auto load_with = [&](const std::string& e, const std::string& b) {
        put_file(d / "encoder.json", e);
        put_file(d / "vocab.bpe", b);
        gpt2_load_dir(&tk, d.path);
    };
    CHECK_THROWS_WITH(gpt2_load_dir(&tk, d / "nowhere"), Contains("cannot open GPT-2 encoder.json") &&
                                                             Contains(d / "nowhere/encoder.json"));
    CHECK_THROWS_WITH(load_with(enc.substr(0, enc.size() / 2), bpe),
                      Contains(d / "encoder.json") && Contains("make gpt2-bpe-files"));
    std::string dup = enc;
    dup.replace(dup.find("\"!\": 0"), 6, "\"!\": 1");
    CHECK_THROWS_WITH(load_with(dup, bpe), Contains("id 1 is repeated"));
    std::string no_eot = enc;
    no_eot.replace(no_eot.find("<|endoftext|>"), 13, "<|endofthing|");
    CHECK_THROWS_WITH(load_with(no_eot, bpe), Contains("no <|endoftext|> token"));
    CHECK_THROWS_WITH(load_with(enc, bpe + "x y z\n"), Contains(d / "vocab.bpe") && Contains("line 50002"));
    CHECK_THROWS_WITH(load_with(enc, "#version: 0.2\nĠ t\nqqqq zzzz\n"),
                      Contains("line 3") && Contains("do not belong together"));
    CHECK_THROWS_WITH(load_with(enc, "#version: 0.2\n"), Contains("holds no merges"));
    load_with(enc, bpe);  // and the intact pair loads
    CHECK(gpt2_encode(&tk, "Hello world", false) == std::vector<int>{15496, 995});
}

// ----------------------------------------------------------------------------------------------------------------
// tokenizer file

TEST_CASE("tokenizer file: llm.c's byte layout, round trips for GPT-2 and bytes") {
    TempDir d;
    Gpt2Tokenizer& tk = shared_tokenizer();
    write_tokenizer_file(d / "gpt2.bin", tk.token_bytes, tk.eot);
    std::string raw = file_text(d / "gpt2.bin");
    const int32_t* h = (const int32_t*)raw.data();
    CHECK(h[0] == 20240328);
    CHECK(h[1] == 2);
    CHECK(h[2] == 50257);
    CHECK(h[3] == 50256);
    CHECK(raw.substr(1024, 4) == std::string("\x01!\x01\"", 4));  // token 0 "!", token 1 '"'
    CHECK(raw.substr(raw.size() - 14) == "\x0d<|endoftext|>");
    TokenizerFile t = read_tokenizer_file(d / "gpt2.bin");
    CHECK(t.tokens == tk.token_bytes);
    CHECK(t.eot == 50256);
    std::vector<int> ids = gpt2_encode(&tk, "Sinks at the first token: naïve 🙂", false);
    CHECK(tokenizer_decode(t, ids.data(), ids.size()) == "Sinks at the first token: naïve 🙂");

    write_tokenizer_file(d / "byte.bin", byte_tokenizer_tokens(), BYTE_TOKENIZER_EOT);
    TokenizerFile b = read_tokenizer_file(d / "byte.bin");
    CHECK(b.tokens.size() == 256);
    CHECK(b.eot == 10);
    CHECK(file_text(d / "byte.bin").size() == 1024 + 256 * 2);
    int hi[3] = {'h', 'i', 10};
    CHECK(tokenizer_decode(b, hi, 3) == "hi\n");
    int bad = 256;
    CHECK_THROWS_WITH(tokenizer_decode(b, &bad, 1), Contains("cannot decode id 256"));
}

TEST_CASE("tokenizer file: corruption is caught against the file length") {
    TempDir d;
    write_tokenizer_file(d / "good.bin", byte_tokenizer_tokens(), BYTE_TOKENIZER_EOT);
    const std::string good = file_text(d / "good.bin");
    auto with_int = [&](int index, int32_t value) {
        std::string s = good;
        memcpy(&s[index * 4], &value, 4);
        return s;
    };
    struct Case {
        const char* what;
        std::string bytes;
        const char* message;
    };
    std::string zero_len = good;
    zero_len[1024 + 2 * 7] = 0;
    std::vector<Case> cases = {
        {"short", good.substr(0, 1000), "shorter than the 1024-byte header"},
        {"magic", with_int(0, 20240520), "magic is 20240520, expected 20240328"},
        {"version", with_int(1, 3), "version is 3, expected 1 or 2"},
        {"version 1 not GPT-2", with_int(1, 1), "version 1 is GPT-2's"},
        {"vocab too large", with_int(2, 100000), "impossible in a file of"},
        {"vocab negative", with_int(2, -5), "impossible in a file of"},
        {"eot outside", with_int(3, 256), "end-of-text id 256 is outside"},
        {"eot negative", with_int(3, -1), "end-of-text id -1 is outside"},
        {"truncated below the smallest size", good.substr(0, good.size() - 1), "says 256 tokens, impossible"},
        {"trailing bytes", good + "x", "1 bytes after its last token"},
        {"fewer tokens than bytes", with_int(2, 255), "2 bytes after its last token"},
        {"zero length", zero_len, "token 7 has length 0"},
    };
    for (const Case& c : cases) {
        INFO(c.what);
        put_file(d / "bad.bin", c.bytes);
        CHECK_THROWS_WITH(read_tokenizer_file(d / "bad.bin"), Contains(c.message) && Contains(d / "bad.bin"));
    }
    // a vocabulary with a 3-byte token: its cut-short files pass the size bound and fail on the records
    write_tokenizer_file(d / "abc.bin", {"abc", "d"}, 0);
    const std::string abc = file_text(d / "abc.bin");
    put_file(d / "bad.bin", abc.substr(0, abc.size() - 1));
    CHECK_THROWS_WITH(read_tokenizer_file(d / "bad.bin"), Contains("token 1 needs 1 bytes but only 0 are left"));
    put_file(d / "bad.bin", abc.substr(0, abc.size() - 2));
    CHECK_THROWS_WITH(read_tokenizer_file(d / "bad.bin"), Contains("ends before token 1 of 2"));
    CHECK_THROWS_WITH(write_tokenizer_file(d / "w.bin", {"a", ""}, 0), Contains("token 1 is 0 bytes"));
    CHECK_THROWS_WITH(write_tokenizer_file(d / "w.bin", {"a"}, 1), Contains("end-of-text id 1"));
}

// ----------------------------------------------------------------------------------------------------------------
// make_shards

TEST_CASE("make_shards: text, directories and JSON lines into byte-level shards, split by document index") {
    TempDir d;
    mkdir((d / "in").c_str(), 0777);
    mkdir((d / "in/sub").c_str(), 0777);
    put_file(d / "in/a.txt", "first document\n");
    put_file(d / "in/sub/b.txt", "second");
    put_file(d / "in/.hidden", "never read");
    put_file(d / "in/c.jsonl",
             "{\"id\": 1, \"meta\": {\"text\": \"nested, not this\", \"list\": [1, 2.5e3, null, true]}, "
             "\"text\": \"third \\\"quoted\\\"\\n\\u00e9\\ud83d\\ude00\"}\n"
             "\n"
             "{\"text\": \"\"}\r\n"
             "{\"text\": \"fourth\", \"tail\": false}\n");
    put_file(d / "in/z.txt", "fifth");
    ShardOptions o;
    o.input = d / "in";
    o.name = "t";
    o.tokenizer = "byte";
    o.out_dir = d / "out";
    o.val_every = 2;
    ShardReport r = make_shards(o);
    // sorted paths: a.txt, c.jsonl (3 records, one empty), sub/b.txt, z.txt -> documents 0..4
    CHECK(r.empty_documents == 1);
    CHECK(r.val.documents == 3);
    CHECK(r.train.documents == 2);
    CHECK(r.train.files == std::vector<std::string>{d / "out/t_train.bin"});
    CHECK(r.val.files == std::vector<std::string>{d / "out/t_val.bin"});
    CHECK(shard_as_text(read_token_shard(d / "out/t_val.bin", 256)) == "first document\n\n\nfourth\n\nfifth");
    CHECK(shard_as_text(read_token_shard(d / "out/t_train.bin", 256)) ==
          "third \"quoted\"\n\xc3\xa9\xf0\x9f\x98\x80\n\nsecond");
    CHECK(r.val.tokens == 15 + 2 + 6 + 2 + 5);
    CHECK(r.train.text_bytes == 21 + 6);
    TokenizerFile t = read_tokenizer_file(d / "out/t_tokenizer.bin");
    CHECK(t.tokens == byte_tokenizer_tokens());
    CHECK(t.eot == BYTE_TOKENIZER_EOT);
}

// The command line around make_shards (build/make_shards, which make test builds): it once stopped compiling while
// every test of the library above passed.
TEST_CASE("make_shards: the command line writes the shards, prints its flags, and refuses a bad one") {
    TempDir d;
    put_file(d / "book.txt", "one paragraph\n\nanother one\n\nand a third");
    std::string out;
    REQUIRE(run_command("./build/make_shards --input " + d / "book.txt" + " --name book --tokenizer byte --val-every 2 "
                        "--out " + d / "out", &out) == 0);
    INFO(out);
    CHECK(shard_as_text(read_token_shard(d / "out/book_val.bin", 256)) == "one paragraph\n\nand a third");
    CHECK(shard_as_text(read_token_shard(d / "out/book_train.bin", 256)) == "another one");
    CHECK(run_command("./build/make_shards --help", &out) == 0);
    CHECK(out.find("--split-docs") != std::string::npos);
    CHECK(run_command("./build/make_shards --input " + d / "book.txt" + " --name b --val-every 1", &out) == 1);
    CHECK(out.find("--val-every") != std::string::npos);
    CHECK(run_command("./build/make_shards --name b", &out) == 1);
    CHECK(out.find("--input and --name are required") != std::string::npos);
}

TEST_CASE("make_shards: GPT-2 shards put <|endoftext|> between documents only") {
    TempDir d;
    std::string docs[5] = {"One. <|endoftext|> stays text", "Two\n", " three", "Four, 4", "five"};
    std::string jsonl;
    for (const std::string& s : docs) {
        std::string esc;
        for (char ch : s) esc += ch == '\n' ? std::string("\\n") : std::string(1, ch);
        jsonl += "{\"text\": \"" + esc + "\"}\n";
    }
    put_file(d / "docs.jsonl", jsonl);
    ShardOptions o;
    o.input = d / "docs.jsonl";
    o.name = "g";
    o.out_dir = d / "out";
    o.val_every = 3;
    ShardReport r = make_shards(o);
    Gpt2Tokenizer& tk = shared_tokenizer();
    auto joined = [&](std::initializer_list<int> which) {
        std::vector<int> ids;
        for (int i : which) {
            if (!ids.empty()) ids.push_back(50256);
            std::vector<int> e = gpt2_encode(&tk, docs[i], false);
            ids.insert(ids.end(), e.begin(), e.end());
        }
        return ids;
    };
    CHECK(shard_ids(d / "out/g_val.bin") == joined({0, 3}));
    CHECK(shard_ids(d / "out/g_train.bin") == joined({1, 2, 4}));
    CHECK(r.train.tokens == (int64_t)joined({1, 2, 4}).size());
    TokenizerFile t = read_tokenizer_file(d / "out/g_tokenizer.bin");
    CHECK(t.tokens.size() == 50257);
    CHECK(t.eot == 50256);
}

TEST_CASE("make_shards: numbered shards when a split outgrows --shard-tokens, stale ones removed") {
    TempDir d;
    put_file(d / "text.txt", "alpha beta\n\n\n  \ngamma\ndelta\n\t\nepsilon\n\nzeta eta theta\n");
    ShardOptions o;
    o.input = d / "text.txt";
    o.name = "s";
    o.tokenizer = "byte";
    o.out_dir = d / "out";
    o.split_docs = "blank-lines";
    o.val_every = 3;
    ShardReport whole = make_shards(o);
    // documents: "alpha beta", "gamma\ndelta", "epsilon", "zeta eta theta"; val = 0 and 3
    CHECK(shard_as_text(read_token_shard(d / "out/s_val.bin", 256)) == "alpha beta\n\nzeta eta theta");
    std::string train = shard_as_text(read_token_shard(d / "out/s_train.bin", 256));
    CHECK(train == "gamma\ndelta\n\nepsilon");

    o.shard_tokens = 8;
    ShardReport cut = make_shards(o);
    REQUIRE(cut.train.files.size() == 3);
    CHECK(cut.train.files[0] == d / "out/s_train_000000.bin");
    CHECK(cut.train.files[2] == d / "out/s_train_000002.bin");
    std::string joined;
    for (size_t i = 0; i < cut.train.files.size(); i++) {
        TokenShard s = read_token_shard(cut.train.files[i], 256);
        CHECK(s.tokens.size() == (i < 2 ? 8u : train.size() - 16));
        joined += shard_as_text(s);
    }
    CHECK(joined == train);
    CHECK(cut.removed == std::vector<std::string>{d / "out/s_train.bin", d / "out/s_val.bin"});

    o.shard_tokens = 100;
    ShardReport again = make_shards(o);
    CHECK(again.removed.size() == 3 + cut.val.files.size());
    CHECK(file_text(d / "out/s_train.bin") == file_text(whole.train.files[0]));
    CHECK(expand_glob(d / "out/s_train*.bin", "--train").size() == 1);
}

TEST_CASE("make_shards: bad input is an error that names the file and the fix") {
    TempDir d;
    ShardOptions o;
    o.name = "e";
    o.tokenizer = "byte";
    o.out_dir = d / "out";
    put_file(d / "one.txt", "para one\n\npara two\n");
    o.input = d / "one.txt";
    // auto (the default) cuts one text file at its blank lines: two documents, one for each split
    ShardReport two = make_shards(o);
    CHECK(two.train.documents == 1);
    CHECK(two.val.documents == 1);
    o.split_docs = "none";  // one document cannot fill both splits: the message names the flag and make's variable
    CHECK_THROWS_WITH(make_shards(o), Contains("1 document(s)") && Contains("--split-docs blank-lines") &&
                                          Contains("SPLIT_DOCS=blank-lines"));
    put_file(d / "bad.txt", "fine\n\nthen \xc3\x28 broken");
    o.input = d / "bad.txt";
    o.split_docs = "blank-lines";
    CHECK_THROWS_WITH(make_shards(o), Contains(d / "bad.txt") && Contains("line 3") && Contains("byte 5"));
    put_file(d / "bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n");
    o.input = d / "bad.jsonl";
    CHECK_THROWS_WITH(make_shards(o), Contains(d / "bad.jsonl") && Contains("line 2") && Contains("no \"text\" field"));
    put_file(d / "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"\\ud800 lone\"}\n");
    CHECK_THROWS_WITH(make_shards(o), Contains("line 2") && Contains("high surrogate"));
    put_file(d / "bad.jsonl", "{\"text\": 5}\n");
    CHECK_THROWS_WITH(make_shards(o), Contains("not a string"));
    o.input = d / "missing";
    CHECK_THROWS_WITH(make_shards(o), Contains("--input") && Contains(d / "missing"));
    o.input = d / "one.txt";
    o.tokenizer = "bpe";
    CHECK_THROWS_WITH(make_shards(o), Contains("--tokenizer: 'bpe'"));
}

// ----------------------------------------------------------------------------------------------------------------
// sampling

static std::vector<float> random_logits(int V, uint64_t seed) {
    std::vector<float> l(V);
    for (float& x : l) x = (float)((double)(splitmix64(&seed) >> 11) / 9007199254740992.0 * 8.0 - 4.0);
    return l;
}

TEST_CASE("sampling: temperature 0 is argmax, lowest id on ties, and still draws one number") {
    std::vector<float> l = random_logits(1000, 7);
    int argmax = (int)(std::max_element(l.begin(), l.end()) - l.begin());
    uint64_t rng = 5, expect = 5;
    CHECK(sample_token(l.data(), 1000, 0.0f, 0, &rng) == argmax);
    CHECK(sample_token(l.data(), 1000, 0.0f, 3, &rng) == argmax);
    splitmix64(&expect);
    splitmix64(&expect);
    CHECK(rng == expect);
    std::vector<float> tie = {1, 3, 2, 3};
    CHECK(sample_token(tie.data(), 4, 0.0f, 0, &rng) == 1);
    CHECK(sample_token(tie.data(), 4, 1.0f, 1, &rng) == 1);  // top-1 is greedy too
}

TEST_CASE("sampling: the same seed gives the same tokens, another seed others") {
    std::vector<float> l = random_logits(50257, 11);
    auto run = [&](uint64_t seed) {
        std::vector<int> out;
        for (int i = 0; i < 200; i++) out.push_back(sample_token(l.data(), 50257, 1.0f, 40, &seed));
        return out;
    };
    CHECK(run(1337) == run(1337));
    CHECK(run(1337) != run(1338));
}

TEST_CASE("sampling: top-k never leaves the k largest logits") {
    std::vector<float> l = random_logits(300, 3);
    l[17] = l[18];  // a tie inside the candidates
    std::vector<int> order(300);
    for (int i = 0; i < 300; i++) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    uint64_t rng = 99;
    for (int k : {1, 2, 5, 50}) {
        std::vector<bool> allowed(300, false);
        for (int j = 0; j < k; j++) allowed[order[j]] = true;
        std::vector<int> hits(300, 0);
        for (int i = 0; i < 5000; i++) hits[sample_token(l.data(), 300, 3.0f, k, &rng)]++;
        int outside = 0, used = 0;
        for (int i = 0; i < 300; i++) outside += !allowed[i] && hits[i] > 0, used += hits[i] > 0;
        INFO("k = " << k);
        CHECK(outside == 0);
        CHECK(used == k);  // at temperature 3 every candidate shows up in 5000 draws
    }
}

TEST_CASE("sampling: frequencies follow softmax(logits / temperature)") {
    std::vector<float> l = {(float)log(0.5), (float)log(0.3), (float)log(0.2)};
    for (float T : {1.0f, 2.0f}) {
        uint64_t rng = 2024;
        std::vector<int> hits(3, 0);
        const int n = 200000;
        for (int i = 0; i < n; i++) hits[sample_token(l.data(), 3, T, 0, &rng)]++;
        double z = pow(0.5, 1 / T) + pow(0.3, 1 / T) + pow(0.2, 1 / T);
        for (int i = 0; i < 3; i++) {
            double p = pow(i == 0 ? 0.5 : i == 1 ? 0.3 : 0.2, 1 / T) / z;
            INFO("T = " << T << ", token " << i);
            CHECK(fabs(hits[i] / (double)n - p) < 0.005);  // 5 standard deviations at n = 200000
        }
    }
}

TEST_CASE("sampling: bad arguments are errors") {
    std::vector<float> l = {0, 1, NAN};
    uint64_t rng = 1;
    CHECK_THROWS_WITH(sample_token(l.data(), 3, 1.0f, 0, &rng), Contains("logit 2 is nan"));
    CHECK_THROWS_WITH(sample_token(l.data(), 2, -1.0f, 0, &rng), Contains("temperature -1"));
    CHECK_THROWS_WITH(sample_token(l.data(), 2, 1.0f, -2, &rng), Contains("top-k -2"));
    CHECK_THROWS_WITH(sample_token(l.data(), 0, 1.0f, 0, &rng), Contains("vocabulary size is 0"));
}
