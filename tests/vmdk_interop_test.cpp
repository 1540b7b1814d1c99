// SPDX-License-Identifier: Apache-2.0
// VMDK interop with qemu-img: images qemu writes (every subformat) read byte-exact, images vdisk writes pass
// qemu-img check/compare, backing chains with parentCID checks, info.
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

constexpr uint64_t MiB = 1ull << 20;
constexpr uint64_t GiB = 1ull << 30;

Registry make_reg() { return vt::registry_of(make_raw_format, make_vmdk_format); }

std::string qemu_io_writes(const std::string& fmt, const std::string& img,
                           const std::vector<std::tuple<uint64_t, uint64_t, int>>& w) {
    std::string cmd = "qemu-io -f " + fmt;
    for (auto& [off, len, pat] : w)
        cmd += " -c 'write -P " + std::to_string(pat) + " " + std::to_string(off) + " " + std::to_string(len) + "'";
    return cmd + " " + vt::sh_quote(img);
}

void check_clean(const Registry& reg, const std::string& path) {
    auto dev = vt::open_host(reg, path);
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    auto chk = dev->format->check(*dev->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK_MESSAGE(chk->corruptions == 0, (chk->messages.empty() ? "" : chk->messages.front()));
}

}  // namespace

TEST_CASE("qemu-img written images of every subformat read byte-exact") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    std::vector<std::tuple<uint64_t, uint64_t, int>> w = {{0, 65536, 0xab},
                                                          {3 * MiB + 512, 700 * 512, 0x11},
                                                          {33 * MiB - 4096, 8192, 0x22},
                                                          {40 * MiB - 512, 512, 0x33}};
    for (std::string opts : {"subformat=monolithicSparse", "subformat=monolithicFlat", "subformat=twoGbMaxExtentSparse",
                             "subformat=twoGbMaxExtentFlat", "subformat=monolithicSparse,zeroed_grain=on",
                             "subformat=monolithicSparse,adapter_type=lsilogic,hwversion=7"}) {
        CAPTURE(opts);
        vt::TempDir tmp;
        std::string img = tmp / "q.vmdk";
        auto c = vt::run("qemu-img create -q -f vmdk -o " + opts + " " + img + " 40M");
        REQUIRE_MESSAGE(c.status == 0, c.output);
        auto r = vt::run(qemu_io_writes("vmdk", img, w));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        if (opts.find("zeroed_grain") != std::string::npos) {
            r = vt::run("qemu-io -f vmdk -c 'write -z 0 64k' " + img);
            REQUIRE_MESSAGE(r.status == 0, r.output);
        }
        auto want = vt::qemu_read_raw(img, "vmdk", tmp.path);
        auto dev = vt::open_host(reg, img);
        REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
        CHECK(dev->format->name() == "vmdk");
        CHECK(vt::read_all(*dev->device) == want);
        check_clean(reg, img);
    }
}

TEST_CASE("qemu-img streamOptimized output reads byte-exact") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string raw = tmp / "src.raw";
    auto data = vt::pattern(3 * MiB + 12345, 7);
    std::vector<uint8_t> img(20 * MiB, 0);
    std::memcpy(img.data() + 5 * MiB, data.data(), data.size());
    std::memset(img.data() + 19 * MiB, 0x5a, MiB);
    vt::write_file(raw, img);
    auto c = vt::run("qemu-img convert -f raw -O vmdk -o subformat=streamOptimized " + raw + " " + tmp / "s.vmdk");
    REQUIRE_MESSAGE(c.status == 0, c.output);
    auto dev = vt::open_host(reg, tmp / "s.vmdk");
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    CHECK(vt::read_all(*dev->device) == img);
    auto bs = dev->device->block_status(5 * MiB, MiB);
    REQUIRE(bs.ok());
    CHECK(bs->kind == ExtentKind::data);
    CHECK(bs->compressed);
    auto info = dev->device->info();
    CHECK(*info.format_specific.get("data")->get("create-type")->as_string() == "streamOptimized");
    check_clean(reg, tmp / "s.vmdk");
}

namespace {

// The shared round trip (vt::write_and_compare) for a VMDK created with `opts`; libvmdk's vmdkinfo reads the
// sparse subformats.
void create_write_compare(const std::string& opts, uint64_t size, const vt::Writes& writes, bool full_compare) {
    CAPTURE(opts);
    auto reg = make_reg();
    vt::WriteCompare c{.format = "vmdk",
                       .qemu_format = "vmdk",
                       .options = opts,
                       .size = size,
                       .writes = writes,
                       .full_compare = full_compare};
    if (opts.find("Flat") == std::string::npos) c.libyal_info = "vmdkinfo";
    vt::write_and_compare(reg, c);
}

}  // namespace

TEST_CASE("create and write: every subformat against qemu-img check/compare") {
    if (!vt::need_qemu()) return;
    vt::Writes w = {
        {0, vt::pattern(65536, 1)},
        {3 * MiB - 100, vt::pattern(300, 2)},      // unaligned, crosses a grain boundary
        {9 * MiB, vt::pattern(2 * MiB + 512, 3)},  // several grains and a grain table boundary nearby
        {0, vt::pattern(512, 4)},                  // rewrite an allocated grain
        {48 * MiB - 512, vt::pattern(512, 5)},     // last sector
    };
    for (const char* o :
         {"", "subformat=monolithicFlat", "subformat=twoGbMaxExtentSparse", "subformat=twoGbMaxExtentFlat",
          "zeroed_grain=on,adapter_type=lsilogic", "compat6=on,toolsversion=1234"})
        create_write_compare(o, 48 * MiB, w, true);
}

TEST_CASE("writes hopping between grain tables with a one-table cache: deferred table updates all land") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    const uint64_t size = 256 * MiB;  // 8 grain tables of 32 MiB
    REQUIRE(vt::run("qemu-img create -q -f vmdk " + tmp / "a.vmdk" + " 256M").status == 0);
    REQUIRE(vt::run("qemu-img create -q -f raw " + tmp / "a.raw" + " 256M").status == 0);
    auto fs = make_posix_file_system(tmp.path);
    OpenOptions oo;
    oo.read_write = true;
    oo.limits.max_cache_bytes = 4096;  // one grain table (512 entries) at a time
    auto dev = open_image(reg, *fs, "a.vmdk", oo);
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    oo.limits = Limits{};
    auto raw = open_image(reg, *fs, "a.raw", oo);
    REQUIRE(raw.ok());
    // Tables 0, 5, 0, 7, 3, 5, 0 in turn; whole grains, runs of grains, and partial grains.
    const uint64_t T = 32 * MiB;
    const std::vector<std::pair<uint64_t, size_t>> w = {
        {0, 65536},     {5 * T + 4096, 3 * 65536}, {65536, 1000},        {7 * T, 4 * 65536}, {3 * T + 777, 70000},
        {5 * T, 65536}, {T - 65536, 2 * 65536},    {size - 65536, 65536}};
    int pat = 1;
    for (auto [off, len] : w) {
        auto data = vt::pattern(len, pat++);
        REQUIRE(dev->device->write(off, data).ok());
        REQUIRE(raw->device->write(off, data).ok());
        // Read an earlier region back through the device while its table is out of the cache.
        std::vector<uint8_t> a(65536), b(65536);
        REQUIRE(dev->device->read(0, a).ok());
        REQUIRE(raw->device->read(0, b).ok());
        CHECK(a == b);
    }
    REQUIRE(dev->device->close().ok());
    REQUIRE(raw->device->close().ok());
    *dev = OpenedImage{};
    *raw = OpenedImage{};
    vt::expect_qemu_check(tmp / "a.vmdk", "vmdk");
    vt::expect_qemu_compare(tmp / "a.vmdk", tmp / "a.raw", "vmdk", "raw");
    check_clean(reg, tmp / "a.vmdk");
}

TEST_CASE("create: streamOptimized written in one forward pass") {
    if (!vt::need_qemu()) return;
    vt::Writes w = {
        {0, vt::pattern(65536, 1)},
        {MiB, vt::pattern(3 * MiB, 2)},
        {40 * MiB, vt::bytes(65536, 0)},  // zero grain: stays unallocated
        {45 * MiB, vt::pattern(65536 * 3, 3)},
    };
    create_write_compare("subformat=streamOptimized", 48 * MiB, w, true);
    // Size not a multiple of the grain: the last grain is stored padded.
    create_write_compare("subformat=streamOptimized", 48 * MiB + 4096, {{48 * MiB, vt::pattern(4096, 9)}}, true);
}

TEST_CASE("create: 5 GiB split images, data across the 2 GiB extent boundaries") {
    if (!vt::need_qemu()) return;
    vt::Writes w = {
        {2 * GiB - 3 * 512, vt::bytes(70000, 0x77)},    // crosses extent 1 -> 2
        {4 * GiB - 65536, vt::bytes(3 * 65536, 0x88)},  // crosses extent 2 -> 3 (and 4 GiB)
        {5 * GiB - 512, vt::bytes(512, 0x99)},
    };
    create_write_compare("subformat=twoGbMaxExtentSparse", 5 * GiB, w, false);
    create_write_compare("subformat=twoGbMaxExtentFlat", 5 * GiB, w, false);
    create_write_compare("", 5 * GiB, w, false);
}

TEST_CASE("convert to streamOptimized with and without compression - qemu-img compares equal") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::vector<uint8_t> img(9 * MiB + 512, 0);
    auto p = vt::pattern(2 * MiB, 11);
    std::memcpy(img.data() + MiB + 4096, p.data(), p.size());
    std::memset(img.data() + 9 * MiB - 100, 0x42, 612);
    vt::write_file(tmp / "src.raw", img);
    auto fs = make_posix_file_system(tmp.path);
    for (bool compress : {false, true}) {
        auto src = open_image(reg, *fs, "src.raw", OpenOptions{});
        REQUIRE(src.ok());
        ConvertOptions co;
        co.output_format = "vmdk";
        co.compress = compress;
        co.create.set("subformat", "streamOptimized");
        std::string out = compress ? "c.vmdk" : "u.vmdk";
        auto st = convert(reg, *src->device, *fs, out, co);
        REQUIRE_MESSAGE(st.ok(), vt::error_text(st));
        vt::expect_qemu_check(tmp / out, "vmdk");
        vt::expect_qemu_compare(tmp / out, tmp / "src.raw", "vmdk", "raw");
        auto v = vt::run("vmdkinfo " + tmp / out);
        CHECK_MESSAGE(v.status == 0, v.output);
        auto back = open_image(reg, *fs, out, OpenOptions{});
        REQUIRE(back.ok());
        CHECK(vt::read_all(*back->device) == img);
    }
}

TEST_CASE("backing chain: parentFileNameHint, CID check, force") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    REQUIRE(vt::run("qemu-img create -q -f vmdk " + tmp / "base.vmdk" + " 16M").status == 0);
    REQUIRE(vt::run(qemu_io_writes("vmdk", tmp / "base.vmdk", {{0, 2 * MiB, 0x61}, {8 * MiB, MiB, 0x62}})).status == 0);
    auto c = vt::run("qemu-img create -q -f vmdk -b base.vmdk -F vmdk " + tmp / "top.vmdk");
    REQUIRE_MESSAGE(c.status == 0, c.output);
    REQUIRE(vt::run(qemu_io_writes("vmdk", tmp / "top.vmdk", {{MiB, 4096, 0x71}, {8 * MiB + 100 * 512, 512, 0x72}}))
                .status == 0);
    auto want = vt::qemu_read_raw(tmp / "top.vmdk", "vmdk", tmp.path);
    auto top = vt::open_host(reg, tmp / "top.vmdk");
    REQUIRE_MESSAGE(top.ok(), vt::error_text(top));
    REQUIRE(top->device->backing() != nullptr);
    CHECK(vt::read_all(*top->device) == want);
    auto br = top->device->backing_reference();
    REQUIRE(br);
    CHECK(br->names.front() == "base.vmdk");
    auto bs = top->device->block_status(4 * MiB, MiB);
    REQUIRE(bs.ok());
    CHECK(bs->kind == ExtentKind::unallocated);
    top = Result<OpenedImage>(make_error(ErrorCode::io, "closed"));

    // Change the parent's CID: the child's parentCID no longer matches.
    auto text = vt::read_file(tmp / "base.vmdk");
    std::string s(text.begin(), text.end());
    auto at = s.find("\nCID=");
    REQUIRE(at != std::string::npos);
    s[at + 5] = s[at + 5] == '0' ? '1' : '0';
    vt::write_file(tmp / "base.vmdk", std::vector<uint8_t>(s.begin(), s.end()));
    auto bad = vt::open_host(reg, tmp / "top.vmdk");
    REQUIRE(!bad.ok());
    CHECK(bad.error().code == ErrorCode::corrupt);
    CHECK(bad.error().message.find("parentCID") != std::string::npos);
    auto fs = make_posix_file_system(tmp.path);
    OpenOptions oo;
    oo.force_parent_mismatch = true;
    auto forced = open_image(reg, *fs, "top.vmdk", oo);
    REQUIRE_MESSAGE(forced.ok(), vt::error_text(forced));
    CHECK(vt::read_all(*forced->device) == want);

    // Untrusted: the parent is not followed.
    OpenOptions uo;
    uo.untrusted = true;
    uo.format = "vmdk";
    auto u = open_image(reg, *fs, "top.vmdk", uo);
    REQUIRE(!u.ok());
    CHECK(u.error().code == ErrorCode::access_denied);
}

TEST_CASE("create with backing_file: child reads the parent, qemu-img agrees") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    REQUIRE(vt::run("qemu-img create -q -f vmdk " + tmp / "base.vmdk" + " 8M").status == 0);
    REQUIRE(vt::run(qemu_io_writes("vmdk", tmp / "base.vmdk", {{0, 8 * MiB, 0x61}})).status == 0);
    auto fs = make_posix_file_system(tmp.path);
    CreateOptions co;
    co.set("backing_file", "base.vmdk");
    auto dev = create_image(reg, *fs, "child.vmdk", "vmdk", co);
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    REQUIRE((*dev)->close().ok());
    dev->reset();
    auto child = open_image(reg, *fs, "child.vmdk", OpenOptions{});
    REQUIRE_MESSAGE(child.ok(), vt::error_text(child));
    OpenOptions rw;
    rw.read_write = true;
    child = open_image(reg, *fs, "child.vmdk", rw);
    REQUIRE(child.ok());
    // A partial-grain write copies the rest of the grain up from the parent.
    REQUIRE(child->device->write(MiB + 512, vt::bytes(1024, 0x99)).ok());
    REQUIRE(child->device->close().ok());
    auto c = vt::run("qemu-img check " + tmp / "child.vmdk");
    CHECK_MESSAGE(c.status == 0, c.output);
    vt::expect_qemu_io_reads(
        tmp / "child.vmdk", "vmdk",
        "-c 'read -P 0x61 0 1049088' -c 'read -P 0x99 1049088 1024' -c 'read -P 0x61 1050112 7338496'");
}

TEST_CASE("info: format-specific matches qemu-img's JSON") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    REQUIRE(vt::run("qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse " + tmp / "a.vmdk" + " 3G").status ==
            0);
    auto q = vt::run("qemu-img info --output=json " + tmp / "a.vmdk");
    REQUIRE(q.status == 0);
    Json qj;
    REQUIRE(Json::parse(q.output, qj));
    auto dev = vt::open_host(reg, tmp / "a.vmdk");
    REQUIRE(dev.ok());
    ImageInfo i = dev->device->info();
    const Json* qd = qj.get("format-specific")->get("data");
    const Json* vd = i.format_specific.get("data");
    CHECK(vd->get("cid")->dump() == qd->get("cid")->dump());
    CHECK(vd->get("parent-cid")->dump() == qd->get("parent-cid")->dump());
    CHECK(*vd->get("create-type")->as_string() == *qd->get("create-type")->as_string());
    auto* qe = qd->get("extents")->as_array();
    auto* ve = vd->get("extents")->as_array();
    REQUIRE(qe->size() == ve->size());
    for (size_t k = 0; k < qe->size(); ++k) {
        CHECK((*ve)[k].get("virtual-size")->dump() == (*qe)[k].get("virtual-size")->dump());
        CHECK((*ve)[k].get("cluster-size")->dump() == (*qe)[k].get("cluster-size")->dump());
        CHECK((*ve)[k].get("format")->dump() == (*qe)[k].get("format")->dump());
    }
    CHECK(i.cluster_size == 65536u);
}

TEST_CASE("writing to a parent gives it a new CID: its child then refuses to open") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    for (std::string sub : {"monolithicSparse", "twoGbMaxExtentFlat"}) {
        CAPTURE(sub);
        REQUIRE(vt::run("qemu-img create -q -f vmdk -o subformat=" + sub + " " + tmp / "base.vmdk" + " 4M").status ==
                0);
        REQUIRE(vt::run("qemu-img create -q -f vmdk -b base.vmdk -F vmdk " + tmp / "top.vmdk").status == 0);
        auto fs = make_posix_file_system(tmp.path);
        REQUIRE(open_image(reg, *fs, "top.vmdk", OpenOptions{}).ok());
        OpenOptions rw;
        rw.read_write = true;
        {
            auto base = open_image(reg, *fs, "base.vmdk", rw);
            REQUIRE(base.ok());
            uint32_t before = static_cast<uint32_t>(
                *base->device->info().format_specific.get("data")->get("cid")->as_uint());
            REQUIRE(base->device->write(0, vt::pattern(4096, 1)).ok());
            REQUIRE(base->device->close().ok());
            auto again = open_image(reg, *fs, "base.vmdk", OpenOptions{});
            REQUIRE(again.ok());
            CHECK(*again->device->info().format_specific.get("data")->get("cid")->as_uint() != before);
        }
        vt::expect_qemu_check(tmp / "base.vmdk", "vmdk");
        auto q = vt::run("qemu-io -f vmdk -c 'read -P 0 4096 4096' " + tmp / "base.vmdk");
        CHECK_MESSAGE((q.status == 0 && q.output.find("fail") == std::string::npos), q.output);
        auto top = open_image(reg, *fs, "top.vmdk", OpenOptions{});
        REQUIRE(!top.ok());
        CHECK(top.error().code == ErrorCode::corrupt);
    }
}

TEST_CASE("block status: host offsets agree with qemu-img map (sparse and flat)") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    for (std::string sub : {"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse"}) {
        CAPTURE(sub);
        vt::TempDir tmp;
        std::string img = tmp / "m.vmdk";
        REQUIRE(vt::run("qemu-img create -q -f vmdk -o subformat=" + sub + " " + img + " 8M").status == 0);
        REQUIRE(
            vt::run(qemu_io_writes("vmdk", img, {{MiB, 128 * 1024, 1}, {0, 4096, 2}, {7 * MiB, 65536, 3}})).status ==
            0);
        auto q = vt::run("qemu-img map --output=json " + img);
        REQUIRE(q.status == 0);
        Json qj;
        REQUIRE(Json::parse(q.output, qj));
        auto dev = vt::open_host(reg, img);
        REQUIRE(dev.ok());
        for (auto& m : *qj.as_array()) {
            uint64_t start = *m.get("start")->as_uint();
            uint64_t length = *m.get("length")->as_uint();
            bool data = *m.get("data")->as_bool();
            auto bs = dev->device->block_status(start, length);
            REQUIRE(bs.ok());
            CAPTURE(start);
            CHECK(bs->length <= length);
            if (data) {
                CHECK(bs->kind == ExtentKind::data);
                REQUIRE(bs->host_offset);
                CHECK(*bs->host_offset == *m.get("offset")->as_uint());
                REQUIRE(bs->file);
                if (auto* f = m.get("filename"))
                    CHECK(std::filesystem::path(*f->as_string()).filename() ==
                          std::filesystem::path(bs->file->name()).filename());
            } else {
                CHECK(bs->kind != ExtentKind::data);
            }
        }
    }
}

TEST_CASE("vmfsSparse (COWD) extent behind a descriptor, against qemu") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    // Header at sector 0, grain directory at sector 1 (one entry), grain table at sectors 2..33, grains after.
    std::vector<uint8_t> f(36 * 512 + 2 * 4096, 0);
    auto put32 = [&](size_t at, uint32_t v) { std::memcpy(f.data() + at, &v, 4); };
    put32(0, 0x44574f43);  // "COWD"
    put32(4, 1);
    put32(8, 3);
    put32(12, 8192);  // sectors
    put32(16, 8);     // grain sectors
    put32(20, 1);     // GD offset
    put32(24, 1);     // GD entries
    put32(28, 36 + 16);
    put32(512, 2);
    put32(2 * 512 + 3 * 4, 36);         // grain 3
    put32(2 * 512 + 1000 * 4, 36 + 8);  // grain 1000
    std::memset(f.data() + 36 * 512, 0xa1, 4096);
    std::memset(f.data() + 44 * 512, 0xb2, 4096);
    vt::write_file(tmp / "c-delta.vmdk", f);
    std::string d =
        "# Disk DescriptorFile\nversion=1\nCID=11111111\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\n"
        "RW 8192 VMFSSPARSE \"c-delta.vmdk\"\n";
    vt::write_file(tmp / "c.vmdk", std::vector<uint8_t>(d.begin(), d.end()));
    auto want = vt::qemu_read_raw(tmp / "c.vmdk", "vmdk", tmp.path);
    auto dev = vt::open_host(reg, tmp / "c.vmdk");
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    auto got = vt::read_all(*dev->device);
    CHECK(got == want);
    CHECK(got[3 * 4096] == 0xa1);
    CHECK(got[1000 * 4096 + 5] == 0xb2);
}

TEST_CASE("create: descriptor DDB (geometry, adapter, hwversion, tools) as qemu-img writes it") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    auto ddb_lines = [](const std::string& path) {
        auto b = vt::read_file(path);
        std::string s(b.begin(), b.end()), out;
        size_t pos = 0;
        while ((pos = s.find("\nddb.", pos)) != std::string::npos) {
            size_t nl = s.find('\n', pos + 1);
            std::string line = s.substr(pos + 1, nl - pos - 1);
            if (line.rfind("ddb.uuid", 0) != 0) out += line + "\n";
            pos = nl;
        }
        return out;
    };
    for (std::string o : {"", "adapter_type=lsilogic", "adapter_type=buslogic,hwversion=7", "compat6=on",
                          "adapter_type=legacyESX,toolsversion=42"}) {
        CAPTURE(o);
        for (uint64_t size : {uint64_t(20) << 30, uint64_t(7) << 20}) {
            std::string opts = "subformat=monolithicFlat" + (o.empty() ? "" : "," + o);
            REQUIRE(vt::run("qemu-img create -q -f vmdk -o " + opts + " " + tmp / "q.vmdk" + " " + std::to_string(size))
                        .status == 0);
            CreateOptions co;
            co.size = size;
            co.values = *parse_option_list(opts);
            auto d = create_image(reg, *fs, "v.vmdk", "vmdk", co);
            REQUIRE_MESSAGE(d.ok(), vt::error_text(d));
            REQUIRE((*d)->close().ok());
            CHECK(ddb_lines(tmp / "v.vmdk") == ddb_lines(tmp / "q.vmdk"));
        }
    }
}

TEST_CASE("an existing streamOptimized image opened read-write refuses writes and stays unchanged") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::vector<uint8_t> img(MiB, 0x3c);
    vt::write_file(tmp / "s.raw", img);
    REQUIRE(
        vt::run("qemu-img convert -f raw -O vmdk -o subformat=streamOptimized " + tmp / "s.raw" + " " + tmp / "s.vmdk")
            .status == 0);
    auto before = vt::read_file(tmp / "s.vmdk");
    {
        auto dev = vt::open_host(reg, tmp / "s.vmdk", "", true);
        REQUIRE(dev.ok());
        auto st = dev->device->write(0, std::vector<uint8_t>(512, 1));
        REQUIRE(!st.ok());
        CHECK(st.error().code == ErrorCode::unsupported);
        REQUIRE(dev->device->close().ok());
    }
    CHECK(vt::read_file(tmp / "s.vmdk") == before);
}

TEST_CASE("monolithicSparse whose embedded descriptor names its extent \"\" (FreeBSD mkimg) reads as the file") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "freebsd.vmdk";
    REQUIRE(vt::run("qemu-img create -q -f vmdk " + vt::sh_quote(img) + " 16M").status == 0);
    REQUIRE(vt::run(qemu_io_writes("vmdk", img, {{MiB, MiB, 0x5a}, {15 * MiB, 4096, 0x6b}})).status == 0);
    // Rewrite the extent line as mkimg writes it: `RW 32768 SPARSE ""`; the text shifts left and the freed
    // bytes at the end of the descriptor area become NULs (the descriptor ends at the first NUL).
    auto bytes = vt::read_file(img);
    std::string want = "SPARSE \"freebsd.vmdk\"";
    auto it = std::search(bytes.begin(), bytes.end(), want.begin(), want.end());
    REQUIRE(it != bytes.end());
    size_t at = static_cast<size_t>(it - bytes.begin()) + 8, cut = want.size() - 9;
    auto nul = std::find(bytes.begin() + static_cast<std::ptrdiff_t>(at), bytes.end(), uint8_t{0});
    size_t end = static_cast<size_t>(nul - bytes.begin());
    std::copy(bytes.begin() + static_cast<std::ptrdiff_t>(at + cut), bytes.begin() + static_cast<std::ptrdiff_t>(end),
              bytes.begin() + static_cast<std::ptrdiff_t>(at));
    std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(end - cut), bytes.begin() + static_cast<std::ptrdiff_t>(end),
              uint8_t{0});
    vt::write_file(img, bytes);
    REQUIRE(vt::run("strings " + vt::sh_quote(img) + " | grep -qx 'RW 32768 SPARSE \"\"'").status == 0);
    auto dev = vt::open_host(reg, img);
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    CHECK(vt::read_all(*dev->device) == vt::qemu_read_raw(img, "vmdk", tmp.path));
    CHECK(vt::read_all(*dev->device)[MiB] == 0x5a);
    // In a descriptor file an empty extent name is still an error.
    vt::write_file(tmp / "d.vmdk", [] {
        std::string t =
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
            "createType=\"monolithicFlat\"\nRW 2048 FLAT \"\" 0\n";
        return std::vector<uint8_t>(t.begin(), t.end());
    }());
    auto bad = vt::open_host(reg, tmp / "d.vmdk", "vmdk");
    REQUIRE(!bad.ok());
    CHECK(bad.error().code == ErrorCode::corrupt);
}

TEST_CASE("resize: a monolithicFlat VMDK grows and shrinks (qemu-img and vmdkinfo read it) - sparse refused") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "f.vmdk";
    REQUIRE(vt::run("qemu-img create -q -f vmdk -o subformat=monolithicFlat " + vt::sh_quote(img) + " 100M").status ==
            0);
    REQUIRE(vt::run(qemu_io_writes("vmdk", img, {{0, MiB, 0x11}, {99 * MiB, MiB, 0x22}})).status == 0);
    auto before = vt::qemu_read_raw(img, "vmdk", tmp.path);
    {
        auto dev = vt::open_host(reg, img, "vmdk", true);
        REQUIRE(dev.ok());
        auto st = dev->device->resize(100 * MiB + GiB);
        REQUIRE_MESSAGE(st.ok(), st.error().to_string());
        REQUIRE(dev->device->close().ok());
    }
    auto after = vt::qemu_read_raw(img, "vmdk", tmp.path);
    REQUIRE(after.size() == 100 * MiB + GiB);
    CHECK(std::equal(before.begin(), before.end(), after.begin()));
    CHECK(std::all_of(after.begin() + static_cast<std::ptrdiff_t>(before.size()), after.end(),
                      [](uint8_t b) { return b == 0; }));
    if (vt::have("vmdkinfo")) {
        auto v = vt::run("vmdkinfo " + vt::sh_quote(img));
        CHECK(v.output.find("(" + std::to_string(100 * MiB + GiB) + " bytes)") != std::string::npos);
    }
    {
        auto dev = vt::open_host(reg, img, "vmdk", true);
        REQUIRE(dev.ok());
        REQUIRE(dev->device->resize(50 * MiB).ok());
        REQUIRE(dev->device->close().ok());
    }
    auto shrunk = vt::qemu_read_raw(img, "vmdk", tmp.path);
    REQUIRE(shrunk.size() == 50 * MiB);
    CHECK(std::equal(shrunk.begin(), shrunk.end(), before.begin()));
    REQUIRE(vt::run("qemu-img create -q -f vmdk " + vt::sh_quote(tmp / "s.vmdk") + " 10M").status == 0);
    auto sp = vt::open_host(reg, tmp / "s.vmdk", "vmdk", true);
    REQUIRE(sp.ok());
    auto st = sp->device->resize(5 * MiB);
    REQUIRE(!st.ok());
    CHECK(st.error().code == ErrorCode::unsupported);
}
