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
