// dev/cuda/ladder.cuh: what the kernel ladders of dev/cuda share: the CUDA error check, the lookup of a named choice,
// the timing of a version, the attention ladders' problem (the variant, B, heads, T) with the flags that set it and
// the (query, key) pairs it visits, the spreading of a CPU reference's heads over the cores (for_each_head), and this
// GPU's roofline (common/roofline.h), which every version's time is set against.
// What it is not: a kernel, or anything the trainers use (they have common/backend.h).
#pragma once
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <thread>
#include <vector>

#include "../../attention_variants.cuh"
#include "../../common/roofline.h"

static void cuda_check(cudaError_t err, const char* what, int line) {
    if (err != cudaSuccess) {
        fprintf(stderr, "error: CUDA %s at line %d: %s\n", what, line, cudaGetErrorString(err));
        exit(1);
    }
}
#define CUDA(call) cuda_check((call), #call, __LINE__)

// The index of `value` among names[0..n), or exit 2 naming the flag and the choices.
static int lookup(const char* flag, const char* value, const char* const* names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(value, names[i]) == 0) return i;
    fprintf(stderr, "error: %s %s: not one of", flag, value);
    for (int i = 0; i < n; i++) fprintf(stderr, " %s", names[i]);
    fprintf(stderr, "\n");
    exit(2);
}

// The mean time in ms of `reps` calls of run(), measured with CUDA events on the default stream.
template <typename Run>
static float time_ms(int reps, Run run) {
    cudaEvent_t e0, e1;
    CUDA(cudaEventCreate(&e0));
    CUDA(cudaEventCreate(&e1));
    CUDA(cudaEventRecord(e0));
    for (int r = 0; r < reps; r++) run();
    CUDA(cudaEventRecord(e1));
    CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA(cudaEventElapsedTime(&ms, e0, e1));
    CUDA(cudaEventDestroy(e0));
    CUDA(cudaEventDestroy(e1));
    return ms / reps;
}

// The roofline of GPU 0 (common/roofline.h), after a line on stdout that gives it and the figures it comes from.
static Roofline gpu_roofline() {
    GpuFigures f;
    CUDA(gpu_figures(0, &f));
    cudaDeviceProp prop;
    CUDA(cudaGetDeviceProperties(&prop, 0));
    Roofline r = roofline_of(f);
    printf("roofline of %s (sm_%d%d, %d SMs at %.0f MHz, a %d-bit bus at %.0f MHz): fp32 %.1f, tf32 %.1f, bf16 %.1f "
           "TFLOP/s peak (0: not known), memory %.2f TB/s\n", prop.name, f.major, f.minor, f.sms, f.clock_khz / 1e3,
           f.bus_bits, f.mem_clock_khz / 1e3, r.fp32_flops / 1e12, r.tf32_flops / 1e12, r.bf16_flops / 1e12,
           r.bytes_per_s / 1e12);
    return r;
}

// What share of its fp32 roofline a version reached in `ms` for `flops` and at least `bytes` moved: "  41% of the
// fp32 roofline (0.123 ms)", for the end of its line.
static const char* fp32_roofline_share(const Roofline& r, double flops, double bytes, double ms) {
    static char text[96];
    double best = roofline_ms(r, r.fp32_flops, flops, bytes);
    if (best > 0) snprintf(text, sizeof text, "  %.0f%% of the fp32 roofline (%.3f ms)", 100 * best / ms, best);
    else snprintf(text, sizeof text, "  (no fp32 roofline known for this GPU)");
    return text;
}

// One attention problem: the variant, and B sequences of T tokens over NH heads.
struct Problem {
    AttnSpec spec;
    int B = 4, NH = 12, T = 1024;
};

// The attention ladders' flags: --version N (0..2), --attn, --attn-norm, --slot, --mask, --mask-param, -B, --heads,
// -T, and the program's own switch (`own_switch`, null when it has none; *switch_on says whether it was given). A
// bad flag or value exits 2 with a message naming `program`.
static void parse_attention_flags(int argc, char** argv, const char* program, Problem* pr, int* version,
                                  const char* own_switch = nullptr, bool* switch_on = nullptr) {
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (own_switch && !strcmp(a, own_switch)) {
            *switch_on = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value (see the comment at the top of %s)\n", a, program);
            exit(2);
        }
        const char* v = argv[++i];
        if (!strcmp(a, "--version")) *version = atoi(v);
        else if (!strcmp(a, "--attn")) pr->spec.variant = lookup(a, v, attn_variant_names, ATTN_NUM_VARIANTS);
        else if (!strcmp(a, "--attn-norm")) pr->spec.normaliser = lookup(a, v, attn_normaliser_names, ANORM_NUM_KINDS);
        else if (!strcmp(a, "--slot")) pr->spec.slot = lookup(a, v, attn_slot_names, SLOT_NUM_KINDS);
        else if (!strcmp(a, "--mask")) pr->spec.mask = lookup(a, v, attn_mask_names, MASK_NUM_KINDS);
        else if (!strcmp(a, "--mask-param")) pr->spec.mask_param = atoi(v);
        else if (!strcmp(a, "-B")) pr->B = atoi(v);
        else if (!strcmp(a, "--heads")) pr->NH = atoi(v);
        else if (!strcmp(a, "-T")) pr->T = atoi(v);
        else {
            fprintf(stderr, "error: unknown flag %s (see the comment at the top of %s)\n", a, program);
            exit(2);
        }
    }
    if (pr->B < 1 || pr->NH < 1 || pr->T < 1 || *version < 0 || *version > 2 ||
        (pr->spec.mask != MASK_CAUSAL && pr->spec.mask_param < 1)) {
        fprintf(stderr, "error: need B, heads, T >= 1, --version 0..2 and --mask-param >= 1 with a window or prefix\n");
        exit(2);
    }
}

// The (query, key) pairs one head visits: what an attention pass's flops are counted from.
static double visible_pairs(const Problem& pr) {
    double pairs = 0;
    for (int t = 0; t < pr.T; t++) {
        int lo, hi;
        attn_visible_keys(pr.spec, t, pr.T, &lo, &hi);
        pairs += hi - lo;
    }
    return pairs;
}

// fn(bh) for every head (b, h), spread over the CPU's cores: the heads share nothing
template <typename Fn>
static void for_each_head(int BH, Fn fn) {
    int workers = (int)std::thread::hardware_concurrency();
    workers = workers < 1 ? 1 : workers > BH ? BH : workers;
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; w++)
        pool.emplace_back([&fn, w, workers, BH] {
            for (int bh = w; bh < BH; bh += workers) fn(bh);
        });
    for (std::thread& th : pool) th.join();
}
