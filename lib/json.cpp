// SPDX-License-Identifier: Apache-2.0
#include "vdisk/json.hpp"
#include "vdisk/text.hpp"

#include <cmath>
#include <cctype>
#include <cstdio>
#include <cstdlib>

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
static void escape(std::string& out, const std::string& raw) {
    const bool valid = utf8_valid(raw);
    std::string fixed = valid ? std::string() : utf8_sanitize(raw);
    const std::string& s = valid ? raw : fixed;
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char b[8];
                    std::snprintf(b, sizeof b, "\\u%04x", c);
                    out += b;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
}

void Json::dump_to(std::string& out, int indent, int level) const {
    auto newline = [&](int lvl) {
        if (indent <= 0) return;
        out += '\n';
        out.append(static_cast<size_t>(indent * lvl), ' ');
    };
    std::visit(
        [&](auto&& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::nullptr_t>) {
                out += "null";
            } else if constexpr (std::is_same_v<T, bool>) {
                out += v ? "true" : "false";
            } else if constexpr (std::is_same_v<T, int64_t>) {
                out += std::to_string(v);
            } else if constexpr (std::is_same_v<T, uint64_t>) {
                out += std::to_string(v);
            } else if constexpr (std::is_same_v<T, double>) {
                if (!std::isfinite(v)) {
                    out += "null";
                } else {
                    char b[32];
                    std::snprintf(b, sizeof b, "%.17g", v);
                    out += b;
                }
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

}  // namespace vdisk

namespace vdisk {
namespace {

struct Parser {
    std::string_view s;
    size_t i = 0;
    std::string err;

    void ws() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
    }
    bool fail(const char* m) {
        if (err.empty()) err = std::string(m) + " at byte " + std::to_string(i);
        return false;
    }
    bool lit(std::string_view w) {
        if (s.substr(i, w.size()) != w) return false;
        i += w.size();
        return true;
    }
    bool str(std::string& out) {
        if (i >= s.size() || s[i] != '"') return fail("expected string");
        ++i;
        while (i < s.size() && s[i] != '"') {
            char c = s[i++];
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i >= s.size()) return fail("bad escape");
            char e = s[i++];
            switch (e) {
                case 'n': out += '\n'; break;
                case 't': out += '\t'; break;
                case 'r': out += '\r'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'u': {
                    if (i + 4 > s.size()) return fail("bad \\u escape");
                    unsigned cp = std::stoul(std::string(s.substr(i, 4)), nullptr, 16);
                    i += 4;
                    if (cp < 0x80) out += static_cast<char>(cp);
                    else if (cp < 0x800) {
                        out += static_cast<char>(0xc0 | (cp >> 6));
                        out += static_cast<char>(0x80 | (cp & 0x3f));
                    } else {
                        out += static_cast<char>(0xe0 | (cp >> 12));
                        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
                        out += static_cast<char>(0x80 | (cp & 0x3f));
                    }
                    break;
                }
                default: out += e;
            }
        }
        if (i >= s.size()) return fail("unterminated string");
        ++i;
        return true;
    }
    bool value(Json& out, int depth) {
        if (depth > 64) return fail("nesting too deep");
        ws();
        if (i >= s.size()) return fail("unexpected end");
        char c = s[i];
        if (c == '{') {
            ++i;
            out = Json::object();
            ws();
            if (i < s.size() && s[i] == '}') {
                ++i;
                return true;
            }
            while (true) {
                ws();
                std::string k;
                if (!str(k)) return false;
                ws();
                if (i >= s.size() || s[i] != ':') return fail("expected ':'");
                ++i;
                Json v;
                if (!value(v, depth + 1)) return false;
                out.set(k, std::move(v));
                ws();
                if (i < s.size() && s[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < s.size() && s[i] == '}') {
                    ++i;
                    return true;
                }
                return fail("expected ',' or '}'");
            }
        }
        if (c == '[') {
            ++i;
            out = Json::array();
            ws();
            if (i < s.size() && s[i] == ']') {
                ++i;
                return true;
            }
            while (true) {
                Json v;
                if (!value(v, depth + 1)) return false;
                out.push(std::move(v));
                ws();
                if (i < s.size() && s[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < s.size() && s[i] == ']') {
                    ++i;
                    return true;
                }
                return fail("expected ',' or ']'");
            }
        }
        if (c == '"') {
            std::string v;
            if (!str(v)) return false;
            out = Json(std::move(v));
            return true;
        }
        if (lit("true")) {
            out = Json(true);
            return true;
        }
        if (lit("false")) {
            out = Json(false);
            return true;
        }
        if (lit("null")) {
            out = Json(nullptr);
            return true;
        }
        size_t start = i;
        if (i < s.size() && s[i] == '-') ++i;
        bool frac = false;
        while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.' || s[i] == 'e' ||
                                s[i] == 'E' || s[i] == '+' || s[i] == '-')) {
            if (s[i] == '.' || s[i] == 'e' || s[i] == 'E') frac = true;
            ++i;
        }
        if (i == start) return fail("unexpected character");
        std::string num(s.substr(start, i - start));
        if (frac) out = Json(std::strtod(num.c_str(), nullptr));
        else if (num[0] == '-') out = Json(static_cast<int64_t>(std::strtoll(num.c_str(), nullptr, 10)));
        else out = Json(static_cast<uint64_t>(std::strtoull(num.c_str(), nullptr, 10)));
        return true;
    }
};

}  // namespace

bool Json::parse(std::string_view text, Json& out, std::string* error) {
    Parser p{text, 0, {}};
    bool okv = p.value(out, 0);
    if (okv) {
        p.ws();
        if (p.i != text.size()) okv = p.fail("trailing characters");
    }
    if (!okv && error) *error = p.err;
    return okv;
}

}  // namespace vdisk
