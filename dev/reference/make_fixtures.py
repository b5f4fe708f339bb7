"""Deterministic fixture generator (independent reference, written from the specification in README.md ("The model family", "File formats") only).

    /usr/bin/python3 dev/reference/make_fixtures.py [outdir]

Writes into test/fixtures/ (default):
  <name>_model.bin   model file (version 3 for gpt2, else version 4)
  <name>_state.bin   debug state version 3 (forward/backward on a B=2,T=8 batch + 10-step AdamW curve)
  gpt2_state_v2.bin  debug state version 2 (llm.c format) for the gpt2 config
  probe.bin          token shard (5*16+7 tokens) for eval-sink
  gpt2_sink.json, llama_sink.json   sink metrics on the first 5 windows of 16 probe tokens, eps 0.3
"""
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from formats import (Config, param_shapes, write_model, read_model, write_state, read_state,
                     write_shard, read_shard, DebugState, flatten_params, f32, num_params)
import model as ref

REPO = os.path.dirname(os.path.dirname(HERE))
OUTDIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "test", "fixtures")

B, T = 2, 8
BASE = dict(V=53, maxT=16, L=2, NH=4, C=16, F=24, norm_eps=1e-5)
TRAIN = dict(n_steps=10, lr=1e-2, beta1=0.9, beta2=0.95, adam_eps=1e-8, weight_decay=0.1, grad_clip=1.0)
PROBE_S, PROBE_T, PROBE_EPS = 5, 16, 0.3

# name -> (config overrides, qkvw init std)
CONFIGS = [
    ("gpt2", dict(norm="layernorm", placement="pre", ffn="gelu", positions="learned", tied=True, biases=True, F=64), 0.6),
    ("llama", dict(norm="rmsnorm", placement="pre", ffn="swiglu", positions="rope", rope_base=10000.0, tied=False, biases=False), 0.6),
    ("post_relu", dict(norm="layernorm", placement="post", ffn="relu", positions="sinusoidal", tied=True, biases=True), 0.1),
    ("alibi_geglu", dict(norm="rmsnorm", placement="pre", ffn="geglu", positions="alibi", tied=False, biases=False), 0.6),
    ("swish_nopos", dict(norm="layernorm", placement="pre", ffn="swish", positions="none", tied=True, biases=False), 0.1),
    ("reglu_rope", dict(norm="rmsnorm", placement="post", ffn="reglu", positions="rope", rope_base=500.0, tied=True, biases=True), 0.1),
    ("gelu_rms", dict(norm="rmsnorm", placement="pre", ffn="gelu", positions="learned", tied=False, biases=True), 0.1),
]
SINK_MODELS = ("gpt2", "llama")


def init_params(cfg, gen, qkv_std=0.1):
    """random fp32 weights: matrices/embeddings N(0,0.1) (qkvw N(0,qkv_std)), norm weights 1+N(0,0.1),
    biases (incl. layernorm biases) N(0,0.05); padded vocab rows exactly zero."""
    params = {}
    for name, shape in param_shapes(cfg).items():
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        if name in ("ln1w", "ln2w", "lnfw"):
            a = 1.0 + 0.1 * z
        elif name in ("ln1b", "ln2b", "lnfb", "qkvb", "attprojb", "fcb", "fcb2", "fcprojb"):
            a = 0.05 * z
        elif name == "qkvw":
            a = qkv_std * z
        else:
            a = 0.1 * z
        if name in ("wte", "lm_head"):
            a[cfg.V:] = 0.0
        params[name] = a.numpy().astype(np.float32)
    return params


def main():
    os.makedirs(OUTDIR, exist_ok=True)
    hp = {k: (f32(v) if isinstance(v, float) else v) for k, v in TRAIN.items()}  # what a reader sees
    models = {}
    for idx, (name, over, qkv_std) in enumerate(CONFIGS):
        kw = dict(BASE)
        kw.update(over)
        cfg = Config(**kw)
        gen = torch.Generator().manual_seed(1000 + idx)
        params = init_params(cfg, gen, qkv_std)
        toks = torch.randint(0, cfg.V, (B, T + 1), generator=gen).numpy().astype(np.int32)
        inputs, targets = toks[:, :T].copy(), toks[:, 1:].copy()

        version = 3 if name == "gpt2" else 4
        assert cfg.is_gpt2() == (version == 3)
        mpath = os.path.join(OUTDIR, name + "_model.bin")
        write_model(mpath, cfg, params, version)

        logits, loss, grads = ref.loss_and_grads(cfg, params, inputs, targets)
        g = ref.flat_grads(cfg, grads)
        # padded rows get exactly zero gradient
        for pn in ("wte", "lm_head"):
            if pn in grads:
                assert np.all(grads[pn][cfg.V:] == 0.0), pn
        curve = ref.adamw_curve(cfg, params, inputs, targets, hp["n_steps"], hp["lr"], hp["beta1"],
                                hp["beta2"], hp["adam_eps"], hp["weight_decay"], hp["grad_clip"])
        assert abs(curve[0] - loss) < 1e-12
        st = DebugState(B=B, T=T, inputs=inputs, targets=targets, logits=logits.astype(np.float32),
                        loss=loss, grads=g.astype(np.float32), version=3, V=cfg.V, losses=curve, **hp)
        spath = os.path.join(OUTDIR, name + "_state.bin")
        write_state(spath, st, 3)
        files = [mpath, spath]
        if name == "gpt2":
            p2 = os.path.join(OUTDIR, "gpt2_state_v2.bin")
            write_state(p2, st, 2)
            files.append(p2)

        # read back
        cfg2, params2, v2 = read_model(mpath)
        assert v2 == version and cfg2.to_dict() == cfg.to_dict()
        assert np.array_equal(flatten_params(cfg, params), flatten_params(cfg2, params2))
        st2 = read_state(spath)
        assert st2.n_steps == 10 and np.array_equal(st2.grads, g.astype(np.float32))
        print("%-12s v%d params=%5d loss=%.6f curve[0]=%.6f curve[-1]=%.6f  (%s)" % (
            name, version, num_params(cfg), loss, curve[0], curve[-1],
            ", ".join("%s %dB" % (os.path.basename(f), os.path.getsize(f)) for f in files)))
        assert curve[-1] < curve[0], "loss curve does not fall"
        models[name] = (cfg, params)

    # probe shard + sink metrics
    gen = torch.Generator().manual_seed(7)
    probe = torch.randint(0, BASE["V"], (PROBE_S * PROBE_T + 7,), generator=gen).numpy()
    ppath = os.path.join(OUTDIR, "probe.bin")
    write_shard(ppath, probe)
    assert np.array_equal(read_shard(ppath), probe)
    print("probe.bin    %d tokens (%dB)" % (probe.size, os.path.getsize(ppath)))
    for name in SINK_MODELS:
        cfg, params = models[name]
        m = ref.sink_metrics(cfg, params, probe, PROBE_S, PROBE_T, PROBE_EPS)
        alpha = m.pop("alpha")
        margin = float(np.abs(alpha[..., :10] - PROBE_EPS).min())
        jpath = os.path.join(OUTDIR, name + "_sink.json")
        with open(jpath, "w") as f:
            json.dump(m, f, indent=1)
            f.write("\n")
        print("%-12s sink=%s alpha1 range [%.4f, %.4f] norm_ratio=%s min|alpha_k-eps|=%.4g (%dB)" % (
            name + "_sink", ["%.1f" % s for s in m["sink"]], np.min(m["alpha1"]), np.max(m["alpha1"]),
            ["%.4f" % r for r in m["norm_ratio"]], margin, os.path.getsize(jpath)))
        assert margin > 1e-3, "an alpha_k sits too close to eps; indicator not robust"

    total = sum(os.path.getsize(os.path.join(OUTDIR, f)) for f in os.listdir(OUTDIR))
    print("total fixture size: %d bytes in %s" % (total, OUTDIR))


if __name__ == "__main__":
    main()
