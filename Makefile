# sinkscope Makefile. `make train` = set-up + build + default data + a short CPU emergence run; `make test` = the tests.
# Both install what is missing first (dev/setup.sh: apt-get as root, else the exact sudo line to run).
CXX ?= g++
# -ffp-contract=off: the compiler never fuses a*b+c on its own; every fma in the model is explicit (common/numerics.h),
# which keeps results identical across machines and reproducible by the GPU exact mode. -fno-math-errno: sqrt need not
# set errno, so loops with a sqrt vectorise (vsqrtps rounds exactly as sqrtf does; no result changes).
CXXFLAGS ?= -O3 -march=native -std=c++17 -fopenmp -ffp-contract=off -fno-math-errno -Wall -Wextra -Wno-unused-function
PYTHON := /usr/bin/python3
HEADERS := attention_variants.cuh sink_metrics.h $(wildcard common/*.h) $(wildcard cpu/*.h) $(wildcard kernels/*.cuh)

.PHONY: dev-cuda all train train-emergence plots experiment experiments results-table data test test-asan fuzz docs clean deps-train deps-test deps-bench bench gpu-bundle
all: train_gpt_cpu

# the system packages each goal needs (order-only: checked once per make run, never a reason to rebuild)
deps-train:
	@bash dev/setup.sh train
deps-test:
	@bash dev/setup.sh test
deps-bench:
	@bash dev/setup.sh bench

train_gpt_cpu: train_gpt_cpu.cpp $(HEADERS) | deps-train
	$(CXX) $(CXXFLAGS) -o $@ $< -lm -lpcre2-8

# The GPU trainer: the same program built by nvcc (train_gpt.cu). -fmad=false is nvcc's -ffp-contract=off. Machine code
# for sm_80 (A100) and sm_90 (H100/H200), plus compute_90 PTX that newer GPUs compile when they load it. What ptxas
# gives each kernel (registers, local memory, spills) goes to build/train_gpt_resources.txt, which test_gpu.cpp reads;
# the console shows the rest (warnings, errors).
NVCC ?= nvcc
NVCCFLAGS ?= -O3 -std=c++17 --extended-lambda -fmad=false -Xcompiler -fopenmp,-ffp-contract=off \
	-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]
train_gpt build/train_gpt_resources.txt &: train_gpt.cu train_gpt_cpu.cpp $(HEADERS) | deps-train
	@command -v $(NVCC) >/dev/null || { echo "error: $(NVCC) not found: the GPU trainer needs the CUDA toolkit (nvcc on PATH, or make NVCC=/path/to/nvcc); the CPU trainer is make train_gpt_cpu"; exit 1; }
	@mkdir -p build
	$(NVCC) $(NVCCFLAGS) --resource-usage -o train_gpt $< -lm -lpcre2-8 -lcublasLt -lcublas \
		2> build/train_gpt_resources.txt; \
	rc=$$?; grep -v -e '^ptxas info' -e '^ *[0-9]* bytes stack frame' build/train_gpt_resources.txt >&2; exit $$rc

# The trainer's PTX for sm_90 (no machine code): dev/gpu/resources.py --ptx counts each kernel's shared-memory reads
# by width from it
build/train_gpt.ptx: train_gpt.cu train_gpt_cpu.cpp $(HEADERS) | deps-train
	@mkdir -p build
	$(NVCC) $(filter-out -gencode arch=%,$(NVCCFLAGS)) -arch=compute_90 -ptx -o $@ $<

# dev/cuda/: kernel ladders, one family per file, numbered versions each checked against the CPU (they run on a GPU;
# here they only compile). Plain nvcc settings: contraction allowed, these are the fast kernels.
DEV_CUDA_FLAGS ?= -O3 -std=c++17 -Xptxas -warn-spills -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]
DEV_CUDA_BINS := $(patsubst dev/cuda/%.cu,build/dev_cuda/%,$(wildcard dev/cuda/*.cu))
dev-cuda: $(DEV_CUDA_BINS)
build/dev_cuda/%: dev/cuda/%.cu dev/cuda/ladder.cuh $(HEADERS) | deps-train
	@mkdir -p build/dev_cuda
	$(NVCC) $(DEV_CUDA_FLAGS) -o $@ $<

data: data/brown/brown_train.bin
data/brown/brown_train.bin data/brown/brown_val.bin &: dev/data/prepare_brown.py | deps-train
	$(PYTHON) dev/data/prepare_brown.py --out data/brown --cache data/cache

# the demo run: a new run each time (--overwrite replaces the previous one in runs/default)
train: train_gpt_cpu data
	./train_gpt_cpu --out runs/default --overwrite

# the default model with a fixed first token (byte 0, absent from the text) and weight decay 0.5 for 16M tokens: the
# smallest configuration in which the sink and its massive activation form on 2 cores while the sigmoid twin's do not
# (docs/results.md). An interrupted run (Ctrl-C saves it) continues where it stopped.
EMERGENCE_FLAGS := --fixed-token 0 --fixed-pos 0 --wd 0.5 --steps 4000 --sink-every 250 --val-every 500 --sample-every 1000 \
	--save-every 250
train-emergence: train_gpt_cpu data
	@if ls runs/emergence/state_*.bin >/dev/null 2>&1; then set -x; ./train_gpt_cpu --resume runs/emergence; \
	else set -x; ./train_gpt_cpu --out runs/emergence $(EMERGENCE_FLAGS); fi

# figures from run directories (dev/experiments/plot.py): Sink_1 and loss against tokens, norm ratios, alpha_1 heatmaps,
# and an index.html. The README's emergence figure: the command under the figure in README.md.
RUNS ?= runs/emergence
PLOTS_OUT ?= runs/figures
PLOTS_TITLE ?= sinkscope runs
plots: | deps-test
	$(PYTHON) dev/experiments/plot.py $(RUNS) --out $(PLOTS_OUT) --title "$(PLOTS_TITLE)"

# the paper's findings as named experiments (dev/experiments/run.py, docs/results.md). make experiment EXP="kv-bias
# softpick" trains their runs in runs/exp (an interrupted one resumes, a finished one is reused), appends a row per run
# to docs/results.tsv and draws runs/exp/NAME/figures; DEVICE=gpu runs the GPU configuration with ./train_gpt;
# SEEDS=N overrides the catalogue's seeds. make experiments lists them; make results-table rewrites the tables of
# docs/results.md and the README from docs/results.tsv.
EXP ?=
DEVICE ?= cpu
SEEDS ?= 0
experiment: $(if $(filter gpu,$(DEVICE)),train_gpt,train_gpt_cpu) data | deps-test
	@test -n "$(EXP)" || { echo 'usage: make experiment EXP="NAME ..." (make experiments lists the names)'; exit 2; }
	$(PYTHON) dev/experiments/run.py run $(EXP) --device $(DEVICE) --seeds $(SEEDS)
experiments:
	@$(PYTHON) dev/experiments/run.py list
results-table: | deps-test
	$(PYTHON) dev/experiments/run.py report --into docs/results.md
	$(PYTHON) dev/experiments/run.py report --summary --into README.md

TEST_SRCS := $(wildcard test/test_*.cpp)
TEST_LDLIBS := -lpcre2-8
TEST_OBJS := $(TEST_SRCS:test/%.cpp=build/test/%.o)
TEST_HEADERS := test/test_helpers.h test/test_util.h dev/data/make_shards.h
CATCH_MAIN := /usr/lib/libCatch2WithMain.a

build/test/%.o: test/%.cpp $(TEST_HEADERS) train_gpt_cpu.cpp $(HEADERS) | deps-test
	@mkdir -p build/test
	$(CXX) $(CXXFLAGS) -O2 -c -o $@ $<

build/test/run_tests: $(TEST_OBJS)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(CATCH_MAIN) -lm $(TEST_LDLIBS)

# With nvcc on PATH, make test also builds the GPU trainer and test_gpu.cpp requires it (no GPU is needed for that).
HAVE_NVCC := $(shell command -v $(NVCC) 2>/dev/null)
GPU_BUILD := $(if $(HAVE_NVCC),train_gpt $(DEV_CUDA_BINS))
# the tokenizer tests read the whole Brown corpus (decode(encode(x)) == x), so the tests need `make data` first
test: build/test/run_tests train_gpt_cpu build/make_shards $(GPU_BUILD) data
	@$(if $(HAVE_NVCC),,echo "note: $(NVCC) not found, so the GPU trainer is not built and its tests are skipped")
	SK_GPU_BUILD=$(if $(HAVE_NVCC),required,absent) ./build/test/run_tests

# the whole CPU test suite under AddressSanitizer + UndefinedBehaviorSanitizer (any report fails the run)
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ASAN_OBJS := $(TEST_SRCS:test/%.cpp=build/asan/%.o)
build/asan/%.o: test/%.cpp $(TEST_HEADERS) train_gpt_cpu.cpp $(HEADERS) | deps-test
	@mkdir -p build/asan
	$(CXX) $(CXXFLAGS) $(ASAN_FLAGS) -c -o $@ $<
build/asan/run_tests: $(ASAN_OBJS)
	$(CXX) $(CXXFLAGS) $(ASAN_FLAGS) -o $@ $^ $(CATCH_MAIN) -lm $(TEST_LDLIBS)
build/asan/test_tokenizer.o build/test/test_tokenizer.o: dev/data/make_shards.h
test-asan: build/asan/run_tests train_gpt_cpu build/make_shards data
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/asan/run_tests

# a bounded libFuzzer run of every file and flag parser (clang; dev/fuzz/README.md)
FUZZ_SECONDS ?= 10
fuzz:
	dev/fuzz/run.sh $(FUZZ_SECONDS)

# docs/flags.md from the flag table (./train_gpt_cpu --help); test/test_docs.cpp fails when they differ
# this trainer against the PyTorch reference model, side by side (dev/bench/bench.py: about 7 minutes on 2 cores;
# BENCH_FLAGS=--quick for a one-round smoke run, --only NAME for one shape)
BENCH_FLAGS ?=
build/gemm_bench: dev/bench/gemm_bench.cpp $(HEADERS) | deps-train
	@mkdir -p build
	$(CXX) $(CXXFLAGS) -o $@ $<
bench: train_gpt_cpu build/gemm_bench data | deps-bench
	$(PYTHON) dev/bench/bench.py $(BENCH_FLAGS)

docs: train_gpt_cpu
	dev/make_flag_docs.sh > docs/flags.md

# Binaries for dev/gpu/check.sh on a GPU machine that has only a driver: train_gpt, and train_gpt_cpu and the tests
# built for any x86-64 with AVX2 and FMA (x86-64-v3: without hardware fma every sk_fma is a slow library call), with
# the PCRE2 library beside them.
PORTABLE_CXXFLAGS := $(filter-out -march=native,$(CXXFLAGS)) -march=x86-64-v3
gpu-bundle: train_gpt build/test/run_tests
	@mkdir -p build/gpu/lib build/gpu/obj
	cp train_gpt build/gpu/
	$(MAKE) dev-cuda && mkdir -p build/gpu/dev_cuda && cp $(DEV_CUDA_BINS) build/gpu/dev_cuda/
	$(CXX) $(PORTABLE_CXXFLAGS) -o build/gpu/train_gpt_cpu train_gpt_cpu.cpp -lm -lpcre2-8
	for f in $(TEST_SRCS); do $(CXX) $(PORTABLE_CXXFLAGS) -O2 -c -o build/gpu/obj/$$(basename $$f .cpp).o $$f || exit 1; done
	$(CXX) $(PORTABLE_CXXFLAGS) -o build/gpu/run_tests build/gpu/obj/*.o $(CATCH_MAIN) -lm $(TEST_LDLIBS)
	cp -L $$(ldconfig -p | grep -m1 'libpcre2-8.so.0 ' | awk '{print $$NF}') build/gpu/lib/

# common/numerics.h's float exp/log/tanh against libm over all 2^32 inputs (a few minutes on 2 cores)
build/numerics_check: dev/numerics_check.cpp common/numerics.h
	@mkdir -p build
	$(CXX) $(CXXFLAGS) -o $@ $< -lm

clean:
	rm -rf build train_gpt_cpu train_gpt

# the data pipeline: GPT-2 and byte-level shards of the built-in corpora or any text (docs/data.md)
include dev/data/data.mk
