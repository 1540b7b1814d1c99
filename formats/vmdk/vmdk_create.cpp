// SPDX-License-Identifier: Apache-2.0
// VMDK create: every hosted subformat, descriptor and DDB as qemu-img writes them.
#include <algorithm>
#include <cstring>
#include <random>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {
namespace {

constexpr uint64_t kGrainSectors = 128;  // 64 KiB grains by default, as VMware and qemu-img write them
constexpr uint64_t kGtes = 512;
constexpr uint64_t kEmbeddedDescSectors = 20;
constexpr uint64_t kSplitBytes = 2ull << 30;  // split subformats: at most 2 GiB per extent

// What to create: the subformat and the options, checked by make_plan.
struct Plan {
    std::string subformat;
    bool split = false;
    bool flat = false;
    bool stream = false;
    bool zeroed_grain = false;
    std::string adapter;
    std::string hwversion;
    std::string tools;
    std::optional<std::string> backing;
    uint64_t grain_sectors = kGrainSectors;
    std::string prealloc = "off";  // flat extents: off, falloc or full
};

SparseExtentHeader base_header(uint64_t capacity_sectors, uint64_t grain_sectors) {
    SparseExtentHeader h;
    std::memset(&h, 0, sizeof h);
    h.magic = kSparseMagic;
    h.capacity = capacity_sectors;
    h.grain_size = grain_sectors;
    h.num_gtes_per_gt = kGtes;
    h.single_end_line_char = '\n';
    h.non_end_line_char = ' ';
    h.double_end_line_char1 = '\r';
    h.double_end_line_char2 = '\n';
    return h;
}

// Lay out a hosted sparse extent with every grain table preallocated (redundant copy first, as VMware does).
Result<DiskExtent> make_sparse(File& f, uint64_t capacity, const std::string* embedded, bool zeroed_grain,
                               uint64_t grain_sectors) {
    uint64_t cap_sectors = util::div_round_up(capacity, kSector);
    uint64_t num_gts = util::div_round_up(cap_sectors, grain_sectors * kGtes);
    uint64_t gd_sectors = util::div_round_up(num_gts * 4, kSector);
    uint64_t gt_sectors = kGtes * 4 / kSector;
    uint64_t desc_off = embedded ? 1 : 0;
    uint64_t desc_sectors = embedded ? kEmbeddedDescSectors : 0;
    uint64_t rgd = 1 + desc_sectors;
    uint64_t gd = rgd + gd_sectors + num_gts * gt_sectors;
    uint64_t overhead = *util::align_up(gd + gd_sectors + num_gts * gt_sectors, grain_sectors);
    SparseExtentHeader h = base_header(cap_sectors, grain_sectors);
    h.version = zeroed_grain ? 2 : 1;
    h.flags = kFlagValidNewline | kFlagRedundantGt | (zeroed_grain ? kFlagZeroedGrainGte : 0);
    h.descriptor_offset = desc_off;
    h.descriptor_size = desc_sectors;
    h.rgd_offset = rgd;
    h.gd_offset = gd;
    h.overhead = overhead;
    // Only the header, the descriptor and the two directories hold non-zero bytes; the preallocated grain
    // tables are left as a hole (they read as zeros), so creating a 2 TiB disk writes a few hundred KiB
    // instead of 256 MiB and memory stays independent of the capacity.
    std::vector<uint8_t> head((1 + desc_sectors) * kSector, 0);
    std::memcpy(head.data(), &h, sizeof h);
    if (embedded) std::memcpy(head.data() + kSector, embedded->data(), embedded->size());
    std::vector<uint8_t> rgd_raw(gd_sectors * kSector, 0), gd_raw(gd_sectors * kSector, 0);
    DiskExtent e;
    e.kind = StoreKind::hosted;
    e.type = ExtentType::sparse;
    e.file = &f;
    e.grain = grain_sectors * kSector;
    e.gtes_per_gt = kGtes;
    e.capacity = cap_sectors * kSector;
    e.gd_offset = gd * kSector;
    e.rgd_offset = rgd * kSector;
    e.overhead = overhead * kSector;
    e.zeroed_gte = zeroed_grain;
    e.header = h;
    for (uint64_t i = 0; i < num_gts; ++i) {
        uint64_t rgt = rgd + gd_sectors + i * gt_sectors;
        uint64_t gt = gd + gd_sectors + i * gt_sectors;
        util::store_le<uint32_t>(rgd_raw.data() + i * 4, static_cast<uint32_t>(rgt));
        util::store_le<uint32_t>(gd_raw.data() + i * 4, static_cast<uint32_t>(gt));
        e.rgd.push_back(rgt);
        e.gd.push_back(gt);
    }
    VDISK_TRY(f.resize(overhead * kSector));
    VDISK_TRY(f.write_at(0, head));
    VDISK_TRY(f.write_at(rgd * kSector, rgd_raw));
    VDISK_TRY(f.write_at(gd * kSector, gd_raw));
    e.file_size = overhead * kSector;
    return e;
}

std::string strip_vmdk(std::string_view base) {
    if (base.size() > 5 && base.substr(base.size() - 5) == ".vmdk") base.remove_suffix(5);
    return std::string(base);
}

std::string uuid_text() {
    uint8_t u[16];
    util::generate_uuid(u);
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 16; ++i) {
        if (i) s += i == 8 ? '-' : ' ';
        s += digits[u[i] >> 4];
        s += digits[u[i] & 15];
    }
    return s;
}

// grain_size option (bytes): VMware's 64 KiB by default; a power of two from 8 KiB (the VMDK spec wants more
// than 8 sectors, and libvmdk refuses 8) to 1 MiB (the largest vdisk reads back).
Result<uint64_t> grain_sectors_option(const CreateOptions& opts) {
    VDISK_ASSIGN(uint64_t g, opts.get_size("grain_size", kGrainSectors * kSector));
    if (!util::is_pow2(g) || g < 8192 || g > (1u << 20))
        return make_error(ErrorCode::invalid_argument,
                          "grain_size must be a power of two from 8k to 1M, not " + std::to_string(g));
    return g / kSector;
}

// preallocation=falloc reserves a flat extent, full writes zeros over it (true thick, as VMware's
// eagerZeroedThick means it).
Status preallocate_flat(File& f, uint64_t len, const std::string& mode) {
    if (mode == "falloc") return f.allocate(0, len);
    if (mode != "full") return ok();
    std::vector<uint8_t> zeros(static_cast<size_t>(std::min<uint64_t>(len, 1u << 20)), 0);
    for (uint64_t done = 0; done < len;) {
        auto n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), len - done));
        VDISK_TRY(f.write_at(done, std::span<const uint8_t>(zeros.data(), n)));
        done += n;
    }
    return ok();
}

uint32_t random_cid() {
    std::random_device rd;
    uint32_t v;
    do v = rd();
    while (v >= 0xfffffffeu);
    return v;
}

}  // namespace

// Sectors make_sparse lays out before the first grain of an extent of `capacity` bytes.
uint64_t sparse_overhead_sectors(uint64_t capacity, bool embedded, uint64_t grain_sectors) {
    uint64_t cap_sectors = util::div_round_up(capacity, kSector);
    uint64_t num_gts = util::div_round_up(cap_sectors, grain_sectors * kGtes);
    uint64_t gd_sectors = util::div_round_up(num_gts * 4, kSector);
    uint64_t tables = gd_sectors + num_gts * (kGtes * 4 / kSector);
    return *util::align_up(1 + (embedded ? kEmbeddedDescSectors : 0) + 2 * tables, grain_sectors);
}

// File bytes create + convert write. Sparse extents: the overhead (header, descriptor, both directories and
// every grain table, preallocated) plus one 64 KiB grain per grain holding data; a descriptor file is
// estimated at 320 bytes plus 96 per extent line. Flat extents are as long as the disk.
// streamOptimized: an upper bound (each grain stored uncompressed behind its marker sector, plus the grain
// tables and directory with their markers, footer and end-of-stream), as deflate's gain cannot be known
// without compressing.
Result<MeasureResult> measure_vmdk(const CreateOptions& opts, const MeasureSource& src) {
    std::string sub = opts.get("subformat").value_or("monolithicSparse");
    const uint64_t size = src.virtual_size;
    VDISK_ASSIGN(const uint64_t grain_sectors, grain_sectors_option(opts));
    const uint64_t grain = grain_sectors * kSector;
    const uint64_t grains = util::div_round_up(size, grain);
    uint64_t used = 0;
    if (src.has_image) {
        VDISK_ASSIGN(used, src.data_units(grain));
    }
    MeasureResult r;
    if (sub == "monolithicSparse") {
        uint64_t head = sparse_overhead_sectors(size, true, grain_sectors) * kSector;
        r.required = head + used * grain;
        r.fully_allocated = head + grains * grain;
    } else if (sub == "streamOptimized") {
        uint64_t num_gts = util::div_round_up(util::div_round_up(size, kSector), grain_sectors * kGtes);
        uint64_t head = *util::align_up(1 + kEmbeddedDescSectors, grain_sectors) * kSector;
        uint64_t tail = num_gts * (kSector + kGtes * 4) + kSector + *util::align_up(num_gts * 4, kSector) + 3 * kSector;
        r.required = head + used * (grain + kSector) + tail;
        r.fully_allocated = head + grains * (grain + kSector) + tail;
    } else if (sub == "monolithicFlat" || sub == "twoGbMaxExtentFlat" || sub == "twoGbMaxExtentSparse") {
        const bool flat = sub != "twoGbMaxExtentSparse";
        const uint64_t per = sub == "monolithicFlat" ? std::max<uint64_t>(size, 1) : kSplitBytes;
        const uint64_t extents = std::max<uint64_t>(1, util::div_round_up(size, per));
        uint64_t meta = 320 + 96 * extents;  // the descriptor file: header, DDB, one line per extent
        if (!flat)
            for (uint64_t i = 0; i < extents; ++i)
                meta += sparse_overhead_sectors(std::min(per, size - i * per), false, grain_sectors) * kSector;
        r.fully_allocated = meta + (flat ? size : grains * grain);
        r.required = flat ? r.fully_allocated : meta + used * grain;
    } else {
        return make_error(ErrorCode::invalid_argument, "unknown subformat '" + sub + "'");
    }
    return r;
}

namespace {

// The creation options, checked.
Result<Plan> make_plan(const CreateOptions& opts) {
    Plan p;
    p.subformat = opts.get("subformat").value_or("monolithicSparse");
    if (p.subformat == "monolithicSparse") {
    } else if (p.subformat == "monolithicFlat") {
        p.flat = true;
    } else if (p.subformat == "twoGbMaxExtentSparse") {
        p.split = true;
    } else if (p.subformat == "twoGbMaxExtentFlat") {
        p.split = p.flat = true;
    } else if (p.subformat == "streamOptimized") {
        p.stream = true;
    } else {
        return make_error(ErrorCode::invalid_argument, "unknown subformat '" + p.subformat + "'");
    }
    p.adapter = opts.get("adapter_type").value_or("ide");
    if (p.adapter != "ide" && p.adapter != "lsilogic" && p.adapter != "buslogic" && p.adapter != "legacyESX")
        return make_error(ErrorCode::invalid_argument, "unknown adapter_type '" + p.adapter + "'");
    VDISK_ASSIGN(bool compat6, opts.get_bool("compat6", false));
    auto hw = opts.get("hwversion");
    if (compat6 && hw && *hw != "6")
        return make_error(ErrorCode::invalid_argument, "compat6 conflicts with hwversion=" + *hw);
    p.hwversion = compat6 ? "6" : hw.value_or("4");
    if (p.hwversion.empty() || p.hwversion.find_first_not_of("0123456789") != std::string::npos)
        return make_error(ErrorCode::invalid_argument, "hwversion must be a number, not '" + p.hwversion + "'");
    VDISK_ASSIGN(p.zeroed_grain, opts.get_bool("zeroed_grain", false));
    p.tools = opts.get("toolsversion").value_or("2147483647");
    VDISK_ASSIGN(p.grain_sectors, grain_sectors_option(opts));
    if (opts.get("grain_size") && p.flat)
        return make_error(ErrorCode::invalid_argument, "grain_size applies to sparse subformats, not " + p.subformat);
    p.prealloc = opts.get("preallocation").value_or("off");
    if (p.prealloc != "off" && p.prealloc != "falloc" && p.prealloc != "full")
        return make_error(ErrorCode::invalid_argument,
                          "preallocation must be off, falloc or full, not '" + p.prealloc + "'");
    if (p.prealloc != "off" && !p.flat)
        return make_error(ErrorCode::invalid_argument,
                          "preallocation applies to monolithicFlat and twoGbMaxExtentFlat, not " + p.subformat);
    p.backing = opts.get("backing_file");
    if (auto bf = opts.get("backing_fmt"); bf && *bf != "vmdk")
        return make_error(ErrorCode::invalid_argument, "a VMDK's parent must be a VMDK, not " + *bf);
    if (p.backing && p.flat) return make_error(ErrorCode::invalid_argument, "flat VMDKs cannot have a backing file");
    return p;
}

// The descriptor without its extent lines: a new CID, the parent's CID and name, the DDB.
Result<Descriptor> make_descriptor(const Plan& p, uint64_t sectors, const OpenContext& ctx) {
    Descriptor d;
    d.cid = random_cid();
    d.create_type = p.subformat;
    if (p.backing) {
        const std::string& backing = *p.backing;
        auto pf = ctx.open_related(backing, Access::read_only, "backing file");
        if (!pf) return std::move(pf).error();
        OpenOptions po;
        po.no_backing = true;
        OpenContext pctx(ctx.fs(), resolve_reference(ctx.image_name(), backing), po);
        auto parent = open_vmdk(std::move(*pf), pctx);
        if (!parent)
            return make_error(ErrorCode::invalid_argument,
                              "backing file '" + backing + "' is not a usable VMDK: " + parent.error().message);
        d.parent_cid = static_cast<VmdkDevice&>(**parent).descriptor().cid;
        d.parent_hint = backing;
    }
    uint64_t heads = p.adapter == "ide" ? 16 : 255;
    uint64_t cyl = sectors / (heads * 63);  // qemu-img does not clamp to 16383
    d.ddb = {{"ddb.virtualHWVersion", p.hwversion},
             {"ddb.geometry.cylinders", std::to_string(cyl)},
             {"ddb.geometry.heads", std::to_string(heads)},
             {"ddb.geometry.sectors", "63"},
             {"ddb.adapterType", p.adapter},
             {"ddb.toolsVersion", p.tools},
             {"ddb.uuid", uuid_text()}};
    return d;
}

// streamOptimized: header and descriptor in the first grain; grains, tables, directory and footer are appended
// as the one-pass writer goes.
Result<DiskExtent> make_stream(File& f, uint64_t sectors, const std::string& text, uint64_t grain_sectors) {
    uint64_t num_gts = util::div_round_up(sectors, grain_sectors * kGtes);
    SparseExtentHeader h = base_header(sectors, grain_sectors);
    const uint64_t head_sectors = *util::align_up(1 + kEmbeddedDescSectors, grain_sectors);
    h.version = 3;
    h.flags = kFlagValidNewline | kFlagCompressed | kFlagMarkers;
    h.compress_algorithm = kCompressionDeflate;
    h.descriptor_offset = 1;
    h.descriptor_size = kEmbeddedDescSectors;
    h.gd_offset = kGdAtEnd;
    h.overhead = head_sectors;
    std::vector<uint8_t> meta(head_sectors * kSector, 0);
    std::memcpy(meta.data(), &h, sizeof h);
    std::memcpy(meta.data() + kSector, text.data(), text.size());
    VDISK_TRY(f.write_at(0, meta));
    DiskExtent e;
    e.kind = StoreKind::hosted;
    e.type = ExtentType::sparse;
    e.grain = grain_sectors * kSector;
    e.gtes_per_gt = kGtes;
    e.capacity = sectors * kSector;
    e.gd.assign(num_gts, 0);
    e.compressed = e.markers = true;
    e.overhead = meta.size();
    e.file_size = meta.size();
    e.header = h;
    e.file = &f;
    return e;
}

// monolithicSparse / streamOptimized: one file, descriptor embedded after the header.
Result<std::unique_ptr<BlockDevice>> create_monolithic(const Plan& p, Descriptor d, uint64_t size,
                                                       const OpenContext& ctx) {
    const uint64_t sectors = size / kSector;
    std::string base = std::string(base_name(ctx.image_name()));
    d.extents.push_back({ExtentAccess::rw, sectors, ExtentType::sparse, base, 0});
    std::string text = render_descriptor(d);
    if (text.size() > kEmbeddedDescSectors * kSector)
        return make_error(ErrorCode::invalid_argument, "descriptor too long for the embedded area");
    VDISK_ASSIGN(auto f, ctx.fs().create(ctx.image_name()));
    DiskExtent e;
    if (p.stream) {
        VDISK_ASSIGN(e, make_stream(*f, sectors, text, p.grain_sectors));
    } else {
        VDISK_ASSIGN(e, make_sparse(*f, size, &text, p.zeroed_grain, p.grain_sectors));
    }
    e.name = base;
    e.embedded = true;
    e.length = size;
    // The directories are charged as at open (writes then charge the grain tables they cache).
    VDISK_ASSIGN(e.charge,
                 Charge::make(ctx.budget(), (e.gd.size() + e.rgd.size()) * sizeof(uint64_t), "grain directory"));
    const uint64_t end = e.file_size;
    VmdkParts parts;
    parts.desc = std::move(d);
    parts.extents.push_back(std::move(e));
    parts.files.push_back(std::move(f));
    auto dev = std::make_unique<VmdkDevice>(size, false, std::move(parts), ctx.limits());
    if (p.stream) dev->start_stream(end);
    return std::unique_ptr<BlockDevice>(std::move(dev));
}

// monolithicFlat / twoGbMaxExtent*: a descriptor file plus one or more extent files beside it.
Result<std::unique_ptr<BlockDevice>> create_with_extent_files(const Plan& p, Descriptor d, uint64_t size,
                                                              const OpenContext& ctx) {
    std::string prefix = strip_vmdk(base_name(ctx.image_name()));
    VmdkParts parts;
    uint64_t per = p.split ? kSplitBytes : size;
    uint64_t count = std::max<uint64_t>(1, util::div_round_up(size, per));
    if (count > 9999) return make_error(ErrorCode::invalid_argument, "too many split extents");
    VDISK_ASSIGN(auto desc_file, ctx.fs().create(ctx.image_name()));
    parts.files.push_back(std::move(desc_file));
    for (uint64_t i = 0; i < count; ++i) {
        uint64_t start = i * per;
        uint64_t len = std::min(per, size - start);
        std::string name;
        if (p.split) {
            char num[8];
            std::snprintf(num, sizeof num, "%03u", static_cast<unsigned>(i + 1));
            name = prefix + (p.flat ? "-f" : "-s") + num + ".vmdk";
        } else {
            name = prefix + "-flat.vmdk";
        }
        VDISK_ASSIGN(auto f, ctx.create_related(name));
        DiskExtent e;
        if (p.flat) {
            VDISK_TRY(f->resize(len));
            VDISK_TRY(preallocate_flat(*f, len, p.prealloc));
            e.kind = StoreKind::flat;
            e.type = ExtentType::flat;
            e.file_size = len;
        } else {
            VDISK_ASSIGN(e, make_sparse(*f, len, nullptr, p.zeroed_grain, p.grain_sectors));
        }
        e.file = f.get();
        e.name = name;
        e.start = start;
        e.length = len;
        d.extents.push_back({ExtentAccess::rw, len / kSector, p.flat ? ExtentType::flat : ExtentType::sparse, name, 0});
        // The directories are charged as at open (writes then charge the grain tables they cache).
        VDISK_ASSIGN(e.charge,
                     Charge::make(ctx.budget(), (e.gd.size() + e.rgd.size()) * sizeof(uint64_t), "grain directory"));
        parts.extents.push_back(std::move(e));
        parts.files.push_back(std::move(f));
    }
    std::string text = render_descriptor(d);
    VDISK_TRY(parts.files.front()->write_at(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()),
                                                                        text.size())));
    parts.desc = std::move(d);
    return std::unique_ptr<BlockDevice>(std::make_unique<VmdkDevice>(size, false, std::move(parts), ctx.limits()));
}

}  // namespace

Result<std::unique_ptr<BlockDevice>> create_vmdk(const CreateOptions& opts, const OpenContext& ctx) {
    VDISK_ASSIGN(Plan p, make_plan(opts));
    uint64_t size = *util::align_up(*opts.size, kSector);
    if (p.stream || !p.split) {
        // One sparse extent addresses at most 2^32 sectors of grains (32-bit GTEs).
        if (!p.flat && size > (1ull << 41))
            return make_error(ErrorCode::invalid_argument, "a sparse VMDK extent is at most 2 TiB");
    }
    VDISK_ASSIGN(Descriptor d, make_descriptor(p, size / kSector, ctx));
    if (!p.flat && !p.split) return create_monolithic(p, std::move(d), size, ctx);
    return create_with_extent_files(p, std::move(d), size, ctx);
}

}  // namespace vdisk::vmdk
