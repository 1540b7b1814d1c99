// SPDX-License-Identifier: Apache-2.0
// Resizing a VMDK. A disk whose last extent is FLAT (monolithicFlat, twoGbMaxExtentFlat's last piece) grows or
// shrinks within that extent: the flat file changes length and the descriptor file is rewritten with the new
// extent size and cylinder count.
//
// Growing a hosted sparse VMDK (monolithicSparse, the last extent of twoGbMaxExtentSparse, vmfsSparse-less
// hosted layouts): the last extent's capacity grows, its grain directory gets entries for the new grain
// tables (in place while its last sector has room, else a new directory, and redundant directory, at the end
// of the file), the new grain tables are laid out zeroed at the end of the file as VMware preallocates them,
// and the header and descriptor say the new size. Nothing existing moves, so the grains stay where they are.
//
// Order for a crash: the new tables and directories are written first (unreferenced until the header
// changes), then the header (capacity and directory offsets), then the descriptor; an interrupted grow
// leaves the old size readable.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {
namespace {

constexpr uint64_t kTwoGb = 2ull << 30;

Status write_dir_entries(File& f, uint64_t dir_offset, const std::vector<uint64_t>& dir, size_t from) {
    if (from >= dir.size()) return ok();
    std::vector<uint8_t> raw((dir.size() - from) * 4);
    for (size_t i = from; i < dir.size(); ++i)
        util::store_le<uint32_t>(raw.data() + (i - from) * 4, static_cast<uint32_t>(dir[i]));
    return f.write_at(dir_offset + from * 4, raw);
}

// `d` for a disk of `new_size` bytes whose last extent is `len` bytes: that extent line and the cylinder count.
Descriptor resized(Descriptor d, uint64_t len, uint64_t new_size) {
    d.extents.back().sectors = len / kSector;
    for (auto& [k, v] : d.ddb)
        if (k == "ddb.geometry.cylinders") {
            const std::string* heads = d.ddb_value("ddb.geometry.heads");
            const std::string* spt = d.ddb_value("ddb.geometry.sectors");
            uint64_t hd = heads ? std::strtoull(heads->c_str(), nullptr, 10) : 16;
            uint64_t s = spt ? std::strtoull(spt->c_str(), nullptr, 10) : 63;
            // Hostile geometry values must not overflow into a division by zero.
            auto per_cyl = util::mul<uint64_t>(hd, s);
            if (per_cyl && *per_cyl && util::mul<uint64_t>(*per_cyl, kSector))
                v = std::to_string(new_size / (*per_cyl * kSector));  // unclamped, as create writes it
        }
    return d;
}

// Where a grow puts the new grain tables (and their redundant copies) at the end of the file, then the
// directories when they outgrow their sectors.
struct GrowPlan {
    std::vector<uint64_t> gd, rgd;        // with entries for the new tables
    uint64_t gd_offset, rgd_offset, end;  // the directories' offsets, the file end after everything placed
    bool move = false;                    // the directories are written whole at new offsets
};

Result<GrowPlan> plan_grow(const DiskExtent& e, uint64_t new_gts) {
    const bool redundant = !e.rgd.empty();
    const uint64_t gtsz = util::div_round_up(e.gtes_per_gt * 4, kSector) * kSector;
    GrowPlan p{e.gd, e.rgd, e.gd_offset, e.rgd_offset, *util::align_up(e.file_size, kSector)};
    auto place = [&](uint64_t bytes) -> Result<uint64_t> {
        uint64_t here = p.end;
        auto next = util::add<uint64_t>(p.end, *util::align_up(bytes, kSector));
        if (!next || *next / kSector > 0xffffffffull)
            return make_error(ErrorCode::limit_exceeded, "extent '" + e.name + "' cannot grow past 2 TiB of file");
        p.end = *next;
        return here;
    };
    for (uint64_t i = e.gd.size(); i < new_gts; ++i) {
        VDISK_ASSIGN(uint64_t g, place(gtsz));
        p.gd.push_back(g / kSector);
        if (redundant) {
            VDISK_ASSIGN(uint64_t r, place(gtsz));
            p.rgd.push_back(r / kSector);
        }
    }
    // A directory keeps its place while the new entries fit in the sectors it already has.
    p.move = new_gts * 4 > util::div_round_up(e.gd.size() * 4, kSector) * kSector;
    if (p.move) {
        VDISK_ASSIGN(p.gd_offset, place(new_gts * 4));
        if (redundant) {
            VDISK_ASSIGN(p.rgd_offset, place(new_gts * 4));
        }
    }
    return p;
}

// The planned tables and directories, then the header pointing at them (returned, as written).
Result<SparseExtentHeader> write_grow(const DiskExtent& e, const GrowPlan& p, uint64_t len) {
    const bool redundant = !e.rgd.empty();
    const size_t from = p.move ? 0 : e.gd.size();
    // New tables read as zeros (every grain unallocated): the extended file is a hole there.
    if (p.end > e.file_size) VDISK_TRY(e.file->resize(p.end));
    VDISK_TRY(write_dir_entries(*e.file, p.gd_offset, p.gd, from));
    if (redundant) VDISK_TRY(write_dir_entries(*e.file, p.rgd_offset, p.rgd, from));
    VDISK_TRY(e.file->sync());

    SparseExtentHeader h = e.header;
    h.capacity = len / kSector;
    h.gd_offset = p.gd_offset / kSector;
    if (redundant) h.rgd_offset = p.rgd_offset / kSector;
    VDISK_TRY(e.file->write_at(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&h), sizeof h)));
    return h;
}

}  // namespace

Status VmdkDevice::do_resize(uint64_t new_size) {
    if (!extents_.empty() && extents_.back().kind == StoreKind::hosted && extents_.back().type == ExtentType::sparse)
        return grow_sparse(new_size);
    if (extents_.empty() || extents_.back().kind != StoreKind::flat || !desc_file_ || desc_room_ != 0 ||
        desc_.extents.size() != extents_.size())
        return make_error(ErrorCode::unsupported,
                          "resizing VMDK images is supported for flat extents with a descriptor file only");
    if (new_size % kSector)
        return make_error(ErrorCode::invalid_argument, "VMDK sizes are whole sectors, not " + std::to_string(new_size));
    DiskExtent& e = extents_.back();
    if (new_size <= e.start)
        return make_error(ErrorCode::unsupported, "shrinking a VMDK below its last extent is not supported");
    const uint64_t len = new_size - e.start;
    VDISK_TRY(e.file->resize(e.flat_offset + len));
    e.length = len;
    e.file_size = e.flat_offset + len;
    Descriptor d = resized(desc_, len, new_size);
    VDISK_TRY(write_descriptor(d));
    desc_ = std::move(d);
    set_size(new_size);
    for (auto& f : files_) VDISK_TRY(f->sync());
    return ok();
}

Status VmdkDevice::grow_sparse(uint64_t new_size) {
    DiskExtent& e = extents_.back();
    if (e.compressed || e.markers)
        return make_error(ErrorCode::unsupported,
                          "resizing a streamOptimized VMDK is not supported (its grain "
                          "directory is written once, at the end of the stream)");
    if (!desc_file_ || desc_.extents.size() != extents_.size())
        return make_error(ErrorCode::unsupported, "resizing this VMDK is not supported (no descriptor to rewrite)");
    if (new_size % kSector)
        return make_error(ErrorCode::invalid_argument, "VMDK sizes are whole sectors, not " + std::to_string(new_size));
    if (new_size < size())
        return make_error(ErrorCode::unsupported,
                          "shrinking a sparse VMDK is not supported: vdisk grows sparse extents only (convert to a "
                          "smaller flat or new image instead)");
    if (new_size == size()) return ok();
    const uint64_t len = new_size - e.start;
    if (desc_.create_type == "twoGbMaxExtentSparse" && len > kTwoGb)
        return make_error(ErrorCode::unsupported,
                          "growing the last extent of a twoGbMaxExtentSparse VMDK past 2 GiB "
                          "(to " +
                              std::to_string(len) + " bytes) is not supported");
    if (len / kSector > 0xffffffffull * (e.grain / kSector))
        return make_error(ErrorCode::invalid_argument, "a sparse VMDK extent cannot address " + std::to_string(len) +
                                                           " bytes with " + std::to_string(e.grain) + "-byte grains");
    VDISK_TRY(write_back_gt());

    const uint64_t new_gts = util::div_round_up(len, e.grain * e.gtes_per_gt);
    if (new_gts * 4 * (e.rgd.empty() ? 1 : 2) > limits_.max_metadata_bytes)
        return make_error(ErrorCode::limit_exceeded,
                          "a grain directory of " + std::to_string(new_gts) + " entries exceeds the metadata limit");
    VDISK_ASSIGN(GrowPlan p, plan_grow(e, new_gts));
    VDISK_TRY(e.charge.resize((p.gd.size() + p.rgd.size()) * sizeof(uint64_t), "grain directory"));
    VDISK_ASSIGN(SparseExtentHeader h, write_grow(e, p, len));
    Descriptor d = resized(desc_, len, new_size);
    VDISK_TRY(write_descriptor(d));
    for (auto& f : files_) VDISK_TRY(f->sync());

    e.header = h;
    e.gd = std::move(p.gd);
    e.rgd = std::move(p.rgd);
    e.gd_offset = p.gd_offset;
    e.rgd_offset = p.rgd_offset;
    e.capacity = len;
    e.length = len;
    e.file_size = std::max(e.file_size, p.end);
    desc_ = std::move(d);
    set_size(new_size);
    return ok();
}

}  // namespace vdisk::vmdk
