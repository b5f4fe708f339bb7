// common/profile.h: where a step's time goes, by kind of kernel, when the environment says SK_PROFILE=1.
//
// What it is: a scope timer (SK_PROFILE_SCOPE(PROF_MATMUL)) at the top of each layer function of the CPU trainer, the
// totals per kind, and a one-line table that a run prints at its end (and logs as a "profile" record) for
// dev/bench/bench.py (make bench). Off (the default) each scope costs one branch. The kinds: matmul (every linear layer
// but the classifier), attention (the core and its variants), norms, activations (FFN, feature maps, the gate, RoPE,
// embeddings and residual adds), classifier (the product with the output embedding, softmax and cross-entropy over the
// vocabulary), optimizer (gradient norm, AdamW, zeroing), probe (the sink metrics), other (the rest of the step:
// zeroing the activation gradients, data, host work).
// What it is not: a GPU profiler. In train_gpt the scopes are empty (kernels run asynchronously; use nsys or ncu).
#pragma once
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum ProfKind { PROF_MATMUL, PROF_ATTENTION, PROF_NORM, PROF_ACTIVATION, PROF_CLASSIFIER, PROF_OPTIMIZER, PROF_PROBE,
                PROF_KINDS };
static const char* const prof_names[PROF_KINDS] = {"matmul", "attention", "norms", "activations", "classifier",
                                                   "optimizer", "probe"};

struct Profile {
    bool on = false;
    int windows = 0;  // > 0 inside a timed region (a training step, a sink probe): only those count
    double ms[PROF_KINDS] = {0};
};

static inline Profile& profile() {
    static Profile p = [] {
        Profile q;
        const char* v = getenv("SK_PROFILE");
        q.on = v && strcmp(v, "1") == 0;
        return q;
    }();
    return p;
}

static inline double profile_clock_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Adds the time from its construction to its destruction to one kind (only the outermost scope counts).
struct ProfileScope {
    int kind;
    double t0 = 0;
    static int& depth() {
        static int d = 0;
        return d;
    }
    bool counted;
    explicit ProfileScope(int k) : kind(k), counted(profile().on && profile().windows > 0) {
        if (counted && depth()++ == 0) t0 = profile_clock_ms();
    }
    ~ProfileScope() {
        if (counted && --depth() == 0) profile().ms[kind] += profile_clock_ms() - t0;
    }
};

// The scopes count only inside a window: the trainer opens one for each training step and each sink probe, the time
// its summary reports, so the shares add up to it (validation and start-up are left out).
struct ProfileWindow {
    ProfileWindow() { profile().windows++; }
    ~ProfileWindow() { profile().windows--; }
};

#ifdef __CUDACC__
#define SK_PROFILE_SCOPE(kind)
#define SK_PROFILE_WINDOW()
#else
#define SK_PROFILE_SCOPE(kind) ProfileScope sk_profile_scope_(kind)
#define SK_PROFILE_WINDOW() ProfileWindow sk_profile_window_
#endif
