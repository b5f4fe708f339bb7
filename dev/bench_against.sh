#!/bin/bash
# dev/bench_against.sh REV [ROUNDS] [STEPS]: the CPU trainer of this tree against the one of commit REV, side by side.
#
# Builds REV's train_gpt_cpu in a temporary worktree, then alternates the two binaries ROUNDS times (default 6) on the
# default run for STEPS steps (default 40; no validation, sink metrics or samples) and prints each wall time, the
# medians and their ratio, and each run's final loss. Alternating keeps the machine's load fair to both; read the
# ratio, not the seconds. Run from the repository root after `make train_gpt_cpu data`.
set -euo pipefail
rev=${1:?usage: dev/bench_against.sh REV [ROUNDS] [STEPS]}
rounds=${2:-6}
steps=${3:-40}
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/src" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
git worktree add -q --detach "$tmp/src" "$rev"
make -s -C "$tmp/src" train_gpt_cpu >/dev/null
cp "$tmp/src/train_gpt_cpu" "$tmp/base"
for r in $(seq "$rounds"); do
    for bin in "$tmp/base" ./train_gpt_cpu; do
        rm -rf "$tmp/run"
        start=$(date +%s.%N)
        "$bin" --steps "$steps" --val-every 0 --sink-every 0 --sample-len 0 --out "$tmp/run" >/dev/null
        end=$(date +%s.%N)
        name=$([ "$bin" = ./train_gpt_cpu ] && echo this || echo "$rev")
        echo "$name $(echo "$end - $start" | bc) $(grep -o '"loss":[0-9.]*' "$tmp/run/log.jsonl" | tail -1)"
    done
done | tee "$tmp/times"
median() { grep "^$1 " "$tmp/times" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
m_base=$(median "$rev"); m_this=$(median this)
echo "median seconds: $rev $m_base, this tree $m_this, ratio this/$rev $(echo "scale=3; $m_this / $m_base" | bc)"
