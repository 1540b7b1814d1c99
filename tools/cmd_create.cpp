// SPDX-License-Identifier: Apache-2.0
// vdisk create: a new image, published atomically.
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_create(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"hf:o:b:F:qu", {"help", "object="}, {{"object", kNoObjects}}});
    if (!args) return fail("create: " + args.error().message);
    std::string fmt = args->get("f").value_or("raw");
    bool want_help = false;
    auto kv = collect_options(*args, want_help);
    if (!kv) return fail(kv.error());
    if (want_help) return print_option_help(env, fmt);
    if (auto f = env.registry.lookup(fmt); !f) return fail(f.error());
    if (args->positional.empty() || args->positional.size() > 2)
        return fail("create: expected IMG [SIZE] (see vdisk create --help)");
    const std::string& name = args->positional[0];
    CreateOptions co;
    co.values = std::move(*kv);
    if (auto b = args->get("b")) co.set("backing_file", *b);
    if (auto bf = args->get("F")) co.set("backing_fmt", *bf);
    if (auto s = args->positional.size() == 2 ? args->positional[1] : co.get("size")) {
        auto size = parse_size(*s);
        if (!size) return fail(size.error());
        co.size = *size;
    }
    std::erase_if(co.values, [](auto& p) { return p.first == "size"; });
    if (args->has("u")) {
        // -u: record the backing file without opening it; the size must then be given.
        if (!co.get("backing_file")) return fail("create: -u needs a backing file (-b)");
        if (!co.size) return fail("create: -u needs the image size (the backing file is not opened to take it from)");
        co.attach_backing = false;
    }
    if (!args->has("q")) {
        std::cout << "Formatting '" << name << "', fmt=" << fmt;
        for (auto& [k, v] : co.values) std::cout << " " << k << "=" << v;
        if (co.size) std::cout << " size=" << *co.size;
        std::cout << "\n";
    }
    StagingFileSystem stage(*env.fs);
    auto dev = create_image(env.registry, stage, name, fmt, co);
    if (!dev) return fail(dev.error());
    if (auto st = (*dev)->close(); !st) return fail(std::move(st).error().in(name, fmt));
    dev->reset();
    if (auto st = stage.commit(); !st) return fail(st.error());
    return 0;
}

}  // namespace vdisk::cli
