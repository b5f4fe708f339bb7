"""A run's sink metrics at chosen steps as a markdown table (the emergence table of docs/results.md).

usage: /usr/bin/python3 dev/experiments/sink_table.py RUN_DIR STEP[,STEP...]

Per step: Sink_1 (%), the mean alpha_1 over heads, the largest head's alpha_1, the first-token norm ratio after each
block, and the validation loss at that step (docs/metrics.md defines them). Reads RUN_DIR/log.jsonl.
"""
import json
import os
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    path = os.path.join(sys.argv[1], "log.jsonl")
    if not os.path.exists(path):
        sys.exit("sink_table: no %s (train the run first)" % path)
    with open(path, encoding="utf-8", errors="replace") as f:
        recs = [json.loads(line) for line in f if line.strip()]
    sink = {r["step"]: r for r in recs if r.get("type") == "sink"}
    val = {r["step"]: r for r in recs if r.get("type") == "val"}
    print("| step | Sink_1 % | mean alpha_1 | largest head alpha_1 | norm ratio after each block | val loss |")
    print("|---|---|---|---|---|---|")
    for step in [int(x) for x in sys.argv[2].split(",")]:
        if step not in sink or step not in val:
            sys.exit("sink_table: %s has no sink and validation records at step %d" % (path, step))
        r = sink[step]
        top = max(max(row) for row in r["alpha1"])
        ratios = ", ".join("%.2f" % x for x in r["norm_ratio"][1:])
        print("| %d | %.2f | %.4f | %.3f | %s | %.4f |" % (step, r["sink"][0], r["alpha1_mean"], top, ratios,
                                                          val[step]["val_loss"]))


if __name__ == "__main__":
    main()
