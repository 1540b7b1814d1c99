// SPDX-License-Identifier: Apache-2.0
// QCOW version 1 on-disk structures (QEMU's original copy-on-write format, the ancestor of qcow2; the
// layout is described by the header struct in QEMU's block/qcow.c). No logic here. Big-endian throughout.
#pragma once

#include <boost/endian/buffers.hpp>
#include <cstdint>

namespace vdisk::qcow {

using boost::endian::big_uint16_buf_t;
using boost::endian::big_uint32_buf_t;
using boost::endian::big_uint64_buf_t;
using boost::endian::big_uint8_buf_t;

inline constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb", shared with qcow2; the version tells them apart
inline constexpr uint32_t kVersion = 1;

struct Header {
    big_uint32_buf_t magic;
    big_uint32_buf_t version;
    big_uint64_buf_t backing_file_offset;
    big_uint32_buf_t backing_file_size;
    big_uint32_buf_t mtime;
    big_uint64_buf_t size;  // virtual size in bytes (QEMU uses whole sectors of it)
    big_uint8_buf_t cluster_bits;
    big_uint8_buf_t l2_bits;  // log2 of the number of 8-byte entries per L2 table
    big_uint16_buf_t padding;
    big_uint32_buf_t crypt_method;  // 0 none, 1 AES
    big_uint64_buf_t l1_table_offset;
};
static_assert(sizeof(Header) == 48);

// An L2 entry is the host offset of the cluster, 0 when unallocated. With bit 63 set the cluster is
// compressed (raw deflate): the low 63 - cluster_bits bits hold the host offset, the bits above them the
// compressed length in bytes.
inline constexpr uint64_t kCompressed = 1ull << 63;
inline constexpr uint32_t kCryptNone = 0;
inline constexpr uint32_t kCryptAes = 1;
inline constexpr uint32_t kMaxBackingName = 1023;

}  // namespace vdisk::qcow
