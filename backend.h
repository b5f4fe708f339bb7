// backend.h: where the model's loops run. OpenMP threads in train_gpt_cpu.cpp; CUDA kernels when the same code is
// compiled by nvcc as train_gpt.cu.
//
// What it is: three things the layers need besides arithmetic.
//   sk_for(n, SK_LAMBDA (size_t i) { ... })  runs the body for i = 0..n-1. CPU: an OpenMP loop, static schedule.
//       CUDA: one kernel launch, one thread per i (grid-stride), then a synchronisation with its error checked.
//       A body computes whole output elements (it never shares an accumulator with another i), so its results do not
//       depend on the thread count or on the device: a body that follows the same order gives the same bits.
//   sk_for_scratch(n, per, work, SK_LAMBDA(size_t i, F* scratch) { ... })  the same with `per` values of scratch for
//       the body: a per-thread array on the CPU, a slice of `work` (sk_scratch_size(n, per) values) on the GPU.
//   SkBuffer<T>  an owning array both the host code and the loop bodies can read: heap memory on the CPU, CUDA
//       managed memory on the GPU (the host code reads losses, metrics and checkpoints from it directly).
//   sk_backend_init(), sk_memory_bytes(), SK_BACKEND_NAME: start-up (a clear error when no GPU exists) and the
//       memory the activations must fit in.
// What it is not: a kernel library. The GPU build is the exact path: it runs the CPU reference's per-element bodies,
// one thread each, with a synchronisation after every launch, so it is simple, slow, and gives the CPU's bits. Fast kernels (cuBLAS, fused
// attention) belong in train_gpt.cu as separate, tolerance-checked paths.
// Rules for a body: capture by value (SK_LAMBDA is [=]), only pointers into SkBuffers and plain values (an AttnSpec,
// not a ModelConfig pointer), call only SK_HD functions, no allocation, no fail().
#pragma once
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vector>

#include "config.h"
#include "numerics.h"

#ifdef __CUDACC__
#include <cuda_runtime.h>

#define SK_LAMBDA [=] __host__ __device__
#define SK_BACKEND_NAME "GPU"

static inline void sk_cuda_check(cudaError_t err, const char* call, const char* file, int line) {
    if (err != cudaSuccess)
        fail("CUDA error %s at %s:%d in %s", cudaGetErrorString(err), file, line, call);
}
#define SK_CUDA(call) sk_cuda_check((call), #call, __FILE__, __LINE__)

template <typename Body>
__global__ void sk_for_kernel(size_t n, Body body) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        body(i);
}

template <typename Body>
static void sk_for(size_t n, Body body) {
    if (n == 0) return;
    const size_t threads = 256, max_blocks = 1 << 20;
    size_t blocks = (n + threads - 1) / threads;
    sk_for_kernel<<<(unsigned)(blocks < max_blocks ? blocks : max_blocks), (unsigned)threads>>>(n, body);
    SK_CUDA(cudaGetLastError());
    SK_CUDA(cudaDeviceSynchronize());
}

// Managed memory is never asked for beyond what the GPU has free (less a reserve for CUDA itself): oversubscribed
// managed memory pages to the host at a crawl, and can stall the GPU for other users too.
// sk_for_scratch(n, per, work, body): body(i, scratch) with `per` values of scratch for index i. On the GPU the scratch
// of index i is work + i * per: `work` must hold sk_scratch_size(n, per) values.
template <typename F, typename Body>
static void sk_for_scratch(size_t n, size_t per, F* work, Body body) {
    sk_for(n, SK_LAMBDA(size_t i) { body(i, work + i * per); });
}
static inline size_t sk_scratch_size(size_t n, size_t per) { return n * per; }

static inline void* sk_alloc_bytes(size_t bytes) {
    size_t free_b = 0, total_b = 0;
    SK_CUDA(cudaMemGetInfo(&free_b, &total_b));
    const size_t reserve = (size_t)256 << 20;
    if (bytes + reserve > free_b)
        fail("cannot allocate %.2f GiB of GPU memory: %.2f GiB of %.2f GiB are free; lower --batch or --seq-len, or use "
             "a smaller model", bytes / 1073741824.0, free_b / 1073741824.0, total_b / 1073741824.0);
    void* p = nullptr;
    cudaError_t err = cudaMallocManaged(&p, bytes);
    if (err != cudaSuccess)
        fail("cannot allocate %.2f GiB of GPU memory (%s); lower --batch or --seq-len, or use a smaller model",
             bytes / 1073741824.0, cudaGetErrorString(err));
    return p;
}
static inline void sk_free_bytes(void* p) { cudaFree(p); }

// The first GPU, or a clear error: the CUDA trainer cannot run without one.
static inline void sk_backend_init() {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0)
        fail("no CUDA GPU is visible (%s). train_gpt needs an NVIDIA GPU (sm_80 or newer); on this machine run "
             "./train_gpt_cpu, which takes the same flags", err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    cudaDeviceProp prop;
    SK_CUDA(cudaGetDeviceProperties(&prop, 0));
    if (prop.major < 8)
        fail("GPU 0 (%s) has compute capability %d.%d; train_gpt is built for 8.0 and newer", prop.name, prop.major,
             prop.minor);
    if (!prop.managedMemory) fail("GPU 0 (%s) does not support managed memory, which train_gpt uses", prop.name);
    SK_CUDA(cudaSetDevice(0));
}

static inline const char* sk_device_name() {
    static cudaDeviceProp prop;
    SK_CUDA(cudaGetDeviceProperties(&prop, 0));
    return prop.name;
}

static inline double sk_memory_bytes() {
    size_t free_b = 0, total_b = 0;
    SK_CUDA(cudaMemGetInfo(&free_b, &total_b));
    return (double)total_b;
}

#else  // the CPU reference

#define SK_LAMBDA [=]
#define SK_BACKEND_NAME "CPU"

template <typename Body>
static inline void sk_for(size_t n, Body body) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) body(i);
}

// sk_for_scratch(n, per, work, body): body(i, scratch) with `per` values of scratch for index i. On the CPU every
// thread reuses one scratch of its own (it stays in cache), and `work` is unused: sk_scratch_size is 0.
template <typename F, typename Body>
static inline void sk_for_scratch(size_t n, size_t per, F*, Body body) {
#pragma omp parallel
    {
        std::vector<F> scratch(per);
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) body(i, scratch.data());
    }
}
static inline size_t sk_scratch_size(size_t, size_t) { return 0; }

static inline void* sk_alloc_bytes(size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p)
        fail("cannot allocate %.2f GiB (out of memory); lower --batch or --seq-len, or use a smaller model",
             bytes / 1073741824.0);
    return p;
}
static inline void sk_free_bytes(void* p) { free(p); }
static inline void sk_backend_init() {}
static inline const char* sk_device_name() { return "CPU"; }
static inline double sk_memory_bytes() { return (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE); }

#endif

// p[0..n) = v
template <typename F>
static void sk_fill(F* p, size_t n, F v) {
    sk_for(n, SK_LAMBDA(size_t i) { p[i] = v; });
}

// dst[0..n) = src[0..n)
template <typename F>
static void sk_copy(F* dst, const F* src, size_t n) {
    sk_for(n, SK_LAMBDA(size_t i) { dst[i] = src[i]; });
}

// An owning array of n values of a trivially copyable T, reachable from host code and loop bodies alike. It fills and
// copies with sk_fill / sk_copy, so on the GPU the first touch of a managed page is the device's: the page then lives
// in GPU memory, where the kernels use it and where the free-memory check of sk_alloc_bytes counts it.
template <typename T>
class SkBuffer {
  public:
    SkBuffer() = default;
    SkBuffer(const SkBuffer& o) { *this = o; }
    SkBuffer& operator=(const SkBuffer& o) {
        if (this != &o) {
            reallocate(o.n_);
            sk_copy(ptr_, o.ptr_, n_);
        }
        return *this;
    }
    ~SkBuffer() { reallocate(0); }
    // n copies of v
    void assign(size_t n, T v) {
        reallocate(n);
        sk_fill(ptr_, n, v);
    }
    // n values: the first min(n, size()) kept, new ones zero (as std::vector)
    void resize(size_t n) {
        if (n == n_) return;
        T* old = ptr_;
        size_t keep = n < n_ ? n : n_;
        ptr_ = n ? (T*)sk_alloc_bytes(n * sizeof(T)) : nullptr;
        sk_copy(ptr_, old, keep);
        sk_fill(ptr_ + keep, n - keep, T(0));
        if (old) sk_free_bytes(old);
        n_ = n;
    }
    void clear() { reallocate(0); }
    size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    T* data() { return ptr_; }
    const T* data() const { return ptr_; }
    T& operator[](size_t i) { return ptr_[i]; }
    const T& operator[](size_t i) const { return ptr_[i]; }
    T* begin() { return ptr_; }
    T* end() { return ptr_ + n_; }
    const T* begin() const { return ptr_; }
    const T* end() const { return ptr_ + n_; }
    operator std::vector<T>() const { return std::vector<T>(ptr_, ptr_ + n_); }

  private:
    void reallocate(size_t n) {
        if (n == n_) return;
        if (ptr_) sk_free_bytes(ptr_);
        ptr_ = n ? (T*)sk_alloc_bytes(n * sizeof(T)) : nullptr;
        n_ = n;
    }
    T* ptr_ = nullptr;
    size_t n_ = 0;
};
