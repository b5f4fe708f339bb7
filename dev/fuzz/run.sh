#!/usr/bin/env bash
# dev/fuzz/run.sh: builds every libFuzzer harness of dev/fuzz/ and fuzzes each for a bounded time.
#
#   dev/fuzz/run.sh [SECONDS] [HARNESS...]   fuzz each harness SECONDS (default 10), all harnesses by default
#   dev/fuzz/run.sh corpus                   rewrite the seed corpora dev/fuzz/corpus/*/ (dev/fuzz/make_corpus.cpp)
#
# Harnesses: model_file token_shard debug_state train_state flags tokenizer_file gpt2_load gpt2_encode.
# Needs clang++ with libFuzzer, AddressSanitizer and UBSan (Debian: apt-get install clang libclang-rt-14-dev) and
# libpcre2-dev for the GPT-2 harnesses. Runs from anywhere; works in the repository root.
# Seeds come from dev/fuzz/corpus/<harness>/; what the fuzzer adds goes to build/fuzz/corpus/<harness>/ (kept between
# runs). A crash, sanitizer report, leak, timeout (10 s) or allocation above 2 GB is a finding: the script stops with
# exit status 1 and the input is saved as build/fuzz/artifacts/<harness>-crash-* (replay: build/fuzz/<harness> FILE).
set -euo pipefail
cd "$(dirname "$0")/../.."

CXX=${FUZZ_CXX:-clang++}
if ! command -v "$CXX" >/dev/null; then
    echo "error: $CXX not found: the fuzzers need clang with libFuzzer (apt-get install clang libclang-rt-14-dev)" >&2
    exit 1
fi
# fail() throws SkError under TESTING (each harness defines it), so a rejection is caught, not an exit.
FLAGS="-g -O1 -std=c++17 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
ALL=(model_file token_shard debug_state train_state flags tokenizer_file gpt2_load gpt2_encode)
mkdir -p build/fuzz/artifacts

if [ "${1:-}" = corpus ]; then
    g++ -O1 -std=c++17 -o build/fuzz/make_corpus dev/fuzz/make_corpus.cpp -lpcre2-8
    rm -rf dev/fuzz/corpus
    ./build/fuzz/make_corpus
    find dev/fuzz/corpus -type f | sort | xargs ls -l
    exit 0
fi

secs=${1:-10}
[ $# -gt 0 ] && shift
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ALL[@]}")

# The flag parser's dictionary: every string literal of the flag table and the variant names (flag names, choices).
grep -oh '"[a-z0-9][a-z0-9._-]*"\|"--[a-z0-9-]*"' common/flags.h common/config.h attention_variants.cuh | sort -u >build/fuzz/flags.dict
echo '"\x00"' >>build/fuzz/flags.dict

printf "%-16s %8s %12s %10s  %s\n" harness seconds executions "exec/s" result
status=0
for n in "${names[@]}"; do
    src=dev/fuzz/fuzz_$n.cpp
    [ -f "$src" ] || { echo "error: no harness $src (one of: ${ALL[*]})" >&2; exit 1; }
    libs=""
    case $n in gpt2_*) libs=-lpcre2-8 ;; esac
    if ! $CXX $FLAGS -o build/fuzz/fuzz_$n "$src" $libs 2>build/fuzz/$n.build.log; then
        echo "error: building $src failed (build/fuzz/$n.build.log):" >&2
        tail -20 build/fuzz/$n.build.log >&2
        exit 1
    fi
    mkdir -p build/fuzz/corpus/$n
    dict=""
    [ "$n" = flags ] && dict=-dict=build/fuzz/flags.dict
    start=$(date +%s)
    if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1 \
        ./build/fuzz/fuzz_$n -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix=build/fuzz/artifacts/$n- $dict build/fuzz/corpus/$n dev/fuzz/corpus/$n \
        >build/fuzz/$n.log 2>&1; then
        result=ok
    else
        result="FINDING: see build/fuzz/$n.log and build/fuzz/artifacts/$n-*"
        status=1
    fi
    took=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' build/fuzz/$n.log | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' build/fuzz/$n.log | tail -1)
    printf "%-16s %8s %12s %10s  %s\n" "$n" "$took" "${execs:-?}" "${rate:-?}" "$result"
    if [ $status -ne 0 ]; then
        grep -m1 -A12 "ERROR\|runtime error\|deadly signal\|timeout\|out-of-memory" build/fuzz/$n.log >&2 || tail -20 build/fuzz/$n.log >&2
        exit 1
    fi
done
