// SPDX-License-Identifier: Apache-2.0
// VHDX (MS-VHDX): probe, open (headers, log, region table, metadata, BAT), create, check.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstring>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "util/utf16.hpp"
#include "vhdx_internal.hpp"

namespace vdisk::vhdx {

std::string guid_text(const Guid& g) { return "{" + util::guid_to_string(g.b, true) + "}"; }

Guid random_guid() {
    Guid g;
    util::generate_uuid(g.b);
    return g;
}

uint32_t crc_with_hole(std::span<const uint8_t> buf, size_t at) {
    static constexpr uint8_t zero4[4] = {0, 0, 0, 0};
    uint32_t c = util::crc32c(buf.first(at));
    c = util::crc32c(zero4, c);
    return util::crc32c(buf.subspan(at + 4), c);
}

void encode_header(const Header& h, uint8_t* out) {
    Header c = h;
    c.checksum = 0;
    std::memcpy(out, &c, sizeof c);
    util::store_le<uint32_t>(out + offsetof(Header, checksum),
                             util::crc32c(std::span<const uint8_t>(out, kHeaderSize)));
}

Status write_headers(File& file, Header& h, int& current_slot) {
    uint8_t buf[kHeaderSize];
    for (int i = 0; i < 2; ++i) {
        h.sequence_number = h.sequence_number.value() + 1;
        int slot = 1 - current_slot;
        encode_header(h, buf);
        VDISK_TRY(file.write_at(slot == 0 ? kHeader1Offset : kHeader2Offset, buf));
        VDISK_TRY(file.sync());
        current_slot = slot;
    }
    return ok();
}

namespace {

bool header_valid(const uint8_t* buf, Header& out) {
    std::memcpy(&out, buf, sizeof out);
    if (out.signature.value() != kHeaderSignature) return false;
    return crc_with_hole(std::span<const uint8_t>(buf, kHeaderSize), offsetof(Header, checksum)) ==
           out.checksum.value();
}

// 2.2.2: the current header is the valid one with the larger sequence number. Disk2vhd writes both with
// the same number; either is then current (they agree), we take the first.
Result<ActiveHeader> read_headers(File& f) {
    std::vector<uint8_t> buf(kHeaderSize);
    Header h[2];
    bool valid[2];
    for (int i = 0; i < 2; ++i) {
        VDISK_TRY(read_zero_fill(f, i == 0 ? kHeader1Offset : kHeader2Offset, buf));
        valid[i] = header_valid(buf.data(), h[i]);
    }
    if (!valid[0] && !valid[1])
        return make_error(ErrorCode::corrupt, "neither VHDX header has a valid signature and CRC-32C")
            .at(kHeader1Offset);
    int pick = !valid[0] ? 1 : !valid[1] ? 0 : (h[1].sequence_number.value() > h[0].sequence_number.value() ? 1 : 0);
    const Header& a = h[pick];
    uint64_t at = pick == 0 ? kHeader1Offset : kHeader2Offset;
    if (a.version.value() != 1)
        return make_error(ErrorCode::unsupported, "VHDX header version " + std::to_string(a.version.value())).at(at);
    if (a.log_version.value() != 0)
        return make_error(ErrorCode::unsupported, "VHDX log version " + std::to_string(a.log_version.value())).at(at);
    return ActiveHeader{a, pick};
}

struct Region {
    uint64_t offset = 0, length = 0;
    bool found = false;
};

// One entry of a region table, `at` its file offset: the BAT and metadata regions are recorded in `bat` and
// `meta`, others skipped unless required; `spans` are the regions seen so far, none may overlap.
Status read_region_entry(const RegionTableEntry& e, uint64_t at, uint64_t file_size,
                         std::vector<std::pair<uint64_t, uint64_t>>& spans, Region& bat, Region& meta) {
    auto fail = [&](ErrorCode c, const std::string& what) {
        return make_error(c, "region " + guid_text(e.guid) + what).at(at);
    };
    const uint64_t off = e.file_offset.value(), len = e.length.value();
    Region* r = guid_eq(e.guid, kBatRegionGuid) ? &bat : guid_eq(e.guid, kMetadataRegionGuid) ? &meta : nullptr;
    if (!r && (e.flags.value() & 1))
        return make_error(ErrorCode::unsupported, "unknown required region " + guid_text(e.guid)).at(at);
    if (!r) return ok();
    if (r->found) return fail(ErrorCode::corrupt, " listed twice");
    if (off < kHeaderSectionSize || off % kRegionAlignment || len == 0 || len % kRegionAlignment)
        return fail(ErrorCode::corrupt,
                    " at " + hex(off) + " length " + hex(len) + " is not 1 MiB aligned past the header section");
    if (!util::range_within(off, len, file_size))
        return fail(ErrorCode::corrupt,
                    " [" + hex(off) + ", +" + hex(len) + ") extends past end of file (" + hex(file_size) + ")");
    for (auto& s : spans)
        if (off < s.first + s.second && s.first < off + len)
            return make_error(ErrorCode::corrupt, "region at " + hex(off) + " overlaps another region").at(at);
    spans.emplace_back(off, len);
    *r = Region{off, len, true};
    return ok();
}

// A region table whose signature and checksum are valid, read at `table`.
Status read_region_table(const std::vector<uint8_t>& buf, uint64_t table, uint64_t file_size, Region& bat,
                         Region& meta) {
    RegionTableHeader h;
    std::memcpy(&h, buf.data(), sizeof h);
    const uint32_t count = h.entry_count.value();
    if (count > kMaxRegionEntries)
        return make_error(ErrorCode::corrupt, "region table entry count " + std::to_string(count) + " exceeds 2047")
            .at(table);
    bat = meta = Region{};
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (uint32_t i = 0; i < count; ++i) {
        RegionTableEntry e;
        const uint64_t at = sizeof(RegionTableHeader) + uint64_t(i) * sizeof e;
        std::memcpy(&e, buf.data() + at, sizeof e);
        VDISK_TRY(read_region_entry(e, table + at, file_size, spans, bat, meta));
    }
    if (!bat.found) return make_error(ErrorCode::corrupt, "region table has no BAT region").at(table);
    if (!meta.found) return make_error(ErrorCode::corrupt, "region table has no metadata region").at(table);
    return ok();
}

// The first region table with a valid signature and checksum is used.
Status read_regions(File& f, uint64_t file_size, Region& bat, Region& meta) {
    std::vector<uint8_t> buf(kRegionTableSize);
    std::optional<Error> first_error;
    for (uint64_t table : {kRegionTable1Offset, kRegionTable2Offset}) {
        VDISK_TRY(read_zero_fill(f, table, buf));
        RegionTableHeader h;
        std::memcpy(&h, buf.data(), sizeof h);
        if (h.signature.value() == kRegionSignature &&
            crc_with_hole(buf, offsetof(RegionTableHeader, checksum)) == h.checksum.value())
            return read_region_table(buf, table, file_size, bat, meta);
        if (!first_error)
            first_error = make_error(ErrorCode::corrupt, "region table has a bad signature or CRC-32C").at(table);
    }
    return std::move(*first_error);
}

// Whether the UTF-16LE bytes spell exactly the ASCII `key` (compared without decoding anything).
bool utf16_key_is(const uint8_t* p, size_t bytes, std::string_view key) {
    if (bytes != key.size() * 2) return false;
    for (size_t i = 0; i < key.size(); ++i)
        if (p[2 * i] != static_cast<uint8_t>(key[i]) || p[2 * i + 1] != 0) return false;
    return true;
}

// Only the five keys vdisk uses are decoded, each at most once (a repeated key is corrupt), so decoding is
// bounded by five values of at most 64 KiB however many entries the locator lists; every entry counts as
// work all the same.
Status parse_parent_locator(const std::vector<uint8_t>& item, uint64_t at, Geometry& g, Budget& budget) {
    auto corrupt = [&](const std::string& what) {
        return make_error(ErrorCode::corrupt, "parent locator " + what).at(at);
    };
    if (item.size() < sizeof(ParentLocatorHeader))
        return corrupt("of " + std::to_string(item.size()) + " bytes is too short");
    ParentLocatorHeader h;
    std::memcpy(&h, item.data(), sizeof h);
    if (!guid_eq(h.locator_type, kVhdxParentLocatorType))
        return make_error(ErrorCode::unsupported, "parent locator type " + guid_text(h.locator_type)).at(at);
    uint64_t count = h.key_value_count.value();
    if (sizeof(ParentLocatorHeader) + count * sizeof(ParentLocatorEntry) > item.size())
        return corrupt("key/value count " + std::to_string(count) + " overruns the item");
    VDISK_TRY(budget.work(count, "VHDX parent locator"));
    static constexpr std::string_view kKeys[] = {"parent_linkage", "parent_linkage2", "relative_path", "volume_path",
                                                 "absolute_win32_path"};
    std::string* dest[] = {&g.parent_linkage, &g.parent_linkage2, &g.relative_path, &g.volume_path,
                           &g.absolute_win32_path};
    bool seen[5] = {};
    for (uint64_t i = 0; i < count; ++i) {
        ParentLocatorEntry e;
        std::memcpy(&e, item.data() + sizeof h + i * sizeof e, sizeof e);
        uint64_t ko = e.key_offset.value(), vo = e.value_offset.value();
        uint64_t kl = e.key_length.value(), vl = e.value_length.value();
        if (!util::range_within(ko, kl, item.size()) || !util::range_within(vo, vl, item.size()))
            return corrupt("entry " + std::to_string(i) + " points outside the item");
        for (size_t k = 0; k < 5; ++k) {
            if (!utf16_key_is(item.data() + ko, kl, kKeys[k])) continue;
            if (seen[k]) return corrupt("lists '" + std::string(kKeys[k]) + "' twice");
            seen[k] = true;
            VDISK_TRY(budget.work(vl / 2, "VHDX parent locator"));
            // Length-delimited: a NUL inside is kept as it is.
            std::string value = util::utf16_to_utf8(std::span(item).subspan(vo, vl), util::Utf16Order::little,
                                                    util::Utf16Nul::kept);
            // Windows separators: the file system layer speaks '/'.
            std::replace(value.begin(), value.end(), '\\', '/');
            *dest[k] = std::move(value);
        }
    }
    return ok();
}

// What read_metadata has found so far.
struct MetadataSeen {
    bool params = false, size = false, lss = false, pss = false, locator = false;
    // The parent locator is parsed after the table, and only for a differencing image (HasParent may come
    // in a later item); an image without a parent never needs it.
    std::vector<uint8_t> locator_item;
    uint64_t locator_at = 0;
};

bool known_item(const Guid& id) {
    for (const Guid& k : {kFileParametersGuid, kVirtualDiskSizeGuid, kPage83Guid, kLogicalSectorSizeGuid,
                          kPhysicalSectorSizeGuid, kParentLocatorGuid})
        if (guid_eq(id, k)) return true;
    return false;
}

// One known item (2.6.2): `at` is its table entry, `item_at` its bytes.
Status decode_item(const Guid& id, std::vector<uint8_t>& item, uint64_t at, uint64_t item_at, Geometry& g,
                   MetadataSeen& seen) {
    auto need = [&](size_t n) -> Status {
        if (item.size() < n)
            return make_error(ErrorCode::corrupt, "metadata item " + guid_text(id) + " is " +
                                                      std::to_string(item.size()) + " bytes, expected " +
                                                      std::to_string(n))
                .at(at);
        return ok();
    };
    if (guid_eq(id, kFileParametersGuid)) {
        VDISK_TRY(need(8));
        FileParameters p;
        std::memcpy(&p, item.data(), sizeof p);
        uint64_t bs = p.block_size.value();
        if (!util::is_pow2(bs) || bs < kMinBlockSize || bs > kMaxBlockSize)
            return make_error(ErrorCode::corrupt, "block size " + hex(bs) + " is not a power of two in 1..256 MiB")
                .at(item_at);
        g.block_size = static_cast<uint32_t>(bs);
        g.leave_allocated = p.flags.value() & kLeaveBlocksAllocated;
        g.has_parent = p.flags.value() & kHasParent;
        seen.params = true;
    } else if (guid_eq(id, kVirtualDiskSizeGuid)) {
        VDISK_TRY(need(8));
        g.virtual_size = util::load_le<uint64_t>(item.data());
        g.size_item_offset = item_at;
        seen.size = true;
    } else if (guid_eq(id, kPage83Guid)) {
        VDISK_TRY(need(16));
        std::memcpy(g.page83.b, item.data(), 16);
    } else if (guid_eq(id, kLogicalSectorSizeGuid) || guid_eq(id, kPhysicalSectorSizeGuid)) {
        VDISK_TRY(need(4));
        const bool logical = guid_eq(id, kLogicalSectorSizeGuid);
        uint32_t& sector = logical ? g.logical_sector : g.physical_sector;
        sector = util::load_le<uint32_t>(item.data());
        if (sector != 512 && sector != 4096)
            return make_error(ErrorCode::corrupt, std::string(logical ? "logical" : "physical") + " sector size " +
                                                      std::to_string(sector) + " is neither 512 nor 4096")
                .at(item_at);
        (logical ? seen.lss : seen.pss) = true;
    } else {
        seen.locator_item = std::move(item);
        seen.locator_at = item_at;
        seen.locator = true;
    }
    return ok();
}

// After the table: the items every image needs, and the parent locator of a differencing one.
Status finish_metadata(const Region& meta, MetadataSeen& seen, Geometry& g, Budget& budget) {
    auto missing = [&](const char* what) {
        return make_error(ErrorCode::corrupt, std::string("metadata has no ") + what + " item").at(meta.offset);
    };
    if (!seen.params) return missing("file parameters");
    if (!seen.size) return missing("virtual disk size");
    if (!seen.lss) return missing("logical sector size");
    if (!seen.pss) g.physical_sector = g.logical_sector;
    if (g.virtual_size == 0 || g.virtual_size > kMaxVirtualSize || g.virtual_size % g.logical_sector)
        return make_error(ErrorCode::corrupt, "virtual disk size " + hex(g.virtual_size) +
                                                  " is zero, above 64 TiB or not a multiple of the logical sector size")
            .at(meta.offset);
    if (g.has_parent) {
        if (!seen.locator)
            return make_error(ErrorCode::corrupt, "differencing VHDX has no parent locator").at(meta.offset);
        VDISK_TRY(parse_parent_locator(seen.locator_item, seen.locator_at, g, budget));
        if (g.relative_path.empty() && g.volume_path.empty() && g.absolute_win32_path.empty())
            return make_error(ErrorCode::corrupt, "parent locator names no parent path").at(meta.offset);
    }
    return ok();
}

Status read_metadata(File& f, const Region& meta, Geometry& g, Budget& budget) {
    std::vector<uint8_t> table(kMetadataTableSize);
    VDISK_TRY(read_exact(f, meta.offset, table, "VHDX metadata table"));
    MetadataTableHeader h;
    std::memcpy(&h, table.data(), sizeof h);
    if (h.signature.value() != kMetadataSignature)
        return make_error(ErrorCode::corrupt, "metadata table signature is wrong").at(meta.offset);
    uint32_t count = h.entry_count.value();
    if (count > kMaxMetadataEntries)
        return make_error(ErrorCode::corrupt, "metadata table entry count " + std::to_string(count) + " exceeds 2047")
            .at(meta.offset);
    auto entry = [&](uint32_t i) {
        MetadataTableEntry e;
        std::memcpy(&e, table.data() + sizeof h + uint64_t(i) * sizeof e, sizeof e);
        return e;
    };
    MetadataSeen seen;
    for (uint32_t i = 0; i < count; ++i) {
        const MetadataTableEntry e = entry(i);
        const uint64_t at = meta.offset + sizeof h + uint64_t(i) * sizeof e;
        const uint64_t off = e.offset.value(), len = e.length.value();
        const Guid& id = e.item_id;
        for (uint32_t j = 0; j < i; ++j) {
            const MetadataTableEntry o = entry(j);
            if (guid_eq(o.item_id, id) && (o.flags.value() & kMetaIsUser) == (e.flags.value() & kMetaIsUser))
                return make_error(ErrorCode::corrupt, "metadata item " + guid_text(id) + " is listed twice").at(at);
        }
        if (!known_item(id)) {
            if (e.flags.value() & kMetaIsRequired)
                return make_error(ErrorCode::unsupported, "unknown required metadata item " + guid_text(id)).at(at);
            continue;
        }
        if (len > kMaxMetadataItemLength || (len && off < kMetadataTableSize) ||
            !util::range_within(off, len, meta.length))
            return make_error(ErrorCode::corrupt, "metadata item " + guid_text(id) + " at " + hex(off) + " length " +
                                                      hex(len) + " lies outside the metadata region")
                .at(at);
        std::vector<uint8_t> item(static_cast<size_t>(len));
        VDISK_TRY(read_exact(f, meta.offset + off, item, "VHDX metadata item"));
        VDISK_TRY(decode_item(id, item, at, meta.offset + off, g, seen));
    }
    return finish_metadata(meta, seen, g, budget);
}

// 2.5: payload and sector bitmap entries interleave, one bitmap entry after every chunk_ratio blocks; a
// differencing image has one after every chunk, the last one included.
void set_bat_layout(Geometry& g) {
    g.chunk_ratio = (kChunkRatioNumerator * g.logical_sector) / g.block_size;
    g.data_blocks = util::div_round_up(g.virtual_size, g.block_size);
    g.bitmap_blocks = util::div_round_up(g.data_blocks, g.chunk_ratio);
    g.bat_entries = g.has_parent ? g.bitmap_blocks * (g.chunk_ratio + 1)
                                 : g.data_blocks + (g.data_blocks - 1) / g.chunk_ratio;
}

// 2.3.3: a log holding entries is replayed into the file, then recorded empty by clearing LogGuid in both
// headers (read-write), or applied in memory through an overlay of the file (read-only).
Status open_log(DeviceState& st, uint64_t& file_size, const OpenContext& ctx) {
    VDISK_ASSIGN(LogReplay log, read_log(*st.file, st.hdr.h, file_size, ctx.limits(), ctx.budget()));
    // Our own entries continue the sequence of the log found here.
    if (log.entries) st.log_sequence = log.head_sequence + 1;
    if (!st.read_only) {
        if (!log.writes.empty() || log.last_file_offset > file_size) VDISK_TRY(replay_into(*st.file, log, file_size));
        st.hdr.h.log_guid = Guid{};
        VDISK_TRY(write_headers(*st.file, st.hdr.h, st.hdr.slot));
        VDISK_ASSIGN(file_size, st.file->size());
    } else if (log.entries) {
        VDISK_ASSIGN(st.file, make_overlay(std::move(st.file), std::move(log), file_size, ctx.budget()));
        st.overlay = true;
        VDISK_ASSIGN(file_size, st.file->size());
    }
    return ok();
}

// The BAT, as the geometry lays it out, decoded in place: it is held once.
Result<std::vector<uint64_t>> read_bat(File& file, Geometry& g, const OpenContext& ctx) {
    set_bat_layout(g);
    uint64_t bat_bytes = g.bat_entries * 8;  // <= 2^26 * 8 for 64 TiB / 1 MiB blocks: no overflow
    if (bat_bytes > g.bat_length)
        return make_error(ErrorCode::corrupt, "BAT region of " + hex(g.bat_length) + " bytes cannot hold " +
                                                  std::to_string(g.bat_entries) + " entries")
            .at(g.bat_offset);
    if (bat_bytes > ctx.limits().max_metadata_bytes)
        return make_error(ErrorCode::limit_exceeded, "BAT of " + hex(bat_bytes) + " bytes exceeds the metadata limit")
            .at(g.bat_offset);
    VDISK_ASSIGN(Charge bat_charge, Charge::make(ctx.budget(), bat_bytes, "VHDX BAT"));
    VDISK_TRY(ctx.budget()->work(g.bat_entries, "VHDX BAT"));
    std::vector<uint64_t> entries(static_cast<size_t>(g.bat_entries));
    auto* raw = reinterpret_cast<uint8_t*>(entries.data());
    VDISK_TRY(read_exact(file, g.bat_offset, std::span<uint8_t>(raw, bat_bytes), "VHDX BAT"));
    for (size_t i = 0; i < entries.size(); ++i) entries[i] = util::load_le<uint64_t>(raw + i * 8);
    bat_charge.keep();
    return entries;
}

class VhdxFormat final : public Format {
public:
    std::string_view name() const noexcept override { return "vhdx"; }

    int probe(std::span<const uint8_t> head, std::span<const uint8_t>, uint64_t file_size) const noexcept override {
        if (head.size() < 8 || std::memcmp(head.data(), kFileSignature, 8) != 0) return 0;
        return file_size >= kHeaderSectionSize ? 72 : 64;
    }

    Result<std::unique_ptr<BlockDevice>> open(std::unique_ptr<File> file, const OpenContext& ctx) const override {
        VDISK_ASSIGN(uint64_t file_size, file->size());
        uint8_t sig[8] = {};
        VDISK_TRY(read_zero_fill(*file, kFileIdOffset, sig));
        if (std::memcmp(sig, kFileSignature, 8) != 0)
            return make_error(ErrorCode::invalid_format, "file type identifier is not 'vhdxfile'").at(0);
        DeviceState st;
        st.file = std::move(file);
        st.read_only = !ctx.options().read_write;
        VDISK_ASSIGN(st.hdr, read_headers(*st.file));
        if (!guid_is_zero(st.hdr.h.log_guid)) VDISK_TRY(open_log(st, file_size, ctx));
        Region bat, meta;
        VDISK_TRY(read_regions(*st.file, file_size, bat, meta));
        st.geo.bat_offset = bat.offset;
        st.geo.bat_length = bat.length;
        st.geo.metadata_offset = meta.offset;
        st.geo.metadata_length = meta.length;
        VDISK_TRY(read_metadata(*st.file, meta, st.geo, *ctx.budget()));
        // Per-entry validation happens on access (and in check): one bad entry should not hide the rest.
        VDISK_ASSIGN(st.bat, read_bat(*st.file, st.geo, ctx));
        return make_device(std::move(st));
    }

    std::span<const OptionSpec> create_options() const noexcept override;
    Result<std::unique_ptr<BlockDevice>> create(const CreateOptions& opts, const OpenContext& ctx) const override;
    Result<MeasureResult> measure(const CreateOptions& opts, const MeasureSource& src) const override;
};

constexpr OptionSpec kOptions[] = {
    {"subformat", "dynamic (default) or fixed"},
    {"block_size", "block size, 1 MiB to 256 MiB, power of two; 0 (default) picks by image size"},
    {"log_size", "log size, a multiple of 1 MiB (default 1 MiB)"},
    {"block_state_zero", "on (default): unallocated blocks of a dynamic image are marked ZERO"},
    {"logical_sector_size", "512 (default) or 4096 (4Kn: the size must be a multiple of 4096)"},
    {"physical_sector_size", "512 or 4096 (default: 4096 with 4096-byte logical sectors, else 512)"},
    {"uuid", "virtual disk identifier, the Page 83 data (default: random), e.g. to keep a converted disk's identity"},
    {"backing_file", "parent of a differencing image (a VHDX; size, block and sector sizes default to the parent's)"},
    {"backing_fmt", "format of the parent: vhdx; other formats cannot be a VHDX's parent"},
};

// UTF-16LE of `text`, appended.
void put_utf16(std::vector<uint8_t>& out, const std::string& text) {
    for (uint16_t u : util::utf8_to_utf16(text)) {
        out.push_back(static_cast<uint8_t>(u & 0xff));
        out.push_back(static_cast<uint8_t>(u >> 8));
    }
}

// 2.6.2.6 parent locator item of type VHDX: header, key/value entries, then the UTF-16LE strings they point to.
std::vector<uint8_t> parent_locator_item(const std::vector<std::pair<std::string, std::string>>& kv) {
    std::vector<uint8_t> strings;
    std::vector<ParentLocatorEntry> entries;
    const size_t table = sizeof(ParentLocatorHeader) + kv.size() * sizeof(ParentLocatorEntry);
    for (auto& [k, v] : kv) {
        ParentLocatorEntry e{};
        e.key_offset = static_cast<uint32_t>(table + strings.size());
        put_utf16(strings, k);
        e.key_length = static_cast<uint16_t>(table + strings.size() - e.key_offset.value());
        e.value_offset = static_cast<uint32_t>(table + strings.size());
        put_utf16(strings, v);
        e.value_length = static_cast<uint16_t>(table + strings.size() - e.value_offset.value());
        entries.push_back(e);
    }
    ParentLocatorHeader h{};
    h.locator_type = kVhdxParentLocatorType;
    h.key_value_count = static_cast<uint16_t>(kv.size());
    std::vector<uint8_t> item(table);
    std::memcpy(item.data(), &h, sizeof h);
    std::memcpy(item.data() + sizeof h, entries.data(), entries.size() * sizeof(ParentLocatorEntry));
    item.insert(item.end(), strings.begin(), strings.end());
    return item;
}

// Windows separators, as the locator's paths are Win32 paths.
std::string win_path(std::string p, bool relative) {
    if (relative && p.compare(0, 3, "../") != 0) p = "./" + p;
    std::replace(p.begin(), p.end(), '/', '\\');
    return p;
}

std::span<const OptionSpec> VhdxFormat::create_options() const noexcept { return kOptions; }

}  // namespace

std::vector<std::pair<std::string, std::string>> locator_values(const Guid& parent_data_write_guid,
                                                                const util::ParentNames& names) {
    // parent_linkage in lower case within braces, as Hyper-V writes it (libvhdi 2021 parses no other form).
    std::vector<std::pair<std::string, std::string>> kv = {
        {"parent_linkage", "{" + util::guid_to_string(parent_data_write_guid.b) + "}"}};
    if (!names.relative.empty()) kv.emplace_back("relative_path", win_path(names.relative, true));
    if (!names.absolute.empty()) kv.emplace_back("absolute_win32_path", win_path(names.absolute, false));
    return kv;
}

Result<std::vector<uint8_t>> replace_parent_locator(std::vector<uint8_t> region,
                                                    const std::vector<std::pair<std::string, std::string>>& kv) {
    if (region.size() < kMetadataTableSize)
        return make_error(ErrorCode::corrupt, "metadata region is smaller than its table");
    MetadataTableHeader h;
    std::memcpy(&h, region.data(), sizeof h);
    const uint32_t count = h.entry_count.value();
    if (h.signature.value() != kMetadataSignature || count > kMaxMetadataEntries)
        return make_error(ErrorCode::corrupt, "metadata table is not valid");
    std::vector<uint8_t> item = parent_locator_item(kv);
    // The new item goes after every item in use (8-byte aligned), so nothing in use is overwritten.
    uint64_t end = kMetadataTableSize;
    int slot = -1;
    for (uint32_t i = 0; i < count; ++i) {
        MetadataTableEntry e;
        std::memcpy(&e, region.data() + sizeof h + i * sizeof e, sizeof e);
        end = std::max<uint64_t>(end, uint64_t{e.offset.value()} + e.length.value());
        if (guid_eq(e.item_id, kParentLocatorGuid) && !(e.flags.value() & kMetaIsUser)) slot = static_cast<int>(i);
    }
    if (slot < 0) return make_error(ErrorCode::corrupt, "differencing VHDX has no parent locator item to replace");
    end = *util::align_up(end, 8);
    if (end + item.size() > region.size())
        return make_error(ErrorCode::unsupported, "the metadata region has no room for the new parent locator");
    std::memcpy(region.data() + end, item.data(), item.size());
    MetadataTableEntry e;
    std::memcpy(&e, region.data() + sizeof h + slot * sizeof e, sizeof e);
    e.offset = static_cast<uint32_t>(end);
    e.length = static_cast<uint32_t>(item.size());
    std::memcpy(region.data() + sizeof h + slot * sizeof e, &e, sizeof e);
    return region;
}

namespace {

void put_meta_entry(std::vector<uint8_t>& region, int i, const Guid& id, uint32_t off, uint32_t len, uint32_t flags) {
    MetadataTableEntry e{};
    e.item_id = id;
    e.offset = off;
    e.length = len;
    e.flags = flags;
    std::memcpy(region.data() + sizeof(MetadataTableHeader) + i * sizeof e, &e, sizeof e);
}

// subformat: whether the image is fixed.
Result<bool> fixed_option(const CreateOptions& opts) {
    std::string sub = opts.get("subformat").value_or("dynamic");
    if (sub != "dynamic" && sub != "fixed")
        return make_error(ErrorCode::invalid_argument, "subformat must be dynamic or fixed, not '" + sub + "'");
    return sub == "fixed";
}

// The virtual size (a multiple of `sector`, rounded up to 512 bytes), block size (0: by the size, in the
// classes qemu-img uses so images match block for block) and log size of an image to be made.
Status check_sizes(uint64_t& size, uint64_t sector, uint64_t& block_size, uint64_t log_size) {
    if (size == 0 || size > kMaxVirtualSize)
        return make_error(ErrorCode::invalid_argument,
                          "VHDX virtual size " + std::to_string(size) + " must be between 1 byte and 64 TiB");
    if (size % sector)
        return make_error(ErrorCode::invalid_argument, "VHDX virtual size " + std::to_string(size) +
                                                           " is not a multiple of the logical sector size " +
                                                           std::to_string(sector));
    size = *util::align_up(size, 512);
    if (block_size == 0)
        block_size = size > 32 * TiB ? 64 * MiB : size > 100 * GiB ? 32 * MiB : size > 1 * GiB ? 16 * MiB : 8 * MiB;
    if (!util::is_pow2(block_size) || block_size < kMinBlockSize || block_size > kMaxBlockSize)
        return make_error(ErrorCode::invalid_argument,
                          "block_size " + std::to_string(block_size) + " must be a power of two in 1 MiB..256 MiB");
    if (log_size < 1 * MiB || log_size % MiB || log_size > 4 * GiB - MiB)
        return make_error(ErrorCode::invalid_argument,
                          "log_size " + std::to_string(log_size) + " must be a multiple of 1 MiB below 4 GiB");
    return ok();
}

// Header section, log, metadata region, BAT region (1 MiB multiples), then whole payload blocks: a dynamic
// image gets one per block holding data, a fixed one all of them.
Result<MeasureResult> VhdxFormat::measure(const CreateOptions& opts, const MeasureSource& src) const {
    VDISK_ASSIGN(bool fixed, fixed_option(opts));
    VDISK_ASSIGN(uint64_t block_size, opts.get_size("block_size", 0));
    VDISK_ASSIGN(uint64_t log_size, opts.get_size("log_size", 1 * MiB));
    Geometry g;
    g.virtual_size = src.virtual_size;
    VDISK_TRY(check_sizes(g.virtual_size, 1, block_size, log_size));  // any size: measure rounds it up
    VDISK_ASSIGN(uint64_t lss, opts.get_size("logical_sector_size", 512));
    if (lss != 512 && lss != 4096) return make_error(ErrorCode::invalid_argument, "sector sizes must be 512 or 4096");
    g.block_size = static_cast<uint32_t>(block_size);
    g.logical_sector = static_cast<uint32_t>(lss);
    set_bat_layout(g);
    const uint64_t data_start = kHeaderSectionSize + log_size + 1 * MiB + *util::align_up(g.bat_entries * 8, MiB);
    uint64_t used = 0;
    if (src.has_image) {
        VDISK_ASSIGN(used, src.data_units(block_size));
    }
    MeasureResult r;
    r.fully_allocated = data_start + g.data_blocks * block_size;
    r.required = fixed ? r.fully_allocated : data_start + used * block_size;
    return r;
}

// The options, checked, and the layout they give: header section, log, metadata region, BAT region, data.
struct CreatePlan {
    bool fixed = false;
    bool state_zero = true;
    uint64_t log_size = 0;
    uint64_t log_offset = kHeaderSectionSize;
    uint64_t data_start = 0;
    Geometry g;
    std::vector<uint8_t> locator;  // a differencing image's parent locator item
};

// A differencing image: its parent must be a VHDX (opened alone, for its DataWriteGuid and geometry), whose
// logical sector size the child takes; the physical sector and block sizes default to the parent's.
Status plan_parent(const Format& self, const std::string& backing, const CreateOptions& opts, const OpenContext& ctx,
                   CreatePlan& p, uint64_t& lss, uint64_t& pss, uint64_t& block_size) {
    if (auto bf = opts.get("backing_fmt"); bf && *bf != "vhdx")
        return make_error(ErrorCode::invalid_argument,
                          "a differencing VHDX's parent must be a VHDX, not " + *bf +
                              " (vdisk does not create cross-format chains; convert the parent to vhdx first)");
    if (p.fixed) return make_error(ErrorCode::invalid_argument, "a differencing VHDX cannot be subformat=fixed");
    util::ParentNames names = util::parent_names(ctx.image_name(), backing);
    VDISK_ASSIGN(auto pf, ctx.open_related(backing, Access::read_only, "backing file"));
    OpenOptions po;
    po.no_backing = true;
    OpenContext pctx(ctx.fs(), names.resolved, po);
    auto pd = self.open(std::move(pf), pctx);
    if (!pd)
        return make_error(ErrorCode::invalid_argument, "backing file '" + backing + "' is not a usable VHDX (" +
                                                           pd.error().message +
                                                           "); a differencing VHDX's parent must be a VHDX");
    const Geometry& parent = *device_geometry(**pd);
    // The child addresses the parent's sectors: its logical sector size is the parent's.
    if (opts.get("logical_sector_size") && lss != parent.logical_sector)
        return make_error(ErrorCode::invalid_argument, "logical_sector_size " + std::to_string(lss) +
                                                           " differs from the parent's " +
                                                           std::to_string(parent.logical_sector));
    lss = parent.logical_sector;
    if (!opts.get("physical_sector_size")) pss = parent.physical_sector;
    if (!opts.get("block_size")) block_size = parent.block_size;
    auto kv = locator_values(device_header(**pd)->data_write_guid, names);
    p.locator = parent_locator_item(kv);
    p.g.has_parent = true;
    p.g.relative_path = names.relative.empty() ? "" : win_path(names.relative, true);
    std::replace(p.g.relative_path.begin(), p.g.relative_path.end(), '\\', '/');
    p.g.absolute_win32_path = names.absolute;
    p.g.parent_linkage = kv[0].second;
    return ok();
}

Result<CreatePlan> plan_create(const Format& self, const CreateOptions& opts, const OpenContext& ctx) {
    CreatePlan p;
    VDISK_ASSIGN(p.fixed, fixed_option(opts));
    VDISK_ASSIGN(uint64_t block_size, opts.get_size("block_size", 0));
    VDISK_ASSIGN(p.log_size, opts.get_size("log_size", 1 * MiB));
    VDISK_ASSIGN(p.state_zero, opts.get_bool("block_state_zero", true));
    VDISK_ASSIGN(uint64_t lss, opts.get_size("logical_sector_size", 512));
    VDISK_ASSIGN(uint64_t pss, opts.get_size("physical_sector_size", lss));
    if ((lss != 512 && lss != 4096) || (pss != 512 && pss != 4096))
        return make_error(ErrorCode::invalid_argument, "sector sizes must be 512 or 4096");
    if (auto backing = opts.get("backing_file"))
        VDISK_TRY(plan_parent(self, *backing, opts, ctx, p, lss, pss, block_size));
    Geometry& g = p.g;
    g.virtual_size = *opts.size;
    VDISK_TRY(check_sizes(g.virtual_size, lss, block_size, p.log_size));
    g.block_size = static_cast<uint32_t>(block_size);
    g.logical_sector = static_cast<uint32_t>(lss);
    g.physical_sector = static_cast<uint32_t>(pss);
    g.leave_allocated = p.fixed;
    g.page83 = random_guid();
    if (auto u = opts.get("uuid"); u && !util::parse_uuid(*u, g.page83.b, true))
        return make_error(ErrorCode::invalid_argument, "uuid '" + *u + "' is not a UUID");
    set_bat_layout(g);
    if (g.bat_entries * 8 > ctx.limits().max_metadata_bytes)
        return make_error(ErrorCode::limit_exceeded,
                          "BAT of " + std::to_string(g.bat_entries) + " entries exceeds the metadata limit");
    g.metadata_offset = p.log_offset + p.log_size;
    g.metadata_length = 1 * MiB;
    g.size_item_offset = g.metadata_offset + kMetadataTableSize + 8;
    g.bat_offset = g.metadata_offset + g.metadata_length;
    g.bat_length = *util::align_up(g.bat_entries * 8, MiB);
    p.data_start = g.bat_offset + g.bat_length;
    return p;
}

Status write_header_section(File& file, const Geometry& g) {
    // File type identifier with a creator string.
    std::vector<uint8_t> buf(kHeaderSectionSize, 0);
    std::memcpy(buf.data(), kFileSignature, 8);
    const char* creator = "vdisk";
    for (size_t i = 0; creator[i]; ++i) buf[8 + 2 * i] = static_cast<uint8_t>(creator[i]);
    // Region tables (identical copies).
    std::vector<uint8_t> rt(kRegionTableSize, 0);
    RegionTableHeader h{};
    h.signature = kRegionSignature;
    h.entry_count = 2;
    std::memcpy(rt.data(), &h, sizeof h);
    RegionTableEntry e[2]{};
    e[0].guid = kBatRegionGuid;
    e[0].file_offset = g.bat_offset;
    e[0].length = static_cast<uint32_t>(g.bat_length);
    e[0].flags = 1;
    e[1].guid = kMetadataRegionGuid;
    e[1].file_offset = g.metadata_offset;
    e[1].length = static_cast<uint32_t>(g.metadata_length);
    e[1].flags = 1;
    std::memcpy(rt.data() + sizeof h, e, sizeof e);
    util::store_le<uint32_t>(rt.data() + offsetof(RegionTableHeader, checksum), util::crc32c(rt));
    std::memcpy(buf.data() + kRegionTable1Offset, rt.data(), rt.size());
    std::memcpy(buf.data() + kRegionTable2Offset, rt.data(), rt.size());
    return file.write_at(0, buf);
}

Status write_metadata_region(File& file, const Geometry& g, bool fixed, const std::vector<uint8_t>& locator) {
    // Metadata region: the table, then the items from 64 KiB.
    std::vector<uint8_t> m(static_cast<size_t>(g.metadata_length), 0);
    MetadataTableHeader h{};
    h.signature = kMetadataSignature;
    h.entry_count = locator.empty() ? 5 : 6;
    std::memcpy(m.data(), &h, sizeof h);
    const uint32_t base = kMetadataTableSize;
    put_meta_entry(m, 0, kFileParametersGuid, base, 8, kMetaIsRequired);
    put_meta_entry(m, 1, kVirtualDiskSizeGuid, base + 8, 8, kMetaIsRequired | kMetaIsVirtualDisk);
    put_meta_entry(m, 2, kPage83Guid, base + 16, 16, kMetaIsRequired | kMetaIsVirtualDisk);
    put_meta_entry(m, 3, kLogicalSectorSizeGuid, base + 32, 4, kMetaIsRequired | kMetaIsVirtualDisk);
    put_meta_entry(m, 4, kPhysicalSectorSizeGuid, base + 36, 4, kMetaIsRequired | kMetaIsVirtualDisk);
    util::store_le<uint32_t>(m.data() + base, g.block_size);
    util::store_le<uint32_t>(m.data() + base + 4, fixed ? kLeaveBlocksAllocated : g.has_parent ? kHasParent : 0);
    if (!locator.empty()) {
        // Parent locator: required, not a property of the virtual disk (2.6.2.6).
        put_meta_entry(m, 5, kParentLocatorGuid, base + 40, static_cast<uint32_t>(locator.size()), kMetaIsRequired);
        std::memcpy(m.data() + base + 40, locator.data(), locator.size());
    }
    util::store_le<uint64_t>(m.data() + base + 8, g.virtual_size);
    std::memcpy(m.data() + base + 16, g.page83.b, 16);
    util::store_le<uint32_t>(m.data() + base + 32, g.logical_sector);
    util::store_le<uint32_t>(m.data() + base + 36, g.physical_sector);
    return file.write_at(g.metadata_offset, m);
}

Result<std::vector<uint64_t>> write_bat(File& file, const Geometry& g, bool fixed, bool state_zero,
                                        uint64_t data_start) {
    // BAT: fixed images get every block laid out in order; dynamic ones start empty.
    std::vector<uint64_t> bat(static_cast<size_t>(g.bat_entries), 0);
    uint64_t end = data_start;
    for (uint64_t b = 0; b < g.data_blocks; ++b) {
        uint64_t& e = bat[static_cast<size_t>(payload_index(g, b))];
        if (fixed) {
            e = end | kPayloadFullyPresent;
            end += g.block_size;
        } else {
            e = state_zero && !g.has_parent ? kPayloadZero : kPayloadNotPresent;  // a child's blocks are its parent's
        }
    }
    {
        std::vector<uint8_t> raw(static_cast<size_t>(g.bat_length), 0);
        for (size_t i = 0; i < bat.size(); ++i) util::store_le<uint64_t>(raw.data() + i * 8, bat[i]);
        VDISK_TRY(file.write_at(g.bat_offset, raw));
    }
    VDISK_TRY(file.resize(end));
    if (fixed) VDISK_TRY(file.allocate(data_start, end - data_start));
    return bat;
}

Result<ActiveHeader> write_first_headers(File& file, uint64_t log_size, uint64_t log_offset) {
    ActiveHeader hdr;
    hdr.h = Header{};
    hdr.h.signature = kHeaderSignature;
    hdr.h.sequence_number = 0;
    hdr.h.file_write_guid = random_guid();
    hdr.h.data_write_guid = random_guid();
    hdr.h.version = 1;
    hdr.h.log_version = 0;
    hdr.h.log_length = static_cast<uint32_t>(log_size);
    hdr.h.log_offset = log_offset;
    hdr.slot = 1;
    VDISK_TRY(write_headers(file, hdr.h, hdr.slot));
    return hdr;
}

Result<std::unique_ptr<BlockDevice>> VhdxFormat::create(const CreateOptions& opts, const OpenContext& ctx) const {
    VDISK_ASSIGN(CreatePlan p, plan_create(*this, opts, ctx));
    // The BAT is charged like one read at open (resize charges what it adds).
    VDISK_ASSIGN(Charge bat_charge, Charge::make(ctx.budget(), p.g.bat_entries * 8, "VHDX BAT"));
    VDISK_ASSIGN(auto file, ctx.fs().create(ctx.image_name()));
    VDISK_TRY(write_header_section(*file, p.g));
    VDISK_TRY(write_metadata_region(*file, p.g, p.fixed, p.locator));
    VDISK_ASSIGN(auto bat, write_bat(*file, p.g, p.fixed, p.state_zero, p.data_start));
    VDISK_ASSIGN(ActiveHeader hdr, write_first_headers(*file, p.log_size, p.log_offset));
    bat_charge.keep();
    return make_device({.file = std::move(file),
                        .hdr = hdr,
                        .geo = std::move(p.g),
                        .bat = std::move(bat),
                        .read_only = false,
                        .fresh = true});
}

}  // namespace
}  // namespace vdisk::vhdx

namespace vdisk {
std::unique_ptr<Format> make_vhdx_format() { return std::make_unique<vhdx::VhdxFormat>(); }
}  // namespace vdisk
