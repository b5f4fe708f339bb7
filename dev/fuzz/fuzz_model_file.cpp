// dev/fuzz/fuzz_model_file.cpp: libFuzzer harness for the model file reader (common/model_file.h, parse_model_file). The
// input is the whole file. A clean rejection (SkError, thrown by fail() under TESTING) is not a finding; a crash, a
// sanitizer report, a leak, a timeout or an allocation beyond -rss_limit_mb is. Not a test of the values read
// (test/test_hostile.cpp checks those). Build and run: dev/fuzz/run.sh.
#define TESTING
#include "../../common/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    ByteSource src("fuzz-input", "model file", data, size);
    std::vector<float> params;
    try {
        parse_model_file(src, &params);
    } catch (const SkError&) {
    }
    return 0;
}
