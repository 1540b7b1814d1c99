// SPDX-License-Identifier: Apache-2.0
// Nothing lost: every source format qemu-img writes, converted by vdisk into every format and subformat
// vdisk writes, must be identical under `qemu-img compare` and pass `qemu-img check` where qemu-img has one.
#include <cstring>
#include <filesystem>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

struct Target {
    std::string fmt;   // vdisk -O
    std::string opts;  // vdisk -o
    std::string qfmt;  // qemu-img's name for reading it back
    bool qemu_check;   // qemu-img check supports it
    bool compress = false;
};

bool built(const vdisk::Registry& reg, const std::string& fmt) { return reg.find(fmt) != nullptr; }

}  // namespace

TEST_CASE("convert: every source format into every target format, verified by qemu-img") {
    if (!vt::need_qemu() || !vt::have("qemu-io")) return;
    auto reg = vdisk::Registry::builtin();
    vt::TempDir t;
    const std::vector<std::pair<std::string, std::string>> sources = {
        {"qcow2", ""},
        {"vmdk", ""},
        {"vpc", ""},
        {"vhdx", ""},
        {"vdi", ""},
        {"raw", ""},
        {"qcow2", "compat=0.10,cluster_size=4096"},
        {"vmdk", "subformat=streamOptimized"},
    };
    const std::vector<Target> targets = {
        {"raw", "", "raw", false},
        {"qcow2", "", "qcow2", true},
        {"qcow2", "compat=0.10,cluster_size=512", "qcow2", true},
        {"qcow2", "", "qcow2", true, true},
        {"qcow2", "compression_type=zstd", "qcow2", true, true},
        {"vmdk", "", "vmdk", true},
        {"vmdk", "subformat=streamOptimized", "vmdk", true},
        {"vmdk", "subformat=twoGbMaxExtentSparse", "vmdk", true},
        {"vmdk", "subformat=monolithicFlat", "vmdk", true},
        {"vhd", "", "vpc", false},
        {"vhd", "subformat=fixed", "vpc", false},
        {"vhdx", "", "vhdx", true},
        {"vdi", "", "vdi", true},
    };
    int n = 0;
    for (size_t si = 0; si < sources.size(); ++si) {
        auto& [sq, sopts] = sources[si];
        if (!built(reg, sq == "vpc" ? "vhd" : sq)) continue;
        std::string src = t / ("src" + std::to_string(si) + "." + sq);
        auto c = run("qemu-img create -q -f " + sq + (sopts.empty() ? "" : " -o " + sopts) + " " + sh_quote(src) +
                     " 48M");
        REQUIRE_MESSAGE(c.status == 0, c.output);
        if (sopts.find("streamOptimized") != std::string::npos) {
            // qemu-io cannot write streamOptimized in place: build it by conversion instead.
            std::string tmp = t / "stream-src.qcow2";
            REQUIRE(run("qemu-img create -q -f qcow2 " + sh_quote(tmp) + " 48M").status == 0);
            REQUIRE(
                run("qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x22 7M 300k' -c 'write -P 0x33 47M 1M' " +
                    sh_quote(tmp))
                    .status == 0);
            REQUIRE(run("qemu-img convert -f qcow2 -O vmdk -o " + sopts + " " + sh_quote(tmp) + " " + sh_quote(src))
                        .status == 0);
        } else {
            auto w = run("qemu-io -f " + sq +
                         " -c 'write -P 0x11 0 1M' -c 'write -P 0x22 7M 300k' "
                         "-c 'write -z 20M 2M' -c 'write -P 0x33 47M 1M' " +
                         sh_quote(src));
            REQUIRE_MESSAGE(w.status == 0, w.output);
        }
        for (auto& tg : targets) {
            if (!built(reg, tg.fmt)) continue;
            std::string dst = t / ("dst." + tg.fmt);
            std::string cmd = sh_quote(vt::tool_path()) + " convert -f " + (sq == "vpc" ? std::string("vhd") : sq) +
                              " -O " + tg.fmt + (tg.opts.empty() ? "" : " -o " + tg.opts) + (tg.compress ? " -c" : "") +
                              " " + sh_quote(src) + " " + sh_quote(dst);
            std::string what = sq + (sopts.empty() ? "" : "(" + sopts + ")") + " -> " + tg.fmt +
                               (tg.opts.empty() ? "" : "(" + tg.opts + ")") + (tg.compress ? " -c" : "");
            INFO(what);
            auto r = run(cmd);
            REQUIRE_MESSAGE(r.status == 0, what << ": " << r.output);
            auto cmp = run("qemu-img compare -f " + sq + " -F " + tg.qfmt + " " + sh_quote(src) + " " + sh_quote(dst));
            CHECK_MESSAGE(cmp.status == 0, what << ": " << cmp.output);
            if (tg.qemu_check) {
                auto chk = run("qemu-img check -f " + tg.qfmt + " " + sh_quote(dst));
                CHECK_MESSAGE(chk.status == 0, what << ": " << chk.output);
            }
            // vdisk reads its own output back identically too.
            auto own = run(sh_quote(vt::tool_path()) + " compare " + sh_quote(src) + " -f " +
                           (sq == "vpc" ? std::string("vhd") : sq) + " -F " + tg.fmt + " " + sh_quote(dst));
            CHECK_MESSAGE(own.status == 0, what << " (vdisk compare): " << own.output);
            for (auto& e : std::filesystem::directory_iterator(t.path))
                if (e.path().filename().string().rfind("dst", 0) == 0) std::filesystem::remove(e.path());
            ++n;
        }
    }
    MESSAGE(n << " conversions verified");
    CHECK(n >= 20);
}

TEST_CASE("convert: a failing conversion leaves nothing behind and never touches the source") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = t / "src.qcow2";
    REQUIRE(run("qemu-img create -q -f qcow2 " + sh_quote(src) + " 8M").status == 0);
    REQUIRE(run("qemu-io -f qcow2 -c 'write -P 0x44 0 1M' " + sh_quote(src)).status == 0);
    std::string before = vt::sha256_file(src);
    // Corrupt an L2 entry after open: the conversion starts, then fails mid-way.
    auto img = vt::read_file(src);
    // The first L2 table follows the L1 table; point its first entry past the end of the file.
    std::string map = run("qemu-img map --output=json -f qcow2 " + sh_quote(src)).output;
    REQUIRE(map.find("\"offset\": ") != std::string::npos);
    std::string broken = t / "broken.qcow2";
    vt::write_file(broken, img);
    // Truncating the file cuts off the data clusters: reads of them fail.
    std::filesystem::resize_file(broken, 300 * 1024);
    auto r = run(sh_quote(vt::tool_path()) + " convert -O vmdk " + sh_quote(broken) + " " + sh_quote(t / "out.vmdk"));
    CHECK(r.status == 1);
    CHECK(!std::filesystem::exists(t / "out.vmdk"));
    int files = 0;
    for (auto& e : std::filesystem::directory_iterator(t.path)) files += e.is_regular_file();
    CHECK(files == 2);  // src.qcow2 and broken.qcow2 only: no temporary left
    CHECK(vt::sha256_file(src) == before);
}

TEST_CASE("convert: streamOptimized VMDK written to a pipe is a valid image") {
    if (!vt::need_qemu() || !vt::have("qemu-io")) return;
    auto reg = vdisk::Registry::builtin();
    if (!reg.find("vmdk") || !reg.find("qcow2")) return;
    vt::TempDir t;
    std::string src = t / "src.qcow2";
    REQUIRE(run("qemu-img create -q -f qcow2 " + sh_quote(src) + " 32M").status == 0);
    REQUIRE(run("qemu-io -f qcow2 -c 'write -P 0x5c 0 3M' -c 'write -P 0x6d 30M 128k' " + sh_quote(src)).status == 0);
    for (const char* c : {"", " -c"}) {
        std::string out = t / "stream.vmdk";
        auto r = run(sh_quote(vt::tool_path()) + " convert -O vmdk -o subformat=streamOptimized" + c + " " +
                     sh_quote(src) + " - | cat > " + sh_quote(out));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        vt::expect_qemu_compare(src, out, "qcow2", "vmdk");
        vt::expect_qemu_check(out, "vmdk");
    }
    // A format that needs to go back in its file cannot stream: a clear error, not a broken image.
    auto bad = run("bash -c " + sh_quote("set -o pipefail; " + sh_quote(vt::tool_path()) + " convert -O qcow2 " +
                                         sh_quote(src) + " - | cat > /dev/null"));
    CHECK(bad.status == 1);
    CHECK(bad.output.find("vdisk: -: ") != std::string::npos);
}

TEST_CASE("convert -c and streamOptimized: mixed data packs as tightly as qemu-img, whatever the thread count") {
    if (!vt::need_qemu()) return;
    auto reg = vdisk::Registry::builtin();
    if (!reg.find("vmdk") || !reg.find("qcow2")) return;
    vt::TempDir t;
    // 24 MiB of what real disks hold: random (incompressible) runs, text-like runs, zeros, and random data
    // with short repeats, in 192 KiB pieces so that compressed and uncompressed clusters interleave.
    std::vector<uint8_t> img(24u << 20);
    uint64_t x = 88172645463325252ull;
    auto next = [&] {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        return x;
    };
    const size_t piece = 192u << 10;
    for (size_t p = 0; p * piece < img.size(); ++p) {
        uint8_t* b = img.data() + p * piece;
        switch (p % 4) {
            case 0:
                for (size_t i = 0; i < piece; ++i) b[i] = static_cast<uint8_t>(next() >> 24);
                break;
            case 1:
                for (size_t i = 0; i < piece; ++i) b[i] = static_cast<uint8_t>("etaoin shrdlu\n"[next() % 14]);
                break;
            case 2: break;  // zeros
            case 3:
                for (size_t i = 0; i < piece; ++i) b[i] = static_cast<uint8_t>(next() >> 24);
                for (size_t at = 2048; at + 200 <= piece; at += 1024) std::memcpy(b + at, b + at - 700, 200);
                break;
        }
    }
    std::string src = t / "mixed.raw";
    vt::write_file(src, img);
    const std::string tool = sh_quote(vt::tool_path());
    struct Case {
        std::string opts, ext, qfmt;
        double max_ratio;
    };
    for (const Case& c : {Case{"-O qcow2 -c", "qcow2", "qcow2", 1.01},
                          Case{"-O qcow2 -c -o compression_type=zstd", "qcow2", "qcow2", 1.01},
                          Case{"-O vmdk -o subformat=streamOptimized", "vmdk", "vmdk", 1.02}}) {
        INFO(c.opts);
        std::string ours1 = t / ("one." + c.ext), ours = t / ("many." + c.ext), theirs = t / ("qemu." + c.ext);
        REQUIRE(run(tool + " convert -f raw -m 1 " + c.opts + " " + sh_quote(src) + " " + sh_quote(ours1)).status == 0);
        REQUIRE(run(tool + " convert -f raw -m 4 " + c.opts + " " + sh_quote(src) + " " + sh_quote(ours)).status == 0);
        REQUIRE(run("qemu-img convert -f raw " + c.opts + " " + sh_quote(src) + " " + sh_quote(theirs)).status == 0);
        auto cmp = run("qemu-img compare -f raw -F " + c.qfmt + " " + sh_quote(src) + " " + sh_quote(ours));
        CHECK_MESSAGE(cmp.status == 0, cmp.output);
        auto chk = run("qemu-img check -f " + c.qfmt + " " + sh_quote(ours));
        CHECK_MESSAGE(chk.status == 0, chk.output);
        // Chunks are written in offset order whatever the number of compressing threads.
        if (c.ext == "qcow2") CHECK(vt::sha256_file(ours1) == vt::sha256_file(ours));
        const double mine = static_cast<double>(std::filesystem::file_size(ours));
        const double qemu = static_cast<double>(std::filesystem::file_size(theirs));
        MESSAGE(c.opts << ": vdisk " << mine << " bytes, qemu-img " << qemu);
        CHECK(mine <= qemu * c.max_ratio);
        CHECK(mine < img.size() * 0.8);  // it did compress
    }
}
