// SPDX-License-Identifier: Apache-2.0
// QCOW2 on-disk structures and constants (QEMU docs/interop/qcow2.txt). No logic here.
// Every integer in a qcow2 file is big-endian.
#pragma once

#include <boost/endian/buffers.hpp>
#include <cstddef>
#include <cstdint>

namespace vdisk::qcow2 {

using boost::endian::big_uint16_buf_t;
using boost::endian::big_uint32_buf_t;
using boost::endian::big_uint64_buf_t;
using boost::endian::big_uint8_buf_t;

inline constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"

// "Header": the first 72 bytes are common to versions 2 and 3; version 3 adds the fields up to 104
// (header_length says how much is present), and byte 104 is the compression type when it is covered.
struct HeaderV2 {
    big_uint32_buf_t magic;
    big_uint32_buf_t version;
    big_uint64_buf_t backing_file_offset;
    big_uint32_buf_t backing_file_size;
    big_uint32_buf_t cluster_bits;
    big_uint64_buf_t size;
    big_uint32_buf_t crypt_method;
    big_uint32_buf_t l1_size;
    big_uint64_buf_t l1_table_offset;
    big_uint64_buf_t refcount_table_offset;
    big_uint32_buf_t refcount_table_clusters;
    big_uint32_buf_t nb_snapshots;
    big_uint64_buf_t snapshots_offset;
};
static_assert(sizeof(HeaderV2) == 72);

struct HeaderV3 {
    HeaderV2 v2;
    big_uint64_buf_t incompatible_features;
    big_uint64_buf_t compatible_features;
    big_uint64_buf_t autoclear_features;
    big_uint32_buf_t refcount_order;
    big_uint32_buf_t header_length;
    big_uint8_buf_t compression_type;  // "Additional fields": present when header_length > 104
    uint8_t padding[7];
};
static_assert(sizeof(HeaderV3) == 112);

inline constexpr uint32_t kHeaderV2Length = 72;
inline constexpr uint32_t kHeaderV3MinLength = 104;
inline constexpr uint32_t kHeaderV3Length = 112;

// Byte offsets of header fields that are updated in place.
inline constexpr uint64_t kOffBackingName = offsetof(HeaderV2, backing_file_offset);  // offset (8) + size (4)
inline constexpr uint64_t kOffSize = offsetof(HeaderV2, size);
inline constexpr uint64_t kOffL1Size = offsetof(HeaderV2, l1_size);  // l1_size (4) followed by l1_table_offset (8)
inline constexpr uint64_t kOffRefcountTable = offsetof(HeaderV2, refcount_table_offset);  // + clusters (4)
inline constexpr uint64_t kOffSnapshots = offsetof(HeaderV2, nb_snapshots);  // count (4) + snapshots_offset (8)
inline constexpr uint64_t kOffIncompatible = offsetof(HeaderV3, incompatible_features);

// Incompatible feature bits.
inline constexpr uint64_t kIncompatDirty = 1ull << 0;
inline constexpr uint64_t kIncompatCorrupt = 1ull << 1;
inline constexpr uint64_t kIncompatDataFile = 1ull << 2;
inline constexpr uint64_t kIncompatCompression = 1ull << 3;
inline constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
inline constexpr uint64_t kIncompatKnown = 0x1f;
// Compatible feature bits.
inline constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;
// Autoclear feature bits.
inline constexpr uint64_t kAutoclearBitmaps = 1ull << 0;
inline constexpr uint64_t kAutoclearDataFileRaw = 1ull << 1;

inline constexpr uint8_t kCompressionZlib = 0;
inline constexpr uint8_t kCompressionZstd = 1;

// "Header extensions": type (4), length (4), data padded to 8 bytes.
struct ExtensionHeader {
    big_uint32_buf_t type;
    big_uint32_buf_t length;
};
static_assert(sizeof(ExtensionHeader) == 8);
inline constexpr uint32_t kExtEnd = 0x00000000;
inline constexpr uint32_t kExtBackingFormat = 0xe2792aca;
inline constexpr uint32_t kExtFeatureTable = 0x6803f857;
inline constexpr uint32_t kExtBitmaps = 0x23852875;
inline constexpr uint32_t kExtEncryption = 0x0537be77;
inline constexpr uint32_t kExtDataFile = 0x44415441;

inline constexpr uint32_t kMaxBackingNameLength = 1023;

// "Cluster mapping": L1 and L2 entries.
inline constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55
inline constexpr uint64_t kFlagCopied = 1ull << 63;
inline constexpr uint64_t kFlagCompressed = 1ull << 62;
inline constexpr uint64_t kFlagZero = 1ull << 0;  // standard clusters, version 3 only
inline constexpr uint64_t kL1ReservedMask = 0x7f000000000001ffull;
inline constexpr uint32_t kSubclusters = 32;  // per cluster with extended L2 entries

// "Snapshots": each entry is 8-byte aligned; extra data, id and name follow the fixed part.
struct SnapshotHeader {
    big_uint64_buf_t l1_table_offset;
    big_uint32_buf_t l1_size;
    big_uint16_buf_t id_str_size;
    big_uint16_buf_t name_size;
    big_uint32_buf_t date_sec;
    big_uint32_buf_t date_nsec;
    big_uint64_buf_t vm_clock_nsec;
    big_uint32_buf_t vm_state_size;
    big_uint32_buf_t extra_data_size;
};
static_assert(sizeof(SnapshotHeader) == 40);

// Optional extra data of a snapshot entry; only the prefix covered by extra_data_size is present.
struct SnapshotExtra {
    big_uint64_buf_t vm_state_size_large;
    big_uint64_buf_t disk_size;
    big_uint64_buf_t icount;
};
static_assert(sizeof(SnapshotExtra) == 24);

}  // namespace vdisk::qcow2
