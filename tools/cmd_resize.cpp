// vdisk resize: grow, or shrink with --shrink, as qemu-img resize.
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_resize(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:q", {"shrink", "preallocation="}});
    if (!args) return fail(args.error());
    if (args->positional.size() != 2) return fail("resize: expected IMG [+|-]SIZE");
    std::string text = args->positional[1];
    int sign = 0;
    if (!text.empty() && (text[0] == '+' || text[0] == '-')) {
        sign = text[0] == '+' ? 1 : -1;
        text = text.substr(1);
    }
    auto amount = parse_size(text);
    if (!amount) return fail(amount.error());
    auto img = open_cli(env, args->positional[0], args->get("f").value_or(""), false, true);
    if (!img) return fail(img.error());
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
    if (auto st = img->device->resize(target); !st) return fail(std::move(st).error().in(args->positional[0]));
    if (auto st = img->device->close(); !st) return fail(std::move(st).error().in(args->positional[0]));
    if (!args->has("q")) std::cout << "Image resized.\n";
    return 0;
}

}  // namespace vdisk::cli
