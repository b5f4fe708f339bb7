"""Independent PyTorch reference of the sinkscope model family, written from the specification in README.md ("The model family", "File formats") only.

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


def attention(cfg, x, p, l, want_probs=False):
    """x: (B, T, C) (already normed in pre placement). Returns out (B,T,C), probs (B,NH,T,T)."""
    B, T, C = x.shape
    NH, hs = cfg.NH, cfg.hs
    qkv = linear(x, p["qkvw"][l], p["qkvb"][l] if cfg.biases else None)  # (B,T,3C)
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]

    def heads(z):
        return z.reshape(B, T, NH, hs).transpose(1, 2)  # (B,NH,T,hs)

    q, k, v = heads(q), heads(k), heads(v)
    if cfg.positions == "rope":
        q = rope(q, cfg.rope_base)
        k = rope(k, cfg.rope_base)
    s = q @ k.transpose(-1, -2) / math.sqrt(hs)  # (B,NH,T,T) s[t,j]
    if cfg.positions == "alibi":
        t = torch.arange(T, dtype=DT)
        dist = t[:, None] - t[None, :]  # t - j
        s = s - alibi_slopes(NH)[:, None, None] * dist[None]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    P = torch.softmax(s, dim=-1)
    y = P @ v  # (B,NH,T,hs)
    y = y.transpose(1, 2).reshape(B, T, C)
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


def forward(cfg, p, inputs, targets=None, internals=False):
    """p: dict name -> float64 tensor (file shapes). inputs/targets: (B,T) integer tensors.
    Returns dict: logits (B,T,V) [first V columns only], loss (if targets), and with internals=True:
    probs: list over layers of (B,NH,T,T); resid: list of L+1 (B,T,C) (x0, then after every block)."""
    inputs = torch.as_tensor(np.asarray(inputs), dtype=torch.long)
    B, T = inputs.shape
    assert T <= cfg.maxT
    C, L = cfg.C, cfg.L
    ln = cfg.norm == "layernorm"
    x = p["wte"][inputs]  # (B,T,C)
    if cfg.positions == "learned":
        x = x + p["wpe"][:T][None]
    elif cfg.positions == "sinusoidal":
        x = x + sinusoidal_table(T, C)[None]
    resid = [x]
    probs = []
    for l in range(L):
        n1 = (lambda z: norm(cfg, z, p["ln1w"][l], p["ln1b"][l] if ln else None))
        n2 = (lambda z: norm(cfg, z, p["ln2w"][l], p["ln2b"][l] if ln else None))
        if cfg.placement == "pre":
            a, P = attention(cfg, n1(x), p, l)
            x = x + a
            x = x + ffn(cfg, n2(x), p, l)
        else:
            a, P = attention(cfg, x, p, l)
            x = n1(x + a)
            x = n2(x + ffn(cfg, x, p, l))
        probs.append(P)
        resid.append(x)
    if cfg.placement == "pre":
        h = norm(cfg, x, p["lnfw"], p["lnfb"] if ln else None)
    else:
        h = x
    W = p["wte"] if cfg.tied else p["lm_head"]
    logits = (h @ W.t())[..., :cfg.V]  # padded columns ignored
    out = {"logits": logits}
    if targets is not None:
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        out["loss"] = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.V), targets.reshape(-1))
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


def sink_metrics(cfg, params, tokens, S, T, eps=0.3, kmax=10):
    """tokens: 1-D token array (probe shard). Windows s = tokens[s*T:(s+1)*T], s < S, no BOS.
    Returns dict with S, T, eps, sink (kmax values, percent), alpha1 (L x NH), norm_ratio (L+1),
    plus 'alpha' (S, L, NH, T) for margin inspection."""
    tokens = np.asarray(tokens).astype(np.int64)
    assert tokens.size >= S * T
    x = torch.as_tensor(tokens[:S * T].reshape(S, T))
    p = to_torch_params(cfg, params)
    with torch.no_grad():
        out = forward(cfg, p, x, internals=True)
    A = torch.stack(out["probs"], dim=1)  # (S, L, NH, T, T)  A[..., t, k]
    colsum = A.sum(dim=-2)  # sum over queries t (causal: zero above diagonal) -> (S,L,NH,T)
    counts = torch.arange(T, 0, -1, dtype=DT)  # 0-based k sees T-k queries = T-(k1)+1 for 1-based k1
    alpha = colsum / counts  # (S,L,NH,T), alpha[..., k0] = alpha_{k0+1}
    K = min(kmax, T)
    ind = (alpha[..., :K] > eps).to(DT)  # (S,L,NH,K)
    sink = 100.0 * ind.mean(dim=(1, 2)).mean(dim=0)  # (K,)
    alpha1 = alpha[..., 0].mean(dim=0)  # (L,NH)
    ratios = []
    for r in out["resid"]:
        nr = torch.linalg.norm(r, dim=-1)  # (S,T)
        ratios.append((nr[:, 0] / nr[:, 1:].mean(dim=1)).mean().item())
    return {
        "S": S, "T": T, "eps": eps,
        "sink": [float(v) for v in sink],
        "alpha1": [[float(v) for v in row] for row in alpha1],
        "norm_ratio": ratios,
        "alpha": alpha.numpy(),
    }
