// SPDX-License-Identifier: Apache-2.0
// Checksum-aware mutation: after libFuzzer mutates an input, recompute the checksums that would otherwise
// make almost every mutant fail at the first structure (VHDX headers and region tables: CRC-32C; VHD footer
// and dynamic header: one's complement byte sums). One mutant in eight keeps its broken checksums so the
// rejection paths stay covered. VDI, qcow2 and VMDK carry no checksums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "util/bytes.hpp"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace vdisk::fuzz {

inline void put_le32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void put_be32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * (3 - i)));
}
inline uint64_t get_be64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}

// CRC-32C of [at, at + len) with the 4 bytes at at+4 taken as zero, stored there (VHDX 2.2.2, 2.2.3).
inline void fix_vhdx_crc(uint8_t* data, size_t size, size_t at, size_t len) {
    if (at + len > size) return;
    put_le32(data + at + 4, 0);
    put_le32(data + at + 4, util::crc32c(std::span<const uint8_t>(data + at, len)));
}

// VHD: one's complement of the byte sum with the checksum field (4 bytes at `field`) left out.
inline void fix_vhd_sum(uint8_t* p, size_t len, size_t field) {
    uint32_t sum = 0;
    for (size_t i = 0; i < len; ++i)
        if (i < field || i >= field + 4) sum += p[i];
    put_be32(p + field, ~sum);
}

inline void fix_checksums(uint8_t* data, size_t size) {
    constexpr size_t K = 1024;
    if (size >= 8 && std::memcmp(data, "vhdxfile", 8) == 0) {
        for (size_t at : {64 * K, 128 * K})
            if (at + 4 <= size && std::memcmp(data + at, "head", 4) == 0) fix_vhdx_crc(data, size, at, 4 * K);
        for (size_t at : {192 * K, 256 * K})
            if (at + 4 <= size && std::memcmp(data + at, "regi", 4) == 0) fix_vhdx_crc(data, size, at, 64 * K);
        return;
    }
    // VHD: the footer at the end (and its copy at the start of dynamic images), then the dynamic header.
    for (size_t at : {size >= 512 ? size - 512 : size, size_t(0)}) {
        if (at + 512 > size || std::memcmp(data + at, "conectix", 8) != 0) continue;
        fix_vhd_sum(data + at, 512, 64);
        uint64_t dyn = get_be64(data + at + 16);
        if (dyn <= size && size - dyn >= 1024 && std::memcmp(data + dyn, "cxsparse", 8) == 0)
            fix_vhd_sum(data + dyn, 1024, 36);
    }
}

}  // namespace vdisk::fuzz

/// Define LLVMFuzzerCustomMutator in a target that includes this header.
#define VDISK_FUZZ_CHECKSUM_MUTATOR                                                                     \
    extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) { \
        size = LLVMFuzzerMutate(data, size, max_size);                                                  \
        if (seed % 8 != 0) vdisk::fuzz::fix_checksums(data, size);                                      \
        return size;                                                                                    \
    }
