// common/engine.h: the boundary between the model math and everything around it.
//
// What it is: the few operations the shared host code (common/trainer.h: the training loop, checkpoints, validation,
// the sink probe, sampling, --check-state) needs from a model, as an abstract class. A trainer implements it once:
// train_gpt_cpu.cpp's ModelEngine is the CPU reference (with --engine fast, its streamed-attention form); compiled by
// nvcc it is the GPU engine, exact or fast. Every byte between the host and the model's memory crosses here, so the
// model's memory can be device memory.
// What it is not: the math (the trainers) or the loop (common/trainer.h).
//
// Conventions: host pointers in, host pointers out. Parameters, gradients and AdamW moments are float arrays of
// num_params() values laid out as the model file lays them out (common/config.h's ParamId order). T counts the data's
// tokens; an engine adds the sink token's position itself when the model has one.
#pragma once
#include <vector>
#include <stddef.h>
#include <memory>
#include <string>

#include "backend.h"
#include "config.h"
#include "numerics.h"

// The factor that clips a gradient of global norm gn to norm `clip` (none when clip is 0). SK_HD: a GPU computes it
// too (guarded_update), with the same bits.
SK_HD static inline double clip_scale(double gn, float clip) { return clip > 0 && gn > clip ? clip / gn : 1.0; }

// One AdamW update: t is the update's number (1-based, for the bias corrections); grad_scale multiplies every
// gradient first (global-norm clipping without touching the gradients).
struct AdamWStep {
    float lr = 0, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0;
    bool wd_exempt = false;  // no decay on norms, biases, embeddings (param_is_decay_exempt)
    int t = 1;
    float grad_scale = 1;
};

// What a training step read back (Engine::step_result): the mean loss over its micro-batches, the global norm of its
// gradient, and whether it updated the weights (both finite) or left them, and the AdamW moments, as they were.
struct StepResult {
    double loss = 0, grad_norm = 0;
    bool updated = false;
};

// What the sink metrics read after a forward pass without the head over B probe sequences: host pointers, valid until
// the next call into the engine. T here counts the model's positions (the data's T, plus one with a sink token).
struct ProbeView {
    int B = 0, T = 0;
    const float* att = nullptr;       // (L, B, NH, T, T) attention weights of the keys, 0 where masked
    const float* att_slot = nullptr;  // (L, B, NH, T) the slot's weight (--slot), else null
    const float* encoded = nullptr;   // (B, T, C) the residual stream entering layer 0
    const float* residual = nullptr;  // (L, B, T, C) the residual stream leaving each layer
    const float* qkv = nullptr;       // (L, B, T, 3C) q | k | v of each layer (k after RoPE)
};

class Engine {
  public:
    virtual ~Engine() = default;
    virtual const ModelConfig& config() const = 0;
    virtual std::string describe() const = 0;  // "exact", or what the fast engine runs
    virtual size_t num_params() const = 0;
    // The peak flop rate of what the matmuls run on (the GPU's at the engine's precision), for the step line's MFU; 0
    // where it is not known (the CPU).
    virtual double peak_flops() const = 0;
    // A forward pass over B sequences of T tokens; the mean loss over the positions with a loss when targets is given
    // (else 0). The logits stay for logits_row until backward (which writes their gradient over them), the activations
    // for backward.
    virtual double forward(const int* inputs, const int* targets, int B, int T) = 0;
    // Logits of sequence b, data position t of the last forward: the first V values into out.
    virtual void logits_row(int b, int t, float* out) = 0;
    virtual void zero_grad() = 0;
    // Gradients of the last forward's mean loss times `scale`, added to the gradients (micro-batches accumulate).
    virtual void backward(float scale) = 0;
    virtual double grad_norm() = 0;  // global L2 norm of the gradients
    virtual void update(const AdamWStep& step) = 0;
    // A training step that reads nothing back until it is queued whole (on a GPU the host does not wait for the
    // device inside it, but for an upload staging buffer 8 uploads back or a first allocation):
    // zero_grad; train_micro for each micro-batch (forward and backward, its gradients times 1/accum added, its mean
    // loss / accum added to the step's loss); guarded_update (the gradient norm, and `step` clipped to grad_clip,
    // applied only when the step's loss and norm are finite: the non-finite guard, evaluated where the numbers are);
    // then step_result, the step's one read. The same numbers as forward / backward / grad_norm / update.
    virtual void train_micro(const int* inputs, const int* targets, int B, int T, int accum) = 0;
    virtual void guarded_update(const AdamWStep& step, float grad_clip) = 0;
    virtual StepResult step_result() = 0;
    // A forward pass without the head for the sink metrics. Its views are valid until the next call, or with `keep`
    // they point into the engine's keep arena (the copies a host thread measures while the engine trains on), where
    // the probes kept since the last probe_send follow one another: they stay until the first kept probe after the
    // next probe_send. probe_send starts their download (on a GPU beside the next kernels) and gives the fence to
    // wait on before reading them.
    virtual ProbeView probe(const int* tokens, int B, int T, bool keep = false) = 0;
    virtual SkDownloadArena::Fence probe_send() = 0;
    // Allocates now what a run's passes will hold: forward and backward over B x T, probe chunks of probe_B x
    // probe_T, samples of up to sample_T tokens (0: none), and a keep arena of keep_values values (0: none; on a GPU
    // fewer where the device cannot spare them: the values granted are returned). A run too large for the memory then
    // stops before it starts, with the sizes, rather than at its first measurement or its first backward.
    virtual size_t reserve(int B, int T, int probe_B, int probe_T, int sample_T, size_t keep_values = 0) = 0;
    virtual void get_params(float* out) const = 0;
    virtual void set_params(const float* in) = 0;
    virtual void get_grads(float* out) const = 0;
    virtual void get_adam(float* m, float* v) const = 0;
    virtual void set_adam(const float* m, const float* v) = 0;
};

// Which engine computes the model: kind (ENGINE_EXACT or ENGINE_FAST; common/config.h says what each is) and the fast
// engine's matmul precision on a GPU.
struct EngineOptions {
    int kind = ENGINE_EXACT;
    int precision = PRECISION_FP32;
};

// An engine for a model of configuration c, parameters zero: defined by the trainer that includes common/trainer.h.
// `describe` of the engine says what it runs (the console shows it).
static std::unique_ptr<Engine> make_engine(const ModelConfig& c, const EngineOptions& o);
