// SPDX-License-Identifier: Apache-2.0
// The VHDX log (MS-VHDX 2.3) as a reader meets it: entries built by hand, replayed in memory on a read-only
// open and into the file on a read-write one; sequence selection, wrap-around, garbage, bounded work.
#include <algorithm>
#include <cstring>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vhdx_helpers.hpp"

using namespace vdisk;
using namespace vhdx_test;

TEST_CASE("log: read-only open applies the active sequence in memory, read-write replays it") {
    LogFixture f;
    auto e = log_entry(5, 0, kGuid, {{f.host, f.sector(0x22)}}, {{f.host + 8192, 8192}}, f.img.size(), f.img.size());
    f.place(0, e);
    set_log_guid(f.img, kGuid);
    {
        MemoryFileSystem fs;
        auto ro = open_mem(fs, f.img);
        REQUIRE_MESSAGE(ro.ok(), vt::error_text(ro));
        CHECK(ro->device->info().dirty);
        CHECK(vt::read_range(*ro->device, 0, 4096) == f.sector(0x22));
        CHECK(vt::read_range(*ro->device, 4096, 4096) == f.sector(0x11));
        CHECK(vt::read_range(*ro->device, 8192, 8192) == vt::bytes(8192, 0));
        CHECK(vt::read_range(*ro->device, 16384, 4096) == f.sector(0x11));
        CHECK(fs.content("img.vhdx") == f.img);  // nothing written
    }
    MemoryFileSystem fs;
    {
        auto rw = open_mem(fs, f.img, true);
        REQUIRE_MESSAGE(rw.ok(), vt::error_text(rw));
        CHECK(!rw->device->info().dirty);
        CHECK(vt::read_range(*rw->device, 0, 4096) == f.sector(0x22));
        REQUIRE(rw->device->close().ok());
    }
    auto replayed = *fs.content("img.vhdx");
    for (size_t at : {size_t(64 << 10), size_t(128 << 10)})
        CHECK(std::all_of(replayed.begin() + at + 48, replayed.begin() + at + 64, [](uint8_t b) { return b == 0; }));
    MemoryFileSystem fs2;
    auto again = open_mem(fs2, replayed);
    REQUIRE(again.ok());
    CHECK(!again->device->info().dirty);
    CHECK(vt::read_range(*again->device, 0, 4096) == f.sector(0x22));
    CHECK(vt::read_range(*again->device, 8192, 8192) == vt::bytes(8192, 0));
    if (vt::need_qemu()) {
        vt::TempDir tmp;
        vt::write_file(tmp / "r.vhdx", replayed);
        vt::expect_qemu_check(tmp / "r.vhdx", "vhdx");
        auto raw = vt::qemu_read_raw(tmp / "r.vhdx", "vhdx", tmp.path);
        CHECK(raw == vt::read_all(*again->device));
    }
}

TEST_CASE("log: active sequence selection, wrap-around and garbage") {
    auto first_sectors = [](const std::vector<uint8_t>& img) {
        MemoryFileSystem fs;
        auto ro = open_mem(fs, img);
        REQUIRE_MESSAGE(ro.ok(), vt::error_text(ro));
        auto b = vt::read_range(*ro->device, 0, 8192);
        return std::make_pair(b[0], b[4096]);
    };
    SUBCASE("a sequence whose head's tail is the earlier entry replays both") {
        LogFixture f;
        auto e1 = log_entry(5, 0, kGuid, {{f.host, f.sector(0x22)}}, {}, 0, 0);
        auto e2 = log_entry(6, 0, kGuid, {{f.host + 4096, f.sector(0x33)}}, {}, 0, 0);
        f.place(0, e1);
        f.place(e1.size(), e2);
        set_log_guid(f.img, kGuid);
        CHECK(first_sectors(f.img) == std::make_pair(uint8_t(0x22), uint8_t(0x33)));
    }
    SUBCASE("a head whose tail is itself replays only itself") {
        LogFixture f;
        auto e1 = log_entry(5, 0, kGuid, {{f.host, f.sector(0x22)}}, {}, 0, 0);
        auto e2 = log_entry(6, static_cast<uint32_t>(e1.size()), kGuid, {{f.host + 4096, f.sector(0x33)}}, {}, 0, 0);
        f.place(0, e1);
        f.place(e1.size(), e2);
        set_log_guid(f.img, kGuid);
        CHECK(first_sectors(f.img) == std::make_pair(uint8_t(0x11), uint8_t(0x33)));
    }
    SUBCASE("a gap in sequence numbers splits sequences; the highest head wins") {
        LogFixture f;
        auto e1 = log_entry(9, 0, kGuid, {{f.host, f.sector(0x22)}}, {}, 0, 0);
        auto e2 = log_entry(7, static_cast<uint32_t>(e1.size()), kGuid, {{f.host + 4096, f.sector(0x33)}}, {}, 0, 0);
        f.place(0, e1);
        f.place(e1.size(), e2);
        set_log_guid(f.img, kGuid);
        CHECK(first_sectors(f.img) == std::make_pair(uint8_t(0x22), uint8_t(0x11)));
    }
    SUBCASE("an entry wrapping around the end of the circular log") {
        LogFixture f;
        auto e = log_entry(3, static_cast<uint32_t>(MiB - 4096), kGuid, {{f.host, f.sector(0x44)}}, {}, 0, 0);
        REQUIRE(e.size() == 8192);
        f.place(MiB - 4096, e);
        set_log_guid(f.img, kGuid);
        CHECK(first_sectors(f.img) == std::make_pair(uint8_t(0x44), uint8_t(0x11)));
    }
    SUBCASE("bad CRC, foreign log GUID and random bytes are not replayed") {
        LogFixture f;
        auto e = log_entry(5, 0, kGuid, {{f.host, f.sector(0x22)}}, {}, 0, 0);
        e[100] ^= 1;
        f.place(0, e);
        uint8_t other[16] = {9};
        auto e2 = log_entry(6, 8192, other, {{f.host, f.sector(0x33)}}, {}, 0, 0);
        f.place(8192, e2);
        auto junk = vt::pattern(64 << 10, 3);
        std::memcpy(junk.data(), "loge", 4);
        f.place(65536, junk);
        set_log_guid(f.img, kGuid);
        CHECK(first_sectors(f.img) == std::make_pair(uint8_t(0x11), uint8_t(0x11)));
    }
    SUBCASE("structural log errors are corrupt") {
        LogFixture f;
        auto bad_target = log_entry(5, 0, kGuid, {{64 << 10, f.sector(0)}}, {}, 0, 0);
        f.place(0, bad_target);
        set_log_guid(f.img, kGuid);
        CHECK(open_error(f.img) == ErrorCode::corrupt);
        LogFixture g;
        auto truncated = log_entry(5, 0, kGuid, {{g.host, g.sector(0)}}, {}, g.img.size() + MiB, 0);
        g.place(0, truncated);
        set_log_guid(g.img, kGuid);
        CHECK(open_error(g.img) == ErrorCode::corrupt);
        LogFixture far;
        auto grow = log_entry(5, 0, kGuid, {{far.host, far.sector(0)}}, {}, 0, 1ull << 45);
        far.place(0, grow);
        set_log_guid(far.img, kGuid);
        CHECK(open_error(far.img) == ErrorCode::corrupt);
        LogFixture h;
        set_log_guid(h.img, kGuid);
        for (size_t at : {size_t(64 << 10), size_t(128 << 10)}) put_le64(h.img, at + 72, 1ull << 40);
        seal_headers(h.img);
        CHECK(open_error(h.img) == ErrorCode::corrupt);
        OpenOptions o;
        o.limits.max_metadata_bytes = 64 << 10;
        LogFixture k;
        set_log_guid(k.img, kGuid);
        CHECK(open_error(k.img, o) == ErrorCode::limit_exceeded);
    }
}

TEST_CASE("log: a log full of plausible entry headers is bounded work") {
    LogFixture f;
    for (size_t pos = 0; pos < MiB; pos += 4096) {
        std::vector<uint8_t> h(64, 0);
        put_le32(h, 0, 0x65676f6c);
        put_le32(h, 8, static_cast<uint32_t>(MiB));
        put_le64(h, 16, 1 + pos / 4096);
        std::memcpy(h.data() + 32, kGuid, 16);
        f.place(pos, h);
    }
    set_log_guid(f.img, kGuid);
    CHECK(open_error(f.img) == ErrorCode::corrupt);
}

TEST_CASE("log: a read-only overlay of 32000 zero descriptors is indexed, not scanned per read") {
    // Issue 13 item 5: every read used to walk every log write. The overlay now keeps an interval map; the
    // budget notes the pieces each read visits.
    LogFixture f;
    const uint64_t n = 32000, base = f.img.size();
    std::vector<LogZero> zeros;
    for (uint64_t k = 0; k < n; ++k) zeros.push_back({base + k * 4096, 4096});
    auto e = log_entry(5, 0, kGuid, {{f.host, f.sector(0x22)}}, zeros, base, base + n * 4096);
    REQUIRE(e.size() <= MiB);
    f.place(0, e);
    set_log_guid(f.img, kGuid);
    MemoryFileSystem fs;
    auto ro = open_mem(fs, f.img);
    REQUIRE_MESSAGE(ro.ok(), vt::error_text(ro));
    auto& budget = *ro->device->budget();
    CHECK(budget.work_done() >= n);         // the descriptors were counted once, at open
    CHECK(budget.memory_used() >= n * 32);  // and the replay is charged
    uint64_t before = budget.noted();
    std::vector<uint8_t> buf(4096);
    for (uint64_t off = 0; off < ro->device->size(); off += buf.size()) REQUIRE(ro->device->read(off, buf).ok());
    CHECK(vt::read_range(*ro->device, 0, 4096) == f.sector(0x22));
    CHECK(vt::read_range(*ro->device, 4096, 4096) == f.sector(0x11));
    // 4096 reads (plus the device's own metadata reads): a handful of pieces each, not 32000.
    CHECK(budget.noted() - before < 64 * 4096);
    // An untrusted open with a tiny work limit refuses the log instead of parsing it.
    OpenOptions o;
    o.untrusted = true;
    o.limits.max_untrusted_work = 1000;
    MemoryFileSystem fs2;
    auto small = open_mem(fs2, f.img, false, o);
    REQUIRE_FALSE(small.ok());
    CHECK(small.error().code == ErrorCode::limit_exceeded);
}
