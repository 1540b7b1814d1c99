// SPDX-License-Identifier: Apache-2.0
// convert_stream: raw, streamOptimized VMDK and fixed VHD read front to back from a pipe (see stream.hpp).
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vdisk/hash.hpp"
#include "vdisk/stream.hpp"

namespace vdisk {
namespace {

constexpr uint64_t kMaxGrainBytes = 16u << 20;  // VMDK allows far less in practice (qemu: 2 MiB clusters)

class FdStream final : public InputStream {
public:
    FdStream(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
    Result<size_t> read(std::span<uint8_t> buf) override {
        for (;;) {
            ssize_t n = ::read(fd_, buf.data(), buf.size());
            if (n >= 0) return static_cast<size_t>(n);
            if (errno == EINTR) continue;
            Error e = make_error(ErrorCode::io, std::string("read: ") + std::strerror(errno));
            e.file = name_;
            return e;
        }
    }
    const std::string& name() const override { return name_; }

private:
    int fd_;
    std::string name_;
};

// Exact reads and skips with the stream position, for messages.
class Reader {
public:
    explicit Reader(InputStream& in) : in_(in) {}
    uint64_t pos() const { return pos_; }
    // Fill buf; returns the bytes read (< buf.size() only at the end of the stream).
    Result<size_t> fill(std::span<uint8_t> buf) {
        size_t done = 0;
        while (done < buf.size()) {
            VDISK_ASSIGN(size_t n, in_.read(buf.subspan(done)));
            if (n == 0) break;
            done += n;
        }
        pos_ += done;
        return done;
    }
    Status exact(std::span<uint8_t> buf, std::string_view what) {
        VDISK_ASSIGN(size_t n, fill(buf));
        if (n != buf.size()) return truncated(what);
        return ok();
    }
    Status skip(uint64_t n, std::string_view what) {
        std::vector<uint8_t> scratch(static_cast<size_t>(std::min<uint64_t>(n, 1u << 20)));
        while (n > 0) {
            size_t k = static_cast<size_t>(std::min<uint64_t>(n, scratch.size()));
            VDISK_TRY(exact(std::span<uint8_t>(scratch.data(), k), what));
            n -= k;
        }
        return ok();
    }
    Error truncated(std::string_view what) const {
        return bad(ErrorCode::corrupt, "the stream ended at " + std::to_string(pos_) + " inside " + std::string(what));
    }
    Error bad(ErrorCode c, std::string m) const {
        Error e = make_error(c, std::move(m));
        e.file = in_.name();
        e.offset = pos_;
        return e;
    }

private:
    InputStream& in_;
    uint64_t pos_ = 0;
};

// Writes pieces that arrive in non-decreasing offset order through one aligned window: what the window
// holds when the next piece lies beyond it is written (its all-zero units skipped, or compressed chunk by
// chunk) and given to the content sink, with the gap before it as zeros.
class ForwardWriter {
public:
    // `size`: the source's virtual size (a target rounded up, as VHD geometry does, is larger).
    ForwardWriter(BlockDevice& dst, const ConvertOptions& o, bool compressed, uint64_t size)
        : dst_(dst), o_(o), size_(size), compressed_(compressed) {
        unit_ = compressed ? dst.compress_granularity() : std::max<uint64_t>(dst.write_granularity(), 4096);
        chunk_ = std::max(unit_, util::align_up(std::max<uint64_t>(o.chunk_size, unit_), unit_).value_or(unit_));
        buf_.assign(static_cast<size_t>(chunk_), 0);
    }

    Status put(uint64_t offset, std::span<const uint8_t> data) {
        if (data.size() > size_ || offset > size_ - data.size())
            return make_error(ErrorCode::out_of_range, "stream data at " + std::to_string(offset) + " (+" +
                                                           std::to_string(data.size()) + ") past the disk's end " +
                                                           std::to_string(size_));
        if (have_ && offset < start_)
            return make_error(ErrorCode::unsupported, "stream data at " + std::to_string(offset) +
                                                          " comes after data at " + std::to_string(start_) +
                                                          ": only increasing offsets can be converted from a pipe");
        while (!data.empty()) {
            if (!have_ || offset >= start_ + chunk_) {
                VDISK_TRY(flush());
                start_ = util::align_down(offset, chunk_);
                have_ = true;
            }
            size_t at = static_cast<size_t>(offset - start_);
            size_t n = static_cast<size_t>(std::min<uint64_t>(data.size(), chunk_ - at));
            std::memcpy(buf_.data() + at, data.data(), n);
            data = data.subspan(n);
            offset += n;
        }
        return ok();
    }

    Status finish() {
        VDISK_TRY(flush());
        if (o_.content_sink && fed_ < size_) VDISK_TRY(o_.content_sink->zeros(fed_, size_ - fed_));
        VDISK_TRY(o_.progress(size_, size_));
        return ok();
    }

private:
    Status flush() {
        if (!have_) return ok();
        have_ = false;
        const uint64_t len = std::min(chunk_, size_ - start_);
        std::span<const uint8_t> w(buf_.data(), static_cast<size_t>(len));
        if (o_.content_sink) {
            if (start_ > fed_) VDISK_TRY(o_.content_sink->zeros(fed_, start_ - fed_));
            VDISK_TRY(o_.content_sink->data(start_, w));
            fed_ = start_ + len;
        }
        for (uint64_t p = 0; p < len;) {
            const uint64_t n = std::min(unit_, len - p);
            auto piece = w.subspan(static_cast<size_t>(p), static_cast<size_t>(n));
            if (util::is_zero(piece)) {
                p += n;
                continue;
            }
            if (compressed_) {
                VDISK_ASSIGN(auto packed, dst_.compress_chunk(piece));
                if (packed.empty()) VDISK_TRY(dst_.write(start_ + p, piece));
                else VDISK_TRY(dst_.write_compressed_chunk(start_ + p, packed, n));
                p += n;
                continue;
            }
            // Plain: one write per run of non-zero units.
            uint64_t e = p + n;
            while (e < len) {
                uint64_t m = std::min(unit_, len - e);
                if (util::is_zero(w.subspan(static_cast<size_t>(e), static_cast<size_t>(m)))) break;
                e += m;
            }
            VDISK_TRY(dst_.write(start_ + p, w.subspan(static_cast<size_t>(p), static_cast<size_t>(e - p))));
            p = e;
        }
        std::fill(buf_.begin(), buf_.end(), 0);
        VDISK_TRY(o_.progress(start_ + len, size_));
        return ok();
    }

    BlockDevice& dst_;
    const ConvertOptions& o_;
    const uint64_t size_;
    const bool compressed_;
    uint64_t unit_ = 0, chunk_ = 0;
    std::vector<uint8_t> buf_;
    uint64_t start_ = 0;
    bool have_ = false;
    uint64_t fed_ = 0;
};

// Raw data (and a fixed VHD's data part): `size` bytes in order.
Status copy_raw(Reader& r, uint64_t from, uint64_t size, ForwardWriter& w, const ConvertOptions& o) {
    std::vector<uint8_t> buf(1u << 20);
    for (uint64_t off = from; off < size;) {
        if (o.cancel && o.cancel->load()) return make_error(ErrorCode::io, "conversion cancelled");
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
        VDISK_TRY(r.exact(std::span<uint8_t>(buf.data(), n), "the disk data"));
        VDISK_TRY(w.put(off, std::span<const uint8_t>(buf.data(), n)));
        off += n;
    }
    return ok();
}

struct VmdkStreamHeader {
    uint64_t capacity_bytes = 0;
    uint64_t grain_bytes = 0;
    uint64_t overhead_bytes = 0;
};

// The streamOptimized header (VMDK 5.0 technote, "Stream-Optimized Compressed Sparse Extents").
Result<VmdkStreamHeader> vmdk_header(Reader& r, std::span<const uint8_t, 512> h) {
    if (util::load_le<uint32_t>(h.data()) != 0x564d444b)
        return r.bad(ErrorCode::invalid_format,
                     "vmdk: the stream does not start with a sparse extent header (KDMV); "
                     "a descriptor-first or flat VMDK needs random access");
    const uint32_t flags = util::load_le<uint32_t>(h.data() + 8);
    const bool compressed = flags & (1u << 16), markers = flags & (1u << 17);
    if (!compressed || !markers)
        return r.bad(ErrorCode::unsupported,
                     "vmdk: only streamOptimized VMDKs (compressed grains with markers) can "
                     "be read from a pipe; this sparse VMDK keeps its grain tables elsewhere");
    if (util::load_le<uint16_t>(h.data() + 77) != 1)
        return r.bad(ErrorCode::unsupported,
                     "vmdk: compression algorithm " + std::to_string(util::load_le<uint16_t>(h.data() + 77)));
    const uint64_t cap_s = util::load_le<uint64_t>(h.data() + 12), grain_s = util::load_le<uint64_t>(h.data() + 20),
                   over_s = util::load_le<uint64_t>(h.data() + 64);
    auto cap = util::mul<uint64_t>(cap_s, 512), grain = util::mul<uint64_t>(grain_s, 512),
         over = util::mul<uint64_t>(over_s, 512);
    if (!cap || !grain || !over || *grain == 0 || *grain > kMaxGrainBytes || !util::is_pow2(*grain) || *over < 512)
        return r.bad(ErrorCode::corrupt, "vmdk: header with capacity " + std::to_string(cap_s) + ", grain " +
                                             std::to_string(grain_s) + ", overhead " + std::to_string(over_s) +
                                             " sectors");
    return VmdkStreamHeader{*cap, *grain, *over};
}

// A metadata marker (its 12 bytes in `sector`): type, then `val` sectors of grain table / directory / footer to
// pass over. False at the end-of-stream marker.
Result<bool> skip_metadata(Reader& r, std::array<uint8_t, 512>& sector, uint64_t marker_at) {
    const uint64_t val = util::load_le<uint64_t>(sector.data());
    VDISK_TRY(r.exact(std::span<uint8_t>(sector.data() + 12, 500), "a metadata marker"));
    const uint32_t type = util::load_le<uint32_t>(sector.data() + 12);
    if (type == 0) return false;  // end of stream
    if (type > 3)
        return r.bad(ErrorCode::corrupt, "vmdk: unknown marker type " + std::to_string(type) + " at " + hex(marker_at));
    auto bytes = util::mul<uint64_t>(val, 512);
    if (!bytes || *bytes > (1ull << 32))
        return r.bad(ErrorCode::corrupt,
                     "vmdk: metadata marker at " + hex(marker_at) + " spans " + std::to_string(val) + " sectors");
    VDISK_TRY(r.skip(*bytes, "VMDK metadata"));
    return true;
}

// A compressed grain (its 12-byte marker in `marker`): LBA, `size` bytes of zlib data, padded to a sector.
// `packed` and `grain` are the caller's buffers, reused from grain to grain.
Status copy_grain(Reader& r, const VmdkStreamHeader& v, ForwardWriter& w, uint64_t marker_at,
                  const std::array<uint8_t, 512>& marker, std::vector<uint8_t>& packed, std::vector<uint8_t>& grain) {
    const uint64_t val = util::load_le<uint64_t>(marker.data());
    const uint32_t size = util::load_le<uint32_t>(marker.data() + 8);
    if (size > 2 * v.grain_bytes + 4096)
        return r.bad(ErrorCode::corrupt, "vmdk: grain at " + hex(marker_at) + " claims " + std::to_string(size) +
                                             " compressed bytes for a " + std::to_string(v.grain_bytes) +
                                             "-byte grain");
    auto off = util::mul<uint64_t>(val, 512);
    if (!off || *off >= v.capacity_bytes || *off % v.grain_bytes)
        return r.bad(ErrorCode::corrupt, "vmdk: grain marker at " + hex(marker_at) + " for sector " +
                                             std::to_string(val) + " (capacity " +
                                             std::to_string(v.capacity_bytes / 512) + " sectors)");
    packed.resize(size);
    VDISK_TRY(r.exact(packed, "a compressed grain"));
    const uint64_t pad = (512 - (12 + static_cast<uint64_t>(size)) % 512) % 512;
    VDISK_TRY(r.skip(pad, "grain padding"));
    const size_t want = static_cast<size_t>(std::min(v.grain_bytes, v.capacity_bytes - *off));
    size_t produced = 0;
    if (!util::inflate_into(packed, std::span<uint8_t>(grain.data(), want), false, &produced))
        return r.bad(ErrorCode::corrupt, "vmdk: grain at " + hex(marker_at) + " does not inflate");
    std::memset(grain.data() + produced, 0, want - produced);
    return w.put(*off, std::span<const uint8_t>(grain.data(), want));
}

Status copy_vmdk_stream(Reader& r, const VmdkStreamHeader& v, ForwardWriter& w, const ConvertOptions& o) {
    VDISK_TRY(r.skip(v.overhead_bytes - 512, "the VMDK descriptor"));
    std::vector<uint8_t> grain(static_cast<size_t>(v.grain_bytes));
    std::vector<uint8_t> packed;
    std::array<uint8_t, 512> sector{};
    for (;;) {
        if (o.cancel && o.cancel->load()) return make_error(ErrorCode::io, "conversion cancelled");
        const uint64_t marker_at = r.pos();
        VDISK_ASSIGN(size_t got, r.fill(std::span<uint8_t>(sector.data(), 12)));
        // qemu-img writes no end-of-stream marker (its tables sit in the header's overhead): the end of
        // the stream at a marker boundary ends the disk too.
        if (got == 0) return ok();
        if (got < 12) return r.truncated("a grain marker");
        if (util::load_le<uint32_t>(sector.data() + 8) != 0) {
            VDISK_TRY(copy_grain(r, v, w, marker_at, sector, packed, grain));
            continue;
        }
        VDISK_ASSIGN(bool more, skip_metadata(r, sector, marker_at));
        if (!more) return ok();
    }
}

// The disk's virtual size: a streamOptimized VMDK states it in its header (read into `vh`; a given --size must
// agree), raw and VHD only at the end of the stream, so they need --size.
Result<uint64_t> stream_disk_size(Reader& r, const std::string& fmt, const StreamSource& source, VmdkStreamHeader& vh) {
    if (fmt != "vmdk") {
        if (!source.size)
            return make_error(ErrorCode::invalid_argument,
                              fmt +
                                  " from a pipe: give the virtual size (--size): the stream states it only at its end");
        return *source.size;
    }
    std::array<uint8_t, 512> h{};
    VDISK_TRY(r.exact(h, "the VMDK header"));
    VDISK_ASSIGN(vh, vmdk_header(r, h));
    if (source.size && *source.size != vh.capacity_bytes)
        return make_error(ErrorCode::invalid_argument, "--size " + std::to_string(*source.size) +
                                                           " disagrees with the VMDK header's capacity " +
                                                           std::to_string(vh.capacity_bytes));
    return vh.capacity_bytes;
}

// The footer (VHD spec, "Hard Disk Footer Format"): cookie, disk type fixed (2), current size.
Status check_vhd_footer(Reader& r, uint64_t size) {
    std::array<uint8_t, 512> f{};
    VDISK_TRY(r.exact(f, "the VHD footer"));
    if (std::memcmp(f.data(), "conectix", 8) != 0)
        return r.bad(ErrorCode::invalid_format, "vhd: no footer ('conectix') after " + std::to_string(size) +
                                                    " bytes of data: is --size right, and is this a fixed VHD?");
    uint32_t sum = 0;
    for (size_t i = 0; i < 512; ++i) sum += (i >= 64 && i < 68) ? 0 : f[i];
    if (~sum != util::load_be<uint32_t>(f.data() + 64))
        return r.bad(ErrorCode::corrupt, "vhd: footer checksum mismatch");
    if (util::load_be<uint32_t>(f.data() + 60) != 2)
        return r.bad(ErrorCode::unsupported, "vhd: disk type " +
                                                 std::to_string(util::load_be<uint32_t>(f.data() + 60)) +
                                                 " is not fixed (2): dynamic VHDs need random access");
    if (util::load_be<uint64_t>(f.data() + 48) != size)
        return r.bad(ErrorCode::corrupt, "vhd: the footer's current size " +
                                             std::to_string(util::load_be<uint64_t>(f.data() + 48)) +
                                             " differs from the " + std::to_string(size) + " bytes of data");
    return ok();
}

// Raw or fixed VHD: `size` bytes of data, the VHD's footer, and nothing after them.
Status copy_flat_stream(Reader& r, const std::string& fmt, uint64_t size, ForwardWriter& w, const ConvertOptions& o) {
    uint64_t done = 0;
    if (fmt == "vhd" && size >= 512) {
        // A dynamic or differencing VHD starts with a copy of its footer; a fixed one starts with data.
        std::array<uint8_t, 512> head{};
        VDISK_TRY(r.exact(head, "the disk data"));
        if (std::memcmp(head.data(), "conectix", 8) == 0 && util::load_be<uint32_t>(head.data() + 60) != 2)
            return r.bad(ErrorCode::unsupported, "vhd: this is a dynamic or differencing VHD (disk type " +
                                                     std::to_string(util::load_be<uint32_t>(head.data() + 60)) +
                                                     "): its block table needs random access; only fixed VHDs stream");
        VDISK_TRY(w.put(0, head));
        done = 512;
    }
    VDISK_TRY(copy_raw(r, done, size, w, o));
    if (fmt == "vhd") VDISK_TRY(check_vhd_footer(r, size));
    std::array<uint8_t, 1> extra{};
    VDISK_ASSIGN(size_t more, r.fill(extra));
    if (more)
        return r.bad(ErrorCode::invalid_argument, "the stream is longer than its size " + std::to_string(size) +
                                                      (fmt == "vhd" ? " plus the footer" : "") + " (check --size)");
    return ok();
}

std::string canonical(const Registry& reg, std::string_view format) {
    const Format* f = reg.find(format);
    return f ? std::string(f->name()) : std::string();
}

}  // namespace

std::unique_ptr<InputStream> make_fd_input_stream(int fd, std::string display_name) {
    return std::make_unique<FdStream>(fd, std::move(display_name));
}

bool stream_readable_format(const Registry& registry, std::string_view format) {
    auto c = canonical(registry, format);
    return c == "raw" || c == "vmdk" || c == "vhd";
}

Status convert_stream(const Registry& registry, InputStream& in, const StreamSource& source, FileSystem& fs,
                      std::string_view dest_name, const ConvertOptions& options) {
    const std::string fmt = canonical(registry, source.format);
    if (fmt.empty())
        return make_error(ErrorCode::invalid_argument, "a stream source needs its format (-f raw|vmdk|vhd)");
    if (!stream_readable_format(registry, fmt))
        return make_error(ErrorCode::unsupported,
                          "format " + fmt +
                              " cannot be read from a pipe: it needs random access (its tables say where "
                              "the data is, out of order); only raw, streamOptimized vmdk and fixed vhd stream");
    Reader r(in);
    VmdkStreamHeader vh;
    VDISK_ASSIGN(const uint64_t size, stream_disk_size(r, fmt, source, vh));

    StagingFileSystem stage(fs);
    CreateOptions copts = options.create;
    copts.size = size;
    VDISK_ASSIGN(auto dst, create_image(registry, stage, dest_name, options.output_format, copts));
    if (options.compress && dst->compress_granularity() == 0)
        return make_error(ErrorCode::unsupported,
                          "output format " + options.output_format + " does not support compression (-c)");
    const bool compressed = (options.compress || dst->compresses_every_write()) && dst->compress_granularity() != 0;
    // A target whose size was rounded (VHD geometry) is at least as large; the stream fills `size` of it.
    ForwardWriter w(*dst, options, compressed, size);
    VDISK_TRY(fmt == "vmdk" ? copy_vmdk_stream(r, vh, w, options) : copy_flat_stream(r, fmt, size, w, options));
    VDISK_TRY(w.finish());
    VDISK_TRY(dst->close());
    dst.reset();
    return stage.commit();
}

}  // namespace vdisk
