"""Figures from run directories: how the attention sink forms during training.

usage: /usr/bin/python3 dev/experiments/plot.py RUN_DIR [RUN_DIR ...] --out DIR [--steps S1,S2,...] [--title TEXT]
                                                [--data FILE]

Reads each run's log.jsonl (docs/output.md) and writes PNGs to DIR, with an index.html that shows them together:
  sink_and_loss.png      Sink_1 (and Sink_* on a slot) and the losses against tokens seen, every run on one figure
  norm_ratio_runs.png    every run's first-token norm ratio over training on one figure, at the block where it ends
                         largest
  norm_ratio_<run>.png   the first token's hidden-state norm over the mean of the others', per layer, over training (the
                         massive activation that comes with a sink)
  alpha1_<run>.png       alpha_1 (a head's mean attention on the first token) as a layer x head heatmap at chosen steps
                         (--steps; default: the first and last sink measurement)
  sink_profile.png       Sink_k against position k at each run's last measurement (a fixed token at position k, or
                         a prefix, moves the sink there)
A run's label is its directory name. --data FILE also writes the plotted series as JSON (per run: tokens in
millions and Sink_1 at each measurement, the norm ratios, the validation losses), so a test can check what a figure
shows. Uses Debian's python3-matplotlib (the Agg backend: no display needed).
"""
import argparse
import html
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(path):
    log = os.path.join(path, "log.jsonl")
    if not os.path.exists(log):
        sys.exit("plot: %s has no log.jsonl (is it a run directory?)" % path)
    recs = []
    with open(log, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                sys.exit("plot: %s line %d is not JSON" % (log, n))
    configs = [r for r in recs if r.get("type") == "config"]
    if not configs:
        sys.exit("plot: %s has no config record" % log)
    cfg = configs[-1]
    tokens_per_step = cfg.get("total-batch") or cfg["batch"] * cfg["seq-len"]
    if tokens_per_step <= 0:
        tokens_per_step = cfg["batch"] * cfg["seq-len"]
    by_step = {}  # a resumed run may repeat steps: the last record of a step wins
    for r in recs:
        if r.get("type") in ("train", "val", "sink"):
            by_step[(r["type"], r["step"])] = r
    kind = lambda t: [by_step[k] for k in sorted(by_step) if k[0] == t]  # noqa: E731
    label = os.path.basename(os.path.normpath(path))
    return {"label": label, "cfg": cfg, "tokens_per_step": tokens_per_step, "train": kind("train"),
            "val": kind("val"), "sink": kind("sink")}


def style(ax, xlabel, ylabel, title):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def save(fig, out, name):
    fig.tight_layout()
    path = os.path.join(out, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tokens_m(run, step):
    return step * run["tokens_per_step"] / 1e6


def plot_sink_and_loss(runs, out, title):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        s = run["sink"]
        if not s:
            continue
        x = [tokens_m(run, r["step"]) for r in s]
        proxy = " (proxy*)" if any(r.get("proxy") for r in s) else ""  # not a distribution: read the norm ratio
        line, = a1.plot(x, [r["sink"][0] for r in s], marker="o", ms=3, label=run["label"] + proxy)
        if any("sink_star" in r for r in s):
            a1.plot(x, [r.get("sink_star", 0.0) for r in s], ls="--", color=line.get_color(),
                    label=run["label"] + " (Sink_*)")
        if run["train"]:
            a2.plot([tokens_m(run, r["step"]) for r in run["train"]], [r["loss"] for r in run["train"]],
                    color=line.get_color(), alpha=0.35, lw=0.8)
        if run["val"]:
            a2.plot([tokens_m(run, r["step"]) for r in run["val"]], [r["val_loss"] for r in run["val"]],
                    color=line.get_color(), marker="o", ms=3, label=run["label"] + " (val)")
    style(a1, "tokens seen (millions)", "Sink_1 (% of heads, eps = 0.3)", "attention sink on the first token")
    style(a2, "tokens seen (millions)", "loss (train faint, validation marked)", "loss")
    if title:
        fig.suptitle(title)
    return save(fig, out, "sink_and_loss.png")


def plot_norm_ratio(run, out):
    s = [r for r in run["sink"] if r.get("norm_ratio")]
    if not s:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [tokens_m(run, r["step"]) for r in s]
    for layer in range(len(s[0]["norm_ratio"])):
        name = "embedding" if layer == 0 else "after block %d" % layer
        ax.plot(x, [r["norm_ratio"][layer] for r in s], marker="o", ms=3, label=name)
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    style(ax, "tokens seen (millions)", "||h_0|| / mean over t > 0 of ||h_t||", "%s: first-token norm ratio" % run["label"])
    return save(fig, out, "norm_ratio_%s.png" % run["label"])


def plot_norm_ratio_runs(runs, out, title):
    """Every run's first-token norm ratio on one figure, at the block where it ends largest."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    drawn = 0
    for run in runs:
        s = [r for r in run["sink"] if r.get("norm_ratio")]
        if not s or len(s[0]["norm_ratio"]) < 2:
            continue
        last = s[-1]["norm_ratio"]
        block = max(range(1, len(last)), key=lambda k: last[k])
        ax.plot([tokens_m(run, r["step"]) for r in s], [r["norm_ratio"][block] for r in s], marker="o", ms=3,
                label="%s (after block %d)" % (run["label"], block))
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    style(ax, "tokens seen (millions)", "||h_0|| / mean over t > 0 of ||h_t||", "first-token norm ratio (the massive activation)")
    if title:
        fig.suptitle(title, fontsize=9)
    return save(fig, out, "norm_ratio_runs.png")


def plot_alpha1(run, out, steps):
    s = {r["step"]: r for r in run["sink"] if r.get("alpha1")}
    if not s:
        return None
    chosen = [st for st in steps if st in s] if steps else sorted({min(s), max(s)})
    if not chosen:
        sys.exit("plot: %s has no sink measurement at steps %s (it has %s)" %
                 (run["label"], steps, sorted(s)))
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen) + 1, 3.2), squeeze=False)
    vmax = max(max(max(row) for row in s[st]["alpha1"]) for st in chosen)
    for ax, st in zip(axes[0], chosen):
        im = ax.imshow(s[st]["alpha1"], aspect="auto", cmap="viridis", vmin=0, vmax=max(vmax, 1e-6))
        ax.set_title("step %d (%.1fM tokens)" % (st, tokens_m(run, st)), fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_yticks(range(len(s[st]["alpha1"])))
    fig.colorbar(im, ax=list(axes[0]), label="alpha_1")
    fig.suptitle("%s: attention on the first token per head" % run["label"], fontsize=10, y=1.04)
    path = os.path.join(out, "alpha1_%s.png" % run["label"])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_sink_profile(runs, out):
    fig, ax = plt.subplots(figsize=(6, 4))
    any_line = False
    for run in runs:
        if not run["sink"]:
            continue
        last = run["sink"][-1]
        k = list(range(1, len(last["sink"]) + 1))
        ax.plot(k, last["sink"], marker="o", ms=3, label="%s (step %d)" % (run["label"], last["step"]))
        any_line = True
    if not any_line:
        plt.close(fig)
        return None
    style(ax, "position k", "Sink_k (% of heads)", "where the sink sits")
    return save(fig, out, "sink_profile.png")


def write_index(out, paths, runs, title):
    rows = []
    for run in runs:
        last = run["sink"][-1] if run["sink"] else None
        rows.append("<tr><td>%s</td><td>%.1fM</td><td>%s</td><td>%s</td></tr>" % (
            html.escape(run["label"]), tokens_m(run, run["train"][-1]["step"]) if run["train"] else 0.0,
            "%.2f%%" % last["sink"][0] if last else "-", "%.4f" % run["val"][-1]["val_loss"] if run["val"] else "-"))
    imgs = "\n".join('<figure><img src="%s"><figcaption>%s</figcaption></figure>' %
                     (html.escape(os.path.basename(p)), html.escape(os.path.basename(p))) for p in paths)
    page = """<!doctype html><meta charset="utf-8"><title>%s</title>
<style>body{font-family:sans-serif;margin:1em} figure{display:inline-block;margin:.5em;vertical-align:top}
img{max-width:640px} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 8px}</style>
<h1>%s</h1><table><tr><th>run</th><th>tokens</th><th>last Sink_1</th><th>last val loss</th></tr>%s</table>
%s
""" % (html.escape(title), html.escape(title), "".join(rows), imgs)
    with open(os.path.join(out, "index.html"), "w") as f:
        f.write(page)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories (each with a log.jsonl)")
    ap.add_argument("--out", required=True, help="directory for the PNGs and index.html")
    ap.add_argument("--steps", default="", help="steps of the alpha_1 heatmaps, comma separated")
    ap.add_argument("--title", default="", help="a title for the figures and the page")
    ap.add_argument("--data", default="", help="also write the plotted series to this JSON file")
    a = ap.parse_args()
    steps = [int(x) for x in a.steps.split(",") if x.strip()] if a.steps else []
    runs = [read_run(p) for p in a.runs]
    os.makedirs(a.out, exist_ok=True)
    paths = [plot_sink_and_loss(runs, a.out, a.title), plot_norm_ratio_runs(runs, a.out, a.title)]
    for run in runs:
        paths.append(plot_norm_ratio(run, a.out))
        paths.append(plot_alpha1(run, a.out, steps))
    paths.append(plot_sink_profile(runs, a.out))
    paths = [p for p in paths if p]
    write_index(a.out, paths, runs, a.title or "sinkscope runs")
    if a.data:
        series = {run["label"]: {
            "tokens_m": [tokens_m(run, r["step"]) for r in run["sink"]],
            "sink1": [r["sink"][0] for r in run["sink"]],
            "norm_ratio": [r.get("norm_ratio") for r in run["sink"]],
            "val_tokens_m": [tokens_m(run, r["step"]) for r in run["val"]],
            "val_loss": [r["val_loss"] for r in run["val"]]} for run in runs}
        with open(a.data, "w") as f:
            json.dump(series, f)
    for p in paths + [os.path.join(a.out, "index.html")]:
        print(p)


if __name__ == "__main__":
    main()
