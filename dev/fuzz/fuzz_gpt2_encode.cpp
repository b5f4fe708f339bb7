// dev/fuzz/fuzz_gpt2_encode.cpp: libFuzzer harness for the GPT-2 encoder (common/gpt2_tokenizer.h, gpt2_encode) with
// OpenAI's vocabulary (data/gpt2/: run from the repository root). The input is the text; the first byte's low
// bit allows <|endoftext|>. Valid UTF-8 must encode to ids that decode back to the text; invalid UTF-8 must be refused
// (SkError under TESTING), never crash. Not a test of the values read (test/test_tokenizer.cpp checks those). Build and
// run: dev/fuzz/run.sh.
#define TESTING
#include "../../common/gpt2_tokenizer.h"

static Gpt2Tokenizer* tokenizer() {
    static Gpt2Tokenizer tk;
    static bool loaded = false;
    if (!loaded) {
        gpt2_load_dir(&tk, "data/gpt2");
        loaded = true;
    }
    return &tk;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    Gpt2Tokenizer* tk = tokenizer();
    std::string text((const char*)data + 1, size - 1);
    bool valid = utf8_valid_prefix(text.data(), text.size()) == text.size();
    try {
        std::vector<int> ids = gpt2_encode(tk, text, data[0] & 1);
        if (!valid || gpt2_decode(*tk, ids) != text) __builtin_trap();
    } catch (const SkError&) {
        if (valid) __builtin_trap();
    }
    return 0;
}
