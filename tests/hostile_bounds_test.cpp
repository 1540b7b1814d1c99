// SPDX-License-Identifier: Apache-2.0
// Hostile images, round two: small files that ask for gigabytes or minutes. Each image is built here
// (nothing stored), and each case asserts both the outcome (a bounded result or limit_exceeded/corrupt)
// and what it cost: the image's own memory budget and work counter, or the peak RSS of a tool run.
// No wall-clock assertions.
#include <cstring>
#include <filesystem>
#include <fstream>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

using vt::get_be;
using vt::get_le;
using vt::patch_file;
using vt::put_be;
using vt::put_le;

void set_size(const std::string& path, uint64_t size) { std::filesystem::resize_file(path, size); }

vdisk::Result<vdisk::OpenedImage> open_path(const std::string& path, bool untrusted, const std::string& fmt = "") {
    static auto fs = vdisk::make_posix_file_system();
    static auto reg = vdisk::Registry::builtin();
    vdisk::OpenOptions o;
    o.untrusted = untrusted;
    o.format = fmt;
    o.no_backing = true;
    return vdisk::open_image(reg, *fs, path, o);
}

// Run the tool, recording its peak RSS with GNU time (a bound on memory that needs no wall clock).
// In sanitizer builds ASan's quarantine keeps up to 256 MiB of freed memory resident, which is not the
// program's: keep it small so the bound measures vdisk (shadow memory still adds about an eighth).
vt::MeasuredRun tool(const std::string& args, const std::string& dir) {
    return vt::run_measured("ASAN_OPTIONS=quarantine_size_mb=1:thread_local_quarantine_size_kb=64",
                            vt::tool() + " " + args, dir + "/rss.txt");
}

// Run a check of one layer through the library; the budget is the image's.
struct Checked {
    vdisk::Result<vdisk::CheckResult> result = vdisk::make_error(vdisk::ErrorCode::io, "not run");
    uint64_t peak = 0, work = 0;
};
Checked check_path(const std::string& path, bool untrusted) {
    Checked c;
    auto img = open_path(path, untrusted);
    if (!img) {
        c.result = img.error();
        return c;
    }
    c.result = img->format->check(*img->device, vdisk::RepairMode::none);
    c.peak = img->device->budget()->memory_peak();
    c.work = img->device->budget()->work_done();
    return c;
}

// ---- qcow2 ----------------------------------------------------------------------------------------

// A version 3 qcow2 with 64 KiB clusters: header (0), refcount table (1), one refcount block (2) with
// refcount 1 for the first `used` clusters.
std::vector<uint8_t> qcow2_head(uint64_t size, uint32_t l1_entries, uint64_t l1_off, uint32_t nb_snap = 0,
                                uint64_t snap_off = 0, uint64_t used = 6) {
    const uint64_t cs = 64 * KiB;
    std::vector<uint8_t> b(3 * cs, 0);
    put_be(b, 0, 0x514649fb, 4);
    put_be(b, 4, 3, 4);
    put_be(b, 20, 16, 4);
    put_be(b, 24, size, 8);
    put_be(b, 36, l1_entries, 4);
    put_be(b, 40, l1_off, 8);
    put_be(b, 48, cs, 8);
    put_be(b, 56, 1, 4);
    put_be(b, 60, nb_snap, 4);
    put_be(b, 64, snap_off, 8);
    put_be(b, 96, 4, 4);
    put_be(b, 100, 104, 4);
    put_be(b, cs, 2 * cs, 8);
    for (uint64_t c = 0; c < used; ++c) put_be(b, 2 * cs + 2 * c, 1, 2);
    return b;
}

TEST_CASE("1: qcow2 check, every L1 entry names one L2 table whose entries all name one cluster") {
    vt::TempDir d;
    const uint64_t cs = 64 * KiB;
    const uint32_t n = 4096;  // 4096 x 8192 = 33.5M mapped entries, all the same cluster
    std::string p = d / "shared.qcow2";
    auto b = qcow2_head(uint64_t(n) * 8192 * cs, n, 3 * cs);
    b.resize(6 * cs, 0);
    const uint64_t copied = 1ull << 63;
    for (uint32_t i = 0; i < n; ++i) put_be(b, 3 * cs + 8 * i, (4 * cs) | copied, 8);
    for (uint32_t j = 0; j < 8192; ++j) put_be(b, 4 * cs + 8 * j, (5 * cs) | copied, 8);
    vt::write_file(p, b);
    for (bool untrusted : {true, false}) {
        CAPTURE(untrusted);
        auto c = check_path(p, untrusted);
        REQUIRE_MESSAGE(c.result.ok(), c.result.error().to_string());
        CHECK(c.result->corruptions > 0);
        CHECK(c.result->messages.size() <= vdisk::max_check_messages);
        // The walk counted all it visited; the state it kept is sized by the file (6 clusters), not by the
        // 33M references.
        CHECK(c.work >= uint64_t(n) * 8192);
        CHECK(c.peak < 4 * MiB);
    }
    auto t = tool("check --untrusted " + sh_quote(p), d.path);
    INFO(t.output);
    CHECK(t.status != 0);
    CHECK(t.output.find("bad_alloc") == std::string::npos);
    CHECK(t.rss_kib < 100 * 1024);
}

// 1024 snapshots share one all-zero L1 table of `l1_bytes`.
std::string qcow2_shared_snapshot_l1(const vt::TempDir& d, uint64_t l1_bytes) {
    const uint64_t cs = 64 * KiB;
    std::string p = d / ("snaps" + std::to_string(l1_bytes >> 20) + ".qcow2");
    const uint32_t nsnap = 1024;
    const uint64_t snap_off = 4 * cs, l1_snap = 6 * cs;
    auto b = qcow2_head(1ull << 40, 2048, 3 * cs, nsnap, snap_off, 6);
    b.resize(6 * cs, 0);
    for (uint32_t i = 0; i < nsnap; ++i) {
        size_t e = snap_off + 48 * i;
        put_be(b, e, l1_snap, 8);
        put_be(b, e + 8, l1_bytes / 8, 4);
        put_be(b, e + 12, 1, 2);
        put_be(b, e + 14, 1, 2);
        b[e + 40] = static_cast<uint8_t>('0' + i % 10);
        b[e + 41] = 's';
    }
    vt::write_file(p, b);
    set_size(p, l1_snap + l1_bytes);
    return p;
}

TEST_CASE("2: qcow2 check, 1024 snapshots share one all-zero L1") {
    vt::TempDir d;
    // 64 MiB: over qemu-img's own cap for one L1 table.
    std::string big = qcow2_shared_snapshot_l1(d, 64 * MiB);
    for (bool untrusted : {true, false}) {
        auto c = check_path(big, untrusted);
        REQUIRE_FALSE(c.result.ok());
        CHECK(c.result.error().code == vdisk::ErrorCode::limit_exceeded);
        CHECK(c.result.error().message.find("L1") != std::string::npos);
    }
    // 32 MiB (allowed): walked once, not 1024 times.
    std::string p = qcow2_shared_snapshot_l1(d, 32 * MiB);
    for (bool untrusted : {true, false}) {
        CAPTURE(untrusted);
        auto c = check_path(p, untrusted);
        if (c.result.ok()) {
            CHECK(c.result->corruptions > 0);
        } else {
            CHECK(c.result.error().code == vdisk::ErrorCode::limit_exceeded);
        }
        CHECK(c.work < 64ull << 20);  // 1024 full walks would be 4G entries
        CHECK(c.peak < 48 * MiB);
    }
}

TEST_CASE("7: trusted defaults: a 512 MiB qcow2 L1 is refused before it is read") {
    vt::TempDir d;
    const uint64_t cs = 64 * KiB;
    std::string p = d / "l1.qcow2";
    const uint64_t entries = 64ull << 20;  // 512 MiB of L1
    auto b = qcow2_head(entries * 8192 * cs > (1ull << 61) ? (1ull << 61) : entries * 8192 * cs,
                        static_cast<uint32_t>(entries), 4 * cs);
    vt::write_file(p, b);
    set_size(p, 4 * cs + entries * 8);
    auto img = open_path(p, false);
    REQUIRE_FALSE(img.ok());
    CHECK(img.error().code == vdisk::ErrorCode::limit_exceeded);
    CHECK(img.error().message.find("L1") != std::string::npos);
    auto t = tool("info " + sh_quote(p), d.path);
    CHECK(t.status == 1);
    CHECK(t.rss_kib < 64 * 1024);
}

TEST_CASE("8: trusted defaults: 4000 snapshots with 64 KiB ids and names") {
    vt::TempDir d;
    const uint64_t cs = 64 * KiB;
    std::string p = d / "names.qcow2";
    const uint32_t nsnap = 4000;
    const uint64_t snap_off = 4 * cs, entry = 40 + 65535 + 65535 + 2;  // padded to 8
    auto b = qcow2_head(1 * MiB * 1024, 2, 3 * cs, nsnap, snap_off, 6);
    vt::write_file(p, b);
    for (uint32_t i = 0; i < nsnap; ++i) {
        std::vector<uint8_t> h(40, 0);
        put_be(h, 0, 3 * cs, 8);
        put_be(h, 8, 2, 4);
        put_be(h, 12, 65535, 2);
        put_be(h, 14, 65535, 2);
        patch_file(p, snap_off + i * entry, h);
    }
    set_size(p, snap_off + nsnap * entry);
    auto img = open_path(p, false);
    REQUIRE_FALSE(img.ok());
    CHECK(img.error().code == vdisk::ErrorCode::limit_exceeded);
    CHECK(img.error().message.find("snapshot") != std::string::npos);
    auto t = tool("info --output=json " + sh_quote(p), d.path);
    CHECK(t.status == 1);
    CHECK(t.rss_kib < 160 * 1024);
}

// ---- vmdk -----------------------------------------------------------------------------------------

// A monolithic sparse VMDK with `gd_entries` directory entries (512 grains of 64 KiB each).
struct VmdkGeo {
    uint64_t gd_entries;
    uint64_t rgd_sector = 21, gd_sector = 0, gt_sector = 0, grain_sector = 0;
};
std::vector<uint8_t> vmdk_header(const VmdkGeo& g, uint64_t overhead) {
    std::vector<uint8_t> b(512 * 21, 0);
    put_le(b, 0, 0x564d444b, 4);
    put_le(b, 4, 1, 4);
    put_le(b, 8, 3, 4);
    put_le(b, 12, g.gd_entries * 512 * 128, 8);
    put_le(b, 20, 128, 8);
    put_le(b, 28, 1, 8);
    put_le(b, 36, 20, 8);
    put_le(b, 44, 512, 4);
    put_le(b, 48, g.rgd_sector, 8);
    put_le(b, 56, g.gd_sector, 8);
    put_le(b, 64, overhead, 8);
    b[73] = '\n';
    b[74] = ' ';
    b[75] = '\r';
    b[76] = '\n';
    std::string desc =
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        "createType=\"monolithicSparse\"\n\nRW " +
        std::to_string(g.gd_entries * 512 * 128) + " SPARSE \"x.vmdk\"\n\nddb.adapterType = \"ide\"\n";
    std::memcpy(b.data() + 512, desc.data(), desc.size());
    return b;
}

TEST_CASE("3: vmdk check, 8192 directory entries name one grain table that names one grain") {
    vt::TempDir d;
    std::string p = d / "shared.vmdk";
    VmdkGeo g{8192};
    uint64_t gd_sectors = g.gd_entries * 4 / 512;
    g.gd_sector = g.rgd_sector + gd_sectors;
    g.gt_sector = g.gd_sector + gd_sectors;
    g.grain_sector = 256;
    auto b = vmdk_header(g, 256);
    b.resize((256 + 128) * 512, 0);
    for (uint64_t i = 0; i < g.gd_entries; ++i) {
        put_le(b, g.rgd_sector * 512 + 4 * i, g.gt_sector, 4);
        put_le(b, g.gd_sector * 512 + 4 * i, g.gt_sector, 4);
    }
    for (int j = 0; j < 512; ++j) put_le(b, g.gt_sector * 512 + 4 * j, g.grain_sector, 4);
    vt::write_file(p, b);
    for (bool untrusted : {true, false}) {
        CAPTURE(untrusted);
        auto c = check_path(p, untrusted);
        REQUIRE_MESSAGE(c.result.ok(), c.result.error().to_string());
        CHECK(c.result->corruptions > 4000000);  // every grain after the first overlaps it
        CHECK(c.result->messages.size() <= vdisk::max_check_messages);
        CHECK(c.result->messages_dropped > 0);
        CHECK(c.work >= g.gd_entries * 512);
        // The grain table cache (max_cache_bytes, 32 MiB: one copy per directory entry) plus a sector bitmap
        // of the file; nothing per reference.
        CHECK(c.peak < 36 * MiB);
    }
    auto t = tool("check --untrusted " + sh_quote(p), d.path);
    INFO(t.output);
    CHECK(t.status != 0);
    CHECK(t.rss_kib < 100 * 1024);
}

TEST_CASE("7: trusted defaults: a 512 MiB grain directory with its redundant copy") {
    vt::TempDir d;
    std::string p = d / "gd.vmdk";
    VmdkGeo g{128ull << 20};  // 128M entries: 512 MiB per directory
    uint64_t gd_sectors = g.gd_entries * 4 / 512;
    g.gd_sector = g.rgd_sector + gd_sectors;
    auto b = vmdk_header(g, g.gd_sector + gd_sectors);
    vt::write_file(p, b);
    set_size(p, (g.gd_sector + gd_sectors) * 512);
    auto img = open_path(p, false);
    REQUIRE_FALSE(img.ok());
    CHECK(img.error().code == vdisk::ErrorCode::limit_exceeded);
    auto t = tool("info " + sh_quote(p), d.path);
    CHECK(t.status == 1);
    CHECK(t.rss_kib < 200 * 1024);
}

TEST_CASE("7: trusted defaults: 64 descriptor extents name one sparse extent file") {
    vt::TempDir d;
    VmdkGeo g{8192 * 4};  // 128 KiB directory (and as much redundant), 256 KiB decoded
    uint64_t gd_sectors = g.gd_entries * 4 / 512;
    g.gd_sector = g.rgd_sector + gd_sectors;
    auto b = vmdk_header(g, g.gd_sector + gd_sectors);
    b.resize((g.gd_sector + gd_sectors) * 512, 0);
    vt::write_file(d / "ext.vmdk", b);
    uint64_t sectors = g.gd_entries * 512 * 128;
    std::string desc =
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        "createType=\"twoGbMaxExtentSparse\"\n\n";
    for (int i = 0; i < 64; ++i) desc += "RW " + std::to_string(sectors) + " SPARSE \"ext.vmdk\"\n";
    std::ofstream(d / "top.vmdk") << desc;
    vdisk::OpenOptions o;
    o.limits.max_image_memory = 16 * MiB;  // 64 x (128 KiB raw x 2 + decoded) is far more
    auto fs = vdisk::make_posix_file_system();
    auto img = vdisk::open_image(vdisk::Registry::builtin(), *fs, d / "top.vmdk", o);
    REQUIRE_FALSE(img.ok());
    CHECK(img.error().code == vdisk::ErrorCode::limit_exceeded);
    // With the default budget it opens, and the budget saw every extent's tables.
    auto ok = open_path(d / "top.vmdk", false);
    REQUIRE_MESSAGE(ok.ok(), ok.error().to_string());
    CHECK(ok->device->budget()->memory_used() >= 64 * g.gd_entries * 4);
}

// ---- vdi / vhd ------------------------------------------------------------------------------------

TEST_CASE("4: vdi check, a block map whose 4M entries all name slot 0") {
    vt::TempDir d;
    std::string p = d / "slot0.vdi";
    auto cr = run(sh_quote(vt::tool_path()) + " create -f vdi " + sh_quote(p) + " 4T");
    REQUIRE_MESSAGE(cr.status == 0, cr.output);
    auto b = vt::read_file(p);
    uint64_t off_blocks = get_le(b, 0x154, 4), blocks = get_le(b, 0x180, 4);
    REQUIRE(blocks == 4ull << 20);
    for (uint64_t i = 0; i < blocks; ++i) put_le(b, off_blocks + 4 * i, 0, 4);
    put_le(b, 0x184, 1, 4);
    vt::write_file(p, b);
    set_size(p, b.size() + 1 * MiB);
    for (bool untrusted : {true, false}) {
        auto c = check_path(p, untrusted);
        REQUIRE_MESSAGE(c.result.ok(), c.result.error().to_string());
        CHECK(c.result->corruptions >= blocks - 1);
        CHECK(c.result->messages.size() <= vdisk::max_check_messages);
        CHECK(c.work >= blocks);
        CHECK(c.peak < 40 * MiB);  // the 16 MiB map and a slot map sized by the file
    }
    auto t = tool("check " + sh_quote(p), d.path);
    CHECK(t.status != 0);
    CHECK(t.rss_kib < 100 * 1024);
}

TEST_CASE("4: vhd check, a BAT whose 1M entries all name one block") {
    vt::TempDir d;
    std::string p = d / "same.vhd";
    auto cr = run(sh_quote(vt::tool_path()) + " create -f vhd " + sh_quote(p) + " 1900G");
    REQUIRE_MESSAGE(cr.status == 0, cr.output);
    auto b = vt::read_file(p);
    uint64_t dyn = get_be(b, 16, 8);
    uint64_t bat = get_be(b, dyn + 16, 8), n = get_be(b, dyn + 28, 4), bs = get_be(b, dyn + 32, 4);
    REQUIRE(n > 900000);
    uint64_t footer_at = b.size() - 512;
    std::vector<uint8_t> footer(b.begin() + static_cast<std::ptrdiff_t>(footer_at), b.end());
    uint64_t block_sector = footer_at / 512;
    for (uint64_t i = 0; i < n; ++i) put_be(b, bat + 4 * i, block_sector, 4);
    b.resize(footer_at + 512 + bs, 0);
    b.insert(b.end(), footer.begin(), footer.end());
    vt::write_file(p, b);
    for (bool untrusted : {true, false}) {
        auto c = check_path(p, untrusted);
        REQUIRE_MESSAGE(c.result.ok(), c.result.error().to_string());
        CHECK(c.result->corruptions >= n - 1);
        CHECK(c.result->messages.size() <= vdisk::max_check_messages);
        CHECK(c.work >= n);
        CHECK(c.peak < 40 * MiB);
    }
    auto t = tool("check " + sh_quote(p), d.path);
    CHECK(t.status != 0);
    CHECK(t.rss_kib < 100 * 1024);
}

// ---- vhdx -----------------------------------------------------------------------------------------

// Find the metadata table of a VHDX made by vdisk create: the 64 KiB-aligned block starting "metadata".
uint64_t vhdx_metadata_offset(const std::vector<uint8_t>& b) {
    for (uint64_t off = 0; off + 8 <= b.size(); off += 64 * KiB)
        if (std::memcmp(b.data() + off, "metadata", 8) == 0) return off;
    return 0;
}

TEST_CASE("6: vhdx parent locator with 65535 entries on the same 64 KiB") {
    vt::TempDir d;
    std::string p = d / "loc.vhdx";
    auto cr = run(sh_quote(vt::tool_path()) + " create -f vhdx " + sh_quote(p) + " 1G");
    REQUIRE_MESSAGE(cr.status == 0, cr.output);
    auto b = vt::read_file(p);
    uint64_t meta = vhdx_metadata_offset(b);
    REQUIRE(meta != 0);
    uint32_t count = static_cast<uint32_t>(get_le(b, meta + 10, 2));
    uint64_t item_off = 0, params_at = 0;
    for (uint32_t i = 0; i < count; ++i) {
        uint64_t e = meta + 32 + 32 * i;
        item_off = std::max<uint64_t>(item_off, get_le(b, e + 16, 4) + get_le(b, e + 20, 4));
        if (b[e] == 0x37 && b[e + 1] == 0x67) params_at = meta + get_le(b, e + 16, 4);  // file parameters
    }
    REQUIRE(params_at != 0);
    item_off = (item_off + 4095) / 4096 * 4096;
    const uint32_t n = 65535;
    const uint64_t table = 20 + uint64_t(n) * 12, data_at = (table + 4095) / 4096 * 4096;
    const uint64_t item_len = data_at + 64 * KiB;
    REQUIRE(item_off + item_len <= 1 * MiB);
    std::vector<uint8_t> item(item_len, 0);
    const uint8_t type[16] = {0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
                              0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13};
    std::memcpy(item.data(), type, 16);
    put_le(item, 18, n, 2);
    for (uint32_t i = 0; i < n; ++i) {
        put_le(item, 20 + 12 * i, data_at, 4);
        put_le(item, 24 + 12 * i, data_at, 4);
        put_le(item, 28 + 12 * i, 65534, 2);
        put_le(item, 30 + 12 * i, 65534, 2);
    }
    for (uint64_t k = data_at; k < item_len; k += 2) put_le(item, k, 'a', 2);
    std::memcpy(b.data() + meta + item_off, item.data(), item.size());
    uint64_t e = meta + 32 + 32 * count;
    const uint8_t guid[16] = {0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
                              0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c};
    std::memcpy(b.data() + e, guid, 16);
    put_le(b, e + 16, item_off, 4);
    put_le(b, e + 20, item_len, 4);
    put_le(b, e + 24, 2 | 4, 4);  // virtual disk, required
    put_le(b, meta + 10, count + 1, 2);
    vt::write_file(p, b);
    // HasParent clear: the locator is not needed and not decoded.
    for (bool untrusted : {true, false}) {
        auto img = open_path(p, untrusted);
        REQUIRE_MESSAGE(img.ok(), img.error().to_string());
        CHECK(img->device->budget()->work_done() < 1 * MiB);
    }
    // HasParent set: the locator is read with bounded decoding and refused (no path among the keys).
    put_le(b, params_at + 4, get_le(b, params_at + 4, 4) | 2, 4);
    vt::write_file(p, b);
    for (bool untrusted : {true, false}) {
        auto img = open_path(p, untrusted);
        REQUIRE_FALSE(img.ok());
        CHECK((img.error().code == vdisk::ErrorCode::corrupt || img.error().code == vdisk::ErrorCode::limit_exceeded));
        auto inspect = open_path(p, untrusted);  // same again: the error is stable
        CHECK_FALSE(inspect.ok());
    }
    auto t = tool("info " + sh_quote(p), d.path);
    CHECK(t.status == 1);
    CHECK(t.rss_kib < 64 * 1024);
}

// ---- output hygiene -------------------------------------------------------------------------------

TEST_CASE("9: names from an image are escaped for the terminal and valid UTF-8 in JSON") {
    vt::TempDir d;
    const uint64_t cs = 64 * KiB;
    std::string p = d / "name.qcow2";
    const std::string name = "\x1b]0;owned\x07\x1b[2J\xff\xfe-back.img";
    auto b = qcow2_head(1 * MiB, 1, 3 * cs, 0, 0, 4);
    b.resize(4 * cs, 0);
    put_be(b, 8, 512, 8);
    put_be(b, 16, name.size(), 4);
    std::memcpy(b.data() + 512, name.data(), name.size());
    vt::write_file(p, b);
    for (const char* args : {"info ", "info --untrusted ", "info --output=json ", "check ", "map ",
                             "check --untrusted ", "info --output=json --untrusted "}) {
        CAPTURE(args);
        auto r = run(sh_quote(vt::tool_path()) + " " + args + sh_quote(p));
        INFO(r.output);
        CHECK(r.output.find('\x1b') == std::string::npos);
        CHECK(r.output.find('\x07') == std::string::npos);
        if (std::string(args).find("json") != std::string::npos && r.status == 0) {
            auto py = run(
                "python3 -c 'import json,sys; json.load(open(sys.argv[1], encoding=\"utf-8\"))' /dev/stdin <<'EOF'\n" +
                r.output + "\nEOF");
            CHECK_MESSAGE(py.status == 0, py.output);
        }
    }
    auto r = run(sh_quote(vt::tool_path()) + " info " + sh_quote(p));
    CHECK(r.output.find("\\x1b]0;owned\\x07") != std::string::npos);
    // The library's JSON writer never emits invalid UTF-8.
    std::string dumped = vdisk::Json(std::string("a\xff\xc3(b\xe2\x82")).dump(0);
    vdisk::Json back;
    CHECK(vdisk::Json::parse(dumped, back));
    CHECK(vdisk::utf8_valid(dumped));
    CHECK(vdisk::escape_for_terminal("a\x1b"
                                     "b\n\xc3\xa9\xff") == "a\\x1bb\\x0a\xc3\xa9\\xff");
}

}  // namespace

namespace {

TEST_CASE("budget: an image budget inside a chain budget, charges released, limits named") {
    auto chain = std::make_shared<vdisk::Budget>(100, UINT64_MAX);
    auto a = std::make_shared<vdisk::Budget>(60, 10, chain);
    auto b = std::make_shared<vdisk::Budget>(60, 10, chain);
    auto ca = vdisk::Charge::make(a, 50, "table A");
    REQUIRE(ca.ok());
    CHECK(chain->memory_used() == 50);
    auto too_big = vdisk::Charge::make(a, 20, "table A2");  // over the image's 60
    REQUIRE_FALSE(too_big.ok());
    CHECK(too_big.error().code == vdisk::ErrorCode::limit_exceeded);
    CHECK(too_big.error().message.find("table A2") != std::string::npos);
    CHECK(a->memory_used() == 50);
    auto cb = vdisk::Charge::make(b, 55, "table B");  // within b's 60, over the chain's 100
    REQUIRE_FALSE(cb.ok());
    CHECK(cb.error().message.find("chain") != std::string::npos);
    CHECK(b->memory_used() == 0);
    CHECK(chain->memory_used() == 50);
    ca->reset();
    CHECK(chain->memory_used() == 0);
    CHECK(a->memory_peak() == 50);
    CHECK(a->work(10, "walk").ok());
    auto w = a->work(1, "walk");
    REQUIRE_FALSE(w.ok());
    CHECK(w.error().code == vdisk::ErrorCode::limit_exceeded);
    // Untrusted opens get the smaller of the two figures.
    vdisk::OpenOptions o;
    o.untrusted = true;
    auto u = vdisk::make_image_budget(o);
    CHECK(u->memory_limit() == o.limits.max_untrusted_memory);
    CHECK(u->work_limit() == o.limits.max_untrusted_work);
}

}  // namespace
