// SPDX-License-Identifier: Apache-2.0
// Whole-chain mapping, comparison and the info JSON.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "util/bytes.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {

Result<MappedExtent> map_extent(BlockDevice& top, uint64_t offset, uint64_t max_len) {
    if (offset >= top.size())
        return make_error(ErrorCode::out_of_range,
                          "map at " + hex(offset) + " is past the end (" + hex(top.size()) + ")");
    uint64_t len = std::min(max_len, top.size() - offset);
    MappedExtent m;
    m.offset = offset;
    // Down the chain to the layer that holds the range; past the end of the chain, or of a backing image
    // shorter than its overlay, it reads zeros.
    for (BlockDevice* d = &top; offset < d->size(); d = d->backing(), ++m.depth) {
        VDISK_ASSIGN(Extent e, d->block_status(offset, std::min(len, d->size() - offset)));
        len = e.length;
        if (e.kind != ExtentKind::unallocated) {
            m.length = len;
            m.present = true;
            m.data = e.kind == ExtentKind::data;
            m.zero = e.kind == ExtentKind::zero;
            m.compressed = e.compressed;
            m.file = e.file;
            m.host_offset = e.host_offset;
            return m;
        }
        if (!d->backing()) break;
    }
    m.length = len;
    m.zero = true;
    return m;
}

namespace {

// The sector of the first byte where x differs from y (from zeros when y is null), if any.
std::optional<uint64_t> first_difference(const uint8_t* x, const uint8_t* y, uint64_t off, uint64_t n) {
    if (y && std::memcmp(x, y, n) == 0) return std::nullopt;
    for (uint64_t i = 0; i < n; ++i)
        if (x[i] != (y ? y[i] : 0)) return (off + i) & ~uint64_t{511};
    return std::nullopt;
}

// Past the shorter device's end, from `off`: the longer one must read zeros.
Result<std::optional<uint64_t>> first_nonzero(BlockDevice& longer, uint64_t off, uint8_t* buf, uint64_t chunk,
                                              const ProgressFn& progress) {
    while (off < longer.size()) {
        VDISK_ASSIGN(MappedExtent m, map_extent(longer, off, std::min(chunk, longer.size() - off)));
        if (m.data) {
            VDISK_TRY(longer.read(off, std::span<uint8_t>(buf, m.length)));
            if (auto d = first_difference(buf, nullptr, off, m.length)) return d;
        }
        off += m.length;
        VDISK_TRY(progress(off, longer.size()));
    }
    VDISK_TRY(progress(1, 1));
    return std::optional<uint64_t>{};
}

}  // namespace

Result<std::optional<uint64_t>> compare(BlockDevice& a, BlockDevice& b, bool strict_size, const ProgressFn& progress) {
    if (strict_size && a.size() != b.size()) return std::optional<uint64_t>(std::min(a.size(), b.size()));
    const uint64_t common = std::min(a.size(), b.size());
    // Buffers no larger than the larger device: comparing small images should not cost 2 MiB each time.
    // Left uninitialised: reads fill what is compared, so pages nothing reads into are never touched.
    const uint64_t kChunk = std::max<uint64_t>(1, std::min<uint64_t>(1 << 20, std::max(a.size(), b.size())));
    auto ba = std::make_unique_for_overwrite<uint8_t[]>(kChunk), bb = std::make_unique_for_overwrite<uint8_t[]>(kChunk);
    uint64_t off = 0;
    while (off < common) {
        uint64_t n = std::min(kChunk, common - off);
        VDISK_ASSIGN(MappedExtent ma, map_extent(a, off, n));
        VDISK_ASSIGN(MappedExtent mb, map_extent(b, off, n));
        n = std::min(ma.length, mb.length);
        if (!ma.data && !mb.data) {
            off += n;
            continue;
        }
        VDISK_TRY(a.read(off, std::span<uint8_t>(ba.get(), n)));
        VDISK_TRY(b.read(off, std::span<uint8_t>(bb.get(), n)));
        if (auto d = first_difference(ba.get(), bb.get(), off, n)) return d;
        off += n;
        VDISK_TRY(progress(off, std::max(a.size(), b.size())));
    }
    return first_nonzero(a.size() > b.size() ? a : b, off, ba.get(), kChunk, progress);
}

Json info_json(BlockDevice& device, std::string_view filename) {
    ImageInfo inf = device.info();
    Json j = Json::object();
    if (!inf.snapshots.empty()) {
        Json snaps = Json::array();
        for (auto& s : inf.snapshots) {
            Json o = Json::object();
            if (s.icount != UINT64_MAX) o.set("icount", s.icount);
            o.set("vm-clock-nsec", s.vm_clock_nsec % 1000000000ull);
            o.set("name", s.name);
            o.set("date-sec", s.date_sec);
            o.set("date-nsec", s.date_nsec);
            o.set("vm-clock-sec", s.vm_clock_nsec / 1000000000ull);
            o.set("id", s.id);
            o.set("vm-state-size", s.vm_state_size);
            snaps.push(std::move(o));
        }
        j.set("snapshots", std::move(snaps));
    }
    j.set("virtual-size", inf.virtual_size);
    j.set("filename", std::string(filename));
    if (inf.cluster_size) j.set("cluster-size", *inf.cluster_size);
    j.set("format", inf.format);
    uint64_t actual = 0;
    bool have_actual = false;
    for (File* f : device.files())
        if (auto a = f->allocated_size()) {
            actual += *a;
            have_actual = true;
        }
    if (have_actual) j.set("actual-size", actual);
    if (inf.encrypted) j.set("encrypted", true);
    if (inf.backing_filename) {
        j.set("backing-filename", *inf.backing_filename);
        j.set("full-backing-filename", resolve_reference(filename, *inf.backing_filename));
        if (inf.backing_format) j.set("backing-filename-format", *inf.backing_format);
    }
    if (!inf.format_specific.is_null()) j.set("format-specific", inf.format_specific);
    j.set("dirty-flag", inf.dirty);
    return j;
}

}  // namespace vdisk
