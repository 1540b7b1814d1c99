// SPDX-License-Identifier: Apache-2.0
// qcow2 consistency check: rebuild every refcount from the metadata (header, L1/L2 tables of the active
// layer and of each snapshot, snapshot table, refcount structures) and compare with the stored ones.
// Numbers follow `qemu-img check`: corruptions (stored refcount too low, bad pointers), leaks (stored
// refcount too high), image end offset and the allocation statistics of the active layer.
#include <algorithm>
#include <cstring>

#include "qcow2_internal.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"

namespace vdisk::qcow2 {

namespace {

struct Checker {
    Qcow2Device& dev;
    CheckResult res;
    std::vector<uint32_t> counts;  // rebuilt refcount per host cluster of the file
    uint64_t cs;
    uint64_t file_size;
    uint64_t next_contiguous = 0;
    // Clusters the active layer maps with COPIED set / clear: the flag must match "refcount == 1", checked
    // against the stored refcounts once they have been compared (and repaired). Bitmaps sized by the
    // file, not lists sized by the number of references (one cluster can be named a billion times).
    std::vector<uint64_t> copied_set, copied_clear;
    std::vector<uint64_t> walked_l1;  // offsets of the L1 tables walked so far
    Charge state;
    std::vector<bool> bad_block;  // per refcount table entry: the block it names is invalid

    static void mark(std::vector<uint64_t>& bits, uint64_t c) {
        if (c / 64 < bits.size()) bits[c / 64] |= 1ull << (c % 64);
    }
    static bool marked(const std::vector<uint64_t>& bits, uint64_t c) {
        return c / 64 < bits.size() && (bits[c / 64] >> (c % 64)) & 1;
    }

    // Messages past the cap are counted, not formatted: `make` is only called while there is room.
    template <typename F>
    void note(F&& make) {
        if (res.messages.size() < max_check_messages) res.messages.push_back(make());
        else ++res.messages_dropped;
    }
    template <typename F>
    void corruption(F&& make) {
        ++res.corruptions;
        note([&] { return "ERROR " + make(); });
    }
    // Count one reference to [off, off + len) (host bytes), reporting anything outside the file.
    void ref(uint64_t off, uint64_t len, const char* what) {
        if (len == 0) return;
        if (off >= file_size || !util::range_within(off, len, util::align_up(file_size, cs).value_or(file_size))) {
            corruption([&] {
                return std::string(what) + " at " + hex(off) + " lies past the end of the file (" + hex(file_size) +
                       ")";
            });
            return;
        }
        for (uint64_t c = off / cs; c <= (off + len - 1) / cs; ++c)
            if (counts[c] != UINT32_MAX) ++counts[c];
    }

    Status walk_l1(uint64_t l1_off, uint64_t l1_size, bool active) {
        if (!util::is_aligned(l1_off, cs) || !util::range_within(l1_off, l1_size * 8, file_size)) {
            corruption(
                [&] { return "L1 table at " + hex(l1_off) + " (" + std::to_string(l1_size) + " entries) is invalid"; });
            return ok();
        }
        const uint64_t cap = std::min(dev.limits().max_metadata_bytes, dev.limits().max_l1_bytes);
        if (l1_size * 8 > cap)
            return make_error(ErrorCode::limit_exceeded,
                              "L1 table at " + hex(l1_off) + " of " + std::to_string(l1_size) +
                                  " entries exceeds the L1 limit of " + std::to_string(cap) + " bytes");
        ref(l1_off, l1_size * 8, "L1 table");
        // Snapshots never share an L1 table (each has its own copy); one that names a table already walked
        // would only repeat that walk, so it is reported instead (the refcounts then disagree, too).
        if (l1_size && std::find(walked_l1.begin(), walked_l1.end(), l1_off) != walked_l1.end()) {
            corruption([&] { return "L1 table at " + hex(l1_off) + " is used by more than one snapshot"; });
            return ok();
        }
        if (l1_size) {
            VDISK_TRY(dev.budget()->charge(8, "check state"));
            walked_l1.push_back(l1_off);
        }
        VDISK_TRY(dev.budget()->work(l1_size, "check: L1 table"));
        VDISK_ASSIGN(Charge raw_charge, Charge::make(dev.budget(), l1_size * 8, "check: L1 table"));
        std::vector<uint8_t> raw(static_cast<size_t>(l1_size * 8));
        if (!raw.empty()) VDISK_TRY(read_exact(dev.main_file(), l1_off, raw, "L1 table"));
        for (uint64_t i = 0; i < l1_size; ++i) {
            uint64_t e = util::load_be<uint64_t>(&raw[i * 8]);
            uint64_t l2 = e & kOffsetMask;
            if (!l2) continue;
            if (!util::is_aligned(l2, cs) || !util::range_within(l2, cs, file_size)) {
                corruption([&] { return "L1 entry " + std::to_string(i) + " points to invalid L2 table " + hex(l2); });
                continue;
            }
            ref(l2, cs, "L2 table");
            // Snapshots may all share the same tables, and all entries of an L1 may name one table: the
            // budget bounds the total walk, not just each table.
            VDISK_TRY(dev.budget()->work(dev.l2_entries(), "check: L2 tables"));
            if (active) mark(e & kFlagCopied ? copied_set : copied_clear, l2 / cs);
            next_contiguous = 0;  // fragmentation is counted within each L2 table, as qemu-img does
            VDISK_ASSIGN(auto* t, dev.l2_table(l2));
            std::vector<uint8_t> table = *t;  // the cache may evict while refcounts are read below
            for (uint64_t j = 0; j < dev.l2_entries(); ++j) VDISK_TRY(check_l2_entry(table.data(), l2, j, active));
        }
        return ok();
    }

    Status check_l2_entry(const uint8_t* table, uint64_t l2, uint64_t j, bool active) {
        VDISK_ASSIGN(L2Entry e, dev.l2_entry_at(table, j));
        bool ext = (dev.header().incompat & kIncompatExtendedL2) != 0;
        uint64_t at = l2 + j * (ext ? 16 : 8);
        if (e.word & kFlagCompressed) {
            auto [first, last] = dev.compressed_span(e.word);
            if (first * cs >= file_size || last * cs >= util::align_up(file_size, cs).value_or(file_size)) {
                corruption([&] {
                    return "compressed cluster descriptor " + hex(e.word) + " at " + hex(at) +
                           " points past the end of the file";
                });
                return ok();
            }
            auto [coff, clen] = dev.compressed_bytes(e.word);
            ref(coff, clen, "compressed cluster");
            if (active) {
                ++*res.allocated_clusters;
                ++*res.compressed_clusters;
                ++*res.fragmented_clusters;
            }
            return ok();
        }
        uint64_t host = e.word & kOffsetMask;
        if (ext) {
            uint64_t alloc = e.bitmap & 0xffffffffull, zero = e.bitmap >> 32;
            if (alloc & zero)
                corruption([&] { return "extended L2 entry at " + hex(at) + " marks subclusters allocated and zero"; });
            if (alloc && !host)
                corruption(
                    [&] { return "extended L2 entry at " + hex(at) + " allocates subclusters without a cluster"; });
        }
        if (!host) return ok();
        if (!util::is_aligned(host, cs)) {
            corruption(
                [&] { return "L2 entry " + hex(e.word) + " at " + hex(at) + " has an unaligned cluster offset"; });
            return ok();
        }
        if (host >= file_size) {
            corruption([&] {
                return "L2 entry " + hex(e.word) + " at " + hex(at) + " points past the end of the file (" +
                       hex(file_size) + ")";
            });
            return ok();
        }
        ref(host, cs, "data cluster");
        if (active) {
            ++*res.allocated_clusters;
            if (next_contiguous && host != next_contiguous) ++*res.fragmented_clusters;
            next_contiguous = host + cs;
            mark(e.word & kFlagCopied ? copied_set : copied_clear, host / cs);
        }
        return ok();
    }

    // The rebuilt refcounts and the two COPIED bitmaps: sized by the file.
    Status size_state() {
        const uint64_t nclusters = util::div_round_up(file_size, cs), words = util::div_round_up(nclusters, 64);
        if (nclusters * sizeof(uint32_t) > dev.limits().max_metadata_bytes)
            return make_error(ErrorCode::limit_exceeded, "refcount rebuild for " + std::to_string(nclusters) +
                                                             " clusters exceeds the metadata limit");
        VDISK_ASSIGN(state, Charge::make(dev.budget(), nclusters * 4 + words * 16, "check: refcount rebuild"));
        counts.assign(static_cast<size_t>(nclusters), 0);
        copied_set.assign(static_cast<size_t>(words), 0);
        copied_clear.assign(static_cast<size_t>(words), 0);
        res.total_clusters = util::div_round_up(dev.header().size, cs);
        res.allocated_clusters = 0;
        res.fragmented_clusters = 0;
        res.compressed_clusters = 0;
        return ok();
    }

    // The header, the L1 tables of the active layer and of each snapshot, and the snapshot table.
    Status walk_layers() {
        const Header& h = dev.header();
        ref(0, cs, "header");
        VDISK_TRY(walk_l1(h.l1_offset, h.l1_size, true));
        for (auto& s : dev.snapshots()) VDISK_TRY(walk_l1(s.l1_offset, s.l1_size, false));
        if (dev.snapshots().empty()) return ok();
        // The table ends after the last entry; its size is recomputed from that entry.
        const Snapshot& last = dev.snapshots().back();
        uint8_t fixed[sizeof(SnapshotHeader)];
        VDISK_TRY(read_zero_fill(dev.main_file(), last.entry_offset, fixed));
        SnapshotHeader sh;
        std::memcpy(&sh, fixed, sizeof sh);
        const uint64_t last_bytes = (sizeof sh + sh.extra_data_size.value() + sh.id_str_size.value() +
                                     sh.name_size.value() + 7) &
                                    ~7ull;
        ref(h.snapshots_offset, last.entry_offset - h.snapshots_offset + last_bytes, "snapshot table");
        return ok();
    }

    // Count the refcount blocks; those that are not a cluster inside the file are reported, and the
    // refcounts they would hold are not read.
    void walk_refcount_blocks(const std::vector<uint64_t>& rt) {
        bad_block.assign(rt.size(), false);
        for (size_t i = 0; i < rt.size(); ++i) {
            uint64_t off = rt[i] & ~uint64_t(511);
            if (!off) continue;
            if (!util::is_aligned(off, cs) || !util::range_within(off, cs, file_size)) {
                corruption([&] { return "refcount block " + std::to_string(i) + " at " + hex(off) + " is invalid"; });
                bad_block[i] = true;
                continue;
            }
            ref(off, cs, "refcount block");
        }
    }
    bool readable(uint64_t c) const {
        const uint64_t r = c / ((cs * 8) >> dev.header().refcount_order);
        return r < bad_block.size() && !bad_block[r];
    }

    // Compare rebuilt and stored refcounts.
    Status compare_refcounts(RepairMode repair) {
        res.image_end_offset = cs;
        for (uint64_t c = 0; c < counts.size(); ++c) {
            uint64_t stored = 0;
            if (readable(c)) {
                VDISK_ASSIGN(stored, dev.get_refcount(c));
            }
            const uint64_t want = counts[c];
            if (stored || want) res.image_end_offset = (c + 1) * cs;
            if (stored != want) VDISK_TRY(mismatch(c, stored, want, repair));
        }
        return ok();
    }
    Status mismatch(uint64_t c, uint64_t stored, uint64_t want, RepairMode repair) {
        auto detail = [&] {
            return "cluster " + std::to_string(c) + " refcount=" + std::to_string(stored) +
                   " reference=" + std::to_string(want);
        };
        if (stored < want) {
            corruption(detail);
            if (repair != RepairMode::all || want > dev.refcount_max()) return ok();
            ++res.corruptions_fixed;
        } else {
            ++res.leaks;
            note([&] { return "Leaked " + detail(); });
            if (repair == RepairMode::none) return ok();
            ++res.leaks_fixed;
        }
        return dev.set_refcount(c, want);
    }

    // COPIED must match "refcount == 1" on the (repaired) stored refcounts.
    Status check_copied() {
        for (uint64_t c = 0; c < counts.size(); ++c) {
            bool set = marked(copied_set, c), clear = marked(copied_clear, c);
            if ((!set && !clear) || !readable(c)) continue;
            VDISK_ASSIGN(uint64_t rc, dev.get_refcount(c));
            if ((set && rc != 1) || (clear && rc == 1))
                corruption([&] {
                    return "OFLAG_COPIED cluster " + std::to_string(c) + ": an entry has COPIED " +
                           (set && rc != 1 ? "set" : "clear") + ", refcount=" + std::to_string(rc);
                });
        }
        return ok();
    }
};

}  // namespace

Result<CheckResult> check_image(Qcow2Device& dev, RepairMode repair) {
    const Header& h = dev.header();
    if (h.has_bitmaps_ext)
        return make_error(ErrorCode::unsupported, "checking images with persistent bitmaps is not supported");
    if (repair != RepairMode::none && dev.read_only())
        return make_error(ErrorCode::read_only, "repair needs the image opened read-write");
    Checker ck{dev, {}, {}, dev.cluster_size(), dev.file_size(), 0, {}, {}, {}, {}, {}};
    VDISK_TRY(ck.size_state());
    VDISK_TRY(ck.walk_layers());
    ck.ref(h.rt_offset, uint64_t(h.rt_clusters) * ck.cs, "refcount table");
    VDISK_ASSIGN(auto rt, dev.load_refcount_table_for_check());
    VDISK_ASSIGN(Charge rt_copy, Charge::make(dev.budget(), rt.size() * 9, "check: refcount table"));
    VDISK_TRY(dev.budget()->work(rt.size() + ck.counts.size(), "check: refcounts"));
    ck.walk_refcount_blocks(rt);
    VDISK_TRY(ck.compare_refcounts(repair));
    VDISK_TRY(ck.check_copied());
    if (ck.res.leaks_fixed || ck.res.corruptions_fixed) VDISK_TRY(dev.main_file().sync());
    if (repair == RepairMode::all && ck.res.corruptions == ck.res.corruptions_fixed) VDISK_TRY(dev.clear_dirty());
    return std::move(ck.res);
}

Result<CheckResult> Qcow2Device::do_check(RepairMode repair) { return check_image(*this, repair); }

}  // namespace vdisk::qcow2
