// dev/fuzz/fuzz_tokenizer_file.cpp: libFuzzer harness for llm.c's tokenizer file reader (common/tokenizer_file.h,
// read_tokenizer_file). The input is the whole file (written to /dev/shm: the reader takes a path). An accepted file
// must decode every id it holds. A clean rejection (SkError under TESTING) is not a finding. Not a test of the values
// read (test/test_tokenizer.cpp checks those). Build and run: dev/fuzz/run.sh.
#define TESTING
#include "../../common/tokenizer_file.h"
#include "fuzz_input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string path = fuzz_input_file("tokenizer.bin", data, size);
    try {
        TokenizerFile t = read_tokenizer_file(path);
        std::vector<int> ids(t.tokens.size());
        for (size_t i = 0; i < ids.size(); i++) ids[i] = (int)i;
        if (tokenizer_decode(t, ids.data(), ids.size()).empty() || t.eot < 0 || (size_t)t.eot >= t.tokens.size())
            __builtin_trap();
    } catch (const SkError&) {
    }
    return 0;
}
