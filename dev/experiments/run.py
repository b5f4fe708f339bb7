"""The paper's findings, one named experiment each: train the runs, measure them, compare with the paper.

usage: /usr/bin/python3 dev/experiments/run.py list
       /usr/bin/python3 dev/experiments/run.py show NAME [--device cpu|gpu]
       /usr/bin/python3 dev/experiments/run.py run NAME [NAME ...] [--device cpu|gpu] [--seeds N] [--only LABEL,...]
                                                [--results FILE] [--runs DIR] [--steps N] [--extra "FLAGS"]
       /usr/bin/python3 dev/experiments/run.py report [--results FILE] [--into FILE] [--summary]
       /usr/bin/python3 dev/experiments/run.py check [NAME ...] [--device cpu|gpu]

Each experiment (CATALOGUE below) is a finding of Gu et al. (ICLR 2025, sections 3-4) or of the sink-free designs
after it, as a few runs that differ from a base configuration by a few flags, the paper's numbers, and the directions
the paper reports between the runs ("sigmoid's Sink_1 is below softmax's").

`run` trains each run that is not finished (an interrupted one resumes; a finished one is reused, also by another
experiment with the same flags), then appends one row per run to the results file (default docs/results.tsv): the
setting, tokens, Sink_1, Sink_k at a fixed position, Sink_* on a slot, the largest head's alpha_1, the largest
first-token norm ratio, proxy and row mass, the validation loss, the paper's number, and whether the direction
agrees, and draws the runs' figures (dev/experiments/plot.py) into RUNS/<experiment>/figures.

`check` runs every run of a configuration (default: the GPU one) for 2 steps at a small width on the CPU trainer, so a
flag combination the trainer refuses shows up in seconds here rather than on a borrowed GPU.

Where the direction is judged: each run's value is the mean of its last three measurements (over all seeds), its noise
their standard deviation. A direction "a > b" agrees when mean(a) - mean(b) > 2 sqrt(sd_a^2 + sd_b^2) and the
difference is not zero, disagrees when the opposite holds, and is "within noise" otherwise; "a ~ b" (no effect)
agrees when the difference is within that noise.

CPU configuration: the tiny preset (2 layers, 16 heads of size 8, C 128) on byte-level Brown with a fixed first token
(byte 0, absent from the text: at this scale the sink forms only with it), B 64 x T 64, lr 3e-3, 1500 steps (6.1M
tokens, about 3-4 minutes a run on 2 cores). GPU configuration: the paper's 60M recipe (d 768, L 10, H 8, SwiGLU 1536,
RoPE, lr 4e-4, 100 warmup steps, wd 0.1, no fixed token) on the same bytes, shortened to 2000 steps of 32 x 256
tokens, for ./train_gpt on a GPU.
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import shlex
import subprocess
import tempfile
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

BASE = {
    "cpu": {"fixed-token": 0, "fixed-pos": 0, "steps": 1500, "sink-every": 250, "val-every": 250,
            "save-every": 250, "sample-every": 0},
    "gpu": {"preset": "llama-60m", "vocab": 256, "max-seq-len": 256, "seq-len": 256, "batch": 32, "lr": 4e-4,
            "warmup": 100, "steps": 2000, "sink-every": 200, "val-every": 200, "save-every": 500,
            "sample-every": 0},
}
TRAINER = {"cpu": "./train_gpt_cpu", "gpu": "./train_gpt"}
NOFIX = {"fixed-token": -1}  # the base without the fixed first token (the paper's setting: natural text, no BOS)


class Run:
    def __init__(self, label, flags=None, paper="", focus=None, gpu=None):
        self.label = label
        self.flags = flags or {}
        self.gpu = gpu or {}    # flags that replace these in the GPU configuration (a learning rate at 60M)
        self.paper = paper      # the paper's number for this setting, as the paper reports it
        self.focus = focus      # 1-based position whose Sink_k the row reports (a fixed token, a prefix)


class Experiment:
    def __init__(self, name, finding, runs, checks, seeds=1, gpu=None):
        self.name = name
        self.finding = finding  # what the paper found, in one line
        self.runs = runs
        self.checks = checks    # (label a, ">" | "<" | "~", label b, metric)
        self.seeds = seeds      # seeds the catalogue asks for (effects near the noise get several)
        self.gpu = gpu or {}    # flags the GPU configuration adds to every run


def R(label, paper="", focus=None, gpu=None, **flags):
    return Run(label, {k.replace("_", "-"): v for k, v in flags.items()}, paper, focus, gpu)


CATALOGUE = [
    Experiment("emergence", "the first-token sink emerges early in training and keeps growing (softmax: 18.18)",
               [R("softmax", "18.18"), Run("no-fixed-token", NOFIX, "18.18 (natural first token)")],
               [("softmax", ">", "no-fixed-token", "sink1"), ("softmax", ">", "no-fixed-token", "norm_ratio")]),
    Experiment("softmax-vs-sigmoid", "sigmoid attention without normalisation has no sink (18.18 vs 0.44*)",
               [R("softmax", "18.18"), R("sigmoid", "0.44*", attn="sigmoid"),
                Run("softmax-no-fixed", NOFIX, "18.18"),
                Run("sigmoid-no-fixed", dict(NOFIX, attn="sigmoid"), "0.44*")],
               [("sigmoid", "<", "softmax", "norm_ratio"), ("sigmoid-no-fixed", "<", "softmax-no-fixed", "sink1")],
               seeds=2),
    Experiment("sigmoid-norm", "sigmoid attention normalised over the row has a sink again (30.24 vs 18.18)",
               [R("softmax", "18.18"), R("sigmoid-sum", "30.24", attn="sigmoid", attn_norm="sum")],
               [("sigmoid-sum", ">", "softmax", "sink1")]),
    Experiment("kv-bias", "a learned key (and value) bias slot takes the sink off the first token",
               [R("softmax", "18.18"),
                R("kv-slot", "Sink_* 72.76, Sink_1 0.04", slot="kv"),
                R("k-slot", "Sink_* 73.34, Sink_1 0.00", slot="kv", vstar="zero"),
                R("v-bias", "17.53", value_bias=1)],
               [("kv-slot", "<", "softmax", "sink1"), ("kv-slot", ">", "softmax", "sink_star_or_1"),
                ("k-slot", "<", "softmax", "sink1"), ("v-bias", "~", "softmax", "sink1")]),
    Experiment("sink-token", "a learnable sink token prepended to every sequence takes the sink (Sink_* 74.12)",
               [R("softmax", "18.18"), R("sink-token", "Sink_* 74.12, Sink_1 0.00", sink_token=1)],
               [("sink-token", "<", "softmax", "sink1"), ("sink-token", ">", "softmax", "sink_star_or_1")],
               gpu={"max-seq-len": 257}),  # room for the sink token in front of 256 tokens
    Experiment("fixed-position", "a fixed token at position k moves the sink there (Sink_k 69-74, others ~0)",
               [R("fixed-at-1", "Sink_1 ~70", focus=1), R("fixed-at-4", "Sink_4 ~70", focus=4, fixed_pos=3)],
               [("fixed-at-4", ">", "fixed-at-4", "focus_vs_first")]),
    Experiment("random-first-token", "a random first token still becomes a sink (27.03 vs 18.18)",
               [Run("natural", NOFIX, "18.18"),
                Run("random-first", dict(NOFIX, **{"random-from": 0, "random-to": 1}), "27.03")],
               [("random-first", ">", "natural", "sink1")]),
    Experiment("weight-decay", "more weight decay, more sink up to 0.5, then none (0: 15.20 ... 0.5: 41.08 ... 5: 0.01)",
               [R("wd-0", "15.20", wd=0), R("wd-0.1", "18.18"), R("wd-0.5", "41.08", wd=0.5),
                R("wd-2", "6.13", wd=2), R("wd-5", "0.01", wd=5)],
               [("wd-0.5", ">", "wd-0.1", "sink1"), ("wd-5", "<", "wd-0.1", "sink1")], seeds=2),
    Experiment("learning-rate", "a larger learning rate gives a larger sink (1e-4: 2.90 ... 8e-4: 32.23)",
               [R("lr-low", "2e-4: 11.21", lr=1e-3, gpu={"lr": 2e-4}), R("lr-base", "4e-4: 18.18"),
                R("lr-high", "8e-4: 32.23", lr=6e-3, gpu={"lr": 8e-4})],
               [("lr-high", ">", "lr-base", "sink1"), ("lr-low", "<", "lr-base", "sink1")], seeds=2),
    Experiment("data-amount", "too little training data gives no sink (50-100M tokens: < 1%; 5B: sink)",
               [R("all-data", "18.18 (5B)"), R("5pc-data", "< 1 (50M)", data_fraction=0.05)],
               [("5pc-data", "<", "all-data", "sink1")]),
    Experiment("prefix-lm", "with a bidirectional prefix of 5 the sink sits on a prefix token, not always the first",
               [R("prefix-5", "a prefix token", focus=5, mask="prefix", mask_param=5)],
               [("prefix-5", ">", "prefix-5", "prefix_vs_after")]),
    Experiment("sliding-window", "the sink stays on the first token; a small window prevents it",
               [R("full", "18.18"), R("window-16", "small w: none", mask="window", mask_param=16)],
               [("window-16", "<", "full", "sink1")]),
    Experiment("positional-encoding", "every position encoding gets a sink, RoPE the smallest (NoPE 20.35 ... "
               "learned 33.13)",
               [R("rope", "18.18"), R("none", "20.35", pos="none"), R("sinusoidal", "32.73", pos="sinusoidal"),
                R("learned", "33.13", pos="learned"), R("alibi", "20.78", pos="alibi")],
               [("learned", ">", "rope", "sink1"), ("sinusoidal", ">", "rope", "sink1")]),
    Experiment("norm-placement", "post-norm has a smaller sink (13.54 vs 18.18)",
               [R("pre-norm", "18.18"), R("post-norm", "13.54", placement="post")],
               [("post-norm", "<", "pre-norm", "sink1")]),
    Experiment("ffn", "the FFN type matters little (ReLU 16.90, GeLU 14.76, Swish 17.89, ReGLU 13.88, GeGLU 17.86, "
               "SwiGLU 18.18)",
               [R("swiglu", "18.18"), R("relu", "16.90", ffn="relu"), R("gelu", "14.76", ffn="gelu"),
                R("swish", "17.89", ffn="swish"), R("reglu", "13.88", ffn="reglu"), R("geglu", "17.86", ffn="geglu")],
               [("gelu", "<", "swiglu", "sink1"), ("reglu", "<", "swiglu", "sink1")]),
    Experiment("heads", "the number of heads changes the sink (H=8 18.18, 4 10.68, 2 12.95, 1 19.50); at laptop scale "
               "only many small heads give one (PyTorch model: 4 x 32 none up to 7M tokens)",
               [R("16x8", "H=8: 18.18"), R("8x16", "H=4: 10.68", heads=8), R("4x32", "none at 7M tokens", heads=4)],
               [("4x32", "<", "16x8", "sink1"), ("4x32", "<", "16x8", "norm_ratio")]),
    Experiment("smallest", "the smallest CPU model in which the sink and its massive activation form (this project's "
               "question, not the paper's)",
               [R("tiny-2x16x8", "-"), R("1-layer", "-", layers=1),
                R("C64-16x4", "-", channels=64, ffn_hidden=128), R("C64-8x8", "-", channels=64, ffn_hidden=128, heads=8),
                # weight decay 0.5 gives the strongest softmax sink of the CPU runs: the sigmoid twin beside it
                R("tiny-wd-0.5", "-", wd=0.5), R("sigmoid-wd-0.5", "-", attn="sigmoid", wd=0.5)],
               [("1-layer", ">", "1-layer", "sink1"), ("C64-16x4", ">", "C64-16x4", "sink1"),
                ("C64-8x8", ">", "C64-8x8", "sink1"), ("sigmoid-wd-0.5", "<", "tiny-wd-0.5", "norm_ratio")]),
    Experiment("pytorch-gap", "this project's question: at 16M tokens and weight decay 0.1 this engine's sink (0.84%) "
               "is weaker than an independent PyTorch model's of the same shape (2.2%); is it the FFN width, or the "
               "seed?",
               [R("ffn-256", "PyTorch model: 2.2 at 16M"), R("ffn-512", "-", ffn_hidden=512)],
               [("ffn-512", ">", "ffn-256", "sink1"), ("ffn-512", ">", "ffn-256", "norm_ratio")], seeds=2),
    Experiment("row-mass", "softmax rows that sum to more give a larger sink (2.0: 29.10, 1.0: 18.18, 0.2: 9.41)",
               [R("mass-1", "18.18"), R("mass-2", "29.10", row_mass=2), R("mass-0.2", "9.41", row_mass=0.2)],
               [("mass-2", ">", "mass-1", "sink1"), ("mass-0.2", "<", "mass-1", "sink1")]),
    Experiment("kernels", "attention without normalisation has no sink; an elu+1 feature map with it has one",
               [R("softmax", "18.18"), R("elu1", "0.80*", attn="elu1"), R("linear", "0.00*", attn="linear"),
                R("elu1-features-sum", "53.65*", attn="linear", phi="elu1", attn_norm="sum")],
               [("elu1", "<", "softmax", "norm_ratio"), ("linear", "<", "softmax", "norm_ratio")]),
    Experiment("sink-logit", "a learned sink logit per head (gpt-oss) takes the sink: no first-token sink",
               [R("softmax", "18.18"), R("sink-logit", "sink on the logit", slot="logit"),
                R("softmax-1", "less first-token sink", slot="zero")],
               [("sink-logit", "<", "softmax", "sink1"), ("softmax-1", "<", "softmax", "sink1")]),
    Experiment("gated-attention", "a sigmoid gate on the attention output removes the sink (first-token share "
               "0.467 -> 0.048, max activation 1053 -> 94)",
               [R("softmax", "0.467"), R("gate-headwise", "less", gate="headwise"),
                R("gate-elementwise", "0.048", gate="elementwise")],
               [("gate-elementwise", "<", "softmax", "alpha1_top"), ("gate-elementwise", "<", "softmax",
                                                                      "norm_ratio")]),
    Experiment("softpick", "softpick has no sink (0% sink rate)",
               [R("softmax", "18.18"), R("softpick", "0", attn="softpick")],
               [("softpick", "<", "softmax", "sink1")]),
    Experiment("clipped-softmax", "clipped softmax lets a head give exact zeros: smaller outliers (massive activations)",
               [R("softmax", "18.18"), R("clipped", "smaller outliers", attn="clipped")],
               [("clipped", "<", "softmax", "norm_ratio")]),
]
BY_NAME = {e.name: e for e in CATALOGUE}


def extra_flags(extra):
    """--extra '--flag value ...' as a dict."""
    words = shlex.split(extra)
    if len(words) % 2 or not all(w.startswith("--") for w in words[::2]):
        sys.exit("run: --extra takes '--flag value' pairs, got '%s'" % extra)
    return {k[2:]: v for k, v in zip(words[::2], words[1::2])}


def flags_of(exp, run, device, seed, steps=None, extra=""):
    f = dict(BASE[device])
    if device == "gpu":
        f.update(exp.gpu)
    f.update(run.flags)
    if device == "gpu":
        f.update(run.gpu)
    if f.get("fixed-token", -1) == -1:
        f.pop("fixed-token", None)
        f.pop("fixed-pos", None)
    if steps:
        f["steps"] = steps
    f.update(extra_flags(extra))
    if seed != 1337:
        f["seed"] = seed
    return f


def argv_of(flags):
    out = []
    for k, v in flags.items():
        out += ["--" + k, str(v)]
    return out


def run_dir(runs_root, device, argv):
    h = hashlib.sha1((device + " " + " ".join(argv)).encode()).hexdigest()[:10]
    return os.path.join(runs_root, device, h)


def read_log(d):
    recs = []
    path = os.path.join(d, "log.jsonl")
    if not os.path.exists(path):
        return recs
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line:
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:  # the trainer never leaves a torn record: something else wrote here
                    sys.exit("run: %s line %d is not JSON (delete the run directory to train it again)" % (path, n))
    return recs


def finished(d, steps):
    return any(r.get("type") == "done" and r.get("step") == steps for r in read_log(d))


def train(device, argv, d, steps):
    if finished(d, steps):
        print("run: %s is done, reused" % d)
        return
    has_state = os.path.isdir(d) and any(n.startswith("state_") for n in os.listdir(d))
    cmd = [TRAINER[device]] + (["--resume", d] if has_state else argv + ["--out", d, "--overwrite"])
    print("run: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        sys.exit("run: %s stopped with exit status %d (its directory %s keeps what was saved; run the same command "
                 "again to resume)" % (TRAINER[device], rc, d))
    if not finished(d, steps):
        sys.exit("run: %s has no end-of-run record for step %d" % (d, steps))


def measure(d, focus):
    """The row's numbers from a finished run's log: the last sink record, and its last three for the noise."""
    recs = read_log(d)
    cfg = [r for r in recs if r.get("type") == "config"][-1]
    sinks = {r["step"]: r for r in recs if r.get("type") == "sink"}
    sinks = [sinks[s] for s in sorted(sinks)]
    vals = {r["step"]: r for r in recs if r.get("type") == "val"}
    last = sinks[-1]
    tokens_per_step = cfg.get("total-batch") or cfg["batch"] * cfg["seq-len"]

    def of(r):
        focus_k = r["sink"][focus - 1] if focus else None
        nr = r["norm_ratio"][1:]
        p = int(cfg.get("mask-param", 0)) if cfg.get("mask") == "prefix" else 0
        return {
            "sink1": r["sink"][0],
            "sink_k": focus_k,
            "sink_star": r.get("sink_star"),
            "sink_star_or_1": r.get("sink_star", r["sink"][0]),
            "alpha1_top": max(max(row) for row in r["alpha1"]),
            "norm_ratio": max(nr),
            "norm_layer": 1 + nr.index(max(nr)),
            "focus_vs_first": (focus_k or 0.0) - r["sink"][0],
            "prefix_vs_after": (max(r["sink"][:p]) - max(r["sink"][p:] or [0.0])) if p else 0.0,
        }
    m = of(last)
    m.update({"tokens_m": last["step"] * tokens_per_step / 1e6,
              "proxy": bool(last.get("proxy", False)),
              "row_mass": (sum(last["row_mass"]) / len(last["row_mass"])) if "row_mass" in last else 1.0,
              "val_loss": vals[max(vals)]["val_loss"] if vals else float("nan"),
              "recent": [of(r) for r in sinks[-3:]]})
    return m


def judge(checks, measured):
    """measured: label -> list (one per seed) of measure() results. Returns (one line per direction with its numbers,
    label -> the verdict over every direction it takes part in, one short line per direction)."""
    out, per_label, short = [], {}, []
    for a, op, b, metric in checks:
        va = [r[metric] for m in measured.get(a, []) for r in m["recent"] if r[metric] is not None]
        vb = [r[metric] for m in measured.get(b, []) for r in m["recent"] if r[metric] is not None]
        if not va or not vb:
            continue
        if a == b:  # a property of one run: its value against zero
            vb = [0.0]
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        sd = lambda v: math.sqrt(sum((x - mean(v)) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0  # noqa
        diff, noise = mean(va) - mean(vb), 2 * math.sqrt(sd(va) ** 2 + sd(vb) ** 2)
        if op == "~":
            v = "yes" if abs(diff) <= noise else "no"
        else:
            want = diff if op == ">" else -diff
            v = "yes" if want > noise and want > 0 else ("no" if -want > noise and want < 0 else "within noise")
        text = "%s %s %s on %s: %.3g vs %.3g (noise %.2g): %s" % (a, op, b if a != b else "0", metric, mean(va),
                                                                  mean(vb), noise, v)
        out.append(text)
        short.append("%s %s %s (%s): %s" % (a, op, b if a != b else "0", metric, v))
        per_label.setdefault(a, []).append(v)
        if a != b:
            per_label.setdefault(b, []).append(v)
    return out, {k: ("yes" if all(x == "yes" for x in v) else "no" if "no" in v else "within noise")
                 for k, v in per_label.items()}, short


COLUMNS = ["date", "commit", "experiment", "run", "device", "seed", "tokens_M", "sink1", "sink_k", "sink_star",
           "alpha1_top", "norm_ratio", "norm_layer", "proxy", "row_mass", "val_loss", "paper", "agrees", "dir",
           "flags", "directions"]


def commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def fmt(x, nd=2):
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):  # JSON writes 0 for a float zero
        return "%.*f" % (nd, x)
    return str(x)


def upgrade_results(path):
    """Creates the results file with its header, or gives an older file this version's columns (empty in old rows)."""
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("\t".join(COLUMNS) + "\n")
        return
    with open(path) as f:
        lines = [ln.rstrip("\n").split("\t") for ln in f if ln.strip()]
    if lines and lines[0] == COLUMNS:
        return
    head = lines[0] if lines else []
    with open(path + ".tmp", "w") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for ln in lines[1:]:
            r = dict(zip(head, ln))
            f.write("\t".join(r.get(c, "") for c in COLUMNS) + "\n")
    os.replace(path + ".tmp", path)


def cmd_run(args):
    names = args.names
    for n in names:
        if n not in BY_NAME:
            sys.exit("run: no experiment named '%s' (dev/experiments/run.py list shows them)" % n)
    if not os.path.exists(os.path.join(ROOT, TRAINER[args.device][2:])):
        sys.exit("run: %s is not built (make %s)" % (TRAINER[args.device], TRAINER[args.device][2:]))
    for n in names:
        exp = BY_NAME[n]
        seeds = [1337 + i for i in range(args.seeds or exp.seeds)]
        only = set(args.only.split(",")) if args.only else None
        measured, dirs, rows = {}, {}, []
        for run in exp.runs:
            for seed in seeds:
                f = flags_of(exp, run, args.device, seed, args.steps, args.extra)
                argv = argv_of(f)
                d = run_dir(args.runs, args.device, argv)
                if only and run.label not in only:  # not trained now, but measured and judged if it is finished
                    if not finished(d, int(f["steps"])):
                        continue
                train(args.device, argv, d, int(f["steps"]))
                m = measure(d, run.focus)
                measured.setdefault(run.label, []).append(m)
                # the figures' name of the run: its label, and the seed after the first ("wd-0.5-seed1338")
                dirs.setdefault(run.label if seed == seeds[0] else "%s-seed%d" % (run.label, seed), d)
                rows.append((run, seed, d, argv, m))
        lines, verdict, directions = judge(exp.checks, measured)
        print("\n%s: %s" % (exp.name, exp.finding))
        for t in lines:
            print("  " + t)
        today = datetime.date.today().isoformat()
        upgrade_results(args.results)
        with open(args.results, "a") as out:
            for run, seed, d, argv, m in rows:
                row = [today, commit(), exp.name, run.label, args.device, str(seed), fmt(m["tokens_m"], 1),
                       fmt(m["sink1"]), fmt(m["sink_k"]), fmt(m["sink_star"]), fmt(m["alpha1_top"], 3),
                       fmt(m["norm_ratio"]), str(m["norm_layer"]), fmt(m["proxy"]), fmt(m["row_mass"], 3),
                       fmt(m["val_loss"], 4), run.paper, verdict.get(run.label, ""), os.path.relpath(d, ROOT),
                       " ".join(argv), "; ".join(directions)]
                out.write("\t".join(x.replace("\t", " ") for x in row) + "\n")
        print("  %d rows appended to %s" % (len(rows), args.results))
        # the figures: one link per run and seed, to the run directory it names
        exp_dir = os.path.join(args.runs, exp.name)
        os.makedirs(exp_dir, exist_ok=True)
        links = []
        for label, d in dirs.items():
            link = os.path.join(exp_dir, label)
            if os.path.islink(link):
                os.remove(link)
            os.symlink(os.path.relpath(d, exp_dir), link)
            links.append(link)
        if args.plots:
            subprocess.call([sys.executable, os.path.join(HERE, "plot.py")] + links +
                            ["--out", os.path.join(exp_dir, "figures"), "--title", exp.name + ": " + exp.finding])


def read_results(path):
    if not os.path.exists(path):
        sys.exit("report: no results file %s (dev/experiments/run.py run NAME writes it)" % path)
    with open(path) as f:
        lines = [ln.rstrip("\n").split("\t") for ln in f if ln.strip()]
    head = lines[0]
    newest = {}
    for n, ln in enumerate(lines[1:]):
        r = dict(zip(head, ln))
        r["line"] = n
        newest[(r["experiment"], r["run"], r["device"], r["seed"])] = r  # a later row replaces an earlier one
    return list(newest.values())


def cmd_report(args):
    rows = read_results(args.results)
    order = {e.name: i for i, e in enumerate(CATALOGUE)}
    rows.sort(key=lambda r: (order.get(r["experiment"], 99), r["device"]))
    groups = {}
    for r in rows:
        groups.setdefault((r["experiment"], r["device"], r["run"]), []).append(r)
    out = ["| experiment | run | device | seeds | tokens | Sink_1 % | Sink_k / Sink_* % | top alpha_1 | norm ratio "
           "(layer) | val loss | paper | direction agrees |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    avg = lambda rs, k: (sum(float(r[k]) for r in rs) / len(rs)) if all(r[k] for r in rs) else None  # noqa: E731
    for (exp, dev, label), rs in groups.items():
        proxy = "*" if rs[0]["proxy"] == "yes" else ""
        sk = avg(rs, "sink_k")
        ss = avg(rs, "sink_star")
        extra = ("Sink_k %.2f" % sk if sk is not None else "") + (" Sink_* %.2f" % ss if ss is not None else "")
        out.append("| %s | %s | %s | %d | %sM | %.2f%s | %s | %.3f | %.2f (%s) | %.4f | %s | %s |" % (
            exp, label, dev, len(rs), rs[0]["tokens_M"], avg(rs, "sink1"), proxy, extra.strip(),
            avg(rs, "alpha1_top"), avg(rs, "norm_ratio"), rs[0]["norm_layer"], avg(rs, "val_loss"), rs[0]["paper"],
            rs[-1]["agrees"]))
    if args.summary:
        out = ["| finding (the paper's numbers, Sink_1 %) | device, tokens | ours: Sink_1 % (norm ratio) per run "
               "| the paper's directions here: yes, no or within noise |", "|---|---|---|---|"]
        by_exp = {}
        for (exp, dev, label), rs in groups.items():
            by_exp.setdefault((exp, dev), []).append((label, rs))
        for (exp, dev), runs in by_exp.items():
            e = BY_NAME.get(exp)
            ours = "; ".join("%s %.2f%s%s (%.2f)" % (
                label, avg(rs, "sink1"), "*" if rs[0]["proxy"] == "yes" else "",
                ", Sink_* %.2f" % avg(rs, "sink_star") if avg(rs, "sink_star") is not None else
                (", Sink_k %.2f" % avg(rs, "sink_k") if avg(rs, "sink_k") is not None else ""),
                avg(rs, "norm_ratio")) for label, rs in runs)
            newest = max((r for _, rs in runs for r in rs), key=lambda r: r["line"])
            verdict = newest.get("directions", "").replace("; ", "<br>")
            out.append("| **%s**: %s | %s, %sM | %s | %s |" % (exp, e.finding if e else "", dev,
                                                                runs[0][1][0]["tokens_M"], ours, verdict))
    table = "\n".join(out) + "\n"
    if not args.into:
        sys.stdout.write(table)
        return
    begin = "<!-- results %s: dev/experiments/run.py report%s -->" % (("summary", " --summary") if args.summary else
                                                                       ("table", ""))
    end = "<!-- end of results %s -->" % ("summary" if args.summary else "table")
    text = open(args.into).read()
    if begin not in text or end not in text:
        sys.exit("report: %s has no '%s' ... '%s' markers" % (args.into, begin, end))
    a, b = text.index(begin) + len(begin), text.index(end)
    with open(args.into, "w") as f:
        f.write(text[:a] + "\n" + table + text[b:])
    print("report: table of %d rows written into %s" % (len(out) - 2, args.into))


# What `check` shrinks so that every run of a configuration takes a second on the CPU: the width and depth (unless the
# run is about them), the batch and the steps. Everything else, the flags each run is about, is kept.
SHRINK = {"layers": 2, "channels": 64, "ffn-hidden": 64, "batch": 2, "steps": 2, "val-every": 2, "sink-every": 2,
          "save-every": 2, "val-batches": 1, "probe-seqs": 8}


def cmd_check(args):
    """Run every run of the named experiments (all by default) for 2 steps at a small width with the CPU trainer, so a
    flag the trainer refuses shows up here rather than on a borrowed GPU."""
    names = args.names or [e.name for e in CATALOGUE]
    bad = [n for n in names if n not in BY_NAME]
    if bad:
        sys.exit("check: no experiment named %s (run.py list names them)" % ", ".join(bad))
    failures = checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            e = BY_NAME[name]
            for run in e.runs:
                f = flags_of(e, run, args.device, 1337)
                f.update({k: v for k, v in SHRINK.items() if k not in run.flags and k not in run.gpu})
                f["steps"] = SHRINK["steps"]
                f.update(extra_flags(args.extra))
                d = os.path.join(tmp, "%s-%s" % (name, run.label))
                cmd = [TRAINER["cpu"]] + argv_of(f) + ["--out", d]
                p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace")
                checked += 1
                ok = p.returncode == 0 and finished(d, SHRINK["steps"])
                if not ok:
                    failures += 1
                    last = (p.stdout.strip().splitlines() or ["(no output)"])[-1]
                    print("check: %s/%s FAILED (exit %d): %s\n  %s" % (name, run.label, p.returncode, last,
                                                                    " ".join(shlex.quote(c) for c in cmd)))
    print("check: %d of %d %s runs accepted (2 steps each at a small width on the CPU trainer)" % (
        checked - failures, checked, args.device))
    if failures:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the experiments")
    s = sub.add_parser("show", help="an experiment's runs and commands")
    s.add_argument("name")
    s.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    r = sub.add_parser("run", help="train, measure, append results, plot")
    r.add_argument("names", nargs="+")
    r.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    r.add_argument("--seeds", type=int, default=0, help="seeds per run (default: the catalogue's)")
    r.add_argument("--only", default="", help="train only these run labels, comma separated (the experiment's "
                   "other finished runs are still measured)")
    r.add_argument("--results", default=os.path.join(ROOT, "docs", "results.tsv"))
    r.add_argument("--runs", default=os.path.join(ROOT, "runs", "exp"))
    r.add_argument("--steps", type=int, default=0, help="override the configuration's steps (tests)")
    r.add_argument("--extra", default="", help="flags added to every run (tests)")
    r.add_argument("--no-plots", dest="plots", action="store_false")
    c = sub.add_parser("check", help="every run's flags accepted: 2 steps each, small, on the CPU trainer")
    c.add_argument("names", nargs="*", help="experiments (default: all)")
    c.add_argument("--device", choices=["cpu", "gpu"], default="gpu", help="the configuration to check")
    c.add_argument("--extra", default="", help="flags added to every run (tests)")
    p = sub.add_parser("report", help="the results file as a markdown table")
    p.add_argument("--results", default=os.path.join(ROOT, "docs", "results.tsv"))
    p.add_argument("--into", default="", help="replace the table between the markers in this file")
    p.add_argument("--summary", action="store_true", help="one row per experiment instead of one per run")
    args = ap.parse_args()
    if args.cmd == "list":
        for e in CATALOGUE:
            print("%-20s %d runs, %d seed%s  %s" % (e.name, len(e.runs), e.seeds, "s"[:e.seeds > 1], e.finding))
    elif args.cmd == "show":
        if args.name not in BY_NAME:
            sys.exit("show: no experiment named '%s'" % args.name)
        e = BY_NAME[args.name]
        print("%s: %s" % (e.name, e.finding))
        for run in e.runs:
            argv = argv_of(flags_of(e, run, args.device, 1337))
            print("  %-18s paper %-28s %s %s" % (run.label, run.paper, TRAINER[args.device], " ".join(argv)))
        for a, op, b, metric in e.checks:
            print("  direction: %s %s %s on %s" % (a, op, b, metric))
    elif args.cmd == "run":
        cmd_run(args)
    elif args.cmd == "check":
        cmd_check(args)
    else:
        cmd_report(args)


if __name__ == "__main__":
    main()
