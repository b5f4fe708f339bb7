#!/usr/bin/python3
"""Write the King James Bible as JSON lines, one book per line, for dev/data/make_shards.

Usage (from the repository root; `make data-kjv-byte` / `make data-kjv-gpt2` run it):
    /usr/bin/python3 dev/data/prepare_kjv.py --out data/cache/kjv.jsonl

Source: Debian's bible-kjv package (apt-get install bible-kjv; it pulls bible-kjv-text, whose
/usr/lib/bible.data holds the compressed text). Its `bible -f Gen1:1-Rev22:21` prints every verse on
one line as "<book><chapter>:<verse> <text>", e.g. "Ge1:1 In the beginning God created the heaven and
the earth." The text is pure ASCII.

Output: one object {"book": "Ge", "text": "..."} per book (66, in canonical order), where text is the
book's verses without their references, one verse per line, joined with "\\n" (no trailing newline),
so "\\n\\n" never occurs inside a document. Written atomically. Checked: 66 books, 31,102 verses.
Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

from prepare_brown import write_atomically

VERSE_RE = re.compile(r"^([1-3]?[A-Za-z]+)([0-9]+):([0-9]+) (.*)$")
BOOKS = 66
VERSES = 31102


def die(msg):
    sys.stderr.write("prepare_kjv: error: %s\n" % msg)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description="Write the KJV Bible as JSON lines, one book per line.")
    ap.add_argument("--out", required=True, help="output JSON-lines file")
    args = ap.parse_args()

    bible = shutil.which("bible")
    if bible is None:
        die("the `bible` program is missing: apt-get install bible-kjv (Debian; it brings the KJV text)")
    res = subprocess.run([bible, "-f", "Gen1:1-Rev22:21"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if res.returncode != 0:
        die("`bible -f Gen1:1-Rev22:21` failed (exit %d): %s" % (res.returncode, res.stderr.decode(errors="replace")))
    books = []  # [(abbreviation, [verse text])]
    for n, line in enumerate(res.stdout.decode("ascii").splitlines(), 1):
        m = VERSE_RE.match(line)
        if not m:
            die("line %d of `bible` output is not '<book><chapter>:<verse> <text>': %r" % (n, line[:80]))
        if not books or books[-1][0] != m.group(1):
            books.append((m.group(1), []))
        books[-1][1].append(m.group(4))
    verses = sum(len(v) for _, v in books)
    if len(books) != BOOKS or verses != VERSES:
        die("expected %d books and %d verses from `bible`, got %d and %d (a different bible-kjv-text?)"
            % (BOOKS, VERSES, len(books), verses))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    lines = "".join(json.dumps({"book": b, "text": "\n".join(v)}) + "\n" for b, v in books)
    write_atomically(args.out, lines.encode("ascii"))
    print("KJV (Debian bible-kjv-text): %d books, %d verses, %d bytes of text -> %s"
          % (len(books), verses, sum(len("\n".join(v)) for _, v in books), args.out))


if __name__ == "__main__":
    main()
