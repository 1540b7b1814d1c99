// SPDX-License-Identifier: Apache-2.0
// qcow (version 1): probe and read. The format QEMU used before qcow2: a header, an L1 table of L2 table
// offsets, L2 tables of cluster offsets, clusters stored as is or raw-deflated; no refcounts, no zero
// clusters, no snapshots. vdisk reads it (and its backing file) so such images convert instead of being
// mistaken for raw disks; writing is left to qcow2.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <map>
#include <mutex>

#include "qcow_layout.hpp"
#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vdisk/format.hpp"

namespace vdisk::qcow {
namespace {

struct Meta {
    uint64_t size = 0;  ///< virtual size, whole sectors as QEMU uses it
    uint32_t cluster_bits = 0;
    uint32_t l2_bits = 0;
    uint64_t l1_offset = 0;
    std::optional<std::string> backing;
};

class QcowDevice final : public BlockDevice {
public:
    QcowDevice(std::unique_ptr<File> file, Meta meta, std::vector<uint64_t> l1, uint64_t file_size, uint64_t cache_cap)
        : BlockDevice(meta.size, true),
          file_(std::move(file)),
          meta_(std::move(meta)),
          l1_(std::move(l1)),
          file_size_(file_size),
          cache_cap_(cache_cap) {}

    std::vector<File*> files() const override { return {file_.get()}; }
    std::optional<BackingReference> backing_reference() const override {
        if (!meta_.backing) return std::nullopt;
        BackingReference r;
        r.names.push_back(*meta_.backing);
        return r;
    }
    Status inflate_unit(const StoredExtent& unit, std::span<const uint8_t> stored,
                        std::span<uint8_t> out) const override;

protected:
    Result<StoredExtent> do_map_stored(uint64_t offset, uint64_t max_len) override;
    ImageInfo do_info() const override {
        ImageInfo i;
        i.format = "qcow";
        i.virtual_size = size();
        i.cluster_size = cluster_size();
        i.backing_filename = meta_.backing;
        return i;
    }

private:
    uint64_t cluster_size() const { return uint64_t{1} << meta_.cluster_bits; }
    /// The L2 entry covering virtual cluster `vc` (0: unallocated).
    Result<uint64_t> entry(uint64_t vc);
    Result<StoredExtent> compressed_unit(uint64_t entry, uint64_t vc);

    std::unique_ptr<File> file_;
    Meta meta_;
    std::vector<uint64_t> l1_;
    uint64_t file_size_;
    uint64_t cache_cap_;
    std::mutex l2_mu_;  ///< readers map concurrently (see BlockDevice): the L2 cache is used under it
    std::map<uint64_t, std::vector<uint64_t>> l2_cache_;  ///< by host offset, dropped whole at the cap
};

Result<uint64_t> QcowDevice::entry(uint64_t vc) {
    uint64_t l1i = vc >> meta_.l2_bits;
    if (l1i >= l1_.size()) return uint64_t{0};
    uint64_t l2_off = l1_[l1i];
    if (l2_off == 0) return uint64_t{0};
    const uint64_t entries = uint64_t{1} << meta_.l2_bits;
    std::lock_guard lock(l2_mu_);
    auto it = l2_cache_.find(l2_off);
    if (it == l2_cache_.end()) {
        if (!util::range_within(l2_off, entries * 8, file_size_))
            return make_error(ErrorCode::corrupt, "L2 table at " + hex(l2_off) + " (L1 entry " + std::to_string(l1i) +
                                                      ") runs past the end of the file (" + hex(file_size_) + ")")
                .at(meta_.l1_offset + l1i * 8);
        if ((l2_cache_.size() + 1) * entries * 8 > cache_cap_) l2_cache_.clear();
        std::vector<uint8_t> raw(static_cast<size_t>(entries * 8));
        VDISK_TRY(read_exact(*file_, l2_off, raw, "L2 table"));
        std::vector<uint64_t> t(static_cast<size_t>(entries));
        for (size_t i = 0; i < t.size(); ++i) t[i] = util::load_be<uint64_t>(&raw[i * 8]);
        it = l2_cache_.emplace(l2_off, std::move(t)).first;
    }
    uint64_t e = it->second[vc & (entries - 1)];
    if (e && !(e & kCompressed) && e >= file_size_)
        return make_error(ErrorCode::corrupt, "L2 entry for cluster " + std::to_string(vc) + " points at " + hex(e) +
                                                  ", past the end of the file (" + hex(file_size_) + ")")
            .at(l2_off + (vc & (entries - 1)) * 8);
    return e;
}

// A compressed cluster: the low 63 - cluster_bits bits of its entry hold where its stored bytes start, the
// bits above them how many there are (less than a cluster).
Result<StoredExtent> QcowDevice::compressed_unit(uint64_t e, uint64_t vc) {
    const uint64_t cs = cluster_size();
    const uint32_t shift = 63 - meta_.cluster_bits;
    const uint64_t host = e & ((uint64_t{1} << shift) - 1), stored = (e >> shift) & (cs - 1);
    if (stored == 0 || !util::range_within(host, stored, file_size_))
        return make_error(ErrorCode::corrupt, "compressed cluster " + std::to_string(vc) + " at " + hex(host) + " (" +
                                                  std::to_string(stored) + " bytes) lies outside the file (" +
                                                  hex(file_size_) + ")")
            .at(host);
    return StoredExtent{vc * cs, cs, StoredKind::compressed, file_.get(), host, stored};
}

Result<StoredExtent> QcowDevice::do_map_stored(uint64_t offset, uint64_t max_len) {
    const uint64_t cs = cluster_size(), vc = offset >> meta_.cluster_bits, in = offset & (cs - 1);
    VDISK_ASSIGN(uint64_t first, entry(vc));
    if (first & kCompressed) return compressed_unit(first, vc);
    // QEMU reads a short last cluster as zeros too, as the generic read of a data run does.
    StoredExtent s{offset, std::min(max_len, cs - in), StoredKind::unallocated};
    if (first) s = {offset, s.length, StoredKind::data, file_.get(), first + in};
    // Following clusters in the same state (contiguous on the host for data), within a bounded walk. The
    // clusters of an empty L1 entry, or past the end of the L1 table, are unallocated as a whole.
    const uint32_t l2_shift = meta_.cluster_bits + meta_.l2_bits;
    for (unsigned steps = 0; s.length < max_len && steps < 65536; ++steps) {
        const uint64_t next = offset + s.length, l1i = next >> l2_shift;
        if (!first && (l1i >= l1_.size() || l1_[l1i] == 0)) {
            s.length = l1i >= l1_.size() ? max_len : std::min(max_len, ((l1i + 1) << l2_shift) - offset);
            continue;
        }
        VDISK_ASSIGN(uint64_t e, entry(next >> meta_.cluster_bits));
        if (first ? (e & kCompressed) || e != s.host_offset + s.length : e != 0) break;
        s.length = std::min(max_len, s.length + cs);
    }
    return s;
}

Status QcowDevice::inflate_unit(const StoredExtent& unit, std::span<const uint8_t> stored,
                                std::span<uint8_t> out) const {
    if (unit.kind != StoredKind::compressed || out.size() != cluster_size())
        return make_error(ErrorCode::invalid_argument, "qcow: inflate_unit needs one compressed cluster");
    if (!util::inflate_into(stored, out, true))
        return make_error(ErrorCode::corrupt, "compressed cluster " + std::to_string(unit.offset / cluster_size()) +
                                                  " at " + hex(unit.host_offset) + " does not inflate")
            .at(unit.host_offset);
    return ok();
}

class QcowFormat final : public Format {
public:
    std::string_view name() const noexcept override { return "qcow"; }

    int probe(std::span<const uint8_t> head, std::span<const uint8_t>, uint64_t) const noexcept override {
        if (head.size() < sizeof(Header)) return 0;
        if (util::load_be<uint32_t>(head.data()) != kMagic || util::load_be<uint32_t>(head.data() + 4) != kVersion)
            return 0;
        int score = 64;
        uint8_t cbits = head[32], l2bits = head[33];
        if (cbits >= 9 && cbits <= 16 && l2bits >= 6 && l2bits <= 13) score += 8;
        return score;
    }

    Result<std::unique_ptr<BlockDevice>> open(std::unique_ptr<File> file, const OpenContext& ctx) const override {
        if (ctx.options().read_write)
            return make_error(ErrorCode::unsupported,
                              "qcow version 1 images are read-only in vdisk (convert them to qcow2 to write)");
        VDISK_ASSIGN(uint64_t fsize, file->size());
        if (fsize < sizeof(Header)) return make_error(ErrorCode::invalid_format, "file too small for a qcow header");
        Header h;
        VDISK_TRY(read_exact(*file, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&h), sizeof h), "header"));
        if (h.magic.value() != kMagic) return make_error(ErrorCode::invalid_format, "no qcow magic");
        if (h.version.value() != kVersion)
            return make_error(ErrorCode::unsupported,
                              "qcow version " + std::to_string(h.version.value()) + " is not version 1");
        Meta m;
        m.cluster_bits = h.cluster_bits.value();
        m.l2_bits = h.l2_bits.value();
        if (m.cluster_bits < 9 || m.cluster_bits > 16)
            return make_error(ErrorCode::corrupt,
                              "cluster_bits " + std::to_string(m.cluster_bits) + " is outside 9..16")
                .at(offsetof(Header, cluster_bits));
        if (m.l2_bits < 6 || m.l2_bits > 13)
            return make_error(ErrorCode::corrupt, "l2_bits " + std::to_string(m.l2_bits) + " is outside 6..13")
                .at(offsetof(Header, l2_bits));
        uint32_t crypt = h.crypt_method.value();
        if (crypt == kCryptAes)
            return make_error(ErrorCode::unsupported, "encrypted qcow images (AES) are not supported");
        if (crypt != kCryptNone)
            return make_error(ErrorCode::corrupt, "unknown encryption method " + std::to_string(crypt))
                .at(offsetof(Header, crypt_method));
        uint64_t size = h.size.value();
        if (size < 2)
            return make_error(ErrorCode::corrupt, "virtual size " + std::to_string(size) + " is too small")
                .at(offsetof(Header, size));
        m.size = util::align_down(size, 512);
        const uint32_t shift = m.cluster_bits + m.l2_bits;
        if (size > UINT64_MAX - (uint64_t{1} << shift))
            return make_error(ErrorCode::corrupt, "virtual size " + hex(size) + " is too large")
                .at(offsetof(Header, size));
        uint64_t l1_entries = util::div_round_up(size, uint64_t{1} << shift);
        // QEMU reads an L1 table that runs past the end of the file as zeros (unallocated). Only the part
        // inside the file is held, so a 516-byte header claiming 152 TiB costs nothing.
        m.l1_offset = h.l1_table_offset.value();
        uint64_t in_file = m.l1_offset < fsize ? std::min<uint64_t>(l1_entries, (fsize - m.l1_offset) / 8) : 0;
        if (in_file * 8 > ctx.limits().max_metadata_bytes)
            return make_error(ErrorCode::limit_exceeded,
                              "L1 table needs " + std::to_string(in_file * 8) + " bytes, more than the " +
                                  std::to_string(ctx.limits().max_metadata_bytes) + " byte limit")
                .at(offsetof(Header, l1_table_offset));
        if (m.l1_offset < sizeof(Header) && in_file)
            return make_error(ErrorCode::corrupt, "L1 table at " + hex(m.l1_offset) + " overlaps the header")
                .at(offsetof(Header, l1_table_offset));
        std::vector<uint8_t> raw(static_cast<size_t>(in_file * 8));
        VDISK_TRY(read_exact(*file, m.l1_offset, raw, "L1 table"));
        std::vector<uint64_t> l1(static_cast<size_t>(in_file));
        for (size_t i = 0; i < l1.size(); ++i) l1[i] = util::load_be<uint64_t>(&raw[i * 8]);
        if (uint64_t boff = h.backing_file_offset.value()) {
            uint32_t blen = h.backing_file_size.value();
            if (blen > kMaxBackingName)
                return make_error(ErrorCode::corrupt,
                                  "backing file name length " + std::to_string(blen) + " exceeds 1023")
                    .at(offsetof(Header, backing_file_size));
            if (!util::range_within(boff, blen, fsize))
                return make_error(ErrorCode::corrupt, "backing file name at " + hex(boff) + " lies outside the file")
                    .at(offsetof(Header, backing_file_offset));
            std::string name(blen, '\0');
            VDISK_TRY(read_exact(*file, boff, std::span<uint8_t>(reinterpret_cast<uint8_t*>(name.data()), blen),
                                 "backing file name"));
            if (name.find('\0') != std::string::npos) name.resize(name.find('\0'));
            if (!name.empty()) m.backing = std::move(name);
        }
        return std::unique_ptr<BlockDevice>(
            new QcowDevice(std::move(file), std::move(m), std::move(l1), fsize, ctx.limits().max_cache_bytes));
    }
};

}  // namespace
}  // namespace vdisk::qcow

namespace vdisk {
std::unique_ptr<Format> make_qcow_format() { return std::make_unique<qcow::QcowFormat>(); }
}  // namespace vdisk
