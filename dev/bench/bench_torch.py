"""The PyTorch side of dev/bench/bench.py (make bench): train the reference model (dev/reference/model.py) in float32 with torch's AdamW
on the shape a sinkscope run used, and print the median step time.

usage: bench_torch.py LOG.jsonl STEPS THREADS
LOG.jsonl is the log of a train_gpt_cpu run: its "config" record gives the model and the batch (B, T), so both engines
train exactly the same shape: the reference's forward, with torch's own layer_norm, gelu and silu kernels in place of
its explicit formulas, autograd's backward, every tensor a leaf of its own. Prints one JSON line: {"ms": median step
ms over the steps after the first two, "tok_per_s": B*T / that, "loss": the last loss}. Weights start as N(0, 0.02)
(norm weights 1) and the tokens are random: neither changes the work done per step.
"""
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import formats as fm  # noqa: E402
import model as ref  # noqa: E402


def config_from_log(path):
    rec = next(json.loads(line) for line in open(path) if '"type":"config"' in line)
    cfg = fm.Config(V=rec["vocab"], maxT=rec["max-seq-len"], L=rec["layers"], NH=rec["heads"], C=rec["channels"],
                    F=rec["ffn-hidden"], norm=rec["norm"], placement=rec["placement"], ffn=rec["ffn"],
                    positions=rec["pos"], tied=rec["tied"] == "1", biases=rec["bias"] == "1",
                    rope_base=float(rec["rope-base"]), norm_eps=float(rec["norm-eps"]))
    return cfg, int(rec["batch"]), int(rec["seq-len"]), rec


def use_native_kernels():
    """Norms and activations through torch's own fused kernels (the same functions as the reference's explicit
    formulas), as a PyTorch user would write them."""
    F = torch.nn.functional

    def norm(cfg, x, w, b):
        if cfg.norm == "layernorm":
            return F.layer_norm(x, (x.shape[-1],), w, b, cfg.norm_eps)
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps) * w

    ref.norm = norm
    gelu = lambda x: F.gelu(x, approximate="tanh")  # noqa: E731
    ref.ACT.update({"relu": F.relu, "reglu": F.relu, "gelu": gelu, "geglu": gelu, "swish": F.silu, "swiglu": F.silu})


def main():
    log, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    ref.DT = torch.float32  # the reference computes in float64 for the fixtures; the benchmark trains in float32
    use_native_kernels()
    cfg, B, T, rec = config_from_log(log)
    g = torch.Generator().manual_seed(1)
    # The file layout stacks each per-layer tensor along a leading L axis; here every layer gets tensors of its own (as
    # an nn.Module would hold them), since autograd through p[name][l] of a stacked leaf would fill and add a
    # gradient the size of the whole stack once per layer. The reference indexes p[name][l] either way.
    whole_model = {"wte", "wpe", "lnfw", "lnfb", "lm_head", "sink_token"}
    params, leaves = {}, []

    def leaf(shape, norm_weight):
        t = torch.ones(shape) if norm_weight else torch.randn(shape, generator=g) * 0.02
        leaves.append(t.requires_grad_(True))
        return t

    for name, shape in fm.param_shapes(cfg).items():
        is_norm = name.startswith("ln") and name.endswith("w")
        if name in whole_model:
            params[name] = leaf(shape, is_norm)
        else:
            params[name] = [leaf(shape[1:], is_norm) for _ in range(cfg.L)]
    opt = torch.optim.AdamW(leaves, lr=float(rec.get("lr", 3e-4)), weight_decay=0.0)
    times, loss = [], None
    for _ in range(steps):
        x = torch.randint(0, cfg.V, (B, T), generator=g)
        y = torch.randint(0, cfg.V, (B, T), generator=g)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = ref.forward(cfg, params, x, y)["loss"]
        loss.backward()
        opt.step()
        times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times[2:] if len(times) > 2 else times)
    print(json.dumps({"ms": round(ms, 3), "tok_per_s": round(B * T / (ms / 1e3), 1), "loss": float(loss)}))


if __name__ == "__main__":
    main()
