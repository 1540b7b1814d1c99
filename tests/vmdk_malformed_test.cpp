// SPDX-License-Identifier: Apache-2.0
// VMDK hostile input: corpus images that crashed or exhausted other tools, and images patched in memory.
// Every case asserts the exact ErrorCode; none may crash, hang or allocate without bound.
#include <chrono>
#include <cstring>

#include "builtin_formats.hpp"
#include "exercise.hpp"
#include "support.hpp"
#include "util/bytes.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

constexpr uint64_t MiB = 1ull << 20;

Registry make_reg() { return vt::registry_of(make_raw_format, make_vmdk_format); }

using vt::le32;
using vt::le64;
using vt::put_le32;
using vt::put_le64;

OpenOptions vmdk_opts() {
    OpenOptions o;
    o.format = "vmdk";
    return o;
}

// A monolithicSparse image made by vdisk in memory, with data in the first grains.
std::vector<uint8_t> sparse_image(const std::string& opts = "", uint64_t size = 8 * MiB) {
    return vt::created_image(make_reg(), "vmdk", size,
                             {{0, vt::pattern(3 * 65536, 1)}, {5 * MiB, vt::pattern(65536, 2)}}, opts, "a.vmdk");
}

Result<OpenedImage> open_bytes(MemoryFileSystem& fs, std::vector<uint8_t> bytes, const OpenOptions& o = vmdk_opts()) {
    static const Registry reg = make_reg();  // OpenedImage::format points into it
    fs.add("x.vmdk", std::move(bytes));
    return open_image(reg, fs, "x.vmdk", o);
}

ErrorCode open_code(std::vector<uint8_t> bytes) {
    MemoryFileSystem fs;
    auto r = open_bytes(fs, std::move(bytes));
    REQUIRE_MESSAGE(!r.ok(), "expected an error");
    return r.error().code;
}

// Open, then read everything; returns the first error code (or nullopt).
std::optional<ErrorCode> read_code(std::vector<uint8_t> bytes) {
    MemoryFileSystem fs;
    auto r = open_bytes(fs, std::move(bytes));
    if (!r.ok()) return r.error().code;
    std::vector<uint8_t> buf(MiB);
    for (uint64_t off = 0; off < r->device->size(); off += buf.size()) {
        auto n = std::min<uint64_t>(buf.size(), r->device->size() - off);
        auto st = r->device->read(off, std::span<uint8_t>(buf.data(), n));
        if (!st) return st.error().code;
    }
    return std::nullopt;
}

std::string hostile(const std::string& root, const std::string& rel, const std::string& dir) {
    return vt::unpack_corpus(root, rel, dir);
}

}  // namespace

TEST_CASE("hostile corpus: clean errors") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    struct Case {
        const char* rel;
        ErrorCode code;
    } cases[] = {
        {"hostile/qemu-iotests/afl9.vmdk.bz2", ErrorCode::corrupt},  // capacity * 512 overflows
        {"hostile/containerized-data-importer/invalid-qcow-backing-file.img.xz", ErrorCode::corrupt},
        {"hostile/containerized-data-importer/invalid-qcow-large-memory.img.xz", ErrorCode::corrupt},
        {"hostile/govmomi/ttylinux-pc_i486-16.1-disk1.vmdk.xz", ErrorCode::corrupt},
        {"hostile/go-vmdk-parser/vmdk-invalid.img.xz", ErrorCode::corrupt},
    };
    for (auto& c : cases) {
        std::string rel = c.rel;
        CAPTURE(rel);
        std::string path = hostile(*root, c.rel, tmp.path);
        auto r = vt::open_host(reg, path, "vmdk");
        REQUIRE(!r.ok());
        CHECK_MESSAGE(r.error().code == c.code, r.error().to_string());
        // Probing picks vmdk for every one of them (they are VMDKs, whatever their names say).
        auto p = vt::open_host(reg, path);
        REQUIRE(!p.ok());
        CHECK(p.error().code == c.code);
    }
}

TEST_CASE("malformed sparse headers") {
    auto img = sparse_image();
    REQUIRE(open_code([&] {
                auto b = img;
                put_le64(b, 20, 0);
                return b;
            }()) == ErrorCode::corrupt);  // grain 0
    CHECK(open_code([&] {
              auto b = img;
              put_le64(b, 20, 100);
              return b;
          }()) == ErrorCode::corrupt);  // not pow2
    CHECK(open_code([&] {
              auto b = img;
              put_le64(b, 20, 1ull << 40);
              return b;
          }()) == ErrorCode::unsupported);  // huge
    CHECK(open_code([&] {
              auto b = img;
              put_le32(b, 44, 0);
              return b;
          }()) == ErrorCode::corrupt);  // no GTEs
    CHECK(open_code([&] {
              auto b = img;
              put_le32(b, 44, 0xffffffff);
              return b;
          }()) == ErrorCode::unsupported);
    CHECK(open_code([&] {
              auto b = img;
              put_le64(b, 12, ~0ull);
              return b;
          }()) == ErrorCode::corrupt);  // 2^64 sectors
    CHECK(open_code([&] {
              auto b = img;
              put_le64(b, 12, 1ull << 54);
              return b;
          }()) == ErrorCode::limit_exceeded);
    CHECK(open_code([&] {
              auto b = img;
              put_le64(b, 56, 1ull << 30);
              return b;
          }()) == ErrorCode::corrupt);  // GD past EOF
    CHECK(open_code([&] {
              auto b = img;
              put_le64(b, 56, ~0ull >> 8);
              return b;
          }()) == ErrorCode::corrupt);  // GD overflow
    CHECK(open_code([&] {
              auto b = img;
              put_le32(b, 4, 9);
              return b;
          }()) == ErrorCode::unsupported);  // version
    CHECK(open_code([&] {
              auto b = img;
              put_le64(b, 36, 1ull << 40);
              return b;
          }()) == ErrorCode::limit_exceeded);  // desc
    CHECK(open_code([&] {
              auto b = img;
              put_le64(b, 28, 1ull << 40);
              return b;
          }()) == ErrorCode::corrupt);  // desc past EOF
    // The file cut inside the header.
    CHECK(open_code(std::vector<uint8_t>(img.begin(), img.begin() + 100)) == ErrorCode::corrupt);
}

TEST_CASE("malformed grain tables: out-of-file entries fail the read, check reports them") {
    auto reg = make_reg();
    auto img = sparse_image();
    uint64_t gd = le64(img, 56) * 512;
    uint64_t gt = uint64_t(le32(img, gd)) * 512;
    auto bad = img;
    put_le32(bad, gt + 4, 0x7fffffff);  // grain 1 far past the end
    CHECK(read_code(bad) == ErrorCode::corrupt);
    auto bad_gd = img;
    put_le32(bad_gd, gd, 0x7fffffff);  // GT past EOF
    CHECK(read_code(bad_gd) == ErrorCode::corrupt);

    // Overlaps and a GD/RGD disagreement are found by check.
    MemoryFileSystem fs;
    auto ov = img;
    put_le32(ov, gt + 8, le32(ov, gt + 4));  // grains 1 and 2 share storage
    put_le32(ov, gt + 12, 0);                // grain 3 pointing at the header
    put_le32(ov, gt + 12, 2);
    auto r = open_bytes(fs, ov);
    REQUIRE(r.ok());
    auto chk = r->format->check(*r->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions >= 2);

    MemoryFileSystem fs2;
    auto dis = img;
    uint64_t rgd = le64(img, 48) * 512;
    put_le32(dis, rgd, 0);
    auto r2 = open_bytes(fs2, dis);
    REQUIRE(r2.ok());
    auto chk2 = r2->format->check(*r2->device, RepairMode::none);
    REQUIRE(chk2.ok());
    CHECK(chk2->corruptions == 1);

    // Two grain directory entries naming the same grain table; a grain table on top of the header.
    MemoryFileSystem fs4;
    auto twice = sparse_image("", 80 * MiB);
    uint64_t gd4 = le64(twice, 56) * 512;
    put_le32(twice, gd4 + 4, le32(twice, gd4));
    auto r4 = open_bytes(fs4, twice);
    REQUIRE(r4.ok());
    auto chk4 = r4->format->check(*r4->device, RepairMode::none);
    REQUIRE(chk4.ok());
    CHECK(chk4->corruptions >= 1);
    MemoryFileSystem fs5;
    auto on_desc = sparse_image("", 80 * MiB);
    put_le32(on_desc, gd4 + 8, 1);                      // grain table 2 on top of the descriptor
    put_le32(on_desc, le64(on_desc, 48) * 512 + 8, 1);  // and its redundant copy too
    auto r5 = open_bytes(fs5, on_desc);
    REQUIRE(r5.ok());
    auto chk5 = r5->format->check(*r5->device, RepairMode::none);
    REQUIRE(chk5.ok());
    CHECK(chk5->corruptions >= 1);
    bool named = false;
    for (auto& m : chk5->messages) named = named || m.find("overlaps metadata") != std::string::npos;
    CHECK(named);

    MemoryFileSystem fs3;
    auto r3 = open_bytes(fs3, img);
    REQUIRE(r3.ok());
    auto chk3 = r3->format->check(*r3->device, RepairMode::none);
    REQUIRE(chk3.ok());
    CHECK(chk3->corruptions == 0);
    CHECK(chk3->allocated_clusters == 4u);
}

TEST_CASE("malformed descriptors") {
    auto reg = make_reg();
    auto desc = [](const std::string& extents) {
        std::string s =
            "# Disk DescriptorFile\r\nversion=1\r\nCID=12345678\r\nparentCID=ffffffff\r\n"
            "createType=\"monolithicFlat\"\r\n" +
            extents + "\r\n# ddb\r\nddb.adapterType = \"ide\"\r\n";
        return std::vector<uint8_t>(s.begin(), s.end());
    };
    auto open_desc = [&](const std::vector<uint8_t>& d, const OpenOptions& o = vmdk_opts()) {
        MemoryFileSystem fs;
        fs.add("f.raw", std::vector<uint8_t>(4096, 0x5c));
        return open_bytes(fs, d, o);
    };
    // Good: CRLF, comments, quoting, lower-case keys.
    auto good = open_desc(desc("RW 8 FLAT \"f.raw\" 0\r\nRW 8 ZERO\r\n"));
    REQUIRE_MESSAGE(good.ok(), vt::error_text(good));
    CHECK(good->device->size() == 8192);
    CHECK(vt::read_all(*good->device) == [] {
        std::vector<uint8_t> v(8192, 0);
        std::fill(v.begin(), v.begin() + 4096, 0x5c);
        return v;
    }());

    // Key case, spacing and quotes vary between writers.
    std::string odd =
        "\xEF\xBB\xBF# Disk DescriptorFile\n  CID = 0000abcd \nPARENTcid=ffffffff\nCREATETYPE = monolithicFlat\n"
        "# a comment\n\tRW 8 FLAT f.raw 0\nddb.UUID = \"60 00\"\n";
    auto o2 = open_desc(std::vector<uint8_t>(odd.begin(), odd.end()));
    REQUIRE_MESSAGE(o2.ok(), vt::error_text(o2));
    CHECK(*o2->device->info().format_specific.get("data")->get("cid")->as_uint() == 0xabcdu);
    CHECK(*o2->device->info().format_specific.get("data")->get("create-type")->as_string() == "monolithicFlat");

    CHECK(open_desc(desc("RW 8x FLAT \"f.raw\" 0")).error().code == ErrorCode::corrupt);
    CHECK(open_desc(desc("RW 8 FLAT \"f.raw\" -1")).error().code == ErrorCode::corrupt);
    CHECK(open_desc(desc("RW 8 FLAT \"f.raw")).error().code == ErrorCode::corrupt);
    CHECK(open_desc(desc("RW 8 VMFSRDM \"f.raw\"")).error().code == ErrorCode::unsupported);
    CHECK(open_desc(desc("RW 18446744073709551615 FLAT \"f.raw\" 0\r\nRW 1 ZERO")).error().code == ErrorCode::corrupt);
    CHECK(open_desc(desc("RW 18446744073709551616 FLAT \"f.raw\" 0")).error().code == ErrorCode::corrupt);
    CHECK(open_desc(desc("RW 36028797018963967 ZERO\r\nRW 36028797018963967 ZERO")).error().code == ErrorCode::corrupt);
    CHECK(open_desc(desc("RW 8 FLAT \"f.raw\" 36028797018963968")).error().code == ErrorCode::corrupt);
    // A missing extent is not_found and names the file.
    auto miss = open_desc(desc("RW 8 FLAT \"gone-flat.vmdk\" 0"));
    REQUIRE(!miss.ok());
    CHECK(miss.error().code == ErrorCode::not_found);
    CHECK(miss.error().message.find("gone-flat.vmdk") != std::string::npos);
    // No createType.
    std::string nc = "# Disk DescriptorFile\nRW 8 FLAT \"f.raw\" 0\n";
    CHECK(open_desc(std::vector<uint8_t>(nc.begin(), nc.end())).error().code == ErrorCode::corrupt);

    // 200000 extent lines: limit_exceeded, quickly.
    std::string many = "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\n";
    for (int i = 0; i < 200000; ++i) many += "RW 1 ZERO\n";
    auto t0 = std::chrono::steady_clock::now();
    OpenOptions big = vmdk_opts();
    big.limits.max_descriptor_bytes = 64 * MiB;
    auto r = open_desc(std::vector<uint8_t>(many.begin(), many.end()), big);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    REQUIRE(!r.ok());
    CHECK(r.error().code == ErrorCode::limit_exceeded);
    // Over the descriptor size cap.
    CHECK(open_desc(std::vector<uint8_t>(many.begin(), many.end())).error().code == ErrorCode::limit_exceeded);

    // Untrusted: extent files are references and are refused; trusted: "../" is followed and reported.
    OpenOptions u = vmdk_opts();
    u.untrusted = true;
    CHECK(open_desc(desc("RW 8 FLAT \"f.raw\" 0"), u).error().code == ErrorCode::access_denied);
    MemoryFileSystem fs;
    fs.add("up.raw", std::vector<uint8_t>(4096, 1));
    std::vector<std::string> refs;
    OpenOptions t = vmdk_opts();
    t.references = &refs;
    fs.add("d/x.vmdk", desc("RW 8 FLAT \"../up.raw\" 0"));
    auto up = open_image(reg, fs, "d/x.vmdk", t);
    REQUIRE_MESSAGE(up.ok(), vt::error_text(up));
    REQUIRE(refs.size() == 1);
    CHECK(refs[0].find("../up.raw") != std::string::npos);
}

TEST_CASE("embedded descriptor: garbage, no terminator, loops in parent chains") {
    auto img = sparse_image();
    // Descriptor area filled with text that never ends and names no createType.
    auto b = img;
    std::memset(b.data() + 512, 'x', 20 * 512);
    CHECK(open_code(b) == ErrorCode::corrupt);

    // A chain that loops: a.vmdk's parent is b.vmdk, whose parent is a.vmdk.
    auto reg = make_reg();
    MemoryFileSystem fs;
    for (auto [name, parent] : {std::pair{"a.vmdk", "b.vmdk"}, std::pair{"b.vmdk", "a.vmdk"}}) {
        CreateOptions co;
        co.size = MiB;
        auto d = create_image(reg, fs, name, "vmdk", co);
        REQUIRE(d.ok());
        REQUIRE((*d)->close().ok());
        d->reset();
        auto bytes = *fs.content(name);
        std::string text(reinterpret_cast<char*>(bytes.data() + 512), 20 * 512);
        text = text.substr(0, text.find('\0'));
        auto at = text.find("createType");
        text.insert(text.find('\n', at) + 1, std::string("parentFileNameHint=\"") + parent + "\"\n");
        std::memset(bytes.data() + 512, 0, 20 * 512);
        std::memcpy(bytes.data() + 512, text.data(), text.size());
        fs.add(name, bytes);
    }
    OpenOptions o;
    o.force_parent_mismatch = true;
    auto r = open_image(reg, fs, "a.vmdk", o);
    REQUIRE(!r.ok());
    CHECK((r.error().code == ErrorCode::corrupt || r.error().code == ErrorCode::limit_exceeded));
}

TEST_CASE("streamOptimized: compressed grains past EOF, bad deflate, deflate bombs, truncation") {
    auto reg = make_reg();
    auto make = [&](auto&& fill) {
        MemoryFileSystem fs;
        CreateOptions co;
        co.size = 4 * MiB;
        co.set("subformat", "streamOptimized");
        auto d = create_image(reg, fs, "s.vmdk", "vmdk", co);
        REQUIRE(d.ok());
        fill(**d);
        REQUIRE((*d)->close().ok());
        d->reset();
        return *fs.content("s.vmdk");
    };
    auto good = make([](BlockDevice& d) { REQUIRE(d.write(0, vt::pattern(65536, 3)).ok()); });
    CHECK(!read_code(good));
    // The first grain marker sits at the overhead (sector 128): make its size run past the end of the file.
    auto past = good;
    put_le32(past, 128 * 512 + 8, 100000);
    CHECK(read_code(past) == ErrorCode::corrupt);
    auto garbage = good;
    std::memset(garbage.data() + 128 * 512 + 12, 0xee, 64);
    CHECK(read_code(garbage) == ErrorCode::corrupt);
    // A bomb: a valid zlib stream of 64 MiB. Reading stops at one grain.
    std::vector<uint8_t> zeros(64 * MiB, 0);
    std::string bomb;
    REQUIRE(util::deflate_into(zeros, bomb, false, 9, 1 * MiB));
    auto bombed = make([&](BlockDevice& d) {
        REQUIRE(d.write_compressed_chunk(0,
                                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bomb.data()),
                                                                  std::min<size_t>(bomb.size(), 100000)),
                                         65536)
                    .ok());
    });
    CHECK(!read_code(bombed));
    // Truncation: the footer is gone.
    CHECK(open_code(std::vector<uint8_t>(good.begin(), good.end() - 512)) == ErrorCode::corrupt);
    CHECK(open_code(std::vector<uint8_t>(good.begin(), good.begin() + 70000)) == ErrorCode::corrupt);
    // Out of order writes are refused.
    make([](BlockDevice& d) {
        REQUIRE(d.write(MiB, vt::pattern(65536, 1)).ok());
        auto st = d.write(0, vt::pattern(65536, 1));
        REQUIRE(!st.ok());
        CHECK(st.error().code == ErrorCode::invalid_argument);
    });
}

TEST_CASE("fuzz body on patched images stays bounded") {
    auto reg = make_reg();
    auto img = sparse_image();
    uint32_t seed = 1;
    for (int i = 0; i < 200; ++i) {
        auto b = img;
        for (int k = 0; k < 4; ++k) {
            seed = seed * 1103515245 + 12345;
            size_t at = (seed >> 8) % 2048;
            b[at] = static_cast<uint8_t>(seed >> 3);
        }
        MemoryFileSystem fs;
        fs.add("image.vmdk", b);
        testlib::exercise(reg, fs, "image.vmdk", testlib::fuzz_options("vmdk"), 1 * MiB);
    }
}
