// SPDX-License-Identifier: Apache-2.0
// vdisk lint --target T IMG: every import rule of a platform the image breaks, with the fixing command.
// Also convert --target's choice of format and options (lib/targets.cpp holds the rules).
#include <iostream>

#include "cli.hpp"
#include "vdisk/targets.hpp"

namespace vdisk::cli {

int apply_convert_target(const Args& a, std::string& out_fmt, std::vector<std::pair<std::string, std::string>>& kv) {
    auto name = a.get("target");
    if (!name) return 0;
    auto t = find_cloud_target(*name);
    if (!t) return fail(t.error());
    if (a.has("O") && out_fmt != (*t)->format && !(out_fmt == "vpc" && (*t)->format == "vhd"))
        return fail("convert: --target " + *name + " writes " + std::string((*t)->format) + ", not -O " + out_fmt);
    out_fmt = std::string((*t)->format);
    // The target's options first; a user's -o of the same name wins (it comes later).
    std::vector<std::pair<std::string, std::string>> merged((*t)->options.begin(), (*t)->options.end());
    for (auto& p : kv) {
        auto it = std::find_if(merged.begin(), merged.end(), [&](auto& m) { return m.first == p.first; });
        if (it != merged.end()) it->second = p.second;
        else merged.push_back(p);
    }
    kv = std::move(merged);
    return 0;
}

int cmd_lint(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:", {"target=", "output=", "untrusted", "disk=", "parent="}});
    if (!args) return fail(args.error());
    if (!take_disk_option(env, *args)) return 1;
    auto json = output_is_json(*args);
    if (!json) return 1;
    if (args->positional.size() != 1) return fail("lint: expected exactly one image (see vdisk lint --help)");
    auto tname = args->get("target");
    if (!tname) {
        std::string names;
        for (auto& t : cloud_targets()) names += (names.empty() ? "" : "|") + std::string(t.name);
        return fail("lint: --target " + names + " is required");
    }
    auto target = find_cloud_target(*tname);
    if (!target) return fail(target.error());
    const std::string& path = args->positional[0];
    auto img = open_cli(env, path, args->get("f").value_or(""), args->has("untrusted"), false, {},
                        args->get("parent").value_or(""));
    if (!img) return fail(img.error());
    auto report = lint_image(*env.fs, path, *img, **target);
    if (!report) return fail(report.error());
    const bool refused = report->refused();
    if (*json) {
        Json j = Json::object();
        j.set("filename", Json(path));
        j.set("target", Json(std::string((*target)->name)));
        j.set("format", Json(report->format));
        j.set("virtual-size", Json(report->virtual_size));
        Json list = Json::array();
        for (auto& f : report->findings) {
            Json x = Json::object();
            x.set("rule", Json(f.rule));
            x.set("severity", Json(f.refused ? "error" : "warning"));
            x.set("problem", Json(f.problem));
            x.set("fix", Json(f.fix));
            list.push(x);
        }
        j.set("findings", list);
        j.set("verdict", Json(refused ? "refused" : "accepted"));
        j.set("rules-source", Json(std::string((*target)->source)));
        std::cout << j.dump(4) << "\n";
    } else {
        std::cout << path << ": " << report->format << ", " << human_size(report->virtual_size) << ", against "
                  << (*target)->platform << " (" << (*target)->summary << ")\n";
        for (auto& f : report->findings)
            std::cout << "  " << (f.refused ? "error  " : "warning") << " [" << f.rule << "] " << f.problem
                      << "\n          fix: " << f.fix << "\n";
        std::cout << (refused                    ? "refused"
                      : report->findings.empty() ? "accepted"
                                                 : "accepted with warnings")
                  << " (rules: " << (*target)->source << ")\n";
    }
    return refused ? 1 : 0;
}

}  // namespace vdisk::cli
