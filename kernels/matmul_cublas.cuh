// kernels/matmul_cublas.cuh: the fast engine's matmul on a GPU, by cuBLAS.
//
//   out[m,n] = init[m,n] + sum_k A(m,k) B(k,n)       row-major; A(m,k) = A[m lda + k], or A[k lda + m] when a_t;
//                                                    B(k,n) = B[k ldb + n], or B[n ldb + k] when b_t;
//                                                    init = out (accumulate), the bias row, or 0
//
// CPU twin: gemm_by_element and gemm_blocked in train_gpt_cpu.cpp (the exact engine's). Not bit-identical to them:
// cuBLAS chooses its own order of summation, and with tf32 or bf16 the tensor cores round the inputs to 10 or 7
// mantissa bits (products are accumulated in fp32 either way). Same GPU, same binary: the same bits every run (cuBLAS
// is deterministic on one stream without atomics), so a fast run still resumes bit for bit.
//
// What it is: one cublasGemmEx call per product. cuBLAS is column-major, and a row-major matrix is its transpose seen
// column-major, so out^T (N x M) = B^T A^T is computed with each operand's transpose flag read off a_t and b_t and no
// copy made. Storage is fp32; the precision is the compute type. A bias is written into out first and kept with
// beta = 1.
// What it is not: cuBLASLt's fused epilogues (bias, GELU, the bias gradient) or bf16 storage; both are still to come.
#pragma once

// The column-major call (BLAS's convention) that computes the row-major product out = A B: the first operand is B,
// the second A, each transposed when its row-major layout is not the column-major transpose wanted, and out^T is the
// N x M column-major result with leading dimension N. test_engine.cpp runs this mapping through a column-major
// reference GEMM on the CPU against gemm_by_element.
template <typename F>
struct ColumnMajorGemm {
    bool trans_first, trans_second;
    int m, n, k;
    const F* first;
    int ld_first;
    const F* second;
    int ld_second;
    int ldc;
};

template <typename F>
static inline ColumnMajorGemm<F> column_major_gemm(const F* A, int lda, bool a_t, const F* B, int ldb, bool b_t, int M,
                                                   int K, int N) {
    // row-major B (K x N) is column-major B^T (N x K) with leading dimension ldb; with b_t it is stored as N x K
    // row-major, column-major K x N, so cuBLAS transposes it. Likewise A.
    return ColumnMajorGemm<F>{b_t, a_t, N, M, K, B, ldb, A, lda, N};
}

#ifdef __CUDACC__
#include <cublas_v2.h>

#include "../common/backend.h"
#include "../common/config.h"

static inline void sk_cublas_check(cublasStatus_t st, const char* call, const char* file, int line) {
    if (st != CUBLAS_STATUS_SUCCESS)
        fail("cuBLAS error %d (%s) at %s:%d in %s", (int)st, cublasGetStatusString(st), file, line, call);
}
#define SK_CUBLAS(call) sk_cublas_check((call), #call, __FILE__, __LINE__)

// The one handle, on the default stream (the stream of every other kernel), made at the first product.
static inline cublasHandle_t sk_cublas_handle() {
    static cublasHandle_t handle = nullptr;
    if (!handle) SK_CUBLAS(cublasCreate(&handle));
    return handle;
}

static inline cublasComputeType_t sk_cublas_compute(int precision) {
    return precision == PRECISION_BF16   ? CUBLAS_COMPUTE_32F_FAST_16BF
           : precision == PRECISION_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                         : CUBLAS_COMPUTE_32F;
}

static void gemm_cublas(float* out, const float* A, int lda, bool a_t, const float* B, int ldb, bool b_t, int M, int K,
                        int N, const float* bias, bool accumulate, int precision) {
    if (M == 0 || N == 0) return;
    float beta = accumulate ? 1.0f : 0.0f;
    if (!accumulate && bias) {
        sk_for((size_t)M * N, SK_LAMBDA(size_t i) { out[i] = bias[i % N]; });
        beta = 1.0f;
    }
    const float alpha = 1.0f;
    ColumnMajorGemm<float> g = column_major_gemm(A, lda, a_t, B, ldb, b_t, M, K, N);
    SK_CUBLAS(cublasGemmEx(sk_cublas_handle(), g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N,
                           g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha, g.first, CUDA_R_32F,
                           g.ld_first, g.second, CUDA_R_32F, g.ld_second, &beta, out, CUDA_R_32F, g.ldc,
                           sk_cublas_compute(precision), CUBLAS_GEMM_DEFAULT));
}
#endif
