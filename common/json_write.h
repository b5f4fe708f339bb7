// common/json_write.h: the JSON sinkscope writes (the records of log.jsonl, --eval-sink's line), built one way.
//
// What it is: JsonRecord, a flat JSON object built field by field in the order given, and the pieces it is made of:
// json_escape (a string body), json_number (NaN and Inf become null, which JSON has instead), json_list.
// What it is not: a JSON library (no nesting beyond lists, no reading: common/json_read.h reads).
#pragma once
#include <math.h>
#include <stdio.h>
#include <string>

// A JSON string body: quotes, backslashes and control characters escaped, and every byte that is not part of valid
// UTF-8 (generated text can cut a character in two) replaced by U+FFFD, so every log line parses.
static inline std::string json_escape(const std::string& x) {
    std::string out;
    size_t i = 0;
    while (i < x.size()) {
        unsigned char ch = x[i];
        // the lead byte gives the length and the range of the second byte (RFC 3629: no overlong forms, no
        // surrogates U+D800..DFFF, nothing above U+10FFFF); later bytes are 0x80..0xBF
        int len = ch < 0x80 ? 1 : ch < 0xC2 ? 0 : ch < 0xE0 ? 2 : ch < 0xF0 ? 3 : ch < 0xF5 ? 4 : 0;
        unsigned lo = ch == 0xE0 ? 0xA0 : ch == 0xF0 ? 0x90 : 0x80, hi = ch == 0xED ? 0x9F : ch == 0xF4 ? 0x8F : 0xBF;
        bool ok = len > 0 && i + len <= x.size();
        for (int k = 1; ok && k < len; k++) {
            unsigned b = (unsigned char)x[i + k];
            ok = k == 1 ? (b >= lo && b <= hi) : (b >> 6) == 2;
        }
        if (!ok) {
            out += "\\ufffd";
            i++;
            continue;
        }
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += (char)ch;
        } else if (ch < 0x20) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", ch);
            out += buf;
        } else {
            out.append(x, i, len);
        }
        i += len;
    }
    return out;
}

// A number in printf format `fmt` (default: 9 significant digits, enough to read a float back exactly), or null.
static inline std::string json_number(double x, const char* fmt = "%.9g") {
    char buf[64];
    snprintf(buf, sizeof buf, fmt, x);
    return std::isfinite(x) ? buf : "null";
}

static inline std::string json_list(const double* x, size_t n) {
    std::string s = "[";
    for (size_t i = 0; i < n; i++) s += (i ? "," : "") + json_number(x[i]);
    return s + "]";
}

// {"type":"...", then the fields in the order they are added}.
class JsonRecord {
  public:
    explicit JsonRecord(const char* type) : s_(std::string("{\"type\":\"") + type + "\"") {}
    JsonRecord& num(const char* key, double x, const char* fmt = "%.9g") { return raw(key, json_number(x, fmt)); }
    JsonRecord& integer(const char* key, long long x) { return raw(key, std::to_string(x)); }
    JsonRecord& str(const char* key, const std::string& x) { return raw(key, "\"" + json_escape(x) + "\""); }
    JsonRecord& boolean(const char* key, bool x) { return raw(key, x ? "true" : "false"); }
    // a value already in JSON (a list, a number written elsewhere)
    JsonRecord& raw(const char* key, const std::string& json) {
        s_ += ",\"" + std::string(key) + "\":" + json;
        return *this;
    }
    // fields already in JSON ("a":1,"b":[2]), appended as they are
    JsonRecord& fields(const std::string& json) {
        s_ += "," + json;
        return *this;
    }
    std::string str() const { return s_ + "}"; }

  private:
    std::string s_;
};
