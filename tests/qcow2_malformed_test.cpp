// SPDX-License-Identifier: Apache-2.0
// qcow2 malformed images: valid images made by qemu-img, patched in memory, opened from a memory file
// system. Each case asserts the exact error code; none may crash, hang or allocate without bound.
#include <cstring>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "util/bytes.hpp"
#include "util/endian.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;
using util::load_be;
using util::store_be;

namespace {

Registry make_reg() { return vt::registry_of(make_raw_format, make_qcow2_format); }

// A 4 MiB v3 image (64 KiB clusters) with data at 0 and 1 MiB, made once per test.
std::vector<uint8_t> base_image(const std::string& opts = "") {
    vt::TempDir tmp;
    vt::sh("qemu-img create -q -f qcow2 " + (opts.empty() ? "" : "-o " + opts + " ") + tmp / "b.qcow2" + " 4M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 0x61 0 64k' -c 'write -P 0x62 1M 64k' " + tmp / "b.qcow2");
    return vt::read_file(tmp / "b.qcow2");
}

struct Opened {
    MemoryFileSystem fs;
    Result<OpenedImage> img = make_error(ErrorCode::io, "not opened");
};

std::unique_ptr<Opened> open_bytes(const Registry& reg, std::vector<uint8_t> bytes, OpenOptions o = {}) {
    auto r = std::make_unique<Opened>();
    r->fs.add("image.qcow2", std::move(bytes));
    if (o.format.empty()) o.format = "qcow2";
    r->img = open_image(reg, r->fs, "image.qcow2", o);
    return r;
}

ErrorCode open_error(const Registry& reg, std::vector<uint8_t> bytes, OpenOptions o = {}) {
    auto r = open_bytes(reg, std::move(bytes), std::move(o));
    REQUIRE_MESSAGE(!r->img.ok(), "opened although malformed");
    INFO(r->img.error().to_string());
    CHECK(!r->img.error().message.empty());
    return r->img.error().code;
}

// Error from reading the whole device (the image opens; the bad entry is found on the way).
ErrorCode read_error(const Registry& reg, std::vector<uint8_t> bytes) {
    auto r = open_bytes(reg, std::move(bytes));
    REQUIRE_MESSAGE(r->img.ok(), (r->img.ok() ? "" : r->img.error().to_string()));
    auto& dev = *r->img->device;
    std::vector<uint8_t> buf(dev.size());
    auto st = dev.read(0, buf);
    REQUIRE_MESSAGE(!st.ok(), "read succeeded although an entry is malformed");
    auto m = map_extent(dev, 0, dev.size());
    (void)m;
    auto ck = r->img->format->check(dev, RepairMode::none);
    REQUIRE(ck.ok());
    CHECK(ck->corruptions >= 1);
    return st.error().code;
}

uint64_t l2_of_first(const std::vector<uint8_t>& b) {
    uint64_t l1 = load_be<uint64_t>(&b[40]);
    return load_be<uint64_t>(&b[l1]) & 0x00fffffffffffe00ull;
}

}  // namespace

TEST_CASE("qcow2 malformed headers give the exact error code") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    const auto good = base_image();
    {
        auto r = open_bytes(reg, good);
        REQUIRE(r->img.ok());
    }
    auto patched = [&](size_t off, auto value) {
        auto b = good;
        store_be(&b[off], value);
        return b;
    };
    CHECK(open_error(reg, patched(0, uint32_t(0x51464900))) == ErrorCode::invalid_format);
    CHECK(open_error(reg, patched(4, uint32_t(1))) == ErrorCode::unsupported);
    CHECK(open_error(reg, patched(4, uint32_t(4))) == ErrorCode::unsupported);
    for (uint32_t cb : {0u, 8u, 22u, 63u, 0xffffffffu}) CHECK(open_error(reg, patched(20, cb)) == ErrorCode::corrupt);
    CHECK(open_error(reg, patched(32, uint32_t(1))) == ErrorCode::unsupported);              // AES encryption
    CHECK(open_error(reg, patched(36, uint32_t(0xffffffff))) == ErrorCode::limit_exceeded);  // l1_size
    CHECK(open_error(reg, patched(36, uint32_t(0))) == ErrorCode::corrupt);                  // too small for the size
    CHECK(open_error(reg, patched(36, uint32_t(1000000))) == ErrorCode::corrupt);            // past EOF
    CHECK(open_error(reg, patched(40, uint64_t(0x30200))) == ErrorCode::corrupt);            // L1 unaligned
    CHECK(open_error(reg, patched(40, uint64_t(1) << 50)) == ErrorCode::corrupt);            // L1 past EOF
    CHECK(open_error(reg, patched(24, uint64_t(1) << 62)) == ErrorCode::corrupt);            // size vs L1
    CHECK(open_error(reg, patched(48, uint64_t(0x10200))) == ErrorCode::corrupt);            // refcount table
    CHECK(open_error(reg, patched(56, uint32_t(0))) == ErrorCode::corrupt);
    CHECK(open_error(reg, patched(56, uint32_t(0xffffffff))) == ErrorCode::limit_exceeded);
    CHECK(open_error(reg, patched(56, uint32_t(1000))) == ErrorCode::corrupt);
    CHECK(open_error(reg, patched(60, uint32_t(0xffffffff))) == ErrorCode::limit_exceeded);  // nb_snapshots
    {
        auto b = patched(60, uint32_t(10));
        store_be(&b[64], uint64_t(0x12345));
        CHECK(open_error(reg, b) == ErrorCode::corrupt);  // snapshot table unaligned
    }
    CHECK(open_error(reg, patched(100, uint32_t(0xffffffff))) == ErrorCode::corrupt);  // header_length
    CHECK(open_error(reg, patched(100, uint32_t(50))) == ErrorCode::corrupt);
    CHECK(open_error(reg, patched(96, uint32_t(7))) == ErrorCode::corrupt);  // refcount_order
    {
        auto b = patched(72, uint64_t(1) << 5);
        auto r = open_bytes(reg, b);
        REQUIRE(!r->img.ok());
        CHECK(r->img.error().code == ErrorCode::unsupported);
        CHECK(r->img.error().message.find("bit(s) 5") != std::string::npos);
    }
    CHECK(open_error(reg, patched(72, uint64_t(1) << 3)) == ErrorCode::corrupt);  // zstd bit, zlib type
    {
        auto b = patched(72, uint64_t(1) << 3);
        b[104] = 9;
        CHECK(open_error(reg, b) == ErrorCode::unsupported);
    }
    CHECK(open_error(reg, patched(72, uint64_t(1) << 2)) == ErrorCode::corrupt);  // data file without a name
    {
        // Backing file name: too long, outside cluster 0, overlapping the header.
        auto b = patched(8, uint64_t(0x1000));
        store_be(&b[16], uint32_t(2000));
        CHECK(open_error(reg, b) == ErrorCode::corrupt);
        store_be(&b[8], uint64_t(0xfff0));
        store_be(&b[16], uint32_t(100));
        CHECK(open_error(reg, b) == ErrorCode::corrupt);
        store_be(&b[8], uint64_t(16));
        store_be(&b[16], uint32_t(4));
        CHECK(open_error(reg, b) == ErrorCode::corrupt);
    }
    {
        // A header extension whose length runs past the first cluster.
        auto b = good;
        uint32_t hl = load_be<uint32_t>(&b[100]);
        store_be(&b[hl], uint32_t(0x12345678));
        store_be(&b[hl + 4], uint32_t(0x7fffffff));
        CHECK(open_error(reg, b) == ErrorCode::corrupt);
    }
    {
        // Truncated file: only the header.
        std::vector<uint8_t> b(good.begin(), good.begin() + 512);
        CHECK(open_error(reg, b) == ErrorCode::corrupt);
        std::vector<uint8_t> tiny(good.begin(), good.begin() + 40);
        CHECK(open_error(reg, tiny) == ErrorCode::invalid_format);
    }
}

TEST_CASE("qcow2 malformed L2 entries and compressed descriptors fail reads with corrupt") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    const auto good = base_image();
    uint64_t l2 = l2_of_first(good);
    auto with_entry = [&](uint64_t index, uint64_t word) {
        auto b = good;
        store_be(&b[l2 + index * 8], word);
        return b;
    };
    CHECK(read_error(reg, with_entry(0, (1ull << 63) | (1ull << 40))) == ErrorCode::corrupt);  // past EOF
    CHECK(read_error(reg, with_entry(0, (1ull << 63) | 0x50200)) == ErrorCode::corrupt);       // unaligned
    // Compressed: offset past EOF; then an absurd sector count over garbage.
    CHECK(read_error(reg, with_entry(3, (1ull << 62) | (1ull << 45))) == ErrorCode::corrupt);
    CHECK(read_error(reg, with_entry(3, (1ull << 62) | (0xffull << 54) | 0x200)) == ErrorCode::corrupt);
    {
        // L1 entry pointing past EOF and unaligned.
        auto b = good;
        uint64_t l1 = load_be<uint64_t>(&b[40]);
        store_be(&b[l1 + 0], (1ull << 63) | (1ull << 44));
        CHECK(read_error(reg, b) == ErrorCode::corrupt);
        store_be(&b[l1 + 0], (1ull << 63) | (l2 + 512));
        CHECK(read_error(reg, b) == ErrorCode::corrupt);
    }
}

TEST_CASE("qcow2 deflate bomb: decompression stops at one cluster") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    auto b = base_image();
    uint64_t l2 = l2_of_first(b);
    std::vector<uint8_t> zeros(16 << 20, 0);
    std::string z;
    REQUIRE(util::deflate_into(zeros, z, true, 9, 1 << 20));
    uint64_t off = (b.size() + 511) / 512 * 512;
    b.resize(off + z.size() + 512, 0);
    std::memcpy(&b[off], z.data(), z.size());
    uint64_t sectors = (off + z.size() - 1) / 512 - off / 512;
    store_be(&b[l2 + 2 * 8], (1ull << 62) | (sectors << 54) | off);
    auto r = open_bytes(reg, b);
    REQUIRE(r->img.ok());
    std::vector<uint8_t> buf(65536, 1);
    REQUIRE(r->img->device->read(2 * 65536, buf).ok());
    CHECK(util::is_zero(buf));
}

TEST_CASE("qcow2 extended L2 bitmap marking a subcluster allocated and zero is corrupt") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    auto b = base_image("extended_l2=on");
    uint64_t l2 = l2_of_first(b);
    store_be(&b[l2 + 8], uint64_t(0x0000000100000001ull));
    CHECK(read_error(reg, b) == ErrorCode::corrupt);
}

TEST_CASE("qcow2 backing chains: a loop is corrupt, a deep chain exceeds the limit") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    const auto good = base_image();
    auto with_backing = [&](const std::string& name) {
        auto b = good;
        store_be(&b[8], uint64_t(0x400));
        store_be(&b[16], static_cast<uint32_t>(name.size()));
        std::memcpy(&b[0x400], name.data(), name.size());
        return b;
    };
    {
        MemoryFileSystem fs;
        fs.add("image.qcow2", with_backing("image.qcow2"));
        auto r = open_image(reg, fs, "image.qcow2", {});
        REQUIRE(!r.ok());
        CHECK(r.error().code == ErrorCode::corrupt);
        fs.add("a.qcow2", with_backing("b.qcow2"));
        fs.add("b.qcow2", with_backing("a.qcow2"));
        auto r2 = open_image(reg, fs, "a.qcow2", {});
        REQUIRE(!r2.ok());
        CHECK(r2.error().code == ErrorCode::corrupt);
    }
    {
        MemoryFileSystem fs;
        for (int i = 0; i < 6; ++i) fs.add("c" + std::to_string(i), with_backing("c" + std::to_string(i + 1)));
        fs.add("c6", good);
        OpenOptions o;
        o.limits.max_chain_depth = 3;
        auto r = open_image(reg, fs, "c0", o);
        REQUIRE(!r.ok());
        CHECK(r.error().code == ErrorCode::limit_exceeded);
        auto ok6 = open_image(reg, fs, "c0", {});
        REQUIRE(ok6.ok());
        o.untrusted = true;
        o.limits.max_chain_depth = 16;
        auto u = open_image(reg, fs, "c0", o);
        REQUIRE(!u.ok());
        CHECK(u.error().code == ErrorCode::access_denied);
    }
}

TEST_CASE("qcow2 feature flags: dirty reported, corrupt refuses writes, data file refused when untrusted") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    const auto good = base_image();
    {
        auto b = good;
        store_be(&b[72], uint64_t(1));
        auto r = open_bytes(reg, b);
        REQUIRE(r->img.ok());
        CHECK(r->img->device->info().dirty);
    }
    {
        auto b = good;
        store_be(&b[72], uint64_t(2));
        OpenOptions o;
        o.read_write = true;
        auto r = open_bytes(reg, b, o);
        REQUIRE(r->img.ok());
        CHECK(vt::read_all(*r->img->device).size() == 4u << 20);
        std::vector<uint8_t> data(512, 7);
        auto st = r->img->device->write(0, data);
        REQUIRE(!st.ok());
        CHECK(st.error().code == ErrorCode::corrupt);
        CHECK(*r->img->device->info().format_specific.get("data")->get("corrupt")->as_bool());
    }
    {
        vt::TempDir tmp;
        vt::sh("qemu-img create -q -f qcow2 -o data_file=" + tmp / "d.bin" + " " + tmp / "df.qcow2" + " 1M");
        OpenOptions o;
        o.untrusted = true;
        auto r = open_bytes(reg, vt::read_file(tmp / "df.qcow2"), o);
        REQUIRE(!r->img.ok());
        CHECK(r->img.error().code == ErrorCode::access_denied);
    }
}
