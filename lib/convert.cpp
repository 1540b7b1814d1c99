// SPDX-License-Identifier: Apache-2.0
// The one conversion engine: walk the source's allocation through its chain, copy what holds data,
// skip what reads as zeros, optionally compress on worker threads, and publish the target safely
// whatever it is (new file, existing file, link, block device, pipe).
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "io/device_fs.hpp"
#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "vdisk/hash.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {

Status ProgressFn::operator()(uint64_t done, uint64_t total) const {
    if (!fn_) return ok();
    try {
        if (fn_(done, total)) return ok();
        return make_error(ErrorCode::cancelled, "stopped by the progress callback");
    } catch (const std::exception& e) {
        return make_error(ErrorCode::cancelled, std::string("the progress callback threw: ") + e.what());
    } catch (...) {
        return make_error(ErrorCode::cancelled, "the progress callback threw");
    }
}

namespace {

Status check_cancel(const ConvertOptions& o) {
    if (o.cancel && o.cancel->load()) return make_error(ErrorCode::cancelled, "conversion cancelled");
    return ok();
}

// Runs `f` on a worker thread: an exception (bad_alloc, or one from a caller's FileSystem) becomes an error
// instead of std::terminate.
template <typename F>
Status guarded(F&& f) {
    try {
        return f();
    } catch (const std::exception& e) {
        return make_error(ErrorCode::io, std::string("convert: ") + e.what());
    } catch (...) {
        return make_error(ErrorCode::io, "convert: unknown exception");
    }
}

// -r: writes are paced so that `bytes` written take at least bytes / rate seconds since the start.
class RateLimiter {
public:
    explicit RateLimiter(uint64_t rate) : rate_(rate), start_(std::chrono::steady_clock::now()) {}
    void account(uint64_t bytes) {
        if (!rate_) return;
        total_ += bytes;
        const auto due = start_ +
                         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                             std::chrono::duration<double>(static_cast<double>(total_) / static_cast<double>(rate_)));
        std::this_thread::sleep_until(due);
    }

private:
    uint64_t rate_;
    uint64_t total_ = 0;
    std::chrono::steady_clock::time_point start_;
};

// Reads the source. With --salvage a failed read is retried sector by sector; sectors that still fail read
// as zeros and are reported (merged into runs).
Status read_source(BlockDevice& src, uint64_t off, std::span<uint8_t> buf, const ConvertOptions& o) {
    Status st = src.read(off, buf);
    if (st || !o.salvage || st.error().code == ErrorCode::cancelled) return st;
    constexpr uint64_t kSector = 512;
    uint64_t bad_start = 0, bad_len = 0;
    Error bad_err = st.error();
    auto flush_bad = [&] {
        if (bad_len && o.on_salvaged) o.on_salvaged(bad_start, bad_len, bad_err);
        bad_len = 0;
    };
    for (uint64_t p = 0; p < buf.size(); p += kSector) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(kSector, buf.size() - p));
        auto piece = buf.subspan(static_cast<size_t>(p), n);
        Status s = src.read(off + p, piece);
        if (s) {
            flush_bad();
            continue;
        }
        std::fill(piece.begin(), piece.end(), 0);
        if (bad_len && bad_start + bad_len == off + p) {
            bad_len += n;
        } else {
            flush_bad();
            bad_start = off + p;
            bad_len = n;
            bad_err = std::move(s).error();
        }
    }
    flush_bad();
    return ok();
}

// Allocation through the chain; with --salvage an unreadable map counts as data (then read sector-wise).
// Without scanning (-S 0: qemu-img looks for no unallocated or zero sectors) everything is data.
Result<MappedExtent> map_source(BlockDevice& src, uint64_t off, uint64_t len, bool scan, const ConvertOptions& o) {
    MappedExtent d;
    d.offset = off;
    d.length = len;
    d.data = true;
    if (!scan) return d;
    auto m = map_extent(src, off, len);
    if (m || !o.salvage) return m;
    d.length = std::min<uint64_t>(len, 1u << 20);
    return d;
}

// What the target needs besides the source's data.
struct TargetMode {
    bool zero_init = true;   // unwritten ranges of the target read as zeros (a new file, a zeroed device)
    bool backing = false;    // the target has a backing chain: write only what differs from what it reads
    uint64_t sparse = 4096;  // -S
};

// ConvertOptions::content_sink sees the whole virtual content in order: what the copy skipped before
// `offset` (unallocated or zero) as a zero run, then the bytes. `fed` is where the sink stands.
Status feed_sink(ContentSink* sink, uint64_t& fed, uint64_t offset, std::span<const uint8_t> bytes) {
    if (!sink) return ok();
    if (offset < fed) return make_error(ErrorCode::io, "convert: content out of order at " + std::to_string(offset));
    if (offset > fed) VDISK_TRY(sink->zeros(fed, offset - fed));
    VDISK_TRY(sink->data(offset, bytes));
    fed = offset + bytes.size();
    return ok();
}

// Plain copy, extent-driven and pipelined. A reader thread walks the source's allocation through its chain,
// reads data in windows aligned to the target's unit (so the target never has to read-modify-write, which
// a streamOptimized VMDK cannot) and finds the runs of zeros at least -S long; the calling thread writes
// in increasing order. Ranges the source has no data for travel as windows without data. At most kSlots
// windows are in flight, so memory is bounded whatever the image size.
struct InflateJob;
struct Window {
    uint64_t start = 0;
    uint64_t length = 0;
    bool hole = false;  // no data in the source's chain: reads as zeros
    std::vector<uint8_t> data;
    std::vector<std::pair<uint64_t, uint64_t>> runs;  // [begin, end) relative to start that must be written
    // Reader side: compressed units still to be inflated into `data` (see collect_units), their stored bytes,
    // and whether the window may go to the writer (its units are inflated and its runs found).
    std::vector<InflateJob> jobs;
    std::vector<uint8_t> stored;
    size_t pending = 0;
    bool ready = true;
};

// One compressed unit of the source to inflate into a window: the part [skip, skip + length) of the unit
// lands at `dest` in the window; its stored bytes are stored[at, at + stored_length).
struct InflateJob {
    StoredExtent unit;
    size_t at = 0, stored_length = 0;
    uint64_t skip = 0;
    size_t dest = 0, length = 0;
};

// Decode one job into `data` (the window's or chunk's buffer) from `stored`. Whole units inflate straight into
// place; a unit cut by the buffer's edges (or the device's end) goes through a scratch unit.
Status inflate_job(const BlockDevice& src, const InflateJob& j, const uint8_t* stored, uint8_t* data,
                   std::vector<uint8_t>& scratch) {
    std::span<const uint8_t> in(stored + j.at, j.stored_length);
    std::span<uint8_t> dest(data + j.dest, j.length);
    if (j.skip == 0 && j.length == j.unit.length) return src.inflate_unit(j.unit, in, dest);
    scratch.resize(static_cast<size_t>(j.unit.length));
    VDISK_TRY(src.inflate_unit(j.unit, in, scratch));
    std::memcpy(dest.data(), scratch.data() + j.skip, j.length);
    return ok();
}

// What both pipelines share: a lock, a wake-up, a stop switch for either side, and the reader's outcome.
class PipelineControl {
public:
    void stop() {
        std::lock_guard l(mu_);
        stop_ = true;
        cv_.notify_all();
    }
    bool stopped() {
        std::lock_guard l(mu_);
        return stop_;
    }
    // Reader side: no more input; `st` is why it ended.
    void finish(Status st) {
        std::lock_guard l(mu_);
        done_ = true;
        status_ = std::move(st);
        cv_.notify_all();
    }
    Status status() {
        std::lock_guard l(mu_);
        return status_;
    }

protected:
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false, stop_ = false;
    Status status_;
};

// The end of either pipeline, once its threads are joined: the writer's outcome, the reader's, the zeros after
// the last data for the content sink, the final progress.
Status finish_copy(Status writer, PipelineControl& pipe, const ConvertOptions& o, uint64_t fed, uint64_t size) {
    VDISK_TRY(writer);
    VDISK_TRY(pipe.status());
    if (o.content_sink && fed < size) VDISK_TRY(o.content_sink->zeros(fed, size - fed));
    return o.progress(size, size);
}

class WindowQueue : public PipelineControl {
public:
    explicit WindowQueue(size_t slots) : free_(slots) {}
    // Reader side.
    std::unique_ptr<Window> take_free() {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return !spare_.empty() || free_ > 0 || stop_; });
        if (stop_) return nullptr;
        if (!spare_.empty()) {
            auto w = std::move(spare_.back());
            spare_.pop_back();
            return w;
        }
        --free_;
        return std::make_unique<Window>();
    }
    void push_full(std::unique_ptr<Window> w) {
        std::lock_guard l(mu_);
        full_.push_back(std::move(w));
        cv_.notify_all();
    }
    // Inflater side: the window's units are decoded and its runs found; the writer may take it.
    void mark_ready(Window* w) {
        std::lock_guard l(mu_);
        w->ready = true;
        cv_.notify_all();
    }
    // Writer side: the oldest window once it is ready; nullptr when the reader is done (check status()).
    std::unique_ptr<Window> take_full() {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return (!full_.empty() && full_.front()->ready) || done_; });
        // A window still not ready when the reader is done belongs to a failed read: status() says why.
        if (full_.empty() || !full_.front()->ready) return nullptr;
        auto w = std::move(full_.front());
        full_.pop_front();
        return w;
    }
    void give_back(std::unique_ptr<Window> w) {
        std::lock_guard l(mu_);
        spare_.push_back(std::move(w));
        cv_.notify_all();
    }

private:
    size_t free_;
    std::vector<std::unique_ptr<Window>> spare_;
    std::deque<std::unique_ptr<Window>> full_;
};

// The runs of a window that must be written: everything but zero runs of at least `sparse` bytes (counted
// in whole units). sparse == 0: everything.
void find_runs(Window& w, uint64_t unit, uint64_t sparse) {
    w.runs.clear();
    if (sparse == 0) {
        w.runs.emplace_back(0, w.length);
        return;
    }
    std::span<const uint8_t> b(w.data.data(), static_cast<size_t>(w.length));
    uint64_t zero_from = 0;
    bool in_zero = false;
    auto add_data = [&](uint64_t from, uint64_t to) {
        if (from >= to) return;
        if (!w.runs.empty() && w.runs.back().second == from) w.runs.back().second = to;
        else w.runs.emplace_back(from, to);
    };
    for (uint64_t pos = 0; pos < w.length;) {
        const uint64_t n = std::min(unit, w.length - pos);
        const bool zero = util::is_zero(b.subspan(static_cast<size_t>(pos), static_cast<size_t>(n)));
        if (zero && !in_zero) {
            zero_from = pos;
            in_zero = true;
        } else if (!zero && in_zero) {
            if (pos - zero_from < sparse) add_data(zero_from, pos);  // too short to leave sparse
            in_zero = false;
        }
        if (!zero) add_data(pos, pos + n);
        pos += n;
    }
    if (in_zero && w.length - zero_from < sparse) add_data(zero_from, w.length);
}

// Parallel inflation for the reader ----------------------------------------------------------------------
// A streamOptimized VMDK or a qcow2 with compressed clusters inflates at one core's speed when read()
// decodes it on the reader thread, and that is the whole conversion's speed. So the reader maps each
// window with map_stored(), copies what is stored plainly, reads the stored bytes of each compressed unit
// (positional I/O), and leaves the decoding to inflater threads, which call the device's thread-safe
// inflate_unit(). Windows still reach the writer in order: a window is ready once its last unit is decoded
// (the thread that decodes it also finds its zero runs). Memory stays what the window slots hold: their
// data, plus at most about as many stored bytes (backends cap a unit's stored size).
class Inflater {
public:
    Inflater(const BlockDevice& src, WindowQueue& q, uint64_t unit, uint64_t sparse, unsigned threads)
        : src_(src), q_(q), unit_(unit), sparse_(sparse), threads_(std::max(1u, threads)) {}
    ~Inflater() { (void)finish(); }

    // Reader: queue a filled window for the writer, in order. One without compressed units is complete (its
    // runs are found here); the others are queued first, so the writer keeps the order, and wait for `ready`.
    void dispatch(std::unique_ptr<Window> w) {
        Window* raw = w.get();
        const bool complete = raw->jobs.empty();
        raw->ready = complete;
        if (complete) find_runs(*raw, unit_, sparse_);
        q_.push_full(std::move(w));
        if (!complete) submit(raw);
    }
    bool failed() {
        std::lock_guard l(mu_);
        return !error_.ok();
    }
    // Reader: wait until every submitted unit is decoded, stop the threads; the first failure, if any.
    Status finish() {
        {
            std::unique_lock l(mu_);
            cv_.wait(l, [&] { return outstanding_ == 0; });
            quit_ = true;
            cv_.notify_all();
        }
        for (auto& t : pool_) t.join();
        pool_.clear();
        std::lock_guard l(mu_);
        return error_;
    }

private:
    // Decode the window's jobs on the pool, then hand it to the writer.
    void submit(Window* w) {
        std::lock_guard l(mu_);
        if (pool_.empty())
            for (unsigned t = 0; t < threads_; ++t) pool_.emplace_back([this] { work(); });
        w->pending = w->jobs.size();
        for (size_t i = 0; i < w->jobs.size(); ++i) todo_.emplace_back(w, i);
        outstanding_ += w->jobs.size();
        cv_.notify_all();
    }
    void work() {
        std::vector<uint8_t> scratch;
        for (;;) {
            std::pair<Window*, size_t> item;
            {
                std::unique_lock l(mu_);
                cv_.wait(l, [&] { return quit_ || !todo_.empty(); });
                if (todo_.empty()) return;
                item = todo_.front();
                todo_.pop_front();
            }
            auto [w, i] = item;
            const InflateJob& j = w->jobs[i];
            Status st = failed() ? ok() : run(*w, j, scratch);
            // A failed unit's window is never released to the writer, which waits for it; the reader may be
            // waiting for a free window at the same moment. Stopping the queue wakes the reader, which then
            // ends, and finish() hands the writer this error.
            if (!st) q_.stop();
            bool last;
            {
                std::lock_guard l(mu_);
                if (!st && error_.ok()) error_ = st;
                last = --w->pending == 0;
            }
            // The window is complete: find its runs here, off the reader's thread, and release it. After a
            // failure it is never released: the writer stops at it when the reader reports the error.
            if (last && !failed()) {
                find_runs(*w, unit_, sparse_);
                q_.mark_ready(w);
            }
            std::lock_guard l(mu_);
            --outstanding_;
            cv_.notify_all();
        }
    }
    Status run(Window& w, const InflateJob& j, std::vector<uint8_t>& scratch) const {
        return inflate_job(src_, j, w.stored.data(), w.data.data(), scratch);
    }

    const BlockDevice& src_;
    WindowQueue& q_;
    const uint64_t unit_;
    const uint64_t sparse_;
    const unsigned threads_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::pair<Window*, size_t>> todo_;
    size_t outstanding_ = 0;
    bool quit_ = false;
    Status error_;
    std::vector<std::thread> pool_;
};

// Fill data from the source at `start`: plain ranges with read() now, compressed units of
// the top layer as jobs (their stored bytes read now, nearby units in one read). The backends cap each unit's
// stored size, and a gap read along is never larger than the unit after it, so a window's stored bytes stay
// within about twice its units' cap however hostile the layout.
Status collect_units(BlockDevice& src, uint64_t start, std::span<uint8_t> data, std::vector<uint8_t>& stored,
                     std::vector<InflateJob>& jobs) {
    jobs.clear();
    stored.clear();
    const uint64_t end = start + data.size();
    // Pending read of stored bytes: [run_host, run_host + run_len) of run_file into stored[run_at, ...).
    File* run_file = nullptr;
    uint64_t run_host = 0, run_len = 0;
    size_t run_at = 0;
    auto flush_run = [&]() -> Status {
        if (run_len)
            VDISK_TRY(read_zero_fill(*run_file, run_host, std::span<uint8_t>(stored.data() + run_at, run_len)));
        run_len = 0;
        return ok();
    };
    uint64_t plain = start;  // start of the plain range not yet read
    auto read_plain = [&](uint64_t upto) -> Status {
        if (upto > plain)
            VDISK_TRY(
                src.read(plain, std::span<uint8_t>(data.data() + (plain - start), static_cast<size_t>(upto - plain))));
        return ok();
    };
    for (uint64_t p = start; p < end;) {
        VDISK_ASSIGN(StoredExtent m, src.map_stored(p, end - p));
        if (m.kind != StoredKind::compressed) {
            p += m.length;
            continue;  // read with its neighbours by read_plain: read() handles zeros and the backing
        }
        VDISK_TRY(read_plain(p));
        uint64_t upto = std::min({end, m.offset + m.length, src.size()});
        InflateJob j;
        j.unit = m;
        j.skip = p - m.offset;
        j.dest = static_cast<size_t>(p - start);
        j.length = static_cast<size_t>(upto - p);
        // Stored bytes: extend the pending read when this unit starts inside it or shortly after it in the
        // same file (qcow2 packs compressed clusters byte after byte and their sector-rounded lengths
        // overlap the next one; VMDK grains follow each other behind their markers), so a run of units
        // costs one read.
        constexpr uint64_t kGap = 4096;
        bool joins = run_len && run_file == m.file && m.host_offset >= run_host &&
                     m.host_offset <= run_host + run_len + std::min(kGap, m.host_length);
        if (!joins) {
            VDISK_TRY(flush_run());
            run_file = m.file;
            run_host = m.host_offset;
            run_at = stored.size();
        }
        uint64_t new_len = std::max(run_len, m.host_offset + m.host_length - run_host);
        j.at = run_at + static_cast<size_t>(m.host_offset - run_host);
        j.stored_length = static_cast<size_t>(m.host_length);
        stored.resize(run_at + static_cast<size_t>(new_len));
        run_len = new_len;
        jobs.push_back(j);
        p = upto;
        plain = p;
    }
    VDISK_TRY(flush_run());
    return read_plain(end);
}

// Where the data window for the data at `off` (`len` bytes, then following data extents) ends: at most `chunk`
// bytes from the unit holding `off`, on a unit boundary or the device's end.
Result<uint64_t> data_window_end(BlockDevice& src, uint64_t off, uint64_t len, uint64_t unit, uint64_t chunk, bool scan,
                                 const ConvertOptions& o) {
    const uint64_t size = src.size();
    const uint64_t limit = std::min(size, util::align_down(off, unit) + chunk);
    uint64_t data_end = std::min(limit, off + len);
    while (data_end < limit) {
        VDISK_ASSIGN(MappedExtent n, map_source(src, data_end, limit - data_end, scan, o));
        if (!n.data) break;
        data_end += n.length;
    }
    return std::min({limit, util::align_up(data_end, unit).value_or(size), size});
}

// The reader's walk: one window per hole, data windows read and handed to the inflaters.
Status walk_windows(BlockDevice& src, uint64_t unit, uint64_t chunk, const ConvertOptions& o, bool scan, WindowQueue& q,
                    Inflater& inflater) {
    const uint64_t size = src.size();
    for (uint64_t off = 0; off < size;) {
        VDISK_TRY(check_cancel(o));
        if (q.stopped() || inflater.failed()) return ok();
        VDISK_ASSIGN(MappedExtent m, map_source(src, off, size - off, scan, o));
        auto w = q.take_free();
        if (!w) return ok();
        w->runs.clear();
        w->jobs.clear();
        w->ready = true;
        w->hole = !m.data;
        if (w->hole) {
            w->start = off;
            w->length = m.length;
            q.push_full(std::move(w));
            off += m.length;
            continue;
        }
        w->start = util::align_down(off, unit);
        VDISK_ASSIGN(off, data_window_end(src, off, m.length, unit, chunk, scan, o));
        w->length = off - w->start;
        w->data.resize(static_cast<size_t>(chunk));
        // --salvage reads through read() sector by sector where it fails; otherwise compressed units of
        // the top layer are inflated on the inflater threads.
        const std::span<uint8_t> data(w->data.data(), static_cast<size_t>(w->length));
        Status st = o.salvage ? read_source(src, w->start, data, o)
                              : collect_units(src, w->start, data, w->stored, w->jobs);
        if (!st) {
            q.give_back(std::move(w));
            return st;
        }
        inflater.dispatch(std::move(w));
    }
    return ok();
}

Status read_windows(BlockDevice& src, uint64_t unit, uint64_t chunk, const ConvertOptions& o, const TargetMode& t,
                    WindowQueue& q) {
    const unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
    Inflater inflater(src, q, unit, t.backing ? 0 : t.sparse, threads);
    Status st = walk_windows(src, unit, chunk, o, t.sparse != 0, q, inflater);
    // Windows handed to the inflaters are decoded before the reader reports its end.
    Status inflated = inflater.finish();
    if (!st) return st;
    return inflated;
}

// The part of the engine that touches the target, shared by both pipelines: writes (rate-limited), zeroing
// of what the target does not read as zeros already, and the backing comparison.
class TargetWriter {
public:
    TargetWriter(BlockDevice& dst, const ConvertOptions& o, const TargetMode& t)
        : dst_(dst), t_(t), rate_(o.rate_limit) {}

    Status write(uint64_t off, std::span<const uint8_t> data) {
        if (t_.backing) return write_differing(off, data);
        VDISK_TRY(dst_.write(off, data));
        rate_.account(data.size());
        return ok();
    }

    // [off, off+len) reads as zeros in the source.
    Status zeros(uint64_t off, uint64_t len) {
        if (len == 0) return ok();
        if (t_.backing) {
            // Only where the target's chain holds something else than zeros.
            for (uint64_t p = off; p < off + len;) {
                VDISK_ASSIGN(MappedExtent m, map_extent(dst_, p, off + len - p));
                if (m.data) VDISK_TRY(dst_.write_zeroes(p, m.length, true));
                p += m.length;
            }
            return ok();
        }
        if (t_.zero_init) return ok();
        return dst_.write_zeroes(off, len, true);
    }

private:
    // With a backing file: compare with what the target reads now (its backing, since nothing was written
    // there yet) in units of the target's granularity and write only the units that differ.
    Status write_differing(uint64_t off, std::span<const uint8_t> data) {
        const uint64_t unit = std::max<uint64_t>(dst_.write_granularity(), 512);
        cur_.resize(data.size());
        VDISK_TRY(dst_.read(off, cur_));
        const uint64_t total = data.size();
        uint64_t run_from = 0;
        bool in_run = false;
        auto flush = [&](uint64_t to) -> Status {
            in_run = false;
            VDISK_TRY(dst_.write(off + run_from,
                                 data.subspan(static_cast<size_t>(run_from), static_cast<size_t>(to - run_from))));
            rate_.account(to - run_from);
            return ok();
        };
        for (uint64_t p = 0; p < total; p += unit) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(unit, total - p));
            const bool differs = std::memcmp(data.data() + p, cur_.data() + p, n) != 0;
            if (differs && !in_run) {
                run_from = p;
                in_run = true;
            } else if (!differs && in_run) {
                VDISK_TRY(flush(p));
            }
        }
        if (in_run) VDISK_TRY(flush(total));
        return ok();
    }

    BlockDevice& dst_;
    const TargetMode& t_;
    RateLimiter rate_;
    std::vector<uint8_t> cur_;
};

Status copy_plain(BlockDevice& src, BlockDevice& dst, const ConvertOptions& o, const TargetMode& t) {
    // 4 KiB zero detection keeps raw targets as sparse as the host file system allows.
    const uint64_t unit = std::max<uint64_t>(dst.write_granularity(),
                                             std::min<uint64_t>(std::max<uint64_t>(t.sparse, 512), 4096));
    const uint64_t chunk = std::max(unit, util::align_up(std::max<uint64_t>(o.chunk_size, unit), unit).value_or(unit));
    WindowQueue q(4);
    std::thread reader([&] { q.finish(guarded([&] { return read_windows(src, unit, chunk, o, t, q); })); });
    TargetWriter out(dst, o, t);
    uint64_t fed = 0;
    Status st = guarded([&]() -> Status {
        while (auto w = q.take_full()) {
            // Holes reach the content sink as the zeros between data windows.
            Status s = w->hole ? out.zeros(w->start, w->length)
                               : feed_sink(o.content_sink, fed, w->start,
                                           std::span<const uint8_t>(w->data.data(), static_cast<size_t>(w->length)));
            if (s && !w->hole) {
                uint64_t pos = 0;
                for (auto& [b, e] : w->runs) {
                    s = out.zeros(w->start + pos, b - pos);
                    if (s)
                        s = out.write(w->start + b,
                                      std::span<const uint8_t>(w->data.data() + b, static_cast<size_t>(e - b)));
                    if (!s) break;
                    pos = e;
                }
                if (s) s = out.zeros(w->start + pos, w->length - pos);
            }
            if (s) s = check_cancel(o);
            if (s) s = o.progress(w->start + w->length, src.size());
            q.give_back(std::move(w));
            if (!s) return s;
        }
        return ok();
    });
    q.stop();
    reader.join();
    return finish_copy(std::move(st), q, o, fed, src.size());
}

// Compressed copy: the target compresses whole chunks of compress_granularity() bytes. Three stages overlap:
// a reader thread reads chunks (skipping what the chain says is unallocated or zero, and all-zero buffers),
// `threads` workers compress them, and the calling thread writes the results in offset order (or as they
// complete, with -W, where the format allows it). A fixed number of chunks is in flight, so memory is
// bounded by the chunk size, not by the image.
struct Chunk {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool zero = false;       // reads as zeros: nothing to compress
    bool scan_zero = false;  // the worker finds out whether it is zero once its units are inflated
    std::vector<uint8_t> raw;
    // Compressed units of the source still to be inflated into `raw` by the worker (see collect_units).
    std::vector<InflateJob> jobs;
    std::vector<uint8_t> stored;
    Result<std::vector<uint8_t>> packed = std::vector<uint8_t>{};
    bool ready = false;
};

class ChunkPipeline : public PipelineControl {
public:
    ChunkPipeline(size_t slots, bool any_order) : slots_(slots), any_order_(any_order) {}

    // Reader: blocks while `slots_` chunks are in flight. Returns false when stopped.
    bool push(std::unique_ptr<Chunk> c) {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return stop_ || inflight_ < slots_; });
        if (stop_) return false;
        ++inflight_;
        order_.push_back(c.get());
        if (c->zero) c->ready = true;
        else todo_.push_back(c.get());
        owned_.push_back(std::move(c));
        cv_.notify_all();
        return true;
    }
    // Worker: next chunk to compress, nullptr when there is nothing left.
    Chunk* take_work() {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return stop_ || !todo_.empty() || done_; });
        if (stop_ || todo_.empty()) return nullptr;
        Chunk* c = todo_.front();
        todo_.pop_front();
        return c;
    }
    void work_done(Chunk* c) {
        std::lock_guard l(mu_);
        c->ready = true;
        cv_.notify_all();
    }
    // Writer: the next chunk in offset order once compressed (any ready chunk with any_order); nullptr at
    // the end.
    std::unique_ptr<Chunk> take_next() {
        std::unique_lock l(mu_);
        auto next = [&]() -> std::deque<Chunk*>::iterator {
            if (order_.empty()) return order_.end();
            if (!any_order_) return order_.front()->ready ? order_.begin() : order_.end();
            return std::find_if(order_.begin(), order_.end(), [](Chunk* c) { return c->ready; });
        };
        cv_.wait(l, [&] { return stop_ || next() != order_.end() || (order_.empty() && done_); });
        auto it = next();
        if (stop_ || it == order_.end()) return nullptr;
        Chunk* c = *it;
        order_.erase(it);
        --inflight_;
        auto o = std::find_if(owned_.begin(), owned_.end(), [&](auto& p) { return p.get() == c; });
        auto out = std::move(*o);
        owned_.erase(o);
        cv_.notify_all();
        return out;
    }
    // Chunks go back to the reader once written, so their buffers are allocated once per slot.
    void recycle(std::unique_ptr<Chunk> c) {
        std::lock_guard l(mu_);
        spare_.push_back(std::move(c));
    }
    std::unique_ptr<Chunk> spare() {
        std::lock_guard l(mu_);
        if (spare_.empty()) return std::make_unique<Chunk>();
        auto c = std::move(spare_.back());
        spare_.pop_back();
        return c;
    }

private:
    const size_t slots_;
    const bool any_order_;
    size_t inflight_ = 0;
    std::deque<Chunk*> order_, todo_;
    std::vector<std::unique_ptr<Chunk>> owned_, spare_;
};

// A recycled chunk for [off, off + len), not ready yet; its buffer sized for the data (empty for a zero chunk).
std::unique_ptr<Chunk> fresh_chunk(ChunkPipeline& pipe, uint64_t off, uint64_t len, bool zero) {
    auto c = pipe.spare();
    c->ready = false;
    c->zero = zero;
    c->offset = off;
    c->length = len;
    c->raw.resize(zero ? 0 : static_cast<size_t>(len));
    return c;
}

// Where the run of whole chunks of `g` bytes at `off` that read as zeros everywhere in the chain ends (the
// device's end counts as a chunk boundary); `off` when there is none.
Result<uint64_t> zero_chunks_end(BlockDevice& src, uint64_t off, uint64_t g, bool scan, const ConvertOptions& o) {
    const uint64_t size = src.size();
    VDISK_ASSIGN(MappedExtent m, map_source(src, off, size - off, scan, o));
    if (m.data) return off;
    return m.length >= size - off ? size : util::align_down(off + m.length, g);
}

// Whether [off, off + len) holds data anywhere in the chain.
Result<bool> chunk_has_data(BlockDevice& src, uint64_t off, uint64_t len, bool scan, const ConvertOptions& o) {
    for (uint64_t p = off; p < off + len;) {
        VDISK_ASSIGN(MappedExtent m, map_source(src, p, off + len - p, scan, o));
        if (m.data) return true;
        p += m.length;
    }
    return false;
}

// Compressed units of the source are inflated by the workers, next to the compression, so a
// compressed-to-compressed convert decodes on every core; --salvage reads sector by sector. A chunk with units
// is found zero (or not) by its worker once they are inflated.
Status fill_chunk(BlockDevice& src, Chunk& c, bool scan, const ConvertOptions& o) {
    c.jobs.clear();
    if (o.salvage) VDISK_TRY(read_source(src, c.offset, c.raw, o));
    else VDISK_TRY(collect_units(src, c.offset, c.raw, c.stored, c.jobs));
    c.scan_zero = scan && !c.jobs.empty();
    c.zero = scan && c.jobs.empty() && util::is_zero(c.raw);
    return ok();
}

Status read_chunks(BlockDevice& src, uint64_t g, const ConvertOptions& o, const TargetMode& t, ChunkPipeline& pipe) {
    const uint64_t size = src.size();
    // Zero ranges matter to a target that does not read zeros there by itself.
    const bool report_zeros = !t.zero_init || t.backing;
    const bool scan = t.sparse != 0;
    for (uint64_t off = 0; off < size;) {
        VDISK_TRY(check_cancel(o));
        if (pipe.stopped()) return ok();
        // Jump over whole chunks that read as zeros everywhere in the chain (a 2 TiB sparse disk is mostly
        // this) with one lookup per extent, not one per chunk.
        VDISK_ASSIGN(const uint64_t skip_to, zero_chunks_end(src, off, g, scan, o));
        const uint64_t len = skip_to > off ? skip_to - off : std::min(g, size - off);
        // Skip chunks that read as zeros everywhere in the chain without reading them.
        VDISK_ASSIGN(const bool any_data, skip_to > off ? Result<bool>(false) : chunk_has_data(src, off, len, scan, o));
        if (!any_data) {
            if (report_zeros && !pipe.push(fresh_chunk(pipe, off, len, true))) return ok();
        } else {
            auto c = fresh_chunk(pipe, off, len, false);
            VDISK_TRY(fill_chunk(src, *c, scan, o));
            if ((!c->zero || report_zeros) && !pipe.push(std::move(c))) return ok();
        }
        off += len;
    }
    return ok();
}

// A worker: inflate each chunk's compressed source units, then compress it for the target (or find it zero).
void compress_chunks(const BlockDevice& src, const BlockDevice& dst, ChunkPipeline& pipe) {
    std::vector<uint8_t> scratch;
    while (Chunk* c = pipe.take_work()) {
        try {
            Status inflated;
            for (const InflateJob& j : c->jobs) {
                inflated = inflate_job(src, j, c->stored.data(), c->raw.data(), scratch);
                if (!inflated) break;
            }
            if (!inflated) c->packed = std::move(inflated).error();
            else if (c->scan_zero && util::is_zero(c->raw)) c->zero = true;
            else c->packed = dst.compress_chunk(c->raw);
        } catch (const std::exception& e) {
            c->packed = make_error(ErrorCode::io, std::string("compress: ") + e.what());
        }
        pipe.work_done(c);
    }
}

// The writer's part of one chunk: zeros, the raw data where compressing did not pay or the target compares
// with its backing chain, else the compressed data. Zero chunks reach the content sink as the zeros between
// data chunks.
Status store_chunk(Chunk& c, BlockDevice& dst, TargetWriter& out, RateLimiter& rate, const TargetMode& t,
                   const ConvertOptions& o, uint64_t& fed) {
    if (c.zero) return out.zeros(c.offset, c.length);
    VDISK_TRY(feed_sink(o.content_sink, fed, c.offset, c.raw));
    if (!c.packed) return std::move(c.packed).error();
    if (t.backing || c.packed->empty()) return out.write(c.offset, c.raw);
    Status s = dst.write_compressed_chunk(c.offset, *c.packed, c.length);
    rate.account(c.packed->size());
    return s;
}

Status copy_compressed(BlockDevice& src, BlockDevice& dst, const ConvertOptions& o, const TargetMode& t) {
    const uint64_t size = src.size();
    const uint64_t g = dst.compress_granularity();
    const unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
    // Enough chunks in flight to keep every worker busy while the writer waits for the oldest one: 16 MiB
    // of raw data (plus as much compressed) whatever the cluster size. A 64 KiB cluster compresses in well
    // under a millisecond, so with only a few chunks queued each hand-off waits for the scheduler on a busy
    // machine (measured with zstd on 2 loaded cores: 32 chunks 12 s, 128 chunks 9 s, 512 chunks 7 s).
    const size_t slots = static_cast<size_t>(std::max<uint64_t>(threads + 2, (16u << 20) / g));
    // Out of order only where nothing depends on the order: not a stream, not a backing comparison.
    const bool any_order = o.out_of_order && !dst.sequential_writes_only() && !t.backing && !o.content_sink;
    ChunkPipeline pipe(slots, any_order);
    std::thread reader([&] { pipe.finish(guarded([&] { return read_chunks(src, g, o, t, pipe); })); });
    std::vector<std::thread> workers;
    for (unsigned i = 0; i < threads; ++i) workers.emplace_back([&] { compress_chunks(src, dst, pipe); });
    TargetWriter out(dst, o, t);
    RateLimiter rate(t.backing ? 0 : o.rate_limit);
    uint64_t done = 0, fed = 0;
    Status st = guarded([&]() -> Status {
        while (auto c = pipe.take_next()) {
            Status s = store_chunk(*c, dst, out, rate, t, o, fed);
            if (s) s = check_cancel(o);
            done = std::max(done, c->offset + c->length);
            if (s) s = o.progress(done, size);
            pipe.recycle(std::move(c));
            if (!s) return s;
        }
        return ok();
    });
    pipe.stop();
    reader.join();
    for (auto& w : workers) w.join();
    return finish_copy(std::move(st), pipe, o, fed, size);
}

Status copy(BlockDevice& src, BlockDevice& dst, const ConvertOptions& o, TargetMode t) {
    if (o.compress && dst.compress_granularity() == 0)
        return make_error(ErrorCode::unsupported,
                          "output format " + o.output_format + " does not support compression (-c)");
    t.backing = dst.backing() != nullptr;
    const bool compressed = (o.compress || dst.compresses_every_write()) && dst.compress_granularity() != 0;
    return compressed ? copy_compressed(src, dst, o, t) : copy_plain(src, dst, o, t);
}

CreateOptions target_options(const BlockDevice& source, const ConvertOptions& o) {
    CreateOptions c = o.create;
    c.size = source.size();
    if (!o.backing_file.empty()) c.set("backing_file", o.backing_file);
    if (!o.backing_format.empty()) c.set("backing_fmt", o.backing_format);
    return c;
}

// Create the image on `fs` (a staging, device or plain file system), copy, close.
Status create_and_copy(const Registry& registry, BlockDevice& source, FileSystem& fs, const std::string& name,
                       const ConvertOptions& o, TargetMode t) {
    VDISK_ASSIGN(auto dst, create_image(registry, fs, name, o.output_format, target_options(source, o)));
    VDISK_TRY(copy(source, *dst, o, t));
    return dst->close();
}

Status convert_into_existing(const Registry& registry, BlockDevice& source, FileSystem& fs, const std::string& name,
                             const ConvertOptions& o) {
    OpenOptions oo;
    oo.format = o.output_format;
    oo.read_write = true;
    VDISK_ASSIGN(OpenedImage img, open_image(registry, fs, name, oo));
    if (img.device->size() < source.size()) {
        Error e = make_error(ErrorCode::out_of_range, "the existing target (-n) is smaller than the source: " +
                                                          std::to_string(img.device->size()) + " < " +
                                                          std::to_string(source.size()) + " bytes");
        e.file = name;
        return e;
    }
    TargetMode t;
    t.zero_init = o.target_is_zero;
    t.sparse = o.sparse_size;
    VDISK_TRY(copy(source, *img.device, o, t));
    return img.device->close();
}

}  // namespace

Status convert(const Registry& registry, BlockDevice& source, FileSystem& fs, std::string_view dest_name,
               const ConvertOptions& options) {
    const ConvertOptions& o = options;
    if (o.sparse_size % 512 != 0)
        return make_error(ErrorCode::invalid_argument,
                          "sparse size " + std::to_string(o.sparse_size) + " is not a multiple of 512");
    if (o.target_is_zero && !o.existing_target)
        return make_error(ErrorCode::invalid_argument, "target_is_zero needs existing_target (-n)");
    VDISK_ASSIGN(const Format* fmt, registry.lookup(o.output_format));
    TargetMode t;
    t.sparse = o.sparse_size;
    VDISK_ASSIGN(FileStat st, fs.stat(dest_name));
    const std::string& target = st.resolved;
    if (o.existing_target) return convert_into_existing(registry, source, fs, target, o);

    auto named = [&](Status s) -> Status {
        if (!s && s.error().file.empty()) s.error().file = std::string(dest_name);
        return s;
    };
    const CreateOptions copts = target_options(source, o);
    switch (st.kind) {
        case FileKind::directory:
        case FileKind::other: {
            Error e = make_error(ErrorCode::invalid_argument, "the target is not a file, device or pipe");
            e.file = std::string(dest_name);
            return e;
        }
        case FileKind::char_device:
        case FileKind::fifo: {
            if (!fmt->can_stream(copts)) {
                Error e = make_error(ErrorCode::unsupported,
                                     "the target is a pipe or character device, which is written strictly forward; " +
                                         std::string(fmt->name()) +
                                         " with these options is not (raw and streamOptimized VMDK are)");
                e.file = std::string(dest_name);
                return e;
            }
            if (fs.is_stream()) return named(create_and_copy(registry, source, fs, target, o, t));
            VDISK_ASSIGN(auto sfs, fs.open_stream(target));
            return named(create_and_copy(registry, source, *sfs, target, o, t));
        }
        case FileKind::block_device: {
            auto dfs = make_device_file_system(fs, target, st.size, o.target_is_zero);
            return named(create_and_copy(registry, source, *dfs, target, o, t));
        }
        case FileKind::regular:
            if (!st.replaceable) return named(create_and_copy(registry, source, fs, target, o, t));
            break;
        case FileKind::missing: break;
    }
    // A new file, or one that a renamed new file replaces without loss: nothing is visible under the target's
    // name until the whole image is written and synced; on any failure `stage` removes the temporary file.
    StagingFileSystem stage(fs);
    VDISK_TRY(named(create_and_copy(registry, source, stage, target, o, t)));
    return named(stage.commit(o.sync));
}

}  // namespace vdisk
