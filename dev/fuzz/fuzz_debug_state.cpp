// dev/fuzz/fuzz_debug_state.cpp: libFuzzer harness for the debug state reader (common/debug_state.h, parse_debug_state).
// The reader also takes the model's vocabulary V and parameter count; the harness takes them from the input, so the
// fuzzer can reach the arrays: from header[4..5] of a version-3 state (which must equal them) and from the unused
// header[254..255] of a version-2 state (llm.c's header lacks them). A clean rejection (SkError under TESTING) is not a
// finding. Not a test of the values read (test/test_hostile.cpp checks those). Build and run: dev/fuzz/run.sh.
#define TESTING
#include "../../common/config.h"
#include "../../common/debug_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    int32_t h[256] = {0};
    memcpy(h, data, std::min(size, sizeof h));
    bool v3 = h[1] == 3;
    int V = v3 ? h[4] : h[254];
    int32_t num_params = v3 ? h[5] : h[255];
    if (V < 1 || V > SK_MAX_VOCAB || num_params < 0) return 0;  // a loaded model guarantees these
    ByteSource src("fuzz-input", "debug state", data, size);
    try {
        parse_debug_state(src, V, (size_t)num_params);
    } catch (const SkError&) {
    }
    return 0;
}
