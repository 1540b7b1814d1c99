// vdisk compare: exit 0 identical, 1 different (first differing offset), 2 error — as qemu-img.
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_compare(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:F:spqU", {"untrusted", "force-share"}});
    if (!args) {
        fail(args.error());
        return 2;
    }
    if (args->positional.size() != 2) {
        fail("compare: expected two images");
        return 2;
    }
    std::string fa = args->get("f").value_or("");
    std::string fb = args->get("F").value_or(fa);
    auto a = open_cli(env, args->positional[0], fa, args->has("untrusted"));
    if (!a) {
        fail(a.error());
        return 2;
    }
    auto b = open_cli(env, args->positional[1], fb, args->has("untrusted"));
    if (!b) {
        fail(b.error());
        return 2;
    }
    bool strict = args->has("s");
    if (strict && a->device->size() != b->device->size()) {
        std::cout << "Strict mode: Image size mismatch!\n";
        return 1;
    }
    if (a->device->size() != b->device->size() && !args->has("q")) std::cout << "Warning: Image size mismatch!\n";
    auto r = compare(*a->device, *b->device, strict);
    if (!r) {
        fail(r.error());
        return 2;
    }
    if (*r) {
        if (!args->has("q")) std::cout << "Content mismatch at offset " << **r << "!\n";
        return 1;
    }
    if (!args->has("q")) std::cout << "Images are identical.\n";
    return 0;
}

}  // namespace vdisk::cli
