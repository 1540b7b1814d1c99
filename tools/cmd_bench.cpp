// SPDX-License-Identifier: Apache-2.0
// vdisk bench: qemu-img bench's read benchmark (sequential requests of SIZE bytes, STEP apart, wrapping at
// the end of the disk), through the library's BlockDevice, so the two can be compared on one image.
#include <chrono>
#include <cstdio>
#include <vector>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_bench(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2,
                           {"hf:c:s:S:o:qd:t:ni:wU",
                            {"help", "untrusted", "force-share", "image-opts",
                             "flush-interval=", "pattern=", "no-drain"},
                            {{"n", "vdisk has no Linux native AIO; its reads are synchronous positional reads"},
                             {"i", "vdisk has no AIO engines (native, io_uring); its reads are synchronous"},
                             {"w", "vdisk bench measures reads only"},
                             {"flush-interval", "vdisk bench measures reads only (no writes to flush)"},
                             {"pattern", "vdisk bench measures reads only (no write pattern)"},
                             {"no-drain", "vdisk bench measures reads only"}}});
    if (!args) return fail("bench: " + args.error().message);
    if (args->has("U") || args->has("force-share")) env.force_share();
    if (auto d = args->get("d"); d && *d != "1")
        return fail("bench: -d " + *d + " is not supported: vdisk bench keeps one request in flight (depth 1)");
    CacheMode cache;
    if (read_cache_mode(*args, "t", "bench", cache)) return 1;
    auto cache_fs = file_system_for(env, cache);
    if (args->positional.size() != 1) return fail("bench: expected exactly one image");
    auto num = [&](const char* key, uint64_t dflt) -> Result<uint64_t> {
        auto v = args->get(key);
        return v ? parse_size(*v) : Result<uint64_t>(dflt);
    };
    auto count = num("c", 75000), size = num("s", 4096), offset = num("o", 0);
    if (!count) return fail(count.error());
    if (!size) return fail(size.error());
    if (!offset) return fail(offset.error());
    auto step = num("S", *size);
    if (!step) return fail(step.error());
    if (*size == 0 || *size > (64ull << 20)) return fail("bench: -s must be between 1 and 64M");
    std::string path = args->positional[0], fmt = args->get("f").value_or("");
    if (args->has("image-opts") && apply_image_opts("bench", path, fmt)) return 1;
    auto img = open_cli(env, path, fmt, args->has("untrusted"), false, {}, {}, cache_fs.get());
    if (!img) return fail(img.error());
    BlockDevice& dev = *img->device;
    if (dev.size() < *size) return fail("bench: the image is smaller than one request");
    std::vector<uint8_t> buf(static_cast<size_t>(*size));
    const uint64_t span = dev.size() - *size + 1;
    if (!args->has("q"))
        std::printf(
            "Sending %llu read requests, %llu bytes each, 1 in parallel (starting at offset %llu, step size %llu)\n",
            (unsigned long long)*count, (unsigned long long)*size, (unsigned long long)*offset,
            (unsigned long long)*step);
    auto t0 = std::chrono::steady_clock::now();
    uint64_t off = *offset % span;
    for (uint64_t i = 0; i < *count; ++i) {
        if (auto st = dev.read(off, buf); !st) return fail(std::move(st).error().in(args->positional[0]));
        off = (off + *step) % span;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("Run completed in %.3f seconds.\n", secs);
    return 0;
}

}  // namespace vdisk::cli
