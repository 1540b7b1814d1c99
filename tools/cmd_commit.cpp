// SPDX-License-Identifier: Apache-2.0
// vdisk commit: write an image's contents into its backing file (qemu-img commit).
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_commit(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:t:b:r:dpq", {"object=", "image-opts"}});
    if (!args) return fail(args.error());
    if (apply_cache_modes(env, "commit", *args)) return 1;
    if (args->has("object")) return fail("commit: --object is not supported (vdisk has no secrets or QOM objects)");
    if (args->has("image-opts")) return fail("commit: --image-opts is not supported; name the image and use -f");
    if (args->has("r")) return fail("commit: -r (rate limit) is not supported");
    // -t (cache mode) is accepted: vdisk has one caching policy and syncs before it returns.
    if (args->positional.size() != 1) return fail("commit: expected one image file");
    CommitOptions o;
    o.base = args->get("b").value_or("");
    // qemu-img: -b implies -d (the intermediate images would no longer be consistent if emptied).
    o.keep_top = args->has("d") || args->has("b");
    o.image_format = args->get("f").value_or("");
    if (args->has("p")) o.progress = progress_printer();
    if (auto st = commit(env.registry, *env.fs, args->positional[0], o); !st)
        return fail(std::move(st).error().in(args->positional[0]));
    if (!args->has("q")) std::cout << "Image committed.\n";
    return 0;
}

}  // namespace vdisk::cli
