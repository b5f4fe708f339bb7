// The GPU trainer, train_gpt (train_gpt.cu: the CPU trainer's code built by nvcc), as a program.
//
// What it is: checks of the built binary. On a machine without a GPU (CI, the development machines): it prints the
// same usage as the CPU trainer and every run stops with exit status 1 and a clear message that names the CPU trainer,
// before it writes anything. On a machine with a GPU: short runs of both trainers over a set of model and attention
// variants give the same bits with --engine exact (checkpoints byte for byte; losses, gradient norms, validation
// losses, sink metrics and sampled text in the logs); both engines pass --check-state on every PyTorch fixture; the
// fast engine passes --check-fast over ten variants in fp32 (head sizes 16, 64, 96 and 128), and on the default model
// in tf32 and bf16. And, with nvcc alone, what the compiler said of the build: no warnings, and the streamed
// attention's rows and the exact GEMM's tiles in registers; and, with no tool at all, the ladders' roofline formulas.
// The math of the GPU build is tested on the CPU by the other test files: its loop bodies are the CPU's, and its
// exact matmul (gemm_exact_tiled) equals gemm_by_element, and so the CPU's, bit for bit (test_gemm_exact.cpp).
// What it is not: a GPU speed test.
// Needs: ./train_gpt and ./train_gpt_cpu in the working directory (make test builds both when nvcc exists and sets
// SK_GPU_BUILD=required; without nvcc these tests say they are skipped).
#include "test_helpers.h"
#include "../common/roofline.h"

#include <sys/wait.h>

#include <map>

// false (with a note) when the GPU trainer was not built because this machine has no nvcc
static bool gpu_binary_present() {
    const char* req = getenv("SK_GPU_BUILD");
    bool required = req && std::string(req) == "required";
    if (file_exists("./train_gpt")) return true;
    if (required) FAIL("./train_gpt is missing, but make test built it (SK_GPU_BUILD=required)");
    WARN("skipped: ./train_gpt was not built (no nvcc on this machine; make train_gpt needs the CUDA toolkit)");
    return false;
}

static bool gpu_present() {
    std::string out;
    return run_command("nvidia-smi -L", &out) == 0 && out.find("GPU") != std::string::npos;
}

// Whether a test that runs train_gpt on a GPU can run here: the binary and a GPU (else it says which is missing).
// Those tests carry the tag [device] as well, which dev/gpu/check.sh runs.
static bool gpu_run_possible() {
    if (!gpu_binary_present()) return false;
    if (gpu_present()) return true;
    WARN("skipped: no GPU on this machine (nvidia-smi -L lists none); this test runs where one exists");
    return false;
}

// How many of the GPU tests' processes start side by side: one a core, at most 8 (so that their starts, a CUDA
// context, cuBLAS, the model, overlap)
static int gpu_jobs() { return (int)std::min(8u, std::max(1u, std::thread::hardware_concurrency())); }

// Runs the commands gpu_jobs() at a time; each must exit 0 (a failure shows its command and output)
static void check_all_pass(const std::vector<std::string>& cmds) {
    std::vector<CommandResult> runs = run_commands(cmds, gpu_jobs());
    for (size_t i = 0; i < cmds.size(); i++) {
        INFO(cmds[i] << "\n" << runs[i].out);
        CHECK(runs[i].rc == 0);
    }
}

// The GPU tests start their processes side by side (run_commands, test_util.h): each command's status and output come
// back in order, and the commands do run at once: each of four waits (up to 10 s) until all four have started, which
// one at a time they never have.
TEST_CASE("run_commands runs commands side by side and returns each one's status and output in order", "[gpu]") {
    std::vector<std::string> cmds;
    for (int i = 0; i < 11; i++) cmds.push_back("echo line " + std::to_string(i) + "; exit " + std::to_string(i % 3));
    std::vector<CommandResult> r = run_commands(cmds, 3);
    REQUIRE(r.size() == cmds.size());
    for (int i = 0; i < 11; i++) {
        CHECK(r[i].rc == i % 3);
        CHECK(r[i].out == "line " + std::to_string(i) + "\n");
    }
    std::string dir = temp_dir();
    cmds.clear();
    for (int i = 0; i < 4; i++)
        cmds.push_back("touch " + dir + "/" + std::to_string(i) + "; for k in $(seq 200); do [ $(ls " + dir +
                       " | wc -l) -ge 4 ] && echo met " + std::to_string(i) + " && exit 0; sleep 0.05; done; exit 1");
    r = run_commands(cmds, 4);
    for (int i = 0; i < 4; i++) {
        CHECK(r[i].rc == 0);
        CHECK(r[i].out == "met " + std::to_string(i) + "\n");
    }
    CHECK(run_commands({}, 4).empty());
}

TEST_CASE("train_gpt prints the CPU trainer's usage under its own name", "[gpu]") {
    if (!gpu_binary_present()) return;
    std::string gpu, cpu;
    REQUIRE(run_command("./train_gpt --help", &gpu) == 0);
    REQUIRE(run_command("./train_gpt_cpu --help", &cpu) == 0);
    CHECK(gpu.rfind("usage: train_gpt [--preset NAME]", 0) == 0);
    // the same flags and defaults: only the program name differs
    size_t at = cpu.find("train_gpt_cpu");
    REQUIRE(at != std::string::npos);
    CHECK(gpu == cpu.substr(0, at) + "train_gpt" + cpu.substr(at + strlen("train_gpt_cpu")));
    // a bad flag is refused the same way, before any GPU is looked for
    std::string bad;
    CHECK(run_command("./train_gpt --layers 0", &bad) == 1);
    CHECK(bad.find("--layers") != std::string::npos);
}

TEST_CASE("train_gpt without a GPU stops at once with a message naming the CPU trainer", "[gpu]") {
    if (!gpu_binary_present()) return;
    if (gpu_present()) {
        WARN("a GPU is present: the no-GPU error path is not exercised here");
        return;
    }
    std::string dir = temp_dir(), out;
    for (std::string mode : {"--steps 1", "--load x.bin --sample", "--load x.bin --eval-sink --probe x.bin"}) {
        INFO(mode);
        CHECK(run_command("./train_gpt " + mode + " --out " + dir + "/run", &out) == 1);
        CHECK(out.find("no CUDA GPU is visible") != std::string::npos);
        CHECK(out.find("./train_gpt_cpu") != std::string::npos);
        CHECK(!file_exists(dir + "/run"));  // nothing written
    }
}

// The numbers of one log record type, in order: "key":value pairs of every line whose type is `type`.
static std::vector<double> log_numbers(const std::string& log, const std::string& type, const std::string& key) {
    std::vector<double> v;
    size_t pos = 0;
    while ((pos = log.find("{\"type\":\"" + type + "\"", pos)) != std::string::npos) {
        size_t end = log.find('\n', pos);
        std::string line = log.substr(pos, end - pos);
        size_t k = line.find("\"" + key + "\":");
        if (k != std::string::npos) v.push_back(atof(line.c_str() + k + key.size() + 3));
        pos = end;
    }
    return v;
}

// Each sample record's "text" field, without the run id that differs from run to run
static std::vector<std::string> log_samples(const std::string& log) {
    std::vector<std::string> v;
    size_t pos = 0;
    while ((pos = log.find("{\"type\":\"sample\"", pos)) != std::string::npos) {
        size_t end = log.find('\n', pos), t = log.find("\"text\":\"", pos);
        if (t >= end) break;
        size_t i = t + strlen("\"text\":\"");
        while (i < end && log[i] != '"') i += log[i] == '\\' ? 2 : 1;  // to the string's closing quote
        v.push_back(log.substr(t, i + 1 - t));
        pos = end;
    }
    return v;
}

TEST_CASE("on a GPU, train_gpt and train_gpt_cpu train, measure and sample bit for bit alike", "[gpu][device]") {
    if (!gpu_run_possible()) return;
    TinyRun r = tiny_run(6);
    std::string common = tiny_run_flags(r) + " --steps 6";
    const char* variants[] = {
        "",
        "--norm layernorm --placement post --ffn gelu --pos learned --tied 1 --bias 1",
        "--pos alibi --slot kv --value-bias 1 --gate headwise --mask window --mask-param 5",
        "--slot logit --pos sinusoidal --ffn reglu --gate elementwise",
        "--attn sigmoid --attn-norm sum --phi mlp --value-bias 1 --slot-shared 1",
        "--attn softpick --mask prefix --mask-param 5",
        "--attn clipped --phi elu1 --slot zero --ffn geglu",
        "--attn elu1 --sink-token 1 --fixed-token 0 --random-from 5 --random-to 9",
    };
    // every variant's two runs side by side, each in a directory of its own
    std::vector<std::string> cmds;
    for (size_t i = 0; i < std::size(variants); i++)
        for (int gpu = 0; gpu < 2; gpu++)
            // the GPU's sink records from the host thread (two probe chunks kept on the device, downloaded on the
            // second stream), the CPU's measured at their step
            cmds.push_back(std::string(gpu ? "env SK_SINK_THREAD=1 ./train_gpt --engine exact"
                                           : "env SK_SINK_THREAD=0 ./train_gpt_cpu") +
                           common + " " + variants[i] + " --out " + r.dir + "/v" + std::to_string(i) +
                           (gpu ? "/gpu" : "/cpu"));
    std::vector<CommandResult> runs = run_commands(cmds, gpu_jobs());
    for (size_t i = 0; i < std::size(variants); i++) {
        const char* v = variants[i];
        INFO("variant: " << v);
        std::string logs[2], model[2], state[2];
        for (int gpu = 0; gpu < 2; gpu++) {
            std::string dir = r.dir + "/v" + std::to_string(i) + (gpu ? "/gpu" : "/cpu");
            INFO(runs[2 * i + gpu].out);
            CHECK(runs[2 * i + gpu].rc == 0);
            logs[gpu] = slurp(dir + "/log.jsonl");
            model[gpu] = slurp(dir + "/model_00000006.bin");
            state[gpu] = state_numbers(dir + "/state_00000006.bin");  // the numbers, not the saved flags
            REQUIRE(system(("rm -rf " + dir).c_str()) == 0);
        }
        // the same statements in the same order, IEEE operations only (numerics.h): the same bits
        REQUIRE(!model[0].empty());
        CHECK(model[1] == model[0]);
        CHECK(state[1] == state[0]);
        for (const char* key : {"loss", "grad_norm"}) {
            std::vector<double> c = log_numbers(logs[0], "train", key), g = log_numbers(logs[1], "train", key);
            REQUIRE(c.size() == 6);
            CHECK(g == c);
        }
        CHECK(log_numbers(logs[1], "val", "val_loss") == log_numbers(logs[0], "val", "val_loss"));
        for (const char* key : {"alpha1_mean", "entropy_mean"}) {
            std::vector<double> c = log_numbers(logs[0], "sink", key), g = log_numbers(logs[1], "sink", key);
            REQUIRE(c.size() == 3);
            CHECK(g == c);
        }
        CHECK(log_samples(logs[1]) == log_samples(logs[0]));
        CHECK(log_samples(logs[1]).size() == 2);
    }
}

TEST_CASE("on a GPU, both engines of train_gpt pass --check-state on every PyTorch fixture", "[gpu][device]") {
    if (!gpu_run_possible()) return;
    std::vector<std::string> states = expand_glob(fixture("*_state.bin"), "fixtures"), cmds;
    REQUIRE(states.size() >= 30);
    for (const std::string& s : states)
        for (const char* engine : {"exact", "fast"}) {
            std::string model = s.substr(0, s.size() - strlen("_state.bin")) + "_model.bin";
            cmds.push_back("./train_gpt --engine " + std::string(engine) + " --load " + model + " --check-state " + s);
        }
    check_all_pass(cmds);
}

TEST_CASE("on a GPU, the fast engine gives the same bits run to run and resumes bit for bit (fp32 and bf16)",
          "[gpu][device]") {
    if (!gpu_run_possible()) return;
    TinyRun r = tiny_run(1);
    for (const char* precision : {"fp32", "bf16"}) {
        INFO("--precision " << precision);
        check_repeat_and_resume("./train_gpt", tiny_run_flags(r) + " --engine fast --precision " + precision);
    }
}

TEST_CASE("on a GPU, the fast engine passes --check-fast (variants in fp32, the default model in every precision)",
          "[gpu][device]") {
    if (!gpu_run_possible()) return;
    TinyRun r = tiny_run(1);
    std::string common = " --train " + r.dir + "/train.bin --val " + r.dir + "/val.bin --vocab 32 --max-seq-len 65 "
                         "--layers 2 --ffn-hidden 128 --batch 4 --seq-len 64 --probe-seqs 4 --probe-len 64";
    // 4 heads of 16 unless the variant says otherwise; the last three take the streamed attention's other block
    // shapes on the GPU: head sizes 64, 96 (llama-60m's) and 128
    const char* variants[] = {
        "",
        "--pos alibi --slot kv --value-bias 1 --gate headwise --mask window --mask-param 5",
        "--attn sigmoid --attn-norm sum --phi mlp --value-bias 1 --slot-shared 1",
        "--attn softpick --mask prefix --mask-param 5",
        "--attn clipped --phi elu1 --slot zero --ffn geglu",
        "--attn elu1 --attn-norm sum --sink-token 1",
        "--slot logit --pos sinusoidal --ffn reglu --gate elementwise",
        "--heads 2 --channels 128 --mask window --mask-param 40",
        "--heads 1 --channels 96 --slot kv",
        "--heads 2 --channels 256 --attn sigmoid",
    };
    std::vector<std::string> cmds;
    for (const char* v : variants)
        for (const char* precision : {"fp32", "tf32", "bf16"}) {
            if (v[0] && strcmp(precision, "fp32") != 0) continue;  // every variant in fp32, every precision once
            std::string shape = strstr(v, "--heads") ? "" : " --heads 4 --channels 64";
            cmds.push_back("./train_gpt --check-fast --precision " + std::string(precision) + common + shape + " " + v);
        }
    check_all_pass(cmds);
}

// dev/cuda/attention_backward.cu runs its kernels' block code on the CPU with --cpu-check (each thread's step in turn,
// shared memory as host arrays) against the row form: built by make test wherever nvcc is, so checked here.
TEST_CASE("the attention backward ladder's kernel code, run on the CPU, matches the row form", "[gpu]") {
    if (!gpu_binary_present()) return;  // nvcc built train_gpt, and with it build/dev_cuda/
    REQUIRE(file_exists("build/dev_cuda/attention_backward"));
    for (const char* v : {"--attn softmax", "--attn sigmoid --attn-norm sum", "--attn softpick", "--attn clipped --slot kv",
                          "--slot logit --mask window --mask-param 40", "--attn elu1 --attn-norm sum --mask prefix "
                          "--mask-param 33"}) {
        std::string out;
        int rc = run_command(std::string("build/dev_cuda/attention_backward --cpu-check -B 1 --heads 2 -T 150 ") + v, &out);
        INFO(v << "\n" << out);
        CHECK(rc == 0);
        CHECK(out.find("version 2: ok") != std::string::npos);
    }
}

// The ladders set each version's time against the card's roofline (common/roofline.h), from the SM count and clocks
// the driver reports. From the figures of an A100 SXM4 40GB and an H100 SXM5, its formulas must give NVIDIA's
// published peaks: A100 fp32 19.5, tf32 156, bf16 312 TFLOP/s and 1555 GB/s; H100 fp32 66.9 TFLOP/s at its 1980 MHz
// boost, tf32 494.7 and bf16 989.4 dense at the 1830 MHz its tensor figures are given for, and 3.35 TB/s.
TEST_CASE("the ladders' roofline gives the published peaks of the A100 and the H100", "[gpu]") {
    auto near = [](double got, double published) { return fabs(got / published - 1) < 0.005; };
    Roofline a100 = roofline_of(8, 0, 108, 1410000, 1215000, 5120);
    CHECK(near(a100.fp32_flops, 19.5e12));
    CHECK(near(a100.tf32_flops, 156e12));
    CHECK(near(a100.bf16_flops, 312e12));
    CHECK(near(a100.bytes_per_s, 1555e9));
    Roofline h100 = roofline_of(9, 0, 132, 1980000, 2619000, 5120);
    CHECK(near(h100.fp32_flops, 66.9e12));
    CHECK(near(h100.bytes_per_s, 3.35e12));
    Roofline h100_tensor = roofline_of(9, 0, 132, 1830000, 2619000, 5120);
    CHECK(near(h100_tensor.tf32_flops, 494.7e12));
    CHECK(near(h100_tensor.bf16_flops, 989.4e12));
    // a card without a tensor figure: none claimed; an sm_89 card's fp32 lanes are known (an L40S: 91.6 TFLOP/s)
    Roofline l40s = roofline_of(8, 9, 142, 2520000, 2250000, 384);
    CHECK(l40s.bf16_flops == 0);
    CHECK(near(l40s.fp32_flops, 91.6e12));
    // the time: the larger of compute and memory, in ms
    CHECK(near(roofline_ms(h100, h100.fp32_flops, 66.9e9, 0), 1.0));     // 1 ms of flops
    CHECK(near(roofline_ms(h100, h100.fp32_flops, 1e6, 3.352e9), 1.0));  // 1 ms of bytes
    CHECK(roofline_ms(l40s, l40s.bf16_flops, 1e12, 1e9) == 0);          // no rate: no roofline
}

// The engine boundary holds in the GPU build: device memory has no host element access, so host code cannot read it
// by accident; the explicit copies compile. Compiled here with nvcc (no GPU needed), both ways.
TEST_CASE("under nvcc, SkBuffer has no host element access, only explicit upload and download", "[gpu]") {
    if (!gpu_binary_present()) return;  // nvcc built train_gpt, so it is here to compile the probes
    std::string dir = temp_dir(), root, out;
    char cwd[4096];
    REQUIRE(getcwd(cwd, sizeof cwd) != nullptr);
    root = cwd;
    const char* nvcc = getenv("NVCC") ? getenv("NVCC") : "nvcc";
    auto compiles = [&](const std::string& name, const std::string& body) {
        write_bytes(dir + "/" + name + ".cu", "#include \"" + root + "/common/backend.h\"\nint main() {\n"
                    "    SkBuffer<float> b;\n    b.assign(4, 1.0f);\n    float x = 0;\n" + body + "\n    return (int)x;\n}\n");
        return run_command(std::string(nvcc) + " -std=c++17 --extended-lambda -c -o " + dir + "/" + name + ".o " +
                           dir + "/" + name + ".cu", &out) == 0;
    };
    CHECK(compiles("download", "    b.download(&x, 1);\n    b.upload(&x, 1, 3);"));
    CHECK(!compiles("index", "    x = b[0];"));
    CHECK(out.find("operator[]") != std::string::npos);
    CHECK(!compiles("iterate", "    for (float v : b) x += v;"));
}

// What nvcc said of the GPU build: make train_gpt writes its stderr, ptxas's figures for each kernel and nothing else
// when the build is clean, to build/train_gpt_resources.txt (dev/gpu/resources.py prints the figures as a table). At
// head sizes up to 64 a thread of the streamed attention keeps its rows in registers: the forward its query and output
// accumulator, the dq block its query, dO and dq (local memory at most one key tile's 64 scores, 256 bytes, and no
// spills), the dk/dv block its key's dk and dv (no local memory); and the exact GEMM keeps its 8 x 8 micro-tile in
// registers (no local memory). A row in local memory costs a load and a store per multiply-add on a GPU, and no CPU
// test can see it: these are the compiler's figures, so this needs only nvcc. And every kernel's stack frame fits the
// per-thread stack the trainer sets aside before its arenas (1872 bytes, the dq block's at head size 128, is over
// CUDA's default 1 KiB: a frame over the limit would take its memory at its first launch, when the arenas hold it).
TEST_CASE("the GPU build compiles without warnings, keeps the streamed attention's rows and the exact GEMM's tiles "
          "in registers, and no kernel needs more stack than the trainer sets aside", "[gpu]") {
    if (!gpu_binary_present()) return;
    const std::string path = "build/train_gpt_resources.txt";
    INFO(path << " (written by make train_gpt)");
    REQUIRE(file_exists(path));
    const std::string report = slurp(path);
    // each kernel: its mangled name, its architecture, then its stack frame, spill stores and spill loads in bytes
    auto kernels = regex_all("Compiling entry function '([^']+)' for '(sm_\\d+)'\\n[^\\n]*\\n\\s*(\\d+) bytes stack "
                             "frame, (\\d+) bytes spill stores, (\\d+) bytes spill loads",
                             report);
    // the block kernels by their state type, and the local memory each may use at head sizes up to 64
    const std::vector<std::pair<std::string, int>> rules = {
        {"8FlashRow", 64 * (int)sizeof(float)}, {"12FlashGradRow", 64 * (int)sizeof(float)}, {"13StreamKeyGrad", 0}};
    std::map<std::string, int> checked;  // by architecture and kind
    for (const auto& k : kernels) {
        const std::string &name = k[1], &arch = k[2];
        int stack = std::stoi(k[3]), spilled = std::stoi(k[4]) + std::stoi(k[5]);
        INFO(arch << " " << name << ": stack frame " << stack << " B, spills " << k[4] << " B stored, " << k[5]
                  << " B loaded");
        // Every frame fits the stack the trainer sets aside before its arenas: CUDA's default, or for the streamed
        // attention what attention_stream_stack_bytes gives its head size.
        size_t limit = SK_DEFAULT_STACK_BYTES;
        for (const auto& rule : rules) {
            auto hs = regex_all("^_Z\\d+sk_for_blocks_kernelI" + rule.first + "ILi(\\d+)EfE", name);
            if (hs.empty()) continue;
            limit = attention_stream_stack_bytes(std::stoi(hs[0][1]));
            checked[arch + " " + rule.first + " any"]++;
            if (std::stoi(hs[0][1]) > 64) continue;
            CHECK(stack <= rule.second);
            CHECK(spilled == 0);
            checked[arch + " " + rule.first]++;
        }
        CHECK((size_t)stack <= limit);
        if (name.find("gemm_exact_kernel") != std::string::npos) {
            CHECK(stack + spilled == 0);
            checked[arch + " gemm"]++;
        }
    }
    for (std::string arch : {"sm_80", "sm_90"}) {
        for (const auto& rule : rules) {
            CHECK(checked[arch + " " + rule.first] == 5);        // head sizes 4, 8, 16, 32, 64
            CHECK(checked[arch + " " + rule.first + " any"] == 7);  // and 96, 128
        }
        CHECK(checked[arch + " gemm"] == 1);
    }
    // The report is all that nvcc wrote to stderr: beside ptxas's figures, nothing (no warning of the host compiler,
    // of nvcc or of ptxas). So the GPU build compiles without warnings.
    std::string rest = regex_erase(report, "(?m)^(ptxas info[^\\n]*| *\\d+ bytes stack frame[^\\n]*)\\n");
    INFO("what nvcc wrote besides ptxas's figures:\n" << rest);
    CHECK(rest.empty());
}
