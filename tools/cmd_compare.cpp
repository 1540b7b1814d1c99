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
    if (!args) {
        fail("compare: " + args.error().message);
        return 2;
    }
    if (args->has("U") || args->has("force-share")) env.force_share();
    CacheMode cache;
    if (auto t = args->get("T")) {
        auto m = parse_cache_mode(*t);
        if (!m) {
            fail("compare: " + m.error().message);
            return 2;
        }
        cache = *m;
    }
    auto cache_fs = file_system_for(env, cache);
    if (args->positional.size() != 2) {
        fail("compare: expected two images");
        return 2;
    }
    std::string fa = args->get("f").value_or("");
    std::string fb = args->get("F").value_or(fa);
    std::string pa = args->positional[0], pb = args->positional[1];
    if (args->has("image-opts")) {
        auto ia = parse_image_opts(pa);
        auto ib = parse_image_opts(pb);
        if (!ia || !ib) {
            fail("compare: " + (!ia ? ia.error() : ib.error()).message);
            return 2;
        }
        pa = ia->first;
        pb = ib->first;
        if (!ia->second.empty()) fa = ia->second;
        if (!ib->second.empty()) fb = ib->second;
    }
    auto a = open_cli(env, pa, fa, args->has("untrusted"), false, {}, {}, cache_fs.get());
    if (!a) {
        fail(a.error());
        return 2;
    }
    auto b = open_cli(env, pb, fb, args->has("untrusted"), false, {}, {}, cache_fs.get());
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
    ProgressFn progress;
    if (args->has("p")) progress = progress_printer();
    auto r = compare(*a->device, *b->device, strict, progress);
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
