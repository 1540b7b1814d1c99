// SPDX-License-Identifier: Apache-2.0
// qcow2 refcounts: table and block access, cluster allocation, growth of refcount blocks and the table.
//
// Invariant kept by every path here: a cluster is only handed out after its refcount is on disk, and a
// refcount block or table is only referenced after it is written, so a crash leaks at worst.
#include <algorithm>
#include <cstring>

#include "qcow2_internal.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"

namespace vdisk::qcow2 {

namespace {

// Entries are refcount_bits wide; sub-byte widths are packed starting at the low bits of each byte,
// wider ones are big-endian.
uint64_t get_entry(const uint8_t* blk, uint64_t i, uint32_t order) {
    uint32_t bits = 1u << order;
    if (bits < 8) return (blk[i * bits / 8] >> ((i * bits) % 8)) & ((1u << bits) - 1);
    const uint8_t* p = blk + i * (bits / 8);
    switch (bits) {
        case 8: return p[0];
        case 16: return util::load_be<uint16_t>(p);
        case 32: return util::load_be<uint32_t>(p);
        default: return util::load_be<uint64_t>(p);
    }
}

}  // namespace

// Returns the byte offset within the block that changed and its length.
std::pair<size_t, size_t> set_refcount_entry(uint8_t* blk, uint64_t i, uint32_t order, uint64_t v) {
    uint32_t bits = 1u << order;
    if (bits < 8) {
        size_t b = static_cast<size_t>(i * bits / 8);
        uint32_t shift = (i * bits) % 8;
        uint8_t mask = static_cast<uint8_t>(((1u << bits) - 1) << shift);
        blk[b] = static_cast<uint8_t>((blk[b] & ~mask) | ((v << shift) & mask));
        return {b, 1};
    }
    size_t b = static_cast<size_t>(i * (bits / 8));
    switch (bits) {
        case 8: blk[b] = static_cast<uint8_t>(v); break;
        case 16: util::store_be<uint16_t>(blk + b, static_cast<uint16_t>(v)); break;
        case 32: util::store_be<uint32_t>(blk + b, static_cast<uint32_t>(v)); break;
        default: util::store_be<uint64_t>(blk + b, v); break;
    }
    return {b, bits / 8};
}

uint64_t Qcow2Device::refcount_max() const {
    return h_.refcount_order == 6 ? UINT64_MAX : (uint64_t(1) << (1u << h_.refcount_order)) - 1;
}

Status Qcow2Device::ensure_refcount_table() {
    if (rt_loaded_) return ok();
    uint64_t entries = uint64_t(h_.rt_clusters) * cluster_size_ / 8;
    rt_charge_ = Charge::make(budget(), 0, "refcount table").value();
    VDISK_TRY(rt_charge_.resize(entries * 8, "refcount table"));
    VDISK_TRY(budget()->work(entries, "refcount table"));
    rt_.resize(static_cast<size_t>(entries));
    auto* raw = reinterpret_cast<uint8_t*>(rt_.data());
    VDISK_TRY(read_exact(*file_, h_.rt_offset, std::span<uint8_t>(raw, entries * 8), "refcount table"));
    for (size_t i = 0; i < rt_.size(); ++i) rt_[i] = util::load_be<uint64_t>(raw + i * 8);
    rt_loaded_ = true;
    return ok();
}

Result<std::vector<uint64_t>> Qcow2Device::load_refcount_table_for_check() {
    VDISK_TRY(ensure_refcount_table());
    return rt_;
}

Result<std::vector<uint8_t>*> Qcow2Device::refblock(uint64_t offset) {
    if (auto* b = rb_cache_.find(offset)) return b;
    std::vector<uint8_t> b(static_cast<size_t>(cluster_size_));
    VDISK_TRY(read_exact(*file_, offset, b, "refcount block"));
    return &rb_cache_.insert(offset, std::move(b));
}

Result<uint64_t> Qcow2Device::get_refcount(uint64_t cluster) {
    VDISK_TRY(ensure_refcount_table());
    uint64_t r = cluster / rb_entries();
    if (r >= rt_.size()) return uint64_t(0);
    uint64_t off = rt_[r] & ~uint64_t(511);
    if (off == 0) return uint64_t(0);
    if (!util::is_aligned(off, cluster_size_) || !util::range_within(off, cluster_size_, file_size_))
        return make_error(ErrorCode::corrupt,
                          "refcount table entry " + std::to_string(r) + " points to invalid refcount block " + hex(off))
            .at(h_.rt_offset + r * 8);
    VDISK_ASSIGN(auto* blk, refblock(off));
    return get_entry(blk->data(), cluster % rb_entries(), h_.refcount_order);
}

Status Qcow2Device::set_refcount(uint64_t cluster, uint64_t value) {
    if (value > refcount_max())
        return make_error(ErrorCode::limit_exceeded, "refcount of cluster " + hex(cluster * cluster_size_) +
                                                         " would exceed the maximum of " +
                                                         std::to_string(refcount_max()));
    VDISK_TRY(ensure_refcount_table());
    uint64_t r = cluster / rb_entries();
    if (r >= rt_.size()) VDISK_TRY(grow_refcount_table(r));
    if ((rt_[r] & ~uint64_t(511)) == 0) VDISK_TRY(create_refblock(r));
    uint64_t off = rt_[r] & ~uint64_t(511);
    if (!util::is_aligned(off, cluster_size_) || !util::range_within(off, cluster_size_, file_size_))
        return make_error(ErrorCode::corrupt,
                          "refcount table entry " + std::to_string(r) + " points to invalid refcount block " + hex(off))
            .at(h_.rt_offset + r * 8);
    VDISK_ASSIGN(auto* blk, refblock(off));
    auto [b, n] = set_refcount_entry(blk->data(), cluster % rb_entries(), h_.refcount_order, value);
    return file_->write_at(off + b, std::span<const uint8_t>(blk->data() + b, n));
}

// A missing refcount block for range `index` goes into the first cluster of that range: every cluster
// of the range has refcount 0, so that cluster is free, and the block then counts itself.
Status Qcow2Device::create_refblock(uint64_t index) {
    uint64_t cluster = index * rb_entries();
    std::vector<uint8_t> blk(static_cast<size_t>(cluster_size_), 0);
    set_refcount_entry(blk.data(), 0, h_.refcount_order, 1);
    uint64_t off = cluster * cluster_size_;
    VDISK_TRY(file_->write_at(off, blk));
    file_size_ = std::max(file_size_, off + cluster_size_);
    rb_cache_.insert(off, std::move(blk));
    rt_[index] = off;
    uint8_t e[8];
    util::store_be<uint64_t>(e, off);
    return file_->write_at(h_.rt_offset + index * 8, e);
}

// The new table and the refcount blocks that cover it go into the first range the old table did not
// cover (free by construction): [k blocks][T table clusters], each block covering its own range.
Status Qcow2Device::grow_refcount_table(uint64_t needed_index) {
    const uint64_t epb = rb_entries(), cs = cluster_size_;
    uint64_t old_entries = rt_.size();
    uint64_t base = old_entries;  // first block index not covered
    uint64_t n = std::max<uint64_t>(needed_index + 1, old_entries * 2);
    uint64_t t = 0, k = 0;
    for (;;) {
        t = util::div_round_up(n * 8, cs);
        k = 1;
        while (k * epb < k + t) ++k;
        if (n >= base + k) break;
        n = base + k;
    }
    n = t * cs / 8;
    if (n * 8 > limits_.max_metadata_bytes || t > UINT32_MAX)
        return make_error(ErrorCode::limit_exceeded, "refcount table would grow past the metadata limit");
    uint64_t start = base * epb;
    // The grown table, its on-disk copy and the new blocks are held beside the old table until the swap.
    VDISK_ASSIGN(Charge grown, Charge::make(budget(), n * 8 + t * cs + k * cs, "refcount table"));
    std::vector<uint8_t> blocks(static_cast<size_t>(k * cs), 0);
    for (uint64_t c = start; c < start + k + t; ++c)
        set_refcount_entry(&blocks[static_cast<size_t>((c / epb - base) * cs)], c % epb, h_.refcount_order, 1);
    std::vector<uint64_t> table(rt_);
    table.resize(static_cast<size_t>(n), 0);
    for (uint64_t i = 0; i < k; ++i) table[base + i] = (start + i) * cs;
    std::vector<uint8_t> raw(static_cast<size_t>(t * cs), 0);
    for (size_t i = 0; i < table.size(); ++i) util::store_be<uint64_t>(&raw[i * 8], table[i]);
    VDISK_TRY(file_->write_at(start * cs, blocks));
    VDISK_TRY(file_->write_at((start + k) * cs, raw));
    file_size_ = std::max(file_size_, (start + k + t) * cs);
    VDISK_TRY(file_->sync());
    uint8_t hdr[12];
    util::store_be<uint64_t>(hdr, (start + k) * cs);
    util::store_be<uint32_t>(hdr + 8, static_cast<uint32_t>(t));
    VDISK_TRY(write_header_field(kOffRefcountTable, hdr));
    for (uint64_t i = 0; i < k; ++i)
        rb_cache_.insert((start + i) * cs,
                         std::vector<uint8_t>(blocks.begin() + static_cast<std::ptrdiff_t>(i * cs),
                                              blocks.begin() + static_cast<std::ptrdiff_t>((i + 1) * cs)));
    uint64_t old_off = h_.rt_offset, old_clusters = h_.rt_clusters;
    h_.rt_offset = (start + k) * cs;
    h_.rt_clusters = static_cast<uint32_t>(t);
    rt_ = std::move(table);
    VDISK_TRY(grown.resize(n * 8, "refcount table"));  // a release: the copies go (the blocks are in the cache)
    rt_charge_ = std::move(grown);                     // and so does the old table's charge
    return free_clusters(old_off / cs, old_clusters);
}

// The first cluster with refcount 0 at or after the hint and up to n - 1 more behind it (exactly n if `exact`):
// {first cluster, count}.
Result<std::pair<uint64_t, uint64_t>> Qcow2Device::find_free_run(uint64_t n, bool exact) {
    uint64_t start = free_hint_;
    for (;;) {
        VDISK_ASSIGN(uint64_t rc, get_refcount(start));
        if (!rc) break;
        ++start;
    }
    uint64_t len = 1;
    while (len < n) {
        VDISK_ASSIGN(uint64_t rc, get_refcount(start + len));
        if (!rc) {
            ++len;
        } else if (exact) {
            start = start + len + 1;
            len = 0;
        } else {
            break;
        }
    }
    return std::make_pair(start, len);
}

// Creates the refcount blocks (and grows the table) that clusters [start, start + len) need; true if it did
// any of that, which may have taken clusters of the run.
Result<bool> Qcow2Device::cover_run(uint64_t start, uint64_t len) {
    bool changed = false;
    for (uint64_t r = start / rb_entries(); r <= (start + len - 1) / rb_entries(); ++r) {
        if (r >= rt_.size()) {
            VDISK_TRY(grow_refcount_table(r));
            return true;
        }
        if ((rt_[r] & ~uint64_t(511)) == 0) {
            VDISK_TRY(create_refblock(r));
            changed = true;
        }
    }
    return changed;
}

// Up to n contiguous free clusters at or after the hint; at least one. Refcount blocks missing for the
// run are created first (each in the first cluster of its range, which may shorten the run), so the loop
// settles within a few rounds.
Result<std::pair<uint64_t, uint64_t>> Qcow2Device::alloc_some(uint64_t n, bool exact) {
    VDISK_TRY(ensure_refcount_table());
    for (unsigned attempt = 0; attempt < 64; ++attempt) {
        VDISK_ASSIGN(auto run, find_free_run(n, exact));
        VDISK_ASSIGN(bool changed, cover_run(run.first, run.second));
        if (changed) continue;
        for (uint64_t i = 0; i < run.second; ++i) VDISK_TRY(set_refcount(run.first + i, 1));
        free_hint_ = run.first + run.second;
        return std::make_pair(run.first * cluster_size_, run.second);
    }
    return make_error(ErrorCode::limit_exceeded,
                      "cannot find " + std::to_string(n) + " contiguous free clusters between refcount blocks");
}

Result<uint64_t> Qcow2Device::alloc_clusters(uint64_t n) {
    VDISK_ASSIGN(auto run, alloc_some(n, true));
    return run.first;
}

Status Qcow2Device::free_clusters(uint64_t first, uint64_t n) {
    for (uint64_t c = first; c < first + n; ++c) {
        VDISK_ASSIGN(uint64_t rc, get_refcount(c));
        if (rc == 0)
            return make_error(ErrorCode::corrupt,
                              "refcount of cluster " + hex(c * cluster_size_) + " is already 0 when freeing it")
                .at(c * cluster_size_);
        VDISK_TRY(set_refcount(c, rc - 1));
        if (rc == 1) {
            free_hint_ = std::min(free_hint_, c);
            if (compressed_cursor_ && compressed_cursor_ / cluster_size_ == c) compressed_cursor_ = 0;
        }
    }
    return ok();
}

// Refcount blocks and refcount table clusters needed to count `clusters` clusters plus themselves: iterate to the
// fixed point (the refcount structures count themselves too).
std::pair<uint64_t, uint64_t> refcount_metadata(uint64_t clusters, uint64_t cs, uint32_t refcount_order) {
    const uint64_t per_block = cs * 8 >> refcount_order, per_table_cluster = cs / 8;
    uint64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = util::div_round_up(clusters + table + blocks, per_block);
        table = util::div_round_up(blocks, per_table_cluster);
        n = clusters + blocks + table;
    } while (n != last);
    return {blocks, table};
}

namespace {
// Write the refcounts `rc` as `nb` blocks of width 2^order from cluster `at` on and the table naming them
// right behind them; returns the table.
Result<std::vector<uint64_t>> write_refcount_structures(File& f, const std::vector<uint64_t>& rc, uint32_t order,
                                                        uint64_t at, uint64_t nb, uint64_t nt, uint64_t cs) {
    const uint64_t epb = (cs * 8) >> order;
    std::vector<uint8_t> blk(static_cast<size_t>(cs));
    for (uint64_t r = 0; r < nb; ++r) {
        std::fill(blk.begin(), blk.end(), 0);
        for (uint64_t i = 0; i < epb && r * epb + i < rc.size(); ++i)
            if (rc[r * epb + i]) set_refcount_entry(blk.data(), i, order, rc[r * epb + i]);
        VDISK_TRY(f.write_at((at + r) * cs, blk));
    }
    std::vector<uint64_t> table(static_cast<size_t>(nt * cs / 8), 0);
    std::vector<uint8_t> raw(static_cast<size_t>(nt * cs), 0);
    for (uint64_t r = 0; r < nb; ++r) {
        table[r] = (at + r) * cs;
        util::store_be<uint64_t>(&raw[r * 8], table[r]);
    }
    VDISK_TRY(f.write_at((at + nb) * cs, raw));
    return table;
}
}  // namespace

// Every refcount of the file's `clusters` clusters, those of the current refcount structures set to 0,
// checked to fit width 2^order.
Result<std::vector<uint64_t>> Qcow2Device::refcounts_for(uint32_t order, uint64_t clusters) {
    const uint64_t cs = cluster_size_;
    std::vector<uint64_t> rc(static_cast<size_t>(clusters));
    for (uint64_t c = 0; c < clusters; ++c) {
        VDISK_ASSIGN(rc[c], get_refcount(c));
    }
    auto drop = [&](uint64_t off) {
        if (off / cs < clusters) rc[off / cs] = 0;
    };
    for (uint64_t i = 0; i < h_.rt_clusters; ++i) drop(h_.rt_offset + i * cs);
    for (uint64_t e : rt_)
        if (e & ~uint64_t(511)) drop(e & ~uint64_t(511));
    const uint64_t max = order == 6 ? UINT64_MAX : (uint64_t(1) << (1u << order)) - 1;
    for (uint64_t c = 0; c < clusters; ++c)
        if (rc[c] > max)
            return make_error(ErrorCode::invalid_argument, "cannot make refcounts " + std::to_string(1u << order) +
                                                               " bits wide: the cluster at " + hex(c * cs) +
                                                               " has a refcount of " + std::to_string(rc[c]));
    return rc;
}

// amend refcount_bits: every refcount is read into memory, checked against the new width, and written into
// new refcount blocks and a new table after the end of the file, which count themselves (sized by
// iterating until blocks, table and the clusters they cover agree). The old blocks and table get refcount 0
// in the new structures. Only then does the header switch (table offset, clusters and refcount_order in one
// write), so a crash before it leaves the old structures in charge and at worst leaks the new ones.
Status Qcow2Device::change_refcount_order(uint32_t order) {
    if (order == h_.refcount_order) return ok();
    VDISK_TRY(ensure_refcount_table());
    const uint64_t cs = cluster_size_;
    const uint64_t clusters = util::div_round_up(file_size_, cs);
    if (clusters * 8 > limits_.max_metadata_bytes)
        return make_error(ErrorCode::limit_exceeded, "converting the refcounts of " + std::to_string(clusters) +
                                                         " clusters exceeds the metadata limit");
    VDISK_ASSIGN(Charge held, Charge::make(budget(), clusters * 8, "refcount conversion"));
    VDISK_TRY(budget()->work(clusters, "refcount conversion"));
    VDISK_ASSIGN(std::vector<uint64_t> rc, refcounts_for(order, clusters));
    const auto [nb, nt] = refcount_metadata(clusters, cs, order);
    if (nt * cs > limits_.max_metadata_bytes || nt > UINT32_MAX)
        return make_error(ErrorCode::limit_exceeded, "the new refcount table exceeds the metadata limit");
    rc.resize(static_cast<size_t>(clusters + nb + nt), 1);  // the new blocks and table count themselves
    VDISK_TRY(held.resize(rc.size() * 8, "refcount conversion"));
    VDISK_ASSIGN(std::vector<uint64_t> table, write_refcount_structures(*file_, rc, order, clusters, nb, nt, cs));
    const uint64_t table_off = (clusters + nb) * cs;
    VDISK_TRY(file_->sync());
    // Header bytes 48..100: refcount table offset and clusters, then (at 96) refcount_order, in one write.
    std::vector<uint8_t> hdr(52);
    VDISK_TRY(read_exact(*file_, kOffRefcountTable, hdr, "qcow2 header"));
    util::store_be<uint64_t>(&hdr[0], table_off);
    util::store_be<uint32_t>(&hdr[8], static_cast<uint32_t>(nt));
    util::store_be<uint32_t>(&hdr[96 - kOffRefcountTable], order);
    VDISK_TRY(write_header_field(kOffRefcountTable, hdr));
    VDISK_TRY(file_->sync());
    h_.refcount_order = order;
    h_.rt_offset = table_off;
    h_.rt_clusters = static_cast<uint32_t>(nt);
    VDISK_TRY(rt_charge_.resize(table.size() * 8, "refcount table"));
    rt_ = std::move(table);
    rb_cache_.clear();
    file_size_ = table_off + nt * cs;
    free_hint_ = 0;
    return ok();
}

Status Qcow2Device::write_header_field(uint64_t off, std::span<const uint8_t> bytes) {
    return file_->write_at(off, bytes);
}

}  // namespace vdisk::qcow2
