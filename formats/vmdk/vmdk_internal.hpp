// SPDX-License-Identifier: Apache-2.0
// VMDK backend internals shared by the descriptor parser, the device and the format.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "vdisk/format.hpp"
#include "vmdk_layout.hpp"

namespace vdisk::vmdk {

enum class ExtentAccess { rw, rdonly, noaccess };
enum class ExtentType { sparse, flat, zero, vmfs, vmfssparse, sesparse };

std::string_view to_string(ExtentType t) noexcept;

/// One extent line of a descriptor.
struct ExtentLine {
    ExtentAccess access = ExtentAccess::rw;
    uint64_t sectors = 0;
    ExtentType type = ExtentType::flat;
    std::string name;     // empty for ZERO
    uint64_t offset = 0;  // sectors, FLAT/VMFS only
};

/// A parsed text descriptor ("Disk DescriptorFile").
struct Descriptor {
    uint32_t version = 1;
    uint32_t cid = 0xfffffffe;
    uint32_t parent_cid = 0xffffffff;
    std::string create_type;
    std::optional<std::string> parent_hint;
    std::vector<ExtentLine> extents;
    std::vector<std::pair<std::string, std::string>> ddb;  // "ddb.geometry.heads" -> "16", as written

    const std::string* ddb_value(std::string_view key) const;
};

/// Parse descriptor text (may end in NUL padding). Errors: corrupt for malformed lines that address data,
/// unsupported for unknown extent types, limit_exceeded for more than max_extents extents.
Result<Descriptor> parse_descriptor(std::string_view text, const Limits& limits);
/// Render a descriptor as qemu-img and VMware write it.
std::string render_descriptor(const Descriptor& d);

/// True when the bytes look like the start of a text descriptor.
bool looks_like_descriptor(std::string_view head) noexcept;

enum class StoreKind { flat, zero, hosted, cowd, sesparse };

/// What one grain table entry says about a grain.
struct GrainState {
    enum Kind { unallocated, zero, data, compressed } kind = unallocated;
    uint64_t host = 0;  // byte offset in the extent file (data, compressed)
};

/// One extent of the virtual disk, with its file and (for sparse kinds) its grain directory.
struct DiskExtent {
    StoreKind kind = StoreKind::flat;
    ExtentType type = ExtentType::flat;
    ExtentAccess access = ExtentAccess::rw;
    std::string name;       // as written in the descriptor (or the main file's name)
    bool embedded = false;  // the file was opened directly (no descriptor line names it)
    uint64_t start = 0;     // virtual byte offset
    uint64_t length = 0;    // virtual bytes
    File* file = nullptr;
    uint64_t flat_offset = 0;  // bytes
    uint64_t file_size = 0;
    // Sparse kinds.
    uint64_t grain = 0;  // bytes
    uint64_t gtes_per_gt = 0;
    uint64_t capacity = 0;      // bytes covered by the grain directory
    std::vector<uint64_t> gd;   // raw entries
    std::vector<uint64_t> rgd;  // hosted only; empty when absent
    uint64_t gd_offset = 0;     // bytes
    uint64_t rgd_offset = 0;    // bytes
    uint64_t overhead = 0;      // bytes of metadata at the start
    bool compressed = false;
    bool markers = false;
    bool zeroed_gte = false;
    uint64_t se_gt_base = 0;      // seSparse: byte offset of the grain tables area
    uint64_t se_grains_base = 0;  // seSparse: byte offset of the grains area
    SparseExtentHeader header{};  // hosted: the header as read (the footer's when the GD is at the end)
    Charge charge;                // the directories' memory, on the image's budget
};

/// What a VmdkDevice is made of; the opener and create fill it in.
struct VmdkParts {
    Descriptor desc;
    std::vector<std::unique_ptr<File>> files;  // the first is the main file
    std::vector<DiskExtent> extents;           // laid end to end from virtual offset 0
    // Where the descriptor text lives, so the first write can give the image a new CID (children then notice
    // that their parent changed). Null: nowhere to update; room == 0: a descriptor file of its own that may
    // change length.
    File* desc_file = nullptr;
    uint64_t desc_at = 0;
    uint64_t desc_room = 0;
};

/// A VMDK: a descriptor plus extents laid end to end.
class VmdkDevice final : public BlockDevice {
public:
    VmdkDevice(uint64_t size, bool read_only, VmdkParts parts, const Limits& limits);
    ~VmdkDevice() override {
        // Best effort for a caller that never flushed or closed; close() reports errors properly.
        if (dirty_key_ != UINT64_MAX) (void)write_back_gt();
    }

    std::vector<File*> files() const override;
    uint64_t write_granularity() const override;
    bool sequential_writes_only() const override { return stream_writer_; }
    uint64_t compress_granularity() const override;
    bool compresses_every_write() const override { return stream_writer_; }
    Result<std::vector<uint8_t>> compress_chunk(std::span<const uint8_t> chunk) const override;
    Status do_write_compressed_chunk(uint64_t offset, std::span<const uint8_t> compressed,
                                     uint64_t raw_length) override;
    std::optional<BackingReference> backing_reference() const override;
    Status set_backing_reference(const std::string& name, const std::string& format, BlockDevice* new_backing) override;
    Status inflate_unit(const StoredExtent& unit, std::span<const uint8_t> stored,
                        std::span<uint8_t> out) const override;

    const Descriptor& descriptor() const { return desc_; }
    /// Turn this freshly created streamOptimized device into a one-pass writer (file end at `end`).
    void start_stream(uint64_t end);

protected:
    Status do_write(uint64_t offset, std::span<const uint8_t> buf) override;
    Status do_flush() override;
    Status do_close() override;
    Status do_resize(uint64_t new_size) override;
    Result<StoredExtent> do_map_stored(uint64_t offset, uint64_t max_len) override;
    ImageInfo do_info() const override;
    Status check_backing_identity(BlockDevice& backing) override;
    /// Structure only (vmdk_check.cpp); repairs nothing.
    Result<CheckResult> do_check(RepairMode) override;

private:
    size_t find_extent(uint64_t offset) const;
    /// State of grain `gi` of extent `ei` (reads the grain table through the cache).
    Result<GrainState> lookup(size_t ei, uint64_t gi);
    Result<const std::vector<uint64_t>*> table(size_t ei, uint64_t gt);
    /// Where the deflate stream of compressed grain `gi` (entry pointing at `host`) lies: {offset, length}.
    Result<std::pair<uint64_t, uint64_t>> compressed_bytes(size_t ei, uint64_t gi, uint64_t host);
    Status write_sparse(size_t ei, uint64_t rel, std::span<const uint8_t> buf);
    Result<size_t> append_grains(size_t ei, uint64_t gi, std::span<const uint8_t> buf);
    Status allocate_grain(size_t ei, uint64_t gi, GrainState::Kind was, uint64_t in_grain,
                          std::span<const uint8_t> piece);
    Status set_gte(size_t ei, uint64_t gi, uint32_t value);
    Status write_back_gt();
    /// Resize of an image whose last extent is hosted sparse: grow only (vmdk_resize.cpp).
    Status grow_sparse(uint64_t new_size);
    /// Rewrite the descriptor text where it lives (embedded within its sectors, or its own file); vmdk_reference.cpp.
    Status write_descriptor(const Descriptor& d);
    /// invalid_argument when grain `gi` lies before the next grain the one-pass writer can take.
    Status stream_in_order(uint64_t gi) const;
    Status stream_write(uint64_t offset, std::span<const uint8_t> buf);
    Status stream_append(uint64_t gi, std::span<const uint8_t> compressed);
    Result<uint64_t> stream_put_table(uint32_t type, const std::vector<uint64_t>& entries);
    Status stream_flush_gt();
    Status stream_finish();

    Descriptor desc_;
    std::vector<std::unique_ptr<File>> files_;
    std::vector<DiskExtent> extents_;
    Limits limits_;
    File* desc_file_ = nullptr;
    uint64_t desc_at_ = 0;
    uint64_t desc_room_ = 0;
    bool cid_updated_ = false;
    Status update_cid();
    // Concurrent readers (see BlockDevice) share the grain-table cache: lookup() holds meta_mu_ shared while it
    // finds a cached table and reads one entry, exclusively while it loads one; grain data is read outside it (by the
    // generic layer). Writers hold the device exclusively.
    std::shared_mutex meta_mu_;
    std::unordered_map<uint64_t, std::vector<uint64_t>> gt_cache_;
    uint64_t gt_cache_bytes_ = 0;
    Charge gt_charge_;
    // Grain table entries changed in the cache but not yet in the file: one table at a time, entries
    // [dirty_lo_, dirty_hi_). Written back (both copies) before another table changes, before the cache
    // drops tables, and on flush/close; the grains they point to are always written first.
    uint64_t dirty_key_ = UINT64_MAX;
    uint64_t dirty_lo_ = 0, dirty_hi_ = 0;
    // One-pass streamOptimized writer state.
    bool stream_writer_ = false;
    bool stream_done_ = false;
    uint64_t stream_end_ = 0;
    uint64_t stream_next_grain_ = 0;
    uint64_t stream_gt_ = UINT64_MAX;
    std::vector<uint64_t> stream_entries_;
};

/// Open a VMDK whose main file is `file` (sparse header or text descriptor).
Result<std::unique_ptr<BlockDevice>> open_vmdk(std::unique_ptr<File> file, const OpenContext& ctx);
/// Create a VMDK (every subformat) and return it open read-write.
Result<std::unique_ptr<BlockDevice>> create_vmdk(const CreateOptions& opts, const OpenContext& ctx);
Result<MeasureResult> measure_vmdk(const CreateOptions& opts, const MeasureSource& src);

}  // namespace vdisk::vmdk
