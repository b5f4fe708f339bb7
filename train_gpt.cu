/*
train_gpt.cu: the GPU trainer of sinkscope. CUDA, one NVIDIA GPU (sm_80 or newer), fp32 (or bf16 at --precision bf16).

What it is: the CPU reference trainer, train_gpt_cpu.cpp, compiled by nvcc. Its layers are loops over output
elements, sk_for (common/backend.h); here every such loop is a CUDA kernel with one thread per element, the exact
matmul sums each output element in one thread, k in order (gemm_exact_tiled, the bits of gemm_by_element), and the
model lives in device memory. The
host code (common/trainer.h: flags, data, the loop, log, checkpoints, sink metrics, sampling, --check-state) is the
CPU trainer's own and reaches the model only through the engine interface (common/engine.h), whose uploads and
downloads are the only copies between host and device. So the GPU trainer has everything the CPU one has, with no
second copy of any of it: the same flags (./train_gpt --help), files, log and metrics.

Two engines (--engine; docs/gpu.md). Exact (--exact): each element is computed by the same statements in the same
order as on the CPU, and only with IEEE 754 operations, which are correctly rounded on both: +, -, *, /, sqrt, fma
(nvcc's -fmad=false keeps it from fusing on its own, like g++'s -ffp-contract=off), and exp, log and tanh from
common/numerics.h, which are built from those operations rather than taken from CUDA's or glibc's math library
(whose last bits differ). So an exact GPU run is meant to reproduce a CPU run bit for bit; test/test_gpu.cpp checks
that where a GPU exists (docs/gpu.md says what has been run). Fast (the default here): the matmuls go to cuBLAS
(kernels/matmul_cublas.cuh; --precision fp32, tf32 or bf16) and training streams its attention key tile by key tile
(attention_forward_stream: no T x T matrices); within a tolerance of the exact engine, which --check-fast measures.

The exact engine's attention runs as passes of one thread per score, weight or output element
(attention_forward_passes; the CPU's row form gives the same bits), its matmuls as gemm_exact_tiled. The fast engine
adds flash-style attention blocks, a warp per norm row and chunked row sums (docs/gpu.md has the table).

What it is not (yet): tuned. The fast engine's matmuls fuse the bias, the GELU and its gradient, and the bias
gradient into cuBLASLt's epilogues. --precision bf16 keeps fp32 master weights and a bf16 copy of them that AdamW
writes in the same pass; the matmuls multiply bf16 operands (the copy, and the activations and gradients rounded as
each product starts); the activations that only products read are stored in bf16 (the pre-norm outputs, the FFN's
activation, the gated attention output, the --phi mlp map's input and hidden activation).
Kernel launches are queued on one stream and the host waits only where it reads a result: once per training step, at
its end, and for an upload buffer 8 uploads back (the loss, the gradient norm and the non-finite guard's verdict are
computed on the device, and the batches go up from pinned staging buffers); SK_SYNC=1 synchronises after every launch
to locate a fault.

Build and run:  make train_gpt && ./train_gpt --help     (same flags as ./train_gpt_cpu)
                Without a GPU it stops with "no CUDA GPU is visible" and names the CPU trainer to use instead.
*/
#include "train_gpt_cpu.cpp"
