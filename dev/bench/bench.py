"""make bench: this project's CPU trainer against the PyTorch reference model, side by side, in one invocation.

usage: /usr/bin/python3 dev/bench/bench.py [--rounds 3] [--threads N] [--quick] [--only NAME] [--no-shared]

For each shape below, every round runs train_gpt_cpu (fixed --threads N) and then dev/bench/bench_torch.py (the model
of dev/reference/model.py in float32 with torch's native norm and activation kernels, torch's AdamW,
torch.set_num_threads(N)) on exactly the shape the trainer logged, so the two alternate on the machine and share its
noise. Each run reports the median of its step times (the first two steps, warm-up, left out); the table prints the
median over the rounds:
  tokens/s          B * T / step time
  GFLOP/s           tokens/s * the model's flops a token / 1e9, as the trainer counts them and prints them in its
                    header (model_flops_per_seq, common/config.h: 6 a position per weight in a product, 12 C a layer
                    per key a position sees; three significant figures)
  x torch           this trainer's tokens/s over PyTorch's
Then: where this trainer's training step time goes (SK_PROFILE=1, common/profile.h), the sink probe's cost at the
default interval (tiny preset), and config S alone against config S with a second copy of itself on the same cores
(both with the default --threads 0, which adapts to the load: common/threads.h).
Speed is a ratio measured here and now: the machine is shared, read the ratios, not the seconds.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRAINER = os.path.join(ROOT, "train_gpt_cpu")
TORCH = os.path.join(ROOT, "dev", "bench", "bench_torch.py")
GEMM = os.path.join(ROOT, "build", "gemm_bench")

CONFIG_S = ("--layers 4 --channels 256 --heads 4 --vocab 256 --max-seq-len 256 --seq-len 256 --batch 4"
            " --ffn-hidden 1024 --norm layernorm --ffn gelu --pos learned --tied 1 --bias 1 --init gpt2")
# name, flags, steps per run (ours, torch)
SHAPES = [
    ("config S (GPT-2 style, L4 C256, B4 T256)", CONFIG_S, (12, 8)),
    ("GPT-2 124M, B4 T64", "--preset gpt2 --batch 4 --seq-len 64", (6, 5)),
    ("tiny preset (defaults, B64 T64)", "", (14, 8)),
    ("llama preset (defaults)", "--preset llama", (10, 6)),
]
QUIET = "--val-every 0 --sample-len 0 --save-every 0 --print-every 1000000 --overwrite"


def run_ours(flags, steps, out, threads, sink_every=0, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    cmd = [TRAINER] + flags.split() + QUIET.split() + ["--steps", str(steps), "--sink-every", str(sink_every),
                                                        "--out", out]
    if threads:
        cmd += ["--threads", str(threads)]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("bench: %s failed (exit %d):\n%s" % (" ".join(cmd), p.returncode, p.stderr[-2000:]))
    recs = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    ms = [r["ms"] for r in recs if r["type"] == "train"]
    return {"ms": statistics.median(ms[2:] if len(ms) > 2 else ms), "recs": recs, "console": p.stdout}


def run_torch(log, steps, threads):
    p = subprocess.run([sys.executable, TORCH, log, str(steps), str(threads)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("bench: the PyTorch reference failed:\n" + p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


PREFIX = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}


def flops_per_token(console):
    """The model's flops a token from the trainer's header: "| 393856 parameters, 2.26 MFLOP a token |"."""
    m = re.search(r"parameters, ([0-9.]+) ([kMGTP]?)FLOP a token", console)
    if not m:
        sys.exit("bench: the trainer's header gives no flops a token:\n" + console[:2000])
    return float(m.group(1)) * PREFIX[m.group(2)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="one round, fewer steps (a smoke test of the script)")
    ap.add_argument("--only", default="", help="run only the shapes whose name contains this")
    ap.add_argument("--no-shared", action="store_true", help="skip the run that shares the cores")
    ap.add_argument("--shared-threads", type=int, default=0,
                    help="--threads of the two runs that share the cores (default 0: adapt to the load)")
    a = ap.parse_args()
    if not os.path.exists(TRAINER):
        sys.exit("bench: %s is missing; run `make bench` (it builds it)" % TRAINER)
    rounds = 1 if a.quick else a.rounds
    shapes = [s for s in SHAPES if a.only.lower() in s[0].lower()]
    tmp = tempfile.mkdtemp(prefix="sinkscope_bench_")
    results = {s[0]: {"ours": [], "torch": [], "profile": {}, "cfg": None} for s in shapes}
    print("bench: %d round(s), %d thread(s) each, %s" % (rounds, a.threads, time.strftime("%Y-%m-%d %H:%M")))
    try:
        for r in range(rounds):
            for name, flags, (s_ours, s_torch) in shapes:
                if a.quick:
                    s_ours, s_torch = 4, 3
                out = os.path.join(tmp, "run")
                # (a small probe: a run measures the sink at its end, and the probe has its own line below)
                ours = run_ours(flags + " --probe-seqs 4", s_ours, out, a.threads, env_extra={"SK_PROFILE": "1"})
                cfg = next(x for x in ours["recs"] if x["type"] == "config")
                prof = next((x for x in ours["recs"] if x["type"] == "profile"), None)
                res = results[name]
                res["cfg"] = cfg
                res["flops"] = flops_per_token(ours["console"])
                res["ours"].append(ours["ms"])
                if prof:
                    for k, v in prof.items():
                        if k not in ("type", "run"):
                            res["profile"][k] = res["profile"].get(k, 0.0) + v
                log = os.path.join(tmp, "config.jsonl")
                shutil.copy(os.path.join(out, "log.jsonl"), log)
                res["torch"].append(run_torch(log, s_torch, a.threads)["ms"])
                print("  round %d  %-42s this %8.1f ms/step   torch %8.1f ms/step" %
                      (r + 1, name, res["ours"][-1], res["torch"][-1]), flush=True)

        print("\n%-42s %12s %12s %10s %10s %8s" % ("shape", "this tok/s", "torch tok/s", "this GF/s",
                                                  "torch GF/s", "x torch"))
        for name, _, _ in shapes:
            res = results[name]
            cfg = res["cfg"]
            tokens = cfg["batch"] * cfg["seq-len"]
            ours, torch_ = statistics.median(res["ours"]), statistics.median(res["torch"])
            f = res["flops"]
            t_ours, t_torch = tokens / (ours / 1e3), tokens / (torch_ / 1e3)
            print("%-42s %12.0f %12.0f %10.1f %10.1f %8.2f" % (name, t_ours, t_torch, t_ours * f / 1e9,
                                                             t_torch * f / 1e9, t_ours / t_torch))

        print("\nwhere a training step's time goes in this trainer (SK_PROFILE=1, common/profile.h; all rounds):")
        kinds = ["matmul", "attention", "norms", "activations", "classifier", "optimizer", "other"]
        print("%-42s " % "shape" + " ".join("%11s" % k for k in kinds))
        for name, _, _ in shapes:
            p = results[name]["profile"]
            steps = p.get("total", 0.0) - p.get("probe", 0.0)  # the probe at the end of each run: its own line below
            if steps > 0:
                print("%-42s " % name + " ".join("%10.1f%%" % (100.0 * p.get(k, 0.0) / steps) for k in kinds))

        # the sink probe at the default interval: one probe's time over the training time between two probes
        tiny = [s for s in shapes if s[1] == ""]
        if tiny:
            out = os.path.join(tmp, "probe")
            ours = run_ours("", 6 if a.quick else 12, out, a.threads, sink_every=5)
            cfg = next(x for x in ours["recs"] if x["type"] == "config")
            default_every = 100
            probe = statistics.median([x["ms"] for x in ours["recs"] if x["type"] == "sink"])
            share = probe / (probe + default_every * ours["ms"])
            print("\nsink probe (tiny preset, %d sequences of %d): %.0f ms per probe, %.2f%% of training time at "
                  "the default --sink-every %d" % (cfg["probe-seqs"], cfg["probe-len"], probe, 100 * share,
                                                   default_every))

        if not a.no_shared and (not a.only or "config s" in a.only.lower()):
            steps = 6 if a.quick else 16
            st = a.shared_threads
            alone = run_ours(CONFIG_S, steps, os.path.join(tmp, "alone"), st)["ms"]
            bg_out = os.path.join(tmp, "other")
            bg = subprocess.Popen([TRAINER] + CONFIG_S.split() + QUIET.split() +
                                  ["--steps", "100000", "--sink-every", "0", "--out", bg_out] +
                                  (["--threads", str(st)] if st else []),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(2)
                shared = run_ours(CONFIG_S, steps, os.path.join(tmp, "shared"), st)
            finally:
                bg.terminate()
                bg.wait()
            threads = sorted({x.get("threads") for x in shared["recs"] if x["type"] == "train"})
            print("\nconfig S alone %.1f ms/step; with a second config S run on the same cores %.1f ms/step: "
                  "%.2fx slower (--threads %d; threads used while shared: %s)" %
                  (alone, shared["ms"], shared["ms"] / alone, st, threads))

        if os.path.exists(GEMM) and not a.only:
            peak_text = []
            for dims in (("2048", "2048", "2048", "0"), ("256", "768", "50304", "1")):
                p = subprocess.run([GEMM] + list(dims), stdout=subprocess.PIPE, text=True,
                                   env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
                peak_text.append("%s x %s x %s: %s GFLOP/s" % (dims[0], dims[1], dims[2], p.stdout.strip()))
            code = ("import time, torch; torch.set_num_threads(%d); a = torch.randn(2048, 2048); b = torch.randn(2048, "
                    "2048); a @ b; t = time.perf_counter(); [a @ b for _ in range(5)]; "
                    "print(round(5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9, 1))" % a.threads)
            p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            print("\nmatmul alone, this trainer's gemm (cpu/gemm.h): %s; PyTorch's (its BLAS) 2048^3: %s GFLOP/s" %
                  ("; ".join(peak_text), p.stdout.strip()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
