// SPDX-License-Identifier: Apache-2.0
// qcow2: probe, header parsing and validation, open, create.
#include <algorithm>
#include <cstring>

#include "qcow2_internal.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"

namespace vdisk::qcow2 {

Result<CheckResult> check_image(Qcow2Device& dev, RepairMode repair);

Error corrupt_at(std::string message, uint64_t offset) {
    Error e = make_error(ErrorCode::corrupt, std::move(message));
    e.offset = offset;
    return e;
}

namespace {

Error limit_error(std::string what, uint64_t bytes, uint64_t cap, uint64_t offset) {
    Error e = make_error(ErrorCode::limit_exceeded, what + " needs " + std::to_string(bytes) + " bytes, more than the " +
                                                        std::to_string(cap) + " byte limit");
    e.offset = offset;
    return e;
}

// A table [off, off + bytes) must be cluster aligned, inside the file and within the metadata cap.
Status validate_table(const char* what, uint64_t off, uint64_t entries, uint64_t entry_size, uint64_t cluster_size,
                      uint64_t file_size, uint64_t cap) {
    auto bytes = util::mul<uint64_t>(entries, entry_size);
    if (!bytes || *bytes > cap) return limit_error(std::string(what), bytes.value_or(UINT64_MAX), cap, off);
    if (!util::is_aligned(off, cluster_size))
        return corrupt_at(std::string(what) + " offset " + hex(off) + " is not cluster aligned", off);
    if (entries && !util::range_within(off, *bytes, file_size))
        return corrupt_at(std::string(what) + " at " + hex(off) + " (" + std::to_string(*bytes) +
                              " bytes) extends past the end of the file (" + hex(file_size) + ")",
                          off);
    if (entries && off == 0) return corrupt_at(std::string(what) + " overlaps the header at offset 0", off);
    return ok();
}

Result<Header> parse_header(File& file, uint64_t file_size, const Limits& limits) {
    uint8_t raw[sizeof(HeaderV3)] = {};
    if (file_size < sizeof(HeaderV2)) return make_error(ErrorCode::invalid_format, "file too small for a qcow2 header");
    VDISK_TRY(read_zero_fill(file, 0, std::span<uint8_t>(raw, sizeof raw)));
    HeaderV3 hv;
    std::memcpy(&hv, raw, sizeof hv);
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
        return corrupt_at("cluster_bits " + std::to_string(h.cluster_bits) + " is outside 9..21", 20);
    const uint64_t cs = 1ull << h.cluster_bits;
    h.size = b.size.value();
    h.crypt_method = b.crypt_method.value();
    h.l1_size = b.l1_size.value();
    h.l1_offset = b.l1_table_offset.value();
    h.rt_offset = b.refcount_table_offset.value();
    h.rt_clusters = b.refcount_table_clusters.value();
    h.nb_snapshots = b.nb_snapshots.value();
    h.snapshots_offset = b.snapshots_offset.value();
    if (h.version == 2) {
        h.header_length = kHeaderV2Length;
        h.refcount_order = 4;
    } else {
        h.incompat = hv.incompatible_features.value();
        h.compat = hv.compatible_features.value();
        h.autoclear = hv.autoclear_features.value();
        h.refcount_order = hv.refcount_order.value();
        h.header_length = hv.header_length.value();
        if (h.header_length < kHeaderV3MinLength || h.header_length > cs || h.header_length > file_size)
            return corrupt_at("header_length " + std::to_string(h.header_length) +
                                  " is outside 104..cluster size and file size",
                              100);
        if (h.header_length > kHeaderV3MinLength) h.compression = hv.compression_type.value();
    }
    if (uint64_t unknown = h.incompat & ~kIncompatKnown) {
        std::string bits;
        for (uint32_t i = 0; i < 64; ++i)
            if (unknown & (1ull << i)) bits += (bits.empty() ? "" : ", ") + std::to_string(i);
        Error e = make_error(ErrorCode::unsupported, "unknown incompatible feature bit(s) " + bits + " (" +
                                                         hex(unknown) + ")");
        e.offset = kOffIncompatible;
        return e;
    }
    if (h.crypt_method != 0)
        return make_error(ErrorCode::unsupported,
                          "encrypted qcow2 images are not supported (crypt_method " + std::to_string(h.crypt_method) + ")");
    if (h.refcount_order > 6)
        return corrupt_at("refcount_order " + std::to_string(h.refcount_order) + " is larger than 6", 96);
    if ((h.incompat & kIncompatCompression) == 0 && h.compression != kCompressionZlib)
        return corrupt_at("compression type " + std::to_string(h.compression) +
                              " set without the compression type feature bit",
                          104);
    if ((h.incompat & kIncompatCompression) && h.compression == kCompressionZlib)
        return corrupt_at("compression type feature bit set with the zlib compression type", 104);
    if (h.compression > kCompressionZstd)
        return make_error(ErrorCode::unsupported, "compression type " + std::to_string(h.compression) + " is not supported");
    if ((h.incompat & kIncompatExtendedL2) && h.cluster_bits < 14)
        return corrupt_at("extended L2 entries need clusters of at least 16 KiB, not " + std::to_string(cs), 20);

    // The L1 table must cover the virtual size.
    uint64_t entry_bytes = (h.incompat & kIncompatExtendedL2) ? 16 : 8;
    uint64_t bytes_per_l2 = (cs / entry_bytes) * cs;
    uint64_t needed_l1 = util::div_round_up(h.size, bytes_per_l2);
    if (needed_l1 > h.l1_size)
        return corrupt_at("L1 table has " + std::to_string(h.l1_size) + " entries; virtual size " + hex(h.size) +
                              " needs " + std::to_string(needed_l1),
                          36);
    VDISK_TRY(validate_table("L1 table", h.l1_offset, h.l1_size, 8, cs, file_size,
                             std::min(limits.max_metadata_bytes, limits.max_l1_bytes)));
    if (h.rt_clusters == 0) return corrupt_at("refcount table has no clusters", 56);
    VDISK_TRY(validate_table("refcount table", h.rt_offset, uint64_t(h.rt_clusters) * cs / 8, 8, cs, file_size,
                             limits.max_metadata_bytes));
    if (h.nb_snapshots > limits.max_snapshots) {
        Error e = make_error(ErrorCode::limit_exceeded, std::to_string(h.nb_snapshots) + " snapshots exceed the limit of " +
                                                            std::to_string(limits.max_snapshots));
        e.offset = 60;
        return e;
    }
    if (h.nb_snapshots) {
        if (!util::is_aligned(h.snapshots_offset, cs))
            return corrupt_at("snapshot table offset " + hex(h.snapshots_offset) + " is not cluster aligned", 64);
        if (h.snapshots_offset >= file_size)
            return corrupt_at("snapshot table at " + hex(h.snapshots_offset) + " starts past the end of the file", 64);
        if (uint64_t(h.nb_snapshots) * sizeof(SnapshotHeader) > limits.max_metadata_bytes)
            return limit_error("snapshot table", uint64_t(h.nb_snapshots) * sizeof(SnapshotHeader),
                               limits.max_metadata_bytes, 64);
    }

    // Header extensions run from the end of the header to the backing file name or the end of cluster 0.
    uint64_t backing_off = b.backing_file_offset.value();
    uint32_t backing_len = b.backing_file_size.value();
    uint64_t ext_end = std::min<uint64_t>(cs, file_size);
    if (backing_off) {
        if (backing_len > kMaxBackingNameLength)
            return corrupt_at("backing file name length " + std::to_string(backing_len) + " exceeds 1023", 16);
        if (backing_off >= cs || backing_off + backing_len > cs || backing_off + backing_len > file_size)
            return corrupt_at("backing file name at " + hex(backing_off) + " lies outside the first cluster", 8);
        if (backing_off < h.header_length)
            return corrupt_at("backing file name at " + hex(backing_off) + " overlaps the header", 8);
        ext_end = std::min(ext_end, backing_off);
        std::string name(backing_len, '\0');
        VDISK_TRY(read_exact(file, backing_off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(name.data()), backing_len),
                             "backing file name"));
        h.backing_name = std::move(name);
    }
    uint64_t pos = h.header_length;
    std::vector<uint8_t> ext(ext_end > pos ? ext_end - pos : 0);
    if (!ext.empty()) VDISK_TRY(read_exact(file, pos, ext, "header extensions"));
    size_t p = 0;
    while (p + sizeof(ExtensionHeader) <= ext.size()) {
        uint32_t type = util::load_be<uint32_t>(&ext[p]);
        uint32_t len = util::load_be<uint32_t>(&ext[p + 4]);
        uint64_t at = pos + p;
        if (type == kExtEnd) break;
        p += sizeof(ExtensionHeader);
        if (len > ext.size() - p)
            return corrupt_at("header extension " + hex(type) + " length " + std::to_string(len) +
                                  " runs past the header cluster",
                              at);
        std::string text(reinterpret_cast<const char*>(&ext[p]), len);
        switch (type) {
            case kExtBackingFormat: h.backing_format = text; break;
            case kExtDataFile: h.data_file_name = text; break;
            case kExtBitmaps: h.has_bitmaps_ext = true; break;
            default: break;
        }
        p += (len + 7u) & ~size_t(7);
    }
    if ((h.incompat & kIncompatDataFile) && !h.data_file_name)
        return corrupt_at("external data file feature set but the header has no data file name", kOffIncompatible);
    if (!(h.incompat & kIncompatDataFile)) h.data_file_name.reset();
    if (h.data_file_name && h.backing_name && (h.autoclear & kAutoclearDataFileRaw))
        return corrupt_at("a raw external data file cannot have a backing file", 8);
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

void put_ext(std::vector<uint8_t>& out, uint32_t type, std::string_view data) {
    size_t at = out.size();
    out.resize(at + 8 + ((data.size() + 7) & ~size_t(7)), 0);
    util::store_be<uint32_t>(&out[at], type);
    util::store_be<uint32_t>(&out[at + 4], static_cast<uint32_t>(data.size()));
    std::memcpy(&out[at + 8], data.data(), data.size());
}

class Qcow2Format final : public Format {
public:
    std::string_view name() const noexcept override { return "qcow2"; }

    int probe(std::span<const uint8_t> head, std::span<const uint8_t>, uint64_t file_size) const noexcept override {
        if (head.size() < sizeof(HeaderV2)) return 0;
        if (util::load_be<uint32_t>(head.data()) != kMagic) return 0;
        uint32_t version = util::load_be<uint32_t>(head.data() + 4);
        if (version != 2 && version != 3) return 0;  // qcow version 1 is another format
        int score = 64;
        uint32_t cbits = util::load_be<uint32_t>(head.data() + 20);
        if (cbits >= 9 && cbits <= 21) {
            score += 8;
            uint64_t l1 = util::load_be<uint64_t>(head.data() + 40), rt = util::load_be<uint64_t>(head.data() + 48);
            if (util::is_aligned(l1, 1ull << cbits) && util::is_aligned(rt, 1ull << cbits) && rt < file_size) score += 8;
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

// Host clusters of refcount table + blocks needed to count `clusters` clusters plus themselves: iterate to
// the fixed point (the refcount structures count themselves too).
uint64_t refcount_metadata_clusters(uint64_t clusters, uint64_t cs, uint32_t refcount_order) {
    const uint64_t per_block = cs * 8 >> refcount_order, per_table_cluster = cs / 8;
    uint64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = util::div_round_up(clusters + table + blocks, per_block);
        table = util::div_round_up(blocks, per_table_cluster);
        n = clusters + blocks + table;
    } while (n != last);
    return blocks + table;
}

// The figures qemu-img 7.2 prints: metadata for a fully allocated image of the (cluster-rounded) size, plus
// the clusters the source has data in (all of them with a backing file or preallocation=falloc|full).
Result<MeasureResult> Qcow2Format::measure(const CreateOptions& opts, const MeasureSource& src) const {
    auto bad = [](std::string m) { return make_error(ErrorCode::invalid_argument, std::move(m)); };
    std::string compat = opts.get("compat").value_or("1.1");
    uint32_t version;
    if (compat == "0.10" || compat == "v2") version = 2;
    else if (compat == "1.1" || compat == "v3") version = 3;
    else return bad("compat must be 0.10 or 1.1, not '" + compat + "'");
    VDISK_ASSIGN(bool ext_l2, opts.get_bool("extended_l2", false));
    VDISK_ASSIGN(uint64_t cs, opts.get_size("cluster_size", 65536));
    if (!util::is_pow2(cs) || cs < 512 || cs > (2u << 20))
        return bad("cluster_size must be a power of two between 512 and 2M, not " + std::to_string(cs));
    VDISK_ASSIGN(uint64_t rbits, opts.get_size("refcount_bits", 16));
    if (!util::is_pow2(rbits) || rbits > 64) return bad("refcount_bits must be a power of two up to 64");
    if (version == 2 && rbits != 16) return bad("refcount_bits other than 16 need compat=1.1");
    std::string prealloc = opts.get("preallocation").value_or("off");
    if (prealloc != "off" && prealloc != "metadata" && prealloc != "falloc" && prealloc != "full")
        return bad("preallocation must be off, metadata, falloc or full, not '" + prealloc + "'");
    const uint32_t rorder = static_cast<uint32_t>(__builtin_ctzll(rbits));
    const uint64_t l2e = ext_l2 ? 16 : 8;
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
    if (prealloc == "full" || prealloc == "falloc") data = vsize;
    // Header cluster, L2 tables for every cluster, the L1 table in whole clusters, then refcounts for it all.
    uint64_t nl2e = util::div_round_up(vsize / cs, cs / l2e) * (cs / l2e);
    uint64_t meta = cs + nl2e * l2e;
    uint64_t nl1e = util::div_round_up(nl2e * l2e / cs, cs / 8) * (cs / 8);
    meta += nl1e * 8;
    meta += refcount_metadata_clusters((meta + vsize) / cs, cs, rorder) * cs;
    MeasureResult r;
    r.fully_allocated = meta + vsize;
    r.required = meta + data;
    if (version >= 3 && src.has_image && src.source_has_bitmap_support) r.bitmaps = 0;
    return r;
}

Result<std::unique_ptr<BlockDevice>> Qcow2Format::create(const CreateOptions& opts, const OpenContext& ctx) const {
    auto bad = [](std::string m) { return make_error(ErrorCode::invalid_argument, std::move(m)); };
    uint64_t size = opts.size.value_or(0);
    std::string compat = opts.get("compat").value_or("1.1");
    uint32_t version;
    if (compat == "0.10" || compat == "v2") version = 2;
    else if (compat == "1.1" || compat == "v3") version = 3;
    else return bad("compat must be 0.10 or 1.1, not '" + compat + "'");
    VDISK_ASSIGN(uint64_t cs, opts.get_size("cluster_size", 65536));
    if (!util::is_pow2(cs) || cs < 512 || cs > (2u << 20))
        return bad("cluster_size must be a power of two between 512 and 2M, not " + std::to_string(cs));
    uint32_t cbits = static_cast<uint32_t>(__builtin_ctzll(cs));
    std::string prealloc = opts.get("preallocation").value_or("off");
    if (prealloc != "off" && prealloc != "metadata" && prealloc != "falloc" && prealloc != "full")
        return bad("preallocation must be off, metadata, falloc or full, not '" + prealloc + "'");
    VDISK_ASSIGN(bool lazy, opts.get_bool("lazy_refcounts", false));
    VDISK_ASSIGN(bool ext_l2, opts.get_bool("extended_l2", false));
    VDISK_ASSIGN(uint64_t rbits, opts.get_size("refcount_bits", 16));
    if (!util::is_pow2(rbits) || rbits > 64) return bad("refcount_bits must be a power of two up to 64");
    uint32_t rorder = static_cast<uint32_t>(__builtin_ctzll(rbits));
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
    uint64_t nblocks = 1, rtc = 1;
    for (;;) {
        uint64_t total = 1 + rtc + nblocks + l1c;
        uint64_t nb = util::div_round_up(total, epb);
        uint64_t rc = util::div_round_up(nb * 8, cs);
        if (nb == nblocks && rc == rtc) break;
        nblocks = nb;
        rtc = rc;
    }
    h.rt_offset = cs;
    h.rt_clusters = static_cast<uint32_t>(rtc);
    h.l1_offset = (1 + rtc + nblocks) * cs;
    uint64_t total = 1 + rtc + nblocks + l1c;

    // Cluster 0: header, extensions, backing file name.
    std::vector<uint8_t> c0(h.header_length, 0);
    util::store_be<uint32_t>(&c0[0], kMagic);
    util::store_be<uint32_t>(&c0[4], version);
    util::store_be<uint32_t>(&c0[20], cbits);
    util::store_be<uint64_t>(&c0[24], size);
    util::store_be<uint32_t>(&c0[36], h.l1_size);
    util::store_be<uint64_t>(&c0[40], h.l1_offset);
    util::store_be<uint64_t>(&c0[48], h.rt_offset);
    util::store_be<uint32_t>(&c0[56], h.rt_clusters);
    if (version == 3) {
        util::store_be<uint64_t>(&c0[72], h.incompat);
        util::store_be<uint64_t>(&c0[80], h.compat);
        util::store_be<uint64_t>(&c0[88], h.autoclear);
        util::store_be<uint32_t>(&c0[96], rorder);
        util::store_be<uint32_t>(&c0[100], h.header_length);
        c0[104] = h.compression;
    }
    if (backing_fmt) put_ext(c0, kExtBackingFormat, *backing_fmt);
    c0.resize(c0.size() + 8, 0);  // end of extensions
    if (backing) {
        util::store_be<uint64_t>(&c0[8], c0.size());
        util::store_be<uint32_t>(&c0[16], static_cast<uint32_t>(backing->size()));
        c0.insert(c0.end(), backing->begin(), backing->end());
    }
    if (c0.size() > cs) return bad("header, extensions and backing file name do not fit one cluster");

    VDISK_ASSIGN(auto file, ctx.fs().create(ctx.image_name()));
    std::vector<uint8_t> meta(static_cast<size_t>(total * cs), 0);
    std::copy(c0.begin(), c0.end(), meta.begin());
    for (uint64_t i = 0; i < nblocks; ++i)
        util::store_be<uint64_t>(&meta[cs + i * 8], (1 + rtc + i) * cs);
    // Refcount 1 for every metadata cluster; entries are packed big-endian, sub-byte widths low bits first.
    for (uint64_t c = 0; c < total; ++c) {
        uint8_t* blk = &meta[(1 + rtc + c / epb) * cs];
        uint64_t i = c % epb;
        if (rbits < 8) blk[i * rbits / 8] |= uint8_t(1u << ((i * rbits) % 8));
        else blk[i * rbits / 8 + rbits / 8 - 1] = 1;
    }
    VDISK_TRY(file->write_at(0, meta));
    auto dev = std::make_unique<Qcow2Device>(std::move(file), nullptr, std::move(h), total * cs, false,
                                             ctx.limits());
    dev->set_budget(ctx.budget());
    VDISK_TRY(dev->init_new());
    dev->require_backing();
    if (prealloc != "off") VDISK_TRY(dev->preallocate(prealloc == "full", prealloc == "falloc"));
    return std::unique_ptr<BlockDevice>(std::move(dev));
}

}  // namespace
}  // namespace vdisk::qcow2

namespace vdisk {
std::unique_ptr<Format> make_qcow2_format() { return std::make_unique<qcow2::Qcow2Format>(); }
}  // namespace vdisk
