// SPDX-License-Identifier: Apache-2.0
// VDI on-disk structures. There is no published specification: the layout below follows the facts stated
// in VirtualBox's VDICore.h (VDIPREHEADER, VDIHEADER0, VDIHEADER1/1PLUS) and the comments of QEMU's
// block/vdi.c. Every integer is little-endian. No logic here.
#pragma once

#include <boost/endian/buffers.hpp>
#include <cstdint>

namespace vdisk::vdi {

using boost::endian::little_uint32_buf_t;
using boost::endian::little_uint64_buf_t;

constexpr uint32_t kSignature = 0xbeda107f;
// u32Version is major << 16 | minor. 1.1 is what every VirtualBox since 1.4 and QEMU write.
constexpr uint32_t kVersion1_1 = 0x00010001;

// Block map entries other than these two are indices of a block slot in the data area.
constexpr uint32_t kBlockFree = 0xffffffff;  // not allocated: read the parent (zeros without one)
constexpr uint32_t kBlockZero = 0xfffffffe;  // not allocated, reads as zeros (discarded)

// VDI_IMAGE_TYPE_*
constexpr uint32_t kTypeNormal = 1;  // dynamic
constexpr uint32_t kTypeFixed = 2;   // static: every block allocated at creation
constexpr uint32_t kTypeUndo = 3;
constexpr uint32_t kTypeDiff = 4;  // differencing: parent found by uuid_linkage

constexpr uint32_t kSectorSize = 512;
constexpr uint32_t kDefaultBlockSize = 1u << 20;

// VDIPREHEADER: free text (a banner such as "<<< Oracle VM VirtualBox Disk Image >>>\n"), then the
// signature and version.
struct PreHeader {
    char file_info[64];
    little_uint32_buf_t signature;
    little_uint32_buf_t version;
};
static_assert(sizeof(PreHeader) == 72);

// VDIDISKGEOMETRY (legacy CHS in the 1.1 header, LCHS in the 1.1 "plus" tail).
struct Geometry {
    little_uint32_buf_t cylinders;
    little_uint32_buf_t heads;
    little_uint32_buf_t sectors;
    little_uint32_buf_t sector_size;
};
static_assert(sizeof(Geometry) == 16);

// VDIHEADER0 (version 0.x): no header size, no offsets and no block extra. The block map follows the
// header directly and the data area follows the map.
struct Header0 {
    little_uint32_buf_t type;
    little_uint32_buf_t flags;
    char comment[256];
    Geometry legacy_geometry;
    little_uint64_buf_t disk_size;
    little_uint32_buf_t block_size;
    little_uint32_buf_t blocks_in_image;
    little_uint32_buf_t blocks_allocated;
    uint8_t uuid_create[16];
    uint8_t uuid_modify[16];
    uint8_t uuid_linkage[16];
};
static_assert(sizeof(Header0) == 348);

// VDIHEADER1 (version 1.x). header_size counts from the start of this struct: 0x180 without the LCHS
// tail (QEMU writes this), 0x190 with it (VDIHEADER1PLUS, what VirtualBox writes).
struct Header1 {
    little_uint32_buf_t header_size;
    little_uint32_buf_t type;
    little_uint32_buf_t flags;
    char comment[256];
    little_uint32_buf_t offset_bmap;  // offBlocks
    little_uint32_buf_t offset_data;  // offData
    Geometry legacy_geometry;         // cbSector is the sector size; C/H/S are 0 in modern images
    little_uint32_buf_t dummy;        // was the geometry translation
    little_uint64_buf_t disk_size;
    little_uint32_buf_t block_size;
    little_uint32_buf_t block_extra;  // bytes of per-block data stored in front of each block
    little_uint32_buf_t blocks_in_image;
    little_uint32_buf_t blocks_allocated;
    uint8_t uuid_create[16];
    uint8_t uuid_modify[16];         // changes on every first write after open
    uint8_t uuid_linkage[16];        // parent's uuid_create (differencing images)
    uint8_t uuid_parent_modify[16];  // parent's uuid_modify when this child was made
    Geometry lchs_geometry;          // only when header_size >= 0x190
};
static_assert(sizeof(Header1) == 400);
constexpr uint32_t kHeader1MinSize = 0x180;
constexpr uint32_t kHeader1PlusSize = 0x190;

constexpr uint64_t kHeaderOffset = sizeof(PreHeader);
// Where a writer puts the block map: the first sector boundary after the header.
constexpr uint64_t kBmapOffset = 512;

}  // namespace vdisk::vdi
