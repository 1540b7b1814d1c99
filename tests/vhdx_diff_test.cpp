// SPDX-License-Identifier: Apache-2.0
// VHDX differencing images built by hand from vdisk-made ones: parent locators, sector bitmaps (including
// their interleaving in the BAT), parent_linkage checks, writes that copy blocks up from the parent.
#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vhdx_helpers.hpp"

using namespace vdisk;
using namespace vhdx_test;

// A differencing image built by hand from a vdisk-made one: parent locator, PARTIALLY_PRESENT block with a
// sector bitmap, FULLY_PRESENT, ZERO and NOT_PRESENT blocks.
namespace {

void put_utf16(std::vector<uint8_t>& b, size_t at, const std::string& s) {
    for (size_t i = 0; i < s.size(); ++i) put_le16(b, at + 2 * i, static_cast<uint8_t>(s[i]));
}

std::vector<uint8_t> parent_locator(const std::vector<std::pair<std::string, std::string>>& kv) {
    static const uint8_t type[16] = {0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
                                     0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13};
    size_t strings = 20 + 12 * kv.size();
    size_t total = strings;
    for (auto& [k, v] : kv) total += 2 * (k.size() + v.size());
    std::vector<uint8_t> b(total, 0);
    std::memcpy(b.data(), type, 16);
    put_le16(b, 18, static_cast<uint16_t>(kv.size()));
    size_t at = strings;
    for (size_t i = 0; i < kv.size(); ++i) {
        size_t e = 20 + 12 * i;
        put_le32(b, e, static_cast<uint32_t>(at));
        put_le16(b, e + 8, static_cast<uint16_t>(2 * kv[i].first.size()));
        put_utf16(b, at, kv[i].first);
        at += 2 * kv[i].first.size();
        put_le32(b, e + 4, static_cast<uint32_t>(at));
        put_le16(b, e + 10, static_cast<uint16_t>(2 * kv[i].second.size()));
        put_utf16(b, at, kv[i].second);
        at += 2 * kv[i].second.size();
    }
    return b;
}

std::string data_write_guid(const std::vector<uint8_t>& img) {
    size_t cur = current_header(img);
    return "{" + util::guid_to_string(img.data() + cur + 32) + "}";
}

struct DiffFixture {
    std::vector<uint8_t> parent_data = vt::pattern(8 * MiB, 21);
    std::vector<uint8_t> parent = small_image(8 * MiB, {{0, parent_data}});
    std::vector<uint8_t> q = vt::pattern(MiB, 22), r = vt::pattern(MiB, 23);
    std::vector<uint8_t> child;
    std::vector<uint8_t> expect;

    explicit DiffFixture(std::string linkage = "") {
        child = small_image(8 * MiB, {}, "block_size=1M,block_state_zero=off");
        child[kItems + 4] |= 2;  // HasParent
        if (linkage.empty()) linkage = data_write_guid(parent);
        auto loc = parent_locator({{"parent_linkage", linkage},
                                   {"relative_path", ".\\sub\\..\\parent.vhdx"},
                                   {"absolute_win32_path", "C:\\vms\\parent.vhdx"}});
        std::memcpy(child.data() + kItems + 64, loc.data(), loc.size());
        size_t e = kMeta + 32 + 32 * 5;
        std::memcpy(child.data() + e, "\x2d\x5f\xd3\xa8\x0b\xb3\x4d\x45\xab\xf7\xd3\xd8\x48\x34\xab\x0c", 16);
        put_le32(child, e + 16, (64 << 10) + 64);
        put_le32(child, e + 20, static_cast<uint32_t>(loc.size()));
        put_le32(child, e + 24, 4);
        put_le16(child, kMeta + 10, 6);
        // Block 0 partially present with a bitmap marking sectors 0-7 and 100; block 1 fully present;
        // block 2 zero; the rest not present (from the parent).
        uint64_t h0 = child.size(), h1 = h0 + MiB, sb = h1 + MiB;
        child.resize(sb + MiB, 0);
        std::memcpy(child.data() + h0, q.data(), MiB);
        std::memcpy(child.data() + h1, r.data(), MiB);
        child[sb] = 0xff;
        child[sb + 100 / 8] |= 1 << (100 % 8);
        put_le64(child, kBat + 0, h0 | 7);
        put_le64(child, kBat + 8, h1 | 6);
        put_le64(child, kBat + 16, 2);
        put_le64(child, kBat + 4096 * 8, sb | 6);
        expect = parent_data;
        std::memcpy(expect.data(), q.data(), 4096);
        std::memcpy(expect.data() + 100 * 512, q.data() + 100 * 512, 512);
        std::memcpy(expect.data() + MiB, r.data(), MiB);
        std::fill(expect.begin() + 2 * MiB, expect.begin() + 3 * MiB, 0);
    }
    Result<OpenedImage> open(MemoryFileSystem& fs, const OpenOptions& o = {}) {
        fs.add("parent.vhdx", parent);
        fs.add("vm/child.avhdx", child);
        static auto reg = make_reg();
        return open_image(reg, fs, "vm/child.avhdx", o);
    }
};

}  // namespace

TEST_CASE("differencing: sector bitmaps pick child or parent sectors") {
    // The parent sits beside the child's folder: relative_path ".\sub\..\parent.vhdx" from vm/ fails,
    // absolute_win32_path fails, so put it where relative_path resolves.
    DiffFixture f;
    MemoryFileSystem fs;
    fs.add("vm/parent.vhdx", f.parent);
    auto img = f.open(fs);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    auto ref = img->device->backing_reference();
    REQUIRE(ref);
    CHECK(ref->names == std::vector<std::string>{"./sub/../parent.vhdx", "C:/vms/parent.vhdx"});
    CHECK(vt::read_all(*img->device) == f.expect);
    auto e0 = img->device->block_status(0, 8 * MiB);
    REQUIRE(e0.ok());
    CHECK(e0->kind == ExtentKind::data);
    CHECK(e0->length == 4096);
    auto e1 = img->device->block_status(4096, 8 * MiB);
    REQUIRE(e1.ok());
    CHECK(e1->kind == ExtentKind::unallocated);
    CHECK(e1->length == 100 * 512 - 4096);
    auto e2 = img->device->block_status(2 * MiB, 8 * MiB);
    REQUIRE(e2.ok());
    CHECK(e2->kind == ExtentKind::zero);
    auto m = map_extent(*img->device, 3 * MiB, MiB);
    REQUIRE(m.ok());
    CHECK(m->depth == 1);
    auto chk = img->format->check(*img->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}

TEST_CASE("differencing: parent_linkage mismatch and writes that materialise blocks") {
    SUBCASE("mismatch is corrupt unless forced") {
        DiffFixture f("{00000000-1111-2222-3333-444444444444}");
        MemoryFileSystem fs;
        fs.add("vm/parent.vhdx", f.parent);
        auto img = f.open(fs);
        REQUIRE(!img.ok());
        CHECK(img.error().code == ErrorCode::corrupt);
        OpenOptions o;
        o.force_parent_mismatch = true;
        MemoryFileSystem fs2;
        fs2.add("vm/parent.vhdx", f.parent);
        CHECK(f.open(fs2, o).ok());
    }
    SUBCASE("without its parent a differencing image reads but refuses writes") {
        DiffFixture f;
        MemoryFileSystem fs;
        OpenOptions o;
        o.no_backing = true;
        o.read_write = true;
        auto img = f.open(fs, o);
        REQUIRE(img.ok());
        CHECK(vt::read_range(*img->device, MiB, 4096) == std::vector<uint8_t>(f.r.begin(), f.r.begin() + 4096));
        auto st = img->device->write(0, vt::bytes(512, 1));
        REQUIRE(!st.ok());
        CHECK(st.error().code == ErrorCode::invalid_argument);
    }
    SUBCASE("missing parent names it") {
        DiffFixture f;
        MemoryFileSystem fs;
        auto img = f.open(fs);
        REQUIRE(!img.ok());
        CHECK(img.error().code == ErrorCode::not_found);
        CHECK(img.error().message.find("parent.vhdx") != std::string::npos);
    }
    SUBCASE("writes") {
        DiffFixture f;
        MemoryFileSystem fs;
        fs.add("vm/parent.vhdx", f.parent);
        OpenOptions o;
        o.read_write = true;
        {
            auto img = f.open(fs, o);
            REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
            auto w = vt::pattern(1024, 30);
            REQUIRE(img->device->write(200 * 512, w).ok());         // partially present block
            REQUIRE(img->device->write(5 * MiB + 512, w).ok());     // not present: copy up from the parent
            REQUIRE(img->device->write_zeroes(6 * MiB, MiB).ok());  // whole not-present block -> ZERO
            std::memcpy(f.expect.data() + 200 * 512, w.data(), w.size());
            std::memcpy(f.expect.data() + 5 * MiB + 512, w.data(), w.size());
            std::fill(f.expect.begin() + 6 * MiB, f.expect.begin() + 7 * MiB, 0);
            CHECK(vt::read_all(*img->device) == f.expect);
            REQUIRE(img->device->close().ok());
        }
        // The parent is untouched; the child reopens with the same content.
        CHECK(*fs.content("vm/parent.vhdx") == f.parent);
        auto reg = make_reg();
        auto img = open_image(reg, fs, "vm/child.avhdx", {});
        REQUIRE(img.ok());
        CHECK(vt::read_all(*img->device) == f.expect);
        auto chk = img->format->check(*img->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 0);
    }
}

TEST_CASE("differencing: sector bitmap entries interleave by the chunk ratio (256 MiB blocks, ratio 16)") {
    // 8 GiB with 256 MiB blocks: 32 blocks in two chunks, BAT = 2 * (16 + 1) entries; block 20's bitmap is
    // entry 33. Files are sparse on the host.
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    const uint64_t bs = 256 * MiB, size = 8ull << 30, voff = 20 * bs;
    for (const char* name : {"parent.vhdx", "child.vhdx"}) {
        CreateOptions co;
        co.size = size;
        co.values = *parse_option_list("block_size=256M,block_state_zero=off");
        auto dev = create_image(reg, *fs, name, "vhdx", co);
        REQUIRE(dev.ok());
        if (std::string(name) == "parent.vhdx") REQUIRE((*dev)->write(voff, vt::bytes(65536, 0x5a)).ok());
        REQUIRE((*dev)->close().ok());
    }
    std::vector<uint8_t> parent(256 << 10);  // headers only: the file itself is 256 MiB and sparse
    {
        auto f = fs->open("parent.vhdx", Access::read_only);
        REQUIRE(f.ok());
        REQUIRE(read_exact(**f, 0, parent).ok());
    }
    auto child = vt::read_file(tmp / "child.vhdx");
    REQUIRE(child.size() <= 5 * MiB);
    child[kItems + 4] |= 2;
    auto loc = parent_locator({{"parent_linkage", data_write_guid(parent)}, {"relative_path", "parent.vhdx"}});
    std::memcpy(child.data() + kItems + 64, loc.data(), loc.size());
    size_t e = kMeta + 32 + 32 * 5;
    std::memcpy(child.data() + e, "\x2d\x5f\xd3\xa8\x0b\xb3\x4d\x45\xab\xf7\xd3\xd8\x48\x34\xab\x0c", 16);
    put_le32(child, e + 16, (64 << 10) + 64);
    put_le32(child, e + 20, static_cast<uint32_t>(loc.size()));
    put_le16(child, kMeta + 10, 6);
    uint64_t host = (child.size() + MiB - 1) / MiB * MiB, sb = host + bs;
    put_le64(child, kBat + 21 * 8, host | 7);
    put_le64(child, kBat + 33 * 8, sb | 6);
    vt::write_file(tmp / "child.vhdx", child);
    std::filesystem::resize_file(tmp / "child.vhdx", sb + MiB);
    {
        auto f = fs->open("child.vhdx", Access::read_write);
        REQUIRE(f.ok());
        REQUIRE((*f)->write_at(host, vt::bytes(4096, 0xc1)).ok());
        std::vector<uint8_t> bits(1, 0xff);  // sectors 0-7 of block 20 = bits 4 * 524288 .. +7
        REQUIRE((*f)->write_at(sb + 4 * 524288 / 8, bits).ok());
    }
    auto img = vt::open_host(reg, tmp / "child.vhdx");
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    CHECK(vt::read_range(*img->device, voff, 4096) == vt::bytes(4096, 0xc1));
    CHECK(vt::read_range(*img->device, voff + 4096, 61440) == vt::bytes(61440, 0x5a));
    CHECK(vt::read_range(*img->device, voff + 65536, 4096) == vt::bytes(4096, 0));
    CHECK(vt::read_range(*img->device, voff - 4096, 4096) == vt::bytes(4096, 0));
    auto x = img->device->block_status(voff, bs);
    REQUIRE(x.ok());
    CHECK(x->kind == ExtentKind::data);
    CHECK(x->length == 4096);
    CHECK(*x->host_offset == host);
    auto chk = img->format->check(*img->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}

TEST_CASE("differencing: bitmap runs across 4 KiB bitmap pages map and read alike from many threads") {
    // One 32 MiB block of 512-byte sectors: its sector bitmap is 8 KiB, two pages (sector 32768 starts the
    // second). Runs: 8 present, 8 absent, 64 alternating, one present run across the page boundary, one
    // absent sector, then present to the end. Present sectors come from the child, the others from the parent.
    const uint64_t size = 32 * MiB, sectors = size / 512;
    auto present = [](uint64_t s) {
        if (s < 16) return s < 8;
        if (s < 80) return s % 2 == 0;
        return s != 40000;
    };
    auto parent_data = vt::pattern(size, 51), mine = vt::pattern(size, 52);
    auto parent = small_image(size, {{0, parent_data}}, "block_size=32M");
    auto child = small_image(size, {}, "block_size=32M,block_state_zero=off");
    child[kItems + 4] |= 2;  // HasParent
    auto loc = parent_locator({{"parent_linkage", data_write_guid(parent)}, {"relative_path", "parent.vhdx"}});
    std::memcpy(child.data() + kItems + 64, loc.data(), loc.size());
    size_t e = kMeta + 32 + 32 * 5;
    std::memcpy(child.data() + e, "\x2d\x5f\xd3\xa8\x0b\xb3\x4d\x45\xab\xf7\xd3\xd8\x48\x34\xab\x0c", 16);
    vt::put_le32(child, e + 16, (64 << 10) + 64);
    vt::put_le32(child, e + 20, static_cast<uint32_t>(loc.size()));
    vt::put_le16(child, kMeta + 10, 6);
    const uint64_t host = (child.size() + MiB - 1) / MiB * MiB, sb = host + size;
    child.resize(sb + MiB, 0);
    std::memcpy(child.data() + host, mine.data(), size);
    std::vector<uint8_t> expect = parent_data;
    for (uint64_t s = 0; s < sectors; ++s) {
        if (!present(s)) continue;
        child[sb + s / 8] |= static_cast<uint8_t>(1 << (s % 8));
        std::memcpy(expect.data() + s * 512, mine.data() + s * 512, 512);
    }
    vt::put_le64(child, kBat, host | 7);          // PARTIALLY_PRESENT
    vt::put_le64(child, kBat + 128 * 8, sb | 6);  // chunk ratio 2^23 * 512 / 32 MiB = 128: the bitmap entry
    MemoryFileSystem fs;
    fs.add("parent.vhdx", parent);
    fs.add("child.vhdx", child);
    auto reg = make_reg();
    auto img = open_image(reg, fs, "child.vhdx", {});
    REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
    BlockDevice& dev = *img->device;
    CHECK(vt::read_all(dev) == expect);

    // Block status: one extent per run, data at its host offset, kinds alternating.
    uint64_t off = 0, extents = 0;
    bool last_data = false;
    while (off < size) {
        auto x = dev.block_status(off, size - off);
        REQUIRE(x.ok());
        const bool data = x->kind == ExtentKind::data;
        if (data) CHECK(x->host_offset == std::optional<uint64_t>(host + off));
        else CHECK(x->kind == ExtentKind::unallocated);
        for (uint64_t s = off / 512; s < (off + x->length) / 512; ++s) REQUIRE(present(s) == data);
        if (extents++) CHECK(data != last_data);
        last_data = data;
        off += x->length;
    }
    CHECK(extents == 2 + 64 + 1 + 1 + 1);
    auto across = dev.block_status(80 * 512, size);
    REQUIRE(across.ok());
    CHECK(across->length == (40000 - 80) * 512);

    // Unaligned reads from 8 threads at once, through the shared bitmap page cache.
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (uint32_t t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            uint64_t x = 0x9e3779b97f4a7c15ull * (t + 1);
            for (int i = 0; i < 300; ++i) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                // Half the reads stay near the start and the page boundary, where the runs are short.
                uint64_t at = (i % 2 ? x % (100 * 512) : 32768 * 512 - 4096 + x % 16384) + (t % 3);
                uint64_t len = std::min<uint64_t>(1 + (x >> 40) % 70000, size - at);
                std::vector<uint8_t> got(len);
                if (!dev.read(at, got).ok() || !std::equal(got.begin(), got.end(), expect.begin() + at)) ++bad;
            }
        });
    for (auto& th : threads) th.join();
    CHECK(bad == 0);
}
