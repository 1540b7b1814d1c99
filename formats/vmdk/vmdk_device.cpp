// SPDX-License-Identifier: Apache-2.0
// VMDK device: the map of flat, zero and sparse extents (hosted KDMV, ESX COWD, seSparse) that the generic
// layer reads through, writes, the one-pass streamOptimized writer and info.
#include <algorithm>
#include <cstddef>
#include <cstring>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {

namespace {

uint64_t gte_bytes(const DiskExtent& e) { return e.kind == StoreKind::sesparse ? 8 : 4; }
uint64_t gt_bytes(const DiskExtent& e) { return e.gtes_per_gt * gte_bytes(e); }
uint64_t gt_sectors(const DiskExtent& e) { return util::div_round_up(gt_bytes(e), kSector); }

// Where `bytes` of new grains or grain tables go: the sector-aligned end of the file (directory and table
// entries count sectors in 32 bits).
Result<uint64_t> append_at(const DiskExtent& e, uint64_t bytes) {
    uint64_t at = util::align_up(e.file_size, kSector).value_or(0);
    if (at == 0 || (at + bytes) / kSector > 0xffffffffull)
        return make_error(ErrorCode::limit_exceeded, "extent '" + e.name + "' cannot grow past 2 TiB");
    return at;
}

// Writes go to flat, zero and uncompressed hosted sparse extents open for writing.
Status writable(const DiskExtent& e) {
    if (e.access != ExtentAccess::rw)
        return make_error(ErrorCode::read_only, "extent '" + e.name + "' is not writable");
    if ((e.kind != StoreKind::flat && e.kind != StoreKind::zero && e.kind != StoreKind::hosted) || e.compressed)
        return make_error(ErrorCode::unsupported, "writing to a " + std::string(to_string(e.type)) +
                                                      (e.compressed ? " compressed" : "") + " extent is not supported");
    return ok();
}

// The value of the descriptor's "CID=" line (any case, possibly indented): {first, end} offsets in `text`,
// trailing CRs and blanks left out.
std::optional<std::pair<size_t, size_t>> cid_value(std::string_view text) {
    for (size_t pos = 0; pos < text.size();) {
        size_t nl = std::min(text.find('\n', pos), text.size());
        size_t k = text.find_first_not_of(" \t", pos);
        if (k < nl && nl - k >= 4 && (text[k] == 'C' || text[k] == 'c') && (text[k + 1] == 'I' || text[k + 1] == 'i') &&
            (text[k + 2] == 'D' || text[k + 2] == 'd')) {
            size_t eq = text.find_first_not_of(" \t", k + 3);
            if (eq < nl && text[eq] == '=') {
                size_t vend = nl;
                while (vend > eq + 1 && (text[vend - 1] == '\r' || text[vend - 1] == ' ')) --vend;
                return std::pair{eq + 1, vend};
            }
        }
        pos = nl + 1;
    }
    return std::nullopt;
}

}  // namespace

VmdkDevice::VmdkDevice(uint64_t size, bool read_only, VmdkParts parts, const Limits& limits)
    : BlockDevice(size, read_only),
      desc_(std::move(parts.desc)),
      files_(std::move(parts.files)),
      extents_(std::move(parts.extents)),
      limits_(limits),
      desc_file_(parts.desc_file),
      desc_at_(parts.desc_at),
      desc_room_(parts.desc_room) {}

std::vector<File*> VmdkDevice::files() const {
    std::vector<File*> out;
    for (auto& f : files_) out.push_back(f.get());
    return out;
}

uint64_t VmdkDevice::write_granularity() const {
    if (stream_writer_) return extents_.front().grain;
    return 512;
}

uint64_t VmdkDevice::compress_granularity() const { return stream_writer_ ? extents_.front().grain : 0; }

std::optional<BackingReference> VmdkDevice::backing_reference() const {
    if (!desc_.parent_hint || desc_.parent_hint->empty()) return std::nullopt;
    BackingReference r;
    r.names.push_back(*desc_.parent_hint);
    return r;
}

Status VmdkDevice::check_backing_identity(BlockDevice& backing) {
    if (desc_.parent_cid == 0xffffffffu) return ok();
    std::optional<uint64_t> parent_cid;
    if (auto* p = dynamic_cast<VmdkDevice*>(&backing)) {
        parent_cid = p->descriptor().cid;
    } else {
        ImageInfo pi = backing.info();
        if (auto* d = pi.format_specific.get("data"))
            if (auto* c = d->get("cid"))
                if (auto* u = c->as_uint()) parent_cid = *u;
    }
    if (!parent_cid || *parent_cid == desc_.parent_cid) return ok();
    // A wrong parent means the child's grains were written against other data: reading would mix disks.
    return make_error(ErrorCode::corrupt, "parentCID " + hex(desc_.parent_cid) + " does not match the parent's CID " +
                                              hex(*parent_cid) + " (use force to open anyway)");
}

size_t VmdkDevice::find_extent(uint64_t offset) const {
    auto it = std::upper_bound(extents_.begin(), extents_.end(), offset,
                               [](uint64_t off, const DiskExtent& e) { return off < e.start; });
    return static_cast<size_t>(it - extents_.begin()) - 1;
}

// Grain tables -----------------------------------------------------------------------------------------

Result<const std::vector<uint64_t>*> VmdkDevice::table(size_t ei, uint64_t gt) {
    DiskExtent& e = extents_[ei];
    if (stream_writer_ && gt == stream_gt_) return &stream_entries_;
    if (gt >= e.gd.size()) return nullptr;
    uint64_t entry = e.gd[gt];
    if (entry == 0) return nullptr;
    uint64_t key = (static_cast<uint64_t>(ei) << 40) | gt;
    if (auto it = gt_cache_.find(key); it != gt_cache_.end()) return &it->second;

    uint64_t off = 0;
    const uint64_t gd_entry_at = e.gd_offset + gt * gte_bytes(e);
    if (e.kind == StoreKind::sesparse) {
        // seSparse GD entries are tagged: 0x1 in the top nibble, the grain table's index in the low 32 bits.
        if ((entry & 0xffffffff00000000ull) != 0x1000000000000000ull)
            return make_error(ErrorCode::corrupt, "grain directory entry " + hex(entry) + " of seSparse extent '" +
                                                      e.name + "' has an unknown type")
                .at(gd_entry_at);
        auto o = util::mul<uint64_t>(entry & 0xffffffffull, gt_bytes(e));
        auto o2 = o ? util::add<uint64_t>(*o, e.se_gt_base) : std::nullopt;
        if (!o2) return make_error(ErrorCode::corrupt, "grain table index overflows").at(gd_entry_at);
        off = *o2;
    } else {
        off = entry * kSector;  // entry < 2^32: no overflow
    }
    if (!util::range_within(off, gt_bytes(e), e.file_size))
        return make_error(ErrorCode::corrupt, "grain table " + std::to_string(gt) + " at " + hex(off) + " of extent '" +
                                                  e.name + "' lies past the end of the file (" + hex(e.file_size) + ")")
            .at(gd_entry_at);
    std::vector<uint8_t> raw(gt_bytes(e));
    VDISK_TRY(read_exact(*e.file, off, raw, "grain table"));
    std::vector<uint64_t> t(e.gtes_per_gt);
    for (uint64_t i = 0; i < e.gtes_per_gt; ++i)
        t[i] = e.kind == StoreKind::sesparse ? util::load_le<uint64_t>(raw.data() + i * 8)
                                             : util::load_le<uint32_t>(raw.data() + i * 4);
    uint64_t bytes = t.size() * sizeof(uint64_t);
    if (!gt_charge_.budget()) gt_charge_ = Charge::make(budget(), 0, "grain table cache").value();
    if (gt_cache_bytes_ + bytes > limits_.max_cache_bytes ||
        !gt_charge_.resize(gt_cache_bytes_ + bytes, "grain table cache")) {
        VDISK_TRY(write_back_gt());
        gt_cache_.clear();
        gt_cache_bytes_ = 0;
        // One table is always allowed (reads need it), charged when the budget has room.
        (void)gt_charge_.resize(bytes, "grain table cache");
    }
    gt_cache_bytes_ += bytes;
    auto [it, _] = gt_cache_.emplace(key, std::move(t));
    return &it->second;
}

Result<GrainState> VmdkDevice::lookup(size_t ei, uint64_t gi) {
    DiskExtent& e = extents_[ei];
    GrainState g;
    uint64_t v = 0;
    const uint64_t gt = gi / e.gtes_per_gt;
    bool hit = false;
    if (!(stream_writer_ && gt == stream_gt_)) {
        // Readers that find their table cached share the lock (the directory and the cache change only under
        // the device's exclusive lock or meta_mu_ held exclusively); a miss loads it alone, below.
        std::shared_lock lock(meta_mu_);
        if (gt >= e.gd.size() || e.gd[gt] == 0) return g;
        if (auto it = gt_cache_.find((static_cast<uint64_t>(ei) << 40) | gt); it != gt_cache_.end()) {
            v = it->second[gi % e.gtes_per_gt];
            hit = true;
        }
    }
    if (!hit) {
        std::lock_guard lock(meta_mu_);
        VDISK_ASSIGN(const std::vector<uint64_t>* t, table(ei, gt));
        if (!t) return g;
        v = (*t)[gi % e.gtes_per_gt];
    }
    if (v == 0) return g;
    if (e.kind == StoreKind::sesparse) {
        switch (v >> 60) {
            case 1:  // unmapped (SCSI UNMAP): reads as zeros
            case 2:  // zero grain
                g.kind = GrainState::zero;
                return g;
            case 3: {
                // The grain index is split: its low 12 bits sit in bits 48..59, the rest in bits 0..47.
                uint64_t idx = ((v & 0x0fff000000000000ull) >> 48) | ((v & 0x0000ffffffffffffull) << 12);
                auto h = util::mul<uint64_t>(idx, e.grain);
                auto h2 = h ? util::add<uint64_t>(*h, e.se_grains_base) : std::nullopt;
                if (!h2 || *h2 >= e.file_size)
                    return make_error(ErrorCode::corrupt, "grain table entry " + hex(v) + " for grain " +
                                                              std::to_string(gi) + " points past the end of the file");
                g.kind = GrainState::data;
                g.host = *h2;
                return g;
            }
            default:
                return make_error(ErrorCode::corrupt, "grain table entry " + hex(v) + " for grain " +
                                                          std::to_string(gi) + " has an unknown type");
        }
    }
    if (v == kGteZeroed && e.kind == StoreKind::hosted) {
        g.kind = GrainState::zero;
        return g;
    }
    uint64_t host = v * kSector;  // v < 2^32: no overflow
    if (host >= e.file_size)
        return make_error(ErrorCode::corrupt, "grain table entry for grain " + std::to_string(gi) + " of extent '" +
                                                  e.name + "' points at " + hex(host) + ", past the end of the file (" +
                                                  hex(e.file_size) + ")");
    g.kind = e.compressed ? GrainState::compressed : GrainState::data;
    g.host = host;
    return g;
}

// Reading (map first) -------------------------------------------------------------------------------------

Result<std::pair<uint64_t, uint64_t>> VmdkDevice::compressed_bytes(size_t ei, uint64_t gi, uint64_t host) {
    DiskExtent& e = extents_[ei];
    // A deflated grain is never much bigger than the grain; anything larger is corrupt, not a reason to allocate.
    uint64_t cap = e.grain * 2 + 4096;
    if (!e.markers) return std::pair{host, std::min(cap, e.file_size - host)};
    uint8_t head[kGrainMarkerHead];
    VDISK_TRY(read_exact(*e.file, host, head, "grain marker"));
    uint64_t len = util::load_le<uint32_t>(head + 8);
    uint64_t data_at = host + kGrainMarkerHead;
    if (len == 0 || len > cap)
        return make_error(ErrorCode::corrupt,
                          "compressed grain " + std::to_string(gi) + " has size " + std::to_string(len))
            .at(host);
    if (!util::range_within(data_at, len, e.file_size))
        return make_error(ErrorCode::corrupt, "compressed grain " + std::to_string(gi) + " of " + std::to_string(len) +
                                                  " bytes runs past the end of the file (" + hex(e.file_size) + ")")
            .at(host);
    return std::pair{data_at, len};
}

// Flat extents are one run of their file and ZERO extents zeros. In a sparse extent a compressed grain is one
// unit (not past its extent, whose end need not be a grain multiple); following grains of the same state (data:
// back to back in the file) make one run, within a bounded walk.
Result<StoredExtent> VmdkDevice::do_map_stored(uint64_t offset, uint64_t max_len) {
    const size_t ei = find_extent(offset);
    const DiskExtent& e = extents_[ei];
    const uint64_t rel = offset - e.start;
    const uint64_t limit = std::min(max_len, e.length - rel);
    StoredExtent s;
    s.offset = offset;
    s.length = limit;
    if (e.kind == StoreKind::flat || e.kind == StoreKind::zero) {
        s.kind = e.kind == StoreKind::flat ? StoredKind::data : StoredKind::zero;
        s.file = e.file;
        s.host_offset = e.flat_offset + rel;
        return s;
    }
    const uint64_t gi = rel / e.grain;
    VDISK_ASSIGN(GrainState first, lookup(ei, gi));
    s.file = e.file;
    if (first.kind == GrainState::compressed) {
        VDISK_ASSIGN(auto where, compressed_bytes(ei, gi, first.host));
        s.kind = StoredKind::compressed;
        s.offset = e.start + gi * e.grain;
        s.length = std::min(e.grain, e.length - gi * e.grain);
        s.host_offset = where.first;
        s.host_length = where.second;
        return s;
    }
    s.kind = first.kind == GrainState::data   ? StoredKind::data
             : first.kind == GrainState::zero ? StoredKind::zero
                                              : StoredKind::unallocated;
    s.host_offset = first.host + rel % e.grain;
    s.length = std::min(limit, e.grain - rel % e.grain);
    uint64_t next = gi + 1;
    for (unsigned steps = 0; s.length < limit && steps < 65536; ++steps) {
        // A grain table the directory does not name is a table's worth of unallocated grains: one step.
        const uint64_t gt = next / e.gtes_per_gt;
        uint64_t grains = 1;
        if (first.kind == GrainState::unallocated && next % e.gtes_per_gt == 0 &&
            !(stream_writer_ && gt == stream_gt_) && (gt >= e.gd.size() || e.gd[gt] == 0)) {
            grains = e.gtes_per_gt;
        } else {
            VDISK_ASSIGN(GrainState g, lookup(ei, next));
            if (g.kind != first.kind || (g.kind == GrainState::data && g.host != first.host + e.grain * (next - gi)))
                break;
        }
        s.length = std::min(limit, s.length + grains * e.grain);
        next += grains;
    }
    return s;
}

// A grain may inflate to less than a grain (qemu accepts that); the rest reads as zeros.
Status VmdkDevice::inflate_unit(const StoredExtent& unit, std::span<const uint8_t> stored,
                                std::span<uint8_t> out) const {
    if (unit.kind != StoredKind::compressed || out.size() != unit.length)
        return make_error(ErrorCode::invalid_argument, "vmdk: inflate_unit needs one compressed grain");
    size_t produced = 0;
    if (!util::inflate_into(stored, out, false, &produced))
        return make_error(ErrorCode::corrupt,
                          "compressed grain at virtual offset " + hex(unit.offset) + " does not inflate")
            .at(unit.host_offset);
    std::memset(out.data() + produced, 0, out.size() - produced);
    return ok();
}

// Writing ------------------------------------------------------------------------------------------------

Status VmdkDevice::set_gte(size_t ei, uint64_t gi, uint32_t value) {
    DiskExtent& e = extents_[ei];
    uint64_t gt = gi / e.gtes_per_gt;
    uint64_t j = gi % e.gtes_per_gt;
    if (gt >= e.gd.size())
        return make_error(ErrorCode::corrupt, "grain " + std::to_string(gi) + " lies outside the grain directory");
    uint64_t gtsz = gt_sectors(e) * kSector;
    auto alloc_table = [&](std::vector<uint64_t>& dir, uint64_t dir_offset) -> Status {
        if (dir[gt] != 0) return ok();
        VDISK_ASSIGN(uint64_t at, append_at(e, 0));
        std::vector<uint8_t> zeros(gtsz, 0);
        VDISK_TRY(e.file->write_at(at, zeros));
        e.file_size = at + gtsz;
        dir[gt] = at / kSector;
        uint8_t le[4];
        util::store_le<uint32_t>(le, static_cast<uint32_t>(dir[gt]));
        return e.file->write_at(dir_offset + gt * 4, le);
    };
    VDISK_TRY(alloc_table(e.gd, e.gd_offset));
    if (!e.rgd.empty()) VDISK_TRY(alloc_table(e.rgd, e.rgd_offset));
    const uint64_t key = (static_cast<uint64_t>(ei) << 40) | gt;
    if (dirty_key_ != key) VDISK_TRY(write_back_gt());
    VDISK_ASSIGN(const std::vector<uint64_t>* t, table(ei, gt));  // loads the table into the cache
    if (!t) return make_error(ErrorCode::io, "grain table " + std::to_string(gt) + " is missing after allocation");
    const_cast<std::vector<uint64_t>&>(*t)[j] = value;
    if (dirty_key_ != key) {
        dirty_key_ = key;
        dirty_lo_ = j;
        dirty_hi_ = j + 1;
    } else {
        dirty_lo_ = std::min(dirty_lo_, j);
        dirty_hi_ = std::max(dirty_hi_, j + 1);
    }
    return ok();
}

Status VmdkDevice::write_back_gt() {
    if (dirty_key_ == UINT64_MAX) return ok();
    const size_t ei = static_cast<size_t>(dirty_key_ >> 40);
    const uint64_t gt = dirty_key_ & ((1ull << 40) - 1);
    DiskExtent& e = extents_[ei];
    auto it = gt_cache_.find(dirty_key_);
    if (it == gt_cache_.end())
        return make_error(ErrorCode::io, "dirty grain table " + std::to_string(gt) + " left the cache");
    std::vector<uint8_t> raw((dirty_hi_ - dirty_lo_) * 4);
    for (uint64_t j = dirty_lo_; j < dirty_hi_; ++j)
        util::store_le<uint32_t>(raw.data() + (j - dirty_lo_) * 4, static_cast<uint32_t>(it->second[j]));
    VDISK_TRY(e.file->write_at(e.gd[gt] * kSector + dirty_lo_ * 4, raw));
    if (!e.rgd.empty()) VDISK_TRY(e.file->write_at(e.rgd[gt] * kSector + dirty_lo_ * 4, raw));
    dirty_key_ = UINT64_MAX;
    return ok();
}

Status VmdkDevice::write_sparse(size_t ei, uint64_t rel, std::span<const uint8_t> buf) {
    DiskExtent& e = extents_[ei];  // hosted, not compressed (do_write checked)
    size_t done = 0;
    while (done < buf.size()) {
        uint64_t pos = rel + done;
        uint64_t gi = pos / e.grain;
        uint64_t in_grain = pos % e.grain;
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size() - done, e.grain - in_grain));
        auto piece = buf.subspan(done, n);
        VDISK_ASSIGN(GrainState g, lookup(ei, gi));
        const bool zero_piece = g.kind != GrainState::data && util::is_zero(piece);
        if (g.kind == GrainState::data) {
            VDISK_TRY(e.file->write_at(g.host + in_grain, piece));
        } else if (zero_piece && (g.kind == GrainState::zero || (g.kind == GrainState::unallocated && !backing()))) {
            // Already reads as zeros.
        } else if (zero_piece && n == e.grain && e.zeroed_gte) {
            VDISK_TRY(set_gte(ei, gi, kGteZeroed));
        } else if (in_grain == 0 && n == e.grain) {
            VDISK_ASSIGN(n, append_grains(ei, gi, buf.subspan(done)));
        } else {
            VDISK_TRY(allocate_grain(ei, gi, g.kind, in_grain, piece));
        }
        done += n;
    }
    return ok();
}

// Whole new grains: take the run of following whole grains that are not allocated yet and hold data, place
// them back to back at the end of the file and write them with one call. Returns the bytes written.
Result<size_t> VmdkDevice::append_grains(size_t ei, uint64_t gi, std::span<const uint8_t> buf) {
    DiskExtent& e = extents_[ei];
    uint64_t run = 1;
    while ((run + 1) * e.grain <= buf.size() && run < 256) {
        VDISK_ASSIGN(GrainState ng, lookup(ei, gi + run));
        if (ng.kind == GrainState::data || ng.kind == GrainState::compressed) break;
        if (util::is_zero(buf.subspan(run * e.grain, e.grain))) break;
        ++run;
    }
    VDISK_ASSIGN(uint64_t at, append_at(e, run * e.grain));
    VDISK_TRY(e.file->write_at(at, buf.first(run * e.grain)));
    e.file_size = at + run * e.grain;
    for (uint64_t k = 0; k < run; ++k)
        VDISK_TRY(set_gte(ei, gi + k, static_cast<uint32_t>((at + k * e.grain) / kSector)));
    return static_cast<size_t>(run * e.grain);
}

// Allocate a whole grain for part of it: the parts not written come from the backing (copy on write) or are zeros.
Status VmdkDevice::allocate_grain(size_t ei, uint64_t gi, GrainState::Kind was, uint64_t in_grain,
                                  std::span<const uint8_t> piece) {
    DiskExtent& e = extents_[ei];
    std::vector<uint8_t> grain(e.grain, 0);
    uint64_t gstart = gi * e.grain;
    if (was == GrainState::unallocated && gstart < e.length) {
        uint64_t avail = std::min<uint64_t>(e.grain, e.length - gstart);
        VDISK_TRY(read_from_backing(e.start + gstart, std::span<uint8_t>(grain.data(), avail)));
    }
    std::memcpy(grain.data() + in_grain, piece.data(), piece.size());
    VDISK_ASSIGN(uint64_t at, append_at(e, e.grain));
    VDISK_TRY(e.file->write_at(at, grain));
    e.file_size = at + e.grain;
    return set_gte(ei, gi, static_cast<uint32_t>(at / kSector));
}

Status VmdkDevice::do_write(uint64_t offset, std::span<const uint8_t> buf) {
    if (stream_writer_) return stream_write(offset, buf);
    // Refuse before touching anything: a write that cannot happen must not change the CID or half the data.
    for (uint64_t pos = offset; pos < offset + buf.size();) {
        const DiskExtent& e = extents_[find_extent(pos)];
        VDISK_TRY(writable(e));
        pos = e.start + e.length;
    }
    if (!cid_updated_) VDISK_TRY(update_cid());
    size_t done = 0;
    while (done < buf.size()) {
        uint64_t pos = offset + done;
        size_t ei = find_extent(pos);
        DiskExtent& e = extents_[ei];
        uint64_t rel = pos - e.start;
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size() - done, e.length - rel));
        auto piece = buf.subspan(done, n);
        switch (e.kind) {
            case StoreKind::flat: VDISK_TRY(e.file->write_at(e.flat_offset + rel, piece)); break;
            case StoreKind::zero:
                if (!util::is_zero(piece))
                    return make_error(ErrorCode::unsupported, "cannot write data to a ZERO extent");
                break;
            default: VDISK_TRY(write_sparse(ei, rel, piece));
        }
        done += n;
    }
    return ok();
}

Status VmdkDevice::update_cid() {
    cid_updated_ = true;
    if (!desc_file_) return ok();
    uint64_t len = desc_room_;
    if (len == 0) {
        VDISK_ASSIGN(len, desc_file_->size());
        if (len > limits_.max_descriptor_bytes) return ok();
    }
    std::string text(len, '\0');
    VDISK_TRY(read_zero_fill(*desc_file_, desc_at_, std::span<uint8_t>(reinterpret_cast<uint8_t*>(text.data()), len)));
    size_t end = std::min(text.find('\0'), text.size());
    auto value = cid_value(std::string_view(text).substr(0, end));
    if (!value) return ok();
    uint8_t rnd[16];
    util::generate_uuid(rnd);
    uint32_t cid = util::load_le<uint32_t>(rnd) % 0xfffffffeu;
    char hexs[16];
    std::snprintf(hexs, sizeof hexs, "%08x", cid);
    std::string updated = text.substr(0, value->first) + hexs + text.substr(value->second, end - value->second);
    if (desc_room_ && updated.size() > desc_room_) return ok();
    if (!desc_room_) VDISK_TRY(desc_file_->resize(updated.size()));
    else updated.resize(std::max<size_t>(updated.size(), end), '\0');  // blank the old tail
    VDISK_TRY(desc_file_->write_at(desc_at_, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(updated.data()),
                                                                      updated.size())));
    desc_.cid = cid;
    return ok();
}

Status VmdkDevice::do_flush() {
    VDISK_TRY(write_back_gt());
    for (auto& f : files_) VDISK_TRY(f->sync());
    return ok();
}

Status VmdkDevice::do_close() {
    if (stream_writer_ && !stream_done_) VDISK_TRY(stream_finish());
    if (!read_only()) return do_flush();
    return ok();
}

// streamOptimized one-pass writer --------------------------------------------------------------------------

void VmdkDevice::start_stream(uint64_t end) {
    stream_writer_ = true;
    stream_end_ = end;
}

Result<std::vector<uint8_t>> VmdkDevice::compress_chunk(std::span<const uint8_t> chunk) const {
    if (!stream_writer_) return BlockDevice::compress_chunk(chunk);
    uint64_t grain = extents_.front().grain;
    std::vector<uint8_t> padded;
    if (chunk.size() < grain) {
        // The last grain of a disk whose size is not a grain multiple is stored whole, zero padded.
        padded.assign(grain, 0);
        std::memcpy(padded.data(), chunk.data(), chunk.size());
        chunk = padded;
    }
    std::vector<uint8_t> out;
    // Every grain of a stream must be deflated; for data that cannot shrink, stored blocks (level 0) give
    // the same size as level 6 at memcpy speed. Otherwise libdeflate level 5: on 64 KiB grains of real system
    // files it gives the size of qemu's zlib level 6 (0.348 of the input) at about 3x its speed per core;
    // level 4 is 35 % faster still but 2 % larger.
    int level = util::likely_incompressible(chunk, 32768) ? 0 : 5;
    if (!util::deflate_into(chunk, out, false, level, grain + grain / 8 + 1024))
        return make_error(ErrorCode::io, "deflate failed");
    return out;
}

Status VmdkDevice::do_write_compressed_chunk(uint64_t offset, std::span<const uint8_t> compressed, uint64_t) {
    if (!stream_writer_) return BlockDevice::do_write_compressed_chunk(offset, compressed, 0);
    return stream_append(offset / extents_.front().grain, compressed);
}

// A metadata marker of `type` and the table `entries` (32-bit) after it, whole sectors, appended to the stream.
// Returns the sector where the table starts.
Result<uint64_t> VmdkDevice::stream_put_table(uint32_t type, const std::vector<uint64_t>& entries) {
    DiskExtent& e = extents_.front();
    const uint64_t sectors = util::div_round_up(entries.size() * 4, kSector);
    std::vector<uint8_t> buf((1 + sectors) * kSector, 0);
    util::store_le<uint64_t>(buf.data() + offsetof(Marker, value), sectors);
    util::store_le<uint32_t>(buf.data() + offsetof(Marker, type), type);
    for (size_t i = 0; i < entries.size(); ++i)
        util::store_le<uint32_t>(buf.data() + kSector + i * 4, static_cast<uint32_t>(entries[i]));
    VDISK_TRY(e.file->write_at(stream_end_, buf));
    const uint64_t at = stream_end_ / kSector + 1;
    stream_end_ += buf.size();
    e.file_size = stream_end_;
    return at;
}

Status VmdkDevice::stream_flush_gt() {
    if (stream_gt_ == UINT64_MAX) return ok();
    if (std::any_of(stream_entries_.begin(), stream_entries_.end(), [](uint64_t v) { return v != 0; })) {
        VDISK_ASSIGN(extents_.front().gd[stream_gt_], stream_put_table(kMarkerGt, stream_entries_));
        // The table now lives in the file; drop any stale cached copy.
        gt_cache_.erase(stream_gt_);
    }
    stream_gt_ = UINT64_MAX;
    return ok();
}

Status VmdkDevice::stream_in_order(uint64_t gi) const {
    if (gi >= stream_next_grain_) return ok();
    return make_error(ErrorCode::invalid_argument, "streamOptimized images are written in one forward pass (grain " +
                                                       std::to_string(gi) + " after " +
                                                       std::to_string(stream_next_grain_) + ")");
}

Status VmdkDevice::stream_write(uint64_t offset, std::span<const uint8_t> buf) {
    const DiskExtent& e = extents_.front();
    for (uint64_t done = 0; done < buf.size(); done += e.grain) {
        auto chunk = buf.subspan(done, std::min<uint64_t>(e.grain, buf.size() - done));
        uint64_t gi = (offset + done) / e.grain;
        if (!util::is_zero(chunk)) {
            VDISK_ASSIGN(auto z, compress_chunk(chunk));
            VDISK_TRY(stream_append(gi, z));
        } else {
            VDISK_TRY(stream_in_order(gi));
            stream_next_grain_ = gi + 1;
        }
    }
    return ok();
}

Status VmdkDevice::stream_append(uint64_t gi, std::span<const uint8_t> compressed) {
    DiskExtent& e = extents_.front();
    if (stream_done_) return make_error(ErrorCode::invalid_argument, "streamOptimized image already finished");
    VDISK_TRY(stream_in_order(gi));
    uint64_t gt = gi / e.gtes_per_gt;
    if (gt != stream_gt_) {
        VDISK_TRY(stream_flush_gt());
        stream_gt_ = gt;
        stream_entries_.assign(e.gtes_per_gt, 0);
    }
    if (stream_end_ / kSector > 0xffffffffull)
        return make_error(ErrorCode::limit_exceeded, "streamOptimized file would exceed 2 TiB");
    uint64_t total = util::align_up(kGrainMarkerHead + compressed.size(), kSector).value_or(0);
    std::vector<uint8_t> buf(total, 0);
    util::store_le<uint64_t>(buf.data(), gi * (e.grain / kSector));
    util::store_le<uint32_t>(buf.data() + 8, static_cast<uint32_t>(compressed.size()));
    std::memcpy(buf.data() + kGrainMarkerHead, compressed.data(), compressed.size());
    VDISK_TRY(e.file->write_at(stream_end_, buf));
    stream_entries_[gi % e.gtes_per_gt] = stream_end_ / kSector;
    stream_end_ += total;
    e.file_size = stream_end_;
    stream_next_grain_ = gi + 1;
    return ok();
}

Status VmdkDevice::stream_finish() {
    DiskExtent& e = extents_.front();
    VDISK_TRY(stream_flush_gt());
    VDISK_ASSIGN(uint64_t gd_at, stream_put_table(kMarkerGd, e.gd));
    // Footer marker, footer (the header with the real GD offset), end-of-stream marker.
    std::vector<uint8_t> tail(3 * kSector, 0);
    util::store_le<uint64_t>(tail.data() + offsetof(Marker, value), 1);
    util::store_le<uint32_t>(tail.data() + offsetof(Marker, type), kMarkerFooter);
    SparseExtentHeader footer = e.header;
    footer.gd_offset = gd_at;
    std::memcpy(tail.data() + kSector, &footer, sizeof footer);
    VDISK_TRY(e.file->write_at(stream_end_, tail));
    stream_end_ += tail.size();
    e.file_size = stream_end_;
    e.gd_offset = gd_at * kSector;
    stream_done_ = true;
    stream_writer_ = false;
    return ok();
}

// Info -----------------------------------------------------------------------------------------------------

ImageInfo VmdkDevice::do_info() const {
    ImageInfo i;
    i.format = "vmdk";
    i.virtual_size = size();
    if (!extents_.empty() && extents_.front().grain) i.cluster_size = extents_.front().grain;
    if (desc_.parent_hint) i.backing_filename = *desc_.parent_hint;
    Json data = Json::object();
    data.set("cid", static_cast<uint64_t>(desc_.cid));
    data.set("parent-cid", static_cast<uint64_t>(desc_.parent_cid));
    data.set("create-type", desc_.create_type);
    Json list = Json::array();
    for (auto& e : extents_) {
        Json x = Json::object();
        x.set("virtual-size", e.length);
        x.set("filename", e.file ? e.file->name() : std::string());
        if (e.grain) x.set("cluster-size", e.grain);
        // qemu-img leaves the format empty for an extent that no descriptor line names (monolithic files).
        x.set("format", e.embedded ? std::string() : std::string(to_string(e.type)));
        if (e.compressed) x.set("compressed", true);
        list.push(std::move(x));
    }
    data.set("extents", std::move(list));
    Json fs = Json::object();
    fs.set("type", "vmdk");
    fs.set("data", std::move(data));
    i.format_specific = std::move(fs);
    return i;
}

}  // namespace vdisk::vmdk
