#!/bin/bash
# dev/make_flag_docs.sh: prints docs/flags.md, the flag reference, from the trainer's own flag table (--help).
# Run as `make docs` after changing a flag; test/test_docs.cpp fails while docs/flags.md and --help differ.
set -euo pipefail
cat <<'MD'
# Flags

Both trainers take the same flags (`./train_gpt_cpu --help`, `./train_gpt --help`). A preset fills every model flag;
any flag overrides it. Every flag takes one value except the switches `--eval-sink` and `--sample`. Model flags
cannot be combined with `--load` or `--resume` (the checkpoint describes the model).

This page is generated from the flag table (`make docs`); a test fails when it differs from `--help`.

```text
MD
./train_gpt_cpu --help
cat <<'MD'
```

## Modes

- **Training** (the default): from scratch (preset and flags), from `--load MODEL` (its weights, a fresh optimizer),
  or `--resume DIR` (the latest checkpoint in DIR, or `--from-step N`: weights, AdamW moments, step, data position,
  random state, and the run's flags, which a flag given again overrides; [output.md](output.md)). A resumed run
  continues bit-identically to an uninterrupted one. Ctrl-C saves a checkpoint and says how to continue.
- `--load MODEL --check-state STATE`: one forward and backward pass on the debug state's batch, compared with its
  logits, loss and every gradient tensor (and the AdamW loss curve of a version-3 state); exit status 1 beyond
  tolerance. See [checking.md](checking.md).
- `--load MODEL --eval-sink [--probe SHARD --probe-seqs S --probe-len T --eps E]`: the sink metrics
  ([metrics.md](metrics.md)) of any checkpoint, llm.c's GPT-2 124M included, as a few lines and one JSON line
  (`--json`: the JSON line only). The probe defaults to the first shard of `--val`.
- `--load MODEL --sample [--prompt TEXT]`: generate `--sample-len` tokens and exit.

## Training details

AdamW with decoupled weight decay on all parameters by default (the paper; `--wd-exempt 1` spares norms, biases and
embeddings); linear warmup from lr/warmup to lr, then constant (the paper's released configs) or cosine/linear decay
to `lr * min-lr-frac` at `--steps`; global-norm clipping (`g *= clip/norm` when `norm > clip`); gradient accumulation
when `--total-batch` is a multiple of B x T above it. Validation: the mean loss of the first `--val-batches`
micro-batches of the validation windows, in file order (the same windows every time).

## Environment

Settings that change no number, read from the environment (a test fails when the sources read one this table lacks):

| variable | what it does |
|---|---|
| `SK_PROFILE=1` | where a step's time goes, by kind of kernel, at the end of a run ([speed.md](speed.md); the CPU trainer) |
| `SK_MEMORY_GIB=N` | the memory a run may use, below the machine's or the GPU's; a run that does not fit stops before it starts ([hostile.md](hostile.md)) |
| `SK_SINK_THREAD=1\|0\|auto` | the sink metrics on a host thread beside training; `auto` (or unset): on with a GPU, off on the CPU ([metrics.md](metrics.md)) |
| `SK_CUBLASLT=0` | the GPU's fast matmuls without cuBLASLt's epilogues (cublasGemmEx and passes of their own): a control ([gpu.md](gpu.md)) |
| `SK_SYNC=1` | the GPU synchronises after every launch, so a fault names its kernel ([gpu.md](gpu.md)) |
MD
