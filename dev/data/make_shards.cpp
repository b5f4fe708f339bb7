// dev/data/make_shards.cpp: command line of the data tool: any text into llm.c token shards (GPT-2 BPE or bytes).
//
// What it is: flag parsing and the report; the documents, split, tokens and file naming are described and implemented
// in dev/data/make_shards.h. What it is not: a downloader (dev/data/data.mk prepares the built-in corpora).
// Build (from the repository root; `make build/make_shards` does the same through dev/data/data.mk):
//   g++ -O2 -std=c++17 -o build/make_shards dev/data/make_shards.cpp -lpcre2-8
// Run:
//   ./build/make_shards --input data/cache/kjv.jsonl --name kjv --tokenizer gpt2
//   ./build/make_shards --input mybook.txt --name mybook --tokenizer byte --split-docs blank-lines
#include <chrono>

#include "../../common/flags.h"
#include "make_shards.h"

static void print_make_shards_usage(FlagTable* t) {
    printf("usage: make_shards --input PATH --name NAME [flags]\n\n");
    for (int i = 0; i < t->n; i++)
        printf("  %-15s %-20s %s\n", t->flags[i].name, flag_value_string(t->flags[i]).c_str(), t->flags[i].help);
    printf("  %-15s %-20s %s\n", "--help", "", "print this text");
}

int main(int argc, char** argv) {
    ShardOptions o;
    FlagTable t;
    add_flag(&t, "--input", FLAG_STR, &o.input, "a UTF-8 text file, a .jsonl file (\"text\" field), or a directory");
    add_flag(&t, "--name", FLAG_STR, &o.name, "output names: <name>_train.bin, <name>_val.bin, <name>_tokenizer.bin");
    add_flag(&t, "--tokenizer", FLAG_STR, &o.tokenizer, "gpt2 (<|endoftext|> between documents) or byte (\"\\n\\n\")");
    add_flag(&t, "--out", FLAG_STR, &o.out_dir, "output directory (default: data/<name>_<tokenizer>)");
    add_flag(&t, "--format", FLAG_STR, &o.format, "auto (.jsonl files are JSON lines, others text), text or jsonl");
    add_flag(&t, "--split-docs", FLAG_STR, &o.split_docs, "auto (blank-lines for one text file, else none), none (a text file is one document) or blank-lines");
    add_flag(&t, "--val-every", FLAG_INT, &o.val_every, "document i goes to validation when i % N == 0", 2, 1e9);
    add_flag(&t, "--shard-tokens", FLAG_INT, &o.shard_tokens, "tokens per shard; a larger split gets numbered shards",
             1, INT32_MAX);
    add_flag(&t, "--bpe", FLAG_STR, &o.bpe_dir, "directory with GPT-2's encoder.json and vocab.bpe");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_make_shards_usage(&t);
            return 0;
        }
        Flag* f = nullptr;
        for (int k = 0; k < t.n; k++)
            if (strcmp(argv[i], t.flags[k].name) == 0) f = &t.flags[k];
        if (!f) fail("unknown argument '%s' (run make_shards --help for the flags)", argv[i]);
        if (f->seen) fail("flag %s is given twice", argv[i]);
        if (i + 1 >= argc) fail("flag %s needs a value", argv[i]);
        f->seen = true;
        parse_flag_value(f, argv[++i]);
    }
    if (o.input.empty() || o.name.empty()) fail("flags --input and --name are required (run make_shards --help)");
    auto t0 = std::chrono::steady_clock::now();
    ShardReport r = make_shards(o);
    print_shard_report(o, r, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return 0;
}
