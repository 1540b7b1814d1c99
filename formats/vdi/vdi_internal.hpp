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

/// Build the device over an opened, validated image.
std::unique_ptr<BlockDevice> make_device(std::unique_ptr<File> file, Meta meta, std::vector<uint32_t> bmap,
                                         uint64_t file_size, bool read_only, bool force_parent_mismatch);

/// Consistency check of a device made by make_device (nullptr result when `device` is not one).
Result<CheckResult> check_device(BlockDevice& device, RepairMode repair);

/// The header fields of a device made by make_device, or nullptr.
const Meta* device_meta(const BlockDevice& device);

}  // namespace vdisk::vdi
