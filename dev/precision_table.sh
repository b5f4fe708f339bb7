#!/bin/bash
# dev/precision_table.sh [BINARY]: what rounding the matmul inputs to tf32 and bf16 does to each attention design,
# before any GPU: --check-fast of the fast engine (its matmul inputs rounded as a tensor core rounds them) against the
# exact engine, on the default model and data (B 64 x T 64), for variants across the catalogue. Prints a markdown
# table: per precision, the largest relative L2 error of any gradient tensor, and --check-fast's verdict at that
# precision's allowance, "(sensitive)" where the model's own sensitivity to rounding set some allowance (docs/gpu.md
# has the table and what it means).
# BINARY: ./train_gpt_cpu (default; the CPU's emulation), or ./train_gpt on a GPU (cuBLAS's own rounding).
# Run from the repository root after `make train_gpt_cpu data`. About 80 s on 2 cores.
set -uo pipefail
bin=${1:-./train_gpt_cpu}
[ -x "$bin" ] || { echo "error: no $bin (make train_gpt_cpu)" >&2; exit 1; }
variants=("" "--attn sigmoid" "--attn elu1 --attn-norm sum" "--attn clipped" "--attn softpick"
          "--attn linear --attn-norm clamp" "--phi mlp" "--slot kv" "--gate elementwise" "--ffn relu"
          "--ffn gelu --norm layernorm")
echo "| variant | fp32 | tf32 | bf16 |"
echo "|---|---|---|---|"
for v in "${variants[@]}"; do
    row="| ${v:-default (softmax)} |"
    for p in fp32 tf32 bf16; do
        # shellcheck disable=SC2086  # the variant's flags split into words
        out=$("$bin" --check-fast --precision $p --engine fast $v 2>&1)
        rc=$?
        worst=$(printf '%s\n' "$out" | awk '$1 != "loss" && $1 != "logits" && $3 == "rel" && $4 == "L2" {
                    if ($5 + 0 > w) w = $5 + 0 } END { printf "%.1e", w }')
        verdict=$([ $rc -eq 0 ] && echo ok || echo FAIL)
        # passed or failed with the allowance of the exact engine's own sensitivity (docs/gpu.md)
        if printf '%s\n' "$out" | grep -q "exact engine's own change"; then verdict="$verdict (sensitive)"; fi
        row="$row $worst $verdict |"
    done
    echo "$row"
done
