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
#include "vdisk/hash.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {
namespace {

bool cancelled(const ConvertOptions& o) { return o.cancel && o.cancel->load(); }

Error cancel_error() { return make_error(ErrorCode::io, "conversion cancelled"); }

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

Status finish_sink(ContentSink* sink, uint64_t fed, uint64_t size) {
    if (!sink || fed >= size) return ok();
    return sink->zeros(fed, size - fed);
}

// Plain copy, extent-driven and pipelined. A reader thread walks the source's allocation through its chain,
// skips what reads as zeros without reading it, reads data in windows aligned to the target's unit (so the
// target never has to read-modify-write, which a streamOptimized VMDK cannot), and finds the all-zero units
// inside; the calling thread writes the non-zero runs in increasing order. At most kSlots windows are in
// flight, so memory is bounded whatever the image size.
struct Window {
    uint64_t start = 0;
    uint64_t length = 0;
    std::vector<uint8_t> data;
    std::vector<std::pair<uint64_t, uint64_t>> runs;  // non-zero [begin, end) relative to start
};

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
    // Writer side: nullptr when the reader is done (check status()).
    std::unique_ptr<Window> take_full() {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return !full_.empty() || done_; });
        if (full_.empty()) return nullptr;
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

Status read_windows(BlockDevice& src, uint64_t unit, uint64_t chunk, const ConvertOptions& o, WindowQueue& q) {
    const uint64_t size = src.size();
    uint64_t off = 0;
    while (off < size) {
        if (cancelled(o)) return cancel_error();
        if (q.stopped()) return ok();
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
        w->runs.clear();
        std::span<uint8_t> b(w->data.data(), static_cast<size_t>(w->length));
        VDISK_TRY(src.read(start, b));
        for (uint64_t pos = 0; pos < w->length;) {
            uint64_t n = std::min(unit, w->length - pos);
            bool zero = util::is_zero(b.subspan(static_cast<size_t>(pos), static_cast<size_t>(n)));
            if (!zero) {
                if (!w->runs.empty() && w->runs.back().second == pos) w->runs.back().second = pos + n;
                else w->runs.emplace_back(pos, pos + n);
            }
            pos += n;
        }
        q.push_full(std::move(w));
        off = end;
    }
    return ok();
}

Status copy_plain(BlockDevice& src, BlockDevice& dst, const ConvertOptions& o) {
    // 4 KiB zero detection keeps raw targets as sparse as the host file system allows.
    const uint64_t unit = std::max<uint64_t>(dst.write_granularity(), 4096);
    const uint64_t chunk = std::max(unit, util::align_up(std::max<uint64_t>(o.chunk_size, unit), unit).value_or(unit));
    WindowQueue q(4);
    std::thread reader([&] { q.finish(read_windows(src, unit, chunk, o, q)); });
    Status st;
    uint64_t fed = 0;
    while (auto w = q.take_full()) {
        st = feed_sink(o.content_sink, fed, w->start,
                       std::span<const uint8_t>(w->data.data(), static_cast<size_t>(w->length)));
        for (auto& [b, e] : w->runs) {
            if (!st) break;
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
    VDISK_TRY(finish_sink(o.content_sink, fed, src.size()));
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
    // Enough chunks in flight to keep every worker busy while the writer waits for the oldest one,
    // capped at 32 MiB of raw data (plus as much compressed) whatever the cluster size.
    const size_t slots = static_cast<size_t>(std::max<uint64_t>(threads + 2, std::min<uint64_t>(threads * 16, (32u << 20) / g)));
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
    uint64_t fed = 0;
    while (auto c = pipe.take_next()) {
        st = feed_sink(o.content_sink, fed, c->offset, c->raw);
        if (!st) break;
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
    VDISK_TRY(finish_sink(o.content_sink, fed, size));
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
