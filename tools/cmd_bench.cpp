// vdisk bench: qemu-img bench's read benchmark (sequential requests of SIZE bytes, STEP apart, wrapping at
// the end of the disk), through the library's BlockDevice, so the two can be compared on one image.
#include <chrono>
#include <cstdio>
#include <vector>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_bench(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:c:s:S:o:qd:t:n", {"untrusted", "force-share"}});
    if (!args) return fail(args.error());
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
    auto img = open_cli(env, args->positional[0], args->get("f").value_or(""), args->has("untrusted"));
    if (!img) return fail(img.error());
    BlockDevice& dev = *img->device;
    if (dev.size() < *size) return fail("bench: the image is smaller than one request");
    std::vector<uint8_t> buf(static_cast<size_t>(*size));
    const uint64_t span = dev.size() - *size + 1;
    if (!args->has("q"))
        std::printf("Sending %llu read requests, %llu bytes each, 1 in parallel (starting at offset %llu, step size %llu)\n",
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
