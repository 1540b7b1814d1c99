// SPDX-License-Identifier: Apache-2.0
// qcow2: probe, header parsing and validation, open, create.
#include <algorithm>
#include <cstddef>
#include <cstring>

#include "qcow2_internal.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"

namespace vdisk::qcow2 {

void put_ext(std::vector<uint8_t>& out, uint32_t type, std::string_view data) {
    size_t at = out.size();
    out.resize(at + 8 + ((data.size() + 7) & ~size_t(7)), 0);
    util::store_be<uint32_t>(&out[at], type);
    util::store_be<uint32_t>(&out[at + 4], static_cast<uint32_t>(data.size()));
    std::memcpy(&out[at + 8], data.data(), data.size());
}

static Error limit_error(const std::string& what, uint64_t bytes, uint64_t cap, uint64_t offset) {
    return make_error(ErrorCode::limit_exceeded, what + " needs " + std::to_string(bytes) + " bytes, more than the " +
                                                     std::to_string(cap) + " byte limit")
        .at(offset);
}

// A table [off, off + bytes) must be cluster aligned, inside the file and within the metadata cap.
Status validate_table(const char* what, uint64_t off, uint64_t entries, uint64_t entry_size, uint64_t cluster_size,
                      uint64_t file_size, uint64_t cap) {
    auto bytes = util::mul<uint64_t>(entries, entry_size);
    if (!bytes || *bytes > cap) return limit_error(std::string(what), bytes.value_or(UINT64_MAX), cap, off);
    if (!util::is_aligned(off, cluster_size))
        return make_error(ErrorCode::corrupt, std::string(what) + " offset " + hex(off) + " is not cluster aligned")
            .at(off);
    if (entries && !util::range_within(off, *bytes, file_size))
        return make_error(ErrorCode::corrupt, std::string(what) + " at " + hex(off) + " (" + std::to_string(*bytes) +
                                                  " bytes) extends past the end of the file (" + hex(file_size) + ")")
            .at(off);
    if (entries && off == 0)
        return make_error(ErrorCode::corrupt, std::string(what) + " overlaps the header at offset 0").at(off);
    return ok();
}

namespace {

// The fixed fields of versions 2 and 3.
Result<Header> read_fixed_fields(const HeaderV3& hv, uint64_t file_size) {
    const HeaderV2& b = hv.v2;
    if (b.magic.value() != kMagic) return make_error(ErrorCode::invalid_format, "no qcow2 magic");
    Header h;
    h.version = b.version.value();
    if (h.version == 1)
        return make_error(ErrorCode::unsupported, "this is a qcow version 1 image, not qcow2 (open it as -f qcow)");
    if (h.version != 2 && h.version != 3)
        return make_error(ErrorCode::unsupported, "qcow2 version " + std::to_string(h.version) + " is not supported");
    h.cluster_bits = b.cluster_bits.value();
    if (h.cluster_bits < 9 || h.cluster_bits > 21)
        return make_error(ErrorCode::corrupt, "cluster_bits " + std::to_string(h.cluster_bits) + " is outside 9..21")
            .at(offsetof(HeaderV2, cluster_bits));
    h.size = b.size.value();
    h.crypt_method = b.crypt_method.value();
    h.l1_size = b.l1_size.value();
    h.l1_offset = b.l1_table_offset.value();
    h.rt_offset = b.refcount_table_offset.value();
    h.rt_clusters = b.refcount_table_clusters.value();
    h.nb_snapshots = b.nb_snapshots.value();
    h.snapshots_offset = b.snapshots_offset.value();
    h.header_length = kHeaderV2Length;  // version 2: these, 16-bit refcounts and zlib
    if (h.version == 2) return h;
    h.incompat = hv.incompatible_features.value();
    h.compat = hv.compatible_features.value();
    h.autoclear = hv.autoclear_features.value();
    h.refcount_order = hv.refcount_order.value();
    h.header_length = hv.header_length.value();
    if (h.header_length < kHeaderV3MinLength || h.header_length > (1ull << h.cluster_bits) ||
        h.header_length > file_size)
        return make_error(ErrorCode::corrupt, "header_length " + std::to_string(h.header_length) +
                                                  " is outside 104..cluster size and file size")
            .at(offsetof(HeaderV3, header_length));
    if (h.header_length > kHeaderV3MinLength) h.compression = hv.compression_type.value();
    return h;
}

// What this reader can open: known incompatible features, no encryption, refcount width, compression type.
Status check_features(const Header& h) {
    if (uint64_t unknown = h.incompat & ~kIncompatKnown) {
        std::string bits;
        for (uint32_t i = 0; i < 64; ++i)
            if (unknown & (1ull << i)) bits += (bits.empty() ? "" : ", ") + std::to_string(i);
        return make_error(ErrorCode::unsupported,
                          "unknown incompatible feature bit(s) " + bits + " (" + hex(unknown) + ")")
            .at(kOffIncompatible);
    }
    if (h.crypt_method != 0)
        return make_error(ErrorCode::unsupported, "encrypted qcow2 images are not supported (crypt_method " +
                                                      std::to_string(h.crypt_method) + ")");
    if (h.refcount_order > 6)
        return make_error(ErrorCode::corrupt,
                          "refcount_order " + std::to_string(h.refcount_order) + " is larger than 6")
            .at(offsetof(HeaderV3, refcount_order));
    if ((h.incompat & kIncompatCompression) == 0 && h.compression != kCompressionZlib)
        return make_error(ErrorCode::corrupt, "compression type " + std::to_string(h.compression) +
                                                  " set without the compression type feature bit")
            .at(offsetof(HeaderV3, compression_type));
    if ((h.incompat & kIncompatCompression) && h.compression == kCompressionZlib)
        return make_error(ErrorCode::corrupt, "compression type feature bit set with the zlib compression type")
            .at(offsetof(HeaderV3, compression_type));
    if (h.compression > kCompressionZstd)
        return make_error(ErrorCode::unsupported,
                          "compression type " + std::to_string(h.compression) + " is not supported");
    if ((h.incompat & kIncompatExtendedL2) && h.cluster_bits < 14)
        return make_error(ErrorCode::corrupt, "extended L2 entries need clusters of at least 16 KiB, not " +
                                                  std::to_string(1ull << h.cluster_bits))
            .at(offsetof(HeaderV2, cluster_bits));
    return ok();
}

// The L1 table covers the virtual size; the L1, refcount and snapshot tables lie in the file, within the limits.
Status check_tables(const Header& h, uint64_t file_size, const Limits& limits) {
    const uint64_t cs = 1ull << h.cluster_bits;
    uint64_t entry_bytes = (h.incompat & kIncompatExtendedL2) ? 16 : 8;
    uint64_t needed_l1 = util::div_round_up(h.size, (cs / entry_bytes) * cs);
    if (needed_l1 > h.l1_size)
        return make_error(ErrorCode::corrupt, "L1 table has " + std::to_string(h.l1_size) + " entries; virtual size " +
                                                  hex(h.size) + " needs " + std::to_string(needed_l1))
            .at(offsetof(HeaderV2, l1_size));
    VDISK_TRY(validate_table("L1 table", h.l1_offset, h.l1_size, 8, cs, file_size,
                             std::min(limits.max_metadata_bytes, limits.max_l1_bytes)));
    if (h.rt_clusters == 0)
        return make_error(ErrorCode::corrupt, "refcount table has no clusters")
            .at(offsetof(HeaderV2, refcount_table_clusters));
    VDISK_TRY(validate_table("refcount table", h.rt_offset, uint64_t(h.rt_clusters) * cs / 8, 8, cs, file_size,
                             limits.max_metadata_bytes));
    if (h.nb_snapshots > limits.max_snapshots)
        return make_error(ErrorCode::limit_exceeded, std::to_string(h.nb_snapshots) +
                                                         " snapshots exceed the limit of " +
                                                         std::to_string(limits.max_snapshots))
            .at(offsetof(HeaderV2, nb_snapshots));
    if (!h.nb_snapshots) return ok();
    constexpr uint64_t at = offsetof(HeaderV2, snapshots_offset);
    if (!util::is_aligned(h.snapshots_offset, cs))
        return make_error(ErrorCode::corrupt,
                          "snapshot table offset " + hex(h.snapshots_offset) + " is not cluster aligned")
            .at(at);
    if (h.snapshots_offset >= file_size)
        return make_error(ErrorCode::corrupt,
                          "snapshot table at " + hex(h.snapshots_offset) + " starts past the end of the file")
            .at(at);
    if (uint64_t(h.nb_snapshots) * sizeof(SnapshotHeader) > limits.max_metadata_bytes)
        return limit_error("snapshot table", uint64_t(h.nb_snapshots) * sizeof(SnapshotHeader),
                           limits.max_metadata_bytes, at);
    return ok();
}

// The backing file name, and the header extensions that run from the end of the header to the name or the end
// of cluster 0.
Status read_extensions(File& file, uint64_t file_size, const HeaderV2& b, Header& h) {
    const uint64_t cs = 1ull << h.cluster_bits;
    uint64_t backing_off = b.backing_file_offset.value();
    uint32_t backing_len = b.backing_file_size.value();
    uint64_t ext_end = std::min<uint64_t>(cs, file_size);
    if (backing_off) {
        constexpr uint64_t at = offsetof(HeaderV2, backing_file_offset);
        if (backing_len > kMaxBackingNameLength)
            return make_error(ErrorCode::corrupt,
                              "backing file name length " + std::to_string(backing_len) + " exceeds 1023")
                .at(offsetof(HeaderV2, backing_file_size));
        if (backing_off >= cs || backing_off + backing_len > cs || backing_off + backing_len > file_size)
            return make_error(ErrorCode::corrupt,
                              "backing file name at " + hex(backing_off) + " lies outside the first cluster")
                .at(at);
        if (backing_off < h.header_length)
            return make_error(ErrorCode::corrupt, "backing file name at " + hex(backing_off) + " overlaps the header")
                .at(at);
        ext_end = std::min(ext_end, backing_off);
        std::string name(backing_len, '\0');
        VDISK_TRY(read_exact(file, backing_off,
                             std::span<uint8_t>(reinterpret_cast<uint8_t*>(name.data()), backing_len),
                             "backing file name"));
        h.backing_name = std::move(name);
    }
    uint64_t pos = h.header_length;
    std::vector<uint8_t> ext(ext_end > pos ? ext_end - pos : 0);
    if (!ext.empty()) VDISK_TRY(read_exact(file, pos, ext, "header extensions"));
    for (size_t p = 0; p + sizeof(ExtensionHeader) <= ext.size();) {
        uint32_t type = util::load_be<uint32_t>(&ext[p]);
        uint32_t len = util::load_be<uint32_t>(&ext[p + 4]);
        if (type == kExtEnd) break;
        if (len > ext.size() - p - sizeof(ExtensionHeader))
            return make_error(ErrorCode::corrupt, "header extension " + hex(type) + " length " + std::to_string(len) +
                                                      " runs past the header cluster")
                .at(pos + p);
        p += sizeof(ExtensionHeader);
        std::string text(reinterpret_cast<const char*>(&ext[p]), len);
        if (type == kExtBackingFormat) h.backing_format = text;
        if (type == kExtDataFile) h.data_file_name = text;
        if (type == kExtBitmaps) h.has_bitmaps_ext = true;
        p += (len + 7u) & ~size_t(7);
    }
    if ((h.incompat & kIncompatDataFile) && !h.data_file_name)
        return make_error(ErrorCode::corrupt, "external data file feature set but the header has no data file name")
            .at(kOffIncompatible);
    if (!(h.incompat & kIncompatDataFile)) h.data_file_name.reset();
    if (h.data_file_name && h.backing_name && (h.autoclear & kAutoclearDataFileRaw))
        return make_error(ErrorCode::corrupt, "a raw external data file cannot have a backing file")
            .at(offsetof(HeaderV2, backing_file_offset));
    return ok();
}

Result<Header> parse_header(File& file, uint64_t file_size, const Limits& limits) {
    if (file_size < sizeof(HeaderV2)) return make_error(ErrorCode::invalid_format, "file too small for a qcow2 header");
    HeaderV3 hv{};
    VDISK_TRY(read_zero_fill(file, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&hv), sizeof hv)));
    VDISK_ASSIGN(Header h, read_fixed_fields(hv, file_size));
    VDISK_TRY(check_features(h));
    VDISK_TRY(check_tables(h, file_size, limits));
    VDISK_TRY(read_extensions(file, file_size, hv.v2, h));
    return h;
}

constexpr OptionSpec kOptions[] = {
    {"size", "virtual disk size"},
    {"compat", "0.10 (version 2) or 1.1 (version 3, default)"},
    {"cluster_size", "cluster size, 512 bytes to 2 MiB (default 64k)"},
    {"preallocation", "off, metadata, falloc or full"},
    {"backing_file", "name of the backing image"},
    {"backing_fmt", "format of the backing image"},
    {"lazy_refcounts", "set the lazy refcounts feature (on/off)"},
    {"refcount_bits", "width of a refcount entry: 1, 2, 4, 8, 16 (default), 32 or 64"},
    {"extended_l2", "subcluster allocation (on/off)"},
    {"compression_type", "zlib (default) or zstd"},
};

class Qcow2Format final : public Format {
public:
    std::string_view name() const noexcept override { return "qcow2"; }

    int probe(std::span<const uint8_t> head, std::span<const uint8_t>, uint64_t file_size) const noexcept override {
        if (head.size() < sizeof(HeaderV2)) return 0;
        HeaderV2 b;
        std::memcpy(&b, head.data(), sizeof b);
        if (b.magic.value() != kMagic) return 0;
        uint32_t version = b.version.value();
        if (version != 2 && version != 3) return 0;  // qcow version 1 is another format
        int score = 64;
        uint32_t cbits = b.cluster_bits.value();
        if (cbits >= 9 && cbits <= 21) {
            score += 8;
            uint64_t l1 = b.l1_table_offset.value(), rt = b.refcount_table_offset.value();
            if (util::is_aligned(l1, 1ull << cbits) && util::is_aligned(rt, 1ull << cbits) && rt < file_size)
                score += 8;
        }
        return score;
    }

    Result<std::unique_ptr<BlockDevice>> open(std::unique_ptr<File> file, const OpenContext& ctx) const override {
        VDISK_ASSIGN(uint64_t fsize, file->size());
        VDISK_ASSIGN(Header h, parse_header(*file, fsize, ctx.limits()));
        bool snapshot = !ctx.options().snapshot.empty();
        if (snapshot && ctx.options().read_write)
            return make_error(ErrorCode::invalid_argument, "internal snapshots can only be opened read-only");
        std::unique_ptr<File> data_file;
        if (h.data_file_name) {
            Access acc = ctx.options().read_write ? Access::read_write : Access::read_only;
            VDISK_ASSIGN(data_file, ctx.open_related(*h.data_file_name, acc, "data file"));
        }
        auto dev = std::make_unique<Qcow2Device>(std::move(file), std::move(data_file), std::move(h), fsize,
                                                 !ctx.options().read_write, ctx.limits());
        dev->set_budget(ctx.budget());
        VDISK_TRY(dev->load(ctx.options().snapshot));
        if (ctx.options().read_write && ctx.options().no_backing) dev->require_backing();
        return std::unique_ptr<BlockDevice>(std::move(dev));
    }

    std::span<const OptionSpec> create_options() const noexcept override { return kOptions; }

    Result<std::unique_ptr<BlockDevice>> create(const CreateOptions& opts, const OpenContext& ctx) const override;

    Result<MeasureResult> measure(const CreateOptions& opts, const MeasureSource& src) const override;

    bool has_internal_snapshots() const noexcept override { return true; }
};

Error bad(std::string message) { return make_error(ErrorCode::invalid_argument, std::move(message)); }

// The creation options measure and create share.
struct Params {
    uint32_t version = 3;
    uint64_t cs = 0, rbits = 0;
    bool ext_l2 = false;
    std::string prealloc;
    uint32_t rorder() const { return static_cast<uint32_t>(__builtin_ctzll(rbits)); }
};

Result<Params> parse_params(const CreateOptions& opts) {
    Params p;
    std::string compat = opts.get("compat").value_or("1.1");
    if (compat == "0.10" || compat == "v2") p.version = 2;
    else if (compat != "1.1" && compat != "v3") return bad("compat must be 0.10 or 1.1, not '" + compat + "'");
    VDISK_ASSIGN(p.cs, opts.get_size("cluster_size", 65536));
    if (!util::is_pow2(p.cs) || p.cs < 512 || p.cs > (2u << 20))
        return bad("cluster_size must be a power of two between 512 and 2M, not " + std::to_string(p.cs));
    p.prealloc = opts.get("preallocation").value_or("off");
    if (p.prealloc != "off" && p.prealloc != "metadata" && p.prealloc != "falloc" && p.prealloc != "full")
        return bad("preallocation must be off, metadata, falloc or full, not '" + p.prealloc + "'");
    VDISK_ASSIGN(p.ext_l2, opts.get_bool("extended_l2", false));
    VDISK_ASSIGN(p.rbits, opts.get_size("refcount_bits", 16));
    if (!util::is_pow2(p.rbits) || p.rbits > 64) return bad("refcount_bits must be a power of two up to 64");
    return p;
}

// The figures qemu-img 7.2 prints: metadata for a fully allocated image of the (cluster-rounded) size, plus
// the clusters the source has data in (all of them with a backing file or preallocation=falloc|full).
Result<MeasureResult> Qcow2Format::measure(const CreateOptions& opts, const MeasureSource& src) const {
    VDISK_ASSIGN(Params p, parse_params(opts));
    if (p.version == 2 && p.rbits != 16) return bad("refcount_bits other than 16 need compat=1.1");
    const uint64_t cs = p.cs, l2e = p.ext_l2 ? 16 : 8;
    auto vs = util::align_up(src.virtual_size, cs);
    if (!vs) return bad("virtual size " + std::to_string(src.virtual_size) + " is too large");
    const uint64_t vsize = *vs;
    uint64_t l2_tables = util::div_round_up(vsize / cs, cs / l2e);
    if (l2_tables * 8 > (32u << 20)) return bad("The image size is too large (try using a larger cluster size)");
    uint64_t data = 0;
    if (src.has_image) {
        if (opts.get("backing_file")) {
            data = vsize;  // nothing is known about what the backing file shares with the source
        } else {
            VDISK_ASSIGN(uint64_t units, src.data_units(cs));
            data = units * cs;
        }
    }
    if (p.prealloc == "full" || p.prealloc == "falloc") data = vsize;
    // Header cluster, L2 tables for every cluster, the L1 table in whole clusters, then refcounts for it all.
    uint64_t nl2e = util::div_round_up(vsize / cs, cs / l2e) * (cs / l2e);
    uint64_t meta = cs + nl2e * l2e;
    uint64_t nl1e = util::div_round_up(nl2e * l2e / cs, cs / 8) * (cs / 8);
    meta += nl1e * 8;
    auto [blocks, table] = refcount_metadata((meta + vsize) / cs, cs, p.rorder());
    meta += (blocks + table) * cs;
    MeasureResult r;
    r.fully_allocated = meta + vsize;
    r.required = meta + data;
    if (p.version >= 3 && src.has_image && src.source_has_bitmap_support) r.bitmaps = 0;
    return r;
}

Result<std::unique_ptr<BlockDevice>> Qcow2Format::create(const CreateOptions& opts, const OpenContext& ctx) const {
    uint64_t size = opts.size.value_or(0);
    VDISK_ASSIGN(Params p, parse_params(opts));
    const uint64_t cs = p.cs, rbits = p.rbits;
    const uint32_t version = p.version, cbits = static_cast<uint32_t>(__builtin_ctzll(cs)), rorder = p.rorder();
    const bool ext_l2 = p.ext_l2;
    VDISK_ASSIGN(bool lazy, opts.get_bool("lazy_refcounts", false));
    std::string ctype = opts.get("compression_type").value_or("zlib");
    if (ctype != "zlib" && ctype != "zstd") return bad("compression_type must be zlib or zstd, not '" + ctype + "'");
    auto backing = opts.get("backing_file");
    auto backing_fmt = opts.get("backing_fmt");
    if (version == 2 && (lazy || ext_l2 || rbits != 16 || ctype != "zlib"))
        return bad("lazy_refcounts, extended_l2, refcount_bits and compression_type need compat=1.1");
    if (ext_l2 && cs < 16384) return bad("extended_l2 needs a cluster size of at least 16k");
    if (backing_fmt && !backing) return bad("backing_fmt needs backing_file");
    if (backing && backing->size() > kMaxBackingNameLength) return bad("backing file name longer than 1023 bytes");

    Header h;
    h.version = version;
    h.cluster_bits = cbits;
    h.size = size;
    h.refcount_order = rorder;
    h.header_length = version == 3 ? kHeaderV3Length : kHeaderV2Length;
    if (lazy) h.compat |= kCompatLazyRefcounts;
    if (ext_l2) h.incompat |= kIncompatExtendedL2;
    if (ctype == "zstd") {
        h.incompat |= kIncompatCompression;
        h.compression = kCompressionZstd;
    }
    if (backing) h.backing_name = *backing;
    if (backing_fmt) h.backing_format = *backing_fmt;

    uint64_t entry_bytes = ext_l2 ? 16 : 8;
    uint64_t l2e = cs / entry_bytes;
    uint64_t l1_entries = util::div_round_up(size, l2e * cs);
    if (l1_entries > (uint64_t(1) << 31) / 8 * 8 || l1_entries * 8 > (256ull << 20))
        return bad("virtual size " + std::to_string(size) + " is too large for cluster size " + std::to_string(cs));
    h.l1_size = static_cast<uint32_t>(l1_entries);
    uint64_t l1c = util::div_round_up(l1_entries * 8, cs);
    uint64_t epb = (cs * 8) >> rorder;
    auto [nblocks, rtc] = refcount_metadata(1 + l1c, cs, rorder);
    h.rt_offset = cs;
    h.rt_clusters = static_cast<uint32_t>(rtc);
    h.l1_offset = (1 + rtc + nblocks) * cs;
    uint64_t total = 1 + rtc + nblocks + l1c;

    // Cluster 0: header, extensions, backing file name.
    HeaderV3 hv{};
    hv.v2.magic = kMagic;
    hv.v2.version = version;
    hv.v2.cluster_bits = cbits;
    hv.v2.size = size;
    hv.v2.l1_size = h.l1_size;
    hv.v2.l1_table_offset = h.l1_offset;
    hv.v2.refcount_table_offset = h.rt_offset;
    hv.v2.refcount_table_clusters = h.rt_clusters;
    hv.incompatible_features = h.incompat;
    hv.compatible_features = h.compat;
    hv.autoclear_features = h.autoclear;
    hv.refcount_order = rorder;
    hv.header_length = h.header_length;
    hv.compression_type = h.compression;
    std::vector<uint8_t> c0(h.header_length);  // version 2 ends where version 3 starts its fields
    std::memcpy(c0.data(), &hv, c0.size());
    if (backing_fmt) put_ext(c0, kExtBackingFormat, *backing_fmt);
    c0.resize(c0.size() + 8, 0);  // end of extensions
    if (backing) {
        util::store_be<uint64_t>(&c0[kOffBackingName], c0.size());
        util::store_be<uint32_t>(&c0[offsetof(HeaderV2, backing_file_size)], static_cast<uint32_t>(backing->size()));
        c0.insert(c0.end(), backing->begin(), backing->end());
    }
    if (c0.size() > cs) return bad("header, extensions and backing file name do not fit one cluster");

    VDISK_ASSIGN(auto file, ctx.fs().create(ctx.image_name()));
    std::vector<uint8_t> meta(static_cast<size_t>(total * cs), 0);
    std::copy(c0.begin(), c0.end(), meta.begin());
    for (uint64_t i = 0; i < nblocks; ++i) util::store_be<uint64_t>(&meta[cs + i * 8], (1 + rtc + i) * cs);
    // Refcount 1 for every metadata cluster.
    for (uint64_t c = 0; c < total; ++c) set_refcount_entry(&meta[(1 + rtc + c / epb) * cs], c % epb, rorder, 1);
    VDISK_TRY(file->write_at(0, meta));
    auto dev = std::make_unique<Qcow2Device>(std::move(file), nullptr, std::move(h), total * cs, false, ctx.limits());
    dev->set_budget(ctx.budget());
    VDISK_TRY(dev->init_new());
    dev->require_backing();
    if (p.prealloc != "off") VDISK_TRY(dev->preallocate(p.prealloc == "full", p.prealloc == "falloc"));
    return std::unique_ptr<BlockDevice>(std::move(dev));
}

}  // namespace
}  // namespace vdisk::qcow2

namespace vdisk {
std::unique_ptr<Format> make_qcow2_format() { return std::make_unique<qcow2::Qcow2Format>(); }
}  // namespace vdisk
