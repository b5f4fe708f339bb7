#!/usr/bin/env python3
"""dev/gpu/resources.py: what ptxas gave each kernel of the GPU trainer, as a table.

make train_gpt writes ptxas's report (nvcc --resource-usage) to build/train_gpt_resources.txt; this prints one line a
kernel and architecture: registers a thread, the stack frame (local memory a thread: arrays the compiler could not keep
in registers), and the bytes spilled to it and loaded back. A kernel is named by its block state or its loop body
(c++filt demangles the names). No GPU needed: these are the compiler's figures, not measurements.

    python3 dev/gpu/resources.py                      # every kernel
    python3 dev/gpu/resources.py 'FlashRow|gemm'      # the kernels whose name matches a regular expression
    python3 dev/gpu/resources.py --file other.txt     # another report (default build/train_gpt_resources.txt)
    python3 dev/gpu/resources.py --ptx 'FlashRow'     # shared-memory reads by width, from make build/train_gpt.ptx

test_gpu.cpp checks a few of these figures (the streamed forward's rows and the exact GEMM's tiles in registers).
--ptx counts, in each kernel's PTX for sm_90, the ld.shared instructions that read one value (4 bytes), two (8) or
four (16: a vector, which a warp's quarter reads in one pass when the rows' stride allows; test_variants.cpp counts
the passes of the streamed attention's staged tiles). These are static counts, not how often each runs.
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


def shared_loads(ptx):
    """(mangled name, "ptx", loads of 1, 2 and 4 values) for each kernel entry of a PTX file"""
    out = []
    starts = [m for m in re.finditer(r"^\.(?:visible )?\.entry (\w+)\(", ptx, re.M)]
    for i, m in enumerate(starts):
        body = ptx[m.end():starts[i + 1].start() if i + 1 < len(starts) else len(ptx)]
        widths = [w or "1" for w in re.findall(r"\bld\.shared(?:\.v(\d))?\.", body)]
        out.append((m.group(1), "ptx", widths.count("1"), widths.count("2"), widths.count("4")))
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
    ap.add_argument("--file", help="ptxas's report (default build/train_gpt_resources.txt, make train_gpt's), or with "
                    "--ptx the PTX (default build/train_gpt.ptx, make build/train_gpt.ptx's)")
    ap.add_argument("--ptx", action="store_true", help="shared-memory reads by width, from the PTX for sm_90")
    args = ap.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quietly, into head
    path = args.file or ("build/train_gpt.ptx" if args.ptx else "build/train_gpt_resources.txt")
    maker = "make build/train_gpt.ptx" if args.ptx else "make train_gpt"
    try:
        text = open(path).read()
    except OSError as e:
        sys.exit(f"error: cannot read {path} ({e.strerror}): {maker} writes it (it needs nvcc)")
    rows = shared_loads(text) if args.ptx else kernels(text)
    if not rows:
        sys.exit(f"error: {path} holds no " + ("kernel entries" if args.ptx else "ptxas report") +
                 f": {maker} writes it")
    try:  # c++filt (binutils) demangles; without it the names stay mangled
        names = subprocess.run(["c++filt"], input="\n".join(r[0] for r in rows), capture_output=True,
                               text=True).stdout.splitlines()
    except OSError:
        names = []
    if len(names) != len(rows):
        names = [r[0] for r in rows]
    if args.ptx:
        print(f"{'':6} {'shared reads of 1':>17} {'of 2':>5} {'of 4':>5}  kernel")
    else:
        print(f"{'arch':6} {'regs':>4} {'stack':>6} {'spilled':>8} {'loaded':>7}  kernel")
    def order(row_name):  # by architecture, then name, numbers as numbers (head size 4 before 16 before 128)
        (row, dn) = row_name
        return (row[1], [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", short_name(dn))])

    for r, dn in sorted(zip(rows, names), key=order):
        label = short_name(dn)
        if args.pattern and not re.search(args.pattern, label) and not re.search(args.pattern, dn):
            continue
        if args.ptx:
            print(f"{r[1]:6} {r[2]:17d} {r[3]:5d} {r[4]:5d}  {label}")
        else:
            print(f"{r[1]:6} {r[2]:4d} {r[3]:6d} {r[4]:8d} {r[5]:7d}  {label}")


if __name__ == "__main__":
    main()
