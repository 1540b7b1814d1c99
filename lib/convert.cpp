// The one conversion engine: walk the source's allocation through its chain, copy what holds data,
// skip what reads as zeros, optionally compress on worker threads, and publish the target atomically.
#include <algorithm>
#include <thread>
#include <vector>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {
namespace {

bool cancelled(const ConvertOptions& o) { return o.cancel && o.cancel->load(); }

Error cancel_error() { return make_error(ErrorCode::io, "conversion cancelled"); }

// Plain copy: extent-driven, large reads, zero detection per 64 KiB so that zero runs inside
// allocated data stay holes in the target.
Status copy_plain(BlockDevice& src, BlockDevice& dst, const ConvertOptions& o) {
    const uint64_t size = src.size();
    const uint64_t chunk = std::max<uint64_t>(o.chunk_size, 64 * 1024);
    const uint64_t zero_unit = std::max<uint64_t>(dst.write_granularity(), 64 * 1024);
    std::vector<uint8_t> buf(static_cast<size_t>(chunk));
    uint64_t off = 0;
    while (off < size) {
        if (cancelled(o)) return cancel_error();
        VDISK_ASSIGN(MappedExtent m, map_extent(src, off, std::min(chunk, size - off)));
        if (!m.data) {
            off += m.length;
            if (o.progress) o.progress(off, size);
            continue;
        }
        std::span<uint8_t> b(buf.data(), static_cast<size_t>(m.length));
        VDISK_TRY(src.read(off, b));
        // Write the non-zero runs, aligned to zero_unit boundaries of the virtual disk.
        uint64_t pos = 0;
        while (pos < m.length) {
            uint64_t unit_end = std::min<uint64_t>(m.length, util::align_down(off + pos, zero_unit) + zero_unit - off);
            bool zero = util::is_zero(b.subspan(static_cast<size_t>(pos), static_cast<size_t>(unit_end - pos)));
            uint64_t run_end = unit_end;
            while (run_end < m.length) {
                uint64_t next_end = std::min<uint64_t>(m.length, run_end + zero_unit);
                bool z = util::is_zero(b.subspan(static_cast<size_t>(run_end), static_cast<size_t>(next_end - run_end)));
                if (z != zero) break;
                run_end = next_end;
            }
            if (!zero)
                VDISK_TRY(dst.write(off + pos, b.subspan(static_cast<size_t>(pos), static_cast<size_t>(run_end - pos))));
            pos = run_end;
        }
        off += m.length;
        if (o.progress) o.progress(off, size);
    }
    return ok();
}

// Compressed copy: the target compresses whole chunks of compress_granularity() bytes. A batch of chunks
// is read, compressed on worker threads, and written in order.
Status copy_compressed(BlockDevice& src, BlockDevice& dst, const ConvertOptions& o) {
    const uint64_t size = src.size();
    const uint64_t g = dst.compress_granularity();
    unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
    const uint64_t batch_chunks = std::max<uint64_t>(threads * 8, (4u << 20) / g);
    struct Item {
        uint64_t offset;
        uint64_t length;
        std::vector<uint8_t> raw;
        Result<std::vector<uint8_t>> packed = std::vector<uint8_t>{};
    };
    uint64_t off = 0;
    while (off < size) {
        if (cancelled(o)) return cancel_error();
        std::vector<Item> items;
        while (off < size && items.size() < batch_chunks) {
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
                Item it{off, len, std::vector<uint8_t>(static_cast<size_t>(len))};
                VDISK_TRY(src.read(off, it.raw));
                if (!util::is_zero(it.raw)) items.push_back(std::move(it));
            }
            off += len;
        }
        // Compress in parallel: thread t takes items t, t+threads, ...
        auto work = [&](unsigned t) {
            for (size_t i = t; i < items.size(); i += threads) items[i].packed = dst.compress_chunk(items[i].raw);
        };
        std::vector<std::thread> pool;
        for (unsigned t = 1; t < threads && t < items.size(); ++t) pool.emplace_back(work, t);
        work(0);
        for (auto& th : pool) th.join();
        for (auto& it : items) {
            if (!it.packed) return std::move(it.packed).error();
            if (it.packed->empty()) VDISK_TRY(dst.write(it.offset, it.raw));
            else VDISK_TRY(dst.write_compressed_chunk(it.offset, *it.packed, it.length));
        }
        if (o.progress) o.progress(off, size);
    }
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
    Status st = options.compress ? copy_compressed(source, *dst, options) : copy_plain(source, *dst, options);
    if (!st) return st;  // `stage` removes the partial target
    VDISK_TRY(dst->close());
    dst.reset();
    return stage.commit();
}

}  // namespace vdisk
