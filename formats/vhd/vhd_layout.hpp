// SPDX-License-Identifier: Apache-2.0
// VHD on-disk structures, from Microsoft's "Virtual Hard Disk Image Format Specification" (v1.0, 2006).
// Every integer is big-endian. No logic here.
#pragma once

#include <boost/endian/buffers.hpp>
#include <cstdint>

namespace vdisk::vhd {

using boost::endian::big_uint16_buf_t;
using boost::endian::big_uint32_buf_t;
using boost::endian::big_uint64_buf_t;

constexpr uint64_t kSector = 512;

// "Hard Disk Footer Format": at the end of every image; dynamic and differencing images also keep a copy
// at offset 0.
struct Footer {
    char cookie[8];                // "conectix"
    big_uint32_buf_t features;     // bit 1 (0x2) is reserved and always set
    big_uint32_buf_t version;      // 0x00010000
    big_uint64_buf_t data_offset;  // dynamic header offset; all ones for fixed disks
    big_uint32_buf_t timestamp;    // seconds since 2000-01-01 00:00 UTC
    char creator_app[4];           // "vpc ", "win ", "qem2", "d2v " ...
    big_uint32_buf_t creator_version;
    big_uint32_buf_t creator_os;  // "Wi2k" or "Mac "
    big_uint64_buf_t original_size;
    big_uint64_buf_t current_size;
    big_uint16_buf_t cylinders;  // "Disk Geometry"
    uint8_t heads;
    uint8_t sectors_per_track;
    big_uint32_buf_t disk_type;
    big_uint32_buf_t checksum;  // one's complement of the byte sum with this field zero
    uint8_t unique_id[16];
    uint8_t saved_state;
    uint8_t reserved[427];
};
static_assert(sizeof(Footer) == 512);

constexpr uint32_t kTypeFixed = 2;
constexpr uint32_t kTypeDynamic = 3;
constexpr uint32_t kTypeDifferencing = 4;

// "Parent Locator Entry" inside the dynamic header.
struct ParentLocator {
    big_uint32_buf_t platform_code;         // "W2ku", "W2ru", "Mac ", "MacX"
    big_uint32_buf_t platform_data_space;   // sectors per the spec; Windows writes bytes
    big_uint32_buf_t platform_data_length;  // bytes
    big_uint32_buf_t reserved;
    big_uint64_buf_t platform_data_offset;
};
static_assert(sizeof(ParentLocator) == 24);

// "Dynamic Disk Header Format".
struct DynamicHeader {
    char cookie[8];                 // "cxsparse"
    big_uint64_buf_t data_offset;   // unused, all ones
    big_uint64_buf_t table_offset;  // Block Allocation Table
    big_uint32_buf_t header_version;
    big_uint32_buf_t max_table_entries;
    big_uint32_buf_t block_size;  // bytes of data per block (bitmap not included); 2 MiB by default
    big_uint32_buf_t checksum;
    uint8_t parent_unique_id[16];
    big_uint32_buf_t parent_timestamp;
    big_uint32_buf_t reserved1;
    uint8_t parent_unicode_name[512];  // UTF-16BE
    ParentLocator locators[8];
    uint8_t reserved2[256];
};
static_assert(sizeof(DynamicHeader) == 1024);

// BAT entries are sector numbers of a block's bitmap; this one means "not allocated".
constexpr uint32_t kBatUnused = 0xffffffff;

// The largest geometry the spec's algorithm produces (65535 cylinders, 16 heads, 255 sectors per track).
constexpr uint64_t kMaxChsSectors = 65535ull * 16 * 255;
// qemu refuses more than 2040 GiB.
constexpr uint64_t kMaxSectors = 0xff000000ull;

}  // namespace vdisk::vhd
