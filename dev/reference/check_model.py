"""Check a model file + debug state against the independent PyTorch reference (float64).

    /usr/bin/python3 dev/reference/check_model.py MODEL.bin STATE.bin [--curve]
    /usr/bin/python3 dev/reference/check_model.py MODEL.bin --sink PROBE.bin [--json SINK.json] [--S 5 --T 16 --eps 0.3]
    /usr/bin/python3 dev/reference/check_model.py --selftest

The first form prints the max abs error of the state's logits, loss and every gradient tensor (and, with
--curve or for a version-3 state by default, of its AdamW loss curve) against this reference, so a state
written by the C++ engine can be checked independently.  --selftest checks the reference itself:
finite-difference gradients (torch.autograd.gradcheck, float64) on tiny versions of every configuration,
a second, loop-based numpy forward written straight from the spec, the byte layout of the gpt2 (v3)
fixture, and that the fixtures' loss curves fall.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import formats as fm
import model as ref

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "test", "fixtures")


def check_state(model_path, state_path, curve=None):
    cfg, params, mver = fm.read_model(model_path)
    st = fm.read_state(state_path, V=cfg.V, n_params=fm.num_params(cfg))
    print("model %s: v%d %s" % (model_path, mver, cfg.to_dict()))
    print("state %s: v%d B=%d T=%d" % (state_path, st.version, st.B, st.T))
    assert st.V == cfg.V and st.grads.size == fm.num_params(cfg)
    logits, loss, grads = ref.loss_and_grads(cfg, params, st.inputs, st.targets)
    worst = {}
    worst["logits"] = float(np.abs(st.logits - logits).max())
    worst["loss"] = abs(st.loss - loss)
    sg = fm.unflatten_params(cfg, st.grads)
    print("  logits max abs err %.3e (max |logit| %.3f)" % (worst["logits"], np.abs(logits).max()))
    print("  loss   %.7f vs ref %.7f  err %.3e" % (st.loss, loss, worst["loss"]))
    for name in fm.param_shapes(cfg):
        e = float(np.abs(sg[name] - grads[name]).max())
        worst["grad." + name] = e
        print("  grad %-9s max abs err %.3e (max |g| %.3e)" % (name, e, np.abs(grads[name]).max()))
    for pn in ("wte", "lm_head"):
        if pn in sg and np.any(sg[pn][cfg.V:] != 0):
            print("  WARNING: nonzero gradient in padded rows of", pn)
    if curve is None:
        curve = st.version == 3 and st.n_steps > 0
    if curve:
        ref_curve = ref.adamw_curve(cfg, params, st.inputs, st.targets, st.n_steps, st.lr, st.beta1, st.beta2,
                                    st.adam_eps, st.weight_decay, st.grad_clip)
        e = float(np.abs(st.losses - ref_curve).max())
        worst["curve"] = e
        print("  curve (%d steps, lr %g b1 %g b2 %g eps %g wd %g clip %g) max abs err %.3e" % (
            st.n_steps, st.lr, st.beta1, st.beta2, st.adam_eps, st.weight_decay, st.grad_clip, e))
        print("    state: %s" % " ".join("%.5f" % v for v in st.losses))
        print("    ref:   %s" % " ".join("%.5f" % v for v in ref_curve))
    return worst


def check_sink(model_path, probe_path, S, T, eps, json_path=None):
    cfg, params, _ = fm.read_model(model_path)
    toks = fm.read_shard(probe_path)
    m = ref.sink_metrics(cfg, params, toks, S, T, eps)
    alpha = m.pop("alpha")
    print(json.dumps(m))
    print("min |alpha_k - eps| over k<=10: %.3e" % np.abs(alpha[..., :10] - eps).min())
    if json_path:
        with open(json_path) as f:
            j = json.load(f)
        for key in ("sink", "alpha1", "norm_ratio"):
            e = float(np.abs(np.array(j[key], dtype=np.float64) - np.array(m[key])).max())
            print("  %-10s max abs err %.3e" % (key, e))


# ----------------------------------------------------------------------------------------------
# self tests


def naive_forward(cfg, p, inputs):
    """Loop-based numpy float64 forward, written directly from the spec's formulas (per position,
    per head, per element) as an independent cross-check of model.forward."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
    B, T = inputs.shape
    C, NH, hs, L = cfg.C, cfg.NH, cfg.hs, cfg.L
    ln = cfg.norm == "layernorm"

    def nrm(x, w, b):
        if ln:
            mu = sum(x) / C
            var = sum((xi - mu) ** 2 for xi in x) / C
            return np.array([(x[c] - mu) / math.sqrt(var + cfg.norm_eps) * w[c] + b[c] for c in range(C)])
        ms = sum(xi * xi for xi in x) / C
        return np.array([x[c] / math.sqrt(ms + cfg.norm_eps) * w[c] for c in range(C)])

    def act(z):
        if cfg.ffn in ("relu", "reglu"):
            return max(z, 0.0)
        if cfg.ffn in ("gelu", "geglu"):
            return 0.5 * z * (1 + math.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
        return z / (1 + math.exp(-z))

    def lin(W, x, b):
        y = W @ x
        return y + b if b is not None else y

    def bias(name, l):
        return p[name][l] if cfg.biases else None

    def rot(x, t):
        out = x.copy()
        for i in range(hs // 2):
            th = t * cfg.rope_base ** (-2.0 * i / hs)
            a, b = x[i], x[i + hs // 2]
            out[i] = a * math.cos(th) - b * math.sin(th)
            out[i + hs // 2] = b * math.cos(th) + a * math.sin(th)
        return out

    def attn(xs, l):
        qkv = [lin(p["qkvw"][l], xs[t], bias("qkvb", l)) for t in range(T)]
        y = np.zeros((T, C))
        for h in range(NH):
            sl = slice(h * hs, (h + 1) * hs)
            q = [qkv[t][0:C][sl] for t in range(T)]
            k = [qkv[t][C:2 * C][sl] for t in range(T)]
            v = [qkv[t][2 * C:3 * C][sl] for t in range(T)]
            if cfg.positions == "rope":
                q = [rot(q[t], t) for t in range(T)]
                k = [rot(k[t], t) for t in range(T)]
            m_h = 2.0 ** (-8.0 * (h + 1) / NH)
            for t in range(T):
                s = []
                for j in range(t + 1):
                    sc = float(np.dot(q[t], k[j])) / math.sqrt(hs)
                    if cfg.positions == "alibi":
                        sc += -m_h * (t - j)
                    s.append(sc)
                mx = max(s)
                e = [math.exp(si - mx) for si in s]
                Z = sum(e)
                for j in range(t + 1):
                    y[t, sl] += e[j] / Z * v[j]
        return [lin(p["attprojw"][l], y[t], bias("attprojb", l)) for t in range(T)]

    def ff(x, l):
        a = lin(p["fcw"][l], x, bias("fcb", l))
        hdn = np.array([act(z) for z in a])
        if cfg.gated:
            hdn = hdn * lin(p["fcw2"][l], x, bias("fcb2", l))
        return lin(p["fcprojw"][l], hdn, bias("fcprojb", l))

    logits = np.zeros((B, T, cfg.V))
    for b in range(B):
        xs = []
        for t in range(T):
            x = p["wte"][inputs[b, t]].copy()
            if cfg.positions == "learned":
                x += p["wpe"][t]
            elif cfg.positions == "sinusoidal":
                for i in range(C // 2):
                    x[2 * i] += math.sin(t * 10000.0 ** (-2.0 * i / C))
                    x[2 * i + 1] += math.cos(t * 10000.0 ** (-2.0 * i / C))
            xs.append(x)
        for l in range(L):
            n1 = lambda z: nrm(z, p["ln1w"][l], p["ln1b"][l] if ln else None)
            n2 = lambda z: nrm(z, p["ln2w"][l], p["ln2b"][l] if ln else None)
            if cfg.placement == "pre":
                a = attn([n1(x) for x in xs], l)
                xs = [xs[t] + a[t] for t in range(T)]
                xs = [x + ff(n2(x), l) for x in xs]
            else:
                a = attn(xs, l)
                xs = [n1(xs[t] + a[t]) for t in range(T)]
                xs = [n2(x + ff(x, l)) for x in xs]
        W = p["wte"] if cfg.tied else p["lm_head"]
        for t in range(T):
            hvec = nrm(xs[t], p["lnfw"], p["lnfb"] if ln else None) if cfg.placement == "pre" else xs[t]
            logits[b, t] = (W @ hvec)[:cfg.V]
    return logits


def selftest():
    sys.path.insert(0, HERE)
    import make_fixtures as mf
    ok = True

    # 1) finite-difference gradient check (float64) on tiny versions of every configuration
    for idx, (name, over, _) in enumerate(mf.CONFIGS):
        kw = dict(V=7, maxT=4, L=2, NH=2, C=4, F=6, norm_eps=1e-5)
        kw.update(over)
        if name == "gpt2":
            kw["F"] = 16
        cfg = fm.Config(**kw)
        gen = torch.Generator().manual_seed(99 + idx)
        params = mf.init_params(cfg, gen, 0.5)
        inputs = torch.randint(0, cfg.V, (2, 3), generator=gen)
        targets = torch.randint(0, cfg.V, (2, 3), generator=gen)
        shapes = fm.param_shapes(cfg)
        flat0 = torch.tensor(fm.flatten_params(cfg, params).astype(np.float64), requires_grad=True)

        def f(flat):
            p, off = {}, 0
            for n, sh in shapes.items():
                k = int(np.prod(sh))
                p[n] = flat[off:off + k].reshape(sh)
                off += k
            return ref.forward(cfg, p, inputs, targets)["loss"]

        passed = torch.autograd.gradcheck(f, (flat0,), eps=1e-6, atol=1e-7, rtol=1e-5)
        print("gradcheck %-12s (%d params): %s" % (name, flat0.numel(), "ok" if passed else "FAIL"))
        ok &= bool(passed)

    # 2) loop-based forward vs the vectorised reference, on every fixture config
    for name, over, _ in mf.CONFIGS:
        path = os.path.join(FIXTURES, name + "_model.bin")
        cfg, params, _ = fm.read_model(path)
        st = fm.read_state(os.path.join(FIXTURES, name + "_state.bin"))
        lg = ref.forward(cfg, ref.to_torch_params(cfg, params), st.inputs)["logits"].numpy()
        lg2 = naive_forward(cfg, params, st.inputs)
        e = float(np.abs(lg - lg2).max())
        good = e < 1e-10
        ok &= good
        print("naive forward %-12s max abs diff %.2e %s" % (name, e, "ok" if good else "FAIL"))

    # 3) byte layout of the gpt2 v3 file, computed here from llm.c's conventions, not from param_shapes
    path = os.path.join(FIXTURES, "gpt2_model.bin")
    raw = open(path, "rb").read()
    h = np.frombuffer(raw[:1024], dtype="<i4")
    maxT, V, L, NH, C, Vp = 16, 53, 2, 4, 16, 128
    exp_h = np.zeros(256, dtype=np.int64)
    exp_h[:8] = [20240326, 3, maxT, V, L, NH, C, Vp]
    good = np.array_equal(h.astype(np.int64), exp_h)
    sizes = [("wte", Vp * C), ("wpe", maxT * C), ("ln1w", L * C), ("ln1b", L * C), ("qkvw", L * 3 * C * C),
             ("qkvb", L * 3 * C), ("attprojw", L * C * C), ("attprojb", L * C), ("ln2w", L * C), ("ln2b", L * C),
             ("fcw", L * 4 * C * C), ("fcb", L * 4 * C), ("fcprojw", L * C * 4 * C), ("fcprojb", L * C),
             ("lnfw", C), ("lnfb", C)]
    body = np.frombuffer(raw[1024:], dtype="<f4")
    good &= body.size == sum(n for _, n in sizes)
    _, params, ver = fm.read_model(path)
    good &= ver == 3 and list(params.keys()) == [n for n, _ in sizes]
    off = 0
    for n, k in sizes:
        seg = body[off:off + k]
        good &= np.array_equal(seg, params[n].reshape(-1))
        if n.startswith("ln") and n.endswith("w"):
            good &= abs(seg.mean() - 1.0) < 0.1   # norm weights ~ 1
        if n.startswith("ln") and n.endswith("b"):
            good &= abs(seg.mean()) < 0.05        # norm biases ~ 0
        off += k
    good &= np.all(body[:Vp * C].reshape(Vp, C)[V:] == 0) and np.any(body[:V * C] != 0)
    s2 = open(os.path.join(FIXTURES, "gpt2_state_v2.bin"), "rb").read()
    h2 = np.frombuffer(s2[:1024], dtype="<i4")
    good &= list(h2[:4]) == [20240327, 2, 2, 8] and not np.any(h2[4:])
    good &= len(s2) == 1024 + 4 * (2 * 2 * 8 + 2 * 8 * V + 1 + body.size)
    s3 = open(os.path.join(FIXTURES, "gpt2_state.bin"), "rb").read()
    h3 = np.frombuffer(s3[:1024], dtype="<i4")
    good &= list(h3[:7]) == [20240327, 3, 2, 8, V, body.size, 10] and not np.any(h3[13:])
    good &= [fm.bits_f32(x) for x in h3[7:13]] == [fm.f32(x) for x in (1e-2, 0.9, 0.95, 1e-8, 0.1, 1.0)]
    good &= len(s3) == len(s2) + 4 * 10 and s3[1024:len(s2)] == s2[1024:]
    print("gpt2 v3 model / v2 / v3 state byte layout: %s" % ("ok" if good else "FAIL"))
    ok &= bool(good)

    # 4) every fixture: state matches reference, loss curve falls
    for name, _, _ in mf.CONFIGS:
        st = fm.read_state(os.path.join(FIXTURES, name + "_state.bin"))
        falls = st.losses[-1] < st.losses[0] - 0.5 and abs(st.losses[0] - st.loss) < 1e-6
        w = check_state_quiet(os.path.join(FIXTURES, name + "_model.bin"), os.path.join(FIXTURES, name + "_state.bin"))
        good = falls and max(w.values()) < 1e-5
        ok &= good
        print("fixture %-12s curve %.4f -> %.4f, max err vs ref %.1e: %s" % (
            name, st.losses[0], st.losses[-1], max(w.values()), "ok" if good else "FAIL"))

    # 5) sink json reproduces
    for name in mf.SINK_MODELS:
        cfg, params, _ = fm.read_model(os.path.join(FIXTURES, name + "_model.bin"))
        toks = fm.read_shard(os.path.join(FIXTURES, "probe.bin"))
        m = ref.sink_metrics(cfg, params, toks, 5, 16, 0.3)
        j = json.load(open(os.path.join(FIXTURES, name + "_sink.json")))
        good = all(np.allclose(np.array(j[k]), np.array(m[k]), atol=1e-12, rtol=0) for k in ("sink", "alpha1", "norm_ratio"))
        good &= toks.size == 87 and j["S"] == 5 and j["T"] == 16 and j["eps"] == 0.3
        ok &= good
        print("sink json %-6s reproduces: %s" % (name, "ok" if good else "FAIL"))

    print("SELFTEST", "PASSED" if ok else "FAILED")
    return ok


def check_state_quiet(mp, sp):
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        return check_state(mp, sp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("state", nargs="?")
    ap.add_argument("--curve", action="store_true", default=None)
    ap.add_argument("--sink")
    ap.add_argument("--json")
    ap.add_argument("--S", type=int, default=5)
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args()
    if a.selftest:
        sys.exit(0 if selftest() else 1)
    if not a.model:
        ap.error("need MODEL (and STATE or --sink)")
    if a.state:
        w = check_state(a.model, a.state, a.curve)
        print("worst: %s = %.3e" % max(w.items(), key=lambda kv: kv[1]))
    if a.sink:
        check_sink(a.model, a.sink, a.S, a.T, a.eps, a.json)


if __name__ == "__main__":
    main()
