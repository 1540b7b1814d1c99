// SPDX-License-Identifier: Apache-2.0
// VHDX reading: corpus images (Disk2vhd, Hyper-V, Windows 10, a dirty log, a differencing checkpoint without
// its parent) and images qemu-img made and qemu-io wrote, read as qemu-img and the manifest read them.
#include <filesystem>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vhdx_helpers.hpp"

using namespace vdisk;
using namespace vhdx_test;

namespace {
void verify(const std::string& rel) { vt::verify_corpus_image(make_reg(), rel, "vhdx"); }
}  // namespace

TEST_CASE("corpus: Disk2vhd image with equal header sequence numbers") {
    verify("real/qemu-iotests/test-disk2vhd.vhdx.bz2");
}
TEST_CASE("corpus: Hyper-V dynamic 1 GiB") { verify("real/qemu-iotests/iotest-dynamic-1G.vhdx.bz2"); }
TEST_CASE("corpus: dirty log replayed in memory on a read-only open") {
    verify("real/qemu-iotests/iotest-dirtylog-10G-4M.vhdx.bz2");
}
TEST_CASE("corpus: Windows 10 dynamic") { verify("real/dissect.hypervisor/dynamic.vhdx.gz"); }
TEST_CASE("corpus: Windows 10 fixed") { verify("real/dissect.hypervisor/fixed.vhdx.gz"); }

TEST_CASE("corpus: dirty log is pending read-only and replayed into the file read-write") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string rel = "real/qemu-iotests/iotest-dirtylog-10G-4M.vhdx.bz2";
    std::string path = vt::unpack_corpus(*root, rel, tmp.path);
    {
        auto ro = vt::open_host(reg, path);
        REQUIRE(ro.ok());
        CHECK(ro->device->info().dirty);
        auto chk = ro->format->check(*ro->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 1);
    }
    std::string before = vt::sha256_file(path);
    {
        auto rw = vt::open_host(reg, path, "", true);
        REQUIRE_MESSAGE(rw.ok(), vt::error_text(rw));
        CHECK(!rw->device->info().dirty);
        REQUIRE(rw->device->close().ok());
    }
    CHECK(vt::sha256_file(path) != before);
    // The replayed file is clean for qemu-img too (it refuses images with a pending log read-only).
    if (vt::need_qemu()) {
        vt::expect_qemu_check(path, "vhdx");
    }
    auto entry = vt::manifest_entry(*root, rel);
    auto ro = vt::open_host(reg, path);
    REQUIRE(ro.ok());
    CHECK(!ro->device->info().dirty);
    for (auto& x : *entry.get("data_extents")->as_array())
        CHECK(vt::sha256_range(*ro->device, *x.get("offset")->as_uint(), *x.get("length")->as_uint()) ==
              *x.get("sha256")->as_string());
}

TEST_CASE("corpus: differencing checkpoint without its parent") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string path = vt::unpack_corpus(*root, "real/dissect.hypervisor/differencing.avhdx.gz", tmp.path);
    auto r = vt::open_host(reg, path);
    REQUIRE(!r.ok());
    CHECK(r.error().code == ErrorCode::not_found);
    CHECK(r.error().message.find("Generation 1_49C4BAF3") != std::string::npos);
    auto fs = make_posix_file_system();
    OpenOptions o;
    o.no_backing = true;
    auto img = open_image(reg, *fs, path, o);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    CHECK(img->device->size() == 8ull << 30);
    auto ref = img->device->backing_reference();
    REQUIRE(ref);
    REQUIRE(!ref->names.empty());
    CHECK(ref->names[0].find('\\') == std::string::npos);
    CHECK(ref->names[0].find(".avhdx") != std::string::npos);
    auto info = img->device->info();
    CHECK(info.cluster_size == 2u << 20);
    REQUIRE(info.backing_filename);
    // Without the parent the unallocated parts read as zeros and the allocated ones are readable.
    auto m = map_extent(*img->device, 0, 1ull << 30);
    REQUIRE(m.ok());
    auto chk = img->format->check(*img->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}

TEST_CASE("qemu-made images with qemu-io writes read identically") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    for (std::string opts : {"block_size=1M", "block_size=8M,block_state_zero=off", "subformat=fixed,block_size=2M"}) {
        INFO(opts);
        std::string img = tmp / "q.vhdx";
        REQUIRE(vt::run("qemu-img create -f vhdx -o " + opts + " " + img + " 40M").status == 0);
        auto w = vt::run(
            "qemu-io -f vhdx -c 'write -P 0xab 0 64k' -c 'write -P 0x5c 1536k 3M' -c 'write -P 0x11 "
            "40894464 512' " +
            img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        auto want = vt::qemu_read_raw(img, "vhdx", tmp.path);
        auto dev = vt::open_host(reg, img);
        REQUIRE(dev.ok());
        CHECK(vt::read_all(*dev->device) == want);
        auto chk = dev->format->check(*dev->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 0);
        std::filesystem::remove(img);
    }
}
