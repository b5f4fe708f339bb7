// dev/bench/gemm_bench.cpp: GFLOP/s of the CPU trainer's matmul (cpu/gemm.h) alone, for make bench.
//
// usage: build/gemm_bench M K N [b_t]   out (M x N) = A (M x K) @ B, B stored (K x N), or (N x K) when b_t is 1
// Prints the best of five timed calls (after one warm-up) as 2 M K N / seconds. Uses the OpenMP default threads.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include <chrono>
#include <vector>

#include "../../cpu/gemm.h"

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s M K N [b_t]\n", argv[0]);
        return 2;
    }
    int M = atoi(argv[1]), K = atoi(argv[2]), N = atoi(argv[3]);
    bool b_t = argc > 4 && atoi(argv[4]) != 0;
    if (M <= 0 || K <= 0 || N <= 0) {
        fprintf(stderr, "error: M, K and N must be positive\n");
        return 2;
    }
    std::vector<float> A((size_t)M * K), B((size_t)K * N), C((size_t)M * N);
    for (size_t i = 0; i < A.size(); i++) A[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < B.size(); i++) B[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    double best = 1e30;
    for (int r = 0; r < 6; r++) {
        auto t0 = std::chrono::steady_clock::now();
        gemm_blocked(C.data(), A.data(), K, false, B.data(), b_t ? K : N, b_t, M, K, N, (const float*)nullptr, false);
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r > 0 && s < best) best = s;
    }
    printf("%.1f\n", 2.0 * M * K * N / best / 1e9);
    return 0;
}
