// The generic half of BlockDevice: bounds, read-only state, alignment, backing fall-through.
#include "vdisk/block_device.hpp"

#include <algorithm>
#include <vector>

#include "util/checked.hpp"

namespace vdisk {

BlockDevice::~BlockDevice() = default;

static Error range_error(const char* op, uint64_t offset, uint64_t len, uint64_t size) {
    return make_error(ErrorCode::out_of_range, std::string(op) + " of " + std::to_string(len) + " bytes at " +
                                                   hex(offset) + " is outside the device (size " + hex(size) + ")");
}

// Errors that come out of a layer name its main file when the backend did not (a read error deep in a chain
// then says which image it came from).
Error BlockDevice::named(Error e) const {
    if (e.file.empty()) {
        auto fs = files();
        if (!fs.empty() && fs.front()) e.file = fs.front()->name();
    }
    return e;
}

Status BlockDevice::read(uint64_t offset, std::span<uint8_t> buf) {
    if (!util::range_within(offset, buf.size(), size_)) return range_error("read", offset, buf.size(), size_);
    if (buf.empty()) return ok();
    auto st = do_read(offset, buf);
    if (!st) return named(std::move(st).error());
    return st;
}

Status BlockDevice::write(uint64_t offset, std::span<const uint8_t> buf) {
    if (read_only_) return make_error(ErrorCode::read_only, "device is read-only");
    if (closed_) return make_error(ErrorCode::invalid_argument, "write after close");
    if (!util::range_within(offset, buf.size(), size_)) return range_error("write", offset, buf.size(), size_);
    if (buf.empty()) return ok();
    uint64_t g = write_granularity();
    uint64_t end = offset + buf.size();
    if (util::is_aligned(offset, g) && (util::is_aligned(end, g) || end == size_)) return do_write(offset, buf);
    return rmw_write(offset, buf);
}

// Unaligned head/tail: read the covering aligned blocks (through the backing chain), patch, write back.
Status BlockDevice::rmw_write(uint64_t offset, std::span<const uint8_t> buf) {
    uint64_t g = write_granularity();
    uint64_t end = offset + buf.size();
    uint64_t a_start = util::align_down(offset, g);
    uint64_t a_end = std::min<uint64_t>(size_, util::align_up(end, g).value_or(size_));
    // Head block, aligned middle, tail block.
    uint64_t head_end = std::min<uint64_t>(a_end, a_start + g);
    if (offset != a_start || end < head_end) {
        std::vector<uint8_t> blk(static_cast<size_t>(head_end - a_start));
        VDISK_TRY(do_read(a_start, blk));
        uint64_t n = std::min<uint64_t>(end, head_end) - offset;
        std::copy_n(buf.begin(), n, blk.begin() + static_cast<std::ptrdiff_t>(offset - a_start));
        VDISK_TRY(do_write(a_start, blk));
        offset += n;
        buf = buf.subspan(static_cast<size_t>(n));
        if (buf.empty()) return ok();
    }
    end = offset + buf.size();
    uint64_t mid_end = (end == size_) ? end : util::align_down(end, g);
    if (mid_end > offset) {
        VDISK_TRY(do_write(offset, buf.first(static_cast<size_t>(mid_end - offset))));
        buf = buf.subspan(static_cast<size_t>(mid_end - offset));
        offset = mid_end;
    }
    if (buf.empty()) return ok();
    uint64_t t_end = std::min<uint64_t>(size_, offset + g);
    std::vector<uint8_t> blk(static_cast<size_t>(t_end - offset));
    VDISK_TRY(do_read(offset, blk));
    std::copy(buf.begin(), buf.end(), blk.begin());
    return do_write(offset, blk);
}

Status BlockDevice::write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) {
    if (read_only_) return make_error(ErrorCode::read_only, "device is read-only");
    if (!util::range_within(offset, len, size_)) return range_error("write_zeroes", offset, len, size_);
    if (len == 0) return ok();
    uint64_t g = write_granularity();
    uint64_t end = offset + len;
    uint64_t a_start = util::align_up(offset, g).value_or(size_);
    uint64_t a_end = end == size_ ? end : util::align_down(end, g);
    if (a_start >= a_end) {
        std::vector<uint8_t> z(static_cast<size_t>(len), 0);
        return write(offset, z);
    }
    if (a_start > offset) {
        std::vector<uint8_t> z(static_cast<size_t>(a_start - offset), 0);
        VDISK_TRY(write(offset, z));
    }
    VDISK_TRY(do_write_zeroes(a_start, a_end - a_start, may_unmap));
    if (end > a_end) {
        std::vector<uint8_t> z(static_cast<size_t>(end - a_end), 0);
        VDISK_TRY(write(a_end, z));
    }
    return ok();
}

Status BlockDevice::discard(uint64_t offset, uint64_t len) {
    if (read_only_) return make_error(ErrorCode::read_only, "device is read-only");
    if (!util::range_within(offset, len, size_)) return range_error("discard", offset, len, size_);
    if (len == 0) return ok();
    return do_discard(offset, len);
}

Status BlockDevice::flush() {
    if (read_only_) return ok();
    return do_flush();
}

Status BlockDevice::snapshot_create(const SnapshotInfo&) {
    return make_error(ErrorCode::unsupported, "this image format has no internal snapshots");
}
Status BlockDevice::snapshot_remove(const std::string&) {
    return make_error(ErrorCode::unsupported, "this image format has no internal snapshots");
}
Status BlockDevice::snapshot_apply(const std::string&) {
    return make_error(ErrorCode::unsupported, "this image format has no internal snapshots");
}

Status BlockDevice::set_backing_reference(const std::string&, const std::string&, BlockDevice*) {
    return make_error(ErrorCode::unsupported, "changing the backing file of this image format is not supported");
}

Status BlockDevice::amend(const std::vector<std::pair<std::string, std::string>>&) {
    return make_error(ErrorCode::unsupported, "this image format does not support amend");
}

Status BlockDevice::resize(uint64_t new_size) {
    if (read_only_) return make_error(ErrorCode::read_only, "device is read-only");
    return do_resize(new_size);
}

Status BlockDevice::close() {
    if (closed_) return ok();
    closed_ = true;
    if (read_only_) return ok();
    return do_close();
}

Result<Extent> BlockDevice::block_status(uint64_t offset, uint64_t max_len) {
    if (offset >= size_) return range_error("block_status", offset, max_len, size_);
    max_len = std::min(max_len, size_ - offset);
    if (max_len == 0) return make_error(ErrorCode::invalid_argument, "block_status with zero length");
    auto r = do_block_status(offset, max_len);
    if (!r) return named(std::move(r).error());
    Extent e = *r;
    // Contract check: a backend that returns a malformed extent is a bug, not an image problem.
    if (e.offset != offset || e.length == 0 || e.length > max_len)
        return make_error(ErrorCode::corrupt, "internal: backend returned extent [" + hex(e.offset) + ", +" +
                                                  hex(e.length) + ") for request at " + hex(offset));
    return e;
}

Status BlockDevice::attach_backing(std::unique_ptr<BlockDevice> backing) {
    if (backing) VDISK_TRY(check_backing(*backing));
    backing_ = std::move(backing);
    return ok();
}

Status BlockDevice::read_from_backing(uint64_t offset, std::span<uint8_t> buf) {
    if (!backing_) {
        std::fill(buf.begin(), buf.end(), 0);
        return ok();
    }
    uint64_t bsize = backing_->size();
    size_t in = 0;
    if (offset < bsize) in = static_cast<size_t>(std::min<uint64_t>(buf.size(), bsize - offset));
    if (in) VDISK_TRY(backing_->read(offset, buf.first(in)));
    std::fill(buf.begin() + static_cast<std::ptrdiff_t>(in), buf.end(), 0);
    return ok();
}

Status BlockDevice::do_write(uint64_t, std::span<const uint8_t>) {
    return make_error(ErrorCode::unsupported, "writing is not supported by this format");
}

Status BlockDevice::do_write_zeroes(uint64_t offset, uint64_t len, bool) {
    static constexpr uint64_t kChunk = 1 << 20;
    std::vector<uint8_t> zeros(static_cast<size_t>(std::min(len, kChunk)), 0);
    while (len) {
        uint64_t n = std::min<uint64_t>(len, zeros.size());
        VDISK_TRY(do_write(offset, std::span<const uint8_t>(zeros.data(), static_cast<size_t>(n))));
        offset += n;
        len -= n;
    }
    return ok();
}

Status BlockDevice::do_discard(uint64_t, uint64_t) { return ok(); }
Status BlockDevice::do_flush() { return ok(); }
Status BlockDevice::do_resize(uint64_t) {
    return make_error(ErrorCode::unsupported, "resizing is not supported by this format");
}
Status BlockDevice::do_close() { return flush(); }
Status BlockDevice::check_backing(BlockDevice&) { return ok(); }

Result<std::vector<uint8_t>> BlockDevice::compress_chunk(std::span<const uint8_t>) const {
    return make_error(ErrorCode::unsupported, "compression is not supported by this format");
}
Status BlockDevice::write_compressed_chunk(uint64_t, std::span<const uint8_t>, uint64_t) {
    return make_error(ErrorCode::unsupported, "compression is not supported by this format");
}

}  // namespace vdisk
