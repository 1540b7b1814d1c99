// SPDX-License-Identifier: Apache-2.0
// vdisk — format plug-ins, open/create options and the registry.
#pragma once

#include "vdisk/export.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vdisk/block_device.hpp"
#include "vdisk/budget.hpp"
#include "vdisk/error.hpp"
#include "vdisk/io.hpp"

namespace vdisk {

/// Caps that bound what a hostile image can make vdisk do.
struct Limits {
    uint32_t max_chain_depth = 16;                    ///< backing chain layers below the top image
    uint64_t max_metadata_bytes = 128ull << 20;       ///< one table held in memory (BAT, GD, log, ...)
    uint64_t max_cache_bytes = 32ull << 20;           ///< metadata caches (qcow2 L2, vmdk GT) per image
    uint64_t max_descriptor_bytes = 1ull << 20;       ///< VMDK text descriptors
    uint32_t max_extents = 4096;                      ///< VMDK extent lines
    uint32_t max_snapshots = 65536;                   ///< qcow2 internal snapshots listed
    uint64_t max_l1_bytes = 32ull << 20;              ///< one qcow2 L1 table (qemu-img's own cap)
    uint64_t max_snapshot_table_bytes = 64ull << 20;  ///< qcow2 snapshot table, names included (qemu-img's)
    /// Everything one opened image holds that the file sizes (tables raw and decoded, caches, snapshot
    /// names, log replay, descriptor extents, check state), summed over its structures.
    uint64_t max_image_memory = 256ull << 20;
    /// The same, summed over every image of a backing chain.
    uint64_t max_chain_memory = 1ull << 30;
    /// Table entries visited and characters decoded per image by open, info and check (zero entries count).
    uint64_t max_work = 1ull << 31;
    /// In untrusted mode the image budget is the smaller of the two memory (and work) figures.
    uint64_t max_untrusted_memory = 64ull << 20;
    uint64_t max_untrusted_work = 1ull << 27;
};

/// How to open an image.
struct OpenOptions {
    bool read_write = false;
    /// No file other than the one named may be opened (backing, data file, extents, parents): any
    /// external reference is an access_denied error. Raw is only used when the format is given.
    bool untrusted = false;
    /// Format name (or alias); empty: probe.
    std::string format;
    /// Accept a VMDK parentCID / VHD parent UUID mismatch.
    bool force_parent_mismatch = false;
    /// Do not open the backing chain at all (info, check of one layer).
    bool no_backing = false;
    /// Backing file of the top image given by the caller (resolved like a stored reference). Used when
    /// the image records no name (VDI differencing images know their parent only by UUID) and overrides a
    /// stored one; the image's own check (UUID, CID) still runs. Refused in untrusted mode.
    std::string backing_override;
    /// qcow2 internal snapshot to read instead of the active layer: "id" or "name" (empty: active).
    std::string snapshot;
    Limits limits;
    /// Which disk of an OVF package (.ova/.ovf) to open, in the descriptor's DiskSection order.
    uint32_t appliance_disk = 0;
    /// When set, every reference the image makes to another file (backing file, data file, extent,
    /// parent) is appended here as `KIND 'NAME'`, whether it is followed or refused.
    std::vector<std::string>* references = nullptr;
};

/// Passed to Format::open/create: the file system, options and the way to reach other files.
class VDISK_API OpenContext {
public:
    /// A fresh budget for this image from options.limits (no chain above it).
    OpenContext(FileSystem& fs, std::string image_name, const OpenOptions& options);
    /// Charge the image to `budget` (made by make_image_budget, usually inside a chain's budget).
    OpenContext(FileSystem& fs, std::string image_name, const OpenOptions& options, std::shared_ptr<Budget> budget)
        : fs_(fs), name_(std::move(image_name)), options_(options), budget_(std::move(budget)) {}

    FileSystem& fs() const { return fs_; }
    const std::string& image_name() const { return name_; }
    const OpenOptions& options() const { return options_; }
    const Limits& limits() const { return options_.limits; }
    /// The image's memory and work budget: formats charge what they hold and count what they walk, and
    /// hand it to the device they return (BlockDevice::set_budget).
    const std::shared_ptr<Budget>& budget() const { return budget_; }

    /// Open a file the image refers to (extent, data file), resolved relative to the image's directory.
    /// Refused with access_denied in untrusted mode; `what` names the reference in the message.
    Result<std::unique_ptr<File>> open_related(std::string_view ref, Access access, std::string_view what) const;
    /// Create a file next to the image (split extents, descriptor files).
    Result<std::unique_ptr<File>> create_related(std::string_view ref) const;

private:
    FileSystem& fs_;
    std::string name_;
    const OpenOptions& options_;
    std::shared_ptr<Budget> budget_;
};

/// The budget of one image under `options` (tighter in untrusted mode), charged also to `chain` if given.
std::shared_ptr<Budget> make_image_budget(const OpenOptions& options, std::shared_ptr<Budget> chain = nullptr);
/// The budget of a whole backing chain under `limits`.
std::shared_ptr<Budget> make_chain_budget(const Limits& limits);

/// One -o option a format accepts at create time, spelled as qemu-img spells it.
struct OptionSpec {
    std::string_view name;
    std::string_view help;
};

/// -o key=value pairs plus the size.
struct VDISK_API CreateOptions {
    std::optional<uint64_t> size;
    std::vector<std::pair<std::string, std::string>> values;
    /// false (qemu-img create -u): a backing_file is recorded but never opened; size must be set.
    bool attach_backing = true;

    /// Value of an option, or nullopt.
    std::optional<std::string> get(std::string_view key) const;
    /// Boolean option: on/off/true/false/yes/no; invalid_argument otherwise.
    Result<bool> get_bool(std::string_view key, bool dflt) const;
    /// Size option with suffixes (k, M, G, T; bytes when none).
    Result<uint64_t> get_size(std::string_view key, uint64_t dflt) const;
    void set(std::string key, std::string value);
};

/// Parse "10G", "512M", "1024", "1.5G" (binary multiples, as qemu-img).
VDISK_API Result<uint64_t> parse_size(std::string_view text);
/// Parse "k=v,k2=v2" (",," escapes a comma) into values.
VDISK_API Result<std::vector<std::pair<std::string, std::string>>> parse_option_list(std::string_view text);

/// What `measure` knows about the data a new image will hold (qemu-img measure).
struct MeasureSource {
    /// Virtual size of the source, or the --size given (CreateOptions::size is set to it too).
    uint64_t virtual_size = 0;
    /// True when there is a source image (false: --size only, nothing to copy).
    bool has_image = false;
    /// True when the source format can carry persistent bitmaps (qcow2): qemu-img then reports a bitmaps size.
    bool source_has_bitmap_support = false;
    /// Number of `granule`-aligned units of [0, virtual_size) in which the source (through its chain) holds
    /// data that is not known to read as zeros. `granule` is a power of two. Empty when has_image is false.
    std::function<Result<uint64_t>(uint64_t granule)> data_units;
};

/// qemu-img measure's answer: bytes the new image file(s) need for the source's data, and for every block
/// of the virtual disk allocated.
struct MeasureResult {
    uint64_t required = 0;
    uint64_t fully_allocated = 0;
    std::optional<uint64_t> bitmaps;  ///< reported only when source and target both support bitmaps
};

/// A format plug-in. Stateless and const: one instance serves any number of images.
class VDISK_API Format {
public:
    virtual ~Format() = default;
    /// Canonical name ("vhd").
    virtual std::string_view name() const noexcept = 0;
    /// Other accepted names ("vpc").
    virtual std::span<const std::string_view> aliases() const noexcept { return {}; }
    /// Score how likely the file is this format: 0 = not at all; ~64 a magic; more for checksums.
    /// Pure: no I/O. `head` is the first min(64 KiB, size) bytes, `tail` the last min(512, size) bytes.
    virtual int probe(std::span<const uint8_t> head, std::span<const uint8_t> tail,
                      uint64_t file_size) const noexcept = 0;
    /// Open an image whose main file is `file`.
    virtual Result<std::unique_ptr<BlockDevice>> open(std::unique_ptr<File> file, const OpenContext& ctx) const = 0;
    /// Options accepted by create (validated by the generic layer before create is called).
    virtual std::span<const OptionSpec> create_options() const noexcept { return {}; }
    /// Create a new image named ctx.image_name() through ctx.fs() and return it opened read-write.
    /// opts.size is set (the generic layer takes it from the backing file when omitted).
    virtual Result<std::unique_ptr<BlockDevice>> create(const CreateOptions& opts, const OpenContext& ctx) const;
    /// True when an image created with `opts` is written strictly forward, so it can go to a pipe or a
    /// character device (raw; streamOptimized VMDK). Default: false.
    virtual bool can_stream(const CreateOptions& opts) const noexcept {
        (void)opts;
        return false;
    }
    /// Consistency check of an image opened by this format: device.check(repair) (kept for callers that hold
    /// a Format; backends implement BlockDevice::do_check).
    Result<CheckResult> check(BlockDevice& device, RepairMode repair) const { return device.check(repair); }
    /// True when the format has internal snapshots (OpenOptions::snapshot); the opener refuses a snapshot
    /// for every other format. Default: false.
    virtual bool has_internal_snapshots() const noexcept { return false; }
    /// Size of the file(s) create + convert would write for `src` with these options (opts.size is set).
    /// Default: unsupported.
    virtual Result<MeasureResult> measure(const CreateOptions& opts, const MeasureSource& src) const;
};

/// The list of formats, in probing order. No global state: callers own their registry.
class VDISK_API Registry {
public:
    Registry() = default;
    explicit Registry(std::vector<std::unique_ptr<Format>> formats) : formats_(std::move(formats)) {}
    Registry(Registry&&) = default;
    Registry& operator=(Registry&&) = default;

    /// Every format this build ships (VDISK_ALL_FORMATS in formats/CMakeLists.txt, picked by VDISK_FORMATS).
    static Registry builtin();

    void add(std::unique_ptr<Format> format) { formats_.push_back(std::move(format)); }
    /// Find by name or alias; nullptr when unknown.
    const Format* find(std::string_view name) const;
    /// Like find, with a not_found error listing the known names.
    Result<const Format*> lookup(std::string_view name) const;
    std::vector<const Format*> formats() const;

    /// Probe a file. The highest score wins; two non-raw formats with the same best score are an error
    /// (ambiguous); when nothing scores above raw, raw is chosen unless `allow_raw` is false.
    Result<const Format*> probe(File& file, bool allow_raw = true) const;
    /// Every format that scores > 1 on the file, with its score, best first.
    Result<std::vector<std::pair<const Format*, int>>> probe_all(File& file) const;

private:
    std::vector<std::unique_ptr<Format>> formats_;
};

}  // namespace vdisk
