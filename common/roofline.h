// common/roofline.h: the least time a GPU can take for a kernel's work (its roofline), from the figures the driver
// reports, so that each version of a kernel ladder (dev/cuda/) can say how far it is from what the card allows, and
// the GPU trainer can give a step's model flops utilisation (MFU: its model's flops over the peak of its precision).
//
//   fp32 flop rate    = SMs x fp32 lanes per SM x 2 (an fma is two flops) x SM clock
//   tensor flop rate  = SMs x dense tensor-core flops per SM per clock x SM clock   (bf16 inputs, fp32 accumulation;
//                       tf32 inputs: half that)
//   memory bandwidth  = 2 (double data rate) x memory clock x bus width in bytes
//   roofline time     = max(flops / flop rate, bytes / bandwidth)
//
// The per-SM figures are those of NVIDIA's architecture whitepapers for the GPUs the trainer is built for: sm_80
// (A100) 64 fp32 lanes and 2048 dense bf16 flops a clock, sm_90 (H100, H200) 128 lanes and 4096. Another compute
// capability gets the fp32 figure where it is known (128 lanes from sm_86 on) and no tensor figure (0: not known).
// test_gpu.cpp requires these formulas to give the published A100 and H100 peaks from those cards' SM counts and
// clocks.
// What it is not: a measurement. The clock is the highest the driver reports; a card under load often runs slower, so
// a kernel near 100% of its roofline is as fast as the card allows, and one above 100% would mean a wrong count. The
// bytes a ladder gives are what a kernel must move at the least (each input read once, each output written once).
#pragma once

struct Roofline {
    double fp32_flops = 0;    // per second, SIMT fp32 (what the ladders' fp32 kernels and cuBLAS fp32 run on)
    double tf32_flops = 0;    // per second, tensor cores on tf32 inputs (0: not known for this GPU)
    double bf16_flops = 0;    // per second, tensor cores on bf16 inputs (0: not known for this GPU)
    double bytes_per_s = 0;   // device memory bandwidth
};

// The roofline of a GPU of compute capability major.minor with `sms` SMs, an SM clock and a memory clock in kHz (as
// cudaDevAttrClockRate and cudaDevAttrMemoryClockRate give them) and a memory bus `bus_bits` wide.
static inline Roofline roofline_of(int major, int minor, int sms, double clock_khz, double mem_clock_khz,
                                   int bus_bits) {
    int cc = 10 * major + minor, lanes = cc == 80 ? 64 : cc >= 86 ? 128 : 0;
    double tensor_per_clock = cc == 80 ? 2048 : cc == 90 ? 4096 : 0, hz = clock_khz * 1e3;
    Roofline r;
    r.fp32_flops = sms * lanes * 2.0 * hz;
    r.bf16_flops = sms * tensor_per_clock * hz;
    r.tf32_flops = r.bf16_flops / 2;
    r.bytes_per_s = 2.0 * mem_clock_khz * 1e3 * (bus_bits / 8.0);
    return r;
}

#ifdef __CUDACC__
#include <cuda_runtime.h>

// What the driver reports of GPU `device`: compute capability, SMs, the SM and memory clocks (kHz), the bus width.
struct GpuFigures {
    int major = 0, minor = 0, sms = 0, clock_khz = 0, mem_clock_khz = 0, bus_bits = 0;
};
static inline cudaError_t gpu_figures(int device, GpuFigures* f) {
    const cudaDeviceAttr attrs[6] = {cudaDevAttrComputeCapabilityMajor, cudaDevAttrComputeCapabilityMinor,
                                     cudaDevAttrMultiProcessorCount,     cudaDevAttrClockRate,
                                     cudaDevAttrMemoryClockRate,         cudaDevAttrGlobalMemoryBusWidth};
    int* out[6] = {&f->major, &f->minor, &f->sms, &f->clock_khz, &f->mem_clock_khz, &f->bus_bits};
    for (int i = 0; i < 6; i++) {
        cudaError_t err = cudaDeviceGetAttribute(out[i], attrs[i], device);
        if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
}
static inline Roofline roofline_of(const GpuFigures& f) {
    return roofline_of(f.major, f.minor, f.sms, f.clock_khz, f.mem_clock_khz, f.bus_bits);
}
#endif

// The least time in ms for `flops` at `flop_rate` and `bytes` at the card's bandwidth (0 when a rate is unknown).
static inline double roofline_ms(const Roofline& r, double flop_rate, double flops, double bytes) {
    if (!(flop_rate > 0) || !(r.bytes_per_s > 0)) return 0;
    double compute = flops / flop_rate, memory = bytes / r.bytes_per_s;
    return 1e3 * (compute > memory ? compute : memory);
}
