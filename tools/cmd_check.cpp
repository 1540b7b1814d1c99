// SPDX-License-Identifier: Apache-2.0
// vdisk check: qemu-img check's output and exit codes (0 clean, 1 check failed, 2 corruptions,
// 3 leaks, 63 format has no check).
#include <cstdio>
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

namespace {

/// After a repair qemu-img checks again and reports (and exits by) what is left; the repair counts come
/// from the first pass. The first pass's findings go to stderr, as qemu-img prints them.
Result<CheckResult> check_again(const OpenedImage& img, const CheckResult& first, bool report) {
    auto again = img.format->check(*img.device, RepairMode::none);
    if (!again) return again;
    if (report) {
        for (auto& m : first.messages) std::cerr << escape_for_terminal(m) << "\n";
        std::cout << "The following inconsistencies were found and repaired:\n\n    " << first.leaks_fixed
                  << " leaked clusters\n    " << first.corruptions_fixed << " corruptions\n\n"
                  << "Double checking the fixed image now...\n";
    }
    again->leaks_fixed = first.leaks_fixed;
    again->corruptions_fixed = first.corruptions_fixed;
    return again;
}

void print_json(const CheckResult& c, const std::string& path, std::string_view format) {
    Json j = Json::object();
    if (c.image_end_offset) j.set("image-end-offset", *c.image_end_offset);
    if (c.total_clusters) j.set("total-clusters", *c.total_clusters);
    j.set("check-errors", c.check_errors);
    if (c.leaks) j.set("leaks", c.leaks);
    if (c.corruptions) j.set("corruptions", c.corruptions);
    if (c.allocated_clusters) j.set("allocated-clusters", *c.allocated_clusters);
    j.set("filename", path);  // the JSON writer escapes what JSON needs
    j.set("format", std::string(format));
    if (c.compressed_clusters && *c.compressed_clusters) j.set("compressed-clusters", *c.compressed_clusters);
    if (c.fragmented_clusters && *c.fragmented_clusters) j.set("fragmented-clusters", *c.fragmented_clusters);
    if (c.leaks_fixed) j.set("leaks-fixed", c.leaks_fixed);
    if (c.corruptions_fixed) j.set("corruptions-fixed", c.corruptions_fixed);
    std::cout << j.dump(4) << "\n";
}

void print_human(const CheckResult& c) {
    for (auto& m : c.messages) std::cerr << escape_for_terminal(m) << "\n";
    if (c.messages_dropped) std::cerr << "(" << c.messages_dropped << " more problems were counted but not listed)\n";
    if (c.corruptions == 0 && c.leaks == 0 && c.check_errors == 0) std::cout << "No errors were found on the image.\n";
    if (c.corruptions)
        std::cout << "\n"
                  << c.corruptions << " errors were found on the image.\n"
                  << "Data may be corrupted, or further writes to the image may corrupt it.\n";
    if (c.leaks)
        std::cout << "\n"
                  << c.leaks << " leaked clusters were found on the image.\n"
                  << "This means waste of disk space, but no harm to data.\n";
    if (c.check_errors) std::cout << "\n" << c.check_errors << " internal errors have occurred during the check.\n";
    if (c.total_clusters && c.allocated_clusters && *c.total_clusters) {
        double t = static_cast<double>(*c.total_clusters);
        double a = static_cast<double>(*c.allocated_clusters);
        const double fragmented = static_cast<double>(c.fragmented_clusters.value_or(0));
        const double compressed = static_cast<double>(c.compressed_clusters.value_or(0));
        std::printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                    (unsigned long long)*c.allocated_clusters, (unsigned long long)*c.total_clusters, a * 100.0 / t,
                    a > 0 ? fragmented * 100.0 / a : 0.0, a > 0 ? compressed * 100.0 / a : 0.0);
    }
    if (c.image_end_offset) std::printf("Image end offset: %llu\n", (unsigned long long)*c.image_end_offset);
    std::fflush(stdout);
}

}  // namespace

int cmd_check(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2,
                           {"hf:r:qT:U",
                            {"help", "output=", "untrusted", "force-share",
                             "format=", "repair=", "object=", "image-opts"},
                            {{"object", kNoObjects}}});
    if (!args) return fail("check: " + args.error().message);
    if (args->has("U") || args->has("force-share")) env.force_share();
    auto json = output_is_json(*args);
    if (!json) return 1;
    if (args->positional.size() != 1) return fail("check: expected exactly one image");
    RepairMode repair = RepairMode::none;
    if (auto r = args->get("repair")) args->opts.push_back({"r", *r});
    if (auto f = args->get("format")) args->opts.push_back({"f", *f});
    if (auto r = args->get("r")) {
        if (*r == "leaks") repair = RepairMode::leaks;
        else if (*r == "all") repair = RepairMode::all;
        else return fail("check: -r expects 'leaks' or 'all'");
    }
    std::string path = args->positional[0];
    std::string fmt = args->get("f").value_or("");
    if (args->has("image-opts") && apply_image_opts("check", path, fmt)) return 1;
    CacheMode cache;
    if (read_cache_mode(*args, "T", "check", cache)) return 1;
    auto cache_fs = file_system_for(env, cache);
    auto img = open_cli(env, path, fmt, args->has("untrusted"), repair != RepairMode::none, {}, {}, cache_fs.get());
    if (!img) return fail(img.error());
    auto res = img->format->check(*img->device, repair);
    if (!res && res.error().code == ErrorCode::unsupported) {
        std::cerr << "vdisk: This image format does not support checks\n";
        return 63;
    }
    const bool quiet = *json || args->has("q");
    if (res && repair != RepairMode::none && (res->leaks_fixed || res->corruptions_fixed))
        res = check_again(*img, *res, !quiet);
    if (!res) return fail(std::move(res).error().in(path, img->format->name()));
    if (auto st = img->device->close(); !st) return fail(std::move(st).error().in(path));
    if (*json) print_json(*res, path, img->format->name());
    else if (!quiet) print_human(*res);
    if (res->check_errors) return 1;
    if (res->corruptions) return 2;
    if (res->leaks) return 3;
    return 0;
}

}  // namespace vdisk::cli
