// common/json_read.h: the little JSON reading sinkscope's data tools need, over a byte buffer with a cursor.
//
// What it is: strings with every escape (\" \\ \/ \b \f \n \r \t \uXXXX, surrogate pairs joined into one code point,
// written out as UTF-8), integers, and skipping any value, so that gpt2_tokenizer.h can read encoder.json (one flat
// object of string -> id) and dev/data/make_shards.h can pull the "text" field out of a JSON-lines record.
// What it is not: a JSON library: no document tree, no number parsing beyond integers, no writer. Errors name the
// input (`where`, e.g. "encoder.json 'path'" or "'file.jsonl' line 12") and the byte offset, then fail().
// Build: header-only, nothing to link.
#pragma once
#include <ctype.h>
#include <stdint.h>
#include <string>

#include "errors.h"

struct JsonCursor {
    const char* begin;  // start of the buffer, for byte offsets in errors
    const char* p;
    const char* end;
    std::string where;
};

static inline JsonCursor json_cursor(const char* data, size_t n, const std::string& where) {
    return JsonCursor{data, data, data + n, where};
}

[[noreturn]] static inline void json_fail(const JsonCursor* c, const char* what) {
    fail("%s, byte %zu: %s", c->where.c_str(), (size_t)(c->p - c->begin), what);
}

static inline void json_skip_ws(JsonCursor* c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

// Consumes `ch` after optional whitespace, or fails saying what was expected.
static inline void json_expect(JsonCursor* c, char ch, const char* expected) {
    json_skip_ws(c);
    if (c->p >= c->end || *c->p != ch) json_fail(c, expected);
    c->p++;
}

static inline void json_append_utf8(std::string* out, uint32_t cp) {
    if (cp < 0x80) {
        out->push_back((char)cp);
    } else if (cp < 0x800) {
        out->push_back((char)(0xC0 | (cp >> 6)));
        out->push_back((char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out->push_back((char)(0xE0 | (cp >> 12)));
        out->push_back((char)(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back((char)(0x80 | (cp & 0x3F)));
    } else {
        out->push_back((char)(0xF0 | (cp >> 18)));
        out->push_back((char)(0x80 | ((cp >> 12) & 0x3F)));
        out->push_back((char)(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back((char)(0x80 | (cp & 0x3F)));
    }
}

static inline uint32_t json_hex4(JsonCursor* c) {
    if (c->end - c->p < 4) json_fail(c, "\\u needs four hex digits");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char h = *c->p;
        int d = h >= '0' && h <= '9'   ? h - '0'
                : h >= 'a' && h <= 'f' ? h - 'a' + 10
                : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                       : -1;
        if (d < 0) json_fail(c, "\\u needs four hex digits");
        v = v * 16 + (uint32_t)d;
        c->p++;
    }
    return v;
}

// Reads a string (the cursor may sit on whitespace before its opening quote) into *out as UTF-8. Bytes >= 0x80 are
// copied as they are (the caller validates UTF-8 where it matters); a lone surrogate escape is an error, because it
// has no UTF-8 form.
static inline void json_read_string(JsonCursor* c, std::string* out) {
    out->clear();
    json_expect(c, '"', "expected a string");
    for (;;) {
        const char* run = c->p;
        while (c->p < c->end && *c->p != '"' && *c->p != '\\' && (unsigned char)*c->p >= 0x20) c->p++;
        out->append(run, c->p - run);
        if (c->p >= c->end) json_fail(c, "the string is not closed (truncated input?)");
        char ch = *c->p;
        if (ch == '"') {
            c->p++;
            return;
        }
        if (ch != '\\') json_fail(c, "raw control character inside a string (it must be escaped)");
        c->p++;
        if (c->p >= c->end) json_fail(c, "the string ends inside an escape");
        char e = *c->p++;
        switch (e) {
            case '"': out->push_back('"'); break;
            case '\\': out->push_back('\\'); break;
            case '/': out->push_back('/'); break;
            case 'b': out->push_back('\b'); break;
            case 'f': out->push_back('\f'); break;
            case 'n': out->push_back('\n'); break;
            case 'r': out->push_back('\r'); break;
            case 't': out->push_back('\t'); break;
            case 'u': {
                uint32_t cp = json_hex4(c);
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    json_fail(c, "a low surrogate \\u escape without a high one before it");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u')
                        json_fail(c, "a high surrogate \\u escape not followed by a low one");
                    c->p += 2;
                    uint32_t lo = json_hex4(c);
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        json_fail(c, "a high surrogate \\u escape not followed by a low one");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                json_append_utf8(out, cp);
                break;
            }
            default: c->p--; json_fail(c, "unknown escape in a string");
        }
    }
}

// Reads a non-negative decimal integer that fits in int32.
static inline int32_t json_read_int(JsonCursor* c) {
    json_skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') json_fail(c, "expected a non-negative integer");
    int64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        v = v * 10 + (*c->p++ - '0');
        if (v > INT32_MAX) json_fail(c, "integer too large");
    }
    return (int32_t)v;
}

static inline void json_skip_value(JsonCursor* c, int depth = 0);

// Reads `open` item, item, ... `close` (an object's braces or an array's brackets): item() is called with the cursor
// on each item and must consume it. `what` names the kind in the errors.
template <class OnItem>
static inline void json_read_items(JsonCursor* c, char open, char close, const char* what, OnItem item) {
    std::string msg = std::string("expected a JSON ") + what + " (" + open + "..." + close + ")";
    json_expect(c, open, msg.c_str());
    json_skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return;
    }
    msg = std::string("expected ',' or '") + close + "' in an " + what;
    for (;;) {
        item();
        json_skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        json_expect(c, close, msg.c_str());
        return;
    }
}

// Reads an object: on_field(key) is called with the cursor on each value, and must consume that value.
template <class OnField>
static inline void json_read_object(JsonCursor* c, OnField on_field) {
    std::string key;
    json_read_items(c, '{', '}', "object", [&] {
        json_read_string(c, &key);
        json_expect(c, ':', "expected ':' after an object key");
        on_field(key);
    });
}

// Reads an array: on_item() is called with the cursor on each item, and must consume it.
template <class OnItem>
static inline void json_read_array(JsonCursor* c, OnItem on_item) {
    json_read_items(c, '[', ']', "array", on_item);
}

// Skips one value of any kind. Nesting is limited so that a hostile line cannot exhaust the stack.
static inline void json_skip_value(JsonCursor* c, int depth) {
    if (depth > 256) json_fail(c, "values nested more than 256 deep");
    json_skip_ws(c);
    if (c->p >= c->end) json_fail(c, "expected a value");
    char ch = *c->p;
    if (ch == '"') {
        std::string ignored;
        json_read_string(c, &ignored);
    } else if (ch == '{') {
        json_read_object(c, [&](const std::string&) { json_skip_value(c, depth + 1); });
    } else if (ch == '[') {
        json_read_array(c, [&]() { json_skip_value(c, depth + 1); });
    } else {
        // a number, true, false or null: a run of the characters they are made of
        const char* start = c->p;
        while (c->p < c->end && (isalnum((unsigned char)*c->p) || *c->p == '-' || *c->p == '+' || *c->p == '.')) c->p++;
        std::string word(start, c->p - start);
        bool number = !word.empty() && (isdigit((unsigned char)word[0]) || word[0] == '-');
        if (!(number || word == "true" || word == "false" || word == "null")) {
            c->p = start;
            json_fail(c, "expected a value");
        }
    }
}
