// test/test_util.h: the small helpers every test file shares: temporary directories, whole-file reads and writes,
// llm.c token shards. No trainer code: test_tokenizer.cpp uses it alone, test_helpers.h adds the trainer.
#pragma once
#include <catch2/catch.hpp>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>
#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#ifndef SK_FIXTURES
#define SK_FIXTURES "test/fixtures"
#endif

static inline std::string fixture(const std::string& name) { return std::string(SK_FIXTURES) + "/" + name; }

// The directories made by temp_dir, removed with their contents when the test program exits (a child process that
// leaves with _exit removes nothing).
struct TempDirs {
    std::vector<std::string> paths;
    ~TempDirs() {
        for (const std::string& p : paths)
            nftw(p.c_str(), [](const char* f, const struct stat*, int, struct FTW*) { return remove(f); }, 16,
                 FTW_DEPTH | FTW_PHYS);
    }
};

// A new empty directory under /tmp.
static inline std::string temp_dir() {
    static TempDirs made;
    char tmpl[] = "/tmp/sinkscope_test_XXXXXX";
    char* d = mkdtemp(tmpl);
    REQUIRE(d != nullptr);
    made.paths.push_back(d);
    return d;
}

// The bytes of a file ("" when it cannot be read).
static inline std::string slurp(const std::string& path) {
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) return "";
    std::string s;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    fclose(f);
    return s;
}

static inline void write_bytes(const std::string& path, const std::string& bytes) {
    FILE* f = fopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    fclose(f);
}

static inline bool file_exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

// Runs a shell command; returns its exit status (-1 when a signal ended it, -2 when no shell could be started) and
// stores stdout + stderr in *out. No Catch2 macro, so that run_commands' threads may call it.
static inline int run_command_status(const std::string& cmd, std::string* out) {
    out->clear();
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return -2;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The same, from a test: a shell that cannot start fails the test.
static inline int run_command(const std::string& cmd, std::string* out) {
    int rc = run_command_status(cmd, out);
    REQUIRE(rc != -2);
    return rc;
}

// Runs independent shell commands `jobs` at a time, each as run_command_status does; returns their exit statuses
// and outputs in the commands' order. For the GPU tests, whose tiny runs are mostly their start (a CUDA context,
// cuBLAS, the model): side by side, those starts overlap. The caller checks the results.
struct CommandResult {
    int rc = -2;
    std::string out;
};
static inline std::vector<CommandResult> run_commands(const std::vector<std::string>& cmds, int jobs) {
    std::vector<CommandResult> results(cmds.size());
    std::atomic<size_t> next{0};
    auto worker = [&]() {
        for (size_t i; (i = next++) < cmds.size();) results[i].rc = run_command_status(cmds[i], &results[i].out);
    };
    std::vector<std::thread> threads;
    for (int j = 0; j < std::max(1, jobs); j++) threads.emplace_back(worker);
    for (std::thread& t : threads) t.join();
    for (const CommandResult& r : results) REQUIRE(r.rc != -2);
    return results;
}

// Regular expressions (PCRE2's Perl syntax, the library the GPT-2 tokenizer uses; std::regex makes libstdc++ warn
// under the sanitizers' -O1). regex_all: every non-overlapping match of `pattern` in `text`, each as its whole match
// then its groups (an unset group is ""). regex_erase: `text` without those matches.
struct RegexMatch {
    size_t begin, end;                // the whole match: text[begin, end)
    std::vector<std::string> groups;  // groups[0] the whole match, then each group
};
static inline std::vector<RegexMatch> regex_matches(const std::string& pattern, const std::string& text) {
    int err = 0;
    PCRE2_SIZE at = 0;
    pcre2_code* re = pcre2_compile((PCRE2_SPTR)pattern.c_str(), pattern.size(), 0, &err, &at, nullptr);
    if (!re) FAIL("test regex '" << pattern << "' does not compile (error " << err << " at " << at << ")");
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, nullptr);
    std::vector<RegexMatch> out;
    for (PCRE2_SIZE pos = 0; pos <= text.size();) {
        int rc = pcre2_match(re, (PCRE2_SPTR)text.data(), text.size(), pos, 0, md, nullptr);
        if (rc < 0) break;  // no further match (or a matching error, which the tests' patterns cannot reach)
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        RegexMatch m{ov[0], ov[1], {}};
        for (int g = 0; g < (int)pcre2_get_ovector_count(md); g++)
            m.groups.push_back(g < rc && ov[2 * g] != PCRE2_UNSET ? text.substr(ov[2 * g], ov[2 * g + 1] - ov[2 * g])
                                                                  : std::string());
        out.push_back(m);
        pos = ov[1] > ov[0] ? ov[1] : ov[1] + 1;  // an empty match moves on by one
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return out;
}
static inline std::vector<std::vector<std::string>> regex_all(const std::string& pattern, const std::string& text) {
    std::vector<std::vector<std::string>> out;
    for (const RegexMatch& m : regex_matches(pattern, text)) out.push_back(m.groups);
    return out;
}
static inline std::string regex_erase(const std::string& text, const std::string& pattern) {
    std::string out;
    size_t from = 0;
    for (const RegexMatch& m : regex_matches(pattern, text)) {
        out.append(text, from, m.begin - from);
        from = m.end;
    }
    return out.append(text, from, std::string::npos);
}
