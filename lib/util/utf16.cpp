// SPDX-License-Identifier: Apache-2.0
#include "util/utf16.hpp"

#include <string_view>

#include "util/endian.hpp"

namespace vdisk::util {

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

std::string utf16_to_utf8(std::span<const uint8_t> bytes, Utf16Order order, Utf16Nul nul) {
    const size_t n = bytes.size() / 2;
    auto unit = [&](size_t i) -> uint32_t {
        const uint8_t* p = bytes.data() + 2 * i;
        return order == Utf16Order::big ? load_be<uint16_t>(p) : load_le<uint16_t>(p);
    };
    auto is_high = [](uint32_t u) { return u >= 0xd800 && u < 0xdc00; };
    auto is_low = [](uint32_t u) { return u >= 0xdc00 && u < 0xe000; };
    std::string out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        uint32_t u = unit(i);
        if (u == 0 && nul == Utf16Nul::ends) break;
        if (is_high(u) && i + 1 < n && is_low(unit(i + 1))) {
            u = 0x10000 + ((u - 0xd800) << 10) + (unit(i + 1) - 0xdc00);
            ++i;
        } else if (is_high(u) || is_low(u)) {
            u = 0xfffd;
        }
        append_utf8(out, u);
    }
    return out;
}

std::u16string utf8_to_utf16(std::string_view s) {
    std::u16string out;
    size_t i = 0;
    while (i < s.size()) {
        auto b = static_cast<uint8_t>(s[i]);
        uint32_t cp = 0xfffd;
        size_t len = 1;
        auto cont = [&](size_t k) { return i + k < s.size() && (static_cast<uint8_t>(s[i + k]) & 0xc0) == 0x80; };
        auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(s[i + k]) & 0x3f); };
        if (b < 0x80) {
            cp = b;
        } else if (b >= 0xc2 && b < 0xe0 && cont(1)) {
            cp = ((b & 0x1fu) << 6) | at(1);
            len = 2;
        } else if (b >= 0xe0 && b < 0xf0 && cont(1) && cont(2)) {
            uint32_t c = ((b & 0x0fu) << 12) | (at(1) << 6) | at(2);
            if (c >= 0x800 && (c < 0xd800 || c >= 0xe000)) {
                cp = c;
                len = 3;
            }
        } else if (b >= 0xf0 && b < 0xf5 && cont(1) && cont(2) && cont(3)) {
            uint32_t c = ((b & 0x07u) << 18) | (at(1) << 12) | (at(2) << 6) | at(3);
            if (c >= 0x10000 && c <= 0x10ffff) {
                cp = c;
                len = 4;
            }
        }
        if (cp >= 0x10000) {
            out += static_cast<char16_t>(0xd800 + ((cp - 0x10000) >> 10));
            out += static_cast<char16_t>(0xdc00 + ((cp - 0x10000) & 0x3ff));
        } else {
            out += static_cast<char16_t>(cp);
        }
        i += len;
    }
    return out;
}

}  // namespace vdisk::util
