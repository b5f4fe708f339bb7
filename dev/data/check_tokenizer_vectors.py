#!/usr/bin/python3
"""Check test/fixtures/gpt2_vectors.json against OpenAI's own GPT-2 encoder algorithm.

Usage (from the repository root; needs the `regex` module: apt-get install python3-regex):
    /usr/bin/python3 dev/data/check_tokenizer_vectors.py [test/fixtures/gpt2_vectors.json]

What it is: a second, independent opinion on the fixture that make_tokenizer_vectors.js writes from the npm
gpt-3-encoder's JavaScript. The encoder below is OpenAI's gpt-2 src/encoder.py (bytes_to_unicode, get_pairs, bpe,
encode) transliterated with its exact pattern and Python's `regex` module, which is what OpenAI ran. For every
vector it prints whether its "ids" match; "special" vectors are split at <|endoftext|> (token 50256) first, as
tiktoken does with allowed_special. It also recomputes the two Brown corpus fingerprints when data/brown exists.
Exit status 1 if anything differs.
What it is not: part of `make test` (the C++ tests read the fixture).
"""

import json
import os
import struct
import sys

try:
    import regex as re
except ImportError:
    sys.exit("check_tokenizer_vectors: the `regex` module is missing (apt-get install python3-regex)")

BPE_DIR = "data/gpt2"


def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    return set(zip(word, word[1:]))


class Encoder:
    def __init__(self, encoder, bpe_merges):
        self.encoder = encoder
        self.byte_encoder = bytes_to_unicode()
        self.bpe_ranks = dict(zip(bpe_merges, range(len(bpe_merges))))
        self.cache = {}
        self.pat = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        bpe_tokens = []
        for token in re.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            bpe_tokens.extend(self.encoder[bpe_token] for bpe_token in self.bpe(token).split(" "))
        return bpe_tokens


def encode_special(enc, text):
    ids = []
    for i, part in enumerate(text.split("<|endoftext|>")):
        if i > 0:
            ids.append(50256)
        ids.extend(enc.encode(part))
    return ids


def fnv1a64_uint16(ids):
    h = 0xcbf29ce484222325
    for i in ids:
        for b in (i & 0xFF, i >> 8):
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def shard_text(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack_from("<i", data, 8)[0]
    return bytes(struct.unpack_from("<%dH" % n, data, 1024)).decode("utf-8")


def main():
    fixture = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/gpt2_vectors.json"
    with open(os.path.join(BPE_DIR, "encoder.json"), encoding="utf-8") as f:
        encoder = json.load(f)
    with open(os.path.join(BPE_DIR, "vocab.bpe"), encoding="utf-8") as f:
        merges = [tuple(m.split()) for m in f.read().split("\n")[1:-1]]
    enc = Encoder(encoder, merges)
    with open(fixture, encoding="utf-8") as f:
        entries = json.load(f)
    bad = 0
    for e in entries:
        if e.get("kind") == "corpus":
            if not os.path.exists(e["name"]):
                print("skip   corpus %s (missing: run `make data`)" % e["name"])
                continue
            ids = enc.encode(shard_text(e["name"]))
            ok = len(ids) == e["tokens"] and fnv1a64_uint16(ids) == e["fnv1a64"]
            print("%s corpus %s: %d tokens" % ("ok    " if ok else "DIFFER", e["name"], len(ids)))
        else:
            ids = encode_special(enc, e["text"]) if e["special"] else enc.encode(e["text"])
            ok = ids == e["ids"]
            note = " (the shipped Encoder.js differs: js_ids)" if "js_ids" in e else ""
            print("%s %s%s" % ("ok    " if ok else "DIFFER", e["name"], note))
        bad += not ok
    print("%d of %d entries differ from encoder.py" % (bad, len(entries)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
