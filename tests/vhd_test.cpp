// SPDX-License-Identifier: Apache-2.0
// VHD backend: corpus images, qemu-img interop (read, create, write), differencing chains, malformed input.
#include <algorithm>
#include <cstring>

#include "builtin_formats.hpp"
#include "checksums.hpp"
#include "support.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

constexpr uint64_t MiB = 1ull << 20;
constexpr uint64_t GiB = 1ull << 30;

// Footer / dynamic header field offsets (spec "Hard Disk Footer Format", "Dynamic Disk Header Format").
constexpr size_t kFDataOffset = 16, kFCreator = 28, kFCurSize = 48, kFType = 60, kFChecksum = 64, kFUuid = 68;
constexpr size_t kHTable = 16, kHMaxEntries = 28, kHBlockSize = 32, kHChecksum = 36, kHParentUuid = 40,
                 kHParentName = 64, kHLocators = 576;

Registry make_reg() { return vt::registry_of(make_raw_format, make_vhd_format); }

void verify(const std::string& rel) { vt::verify_corpus_image(make_reg(), rel, "vhd"); }

using vt::be32;
using vt::be64;
using vt::put_be32;
using vt::put_be64;

uint32_t sum(const std::vector<uint8_t>& b, size_t at, size_t len, size_t skip) {
    REQUIRE(at + len <= b.size());
    return testlib::vhd_sum(b.data() + at, len, skip);
}
// Recompute the footer checksum at `at` and, for dynamic images, the dynamic header's.
void reseal(std::vector<uint8_t>& b, size_t header_at = 0) {
    put_be32(b, kFChecksum, sum(b, 0, 512, kFChecksum));
    if (std::memcmp(b.data() + b.size() - 512, "conectix", 8) == 0)
        put_be32(b, b.size() - 512 + kFChecksum, sum(b, b.size() - 512, 512, kFChecksum));
    if (be32(b, kFType) != 2) {
        size_t h = header_at ? header_at : static_cast<size_t>(be64(b, kFDataOffset));
        put_be32(b, h + kHChecksum, sum(b, h, 1024, kHChecksum));
    }
}

Result<OpenedImage> open_mem(const Registry& reg, MemoryFileSystem& fs, const std::string& name, bool rw = false,
                             bool force = false) {
    OpenOptions o;
    o.read_write = rw;
    o.force_parent_mismatch = force;
    return open_image(reg, fs, name, o);
}

// A dynamic image made by vdisk (through the memory fs) with writes applied.
std::vector<uint8_t> small_image(uint64_t size, const vt::Writes& writes, const std::string& sub = "dynamic") {
    return vt::created_image(make_reg(), "vhd", size, writes, "subformat=" + sub + ",force_size=on");
}

ErrorCode open_error(std::vector<uint8_t> bytes) {
    auto reg = make_reg();
    MemoryFileSystem fs;
    fs.add("bad.vhd", std::move(bytes));
    OpenOptions o;
    o.format = "vhd";
    auto r = open_image(reg, fs, "bad.vhd", o);
    REQUIRE_FALSE(r.ok());
    MESSAGE(r.error().to_string());
    return r.error().code;
}

}  // namespace

TEST_CASE("corpus: Hyper-V 2012 R2 dynamic sized by current_size") {
    verify("real/qemu-iotests/hyperv2012r2-dynamic.vhd.bz2");
}
TEST_CASE("corpus: Virtual PC dynamic sized by CHS") { verify("real/qemu-iotests/virtualpc-dynamic.vhd.bz2"); }
TEST_CASE("corpus: Disk2vhd zero-filled") { verify("real/qemu-iotests/d2v-zerofilled.vhd.bz2"); }
TEST_CASE("corpus: Windows 10 dynamic") { verify("real/dissect.hypervisor/dynamic.vhd.gz"); }
TEST_CASE("corpus: Windows 10 fixed (probed from the tail)") { verify("real/dissect.hypervisor/fixed.vhd.gz"); }
TEST_CASE("corpus: qemu 'qemu' creator sized by CHS") { verify("real/dfvfs/ext2.vhd.xz"); }
TEST_CASE("corpus: ImHex fixed") { verify("real/imhex-patterns/vhd.hexpat.vhd.xz"); }

TEST_CASE("corpus: differencing image whose parent is missing") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto path = vt::unpack_corpus(*root, "real/dfvfs/fat-differential.vhd.xz", tmp.path);
    auto r = vt::open_host(reg, path);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::not_found);
    CHECK(r.error().message.find("fat-parent.vhd") != std::string::npos);
    OpenOptions o;
    o.no_backing = true;
    auto fs = make_posix_file_system(tmp.path);
    auto one = open_image(reg, *fs, "fat-differential.vhd", o);
    REQUIRE(one.ok());
    auto ref = one->device->backing_reference();
    REQUIRE(ref);
    REQUIRE(!ref->names.empty());
    CHECK(ref->names.front() == "fat-parent.vhd");  // the relative W2ru locator first
    for (auto& n : ref->names) MESSAGE(n);
    CHECK(one->device->size() == 4194304);
}

TEST_CASE("hostile corpus") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    struct Case {
        const char* rel;
        const char* needle;
    };
    for (Case c :
         {Case{"hostile/qemu-iotests/afl5.img.bz2", "dynamic header"}, Case{"hostile/dfvfs/image.vhd.xz", "checksum"},
          Case{"hostile/dfvfs/image-differential.vhd.xz", "checksum"}}) {
        auto path = vt::unpack_corpus(*root, c.rel, tmp.path);
        auto r = vt::open_host(reg, path, "vhd");
        REQUIRE_FALSE(r.ok());
        MESSAGE(r.error().to_string());
        CHECK(r.error().code == ErrorCode::corrupt);
        CHECK(r.error().message.find(c.needle) != std::string::npos);
    }
}

TEST_CASE("probe: fixed VHD beats raw, dynamic probed from the head") {
    auto reg = make_reg();
    MemoryFileSystem fs;
    fs.add("f.vhd", small_image(3 * MiB, {{0, vt::bytes(512, 1)}}, "fixed"));
    fs.add("d.vhd", small_image(3 * MiB, {{0, vt::bytes(512, 1)}}));
    for (auto n : {"f.vhd", "d.vhd"}) {
        auto r = open_mem(reg, fs, n);
        REQUIRE(r.ok());
        CHECK(std::string(r->format->name()) == "vhd");
        CHECK(vt::read_range(*r->device, 0, 512) == vt::bytes(512, 1));
    }
    CHECK(reg.find("vpc") == reg.find("vhd"));
}

TEST_CASE("qemu-made images read identically, block status and info") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    for (std::string sub : {"dynamic", "fixed"}) {
        std::string img = tmp / ("q-" + sub + ".vhd");
        REQUIRE(vt::run("qemu-img create -f vpc -o subformat=" + sub + " " + img + " 20M").status == 0);
        auto w = vt::run("qemu-io -f vpc -c 'write -P 0xab 1M 64k' -c 'write -P 0x5c 3584k 1M' " + img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        auto want = vt::qemu_read_raw(img, "vpc", tmp.path);
        auto dev = vt::open_host(reg, img);
        REQUIRE(dev.ok());
        CHECK(std::string(dev->format->name()) == "vhd");
        CHECK(dev->device->size() == want.size());
        CHECK(vt::read_all(*dev->device) == want);
        auto info = dev->device->info();
        CHECK(info.format == "vpc");
        // format-specific: footer and dynamic header fields, checked against qemu-img's geometry and libyal.
        REQUIRE(info.format_specific.get("data"));
        const Json& fsd = *info.format_specific.get("data");
        CHECK(*fsd.get("disk-type")->as_string() == sub);
        CHECK(*fsd.get("creator-app")->as_string() == "qemu");
        CHECK(*fsd.get("creator-os")->as_string() == "Wi2k");
        CHECK(*fsd.get("current-size")->as_uint() == want.size());
        uint64_t chs = *fsd.get("cylinders")->as_uint() * *fsd.get("heads")->as_uint() *
                       *fsd.get("sectors-per-track")->as_uint();
        CHECK(chs * 512 == want.size());  // qemu-img 7.2 sizes its own images by CHS
        if (vt::have("vhdiinfo")) {
            auto v = vt::run("vhdiinfo " + img);
            CHECK(v.output.find("Identifier\t\t: " + *fsd.get("uuid")->as_string()) != std::string::npos);
        }
        if (sub == "dynamic") {
            CHECK(*fsd.get("block-size")->as_uint() == 2 * MiB);
            CHECK(*fsd.get("allocated-blocks")->as_uint() == 3);
            CHECK(*fsd.get("bat-entries")->as_uint() == (want.size() + 2 * MiB - 1) / (2 * MiB));
        } else {
            CHECK(!fsd.get("block-size"));
        }
        if (sub == "dynamic") {
            CHECK(info.cluster_size == 2 * MiB);
            // Blocks 0, 1 and 2 are allocated (qemu sets every bitmap bit), block 3 is not.
            auto e = dev->device->block_status(6 * MiB, dev->device->size() - 6 * MiB);
            REQUIRE(e.ok());
            CHECK(e->kind == ExtentKind::zero);
            CHECK(e->length == dev->device->size() - 6 * MiB);  // block 3 and every block after it
            e = dev->device->block_status(2 * MiB, dev->device->size());
            REQUIRE(e.ok());
            CHECK(e->kind == ExtentKind::data);
            CHECK(e->length == 2 * MiB);
            auto bytes = vt::read_file(img);
            uint32_t b1 = be32(bytes, static_cast<size_t>(be64(bytes, 512 + kHTable)) + 4);
            CHECK(e->host_offset == uint64_t{b1} * 512 + 512);
            auto chk = dev->format->check(*dev->device, RepairMode::none);
            REQUIRE(chk.ok());
            CHECK(chk->corruptions == 0);
            CHECK(chk->allocated_clusters == 3);
        } else {
            CHECK_FALSE(info.cluster_size.has_value());
        }
    }
}

namespace {
// The shared round trip (vt::write_and_compare) for a VHD; the created size is `want_size` (CHS rounding).
// qemu-img has no check for vpc.
void write_and_compare(const std::string& opts, uint64_t size, uint64_t want_size, const vt::Writes& writes,
                       bool full = true) {
    auto reg = make_reg();
    vt::WriteCompare c{.format = "vhd",
                       .qemu_format = "vpc",
                       .options = opts,
                       .size = size,
                       .writes = writes,
                       .full_compare = full,
                       .qemu_check = false,
                       .libyal_info = "vhdiinfo"};
    auto w = vt::write_and_compare(reg, c);
    CHECK(w.created_size == want_size);
    for (auto& [off, data] : writes) CHECK(vt::read_range(*w.back.device, off, data.size()) == data);
}
}  // namespace

TEST_CASE("create dynamic with CHS rounding, write, qemu-img compare") {
    if (!vt::need_qemu()) return;
    // 10 MiB is not a CHS product: qemu rounds it up to 10514432 bytes.
    write_and_compare("", 10 * MiB, 10514432,
                      {{0, vt::bytes(4096, 0x11)},
                       {3 * MiB + 512, vt::bytes(1536, 0x22)},
                       {10514432 - 512, vt::bytes(512, 0x33)}});
    // The rounding agrees with qemu-img create for other sizes too.
    vt::TempDir tmp;
    auto reg = make_reg();
    for (uint64_t size : {3 * MiB, 5000 * uint64_t{1024}, 20 * MiB, 700 * MiB, 40 * GiB}) {
        auto q = vt::run("qemu-img create -q -f vpc " + tmp / "q.vhd" + " " + std::to_string(size) +
                         " && qemu-img info --output=json " + tmp / "q.vhd");
        REQUIRE(q.status == 0);
        MemoryFileSystem fs;
        CreateOptions co;
        co.size = size;
        auto d = create_image(reg, fs, "m.vhd", "vhd", co);
        REQUIRE(d.ok());
        CHECK_MESSAGE(q.output.find("\"virtual-size\": " + std::to_string((*d)->size())) != std::string::npos,
                      q.output);
    }
}

TEST_CASE("create dynamic force_size and fixed") {
    if (!vt::need_qemu()) return;
    write_and_compare("force_size=on", 10 * MiB, 10 * MiB,
                      {{MiB, vt::bytes(65536, 0x44)}, {10 * MiB - 4096, vt::bytes(4096, 0x45)}});
    write_and_compare("subformat=fixed", 10 * MiB, 10514432, {{MiB, vt::bytes(65536, 0x46)}});
    write_and_compare("subformat=fixed,force_size=on", 5 * MiB, 5 * MiB, {{0, vt::bytes(512, 0x47)}});
}

TEST_CASE("create azure: fixed, MiB aligned, exact size") {
    if (!vt::need_qemu()) return;
    write_and_compare("azure=on", 10 * MiB + 1000, 11 * MiB, {{0, vt::bytes(4096, 0x48)}});
    auto reg = make_reg();
    MemoryFileSystem fs;
    CreateOptions co;
    co.size = 3 * MiB;
    co.set("azure", "on");
    co.set("subformat", "dynamic");
    CHECK_FALSE(create_image(reg, fs, "a.vhd", "vhd", co).ok());
}

TEST_CASE("create > 4 GiB sparse dynamic") {
    if (!vt::need_qemu()) return;
    write_and_compare("force_size=on", 6 * GiB, 6 * GiB,
                      {{0, vt::bytes(4096, 0x51)},
                       {5 * GiB + 3 * MiB, vt::bytes(8192, 0x52)},
                       {6 * GiB - 512, vt::bytes(512, 0x53)}},
                      false);
}

namespace {
// A differencing child of `parent` (bytes of a vdisk dynamic image): same geometry, type 4, parent UUID and
// locators pointing at "parent.vhd".
std::vector<uint8_t> make_child(const std::vector<uint8_t>& parent, uint64_t size) {
    auto b = small_image(size, {});
    put_be32(b, kFType, 4);
    put_be32(b, b.size() - 512 + kFType, 4);
    size_t h = static_cast<size_t>(be64(b, kFDataOffset));
    std::memcpy(b.data() + h + kHParentUuid, parent.data() + kFUuid, 16);
    const std::string name = "parent.vhd";
    for (size_t i = 0; i < name.size(); ++i) b[h + kHParentName + 2 * i + 1] = static_cast<uint8_t>(name[i]);
    // A W2ru locator with ".\parent.vhd" in UTF-16LE, placed in a sector appended before the footer.
    const std::string rel = ".\\parent.vhd";
    std::vector<uint8_t> loc(512, 0);
    for (size_t i = 0; i < rel.size(); ++i) loc[2 * i] = static_cast<uint8_t>(rel[i]);
    uint64_t at = b.size() - 512;
    std::vector<uint8_t> footer(b.end() - 512, b.end());
    b.resize(at);
    b.insert(b.end(), loc.begin(), loc.end());
    b.insert(b.end(), footer.begin(), footer.end());
    put_be32(b, h + kHLocators, 0x57327275);  // W2ru
    put_be32(b, h + kHLocators + 4, 512);
    put_be32(b, h + kHLocators + 8, static_cast<uint32_t>(rel.size() * 2));
    put_be64(b, h + kHLocators + 16, at);
    reseal(b);
    return b;
}
}  // namespace

TEST_CASE("differencing: reads fall through per sector bitmap, writes set bits, parent UUID checked") {
    auto reg = make_reg();
    MemoryFileSystem fs;
    auto parent = small_image(6 * MiB, {{0, vt::bytes(6 * MiB, 0x70)}});
    fs.add("parent.vhd", parent);
    fs.add("child.vhd", make_child(parent, 6 * MiB));
    {
        auto c = open_mem(reg, fs, "child.vhd", true);
        REQUIRE_MESSAGE(c.ok(), vt::error_text(c));
        auto ref = c->device->backing_reference();
        REQUIRE(ref);
        CHECK(ref->names.front() == "parent.vhd");
        CHECK(vt::read_range(*c->device, 0, 4096) == vt::bytes(4096, 0x70));
        REQUIRE(c->device->write(2 * MiB + 1024, vt::bytes(1024, 0x71)).ok());
        REQUIRE(c->device->write(5 * MiB + 100, vt::bytes(10, 0x72)).ok());
        REQUIRE(c->device->close().ok());
    }
    auto c = open_mem(reg, fs, "child.vhd");
    REQUIRE(c.ok());
    auto got = vt::read_range(*c->device, 2 * MiB, 4096);
    auto want = vt::bytes(4096, 0x70);
    std::fill(want.begin() + 1024, want.begin() + 2048, 0x71);
    CHECK(got == want);
    got = vt::read_range(*c->device, 5 * MiB, 512);
    want = vt::bytes(512, 0x70);
    std::fill(want.begin() + 100, want.begin() + 110, 0x72);
    CHECK(got == want);
    auto e = c->device->block_status(2 * MiB, MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::unallocated);
    CHECK(e->length == 1024);
    e = c->device->block_status(2 * MiB + 1024, MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::data);
    CHECK(e->length == 1024);
    e = c->device->block_status(0, 6 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::unallocated);
    CHECK(e->length == 2 * MiB + 1024);  // block 0, then the first two sectors of block 1

    // Opened without its parent, the child refuses writes (they would lose the parent's bytes).
    {
        OpenOptions o;
        o.read_write = true;
        o.no_backing = true;
        auto lone = open_image(reg, fs, "child.vhd", o);
        REQUIRE(lone.ok());
        auto w = lone->device->write(4 * MiB, vt::bytes(512, 0x73));
        REQUIRE_FALSE(w.ok());
        CHECK(w.error().code == ErrorCode::unsupported);
    }

    // A parent with another unique id is refused unless forced.
    auto other = small_image(6 * MiB, {{0, vt::bytes(512, 0x01)}});
    fs.add("parent.vhd", other);
    auto bad = open_mem(reg, fs, "child.vhd");
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().code == ErrorCode::corrupt);
    CHECK(bad.error().message.find("unique id") != std::string::npos);
    CHECK(open_mem(reg, fs, "child.vhd", false, true).ok());
}

TEST_CASE("malformed images give exact errors") {
    auto good = small_image(6 * MiB, {{0, vt::bytes(512, 1)}, {4 * MiB, vt::bytes(512, 2)}});
    const size_t h = 512;
    SUBCASE("bad footer checksum") {
        auto b = good;
        b[kFCreator] ^= 1;
        CHECK(open_error(b) == ErrorCode::corrupt);
    }
    SUBCASE("bad dynamic header checksum") {
        auto b = good;
        b[h + 8 + 100] ^= 1;
        put_be32(b, h + kHChecksum, be32(b, h + kHChecksum) ^ 1);
        CHECK(open_error(b) == ErrorCode::corrupt);
    }
    SUBCASE("no cxsparse cookie") {
        auto b = good;
        b[h] = 'X';
        reseal(b);
        CHECK(open_error(b) == ErrorCode::corrupt);
    }
    SUBCASE("block size zero, not a power of two, too small") {
        for (uint32_t bs : {0u, 1000u, 256u, 0xffffffffu}) {
            auto b = good;
            put_be32(b, h + kHBlockSize, bs);
            reseal(b);
            CHECK(open_error(b) == ErrorCode::corrupt);
        }
    }
    SUBCASE("max_table_entries huge") {
        auto b = good;
        put_be32(b, h + kHMaxEntries, 0xfffffff0u);
        reseal(b);
        CHECK(open_error(b) == ErrorCode::corrupt);
    }
    SUBCASE("BAT too small for the size") {
        auto b = good;
        put_be32(b, h + kHMaxEntries, 1);
        reseal(b);
        CHECK(open_error(b) == ErrorCode::corrupt);
    }
    SUBCASE("BAT past EOF") {
        auto b = good;
        put_be64(b, h + kHTable, b.size() - 4);
        reseal(b);
        CHECK(open_error(b) == ErrorCode::corrupt);
    }
    SUBCASE("BAT entry past EOF") {
        auto b = good;
        put_be32(b, static_cast<size_t>(be64(b, h + kHTable)) + 8, 0x7fffffff);
        reseal(b);
        CHECK(open_error(b) == ErrorCode::corrupt);
    }
    SUBCASE("data offset past EOF") {
        auto b = good;
        put_be64(b, kFDataOffset, 1ull << 40);
        reseal(b, 512);
        CHECK(open_error(b) == ErrorCode::corrupt);
    }
    SUBCASE("current size near 2^64") {
        auto b = good;
        put_be64(b, kFCurSize, ~0ull - 511);
        reseal(b);
        CHECK(open_error(b) == ErrorCode::corrupt);
    }
    SUBCASE("unknown disk type") {
        auto b = good;
        put_be32(b, kFType, 7);
        reseal(b);
        CHECK(open_error(b) == ErrorCode::unsupported);
    }
    SUBCASE("fixed disk larger than its file") {
        auto f = small_image(3 * MiB, {}, "fixed");
        put_be64(f, f.size() - 512 + kFCurSize, 4 * MiB);
        put_be32(f, f.size() - 512 + kFChecksum, sum(f, f.size() - 512, 512, kFChecksum));
        CHECK(open_error(f) == ErrorCode::corrupt);
    }
    SUBCASE("no footer anywhere") {
        auto b = good;
        b[0] = 'X';
        b[b.size() - 512] = 'X';
        CHECK(open_error(b) == ErrorCode::invalid_format);
    }
}

TEST_CASE("check reports overlapping and duplicated BAT entries") {
    auto reg = make_reg();
    auto b = small_image(6 * MiB, {{0, vt::bytes(512, 1)}, {2 * MiB, vt::bytes(512, 2)}});
    size_t bat = static_cast<size_t>(be64(b, 512 + kHTable));
    put_be32(b, bat + 4, be32(b, bat));      // block 1 shares block 0's place
    put_be32(b, bat + 8, be32(b, bat) + 8);  // block 2 overlaps block 0
    reseal(b);
    MemoryFileSystem fs;
    fs.add("c.vhd", b);
    auto r = open_mem(reg, fs, "c.vhd");
    REQUIRE(r.ok());
    auto chk = r->format->check(*r->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 2);
    for (auto& m : chk->messages) MESSAGE(m);
}

TEST_CASE("random corruption of metadata never crashes") {
    auto reg = make_reg();
    auto good = small_image(4 * MiB, {{0, vt::bytes(4096, 1)}, {3 * MiB, vt::bytes(4096, 2)}});
    auto rnd = vt::pattern(4 * 400, 7);
    for (size_t i = 0; i < 400; ++i) {
        auto b = good;
        // Corrupt the footer copy, dynamic header or BAT (first 2 KiB), sometimes with valid checksums.
        size_t at = (rnd[4 * i] | (rnd[4 * i + 1] << 8)) % 2048;
        b[at] = rnd[4 * i + 2];
        if (rnd[4 * i + 3] & 1) reseal(b, 512);
        MemoryFileSystem fs;
        fs.add("r.vhd", b);
        OpenOptions o;
        o.format = "vhd";
        o.no_backing = true;
        auto r = open_image(reg, fs, "r.vhd", o);
        if (!r.ok()) continue;
        std::vector<uint8_t> buf(64 * 1024);
        for (uint64_t off = 0; off + buf.size() <= r->device->size() && off < 8 * MiB; off += MiB)
            (void)r->device->read(off, buf);
        (void)r->format->check(*r->device, RepairMode::none);
    }
}

TEST_CASE("resize: dynamic (BAT grows over moved blocks) and fixed (footer moves), grow and shrink") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    for (std::string sub : {"dynamic", "fixed"}) {
        CAPTURE(sub);
        std::string img = tmp / ("r-" + sub + ".vhd");
        REQUIRE(vt::run("qemu-img create -q -f vpc -o subformat=" + sub + " " + img + " 100M").status == 0);
        auto w = vt::run("qemu-io -f vpc -c 'write -P 0x11 0 3M' -c 'write -P 0x22 99M 1M' " + img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        auto before = vt::qemu_read_raw(img, "vpc", tmp.path);
        uint64_t grown = 0;
        {
            auto dev = vt::open_host(reg, img, "vhd", true);
            REQUIRE(dev.ok());
            // 1.1 GiB needs 563 BAT entries: more than the one BAT sector qemu-img wrote holds, so the
            // first blocks move to the end of the file.
            auto st = dev->device->resize(before.size() + GiB);
            REQUIRE_MESSAGE(st.ok(), st.error().to_string());
            grown = dev->device->size();
            CHECK(grown >= before.size() + GiB);
            REQUIRE(dev->device->close().ok());
        }
        vt::expect_qemu_reads_prefix(img, "vpc", before, grown, tmp.path);
        if (vt::have("vhdiinfo")) {
            auto v = vt::run("vhdiinfo " + img);
            CHECK(v.output.find("(" + std::to_string(grown) + " bytes)") != std::string::npos);
        }
        // qemu writes past the old end, and vdisk reads that back and checks the image clean.
        w = vt::run("qemu-io -f vpc -c 'write -P 0x33 1000M 1M' " + img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        {
            auto dev = vt::open_host(reg, img, "vhd");
            REQUIRE(dev.ok());
            auto chk = dev->format->check(*dev->device, RepairMode::none);
            REQUIRE(chk.ok());
            CHECK(chk->corruptions == 0);
            std::vector<uint8_t> b(4096);
            REQUIRE(dev->device->read(1000 * MiB, b).ok());
            CHECK(b[0] == 0x33);
            REQUIRE(dev->device->read(0, b).ok());
            CHECK(b[0] == 0x11);
        }
        {
            auto dev = vt::open_host(reg, img, "vhd", true);
            REQUIRE(dev.ok());
            REQUIRE(dev->device->resize(50 * MiB).ok());
            REQUIRE(dev->device->close().ok());
        }
        auto shrunk = vt::qemu_read_raw(img, "vpc", tmp.path);
        REQUIRE(shrunk.size() >= 50 * MiB);
        REQUIRE(shrunk.size() < 51 * MiB);
        CHECK(std::equal(shrunk.begin(), shrunk.end(), before.begin()));
    }
}

TEST_CASE("create -o uuid: the unique id is the one given (vhdiinfo), info reports it for convert") {
    auto reg = make_reg();
    vt::TempDir tmp;
    const std::string id = "0bb1a73a-2c4a-4f5e-8a1f-f58a6cf97bb1";
    auto fs = make_posix_file_system();
    CreateOptions co;
    co.size = 8 * MiB;
    co.values = {{"uuid", id}};
    auto dev = create_image(reg, *fs, tmp / "u.vhd", "vhd", co);
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    CHECK((*dev)->info().uuid.value_or("") == id);
    REQUIRE((*dev)->close().ok());
    if (vt::have("vhdiinfo")) {
        auto v = vt::run("vhdiinfo " + tmp / "u.vhd");
        CHECK(v.output.find("Identifier\t\t: " + id) != std::string::npos);
    }
    co.values = {{"uuid", "not-a-uuid"}};
    auto bad = create_image(reg, *fs, tmp / "b.vhd", "vhd", co);
    REQUIRE(!bad.ok());
    CHECK(bad.error().code == ErrorCode::invalid_argument);
}

TEST_CASE("create preallocation=full: a fixed VHD's data is written (thick), qemu-img reads zeros") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system();
    for (std::string mode : {"off", "full"}) {
        CreateOptions co;
        co.size = 16 * MiB;
        co.values = {{"subformat", "fixed"}, {"preallocation", mode}};
        auto dev = create_image(reg, *fs, tmp / (mode + ".vhd"), "vhd", co);
        REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
        REQUIRE((*dev)->close().ok());
        auto blocks = vt::run("stat -c %b " + tmp / (mode + ".vhd"));
        uint64_t allocated = std::stoull(blocks.output) * 512;
        if (mode == "full") CHECK(allocated >= 16 * MiB);
        else CHECK(allocated < 1 * MiB);
        auto data = vt::qemu_read_raw(tmp / (mode + ".vhd"), "vpc", tmp.path);
        CHECK(std::all_of(data.begin(), data.end(), [](uint8_t b) { return b == 0; }));
    }
    CreateOptions co;
    co.size = 16 * MiB;
    co.values = {{"preallocation", "full"}};  // a dynamic VHD has nothing to preallocate
    auto bad = create_image(reg, *fs, tmp / "d.vhd", "vhd", co);
    REQUIRE(!bad.ok());
    CHECK(bad.error().code == ErrorCode::invalid_argument);
}

TEST_CASE("create block_size: dynamic VHDs with 512 KiB and 16 MiB blocks, written and read by qemu-img") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system();
    for (std::string bs : {"512k", "16M"}) {
        CAPTURE(bs);
        std::string img = tmp / ("b" + bs + ".vhd");
        CreateOptions co;
        co.size = 40 * MiB;
        co.values = {{"block_size", bs}};
        auto dev = create_image(reg, *fs, img, "vhd", co);
        REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
        auto data = vt::pattern(3 * MiB + 4096, 7);
        REQUIRE((*dev)->write(5 * MiB - 4096, data).ok());
        REQUIRE((*dev)->close().ok());
        auto got = vt::qemu_read_raw(img, "vpc", tmp.path);
        REQUIRE(got.size() >= 40 * MiB);
        CHECK(std::equal(data.begin(), data.end(), got.begin() + static_cast<std::ptrdiff_t>(5 * MiB - 4096)));
        auto w = vt::run("qemu-io -f vpc -c 'write -P 0x7e 30M 1M' " + img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        auto back = vt::open_host(reg, img, "vhd");
        REQUIRE(back.ok());
        CHECK(back->device->info().cluster_size == parse_size(bs).value());
        CHECK(vt::read_range(*back->device, 30 * MiB, 4096) == std::vector<uint8_t>(4096, 0x7e));
        auto chk = back->format->check(*back->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 0);
    }
    CreateOptions co;
    co.size = 8 * MiB;
    co.values = {{"block_size", "3M"}};
    CHECK(!create_image(reg, *fs, tmp / "bad.vhd", "vhd", co).ok());
}
