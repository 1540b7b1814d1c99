// SPDX-License-Identifier: Apache-2.0
// vdisk amend -o refcount_bits=N on qcow2, against qemu-img amend doing the same on a copy: refcount-bits in
// qemu-img info, qemu-img check clean (no leaks, no corruptions), the active layer and an internal snapshot
// read the same before and after, and further writes by qemu-io keep the image clean.
#include <filesystem>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

std::string V() { return sh_quote(vt::tool_path()); }

void sh(const std::string& cmd) {
    auto r = run(cmd);
    REQUIRE_MESSAGE(r.status == 0, std::string(cmd + ": " + r.output));
}

uint64_t refcount_bits(const std::string& img) {
    auto r = run("qemu-img info --output=json " + sh_quote(img));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    vdisk::Json j;
    REQUIRE(vdisk::Json::parse(r.output, j));
    return *j.get("format-specific")->get("data")->get("refcount-bits")->as_uint();
}

// qemu-img check must find nothing wrong (exit 0: no corruptions and no leaks).
void clean(const std::string& img) {
    auto r = run("qemu-img check " + sh_quote(img));
    CHECK_MESSAGE(r.status == 0, r.output);
}

std::vector<uint8_t> snapshot_raw(const std::string& img, const std::string& snap, const std::string& dir) {
    std::string out = dir + "/snap.raw";
    sh("qemu-img convert -l snapshot.name=" + snap + " -O raw " + sh_quote(img) + " " + sh_quote(out));
    auto d = vt::read_file(out);
    std::filesystem::remove(out);
    return d;
}

}  // namespace

TEST_CASE("amend refcount_bits: every width, as qemu-img amend, the image stays clean") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    const std::string ours = t / "ours.qcow2", theirs = t / "theirs.qcow2";
    sh("qemu-img create -q -f qcow2 -o cluster_size=4k " + sh_quote(ours) + " 64M");
    sh("qemu-io -c 'write -P 0x11 0 5M' -c 'write -P 0x12 40M 1M' " + sh_quote(ours) + " >/dev/null");
    sh("qemu-img snapshot -c s1 " + sh_quote(ours));
    sh("qemu-io -c 'write -P 0x13 0 1M' -c 'write -c -P 0x14 50M 8k' " + sh_quote(ours) + " >/dev/null");
    sh("cp " + sh_quote(ours) + " " + sh_quote(theirs));
    const auto active = vt::qemu_read_raw(ours, "qcow2", t.path);
    const auto snap = snapshot_raw(ours, "s1", t.path);
    // Clusters shared with the snapshot, and the host cluster two compressed clusters share, have refcount
    // 2: widths from 2 bits up hold them.
    for (int bits : {64, 2, 8, 32, 4, 16}) {
        CAPTURE(bits);
        const std::string opt = " -o refcount_bits=" + std::to_string(bits) + " ";
        sh(V() + " amend" + opt + sh_quote(ours));
        sh("qemu-img amend" + opt + sh_quote(theirs));
        CHECK(refcount_bits(ours) == static_cast<uint64_t>(bits));
        CHECK(refcount_bits(theirs) == static_cast<uint64_t>(bits));
        clean(ours);
        sh(V() + " check " + sh_quote(ours));
        CHECK(vt::qemu_read_raw(ours, "qcow2", t.path) == active);
        CHECK(snapshot_raw(ours, "s1", t.path) == snap);
    }
    // Writes after the change allocate through the new refcount structures.
    sh("qemu-io -c 'write -P 0x15 20M 3M' " + sh_quote(ours) + " >/dev/null");
    clean(ours);
    auto q = run("qemu-io -c 'read -P 0x15 20M 3M' -c 'read -P 0x13 0 1M' -c 'read -P 0x14 50M 8k' " + sh_quote(ours));
    CHECK_MESSAGE(q.output.find("Pattern verification failed") == std::string::npos, q.output);
    // And through vdisk's own writer.
    {
        auto img = vt::open_host(vdisk::Registry::builtin(), ours, "qcow2", true);
        REQUIRE(img.ok());
        auto data = vt::pattern(1 << 20, 9);
        REQUIRE(img->device->write(30 << 20, data).ok());
        REQUIRE(img->device->close().ok());
    }
    clean(ours);
}

TEST_CASE("amend refcount_bits: refused where the refcounts or the version cannot take it") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    const std::string img = t / "a.qcow2";
    sh("qemu-img create -q -f qcow2 " + sh_quote(img) + " 16M");
    sh("qemu-io -c 'write -P 0x11 0 1M' " + sh_quote(img) + " >/dev/null");
    sh("qemu-img snapshot -c s1 " + sh_quote(img));
    struct Case {
        std::string opts, message;
    };
    for (const Case& c : std::vector<Case>{
             {"refcount_bits=1", "has a refcount of 2"},  // snapshot-shared clusters
             {"refcount_bits=3", "power of two from 1 to 64"},
             {"refcount_bits=128", "power of two from 1 to 64"},
             {"compat=0.10,refcount_bits=8", "require compatibility level 1.1"},
         }) {
        CAPTURE(c.opts);
        auto before = vt::sha256_file(img);
        auto r = run(V() + " amend -o " + c.opts + " " + sh_quote(img));
        CHECK(r.status != 0);
        CHECK_MESSAGE(r.output.find(c.message) != std::string::npos, r.output);
        CHECK(vt::sha256_file(img) == before);
    }
    // compat 0.10 images only have 16-bit refcounts.
    sh("qemu-img create -q -f qcow2 -o compat=0.10 " + sh_quote(t / "v2.qcow2") + " 16M");
    auto r = run(V() + " amend -o refcount_bits=8 " + sh_quote(t / "v2.qcow2"));
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.output.find("compatibility level 1.1") != std::string::npos, r.output);
    // Upgrading and narrowing in one amend works.
    sh(V() + " amend -o compat=1.1,refcount_bits=8 " + sh_quote(t / "v2.qcow2"));
    CHECK(refcount_bits(t / "v2.qcow2") == 8);
    clean(t / "v2.qcow2");
}
