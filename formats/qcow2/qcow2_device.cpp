// SPDX-License-Identifier: Apache-2.0
// qcow2 device: snapshot table and L1 loading, cluster mapping, reads, block status, writes, resize, info.
#include <algorithm>
#include <cstring>

#include "qcow2_internal.hpp"
#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"

namespace vdisk::qcow2 {

// ---- ClusterCache ----------------------------------------------------------------------------------

std::vector<uint8_t>* ClusterCache::find(uint64_t key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    items_.splice(items_.begin(), items_, it->second);
    it->second->used.store(true, std::memory_order_relaxed);  // like a new one: kept while older ones can go
    return &it->second->data;
}

const std::vector<uint8_t>* ClusterCache::peek(uint64_t key) const {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    if (!it->second->used.load(std::memory_order_relaxed)) it->second->used.store(true, std::memory_order_relaxed);
    return &it->second->data;
}

std::vector<uint8_t>& ClusterCache::insert(uint64_t key, std::vector<uint8_t> data) {
    erase(key);
    while (items_.size() >= capacity_) evict_one();
    held_ += data.size();
    Item& item = items_.emplace_front(key, std::move(data));
    index_[key] = items_.begin();
    // Marked used so the shrinking below passes over it until every older cluster has gone.
    item.used.store(true, std::memory_order_relaxed);
    account();
    return item.data;
}

// The oldest cluster goes, unless a reader used it since it last got here: then it gets a second round.
void ClusterCache::evict_one() {
    while (items_.size() > 1 && items_.back().used.exchange(false, std::memory_order_relaxed))
        items_.splice(items_.begin(), items_, std::prev(items_.end()));
    index_.erase(items_.back().key);
    held_ -= items_.back().data.size();
    items_.pop_back();
}

// Keep the charge equal to what is held; a budget that cannot take one more cluster makes the cache
// smaller instead (down to the one cluster in use).
void ClusterCache::account() {
    while (!charge_.resize(held_, "metadata cache") && items_.size() > 1) evict_one();
}

void ClusterCache::clear() {
    index_.clear();
    items_.clear();
    held_ = 0;
    account();
}

void ClusterCache::erase(uint64_t key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    held_ -= it->second->data.size();
    items_.erase(it->second);
    index_.erase(it);
    account();
}

// ---- open ------------------------------------------------------------------------------------------

namespace {
size_t cache_slots(uint64_t budget, uint64_t cluster_size, uint64_t share) {
    return static_cast<size_t>(std::max<uint64_t>(1, budget / share / cluster_size));
}
}  // namespace

Qcow2Device::Qcow2Device(std::unique_ptr<File> file, std::unique_ptr<File> data_file, Header h, uint64_t file_size,
                         bool read_only, const Limits& limits)
    : BlockDevice(h.size, read_only),
      file_(std::move(file)),
      data_file_(std::move(data_file)),
      h_(std::move(h)),
      file_size_(file_size),
      limits_(limits),
      cluster_size_(1ull << h_.cluster_bits),
      entry_bytes_((h_.incompat & kIncompatExtendedL2) ? 16 : 8),
      l2_entries_(cluster_size_ / entry_bytes_),
      sub_size_((h_.incompat & kIncompatExtendedL2) ? cluster_size_ / kSubclusters : cluster_size_),
      l2_cache_(cache_slots(limits.max_cache_bytes, cluster_size_, 2)),
      rb_cache_(cache_slots(limits.max_cache_bytes, cluster_size_, 4)) {}

std::vector<File*> Qcow2Device::files() const {
    std::vector<File*> v{file_.get()};
    if (data_file_) v.push_back(data_file_.get());
    return v;
}

std::optional<BackingReference> Qcow2Device::backing_reference() const {
    if (!h_.backing_name || h_.backing_name->empty()) return std::nullopt;
    BackingReference r;
    r.names.push_back(*h_.backing_name);
    r.format = h_.backing_format;
    return r;
}

namespace {
// Snapshot table entries are variable-sized: they are read through a bounded sliding window.
struct TableWindow {
    File& file;
    std::vector<uint8_t> win;
    uint64_t off = 0;
    Status fetch(uint64_t at, size_t len, uint8_t* out) {
        if (at < off || at + len > off + win.size()) {
            off = at;
            win.assign(static_cast<size_t>(std::max<uint64_t>(len, 256 << 10)), 0);
            // Like QEMU, bytes past the end of the file read as zeros; the metadata cap bounds the walk.
            VDISK_TRY(read_zero_fill(file, at, win));
        }
        std::memcpy(out, &win[static_cast<size_t>(at - off)], len);
        return ok();
    }
};

// Entry `i` at `pos`, checked against the caps (`meta`: the table so far) and charged; `pos` moves on to the
// next entry. Its disk size is the image's unless the entry says otherwise.
Result<Snapshot> read_snapshot(TableWindow& win, uint32_t i, uint64_t& pos, uint64_t& meta, Charge& charge,
                               const Limits& lim, uint64_t disk_size) {
    SnapshotHeader sh{};
    VDISK_TRY(win.fetch(pos, sizeof sh, reinterpret_cast<uint8_t*>(&sh)));
    const uint64_t table_cap = std::min(lim.max_metadata_bytes, lim.max_snapshot_table_bytes);
    const uint64_t l1_cap = std::min(lim.max_l1_bytes, lim.max_metadata_bytes);
    const uint32_t extra = sh.extra_data_size.value();
    if (extra > 1024)
        return make_error(ErrorCode::corrupt, "snapshot extra data size " + std::to_string(extra) + " exceeds 1024")
            .at(pos);
    const uint64_t entry = sizeof sh + extra + sh.id_str_size.value() + sh.name_size.value();
    meta += entry;
    if (meta > table_cap)
        return make_error(ErrorCode::limit_exceeded,
                          "snapshot table exceeds the limit of " + std::to_string(table_cap) + " bytes");
    if (uint64_t{sh.l1_size.value()} * 8 > l1_cap)
        return make_error(ErrorCode::limit_exceeded,
                          "snapshot " + std::to_string(i) + " L1 table of " + std::to_string(sh.l1_size.value()) +
                              " entries exceeds the L1 limit of " + std::to_string(l1_cap) + " bytes");
    VDISK_TRY(charge.resize(charge.bytes() + entry, "snapshot table"));
    Snapshot s;
    s.entry_offset = pos;
    s.l1_offset = sh.l1_table_offset.value();
    s.l1_size = sh.l1_size.value();
    s.info.date_sec = sh.date_sec.value();
    s.info.date_nsec = sh.date_nsec.value();
    s.info.vm_clock_nsec = sh.vm_clock_nsec.value();
    s.info.vm_state_size = sh.vm_state_size.value();
    s.disk_size = disk_size;
    std::vector<uint8_t> rest(static_cast<size_t>(entry - sizeof sh));
    if (!rest.empty()) VDISK_TRY(win.fetch(pos + sizeof sh, rest.size(), rest.data()));
    SnapshotExtra ex{};
    if (extra) std::memcpy(&ex, rest.data(), std::min<size_t>(extra, sizeof ex));
    if (extra >= 8) s.info.vm_state_size = ex.vm_state_size_large.value();
    if (extra >= 16) s.disk_size = ex.disk_size.value();
    if (extra >= 24) s.info.icount = ex.icount.value();
    s.info.id.assign(reinterpret_cast<const char*>(rest.data() + extra), sh.id_str_size.value());
    s.info.name.assign(reinterpret_cast<const char*>(rest.data() + extra + sh.id_str_size.value()),
                       sh.name_size.value());
    pos += (entry + 7) & ~uint64_t(7);
    return s;
}
}  // namespace

Status Qcow2Device::load_snapshots() {
    TableWindow win{*file_, {}, 0};
    uint64_t pos = h_.snapshots_offset, meta = 0;
    snap_charge_ = Charge::make(budget(), 0, "snapshot table").value();
    VDISK_TRY(snap_charge_.resize(uint64_t(h_.nb_snapshots) * sizeof(Snapshot), "snapshot table"));
    snapshots_.reserve(h_.nb_snapshots);
    for (uint32_t i = 0; i < h_.nb_snapshots; ++i) {
        VDISK_TRY(budget()->work(1, "snapshot table"));
        VDISK_ASSIGN(Snapshot s, read_snapshot(win, i, pos, meta, snap_charge_, limits_, h_.size));
        snapshots_.push_back(std::move(s));
    }
    snapshots_table_bytes_ = h_.nb_snapshots ? pos - h_.snapshots_offset : 0;
    return ok();
}

// The active L1 table, or the named snapshot's (then the device shows that snapshot, read-only).
Status Qcow2Device::load_l1(const std::string& snapshot_name) {
    uint64_t l1_off = h_.l1_offset;
    uint32_t l1_size = h_.l1_size;
    if (!snapshot_name.empty()) {
        auto index = find_snapshot(snapshot_name);
        if (!index)
            return make_error(ErrorCode::not_found, "no internal snapshot with id or name '" + snapshot_name + "'");
        const Snapshot* found = &snapshots_[*index];
        l1_off = found->l1_offset;
        l1_size = found->l1_size;
        VDISK_TRY(validate_table("snapshot L1 table", l1_off, l1_size, 8, cluster_size_, file_size_,
                                 limits_.max_metadata_bytes));
        uint64_t covered = util::mul<uint64_t>(uint64_t(l1_size), l2_entries_ * cluster_size_).value_or(UINT64_MAX);
        if (covered < found->disk_size)
            return make_error(ErrorCode::corrupt,
                              "snapshot '" + found->info.name + "' L1 table is too small for its disk size")
                .at(found->entry_offset);
        set_size(found->disk_size);
        snapshot_view_ = true;
    }
    l1_offset_ = l1_off;
    // Decoded in place: the table is held once, not raw plus decoded.
    l1_charge_ = Charge::make(budget(), 0, "L1 table").value();
    VDISK_TRY(l1_charge_.resize(uint64_t(l1_size) * 8, "L1 table"));
    VDISK_TRY(budget()->work(l1_size, "L1 table"));
    l1_.resize(l1_size);
    auto* raw = reinterpret_cast<uint8_t*>(l1_.data());
    if (l1_size) VDISK_TRY(read_exact(*file_, l1_off, std::span<uint8_t>(raw, uint64_t(l1_size) * 8), "L1 table"));
    for (uint32_t i = 0; i < l1_size; ++i) l1_[i] = util::load_be<uint64_t>(raw + uint64_t(i) * 8);
    return ok();
}

Status Qcow2Device::load(const std::string& snapshot_name) {
    VDISK_TRY(load_snapshots());
    VDISK_TRY(load_l1(snapshot_name));
    l2_cache_.attach(budget());
    rb_cache_.attach(budget());
    if (read_only()) return ok();
    if (h_.incompat & kIncompatCorrupt)
        write_refusal_ = make_error(ErrorCode::corrupt, "image is marked corrupt; refusing to write (run check)");
    else if (h_.incompat & kIncompatDirty)
        write_refusal_ = make_error(ErrorCode::unsupported, "image is dirty (lazy refcounts); repair it first");
    else if (data_file_)
        write_refusal_ = make_error(ErrorCode::unsupported,
                                    "writing to images with an external data file is not supported");
    else if (h_.has_bitmaps_ext || (h_.autoclear & kAutoclearBitmaps))
        write_refusal_ = make_error(ErrorCode::unsupported,
                                    "writing to images with persistent bitmaps is not supported");
    return ok();
}

Status Qcow2Device::init_new() {
    l1_offset_ = h_.l1_offset;
    // A new image is charged like an opened one: its L1 now, its caches as they fill.
    VDISK_ASSIGN(l1_charge_, Charge::make(budget(), uint64_t(h_.l1_size) * 8, "L1 table"));
    l1_.assign(h_.l1_size, 0);
    l2_cache_.attach(budget());
    rb_cache_.attach(budget());
    return ok();
}

Status Qcow2Device::refuse_if_needed() {
    if (write_refusal_) return *write_refusal_;
    if (snapshot_view_) return make_error(ErrorCode::read_only, "an internal snapshot is read-only");
    return ok();
}

// ---- mapping ---------------------------------------------------------------------------------------

Result<std::vector<uint8_t>*> Qcow2Device::l2_table(uint64_t l2_offset) {
    if (auto* t = l2_cache_.find(l2_offset)) return t;
    std::vector<uint8_t> t(static_cast<size_t>(cluster_size_));
    VDISK_TRY(read_exact(*file_, l2_offset, t, "L2 table"));
    return &l2_cache_.insert(l2_offset, std::move(t));
}

Result<L2Entry> Qcow2Device::l2_entry_at(const uint8_t* table, uint64_t index) const {
    L2Entry e;
    e.word = util::load_be<uint64_t>(table + index * entry_bytes_);
    if (entry_bytes_ == 16) e.bitmap = util::load_be<uint64_t>(table + index * entry_bytes_ + 8);
    return e;
}

Result<uint64_t> Qcow2Device::l2_offset(uint64_t l1i) const {
    const uint64_t off = l1i < l1_.size() ? l1_[l1i] & kOffsetMask : 0;
    if (off && (!util::is_aligned(off, cluster_size_) || !util::range_within(off, cluster_size_, file_size_)))
        return make_error(ErrorCode::corrupt, "L1 entry " + std::to_string(l1i) + " points to invalid L2 table " +
                                                  hex(off) + " (file size " + hex(file_size_) + ")")
            .at(l1_offset_ + l1i * 8);
    return off;
}

Result<L2Entry> Qcow2Device::lookup(uint64_t vc, uint64_t* l2_offset_out) {
    VDISK_ASSIGN(uint64_t l2off, l2_offset(vc / l2_entries_));
    if (l2_offset_out) *l2_offset_out = l2off;
    if (l2off == 0) return L2Entry{};
    const uint64_t index = vc % l2_entries_;
    {
        std::shared_lock lock(meta_mu_);
        if (const auto* t = l2_cache_.peek(l2off)) return l2_entry_at(t->data(), index);
    }
    // A miss: read the table with no lock held, so other readers (and their hits) go on meanwhile; insert it
    // unless another reader got there first.
    std::vector<uint8_t> t(static_cast<size_t>(cluster_size_));
    VDISK_TRY(read_exact(*file_, l2off, t, "L2 table"));
    auto e = l2_entry_at(t.data(), index);
    std::unique_lock lock(meta_mu_);
    if (!l2_cache_.peek(l2off)) l2_cache_.insert(l2off, std::move(t));
    return e;
}

std::pair<uint64_t, uint64_t> Qcow2Device::compressed_bytes(uint64_t word) const {
    uint32_t shift = 62 - (h_.cluster_bits - 8);
    uint64_t off = word & ((1ull << shift) - 1);
    uint64_t sectors = ((word >> shift) & ((1ull << (h_.cluster_bits - 8)) - 1)) + 1;
    return {off, util::align_down(off, 512) + sectors * 512 - off};
}

std::pair<uint64_t, uint64_t> Qcow2Device::compressed_span(uint64_t word) const {
    auto [off, len] = compressed_bytes(word);
    return {off / cluster_size_, (off + len - 1) / cluster_size_};
}

Status Qcow2Device::missing_backing_error() const {
    if (!backing_required_) return ok();
    return make_error(ErrorCode::unsupported, "backing file '" + h_.backing_name.value_or("") +
                                                  "' is not attached; partial-cluster writes would lose its data");
}

// How this layer stores the piece at `offset` that ends at the next cluster (subcluster run) boundary, or for
// a missing L2 table at the end of the range the table would map.
Result<StoredExtent> Qcow2Device::map(uint64_t offset, uint64_t max_len) {
    const uint64_t vc = offset >> h_.cluster_bits, in = offset & (cluster_size_ - 1), l1i = vc / l2_entries_;
    StoredExtent s;
    s.offset = offset;
    s.kind = StoredKind::unallocated;
    s.length = std::min(max_len, cluster_size_ - in);
    if (l1i >= l1_.size() || (l1_[l1i] & kOffsetMask) == 0) {
        s.length = std::min(max_len, (l1i + 1) * l2_entries_ * cluster_size_ - offset);
        return s;
    }
    uint64_t l2off = 0;
    VDISK_ASSIGN(L2Entry e, lookup(vc, &l2off));
    const uint64_t where = l2off + (vc % l2_entries_) * entry_bytes_;
    if (e.word & kFlagCompressed) {
        if (data_file_)
            return make_error(ErrorCode::corrupt, "compressed cluster in an image with an external data file")
                .at(where);
        // The stored bytes must start inside the file; the descriptor's sector count is at most one cluster
        // plus a sector wide, so host_length needs no further cap.
        auto [coff, clen] = compressed_bytes(e.word);
        if (coff >= file_size_)
            return make_error(ErrorCode::corrupt, "compressed cluster descriptor " + hex(e.word) +
                                                      " points past the end of the file (" + hex(file_size_) + ")")
                .at(where);
        s.kind = StoredKind::compressed;
        s.offset = offset - in;
        s.length = cluster_size_;
        s.file = &data();
        s.host_offset = coff;
        s.host_length = clen;
        return s;
    }
    const uint64_t host = e.word & kOffsetMask;
    const bool has_host = host != 0 || (data_file_ && (e.word & kFlagCopied));
    if (has_host) {
        if (!util::is_aligned(host, cluster_size_))
            return make_error(ErrorCode::corrupt,
                              "L2 entry " + hex(e.word) + " has an unaligned cluster offset " + hex(host))
                .at(where);
        // QEMU leaves the file ending inside the last data cluster when only its head was written:
        // the cluster must start inside the file; its tail reads as zeros.
        if (!data_file_ && host >= file_size_)
            return make_error(ErrorCode::corrupt,
                              "L2 entry " + hex(e.word) + " points past the end of the file (" + hex(file_size_) + ")")
                .at(where);
    }
    if (entry_bytes_ == 8) {
        if (h_.version >= 3 && (e.word & kFlagZero)) s.kind = StoredKind::zero;
        else if (has_host) s.kind = StoredKind::data;
    } else {
        // Extended L2: bits 0-31 of the bitmap say "allocated", bits 32-63 "reads as zero", per subcluster.
        auto state = [&](uint64_t sc) -> Result<StoredKind> {
            bool alloc = (e.bitmap >> sc) & 1, zero = (e.bitmap >> (32 + sc)) & 1;
            if (alloc && zero)
                return make_error(ErrorCode::corrupt, "extended L2 entry marks subcluster " + std::to_string(sc) +
                                                          " both allocated and zero")
                    .at(where);
            if (alloc && !has_host)
                return make_error(ErrorCode::corrupt, "extended L2 entry marks subcluster " + std::to_string(sc) +
                                                          " allocated in an unallocated cluster")
                    .at(where);
            return alloc ? StoredKind::data : zero ? StoredKind::zero : StoredKind::unallocated;
        };
        const uint64_t sc = in / sub_size_;
        VDISK_ASSIGN(s.kind, state(sc));
        uint64_t len = (sc + 1) * sub_size_ - in;
        for (uint64_t next = sc + 1; next < kSubclusters && len < s.length; ++next) {
            VDISK_ASSIGN(StoredKind k, state(next));
            if (k != s.kind) break;
            len += sub_size_;
        }
        s.length = std::min(s.length, len);
    }
    if (s.kind == StoredKind::data) {
        s.file = &data();
        s.host_offset = host + in;
    }
    return s;
}

// Coalesce following pieces in the same state (contiguous on the host for data), within a bounded walk, so a
// caller walking an uncompressed image makes few calls.
Result<StoredExtent> Qcow2Device::do_map_stored(uint64_t offset, uint64_t max_len) {
    VDISK_ASSIGN(StoredExtent s, map(offset, max_len));
    for (unsigned steps = 0; s.kind != StoredKind::compressed && s.length < max_len && steps < 65536; ++steps) {
        VDISK_ASSIGN(StoredExtent n, map(offset + s.length, max_len - s.length));
        if (n.kind != s.kind || (s.kind == StoredKind::data && n.host_offset != s.host_offset + s.length)) break;
        s.length += n.length;
    }
    return s;
}

Status Qcow2Device::inflate_unit(const StoredExtent& unit, std::span<const uint8_t> stored,
                                 std::span<uint8_t> out) const {
    if (unit.kind != StoredKind::compressed || out.size() != cluster_size_)
        return make_error(ErrorCode::invalid_argument, "qcow2: inflate_unit needs one compressed cluster");
    if (!decompress_cluster(stored, out, h_.compression))
        return make_error(ErrorCode::corrupt, "compressed cluster at " + hex(unit.host_offset) + " (" +
                                                  std::to_string(stored.size()) +
                                                  " bytes) does not decompress to one cluster")
            .at(unit.host_offset);
    return ok();
}

ImageInfo Qcow2Device::do_info() const {
    ImageInfo i;
    i.format = "qcow2";
    i.virtual_size = size();
    i.cluster_size = cluster_size_;
    i.dirty = (h_.incompat & kIncompatDirty) != 0;
    i.backing_filename = h_.backing_name;
    if (!h_.backing_format.empty()) i.backing_format = h_.backing_format;
    for (auto& s : snapshots_) i.snapshots.push_back(s.info);
    Json d = Json::object();
    d.set("compat", h_.version >= 3 ? "1.1" : "0.10");
    d.set("compression-type", h_.compression == kCompressionZstd ? "zstd" : "zlib");
    if (h_.version >= 3) {
        d.set("lazy-refcounts", (h_.compat & kCompatLazyRefcounts) != 0);
        d.set("refcount-bits", uint64_t(1) << h_.refcount_order);
        if (h_.data_file_name) {
            d.set("data-file", *h_.data_file_name);
            d.set("data-file-raw", (h_.autoclear & kAutoclearDataFileRaw) != 0);
        }
        d.set("corrupt", (h_.incompat & kIncompatCorrupt) != 0);
        d.set("extended-l2", (h_.incompat & kIncompatExtendedL2) != 0);
    } else {
        d.set("refcount-bits", uint64_t(1) << h_.refcount_order);
    }
    i.format_specific = Json::object();
    i.format_specific.set("type", "qcow2");
    i.format_specific.set("data", std::move(d));
    return i;
}

}  // namespace vdisk::qcow2
