"""Check a model file + debug state against the independent PyTorch reference (float64).

    /usr/bin/python3 dev/reference/check_model.py MODEL.bin STATE.bin [--curve]
    /usr/bin/python3 dev/reference/check_model.py MODEL.bin --sink PROBE.bin [--json SINK.json] [--S 5 --T 16 --eps 0.3]
    /usr/bin/python3 dev/reference/check_model.py --selftest

The first form prints the max abs error of the state's logits, loss and every gradient tensor (and, with
--curve or for a version-3 state by default, of its AdamW loss curve) against this reference, so a state
written by the C++ engine can be checked independently.  --sink compares every field of a sink json
(sink, alpha1, norm_ratio, row_mass, proxy, and sink_star/alpha_star for slot and sink-token models).
--selftest checks the reference itself: finite-difference gradients (torch.autograd.gradcheck, float64) on
tiny versions of every configuration (architectures and attention variants), a second, loop-based numpy
forward and metric implementation written straight from the spec, the byte layout of the gpt2 (v3)
fixture, every v4 header [8..32] and tensor size, and that the fixtures' loss curves fall.
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
    a_star = m.pop("alpha_star_all", None)
    print(json.dumps(m))
    print("min |alpha_k - eps| over k<=10: %.3e" % np.abs(alpha[..., :10] - eps).min())
    if a_star is not None:
        print("min |alpha_* - eps|: %.3e" % np.abs(a_star - eps).min())
    if json_path:
        with open(json_path) as f:
            j = json.load(f)
        for key in ("proxy", "norm_ratio_rows"):
            if key in j or key in m:
                print("  %-10s %s vs ref %s%s" % (key, j.get(key), m.get(key), "" if j.get(key) == m.get(key) else "  MISMATCH"))
        for key in ("sink", "alpha1", "norm_ratio", "row_mass", "sink_star", "alpha_star"):
            if key not in m:
                continue
            if key not in j:
                print("  %-10s missing from %s" % (key, json_path))
                continue
            e = float(np.abs(np.array(j[key], dtype=np.float64) - np.array(m[key])).max())
            print("  %-10s max abs err %.3e" % (key, e))


# ----------------------------------------------------------------------------------------------
# self tests


def naive_forward(cfg, p, inputs, targets=None, internals=False):
    """Loop-based numpy float64 forward, written directly from the spec's formulas (per position,
    per head, per row, per element) as an independent cross-check of model.forward.
    Returns logits (B,T,V) for the real positions; with targets also the loss; with internals also
    W[b][l][h][t] = (slot weight or None, {key j: weight}) for every model row t, and the residual
    streams R[b][l] (list of Tm vectors)."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
    B, T = inputs.shape
    C, NH, hs, L = cfg.C, cfg.NH, cfg.hs, cfg.L
    ln = cfg.norm == "layernorm"
    Tm = T + 1 if cfg.sink_token else T
    tau = 1.0 / math.sqrt(hs)

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

    def sig(z):
        return 1.0 / (1.0 + math.exp(-z))

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

    def phi(x, l):
        if cfg.phi == "none":
            return x
        if cfg.phi == "elu1":
            return np.array([xi + 1.0 if xi > 0 else math.exp(xi) for xi in x])
        hdn = np.array([max(z, 0.0) for z in p["phi_w1"][l] @ x])
        return p["phi_w2"][l] @ hdn

    def keys_of(t):  # visible keys [lo, hi) of query t
        if cfg.mask == "prefix" and t < cfg.mask_param:
            return range(0, cfg.mask_param)
        if cfg.mask == "window":
            return range(max(0, t - cfg.mask_param + 1), t + 1)
        return range(0, t + 1)

    def rowmap(sc):
        """sc: list of scores (slot first if any) -> list of weights"""
        n = len(sc)
        if cfg.attn in ("softmax", "clipped"):
            mx = max(sc)
            e = [math.exp(x - mx) for x in sc]
            Z = sum(e)
            if cfg.attn == "softmax":
                return [cfg.row_mass * x / Z for x in e]
            g = -cfg.clip_alpha / Tm
            return [min(max((cfg.clip_zeta - g) * x / Z + g, 0.0), 1.0) for x in e]
        if cfg.attn == "softpick":
            Z = sum(abs(math.exp(x) - 1.0) for x in sc) + 1e-6
            return [max(math.exp(x) - 1.0, 0.0) / Z for x in sc]
        if cfg.attn == "sigmoid":
            a = [sig(x + cfg.sigmoid_bias) for x in sc]
        elif cfg.attn == "elu1":
            a = [x + 1.0 if x > 0 else math.exp(x) for x in sc]
        else:
            a = list(sc)
        r = sum(a)
        if cfg.attn_norm == "none":
            Z = 1.0
        elif cfg.attn_norm == "sum":
            Z = r + 1e-8
        else:
            Z = max(abs(r), 1.0)
        return [x / Z for x in a]

    def attn(xs, gin, l, Wrec):
        qkv = [lin(p["qkvw"][l], xs[t], bias("qkvb", l)) for t in range(Tm)]
        y = np.zeros((Tm, C))
        for h in range(NH):
            sl = slice(h * hs, (h + 1) * hs)
            q = [qkv[t][0:C][sl] for t in range(Tm)]
            k = [qkv[t][C:2 * C][sl] for t in range(Tm)]
            v = [qkv[t][2 * C:3 * C][sl] for t in range(Tm)]
            if cfg.positions == "rope":
                q = [rot(q[t], t) for t in range(Tm)]
                k = [rot(k[t], t) for t in range(Tm)]
            fq = [phi(q[t], l) for t in range(Tm)]
            fk = [phi(k[t], l) for t in range(Tm)]
            hh = 0 if cfg.slot_shared else h
            m_h = 2.0 ** (-8.0 * (h + 1) / NH)
            rows = []
            for t in range(Tm):
                js = list(keys_of(t))
                sc = []
                for j in js:
                    x = tau * float(np.dot(fq[t], fk[j]))
                    if cfg.positions == "alibi":
                        x += -m_h * (t - j)
                    sc.append(x)
                if cfg.slot == "kv":
                    sc = [tau * float(np.dot(q[t], p["kstar"][l][hh]))] + sc
                elif cfg.slot == "logit":
                    sc = [float(p["sink_logit"][l][h])] + sc
                elif cfg.slot == "zero":
                    sc = [0.0] + sc
                w = rowmap(sc)
                wstar = None
                if cfg.slot != "none":
                    wstar, w = w[0], w[1:]
                    if cfg.slot == "kv" and cfg.vstar == "learn":
                        y[t, sl] += wstar * p["vstar"][l][hh]
                    elif cfg.slot == "kv" and cfg.vstar == "fixed":
                        y[t, sl] += wstar * cfg.vstar_value
                for j, wj in zip(js, w):
                    y[t, sl] += wj * v[j]
                if cfg.value_bias:
                    y[t, sl] += p["vbias"][l][hh]
                rows.append((wstar, dict(zip(js, w))))
            Wrec.append(rows)
        if cfg.gate != "none":
            for t in range(Tm):
                g = [sig(z) for z in p["gate_w"][l] @ gin[t]]
                for c in range(C):
                    y[t, c] *= g[c] if cfg.gate == "elementwise" else g[c // hs]
        return [lin(p["attprojw"][l], y[t], bias("attprojb", l)) for t in range(Tm)]

    def ff(x, l):
        a = lin(p["fcw"][l], x, bias("fcb", l))
        hdn = np.array([act(z) for z in a])
        if cfg.gated:
            hdn = hdn * lin(p["fcw2"][l], x, bias("fcb2", l))
        return lin(p["fcprojw"][l], hdn, bias("fcprojb", l))

    logits = np.zeros((B, T, cfg.V))
    Wall, Rall = [], []
    for b in range(B):
        toks = [None] + list(inputs[b]) if cfg.sink_token else list(inputs[b])
        xs = []
        for t in range(Tm):
            x = p["sink_token"].copy() if toks[t] is None else p["wte"][toks[t]].copy()
            if cfg.positions == "learned":
                x += p["wpe"][t]
            elif cfg.positions == "sinusoidal":
                for i in range(C // 2):
                    x[2 * i] += math.sin(t * 10000.0 ** (-2.0 * i / C))
                    x[2 * i + 1] += math.cos(t * 10000.0 ** (-2.0 * i / C))
            xs.append(x)
        Wb, Rb = [], [xs]
        for l in range(L):
            n1 = lambda z: nrm(z, p["ln1w"][l], p["ln1b"][l] if ln else None)
            n2 = lambda z: nrm(z, p["ln2w"][l], p["ln2b"][l] if ln else None)
            Wl = []
            if cfg.placement == "pre":
                xn = [n1(x) for x in xs]
                a = attn(xn, xn, l, Wl)
                xs = [xs[t] + a[t] for t in range(Tm)]
                xs = [x + ff(n2(x), l) for x in xs]
            else:
                a = attn(xs, xs, l, Wl)
                xs = [n1(xs[t] + a[t]) for t in range(Tm)]
                xs = [n2(x + ff(x, l)) for x in xs]
            Wb.append(Wl)
            Rb.append(xs)
        Wall.append(Wb)
        Rall.append(Rb)
        W = p["wte"] if cfg.tied else p["lm_head"]
        for t in range(T):
            tm = t + 1 if cfg.sink_token else t
            hvec = nrm(xs[tm], p["lnfw"], p["lnfb"] if ln else None) if cfg.placement == "pre" else xs[tm]
            logits[b, t] = (W @ hvec)[:cfg.V]
    out = {"logits": logits}
    if targets is not None:
        tot, cnt = 0.0, 0
        for b in range(B):
            for t in range(T):
                tm = t + 1 if cfg.sink_token else t
                if cfg.mask == "prefix" and tm < cfg.mask_param - 1:
                    continue
                z = logits[b, t]
                mx = max(z)
                lse = mx + math.log(sum(math.exp(zi - mx) for zi in z))
                tot += lse - z[targets[b, t]]
                cnt += 1
        out["loss"] = tot / cnt
    if internals:
        out["W"], out["R"] = Wall, Rall
    return out


def naive_sink(cfg, params, tokens, S, T, eps):
    """The sink metrics from naive_forward's per-row weights, by loops over the docs/metrics.md rules."""
    x = np.asarray(tokens[:S * T]).reshape(S, T)
    o = naive_forward(cfg, params, x, internals=True)
    L, NH = cfg.L, cfg.NH
    prob = ref.is_probability(cfg)
    starred = cfg.slot != "none" or cfg.sink_token
    n = T + 1 if starred else T
    sink = np.zeros(10)
    alpha1 = np.zeros((L, NH))
    astar = np.zeros((L, NH))
    sstar = 0.0
    rmass = np.zeros(L)
    alpha_all = []
    for s in range(S):
        for l in range(L):
            for h in range(NH):
                rows = o["W"][s][l][h]
                A = np.zeros((n, n))
                if starred:
                    A[0, 0] = 1.0  # the slot's / sink token's own row, one-hot on itself
                masses = []
                for t, (wstar, wd) in enumerate(rows):
                    if cfg.sink_token and t == 0:
                        continue
                    full = ([wstar] if wstar is not None else []) + [wd[j] for j in sorted(wd)]
                    masses.append(sum(full))
                    den = 1.0 if prob else sum(abs(w) for w in full)
                    i = t + (1 if cfg.slot != "none" else 0)  # matrix row
                    if wstar is not None:
                        A[i, 0] = (wstar if prob else abs(wstar)) / den
                    for j, w in wd.items():
                        A[i, j + (1 if cfg.slot != "none" else 0)] = (w if prob else abs(w)) / den
                rmass[l] += np.mean(masses) / (S * NH)
                off = 1 if starred else 0
                for k in range(1, 11):
                    idx = k - 1 + off
                    a_k = sum(A[t, idx] for t in range(idx, n)) / (n - idx)
                    alpha_all.append(a_k)
                    sink[k - 1] += 100.0 * (a_k > eps) / (S * L * NH)
                    if k == 1:
                        alpha1[l, h] += a_k / S
                if starred:
                    a_s = (1.0 + sum(A[t, 0] for t in range(1, n))) / n
                    astar[l, h] += a_s / S
                    sstar += 100.0 * (a_s > eps) / (S * L * NH)
    nr = []
    for l in range(L + 1):
        acc = 0.0
        for s in range(S):
            R = o["R"][s][l]
            if cfg.sink_token:
                R = R[1:]
            norms = [math.sqrt(float(np.dot(r, r))) for r in R]
            acc += norms[0] / (sum(norms[1:]) / (len(norms) - 1)) / S
        nr.append(acc)
    res = {"proxy": not prob, "sink": list(sink), "alpha1": alpha1.tolist(), "norm_ratio": nr, "row_mass": list(rmass)}
    if starred:
        res["sink_star"] = sstar
        res["alpha_star"] = astar.tolist()
    return res


# init overrides for the tiny gradcheck models, so that each side of a branch is exercised (measured: tiny
# clipped has values < 0, in (0,1) and > 1; tiny linear_clamp rows with |r| <= 1, r > 1, r < -1; tiny softpick
# s < 0 and s > 0; tiny mlp_clamp with these scales: |r| <= 1 20 rows, r > 1 18, r < -1 2)
TINY_INIT = {"mlp_clamp": {"phi_w1": 1.0, "phi_w2": 1.0}}


def tiny_config(name, cfg):
    """a tiny version of a fixture configuration for finite differences: V 7, L 2, NH 2, C 4, F 6, T 5"""
    d = cfg.to_dict()
    d.update(V=7, maxT=6, L=2, NH=2, C=4, F=6 if name != "gpt2" else 16, Vp=0)
    return fm.Config(**d)


def selftest():
    sys.path.insert(0, HERE)
    import make_fixtures as mf
    ok = True
    allc = mf.all_configs()
    names = [c[0] for c in allc]

    # 1) finite-difference gradient check (float64) on tiny versions of every configuration; the loss and
    #    logits of the tiny model also against the loop-based forward
    for name, cfg0, qkv_std, init, seed in allc:
        cfg = tiny_config(name, cfg0)
        gen = torch.Generator().manual_seed(seed + 99)
        params = mf.init_params(cfg, gen, min(qkv_std, 0.5), dict(init, **TINY_INIT.get(name, {})))
        inputs = torch.randint(0, cfg.V, (2, 5), generator=gen)
        targets = torch.randint(0, cfg.V, (2, 5), generator=gen)
        shapes = fm.param_shapes(cfg)
        flat0 = torch.tensor(fm.flatten_params(cfg, params).astype(np.float64), requires_grad=True)

        def unflat(flat):
            p, off = {}, 0
            for n, sh in shapes.items():
                k = int(np.prod(sh))
                p[n] = flat[off:off + k].reshape(sh)
                off += k
            return p

        def f(flat):
            return ref.forward(cfg, unflat(flat), inputs, targets)["loss"]

        passed = torch.autograd.gradcheck(f, (flat0,), eps=1e-6, atol=1e-7, rtol=1e-5, raise_exception=False)
        # every tensor gets a gradient (nothing silently disconnected)
        flat = flat0.detach().clone().requires_grad_(True)
        f(flat).backward()
        gp = unflat(flat.grad)
        dead = [n for n in shapes if not torch.any(gp[n] != 0)]
        nv = naive_forward(cfg, params, inputs.numpy(), targets.numpy())
        e = abs(nv["loss"] - float(f(flat0.detach())))
        good = bool(passed) and not dead and e < 1e-12
        print("gradcheck %-17s (%4d params): %s%s  naive loss diff %.1e" % (
            name, flat0.numel(), "ok" if good else "FAIL", " dead: %s" % dead if dead else "", e))
        ok &= good

    # 2) loop-based forward vs the vectorised reference, on every fixture config (logits and loss)
    for name in names:
        path = os.path.join(FIXTURES, name + "_model.bin")
        cfg, params, _ = fm.read_model(path)
        st = fm.read_state(os.path.join(FIXTURES, name + "_state.bin"))
        o1 = ref.forward(cfg, ref.to_torch_params(cfg, params), st.inputs, st.targets)
        o2 = naive_forward(cfg, params, st.inputs, st.targets)
        e = max(float(np.abs(o1["logits"].numpy() - o2["logits"]).max()), abs(float(o1["loss"]) - o2["loss"]))
        good = e < 1e-10
        ok &= good
        print("naive forward %-17s max abs diff %.2e %s" % (name, e, "ok" if good else "FAIL"))

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

    # 3b) version-4 header fields [8..32] of every v4 fixture against a table written here from docs/formats.md
    #     (index order of every enum, float32 bits, defaults of unused fields), and the tensor sizes
    enum = {9: ["layernorm", "rmsnorm"], 10: ["pre", "post"], 11: ["relu", "gelu", "swish", "reglu", "geglu", "swiglu"],
            12: ["none", "sinusoidal", "learned", "rope", "alibi"],
            17: ["softmax", "sigmoid", "elu1", "linear", "softpick", "clipped"], 18: ["causal", "prefix", "window"],
            20: ["none", "sum", "clamp"], 21: ["none", "elu1", "mlp"], 22: ["none", "kv", "logit", "zero"],
            23: ["learn", "zero", "fixed"], 28: ["none", "elementwise", "headwise"]}
    key = {9: "norm", 10: "placement", 11: "ffn", 12: "positions", 17: "attn", 18: "mask", 20: "attn_norm",
           21: "phi", 22: "slot", 23: "vstar", 28: "gate"}
    fdef = {15: ("rope_base", 10000.0), 16: ("norm_eps", 1e-5), 24: ("vstar_value", 0.0), 29: ("row_mass", 1.0),
            30: ("sigmoid_bias", 0.0), 31: ("clip_zeta", 1.0), 32: ("clip_alpha", 4.0)}
    idef = {13: ("tied", 0), 14: ("biases", 0), 19: ("mask_param", 0), 25: ("value_bias", 0),
            26: ("slot_shared", 0), 27: ("sink_token", 0)}
    spec = {n: (dict(mf.BASE, **o), q) for n, o, q in mf.CONFIGS}
    spec.update({n: (dict(mf.BASE, **dict(mf.VBASE, **o)), q) for n, o, q, _ in mf.VARIANTS})
    for name in names:
        if name == "gpt2":
            continue
        over = spec[name][0]
        raw = open(os.path.join(FIXTURES, name + "_model.bin"), "rb").read()
        h = np.frombuffer(raw[:1024], dtype="<i4")
        exp = np.zeros(256, dtype=np.int64)
        exp[:9] = [20240326, 4, over["maxT"], 53, 2, 4, 16, 128, over["F"]]
        for i, names_ in enum.items():
            exp[i] = names_.index(over.get(key[i], names_[0] if i != 9 else "layernorm"))
        for i, (k, d) in fdef.items():
            exp[i] = fm.f32_bits(over.get(k, d))
        for i, (k, d) in idef.items():
            exp[i] = int(over.get(k, d if k != "tied" else 1))
        g1 = np.array_equal(h.astype(np.int64), exp)
        # tensor sizes from the docs/formats.md table
        Cc, Ll, hs_, NHh, Vpp, F_ = 16, 2, 4, 4, 128, over["F"]
        b_, lnb = over.get("biases", True), over.get("norm", "layernorm") == "layernorm"
        Ss = 1 if over.get("slot_shared") else NHh
        n_ = Vpp * Cc + (over["maxT"] * Cc if over.get("positions", "learned") == "learned" else 0)
        n_ += Ll * Cc * (2 if lnb else 1) * 2 + Ll * 3 * Cc * Cc + (Ll * 3 * Cc if b_ else 0)
        n_ += Ll * Cc * Cc + (Ll * Cc if b_ else 0)
        gated = over.get("ffn", "gelu") in ("reglu", "geglu", "swiglu")
        n_ += (2 if gated else 1) * (Ll * F_ * Cc + (Ll * F_ if b_ else 0)) + Ll * Cc * F_ + (Ll * Cc if b_ else 0)
        n_ += (Cc * (2 if lnb else 1)) if over.get("placement", "pre") == "pre" else 0
        n_ += Vpp * Cc if not over.get("tied", True) else 0
        n_ += Cc if over.get("sink_token") else 0
        n_ += Ll * Ss * hs_ if over.get("slot") == "kv" else 0
        n_ += Ll * Ss * hs_ if over.get("slot") == "kv" and over.get("vstar", "learn") == "learn" else 0
        n_ += Ll * Ss * hs_ if over.get("value_bias") else 0
        n_ += Ll * NHh if over.get("slot") == "logit" else 0
        n_ += 2 * Ll * hs_ * hs_ if over.get("phi") == "mlp" else 0
        n_ += Ll * (Cc if over.get("gate") == "elementwise" else NHh) * Cc if over.get("gate", "none") != "none" else 0
        g2 = len(raw) == 1024 + 4 * n_
        st = open(os.path.join(FIXTURES, name + "_state.bin"), "rb").read()
        g3 = int(np.frombuffer(st[:1024], dtype="<i4")[5]) == n_
        good = g1 and g2 and g3
        ok &= good
        if not good:
            print("v4 header / size %-17s FAIL: header %s size %s state num_params %s" % (name, g1, g2, g3))
    print("v4 headers [8..32] and tensor sizes of %d fixtures checked" % (len(names) - 1))

    # 4) every fixture: state matches reference, loss curve falls
    for name in names:
        st = fm.read_state(os.path.join(FIXTURES, name + "_state.bin"))
        falls = st.losses[-1] < st.losses[0] - 0.5 and abs(st.losses[0] - st.loss) < 1e-6
        w = check_state_quiet(os.path.join(FIXTURES, name + "_model.bin"), os.path.join(FIXTURES, name + "_state.bin"))
        good = falls and max(w.values()) < 1e-5
        ok &= good
        print("fixture %-17s curve %.4f -> %.4f, max err vs ref %.1e: %s" % (
            name, st.losses[0], st.losses[-1], max(w.values()), "ok" if good else "FAIL"))

    # 5) sink json reproduces (vectorised reference), and the loop-based metrics agree
    toks = fm.read_shard(os.path.join(FIXTURES, "probe.bin"))
    for name in mf.SINK_MODELS:
        cfg, params, _ = fm.read_model(os.path.join(FIXTURES, name + "_model.bin"))
        m = ref.sink_metrics(cfg, params, toks, 5, 16, 0.3)
        m.pop("alpha")
        m.pop("alpha_star_all", None)
        j = json.load(open(os.path.join(FIXTURES, name + "_sink.json")))
        nv = naive_sink(cfg, params, toks, 5, 16, 0.3)
        keys = [k for k in m if isinstance(m[k], (list, float)) and k != "eps"]
        good = set(j) == set(m) and all(j[k] == m[k] for k in ("S", "T", "eps", "proxy"))
        good &= all(np.allclose(np.array(j[k]), np.array(m[k]), atol=1e-12, rtol=0) for k in keys)
        good &= set(nv) == set(k for k in m if k not in ("S", "T", "eps", "norm_ratio_rows")) and nv["proxy"] == m["proxy"]
        en = max(float(np.abs(np.array(nv[k]) - np.array(m[k])).max()) for k in nv if k != "proxy")
        good &= en < 1e-10 and toks.size == 87 and j["S"] == 5 and j["T"] == 16 and j["eps"] == 0.3
        ok &= good
        print("sink json %-12s reproduces, loop-based metrics diff %.1e: %s" % (name, en, "ok" if good else "FAIL"))

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
