// SPDX-License-Identifier: Apache-2.0
// VMDK consistency check: grain tables and grains inside the file, no overlaps with metadata or each other,
// grain directory and its redundant copy in agreement. The state kept is sized by the file (a bitmap of
// its sectors), not by the number of references: a hostile directory can name one grain millions of times.
#include <algorithm>

#include "util/checked.hpp"
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {
namespace {

// The check of one sparse extent.
struct ExtentCheck {
    const DiskExtent& e;
    CheckResult& r;
    const std::shared_ptr<Budget>& budget;
    uint64_t gtb = e.gtes_per_gt * (e.kind == StoreKind::sesparse ? 8 : 4);  // bytes of one grain table
    std::vector<std::pair<uint64_t, uint64_t>> meta{};  // metadata a grain must not overlap: {offset, length}
    Charge meta_charge{};
    std::vector<uint64_t> used{};  // one bit per sector of the file: which sectors some grain already holds
    Charge used_charge{};
    bool track = false;

    // Past the message cap problems are counted, not formatted.
    template <typename Make>
    void problem(Make&& make) {
        ++r.corruptions;
        if (r.messages.size() < max_check_messages) r.messages.push_back("extent '" + e.name + "': " + make());
        else ++r.messages_dropped;
    }

    // The header, the embedded descriptor, both directories and every grain table they name, sorted; a table
    // outside the file is a problem, metadata overlapping metadata another.
    Status collect_metadata() {
        VDISK_ASSIGN(meta_charge,
                     Charge::make(budget, 16 * (3 + e.gd.size() + e.rgd.size()), "check: metadata ranges"));
        meta.emplace_back(0, kSector);
        const SparseExtentHeader& h = e.header;
        if (e.kind == StoreKind::hosted && h.descriptor_offset.value() && h.descriptor_size.value() < (1ull << 40))
            meta.emplace_back(h.descriptor_offset.value() * kSector, h.descriptor_size.value() * kSector);
        if (e.kind != StoreKind::sesparse) {
            meta.emplace_back(e.gd_offset, e.gd.size() * 4);
            if (!e.rgd.empty()) meta.emplace_back(e.rgd_offset, e.rgd.size() * 4);
            VDISK_TRY(budget->work(e.gd.size() + e.rgd.size(), "check: grain directory"));
            for (auto* dir : {&e.gd, &e.rgd})
                for (size_t i = 0; i < dir->size(); ++i) {
                    uint64_t v = (*dir)[i];
                    if (!v) continue;
                    if (!util::range_within(v * kSector, gtb, e.file_size))
                        problem([&] {
                            return "grain table " + std::to_string(i) + " at " + hex(v * kSector) +
                                   " lies past the end of the file";
                        });
                    else meta.emplace_back(v * kSector, gtb);
                }
        }
        std::sort(meta.begin(), meta.end());
        for (size_t i = 1; i < meta.size(); ++i)
            if (meta[i].first < meta[i - 1].first + meta[i - 1].second)
                problem([&] {
                    return "metadata at " + hex(meta[i].first) + " overlaps metadata at " + hex(meta[i - 1].first);
                });
        return ok();
    }

    // The grain directory and its redundant copy name tables in the same places, and the tables agree.
    Status compare_redundant() {
        if (e.rgd.empty()) return ok();
        std::vector<uint8_t> a(gtb), b(gtb);
        for (size_t i = 0; i < e.gd.size(); ++i) {
            if ((e.gd[i] == 0) != (e.rgd[i] == 0)) {
                problem([&] {
                    return "grain directory and redundant grain directory disagree at entry " + std::to_string(i);
                });
                continue;
            }
            if (!e.gd[i] || !util::range_within(e.gd[i] * kSector, gtb, e.file_size) ||
                !util::range_within(e.rgd[i] * kSector, gtb, e.file_size))
                continue;
            VDISK_TRY(budget->work(2 * e.gtes_per_gt, "check: redundant grain tables"));
            VDISK_TRY(read_exact(*e.file, e.gd[i] * kSector, a, "grain table"));
            VDISK_TRY(read_exact(*e.file, e.rgd[i] * kSector, b, "redundant grain table"));
            if (a != b)
                problem([&] { return "grain table " + std::to_string(i) + " differs from its redundant copy"; });
        }
        return ok();
    }

    // The sector bitmap, when the budget has room for it (a check error otherwise: overlaps go unchecked).
    void start_tracking() {
        uint64_t words = util::div_round_up(util::div_round_up(e.file_size, kSector), 64);
        if (auto c = Charge::make(budget, words * 8, "check: grain map")) {
            used_charge = std::move(*c);
            used.assign(static_cast<size_t>(words), 0);
            track = true;
        } else {
            ++r.check_errors;
            r.messages.push_back("extent '" + e.name + "': the file is too large to check grains for overlaps");
        }
    }

    // Marks sectors [first, last) and says whether any of them was marked before.
    bool mark(uint64_t first, uint64_t last) {
        bool seen = false;
        for (uint64_t s = first; s < last;) {
            uint64_t w = s / 64, b = s % 64, n = std::min<uint64_t>(64 - b, last - s);
            uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << b;
            if (used[w] & mask) seen = true;
            used[w] |= mask;
            s += n;
        }
        return seen;
    }

    // An uncompressed grain at `host`: inside the file, outside the metadata, overlapping no other grain.
    void place_grain(uint64_t gi, uint64_t host) {
        auto at = [&] { return "grain " + std::to_string(gi) + " at " + hex(host); };
        if (host + e.grain > e.file_size && host + e.grain - e.file_size >= e.grain)
            problem([&] { return at() + " lies past the end of the file"; });
        if (e.kind == StoreKind::hosted && host < e.overhead)
            problem([&] { return at() + " lies inside the metadata area (overhead " + hex(e.overhead) + ")"; });
        auto it = std::upper_bound(meta.begin(), meta.end(), std::make_pair(host, UINT64_MAX));
        if (it != meta.begin() && host < std::prev(it)->first + std::prev(it)->second)
            problem([&] { return at() + " overlaps metadata at " + hex(std::prev(it)->first); });
        if (it != meta.end() && host + e.grain > it->first)
            problem([&] { return at() + " overlaps metadata at " + hex(it->first); });
        const uint64_t file_sectors = util::div_round_up(e.file_size, kSector);
        if (track && host / kSector < file_sectors &&
            mark(host / kSector, std::min(file_sectors, util::div_round_up(host + e.grain, kSector))))
            problem([&] { return at() + " overlaps another grain"; });
    }

    // Grains 0..grains-1 through `lookup` (the device's, through its table cache): allocated ones counted in
    // the result, uncompressed ones placed.
    template <typename Lookup>
    Status walk_grains(uint64_t grains, Lookup&& lookup) {
        for (uint64_t gi = 0; gi < grains; ++gi) {
            if (gi % e.gtes_per_gt == 0) {
                // A directory entry of zero is a whole table of unallocated grains: skip it in one step.
                uint64_t gt = gi / e.gtes_per_gt;
                VDISK_TRY(budget->work(1, "check: grain tables"));
                if (gt < e.gd.size() && e.gd[gt] == 0) {
                    gi += e.gtes_per_gt - 1;
                    continue;
                }
                VDISK_TRY(budget->work(e.gtes_per_gt, "check: grain tables"));
            }
            auto g = lookup(gi);
            if (!g) {
                problem([&] { return g.error().message; });
                // Skip the rest of a grain table that cannot be read.
                gi = (gi / e.gtes_per_gt + 1) * e.gtes_per_gt - 1;
                continue;
            }
            if (g->kind == GrainState::unallocated || g->kind == GrainState::zero) continue;
            ++*r.allocated_clusters;
            if (g->kind == GrainState::compressed) ++*r.compressed_clusters;
            else place_grain(gi, g->host);
        }
        return ok();
    }
};

}  // namespace

Result<CheckResult> VmdkDevice::do_check(RepairMode) {
    CheckResult r;
    r.total_clusters = r.allocated_clusters = r.compressed_clusters = 0;
    for (size_t ei = 0; ei < extents_.size(); ++ei) {
        const DiskExtent& e = extents_[ei];
        if (e.kind == StoreKind::flat || e.kind == StoreKind::zero) continue;
        ExtentCheck c{e, r, budget()};
        VDISK_TRY(c.collect_metadata());
        VDISK_TRY(c.compare_redundant());
        c.start_tracking();
        uint64_t grains = util::div_round_up(std::min(e.length, e.capacity ? e.capacity : e.length), e.grain);
        *r.total_clusters += grains;
        VDISK_TRY(c.walk_grains(grains, [&](uint64_t gi) { return lookup(ei, gi); }));
        if (e.file == files_.front().get() || ei + 1 == extents_.size()) r.image_end_offset = e.file_size;
    }
    return r;
}

}  // namespace vdisk::vmdk
