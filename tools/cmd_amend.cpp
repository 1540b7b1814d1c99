// SPDX-License-Identifier: Apache-2.0
// vdisk amend: change creation options of an existing image (qemu-img amend; qcow2).
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_amend(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:o:t:pq", {"object=", "image-opts", "force"}});
    if (!args) return fail(args.error());
    if (apply_cache_modes(env, "amend", *args)) return 1;
    if (args->has("force"))
        return fail("amend: --force is not supported: none of the changes vdisk can amend needs it");
    if (args->has("object")) return fail("amend: --object is not supported (vdisk has no secrets or QOM objects)");
    if (args->has("image-opts")) return fail("amend: --image-opts is not supported; name the image and use -f");
    // --force only matters for encryption key slots, which vdisk does not handle; -t (cache) is accepted.
    if (args->positional.size() != 1) return fail("amend: expected one image file");
    bool want_help = false;
    auto kv = collect_options(*args, want_help);
    if (!kv) return fail(kv.error());
    if (want_help) return print_option_help(env, args->get("f").value_or("qcow2"));
    if (kv->empty()) return fail("amend: Must specify options (-o)");
    if (auto st = amend(env.registry, *env.fs, args->positional[0], args->get("f").value_or(""), *kv); !st)
        return fail(std::move(st).error().in(args->positional[0]));
    return 0;
}

}  // namespace vdisk::cli
