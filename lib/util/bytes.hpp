// SPDX-License-Identifier: Apache-2.0
// Small byte-buffer helpers shared by the backends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vdisk::util {

/// True when every byte is zero (word-at-a-time).
bool is_zero(std::span<const uint8_t> buf) noexcept;

/// CRC-32C (Castagnoli), as used by VHDX. `seed` continues a running CRC. Uses the SSE4.2 crc32
/// instruction when the CPU has it (checked once at start-up), else crc32c_table.
uint32_t crc32c(std::span<const uint8_t> buf, uint32_t seed = 0) noexcept;
/// The portable implementation (slicing-by-8 tables), whatever the CPU has; for tests and benchmarks.
uint32_t crc32c_table(std::span<const uint8_t> buf, uint32_t seed = 0) noexcept;
/// The SSE4.2 implementation, or nullopt when this CPU or build has none; for tests and benchmarks.
std::optional<uint32_t> crc32c_hardware(std::span<const uint8_t> buf, uint32_t seed = 0) noexcept;

/// Deflate helpers. raw=true: raw deflate (no zlib header; qcow2); raw=false: zlib stream (vmdk).
/// inflate fills exactly out.size() bytes or fails; with `produced` a stream that ends early is accepted
/// and its length reported. It never writes past `out` (bounded output); input after the stream is ignored.
/// libdeflate decodes; zlib is the fallback for what libdeflate refuses (a stream longer than `out`).
bool inflate_into(std::span<const uint8_t> in, std::span<uint8_t> out, bool raw, size_t* produced = nullptr);
/// Compress `in` at `level`; returns false if the result would not fit `out_capacity`. raw=true keeps every
/// match within 4 KiB, because qemu inflates qcow2 clusters with a 4 KiB window (windowBits -12) and refuses
/// anything reaching further back; raw=false (zlib stream, 32 KiB window) uses libdeflate, levels 0-12.
bool deflate_into(std::span<const uint8_t> in, std::string& out, bool raw, int level, size_t out_capacity);
bool deflate_into(std::span<const uint8_t> in, std::vector<uint8_t>& out, bool raw, int level, size_t out_capacity);

/// A cheap test (a few hundred MB/s) that deflate cannot shrink `buf` by more than about 1 %: the byte
/// histogram is close to flat (entropy coding gains nothing) and a greedy scan for 4-byte repeats within
/// `window` bytes finds almost none (string matching gains nothing). True for random, encrypted or already
/// compressed data, which is most of what deflate wastes its time on when converting real disks.
bool likely_incompressible(std::span<const uint8_t> buf, size_t window) noexcept;

/// Reorder a GUID in the Microsoft mixed-endian layout (VHDX, VDI: first three groups little-endian) into
/// RFC 4122 byte order, or back (the swap is its own inverse). `guid` and `out` may be the same buffer.
void guid_to_uuid(const uint8_t* guid, uint8_t out[16]) noexcept;
/// Format a 16-byte GUID in the Microsoft layout as RFC 4122 text (libuuid), lower or upper case.
std::string guid_to_string(const uint8_t* g, bool upper = false);
/// Format 16 bytes as an RFC 4122 UUID in byte order (libuuid's uuid_unparse_lower).
std::string uuid_to_string(const uint8_t* u);
/// Parse "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (libuuid's uuid_parse, either case) into 16 bytes: in byte order
/// (`guid` false, as uuid_to_string prints) or in the Microsoft mixed-endian layout (`guid` true, as guid_to_string
/// prints).
bool parse_uuid(std::string_view text, uint8_t out[16], bool guid);
/// Fresh random UUID (libuuid).
void generate_uuid(uint8_t out[16]);

/// How a file stored beside `referrer` names `target` (both FileSystem names): the path from the referrer's
/// directory to the target, '/'-separated ("p.vhd", "../base/p.vhd"). nullopt when one name is absolute and
/// the other relative, or the referrer's directory climbs above its start, so no such path can be known.
std::optional<std::string> relative_name(std::string_view referrer, std::string_view target);

/// The names a differencing image records for its parent, from the name given at create time (`backing`,
/// relative to the child's directory as qemu-img takes it): `relative` from the child's directory and
/// `absolute` when the name resolves to an absolute one; either may be empty when it cannot be known.
struct ParentNames {
    std::string resolved;  ///< FileSystem name of the parent
    std::string relative;
    std::string absolute;
};
ParentNames parent_names(std::string_view child, std::string_view backing);

}  // namespace vdisk::util
