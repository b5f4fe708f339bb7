// common/random.h: the one random generator of sinkscope (init, batch order, data manipulations, sampling).
//
// What it is: splitmix64, tiny and the same in C++ and CUDA, so both trainers draw the same numbers from the same
// seed, and a Box-Muller normal built on it (used by the init), deterministic across platforms.
// What it is not: a statistics library.
#pragma once
#include <math.h>
#include <stdint.h>

static inline uint64_t splitmix64(uint64_t* state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// N(0, 1) from two draws: u1 in (0, 1], u2 in [0, 1).
static inline double rng_normal(uint64_t* rng) {
    double u1 = ((splitmix64(rng) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}
