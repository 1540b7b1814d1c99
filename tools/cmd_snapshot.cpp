// SPDX-License-Identifier: Apache-2.0
// vdisk snapshot: list, create, delete and apply internal snapshots, as qemu-img snapshot.
#include <sys/time.h>

#include <cstdio>
#include <ctime>
#include <iostream>

#include "cli.hpp"

namespace vdisk::cli {

// One row (or the header when `s` is null) of qemu-img's snapshot table.
void print_snapshot_row(const SnapshotInfo* s) {
    if (!s) {
        std::printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
        return;
    }
    char date[32] = "";
    time_t t = static_cast<time_t>(s->date_sec);
    struct tm tm {};
    localtime_r(&t, &tm);
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t secs = s->vm_clock_nsec / 1000000000ull;
    char clock[48];
    std::snprintf(clock, sizeof clock, "%02llu:%02llu:%02llu.%03llu", (unsigned long long)(secs / 3600),
                  (unsigned long long)(secs / 60 % 60), (unsigned long long)(secs % 60),
                  (unsigned long long)(s->vm_clock_nsec / 1000000 % 1000));
    std::string icount = s->icount == UINT64_MAX ? "" : std::to_string(s->icount);
    std::printf("%-9s %-16s %8s%20s%13s%11s\n", s->id.c_str(), s->name.c_str(), human_size(s->vm_state_size).c_str(),
                date, clock, icount.c_str());
}

int cmd_snapshot(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:la:c:d:qU", {"object=", "image-opts", "force-share"}});
    if (!args) return fail(args.error());
    if (args->has("U") || args->has("force-share")) env.force_share();
    if (args->has("object")) return fail("snapshot: --object is not supported (vdisk has no secrets or QOM objects)");
    if (args->has("image-opts")) return fail("snapshot: --image-opts is not supported; name the image and use -f");
    int actions = args->has("l") + args->has("a") + args->has("c") + args->has("d");
    if (actions != 1) return fail("snapshot: give exactly one of -l, -a NAME, -c NAME, -d NAME");
    if (args->positional.size() != 1) return fail("snapshot: expected one image file");
    const std::string& path = args->positional[0];
    const bool list = args->has("l");
    auto img = open_cli(env, path, args->get("f").value_or(""), false, !list);
    if (!img) return fail(img.error());
    BlockDevice& dev = *img->device;
    if (list) {
        auto snaps = dev.info().snapshots;
        if (snaps.empty()) return 0;  // qemu-img prints nothing for an image without snapshots
        std::cout << "Snapshot list:\n" << std::flush;
        print_snapshot_row(nullptr);
        for (auto& s : snaps) print_snapshot_row(&s);
        std::fflush(stdout);
        return 0;
    }
    Status st = ok();
    std::string what, name;
    if (auto c = args->get("c")) {
        SnapshotInfo info;
        info.name = *c;
        struct timeval tv {};
        gettimeofday(&tv, nullptr);
        info.date_sec = static_cast<uint64_t>(tv.tv_sec);
        info.date_nsec = static_cast<uint64_t>(tv.tv_usec) * 1000;
        info.icount = 0;  // qemu-img records 0: no guest ran
        st = dev.snapshot_create(info);
        what = "create";
        name = *c;
    } else if (auto d = args->get("d")) {
        st = dev.snapshot_remove(*d);
        what = "delete";
        name = *d;
    } else {
        name = *args->get("a");
        st = dev.snapshot_apply(name);
        what = "apply";
    }
    if (!st) return fail("Could not " + what + " snapshot '" + name + "': " + st.error().message);
    if (auto c = dev.close(); !c) return fail(std::move(c).error().in(path));
    return 0;
}

}  // namespace vdisk::cli
