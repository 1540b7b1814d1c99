// SPDX-License-Identifier: Apache-2.0
// vdisk measure: qemu-img measure's figures (required and fully allocated bytes) for a new image.
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_measure(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2,
                           {"f:O:o:l:U",
                            {"size=", "output=", "object=", "image-opts", "force-share", "untrusted", "parent="}});
    if (!args) return fail(args.error());
    if (args->has("U") || args->has("force-share")) env.force_share();
    if (args->has("object")) return fail("measure: --object is not supported (vdisk has no secrets or QOM objects)");
    if (args->has("image-opts")) return fail("measure: --image-opts is not supported; name the image and use -f");
    auto json = output_is_json(*args);
    if (!json) return 1;
    std::string out_fmt = args->get("O").value_or("raw");
    bool want_help = false;
    auto kv = collect_options(*args, want_help);
    if (!kv) return fail(kv.error());
    if (want_help) return print_option_help(env, out_fmt);
    auto size_text = args->get("size");
    if (size_text && !args->positional.empty())
        return fail("measure: --size N cannot be used together with a filename");
    if (!size_text && args->positional.size() != 1)
        return fail("measure: either --size N or one filename must be specified");

    CreateOptions opts;
    opts.values = std::move(*kv);
    OpenedImage img;
    if (size_text) {
        auto n = parse_size(*size_text);
        if (!n) return fail(n.error());
        opts.size = *n;
    } else {
        std::string snapshot;
        if (read_snapshot_option(*args, "measure", snapshot)) return 1;
        auto opened = open_cli(env, args->positional[0], args->get("f").value_or(""), args->has("untrusted"), false,
                               snapshot, args->get("parent").value_or(""));
        if (!opened) return fail(opened.error());
        img = std::move(*opened);
    }
    auto r = measure(env.registry, out_fmt, std::move(opts), img.device.get());
    if (!r) return fail(r.error());
    if (*json) {
        Json j = Json::object();
        if (r->bitmaps) j.set("bitmaps", *r->bitmaps);
        j.set("required", r->required);
        j.set("fully-allocated", r->fully_allocated);
        std::cout << j.dump(4) << "\n";
    } else {
        std::cout << "required size: " << r->required << "\nfully allocated size: " << r->fully_allocated << "\n";
        if (r->bitmaps) std::cout << "bitmaps size: " << *r->bitmaps << "\n";
    }
    return 0;
}

}  // namespace vdisk::cli
