// SPDX-License-Identifier: Apache-2.0
// vdisk compare: exit 0 identical, 1 different (first differing offset), 2 error — as qemu-img.
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_compare(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2,
                           {"hf:F:spqT:U",
                            {"help", "untrusted", "force-share", "object=", "image-opts"},
                            {{"object", kNoObjects}}});
    // Errors exit with 2 here (fail() returns 1, which means "the images differ").
    auto error = [](const auto& e) { return fail(e) + 1; };
    if (!args) return error("compare: " + args.error().message);
    if (args->has("U") || args->has("force-share")) env.force_share();
    CacheMode cache;
    if (read_cache_mode(*args, "T", "compare", cache)) return 2;
    auto cache_fs = file_system_for(env, cache);
    if (args->positional.size() != 2) return error("compare: expected two images");
    std::string fa = args->get("f").value_or("");
    std::string fb = args->get("F").value_or(fa);
    std::string pa = args->positional[0], pb = args->positional[1];
    if (args->has("image-opts") && (apply_image_opts("compare", pa, fa) || apply_image_opts("compare", pb, fb)))
        return 2;
    auto a = open_cli(env, pa, fa, args->has("untrusted"), false, {}, {}, cache_fs.get());
    if (!a) return error(a.error());
    auto b = open_cli(env, pb, fb, args->has("untrusted"), false, {}, {}, cache_fs.get());
    if (!b) return error(b.error());
    bool strict = args->has("s");
    if (strict && a->device->size() != b->device->size()) {
        std::cout << "Strict mode: Image size mismatch!\n";
        return 1;
    }
    if (a->device->size() != b->device->size() && !args->has("q")) std::cout << "Warning: Image size mismatch!\n";
    ProgressFn progress;
    if (args->has("p")) progress = progress_printer();
    auto r = compare(*a->device, *b->device, strict, progress);
    if (!r) return error(r.error());
    if (*r) {
        if (!args->has("q")) std::cout << "Content mismatch at offset " << **r << "!\n";
        return 1;
    }
    if (!args->has("q")) std::cout << "Images are identical.\n";
    return 0;
}

}  // namespace vdisk::cli
