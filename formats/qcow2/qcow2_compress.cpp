// SPDX-License-Identifier: Apache-2.0
// qcow2 compressed clusters: raw deflate (window bits -12, as QEMU writes them) or zstd frames.
// Decompression is bounded to exactly one cluster; trailing bytes of the last sector are ignored.
#include <zstd.h>

#include <string>

#include "qcow2_internal.hpp"
#include "util/bytes.hpp"

namespace vdisk::qcow2 {

bool decompress_cluster(std::span<const uint8_t> in, std::span<uint8_t> out, uint8_t type) {
    if (type == kCompressionZlib) return util::inflate_into(in, out, true);
    // One decompression context per thread (the convert reader inflates clusters on several), reset per
    // cluster: creating one costs more than decoding a small cluster.
    struct Holder {
        ZSTD_DCtx* d = ZSTD_createDCtx();
        ~Holder() { ZSTD_freeDCtx(d); }
    };
    thread_local Holder holder;
    ZSTD_DCtx* dctx = holder.d;
    if (!dctx || ZSTD_isError(ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only))) return false;
    // The stored size is rounded up to sectors, so the input may hold padding after the frame: stream
    // until the cluster is full or the frame ends, never past the output buffer.
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    ZSTD_outBuffer ob{out.data(), out.size(), 0};
    for (;;) {
        size_t r = ZSTD_decompressStream(dctx, &ob, &ib);
        if (ZSTD_isError(r)) return false;
        if (ob.pos == ob.size) return true;
        if (r == 0 || ib.pos == ib.size) return false;  // frame ended (or input ran out) before the cluster was full
    }
}

Result<std::vector<uint8_t>> compress_cluster(std::span<const uint8_t> in, uint8_t type) {
    std::vector<uint8_t> out;
    // Data deflate/zstd cannot shrink is stored as a normal cluster, as qemu does when compression fails
    // to gain; probing first saves compressing it only to throw the result away.
    if (util::likely_incompressible(in, type == kCompressionZlib ? 4096 : in.size())) return out;
    if (type == kCompressionZlib) {
        // zlib level 4 (memLevel 8) with the 4 KiB window qemu's decoder requires (see util::deflate_into).
        // On 64 KiB clusters of real system files (bench/deflate_tune.cpp): +1.6 % of qemu's level 6 size at
        // 1.6x its speed per core; level 3 is +4.8 %; ISA-L with a 4 KiB history is 5-10x faster but +7 % even
        // at its best level, and libdeflate cannot limit its window.
        if (!util::deflate_into(in, out, true, 4, in.size() - 1)) out.clear();  // did not shrink
        return out;
    }
    out.resize(ZSTD_compressBound(in.size()));
    // One compression context per worker thread: ZSTD_compress() would set up (and zero) a fresh one for
    // every cluster, which costs about as much as compressing it.
    struct Holder {
        ZSTD_CCtx* c = ZSTD_createCCtx();
        ~Holder() { ZSTD_freeCCtx(c); }
    };
    thread_local Holder holder;
    if (!holder.c) return make_error(ErrorCode::io, "zstd: out of memory");
    size_t r = ZSTD_compressCCtx(holder.c, out.data(), out.size(), in.data(), in.size(), 3);
    if (ZSTD_isError(r))
        return make_error(ErrorCode::io, std::string("zstd compression failed: ") + ZSTD_getErrorName(r));
    if (r >= in.size()) return std::vector<uint8_t>{};
    out.resize(r);
    return out;
}

Result<std::vector<uint8_t>> Qcow2Device::compress_chunk(std::span<const uint8_t> chunk) const {
    if (chunk.size() >= cluster_size_) return compress_cluster(chunk, h_.compression);
    // The device's last, partial cluster: compress it padded to a whole cluster.
    std::vector<uint8_t> padded(static_cast<size_t>(cluster_size_), 0);
    std::copy(chunk.begin(), chunk.end(), padded.begin());
    return compress_cluster(padded, h_.compression);
}

}  // namespace vdisk::qcow2
