#!/bin/bash
# dev/gpu/dry_run.sh [--tests-only]: dev/gpu/check.sh rehearsed on a machine without a GPU, so that a lent GPU's few
# minutes are not spent on a fault of the script or of the GPU tests' harness.
#
# It copies what check.sh reads into a temporary directory, with ./train_gpt a copy of ./train_gpt_cpu (the same
# flags, files and logs) and a stand-in nvidia-smi on PATH that names a GPU. Then:
#   - the GPU tests (test_gpu.cpp, [device]) must pass: the CPU trainer agrees with itself, so any failure is the
#     harness's (a comparison of something that differs run to run, a path, the parallel start);
#   - with --top-k 3 (sampling) and then --beta2 0.99 (training) added to the copy's flags, the bit-for-bit test must
#     fail: its comparisons can see a difference;
#   - without --tests-only, check.sh itself runs (about 7 minutes): its steps, parsing and summary table. The GPU rows
#     stay empty (the ladders need a GPU, and the GPT-2 runs outlast their limits on a CPU).
# Needs ./train_gpt_cpu and build/test/run_tests (make test builds both), and data/brown (make data).
set -uo pipefail
cd "$(dirname "$0")/../.."
for f in train_gpt_cpu build/test/run_tests data/brown; do
    [ -e "$f" ] || { echo "dry_run.sh: $f is missing (make test data builds it)"; exit 1; }
done
dir=$(mktemp -d /tmp/sinkscope_dry.XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/build/test" "$dir/stub" "$dir/data"
cp -r dev test "$dir/"
cp -r data/brown "$dir/data/"
[ -d data/brown_gpt2 ] && cp -r data/brown_gpt2 "$dir/data/"
cp train_gpt_cpu "$dir/train_gpt_cpu"
cp train_gpt_cpu "$dir/train_gpt.real"
cp build/test/run_tests "$dir/build/test/"
[ -d build/dev_cuda ] && cp -r build/dev_cuda "$dir/build/"
cat > "$dir/stub/nvidia-smi" <<'EOF'
#!/bin/bash
# a stand-in for a dry run: names a GPU that is not there
case "${1:-}" in
    -L) echo "GPU 0: stand-in for a dry run (no GPU)";;
    *) echo "stand-in, 0.0, 0 MiB";;
esac
EOF
chmod +x "$dir/stub/nvidia-smi"
export PATH="$dir/stub:$PATH"
cd "$dir"
# ./train_gpt: the CPU trainer, with extra flags (a planted difference) or none
copy_with() { printf '#!/bin/bash\nexec %s/train_gpt.real "$@" %s\n' "$dir" "$1" > train_gpt; chmod +x train_gpt; }
status=0
copy_with ""
SK_GPU_BUILD=required build/test/run_tests "[device]" > tests.txt 2>&1
rc=$?
echo "GPU tests with ./train_gpt = the CPU trainer: exit $rc, $(grep -aE "^(All tests passed|test cases:)" tests.txt)"
[ $rc -eq 0 ] || { cat tests.txt; status=1; }
for planted in "--top-k 3" "--beta2 0.99"; do
    copy_with "$planted"
    build/test/run_tests "*bit for bit alike" > planted.txt 2>&1
    rc=$?
    echo "the same test with $planted added to ./train_gpt's flags: exit $rc (must fail), $(grep -aE \
        "^(All tests passed|test cases:)" planted.txt)"
    [ $rc -ne 0 ] || status=1
done
copy_with ""
if [ "${1:-}" != "--tests-only" ]; then
    OUT="$dir/out" bash dev/gpu/check.sh > check.txt 2>&1
    echo "check.sh: exit $? (1 is expected without a GPU); its summary:"
    cat "$dir/out/summary.md"
fi
echo "dry run: $([ $status -eq 0 ] && echo ok || echo FAILED)"
exit $status
