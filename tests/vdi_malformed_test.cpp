// SPDX-License-Identifier: Apache-2.0
// VDI hostile input: map entries out of range, duplicated or miscounted (check agrees with qemu-img check),
// patched headers with exact error codes, random corruption of the header and map.
#include <functional>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdi_helpers.hpp"

using namespace vdisk;
using namespace vdi_test;

TEST_CASE("check: out-of-range, duplicated and miscounted map entries agree with qemu-img check") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto base = small_image(4 * MiB, {{0, vt::bytes(3 * MiB, 0x12)}});
    uint32_t bm = le32(base, kOffBmap);
    struct Case {
        const char* name;
        std::function<void(std::vector<uint8_t>&)> patch;
        uint64_t corruptions;
    };
    std::vector<Case> cases = {
        {"clean", [](std::vector<uint8_t>&) {}, 0},
        {"count", [](std::vector<uint8_t>& b) { put_le32(b, kAllocated, 2); }, 1},
        {"duplicate", [&](std::vector<uint8_t>& b) { put_le32(b, bm + 4, 0); }, 1},
        {"range",
         [&](std::vector<uint8_t>& b) {
             put_le32(b, bm + 12, 9);
             put_le32(b, kAllocated, 3);
         },
         1},
    };
    for (auto& c : cases) {
        INFO(c.name);
        auto img = base;
        c.patch(img);
        vt::write_file(tmp / "c.vdi", img);
        auto q = vt::run("qemu-img check --output=json -f vdi " + tmp / "c.vdi");
        Json j;
        auto brace = q.output.find('{');
        REQUIRE(brace != std::string::npos);
        REQUIRE(Json::parse(q.output.substr(brace), j));
        uint64_t qc = j.get("corruptions") ? *j.get("corruptions")->as_uint() : 0;
        CHECK(qc == c.corruptions);
        auto dev = vt::open_host(reg, tmp / "c.vdi");
        REQUIRE(dev.ok());
        auto chk = dev->format->check(*dev->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == c.corruptions);
        if (c.corruptions) {
            // A map that would make writes overwrite other blocks refuses a read-write open.
            auto rw = vt::open_host(reg, tmp / "c.vdi", "", true);
            if (std::string(c.name) == "count") {
                REQUIRE(rw.ok());
                auto fixed = dev->format->check(*rw->device, RepairMode::all);
                REQUIRE(fixed.ok());
                CHECK(fixed->corruptions == 0);
                CHECK(fixed->corruptions_fixed == 1);
                REQUIRE(rw->device->close().ok());
                vt::expect_qemu_check(tmp / "c.vdi", "vdi");
            } else {
                REQUIRE_FALSE(rw.ok());
                CHECK(rw.error().code == ErrorCode::corrupt);
            }
        }
    }
}

TEST_CASE("malformed images give exact error codes") {
    auto reg = make_reg();
    auto base = small_image(4 * MiB, {{0, vt::bytes(MiB, 0x12)}, {2 * MiB, vt::bytes(MiB, 0x34)}});
    uint32_t bm = le32(base, kOffBmap);
    struct Case {
        const char* name;
        std::function<void(std::vector<uint8_t>&)> patch;
        ErrorCode code;
    };
    std::vector<Case> cases = {
        {"bad signature", [](auto& b) { put_le32(b, 0x40, 0x12345678); }, ErrorCode::invalid_format},
        {"version 2.0", [](auto& b) { put_le32(b, kVersion, 0x00020000); }, ErrorCode::unsupported},
        {"header size small", [](auto& b) { put_le32(b, kHeaderSize, 0x100); }, ErrorCode::corrupt},
        {"blocks_in_image huge", [](auto& b) { put_le32(b, kBlocks, 0x7fffffff); }, ErrorCode::limit_exceeded},
        {"blocks_in_image special", [](auto& b) { put_le32(b, kBlocks, 0xffffffff); }, ErrorCode::corrupt},
        {"block size 0", [](auto& b) { put_le32(b, kBlockSize, 0); }, ErrorCode::corrupt},
        {"block size odd", [](auto& b) { put_le32(b, kBlockSize, 1000); }, ErrorCode::corrupt},
        {"block size 1 GiB", [](auto& b) { put_le32(b, kBlockSize, 1u << 30); }, ErrorCode::unsupported},
        {"map offset past EOF", [](auto& b) { put_le32(b, kOffBmap, 0x10000000); }, ErrorCode::corrupt},
        {"map offset in header", [](auto& b) { put_le32(b, kOffBmap, 0x100); }, ErrorCode::corrupt},
        {"data overlaps map", [&](auto& b) { put_le32(b, kOffData, bm + 4); }, ErrorCode::corrupt},
        {"disk size near 2^64", [](auto& b) { put_le64(b, kDiskSize, ~0ull - 511); }, ErrorCode::corrupt},
        {"disk size past map", [](auto& b) { put_le64(b, kDiskSize, 5 * MiB); }, ErrorCode::corrupt},
        {"sector size 0", [](auto& b) { put_le32(b, kSectorSz, 0); }, ErrorCode::corrupt},
        {"sector size 4096", [](auto& b) { put_le32(b, kSectorSz, 4096); }, ErrorCode::unsupported},
        {"undo type", [](auto& b) { put_le32(b, kType, 3); }, ErrorCode::unsupported},
        {"unknown type", [](auto& b) { put_le32(b, kType, 9); }, ErrorCode::corrupt},
        {"allocated > blocks", [](auto& b) { put_le32(b, kAllocated, 5); }, ErrorCode::corrupt},
        {"block extra huge", [](auto& b) { put_le32(b, kBlockExtra, 0x80000000); }, ErrorCode::unsupported},
        {"truncated header", [](auto& b) { b.resize(100); }, ErrorCode::corrupt},
        {"tiny file", [](auto& b) { b.resize(40); }, ErrorCode::invalid_format},
    };
    for (auto& c : cases) {
        INFO(c.name);
        auto img = base;
        c.patch(img);
        MemoryFileSystem fs;
        fs.add("m.vdi", img);
        OpenOptions o;
        o.format = "vdi";
        auto d = open_image(reg, fs, "m.vdi", o);
        REQUIRE_FALSE(d.ok());
        CHECK(d.error().code == c.code);
        CHECK_FALSE(d.error().message.empty());
    }
    // A smaller metadata cap refuses even a modest map.
    {
        MemoryFileSystem fs;
        fs.add("m.vdi", base);
        Limits l;
        l.max_metadata_bytes = 8;
        auto d = open_mem(reg, fs, "m.vdi", false, l);
        REQUIRE_FALSE(d.ok());
        CHECK(d.error().code == ErrorCode::limit_exceeded);
    }
    // Map entries past EOF: open works (check can report it), reading that block fails, others read.
    {
        auto img = base;
        put_le32(img, bm + 8, 200);  // block 2 -> slot 200, far past the end
        MemoryFileSystem fs;
        fs.add("m.vdi", img);
        auto d = open_mem(reg, fs, "m.vdi");
        REQUIRE(d.ok());
        std::vector<uint8_t> buf(512);
        auto r = d->device->read(2 * MiB, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == ErrorCode::corrupt);
        CHECK(vt::read_range(*d->device, 0, MiB) == vt::bytes(MiB, 0x12));
        auto chk = d->format->check(*d->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 2);       // out of range (>= blocks_in_image) and the count
        put_le32(img, bm + 8, 0xfffffffd);  // the largest slot number: no overflow, no long scan
        fs.add("m3.vdi", img);
        auto d3 = open_mem(reg, fs, "m3.vdi");
        REQUIRE(d3.ok());
        r = d3->device->read(2 * MiB, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == ErrorCode::corrupt);
        put_le32(img, bm + 8, 3);  // in range but past EOF
        put_le32(img, kAllocated, 2);
        fs.add("m2.vdi", img);
        auto d2 = open_mem(reg, fs, "m2.vdi");
        REQUIRE(d2.ok());
        r = d2->device->read(2 * MiB, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == ErrorCode::corrupt);
        chk = d2->format->check(*d2->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 1);
    }
    // Duplicated entries: readable read-only (both blocks show the same data), refused read-write.
    {
        auto img = base;
        put_le32(img, bm + 8, 0);
        MemoryFileSystem fs;
        fs.add("m.vdi", img);
        auto d = open_mem(reg, fs, "m.vdi");
        REQUIRE(d.ok());
        CHECK(vt::read_range(*d->device, 2 * MiB, MiB) == vt::bytes(MiB, 0x12));
        auto w = open_mem(reg, fs, "m.vdi", true);
        REQUIRE_FALSE(w.ok());
        CHECK(w.error().code == ErrorCode::corrupt);
    }
}

TEST_CASE("random corruption of the header and map: clean errors or bounded reads") {
    auto reg = make_reg();
    auto base = small_image(8 * MiB, {{0, vt::bytes(MiB, 0x12)}, {5 * MiB, vt::bytes(MiB, 0x34)}});
    uint32_t seed = 12345;
    auto rnd = [&] {
        seed = seed * 1103515245 + 12345;
        return seed >> 8;
    };
    for (int i = 0; i < 150; ++i) {
        auto img = base;
        int flips = 1 + rnd() % 4;
        for (int k = 0; k < flips; ++k) img[0x40 + rnd() % (0x1000 - 0x40)] = static_cast<uint8_t>(rnd());
        MemoryFileSystem fs;
        fs.add("r.vdi", img);
        OpenOptions o;
        o.format = "vdi";
        auto d = open_image(reg, fs, "r.vdi", o);
        if (!d.ok()) continue;
        std::vector<uint8_t> buf(64 * 1024);
        for (uint64_t off = 0; off + buf.size() <= d->device->size() && off < 16 * MiB; off += 512 * 1024)
            (void)d->device->read(off, buf);
        (void)d->format->check(*d->device, RepairMode::none);
        (void)d->device->info();
    }
}
