// SPDX-License-Identifier: Apache-2.0
// vdisk sample: write a raw image with a known, checkable pattern — the quick start's built-in sample.
// Layout: a boot-sector-like first sector, text, pseudo-random 64 KiB blocks at scattered offsets, a
// block of zeros inside data, and large holes, so conversions exercise data, zero and unallocated runs.
#include <iostream>
#include <cstring>
#include <vector>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_sample(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"q", {}});
    if (!args) return fail(args.error());
    if (args->positional.empty() || args->positional.size() > 2) return fail("sample: expected FILE [SIZE]");
    uint64_t size = 64ull << 20;
    if (args->positional.size() == 2) {
        auto s = parse_size(args->positional[1]);
        if (!s) return fail(s.error());
        size = *s;
    }
    if (size < (4ull << 20)) return fail("sample: size must be at least 4M");
    CreateOptions co;
    co.size = size;
    StagingFileSystem stage(*env.fs);
    auto dev = create_image(env.registry, stage, args->positional[0], "raw", co);
    if (!dev) return fail(dev.error());
    std::vector<uint8_t> block(size_t{64} * 1024);
    uint64_t x = 0x243F6A8885A308D3ull;
    auto fill = [&] {
        for (auto& b : block) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b = static_cast<uint8_t>(x);
        }
    };
    fill();
    const char* text = "vdisk sample image: this sector is data, the 64 KiB block after next is zeros.";
    std::copy(text, text + std::strlen(text), block.begin() + 3);
    // An empty but valid MBR partition table, so the sample passes `info --untrusted` partition checks.
    std::fill(block.begin() + 446, block.begin() + 510, 0);
    block[510] = 0x55;
    block[511] = 0xaa;
    uint64_t written = 0;
    for (uint64_t off = 0; off + block.size() <= size; off += size / 23 & ~uint64_t{0xffff}) {
        auto st = (*dev)->write(off, block);
        if (!st) return fail(st.error());
        written += block.size();
        fill();
        if (off == 0) {
            // Two more consecutive blocks: one of zeros (must stay a hole or zero), one of data.
            std::vector<uint8_t> zeros(block.size(), 0);
            if (auto s2 = (*dev)->write(block.size(), zeros); !s2) return fail(s2.error());
            if (auto s3 = (*dev)->write(2 * block.size(), block); !s3) return fail(s3.error());
            fill();
        }
        if (size / 23 < block.size()) break;
    }
    // The last bytes of the disk, unaligned, so size handling at the end is exercised.
    std::vector<uint8_t> tail(1000, 0xee);
    if (auto st = (*dev)->write(size - tail.size(), tail); !st) return fail(st.error());
    if (auto st = (*dev)->close(); !st) return fail(st.error());
    dev->reset();
    if (auto st = stage.commit(); !st) return fail(st.error());
    if (!args->has("q"))
        std::cout << "Wrote sample image '" << args->positional[0] << "' (" << size << " bytes, " << written / 1024
                  << " KiB of pattern data)\n";
    return 0;
}

}  // namespace vdisk::cli
