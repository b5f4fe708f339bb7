// dev/data/bench_tokenizer.cpp: throughput of the GPT-2 tokenizer (common/gpt2_tokenizer.h) on one core, as a table.
//
// What it is: encodes an English text (default: the Brown corpus's training text, read back from the byte-level
// shard that `make data` writes) with a fresh tokenizer (cold word cache) and again (warm cache), encodes two
// adversarial one-piece inputs that never hit the cache (1 MB of random letters, 1 MB of spaces), and decodes. The
// tokenizer is single-threaded, so every figure is one core's. Two speeds per row: by wall-clock time, and by the
// process's CPU time, which stays meaningful when other programs share the cores (wall time then counts their turns).
// What it is not: a test (test/test_tokenizer.cpp checks the ids); the figures vary with the machine and its load.
// Build and run (from the repository root):
//   g++ -O2 -std=c++17 -o build/bench_tokenizer dev/data/bench_tokenizer.cpp -lpcre2-8
//   ./build/bench_tokenizer [--text FILE] [--bpe DIR]
#include <time.h>
#include <string>
#include <vector>

#include "../../common/gpt2_tokenizer.h"
#include "../../common/token_shards.h"

struct Clock {
    double wall, cpu;
};

static Clock clock_now() {
    timespec w, c;
    clock_gettime(CLOCK_MONOTONIC, &w);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c);
    return Clock{w.tv_sec + w.tv_nsec * 1e-9, c.tv_sec + c.tv_nsec * 1e-9};
}

static Clock since(Clock t0) {
    Clock t = clock_now();
    return Clock{t.wall - t0.wall, t.cpu - t0.cpu};
}

static void row(const char* what, size_t bytes, size_t tokens, Clock s) {
    printf("| %-44s | %10zu | %9zu | %7.3f | %7.2f | %7.2f | %5.2f |\n", what, bytes, tokens, s.wall,
           bytes / s.wall / 1e6, bytes / s.cpu / 1e6, tokens ? (double)bytes / tokens : 0.0);
}

static std::vector<int> timed_encode(Gpt2Tokenizer* tk, const std::string& text, Clock* s) {
    Clock t0 = clock_now();
    std::vector<int> ids = gpt2_encode(tk, text, false);
    *s = since(t0);
    return ids;
}

int main(int argc, char** argv) {
    std::string text_path, bpe_dir = GPT2_BPE_DIR;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if ((a == "--text" || a == "--bpe") && i + 1 < argc) (a == "--text" ? text_path : bpe_dir) = argv[++i];
        else fail("bench_tokenizer: unknown argument '%s' (usage: bench_tokenizer [--text FILE] [--bpe DIR])",
                  a.c_str());
    }
    std::string text, source;
    if (text_path.empty()) {
        source = "data/brown/brown_train.bin";
        TokenShard sh = read_token_shard(source, 256);  // fails with a hint to run `make data` when missing
        text.assign(sh.tokens.begin(), sh.tokens.end());
    } else {
        source = text_path;
        text = read_file_bytes(text_path, "text file").bytes;
    }

    Clock t0 = clock_now();
    Gpt2Tokenizer tk;
    gpt2_load_dir(&tk, bpe_dir);
    printf("tokenizer files loaded from %s in %.3f s; text: %s\n\n", bpe_dir.c_str(), since(t0).wall,
           source.c_str());
    printf("| %-44s | %10s | %9s | %7s | %7s | %7s | %5s |\n", "case", "bytes", "tokens", "wall s", "MB/s",
           "CPU MB/s", "B/tok");
    printf("|%s|%s|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(12, '-').c_str(),
           std::string(11, '-').c_str(), std::string(9, '-').c_str(), std::string(9, '-').c_str(),
           std::string(10, '-').c_str(), std::string(7, '-').c_str());

    Clock s;
    std::vector<int> ids = timed_encode(&tk, text, &s);
    row("encode, cold cache (first pass)", text.size(), ids.size(), s);
    Clock best = {1e30, 1e30};
    for (int rep = 0; rep < 3; rep++) {
        ids = timed_encode(&tk, text, &s);
        best = {std::min(best.wall, s.wall), std::min(best.cpu, s.cpu)};
    }
    row("encode, warm cache (best of 3)", text.size(), ids.size(), best);

    t0 = clock_now();
    std::string back = gpt2_decode(tk, ids);
    row("decode", back.size(), ids.size(), since(t0));
    if (back != text) fail("bench_tokenizer: decode(encode(text)) differs from the text of %s", source.c_str());

    uint64_t rng = 1;
    std::string letters(1 << 20, 'a');
    for (char& ch : letters) ch = (char)('a' + splitmix64(&rng) % 26);
    ids = timed_encode(&tk, letters, &s);
    row("1 MB of random a-z, one piece (no cache)", letters.size(), ids.size(), s);
    std::string spaces(1 << 20, ' ');
    ids = timed_encode(&tk, spaces, &s);
    row("1 MB of spaces, one piece (no cache)", spaces.size(), ids.size(), s);
    return 0;
}
