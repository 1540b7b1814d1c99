// Shared body of the libFuzzer targets: open an image from an in-memory file system and exercise every
// read path with bounded work. Any crash, sanitizer report, hang or unbounded allocation is a bug.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "vdisk/vdisk.hpp"

namespace vdisk::fuzz {

/// Tight limits so a fuzzed header cannot make one input expensive.
inline OpenOptions fuzz_options(std::string_view format) {
    OpenOptions o;
    o.format = std::string(format);
    o.limits.max_metadata_bytes = 8u << 20;
    o.limits.max_cache_bytes = 4u << 20;
    o.limits.max_descriptor_bytes = 64u << 10;
    o.limits.max_extents = 64;
    o.limits.max_chain_depth = 4;
    o.limits.max_snapshots = 256;
    return o;
}

/// Open `name` and read it: walk block_status over the whole device, read up to `read_budget` bytes of
/// what it reports, then info() and the format's check. The budget is small on purpose: coverage comes from
/// many different inputs, and a mutated header declaring terabytes of compressed data would otherwise make
/// one input cost tens of milliseconds of inflating.
inline void exercise(const Registry& reg, FileSystem& fs, std::string_view name, const OpenOptions& o,
                     uint64_t read_budget = 1u << 20) {
    auto img = open_image(reg, fs, name, o);
    if (!img) {
        (void)img.error().to_string();
        return;
    }
    BlockDevice& dev = *img->device;
    (void)dev.info().format_specific.dump();
    std::vector<uint8_t> buf(64 * 1024);
    uint64_t off = 0;
    unsigned steps = 0;
    while (off < dev.size() && steps++ < 1024) {
        auto m = map_extent(dev, off, 1ull << 30);
        if (!m) break;
        uint64_t n = std::min<uint64_t>({m->length, buf.size(), read_budget});
        if (n && read_budget) {
            (void)dev.read(off, std::span<uint8_t>(buf.data(), n));
            read_budget -= n;
        }
        off += m->length;
    }
    // Reads at the very end and at odd offsets.
    if (dev.size() >= 4096) (void)dev.read(dev.size() - 4096, std::span<uint8_t>(buf.data(), 4096));
    if (dev.size() > 777) (void)dev.read(dev.size() / 2 - 1, std::span<uint8_t>(buf.data(), 777));
    if (img->format) (void)img->format->check(dev, RepairMode::none);
}

}  // namespace vdisk::fuzz
