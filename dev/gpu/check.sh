#!/bin/bash
# dev/gpu/check.sh: the one prepared GPU session for sinkscope, under 7 minutes on one H100/H200-class GPU: its
# timeouts sum to 390 s, so a hung step cannot take the session's device time.
#
# What it does, on a machine with an NVIDIA GPU, from the repository root:
#   1. the GPU tests of make test: both trainers over eight model/attention variants must agree, and train_gpt must
#      pass --check-state on every PyTorch fixture (test/test_gpu.cpp);
#   2. a side-by-side run of the default model on the Brown data: train_gpt and train_gpt_cpu, the same flags, and
#      their losses, tokens/s and a sample, from their logs;
#   3. text sampling from the GPU checkpoint with a prompt;
#   4. the attention forward ladder (dev/cuda/attention_forward.cu) over the row maps, slots and masks: each version's
#      error against the CPU row form, its time and TFLOP/s at B 4 x 12 heads of 64 x T 1024.
# It uses the binaries of `make gpu-bundle` (built where the tools are: nvcc, PCRE2, Catch2) from build/gpu/, so the
# GPU machine needs only its driver. Results go to $OUT (or ./gpu_check_out): five files (this log, both trainers'
# console output and log.jsonl); the run directories, with their checkpoints, stay in /tmp.
# How to run it through the device tool: make gpu-bundle data here, then run
#   bash dev/gpu/check.sh          with carry: ["build/gpu", "data/brown"]
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
if [ -d build/gpu ]; then
    cp build/gpu/train_gpt build/gpu/train_gpt_cpu . && export LD_LIBRARY_PATH=$PWD/build/gpu/lib:${LD_LIBRARY_PATH:-}
    TESTS=build/gpu/run_tests
else
    TESTS=build/test/run_tests
fi
nvidia-smi -L || { echo "no GPU: nothing to check"; exit 1; }
status=0

echo "== 1. GPU tests (test/test_gpu.cpp)"
SK_GPU_BUILD=required timeout 150 "$TESTS" "[gpu]" || status=1

echo "== 2. default model on Brown, 60 steps, both trainers"
steps=60
RUNS=$(mktemp -d /tmp/sinkscope_check.XXXXXX)
for t in train_gpt train_gpt_cpu; do
    start=$(date +%s%N)
    timeout 60 ./$t --steps $steps --val-every 30 --sink-every 30 --sample-every 30 --out "$RUNS/$t" > "$OUT/$t.txt" || status=1
    cp "$RUNS/$t/log.jsonl" "$OUT/$t.log.jsonl" 2>/dev/null
    end=$(date +%s%N)
    echo "$t: $(( (end - start) / 1000000 )) ms wall; last lines:"  # shell arithmetic: the device image has no bc
    tail -4 "$OUT/$t.txt"
done
for t in train_gpt train_gpt_cpu; do
    echo "$t losses: $(grep -o '"loss":[0-9.]*' "$RUNS/$t/log.jsonl" | tail -3 | tr '\n' ' ')"
    echo "$t tok/s (median of steps): $(grep -o '"tok_per_s":[0-9.]*' "$RUNS/$t/log.jsonl" | cut -d: -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done

echo "== 3. sampling from the GPU checkpoint"
timeout 30 ./train_gpt --load "$RUNS/train_gpt/model_$(printf %08d $steps).bin" --sample --prompt "The " --sample-len 48 || status=1
echo "== 4. attention forward ladder (dev/cuda/attention_forward.cu), B 4, 12 heads of 64, T 1024"
LADDER=build/gpu/dev_cuda/attention_forward
[ -x "$LADDER" ] || LADDER=build/dev_cuda/attention_forward
timeout 90 bash -c '
for v in "--attn softmax" "--attn sigmoid" "--attn sigmoid --attn-norm sum" "--attn elu1 --attn-norm sum" \
         "--attn linear" "--attn softpick" "--attn clipped" "--slot kv" "--slot logit" "--slot zero" \
         "--mask window --mask-param 128" "--mask prefix --mask-param 64"; do
    '"$LADDER"' $v -B 4 --heads 12 -T 1024 || failed=1
done
exit ${failed:-0}' || status=1
echo "exit status $status"
exit $status
