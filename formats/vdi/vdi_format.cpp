// SPDX-License-Identifier: Apache-2.0
// VDI (VirtualBox Disk Image): probe, open (header versions 0.x and 1.x), create, check.
//
// Differencing images name their parent only by UUID. The parent is the one the caller names
// (OpenOptions::backing_override), or else the .vdi with that creation UUID found beside the image
// (vdi_parent.cpp), which backing_reference() then names; check_backing_identity() verifies the UUIDs
// either way.
// Reading a block that lives in the parent without one attached is a not_found error, not silent zeros.
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vdi_internal.hpp"

namespace vdisk {
namespace vdi {
namespace {

// Larger blocks are valid VDI but make every allocating write rewrite a huge slot; VirtualBox itself
// only ever writes 1 MiB.
constexpr uint64_t kMaxBlockSize = 256ull << 20;
constexpr uint64_t kDataAlign = 4096;
constexpr char kBanner[] = "<<< Oracle VM VirtualBox Disk Image >>>\n";

std::string version_text(uint32_t v) { return std::to_string(v >> 16) + "." + std::to_string(v & 0xffff); }

Result<Meta> read_header(File& file, uint64_t file_size) {
    PreHeader pre;
    if (file_size < sizeof pre) return make_error(ErrorCode::invalid_format, "file is too small for a VDI header");
    VDISK_TRY(read_exact(file, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&pre), sizeof pre), "VDI pre-header"));
    if (pre.signature.value() != kSignature)
        return make_error(ErrorCode::invalid_format, "bad VDI signature " + hex(pre.signature.value()))
            .at(offsetof(PreHeader, signature));
    Meta m;
    m.version = pre.version.value();
    uint32_t major = m.version >> 16;
    if (major == 0) {
        Header0 h;
        VDISK_TRY(read_exact(file, kHeaderOffset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&h), sizeof h),
                             "VDI 0.x header"));
        m.type = h.type.value();
        m.flags = h.flags.value();
        m.comment.assign(h.comment, strnlen(h.comment, sizeof h.comment));
        m.disk_size = h.disk_size.value();
        m.block_size = h.block_size.value();
        m.blocks_in_image = h.blocks_in_image.value();
        m.blocks_allocated = h.blocks_allocated.value();
        std::memcpy(m.uuid_create, h.uuid_create, 16);
        std::memcpy(m.uuid_modify, h.uuid_modify, 16);
        std::memcpy(m.uuid_linkage, h.uuid_linkage, 16);
        // 0.x stores no offsets: the map follows the header and the data follows the map.
        m.offset_bmap = kHeaderOffset + sizeof(Header0);
        m.offset_data = m.offset_bmap + uint64_t{m.blocks_in_image} * 4;
        return m;
    }
    if (major != 1)
        return make_error(ErrorCode::unsupported,
                          "VDI version " + version_text(m.version) + " is not supported (known: 0.x and 1.x)")
            .at(offsetof(PreHeader, version));
    Header1 h;
    std::memset(&h, 0, sizeof h);
    uint8_t* raw = reinterpret_cast<uint8_t*>(&h);
    VDISK_TRY(read_exact(file, kHeaderOffset, std::span<uint8_t>(raw, 4), "VDI header"));
    m.header_size = h.header_size.value();
    if (m.header_size < kHeader1MinSize)
        return make_error(ErrorCode::corrupt,
                          "VDI header size " + hex(m.header_size) + " is smaller than " + hex(kHeader1MinSize))
            .at(kHeaderOffset);
    size_t n = std::min<size_t>(m.header_size, sizeof h);
    VDISK_TRY(read_exact(file, kHeaderOffset, std::span<uint8_t>(raw, n), "VDI header"));
    m.type = h.type.value();
    m.flags = h.flags.value();
    m.comment.assign(h.comment, strnlen(h.comment, sizeof h.comment));
    m.offset_bmap = h.offset_bmap.value();
    m.offset_data = h.offset_data.value();
    m.sector_size = h.legacy_geometry.sector_size.value();
    m.disk_size = h.disk_size.value();
    m.block_size = h.block_size.value();
    m.block_extra = h.block_extra.value();
    m.blocks_in_image = h.blocks_in_image.value();
    m.blocks_allocated = h.blocks_allocated.value();
    std::memcpy(m.uuid_create, h.uuid_create, 16);
    std::memcpy(m.uuid_modify, h.uuid_modify, 16);
    std::memcpy(m.uuid_linkage, h.uuid_linkage, 16);
    std::memcpy(m.uuid_parent_modify, h.uuid_parent_modify, 16);
    const uint64_t header_end = kHeaderOffset + m.header_size;
    if (m.offset_bmap < header_end)
        return make_error(ErrorCode::corrupt, "block map offset " + hex(m.offset_bmap) +
                                                  " overlaps the header (ends at " + hex(header_end) + ")")
            .at(kHeaderOffset + offsetof(Header1, offset_bmap));
    if (m.sector_size == 0)
        return make_error(ErrorCode::corrupt, "sector size is 0")
            .at(kHeaderOffset + offsetof(Header1, legacy_geometry.sector_size));
    if (m.sector_size != kSectorSize)
        return make_error(ErrorCode::unsupported,
                          "sector size " + std::to_string(m.sector_size) + " is not supported (only 512)")
            .at(kHeaderOffset + offsetof(Header1, legacy_geometry.sector_size));
    return m;
}

Status validate(const Meta& m, uint64_t file_size, const Limits& limits) {
    const uint64_t h1 = kHeaderOffset;
    const bool v1 = (m.version >> 16) == 1;
    auto field = [&](size_t off1) { return v1 ? h1 + off1 : h1; };
    switch (m.type) {
        case kTypeNormal:
        case kTypeFixed:
        case kTypeDiff: break;
        case kTypeUndo:
            return make_error(ErrorCode::unsupported, "VDI undo images (type 3) are not supported")
                .at(field(offsetof(Header1, type)));
        default:
            return make_error(ErrorCode::corrupt, "unknown VDI image type " + std::to_string(m.type))
                .at(field(offsetof(Header1, type)));
    }
    if (m.block_size == 0)
        return make_error(ErrorCode::corrupt, "block size is 0").at(field(offsetof(Header1, block_size)));
    if (m.block_size % kSectorSize != 0)
        return make_error(ErrorCode::corrupt, "block size " + hex(m.block_size) + " is not a multiple of 512")
            .at(field(offsetof(Header1, block_size)));
    if (m.block_size > kMaxBlockSize)
        return make_error(ErrorCode::unsupported,
                          "block size " + hex(m.block_size) + " is larger than " + hex(kMaxBlockSize))
            .at(field(offsetof(Header1, block_size)));
    if (m.block_extra > kMaxBlockSize)
        return make_error(ErrorCode::unsupported,
                          "block extra size " + hex(m.block_extra) + " is larger than " + hex(kMaxBlockSize))
            .at(field(offsetof(Header1, block_extra)));
    if (m.blocks_in_image >= kBlockZero)
        return make_error(ErrorCode::corrupt,
                          "blocks in image " + hex(m.blocks_in_image) + " collides with the map's special entries")
            .at(field(offsetof(Header1, blocks_in_image)));
    const uint64_t bmap_bytes = uint64_t{m.blocks_in_image} * 4;
    if (bmap_bytes > limits.max_metadata_bytes)
        return make_error(ErrorCode::limit_exceeded, "block map of " + std::to_string(m.blocks_in_image) +
                                                         " entries (" + std::to_string(bmap_bytes) +
                                                         " bytes) exceeds the metadata limit of " +
                                                         std::to_string(limits.max_metadata_bytes) + " bytes")
            .at(field(offsetof(Header1, blocks_in_image)));
    const uint64_t capacity = uint64_t{m.blocks_in_image} * m.block_size;
    if (m.disk_size > capacity)
        return make_error(ErrorCode::corrupt, "disk size " + hex(m.disk_size) + " exceeds the " +
                                                  std::to_string(m.blocks_in_image) + " blocks of " +
                                                  hex(m.block_size) + " bytes the map covers")
            .at(field(offsetof(Header1, disk_size)));
    if (m.blocks_allocated > m.blocks_in_image)
        return make_error(ErrorCode::corrupt, "allocated block count " + std::to_string(m.blocks_allocated) +
                                                  " exceeds the " + std::to_string(m.blocks_in_image) +
                                                  " blocks of the image")
            .at(field(offsetof(Header1, blocks_allocated)));
    if (!util::range_within(m.offset_bmap, bmap_bytes, file_size))
        return make_error(ErrorCode::corrupt, "block map at " + hex(m.offset_bmap) + " (" + std::to_string(bmap_bytes) +
                                                  " bytes) extends past the end of the file (" + hex(file_size) + ")")
            .at(field(offsetof(Header1, offset_bmap)));
    if (m.offset_data < m.offset_bmap + bmap_bytes)
        return make_error(ErrorCode::corrupt, "data offset " + hex(m.offset_data) + " overlaps the block map at " +
                                                  hex(m.offset_bmap) + " (" + std::to_string(bmap_bytes) + " bytes)")
            .at(field(offsetof(Header1, offset_data)));
    // slot_offset() relies on this sum fitting; with the caps above it always does, but say so.
    if (!util::add<uint64_t>(m.offset_data, capacity + uint64_t{m.blocks_in_image} * m.block_extra))
        return make_error(ErrorCode::corrupt, "data area overflows 64 bits").at(field(offsetof(Header1, offset_data)));
    return ok();
}

// preallocation=falloc reserves the range, full writes zeros over it (true thick, as VMware/Hyper-V mean it).
Status preallocate_range(File& f, uint64_t off, uint64_t len, const std::string& mode) {
    if (mode == "falloc") return f.allocate(off, len);
    if (mode != "full") return ok();
    std::vector<uint8_t> zeros(static_cast<size_t>(std::min<uint64_t>(len, 1u << 20)), 0);
    for (uint64_t done = 0; done < len;) {
        auto n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), len - done));
        VDISK_TRY(f.write_at(off + done, std::span<const uint8_t>(zeros.data(), n)));
        done += n;
    }
    return ok();
}

constexpr OptionSpec kOptions[] = {
    {"static", "on: allocate every block at creation (VirtualBox 'fixed'); off (default): dynamic"},
    {"preallocation", "static images: falloc (default, reserved) or full (zeros written, true thick)"},
    {"uuid", "creation UUID (default: random), e.g. to keep a converted disk's VirtualBox identity"},
    {"backing_file", "parent of a differencing image (a VDI, linked by its UUIDs; found again beside the child)"},
    {"backing_fmt", "format of the parent: vdi; other formats cannot be a VDI's parent"},
};

class VdiFormat final : public Format {
public:
    std::string_view name() const noexcept override { return "vdi"; }

    int probe(std::span<const uint8_t> head, std::span<const uint8_t>, uint64_t) const noexcept override {
        if (head.size() < sizeof(PreHeader)) return 0;
        if (util::load_le<uint32_t>(head.data() + 64) != kSignature) return 0;
        int score = 64;
        uint32_t major = util::load_le<uint32_t>(head.data() + 68) >> 16;
        if (major <= 1) score += 8;
        std::string_view banner(reinterpret_cast<const char*>(head.data()), 64);
        if (banner.find("Disk Image") != std::string_view::npos) score += 8;
        return score;
    }

    Result<std::unique_ptr<BlockDevice>> open(std::unique_ptr<File> file, const OpenContext& ctx) const override {
        VDISK_ASSIGN(uint64_t file_size, file->size());
        VDISK_ASSIGN(Meta m, read_header(*file, file_size));
        VDISK_TRY(validate(m, file_size, ctx.limits()));
        const bool rw = ctx.options().read_write;
        if (rw && (m.version >> 16) != 1)
            return make_error(ErrorCode::unsupported, "writing VDI version " + version_text(m.version) +
                                                          " images is not supported (open read-only)");
        VDISK_ASSIGN(Charge bmap_charge, Charge::make(ctx.budget(), uint64_t{m.blocks_in_image} * 4, "VDI block map"));
        VDISK_TRY(ctx.budget()->work(m.blocks_in_image, "VDI block map"));
        std::vector<uint32_t> bmap(m.blocks_in_image);
        // Decoded in place: the map is held once.
        auto* raw = reinterpret_cast<uint8_t*>(bmap.data());
        VDISK_TRY(read_exact(*file, m.offset_bmap, std::span<uint8_t>(raw, bmap.size() * 4), "VDI block map"));
        bool any_allocated = false;
        for (size_t i = 0; i < bmap.size(); ++i) {
            bmap[i] = util::load_le<uint32_t>(raw + i * 4);
            any_allocated |= bmap[i] < kBlockZero;
        }
        bmap_charge.keep();
        if (any_allocated && m.offset_data > file_size)
            return make_error(ErrorCode::corrupt, "data offset " + hex(m.offset_data) +
                                                      " lies past the end of the file (" + hex(file_size) +
                                                      ") while blocks are allocated")
                .at(kHeaderOffset + offsetof(Header1, offset_data));
        if (rw) {
            // Allocation hands out slots below blocks_in_image that no block uses; a map that already
            // breaks that would make writes overwrite other blocks.
            std::vector<bool> used(m.blocks_in_image, false);
            for (size_t i = 0; i < bmap.size(); ++i) {
                uint32_t e = bmap[i];
                if (e >= kBlockZero) continue;
                if (e >= m.blocks_in_image || used[e])
                    return make_error(ErrorCode::corrupt, "block map entry " + std::to_string(i) + " (slot " +
                                                              std::to_string(e) + ") is " +
                                                              (e >= m.blocks_in_image ? "out of range" : "used twice") +
                                                              "; refusing to write (run check)")
                        .at(m.offset_bmap + i * 4);
                used[e] = true;
            }
        }
        // The parent is a file this image depends on even though it is known only by UUID.
        if (m.is_diff() && ctx.options().references)
            ctx.options().references->push_back("parent uuid '" + util::guid_to_string(m.uuid_linkage) + "'");
        VDISK_ASSIGN(ParentLink parent, find_parent(*file, m, ctx));
        return make_device(std::move(file), std::move(m), std::move(bmap), file_size, !rw, std::move(parent));
    }

    std::span<const OptionSpec> create_options() const noexcept override { return kOptions; }

    // Header and block map up to the data area (4 KiB aligned), then one whole block per block holding data.
    Result<MeasureResult> measure(const CreateOptions& opts, const MeasureSource& src) const override {
        VDISK_ASSIGN(bool is_static, opts.get_bool("static", false));
        const uint64_t bs = kDefaultBlockSize;
        const uint64_t blocks = util::div_round_up(src.virtual_size, bs);
        if (blocks >= kBlockZero)
            return make_error(ErrorCode::invalid_argument,
                              "VDI size " + std::to_string(src.virtual_size) + " is too large");
        const uint64_t data_off = *util::align_up(kBmapOffset + blocks * 4, kDataAlign);
        uint64_t used = 0;
        if (src.has_image) {
            VDISK_ASSIGN(used, src.data_units(bs));
        }
        MeasureResult r;
        r.fully_allocated = data_off + blocks * bs;
        r.required = is_static ? r.fully_allocated : data_off + used * bs;
        return r;
    }

    Result<std::unique_ptr<BlockDevice>> create(const CreateOptions& opts, const OpenContext& ctx) const override {
        VDISK_ASSIGN(bool is_static, opts.get_bool("static", false));
        // A differencing image links to its parent as VirtualBox does: the parent's creation UUID and the
        // modification UUID it had when the child was made (check_backing verifies both).
        std::optional<Meta> parent;
        ParentLink link;
        if (auto backing = opts.get("backing_file")) {
            if (auto bf = opts.get("backing_fmt"); bf && *bf != "vdi")
                return make_error(ErrorCode::invalid_argument,
                                  "a differencing VDI's parent must be a VDI, not " + *bf +
                                      " (vdisk does not create cross-format chains; convert the parent to vdi first)");
            if (is_static || opts.get("preallocation"))
                return make_error(ErrorCode::invalid_argument, "a differencing VDI cannot be static or preallocated");
            VDISK_ASSIGN(auto pf, ctx.open_related(*backing, Access::read_only, "backing file"));
            OpenOptions po;
            po.no_backing = true;
            OpenContext pctx(ctx.fs(), resolve_reference(ctx.image_name(), *backing), po);
            auto pd = open(std::move(pf), pctx);
            if (!pd)
                return make_error(ErrorCode::invalid_argument, "backing file '" + *backing + "' is not a usable VDI (" +
                                                                   pd.error().message +
                                                                   "); a differencing VDI's parent must be a VDI");
            parent = *device_meta(**pd);
            link.found = *backing;
        }
        const std::string prealloc = opts.get("preallocation").value_or("falloc");
        if (prealloc != "off" && prealloc != "falloc" && prealloc != "full")
            return make_error(ErrorCode::invalid_argument,
                              "preallocation must be off, falloc or full, not '" + prealloc + "'");
        if (opts.get("preallocation") && !is_static)
            return make_error(ErrorCode::invalid_argument, "preallocation needs static=on");
        const uint64_t size = *opts.size;
        const uint64_t bs = kDefaultBlockSize;
        const uint64_t blocks = util::div_round_up(size, bs);
        if (blocks >= kBlockZero)
            return make_error(ErrorCode::invalid_argument, "VDI size " + std::to_string(size) + " is too large");
        if (blocks * 4 > ctx.limits().max_metadata_bytes)
            return make_error(ErrorCode::limit_exceeded,
                              "a block map of " + std::to_string(blocks) + " entries exceeds the metadata limit");
        Meta m;
        m.header_size = kHeader1PlusSize;
        m.type = parent ? kTypeDiff : is_static ? kTypeFixed : kTypeNormal;
        m.offset_bmap = kBmapOffset;
        m.offset_data = *util::align_up(kBmapOffset + blocks * 4, kDataAlign);
        m.disk_size = size;
        m.block_size = static_cast<uint32_t>(bs);
        m.blocks_in_image = static_cast<uint32_t>(blocks);
        m.blocks_allocated = is_static ? m.blocks_in_image : 0;
        util::generate_uuid(m.uuid_create);
        util::generate_uuid(m.uuid_modify);
        if (auto u = opts.get("uuid"); u && !util::parse_uuid(*u, m.uuid_create, true))
            return make_error(ErrorCode::invalid_argument, "uuid '" + *u + "' is not a UUID");
        if (parent) {
            std::memcpy(m.uuid_linkage, parent->uuid_create, 16);
            std::memcpy(m.uuid_parent_modify, parent->uuid_modify, 16);
        }

        std::vector<uint8_t> head(static_cast<size_t>(m.offset_bmap), 0);
        auto* pre = reinterpret_cast<PreHeader*>(head.data());
        std::memcpy(pre->file_info, kBanner, sizeof kBanner - 1);
        pre->signature = kSignature;
        pre->version = kVersion1_1;
        auto* h = reinterpret_cast<Header1*>(head.data() + kHeaderOffset);
        h->header_size = m.header_size;
        h->type = m.type;
        h->flags = 0;
        h->offset_bmap = static_cast<uint32_t>(m.offset_bmap);
        h->offset_data = static_cast<uint32_t>(m.offset_data);
        // VirtualBox leaves C/H/S at 0 (it derives geometry at run time) and records the sector size in
        // both the legacy and the LCHS geometry.
        h->legacy_geometry.sector_size = kSectorSize;
        h->lchs_geometry.sector_size = kSectorSize;
        h->disk_size = m.disk_size;
        h->block_size = m.block_size;
        h->block_extra = 0;
        h->blocks_in_image = m.blocks_in_image;
        h->blocks_allocated = m.blocks_allocated;
        std::memcpy(h->uuid_create, m.uuid_create, 16);
        std::memcpy(h->uuid_modify, m.uuid_modify, 16);
        std::memcpy(h->uuid_linkage, m.uuid_linkage, 16);
        std::memcpy(h->uuid_parent_modify, m.uuid_parent_modify, 16);

        // Charged like a block map read at open (resize charges what it adds, releases what it drops).
        VDISK_ASSIGN(Charge bmap_charge, Charge::make(ctx.budget(), uint64_t{blocks} * 4, "VDI block map"));
        bmap_charge.keep();
        std::vector<uint32_t> bmap(static_cast<size_t>(blocks), kBlockFree);
        if (is_static)
            for (uint32_t i = 0; i < blocks; ++i) bmap[i] = i;
        std::vector<uint8_t> rawmap(static_cast<size_t>(m.offset_data - m.offset_bmap), 0);
        for (size_t i = 0; i < bmap.size(); ++i) util::store_le<uint32_t>(rawmap.data() + i * 4, bmap[i]);

        VDISK_ASSIGN(auto file, ctx.fs().create(ctx.image_name()));
        VDISK_TRY(file->write_at(0, head));
        VDISK_TRY(file->write_at(m.offset_bmap, rawmap));
        uint64_t file_size = m.offset_data;
        if (is_static) {
            file_size = m.offset_data + blocks * bs;
            VDISK_TRY(file->resize(file_size));
            VDISK_TRY(preallocate_range(*file, m.offset_data, blocks * bs, prealloc));
        }
        return make_device(std::move(file), std::move(m), std::move(bmap), file_size, false, std::move(link));
    }
};

}  // namespace
}  // namespace vdi

std::unique_ptr<Format> make_vdi_format() { return std::make_unique<vdi::VdiFormat>(); }

}  // namespace vdisk
