// SPDX-License-Identifier: Apache-2.0
// vdisk measure: raw and qcow2 figures equal qemu-img measure's (human and JSON, sizes and images, chains,
// compressed sources, every qcow2 option that changes the layout); for the other formats the required size
// is checked against the files convert actually writes, within one allocation unit.
#include <filesystem>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

// Sources: a sparse raw file (data, a hole, a one-byte write, zeros written), and a qcow2 overlay over a base
// with data, zero clusters and a 2 MiB stretch of random data.
struct Sources {
    std::string raw, overlay, compressed;
};

Sources make_sources(const vt::TempDir& t) {
    Sources s{t / "holes.raw", t / "ov.qcow2", t / "comp.qcow2"};
    vt::sh("qemu-img create -q -f raw " + sh_quote(s.raw) + " 64M");
    vt::sh("qemu-io -f raw -c 'write -P 1 1M 100k' -c 'write -P 2 10M 1' -c 'write -P 3 63M 1M' " + sh_quote(s.raw) +
           " >/dev/null");
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(t / "base.qcow2") + " 100M");
    vt::sh("qemu-io -c 'write -P 7 0 3M' -c 'write -z 40M 2M' " + sh_quote(t / "base.qcow2") + " >/dev/null");
    vt::sh("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 " + sh_quote(s.overlay));
    vt::sh("qemu-io -c 'write -P 9 50M 1M' -c 'write -z 0 1M' -c 'write -P 5 99M 1M' " + sh_quote(s.overlay) +
           " >/dev/null");
    vt::sh("qemu-img convert -c -O qcow2 " + sh_quote(s.overlay) + " " + sh_quote(s.compressed));
    return s;
}

uint64_t field(const std::string& out, const std::string& key) {
    auto at = out.find(key);
    REQUIRE_MESSAGE(at != std::string::npos, out);
    return std::stoull(out.substr(at + key.size()));
}

uint64_t files_size(const std::string& dir) {
    uint64_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir)) n += std::filesystem::file_size(e.path());
    return n;
}

}  // namespace

TEST_CASE("measure: raw and qcow2 figures equal qemu-img's") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    Sources s = make_sources(t);
    std::vector<std::string> cases = {
        "-O raw --size 1000",
        "-O raw " + sh_quote(s.overlay),
        "--size 1G",
        "-O qcow2 --size 1000",
        "-O qcow2 --size 1G",
        "-O qcow2 -o refcount_bits=64 --size 100T",
        "-O qcow2 -o refcount_bits=1,cluster_size=512 --size 3G",
        "-O qcow2 -o extended_l2=on --size 3G",
        "-O qcow2 " + sh_quote(s.raw),
        "-O qcow2 -o cluster_size=512 " + sh_quote(s.raw),
        "-O qcow2 " + sh_quote(s.overlay),
        "-O qcow2 -o cluster_size=2M " + sh_quote(s.overlay),
        "-O qcow2 -o compat=0.10 " + sh_quote(s.overlay),
        "-O qcow2 -o preallocation=full,cluster_size=4k " + sh_quote(s.overlay),
        "-O qcow2 -o preallocation=metadata " + sh_quote(s.overlay),
        "-O qcow2 -o backing_file=x " + sh_quote(s.overlay),
        "-O qcow2 -f qcow2 " + sh_quote(s.compressed),
        "--output=json -O qcow2 " + sh_quote(s.overlay),
        "--output=json -O qcow2 " + sh_quote(s.raw),
        "--output=json -O raw --size 5G",
    };
    for (auto& c : cases) {
        auto ours = run(vt::tool() + " measure " + c);
        auto theirs = run("qemu-img measure " + c);
        REQUIRE_MESSAGE(theirs.status == 0, theirs.output);
        CHECK_MESSAGE(ours.status == 0, c);
        CHECK_MESSAGE(ours.output == theirs.output, c << "\nvdisk:\n" << ours.output << "qemu-img:\n" << theirs.output);
    }
}

TEST_CASE("measure: other formats within one unit of what convert writes") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    Sources s = make_sources(t);
    // A fully written source, for the fully-allocated figure.
    std::string full = t / "full.raw";
    auto data = vt::pattern(24u << 20, 11);
    vt::write_file(full, data);
    struct Case {
        std::string fmt, opts;
        uint64_t unit;
    };
    const uint64_t MiB = 1 << 20;
    std::vector<Case> cases = {
        {"vdi", "", MiB},
        {"vdi", "static=on", 0},
        {"vpc", "", 2 * MiB + 512},  // a block and its bitmap
        {"vpc", "subformat=fixed", 0},
        {"vpc", "block_size=512k", 512 * 1024 + 512},
        {"vhdx", "", 8 * MiB},
        {"vhdx", "subformat=fixed", 0},
        {"vhdx", "block_size=1M,log_size=2M", MiB},
        {"vmdk", "", 65536},
        {"vmdk", "subformat=monolithicFlat", 1024},
        {"vmdk", "subformat=twoGbMaxExtentSparse", 65536 + 512},  // a grain, and the descriptor estimate
        {"vmdk", "subformat=twoGbMaxExtentFlat", 1024},
        {"qcow2", "", 65536},
    };
    for (auto& c : cases) {
        for (const std::string& src : {s.raw, s.overlay, full}) {
            std::string dir = t / ("out-" + c.fmt);
            std::filesystem::remove_all(dir);
            std::filesystem::create_directory(dir);
            std::string o = c.opts.empty() ? "" : " -o " + c.opts;
            vt::sh(vt::tool() + " convert -O " + c.fmt + o + " " + sh_quote(src) + " " + sh_quote(dir + "/out.img"));
            uint64_t actual = files_size(dir);
            auto m = run(vt::tool() + " measure -O " + c.fmt + o + " " + sh_quote(src));
            REQUIRE_MESSAGE(m.status == 0, m.output);
            uint64_t required = field(m.output, "required size: ");
            uint64_t fully = field(m.output, "fully allocated size: ");
            INFO(c.fmt << " " << c.opts << " from " << src << ": actual " << actual << ", required " << required);
            CHECK(required >= actual);
            CHECK(required - actual <= c.unit);
            CHECK(fully >= required);
            if (src == full) CHECK(fully - actual <= c.unit);
        }
    }
    // streamOptimized: an upper bound (compression is not predicted).
    std::string dir = t / "out-stream";
    std::filesystem::create_directory(dir);
    vt::sh(vt::tool() + " convert -O vmdk -o subformat=streamOptimized " + sh_quote(full) + " " +
           sh_quote(dir + "/s.vmdk"));
    auto m = run(vt::tool() + " measure -O vmdk -o subformat=streamOptimized " + sh_quote(full));
    REQUIRE(m.status == 0);
    CHECK(field(m.output, "required size: ") >= files_size(dir));
}

TEST_CASE("measure: argument errors as qemu-img's, refused flags named") {
    vt::TempDir t;
    std::string img = t / "a.raw";
    vt::sh("truncate -s 1M " + sh_quote(img));
    auto both = run(vt::tool() + " measure --size 1G " + sh_quote(img));
    CHECK(both.status == 1);
    CHECK(both.output.find("--size N cannot be used together with a filename") != std::string::npos);
    auto none = run(vt::tool() + " measure -O qcow2");
    CHECK(none.status == 1);
    CHECK(none.output.find("either --size N or one filename") != std::string::npos);
    auto obj = run(vt::tool() + " measure --object secret,id=s0,data=x --size 1G");
    CHECK(obj.status == 1);
    CHECK(obj.output.find("--object") != std::string::npos);
    auto badopt = run(vt::tool() + " measure -O qcow2 -o foo=1 --size 1G");
    CHECK(badopt.status == 1);
    CHECK(badopt.output.find("foo") != std::string::npos);
    auto qcow = run(vt::tool() + " measure -O qcow --size 1G");
    CHECK(qcow.status == 1);
    CHECK(qcow.output.find("does not support size measurement") != std::string::npos);
}
