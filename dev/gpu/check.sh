#!/bin/bash
# dev/gpu/check.sh: the one prepared GPU session for sinkscope, under 7 minutes on one H100/H200-class GPU: its
# timeouts sum to 420 s (the table below), so a hung step cannot take the session's device time.
#
# What it does, on a machine with an NVIDIA GPU, from the repository root (each step's time limit in seconds):
#    1. (95) the tests of make test that need a GPU (test/test_gpu.cpp, tag [device]; the rest ran where the bundle
#       was built): both trainers over eight model/attention variants must agree, train_gpt must pass --check-state
#       on every PyTorch fixture and --check-fast over ten variants, and its fast engine must repeat its bits run to
#       run and resume bit for bit. The tests start their processes up to 8 at a time;
#    2. (24) a side-by-side run of the default model on the Brown data: train_gpt and train_gpt_cpu, the same flags,
#       and their losses, tokens/s and a sample, from their logs;  3. (8) sampling from the GPU checkpoint;
#    4. (30) the attention forward ladder (dev/cuda/attention_forward.cu) over the row maps, slots and masks: each
#       version's error against the CPU row form, its time, TFLOP/s and share of the card's fp32 roofline
#       (common/roofline.h) at B 2 x 12 heads of 64 x T 1024;
#       (16) the matmul ladder (dev/cuda/matmul.cu): the exact kernels bit for bit, cuBLAS, their TFLOP/s and share;
#       (30) the attention backward ladder (dev/cuda/attention_backward.cu) over the same settings at B 2;
#       (28) both ladders' version 2 at T 2048 (B 1) for the six row maps;
#    5. (40) --check-fast on the GPT-2 124M shape (B 4 x T 256) in each precision: the fast engine against the exact
#       one; and fp32 again with SK_CUBLASLT=0, a control for the epilogues (kernels/matmul_cublas.cuh); the four side
#       by side (each first sets up GPT-2 on the host: 12 s on a 2-core development machine);
#    6. (62) GPT-2 124M on Brown: tokens/s and model memory of the fast engine (bf16, B 16 x T 1024, the sink metrics
#       every 3 steps on the host thread and their share of training time), of the exact engine (B 1 x T 1024), and
#       PyTorch's on the same GPU (dev/gpu/torch_gpt2.py: bf16 autocast, SDPA, fused AdamW, B 16 x T 1024), the ratio;
#    7. (17) llama-60m (the paper's model) at T 2048, bf16, B 4: tokens/s, model memory, minutes per 1B tokens;
#    8. (40) the exact engines of both trainers on GPT-2 124M at B 1 x T 128, 2 steps, side by side: the models
#       compared with cmp, and the training states' numbers (their saved flags differ by --out);
#    9. (30) compute-sanitizer memcheck over a two-step toy run of each engine (skipped, and said, where the
#       machine has no compute-sanitizer).
# Every figure also goes to $OUT/summary.md, one table (the results file). It uses the binaries of `make gpu-bundle`
# (built where the tools are: nvcc, PCRE2, Catch2) from build/gpu/, so the GPU machine needs only its driver and
# cuBLAS: the CUDA toolkit's (found under /usr/local/cuda* when the loader does not know it) or the system's.
# Results go to $OUT (or ./gpu_check_out): six files (this log, summary.md, both trainers' console output and
# log.jsonl of step 2); the run directories, with their checkpoints, stay in /tmp.
# How to run it through the device tool: make gpu-bundle data data-brown-gpt2 here, then run
#   bash dev/gpu/check.sh          with carry: ["build/gpu", "data/brown", "data/brown_gpt2"]
# The GPT-2-vocabulary runs (GPT-2 124M, llama-60m) read the GPT-2 tokens of data/brown_gpt2 where it is there, else
# the byte-level data/brown (the same tokens/s; losses that are not GPT-2's, and a warning).
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
SUMMARY="$OUT/summary.md"
printf '| what | result |\n|---|---|\n' > "$SUMMARY"
row() { printf '| %s | %s |\n' "$1" "$2" >> "$SUMMARY"; echo "summary: $1: $2"; }
# the median of the numbers on stdin (shell and awk only: the device image has no bc)
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "none"}'; }
# the median tokens/s of a run's training steps, from its log
log_tps() { grep -o '"tok_per_s":[0-9.]*' "$1" 2>/dev/null | cut -d: -f2 | median; }
if [ -d build/gpu ]; then
    cp build/gpu/train_gpt build/gpu/train_gpt_cpu . && export LD_LIBRARY_PATH=$PWD/build/gpu/lib:${LD_LIBRARY_PATH:-}
    TESTS=build/gpu/run_tests
else
    TESTS=build/test/run_tests
fi
nvidia-smi -L || { echo "no GPU: nothing to check"; exit 1; }
row "GPU" "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
status=0
# cuBLAS: where the loader does not find it, the CUDA toolkit's copy
if ldd ./train_gpt 2>&1 | grep -q "libcublas.*not found"; then
    for d in /usr/local/cuda*/lib64 /usr/local/cuda*/lib /usr/local/cuda*/targets/x86_64-linux/lib; do
        [ -e "$d/libcublasLt.so.13" ] && { export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; echo "cuBLAS from $d"; break; }
    done
fi
# every shared library the binaries need must resolve here
for b in ./train_gpt ./train_gpt_cpu "$TESTS"; do
    missing=$(ldd "$b" 2>&1 | grep "not found")
    [ -z "$missing" ] || { echo "$b: missing libraries: $missing"; status=1; }
done

RUNS=$(mktemp -d /tmp/sinkscope_check.XXXXXX)  # run directories and each step's output
GPT2_DATA=""  # the data flags of the GPT-2-vocabulary runs (word-split where used)
if [ -f data/brown_gpt2/brown_train.bin ]; then
    GPT2_DATA="--train data/brown_gpt2/brown_train.bin --val data/brown_gpt2/brown_val.bin"
fi

echo "== 1. GPU tests (test/test_gpu.cpp, [device])"
SK_GPU_BUILD=required timeout 95 "$TESTS" "[device]" --durations yes > "$RUNS/tests.txt" 2>&1
rc=$?
cat "$RUNS/tests.txt"
row "GPU tests ([device]: exact CPU = GPU bits on 8 variants, --check-state, --check-fast, repeat and resume)" \
    "exit $rc: $(grep -E "^(All tests passed|test cases:)" "$RUNS/tests.txt" | tail -1)"
[ $rc -eq 0 ] || status=1

echo "== 2. default model on Brown, 40 steps, both trainers"
steps=40
for t in train_gpt train_gpt_cpu; do
    start=$(date +%s%N)
    timeout 12 ./$t --steps $steps --val-every 20 --sink-every 20 --sample-every 20 --out "$RUNS/$t" > "$OUT/$t.txt" || status=1
    cp "$RUNS/$t/log.jsonl" "$OUT/$t.log.jsonl" 2>/dev/null
    end=$(date +%s%N)
    echo "$t: $(( (end - start) / 1000000 )) ms wall; last lines:"
    tail -4 "$OUT/$t.txt"
done
for t in train_gpt train_gpt_cpu; do
    echo "$t losses: $(grep -o '"loss":[0-9.]*' "$RUNS/$t/log.jsonl" | tail -3 | tr '\n' ' ')"
    row "default model on Brown, $t: tok/s (median of steps), last loss" \
        "$(log_tps "$RUNS/$t/log.jsonl"), $(grep -o '"loss":[0-9.]*' "$RUNS/$t/log.jsonl" | tail -1 | cut -d: -f2)"
done

echo "== 3. sampling from the GPU checkpoint"
timeout 8 ./train_gpt --load "$RUNS/train_gpt/model_$(printf %08d $steps).bin" --sample --prompt "The " --sample-len 48 || status=1

# A ladder of dev/cuda (build/gpu/dev_cuda/NAME, else build/dev_cuda/NAME).
ladder() { [ -x "build/gpu/dev_cuda/$1" ] && echo "build/gpu/dev_cuda/$1" || echo "build/dev_cuda/$1"; }
ROW_MAPS=("--attn softmax" "--attn sigmoid" "--attn elu1 --attn-norm sum" "--attn linear" "--attn softpick"
          "--attn clipped")
SETTINGS=("${ROW_MAPS[@]}" "--attn sigmoid --attn-norm sum" "--slot kv" "--slot logit" "--slot zero"
          "--mask window --mask-param 128" "--mask prefix --mask-param 64")
# ladder name, B, T, time limit, output file, extra flags, then the settings: each setting's output, one after the
# other, into the file and the log
run_ladder() {
    local name=$1 B=$2 T=$3 limit=$4 file=$5 extra=$6
    shift 6
    timeout "$limit" bash -c 'bin=$1; B=$2; T=$3; extra=$4; shift 4; for v in "$@"; do
        $bin $v -B $B --heads 12 -T $T $extra || failed=1; done; exit ${failed:-0}' _ "$(ladder "$name")" "$B" "$T" \
        "$extra" "$@" > "$file" 2>&1 || status=1
    cat "$file"
}
# From a ladder's output on stdin: "flags: TFLOP/s ok|FAIL share-of-the-fp32-roofline" of version 2 for each setting
# (its header's flags)
version2_tflops() {
    awk '/^attention (forward|backward)/ { sub(/^[^-]*/, ""); sub(/, B [0-9]+.*/, ""); flags = $0 }
         /^version 2:/ { for (i = 1; i < NF; i++) if ($(i + 1) == "TFLOP/s")
                             print flags ": " $i " " $3 " " ($(i + 2) ~ /%$/ ? $(i + 2) : "-") }'
}
# one summary row per setting: forward and backward TFLOP/s of version 2 (with the check's verdict and the share of
# the fp32 roofline), and forward+backward = 14 / (4/f + 10/b) (the ladders count 4 and 10 B NH hs flops per
# visible pair)
attention_rows() {
    local T=$1 fwd=$2 bwd=$3
    while IFS= read -r line; do
        key=${line%%: *}
        f=$(echo "${line#*: }" | cut -d' ' -f1)
        bl=$(grep -F -- "$key: " "$bwd" | head -1)
        b=$(echo "${bl##*: }" | cut -d' ' -f1)
        both=$(awk -v f="$f" -v b="${b:-0}" 'BEGIN { if (f + 0 > 0 && b + 0 > 0) printf "%.1f", 14 / (4 / f + 10 / b); else print "-" }')
        row "attention T $T, version 2, $key" "forward ${f} TFLOP/s ($(echo "${line##*: }" | cut -d' ' -f2,3)), \
backward ${b:--} TFLOP/s ($(echo "${bl##*: }" | cut -d' ' -f2,3)), both ${both}"
    done < "$fwd"
}
echo "== 4. attention forward ladder (dev/cuda/attention_forward.cu), B 2, 12 heads of 64, T 1024"
run_ladder attention_forward 2 1024 30 "$RUNS/fwd1024.txt" "" "${SETTINGS[@]}"
echo "== 4b. matmul ladder (dev/cuda/matmul.cu): exact by element, exact tiled, cuBLAS, GPT-2 124M shapes"
timeout 16 "$(ladder matmul)" > "$RUNS/matmul.txt" 2>&1 || status=1
cat "$RUNS/matmul.txt"
echo "== 4c. attention backward ladder (dev/cuda/attention_backward.cu), B 2, 12 heads of 64, T 1024"
run_ladder attention_backward 2 1024 30 "$RUNS/bwd1024.txt" "" "${SETTINGS[@]}"
echo "== 4d. both attention ladders' version 2 at T 2048, B 1, the six row maps"
run_ladder attention_forward 1 2048 12 "$RUNS/fwd2048.txt" "--version 2" "${ROW_MAPS[@]}"
run_ladder attention_backward 1 2048 16 "$RUNS/bwd2048.txt" "--version 2" "${ROW_MAPS[@]}"
for T in 1024 2048; do
    version2_tflops < "$RUNS/fwd$T.txt" > "$RUNS/fwd$T.v2"
    version2_tflops < "$RUNS/bwd$T.txt" > "$RUNS/bwd$T.v2"
    attention_rows $T "$RUNS/fwd$T.v2" "$RUNS/bwd$T.v2"
done
row "the roofline the ladders set their times against (common/roofline.h)" \
    "$(grep -h -m1 '^roofline of' "$RUNS/fwd1024.txt" "$RUNS/matmul.txt" | head -1 | sed 's/^roofline of //')"
row "matmul ladder (GPT-2 shapes): TFLOP/s of version 1 (exact, by element), 2 (exact, tiled), 3 (cuBLAS fp32), \
and the share of the fp32 roofline" \
    "$(awk '/^[a-z-]+: M / {shape = $1} /^ *version [0-9]:/ {for (i = 1; i < NF; i++) if ($(i + 1) == "TFLOP/s")
        printf "%s v%s %s %s %s; ", shape, substr($2, 1, 1), $i, $3, ($(i + 2) ~ /%$/ ? $(i + 2) : "-")}' "$RUNS/matmul.txt")"

echo "== 5. --check-fast, GPT-2 124M shape, B 4 x T 256, each precision, and fp32 with SK_CUBLASLT=0 (every product"
echo "      through cublasGemmEx: a control for the epilogues), the four side by side"
pids=()
for p in fp32 tf32 bf16 nolt; do
    lt=1 prec=$p
    if [ $p = nolt ]; then lt=0 prec=fp32; fi
    SK_CUBLASLT=$lt timeout 40 ./train_gpt --preset gpt2 $GPT2_DATA --check-fast --precision $prec --batch 4 \
        --seq-len 256 --probe-seqs 4 --probe-len 256 > "$RUNS/check_fast_$p.txt" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for p in fp32 tf32 bf16 nolt; do
    echo "-- $p"
    grep -E "check-fast|FAIL|OK|logits|qkvw|fcb|fcprojb|curve|alpha_1|^note|rror" "$RUNS/check_fast_$p.txt"
    what="--check-fast $p (GPT-2 shape, B 4 x T 256)"
    if [ $p = nolt ]; then what="--check-fast fp32, SK_CUBLASLT=0"; fi
    row "$what" "$(grep -E "^(OK|FAIL)" "$RUNS/check_fast_$p.txt" | tail -1)"
done

# A training run on Brown: name, time limit, flags. Its console to $RUNS/NAME.txt; its figures to the summary.
timed_run() {
    local name=$1 limit=$2
    shift 2
    local dir="$RUNS/$name"
    timeout "$limit" ./train_gpt "$@" --val-every 0 --val-batches 1 --sample-len 0 --save-every 0 --out "$dir" \
        > "$dir.txt" 2>&1 || { status=1; tail -3 "$dir.txt"; }
    head -1 "$dir.txt"
    tps=$(log_tps "$dir/log.jsonl")
    row "$name: tok/s (median of steps), MFU (last step line), model memory, sink metrics' share" \
        "$tps, $(grep -o "[0-9.]*% MFU" "$dir.txt" | tail -1), $(grep -o "model memory at most [0-9.]* GiB" "$dir.txt" | sed 's/model memory at most //'), $(grep -o "sink metrics [0-9.]*% of training time" "$dir.txt" | sed 's/sink metrics //')"
}
echo "== 6. GPT-2 124M shape on Brown: the fast engine (bf16, B 16 x T 1024), the exact engine (B 1 x T 1024), PyTorch"
timed_run gpt2_fast 20 --preset gpt2 $GPT2_DATA --engine fast --precision bf16 --batch 16 --seq-len 1024 --steps 7 \
    --sink-every 3
fast_tps=$tps
timed_run gpt2_exact 20 --preset gpt2 $GPT2_DATA --engine exact --batch 1 --seq-len 1024 --steps 2 --sink-every 0 \
    --probe-seqs 4
PY=python3  # the one with torch: the image's, or Debian's
$PY -c "import torch" 2>/dev/null || PY=/usr/bin/python3
torch_line=$(timeout 22 $PY dev/gpu/torch_gpt2.py --batch 16 --seq-len 1024 --steps 12) || status=1
echo "PyTorch: $torch_line"
torch_tps=$(echo "$torch_line" | grep -o '"tok_per_s": [0-9.]*' | cut -d' ' -f2)
row "PyTorch GPT-2 124M (bf16 autocast, SDPA, fused AdamW, B 16 x T 1024): tok/s, peak GiB" \
    "${torch_tps:-none}, $(echo "$torch_line" | grep -o '"peak_gib": [0-9.]*' | cut -d' ' -f2)"
row "fast engine / PyTorch tokens/s" \
    "$(awk -v f="${fast_tps:-0}" -v t="${torch_tps:-0}" 'BEGIN { if (t + 0 > 0 && f + 0 > 0) printf "%.3f", f / t; else print "-" }')"

echo "== 7. llama-60m (the paper's 60M model) at T 2048, bf16, B 4"
timed_run llama60m_fast 17 --preset llama-60m $GPT2_DATA --engine fast --precision bf16 --batch 4 --seq-len 2048 \
    --steps 6 --sink-every 0 --probe-seqs 4
row "llama-60m: minutes per 1B tokens at that rate" \
    "$(awk -v t="${tps:-0}" 'BEGIN { if (t + 0 > 0) printf "%.0f", 1e9 / t / 60; else print "-" }')"

echo "== 8. GPT-2 124M, B 1 x T 128, 2 steps: train_gpt --exact and train_gpt_cpu side by side, the models compared"
echo "      with cmp, the training states by their numbers"
same="not compared"
pids=()
for t in train_gpt train_gpt_cpu; do
    timeout 40 ./$t --preset gpt2 $GPT2_DATA --engine exact --batch 1 --seq-len 128 --steps 2 --val-every 0 \
        --sink-every 0 --probe-seqs 2 --val-batches 1 --sample-len 0 --save-every 0 --out "$RUNS/g2_$t" \
        > "$RUNS/g2_$t.txt" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for t in train_gpt train_gpt_cpu; do tail -2 "$RUNS/g2_$t.txt"; done
# A training state's numbers: header[2..15] (step, data position, random state, the parameter count n at byte 56) and
# AdamW's moments (8 n bytes from byte 1024), not the saved flags at its end, which differ by --out
state_numbers() {
    local n
    n=$(od -An -t u8 -j 56 -N 8 "$1" | tr -d ' ')
    head -c 64 "$1" | tail -c 56
    tail -c +1025 "$1" | head -c $((8 * n))
}
if [ -f "$RUNS/g2_train_gpt/model_00000002.bin" ] && [ -f "$RUNS/g2_train_gpt_cpu/model_00000002.bin" ]; then
    same="model and training state's numbers identical"
    cmp "$RUNS/g2_train_gpt/model_00000002.bin" "$RUNS/g2_train_gpt_cpu/model_00000002.bin" ||
        { same="model_00000002.bin differs"; status=1; }
    cmp <(state_numbers "$RUNS/g2_train_gpt/state_00000002.bin") \
        <(state_numbers "$RUNS/g2_train_gpt_cpu/state_00000002.bin") ||
        { same="$same; state_00000002.bin's numbers differ"; status=1; }
fi
row "GPT-2 124M exact, B 1 x T 128, 2 steps: GPU against CPU checkpoints (model: cmp; training state: its numbers)" "$same"
rm -rf "$RUNS"/g2_*

echo "== 9. compute-sanitizer memcheck, a two-step toy run of each engine"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SAN" ]; then
    for e in fast exact; do
        timeout 15 "$SAN" --tool memcheck --error-exitcode 9 ./train_gpt --engine $e --layers 2 --channels 64 \
            --heads 4 --ffn-hidden 128 --batch 2 --seq-len 32 --steps 2 --val-every 2 --val-batches 1 --sink-every 2 \
            --probe-seqs 2 --probe-len 32 --sample-len 8 --out "$RUNS/san_$e" > "$RUNS/san_$e.txt" 2>&1
        rc=$?
        tail -2 "$RUNS/san_$e.txt"
        row "compute-sanitizer memcheck, $e engine, 2 toy steps" \
            "exit $rc, $(grep -o "ERROR SUMMARY: [0-9]* error[s]*" "$RUNS/san_$e.txt" | tail -1)"
        [ $rc -eq 0 ] || status=1
    done
else
    row "compute-sanitizer memcheck" "not run: no compute-sanitizer on this machine"
fi
nvidia-smi --query-gpu=memory.used,memory.total --format=csv
row "exit status of the check" "$status"
echo "== summary ($SUMMARY)"
cat "$SUMMARY"
exit $status
