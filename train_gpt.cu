/*
train_gpt.cu: the GPU trainer of sinkscope. CUDA, one NVIDIA GPU (sm_80 or newer), fp32.

What it is: the CPU reference trainer, train_gpt_cpu.cpp, compiled by nvcc. Its layers are written as loops over
output elements, sk_for (backend.h); here every such loop is a CUDA kernel with one thread per element, the matmul is
gemm_by_element (one thread per output element, k in order), and every buffer is CUDA managed memory, so the host code
(the loss, checkpoints, sink metrics, sampling) reads the same arrays the kernels write. Hence the GPU trainer has
everything the CPU one has, with no second copy of any of it: the whole model family and every attention variant, the
same flags (./train_gpt --help), data loading, JSON-lines log, sink metrics in the loop, checkpoints and --resume,
--check-state, --eval-sink, and text sampling every N steps or with --load --sample (sampling.h, data/text_codec.h).

Exactness: each element is computed by the same statements in the same order as on the CPU, and only with IEEE 754
operations, which are correctly rounded on both: +, -, *, /, sqrt, fma (nvcc's -fmad=false keeps it from fusing on
its own, like g++'s -ffp-contract=off), and exp, log and tanh from numerics.h, which are built from those operations
rather than taken from CUDA's or glibc's math library (whose last bits differ). So a GPU run reproduces a CPU run bit
for bit: the same checkpoints, losses, metrics and samples. test/test_gpu.cpp checks exactly that where a GPU exists.

What it is not (yet): fast. This is the reference path: naive kernels and a device synchronisation after each launch
(backend.h). Fast kernels (cuBLAS matmuls, fused attention) will be added beside it as separate, tolerance-checked
paths, with this one kept as the exact mode.

Build and run:  make train_gpt && ./train_gpt --help     (same flags as ./train_gpt_cpu)
                Without a GPU it stops with "no CUDA GPU is visible" and names the CPU trainer to use instead.
*/
#include "train_gpt_cpu.cpp"
