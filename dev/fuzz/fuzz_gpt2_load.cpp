// dev/fuzz/fuzz_gpt2_load.cpp: libFuzzer harness for the GPT-2 tokenizer's loader (common/gpt2_tokenizer.h, gpt2_load:
// encoder.json through common/json_read.h, and vocab.bpe). The input is encoder.json, a NUL byte, then vocab.bpe (both
// written to /dev/shm: the loader takes paths). When the pair is accepted, encoding then decoding a fixed text must
// give the text back. A clean rejection (SkError under TESTING) is not a finding. Not a test of the values read
// (test/test_tokenizer.cpp checks those). Build and run: dev/fuzz/run.sh.
#define TESTING
#include "../../common/gpt2_tokenizer.h"
#include "fuzz_input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const uint8_t* nul = (const uint8_t*)memchr(data, 0, size);
    if (!nul) return 0;
    std::string enc = fuzz_input_file("encoder.json", data, nul - data);
    std::string bpe = fuzz_input_file("vocab.bpe", nul + 1, size - (nul + 1 - data));
    Gpt2Tokenizer tk;
    try {
        gpt2_load(&tk, enc, bpe);
    } catch (const SkError&) {
        return 0;
    }
    const std::string text = "Hello world, it's 2024!\n\n  caf\xc3\xa9 <|endoftext|> done";
    try {
        for (bool eot : {false, true})
            if (gpt2_decode(tk, gpt2_encode(&tk, text, eot)) != text) __builtin_trap();
    } catch (const SkError&) {
        __builtin_trap();  // an accepted vocabulary must encode any valid UTF-8 text
    }
    return 0;
}
