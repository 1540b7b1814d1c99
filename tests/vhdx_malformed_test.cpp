// SPDX-License-Identifier: Apache-2.0
// VHDX hostile input: patched headers, region tables, metadata and BAT entries give exact error codes or
// clean read errors that check reports (and check -r all repairs); random corruption stays bounded.
#include <cstring>

#include "builtin_formats.hpp"
#include "exercise.hpp"
#include "support.hpp"
#include "vhdx_helpers.hpp"

using namespace vdisk;
using namespace vhdx_test;

TEST_CASE("malformed images give exact error codes") {
    const auto base = small_image();
    auto patched = [&](auto fn) {
        auto b = base;
        fn(b);
        return b;
    };
    CHECK(open_error(patched([](auto& b) { b[3] = 'X'; })) == ErrorCode::invalid_format);
    CHECK(open_error(patched([](auto& b) { b.resize(100 << 10); })) == ErrorCode::corrupt);
    SUBCASE("both headers bad") {
        CHECK(open_error(patched([](auto& b) {
                  b[(64 << 10) + 20] ^= 1;
                  b[(128 << 10)] = 'x';
              })) == ErrorCode::corrupt);
        // One bad header is fine: the other one is used.
        MemoryFileSystem fs;
        CHECK(open_mem(fs, patched([](auto& b) { b[(64 << 10) + 20] ^= 1; })).ok());
    }
    SUBCASE("header version") {
        CHECK(open_error(patched([](auto& b) {
                  put_le16(b, (64 << 10) + 66, 2);
                  put_le16(b, (128 << 10) + 66, 2);
                  seal_headers(b);
              })) == ErrorCode::unsupported);
    }
    SUBCASE("region table") {
        CHECK(open_error(patched([](auto& b) {
                  put_le32(b, (192 << 10) + 8, 100000);
                  put_le32(b, (256 << 10) + 8, 100000);
                  seal_regions(b);
              })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) {
                  b[(192 << 10) + 30] ^= 1;
                  b[(256 << 10) + 30] ^= 1;
              })) == ErrorCode::corrupt);
        // BAT region past the end of the file.
        CHECK(open_error(patched([](auto& b) {
                  for (size_t t : {192u << 10, 256u << 10}) put_le64(b, t + 16 + 16, 1ull << 40);
                  seal_regions(b);
              })) == ErrorCode::corrupt);
        // Unknown required region.
        CHECK(open_error(patched([](auto& b) {
                  for (size_t t : {192u << 10, 256u << 10}) b[t + 16] ^= 0xff;
                  seal_regions(b);
              })) == ErrorCode::unsupported);
        // Misaligned region.
        CHECK(open_error(patched([](auto& b) {
                  for (size_t t : {192u << 10, 256u << 10}) put_le64(b, t + 16 + 16, 3 * MiB + 4096);
                  seal_regions(b);
              })) == ErrorCode::corrupt);
    }
    SUBCASE("metadata") {
        CHECK(open_error(patched([](auto& b) { put_le16(b, kMeta + 10, 60000); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { b[kMeta] = 'x'; })) == ErrorCode::corrupt);
        for (uint32_t bs : {0u, 4096u, 3u << 20, 512u << 20, 0x80000000u})
            CHECK(open_error(patched([&](auto& b) { put_le32(b, kItems, bs); })) == ErrorCode::corrupt);
        for (uint32_t ls : {0u, 1024u, 8192u})
            CHECK(open_error(patched([&](auto& b) { put_le32(b, kItems + 32, ls); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { put_le32(b, kItems + 36, 1000); })) == ErrorCode::corrupt);
        for (uint64_t vs : {0ull, ~0ull, ~0ull - 511, (64ull << 40) + 512, 1000ull})
            CHECK(open_error(patched([&](auto& b) { put_le64(b, kItems + 8, vs); })) == ErrorCode::corrupt);
        // 64 TiB with 1 MiB blocks needs a 512 MiB BAT; the region holds 1 MiB.
        CHECK(open_error(patched([](auto& b) { put_le64(b, kItems + 8, 64ull << 40); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { b[kItems + 4] |= 2; })) ==
              ErrorCode::corrupt);  // has-parent, no locator
        // Item outside the region, oversized item, unknown required item, missing item.
        CHECK(open_error(patched([](auto& b) { put_le32(b, kMeta + 32 + 16, 0xfffff0); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { put_le32(b, kMeta + 32 + 20, 2 * MiB); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { b[kMeta + 32 + 32 * 3] ^= 0xff; })) == ErrorCode::unsupported);
        CHECK(open_error(patched([](auto& b) {
                  b[kMeta + 32] ^= 0xff;
                  b[kMeta + 32 + 24] = 0;
              })) == ErrorCode::corrupt);
    }
    SUBCASE("duplicate metadata item") {
        CHECK(open_error(patched([](auto& b) {
                  std::memcpy(b.data() + kMeta + 32 + 32 * 5, b.data() + kMeta + 32, 32);
                  put_le16(b, kMeta + 10, 6);
              })) == ErrorCode::corrupt);
    }
    SUBCASE("BAT limit") {
        OpenOptions o;
        o.limits.max_metadata_bytes = 64;
        CHECK(open_error(base, o) == ErrorCode::limit_exceeded);
    }
}

TEST_CASE("BAT entries past EOF, overlapping or invalid: reads fail cleanly and check reports them") {
    auto base = small_image(16 * MiB, {{0, vt::bytes(MiB, 1)}, {MiB, vt::bytes(MiB, 2)}});
    auto reg = make_reg();
    auto run = [&](const std::vector<uint8_t>& img, uint64_t read_at, uint64_t expect_corruptions) {
        MemoryFileSystem fs;
        auto r = open_mem(fs, img);
        REQUIRE_MESSAGE(r.ok(), vt::error_text(r));
        std::vector<uint8_t> b(4096);
        auto st = r->device->read(read_at, b);
        REQUIRE(!st.ok());
        CHECK(st.error().code == ErrorCode::corrupt);
        CHECK(st.error().offset.has_value());
        CHECK(!r->device->block_status(read_at, 4096).ok());
        auto chk = r->format->check(*r->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == expect_corruptions);
        // Other blocks still read.
        CHECK(vt::read_range(*r->device, 5 * MiB, 16) == vt::bytes(16, 0));
    };
    {
        auto img = base;
        put_le64(img, kBat + 8, (1ull << 40) | 6);  // block 1 far past EOF
        run(img, MiB, 1);
    }
    {
        auto img = base;
        put_le64(img, kBat + 8, (img.size() - MiB / 2) | 6);  // block 1 straddles EOF (1 MiB units: clamp)
        put_le64(img, kBat + 8, ((img.size() >> 20) << 20) | 6);
        run(img, MiB, 1);
    }
    {
        auto img = base;
        put_le64(img, kBat + 16, 5);  // invalid state
        run(img, 2 * MiB, 1);
    }
    {
        auto img = base;
        put_le64(img, kBat + 16, 7);  // partially present in a non-differencing image
        run(img, 2 * MiB, 2);
    }
    {
        auto img = base;
        put_le64(img, kBat + 16, (2 * MiB) | 6);  // points at the metadata region
        MemoryFileSystem fs;
        auto r = open_mem(fs, img);
        REQUIRE(r.ok());
        auto chk = r->format->check(*r->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 1);
        REQUIRE(!chk->messages.empty());
        CHECK(chk->messages[0].find("overlaps") != std::string::npos);
        put_le64(img, kBat + 16, block_host(img, 0) | 6);  // shares block 0's space
        fs.add("img.vhdx", img);
        auto r2 = open_image(reg, fs, "img.vhdx", {});
        REQUIRE(r2.ok());
        auto chk2 = r2->format->check(*r2->device, RepairMode::none);
        REQUIRE(chk2.ok());
        CHECK(chk2->corruptions == 1);
    }
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("random corruption of structures: clean errors or bounded reads") {
    LogFixture f;
    auto e = log_entry(5, 0, kGuid, {{f.host, f.sector(0x22)}}, {{f.host + 8192, 8192}}, 0, 0);
    f.place(0, e);
    set_log_guid(f.img, kGuid);
    const auto base = f.img;
    uint32_t seed = 12345;
    auto rnd = [&] {
        seed = seed * 1103515245 + 12345;
        return seed >> 8;
    };
    // Where the structures are: headers, region tables, log entry, metadata table and items, BAT.
    const std::vector<std::pair<size_t, size_t>> areas = {{64 << 10, 96},  {128 << 10, 96}, {192 << 10, 96},
                                                          {256 << 10, 96}, {MiB, 12288},    {kMeta, 256},
                                                          {kItems, 64},    {kBat, 64}};
    auto reg = make_reg();
    for (int iter = 0; iter < 60; ++iter) {
        auto img = base;
        int flips = 1 + rnd() % 4;
        for (int k = 0; k < flips; ++k) {
            auto [start, len] = areas[rnd() % areas.size()];
            size_t at = start + rnd() % len;
            img[at] = static_cast<uint8_t>(rnd() % 3 == 0 ? 0xff : img[at] ^ (1u << (rnd() % 8)));
        }
        if (rnd() % 2) {
            seal_headers(img);
            seal_regions(img);
        }
        MemoryFileSystem fs;
        fs.add("img.vhdx", img);
        testlib::exercise(reg, fs, "img.vhdx", testlib::fuzz_options("vhdx"), 1 << 20);
    }
}

TEST_CASE("check -r all resets unusable BAT entries on a writable image") {
    auto img = small_image(16 * MiB, {{0, vt::bytes(MiB, 1)}, {MiB, vt::bytes(MiB, 2)}});
    put_le64(img, kBat + 8, (1ull << 40) | 6);  // past EOF
    put_le64(img, kBat + 16, 5);                // invalid state
    put_le64(img, kBat + 24, 2 | (1ull << 5));  // reserved bit
    MemoryFileSystem fs;
    {
        auto r = open_mem(fs, img, true);
        REQUIRE(r.ok());
        auto ro_chk = r->format->check(*r->device, RepairMode::leaks);
        REQUIRE(ro_chk.ok());
        CHECK(ro_chk->corruptions == 3);
        CHECK(ro_chk->corruptions_fixed == 0);
        auto chk = r->format->check(*r->device, RepairMode::all);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 3);
        CHECK(chk->corruptions_fixed == 3);
        REQUIRE(r->device->close().ok());
    }
    auto fixed = *fs.content("img.vhdx");
    MemoryFileSystem fs2;
    auto r = open_mem(fs2, fixed);
    REQUIRE(r.ok());
    auto chk = r->format->check(*r->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
    CHECK(vt::read_range(*r->device, 0, 16) == vt::bytes(16, 1));
    CHECK(vt::read_range(*r->device, MiB, 16) == vt::bytes(16, 0));
    CHECK(vt::read_range(*r->device, 2 * MiB, 16) == vt::bytes(16, 0));
}
