// SPDX-License-Identifier: Apache-2.0
// VMDK format: probe, open (sparse headers, text descriptors, extents).
#include <algorithm>
#include <cstddef>
#include <cstring>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {
namespace {

// Read a table of `count` little-endian entries of `width` bytes at `offset` of the extent's file, validated
// against the file first. The decoded table is charged to the extent's charge for as long as the extent lives;
// the raw bytes only while they are decoded.
Result<std::vector<uint64_t>> read_dir(DiskExtent& e, uint64_t offset, uint64_t count, unsigned width,
                                       const Limits& lim, const char* what) {
    auto bytes = util::mul<uint64_t>(count, width);
    if (!bytes || *bytes > lim.max_metadata_bytes)
        return make_error(ErrorCode::limit_exceeded, std::string(what) + " of " + std::to_string(count) +
                                                         " entries exceeds the metadata limit (" +
                                                         std::to_string(lim.max_metadata_bytes) + " bytes)");
    if (!util::range_within(offset, *bytes, e.file_size))
        return make_error(ErrorCode::corrupt, std::string(what) + " at " + hex(offset) + " (" + std::to_string(*bytes) +
                                                  " bytes) lies past the end of the file (" + hex(e.file_size) + ")")
            .at(offset);
    VDISK_TRY(e.charge.resize(e.charge.bytes() + count * sizeof(uint64_t) + *bytes, what));
    if (e.charge.budget()) VDISK_TRY(e.charge.budget()->work(count, what));
    std::vector<uint64_t> out(count);
    {
        std::vector<uint8_t> raw(*bytes);
        VDISK_TRY(read_exact(*e.file, offset, raw, what));
        for (uint64_t i = 0; i < count; ++i)
            out[i] = width == 8 ? util::load_le<uint64_t>(raw.data() + i * 8)
                                : util::load_le<uint32_t>(raw.data() + i * 4);
    }
    VDISK_TRY(e.charge.resize(e.charge.bytes() - *bytes, what));
    return out;
}

// `at`: where the header field holding `sectors` lies.
Result<uint64_t> sectors_to_bytes(uint64_t sectors, const char* what, uint64_t at) {
    auto b = util::mul<uint64_t>(sectors, kSector);
    if (!b)
        return make_error(ErrorCode::corrupt, std::string(what) + " " + std::to_string(sectors) + " sectors overflows")
            .at(at);
    return *b;
}

template <typename T>
std::span<uint8_t> bytes_of(T& t) {
    return {reinterpret_cast<uint8_t*>(&t), sizeof t};
}

// streamOptimized: the real header (footer) sits 1024 bytes before the end, between a footer marker and the
// end-of-stream marker. Replaces `h` with it, keeping the header's descriptor when the footer names none.
Status load_stream_footer(DiskExtent& e, SparseExtentHeader& h) {
    File& f = *e.file;
    if (e.file_size < 1536 + kSector)
        return make_error(ErrorCode::corrupt, "grain directory is at the end but the file is too short for a footer")
            .at(offsetof(SparseExtentHeader, gd_offset));
    const uint64_t fm_at = e.file_size - 1536, footer_at = e.file_size - 1024, eos_at = e.file_size - 512;
    Marker fm, eos;
    VDISK_TRY(read_exact(f, fm_at, bytes_of(fm), "footer marker"));
    VDISK_TRY(read_exact(f, eos_at, bytes_of(eos), "end-of-stream marker"));
    if (fm.size.value() != 0 || fm.type.value() != kMarkerFooter)
        return make_error(ErrorCode::corrupt, "footer marker missing (type " + std::to_string(fm.type.value()) +
                                                  "): truncated streamOptimized image?")
            .at(fm_at);
    if (eos.size.value() != 0 || eos.type.value() != kMarkerEos || eos.value.value() != 0)
        return make_error(ErrorCode::corrupt, "end-of-stream marker missing").at(eos_at);
    SparseExtentHeader footer;
    VDISK_TRY(read_exact(f, footer_at, bytes_of(footer), "footer"));
    if (footer.magic.value() != kSparseMagic)
        return make_error(ErrorCode::corrupt, "footer magic is not KDMV").at(footer_at);
    if (footer.gd_offset.value() == kGdAtEnd)
        return make_error(ErrorCode::corrupt, "footer has no grain directory offset").at(footer_at);
    // The descriptor is written with the header; some writers leave it out of the footer.
    if (footer.descriptor_offset.value() == 0) {
        footer.descriptor_offset = h.descriptor_offset.value();
        footer.descriptor_size = h.descriptor_size.value();
    }
    h = footer;
    return ok();
}

// The descriptor embedded in a hosted sparse extent (header fields checked against the file and the limit).
Status load_embedded_descriptor(const DiskExtent& e, const Limits& lim, std::string& text) {
    const SparseExtentHeader& h = e.header;
    uint64_t ds = h.descriptor_size.value();
    if (ds > lim.max_descriptor_bytes / kSector)
        return make_error(ErrorCode::limit_exceeded,
                          "embedded descriptor of " + std::to_string(ds) + " sectors exceeds the descriptor limit")
            .at(offsetof(SparseExtentHeader, descriptor_size));
    constexpr uint64_t doff_at = offsetof(SparseExtentHeader, descriptor_offset);
    VDISK_ASSIGN(uint64_t doff, sectors_to_bytes(h.descriptor_offset.value(), "descriptor offset", doff_at));
    if (!util::range_within(doff, ds * kSector, e.file_size))
        return make_error(ErrorCode::corrupt, "embedded descriptor at " + hex(doff) + " lies past the end of the file")
            .at(doff_at);
    text.resize(ds * kSector);
    return read_exact(*e.file, doff, std::span<uint8_t>(reinterpret_cast<uint8_t*>(text.data()), text.size()),
                      "embedded descriptor");
}

// Hosted sparse extent (KDMV). `desc_text` receives the embedded descriptor, if any.
Status load_hosted(DiskExtent& e, const Limits& lim, std::string* desc_text) {
    using H = SparseExtentHeader;
    SparseExtentHeader h;
    VDISK_TRY(read_exact(*e.file, 0, bytes_of(h), "sparse extent header"));
    if (h.magic.value() != kSparseMagic)
        return make_error(ErrorCode::invalid_format, "sparse extent magic is not KDMV").at(offsetof(H, magic));
    uint32_t version = h.version.value();
    if (version < 1 || version > 3)
        return make_error(ErrorCode::unsupported,
                          "sparse extent version " + std::to_string(version) + " is not supported")
            .at(offsetof(H, version));
    if (h.gd_offset.value() == kGdAtEnd) VDISK_TRY(load_stream_footer(e, h));
    uint32_t flags = h.flags.value();
    e.header = h;
    e.kind = StoreKind::hosted;
    e.compressed = (flags & kFlagCompressed) != 0;
    e.markers = (flags & kFlagMarkers) != 0;
    e.zeroed_gte = (flags & kFlagZeroedGrainGte) != 0;
    if (e.compressed && h.compress_algorithm.value() != kCompressionDeflate)
        return make_error(ErrorCode::unsupported,
                          "compression algorithm " + std::to_string(h.compress_algorithm.value()) + " is not supported")
            .at(offsetof(H, compress_algorithm));
    uint64_t grain_sectors = h.grain_size.value();
    if (!util::is_pow2(grain_sectors))
        return make_error(ErrorCode::corrupt,
                          "grain size " + std::to_string(grain_sectors) + " sectors is not a power of two")
            .at(offsetof(H, grain_size));
    if (grain_sectors > 2048)
        return make_error(ErrorCode::unsupported,
                          "grain size " + std::to_string(grain_sectors) + " sectors is larger than 1 MiB")
            .at(offsetof(H, grain_size));
    e.grain = grain_sectors * kSector;
    e.gtes_per_gt = h.num_gtes_per_gt.value();
    if (e.gtes_per_gt == 0) return make_error(ErrorCode::corrupt, "numGTEsPerGT is 0").at(offsetof(H, num_gtes_per_gt));
    if (e.gtes_per_gt > 4096)
        return make_error(ErrorCode::unsupported,
                          "numGTEsPerGT " + std::to_string(e.gtes_per_gt) + " is larger than 4096")
            .at(offsetof(H, num_gtes_per_gt));
    VDISK_ASSIGN(e.capacity, sectors_to_bytes(h.capacity.value(), "capacity", offsetof(H, capacity)));
    uint64_t num_gts = util::div_round_up(e.capacity, e.grain * e.gtes_per_gt);
    VDISK_ASSIGN(e.gd_offset, sectors_to_bytes(h.gd_offset.value(), "grain directory offset", offsetof(H, gd_offset)));
    if (h.gd_offset.value() == 0 && num_gts)
        return make_error(ErrorCode::corrupt, "grain directory offset is 0").at(offsetof(H, gd_offset));
    VDISK_ASSIGN(e.gd, read_dir(e, e.gd_offset, num_gts, 4, lim, "grain directory"));
    if ((flags & kFlagRedundantGt) && h.rgd_offset.value() != 0 && !e.compressed) {
        VDISK_ASSIGN(e.rgd_offset, sectors_to_bytes(h.rgd_offset.value(), "redundant grain directory offset",
                                                    offsetof(H, rgd_offset)));
        VDISK_ASSIGN(e.rgd, read_dir(e, e.rgd_offset, num_gts, 4, lim, "redundant grain directory"));
    }
    e.overhead = h.overhead.value() <= (UINT64_MAX >> 9) ? h.overhead.value() * kSector : 0;
    if (desc_text && h.descriptor_offset.value() != 0 && h.descriptor_size.value() != 0)
        VDISK_TRY(load_embedded_descriptor(e, lim, *desc_text));
    return ok();
}

// ESX hosted sparse extent (vmfsSparse, "COWD").
Status load_cowd(DiskExtent& e, const Limits& lim) {
    CowdHeader h;
    VDISK_TRY(read_exact(*e.file, 0, bytes_of(h), "COWD header"));
    e.kind = StoreKind::cowd;
    uint64_t grain_sectors = h.grain_size.value();
    if (!util::is_pow2(grain_sectors) || grain_sectors > 2048)
        return make_error(ErrorCode::corrupt,
                          "COWD grain size " + std::to_string(grain_sectors) + " sectors is invalid")
            .at(offsetof(CowdHeader, grain_size));
    e.grain = grain_sectors * kSector;
    e.gtes_per_gt = kCowdGtesPerGt;
    e.capacity = uint64_t(h.num_sectors.value()) * kSector;
    uint64_t need = util::div_round_up(e.capacity, e.grain * e.gtes_per_gt);
    if (h.num_gd_entries.value() < need)
        return make_error(ErrorCode::corrupt, "COWD grain directory has " + std::to_string(h.num_gd_entries.value()) +
                                                  " entries, " + std::to_string(need) + " needed")
            .at(offsetof(CowdHeader, num_gd_entries));
    e.gd_offset = uint64_t(h.gd_offset.value()) * kSector;
    VDISK_ASSIGN(e.gd, read_dir(e, e.gd_offset, need, 4, lim, "grain directory"));
    return ok();
}

// Space-efficient sparse extent (seSparse).
Status load_sesparse(DiskExtent& e, const Limits& lim) {
    using H = SeSparseConstHeader;
    SeSparseConstHeader h;
    VDISK_TRY(read_exact(*e.file, 0, bytes_of(h), "seSparse header"));
    e.kind = StoreKind::sesparse;
    if (h.version.value() != 0x0000000200000001ull)
        return make_error(ErrorCode::unsupported, "seSparse version " + hex(h.version.value()) + " is not supported")
            .at(offsetof(H, version));
    if (h.grain_size.value() != 8 || h.grain_table_size.value() != 64)
        return make_error(ErrorCode::unsupported,
                          "seSparse grain size " + std::to_string(h.grain_size.value()) + " / grain table size " +
                              std::to_string(h.grain_table_size.value()) + " sectors is not supported")
            .at(offsetof(H, grain_size));
    if (h.flags.value() != 0)
        return make_error(ErrorCode::unsupported, "seSparse flags " + hex(h.flags.value())).at(offsetof(H, flags));
    VDISK_ASSIGN(uint64_t vol_at, sectors_to_bytes(h.volatile_header_offset.value(), "volatile header offset",
                                                   offsetof(H, volatile_header_offset)));
    uint8_t vol[32];
    VDISK_TRY(read_exact(*e.file, vol_at, vol, "seSparse volatile header"));
    if (util::load_le<uint64_t>(vol) != kSeSparseVolatileMagic)
        return make_error(ErrorCode::corrupt, "seSparse volatile header magic is wrong").at(vol_at);
    if (util::load_le<uint64_t>(vol + 24) != 0)
        return make_error(ErrorCode::unsupported, "seSparse journal needs replay").at(vol_at + 24);
    e.grain = 8 * kSector;
    e.gtes_per_gt = 64 * kSector / 8;
    VDISK_ASSIGN(e.capacity, sectors_to_bytes(h.capacity.value(), "capacity", offsetof(H, capacity)));
    VDISK_ASSIGN(e.gd_offset,
                 sectors_to_bytes(h.grain_dir_offset.value(), "grain directory offset", offsetof(H, grain_dir_offset)));
    VDISK_ASSIGN(uint64_t gd_bytes,
                 sectors_to_bytes(h.grain_dir_size.value(), "grain directory size", offsetof(H, grain_dir_size)));
    VDISK_ASSIGN(e.se_gt_base, sectors_to_bytes(h.grain_tables_offset.value(), "grain tables offset",
                                                offsetof(H, grain_tables_offset)));
    VDISK_ASSIGN(e.se_grains_base,
                 sectors_to_bytes(h.grains_offset.value(), "grains offset", offsetof(H, grains_offset)));
    uint64_t need = util::div_round_up(e.capacity, e.grain * e.gtes_per_gt);
    if (gd_bytes / 8 < need)
        return make_error(ErrorCode::corrupt, "seSparse grain directory has " + std::to_string(gd_bytes / 8) +
                                                  " entries, " + std::to_string(need) + " needed")
            .at(offsetof(H, grain_dir_size));
    VDISK_ASSIGN(e.gd, read_dir(e, e.gd_offset, need, 8, lim, "grain directory"));
    return ok();
}

// Load whichever sparse kind the extent's file holds.
Status load_sparse_file(DiskExtent& e, const Limits& lim, std::string* desc_text) {
    VDISK_ASSIGN(e.file_size, e.file->size());
    uint8_t head[8] = {};
    VDISK_TRY(read_zero_fill(*e.file, 0, head));
    uint32_t m = util::load_le<uint32_t>(head);
    if (m == kSparseMagic) return load_hosted(e, lim, desc_text);
    if (m == kCowdMagic) return load_cowd(e, lim);
    if (util::load_le<uint64_t>(head) == kSeSparseConstMagic) return load_sesparse(e, lim);
    return make_error(ErrorCode::corrupt, "extent '" + e.name + "' is not a sparse extent (magic " + hex(m) + ")")
        .at(0);
}

bool known_create_type(std::string_view t) {
    static constexpr std::string_view kTypes[] = {"monolithicSparse",
                                                  "monolithicFlat",
                                                  "twoGbMaxExtentSparse",
                                                  "twoGbMaxExtentFlat",
                                                  "streamOptimized",
                                                  "vmfs",
                                                  "vmfsThin",
                                                  "vmfsSparse",
                                                  "vmfsPreallocated",
                                                  "vmfsEagerZeroedThick",
                                                  "seSparse",
                                                  "custom"};
    return std::any_of(std::begin(kTypes), std::end(kTypes), [&](std::string_view k) {
        return k.size() == t.size() && std::equal(k.begin(), k.end(), t.begin(), [](char a, char b) {
                   return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
               });
    });
}

// A sparse file opened directly: it is the only extent; an embedded descriptor supplies CID, parent and DDB,
// but its extent lines are not followed (the file is the extent).
Result<VmdkParts> open_sparse_file(std::unique_ptr<File> file, uint32_t magic, const OpenContext& ctx) {
    const Limits& lim = ctx.limits();
    VmdkParts p;
    DiskExtent e;
    e.type = magic == kCowdMagic     ? ExtentType::vmfssparse
             : magic == kSparseMagic ? ExtentType::sparse
                                     : ExtentType::sesparse;
    e.name = std::string(base_name(file->name()));
    e.embedded = true;
    e.file = file.get();
    std::string text;
    VDISK_ASSIGN(e.charge, Charge::make(ctx.budget(), 0, "grain directory"));
    VDISK_TRY(load_sparse_file(e, lim, &text));
    if (!text.empty()) {
        VDISK_ASSIGN(p.desc, parse_descriptor(text, lim));
        p.desc_file = file.get();
        p.desc_at = e.header.descriptor_offset.value() * kSector;
        p.desc_room = e.header.descriptor_size.value() * kSector;
    } else {
        p.desc.create_type = magic == kCowdMagic     ? "vmfsSparse"
                             : magic != kSparseMagic ? "seSparse"
                             : e.compressed          ? "streamOptimized"
                                                     : "monolithicSparse";
    }
    e.length = e.capacity;
    p.desc.extents = {ExtentLine{ExtentAccess::rw, e.capacity / kSector, e.type, e.name, 0}};
    p.extents.push_back(std::move(e));
    p.files.push_back(std::move(file));
    return p;
}

// A text descriptor file and the extent files its lines name.
Result<VmdkParts> open_descriptor_file(std::unique_ptr<File> file, const OpenContext& ctx) {
    const Limits& lim = ctx.limits();
    VDISK_ASSIGN(uint64_t fsize, file->size());
    if (fsize > lim.max_descriptor_bytes)
        return make_error(ErrorCode::limit_exceeded, "descriptor file of " + std::to_string(fsize) +
                                                         " bytes exceeds the descriptor limit (" +
                                                         std::to_string(lim.max_descriptor_bytes) + ")");
    std::string text(fsize, '\0');
    VDISK_TRY(
        read_exact(*file, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(text.data()), text.size()), "descriptor"));
    if (!looks_like_descriptor(text) && text.find("createType") == std::string::npos)
        return make_error(ErrorCode::invalid_format, "not a VMDK: no sparse magic and no text descriptor");
    VmdkParts p;
    VDISK_ASSIGN(p.desc, parse_descriptor(text, lim));
    if (!known_create_type(p.desc.create_type))
        return make_error(ErrorCode::unsupported, "createType '" + p.desc.create_type + "' is not supported");
    if (p.desc.extents.empty()) return make_error(ErrorCode::corrupt, "descriptor lists no extents");
    p.desc_file = file.get();
    p.files.push_back(std::move(file));
    uint64_t pos = 0;
    Access access = ctx.options().read_write ? Access::read_write : Access::read_only;
    for (auto& l : p.desc.extents) {
        DiskExtent e;
        e.type = l.type;
        e.access = l.access;
        e.name = l.name;
        e.start = pos;
        e.length = l.sectors * kSector;  // the parser bounds the sum to 2^55 sectors
        pos += e.length;
        if (l.type == ExtentType::zero) {
            e.kind = StoreKind::zero;
            p.extents.push_back(std::move(e));
            continue;
        }
        if (l.name.empty())
            return make_error(ErrorCode::corrupt,
                              "descriptor extent " + std::to_string(p.extents.size() + 1) + " has an empty file name");
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
            auto st = load_sparse_file(e, lim, nullptr);
            if (!st) {
                Error err = std::move(st).error();
                err.message = "extent '" + l.name + "': " + err.message;
                if (err.file.empty()) err.file = e.file->name();
                return err;
            }
        }
        p.files.push_back(std::move(*f));
        p.extents.push_back(std::move(e));
    }
    if (pos == 0) return make_error(ErrorCode::corrupt, "descriptor extents add up to 0 sectors");
    return p;
}

}  // namespace

Result<std::unique_ptr<BlockDevice>> open_vmdk(std::unique_ptr<File> file, const OpenContext& ctx) {
    uint8_t head[8] = {};
    VDISK_TRY(read_zero_fill(*file, 0, head));
    const uint32_t magic = util::load_le<uint32_t>(head);
    const bool binary = magic == kSparseMagic || magic == kCowdMagic ||
                        util::load_le<uint64_t>(head) == kSeSparseConstMagic;
    auto parts = binary ? open_sparse_file(std::move(file), magic, ctx) : open_descriptor_file(std::move(file), ctx);
    if (!parts) return std::move(parts).error();
    const DiskExtent& last = parts->extents.back();
    const uint64_t size = last.start + last.length;
    return std::unique_ptr<BlockDevice>(
        std::make_unique<VmdkDevice>(size, !ctx.options().read_write, std::move(*parts), ctx.limits()));
}

namespace {

constexpr OptionSpec kOptions[] = {
    {"size", "virtual disk size"},
    {"subformat",
     "monolithicSparse (default), monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized"},
    {"adapter_type", "ide (default), lsilogic, buslogic or legacyESX"},
    {"hwversion", "virtual hardware version (default 4)"},
    {"compat6", "VMDK version 6 image (hwversion 6)"},
    {"zeroed_grain", "enable zeroed-grain grain table entries (on/off)"},
    {"backing_file", "name of the parent image"},
    {"backing_fmt", "format of the parent image (vmdk)"},
    {"toolsversion", "VMware guest tools version (default 2147483647)"},
    {"grain_size",
     "sparse subformats: grain size, a power of two from 8k to 1M (default 64k; VMware's option, "
     "not qemu-img's)"},
    {"preallocation",
     "flat subformats: off (sparse file, default), falloc (reserved) or full (zeros written: "
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
                if (h.version.value() >= 1 && h.version.value() <= 3 && util::is_pow2(h.grain_size.value()))
                    score += 16;
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
