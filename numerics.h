// numerics.h: the only doorway from sinkscope's model math to transcendental functions and fused multiply-add.
//
// What it is: one overload per function for float and double, usable from C++ and (later) from CUDA device code.
// Why: the GPU trainer's exact mode must reproduce the CPU reference bit for bit. Every exp/log/tanh/sqrt/fma of the
// model goes through these names, so swapping the libm calls for portable implementations shared with CUDA is a change
// to this file alone. fma() is correctly rounded by IEEE 754, so it is bit-identical on every machine; expf/logf/tanhf
// are not (libm and CUDA differ by an ulp), which is what a later exact mode will replace here.
// What it is not: a math library. Build flags matter too: the Makefile passes -ffp-contract=off so the compiler never
// fuses a multiply and an add on its own; every fused operation in the model is an explicit sk_fma.
#pragma once
#include <math.h>

#ifdef __CUDACC__
#define SK_HD __host__ __device__
#else
#define SK_HD
#endif

SK_HD inline float sk_exp(float x) { return expf(x); }
SK_HD inline double sk_exp(double x) { return exp(x); }
SK_HD inline float sk_log(float x) { return logf(x); }
SK_HD inline double sk_log(double x) { return log(x); }
SK_HD inline float sk_tanh(float x) { return tanhf(x); }
SK_HD inline double sk_tanh(double x) { return tanh(x); }
SK_HD inline float sk_sqrt(float x) { return sqrtf(x); }
SK_HD inline double sk_sqrt(double x) { return sqrt(x); }
SK_HD inline float sk_fma(float a, float b, float c) { return fmaf(a, b, c); }
SK_HD inline double sk_fma(double a, double b, double c) { return fma(a, b, c); }

// The softmax of one row, in the project's fixed order: m = max; e_j = exp(s_j - m); sum over j in order; p_j =
// mass * e_j / sum. Attention rows (attention_variants.cuh) and the loss (cross-entropy over the vocabulary) both use
// it, so there is one softmax to reproduce on the GPU. mass = 1 gives exactly e_j / sum.
template <typename F>
SK_HD inline void sk_softmax_row(const F* s, F* p, int n, F mass) {
    F m = s[0];
    for (int j = 1; j < n; j++) m = s[j] > m ? s[j] : m;
    F sum = 0;
    for (int j = 0; j < n; j++) {
        p[j] = sk_exp(s[j] - m);
        sum += p[j];
    }
    for (int j = 0; j < n; j++) p[j] = mass * p[j] / sum;
}
