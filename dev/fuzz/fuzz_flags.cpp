// dev/fuzz/fuzz_flags.cpp: libFuzzer harness for the command-line parser (common/flags.h, parse_command_line). The input is
// argv[1..] separated by NUL bytes. --help and -h are skipped (they print the usage and exit 0 by design). A clean
// rejection (SkError under TESTING) is not a finding; for an accepted command line the harness checks the invariants
// the trainers rely on. Not a test of the values read (test/test_hostile.cpp checks those). Build and run:
// dev/fuzz/run.sh (which passes a dictionary of the flag names).
#define TESTING
#include <vector>

#include "../../common/flags.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::vector<std::string> args = {"train_gpt_cpu"};
    std::string cur;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == 0) {
            args.push_back(cur);
            cur.clear();
        } else {
            cur.push_back((char)data[i]);
        }
    }
    args.push_back(cur);
    if (args.size() > 64) return 0;
    for (const std::string& a : args)
        if (a == "--help" || a == "-h") return 0;
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(&a[0]);
    CommandLine cl;
    try {
        parse_command_line((int)argv.size(), argv.data(), &cl);
    } catch (const SkError&) {
        return 0;
    }
    const TrainConfig& t = cl.train;
    const ModelConfig& m = cl.model;
    // an accepted command line for a run from scratch describes a buildable model and divisible batches
    if (t.load_path.empty() && t.resume_dir.empty()) {
        int T = t.seq_len ? t.seq_len : m.max_seq_len - m.attn.sink_token;
        if (m.channels % m.num_heads != 0 || T + m.attn.sink_token > m.max_seq_len || m.vocab_size > 65536 ||
            (int64_t)t.batch_size * T > (1 << 30) || t.total_batch_size % ((int64_t)t.batch_size * T) != 0)
            __builtin_trap();
    }
    if (!(t.adam_eps > 0) || t.batch_size < 1) __builtin_trap();
    return 0;
}
