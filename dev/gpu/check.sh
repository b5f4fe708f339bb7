#!/bin/bash
# dev/gpu/check.sh: the one prepared GPU session for sinkscope, under 7 minutes on one H100/H200-class GPU: its
# timeouts sum to 419 s, so a hung step cannot take the session's device time.
#
# What it does, on a machine with an NVIDIA GPU, from the repository root:
#   1. the GPU tests of make test: both trainers over eight model/attention variants must agree, and train_gpt must
#      pass --check-state on every PyTorch fixture (test/test_gpu.cpp);
#   2. a side-by-side run of the default model on the Brown data: train_gpt and train_gpt_cpu, the same flags, and
#      their losses, tokens/s and a sample, from their logs;
#   3. text sampling from the GPU checkpoint with a prompt;
#   4. the attention forward ladder (dev/cuda/attention_forward.cu) over the row maps, slots and masks: each version's
#      error against the CPU row form, its time and TFLOP/s at B 4 x 12 heads of 64 x T 1024;
#      then the matmul ladder (dev/cuda/matmul.cu): the exact kernels bit for bit, cuBLAS, their TFLOP/s;
#      then the attention backward ladder (dev/cuda/attention_backward.cu) over the same settings at B 2;
#   5. --check-fast on the GPT-2 124M shape (B 4 x T 256) in each precision: the fast engine against the exact one;
#      then fp32 again with SK_CUBLASLT=0, a control for the epilogues (kernels/matmul_cublas.cuh: the bias, the
#      GELU and its gradient, the bias gradient; fcb and fcprojb are the gradients the epilogues give);
#   6. the GPT-2 124M shape on Brown, the engines side by side: tokens/s and model memory of the fast engine (bf16,
#      B 8 x T 1024; with the sink metrics every 4 steps on the host thread, and their share of training time) and
#      of the exact engine (B 1 x T 1024), and PyTorch's on the same GPU (dev/gpu/torch_gpt2.py: bf16 autocast, SDPA,
#      fused AdamW, B 8 x T 1024), with the ratio.
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
# every shared library the binaries need must resolve here (cuBLAS comes with the CUDA toolkit or the driver image)
for b in ./train_gpt ./train_gpt_cpu "$TESTS"; do
    missing=$(ldd "$b" 2>&1 | grep "not found")
    [ -z "$missing" ] || { echo "$b: missing libraries: $missing"; status=1; }
done

echo "== 1. GPU tests (test/test_gpu.cpp)"
SK_GPU_BUILD=required timeout 130 "$TESTS" "[gpu]" || status=1

echo "== 2. default model on Brown, 60 steps, both trainers"
steps=60
RUNS=$(mktemp -d /tmp/sinkscope_check.XXXXXX)
for t in train_gpt train_gpt_cpu; do
    start=$(date +%s%N)
    timeout 30 ./$t --steps $steps --val-every 30 --sink-every 30 --sample-every 30 --out "$RUNS/$t" > "$OUT/$t.txt" || status=1
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
timeout 15 ./train_gpt --load "$RUNS/train_gpt/model_$(printf %08d $steps).bin" --sample --prompt "The " --sample-len 48 || status=1
# A ladder of dev/cuda (build/gpu/dev_cuda/NAME, else build/dev_cuda/NAME).
ladder() { [ -x "build/gpu/dev_cuda/$1" ] && echo "build/gpu/dev_cuda/$1" || echo "build/dev_cuda/$1"; }
# An attention ladder over the row maps, slots and masks, 12 heads of 64 at T 1024: ladder name, B, time limit.
attention_ladder() {
    timeout "$3" bash -c '
    for v in "--attn softmax" "--attn sigmoid" "--attn sigmoid --attn-norm sum" "--attn elu1 --attn-norm sum" \
             "--attn linear" "--attn softpick" "--attn clipped" "--slot kv" "--slot logit" "--slot zero" \
             "--mask window --mask-param 128" "--mask prefix --mask-param 64"; do
        '"$(ladder "$1")"' $v -B '"$2"' --heads 12 -T 1024 || failed=1
    done
    exit ${failed:-0}' || status=1
}
echo "== 4. attention forward ladder (dev/cuda/attention_forward.cu), B 4, 12 heads of 64, T 1024"
attention_ladder attention_forward 4 40
echo "== 4b. matmul ladder (dev/cuda/matmul.cu): exact by element, exact tiled, cuBLAS, GPT-2 124M shapes"
timeout 25 "$(ladder matmul)" || status=1
echo "== 4c. attention backward ladder (dev/cuda/attention_backward.cu), B 2, 12 heads of 64, T 1024"
attention_ladder attention_backward 2 40
echo "== 5. --check-fast, GPT-2 124M shape, B 4 x T 256, each precision"
for p in fp32 tf32 bf16; do
    timeout 10 ./train_gpt --preset gpt2 --check-fast --precision $p --batch 4 --seq-len 256 --probe-seqs 4 \
        --probe-len 256 | grep -E "check-fast|FAIL|OK|logits|qkvw|fcb|fcprojb|curve|alpha_1|^note" || status=1
done
echo "== 5b. the same at fp32 with SK_CUBLASLT=0 (every product through cublasGemmEx): a control for the epilogues"
SK_CUBLASLT=0 timeout 10 ./train_gpt --preset gpt2 --check-fast --precision fp32 --batch 4 --seq-len 256 \
    --probe-seqs 4 --probe-len 256 | grep -E "check-fast|FAIL|OK|logits|qkvw|fcb|fcprojb" || status=1
echo "== 6. GPT-2 124M shape on Brown: the fast engine (bf16, B 8 x T 1024), the exact engine (B 1 x T 1024), PyTorch"
# the fast run measures the sink metrics every 4 steps (100 x 64 probe, on the host thread): their share of training
for e in "fast --precision bf16 --batch 8 --steps 8 --sink-every 4" "exact --batch 1 --steps 2 --sink-every 0"; do
    dir="$RUNS/gpt2_${e%% *}"
    timeout 22 ./train_gpt --preset gpt2 --engine $e --seq-len 1024 --val-every 0 --sample-len 0 \
        --save-every 0 --out "$dir" > "$dir.txt" 2>&1 || { status=1; tail -3 "$dir.txt"; }
    head -1 "$dir.txt"
    grep -o "model memory at most [0-9.]* GiB" "$dir.txt"
    grep -o "sink metrics [0-9.]*% of training time" "$dir.txt"
    tps=$(grep -o '"tok_per_s":[0-9.]*' "$dir/log.jsonl" 2>/dev/null | cut -d: -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "engine $e: tok/s (median of steps): $tps"
    [ "${e%% *}" = fast ] && fast_tps=$tps
done
PY=python3  # the one with torch: the image's, or Debian's
$PY -c "import torch" 2>/dev/null || PY=/usr/bin/python3
torch_line=$(timeout 25 $PY dev/gpu/torch_gpt2.py --batch 8 --seq-len 1024 --steps 12) || status=1
echo "PyTorch: $torch_line"
torch_tps=$(echo "$torch_line" | grep -o '"tok_per_s": [0-9.]*' | cut -d' ' -f2)
awk -v f="${fast_tps:-0}" -v t="${torch_tps:-0}" 'BEGIN { if (t > 0) printf "fast engine / PyTorch tokens/s: %.3f\n", f / t }'
nvidia-smi --query-gpu=memory.used,memory.total --format=csv
echo "exit status $status"
exit $status
