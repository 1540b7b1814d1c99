// SPDX-License-Identifier: Apache-2.0
// vdisk map: qemu-img map's JSON and human output, merged runs.
#include <cstdio>
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

int cmd_map(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2,
                           {"hf:s:l:U",
                            {"help", "output=", "untrusted", "force-share",
                             "start-offset=", "max-length=", "format=", "object=", "image-opts"},
                            {{"object", kNoObjects}}});
    if (!args) return fail("map: " + args.error().message);
    if (args->has("U") || args->has("force-share")) env.force_share();
    if (auto v = args->get("s")) args->opts.push_back({"start-offset", *v});
    if (auto v = args->get("l")) args->opts.push_back({"max-length", *v});
    if (auto v = args->get("format")) args->opts.push_back({"f", *v});
    auto json = output_is_json(*args);
    if (!json) return 1;
    if (args->positional.size() != 1) return fail("map: expected exactly one image");
    std::string path = args->positional[0], fmt = args->get("f").value_or("");
    if (args->has("image-opts")) {
        auto io = parse_image_opts(path);
        if (!io) return fail("map: " + io.error().message);
        path = io->first;
        if (!io->second.empty()) fmt = io->second;
    }
    auto img = open_cli(env, path, fmt, args->has("untrusted"));
    if (!img) return fail(img.error());
    BlockDevice& dev = *img->device;
    uint64_t start = 0, end = dev.size();
    if (auto s = args->get("start-offset")) {
        auto v = parse_size(*s);
        if (!v) return fail(v.error());
        start = std::min(*v, end);
    }
    if (auto m = args->get("max-length")) {
        auto v = parse_size(*m);
        if (!v) return fail(v.error());
        end = std::min(end, start + std::min(*v, end - start));
    }

    bool first = true;
    std::optional<MappedExtent> pending;
    auto emit = [&](const MappedExtent& e) {
        if (*json) {
            std::printf(
                "%s{ \"start\": %llu, \"length\": %llu, \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s",
                first ? "[" : ",\n", (unsigned long long)e.offset, (unsigned long long)e.length, e.depth,
                e.present ? "true" : "false", e.zero ? "true" : "false", e.data ? "true" : "false");
            if (e.compressed) std::printf(", \"compressed\": true");
            if (e.host_offset && !e.compressed) std::printf(", \"offset\": %llu", (unsigned long long)*e.host_offset);
            std::printf("}");
        } else if (e.data && e.host_offset && !e.compressed) {
            if (first) std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
            std::printf("%#-16llx%#-16llx%#-16llx%s\n", (unsigned long long)e.offset, (unsigned long long)e.length,
                        (unsigned long long)*e.host_offset, e.file ? escape_for_terminal(e.file->name()).c_str() : "");
        } else {
            return;
        }
        first = false;
    };
    auto mergeable = [](const MappedExtent& a, const MappedExtent& b) {
        if (a.depth != b.depth || a.present != b.present || a.zero != b.zero || a.data != b.data ||
            a.compressed != b.compressed || a.file != b.file || a.host_offset.has_value() != b.host_offset.has_value())
            return false;
        return !a.host_offset || *a.host_offset + a.length == *b.host_offset;
    };
    for (uint64_t off = start; off < end;) {
        auto m = map_extent(dev, off, end - off);
        if (!m) return fail(m.error());
        if (pending && mergeable(*pending, *m)) pending->length += m->length;
        else {
            if (pending) emit(*pending);
            pending = *m;
        }
        off += m->length;
    }
    if (pending) emit(*pending);
    if (*json) std::printf(first ? "[]\n" : "]\n");
    return 0;
}

}  // namespace vdisk::cli
