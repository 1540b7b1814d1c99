// SPDX-License-Identifier: Apache-2.0
// qcow2 check: the numbers `qemu-img check --output=json` reports, leaks and their repair, corruptions.
#include <cstring>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "util/endian.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

Registry make_reg() { return vt::registry_of(make_raw_format, make_qcow2_format); }

Json qemu_check(const std::string& img) {
    auto r = vt::run("qemu-img check --output=json -f qcow2 " + img);
    Json j;
    INFO(r.output);
    REQUIRE(Json::parse(r.output.substr(r.output.find('{')), j));
    return j;
}

uint64_t field(const Json& j, const char* name) {
    auto* v = j.get(name);
    return v && v->as_uint() ? *v->as_uint() : 0;
}

CheckResult vdisk_check(const Registry& reg, const std::string& img, RepairMode mode = RepairMode::none) {
    auto opened = vt::open_host(reg, img, "qcow2", mode != RepairMode::none);
    REQUIRE_MESSAGE(opened.ok(), vt::error_text(opened));
    auto r = opened->format->check(*opened->device, mode);
    REQUIRE_MESSAGE(r.ok(), vt::error_text(r));
    return *r;
}

void expect_same_numbers(const Registry& reg, const std::string& img) {
    Json q = qemu_check(img);
    CheckResult c = vdisk_check(reg, img);
    INFO(img << " " << q.dump());
    CHECK(c.corruptions == field(q, "corruptions"));
    CHECK(c.leaks == field(q, "leaks"));
    CHECK(c.image_end_offset.value_or(0) == field(q, "image-end-offset"));
    CHECK(c.total_clusters.value_or(0) == field(q, "total-clusters"));
    CHECK(c.allocated_clusters.value_or(0) == field(q, "allocated-clusters"));
    CHECK(c.fragmented_clusters.value_or(0) == field(q, "fragmented-clusters"));
    CHECK(c.compressed_clusters.value_or(0) == field(q, "compressed-clusters"));
}

// Patch the stored refcount of host cluster `c` (16-bit refcounts, first refcount block).
void patch_refcount(const std::string& img, uint64_t c, uint16_t value) {
    auto bytes = vt::read_file(img);
    uint64_t rt = util::load_be<uint64_t>(&bytes[48]);
    uint64_t rb = util::load_be<uint64_t>(&bytes[rt]);
    util::store_be<uint16_t>(&bytes[rb + 2 * c], value);
    vt::write_file(img, bytes);
}

}  // namespace

TEST_CASE("qcow2 check numbers equal qemu-img check on clean images") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::vector<uint8_t> src(3 << 20);
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i / 1000);
    auto noise = vt::pattern(200000, 2);
    std::copy(noise.begin(), noise.end(), src.begin() + 100000);
    vt::write_file(tmp / "src.raw", src);
    vt::sh("qemu-img convert -c -f raw -O qcow2 " + tmp / "src.raw" + " " + tmp / "a.qcow2");
    vt::sh("qemu-img resize -q " + tmp / "a.qcow2" + " 16M");
    vt::sh(
        "qemu-io -f qcow2 -c 'write -P 1 5M 100k' -c 'write -P 2 9M 64k' -c 'write -P 3 7M 4k' -c 'write -z 100k 64k' " +
        tmp / "a.qcow2");
    expect_same_numbers(reg, tmp / "a.qcow2");
    vt::sh("qemu-img snapshot -c s1 " + tmp / "a.qcow2");
    vt::sh("qemu-io -f qcow2 -c 'write -P 4 5M 200k' " + tmp / "a.qcow2");
    expect_same_numbers(reg, tmp / "a.qcow2");
    vt::sh("qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 " + tmp / "b.qcow2" + " 4M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 3M 10k' -c 'write -P 3 100k 10k' " + tmp / "b.qcow2");
    expect_same_numbers(reg, tmp / "b.qcow2");
    vt::sh("qemu-img create -q -f qcow2 -o extended_l2=on " + tmp / "e.qcow2" + " 4M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 1 4k 8k' -c 'write -P 2 3M 100k' " + tmp / "e.qcow2");
    expect_same_numbers(reg, tmp / "e.qcow2");
}

TEST_CASE("qcow2 check finds a leak, repairs it, and finds a refcount that is too low") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "l.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + img + " 4M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 1 0 300k' -c 'discard 64k 128k' " + img);
    // The discarded clusters stay in the file with refcount 0; marking them used makes two leaks.
    auto bytes = vt::read_file(img);
    uint64_t rb = util::load_be<uint64_t>(&bytes[util::load_be<uint64_t>(&bytes[48])]);
    int patched = 0;
    for (uint64_t c = 0; c < bytes.size() / 65536 && patched < 2; ++c)
        if (util::load_be<uint16_t>(&bytes[rb + 2 * c]) == 0) {
            patch_refcount(img, c, 1);
            ++patched;
        }
    REQUIRE(patched == 2);
    expect_same_numbers(reg, img);
    CheckResult c = vdisk_check(reg, img);
    CHECK(c.leaks == 2);
    CHECK(c.corruptions == 0);
    CheckResult fixed = vdisk_check(reg, img, RepairMode::leaks);
    CHECK(fixed.leaks_fixed == 2);
    auto q = qemu_check(img);
    CHECK(field(q, "leaks") == 0);
    CHECK(field(q, "corruptions") == 0);
    CHECK(vdisk_check(reg, img).leaks == 0);

    // A data cluster whose stored refcount is 0: qemu-img and vdisk both call it a corruption.
    std::string bad = tmp / "c.qcow2";
    vt::sh("cp " + img + " " + bad);
    auto opened = vt::open_host(reg, bad);
    REQUIRE(opened.ok());
    auto e = opened->device->block_status(0, 65536);
    REQUIRE(e.ok());
    REQUIRE(e->host_offset);
    uint64_t host_cluster = *e->host_offset / 65536;
    opened->device.reset();
    patch_refcount(bad, host_cluster, 0);
    CheckResult cc = vdisk_check(reg, bad);
    CHECK(cc.corruptions >= 1);
    CHECK(cc.corruptions == field(qemu_check(bad), "corruptions"));
    CheckResult rep = vdisk_check(reg, bad, RepairMode::all);
    CHECK(rep.corruptions_fixed >= 1);
    auto q2 = qemu_check(bad);
    CHECK(field(q2, "corruptions") == 0);
    CHECK(field(q2, "leaks") == 0);
}

TEST_CASE("qcow2 dirty image (lazy refcounts): writes refused until check -r all repairs it") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "d.qcow2";
    vt::sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on " + img + " 4M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 1 0 200k' " + img);
    // What a crash with lazy refcounts leaves: the dirty bit and a refcount that was never written.
    auto opened = vt::open_host(reg, img);
    REQUIRE(opened.ok());
    auto e = opened->device->block_status(65536, 65536);
    REQUIRE(e.ok());
    uint64_t host_cluster = *e->host_offset / 65536;
    opened->device.reset();
    patch_refcount(img, host_cluster, 0);
    auto bytes = vt::read_file(img);
    bytes[79] |= 1;
    vt::write_file(img, bytes);
    {
        auto rw = vt::open_host(reg, img, "qcow2", true);
        REQUIRE(rw.ok());
        CHECK(rw->device->info().dirty);
        std::vector<uint8_t> d(512, 2);
        auto st = rw->device->write(0, d);
        REQUIRE(!st.ok());
        CHECK(st.error().code == ErrorCode::unsupported);
        auto r = rw->format->check(*rw->device, RepairMode::all);
        REQUIRE(r.ok());
        CHECK(r->corruptions == 1);
        CHECK(r->corruptions_fixed == 1);
        CHECK(!rw->device->info().dirty);
        REQUIRE(rw->device->write(0, d).ok());
        REQUIRE(rw->device->close().ok());
    }
    auto q = qemu_check(img);
    CHECK(field(q, "corruptions") == 0);
    CHECK(field(q, "leaks") == 0);
    auto info = vt::run("qemu-img info --output=json " + img);
    CHECK(info.output.find("\"dirty-flag\": false") != std::string::npos);
}
