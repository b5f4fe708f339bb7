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
// What it is: one cuBLAS call per product. cuBLAS is column-major, and a row-major matrix is its transpose seen
// column-major, so out^T (N x M) = B^T A^T is computed with each operand's transpose flag read off a_t and b_t and no
// copy made. Outputs are fp32, operands fp32 or bf16 (below). A product with a bias goes to cuBLASLt, whose
// epilogue adds the bias as the GEMM writes out (CUBLASLT_EPILOGUE_BIAS: out^T's rows are the bias's N entries), so
// no separate pass writes the bias first; the others go to cublasGemmEx. Where cuBLASLt offers no algorithm for the
// pointers' alignment, or SK_CUBLASLT=0 is in the environment, the bias is written into out first and kept with
// beta = 1, as before. cuBLASLt's descriptors and the algorithm its heuristic picks (host work of tens of
// microseconds; cublasLt.h notes that an algorithm can be kept and restored to save selecting it again) are made at
// the first product of each kind (LtKey: its shapes, epilogue, types and alignments) and kept for the run.
// The tanh-GELU FFN (gpt2) takes its activation in the epilogue of the product before it (LT_GELU_BIAS) and its
// gradient in the epilogue of the product after it in backward (LT_DGELU); a weight gradient with a bias takes the
// bias gradient from its epilogue (LT_BGRADB; fp32 only, train_gpt_cpu.cpp), added to the gradients by one short
// pass. Each falls back to the plain GEMM and the pass of its own where cuBLASLt has no algorithm or refuses the
// buffers (a note on stderr says so, once per epilogue and operand type), or under SK_CUBLASLT=0.
// The gated FFN's two products of u, and their two weight gradients, go as one strided-batched call each
// (gemm_cublas_pair) when the FFN has no biases.
// At --precision bf16 the operands are bf16 arrays (CUDA_R_16BF; train_gpt_cpu.cpp's bf16_operands: the weights'
// bf16 copy that AdamW writes, the other operands rounded as their product starts), multiplied by the tensor cores
// with fp32 accumulation (CUBLAS_COMPUTE_32F) into fp32 outputs; at tf32 the operands are fp32 and the tensor cores
// round them inside the GEMM (CUBLAS_COMPUTE_32F_FAST_TF32).
// At bf16 the activations that only products read (the pre-norm outputs, the FFN's activation, the gated attention
// output, the --phi mlp map's input and hidden activation) are stored in bf16 (Acts::bf16_acts) and go in as they are.
// What it is not: bf16 storage of the rest: the other activations and the gradients stay fp32 in memory, and a bf16
// operand is made from them for each product.
#pragma once
#include <stdint.h>
#include <string.h>

#include <utility>
#include <vector>

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

// The matrices of a ColumnMajorGemm as cuBLASLt describes them (cublasLtMatrixLayoutCreate): rows and columns as
// stored, column-major, with the leading dimension of g. which: 0 the first operand (op(first) is m x k), 1 the second
// (op(second) is k x n), 2 out^T (m x n). test_engine.cpp checks that every layout's leading dimension holds its rows
// and that the product read through these layouts is the row-major one.
struct LtLayout {
    int rows, cols, ld;
};
template <typename F>
static inline LtLayout cublaslt_layout(const ColumnMajorGemm<F>& g, int which) {
    if (which == 0) return g.trans_first ? LtLayout{g.k, g.m, g.ld_first} : LtLayout{g.m, g.k, g.ld_first};
    if (which == 1) return g.trans_second ? LtLayout{g.n, g.k, g.ld_second} : LtLayout{g.k, g.n, g.ld_second};
    return LtLayout{g.m, g.n, g.ldc};
}

// The three products of a linear layer out (BT x OC) = inp (BT x C) @ weight (OC x C)^T as column-major calls, the
// operands as train_gpt_cpu.cpp's matmul_forward and matmul_backward hand them to gemm:
//   forward         out  (BT x OC) = inp @ weight^T
//   input gradient  dinp (BT x C)  = dout @ weight
//   weight gradient dw   (OC x C)  = dout^T @ inp
template <typename F>
static inline ColumnMajorGemm<F> linear_forward_gemm(const F* inp, const F* weight, int BT, int C, int OC) {
    return column_major_gemm(inp, C, false, weight, C, true, BT, C, OC);
}
template <typename F>
static inline ColumnMajorGemm<F> linear_input_grad_gemm(const F* dout, const F* weight, int BT, int C, int OC) {
    return column_major_gemm(dout, OC, false, weight, C, false, BT, OC, C);
}
template <typename F>
static inline ColumnMajorGemm<F> linear_weight_grad_gemm(const F* dout, const F* inp, int BT, int C, int OC) {
    return column_major_gemm(dout, OC, true, inp, C, false, OC, BT, C);
}

// Two products of the same shapes as one strided-batched call (the gated FFN's W1 u and W2 u, and their weight
// gradients): batch i's matrices sit at i times a stride from batch 0's, each stride the distance between the two
// products' pointers in elements (0 for an operand they share): of the operands' type F, or of the outputs' O. ok is
// false when the two calls differ in anything but their pointers, a distance is not a whole number of elements or is
// negative (cuBLAS defines batches only forward), or the second output starts inside the first (batches' outputs must
// not overlap).
struct BatchStrides {
    long long first = 0, second = 0, out = 0;
    bool ok = false;
};
template <typename F, typename O>
static inline BatchStrides batch_strides(const ColumnMajorGemm<F>& g0, const ColumnMajorGemm<F>& g1, const O* out0,
                                         const O* out1) {
    BatchStrides st;
    if (g0.trans_first != g1.trans_first || g0.trans_second != g1.trans_second || g0.m != g1.m || g0.n != g1.n ||
        g0.k != g1.k || g0.ld_first != g1.ld_first || g0.ld_second != g1.ld_second || g0.ldc != g1.ldc)
        return st;
    // distances of addresses, not pointer differences: the two may lie in different allocations
    long long d[3] = {(long long)((intptr_t)g1.first - (intptr_t)g0.first),
                      (long long)((intptr_t)g1.second - (intptr_t)g0.second),
                      (long long)((intptr_t)out1 - (intptr_t)out0)};
    if (d[0] % (long long)sizeof(F) || d[1] % (long long)sizeof(F) || d[2] % (long long)sizeof(O)) return st;
    st.first = d[0] / (long long)sizeof(F);
    st.second = d[1] / (long long)sizeof(F);
    st.out = d[2] / (long long)sizeof(O);
    long long out_extent = (long long)g0.ldc * (g0.n - 1) + g0.m;  // out^T: n columns of m, ldc apart
    st.ok = st.first >= 0 && st.second >= 0 && st.out >= out_extent;
    return st;
}

// What cuBLASLt's epilogue does as the GEMM writes out^T = op(first) op(second) (+ beta out^T) (cuBLAS's own terms:
// D = epilogue(alpha A B + beta C), A = first, B = second, D = C = out^T):
//   LT_BIAS       D = AB + bias, the bias's m entries down D's rows (out's columns, row-major)
//   LT_GELU_BIAS  D = gelu(AB + bias) and aux = AB + bias (the pre-activation kept for the backward); cuBLASLt's GELU
//                 is the tanh form of the trainer's act_forward (FFN_GELU), its rounding its own
//   LT_DGELU      D = (AB + beta C) * gelu'(aux), aux the forward's pre-activation
//   LT_BGRADB     D = AB + beta C, and bias = the sums of op(second) over k: one per column of D (out's rows)
enum LtEpilogue { LT_BIAS, LT_GELU_BIAS, LT_DGELU, LT_BGRADB, LT_NUM_EPILOGUES };
// test_engine.cpp runs these definitions through the layouts on the CPU, for each call the trainer makes.

// the largest power of two up to 256 that divides the address: what the heuristic may assume of a pointer
static inline uint32_t sk_alignment(const void* p) {
    uint32_t a = 256;
    while (a > 1 && (uintptr_t)p % a) a /= 2;
    return a;
}

// Everything cuBLASLt's heuristic is told of a product with an epilogue, so everything its choice of algorithm can
// depend on: the epilogue, the operands' type and the precision, the shapes, transposes and leading dimensions, and
// each pointer's alignment (sk_alignment; 0 for a bias or aux matrix the product has not). Not the pointers
// themselves: an algorithm chosen for one product serves another with the same key. Every step makes the same
// products (each layer the same few), so gemm_cublaslt asks the heuristic once per key and keeps the plan for the run
// (LtPlans).
struct LtKey {
    int kind, bf16_operands, precision, trans_first, trans_second, m, n, k, ld_first, ld_second, ldc;
    uint32_t align_first, align_second, align_out, align_bias, align_aux;
    bool operator==(const LtKey& o) const {
        static_assert(sizeof(LtKey) == 16 * 4, "no padding: the fields are compared as bytes");
        return memcmp(this, &o, sizeof o) == 0;
    }
};
template <typename T>
static inline LtKey lt_key(const ColumnMajorGemm<T>& g, LtEpilogue kind, bool bf16_operands, int precision,
                           const void* out, const void* bias, const void* aux) {
    return LtKey{(int)kind, bf16_operands, precision, g.trans_first, g.trans_second, g.m, g.n, g.k, g.ld_first,
                 g.ld_second, g.ldc, sk_alignment(g.first), sk_alignment(g.second), sk_alignment(out),
                 bias ? sk_alignment(bias) : 0u, aux ? sk_alignment(aux) : 0u};
}

// The plans made so far, by key. A model makes a few dozen distinct products at most, so a list searched in order.
template <typename Plan>
struct LtPlans {
    std::vector<std::pair<LtKey, Plan>> plans;
    Plan* find(const LtKey& key) {
        for (auto& p : plans)
            if (p.first == key) return &p.second;
        return nullptr;
    }
    Plan* add(const LtKey& key, const Plan& plan) {  // may reallocate: earlier pointers from find or add are invalid
        plans.push_back({key, plan});
        return &plans.back().second;
    }
};

#ifdef __CUDACC__
#include <cublasLt.h>
#include <cublas_v2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

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

// An operand's type as cuBLAS names it, and the compute type of a product of such operands in a precision: bf16
// operands are multiplied as they are (fp32 accumulation); fp32 operands at tf32 are rounded by the tensor cores
// (and at bf16, which only a caller that made no bf16 operands asks, too).
template <typename T>
static inline cudaDataType_t sk_cuda_type() {
    static_assert(std::is_same<T, float>::value || std::is_same<T, bf16>::value, "operands are float or bf16");
    return std::is_same<T, bf16>::value ? CUDA_R_16BF : CUDA_R_32F;
}
template <typename T>
static inline cublasComputeType_t sk_cublas_compute(int precision) {
    if (std::is_same<T, bf16>::value) return CUBLAS_COMPUTE_32F;
    return precision == PRECISION_BF16   ? CUBLAS_COMPUTE_32F_FAST_16BF
           : precision == PRECISION_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                         : CUBLAS_COMPUTE_32F;
}

// cuBLASLt: one handle, and a workspace of 32 MiB (what NVIDIA suggests for Hopper), both made at the first use.
#define SK_CUBLASLT_WORKSPACE ((size_t)32 << 20)
static inline cublasLtHandle_t sk_cublaslt_handle() {
    static cublasLtHandle_t handle = nullptr;
    if (!handle) SK_CUBLAS(cublasLtCreate(&handle));
    return handle;
}
static inline void* sk_cublaslt_workspace() {
    static void* ws = nullptr;
    if (!ws) ws = sk_alloc_bytes(SK_CUBLASLT_WORKSPACE);
    return ws;
}
// SK_CUBLASLT=0 in the environment: every product through cublasGemmEx (a control for the epilogue)
static inline bool sk_cublaslt_enabled() {
    static int on = -1;
    if (on < 0) {
        const char* e = getenv("SK_CUBLASLT");
        on = !(e && strcmp(e, "0") == 0);
    }
    return on != 0;
}
// A product cuBLASLt declined (its heuristic found no algorithm, or the call said CUBLAS_STATUS_NOT_SUPPORTED), said
// once per epilogue and operand type on stderr, so that a run shows which fusions it lost; the caller's fallback
// computes the product.
static inline void sk_cublaslt_declined(LtEpilogue kind, bool bf16_operands, int m, int n, int k, const char* by,
                                         cublasStatus_t st) {
    static bool said[LT_NUM_EPILOGUES][2] = {};
    if (said[kind][bf16_operands]) return;
    said[kind][bf16_operands] = true;
    static const char* const names[LT_NUM_EPILOGUES] = {"bias", "GELU", "GELU-gradient", "bias-gradient"};
    fprintf(stderr,
            "note: cuBLASLt declined the %s epilogue of a %s product (column-major m %d n %d k %d; %s: %s); such "
            "products run as a plain GEMM and a pass of their own\n",
            names[kind], bf16_operands ? "bf16" : "fp32", m, n, k, by,
            st == CUBLAS_STATUS_SUCCESS ? "no algorithm" : cublasGetStatusString(st));
}

// A product's plan: its descriptors and the heuristic's algorithm, or why cuBLASLt has none (ok false: `by` and the
// status, for the note on stderr). Made at a key's first product and kept for the run.
struct LtPlan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
    cublasLtMatmulAlgo_t algo = {};
    bool ok = false;
    const char* by = "the heuristic";
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
};

// The descriptors of a product (out, g, kind, bias and aux as gemm_cublaslt takes them, set on the descriptor here and
// again at every product) and the heuristic's first algorithm for them.
template <typename T>
static LtPlan lt_plan_make(const float* out, const ColumnMajorGemm<T>& g, LtEpilogue kind, const float* bias,
                           float* aux, int precision) {
    LtPlan plan;
    SK_CUBLAS(cublasLtMatmulDescCreate(&plan.op, sk_cublas_compute<T>(precision), CUDA_R_32F));
    cublasOperation_t ta = g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    if (kind == LT_BGRADB) epilogue = CUBLASLT_EPILOGUE_BGRADB;
    if (kind == LT_DGELU) epilogue = CUBLASLT_EPILOGUE_DGELU;
    if (kind == LT_GELU_BIAS) epilogue = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    SK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    SK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    SK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    if (bias)
        SK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    if (aux) {
        int64_t ld = g.ldc;
        SK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
        SK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
    }
    LtLayout a = cublaslt_layout(g, 0), b = cublaslt_layout(g, 1), c = cublaslt_layout(g, 2);
    SK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.la, sk_cuda_type<T>(), a.rows, a.cols, a.ld));
    SK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.lb, sk_cuda_type<T>(), b.rows, b.cols, b.ld));
    SK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.lc, CUDA_R_32F, c.rows, c.cols, c.ld));
    cublasLtMatmulPreference_t pref = nullptr;
    SK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = SK_CUBLASLT_WORKSPACE;
    uint32_t align_a = sk_alignment(g.first), align_b = sk_alignment(g.second), align_c = sk_alignment(out);
    SK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    SK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                   sizeof align_a));
    SK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                   sizeof align_b));
    SK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                   sizeof align_c));
    SK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                   sizeof align_c));
    cublasLtMatmulHeuristicResult_t heuristic = {};
    int found = 0;
    // the heuristic also reads the bias and aux pointers' alignment off the descriptor
    plan.st = cublasLtMatmulAlgoGetHeuristic(sk_cublaslt_handle(), plan.op, plan.la, plan.lb, plan.lc, plan.lc, pref, 1,
                                             &heuristic, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    plan.ok = plan.st == CUBLAS_STATUS_SUCCESS && found > 0;
    plan.algo = heuristic.algo;
    return plan;
}

// One cuBLASLt product with an epilogue, operands of type T (float or bf16), out, bias and aux fp32. bias:
// LT_BIAS's and LT_GELU_BIAS's input (null: none), LT_BGRADB's output; aux: a matrix shaped like out^T with leading
// dimension g.ldc. Returns false, having done nothing, where cuBLASLt has no algorithm for these types, shapes and
// alignments, or its call refuses them (CUBLAS_STATUS_NOT_SUPPORTED), or SK_CUBLASLT=0: the caller then computes the
// same another way. The plan (descriptors, algorithm, or the refusal) is made at its key's first product and kept.
template <typename T>
static bool gemm_cublaslt(float* out, const ColumnMajorGemm<T>& g, LtEpilogue kind, const float* bias, float* aux,
                          float beta, int precision) {
    if (!sk_cublaslt_enabled()) return false;
    if (aux && (g.ldc % 8 != 0 || sk_alignment(aux) < 16)) return false;  // what the aux matrix needs
    // the bias vector: the preference can state only the four matrices' least alignment; the heuristic reads the
    // bias pointer's off the descriptor, but the documentation promises nothing for a bias below 16 bytes, so such a
    // bias takes the fallback rather than an algorithm that may read it in 16-byte vectors
    if (bias && sk_alignment(bias) < 16) return false;
    const bool bf16_operands = std::is_same<T, bf16>::value;
    static LtPlans<LtPlan> plans;  // one list, like the handles: every product is made by the trainer's main thread
    LtKey key = lt_key(g, kind, bf16_operands, precision, out, bias, aux);
    LtPlan* plan = plans.find(key);
    if (!plan) plan = plans.add(key, lt_plan_make(out, g, kind, bias, aux, precision));
    if (plan->ok) {
        // this product's bias and aux, set on the kept descriptor before each call (as other frameworks that keep
        // cuBLASLt plans do): the plan's algorithm was chosen for the key, which holds these pointers' alignment
        if (bias)
            SK_CUBLAS(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        if (aux)
            SK_CUBLAS(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux,
                                                     sizeof aux));
        const float alpha = 1.0f;
        cublasStatus_t st = cublasLtMatmul(sk_cublaslt_handle(), plan->op, &alpha, g.first, plan->la, g.second,
                                           plan->lb, &beta, out, plan->lc, out, plan->lc, &plan->algo,
                                           sk_cublaslt_workspace(), SK_CUBLASLT_WORKSPACE, 0);
        // an algorithm the heuristic offered may still refuse these buffers before it writes anything (cuBLASLt's
        // documentation says so of alignment): that is a fallback too, for this key from now on; any other error
        // stops the run
        if (st == CUBLAS_STATUS_NOT_SUPPORTED) plan->ok = false, plan->by = "the call", plan->st = st;
        else SK_CUBLAS(st);
    }
    if (!plan->ok) sk_cublaslt_declined(kind, bf16_operands, g.m, g.n, g.k, plan->by, plan->st);
    return plan->ok;
}

template <typename T>
static void gemm_cublas(float* out, const T* A, int lda, bool a_t, const T* B, int ldb, bool b_t, int M, int K, int N,
                        const float* bias, bool accumulate, int precision) {
    if (M == 0 || N == 0) return;
    ColumnMajorGemm<T> g = column_major_gemm(A, lda, a_t, B, ldb, b_t, M, K, N);
    if (!accumulate && bias && gemm_cublaslt(out, g, LT_BIAS, bias, nullptr, 0.0f, precision)) return;
    float beta = accumulate ? 1.0f : 0.0f;
    if (!accumulate && bias) {
        sk_for((size_t)M * N, SK_LAMBDA(size_t i) { out[i] = bias[i % N]; });
        beta = 1.0f;
    }
    const float alpha = 1.0f;
    SK_CUBLAS(cublasGemmEx(sk_cublas_handle(), g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N,
                           g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha, g.first,
                           sk_cuda_type<T>(), g.ld_first, g.second, sk_cuda_type<T>(), g.ld_second, &beta, out,
                           CUDA_R_32F, g.ldc, sk_cublas_compute<T>(precision), CUBLAS_GEMM_DEFAULT));
}

// The fused products of a linear layer (shapes as linear_forward_gemm's; operands float or bf16, out fp32). Each
// returns false, having done nothing, where cuBLASLt cannot; the caller then runs the plain product and the pass of
// its own.

// out = gelu(inp @ weight^T + bias) and pre = inp @ weight^T + bias (bias may be null), in one call (LT_GELU_BIAS)
template <typename T>
static bool gemm_cublas_gelu(float* out, float* pre, const T* inp, const T* weight, const float* bias, int BT, int C,
                             int OC, int precision) {
    return gemm_cublaslt(out, linear_forward_gemm(inp, weight, BT, C, OC), LT_GELU_BIAS, bias, pre, 0.0f, precision);
}

// dinp = (dout @ weight) * gelu'(pre), pre (BT x C) the pre-activation of this layer's input: the input gradient
// through the GELU before the layer (LT_DGELU; dinp is written, not added to)
template <typename T>
static bool gemm_cublas_dgelu(float* dinp, const float* pre, const T* dout, const T* weight, int BT, int C, int OC,
                              int precision) {
    return gemm_cublaslt(dinp, linear_input_grad_gemm(dout, weight, BT, C, OC), LT_DGELU, nullptr, (float*)pre, 0.0f,
                         precision);
}

// dweight += dout^T @ inp, and dbias_sums[o] = sum_bt dout[bt, o]: the bias gradient's sums from the weight
// gradient's epilogue (LT_BGRADB; dbias_sums is written, not added to)
static bool gemm_cublas_bgrad(float* dweight, float* dbias_sums, const float* dout, const float* inp, int BT, int C,
                              int OC, int precision) {
    return gemm_cublaslt(dweight, linear_weight_grad_gemm(dout, inp, BT, C, OC), LT_BGRADB, dbias_sums, nullptr, 1.0f,
                         precision);
}

// out0 (+)= op(first0) op(second0) and out1 (+)= op(first1) op(second1), the same shapes, in one strided-batched
// cublasGemmEx (batch_strides). False, having done nothing, where the two do not fit one batch.
template <typename T>
static bool gemm_cublas_pair(float* out0, float* out1, const ColumnMajorGemm<T>& g0, const ColumnMajorGemm<T>& g1,
                             bool accumulate, int precision) {
    BatchStrides st = batch_strides(g0, g1, (const float*)out0, (const float*)out1);
    if (!st.ok || g0.m == 0 || g0.n == 0) return false;
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    SK_CUBLAS(cublasGemmStridedBatchedEx(sk_cublas_handle(), g0.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N,
                                         g0.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N, g0.m, g0.n, g0.k, &alpha,
                                         g0.first, sk_cuda_type<T>(), g0.ld_first, st.first, g0.second,
                                         sk_cuda_type<T>(), g0.ld_second, st.second, &beta, out0, CUDA_R_32F, g0.ldc,
                                         st.out, 2, sk_cublas_compute<T>(precision), CUBLAS_GEMM_DEFAULT));
    return true;
}
#endif
