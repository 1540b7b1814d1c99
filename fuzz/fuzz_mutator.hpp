// SPDX-License-Identifier: Apache-2.0
// Checksum-aware mutation: after libFuzzer mutates an input, recompute the checksums that would otherwise
// make almost every mutant fail at the first structure (VHDX headers and region tables: CRC-32C; VHD footer
// and dynamic header: one's complement byte sums). One mutant in eight keeps its broken checksums so the
// rejection paths stay covered. VDI, qcow2 and VMDK carry no checksums. The checksum arithmetic is shared
// with the test suites (tests/common/checksums.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "checksums.hpp"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace vdisk::fuzz {

inline uint64_t get_be64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}

inline void fix_checksums(uint8_t* data, size_t size) {
    if (size >= 8 && std::memcmp(data, "vhdxfile", 8) == 0) {
        for (size_t at : testlib::kVhdxHeaders)
            if (at + 4 <= size && std::memcmp(data + at, "head", 4) == 0)
                testlib::seal_vhdx_crc(data, size, at, testlib::kVhdxHeaderBytes);
        for (size_t at : testlib::kVhdxRegionTables)
            if (at + 4 <= size && std::memcmp(data + at, "regi", 4) == 0)
                testlib::seal_vhdx_crc(data, size, at, testlib::kVhdxRegionTableBytes);
        return;
    }
    // VHD: the footer at the end (and its copy at the start of dynamic images), then the dynamic header.
    for (size_t at : {size >= 512 ? size - 512 : size, size_t(0)}) {
        if (at + 512 > size || std::memcmp(data + at, "conectix", 8) != 0) continue;
        testlib::seal_vhd_sum(data + at, 512, 64);
        uint64_t dyn = get_be64(data + at + 16);
        if (dyn <= size && size - dyn >= 1024 && std::memcmp(data + dyn, "cxsparse", 8) == 0)
            testlib::seal_vhd_sum(data + dyn, 1024, 36);
    }
}

}  // namespace vdisk::fuzz

/// Define LLVMFuzzerCustomMutator in a target that includes this header.
#define VDISK_FUZZ_CHECKSUM_MUTATOR                                                                         \
    extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) { \
        size = LLVMFuzzerMutate(data, size, max_size);                                                      \
        if (seed % 8 != 0) vdisk::fuzz::fix_checksums(data, size);                                          \
        return size;                                                                                        \
    }
