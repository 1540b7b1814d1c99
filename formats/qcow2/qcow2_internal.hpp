// SPDX-License-Identifier: Apache-2.0
// The qcow2 device shared by the format's translation units: header state, L1/L2 mapping with a bounded
// L2 cache, refcount maintenance and cluster allocation, compression.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "qcow2_layout.hpp"
#include "vdisk/format.hpp"

namespace vdisk::qcow2 {

/// The header after parsing and validation (native byte order).
struct Header {
    uint32_t version = 3;
    uint32_t cluster_bits = 16;
    uint64_t size = 0;
    uint32_t crypt_method = 0;
    uint32_t l1_size = 0;
    uint64_t l1_offset = 0;
    uint64_t rt_offset = 0;
    uint32_t rt_clusters = 0;
    uint32_t nb_snapshots = 0;
    uint64_t snapshots_offset = 0;
    uint64_t incompat = 0;
    uint64_t compat = 0;
    uint64_t autoclear = 0;
    uint32_t refcount_order = 4;
    uint32_t header_length = kHeaderV3Length;
    uint8_t compression = kCompressionZlib;
    std::optional<std::string> backing_name;
    std::string backing_format;
    std::optional<std::string> data_file_name;
    bool has_bitmaps_ext = false;
};

struct Snapshot {
    SnapshotInfo info;
    uint64_t l1_offset = 0;
    uint32_t l1_size = 0;
    uint64_t disk_size = 0;
    uint64_t entry_offset = 0;  ///< where the entry starts in the file (for messages)
};

/// A small cache of whole clusters keyed by host offset (L2 tables, refcount blocks), evicting the least
/// recently used with a second chance. Exclusive users (writers) call find/insert; concurrent readers call
/// peek under a shared lock: it only sets the entry's used flag, so lookups that hit never write shared state
/// beyond that flag (and not even that once it is set).
class ClusterCache {
public:
    explicit ClusterCache(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}
    /// Charge the clusters held to `budget` from now on; when it runs short the cache holds fewer.
    void attach(const std::shared_ptr<Budget>& budget) { charge_ = Charge::make(budget, 0, "cache").value(); }
    std::vector<uint8_t>* find(uint64_t key);
    const std::vector<uint8_t>* peek(uint64_t key) const;
    std::vector<uint8_t>& insert(uint64_t key, std::vector<uint8_t> data);
    /// Drop every cluster (exclusive users only: the structures they cached were rewritten elsewhere).
    void clear();

private:
    void erase(uint64_t key);
    struct Item {
        Item(uint64_t k, std::vector<uint8_t> d) : key(k), data(std::move(d)) {}  // clang 14: no paren aggregate init
        uint64_t key;
        std::vector<uint8_t> data;
        mutable std::atomic<bool> used{false};  // looked up since it last passed the eviction end
    };
    void evict_one();
    void account();
    size_t capacity_;
    uint64_t held_ = 0;
    Charge charge_;
    std::list<Item> items_;  // most recently inserted or found first
    std::unordered_map<uint64_t, std::list<Item>::iterator> index_;
};

/// One L2 entry (the 64-bit descriptor and, with extended L2 entries, the subcluster bitmap).
struct L2Entry {
    uint64_t word = 0;
    uint64_t bitmap = 0;
};

class Qcow2Device final : public BlockDevice {
public:
    Qcow2Device(std::unique_ptr<File> file, std::unique_ptr<File> data_file, Header h, uint64_t file_size,
                bool read_only, const Limits& limits);

    /// Load L1 (active or the named snapshot's), refcount table and snapshots; called once by open.
    Status load(const std::string& snapshot_name);
    /// Initialise an empty image written by create.
    Status init_new();

    std::vector<File*> files() const override;
    std::optional<BackingReference> backing_reference() const override;
    uint64_t write_granularity() const override { return cluster_size_; }
    uint64_t compress_granularity() const override { return cluster_size_; }
    Result<std::vector<uint8_t>> compress_chunk(std::span<const uint8_t> chunk) const override;
    Status do_write_compressed_chunk(uint64_t offset, std::span<const uint8_t> compressed,
                                     uint64_t raw_length) override;
    Status inflate_unit(const StoredExtent& unit, std::span<const uint8_t> stored,
                        std::span<uint8_t> out) const override;

    // Used by create (preallocation) and check.
    Status preallocate(bool full_zero, bool falloc);
    const Header& header() const { return h_; }
    uint64_t cluster_size() const { return cluster_size_; }
    uint64_t l2_entries() const { return l2_entries_; }
    File& main_file() const { return *file_; }
    uint64_t file_size() const { return file_size_; }
    const std::vector<uint64_t>& l1() const { return l1_; }
    const std::vector<Snapshot>& snapshots() const { return snapshots_; }
    const Limits& limits() const { return limits_; }
    Result<std::vector<uint64_t>> load_refcount_table_for_check();
    Result<L2Entry> l2_entry_at(const uint8_t* table, uint64_t index) const;
    Result<std::vector<uint8_t>*> l2_table(uint64_t l2_offset);
    uint64_t refcount_max() const;
    Result<uint64_t> get_refcount(uint64_t cluster);
    Status set_refcount(uint64_t cluster, uint64_t value);
    /// Stored bytes of a compressed descriptor: {host offset, length}; and the host clusters they cover: [first, last].
    std::pair<uint64_t, uint64_t> compressed_bytes(uint64_t word) const;
    std::pair<uint64_t, uint64_t> compressed_span(uint64_t word) const;
    Status write_header_field(uint64_t off, std::span<const uint8_t> bytes);

    Status snapshot_create(const SnapshotInfo& info) override;
    Status snapshot_remove(const std::string& id_or_name) override;
    Status snapshot_apply(const std::string& id_or_name) override;
    Status set_backing_reference(const std::string& name, const std::string& format, BlockDevice* new_backing) override;
    Status amend(const std::vector<std::pair<std::string, std::string>>& options) override;
    Status rewrite_header(uint32_t version, uint64_t compat);
    /// After a successful repair: clear the dirty bit (lazy refcounts are exact again) and allow writes.
    Status clear_dirty();
    /// Writable layer whose backing file is named but not (yet) attached: reads of unallocated
    /// clusters fail instead of returning zeros, so read-modify-write cannot drop the backing's data.
    void require_backing() { backing_required_ = h_.backing_name.has_value(); }

protected:
    Status do_write(uint64_t offset, std::span<const uint8_t> buf) override;
    Status do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) override;
    Status do_discard(uint64_t offset, uint64_t len) override;
    Status do_flush() override;
    Status do_resize(uint64_t new_size) override;
    Status do_close() override;
    Result<StoredExtent> do_map_stored(uint64_t offset, uint64_t max_len) override;
    Status missing_backing_error() const override;
    Result<CheckResult> do_check(RepairMode repair) override;
    ImageInfo do_info() const override;

private:
    std::unique_ptr<File> file_;
    std::unique_ptr<File> data_file_;
    Header h_;
    uint64_t file_size_;
    Limits limits_;
    uint64_t cluster_size_;
    uint32_t entry_bytes_;  // 8, or 16 with extended L2 entries
    uint64_t l2_entries_;
    uint64_t sub_size_;  // subcluster size (== cluster size without extended L2)
    std::vector<uint64_t> l1_;
    Charge l1_charge_, rt_charge_, snap_charge_;
    uint64_t l1_offset_ = 0;
    bool snapshot_view_ = false;
    uint64_t snapshots_table_bytes_ = 0;  // bytes of the snapshot table as loaded (freed when it is rewritten)
    bool backing_required_ = false;       // writable with a named backing file: reads need it attached
    std::vector<Snapshot> snapshots_;
    std::vector<uint64_t> rt_;  // refcount table (loaded when writable)
    bool rt_loaded_ = false;
    uint64_t free_hint_ = 0;
    uint64_t compressed_cursor_ = 0;  // next free byte in the cluster used for packing compressed data
    // Concurrent readers (see BlockDevice) share the L2 cache: a lookup that hits holds meta_mu_ shared while it
    // copies one entry out; a miss reads the table with no lock held and takes meta_mu_ alone only to insert it.
    // Data I/O happens outside it (the generic read path). Writers hold the device exclusively, so the write
    // paths touch the caches without these locks. Own cache line: readers' lock traffic must not evict the
    // fields every map() reads.
    alignas(64) std::shared_mutex meta_mu_;
    ClusterCache l2_cache_;
    ClusterCache rb_cache_;
    std::optional<Error> write_refusal_;

    File& data() const { return data_file_ ? *data_file_ : *file_; }
    Status refuse_if_needed();
    Status load_snapshots();
    Status load_l1(const std::string& snapshot_name);
    Result<StoredExtent> map(uint64_t offset, uint64_t max_len);
    /// The L2 table L1 entry `l1i` names (0: none), checked to be a cluster inside the file.
    Result<uint64_t> l2_offset(uint64_t l1i) const;
    Result<L2Entry> lookup(uint64_t vcluster, uint64_t* l2_offset_out = nullptr);

    // Writing.
    Status write_l1_entry(uint64_t l1_index);
    Result<uint64_t> new_l2(uint64_t l1_index, std::vector<uint8_t> table);
    Result<uint64_t> ensure_l2(uint64_t l1_index);
    Result<uint64_t> cow_l2(uint64_t l1_index, uint64_t old_offset);
    Result<std::vector<L2Entry>> read_l2(uint64_t l2_offset, uint64_t first, uint64_t count);
    Status replace_l2(uint64_t l2_offset, uint64_t first, const std::vector<L2Entry>& now,
                      const std::vector<L2Entry>& old, const std::vector<bool>& drop);
    Result<std::vector<bool>> moved_clusters(uint64_t l2_offset, uint64_t first, const std::vector<L2Entry>& old);
    Status put_clusters(uint64_t host, std::span<const uint8_t> data, uint64_t i, uint64_t n);
    Result<uint64_t> write_group(std::span<const uint8_t> data, uint64_t i, const std::vector<L2Entry>& old,
                                 const std::vector<bool>& moved, std::vector<L2Entry>& now);
    Status write_run(uint64_t vc, uint64_t count, std::span<const uint8_t> data);
    Status release(const L2Entry& e);
    Result<bool> zeroed_entry(const L2Entry& old, bool unmap, bool may_unmap, L2Entry& e);
    Status zero_or_discard(uint64_t offset, uint64_t len, bool discard, bool may_unmap);
    Status grow_l1(uint64_t entries);

    // Refcounts and allocation (qcow2_refcount.cpp).
    Status ensure_refcount_table();
    uint64_t rb_entries() const { return (cluster_size_ * 8) >> h_.refcount_order; }
    Result<std::vector<uint8_t>*> refblock(uint64_t offset);
    Result<uint64_t> alloc_clusters(uint64_t n);
    Result<std::pair<uint64_t, uint64_t>> alloc_some(uint64_t n, bool exact);
    Result<std::pair<uint64_t, uint64_t>> find_free_run(uint64_t n, bool exact);
    Result<bool> cover_run(uint64_t start, uint64_t len);
    Status create_refblock(uint64_t index);
    Status grow_refcount_table(uint64_t needed_index);
    Status free_clusters(uint64_t first, uint64_t n);
    /// amend refcount_bits: new refcount structures of width 2^order, the header switched last.
    Status change_refcount_order(uint32_t order);
    Result<std::vector<uint64_t>> refcounts_for(uint32_t order, uint64_t clusters);
    // Internal snapshots (qcow2_snapshot.cpp).
    Status add_tree_refs(const std::vector<uint64_t>& l1, bool increment);
    Status fix_copied_flags();
    Status write_snapshot_table(std::vector<Snapshot> table);
    Status write_l1();
    Result<size_t> find_snapshot(const std::string& id_or_name) const;
    Status snapshot_preconditions() const;
    Status check_amend(uint32_t version, uint64_t compat, uint32_t order);
    Status refuse_zero_clusters();
};

Result<std::vector<uint8_t>> compress_cluster(std::span<const uint8_t> in, uint8_t type);
/// Decompress into exactly `out` (one cluster); false on a malformed stream.
bool decompress_cluster(std::span<const uint8_t> in, std::span<uint8_t> out, uint8_t type);
/// A table of `entries` entries at `off` is cluster aligned, inside the file, not at 0 and within `cap` bytes.
Status validate_table(const char* what, uint64_t off, uint64_t entries, uint64_t entry_size, uint64_t cluster_size,
                      uint64_t file_size, uint64_t cap);
/// Refcount blocks and table clusters of width 2^refcount_order that count `clusters` clusters and themselves.
std::pair<uint64_t, uint64_t> refcount_metadata(uint64_t clusters, uint64_t cs, uint32_t refcount_order);
/// Set entry i of a refcount block of width 2^order to v; returns the bytes changed: {offset, length}.
std::pair<size_t, size_t> set_refcount_entry(uint8_t* blk, uint64_t i, uint32_t order, uint64_t v);
/// Append a header extension (type, length, data padded to 8 bytes) to `out`.
void put_ext(std::vector<uint8_t>& out, uint32_t type, std::string_view data);

}  // namespace vdisk::qcow2
