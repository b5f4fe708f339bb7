// cpu/gemm.h: the CPU matmul, packed and cache-blocked, with every output element summed in the reference order.
//
//   out[m,n] = init[m,n] + sum_{k=0..K-1} A(m,k) * B(k,n)      k in increasing order, one fma per term
//   A(m,k) = A[m*lda + k], or A[k*lda + m] when a_t;  B(k,n) = B[k*ldb + n], or B[n*ldb + k] when b_t;
//   init = out (accumulate), bias[n], or 0.
// CPU twin of gemm_by_element (train_gpt_cpu.cpp), which is that formula one element at a time: the tests hold this
// to it bit for bit, for float and double, every transpose, ragged shapes, bias and accumulate.
//
// Why it keeps the bits: each output element lives in one accumulator that adds its K products in order. Blocking
// only cuts the k loop into pieces of KC: between pieces the running sum is stored to `out` and loaded back, which
// does not change a float. What is fast about it is everything else: the B block is packed once per KC x NC block into
// panels of NR columns (so both layouts of B, and the weights' transpose, cost one pass over B instead of a
// materialised transpose), the micro-kernel keeps an MR x NR tile of `out` in registers (6 x 64 floats: 24 AVX-512
// registers) and streams one panel, and tiles are shared out over the OpenMP threads.
// What it is not: a BLAS. Reordering a sum (Strassen, split-K across threads) would change bits and is not done.
#pragma once
#include <stddef.h>
#include <string.h>
#include <algorithm>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "../common/numerics.h"

namespace cpu_gemm {

constexpr int MR = 6, NR = 64;       // the micro-tile: MR rows x NR columns of out
constexpr int KC = 256, NC = 1024;   // the block of B packed at a time: KC rows (k) x NC columns

// Packs B(k0..k0+kc, n0..n0+nc) into panels of NR columns: panel p holds B(k0+k, n0 + p NR + c) at [p][k][c], the
// columns past N zero.
template <typename F>
static void pack_b(F* dst, const F* B, int ldb, bool b_t, int k0, int kc, int n0, int nc) {
    int panels = (nc + NR - 1) / NR;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < panels; p++) {
        F* d = dst + (size_t)p * kc * NR;
        int c_end = std::min(NR, nc - p * NR);
        for (int k = 0; k < kc; k++) {
            F* row = d + (size_t)k * NR;
            if (!b_t) {
                const F* src = B + (size_t)(k0 + k) * ldb + n0 + p * NR;
                for (int c = 0; c < c_end; c++) row[c] = src[c];
            } else {
                const F* src = B + (size_t)(n0 + p * NR) * ldb + k0 + k;
                for (int c = 0; c < c_end; c++) row[c] = src[(size_t)c * ldb];
            }
            for (int c = c_end; c < NR; c++) row[c] = F(0);
        }
    }
}

// The tile out[m0..m0+mr, n0..n0+nr) += its share of the block k0..k0+kc: acc starts from `out` (or from bias or 0
// when this is the first block and not accumulating), adds kc products per element in order, and is stored back.
template <typename F>
static void tile_generic(F* out, int ldo, const F* A, int lda, bool a_t, const F* Bp, int m0, int mr, int n0, int nr,
                         int k0, int kc, const F* init_bias, bool init_zero) {
    F acc[MR][NR];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < NR; c++)
            acc[r][c] = c >= nr ? F(0)
                        : init_zero ? F(0)
                        : init_bias ? init_bias[n0 + c]
                                    : out[(size_t)(m0 + r) * ldo + n0 + c];
    for (int k = 0; k < kc; k++) {
        const F* b = Bp + (size_t)k * NR;
        for (int r = 0; r < mr; r++) {
            F a = a_t ? A[(size_t)(k0 + k) * lda + m0 + r] : A[(size_t)(m0 + r) * lda + k0 + k];
            for (int c = 0; c < NR; c++) acc[r][c] = sk_fma(a, b[c], acc[r][c]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++) out[(size_t)(m0 + r) * ldo + n0 + c] = acc[r][c];
}

#ifdef __AVX512F__
// tile_generic for float with MR full rows, in AVX-512: 24 accumulators of 16 lanes; the same fma per element in the
// same order (vfmadd231ps rounds once per lane, as fmaf does).
static inline void tile_avx512(float* out, int ldo, const float* A, int lda, bool a_t, const float* Bp, int m0,
                               int n0, int nr, int k0, int kc, const float* init_bias, bool init_zero) {
    __m512 acc[MR][4];
    __mmask16 mask[4];
    for (int v = 0; v < 4; v++) {
        int left = nr - 16 * v;
        mask[v] = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < 4; v++) {
            if (init_zero) acc[r][v] = _mm512_setzero_ps();
            else if (init_bias) acc[r][v] = _mm512_maskz_loadu_ps(mask[v], init_bias + n0 + 16 * v);
            else acc[r][v] = _mm512_maskz_loadu_ps(mask[v], out + (size_t)(m0 + r) * ldo + n0 + 16 * v);
        }
    const float* a_rows[MR];
    for (int r = 0; r < MR; r++) a_rows[r] = A + (a_t ? (size_t)k0 * lda + m0 + r : (size_t)(m0 + r) * lda + k0);
    const size_t a_step = a_t ? (size_t)lda : 1;
    for (int k = 0; k < kc; k++) {
        const float* b = Bp + (size_t)k * NR;
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32),
               b3 = _mm512_loadu_ps(b + 48);
        for (int r = 0; r < MR; r++) {
            __m512 a = _mm512_set1_ps(a_rows[r][k * a_step]);
            acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(a, b2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(a, b3, acc[r][3]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < 4; v++)
            _mm512_mask_storeu_ps(out + (size_t)(m0 + r) * ldo + n0 + 16 * v, mask[v], acc[r][v]);
}
#endif

template <typename F>
static void tile(F* out, int ldo, const F* A, int lda, bool a_t, const F* Bp, int m0, int mr, int n0, int nr, int k0,
                 int kc, const F* init_bias, bool init_zero) {
#ifdef __AVX512F__
    if constexpr (sizeof(F) == sizeof(float)) {
        if (mr == MR) {
            tile_avx512(out, ldo, A, lda, a_t, Bp, m0, n0, nr, k0, kc, init_bias, init_zero);
            return;
        }
    }
#endif
    tile_generic(out, ldo, A, lda, a_t, Bp, m0, mr, n0, nr, k0, kc, init_bias, init_zero);
}

// The packed B block, kept between calls so a step allocates nothing (one per float type).
template <typename F>
static std::vector<F>& packed_b_buffer() {
    static std::vector<F> buf;
    return buf;
}

}  // namespace cpu_gemm

// out (M, N) = init + A (M, K) B (K, N), with the layouts and order of the header comment.
template <typename F>
static void gemm_blocked(F* out, const F* A, int lda, bool a_t, const F* B, int ldb, bool b_t, int M, int K, int N,
                         const F* bias, bool accumulate) {
    using namespace cpu_gemm;
    if (M <= 0 || N <= 0) return;
    std::vector<F>& Bp = packed_b_buffer<F>();
    size_t need = (size_t)KC * ((std::min(N, NC) + NR - 1) / NR) * NR;
    if (Bp.size() < need) Bp.resize(need);
    if (K == 0) {  // no products: out is its init
        if (!accumulate)
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) out[(size_t)m * N + n] = bias ? bias[n] : F(0);
        return;
    }
    for (int n0 = 0; n0 < N; n0 += NC) {
        int nc = std::min(NC, N - n0), panels = (nc + NR - 1) / NR, mtiles = (M + MR - 1) / MR;
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = std::min(KC, K - k0);
            pack_b(Bp.data(), B, ldb, b_t, k0, kc, n0, nc);
            bool first = k0 == 0 && !accumulate;
            const F* init_bias = first ? bias : nullptr;
            bool init_zero = first && !bias;
#pragma omp parallel for schedule(static)
            for (int t = 0; t < mtiles * panels; t++) {
                int mt = t / panels, p = t % panels, m0 = mt * MR, nn0 = n0 + p * NR;
                tile(out, N, A, lda, a_t, Bp.data() + (size_t)p * kc * NR, m0, std::min(MR, M - m0), nn0,
                     std::min(NR, N - nn0), k0, kc, init_bias ? init_bias : nullptr, init_zero);
            }
        }
    }
}
