// kernels/gemm_exact.cuh: an exact GPU matmul, register-tiled and staged through shared memory, that gives the bits of
// the trainer's reference matmul.
//
//   out[m,n] = init[m,n] + sum_{k=0..K-1} A(m,k) * B(k,n)      k in increasing order, one fma (sk_fma) per term
//   A(m,k) = A[m*lda + k], or A[k*lda + m] when a_t;  B(k,n) = B[k*ldb + n], or B[n*ldb + k] when b_t;
//   init = out (accumulate), bias[n], or 0.
//
// CPU twin: gemm_by_element / gemm_blocked (train_gpt_cpu.cpp, cpu/gemm.h).
//
// What it is: the formula above with every output element still summed by one thread, k in order, so the bits are
// gemm_by_element's (and the CPU's). The speed comes from reuse, not from reordering sums: a block of GEMM_THREADS
// threads owns a GEMM_BM x GEMM_BN tile of out and walks k in slices of GEMM_BK; each slice of A (BM x BK) and B
// (BK x BN) is loaded once, coalesced, into shared memory, in whichever layout a_t and b_t say (no transposed copy in
// global memory), and each thread keeps a GEMM_TM x GEMM_TN micro-tile of out in registers, so every value read from
// shared memory feeds TM or TN fmas; while a slice's fmas run, the next slice's loads are in flight into registers.
// Between slices an accumulator stays in its register: nothing is rounded twice.
// The edges: a partial slice runs its k loop over the valid k only (a padded k fma'd with 0 would not be harmless:
// fma(0, x, -0.0) is +0.0, and 0 * inf is NaN), and rows and columns past M and N are computed from zeros and never
// stored.
// What it is not: a BLAS. No tensor cores, no split-K, no reassociation: those are faster and change bits (version 3
// of dev/cuda/matmul.cu, cuBLAS, shows the gap). Float is what the kernel is built and measured for.
//
// The per-thread work is SK_HD functions: the __global__ kernel runs them on the GPU, gemm_exact_tiled_emulated runs
// them on the CPU block by block, thread by thread, slice by slice, and test/test_gemm_exact.cpp holds that emulation
// to gemm_by_element bit for bit (make test). On a GPU: make dev-cuda && build/dev_cuda/matmul, the kernel ladder
// (dev/cuda/matmul.cu), checks the kernel against the CPU bit for bit and times it.
#pragma once
#include <stddef.h>

#include <vector>

#include "../common/errors.h"
#include "../common/numerics.h"

constexpr int GEMM_BM = 128, GEMM_BN = 128, GEMM_BK = 16;  // the block's tile of out, and the k slice
constexpr int GEMM_TM = 8, GEMM_TN = 8;                    // one thread's micro-tile of out
constexpr int GEMM_TX = GEMM_BN / GEMM_TN, GEMM_TY = GEMM_BM / GEMM_TM, GEMM_THREADS = GEMM_TX * GEMM_TY;
// The staged slices: As[k * GEMM_LDA_S + m] and Bs[k * GEMM_LDB_S + n]. The rows are padded by 32 / GEMM_BK floats:
// a warp that stores a k-contiguous operand writes 16 consecutive k of two rows, which then fall into 32 different
// banks.
constexpr int GEMM_LDA_S = GEMM_BM + 32 / GEMM_BK, GEMM_LDB_S = GEMM_BN + 32 / GEMM_BK;
constexpr int GEMM_A_PER_THREAD = GEMM_BM * GEMM_BK / GEMM_THREADS;  // the values of a slice each thread loads
constexpr int GEMM_B_PER_THREAD = GEMM_BK * GEMM_BN / GEMM_THREADS;
static_assert(GEMM_BM * GEMM_BK % GEMM_THREADS == 0 && GEMM_BK * GEMM_BN % GEMM_THREADS == 0,
              "every thread loads the same number of values of a slice");

// The operands and the output of one call, as gemm_by_element takes them.
template <typename F>
struct GemmExactArgs {
    F* out;
    const F* A;
    int lda;
    bool a_t;
    const F* B;
    int ldb;
    bool b_t;
    int M, K, N;
    const F* bias;
    bool accumulate;
};

// One thread's share of a slice on its way from global to shared memory: registers on the GPU, so that the next
// slice's loads are in flight while the fmas of this one run.
template <typename F>
struct GemmExactStage {
    F a[GEMM_A_PER_THREAD], b[GEMM_B_PER_THREAD];
};

// Loading a slice of an operand: the panel X(r, k), r0 <= r < r0 + W, k0 <= k < k0 + GEMM_BK, where X(r, k) =
// X[r * ld + k] when the operand is k-contiguous, else X[k * ld + r]. Element e of the panel counts in the order of
// X's addresses (k fastest when k-contiguous, else r fastest), and thread tid holds elements tid, tid + GEMM_THREADS,
// ..., so consecutive threads read consecutive addresses.
template <int W>
SK_HD inline void gemm_exact_panel_element(bool k_contiguous, int e, int* r, int* k) {
    *r = k_contiguous ? e / GEMM_BK : e % W;
    *k = k_contiguous ? e % GEMM_BK : e / W;
}

// global -> stage: thread tid's elements of the panel, zero past R or K
template <int W, typename F>
SK_HD inline void gemm_exact_fetch_panel(F* vals, const F* X, int ld, bool k_contiguous, int R, int K, int r0, int k0,
                                         int tid) {
    for (int i = 0; i < W * GEMM_BK / GEMM_THREADS; i++) {
        int r, k;
        gemm_exact_panel_element<W>(k_contiguous, tid + i * GEMM_THREADS, &r, &k);
        size_t gr = (size_t)r0 + r, gk = (size_t)k0 + k;
        bool in = gr < (size_t)R && gk < (size_t)K;
        vals[i] = !in ? F(0) : k_contiguous ? X[gr * ld + gk] : X[gk * ld + gr];
    }
}

// stage -> shared: Xs[k * lds + r] for thread tid's elements
template <int W, typename F>
SK_HD inline void gemm_exact_store_panel(F* Xs, int lds, const F* vals, bool k_contiguous, int tid) {
    for (int i = 0; i < W * GEMM_BK / GEMM_THREADS; i++) {
        int r, k;
        gemm_exact_panel_element<W>(k_contiguous, tid + i * GEMM_THREADS, &r, &k);
        Xs[k * lds + r] = vals[i];
    }
}

// Slice k0 of the block whose tile of out starts at (m0, n0): A(m0.., k0..) and B(k0.., n0..). A is k-contiguous
// unless a_t, B only when b_t.
template <typename F>
SK_HD inline void gemm_exact_fetch_slice(GemmExactStage<F>* st, const GemmExactArgs<F>& g, int m0, int n0, int k0,
                                         int tid) {
    gemm_exact_fetch_panel<GEMM_BM>(st->a, g.A, g.lda, !g.a_t, g.M, g.K, m0, k0, tid);
    gemm_exact_fetch_panel<GEMM_BN>(st->b, g.B, g.ldb, g.b_t, g.N, g.K, n0, k0, tid);
}
template <typename F>
SK_HD inline void gemm_exact_store_slice(F* As, F* Bs, const GemmExactStage<F>& st, const GemmExactArgs<F>& g,
                                         int tid) {
    gemm_exact_store_panel<GEMM_BM>(As, GEMM_LDA_S, st.a, !g.a_t, tid);
    gemm_exact_store_panel<GEMM_BN>(Bs, GEMM_LDB_S, st.b, g.b_t, tid);
}

// Thread tid = ty * GEMM_TX + tx owns rows m0 + ty + GEMM_TY i and columns n0 + tx + GEMM_TX j (i < TM, j < TN):
// strided rather than contiguous, so that a warp reads consecutive columns of Bs and writes consecutive columns of out.
SK_HD inline int gemm_exact_row(int tid, int i) { return tid / GEMM_TX + GEMM_TY * i; }
SK_HD inline int gemm_exact_col(int tid, int j) { return tid % GEMM_TX + GEMM_TX * j; }

// acc = init for the thread's elements inside out (the others stay 0 and are never stored)
template <typename F>
SK_HD inline void gemm_exact_tile_begin(F (&acc)[GEMM_TM][GEMM_TN], const GemmExactArgs<F>& g, int m0, int n0,
                                        int tid) {
    for (int i = 0; i < GEMM_TM; i++)
        for (int j = 0; j < GEMM_TN; j++) {
            int m = m0 + gemm_exact_row(tid, i), n = n0 + gemm_exact_col(tid, j);
            bool in = m < g.M && n < g.N;
            acc[i][j] = !in ? F(0) : g.accumulate ? g.out[(size_t)m * g.N + n] : g.bias ? g.bias[n] : F(0);
        }
}

// One slice: for k = 0..kn-1 in order (kn: the valid k of the slice), acc[i][j] = fma(A(m_i,k), B(k,n_j), acc[i][j]).
template <typename F>
SK_HD inline void gemm_exact_tile_slice(F (&acc)[GEMM_TM][GEMM_TN], const F* As, const F* Bs, int kn, int tid) {
    for (int k = 0; k < kn; k++) {
        F a[GEMM_TM], b[GEMM_TN];
        for (int i = 0; i < GEMM_TM; i++) a[i] = As[k * GEMM_LDA_S + gemm_exact_row(tid, i)];
        for (int j = 0; j < GEMM_TN; j++) b[j] = Bs[k * GEMM_LDB_S + gemm_exact_col(tid, j)];
        for (int i = 0; i < GEMM_TM; i++)
            for (int j = 0; j < GEMM_TN; j++) acc[i][j] = sk_fma(a[i], b[j], acc[i][j]);
    }
}

// out = acc for the thread's elements inside out
template <typename F>
SK_HD inline void gemm_exact_tile_end(const F (&acc)[GEMM_TM][GEMM_TN], const GemmExactArgs<F>& g, int m0, int n0,
                                      int tid) {
    for (int i = 0; i < GEMM_TM; i++)
        for (int j = 0; j < GEMM_TN; j++) {
            int m = m0 + gemm_exact_row(tid, i), n = n0 + gemm_exact_col(tid, j);
            if (m < g.M && n < g.N) g.out[(size_t)m * g.N + n] = acc[i][j];
        }
}

// the valid k of the slice that starts at k0
SK_HD inline int gemm_exact_slice_len(int K, int k0) { return K - k0 < GEMM_BK ? K - k0 : GEMM_BK; }

// The kernel, on the CPU: every block, and in it every thread, in the kernel's order of steps. Each of the kernel's
// __syncthreads is a point where all threads have finished the step before, which running them one after another is.
template <typename F>
static void gemm_exact_tiled_emulated(F* out, const F* A, int lda, bool a_t, const F* B, int ldb, bool b_t, int M,
                                      int K, int N, const F* bias, bool accumulate) {
    GemmExactArgs<F> g = {out, A, lda, a_t, B, ldb, b_t, M, K, N, bias, accumulate};
    std::vector<F> shared_a(GEMM_BK * GEMM_LDA_S), shared_b(GEMM_BK * GEMM_LDB_S);
    F *As = shared_a.data(), *Bs = shared_b.data();
    struct Registers {
        F acc[GEMM_TM][GEMM_TN];
        GemmExactStage<F> next;
    };
    std::vector<Registers> thread(GEMM_THREADS);
    for (int m0 = 0; m0 < M; m0 += GEMM_BM)
        for (int n0 = 0; n0 < N; n0 += GEMM_BN) {
            for (int t = 0; t < GEMM_THREADS; t++) {
                gemm_exact_tile_begin(thread[t].acc, g, m0, n0, t);
                gemm_exact_fetch_slice(&thread[t].next, g, m0, n0, 0, t);
            }
            for (int k0 = 0; k0 < K; k0 += GEMM_BK) {
                for (int t = 0; t < GEMM_THREADS; t++) gemm_exact_store_slice(As, Bs, thread[t].next, g, t);
                for (int t = 0; t < GEMM_THREADS; t++) {
                    gemm_exact_fetch_slice(&thread[t].next, g, m0, n0, k0 + GEMM_BK, t);
                    gemm_exact_tile_slice(thread[t].acc, As, Bs, gemm_exact_slice_len(K, k0), t);
                }
            }
            for (int t = 0; t < GEMM_THREADS; t++) gemm_exact_tile_end(thread[t].acc, g, m0, n0, t);
        }
}

#ifdef __CUDACC__
// Block (blockIdx.x, blockIdx.y) computes the tile of out at (m0, n0) = (GEMM_BM blockIdx.x, GEMM_BN blockIdx.y).
// While a slice's fmas run, the next slice is on its way into registers (past K the fetch reads nothing: zeros).
// ptxas gives it 148 registers on sm_90 (173 on sm_80), so one block per SM; held to 128 for two, it spills.
template <typename F>
__global__ void __launch_bounds__(GEMM_THREADS) gemm_exact_kernel(GemmExactArgs<F> g) {
    __shared__ F As[GEMM_BK * GEMM_LDA_S], Bs[GEMM_BK * GEMM_LDB_S];
    int m0 = blockIdx.x * GEMM_BM, n0 = blockIdx.y * GEMM_BN, tid = threadIdx.x;
    F acc[GEMM_TM][GEMM_TN];
    GemmExactStage<F> next;
    gemm_exact_tile_begin(acc, g, m0, n0, tid);
    gemm_exact_fetch_slice(&next, g, m0, n0, 0, tid);
    for (int k0 = 0; k0 < g.K; k0 += GEMM_BK) {
        __syncthreads();  // every thread is done with the previous slice
        gemm_exact_store_slice(As, Bs, next, g, tid);
        __syncthreads();
        gemm_exact_fetch_slice(&next, g, m0, n0, k0 + GEMM_BK, tid);
        gemm_exact_tile_slice(acc, As, Bs, gemm_exact_slice_len(g.K, k0), tid);
    }
    gemm_exact_tile_end(acc, g, m0, n0, tid);
}

// gemm_by_element's signature and bits, on the default stream. A launch error stops the program with fail(), as
// common/backend.h's SK_CUDA does; that header is not included here because it needs nvcc's --extended-lambda, which
// dev/cuda/ builds do not pass.
template <typename F>
static void gemm_exact_tiled(F* out, const F* A, int lda, bool a_t, const F* B, int ldb, bool b_t, int M, int K,
                             int N, const F* bias, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    unsigned n_blocks = (unsigned)((N + GEMM_BN - 1) / GEMM_BN);
    if (n_blocks > 65535) fail("gemm_exact_tiled: N = %d needs more than 65535 column blocks of %d", N, GEMM_BN);
    dim3 grid((unsigned)((M + GEMM_BM - 1) / GEMM_BM), n_blocks);
    GemmExactArgs<F> g = {out, A, lda, a_t, B, ldb, b_t, M, K, N, bias, accumulate};
    gemm_exact_kernel<F><<<grid, GEMM_THREADS>>>(g);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        fail("CUDA error %s launching gemm_exact_kernel (M %d K %d N %d)", cudaGetErrorString(err), M, K, N);
}
#endif
