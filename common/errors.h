// common/errors.h: how sinkscope stops on an error, and the one question errors about size ask of the machine.
//
// What it is: fail(fmt, ...), which prints "error: ..." and exits 1 (at once, threads and all), so every failure reads
// the same. Under TESTING, or inside a FailCapture scope (code that wants to know whether something would fail, such as
// the search for the last good checkpoint), it throws SkError instead. And host_memory_bytes(), the machine's physical
// memory (or the share SK_MEMORY_GIB allows), which every "does this fit" check compares against.
// What it is not: a logging library. Every message names the file, flag or value at fault and says what to do.
#pragma once
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <stdexcept>

struct SkError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// While one of these exists, fail() throws SkError instead of exiting.
static thread_local int fail_capture_depth = 0;
struct FailCapture {
    FailCapture() { fail_capture_depth++; }
    ~FailCapture() { fail_capture_depth--; }
    FailCapture(const FailCapture&) = delete;
    FailCapture& operator=(const FailCapture&) = delete;
};

[[noreturn]] static inline void fail(const char* fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
#ifdef TESTING
    throw SkError(msg);
#else
    if (fail_capture_depth > 0) throw SkError(msg);
    fprintf(stderr, "error: %s\n", msg);
    // _exit after flushing, not exit: another thread may still be running (the sink metrics' thread, measuring or
    // waiting for its download), and exit would destroy static objects and shut down the libraries under it (OpenMP,
    // the CUDA runtime), so the run could crash after its message. Nothing is lost that exit would keep: stdio's
    // buffers are flushed here, and a checkpoint is only real once renamed from its temporary file.
    fflush(NULL);
    _exit(1);
#endif
}

// `machine` bytes of memory, or fewer when the environment's SK_MEMORY_GIB says so: the share of a machine (or GPU)
// that other jobs also use. A value that is not a positive number stops the program.
static inline double memory_cap_bytes(double machine) {
    const char* cap = getenv("SK_MEMORY_GIB");
    if (!cap || !*cap) return machine;
    char* end = nullptr;
    double gib = strtod(cap, &end);
    if (*end || !(gib > 0) || gib > 1e9)
        fail("SK_MEMORY_GIB '%s' is not a positive number of GiB (the memory this run may use; unset it to use the "
             "machine's)", cap);
    return gib * 1073741824.0 < machine ? gib * 1073741824.0 : machine;
}

// Physical memory of this machine in bytes (or SK_MEMORY_GIB's share of it).
static inline double host_memory_bytes() {
    return memory_cap_bytes((double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE));
}
