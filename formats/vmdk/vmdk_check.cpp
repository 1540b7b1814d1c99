// SPDX-License-Identifier: Apache-2.0
// VMDK consistency check: grain tables and grains inside the file, no overlaps with metadata or each other,
// grain directory and its redundant copy in agreement. The state kept is sized by the file (a bitmap of
// its sectors), not by the number of references: a hostile directory can name one grain millions of times.
#include <algorithm>

#include "util/checked.hpp"
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {

Result<CheckResult> check_vmdk(BlockDevice& device) {
    auto* dev = dynamic_cast<VmdkDevice*>(&device);
    if (!dev) return make_error(ErrorCode::invalid_argument, "not a vmdk device");
    Budget& budget = *device.budget();
    CheckResult r;
    uint64_t total = 0, allocated = 0, compressed = 0;
    auto& exts = dev->extents();
    for (size_t ei = 0; ei < exts.size(); ++ei) {
        DiskExtent& e = exts[ei];
        if (e.kind == StoreKind::flat || e.kind == StoreKind::zero) continue;
        // Past the message cap problems are counted, not formatted.
        auto problem = [&](auto&& make) {
            ++r.corruptions;
            if (r.messages.size() < max_check_messages) r.messages.push_back("extent '" + e.name + "': " + make());
            else ++r.messages_dropped;
        };
        // Metadata ranges a grain must not overlap.
        std::vector<std::pair<uint64_t, uint64_t>> meta;
        uint64_t gtb = e.gtes_per_gt * (e.kind == StoreKind::sesparse ? 8 : 4);
        VDISK_ASSIGN(Charge meta_charge, Charge::make(device.budget(), 16 * (3 + e.gd.size() + e.rgd.size()),
                                                      "check: metadata ranges"));
        meta.emplace_back(0, kSector);
        if (e.kind == StoreKind::hosted && e.header.descriptor_offset.value() && e.header.descriptor_size.value() < (1ull << 40))
            meta.emplace_back(e.header.descriptor_offset.value() * kSector, e.header.descriptor_size.value() * kSector);
        if (e.kind != StoreKind::sesparse) {
            meta.emplace_back(e.gd_offset, e.gd.size() * 4);
            if (!e.rgd.empty()) meta.emplace_back(e.rgd_offset, e.rgd.size() * 4);
            VDISK_TRY(budget.work(e.gd.size() + e.rgd.size(), "check: grain directory"));
            for (auto* dir : {&e.gd, &e.rgd})
                for (size_t i = 0; i < dir->size(); ++i) {
                    uint64_t v = (*dir)[i];
                    if (!v) continue;
                    if (!util::range_within(v * kSector, gtb, e.file_size))
                        problem([&] { return "grain table " + std::to_string(i) + " at " + hex(v * kSector) +
                                             " lies past the end of the file"; });
                    else
                        meta.emplace_back(v * kSector, gtb);
                }
        }
        std::sort(meta.begin(), meta.end());
        for (size_t i = 1; i < meta.size(); ++i)
            if (meta[i].first < meta[i - 1].first + meta[i - 1].second)
                problem([&] { return "metadata at " + hex(meta[i].first) + " overlaps metadata at " + hex(meta[i - 1].first); });
        if (!e.rgd.empty()) {
            std::vector<uint8_t> a(gtb), b(gtb);
            for (size_t i = 0; i < e.gd.size(); ++i) {
                if ((e.gd[i] == 0) != (e.rgd[i] == 0)) {
                    problem([&] { return "grain directory and redundant grain directory disagree at entry " + std::to_string(i); });
                    continue;
                }
                if (!e.gd[i] || !util::range_within(e.gd[i] * kSector, gtb, e.file_size) ||
                    !util::range_within(e.rgd[i] * kSector, gtb, e.file_size))
                    continue;
                VDISK_TRY(budget.work(2 * e.gtes_per_gt, "check: redundant grain tables"));
                VDISK_TRY(read_exact(*e.file, e.gd[i] * kSector, a, "grain table"));
                VDISK_TRY(read_exact(*e.file, e.rgd[i] * kSector, b, "redundant grain table"));
                if (a != b) problem([&] { return "grain table " + std::to_string(i) + " differs from its redundant copy"; });
            }
        }
        // One bit per sector of the file: which sectors some grain already holds.
        uint64_t file_sectors = util::div_round_up(e.file_size, kSector);
        std::vector<uint64_t> used;
        Charge used_charge;
        bool track = true;
        if (auto c = Charge::make(device.budget(), util::div_round_up(file_sectors, 64) * 8, "check: grain map")) {
            used_charge = std::move(*c);
            used.assign(static_cast<size_t>(util::div_round_up(file_sectors, 64)), 0);
        } else {
            track = false;
            ++r.check_errors;
            r.messages.push_back("extent '" + e.name + "': the file is too large to check grains for overlaps");
        }
        // Marks [first, last) and says whether any of it was marked before.
        auto mark = [&](uint64_t first, uint64_t last) {
            bool seen = false;
            for (uint64_t s = first; s < last;) {
                uint64_t w = s / 64, b = s % 64, n = std::min<uint64_t>(64 - b, last - s);
                uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << b;
                if (used[w] & mask) seen = true;
                used[w] |= mask;
                s += n;
            }
            return seen;
        };
        uint64_t grains = util::div_round_up(std::min(e.length, e.capacity ? e.capacity : e.length), e.grain);
        total += grains;
        for (uint64_t gi = 0; gi < grains; ++gi) {
            if (gi % e.gtes_per_gt == 0) {
                // A directory entry of zero is a whole table of unallocated grains: skip it in one step.
                uint64_t gt = gi / e.gtes_per_gt;
                VDISK_TRY(budget.work(1, "check: grain tables"));
                if (gt < e.gd.size() && e.gd[gt] == 0) {
                    gi += e.gtes_per_gt - 1;
                    continue;
                }
                VDISK_TRY(budget.work(e.gtes_per_gt, "check: grain tables"));
            }
            auto g = dev->lookup(ei, gi);
            if (!g) {
                problem([&] { return g.error().message; });
                // Skip the rest of a grain table that cannot be read.
                gi = (gi / e.gtes_per_gt + 1) * e.gtes_per_gt - 1;
                continue;
            }
            if (g->kind == GrainState::unallocated || g->kind == GrainState::zero) continue;
            ++allocated;
            if (g->kind == GrainState::compressed) {
                ++compressed;
                continue;
            }
            if (g->host + e.grain > e.file_size && g->host + e.grain - e.file_size >= e.grain)
                problem([&] { return "grain " + std::to_string(gi) + " at " + hex(g->host) + " lies past the end of the file"; });
            if (e.kind == StoreKind::hosted && g->host < e.overhead)
                problem([&] { return "grain " + std::to_string(gi) + " at " + hex(g->host) +
                                     " lies inside the metadata area (overhead " + hex(e.overhead) + ")"; });
            auto it = std::upper_bound(meta.begin(), meta.end(), std::make_pair(g->host, UINT64_MAX));
            if (it != meta.begin()) {
                auto& m = *std::prev(it);
                if (g->host < m.first + m.second)
                    problem([&] { return "grain " + std::to_string(gi) + " at " + hex(g->host) + " overlaps metadata at " +
                                         hex(m.first); });
            }
            if (it != meta.end() && g->host + e.grain > it->first)
                problem([&] { return "grain " + std::to_string(gi) + " at " + hex(g->host) + " overlaps metadata at " +
                                     hex(it->first); });
            if (track && g->host / kSector < file_sectors) {
                uint64_t first = g->host / kSector;
                uint64_t last = std::min(file_sectors, util::div_round_up(g->host + e.grain, kSector));
                if (mark(first, last))
                    problem([&] { return "grain " + std::to_string(gi) + " at " + hex(g->host) + " overlaps another grain"; });
            }
        }
        if (e.file == dev->files().front() || ei + 1 == exts.size()) r.image_end_offset = e.file_size;
    }
    r.total_clusters = total;
    r.allocated_clusters = allocated;
    r.compressed_clusters = compressed;
    return r;
}

}  // namespace vdisk::vmdk
