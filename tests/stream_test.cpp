// SPDX-License-Identifier: Apache-2.0
// convert from stdin: raw, streamOptimized VMDK and fixed VHD read in one forward pass from a pipe, checked
// with qemu-img compare; formats that need random access refused before stdin is read; memory bounded.
#include <filesystem>

#include "support.hpp"

namespace {

void make_source(const vt::TempDir& t) {
    std::vector<uint8_t> img(20u << 20, 0);
    auto p = vt::pattern(5u << 20, 11);
    std::copy(p.begin(), p.end(), img.begin() + (3u << 20) + 512);
    std::copy(p.begin(), p.begin() + 100000, img.end() - 100000);
    vt::write_file(t / "src.raw", img);
}

}  // namespace

TEST_CASE("stdin: raw, streamOptimized vmdk and fixed vhd converted in one pass") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    make_source(t);
    vt::sh(vt::in_dir(t, "qemu-img convert -O vmdk -o subformat=streamOptimized src.raw q.vmdk"));
    vt::sh(vt::in_dir(t, vt::tool() + " convert -O vmdk -o subformat=streamOptimized src.raw v.vmdk"));
    vt::sh(vt::in_dir(t, "qemu-img convert -O vpc -o subformat=fixed,force_size=on src.raw f.vhd"));
    const std::string size = std::to_string(20u << 20);
    struct Case {
        std::string feed, fmt;
    } cases[] = {
        {"cat src.raw |", "-f raw --size " + size},
        {"cat src.raw |", "-f raw --size 20M"},
        {"cat q.vmdk |", "-f vmdk"},
        {"cat v.vmdk |", "-f vmdk"},
        {"cat f.vhd |", "-f vpc --size " + size},
    };
    for (auto& c : cases)
        for (std::string target :
             {"-O qcow2", "-O qcow2 -c", "-O vhdx", "-O vdi", "-O vmdk -o subformat=streamOptimized"}) {
            INFO(c.feed << " " << c.fmt << " " << target);
            vt::sh(vt::in_dir(t, c.feed + " " + vt::tool() + " convert " + c.fmt + " - " + target + " out.img"));
            vt::sh(vt::in_dir(t, "qemu-img compare -q src.raw out.img"));
            std::filesystem::remove(t / "out.img");
        }
    // Redirected from a file: the size comes from the file, no --size needed.
    vt::sh(vt::in_dir(t, vt::tool() +
                             " convert -f raw - -O qcow2 a.qcow2 < src.raw && qemu-img compare -q src.raw a.qcow2"));
    vt::sh(vt::in_dir(t, vt::tool() +
                             " convert -f vhd - -O qcow2 b.qcow2 < f.vhd && qemu-img compare -q src.raw b.qcow2"));
    // --hash works on a stream too, equal to sha256sum of the raw bytes.
    auto r = vt::run(vt::in_dir(t, "cat q.vmdk | " + vt::tool() +
                                       " convert -f vmdk - -O raw --hash sha256 h.raw; sha256sum src.raw"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    CHECK(r.output.substr(0, 64) == r.output.substr(r.output.find('\n') + 1, 64));
}

TEST_CASE("stdin to stdout: raw into streamOptimized VMDK, through a pipe and back") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    make_source(t);
    vt::sh(vt::in_dir(t, "cat src.raw | " + vt::tool() +
                             " convert -f raw --size 20M - -O vmdk -o subformat=streamOptimized - > s.vmdk"));
    vt::sh(vt::in_dir(t, "qemu-img check -q s.vmdk && qemu-img compare -q src.raw s.vmdk"));
    vt::sh(vt::in_dir(t, "cat src.raw | " + vt::tool() +
                             " convert -f raw --size 20M - -O vmdk -o subformat=streamOptimized - | " + vt::tool() +
                             " convert -f vmdk - -O raw - | cmp - src.raw"));
}

TEST_CASE("stdin: formats that need random access are refused before stdin is read") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    make_source(t);
    vt::sh(vt::in_dir(t, "qemu-img convert -O qcow2 src.raw a.qcow2"));
    for (std::string f : {"qcow2", "vhdx", "vdi"}) {
        INFO(f);
        // The same stdin goes on to wc: every byte still there means convert read none.
        auto r = vt::run(
            vt::in_dir(t, "{ " + vt::tool() + " convert -f " + f + " - -O raw x.raw; echo rc=$?; wc -c; } < a.qcow2"));
        CHECK(r.output.find("cannot be read from stdin: it needs random access") != std::string::npos);
        CHECK(r.output.find("rc=1") != std::string::npos);
        CHECK(r.output.find(std::to_string(std::filesystem::file_size(t / "a.qcow2"))) != std::string::npos);
    }
    auto r = vt::run(vt::in_dir(t, "cat a.qcow2 | " + vt::tool() + " convert - -O raw x.raw"));
    CHECK(r.status == 1);
    CHECK(r.output.find("needs its format: -f raw|vmdk|vhd") != std::string::npos);
    // Recognised from the first sector: sparse VMDK, dynamic VHD.
    vt::sh(vt::in_dir(t, "qemu-img convert -O vmdk src.raw sp.vmdk && qemu-img convert -O vpc src.raw d.vhd"));
    r = vt::run(vt::in_dir(t, "cat sp.vmdk | " + vt::tool() + " convert -f vmdk - -O raw x.raw"));
    CHECK(r.status == 1);
    CHECK(r.output.find("only streamOptimized VMDKs") != std::string::npos);
    r = vt::run(vt::in_dir(t, "cat d.vhd | " + vt::tool() + " convert -f vhd --size 20M - -O raw x.raw"));
    CHECK(r.status == 1);
    CHECK(r.output.find("dynamic or differencing VHD") != std::string::npos);
    // Wrong sizes: nothing is left behind.
    r = vt::run(vt::in_dir(t, "cat src.raw | " + vt::tool() + " convert -f raw --size 10M - -O qcow2 x.qcow2"));
    CHECK(r.output.find("longer than its size") != std::string::npos);
    r = vt::run(vt::in_dir(t, "cat src.raw | " + vt::tool() + " convert -f raw --size 30M - -O qcow2 x.qcow2"));
    CHECK(r.output.find("the stream ended at 20971520") != std::string::npos);
    r = vt::run(vt::in_dir(t, "cat src.raw | " + vt::tool() + " convert -f raw - -O qcow2 x.qcow2"));
    CHECK(r.output.find("give the virtual size (--size)") != std::string::npos);
    CHECK(!std::filesystem::exists(t / "x.qcow2"));
    CHECK(!std::filesystem::exists(t / "x.raw"));
    // A truncated streamOptimized VMDK.
    vt::sh(vt::in_dir(t, "qemu-img convert -O vmdk -o subformat=streamOptimized src.raw so.vmdk"));
    r = vt::run(vt::in_dir(t, "head -c 100000 so.vmdk | " + vt::tool() + " convert -f vmdk - -O qcow2 x.qcow2"));
    CHECK(r.status == 1);
    CHECK(r.output.find("the stream ended at") != std::string::npos);
    CHECK(!std::filesystem::exists(t / "x.qcow2"));
}

TEST_CASE("stdin: memory stays bounded whatever the stream's length") {
    if (!vt::have("/usr/bin/time")) return;
    vt::TempDir t;
    // 3 GiB through the pipe: peak RSS must stay far below it (the window is 2 MiB).
    auto r = vt::run(vt::in_dir(t,
                                "{ head -c 1G /dev/urandom 2>/dev/null | head -c 64M; head -c 3008M /dev/zero; } | "
                                "/usr/bin/time -f 'rss=%M' " +
                                    vt::tool() + " convert -f raw --size 3G - -O qcow2 big.qcow2"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    auto p = r.output.find("rss=");
    REQUIRE(p != std::string::npos);
    long rss_kib = std::stol(r.output.substr(p + 4));
    CHECK(rss_kib < 64 * 1024);
    CHECK(std::filesystem::file_size(t / "big.qcow2") < (80u << 20));  // the zeros were not written
}
