// dev/fuzz/fuzz_token_shard.cpp: libFuzzer harness for the token shard reader (common/token_shards.h, parse_token_shard),
// against the byte-level vocabulary (256) and GPT-2's (50257), so both the rejection and the acceptance of token ids
// are exercised. A clean rejection (SkError under TESTING) is not a finding. Not a test of the values read
// (test/test_hostile.cpp checks those). Build and run: dev/fuzz/run.sh.
#define TESTING
#include "../../common/token_shards.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    ByteSource src("fuzz-input", "token shard", data, size);
    for (int vocab : {256, 50257}) {
        try {
            TokenShard s = parse_token_shard(src, vocab);
            for (uint16_t t : s.tokens)
                if (t >= vocab) __builtin_trap();  // the reader accepted an id outside the vocabulary
        } catch (const SkError&) {
        }
    }
    return 0;
}
