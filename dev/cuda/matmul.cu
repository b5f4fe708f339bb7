/*
dev/cuda/matmul.cu: the matmul on the GPU, version by version, each checked against the CPU.

    out[m,n] = init[m,n] + sum_{k=0..K-1} A(m,k) * B(k,n)      (k in increasing order, one fma per term)
    A(m,k) = A[m*lda + k] or A[k*lda + m] (a_t),  B(k,n) = B[k*ldb + n] or B[n*ldb + k] (b_t),  init = out, bias or 0

CPU twin: gemm_by_element / gemm_blocked (train_gpt_cpu.cpp, cpu/gemm.h). The reference here is that formula in float
(sk_fma, k in order) on a sample of 4096 output elements and the four corners (all of them would take the CPU
minutes). Versions 1 and 2 are exact: they must equal it bit for bit there, and version 2 must equal version 1 on
every element. Version 3 sums in its own order and must match to a relative L2 error of 1e-5 on the sample. Every
multiply-add of versions 1 and 2 is an explicit fmaf, so their bits do not depend on nvcc's -fmad.

  version 1  one thread per output element: gemm_by_element's body, the exact GPU engine's first matmul (version 2
             replaced it). Every thread reads its row of A and its column of B from global memory (through the
             caches).
  version 2  kernels/gemm_exact.cuh, the exact GPU engine's matmul (gemm_exact_tiled): a block of 256 threads owns a
             128 x 128 tile of out and walks k in slices of 16, each slice of A and B loaded once, coalesced, into
             shared memory (the next slice's loads in flight while this one's fmas run); every thread keeps an 8 x 8
             micro-tile of out in registers. The same sums in the same order as version 1: the same bits.
  version 3  cuBLAS (cublasGemmEx, fp32 in and out, CUBLAS_COMPUTE_32F: no TF32), what exactness costs. Not exact.
             libcublas.so is loaded when the program runs: where it is missing (a machine with only a GPU driver),
             version 3 says so and the others still run.

Shapes: GPT-2 124M's largest products at B T = 16 x 1024 (BT = 16384), C = 768, Vp = 50304:
  qkv          out (BT, 3C) = inp (BT, C) @ W (3C, C)^T + bias    M 16384  K 768    N 2304   b_t, bias
  classifier   logits (BT, Vp) = x (BT, C) @ wte (Vp, C)^T          M 16384  K 768    N 50304  b_t
  qkv-dinp     dinp (BT, C) += dout (BT, 3C) @ W (3C, C)            M 16384  K 2304   N 768    accumulate
  qkv-dweight  dW (3C, C) += dout (BT, 3C)^T @ inp (BT, C)          M 2304   K 16384  N 768    a_t, accumulate

Build: make dev-cuda (nvcc, sm_80 and sm_90). Run on a GPU:
    build/dev_cuda/matmul [--version 0|1|2|3] [--shape all|qkv|classifier|qkv-dinp|qkv-dweight]
--version 0 and --shape all (the defaults) run everything. It prints each version's check, its time and TFLOP/s
(2 M N K flops) and the share of this GPU's fp32 roofline that is (common/roofline.h; at least A and B read and the
output written once, and read too when the product accumulates), and exits 1 when a version fails its check.
*/
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "../../kernels/gemm_exact.cuh"
#include "ladder.cuh"


#define SAMPLES 4096     // random output elements checked against the CPU, besides the four corners
#define TOLERANCE 1e-5   // version 3: relative L2 error on the sampled elements

struct Shape {
    const char* name;
    int M, K, N;
    bool a_t, b_t, bias, accumulate;
};
static const Shape shapes[] = {
    {"qkv", 16384, 768, 2304, false, true, true, false},
    {"classifier", 16384, 768, 50304, false, true, false, false},
    {"qkv-dinp", 16384, 2304, 768, false, false, false, true},
    {"qkv-dweight", 2304, 16384, 768, true, false, false, true},
};
static const int num_shapes = sizeof shapes / sizeof shapes[0];

// splitmix64 of (seed, i): the same numbers on every machine
static uint64_t hash64(uint64_t seed, uint64_t i) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// uniform in [-1, 1), 24 random bits (exact in a float)
static float uniform(uint64_t seed, uint64_t i) { return (float)((hash64(seed, i) >> 40) * 0x1p-23 - 1.0); }

// ---------------------------------------------------------------------------------------------------------------
// the formula for one element, from its init: the CPU reference (on the sampled elements) and version 1's body

__host__ __device__ static float gemm_element(float acc, const float* A, int lda, bool a_t, const float* B, int ldb,
                                              bool b_t, int K, size_t m, size_t n) {
    for (int k = 0; k < K; k++) {
        float a = a_t ? A[(size_t)k * lda + m] : A[m * lda + k];
        float b = b_t ? B[n * ldb + k] : B[(size_t)k * ldb + n];
        acc = sk_fma(a, b, acc);
    }
    return acc;
}

// ---------------------------------------------------------------------------------------------------------------
// version 1: one thread per output element i = m N + n

__global__ void matmul1(GemmExactArgs<float> g) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)g.M * g.N) return;
    size_t m = i / g.N, n = i % g.N;
    float init = g.accumulate ? g.out[i] : g.bias ? g.bias[n] : 0.0f;
    g.out[i] = gemm_element(init, g.A, g.lda, g.a_t, g.B, g.ldb, g.b_t, g.K, m, n);
}

// ---------------------------------------------------------------------------------------------------------------
// version 3: cuBLAS. It is column-major, so it computes out^T (N x M, leading dimension N) = op(B) op(A), where B as
// stored is B^T (N x K) column-major when not b_t, and A is A^T (K x M) when not a_t. The bias is copied into out
// first and added with beta = 1.

// cublasGemmEx's C signature (cublas_api.h also declares a C++ overload, so decltype cannot name it)
typedef cublasStatus_t (*GemmExFn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                                   const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                                   cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
struct Cublas {
    cublasHandle_t handle = nullptr;  // null: not loaded, and `missing` says why
    GemmExFn gemm_ex = nullptr;
    char missing[256] = "";
};

// cuBLAS from the CUDA toolkit's shared library, loaded now
static void cublas_load(Cublas* cb) {
    char name[32];
    snprintf(name, sizeof name, "libcublas.so.%d", CUBLAS_VER_MAJOR);
    void* lib = dlopen(name, RTLD_NOW);
    if (!lib) {
        snprintf(cb->missing, sizeof cb->missing, "%s", dlerror());
        return;
    }
    auto create = (decltype(&cublasCreate))dlsym(lib, "cublasCreate_v2");
    cb->gemm_ex = (GemmExFn)dlsym(lib, "cublasGemmEx");
    if (!create || !cb->gemm_ex || create(&cb->handle) != CUBLAS_STATUS_SUCCESS) {
        cb->handle = nullptr;
        snprintf(cb->missing, sizeof cb->missing, "%s has no cublasCreate_v2 or cublasGemmEx, or it failed", name);
    }
}

__global__ void broadcast_rows(float* out, const float* bias, int M, int N) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < (size_t)M * N) out[i] = bias[i % N];
}

static void matmul3(const Cublas& cb, const GemmExactArgs<float>& g) {
    bool with_bias = g.bias && !g.accumulate;  // init = out when accumulating, as in the formula
    float alpha = 1.0f, beta = g.accumulate || with_bias ? 1.0f : 0.0f;
    if (with_bias) {
        size_t n = (size_t)g.M * g.N;
        broadcast_rows<<<(unsigned)((n + 255) / 256), 256>>>(g.out, g.bias, g.M, g.N);
        CUDA(cudaGetLastError());
    }
    cublasStatus_t st = cb.gemm_ex(cb.handle, g.b_t ? CUBLAS_OP_T : CUBLAS_OP_N, g.a_t ? CUBLAS_OP_T : CUBLAS_OP_N, g.N,
                                   g.M, g.K, &alpha, g.B, CUDA_R_32F, g.ldb, g.A, CUDA_R_32F, g.lda, &beta, g.out,
                                   CUDA_R_32F, g.N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        fail("cublasGemmEx failed with status %d (M %d K %d N %d)", (int)st, g.M, g.K, g.N);
}

// ---------------------------------------------------------------------------------------------------------------

static void run_version(int version, const GemmExactArgs<float>& g, const Cublas& cb) {
    if (version == 1) {
        size_t n = (size_t)g.M * g.N;
        matmul1<<<(unsigned)((n + 255) / 256), 256>>>(g);
        CUDA(cudaGetLastError());
    } else if (version == 2) {
        gemm_exact_tiled(g.out, g.A, g.lda, g.a_t, g.B, g.ldb, g.b_t, g.M, g.K, g.N, g.bias, g.accumulate);
    } else {
        matmul3(cb, g);
    }
}

// Runs every requested version on one shape; returns the number that failed their check.
static int run_shape(const Shape& s, int version, const Cublas& cb, const Roofline& roof) {
    int lda = s.a_t ? s.M : s.K, ldb = s.b_t ? s.K : s.N;
    size_t n_a = (size_t)s.M * s.K, n_b = (size_t)s.K * s.N, n_out = (size_t)s.M * s.N;
    std::vector<float> A(n_a), B(n_b), bias(s.N), start(s.accumulate ? n_out : 0), got(n_out), exact;
    for (size_t i = 0; i < n_a; i++) A[i] = uniform(1, i);
    for (size_t i = 0; i < n_b; i++) B[i] = uniform(2, i);
    for (int i = 0; i < s.N; i++) bias[i] = uniform(3, i);
    for (size_t i = 0; i < start.size(); i++) start[i] = uniform(4, i);

    std::vector<size_t> sample = {0, (size_t)s.N - 1, n_out - s.N, n_out - 1};  // the corners
    for (int i = 0; i < SAMPLES; i++) sample.push_back(hash64(5, i) % n_out);
    std::vector<float> ref(sample.size());
    for (size_t j = 0; j < sample.size(); j++) {
        size_t i = sample[j], m = i / s.N, n = i % s.N;
        float init = s.accumulate ? start[i] : s.bias ? bias[n] : 0.0f;
        ref[j] = gemm_element(init, A.data(), lda, s.a_t, B.data(), ldb, s.b_t, s.K, m, n);
    }

    float *d_a, *d_b, *d_bias, *d_out;
    CUDA(cudaMalloc(&d_a, n_a * sizeof(float)));
    CUDA(cudaMalloc(&d_b, n_b * sizeof(float)));
    CUDA(cudaMalloc(&d_bias, s.N * sizeof(float)));
    CUDA(cudaMalloc(&d_out, n_out * sizeof(float)));
    CUDA(cudaMemcpy(d_a, A.data(), n_a * sizeof(float), cudaMemcpyHostToDevice));
    CUDA(cudaMemcpy(d_b, B.data(), n_b * sizeof(float), cudaMemcpyHostToDevice));
    CUDA(cudaMemcpy(d_bias, bias.data(), s.N * sizeof(float), cudaMemcpyHostToDevice));
    GemmExactArgs<float> g = {d_out, d_a, lda, s.a_t, d_b, ldb, s.b_t, s.M, s.K, s.N, s.bias ? d_bias : nullptr,
                              s.accumulate};
    double flops = 2.0 * s.M * s.N * s.K;
    double bytes = 4.0 * ((double)s.M * s.K + (double)s.K * s.N + (s.accumulate ? 2.0 : 1.0) * s.M * s.N +
                          (s.bias ? s.N : 0));
    printf("%s: M %d K %d N %d%s%s%s%s\n", s.name, s.M, s.K, s.N, s.a_t ? ", a_t" : "", s.b_t ? ", b_t" : "",
           s.bias ? ", bias" : "", s.accumulate ? ", accumulate" : "");

    int failures = 0;
    for (int ver = 1; ver <= 3; ver++) {
        if (version && ver != version) continue;
        if (ver == 3 && !cb.handle) {
            printf("  version 3: skipped (cuBLAS: %s)\n", cb.missing);
            continue;
        }
        // the checked run: out starts from `start` (accumulate) or from NaNs, so an element never written shows
        if (s.accumulate) CUDA(cudaMemcpy(d_out, start.data(), n_out * sizeof(float), cudaMemcpyHostToDevice));
        else CUDA(cudaMemset(d_out, 0xff, n_out * sizeof(float)));
        run_version(ver, g, cb);
        CUDA(cudaDeviceSynchronize());
        CUDA(cudaMemcpy(got.data(), d_out, n_out * sizeof(float), cudaMemcpyDeviceToHost));
        char check[160];
        bool ok;
        if (ver <= 2) {
            size_t differ = 0;
            for (size_t j = 0; j < sample.size(); j++) differ += memcmp(&got[sample[j]], &ref[j], sizeof(float)) != 0;
            ok = differ == 0;
            int n = snprintf(check, sizeof check, "bit-exact on %zu of %zu sampled elements", sample.size() - differ,
                             sample.size());
            if (ver == 1) exact = got;
            else if (!exact.empty()) {
                bool same = memcmp(got.data(), exact.data(), n_out * sizeof(float)) == 0;
                ok = ok && same;
                snprintf(check + n, sizeof check - n, ", %s version 1 on all %zu", same ? "equal to" : "DIFFERENT from",
                         n_out);
            }
        } else {
            double err2 = 0, ref2 = 0;
            for (size_t j = 0; j < sample.size(); j++) {
                double d = (double)got[sample[j]] - ref[j];
                err2 += d * d;
                ref2 += (double)ref[j] * ref[j];
            }
            double rel_l2 = sqrt(err2 / fmax(ref2, 1e-60));
            ok = rel_l2 <= TOLERANCE;  // false for a NaN
            snprintf(check, sizeof check, "rel L2 %.2e on the sampled elements (allowed %.0e)", rel_l2, TOLERANCE);
        }
        failures += !ok;

        // timing: as many repetitions as fit in about a second (1 to 20); accumulate keeps adding, which is harmless
        float once = time_ms(1, [&] { run_version(ver, g, cb); });
        int reps = (int)fmin(20, fmax(1, 1000 / fmax(once, 1e-3)));
        float ms = time_ms(reps, [&] { run_version(ver, g, cb); });
        printf("  version %d: %s  %s  %.3f ms  %.2f TFLOP/s%s\n", ver, ok ? "ok  " : "FAIL", check, ms,
               flops / (ms * 1e-3) / 1e12, fp32_roofline_share(roof, flops, bytes, ms));
    }
    cudaFree(d_a);
    cudaFree(d_b);
    cudaFree(d_bias);
    cudaFree(d_out);
    return failures;
}

int main(int argc, char** argv) {
    int version = 0;
    const char* shape = "all";
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value (see the comment at the top of dev/cuda/matmul.cu)\n", a);
            return 2;
        }
        const char* v = argv[++i];
        if (!strcmp(a, "--version")) version = atoi(v);
        else if (!strcmp(a, "--shape")) shape = v;
        else {
            fprintf(stderr, "error: unknown flag %s (see the comment at the top of dev/cuda/matmul.cu)\n", a);
            return 2;
        }
    }
    bool known = !strcmp(shape, "all");
    for (int i = 0; i < num_shapes; i++) known = known || !strcmp(shape, shapes[i].name);
    if (version < 0 || version > 3 || !known) {
        fprintf(stderr, "error: need --version 0..3 and --shape all, qkv, classifier, qkv-dinp or qkv-dweight\n");
        return 2;
    }
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        fprintf(stderr, "error: no CUDA GPU is visible: these kernels need one (sm_80 or newer)\n");
        return 1;
    }
    Roofline roof = gpu_roofline();
    Cublas cb;
    if (!version || version == 3) cublas_load(&cb);
    int failures = 0;
    for (int i = 0; i < num_shapes; i++)
        if (!strcmp(shape, "all") || !strcmp(shape, shapes[i].name))
            failures += run_shape(shapes[i], version, cb, roof);
    return failures ? 1 : 0;
}
