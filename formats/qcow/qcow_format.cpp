// SPDX-License-Identifier: Apache-2.0
// qcow (version 1): probe and read. The format QEMU used before qcow2: a header, an L1 table of L2 table
// offsets, L2 tables of cluster offsets, clusters stored as is or raw-deflated; no refcounts, no zero
// clusters, no snapshots. vdisk reads it (and its backing file) so such images convert instead of being
// mistaken for raw disks; writing is left to qcow2.
#include <algorithm>
#include <cstring>
#include <map>

#include "qcow_layout.hpp"
#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vdisk/format.hpp"

namespace vdisk::qcow {
namespace {

Error corrupt(std::string message, uint64_t offset) {
    Error e = make_error(ErrorCode::corrupt, std::move(message));
    e.format = "qcow";
    e.offset = offset;
    return e;
}

struct Meta {
    uint64_t size = 0;  ///< virtual size, whole sectors as QEMU uses it
    uint32_t cluster_bits = 0;
    uint32_t l2_bits = 0;
    uint64_t l1_offset = 0;
    std::optional<std::string> backing;
};

class QcowDevice final : public BlockDevice {
public:
    QcowDevice(std::unique_ptr<File> file, Meta meta, std::vector<uint64_t> l1, uint64_t file_size,
               uint64_t cache_cap)
        : BlockDevice(meta.size, true), file_(std::move(file)), meta_(std::move(meta)), l1_(std::move(l1)),
          file_size_(file_size), cache_cap_(cache_cap) {}

    std::vector<File*> files() const override { return {file_.get()}; }
    std::optional<BackingReference> backing_reference() const override {
        if (!meta_.backing) return std::nullopt;
        BackingReference r;
        r.names.push_back(*meta_.backing);
        return r;
    }

protected:
    Status do_read(uint64_t offset, std::span<uint8_t> buf) override;
    Result<Extent> do_block_status(uint64_t offset, uint64_t max_len) override;
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
    Status read_compressed(uint64_t entry, uint64_t vc, std::span<uint8_t> out, uint64_t in_cluster);

    std::unique_ptr<File> file_;
    Meta meta_;
    std::vector<uint64_t> l1_;
    uint64_t file_size_;
    uint64_t cache_cap_;
    std::map<uint64_t, std::vector<uint64_t>> l2_cache_;  ///< by host offset, dropped whole at the cap
    uint64_t cached_entry_ = 0;                           ///< compressed cluster held in cluster_
    std::vector<uint8_t> cluster_;
};

Result<uint64_t> QcowDevice::entry(uint64_t vc) {
    uint64_t l1i = vc >> meta_.l2_bits;
    if (l1i >= l1_.size()) return uint64_t{0};
    uint64_t l2_off = l1_[l1i];
    if (l2_off == 0) return uint64_t{0};
    const uint64_t entries = uint64_t{1} << meta_.l2_bits;
    auto it = l2_cache_.find(l2_off);
    if (it == l2_cache_.end()) {
        if (!util::range_within(l2_off, entries * 8, file_size_))
            return corrupt("L2 table at " + hex(l2_off) + " (L1 entry " + std::to_string(l1i) +
                               ") runs past the end of the file (" + hex(file_size_) + ")",
                           meta_.l1_offset + l1i * 8);
        if ((l2_cache_.size() + 1) * entries * 8 > cache_cap_) l2_cache_.clear();
        std::vector<uint8_t> raw(static_cast<size_t>(entries * 8));
        VDISK_TRY(read_exact(*file_, l2_off, raw, "L2 table"));
        std::vector<uint64_t> t(static_cast<size_t>(entries));
        for (size_t i = 0; i < t.size(); ++i) t[i] = util::load_be<uint64_t>(&raw[i * 8]);
        it = l2_cache_.emplace(l2_off, std::move(t)).first;
    }
    uint64_t e = it->second[vc & (entries - 1)];
    if (e && !(e & kCompressed) && e >= file_size_)
        return corrupt("L2 entry for cluster " + std::to_string(vc) + " points at " + hex(e) +
                           ", past the end of the file (" + hex(file_size_) + ")",
                       l2_off + (vc & (entries - 1)) * 8);
    return e;
}

Status QcowDevice::read_compressed(uint64_t e, uint64_t vc, std::span<uint8_t> out, uint64_t in_cluster) {
    const uint64_t cs = cluster_size();
    if (cached_entry_ != e || cluster_.size() != cs) {
        cached_entry_ = 0;
        const uint32_t shift = 63 - meta_.cluster_bits;
        uint64_t host = e & ((uint64_t{1} << shift) - 1);
        uint64_t csize = (e >> shift) & (cs - 1);
        if (csize == 0 || !util::range_within(host, csize, file_size_))
            return corrupt("compressed cluster " + std::to_string(vc) + " at " + hex(host) + " (" +
                               std::to_string(csize) + " bytes) lies outside the file (" + hex(file_size_) + ")",
                           host);
        std::vector<uint8_t> in(static_cast<size_t>(csize));
        VDISK_TRY(read_exact(*file_, host, in, "compressed cluster"));
        cluster_.assign(static_cast<size_t>(cs), 0);
        if (!util::inflate_into(in, cluster_, true))
            return corrupt("compressed cluster " + std::to_string(vc) + " at " + hex(host) + " does not inflate", host);
        cached_entry_ = e;
    }
    std::copy_n(cluster_.begin() + static_cast<std::ptrdiff_t>(in_cluster), out.size(), out.begin());
    return ok();
}

Status QcowDevice::do_read(uint64_t offset, std::span<uint8_t> buf) {
    const uint64_t cs = cluster_size();
    while (!buf.empty()) {
        uint64_t vc = offset >> meta_.cluster_bits;
        uint64_t in = offset & (cs - 1);
        auto n = static_cast<size_t>(std::min<uint64_t>(buf.size(), cs - in));
        auto part = buf.first(n);
        VDISK_ASSIGN(uint64_t e, entry(vc));
        if (e == 0) VDISK_TRY(read_from_backing(offset, part));
        else if (e & kCompressed) VDISK_TRY(read_compressed(e, vc, part, in));
        else VDISK_TRY(read_zero_fill(*file_, e + in, part));  // QEMU reads a short last cluster as zeros too
        offset += n;
        buf = buf.subspan(n);
    }
    return ok();
}

Result<Extent> QcowDevice::do_block_status(uint64_t offset, uint64_t max_len) {
    const uint64_t cs = cluster_size();
    uint64_t vc = offset >> meta_.cluster_bits;
    uint64_t in = offset & (cs - 1);
    VDISK_ASSIGN(uint64_t first, entry(vc));
    Extent x;
    x.offset = offset;
    x.length = std::min(max_len, cs - in);
    if (first == 0) {
        x.kind = ExtentKind::unallocated;
    } else {
        x.kind = ExtentKind::data;
        x.compressed = (first & kCompressed) != 0;
        if (!x.compressed) {
            x.file = file_.get();
            x.host_offset = first + in;
        }
    }
    // Extend over following clusters of the same kind (and, for plain data, contiguous on the host).
    while (x.length < max_len) {
        uint64_t next = offset + x.length;
        VDISK_ASSIGN(uint64_t e, entry(next >> meta_.cluster_bits));
        bool same = first == 0 ? e == 0
                               : (x.compressed ? (e & kCompressed) != 0
                                               : e != 0 && !(e & kCompressed) && e == first + (next - offset + in));
        if (!same) break;
        x.length = std::min(max_len, x.length + cs);
    }
    return x;
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
            return make_error(ErrorCode::unsupported, "qcow version " + std::to_string(h.version.value()) +
                                                          " is not version 1");
        Meta m;
        m.cluster_bits = h.cluster_bits.value();
        m.l2_bits = h.l2_bits.value();
        if (m.cluster_bits < 9 || m.cluster_bits > 16)
            return corrupt("cluster_bits " + std::to_string(m.cluster_bits) + " is outside 9..16", 32);
        if (m.l2_bits < 6 || m.l2_bits > 13)
            return corrupt("l2_bits " + std::to_string(m.l2_bits) + " is outside 6..13", 33);
        uint32_t crypt = h.crypt_method.value();
        if (crypt == kCryptAes)
            return make_error(ErrorCode::unsupported, "encrypted qcow images (AES) are not supported");
        if (crypt != kCryptNone) return corrupt("unknown encryption method " + std::to_string(crypt), 36);
        uint64_t size = h.size.value();
        if (size < 2) return corrupt("virtual size " + std::to_string(size) + " is too small", 24);
        m.size = util::align_down(size, 512);
        const uint32_t shift = m.cluster_bits + m.l2_bits;
        if (size > UINT64_MAX - (uint64_t{1} << shift))
            return corrupt("virtual size " + hex(size) + " is too large", 24);
        uint64_t l1_entries = util::div_round_up(size, uint64_t{1} << shift);
        // QEMU reads an L1 table that runs past the end of the file as zeros (unallocated). Only the part
        // inside the file is held, so a 516-byte header claiming 152 TiB costs nothing.
        m.l1_offset = h.l1_table_offset.value();
        uint64_t in_file = m.l1_offset < fsize ? std::min<uint64_t>(l1_entries, (fsize - m.l1_offset) / 8) : 0;
        if (in_file * 8 > ctx.limits().max_metadata_bytes) {
            Error e = make_error(ErrorCode::limit_exceeded, "L1 table needs " + std::to_string(in_file * 8) +
                                                                " bytes, more than the " +
                                                                std::to_string(ctx.limits().max_metadata_bytes) +
                                                                " byte limit");
            e.offset = 40;
            return e;
        }
        if (m.l1_offset < sizeof(Header) && in_file)
            return corrupt("L1 table at " + hex(m.l1_offset) + " overlaps the header", 40);
        std::vector<uint8_t> raw(static_cast<size_t>(in_file * 8));
        VDISK_TRY(read_exact(*file, m.l1_offset, raw, "L1 table"));
        std::vector<uint64_t> l1(static_cast<size_t>(in_file));
        for (size_t i = 0; i < l1.size(); ++i) l1[i] = util::load_be<uint64_t>(&raw[i * 8]);
        if (uint64_t boff = h.backing_file_offset.value()) {
            uint32_t blen = h.backing_file_size.value();
            if (blen > kMaxBackingName)
                return corrupt("backing file name length " + std::to_string(blen) + " exceeds 1023", 16);
            if (!util::range_within(boff, blen, fsize))
                return corrupt("backing file name at " + hex(boff) + " lies outside the file", 8);
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
