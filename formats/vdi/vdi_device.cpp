// SPDX-License-Identifier: Apache-2.0
// VDI device: block map lookups for reads and block status, block allocation for writes, zero marking.
#include <algorithm>
#include <cstring>
#include <vector>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vdi_internal.hpp"

namespace vdisk::vdi {

const char* type_name(uint32_t type) {
    switch (type) {
        case kTypeNormal: return "normal";
        case kTypeFixed: return "fixed";
        case kTypeUndo: return "undo";
        case kTypeDiff: return "diff";
        default: return "unknown";
    }
}

namespace {

bool is_allocated(uint32_t entry) { return entry < kBlockZero; }
bool is_null_uuid(const uint8_t* u) {
    return std::all_of(u, u + 16, [](uint8_t b) { return b == 0; });
}

// Offsets of the fields rewritten in place (version 1.x header only).
constexpr uint64_t kBlocksAllocatedOffset = kHeaderOffset + offsetof(Header1, blocks_allocated);
constexpr uint64_t kUuidModifyOffset = kHeaderOffset + offsetof(Header1, uuid_modify);
constexpr uint64_t kDiskSizeOffset = kHeaderOffset + offsetof(Header1, disk_size);
constexpr uint64_t kBlocksInImageOffset = kHeaderOffset + offsetof(Header1, blocks_in_image);
constexpr uint64_t kOffsetDataOffset = kHeaderOffset + offsetof(Header1, offset_data);

class VdiDevice final : public BlockDevice {
public:
    VdiDevice(std::unique_ptr<File> file, Meta meta, std::vector<uint32_t> bmap, uint64_t file_size, bool read_only,
              ParentLink parent)
        : BlockDevice(meta.disk_size, read_only),
          file_(std::move(file)),
          meta_(std::move(meta)),
          bmap_(std::move(bmap)),
          file_size_(file_size),
          parent_(std::move(parent)) {
        index_slots();
    }

    std::vector<File*> files() const override { return {file_.get()}; }
    uint64_t write_granularity() const override { return kSectorSize; }

    std::optional<BackingReference> backing_reference() const override {
        // VDI records only the parent's UUID; a name exists only when open found the parent beside the
        // image. Otherwise the caller names it (OpenOptions::backing_override) or attaches it itself.
        if (parent_.found.empty()) return std::nullopt;
        return BackingReference{{parent_.found}, "vdi"};
    }

    const Meta& meta() const { return meta_; }

protected:
    Status do_write(uint64_t offset, std::span<const uint8_t> buf) override;
    Status do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) override;
    Status do_discard(uint64_t offset, uint64_t len) override;
    Status do_flush() override { return file_->sync(); }
    Status do_resize(uint64_t new_size) override;
    Result<StoredExtent> do_map_stored(uint64_t offset, uint64_t max_len) override;
    Status missing_backing_error() const override;
    ImageInfo do_info() const override;
    Status check_backing(BlockDevice& backing) override;
    Status check_backing_identity(BlockDevice& backing) override;
    Result<CheckResult> do_check(RepairMode repair) override;

public:
    Status set_backing_reference(const std::string& name, const std::string& format, BlockDevice* nb) override;

private:
    uint64_t slot_offset(uint32_t slot) const {
        // Validated at open: offset_data + blocks_in_image * slot_size fits in 64 bits, and slots
        // handed out by allocation stay below blocks_in_image.
        return meta_.offset_data + uint64_t{slot} * meta_.slot_size() + meta_.block_extra;
    }
    bool reads_as_zero_unallocated(uint32_t entry) const { return entry == kBlockZero || !meta_.is_diff(); }
    uint64_t block_end(uint64_t block) const {
        return std::min<uint64_t>(size(), (block + 1) * uint64_t{meta_.block_size});
    }
    Status write_le32(uint64_t at, uint32_t value);
    Status rewrite_blocks_allocated(uint32_t count);
    Status set_entry(uint64_t block, uint32_t entry);
    Status allocate_block(uint64_t block, uint64_t within, std::span<const uint8_t> data);
    Status unallocate_block(uint64_t block);
    Status mark_modified();
    Status shrink_map(uint32_t blocks);
    Status write_map_and_sizes();
    Status make_map_room(uint64_t count);
    Status move_block(uint64_t block, uint32_t to, std::vector<uint8_t>& buf);
    void index_slots();

    std::unique_ptr<File> file_;
    Meta meta_;
    std::vector<uint32_t> bmap_;
    uint64_t file_size_;
    ParentLink parent_;
    bool modified_ = false;
    uint32_t next_slot_ = 0;            // first slot never used
    std::vector<uint32_t> free_slots_;  // slots below next_slot_ no block uses (reused first)
    uint32_t allocated_ = 0;            // entries that point at a slot
};

void VdiDevice::index_slots() {
    // Only meaningful for well-formed maps (read-write opens refuse duplicates and out-of-range slots).
    std::vector<bool> used(meta_.blocks_in_image, false);
    uint32_t max_used = 0;
    bool any = false;
    for (uint32_t e : bmap_) {
        if (!is_allocated(e)) continue;
        ++allocated_;
        if (e < used.size()) used[e] = true;
        if (!any || e > max_used) max_used = e;
        any = true;
    }
    next_slot_ = any ? max_used + 1 : 0;
    // A hostile read-only map may name slots up to 0xfffffffd; only slots inside the image can be free.
    if (read_only()) return;
    for (uint32_t s = std::min<uint32_t>(next_slot_, meta_.blocks_in_image); s-- > 0;)
        if (!used[s]) free_slots_.push_back(s);
}

// One block map entry per block: a slot (data), ZERO, or FREE. FREE is "not in this layer" for every type
// (qemu-img too reports a normal image's FREE blocks as unallocated; they read as zeros without a parent);
// ZERO reads as zeros without consulting a parent.
Result<StoredExtent> VdiDevice::do_map_stored(uint64_t offset, uint64_t max_len) {
    const uint64_t bs = meta_.block_size;
    const uint64_t block = offset / bs;
    const uint32_t first = bmap_[block];
    StoredExtent s{offset, 0, first == kBlockZero ? StoredKind::zero : StoredKind::unallocated};
    if (is_allocated(first)) {
        s = {offset, 0, StoredKind::data, file_.get(), slot_offset(first) + offset % bs};
        if (s.host_offset >= file_size_)
            return make_error(ErrorCode::corrupt, "block map entry " + std::to_string(block) + " (slot " +
                                                      std::to_string(first) + ") points at " + hex(s.host_offset) +
                                                      ", past the end of the file (" + hex(file_size_) + ")")
                .at(meta_.offset_bmap + block * 4);
    } else if (first == kBlockFree && !backing() && !parent_.layer_only) {
        // Refused like a read unless this layer alone was asked for (see ParentLink::layer_only).
        VDISK_TRY(missing_backing_error());
    }
    // Following blocks in the same state; slots only when physically contiguous (no extra data between
    // them) and inside the file (a slot past its end is reported when mapped itself).
    uint64_t end = std::min<uint64_t>(offset + max_len, block_end(block));
    for (uint32_t prev = first; end < offset + max_len;) {
        const uint32_t entry = bmap_[end / bs];
        const bool follows = is_allocated(first) ? is_allocated(entry) && entry == prev + 1 && meta_.block_extra == 0 &&
                                                       slot_offset(entry) < file_size_
                                                 : entry == first;
        if (!follows) break;
        prev = entry;
        end = std::min<uint64_t>(offset + max_len, block_end(end / bs));
    }
    s.length = end - offset;
    return s;
}

Status VdiDevice::missing_backing_error() const {
    if (!meta_.is_diff()) return ok();
    std::string why = parent_.note.empty() ? "" : " (" + parent_.note + ")";
    return make_error(ErrorCode::not_found, "differencing VDI: a block is in its parent, uuid " +
                                                util::guid_to_string(meta_.uuid_linkage) + ", which is not attached" +
                                                why +
                                                "; name the parent with --parent FILE (OpenOptions::backing_override)");
}

// Growing needs block map room: when the map would run into the data area, the blocks in the first slots
// move to new slots at the end and the data area starts that many slots later (make_map_room). Map and header
// are rewritten in place; a crash between the two writes leaves them disagreeing, as with VirtualBox's own
// resize. Shrinking frees the blocks past the end (shrink_map). A fixed (static) image gets its new blocks
// allocated.
Status VdiDevice::do_resize(uint64_t new_size) {
    if (meta_.version != kVersion1_1 && (meta_.version >> 16) != 1)
        return make_error(ErrorCode::unsupported, "resizing VDI version 0 images is not supported");
    const uint64_t bs = meta_.block_size, slot = meta_.slot_size();
    const uint64_t blocks64 = util::div_round_up(new_size, bs);
    if (blocks64 >= kBlockZero)
        return make_error(ErrorCode::invalid_argument, "VDI size " + std::to_string(new_size) + " is too large");
    const auto blocks = static_cast<uint32_t>(blocks64);
    // Slots the data area moves by when the map runs into it.
    const uint64_t map_end = meta_.offset_bmap + blocks64 * 4;
    const uint64_t room_slots = map_end > meta_.offset_data ? util::div_round_up(map_end - meta_.offset_data, slot) : 0;
    // Entries gained are charged like the block map read at open, its on-disk copy (the map region up to
    // the data area, which moves by whole slots when the map runs into it) while it is written.
    const uint64_t old_entries = bmap_.size(), gained = blocks64 > old_entries ? (blocks64 - old_entries) * 4 : 0;
    const uint64_t copy = meta_.offset_data - meta_.offset_bmap + room_slots * slot;
    VDISK_ASSIGN(Charge grown, Charge::make(budget(), gained + copy, "VDI block map"));
    VDISK_TRY(mark_modified());
    if (blocks < bmap_.size()) VDISK_TRY(shrink_map(blocks));
    if (room_slots) VDISK_TRY(make_map_room(room_slots));
    const uint32_t old_blocks = static_cast<uint32_t>(bmap_.size());
    bmap_.resize(blocks, kBlockFree);
    meta_.blocks_in_image = blocks;
    meta_.disk_size = new_size;
    if (meta_.type == kTypeFixed) {
        for (uint32_t b = old_blocks; b < blocks; ++b) {
            bmap_[b] = next_slot_++;
            ++allocated_;
        }
        file_size_ = std::max(file_size_, meta_.offset_data + uint64_t{next_slot_} * slot);
        VDISK_TRY(file_->resize(file_size_));
    }
    VDISK_TRY(write_map_and_sizes());
    VDISK_TRY(grown.resize(gained, "VDI block map"));
    grown.keep();
    if (blocks64 < old_entries) budget()->release((old_entries - blocks64) * 4);
    // Recount and rebuild the free-slot list for the renumbered slots.
    allocated_ = 0;
    free_slots_.clear();
    index_slots();
    VDISK_TRY(rewrite_blocks_allocated(allocated_));
    set_size(new_size);
    return file_->sync();
}

// The map region up to the data area (zeros past the last entry), then the header fields that size the image.
Status VdiDevice::write_map_and_sizes() {
    std::vector<uint8_t> raw(static_cast<size_t>(meta_.offset_data - meta_.offset_bmap), 0);
    for (size_t i = 0; i < bmap_.size(); ++i) util::store_le<uint32_t>(&raw[i * 4], bmap_[i]);
    VDISK_TRY(file_->write_at(meta_.offset_bmap, raw));
    uint8_t b8[8];
    util::store_le<uint64_t>(b8, meta_.disk_size);
    VDISK_TRY(file_->write_at(kDiskSizeOffset, std::span<const uint8_t>(b8, 8)));
    VDISK_TRY(write_le32(kBlocksInImageOffset, meta_.blocks_in_image));
    return write_le32(kOffsetDataOffset, static_cast<uint32_t>(meta_.offset_data));
}

// Slots must stay below the new block count (readers check it): blocks in higher slots move down into free
// ones, then the file ends after the last slot in use.
Status VdiDevice::shrink_map(uint32_t blocks) {
    for (uint64_t b = blocks; b < bmap_.size(); ++b)
        if (is_allocated(bmap_[b])) VDISK_TRY(unallocate_block(b));
    bmap_.resize(blocks);
    std::vector<bool> used(blocks, false);
    for (uint32_t e : bmap_)
        if (is_allocated(e) && e < blocks) used[e] = true;
    uint32_t low = 0;
    std::vector<uint8_t> buf(static_cast<size_t>(meta_.slot_size()));
    for (uint64_t b = 0; b < bmap_.size(); ++b) {
        uint32_t e = bmap_[b];
        if (!is_allocated(e) || e < blocks) continue;
        while (low < blocks && used[low]) ++low;
        if (low >= blocks) return make_error(ErrorCode::corrupt, "more allocated blocks than slots");
        VDISK_TRY(move_block(b, low, buf));
        used[low] = true;
    }
    uint32_t top = 0;
    for (uint32_t e : bmap_)
        if (is_allocated(e)) top = std::max(top, e + 1);
    next_slot_ = top;
    file_size_ = meta_.offset_data + uint64_t{top} * meta_.slot_size();
    return file_->resize(file_size_);
}

// The blocks in the first `count` slots move to the end; slot numbers are relative to the data area, which
// then starts `count` slots later, so every entry shifts down.
Status VdiDevice::make_map_room(uint64_t count) {
    const uint64_t slot = meta_.slot_size();
    if (meta_.offset_data + count * slot > 0xffffffffull)
        return make_error(ErrorCode::limit_exceeded, "the VDI data area cannot start past 4 GiB");
    const auto k = static_cast<uint32_t>(count);
    std::vector<uint8_t> buf(static_cast<size_t>(slot));
    for (uint64_t b = 0; b < bmap_.size(); ++b) {
        uint32_t e = bmap_[b];
        if (!is_allocated(e) || e >= k) continue;
        uint32_t to = std::max<uint32_t>(next_slot_, k);  // never into the slots being vacated
        VDISK_TRY(move_block(b, to, buf));
        next_slot_ = to + 1;
    }
    VDISK_TRY(file_->sync());
    // Slots 0..k-1 are unused now: the data area starts after them.
    meta_.offset_data += count * slot;
    for (auto& e : bmap_)
        if (is_allocated(e)) e -= k;
    next_slot_ = next_slot_ > k ? next_slot_ - k : 0;
    return ok();
}

// Copies the slot of `block` (extra data included) to slot `to` and points the block there.
Status VdiDevice::move_block(uint64_t block, uint32_t to, std::vector<uint8_t>& buf) {
    const uint64_t to_host = slot_offset(to) - meta_.block_extra;
    VDISK_TRY(read_zero_fill(*file_, slot_offset(bmap_[block]) - meta_.block_extra, buf));
    VDISK_TRY(file_->write_at(to_host, buf));
    file_size_ = std::max<uint64_t>(file_size_, to_host + buf.size());
    return set_entry(block, to);
}

// Rebase: the parent is the new backing's creation UUID and its modification UUID now (as create links a
// child); no name is stored, the parent is found beside the image by UUID. No parent makes the image a normal
// (dynamic) one, whose free blocks read as zeros; a normal image given a parent becomes a differencing one.
Status VdiDevice::set_backing_reference(const std::string& name, const std::string& format, BlockDevice* nb) {
    if (read_only()) return make_error(ErrorCode::read_only, "device is read-only");
    if ((meta_.version >> 16) != 1)
        return make_error(ErrorCode::unsupported, "relinking a VDI needs a version 1.x header");
    uint32_t type = meta_.type;
    uint8_t link[32] = {};
    if (name.empty()) {
        if (!meta_.is_diff()) return ok();
        type = kTypeNormal;
    } else {
        if (!format.empty() && format != "vdi")
            return make_error(ErrorCode::invalid_argument,
                              "a VDI's parent must be a VDI, not " + format + " (cross-format chains are refused)");
        if (meta_.type == kTypeFixed)
            return make_error(ErrorCode::invalid_argument, "a static VDI holds every block and cannot have a parent");
        const Meta* pm = nb ? device_meta(*nb) : nullptr;
        if (!pm)
            return make_error(ErrorCode::invalid_argument,
                              "a VDI's parent must be a VDI image (it is linked by the parent's UUIDs)");
        std::memcpy(link, pm->uuid_create, 16);
        std::memcpy(link + 16, pm->uuid_modify, 16);
        type = kTypeDiff;
    }
    VDISK_TRY(file_->write_at(kHeaderOffset + offsetof(Header1, uuid_linkage), std::span<const uint8_t>(link, 32)));
    VDISK_TRY(write_le32(kHeaderOffset + offsetof(Header1, type), type));
    VDISK_TRY(file_->sync());
    meta_.type = type;
    std::memcpy(meta_.uuid_linkage, link, 16);
    std::memcpy(meta_.uuid_parent_modify, link + 16, 16);
    parent_.found = name;
    parent_.note.clear();
    return ok();
}

Status VdiDevice::mark_modified() {
    if (modified_) return ok();
    // VirtualBox gives an image a new modification UUID when it is first written after opening, so a
    // child made from an older state (uuid_parent_modify) no longer matches.
    if (meta_.version == kVersion1_1 || (meta_.version >> 16) == 1) {
        uint8_t u[16];
        util::generate_uuid(u);
        VDISK_TRY(file_->write_at(kUuidModifyOffset, std::span<const uint8_t>(u, 16)));
        std::memcpy(meta_.uuid_modify, u, 16);
    }
    modified_ = true;
    return ok();
}

Status VdiDevice::write_le32(uint64_t at, uint32_t value) {
    uint8_t b[4];
    util::store_le<uint32_t>(b, value);
    return file_->write_at(at, b);
}

Status VdiDevice::rewrite_blocks_allocated(uint32_t count) {
    VDISK_TRY(write_le32(kBlocksAllocatedOffset, count));
    meta_.blocks_allocated = count;
    return ok();
}

Status VdiDevice::set_entry(uint64_t block, uint32_t entry) {
    VDISK_TRY(write_le32(meta_.offset_bmap + block * 4, entry));
    bmap_[block] = entry;
    return ok();
}

Status VdiDevice::allocate_block(uint64_t block, uint64_t within, std::span<const uint8_t> data) {
    const uint64_t bs = meta_.block_size;
    uint32_t slot;
    bool reuse = !free_slots_.empty();
    if (reuse) {
        slot = free_slots_.back();
    } else {
        if (next_slot_ >= meta_.blocks_in_image)
            return make_error(ErrorCode::corrupt, "no free block slot left for block " + std::to_string(block));
        slot = next_slot_;
    }
    uint32_t old = bmap_[block];
    uint64_t base = slot_offset(slot) - meta_.block_extra;
    // The whole slot is written: extra data (zeros), then the block with the new data merged into what
    // the block read as before.
    std::vector<uint8_t> buf(static_cast<size_t>(meta_.slot_size()), 0);
    auto blockbuf = std::span<uint8_t>(buf).subspan(meta_.block_extra);
    uint64_t bstart = block * bs;
    uint64_t valid = block_end(block) - bstart;
    if (within != 0 || data.size() < valid) {
        if (!reads_as_zero_unallocated(old)) {
            if (!backing()) VDISK_TRY(missing_backing_error());
            VDISK_TRY(read_from_backing(bstart, blockbuf.first(static_cast<size_t>(valid))));
        }
    }
    std::copy(data.begin(), data.end(), blockbuf.begin() + static_cast<std::ptrdiff_t>(within));
    VDISK_TRY(file_->write_at(base, buf));
    file_size_ = std::max<uint64_t>(file_size_, base + buf.size());
    if (reuse) free_slots_.pop_back();
    else ++next_slot_;
    // Data before map, map before header count: a crash leaves at worst an unreferenced slot.
    VDISK_TRY(set_entry(block, slot));
    ++allocated_;
    return rewrite_blocks_allocated(allocated_);
}

Status VdiDevice::unallocate_block(uint64_t block) {
    uint32_t old = bmap_[block];
    VDISK_TRY(set_entry(block, kBlockZero));
    if (!is_allocated(old)) return ok();
    --allocated_;
    VDISK_TRY(rewrite_blocks_allocated(allocated_));
    uint64_t base = slot_offset(old) - meta_.block_extra;
    if (old + 1 == next_slot_ && base + meta_.slot_size() >= file_size_) {
        // The last slot: give the space back by shrinking the file.
        VDISK_TRY(file_->resize(base));
        file_size_ = base;
        --next_slot_;
        // Trailing free slots can go too.
        while (!free_slots_.empty() && next_slot_ > 0) {
            auto it = std::find(free_slots_.begin(), free_slots_.end(), next_slot_ - 1);
            if (it == free_slots_.end()) break;
            free_slots_.erase(it);
            --next_slot_;
            base = slot_offset(next_slot_) - meta_.block_extra;
            VDISK_TRY(file_->resize(base));
            file_size_ = base;
        }
        return ok();
    }
    VDISK_TRY(file_->punch_hole(base, meta_.slot_size()));
    free_slots_.push_back(old);
    return ok();
}

Status VdiDevice::do_write(uint64_t offset, std::span<const uint8_t> buf) {
    VDISK_TRY(mark_modified());
    const uint64_t bs = meta_.block_size;
    while (!buf.empty()) {
        uint64_t block = offset / bs;
        uint64_t within = offset % bs;
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), bs - within));
        uint32_t entry = bmap_[block];
        if (is_allocated(entry)) {
            VDISK_TRY(file_->write_at(slot_offset(entry) + within, buf.first(n)));
            file_size_ = std::max<uint64_t>(file_size_, slot_offset(entry) + within + n);
        } else if (util::is_zero(buf.first(n)) && reads_as_zero_unallocated(entry)) {
            // Writing zeros where the block already reads as zeros allocates nothing.
        } else {
            VDISK_TRY(allocate_block(block, within, buf.first(n)));
        }
        offset += n;
        buf = buf.subspan(n);
    }
    return ok();
}

Status VdiDevice::do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) {
    VDISK_TRY(mark_modified());
    const uint64_t bs = meta_.block_size;
    uint64_t end = offset + len;
    while (offset < end) {
        uint64_t block = offset / bs;
        uint64_t bend = block_end(block);
        uint64_t n = std::min(end, bend) - offset;
        uint32_t entry = bmap_[block];
        bool whole = offset == block * bs && offset + n == bend;
        if (whole && meta_.type != kTypeFixed && (may_unmap || !is_allocated(entry))) {
            // A whole block becomes a ZERO entry; unallocated blocks of a normal image already read
            // as zeros and stay FREE.
            if (is_allocated(entry) || (entry == kBlockFree && meta_.is_diff())) VDISK_TRY(unallocate_block(block));
        } else if (is_allocated(entry) || !reads_as_zero_unallocated(entry)) {
            VDISK_TRY(BlockDevice::do_write_zeroes(offset, n, may_unmap));
        }
        offset += n;
    }
    return ok();
}

Status VdiDevice::do_discard(uint64_t offset, uint64_t len) {
    if (meta_.type == kTypeFixed) return ok();
    const uint64_t bs = meta_.block_size;
    uint64_t end = offset + len;
    uint64_t block = util::div_round_up(offset, bs);
    for (; block * bs < end && block_end(block) <= end; ++block) {
        if (!is_allocated(bmap_[block])) continue;
        VDISK_TRY(mark_modified());
        VDISK_TRY(unallocate_block(block));
        // A differencing image's discarded block reads from the parent again (commit empties a layer so).
        if (meta_.is_diff()) VDISK_TRY(set_entry(block, kBlockFree));
    }
    return ok();
}

ImageInfo VdiDevice::do_info() const {
    ImageInfo i;
    i.format = "vdi";
    i.virtual_size = size();
    i.cluster_size = meta_.block_size;
    if (!parent_.found.empty()) {
        // Not stored in the image: the parent open found by its UUID, so that info shows the chain.
        i.backing_filename = parent_.found;
        i.backing_format = "vdi";
    }
    // qemu-img prints no format-specific section for VDI; vdisk adds one with the identity fields.
    Json data = Json::object();
    data.set("image-type", type_name(meta_.type));
    data.set("version", std::to_string(meta_.version >> 16) + "." + std::to_string(meta_.version & 0xffff));
    data.set("uuid", util::guid_to_string(meta_.uuid_create));
    i.uuid = util::guid_to_string(meta_.uuid_create);
    data.set("uuid-modify", util::guid_to_string(meta_.uuid_modify));
    if (meta_.is_diff()) {
        data.set("uuid-parent", util::guid_to_string(meta_.uuid_linkage));
        data.set("uuid-parent-modify", util::guid_to_string(meta_.uuid_parent_modify));
    }
    data.set("block-size", uint64_t{meta_.block_size});
    if (meta_.block_extra) data.set("block-extra", uint64_t{meta_.block_extra});
    data.set("blocks-allocated", uint64_t{allocated_});
    Json fs = Json::object();
    fs.set("type", "vdi");
    fs.set("data", std::move(data));
    i.format_specific = std::move(fs);
    return i;
}

Status VdiDevice::check_backing(BlockDevice&) {
    if (!meta_.is_diff())
        return make_error(ErrorCode::invalid_argument,
                          std::string("a ") + type_name(meta_.type) + " VDI image has no parent");
    return ok();
}

Status VdiDevice::check_backing_identity(BlockDevice& backing) {
    const Meta* pm = device_meta(backing);
    if (!pm) return make_error(ErrorCode::corrupt, "the parent of a differencing VDI must be a VDI image");
    if (std::memcmp(pm->uuid_create, meta_.uuid_linkage, 16) != 0)
        return make_error(ErrorCode::corrupt, "parent uuid " + util::guid_to_string(pm->uuid_create) +
                                                  " does not match the image's parent uuid " +
                                                  util::guid_to_string(meta_.uuid_linkage));
    if (!is_null_uuid(meta_.uuid_parent_modify) && std::memcmp(pm->uuid_modify, meta_.uuid_parent_modify, 16) != 0)
        return make_error(ErrorCode::corrupt, "parent was modified after this image was made: its modification uuid " +
                                                  util::guid_to_string(pm->uuid_modify) + " is not " +
                                                  util::guid_to_string(meta_.uuid_parent_modify));
    return ok();
}

Result<CheckResult> VdiDevice::do_check(RepairMode repair) {
    const Meta& m = meta_;
    CheckResult r;
    // Past the message cap problems are counted, not formatted.
    auto problem = [&](auto&& make) {
        ++r.corruptions;
        if (r.messages.size() < max_check_messages) r.messages.push_back(make());
        else ++r.messages_dropped;
    };
    // Which block first claimed each slot; UINT32_MAX: none yet. Sized by the map, as the map itself.
    VDISK_ASSIGN(Charge owner_charge, Charge::make(budget(), uint64_t{m.blocks_in_image} * 4, "check: slot owners"));
    std::vector<uint32_t> owner(m.blocks_in_image, UINT32_MAX);
    uint32_t counted = 0;
    VDISK_TRY(budget()->work(bmap_.size(), "check: block map"));
    for (uint32_t block = 0; block < bmap_.size(); ++block) {
        uint32_t e = bmap_[block];
        if (!is_allocated(e)) continue;
        if (e >= m.blocks_in_image) {
            problem([&] {
                return "block map entry " + std::to_string(block) + " points at slot " + std::to_string(e) +
                       ", beyond the " + std::to_string(m.blocks_in_image) + " slots of the image";
            });
            continue;
        }
        ++counted;
        if (owner[e] != UINT32_MAX) {
            problem([&] {
                return "slot " + std::to_string(e) + " is used by block " + std::to_string(owner[e]) + " and block " +
                       std::to_string(block);
            });
            continue;
        }
        owner[e] = block;
        uint64_t start = m.offset_data + uint64_t{e} * m.slot_size() + m.block_extra;
        if (start >= file_size_) {
            problem([&] {
                return "block " + std::to_string(block) + " (slot " + std::to_string(e) + ") at " + hex(start) +
                       " lies past the end of the file (" + hex(file_size_) + ")";
            });
        }
    }
    if (counted != m.blocks_allocated) {
        if (repair == RepairMode::all && !read_only() && r.corruptions == 0) {
            VDISK_TRY(rewrite_blocks_allocated(counted));
            VDISK_TRY(file_->sync());
            ++r.corruptions_fixed;
            if (r.messages.size() < max_check_messages)
                r.messages.push_back("repaired the header's allocated block count to " + std::to_string(counted));
        } else {
            problem([&] {
                return "header says " + std::to_string(m.blocks_allocated) + " blocks are allocated, the map has " +
                       std::to_string(counted);
            });
        }
    }
    return r;
}

}  // namespace

std::unique_ptr<BlockDevice> make_device(std::unique_ptr<File> file, Meta meta, std::vector<uint32_t> bmap,
                                         uint64_t file_size, bool read_only, ParentLink parent) {
    return std::make_unique<VdiDevice>(std::move(file), std::move(meta), std::move(bmap), file_size, read_only,
                                       std::move(parent));
}

const Meta* device_meta(const BlockDevice& device) {
    auto* d = dynamic_cast<const VdiDevice*>(&device);
    return d ? &d->meta() : nullptr;
}

}  // namespace vdisk::vdi
