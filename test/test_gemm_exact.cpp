// test/test_gemm_exact.cpp: the exact tiled GPU matmul (kernels/gemm_exact.cuh), run on the CPU.
//
// What it is: gemm_exact_tiled_emulated runs the kernel's own SK_HD functions (slice loads into the shared tiles,
// micro-tile updates) block by block, thread by thread, slice by slice, and must give gemm_by_element's bits (memcmp),
// which test_layers.cpp holds to the sequential fma sum. Float and double, every a_t / b_t, bias / none / accumulate,
// shapes that leave partial blocks, micro-tiles and k slices (and 1), values with signed zeros.
// What it is not: a run of the kernel itself; dev/cuda/matmul.cu checks that on a GPU, against the CPU, bit for bit.
#include "test_helpers.h"

#include "../kernels/gemm_exact.cuh"

// The signed zeros are the trap: a padded k fma'd with zeros would turn an accumulator of -0.0 into +0.0. So a fifth
// of the values are +-0, and element (M-1, N-1) sums only -0.0 products (row M-1 of A is -0.0, column N-1 of B is
// positive) onto an init of -0.0, so its exact result is -0.0.
template <typename F>
static void check_gemm_exact_tiled(std::mt19937_64& rng) {
    std::normal_distribution<double> nd(0.0, 1.0);
    auto draw = [&](size_t n) {
        std::vector<F> v(n);
        for (F& x : v) x = rng() % 5 == 0 ? (rng() % 2 ? F(-0.0) : F(0)) : (F)nd(rng);
        return v;
    };
    int cases = 0;
    for (int M : {1, 7, 130}) for (int N : {1, 20, 128, 129}) for (int K : {1, 16, 37})
    for (int layout = 0; layout < 4; layout++) for (int init = 0; init < 3; init++) {
        bool a_t = layout & 1, b_t = layout & 2;
        int lda = a_t ? M : K, ldb = b_t ? K : N;
        std::vector<F> A = draw((size_t)M * K), Bm = draw((size_t)K * N), bias = draw(N), start = draw((size_t)M * N);
        for (int k = 0; k < K; k++) {
            A[a_t ? (size_t)k * lda + M - 1 : (size_t)(M - 1) * lda + k] = F(-0.0);
            F& b = Bm[b_t ? (size_t)(N - 1) * ldb + k : (size_t)k * ldb + N - 1];
            b = std::fabs(b) + F(0.5);
        }
        bias[N - 1] = start.back() = F(-0.0);
        const F* b = init == 1 ? bias.data() : nullptr;
        std::vector<F> tiled = start, by_element = start;
        gemm_exact_tiled_emulated(tiled.data(), A.data(), lda, a_t, Bm.data(), ldb, b_t, M, K, N, b, init == 2);
        gemm_by_element(by_element.data(), A.data(), lda, a_t, Bm.data(), ldb, b_t, M, K, N, b, init == 2);
        INFO("M " << M << " N " << N << " K " << K << " a_t " << a_t << " b_t " << b_t << " init " << init);
        REQUIRE(std::signbit(by_element.back()) == (init != 0));  // the -0.0 element is there to be kept
        REQUIRE(memcmp(tiled.data(), by_element.data(), tiled.size() * sizeof(F)) == 0);
        cases++;
    }
    CHECK(cases == 3 * 4 * 3 * 4 * 3);
}

TEST_CASE("the exact tiled GPU matmul, emulated on the CPU, gives gemm_by_element's bits", "[layers]") {
    std::mt19937_64 rng(22);
    check_gemm_exact_tiled<float>(rng);
    check_gemm_exact_tiled<double>(rng);
}
