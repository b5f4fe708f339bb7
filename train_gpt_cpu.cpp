/*
train_gpt_cpu.cpp: the CPU reference trainer of sinkscope. fp32 (the fast engine's --precision rounds as a GPU's
tensor cores do), OpenMP, one file of model math.

What it is: a GPT/LLaMA-family language model (common/config.h: LayerNorm or RMSNorm, pre- or post-norm, six
FFN kinds, five kinds of positions, tied or untied embeddings, biases on or off, and every attention variant
of attention_variants.cuh) with a hand-written forward and backward pass for every layer, and AdamW.
Everything that is not model math (flags, data, the training loop, checkpoints, the sink probe, sampling,
--check-state) is shared with the GPU trainer in common/trainer.h, which drives this model through the small
interface of common/engine.h. What it is not: fast at scale, or a tokenizer. train_gpt.cu is this file built
by nvcc.

Build and run:  make train_gpt_cpu && ./train_gpt_cpu --help      (make train: data + a short emergence run)
Tests:          make test   (the tests #include this file with TESTING defined, as llm.c's test does)

Reading order: the matmul; the layers, each a forward/backward pair; attention, first the plain causal softmax
(what the default model runs), then the general form every variant goes through, then its streamed form (the fast
engine's: no T x T matrices); the model (parameters, activations, the per-layer view); forward; backward; update;
the engine (exact, or fast: --engine); main.

Five things to know before reading:
  - template <typename F>: every layer is written once for a float type F: float in the trainer, double in the
    finite-difference tests.
  - sk_for(n, SK_LAMBDA(size_t i) { ... }) (common/backend.h) runs the body for i = 0..n-1: an OpenMP loop
    here, a CUDA kernel with one thread per i in train_gpt.cu. SK_LAMBDA is a by-value lambda ([=]) that also
    runs on a GPU.
  - sk_fma(a, b, c) = a * b + c rounded once, sk_exp/sk_log/sk_tanh/sk_sqrt: common/numerics.h, the one
    doorway to these functions, giving the same bits on every CPU and GPU.
  - SkBuffer<T> (common/backend.h) owns the model's memory; p[i], g[i] point at parameter tensor i and its
    gradient.
  - Every backward function accumulates (+=) into the gradients it is given, and quotes the forward it
    differentiates.

Exactness. Each output element is reduced by exactly one thread in one fixed order, documented at each
reduction, so results do not depend on the number of OpenMP threads, and the GPU build, which runs the same
loop bodies, reproduces them bit for bit:
  - dot products and matmuls: acc = init; for k = 0..K-1 in order: acc = fma(a_k, b_k, acc)  (init = bias, 0,
    or the gradient already there when backward accumulates);
  - row statistics (norm means, softmax sums, the loss): plain sequential sums in index order;
  - the global gradient norm: squares summed in double over fixed 4096-element chunks, chunks summed in order.
Shapes: B batch, T time, C channels, NH heads, hs = C/NH head size, FF FFN hidden width, V vocab, Vp padded
vocab, L layers, OC output channels.
*/
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "attention_variants.cuh"
#include "common/backend.h"
#include "common/config.h"
#include "common/engine.h"
#include "common/numerics.h"
#include "common/profile.h"
#include "common/trainer.h"
#include "kernels/attention_flash.cuh"
#ifdef __CUDACC__
#include "kernels/gemm_exact.cuh"
#include "kernels/matmul_cublas.cuh"
#else
#include "cpu/activations.h"
#include "cpu/attention.h"
#include "cpu/gemm.h"
#endif

// -----------------------------------------------------------------------------------------------------------
// matmul. One kernel serves the forward and both backward products:
//   out[m,n] = init[m,n] + sum_{k=0..K-1} A(m,k) * B(k,n)     (k in increasing order, one fma per term)
// where A(m,k) = A[m*lda + k] (or A[k*lda + m], transposed) and B(k,n) = B[k*ldb + n] (or B[n*ldb + k]), so no
// operand is ever transposed in memory. gemm_by_element is that formula, one output element per loop index. The CPU
// runs gemm_blocked (cpu/gemm.h), the GPU's exact engine gemm_exact_tiled (kernels/gemm_exact.cuh): the same sums,
// tiled for reuse, each tested equal to gemm_by_element bit for bit.

template <typename F>
static void gemm_by_element(F* out, const F* A, int lda, bool a_t, const F* B, int ldb, bool b_t, int M, int K,
                            int N, const F* bias, bool accumulate) {
    sk_for((size_t)M * N, SK_LAMBDA(size_t i) {
        size_t m = i / N, n = i % N;
        F acc = accumulate ? out[i] : bias ? bias[n] : F(0);
        for (int k = 0; k < K; k++) {
            F a = a_t ? A[(size_t)k * lda + m] : A[m * lda + k];
            F b = b_t ? B[n * ldb + k] : B[(size_t)k * ldb + n];
            acc = sk_fma(a, b, acc);
        }
        out[i] = acc;
    });
}

// The fast engine's matmuls on a GPU go to cuBLAS in this precision (kernels/matmul_cublas.cuh; not bit for bit);
// -1, the exact engine's, keeps the formula's bits. On the CPU, fp32 keeps them too, and tf32 or bf16 round the
// inputs as a tensor core would (gemm_rounded_inputs). ModelEngine sets it for each call into the model.
static int matmul_fast_precision = -1;

// bf16 with fp32 master weights (--precision bf16). AdamW updates the fp32 weights and writes their bf16 copy
// (Model::params_bf16) in the same pass; a product whose operand lies within the weights reads that copy, and any
// other operand (an activation or a gradient) is rounded to bf16 as its product starts (bf16_operands). So the
// tensor cores multiply bf16 and accumulate in fp32, the weights are rounded once per step instead of at every
// product, and the numbers are those of rounding every operand (round_mantissa) at every product: the copy is the
// weights rounded. ModelEngine sets matmul_bf16_weights with matmul_fast_precision for each call into the model;
// left empty, every operand is rounded when its product runs. The activations that only products read are stored
// in bf16 outright, rounded where they are written (Acts::bf16_acts): the pre-norm outputs (ln1, ln2, lnf), which
// feed the qkv, gate, FFN and classifier products, act(fch), the FFN's activation, the gated attention output, and
// the --phi mlp map's input and hidden activation. The classifier's gradient is rounded a chunk of rows at a time
// (classifier_backward).
struct Bf16Copy {
    const float* master = nullptr;  // the fp32 weights
    const bf16* copy = nullptr;     // their bf16 copy, element for element
    size_t n = 0;
};
static Bf16Copy matmul_bf16_weights;

// One operand of a product at bf16: the `span` values (an operand's first to last element) from p, or already in
// bf16 at p16; out: where they are as bf16.
struct Bf16Operand {
    const float* p;
    size_t span;
    const bf16* out;
    const bf16* p16 = nullptr;
};
// A product's input as its layer stored it: fp32 values (f), or, where the fast engine at --precision bf16 stores
// it so (Acts::bf16_acts), bf16 values (h; f is then null). Exactly one is set.
template <typename F>
struct ProductIn {
    const F* f = nullptr;
    const bf16* h = nullptr;
};
// The writing side: write(out) with out where the layer stores this activation, h (bf16, rounded as written) where
// it is set, else f. write is generic in out's type, so one call names each pass that writes such an activation.
template <typename F, typename Write>
static inline void write_stored(F* f, bf16* h, Write write) {
    if (h) write(h);
    else write(f);
}
static inline size_t operand_span(size_t rows, size_t cols, size_t ld) {
    return rows && cols ? (rows - 1) * ld + cols : 0;
}
// the two operands of gemm's out = A B (M x K times K x N, as gemm reads them)
static inline void gemm_operands(Bf16Operand* ops, const float* A, int lda, bool a_t, const float* B, int ldb, bool b_t,
                                 int M, int K, int N) {
    ops[0] = {A, a_t ? operand_span(K, M, lda) : operand_span(M, K, lda), nullptr};
    ops[1] = {B, b_t ? operand_span(N, K, ldb) : operand_span(K, N, ldb), nullptr};
}

// The rounded operands' memory, kept between calls. ModelEngine::reserve sizes it for the largest products before
// training starts (the classifier's gradient has a chunk of its own: classifier_backward); a larger product grows it.
static SkBuffer<bf16>& bf16_scratch() {
    static SkBuffer<bf16> scratch;
    return scratch;
}

// Where each of the n operands of one product is as bf16: where it is when stored so, in the weights' copy when it
// lies within the weights, else rounded into bf16_scratch (valid until the next call), each operand there starting
// on a 256-byte boundary (BF16_SLOT_ALIGN values), as cuBLAS's fastest kernels want their operands.
#define BF16_SLOT_ALIGN 128
static inline size_t bf16_slot(size_t span) { return (span + BF16_SLOT_ALIGN - 1) / BF16_SLOT_ALIGN * BF16_SLOT_ALIGN; }
static void bf16_operands(Bf16Operand* ops, int n) {
    SkBuffer<bf16>& scratch = bf16_scratch();
    const Bf16Copy& w = matmul_bf16_weights;
    auto in_copy = [&w](const Bf16Operand& o) -> const bf16* {
        if (o.p16) return o.p16;
        uintptr_t a = (uintptr_t)o.p, lo = (uintptr_t)w.master, hi = (uintptr_t)(w.master + w.n);
        if (!w.copy || a < lo || a + o.span * sizeof(float) > hi) return nullptr;
        return w.copy + (o.p - w.master);
    };
    size_t need = 0;
    for (int i = 0; i < n; i++)
        if (!in_copy(ops[i])) need += bf16_slot(ops[i].span);
    scratch.fit(need);
    bf16* next = scratch.data();
    for (int i = 0; i < n; i++) {
        ops[i].out = in_copy(ops[i]);
        if (ops[i].out) continue;
        const float* src = ops[i].p;
        bf16* dst = next;
        sk_for(ops[i].span, SK_LAMBDA(size_t k) { dst[k] = bf16_from_float(src[k]); });
        ops[i].out = dst;
        next += bf16_slot(ops[i].span);
    }
}

// out = A B (gemm's shapes) at --precision bf16: the two operands (ops, as gemm_operands describes them) as bf16
// (bf16_operands), multiplied with fp32 accumulation into fp32: by cuBLAS on a GPU; on the CPU by gemm_blocked on
// their values widened back to float (exact), the bias added unrounded, as cuBLAS's epilogue adds it. cuBLAS sums in
// an order of its own, so the CPU's are not the GPU's bits.
static void gemm_bf16(float* out, Bf16Operand* ops, int lda, bool a_t, int ldb, bool b_t, int M, int K, int N,
                      const float* bias, bool accumulate) {
    bf16_operands(ops, 2);
#ifdef __CUDACC__
    gemm_cublas(out, ops[0].out, lda, a_t, ops[1].out, ldb, b_t, M, K, N, bias, accumulate, PRECISION_BF16);
    if (sk_sync_each_launch()) SK_CUDA(cudaDeviceSynchronize());
#else
    // the widened operands, kept between calls (the model runs on one host thread)
    static std::vector<float> wide[2];
    for (int i = 0; i < 2; i++) {
        if (wide[i].size() < ops[i].span) wide[i].resize(ops[i].span);
        float* d = wide[i].data();
        const bf16* src = ops[i].out;
        sk_for(ops[i].span, SK_LAMBDA(size_t k) { d[k] = float_from_bf16(src[k]); });
    }
    gemm_blocked(out, wide[0].data(), lda, a_t, wide[1].data(), ldb, b_t, M, K, N, bias, accumulate);
#endif
}

#ifndef __CUDACC__
// The CPU's stand-in for a tensor-core product at --precision tf32 or bf16: A and B rounded to the precision's
// mantissa (round_mantissa: to nearest, ties to even; bf16 through gemm_bf16, the GPU's own operands), then the
// product as always, fp32 accumulation; the bias is added unrounded, as cuBLAS's epilogue adds it. On a GPU cuBLAS
// sums in an order of its own (and at tf32 rounds inside the GEMM, its ties possibly broken otherwise), so this
// measures the precision's effect (./train_gpt_cpu --engine fast --precision bf16 --check-fast), not the GPU's bits.
static void gemm_rounded_inputs(float* out, const float* A, int lda, bool a_t, const float* B, int ldb, bool b_t, int M,
                                int K, int N, const float* bias, bool accumulate, int precision) {
    Bf16Operand ops[2];
    gemm_operands(ops, A, lda, a_t, B, ldb, b_t, M, K, N);
    if (precision == PRECISION_BF16) return gemm_bf16(out, ops, lda, a_t, ldb, b_t, M, K, N, bias, accumulate);
    // the rounded copies, kept between calls (the model runs on one host thread)
    static std::vector<float> rounded[2];
    int bits = precision_mantissa_bits[precision];
    for (int i = 0; i < 2; i++) {
        if (rounded[i].size() < ops[i].span) rounded[i].resize(ops[i].span);
        float* d = rounded[i].data();
        const float* src = ops[i].p;
        sk_for(ops[i].span, SK_LAMBDA(size_t k) { d[k] = round_mantissa(src[k], bits); });
    }
    gemm_blocked(out, rounded[0].data(), lda, a_t, rounded[1].data(), ldb, b_t, M, K, N, bias, accumulate);
}
#endif

#ifdef __CUDACC__
// Runs product(p) on the N operands as cuBLAS multiplies them in the fast engine's precision: p[i] their bf16 forms
// at bf16 (bf16_operands), else the fp32 arrays themselves. Returns what product returns.
template <int N, typename Product>
static bool in_precision(Bf16Operand (&ops)[N], Product product) {
    if (matmul_fast_precision != PRECISION_BF16) {
        const float* p[N];
        for (int i = 0; i < N; i++) {
            if (ops[i].p16)
                fail("internal: an operand stored in bf16 at --precision %s", precision_names[matmul_fast_precision]);
            p[i] = ops[i].p;
        }
        return product(p);
    }
    bf16_operands(ops, N);
    const bf16* p[N];
    for (int i = 0; i < N; i++) p[i] = ops[i].out;
    return product(p);
}
#endif

template <typename F>
static void gemm(F* out, const F* A, int lda, bool a_t, const F* B, int ldb, bool b_t, int M, int K, int N,
                 const F* bias, bool accumulate) {
#ifdef __CUDACC__
    bool fast = false;
    if constexpr (std::is_same<F, float>::value) fast = matmul_fast_precision >= 0;
    if constexpr (std::is_same<F, float>::value)
        if (fast && matmul_fast_precision == PRECISION_BF16) {
            Bf16Operand ops[2];
            gemm_operands(ops, A, lda, a_t, B, ldb, b_t, M, K, N);
            gemm_bf16(out, ops, lda, a_t, ldb, b_t, M, K, N, bias, accumulate);
        } else if (fast) {
            gemm_cublas(out, A, lda, a_t, B, ldb, b_t, M, K, N, bias, accumulate, matmul_fast_precision);
        }
    if (!fast) gemm_exact_tiled(out, A, lda, a_t, B, ldb, b_t, M, K, N, bias, accumulate);
    if (sk_sync_each_launch()) SK_CUDA(cudaDeviceSynchronize());
#else
    if constexpr (std::is_same<F, float>::value)
        if (matmul_fast_precision > PRECISION_FP32)
            return gemm_rounded_inputs(out, A, lda, a_t, B, ldb, b_t, M, K, N, bias, accumulate,
                                       matmul_fast_precision);
    gemm_blocked(out, A, lda, a_t, B, ldb, b_t, M, K, N, bias, accumulate);
#endif
}

// out (BT, OC) = inp (BT, C) @ weight (OC, C)^T + bias (OC)
template <typename F>
static void matmul_forward(F* out, const F* inp, const F* weight, const F* bias, int BT, int C, int OC) {
    SK_PROFILE_SCOPE(PROF_MATMUL);
    gemm(out, inp, C, false, weight, C, true, BT, C, OC, bias, false);
}

// The fast engine's row kernels (fast_row_kernels; ModelEngine sets it for each call into the model, as
// matmul_fast_precision). Deterministic, and not the exact engine's bits:
// - Sums over the B x T rows of a column (bias and norm-weight gradients) run, in the exact engine, as one thread per
//   column adding its rows in order: on a GPU a few hundred threads for millions of terms. The fast engine sums the
//   rows in chunks of ROW_CHUNK instead: a partial sum per (chunk, column), then each column adds its partials in
//   chunk order: chunks x columns threads.
// - A norm's sums over a row of C channels run, in the exact engine, on one thread per row, which on a GPU reads 32
//   rows at once (uncoalesced). The fast engine gives each row a warp (sk_for_warps): lane l takes the channels
//   l, l + 32, ..., and the lanes' sums meet in the warp's butterfly order, the same on the CPU and the GPU.
#define ROW_CHUNK 256
static bool fast_row_kernels = false;

// The partial sums' memory: n values, kept between calls (one buffer per float type).
template <typename F>
static F* row_sum_scratch(size_t n) {
    static SkBuffer<F> scratch;
    scratch.fit(n);
    return scratch.data();
}

// dsum[o] += sum_{bt} x[bt, o] for o < OC in chunks of ROW_CHUNK rows (the fast engine's column_sums)
template <typename F>
static void column_sums_chunked(F* dsum, const F* x, int BT, int OC) {
    size_t chunks = ((size_t)BT + ROW_CHUNK - 1) / ROW_CHUNK;
    F* part = row_sum_scratch<F>(chunks * OC);
    sk_for(chunks * OC, SK_LAMBDA(size_t i) {
        size_t c = i / OC, o = i % OC, end = (c + 1) * ROW_CHUNK < (size_t)BT ? (c + 1) * ROW_CHUNK : (size_t)BT;
        F sum = 0;
        for (size_t bt = c * ROW_CHUNK; bt < end; bt++) sum += x[bt * OC + o];
        part[i] = sum;
    });
    sk_for(OC, SK_LAMBDA(size_t o) {
        F sum = dsum[o];
        for (size_t c = 0; c < chunks; c++) sum += part[c * OC + o];
        dsum[o] = sum;
    });
}

// dsum[o] += sum_{bt in order} x[bt, o] for o < OC: the column sums of a (BT, OC) matrix, a thread per block of
// columns and the columns of a block side by side (each column still adds its rows in order)
template <typename F>
static void column_sums(F* dsum, const F* x, int BT, int OC) {
    if (fast_row_kernels) {
        column_sums_chunked(dsum, x, BT, OC);
        return;
    }
    const int W = 64;
    sk_for(((size_t)OC + W - 1) / W, SK_LAMBDA(size_t blk) {
        size_t o0 = blk * W, w = (size_t)OC - o0 < (size_t)W ? (size_t)OC - o0 : (size_t)W;
        F s[W];
        for (size_t i = 0; i < w; i++) s[i] = dsum[o0 + i];
        for (int bt = 0; bt < BT; bt++) {
            const F* row = x + (size_t)bt * OC + o0;
            for (size_t i = 0; i < w; i++) s[i] += row[i];
        }
        for (size_t i = 0; i < w; i++) dsum[o0 + i] = s[i];
    });
}

// The fast engine's fused products on a GPU (kernels/matmul_cublas.cuh: cuBLASLt epilogues, strided batches). Each
// returns false, having done nothing, in the exact engine, on the CPU and where cuBLAS cannot; the caller then runs
// the plain products and the passes of their own.
#ifdef __CUDACC__
// Runs `call` (a product that returns whether it ran) when the fast engine computes; under SK_SYNC=1 it is then
// waited for, like every launch.
template <typename Call>
static bool fused_product(int BT, Call call) {
    if (matmul_fast_precision < 0 || BT <= 0 || !call()) return false;
    if (sk_sync_each_launch()) SK_CUDA(cudaDeviceSynchronize());
    return true;
}
#endif

// out = gelu(inp @ weight^T + bias) and pre = inp @ weight^T + bias (the tanh GELU of FFN_GELU)
template <typename F>
static bool matmul_forward_gelu(F* out, F* pre, const F* inp, const F* weight, const F* bias, int BT, int C, int OC) {
#ifdef __CUDACC__
    if constexpr (std::is_same<F, float>::value)
        return fused_product(BT, [&] {
            Bf16Operand ops[2] = {{inp, (size_t)BT * C, nullptr}, {weight, (size_t)OC * C, nullptr}};
            return in_precision(ops, [&](auto& p) {
                return gemm_cublas_gelu(out, pre, p[0], p[1], bias, BT, C, OC, matmul_fast_precision);
            });
        });
#endif
    (void)out, (void)pre, (void)inp, (void)weight, (void)bias, (void)BT, (void)C, (void)OC;
    return false;
}

// dpre = (dout @ weight) * gelu'(pre): the input gradient of out = gelu(pre) @ weight^T, through the GELU. dpre is
// written, which adds to it only because the activation gradients are zero when a backward starts and nothing else
// writes dpre.
template <typename F>
static bool matmul_backward_input_gelu(F* dpre, const F* dout, const F* weight, const F* pre, int BT, int C, int OC) {
#ifdef __CUDACC__
    if constexpr (std::is_same<F, float>::value)
        return fused_product(BT, [&] {
            Bf16Operand ops[2] = {{dout, (size_t)BT * OC, nullptr}, {weight, (size_t)OC * C, nullptr}};
            return in_precision(ops, [&](auto& p) {
                return gemm_cublas_dgelu(dpre, pre, p[0], p[1], BT, C, OC, matmul_fast_precision);
            });
        });
#endif
    (void)dpre, (void)dout, (void)weight, (void)pre, (void)BT, (void)C, (void)OC;
    return false;
}

// dweight += dout^T @ inp with dbias's sums of dout from the same GEMM's epilogue, then added to dbias. fp32 only:
// with tf32 or bf16 inputs the epilogue may sum the rounded operand; the bias gradient then keeps its fp32 sums of
// dout (column_sums)
template <typename F>
static bool matmul_backward_weights_fused(F* dweight, F* dbias, const F* dout, const F* inp, int BT, int C, int OC) {
#ifdef __CUDACC__
    if constexpr (std::is_same<F, float>::value) {
        if (matmul_fast_precision != PRECISION_FP32) return false;
        float* sums = row_sum_scratch<float>(OC);
        if (!fused_product(BT, [&] { return gemm_cublas_bgrad(dweight, sums, dout, inp, BT, C, OC, PRECISION_FP32); }))
            return false;
        sk_for(OC, SK_LAMBDA(size_t o) { dbias[o] += sums[o]; });
        return true;
    }
#endif
    (void)dweight, (void)dbias, (void)dout, (void)inp, (void)BT, (void)C, (void)OC;
    return false;
}

// The gated FFN's two products of one input, out0 = inp @ w0^T and out1 = inp @ w1^T (no biases), as one
// strided-batched call
template <typename F>
static bool matmul_forward_pair(F* out0, F* out1, ProductIn<F> inp, const F* w0, const F* w1, int BT, int C, int OC) {
#ifdef __CUDACC__
    if constexpr (std::is_same<F, float>::value)
        return fused_product(BT, [&] {
            Bf16Operand ops[3] = {{inp.f, (size_t)BT * C, nullptr, inp.h}, {w0, (size_t)OC * C, nullptr},
                                  {w1, (size_t)OC * C, nullptr}};
            return in_precision(ops, [&](auto& p) {
                return gemm_cublas_pair(out0, out1, linear_forward_gemm(p[0], p[1], BT, C, OC),
                                        linear_forward_gemm(p[0], p[2], BT, C, OC), false, matmul_fast_precision);
            });
        });
#endif
    (void)out0, (void)out1, (void)inp, (void)w0, (void)w1, (void)BT, (void)C, (void)OC;
    return false;
}

// and their weight gradients, dw0 += dout0^T @ inp and dw1 += dout1^T @ inp, as one strided-batched call
template <typename F>
static bool matmul_backward_weights_pair(F* dw0, F* dw1, const F* dout0, const F* dout1, ProductIn<F> inp, int BT,
                                         int C, int OC) {
#ifdef __CUDACC__
    if constexpr (std::is_same<F, float>::value)
        return fused_product(BT, [&] {
            Bf16Operand ops[3] = {{dout0, (size_t)BT * OC, nullptr}, {dout1, (size_t)BT * OC, nullptr},
                                  {inp.f, (size_t)BT * C, nullptr, inp.h}};
            return in_precision(ops, [&](auto& p) {
                return gemm_cublas_pair(dw0, dw1, linear_weight_grad_gemm(p[0], p[2], BT, C, OC),
                                        linear_weight_grad_gemm(p[1], p[2], BT, C, OC), true, matmul_fast_precision);
            });
        });
#endif
    (void)dw0, (void)dw1, (void)dout0, (void)dout1, (void)inp, (void)BT, (void)C, (void)OC;
    return false;
}

// backward of: out = inp @ weight^T + bias, the parameters' part
//   dweight += dout^T @ inp                (sum over bt in order)
//   dbias   += sum_bt dout                 (sum over bt in order)
template <typename F>
static void matmul_backward_weights(F* dweight, F* dbias, const F* dout, const F* inp, int BT, int C, int OC) {
    SK_PROFILE_SCOPE(PROF_MATMUL);
    if (dbias && matmul_backward_weights_fused(dweight, dbias, dout, inp, BT, C, OC)) return;
    gemm(dweight, dout, OC, true, inp, C, false, OC, BT, C, (const F*)nullptr, true);
    if (dbias) column_sums(dbias, dout, BT, OC);
}

// backward of: out = inp @ weight^T + bias, the input's part
//   dinp    += dout @ weight               (sum over o in order)
template <typename F>
static void matmul_backward_input(F* dinp, const F* dout, const F* weight, int BT, int C, int OC) {
    SK_PROFILE_SCOPE(PROF_MATMUL);
    gemm(dinp, dout, OC, false, weight, C, false, BT, OC, C, (const F*)nullptr, true);
}

// backward of: out = inp @ weight^T + bias, both parts
template <typename F>
static void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                            int BT, int C, int OC) {
    matmul_backward_input(dinp, dout, weight, BT, C, OC);
    matmul_backward_weights(dweight, dbias, dout, inp, BT, C, OC);
}

// The same layer with its input stored in bf16 (the fast engine at --precision bf16, Acts::bf16_acts; float
// models only): out = inp @ weight^T + bias, and dweight += dout^T @ inp, dbias += sum_bt dout. Their products run
// as gemm_bf16 with inp as it is stored.
template <typename F>
static void matmul_forward(F* out, const bf16* inp, const F* weight, const F* bias, int BT, int C, int OC) {
    SK_PROFILE_SCOPE(PROF_MATMUL);
    if constexpr (!std::is_same<F, float>::value) {
        fail("internal: a bf16 activation in a model of %zu-byte values", sizeof(F));
    } else {
        Bf16Operand ops[2];
        gemm_operands(ops, nullptr, C, false, weight, C, true, BT, C, OC);
        ops[0].p16 = inp;
        gemm_bf16(out, ops, C, false, C, true, BT, C, OC, bias, false);
    }
}
template <typename F>
static void matmul_backward_weights(F* dweight, F* dbias, const F* dout, const bf16* inp, int BT, int C, int OC) {
    SK_PROFILE_SCOPE(PROF_MATMUL);
    if constexpr (!std::is_same<F, float>::value) {
        fail("internal: a bf16 activation in a model of %zu-byte values", sizeof(F));
    } else {
        Bf16Operand ops[2];
        gemm_operands(ops, dout, OC, true, nullptr, C, false, OC, BT, C);
        ops[1].p16 = inp;
        gemm_bf16(dweight, ops, OC, true, C, false, OC, BT, C, nullptr, true);
        if (dbias) column_sums(dbias, dout, BT, OC);
    }
}

// and with its input as its layer stored it (ProductIn): fp32 or bf16
template <typename F>
static void matmul_forward(F* out, ProductIn<F> inp, const F* weight, const F* bias, int BT, int C, int OC) {
    if (inp.h) matmul_forward(out, inp.h, weight, bias, BT, C, OC);
    else matmul_forward(out, inp.f, weight, bias, BT, C, OC);
}
template <typename F>
static void matmul_backward_weights(F* dweight, F* dbias, const F* dout, ProductIn<F> inp, int BT, int C, int OC) {
    if (inp.h) matmul_backward_weights(dweight, dbias, dout, inp.h, BT, C, OC);
    else matmul_backward_weights(dweight, dbias, dout, inp.f, BT, C, OC);
}
template <typename F>
static void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, ProductIn<F> inp, const F* weight, int BT,
                            int C, int OC) {
    matmul_backward_input(dinp, dout, weight, BT, C, OC);
    matmul_backward_weights(dweight, dbias, dout, inp, BT, C, OC);
}

// The classifier's backward products, dh += dlogits @ W and dW += dlogits^T @ h (BT rows, Vp the padded vocabulary).
// At --precision bf16 they run on chunks of bf16_chunk_rows rows at a time, each chunk of dlogits rounded to bf16
// once for both products (into bf16_logit_chunk: about bf16_chunk_values values, not B x T x Vp): the same sums in
// the same order on the CPU (dW adds the rows in order, chunk after chunk), and on a GPU the rows of dh split and
// dW's sums in chunks. h, the classifier's input, as the model stored it (ProductIn).
static size_t bf16_chunk_values = (size_t)1 << 26;  // 128 MB of bf16
static inline int bf16_chunk_rows(int BT, int Vp) {
    size_t rows = std::max((size_t)1, bf16_chunk_values / (size_t)Vp);
    return (int)std::min((size_t)BT, rows);
}
static SkBuffer<bf16>& bf16_logit_chunk() {
    static SkBuffer<bf16> chunk;
    return chunk;
}
template <typename F>
static void classifier_backward(F* dh, F* dW, const F* dlogits, ProductIn<F> h, const F* W, int BT, int C, int Vp) {
    SK_PROFILE_SCOPE(PROF_CLASSIFIER);
    if constexpr (std::is_same<F, float>::value) {
        if (matmul_fast_precision == PRECISION_BF16) {
            int rows = bf16_chunk_rows(BT, Vp);
            SkBuffer<bf16>& chunk = bf16_logit_chunk();
            chunk.fit((size_t)rows * Vp);
            for (int r0 = 0; r0 < BT; r0 += rows) {
                int n = std::min(rows, BT - r0);
                const float* src = dlogits + (size_t)r0 * Vp;
                bf16* d16 = chunk.data();
                sk_for((size_t)n * Vp, SK_LAMBDA(size_t i) { d16[i] = bf16_from_float(src[i]); });
                Bf16Operand in[2], wg[2];  // matmul_backward_input's and matmul_backward_weights's products
                gemm_operands(in, nullptr, Vp, false, W, C, false, n, Vp, C);
                gemm_operands(wg, nullptr, Vp, true, h.f ? h.f + (size_t)r0 * C : nullptr, C, false, Vp, n, C);
                in[0].p16 = wg[0].p16 = d16;
                if (h.h) wg[1].p16 = h.h + (size_t)r0 * C;
                gemm_bf16(dh + (size_t)r0 * C, in, Vp, false, C, false, n, Vp, C, nullptr, true);
                gemm_bf16(dW, wg, Vp, true, C, false, Vp, n, C, nullptr, true);
            }
            return;
        }
    }
    matmul_backward(dh, dW, (F*)nullptr, dlogits, h, W, BT, C, Vp);
}

// -----------------------------------------------------------------------------------------------------------
// normalisation. LayerNorm: y = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + eps) (biased variance).
// RMSNorm: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). mean is unused (0) for RMSNorm.

// The fast engine's norm_forward (fast_row_kernels): a warp per row, the same formulas with every sum over the row
// taken by 32 lanes (channels i = lane mod 32, i in order) and then the warp's butterfly. With `add`, the input is
// inp + add, written to sum_out on the way (a residual and the norm after it in one pass over the row). out is F, or
// bf16 where the fast engine at --precision bf16 stores the norm's output so (Acts::bf16_acts), rounded as written.
template <typename F, typename O>
static void norm_forward_warp(O* out, F* mean, F* rstd, const F* inp, const F* w, const F* b, int BT, int C, int kind,
                              float eps, const F* add = nullptr, F* sum_out = nullptr) {
    sk_for_warps(BT, SK_LAMBDA(size_t bt, SkWarp & warp) {
        const F* x = add ? sum_out + bt * C : inp + bt * C;
        O* y = out + bt * C;
        if (add) warp.each_index(C, [&](int i) { sum_out[bt * C + i] = inp[bt * C + i] + add[bt * C + i]; });
        SkWarpLanes<F> part;
        F m = 0;
        if (kind == NORM_LAYERNORM) {
            warp.lane_sums(&part, C, [&](int i) { return x[i]; });
            m = warp.sum(part) / C;
        }
        auto centred = [&](int i) { return x[i] - m; };
        warp.lane_dots(&part, C, centred, centred);
        F s = F(1) / sk_sqrt(warp.sum(part) / C + F(eps));
        warp.each_index(C, [&](int i) { sk_store(y + i, (x[i] - m) * s * w[i] + (b ? b[i] : F(0))); });
        warp.once([&] {
            mean[bt] = m;
            rstd[bt] = s;
        });
    });
}

template <typename F>
static void norm_forward(F* out, F* mean, F* rstd, const F* inp, const F* w, const F* b, int BT, int C,
                         int kind, float eps) {
    SK_PROFILE_SCOPE(PROF_NORM);
    if (fast_row_kernels) {
        norm_forward_warp(out, mean, rstd, inp, w, b, BT, C, kind, eps);
        return;
    }
    sk_for(BT, SK_LAMBDA(size_t bt) {
        const F* x = inp + bt * C;
        F* y = out + bt * C;
        F m = 0;
        if (kind == NORM_LAYERNORM) {
            for (int i = 0; i < C; i++) m += x[i];
            m = m / C;
        }
        F v = 0;
        for (int i = 0; i < C; i++) v = sk_fma(x[i] - m, x[i] - m, v);
        v = v / C;
        F s = F(1) / sk_sqrt(v + F(eps));
        for (int i = 0; i < C; i++) y[i] = (x[i] - m) * s * w[i] + (b ? b[i] : F(0));
        mean[bt] = m;
        rstd[bt] = s;
    });
}

// N(x) stored in bf16 (Acts::bf16_acts, the fast engine's only): its pass, the output rounded as it is written
template <typename F>
static void norm_forward(bf16* out, F* mean, F* rstd, const F* inp, const F* w, const F* b, int BT, int C, int kind,
                         float eps) {
    SK_PROFILE_SCOPE(PROF_NORM);
    if (!fast_row_kernels) fail("internal: a norm's output stored in bf16 outside the fast engine");
    norm_forward_warp(out, mean, rstd, inp, w, b, BT, C, kind, eps);
}

// dw += sum_bt dy * n and db += sum_bt dy in chunks of ROW_CHUNK rows (the fast engine's; see column_sums_chunked)
template <typename F>
static void norm_backward_params_chunked(F* dw, F* db, const F* dout, const F* inp, const F* mean, const F* rstd,
                                         int BT, int C) {
    size_t chunks = ((size_t)BT + ROW_CHUNK - 1) / ROW_CHUNK;
    F* part = row_sum_scratch<F>(2 * chunks * C);  // [dw partials | db partials]
    sk_for(chunks * C, SK_LAMBDA(size_t k) {
        size_t c = k / C, i = k % C, end = (c + 1) * ROW_CHUNK < (size_t)BT ? (c + 1) * ROW_CHUNK : (size_t)BT;
        F gw = 0, gb = 0;
        for (size_t bt = c * ROW_CHUNK; bt < end; bt++) {
            F n = (inp[bt * C + i] - mean[bt]) * rstd[bt];
            F dy = dout[bt * C + i];
            gw = sk_fma(dy, n, gw);
            gb += dy;
        }
        part[k] = gw;
        part[chunks * C + k] = gb;
    });
    sk_for(C, SK_LAMBDA(size_t i) {
        F gw = dw[i], gb = db ? db[i] : F(0);
        for (size_t c = 0; c < chunks; c++) {
            gw += part[c * C + i];
            gb += part[chunks * C + c * C + i];
        }
        dw[i] = gw;
        if (db) db[i] = gb;
    });
}

// backward of: y = n * w + b, n = (x - mean) * rstd
//   dx += rstd * (dn - mean(dn) - n * mean(dn * n)),  dn = dy * w    (RMSNorm drops the mean(dn) term)
//   dw += sum_bt dy * n,  db += sum_bt dy                (sums over bt in order, one thread per channel; the fast
//                                                         engine: in chunks, norm_backward_params_chunked)
// norm_backward's dx in the fast engine (fast_row_kernels): a warp per row, its two sums over the row by lanes and
// the butterfly, as norm_forward_warp. With `add`, dx += add first, in the same pass (a pre-norm sub-block's residual
// gradient: the bits of residual_backward before it).
template <typename F>
static void norm_backward_dx_warp(F* dinp, const F* dout, const F* inp, const F* w, const F* mean, const F* rstd,
                                  int BT, int C, int kind, const F* add = nullptr) {
    sk_for_warps(BT, SK_LAMBDA(size_t bt, SkWarp & warp) {
        const F* x = inp + bt * C;
        const F* dy = dout + bt * C;
        F* dx = dinp + bt * C;
        F m = mean[bt], s = rstd[bt];
        auto dn = [&](int i) { return dy[i] * w[i]; };
        auto n = [&](int i) { return (x[i] - m) * s; };
        SkWarpLanes<F> part;
        F dn_mean = 0;
        if (kind == NORM_LAYERNORM) {
            warp.lane_sums(&part, C, dn);
            dn_mean = warp.sum(part) / C;
        }
        warp.lane_dots(&part, C, dn, n);
        F dn_n_mean = warp.sum(part) / C;
        warp.each_index(C, [&](int i) {
            F base = add ? dx[i] + add[bt * C + i] : dx[i];
            dx[i] = base + s * (dy[i] * w[i] - dn_mean - n(i) * dn_n_mean);
        });
    });
}

template <typename F>
static void norm_backward(F* dinp, F* dw, F* db, const F* dout, const F* inp, const F* w, const F* mean,
                          const F* rstd, int BT, int C, int kind, const F* dadd = nullptr) {
    SK_PROFILE_SCOPE(PROF_NORM);
    if (fast_row_kernels) {  // dadd: dinp += dadd in the same pass
        norm_backward_dx_warp(dinp, dout, inp, w, mean, rstd, BT, C, kind, dadd);
        norm_backward_params_chunked(dw, db, dout, inp, mean, rstd, BT, C);
        return;
    }
    if (dadd) sk_for((size_t)BT * C, SK_LAMBDA(size_t i) { dinp[i] += dadd[i]; });  // residual_backward's bits
    sk_for(BT, SK_LAMBDA(size_t bt) {
        const F* x = inp + bt * C;
        const F* dy = dout + bt * C;
        F* dx = dinp + bt * C;
        F m = mean[bt], s = rstd[bt];
        F dn_mean = 0, dn_n_mean = 0;
        for (int i = 0; i < C; i++) {
            F n = (x[i] - m) * s;
            F dn = dy[i] * w[i];
            dn_mean += dn;
            dn_n_mean = sk_fma(dn, n, dn_n_mean);
        }
        dn_mean = kind == NORM_LAYERNORM ? dn_mean / C : F(0);
        dn_n_mean = dn_n_mean / C;
        for (int i = 0; i < C; i++) {
            F n = (x[i] - m) * s;
            dx[i] += s * (dy[i] * w[i] - dn_mean - n * dn_n_mean);
        }
    });
    sk_for(C, SK_LAMBDA(size_t i) {
        F gw = dw[i], gb = db ? db[i] : F(0);
        for (int bt = 0; bt < BT; bt++) {
            F n = (inp[(size_t)bt * C + i] - mean[bt]) * rstd[bt];
            F dy = dout[(size_t)bt * C + i];
            gw = sk_fma(dy, n, gw);
            gb += dy;
        }
        dw[i] = gw;
        if (db) db[i] = gb;
    });
}

// -----------------------------------------------------------------------------------------------------------
// activations: relu, tanh-GELU, swish (SiLU). act_grad is d act(x) / dx.

template <typename F>
SK_HD static inline F act_forward(int ffn, F x) {
    switch (ffn) {
    case FFN_RELU: case FFN_REGLU: return x > 0 ? x : F(0);
    case FFN_GELU: case FFN_GEGLU: {
        const F s = F(0.7978845608028654);  // sqrt(2/pi)
        return F(0.5) * x * (F(1) + sk_tanh(s * (x + F(0.044715) * x * x * x)));
    }
    default: return x / (F(1) + sk_exp(-x));  // swish, swiglu
    }
}

template <typename F>
SK_HD static inline F act_grad(int ffn, F x) {
    switch (ffn) {
    case FFN_RELU: case FFN_REGLU: return x > 0 ? F(1) : F(0);
    case FFN_GELU: case FFN_GEGLU: {
        const F s = F(0.7978845608028654);
        F th = sk_tanh(s * (x + F(0.044715) * x * x * x));
        return F(0.5) * (F(1) + th) + F(0.5) * x * (F(1) - th * th) * s * (F(1) + F(3 * 0.044715) * x * x);
    }
    default: {
        F sig = F(1) / (F(1) + sk_exp(-x));
        return sig * (F(1) + x * (F(1) - sig));
    }
    }
}

// act = gated ? act(h1) * h2 : act(h1), elementwise over N values. On the CPU the swish and GELU families take their
// exps and tanhs a block at a time (cpu/activations.h, the same bits).
template <typename F, typename O>
static void ffn_act_forward(O* out, const F* h1, const F* h2, size_t N, int ffn) {
    SK_PROFILE_SCOPE(PROF_ACTIVATION);
#ifndef __CUDACC__
    if constexpr (std::is_same<F, float>::value && std::is_same<O, float>::value) {
        if (ffn == FFN_SWISH || ffn == FFN_SWIGLU) return swish_forward_blocked(out, h1, h2, N);
        if (ffn == FFN_GELU || ffn == FFN_GEGLU) return gelu_forward_blocked(out, h1, h2, N);
    }
#endif
    sk_for(N, SK_LAMBDA(size_t i) {
        sk_store(out + i, h2 ? act_forward(ffn, h1[i]) * h2[i] : act_forward(ffn, h1[i]));
    });
}

// backward of: out = act(h1) * h2  (or act(h1)):  dh1 += dout * h2 * act'(h1),  dh2 += dout * act(h1)
template <typename F>
static void ffn_act_backward(F* dh1, F* dh2, const F* dout, const F* h1, const F* h2, size_t N, int ffn) {
    SK_PROFILE_SCOPE(PROF_ACTIVATION);
#ifndef __CUDACC__
    if constexpr (std::is_same<F, float>::value) {
        if (ffn == FFN_SWISH || ffn == FFN_SWIGLU) return swish_backward_blocked(dh1, dh2, dout, h1, h2, N);
        if (ffn == FFN_GELU || ffn == FFN_GEGLU) return gelu_backward_blocked(dh1, dh2, dout, h1, h2, N);
    }
#endif
    sk_for(N, SK_LAMBDA(size_t i) {
        F g = h2 ? dout[i] * h2[i] : dout[i];
        dh1[i] += g * act_grad(ffn, h1[i]);
        if (h2) dh2[i] += dout[i] * act_forward(ffn, h1[i]);
    });
}

// y is F, or bf16 where the fast engine at --precision bf16 stores it so (Acts::bf16_acts), rounded as written
template <typename F, typename Y>
static void relu_forward(Y* y, const F* x, size_t N) {
    sk_for(N, SK_LAMBDA(size_t i) { sk_store(y + i, x[i] > 0 ? x[i] : F(0)); });
}

// backward of: y = relu(x)  ->  dx += dy * [x > 0]
template <typename F>
static void relu_backward(F* dx, const F* dy, const F* x, size_t N) {
    sk_for(N, SK_LAMBDA(size_t i) { dx[i] += x[i] > 0 ? dy[i] : F(0); });
}

// out = a + b, elementwise
template <typename F>
static void residual_forward(F* out, const F* a, const F* b, size_t N) {
    SK_PROFILE_SCOPE(PROF_ACTIVATION);
    sk_for(N, SK_LAMBDA(size_t i) { out[i] = a[i] + b[i]; });
}

// backward of: out = a + b, for the input on the residual path:  da += dout  (the branch reads dout directly)
template <typename F>
static void residual_backward(F* da, const F* dout, size_t N) {
    SK_PROFILE_SCOPE(PROF_ACTIVATION);
    sk_for(N, SK_LAMBDA(size_t i) { da[i] += dout[i]; });
}

// -----------------------------------------------------------------------------------------------------------
// positions. Tables are computed once in double and rounded, so every platform gets the same values.

// RoPE (rotate-half) on q and k of every head of qkv (B,T,3C), in place; `inverse` rotates backwards. The
// rotation is orthogonal, so its backward is the inverse rotation of the incoming gradient, also in place.
//   for i < hs/2: a' = a cos - b sin, b' = b cos + a sin,  (a, b) = (x[i], x[i + hs/2]),
//   angle = t * base^(-2i/hs)
template <typename F>
static void rope_apply(F* qkv, const F* cos_t, const F* sin_t, int B, int T, int C, int NH, bool inverse) {
    SK_PROFILE_SCOPE(PROF_ACTIVATION);
    int hs = C / NH, half = hs / 2;
    // one element per pair (a, b): head vector v = (bt * 2 + part) * NH + h (part 0 for q, 1 for k), pair i
    sk_for_2d((size_t)B * T * 2 * NH, half, SK_LAMBDA(size_t v, int i) {
        size_t bt = v / (2 * NH), t = bt % T;
        F* x = qkv + bt * 3 * C + (v % (2 * NH)) * hs;  // q's heads then k's: C values apart, hs per head
        F a = x[i], bb = x[i + half], c = cos_t[t * half + i], s = sin_t[t * half + i];
        if (inverse) s = -s;
        x[i] = a * c - bb * s;
        x[i + half] = bb * c + a * s;
    });
}

// x0 (B,T,C) = wte[tok] + wpe[t] (learned) or + pe[t] (sinusoidal table); id -1 is the learned sink token.
template <typename F>
static void embedding_forward(F* out, const int* tokens, const F* wte, const F* sink_token,
                              const F* pos_table, int B, int T, int C) {
    SK_PROFILE_SCOPE(PROF_ACTIVATION);
    sk_for((size_t)B * T, SK_LAMBDA(size_t bt) {
        F* o = out + bt * C;
        int tok = tokens[bt];
        const F* e = tok >= 0 ? wte + (size_t)tok * C : sink_token;
        for (int i = 0; i < C; i++) o[i] = pos_table ? e[i] + pos_table[(bt % T) * C + i] : e[i];
    });
}

// The (b, t) positions of a batch grouped by token id, each group in (b, t) order, for embedding_backward; built on
// the host, which has the tokens. packed = [start (n + 1) | id (n) | order (BT)]: group g is token id[g] (-1: the
// sink token) at positions order[start[g] .. start[g + 1]). Returns n, the number of distinct ids.
static int group_positions_by_token(const int* tokens, int BT, std::vector<int>* packed) {
    std::vector<int> order(BT);
    for (int i = 0; i < BT; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return tokens[x] < tokens[y]; });
    std::vector<int> start, id;
    for (int i = 0; i < BT; i++)
        if (i == 0 || tokens[order[i]] != tokens[order[i - 1]]) {
            start.push_back(i);
            id.push_back(tokens[order[i]]);
        }
    start.push_back(BT);
    *packed = start;
    packed->insert(packed->end(), id.begin(), id.end());
    packed->insert(packed->end(), order.begin(), order.end());
    return (int)id.size();
}

// backward of: x0[b,t] = wte[tok[b,t]] + wpe[t]:
//   dwte[tok] += dx0[b,t] (dsink_token for id -1): one thread per (token of the batch, channel), its positions in
//                (b, t) order (groups: group_positions_by_token, n of them)
//   dwpe[t] += dx0[b,t]: one thread per (t, channel), b in order
// Each element adds its terms in (b, t) order, one at a time, as a single thread walking every position would.
template <typename F>
static void embedding_backward(F* dwte, F* dsink_token, F* dwpe, const F* dout, const int* groups, int n, int B,
                               int T, int C) {
    SK_PROFILE_SCOPE(PROF_ACTIVATION);
    const int *start = groups, *id = groups + n + 1, *order = groups + 2 * n + 1;
    sk_for((size_t)n * C, SK_LAMBDA(size_t k) {
        size_t g = k / C, i = k % C;
        F* d = id[g] >= 0 ? dwte + (size_t)id[g] * C + i : dsink_token + i;
        F acc = *d;
        for (int p = start[g]; p < start[g + 1]; p++) acc += dout[(size_t)order[p] * C + i];
        *d = acc;
    });
    if (dwpe)
        sk_for((size_t)T * C, SK_LAMBDA(size_t k) {
            size_t t = k / C, i = k % C;
            F acc = dwpe[k];
            for (int b = 0; b < B; b++) acc += dout[((size_t)b * T + t) * C + i];
            dwpe[k] = acc;
        });
}

// -----------------------------------------------------------------------------------------------------------
// attention, the plain way: causal softmax, as in llm.c. Read this first. It is what the default model runs
// (the flags choose no attention variant and no ALiBi), and the general form below computes exactly these
// numbers in that case (tested bit for bit). q, k, v of head h at position t are hs-vectors inside qkv (B, T,
// 3C): q = qkv[b,t, h hs ..], k = qkv[b,t, C + h hs ..], v = qkv[b,t, 2C + h hs ..]. One row per (b, h, t):
//   s_j = tau q_t . k_j for the keys j <= t, tau = 1/sqrt(hs)       (dot product over d in order, fma)
//   p = softmax(s)                                                   (common/numerics.h sk_softmax_row)
//   y_t = sum_j p_j v_j                                              (j in order, fma)
// att (B, NH, T, T) keeps p (0 for j > t) for the backward pass and the sink metrics.
template <typename F>
static void attention_forward_causal(F* out, F* att, const F* qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    F tau = F(1) / sk_sqrt(F(hs));
    sk_for((size_t)B * NH * T, SK_LAMBDA(size_t r) {
        size_t b = r / ((size_t)NH * T), h = r / T % NH, t = r % T;
        const F* q = qkv + (b * T + t) * 3 * C + h * hs;
        F* p = att + r * T;
        for (size_t j = 0; j <= t; j++) {
            const F* k = qkv + (b * T + j) * 3 * C + C + h * hs;
            F dot = 0;
            for (int d = 0; d < hs; d++) dot = sk_fma(q[d], k[d], dot);
            p[j] = dot * tau;
        }
        sk_softmax_row(p, p, (int)t + 1, F(1));  // in place: the scores become the weights
        for (size_t j = t + 1; j < (size_t)T; j++) p[j] = 0;
        F* y = out + (b * T + t) * C + h * hs;
        for (int d = 0; d < hs; d++) y[d] = 0;
        for (size_t j = 0; j <= t; j++) {
            const F* v = qkv + (b * T + j) * 3 * C + 2 * C + h * hs;
            for (int d = 0; d < hs; d++) y[d] = sk_fma(p[j], v[d], y[d]);
        }
    });
}

// backward of: s_j = tau q_t . k_j,  p = softmax(s),  y_t = sum_j p_j v_j. Two passes, so every gradient
// element is summed by one thread in a fixed order:
//   rows (b,h,t):  dp_j = dy_t . v_j;  ds_j = p_j (dp_j - sum_i p_i dp_i), kept in ds_rows (B, NH, T, T+1);
//                  dq_t += tau sum_j ds_j k_j                                            (j = 0..t in order)
//   keys (b,h,j):  dk_j += tau sum_t ds_tj q_t;  dv_j += sum_t p_tj dy_t             (t = j..T-1 in order)
template <typename F>
static void attention_backward_causal(F* dqkv, F* ds_rows, const F* dout, const F* qkv, const F* att, int B,
                                      int T, int C, int NH) {
    int hs = C / NH;
    F tau = F(1) / sk_sqrt(F(hs));
    sk_for((size_t)B * NH * T, SK_LAMBDA(size_t r) {
        size_t b = r / ((size_t)NH * T), h = r / T % NH, t = r % T;
        const F* p = att + r * T;
        const F* dy = dout + (b * T + t) * C + h * hs;
        F* ds = ds_rows + r * (T + 1);
        for (size_t j = 0; j <= t; j++) {  // dp_j, in ds until the softmax's backward replaces it
            const F* v = qkv + (b * T + j) * 3 * C + 2 * C + h * hs;
            F dot = 0;
            for (int d = 0; d < hs; d++) dot = sk_fma(dy[d], v[d], dot);
            ds[j] = dot;
        }
        F D = 0;
        for (size_t j = 0; j <= t; j++) D = sk_fma(p[j], ds[j], D);
        for (size_t j = 0; j <= t; j++) ds[j] = p[j] * (ds[j] - D);
        F* dq = dqkv + (b * T + t) * 3 * C + h * hs;
        for (size_t j = 0; j <= t; j++) {
            const F* k = qkv + (b * T + j) * 3 * C + C + h * hs;
            F g = ds[j] * tau;
            for (int d = 0; d < hs; d++) dq[d] = sk_fma(g, k[d], dq[d]);
        }
    });
    sk_for((size_t)B * NH * T, SK_LAMBDA(size_t r) {
        size_t b = r / ((size_t)NH * T), h = r / T % NH, j = r % T, head = r - j;  // head: row (b, h, 0)
        F* dk = dqkv + (b * T + j) * 3 * C + C + h * hs;
        F* dv = dqkv + (b * T + j) * 3 * C + 2 * C + h * hs;
        for (size_t t = j; t < (size_t)T; t++) {
            const F* q = qkv + (b * T + t) * 3 * C + h * hs;
            const F* dy = dout + (b * T + t) * C + h * hs;
            F g = ds_rows[(head + t) * (T + 1) + j] * tau, p = att[(head + t) * T + j];
            for (int d = 0; d < hs; d++) {
                dk[d] = sk_fma(g, q[d], dk[d]);
                dv[d] = sk_fma(p, dy[d], dv[d]);
            }
        }
    });
}

// What the model calls: on the CPU the plain attention runs a head at a time with its sums side by side
// (cpu/attention.h), tested equal to the per-row form above bit for bit; in double (the tests) the per-row form runs.
// A GPU never calls it: its exact engine runs the general form's per-element passes (attention_is_plain).
template <typename F>
static void attention_forward_plain(F* out, F* att, const F* qkv, int B, int T, int C, int NH) {
    SK_PROFILE_SCOPE(PROF_ATTENTION);
#ifndef __CUDACC__
    if constexpr (std::is_same<F, float>::value)
        return attention_forward_causal_blocked(out, att, qkv, B, T, C, NH);
#endif
    attention_forward_causal(out, att, qkv, B, T, C, NH);
}

template <typename F>
static void attention_backward_plain(F* dqkv, F* ds_rows, const F* dout, const F* qkv, const F* att, int B, int T,
                                     int C, int NH) {
    SK_PROFILE_SCOPE(PROF_ATTENTION);
#ifndef __CUDACC__
    if constexpr (std::is_same<F, float>::value)
        return attention_backward_causal_blocked(dqkv, ds_rows, dout, qkv, att, B, T, C, NH);
#endif
    attention_backward_causal(dqkv, ds_rows, dout, qkv, att, B, T, C, NH);
}

// -----------------------------------------------------------------------------------------------------------
// attention, the general form: every variant of attention_variants.cuh. q, k and v of head h are hs-vectors
// at a row stride: q(b,t,h) = q + (b*T + t) * qk_stride + h * hs (the fused qkv buffer, stride 3C, or the
// feature-mapped q|k block, stride C), v likewise with stride 3C. One row:
//   s_* = the slot score (attention_variants.cuh: tau q.k*, sigma_h or 0), then for the visible keys
//   j in [lo, hi):  s_j = tau * (q_t . k_j) - alibi[h] * |t - j|,  tau = 1/sqrt(hs)   (d in order, fma)
//   p = the variant's row map of [s_*, s_lo .. s_hi-1]                               (attn_row_forward)
//   y_t = p_* v* + sum_j p_j v_j (+ v_bias)                         (slot first, then j in order, fma)
// att (B,NH,T,T) keeps p of the keys (zero outside [lo,hi)) and att_slot (B,NH,T) the slot's weight. In a
// row's arrays the keys start at index key0: 1 behind a slot, else 0. One loop index per row (b, h, t); the
// row's scores s and weights p (and dp in backward) are T+1 values each of the loop's scratch
// (sk_for_scratch; `work` is its GPU storage).

// The parameters of one layer's attention core besides q, k, v (null when the variant has none). The spec is
// a copy, so a loop body on the GPU carries it by value.
template <typename F>
struct AttnParams {
    AttnSpec spec;
    const float* alibi;   // (NH) slopes
    const F* kstar;       // (S, hs) SLOT_KV
    const F* vstar;       // (S, hs) SLOT_KV with a learned v*
    const F* sink_logit;  // (NH) SLOT_LOGIT
    const F* vbias;       // (S, hs) value bias
    int shared;           // slot vectors shared by all heads (index 0) instead of one per head
};

// Gradients of those parameters. Each (b, h) first sums its rows into `partial` (t in order), then every
// parameter entry adds the partial sums over b in order: the same result whatever the thread count. Layout of
// partial: (B, NH) blocks of [dk* (hs), dv* (hs), dv_bias (hs), dsigma].
template <typename F>
struct AttnParamGrads {
    F* dkstar;
    F* dvstar;
    F* dsink_logit;
    F* dvbias;
    F* partial;
};

// The score of query row qt (position t) against key row kj (position j) of head h: tau * (q . k), d in order,
// then ALiBi's -m_h |t - j| (rows inside a bidirectional prefix see keys j > t).
template <typename F>
SK_HD static inline F attention_key_score(const AttnParams<F>& ap, const F* qt, const F* kj, int h, int t, int j,
                                          int hs, F tau) {
    F dot = 0;
    for (int d = 0; d < hs; d++) dot = sk_fma(qt[d], kj[d], dot);
    return ap.alibi ? attn_alibi_score(dot * tau, F(ap.alibi[h]), t, j) : dot * tau;
}

// The slot's score for query row qt of head h (only when the variant has a slot): tau q . k*, sigma_h or 0.
template <typename F>
SK_HD static inline F attention_slot_score(const AttnParams<F>& ap, const F* qt, int h, int hs, F tau) {
    if (ap.spec.slot == SLOT_KV) {
        const F* ks = ap.kstar + (size_t)(ap.shared ? 0 : h) * hs;
        F dot = 0;
        for (int d = 0; d < hs; d++) dot = sk_fma(qt[d], ks[d], dot);
        return dot * tau;
    }
    return ap.spec.slot == SLOT_LOGIT ? ap.sink_logit[h] : F(0);
}

// Entry i of the scores of query t of head h: the slot score when the variant has a slot (i < key0), then key
// lo + i - key0. Every form of the exact attention takes its scores from here (the backward recomputes them), so
// recomputed scores are bit-identical.
template <typename F>
SK_HD static inline F attention_row_score(const AttnParams<F>& ap, const F* q, const F* k, int qk_stride, int b,
                                          int h, int t, int T, int hs, F tau, int lo, int key0, int i) {
    const F* qt = q + ((size_t)b * T + t) * qk_stride + h * hs;
    if (i < key0) return attention_slot_score(ap, qt, h, hs, tau);
    int j = lo + i - key0;
    return attention_key_score(ap, qt, k + ((size_t)b * T + j) * qk_stride + h * hs, h, t, j, hs, tau);
}

// The scores of query t of head h: s[0] = the slot score when the variant has a slot, then keys lo..hi-1.
// Returns the row length.
template <typename F>
SK_HD static inline int attention_row_scores(F* s, const AttnParams<F>& ap, const F* q, const F* k,
                                             int qk_stride, int b, int h, int t, int T, int hs, F tau, int lo,
                                             int hi) {
    int key0 = attn_has_slot(ap.spec), n = key0 + hi - lo;
    for (int i = 0; i < n; i++) s[i] = attention_row_score(ap, q, k, qk_stride, b, h, t, T, hs, tau, lo, key0, i);
    return n;
}

// Entry d of v* of head h: learned or the fixed value (only when attention_slot_has_value).
SK_HD static inline bool attention_slot_has_value(const AttnSpec& spec) {
    return spec.slot == SLOT_KV && spec.vstar != VSTAR_ZERO;
}
template <typename F>
SK_HD static inline F attention_slot_value(const AttnParams<F>& ap, int h, int hs, int d) {
    if (ap.spec.vstar != VSTAR_LEARN) return F(ap.spec.vstar_value);
    return ap.vstar[(size_t)(ap.shared ? 0 : h) * hs + d];
}

template <typename F>
static void attention_forward_rows(F* out, F* att, F* att_slot, F* work, const F* q, const F* k, int qk_stride,
                                   const F* v, const AttnParams<F>& ap_, int B, int T, int C, int NH) {
    AttnParams<F> ap = ap_;
    int hs = C / NH, key0 = attn_has_slot(ap.spec);
    F tau = F(1) / sk_sqrt(F(hs));
    sk_for_scratch((size_t)B * NH * T, 3 * (size_t)(T + 1), work, SK_LAMBDA(size_t r, F* scratch) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), t = (int)(r % T);
        const AttnSpec& spec = ap.spec;
        F *s = scratch, *p = scratch + (T + 1);
        int lo, hi;
        attn_visible_keys(spec, t, T, &lo, &hi);
        int n = attention_row_scores(s, ap, q, k, qk_stride, b, h, t, T, hs, tau, lo, hi);
        attn_row_forward(spec, s, p, n, T);
        F* arow = att + r * T;
        for (int j = 0; j < T; j++) arow[j] = 0;
        for (int j = lo; j < hi; j++) arow[j] = p[key0 + j - lo];
        if (key0) att_slot[r] = p[0];
        bool slot_value = attention_slot_has_value(spec);
        F* y = out + ((size_t)b * T + t) * C + h * hs;
        for (int d = 0; d < hs; d++) y[d] = slot_value ? p[0] * attention_slot_value(ap, h, hs, d) : F(0);
        for (int j = lo; j < hi; j++) {
            const F* vj = v + ((size_t)b * T + j) * 3 * C + h * hs;
            for (int d = 0; d < hs; d++) y[d] = sk_fma(arow[j], vj[d], y[d]);
        }
        if (ap.vbias)
            for (int d = 0; d < hs; d++) y[d] += ap.vbias[(size_t)(ap.shared ? 0 : h) * hs + d];
    });
}

// backward of the row map, and dq (one loop index per row (b, h, t)):
//   dp_* = dO_t . v*,  dp_j = dO_t . v_j;  ds = the variant's derivative (attn_row_backward), kept in ds_rows
//   (B, NH, T, T+1) for the other two passes;
//   dq_t += tau (ds_* k* + sum_j ds_j k_j)                                  (slot first, then j in order)
template <typename F>
static void attention_backward_rows(F* dq, int qk_stride, F* ds_rows, F* work, const F* dout, const F* q,
                                    const F* k, const F* v, const F* att, const F* att_slot,
                                    const AttnParams<F>& ap_, int B, int T, int C, int NH) {
    AttnParams<F> ap = ap_;
    int hs = C / NH, key0 = attn_has_slot(ap.spec);
    bool need_s = attn_variant_table[ap.spec.variant].needs_scores;
    F tau = F(1) / sk_sqrt(F(hs));
    sk_for_scratch((size_t)B * NH * T, 3 * (size_t)(T + 1), work, SK_LAMBDA(size_t r, F* scratch) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), t = (int)(r % T);
        const AttnSpec& spec = ap.spec;
        F *s = scratch, *p = scratch + (T + 1), *dp = scratch + 2 * (T + 1);
        F* ds = ds_rows + r * (T + 1);
        int lo, hi;
        attn_visible_keys(spec, t, T, &lo, &hi);
        int n = key0 + hi - lo;
        if (need_s) attention_row_scores(s, ap, q, k, qk_stride, b, h, t, T, hs, tau, lo, hi);
        const F* arow = att + r * T;
        const F* dy = dout + ((size_t)b * T + t) * C + h * hs;
        if (key0) {
            p[0] = att_slot[r];
            F dot = 0;
            if (attention_slot_has_value(spec))
                for (int d = 0; d < hs; d++) dot = sk_fma(dy[d], attention_slot_value(ap, h, hs, d), dot);
            dp[0] = dot;
        }
        for (int j = lo; j < hi; j++) {
            const F* vj = v + ((size_t)b * T + j) * 3 * C + h * hs;
            F dot = 0;
            for (int d = 0; d < hs; d++) dot = sk_fma(dy[d], vj[d], dot);
            p[key0 + j - lo] = arow[j];
            dp[key0 + j - lo] = dot;
        }
        attn_row_backward(spec, need_s ? (const F*)s : (const F*)nullptr, p, dp, ds, n, T);
        F* dqt = dq + ((size_t)b * T + t) * qk_stride + h * hs;
        if (spec.slot == SLOT_KV) {
            const F* ks = ap.kstar + (size_t)(ap.shared ? 0 : h) * hs;
            F gs = ds[0] * tau;
            for (int d = 0; d < hs; d++) dqt[d] = sk_fma(gs, ks[d], dqt[d]);
        }
        for (int j = lo; j < hi; j++) {
            const F* kj = k + ((size_t)b * T + j) * qk_stride + h * hs;
            F gj = ds[key0 + j - lo] * tau;
            for (int d = 0; d < hs; d++) dqt[d] = sk_fma(gj, kj[d], dqt[d]);
        }
    });
}

// backward of s_j = tau q_t . k_j and y_t = sum_j p_j v_j for the keys (one loop index per key (b, h, j)):
//   dk_j += tau sum_t ds_tj q_t;  dv_j += sum_t p_tj dO_t     (the rows t that see j, in order: t_lo..t_hi-1)
template <typename F>
static void attention_backward_keys(F* dk, int qk_stride, F* dv, const F* ds_rows, const F* dout, const F* q,
                                    const F* att, const AttnParams<F>& ap, int B, int T, int C, int NH) {
    AttnSpec spec = ap.spec;
    int hs = C / NH, key0 = attn_has_slot(spec);
    F tau = F(1) / sk_sqrt(F(hs));
    sk_for((size_t)B * NH * T, SK_LAMBDA(size_t r) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), j = (int)(r % T);
        F* dkj = dk + ((size_t)b * T + j) * qk_stride + h * hs;
        F* dvj = dv + ((size_t)b * T + j) * 3 * C + h * hs;
        size_t head = r - j;  // row (b, h, 0)
        int t_lo, t_hi;
        attn_visible_queries(spec, j, T, &t_lo, &t_hi);
        for (int t = t_lo; t < t_hi; t++) {
            int lo, hi;
            attn_visible_keys(spec, t, T, &lo, &hi);
            const F* qt = q + ((size_t)b * T + t) * qk_stride + h * hs;
            const F* dy = dout + ((size_t)b * T + t) * C + h * hs;
            F gj = ds_rows[(head + t) * (T + 1) + key0 + j - lo] * tau, pj = att[(head + t) * T + j];
            for (int d = 0; d < hs; d++) {
                dkj[d] = sk_fma(gj, qt[d], dkj[d]);
                dvj[d] = sk_fma(pj, dy[d], dvj[d]);
            }
        }
    });
}

// backward of the slot and the value bias, for their parameters:
//   per (b, h), t in order (a thread per entry of the partial):  dk* += tau ds_t* q_t;  dv* += p_t* dO_t;
//   dsigma_h += ds_t*;  dv_bias += dO_t
//   then each parameter entry adds those partials, b in order, then the heads that share the entry in order.
// ds_t* of row r (b, h, t) is ds_slot[r * ds_stride]: the first entry of ds_rows (stride T + 1), or a (B, NH, T)
// array (stride 1) in the streaming form.
template <typename F>
static void attention_backward_slot_params(const AttnParamGrads<F>& g, const F* ds_slot, size_t ds_stride,
                                           const F* dout, const F* q, int qk_stride, const F* att_slot,
                                           const AttnParams<F>& ap, int B, int T, int C, int NH) {
    if (!g.partial) return;
    AttnSpec spec = ap.spec;
    const F* vbias = ap.vbias;
    int hs = C / NH;
    F tau = F(1) / sk_sqrt(F(hs));
    F* partial = g.partial;
    const size_t pstride = 3 * (size_t)hs + 1;
    // a thread per entry of a partial: which sum (dk*, dv*, dv_bias, dsigma) and its d
    sk_for_2d((size_t)B * NH, (int)pstride, SK_LAMBDA(size_t bh, int i) {
        int b = (int)(bh / NH), h = (int)(bh % NH), sum = i / hs, d = i % hs;
        bool used = sum == 0 ? spec.slot == SLOT_KV
                  : sum == 1 ? spec.slot == SLOT_KV && spec.vstar == VSTAR_LEARN
                  : sum == 2 ? vbias != nullptr
                             : spec.slot == SLOT_LOGIT;
        F acc = 0;
        for (int t = 0; used && t < T; t++) {
            size_t r = bh * T + t, x = ((size_t)b * T + t);
            switch (sum) {
            case 0: acc = sk_fma(ds_slot[r * ds_stride] * tau, q[x * qk_stride + h * hs + d], acc); break;
            case 1: acc = sk_fma(att_slot[r], dout[x * C + h * hs + d], acc); break;
            case 2: acc += dout[x * C + h * hs + d]; break;
            default: acc += ds_slot[r * ds_stride];
            }
        }
        partial[bh * pstride + i] = acc;
    });
    int S = ap.shared ? 1 : NH, shared = ap.shared;
    F *dkstar = g.dkstar, *dvstar = g.dvstar, *dvbias = g.dvbias, *dsink_logit = g.dsink_logit;
    sk_for((size_t)S * hs, SK_LAMBDA(size_t e) {
        int sh = (int)(e / hs), d = (int)(e % hs);
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                if (!shared && h != sh) continue;
                const F* part = partial + ((size_t)b * NH + h) * pstride;
                if (dkstar) dkstar[e] += part[d];
                if (dvstar) dvstar[e] += part[hs + d];
                if (dvbias) dvbias[e] += part[2 * hs + d];
            }
    });
    if (dsink_logit)
        sk_for(NH, SK_LAMBDA(size_t h) {
            for (int b = 0; b < B; b++) dsink_logit[h] += partial[((size_t)b * NH + h) * pstride + 3 * hs];
        });
}

// -----------------------------------------------------------------------------------------------------------
// the exact attention on a GPU: the row form above split into passes of one thread per element
// (attention_passes). A thread per row does O(T hs) work alone and reads memory its neighbours do not; here each
// thread computes one score, one weight or one output element, and neighbouring threads take neighbouring d or j.
// Every element is computed by the same statements in the same order as in the row form, so the bits are the row
// form's (test_engine.cpp runs both on the CPU through the whole model, every fixture and variant). Row r = (b, h,
// t) keeps its scores s, weights p and dp at work + r * 3 (T + 1), as the row form's scratch does on a GPU.
//   forward   1. s_i of every row r and entry i: the slot, then the visible keys          (r, i)
//             2. p = the row map of s; the slot's weight into att_slot                     (r)
//             3. att_rj = p of key j, 0 outside [lo, hi)                                   (r, j)
//             4. y_t[d] = p_* v*[d] + sum_j p_j v_j[d] (+ v_bias[d])                       (r, d)
//   backward  1. s_i (when the row map needs it), p_i, dp_i = dO_t . v_i                   (r, i)
//             2. ds = the row map's derivative, into ds_rows                               (r)
//             3. dq_t[d] += tau (ds_* k*[d] + sum_j ds_j k_j[d])                           (r, d)
//             4. dk_j[d] += tau sum_t ds_tj q_t[d];  dv_j[d] += sum_t p_tj dO_t[d]         (b, h, j, d)
// then the slot parameters (attention_backward_slot_params, already a thread per element).

// Which form the exact engine's attention takes: the row form (false: the CPU) or these passes (true: a GPU). The
// CPU can run the passes too (the tests do); set it before the first pass, it decides the scratch's size.
#ifdef __CUDACC__
static bool attention_passes = true;
#else
static bool attention_passes = false;
#endif

// The exact attention's scratch for `rows` rows of T keys: every row's s, p and dp at once for the passes, or what
// sk_for_scratch needs for the row form (a slice per row on a GPU, nothing on the CPU).
static inline size_t attention_work_size(size_t rows, int T) {
    size_t per = 3 * ((size_t)T + 1);
    return attention_passes ? rows * per : sk_scratch_size(rows, per);
}

template <typename F>
static void attention_forward_passes(F* out, F* att, F* att_slot, F* work, const F* q, const F* k, int qk_stride,
                                     const F* v, const AttnParams<F>& ap, int B, int T, int C, int NH) {
    int hs = C / NH, key0 = attn_has_slot(ap.spec);
    size_t rows = (size_t)B * NH * T, per = 3 * ((size_t)T + 1);
    F tau = F(1) / sk_sqrt(F(hs));
    sk_for_2d(rows, key0 + T, SK_LAMBDA(size_t r, int i) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), t = (int)(r % T), lo, hi;
        attn_visible_keys(ap.spec, t, T, &lo, &hi);
        if (i < key0 + hi - lo)
            work[r * per + i] = attention_row_score(ap, q, k, qk_stride, b, h, t, T, hs, tau, lo, key0, i);
    });
    sk_for(rows, SK_LAMBDA(size_t r) {
        int lo, hi;
        attn_visible_keys(ap.spec, (int)(r % T), T, &lo, &hi);
        F *s = work + r * per, *p = s + (T + 1);
        attn_row_forward(ap.spec, (const F*)s, p, key0 + hi - lo, T);
        if (key0) att_slot[r] = p[0];
    });
    sk_for_2d(rows, T, SK_LAMBDA(size_t r, int j) {
        int lo, hi;
        attn_visible_keys(ap.spec, (int)(r % T), T, &lo, &hi);
        att[r * T + j] = j >= lo && j < hi ? work[r * per + (T + 1) + key0 + j - lo] : F(0);
    });
    bool slot_value = attention_slot_has_value(ap.spec);
    sk_for_2d(rows, hs, SK_LAMBDA(size_t r, int d) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), t = (int)(r % T), lo, hi;
        attn_visible_keys(ap.spec, t, T, &lo, &hi);
        const F* arow = att + r * T;
        F y = slot_value ? work[r * per + (T + 1)] * attention_slot_value(ap, h, hs, d) : F(0);
        for (int j = lo; j < hi; j++) y = sk_fma(arow[j], v[((size_t)b * T + j) * 3 * C + h * hs + d], y);
        if (ap.vbias) y += ap.vbias[(size_t)(ap.shared ? 0 : h) * hs + d];
        out[((size_t)b * T + t) * C + h * hs + d] = y;
    });
}

template <typename F>
static void attention_backward_passes(F* dq, F* dk, int qk_stride, F* dv, F* ds_rows, F* work, const F* dout,
                                      const F* q, const F* k, const F* v, const F* att, const F* att_slot,
                                      const AttnParams<F>& ap, int B, int T, int C, int NH) {
    int hs = C / NH, key0 = attn_has_slot(ap.spec);
    bool need_s = attn_variant_table[ap.spec.variant].needs_scores, slot_value = attention_slot_has_value(ap.spec);
    size_t rows = (size_t)B * NH * T, per = 3 * ((size_t)T + 1);
    F tau = F(1) / sk_sqrt(F(hs));
    sk_for_2d(rows, key0 + T, SK_LAMBDA(size_t r, int i) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), t = (int)(r % T), lo, hi;
        attn_visible_keys(ap.spec, t, T, &lo, &hi);
        if (i >= key0 + hi - lo) return;
        F *s = work + r * per, *p = s + (T + 1), *dp = s + 2 * (T + 1);
        if (need_s) s[i] = attention_row_score(ap, q, k, qk_stride, b, h, t, T, hs, tau, lo, key0, i);
        const F* dy = dout + ((size_t)b * T + t) * C + h * hs;
        F dot = 0;
        if (i < key0) {
            if (slot_value)
                for (int d = 0; d < hs; d++) dot = sk_fma(dy[d], attention_slot_value(ap, h, hs, d), dot);
            p[i] = att_slot[r];
        } else {
            int j = lo + i - key0;
            const F* vj = v + ((size_t)b * T + j) * 3 * C + h * hs;
            for (int d = 0; d < hs; d++) dot = sk_fma(dy[d], vj[d], dot);
            p[i] = att[r * T + j];
        }
        dp[i] = dot;
    });
    sk_for(rows, SK_LAMBDA(size_t r) {
        int lo, hi;
        attn_visible_keys(ap.spec, (int)(r % T), T, &lo, &hi);
        const F* s = work + r * per;
        attn_row_backward(ap.spec, need_s ? s : (const F*)nullptr, s + (T + 1), s + 2 * (T + 1), ds_rows + r * (T + 1),
                          key0 + hi - lo, T);
    });
    sk_for_2d(rows, hs, SK_LAMBDA(size_t r, int d) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), t = (int)(r % T), lo, hi;
        attn_visible_keys(ap.spec, t, T, &lo, &hi);
        const F* ds = ds_rows + r * (T + 1);
        F* dqt = dq + ((size_t)b * T + t) * qk_stride + h * hs + d;
        F acc = *dqt;
        if (ap.spec.slot == SLOT_KV)
            acc = sk_fma(ds[0] * tau, ap.kstar[(size_t)(ap.shared ? 0 : h) * hs + d], acc);
        for (int j = lo; j < hi; j++)
            acc = sk_fma(ds[key0 + j - lo] * tau, k[((size_t)b * T + j) * qk_stride + h * hs + d], acc);
        *dqt = acc;
    });
    sk_for_2d(rows, hs, SK_LAMBDA(size_t r, int d) {
        int b = (int)(r / ((size_t)NH * T)), h = (int)(r / T % NH), j = (int)(r % T), t_lo, t_hi;
        size_t head = r - j;  // row (b, h, 0)
        attn_visible_queries(ap.spec, j, T, &t_lo, &t_hi);
        F* dkj = dk + ((size_t)b * T + j) * qk_stride + h * hs + d;
        F* dvj = dv + ((size_t)b * T + j) * 3 * C + h * hs + d;
        F ak = *dkj, av = *dvj;
        for (int t = t_lo; t < t_hi; t++) {
            int lo, hi;
            attn_visible_keys(ap.spec, t, T, &lo, &hi);
            F gj = ds_rows[(head + t) * (T + 1) + key0 + j - lo] * tau, pj = att[(head + t) * T + j];
            ak = sk_fma(gj, q[((size_t)b * T + t) * qk_stride + h * hs + d], ak);
            av = sk_fma(pj, dout[((size_t)b * T + t) * C + h * hs + d], av);
        }
        *dkj = ak;
        *dvj = av;
    });
}

// The exact engine's attention: the row form (attention_forward_rows) or, on a GPU, the passes; the same bits.
template <typename F>
static void attention_forward(F* out, F* att, F* att_slot, F* work, const F* q, const F* k, int qk_stride,
                              const F* v, const AttnParams<F>& ap, int B, int T, int C, int NH) {
    SK_PROFILE_SCOPE(PROF_ATTENTION);
    if (attention_passes)
        attention_forward_passes(out, att, att_slot, work, q, k, qk_stride, v, ap, B, T, C, NH);
    else
        attention_forward_rows(out, att, att_slot, work, q, k, qk_stride, v, ap, B, T, C, NH);
}

// backward of attention_forward: rows and keys (the row form's two passes above, or the passes on a GPU), then the
// slot parameters.
template <typename F>
static void attention_backward(F* dq, F* dk, int qk_stride, F* dv, const AttnParamGrads<F>& g, F* ds_rows,
                               F* work, const F* dout, const F* q, const F* k, const F* v, const F* att,
                               const F* att_slot, const AttnParams<F>& ap, int B, int T, int C, int NH) {
    SK_PROFILE_SCOPE(PROF_ATTENTION);
    if (attention_passes) {
        attention_backward_passes(dq, dk, qk_stride, dv, ds_rows, work, dout, q, k, v, att, att_slot, ap, B, T, C, NH);
    } else {
        attention_backward_rows(dq, qk_stride, ds_rows, work, dout, q, k, v, att, att_slot, ap, B, T, C, NH);
        attention_backward_keys(dk, qk_stride, dv, ds_rows, dout, q, att, ap, B, T, C, NH);
    }
    attention_backward_slot_params(g, (const F*)ds_rows, (size_t)T + 1, dout, q, qk_stride, att_slot, ap, B, T, C,
                                   NH);
}

// -----------------------------------------------------------------------------------------------------------
// attention, streamed: the fast engine's form of the general attention above (--engine fast). The same scores
// (attention_slot_score; the keys' through flash_score, with ALiBi) and the same row maps, but each row runs key tile
// by key tile through the streaming forms of attention_variants.cuh: a row keeps two numbers (m, l) instead of its T
// weights, so nothing of size T x T exists, forward or backward. The sums are reordered, so it equals the row form up
// to rounding, not bit for bit (test_engine.cpp measures it; the exact engine keeps the row form).
// Flash-style blocks (sk_for_blocks; the per-row work is kernels/attention_flash.cuh): a block of NT threads per
// (b, h, tile of NT rows or keys), HS, the head size, a compile-time constant so that a thread keeps its row in
// registers; each tile of K and V is staged once in the block's shared memory for all its threads.
//   forward, thread = query row t:  (m, l) and acc over the slot, then the key tiles the block's rows see;
//                          y_t = acc * out_scale (+ v_bias);  keeps (m, l) and the slot's weight p_*
//   backward, thread = query row:   D_t = dO_t . O_t  (O = y - v_bias; clipped softmax: its D terms summed over the
//                          row, a pass first); dp_tj = dO_t . v_j,  ds_tj = dscore(s_tj, dp_tj, D_t);
//                          dq_t += tau (ds_* k* + sum_j ds_tj k_j);  keeps D_t and ds_*
//   backward, thread = key j:  dk_j += tau sum_t ds_tj q_t;  dv_j += sum_t p_tj dO_t  (the rows that see j, in order,
//                          staged QT at a time in shared memory)
//   then the slot parameters from ds_* and p_* (attention_backward_slot_params).
// Every output has one owner: no atomics, the same bits every run, and the CPU runs the GPU's code (one thread per
// block, the block's threads in turn).

// The head sizes the streamed attention is compiled for; other sizes take the row form.
static inline bool attention_stream_supports(int hs) {
    return hs == 4 || hs == 8 || hs == 16 || hs == 32 || hs == 64 || hs == 96 || hs == 128;  // 96: llama-60m
}

// Threads per block (NT: query rows of a forward or dq block, keys of a key tile and of a dk/dv block) and query rows
// per staged tile of a dk/dv block (QT), by head size: the shared memory of a float block stays under 48 KB. KS: the
// stride of a staged key tile's rows (flash_stage_stride: read in 16-byte vectors without bank conflicts). OWN_STRIDE:
// the stride of a dk/dv block's own K and V rows, which each thread reads for every query row: KS up to head size 64;
// above, HS + 1 (one value a read, also free of conflicts), since the vectors' registers made the block spill at 96
// (ptxas: dev/gpu/resources.py 'StreamKeyGrad'). At 128 the block still spills more than with single reads (328 bytes of
// spill stores against 300 on sm_90, a 144-byte frame against 120), from the FlashGradRows' vector reads.
template <int HS>
struct FlashShape {
    static constexpr int NT = HS > 64 ? 32 : 64, QT = HS > 64 ? 8 : 16, KS = flash_stage_stride(HS),
                         OWN_STRIDE = HS > 64 ? HS + 1 : KS;
};

// The stack a GPU thread of the streamed attention needs, by head size: at 128 the dq block's thread keeps q, dO and
// dq in local memory, a 1872-byte frame (dev/gpu/resources.py prints ptxas's figures) over CUDA's default 1 KiB, so
// the fast engine sets it aside before the model's memory (sk_reserve_thread_stack). test_gpu.cpp holds every kernel
// of the build to this.
static inline size_t attention_stream_stack_bytes(int hs) { return hs > 96 ? 2048 : SK_DEFAULT_STACK_BYTES; }

// One layer's streamed attention: q, k (rows at qk_stride), v (rows at 3C) in; y, the row states and p_* out; in the
// backward dO in, dq, dk, dv accumulated, D and ds_* as scratch.
template <typename F>
struct StreamAttn {
    AttnParams<F> ap;
    const F *q, *k, *v;
    int qk_stride, B, T, C, NH;
    F* y;         // (B, T, C) the core output
    F* state;     // (B, NH, T, 2) each row's final (m, l)
    F* att_slot;  // (B, NH, T) the slot's weight p_* (slot variants)
    const F* dout;
    F *dq, *dk, *dv;
    F* D;        // (B, NH, T)
    F* ds_slot;  // (B, NH, T) (slot variants)
};

enum { STREAM_FORWARD, STREAM_GRAD_ROWS, STREAM_GRAD_KEYS };

// Thread i's share of staging keys k0 .. k0 + NT - 1 of head (b, h): their K and V rows into ks and vs at `stride`
// values a row, zeros past T. Consecutive threads copy consecutive values.
template <int HS, typename F>
SK_HD static inline void stream_stage_keys(F* ks, F* vs, int stride, const StreamAttn<F>& sa, int b, int h, int k0,
                                           int i) {
    constexpr int NT = FlashShape<HS>::NT;
    for (int e = i; e < NT * HS; e += NT) {
        int j = k0 + e / HS;
        size_t bj = (size_t)b * sa.T + (j < sa.T ? j : 0);
        ks[e / HS * stride + e % HS] = j < sa.T ? sa.k[bj * sa.qk_stride + h * HS + e % HS] : F(0);
        vs[e / HS * stride + e % HS] = j < sa.T ? sa.v[bj * 3 * sa.C + h * HS + e % HS] : F(0);
    }
}

// the slot's value v* of head h into vslot (HS values, thread i's share); false when the slot has none
template <int HS, typename F>
SK_HD static inline bool stream_stage_slot_value(F* vslot, const AttnParams<F>& ap, int h, int i) {
    if (!attention_slot_has_value(ap.spec)) return false;
    for (int d = i; d < HS; d += FlashShape<HS>::NT) vslot[d] = attention_slot_value(ap, h, HS, d);
    return true;
}

// The forward block of head bh = b * NH + h, query rows t0 .. t0 + NT - 1. shared: ks, vs (NT rows each, KS values
// apart: no bank conflicts when the rows' windows start at different keys), v* (HS).
template <int HS, typename F>
SK_HD static void stream_forward_block(SkBlock<FlashRow<HS, F>>& blk, const StreamAttn<F>& sa, int bh, int tile,
                                       void* shared) {
    constexpr int NT = FlashShape<HS>::NT, KS = FlashShape<HS>::KS;
    const AttnParams<F>& ap = sa.ap;
    const AttnSpec& spec = ap.spec;
    int T = sa.T, C = sa.C, NH = sa.NH, b = bh / NH, h = bh % NH, t0 = tile * NT, t1 = t0 + NT < T ? t0 + NT : T;
    F tau = F(1) / sk_sqrt(F(HS)), slope = ap.alibi ? F(ap.alibi[h]) : F(0);
    F *ks = (F*)shared, *vs = ks + NT * KS, *vslot = vs + NT * KS;
    bool slot = attn_has_slot(spec), has_value = false;
    blk.each([&](int i, FlashRow<HS, F>& row) {
        has_value = stream_stage_slot_value<HS>(vslot, ap, h, i);
        if (t0 + i < T) flash_row_begin(&row, spec, sa.q + ((size_t)b * T + t0 + i) * sa.qk_stride + h * HS, t0 + i, T,
                                        slope);
    });
    int klo, khi;
    flash_tile_keys(spec, t0, t1, T, &klo, &khi);
    klo -= klo % NT;
    for (int pass = 0; pass < flash_passes(spec); pass++) {  // clipped softmax: statistics, then weights
        blk.sync();  // v* is staged
        blk.each([&](int i, FlashRow<HS, F>& row) {
            if (t0 + i < T && slot)
                flash_row_slot(&row, spec, attention_slot_score(ap, (const F*)row.q, h, HS, tau),
                               has_value ? (const F*)vslot : nullptr, pass, T);
        });
        for (int k0 = klo; k0 < khi; k0 += NT) {
            blk.sync();  // every thread is done with the previous tile
            blk.each([&](int i, FlashRow<HS, F>&) { stream_stage_keys<HS>(ks, vs, KS, sa, b, h, k0, i); });
            blk.sync();
            blk.each([&](int i, FlashRow<HS, F>& row) {
                F s[NT];
                if (t0 + i < T)
                    flash_row_tile<HS, KS>(&row, spec, (const F*)ks, (const F*)vs, k0, T - k0 < NT ? T - k0 : NT, tau,
                                           pass, T, s);
            });
        }
    }
    blk.each([&](int i, FlashRow<HS, F>& row) {
        int t = t0 + i;
        if (t >= T) return;
        size_t r = (size_t)bh * T + t;
        F* y = sa.y + ((size_t)b * T + t) * C + h * HS;
        flash_row_finish(&row, spec, y);
        if (ap.vbias)
            for (int d = 0; d < HS; d++) y[d] += ap.vbias[(size_t)(ap.shared ? 0 : h) * HS + d];
        sa.state[2 * r] = row.st.m;
        sa.state[2 * r + 1] = row.st.l;
        if (slot) sa.att_slot[r] = attn_stream_weight(spec, row.st, attention_slot_score(ap, (const F*)row.q, h, HS,
                                                                                          tau), T);
    });
}

// The dq block of head bh, query rows t0 .. t0 + NT - 1: D, ds_* and dq of each. shared: ks, vs (NT rows each, KS
// apart, as in the forward block), v* (HS).
template <int HS, typename F>
SK_HD static void stream_dq_block(SkBlock<FlashGradRow<HS, F>>& blk, const StreamAttn<F>& sa, int bh, int tile,
                                  void* shared) {
    constexpr int NT = FlashShape<HS>::NT, KS = FlashShape<HS>::KS;
    const AttnParams<F>& ap = sa.ap;
    const AttnSpec& spec = ap.spec;
    int T = sa.T, C = sa.C, NH = sa.NH, b = bh / NH, h = bh % NH, t0 = tile * NT, t1 = t0 + NT < T ? t0 + NT : T;
    F tau = F(1) / sk_sqrt(F(HS)), slope = ap.alibi ? F(ap.alibi[h]) : F(0);
    F *ks = (F*)shared, *vs = ks + NT * KS, *vslot = vs + NT * KS;
    const F* vb = ap.vbias ? ap.vbias + (size_t)(ap.shared ? 0 : h) * HS : nullptr;
    bool slot = attn_has_slot(spec), has_value = false;
    blk.each([&](int i, FlashGradRow<HS, F>& row) {
        has_value = stream_stage_slot_value<HS>(vslot, ap, h, i);
        int t = t0 + i;
        if (t >= T) return;
        size_t r = (size_t)bh * T + t, bt = (size_t)b * T + t;
        AttnStreamState<F> st;
        st.m = sa.state[2 * r];
        st.l = sa.state[2 * r + 1];
        flash_grad_row_begin(&row, spec, sa.q + bt * sa.qk_stride + h * HS, sa.dout + bt * C + h * HS, st,
                             (const F*)sa.y + bt * C + h * HS, t, T, slope, vb);
    });
    blk.sync();  // v* is staged
    const F* v_slot = has_value ? (const F*)vslot : nullptr;
    int klo, khi;
    flash_tile_keys(spec, t0, t1, T, &klo, &khi);
    klo -= klo % NT;
    if (!attn_stream_one_pass(spec)) {  // clipped softmax: D is a sum over the row, a pass before the gradients
        blk.each([&](int i, FlashGradRow<HS, F>& row) {
            if (t0 + i < T && slot)
                flash_clipped_D_slot(&row, spec, attention_slot_score(ap, (const F*)row.q, h, HS, tau), v_slot, T);
        });
        for (int k0 = klo; k0 < khi; k0 += NT) {
            blk.sync();
            blk.each([&](int i, FlashGradRow<HS, F>&) { stream_stage_keys<HS>(ks, vs, KS, sa, b, h, k0, i); });
            blk.sync();
            blk.each([&](int i, FlashGradRow<HS, F>& row) {
                if (t0 + i < T)
                    flash_clipped_D_tile<HS, KS>(&row, spec, (const F*)ks, (const F*)vs, k0, T - k0 < NT ? T - k0 : NT,
                                                 tau, T);
            });
        }
    }
    blk.each([&](int i, FlashGradRow<HS, F>& row) {  // the slot first, as in the row form
        if (t0 + i >= T || !slot) return;
        F ds, p;
        flash_dq_slot(&row, spec, attention_slot_score(ap, (const F*)row.q, h, HS, tau), v_slot, T, &ds, &p);
        sa.ds_slot[(size_t)bh * T + t0 + i] = ds;
        if (spec.slot == SLOT_KV) {
            const F* kst = ap.kstar + (size_t)(ap.shared ? 0 : h) * HS;
            for (int d = 0; d < HS; d++) row.dq[d] = sk_fma(ds * tau, kst[d], row.dq[d]);
        }
    });
    for (int k0 = klo; k0 < khi; k0 += NT) {
        blk.sync();
        blk.each([&](int i, FlashGradRow<HS, F>&) { stream_stage_keys<HS>(ks, vs, KS, sa, b, h, k0, i); });
        blk.sync();
        blk.each([&](int i, FlashGradRow<HS, F>& row) {
            F g[NT];
            if (t0 + i < T)
                flash_dq_tile<HS, KS>(&row, spec, (const F*)ks, (const F*)vs, k0, T - k0 < NT ? T - k0 : NT, tau, T, g);
        });
    }
    blk.each([&](int i, FlashGradRow<HS, F>& row) {
        int t = t0 + i;
        if (t >= T) return;
        F* dqt = sa.dq + ((size_t)b * T + t) * sa.qk_stride + h * HS;
        for (int d = 0; d < HS; d++) dqt[d] += row.dq[d];
        sa.D[(size_t)bh * T + t] = row.D;
    });
}

// A dk/dv block's thread: its key's gradients.
template <int HS, typename F>
struct StreamKeyGrad {
    F dk[HS], dv[HS];
};

// The dk/dv block of head bh, keys j0 .. j0 + NT - 1, from the query rows that see them. shared: the block's K and V
// rows (NT rows each, OWN_STRIDE values apart: the 32 threads of a warp, each reading its own row, meet no bank
// conflict), then QT FlashGradRows (the staged query rows, 16-byte aligned, which every thread reads at once).
template <int HS, typename F>
SK_HD static void stream_dkv_block(SkBlock<StreamKeyGrad<HS, F>>& blk, const StreamAttn<F>& sa, int bh, int tile,
                                   void* shared) {
    constexpr int NT = FlashShape<HS>::NT, QT = FlashShape<HS>::QT, OWN_STRIDE = FlashShape<HS>::OWN_STRIDE;
    const AttnSpec& spec = sa.ap.spec;
    int T = sa.T, C = sa.C, NH = sa.NH, b = bh / NH, h = bh % NH, j0 = tile * NT, j1 = j0 + NT < T ? j0 + NT : T;
    F tau = F(1) / sk_sqrt(F(HS)), slope = sa.ap.alibi ? F(sa.ap.alibi[h]) : F(0);
    F *kown = (F*)shared, *vown = kown + NT * OWN_STRIDE;
    static_assert(2 * NT * OWN_STRIDE * sizeof(F) % alignof(FlashGradRow<HS, F>) == 0,
                  "the rows after the keys, aligned");
    FlashGradRow<HS, F>* rows = (FlashGradRow<HS, F>*)(vown + NT * OWN_STRIDE);
    blk.each([&](int i, StreamKeyGrad<HS, F>& g) {
        stream_stage_keys<HS>(kown, vown, OWN_STRIDE, sa, b, h, j0, i);
        for (int d = 0; d < HS; d++) g.dk[d] = g.dv[d] = 0;
    });
    int qlo, qhi;
    flash_tile_queries(spec, j0, j1, T, &qlo, &qhi);
    qlo -= qlo % QT;
    for (int t0 = qlo; t0 < qhi; t0 += QT) {
        blk.sync();  // the block's keys are staged; every thread is done with the previous query rows
        blk.each([&](int i, StreamKeyGrad<HS, F>&) {
            for (int e = i; e < QT * HS; e += NT) {
                int t = t0 + e / HS;
                if (t >= T) break;
                size_t bt = (size_t)b * T + t;
                rows[e / HS].q[e % HS] = sa.q[bt * sa.qk_stride + h * HS + e % HS];
                rows[e / HS].dout[e % HS] = sa.dout[bt * C + h * HS + e % HS];
            }
            int t = t0 + i;
            if (i >= QT || t >= T) return;
            size_t r = (size_t)bh * T + t;
            rows[i].st.m = sa.state[2 * r];
            rows[i].st.l = sa.state[2 * r + 1];
            rows[i].D = sa.D[r];
            rows[i].slope = slope;
            rows[i].t = t;
            attn_visible_keys(spec, t, T, &rows[i].lo, &rows[i].hi);
        });
        blk.sync();
        blk.each([&](int i, StreamKeyGrad<HS, F>& g) {
            if (j0 + i < T)
                flash_dkv_tile(g.dk, g.dv, spec, (const F*)kown + i * OWN_STRIDE, (const F*)vown + i * OWN_STRIDE,
                               j0 + i, (const FlashGradRow<HS, F>*)rows, T - t0 < QT ? T - t0 : QT, tau, T);
        });
    }
    blk.each([&](int i, StreamKeyGrad<HS, F>& g) {
        int j = j0 + i;
        if (j >= T) return;
        size_t bj = (size_t)b * T + j;
        for (int d = 0; d < HS; d++) {
            sa.dk[bj * sa.qk_stride + h * HS + d] += g.dk[d];
            sa.dv[bj * 3 * C + h * HS + d] += g.dv[d];
        }
    });
}

// The shared memory of a pass's blocks: the forward's and the dq block's, the staged key tile (K and V, NT rows KS
// apart) and v*; the dk/dv block's, its own K and V rows (OWN_STRIDE apart) and QT staged query rows. A GPU block has
// 48 KB (test_engine.cpp holds every head size's float blocks to it; sk_for_blocks refuses more on a GPU).
template <int HS, typename F>
constexpr size_t stream_shared_bytes(int pass) {
    using S = FlashShape<HS>;
    return pass == STREAM_GRAD_KEYS ? 2 * S::NT * S::OWN_STRIDE * sizeof(F) + S::QT * sizeof(FlashGradRow<HS, F>)
                                    : (2 * S::NT * S::KS + HS) * sizeof(F);
}

// One pass over every block for head size HS.
template <int HS, typename F>
static void attention_stream_pass_hs(int pass, const StreamAttn<F>& sa) {
    constexpr int NT = FlashShape<HS>::NT;
    int heads = sa.B * sa.NH, tiles = (sa.T + NT - 1) / NT;
    size_t shared = stream_shared_bytes<HS, F>(pass);
    using Row = FlashRow<HS, F>;
    using GradRow = FlashGradRow<HS, F>;
    using KeyGrad = StreamKeyGrad<HS, F>;
    if (pass == STREAM_FORWARD)
        sk_for_blocks<Row>(heads, tiles, NT, shared, SK_LAMBDA(SkBlock<Row> & blk, int bh, int tile, void* sh) {
            stream_forward_block<HS>(blk, sa, bh, tile, sh);
        });
    if (pass == STREAM_GRAD_ROWS)
        sk_for_blocks<GradRow>(heads, tiles, NT, shared,
                               SK_LAMBDA(SkBlock<GradRow> & blk, int bh, int tile, void* sh) {
                                   stream_dq_block<HS>(blk, sa, bh, tile, sh);
                               });
    if (pass == STREAM_GRAD_KEYS)
        sk_for_blocks<KeyGrad>(heads, tiles, NT, shared,
                               SK_LAMBDA(SkBlock<KeyGrad> & blk, int bh, int tile, void* sh) {
                                   stream_dkv_block<HS>(blk, sa, bh, tile, sh);
                               });
}

template <typename F>
static void attention_stream_pass(int pass, const StreamAttn<F>& sa) {
    switch (sa.C / sa.NH) {
    case 4: attention_stream_pass_hs<4>(pass, sa); break;
    case 8: attention_stream_pass_hs<8>(pass, sa); break;
    case 16: attention_stream_pass_hs<16>(pass, sa); break;
    case 32: attention_stream_pass_hs<32>(pass, sa); break;
    case 64: attention_stream_pass_hs<64>(pass, sa); break;
    case 96: attention_stream_pass_hs<96>(pass, sa); break;
    case 128: attention_stream_pass_hs<128>(pass, sa); break;
    default: fail("internal: no streamed attention for head size %d", sa.C / sa.NH);
    }
}

template <typename F>
static void attention_forward_stream(const StreamAttn<F>& sa) {
    SK_PROFILE_SCOPE(PROF_ATTENTION);
    attention_stream_pass(STREAM_FORWARD, sa);
}

// backward of attention_forward_stream: rows (D, ds_*, dq), keys (dk, dv), then the slot parameters.
template <typename F>
static void attention_backward_stream(const StreamAttn<F>& sa, const AttnParamGrads<F>& g) {
    SK_PROFILE_SCOPE(PROF_ATTENTION);
    attention_stream_pass(STREAM_GRAD_ROWS, sa);
    attention_stream_pass(STREAM_GRAD_KEYS, sa);
    attention_backward_slot_params(g, (const F*)sa.ds_slot, 1, sa.dout, sa.q, sa.qk_stride, (const F*)sa.att_slot,
                                   sa.ap, sa.B, sa.T, sa.C, sa.NH);
}

// -----------------------------------------------------------------------------------------------------------
// Feature maps on q and k (paper Table 6), after RoPE. q and k of every position and head are first gathered
// into one contiguous (2, B*T, C) block: q rows then k rows, so the block is a (2*B*T*NH, hs) matrix of head
// vectors. qk is F, or bf16 where the fast engine at --precision bf16 stores it so (--phi mlp, Acts::bf16_acts).
template <typename F, typename O>
static void phi_gather(O* qk, const F* qkv, int BT, int C) {
    sk_for(BT, SK_LAMBDA(size_t bt) {
        for (int i = 0; i < C; i++) {
            sk_store(qk + bt * C + i, qkv[bt * 3 * C + i]);
            sk_store(qk + ((size_t)BT + bt) * C + i, qkv[bt * 3 * C + C + i]);
        }
    });
}

// backward of phi_gather: dqkv[q and k parts] += dqk
template <typename F>
static void phi_scatter_grad(F* dqkv, const F* dqk, int BT, int C) {
    sk_for(BT, SK_LAMBDA(size_t bt) {
        for (int i = 0; i < C; i++) {
            dqkv[bt * 3 * C + i] += dqk[bt * C + i];
            dqkv[bt * 3 * C + C + i] += dqk[((size_t)BT + bt) * C + i];
        }
    });
}

// elu1: y = elu(x) + 1 = (x > 0 ? x + 1 : e^x), elementwise over N values
template <typename F>
static void phi_elu1_forward(F* y, const F* x, size_t N) {
    sk_for(N, SK_LAMBDA(size_t i) { y[i] = x[i] > 0 ? x[i] + F(1) : sk_exp(x[i]); });
}

// backward of: y = elu(x) + 1  ->  dx += dy * (x > 0 ? 1 : e^x)
template <typename F>
static void phi_elu1_backward(F* dx, const F* dy, const F* x, size_t N) {
    sk_for(N, SK_LAMBDA(size_t i) { dx[i] += dy[i] * (x[i] > 0 ? F(1) : sk_exp(x[i])); });
}

// Gated attention (G1): y = core * sigmoid(z), z = x W_g^T, a gate per channel (G = C) or per head (G = NH).
// y is F, or bf16 where the fast engine at --precision bf16 stores it so (Acts::bf16_acts), rounded as written.
template <typename F, typename Y>
static void gate_forward(Y* y, F* gate, const F* core, const F* z, int BT, int C, int G) {
    SK_PROFILE_SCOPE(PROF_ACTIVATION);
    int per = C / G;
    sk_for_2d(BT, C, SK_LAMBDA(size_t bt, int i) {
        F gv = attn_sigmoid(z[bt * G + i / per]);
        if (i % per == 0) gate[bt * G + i / per] = gv;
        sk_store(y + bt * C + i, core[bt * C + i] * gv);
    });
}

// backward of: y = core * g, g = sigmoid(z):  dcore += dy * g;  dz += g (1 - g) * sum over the gate's
// channels of dy * core (channels in order)
template <typename F>
static void gate_backward(F* dcore, F* dz, const F* dy, const F* core, const F* gate, int BT, int C, int G) {
    SK_PROFILE_SCOPE(PROF_ACTIVATION);
    int per = C / G;
    sk_for((size_t)BT * G, SK_LAMBDA(size_t k) {  // k = bt * G + gi: one thread per gate
        size_t first = k / G * C + k % G * per;
        F gv = gate[k], acc = 0;
        for (size_t i = first; i < first + per; i++) {
            dcore[i] += dy[i] * gv;
            acc = sk_fma(dy[i], core[i], acc);
        }
        dz[k] += acc * gv * (F(1) - gv);
    });
}

// -----------------------------------------------------------------------------------------------------------
// cross-entropy over the first V of Vp logits (padded columns are ignored). A target < 0 marks a position
// without loss (the sink token, the prefix of a prefix LM): its loss is 0 and it takes no gradient.
//   probs = softmax(logits[0..V));  losses[bt] = -log probs[target]

template <typename F>
static void crossentropy_forward(F* losses, F* probs, const F* logits, const int* targets, int BT, int V,
                                 int Vp) {
    SK_PROFILE_SCOPE(PROF_CLASSIFIER);
    sk_for(BT, SK_LAMBDA(size_t bt) {
        const F* z = logits + bt * Vp;
        F* p = probs + bt * Vp;
        sk_softmax_row(z, p, V, F(1));
        for (int i = V; i < Vp; i++) p[i] = 0;
        if (targets) losses[bt] = targets[bt] >= 0 ? -sk_log(p[targets[bt]]) : F(0);
    });
}

// backward of: loss = dloss * sum_bt losses[bt]  ->  dlogits[bt,i] = dloss (probs[i] - [i == target]), i < V, and 0
// for the padding and for positions without a loss. dlogits may be the logits themselves (the trainer writes them
// there: the backward needs only probs). Each value is 0 + the term, the bits of adding it to a zeroed buffer.
template <typename F>
static void crossentropy_backward(F* dlogits, const F* probs, const int* targets, F dloss, int BT, int V,
                                  int Vp) {
    SK_PROFILE_SCOPE(PROF_CLASSIFIER);
    sk_for(BT, SK_LAMBDA(size_t bt) {
        F* d = dlogits + bt * Vp;
        const F* p = probs + bt * Vp;
        bool loss = targets[bt] >= 0;
        for (int i = 0; i < Vp; i++)
            d[i] = loss && i < V ? F(0) + dloss * (p[i] - (i == targets[bt] ? F(1) : F(0))) : F(0);
    });
}

// The fast engine's cross-entropy: no probs buffer (B x T x Vp values), and every pass spread over many threads.
//   forward:  lane l of row bt (l < CE_LANES) takes the logits i = l, l + CE_LANES, ... < V: its max m_l and
//             s_l = sum e^{z_i - m_l}; the row combines its lanes in order: m = max_l m_l, Z = sum_l s_l e^{m_l - m},
//             keeps (m, Z) and losses[bt] = log Z - (z_target - m)
//   backward: dlogits[bt,i] = dloss (e^{z_i - m} / Z - [i == target]), one thread per logit, which reads its logit
//             and may write the gradient over it
// The same function as crossentropy_forward/backward, summed in another order: not the exact engine's bits.
#define CE_LANES 32

template <typename F>
static void crossentropy_forward_stats(F* losses, F* stats, F* lanes, const F* logits, const int* targets, int BT,
                                       int V, int Vp) {
    SK_PROFILE_SCOPE(PROF_CLASSIFIER);
    sk_for((size_t)BT * CE_LANES, SK_LAMBDA(size_t k) {
        const F* z = logits + k / CE_LANES * Vp;
        int l = (int)(k % CE_LANES);
        F m = -INFINITY, sum = 0;
        for (int i = l; i < V; i += CE_LANES) m = z[i] > m ? z[i] : m;
        for (int i = l; i < V; i += CE_LANES) sum += sk_exp(z[i] - m);
        lanes[2 * k] = m;
        lanes[2 * k + 1] = sum;
    });
    sk_for(BT, SK_LAMBDA(size_t bt) {
        const F* lane = lanes + bt * 2 * CE_LANES;
        F m = -INFINITY, Z = 0;
        for (int l = 0; l < CE_LANES; l++) m = lane[2 * l] > m ? lane[2 * l] : m;
        for (int l = 0; l < CE_LANES; l++)
            if (lane[2 * l + 1] > 0) Z += lane[2 * l + 1] * sk_exp(lane[2 * l] - m);
        stats[2 * bt] = m;
        stats[2 * bt + 1] = Z;
        if (targets) losses[bt] = targets[bt] >= 0 ? sk_log(Z) - (logits[bt * Vp + targets[bt]] - m) : F(0);
    });
}

template <typename F>
static void crossentropy_backward_stats(F* dlogits, const F* logits, const F* stats, const int* targets, F dloss,
                                        int BT, int V, int Vp) {
    SK_PROFILE_SCOPE(PROF_CLASSIFIER);
    sk_for((size_t)BT * Vp, SK_LAMBDA(size_t k) {
        size_t bt = k / Vp;
        int i = (int)(k % Vp);
        if (i >= V || targets[bt] < 0) {
            dlogits[k] = F(0);
            return;
        }
        F p = sk_exp(logits[k] - stats[2 * bt]) / stats[2 * bt + 1];
        dlogits[k] = F(0) + dloss * (p - (i == targets[bt] ? F(1) : F(0)));  // (0 +: a zeroed buffer's bits)
    });
}

// -----------------------------------------------------------------------------------------------------------
// the model: parameters (one buffer, pointed into by the ParamId table of common/config.h), gradients, AdamW
// moments, and the tables of positions. Activations live apart (Acts) so a training batch and the sink probe
// can each have their own.

// The training step's numbers, kept in device memory so the step runs without the host reading anything
// (ModelEngine::train_micro, guarded_update): its loss, its gradient norm, 1 when both are finite (the update runs)
// else 0, and the clip scale of the norm.
enum StepStat { STEP_LOSS, STEP_NORM, STEP_OK, STEP_SCALE, STEP_STATS };

template <typename F>
struct Model {
    ModelConfig config;
    size_t sizes[NUM_PARAM_TENSORS];
    size_t num_params = 0;
    SkBuffer<F> params, grads, adam_m, adam_v;  // (num_params) each, tensors in file order
    SkBuffer<bf16> params_bf16;                 // the matmuls' bf16 copy of params at --precision bf16, else empty
    F* p[NUM_PARAM_TENSORS];                    // tensor i of params, null when absent
    F* g[NUM_PARAM_TENSORS];                    // tensor i of grads
    SkBuffer<F> pos_table;                      // (maxT, C) sinusoidal positions
    SkBuffer<F> rope_cos, rope_sin;             // (maxT, hs/2)
    SkBuffer<float> alibi;                      // (NH) slopes
    SkBuffer<double> norm_parts;                // grad_norm's chunk sums, kept so a step allocates nothing
    SkBuffer<double> step_stats;                // the training step's numbers on the device (STEP_*)
    SkBuffer<double> loss_parts;                // mean_loss_add's chunk sums
};

template <typename F>
static void point_tensors(F* base, const size_t* sizes, F** ptrs) {
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        ptrs[i] = sizes[i] ? base : nullptr;
        base += sizes[i];
    }
}

// Sizes everything for config c (validated) and builds the position tables. Parameters are zero.
template <typename F>
static void model_build(Model<F>* m, const ModelConfig& c) {
    validate_model_config(c, "model config");
    m->config = c;
    param_sizes(c, m->sizes);
    m->num_params = param_count(c);
    m->params.assign(m->num_params, 0);
    m->grads.assign(m->num_params, 0);
    m->adam_m.assign(m->num_params, 0);
    m->adam_v.assign(m->num_params, 0);
    m->step_stats.assign(STEP_STATS, 0.0);
    point_tensors(m->params.data(), m->sizes, m->p);
    point_tensors(m->grads.data(), m->sizes, m->g);
    int C = c.channels, maxT = c.max_seq_len, NH = c.num_heads, hs = C / NH;
    m->pos_table.clear();
    m->rope_cos.clear();
    m->rope_sin.clear();
    m->alibi.clear();
    if (c.positions == POS_SINUSOIDAL) {
        std::vector<F> pe((size_t)maxT * C, F(0));
        for (int t = 0; t < maxT; t++)
            for (int i = 0; i < C / 2; i++) {
                double angle = t * pow(10000.0, -2.0 * i / C);
                pe[(size_t)t * C + 2 * i] = (F)sin(angle);
                pe[(size_t)t * C + 2 * i + 1] = (F)cos(angle);
            }
        m->pos_table.upload(pe);
    }
    if (c.positions == POS_ROPE) {
        std::vector<F> cs((size_t)maxT * hs / 2), sn((size_t)maxT * hs / 2);
        for (int t = 0; t < maxT; t++)
            for (int i = 0; i < hs / 2; i++) {
                double angle = t * pow((double)c.rope_base, -2.0 * i / hs);
                cs[(size_t)t * hs / 2 + i] = (F)cos(angle);
                sn[(size_t)t * hs / 2 + i] = (F)sin(angle);
            }
        m->rope_cos.upload(cs);
        m->rope_sin.upload(sn);
    }
    if (c.positions == POS_ALIBI) {
        std::vector<float> slopes(NH);
        for (int h = 0; h < NH; h++) slopes[h] = (float)pow(2.0, -8.0 * (h + 1) / NH);
        m->alibi.upload(slopes);
    }
}

// Parameters from scratch (common/config.h init_params), drawn on the host and uploaded.
template <typename F>
static void model_init(Model<F>* m, uint64_t seed) {
    std::vector<F> p(m->num_params);
    init_params(m->config, seed, p.data());
    m->params.upload(p.data(), p.size());
}

// Gradients of the activations (d loss / d activation), for the backward pass of the last forward. Allocated
// at the first backward (a forward-only pass, such as the sink probe, never needs them); then every backward function
// adds into them. Two kinds: the residual stream's gradients (encoded, residual3 of every layer, lnf), which pass
// from layer to layer and are zeroed at the start of every backward; and the gradients inside a layer (ln1 to
// ffn_sum), held for one layer only (B x T, not L x B x T: layer l's backward is done with them before layer l - 1's
// starts) and zeroed before each layer's backward, so each sum starts from 0 as before. Shapes as in Acts, less the
// layer dimension inside a layer; null where Acts's field is null.
template <typename F>
struct GradActs {
    int B = 0, T = 0;
    SkBuffer<F> mem;
    size_t accumulated = 0;  // values at the start of mem: the residual stream's (zeroed per backward)
    size_t layer_values = 0;  // the values after them: one layer's gradients (zeroed per layer)
    F* encoded;
    F* residual3;
    F* lnf;
    // one layer's
    F* ln1;
    F* qkv;
    F* phi_in;
    F* phi_hidden;
    F* phi_relu;
    F* phi_out;
    F* atty_core;
    F* gate_logits;  // (B, T, G) dz of the gate's logits
    F* atty;
    F* attn_sum;
    F* residual2;
    F* ln2;
    F* fch;
    F* fch2;
    F* fcact;
    F* ffn_sum;
    // (the logits' gradient has no buffer of its own: model_backward writes it over the logits)
    // scratch of the attention backward, written (not accumulated) layer by layer
    F* att_ds;        // (B, NH, T, T+1) ds of every attention row, for the keys and slot-parameter passes
    F* att_D;         // (B, NH, T) D = dO . O of every row (streamed attention)
    F* att_ds_slot;   // (B, NH, T) the slot's ds of every row (streamed attention)
    F* slot_partial;  // (B, NH, 3 hs + 1) per-(b, h) partial sums of the slot-parameter gradients
};

// Activations of one forward pass at a fixed (B, T); T counts the model's positions: the data's T plus one
// with a sink token (tok_offset = 1). (L, ...) tensors hold one slice per layer. A field is null when the
// configuration does not use it.
template <typename F>
struct Acts {
    int B = 0, T = 0, tok_offset = 0;
    bool streamed = false;  // attention streamed (attention_forward_stream: no att), set before the first pass
    bool fast_loss = false;  // cross-entropy from row statistics (crossentropy_forward_stats: no probs), likewise
    bool headless = false;   // passes without the head only (the sink probe's): no final norm, logits or loss buffers
    // The pre-norm outputs, act(fch), the gated attention output and the --phi mlp map's input and hidden
    // activation, which only products read, stored in bf16 (the fast engine at --precision bf16), likewise: they
    // then live in mem16 (ln1_16, ln2_16, lnf_16, fcact_16, atty_16, phi_in_16, phi_relu_16), and their F fields are
    // null
    bool bf16_acts = false;
    SkBuffer<bf16> mem16;      // the bf16 fields' memory
    bf16* ln1_16 = nullptr;    // (L, B, T, C) N1(x), read by the qkv and gate products
    bf16* atty_16 = nullptr;   // (L, B, T, C) the gated attention output (--gate), read by the projection's products
    bf16* ln2_16 = nullptr;    // (L, B, T, C) N2(residual2), read by the FFN's first products
    bf16* fcact_16 = nullptr;  // (L, B, T, FF) act(fch), read by the FFN's output products
    bf16* lnf_16 = nullptr;    // (B, T, C) Nf, read by the classifier's products
    bf16* phi_in_16 = nullptr;    // (L, 2, B, T, C) the gathered q and k rows (--phi mlp), read by W1's products
    bf16* phi_relu_16 = nullptr;  // (L, 2, B, T, C) relu(W1 phi_in) (--phi mlp), read by W2's products
    SkBuffer<F> mem;     // every field below points into it
    F* encoded;          // (B, T, C) token + position embedding: the residual stream entering layer 0
    F* ln1;              // (L, B, T, C) N1(x), the attention input (pre-norm; none when ln1_16 holds it)
    F* ln1_mean;         // (L, B, T) N1's mean (0 for RMSNorm)
    F* ln1_rstd;         // (L, B, T) N1's 1/sqrt(variance + eps)
    F* qkv;              // (L, B, T, 3C) q | k | v, q and k after RoPE
    F* phi_in;           // (L, 2, B, T, C) q rows then k rows, gathered for the feature map (--phi; phi_in_16 may)
    F* phi_hidden;       // (L, 2, B, T, C) W1 phi_in (--phi mlp)
    F* phi_relu;         // (L, 2, B, T, C) relu(phi_hidden) (--phi mlp; none when phi_relu_16 holds it)
    F* phi_out;          // (L, 2, B, T, C) phi(q) rows then phi(k) rows (--phi)
    F* att;              // (L, B, NH, T, T) attention weights of the keys, 0 where masked (not streamed)
    F* att_state;        // (L, B, NH, T, 2) each attention row's final (m, l) (streamed)
    F* att_slot;         // (L, B, NH, T) the slot's weight (--slot)
    F* atty_core;        // (L, B, T, C) attention output before the gate (--gate)
    F* gate;             // (L, B, T, G) sigmoid(x W_g^T) (--gate; G = C elementwise, NH headwise)
    F* atty;             // (L, B, T, C) attention output, heads side by side, after the gate (atty_16 may hold it)
    F* attn_sum;         // (L, B, T, C) x + attention branch, N1's input (post-norm)
    F* residual2;        // (L, B, T, C) the residual stream between attention and FFN
    F* ln2_mean;         // (L, B, T)
    F* ln2_rstd;         // (L, B, T)
    F* ln2;              // (L, B, T, C) N2(residual2), the FFN input (pre-norm; none when ln2_16 holds it)
    F* fch;              // (L, B, T, FF) W1 x + b1
    F* fch2;             // (L, B, T, FF) W2 x + b2 (gated FFN)
    F* fcact;            // (L, B, T, FF) act(fch) (* fch2 when gated); none when fcact_16 holds it
    F* ffn_sum;          // (L, B, T, C) residual2 + FFN branch, N2's input (post-norm)
    F* residual3;        // (L, B, T, C) the residual stream leaving the layer
    F* lnf;              // (B, T, C) Nf(residual3 of the last layer) (pre-norm; none when lnf_16 holds it)
    F* lnf_mean;         // (B, T)
    F* lnf_rstd;         // (B, T)
    F* logits;           // (B, T, Vp)
    F* probs;            // (B, T, Vp) softmax over the first V logits (not with fast_loss)
    F* loss_stats;       // (B, T, 2) each row's max logit and softmax normaliser (fast_loss)
    F* loss_lanes;       // (B, T, CE_LANES, 2) the lanes' partial statistics (fast_loss)
    F* losses;           // (B, T) per position, 0 where there is no loss
    // scratch, reused by every layer
    F* branch_out;       // (B, T, C) the attention or FFN branch's output, before it joins the residual
    F* gate_logits;      // (B, T, G) z = x W_g^T (--gate)
    F* att_work;         // attention rows' scores, weights and dp (attention_work_size: a GPU, or the passes)
    bool passes = false; // attention_passes when the buffers were placed
    SkBuffer<int> inputs, targets;  // (B, T) token ids (-1: the sink token) and targets (-1: no loss)
    SkBuffer<int> token_groups;     // the positions grouped by token id (group_positions_by_token), for the backward
    int num_token_groups = 0;
    int num_targets = 0;            // positions with a loss
    GradActs<F> grad;               // gradients, for the backward pass
};

// One region of an activation buffer: the field, and its size in values.
template <typename F>
struct Region {
    F** field;
    size_t n;
};

// Points every field at its region of mem (growing mem when needed: a smaller (B, T), such as a probe chunk
// or a generated prefix, reuses the memory). Returns the number of values used.
template <typename F, size_t N>
static size_t place_regions(SkBuffer<F>* mem, const Region<F> (&regions)[N], const char* what, int B, int T) {
    size_t total = 0;
    for (const Region<F>& r : regions) total += r.n;
    if (total > mem->size()) {
        // what the run holds besides this buffer (parameters, gradients, moments, the other activations) counts too
        double gib = (double)total * sizeof(F) / (1 << 30), mem_gib = sk_memory_bytes() / (1 << 30);
        double held_gib = ((double)sk_memory_use().now - (double)mem->size() * sizeof(F)) / (1 << 30);
        if (gib + held_gib > 0.9 * mem_gib)
            fail("%s for B %d x T %d need %.2f GiB, and the run holds %.2f GiB already: more than 90%% of the %.2f "
                 "GiB it may use (the machine's memory, or SK_MEMORY_GIB). Lower --batch or --seq-len (--total-batch "
                 "keeps the tokens per step), or train with --engine fast, which keeps no T x T attention matrices",
                 what, B, T, gib, held_gib, mem_gib);
        mem->assign(total, F{});
    }
    F* base = mem->data();
    for (const Region<F>& r : regions) {
        *r.field = r.n ? base : nullptr;
        base += r.n;
    }
    return total;
}

// The sizes of the per-layer and per-pass tensors of a configuration at (B, T), for Acts and GradActs.
struct ActShapes {
    size_t BT, C, L, NH, FF, Vp, hs, G;
    size_t pre, post, gated, phi, mlp, slot, gate;  // 1 when present, else 0
};

static inline ActShapes act_shapes(const ModelConfig& c, int B, int T) {
    const AttnSpec& at = c.attn;
    ActShapes s;
    s.BT = (size_t)B * T; s.C = c.channels; s.L = c.num_layers; s.NH = c.num_heads; s.FF = c.ffn_hidden;
    s.Vp = c.padded_vocab_size; s.hs = s.C / s.NH;
    s.G = at.gate == GATE_ELEMENTWISE ? s.C : at.gate == GATE_HEADWISE ? s.NH : 0;
    s.pre = c.placement == PLACE_PRE; s.post = !s.pre; s.gated = ffn_is_gated(c.ffn);
    s.phi = at.phi != PHI_NONE; s.mlp = at.phi == PHI_MLP; s.slot = attn_has_slot(at); s.gate = s.G > 0;
    return s;
}

template <typename F>
static void acts_alloc(Acts<F>* a, const ModelConfig& c, int B, int T) {
    if (a->B == B && a->T == T && a->passes == attention_passes) return;
    ActShapes s = act_shapes(c, B, T);
    size_t BT = s.BT, C = s.C, L = s.L, FF = s.FF, rows = (size_t)B * s.NH * T, st = a->streamed, ex = !st;
    size_t head = !a->headless, fast_loss = head && a->fast_loss, probs = head && !a->fast_loss;
    size_t f16 = a->bf16_acts, f32 = !f16;  // where the activations that bf16_acts names are stored
    // the attention matrices, L B NH T^2, checked in double first: with extreme flags size_t would wrap
    if (ex && (double)L * B * s.NH * T * T * sizeof(F) > 0.9 * sk_memory_bytes())
        fail("attention matrices for B %d x T %d need %.0f GiB, more than this machine's memory (or SK_MEMORY_GIB): "
             "lower --batch or --seq-len (--total-batch keeps the tokens per step), or train with --engine fast, "
             "which keeps no T x T matrices", B, T, (double)L * B * s.NH * T * T * sizeof(F) / (1 << 30));
    Region<F> regions[] = {
        {&a->encoded, BT * C}, {&a->ln1, f32 * s.pre * L * BT * C}, {&a->ln1_mean, L * BT}, {&a->ln1_rstd, L * BT},
        {&a->qkv, L * BT * 3 * C}, {&a->phi_in, s.phi * (f32 || !s.mlp) * L * 2 * BT * C},
        {&a->phi_hidden, s.mlp * L * 2 * BT * C}, {&a->phi_relu, f32 * s.mlp * L * 2 * BT * C},
        {&a->phi_out, s.phi * L * 2 * BT * C},
        {&a->att, ex * L * rows * T}, {&a->att_state, st * L * rows * 2}, {&a->att_slot, s.slot * L * rows},
        {&a->atty_core, s.gate * L * BT * C}, {&a->gate, L * BT * s.G}, {&a->atty, (f32 || !s.gate) * L * BT * C},
        {&a->attn_sum, s.post * L * BT * C}, {&a->residual2, L * BT * C}, {&a->ln2_mean, L * BT},
        {&a->ln2_rstd, L * BT}, {&a->ln2, f32 * s.pre * L * BT * C}, {&a->fch, L * BT * FF},
        {&a->fch2, s.gated * L * BT * FF}, {&a->fcact, f32 * L * BT * FF}, {&a->ffn_sum, s.post * L * BT * C},
        {&a->residual3, L * BT * C}, {&a->lnf, f32 * head * s.pre * BT * C}, {&a->lnf_mean, head * s.pre * BT},
        {&a->lnf_rstd, head * s.pre * BT}, {&a->logits, head * BT * s.Vp}, {&a->probs, probs * BT * s.Vp},
        {&a->loss_stats, fast_loss * BT * 2}, {&a->loss_lanes, fast_loss * BT * 2 * CE_LANES}, {&a->losses, head * BT},
        {&a->branch_out, BT * C}, {&a->gate_logits, BT * s.G},
        {&a->att_work, ex * attention_work_size(rows, T)}};
    Region<bf16> regions16[] = {{&a->ln1_16, f16 * s.pre * L * BT * C}, {&a->ln2_16, f16 * s.pre * L * BT * C},
                                {&a->fcact_16, f16 * L * BT * FF}, {&a->lnf_16, f16 * head * s.pre * BT * C},
                                {&a->atty_16, f16 * s.gate * L * BT * C},
                                {&a->phi_in_16, f16 * s.mlp * L * 2 * BT * C},
                                {&a->phi_relu_16, f16 * s.mlp * L * 2 * BT * C}};
    place_regions(&a->mem16, regions16, "bf16 activations", B, T);  // first, so that the next counts it as held
    place_regions(&a->mem, regions, "activations", B, T);
    a->B = B;
    a->T = T;
    a->passes = attention_passes;
}

template <typename F>
static void grad_acts_alloc(GradActs<F>* g, const ModelConfig& c, int B, int T, bool streamed) {
    if (g->B == B && g->T == T) return;
    ActShapes s = act_shapes(c, B, T);
    size_t BT = s.BT, C = s.C, L = s.L, FF = s.FF, rows = (size_t)B * s.NH * T, st = streamed, ex = !streamed;
    size_t partial = c.attn.slot == SLOT_KV || c.attn.slot == SLOT_LOGIT || c.attn.value_bias;
    size_t stream = BT * C + L * BT * C + s.pre * BT * C;  // encoded, residual3, lnf
    Region<F> regions[] = {
        {&g->encoded, BT * C}, {&g->residual3, L * BT * C}, {&g->lnf, s.pre * BT * C},
        // one layer's
        {&g->ln1, s.pre * BT * C}, {&g->qkv, BT * 3 * C},
        {&g->phi_in, s.phi * 2 * BT * C}, {&g->phi_hidden, s.mlp * 2 * BT * C},
        {&g->phi_relu, s.mlp * 2 * BT * C}, {&g->phi_out, s.phi * 2 * BT * C},
        {&g->atty_core, s.gate * BT * C}, {&g->gate_logits, BT * s.G}, {&g->atty, BT * C},
        {&g->attn_sum, s.post * BT * C}, {&g->residual2, BT * C}, {&g->ln2, s.pre * BT * C},
        {&g->fch, BT * FF}, {&g->fch2, s.gated * BT * FF}, {&g->fcact, BT * FF},
        {&g->ffn_sum, s.post * BT * C},
        // scratch: after the gradients, so no zeroing touches it
        {&g->att_ds, ex * rows * (T + 1)}, {&g->att_D, st * rows}, {&g->att_ds_slot, st * s.slot * rows},
        {&g->slot_partial, partial * B * s.NH * (3 * s.hs + 1)}};
    size_t total = place_regions(&g->mem, regions, "activation gradients", B, T);
    size_t scratch = ex * rows * (T + 1) + st * rows + st * s.slot * rows + partial * B * s.NH * (3 * s.hs + 1);
    g->accumulated = stream;
    g->layer_values = total - scratch - stream;
    g->B = B;
    g->T = T;
}

// A slice of a per-layer tensor: layer l of `per` values each, or null when the tensor is absent.
template <typename T>
static inline T* layer_slice(T* base, int l, size_t per) {
    return base ? base + (size_t)l * per : nullptr;
}

// Everything layer l of a forward or backward pass touches: its weights and their gradients, its activations
// and theirs (gradients of activations are null in a forward-only pass), each null when the configuration has
// none.
template <typename F>
struct LayerView {
    int l;
    // parameters and their gradients
    const F *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb, *fcw2, *fcb2,
        *fcprojw, *fcprojb, *phiw1, *phiw2, *gatew;
    F *dln1w, *dln1b, *dqkvw, *dqkvb, *dattprojw, *dattprojb, *dln2w, *dln2b, *dfcw, *dfcb, *dfcw2, *dfcb2,
        *dfcprojw, *dfcprojb, *dphiw1, *dphiw2, *dgatew;
    AttnParams<F> attn;       // slot parameters and ALiBi slopes
    AttnParamGrads<F> dattn;  // their gradients
    // activations (Acts) and their gradients (GradActs)
    const F* x;  // the residual stream entering the layer: encoded, or residual3 of layer l-1
    F *ln1, *ln1_mean, *ln1_rstd, *qkv, *phi_in, *phi_hidden, *phi_relu, *phi_out, *att, *att_state, *att_slot,
        *atty_core, *gate, *atty, *attn_sum, *residual2, *ln2, *ln2_mean, *ln2_rstd, *fch, *fch2, *fcact,
        *ffn_sum, *residual3;
    bf16 *ln1_16, *phi_in_16, *phi_relu_16, *atty_16, *ln2_16, *fcact_16;  // in bf16 (Acts::bf16_acts), else null
    F *dx, *dln1, *dqkv, *dphi_in, *dphi_hidden, *dphi_relu, *dphi_out, *datty_core, *dgate_logits, *datty,
        *dattn_sum, *dresidual2, *dln2, *dfch, *dfch2, *dfcact, *dffn_sum, *dresidual3;
};

template <typename F>
static LayerView<F> layer_view(Model<F>* m, Acts<F>* a, int l) {
    const ModelConfig& c = m->config;
    ActShapes s = act_shapes(c, a->B, a->T);
    size_t BTC = s.BT * s.C, BTF = s.BT * s.FF, L = s.L;
    LayerView<F> v;
    v.l = l;
    auto param = [&](int id) { return (const F*)layer_slice(m->p[id], l, m->sizes[id] / L); };
    auto grad = [&](int id) { return layer_slice(m->g[id], l, m->sizes[id] / L); };
    // each per-layer parameter tensor: its id, where the view keeps it, and where it keeps its gradient
    using V = LayerView<F>;
    static const struct { int id; const F* V::*w; F* V::*dw; } tensors[] = {
        {P_LN1W, &V::ln1w, &V::dln1w}, {P_LN1B, &V::ln1b, &V::dln1b}, {P_QKVW, &V::qkvw, &V::dqkvw},
        {P_QKVB, &V::qkvb, &V::dqkvb}, {P_ATTPROJW, &V::attprojw, &V::dattprojw},
        {P_ATTPROJB, &V::attprojb, &V::dattprojb}, {P_LN2W, &V::ln2w, &V::dln2w}, {P_LN2B, &V::ln2b, &V::dln2b},
        {P_FCW, &V::fcw, &V::dfcw}, {P_FCB, &V::fcb, &V::dfcb}, {P_FCW2, &V::fcw2, &V::dfcw2},
        {P_FCB2, &V::fcb2, &V::dfcb2}, {P_FCPROJW, &V::fcprojw, &V::dfcprojw},
        {P_FCPROJB, &V::fcprojb, &V::dfcprojb}, {P_PHIW1, &V::phiw1, &V::dphiw1},
        {P_PHIW2, &V::phiw2, &V::dphiw2}, {P_GATEW, &V::gatew, &V::dgatew}};
    for (const auto& t : tensors) {
        v.*t.w = param(t.id);
        v.*t.dw = grad(t.id);
    }
    v.attn = AttnParams<F>{c.attn, c.positions == POS_ALIBI ? m->alibi.data() : nullptr, param(P_KSTAR),
                           param(P_VSTAR), param(P_SINKLOGIT), param(P_VBIAS), c.attn.slot_shared};
    v.dattn = AttnParamGrads<F>{grad(P_KSTAR), grad(P_VSTAR), grad(P_SINKLOGIT), grad(P_VBIAS),
                                a->grad.B == a->B && a->grad.T == a->T ? a->grad.slot_partial : nullptr};
    v.x = l == 0 ? a->encoded : layer_slice(a->residual3, l - 1, BTC);
    v.ln1 = layer_slice(a->ln1, l, BTC); v.ln1_mean = layer_slice(a->ln1_mean, l, s.BT);
    v.ln1_rstd = layer_slice(a->ln1_rstd, l, s.BT); v.qkv = layer_slice(a->qkv, l, 3 * BTC);
    v.phi_in = layer_slice(a->phi_in, l, 2 * BTC); v.phi_hidden = layer_slice(a->phi_hidden, l, 2 * BTC);
    v.phi_relu = layer_slice(a->phi_relu, l, 2 * BTC); v.phi_out = layer_slice(a->phi_out, l, 2 * BTC);
    v.att = layer_slice(a->att, l, (size_t)a->B * s.NH * a->T * a->T);
    v.att_state = layer_slice(a->att_state, l, (size_t)a->B * s.NH * a->T * 2);
    v.att_slot = layer_slice(a->att_slot, l, (size_t)a->B * s.NH * a->T);
    v.atty_core = layer_slice(a->atty_core, l, BTC); v.gate = layer_slice(a->gate, l, s.BT * s.G);
    v.atty = layer_slice(a->atty, l, BTC); v.attn_sum = layer_slice(a->attn_sum, l, BTC);
    v.residual2 = layer_slice(a->residual2, l, BTC); v.ln2 = layer_slice(a->ln2, l, BTC);
    v.ln2_mean = layer_slice(a->ln2_mean, l, s.BT); v.ln2_rstd = layer_slice(a->ln2_rstd, l, s.BT);
    v.fch = layer_slice(a->fch, l, BTF); v.fch2 = layer_slice(a->fch2, l, BTF);
    v.fcact = layer_slice(a->fcact, l, BTF);
    v.ln1_16 = layer_slice(a->ln1_16, l, BTC); v.ln2_16 = layer_slice(a->ln2_16, l, BTC);
    v.atty_16 = layer_slice(a->atty_16, l, BTC);
    v.phi_in_16 = layer_slice(a->phi_in_16, l, 2 * BTC); v.phi_relu_16 = layer_slice(a->phi_relu_16, l, 2 * BTC);
    v.fcact_16 = layer_slice(a->fcact_16, l, BTF);
    v.ffn_sum = layer_slice(a->ffn_sum, l, BTC); v.residual3 = layer_slice(a->residual3, l, BTC);
    GradActs<F>* g = a->grad.B == a->B && a->grad.T == a->T ? &a->grad : nullptr;
    auto dlayer = [&](F* GradActs<F>::*field) {  // one layer's gradients: the same memory for every layer
        return g ? g->*field : nullptr;
    };
    v.dx = !g ? nullptr : l == 0 ? g->encoded : layer_slice(g->residual3, l - 1, BTC);
    using G = GradActs<F>;
    v.dln1 = dlayer(&G::ln1); v.dqkv = dlayer(&G::qkv); v.dphi_in = dlayer(&G::phi_in);
    v.dphi_hidden = dlayer(&G::phi_hidden); v.dphi_relu = dlayer(&G::phi_relu); v.dphi_out = dlayer(&G::phi_out);
    v.datty_core = dlayer(&G::atty_core); v.dgate_logits = dlayer(&G::gate_logits); v.datty = dlayer(&G::atty);
    v.dattn_sum = dlayer(&G::attn_sum); v.dresidual2 = dlayer(&G::residual2); v.dln2 = dlayer(&G::ln2);
    v.dfch = dlayer(&G::fch); v.dfch2 = dlayer(&G::fch2); v.dfcact = dlayer(&G::fcact);
    v.dffn_sum = dlayer(&G::ffn_sum);
    v.dresidual3 = !g ? nullptr : layer_slice(g->residual3, l, BTC);
    return v;
}

// Does this configuration's attention take the plain path (attention_forward_causal)? Not with attention_passes: a
// GPU runs the general form's passes for every configuration (on the plain path's configurations they give the same
// bits).
static inline bool attention_is_plain(const ModelConfig& c) {
    return attn_is_plain_softmax(c.attn) && c.positions != POS_ALIBI && !attention_passes;
}

// -----------------------------------------------------------------------------------------------------------
// forward

// The feature map on q and k (--phi): phi_out = phi(phi_in), phi_in = q rows then k rows of qkv.
//   elu1: phi_out = elu(phi_in) + 1;   mlp: phi_out = W2 relu(W1 phi_in)  (a (2 B T NH, hs) matrix of rows)
template <typename F>
static void feature_map_forward(const Model<F>* m, Acts<F>* a, const LayerView<F>& v) {
    const ModelConfig& c = m->config;
    int BT = a->B * a->T, C = c.channels, hs = C / c.num_heads, rows = 2 * BT * c.num_heads;
    if (c.attn.phi == PHI_ELU1) {
        phi_gather(v.phi_in, v.qkv, BT, C);
        phi_elu1_forward(v.phi_out, v.phi_in, (size_t)2 * BT * C);
        return;
    }
    // mlp: only products read phi_in and phi_relu, so at bf16 they are stored in bf16 (Acts::bf16_acts)
    write_stored(v.phi_in, v.phi_in_16, [&](auto* out) { phi_gather(out, (const F*)v.qkv, BT, C); });
    matmul_forward(v.phi_hidden, ProductIn<F>{v.phi_in, v.phi_in_16}, v.phiw1, (const F*)nullptr, rows, hs, hs);
    write_stored(v.phi_relu, v.phi_relu_16,
                 [&](auto* out) { relu_forward(out, (const F*)v.phi_hidden, (size_t)2 * BT * C); });
    matmul_forward(v.phi_out, ProductIn<F>{v.phi_relu, v.phi_relu_16}, v.phiw2, (const F*)nullptr, rows, hs, hs);
}

// Both blocks of a layer are residual sub-blocks around a branch f, with their norm N before or after it:
//   pre-norm:  out = x + f(N(x))           post-norm: out = N(sum), sum = x + f(x)
// subblock_in returns f's input: N(x), written to `normed` or, stored in bf16 (Acts::bf16_acts), to normed16
// (pre-norm), or x itself (post-norm). normed_already: the sub-block before wrote N(x) in the pass that wrote x
// (NextNorm). The head's input is one too: Nf(x) pre-norm, x post-norm.
template <typename F>
static ProductIn<F> subblock_in(const ModelConfig& c, F* normed, bf16* normed16, F* mean, F* rstd, const F* x,
                                const F* w, const F* b, int BT, bool normed_already) {
    if (c.placement != PLACE_PRE) return {x, nullptr};
    if (!normed_already)
        write_stored(normed, normed16, [&](auto* out) {
            norm_forward(out, mean, rstd, x, w, b, BT, c.channels, c.norm, c.norm_eps);
        });
    return {normed, normed16};
}

// Pre-norm, what reads a sub-block's output first is the norm of the sub-block after it (or the final norm). The fast
// engine writes both in one pass over the rows (norm_forward_warp with `add`, as post-norm does), which saves a read
// of the residual stream and a launch per sub-block, in the forward and in the backward (the residual's gradient
// added in the norm backward's pass). The bits are those of the two passes: the same sums in the same order.
// NextNorm is that norm (out and out16 null: none, as after the probe's last layer or in the exact engine; out16: its
// output stored in bf16).
template <typename F>
struct NextNorm {
    F *out = nullptr, *mean = nullptr, *rstd = nullptr;
    const F *w = nullptr, *b = nullptr;
    bf16* out16 = nullptr;
};
static bool residual_norm_one_pass = true;  // false: the two passes (test_engine.cpp compares the bits)
static inline bool residual_norm_fused(const ModelConfig& c) {
    return fast_row_kernels && residual_norm_one_pass && c.placement == PLACE_PRE;
}

// subblock_out writes the sub-block's output from x and the branch's output (post-norm also the sum N reads;
// pre-norm in the fast engine also `next`, the norm after it).
template <typename F>
static void subblock_out(const ModelConfig& c, F* out, F* sum, F* mean, F* rstd, const F* x, const F* branch,
                         const F* w, const F* b, int BT, const NextNorm<F>& next) {
    size_t n = (size_t)BT * c.channels;
    if (c.placement == PLACE_PRE) {
        if (next.out || next.out16) {  // out = x + branch on the way into the next norm
            SK_PROFILE_SCOPE(PROF_NORM);
            write_stored(next.out, next.out16, [&](auto* y) {
                norm_forward_warp(y, next.mean, next.rstd, x, next.w, next.b, BT, c.channels, c.norm, c.norm_eps,
                                  branch, out);
            });
            return;
        }
        residual_forward(out, x, branch, n);
        return;
    }
    if (fast_row_kernels) {  // one pass: sum = x + branch on the way into the norm
        SK_PROFILE_SCOPE(PROF_NORM);
        norm_forward_warp(out, mean, rstd, x, w, b, BT, c.channels, c.norm, c.norm_eps, branch, sum);
        return;
    }
    residual_forward(sum, x, branch, n);
    norm_forward(out, mean, rstd, sum, w, b, BT, c.channels, c.norm, c.norm_eps);
}

// Layer l's streamed attention over q, k (rows at qk_stride) and v into core (the backward fills in the rest).
template <typename F>
static StreamAttn<F> stream_attn(const ModelConfig& c, const LayerView<F>& v, const Acts<F>* a, const F* q, const F* k,
                                 int qk_stride, F* core) {
    StreamAttn<F> sa = {};
    sa.ap = v.attn;
    sa.q = q;
    sa.k = k;
    sa.v = v.qkv + 2 * (size_t)c.channels;
    sa.qk_stride = qk_stride;
    sa.B = a->B;
    sa.T = a->T;
    sa.C = c.channels;
    sa.NH = c.num_heads;
    sa.y = core;
    sa.state = v.att_state;
    sa.att_slot = v.att_slot;
    return sa;
}

// The attention block of layer l: residual2 = the sub-block around attention(u), where
// attention(u) = proj(gate(core(q, k, v))), q | k | v = u Wqkv^T + b, then RoPE and the feature map on q, k.
template <typename F>
static void attention_block_forward(const Model<F>* m, Acts<F>* a, const LayerView<F>& v, bool normed_already,
                                    const NextNorm<F>& next) {
    const ModelConfig& c = m->config;
    const AttnSpec& at = c.attn;
    int B = a->B, T = a->T, C = c.channels, NH = c.num_heads, BT = B * T;
    int G = at.gate == GATE_ELEMENTWISE ? C : NH;
    size_t BTC = (size_t)BT * C;
    ProductIn<F> attn_in =
        subblock_in(c, v.ln1, v.ln1_16, v.ln1_mean, v.ln1_rstd, v.x, v.ln1w, v.ln1b, BT, normed_already);
    matmul_forward(v.qkv, attn_in, v.qkvw, v.qkvb, BT, C, 3 * C);
    if (c.positions == POS_ROPE)
        rope_apply(v.qkv, m->rope_cos.data(), m->rope_sin.data(), B, T, C, NH, false);
    F* core = at.gate != GATE_NONE ? v.atty_core : v.atty;
    if (!a->streamed && attention_is_plain(c)) {
        attention_forward_plain(core, v.att, v.qkv, B, T, C, NH);
    } else {
        const F *q = v.qkv, *k = v.qkv + C;
        int qk_stride = 3 * C;
        if (at.phi != PHI_NONE) {
            feature_map_forward(m, a, v);
            q = v.phi_out;
            k = v.phi_out + BTC;
            qk_stride = C;
        }
        if (a->streamed)
            attention_forward_stream(stream_attn(c, v, a, q, k, qk_stride, core));
        else
            attention_forward(core, v.att, v.att_slot, a->att_work, q, k, qk_stride, v.qkv + 2 * C, v.attn, B, T,
                              C, NH);
    }
    if (at.gate != GATE_NONE) {  // atty = core * sigmoid(attn_in W_g^T)
        matmul_forward(a->gate_logits, attn_in, v.gatew, (const F*)nullptr, BT, C, G);
        write_stored(v.atty, v.atty_16, [&](auto* out) {
            gate_forward(out, v.gate, (const F*)core, (const F*)a->gate_logits, BT, C, G);
        });
    }
    matmul_forward(a->branch_out, ProductIn<F>{v.atty, v.atty_16}, v.attprojw, v.attprojb, BT, C, C);
    subblock_out(c, v.residual2, v.attn_sum, v.ln1_mean, v.ln1_rstd, v.x, a->branch_out, v.ln1w, v.ln1b, BT, next);
}

// The FFN block of layer l: residual3 = the sub-block around ffn(u) = W3 (act(W1 u + b1) (* (W2 u + b2) when
// gated)) + b3, over residual2.
template <typename F>
static void ffn_block_forward(const Model<F>* m, Acts<F>* a, const LayerView<F>& v, bool normed_already,
                              const NextNorm<F>& next) {
    const ModelConfig& c = m->config;
    int BT = a->B * a->T, C = c.channels, FF = c.ffn_hidden;
    ProductIn<F> ffn_in =
        subblock_in(c, v.ln2, v.ln2_16, v.ln2_mean, v.ln2_rstd, v.residual2, v.ln2w, v.ln2b, BT, normed_already);
    // the GELU's epilogue writes an fp32 activation from an fp32 input; in bf16 (fcact_16) it has a pass of its own
    if (!(c.ffn == FFN_GELU && !v.fcact_16 && !ffn_in.h &&
          matmul_forward_gelu(v.fcact, v.fch, ffn_in.f, v.fcw, v.fcb, BT, C, FF))) {
        if (!(v.fch2 && !v.fcb && matmul_forward_pair(v.fch, v.fch2, ffn_in, v.fcw, v.fcw2, BT, C, FF))) {
            matmul_forward(v.fch, ffn_in, v.fcw, v.fcb, BT, C, FF);
            if (v.fch2) matmul_forward(v.fch2, ffn_in, v.fcw2, v.fcb2, BT, C, FF);
        }
        write_stored(v.fcact, v.fcact_16, [&](auto* out) {
            ffn_act_forward(out, (const F*)v.fch, (const F*)v.fch2, (size_t)BT * FF, c.ffn);
        });
    }
    matmul_forward(a->branch_out, ProductIn<F>{v.fcact, v.fcact_16}, v.fcprojw, v.fcprojb, BT, FF, C);
    subblock_out(c, v.residual3, v.ffn_sum, v.ln2_mean, v.ln2_rstd, v.residual2, a->branch_out, v.ln2w,
                 v.ln2b, BT, next);
}

template <typename F>
static const F* lm_head_weight(const Model<F>& m) {
    return m.config.tied ? m.p[P_WTE] : m.p[P_LMHEAD];
}

// Forward pass over inputs (B, T_data); returns the mean loss over the positions with a loss when targets is
// given (else 0; probs are still filled). with_head = false stops after the last block (the sink probe needs
// no logits). With a sink token the model runs T_data + 1 positions: position 0 is the sink (token id -1, no
// loss).
template <typename F>
static void model_forward_pass(Model<F>* m, Acts<F>* a, const int* inputs, const int* targets, int B, int T_data,
                               bool with_head) {
    const ModelConfig& c = m->config;
    const AttnSpec& at = c.attn;
    int off = at.sink_token, T = T_data + off;
    check_seq_len("forward pass: sequence length", T_data, c);
    if (with_head && a->headless) fail("internal: a forward pass with the head on headless activations (the probe's)");
    if (at.phi == PHI_MLP && (int64_t)2 * B * T * c.num_heads > INT32_MAX)
        fail("--phi mlp maps 2 x B %d x T %d x %d heads = %lld head vectors per layer, more than 2^31 (lower "
             "--batch or --seq-len)", B, T, c.num_heads, (long long)2 * B * T * c.num_heads);
    acts_alloc(a, c, B, T);
    a->tok_offset = off;
    int C = c.channels, BT = B * T;
    // the model's positions: the sink token (-1) first when there is one; targets -1 where there is no loss
    std::vector<int> in(BT, -1), tg(BT, -1);
    a->num_targets = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T_data; t++) {
            in[b * T + t + off] = inputs[b * T_data + t];
            if (targets && attn_position_has_loss(at, t + off)) {
                tg[b * T + t + off] = targets[b * T_data + t];
                a->num_targets++;
            }
        }
    // the buffers fit the largest pass so far (fit), so that the shorter passes of a sample or of a probe's last
    // chunk allocate nothing: on a GPU an allocation's cudaFree waits for the device
    a->inputs.fit(BT);
    a->inputs.upload(in.data(), BT);
    a->targets.fit(BT);
    a->targets.upload(tg.data(), BT);
    std::vector<int> groups;
    a->num_token_groups = group_positions_by_token(in.data(), BT, &groups);
    a->token_groups.fit(3 * (size_t)BT + 1);  // the most groups.size() can be
    a->token_groups.upload(groups.data(), groups.size());
    const F* pos = c.positions == POS_LEARNED      ? m->p[P_WPE]
                   : c.positions == POS_SINUSOIDAL ? m->pos_table.data()
                                                   : nullptr;
    embedding_forward(a->encoded, a->inputs.data(), m->p[P_WTE], m->p[P_SINKTOK], pos, B, T, C);
    bool fused = residual_norm_fused(c);  // each sub-block's output and the norm after it in one pass
    LayerView<F> v = layer_view(m, a, 0);
    for (int l = 0; l < c.num_layers; l++) {
        bool last = l + 1 == c.num_layers;
        LayerView<F> next = last ? v : layer_view(m, a, l + 1);  // (each view built once)
        NextNorm<F> after_attention, after_ffn;
        if (fused) {
            after_attention = {v.ln2, v.ln2_mean, v.ln2_rstd, v.ln2w, v.ln2b, v.ln2_16};
            if (!last)
                after_ffn = {next.ln1, next.ln1_mean, next.ln1_rstd, next.ln1w, next.ln1b, next.ln1_16};
            else if (with_head)
                after_ffn = {a->lnf, a->lnf_mean, a->lnf_rstd, m->p[P_LNFW], m->p[P_LNFB], a->lnf_16};
        }
        attention_block_forward(m, a, v, fused && l > 0, after_attention);
        ffn_block_forward(m, a, v, fused, after_ffn);
        v = next;
    }
    if (!with_head) return;
    const F* last = layer_slice(a->residual3, c.num_layers - 1, (size_t)BT * C);
    ProductIn<F> h = subblock_in(c, a->lnf, a->lnf_16, a->lnf_mean, a->lnf_rstd, last, m->p[P_LNFW], m->p[P_LNFB], BT,
                                 fused);
    {
        SK_PROFILE_SCOPE(PROF_CLASSIFIER);  // (the classifier's product counts here, not under matmul)
        matmul_forward(a->logits, h, lm_head_weight(*m), (const F*)nullptr, BT, C, c.padded_vocab_size);
    }
    const int* tgt = targets ? a->targets.data() : (const int*)nullptr;
    if (a->fast_loss)
        crossentropy_forward_stats(a->losses, a->loss_stats, a->loss_lanes, (const F*)a->logits, tgt, BT, c.vocab_size,
                                   c.padded_vocab_size);
    else
        crossentropy_forward(a->losses, a->probs, a->logits, tgt, BT, c.vocab_size, c.padded_vocab_size);
}

// The mean of the last forward pass's losses over the positions with a target (0 without any), summed in double in
// chunks of LOSS_CHUNK positions: each chunk in order of bt, then the chunks in order. The host (mean_loss) and the
// device (mean_loss_add: a thread per chunk, then one thread over the chunks) use these functions, so the same bits.
#define LOSS_CHUNK 256
template <typename F>
SK_HD static inline double loss_chunk_sum(const F* losses, int BT, size_t k) {
    double s = 0;
    size_t end = (k + 1) * LOSS_CHUNK < (size_t)BT ? (k + 1) * LOSS_CHUNK : (size_t)BT;
    for (size_t i = k * LOSS_CHUNK; i < end; i++) s += losses[i];
    return s;
}
// the chunks' sums added in chunk order (the loss's and the gradient norm's last step, host and device alike)
SK_HD static inline double sum_in_order(const double* sums, size_t n) {
    double total = 0;
    for (size_t k = 0; k < n; k++) total += sums[k];
    return total;
}
SK_HD static inline double mean_of_chunks(const double* sums, size_t nchunks, int num_targets) {
    return num_targets ? sum_in_order(sums, nchunks) / num_targets : 0.0;
}
static inline size_t loss_chunks(int BT) { return ((size_t)BT + LOSS_CHUNK - 1) / LOSS_CHUNK; }
template <typename F>
static double mean_loss(const Acts<F>* a) {
    int BT = a->B * a->T;
    std::vector<F> staging;
    const F* losses = sk_host_view((const F*)a->losses, (size_t)BT, &staging);
    std::vector<double> sums(loss_chunks(BT));
    for (size_t k = 0; k < sums.size(); k++) sums[k] = loss_chunk_sum(losses, BT, k);
    return mean_of_chunks(sums.data(), sums.size(), a->num_targets);
}
// stats[STEP_LOSS] += the mean loss / accum, on the device (parts: loss_chunks(B T) values of scratch)
template <typename F>
static void mean_loss_add(double* stats, SkBuffer<double>* parts, const Acts<F>* a, int accum) {
    const F* losses = a->losses;
    int BT = a->B * a->T, nt = a->num_targets;
    size_t nchunks = loss_chunks(BT);
    if (parts->size() < nchunks) parts->assign(nchunks, 0.0);
    double* sums = parts->data();
    sk_for(nchunks, SK_LAMBDA(size_t k) { sums[k] = loss_chunk_sum(losses, BT, k); });
    sk_for(1, SK_LAMBDA(size_t) { stats[STEP_LOSS] += mean_of_chunks(sums, nchunks, nt) / accum; });
}

// A forward pass: the mean loss when targets are given, else 0.
template <typename F>
static double model_forward(Model<F>* m, Acts<F>* a, const int* inputs, const int* targets, int B, int T_data,
                            bool with_head = true) {
    model_forward_pass(m, a, inputs, targets, B, T_data, with_head);
    return targets && with_head ? mean_loss(a) : 0.0;
}

// -----------------------------------------------------------------------------------------------------------
// backward

// backward of feature_map_forward: dphi_in from dphi_out, then dqkv (q and k parts) += dphi_in.
template <typename F>
static void feature_map_backward(const Model<F>* m, Acts<F>* a, const LayerView<F>& v) {
    const ModelConfig& c = m->config;
    int BT = a->B * a->T, C = c.channels, hs = C / c.num_heads, rows = 2 * BT * c.num_heads;
    if (c.attn.phi == PHI_ELU1) {
        phi_elu1_backward(v.dphi_in, v.dphi_out, v.phi_in, (size_t)2 * BT * C);
    } else {
        matmul_backward(v.dphi_relu, v.dphiw2, (F*)nullptr, v.dphi_out, ProductIn<F>{v.phi_relu, v.phi_relu_16},
                        v.phiw2, rows, hs, hs);
        relu_backward(v.dphi_hidden, v.dphi_relu, v.phi_hidden, (size_t)2 * BT * C);
        matmul_backward(v.dphi_in, v.dphiw1, (F*)nullptr, v.dphi_hidden, ProductIn<F>{v.phi_in, v.phi_in_16},
                        v.phiw1, rows, hs, hs);
    }
    phi_scatter_grad(v.dqkv, v.dphi_in, BT, C);
}

// backward of subblock_out: dx += the gradient along the residual path; returns the branch's output gradient
// (dout itself pre-norm; d sum, written to dsum, post-norm).
template <typename F>
static const F* subblock_out_backward(const ModelConfig& c, F* dx, F* dsum, F* dw, F* db, const F* dout,
                                      const F* sum, const F* w, const F* mean, const F* rstd, int BT) {
    const F* dbranch = dout;
    if (c.placement != PLACE_PRE) {
        norm_backward(dsum, dw, db, dout, sum, w, mean, rstd, BT, c.channels, c.norm);
        dbranch = dsum;
    }
    if (!residual_norm_fused(c)) residual_backward(dx, dbranch, (size_t)BT * c.channels);  // else in subblock_in's
    return dbranch;
}

// backward of subblock_in: pre-norm, dx += N's backward of dnormed (post-norm, the branch added into dx); dout, the
// sub-block's output gradient, goes into dx in the same pass where the forward fused the residual and the norm.
template <typename F>
static void subblock_in_backward(const ModelConfig& c, F* dx, F* dw, F* db, const F* dnormed, const F* x,
                                 const F* w, const F* mean, const F* rstd, int BT, const F* dout) {
    if (c.placement == PLACE_PRE)
        norm_backward(dx, dw, db, dnormed, x, w, mean, rstd, BT, c.channels, c.norm,
                      residual_norm_fused(c) ? dout : (const F*)nullptr);
}

// backward of attention_block_forward: dx from dresidual2, and every parameter gradient of the block.
template <typename F>
static void attention_block_backward(const Model<F>* m, Acts<F>* a, const LayerView<F>& v) {
    const ModelConfig& c = m->config;
    const AttnSpec& at = c.attn;
    int B = a->B, T = a->T, C = c.channels, NH = c.num_heads, BT = B * T;
    int G = at.gate == GATE_ELEMENTWISE ? C : NH;
    size_t BTC = (size_t)BT * C;
    bool pre = c.placement == PLACE_PRE;
    const F* dbranch = subblock_out_backward(c, v.dx, v.dattn_sum, v.dln1w, v.dln1b, v.dresidual2, v.attn_sum,
                                             v.ln1w, v.ln1_mean, v.ln1_rstd, BT);
    ProductIn<F> attn_in = pre ? ProductIn<F>{v.ln1, v.ln1_16} : ProductIn<F>{v.x, nullptr};
    F* dattn_in = pre ? v.dln1 : v.dx;
    matmul_backward(v.datty, v.dattprojw, v.dattprojb, dbranch, ProductIn<F>{v.atty, v.atty_16}, v.attprojw, BT, C,
                    C);
    const F *core = v.atty, *dcore = v.datty;
    if (at.gate != GATE_NONE) {  // atty = core * sigmoid(z), z = attn_in W_g^T
        core = v.atty_core;
        dcore = v.datty_core;
        gate_backward(v.datty_core, v.dgate_logits, v.datty, core, v.gate, BT, C, G);
        matmul_backward(dattn_in, v.dgatew, (F*)nullptr, v.dgate_logits, attn_in, v.gatew, BT, C, G);
    }
    F* ds_rows = a->grad.att_ds;
    if (a->streamed) {
        bool phi = at.phi != PHI_NONE;
        StreamAttn<F> sa = stream_attn(c, v, a, phi ? v.phi_out : v.qkv, phi ? v.phi_out + BTC : v.qkv + C,
                                       phi ? C : 3 * C, (F*)core);
        sa.dout = dcore;
        sa.dq = phi ? v.dphi_out : v.dqkv;
        sa.dk = phi ? v.dphi_out + BTC : v.dqkv + C;
        sa.dv = v.dqkv + 2 * C;
        sa.D = a->grad.att_D;
        sa.ds_slot = a->grad.att_ds_slot;
        attention_backward_stream(sa, v.dattn);
        if (phi) feature_map_backward(m, a, v);
    } else if (attention_is_plain(c)) {
        attention_backward_plain(v.dqkv, ds_rows, dcore, v.qkv, v.att, B, T, C, NH);
    } else if (at.phi == PHI_NONE) {
        attention_backward(v.dqkv, v.dqkv + C, 3 * C, v.dqkv + 2 * C, v.dattn, ds_rows, a->att_work, dcore,
                           v.qkv, v.qkv + C, v.qkv + 2 * C, v.att, v.att_slot, v.attn, B, T, C, NH);
    } else {  // through the feature map: dphi_out from the core, then the map and the gather
        attention_backward(v.dphi_out, v.dphi_out + BTC, C, v.dqkv + 2 * C, v.dattn, ds_rows, a->att_work,
                           dcore, v.phi_out, v.phi_out + BTC, v.qkv + 2 * C, v.att, v.att_slot, v.attn, B, T,
                           C, NH);
        feature_map_backward(m, a, v);
    }
    if (c.positions == POS_ROPE)
        rope_apply(v.dqkv, m->rope_cos.data(), m->rope_sin.data(), B, T, C, NH, true);
    matmul_backward(dattn_in, v.dqkvw, v.dqkvb, v.dqkv, attn_in, v.qkvw, BT, C, 3 * C);
    subblock_in_backward(c, v.dx, v.dln1w, v.dln1b, v.dln1, v.x, v.ln1w, v.ln1_mean, v.ln1_rstd, BT,
                         (const F*)v.dresidual2);
}

// backward of ffn_block_forward: dresidual2 from dresidual3, and every parameter gradient of the block.
template <typename F>
static void ffn_block_backward(const Model<F>* m, Acts<F>* a, const LayerView<F>& v) {
    const ModelConfig& c = m->config;
    int BT = a->B * a->T, C = c.channels, FF = c.ffn_hidden;
    bool pre = c.placement == PLACE_PRE;
    const F* dbranch = subblock_out_backward(c, v.dresidual2, v.dffn_sum, v.dln2w, v.dln2b, v.dresidual3,
                                             v.ffn_sum, v.ln2w, v.ln2_mean, v.ln2_rstd, BT);
    ProductIn<F> ffn_in = pre ? ProductIn<F>{v.ln2, v.ln2_16} : ProductIn<F>{v.residual2, nullptr};
    F* dffn_in = pre ? v.dln2 : v.dresidual2;
    bool fused_gelu =
        c.ffn == FFN_GELU && matmul_backward_input_gelu(v.dfch, dbranch, v.fcprojw, (const F*)v.fch, BT, FF, C);
    if (!fused_gelu) matmul_backward_input(v.dfcact, dbranch, v.fcprojw, BT, FF, C);
    matmul_backward_weights(v.dfcprojw, v.dfcprojb, dbranch, ProductIn<F>{v.fcact, v.fcact_16}, BT, FF, C);
    if (!fused_gelu) ffn_act_backward(v.dfch, v.dfch2, v.dfcact, v.fch, (const F*)v.fch2, (size_t)BT * FF, c.ffn);
    if (v.fch2 && !v.dfcb &&
        matmul_backward_weights_pair(v.dfcw, v.dfcw2, (const F*)v.dfch, (const F*)v.dfch2, ffn_in, BT, C, FF)) {
        matmul_backward_input(dffn_in, (const F*)v.dfch, v.fcw, BT, C, FF);
        matmul_backward_input(dffn_in, (const F*)v.dfch2, v.fcw2, BT, C, FF);
    } else {
        matmul_backward(dffn_in, v.dfcw, v.dfcb, v.dfch, ffn_in, v.fcw, BT, C, FF);
        if (v.fch2) matmul_backward(dffn_in, v.dfcw2, v.dfcb2, v.dfch2, ffn_in, v.fcw2, BT, C, FF);
    }
    subblock_in_backward(c, v.dresidual2, v.dln2w, v.dln2b, v.dln2, v.residual2, v.ln2w, v.ln2_mean,
                         v.ln2_rstd, BT, (const F*)v.dresidual3);
}

// Backward pass of the last forward. Gradients accumulate (+=) into m->grads scaled by `scale`
// (1/accumulation steps), so micro-batches add up to the gradient of the mean loss over the whole batch.
template <typename F>
static void model_backward(Model<F>* m, Acts<F>* a, F scale) {
    const ModelConfig& c = m->config;
    int B = a->B, T = a->T, C = c.channels, L = c.num_layers, BT = B * T;
    GradActs<F>* g = &a->grad;
    grad_acts_alloc(g, c, B, T, a->streamed);
    sk_fill(g->mem.data(), g->accumulated, F(0));
    // loss = scale * mean over the positions with a loss. The logits' gradient is written over the logits (as llm.c
    // does): nothing reads the logits after this, and the classifier then holds one B x T x Vp buffer, not two
    F dloss = scale / F(std::max(1, a->num_targets));
    F* dlogits = a->logits;
    if (a->fast_loss)
        crossentropy_backward_stats(dlogits, (const F*)a->logits, (const F*)a->loss_stats, a->targets.data(), dloss,
                                    BT, c.vocab_size, c.padded_vocab_size);
    else
        crossentropy_backward(dlogits, a->probs, a->targets.data(), dloss, BT, c.vocab_size, c.padded_vocab_size);
    // logits = h @ W_out^T, h = Nf(residual3 of the last layer) (pre-norm) or that residual3 (post-norm)
    const F* h_last = layer_slice(a->residual3, L - 1, (size_t)BT * C);
    F* dh_last = layer_slice(g->residual3, L - 1, (size_t)BT * C);
    F* dW_out = c.tied ? m->g[P_WTE] : m->g[P_LMHEAD];
    if (c.placement == PLACE_PRE) {
        classifier_backward(g->lnf, dW_out, dlogits, ProductIn<F>{a->lnf, a->lnf_16}, lm_head_weight(*m), BT, C,
                            c.padded_vocab_size);
        norm_backward(dh_last, m->g[P_LNFW], m->g[P_LNFB], g->lnf, h_last, m->p[P_LNFW], a->lnf_mean,
                      a->lnf_rstd, BT, C, c.norm);
    } else {
        classifier_backward(dh_last, dW_out, dlogits, ProductIn<F>{h_last, nullptr}, lm_head_weight(*m), BT, C,
                            c.padded_vocab_size);
    }
    for (int l = L - 1; l >= 0; l--) {
        LayerView<F> v = layer_view(m, a, l);
        sk_fill(g->mem.data() + g->accumulated, g->layer_values, F(0));  // this layer's gradients start from 0
        ffn_block_backward(m, a, v);
        attention_block_backward(m, a, v);
    }
    embedding_backward(m->g[P_WTE], m->g[P_SINKTOK], m->g[P_WPE], g->encoded, a->token_groups.data(),
                       a->num_token_groups, B, T, C);
}

// -----------------------------------------------------------------------------------------------------------
// update

// Global L2 norm of the gradients: squares summed in double over fixed 4096-element chunks, chunks in order.
template <typename F>
static size_t grad_norm_parts(Model<F>* m) {
    const size_t chunk = 4096, n = m->num_params, nchunks = (n + chunk - 1) / chunk;
    if (m->norm_parts.size() != nchunks) m->norm_parts.assign(nchunks, 0.0);
    double* sums = m->norm_parts.data();
    const F* g = m->grads.data();
    sk_for(nchunks, SK_LAMBDA(size_t k) {
        double s = 0;
        size_t end = (k + 1) * chunk < n ? (k + 1) * chunk : n;
        for (size_t i = k * chunk; i < end; i++) s += (double)g[i] * g[i];
        sums[k] = s;
    });
    return nchunks;
}
// the norm from the chunks' sums, in chunk order (host and device alike)
SK_HD static inline double grad_norm_of(const double* sums, size_t nchunks) {
    return sqrt(sum_in_order(sums, nchunks));
}
template <typename F>
static double grad_norm(Model<F>* m) {
    SK_PROFILE_SCOPE(PROF_OPTIMIZER);
    size_t nchunks = grad_norm_parts(m);
    std::vector<double> staging;
    return grad_norm_of(sk_host_view((const double*)m->norm_parts.data(), nchunks, &staging), nchunks);
}

// The non-finite guard on the device: the norm into stats[STEP_NORM]; STEP_OK 1 when it and the step's loss are
// finite (the norm is finite exactly when every gradient is), else 0; STEP_SCALE the clip scale of the norm, rounded
// to float as the host's AdamWStep.grad_scale is. One thread, after the chunks' sums.
template <typename F>
static void guard_step(Model<F>* m, float grad_clip) {
    SK_PROFILE_SCOPE(PROF_OPTIMIZER);
    size_t nchunks = grad_norm_parts(m);
    const double* sums = m->norm_parts.data();
    double* stats = m->step_stats.data();
    sk_for(1, SK_LAMBDA(size_t) {
        double gn = grad_norm_of(sums, nchunks);
        bool ok = isfinite(gn) && isfinite(stats[STEP_LOSS]);
        stats[STEP_NORM] = gn;
        stats[STEP_OK] = ok ? 1.0 : 0.0;
        stats[STEP_SCALE] = ok ? (double)(float)clip_scale(gn, grad_clip) : 0.0;
    });
}

// AdamW (decoupled weight decay), t = number of this update (1-based):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd p)
// with g = the gradient times s.grad_scale (clipping), and wd = 0 for the tensors exempt from decay (--wd-exempt).
// At --precision bf16 the same pass writes the updated weight's bf16 copy (Model::params_bf16).
// Elementwise, so thread-count independent. On the GPU one launch over every parameter, each element finding its
// tensor's decay in a table of the tensors' ends (the parameters are one buffer, the tensors in ParamId order); on
// the CPU a loop per tensor (the same element updates, without the search).
template <typename F>
struct AdamWConstants {
    F beta1, beta2, one_minus_b1, one_minus_b2, bc1, bc2, lr, eps, grad_scale;
    const double* guard;            // step_stats of a guarded update (STEP_OK, STEP_SCALE), else null
    size_t end[NUM_PARAM_TENSORS];  // one past the last element of each tensor
    F decay[NUM_PARAM_TENSORS];     // each tensor's weight decay
};

// the tensor that holds element k of the parameters (k < the last end)
template <typename F>
SK_HD static inline int adamw_tensor_of(const AdamWConstants<F>& a, size_t k) {
    int id = 0;
    while (k >= a.end[id]) id++;
    return id;
}

template <typename F>
SK_HD static inline void adamw_element(const AdamWConstants<F>& a, F decay, F* p, F* am, F* av, const F* grads,
                                       bf16* p16, size_t k) {
    F scale = a.grad_scale;
    if (a.guard) {
        if (a.guard[STEP_OK] == 0) return;  // a non-finite step: weights and moments stay as they are
        scale = F((float)a.guard[STEP_SCALE]);
    }
    F gr = grads[k] * scale;
    F mm = a.beta1 * am[k] + a.one_minus_b1 * gr;
    F vv = a.beta2 * av[k] + a.one_minus_b2 * gr * gr;
    am[k] = mm;
    av[k] = vv;
    F mhat = mm / a.bc1, vhat = vv / a.bc2;
    p[k] -= a.lr * (mhat / (sk_sqrt(vhat) + a.eps) + decay * p[k]);
    if (p16) p16[k] = bf16_from_float((float)p[k]);
}

template <typename F>
static AdamWConstants<F> adamw_constants(const Model<F>& m, const AdamWStep& s) {
    AdamWConstants<F> a;
    a.bc1 = F(1) - F(pow(s.beta1, s.t));
    a.bc2 = F(1) - F(pow(s.beta2, s.t));
    a.beta1 = F(s.beta1);
    a.beta2 = F(s.beta2);
    a.one_minus_b1 = F(1 - s.beta1);
    a.one_minus_b2 = F(1 - s.beta2);
    a.lr = F(s.lr);
    a.eps = F(s.eps);
    a.grad_scale = F(s.grad_scale);
    a.guard = nullptr;
    size_t end = 0;
    for (int id = 0; id < NUM_PARAM_TENSORS; id++) {
        end += m.sizes[id];
        a.end[id] = end;
        a.decay[id] = s.wd_exempt && param_is_decay_exempt(id) ? F(0) : F(s.weight_decay);
    }
    return a;
}

// guard: the step's device-side verdict and clip scale (guard_step), which replace s.grad_scale; null for none.
template <typename F>
static void adamw_update(Model<F>* m, const AdamWStep& s, const double* guard = nullptr) {
    SK_PROFILE_SCOPE(PROF_OPTIMIZER);
    AdamWConstants<F> a = adamw_constants(*m, s);
    a.guard = guard;
    F *p = m->params.data(), *am = m->adam_m.data(), *av = m->adam_v.data();
    const F* grads = m->grads.data();
    bf16* p16 = m->params_bf16.empty() ? nullptr : m->params_bf16.data();
#ifdef __CUDACC__
    sk_for(m->num_params, SK_LAMBDA(size_t k) {
        adamw_element(a, a.decay[adamw_tensor_of(a, k)], p, am, av, grads, p16, k);
    });
#else
    for (int id = 0; id < NUM_PARAM_TENSORS; id++) {
        size_t first = a.end[id] - m->sizes[id];
        F decay = a.decay[id];
        sk_for(m->sizes[id], SK_LAMBDA(size_t k) { adamw_element(a, decay, p, am, av, grads, p16, first + k); });
    }
#endif
}

// -----------------------------------------------------------------------------------------------------------
// the engine: this model behind the interface the shared host code drives (common/engine.h)

// ModelEngine: the model of this file behind the engine interface. Exact: the formulas above as they stand. Fast
// (EngineOptions): the training passes stream their attention (attention_forward_stream: no T x T matrices) and take
// the loss from row statistics (crossentropy_forward_stats: no probs), the sums over rows run in chunks
// (fast_row_kernels), and on a GPU every matmul goes to cuBLAS in the chosen precision. The sink probe keeps the
// materialising attention (it reads the weights), with the engine's other switches.
class ModelEngine final : public Engine {
  public:
    Model<float> model;
    ModelEngine(const ModelConfig& c, const EngineOptions& o) : options_(o) {
        int hs = c.channels / c.num_heads;
        acts_.streamed = o.kind == ENGINE_FAST && attention_stream_supports(hs);
        if (acts_.streamed) {  // before any of the model's memory: see sk_reserve_thread_stack
            std::string why = "the streamed attention at head size " + std::to_string(hs);
            sk_reserve_thread_stack(attention_stream_stack_bytes(hs), why.c_str());
        }
        model_build(&model, c);
        acts_.fast_loss = o.kind == ENGINE_FAST;
        if (matmul_precision() == PRECISION_BF16) {
            model.params_bf16.assign(model.num_params, bf16{0});  // params are 0
            acts_.bf16_acts = probe_.bf16_acts = true;
        }
        probe_.headless = true;  // the probe stops after the last block (GPT-2, a chunk of 8 x 64: 0.21 GB unheld)
    }
    const ModelConfig& config() const override { return model.config; }
    std::string describe() const override {
        if (options_.kind != ENGINE_FAST) return "exact";
        int hs = model.config.channels / model.config.num_heads;
        std::string attn = acts_.streamed
                               ? "streamed attention"
                               : "row-form attention (no streamed form for head size " + std::to_string(hs) + ")";
#ifdef __CUDACC__
        std::string mm = options_.precision == PRECISION_BF16
                             ? std::string("cuBLAS matmuls on bf16 operands (the weights' bf16 copy, fp32 masters)")
                             : std::string("cuBLAS ") + precision_names[options_.precision] + " matmuls";
#else
        std::string mm = options_.precision == PRECISION_FP32
                             ? "exact matmuls"
                             : std::string("exact matmuls on ") + precision_names[options_.precision] +
                                   "-rounded inputs (the tensor cores' rounding, emulated" +
                                   (options_.precision == PRECISION_BF16 ? "; the weights' bf16 copy, fp32 masters)"
                                                                         : ")");
#endif
        return "fast: " + attn + ", " + mm + ", row sums in chunks, norms a warp per row, loss from row statistics";
    }
    size_t num_params() const override { return model.num_params; }
    double forward(const int* inputs, const int* targets, int B, int T) override {
        Switches on(this);
        return model_forward(&model, &acts_, inputs, targets, B, T);
    }
    void logits_row(int b, int t, float* out) override {
        size_t row = (size_t)b * acts_.T + t + acts_.tok_offset;
        sk_download_bytes(out, acts_.logits + row * model.config.padded_vocab_size,
                          model.config.vocab_size * sizeof(float));
    }
    void zero_grad() override {  // the step's loss too (train_micro)
        SK_PROFILE_SCOPE(PROF_OPTIMIZER);
        sk_fill(model.grads.data(), model.num_params, 0.0f);
        sk_fill(model.step_stats.data(), (size_t)STEP_STATS, 0.0);
    }
    void backward(float scale) override {
        Switches on(this);
        model_backward(&model, &acts_, scale);
    }
    double grad_norm() override { return ::grad_norm(&model); }
    void update(const AdamWStep& step) override { adamw_update(&model, step); }
    void train_micro(const int* inputs, const int* targets, int B, int T, int accum) override {
        Switches on(this);
        model_forward_pass(&model, &acts_, inputs, targets, B, T, true);
        mean_loss_add(model.step_stats.data(), &model.loss_parts, &acts_, accum);
        model_backward(&model, &acts_, 1.0f / accum);
    }
    void guarded_update(const AdamWStep& step, float grad_clip) override {
        guard_step(&model, grad_clip);
        adamw_update(&model, step, (const double*)model.step_stats.data());
    }
    StepResult step_result() override {
        double s[STEP_STATS];
        model.step_stats.download(s, STEP_STATS);
        StepResult r;
        r.loss = s[STEP_LOSS];
        r.grad_norm = s[STEP_NORM];
        r.updated = s[STEP_OK] != 0;
        return r;
    }
    size_t reserve(int B, int T, int probe_B, int probe_T, int sample_T, size_t keep_values = 0) override {
        const ModelConfig& c = model.config;
        int off = c.attn.sink_token;  // the engine's passes count the model's positions
        if (sample_T > 0) acts_alloc(&acts_, c, 1, sample_T + off);
        acts_alloc(&acts_, c, B, T + off);  // the larger of the two stays allocated
        grad_acts_alloc(&acts_.grad, c, B, T + off, acts_.streamed);
        acts_alloc(&probe_, c, probe_B, probe_T + off);
        if (!model.params_bf16.empty()) {
            // the rounded operands: a classifier chunk, and the largest weight gradient's: the FFN's gradient (both
            // of a gated FFN's at once in its strided pair, a GPU's without biases) or qkv's, with, post-norm, the
            // layer's input (pre-norm, the norm's output is stored in bf16). The --phi mlp map's gradients are
            // smaller than qkv's, 2 B T C values, and its inputs are stored in bf16.
            size_t BT = (size_t)B * (T + off), rows = bf16_chunk_rows((int)BT, c.padded_vocab_size);
            size_t C = c.channels, pair = 1;
#ifdef __CUDACC__
            if (ffn_is_gated(c.ffn) && !c.bias) pair = 2;
#endif
            size_t n = std::max(pair * bf16_slot(BT * c.ffn_hidden), bf16_slot(3 * BT * C)) +
                       (c.placement == PLACE_PRE ? 0 : bf16_slot(BT * C));
            bf16_logit_chunk().fit(rows * c.padded_vocab_size);
            bf16_scratch().fit(n);
        }
        return kept_.reserve(keep_values);
    }
    ProbeView probe(const int* tokens, int B, int T, bool keep = false) override {
        Switches on(this);
        model_forward(&model, &probe_, tokens, (const int*)nullptr, B, T, false);
        const ModelConfig& c = model.config;
        size_t L = c.num_layers, NH = c.num_heads, C = c.channels, Tm = probe_.T, BTC = (size_t)B * Tm * C;
        ProbeView pv;
        pv.B = B;
        pv.T = (int)Tm;
        // the views: into the keep arena when kept, else the activations themselves (the GPU: their downloads)
        int next_staging = 0;
        auto view = [&](const float* p, size_t n) {
            std::vector<float>* staging = &staging_[next_staging++];
            return keep ? kept_.keep(p, n) : sk_host_view(p, n, staging);
        };
        pv.att = view((const float*)probe_.att, L * B * NH * Tm * Tm);
        if (probe_.att_slot) pv.att_slot = view((const float*)probe_.att_slot, L * B * NH * Tm);
        pv.encoded = view((const float*)probe_.encoded, BTC);
        pv.residual = view((const float*)probe_.residual3, L * BTC);
        pv.qkv = view((const float*)probe_.qkv, L * BTC * 3);
        return pv;
    }
    SkDownloadArena::Fence probe_send() override { return kept_.send(); }
    void get_params(float* out) const override { model.params.download(out, model.num_params); }
    void set_params(const float* in) override {
        model.params.upload(in, model.num_params);
        if (!model.params_bf16.empty()) {  // the bf16 copy follows the weights, as after every update
            bf16* p16 = model.params_bf16.data();
            const float* p = model.params.data();
            sk_for(model.num_params, SK_LAMBDA(size_t k) { p16[k] = bf16_from_float(p[k]); });
        }
    }
    void get_grads(float* out) const override { model.grads.download(out, model.num_params); }
    void get_adam(float* m, float* v) const override {
        model.adam_m.download(m, model.num_params);
        model.adam_v.download(v, model.num_params);
    }
    void set_adam(const float* m, const float* v) override {
        model.adam_m.upload(m, model.num_params);
        model.adam_v.upload(v, model.num_params);
    }

  private:
    // this engine's matmul_fast_precision, matmul_bf16_weights and fast_row_kernels, for the length of one call into
    // the model
    struct Switches {
        int saved_precision;
        Bf16Copy saved_weights;
        bool saved_chunked;
        explicit Switches(const ModelEngine* e)
            : saved_precision(matmul_fast_precision), saved_weights(matmul_bf16_weights),
              saved_chunked(fast_row_kernels) {
            matmul_fast_precision = e->matmul_precision();
            const Model<float>& m = e->model;
            matmul_bf16_weights = m.params_bf16.empty() ? Bf16Copy{}
                                                        : Bf16Copy{m.params.data(), m.params_bf16.data(), m.num_params};
            fast_row_kernels = e->options_.kind == ENGINE_FAST;
        }
        ~Switches() {
            matmul_fast_precision = saved_precision;
            matmul_bf16_weights = saved_weights;
            fast_row_kernels = saved_chunked;
        }
    };
    EngineOptions options_;
    // the fast engine's matmul precision (on the CPU: fp32, the exact matmul, or rounded inputs), else -1 (the exact
    // matmul)
    int matmul_precision() const { return options_.kind == ENGINE_FAST ? options_.precision : -1; }
    double peak_flops() const override {
        const Roofline& r = sk_roofline();  // the exact engine's matmuls run on fp32 lanes
        return matmul_precision() == PRECISION_BF16 ? r.bf16_flops
               : matmul_precision() == PRECISION_TF32 ? r.tf32_flops
                                                      : r.fp32_flops;
    }
    Acts<float> acts_, probe_;
    std::vector<float> staging_[5];  // the GPU build's host copies of a probe
    SkDownloadArena kept_;           // the kept probes' copies
};

static std::unique_ptr<Engine> make_engine(const ModelConfig& c, const EngineOptions& o) {
    return std::make_unique<ModelEngine>(c, o);
}

#ifndef TESTING
int main(int argc, char** argv) { return trainer_main(argc, argv); }
#endif
