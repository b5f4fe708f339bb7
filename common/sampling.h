// sampling.h: picks the next token from one row of logits, with temperature and top-k, reproducibly from a seed.
//
// What it is: sample_token(logits, V, temperature, top_k, &rng) for text generation in both trainers. The candidates
// are the top_k largest logits (all V when top_k is 0 or >= V), ordered by logit, larger first, and by id on ties,
// which makes the candidate set and its order independent of how the sort is implemented. Their probabilities are
// softmax(logit / temperature) over the candidates, computed in double; one uniform number u in [0, 1) from the
// project's generator (splitmix64, common/random.h) picks the first candidate whose cumulative probability exceeds
// u. Temperature 0 is greedy decoding: the largest logit (the lowest id among equal ones).
// Reproducibility: every call draws exactly one number from *rng, temperature 0 included, so the generator's state
// after n tokens depends only on n; the same logits, settings and state give the same id on every machine whose exp()
// agrees (numerics.h is the one place that would change that).
// What it is not: a generation loop (the trainer runs the model and calls this once per new token) or nucleus (top-p)
// sampling. A model whose vocabulary is padded or larger than the tokenizer's should pass V = the tokenizer's size,
// so no id without text is ever drawn.
// Build: header-only, nothing to link.
#pragma once
#include <math.h>
#include <stdint.h>
#include <algorithm>
#include <vector>

#include "errors.h"
#include "numerics.h"
#include "random.h"

static inline int sample_token(const float* logits, int V, float temperature, int top_k, uint64_t* rng) {
    if (V <= 0) fail("sampling: the vocabulary size is %d, it must be positive", V);
    if (!(temperature >= 0) || !isfinite(temperature))
        fail("sampling: temperature %g must be a finite number >= 0 (0 = greedy)", temperature);
    if (top_k < 0) fail("sampling: top-k %d must be >= 0 (0 = no top-k cut)", top_k);
    for (int i = 0; i < V; i++)
        if (!isfinite(logits[i]))
            fail("sampling: logit %d is %g; the model produced a non-finite value (diverged?)", i, logits[i]);
    // [0, 1) with 53 random bits: every double in it is exact, and 1 is never drawn
    double u = (double)(splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0);

    auto before = [logits](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    if (temperature == 0) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (before(i, best)) best = i;
        return best;
    }
    int k = top_k == 0 || top_k > V ? V : top_k;
    std::vector<int> cand(V);
    for (int i = 0; i < V; i++) cand[i] = i;
    if (k < V) std::nth_element(cand.begin(), cand.begin() + k, cand.end(), before);
    std::sort(cand.begin(), cand.begin() + k, before);

    std::vector<double> p(k);
    double sum = 0, top = logits[cand[0]];
    for (int j = 0; j < k; j++) {
        p[j] = sk_exp(((double)logits[cand[j]] - top) / temperature);
        sum += p[j];
    }
    double target = u * sum, acc = 0;
    for (int j = 0; j < k; j++) {
        acc += p[j];
        if (acc > target) return cand[j];
    }
    return cand[k - 1];  // u * sum rounded up to the full sum
}
