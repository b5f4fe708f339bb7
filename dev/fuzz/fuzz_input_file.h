// dev/fuzz/fuzz_input_file.h: for harnesses whose reader takes a path: writes a fuzz input to a file in a private
// directory (on /dev/shm when it exists, so the file system is memory) and returns the path.
// What it is not: a reader (the harnesses call the project's own).
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string>

static inline std::string fuzz_input_file(const char* name, const void* data, size_t size) {
    static std::string dir;
    if (dir.empty()) {
        char shm[] = "/dev/shm/sinkscope_fuzz_XXXXXX", tmp[] = "/tmp/sinkscope_fuzz_XXXXXX";
        char* d = mkdtemp(shm);
        if (!d) d = mkdtemp(tmp);
        if (!d) {
            perror("fuzz_input_file: mkdtemp");
            abort();
        }
        dir = d;
    }
    std::string path = dir + "/" + name;
    FILE* f = fopen(path.c_str(), "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        perror(path.c_str());
        abort();
    }
    return path;
}
