// SPDX-License-Identifier: Apache-2.0
// vdisk — virtual appliances (OVF packages): an .ova tar holding an .ovf descriptor and its disks, or a bare
// .ovf with the files beside it. Disks are read straight out of the tar (a member is a window of the file;
// gzip'd and chunked members are decompressed / joined on the fly), never unpacked.
//
// open_image() recognises appliances by content and opens disk OpenOptions::appliance_disk, so every
// operation (info, convert, map, compare, hash) takes an .ova or .ovf as its source.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vdisk/vdisk.hpp"

namespace vdisk {

/// One disk the OVF's DiskSection declares, joined with its References/File entry.
struct ApplianceDisk {
    std::string disk_id;                     ///< ovf:diskId
    std::string href;                        ///< the File's ovf:href (a name inside the tar / beside the .ovf)
    uint64_t capacity = 0;                   ///< bytes (ovf:capacity times ovf:capacityAllocationUnits)
    std::optional<uint64_t> populated_size;  ///< ovf:populatedSize
    std::string format_url;                  ///< ovf:format, e.g. ...vmdk.html#streamOptimized
    std::string format;                      ///< vdisk's name for it ("vmdk", "vhd", ...) or "" when unknown
    std::string compression;                 ///< "gzip" or ""
    uint64_t chunk_size = 0;                 ///< ovf:chunkSize (0: one piece)
    std::vector<std::string> pieces;         ///< the stored pieces: one member/file, or every chunk in order
    uint64_t stored_bytes = 0;               ///< sum of the pieces' sizes
};

struct Appliance {
    bool archive = false;    ///< an .ova tar (else a bare .ovf)
    std::string descriptor;  ///< the .ovf's name (the member name inside the tar)
    std::vector<ApplianceDisk> disks;
};

/// Caps on what an appliance may make vdisk read or hold.
inline constexpr uint64_t kMaxOvfBytes = 4u << 20;   ///< the descriptor
inline constexpr uint32_t kMaxTarMembers = 65536;    ///< members indexed
inline constexpr uint32_t kMaxApplianceDisks = 256;  ///< Disk and File elements each

/// True when `name` is an OVA (a tar whose first member is an .ovf) or an OVF descriptor (XML whose root is
/// an Envelope); decided from the first bytes, not the name.
Result<bool> is_appliance(FileSystem& fs, std::string_view name);

/// Read an appliance's descriptor and index. Every href must name a member of the tar (or, for a bare .ovf,
/// a relative name beside it that stays in its folder; refused when options.untrusted, since that is
/// another file). Missing pieces are not_found errors; malformed XML or tar headers are invalid_format or
/// corrupt naming the offset.
Result<Appliance> read_appliance(FileSystem& fs, std::string_view name, const OpenOptions& options);

/// Open disk `index` (in DiskSection order) of the appliance `name` like open_image opens an image: the
/// format is probed inside (ovf:format is only a hint), the device reads straight out of the tar.
Result<OpenedImage> open_appliance_disk(const Registry& registry, FileSystem& fs, std::string_view name, size_t index,
                                        const OpenOptions& options);

}  // namespace vdisk
