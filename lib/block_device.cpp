// SPDX-License-Identifier: Apache-2.0
// The generic half of BlockDevice: bounds, read-only state, alignment, backing fall-through.
#include "vdisk/block_device.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "util/checked.hpp"
#include "vdisk/format.hpp"

namespace vdisk {

// The device lock. pthread's rwlock rather than std::shared_mutex because glibc's default (and so
// std::shared_mutex) prefers readers: with readers arriving continuously a writer would wait forever. With
// writers preferred, a thread must not take the shared lock twice (it would queue behind a waiting writer
// that waits for it), so each thread remembers which devices it holds shared and nested reads pass through.
struct BlockDevice::Lock {
    pthread_rwlock_t rw;
    std::atomic<std::thread::id> owner{};  // the thread holding it exclusively
    Lock() {
        pthread_rwlockattr_t attr;
        pthread_rwlockattr_init(&attr);
        pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&rw, &attr);
        pthread_rwlockattr_destroy(&attr);
    }
    ~Lock() { pthread_rwlock_destroy(&rw); }
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;
};

namespace {
// Devices the calling thread holds shared, innermost last (a read through a chain holds one per layer).
constexpr unsigned kMaxHeld = 64;
thread_local const void* held_shared[kMaxHeld];
thread_local unsigned held_count = 0;
bool holds_shared(const void* d) {
    for (unsigned i = held_count; i-- > 0;)
        if (held_shared[i] == d) return true;
    return false;
}
}  // namespace

struct BlockDevice::UnitCache {
    std::mutex mu;
    const File* file = nullptr;
    uint64_t host_offset = 0;
    uint64_t unit_offset = 0;
    std::vector<uint8_t> bytes;  // empty: nothing cached
};

BlockDevice::BlockDevice(uint64_t size, bool read_only)
    : lock_(std::make_unique<Lock>()),
      unit_cache_(std::make_unique<UnitCache>()),
      size_(size),
      read_only_(read_only),
      budget_(std::make_shared<Budget>(Limits{}.max_image_memory, Limits{}.max_work)) {}

BlockDevice::~BlockDevice() = default;

// Readers share the device; a thread that already holds it (shared or exclusively) passes straight through.
class BlockDevice::SharedGuard {
public:
    explicit SharedGuard(const BlockDevice& d) : lock_(*d.lock_) {
        if (lock_.owner.load() == std::this_thread::get_id() || holds_shared(&lock_)) return;
        pthread_rwlock_rdlock(&lock_.rw);
        locked_ = true;
        if (held_count < kMaxHeld) {
            held_shared[held_count++] = &lock_;
            tracked_ = true;
        }
    }
    ~SharedGuard() {
        if (!locked_) return;
        if (tracked_) --held_count;
        pthread_rwlock_unlock(&lock_.rw);
    }
    SharedGuard(const SharedGuard&) = delete;
    SharedGuard& operator=(const SharedGuard&) = delete;

private:
    Lock& lock_;
    bool locked_ = false;
    bool tracked_ = false;
};

// Writers take the device alone; nested calls from the same thread (write_zeroes -> write, close -> flush,
// a backend's read-modify-write) find themselves as owner and do not lock again.
class BlockDevice::ExclusiveGuard {
public:
    explicit ExclusiveGuard(const BlockDevice& d) : lock_(*d.lock_) {
        if (lock_.owner.load() == std::this_thread::get_id()) return;
        pthread_rwlock_wrlock(&lock_.rw);
        lock_.owner.store(std::this_thread::get_id());
        locked_ = true;
    }
    ~ExclusiveGuard() {
        if (!locked_) return;
        lock_.owner.store(std::thread::id());
        pthread_rwlock_unlock(&lock_.rw);
    }
    ExclusiveGuard(const ExclusiveGuard&) = delete;
    ExclusiveGuard& operator=(const ExclusiveGuard&) = delete;

private:
    Lock& lock_;
    bool locked_ = false;
};

ImageInfo BlockDevice::info() const {
    SharedGuard g(*this);
    return do_info();
}

static Error range_error(const char* op, uint64_t offset, uint64_t len, uint64_t size) {
    return make_error(ErrorCode::out_of_range, std::string(op) + " of " + std::to_string(len) + " bytes at " +
                                                   hex(offset) + " is outside the device (size " + hex(size) + ")");
}

// do_map_stored's contract: a compressed unit holds `offset` and names its bytes, other pieces start there and fit.
static bool maps_at(const StoredExtent& e, uint64_t offset, uint64_t max_len) {
    return e.length > 0 && (e.kind == StoredKind::compressed
                                ? e.offset <= offset && offset - e.offset < e.length && e.file && e.host_length > 0
                                : e.offset == offset && e.length <= max_len);
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
    SharedGuard g(*this);
    const uint64_t dev_size = size();
    if (!util::range_within(offset, buf.size(), dev_size)) return range_error("read", offset, buf.size(), dev_size);
    if (buf.empty()) return ok();
    auto st = do_read(offset, buf);
    if (!st) return named(std::move(st).error());
    return st;
}

Status BlockDevice::write(uint64_t offset, std::span<const uint8_t> buf) {
    ExclusiveGuard g(*this);
    return write_locked(offset, buf);
}

Status BlockDevice::write_locked(uint64_t offset, std::span<const uint8_t> buf) {
    const uint64_t dev_size = size();
    if (read_only_) return make_error(ErrorCode::read_only, "device is read-only");
    if (closed_) return make_error(ErrorCode::invalid_argument, "write after close");
    if (!util::range_within(offset, buf.size(), dev_size)) return range_error("write", offset, buf.size(), dev_size);
    if (buf.empty()) return ok();
    uint64_t g = write_granularity();
    uint64_t end = offset + buf.size();
    if (util::is_aligned(offset, g) && (util::is_aligned(end, g) || end == dev_size)) return do_write(offset, buf);
    return rmw_write(offset, buf);
}

// Unaligned head/tail: read the covering aligned blocks (through the backing chain), patch, write back.
Status BlockDevice::rmw_write(uint64_t offset, std::span<const uint8_t> buf) {
    const uint64_t dev_size = size();
    uint64_t g = write_granularity();
    uint64_t end = offset + buf.size();
    uint64_t a_start = util::align_down(offset, g);
    uint64_t a_end = std::min<uint64_t>(dev_size, util::align_up(end, g).value_or(dev_size));
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
    uint64_t mid_end = (end == dev_size) ? end : util::align_down(end, g);
    if (mid_end > offset) {
        VDISK_TRY(do_write(offset, buf.first(static_cast<size_t>(mid_end - offset))));
        buf = buf.subspan(static_cast<size_t>(mid_end - offset));
        offset = mid_end;
    }
    if (buf.empty()) return ok();
    uint64_t t_end = std::min<uint64_t>(dev_size, offset + g);
    std::vector<uint8_t> blk(static_cast<size_t>(t_end - offset));
    VDISK_TRY(do_read(offset, blk));
    std::copy(buf.begin(), buf.end(), blk.begin());
    return do_write(offset, blk);
}

Status BlockDevice::write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) {
    ExclusiveGuard guard(*this);
    const uint64_t dev_size = size();
    if (read_only_) return make_error(ErrorCode::read_only, "device is read-only");
    if (!util::range_within(offset, len, dev_size)) return range_error("write_zeroes", offset, len, dev_size);
    if (len == 0) return ok();
    uint64_t g = write_granularity();
    uint64_t end = offset + len;
    uint64_t a_start = util::align_up(offset, g).value_or(dev_size);
    uint64_t a_end = end == dev_size ? end : util::align_down(end, g);
    // Unaligned head and tail (or all of a short range) are written as zero bytes.
    auto write_zero_bytes = [&](uint64_t at, uint64_t n) { return write(at, std::vector<uint8_t>(n, 0)); };
    if (a_start >= a_end) return write_zero_bytes(offset, len);
    if (a_start > offset) VDISK_TRY(write_zero_bytes(offset, a_start - offset));
    VDISK_TRY(do_write_zeroes(a_start, a_end - a_start, may_unmap));
    if (end > a_end) VDISK_TRY(write_zero_bytes(a_end, end - a_end));
    return ok();
}

Status BlockDevice::discard(uint64_t offset, uint64_t len) {
    ExclusiveGuard g(*this);
    const uint64_t dev_size = size();
    if (read_only_) return make_error(ErrorCode::read_only, "device is read-only");
    if (!util::range_within(offset, len, dev_size)) return range_error("discard", offset, len, dev_size);
    if (len == 0) return ok();
    return do_discard(offset, len);
}

Status BlockDevice::flush() {
    if (read_only_) return ok();
    ExclusiveGuard g(*this);
    return do_flush();
}

static Error no_snapshots() {
    return make_error(ErrorCode::unsupported, "this image format has no internal snapshots");
}
Status BlockDevice::snapshot_create(const SnapshotInfo&) { return no_snapshots(); }
Status BlockDevice::snapshot_remove(const std::string&) { return no_snapshots(); }
Status BlockDevice::snapshot_apply(const std::string&) { return no_snapshots(); }

Status BlockDevice::set_backing_reference(const std::string&, const std::string&, BlockDevice*) {
    return make_error(ErrorCode::unsupported, "changing the backing file of this image format is not supported");
}

Status BlockDevice::amend(const std::vector<std::pair<std::string, std::string>>&) {
    return make_error(ErrorCode::unsupported, "this image format does not support amend");
}

Status BlockDevice::resize(uint64_t new_size) {
    ExclusiveGuard g(*this);
    if (read_only_) return make_error(ErrorCode::read_only, "device is read-only");
    return do_resize(new_size);
}

Status BlockDevice::close() {
    ExclusiveGuard g(*this);
    if (closed_) return ok();
    closed_ = true;
    if (read_only_) return ok();
    return do_close();
}

Result<Extent> BlockDevice::block_status(uint64_t offset, uint64_t max_len) {
    SharedGuard g(*this);
    const uint64_t dev_size = size();
    if (offset >= dev_size) return range_error("block_status", offset, max_len, dev_size);
    max_len = std::min(max_len, dev_size - offset);
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

Result<StoredExtent> BlockDevice::map_stored(uint64_t offset, uint64_t max_len) {
    SharedGuard g(*this);
    if (offset >= size_) return range_error("map_stored", offset, max_len, size_);
    max_len = std::min(max_len, size_ - offset);
    if (max_len == 0) return make_error(ErrorCode::invalid_argument, "map_stored with zero length");
    auto r = do_map_stored(offset, max_len);
    if (!r) return named(std::move(r).error());
    const StoredExtent& e = *r;
    // Contract check, as for block_status.
    if (!maps_at(e, offset, max_len))
        return make_error(ErrorCode::corrupt, "internal: backend mapped [" + hex(e.offset) + ", +" + hex(e.length) +
                                                  ") for request at " + hex(offset));
    return r;
}

namespace {
// A backend must override do_map_stored or do_block_status; the defaults derive each from the other, so this
// catches one that overrides neither (an endless recursion otherwise).
thread_local const void* deriving_map = nullptr;
struct DeriveGuard {
    const void*& slot;
    const void* saved;
    explicit DeriveGuard(const void*& s, const void* d) : slot(s), saved(s) { slot = d; }
    ~DeriveGuard() { slot = saved; }
    DeriveGuard(const DeriveGuard&) = delete;
    DeriveGuard& operator=(const DeriveGuard&) = delete;
};
Error no_map() {
    return make_error(ErrorCode::unsupported, "internal: backend implements neither do_map_stored nor do_block_status");
}
}  // namespace

Result<StoredExtent> BlockDevice::do_map_stored(uint64_t offset, uint64_t max_len) {
    if (deriving_map == this) return no_map();
    DeriveGuard dg(deriving_map, this);
    VDISK_ASSIGN(Extent x, do_block_status(offset, max_len));
    StoredExtent s;
    s.offset = x.offset;
    s.length = x.length;
    s.kind = x.kind == ExtentKind::zero          ? StoredKind::zero
             : x.kind == ExtentKind::unallocated ? StoredKind::unallocated
                                                 : StoredKind::data;  // compressed too: read() decodes it
    return s;
}

Status BlockDevice::inflate_unit(const StoredExtent&, std::span<const uint8_t>, std::span<uint8_t>) const {
    return make_error(ErrorCode::unsupported, "this format stores no compressed units");
}

Status BlockDevice::attach_backing(std::unique_ptr<BlockDevice> backing, bool accept_identity_mismatch) {
    ExclusiveGuard g(*this);
    if (backing) {
        VDISK_TRY(check_backing(*backing));
        if (!accept_identity_mismatch) VDISK_TRY(check_backing_identity(*backing));
    }
    backing_ = std::move(backing);
    return ok();
}

Status BlockDevice::read_from_backing(uint64_t offset, std::span<uint8_t> buf) {
    if (!backing_) {
        std::fill(buf.begin(), buf.end(), 0);
        return ok();
    }
    const uint64_t bsize = backing_->size();
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
Status BlockDevice::check_backing_identity(BlockDevice&) { return ok(); }
Status BlockDevice::missing_backing_error() const { return ok(); }

Result<CheckResult> BlockDevice::check(RepairMode repair) {
    ExclusiveGuard g(*this);
    if (repair != RepairMode::none && read_only_)
        return make_error(ErrorCode::read_only, "repairing needs the image opened read-write");
    auto r = do_check(repair);
    if (!r) return named(std::move(r).error());
    return r;
}

Result<CheckResult> BlockDevice::do_check(RepairMode) {
    return make_error(ErrorCode::unsupported, "this image format does not support checks");
}

static Error no_compression() {
    return make_error(ErrorCode::unsupported, "compression is not supported by this format");
}
Result<std::vector<uint8_t>> BlockDevice::compress_chunk(std::span<const uint8_t>) const { return no_compression(); }
Status BlockDevice::write_compressed_chunk(uint64_t offset, std::span<const uint8_t> compressed, uint64_t raw_length) {
    ExclusiveGuard g(*this);
    const uint64_t dev_size = size();
    if (read_only_) return make_error(ErrorCode::read_only, "device is read-only");
    if (closed_) return make_error(ErrorCode::invalid_argument, "write after close");
    const uint64_t gran = compress_granularity();
    if (gran == 0) return no_compression();
    if (!util::range_within(offset, raw_length, dev_size) || raw_length == 0)
        return range_error("compressed write", offset, raw_length, dev_size);
    if (offset % gran != 0 || (raw_length != gran && offset + raw_length != dev_size) || raw_length > gran)
        return make_error(ErrorCode::invalid_argument, "compressed chunk of " + std::to_string(raw_length) +
                                                           " bytes at " + hex(offset) + " is not one granule of " +
                                                           std::to_string(gran) + " bytes");
    if (compressed.empty())
        return make_error(ErrorCode::invalid_argument, "compressed chunk at " + hex(offset) + " is empty");
    auto st = do_write_compressed_chunk(offset, compressed, raw_length);
    if (!st) return named(std::move(st).error());
    return st;
}

Status BlockDevice::do_write_compressed_chunk(uint64_t, std::span<const uint8_t>, uint64_t) { return no_compression(); }

// ---- the generic read path (map first) ---------------------------------------------------------------

namespace {
bool same_kind_follows(const StoredExtent& m, const StoredExtent& n) {
    if (n.kind != m.kind || n.kind == StoredKind::compressed) return false;
    if (m.kind != StoredKind::data) return true;
    return n.file == m.file && n.host_offset == m.host_offset + m.length;
}
constexpr unsigned kMaxMergeSteps = 65536;  // bounded walk when merging pieces (block status, reads)

// What a backend answered for a read at `offset` of `want` bytes, checked before the read trusts it.
Status check_read_piece(const StoredExtent& m, uint64_t offset, uint64_t want) {
    if (!maps_at(m, offset, want))
        return make_error(ErrorCode::corrupt, std::string("internal: backend mapped ") +
                                                  (m.kind == StoredKind::compressed ? "compressed unit [" : "[") +
                                                  hex(m.offset) + ", +" + hex(m.length) + ") for a read at " +
                                                  hex(offset));
    if (m.kind == StoredKind::data && !m.file)
        return make_error(ErrorCode::unsupported, "internal: backend maps data without a host file at " + hex(offset) +
                                                      " and does not read it itself");
    return ok();
}

// Extends the piece `m` read at `offset` (at most `want` bytes) over the following pieces of the same kind,
// contiguous in the same file for data, so they are read with one I/O. `map` is the device's do_map_stored.
template <typename Map>
void merge_following(StoredExtent& m, uint64_t offset, uint64_t want, const Map& map) {
    for (unsigned steps = 0; m.length < want && steps < kMaxMergeSteps; ++steps) {
        auto n = map(offset + m.length, want - m.length);
        // A piece that fails to map ends the merge: what maps is read, the next pass reports the error.
        if (!n || n->offset != offset + m.length || n->length == 0 || !same_kind_follows(m, *n)) break;
        m.length += std::min<uint64_t>(n->length, want - m.length);
    }
}
}  // namespace

Result<Extent> BlockDevice::do_block_status(uint64_t offset, uint64_t max_len) {
    if (deriving_map == this) return no_map();
    DeriveGuard dg(deriving_map, this);
    VDISK_ASSIGN(StoredExtent m, do_map_stored(offset, max_len));
    Extent e;
    e.offset = offset;
    if (m.kind == StoredKind::compressed) {
        // The unit may start before `offset`; report the part from offset on, then following compressed units.
        e.kind = ExtentKind::data;
        e.compressed = true;
        e.length = std::min(m.offset + m.length - offset, max_len);
        for (unsigned steps = 0; e.length < max_len && steps < kMaxMergeSteps; ++steps) {
            auto nr = do_map_stored(offset + e.length, max_len - e.length);
            if (!nr || nr->kind != StoredKind::compressed) break;  // a bad next piece is the next call's error
            const StoredExtent& n = *nr;
            e.length = std::min(n.offset + n.length - offset, max_len);
        }
        return e;
    }
    e.length = m.length;
    e.kind = m.kind == StoredKind::zero          ? ExtentKind::zero
             : m.kind == StoredKind::unallocated ? ExtentKind::unallocated
                                                 : ExtentKind::data;
    if (m.kind == StoredKind::data && m.file) {
        e.file = m.file;
        e.host_offset = m.host_offset;
    }
    for (unsigned steps = 0; e.length < max_len && steps < kMaxMergeSteps; ++steps) {
        // A piece that fails to map ends the merge: the good run is reported, the error comes with the next call.
        auto n = do_map_stored(offset + e.length, max_len - e.length);
        StoredExtent cur = m;
        cur.length = e.length;
        if (!n || !same_kind_follows(cur, *n)) break;
        e.length += n->length;
    }
    return e;
}

Status BlockDevice::do_read(uint64_t offset, std::span<uint8_t> buf) { return read_mapped(offset, buf); }

Status BlockDevice::read_mapped(uint64_t offset, std::span<uint8_t> buf) {
    while (!buf.empty()) {
        VDISK_ASSIGN(StoredExtent m, do_map_stored(offset, buf.size()));
        VDISK_TRY(check_read_piece(m, offset, buf.size()));
        if (m.kind != StoredKind::compressed)
            merge_following(m, offset, buf.size(), [this](uint64_t o, uint64_t l) { return do_map_stored(o, l); });
        // A compressed unit may start before `offset` and end past the buffer.
        const uint64_t n = m.kind == StoredKind::compressed
                               ? std::min<uint64_t>(buf.size(), m.offset + m.length - offset)
                               : m.length;
        auto part = buf.first(static_cast<size_t>(n));
        Status st;
        switch (m.kind) {
            case StoredKind::data: st = read_zero_fill(*m.file, m.host_offset, part); break;
            case StoredKind::zero: std::fill(part.begin(), part.end(), 0); break;
            case StoredKind::unallocated:
                st = backing_ ? ok() : missing_backing_error();
                if (st) st = read_from_backing(offset, part);
                break;
            case StoredKind::compressed: st = read_unit(m, offset, part); break;
        }
        VDISK_TRY(st);
        offset += n;
        buf = buf.subspan(static_cast<size_t>(n));
    }
    return ok();
}

// One compressed unit: read its stored bytes (positional, past the end of the file as zeros), inflate, copy
// the part asked for. The last unit inflated is kept so small reads walking through it inflate it once.
Status BlockDevice::read_unit(const StoredExtent& unit, uint64_t offset, std::span<uint8_t> out) {
    const uint64_t skip = offset - unit.offset;
    {
        std::lock_guard lock(unit_cache_->mu);
        auto& c = *unit_cache_;
        if (!c.bytes.empty() && c.file == unit.file && c.host_offset == unit.host_offset &&
            c.unit_offset == unit.offset && c.bytes.size() == unit.length) {
            std::memcpy(out.data(), c.bytes.data() + skip, out.size());
            return ok();
        }
    }
    // Both sizes are bounded by the backend (a cluster or grain, capped at open; stored bytes capped too).
    std::vector<uint8_t> stored(static_cast<size_t>(unit.host_length));
    VDISK_TRY(read_zero_fill(*unit.file, unit.host_offset, stored));
    if (skip == 0 && out.size() == unit.length) return inflate_unit(unit, stored, out);
    std::vector<uint8_t> whole(static_cast<size_t>(unit.length));
    VDISK_TRY(inflate_unit(unit, stored, whole));
    std::memcpy(out.data(), whole.data() + skip, out.size());
    std::lock_guard lock(unit_cache_->mu);
    auto& c = *unit_cache_;
    c.file = unit.file;
    c.host_offset = unit.host_offset;
    c.unit_offset = unit.offset;
    c.bytes = std::move(whole);
    return ok();
}

}  // namespace vdisk
