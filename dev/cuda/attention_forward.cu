/*
dev/cuda/attention_forward.cu: the attention forward pass on the GPU, version by version, each checked against the CPU.

    s_tj = tau q_t . k_j,  tau = 1/sqrt(hs),  for the keys j in [lo_t, hi_t) (attn_visible_keys: causal, window, prefix)
    p_t  = the variant's row map of [s_*, s_lo .. s_hi-1]  (the slot score s_* first, when the variant has a slot)
    y_t  = p_* v* + sum_j p_tj v_j

CPU twin: attention_forward in train_gpt_cpu.cpp, whose row map is attn_row_forward (attention_variants.cuh). The
reference here is that row form in float, one row at a time; the GPU versions must match it to a relative L2 error
and a max error (over max |ref|) of 1e-5 (the streaming form reorders sums: test_variants.cpp measures 2e-6 per row).

  version 1  one thread per query row, the row form: scores and weights of the whole row in global scratch (2 T
             floats per row), then the weighted sum of the values. The row form's body (the exact engine runs the
             same arithmetic as passes of a thread per element, attention_forward_passes): slow, T x T scratch.
  version 2  flash-style, SIMT: one block of 64 threads per (b, h, tile of 64 queries); the block walks the key tiles
             its rows can see (a sliding window visits O(w) keys, not O(T)); each tile of K and V (64 x hs) goes
             through shared memory, its rows hs + 4 floats apart (flash_stage_stride: under a sliding window the
             threads of a warp read 32 different keys at once, which at a stride of hs would share their banks);
             every thread keeps its query, its output accumulator and its row state (the streaming forms of
             attention_variants.cuh) in registers. Never materialises T x T. Clipped softmax takes two passes
             (statistics, then weights), the others one. The per-row work is kernels/attention_flash.cuh, which
             test_variants.cpp runs on the CPU in this kernel's order against the row form.

Layout as in the trainers: qkv (B, T, 3C) with q | k | v of head h at h * hs in each third; y (B, T, C).
ALiBi and the feature maps are not here (they change the scores, not the kernel's structure).

Build: make dev-cuda (nvcc, sm_80 and sm_90). Run on a GPU:
    build/dev_cuda/attention_forward [--version 0|1|2] [--attn NAME] [--attn-norm none|sum|clamp] [--slot none|kv|logit|zero]
                                     [--mask causal|window|prefix] [--mask-param N] [-B N] [--heads N] [-T N]
--version 0 (the default) runs every version. It prints each version's error against the CPU, its time and TFLOP/s
(4 B NH hs times the visible (query, key) pairs) and the share of this GPU's fp32 roofline that is
(common/roofline.h; at least q, k and v read and y written once), and exits 1 when a version is beyond the tolerance.
*/
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <random>
#include <vector>

#include "../../kernels/attention_flash.cuh"
#include "ladder.cuh"

#define HS 64            // head size (the template's registers are sized by it)
#define TILE 64          // queries per block and keys per tile in version 2
#define TOLERANCE 1e-5
static constexpr int KS = flash_stage_stride(HS);  // floats between the rows of a staged key tile in version 2 (68)



// ---------------------------------------------------------------------------------------------------------------
// the slot of head h for query row q: its score and its value (null: none)

__host__ __device__ static inline float slot_score(const AttnSpec& spec, const float* qt, const float* kstar,
                                                   const float* sink_logit, int h, float tau) {
    if (spec.slot == SLOT_KV) {
        float dot = 0;
        for (int d = 0; d < HS; d++) dot = fmaf(qt[d], kstar[h * HS + d], dot);
        return dot * tau;
    }
    return spec.slot == SLOT_LOGIT ? sink_logit[h] : 0.0f;
}

// ---------------------------------------------------------------------------------------------------------------
// the row form of one query row (b, h, t), with the row's scores and weights in s and p (T + 1 floats each): the CPU
// reference, and version 1's body

__host__ __device__ static void attention_row(float* y, float* s, float* p, const float* qkv, const float* kstar,
                                              const float* vstar, const float* sink_logit, const AttnSpec& spec,
                                              int NH, int T, int b, int h, int t) {
    int C = NH * HS, key0 = attn_has_slot(spec);
    float tau = 1.0f / sqrtf((float)HS);
    const float* qt = qkv + ((size_t)b * T + t) * 3 * C + h * HS;
    int lo, hi, n = 0;
    attn_visible_keys(spec, t, T, &lo, &hi);
    if (key0) s[n++] = slot_score(spec, qt, kstar, sink_logit, h, tau);
    for (int j = lo; j < hi; j++) {
        const float* kj = qkv + ((size_t)b * T + j) * 3 * C + C + h * HS;
        float dot = 0;
        for (int d = 0; d < HS; d++) dot = fmaf(qt[d], kj[d], dot);
        s[n++] = dot * tau;
    }
    attn_row_forward(spec, s, p, n, T);
    float* yt = y + ((size_t)b * T + t) * C + h * HS;
    bool slot_value = spec.slot == SLOT_KV && spec.vstar != VSTAR_ZERO;
    for (int d = 0; d < HS; d++) yt[d] = slot_value ? p[0] * vstar[h * HS + d] : 0.0f;
    for (int j = lo; j < hi; j++) {
        const float* vj = qkv + ((size_t)b * T + j) * 3 * C + 2 * C + h * HS;
        for (int d = 0; d < HS; d++) yt[d] = fmaf(p[key0 + j - lo], vj[d], yt[d]);
    }
}

static void attention_cpu(float* y, const float* qkv, const float* kstar, const float* vstar, const float* sink_logit,
                          const Problem& pr) {
    for_each_head(pr.B * pr.NH, [&](int bh) {  // a row writes only its own output
        std::vector<float> s(pr.T + 1), p(pr.T + 1);
        for (int t = 0; t < pr.T; t++)
            attention_row(y, s.data(), p.data(), qkv, kstar, vstar, sink_logit, pr.spec, pr.NH, pr.T, bh / pr.NH,
                          bh % pr.NH, t);
    });
}

// ---------------------------------------------------------------------------------------------------------------
// version 1: one thread per row (b, h, t), the row form with the row in global scratch

__global__ void attention_forward1(float* y, float* scratch, const float* qkv, const float* kstar, const float* vstar,
                                   const float* sink_logit, AttnSpec spec, int B, int NH, int T) {
    size_t r = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (r >= (size_t)B * NH * T) return;
    float* s = scratch + r * 2 * (T + 1);
    attention_row(y, s, s + T + 1, qkv, kstar, vstar, sink_logit, spec, NH, T, (int)(r / ((size_t)NH * T)),
                  (int)(r / T % NH), (int)(r % T));
}

// ---------------------------------------------------------------------------------------------------------------
// version 2: flash-style. Block (query tile, b * NH + h), TILE threads, thread i owns query row t = tile * TILE + i.
// The per-row work is kernels/attention_flash.cuh (tested on the CPU); this kernel stages the key tiles.

__global__ void __launch_bounds__(TILE) attention_forward2(float* y, const float* qkv, const float* kstar,
                                                           const float* vstar, const float* sink_logit, AttnSpec spec,
                                                           int B, int NH, int T) {
    __shared__ __align__(16) float ks[TILE * KS], vs[TILE * KS];
    int b = blockIdx.y / NH, h = blockIdx.y % NH, C = NH * HS;
    int t0 = blockIdx.x * TILE, t = t0 + threadIdx.x;
    bool live = t < T;
    float tau = 1.0f / sqrtf((float)HS), s[TILE];
    FlashRow<HS> row;
    if (live) flash_row_begin(&row, spec, qkv + ((size_t)b * T + t) * 3 * C + h * HS, t, T);
    int klo, khi;
    flash_tile_keys(spec, t0, min(t0 + TILE, T), T, &klo, &khi);
    klo -= klo % TILE;
    const float* v_slot = spec.slot == SLOT_KV && spec.vstar != VSTAR_ZERO ? vstar + h * HS : nullptr;
    float s_slot = live && attn_has_slot(spec) ? slot_score(spec, row.q, kstar, sink_logit, h, tau) : 0.0f;
    for (int pass = 0; pass < flash_passes(spec); pass++) {
        if (live && attn_has_slot(spec)) flash_row_slot(&row, spec, s_slot, v_slot, pass, T);
        for (int k0 = klo; k0 < khi; k0 += TILE) {
            __syncthreads();  // every thread is done with the previous tile
            for (int e = threadIdx.x; e < TILE * HS; e += TILE) {  // consecutive threads, consecutive floats
                int j = k0 + e / HS;
                const float* row_j = qkv + ((size_t)b * T + (j < T ? j : 0)) * 3 * C + h * HS + e % HS;
                ks[e / HS * KS + e % HS] = j < T ? row_j[C] : 0.0f;
                vs[e / HS * KS + e % HS] = j < T ? row_j[2 * C] : 0.0f;
            }
            __syncthreads();
            if (live) flash_row_tile<HS, KS>(&row, spec, ks, vs, k0, min(TILE, T - k0), tau, pass, T, s);
        }
    }
    if (live) flash_row_finish(&row, spec, y + ((size_t)b * T + t) * C + h * HS);
}

// ---------------------------------------------------------------------------------------------------------------

static void run_version(int version, float* d_y, float* d_scratch, const float* d_qkv, const float* d_kstar,
                        const float* d_vstar, const float* d_logit, const Problem& pr) {
    if (version == 1) {
        size_t rows = (size_t)pr.B * pr.NH * pr.T;
        attention_forward1<<<(unsigned)((rows + 127) / 128), 128>>>(d_y, d_scratch, d_qkv, d_kstar, d_vstar, d_logit,
                                                                    pr.spec, pr.B, pr.NH, pr.T);
    } else {
        dim3 grid((pr.T + TILE - 1) / TILE, pr.B * pr.NH);
        attention_forward2<<<grid, TILE>>>(d_y, d_qkv, d_kstar, d_vstar, d_logit, pr.spec, pr.B, pr.NH, pr.T);
    }
    CUDA(cudaGetLastError());
}


int main(int argc, char** argv) {
    Problem pr;
    int version = 0;
    parse_attention_flags(argc, argv, "dev/cuda/attention_forward.cu", &pr, &version);
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        fprintf(stderr, "error: no CUDA GPU is visible: these kernels need one (sm_80 or newer)\n");
        return 1;
    }
    int C = pr.NH * HS;
    size_t n_qkv = (size_t)pr.B * pr.T * 3 * C, n_y = (size_t)pr.B * pr.T * C;
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> qkv(n_qkv), kstar(pr.NH * HS), vstar(pr.NH * HS), logit(pr.NH), ref(n_y), got(n_y);
    for (float& x : qkv) x = nd(rng);
    for (float& x : kstar) x = nd(rng);
    for (float& x : vstar) x = nd(rng);
    for (float& x : logit) x = nd(rng);
    attention_cpu(ref.data(), qkv.data(), kstar.data(), vstar.data(), logit.data(), pr);

    float *d_qkv, *d_y, *d_kstar, *d_vstar, *d_logit, *d_scratch = nullptr;
    CUDA(cudaMalloc(&d_qkv, n_qkv * sizeof(float)));
    CUDA(cudaMalloc(&d_y, n_y * sizeof(float)));
    CUDA(cudaMalloc(&d_kstar, kstar.size() * sizeof(float)));
    CUDA(cudaMalloc(&d_vstar, vstar.size() * sizeof(float)));
    CUDA(cudaMalloc(&d_logit, logit.size() * sizeof(float)));
    CUDA(cudaMemcpy(d_qkv, qkv.data(), n_qkv * sizeof(float), cudaMemcpyHostToDevice));
    CUDA(cudaMemcpy(d_kstar, kstar.data(), kstar.size() * sizeof(float), cudaMemcpyHostToDevice));
    CUDA(cudaMemcpy(d_vstar, vstar.data(), vstar.size() * sizeof(float), cudaMemcpyHostToDevice));
    CUDA(cudaMemcpy(d_logit, logit.data(), logit.size() * sizeof(float), cudaMemcpyHostToDevice));
    size_t scratch_floats = (size_t)pr.B * pr.NH * pr.T * 2 * (pr.T + 1);
    size_t free_b = 0, total_b = 0;
    CUDA(cudaMemGetInfo(&free_b, &total_b));
    bool v1_fits = scratch_floats * sizeof(float) < free_b / 2;
    if (v1_fits) CUDA(cudaMalloc(&d_scratch, scratch_floats * sizeof(float)));

    double flops = 4.0 * pr.B * pr.NH * HS * visible_pairs(pr), bytes = 4.0 * (n_qkv + n_y);  // q, k, v in; y out
    Roofline roof = gpu_roofline();
    printf("attention forward: --attn %s --attn-norm %s --slot %s --mask %s (%d), B %d, heads %d of %d, T %d\n",
           attn_variant_names[pr.spec.variant], attn_normaliser_names[pr.spec.normaliser],
           attn_slot_names[pr.spec.slot], attn_mask_names[pr.spec.mask], pr.spec.mask_param, pr.B, pr.NH, HS, pr.T);
    int failures = 0;
    for (int ver = 1; ver <= 2; ver++) {
        if (version && ver != version) continue;
        if (ver == 1 && !v1_fits) {
            printf("version 1: skipped (its %.1f GB of row scratch does not fit)\n", scratch_floats * 4e-9);
            continue;
        }
        CUDA(cudaMemset(d_y, 0, n_y * sizeof(float)));
        run_version(ver, d_y, d_scratch, d_qkv, d_kstar, d_vstar, d_logit, pr);
        CUDA(cudaDeviceSynchronize());
        CUDA(cudaMemcpy(got.data(), d_y, n_y * sizeof(float), cudaMemcpyDeviceToHost));
        double maxerr = 0, maxref = 0, err2 = 0, ref2 = 0;
        for (size_t i = 0; i < n_y; i++) {
            double d = (double)got[i] - ref[i];
            maxerr = fmax(maxerr, isfinite(got[i]) ? fabs(d) : INFINITY);
            maxref = fmax(maxref, fabs((double)ref[i]));
            err2 += d * d;
            ref2 += (double)ref[i] * ref[i];
        }
        double rel_max = maxerr / fmax(maxref, 1e-30), rel_l2 = sqrt(err2 / fmax(ref2, 1e-60));
        bool ok = rel_max <= TOLERANCE && rel_l2 <= TOLERANCE;
        failures += !ok;
        float ms = time_ms(10, [&] { run_version(ver, d_y, d_scratch, d_qkv, d_kstar, d_vstar, d_logit, pr); });
        printf("version %d: %s  max err / max |ref| %.2e  rel L2 %.2e (allowed %.0e)  %.3f ms  %.2f TFLOP/s%s\n", ver,
               ok ? "ok  " : "FAIL", rel_max, rel_l2, TOLERANCE, ms, flops / (ms * 1e-3) / 1e12,
               fp32_roofline_share(roof, flops, bytes, ms));
    }
    cudaFree(d_qkv);
    cudaFree(d_y);
    cudaFree(d_kstar);
    cudaFree(d_vstar);
    cudaFree(d_logit);
    if (d_scratch) cudaFree(d_scratch);
    return failures ? 1 : 0;
}
