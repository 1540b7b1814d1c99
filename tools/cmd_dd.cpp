// SPDX-License-Identifier: Apache-2.0
// vdisk dd: qemu-img dd's operands (if= of= bs= count= skip=) and options (-f, -O).
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_dd(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:O:U", {"image-opts", "force-share"}});
    if (!args) return fail(args.error());
    if (args->has("U") || args->has("force-share")) env.force_share();
    if (args->has("image-opts")) return fail("dd: --image-opts is not supported; name the image and use -f");
    std::string in, out;
    DdOptions o;
    o.output_format = args->get("O").value_or("raw");
    for (const std::string& op : args->positional) {
        auto eq = op.find('=');
        if (eq == std::string::npos) return fail("dd: unrecognized operand " + op);
        std::string key = op.substr(0, eq), val = op.substr(eq + 1);
        if (key == "if") {
            in = val;
        } else if (key == "of") {
            out = val;
        } else if (key == "bs" || key == "count" || key == "skip") {
            auto n = parse_size(val);
            if (!n) return fail("dd: invalid number for " + key + ": '" + val + "'");
            if (key == "bs") {
                if (*n == 0) return fail("dd: invalid number: '" + val + "'");
                o.block_size = *n;
            } else if (key == "count") {
                o.count = *n;
            } else {
                o.skip = *n;
            }
        } else {
            return fail("dd: unrecognized operand " + key);
        }
    }
    if (in.empty()) return fail("dd: must specify input file with if=");
    if (out.empty()) return fail("dd: must specify output file with of=");
    if (auto f = env.registry.lookup(o.output_format); !f) return fail(f.error());
    auto img = open_cli(env, in, args->get("f").value_or(""), false);
    if (!img) return fail(img.error());
    if (auto st = dd(env.registry, *img->device, *env.fs, out, o); !st) return fail(std::move(st).error().in(out));
    return 0;
}

}  // namespace vdisk::cli
