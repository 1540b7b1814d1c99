// SPDX-License-Identifier: Apache-2.0
// Shared helpers for the test suites: temporary directories, running commands (qemu-img, the tool), the
// shared corpus, registries of chosen formats, images created and read in memory, on-disk fields of images
// held as bytes, the create-write-compare-against-qemu-img round trip, SHA-256 of device contents.
// Helpers the fuzz targets use too live in tests/common.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "registry.hpp"
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
/// A command run under GNU time, with its peak resident set size.
struct MeasuredRun {
    int status = -1;
    std::string output;
    uint64_t rss_kib = 0;  ///< peak RSS in KiB (0 when time reported none)
};
/// Run `cmd` under /usr/bin/time, which writes the peak RSS into `rss_file`; `prefix` (environment
/// assignments, a `timeout` wrapper) goes before time on the command line.
MeasuredRun run_measured(const std::string& prefix, const std::string& cmd, const std::string& rss_file);
/// Run a shell command that must succeed (the test stops otherwise, showing the command and its output);
/// returns its stdout+stderr.
std::string sh(const std::string& cmd);
/// Quote for the shell.
std::string sh_quote(const std::string& s);
/// `cmd` run from inside `dir` (a shell command line).
std::string in_dir(const TempDir& dir, const std::string& cmd);

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
                           const std::string& dir, const std::string& expect_format, const std::string& open_name = "");
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

/// qemu-img check [-f qemu_format] of `path` finds nothing (CHECK: a failure is reported, the test goes on).
void expect_qemu_check(const std::string& path, const std::string& qemu_format = "");
/// qemu-img compare [-f format_a] [-F format_b] finds the two images' contents identical (CHECK).
void expect_qemu_compare(const std::string& a, const std::string& b, const std::string& format_a = "",
                         const std::string& format_b = "");
/// qemu-io -f qemu_format with `commands` (its -c options, e.g. read -P patterns) on `path` exits 0 and no
/// pattern verification failed (CHECK).
void expect_qemu_io_reads(const std::string& path, const std::string& qemu_format, const std::string& commands);

/// qemu-img reads `path` as `prefix` followed by zeros, `size` bytes in all (qemu-img compare against a sparse
/// raw file, and info's virtual size): checks a grown image without holding it in memory (CHECK).
void expect_qemu_reads_prefix(const std::string& path, const std::string& format, const std::vector<uint8_t>& prefix,
                              uint64_t size, const std::string& tmpdir);

/// qemu-img's reading of an image as raw bytes (via qemu-img convert -O raw), for byte comparisons.
std::vector<uint8_t> qemu_read_raw(const std::string& path, const std::string& format, const std::string& tmpdir);

/// Read the whole device.
std::vector<uint8_t> read_all(vdisk::BlockDevice& dev);

/// Deterministic pseudo-random bytes.
std::vector<uint8_t> pattern(size_t len, uint32_t seed);

/// Path of the built vdisk tool.
std::string tool_path();
/// The built vdisk tool, quoted for a shell command line.
std::string tool();

// ---- Registries ---------------------------------------------------------------------------------------

/// registry_of(make_raw_format, make_vhdx_format): a registry of exactly those formats (tests/common).
using vdisk::testlib::registry_of;

// ---- Results and devices ------------------------------------------------------------------------------

/// The error of a failed result as one line, "" for a success (for REQUIRE_MESSAGE).
template <typename T>
std::string error_text(const vdisk::Result<T>& r) {
    return r.ok() ? std::string() : r.error().to_string();
}
inline std::string error_text(const vdisk::Status& s) { return s.ok() ? std::string() : s.error().to_string(); }

/// `n` bytes of value `v`.
inline std::vector<uint8_t> bytes(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

/// Read [offset, offset+len) of a device; a failed read fails the test.
std::vector<uint8_t> read_range(vdisk::BlockDevice& dev, uint64_t offset, size_t len);

// ---- Images held as bytes -----------------------------------------------------------------------------

/// Writes to apply to an image: (offset, data).
using Writes = std::vector<std::pair<uint64_t, std::vector<uint8_t>>>;

/// An image vdisk creates on a memory file system (`options` as for create -o), with `writes` applied and
/// closed, as the bytes of its file. `name` (default "image.<format>") matters where the format records it
/// (a VMDK descriptor names its extent files).
std::vector<uint8_t> created_image(const vdisk::Registry& reg, const std::string& format, uint64_t size,
                                   const Writes& writes = {}, const std::string& options = "",
                                   const std::string& name = "");

/// Integer fields of `width` bytes at `at` of an image held in memory, little- or big-endian. An offset
/// past the end fails the test instead of reading or writing out of bounds.
uint64_t get_le(const std::vector<uint8_t>& b, size_t at, int width);
uint64_t get_be(const std::vector<uint8_t>& b, size_t at, int width);
void put_le(std::vector<uint8_t>& b, size_t at, uint64_t v, int width);
void put_be(std::vector<uint8_t>& b, size_t at, uint64_t v, int width);
inline uint16_t le16(const std::vector<uint8_t>& b, size_t at) { return static_cast<uint16_t>(get_le(b, at, 2)); }
inline uint32_t le32(const std::vector<uint8_t>& b, size_t at) { return static_cast<uint32_t>(get_le(b, at, 4)); }
inline uint64_t le64(const std::vector<uint8_t>& b, size_t at) { return get_le(b, at, 8); }
inline uint32_t be32(const std::vector<uint8_t>& b, size_t at) { return static_cast<uint32_t>(get_be(b, at, 4)); }
inline uint64_t be64(const std::vector<uint8_t>& b, size_t at) { return get_be(b, at, 8); }
inline void put_le16(std::vector<uint8_t>& b, size_t at, uint16_t v) { put_le(b, at, v, 2); }
inline void put_le32(std::vector<uint8_t>& b, size_t at, uint32_t v) { put_le(b, at, v, 4); }
inline void put_le64(std::vector<uint8_t>& b, size_t at, uint64_t v) { put_le(b, at, v, 8); }
inline void put_be16(std::vector<uint8_t>& b, size_t at, uint16_t v) { put_be(b, at, v, 2); }
inline void put_be32(std::vector<uint8_t>& b, size_t at, uint32_t v) { put_be(b, at, v, 4); }
inline void put_be64(std::vector<uint8_t>& b, size_t at, uint64_t v) { put_be(b, at, v, 8); }

/// Write `bytes` at `offset` of a host file, creating or extending it (sparse where nothing is written).
void patch_file(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes);

// ---- Corpus -------------------------------------------------------------------------------------------

/// verify_manifest_entry for one corpus file (e.g. "real/pyvbox/TestHD.vdi.xz"), unpacked into a fresh
/// directory; skipped (or failed under CI=true) without the corpus.
void verify_corpus_image(const vdisk::Registry& reg, const std::string& rel, const std::string& expect_format,
                         const std::string& open_name = "");

// ---- Create, write, compare with qemu-img --------------------------------------------------------------

/// One round trip through a format's writer, checked by qemu-img: vdisk creates `format` with `options`, and
/// a raw reference of the same size; both get `writes` and `zeroes` (write_zeroes) and are read back through
/// the open devices and again after closing; qemu-img check (when `qemu_check`) finds nothing; qemu-img
/// compare finds them equal (or, when `full_compare` is off because reading every byte would be slow, qemu-io
/// reads each write's fill pattern, and the 64 KiB before each write as zeros when `zeros_before_writes`);
/// qemu-img info reports the size; `libyal_info` (vhdiinfo, vmdkinfo), when installed, accepts the file;
/// vdisk's own check reports no corruption.
struct WriteCompare {
    std::string format{};       ///< vdisk's format name
    std::string qemu_format{};  ///< qemu-img's name for it
    std::string options{};      ///< create -o
    uint64_t size = 0;
    Writes writes{};
    std::vector<std::pair<uint64_t, uint64_t>> zeroes{};  ///< (offset, length), after the writes
    bool full_compare = true;
    bool zeros_before_writes = false;
    bool qemu_check = true;
    std::string libyal_info{};
};
/// What a round trip leaves for format-specific checks.
struct Written {
    std::unique_ptr<TempDir> dir;
    std::string path;           ///< the image vdisk wrote
    uint64_t created_size = 0;  ///< the size of the device create_image returned
    std::string qemu_info;      ///< qemu-img info --output=json of it
    vdisk::OpenedImage back;    ///< vdisk's reopening of it
};
Written write_and_compare(const vdisk::Registry& reg, const WriteCompare& c);

}  // namespace vt
