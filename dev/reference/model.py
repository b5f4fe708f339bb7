"""Independent PyTorch reference of the sinkscope model family, written from the specification in docs/ (model.md,
variants.md, formats.md, metrics.md) only.

Everything is computed in float64 (fp32 weights from a file are cast to double), with the attention
written out as explicit matrices so that every (layer, head) probability matrix and the residual
stream after the embedding and after every block can be returned.

Parameters are a dict name -> tensor with exactly the file shapes of formats.param_shapes(cfg)
(per-layer tensors stacked along a leading L axis, padded vocab rows included).
"""
import math
from collections import OrderedDict

import numpy as np
import torch

from formats import param_shapes

DT = torch.float64

# When set to a list, the forward appends (what, min distance) for every non-differentiable point it passes
# near (softpick s = 0, clip bounds 0/1, clamp |r| = 1, the mlp feature map's relu), so a fixture can
# assert that an fp32 engine cannot land on the other side of a kink.
KINKS = None


def _kink(what, dist, where=None):
    if KINKS is not None:
        with torch.no_grad():
            d = dist.detach().abs()
            if where is not None:
                d = d[where]
            if d.numel():
                KINKS.append((what, float(d.min())))


# ----------------------------------------------------------------------------------------------
# building blocks


def norm(cfg, x, w, b):
    eps = cfg.norm_eps
    if cfg.norm == "layernorm":
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance
        return (x - mean) / torch.sqrt(var + eps) * w + b
    else:
        ms = (x * x).mean(-1, keepdim=True)
        return x / torch.sqrt(ms + eps) * w


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def relu(x):
    return torch.clamp(x, min=0.0)


def silu(x):
    return x * torch.sigmoid(x)


ACT = {"relu": relu, "gelu": gelu_tanh, "swish": silu, "reglu": relu, "geglu": gelu_tanh, "swiglu": silu}


def linear(x, w, b=None):
    y = x @ w.transpose(-1, -2)
    return y if b is None else y + b


def sinusoidal_table(T, C):
    pe = torch.zeros(T, C, dtype=DT)
    t = torch.arange(T, dtype=DT)[:, None]
    i = torch.arange(C // 2, dtype=DT)[None, :]
    ang = t * torch.pow(torch.tensor(10000.0, dtype=DT), -2.0 * i / C)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang)[:, : (C - C // 2)]
    return pe


def rope(x, base):
    """x: (B, NH, T, hs); rotate-half, theta = t * base^(-2i/hs), t 0-based"""
    T, hs = x.shape[-2], x.shape[-1]
    half = hs // 2
    t = torch.arange(T, dtype=DT)[:, None]
    i = torch.arange(half, dtype=DT)[None, :]
    theta = t * torch.pow(torch.tensor(float(base), dtype=DT), -2.0 * i / hs)  # (T, half)
    c, s = torch.cos(theta), torch.sin(theta)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


def alibi_slopes(NH):
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / NH) for h in range(NH)], dtype=DT)


def visible_mask(cfg, T):
    """(T, T) bool, [t, j] = query t sees key j (docs/variants.md "Masks"; positions in the model's sequence)"""
    t = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    causal = j <= t
    if cfg.mask == "causal":
        return causal
    if cfg.mask == "prefix":
        p_ = cfg.mask_param
        return torch.where(t < p_, j < p_, causal)
    w = cfg.mask_param
    return causal & (j >= t - w + 1)


def feature_map(cfg, x, p, l):
    """phi on (..., hs), applied to q and k after RoPE"""
    if cfg.phi == "none":
        return x
    if cfg.phi == "elu1":
        return torch.nn.functional.elu(x) + 1.0
    # mlp: phi(x) = W2 relu(W1 x), weights (out, in)
    pre = linear(x, p["phi_w1"][l])
    _kink("phi relu", pre)
    return linear(relu(pre), p["phi_w2"][l])


def row_map(cfg, s, vis, T):
    """s: (..., n) scores (slot column first when there is one), vis: bool (..., n) visible entries.
    Returns the weights p (..., n), zero on invisible entries.  T: the forward's sequence length
    (clipped softmax's gamma = -alpha/T)."""
    visf = vis.to(DT)
    if cfg.attn in ("softmax", "clipped"):
        sm = torch.softmax(s.masked_fill(~vis, float("-inf")), dim=-1)
        if cfg.attn == "softmax":
            return cfg.row_mass * sm
        gamma = -cfg.clip_alpha / (cfg.clip_len if cfg.clip_len > 0 else T)  # spec: header [33], 0 = this T
        val = (cfg.clip_zeta - gamma) * sm + gamma
        _kink("clip 0", val, vis)
        _kink("clip 1", val - 1.0, vis)
        return torch.clamp(val, 0.0, 1.0) * visf
    s0 = s.masked_fill(~vis, 0.0)  # finite everywhere, so invisible entries get exactly zero gradient
    if cfg.attn == "softpick":
        e = torch.exp(s0) - 1.0
        _kink("softpick s", s0, vis)
        Z = (torch.abs(e) * visf).sum(-1, keepdim=True) + 1e-6
        return relu(e) * visf / Z
    if cfg.attn == "sigmoid":
        a = torch.sigmoid(s0 + cfg.sigmoid_bias)
    elif cfg.attn == "elu1":
        a = torch.where(s0 > 0, s0 + 1.0, torch.exp(torch.clamp(s0, max=0.0)))
    else:  # linear
        a = s0
    a = a * visf
    if cfg.attn_norm == "none":
        return a
    r = a.sum(-1, keepdim=True)
    if cfg.attn_norm == "sum":
        if cfg.attn == "linear":  # signed weights can cancel: a / r explodes near r = 0
            _kink("sum r", r)
        return a / (r + 1e-8)
    _kink("clamp |r|-1", torch.abs(r) - 1.0)
    return a / torch.clamp(torch.abs(r), min=1.0)


def attention(cfg, x, p, l, gate_in=None):
    """x: (B, T, C) attention input (already normed in pre placement); gate_in: the gate's input x.
    Returns out (B,T,C) and the weights P (B,NH,T,n) with n = T, or T+1 with a slot (column 0 = slot)."""
    B, T, C = x.shape
    NH, hs = cfg.NH, cfg.hs
    tau = 1.0 / math.sqrt(hs)
    qkv = linear(x, p["qkvw"][l], p["qkvb"][l] if cfg.biases else None)  # (B,T,3C)
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]

    def heads(z):
        return z.reshape(B, T, NH, hs).transpose(1, 2)  # (B,NH,T,hs)

    q, k, v = heads(q), heads(k), heads(v)
    if cfg.positions == "rope":
        q = rope(q, cfg.rope_base)
        k = rope(k, cfg.rope_base)
    fq, fk = feature_map(cfg, q, p, l), feature_map(cfg, k, p, l)
    s = tau * (fq @ fk.transpose(-1, -2))  # (B,NH,T,T) s[t,j]
    if cfg.positions == "alibi":
        t = torch.arange(T, dtype=DT)
        dist = (t[:, None] - t[None, :]).abs()  # |t - j| (spec: -m_h |t - j|; causally t - j)
        s = s - alibi_slopes(NH)[:, None, None] * dist[None]
    vis = visible_mask(cfg, T).expand(B, NH, T, T)
    vstar = None
    if cfg.has_slot:
        if cfg.slot == "kv":
            ks = p["kstar"][l].expand(NH, hs)  # (NH, hs): per head, or the shared row broadcast
            s_star = tau * (q * ks[None, :, None, :]).sum(-1, keepdim=True)  # q after RoPE, k* not rotated
            if cfg.vstar == "learn":
                vstar = p["vstar"][l].expand(NH, hs)
            elif cfg.vstar == "fixed":
                vstar = torch.full((NH, hs), cfg.vstar_value, dtype=DT)
        elif cfg.slot == "logit":
            s_star = p["sink_logit"][l][None, :, None, None].expand(B, NH, T, 1)
        else:  # zero
            s_star = torch.zeros(B, NH, T, 1, dtype=DT)
        s = torch.cat([s_star, s], dim=-1)
        vis = torch.cat([torch.ones(B, NH, T, 1, dtype=torch.bool), vis], dim=-1)
    P = row_map(cfg, s, vis, T)
    if cfg.has_slot:
        y = P[..., 1:] @ v
        if vstar is not None:
            y = y + P[..., :1] * vstar[None, :, None, :]
    else:
        y = P @ v  # (B,NH,T,hs)
    if cfg.value_bias:
        y = y + p["vbias"][l].expand(NH, hs)[None, :, None, :]
    y = y.transpose(1, 2).reshape(B, T, C)
    if cfg.gate != "none":
        g = torch.sigmoid(linear(gate_in, p["gate_w"][l]))  # (B,T,C) or (B,T,NH)
        if cfg.gate == "headwise":
            g = g.repeat_interleave(hs, dim=-1)
        y = y * g
    out = linear(y, p["attprojw"][l], p["attprojb"][l] if cfg.biases else None)
    return out, P


def ffn(cfg, x, p, l):
    bias = cfg.biases
    a = ACT[cfg.ffn]
    h = a(linear(x, p["fcw"][l], p["fcb"][l] if bias else None))
    if cfg.gated:
        h = h * linear(x, p["fcw2"][l], p["fcb2"][l] if bias else None)
    return linear(h, p["fcprojw"][l], p["fcprojb"][l] if bias else None)


# ----------------------------------------------------------------------------------------------
# full model


def loss_weights(cfg, T):
    """(T,) weights over the T real positions whose mean is the loss: 1 where a position counts.
    Prefix mask: model positions t >= p - 1 (with a sink token, real position r is model position r + 1)."""
    w = torch.ones(T, dtype=DT)
    if cfg.mask == "prefix":
        off = 1 if cfg.sink_token else 0
        tm = torch.arange(T) + off
        w = (tm >= cfg.mask_param - 1).to(DT)
    return w


def forward(cfg, p, inputs, targets=None, internals=False):
    """p: dict name -> float64 tensor (file shapes). inputs/targets: (B,T) integer tensors (real tokens).
    Returns dict: logits (B,T,V) [first V columns only, real positions only], loss (if targets), and with
    internals=True: probs: list over layers of (B,NH,Tm,n) (Tm = T+1 with a sink token, n = Tm+1 with a
    slot, slot column 0); resid: list of L+1 (B,Tm,C) (x0, then after every block)."""
    inputs = torch.as_tensor(np.asarray(inputs), dtype=torch.long)
    B, T = inputs.shape
    Tm = T + 1 if cfg.sink_token else T  # positions the model runs
    assert Tm <= cfg.maxT
    C, L = cfg.C, cfg.L
    ln = cfg.norm == "layernorm"
    x = p["wte"][inputs]  # (B,T,C)
    if cfg.sink_token:
        x = torch.cat([p["sink_token"][None, None, :].expand(B, 1, C), x], dim=1)
    if cfg.positions == "learned":
        x = x + p["wpe"][:Tm][None]
    elif cfg.positions == "sinusoidal":
        x = x + sinusoidal_table(Tm, C)[None]
    resid = [x]
    probs = []
    for l in range(L):
        n1 = (lambda z: norm(cfg, z, p["ln1w"][l], p["ln1b"][l] if ln else None))
        n2 = (lambda z: norm(cfg, z, p["ln2w"][l], p["ln2b"][l] if ln else None))
        if cfg.placement == "pre":
            xn = n1(x)
            a, P = attention(cfg, xn, p, l, gate_in=xn)
            x = x + a
            x = x + ffn(cfg, n2(x), p, l)
        else:
            a, P = attention(cfg, x, p, l, gate_in=x)
            x = n1(x + a)
            x = n2(x + ffn(cfg, x, p, l))
        probs.append(P)
        resid.append(x)
    if cfg.placement == "pre":
        h = norm(cfg, x, p["lnfw"], p["lnfb"] if ln else None)
    else:
        h = x
    if cfg.sink_token:
        h = h[:, 1:]  # no logits (and no loss) for the sink position
    W = p["wte"] if cfg.tied else p["lm_head"]
    logits = (h @ W.t())[..., :cfg.V]  # padded columns ignored
    out = {"logits": logits}
    if targets is not None:
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.V), targets.reshape(-1), reduction="none")
        w = loss_weights(cfg, T)[None, :].expand(B, T).reshape(-1)
        out["loss"] = (ce * w).sum() / w.sum()
    if internals:
        out["probs"] = probs
        out["resid"] = resid
    return out


def to_torch_params(cfg, params, requires_grad=False):
    """dict of (fp32) numpy arrays -> OrderedDict of float64 leaf tensors in file order"""
    out = OrderedDict()
    for name in param_shapes(cfg):
        t = torch.tensor(np.asarray(params[name], dtype=np.float64), dtype=DT)
        t.requires_grad_(requires_grad)
        out[name] = t
    return out


def loss_and_grads(cfg, params, inputs, targets):
    """-> (logits float64 np (B,T,V), loss float, grads OrderedDict of float64 np arrays)"""
    p = to_torch_params(cfg, params, requires_grad=True)
    out = forward(cfg, p, inputs, targets)
    out["loss"].backward()
    grads = OrderedDict((k, v.grad.detach().numpy().copy()) for k, v in p.items())
    return out["logits"].detach().numpy(), float(out["loss"].item()), grads


def flat_grads(cfg, grads):
    return np.concatenate([np.asarray(grads[k], dtype=np.float64).reshape(-1) for k in param_shapes(cfg)])


def adamw_curve(cfg, params, inputs, targets, n_steps, lr, beta1, beta2, eps, wd, grad_clip):
    """The spec's loss curve: losses[i] = loss(params) before step i; AdamW with global-norm clip,
    decoupled weight decay on every parameter, constant lr.  Done in float64 throughout."""
    p = to_torch_params(cfg, params, requires_grad=True)
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    vv = {k: torch.zeros_like(v) for k, v in p.items()}
    losses = []
    for i in range(n_steps):
        for t_ in p.values():
            t_.grad = None
        loss = forward(cfg, p, inputs, targets)["loss"]
        loss.backward()
        losses.append(float(loss.item()))
        with torch.no_grad():
            g = {k: v.grad.clone() for k, v in p.items()}
            gn = math.sqrt(sum(float((x * x).sum()) for x in g.values()))
            if grad_clip > 0 and gn > grad_clip:
                sc = grad_clip / gn
                for k in g:
                    g[k] = g[k] * sc
            t = i + 1
            for k, w in p.items():
                m[k] = beta1 * m[k] + (1 - beta1) * g[k]
                vv[k] = beta2 * vv[k] + (1 - beta2) * g[k] * g[k]
                mhat = m[k] / (1 - beta1 ** t)
                vhat = vv[k] / (1 - beta2 ** t)
                w -= lr * (mhat / (torch.sqrt(vhat) + eps) + wd * w)
    return np.array(losses)


# ----------------------------------------------------------------------------------------------
# eval-sink metrics


def is_probability(cfg):
    """docs/metrics.md: the row maps whose weights form a probability distribution, read as they are;
    every other design is measured on proxy scores |p_j| / sum_j |p_j|."""
    if cfg.attn == "softmax":
        return cfg.row_mass == 1.0
    if cfg.attn in ("sigmoid", "elu1"):
        return cfg.attn_norm == "sum"
    if cfg.attn == "linear":
        return cfg.phi == "elu1" and cfg.attn_norm == "sum"
    return False


def metric_matrices(cfg, P):
    """P: the forward's weights of one layer (S, NH, Tm, n).  Returns the matrix the metrics read:
    (S, NH, T, T) without slot/sink token, else (S, NH, T+1, T+1) with index 0 = the slot (or the sink
    token) whose own row is one-hot on itself; proxy scores for non-probability row maps."""
    W = P if is_probability(cfg) else P.abs() / P.abs().sum(-1, keepdim=True)
    if cfg.has_slot:  # (S,NH,T,T+1): prepend the slot's own row
        S_, NH, T, n = W.shape
        row0 = torch.zeros(S_, NH, 1, n, dtype=DT)
        row0[..., 0] = 1.0
        return torch.cat([row0, W], dim=-2)
    if cfg.sink_token:  # (S,NH,T+1,T+1) already; the sink token's own row is one-hot on itself
        W = W.clone()
        W[..., 0, :] = 0.0
        W[..., 0, 0] = 1.0
    return W


def sink_metrics(cfg, params, tokens, S, T, eps=0.3, kmax=10):
    """tokens: 1-D token array (probe shard). Windows s = tokens[s*T:(s+1)*T], s < S, no BOS.
    Returns dict with S, T, eps, proxy, sink (kmax values, percent), alpha1 (L x NH), norm_ratio (L+1),
    row_mass (L), and for a slot or sink token sink_star (percent) and alpha_star (L x NH); plus 'alpha'
    (S, L, NH, min(kmax,T)) and 'alpha_star_all' (S, L, NH) for margin inspection."""
    tokens = np.asarray(tokens).astype(np.int64)
    assert tokens.size >= S * T
    x = torch.as_tensor(tokens[:S * T].reshape(S, T))
    p = to_torch_params(cfg, params)
    with torch.no_grad():
        out = forward(cfg, p, x, internals=True)
    if cfg.mask != "causal":  # the spec averages alpha_k over the queries that see k; only the causal case is here
        raise NotImplementedError("sink_metrics: only the causal mask is implemented in the reference")
    starred = cfg.has_slot or cfg.sink_token
    o = 1 if starred else 0  # matrix index of real token 0
    M = torch.stack([metric_matrices(cfg, P) for P in out["probs"]], dim=1)  # (S, L, NH, T+o, T+o)
    K = min(kmax, T)
    alpha = torch.zeros(S, cfg.L, cfg.NH, K, dtype=DT)
    for k in range(1, K + 1):  # 1-based real token k at matrix index k-1+o, read over real queries t >= k
        idx = k - 1 + o
        alpha[..., k - 1] = M[..., idx:, idx].mean(dim=-1)
    ind = (alpha > eps).to(DT)  # (S,L,NH,K)
    sink = 100.0 * ind.mean(dim=(1, 2)).mean(dim=0)  # (K,)
    alpha1 = alpha[..., 0].mean(dim=0)  # (L,NH)
    # row mass sum_j p_j (slot weight included) over the real query rows, from the forward's weights
    rm = []
    for P in out["probs"]:
        rows = P[..., 1:, :] if cfg.sink_token else P
        rm.append(float(rows.sum(-1).mean()))
    ratios = []
    for r in out["resid"]:
        if cfg.sink_token:
            r = r[:, 1:]  # real tokens only: h_1 = the first real token
        nr = torch.linalg.norm(r, dim=-1)  # (S,T)
        ratios.append((nr[:, 0] / nr[:, 1:].mean(dim=1)).mean().item())
    res = {
        "S": S, "T": T, "eps": eps,
        "proxy": not is_probability(cfg),
        "sink": [float(v) for v in sink],
        "alpha1": [[float(v) for v in row] for row in alpha1],
        "norm_ratio": ratios,
        "row_mass": rm,
    }
    if starred:
        a_star = M[..., :, 0].mean(dim=-1)  # (S,L,NH): (1 + sum_{t=1..T} A[t,*]) / (T+1)
        res["sink_star"] = float(100.0 * (a_star > eps).to(DT).mean(dim=(1, 2)).mean(dim=0))
        res["alpha_star"] = [[float(v) for v in row] for row in a_star.mean(dim=0)]
        res["alpha_star_all"] = a_star.numpy()
    if cfg.sink_token:
        res["norm_ratio_rows"] = "real"
    res["alpha"] = alpha.numpy()
    return res
