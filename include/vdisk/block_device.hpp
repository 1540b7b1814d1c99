// SPDX-License-Identifier: Apache-2.0
// vdisk — the one interface every format backend implements.
#pragma once

#include "vdisk/export.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vdisk/budget.hpp"
#include "vdisk/error.hpp"
#include "vdisk/io.hpp"
#include "vdisk/json.hpp"

namespace vdisk {

/// What a range of a device holds, as far as *this layer* knows.
enum class ExtentKind : uint8_t {
    data,         ///< allocated here: read it
    zero,         ///< reads as zeros here (zero cluster, hole in a raw file); does not consult the backing
    unallocated,  ///< not present in this layer: reads fall through to the backing device (zeros if none)
};

/// A run of the virtual disk with one allocation state in one layer.
struct Extent {
    uint64_t offset = 0;  ///< virtual offset
    uint64_t length = 0;  ///< bytes, > 0
    ExtentKind kind = ExtentKind::unallocated;
    bool compressed = false;              ///< data stored compressed (no meaningful host offset)
    const File* file = nullptr;           ///< host file holding uncompressed data, when known
    std::optional<uint64_t> host_offset;  ///< where the data of `offset` starts in `file`
};

/// How a range of *this layer* is stored (the map-first device contract): see BlockDevice::map_stored().
enum class StoredKind : uint8_t {
    data,         ///< plain bytes; at `host_offset` in `file` when the backend says so, else read() them
    zero,         ///< reads as zeros in this layer
    unallocated,  ///< not in this layer: reads fall through to the backing device (zeros if none)
    compressed,   ///< one compressed unit: `host_length` bytes at `host_offset` in `file`; see inflate_unit()
};

/// What map_stored() reports. For `compressed` the extent is the whole unit (cluster, grain) that holds
/// the offset asked about: it may start before that offset and reach past the end of the device (the last,
/// partial cluster inflates to a whole one). Every other kind starts at the offset asked about.
struct StoredExtent {
    uint64_t offset = 0;  ///< virtual offset
    uint64_t length = 0;  ///< virtual bytes, > 0 (compressed: the bytes the unit inflates to)
    StoredKind kind = StoredKind::unallocated;
    File* file = nullptr;      ///< host file (data: may be nullptr = not known; compressed: never nullptr)
    uint64_t host_offset = 0;  ///< data: where `offset` is stored; compressed: first stored byte
    uint64_t host_length = 0;  ///< compressed: stored bytes (capped by the backend); the part of them past the
                               ///< end of `file` reads as zeros
};

/// An internal snapshot (qcow2).
struct SnapshotInfo {
    std::string id;
    std::string name;
    uint64_t vm_state_size = 0;
    uint64_t date_sec = 0;
    uint64_t date_nsec = 0;
    uint64_t vm_clock_nsec = 0;
    uint64_t icount = UINT64_MAX;  ///< UINT64_MAX: not recorded
};

/// What `vdisk info` shows. Field names follow qemu-img's JSON where one exists.
struct ImageInfo {
    std::string format;  ///< "qcow2", "vmdk", ...
    uint64_t virtual_size = 0;
    std::optional<uint64_t> cluster_size;  ///< allocation granularity (cluster, grain, block)
    bool dirty = false;
    bool encrypted = false;
    std::optional<std::string> backing_filename;  ///< as stored in the image
    std::optional<std::string> backing_format;
    std::vector<SnapshotInfo> snapshots;
    /// The image's own identity where the format records one (VHD unique id, VDI creation UUID), in the form
    /// create's `-o uuid=` takes: convert passes it on to keep the identity (--keep-uuid).
    std::optional<std::string> uuid;
    /// qemu-img's "format-specific": {"type": "qcow2", "data": {...}}; null when there is nothing.
    Json format_specific;
};

/// Reference from an image to the image below it in a chain.
struct BackingReference {
    /// Candidate names, most preferred first, as stored in the image (resolved relative to the image).
    std::vector<std::string> names;
    /// Format name if the image records it (qcow2 backing format extension); empty: probe.
    std::string format;
};

enum class RepairMode { none, leaks, all };

/// The result of a consistency check, in qemu-img's terms.
struct CheckResult {
    uint64_t corruptions = 0;
    uint64_t leaks = 0;
    uint64_t check_errors = 0;
    uint64_t corruptions_fixed = 0;
    uint64_t leaks_fixed = 0;
    std::optional<uint64_t> image_end_offset;
    std::optional<uint64_t> total_clusters;
    std::optional<uint64_t> allocated_clusters;
    std::optional<uint64_t> fragmented_clusters;
    std::optional<uint64_t> compressed_clusters;
    std::vector<std::string> messages;  ///< one line per problem found, at most max_check_messages
    uint64_t messages_dropped = 0;      ///< problems counted but not described (past the cap)
};

/// Problems a check describes in `messages`; past this it only counts them.
inline constexpr size_t max_check_messages = 1000;

/// A virtual disk (one layer, with an optional backing device below it).
///
/// The device contract is "map first": a backend answers one question — how is this offset stored in this
/// layer (do_map_stored: plain data at a host file offset, zeros, not here, or one compressed unit) — and,
/// if it stores compressed units, how to inflate one (inflate_unit). The generic layer does every read from
/// that answer: positional file I/O, zero fill, falling through to the backing device, the refusal when a
/// required backing device is missing, merging of adjacent pieces, and block_status. Read and block status
/// therefore cannot disagree. Raw-like backends whose "map" is trivial may override do_read/do_block_status
/// directly instead (a backend overrides one side or the other, never neither).
///
/// Public methods are non-virtual: they check bounds, read-only state and alignment once and then call
/// the protected do_* hooks, which may therefore assume in-range requests with length > 0.
///
/// Threads: read(), block_status(), info() and size() may be called from any number of threads at once on
/// one device (and its chain); they share the device. write(), write_zeroes(), discard(), flush(), resize(),
/// close() and attach_backing() take the device exclusively: the library serializes them against each other
/// and against readers, so callers need no lock of their own. A thread inside an exclusive call may re-enter
/// any method of the same device (a backend reading its own data for a read-modify-write). Backends therefore
/// see do_write/do_write_zeroes/do_discard/do_flush/do_resize/do_close one at a time with no reader running,
/// and do_read/do_block_status possibly concurrently with each other: a backend guards any state those two
/// change (metadata caches) with its own lock and does its positional file I/O outside that lock where it can.
/// compress_chunk() and inflate_unit() are const and thread-safe; write_compressed_chunk() and check() take
/// the device exclusively. Destroying a device while another thread uses it is a bug.
class VDISK_API BlockDevice {
public:
    virtual ~BlockDevice();
    BlockDevice(const BlockDevice&) = delete;
    BlockDevice& operator=(const BlockDevice&) = delete;

    /// Virtual size in bytes.
    uint64_t size() const noexcept { return size_.load(std::memory_order_relaxed); }
    bool read_only() const noexcept { return read_only_; }

    /// Read buf.size() bytes at offset; out_of_range if [offset, offset+len) is not inside the device.
    Status read(uint64_t offset, std::span<uint8_t> buf);
    /// Write; unaligned edges are read-modified-written by this layer. read_only error when read-only.
    Status write(uint64_t offset, std::span<const uint8_t> buf);
    /// Make [offset, offset+len) read as zeros; `may_unmap` lets the backend deallocate.
    Status write_zeroes(uint64_t offset, uint64_t len, bool may_unmap = true);
    /// Hint that the range is unused; content afterwards is unspecified but reads stay in range.
    Status discard(uint64_t offset, uint64_t len);
    Status flush();
    /// Change the virtual size (formats that support it).
    Status resize(uint64_t new_size);
    /// Finish writing (footers, final metadata) and flush. Idempotent. A device that was written must be
    /// closed to report errors; the destructor closes silently.
    Status close();

    /// Allocation state of this layer at `offset`, covering at most max_len bytes (clamped to the end).
    /// out_of_range when offset >= size(). The result starts at `offset` and has length in (0, max_len].
    Result<Extent> block_status(uint64_t offset, uint64_t max_len);

    ImageInfo info() const;

    /// The device below this one, if any.
    BlockDevice* backing() const noexcept { return backing_.get(); }
    /// The reference this image records to its backing image (nullopt: none).
    virtual std::optional<BackingReference> backing_reference() const { return std::nullopt; }
    /// Attach the backing device (done by the generic opener). Calls check_backing (structure: must hold)
    /// and check_backing_identity (VMDK parentCID, VHD/VDI parent UUID, VHDX DataWriteGuid) first; the
    /// identity check is skipped when `accept_identity_mismatch` (OpenOptions::force_parent_mismatch).
    Status attach_backing(std::unique_ptr<BlockDevice> backing, bool accept_identity_mismatch = false);

    /// Consistency check of this layer (qemu-img check); repairs when `repair` is not none and the device
    /// is writable. Takes the device exclusively. Default: unsupported.
    Result<CheckResult> check(RepairMode repair = RepairMode::none);

    /// What this layer holds and has walked (memory charged, work counted); never null. The opener hands
    /// the device the budget its format charged during open; a device nobody handed one has its own.
    const std::shared_ptr<Budget>& budget() const noexcept { return budget_; }
    void set_budget(std::shared_ptr<Budget> budget) noexcept {
        if (budget) budget_ = std::move(budget);
    }

    /// Files making up this layer (for actual-size and identity). The first is the main file.
    virtual std::vector<File*> files() const = 0;

    /// Granularity that do_write requires; unaligned writes are read-modify-written. Power of two.
    virtual uint64_t write_granularity() const { return 512; }
    /// True when writes must arrive in increasing offset order (streamOptimized VMDK).
    virtual bool sequential_writes_only() const { return false; }

    /// Compression support for convert -c. 0 = no compressed writes. Chunks are aligned to this size and
    /// exactly this long (except the last one of the device).
    virtual uint64_t compress_granularity() const { return 0; }
    /// True when every write is compressed anyway (streamOptimized VMDK): convert then compresses on its
    /// worker threads even without -c.
    virtual bool compresses_every_write() const { return false; }
    /// Compress one chunk; thread-safe and independent of the device's state. An empty result means
    /// "not worth compressing": the caller writes the chunk normally.
    virtual Result<std::vector<uint8_t>> compress_chunk(std::span<const uint8_t> chunk) const;
    /// Store an already compressed chunk at `offset` (aligned to compress_granularity, raw_length bytes of
    /// the device: one granule, or what is left of the device). Checked like write().
    Status write_compressed_chunk(uint64_t offset, std::span<const uint8_t> compressed, uint64_t raw_length);

    /// Map first: how the range at `offset` is stored in this layer, covering at most max_len bytes (see
    /// StoredExtent for the compressed case). out_of_range when offset >= size(). The default derives the
    /// answer from block_status() and reports compressed ranges as `data` without a file, so a caller that
    /// only knows map_stored() + read() works with every backend; backends that store compressed units
    /// override it together with inflate_unit(), so a caller can read the stored bytes itself (positional
    /// I/O, no device state) and inflate units on as many threads as it likes.
    Result<StoredExtent> map_stored(uint64_t offset, uint64_t max_len);
    /// Decode one compressed unit that map_stored() reported: `stored` holds its host_length stored bytes,
    /// `out` is exactly unit.length bytes. Thread-safe and independent of the device's state (it may run
    /// on any thread while the device is used elsewhere). corrupt when the bytes do not decode to exactly
    /// the unit; the default returns unsupported (no backend without compressed units is asked).
    virtual Status inflate_unit(const StoredExtent& unit, std::span<const uint8_t> stored,
                                std::span<uint8_t> out) const;

    /// Internal snapshots (qcow2; default: unsupported). The device must be open read-write on its active
    /// layer. create: a new snapshot of the current contents named `info.name`, with a fresh id (info.id is
    /// ignored), its date from `info`. remove/apply: the snapshot whose id, else name, is `id_or_name`
    /// (not_found otherwise); apply makes its contents (and size) the active ones.
    virtual Status snapshot_create(const SnapshotInfo& info);
    virtual Status snapshot_remove(const std::string& id_or_name);
    virtual Status snapshot_apply(const std::string& id_or_name);

    /// Rewrite the image's reference to its backing image (rebase): `name` as it is to be stored (empty:
    /// no backing image), `format` recorded where the format can (may be empty). `new_backing` is the image
    /// `name` designates, opened, for formats that record its identity (VMDK parentCID); null when `name` is
    /// empty. Only the reference changes: nothing is attached or copied. Default: unsupported.
    virtual Status set_backing_reference(const std::string& name, const std::string& format, BlockDevice* new_backing);

    /// qemu-img amend: change creation options of an existing image in place (qcow2: compat,
    /// lazy_refcounts). Options the format cannot change are an error naming them. Default: unsupported.
    virtual Status amend(const std::vector<std::pair<std::string, std::string>>& options);

protected:
    BlockDevice(uint64_t size, bool read_only);

    /// Read [offset, offset+buf.size()), in range, length > 0. Default: from do_map_stored (see the class
    /// comment). A backend that overrides it fills unallocated parts with read_from_backing(), zero parts
    /// with zeros.
    virtual Status do_read(uint64_t offset, std::span<uint8_t> buf);
    /// Write an in-range range aligned to write_granularity() (both ends, except at the device's end).
    virtual Status do_write(uint64_t offset, std::span<const uint8_t> buf);
    /// Default: writes zero buffers through do_write. Range aligned like do_write.
    virtual Status do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap);
    /// Default: does nothing (discard is a hint).
    virtual Status do_discard(uint64_t offset, uint64_t len);
    virtual Status do_flush();
    virtual Status do_resize(uint64_t new_size);
    virtual Status do_close();
    /// Allocation state; offset < size(), max_len > 0 and offset + max_len <= size(). Default: from
    /// do_map_stored, merging following pieces of the same state.
    virtual Result<Extent> do_block_status(uint64_t offset, uint64_t max_len);
    /// The backend's one question: how [offset, offset+max_len) begins in this layer; offset < size(),
    /// max_len > 0 and offset + max_len <= size(). `data` must name its file and host offset when the
    /// backend leaves reads to the generic layer. Default: from do_block_status (raw-like backends).
    virtual Result<StoredExtent> do_map_stored(uint64_t offset, uint64_t max_len);
    /// Store one compressed chunk; called by write_compressed_chunk after its checks. Default: unsupported.
    virtual Status do_write_compressed_chunk(uint64_t offset, std::span<const uint8_t> compressed, uint64_t raw_length);
    /// The check; see check(). Default: unsupported.
    virtual Result<CheckResult> do_check(RepairMode repair);
    /// What a read of an unallocated range gets when no backing device is attached: ok() reads zeros; an
    /// error refuses (an image whose named backing file was not opened, read-write). Default: ok().
    virtual Status missing_backing_error() const;
    virtual ImageInfo do_info() const = 0;
    /// Validate a backing device's structure before it is attached (sizes, sector sizes); never skipped.
    virtual Status check_backing(BlockDevice& backing);
    /// Validate that the backing device is the image this one was made from (VMDK parentCID, VHD parent
    /// UUID, ...); skipped when the caller accepts a mismatch.
    virtual Status check_backing_identity(BlockDevice& backing);

    /// Read from the backing device; zeros where there is none or past its end.
    Status read_from_backing(uint64_t offset, std::span<uint8_t> buf);
    void set_size(uint64_t size) noexcept { size_.store(size, std::memory_order_relaxed); }
    bool closed() const noexcept { return closed_; }

private:
    // The device lock: shared for readers, exclusive for writers, writers preferred (a stream of reads cannot
    // starve a write). Nested calls from the thread that holds it pass through (lib/block_device.cpp).
    struct Lock;
    class SharedGuard;
    class ExclusiveGuard;
    std::unique_ptr<Lock> lock_;
    // The last compressed unit the generic read inflated (small reads walking one cluster/grain).
    struct UnitCache;
    std::unique_ptr<UnitCache> unit_cache_;
    std::atomic<uint64_t> size_;
    bool read_only_;
    bool closed_ = false;
    std::unique_ptr<BlockDevice> backing_;
    std::shared_ptr<Budget> budget_;
    Status rmw_write(uint64_t offset, std::span<const uint8_t> buf);
    Status write_locked(uint64_t offset, std::span<const uint8_t> buf);
    Error named(Error e) const;
    Status read_mapped(uint64_t offset, std::span<uint8_t> buf);
    Status read_unit(const StoredExtent& unit, uint64_t offset, std::span<uint8_t> out);
};

}  // namespace vdisk
