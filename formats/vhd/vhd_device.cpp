// SPDX-License-Identifier: Apache-2.0
// VHD device: fixed disks map 1:1 onto the file; dynamic and differencing disks go through the BAT and
// per-block sector bitmaps.
#include <algorithm>
#include <cstring>
#include <cstddef>
#include <mutex>

#include "util/checked.hpp"
#include "util/bytes.hpp"
#include "util/endian.hpp"
#include "vhd_internal.hpp"

namespace vdisk::vhd {

uint32_t checksum(std::span<const uint8_t> bytes, size_t skip) {
    uint32_t sum = 0;
    for (size_t i = 0; i < bytes.size(); ++i)
        if (i < skip || i >= skip + 4) sum += bytes[i];
    return ~sum;
}

void seal_footer(Footer& f) {
    f.checksum = 0;
    f.checksum = checksum(bytes_of(f), offsetof(Footer, checksum));
}

void seal_header(DynamicHeader& h) { h.checksum = checksum(bytes_of(h), offsetof(DynamicHeader, checksum)); }

Status fill(File& f, uint64_t off, uint64_t len, uint8_t byte) {
    const std::vector<uint8_t> chunk(static_cast<size_t>(std::min<uint64_t>(len, 1 << 20)), byte);
    for (uint64_t done = 0; done < len;) {
        const auto n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), len - done));
        VDISK_TRY(f.write_at(off + done, std::span<const uint8_t>(chunk.data(), n)));
        done += n;
    }
    return ok();
}

namespace {

// Bit i of a sector bitmap covers sector i of the block, most significant bit of each byte first.
bool bit(const std::vector<uint8_t>& bm, uint64_t i) { return (bm[i / 8] >> (7 - i % 8)) & 1; }
void set_bit(std::vector<uint8_t>& bm, uint64_t i) { bm[i / 8] |= static_cast<uint8_t>(0x80 >> (i % 8)); }

class VhdDevice final : public BlockDevice {
public:
    VhdDevice(std::unique_ptr<File> file, Meta meta, std::vector<uint32_t> bat, uint64_t file_size, bool read_only)
        : BlockDevice(meta.size, read_only),
          file_(std::move(file)),
          meta_(std::move(meta)),
          bat_(std::move(bat)),
          file_size_(file_size) {
        if (meta_.dynamic()) {
            uint64_t bat_end = meta_.bat_offset + uint64_t{meta_.max_table_entries} * 4;
            free_ = util::align_up(bat_end, kSector).value_or(bat_end);
            for (uint32_t e : bat_)
                if (e != kBatUnused)
                    free_ = std::max(free_, uint64_t{e} * kSector + meta_.bitmap_size + meta_.block_size);
            // Anything between the last block and the footer at the end is reused, never read as data.
            if (file_size_ >= kSector) free_ = std::max(free_, file_size_ - kSector);
        }
    }

    std::vector<File*> files() const override { return {file_.get()}; }
    const Meta& meta() const { return meta_; }

    std::optional<BackingReference> backing_reference() const override {
        if (!meta_.differencing()) return std::nullopt;
        BackingReference r;
        r.names = meta_.parent_names;
        return r;
    }

protected:
    Status do_write(uint64_t offset, std::span<const uint8_t> buf) override;
    Status do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) override;
    Status do_flush() override { return file_->sync(); }
    Status do_close() override;
    Status do_resize(uint64_t new_size) override;
    Result<StoredExtent> do_map_stored(uint64_t offset, uint64_t max_len) override;
    ImageInfo do_info() const override;
    Status check_backing(BlockDevice& backing) override;
    Status check_backing_identity(BlockDevice& backing) override;
    Result<CheckResult> do_check(RepairMode repair) override;

public:
    Status set_backing_reference(const std::string& name, const std::string& format, BlockDevice* nb) override;

private:
    // The sector bitmap of an allocated block (one block cached: sequential access touches one at a time).
    Result<const std::vector<uint8_t>*> bitmap(uint64_t block);
    Status allocate(uint64_t block);
    uint64_t block_host(uint64_t block) const { return uint64_t{bat_[block]} * kSector; }
    Status write_footer(uint64_t at, Footer f) {
        seal_footer(f);
        return file_->write_at(at, bytes_of(f));
    }
    Status resize_fixed(const Footer& f, uint64_t vsize);
    Status resize_dynamic(const Footer& f, uint64_t vsize);
    Status move_blocks_before(uint64_t bat_end);

    std::unique_ptr<File> file_;
    Meta meta_;
    std::vector<uint32_t> bat_;
    uint64_t file_size_;
    uint64_t free_ = 0;  ///< where the next block goes
    bool dirty_ = false;
    std::mutex bitmap_mu_;
    uint64_t cached_block_ = UINT64_MAX;
    std::vector<uint8_t> cached_bitmap_;
};

Result<const std::vector<uint8_t>*> VhdDevice::bitmap(uint64_t block) {
    if (cached_block_ != block) {
        cached_block_ = UINT64_MAX;
        cached_bitmap_.resize(meta_.bitmap_size);
        VDISK_TRY(read_exact(*file_, block_host(block), cached_bitmap_, "sector bitmap"));
        cached_block_ = block;
    }
    return &cached_bitmap_;
}

// Fixed disks are stored as they are; a dynamic or differencing block says sector by sector, in its bitmap,
// whether this layer holds the data (absent sectors read as zeros, or from the parent when differencing).
Result<StoredExtent> VhdDevice::do_map_stored(uint64_t offset, uint64_t max_len) {
    StoredExtent s{offset, max_len, StoredKind::data, file_.get(), offset};
    if (!meta_.dynamic()) return s;
    const uint64_t bs = meta_.block_size;
    const uint64_t block = offset / bs, in = offset % bs;
    s.length = std::min(max_len, bs - in);
    const StoredKind absent = meta_.differencing() ? StoredKind::unallocated : StoredKind::zero;
    if (block >= bat_.size() || bat_[block] == kBatUnused) return StoredExtent{offset, s.length, absent};
    // Readers may run concurrently (see BlockDevice): the one-block bitmap cache is used under bitmap_mu_.
    std::lock_guard lock(bitmap_mu_);
    VDISK_ASSIGN(auto* bm, bitmap(block));
    // Requests are sector-aligned except possibly at the device's end; runs are counted in whole sectors.
    const uint64_t s0 = in / kSector, end_sector = util::div_round_up(in + s.length, kSector);
    const bool set = bit(*bm, s0);
    uint64_t t = s0 + 1;
    while (t < end_sector && bit(*bm, t) == set) ++t;
    s.length = std::min(s.length, t * kSector - in);
    if (set) s.host_offset = block_host(block) + meta_.bitmap_size + in;
    else s = {offset, s.length, absent};
    return s;
}

Status VhdDevice::allocate(uint64_t block) {
    const uint64_t host = util::align_up(free_, kSector).value_or(free_);
    const uint64_t end = host + meta_.bitmap_size + meta_.block_size;
    if (host / kSector > 0xfffffffeull)
        return make_error(ErrorCode::limit_exceeded, "block offset " + hex(host) + " does not fit a BAT entry");
    // A dynamic disk's new block is entirely valid (zeros where not written); a differencing disk's
    // sectors become valid only as they are written so the rest still reads from the parent.
    std::vector<uint8_t> bm(meta_.bitmap_size, meta_.differencing() ? 0x00 : 0xff);
    VDISK_TRY(file_->write_at(host, bm));
    // Old bytes there (the previous footer) must not show through as block data.
    if (file_size_ > host + meta_.bitmap_size)
        VDISK_TRY(fill(*file_, host + meta_.bitmap_size, std::min(end, file_size_) - (host + meta_.bitmap_size), 0));
    VDISK_TRY(file_->resize(std::max(file_size_, end)));
    file_size_ = std::max(file_size_, end);
    uint8_t entry[4];
    util::store_be<uint32_t>(entry, static_cast<uint32_t>(host / kSector));
    VDISK_TRY(file_->write_at(meta_.bat_offset + block * 4, entry));
    bat_[block] = static_cast<uint32_t>(host / kSector);
    free_ = end;
    // The footer moves behind the new block so the file always ends with one.
    VDISK_TRY(write_footer(end, meta_.footer));
    file_size_ = end + kSector;
    cached_block_ = block;
    cached_bitmap_ = std::move(bm);
    dirty_ = true;
    return ok();
}

Status VhdDevice::do_write(uint64_t offset, std::span<const uint8_t> buf) {
    if (!meta_.dynamic()) return file_->write_at(offset, buf);
    // Without its parent, the read-modify-write of a partial sector would copy zeros instead of the
    // parent's bytes into this layer.
    if (meta_.differencing() && !backing())
        return make_error(ErrorCode::unsupported, "cannot write to a differencing VHD opened without its parent");
    const uint64_t bs = meta_.block_size;
    while (!buf.empty()) {
        const uint64_t block = offset / bs, in = offset % bs;
        auto n = static_cast<size_t>(std::min<uint64_t>(buf.size(), bs - in));
        if (bat_[block] == kBatUnused) VDISK_TRY(allocate(block));
        VDISK_TRY(file_->write_at(block_host(block) + meta_.bitmap_size + in, buf.subspan(0, n)));
        VDISK_ASSIGN(auto* cbm, bitmap(block));
        std::vector<uint8_t> bm = *cbm;
        bool changed = false;
        for (uint64_t s = in / kSector; s < util::div_round_up(in + n, kSector); ++s)
            if (!bit(bm, s)) {
                set_bit(bm, s);
                changed = true;
            }
        if (changed) {
            VDISK_TRY(file_->write_at(block_host(block), bm));
            cached_bitmap_ = std::move(bm);
        }
        offset += n;
        buf = buf.subspan(n);
    }
    return ok();
}

Status VhdDevice::do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) {
    if (!meta_.dynamic() || meta_.differencing()) return BlockDevice::do_write_zeroes(offset, len, may_unmap);
    // An unallocated block of a dynamic disk already reads as zeros: only allocated ones are written.
    const uint64_t bs = meta_.block_size;
    while (len > 0) {
        const uint64_t block = offset / bs;
        uint64_t n = std::min(len, bs - offset % bs);
        if (bat_[block] != kBatUnused) VDISK_TRY(BlockDevice::do_write_zeroes(offset, n, may_unmap));
        offset += n;
        len -= n;
    }
    return ok();
}

// Fixed: the footer moves to the new end. Dynamic: the BAT grows in place, blocks in the way of its new
// entries are first copied to the end of the file; shrinking forgets the blocks past the new end (their
// space stays in the file, unreferenced). Each step leaves a readable image: a block is referenced from its
// new place before the BAT grows over its old one, and the headers change last.
Status VhdDevice::do_resize(uint64_t new_size) {
    cached_block_ = UINT64_MAX;
    Footer f = meta_.footer;
    VDISK_ASSIGN(uint64_t vsize, resize_footer(f, new_size));
    VDISK_TRY(meta_.dynamic() ? resize_dynamic(f, vsize) : resize_fixed(f, vsize));
    set_size(vsize);
    return file_->sync();
}

Status VhdDevice::resize_fixed(const Footer& f, uint64_t vsize) {
    const uint64_t old = size();
    VDISK_TRY(write_footer(vsize, f));
    if (vsize > old) VDISK_TRY(fill(*file_, old, kSector, 0));  // the old footer is data now
    VDISK_TRY(file_->resize(vsize + kSector));
    file_size_ = vsize + kSector;
    meta_.footer = f;
    meta_.size = vsize;
    return ok();
}

// Copy the blocks that a BAT grown to `bat_end` would overwrite to the end of the file, each referenced from
// its new place before the BAT grows over its old one.
Status VhdDevice::move_blocks_before(uint64_t bat_end) {
    const uint64_t span = uint64_t{meta_.bitmap_size} + meta_.block_size;
    std::vector<uint8_t> buf;
    for (uint64_t b = 0; b < bat_.size(); ++b) {
        if (bat_[b] == kBatUnused) continue;
        uint64_t host = block_host(b);
        if (host >= bat_end || host + span <= meta_.bat_offset) continue;
        const uint64_t to = *util::align_up(free_, kSector);
        if (to / kSector > 0xfffffffeull)
            return make_error(ErrorCode::limit_exceeded, "block offset " + hex(to) + " does not fit a BAT entry");
        buf.resize(static_cast<size_t>(span));
        VDISK_TRY(read_exact(*file_, host, buf, "data block"));
        VDISK_TRY(file_->write_at(to, buf));
        uint8_t entry[4];
        util::store_be<uint32_t>(entry, static_cast<uint32_t>(to / kSector));
        VDISK_TRY(file_->write_at(meta_.bat_offset + b * 4, entry));
        bat_[b] = static_cast<uint32_t>(to / kSector);
        free_ = to + span;
    }
    return file_->sync();
}

Status VhdDevice::resize_dynamic(const Footer& f, uint64_t vsize) {
    const uint64_t entries = util::div_round_up(vsize, meta_.block_size);
    if (entries > 0xfffffffeull) return make_error(ErrorCode::invalid_argument, "too many blocks for a VHD BAT");
    const uint64_t bat_end = meta_.bat_offset + *util::align_up(entries * 4, kSector);
    if (meta_.header_offset >= meta_.bat_offset && meta_.header_offset < bat_end)
        return make_error(ErrorCode::unsupported, "the dynamic header follows the BAT; it cannot grow in place");
    free_ = std::max(free_, bat_end);
    // Entries gained are charged like the BAT read at open, its on-disk copy while it is written.
    const uint64_t old_entries = bat_.size(), gained = entries > old_entries ? (entries - old_entries) * 4 : 0;
    VDISK_ASSIGN(Charge grown, Charge::make(budget(), gained + (bat_end - meta_.bat_offset), "BAT"));
    if (entries > old_entries) VDISK_TRY(move_blocks_before(bat_end));
    file_size_ = std::max(file_size_, free_ + kSector);  // the footer follows everything, the grown BAT too
    bat_.resize(static_cast<size_t>(entries), kBatUnused);
    {
        std::vector<uint8_t> raw(static_cast<size_t>(bat_end - meta_.bat_offset), 0xff);
        for (size_t i = 0; i < bat_.size(); ++i) util::store_be<uint32_t>(&raw[i * 4], bat_[i]);
        VDISK_TRY(file_->write_at(meta_.bat_offset, raw));
    }
    VDISK_TRY(grown.resize(gained, "BAT"));
    grown.keep();
    if (entries < old_entries) budget()->release((old_entries - entries) * 4);
    DynamicHeader dh;
    VDISK_TRY(read_exact(*file_, meta_.header_offset, {reinterpret_cast<uint8_t*>(&dh), sizeof dh}, "dynamic header"));
    dh.max_table_entries = static_cast<uint32_t>(entries);
    seal_header(dh);
    VDISK_TRY(file_->write_at(meta_.header_offset, bytes_of(dh)));
    meta_.max_table_entries = static_cast<uint32_t>(entries);
    meta_.footer = f;
    meta_.size = vsize;
    VDISK_TRY(write_footer(0, f));
    VDISK_TRY(write_footer(file_size_ - kSector, f));
    dirty_ = true;
    return ok();
}

Status VhdDevice::do_close() {
    if (read_only() || !dirty_) return ok();
    VDISK_TRY(write_footer(file_size_ - kSector, meta_.footer));
    dirty_ = false;
    return file_->sync();
}

// Rebase: the dynamic header names the new parent (set_parent; the locator payloads go where the footer was,
// the footer moves behind them) and the footer copies say differencing; no parent makes it a dynamic disk,
// whose sectors not marked in a bitmap read as zeros (the block bytes there are zeros: allocate() clears them).
Status VhdDevice::set_backing_reference(const std::string& name, const std::string& format, BlockDevice* nb) {
    if (read_only()) return make_error(ErrorCode::read_only, "device is read-only");
    if (!meta_.dynamic())
        return make_error(ErrorCode::invalid_argument,
                          "a fixed VHD holds every sector itself and cannot have a parent");
    if (name.empty() && !meta_.differencing()) return ok();
    DynamicHeader dh;
    VDISK_TRY(read_exact(*file_, meta_.header_offset, {reinterpret_cast<uint8_t*>(&dh), sizeof dh}, "dynamic header"));
    Meta m = meta_;
    uint64_t end = util::align_up(free_, kSector).value_or(free_);
    ParentFields pf;
    if (name.empty()) {
        std::memset(dh.parent_unique_id, 0, sizeof dh.parent_unique_id);
        dh.parent_timestamp = 0;
        std::memset(dh.parent_unicode_name, 0, sizeof dh.parent_unicode_name);
        std::memset(dh.locators, 0, sizeof dh.locators);
        m.type = kTypeDynamic;
        std::memset(m.parent_uuid, 0, 16);
        m.parent_names.clear();
    } else {
        if (!format.empty() && format != "vhd" && format != "vpc")
            return make_error(ErrorCode::invalid_argument,
                              "a VHD's parent must be a VHD, not " + format + " (cross-format chains are refused)");
        const Meta* pm = nb ? device_meta(*nb) : nullptr;
        if (!pm)
            return make_error(ErrorCode::invalid_argument,
                              "a VHD's parent must be a VHD image (it is linked by the parent's unique id)");
        pf = set_parent(dh, pm->footer, util::parent_names(file_->name(), name), end);
        m.type = kTypeDifferencing;
        std::memcpy(m.parent_uuid, pm->footer.unique_id, 16);
        m.parent_names = pf.names;
        end = pf.end;
    }
    seal_header(dh);
    m.footer.disk_type = m.type;
    // Payloads and the footer behind them first, then the header that points at them, then the copy at 0.
    for (auto& [off, data] : pf.payloads) VDISK_TRY(file_->write_at(off, data));
    VDISK_TRY(write_footer(end, m.footer));
    if (end + kSector < file_size_) VDISK_TRY(file_->resize(end + kSector));
    VDISK_TRY(file_->sync());
    VDISK_TRY(file_->write_at(meta_.header_offset, bytes_of(dh)));
    VDISK_TRY(write_footer(0, m.footer));
    VDISK_TRY(file_->sync());
    meta_ = std::move(m);
    free_ = end;
    file_size_ = end + kSector;
    return ok();
}

ImageInfo VhdDevice::do_info() const {
    ImageInfo i;
    // qemu-img calls the format "vpc" and prints no format-specific data for it.
    i.format = "vpc";
    i.virtual_size = size();
    if (meta_.dynamic()) i.cluster_size = meta_.block_size;
    if (meta_.differencing() && !meta_.parent_names.empty()) i.backing_filename = meta_.parent_names.front();
    // qemu-img prints nothing format-specific for vpc; these are the footer and dynamic header fields that
    // tell who wrote an image and how (the creator decides qemu's size rule), spelled as qemu-img spells keys.
    const Footer& f = meta_.footer;
    auto text4 = [](const char* c) {
        std::string t(c, 4);
        for (char& ch : t)
            if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) > 0x7e) ch = '?';
        return t;
    };
    Json data = Json::object();
    data.set("disk-type", meta_.type == kTypeFixed ? "fixed" : meta_.type == kTypeDynamic ? "dynamic" : "differencing");
    data.set("creator-app", text4(f.creator_app));
    uint32_t cv = f.creator_version.value();
    data.set("creator-version", std::to_string(cv >> 16) + "." + std::to_string(cv & 0xffff));
    uint32_t os = f.creator_os.value();
    char osc[4] = {char(os >> 24), char(os >> 16), char(os >> 8), char(os)};
    data.set("creator-os", text4(osc));
    data.set("cylinders", uint64_t{f.cylinders.value()});
    data.set("heads", uint64_t{f.heads});
    data.set("sectors-per-track", uint64_t{f.sectors_per_track});
    data.set("current-size", f.current_size.value());
    data.set("original-size", f.original_size.value());
    data.set("timestamp", uint64_t{f.timestamp.value()} + 946684800ull);  // Unix time
    data.set("uuid", util::uuid_to_string(f.unique_id));
    i.uuid = util::uuid_to_string(f.unique_id);
    data.set("saved-state", f.saved_state != 0);
    if (meta_.dynamic()) {
        data.set("block-size", uint64_t{meta_.block_size});
        data.set("bat-entries", uint64_t{meta_.max_table_entries});
        uint64_t used = 0;
        for (uint32_t e : bat_) used += e != kBatUnused;
        data.set("allocated-blocks", used);
    }
    if (meta_.differencing()) {
        data.set("parent-uuid", util::uuid_to_string(meta_.parent_uuid));
        Json names = Json::array();
        for (auto& n : meta_.parent_names) names.push(n);
        data.set("parent-locators", std::move(names));
    }
    Json fs = Json::object();
    fs.set("type", "vpc");
    fs.set("data", std::move(data));
    i.format_specific = std::move(fs);
    return i;
}

Status VhdDevice::check_backing(BlockDevice&) {
    if (!meta_.differencing()) return make_error(ErrorCode::invalid_argument, "only a differencing VHD has a parent");
    return ok();
}

Status VhdDevice::check_backing_identity(BlockDevice& backing) {
    const Meta* pm = device_meta(backing);
    if (!pm) return make_error(ErrorCode::corrupt, "the parent of a differencing VHD must be a VHD image");
    if (std::memcmp(pm->footer.unique_id, meta_.parent_uuid, 16) != 0)
        return make_error(ErrorCode::corrupt, "parent unique id " + util::uuid_to_string(pm->footer.unique_id) +
                                                  " does not match the dynamic header's parent unique id " +
                                                  util::uuid_to_string(meta_.parent_uuid));
    return ok();
}

Result<CheckResult> VhdDevice::do_check(RepairMode repair) {
    if (repair != RepairMode::none) return make_error(ErrorCode::unsupported, "VHD check cannot repair");
    CheckResult r;
    const Meta& m = meta_;
    r.image_end_offset = file_size_;
    if (!m.dynamic()) return r;
    const uint64_t span = uint64_t{m.bitmap_size} + m.block_size;
    const uint64_t bat_end = m.bat_offset + uint64_t{m.max_table_entries} * 4;
    // Past the message cap problems are counted, not formatted.
    auto problem = [&](auto&& make) {
        ++r.corruptions;
        if (r.messages.size() < max_check_messages) r.messages.push_back(make());
        else ++r.messages_dropped;
    };
    // (host start, BAT index) of every block inside the file, sorted afterwards to find overlaps: one pair
    // per BAT entry, so sized by the BAT like the BAT itself.
    std::vector<std::pair<uint64_t, uint64_t>> used;
    uint64_t allocated = 0;
    VDISK_TRY(budget()->work(bat_.size(), "check: BAT"));
    for (uint32_t e : bat_) allocated += e != kBatUnused;
    VDISK_ASSIGN(Charge used_charge, Charge::make(budget(), allocated * 16, "check: block list"));
    used.reserve(static_cast<size_t>(allocated));
    for (uint64_t i = 0; i < bat_.size(); ++i) {
        if (bat_[i] == kBatUnused) continue;
        uint64_t host = uint64_t{bat_[i]} * kSector;
        if (host + span > file_size_) {
            problem([&] {
                return "BAT entry " + std::to_string(i) + " points to " + hex(host) + ", past the end of the file (" +
                       hex(file_size_) + ")";
            });
            continue;
        }
        if (host < m.header_offset + sizeof(DynamicHeader) && host + span > m.header_offset)
            problem([&] {
                return "BAT entry " + std::to_string(i) + " block at " + hex(host) + " overlaps the dynamic header";
            });
        if (host < bat_end && host + span > m.bat_offset)
            problem([&] { return "BAT entry " + std::to_string(i) + " block at " + hex(host) + " overlaps the BAT"; });
        if (host < kSector)
            problem([&] {
                return "BAT entry " + std::to_string(i) + " block at " + hex(host) + " overlaps the footer copy";
            });
        used.emplace_back(host, i);
    }
    std::sort(used.begin(), used.end());
    // Each block against the one before it in file order (blocks all have the same span).
    for (size_t k = 1; k < used.size(); ++k) {
        const uint64_t prev_host = used[k - 1].first, prev_i = used[k - 1].second;
        const uint64_t host = used[k].first, i = used[k].second;
        if (host < prev_host + span)
            problem([&] {
                return "BAT entries " + std::to_string(prev_i) + " and " + std::to_string(i) +
                       (prev_host == host ? " point to the same block at " : " overlap at ") + hex(host);
            });
    }
    r.total_clusters = util::div_round_up(m.size, m.block_size);
    r.allocated_clusters = allocated;
    return r;
}

}  // namespace

std::unique_ptr<BlockDevice> make_device(std::unique_ptr<File> file, Meta meta, std::vector<uint32_t> bat,
                                         uint64_t file_size, bool read_only) {
    return std::make_unique<VhdDevice>(std::move(file), std::move(meta), std::move(bat), file_size, read_only);
}

const Meta* device_meta(const BlockDevice& device) {
    auto* d = dynamic_cast<const VhdDevice*>(&device);
    return d ? &d->meta() : nullptr;
}

}  // namespace vdisk::vhd
