// common/errors.h: how sinkscope stops on an error, and the one question errors about size ask of the machine.
//
// What it is: fail(fmt, ...), which prints "error: ..." and exits 1, so every failure reads the same; under TESTING it
// throws SkError instead, so a test can assert on the message without a subprocess. And host_memory_bytes(), the
// machine's physical memory, which every "does this fit" check compares against.
// What it is not: a logging library. Every message names the file, flag or value at fault and says what to do.
#pragma once
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef TESTING
#include <stdexcept>
struct SkError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
#endif

[[noreturn]] static inline void fail(const char* fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
#ifdef TESTING
    throw SkError(msg);
#else
    fprintf(stderr, "error: %s\n", msg);
    exit(1);
#endif
}

// Physical memory of this machine in bytes.
static inline double host_memory_bytes() { return (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE); }
