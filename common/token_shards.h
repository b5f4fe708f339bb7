// common/token_shards.h: llm.c token shards and the reproducible data loader shared by both trainers.
//
// Format (llm.c, dev/data/data_common.py): a 256 x int32 little-endian header, [0] = 20240520 (magic), [1] = 1
// (version), [2] = number of tokens; then that many uint16 tokens. llm.c's FineWeb/TinyStories shards and ours are the
// same files.
// Loader: the concatenation of the shards matched by a glob is cut into windows of T+1 tokens that never cross a shard
// boundary, window w of a shard starting at token w*T. Each epoch visits every window once in an order drawn from the
// seed and the epoch number, so the position (epoch, index) is all a checkpoint needs to resume bit-identically.
// What it is not: a tokenizer (bytes are tokens for the default Brown data; docs/data.md), or a reader of
// llm.c's uint32 (LLaMA-3, magic 20240801) shards: token ids are uint16, so a vocabulary above 65536 cannot be trained.
// Readers: parse_token_shard takes a ByteSource (a file, or memory for dev/fuzz/fuzz_token_shard.cpp).
#pragma once
#include <glob.h>
#include <algorithm>
#include <string>
#include <vector>

#include "file_io.h"
#include "random.h"

#define SHARD_VERSION 1

struct TokenShard {
    std::string path;
    std::vector<uint16_t> tokens;
};

// Parses and validates a shard: magic, version, the token count against the source's length (before anything is
// allocated), every id against vocab_size.
static inline TokenShard parse_token_shard(const ByteSource& src, int vocab_size) {
    const char* p = src.path.c_str();
    int32_t h[256];
    source_header(src, h);
    if (h[0] != SHARD_MAGIC)
        fail("token shard '%s': magic (header[0]) is %d, expected %d (%s)", p, h[0], SHARD_MAGIC, describe_magic(h[0]));
    if (h[1] != SHARD_VERSION)
        fail("token shard '%s': version (header[1]) is %d, expected %d (uint16 tokens; regenerate the shard with "
             "llm.c's or sinkscope's dev/data scripts)", p, h[1], SHARD_VERSION);
    size_t payload = src.size - 1024;
    if (h[2] < 0 || (uint64_t)h[2] * 2 != payload)
        fail("token shard '%s': token count (header[2]) is %d = %lld bytes, but the file holds %zu bytes after the "
             "header (truncated or corrupt; regenerate it)", p, h[2], (long long)h[2] * 2, payload);
    check_fits_in_memory(payload, "token shard", src.path, "split it into smaller shards");
    TokenShard s;
    s.path = src.path;
    s.tokens.resize((size_t)h[2]);
    source_read(src, 1024, s.tokens.data(), payload, "the tokens");
    size_t first_bad = s.tokens.size();
    uint16_t largest = 0;
    for (size_t i = 0; i < s.tokens.size(); i++) {
        if (s.tokens[i] >= vocab_size && first_bad == s.tokens.size()) first_bad = i;
        largest = std::max(largest, s.tokens[i]);
    }
    if (first_bad < s.tokens.size())
        fail("token shard '%s': token %zu is %d, outside the model's vocabulary of %d (the largest id in the shard is "
             "%d: a shard from another tokenizer, or set --vocab to at least %d)", p, first_bad, s.tokens[first_bad],
             vocab_size, largest, largest + 1);
    return s;
}

static inline TokenShard read_token_shard(const std::string& path, int vocab_size) {
    ByteSource src(path, "token shard");
    return parse_token_shard(src, vocab_size);
}

// Writes a shard of these tokens (atomically: common/file_io.h).
static inline void write_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
    int32_t header[256] = {0};
    header[0] = SHARD_MAGIC;
    header[1] = SHARD_VERSION;
    header[2] = (int32_t)tokens.size();
    AtomicWriter w = atomic_open(path);
    atomic_write(&w, header, sizeof header);
    atomic_write(&w, tokens.data(), tokens.size() * sizeof(uint16_t));
    atomic_commit(&w);
}

static inline std::vector<std::string> expand_glob(const std::string& pattern, const char* flag) {
    glob_t g;
    std::vector<std::string> out;
    int rc = glob(pattern.c_str(), 0, nullptr, &g);
    if (rc == 0)
        for (size_t i = 0; i < g.gl_pathc; i++) out.push_back(g.gl_pathv[i]);
    globfree(&g);
    if (out.empty())
        fail("%s '%s' matches no file (run `make data` for the default Brown corpus, or point %s at your shards)",
             flag, pattern.c_str(), flag);
    std::sort(out.begin(), out.end());
    return out;
}

struct DataLoader {
    std::vector<TokenShard> shards;
    std::vector<size_t> window_start;  // first global window index of each shard
    size_t num_windows = 0;
    int T = 0;
    uint64_t seed = 0;
    bool shuffle = true;
    // position: the next window is order[index] of epoch `epoch`
    uint64_t epoch = 0;
    size_t index = 0;
    std::vector<size_t> order;
};

static inline void loader_make_order(DataLoader* dl) {
    dl->order.resize(dl->num_windows);
    for (size_t i = 0; i < dl->num_windows; i++) dl->order[i] = i;
    if (!dl->shuffle) return;
    uint64_t rng = dl->seed * 0x100000001B3ull + dl->epoch + 1;
    for (size_t i = dl->num_windows; i > 1; i--) {  // Fisher-Yates
        size_t j = (size_t)(splitmix64(&rng) % i);
        std::swap(dl->order[i - 1], dl->order[j]);
    }
}

static inline void loader_init(DataLoader* dl, const std::string& pattern, const char* flag, int T, int vocab_size,
                               uint64_t seed, bool shuffle) {
    dl->T = T;
    dl->seed = seed;
    dl->shuffle = shuffle;
    std::vector<std::string> paths = expand_glob(pattern, flag);
    size_t bytes = 0;  // the loader holds every shard it matches: their sizes together, before reading any
    for (const std::string& path : paths) {
        struct stat st;
        if (stat(path.c_str(), &st) == 0) bytes += (size_t)st.st_size;
    }
    check_fits_in_memory(bytes, flag, pattern, "the loader holds every shard it matches: match fewer shards");
    for (const std::string& path : paths) {
        dl->shards.push_back(read_token_shard(path, vocab_size));
        size_t n = dl->shards.back().tokens.size();
        dl->window_start.push_back(dl->num_windows);
        dl->num_windows += n > (size_t)T ? (n - 1) / T : 0;
    }
    if (dl->num_windows == 0)
        fail("%s '%s': the shards hold no window of %d+1 tokens (too little data for this sequence length)", flag,
             pattern.c_str(), T);
    loader_make_order(dl);
}

// Copies window w's T inputs and T targets.
static inline void loader_window(const DataLoader* dl, size_t w, int* inputs, int* targets) {
    size_t s = std::upper_bound(dl->window_start.begin(), dl->window_start.end(), w) - dl->window_start.begin() - 1;
    const uint16_t* tok = dl->shards[s].tokens.data() + (w - dl->window_start[s]) * dl->T;
    for (int t = 0; t < dl->T; t++) {
        inputs[t] = tok[t];
        targets[t] = tok[t + 1];
    }
}

// Fills B sequences and advances the position (a new epoch, with a new order, begins when the windows run out).
static inline void loader_next_batch(DataLoader* dl, int B, int* inputs, int* targets) {
    for (int b = 0; b < B; b++) {
        if (dl->index >= dl->num_windows) {
            dl->epoch++;
            dl->index = 0;
            loader_make_order(dl);
        }
        loader_window(dl, dl->order[dl->index++], inputs + (size_t)b * dl->T, targets + (size_t)b * dl->T);
    }
}

// Restores a saved position; an index beyond the windows means the data is not the data the position was saved with.
static inline void loader_seek(DataLoader* dl, uint64_t epoch, size_t index) {
    if (index > dl->num_windows)
        fail("resume: the saved data position is window %zu of epoch %llu, but the training data has only %zu windows "
             "of %d tokens (pass the --train shards and --seq-len the run was saved with)", index,
             (unsigned long long)epoch, dl->num_windows, dl->T);
    dl->epoch = epoch;
    dl->index = index;
    loader_make_order(dl);
}

// The probe: the first S consecutive, non-overlapping T-token windows of one shard (window s = tokens [s*T, (s+1)*T)),
// the rule any other tool can follow to measure the same sequences.
static inline std::vector<int> read_probe(const std::string& path, int S, int T, int vocab_size) {
    TokenShard sh = read_token_shard(path, vocab_size);
    if (sh.tokens.size() < (size_t)S * T)
        fail("probe '%s' holds %zu tokens, fewer than --probe-seqs %d x --probe-len %d = %lld (use fewer or shorter "
             "probe sequences, or a larger shard)", path.c_str(), sh.tokens.size(), S, T, (long long)S * T);
    return std::vector<int>(sh.tokens.begin(), sh.tokens.begin() + (size_t)S * T);
}
