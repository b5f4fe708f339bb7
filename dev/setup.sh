#!/bin/bash
# dev/setup.sh [train|test|ci|bench]: installs what sinkscope needs on a Debian or Ubuntu machine, or says how.
#
# What it is: the one place that knows the project's system packages. `make train` runs it with `train`, `make test`
# with `test`, and .ci/run with `ci`; it returns at once when everything is there.
#   train: g++ (C++17, OpenMP), make, PCRE2 (the GPT-2 tokenizer), npm and /usr/bin/python3 (the Brown data)
#   test:  the same, Catch2 v2, and matplotlib (the plot test)
#   ci:    the same, and clang with libFuzzer (make fuzz) and its sanitizer runtime
#   bench: train's, and PyTorch with OpenBLAS (make bench; without libopenblas0-pthread Debian's PyTorch falls back to
#          the reference BLAS and runs about 10x slower, which would make any comparison meaningless)
# When something is missing it runs apt-get as root; otherwise it stops with the exact `sudo apt-get install` line.
# What it is not: a CUDA installer. The GPU trainer needs the CUDA toolkit (nvcc), which `make test` uses when present.
set -euo pipefail
what=${1:-train}
case "$what" in train|test|ci|bench) ;; *) echo "usage: dev/setup.sh [train|test|ci|bench]" >&2; exit 2 ;; esac

need=()
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
[ -f /usr/include/pcre2.h ] || need+=(libpcre2-dev)
command -v npm >/dev/null || need+=(npm)
[ -x /usr/bin/python3 ] || need+=(python3)
if [ "$what" = test ] || [ "$what" = ci ]; then
    [ -f /usr/include/catch2/catch.hpp ] && [ -f /usr/lib/libCatch2WithMain.a ] || need+=(catch2)
    /usr/bin/python3 -c "import matplotlib" 2>/dev/null || need+=(python3-matplotlib)
fi
if [ "$what" = ci ]; then
    command -v clang++ >/dev/null || need+=(clang)
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-14-dev)
fi
if [ "$what" = bench ]; then
    /usr/bin/python3 -c "import torch, numpy" 2>/dev/null || need+=(python3-torch python3-numpy)
    ls /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 /usr/lib/*/openblas-pthread/libblas.so.3 \
        >/dev/null 2>&1 || need+=(libopenblas0-pthread)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "error: sinkscope needs: ${need[*]} (Debian package names; install them with your package manager)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing packages. Install them, then run make again:" >&2
    echo "  sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "setup: installing ${need[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
echo "setup: done"
