// common/backend.h: where the model's loops run and where its memory lives. OpenMP threads and heap memory in
// train_gpt_cpu.cpp; CUDA kernels and device memory when the same code is compiled by nvcc (train_gpt.cu).
//
// What it is:
//   sk_for(n, SK_LAMBDA(size_t i) { ... })  runs the body for i = 0..n-1. CPU: an OpenMP loop, static schedule.
//       CUDA: one kernel launch, one thread per i (grid-stride) on the default stream, launch errors checked at once;
//       the host waits only where it reads a result (SkBuffer::download, sk_host_view). SK_SYNC=1 in the environment
//       adds a synchronisation after every launch, so a fault is reported at the kernel that caused it.
//       A body computes whole output elements (it never shares an accumulator with another i), so its results do not
//       depend on the thread count or on the device: a body that follows the same order gives the same bits.
//   sk_for_scratch(n, per, work, SK_LAMBDA(size_t i, F* scratch) { ... })  the same with `per` values of scratch for
//       the body: a per-thread array on the CPU, a slice of `work` (sk_scratch_size(n, per) values) on the GPU.
//   sk_for_2d(rows, cols, SK_LAMBDA(size_t r, int c) { ... })  runs the body for every (r, c), each element whole
//       (as sk_for): CUDA one thread per element, neighbours in c side by side; CPU an OpenMP loop over r with c
//       inside (no division per element, and a loop the compiler can vectorise).
//   sk_for_warps(n, SK_LAMBDA(size_t i, SkWarp& w) { ... })  runs the body for i = 0..n-1 on a warp of SK_WARP (32)
//       lanes, for work over a row of values: lane l takes the indices l, l + 32, ... of the row, in order
//       (w.lane_sums, w.lane_dots: a partial sum per lane into an SkWarpLanes<F>), w.sum adds the lanes' partials in
//       a fixed butterfly order, w.each_index(n, f) runs f(i) for every index, w.once(f) runs f once. CUDA: one warp
//       per i, lane = its thread, so a row is read side by side (coalesced); the sum by shuffles. CPU: one thread per
//       i, the lanes' partials side by side in an array (vectorised), the sum on it in the same order. So a warp body
//       gives the same bits on both.
//   sk_for_blocks<State>(nx, ny, threads, shared_bytes, SK_LAMBDA(SkBlock<State>& blk, int x, int y, void* shared)
//       { ... })  runs the body for every block (x, y) of `threads` threads, each thread with a State of its own and
//       the block with shared_bytes of memory it shares: blk.each(step) runs step(i, state_i) for every thread i,
//       blk.sync() is the barrier between two steps. CUDA: a block of threads, the States in registers, `shared` in
//       shared memory (at most 48 KB). CPU: one thread per block runs each step for every i in turn, the States and
//       `shared` in arrays. A body whose steps communicate only through `shared`, across a sync, gives the same
//       results on both; so the CPU runs a GPU kernel's own code. A test can set sk_block_threads to run a block's
//       threads as a GPU may instead (each to its next sync()), so that a missing sync changes the numbers.
//   SkBuffer<T>  an owning array of device memory (plain cudaMalloc on the GPU, the heap on the CPU). The host moves
//       data in and out explicitly with upload/download; on the CPU build it may also index the array directly (the
//       tests do), on the GPU build that does not compile, so no host code can read device memory by accident.
//   sk_host_view(p, n, &staging)  n values at device pointer p as host memory: p itself on the CPU (no copy), a
//       download into `staging` on the GPU.
//   SkDownloadArena  host copies of device arrays that arrive while the computation goes on: on the GPU staged on
//       the device, then downloaded on a second stream (the sink probe's copies for the metrics' thread).
//   sk_backend_init(), sk_memory_bytes(), sk_device_name(), SK_BACKEND_NAME: start-up (a clear error when no GPU
//       exists) and the memory the activations must fit in. sk_reserve_thread_stack(bytes, why): the GPU's local
//       memory for a kernel with a large stack frame, set aside before the model's buffers. sk_roofline(): the GPU's
//       peak flop rates (common/roofline.h; 0 on the CPU), for the trainer's MFU.
//   sk_memory_use(): the bytes every SkBuffer holds now and at most so far (the model's memory: parameters,
//       gradients, moments, activations; not CUDA's own), which the trainer prints at the end of a run, and how many
//       allocations there have been (on a GPU each is a cudaMalloc, and its cudaFree waits for the device), so a test
//       can require that a run allocates nothing after its first step.
//   sk_launch_count(): how many loops the five sk_for forms have run (on a GPU each is one kernel launch), so a test
//       can count the passes a step takes.
// What it is not: a kernel library. Under nvcc sk_for runs the CPU reference's per-element bodies, one thread each:
// simple, slow where a body is a whole row, and the CPU's bits; sk_for_warps and sk_for_blocks give the fast engine's
// rows a warp and its attention a block of threads sharing memory.
// Rules for a body: capture by value (SK_LAMBDA is [=]), only pointers into SkBuffers and plain values (an AttnSpec,
// not a ModelConfig pointer), call only SK_HD functions, no allocation, no fail().
#pragma once
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "errors.h"
#include "numerics.h"
#include "roofline.h"

#define SK_WARP 32  // lanes of a warp (sk_for_warps)
#define SK_DEFAULT_STACK_BYTES 1024  // CUDA's stack limit of a GPU thread until raised (sk_reserve_thread_stack)

// The loops the sk_for forms have run (kernel launches on a GPU).
inline std::atomic<size_t>& sk_launch_count() {
    static std::atomic<size_t> n{0};
    return n;
}

// The bytes allocated through sk_alloc_bytes: now, and the most at any time; and the allocations so far. One count
// per program (an inline function, not a static one: SkBuffer's members are shared by every file that includes this
// header, the tests' too).
struct SkMemoryUse {
    size_t now = 0, peak = 0, allocations = 0;
};
inline SkMemoryUse& sk_memory_use() {
    static SkMemoryUse use;
    return use;
}
static inline void sk_memory_count(size_t bytes, bool alloc) {
    SkMemoryUse& u = sk_memory_use();
    u.now = alloc ? u.now + bytes : u.now - bytes;
    u.peak = u.now > u.peak ? u.now : u.peak;
    u.allocations += alloc;
}

#ifdef __CUDACC__
#include <cuda_runtime.h>

#define SK_LAMBDA [=] __host__ __device__
#define SK_BACKEND_NAME "GPU"

static inline void sk_cuda_check(cudaError_t err, const char* call, const char* file, int line) {
    if (err != cudaSuccess)
        fail("CUDA error %s at %s:%d in %s", cudaGetErrorString(err), file, line, call);
}
#define SK_CUDA(call) sk_cuda_check((call), #call, __FILE__, __LINE__)

// SK_SYNC=1: synchronise after every launch (debugging); read once.
static inline bool sk_sync_each_launch() {
    static int flag = -1;
    if (flag < 0) {
        const char* v = getenv("SK_SYNC");
        flag = v && strcmp(v, "1") == 0;
    }
    return flag == 1;
}

// after every launch: its error at once, and with SK_SYNC=1 a synchronisation (the fault at the kernel that caused it)
static inline void sk_launched() {
    SK_CUDA(cudaGetLastError());
    if (sk_sync_each_launch()) SK_CUDA(cudaDeviceSynchronize());
}

template <typename Body>
__global__ void sk_for_kernel(size_t n, Body body) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        body(i);
}

template <typename Body>
static void sk_for(size_t n, Body body) {
    if (n == 0) return;
    sk_launch_count()++;
    const size_t threads = 256, max_blocks = 1 << 20;
    size_t blocks = (n + threads - 1) / threads;
    sk_for_kernel<<<(unsigned)(blocks < max_blocks ? blocks : max_blocks), (unsigned)threads>>>(n, body);
    sk_launched();
}

template <typename Body>
static void sk_for_2d(size_t rows, int cols, Body body) {
    if (cols <= 0) return;
    sk_for(rows * cols, SK_LAMBDA(size_t k) { body(k / cols, (int)(k % cols)); });
}

// sk_for_scratch(n, per, work, body): body(i, scratch) with `per` values of scratch for index i. On the GPU the scratch
// of index i is work + i * per: `work` must hold sk_scratch_size(n, per) values.
template <typename F, typename Body>
static void sk_for_scratch(size_t n, size_t per, F* work, Body body) {
    sk_for(n, SK_LAMBDA(size_t i) { body(i, work + i * per); });
}
static inline size_t sk_scratch_size(size_t n, size_t per) { return n * per; }

// The warp of sk_for_warps on the GPU: lane = the thread's place in its warp; the lanes' sum by a butterfly of
// shuffles (lane l adds lane l ^ 16, then l ^ 8, ... l ^ 1: every lane ends with the same bits, since a + b == b + a).
// The members are host-and-device so that a body compiles for both, but they run only on the device.
template <typename F>
struct SkWarpLanes {
    F v;  // this lane's
};
struct SkWarp {
    SK_HD static int lane() {
#ifdef __CUDA_ARCH__
        return (int)(threadIdx.x % SK_WARP);
#else
        return 0;
#endif
    }
    template <typename Fn>
    SK_HD void each_index(int n, Fn f) {
        for (int i = lane(); i < n; i += SK_WARP) f(i);
    }
    template <typename Fn>
    SK_HD void once(Fn f) {
        if (lane() == 0) f();
    }
    template <typename F, typename Term>
    SK_HD void lane_sums(SkWarpLanes<F>* part, int n, Term term) {
        F acc = 0;
        for (int i = lane(); i < n; i += SK_WARP) acc += term(i);
        part->v = acc;
    }
    template <typename F, typename A, typename B>
    SK_HD void lane_dots(SkWarpLanes<F>* part, int n, A a, B b) {
        F acc = 0;
        for (int i = lane(); i < n; i += SK_WARP) acc = sk_fma(a(i), b(i), acc);
        part->v = acc;
    }
    template <typename F>
    SK_HD F sum(const SkWarpLanes<F>& part) {
        F x = part.v;
#ifdef __CUDA_ARCH__
        for (int off = SK_WARP / 2; off > 0; off /= 2) x = x + __shfl_xor_sync(0xffffffffu, x, off);
#endif
        return x;
    }
};

// The block of sk_for_blocks on the GPU: thread i = threadIdx.x runs its own step with its State in registers.
template <typename State>
struct SkBlock {
    State mine;
    template <typename Step>
    SK_HD void each(Step step) {
#ifdef __CUDA_ARCH__
        step((int)threadIdx.x, mine);
#else
        (void)step;
#endif
    }
    SK_HD void sync() {
#ifdef __CUDA_ARCH__
        __syncthreads();
#endif
    }
};

template <typename State, typename Body>
__global__ void sk_for_blocks_kernel(Body body) {
    extern __shared__ float4 sk_block_shared[];  // float4: aligned for any element type
    SkBlock<State> blk;
    body(blk, (int)blockIdx.x, (int)blockIdx.y, (void*)sk_block_shared);
}

template <typename State, typename Body>
static void sk_for_blocks(int nx, int ny, int threads, size_t shared_bytes, Body body) {
    if (nx <= 0 || ny <= 0) return;
    if (shared_bytes > 48 * 1024 || ny > 65535)
        fail("internal: sk_for_blocks with %zu bytes of shared memory and %d blocks in y", shared_bytes, ny);
    sk_launch_count()++;
    sk_for_blocks_kernel<State><<<dim3((unsigned)nx, (unsigned)ny), (unsigned)threads, shared_bytes>>>(body);
    sk_launched();
}

// Every lane of a warp takes the same i, so the warps never split at a shuffle.
template <typename Body>
__global__ void sk_for_warps_kernel(size_t n, Body body) {
    size_t warp = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / SK_WARP;
    size_t warps = (size_t)gridDim.x * blockDim.x / SK_WARP;
    SkWarp w;
    for (size_t i = warp; i < n; i += warps) body(i, w);
}

template <typename Body>
static void sk_for_warps(size_t n, Body body) {
    if (n == 0) return;
    sk_launch_count()++;
    const size_t threads = 256, per_block = threads / SK_WARP, max_blocks = 1 << 20;
    size_t blocks = (n + per_block - 1) / per_block;
    sk_for_warps_kernel<<<(unsigned)(blocks < max_blocks ? blocks : max_blocks), (unsigned)threads>>>(n, body);
    sk_launched();
}

// Device memory is never asked for beyond what the GPU has free (less a reserve for CUDA itself), so a configuration
// too large for the card stops with advice instead of an opaque allocation error.
static inline void* sk_alloc_bytes(size_t bytes) {
    size_t free_b = 0, total_b = 0;
    SK_CUDA(cudaMemGetInfo(&free_b, &total_b));
    const size_t reserve = (size_t)256 << 20;
    if (bytes + reserve > free_b)
        fail("cannot allocate %.2f GiB of GPU memory: %.2f GiB of %.2f GiB are free; lower --batch or --seq-len, or use "
             "a smaller model", bytes / 1073741824.0, free_b / 1073741824.0, total_b / 1073741824.0);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess)
        fail("cannot allocate %.2f GiB of GPU memory (%s); lower --batch or --seq-len, or use a smaller model",
             bytes / 1073741824.0, cudaGetErrorString(err));
    sk_memory_count(bytes, true);
    return p;
}
// Local memory. A thread's stack frame (the arrays a kernel keeps in local memory, its spills) comes from memory the
// driver sets aside for every thread the card can hold at once: per thread, the context's stack limit (CUDA's default
// is 1 KiB, SK_DEFAULT_STACK_BYTES). A launch whose kernel needs a larger frame makes the driver raise the limit there
// and then, and keep it raised. On a card whose memory the model's buffers have already taken, that first launch, in
// step 0, fails. sk_reserve_thread_stack raises the limit before the engine allocates anything (ModelEngine's
// constructor), so the memory is taken first and a card without room stops at once with a message. Its cost: about
// SMs x threads per SM x bytes (the driver's own figure may be rounded up), outside sk_memory_use's count.
static inline void sk_reserve_thread_stack(size_t bytes, const char* why) {
    size_t now = 0;
    SK_CUDA(cudaDeviceGetLimit(&now, cudaLimitStackSize));
    if (bytes <= now) return;
    cudaDeviceProp prop;
    SK_CUDA(cudaGetDeviceProperties(&prop, 0));
    double need = (double)prop.multiProcessorCount * prop.maxThreadsPerMultiProcessor * bytes;
    cudaError_t err = cudaDeviceSetLimit(cudaLimitStackSize, bytes);
    if (err != cudaSuccess)
        fail("cannot set aside %zu bytes of local memory for each GPU thread (%.2f GiB in all), which %s needs (%s); "
             "free GPU memory, or use a smaller head size", bytes, need / 1073741824.0, why, cudaGetErrorString(err));
}
static inline void sk_free_bytes(void* p, size_t bytes) {
    // cudaFree "may" synchronise (the runtime's words): wait for the kernels that may still read p first. Frees are
    // rare (a buffer that grows, the end of a run), so the wait costs nothing that matters.
    cudaDeviceSynchronize();
    cudaFree(p);
    sk_memory_count(bytes, false);
}
// Uploads. A cudaMemcpy from pageable host memory first waits for the stream to drain, so each micro-batch's tokens
// would stop the host until the previous pass finished. Uploads up to SK_PINNED_MAX bytes (token batches, targets,
// the embedding backward's position groups) are copied into one of SK_PINNED_SLOTS pinned staging buffers and queued
// with cudaMemcpyAsync on the default stream, behind the kernels before it and ahead of those after it, so the host
// does not wait for those kernels. A slot is reused only after its last copy finished (its event): the host waits only
// for a copy 8 uploads back (three uploads a micro-batch: tokens, targets, position groups).
// Larger uploads (parameters, moments) are rare and take the plain copy.
#define SK_PINNED_SLOTS 8
#define SK_PINNED_MAX ((size_t)16 << 20)
struct SkPinnedRing {
    void* buf[SK_PINNED_SLOTS] = {};
    size_t cap[SK_PINNED_SLOTS] = {};
    cudaEvent_t copied[SK_PINNED_SLOTS] = {};
    int next = 0;
};
static inline void sk_upload_bytes(void* device, const void* host, size_t bytes) {
    if (bytes > SK_PINNED_MAX) {
        SK_CUDA(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
        return;
    }
    static SkPinnedRing ring;  // one per program, kept to its end
    int s = ring.next;
    ring.next = (s + 1) % SK_PINNED_SLOTS;
    if (!ring.copied[s]) SK_CUDA(cudaEventCreateWithFlags(&ring.copied[s], cudaEventDisableTiming));
    SK_CUDA(cudaEventSynchronize(ring.copied[s]));  // the slot's previous copy (none yet: returns at once)
    if (ring.cap[s] < bytes) {
        if (ring.buf[s]) SK_CUDA(cudaFreeHost(ring.buf[s]));
        ring.buf[s] = nullptr;
        SK_CUDA(cudaMallocHost(&ring.buf[s], bytes));
        ring.cap[s] = bytes;
    }
    memcpy(ring.buf[s], host, bytes);
    SK_CUDA(cudaMemcpyAsync(device, ring.buf[s], bytes, cudaMemcpyHostToDevice, 0));
    SK_CUDA(cudaEventRecord(ring.copied[s], 0));
}
// cudaMemcpy to the host waits for the kernels before it on the default stream, so a download sees their results
static inline void sk_download_bytes(void* host, const void* device, size_t bytes) {
    SK_CUDA(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost));
}

// The first GPU, or a clear error: the CUDA trainer cannot run without one.
static inline void sk_backend_init() {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    int driver = 0, runtime = 0;  // CUDA versions, 1000 major + 10 minor; driver 0: no driver installed
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    if (err == cudaErrorInsufficientDriver && driver > 0)
        fail("the NVIDIA driver supports CUDA up to %d.%d, but train_gpt was built with CUDA %d.%d. Update the "
             "driver, or rebuild train_gpt with a CUDA toolkit no newer than %d.%d (rm train_gpt; make train_gpt "
             "NVCC=its nvcc); ./train_gpt_cpu takes the same flags meanwhile",
             driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10, driver / 1000, driver % 1000 / 10);
    if (err != cudaSuccess || count == 0)
        fail("no CUDA GPU is visible (%s). train_gpt needs an NVIDIA GPU (sm_80 or newer); on this machine run "
             "./train_gpt_cpu, which takes the same flags", err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    cudaDeviceProp prop;
    SK_CUDA(cudaGetDeviceProperties(&prop, 0));
    if (prop.major < 8)
        fail("GPU 0 (%s) has compute capability %d.%d; train_gpt is built for 8.0 and newer", prop.name, prop.major,
             prop.minor);
    SK_CUDA(cudaSetDevice(0));
}

// GPU 0's roofline (common/roofline.h: its peak flop rates and memory bandwidth), read from the driver once.
static inline const Roofline& sk_roofline() {
    static Roofline r = [] {
        GpuFigures f;
        SK_CUDA(gpu_figures(0, &f));
        return roofline_of(f);
    }();
    return r;
}

static inline const char* sk_device_name() {
    static cudaDeviceProp prop;
    SK_CUDA(cudaGetDeviceProperties(&prop, 0));
    return prop.name;
}

static inline double sk_memory_bytes() {
    size_t free_b = 0, total_b = 0;
    SK_CUDA(cudaMemGetInfo(&free_b, &total_b));
    return memory_cap_bytes((double)total_b);
}

#else  // the CPU reference

#include <ucontext.h>

#include <exception>
#include <functional>
#include <type_traits>

#define SK_LAMBDA [=]
#define SK_BACKEND_NAME "CPU"

template <typename Body>
static inline void sk_for(size_t n, Body body) {
    if (n) sk_launch_count()++;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) body(i);
}

template <typename Body>
static inline void sk_for_2d(size_t rows, int cols, Body body) {
    if (rows && cols > 0) sk_launch_count()++;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) body(r, c);
}

// sk_for_scratch(n, per, work, body): body(i, scratch) with `per` values of scratch for index i. On the CPU every
// thread reuses one scratch of its own (it stays in cache), and `work` is unused: sk_scratch_size is 0.
template <typename F, typename Body>
static inline void sk_for_scratch(size_t n, size_t per, F*, Body body) {
    if (n) sk_launch_count()++;
#pragma omp parallel
    {
        std::vector<F> scratch(per);
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) body(i, scratch.data());
    }
}
static inline size_t sk_scratch_size(size_t, size_t) { return 0; }

// The warp of sk_for_warps on the CPU: one thread; the lanes' partials side by side in an array (index i goes to
// lane i mod 32, the indices of a lane in order: the GPU's order, in a loop the compiler vectorises), summed in the
// butterfly order of the GPU's shuffles (lane l adds lane l ^ 16, then l ^ 8, ... l ^ 1).
template <typename F>
struct SkWarpLanes {
    F v[SK_WARP];
};
struct SkWarp {
    template <typename Fn>
    void each_index(int n, Fn f) {
        for (int i = 0; i < n; i++) f(i);
    }
    template <typename Fn>
    void once(Fn f) {
        f();
    }
    template <typename F, typename Term>
    void lane_sums(SkWarpLanes<F>* part, int n, Term term) {
        for (int l = 0; l < SK_WARP; l++) part->v[l] = 0;
        for (int i0 = 0; i0 < n; i0 += SK_WARP) {
            int m = n - i0 < SK_WARP ? n - i0 : SK_WARP;
            for (int l = 0; l < m; l++) part->v[l] += term(i0 + l);
        }
    }
    template <typename F, typename A, typename B>
    void lane_dots(SkWarpLanes<F>* part, int n, A a, B b) {
        for (int l = 0; l < SK_WARP; l++) part->v[l] = 0;
        for (int i0 = 0; i0 < n; i0 += SK_WARP) {
            int m = n - i0 < SK_WARP ? n - i0 : SK_WARP;
            for (int l = 0; l < m; l++) part->v[l] = sk_fma(a(i0 + l), b(i0 + l), part->v[l]);
        }
    }
    template <typename F>
    F sum(const SkWarpLanes<F>& part) {
        SkWarpLanes<F> x = part, y;
        for (int off = SK_WARP / 2; off > 0; off /= 2) {
            for (int l = 0; l < SK_WARP; l++) y.v[l] = x.v[l] + x.v[l ^ off];
            x = y;
        }
        return x.v[0];
    }
};

// A CPU block's shared memory, in 16-byte chunks: aligned as a GPU's, whose blocks cast it to 16-byte-aligned rows
// (FlashGradRow) and read vectors from it.
struct alignas(16) SkSharedChunk {
    unsigned char bytes[16];
};
static inline std::vector<SkSharedChunk> sk_shared_chunks(size_t bytes) {
    return std::vector<SkSharedChunk>((bytes + sizeof(SkSharedChunk) - 1) / sizeof(SkSharedChunk));
}

// The block of sk_for_blocks on the CPU: the block's threads one after another, each step for every thread in turn.
// Tests can run a block's threads as a GPU may instead (sk_block_threads, below): then `me` is the thread running.
struct SkBlockThreads;
template <typename State>
struct SkBlock {
    State* states;  // one per thread
    int threads;
    int me = -1;                       // sk_block_threads: the thread running the body now
    SkBlockThreads* runner = nullptr;  // sk_block_threads: where sync() waits for the block's other threads
    template <typename Step>
    void each(Step step) {
        int lo = me >= 0 ? me : 0, hi = me >= 0 ? me + 1 : threads;  // one call site: inlined as before
        for (int i = lo; i < hi; i++) step(i, states[i]);
    }
    inline void sync();
};

#ifdef TESTING
// Tests: sk_block_threads = 1 (or -1) runs each block's threads as a GPU may, to find what only a GPU would show.
// Every thread runs the whole body on a stack of its own (a ucontext), from one sync() to the next, before the next
// thread starts (threads in order, or in reverse order at -1, and then the blocks too); the block's States and shared
// memory start as NaN bytes, as a GPU's start undefined. A body whose threads exchange values without a sync()
// between the write and the read (a race on a GPU), or that reads shared memory or a State it did not write, then
// gives other numbers than in the default order, step by step for every thread. Threads that return while others
// wait at a sync() stop it (a barrier not every thread reaches); two sync()s at different places are not told apart.
// Only test programs (TESTING) compile it, so the trainer's code is what it was.
static int sk_block_threads = 0;

struct SkBlockThreads {
    std::vector<ucontext_t> ctx;
    std::vector<std::vector<char>> stacks;
    ucontext_t scheduler;
    std::function<void()> run;  // the body of the block now running, for the thread `me`
    bool finished = false;      // the thread that ran last returned from the body
    std::exception_ptr thrown;  // what it threw (an exception cannot unwind out of a ucontext)
    void wait_at_barrier(int me) { swapcontext(&ctx[me], &scheduler); }
};
static SkBlockThreads* sk_block_threads_now = nullptr;
static void sk_block_thread_entry() {
    try {
        sk_block_threads_now->run();
    } catch (...) {
        sk_block_threads_now->thrown = std::current_exception();
    }
    sk_block_threads_now->finished = true;  // then uc_link returns to the scheduler
}

// Thread t of the block at the start of the body (getcontext returns twice, so it stays out of the scheduler's frame)
__attribute__((noinline)) static void sk_block_thread_prepare(SkBlockThreads* r, int t) {
    getcontext(&r->ctx[t]);
    r->ctx[t].uc_stack.ss_sp = r->stacks[t].data();
    r->ctx[t].uc_stack.ss_size = r->stacks[t].size();
    r->ctx[t].uc_link = &r->scheduler;
    makecontext(&r->ctx[t], sk_block_thread_entry, 0);
}

template <typename State, typename Body>
static void sk_for_blocks_as_threads(int nx, int ny, int threads, size_t shared_bytes, Body body) {
    static_assert(std::is_trivially_copyable<State>::value, "a State is filled with NaN bytes");
    std::vector<State> states(threads);
    std::vector<SkSharedChunk> shared = sk_shared_chunks(shared_bytes);
    SkBlockThreads r;
    r.ctx.resize(threads);
    r.stacks.assign(threads, std::vector<char>(1 << 18));
    struct Now {  // sk_block_threads_now for this call, restored however it ends
        SkBlockThreads* outer;
        explicit Now(SkBlockThreads* r) : outer(sk_block_threads_now) { sk_block_threads_now = r; }
        ~Now() { sk_block_threads_now = outer; }
    } now(&r);
    long blocks = (long)nx * ny;
    for (long b = 0; b < blocks; b++) {
        long k = sk_block_threads < 0 ? blocks - 1 - b : b;
        memset((void*)states.data(), 0xff, states.size() * sizeof(State));
        memset((void*)shared.data(), 0xff, shared.size() * sizeof(SkSharedChunk));
        SkBlock<State> blk{states.data(), threads};
        blk.runner = &r;
        int x = (int)(k % nx), y = (int)(k / nx);
        r.run = [&] { body(blk, x, y, (void*)shared.data()); };
        for (int t = 0; t < threads; t++) sk_block_thread_prepare(&r, t);
        // rounds: every thread runs to its next sync() (or its end), one after the other
        for (int done = 0; done < threads;) {
            int ended = 0;
            for (int n = 0; n < threads; n++) {
                int t = sk_block_threads < 0 ? threads - 1 - n : n;
                r.finished = false;
                blk.me = t;
                swapcontext(&r.scheduler, &r.ctx[t]);
                if (r.thrown) std::rethrow_exception(r.thrown);  // the other threads' stacks are dropped with r
                ended += r.finished;
            }
            if (ended != 0 && ended != threads)
                fail("internal: in a block of %d threads, %d returned while the others wait at a sync()", threads,
                     ended);
            done += ended;
        }
    }
}
#endif

template <typename State>
inline void SkBlock<State>::sync() {
#ifdef TESTING
    if (runner) runner->wait_at_barrier(me);
#endif
}

template <typename State, typename Body>
static inline void sk_for_blocks(int nx, int ny, int threads, size_t shared_bytes, Body body) {
    if (nx <= 0 || ny <= 0) return;
    sk_launch_count()++;
#ifdef TESTING
    if (sk_block_threads) return sk_for_blocks_as_threads<State>(nx, ny, threads, shared_bytes, body);
#endif
#pragma omp parallel
    {
        std::vector<State> states(threads);
        std::vector<SkSharedChunk> shared = sk_shared_chunks(shared_bytes);
        SkBlock<State> blk{states.data(), threads};
#pragma omp for schedule(dynamic, 1)  // blocks differ in work (a causal mask's last query tiles see the most keys)
        for (long k = 0; k < (long)nx * ny; k++) body(blk, (int)(k % nx), (int)(k / nx), (void*)shared.data());
    }
}

template <typename Body>
static inline void sk_for_warps(size_t n, Body body) {
    if (n) sk_launch_count()++;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        SkWarp w;
        body(i, w);
    }
}

static inline void* sk_alloc_bytes(size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p)
        fail("cannot allocate %.2f GiB (out of memory); lower --batch or --seq-len, or use a smaller model",
             bytes / 1073741824.0);
    sk_memory_count(bytes, true);
    return p;
}
static inline void sk_reserve_thread_stack(size_t, const char*) {}  // a CPU thread's stack is the OS's
static inline void sk_free_bytes(void* p, size_t bytes) {
    free(p);
    sk_memory_count(bytes, false);
}
static inline void sk_upload_bytes(void* device, const void* host, size_t bytes) { memcpy(device, host, bytes); }
static inline void sk_download_bytes(void* host, const void* device, size_t bytes) { memcpy(host, device, bytes); }
static inline void sk_backend_init() {}
static inline const char* sk_device_name() { return "CPU"; }
static inline const Roofline& sk_roofline() {  // the CPU's peaks are not known here: 0
    static Roofline r;
    return r;
}
static inline double sk_memory_bytes() { return host_memory_bytes(); }

#endif

// p[0..n) = v
template <typename F>
static void sk_fill(F* p, size_t n, F v) {
    sk_for(n, SK_LAMBDA(size_t i) { p[i] = v; });
}

// n values at device pointer p, readable by the host: p itself on the CPU, a copy in *staging on the GPU. Valid until
// the memory behind p changes (CPU) or *staging is reused (GPU).
template <typename T>
static const T* sk_host_view(const T* p, size_t n, std::vector<T>* staging) {
#ifdef __CUDACC__
    staging->resize(n);
    sk_download_bytes(staging->data(), p, n * sizeof(T));
    return staging->data();
#else
    (void)n;
    (void)staging;
    return p;
#endif
}

// An owning array of n values of a trivially copyable T in device memory. Fills run on the device (sk_fill); the host
// writes with upload and reads with download (or sk_host_view), which on the GPU are the only host<->device copies.
template <typename T>
class SkBuffer {
  public:
    SkBuffer() = default;
    SkBuffer(const SkBuffer&) = delete;
    SkBuffer& operator=(const SkBuffer&) = delete;
    ~SkBuffer() { reallocate(0); }
    // n copies of v
    void assign(size_t n, T v) {
        reallocate(n);
        sk_fill(ptr_, n, v);
    }
    // room for n values, contents undefined when the size changes (callers fill what they use)
    void reserve_exactly(size_t n) { reallocate(n); }
    // room for at least n values: grows (contents undefined then), never shrinks. For a buffer whose use varies in
    // size, such as the token ids of a sample's growing context: it is allocated once, for the largest use.
    void fit(size_t n) {
        if (n > n_) reallocate(n);
    }
    void clear() { reallocate(0); }
    // host -> device: n values into [offset, offset + n)
    void upload(const T* host, size_t n, size_t offset = 0) {
        if (offset + n > n_) fail("internal: upload of %zu values at %zu into a buffer of %zu", n, offset, n_);
        if (n) sk_upload_bytes(ptr_ + offset, host, n * sizeof(T));
    }
    void upload(const std::vector<T>& host) {
        reallocate(host.size());
        upload(host.data(), host.size());
    }
    // device -> host
    void download(T* host, size_t n, size_t offset = 0) const {
        if (offset + n > n_) fail("internal: download of %zu values at %zu from a buffer of %zu", n, offset, n_);
        if (n) sk_download_bytes(host, ptr_ + offset, n * sizeof(T));
    }
    std::vector<T> to_host() const {
        std::vector<T> v(n_);
        download(v.data(), n_);
        return v;
    }
    size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    T* data() { return ptr_; }
    const T* data() const { return ptr_; }
#ifndef __CUDACC__  // host element access exists only where device memory is host memory
    T& operator[](size_t i) { return ptr_[i]; }
    const T& operator[](size_t i) const { return ptr_[i]; }
    T* begin() { return ptr_; }
    T* end() { return ptr_ + n_; }
    const T* begin() const { return ptr_; }
    const T* end() const { return ptr_ + n_; }
#endif

  private:
    void reallocate(size_t n) {
        if (n == n_) return;
        if (ptr_) sk_free_bytes(ptr_, n_ * sizeof(T));
        ptr_ = n ? (T*)sk_alloc_bytes(n * sizeof(T)) : nullptr;
        n_ = n;
    }
    T* ptr_ = nullptr;
    size_t n_ = 0;
};

// Host copies of device arrays that arrive while the computation goes on (the sink probe's copies for the metrics'
// thread). A series: keep(p, n) for each array, which queues a copy of the n values at device pointer p and says
// where they will be on the host, then send(), whose fence says when they are there: wait on it before reading. The
// copies stay until the next series' first keep. reserve(n) sizes the arena once (a series holds at most n values),
// so a run too large for the memory stops before it starts.
// GPU: keep copies device to device into a staging area in stream order (after the kernels that wrote p, before
// those that overwrite it; a fast copy on the device), and send downloads the staging area into pinned host memory
// on a second stream, so that the next kernels run while it travels. That stream is created non-blocking: the
// legacy default stream, which every kernel here runs on, would otherwise wait for it and it for them. The next
// series' first keep makes the default stream wait for this download before it overwrites the staging area.
// CPU: keep copies straight into host memory; the fence is always passed.
class SkDownloadArena {
  public:
    SkDownloadArena() = default;
    SkDownloadArena(const SkDownloadArena&) = delete;
    SkDownloadArena& operator=(const SkDownloadArena&) = delete;

    // What send() returns: wait() returns once the series' copies are in host memory, with null, or with what went
    // wrong (a thread other than the one driving the device waits on it, so it reports rather than fails).
    struct Fence {
#ifdef __CUDACC__
        cudaEvent_t arrived = nullptr;
        const char* wait() const {
            cudaError_t err = arrived ? cudaEventSynchronize(arrived) : cudaSuccess;
            return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
        }
#else
        const char* wait() const { return nullptr; }
#endif
    };

    // Room for a series of n values, or of as many as the device can spare beside what it holds (half its free memory
    // less 1 GiB): returns the values granted. A GPU's pinned host memory is as large again.
    size_t reserve(size_t n) {
#ifdef __CUDACC__
        if (n > cap_) {
            size_t free_b = 0, total_b = 0;
            SK_CUDA(cudaMemGetInfo(&free_b, &total_b));
            size_t spare = (free_b + cap_ * sizeof(float)) / 2;  // what this arena holds now would be freed first
            spare = spare > ((size_t)1 << 30) ? spare - ((size_t)1 << 30) : 0;
            n = std::min(n, spare / sizeof(float));
        }
#endif
        if (n == cap_) return n;
        release();
        if (!n) return 0;
#ifdef __CUDACC__
        staging_.reserve_exactly(n);
        if (cudaMallocHost((void**)&host_, n * sizeof(float)) != cudaSuccess) {
            release();
            fail("cannot allocate %.2f GiB of pinned host memory for the sink probe's copies; lower --probe-seqs or "
                 "--probe-len, or set SK_SINK_THREAD=0", n * sizeof(float) / 1073741824.0);
        }
        SK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        SK_CUDA(cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming));
        // the thread that waits on it sleeps instead of spinning on a core
        SK_CUDA(cudaEventCreateWithFlags(&fence_.arrived, cudaEventDisableTiming | cudaEventBlockingSync));
#else
        host_ = (float*)malloc(n * sizeof(float));
        if (!host_)
            fail("cannot allocate %.2f GiB for the sink probe's copies (out of memory); lower --probe-seqs or "
                 "--probe-len, or set SK_SINK_THREAD=0", n * sizeof(float) / 1073741824.0);
#endif
        cap_ = n;
        return n;
    }
    // Queues the copy of n values at device pointer p; returns where they will be on the host. The first keep after
    // a send starts a new series: the previous one's copies are then no longer read.
    const float* keep(const float* p, size_t n) {
        if (sent_) used_ = 0;
        sent_ = false;
        if (used_ + n > cap_)
            fail("internal: the probe's copies need %zu values, the arena holds %zu", used_ + n, cap_);
        float* dst = host_ + used_;
#ifdef __CUDACC__
        if (used_ == 0) SK_CUDA(cudaStreamWaitEvent(0, fence_.arrived, 0));  // the previous download is done
        if (n) SK_CUDA(cudaMemcpyAsync(staging_.data() + used_, p, n * sizeof(float), cudaMemcpyDeviceToDevice, 0));
#else
        if (n) memcpy(dst, p, n * sizeof(float));
#endif
        used_ += n;
        return dst;
    }
    // Starts the download of the series kept since the last send.
    Fence send() {
        sent_ = true;
#ifdef __CUDACC__
        if (!used_) return Fence();
        SK_CUDA(cudaEventRecord(staged_, 0));  // the staging copies queued so far
        SK_CUDA(cudaStreamWaitEvent(stream_, staged_, 0));
        SK_CUDA(cudaMemcpyAsync(host_, staging_.data(), used_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
        SK_CUDA(cudaEventRecord(fence_.arrived, stream_));
#endif
        return fence_;
    }
    ~SkDownloadArena() { release(); }

  private:
    void release() {
#ifdef __CUDACC__
        if (host_ || staging_.size()) cudaDeviceSynchronize();  // no copy into or out of the arena is still queued
        if (stream_) cudaStreamDestroy(stream_);
        if (staged_) cudaEventDestroy(staged_);
        if (fence_.arrived) cudaEventDestroy(fence_.arrived);
        if (host_) cudaFreeHost(host_);
        stream_ = nullptr;
        staged_ = nullptr;
        fence_ = Fence();
        staging_.clear();
#else
        free(host_);
#endif
        host_ = nullptr;
        cap_ = used_ = 0;
        sent_ = false;
    }
#ifdef __CUDACC__
    SkBuffer<float> staging_;
    cudaStream_t stream_ = nullptr;
    cudaEvent_t staged_ = nullptr;
#endif
    Fence fence_;
    float* host_ = nullptr;
    size_t cap_ = 0, used_ = 0;
    bool sent_ = false;
};
