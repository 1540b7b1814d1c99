// SPDX-License-Identifier: Apache-2.0
// vdisk resize: grow, or shrink with --shrink, as qemu-img resize.
#include <cctype>
#include <iostream>
#include <vector>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_resize(Env& env, int argc, char** argv) {
    // As qemu-img does: a last argument such as "-10M" is the size, not an option.
    std::string neg;
    if (argc > 3 && argv[argc - 1][0] == '-' && std::isdigit(static_cast<unsigned char>(argv[argc - 1][1]))) {
        neg = argv[argc - 1];
        --argc;
    }
    auto args = parse_args(argc, argv, 2,
                           {"hf:q",
                            {"help", "shrink", "preallocation=", "object=", "image-opts"},
                            {{"object", kNoObjects}}});
    if (!args) return fail("resize: " + args.error().message);
    if (!neg.empty()) args->positional.push_back(neg);
    if (args->positional.size() != 2) return fail("resize: expected IMG [+|-]SIZE");
    std::string path = args->positional[0], fmt = args->get("f").value_or("");
    if (args->has("image-opts") && apply_image_opts("resize", path, fmt)) return 1;
    const std::string prealloc = args->get("preallocation").value_or("off");
    if (prealloc != "off" && prealloc != "falloc" && prealloc != "full" && prealloc != "metadata")
        return fail("resize: Invalid preallocation mode '" + prealloc + "'");
    std::string text = args->positional[1];
    int sign = 0;
    if (!text.empty() && (text[0] == '+' || text[0] == '-')) {
        sign = text[0] == '+' ? 1 : -1;
        text = text.substr(1);
    }
    auto amount = parse_size(text);
    if (!amount) return fail(amount.error());
    auto img = open_cli(env, path, fmt, false, true);
    if (!img) return fail(img.error());
    if (prealloc != "off" && img->format->name() != "raw")
        return fail("resize: --preallocation=" + prealloc + " is supported for raw images only (this is " +
                    std::string(img->format->name()) + ")");
    if (prealloc == "metadata") return fail("resize: --preallocation=metadata does not apply to raw images");
    uint64_t cur = img->device->size();
    uint64_t target = *amount;
    if (sign > 0) {
        if (*amount > UINT64_MAX - cur) return fail("resize: size overflows");
        target = cur + *amount;
    } else if (sign < 0) {
        if (*amount > cur) return fail("resize: new size would be negative");
        target = cur - *amount;
    }
    if (target < cur && !args->has("shrink"))
        return fail("resize: use the --shrink option to shrink the image (data past the new end is lost)");
    if (auto st = img->device->resize(target); !st) return fail(std::move(st).error().in(path));
    if (target > cur && prealloc != "off") {
        // falloc reserves the new blocks; full writes them (as qemu-img's raw driver does).
        File& f = *img->device->files().front();
        if (prealloc == "falloc") {
            if (auto st = f.allocate(cur, target - cur); !st) return fail(std::move(st).error().in(path));
        } else {
            std::vector<uint8_t> zeros(1 << 20);
            for (uint64_t off = cur; off < target;) {
                size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), target - off));
                if (auto st = f.write_at(off, std::span<const uint8_t>(zeros.data(), n)); !st)
                    return fail(std::move(st).error().in(path));
                off += n;
            }
        }
    }
    if (auto st = img->device->close(); !st) return fail(std::move(st).error().in(path));
    if (!args->has("q")) std::cout << "Image resized.\n";
    return 0;
}

}  // namespace vdisk::cli
