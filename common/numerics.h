// numerics.h: the only doorway from sinkscope's model math to transcendental functions and fused multiply-add.
//
// What it is: one overload per function for float and double, usable from C++ and from CUDA device code (SK_HD).
// Why: the GPU trainer (train_gpt.cu) must reproduce the CPU reference bit for bit. IEEE 754 makes +, -, *, /, sqrt
// and fma correctly rounded, hence identical on every machine; libm's expf/logf/tanhf and CUDA's are not (they differ
// in the last bit now and then). So the float versions here, the ones the trainers use, are built from IEEE operations
// alone: each evaluates its function in double precision (range reduction and a polynomial, relative error below
// 2^-50) and rounds the result to float once. On every one of the 2^32 float inputs they return libm's double result
// rounded to float, that is the correctly rounded value (dev/numerics_check.cpp measures it: make
// build/numerics_check && ./build/numerics_check; glibc's own expf, logf and tanhf differ from it on 170,648,
// 416,909 and 118,674,314 inputs). The tests check a sample. The double versions stay libm's: only the tests (finite
// differences) and host-only code (sampling, metrics) use them.
// What it is not: a math library. Build flags matter too: the Makefile passes -ffp-contract=off to g++ and
// -fmad=false to nvcc, so no compiler fuses a multiply and an add on its own; every fused operation is an explicit
// sk_fma.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define SK_HD __host__ __device__
#else
#define SK_HD
#endif

// x with its mantissa rounded to `bits` bits (of float's 23), to nearest, ties to even, as IEEE rounding into a
// narrower format does: 10 bits is tf32's mantissa, 7 bf16's. The exponent range stays float's, so a value rounded
// past the largest finite float of that mantissa becomes infinite; NaN and infinities stay as they are. The CPU's fast
// engine rounds the matmul inputs with it at --precision tf32 and bf16 (train_gpt_cpu.cpp, gemm).
inline float round_mantissa(float x, int bits) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if (bits >= 23 || (u & 0x7f800000u) == 0x7f800000u) return x;
    int drop = 23 - bits;
    uint32_t half = (1u << (drop - 1)) - 1 + ((u >> drop) & 1u);  // below one half, or at it for an odd last bit
    u = (u + half) & ~((1u << drop) - 1);
    memcpy(&x, &u, 4);
    return x;
}

// bfloat16 as stored: a float's upper 16 bits (sign, the 8 exponent bits, 7 mantissa bits), the layout of CUDA's
// __nv_bfloat16, so cuBLAS reads an array of them as CUDA_R_16BF. From a float: rounded to nearest, ties to even, the
// upper half of round_mantissa(x, 7) (a NaN stays a NaN: its top mantissa bit is set); to a float: exact. The fast
// engine's matmuls at --precision bf16 read their operands in it (train_gpt_cpu.cpp: the weights' bf16 copy).
struct bf16 {
    uint16_t bits;
};
SK_HD inline bf16 bf16_from_float(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return bf16{(uint16_t)((u >> 16) | ((u & 0x007fffffu) ? 0x0040u : 0u))};
    u += 0x7fffu + ((u >> 16) & 1u);  // below one half of the last kept bit, or at it for an odd last bit
    return bf16{(uint16_t)(u >> 16)};
}
SK_HD inline float float_from_bf16(bf16 b) {
    uint32_t u = (uint32_t)b.bits << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// *p = x in p's format: a float or double as it is, a bf16 rounded (bf16_from_float)
SK_HD inline void sk_store(float* p, float x) { *p = x; }
SK_HD inline void sk_store(double* p, double x) { *p = x; }
SK_HD inline void sk_store(bf16* p, float x) { *p = bf16_from_float(x); }

SK_HD inline float sk_sqrt(float x) { return sqrtf(x); }
SK_HD inline double sk_sqrt(double x) { return sqrt(x); }
SK_HD inline float sk_fma(float a, float b, float c) { return fmaf(a, b, c); }
SK_HD inline double sk_fma(double a, double b, double c) { return fma(a, b, c); }

// The same bits as another type (a double's bits as a uint64_t and back). memcpy is exact and, for 8 bytes, free on
// the host and in CUDA device code alike.
template <typename To, typename From>
SK_HD inline To sk_bit_cast(From x) {
    static_assert(sizeof(To) == sizeof(From), "sk_bit_cast needs types of one size");
    To y;
    memcpy(&y, &x, sizeof y);
    return y;
}

// 2^(j/32) for j = 0..31, each the double nearest to it (computed to 60 digits). The host and the device read the same
// values: a static array on the host, constant memory on the GPU.
#define SK_EXP2_FRACTIONS                                                                                               \
    {1.0, 1.0218971486541166, 1.0442737824274138, 1.0671404006768237, 1.0905077326652577, 1.1143867425958924,         \
     1.1387886347566916, 1.1637248587775775, 1.189207115002721, 1.215247359980469, 1.241857812073484,                \
     1.2690509571917332, 1.2968395546510096, 1.3252366431597413, 1.3542555469368927, 1.383909881963832,              \
     1.4142135623730951, 1.4451808069770467, 1.4768261459394993, 1.5091644275934228, 1.5422108254079407,             \
     1.5759808451078865, 1.6104903319492543, 1.645755478153965, 1.681792830507429, 1.718619298122478,                \
     1.7562521603732995, 1.7947090750031072, 1.8340080864093424, 1.8741676341103, 1.9152065613971474,                \
     1.9571441241754002}
#ifdef __CUDACC__
__constant__ double sk_exp2_fractions_device[32] = SK_EXP2_FRACTIONS;
#endif
static const double sk_exp2_fractions_host[32] = SK_EXP2_FRACTIONS;
SK_HD inline double sk_exp2_fraction(int j) {
#ifdef __CUDA_ARCH__
    return sk_exp2_fractions_device[j];
#else
    return sk_exp2_fractions_host[j];
#endif
}

// e^x in double for x in [-104, 89] (every float argument whose exp is neither 0 nor inf as a float), relative
// error below 2^-51: x = (32 m + j) ln2/32 + r with 32 m + j = the nearest integer to 32 x / ln2 and |r| <= ln2/64
// (Cody-Waite with a two-part ln2/32; exact, since 32 m + j has at most 13 bits and x is a float), so
// e^x = 2^m 2^(j/32) e^r, with e^r by its Taylor series to r^6 (Horner, fma; the remainder is below 2^-58), 2^(j/32)
// from the table and 2^m built from its bits (m + 1023 is a normal exponent).
SK_HD inline double sk_exp_core(double x) {
    const double inv_ln2_32 = 46.16624130844683;  // 32 / ln2
    const double ln2_32_hi = 6.93147180369123816490e-01 / 32, ln2_32_lo = 1.90821492927058770002e-10 / 32;
    const double round_magic = 6755399441055744.0;  // 1.5 * 2^52: t = 32 x / ln2 + magic holds n in its low bits
    double t = sk_fma(x, inv_ln2_32, round_magic);
    double nd = t - round_magic;
    double r = sk_fma(-nd, ln2_32_hi, x);
    r = sk_fma(-nd, ln2_32_lo, r);
    double p = 1.0 / 720.0;
    p = sk_fma(p, r, 1.0 / 120.0);
    p = sk_fma(p, r, 1.0 / 24.0);
    p = sk_fma(p, r, 1.0 / 6.0);
    p = sk_fma(p, r, 0.5);
    p = sk_fma(p, r, 1.0);
    p = sk_fma(p, r, 1.0);
    int64_t n = (int64_t)(sk_bit_cast<uint64_t>(t) - sk_bit_cast<uint64_t>(round_magic));  // t - magic = n exactly
    int j = (int)(n & 31);
    int64_t m = (n - j) / 32;
    return sk_exp2_fraction(j) * p * sk_bit_cast<double>((uint64_t)(m + 1023) << 52);
}

// e^x: NaN stays NaN; below -104 the float result is +0, above 89 it is +inf (the double value rounds there too).
SK_HD inline float sk_exp(float x) {
    float xc = x > -104.0f ? (x < 89.0f ? x : 89.0f) : -104.0f;  // NaN -> -104: a finite argument in every lane
    float e = (float)sk_exp_core((double)xc);
    return x != x ? x : x < -104.0f ? 0.0f : x > 89.0f ? INFINITY : e;
}
inline double sk_exp(double x) { return exp(x); }  // host only: CUDA's exp differs from glibc's

// ln x: x = m 2^e with m in [sqrt(1/2), sqrt(2)) (from the bits of x as a double: float denormals are normal there),
// ln x = e ln2 + 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, atanh by its series to s^21 (remainder below 2^-55).
// No cancellation: e = 0 whenever x is near 1. x < 0 -> NaN, NaN -> itself, 0 -> -inf, inf -> inf.
SK_HD inline float sk_log(float x) {
    if (!(x > 0.0f)) return x == 0.0f ? -INFINITY : x < 0.0f ? NAN : x;  // a NaN argument is returned as it is
    if (x == INFINITY) return x;
    uint64_t bits = sk_bit_cast<uint64_t>((double)x);
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    double m = sk_bit_cast<double>((bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);  // [1, 2)
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e += 1;
    }
    double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double p = 1.0 / 21;
    for (int n = 19; n >= 1; n -= 2) p = sk_fma(p, s2, 1.0 / n);
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double log_m = 2.0 * s * p;
    return (float)sk_fma((double)e, ln2_hi, sk_fma((double)e, ln2_lo, log_m));
}
inline double sk_log(double x) { return log(x); }  // host only: CUDA's log differs from glibc's

// tanh x, odd: for |x| >= 0.5, 1 - 2 / (e^{2|x|} + 1); below, u / (u + 2) with u = e^{2x} - 1 by its Taylor series to
// (2x)^18 (|2x| < 1: remainder below 2^-55), so small |x| keeps its relative accuracy. |x| > 10: +-1 as a float.
SK_HD inline float sk_tanh(float x) {
    if (!(x == x)) return x;
    double a = fabs((double)x), t;
    if (a > 10.0) {
        t = 1.0;
    } else if (a >= 0.5) {
        t = 1.0 - 2.0 / (sk_exp_core(2.0 * a) + 1.0);
    } else {
        const double inv_fact[18] = {  // 1/n! for n = 18 down to 1
            1.0 / 6402373705728000.0, 1.0 / 355687428096000.0, 1.0 / 20922789888000.0, 1.0 / 1307674368000.0,
            1.0 / 87178291200.0, 1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
            1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0};
        double y = 2.0 * a, u = inv_fact[0];
        for (int i = 1; i < 18; i++) u = sk_fma(u, y, inv_fact[i]);
        u *= y;
        t = u / (u + 2.0);
    }
    return (float)copysign(t, (double)x);
}
inline double sk_tanh(double x) { return tanh(x); }  // host only: CUDA's tanh differs from glibc's

// ----------------------------------------------------------------------------------------------------------------
// Many lanes at a time: y[i] = sk_exp(x[i]) for i < n, bit for bit. On a CPU with AVX-512 sixteen floats go through
// the same double-precision steps as sk_exp_core, eight lanes per vector operation (each an IEEE operation, rounded
// as the scalar one is: vfmadd, vsub, vmul; the table by index), then the same single rounding to float and the same
// handling of NaN and of the clamped ranges. Elsewhere (other CPUs, the GPU) it is the scalar loop.
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
#include <immintrin.h>

// sk_exp_core on eight doubles
static inline __m512d sk_exp_core_x8(__m512d x) {
    const __m512d inv_ln2_32 = _mm512_set1_pd(46.16624130844683), magic = _mm512_set1_pd(6755399441055744.0);
    const __m512d ln2_32_hi = _mm512_set1_pd(6.93147180369123816490e-01 / 32);
    const __m512d ln2_32_lo = _mm512_set1_pd(1.90821492927058770002e-10 / 32);
    __m512d t = _mm512_fmadd_pd(x, inv_ln2_32, magic);
    __m512d nd = _mm512_sub_pd(t, magic);
    __m512d r = _mm512_fnmadd_pd(nd, ln2_32_hi, x);  // fma(-nd, hi, x): -nd is exact, so the same rounding
    r = _mm512_fnmadd_pd(nd, ln2_32_lo, r);
    __m512d p = _mm512_set1_pd(1.0 / 720.0);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 120.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    __m512i n = _mm512_sub_epi64(_mm512_castpd_si512(t), _mm512_castpd_si512(magic));
    __m512i j = _mm512_and_si512(n, _mm512_set1_epi64(31));
    __m512i m = _mm512_maskz_srai_epi64(0xFF, n, 5);  // (n - j) / 32, exactly
    __m512d frac = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), 0xFF, j, sk_exp2_fractions_host, 8);
    __m512i biased = _mm512_add_epi64(m, _mm512_set1_epi64(1023));
    __m512d scale = _mm512_castsi512_pd(_mm512_maskz_slli_epi64(0xFF, biased, 52));
    return _mm512_mul_pd(_mm512_mul_pd(frac, p), scale);
}

// sk_exp on sixteen floats (those of `keep`; the others read as 0 and come back unspecified)
static inline __m512 sk_exp_x16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-104.0f), hi = _mm512_set1_ps(89.0f);
    __mmask16 above_lo = _mm512_cmp_ps_mask(x, lo, _CMP_GT_OQ), below_hi = _mm512_cmp_ps_mask(x, hi, _CMP_LT_OQ);
    __m512 xc = _mm512_mask_blend_ps(above_lo, lo, _mm512_mask_blend_ps(below_hi, hi, x));  // NaN -> -104
    // (the masked forms of the conversions: GCC 12 warns about the undefined upper lanes of the plain ones)
    const __m256 z8 = _mm256_setzero_ps();
    const __m512d z8d = _mm512_setzero_pd();
    __m256 half_lo = _mm512_mask_extractf32x8_ps(z8, 0xFF, xc, 0);
    __m256 half_hi = _mm512_mask_extractf32x8_ps(z8, 0xFF, xc, 1);
    __m256 e_lo = _mm512_mask_cvtpd_ps(z8, 0xFF, sk_exp_core_x8(_mm512_mask_cvtps_pd(z8d, 0xFF, half_lo)));
    __m256 e_hi = _mm512_mask_cvtpd_ps(z8, 0xFF, sk_exp_core_x8(_mm512_mask_cvtps_pd(z8d, 0xFF, half_hi)));
    __m512 e = _mm512_insertf32x8(_mm512_insertf32x8(_mm512_setzero_ps(), e_lo, 0), e_hi, 1);
    __mmask16 is_nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
    e = _mm512_mask_blend_ps(under, e, _mm512_setzero_ps());
    e = _mm512_mask_blend_ps(over, e, _mm512_set1_ps(INFINITY));
    return _mm512_mask_blend_ps(is_nan, e, x);
}
// sk_tanh on sixteen floats: both branches of the scalar form on every lane (the series only where it is used; the
// exp branch is harmless elsewhere), blended by |x| exactly as the scalar ifs choose, then the same rounding and sign.
static inline __m256 sk_tanh_x8_half(__m256 xf) {
    const __m512d z8d = _mm512_setzero_pd();
    __m512d x = _mm512_mask_cvtps_pd(z8d, 0xFF, xf);
    __m512d a = _mm512_abs_pd(x), y = _mm512_add_pd(a, a);  // 2a, exact as 2.0 * a is
    __m512d one = _mm512_set1_pd(1.0), two = _mm512_set1_pd(2.0);
    __m512d t_exp = _mm512_sub_pd(one, _mm512_div_pd(two, _mm512_add_pd(sk_exp_core_x8(y), one)));
    static const double inv_fact[18] = {
        1.0 / 6402373705728000.0, 1.0 / 355687428096000.0, 1.0 / 20922789888000.0, 1.0 / 1307674368000.0,
        1.0 / 87178291200.0, 1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
        1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0};
    __m512d u = _mm512_set1_pd(inv_fact[0]);
    for (int i = 1; i < 18; i++) u = _mm512_fmadd_pd(u, y, _mm512_set1_pd(inv_fact[i]));
    u = _mm512_mul_pd(u, y);
    __m512d t_series = _mm512_div_pd(u, _mm512_add_pd(u, two));
    __mmask8 big = _mm512_cmp_pd_mask(a, _mm512_set1_pd(10.0), _CMP_GT_OQ);
    __mmask8 mid = _mm512_cmp_pd_mask(a, _mm512_set1_pd(0.5), _CMP_GE_OQ);
    __m512d t = _mm512_mask_blend_pd(mid, t_series, t_exp);
    t = _mm512_mask_blend_pd(big, t, one);
    __m256 tf = _mm512_mask_cvtpd_ps(_mm256_setzero_ps(), 0xFF, t);  // t >= 0: the sign goes on after rounding
    const __m256 sign = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(tf, _mm256_and_ps(xf, sign));
}
static inline __m512 sk_tanh_x16(__m512 x) {
    const __m256 z8 = _mm256_setzero_ps();
    __m256 lo = sk_tanh_x8_half(_mm512_mask_extractf32x8_ps(z8, 0xFF, x, 0));
    __m256 hi = sk_tanh_x8_half(_mm512_mask_extractf32x8_ps(z8, 0xFF, x, 1));
    __m512 t = _mm512_insertf32x8(_mm512_insertf32x8(_mm512_setzero_ps(), lo, 0), hi, 1);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), t, x);  // NaN -> itself
}
#endif

// y[i] = one(x[i]) for i < n, with `sixteen` (its AVX-512 form, equal bit for bit) on whole vectors and a masked tail
struct SkLanes {
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
    template <typename Sixteen, typename One>
    static inline void map(const float* x, float* y, int n, Sixteen sixteen, One) {
        int i = 0;
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, sixteen(_mm512_loadu_ps(x + i)));
        if (i < n) {
            __mmask16 keep = (__mmask16)((1u << (n - i)) - 1);
            _mm512_mask_storeu_ps(y + i, keep, sixteen(_mm512_maskz_loadu_ps(keep, x + i)));
        }
    }
#else
    template <typename Sixteen, typename One>
    static inline void map(const float* x, float* y, int n, Sixteen, One one) {
        for (int i = 0; i < n; i++) y[i] = one(x[i]);
    }
#endif
};
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
#define SK_LANES(v16) [](__m512 v) { return v16(v); }
#else
#define SK_LANES(v16) 0
#endif

// y[i] = sk_exp(x[i]) and y[i] = sk_tanh(x[i]) for i < n, bit for bit, sixteen at a time where the CPU has AVX-512
static inline void sk_exp_n(const float* x, float* y, int n) {
    SkLanes::map(x, y, n, SK_LANES(sk_exp_x16), [](float v) { return sk_exp(v); });
}
static inline void sk_tanh_n(const float* x, float* y, int n) {
    SkLanes::map(x, y, n, SK_LANES(sk_tanh_x16), [](float v) { return sk_tanh(v); });
}
static inline void sk_exp_n(const double* x, double* y, int n) {
    for (int i = 0; i < n; i++) y[i] = sk_exp(x[i]);
}
static inline void sk_tanh_n(const double* x, double* y, int n) {
    for (int i = 0; i < n; i++) y[i] = sk_tanh(x[i]);
}

// The softmax of one row, in the project's fixed order: m = max; e_j = exp(s_j - m); sum over j in order; p_j =
// mass * e_j / sum. Attention rows (attention_variants.cuh) and the loss (cross-entropy over the vocabulary) both use
// it, so there is one softmax to reproduce on the GPU. mass = 1 gives exactly e_j / sum. On the CPU the exps of a row
// are taken many at a time (sk_exp_n): the same values, the sum still in order.
template <typename F>
SK_HD inline void sk_softmax_row(const F* s, F* p, int n, F mass) {
    F m = s[0];
    for (int j = 1; j < n; j++) m = s[j] > m ? s[j] : m;
#ifdef __CUDA_ARCH__
    for (int j = 0; j < n; j++) p[j] = sk_exp(s[j] - m);
#else
    for (int j = 0; j < n; j++) p[j] = s[j] - m;
    sk_exp_n(p, p, n);
#endif
    F sum = 0;
    for (int j = 0; j < n; j++) sum += p[j];
    for (int j = 0; j < n; j++) p[j] = mass * p[j] / sum;
}
