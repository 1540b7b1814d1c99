// VMDK consistency check: grain tables and grains inside the file, no overlaps with metadata or each other,
// grain directory and its redundant copy in agreement.
#include <algorithm>

#include "util/checked.hpp"
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {

Result<CheckResult> check_vmdk(BlockDevice& device) {
    auto* dev = dynamic_cast<VmdkDevice*>(&device);
    if (!dev) return make_error(ErrorCode::invalid_argument, "not a vmdk device");
    CheckResult r;
    uint64_t total = 0, allocated = 0, compressed = 0;
    auto& exts = dev->extents();
    for (size_t ei = 0; ei < exts.size(); ++ei) {
        DiskExtent& e = exts[ei];
        if (e.kind == StoreKind::flat || e.kind == StoreKind::zero) continue;
        auto problem = [&](std::string msg) {
            ++r.corruptions;
            r.messages.push_back("extent '" + e.name + "': " + std::move(msg));
        };
        // Metadata ranges a grain must not overlap.
        std::vector<std::pair<uint64_t, uint64_t>> meta;
        meta.emplace_back(0, kSector);
        if (e.kind == StoreKind::hosted && e.header.descriptor_offset.value() && e.header.descriptor_size.value() < (1ull << 40))
            meta.emplace_back(e.header.descriptor_offset.value() * kSector, e.header.descriptor_size.value() * kSector);
        uint64_t gtb = e.gtes_per_gt * (e.kind == StoreKind::sesparse ? 8 : 4);
        if (e.kind != StoreKind::sesparse) {
            meta.emplace_back(e.gd_offset, e.gd.size() * 4);
            if (!e.rgd.empty()) meta.emplace_back(e.rgd_offset, e.rgd.size() * 4);
            for (auto* dir : {&e.gd, &e.rgd})
                for (size_t i = 0; i < dir->size(); ++i) {
                    uint64_t v = (*dir)[i];
                    if (!v) continue;
                    if (!util::range_within(v * kSector, gtb, e.file_size))
                        problem("grain table " + std::to_string(i) + " at " + hex(v * kSector) +
                                " lies past the end of the file");
                    else
                        meta.emplace_back(v * kSector, gtb);
                }
        }
        std::sort(meta.begin(), meta.end());
        for (size_t i = 1; i < meta.size(); ++i)
            if (meta[i].first < meta[i - 1].first + meta[i - 1].second)
                problem("metadata at " + hex(meta[i].first) + " overlaps metadata at " + hex(meta[i - 1].first));
        if (!e.rgd.empty()) {
            for (size_t i = 0; i < e.gd.size(); ++i) {
                if ((e.gd[i] == 0) != (e.rgd[i] == 0)) {
                    problem("grain directory and redundant grain directory disagree at entry " + std::to_string(i));
                    continue;
                }
                if (!e.gd[i] || !util::range_within(e.gd[i] * kSector, gtb, e.file_size) ||
                    !util::range_within(e.rgd[i] * kSector, gtb, e.file_size))
                    continue;
                std::vector<uint8_t> a(gtb), b(gtb);
                VDISK_TRY(read_exact(*e.file, e.gd[i] * kSector, a, "grain table"));
                VDISK_TRY(read_exact(*e.file, e.rgd[i] * kSector, b, "redundant grain table"));
                if (a != b) problem("grain table " + std::to_string(i) + " differs from its redundant copy");
            }
        }
        std::vector<uint64_t> hosts;
        uint64_t grains = util::div_round_up(std::min(e.length, e.capacity ? e.capacity : e.length), e.grain);
        total += grains;
        bool track = true;
        for (uint64_t gi = 0; gi < grains; ++gi) {
            auto g = dev->lookup(ei, gi);
            if (!g) {
                problem(g.error().message);
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
                problem("grain " + std::to_string(gi) + " at " + hex(g->host) + " lies past the end of the file");
            if (e.kind == StoreKind::hosted && g->host < e.overhead)
                problem("grain " + std::to_string(gi) + " at " + hex(g->host) + " lies inside the metadata area (overhead " +
                        hex(e.overhead) + ")");
            auto it = std::upper_bound(meta.begin(), meta.end(), std::make_pair(g->host, UINT64_MAX));
            if (it != meta.begin()) {
                auto& m = *std::prev(it);
                if (g->host < m.first + m.second)
                    problem("grain " + std::to_string(gi) + " at " + hex(g->host) + " overlaps metadata at " + hex(m.first));
            }
            if (it != meta.end() && g->host + e.grain > it->first)
                problem("grain " + std::to_string(gi) + " at " + hex(g->host) + " overlaps metadata at " + hex(it->first));
            if (track) {
                if ((hosts.size() + 1) * 8 > 256ull << 20) {
                    track = false;
                    ++r.check_errors;
                    r.messages.push_back("too many grains to check for overlaps");
                } else {
                    hosts.push_back(g->host);
                }
            }
        }
        std::sort(hosts.begin(), hosts.end());
        for (size_t i = 1; i < hosts.size(); ++i)
            if (hosts[i] < hosts[i - 1] + e.grain)
                problem("grains at " + hex(hosts[i - 1]) + " and " + hex(hosts[i]) + " overlap");
        if (e.file == dev->files().front() || ei + 1 == exts.size()) r.image_end_offset = e.file_size;
    }
    r.total_clusters = total;
    r.allocated_clusters = allocated;
    r.compressed_clusters = compressed;
    return r;
}

}  // namespace vdisk::vmdk
