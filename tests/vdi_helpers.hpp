// SPDX-License-Identifier: Apache-2.0
// Helpers of the VDI suite (vdi_*_test.cpp): header field offsets, images vdisk creates, opened from memory.
#pragma once

#include <string>
#include <vector>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdisk/vdisk.hpp"

namespace vdi_test {

using namespace vdisk;
using vt::le32;
using vt::put_le32;
using vt::put_le64;

constexpr uint64_t MiB = 1ull << 20;
constexpr uint64_t GiB = 1ull << 30;

// Header field offsets (pre-header 72 bytes + VDIHEADER1).
constexpr size_t kVersion = 0x44, kHeaderSize = 0x48, kType = 0x4c, kOffBmap = 0x154, kOffData = 0x158,
                 kSectorSz = 0x168, kDiskSize = 0x170, kBlockSize = 0x178, kBlockExtra = 0x17c, kBlocks = 0x180,
                 kAllocated = 0x184, kUuidCreate = 0x188, kUuidModify = 0x198, kUuidLink = 0x1a8,
                 kUuidParentModify = 0x1b8;

inline Registry make_reg() { return vt::registry_of(make_raw_format, make_vdi_format); }

inline Result<OpenedImage> open_mem(const Registry& reg, MemoryFileSystem& fs, const std::string& name, bool rw = false,
                                    Limits limits = {}) {
    OpenOptions o;
    o.read_write = rw;
    o.limits = limits;
    return open_image(reg, fs, name, o);
}

// A dynamic (or static) image made by vdisk with writes applied, as bytes.
inline std::vector<uint8_t> small_image(uint64_t size, const vt::Writes& writes, bool is_static = false) {
    return vt::created_image(make_reg(), "vdi", size, writes, is_static ? "static=on" : "");
}

}  // namespace vdi_test
