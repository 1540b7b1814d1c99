// SPDX-License-Identifier: Apache-2.0
// vdisk resize of sparse VMDKs: grow only. The grown image is read, checked and written by qemu-img/qemu-io,
// read by libvmdk (pyvmdk), and the data it held stays where it was; shrinking and streamOptimized are refused.
#include <filesystem>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

std::string V() { return sh_quote(vt::tool_path()); }

void sh(const std::string& cmd) {
    auto r = run(cmd);
    REQUIRE_MESSAGE(r.status == 0, std::string(cmd + ": " + r.output));
}

uint64_t virtual_size(const std::string& img) {
    auto r = run("qemu-img info --output=json " + sh_quote(img));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    vdisk::Json j;
    REQUIRE(vdisk::Json::parse(r.output, j));
    return *j.get("virtual-size")->as_uint();
}

bool have_pyvmdk() {
    bool ok = run("/usr/bin/python3 -c 'import pyvmdk'").status == 0;
    if (!ok) {
        if (vt::in_ci()) FAIL("pyvmdk (python3-libvmdk) is missing");
        else MESSAGE("pyvmdk (python3-libvmdk) is missing; libvmdk reading skipped");
    }
    return ok;
}

struct Range {
    uint64_t offset, length;
    uint8_t fill;  // every byte
};

// libvmdk reads each range and checks its fill; an image of several GiB is never read whole.
void pyvmdk_check(const std::string& img, const std::vector<Range>& ranges) {
    std::string args;
    for (auto& r : ranges)
        args += " " + std::to_string(r.offset) + ":" + std::to_string(r.length) + ":" + std::to_string(r.fill);
    auto r = run("/usr/bin/python3 -c " +
                 sh_quote("import pyvmdk, sys\n"
                          "h = pyvmdk.handle()\n"
                          "h.open(sys.argv[1])\n"
                          "h.open_extent_data_files()\n"
                          "for spec in sys.argv[2:]:\n"
                          "    off, n, fill = (int(x) for x in spec.split(':'))\n"
                          "    if h.read_buffer_at_offset(n, off) != bytes([fill]) * n: print('MISMATCH', spec)\n"
                          "print('size', h.get_media_size())\n") +
                 " " + sh_quote(img) + args);
    CHECK_MESSAGE(r.status == 0, r.output);
    CHECK_MESSAGE(r.output.find("MISMATCH") == std::string::npos, r.output);
}

}  // namespace

TEST_CASE("resize sparse vmdk: grow with the directory in place and moved, read and written by qemu") {
    if (!vt::need_qemu()) return;
    const bool libvmdk = have_pyvmdk();
    struct Case {
        std::string maker;  // how the image is made
        std::string sub;
        uint64_t from, to;  // bytes
    };
    // 40M -> 100M: 2 -> 4 grain tables, the directory's sector has room. 40M -> 5G: 160 tables, it moves.
    for (const Case& c : std::vector<Case>{{"qemu", "monolithicSparse", 40 * kMiB, 100 * kMiB},
                                           {"qemu", "monolithicSparse", 40 * kMiB, 5120 * kMiB},
                                           {"vdisk", "monolithicSparse", 40 * kMiB, 5120 * kMiB + 512},
                                           {"vdisk", "twoGbMaxExtentSparse", 40 * kMiB, 2048 * kMiB},
                                           {"qemu", "twoGbMaxExtentSparse", 2100 * kMiB, 3000 * kMiB}}) {
        CAPTURE(c.maker);
        CAPTURE(c.sub);
        CAPTURE(c.to);
        vt::TempDir t;
        const std::string img = t / "d.vmdk";
        std::string size = std::to_string(c.from);
        if (c.maker == "qemu")
            sh("qemu-img create -q -f vmdk -o subformat=" + c.sub + " " + sh_quote(img) + " " + size);
        else sh(V() + " create -q -f vmdk -o subformat=" + c.sub + " " + sh_quote(img) + " " + size);
        const uint64_t last = c.from - kMiB;
        sh("qemu-io -f vmdk -c 'write -P 0x11 1M 2M' -c 'write -P 0x12 " + std::to_string(last) + " 1M' " +
           sh_quote(img) + " >/dev/null");
        sh(V() + " resize -q " + sh_quote(img) + " " + std::to_string(c.to));
        CHECK(virtual_size(img) == c.to);
        sh("qemu-img check -q " + sh_quote(img));
        // Old data in place, the new range reads zeros, and qemu can allocate grains in it.
        const std::string at = std::to_string(c.to - kMiB - 4096);
        auto q = run("qemu-io -f vmdk -c 'read -P 0x11 1M 2M' -c 'read -P 0x12 " + std::to_string(last) +
                     " 1M' -c 'read -P 0 " + std::to_string(c.from) + " 1M' -c 'write -P 0x13 " + at + " 1M' " +
                     sh_quote(img));
        CHECK(q.status == 0);
        CHECK_MESSAGE(q.output.find("Pattern verification failed") == std::string::npos, q.output);
        sh("qemu-img check -q " + sh_quote(img));
        q = run("qemu-io -f vmdk -c 'read -P 0x13 " + at + " 1M' " + sh_quote(img));
        CHECK_MESSAGE(q.output.find("Pattern verification failed") == std::string::npos, q.output);
        // vdisk and libvmdk read the same.
        const std::vector<Range> ranges = {{1 * kMiB, 2 * kMiB, 0x11},
                                           {last, kMiB, 0x12},
                                           {c.from, kMiB, 0},
                                           {c.to - kMiB - 4096, kMiB, 0x13},
                                           {c.to - 4096, 4096, 0}};
        {
            auto dev = vt::open_host(vdisk::Registry::builtin(), img);
            REQUIRE(dev.ok());
            CHECK(dev->device->size() == c.to);
            for (auto& r : ranges) {
                std::vector<uint8_t> buf(r.length);
                REQUIRE(dev->device->read(r.offset, buf).ok());
                CHECK_MESSAGE(std::all_of(buf.begin(), buf.end(), [&](uint8_t b) { return b == r.fill; }),
                              "range at " << r.offset);
            }
        }
        if (libvmdk) pyvmdk_check(img, ranges);
        sh(V() + " check " + sh_quote(img));
    }
}

TEST_CASE("resize sparse vmdk: shrink, streamOptimized and a split extent past 2 GiB are refused") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    sh("qemu-img create -q -f vmdk " + sh_quote(t / "a.vmdk") + " 64M");
    sh("qemu-img create -q -f vmdk -o subformat=streamOptimized " + sh_quote(t / "s.vmdk") + " 64M");
    sh("qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse " + sh_quote(t / "g.vmdk") + " 64M");
    struct Case {
        std::string img, size, message;
    };
    for (const Case& c : std::vector<Case>{{"a.vmdk", "32M", "shrinking a sparse VMDK is not supported"},
                                           {"s.vmdk", "128M", "streamOptimized"},
                                           {"g.vmdk", "3G", "past 2 GiB"},
                                           {"a.vmdk", "100000001", "whole sectors"}}) {
        CAPTURE(c.img);
        auto before = vt::sha256_file(t / c.img);
        auto r = run(V() + " resize --shrink " + sh_quote(t / c.img) + " " + c.size);
        CHECK(r.status != 0);
        CHECK_MESSAGE(r.output.find(c.message) != std::string::npos, r.output);
        CHECK(vt::sha256_file(t / c.img) == before);
    }
}
