// SPDX-License-Identifier: Apache-2.0
// Escaping image-supplied text for terminals and JSON.
#include "vdisk/text.hpp"

#include <cstdint>

namespace vdisk {

namespace {

// Length of the well-formed UTF-8 sequence starting at s[i] (1..4), or 0 when the byte there does not
// start one. Follows the table of Unicode 15 §3.9 (D92): no overlongs, no surrogates, nothing past U+10FFFF.
size_t utf8_len(std::string_view s, size_t i) noexcept {
    auto at = [&](size_t k) -> unsigned { return k < s.size() ? static_cast<uint8_t>(s[k]) : 0x100u; };
    unsigned b0 = at(i);
    if (b0 < 0x80) return 1;
    auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xbf) {
        unsigned c = at(k);
        return c >= lo && c <= hi;
    };
    if (b0 >= 0xc2 && b0 <= 0xdf) return cont(i + 1) ? 2 : 0;
    if (b0 == 0xe0) return cont(i + 1, 0xa0, 0xbf) && cont(i + 2) ? 3 : 0;
    if ((b0 >= 0xe1 && b0 <= 0xec) || b0 == 0xee || b0 == 0xef) return cont(i + 1) && cont(i + 2) ? 3 : 0;
    if (b0 == 0xed) return cont(i + 1, 0x80, 0x9f) && cont(i + 2) ? 3 : 0;
    if (b0 == 0xf0) return cont(i + 1, 0x90, 0xbf) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    if (b0 >= 0xf1 && b0 <= 0xf3) return cont(i + 1) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    if (b0 == 0xf4) return cont(i + 1, 0x80, 0x8f) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    return 0;
}

void hex_byte(std::string& out, uint8_t b) {
    static const char digits[] = "0123456789abcdef";
    out += "\\x";
    out += digits[b >> 4];
    out += digits[b & 15];
}

}  // namespace

std::string escape_for_terminal(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
        size_t n = utf8_len(text, i);
        uint8_t b = static_cast<uint8_t>(text[i]);
        // C1 controls U+0080..U+009F are 0xc2 0x80..0x9f in UTF-8; some terminals act on them.
        bool c1 = n == 2 && b == 0xc2 && static_cast<uint8_t>(text[i + 1]) < 0xa0;
        if (n == 0 || (n == 1 && (b < 0x20 || b == 0x7f)) || c1) {
            size_t k = n == 0 ? 1 : n;
            for (size_t j = 0; j < k; ++j) hex_byte(out, static_cast<uint8_t>(text[i + j]));
            i += k;
            continue;
        }
        out.append(text.substr(i, n));
        i += n;
    }
    return out;
}

bool utf8_valid(std::string_view text) noexcept {
    for (size_t i = 0; i < text.size();) {
        size_t n = utf8_len(text, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

std::string utf8_sanitize(std::string_view text) {
    if (utf8_valid(text)) return std::string(text);
    std::string out;
    out.reserve(text.size() + 8);
    for (size_t i = 0; i < text.size();) {
        size_t n = utf8_len(text, i);
        if (n == 0) {
            out += "\xef\xbf\xbd";
            ++i;
            continue;
        }
        out.append(text.substr(i, n));
        i += n;
    }
    return out;
}

}  // namespace vdisk
