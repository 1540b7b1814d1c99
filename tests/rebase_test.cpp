// SPDX-License-Identifier: Apache-2.0
// vdisk rebase and commit against qemu-img doing the same on a copy of the same chain: contents read by
// qemu-img, backing references in qemu-img info, qemu-img check on every image written.
#include <filesystem>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

std::string backing_of(const std::string& img) {
    auto r = run("qemu-img info --output=json " + sh_quote(img));
    vdisk::Json j;
    REQUIRE(vdisk::Json::parse(r.output, j));
    auto* b = j.get("backing-filename");
    return b ? *b->as_string() : "";
}

// dir/base1 (0x11 at 0..1M, 0x12 at 4M..5M), dir/base2 (0x21 at 0..2M), dir/top over base1 (0x31 at 512k).
void make_chain(const std::string& dir) {
    auto q = [&](const std::string& n) { return sh_quote(dir + "/" + n); };
    vt::sh("qemu-img create -q -f qcow2 " + q("base1.qcow2") + " 8M");
    vt::sh("qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 4M 1M' " + q("base1.qcow2") + " >/dev/null");
    vt::sh("qemu-img create -q -f qcow2 " + q("base2.qcow2") + " 8M");
    vt::sh("qemu-io -c 'write -P 0x21 0 2M' " + q("base2.qcow2") + " >/dev/null");
    vt::sh("qemu-img create -q -f qcow2 -b base1.qcow2 -F qcow2 " + q("top.qcow2"));
    vt::sh("qemu-io -c 'write -P 0x31 512k 64k' -c 'write -P 0x32 7M 4k' " + q("top.qcow2") + " >/dev/null");
}

}  // namespace

TEST_CASE("rebase: safe and unsafe, to another base and to none, as qemu-img rebase does") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string ours = t / "ours", theirs = t / "theirs";
    for (auto& d : {ours, theirs}) {
        vt::sh("mkdir -p " + sh_quote(d));
        make_chain(d);
    }
    auto original = vt::qemu_read_raw(ours + "/top.qcow2", "qcow2", t.path);
    struct Step {
        std::string args;
        std::string backing;
    };
    for (const Step& s : std::vector<Step>{{"-b base2.qcow2 -F qcow2", "base2.qcow2"},
                                           {"-u -b base1.qcow2 -F qcow2", "base1.qcow2"},
                                           {"-b base2.qcow2 -F qcow2", "base2.qcow2"},
                                           {"-b ''", ""}}) {
        CAPTURE(s.args);
        vt::sh(vt::tool() + " rebase " + s.args + " " + sh_quote(ours + "/top.qcow2"));
        vt::sh("qemu-img rebase " + s.args + " " + sh_quote(theirs + "/top.qcow2"));
        vt::expect_qemu_check(ours + "/top.qcow2");
        CHECK(backing_of(ours + "/top.qcow2") == s.backing);
        auto a = vt::qemu_read_raw(ours + "/top.qcow2", "qcow2", t.path);
        auto b = vt::qemu_read_raw(theirs + "/top.qcow2", "qcow2", t.path);
        CHECK(a == b);
    }
    // Safe steps never change what the image reads; the one unsafe step did (base1 shows through again),
    // and the next safe step kept that.
    auto now = vt::qemu_read_raw(ours + "/top.qcow2", "qcow2", t.path);
    CHECK(now.size() == original.size());
    CHECK(now == original);
    // Without -F (qemu-img 7.2 refuses), vdisk records the format it probed.
    vt::sh(vt::tool() + " rebase -b base1.qcow2 " + sh_quote(ours + "/top.qcow2"));
    auto info = run("qemu-img info --output=json " + sh_quote(ours + "/top.qcow2"));
    CHECK(info.output.find("\"backing-filename-format\": \"qcow2\"") != std::string::npos);
    CHECK(vt::qemu_read_raw(ours + "/top.qcow2", "qcow2", t.path) == original);
}

TEST_CASE("commit: into the backing file (top emptied, or kept with -d) and into a deeper base with -b") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string ours = t / "ours", theirs = t / "theirs";
    for (auto& d : {ours, theirs}) {
        vt::sh("mkdir -p " + sh_quote(d));
        make_chain(d);
    }
    auto top_view = vt::qemu_read_raw(ours + "/top.qcow2", "qcow2", t.path);
    auto r = run(vt::tool() + " commit " + sh_quote(ours + "/top.qcow2"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    CHECK(r.output == "Image committed.\n");
    vt::sh("qemu-img commit -q " + sh_quote(theirs + "/top.qcow2"));
    vt::expect_qemu_check(ours + "/top.qcow2");
    vt::expect_qemu_check(ours + "/base1.qcow2");
    CHECK(vt::qemu_read_raw(ours + "/base1.qcow2", "qcow2", t.path) == top_view);
    CHECK(vt::qemu_read_raw(ours + "/base1.qcow2", "qcow2", t.path) ==
          vt::qemu_read_raw(theirs + "/base1.qcow2", "qcow2", t.path));
    // The emptied top holds nothing of its own and still reads the same through its base.
    auto map = run("qemu-img map --output=json " + sh_quote(ours + "/top.qcow2"));
    CHECK(map.output.find("\"depth\": 0") == std::string::npos);
    CHECK(vt::qemu_read_raw(ours + "/top.qcow2", "qcow2", t.path) == top_view);

    // Three layers: mid over base2, leaf over mid; commit leaf into base2 (-b), leaf kept.
    std::string d = t / "deep";
    vt::sh("mkdir -p " + sh_quote(d));
    make_chain(d);
    vt::sh("qemu-img create -q -f qcow2 -b base2.qcow2 -F qcow2 " + sh_quote(d + "/mid.qcow2"));
    vt::sh("qemu-io -c 'write -P 0x41 1M 1M' -c 'write -z 0 64k' " + sh_quote(d + "/mid.qcow2") + " >/dev/null");
    vt::sh("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 " + sh_quote(d + "/leaf.qcow2"));
    vt::sh("qemu-io -c 'write -P 0x51 3M 4k' " + sh_quote(d + "/leaf.qcow2") + " >/dev/null");
    auto leaf_view = vt::qemu_read_raw(d + "/leaf.qcow2", "qcow2", t.path);
    vt::sh(vt::tool() + " commit -q -b base2.qcow2 " + sh_quote(d + "/leaf.qcow2"));
    vt::expect_qemu_check(d + "/base2.qcow2");
    CHECK(vt::qemu_read_raw(d + "/base2.qcow2", "qcow2", t.path) == leaf_view);
    CHECK(vt::qemu_read_raw(d + "/leaf.qcow2", "qcow2", t.path) == leaf_view);
}

TEST_CASE("rebase and commit: errors name the problem") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(t / "lone.qcow2") + " 1M");
    auto c = run(vt::tool() + " commit " + sh_quote(t / "lone.qcow2"));
    CHECK(c.status == 1);
    CHECK(c.output.find("no backing file") != std::string::npos);
    auto rl = run(vt::tool() + " commit -r 1M " + sh_quote(t / "lone.qcow2"));
    CHECK(rl.status == 1);
    CHECK(rl.output.find("-r") != std::string::npos);
    auto nob = run(vt::tool() + " rebase " + sh_quote(t / "lone.qcow2"));
    CHECK(nob.status == 1);
    auto missing = run(vt::tool() + " rebase -b nothere.qcow2 " + sh_quote(t / "lone.qcow2"));
    CHECK(missing.status == 1);
    vt::sh("qemu-img create -q -f vpc " + sh_quote(t / "d.vhd") + " 1M");
    auto vhd = run(vt::tool() + " rebase -u -b lone.qcow2 " + sh_quote(t / "d.vhd"));
    CHECK(vhd.status == 1);
    CHECK(vhd.output.find("parent must be a VHD") != std::string::npos);
}

TEST_CASE("dd: qemu-img dd's operands and size rule, output compared with qemu-img dd's") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    make_chain(t.path);
    std::string src = t / "top.qcow2";
    for (std::string ops : {"bs=64k count=10 skip=2", "bs=1M skip=1", "bs=512 count=3", "bs=1000",
                            "-O qcow2 bs=1M count=5", "-O vmdk bs=4k skip=3"}) {
        CAPTURE(ops);
        std::string fmt = ops.rfind("-O ", 0) == 0 ? ops.substr(3, ops.find(' ', 3) - 3) : "raw";
        std::filesystem::remove(t / "q.out");
        std::filesystem::remove(t / "v.out");
        vt::sh("qemu-img dd " + ops + " if=" + sh_quote(src) + " of=" + sh_quote(t / "q.out"));
        vt::sh(vt::tool() + " dd " + ops + " if=" + sh_quote(src) + " of=" + sh_quote(t / "v.out"));
        auto cmp = run("qemu-img compare -f " + fmt + " -F " + fmt + " " + sh_quote(t / "q.out") + " " +
                       sh_quote(t / "v.out"));
        CHECK_MESSAGE(cmp.status == 0, cmp.output);
        CHECK(vt::qemu_read_raw(t / "v.out", fmt, t.path).size() == vt::qemu_read_raw(t / "q.out", fmt, t.path).size());
    }
    auto far = run(vt::tool() + " dd bs=64k skip=5000 if=" + sh_quote(src) + " of=" + sh_quote(t / "f.out"));
    CHECK(far.status == 1);
    CHECK(far.output.find("cannot skip") != std::string::npos);
    CHECK(!std::filesystem::exists(t / "f.out"));
    auto bad = run(vt::tool() + " dd osize=5 if=" + sh_quote(src) + " of=" + sh_quote(t / "g.out"));
    CHECK(bad.status == 1);
    CHECK(bad.output.find("unrecognized operand osize") != std::string::npos);
}
