// SPDX-License-Identifier: Apache-2.0
// qcow2 internal snapshots: create, delete and apply (qemu-img snapshot -c/-d/-a).
//
// Refcounts follow qcow2's rule: an L2 table is counted once per L1 table pointing at it, a data cluster
// once per L1 table reaching it. A snapshot's L1 is a copy of the active one, so creating one adds a
// reference to every L2 table and data cluster the active L1 reaches; deleting one drops the references its
// own L1 holds. COPIED flags (refcount exactly 1) are then set or cleared on the active tables, which is
// what qemu-img check verifies and what later writes rely on to copy shared clusters first.
//
// Order of writes: new structures (L1 copy, snapshot table) are written and referenced before the header
// points at them; the old table is freed last. A crash in between leaks clusters (check -r leaks) rather
// than corrupting data, as with qemu.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "qcow2_internal.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"

namespace vdisk::qcow2 {

Status Qcow2Device::snapshot_preconditions() const {
    if (read_only()) return make_error(ErrorCode::read_only, "internal snapshots need the image opened read-write");
    if (snapshot_view_) return make_error(ErrorCode::invalid_argument, "open the active layer to manage snapshots");
    if (data_file_)
        return make_error(ErrorCode::unsupported, "images with an external data file cannot have snapshots");
    if (write_refusal_) return *write_refusal_;
    return ok();
}

Result<size_t> Qcow2Device::find_snapshot(const std::string& id_or_name) const {
    for (size_t i = 0; i < snapshots_.size(); ++i)
        if (snapshots_[i].info.id == id_or_name) return i;
    for (size_t i = 0; i < snapshots_.size(); ++i)
        if (snapshots_[i].info.name == id_or_name) return i;
    return make_error(ErrorCode::not_found, "snapshot '" + id_or_name + "' not found");
}

// +1 (or -1) on every L2 table `l1` points at and on every cluster those tables reach.
Status Qcow2Device::add_tree_refs(const std::vector<uint64_t>& l1, bool increment) {
    auto adjust = [&](uint64_t cluster) -> Status {
        if (!increment) return free_clusters(cluster, 1);
        VDISK_ASSIGN(uint64_t rc, get_refcount(cluster));
        return set_refcount(cluster, rc + 1);
    };
    for (size_t i = 0; i < l1.size(); ++i) {
        uint64_t l2off = l1[i] & kOffsetMask;
        if (!l2off) continue;
        if (!util::is_aligned(l2off, cluster_size_) || !util::range_within(l2off, cluster_size_, file_size_))
            return make_error(ErrorCode::corrupt,
                              "L1 entry " + std::to_string(i) + " points at an invalid L2 table " + hex(l2off))
                .at(0);
        // Copy the table: adjusting refcounts may evict it from the cache.
        VDISK_ASSIGN(auto* t, l2_table(l2off));
        std::vector<uint8_t> table = *t;
        for (uint64_t j = 0; j < l2_entries_; ++j) {
            uint64_t word = util::load_be<uint64_t>(&table[j * entry_bytes_]);
            if (word & kFlagCompressed) {
                auto [first, last] = compressed_span(word & ~(kFlagCompressed | kFlagCopied));
                for (uint64_t c = first; c <= last; ++c) VDISK_TRY(adjust(c));
            } else if (uint64_t host = word & kOffsetMask) {
                VDISK_TRY(adjust(host / cluster_size_));
            }
        }
        VDISK_TRY(adjust(l2off / cluster_size_));
    }
    return ok();
}

// COPIED on exactly the active L1 entries and L2 entries whose cluster has refcount 1.
Status Qcow2Device::fix_copied_flags() {
    bool l1_changed = false;
    for (auto& e : l1_) {
        uint64_t l2off = e & kOffsetMask;
        if (!l2off) continue;
        VDISK_ASSIGN(uint64_t rc, get_refcount(l2off / cluster_size_));
        uint64_t want = rc == 1 ? (e | kFlagCopied) : (e & ~kFlagCopied);
        if (want != e) {
            e = want;
            l1_changed = true;
        }
        VDISK_ASSIGN(auto* t, l2_table(l2off));
        std::vector<uint8_t> table = *t;
        bool changed = false;
        for (uint64_t j = 0; j < l2_entries_; ++j) {
            uint64_t word = util::load_be<uint64_t>(&table[j * entry_bytes_]);
            uint64_t host = word & kOffsetMask;
            if ((word & kFlagCompressed) || !host) continue;
            VDISK_ASSIGN(uint64_t drc, get_refcount(host / cluster_size_));
            uint64_t w = drc == 1 ? (word | kFlagCopied) : (word & ~kFlagCopied);
            if (w != word) {
                util::store_be<uint64_t>(&table[j * entry_bytes_], w);
                changed = true;
            }
        }
        if (changed) {
            // An L2 table shared with a snapshot (rc > 1) only loses flags here; it is never given COPIED
            // entries, since its data clusters are shared too.
            VDISK_TRY(file_->write_at(l2off, table));
            VDISK_ASSIGN(auto* cached, l2_table(l2off));
            *cached = std::move(table);
        }
    }
    if (l1_changed) VDISK_TRY(write_l1());
    return ok();
}

Status Qcow2Device::write_l1() {
    std::vector<uint8_t> raw(l1_.size() * 8);
    for (size_t i = 0; i < l1_.size(); ++i) util::store_be<uint64_t>(&raw[i * 8], l1_[i]);
    if (raw.empty()) return ok();
    return file_->write_at(l1_offset_, raw);
}

// Serialise `table` into new clusters, point the header at it, free the old table.
Status Qcow2Device::write_snapshot_table(std::vector<Snapshot> table) {
    std::vector<uint8_t> out;
    for (auto& s : table) {
        SnapshotHeader sh{};
        sh.l1_table_offset = s.l1_offset;
        sh.l1_size = s.l1_size;
        sh.id_str_size = static_cast<uint16_t>(s.info.id.size());
        sh.name_size = static_cast<uint16_t>(s.info.name.size());
        sh.date_sec = static_cast<uint32_t>(s.info.date_sec);
        sh.date_nsec = static_cast<uint32_t>(s.info.date_nsec);
        sh.vm_clock_nsec = s.info.vm_clock_nsec;
        sh.vm_state_size = static_cast<uint32_t>(std::min<uint64_t>(s.info.vm_state_size, UINT32_MAX));
        sh.extra_data_size = sizeof(SnapshotExtra);
        SnapshotExtra ex{};
        ex.vm_state_size_large = s.info.vm_state_size;
        ex.disk_size = s.disk_size;
        ex.icount = s.info.icount;
        size_t at = out.size();
        size_t len = sizeof sh + sizeof ex + s.info.id.size() + s.info.name.size();
        out.resize(at + ((len + 7) & ~size_t(7)), 0);
        std::memcpy(&out[at], &sh, sizeof sh);
        std::memcpy(&out[at + sizeof sh], &ex, sizeof ex);
        std::memcpy(&out[at + sizeof sh + sizeof ex], s.info.id.data(), s.info.id.size());
        std::memcpy(&out[at + sizeof sh + sizeof ex + s.info.id.size()], s.info.name.data(), s.info.name.size());
    }
    // The new table is held beside the old one (and its serialised form) until the swap.
    const uint64_t held = table.size() * sizeof(Snapshot) + out.size();
    VDISK_ASSIGN(Charge grown, Charge::make(budget(), held + out.size(), "snapshot table"));
    const uint64_t old_off = h_.snapshots_offset;
    uint64_t new_off = 0;
    if (!out.empty()) {
        uint64_t clusters = util::div_round_up(out.size(), cluster_size_);
        VDISK_ASSIGN(new_off, alloc_clusters(clusters));
        out.resize(static_cast<size_t>(clusters * cluster_size_), 0);
        VDISK_TRY(file_->write_at(new_off, out));
        file_size_ = std::max(file_size_, new_off + clusters * cluster_size_);
        VDISK_TRY(file_->sync());
    }
    uint8_t hdr[12];
    util::store_be<uint32_t>(hdr, static_cast<uint32_t>(table.size()));
    util::store_be<uint64_t>(hdr + 4, new_off);
    VDISK_TRY(write_header_field(kOffSnapshots, hdr));
    VDISK_TRY(file_->sync());
    if (old_off && snapshots_table_bytes_) {
        uint64_t first = old_off / cluster_size_;
        uint64_t last = (old_off + snapshots_table_bytes_ - 1) / cluster_size_;
        VDISK_TRY(free_clusters(first, last - first + 1));
    }
    h_.nb_snapshots = static_cast<uint32_t>(table.size());
    h_.snapshots_offset = new_off;
    snapshots_table_bytes_ = out.empty() ? 0 : out.size();
    snapshots_ = std::move(table);
    VDISK_TRY(grown.resize(held, "snapshot table"));  // a release: the serialised copy goes
    snap_charge_ = std::move(grown);                  // and so does the old table's charge
    return ok();
}

Status Qcow2Device::snapshot_create(const SnapshotInfo& info) {
    VDISK_TRY(snapshot_preconditions());
    if (info.name.size() > 65535) return make_error(ErrorCode::invalid_argument, "snapshot name too long");
    // A fresh id: one past the largest numeric id in use, as qemu does.
    uint64_t max_id = 0;
    for (auto& s : snapshots_) {
        const char *first = s.info.id.data(), *last = first + s.info.id.size();
        uint64_t v = 0;
        auto [end, ec] = std::from_chars(first, last, v);
        if (ec == std::errc() && end == last && last - first < 19) max_id = std::max(max_id, v);
    }
    VDISK_TRY(add_tree_refs(l1_, true));
    VDISK_TRY(fix_copied_flags());
    Snapshot s;
    s.info = info;
    s.info.id = std::to_string(max_id + 1);
    s.info.vm_state_size = 0;
    s.l1_size = static_cast<uint32_t>(l1_.size());
    s.disk_size = size();
    if (!l1_.empty()) {
        uint64_t clusters = util::div_round_up(l1_.size() * 8, cluster_size_);
        VDISK_ASSIGN(s.l1_offset, alloc_clusters(clusters));
        std::vector<uint8_t> raw(static_cast<size_t>(clusters * cluster_size_), 0);
        for (size_t i = 0; i < l1_.size(); ++i) util::store_be<uint64_t>(&raw[i * 8], l1_[i] & ~kFlagCopied);
        VDISK_TRY(file_->write_at(s.l1_offset, raw));
        file_size_ = std::max(file_size_, s.l1_offset + clusters * cluster_size_);
    }
    auto table = snapshots_;
    table.push_back(std::move(s));
    VDISK_TRY(write_snapshot_table(std::move(table)));
    return file_->sync();
}

// Read a snapshot's L1 table (validated against the file and the metadata cap).
static Result<std::vector<uint64_t>> read_l1(File& f, const Snapshot& s, uint64_t cs, uint64_t file_size,
                                             uint64_t cap) {
    VDISK_TRY(validate_table("snapshot L1 table", s.l1_offset, s.l1_size, 8, cs, file_size, cap));
    std::vector<uint8_t> raw(static_cast<size_t>(uint64_t{s.l1_size} * 8));
    if (!raw.empty()) VDISK_TRY(read_exact(f, s.l1_offset, raw, "snapshot L1 table"));
    std::vector<uint64_t> l1(s.l1_size);
    for (size_t i = 0; i < l1.size(); ++i) l1[i] = util::load_be<uint64_t>(&raw[i * 8]);
    return l1;
}

Status Qcow2Device::snapshot_remove(const std::string& id_or_name) {
    VDISK_TRY(snapshot_preconditions());
    VDISK_ASSIGN(size_t idx, find_snapshot(id_or_name));
    Snapshot s = snapshots_[idx];
    VDISK_ASSIGN(auto l1, read_l1(*file_, s, cluster_size_, file_size_, limits_.max_metadata_bytes));
    auto table = snapshots_;
    table.erase(table.begin() + static_cast<std::ptrdiff_t>(idx));
    // Drop the entry first: a crash afterwards only leaks the snapshot's clusters.
    VDISK_TRY(write_snapshot_table(std::move(table)));
    VDISK_TRY(add_tree_refs(l1, false));
    if (s.l1_size)
        VDISK_TRY(
            free_clusters(s.l1_offset / cluster_size_, util::div_round_up(uint64_t{s.l1_size} * 8, cluster_size_)));
    VDISK_TRY(fix_copied_flags());
    return file_->sync();
}

Status Qcow2Device::snapshot_apply(const std::string& id_or_name) {
    VDISK_TRY(snapshot_preconditions());
    VDISK_ASSIGN(size_t idx, find_snapshot(id_or_name));
    Snapshot s = snapshots_[idx];
    VDISK_ASSIGN(auto l1, read_l1(*file_, s, cluster_size_, file_size_, limits_.max_metadata_bytes));
    if (l1.size() > l1_.size()) VDISK_TRY(grow_l1(l1.size()));
    // Reference the snapshot's tree first, then switch the active L1 to it, then release the old tree.
    VDISK_TRY(add_tree_refs(l1, true));
    std::vector<uint64_t> old = l1_;
    std::fill(l1_.begin(), l1_.end(), 0);
    for (size_t i = 0; i < l1.size(); ++i) l1_[i] = l1[i] & ~kFlagCopied;
    VDISK_TRY(write_l1());
    VDISK_TRY(file_->sync());
    VDISK_TRY(add_tree_refs(old, false));
    if (s.disk_size != size()) {
        uint8_t b[8];
        util::store_be<uint64_t>(b, s.disk_size);
        VDISK_TRY(write_header_field(kOffSize, b));
        h_.size = s.disk_size;
        set_size(s.disk_size);
    }
    VDISK_TRY(fix_copied_flags());
    return file_->sync();
}

namespace {
// Cluster 0's header extensions from `start` up to the backing file name (or the cluster's end) as stored, each
// padded, but those of type `drop`; `used`: where they and the name end (what a rewrite clears).
Result<std::vector<uint8_t>> kept_extensions(std::span<const uint8_t> c0, size_t start, uint32_t drop, size_t& used) {
    const uint64_t name_off = util::load_be<uint64_t>(&c0[kOffBackingName]);
    const uint32_t name_len = util::load_be<uint32_t>(&c0[offsetof(HeaderV2, backing_file_size)]);
    const size_t ext_end = name_off && name_off < c0.size() ? static_cast<size_t>(name_off) : c0.size();
    std::vector<uint8_t> exts;
    size_t end = start;
    while (end + 8 <= ext_end) {
        uint32_t type = util::load_be<uint32_t>(&c0[end]);
        if (type == kExtEnd) break;
        size_t padded = (size_t(util::load_be<uint32_t>(&c0[end + 4])) + 7) & ~size_t(7);
        if (padded > ext_end - end - 8)
            return make_error(ErrorCode::corrupt, "header extension " + hex(type) + " runs past the header").at(end);
        if (type != drop) exts.insert(exts.end(), c0.data() + end, c0.data() + end + 8 + padded);
        end += 8 + padded;
    }
    used = name_off ? static_cast<size_t>(name_off + name_len) : end + 8;
    return exts;
}
}  // namespace

// Rewrite cluster 0's tail: the header extensions (all kept but the backing format, which is replaced),
// the end marker, then the backing file name, and point the header fields at the name. The rewrite stays
// inside cluster 0, which nothing else uses.
Status Qcow2Device::set_backing_reference(const std::string& name, const std::string& format, BlockDevice*) {
    if (read_only()) return make_error(ErrorCode::read_only, "device is read-only");
    VDISK_TRY(refuse_if_needed());
    if (name.size() > kMaxBackingNameLength)
        return make_error(ErrorCode::invalid_argument, "backing file name longer than 1023 bytes");
    if (data_file_ && !name.empty() && (h_.autoclear & kAutoclearDataFileRaw))
        return make_error(ErrorCode::invalid_argument, "a raw external data file cannot have a backing file");
    std::vector<uint8_t> c0(static_cast<size_t>(std::min<uint64_t>(cluster_size_, file_size_)));
    VDISK_TRY(read_exact(*file_, 0, c0, "header cluster"));
    size_t old_end = 0;
    VDISK_ASSIGN(std::vector<uint8_t> tail, kept_extensions(c0, h_.header_length, kExtBackingFormat, old_end));
    if (!name.empty() && !format.empty()) put_ext(tail, kExtBackingFormat, format);
    tail.resize(tail.size() + 8, 0);  // end of extensions
    const uint64_t name_off = name.empty() ? 0 : h_.header_length + tail.size();
    tail.insert(tail.end(), name.begin(), name.end());
    if (h_.header_length + tail.size() > cluster_size_)
        return make_error(ErrorCode::invalid_argument,
                          "header extensions and backing file name do not fit the header cluster");
    // Clear what the old extensions and name occupied, then write the new tail and the pointers.
    size_t span = std::max(tail.size(), old_end > h_.header_length ? old_end - h_.header_length : 0);
    span = std::min<size_t>(span, c0.size() - h_.header_length);
    tail.resize(std::max(tail.size(), span), 0);
    VDISK_TRY(file_->write_at(h_.header_length, tail));
    uint8_t ptr[12];
    util::store_be<uint64_t>(ptr, name_off);
    util::store_be<uint32_t>(ptr + 8, static_cast<uint32_t>(name.size()));
    VDISK_TRY(write_header_field(kOffBackingName, ptr));
    VDISK_TRY(file_->sync());
    if (name.empty()) h_.backing_name.reset();
    else h_.backing_name = name;
    h_.backing_format = name.empty() ? std::string() : format;
    return ok();
}

// Rebuild cluster 0 for `version` (2: the 72-byte header; 3: the 112-byte one) keeping every header
// extension (but the feature name table, which version 2 lacks) and the backing file name behind them.
Status Qcow2Device::rewrite_header(uint32_t version, uint64_t compat) {
    std::vector<uint8_t> c0(static_cast<size_t>(std::min<uint64_t>(cluster_size_, file_size_)));
    VDISK_TRY(read_exact(*file_, 0, c0, "header cluster"));
    const uint64_t name_off = util::load_be<uint64_t>(&c0[kOffBackingName]);
    const uint32_t name_len = util::load_be<uint32_t>(&c0[offsetof(HeaderV2, backing_file_size)]);
    size_t old_end = 0;
    VDISK_ASSIGN(std::vector<uint8_t> exts,
                 kept_extensions(c0, h_.header_length, version == 2 ? kExtFeatureTable : kExtEnd, old_end));
    std::string name;
    if (name_off) name.assign(reinterpret_cast<const char*>(&c0[name_off]), name_len);
    const uint32_t hlen = version == 3 ? kHeaderV3Length : kHeaderV2Length;
    HeaderV3 hv{};  // the version 2 fields as they are; version 3 adds the rest (the fields past 72 bytes)
    std::memcpy(&hv.v2, c0.data(), sizeof hv.v2);
    hv.v2.version = version;
    hv.incompatible_features = h_.incompat;
    hv.compatible_features = compat;
    hv.autoclear_features = h_.autoclear;
    hv.refcount_order = h_.refcount_order;
    hv.header_length = hlen;
    hv.compression_type = h_.compression;
    std::vector<uint8_t> out(hlen);
    std::memcpy(out.data(), &hv, hlen);
    out.insert(out.end(), exts.begin(), exts.end());
    out.resize(out.size() + 8, 0);
    util::store_be<uint64_t>(&out[kOffBackingName], name.empty() ? 0 : out.size());
    out.insert(out.end(), name.begin(), name.end());
    if (out.size() > cluster_size_)
        return make_error(ErrorCode::invalid_argument, "the new header does not fit the header cluster");
    out.resize(std::min<size_t>(std::max(out.size(), old_end), c0.size()), 0);
    VDISK_TRY(file_->write_at(0, out));
    VDISK_TRY(file_->sync());
    h_.version = version;
    h_.header_length = hlen;
    h_.compat = compat;
    return ok();
}

namespace {
// One amend option applied to what the image will be: version, compatible features, refcount order.
Status amend_option(const CreateOptions& opts, const std::string& k, const std::string& v, uint32_t& version,
                    uint64_t& compat, uint32_t& order) {
    if (k == "compat") {
        if (v == "0.10" || v == "v2") version = 2;
        else if (v == "1.1" || v == "v3") version = 3;
        else return make_error(ErrorCode::invalid_argument, "compat must be 0.10 or 1.1, not '" + v + "'");
    } else if (k == "lazy_refcounts") {
        VDISK_ASSIGN(bool lazy, opts.get_bool("lazy_refcounts", false));
        compat = lazy ? (compat | kCompatLazyRefcounts) : (compat & ~kCompatLazyRefcounts);
    } else if (k == "refcount_bits") {
        VDISK_ASSIGN(uint64_t bits, opts.get_size("refcount_bits", 16));
        if (!util::is_pow2(bits) || bits > 64)
            return make_error(ErrorCode::invalid_argument,
                              "refcount_bits must be a power of two from 1 to 64, not '" + v + "'");
        order = 0;
        while ((uint64_t{1} << order) < bits) ++order;
    } else {
        return make_error(ErrorCode::unsupported, "amend cannot change option '" + k + "'");
    }
    return ok();
}
}  // namespace

// Zero clusters do not exist in version 2; qemu-img writes them out, vdisk refuses.
Status Qcow2Device::refuse_zero_clusters() {
    std::vector<std::vector<uint64_t>> tables{l1_};
    for (auto& s : snapshots_) {
        std::vector<uint8_t> raw(static_cast<size_t>(uint64_t{s.l1_size} * 8));
        if (!util::range_within(s.l1_offset, raw.size(), file_size_))
            return make_error(ErrorCode::corrupt, "snapshot L1 table is invalid").at(s.entry_offset);
        if (!raw.empty()) VDISK_TRY(read_exact(*file_, s.l1_offset, raw, "snapshot L1 table"));
        std::vector<uint64_t> l1(s.l1_size);
        for (size_t i = 0; i < l1.size(); ++i) l1[i] = util::load_be<uint64_t>(&raw[i * 8]);
        tables.push_back(std::move(l1));
    }
    for (auto& l1 : tables)
        for (uint64_t e : l1) {
            uint64_t l2off = e & kOffsetMask;
            if (!l2off) continue;
            VDISK_ASSIGN(auto* t, l2_table(l2off));
            for (uint64_t j = 0; j < l2_entries_; ++j) {
                uint64_t w = util::load_be<uint64_t>(&(*t)[j * entry_bytes_]);
                if (!(w & kFlagCompressed) && (w & kFlagZero))
                    return make_error(
                        ErrorCode::unsupported,
                        "cannot downgrade: the image has zero clusters, which compat=0.10 cannot express");
            }
        }
    return ok();
}

// Whether the image can become `version` with `compat` and refcount order `order`.
Status Qcow2Device::check_amend(uint32_t version, uint64_t compat, uint32_t order) {
    if (version == 2 && order != 4)
        return make_error(ErrorCode::invalid_argument,
                          "Different refcount widths than 16 bits require compatibility level 1.1 or above (use "
                          "compat=1.1 or greater)");
    if (order != h_.refcount_order && (h_.incompat & kIncompatDirty))
        return make_error(
            ErrorCode::invalid_argument,
            "the image is dirty (lazy refcounts): repair it with check -r all before changing refcount_bits");
    if ((h_.incompat & kIncompatDirty) && !(compat & kCompatLazyRefcounts))
        return make_error(ErrorCode::invalid_argument,
                          "the image is dirty (lazy refcounts): repair it with check -r all first");
    if (version != 2 || h_.version != 3) return ok();
    if (h_.incompat & ~kIncompatDirty)
        return make_error(ErrorCode::unsupported,
                          "cannot downgrade: the image uses version 3 features (incompatible bits " + hex(h_.incompat) +
                              ")");
    if (order != 4) return make_error(ErrorCode::unsupported, "cannot downgrade: compat=0.10 needs refcount_bits=16");
    if (h_.has_bitmaps_ext || (h_.autoclear & kAutoclearBitmaps))
        return make_error(ErrorCode::unsupported, "cannot downgrade an image with persistent bitmaps");
    return refuse_zero_clusters();
}

Status Qcow2Device::amend(const std::vector<std::pair<std::string, std::string>>& options) {
    if (read_only()) return make_error(ErrorCode::read_only, "device is read-only");
    VDISK_TRY(refuse_if_needed());
    CreateOptions opts;
    opts.values = options;
    uint32_t version = h_.version, order = h_.refcount_order;
    uint64_t compat = h_.compat;
    for (auto& [k, v] : options) VDISK_TRY(amend_option(opts, k, v, version, compat, order));
    if (version == 2 && (compat & kCompatLazyRefcounts)) {
        if (opts.get("lazy_refcounts"))
            return make_error(ErrorCode::invalid_argument,
                              "Lazy refcounts only supported with compatibility level "
                              "1.1 and above (use compat=1.1 or greater)");
        compat &= ~kCompatLazyRefcounts;  // a downgrade turns them off, as qemu-img does
    }
    VDISK_TRY(check_amend(version, compat, order));
    // New refcount width first (a version 3 header is current then), the version change after it.
    VDISK_TRY(change_refcount_order(order));
    if (version != h_.version || compat != h_.compat) VDISK_TRY(rewrite_header(version, compat));
    return ok();
}

}  // namespace vdisk::qcow2
