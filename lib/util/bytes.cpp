// SPDX-License-Identifier: Apache-2.0
#include "util/bytes.hpp"

#include <uuid/uuid.h>
#include "vdisk/io.hpp"
#include <libdeflate.h>
#include <zlib.h>

#include <array>
#include <memory>
#include <optional>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>

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
// Slicing-by-8 tables: t[0] is the byte-at-a-time table of the reflected polynomial 0x82F63B78; t[k][b] is
// the CRC of byte b followed by k zero bytes, so eight table lookups advance the CRC over eight bytes.
constexpr std::array<std::array<uint32_t, 256>, 8> make_crc32c_tables() {
    std::array<std::array<uint32_t, 256>, 8> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[0][i] = c;
    }
    for (size_t k = 1; k < 8; ++k)
        for (size_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
    return t;
}
constexpr auto kCrc32c = make_crc32c_tables();

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VDISK_CRC32C_SSE42 1
// The SSE4.2 crc32 instruction computes exactly CRC-32C (Castagnoli): 8 bytes per instruction.
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42_raw(uint32_t c, const uint8_t* p, size_t n) noexcept {
    while (n && (reinterpret_cast<uintptr_t>(p) & 7)) {
        c = __builtin_ia32_crc32qi(c, *p++);
        --n;
    }
    uint64_t c64 = c;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
    }
    c = static_cast<uint32_t>(c64);
    while (n--) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t crc32c_table_raw(uint32_t c, const uint8_t* p, size_t n) noexcept {
    for (; n >= 8; n -= 8, p += 8) {
        // little-endian load whatever the host order, so the tables' byte positions hold
        const uint32_t lo = c ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
        const uint32_t hi = uint32_t(p[4]) | uint32_t(p[5]) << 8 | uint32_t(p[6]) << 16 | uint32_t(p[7]) << 24;
        c = kCrc32c[7][lo & 0xff] ^ kCrc32c[6][(lo >> 8) & 0xff] ^ kCrc32c[5][(lo >> 16) & 0xff] ^
            kCrc32c[4][lo >> 24] ^ kCrc32c[3][hi & 0xff] ^ kCrc32c[2][(hi >> 8) & 0xff] ^
            kCrc32c[1][(hi >> 16) & 0xff] ^ kCrc32c[0][hi >> 24];
    }
    while (n--) c = kCrc32c[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

bool have_sse42() noexcept {
#ifdef VDISK_CRC32C_SSE42
    __builtin_cpu_init();  // may run before libgcc's own constructor when called from a static initializer
    return __builtin_cpu_supports("sse4.2");
#else
    return false;
#endif
}
}  // namespace

uint32_t crc32c(std::span<const uint8_t> buf, uint32_t seed) noexcept {
#ifdef VDISK_CRC32C_SSE42
    static const bool hw = have_sse42();  // decided once
    if (hw) return ~crc32c_sse42_raw(~seed, buf.data(), buf.size());
#endif
    return ~crc32c_table_raw(~seed, buf.data(), buf.size());
}

uint32_t crc32c_table(std::span<const uint8_t> buf, uint32_t seed) noexcept {
    return ~crc32c_table_raw(~seed, buf.data(), buf.size());
}

std::optional<uint32_t> crc32c_hardware(std::span<const uint8_t> buf, uint32_t seed) noexcept {
#ifdef VDISK_CRC32C_SSE42
    if (have_sse42()) return ~crc32c_sse42_raw(~seed, buf.data(), buf.size());
#endif
    (void)buf;
    (void)seed;
    return std::nullopt;
}

namespace {
// libdeflate decodes a whole buffer 2-4x faster than zlib's streaming inflate; one decompressor per thread
// (it holds ~10 KiB of tables) serves every call.
libdeflate_decompressor* thread_decompressor() {
    struct Holder {
        libdeflate_decompressor* d = libdeflate_alloc_decompressor();
        ~Holder() { libdeflate_free_decompressor(d); }
    };
    thread_local Holder h;
    return h.d;
}

bool zlib_inflate_into(std::span<const uint8_t> in, std::span<uint8_t> out, bool raw, size_t* produced) {
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
    if (r == Z_STREAM_END) return produced || zs.avail_out == 0;
    if ((r == Z_OK || r == Z_BUF_ERROR) && zs.avail_out == 0) return true;
    return false;
}
}  // namespace

bool inflate_into(std::span<const uint8_t> in, std::span<uint8_t> out, bool raw, size_t* produced) {
    // Fast path: a complete stream that fits `out` (every well-formed cluster or grain). Trailing input
    // (sector padding) is allowed. Anything libdeflate refuses, including a stream longer than `out`, which
    // qemu accepts by truncating, goes to zlib, so what is accepted does not depend on the fast path.
    if (auto* d = thread_decompressor()) {
        size_t in_used = 0, got = 0;
        libdeflate_result r = raw ? libdeflate_deflate_decompress_ex(d, in.data(), in.size(), out.data(), out.size(),
                                                                     &in_used, &got)
                                  : libdeflate_zlib_decompress_ex(d, in.data(), in.size(), out.data(), out.size(),
                                                                  &in_used, &got);
        if (r == LIBDEFLATE_SUCCESS && (produced || got == out.size())) {
            if (produced) *produced = got;
            return true;
        }
    }
    return zlib_inflate_into(in, out, raw, produced);
}

namespace {
// One deflate state per thread and kind, reset between calls: deflateInit allocates a few hundred KiB,
// which per 64 KiB chunk costs more in malloc, page faults and memset than the compression of
// incompressible data. The output goes to a per-thread scratch buffer; callers copy out only what deflate
// produced.
struct DeflateState {
    z_stream zs{};
    bool live = false;
    bool raw = false;
    int level = 0;
    std::unique_ptr<uint8_t[]> scratch;
    size_t scratch_size = 0;
    ~DeflateState() {
        if (live) deflateEnd(&zs);
    }
};

std::optional<std::span<const uint8_t>> deflate_scratch(std::span<const uint8_t> in, bool raw, int level,
                                                        size_t out_capacity) {
    if (level < 0 || level > 9) level = 6;
    thread_local std::array<DeflateState, 20> states;
    DeflateState& st = states[(raw ? 10 : 0) + static_cast<size_t>(level)];
    if (!st.live) {
        st.zs = z_stream{};
        // memLevel 8, not qemu's 9: with a 4 KiB window the 128 KiB hash head of level 9 buys nothing but cache
        // misses. Level 4 on 64 KiB clusters of real files: 1.6x level 6's speed per core at memLevel 8, 1.3x at
        // 9, and 0.1 % smaller (bench/deflate_tune: CPU time per configuration, 2026-11-30).
        if (deflateInit2(&st.zs, level, Z_DEFLATED, raw ? -12 : 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return std::nullopt;
        st.live = true;
        st.raw = raw;
        st.level = level;
    } else if (deflateReset(&st.zs) != Z_OK) {
        return std::nullopt;
    }
    if (st.scratch_size < out_capacity) {
        st.scratch = std::make_unique_for_overwrite<uint8_t[]>(out_capacity);
        st.scratch_size = out_capacity;
    }
    st.zs.next_in = const_cast<Bytef*>(in.data());
    st.zs.avail_in = static_cast<uInt>(in.size());
    st.zs.next_out = st.scratch.get();
    st.zs.avail_out = static_cast<uInt>(out_capacity);
    int r = deflate(&st.zs, Z_FINISH);
    if (r != Z_STREAM_END) return std::nullopt;
    return std::span<const uint8_t>(st.scratch.get(), out_capacity - st.zs.avail_out);
}
}  // namespace

namespace {
// zlib streams (raw=false) come from libdeflate: full 32 KiB window, 2-4x zlib's speed at equal or better
// ratio. One compressor per thread and level, kept for the thread's life (a few hundred KiB each).
std::optional<std::span<const uint8_t>> libdeflate_scratch(std::span<const uint8_t> in, int level,
                                                           size_t out_capacity) {
    if (level < 0 || level > 12) level = 6;
    struct Holder {
        std::array<libdeflate_compressor*, 13> c{};
        std::unique_ptr<uint8_t[]> scratch;
        size_t scratch_size = 0;
        ~Holder() {
            for (auto* p : c) libdeflate_free_compressor(p);
        }
    };
    thread_local Holder h;
    auto*& c = h.c[static_cast<size_t>(level)];
    if (!c) c = libdeflate_alloc_compressor(level);
    if (!c) return std::nullopt;
    if (h.scratch_size < out_capacity) {
        h.scratch = std::make_unique_for_overwrite<uint8_t[]>(out_capacity);
        h.scratch_size = out_capacity;
    }
    size_t n = libdeflate_zlib_compress(c, in.data(), in.size(), h.scratch.get(), out_capacity);
    if (n == 0) return std::nullopt;
    return std::span<const uint8_t>(h.scratch.get(), n);
}

std::optional<std::span<const uint8_t>> compress_scratch(std::span<const uint8_t> in, bool raw, int level,
                                                         size_t out_capacity) {
    return raw ? deflate_scratch(in, raw, level, out_capacity) : libdeflate_scratch(in, level, out_capacity);
}
}  // namespace

bool deflate_into(std::span<const uint8_t> in, std::string& out, bool raw, int level, size_t out_capacity) {
    auto z = compress_scratch(in, raw, level, out_capacity);
    if (!z) return false;
    out.assign(reinterpret_cast<const char*>(z->data()), z->size());
    return true;
}

bool deflate_into(std::span<const uint8_t> in, std::vector<uint8_t>& out, bool raw, int level, size_t out_capacity) {
    auto z = compress_scratch(in, raw, level, out_capacity);
    if (!z) return false;
    out.assign(z->begin(), z->end());
    return true;
}

bool likely_incompressible(std::span<const uint8_t> buf, size_t window) noexcept {
    const size_t n = buf.size();
    if (n < 4096) return false;
    const uint8_t* p = buf.data();
    // Order-0 entropy from four interleaved histograms (avoids store-to-load stalls on repeated bytes).
    std::array<std::array<uint32_t, 256>, 4> h{};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        ++h[0][p[i]];
        ++h[1][p[i + 1]];
        ++h[2][p[i + 2]];
        ++h[3][p[i + 3]];
    }
    for (; i < n; ++i) ++h[0][p[i]];
    double bits = 0;
    for (int b = 0; b < 256; ++b) {
        uint32_t c = h[0][b] + h[1][b] + h[2][b] + h[3][b];
        if (c) {
            double q = double(c) / double(n);
            bits -= q * std::log2(q);
        }
    }
    if (bits < 7.92) return false;  // Huffman coding alone would gain about 1 %
    // Greedy LZ scan: count bytes covered by matches of >= 4 bytes no farther back than `window`. Like LZ4's
    // fast mode, the scan strides further the longer it finds nothing (random data is left after a few
    // thousand probes); a real repeat of any length still lines up with probed positions and resets it.
    constexpr int kHashBits = 12;
    std::array<uint32_t, 1u << kHashBits> last{};  // position + 1; 0 = empty
    size_t covered = 0, misses = 0;
    const size_t budget = n / 100;
    for (size_t pos = 0; pos + 4 <= n;) {
        uint32_t v;
        std::memcpy(&v, p + pos, 4);
        uint32_t slot = (v * 2654435761u) >> (32 - kHashBits);
        uint32_t cand = last[slot];
        last[slot] = static_cast<uint32_t>(pos + 1);
        if (cand && pos - (cand - 1) <= window && std::memcmp(p + cand - 1, p + pos, 4) == 0) {
            size_t len = 4;
            while (pos + len < n && p[cand - 1 + len] == p[pos + len]) ++len;
            covered += len;
            if (covered > budget) return false;
            pos += len;
            misses = 0;
        } else {
            pos += 1 + std::min<size_t>(++misses >> 5, 31);
        }
    }
    return true;
}

void guid_to_uuid(const uint8_t* guid, uint8_t out[16]) noexcept {
    // Microsoft GUIDs store Data1 (4 bytes), Data2 and Data3 (2 bytes each) little-endian and Data4 as
    // bytes; RFC 4122 text reads all of them big-endian. The swap is its own inverse.
    static constexpr uint8_t order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
    uint8_t t[16];
    for (size_t i = 0; i < 16; ++i) t[i] = guid[order[i]];
    std::memcpy(out, t, 16);
}

std::string guid_to_string(const uint8_t* g, bool upper) {
    uint8_t u[16];
    guid_to_uuid(g, u);
    char b[37];
    if (upper) uuid_unparse_upper(u, b);
    else uuid_unparse_lower(u, b);
    return b;
}

std::string uuid_to_string(const uint8_t* u) {
    char b[37];
    uuid_unparse_lower(u, b);
    return b;
}

void generate_uuid(uint8_t out[16]) { uuid_generate(out); }

namespace {
std::vector<std::string> components(const std::string& name) {
    std::vector<std::string> parts;
    size_t i = 0;
    while (i <= name.size()) {
        size_t j = name.find('/', i);
        if (j == std::string::npos) j = name.size();
        if (j > i) parts.emplace_back(name.substr(i, j - i));
        i = j + 1;
    }
    return parts;
}
}  // namespace

std::optional<std::string> relative_name(std::string_view referrer, std::string_view target) {
    const std::string from = resolve_reference("", referrer), to = resolve_reference("", target);
    const bool from_abs = !from.empty() && from[0] == '/', to_abs = !to.empty() && to[0] == '/';
    if (from_abs != to_abs) return std::nullopt;
    std::vector<std::string> dir = components(from), dest = components(to);
    if (!dir.empty()) dir.pop_back();  // the referrer's own name
    if (dir.size() == 1 && dir[0] == ".") dir.clear();
    size_t common = 0;
    while (common < dir.size() && common + 1 < dest.size() && dir[common] == dest[common]) ++common;
    std::string out;
    for (size_t i = common; i < dir.size(); ++i) {
        if (dir[i] == "..") return std::nullopt;  // climbing out of an unknown directory
        out += "../";
    }
    for (size_t i = common; i < dest.size(); ++i) out += dest[i] + (i + 1 < dest.size() ? "/" : "");
    if (out.empty()) return std::nullopt;
    return out;
}

ParentNames parent_names(std::string_view child, std::string_view backing) {
    ParentNames n;
    n.resolved = resolve_reference(child, backing);
    if (!backing.empty() && backing[0] != '/') n.relative = resolve_reference("", backing);
    else n.relative = relative_name(child, n.resolved).value_or("");
    if (!n.resolved.empty() && n.resolved[0] == '/') n.absolute = n.resolved;
    return n;
}

bool parse_uuid(std::string_view text, uint8_t out[16], bool guid) {
    if (text.size() != 36) return false;  // uuid_parse wants exactly the 36 characters, NUL-terminated
    char z[37];
    std::memcpy(z, text.data(), 36);
    z[36] = '\0';
    uuid_t u;
    if (uuid_parse(z, u) != 0) return false;
    if (guid) guid_to_uuid(u, u);  // text is big-endian; the GUID layout wants its first three groups swapped
    std::memcpy(out, u, 16);
    return true;
}

}  // namespace vdisk::util
