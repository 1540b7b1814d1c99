// SPDX-License-Identifier: Apache-2.0
// Shared helpers for the test suites: temporary directories, running qemu-img, the shared corpus,
// SHA-256 of device contents.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vdisk/vdisk.hpp"

namespace vt {

/// A fresh directory removed on destruction.
struct TempDir {
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    std::string path;
    std::string operator/(const std::string& name) const { return path + "/" + name; }
};

struct CmdResult {
    int status = -1;     ///< exit status (or -1 when it could not run)
    std::string output;  ///< stdout and stderr
};
/// Run a shell command; stdout+stderr captured.
CmdResult run(const std::string& cmd);
/// Quote for the shell.
std::string sh_quote(const std::string& s);

/// True when the program is on PATH. When it is missing and CI=true, the calling test fails.
bool have(const std::string& program);
/// The oracle: qemu-img must exist (fails under CI=true, else the test is skipped with a message).
bool need_qemu();
/// True when CI=true in the environment.
bool in_ci();

/// The shared corpus root (../shared/corpus beside the project, or $VDISK_CORPUS), if present.
std::optional<std::string> corpus_root();
/// Like corpus_root but reports a skip (or a failure under CI=true) when missing.
std::optional<std::string> need_corpus();
/// Decompress a corpus file (".xz", ".bz2", ".gz" or plain) into dir; returns the decompressed path.
std::string unpack_corpus(const std::string& root, const std::string& rel, const std::string& dir);
/// The corpus manifest.
vdisk::Json corpus_manifest(const std::string& root);

/// Check one manifest entry (an object from manifest.json "real"): unpack every file of its corpus folder
/// into `dir`, open it with `reg` (probing), and compare virtual size, each data extent's SHA-256, and
/// zeros everywhere else against what qemu-img recorded. `expect_format` is vdisk's name ("vhd" for vpc).
void verify_manifest_entry(const vdisk::Registry& reg, const std::string& root, const vdisk::Json& entry,
                           const std::string& dir, const std::string& expect_format,
                           const std::string& open_name = "");
/// The manifest entry for a corpus path like "real/dfvfs/ext2.qcow2.xz".
vdisk::Json manifest_entry(const std::string& root, const std::string& rel);

/// Lower-case hex SHA-256.
std::string sha256_hex(const uint8_t* data, size_t len);
/// SHA-256 of [offset, offset+len) of a device.
std::string sha256_range(vdisk::BlockDevice& dev, uint64_t offset, uint64_t len);
/// SHA-256 of a whole file on the host (via sha256sum).
std::string sha256_file(const std::string& path);

/// Read a whole host file.
std::vector<uint8_t> read_file(const std::string& path);
void write_file(const std::string& path, const std::vector<uint8_t>& data);

/// Open a host image (absolute or relative path) with the given registry.
vdisk::Result<vdisk::OpenedImage> open_host(const vdisk::Registry& reg, const std::string& path,
                                            const std::string& format = "", bool read_write = false);

/// qemu-img's reading of an image as raw bytes (via qemu-img convert -O raw), for byte comparisons.
std::vector<uint8_t> qemu_read_raw(const std::string& path, const std::string& format, const std::string& tmpdir);

/// Read the whole device.
std::vector<uint8_t> read_all(vdisk::BlockDevice& dev);

/// Deterministic pseudo-random bytes.
std::vector<uint8_t> pattern(size_t len, uint32_t seed);

/// Path of the built vdisk tool.
std::string tool_path();

}  // namespace vt
