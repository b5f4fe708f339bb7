// dev/data/make_tokenizer_vectors.js: writes test/fixtures/gpt2_vectors.json, the GPT-2 encoder test vectors, with an
// implementation independent of ours: the JavaScript encoder (Encoder.js) of the npm package gpt-3-encoder@1.1.4.
//
// What it is: for each test string (ASCII, contractions, whitespace runs, digits, punctuation, accented Latin, other
// scripts, CJK, emoji, <|endoftext|>, long runs) the ids of two encoders built from that package's Encoder.js:
//   - "ids": Encoder.js with its pattern's \s written \p{White_Space}, the Unicode property that OpenAI's encoder.py
//     (Python's regex module) and tiktoken (Rust's regex) use. JavaScript's \s differs from it at exactly two code
//     points: U+0085 NEXT LINE (not \s in JavaScript, white space in Unicode) and U+FEFF BYTE ORDER MARK (\s in
//     JavaScript, not white space in Unicode). These are OpenAI's ids.
//   - "js_ids": Encoder.js exactly as shipped, written only where it differs from "ids" (so the fixture shows the
//     package's deviation instead of hiding it).
// With "special": true, "<|endoftext|>" in the text is the token 50256 and the text around it is encoded on its own
// (tiktoken's allowed_special); Encoder.js knows no special tokens, so this script does that split.
// It also fingerprints the whole Brown corpus text (data/brown/brown_{train,val}.bin, byte-level shards whose tokens
// are the text's bytes): the number of GPT-2 tokens and an FNV-1a 64 hash of them as little-endian uint16.
// Two more changes in the patched copy, neither touching the ids: it appends with push instead of bpe_tokens.concat
// (quadratic on the 5.7 MB corpus), and its decode keeps a leading U+FEFF (TextDecoder drops it by default), so the
// script's decode(encode(text)) == text check holds on every vector.
// What it is not: part of the build or of the tests (test/test_tokenizer.cpp reads the fixture it writes).
// Run (from the repository root; `make gpt2-vectors` does it after fetching the package and `make data`):
//   node dev/data/make_tokenizer_vectors.js data/cache/gpt-3-encoder-1.1.4/package test/fixtures/gpt2_vectors.json
'use strict'
const fs = require('fs')
const path = require('path')

if (process.argv.length !== 4) {
  console.error('usage: node make_tokenizer_vectors.js PACKAGE_DIR OUT.json')
  console.error('  PACKAGE_DIR: the unpacked npm package gpt-3-encoder@1.1.4 (its package/ folder)')
  process.exit(1)
}
const pkgDir = process.argv[2]
const outPath = process.argv[3]

const shippedPattern = "const pat = /'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+/gu"
const openaiPattern = "const pat = /'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+" +
  '|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+/gu'
const shippedAppend = 'bpe_tokens = bpe_tokens.concat(new_tokens)'

// Evaluates Encoder.js source (after `edits`, each [from, to] required to match exactly once) as a CommonJS module.
function loadEncoder (edits) {
  let src = fs.readFileSync(path.join(pkgDir, 'Encoder.js'), 'utf-8')
  for (const [from, to] of edits) {
    if (src.split(from).length !== 2) {
    throw new Error(`Encoder.js in ${pkgDir} does not contain exactly one '${from}' (not gpt-3-encoder 1.1.4?)`)
  }
    src = src.replace(from, () => to)
  }
  const module = { exports: {} }
  new Function('require', '__dirname', 'module', src)(require, pkgDir, module)
  return module.exports
}

const js = loadEncoder([])
const openai = loadEncoder([[shippedPattern, openaiPattern], [shippedAppend, 'bpe_tokens.push(...new_tokens)'],
  ['new TextDecoder("utf-8")', 'new TextDecoder("utf-8", { ignoreBOM: true })']])

function encodeWith (enc, text, special) {
  if (!special) return enc.encode(text)
  const ids = []
  text.split('<|endoftext|>').forEach((part, i) => {
    if (i > 0) ids.push(50256)
    ids.push(...enc.encode(part))
  })
  return ids
}

const vectors = [
  ['empty', ''],
  ['ascii', 'Hello world'],
  ['ascii sentence', 'The quick brown fox jumps over the lazy dog.'],
  ['contractions', "I'm sure you're right: we've said they'll go, and she'd know it's John's."],
  ['contractions upper case', "I'M SURE DON'T YOU'RE"],
  ["contractions without a word", "'s 't 're 've 'm 'll 'd ''"],
  ['apostrophes', "rock'n'roll o'clock 'quoted' ma'am"],
  ['leading spaces', '   leading'],
  ['trailing spaces', 'trailing   '],
  ['inner space runs', 'a  b   c    d'],
  ['only spaces', '     '],
  ['tabs', 'tab\there\t\tand\t \tmixed'],
  ['newlines', 'line\nbreak\n\nparagraph\n\n\nthree'],
  ['only newlines', '\n\n\n'],
  ['crlf', 'windows\r\nline\r\n\r\nends'],
  ['space before newline', 'word   \nnext \n\tindented'],
  ['whitespace then word', ' \t \n word'],
  ['digits', '12345 3.14159 1,000,000 year 2024 a1b2c3 007'],
  ['long number', '12345678901234567890123456789012345678901234567890'],
  ['punctuation', 'Hello, world! ... !!!??? (a) [b] {c} @user #tag $5 100% a--b e-mail C++ C# x*y/z'],
  ['url', 'https://example.com/path/to?q=1&r=two#frag'],
  ['code', 'int main() { return x->y[0] == 1 ? 0 : -1; }'],
  ['endoftext as text', 'before<|endoftext|>after'],
  ['accented latin', 'café naïve résumé Ærøskøbing São Paulo Straße Łódź'],
  ['latin ligature', 'ﬁnance ﬂow'],
  ['cyrillic greek', 'Привет, мир! Καλημέρα κόσμε'],
  ['arabic hebrew', 'مرحبا بالعالم שלום עולם'],
  ['devanagari marks', 'नमस्ते दुनिया'],
  ['cjk', '你好，世界！日本語のテキスト。한국어 텍스트'],
  ['fullwidth', 'ＡＢＣ１２３'],
  ['other numbers', '½ ² Ⅻ ٣٤ ५'],
  ['emoji', 'I ❤️ NY 🗽 👍🏽'],
  ['emoji zwj and flags', '👨‍👩‍👧‍👦 family 🇺🇸🇫🇷'],
  ['nbsp and ideographic space', 'a\u00a0b c\u3000d e\u2028f'],
  ['zero width space', 'x\u200by'],
  ['mongolian vowel separator', 'a\u180e b \u180ec'],
  ['next line U+0085', 'x \u0085y \u0085\u0085 z'],
  ['byte order mark U+FEFF', '\ufeffx \ufeffy'],
  ['control characters', 'a\u0000b\u0001c\u001fd\u007fe'],
  ['long letter run', 'a'.repeat(1000)],
  ['long punctuation run', '='.repeat(300) + '\n' + '-'.repeat(77)],
  ['long space run', ' '.repeat(500) + 'x' + ' '.repeat(300)],
  ['paragraph', 'It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of ' +
    'foolishness...\n\n"Well," said he -- and paused.   Then: \'No.\'\n'],
  ['special: alone', '<|endoftext|>', true],
  ['special: between', 'Hello<|endoftext|>World', true],
  ['special: repeated', '<|endoftext|><|endoftext|> a <|endoftext|>', true],
  ['special: spaces around', 'end. <|endoftext|> Start', true]
]

const out = []
let differ = 0
for (const [name, text, special] of vectors) {
  const ids = encodeWith(openai, text, !!special)
  const jsIds = encodeWith(js, text, !!special)
  if (openai.decode(ids) !== text) throw new Error(`vector '${name}': decode(encode(text)) is not the text`)
  const v = { name, text, special: !!special, ids }
  if (JSON.stringify(jsIds) !== JSON.stringify(ids)) {
    v.js_ids = jsIds
    differ++
  }
  out.push(v)
}

function fingerprint (file) {
  const buf = fs.readFileSync(file)
  if (buf.length < 1024 || buf.readInt32LE(0) !== 20240520) throw new Error(`${file} is not a token shard (make data)`)
  const n = buf.readInt32LE(8)
  const bytes = Buffer.alloc(n)
  for (let i = 0; i < n; i++) bytes[i] = buf.readUInt16LE(1024 + 2 * i)
  const ids = openai.encode(bytes.toString('utf-8'))
  let h = 0xcbf29ce484222325n
  const prime = 0x100000001b3n
  const mask = (1n << 64n) - 1n
  for (const id of ids) {
    h = ((h ^ BigInt(id & 0xff)) * prime) & mask
    h = ((h ^ BigInt(id >> 8)) * prime) & mask
  }
  return { kind: 'corpus', name: file, bytes: n, tokens: ids.length, fnv1a64: h.toString(16).padStart(16, '0') }
}
for (const split of ['train', 'val']) out.push(fingerprint(`data/brown/brown_${split}.bin`))

fs.writeFileSync(outPath, '[\n' + out.map(v => JSON.stringify(v)).join(',\n') + '\n]\n')
console.log(`wrote ${out.length} entries to ${outPath}: ${vectors.length} vectors (${differ} where the shipped ` +
  'Encoder.js differs), 2 corpus fingerprints')
