// SPDX-License-Identifier: Apache-2.0
// vdisk info: qemu-img info's human and JSON output.
#include <ctime>
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

static void print_human(const Json& j, const std::vector<SnapshotInfo>& snaps) {
    auto u = [&](const char* k) { return j.get(k) && j.get(k)->as_uint() ? *j.get(k)->as_uint() : 0; };
    // Names come from the image (or from a chain it names): escaped for the terminal.
    auto T = [](const std::string& s) { return escape_for_terminal(s); };
    std::cout << "image: " << T(*j.get("filename")->as_string()) << "\n";
    std::cout << "file format: " << *j.get("format")->as_string() << "\n";
    std::cout << "virtual size: " << human_size(u("virtual-size")) << " (" << u("virtual-size") << " bytes)\n";
    if (j.get("actual-size")) std::cout << "disk size: " << human_size(u("actual-size")) << "\n";
    if (j.get("cluster-size")) std::cout << "cluster_size: " << u("cluster-size") << "\n";
    if (auto* b = j.get("backing-filename")) {
        std::cout << "backing file: " << T(*b->as_string());
        if (auto* full = j.get("full-backing-filename"); full && *full->as_string() != *b->as_string())
            std::cout << " (actual path: " << T(*full->as_string()) << ")";
        std::cout << "\n";
        if (auto* bf = j.get("backing-filename-format"))
            std::cout << "backing file format: " << T(*bf->as_string()) << "\n";
    }
    if (j.get("dirty-flag") && *j.get("dirty-flag")->as_bool()) std::cout << "dirty flag: yes\n";
    if (!snaps.empty()) {
        std::cout << "Snapshot list:\n";
        std::printf("%-4s %-20s %10s %19s %15s %10s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
        for (auto& s : snaps) {
            char date[32] = "";
            time_t t = static_cast<time_t>(s.date_sec);
            struct tm tm {};
            localtime_r(&t, &tm);
            std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
            uint64_t secs = s.vm_clock_nsec / 1000000000ull;
            char clock[32];
            std::snprintf(clock, sizeof clock, "%04llu:%02llu:%02llu.%03llu", (unsigned long long)(secs / 3600),
                          (unsigned long long)(secs / 60 % 60), (unsigned long long)(secs % 60),
                          (unsigned long long)(s.vm_clock_nsec / 1000000 % 1000));
            std::string icount = s.icount == UINT64_MAX ? "--" : std::to_string(s.icount);
            std::fflush(stdout);
            std::printf("%-4s %-20s %10s %19s %15s %10s\n", T(s.id).c_str(), T(s.name).c_str(),
                        human_size(s.vm_state_size).c_str(), date, clock, icount.c_str());
        }
        std::fflush(stdout);
    }
    if (auto* fs = j.get("format-specific"); fs && fs->get("data")) {
        std::cout << "Format specific information:\n";
        print_human_tree(*fs->get("data"), 4);
    }
}

// --untrusted: the usual information when the image opens under untrusted rules, plus the safety report.
// Exit status 1 when the verdict is unsafe.
static int untrusted_info(Env& env, const std::string& path, const std::string& format, bool json) {
    Json report = safety_report(env.registry, *env.fs, path, format, untrusted_limits());
    bool safe = report.get("verdict") && *report.get("verdict")->as_string() == "safe";
    Json out = Json::object();
    std::vector<SnapshotInfo> snaps;
    if (safe) {
        auto img = open_cli(env, path, format, true);
        if (img) {
            out = info_json(*img->device, path);
            snaps = img->device->info().snapshots;
        }
    }
    if (json) {
        out.set("safety", report);
        std::cout << out.dump(4) << "\n";
    } else {
        if (out.get("format")) print_human(out, snaps);
        std::cout << "Safety report:\n";
        print_human_tree(report, 4);
    }
    if (!safe) {
        std::string why;
        if (auto* rs = report.get("reasons"); rs && rs->as_array() && !rs->as_array()->empty())
            why = *(*rs->as_array())[0].as_string();
        std::cerr << "vdisk: " << escape_for_terminal(path) << ": unsafe image: " << escape_for_terminal(why) << "\n";
        return 1;
    }
    return 0;
}

int cmd_info(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2,
                           {"hf:U",
                            {"help", "output=", "untrusted", "backing-chain", "force-share", "image-opts",
                             "parent=", "format=", "object=", "disk="},
                            {{"object", kNoObjects}}});
    if (!args) return fail("info: " + args.error().message);
    if (args->has("U") || args->has("force-share")) env.force_share();
    if (auto v = args->get("format")) args->opts.push_back({"f", *v});
    auto json = output_is_json(*args);
    if (!json) return 1;
    if (args->positional.size() != 1) return fail("info: expected exactly one image (see vdisk info --help)");
    std::string path = args->positional[0];
    if (args->has("image-opts")) {
        std::string fmt;
        if (apply_image_opts("info", path, fmt)) return 1;
        if (!fmt.empty()) args->opts.push_back({"f", fmt});
    }
    if (!take_disk_option(env, *args)) return 1;
    if (int rc = appliance_info(env, path, *json, args->has("untrusted")); rc >= 0) return rc;
    if (args->has("untrusted")) return untrusted_info(env, path, args->get("f").value_or(""), *json);
    auto img = open_cli(env, path, args->get("f").value_or(""), false, false, {}, args->get("parent").value_or(""));
    if (!img) return fail(img.error());
    if (args->has("backing-chain")) {
        // One entry per layer, top first, as qemu-img --backing-chain.
        Json list = Json::array();
        std::string name = path;
        for (BlockDevice* d = img->device.get(); d; d = d->backing()) {
            Json j = info_json(*d, name);
            if (*json) list.push(j);
            else {
                print_human(j, d->info().snapshots);
                std::cout << "\n";
            }
            if (auto* b = j.get("full-backing-filename")) name = *b->as_string();
        }
        if (*json) std::cout << list.dump(4) << "\n";
        return 0;
    }
    Json j = info_json(*img->device, path);
    if (*json) std::cout << j.dump(4) << "\n";
    else print_human(j, img->device->info().snapshots);
    return 0;
}

}  // namespace vdisk::cli
