// SPDX-License-Identifier: Apache-2.0
// VHD backend internals shared by vhd_format.cpp (probe, open, create, check) and vhd_device.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "util/bytes.hpp"
#include "vdisk/format.hpp"
#include "vhd_layout.hpp"

namespace vdisk::vhd {

/// What open() learned from the footer and dynamic header, validated.
struct Meta {
    Footer footer{};  ///< as read (rewritten on close for dynamic images)
    uint32_t type = 0;
    uint64_t size = 0;  ///< virtual size by qemu's CHS/current_size rule
    // Dynamic and differencing only.
    uint64_t header_offset = 0;
    uint64_t bat_offset = 0;
    uint32_t max_table_entries = 0;
    uint32_t block_size = 0;
    uint32_t bitmap_size = 0;  ///< bytes of sector bitmap in front of each block, a multiple of 512
    uint8_t parent_uuid[16]{};
    std::vector<std::string> parent_names;  ///< candidates, relative ones first

    bool dynamic() const { return type != kTypeFixed; }
    bool differencing() const { return type == kTypeDifferencing; }
};

/// One's complement of the byte sum (the spec's checksum for the footer and the dynamic header), with
/// the 4 checksum bytes at `skip` counted as zero.
uint32_t checksum(std::span<const uint8_t> bytes, size_t skip);
/// Seal a footer or a dynamic header: store its computed checksum.
void seal_footer(Footer& f);
void seal_header(DynamicHeader& h);
/// An on-disk struct's bytes, to write it as it is.
template <class T>
std::span<const uint8_t> bytes_of(const T& v) {
    return {reinterpret_cast<const uint8_t*>(&v), sizeof v};
}
/// Write `len` bytes of `byte` at `off`, at most 1 MiB at a time.
Status fill(File& f, uint64_t off, uint64_t len, uint8_t byte);

/// Set a footer's current_size and CHS geometry for a resize to `new_size`; returns the virtual size qemu
/// will see (rounded up to the geometry for creators sized by CHS).
Result<uint64_t> resize_footer(Footer& f, uint64_t new_size);

/// A differencing image's link to its parent, as set_parent lays it out.
struct ParentFields {
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> payloads;  ///< locator data to write: offset, bytes
    uint64_t end = 0;                                                 ///< first byte past the payloads
    std::vector<std::string> names;                                   ///< what open() derives from them
};
/// Point a dynamic header at a parent: its unique id and time stamp, its file name (UTF-16BE) and W2ku/W2ru
/// locators whose payloads go from `at` (sector aligned) on. The checksum is left to the caller.
ParentFields set_parent(DynamicHeader& dh, const Footer& parent, const util::ParentNames& names, uint64_t at);

std::unique_ptr<BlockDevice> make_device(std::unique_ptr<File> file, Meta meta, std::vector<uint32_t> bat,
                                         uint64_t file_size, bool read_only);
/// The footer and header fields of a device made by make_device, or nullptr (a parent of another format).
const Meta* device_meta(const BlockDevice& device);

}  // namespace vdisk::vhd
