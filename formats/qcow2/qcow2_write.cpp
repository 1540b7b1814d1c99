// SPDX-License-Identifier: Apache-2.0
// qcow2 writes: cluster allocation into L2 tables, zero clusters, discard, compressed clusters, resize.
//
// Ordering, so that a crash can leak clusters but never expose garbage: a new cluster's refcount is
// written first, then its data, then the L2 entry, then (for a new L2 table) the L1 entry. Freeing runs
// the other way round: the L2 entry is cleared before the refcount drops.
#include <algorithm>
#include <cstring>

#include "qcow2_internal.hpp"
#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "util/units.hpp"

namespace vdisk::qcow2 {

namespace {
constexpr uint64_t kAllAllocated = 0xffffffffull;   // extended L2: every subcluster allocated
constexpr uint64_t kAllZero = 0xffffffffull << 32;  // extended L2: every subcluster reads as zero
}  // namespace

Status Qcow2Device::write_l1_entry(uint64_t l1i) {
    uint8_t e[8];
    util::store_be<uint64_t>(e, l1_[l1i]);
    return file_->write_at(l1_offset_ + l1i * 8, e);
}

// `table` into a new cluster, which L1 entry l1i then names (with COPIED: no other L1 table does).
Result<uint64_t> Qcow2Device::new_l2(uint64_t l1i, std::vector<uint8_t> table) {
    VDISK_ASSIGN(uint64_t off, alloc_clusters(1));
    VDISK_TRY(file_->write_at(off, table));
    file_size_ = std::max(file_size_, off + cluster_size_);
    l2_cache_.insert(off, std::move(table));
    l1_[l1i] = off | kFlagCopied;
    VDISK_TRY(write_l1_entry(l1i));
    return off;
}

Result<uint64_t> Qcow2Device::ensure_l2(uint64_t l1i) {
    if (l1i >= l1_.size())
        return make_error(ErrorCode::out_of_range, "L1 index " + std::to_string(l1i) + " beyond the L1 table");
    VDISK_ASSIGN(uint64_t off, l2_offset(l1i));
    if (!off) return new_l2(l1i, std::vector<uint8_t>(static_cast<size_t>(cluster_size_), 0));
    if (l1_[l1i] & kFlagCopied) return off;
    VDISK_ASSIGN(uint64_t rc, get_refcount(off / cluster_size_));
    if (rc != 1) return cow_l2(l1i, off);
    l1_[l1i] |= kFlagCopied;
    VDISK_TRY(write_l1_entry(l1i));
    return off;
}

// An L2 table shared with a snapshot: copy it, point the L1 entry at the copy and drop one reference to
// the original. Data clusters keep their refcounts: qcow2 counts a data cluster once per L1 table that
// reaches it, and the snapshot's and the active L1 still both do. Entries of the copy lose COPIED.
Result<uint64_t> Qcow2Device::cow_l2(uint64_t l1i, uint64_t old_off) {
    VDISK_ASSIGN(auto* t, l2_table(old_off));
    std::vector<uint8_t> copy = *t;
    for (uint64_t i = 0; i < l2_entries_; ++i) {
        uint64_t w = util::load_be<uint64_t>(&copy[i * entry_bytes_]);
        util::store_be<uint64_t>(&copy[i * entry_bytes_], w & ~kFlagCopied);
    }
    VDISK_ASSIGN(uint64_t off, new_l2(l1i, std::move(copy)));
    VDISK_TRY(free_clusters(old_off / cluster_size_, 1));
    return off;
}

Result<std::vector<L2Entry>> Qcow2Device::read_l2(uint64_t l2off, uint64_t first, uint64_t count) {
    VDISK_ASSIGN(auto* t, l2_table(l2off));
    std::vector<L2Entry> entries(static_cast<size_t>(count));
    for (uint64_t i = 0; i < count; ++i) {
        VDISK_ASSIGN(entries[i], l2_entry_at(t->data(), first + i));
    }
    return entries;
}

// Drop the reference an L2 entry held (after the entry itself no longer points there).
Status Qcow2Device::release(const L2Entry& e) {
    if (e.word & kFlagCompressed) {
        auto [first, last] = compressed_span(e.word & ~(kFlagCompressed | kFlagCopied));
        return free_clusters(first, last - first + 1);
    }
    uint64_t host = e.word & kOffsetMask;
    if (host) return free_clusters(host / cluster_size_, 1);
    return ok();
}

// Entries from `first` on become `now` (in the cache and on disk), then the `old` entries marked in `drop`
// lose their clusters.
Status Qcow2Device::replace_l2(uint64_t l2off, uint64_t first, const std::vector<L2Entry>& now,
                               const std::vector<L2Entry>& old, const std::vector<bool>& drop) {
    VDISK_ASSIGN(auto* t, l2_table(l2off));
    for (size_t x = 0; x < now.size(); ++x) {
        util::store_be<uint64_t>(&(*t)[(first + x) * entry_bytes_], now[x].word);
        if (entry_bytes_ == 16) util::store_be<uint64_t>(&(*t)[(first + x) * entry_bytes_ + 8], now[x].bitmap);
    }
    const size_t a = static_cast<size_t>(first * entry_bytes_), n = now.size() * entry_bytes_;
    VDISK_TRY(file_->write_at(l2off + a, std::span<const uint8_t>(t->data() + a, n)));
    for (size_t x = 0; x < old.size(); ++x)
        if (drop[x]) VDISK_TRY(release(old[x]));
    return ok();
}

// Which clusters of a run move to new host clusters: all but those allocated, not compressed and not shared.
Result<std::vector<bool>> Qcow2Device::moved_clusters(uint64_t l2off, uint64_t first, const std::vector<L2Entry>& old) {
    std::vector<bool> moved(old.size());
    for (size_t i = 0; i < old.size(); ++i) {
        const uint64_t host = old[i].word & kOffsetMask;
        moved[i] = (old[i].word & kFlagCompressed) || host == 0;
        if (!moved[i] && !(old[i].word & kFlagCopied)) {
            // Shared with a snapshot: the whole cluster is rewritten, so a fresh cluster replaces it.
            VDISK_ASSIGN(uint64_t rc, get_refcount(host / cluster_size_));
            moved[i] = rc != 1;
        }
        if (!moved[i] && host >= file_size_)
            return make_error(ErrorCode::corrupt, "L2 entry " + hex(old[i].word) + " points past the end of the file")
                .at(l2off + (first + i) * entry_bytes_);
    }
    return moved;
}

// Clusters [i, i + n) of a run to `host`: `data` holds the run's bytes (possibly short at the device's end);
// an empty span preallocates.
Status Qcow2Device::put_clusters(uint64_t host, std::span<const uint8_t> data, uint64_t i, uint64_t n) {
    const uint64_t end = host + n * cluster_size_;
    if (data.empty()) {
        file_size_ = std::max(file_size_, end);
        return file_->resize(file_size_);
    }
    const uint64_t a = std::min<uint64_t>(i * cluster_size_, data.size());
    auto bytes = data.subspan(static_cast<size_t>(a),
                              static_cast<size_t>(std::min<uint64_t>(n * cluster_size_, data.size() - a)));
    VDISK_TRY(file_->write_at(host, bytes));
    if (bytes.size() < n * cluster_size_) {
        // The device's last cluster is partial: the host cluster still ends inside the file.
        std::vector<uint8_t> pad(static_cast<size_t>(n * cluster_size_ - bytes.size()), 0);
        VDISK_TRY(file_->write_at(host + bytes.size(), pad));
    }
    file_size_ = std::max(file_size_, end);
    return ok();
}

// The group of clusters of a run that starts at i: written in place while they stay and follow each other on
// the host, or into new clusters while they move; their entries into `now`. Returns where the next group starts.
Result<uint64_t> Qcow2Device::write_group(std::span<const uint8_t> data, uint64_t i, const std::vector<L2Entry>& old,
                                          const std::vector<bool>& moved, std::vector<L2Entry>& now) {
    const uint64_t count = old.size(), all = entry_bytes_ == 16 ? kAllAllocated : 0;
    uint64_t j = i + 1;
    if (!moved[i]) {
        const uint64_t base = old[i].word & kOffsetMask;
        while (j < count && !moved[j] && (old[j].word & kOffsetMask) == base + (j - i) * cluster_size_) ++j;
        if (!data.empty()) VDISK_TRY(put_clusters(base, data, i, j - i));
        for (uint64_t x = i; x < j; ++x) now[x] = L2Entry{(old[x].word & kOffsetMask) | kFlagCopied, all};
        return j;
    }
    while (j < count && moved[j]) ++j;
    for (uint64_t x = i; x < j;) {
        VDISK_ASSIGN(auto run, alloc_some(j - x, false));
        VDISK_TRY(put_clusters(run.first, data, x, run.second));
        for (uint64_t y = 0; y < run.second; ++y)
            now[x + y] = L2Entry{(run.first + y * cluster_size_) | kFlagCopied, all};
        x += run.second;
    }
    return j;
}

// Write whole clusters [vc, vc + count) that share one L2 table. `data` holds the bytes (possibly short
// at the device's end); an empty span preallocates without writing data.
Status Qcow2Device::write_run(uint64_t vc, uint64_t count, std::span<const uint8_t> data) {
    VDISK_ASSIGN(uint64_t l2off, ensure_l2(vc / l2_entries_));
    const uint64_t first = vc % l2_entries_;
    VDISK_ASSIGN(std::vector<L2Entry> old, read_l2(l2off, first, count));
    VDISK_ASSIGN(std::vector<bool> moved, moved_clusters(l2off, first, old));
    std::vector<L2Entry> now(old.size());
    for (uint64_t i = 0; i < count;) {
        VDISK_ASSIGN(i, write_group(data, i, old, moved, now));
    }
    return replace_l2(l2off, first, now, old, moved);
}

// Whole clusters (the generic layer aligns to write_granularity; the last may be partial), one L2 table's worth
// at a time.
Status Qcow2Device::do_write(uint64_t offset, std::span<const uint8_t> buf) {
    VDISK_TRY(refuse_if_needed());
    return util::for_each_unit(offset, buf.size(), l2_entries_ * cluster_size_, [&](const util::UnitPiece& p) {
        return write_run((offset + p.done) >> h_.cluster_bits, util::div_round_up(p.length, cluster_size_),
                         buf.subspan(static_cast<size_t>(p.done), static_cast<size_t>(p.length)));
    });
}

Status Qcow2Device::preallocate(bool full_zero, bool falloc) {
    const uint64_t clusters = util::div_round_up(size(), cluster_size_);
    VDISK_TRY(util::for_each_unit(0, clusters, l2_entries_, [&](const util::UnitPiece& p) {
        std::vector<uint8_t> zero(full_zero ? static_cast<size_t>(p.length * cluster_size_) : 0, 0);
        return write_run(p.done, p.length, zero);  // empty: allocate without writing data
    }));
    if (falloc) VDISK_TRY(file_->allocate(0, file_size_));
    return ok();
}

// The entry that makes `old` read as zeros, and whether `old`'s cluster is dropped. `unmap`: leave the
// cluster unallocated (reads zeros without a backing file, or whatever discard allows).
Result<bool> Qcow2Device::zeroed_entry(const L2Entry& old, bool unmap, bool may_unmap, L2Entry& e) {
    const uint64_t host = old.word & kOffsetMask;
    bool exclusive = false;
    if (!may_unmap && host && !(old.word & kFlagCompressed)) {
        VDISK_ASSIGN(uint64_t rc, get_refcount(host / cluster_size_));
        exclusive = rc == 1;
    }
    if (unmap) return true;
    e.bitmap = entry_bytes_ == 16 ? kAllZero : 0;
    e.word = entry_bytes_ == 8 ? kFlagZero : 0;
    if (exclusive) e.word |= host | kFlagCopied;
    return !exclusive;
}

// Whole clusters only (the generic layer aligns to write_granularity); the last may be partial.
Status Qcow2Device::zero_or_discard(uint64_t offset, uint64_t len, bool discard, bool may_unmap) {
    VDISK_TRY(refuse_if_needed());
    bool has_backing = h_.backing_name.has_value() || backing() != nullptr;
    bool v3 = h_.version >= 3;
    if (!discard && !v3 && has_backing) return BlockDevice::do_write_zeroes(offset, len, may_unmap);
    const uint64_t first_vc = offset >> h_.cluster_bits;
    const uint64_t clusters = util::div_round_up(offset + len, cluster_size_) - first_vc;
    const bool need_marks = !discard && v3 && has_backing, unmap = discard || (!v3 && !has_backing);
    // One L2 table's worth of clusters at a time.
    return util::for_each_unit(first_vc, clusters, l2_entries_, [&](const util::UnitPiece& piece) -> Status {
        const uint64_t l1i = piece.index, first = piece.in_unit;
        uint64_t l2off = l1i < l1_.size() ? (l1_[l1i] & kOffsetMask) : 0;
        if (l2off == 0 && !need_marks) return ok();
        VDISK_ASSIGN(l2off, ensure_l2(l1i));
        VDISK_ASSIGN(std::vector<L2Entry> old, read_l2(l2off, first, piece.length));
        std::vector<L2Entry> now(old.size());
        std::vector<bool> drop(old.size());
        for (size_t i = 0; i < old.size(); ++i) {
            VDISK_ASSIGN(drop[i], zeroed_entry(old[i], unmap, may_unmap, now[i]));
        }
        return replace_l2(l2off, first, now, old, drop);
    });
}

Status Qcow2Device::do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) {
    return zero_or_discard(offset, len, false, may_unmap);
}

Status Qcow2Device::do_discard(uint64_t offset, uint64_t len) {
    // Only whole clusters can be dropped; the partial edges are left as they are (discard is a hint).
    uint64_t a = util::align_up(offset, cluster_size_).value_or(size());
    uint64_t end = offset + len;
    uint64_t b = end == size() ? end : util::align_down(end, cluster_size_);
    if (a >= b) return ok();
    return zero_or_discard(a, b - a, true, true);
}

Status Qcow2Device::do_write_compressed_chunk(uint64_t offset, std::span<const uint8_t> compressed,
                                              uint64_t raw_length) {
    if (read_only()) return make_error(ErrorCode::read_only, "device is read-only");
    VDISK_TRY(refuse_if_needed());
    if (!util::is_aligned(offset, cluster_size_) || offset >= size() || raw_length > cluster_size_)
        return make_error(ErrorCode::invalid_argument, "compressed chunk at " + hex(offset) + " is not one cluster");
    if (compressed.empty() || compressed.size() > cluster_size_)
        return make_error(ErrorCode::invalid_argument,
                          "compressed chunk of " + std::to_string(compressed.size()) + " bytes does not fit a cluster");
    // Pack compressed clusters byte after byte into shared host clusters. A descriptor may run on into the
    // next host cluster when that one is allocated right behind the current one (the spec allows it, qemu
    // does the same); otherwise the tail of the current cluster is left unused. Every host cluster a
    // descriptor touches holds one reference for it.
    uint64_t pos = compressed_cursor_;
    uint64_t room = pos ? cluster_size_ - (pos % cluster_size_) : 0;
    if (!pos || pos % cluster_size_ == 0) {
        VDISK_ASSIGN(pos, alloc_clusters(1));
    } else {
        const uint64_t cur = pos / cluster_size_;
        if (room < compressed.size()) {
            VDISK_ASSIGN(uint64_t next, alloc_clusters(1));
            if (next != (cur + 1) * cluster_size_) pos = next;  // not contiguous: start afresh there
        }
        if (pos / cluster_size_ == cur) {
            VDISK_ASSIGN(uint64_t rc, get_refcount(cur));
            VDISK_TRY(set_refcount(cur, rc + 1));
        }
    }
    VDISK_TRY(file_->write_at(pos, compressed));
    file_size_ = std::max(file_size_, pos + compressed.size());
    compressed_cursor_ = pos + compressed.size();
    uint32_t shift = 62 - (h_.cluster_bits - 8);
    uint64_t extra_sectors = (pos + compressed.size() - 1) / 512 - pos / 512;
    L2Entry e;
    e.word = kFlagCompressed | (extra_sectors << shift) | pos;
    uint64_t vc = offset >> h_.cluster_bits;
    VDISK_ASSIGN(uint64_t l2off, ensure_l2(vc / l2_entries_));
    VDISK_ASSIGN(std::vector<L2Entry> old, read_l2(l2off, vc % l2_entries_, 1));
    return replace_l2(l2off, vc % l2_entries_, {e}, old, {true});
}

Status Qcow2Device::grow_l1(uint64_t entries) {
    if (entries * 8 > limits_.max_metadata_bytes || entries > UINT32_MAX / 8)
        return make_error(ErrorCode::limit_exceeded,
                          "L1 table of " + std::to_string(entries) + " entries is too large");
    uint64_t old_clusters = util::div_round_up(l1_.size() * 8, cluster_size_);
    uint64_t new_clusters = util::div_round_up(entries * 8, cluster_size_);
    uint64_t old_off = l1_offset_;
    // The grown table and its on-disk copy are held beside the old table until the swap.
    VDISK_ASSIGN(Charge grown, Charge::make(budget(), entries * 8 + new_clusters * cluster_size_, "L1 table"));
    std::vector<uint64_t> l1 = l1_;
    l1.resize(static_cast<size_t>(entries), 0);
    std::vector<uint8_t> raw(static_cast<size_t>(new_clusters * cluster_size_), 0);
    for (size_t i = 0; i < l1.size(); ++i) util::store_be<uint64_t>(&raw[i * 8], l1[i]);
    uint64_t off = old_off;
    if (new_clusters > old_clusters || old_off == 0) {
        VDISK_ASSIGN(off, alloc_clusters(new_clusters));
    }
    if (off == old_off) {
        // Same clusters: only the new entries (and the tail of the last cluster) change.
        size_t a = l1_.size() * 8;
        VDISK_TRY(file_->write_at(off + a, std::span<const uint8_t>(raw.data() + a, raw.size() - a)));
    } else {
        VDISK_TRY(file_->write_at(off, raw));
    }
    file_size_ = std::max(file_size_, off + raw.size());
    VDISK_TRY(file_->sync());
    uint8_t hdr[12];
    util::store_be<uint32_t>(hdr, static_cast<uint32_t>(entries));
    util::store_be<uint64_t>(hdr + 4, off);
    VDISK_TRY(write_header_field(kOffL1Size, hdr));
    l1_ = std::move(l1);
    VDISK_TRY(grown.resize(entries * 8, "L1 table"));  // a release: the on-disk copy goes
    l1_charge_ = std::move(grown);                     // and so does the old table's charge
    l1_offset_ = off;
    h_.l1_size = static_cast<uint32_t>(entries);
    h_.l1_offset = off;
    if (off != old_off && old_clusters && old_off) VDISK_TRY(free_clusters(old_off / cluster_size_, old_clusters));
    return ok();
}

Status Qcow2Device::do_resize(uint64_t new_size) {
    VDISK_TRY(refuse_if_needed());
    uint64_t per_l2 = l2_entries_ * cluster_size_;
    if (new_size > (uint64_t(1) << 56))
        return make_error(ErrorCode::invalid_argument, "size " + std::to_string(new_size) + " is too large for qcow2");
    if (new_size < size()) {
        uint64_t first = util::div_round_up(new_size, cluster_size_);
        uint64_t end = util::div_round_up(size(), cluster_size_);
        for (uint64_t vc = first; vc < end;) {
            uint64_t l1i = vc / l2_entries_;
            if (l1i >= l1_.size() || (l1_[l1i] & kOffsetMask) == 0) {
                vc = (l1i + 1) * l2_entries_;
                continue;
            }
            VDISK_ASSIGN(L2Entry e, lookup(vc));
            if (e.word & (kOffsetMask | kFlagCompressed) || (e.bitmap & kAllAllocated))
                return make_error(ErrorCode::unsupported, "cannot shrink: cluster at virtual offset " +
                                                              hex(vc * cluster_size_) + " is allocated");
            ++vc;
        }
    } else {
        uint64_t need = util::div_round_up(new_size, per_l2);
        if (need > l1_.size()) VDISK_TRY(grow_l1(need));
    }
    uint8_t b[8];
    util::store_be<uint64_t>(b, new_size);
    VDISK_TRY(write_header_field(kOffSize, b));
    h_.size = new_size;
    set_size(new_size);
    return ok();
}

Status Qcow2Device::clear_dirty() {
    if (!(h_.incompat & kIncompatDirty)) return ok();
    uint8_t b[8];
    util::store_be<uint64_t>(b, h_.incompat & ~kIncompatDirty);
    VDISK_TRY(file_->sync());
    VDISK_TRY(write_header_field(kOffIncompatible, b));
    h_.incompat &= ~kIncompatDirty;
    if (write_refusal_ && write_refusal_->code == ErrorCode::unsupported &&
        write_refusal_->message.find("dirty") != std::string::npos)
        write_refusal_.reset();
    return file_->sync();
}

Status Qcow2Device::do_flush() {
    VDISK_TRY(file_->sync());
    if (data_file_) VDISK_TRY(data_file_->sync());
    return ok();
}

Status Qcow2Device::do_close() { return do_flush(); }

}  // namespace vdisk::qcow2
