"""Deterministic fixture generator (independent reference, written from the specification in docs/
(model.md, variants.md, formats.md, metrics.md) only).

    /usr/bin/python3 dev/reference/make_fixtures.py [outdir]

Writes into test/fixtures/ (default):
  <name>_model.bin   model file (version 3 for gpt2, else version 4)
  <name>_state.bin   debug state version 3 (forward/backward on a B=2,T=8 batch + 10-step AdamW curve)
  gpt2_state_v2.bin  debug state version 2 (llm.c format) for the gpt2 config
  probe.bin          token shard (5*16+7 tokens) for eval-sink
  <name>_sink.json   sink metrics on the first 5 windows of 16 probe tokens, eps 0.3, for SINK_MODELS
for the 7 architecture configurations (CONFIGS) and one configuration per attention variant (VARIANTS).
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

# attention variants on the llama base (rmsnorm, pre, swiglu, rope 10000, untied, no biases):
# name -> (overrides of VBASE, qkvw init std, init std of the variant tensors by name)
VBASE = dict(norm="rmsnorm", placement="pre", ffn="swiglu", positions="rope", rope_base=10000.0, tied=False,
             biases=False)
LN8 = -float(np.log(8.0))
VARIANTS = [
    ("softmax_mass2", dict(row_mass=2.0), 0.3, {}),
    ("sigmoid_none", dict(attn="sigmoid", attn_norm="none"), 1.0, {}),
    ("sigmoid_sum", dict(attn="sigmoid", attn_norm="sum"), 0.6, {}),
    ("sigmoid_bias", dict(attn="sigmoid", attn_norm="none", sigmoid_bias=LN8), 0.3, {}),
    ("elu1_none", dict(attn="elu1", attn_norm="none"), 0.3, {}),
    ("elu1_sum", dict(attn="elu1", attn_norm="sum", biases=True), 0.3, {}),
    ("kernel_elu1_sum", dict(attn="linear", phi="elu1", attn_norm="sum"), 0.3, {}),
    ("linear_none", dict(attn="linear", attn_norm="none"), 0.3, {}),
    ("linear_clamp", dict(attn="linear", attn_norm="clamp"), 0.6, {}),
    ("mlp_none", dict(attn="linear", phi="mlp", attn_norm="none"), 0.3, {"phi_w1": 0.5, "phi_w2": 0.5}),
    ("mlp_sum", dict(attn="linear", phi="mlp", attn_norm="sum"), 0.3, {"phi_w1": "pair0.5", "phi_w2": "abs0.5"}),
    ("mlp_clamp", dict(attn="linear", phi="mlp", attn_norm="clamp"), 0.3, {"phi_w1": 0.5, "phi_w2": 0.5}),
    ("softpick", dict(attn="softpick", biases=True), 0.6, {}),
    ("clipped", dict(attn="clipped", clip_zeta=1.05, clip_alpha=2.0), 0.7, {}),
    ("sink_token", dict(sink_token=True, maxT=17), 0.5, {"sink_token": 1.0}),
    ("kv", dict(slot="kv", vstar="learn"), 0.6, {"kstar": 5.0, "vstar": 0.3}),
    ("kv_shared", dict(slot="kv", vstar="learn", slot_shared=True, biases=True), 0.6, {"kstar": 1.0, "vstar": 0.3}),
    ("k_only", dict(slot="kv", vstar="zero"), 0.6, {"kstar": 1.0}),
    ("kv_fixed", dict(slot="kv", vstar="fixed", vstar_value=0.25), 0.6, {"kstar": 1.0}),
    ("value_bias", dict(value_bias=True), 0.6, {"vbias": 0.3}),
    ("value_bias_shared", dict(value_bias=True, slot_shared=True), 0.6, {"vbias": 0.3}),
    ("sink_logit", dict(slot="logit"), 0.6, {"sink_logit": 1.5}),
    ("softmax1", dict(slot="zero"), 0.6, {}),
    ("gate_elem", dict(gate="elementwise"), 0.6, {"gate_w": 0.5}),
    ("gate_head", dict(gate="headwise", norm="layernorm", placement="post", biases=True), 0.3, {"gate_w": 0.5}),
    ("prefix", dict(mask="prefix", mask_param=3, positions="learned"), 0.6, {}),
    ("window", dict(mask="window", mask_param=3, positions="alibi"), 0.6, {}),
    ("sink_token_prefix", dict(sink_token=True, mask="prefix", mask_param=3, positions="learned", biases=True),
     0.6, {"sink_token": 1.0}),
]
SINK_MODELS = ("gpt2", "llama", "kv", "sink_logit", "sink_token", "sigmoid_none", "sigmoid_sum")
KINK_MARGIN = 1e-4        # step-0 distance from any non-differentiable point (fp32 cannot cross it)
CURVE_KINK_MARGIN = 5e-5  # the same over all 10 forwards of the loss curve


def all_configs():
    """[(name, Config, qkv_std, init_std, seed)] for every fixture, in generation order"""
    out = []
    for idx, (name, over, qkv_std) in enumerate(CONFIGS):
        kw = dict(BASE)
        kw.update(over)
        out.append((name, Config(**kw), qkv_std, {}, 1000 + idx))
    for idx, (name, over, qkv_std, init) in enumerate(VARIANTS):
        kw = dict(BASE)
        kw.update(VBASE)
        kw.update(over)
        out.append((name, Config(**kw), qkv_std, init, 2000 + idx))
    return out


def init_params(cfg, gen, qkv_std=0.1, init=None):
    """random fp32 weights: matrices/embeddings N(0,0.1) (qkvw N(0,qkv_std)), norm weights 1+N(0,0.1),
    biases (incl. layernorm biases) N(0,0.05); the variant tensors N(0, init[name]) (defaults: sink_token 1,
    kstar/vstar/vbias 0.3, sink_logit 1, phi_w1/phi_w2 0.5, gate_w 0.5; "absS" = |N(0,S)|, "pairS" = rows
    2i, 2i+1 of each matrix are w_i, -w_i with w_i ~ N(0,S), so relu(W1 x) is never all zero and with a
    non-negative W2 phi(x) > 0: the scores of mlp + sum stay positive);
    padded vocab rows exactly zero."""
    init = dict(init or {})
    vdef = dict(sink_token=1.0, kstar=0.3, vstar=0.3, vbias=0.3, sink_logit=1.0, phi_w1=0.5, phi_w2=0.5, gate_w=0.5)
    params = {}
    for name, shape in param_shapes(cfg).items():
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        if name in ("ln1w", "ln2w", "lnfw"):
            a = 1.0 + 0.1 * z
        elif name in ("ln1b", "ln2b", "lnfb", "qkvb", "attprojb", "fcb", "fcb2", "fcprojb"):
            a = 0.05 * z
        elif name == "qkvw":
            a = qkv_std * z
        elif name in vdef:
            sd = init.get(name, vdef[name])
            if isinstance(sd, str) and sd.startswith("abs"):
                a = float(sd[3:]) * z.abs()
            elif isinstance(sd, str):
                assert sd.startswith("pair") and shape[-2] % 2 == 0
                a = float(sd[4:]) * z
                a[..., 1::2, :] = -a[..., 0::2, :]
            else:
                a = sd * z
        else:
            a = 0.1 * z
        if name in ("wte", "lm_head"):
            a[cfg.V:] = 0.0
        params[name] = a.numpy().astype(np.float32)
    return params


def kink_margins(fn):
    """run fn() while model.forward records its distances from non-differentiable points -> (fn(), {what: min})"""
    ref.KINKS = []
    try:
        res = fn()
        ks = ref.KINKS
    finally:
        ref.KINKS = None
    out = {}
    for what, d in ks:
        out[what] = min(d, out.get(what, float("inf")))
    return res, out


def main():
    os.makedirs(OUTDIR, exist_ok=True)
    hp = {k: (f32(v) if isinstance(v, float) else v) for k, v in TRAIN.items()}  # what a reader sees
    models = {}
    written = []
    for name, cfg, qkv_std, init, seed in all_configs():
        gen = torch.Generator().manual_seed(seed)
        params = init_params(cfg, gen, qkv_std, init)
        toks = torch.randint(0, cfg.V, (B, T + 1), generator=gen).numpy().astype(np.int32)
        inputs, targets = toks[:, :T].copy(), toks[:, 1:].copy()

        version = 3 if name == "gpt2" else 4
        assert cfg.is_gpt2() == (version == 3)
        mpath = os.path.join(OUTDIR, name + "_model.bin")
        write_model(mpath, cfg, params, version)

        logits, loss, grads = ref.loss_and_grads(cfg, params, inputs, targets)
        g = ref.flat_grads(cfg, grads)
        assert np.all(np.isfinite(g)) and np.isfinite(loss)
        # padded rows get exactly zero gradient
        for pn in ("wte", "lm_head"):
            if pn in grads:
                assert np.all(grads[pn][cfg.V:] == 0.0), pn
        _, km = kink_margins(lambda: ref.forward(cfg, ref.to_torch_params(cfg, params), inputs))
        for what, d in km.items():
            assert d > KINK_MARGIN, "%s: step-0 forward within %.2e of a kink (%s)" % (name, d, what)
        curve, kmc = kink_margins(lambda: ref.adamw_curve(cfg, params, inputs, targets, hp["n_steps"], hp["lr"],
                                                          hp["beta1"], hp["beta2"], hp["adam_eps"],
                                                          hp["weight_decay"], hp["grad_clip"]))
        for what, d in kmc.items():
            assert d > CURVE_KINK_MARGIN, "%s: a loss-curve forward within %.2e of a kink (%s)" % (name, d, what)
        assert abs(curve[0] - loss) < 1e-12 and np.all(np.isfinite(curve))
        st = DebugState(B=B, T=T, inputs=inputs, targets=targets, logits=logits.astype(np.float32),
                        loss=loss, grads=g.astype(np.float32), version=3, V=cfg.V, losses=curve, **hp)
        spath = os.path.join(OUTDIR, name + "_state.bin")
        write_state(spath, st, 3)
        files = [mpath, spath]
        if name == "gpt2":
            p2 = os.path.join(OUTDIR, "gpt2_state_v2.bin")
            write_state(p2, st, 2)
            files.append(p2)
        written += files

        # read back
        cfg2, params2, v2 = read_model(mpath)
        assert v2 == version and cfg2.to_dict() == cfg.to_dict()
        assert np.array_equal(flatten_params(cfg, params), flatten_params(cfg2, params2))
        st2 = read_state(spath)
        assert st2.n_steps == 10 and np.array_equal(st2.grads, g.astype(np.float32))
        print("%-17s v%d params=%5d loss=%.6f curve %.6f -> %.6f  %s(%s)" % (
            name, version, num_params(cfg), loss, curve[0], curve[-1],
            "".join("[%s %.1e / curve %.1e] " % (k, v, kmc[k]) for k, v in sorted(km.items())),
            ", ".join("%s %dB" % (os.path.basename(f), os.path.getsize(f)) for f in files)))
        assert curve[-1] < curve[0] - 0.5 and np.all(np.diff(curve) < 0), "loss curve does not fall"
        models[name] = (cfg, params)

    # probe shard + sink metrics
    gen = torch.Generator().manual_seed(7)
    probe = torch.randint(0, BASE["V"], (PROBE_S * PROBE_T + 7,), generator=gen).numpy()
    ppath = os.path.join(OUTDIR, "probe.bin")
    write_shard(ppath, probe)
    written.append(ppath)
    assert np.array_equal(read_shard(ppath), probe)
    print("probe.bin    %d tokens (%dB)" % (probe.size, os.path.getsize(ppath)))
    for name in SINK_MODELS:
        cfg, params = models[name]
        m = ref.sink_metrics(cfg, params, probe, PROBE_S, PROBE_T, PROBE_EPS)
        alpha = m.pop("alpha")
        margin = float(np.abs(alpha[..., :10] - PROBE_EPS).min())
        if "alpha_star_all" in m:
            margin = min(margin, float(np.abs(m.pop("alpha_star_all") - PROBE_EPS).min()))
        jpath = os.path.join(OUTDIR, name + "_sink.json")
        with open(jpath, "w") as f:
            json.dump(m, f, indent=1)
            f.write("\n")
        written.append(jpath)
        extra = ""
        if "sink_star" in m:
            extra = " sink_star=%.1f alpha_star range [%.4f, %.4f]" % (
                m["sink_star"], np.min(m["alpha_star"]), np.max(m["alpha_star"]))
        print("%-17s proxy=%d sink=%s alpha1 range [%.4f, %.4f] norm_ratio=%s row_mass=%s%s min|alpha-eps|=%.4g (%dB)" % (
            name + "_sink", m["proxy"], ["%.1f" % s for s in m["sink"]], np.min(m["alpha1"]), np.max(m["alpha1"]),
            ["%.4f" % r for r in m["norm_ratio"]], ["%.4f" % r for r in m["row_mass"]], extra, margin,
            os.path.getsize(jpath)))
        assert margin > 1e-3, "an alpha sits too close to eps; indicator not robust"

    total = sum(os.path.getsize(f) for f in written)
    print("total fixture size: %d bytes in %s (%d files written)" % (total, OUTDIR, len(written)))


if __name__ == "__main__":
    main()
