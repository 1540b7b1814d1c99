#include "util/bytes.hpp"

#include <uuid/uuid.h>
#include <zlib.h>

#include <array>
#include <cstdio>

namespace vdisk::util {

bool is_zero(std::span<const uint8_t> buf) noexcept {
    const uint8_t* p = buf.data();
    size_t n = buf.size();
    while (n && (reinterpret_cast<uintptr_t>(p) & 7)) {
        if (*p) return false;
        ++p;
        --n;
    }
    while (n >= 64) {
        uint64_t w[8];
        std::memcpy(w, p, 64);
        if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
        p += 64;
        n -= 64;
    }
    while (n) {
        if (*p) return false;
        ++p;
        --n;
    }
    return true;
}

namespace {
constexpr std::array<uint32_t, 256> make_crc32c_table() {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[i] = c;
    }
    return t;
}
constexpr auto kCrc32cTable = make_crc32c_table();
}  // namespace

uint32_t crc32c(std::span<const uint8_t> buf, uint32_t seed) noexcept {
    uint32_t c = ~seed;
    for (uint8_t b : buf) c = kCrc32cTable[(c ^ b) & 0xff] ^ (c >> 8);
    return ~c;
}

bool inflate_into(std::span<const uint8_t> in, std::span<uint8_t> out, bool raw, size_t* produced) {
    z_stream zs{};
    if (inflateInit2(&zs, raw ? -15 : 15) != Z_OK) return false;
    zs.next_in = const_cast<Bytef*>(in.data());
    zs.avail_in = static_cast<uInt>(in.size());
    zs.next_out = out.data();
    zs.avail_out = static_cast<uInt>(out.size());
    int r = inflate(&zs, Z_FINISH);
    size_t got = out.size() - zs.avail_out;
    inflateEnd(&zs);
    if (produced) *produced = got;
    // Z_BUF_ERROR with a full output buffer: the stream is longer than the cluster; the cluster is what
    // counts (qcow2 compressed clusters may carry trailing sectors). Anything else short is corrupt.
    if (r == Z_STREAM_END) return true;
    if ((r == Z_OK || r == Z_BUF_ERROR) && zs.avail_out == 0) return true;
    return false;
}

bool deflate_into(std::span<const uint8_t> in, std::string& out, bool raw, int level, size_t out_capacity) {
    z_stream zs{};
    if (deflateInit2(&zs, level, Z_DEFLATED, raw ? -12 : 15, 9, Z_DEFAULT_STRATEGY) != Z_OK) return false;
    out.resize(out_capacity);
    zs.next_in = const_cast<Bytef*>(in.data());
    zs.avail_in = static_cast<uInt>(in.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    int r = deflate(&zs, Z_FINISH);
    size_t got = out.size() - zs.avail_out;
    deflateEnd(&zs);
    if (r != Z_STREAM_END) return false;
    out.resize(got);
    return true;
}

std::string guid_to_string(const uint8_t* g) {
    char b[40];
    std::snprintf(b, sizeof b, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", g[3], g[2], g[1],
                  g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
    return b;
}

std::string uuid_to_string(const uint8_t* u) {
    char b[40];
    std::snprintf(b, sizeof b, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
                  u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    return b;
}

void generate_uuid(uint8_t out[16]) { uuid_generate(out); }

}  // namespace vdisk::util
