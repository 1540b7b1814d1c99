// SPDX-License-Identifier: Apache-2.0
// Helpers of the VHDX suite (vhdx_*_test.cpp): images vdisk creates, patched as bytes in memory, and log
// entries built by hand.
#pragma once

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "builtin_formats.hpp"
#include "checksums.hpp"
#include "support.hpp"
#include "util/bytes.hpp"
#include "vdisk/vdisk.hpp"

namespace vhdx_test {

using namespace vdisk;
using vt::le32;
using vt::le64;
using vt::put_le16;
using vt::put_le32;
using vt::put_le64;

constexpr uint64_t MiB = 1ull << 20;

inline Registry make_reg() { return vt::registry_of(make_raw_format, make_vhdx_format); }

/// Recompute the checksums of both headers / both region tables after patching them.
inline void seal_headers(std::vector<uint8_t>& b) { testlib::seal_vhdx_headers(b.data(), b.size()); }
inline void seal_regions(std::vector<uint8_t>& b) { testlib::seal_vhdx_regions(b.data(), b.size()); }

/// Offset of the current header (the one with the larger sequence number).
inline size_t current_header(const std::vector<uint8_t>& img) {
    return le64(img, testlib::kVhdxHeaders[1] + 8) > le64(img, testlib::kVhdxHeaders[0] + 8) ? testlib::kVhdxHeaders[1]
                                                                                             : testlib::kVhdxHeaders[0];
}

// Layout of images vdisk creates with the default 1 MiB log (see vhdx_format.cpp create()).
constexpr size_t kMeta = 2 * MiB;  // metadata region
constexpr size_t kItems = kMeta + (64 << 10);
constexpr size_t kBat = 3 * MiB;  // BAT region

// A small dynamic image made by vdisk (1 MiB blocks), with `writes` applied, as bytes.
inline std::vector<uint8_t> small_image(uint64_t size = 16 * MiB, const vt::Writes& writes = {},
                                        const std::string& opts = "block_size=1M") {
    return vt::created_image(make_reg(), "vhdx", size, writes, opts);
}

inline Result<OpenedImage> open_mem(MemoryFileSystem& fs, const std::vector<uint8_t>& bytes, bool rw = false,
                                    OpenOptions o = {}) {
    static const auto reg = make_reg();
    fs.add("img.vhdx", bytes);
    o.read_write = rw;
    return open_image(reg, fs, "img.vhdx", o);
}

inline ErrorCode open_error(const std::vector<uint8_t>& bytes, OpenOptions o = {}) {
    MemoryFileSystem fs;
    o.format = "vhdx";
    auto r = open_mem(fs, bytes, false, o);
    REQUIRE_MESSAGE(!r.ok(), "image unexpectedly opened");
    INFO(r.error().to_string());
    return r.error().code;
}

// One log entry (MS-VHDX 2.3.1): data descriptors for 4 KiB sectors, zero descriptors for ranges.
struct LogData {
    uint64_t file_offset;
    std::vector<uint8_t> sector;
};
struct LogZero {
    uint64_t file_offset;
    uint64_t length;
};
inline std::vector<uint8_t> log_entry(uint64_t seq, uint32_t tail, const uint8_t* guid, std::vector<LogData> data,
                                      const std::vector<LogZero>& zeros, uint64_t flushed, uint64_t last) {
    size_t ndesc = data.size() + zeros.size();
    size_t desc_bytes = ((64 + 32 * ndesc) + 4095) / 4096 * 4096;
    std::vector<uint8_t> e(desc_bytes + 4096 * data.size(), 0);
    put_le32(e, 0, 0x65676f6c);
    put_le32(e, 8, static_cast<uint32_t>(e.size()));
    put_le32(e, 12, tail);
    put_le64(e, 16, seq);
    put_le32(e, 24, static_cast<uint32_t>(ndesc));
    std::memcpy(e.data() + 32, guid, 16);
    put_le64(e, 48, flushed);
    put_le64(e, 56, last);
    size_t d = 64;
    for (auto& z : zeros) {
        put_le32(e, d, 0x6f72657a);
        put_le64(e, d + 8, z.length);
        put_le64(e, d + 16, z.file_offset);
        put_le64(e, d + 24, seq);
        d += 32;
    }
    size_t s = desc_bytes;
    for (auto& x : data) {
        put_le32(e, d, 0x63736564);
        put_le32(e, d + 4, le32(x.sector, 4092));
        put_le64(e, d + 8, le64(x.sector, 0));
        put_le64(e, d + 16, x.file_offset);
        put_le64(e, d + 24, seq);
        d += 32;
        put_le32(e, s, 0x61746164);
        put_le32(e, s + 4, static_cast<uint32_t>(seq >> 32));
        std::memcpy(e.data() + s + 8, x.sector.data() + 8, 4084);
        put_le32(e, s + 4092, static_cast<uint32_t>(seq));
        s += 4096;
    }
    put_le32(e, 4, util::crc32c(e));
    return e;
}

inline void set_log_guid(std::vector<uint8_t>& img, const uint8_t* guid) {
    for (size_t at : testlib::kVhdxHeaders) std::memcpy(img.data() + at + 48, guid, 16);
    seal_headers(img);
}

inline const uint8_t kGuid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

inline uint64_t block_host(const std::vector<uint8_t>& img, uint64_t bat_index) {
    return (le64(img, kBat + bat_index * 8) >> 20) << 20;
}

// Convert `from` (format `fmt`) into a VHDX with 1 MiB blocks through the library.
inline void convert_to_vhdx_1m(const Registry& reg, FileSystem& fs, const std::string& from, const std::string& fmt,
                               const std::string& to) {
    OpenOptions o;
    o.format = fmt;
    auto src = open_image(reg, fs, from, o);
    REQUIRE(src.ok());
    ConvertOptions co;
    co.output_format = "vhdx";
    co.create.values = *parse_option_list("block_size=1M");
    auto st = convert(reg, *src->device, fs, to, co);
    REQUIRE_MESSAGE(st.ok(), vt::error_text(st));
}

struct LogFixture {
    std::vector<uint8_t> img = small_image(16 * MiB, {{0, vt::bytes(MiB, 0x11)}});
    uint64_t host = block_host(img, 0);
    std::vector<uint8_t> sector(uint8_t v) { return vt::bytes(4096, v); }
    void place(size_t log_pos, const std::vector<uint8_t>& e) {
        for (size_t i = 0; i < e.size(); ++i) img[MiB + (log_pos + i) % MiB] = e[i];
    }
};

}  // namespace vhdx_test
