// SPDX-License-Identifier: Apache-2.0
// vdisk map: qemu-img map's JSON and human output, merged runs.
#include <cstdio>
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

namespace {

/// -s/--start-offset and -l/--max-length, clipped to the image: the range [first, second) to map.
Result<std::pair<uint64_t, uint64_t>> map_range(const Args& a, uint64_t size) {
    uint64_t start = 0, end = size;
    if (auto s = a.get("start-offset")) {
        VDISK_ASSIGN(uint64_t v, parse_size(*s));
        start = std::min(v, end);
    }
    if (auto m = a.get("max-length")) {
        VDISK_ASSIGN(uint64_t v, parse_size(*m));
        end = std::min(end, start + std::min(v, end - start));
    }
    return std::make_pair(start, end);
}

/// Whether b continues the run a: the same kind of data, from the same file, at the next host offset.
bool mergeable(const MappedExtent& a, const MappedExtent& b) {
    if (a.depth != b.depth || a.present != b.present || a.zero != b.zero || a.data != b.data ||
        a.compressed != b.compressed || a.file != b.file || a.host_offset.has_value() != b.host_offset.has_value())
        return false;
    return !a.host_offset || *a.host_offset + a.length == *b.host_offset;
}

/// One run as qemu-img prints it; false when the human table leaves it out (no data at a host offset).
bool print_run(const MappedExtent& e, bool json, bool first) {
    if (json) {
        std::printf("%s{ \"start\": %llu, \"length\": %llu, \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s",
                    first ? "[" : ",\n", (unsigned long long)e.offset, (unsigned long long)e.length, e.depth,
                    e.present ? "true" : "false", e.zero ? "true" : "false", e.data ? "true" : "false");
        if (e.compressed) std::printf(", \"compressed\": true");
        if (e.host_offset && !e.compressed) std::printf(", \"offset\": %llu", (unsigned long long)*e.host_offset);
        std::printf("}");
        return true;
    }
    if (!e.data || !e.host_offset || e.compressed) return false;
    if (first) std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    std::printf("%#-16llx%#-16llx%#-16llx%s\n", (unsigned long long)e.offset, (unsigned long long)e.length,
                (unsigned long long)*e.host_offset, e.file ? escape_for_terminal(e.file->name()).c_str() : "");
    return true;
}

}  // namespace

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
    if (args->has("image-opts") && apply_image_opts("map", path, fmt)) return 1;
    auto img = open_cli(env, path, fmt, args->has("untrusted"));
    if (!img) return fail(img.error());
    BlockDevice& dev = *img->device;
    auto range = map_range(*args, dev.size());
    if (!range) return fail(range.error());
    auto [start, end] = *range;

    bool first = true;
    std::optional<MappedExtent> pending;
    for (uint64_t off = start; off < end;) {
        auto m = map_extent(dev, off, end - off);
        if (!m) return fail(m.error());
        if (pending && mergeable(*pending, *m)) pending->length += m->length;
        else {
            if (pending && print_run(*pending, *json, first)) first = false;
            pending = *m;
        }
        off += m->length;
    }
    if (pending && print_run(*pending, *json, first)) first = false;
    if (*json) std::printf(first ? "[]\n" : "]\n");
    return 0;
}

}  // namespace vdisk::cli
