// SPDX-License-Identifier: Apache-2.0
// The VHDX block device: reads through the BAT and sector bitmaps, block allocation on write (the BAT
// pages it changes are batched in memory and committed through the log, see vhdx_log_writer.cpp), and the
// consistency check.
#include <strings.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "util/units.hpp"
#include "vhdx_internal.hpp"

namespace vdisk::vhdx {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kEntriesPerPage = kPage / 8;
constexpr uint64_t kPageBits = kPage * 8;  // sectors one 4 KiB page of a sector bitmap covers
constexpr unsigned kMaxCoalesce = 4096;    // pieces do_map_stored joins into one answer
constexpr unsigned kBitmapSlots = 8;       // sector bitmap pages kept for readers

class VhdxDevice final : public BlockDevice {
public:
    VhdxDevice(DeviceState st, uint64_t file_size)
        : BlockDevice(st.geo.virtual_size, st.read_only),
          file_(std::move(st.file)),
          file_size_(file_size),
          overlay_(st.overlay),
          hdr_(st.hdr),
          g_(std::move(st.geo)),
          bat_(std::move(st.bat)),
          headers_rotated_(st.fresh),
          log_(*file_, hdr_, st.log_sequence) {
        // Valid blocks all lie inside the file (entries past EOF are refused on access), so new blocks go
        // after its end, 1 MiB aligned as 2.5 requires.
        alloc_end_ = util::align_up(file_size_, MiB).value_or(file_size_);
    }
    ~VhdxDevice() override {
        if (!read_only()) (void)close();
    }

    std::vector<File*> files() const override { return {file_.get()}; }
    uint64_t write_granularity() const override { return g_.logical_sector; }

    std::optional<BackingReference> backing_reference() const override {
        if (!g_.has_parent) return std::nullopt;
        BackingReference r;
        for (const std::string* s : {&g_.relative_path, &g_.volume_path, &g_.absolute_win32_path})
            if (!s->empty()) r.names.push_back(*s);
        r.format = "vhdx";
        return r;
    }

    const Header& header() const { return hdr_.h; }
    const Geometry& geometry() const { return g_; }

protected:
    Result<StoredExtent> do_map_stored(uint64_t offset, uint64_t max_len) override;
    Status do_write(uint64_t offset, std::span<const uint8_t> buf) override;
    Status do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) override;
    Status do_flush() override;
    Status do_resize(uint64_t new_size) override;
    Status do_close() override { return do_flush(); }
    ImageInfo do_info() const override;
    Status check_backing_identity(BlockDevice& backing) override;
    Result<CheckResult> do_check(RepairMode mode) override;

public:
    Status set_backing_reference(const std::string& name, const std::string& format, BlockDevice* nb) override;

private:
    static uint64_t host_of(uint64_t entry) { return (entry >> kBatOffsetShift) << kBatOffsetShift; }
    uint64_t entry_at(uint64_t index) const { return g_.bat_offset + index * 8; }

    // The payload entry of `block`, validated for use: a present block must lie inside the file.
    Result<uint64_t> payload(uint64_t block) const;
    Result<uint64_t> bitmap_host(uint64_t block) const;
    // How [offset, +max_len) begins, inside one block: for a PARTIALLY_PRESENT block one run of its bitmap.
    Result<StoredExtent> piece(uint64_t offset, uint64_t max_len) const;
    // The run of equal bits from sector `first` of `block`, at most `count` sectors and never past the 4 KiB
    // bitmap page holding the first: {bit, sectors}.
    Result<std::pair<bool, uint64_t>> bitmap_run(uint64_t block, uint64_t first, uint64_t count) const;
    void forget_bitmaps() const;
    Status begin_write();
    Status rotate_headers();
    // Metadata changes wait in memory (BAT pages by index, other pages by file offset) until commit_metadata()
    // sends them through the log: on flush, close, resize, or when one entry's worth has gathered.
    void mark_bat(uint64_t index) { dirty_bat_.insert(index / kEntriesPerPage); }
    Status stage_bytes(uint64_t offset, std::span<const uint8_t> bytes);
    uint64_t pending_pages() const { return dirty_bat_.size() + dirty_meta_.size(); }
    Status commit_metadata();
    Status commit_if_full() { return pending_pages() >= log_.max_data_pages() ? commit_metadata() : ok(); }
    Status allocate_block(uint64_t block, uint8_t old_state);
    Status materialize_block(uint64_t block, uint64_t host, bool from_parent = false);
    struct Checker;  // do_check's state

    std::unique_ptr<File> file_;
    uint64_t file_size_;
    bool overlay_;
    ActiveHeader hdr_;
    Geometry g_;
    std::vector<uint64_t> bat_;
    bool headers_rotated_;
    uint64_t alloc_end_ = 0;
    LogWriter log_;
    std::set<uint64_t> dirty_bat_;                         // BAT pages (4 KiB, from the region start)
    std::map<uint64_t, std::vector<uint8_t>> dirty_meta_;  // other metadata pages: file offset -> content
    // Sector bitmap pages readers looked at, by file offset (readers map concurrently: guarded by `mu`; the
    // file is read outside it). Writers, who run alone, forget them: a write may land on a bitmap's bytes.
    struct BitmapPages {
        std::mutex mu;
        struct Slot {
            uint64_t host = UINT64_MAX;  // file offset of the page; UINT64_MAX: empty
            std::array<uint8_t, kPage> bytes{};
        } slots[kBitmapSlots];
    };
    std::unique_ptr<BitmapPages> bitmaps_ = std::make_unique<BitmapPages>();
};

Result<uint64_t> VhdxDevice::payload(uint64_t block) const {
    uint64_t idx = payload_index(g_, block);
    uint64_t e = bat_[idx];
    uint8_t st = e & kBatStateMask;
    auto corrupt = [&](const std::string& what) {
        return make_error(ErrorCode::corrupt, "BAT entry " + std::to_string(idx) + what).at(entry_at(idx));
    };
    switch (st) {
        case kPayloadNotPresent:
        case kPayloadUndefined:
        case kPayloadZero:
        case kPayloadUnmapped: return e;
        case kPayloadPartiallyPresent:
            if (!g_.has_parent) return corrupt(" is PARTIALLY_PRESENT in an image without a parent");
            [[fallthrough]];
        case kPayloadFullyPresent: {
            uint64_t h = host_of(e);
            if (h < kHeaderSectionSize || !util::range_within(h, g_.block_size, file_size_))
                return corrupt(" points to block at " + hex(h) + " outside the file (size " + hex(file_size_) + ")");
            return e;
        }
        default: return corrupt(" has invalid payload state " + std::to_string(st));
    }
}

Result<uint64_t> VhdxDevice::bitmap_host(uint64_t block) const {
    uint64_t idx = bitmap_index(g_, block);
    if (idx >= bat_.size())
        return make_error(ErrorCode::corrupt, "sector bitmap entry " + std::to_string(idx) + " is beyond the BAT")
            .at(entry_at(payload_index(g_, block)));
    uint64_t e = bat_[idx];
    uint64_t h = host_of(e);
    auto corrupt = [&](const std::string& what) {
        return make_error(ErrorCode::corrupt, "sector bitmap entry " + std::to_string(idx) + what).at(entry_at(idx));
    };
    if ((e & kBatStateMask) != kSbPresent) return corrupt(" of a PARTIALLY_PRESENT block is not present");
    if (h < kHeaderSectionSize || !util::range_within(h, kSectorBitmapBlockSize, file_size_))
        return corrupt(" points to " + hex(h) + " outside the file");
    return h;
}

Result<std::pair<bool, uint64_t>> VhdxDevice::bitmap_run(uint64_t block, uint64_t first, uint64_t count) const {
    VDISK_ASSIGN(uint64_t h, bitmap_host(block));
    const uint64_t bit0 = (block % g_.chunk_ratio) * (g_.block_size / g_.logical_sector) + first;
    const uint64_t page = h + bit0 / kPageBits * kPage, in = bit0 % kPageBits;
    count = std::min(count, kPageBits - in);
    std::unique_lock lock(bitmaps_->mu);
    auto& slot = bitmaps_->slots[page / kPage % kBitmapSlots];
    if (slot.host != page) {
        lock.unlock();
        std::array<uint8_t, kPage> bytes;
        VDISK_TRY(read_zero_fill(*file_, page, bytes));
        lock.lock();
        slot.host = page;
        slot.bytes = bytes;
    }
    const uint8_t* b = slot.bytes.data();
    auto bit = [b](uint64_t i) { return ((b[i / 8] >> (i % 8)) & 1) != 0; };
    const bool v = bit(in);
    uint64_t n = 1;
    while (n < count) {
        uint64_t i = in + n;
        if (i % 8 == 0 && count - n >= 8 && b[i / 8] == (v ? 0xff : 0)) {
            n += 8;  // a whole byte of the same state
        } else if (bit(i) == v) {
            ++n;
        } else {
            break;
        }
    }
    return std::pair{v, n};
}

void VhdxDevice::forget_bitmaps() const {
    std::lock_guard lock(bitmaps_->mu);
    for (auto& s : bitmaps_->slots) s.host = UINT64_MAX;
}

Result<StoredExtent> VhdxDevice::piece(uint64_t offset, uint64_t max_len) const {
    const uint64_t block = offset / g_.block_size, inb = offset % g_.block_size;
    StoredExtent x;
    x.offset = offset;
    x.length = std::min<uint64_t>(max_len, g_.block_size - inb);
    VDISK_ASSIGN(uint64_t e, payload(block));
    switch (e & kBatStateMask) {
        case kPayloadFullyPresent: x.kind = StoredKind::data; break;
        case kPayloadNotPresent: x.kind = StoredKind::unallocated; break;
        case kPayloadPartiallyPresent: {
            // Sector by sector, from the bitmap: present sectors are here, the others in the parent.
            const uint64_t ls = g_.logical_sector, s0 = inb / ls;
            VDISK_ASSIGN(auto run, bitmap_run(block, s0, (inb + x.length + ls - 1) / ls - s0));
            x.length = std::min(inb + x.length, (s0 + run.second) * ls) - inb;
            x.kind = run.first ? StoredKind::data : StoredKind::unallocated;
            break;
        }
        default: x.kind = StoredKind::zero;  // ZERO, UNMAPPED, UNDEFINED: zeros in this layer (2.5.1.1)
    }
    if (x.kind == StoredKind::data) {
        x.file = file_.get();  // the image, or the log replay view of it
        x.host_offset = host_of(e) + inb;
    }
    return x;
}

Result<StoredExtent> VhdxDevice::do_map_stored(uint64_t offset, uint64_t max_len) {
    VDISK_ASSIGN(StoredExtent x, piece(offset, max_len));
    // Join following pieces of the same state (data: contiguous in the file) in a bounded walk. A piece that
    // does not map ends the run; its error comes when it is asked about itself.
    for (unsigned steps = 0; x.length < max_len && steps < kMaxCoalesce; ++steps) {
        auto n = piece(x.offset + x.length, max_len - x.length);
        if (!n || n->kind != x.kind || (x.kind == StoredKind::data && n->host_offset != x.host_offset + x.length))
            break;
        x.length += n->length;
    }
    return x;
}

Status VhdxDevice::begin_write() {
    forget_bitmaps();
    // Copy-up needs the parent: without it a partly written block would lose the parent's sectors.
    if (g_.has_parent && !backing())
        return make_error(ErrorCode::invalid_argument, "differencing VHDX opened without its parent cannot be written");
    return rotate_headers();
}

Status VhdxDevice::rotate_headers() {
    if (headers_rotated_) return ok();
    // Metadata changes go through the log; a log region that cannot take them must be refused before the
    // first byte is written, not at the first flush.
    const std::pair<uint64_t, uint64_t> regions[2] = {{g_.bat_offset, g_.bat_length},
                                                      {g_.metadata_offset, g_.metadata_length}};
    VDISK_TRY(log_.validate(file_size_, regions));
    // 2.2.2: FileWriteGuid changes before the first modification after open, DataWriteGuid before the first
    // change a user can see, so children whose parent_linkage named the old GUID notice.
    hdr_.h.file_write_guid = random_guid();
    hdr_.h.data_write_guid = random_guid();
    VDISK_TRY(write_headers(*file_, hdr_.h, hdr_.slot));
    headers_rotated_ = true;
    return ok();
}

Status VhdxDevice::allocate_block(uint64_t block, uint8_t old_state) {
    uint64_t host = alloc_end_;
    auto end = util::add<uint64_t>(host, g_.block_size);
    if (!end || *end >= (uint64_t(1) << 63))
        return make_error(ErrorCode::corrupt, "file offset overflow allocating a block");
    if (*end > file_size_) {
        VDISK_TRY(file_->resize(*end));
        file_size_ = *end;
    }
    alloc_end_ = *end;
    // A fully present block must hold the parent's data for the sectors not written now.
    if (g_.has_parent && old_state == kPayloadNotPresent && backing()) return materialize_block(block, host, true);
    uint64_t idx = payload_index(g_, block);
    bat_[idx] = host | kPayloadFullyPresent;
    mark_bat(idx);
    return ok();
}

// The block's content as it reads now (`from_parent`: the parent's), written at `host`, which it then names.
Status VhdxDevice::materialize_block(uint64_t block, uint64_t host, bool from_parent) {
    forget_bitmaps();  // an earlier part of this write may have changed them
    std::vector<uint8_t> blk(g_.block_size);
    uint64_t voff = block * g_.block_size;
    const std::span<uint8_t> part(blk.data(), std::min<uint64_t>(g_.block_size, size() - voff));
    VDISK_TRY(from_parent ? read_from_backing(voff, part) : do_read(voff, part));
    VDISK_TRY(file_->write_at(host, part));
    uint64_t idx = payload_index(g_, block);
    bat_[idx] = host | kPayloadFullyPresent;
    mark_bat(idx);
    return ok();
}

Status VhdxDevice::do_write(uint64_t offset, std::span<const uint8_t> buf) {
    VDISK_TRY(begin_write());
    return util::for_each_unit(offset, buf.size(), g_.block_size, [&](const util::UnitPiece& p) -> Status {
        VDISK_ASSIGN(uint64_t e, payload(p.index));
        uint8_t st = e & kBatStateMask;
        if (st == kPayloadPartiallyPresent) {
            VDISK_TRY(materialize_block(p.index, host_of(e)));
        } else if (st != kPayloadFullyPresent) {
            VDISK_TRY(allocate_block(p.index, st));
        }
        uint64_t host = host_of(bat_[payload_index(g_, p.index)]);
        VDISK_TRY(file_->write_at(host + p.in_unit, buf.subspan(p.done, p.length)));
        // Only after the payload is written: the commit syncs it before the entry that references it.
        return commit_if_full();
    });
}

Status VhdxDevice::do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) {
    VDISK_TRY(begin_write());
    return util::for_each_unit(offset, len, g_.block_size, [&](const util::UnitPiece& p) -> Status {
        bool whole = p.in_unit == 0 && (p.length == g_.block_size || offset + p.done + p.length == size());
        VDISK_ASSIGN(uint64_t e, payload(p.index));
        uint8_t st = e & kBatStateMask;
        uint64_t idx = payload_index(g_, p.index);
        bool reads_zero = st == kPayloadZero || st == kPayloadUnmapped || st == kPayloadUndefined ||
                          (st == kPayloadNotPresent && !backing());
        if (reads_zero) return ok();
        if (whole && st == kPayloadFullyPresent && may_unmap && !g_.leave_allocated)
            return file_->punch_hole(host_of(e), p.length);
        if (whole && st == kPayloadNotPresent) {
            bat_[idx] = kPayloadZero;
            mark_bat(idx);
            return commit_if_full();
        }
        return BlockDevice::do_write_zeroes(offset + p.done, p.length, may_unmap);
    });
}

Status VhdxDevice::stage_bytes(uint64_t offset, std::span<const uint8_t> bytes) {
    return util::for_each_unit(offset, bytes.size(), kPage, [&](const util::UnitPiece& p) -> Status {
        auto it = dirty_meta_.find(p.index * kPage);
        if (it == dirty_meta_.end()) {
            std::vector<uint8_t> content(kPage);
            VDISK_TRY(read_zero_fill(*file_, p.index * kPage, content));
            it = dirty_meta_.emplace(p.index * kPage, std::move(content)).first;
        }
        std::memcpy(it->second.data() + p.in_unit, bytes.data() + p.done, p.length);
        return ok();
    });
}

Status VhdxDevice::commit_metadata() {
    if (dirty_bat_.empty() && dirty_meta_.empty()) return ok();
    // Pages in file order; all-zero pages become zero descriptors, merged when adjacent.
    std::vector<LogWrite> writes;
    auto add = [&](uint64_t offset, std::vector<uint8_t> page) {
        if (util::is_zero(page)) {
            if (!writes.empty() && writes.back().data.empty() &&
                writes.back().offset + writes.back().length == offset) {
                writes.back().length += kPage;
                return;
            }
            writes.push_back(LogWrite{offset, kPage, {}});
        } else {
            writes.push_back(LogWrite{offset, kPage, std::move(page)});
        }
    };
    auto meta = dirty_meta_.begin();
    for (uint64_t p : dirty_bat_) {
        uint64_t at = g_.bat_offset + p * kPage;
        for (; meta != dirty_meta_.end() && meta->first < at; ++meta) add(meta->first, std::move(meta->second));
        std::vector<uint8_t> page(kPage, 0);
        uint64_t first = p * kEntriesPerPage;
        uint64_t count = std::min<uint64_t>(kEntriesPerPage, bat_.size() - first);
        // The BAT region is 1 MiB granular; whatever follows the last entry in its page stays as it is.
        if (count < kEntriesPerPage) VDISK_TRY(read_zero_fill(*file_, at, page));
        for (uint64_t i = 0; i < count; ++i) util::store_le<uint64_t>(page.data() + i * 8, bat_[first + i]);
        add(at, std::move(page));
    }
    for (; meta != dirty_meta_.end(); ++meta) add(meta->first, std::move(meta->second));
    dirty_bat_.clear();
    dirty_meta_.clear();
    return log_.commit(writes);
}

Status VhdxDevice::do_flush() {
    VDISK_TRY(commit_metadata());
    // Everything is applied: an empty log (LogGuid zero) lets readers that refuse to replay read-only,
    // like qemu-img, open the image.
    if (log_.active()) return log_.retire();
    return file_->sync();
}

// Growing needs no data movement while the BAT region (1 MiB granular) has room for the new entries:
// payload and bitmap entries of existing blocks keep their indices.
Status VhdxDevice::do_resize(uint64_t new_size) {
    if (new_size == size()) return ok();
    if (new_size < size()) return make_error(ErrorCode::unsupported, "shrinking a VHDX image is not supported");
    if (g_.has_parent) return make_error(ErrorCode::unsupported, "resizing a differencing VHDX image is not supported");
    if (new_size > kMaxVirtualSize || new_size % g_.logical_sector)
        return make_error(ErrorCode::invalid_argument,
                          "new VHDX size " + std::to_string(new_size) +
                              " must be a multiple of the logical sector size up to 64 TiB");
    uint64_t blocks = util::div_round_up(new_size, g_.block_size);
    uint64_t entries = blocks + (blocks - 1) / g_.chunk_ratio;
    if (entries * 8 > g_.bat_length)
        return make_error(ErrorCode::unsupported, "growing to " + std::to_string(new_size) +
                                                      " bytes needs a BAT larger than its " + hex(g_.bat_length) +
                                                      "-byte region");
    // Entries gained are charged like the BAT read at open.
    VDISK_ASSIGN(Charge grown,
                 Charge::make(budget(), (entries - std::min<uint64_t>(entries, bat_.size())) * 8, "VHDX BAT"));
    VDISK_TRY(begin_write());
    VDISK_TRY(commit_metadata());
    // The old last block may extend past the old end with stale bytes; the grown disk must read zeros there.
    uint64_t tail = size() % g_.block_size;
    if (tail) {
        uint64_t last = size() / g_.block_size;
        VDISK_ASSIGN(uint64_t e, payload(last));
        if ((e & kBatStateMask) == kPayloadFullyPresent) {
            std::vector<uint8_t> zeros(static_cast<size_t>(g_.block_size - tail), 0);
            VDISK_TRY(file_->write_at(host_of(e) + tail, zeros));
        }
    }
    // New entries (all NOT_PRESENT) reach the disk in an entry of their own, before the one with the size
    // that makes them reachable: whatever the region held past the old entries is not trusted.
    uint64_t old_entries = bat_.size();
    bat_.resize(static_cast<size_t>(entries), 0);
    grown.keep();
    for (uint64_t p = old_entries / kEntriesPerPage; p * kEntriesPerPage < entries; ++p) dirty_bat_.insert(p);
    VDISK_TRY(commit_metadata());
    uint8_t sz[8];
    util::store_le<uint64_t>(sz, new_size);
    VDISK_TRY(stage_bytes(g_.size_item_offset, sz));
    VDISK_TRY(commit_metadata());
    g_.virtual_size = new_size;
    g_.data_blocks = blocks;
    g_.bitmap_blocks = util::div_round_up(blocks, g_.chunk_ratio);
    g_.bat_entries = entries;
    set_size(new_size);
    return ok();
}

ImageInfo VhdxDevice::do_info() const {
    ImageInfo i;
    i.format = "vhdx";
    i.virtual_size = size();
    i.cluster_size = g_.block_size;
    // A log not yet replayed into the file (read-only open) is what VHDX has for a dirty image.
    i.dirty = overlay_;
    i.uuid = util::guid_to_string(g_.page83.b);  // the disk's identity (Get-VHD's DiskIdentifier)
    if (g_.has_parent) {
        if (auto r = backing_reference(); r && !r->names.empty()) i.backing_filename = r->names[0];
        i.backing_format = "vhdx";
    }
    // qemu-img prints nothing format-specific for VHDX; these are the fields Hyper-V's Get-VHD and the spec
    // name, under qemu-img's spelling conventions.
    Json data = Json::object();
    data.set("block-size", uint64_t{g_.block_size});
    data.set("logical-sector-size", uint64_t{g_.logical_sector});
    data.set("physical-sector-size", uint64_t{g_.physical_sector});
    data.set("disk-type", g_.has_parent ? "differencing" : g_.leave_allocated ? "fixed" : "dynamic");
    data.set("has-parent", g_.has_parent);
    if (g_.has_parent) {
        Json loc = Json::object();
        if (!g_.parent_linkage.empty()) loc.set("parent_linkage", g_.parent_linkage);
        if (!g_.parent_linkage2.empty()) loc.set("parent_linkage2", g_.parent_linkage2);
        if (!g_.relative_path.empty()) loc.set("relative_path", g_.relative_path);
        if (!g_.volume_path.empty()) loc.set("volume_path", g_.volume_path);
        if (!g_.absolute_win32_path.empty()) loc.set("absolute_win32_path", g_.absolute_win32_path);
        data.set("parent-locator", std::move(loc));
    }
    const Header& h = hdr_.h;
    const bool log_active = !guid_is_zero(h.log_guid);
    data.set("log-size", uint64_t{h.log_length.value()});
    data.set("log-offset", h.log_offset.value());
    data.set("log-state", overlay_ ? "replayed in memory" : log_active ? "active" : "empty");
    data.set("header-sequence", h.sequence_number.value());
    data.set("file-write-guid", util::guid_to_string(h.file_write_guid.b));
    data.set("data-write-guid", util::guid_to_string(h.data_write_guid.b));
    if (log_active) data.set("log-guid", util::guid_to_string(h.log_guid.b));
    data.set("page83-data", util::guid_to_string(g_.page83.b));
    uint64_t present = 0;
    for (uint64_t b = 0; b < g_.data_blocks; ++b) {
        uint64_t idx = payload_index(g_, b);
        if (idx < bat_.size()) {
            uint8_t st = bat_[idx] & kBatStateMask;
            if (st == kPayloadFullyPresent || st == kPayloadPartiallyPresent) ++present;
        }
    }
    data.set("bat-entries", g_.bat_entries);
    data.set("allocated-blocks", present);
    Json fs = Json::object();
    fs.set("type", "vhdx");
    fs.set("data", std::move(data));
    i.format_specific = std::move(fs);
    return i;
}

// Rebase of a differencing image: a new parent locator item (the new parent's DataWriteGuid and names) is
// written after the items in use and the metadata table points at it, through the log like every metadata
// change. Adding a parent to, or removing it from, an image is not done: the BAT layout depends on it.
Status VhdxDevice::set_backing_reference(const std::string& name, const std::string& format, BlockDevice* nb) {
    if (read_only()) return make_error(ErrorCode::read_only, "device is read-only");
    if (!g_.has_parent)
        return make_error(ErrorCode::unsupported, "giving a parent to a VHDX that has none is not supported");
    if (name.empty())
        return make_error(ErrorCode::unsupported, "removing the parent of a differencing VHDX is not supported");
    if (!format.empty() && format != "vhdx")
        return make_error(ErrorCode::invalid_argument,
                          "a VHDX's parent must be a VHDX, not " + format + " (cross-format chains are refused)");
    const Header* ph = nb ? device_header(*nb) : nullptr;
    if (!ph)
        return make_error(ErrorCode::invalid_argument,
                          "a VHDX's parent must be a VHDX image (linked by its DataWriteGuid)");
    if (g_.metadata_length > 64 * MiB)
        return make_error(ErrorCode::limit_exceeded, "metadata region too large to rewrite");
    VDISK_TRY(commit_metadata());
    std::vector<uint8_t> region(static_cast<size_t>(g_.metadata_length));
    VDISK_TRY(read_exact(*file_, g_.metadata_offset, region, "VHDX metadata region"));
    const util::ParentNames names = util::parent_names(file_->name(), name);
    const auto kv = locator_values(ph->data_write_guid, names);
    VDISK_ASSIGN(auto fresh, replace_parent_locator(region, kv));
    VDISK_TRY(rotate_headers());
    for (size_t p = 0; p < fresh.size(); p += kPage)
        if (std::memcmp(fresh.data() + p, region.data() + p, std::min<size_t>(kPage, fresh.size() - p)) != 0)
            dirty_meta_[g_.metadata_offset + p] = std::vector<uint8_t>(
                fresh.begin() + static_cast<std::ptrdiff_t>(p),
                fresh.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(p + kPage, fresh.size())));
    VDISK_TRY(commit_metadata());
    if (log_.active()) VDISK_TRY(log_.retire());
    g_.parent_linkage = kv[0].second;
    g_.parent_linkage2.clear();
    g_.volume_path.clear();
    g_.relative_path.clear();
    g_.absolute_win32_path.clear();
    for (auto& [k, v] : kv) {
        std::string value = v;
        std::replace(value.begin(), value.end(), '\\', '/');
        if (k == "relative_path") g_.relative_path = value;
        if (k == "absolute_win32_path") g_.absolute_win32_path = value;
    }
    return ok();
}

Status VhdxDevice::check_backing_identity(BlockDevice& backing) {
    const Header* parent = device_header(backing);
    if (!parent) return make_error(ErrorCode::corrupt, "parent of a differencing VHDX must be a VHDX image");
    const std::string want = guid_text(parent->data_write_guid);
    auto names_parent = [&](const std::string& s) {  // GUID text: letters in either case
        return s.size() == want.size() && strncasecmp(s.data(), want.data(), s.size()) == 0;
    };
    if (names_parent(g_.parent_linkage) || names_parent(g_.parent_linkage2)) return ok();
    return make_error(ErrorCode::corrupt,
                      "parent_linkage " + g_.parent_linkage + " does not match the parent's DataWriteGuid " + want);
}

// What do_check gathers: the result, and every allocated range to find overlaps (the metadata structures
// first). Names are made only for the messages that are kept: the list is one small record per BAT entry.
struct VhdxDevice::Checker {
    struct Range {
        uint64_t start, end, idx;
        const char* kind;  // static text; idx == UINT64_MAX for the fixed structures
    };
    VhdxDevice& d;
    bool repair;
    CheckResult r;
    std::vector<Range> used;
    uint64_t allocated = 0;

    static std::string name_of(const Range& x) {
        if (x.idx == UINT64_MAX) return std::string(x.kind);
        return std::string(x.kind) + " (BAT entry " + std::to_string(x.idx) + ") at " + hex(x.start);
    }
    // Past the message cap problems are counted, not formatted.
    template <class Make>
    void report(Make&& make) {
        ++r.corruptions;
        if (r.messages.size() < max_check_messages) r.messages.push_back(make());
        else ++r.messages_dropped;
    }
    // Reset an entry that cannot be used: the block reads as zeros (it could not be read before).
    void fix(uint64_t idx, uint64_t value) {
        if (!repair) return;
        d.bat_[idx] = value;
        d.mark_bat(idx);
        ++r.corruptions_fixed;
    }
    bool add_block(uint64_t idx, uint64_t host, uint64_t len, const char* kind) {
        if (host < kHeaderSectionSize || !util::range_within(host, len, d.file_size_)) {
            report([&] {
                return name_of({host, host + len, idx, kind}) + " lies outside the file (size " + hex(d.file_size_) +
                       ")";
            });
            fix(idx, 0);
            return false;
        }
        used.push_back({host, host + len, idx, kind});
        return true;
    }
    void entry(uint64_t idx) {
        uint64_t e = d.bat_[idx];
        if (e & 0xffff8) {
            report([&] { return "BAT entry " + std::to_string(idx) + " has reserved bits set: " + hex(e); });
            e &= ~uint64_t(0xffff8);
            fix(idx, e);
        }
        const uint8_t st = e & kBatStateMask;
        if ((idx + 1) % (d.g_.chunk_ratio + 1) == 0) {  // a sector bitmap entry
            if (st == kSbPresent) {
                add_block(idx, host_of(e), kSectorBitmapBlockSize, "sector bitmap");
            } else if (st != kSbNotPresent) {
                report([&] {
                    return "sector bitmap entry " + std::to_string(idx) + " has invalid state " + std::to_string(st);
                });
                fix(idx, 0);
            }
            return;
        }
        switch (st) {
            case kPayloadFullyPresent:
            case kPayloadPartiallyPresent:
                if (st == kPayloadPartiallyPresent && !d.g_.has_parent) {
                    // Only the bitmap could say which sectors are valid, and without a parent there is none.
                    report(
                        [&] { return "BAT entry " + std::to_string(idx) + " is PARTIALLY_PRESENT without a parent"; });
                    e = host_of(e) | kPayloadFullyPresent;
                    fix(idx, e);
                }
                if (add_block(idx, host_of(e), d.g_.block_size, "payload block")) ++allocated;
                break;
            case kPayloadNotPresent:
            case kPayloadUndefined:
            case kPayloadZero:
            case kPayloadUnmapped: break;
            default:
                report([&] {
                    return "BAT entry " + std::to_string(idx) + " has invalid payload state " + std::to_string(st);
                });
                fix(idx, 0);
        }
    }
    void report_overlaps() {
        std::stable_sort(used.begin(), used.end(), [](const Range& a, const Range& b) { return a.start < b.start; });
        size_t reach = 0;
        for (size_t i = 1; i < used.size(); ++i) {
            if (used[i].start < used[reach].end)
                report([&] { return name_of(used[i]) + " overlaps " + name_of(used[reach]); });
            if (used[i].end > used[reach].end) reach = i;
        }
    }
};

// With a repair mode on a writable device, BAT entries that cannot be valid (past the end of the file,
// invalid states, reserved bits) are reset so the rest of the image stays usable.
Result<CheckResult> VhdxDevice::do_check(RepairMode mode) {
    Checker c{*this, mode == RepairMode::all && !read_only(), {}, {}};
    if (overlay_)
        c.report([] { return std::string("log has not been replayed (open the image read-write to replay it)"); });
    VDISK_ASSIGN(Charge used_charge,
                 Charge::make(budget(), (bat_.size() + 4) * sizeof(Checker::Range), "check: block list"));
    VDISK_TRY(budget()->work(bat_.size(), "check: BAT"));
    c.used.push_back({0, kHeaderSectionSize, UINT64_MAX, "header section"});
    c.used.push_back(
        {hdr_.h.log_offset.value(), hdr_.h.log_offset.value() + hdr_.h.log_length.value(), UINT64_MAX, "log"});
    c.used.push_back({g_.bat_offset, g_.bat_offset + g_.bat_length, UINT64_MAX, "BAT"});
    c.used.push_back({g_.metadata_offset, g_.metadata_offset + g_.metadata_length, UINT64_MAX, "metadata region"});
    for (uint64_t idx = 0; idx < bat_.size(); ++idx) c.entry(idx);
    if (c.repair && pending_pages()) {
        VDISK_TRY(begin_write());
        VDISK_TRY(do_flush());
    }
    c.report_overlaps();
    c.r.image_end_offset = alloc_end_;
    c.r.total_clusters = g_.data_blocks;
    c.r.allocated_clusters = c.allocated;
    return std::move(c.r);
}

}  // namespace

std::unique_ptr<BlockDevice> make_device(DeviceState state) {
    auto sz = state.file->size();
    uint64_t size = sz ? *sz : 0;
    return std::make_unique<VhdxDevice>(std::move(state), size);
}

}  // namespace vdisk::vhdx

namespace vdisk::vhdx {
const Header* device_header(const BlockDevice& dev) {
    auto* d = dynamic_cast<const VhdxDevice*>(&dev);
    return d ? &d->header() : nullptr;
}
const Geometry* device_geometry(const BlockDevice& dev) {
    auto* d = dynamic_cast<const VhdxDevice*>(&dev);
    return d ? &d->geometry() : nullptr;
}
}  // namespace vdisk::vhdx
