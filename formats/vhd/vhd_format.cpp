// SPDX-License-Identifier: Apache-2.0
// VHD (qemu's "vpc"): probe, open (fixed, dynamic, differencing), create (dynamic, fixed, Azure) and check.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <ctime>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "util/utf16.hpp"
#include "vhd_internal.hpp"

namespace vdisk {
namespace {

using namespace vhd;

constexpr uint64_t kNoOffset = ~uint64_t{0};
constexpr uint32_t kDefaultBlockSize = 2u << 20;
// Locator payloads are paths; anything longer is not a name we would follow.
constexpr uint32_t kMaxLocatorBytes = 64u << 10;
constexpr uint64_t kMiB = 1ull << 20;

// preallocation=falloc reserves the range, full writes zeros over it (true thick, as VMware/Hyper-V mean it).
Status preallocate_range(File& f, uint64_t off, uint64_t len, const std::string& mode) {
    if (mode == "falloc") return f.allocate(off, len);
    return mode == "full" ? fill(f, off, len, 0) : ok();
}

bool is_footer(std::span<const uint8_t> b) { return b.size() >= 512 && std::memcmp(b.data(), "conectix", 8) == 0; }

bool footer_checksum_ok(std::span<const uint8_t> b) {
    return util::load_be<uint32_t>(b.data() + offsetof(Footer, checksum)) ==
           checksum(b.first(512), offsetof(Footer, checksum));
}

// The virtual size as qemu (7.2) computes it. Virtual PC sized disks by their CHS geometry, Hyper-V,
// Disk2vhd, XenServer and newer qemu by current_size; the maximal geometry means "too big for CHS", so
// current_size then too.
uint64_t virtual_size(const Footer& f) {
    uint64_t chs = uint64_t{f.cylinders.value()} * f.heads * f.sectors_per_track;
    static constexpr const char* kSizeApps[] = {"win ", "qem2", "d2v ", "CTXS"};
    bool use_chs = std::memcmp(f.creator_app, "tap\0", 4) != 0;
    for (const char* app : kSizeApps)
        if (std::memcmp(f.creator_app, app, 4) == 0) use_chs = false;
    if (!use_chs || chs == kMaxChsSectors) return f.current_size.value() / kSector * kSector;
    return chs * kSector;
}

// The spec's CHS algorithm (appendix "CHS Calculation").
void geometry(uint64_t sectors, uint16_t& c, uint8_t& h, uint8_t& s) {
    sectors = std::min(sectors, kMaxChsSectors);
    uint64_t spt, heads, cth;
    if (sectors >= 65535ull * 16 * 63) {
        spt = 255;
        heads = 16;
        cth = sectors / spt;
    } else {
        spt = 17;
        cth = sectors / spt;
        heads = std::max<uint64_t>((cth + 1023) / 1024, 4);
        if (cth >= heads * 1024 || heads > 16) {
            spt = 31;
            heads = 16;
            cth = sectors / spt;
        }
        if (cth >= heads * 1024) {
            spt = 63;
            heads = 16;
            cth = sectors / spt;
        }
    }
    c = static_cast<uint16_t>(cth / heads);
    h = static_cast<uint8_t>(heads);
    s = static_cast<uint8_t>(spt);
}

// Windows locators use backslashes and ".\" prefixes; names in vdisk are '/'-separated.
std::string normalize_path(std::string p) {
    std::replace(p.begin(), p.end(), '\\', '/');
    while (p.size() > 2 && p.compare(0, 2, "./") == 0) p.erase(0, 2);
    return p;
}

Status parse_parent(File& file, uint64_t file_size, const DynamicHeader& h, Meta& m) {
    std::memcpy(m.parent_uuid, h.parent_unique_id, 16);
    std::vector<std::string> relative, absolute;
    for (const ParentLocator& loc : h.locators) {
        const uint32_t code = loc.platform_code.value();
        const bool w2ru = code == 0x57327275, w2ku = code == 0x57326b75, macx = code == 0x4d616358;
        if (!w2ru && !w2ku && !macx) continue;  // "Mac " aliases are opaque Mac OS structures
        const uint64_t off = loc.platform_data_offset.value();
        const uint32_t len = loc.platform_data_length.value();
        if (len == 0 || len > kMaxLocatorBytes || !util::range_within(off, len, file_size)) continue;
        std::vector<uint8_t> data(len);
        VDISK_TRY(read_exact(file, off, data, "parent locator"));
        std::string name;
        if (macx) {
            name.assign(data.begin(), std::find(data.begin(), data.end(), uint8_t{0}));
            if (name.compare(0, 16, "file://localhost") == 0) name.erase(0, 16);
            else if (name.compare(0, 7, "file://") == 0) name.erase(0, 7);
        } else {
            // A name ends at its first NUL; what follows is padding.
            name = normalize_path(util::utf16_to_utf8(data, util::Utf16Order::little, util::Utf16Nul::ends));
        }
        if (name.empty()) continue;
        (w2ru ? relative : absolute).push_back(name);
    }
    std::string unicode = normalize_path(
        util::utf16_to_utf8(h.parent_unicode_name, util::Utf16Order::big, util::Utf16Nul::ends));
    for (auto* list : {&relative, &absolute})
        for (auto& n : *list)
            if (std::find(m.parent_names.begin(), m.parent_names.end(), n) == m.parent_names.end())
                m.parent_names.push_back(n);
    if (!unicode.empty() && std::find(m.parent_names.begin(), m.parent_names.end(), unicode) == m.parent_names.end())
        m.parent_names.push_back(unicode);
    // An absolute Windows path cannot be followed here; its file name next to the image often can.
    for (auto& n : absolute) {
        std::string base(base_name(n));
        if (!base.empty() && std::find(m.parent_names.begin(), m.parent_names.end(), base) == m.parent_names.end())
            m.parent_names.push_back(base);
    }
    if (m.parent_names.empty())
        return make_error(ErrorCode::corrupt, "differencing VHD names no parent (no usable locator or parent name)");
    return ok();
}

Status parse_dynamic(File& file, uint64_t file_size, const OpenContext& ctx, Meta& m, std::vector<uint32_t>& bat) {
    const uint64_t hoff = m.footer.data_offset.value();
    if (!util::range_within(hoff, sizeof(DynamicHeader), file_size))
        return make_error(ErrorCode::corrupt, "dynamic header offset " + hex(hoff) +
                                                  " lies past the end of the file (" + hex(file_size) + ")")
            .at(offsetof(Footer, data_offset));
    DynamicHeader h;
    VDISK_TRY(read_exact(file, hoff, {reinterpret_cast<uint8_t*>(&h), sizeof h}, "dynamic header"));
    auto fail = [&](ErrorCode c, std::string msg) { return make_error(c, std::move(msg)).at(hoff); };
    if (std::memcmp(h.cookie, "cxsparse", 8) != 0)
        return fail(ErrorCode::corrupt, "dynamic header has no 'cxsparse' cookie");
    uint32_t want = checksum(bytes_of(h), offsetof(DynamicHeader, checksum));
    if (h.checksum.value() != want)
        return fail(ErrorCode::corrupt,
                    "dynamic header checksum " + hex(h.checksum.value()) + " does not match the computed " + hex(want));
    m.header_offset = hoff;
    m.block_size = h.block_size.value();
    if (m.block_size < kSector || !util::is_pow2(m.block_size))
        return fail(ErrorCode::corrupt, "block size " + hex(m.block_size) + " is not a power of two >= 512");
    m.bitmap_size = static_cast<uint32_t>(*util::align_up(m.block_size / kSector / 8, kSector));
    m.max_table_entries = h.max_table_entries.value();
    if (uint64_t{m.max_table_entries} * m.block_size < m.size)
        return fail(ErrorCode::corrupt, "BAT of " + std::to_string(m.max_table_entries) + " entries of " +
                                            hex(m.block_size) + " bytes cannot cover the virtual size " + hex(m.size));
    m.bat_offset = h.table_offset.value();
    const uint64_t bat_bytes = uint64_t{m.max_table_entries} * 4;
    if (!util::range_within(m.bat_offset, bat_bytes, file_size))
        return fail(ErrorCode::corrupt, "BAT at " + hex(m.bat_offset) + " with " + std::to_string(m.max_table_entries) +
                                            " entries extends past the end of the file (" + hex(file_size) + ")");
    if (bat_bytes > ctx.limits().max_metadata_bytes)
        return fail(ErrorCode::limit_exceeded,
                    "BAT of " + std::to_string(bat_bytes) + " bytes exceeds the metadata limit");
    // Entries past the virtual size are never used; only the needed ones are kept and validated.
    const uint64_t needed = util::div_round_up(m.size, m.block_size);
    VDISK_ASSIGN(Charge raw_charge, Charge::make(ctx.budget(), bat_bytes + needed * 4, "BAT"));
    VDISK_TRY(ctx.budget()->work(needed, "BAT"));
    std::vector<uint8_t> raw(static_cast<size_t>(bat_bytes));
    VDISK_TRY(read_exact(file, m.bat_offset, raw, "BAT"));
    bat.resize(static_cast<size_t>(needed));
    const uint64_t span = uint64_t{m.bitmap_size} + m.block_size;
    for (uint64_t i = 0; i < needed; ++i) {
        uint32_t e = util::load_be<uint32_t>(raw.data() + 4 * i);
        if (e != kBatUnused && !util::range_within(uint64_t{e} * kSector, span, file_size)) {
            return make_error(ErrorCode::corrupt,
                              "BAT entry " + std::to_string(i) + " points to block at " + hex(uint64_t{e} * kSector) +
                                  " which extends past the end of the file (" + hex(file_size) + ")")
                .at(m.bat_offset + 4 * i);
        }
        bat[i] = e;
    }
    VDISK_TRY(raw_charge.resize(needed * 4, "BAT"));  // the raw copy goes, the decoded BAT stays with the device
    raw_charge.keep();
    if (m.differencing()) VDISK_TRY(parse_parent(file, file_size, h, m));
    return ok();
}

// The virtual size create gives an image asked for `size` bytes: rounded up to a CHS geometry that holds it
// (as qemu-img and Virtual PC do), or kept exactly with force_size.
struct SizePlan {
    uint64_t sectors = 0;
    uint16_t c = 65535;
    uint8_t h = 16, s = 255;
};

Result<SizePlan> plan_size(uint64_t size, bool force) {
    SizePlan p;
    p.sectors = size / kSector;
    if (!force) {
        uint64_t want = std::min(p.sectors, kMaxChsSectors);
        // The algorithm rounds down; try bigger sector counts until the geometry holds the size.
        geometry(want, p.c, p.h, p.s);
        for (uint64_t i = 1; uint64_t{p.c} * p.h * p.s < want; ++i) geometry(want + i, p.c, p.h, p.s);
        if (uint64_t{p.c} * p.h * p.s != kMaxChsSectors) p.sectors = uint64_t{p.c} * p.h * p.s;
    }
    if (p.sectors > kMaxSectors)
        return make_error(ErrorCode::invalid_argument, "size " + hex(size) + " exceeds the VHD maximum of 2040 GiB");
    if (size % kSector && force)
        return make_error(ErrorCode::invalid_argument, "size " + hex(size) + " is not a multiple of 512");
    return p;
}

// block_size option: a power of two from 512 KiB (Hyper-V's smallest) to 256 MiB; the sector bitmap in
// front of each block is one bit per sector, in whole sectors.
Result<uint32_t> block_size_option(const CreateOptions& opts) {
    VDISK_ASSIGN(uint64_t bs, opts.get_size("block_size", kDefaultBlockSize));
    if (!util::is_pow2(bs) || bs < (512u << 10) || bs > (256u << 20))
        return make_error(ErrorCode::invalid_argument,
                          "block_size must be a power of two from 512k to 256M, not " + std::to_string(bs));
    return static_cast<uint32_t>(bs);
}
uint32_t bitmap_bytes(uint32_t block_size) {
    return static_cast<uint32_t>(*util::align_up(block_size / kSector / 8, kSector));
}

// What a differencing child records about its parent, read from the parent itself.
struct ParentInfo {
    Footer footer{};
    uint64_t size = 0;
    uint32_t block_size = 0;  ///< 0: the parent is fixed
    util::ParentNames names;
};

// The options that decide an image's kind and size, checked: subformat, force_size, azure (a fixed image of
// whole MiB, kept exactly), and for create preallocation. `size` is the size asked for.
struct Shape {
    std::string sub, prealloc;
    bool force = false;
    uint64_t size = 0;
};

Result<Shape> shape_options(const CreateOptions& opts, uint64_t size, bool create) {
    Shape o{opts.get("subformat").value_or("dynamic"), opts.get("preallocation").value_or("off")};
    if (o.sub != "dynamic" && o.sub != "fixed")
        return make_error(ErrorCode::invalid_argument, "subformat must be dynamic or fixed, not '" + o.sub + "'");
    VDISK_ASSIGN(o.force, opts.get_bool("force_size", false));
    VDISK_ASSIGN(bool azure, opts.get_bool("azure", false));
    if (create && o.prealloc != "off" && o.prealloc != "falloc" && o.prealloc != "full")
        return make_error(ErrorCode::invalid_argument,
                          "preallocation must be off, falloc or full, not '" + o.prealloc + "'");
    if (create && o.prealloc != "off" && o.sub != "fixed" && !azure)
        return make_error(ErrorCode::invalid_argument, "preallocation needs subformat=fixed");
    if (azure) {
        if (create && opts.get("subformat") && o.sub != "fixed")
            return make_error(ErrorCode::invalid_argument, "azure=on makes a fixed VHD, not a " + o.sub + " one");
        o.sub = "fixed";
        o.force = true;
        auto up = util::align_up(size, kMiB);
        if (!up) return make_error(ErrorCode::invalid_argument, "size " + hex(size) + " is too large");
        size = *up;
    }
    o.size = size;
    return o;
}

// The footer of a new image of `size` bytes, but for its type and data offset.
Result<Footer> new_footer(uint64_t size, bool force, const std::optional<ParentInfo>& parent,
                          const CreateOptions& opts) {
    Footer f{};
    std::memcpy(f.cookie, "conectix", 8);
    f.features = 2;
    f.version = 0x00010000;
    // Seconds since 2000-01-01 00:00 UTC.
    f.timestamp = static_cast<uint32_t>(static_cast<uint64_t>(std::time(nullptr)) - 946684800ull);
    std::memcpy(f.creator_app, "qem2", 4);  // readers size it by current_size, as qemu does
    f.creator_version = 0x00050003;
    f.creator_os = 0x5769326b;  // "Wi2k"
    VDISK_ASSIGN(SizePlan plan, plan_size(size, force));
    if (parent && size == parent->size) {
        // A child of the parent's size takes its exact size and geometry, as Hyper-V requires.
        plan.sectors = size / kSector;
        plan.c = parent->footer.cylinders.value();
        plan.h = parent->footer.heads;
        plan.s = parent->footer.sectors_per_track;
    }
    f.original_size = plan.sectors * kSector;
    f.current_size = plan.sectors * kSector;
    f.cylinders = plan.c;
    f.heads = plan.h;
    f.sectors_per_track = plan.s;
    util::generate_uuid(f.unique_id);
    if (auto u = opts.get("uuid"); u && !util::parse_uuid(*u, f.unique_id, false))
        return make_error(ErrorCode::invalid_argument, "uuid '" + *u + "' is not a UUID");
    return f;
}

// A dynamic image of m.size bytes in blocks of m.block_size, a differencing one with a `parent`: the footer
// copy, the dynamic header, a BAT with every entry unused, a child's locator payloads, the footer (`f`,
// sealed). Returns the file's size.
Result<uint64_t> write_dynamic(File& file, Footer& f, Meta& m, const std::optional<ParentInfo>& parent) {
    f.disk_type = parent ? kTypeDifferencing : kTypeDynamic;
    f.data_offset = kSector;
    m.type = parent ? kTypeDifferencing : kTypeDynamic;
    m.bitmap_size = bitmap_bytes(m.block_size);
    m.header_offset = kSector;
    m.bat_offset = 3 * kSector;
    m.max_table_entries = static_cast<uint32_t>(util::div_round_up(m.size, m.block_size));
    DynamicHeader dh{};
    std::memcpy(dh.cookie, "cxsparse", 8);
    dh.data_offset = kNoOffset;
    dh.table_offset = m.bat_offset;
    dh.header_version = 0x00010000;
    dh.max_table_entries = m.max_table_entries;
    dh.block_size = m.block_size;
    const uint64_t bat_bytes = *util::align_up(uint64_t{m.max_table_entries} * 4, kSector);
    // Differencing: the parent's identity, its name, and the locator payloads after the BAT (each in
    // whole sectors), absolute (W2ku) first as Windows writes them, then relative (W2ru).
    uint64_t loc_end = m.bat_offset + bat_bytes;
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> payloads;
    if (parent) {
        std::memcpy(m.parent_uuid, parent->footer.unique_id, 16);
        ParentFields pf = set_parent(dh, parent->footer, parent->names, loc_end);
        payloads = std::move(pf.payloads);
        loc_end = pf.end;
        m.parent_names = std::move(pf.names);
    }
    seal_header(dh);
    seal_footer(f);
    VDISK_TRY(file.write_at(0, bytes_of(f)));
    VDISK_TRY(file.write_at(kSector, bytes_of(dh)));
    VDISK_TRY(fill(file, m.bat_offset, bat_bytes, 0xff));
    for (auto& [off, data] : payloads) VDISK_TRY(file.write_at(off, data));
    VDISK_TRY(file.write_at(loc_end, bytes_of(f)));
    return loc_end + kSector;
}

}  // namespace

namespace vhd {
// Parent locator payload: the name in UTF-16LE with Windows separators, as Windows writes it.
static std::vector<uint8_t> locator_bytes(std::string name, bool relative) {
    if (relative && name.compare(0, 3, "../") != 0) name = "./" + name;
    std::replace(name.begin(), name.end(), '/', '\\');
    std::vector<uint8_t> out;
    for (uint16_t u : util::utf8_to_utf16(name)) {
        out.push_back(static_cast<uint8_t>(u & 0xff));
        out.push_back(static_cast<uint8_t>(u >> 8));
    }
    return out;
}

ParentFields set_parent(DynamicHeader& dh, const Footer& parent, const util::ParentNames& names, uint64_t at) {
    ParentFields out;
    std::memcpy(dh.parent_unique_id, parent.unique_id, 16);
    // The parent's own time stamp: vdisk has no file times to offer, and the footer's is the one the parent
    // carries wherever it is copied.
    dh.parent_timestamp = parent.timestamp.value();
    std::memset(dh.parent_unicode_name, 0, sizeof dh.parent_unicode_name);
    std::memset(dh.locators, 0, sizeof dh.locators);
    const std::string base(base_name(names.resolved));
    auto units = util::utf8_to_utf16(base);
    const bool fits = units.size() < sizeof dh.parent_unicode_name / 2;
    if (fits)
        for (size_t i = 0; i < units.size(); ++i) util::store_be<uint16_t>(dh.parent_unicode_name + 2 * i, units[i]);
    // Absolute (W2ku) first as Windows writes them, then relative (W2ru), each in whole sectors.
    const std::pair<uint32_t, const std::string*> locs[] = {{0x57326b75, &names.absolute},
                                                            {0x57327275, &names.relative}};
    int slot = 0;
    for (auto& [code, name] : locs) {
        if (name->empty()) continue;
        auto data = locator_bytes(*name, code == 0x57327275);
        const uint64_t space = *util::align_up(data.size(), kSector);
        ParentLocator& l = dh.locators[slot++];
        l.platform_code = code;
        l.platform_data_space = static_cast<uint32_t>(space);  // bytes, as Windows writes it
        l.platform_data_length = static_cast<uint32_t>(data.size());
        l.platform_data_offset = at;
        data.resize(space, 0);
        out.payloads.emplace_back(at, std::move(data));
        at += space;
        out.names.insert(out.names.begin(), *name);  // relative first, as open lists them
    }
    if (fits && std::find(out.names.begin(), out.names.end(), base) == out.names.end()) out.names.push_back(base);
    out.end = at;
    return out;
}
}  // namespace vhd

namespace {

constexpr OptionSpec kOptions[] = {
    {"subformat", "dynamic (default) or fixed"},
    {"block_size", "dynamic images: block size, 512k to 256M, power of two (default 2M)"},
    {"uuid", "unique id (default: random), e.g. to keep a converted disk's identity"},
    {"preallocation", "fixed images: off (sparse file, default), falloc (reserved) or full (zeros written)"},
    {"force_size",
     "on: keep the exact size given (current_size, maximal CHS); off (default): round up to a "
     "CHS geometry as Virtual PC does"},
    {"backing_file", "parent of a differencing image (a VHD; the size defaults to the parent's)"},
    {"backing_fmt", "format of the parent: vhd (alias vpc); other formats cannot be a VHD's parent"},
    {"azure",
     "on: a fixed VHD as Azure requires it: size rounded up to a whole MiB and kept exactly "
     "(force_size semantics); implies subformat=fixed (vdisk extension, not in qemu-img)"},
};

class VhdFormat final : public Format {
public:
    std::string_view name() const noexcept override { return "vhd"; }
    std::span<const std::string_view> aliases() const noexcept override {
        static constexpr std::string_view kAliases[] = {"vpc"};
        return kAliases;
    }

    int probe(std::span<const uint8_t> head, std::span<const uint8_t> tail, uint64_t) const noexcept override {
        // Dynamic disks carry a footer copy at 0; fixed ones only the footer at the end.
        for (auto b : {head, tail}) {
            if (!is_footer(b)) continue;
            int score = 64;
            if (footer_checksum_ok(b.first(512))) score += 32;
            return score;
        }
        return 0;
    }

    Result<std::unique_ptr<BlockDevice>> open(std::unique_ptr<File> file, const OpenContext& ctx) const override {
        VDISK_ASSIGN(uint64_t file_size, file->size());
        if (file_size < kSector) return make_error(ErrorCode::invalid_format, "file is smaller than a VHD footer");
        Meta m;
        auto* fb = reinterpret_cast<uint8_t*>(&m.footer);
        VDISK_TRY(read_exact(*file, 0, {fb, sizeof(Footer)}, "footer"));
        uint64_t foff = 0;
        if (!is_footer({fb, sizeof(Footer)})) {
            foff = file_size - kSector;
            VDISK_TRY(read_exact(*file, foff, {fb, sizeof(Footer)}, "footer"));
            if (!is_footer({fb, sizeof(Footer)}))
                return make_error(ErrorCode::invalid_format, "no 'conectix' footer at the start or end of the file");
        }
        auto fail = [&](ErrorCode c, std::string msg) { return make_error(c, std::move(msg)).at(foff); };
        uint32_t want = checksum({fb, sizeof(Footer)}, offsetof(Footer, checksum));
        if (m.footer.checksum.value() != want)
            return fail(ErrorCode::corrupt, "footer checksum " + hex(m.footer.checksum.value()) +
                                                " does not match the computed " + hex(want));
        m.type = m.footer.disk_type.value();
        if (m.type != kTypeFixed && m.type != kTypeDynamic && m.type != kTypeDifferencing)
            return fail(ErrorCode::unsupported,
                        "disk type " + std::to_string(m.type) + " is not fixed, dynamic or differencing");
        m.size = virtual_size(m.footer);
        if (m.size > kMaxSectors * kSector)
            return fail(ErrorCode::corrupt, "virtual size " + hex(m.size) + " exceeds the VHD maximum of 2040 GiB");
        std::vector<uint32_t> bat;
        if (m.type == kTypeFixed) {
            if (m.size > file_size - kSector)
                return fail(ErrorCode::corrupt, "fixed disk of " + hex(m.size) + " bytes is larger than the file's " +
                                                    hex(file_size - kSector) + " data bytes");
        } else {
            VDISK_TRY(parse_dynamic(*file, file_size, ctx, m, bat));
        }
        return make_device(std::move(file), std::move(m), std::move(bat), file_size, !ctx.options().read_write);
    }

    std::span<const OptionSpec> create_options() const noexcept override { return kOptions; }

    // A dynamic image: footer copy, dynamic header, BAT, then a sector bitmap and a whole block per block
    // holding data, the footer last. A fixed one: the disk and its footer.
    Result<MeasureResult> measure(const CreateOptions& opts, const MeasureSource& src) const override {
        VDISK_ASSIGN(Shape shape, shape_options(opts, src.virtual_size, false));
        VDISK_ASSIGN(SizePlan plan, plan_size(shape.size, shape.force));
        const uint64_t vsize = plan.sectors * kSector;
        MeasureResult r;
        if (shape.sub == "fixed") {
            r.required = r.fully_allocated = vsize + kSector;
            return r;
        }
        VDISK_ASSIGN(uint32_t bsz, block_size_option(opts));
        const uint64_t bm = bitmap_bytes(bsz);
        const uint64_t blocks = util::div_round_up(vsize, bsz);
        const uint64_t head = 3 * kSector + *util::align_up(blocks * 4, kSector);
        uint64_t used = 0;
        if (src.has_image) {
            VDISK_ASSIGN(used, src.data_units(bsz));
        }
        r.fully_allocated = head + blocks * (bm + bsz) + kSector;
        r.required = head + used * (bm + bsz) + kSector;
        return r;
    }

    // The parent of a differencing image to be made: a VHD (cross-format chains are refused), opened alone
    // to read its identity.
    Result<ParentInfo> read_parent(const CreateOptions& opts, const OpenContext& ctx) const {
        const std::string backing = *opts.get("backing_file");
        if (auto bf = opts.get("backing_fmt"); bf && *bf != "vhd" && *bf != "vpc")
            return make_error(ErrorCode::invalid_argument,
                              "a differencing VHD's parent must be a VHD, not " + *bf +
                                  " (vdisk does not create cross-format chains; convert the parent to vhd first)");
        ParentInfo p;
        p.names = util::parent_names(ctx.image_name(), backing);
        VDISK_ASSIGN(auto pf, ctx.open_related(backing, Access::read_only, "backing file"));
        OpenOptions po;
        po.no_backing = true;
        OpenContext pctx(ctx.fs(), p.names.resolved, po);
        auto parent = open(std::move(pf), pctx);
        if (!parent)
            return make_error(ErrorCode::invalid_argument, "backing file '" + backing + "' is not a usable VHD (" +
                                                               parent.error().message +
                                                               "); a differencing VHD's parent must be a VHD");
        const Meta* pm = device_meta(**parent);
        p.footer = pm->footer;
        p.size = pm->size;
        p.block_size = pm->dynamic() ? pm->block_size : 0;
        return p;
    }

    Result<std::unique_ptr<BlockDevice>> create(const CreateOptions& opts, const OpenContext& ctx) const override {
        std::optional<ParentInfo> parent;
        if (opts.get("backing_file")) {
            VDISK_ASSIGN(bool azure_on, opts.get_bool("azure", false));
            if (opts.get("subformat").value_or("dynamic") != "dynamic" || azure_on ||
                opts.get("preallocation").value_or("off") != "off")
                return make_error(ErrorCode::invalid_argument,
                                  "a differencing VHD is dynamic: subformat, azure and preallocation do not apply");
            VDISK_ASSIGN(parent, read_parent(opts, ctx));
        }
        VDISK_ASSIGN(Shape shape, shape_options(opts, *opts.size, true));
        VDISK_ASSIGN(Footer f, new_footer(shape.size, shape.force, parent, opts));
        VDISK_ASSIGN(auto file, ctx.fs().create(ctx.image_name()));
        Meta m;
        m.size = f.current_size.value();
        std::vector<uint32_t> bat;
        uint64_t file_size = m.size + kSector;
        if (shape.sub == "fixed") {
            f.disk_type = kTypeFixed;
            f.data_offset = kNoOffset;
            m.type = kTypeFixed;
            seal_footer(f);
            VDISK_TRY(file->resize(m.size));
            VDISK_TRY(preallocate_range(*file, 0, m.size, shape.prealloc));
            VDISK_TRY(file->write_at(m.size, bytes_of(f)));
        } else {
            VDISK_ASSIGN(m.block_size, block_size_option(opts));
            // A child keeps its parent's block size unless told otherwise (Hyper-V makes them equal).
            if (parent && parent->block_size && !opts.get("block_size")) m.block_size = parent->block_size;
            VDISK_ASSIGN(file_size, write_dynamic(*file, f, m, parent));
            // Charged like a BAT read at open (resize charges what it adds, releases what it drops).
            VDISK_ASSIGN(Charge bat_charge, Charge::make(ctx.budget(), uint64_t{m.max_table_entries} * 4, "BAT"));
            bat_charge.keep();
            bat.assign(m.max_table_entries, kBatUnused);
        }
        m.footer = f;
        return make_device(std::move(file), std::move(m), std::move(bat), file_size, false);
    }
};

}  // namespace

namespace vhd {
Result<uint64_t> resize_footer(Footer& f, uint64_t new_size) {
    // Images qemu sizes by current_size (by their creator) keep the exact size; the others are sized by
    // CHS, so the new size is rounded up to a geometry that holds it, as create does.
    Footer t = f;
    t.cylinders = 1;
    t.heads = 1;
    t.sectors_per_track = 1;
    t.current_size = 1024;
    const bool exact = virtual_size(t) == 1024;
    if (new_size % kSector)
        return make_error(ErrorCode::invalid_argument,
                          "VHD sizes are whole sectors; " + std::to_string(new_size) + " is not a multiple of 512");
    VDISK_ASSIGN(SizePlan plan, plan_size(new_size, false));
    uint64_t vsize = exact ? new_size : plan.sectors * kSector;
    if (vsize / kSector > kMaxSectors)
        return make_error(ErrorCode::invalid_argument, "size " + hex(vsize) + " exceeds the VHD maximum of 2040 GiB");
    f.current_size = vsize;
    // libvhdi (and so tools built on it) take the disk size from original_size; qemu from current_size or CHS.
    f.original_size = vsize;
    f.cylinders = plan.c;
    f.heads = plan.h;
    f.sectors_per_track = plan.s;
    return virtual_size(f);
}
}  // namespace vhd

std::unique_ptr<Format> make_vhd_format() { return std::make_unique<VhdFormat>(); }

}  // namespace vdisk
