// SPDX-License-Identifier: Apache-2.0
// VHDX on-disk structures, from Microsoft [MS-VHDX] v20160714 (section numbers below). No logic here.
// Every integer is little-endian. GUIDs are stored in Microsoft's mixed-endian layout (Data1..3 LE).
#pragma once

#include <boost/endian/buffers.hpp>
#include <cstdint>

namespace vdisk::vhdx {

using boost::endian::little_uint16_buf_t;
using boost::endian::little_uint32_buf_t;
using boost::endian::little_uint64_buf_t;

struct Guid {
    uint8_t b[16];
};
static_assert(sizeof(Guid) == 16);

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;
constexpr uint64_t TiB = 1024 * GiB;

// 2.1 File layout: the first 1 MiB holds five 64 KiB structures.
constexpr uint64_t kFileIdOffset = 0;
constexpr uint64_t kHeader1Offset = 64 * KiB;
constexpr uint64_t kHeader2Offset = 128 * KiB;
constexpr uint64_t kRegionTable1Offset = 192 * KiB;
constexpr uint64_t kRegionTable2Offset = 256 * KiB;
constexpr uint64_t kHeaderSectionSize = 1 * MiB;
constexpr uint64_t kRegionAlignment = 1 * MiB;

// 2.2.1 File Type Identifier.
constexpr char kFileSignature[8] = {'v', 'h', 'd', 'x', 'f', 'i', 'l', 'e'};
struct FileIdentifier {
    uint8_t signature[8];
    uint8_t creator[512];  // UTF-16LE, NUL padded
};
static_assert(sizeof(FileIdentifier) == 520);

// 2.2.2 Header. The CRC-32C covers the 4 KiB structure with the checksum field zeroed.
constexpr uint32_t kHeaderSignature = 0x64616568;  // "head"
constexpr size_t kHeaderSize = 4096;
struct Header {
    little_uint32_buf_t signature;
    little_uint32_buf_t checksum;
    little_uint64_buf_t sequence_number;
    Guid file_write_guid;
    Guid data_write_guid;
    Guid log_guid;
    little_uint16_buf_t log_version;  // must be 0
    little_uint16_buf_t version;      // must be 1
    little_uint32_buf_t log_length;   // multiple of 1 MiB
    little_uint64_buf_t log_offset;   // multiple of 1 MiB, >= 1 MiB
    uint8_t reserved[4016];
};
static_assert(sizeof(Header) == kHeaderSize);

// 2.2.3 Region table: 64 KiB, CRC-32C over all of it with the checksum zeroed.
constexpr uint32_t kRegionSignature = 0x69676572;  // "regi"
constexpr size_t kRegionTableSize = 64 * KiB;
constexpr uint32_t kMaxRegionEntries = 2047;
struct RegionTableHeader {
    little_uint32_buf_t signature;
    little_uint32_buf_t checksum;
    little_uint32_buf_t entry_count;
    little_uint32_buf_t reserved;
};
static_assert(sizeof(RegionTableHeader) == 16);
struct RegionTableEntry {
    Guid guid;
    little_uint64_buf_t file_offset;  // multiple of 1 MiB
    little_uint32_buf_t length;       // multiple of 1 MiB
    little_uint32_buf_t flags;        // bit 0: Required
};
static_assert(sizeof(RegionTableEntry) == 32);

// 2.2.3.2 Known regions. GUID text form {2DC27766-F623-4200-9D64-115E9BFD4A08} etc., stored mixed-endian.
constexpr Guid kBatRegionGuid = {
    {0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08}};
constexpr Guid kMetadataRegionGuid = {
    {0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e}};

// 2.3.1 Log entry header, 2.3.1.2/2.3.1.3 descriptors, 2.3.1.4 data sector. The log is a circular
// buffer of 4 KiB sectors; an entry's CRC-32C covers EntryLength bytes with its checksum zeroed.
constexpr uint32_t kLogEntrySignature = 0x65676f6c;    // "loge"
constexpr uint32_t kZeroDescSignature = 0x6f72657a;    // "zero"
constexpr uint32_t kDataDescSignature = 0x63736564;    // "desc"
constexpr uint32_t kDataSectorSignature = 0x61746164;  // "data"
constexpr uint64_t kLogSectorSize = 4096;
struct LogEntryHeader {
    little_uint32_buf_t signature;
    little_uint32_buf_t checksum;
    little_uint32_buf_t entry_length;
    little_uint32_buf_t tail;
    little_uint64_buf_t sequence_number;
    little_uint32_buf_t descriptor_count;
    little_uint32_buf_t reserved;
    Guid log_guid;
    little_uint64_buf_t flushed_file_offset;
    little_uint64_buf_t last_file_offset;
};
static_assert(sizeof(LogEntryHeader) == 64);
struct LogDescriptor {  // zero and data descriptors share this shape
    little_uint32_buf_t signature;
    little_uint32_buf_t trailing_bytes;  // data: last 4 bytes of the sector; zero: reserved
    little_uint64_buf_t leading_bytes;   // data: first 8 bytes of the sector; zero: ZeroLength
    little_uint64_buf_t file_offset;
    little_uint64_buf_t sequence_number;
};
static_assert(sizeof(LogDescriptor) == 32);
struct LogDataSector {
    little_uint32_buf_t signature;
    little_uint32_buf_t sequence_high;
    uint8_t data[4084];
    little_uint32_buf_t sequence_low;
};
static_assert(sizeof(LogDataSector) == kLogSectorSize);

// 2.5 BAT entry: state in bits 0-2, FileOffsetMB in bits 20-63.
constexpr uint64_t kBatStateMask = 0x7;
constexpr unsigned kBatOffsetShift = 20;
enum PayloadState : uint8_t {
    kPayloadNotPresent = 0,
    kPayloadUndefined = 1,
    kPayloadZero = 2,
    kPayloadUnmapped = 3,
    kPayloadFullyPresent = 6,
    kPayloadPartiallyPresent = 7,
};
enum SectorBitmapState : uint8_t {
    kSbNotPresent = 0,
    kSbPresent = 6,
};
// 2.5.1 Chunk ratio numerator and sector bitmap block size.
constexpr uint64_t kChunkRatioNumerator = uint64_t(1) << 23;
constexpr uint64_t kSectorBitmapBlockSize = 1 * MiB;

// 2.6 Metadata region: 64 KiB table at its start.
constexpr uint64_t kMetadataSignature = 0x617461646174656dull;  // "metadata"
constexpr size_t kMetadataTableSize = 64 * KiB;
constexpr uint32_t kMaxMetadataEntries = 2047;
constexpr uint32_t kMaxMetadataItemLength = 1 * MiB;
struct MetadataTableHeader {
    little_uint64_buf_t signature;
    little_uint16_buf_t reserved;
    little_uint16_buf_t entry_count;
    uint8_t reserved2[20];
};
static_assert(sizeof(MetadataTableHeader) == 32);
struct MetadataTableEntry {
    Guid item_id;
    little_uint32_buf_t offset;  // from the start of the metadata region, >= 64 KiB
    little_uint32_buf_t length;
    little_uint32_buf_t flags;  // bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired
    little_uint32_buf_t reserved;
};
static_assert(sizeof(MetadataTableEntry) == 32);
constexpr uint32_t kMetaIsUser = 1;
constexpr uint32_t kMetaIsVirtualDisk = 2;
constexpr uint32_t kMetaIsRequired = 4;

// 2.6.2 Known metadata items.
constexpr Guid kFileParametersGuid = {
    {0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b}};
constexpr Guid kVirtualDiskSizeGuid = {
    {0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8}};
constexpr Guid kPage83Guid = {
    {0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46}};
constexpr Guid kLogicalSectorSizeGuid = {
    {0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f}};
constexpr Guid kPhysicalSectorSizeGuid = {
    {0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56}};
constexpr Guid kParentLocatorGuid = {
    {0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c}};
// 2.6.2.6.1 The VHDX parent locator type {B04AEFB7-D19E-4A81-B789-25B8E9445913}.
constexpr Guid kVhdxParentLocatorType = {
    {0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13}};

// 2.6.2.1 File parameters.
struct FileParameters {
    little_uint32_buf_t block_size;
    little_uint32_buf_t flags;  // bit 0 LeaveBlocksAllocated, bit 1 HasParent
};
static_assert(sizeof(FileParameters) == 8);
constexpr uint32_t kLeaveBlocksAllocated = 1;
constexpr uint32_t kHasParent = 2;
constexpr uint64_t kMinBlockSize = 1 * MiB;
constexpr uint64_t kMaxBlockSize = 256 * MiB;
constexpr uint64_t kMaxVirtualSize = 64 * TiB;  // 2.6.2.2

// 2.6.2.6 Parent locator header and key/value entries (offsets from the item's start, UTF-16LE).
struct ParentLocatorHeader {
    Guid locator_type;
    little_uint16_buf_t reserved;
    little_uint16_buf_t key_value_count;
};
static_assert(sizeof(ParentLocatorHeader) == 20);
struct ParentLocatorEntry {
    little_uint32_buf_t key_offset;
    little_uint32_buf_t value_offset;
    little_uint16_buf_t key_length;
    little_uint16_buf_t value_length;
};
static_assert(sizeof(ParentLocatorEntry) == 12);

}  // namespace vdisk::vhdx
