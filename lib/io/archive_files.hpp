// SPDX-License-Identifier: Apache-2.0
// Read-only Files made of other Files: a window of a file (a tar member), a concatenation (an OVF file
// split into chunks), and a gzip stream read at random offsets. Used by appliance (OVA/OVF) sources.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "vdisk/io.hpp"

namespace vdisk {

/// [offset, offset+length) of `base`, as a file of its own named `name`.
std::unique_ptr<File> make_window_file(std::shared_ptr<File> base, uint64_t offset, uint64_t length, std::string name);

/// The files of `parts` one after the other (each part's current size is taken once, at creation).
Result<std::unique_ptr<File>> make_concat_file(std::vector<std::shared_ptr<File>> parts, std::string name);

/// The decompressed content of a gzip file (one or more members). The size is known only after one full
/// pass, which also records a resume point (a copy of zlib's state, ~44 KiB) every 16 MiB of output, at
/// most `max_checkpoints` of them; a read behind the stream's position resumes from the nearest one, so
/// random reads cost at most one spacing of decompression and memory stays bounded.
std::unique_ptr<File> make_gzip_file(std::shared_ptr<File> compressed, std::string name, size_t max_checkpoints = 1024);

/// True when the first bytes are a gzip header (1f 8b 08).
bool looks_gzip(File& f);

}  // namespace vdisk
