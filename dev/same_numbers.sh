#!/bin/bash
# dev/same_numbers.sh [REV]: does this tree compute the same numbers as commit REV? The check for a refactor or a
# speed-up, which must change no bit.
#
# Fingerprint of a trainer binary: md5s of
#   - the default run (`make train`: ./train_gpt_cpu --out DIR, 300 steps): its checkpoint, the numbers of its training
#     state (step, data position, random state, AdamW moments), and its log.jsonl without what is not a number of the
#     run (timings, the run id, the config record);
#   - --check-state on every fixture pair in test/fixtures, and --eval-sink of every fixture model on the probe (its
#     JSON line);
#   - short runs (6 steps, checkpoints at 3 and 6, validation, sink metrics and samples every 3) of variants that
#     together take every branch of the model: post-norm, every FFN and position kind, biases and tying, every row map
#     and normaliser, feature maps, slots, gates, masks, the sink token, data manipulations, accumulation; and the
#     fast engine (--engine fast) at each --precision, bf16 with the FFN kinds, tying, gates and slots.
# Without REV it prints the fingerprint of ./train_gpt_cpu. With REV it builds REV's trainer in a temporary worktree,
# fingerprints both binaries on this tree's data and fixtures, and prints the lines that differ (exit 1) or "same".
# Run from the repository root after `make train_gpt_cpu data`. About 4 minutes per binary on 2 cores.
set -euo pipefail
fingerprint() {  # $1 = binary
    local bin=$1 tmp
    tmp=$(mktemp -d)
    # the log without what differs by design from run to run and from version to version: timings, the run's id, the
    # config record (the flags), console-only records
    strip_times() { grep -v '"type":"config"' "$1" |
        sed -E 's/,"(ms|tok_per_s|flops_per_s|mfu|train_ms|sink_ms|sink_overhead|run|threads)":[^,}]*//g' | md5sum | cut -c1-32; }
    # a checkpoint's numbers: the model file, and of the training state its step, data position, random state and
    # AdamW moments (header[2..15] and the moments; not the version, checksums or saved flags)
    numbers() { for f in "$@"; do case "$f" in
        *state_*) python3 -c 'import sys,struct; b=open(sys.argv[1],"rb").read(); n=struct.unpack_from("<Q",b,56)[0]; sys.stdout.buffer.write(b[8:64]+b[1024:1024+8*n])' "$f" ;;
        *) cat "$f" ;; esac; done | md5sum | cut -c1-32; }
    "$bin" --out "$tmp/default" >/dev/null
    echo "default model $(md5sum < "$tmp/default/model_00000300.bin" | cut -c1-32)"
    echo "default state $(numbers "$tmp/default/state_00000300.bin")"
    echo "default log $(strip_times "$tmp/default/log.jsonl")"
    for m in test/fixtures/*_model.bin; do
        name=$(basename "$m" _model.bin)
        for s in test/fixtures/"$name"_state*.bin; do
            [ -f "$s" ] && echo "check-state $(basename "$s") $("$bin" --load "$m" --check-state "$s" 2>&1 | md5sum | cut -c1-32)"
        done
        echo "eval-sink $name $("$bin" --load "$m" --eval-sink --probe test/fixtures/probe.bin --probe-seqs 5 \
            --probe-len 12 2>&1 | grep '^{' | sed 's/"checkpoint":"[^"]*",//' | md5sum | cut -c1-32)"
    done
    local i=0
    while read -r flags; do
        [ -z "$flags" ] && continue
        i=$((i + 1))
        # shellcheck disable=SC2086
        "$bin" $flags --batch 4 --seq-len 32 --max-seq-len 48 --steps 6 --warmup 2 --val-every 3 --val-batches 2 \
            --sink-every 3 --probe-seqs 6 --probe-len 32 --sample-every 3 --sample-len 8 --save-every 3 \
            --out "$tmp/v$i" >/dev/null
        echo "variant '$flags' $(numbers "$tmp/v$i"/model_*.bin "$tmp/v$i"/state_*.bin) $(strip_times "$tmp/v$i/log.jsonl")"
    done <<'EOF'
--preset tiny
--placement post --norm layernorm --ffn gelu --pos learned --bias 1 --tied 1 --init gpt2
--placement post --ffn relu --pos sinusoidal --total-batch 256
--ffn reglu --pos alibi --bias 1
--ffn geglu --pos none --schedule cosine --wd-exempt 1
--ffn swish --schedule linear --min-lr-frac 0.1
--attn sigmoid --sigmoid-bias auto
--attn sigmoid --attn-norm sum --fixed-token 0 --fixed-pos 0
--attn elu1 --attn-norm clamp
--attn linear --phi elu1 --attn-norm sum
--attn linear --phi mlp --attn-norm clamp
--attn softpick --random-from 0 --random-to 2
--attn clipped --clip-alpha 2
--row-mass 2
--slot kv --mask window --mask-param 8
--slot kv --vstar zero --slot-shared 1
--slot kv --vstar fixed --vstar-value 0.5
--slot logit --value-bias 1
--slot zero --gate headwise
--gate elementwise --mask prefix --mask-param 5
--sink-token 1 --mask prefix --mask-param 3
--value-bias 1 --slot-shared 1 --data-fraction 0.5
--engine fast
--engine fast --precision tf32 --placement post --norm layernorm --ffn gelu --bias 1
--engine fast --precision bf16
--engine fast --precision bf16 --ffn gelu --bias 1 --tied 1 --pos learned
--engine fast --precision bf16 --ffn swiglu --gate elementwise --slot kv
--engine fast --precision bf16 --placement post --ffn geglu --attn sigmoid
EOF
    rm -rf "$tmp"
}

if [ $# -eq 0 ]; then
    fingerprint ./train_gpt_cpu
    exit 0
fi
rev=$1
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/src" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
git worktree add -q --detach "$tmp/src" "$rev"
make -s -C "$tmp/src" train_gpt_cpu >/dev/null
fingerprint "$tmp/src/train_gpt_cpu" > "$tmp/base.txt"
fingerprint ./train_gpt_cpu > "$tmp/this.txt"
echo "$(wc -l < "$tmp/this.txt") fingerprint lines"
if diff "$tmp/base.txt" "$tmp/this.txt"; then echo "same numbers as $rev"; else echo "DIFFERENT from $rev"; exit 1; fi
