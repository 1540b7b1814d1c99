// SPDX-License-Identifier: Apache-2.0
#include "vdisk/json.hpp"
#include "vdisk/text.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <system_error>

namespace vdisk {

Json& Json::set(std::string_view key, Json value) {
    if (!is_object()) v_ = Object{};
    auto& obj = std::get<Object>(v_);
    for (auto& [k, v] : obj)
        if (k == key) {
            v = std::move(value);
            return *this;
        }
    obj.emplace_back(std::string(key), std::move(value));
    return *this;
}

const Json* Json::get(std::string_view key) const {
    if (auto* o = as_object())
        for (auto& [k, v] : *o)
            if (k == key) return &v;
    return nullptr;
}

Json& Json::push(Json value) {
    if (!is_array()) v_ = Array{};
    std::get<Array>(v_).push_back(std::move(value));
    return *this;
}

// Strings may come from an image: invalid UTF-8 is replaced (U+FFFD) so the output is always valid JSON.
// Control characters are escaped (RFC 8259 requires it below 0x20; DEL is escaped too so that the text is
// safe on a terminal); everything else is copied as UTF-8.
static void escape(std::string& out, const std::string& raw) {
    const bool valid = utf8_valid(raw);
    std::string fixed = valid ? std::string() : utf8_sanitize(raw);
    const std::string& s = valid ? raw : fixed;
    static constexpr char digits[] = "0123456789abcdef";
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    out += "\\u00";
                    out += digits[c >> 4];
                    out += digits[c & 0xf];
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
}

// Shortest text that reads back as the same double, in the "C" locale's form whatever the global locale is.
static void append_double(std::string& out, double v) {
    if (!std::isfinite(v)) {  // JSON has no NaN or infinity
        out += "null";
        return;
    }
    char b[64];
    auto r = std::to_chars(b, b + sizeof b, v);
    out.append(b, r.ptr);
}

template <typename T>
static void append_int(std::string& out, T v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    out.append(b, r.ptr);
}

void Json::dump_to(std::string& out, int indent, int level) const {
    auto newline = [&](int lvl) {
        if (indent <= 0) return;
        out += '\n';
        out.append(static_cast<size_t>(indent) * static_cast<size_t>(lvl), ' ');
    };
    std::visit(
        [&](auto&& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::nullptr_t>) {
                out += "null";
            } else if constexpr (std::is_same_v<T, bool>) {
                out += v ? "true" : "false";
            } else if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, uint64_t>) {
                append_int(out, v);
            } else if constexpr (std::is_same_v<T, double>) {
                append_double(out, v);
            } else if constexpr (std::is_same_v<T, std::string>) {
                escape(out, v);
            } else if constexpr (std::is_same_v<T, Array>) {
                out += '[';
                for (size_t i = 0; i < v.size(); ++i) {
                    if (i) out += indent > 0 ? "," : ", ";
                    newline(level + 1);
                    v[i].dump_to(out, indent, level + 1);
                }
                if (!v.empty()) newline(level);
                out += ']';
            } else {
                out += '{';
                for (size_t i = 0; i < v.size(); ++i) {
                    if (i) out += indent > 0 ? "," : ", ";
                    newline(level + 1);
                    escape(out, v[i].first);
                    out += ": ";
                    v[i].second.dump_to(out, indent, level + 1);
                }
                if (!v.empty()) newline(level);
                out += '}';
            }
        },
        v_);
}

std::string Json::dump(int indent) const {
    std::string out;
    dump_to(out, indent, 0);
    return out;
}

// --- parsing ------------------------------------------------------------------------------------------------

std::string_view to_string(JsonError e) noexcept {
    switch (e) {
        case JsonError::none: return "none";
        case JsonError::unexpected_end: return "unexpected_end";
        case JsonError::unexpected_character: return "unexpected_character";
        case JsonError::trailing_characters: return "trailing_characters";
        case JsonError::too_deep: return "too_deep";
        case JsonError::invalid_number: return "invalid_number";
        case JsonError::number_out_of_range: return "number_out_of_range";
        case JsonError::invalid_escape: return "invalid_escape";
        case JsonError::invalid_surrogate: return "invalid_surrogate";
        case JsonError::control_character: return "control_character";
        case JsonError::invalid_utf8: return "invalid_utf8";
        case JsonError::duplicate_key: return "duplicate_key";
    }
    return "unknown";
}

std::string JsonParseError::message() const {
    return std::string(to_string(kind)) + " at byte " + std::to_string(offset);
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

// A recursive-descent parser over the whole text. Every failure records the first error (kind and byte
// offset) and unwinds by returning false; recursion is bounded by Json::max_depth.
struct Parser {
    std::string_view s;
    size_t i = 0;
    JsonParseError err;

    bool fail(JsonError kind, size_t at) {
        if (err.kind == JsonError::none) err = JsonParseError{kind, at};
        return false;
    }
    bool fail(JsonError kind) { return fail(kind, i); }
    bool at_end() const { return i >= s.size(); }
    // The error for "wanted something else here": the end of the text, or the wrong byte.
    bool unexpected() { return fail(at_end() ? JsonError::unexpected_end : JsonError::unexpected_character); }

    void ws() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
    }
    bool eat(char c) {
        if (i < s.size() && s[i] == c) {
            ++i;
            return true;
        }
        return false;
    }

    // Four hex digits after "\u".
    bool hex4(uint32_t& v) {
        v = 0;
        for (int k = 0; k < 4; ++k, ++i) {
            if (at_end()) return fail(JsonError::unexpected_end);
            const int h = hex_value(s[i]);
            if (h < 0) return fail(JsonError::invalid_escape);
            v = v << 4 | static_cast<uint32_t>(h);
        }
        return true;
    }

    // "\uXXXX", possibly a surrogate pair "\uD8xx\uDCxx"; i is just past the 'u'.
    bool unicode_escape(std::string& out) {
        const size_t at = i - 2;
        uint32_t cp = 0;
        if (!hex4(cp)) return false;
        if (cp >= 0xdc00 && cp <= 0xdfff) return fail(JsonError::invalid_surrogate, at);
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (s.substr(i, 2) != "\\u") return fail(JsonError::invalid_surrogate, at);
            i += 2;
            uint32_t lo = 0;
            if (!hex4(lo)) return false;
            if (lo < 0xdc00 || lo > 0xdfff) return fail(JsonError::invalid_surrogate, at);
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        append_utf8(out, cp);
        return true;
    }

    // Length of the well-formed UTF-8 sequence (RFC 3629 table 3-7) starting at s[i], or 0.
    size_t utf8_sequence() const {
        auto byte = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
        const unsigned b0 = byte(0);
        auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xbf) { return byte(k) >= lo && byte(k) <= hi; };
        if (b0 >= 0xc2 && b0 <= 0xdf) return cont(1) ? 2 : 0;
        if (b0 == 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;        // no overlongs
        if (b0 == 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;  // no surrogates
        if (b0 >= 0xe1 && b0 <= 0xef) return cont(1) && cont(2) ? 3 : 0;
        if (b0 == 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
        if (b0 >= 0xf1 && b0 <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
        if (b0 == 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;  // nothing past U+10FFFF
        return 0;
    }

    bool string(std::string& out) {
        if (!eat('"')) return unexpected();
        size_t run = i;  // start of the bytes copied as they are
        while (true) {
            if (at_end()) return fail(JsonError::unexpected_end);
            const unsigned char c = static_cast<unsigned char>(s[i]);
            if (c == '"') {
                out.append(s.substr(run, i - run));
                ++i;
                return true;
            }
            if (c < 0x20) return fail(JsonError::control_character);
            if (c >= 0x80) {
                const size_t n = utf8_sequence();
                if (n == 0) return fail(JsonError::invalid_utf8);
                i += n;
                continue;
            }
            if (c != '\\') {
                ++i;
                continue;
            }
            out.append(s.substr(run, i - run));
            ++i;
            if (at_end()) return fail(JsonError::unexpected_end);
            const char e = s[i++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u':
                    if (!unicode_escape(out)) return false;
                    break;
                default: return fail(JsonError::invalid_escape, i - 2);
            }
            run = i;
        }
    }

    // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, then from_chars (locale-independent, range-checked).
    bool number(Json& out) {
        const size_t start = i;
        eat('-');
        if (at_end()) return fail(JsonError::unexpected_end);
        if (!is_digit(s[i])) return fail(JsonError::invalid_number, start);
        if (s[i] == '0') {
            ++i;
            if (i < s.size() && is_digit(s[i])) return fail(JsonError::invalid_number, start);  // no leading zeros
        } else {
            while (i < s.size() && is_digit(s[i])) ++i;
        }
        bool integer = true;
        if (eat('.')) {
            integer = false;
            if (at_end() || !is_digit(s[i])) return fail(JsonError::invalid_number, start);
            while (i < s.size() && is_digit(s[i])) ++i;
        }
        if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
            integer = false;
            ++i;
            if (!eat('+')) eat('-');
            if (at_end() || !is_digit(s[i])) return fail(JsonError::invalid_number, start);
            while (i < s.size() && is_digit(s[i])) ++i;
        }
        const char* first = s.data() + start;
        const char* last = s.data() + i;
        std::from_chars_result r{};
        if (integer && *first == '-') {
            int64_t v = 0;
            r = std::from_chars(first, last, v);
            if (r.ec == std::errc()) out = Json(v);
        } else if (integer) {
            uint64_t v = 0;
            r = std::from_chars(first, last, v);
            if (r.ec == std::errc()) out = Json(v);
        } else {
            double v = 0;
            r = std::from_chars(first, last, v);  // also out of range when it underflows to zero or denormal
            if (r.ec == std::errc()) out = Json(v);
        }
        if (r.ec == std::errc::result_out_of_range) return fail(JsonError::number_out_of_range, start);
        if (r.ec != std::errc() || r.ptr != last) return fail(JsonError::invalid_number, start);
        return true;
    }

    bool literal(std::string_view word, Json value, Json& out) {
        if (s.substr(i, word.size()) != word) {
            // a prefix of the word at the end of the text is a truncated value, anything else a wrong byte
            if (word.substr(0, s.size() - i) == s.substr(i)) return fail(JsonError::unexpected_end, s.size());
            return fail(JsonError::unexpected_character);
        }
        i += word.size();
        out = std::move(value);
        return true;
    }

    bool object(Json& out, int depth) {
        const size_t open = i;
        ++i;  // '{'
        Json::Object members;
        ws();
        if (!eat('}')) {
            while (true) {
                ws();
                std::string key;
                if (!string(key)) return false;
                ws();
                if (!eat(':')) return unexpected();
                Json v;
                if (!value(v, depth + 1)) return false;
                members.emplace_back(std::move(key), std::move(v));
                ws();
                if (eat(',')) continue;
                if (eat('}')) break;
                return unexpected();
            }
        }
        if (members.size() > 1) {  // RFC 8259 leaves duplicate names undefined: refuse them
            std::vector<std::pair<std::string_view, size_t>> keys;
            keys.reserve(members.size());
            for (size_t k = 0; k < members.size(); ++k) keys.emplace_back(members[k].first, k);
            std::sort(keys.begin(), keys.end());
            for (size_t k = 1; k < keys.size(); ++k)
                if (keys[k].first == keys[k - 1].first) return fail(JsonError::duplicate_key, open);
        }
        out = Json(std::move(members));
        return true;
    }

    bool array(Json& out, int depth) {
        ++i;  // '['
        Json::Array items;
        ws();
        if (!eat(']')) {
            while (true) {
                Json v;
                if (!value(v, depth + 1)) return false;
                items.push_back(std::move(v));
                ws();
                if (eat(',')) continue;
                if (eat(']')) break;
                return unexpected();
            }
        }
        out = Json(std::move(items));
        return true;
    }

    bool value(Json& out, int depth) {
        ws();
        if (at_end()) return fail(JsonError::unexpected_end);
        switch (s[i]) {
            case '{':
            case '[':
                if (depth >= Json::max_depth) return fail(JsonError::too_deep);
                return s[i] == '{' ? object(out, depth) : array(out, depth);
            case '"': {
                std::string v;
                if (!string(v)) return false;
                out = Json(std::move(v));
                return true;
            }
            case 't': return literal("true", Json(true), out);
            case 'f': return literal("false", Json(false), out);
            case 'n': return literal("null", Json(nullptr), out);
            default:
                if (s[i] == '-' || is_digit(s[i])) return number(out);
                return fail(JsonError::unexpected_character);
        }
    }
};

}  // namespace

bool Json::parse(std::string_view text, Json& out, JsonParseError& error) {
    Parser p{text, 0, {}};
    bool ok = p.value(out, 0);
    if (ok) {
        p.ws();
        if (!p.at_end()) ok = p.fail(JsonError::trailing_characters);
    }
    error = ok ? JsonParseError{} : p.err;
    return ok;
}

bool Json::parse(std::string_view text, Json& out, std::string* error) {
    JsonParseError e;
    const bool ok = parse(text, out, e);
    if (!ok && error) *error = e.message();
    return ok;
}

}  // namespace vdisk
