// SPDX-License-Identifier: Apache-2.0
// Checksums of on-disk structures, recomputed after a test or the fuzz mutator patched them, so a patched
// field reaches the code behind the checksum instead of failing at it. Shared by the test suites and the
// fuzz targets (fuzz/fuzz_mutator.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "util/bytes.hpp"

namespace vdisk::testlib {

inline void store_le32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void store_be32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * (3 - i)));
}

/// VHDX (MS-VHDX 2.2.2, 2.2.3): CRC-32C of [at, at + len) with its checksum field (the 4 bytes at at + 4)
/// taken as zero, stored in that field. Nothing happens when the range is not inside the `size` bytes.
inline void seal_vhdx_crc(uint8_t* data, size_t size, size_t at, size_t len) {
    if (at > size || len > size - at || len < 8) return;
    store_le32(data + at + 4, 0);
    store_le32(data + at + 4, util::crc32c(std::span<const uint8_t>(data + at, len)));
}

/// Where a VHDX keeps its two headers (4 KiB each) and its two region tables (64 KiB each).
inline constexpr size_t kVhdxHeaders[] = {size_t{64} * 1024, size_t{128} * 1024};
inline constexpr size_t kVhdxHeaderBytes = size_t{4} * 1024;
inline constexpr size_t kVhdxRegionTables[] = {size_t{192} * 1024, size_t{256} * 1024};
inline constexpr size_t kVhdxRegionTableBytes = size_t{64} * 1024;

/// Recompute both VHDX headers' checksums.
inline void seal_vhdx_headers(uint8_t* data, size_t size) {
    for (size_t at : kVhdxHeaders) seal_vhdx_crc(data, size, at, kVhdxHeaderBytes);
}
/// Recompute both VHDX region tables' checksums.
inline void seal_vhdx_regions(uint8_t* data, size_t size) {
    for (size_t at : kVhdxRegionTables) seal_vhdx_crc(data, size, at, kVhdxRegionTableBytes);
}

/// VHD: the one's complement of the byte sum of [p, p + len) leaving out the 4-byte checksum field at
/// `field`, stored big-endian in that field (the footer: 512 bytes, field 64; the dynamic header: 1024
/// bytes, field 36).
inline uint32_t vhd_sum(const uint8_t* p, size_t len, size_t field) {
    uint32_t sum = 0;
    for (size_t i = 0; i < len; ++i)
        if (i < field || i >= field + 4) sum += p[i];
    return ~sum;
}
inline void seal_vhd_sum(uint8_t* p, size_t len, size_t field) { store_be32(p + field, vhd_sum(p, len, field)); }

}  // namespace vdisk::testlib
