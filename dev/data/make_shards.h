// dev/data/make_shards.h: any text into llm.c token shards (the logic of dev/data/make_shards.cpp, kept in a header
// so that test/test_tokenizer.cpp runs it in-process).
//
// What it is: reads documents, tokenizes them (GPT-2 BPE or bytes), splits them into train and validation by
// document index, and writes llm.c token shards plus the tokenizer file beside them.
//   Input (--input): a UTF-8 text file, a JSON-lines file (one object per line; its top-level "text" string is the
//     document; blank lines are skipped), or a directory: every regular file below it whose name does not start
//     with '.', recursively, in byte order of the path; symbolic links to files are followed, to directories not.
//     A file is JSON lines when its name ends in .jsonl (or with --format jsonl), text otherwise (--format text).
//   Documents (--split-docs auto, the default: blank-lines for a single text file, none otherwise): with none a text
//     file is ONE document, verbatim; with blank-lines documents are separated
//     by runs of blank lines (lines holding only spaces, tabs or \r), and each is its lines from the first non-blank
//     to the last non-blank one, joined by their original newlines (no leading or trailing newline). Empty documents
//     are dropped (and counted). Input must be valid UTF-8: an error names the file and byte.
//   Split: the kept documents are numbered 0, 1, ... in input order; document i goes to validation when
//     i % val_every == 0, to training otherwise. So the split depends only on the input and --val-every.
//   Tokens: gpt2: each document's ids (ordinary: an "<|endoftext|>" inside a text is text), with the token
//     <|endoftext|> (50256) BETWEEN consecutive documents of a split: an end-of-sequence marker as in the paper's
//     data, no beginning-of-sequence token, nothing before the first or after the last document. byte: the UTF-8
//     bytes (vocab 256), with "\n\n" between consecutive documents (as dev/data/prepare_brown.py writes Brown).
//   Output (--out DIR, default data/<name>_<tokenizer>): DIR/<name>_train.bin and DIR/<name>_val.bin when a split
//     fits in one shard of --shard-tokens tokens (default 100M, llm.c's shard size); otherwise that split is cut into
//     DIR/<name>_train_000000.bin, _000001, ... each full but the last (a document may span two shards). Either way
//     the glob DIR/<name>_train*.bin names the training data. DIR/<name>_tokenizer.bin is the tokenizer file
//     (common/tokenizer_file.h). Every file is written atomically (temp file + rename); shards of an earlier run under
//     the other naming are removed, so a glob never mixes two runs.
// What it is not: parallel (one core; GPT-2 tokenizing runs at tens of MB/s, see dev/data/bench_tokenizer.cpp), or a
// downloader (dev/data/data.mk fetches the built-in corpora).
// Build: header-only; link -lpcre2-8 (dev/data/data.mk builds build/make_shards).
#pragma once
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../../common/gpt2_tokenizer.h"
#include "../../common/json_read.h"
#include "../../common/token_shards.h"
#include "../../common/tokenizer_file.h"

struct ShardOptions {
    std::string input;
    std::string name;
    std::string tokenizer = "gpt2";  // gpt2 | byte
    std::string out_dir;             // empty: data/<name>_<tokenizer>
    std::string format = "auto";     // auto | text | jsonl
    std::string split_docs = "auto";  // auto | none | blank-lines
    std::string bpe_dir = GPT2_BPE_DIR;
    int val_every = 20;
    int shard_tokens = 100000000;
};

struct SplitReport {
    int64_t documents = 0, text_bytes = 0, tokens = 0;
    std::vector<std::string> files;
};

struct ShardReport {
    std::string out_dir, tokenizer_path;
    int vocab_size = 0, eot = 0;
    SplitReport train, val;
    int64_t empty_documents = 0;
    std::vector<std::string> removed;  // stale shards of an earlier run
};

// ----------------------------------------------------------------------------------------------------------------
// input: files and documents

static inline bool ends_with(const std::string& s, const char* suffix) {
    size_t n = strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

static inline void list_files_below(const std::string& dir, std::vector<std::string>* out) {
    DIR* d = opendir(dir.c_str());
    if (!d) fail("cannot read directory '%s': %s", dir.c_str(), strerror(errno));
    while (struct dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::string path = dir + "/" + e->d_name;
        struct stat st;
        if (lstat(path.c_str(), &st) != 0) fail("cannot stat '%s': %s", path.c_str(), strerror(errno));
        bool link = S_ISLNK(st.st_mode);
        if (link && stat(path.c_str(), &st) != 0) fail("broken symbolic link '%s' (remove it or fix it)", path.c_str());
        if (S_ISDIR(st.st_mode)) {
            if (!link) list_files_below(path, out);
        } else if (S_ISREG(st.st_mode)) {
            out->push_back(path);
        }
    }
    closedir(d);
}

static inline std::vector<std::string> input_files(const std::string& input) {
    struct stat st;
    if (stat(input.c_str(), &st) != 0) fail("flag --input: cannot open '%s': %s", input.c_str(), strerror(errno));
    std::vector<std::string> files;
    if (S_ISDIR(st.st_mode)) {
        std::string dir = input;
        while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
        list_files_below(dir, &files);
        std::sort(files.begin(), files.end());
        if (files.empty())
            fail("flag --input: directory '%s' holds no files (hidden files are skipped)", input.c_str());
    } else {
        files.push_back(input);
    }
    return files;
}

static inline bool is_blank_line(const std::string& s, size_t begin, size_t end) {
    for (size_t i = begin; i < end; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

typedef std::function<void(const std::string& where, const char* text, size_t n)> DocumentSink;

// Calls emit on each document of a text file; `where` names it for error messages.
static inline void text_file_documents(const std::string& path, bool split_blank_lines, const DocumentSink& emit) {
    FileBytes fb = read_file_bytes(path, "input text file");
    const std::string& s = fb.bytes;
    if (!split_blank_lines) {
        emit("'" + path + "'", s.data(), s.size());
        return;
    }
    size_t doc_begin = std::string::npos, doc_end = 0, pos = 0, line_no = 0, doc_line = 0;
    while (pos < s.size()) {
        size_t eol = s.find('\n', pos);
        size_t end = eol == std::string::npos ? s.size() : eol;
        line_no++;
        if (is_blank_line(s, pos, end)) {
            if (doc_begin != std::string::npos) {
                emit("'" + path + "' document at line " + std::to_string(doc_line), s.data() + doc_begin,
                     doc_end - doc_begin);
                doc_begin = std::string::npos;
            }
        } else {
            if (doc_begin == std::string::npos) doc_begin = pos, doc_line = line_no;
            doc_end = end;
        }
        pos = end + 1;
    }
    if (doc_begin != std::string::npos)
        emit("'" + path + "' document at line " + std::to_string(doc_line), s.data() + doc_begin, doc_end - doc_begin);
}

// Extracts the top-level "text" string of one JSON-lines record.
static inline void jsonl_record_text(const std::string& line, const std::string& where, std::string* text) {
    JsonCursor c = json_cursor(line.data(), line.size(), where);
    bool found = false;
    json_read_object(&c, [&](const std::string& key) {
        if (key != "text") return json_skip_value(&c);
        if (found) json_fail(&c, "the object has two \"text\" fields");
        json_skip_ws(&c);
        if (c.p >= c.end || *c.p != '"') json_fail(&c, "the \"text\" field is not a string");
        json_read_string(&c, text);
        found = true;
    });
    json_skip_ws(&c);
    if (c.p != c.end) json_fail(&c, "unexpected characters after the object (one JSON object per line)");
    if (!found) json_fail(&c, "the object has no \"text\" field");
}

// Calls emit on each record of a JSON-lines file, read line by line (a file may be larger than memory).
static inline void jsonl_file_documents(const std::string& path, const DocumentSink& emit) {
    // owned by unique_ptrs, so a bad line (fail() throws under TESTING) frees both
    std::unique_ptr<FILE, int (*)(FILE*)> file(fopen(path.c_str(), "rb"), fclose);
    FILE* f = file.get();
    if (!f) fail("cannot open input JSON-lines file '%s': %s", path.c_str(), strerror(errno));
    char* buf = nullptr;
    size_t cap = 0;
    std::unique_ptr<char*, void (*)(char**)> buf_owner(&buf, [](char** b) { free(*b); });
    ssize_t len;
    size_t line_no = 0;
    std::string line, text;
    errno = 0;
    while ((len = getline(&buf, &cap, f)) >= 0) {
        line_no++;
        if (len > 0 && buf[len - 1] == '\n') len--;
        line.assign(buf, len);
        if (is_blank_line(line, 0, line.size())) continue;
        std::string where = "'" + path + "' line " + std::to_string(line_no);
        jsonl_record_text(line, where, &text);
        emit(where, text.data(), text.size());
    }
    if (ferror(f)) fail("cannot read input JSON-lines file '%s': %s", path.c_str(), strerror(errno));
}

// ----------------------------------------------------------------------------------------------------------------
// output: one split's shards

struct SplitWriter {
    std::string prefix;  // DIR/<name>_train or DIR/<name>_val
    int shard_tokens = 0;
    std::vector<uint16_t> buf;
    int numbered = 0;  // shards written as <prefix>_NNNNNN.bin so far
    SplitReport report;
};

static inline std::string numbered_shard(const std::string& prefix, int k) {
    char num[16];
    snprintf(num, sizeof num, "_%06d", k);
    return prefix + num + ".bin";
}

static inline void split_flush_numbered(SplitWriter* w) {
    std::string path = numbered_shard(w->prefix, w->numbered++);
    write_shard(path, w->buf);
    w->report.files.push_back(path);
    w->buf.clear();
}

static inline void split_append(SplitWriter* w, const int* ids, size_t n) {
    while (n > 0) {
        if (w->buf.size() == (size_t)w->shard_tokens) split_flush_numbered(w);
        size_t take = std::min(n, (size_t)w->shard_tokens - w->buf.size());
        w->buf.insert(w->buf.end(), ids, ids + take);
        ids += take;
        n -= take;
        w->report.tokens += take;
    }
}

static inline void split_finish(SplitWriter* w) {
    if (w->numbered == 0) {
        std::string path = w->prefix + ".bin";
        write_shard(path, w->buf);
        w->report.files.push_back(path);
    } else if (!w->buf.empty()) {
        split_flush_numbered(w);
    }
}

// Removes DIR/<name>_{train,val}.bin and _NNNNNN.bin files that this run did not write.
static inline void remove_stale_shards(const std::string& dir, const std::string& name,
                                       const std::vector<std::string>& written, std::vector<std::string>* removed) {
    DIR* d = opendir(dir.c_str());
    if (!d) fail("cannot read output directory '%s': %s", dir.c_str(), strerror(errno));
    std::vector<std::string> stale;
    while (struct dirent* e = readdir(d)) {
        std::string f = e->d_name;
        for (const char* split : {"_train", "_val"}) {
            std::string base = name + split;
            if (f.compare(0, base.size(), base) != 0 || !ends_with(f, ".bin")) continue;
            std::string middle = f.substr(base.size(), f.size() - base.size() - 4);
            bool ours = middle.empty() || (middle.size() == 7 && middle[0] == '_' &&
                                           std::all_of(middle.begin() + 1, middle.end(),
                                                       [](char ch) { return ch >= '0' && ch <= '9'; }));
            std::string path = dir + "/" + f;
            if (ours && std::find(written.begin(), written.end(), path) == written.end()) stale.push_back(path);
        }
    }
    closedir(d);
    std::sort(stale.begin(), stale.end());
    for (const std::string& path : stale) {
        if (unlink(path.c_str()) != 0)
            fail("cannot remove the stale shard '%s' of an earlier run: %s (remove it by hand: a glob over the "
                 "output would mix two runs)", path.c_str(), strerror(errno));
        removed->push_back(path);
    }
}

static inline void make_dirs(const std::string& dir) {
    for (size_t i = 1; i <= dir.size(); i++) {
        if (i < dir.size() && dir[i] != '/') continue;
        std::string part = dir.substr(0, i);
        if (mkdir(part.c_str(), 0777) != 0 && errno != EEXIST)
            fail("cannot create output directory '%s': %s", part.c_str(), strerror(errno));
    }
}

// ----------------------------------------------------------------------------------------------------------------
// the whole tool

static inline ShardReport make_shards(const ShardOptions& o) {
    if (o.name.empty() || o.name.find('/') != std::string::npos)
        fail("flag --name: '%s' must be a non-empty file name prefix without '/'", o.name.c_str());
    bool gpt2 = o.tokenizer == "gpt2";
    if (!gpt2 && o.tokenizer != "byte") fail("flag --tokenizer: '%s' is not one of: gpt2, byte", o.tokenizer.c_str());
    if (o.format != "auto" && o.format != "text" && o.format != "jsonl")
        fail("flag --format: '%s' is not one of: auto, text, jsonl", o.format.c_str());
    if (o.split_docs != "auto" && o.split_docs != "none" && o.split_docs != "blank-lines")
        fail("flag --split-docs: '%s' is not one of: auto, none, blank-lines", o.split_docs.c_str());
    if (o.val_every < 2) fail("flag --val-every: %d must be >= 2 (every Nth document goes to validation)", o.val_every);
    if (o.shard_tokens < 1) fail("flag --shard-tokens: %d must be >= 1", o.shard_tokens);

    ShardReport r;
    r.out_dir = o.out_dir.empty() ? "data/" + o.name + "_" + o.tokenizer : o.out_dir;
    std::vector<std::string> files = input_files(o.input);
    // auto: one text file is cut at blank lines (as one document it could not make a training and a validation split)
    bool one_text_file = files.size() == 1 && files[0] == o.input && o.format != "jsonl" &&
                         (o.format == "text" || !ends_with(o.input, ".jsonl"));
    std::string split_docs = o.split_docs == "auto" ? (one_text_file ? "blank-lines" : "none") : o.split_docs;
    Gpt2Tokenizer tk;
    std::vector<std::string> vocab;
    if (gpt2) {
        gpt2_load_dir(&tk, o.bpe_dir);
        vocab = tk.token_bytes;
        r.eot = tk.eot;
    } else {
        vocab = byte_tokenizer_tokens();
        r.eot = BYTE_TOKENIZER_EOT;
    }
    r.vocab_size = (int)vocab.size();
    if (r.vocab_size > 65536)
        fail("the tokenizer of '%s' has %d tokens; token shards hold uint16 ids (at most 65536)", o.bpe_dir.c_str(),
             r.vocab_size);
    make_dirs(r.out_dir);

    SplitWriter train, val;
    train.prefix = r.out_dir + "/" + o.name + "_train";
    val.prefix = r.out_dir + "/" + o.name + "_val";
    train.shard_tokens = val.shard_tokens = o.shard_tokens;
    const int byte_separator[2] = {'\n', '\n'};
    std::vector<int> ids;
    int64_t index = 0;
    DocumentSink emit = [&](const std::string& where, const char* text, size_t n) {
        size_t valid = utf8_valid_prefix(text, n);
        if (valid != n)
            fail("%s is not valid UTF-8 at byte %zu of the document (byte 0x%02x); convert it to UTF-8 (e.g. iconv) "
                 "or leave it out", where.c_str(), valid, (unsigned char)text[valid]);
        if (n == 0) {
            r.empty_documents++;
            return;
        }
        SplitWriter* w = index++ % o.val_every == 0 ? &val : &train;
        if (w->report.documents > 0) {
            if (gpt2) split_append(w, &r.eot, 1);
            else split_append(w, byte_separator, 2);
        }
        ids.clear();
        if (gpt2) {
            gpt2_encode_ordinary(&tk, text, n, &ids);
        } else {
            ids.resize(n);
            for (size_t i = 0; i < n; i++) ids[i] = (unsigned char)text[i];
        }
        split_append(w, ids.data(), ids.size());
        w->report.documents++;
        w->report.text_bytes += n;
    };
    for (const std::string& f : files) {
        bool jsonl = o.format == "jsonl" || (o.format == "auto" && ends_with(f, ".jsonl"));
        if (jsonl) jsonl_file_documents(f, emit);
        else text_file_documents(f, split_docs == "blank-lines", emit);
    }
    const char* hint = split_docs == "none" && o.format != "jsonl"
                           ? " (a text file is one document: cut files at blank lines with --split-docs blank-lines, "
                             "which is SPLIT_DOCS=blank-lines for make data-text)"
                           : "";
    if (val.report.documents == 0 || train.report.documents == 0)
        fail("flag --input '%s': %lld document(s) in all, so the %s split is empty; it needs at least 2 documents "
             "with --val-every %d%s", o.input.c_str(), (long long)index,
             val.report.documents ? "training" : "validation", o.val_every, hint);
    split_finish(&train);
    split_finish(&val);
    r.train = train.report;
    r.val = val.report;
    r.tokenizer_path = r.out_dir + "/" + o.name + "_tokenizer.bin";
    write_tokenizer_file(r.tokenizer_path, vocab, r.eot);
    std::vector<std::string> written = r.train.files;
    written.insert(written.end(), r.val.files.begin(), r.val.files.end());
    remove_stale_shards(r.out_dir, o.name, written, &r.removed);
    return r;
}

static inline void print_shard_report(const ShardOptions& o, const ShardReport& r, double seconds) {
    printf("make_shards: %s -> %s (tokenizer %s: vocab %d, %s %d)\n", o.input.c_str(), r.out_dir.c_str(),
           o.tokenizer.c_str(), r.vocab_size, o.tokenizer == "gpt2" ? "<|endoftext|>" : "end-of-text slot ('\\n')",
           r.eot);
    printf("  %-5s %10s %14s %14s  %s\n", "split", "documents", "text bytes", "tokens", "files");
    const char* names[2] = {"train", "val"};
    const SplitReport* splits[2] = {&r.train, &r.val};
    for (int s = 0; s < 2; s++) {
        const SplitReport& p = *splits[s];
        std::string files = p.files.size() == 1 ? p.files[0]
                                                : p.files.front() + " .. " + p.files.back() + " (" +
                                                      std::to_string(p.files.size()) + " shards)";
        printf("  %-5s %10lld %14lld %14lld  %s\n", names[s], (long long)p.documents, (long long)p.text_bytes,
               (long long)p.tokens, files.c_str());
    }
    printf("  tokenizer file %s; %lld empty document(s) dropped\n", r.tokenizer_path.c_str(),
           (long long)r.empty_documents);
    for (const std::string& f : r.removed) printf("  removed the stale shard %s of an earlier run\n", f.c_str());
    int64_t bytes = r.train.text_bytes + r.val.text_bytes;
    printf("  %.1f MB in %.2f s (%.1f MB/s)\n", bytes / 1e6, seconds, seconds > 0 ? bytes / seconds / 1e6 : 0.0);
}
