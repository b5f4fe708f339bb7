"""The PyTorch anchor of dev/gpu/check.sh: GPT-2 124M trained the way a PyTorch user would on one GPU, for its tokens/s
and peak memory beside train_gpt's in the same session.

usage: /usr/bin/python3 dev/gpu/torch_gpt2.py [--batch 16] [--seq-len 1024] [--steps 12] [--device cuda|cpu]
                                              [--layers 12 --channels 768 --heads 12 --vocab 50257]

What it is: llm.c's GPT-2 shape (LayerNorm, tanh-GELU, learned positions, tied embeddings, biases) as torch.nn modules,
trained under bf16 autocast with torch's scaled_dot_product_attention (flash attention on an H100/H200) and its fused
AdamW (lr 6e-4, weight decay 0.1), on random tokens (they do not change the work per step). Prints one JSON line:
{"tok_per_s": B*T / the median step time over the steps after the first three, "ms", "peak_gib", "loss", "torch",
"sdpa", "fused_adamw"}.
What it is not: a reference for numbers (dev/reference/model.py is), or torch.compile's speed (compilation takes
minutes of the session's device time).
On a machine without a GPU, --device cpu with a small shape checks that the script runs (torch 1.13 there has no
scaled_dot_product_attention and no fused AdamW: it falls back to the written-out attention and the plain AdamW, and
says so in its JSON line).
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc, self.fcproj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def attention(self, x):
        B, T, C = x.shape
        q, k, v = (z.view(B, T, self.NH, C // self.NH).transpose(1, 2) for z in self.qkv(x).split(C, dim=2))
        if HAS_SDPA:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.NH)
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            y = s.softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, V, maxT, L, C, NH):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(maxT, C)
        self.blocks = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.lnf = nn.LayerNorm(C)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.lnf(x) @ self.wte.weight.t()  # tied
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--channels", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50257)
    a = ap.parse_args()
    if a.steps < 4:
        ap.error("--steps must be at least 4 (the first three are warm-up)")
    dev = torch.device(a.device)
    torch.manual_seed(1)
    model = GPT2(a.vocab, a.seq_len, a.layers, a.channels, a.heads).to(dev)
    fused = dev.type == "cuda" and "fused" in torch.optim.AdamW.__init__.__code__.co_varnames
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, **({"fused": True} if fused else {}))
    x = torch.randint(0, a.vocab, (a.batch, a.seq_len), device=dev)
    y = torch.randint(0, a.vocab, (a.batch, a.seq_len), device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, loss = [], float("nan")
    for _ in range(a.steps):
        t0 = time.perf_counter()
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            out = model(x, y)
        out.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = out.item()  # waits for the step
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times[3:]) * 1000
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    print(json.dumps({"tok_per_s": round(a.batch * a.seq_len / ms * 1000, 1), "ms": round(ms, 3),
                      "peak_gib": round(peak, 3) if peak == peak else None, "loss": round(loss, 4),
                      "torch": torch.__version__, "device": str(dev), "sdpa": HAS_SDPA, "fused_adamw": fused,
                      "B": a.batch, "T": a.seq_len}))


if __name__ == "__main__":
    main()
