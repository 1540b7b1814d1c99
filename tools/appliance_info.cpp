// SPDX-License-Identifier: Apache-2.0
// OVF packages in the CLI: --disk N, and what `info` shows for an .ova/.ovf (its disks, then one disk).
#include <iostream>

#include "cli.hpp"
#include "vdisk/appliance.hpp"

namespace vdisk::cli {

bool take_disk_option(Env& env, const Args& a) {
    auto d = a.get("disk");
    if (!d) return true;
    char* end = nullptr;
    unsigned long n = std::strtoul(d->c_str(), &end, 10);
    if (d->empty() || !end || *end || n >= kMaxApplianceDisks) {
        fail("--disk expects a disk number from 0 (as `vdisk info` lists them)");
        return false;
    }
    env.appliance_disk = static_cast<uint32_t>(n);
    return true;
}

int appliance_info(Env& env, const std::string& path, bool json, bool untrusted) {
    auto is = is_appliance(*env.fs, path);
    if (!is || !*is) return -1;
    OpenOptions o;
    o.untrusted = untrusted;
    auto app = read_appliance(*env.fs, path, o);
    if (!app) return fail(app.error());
    auto img = open_cli(env, path, "", untrusted);
    if (!img) return fail(img.error());
    const std::string inner = path + "/" + app->disks[env.appliance_disk].href;
    Json disk = info_json(*img->device, inner);
    if (json) {
        Json disks = Json::array();
        for (auto& d : app->disks) {
            Json j = Json::object();
            j.set("disk-id", Json(d.disk_id));
            j.set("file", Json(d.href));
            j.set("capacity", Json(d.capacity));
            if (d.populated_size) j.set("populated-size", Json(*d.populated_size));
            j.set("format", Json(d.format.empty() ? d.format_url : d.format));
            j.set("format-url", Json(d.format_url));
            if (!d.compression.empty()) j.set("compression", Json(d.compression));
            if (d.chunk_size) j.set("chunks", Json(static_cast<uint64_t>(d.pieces.size())));
            j.set("stored-size", Json(d.stored_bytes));
            disks.push(j);
        }
        Json out = Json::object();
        out.set("filename", Json(path));
        out.set("format", Json(app->archive ? "ova" : "ovf"));
        out.set("descriptor", Json(app->descriptor));
        out.set("disks", disks);
        out.set("selected-disk", Json(static_cast<uint64_t>(env.appliance_disk)));
        out.set("disk", disk);
        std::cout << out.dump(4) << "\n";
        return 0;
    }
    std::cout << "appliance: " << path << "\n"
              << "file format: " << (app->archive ? "ova" : "ovf") << "\n"
              << "descriptor: " << app->descriptor << "\n"
              << "disks:\n";
    for (size_t i = 0; i < app->disks.size(); ++i) {
        auto& d = app->disks[i];
        std::string fmt = d.format.empty() ? d.format_url : d.format;
        if (auto h = d.format_url.find('#'); h != std::string::npos && !d.format.empty())
            fmt += " " + d.format_url.substr(h + 1);
        std::cout << "    [" << i << "] " << d.disk_id << ": file " << d.href << ", capacity " << human_size(d.capacity)
                  << " (" << d.capacity << " bytes), format " << (fmt.empty() ? "unknown" : fmt) << ", stored "
                  << human_size(d.stored_bytes);
        if (!d.compression.empty()) std::cout << " " << d.compression;
        if (d.chunk_size) std::cout << " in " << d.pieces.size() << " chunks";
        std::cout << "\n";
    }
    std::cout << "\ndisk " << env.appliance_disk << ":\n";
    std::cout << "image: " << inner << "\n"
              << "file format: " << *disk.get("format")->as_string() << "\n"
              << "virtual size: " << human_size(img->device->size()) << " (" << img->device->size() << " bytes)\n";
    if (auto* fs = disk.get("format-specific"); fs && fs->get("data")) {
        std::cout << "Format specific information:\n";
        print_human_tree(*fs->get("data"), 4);
    }
    return 0;
}

}  // namespace vdisk::cli
