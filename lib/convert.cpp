// The one conversion engine: walk the source's allocation through its chain, copy what holds data,
// skip what reads as zeros, optionally compress on worker threads, and publish the target atomically.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {
namespace {

bool cancelled(const ConvertOptions& o) { return o.cancel && o.cancel->load(); }

Error cancel_error() { return make_error(ErrorCode::io, "conversion cancelled"); }

// Plain copy, extent-driven and pipelined. A reader thread walks the source's allocation through its chain,
// skips what reads as zeros without reading it, reads data in windows aligned to the target's unit (so the
// target never has to read-modify-write, which a streamOptimized VMDK cannot), and finds the all-zero units
// inside; the calling thread writes the non-zero runs in increasing order. At most kSlots windows are in
// flight, so memory is bounded whatever the image size.
struct InflateJob;
struct Window {
    uint64_t start = 0;
    uint64_t length = 0;
    std::vector<uint8_t> data;
    std::vector<std::pair<uint64_t, uint64_t>> runs;  // non-zero [begin, end) relative to start
    // Reader side: compressed units still to be inflated into `data` (see fill_window), their stored bytes,
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

// The non-zero runs of a filled window, in units of `unit` bytes.
void find_runs(Window& w, uint64_t unit) {
    w.runs.clear();
    std::span<const uint8_t> b(w.data.data(), static_cast<size_t>(w.length));
    for (uint64_t pos = 0; pos < w.length;) {
        uint64_t n = std::min(unit, w.length - pos);
        if (!util::is_zero(b.subspan(static_cast<size_t>(pos), static_cast<size_t>(n)))) {
            if (!w.runs.empty() && w.runs.back().second == pos) w.runs.back().second = pos + n;
            else w.runs.emplace_back(pos, pos + n);
        }
        pos += n;
    }
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
        full_.erase(full_.begin());
        return w;
    }
    void give_back(std::unique_ptr<Window> w) {
        std::lock_guard l(mu_);
        spare_.push_back(std::move(w));
        cv_.notify_all();
    }
private:
    size_t free_;
    std::vector<std::unique_ptr<Window>> spare_, full_;
};

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
    Inflater(const BlockDevice& src, WindowQueue& q, uint64_t unit, unsigned threads)
        : src_(src), q_(q), unit_(unit), threads_(std::max(1u, threads)) {}
    ~Inflater() { (void)finish(); }

    // Reader: decode the window's jobs on the pool, then hand it to the writer.
    void submit(Window* w) {
        std::lock_guard l(mu_);
        if (pool_.empty())
            for (unsigned t = 0; t < threads_; ++t) pool_.emplace_back([this] { work(); });
        w->pending = w->jobs.size();
        for (size_t i = 0; i < w->jobs.size(); ++i) todo_.emplace_back(w, i);
        outstanding_ += w->jobs.size();
        cv_.notify_all();
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
            bool last;
            {
                std::lock_guard l(mu_);
                if (!st && error_.ok()) error_ = st;
                last = --w->pending == 0;
            }
            // The window is complete: find its runs here, off the reader's thread, and release it. After a
            // failure it is never released: the writer stops at it when the reader reports the error.
            if (last && !failed()) {
                find_runs(*w, unit_);
                q_.mark_ready(w);
            }
            std::lock_guard l(mu_);
            --outstanding_;
            cv_.notify_all();
        }
    }
    Status run(Window& w, const InflateJob& j, std::vector<uint8_t>& scratch) const {
        std::span<const uint8_t> in(w.stored.data() + j.at, j.stored_length);
        std::span<uint8_t> dest(w.data.data() + j.dest, j.length);
        // Whole units inflate straight into the window; a unit cut by the window's edges (or the device's
        // end) goes through a scratch unit.
        if (j.skip == 0 && j.length == j.unit.length) return src_.inflate_unit(j.unit, in, dest);
        scratch.resize(static_cast<size_t>(j.unit.length));
        VDISK_TRY(src_.inflate_unit(j.unit, in, scratch));
        std::memcpy(dest.data(), scratch.data() + j.skip, j.length);
        return ok();
    }

    const BlockDevice& src_;
    WindowQueue& q_;
    const uint64_t unit_;
    const unsigned threads_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::pair<Window*, size_t>> todo_;
    size_t outstanding_ = 0;
    bool quit_ = false;
    Status error_;
    std::vector<std::thread> pool_;
};

// Fill w->data[0, w->length) from the source at w->start: plain ranges with read() now, compressed units of
// the top layer as jobs (their stored bytes read now, nearby units in one read). The backends cap each unit's
// stored size, and a gap read along is never larger than the unit after it, so a window's stored bytes stay
// within about twice its units' cap however hostile the layout.
Status fill_window(BlockDevice& src, Window& w) {
    w.jobs.clear();
    w.stored.clear();
    const uint64_t end = w.start + w.length;
    // Pending read of stored bytes: [run_host, run_host + run_len) of run_file into stored[run_at, ...).
    File* run_file = nullptr;
    uint64_t run_host = 0, run_len = 0;
    size_t run_at = 0;
    auto flush_run = [&]() -> Status {
        if (run_len) VDISK_TRY(read_zero_fill(*run_file, run_host, std::span<uint8_t>(w.stored.data() + run_at, run_len)));
        run_len = 0;
        return ok();
    };
    uint64_t plain = w.start;  // start of the plain range not yet read
    auto read_plain = [&](uint64_t upto) -> Status {
        if (upto > plain)
            VDISK_TRY(src.read(plain, std::span<uint8_t>(w.data.data() + (plain - w.start), static_cast<size_t>(upto - plain))));
        return ok();
    };
    for (uint64_t p = w.start; p < end;) {
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
        j.dest = static_cast<size_t>(p - w.start);
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
            run_at = w.stored.size();
        }
        uint64_t new_len = std::max(run_len, m.host_offset + m.host_length - run_host);
        j.at = run_at + static_cast<size_t>(m.host_offset - run_host);
        j.stored_length = static_cast<size_t>(m.host_length);
        w.stored.resize(run_at + static_cast<size_t>(new_len));
        run_len = new_len;
        w.jobs.push_back(j);
        p = upto;
        plain = p;
    }
    VDISK_TRY(flush_run());
    return read_plain(end);
}

Status read_windows(BlockDevice& src, uint64_t unit, uint64_t chunk, const ConvertOptions& o, WindowQueue& q) {
    const uint64_t size = src.size();
    const unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
    Inflater inflater(src, q, unit, threads);
    uint64_t off = 0;
    auto walk = [&]() -> Status {
        while (off < size) {
            if (cancelled(o)) return cancel_error();
            if (q.stopped() || inflater.failed()) return ok();
            VDISK_ASSIGN(MappedExtent m, map_extent(src, off, size - off));
            if (!m.data) {
                off += m.length;
                continue;
            }
            const uint64_t start = util::align_down(off, unit);
            const uint64_t limit = std::min(size, start + chunk);
            // Extend over following data extents up to the window limit.
            uint64_t data_end = off + m.length;
            while (data_end < limit) {
                VDISK_ASSIGN(MappedExtent n, map_extent(src, data_end, limit - data_end));
                if (!n.data) break;
                data_end += n.length;
            }
            const uint64_t end = std::min({limit, util::align_up(data_end, unit).value_or(size), size});
            auto w = q.take_free();
            if (!w) return ok();
            w->start = start;
            w->length = end - start;
            w->data.resize(static_cast<size_t>(chunk));
            w->ready = true;
            Window* raw = w.get();
            Status st = fill_window(src, *w);
            if (!st) {
                q.give_back(std::move(w));
                return st;
            }
            if (raw->jobs.empty()) {
                find_runs(*raw, unit);
                q.push_full(std::move(w));
            } else {
                // Queue it first so the writer keeps the order; it waits for `ready`.
                raw->ready = false;
                q.push_full(std::move(w));
                inflater.submit(raw);
            }
            off = end;
        }
        return ok();
    };
    Status st = walk();
    // Windows handed to the inflaters are decoded before the reader reports its end.
    Status inflated = inflater.finish();
    if (!st) return st;
    return inflated;
}

Status copy_plain(BlockDevice& src, BlockDevice& dst, const ConvertOptions& o) {
    // 4 KiB zero detection keeps raw targets as sparse as the host file system allows.
    const uint64_t unit = std::max<uint64_t>(dst.write_granularity(), 4096);
    const uint64_t chunk = std::max(unit, util::align_up(std::max<uint64_t>(o.chunk_size, unit), unit).value_or(unit));
    WindowQueue q(4);
    std::thread reader([&] { q.finish(read_windows(src, unit, chunk, o, q)); });
    Status st;
    while (auto w = q.take_full()) {
        for (auto& [b, e] : w->runs) {
            st = dst.write(w->start + b, std::span<const uint8_t>(w->data.data() + b, static_cast<size_t>(e - b)));
            if (!st) break;
        }
        if (o.progress) o.progress(w->start + w->length, src.size());
        q.give_back(std::move(w));
        if (!st) {
            q.stop();
            break;
        }
    }
    reader.join();
    if (!st) return st;
    VDISK_TRY(q.status());
    if (o.progress) o.progress(src.size(), src.size());
    return ok();
}

// Compressed copy: the target compresses whole chunks of compress_granularity() bytes. Three stages overlap:
// a reader thread reads chunks (skipping what the chain says is unallocated or zero, and all-zero buffers),
// `threads` workers compress them, and the calling thread writes the results in offset order. A fixed number
// of chunks is in flight, so memory is bounded by the chunk size, not by the image.
struct Chunk {
    uint64_t offset = 0;
    uint64_t length = 0;
    std::vector<uint8_t> raw;
    Result<std::vector<uint8_t>> packed = std::vector<uint8_t>{};
    bool ready = false;
};

class ChunkPipeline : public PipelineControl {
public:
    explicit ChunkPipeline(size_t slots) : slots_(slots) {}

    // Reader: blocks while `slots_` chunks are in flight. Returns false when stopped.
    bool push(std::unique_ptr<Chunk> c) {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return stop_ || inflight_ < slots_; });
        if (stop_) return false;
        ++inflight_;
        order_.push_back(c.get());
        todo_.push_back(c.get());
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
    // Writer: the next chunk in offset order once compressed; nullptr at the end.
    std::unique_ptr<Chunk> take_next() {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return stop_ || (!order_.empty() && order_.front()->ready) || (order_.empty() && done_); });
        if (stop_ || order_.empty()) return nullptr;
        Chunk* c = order_.front();
        order_.pop_front();
        --inflight_;
        auto it = std::find_if(owned_.begin(), owned_.end(), [&](auto& p) { return p.get() == c; });
        auto out = std::move(*it);
        owned_.erase(it);
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
    size_t inflight_ = 0;
    std::deque<Chunk*> order_, todo_;
    std::vector<std::unique_ptr<Chunk>> owned_, spare_;
};

Status read_chunks(BlockDevice& src, uint64_t g, const ConvertOptions& o, ChunkPipeline& pipe) {
    const uint64_t size = src.size();
    for (uint64_t off = 0; off < size;) {
        if (cancelled(o)) return cancel_error();
        if (pipe.stopped()) return ok();
        // Jump over whole chunks that read as zeros everywhere in the chain (a 2 TiB sparse disk is mostly
        // this) with one lookup per extent, not one per chunk.
        {
            VDISK_ASSIGN(MappedExtent m, map_extent(src, off, size - off));
            if (!m.data) {
                uint64_t skip_to = m.length >= size - off ? size : util::align_down(off + m.length, g);
                if (skip_to > off) {
                    off = skip_to;
                    continue;
                }
            }
        }
        uint64_t len = std::min(g, size - off);
        // Skip chunks that read as zeros everywhere in the chain without reading them.
        bool any_data = false;
        for (uint64_t p = off; p < off + len;) {
            VDISK_ASSIGN(MappedExtent m, map_extent(src, p, off + len - p));
            if (m.data) {
                any_data = true;
                break;
            }
            p += m.length;
        }
        if (any_data) {
            auto c = pipe.spare();
            c->ready = false;
            c->offset = off;
            c->length = len;
            c->raw.resize(static_cast<size_t>(len));
            VDISK_TRY(src.read(off, c->raw));
            if (!util::is_zero(c->raw) && !pipe.push(std::move(c))) return ok();
        }
        off += len;
    }
    return ok();
}

Status copy_compressed(BlockDevice& src, BlockDevice& dst, const ConvertOptions& o) {
    const uint64_t size = src.size();
    const uint64_t g = dst.compress_granularity();
    const unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
    // Enough chunks in flight to keep every worker busy while the writer waits for the oldest one: 16 MiB
    // of raw data (plus as much compressed) whatever the cluster size. A 64 KiB cluster compresses in well
    // under a millisecond, so with only a few chunks queued each hand-off waits for the scheduler on a busy
    // machine (measured with zstd on 2 loaded cores: 32 chunks 12 s, 128 chunks 9 s, 512 chunks 7 s).
    const size_t slots = static_cast<size_t>(std::max<uint64_t>(threads + 2, (16u << 20) / g));
    ChunkPipeline pipe(slots);
    std::thread reader([&] { pipe.finish(read_chunks(src, g, o, pipe)); });
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < threads; ++t)
        workers.emplace_back([&] {
            while (Chunk* c = pipe.take_work()) {
                c->packed = dst.compress_chunk(c->raw);
                pipe.work_done(c);
            }
        });
    Status st;
    while (auto c = pipe.take_next()) {
        if (!c->packed) st = std::move(c->packed).error();
        else if (c->packed->empty()) st = dst.write(c->offset, c->raw);
        else st = dst.write_compressed_chunk(c->offset, *c->packed, c->length);
        if (!st) break;
        if (o.progress) o.progress(c->offset + c->length, size);
        pipe.recycle(std::move(c));
    }
    pipe.stop();
    reader.join();
    for (auto& w : workers) w.join();
    if (!st) return st;
    VDISK_TRY(pipe.status());
    if (o.progress) o.progress(size, size);
    return ok();
}

}  // namespace

Status convert(const Registry& registry, BlockDevice& source, FileSystem& fs, std::string_view dest_name,
               const ConvertOptions& options) {
    StagingFileSystem stage(fs);
    CreateOptions copts = options.create;
    copts.size = source.size();
    VDISK_ASSIGN(auto dst, create_image(registry, stage, dest_name, options.output_format, copts));
    if (options.compress && dst->compress_granularity() == 0)
        return make_error(ErrorCode::unsupported,
                          "output format " + options.output_format + " does not support compression (-c)");
    const bool compressed = (options.compress || dst->compresses_every_write()) && dst->compress_granularity() != 0;
    Status st = compressed ? copy_compressed(source, *dst, options) : copy_plain(source, *dst, options);
    if (!st) return st;  // `stage` removes the partial target
    VDISK_TRY(dst->close());
    dst.reset();
    return stage.commit();
}

}  // namespace vdisk
