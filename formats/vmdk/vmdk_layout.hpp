// SPDX-License-Identifier: Apache-2.0
// VMDK on-disk structures, from VMware "Virtual Disk Format 5.0" (section names below). No logic here.
// Every integer is little-endian; offsets and sizes in headers count 512-byte sectors.
#pragma once

#include <boost/endian/buffers.hpp>
#include <cstdint>

namespace vdisk::vmdk {

using boost::endian::little_uint16_buf_t;
using boost::endian::little_uint32_buf_t;
using boost::endian::little_uint64_buf_t;

constexpr uint64_t kSector = 512;

// "Hosted Sparse Extent Header": magic "KDMV" read as a little-endian 32-bit number.
constexpr uint32_t kSparseMagic = 0x564d444b;
// A streamOptimized header whose grain directory lives in the footer near the end of the file.
constexpr uint64_t kGdAtEnd = 0xffffffffffffffffull;

// Header flags.
constexpr uint32_t kFlagValidNewline = 1u << 0;
constexpr uint32_t kFlagRedundantGt = 1u << 1;
constexpr uint32_t kFlagZeroedGrainGte = 1u << 2;
constexpr uint32_t kFlagCompressed = 1u << 16;
constexpr uint32_t kFlagMarkers = 1u << 17;

constexpr uint16_t kCompressionNone = 0;
constexpr uint16_t kCompressionDeflate = 1;

// Grain table entry meaning "this grain reads as zeros" (zeroed-grain GTE, version 2+).
constexpr uint32_t kGteZeroed = 1;

struct SparseExtentHeader {
    little_uint32_buf_t magic;
    little_uint32_buf_t version;
    little_uint32_buf_t flags;
    little_uint64_buf_t capacity;           // sectors
    little_uint64_buf_t grain_size;         // sectors
    little_uint64_buf_t descriptor_offset;  // sectors, 0: none embedded
    little_uint64_buf_t descriptor_size;    // sectors
    little_uint32_buf_t num_gtes_per_gt;
    little_uint64_buf_t rgd_offset;  // redundant grain directory
    little_uint64_buf_t gd_offset;
    little_uint64_buf_t overhead;  // sectors of metadata before the first grain
    uint8_t unclean_shutdown;
    uint8_t single_end_line_char;   // '\n'
    uint8_t non_end_line_char;      // ' '
    uint8_t double_end_line_char1;  // '\r'
    uint8_t double_end_line_char2;  // '\n'
    little_uint16_buf_t compress_algorithm;
    uint8_t pad[433];
};
static_assert(sizeof(SparseExtentHeader) == 512);

// "Stream-Optimized Compressed Sparse Extents": every grain and metadata block is preceded by a marker.
// A grain marker has size != 0 (the compressed length) and the data follows the 12-byte head directly;
// a metadata marker has size == 0, a type, and occupies a whole sector, the metadata following it.
struct Marker {
    little_uint64_buf_t value;  // grain: LBA in sectors; metadata: sectors of metadata that follow
    little_uint32_buf_t size;   // grain: compressed bytes; metadata: 0
    little_uint32_buf_t type;   // metadata only
};
static_assert(sizeof(Marker) == 16);
constexpr uint64_t kGrainMarkerHead = 12;

enum MarkerType : uint32_t { kMarkerEos = 0, kMarkerGt = 1, kMarkerGd = 2, kMarkerFooter = 3 };

// "ESXi Host Sparse Extents" (vmfsSparse, COWD): version 1 header, 4096 GTEs per grain table.
constexpr uint32_t kCowdMagic = 0x44574f43;  // "COWD"
struct CowdHeader {
    little_uint32_buf_t magic;
    little_uint32_buf_t version;
    little_uint32_buf_t flags;
    little_uint32_buf_t num_sectors;
    little_uint32_buf_t grain_size;
    little_uint32_buf_t gd_offset;
    little_uint32_buf_t num_gd_entries;
    little_uint32_buf_t free_sector;
};
static_assert(sizeof(CowdHeader) == 32);
constexpr uint32_t kCowdGtesPerGt = 4096;

// "Space-Efficient Sparse Extents" (seSparse): a 4 KiB constant header at sector 0.
constexpr uint64_t kSeSparseConstMagic = 0x00000000cafebabeull;
constexpr uint64_t kSeSparseVolatileMagic = 0x00000000cafecafeull;
struct SeSparseConstHeader {
    little_uint64_buf_t magic;
    little_uint64_buf_t version;           // 0x0000000200000001
    little_uint64_buf_t capacity;          // sectors
    little_uint64_buf_t grain_size;        // sectors, 8
    little_uint64_buf_t grain_table_size;  // sectors, 64
    little_uint64_buf_t flags;
    little_uint64_buf_t reserved1;
    little_uint64_buf_t reserved2;
    little_uint64_buf_t reserved3;
    little_uint64_buf_t reserved4;
    little_uint64_buf_t volatile_header_offset;
    little_uint64_buf_t volatile_header_size;
    little_uint64_buf_t journal_header_offset;
    little_uint64_buf_t journal_header_size;
    little_uint64_buf_t journal_offset;
    little_uint64_buf_t journal_size;
    little_uint64_buf_t grain_dir_offset;
    little_uint64_buf_t grain_dir_size;
    little_uint64_buf_t grain_tables_offset;
    little_uint64_buf_t grain_tables_size;
    little_uint64_buf_t free_bitmap_offset;
    little_uint64_buf_t free_bitmap_size;
    little_uint64_buf_t backmap_offset;
    little_uint64_buf_t backmap_size;
    little_uint64_buf_t grains_offset;
    little_uint64_buf_t grains_size;
    uint8_t pad[304];
};
static_assert(sizeof(SeSparseConstHeader) == 512);

}  // namespace vdisk::vmdk
