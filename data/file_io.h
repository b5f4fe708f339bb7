// data/file_io.h: checked file I/O shared by every reader and writer in sinkscope.
//
// What it is: open/read/write helpers that fail with the file name and what to do, a reader that checks sizes against
// the file length before trusting them, and an atomic writer (temporary file, fsync, rename) so a killed or failing
// writer never leaves a truncated file in place of a good one. What it is not: a format (see the other data/*.h).
#pragma once
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <string>

#include "../config.h"

// A whole file read into memory once its size is known; readers index into it with bounds checks.
struct FileBytes {
    std::string path;
    std::string bytes;
};

static inline FileBytes read_file_bytes(const std::string& path, const char* what) {
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) fail("cannot open %s '%s': %s", what, path.c_str(), strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) fail("%s '%s' is not a regular file", what, path.c_str());
    FileBytes fb;
    fb.path = path;
    fb.bytes.resize((size_t)st.st_size);
    if (st.st_size > 0 && fread(&fb.bytes[0], 1, fb.bytes.size(), f) != fb.bytes.size())
        fail("cannot read %s '%s': %s", what, path.c_str(), strerror(errno));
    fclose(f);
    return fb;
}

// The 256-int32 header every llm.c file starts with.
static inline const int32_t* file_header(const FileBytes& fb, const char* what) {
    if (fb.bytes.size() < 256 * sizeof(int32_t))
        fail("%s '%s' is %zu bytes, shorter than the 1024-byte header: the file is truncated or not a %s", what,
             fb.path.c_str(), fb.bytes.size(), what);
    return (const int32_t*)fb.bytes.data();
}

static inline float header_float(const int32_t* h, int i) {
    float f;
    memcpy(&f, &h[i], sizeof f);
    return f;
}

static inline int32_t float_bits(float f) {
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i;
}

// Writes a file atomically: data goes to PATH.tmp, is flushed to disk, then renamed over PATH. On any failure the
// temporary file is removed, the previous PATH is untouched, and the error names the file.
struct AtomicWriter {
    std::string path, tmp;
    FILE* f = nullptr;
    bool ok = true;
};

static inline AtomicWriter atomic_open(const std::string& path) {
    AtomicWriter w;
    w.path = path;
    w.tmp = path + ".tmp";
    w.f = fopen(w.tmp.c_str(), "wb");
    if (!w.f) fail("cannot create '%s': %s (is the output directory writable?)", w.tmp.c_str(), strerror(errno));
    return w;
}

static inline void atomic_write(AtomicWriter* w, const void* data, size_t bytes) {
    if (w->ok && bytes > 0 && fwrite(data, 1, bytes, w->f) != bytes) w->ok = false;
}

static inline void atomic_commit(AtomicWriter* w) {
    int err = 0;
    if (!w->ok || fflush(w->f) != 0) err = errno ? errno : EIO;
    if (!err && fsync(fileno(w->f)) != 0) err = errno;
    if (fclose(w->f) != 0 && !err) err = errno;
    if (!err && rename(w->tmp.c_str(), w->path.c_str()) != 0) err = errno;
    if (err) {
        unlink(w->tmp.c_str());
        fail("writing '%s' failed: %s; the previous file (if any) is untouched (free disk space and retry)",
             w->path.c_str(), strerror(err));
    }
}
