// SPDX-License-Identifier: Apache-2.0
// VHDX writing: images vdisk creates and writes (dynamic, fixed, > 4 GiB, 4 KiB sectors), converts into and
// resizes, checked by qemu-img check/compare/info, qemu-io reads and libvhdi (vhdiinfo).
#include <cstring>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vhdx_helpers.hpp"

using namespace vdisk;
using namespace vhdx_test;

namespace {
// The shared round trip (vt::write_and_compare) for a VHDX with `opts`, plus what is VHDX's own: info's
// format-specific data against qemu-img's block size and libvhdi's identifier (the data write GUID).
// full=false: qemu-img compare would read every byte (qemu's vhdx driver reports all of it as data), so
// large images are checked with qemu-io pattern reads of each write (constant fills) and its surroundings.
void write_and_compare(const std::string& opts, uint64_t size, const vt::Writes& writes, bool full = true) {
    auto reg = make_reg();
    vt::WriteCompare c{.format = "vhdx",
                       .qemu_format = "vhdx",
                       .options = opts,
                       .size = size,
                       .writes = writes,
                       .full_compare = full,
                       .zeros_before_writes = true,
                       .libyal_info = "vhdiinfo"};
    auto w = vt::write_and_compare(reg, c);
    CHECK(w.created_size == size);
    auto inf = w.back.device->info();
    REQUIRE(inf.format_specific.get("data"));
    const Json& d = *inf.format_specific.get("data");
    CHECK(w.qemu_info.find("\"cluster-size\": " + std::to_string(*d.get("block-size")->as_uint())) !=
          std::string::npos);
    CHECK(*d.get("allocated-blocks")->as_uint() > 0);
    if (vt::have("vhdiinfo")) {
        auto v = vt::run("vhdiinfo " + vt::sh_quote(w.path));
        CHECK(v.output.find("Identifier\t\t: " + *d.get("data-write-guid")->as_string()) != std::string::npos);
    }
}
}  // namespace

TEST_CASE("create and write: dynamic, fixed, block_state_zero=off, unaligned writes") {
    if (!vt::need_qemu()) return;
    vt::Writes w = {
        {0, vt::pattern(65536, 1)},
        {3 * MiB - 100, vt::pattern(300, 2)},      // unaligned, crosses a block boundary
        {9 * MiB, vt::pattern(2 * MiB + 512, 3)},  // several blocks
        {0, vt::pattern(512, 4)},                  // rewrite an allocated block
        {24 * MiB - 512, vt::pattern(512, 5)},     // last sector
    };
    write_and_compare("block_size=1M", 24 * MiB, w);
    write_and_compare("", 24 * MiB, w);
    write_and_compare("block_state_zero=off,log_size=2M", 24 * MiB, w);
    write_and_compare("subformat=fixed,block_size=4M", 24 * MiB, w);
}

TEST_CASE("create: > 4 GiB sparse image with data past 4 GiB") {
    if (!vt::need_qemu()) return;
    vt::Writes w = {
        {(5ull << 30) + 12345 * 512, vt::bytes(70000, 0x77)},
        {(6ull << 30) - 4096, vt::bytes(4096, 0x88)},
    };
    write_and_compare("block_size=1M", 6ull << 30, w, false);
}

TEST_CASE("create: qemu's block size rule and info") {
    auto reg = make_reg();
    for (auto [size, bs] : std::vector<std::pair<uint64_t, uint64_t>>{
             {512 * MiB, 8 * MiB}, {2ull << 30, 16 * MiB}, {200ull << 30, 32 * MiB}, {40ull << 40, 64 * MiB}}) {
        MemoryFileSystem fs;
        CreateOptions co;
        co.size = size;
        auto dev = create_image(reg, fs, "a.vhdx", "vhdx", co);
        REQUIRE(dev.ok());
        auto i = (*dev)->info();
        CHECK(i.cluster_size == bs);
        CHECK(i.virtual_size == size);
        REQUIRE(i.format_specific.get("data"));
        const Json& d = *i.format_specific.get("data");
        CHECK(*d.get("block-size")->as_uint() == bs);
        CHECK(*d.get("logical-sector-size")->as_uint() == 512);
        CHECK(*d.get("disk-type")->as_string() == "dynamic");
        CHECK(*d.get("has-parent")->as_bool() == false);
        CHECK(*d.get("allocated-blocks")->as_uint() == 0);
        CHECK(*d.get("log-state")->as_string() == "empty");
    }
    MemoryFileSystem fs;
    CreateOptions co;
    co.size = 1 * MiB;
    for (const char* bad : {"block_size=3M", "block_size=512M", "log_size=1000", "subformat=sparse"}) {
        co.values = *parse_option_list(bad);
        auto dev = create_image(reg, fs, "b.vhdx", "vhdx", co);
        REQUIRE(!dev.ok());
        CHECK(dev.error().code == ErrorCode::invalid_argument);
    }
}

TEST_CASE("convert raw to vhdx matches under qemu-img compare - rewrite of a qemu image rotates GUIDs") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    auto data = vt::pattern(3 * MiB, 9);
    std::fill(data.begin() + MiB, data.begin() + 2 * MiB, 0);
    vt::write_file(tmp / "src.raw", data);
    convert_to_vhdx_1m(reg, *fs, "src.raw", "raw", "dst.vhdx");
    vt::expect_qemu_compare(tmp / "src.raw", tmp / "dst.vhdx", "raw", "vhdx");
    vt::expect_qemu_check(tmp / "dst.vhdx", "vhdx");

    // Open a qemu-made image read-write, write, close: qemu sees the data, headers changed.
    std::string q = tmp / "q.vhdx";
    REQUIRE(vt::run("qemu-img create -f vhdx -o block_size=1M " + q + " 20M").status == 0);
    auto before = vt::read_file(q);
    {
        auto rw = vt::open_host(reg, q, "", true);
        REQUIRE(rw.ok());
        REQUIRE(rw->device->write(5 * MiB + 512, vt::bytes(8192, 0xcd)).ok());
        REQUIRE(rw->device->close().ok());
    }
    auto after = vt::read_file(q);
    // DataWriteGuid (header offset 32) changed in the header with the larger sequence number.
    CHECK(std::memcmp(before.data() + current_header(before) + 32, after.data() + current_header(after) + 32, 16) != 0);
    vt::expect_qemu_io_reads(q, "vhdx", "-c 'read -P 0xcd 5243392 8192' -c 'read -P 0 0 5243392'");
    vt::expect_qemu_check(q, "vhdx");
}

TEST_CASE("4096-byte logical sectors: reads and read-modify-write") {
    auto img = small_image(16 * MiB, {{0, vt::pattern(2 * MiB, 40)}});
    put_le32(img, kItems + 32, 4096);
    put_le32(img, kItems + 36, 4096);
    MemoryFileSystem fs;
    auto expect = vt::pattern(2 * MiB, 40);
    expect.resize(16 * MiB, 0);
    {
        auto rw = open_mem(fs, img, true);
        REQUIRE_MESSAGE(rw.ok(), vt::error_text(rw));
        CHECK(rw->device->write_granularity() == 4096);
        auto w = vt::pattern(700, 41);
        REQUIRE(rw->device->write(1000, w).ok());
        REQUIRE(rw->device->write(9 * MiB + 5000, w).ok());
        std::memcpy(expect.data() + 1000, w.data(), w.size());
        std::memcpy(expect.data() + 9 * MiB + 5000, w.data(), w.size());
        REQUIRE(rw->device->close().ok());
    }
    auto out = *fs.content("img.vhdx");
    MemoryFileSystem fs2;
    auto ro = open_mem(fs2, out);
    REQUIRE(ro.ok());
    CHECK(vt::read_all(*ro->device) == expect);
    // qemu-img 7.2 refuses 4 KiB logical sectors ("Operation not supported"); libvhdi opens them.
    if (vt::have("vhdiinfo")) {
        vt::TempDir tmp;
        vt::write_file(tmp / "s4k.vhdx", out);
        auto v = vt::run("vhdiinfo " + tmp / "s4k.vhdx");
        CHECK_MESSAGE(v.status == 0, v.output);
        CHECK(v.output.find("4096") != std::string::npos);
    }
}

TEST_CASE("resize grows in place (qemu-img cannot resize VHDX at all)") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "g.vhdx";
    REQUIRE(vt::run("qemu-img create -f vhdx -o block_size=1M " + img + " 10752K").status == 0);
    REQUIRE(vt::run("qemu-io -f vhdx -c 'write -P 0x3c 10M 512K' " + img).status == 0);
    {
        auto rw = vt::open_host(reg, img, "", true);
        REQUIRE(rw.ok());
        CHECK(rw->device->resize(5 * MiB).error().code == ErrorCode::unsupported);
        CHECK(rw->device->resize((200ull << 30) + 512).error().code == ErrorCode::unsupported);  // BAT too small
        REQUIRE(rw->device->resize(6ull << 30).ok());
        CHECK(rw->device->size() == 6ull << 30);
        REQUIRE(rw->device->write((6ull << 30) - 4096, vt::bytes(4096, 0x4d)).ok());
        REQUIRE(rw->device->close().ok());
    }
    auto info = vt::run("qemu-img info --output=json " + img);
    CHECK(info.output.find("\"virtual-size\": 6442450944") != std::string::npos);
    vt::expect_qemu_check(img, "vhdx");
    vt::expect_qemu_io_reads(img, "vhdx",
                             "-c 'read -P 0x3c 10M 512K' -c 'read -P 0 10752K 512K' -c 'read -P 0 11M 1M' "
                             "-c 'read -P 0x4d 6442446848 4096'");
}

TEST_CASE("create logical_sector_size=4096 (4Kn): written, read back, vhdiinfo sees 4096-byte sectors") {
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system();
    std::string img = tmp / "k.vhdx";
    CreateOptions co;
    co.size = 64 * MiB;
    co.values = {{"logical_sector_size", "4096"}};
    auto dev = create_image(reg, *fs, img, "vhdx", co);
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    CHECK((*dev)->write_granularity() == 4096);
    auto data = vt::pattern(3 * MiB + 5000, 9);
    REQUIRE((*dev)->write(12345, data).ok());  // unaligned: read-modify-write of 4 KiB sectors
    REQUIRE((*dev)->close().ok());
    auto back = vt::open_host(reg, img);
    REQUIRE(back.ok());
    auto inf = back->device->info();
    REQUIRE(inf.format_specific.get("data"));
    CHECK(*inf.format_specific.get("data")->get("logical-sector-size")->as_uint() == 4096);
    CHECK(*inf.format_specific.get("data")->get("physical-sector-size")->as_uint() == 4096);
    std::vector<uint8_t> got(data.size());
    REQUIRE(back->device->read(12345, got).ok());
    CHECK(got == data);
    auto chk = back->format->check(*back->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
    if (vt::have("vhdiinfo")) {
        auto v = vt::run("vhdiinfo " + img);
        CHECK(v.output.find("Bytes per sector\t: 4096 bytes") != std::string::npos);
    }
    co.size = 64 * MiB + 512;
    auto bad = create_image(reg, *fs, tmp / "bad.vhdx", "vhdx", co);
    REQUIRE(!bad.ok());
    CHECK(bad.error().code == ErrorCode::invalid_argument);
}
