// dev/numerics_check.cpp: sk_exp, sk_log and sk_tanh (common/numerics.h) over every one of the 2^32 floats.
//
// What it is: for each function, compares sk_f(x) with the correctly rounded float of libm's double result and counts
// the inputs where they differ and by how many ulps (the float-to-float distance). libm's double exp/log/tanh are
// within an ulp of double, so their rounding to float is the correctly rounded result except where the true value
// lies within about 2^-52 of a float rounding boundary.
// Build and run: make build/numerics_check && ./build/numerics_check      (about a minute per function on 2 cores)
#include <omp.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include "../common/numerics.h"

static int64_t ordered(float f) {  // floats in order as integers, so |ordered(a) - ordered(b)| counts ulps
    int32_t i;
    memcpy(&i, &f, 4);
    return i < 0 ? (int64_t)INT32_MIN - i : i;
}

template <typename Ours, typename Ref>
static void check(const char* name, Ours ours, Ref ref) {
    int64_t differ = 0, max_ulp = 0, nan_mismatch = 0;
    uint32_t worst = 0;
#pragma omp parallel for schedule(static) reduction(+ : differ, nan_mismatch)
    for (int64_t u = 0; u < (1ll << 32); u++) {
        uint32_t bits = (uint32_t)u;
        float x;
        memcpy(&x, &bits, 4);
        float a = ours(x), b = (float)ref((double)x);
        if (isnan(a) || isnan(b)) {
            nan_mismatch += isnan(a) != isnan(b);
            continue;
        }
        if (memcmp(&a, &b, 4) == 0) continue;
        differ++;
        int64_t d = ordered(a) - ordered(b);
        d = d < 0 ? -d : d;
#pragma omp critical
        if (d > max_ulp) {
            max_ulp = d;
            worst = bits;
        }
    }
    float w;
    memcpy(&w, &worst, 4);
    printf("%-8s  inputs differing from the correctly rounded result: %lld of 2^32 | largest difference: %lld ulp "
           "(x = %.9g) | NaN mismatches: %lld\n", name, (long long)differ, (long long)max_ulp, w, (long long)nan_mismatch);
}

int main() {
    printf("common/numerics.h float functions against libm's double, rounded to float, over all 2^32 inputs (%d threads)\n",
           omp_get_max_threads());
    check("sk_exp", [](float x) { return sk_exp(x); }, [](double x) { return exp(x); });
    check("sk_log", [](float x) { return sk_log(x); }, [](double x) { return log(x); });
    check("sk_tanh", [](float x) { return sk_tanh(x); }, [](double x) { return tanh(x); });
    // libm's own float functions on the same scale, for comparison
    check("expf", [](float x) { return expf(x); }, [](double x) { return exp(x); });
    check("logf", [](float x) { return logf(x); }, [](double x) { return log(x); });
    check("tanhf", [](float x) { return tanhf(x); }, [](double x) { return tanh(x); });
    return 0;
}
