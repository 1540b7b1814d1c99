// SPDX-License-Identifier: Apache-2.0
// VDI writing: images vdisk creates and writes (dynamic, static, > 4 GiB, zero marking and discard), converts
// into, resizes and creates with a given UUID, checked by qemu-img check/compare/info and qemu-io reads.
#include <algorithm>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdi_helpers.hpp"

using namespace vdisk;
using namespace vdi_test;

namespace {
// The shared round trip (vt::write_and_compare) for a dynamic or static VDI.
void write_and_compare(bool is_static, uint64_t size, const vt::Writes& writes,
                       const std::vector<std::pair<uint64_t, uint64_t>>& zeroes = {}, bool full = true) {
    auto reg = make_reg();
    vt::WriteCompare c{.format = "vdi",
                       .qemu_format = "vdi",
                       .options = is_static ? "static=on" : "static=off",
                       .size = size,
                       .writes = writes,
                       .zeroes = zeroes,
                       .full_compare = full,
                       .zeros_before_writes = true};
    auto w = vt::write_and_compare(reg, c);
    CHECK(w.created_size == size);
}
}  // namespace

TEST_CASE("create and write: dynamic, unaligned writes, zero marking") {
    if (!vt::need_qemu()) return;
    vt::Writes w = {
        {0, vt::pattern(65536, 1)},
        {3 * MiB - 100, vt::pattern(300, 2)},      // unaligned, crosses a block boundary
        {9 * MiB, vt::pattern(2 * MiB + 512, 3)},  // several blocks
        {5 * MiB, vt::bytes(1 * MiB, 0)},          // zeros allocate nothing
        {16 * MiB - 512, vt::pattern(512, 4)},     // the last sector
    };
    write_and_compare(false, 16 * MiB, w);
    // Zeroing whole blocks marks them ZERO, partial ones write zeros; later writes reuse freed slots.
    write_and_compare(false, 16 * MiB, w, {{9 * MiB, 1 * MiB}, {10 * MiB + 100, 4096}, {0, 1 * MiB}});
    // A size that is not a whole number of blocks.
    write_and_compare(false, 5 * MiB + 512 * 3, {{5 * MiB, vt::pattern(1536, 9)}, {4 * MiB, vt::pattern(99, 8)}});
}

TEST_CASE("create and write: static image") {
    if (!vt::need_qemu()) return;
    write_and_compare(true, 8 * MiB, {{100, vt::pattern(5000, 5)}, {7 * MiB, vt::pattern(1 * MiB, 6)}},
                      {{7 * MiB, 1 * MiB}});
    auto bytes = small_image(4 * MiB, {}, true);
    CHECK(le32(bytes, kType) == 2);
    CHECK(le32(bytes, kAllocated) == 4);
    for (uint32_t i = 0; i < 4; ++i) CHECK(le32(bytes, le32(bytes, kOffBmap) + i * 4) == i);
}

TEST_CASE("create: > 4 GiB sparse dynamic image with data past 4 GiB") {
    if (!vt::need_qemu()) return;
    write_and_compare(false, 6 * GiB,
                      {{1 * MiB, vt::bytes(65536, 0x11)},
                       {4 * GiB + 3 * MiB, vt::bytes(70000, 0x22)},
                       {6 * GiB - 8192, vt::bytes(8192, 0x33)}},
                      {}, false);
}

TEST_CASE("zero marking and discard write 0xfffffffe entries - freed slots are reused") {
    auto reg = make_reg();
    MemoryFileSystem fs;
    fs.add("a.vdi", small_image(4 * MiB, {{0, vt::bytes(2 * MiB, 0x44)}, {2 * MiB, vt::bytes(2 * MiB, 0x55)}}));
    auto img = open_mem(reg, fs, "a.vdi", true);
    REQUIRE(img.ok());
    auto& dev = *img->device;
    REQUIRE(dev.write_zeroes(1 * MiB, 1 * MiB).ok());
    REQUIRE(dev.discard(0, 1 * MiB + 512).ok());  // only block 0 is whole
    auto e = dev.block_status(0, 4 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::zero);
    CHECK(e->length == 2 * MiB);
    CHECK(vt::read_range(dev, 0, 2 * MiB) == vt::bytes(2 * MiB, 0));
    // write_zeroes without unmap keeps the block allocated.
    REQUIRE(dev.write_zeroes(2 * MiB, 1 * MiB, false).ok());
    e = dev.block_status(2 * MiB, 4 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::data);
    REQUIRE(dev.write(0, vt::bytes(4096, 0x66)).ok());  // reuses a freed slot
    REQUIRE(dev.close().ok());
    auto bytes = *fs.content("a.vdi");
    uint32_t bm = le32(bytes, kOffBmap);
    CHECK(le32(bytes, bm + 4) == 0xfffffffe);
    CHECK(le32(bytes, bm) < 4);
    CHECK(le32(bytes, kAllocated) == 3);
    CHECK(bytes.size() <= le32(bytes, kOffData) + 4 * MiB);
    auto again = open_mem(reg, fs, "a.vdi");
    REQUIRE(again.ok());
    auto got = vt::read_range(*again->device, 0, 4 * MiB);
    CHECK(std::vector<uint8_t>(got.begin(), got.begin() + 4096) == vt::bytes(4096, 0x66));
    CHECK(std::all_of(got.begin() + 4096, got.begin() + 3 * MiB, [](uint8_t b) { return b == 0; }));
    CHECK(std::all_of(got.begin() + 3 * MiB, got.end(), [](uint8_t b) { return b == 0x55; }));
    auto chk = again->format->check(*again->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}

TEST_CASE("convert raw to vdi matches under qemu-img compare") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto data = vt::pattern(3 * MiB, 7);
    std::fill(data.begin() + MiB, data.begin() + 2 * MiB, 0);
    vt::write_file(tmp / "src.raw", data);
    auto fs = make_posix_file_system(tmp.path);
    OpenOptions ro;
    ro.format = "raw";
    auto src = open_image(reg, *fs, "src.raw", ro);
    REQUIRE(src.ok());
    ConvertOptions co;
    co.output_format = "vdi";
    auto s = convert(reg, *src->device, *fs, "out.vdi", co);
    REQUIRE_MESSAGE(s.ok(), vt::error_text(s));
    vt::expect_qemu_check(tmp / "out.vdi", "vdi");
    vt::expect_qemu_compare(tmp / "out.vdi", tmp / "src.raw", "vdi", "raw");
    auto bytes = vt::read_file(tmp / "out.vdi");
    CHECK(le32(bytes, kAllocated) == 2);  // the zero megabyte was not written
}

TEST_CASE("resize: the block map grows over moved blocks, shrinking compacts slots - qemu-img reads and checks") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    for (std::string st : {"off", "on"}) {
        CAPTURE(st);
        std::string img = tmp / ("r-" + st + ".vdi");
        REQUIRE(vt::run("qemu-img create -q -f vdi -o static=" + st + " " + img + " 100M").status == 0);
        auto w = vt::run("qemu-io -f vdi -c 'write -P 0x11 0 3M' -c 'write -P 0x22 99M 1M' -c 'write -P 0x44 40M 1M' " +
                         img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        auto before = vt::qemu_read_raw(img, "vdi", tmp.path);
        {
            auto dev = vt::open_host(reg, img, "vdi", true);
            REQUIRE(dev.ok());
            // 1124 blocks need 4.4 KiB of map: more than the 4 KiB before the data area, so slot 0 moves.
            auto s = dev->device->resize(100 * MiB + GiB);
            REQUIRE_MESSAGE(s.ok(), s.error().to_string());
            REQUIRE(dev->device->close().ok());
        }
        vt::expect_qemu_check(img, "vdi");
        vt::expect_qemu_reads_prefix(img, "vdi", before, 100 * MiB + GiB, tmp.path);
        w = vt::run("qemu-io -f vdi -c 'write -P 0x33 1000M 1M' " + img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        {
            auto dev = vt::open_host(reg, img, "vdi", true);
            REQUIRE(dev.ok());
            CHECK(vt::read_range(*dev->device, 1000 * MiB, 512)[0] == 0x33);
            REQUIRE(dev->device->resize(50 * MiB).ok());
            REQUIRE(dev->device->close().ok());
        }
        vt::expect_qemu_check(img, "vdi");
        auto shrunk = vt::qemu_read_raw(img, "vdi", tmp.path);
        REQUIRE(shrunk.size() == 50 * MiB);
        CHECK(std::equal(shrunk.begin(), shrunk.end(), before.begin()));
    }
}

TEST_CASE("create -o uuid: the creation UUID is the one given, as VirtualBox prints it") {
    auto reg = make_reg();
    MemoryFileSystem fs;
    const std::string id = "6a1f3b52-9c0d-4e8f-a1b2-c3d4e5f60718";
    CreateOptions co;
    co.size = 4 * MiB;
    co.values = {{"uuid", id}};
    auto dev = create_image(reg, fs, "u.vdi", "vdi", co);
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    REQUIRE((*dev)->close().ok());
    auto img = open_mem(reg, fs, "u.vdi");
    REQUIRE(img.ok());
    CHECK(img->device->info().uuid.value_or("") == id);
    // The header holds it in VirtualBox's (Microsoft GUID) byte layout: first group little-endian.
    std::vector<uint8_t> head(512);
    auto f = fs.open("u.vdi", Access::read_only);
    REQUIRE(f.ok());
    REQUIRE((*f)->read_at(0, head).ok());
    CHECK(head[kUuidCreate] == 0x52);
    CHECK(head[kUuidCreate + 3] == 0x6a);
    CHECK(head[kUuidCreate + 8] == 0xa1);
}
