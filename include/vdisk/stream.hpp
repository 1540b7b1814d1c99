// SPDX-License-Identifier: Apache-2.0
// vdisk — converting from a stream (a pipe, stdin) in one forward pass with bounded memory.
//
// Only formats whose bytes can be consumed front to back qualify: raw, streamOptimized VMDK (header with the
// capacity first, then self-describing grain markers) and fixed VHD (the data, then a 512-byte footer).
// Everything else (qcow2, vhdx, vdi, sparse VMDK, dynamic VHD) puts tables that say where data lives in
// places a forward reader reaches too late, and is refused before any byte is read.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "vdisk/vdisk.hpp"

namespace vdisk {

/// Bytes read strictly forward.
class InputStream {
public:
    virtual ~InputStream() = default;
    /// Read up to buf.size() bytes; 0 only at the end of the stream.
    virtual Result<size_t> read(std::span<uint8_t> buf) = 0;
    /// Name for messages ("-" for stdin).
    virtual const std::string& name() const = 0;
};

/// A stream over an open descriptor (not closed on destruction).
std::unique_ptr<InputStream> make_fd_input_stream(int fd, std::string display_name = "-");

/// True for the formats convert_stream reads ("raw", "vmdk", "vhd"/"vpc").
bool stream_readable_format(const Registry& registry, std::string_view format);

struct StreamSource {
    std::string format;  ///< raw, vmdk (streamOptimized) or vhd (fixed); required
    /// Virtual size. Needed for raw and fixed VHD read from a pipe (the size is only known at the end of
    /// the stream); a streamOptimized VMDK states it in its header (a given size must then agree).
    std::optional<uint64_t> size;
};

/// Convert what `in` delivers into a new image `dest_name` on `fs`, like convert(): the target is written
/// under a temporary name and renamed into place only after success; zero blocks are not written;
/// ConvertOptions::content_sink sees the whole virtual content. Data must arrive in increasing offset order
/// (a streamOptimized VMDK whose grains go backwards is refused when the target is written sequentially).
/// Memory: one copy window (options.chunk_size) plus one grain, whatever the size. Compression (-c, or a
/// streamOptimized target) runs on the calling thread.
Status convert_stream(const Registry& registry, InputStream& in, const StreamSource& source, FileSystem& fs,
                      std::string_view dest_name, const ConvertOptions& options);

}  // namespace vdisk
