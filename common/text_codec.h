// common/text_codec.h: text in and out of a trainer: encoding a prompt and decoding sampled ids, for both trainers.
//
// What it is: the choice of tokenizer for a model of vocabulary V, made once:
//   - `--tokenizer FILE` (llm.c's tokenizer file, common/tokenizer_file.h) when given;
//   - else the byte vocabulary when V = 256 (a token is a byte; the default Brown data);
//   - else the one *_tokenizer.bin beside the first training shard (dev/data/make_shards writes it there);
//   - else none: generated ids are logged as ids, and a prompt is refused.
// A tokenizer file must have exactly the model's vocabulary: a smaller one could not decode every id the model can
// draw, a larger one holds ids the model has no row for.
// Prompts are encoded with the byte vocabulary, or with GPT-2's BPE (common/gpt2_tokenizer.h, from --bpe-dir) when the
// tokenizer has GPT-2's 50257 tokens. An empty prompt starts from the end-of-text token, as llm.c does.
// What it is not: the sampler (sampling.h) or the generation loop (the trainers).
#pragma once
#include <dirent.h>
#include <memory>
#include <string>
#include <vector>

#include "gpt2_tokenizer.h"
#include "tokenizer_file.h"

struct TextCodec {
    bool available = false;  // a tokenizer was found: ids can be decoded
    TokenizerFile decoder;
    std::unique_ptr<Gpt2Tokenizer> gpt2;  // loaded on demand, for prompts in a GPT-2 vocabulary
    std::string bpe_dir;
};

// The one *_tokenizer.bin in the directory of `shard` ("" when there is none or more than one).
static inline std::string tokenizer_beside(const std::string& shard) {
    size_t slash = shard.rfind('/');
    std::string dir = slash == std::string::npos ? "." : shard.substr(0, slash);
    DIR* d = opendir(dir.c_str());
    if (!d) return "";
    std::string found;
    int count = 0;
    while (struct dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n.size() > 14 && n.compare(n.size() - 14, 14, "_tokenizer.bin") == 0) {
            found = dir + "/" + n;
            count++;
        }
    }
    closedir(d);
    return count == 1 ? found : "";
}

static inline void text_codec_open(TextCodec* tc, const std::string& tokenizer_path, int model_vocab,
                                   const std::string& first_train_shard, const std::string& bpe_dir) {
    tc->bpe_dir = bpe_dir;
    std::string path = tokenizer_path;
    if (path.empty() && model_vocab != 256 && !first_train_shard.empty()) path = tokenizer_beside(first_train_shard);
    if (!path.empty()) {
        tc->decoder = read_tokenizer_file(path);
        if ((int)tc->decoder.tokens.size() != model_vocab)
            fail("tokenizer file '%s' has %zu tokens, but the model's vocabulary has %d: they must be the same "
                 "vocabulary (a tokenizer for another model or other data? pass the --tokenizer that made the "
                 "model's data)", path.c_str(), tc->decoder.tokens.size(), model_vocab);
        tc->available = true;
    } else if (model_vocab == 256) {
        tc->decoder.path = "(byte vocabulary)";
        tc->decoder.tokens = byte_tokenizer_tokens();
        tc->decoder.eot = BYTE_TOKENIZER_EOT;
        tc->available = true;
    }
}

// The ids of a prompt; an empty prompt is the end-of-text token alone.
static inline std::vector<int> text_encode(TextCodec* tc, const std::string& prompt) {
    if (!tc->available)
        fail("no tokenizer for this model's vocabulary: pass --tokenizer FILE (an llm.c tokenizer file, written by "
             "dev/data/make_shards beside its shards)");
    if (prompt.empty()) return {tc->decoder.eot};
    if (tc->decoder.tokens.size() == 256) {
        std::vector<int> ids;
        for (unsigned char ch : prompt) ids.push_back(ch);
        return ids;
    }
    if (tc->decoder.tokens.size() != 50257)
        fail("--prompt: the tokenizer '%s' has %zu tokens; prompts can be encoded for the byte vocabulary or GPT-2's "
             "(50257), so leave --prompt empty to start from end-of-text", tc->decoder.path.c_str(),
             tc->decoder.tokens.size());
    if (!tc->gpt2) {
        tc->gpt2.reset(new Gpt2Tokenizer());
        gpt2_load_dir(tc->gpt2.get(), tc->bpe_dir);
    }
    return gpt2_encode(tc->gpt2.get(), prompt, true);
}

static inline std::string text_decode(const TextCodec& tc, const std::vector<int>& ids) {
    if (!tc.available) {
        std::string s;
        for (size_t i = 0; i < ids.size(); i++) s += (i ? " " : "") + std::to_string(ids[i]);
        return s;
    }
    return tokenizer_decode(tc.decoder, ids.data(), ids.size());
}
