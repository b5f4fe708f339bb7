// dev/fuzz/fuzz_train_state.cpp: libFuzzer harness for the training state reader (common/train_state.h,
// parse_train_state), for a fixed 286-parameter model (a valid state is 3312 bytes: see corpus/train_state/). A clean
// rejection (SkError under TESTING) is not a finding. Not a test of the values read (test/test_hostile.cpp checks
// those). Build and run: dev/fuzz/run.sh.
#define TESTING
#include "../../common/train_state.h"

static const ModelConfig fuzz_model =
    make_config(8, 2, 1, 1, 2, 2, NORM_RMSNORM, PLACE_PRE, FFN_RELU, POS_NONE, 1, 0, INIT_LLAMA);

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    size_t n = param_count(fuzz_model);
    std::vector<float> m(n), v(n);
    ByteSource src("fuzz-input", "training state", data, size);
    try {
        parse_train_state(src, fuzz_model, n, m.data(), v.data());
    } catch (const SkError&) {
    }
    return 0;
}
