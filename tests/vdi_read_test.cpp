// SPDX-License-Identifier: Apache-2.0
// VDI reading: corpus images (qemu, VirtualBox, Sun VirtualBox), a qemu-made image read as qemu-img reads it
// (info, block status), non-default block sizes, block extra data and version 0 headers.
#include <algorithm>
#include <cstring>

#include "util/bytes.hpp"

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdi_helpers.hpp"

using namespace vdisk;
using namespace vdi_test;

namespace {
void verify(const std::string& rel) { vt::verify_corpus_image(make_reg(), rel, "vdi"); }
}  // namespace

TEST_CASE("corpus: qemu-written dynamic image with a leading hole") { verify("real/dissect.hypervisor/basic.vdi.gz"); }
TEST_CASE("corpus: VirtualBox 8 GiB dynamic image") { verify("real/pyvbox/TestHD.vdi.xz"); }
TEST_CASE("corpus: Sun VirtualBox image with no block allocated") { verify("real/pyvbox/TestHD-2009.vdi.xz"); }

TEST_CASE("probe, info and block status of a qemu-made image") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "q.vdi";
    REQUIRE(vt::run("qemu-img create -f vdi " + img + " 10M").status == 0);
    auto w = vt::run(
        "qemu-io -f vdi -c 'write -P 0xab 1M 64k' -c 'write -P 0x5c 3584k 1M' -c 'write -P 0x11 "
        "10484736 512' " +
        img);
    REQUIRE_MESSAGE(w.status == 0, w.output);
    auto want = vt::qemu_read_raw(img, "vdi", tmp.path);
    auto dev = vt::open_host(reg, img);
    REQUIRE(dev.ok());
    CHECK(std::string(dev->format->name()) == "vdi");
    CHECK(vt::read_all(*dev->device) == want);
    auto info = dev->device->info();
    CHECK(info.virtual_size == 10 * MiB);
    CHECK(info.cluster_size == 1 * MiB);
    const Json* data = info.format_specific.get("data");
    REQUIRE(data);
    CHECK(*data->get("image-type")->as_string() == "normal");
    CHECK(*data->get("block-size")->as_uint() == 1 * MiB);
    CHECK(*data->get("blocks-allocated")->as_uint() == 4);
    // qemu-img info shows the same UUID (it prints none, but the file has it in Microsoft byte order).
    auto bytes = vt::read_file(img);
    CHECK(*data->get("uuid")->as_string() == util::guid_to_string(bytes.data() + kUuidCreate));
    // Block 0 is free, block 1 allocated (slot 0), blocks 3 and 4 allocated in consecutive slots.
    auto e = dev->device->block_status(0, 10 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::unallocated);
    CHECK(e->length == 1 * MiB);
    e = dev->device->block_status(1 * MiB + 4096, 10 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::data);
    CHECK(e->length == 1 * MiB - 4096);
    CHECK(e->host_offset == le32(bytes, kOffData) + 4096);
    e = dev->device->block_status(3 * MiB, 10 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::data);
    CHECK(e->length == 2 * MiB);  // slots 1 and 2 are contiguous
    auto chk = dev->format->check(*dev->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}

TEST_CASE("non-default block size, block extra data and a version 0 header") {
    auto reg = make_reg();
    // 3 MiB disk in 512 KiB blocks with 512 bytes of extra data in front of each block; slots in reverse.
    const uint32_t bs = 512 * 1024, extra = 512, blocks = 6;
    std::vector<uint8_t> img(0x400, 0);
    std::memcpy(img.data(), "<<< test >>>\n", 13);
    put_le32(img, 0x40, 0xbeda107f);
    put_le32(img, kVersion, 0x00010001);
    put_le32(img, kHeaderSize, 0x190);
    put_le32(img, kType, 1);
    put_le32(img, kOffBmap, 0x200);
    put_le32(img, kOffData, 0x400);
    put_le32(img, kSectorSz, 512);
    put_le64(img, kDiskSize, 3 * MiB);
    put_le32(img, kBlockSize, bs);
    put_le32(img, kBlockExtra, extra);
    put_le32(img, kBlocks, blocks);
    put_le32(img, kAllocated, 3);
    uint32_t map[blocks] = {2, 0xffffffff, 1, 0xfffffffe, 0, 0xffffffff};
    for (uint32_t i = 0; i < blocks; ++i) put_le32(img, 0x200 + i * 4, map[i]);
    img.resize(0x400 + 3 * (bs + extra), 0xee);  // extra areas hold junk that must not show
    for (uint32_t slot = 0; slot < 3; ++slot)
        std::fill_n(img.begin() + 0x400 + slot * (bs + extra) + extra, bs, uint8_t(0x10 + slot));
    MemoryFileSystem fs;
    fs.add("b.vdi", img);
    auto dev = open_mem(reg, fs, "b.vdi");
    REQUIRE(dev.ok());
    auto all = vt::read_all(*dev->device);
    std::vector<uint8_t> want(3 * MiB, 0);
    std::fill_n(want.begin(), bs, 0x12);
    std::fill_n(want.begin() + 2 * bs, bs, 0x11);
    std::fill_n(want.begin() + 4 * bs, bs, 0x10);
    CHECK(all == want);
    auto e = dev->device->block_status(4 * bs, 3 * MiB);
    REQUIRE(e.ok());
    CHECK(e->host_offset == 0x400 + extra);
    CHECK(dev->device->info().cluster_size == bs);

    // Writing with extra data: a new block's slot is extra + block, appended after the last slot.
    auto rw = open_mem(reg, fs, "b.vdi", true);
    REQUIRE(rw.ok());
    REQUIRE(rw->device->write(1 * bs + 4096, vt::bytes(4096, 0x77)).ok());
    REQUIRE(rw->device->close().ok());
    auto bytes = *fs.content("b.vdi");
    CHECK(le32(bytes, 0x204) == 3);
    CHECK(le32(bytes, kAllocated) == 4);
    auto back = open_mem(reg, fs, "b.vdi");
    REQUIRE(back.ok());
    auto blk = vt::read_range(*back->device, bs, bs);
    CHECK(std::count(blk.begin(), blk.end(), 0x77) == 4096);
    CHECK(std::count(blk.begin(), blk.end(), 0) == bs - 4096);
    CHECK(vt::read_range(*back->device, 0, bs) == vt::bytes(bs, 0x12));

    // Version 0: no offsets, map right after the 348-byte header, data right after the map.
    std::vector<uint8_t> v0(72 + 348, 0);
    put_le32(v0, 0x40, 0xbeda107f);
    put_le32(v0, kVersion, 0x00000000);
    put_le32(v0, 72, 1);                       // type
    put_le64(v0, 72 + 8 + 256 + 16, 2 * MiB);  // disk size
    put_le32(v0, 72 + 288, 1 * MiB);           // block size
    put_le32(v0, 72 + 292, 2);                 // blocks
    put_le32(v0, 72 + 296, 1);                 // allocated
    v0.resize(v0.size() + 8, 0);
    put_le32(v0, 420, 0xffffffff);
    put_le32(v0, 424, 0);
    v0.resize(v0.size() + MiB, 0x3c);
    fs.add("v0.vdi", v0);
    auto d0 = open_mem(reg, fs, "v0.vdi");
    REQUIRE_MESSAGE(d0.ok(), vt::error_text(d0));
    CHECK(vt::read_range(*d0->device, 0, MiB) == vt::bytes(MiB, 0));
    CHECK(vt::read_range(*d0->device, MiB, MiB) == vt::bytes(MiB, 0x3c));
    CHECK(*d0->device->info().format_specific.get("data")->get("version")->as_string() == "0.0");
    auto d0w = open_mem(reg, fs, "v0.vdi", true);
    REQUIRE_FALSE(d0w.ok());
    CHECK(d0w.error().code == ErrorCode::unsupported);
}
