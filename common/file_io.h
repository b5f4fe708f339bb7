// common/file_io.h: checked file I/O shared by every reader and writer in sinkscope.
//
// What it is: the magic numbers of every sinkscope file (so a reader handed the wrong file can say what it is), a
// byte source that reads a file (or, for the fuzz harnesses in dev/fuzz/, a buffer) only at offsets checked against its
// length, and an atomic writer (temporary file, fsync, rename, fsync of the directory) so a killed or failing writer
// never leaves a truncated file in place of a good one. What it is not: a format (see the other format headers in common/).
// Build: header-only; needs only errors.h.
//
// Every error names the file, the field, the value found, the value expected, and what to do.
#pragma once
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <string>
#include <utility>

#include "errors.h"

#define SHARD_MAGIC 20240520         // llm.c token shard, uint16 tokens (common/token_shards.h)
#define SHARD_MAGIC_LLMC_U32 20240801  // llm.c's LLaMA-3 token shard, uint32 tokens: not read by sinkscope
#define MODEL_MAGIC 20240326         // model file (common/model_file.h)
#define STATE_MAGIC 20240327         // debug state (common/debug_state.h)
#define TRAIN_STATE_MAGIC 20240528   // training state (common/train_state.h)

// What a file with this magic number is, for the hint of a "wrong magic" error.
static inline const char* describe_magic(int32_t magic) {
    switch (magic) {
    case SHARD_MAGIC: return "it is an llm.c token shard (for --train, --val, --probe)";
    case SHARD_MAGIC_LLMC_U32: return "it is an llm.c uint32 (LLaMA-3) token shard, which sinkscope does not read";
    case MODEL_MAGIC: return "it is a model file (for --load)";
    case STATE_MAGIC: return "it is a debug state (for --check-state)";
    case TRAIN_STATE_MAGIC: return "it is a training state (state_*.bin, read by --resume)";
    default: return "not a sinkscope or llm.c file";
    }
}


// A valid header can still describe more data than this machine holds; say so instead of dying in the allocator.
static inline void check_fits_in_memory(size_t bytes, const char* what, const std::string& path, const char* hint) {
    double ram = host_memory_bytes();
    if ((double)bytes > 0.9 * ram)
        fail("%s '%s' needs %.1f GiB in memory, more than 90%% of the %.1f GiB this run may use (the machine's "
             "memory, or SK_MEMORY_GIB) (%s)", what, path.c_str(), bytes / 1073741824.0, ram / 1073741824.0, hint);
}

// Where a reader's bytes come from: a regular file, read with pread straight into each destination (so a multi-GB
// token shard is held in memory once, not twice), or a buffer (the fuzz harnesses). Readers check every size from a
// header against `size` before they allocate or read; source_read checks again, so no read can leave the file.
struct ByteSource {
    std::string path;         // named in every error
    const char* what;         // "token shard", "model file", ...
    size_t size = 0;
    const char* mem = nullptr;
    int fd = -1;

    ByteSource(const std::string& file, const char* kind) : path(file), what(kind) {
        fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail("cannot open %s '%s': %s (check the path)", what, file.c_str(), strerror(errno));
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            close(fd);
            fail("%s '%s' is not a regular file (a directory? give the path of the file itself)", what, file.c_str());
        }
        size = (size_t)st.st_size;
    }
    ByteSource(const std::string& name, const char* kind, const void* data, size_t bytes)
        : path(name), what(kind), size(bytes), mem((const char*)data) {}
    ~ByteSource() {
        if (fd >= 0) close(fd);
    }
    ByteSource(const ByteSource&) = delete;
    ByteSource& operator=(const ByteSource&) = delete;
};

// Copies bytes [offset, offset + n) of the source into dst; `field` names them in the error.
static inline void source_read(const ByteSource& s, size_t offset, void* dst, size_t n, const char* field) {
    if (offset > s.size || n > s.size - offset)
        fail("%s '%s': %s needs bytes [%zu, %zu) but the file has %zu bytes (truncated; regenerate or re-download it)",
             s.what, s.path.c_str(), field, offset, offset + n, s.size);
    if (s.mem) {
        if (n) memcpy(dst, s.mem + offset, n);
        return;
    }
    char* out = (char*)dst;
    while (n > 0) {
        ssize_t got = pread(s.fd, out, n, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            fail("%s '%s': reading %s at byte %zu failed: %s (did the file shrink while being read?)", s.what,
                 s.path.c_str(), field, offset, got < 0 ? strerror(errno) : "unexpected end of file");
        out += got;
        offset += (size_t)got;
        n -= (size_t)got;
    }
}

// The 256 x int32 little-endian header every llm.c and sinkscope file starts with (copied: the source may be unaligned).
static inline void source_header(const ByteSource& s, int32_t h[256]) {
    if (s.size < 256 * sizeof(int32_t))
        fail("%s '%s' is %zu bytes, shorter than the 1024-byte header (truncated, or not a %s)", s.what, s.path.c_str(),
             s.size, s.what);
    source_read(s, 0, h, 256 * sizeof(int32_t), "the header");
}

// A whole file in memory, for small files whose format has no fixed header to check first.
struct FileBytes {
    std::string path;
    std::string bytes;
};

static inline FileBytes read_file_bytes(const std::string& path, const char* what) {
    ByteSource src(path, what);
    check_fits_in_memory(src.size, what, path, "is it the right file?");
    FileBytes fb;
    fb.path = path;
    fb.bytes.resize(src.size);
    if (src.size) source_read(src, 0, &fb.bytes[0], src.size, "the contents");
    return fb;
}

static inline const int32_t* file_header(const FileBytes& fb, const char* what) {
    if (fb.bytes.size() < 256 * sizeof(int32_t))
        fail("%s '%s' is %zu bytes, shorter than the 1024-byte header (truncated, or not a %s)", what, fb.path.c_str(),
             fb.bytes.size(), what);
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

// 64-bit header values are stored as (low, high) int32 pairs.
static inline void header_put_u64(int32_t* h, int i, uint64_t x) {
    h[i] = (int32_t)(uint32_t)x;
    h[i + 1] = (int32_t)(uint32_t)(x >> 32);
}
// FNV-1a, 64 bits: the checksum of checkpoint payloads (a flipped bit anywhere changes it). `h` continues a hash.
static inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
    const unsigned char* p = (const unsigned char*)data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static inline uint64_t header_get_u64(const int32_t* h, int i) {
    return (uint64_t)(uint32_t)h[i] | ((uint64_t)(uint32_t)h[i + 1] << 32);
}

// Writes a file atomically: data goes to PATH.tmp, is flushed and fsync'ed, renamed over PATH, and the directory is
// fsync'ed so the rename itself survives a power cut. A kill -9 at any moment leaves PATH either the old file or the
// new one, never a mix; a failed write (disk full) removes PATH.tmp, leaves PATH untouched, and names the file.
// A writer destroyed before atomic_commit (an error thrown under TESTING) removes its temporary file.
struct AtomicWriter {
    std::string path, tmp;
    FILE* f = nullptr;
    int err = 0;  // errno of the first failed write

    AtomicWriter() = default;
    AtomicWriter(AtomicWriter&& o) : path(std::move(o.path)), tmp(std::move(o.tmp)), f(o.f), err(o.err) { o.f = nullptr; }
    AtomicWriter(const AtomicWriter&) = delete;
    AtomicWriter& operator=(const AtomicWriter&) = delete;
    ~AtomicWriter() {
        if (f) {
            fclose(f);
            unlink(tmp.c_str());
        }
    }
};

// Tests simulate a full disk: when a budget is >= 0, writes against it fail with ENOSPC once it is spent.
// write_budget governs the atomic writers (checkpoints); common/trainer.h gives the log one of its own.
static long long write_budget = -1;

// The number of bytes of a `bytes`-byte write a disk with `*budget` bytes left lets through (all when < 0).
static inline size_t write_allowance(size_t bytes, long long* budget) {
    if (*budget < 0) return bytes;
    size_t ok = (long long)bytes > *budget ? (size_t)*budget : bytes;
    *budget -= (long long)ok;
    return ok;
}

static inline AtomicWriter atomic_open(const std::string& path) {
    AtomicWriter w;
    w.path = path;
    w.tmp = path + ".tmp";
    w.f = fopen(w.tmp.c_str(), "wb");
    if (!w.f) fail("cannot create '%s': %s (is the output directory writable?)", w.tmp.c_str(), strerror(errno));
    return w;
}

static inline void atomic_write(AtomicWriter* w, const void* data, size_t bytes) {
    if (w->err || bytes == 0) return;
    size_t ok = write_allowance(bytes, &write_budget);
    if (fwrite(data, 1, ok, w->f) != ok) w->err = errno ? errno : EIO;
    else if (ok < bytes) w->err = ENOSPC;  // what still fit was written, as on a real full disk
}

// fsync of the directory holding path: makes a rename durable. Best effort: the rename has already happened, and
// some file systems refuse fsync on a directory.
static inline void fsync_parent_dir(const std::string& path) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    fsync(fd);
    close(fd);
}

static inline void atomic_commit(AtomicWriter* w) {
    int err = w->err;
    if (!err && fflush(w->f) != 0) err = errno;
    if (!err && fsync(fileno(w->f)) != 0) err = errno;
    if (fclose(w->f) != 0 && !err) err = errno;
    w->f = nullptr;
    if (!err && rename(w->tmp.c_str(), w->path.c_str()) != 0) err = errno;
    if (err) {
        unlink(w->tmp.c_str());
        fail("writing '%s' failed: %s; the previous '%s' (if any) is untouched (free disk space or point --out at "
             "another disk, then retry)", w->path.c_str(), strerror(err), w->path.c_str());
    }
    fsync_parent_dir(w->path);
}
