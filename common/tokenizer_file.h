// common/tokenizer_file.h: llm.c's tokenizer file, so a trainer can turn sampled ids back into text.
//
// Format (llm.c's train_gpt2.py write_tokenizer, read by llm.c's tokenizer.h): a 256 x int32 little-endian header,
// [0] = 20240328 (magic), [1] = 2 (version), [2] = vocabulary size V, [3] = id of the end-of-text token, the rest 0;
// then for each id 0..V-1 its bytes as a uint8 length (1..255) followed by that many bytes.
// Version 1 (older llm.c files) has no [3]; llm.c then assumes GPT-2 (V = 50257, end of text 50256), and so do we.
// Two vocabularies are written by dev/data/make_shards:
//   - GPT-2: the 50257 tokens of common/gpt2_tokenizer.h, [3] = 50256 (<|endoftext|>, stored as its 13 bytes of text).
//   - byte level: V = 256, token i is the single byte i, and [3] = 10 ('\n'). Byte-level data has no end-of-text
//     token (documents are separated by "\n\n"), but llm.c's reader requires a valid id there and its sampler starts
//     generating from it, so we store the newline: a generation then starts like a new line of text.
// What it is not: an encoder (common/gpt2_tokenizer.h). Reading needs no PCRE2.
// Build: header-only, nothing to link.
#pragma once
#include <string>
#include <vector>

#include "file_io.h"

#define TOKENIZER_MAGIC 20240328
#define TOKENIZER_VERSION 2
#define BYTE_TOKENIZER_EOT 10

struct TokenizerFile {
    std::string path;
    int eot = -1;
    std::vector<std::string> tokens;  // id -> bytes
};

static inline std::vector<std::string> byte_tokenizer_tokens() {
    std::vector<std::string> tokens(256);
    for (int b = 0; b < 256; b++) tokens[b] = std::string(1, (char)b);
    return tokens;
}

// Writes atomically (temp file + rename). Every token must be 1..255 bytes (llm.c's reader asserts length > 0).
static inline void write_tokenizer_file(const std::string& path, const std::vector<std::string>& tokens, int eot) {
    if (tokens.empty() || eot < 0 || (size_t)eot >= tokens.size())
        fail("tokenizer file '%s': end-of-text id %d is not inside the vocabulary of %zu", path.c_str(), eot,
             tokens.size());
    int32_t header[256] = {0};
    header[0] = TOKENIZER_MAGIC;
    header[1] = TOKENIZER_VERSION;
    header[2] = (int32_t)tokens.size();
    header[3] = eot;
    std::string body;
    for (size_t i = 0; i < tokens.size(); i++) {
        if (tokens[i].empty() || tokens[i].size() > 255)
            fail("tokenizer file '%s': token %zu is %zu bytes; the format holds 1..255", path.c_str(), i,
                 tokens[i].size());
        body.push_back((char)(unsigned char)tokens[i].size());
        body += tokens[i];
    }
    AtomicWriter w = atomic_open(path);
    atomic_write(&w, header, sizeof header);
    atomic_write(&w, body.data(), body.size());
    atomic_commit(&w);
}

// Reads and validates: header fields, every length against the bytes left, and no bytes after the last token.
static inline TokenizerFile read_tokenizer_file(const std::string& path) {
    FileBytes fb = read_file_bytes(path, "tokenizer file");
    const int32_t* h = file_header(fb, "tokenizer file");
    const char* again = "regenerate it with dev/data/make_shards, or take llm.c's gpt2_tokenizer.bin";
    if (h[0] != TOKENIZER_MAGIC)
        fail("tokenizer file '%s': magic is %d, expected %d (not an llm.c tokenizer file; %s)", path.c_str(), h[0],
             TOKENIZER_MAGIC, again);
    TokenizerFile t;
    t.path = path;
    int vocab = h[2];
    if (h[1] == 1) {
        if (vocab != 50257)
            fail("tokenizer file '%s': version 1 is GPT-2's (50257 tokens) but it says %d tokens (%s)", path.c_str(),
                 vocab, again);
        t.eot = 50256;
    } else if (h[1] == TOKENIZER_VERSION) {
        t.eot = h[3];
    } else {
        fail("tokenizer file '%s': version is %d, expected 1 or 2 (%s)", path.c_str(), h[1], again);
    }
    size_t size = fb.bytes.size(), pos = 1024;
    // each token takes at least 2 bytes, which bounds a believable vocabulary size by the file length
    if (vocab <= 0 || (size_t)vocab > (size - pos) / 2)
        fail("tokenizer file '%s': the header says %d tokens, impossible in a file of %zu bytes (truncated or corrupt; "
             "%s)", path.c_str(), vocab, size, again);
    if (t.eot < 0 || t.eot >= vocab)
        fail("tokenizer file '%s': end-of-text id %d is outside the vocabulary of %d (corrupt; %s)", path.c_str(),
             t.eot, vocab, again);
    t.tokens.resize(vocab);
    const unsigned char* u = (const unsigned char*)fb.bytes.data();
    for (int i = 0; i < vocab; i++) {
        if (pos >= size)
            fail("tokenizer file '%s' ends before token %d of %d (truncated; %s)", path.c_str(), i, vocab, again);
        size_t len = u[pos++];
        if (len == 0) fail("tokenizer file '%s': token %d has length 0 (corrupt; %s)", path.c_str(), i, again);
        if (len > size - pos)
            fail("tokenizer file '%s': token %d needs %zu bytes but only %zu are left (truncated; %s)", path.c_str(), i,
                 len, size - pos, again);
        t.tokens[i].assign(fb.bytes.data() + pos, len);
        pos += len;
    }
    if (pos != size)
        fail("tokenizer file '%s' has %zu bytes after its last token (corrupt, or the header's vocabulary size %d is "
             "wrong; %s)", path.c_str(), size - pos, vocab, again);
    return t;
}

// The bytes of ids[0, n); an id outside the vocabulary is an error (a model whose vocabulary is larger than the
// tokenizer's must sample only among the tokenizer's ids: see sampling.h).
static inline std::string tokenizer_decode(const TokenizerFile& t, const int* ids, size_t n) {
    std::string out;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t.tokens.size())
            fail("tokenizer file '%s': cannot decode id %d (position %zu), the vocabulary has %zu tokens",
                 t.path.c_str(), ids[i], i, t.tokens.size());
        out += t.tokens[ids[i]];
    }
    return out;
}
