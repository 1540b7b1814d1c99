// SPDX-License-Identifier: Apache-2.0
// vdisk rebase: change an image's backing file, copying what differs unless -u (qemu-img rebase).
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_rebase(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:F:b:t:T:upqU", {"object=", "image-opts", "force-share"}});
    if (!args) return fail(args.error());
    if (args->has("U") || args->has("force-share")) env.force_share();
    if (apply_cache_modes(env, "rebase", *args)) return 1;
    if (args->has("object")) return fail("rebase: --object is not supported (vdisk has no secrets or QOM objects)");
    if (args->has("image-opts")) return fail("rebase: --image-opts is not supported; name the image and use -f");
    // -t/-T (cache modes) are accepted: vdisk has one caching policy and syncs before it returns.
    if (!args->has("b")) return fail("rebase: expecting a backing file (-b NAME; -b \"\" removes it)");
    if (args->positional.size() != 1) return fail("rebase: expected one image file");
    RebaseOptions o;
    o.backing = *args->get("b");
    o.backing_format = args->get("F").value_or("");
    o.unsafe = args->has("u");
    o.image_format = args->get("f").value_or("");
    if (!o.backing_format.empty())
        if (auto f = env.registry.lookup(o.backing_format); !f) return fail(f.error());
    if (args->has("p")) o.progress = progress_printer();
    if (auto st = rebase(env.registry, *env.fs, args->positional[0], o); !st)
        return fail(std::move(st).error().in(args->positional[0]));
    return 0;
}

}  // namespace vdisk::cli
