// SPDX-License-Identifier: Apache-2.0
// Shared between the VDI format (probe/open/create/check) and the device.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vdi_layout.hpp"
#include "vdisk/format.hpp"

namespace vdisk::vdi {

/// The header in host terms, whichever version it came from.
struct Meta {
    uint32_t version = kVersion1_1;
    uint32_t header_size = 0;  ///< 0 for version 0 headers
    uint32_t type = kTypeNormal;
    uint32_t flags = 0;
    std::string comment;
    uint64_t offset_bmap = 0;
    uint64_t offset_data = 0;
    uint32_t sector_size = kSectorSize;
    uint64_t disk_size = 0;
    uint32_t block_size = kDefaultBlockSize;
    uint32_t block_extra = 0;
    uint32_t blocks_in_image = 0;
    uint32_t blocks_allocated = 0;
    uint8_t uuid_create[16] = {};
    uint8_t uuid_modify[16] = {};
    uint8_t uuid_linkage[16] = {};
    uint8_t uuid_parent_modify[16] = {};

    uint64_t slot_size() const { return uint64_t{block_size} + block_extra; }
    bool is_diff() const { return type == kTypeDiff; }
};

const char* type_name(uint32_t type);

/// How a differencing image reaches its parent.
struct ParentLink {
    /// The parent found by searching beside the image, as a name relative to the image; empty: none.
    std::string found;
    /// Why no parent is attached when none was found, for the error a read of a parent block gives.
    std::string note;
    /// The caller asked for this layer alone (OpenOptions::no_backing): block status reports the parent's
    /// blocks as unallocated. Otherwise, with no parent attached, it fails like a read: whole-chain
    /// mapping would take those blocks for zeros and convert would silently lose the parent's data.
    bool layer_only = false;
};

/// Search the directories a VirtualBox VM folder keeps its images in (the image's own, its "Snapshots"
/// subdirectory and its parent) for the .vdi whose creation UUID is `m.uuid_linkage`. `self` is the
/// image, which never counts. Two matches are an error; no match gives an empty `found` and a note.
Result<ParentLink> find_parent(const File& self, const Meta& m, const OpenContext& ctx);

/// Build the device over an opened, validated image.
std::unique_ptr<BlockDevice> make_device(std::unique_ptr<File> file, Meta meta, std::vector<uint32_t> bmap,
                                         uint64_t file_size, bool read_only, ParentLink parent);

/// The header fields of a device made by make_device, or nullptr.
const Meta* device_meta(const BlockDevice& device);

}  // namespace vdisk::vdi
