// SPDX-License-Identifier: Apache-2.0
// vdisk snapshot (qcow2 internal snapshots): create, list, apply, delete; every step checked by qemu-img
// check, the list against qemu-img snapshot -l, each snapshot's contents read back through qemu-img.
#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {}  // namespace

TEST_CASE("snapshot: create, list, apply and delete as qemu-img sees them") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string img = t / "s.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(img) + " 10M");
    vt::sh("qemu-io -c 'write -P 1 0 1M' -c 'write -c -P 5 2M 64k' " + sh_quote(img) + " >/dev/null");
    auto state1 = vt::qemu_read_raw(img, "qcow2", t.path);
    vt::sh(vt::tool() + " snapshot -c first " + sh_quote(img));
    vt::expect_qemu_check(img);
    vt::sh("qemu-io -c 'write -P 2 0 512k' -c 'write -P 3 5M 1M' -c 'write -c -P 6 3M 64k' " + sh_quote(img) +
           " >/dev/null");
    auto state2 = vt::qemu_read_raw(img, "qcow2", t.path);
    vt::sh(vt::tool() + " snapshot -c second " + sh_quote(img));
    vt::expect_qemu_check(img);
    auto ours = run(vt::tool() + " snapshot -l " + sh_quote(img));
    auto theirs = run("qemu-img snapshot -l " + sh_quote(img));
    REQUIRE(ours.status == 0);
    CHECK(ours.output == theirs.output);
    CHECK(theirs.output.find("first") != std::string::npos);
    // Each snapshot reads back as the image was when it was taken (qemu-img convert -l).
    vt::sh("qemu-img convert -l snapshot.name=first -O raw " + sh_quote(img) + " " + sh_quote(t / "first.raw"));
    CHECK(vt::read_file(t / "first.raw") == state1);
    vt::sh("qemu-img convert -l snapshot.id=2 -O raw " + sh_quote(img) + " " + sh_quote(t / "second.raw"));
    CHECK(vt::read_file(t / "second.raw") == state2);
    // Writes after a snapshot leave it alone.
    vt::sh("qemu-io -c 'write -P 9 0 4M' " + sh_quote(img) + " >/dev/null");
    vt::sh("qemu-img convert -l snapshot.name=first -O raw " + sh_quote(img) + " " + sh_quote(t / "first2.raw"));
    CHECK(vt::read_file(t / "first2.raw") == state1);
    // Apply: the active layer becomes the snapshot's contents.
    vt::sh(vt::tool() + " snapshot -a first " + sh_quote(img));
    vt::expect_qemu_check(img);
    CHECK(vt::qemu_read_raw(img, "qcow2", t.path) == state1);
    // Delete by name, then by id; the list matches qemu-img's after each.
    vt::sh(vt::tool() + " snapshot -d first " + sh_quote(img));
    vt::expect_qemu_check(img);
    CHECK(run(vt::tool() + " snapshot -l " + sh_quote(img)).output ==
          run("qemu-img snapshot -l " + sh_quote(img)).output);
    vt::sh("qemu-img convert -l snapshot.name=second -O raw " + sh_quote(img) + " " + sh_quote(t / "second2.raw"));
    CHECK(vt::read_file(t / "second2.raw") == state2);
    vt::sh(vt::tool() + " snapshot -d 2 " + sh_quote(img));
    vt::expect_qemu_check(img);
    CHECK(run("qemu-img snapshot -l " + sh_quote(img)).output.empty());
    CHECK(vt::qemu_read_raw(img, "qcow2", t.path) == state1);
}

TEST_CASE("snapshot: snapshots qemu-img made are applied and deleted cleanly, and errors") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string img = t / "q.qcow2";
    vt::sh("qemu-img create -q -f qcow2 -o compat=0.10 " + sh_quote(img) + " 8M");
    vt::sh("qemu-io -c 'write -P 7 1M 2M' " + sh_quote(img) + " >/dev/null");
    auto before = vt::qemu_read_raw(img, "qcow2", t.path);
    vt::sh("qemu-img snapshot -c q1 " + sh_quote(img));
    vt::sh("qemu-io -c 'write -P 8 0 8M' " + sh_quote(img) + " >/dev/null");
    vt::sh(vt::tool() + " snapshot -a q1 " + sh_quote(img));
    vt::expect_qemu_check(img);
    CHECK(vt::qemu_read_raw(img, "qcow2", t.path) == before);
    vt::sh(vt::tool() + " snapshot -c mine " + sh_quote(img));
    vt::expect_qemu_check(img);
    CHECK(run(vt::tool() + " snapshot -l " + sh_quote(img)).output ==
          run("qemu-img snapshot -l " + sh_quote(img)).output);
    vt::sh(vt::tool() + " snapshot -d q1 " + sh_quote(img));
    vt::expect_qemu_check(img);

    auto missing = run(vt::tool() + " snapshot -d nope " + sh_quote(img));
    CHECK(missing.status == 1);
    CHECK(missing.output.find("Could not delete snapshot 'nope'") != std::string::npos);
    auto two = run(vt::tool() + " snapshot -l -c x " + sh_quote(img));
    CHECK(two.status == 1);
    auto obj = run(vt::tool() + " snapshot --object secret,id=a,data=b -l " + sh_quote(img));
    CHECK(obj.status == 1);
    CHECK(obj.output.find("--object") != std::string::npos);
    vt::sh("truncate -s 1M " + sh_quote(t / "r.raw"));
    auto raw = run(vt::tool() + " snapshot -f raw -c x " + sh_quote(t / "r.raw"));
    CHECK(raw.status == 1);
    CHECK(raw.output.find("no internal snapshots") != std::string::npos);
}

TEST_CASE("amend: compat 0.10 <-> 1.1 and lazy_refcounts, as qemu-img info reports them") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string base = t / "base.qcow2", img = t / "a.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(base) + " 8M");
    vt::sh("qemu-io -c 'write -P 3 0 8M' " + sh_quote(base) + " >/dev/null");
    vt::sh("qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 " + sh_quote(img));
    vt::sh("qemu-io -c 'write -P 1 1M 1M' " + sh_quote(img) + " >/dev/null");
    vt::sh("qemu-img snapshot -c s1 " + sh_quote(img));
    auto contents = vt::qemu_read_raw(img, "qcow2", t.path);
    auto info = [&] { return run("qemu-img info " + sh_quote(img)).output; };
    vt::sh(vt::tool() + " amend -o compat=1.1 " + sh_quote(img));
    vt::expect_qemu_check(img);
    CHECK(info().find("compat: 1.1") != std::string::npos);
    CHECK(info().find("backing file: base.qcow2") != std::string::npos);
    CHECK(info().find("backing file format: qcow2") != std::string::npos);
    CHECK(vt::qemu_read_raw(img, "qcow2", t.path) == contents);
    vt::sh(vt::tool() + " amend -o lazy_refcounts=on " + sh_quote(img));
    vt::expect_qemu_check(img);
    CHECK(info().find("lazy refcounts: true") != std::string::npos);
    vt::sh(vt::tool() + " amend -o lazy_refcounts=off " + sh_quote(img));
    CHECK(info().find("lazy refcounts: false") != std::string::npos);
    vt::sh(vt::tool() + " amend -o compat=0.10 " + sh_quote(img));
    vt::expect_qemu_check(img);
    CHECK(info().find("compat: 0.10") != std::string::npos);
    CHECK(vt::qemu_read_raw(img, "qcow2", t.path) == contents);
    CHECK(run("qemu-img snapshot -l " + sh_quote(img)).output.find("s1") != std::string::npos);
    auto lazy2 = run(vt::tool() + " amend -o lazy_refcounts=on " + sh_quote(img));
    CHECK(lazy2.status == 1);
    CHECK(lazy2.output.find("Lazy refcounts only supported") != std::string::npos);

    // Zero clusters cannot be expressed in version 2: refused, image unchanged.
    vt::sh(vt::tool() + " amend -o compat=1.1 " + sh_quote(img));
    vt::sh("qemu-io -c 'write -z 4M 1M' " + sh_quote(img) + " >/dev/null");
    auto down = run(vt::tool() + " amend -o compat=0.10 " + sh_quote(img));
    CHECK(down.status == 1);
    CHECK(down.output.find("zero clusters") != std::string::npos);
    CHECK(info().find("compat: 1.1") != std::string::npos);
    auto rc = run(vt::tool() + " amend -o refcount_bits=3 " + sh_quote(img));
    CHECK(rc.status == 1);
    CHECK(rc.output.find("refcount_bits") != std::string::npos);
    auto cs = run(vt::tool() + " amend -o cluster_size=4k " + sh_quote(img));
    CHECK(cs.status == 1);
    CHECK(cs.output.find("cluster_size") != std::string::npos);
    vt::expect_qemu_check(img);
}
