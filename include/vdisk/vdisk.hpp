// SPDX-License-Identifier: Apache-2.0
// vdisk — the library's operations: open (with backing chains), create, convert, map, compare.
//
//   #include <vdisk/vdisk.hpp>
//   auto reg = vdisk::Registry::builtin();
//   auto fs = vdisk::make_posix_file_system();
//   auto dev = vdisk::open_image(reg, *fs, "disk.vmdk", {});
//   if (!dev) { std::cerr << dev.error().to_string() << "\n"; return 1; }
#pragma once

#include "vdisk/export.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vdisk/block_device.hpp"
#include "vdisk/error.hpp"
#include "vdisk/format.hpp"
#include "vdisk/io.hpp"
#include "vdisk/json.hpp"
#include "vdisk/text.hpp"

namespace vdisk {

/// Library version string ("0.1.0").
VDISK_API std::string_view version() noexcept;

/// An opened image: the top device (with its chain attached) and the format it was opened as.
struct OpenedImage {
    std::unique_ptr<BlockDevice> device;
    const Format* format = nullptr;
};

/// Open `name` through `fs`: probe (or use options.format), open, then open and attach the backing
/// chain, each layer resolved relative to the layer above. Chains deeper than
/// options.limits.max_chain_depth and chains that revisit a file (by identity) are errors.
VDISK_API Result<OpenedImage> open_image(const Registry& registry, FileSystem& fs, std::string_view name,
                                         const OpenOptions& options);

/// Create a new image. When opts.size is unset and a backing_file option is given, the size is taken
/// from the backing image. Unknown option names are an invalid_argument error naming the option.
/// The returned device is open read-write; close() it to finish.
VDISK_API Result<std::unique_ptr<BlockDevice>> create_image(const Registry& registry, FileSystem& fs,
                                                            std::string_view name, std::string_view format,
                                                            CreateOptions opts);

/// Check -o names against the format's create option table: invalid_argument naming the first unknown one.
Status validate_create_options(const Format& format, const CreateOptions& opts);

/// qemu-img measure: the file size a new `format` image needs to hold `source` (through its chain) converted
/// with `opts`, or, with no source, an empty image of opts.size bytes. Options are validated as create does.
Result<MeasureResult> measure(const Registry& registry, std::string_view format, CreateOptions opts,
                              BlockDevice* source);

/// Allocation status through the whole chain: data and zero extents of the topmost layer that has
/// them; `depth` is the layer (0 = top) that answered, or the chain length when no layer has the range.
struct MappedExtent {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool data = false;     ///< some layer holds data (else: reads as zeros)
    bool zero = false;     ///< reads as zeros
    bool present = false;  ///< allocated in some layer (qemu-img's "present")
    bool compressed = false;
    uint32_t depth = 0;
    const File* file = nullptr;
    std::optional<uint64_t> host_offset;
};
VDISK_API Result<MappedExtent> map_extent(BlockDevice& top, uint64_t offset, uint64_t max_len);

class ContentSink;  // vdisk/hash.hpp

/// Progress callback: (bytes done, bytes total). A callback returning bool stops the operation by
/// returning false (the operation then fails with ErrorCode::cancelled); one returning void never stops it.
/// An exception thrown by the callback is caught and also ends the operation as cancelled.
class VDISK_API ProgressFn {
public:
    ProgressFn() = default;
    ProgressFn(std::nullptr_t) {}  // NOLINT: "no progress"
    template <typename F>
    requires(!std::is_same_v<std::decay_t<F>, ProgressFn> && std::is_invocable_v<F&, uint64_t, uint64_t>)
        ProgressFn(F f) {  // NOLINT: implicit, like std::function
        if constexpr (std::is_void_v<std::invoke_result_t<F&, uint64_t, uint64_t>>)
            fn_ = [f = std::move(f)](uint64_t d, uint64_t t) mutable {
                f(d, t);
                return true;
            };
        else fn_ = [f = std::move(f)](uint64_t d, uint64_t t) mutable { return static_cast<bool>(f(d, t)); };
    }
    explicit operator bool() const noexcept { return static_cast<bool>(fn_); }
    /// Call the callback: ok() to go on, ErrorCode::cancelled when it asked to stop or threw.
    Status operator()(uint64_t done, uint64_t total) const;

private:
    std::function<bool(uint64_t, uint64_t)> fn_;
};

/// How convert writes its target. The target name may be a new or existing regular file, a symbolic link
/// (the file it leads to is written; the link stays), a block device (written in place, never truncated
/// or replaced; zeroed where the source reads zeros unless target_is_zero; too small is an out_of_range
/// error naming both sizes), or a character device / FIFO (formats written in one forward pass only:
/// raw, streamOptimized VMDK). New files, and existing files that renaming keeps intact (one link, a
/// writable directory, no extended attributes; owner, group and mode are copied over), are written under
/// a temporary name and renamed into place after a successful close and sync: on failure or cancellation
/// nothing is left and the old file is untouched. Other existing files are written in place, as qemu-img does.
struct ConvertOptions {
    std::string output_format;       ///< name or alias
    CreateOptions create;            ///< -o values (size is set by convert)
    bool compress = false;           ///< -c
    unsigned threads = 0;            ///< worker threads for compression; 0 = number of cores
    uint64_t chunk_size = 2u << 20;  ///< copy unit
    ProgressFn progress;
    const std::atomic<bool>* cancel = nullptr;  ///< set to true to abort (ErrorCode::cancelled; target removed)
    /// -n: the target exists already in output_format (at least as large as the source) and is written in
    /// place; ranges that read as zeros in the source are zeroed in it unless target_is_zero.
    bool existing_target = false;
    /// --target-is-zero: the existing target (or device) reads as zeros already; skip zeroing it.
    bool target_is_zero = false;
    /// -S: the shortest run of zero bytes left unwritten (sparse) in the target; 0 writes every byte (a fully
    /// allocated target). A multiple of 512.
    uint64_t sparse_size = 4096;
    /// -B / -F: the new image gets this backing file, and only what differs from it is written.
    std::string backing_file, backing_format;
    /// false: no final sync of the target (qemu-img's cache=unsafe).
    bool sync = true;
    /// -W: compressed chunks may be written in completion order where the format allows it.
    bool out_of_order = false;
    /// -r: at most this many bytes written per second (0: no limit).
    uint64_t rate_limit = 0;
    /// --salvage: read errors of the source do not stop the conversion: the unreadable 512-byte sectors are
    /// written as zeros and reported through on_salvaged (offset, length, the read error).
    bool salvage = false;
    std::function<void(uint64_t, uint64_t, const Error&)> on_salvaged;
    /// When set, receives the source's whole virtual content in offset order as it is copied (zero and
    /// unallocated ranges as zero runs), e.g. a HashSink for `convert --hash`. Not owned; the caller
    /// finishes it after convert() returns.
    ContentSink* content_sink = nullptr;
};

/// Copy every byte of `source` (through its chain) into the image `dest_name` on `fs` (see ConvertOptions
/// for what the target may be). Unallocated and zero ranges are not written where the target reads zeros
/// anyway; all-zero buffers are detected.
VDISK_API Status convert(const Registry& registry, BlockDevice& source, FileSystem& fs, std::string_view dest_name,
                         const ConvertOptions& options);

/// One read-only device whose content is the given devices' contents one after another (convert with
/// several sources). The devices must outlive it.
VDISK_API std::unique_ptr<BlockDevice> make_concat_device(std::vector<BlockDevice*> parts);

/// qemu-img rebase: make `image` refer to `backing` (stored as given, resolved relative to the image; empty:
/// no backing image). Safe mode (unsafe = false) first copies into the image every range it does not hold
/// itself where the old chain and the new backing read differently, so its contents do not change; unsafe
/// mode only rewrites the reference. Formats without backing references: unsupported.
struct RebaseOptions {
    std::string backing;
    std::string backing_format;  ///< recorded, and used to open the new backing (empty: probe)
    bool unsafe = false;
    std::string image_format;  ///< empty: probe
    uint64_t chunk_size = 1u << 20;
    ProgressFn progress;
};
Status rebase(const Registry& registry, FileSystem& fs, std::string_view image, const RebaseOptions& options);

/// qemu-img commit: write what `image` holds (and, with `base` naming a deeper image of the chain, every
/// layer above it) into `base` (empty: the image's backing image). Unless keep_top, the image is emptied
/// afterwards where the format can drop clusters (qcow2), so it reads through to the updated base.
struct CommitOptions {
    std::string base;          ///< a chain member, by name as stored or as a path relative to the image
    bool keep_top = false;     ///< -d
    std::string image_format;  ///< empty: probe
    uint64_t chunk_size = 1u << 20;
    ProgressFn progress;
};
Status commit(const Registry& registry, FileSystem& fs, std::string_view image, const CommitOptions& options);

/// qemu-img dd: create `output` (format options.output_format, size as qemu-img computes it: the input size,
/// or count*bs when count is given and smaller, minus skip*bs) and copy input bytes [skip*bs, that size) into
/// it from offset 0 in blocks of bs. All-zero blocks are not written (the new image reads zeros there).
struct DdOptions {
    std::string output_format = "raw";
    uint64_t block_size = 512;
    std::optional<uint64_t> count;
    uint64_t skip = 0;
};
Status dd(const Registry& registry, BlockDevice& input, FileSystem& fs, std::string_view output,
          const DdOptions& options);

/// qemu-img amend: open `image` read-write and change the given -o options in place (BlockDevice::amend).
Status amend(const Registry& registry, FileSystem& fs, std::string_view image, const std::string& format,
             const std::vector<std::pair<std::string, std::string>>& options);

/// Compare two devices' contents. Returns the first differing offset, or nullopt when identical
/// (a size difference counts as a difference at the shorter size, unless the extra part reads zero
/// and `strict_size` is false).
VDISK_API Result<std::optional<uint64_t>> compare(BlockDevice& a, BlockDevice& b, bool strict_size = false,
                                                  const ProgressFn& progress = {});

/// The JSON object `vdisk info --output=json` prints for one layer, qemu-img's field names.
VDISK_API Json info_json(BlockDevice& device, std::string_view filename);

/// A safety report for an image from a stranger (`vdisk info --untrusted`), in the spirit of OpenStack's
/// format_inspector: the detected format and whether it matches `claimed_format` (may be empty), every
/// format whose probe matches the bytes (polyglots), the virtual size, every reference to another file,
/// features that matter (encryption, dirty/corrupt flags), MBR/GPT sanity for raw images, and
/// {"verdict": "safe"|"unsafe", "reasons": [...]}. Opens nothing but `name`.
VDISK_API Json safety_report(const Registry& registry, FileSystem& fs, std::string_view name,
                             std::string_view claimed_format, const Limits& limits);

}  // namespace vdisk
