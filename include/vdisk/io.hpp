// SPDX-License-Identifier: Apache-2.0
// vdisk — files and file systems.
//
// Backends never see a host path and never call open(2): every byte they read or write goes through a
// File obtained from a FileSystem. Two implementations ship: a POSIX one rooted at a directory, and an
// in-memory one holding several named files (tests, fuzzers, benchmarks).
#pragma once

#include "vdisk/export.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vdisk/error.hpp"

namespace vdisk {

/// Identity of an underlying file, for detecting cycles in backing chains regardless of the name used.
struct FileIdentity {
    uint64_t device = 0;
    uint64_t inode = 0;
    bool operator==(const FileIdentity&) const = default;
};

/// A range [start, end) of bytes that hold data (as opposed to a hole).
struct DataRange {
    uint64_t start = 0;
    uint64_t end = 0;
};

/// A random-access file. Thread-compatible: concurrent read_at calls on one File are allowed
/// (positional I/O); writes must be serialised by the caller.
class VDISK_API File {
public:
    virtual ~File() = default;

    /// Read up to buf.size() bytes at `offset`. Returns the number read; fewer than asked only at end of
    /// file (0 at or past the end). Never fails for reading past the end.
    virtual Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) = 0;

    /// Write all of `buf` at `offset`, growing the file if needed.
    virtual Status write_at(uint64_t offset, std::span<const uint8_t> buf) = 0;

    /// Current size in bytes.
    virtual Result<uint64_t> size() = 0;

    /// Truncate or extend (extension reads as zeros and stays sparse where the host allows).
    virtual Status resize(uint64_t new_size) = 0;

    /// Make written data durable.
    virtual Status sync() = 0;

    /// Deallocate [offset, offset+len) so it reads as zeros. Default: writes zeros.
    virtual Status punch_hole(uint64_t offset, uint64_t len);

    /// Reserve space for [offset, offset+len) without changing content (fallocate). Default: no-op success.
    virtual Status allocate(uint64_t offset, uint64_t len);

    /// The first data range at or after `offset` (SEEK_DATA/SEEK_HOLE); nullopt when only holes remain.
    /// Default: the whole file is data.
    virtual Result<std::optional<DataRange>> next_data(uint64_t offset);

    /// Bytes the file occupies on its storage (st_blocks * 512), or nullopt when unknown.
    virtual std::optional<uint64_t> allocated_size() { return std::nullopt; }

    /// The name this file was opened under (for messages), as given to the FileSystem.
    virtual const std::string& name() const = 0;

    /// Identity for cycle detection. Distinct files have distinct identities.
    virtual FileIdentity identity() const = 0;
};

/// Read exactly buf.size() bytes at offset or fail with ErrorCode::corrupt ("truncated") naming `what`.
VDISK_API Status read_exact(File& f, uint64_t offset, std::span<uint8_t> buf, std::string_view what = "data");

/// Read at offset; bytes past the end of the file read as zeros.
VDISK_API Status read_zero_fill(File& f, uint64_t offset, std::span<uint8_t> buf);

enum class Access { read_only, read_write };

/// What names a FileSystem may follow.
enum class NamePolicy {
    any,            ///< absolute names and names that climb out of the root ("..") are allowed
    relative_only,  ///< only relative names that stay inside the root
};

/// What a name refers to, after following symbolic links.
enum class FileKind : uint8_t { missing, regular, block_device, char_device, fifo, directory, other };

/// What a writer needs to know before it writes to a name (convert/create targets).
struct FileStat {
    FileKind kind = FileKind::missing;
    /// The name with every symbolic link resolved (the name itself when it is no link): writers work on
    /// this name so that a link stays a link and its target is what changes.
    std::string resolved;
    uint64_t size = 0;  ///< bytes (a block device's capacity)
    /// An existing regular file that a new file renamed over it would replace without losing anything the
    /// file system records for it (owner, group, mode via copy_attributes; a single link; no extended
    /// attributes; a directory the caller may write). False: write such a file in place.
    bool replaceable = true;
};

/// A set of named files. Names use '/' as separator. Relative names are relative to the root.
class VDISK_API FileSystem {
public:
    virtual ~FileSystem() = default;
    virtual Result<std::unique_ptr<File>> open(std::string_view name, Access access) = 0;
    /// Create (or truncate) a file for writing. `exclusive` fails with access_denied if it exists.
    virtual Result<std::unique_ptr<File>> create(std::string_view name, bool exclusive = false) = 0;
    virtual Status rename(std::string_view from, std::string_view to) = 0;
    virtual Status remove(std::string_view name) = 0;
    virtual bool exists(std::string_view name) = 0;

    /// Most names list() returns: a directory holding more regular files is a limit_exceeded error, so a
    /// hostile directory cannot make a caller allocate without bound.
    static constexpr size_t kMaxListEntries = 4096;
    /// Names of the regular files (symbolic links to them included) directly inside directory `dir`
    /// ("" is the root), sorted, each joined to `dir` like the other names: "dir/name", or "name" for "".
    /// Subdirectories and other special files are left out. Default: unsupported.
    virtual Result<std::vector<std::string>> list(std::string_view dir);

    /// What `name` is (links followed). Default: regular when exists(), else missing; never a device.
    virtual Result<FileStat> stat(std::string_view name);
    /// Give the file `to` the owner, group and permission bits of the existing file `from` (used before a
    /// temporary file replaces `from`). Default: nothing to keep.
    virtual Status copy_attributes(std::string_view from, std::string_view to);
    /// A one-file FileSystem writing strictly forward into `name`, a character device or a FIFO.
    /// Default: unsupported.
    virtual Result<std::unique_ptr<FileSystem>> open_stream(std::string_view name);
    /// True when every file of this FileSystem is a forward-only stream (make_stream_file_system).
    virtual bool is_stream() const { return false; }
};

/// Directory part of a name ("a/b/c.vmdk" -> "a/b", "c.vmdk" -> "").
VDISK_API std::string_view dir_name(std::string_view name);
/// Last component of a name.
VDISK_API std::string_view base_name(std::string_view name);
/// Resolve `ref` (as found inside the image `referrer`) to a FileSystem name: absolute refs stay,
/// relative refs are joined to the referrer's directory; "." and ".." components are folded.
VDISK_API std::string resolve_reference(std::string_view referrer, std::string_view ref);
/// True when a name is absolute or climbs above its start with "..".
VDISK_API bool escapes_directory(std::string_view name);

/// How a POSIX file system opens files: qemu-img's cache modes. writeback (the default) is neither;
/// none = direct; writethrough = write_through; directsync = both. (unsafe = writeback without the final
/// sync, which is the caller's decision.)
struct PosixOptions {
    /// O_DIRECT: bypass the page cache. Reads and writes go through aligned bounce buffers, so callers
    /// need not align anything. Opening fails with invalid_argument where the file system refuses O_DIRECT.
    bool direct = false;
    /// Every write is made durable before it returns (fdatasync after each write).
    bool write_through = false;
    /// Take QEMU's image locks (open file description locks on bytes 100+ and 200+, the protocol qemu and
    /// qemu-img use): a file opened read-only may not be written by anyone else meanwhile, one opened
    /// read-write may not be opened by any other locking process. A conflict fails the open with
    /// access_denied ("Failed to get "write" lock"). Off: no locks (qemu-img -U, --force-share).
    bool lock = false;
};

/// A file system over the host, rooted at `root` (empty: the process's working directory).
VDISK_API std::unique_ptr<FileSystem> make_posix_file_system(std::string root = {}, NamePolicy policy = NamePolicy::any,
                                                             PosixOptions options = {});

/// A file system holding exactly one file: the already-open descriptor `fd` (a pipe, stdout), written
/// strictly forward. Any name given to create() names that stream; writes behind the current end fail with
/// invalid_argument (the format cannot be streamed), gaps are filled with zeros, reads fail. For
/// `convert ... -` of formats that write in one forward pass (streamOptimized VMDK, raw).
/// `close_fd`: the file system owns `fd` and closes it when destroyed.
VDISK_API std::unique_ptr<FileSystem> make_stream_file_system(int fd, std::string display_name = "-",
                                                              bool close_fd = false);

/// An in-memory file system. Files persist as long as the FileSystem; Files opened from it keep
/// their data alive even after removal.
class VDISK_API MemoryFileSystem : public FileSystem {
public:
    MemoryFileSystem();
    ~MemoryFileSystem() override;
    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override;
    Result<std::unique_ptr<File>> create(std::string_view name, bool exclusive = false) override;
    Status rename(std::string_view from, std::string_view to) override;
    Status remove(std::string_view name) override;
    bool exists(std::string_view name) override;
    Result<std::vector<std::string>> list(std::string_view dir) override;

    /// Put a file with the given content (replacing any of that name).
    void add(std::string_view name, std::vector<uint8_t> content);
    /// Content of a file, or nullopt.
    std::optional<std::vector<uint8_t>> content(std::string_view name) const;
    /// Names of all files, sorted.
    std::vector<std::string> names() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Wraps a FileSystem so that files created through it are written under temporary names beside their
/// final names. commit() flushes and renames them all into place; destruction without commit removes
/// them. Used by convert/create so that a failed run leaves nothing half-written.
class VDISK_API StagingFileSystem : public FileSystem {
public:
    explicit StagingFileSystem(FileSystem& base);
    ~StagingFileSystem() override;
    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override;
    Result<std::unique_ptr<File>> create(std::string_view name, bool exclusive = false) override;
    Status rename(std::string_view from, std::string_view to) override;
    Status remove(std::string_view name) override;
    bool exists(std::string_view name) override;
    /// The base's listing with staged files shown under their final names.
    Result<std::vector<std::string>> list(std::string_view dir) override;

    /// Sync (unless `sync` is false: qemu-img's cache=unsafe) and rename every staged file to its final
    /// name; a file replacing an existing one first takes its owner, group and mode (copy_attributes).
    /// Files must be closed by the caller first. Errors name the final names, never the temporary ones.
    Status commit(bool sync = true);
    /// Remove every staged file (also done by the destructor when not committed).
    void abort();

private:
    struct Staged {
        std::string final_name;
        std::string temp_name;
    };
    FileSystem& base_;
    std::vector<Staged> staged_;
    bool done_ = false;
    const Staged* find(std::string_view final_name) const;
};

}  // namespace vdisk
