#!/usr/bin/env python3
"""dev/gpu/resources.py: what ptxas gave each kernel of the GPU trainer, as a table.

make train_gpt writes ptxas's report (nvcc --resource-usage) to build/train_gpt_resources.txt; this prints one line a
kernel and architecture: registers a thread, the stack frame (local memory a thread: arrays the compiler could not keep
in registers), and the bytes spilled to it and loaded back. A kernel is named by its block state or its loop body
(c++filt demangles the names). No GPU needed: these are the compiler's figures, not measurements.

    python3 dev/gpu/resources.py                      # every kernel
    python3 dev/gpu/resources.py 'FlashRow|gemm'      # the kernels whose name matches a regular expression
    python3 dev/gpu/resources.py --file other.txt     # another report (default build/train_gpt_resources.txt)

test_gpu.cpp checks a few of these figures (the streamed forward's rows and the exact GEMM's tiles in registers).
"""
import argparse
import re
import signal
import subprocess
import sys


def kernels(text):
    """(mangled name, arch, registers, stack, spill stores, spill loads) for each kernel in ptxas's report"""
    out, name, arch, frame = [], None, None, None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+)'", line)
        if m:
            name, arch, frame = m.group(1), m.group(2), None
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            frame = tuple(int(x) for x in m.groups())
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            out.append((name, arch, int(m.group(1))) + (frame or (0, 0, 0)))
            name = None
    return out


def short_name(demangled):
    """the block state of an sk_for_blocks kernel, the enclosing function of an sk_for lambda, else the kernel"""
    m = re.search(r"sk_for_2dIZNS0_(\d+)", demangled)  # c++filt leaves sk_for_2d's nested lambdas mangled
    if m:
        n, rest = int(m.group(1)), demangled[m.end():]
        return "sk_for_2d in " + rest[:n]
    m = re.search(r"sk_for_blocks_kernel<(\w+<[^>]*>)", demangled)
    if m:
        return "blocks " + m.group(1).replace(" ", "")
    m = re.search(r"^void (sk_for\w*_kernel)<.*?(\w+)(?:<[^<>]*>)?\([^()]*\)::\{lambda", demangled)
    if m:
        return m.group(1) + " in " + m.group(2)
    return demangled.split("(")[0].replace("void ", "")


def main():
    ap = argparse.ArgumentParser(description="ptxas's registers, local memory and spills per kernel of train_gpt")
    ap.add_argument("pattern", nargs="?", default="", help="a regular expression the kernel's name must match")
    ap.add_argument("--file", default="build/train_gpt_resources.txt", help="ptxas's report (make train_gpt's)")
    args = ap.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quietly, into head
    try:
        text = open(args.file).read()
    except OSError as e:
        sys.exit(f"error: cannot read {args.file} ({e.strerror}): make train_gpt writes it (it needs nvcc)")
    rows = kernels(text)
    if not rows:
        sys.exit(f"error: {args.file} holds no ptxas report (make train_gpt writes it with --resource-usage)")
    try:  # c++filt (binutils) demangles; without it the names stay mangled
        names = subprocess.run(["c++filt"], input="\n".join(r[0] for r in rows), capture_output=True,
                               text=True).stdout.splitlines()
    except OSError:
        names = []
    if len(names) != len(rows):
        names = [r[0] for r in rows]
    print(f"{'arch':6} {'regs':>4} {'stack':>6} {'spilled':>8} {'loaded':>7}  kernel")
    def order(row_name):  # by architecture, then name, numbers as numbers (head size 4 before 16 before 128)
        (row, dn) = row_name
        return (row[1], [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", short_name(dn))])

    for r, dn in sorted(zip(rows, names), key=order):
        label = short_name(dn)
        if args.pattern and not re.search(args.pattern, label) and not re.search(args.pattern, dn):
            continue
        print(f"{r[1]:6} {r[2]:4d} {r[3]:6d} {r[4]:8d} {r[5]:7d}  {label}")


if __name__ == "__main__":
    main()
