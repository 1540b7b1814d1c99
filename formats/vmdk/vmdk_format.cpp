// SPDX-License-Identifier: Apache-2.0
// VMDK format: probe, open (sparse headers, text descriptors, extents), check.
#include <algorithm>
#include <cstring>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {
namespace {

Error err_at(ErrorCode code, std::string msg, uint64_t offset) {
    Error e = make_error(code, std::move(msg));
    e.offset = offset;
    return e;
}

// Read a table of `count` little-endian entries of `width` bytes at `offset`, validated against the file first.
// The decoded table is charged to `held` (the extent's charge) for as long as the extent lives; the raw
// bytes only while they are decoded.
Result<std::vector<uint64_t>> read_dir(File& f, uint64_t file_size, uint64_t offset, uint64_t count, unsigned width,
                                       const Limits& lim, const char* what, Charge& held) {
    auto bytes = util::mul<uint64_t>(count, width);
    if (!bytes || *bytes > lim.max_metadata_bytes)
        return make_error(ErrorCode::limit_exceeded, std::string(what) + " of " + std::to_string(count) +
                                                         " entries exceeds the metadata limit (" +
                                                         std::to_string(lim.max_metadata_bytes) + " bytes)");
    if (!util::range_within(offset, *bytes, file_size))
        return err_at(ErrorCode::corrupt, std::string(what) + " at " + hex(offset) + " (" + std::to_string(*bytes) +
                                              " bytes) lies past the end of the file (" + hex(file_size) + ")",
                      offset);
    VDISK_TRY(held.resize(held.bytes() + count * sizeof(uint64_t) + *bytes, what));
    if (held.budget()) VDISK_TRY(held.budget()->work(count, what));
    std::vector<uint64_t> out(count);
    {
        std::vector<uint8_t> raw(*bytes);
        VDISK_TRY(read_exact(f, offset, raw, what));
        for (uint64_t i = 0; i < count; ++i)
            out[i] = width == 8 ? util::load_le<uint64_t>(raw.data() + i * 8) : util::load_le<uint32_t>(raw.data() + i * 4);
    }
    VDISK_TRY(held.resize(held.bytes() - *bytes, what));
    return out;
}

Result<uint64_t> sectors_to_bytes(uint64_t sectors, const char* what, uint64_t at) {
    auto b = util::mul<uint64_t>(sectors, kSector);
    if (!b) return err_at(ErrorCode::corrupt, std::string(what) + " " + std::to_string(sectors) + " sectors overflows", at);
    return *b;
}

// Hosted sparse extent (KDMV). `desc_text` receives the embedded descriptor, if any.
Status load_hosted(File& f, DiskExtent& e, const Limits& lim, std::string* desc_text) {
    VDISK_ASSIGN(e.file_size, f.size());
    SparseExtentHeader h;
    VDISK_TRY(read_exact(f, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&h), sizeof h), "sparse extent header"));
    if (h.magic.value() != kSparseMagic) return err_at(ErrorCode::invalid_format, "sparse extent magic is not KDMV", 0);
    uint32_t version = h.version.value();
    if (version < 1 || version > 3)
        return err_at(ErrorCode::unsupported, "sparse extent version " + std::to_string(version) + " is not supported", 4);
    if (h.gd_offset.value() == kGdAtEnd) {
        // streamOptimized: the real header (footer) sits 1024 bytes before the end, between a footer marker
        // and the end-of-stream marker.
        if (e.file_size < 1536 + kSector)
            return err_at(ErrorCode::corrupt, "grain directory is at the end but the file is too short for a footer", 56);
        uint64_t fm_at = e.file_size - 1536;
        Marker fm, eos;
        VDISK_TRY(read_exact(f, fm_at, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&fm), sizeof fm), "footer marker"));
        VDISK_TRY(read_exact(f, e.file_size - 512, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&eos), sizeof eos),
                             "end-of-stream marker"));
        if (fm.size.value() != 0 || fm.type.value() != kMarkerFooter)
            return err_at(ErrorCode::corrupt, "footer marker missing (type " + std::to_string(fm.type.value()) +
                                                  "): truncated streamOptimized image?",
                          fm_at);
        if (eos.size.value() != 0 || eos.type.value() != kMarkerEos || eos.value.value() != 0)
            return err_at(ErrorCode::corrupt, "end-of-stream marker missing", e.file_size - 512);
        SparseExtentHeader footer;
        VDISK_TRY(read_exact(f, e.file_size - 1024, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&footer), sizeof footer),
                             "footer"));
        if (footer.magic.value() != kSparseMagic)
            return err_at(ErrorCode::corrupt, "footer magic is not KDMV", e.file_size - 1024);
        if (footer.gd_offset.value() == kGdAtEnd)
            return err_at(ErrorCode::corrupt, "footer has no grain directory offset", e.file_size - 1024);
        uint64_t desc_off = h.descriptor_offset.value(), desc_size = h.descriptor_size.value();
        h = footer;
        // The descriptor is written with the header; some writers leave it out of the footer.
        if (h.descriptor_offset.value() == 0) {
            h.descriptor_offset = desc_off;
            h.descriptor_size = desc_size;
        }
    }
    uint32_t flags = h.flags.value();
    e.header = h;
    e.kind = StoreKind::hosted;
    e.compressed = (flags & kFlagCompressed) != 0;
    e.markers = (flags & kFlagMarkers) != 0;
    e.zeroed_gte = (flags & kFlagZeroedGrainGte) != 0;
    if (e.compressed && h.compress_algorithm.value() != kCompressionDeflate)
        return err_at(ErrorCode::unsupported,
                      "compression algorithm " + std::to_string(h.compress_algorithm.value()) + " is not supported", 77);
    uint64_t grain_sectors = h.grain_size.value();
    if (!util::is_pow2(grain_sectors))
        return err_at(ErrorCode::corrupt, "grain size " + std::to_string(grain_sectors) + " sectors is not a power of two", 20);
    if (grain_sectors > 2048)
        return err_at(ErrorCode::unsupported,
                      "grain size " + std::to_string(grain_sectors) + " sectors is larger than 1 MiB", 20);
    e.grain = grain_sectors * kSector;
    e.gtes_per_gt = h.num_gtes_per_gt.value();
    if (e.gtes_per_gt == 0)
        return err_at(ErrorCode::corrupt, "numGTEsPerGT is 0", 44);
    if (e.gtes_per_gt > 4096)
        return err_at(ErrorCode::unsupported, "numGTEsPerGT " + std::to_string(e.gtes_per_gt) + " is larger than 4096", 44);
    VDISK_ASSIGN(e.capacity, sectors_to_bytes(h.capacity.value(), "capacity", 12));
    uint64_t cover = e.grain * e.gtes_per_gt;
    uint64_t num_gts = util::div_round_up(e.capacity, cover);
    VDISK_ASSIGN(e.gd_offset, sectors_to_bytes(h.gd_offset.value(), "grain directory offset", 56));
    if (h.gd_offset.value() == 0 && num_gts) return err_at(ErrorCode::corrupt, "grain directory offset is 0", 56);
    VDISK_ASSIGN(e.gd, read_dir(f, e.file_size, e.gd_offset, num_gts, 4, lim, "grain directory", e.charge));
    if ((flags & kFlagRedundantGt) && h.rgd_offset.value() != 0 && !e.compressed) {
        VDISK_ASSIGN(e.rgd_offset, sectors_to_bytes(h.rgd_offset.value(), "redundant grain directory offset", 48));
        VDISK_ASSIGN(e.rgd, read_dir(f, e.file_size, e.rgd_offset, num_gts, 4, lim, "redundant grain directory", e.charge));
    }
    e.overhead = h.overhead.value() <= (UINT64_MAX >> 9) ? h.overhead.value() * kSector : 0;
    if (desc_text && h.descriptor_offset.value() != 0 && h.descriptor_size.value() != 0) {
        uint64_t ds = h.descriptor_size.value();
        if (ds > lim.max_descriptor_bytes / kSector)
            return err_at(ErrorCode::limit_exceeded, "embedded descriptor of " + std::to_string(ds) +
                                                         " sectors exceeds the descriptor limit",
                          36);
        VDISK_ASSIGN(uint64_t doff, sectors_to_bytes(h.descriptor_offset.value(), "descriptor offset", 28));
        if (!util::range_within(doff, ds * kSector, e.file_size))
            return err_at(ErrorCode::corrupt, "embedded descriptor at " + hex(doff) + " lies past the end of the file", 28);
        desc_text->resize(ds * kSector);
        VDISK_TRY(read_exact(f, doff, std::span<uint8_t>(reinterpret_cast<uint8_t*>(desc_text->data()), desc_text->size()),
                             "embedded descriptor"));
    }
    return ok();
}

// ESX hosted sparse extent (vmfsSparse, "COWD").
Status load_cowd(File& f, DiskExtent& e, const Limits& lim) {
    VDISK_ASSIGN(e.file_size, f.size());
    CowdHeader h;
    VDISK_TRY(read_exact(f, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&h), sizeof h), "COWD header"));
    e.kind = StoreKind::cowd;
    uint64_t grain_sectors = h.grain_size.value();
    if (!util::is_pow2(grain_sectors) || grain_sectors > 2048)
        return err_at(ErrorCode::corrupt, "COWD grain size " + std::to_string(grain_sectors) + " sectors is invalid", 16);
    e.grain = grain_sectors * kSector;
    e.gtes_per_gt = kCowdGtesPerGt;
    e.capacity = uint64_t(h.num_sectors.value()) * kSector;
    uint64_t need = util::div_round_up(e.capacity, e.grain * e.gtes_per_gt);
    if (h.num_gd_entries.value() < need)
        return err_at(ErrorCode::corrupt, "COWD grain directory has " + std::to_string(h.num_gd_entries.value()) +
                                              " entries, " + std::to_string(need) + " needed",
                      24);
    e.gd_offset = uint64_t(h.gd_offset.value()) * kSector;
    VDISK_ASSIGN(e.gd, read_dir(f, e.file_size, e.gd_offset, need, 4, lim, "grain directory", e.charge));
    return ok();
}

// Space-efficient sparse extent (seSparse).
Status load_sesparse(File& f, DiskExtent& e, const Limits& lim) {
    VDISK_ASSIGN(e.file_size, f.size());
    SeSparseConstHeader h;
    VDISK_TRY(read_exact(f, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&h), sizeof h), "seSparse header"));
    e.kind = StoreKind::sesparse;
    if (h.version.value() != 0x0000000200000001ull)
        return err_at(ErrorCode::unsupported, "seSparse version " + hex(h.version.value()) + " is not supported", 8);
    if (h.grain_size.value() != 8 || h.grain_table_size.value() != 64)
        return err_at(ErrorCode::unsupported, "seSparse grain size " + std::to_string(h.grain_size.value()) +
                                                  " / grain table size " + std::to_string(h.grain_table_size.value()) +
                                                  " sectors is not supported",
                      24);
    if (h.flags.value() != 0) return err_at(ErrorCode::unsupported, "seSparse flags " + hex(h.flags.value()), 40);
    VDISK_ASSIGN(uint64_t vol_at, sectors_to_bytes(h.volatile_header_offset.value(), "volatile header offset", 80));
    uint8_t vol[32];
    VDISK_TRY(read_exact(f, vol_at, vol, "seSparse volatile header"));
    if (util::load_le<uint64_t>(vol) != kSeSparseVolatileMagic)
        return err_at(ErrorCode::corrupt, "seSparse volatile header magic is wrong", vol_at);
    if (util::load_le<uint64_t>(vol + 24) != 0)
        return err_at(ErrorCode::unsupported, "seSparse journal needs replay", vol_at + 24);
    e.grain = 8 * kSector;
    e.gtes_per_gt = 64 * kSector / 8;
    VDISK_ASSIGN(e.capacity, sectors_to_bytes(h.capacity.value(), "capacity", 16));
    VDISK_ASSIGN(e.gd_offset, sectors_to_bytes(h.grain_dir_offset.value(), "grain directory offset", 128));
    VDISK_ASSIGN(uint64_t gd_bytes, sectors_to_bytes(h.grain_dir_size.value(), "grain directory size", 136));
    VDISK_ASSIGN(e.se_gt_base, sectors_to_bytes(h.grain_tables_offset.value(), "grain tables offset", 144));
    VDISK_ASSIGN(e.se_grains_base, sectors_to_bytes(h.grains_offset.value(), "grains offset", 192));
    uint64_t need = util::div_round_up(e.capacity, e.grain * e.gtes_per_gt);
    if (gd_bytes / 8 < need)
        return err_at(ErrorCode::corrupt, "seSparse grain directory has " + std::to_string(gd_bytes / 8) +
                                              " entries, " + std::to_string(need) + " needed",
                      136);
    VDISK_ASSIGN(e.gd, read_dir(f, e.file_size, e.gd_offset, need, 8, lim, "grain directory", e.charge));
    return ok();
}

// Load whichever sparse kind the file holds.
Status load_sparse_file(File& f, DiskExtent& e, const Limits& lim, std::string* desc_text) {
    uint8_t head[8] = {};
    VDISK_TRY(read_zero_fill(f, 0, head));
    uint32_t m = util::load_le<uint32_t>(head);
    if (m == kSparseMagic) return load_hosted(f, e, lim, desc_text);
    if (m == kCowdMagic) return load_cowd(f, e, lim);
    if (util::load_le<uint64_t>(head) == kSeSparseConstMagic) return load_sesparse(f, e, lim);
    return err_at(ErrorCode::corrupt, "extent '" + e.name + "' is not a sparse extent (magic " + hex(m) + ")", 0);
}

bool known_create_type(std::string_view t) {
    static constexpr std::string_view kTypes[] = {
        "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized",
        "vmfs", "vmfsThin", "vmfsSparse", "vmfsPreallocated", "vmfsEagerZeroedThick", "seSparse", "custom"};
    return std::any_of(std::begin(kTypes), std::end(kTypes), [&](std::string_view k) {
        return k.size() == t.size() && std::equal(k.begin(), k.end(), t.begin(), [](char a, char b) {
                   return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
               });
    });
}

}  // namespace

Result<std::unique_ptr<BlockDevice>> open_vmdk(std::unique_ptr<File> file, const OpenContext& ctx) {
    const Limits& lim = ctx.limits();
    bool ro = !ctx.options().read_write;
    VDISK_ASSIGN(uint64_t fsize, file->size());
    uint8_t head[8] = {};
    VDISK_TRY(read_zero_fill(*file, 0, head));
    uint32_t magic = util::load_le<uint32_t>(head);
    std::vector<std::unique_ptr<File>> files;
    std::vector<DiskExtent> extents;
    Descriptor desc;

    bool binary = magic == kSparseMagic || magic == kCowdMagic || util::load_le<uint64_t>(head) == kSeSparseConstMagic;
    if (binary) {
        // A sparse file opened directly: it is the only extent; an embedded descriptor supplies CID, parent
        // and DDB, but its extent lines are not followed (the file is the extent).
        DiskExtent e;
        e.type = magic == kCowdMagic ? ExtentType::vmfssparse
                 : magic == kSparseMagic ? ExtentType::sparse : ExtentType::sesparse;
        e.name = std::string(base_name(file->name()));
        e.embedded = true;
        e.file = file.get();
        std::string text;
        VDISK_ASSIGN(e.charge, Charge::make(ctx.budget(), 0, "grain directory"));
        VDISK_TRY(load_sparse_file(*file, e, lim, &text));
        if (!text.empty()) {
            VDISK_ASSIGN(desc, parse_descriptor(text, lim));
        } else {
            desc.create_type = magic == kCowdMagic ? "vmfsSparse"
                               : magic != kSparseMagic ? "seSparse"
                               : e.compressed ? "streamOptimized" : "monolithicSparse";
        }
        e.length = e.capacity;
        desc.extents.clear();
        ExtentLine l;
        l.sectors = e.capacity / kSector;
        l.type = e.type;
        l.name = e.name;
        desc.extents.push_back(l);
        extents.push_back(std::move(e));
        files.push_back(std::move(file));
        uint64_t size = extents.front().length;
        const auto& h = extents.front().header;
        bool has_text = !text.empty();
        uint64_t desc_at = h.descriptor_offset.value() * kSector, desc_room = h.descriptor_size.value() * kSector;
        auto dev = std::make_unique<VmdkDevice>(size, ro, std::move(desc), std::move(files), std::move(extents), lim);
        dev->set_force_parent(ctx.options().force_parent_mismatch);
        if (has_text) dev->set_descriptor_location(dev->files().front(), desc_at, desc_room);
        return std::unique_ptr<BlockDevice>(std::move(dev));
    }

    if (fsize > lim.max_descriptor_bytes)
        return make_error(ErrorCode::limit_exceeded, "descriptor file of " + std::to_string(fsize) +
                                                         " bytes exceeds the descriptor limit (" +
                                                         std::to_string(lim.max_descriptor_bytes) + ")");
    std::string text(fsize, '\0');
    VDISK_TRY(read_exact(*file, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(text.data()), text.size()),
                         "descriptor"));
    if (!looks_like_descriptor(text) && text.find("createType") == std::string::npos)
        return make_error(ErrorCode::invalid_format, "not a VMDK: no sparse magic and no text descriptor");
    VDISK_ASSIGN(desc, parse_descriptor(text, lim));
    if (!known_create_type(desc.create_type))
        return make_error(ErrorCode::unsupported, "createType '" + desc.create_type + "' is not supported");
    if (desc.extents.empty()) return make_error(ErrorCode::corrupt, "descriptor lists no extents");
    files.push_back(std::move(file));
    uint64_t pos = 0;
    Access access = ro ? Access::read_only : Access::read_write;
    for (auto& l : desc.extents) {
        DiskExtent e;
        e.type = l.type;
        e.access = l.access;
        e.name = l.name;
        e.start = pos;
        e.length = l.sectors * kSector;  // the parser bounds the sum to 2^55 sectors
        pos += e.length;
        if (l.type == ExtentType::zero) {
            e.kind = StoreKind::zero;
            extents.push_back(std::move(e));
            continue;
        }
        if (l.name.empty())
            return make_error(ErrorCode::corrupt, "descriptor extent " + std::to_string(extents.size() + 1) +
                                                      " has an empty file name");
        auto f = ctx.open_related(l.name, l.access == ExtentAccess::rw ? access : Access::read_only, "extent");
        if (!f) {
            Error err = std::move(f).error();
            if (err.code == ErrorCode::not_found || err.code == ErrorCode::io)
                err.message = "extent file '" + l.name + "' is missing: " + err.message;
            return err;
        }
        e.file = f->get();
        if (l.type == ExtentType::flat || l.type == ExtentType::vmfs) {
            e.kind = StoreKind::flat;
            VDISK_ASSIGN(e.file_size, e.file->size());
            VDISK_ASSIGN(e.flat_offset, sectors_to_bytes(l.offset, "extent offset", 0));
        } else {
            // Every extent charges the one image budget: 64 extent lines naming one big sparse file cost
            // 64 times its tables, not one cap each.
            VDISK_ASSIGN(e.charge, Charge::make(ctx.budget(), 0, "grain directory"));
            auto st = load_sparse_file(*e.file, e, lim, nullptr);
            if (!st) {
                Error err = std::move(st).error();
                err.message = "extent '" + l.name + "': " + err.message;
                if (err.file.empty()) err.file = e.file->name();
                return err;
            }
        }
        files.push_back(std::move(*f));
        extents.push_back(std::move(e));
    }
    if (pos == 0) return make_error(ErrorCode::corrupt, "descriptor extents add up to 0 sectors");
    auto dev = std::make_unique<VmdkDevice>(pos, ro, std::move(desc), std::move(files), std::move(extents), lim);
    dev->set_force_parent(ctx.options().force_parent_mismatch);
    dev->set_descriptor_location(dev->files().front(), 0, 0);
    return std::unique_ptr<BlockDevice>(std::move(dev));
}

namespace {

constexpr OptionSpec kOptions[] = {
    {"size", "virtual disk size"},
    {"subformat", "monolithicSparse (default), monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized"},
    {"adapter_type", "ide (default), lsilogic, buslogic or legacyESX"},
    {"hwversion", "virtual hardware version (default 4)"},
    {"compat6", "VMDK version 6 image (hwversion 6)"},
    {"zeroed_grain", "enable zeroed-grain grain table entries (on/off)"},
    {"backing_file", "name of the parent image"},
    {"backing_fmt", "format of the parent image (vmdk)"},
    {"toolsversion", "VMware guest tools version (default 2147483647)"},
    {"grain_size", "sparse subformats: grain size, a power of two from 8k to 1M (default 64k; VMware's option, "
                   "not qemu-img's)"},
    {"preallocation", "flat subformats: off (sparse file, default), falloc (reserved) or full (zeros written: "
                      "eagerZeroedThick)"},
};

class VmdkFormat final : public Format {
public:
    std::string_view name() const noexcept override { return "vmdk"; }

    int probe(std::span<const uint8_t> head, std::span<const uint8_t>, uint64_t) const noexcept override {
        if (head.size() >= 4) {
            uint32_t m = util::load_le<uint32_t>(head.data());
            if (m == kSparseMagic) {
                if (head.size() < sizeof(SparseExtentHeader)) return 64;
                SparseExtentHeader h;
                std::memcpy(&h, head.data(), sizeof h);
                int score = 64;
                if (h.version.value() >= 1 && h.version.value() <= 3 && util::is_pow2(h.grain_size.value())) score += 16;
                if (h.single_end_line_char == '\n' && h.non_end_line_char == ' ' && h.double_end_line_char1 == '\r' &&
                    h.double_end_line_char2 == '\n')
                    score += 8;
                return score;
            }
            if (m == kCowdMagic) return 64;
        }
        if (head.size() >= 16 && util::load_le<uint64_t>(head.data()) == kSeSparseConstMagic &&
            util::load_le<uint64_t>(head.data() + 8) == 0x0000000200000001ull)
            return 72;
        std::string_view text(reinterpret_cast<const char*>(head.data()), head.size());
        if (looks_like_descriptor(text)) return 64;
        if (text.find("createType") != std::string_view::npos &&
            (text.find("RW ") != std::string_view::npos || text.find("RDONLY ") != std::string_view::npos))
            return 40;
        return 0;
    }

    Result<std::unique_ptr<BlockDevice>> open(std::unique_ptr<File> file, const OpenContext& ctx) const override {
        return open_vmdk(std::move(file), ctx);
    }

    std::span<const OptionSpec> create_options() const noexcept override { return kOptions; }
    bool can_stream(const CreateOptions& opts) const noexcept override {
        auto sub = opts.get("subformat");
        return sub && *sub == "streamOptimized";
    }

    Result<MeasureResult> measure(const CreateOptions& opts, const MeasureSource& src) const override {
        return measure_vmdk(opts, src);
    }
    Result<std::unique_ptr<BlockDevice>> create(const CreateOptions& opts, const OpenContext& ctx) const override {
        return create_vmdk(opts, ctx);
    }
};

}  // namespace

}  // namespace vdisk::vmdk

namespace vdisk {
std::unique_ptr<Format> make_vmdk_format() { return std::make_unique<vmdk::VmdkFormat>(); }
}  // namespace vdisk
