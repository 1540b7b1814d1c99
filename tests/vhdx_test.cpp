// SPDX-License-Identifier: Apache-2.0
// VHDX backend: corpus images, log replay, differencing, create/write against qemu-img, malformed input.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include "support.hpp"
#include "util/bytes.hpp"
#include "../fuzz/fuzz_common.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_vhdx_format();
}  // namespace vdisk

using namespace vdisk;

namespace {

Registry make_reg() {
    Registry reg;
    reg.add(make_raw_format());
    reg.add(make_vhdx_format());
    return reg;
}

void verify(const std::string& rel) {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    vt::verify_manifest_entry(reg, *root, vt::manifest_entry(*root, rel), tmp.path, "vhdx");
}

}  // namespace

TEST_CASE("corpus: Disk2vhd image with equal header sequence numbers") { verify("real/qemu-iotests/test-disk2vhd.vhdx.bz2"); }
TEST_CASE("corpus: Hyper-V dynamic 1 GiB") { verify("real/qemu-iotests/iotest-dynamic-1G.vhdx.bz2"); }
TEST_CASE("corpus: dirty log replayed in memory on a read-only open") {
    verify("real/qemu-iotests/iotest-dirtylog-10G-4M.vhdx.bz2");
}
TEST_CASE("corpus: Windows 10 dynamic") { verify("real/dissect.hypervisor/dynamic.vhdx.gz"); }
TEST_CASE("corpus: Windows 10 fixed") { verify("real/dissect.hypervisor/fixed.vhdx.gz"); }

// ---------------------------------------------------------------------------------------------------------
// Helpers for building and patching images in memory.
namespace {

constexpr uint64_t MiB = 1ull << 20;

uint32_t le32(const std::vector<uint8_t>& b, size_t at) { uint32_t v; std::memcpy(&v, b.data() + at, 4); return v; }
uint64_t le64(const std::vector<uint8_t>& b, size_t at) { uint64_t v; std::memcpy(&v, b.data() + at, 8); return v; }
void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); }
void put64(std::vector<uint8_t>& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); }
void put16(std::vector<uint8_t>& b, size_t at, uint16_t v) { std::memcpy(b.data() + at, &v, 2); }

uint32_t crc_hole(const uint8_t* p, size_t len) {
    std::vector<uint8_t> c(p, p + len);
    std::memset(c.data() + 4, 0, 4);
    return util::crc32c(c);
}
void fix_headers(std::vector<uint8_t>& b) {
    for (size_t at : {size_t(64 << 10), size_t(128 << 10)}) put32(b, at + 4, crc_hole(b.data() + at, 4096));
}
void fix_regions(std::vector<uint8_t>& b) {
    for (size_t at : {size_t(192 << 10), size_t(256 << 10)}) put32(b, at + 4, crc_hole(b.data() + at, 64 << 10));
}

// Layout of images vdisk creates with the default 1 MiB log (see vhdx_format.cpp create()).
constexpr size_t kMeta = 2 * MiB;      // metadata region
constexpr size_t kItems = kMeta + (64 << 10);
constexpr size_t kBat = 3 * MiB;       // BAT region

// A small dynamic image made by vdisk (1 MiB blocks), with `writes` applied, as bytes.
std::vector<uint8_t> small_image(uint64_t size = 16 * MiB,
                                 std::vector<std::pair<uint64_t, std::vector<uint8_t>>> writes = {},
                                 std::string opts = "block_size=1M") {
    auto reg = make_reg();
    MemoryFileSystem fs;
    CreateOptions co;
    co.size = size;
    auto kv = parse_option_list(opts);
    REQUIRE(kv);
    co.values = *kv;
    auto dev = create_image(reg, fs, "img.vhdx", "vhdx", co);
    REQUIRE_MESSAGE(dev.ok(), (dev.ok() ? "" : dev.error().to_string()));
    for (auto& [off, data] : writes) REQUIRE((*dev)->write(off, data).ok());
    REQUIRE((*dev)->close().ok());
    dev->reset();
    return *fs.content("img.vhdx");
}

Result<OpenedImage> open_mem(MemoryFileSystem& fs, const std::vector<uint8_t>& bytes, bool rw = false,
                             OpenOptions o = {}) {
    static auto reg = make_reg();
    fs.add("img.vhdx", bytes);
    o.read_write = rw;
    return open_image(reg, fs, "img.vhdx", o);
}

ErrorCode open_error(const std::vector<uint8_t>& bytes, OpenOptions o = {}) {
    MemoryFileSystem fs;
    o.format = "vhdx";
    auto r = open_mem(fs, bytes, false, o);
    REQUIRE_MESSAGE(!r.ok(), "image unexpectedly opened");
    INFO(r.error().to_string());
    return r.error().code;
}

std::vector<uint8_t> bytes_of(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

// One log entry (MS-VHDX 2.3.1): data descriptors for 4 KiB sectors, zero descriptors for ranges.
struct LogData { uint64_t file_offset; std::vector<uint8_t> sector; };
struct LogZero { uint64_t file_offset; uint64_t length; };
std::vector<uint8_t> log_entry(uint64_t seq, uint32_t tail, const uint8_t* guid, std::vector<LogData> data,
                               std::vector<LogZero> zeros, uint64_t flushed, uint64_t last) {
    size_t ndesc = data.size() + zeros.size();
    size_t desc_bytes = ((64 + 32 * ndesc) + 4095) / 4096 * 4096;
    std::vector<uint8_t> e(desc_bytes + 4096 * data.size(), 0);
    put32(e, 0, 0x65676f6c);
    put32(e, 8, static_cast<uint32_t>(e.size()));
    put32(e, 12, tail);
    put64(e, 16, seq);
    put32(e, 24, static_cast<uint32_t>(ndesc));
    std::memcpy(e.data() + 32, guid, 16);
    put64(e, 48, flushed);
    put64(e, 56, last);
    size_t d = 64;
    for (auto& z : zeros) {
        put32(e, d, 0x6f72657a);
        put64(e, d + 8, z.length);
        put64(e, d + 16, z.file_offset);
        put64(e, d + 24, seq);
        d += 32;
    }
    size_t s = desc_bytes;
    for (auto& x : data) {
        put32(e, d, 0x63736564);
        put32(e, d + 4, le32(x.sector, 4092));
        put64(e, d + 8, le64(x.sector, 0));
        put64(e, d + 16, x.file_offset);
        put64(e, d + 24, seq);
        d += 32;
        put32(e, s, 0x61746164);
        put32(e, s + 4, static_cast<uint32_t>(seq >> 32));
        std::memcpy(e.data() + s + 8, x.sector.data() + 8, 4084);
        put32(e, s + 4092, static_cast<uint32_t>(seq));
        s += 4096;
    }
    put32(e, 4, util::crc32c(e));
    return e;
}

void set_log_guid(std::vector<uint8_t>& img, const uint8_t* guid) {
    for (size_t at : {size_t(64 << 10), size_t(128 << 10)}) std::memcpy(img.data() + at + 48, guid, 16);
    fix_headers(img);
}

const uint8_t kGuid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

uint64_t block_host(const std::vector<uint8_t>& img, uint64_t bat_index) {
    return (le64(img, kBat + bat_index * 8) >> 20) << 20;
}

std::vector<uint8_t> read_dev(BlockDevice& dev, uint64_t off, size_t len) {
    std::vector<uint8_t> b(len);
    auto r = dev.read(off, b);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().to_string()));
    return b;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("corpus: dirty log is pending read-only and replayed into the file read-write") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string rel = "real/qemu-iotests/iotest-dirtylog-10G-4M.vhdx.bz2";
    std::string path = vt::unpack_corpus(*root, rel, tmp.path);
    {
        auto ro = vt::open_host(reg, path);
        REQUIRE(ro.ok());
        CHECK(ro->device->info().dirty);
        auto chk = ro->format->check(*ro->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 1);
    }
    std::string before = vt::sha256_file(path);
    {
        auto rw = vt::open_host(reg, path, "", true);
        REQUIRE_MESSAGE(rw.ok(), (rw.ok() ? "" : rw.error().to_string()));
        CHECK(!rw->device->info().dirty);
        REQUIRE(rw->device->close().ok());
    }
    CHECK(vt::sha256_file(path) != before);
    // The replayed file is clean for qemu-img too (it refuses images with a pending log read-only).
    if (vt::need_qemu()) {
        auto r = vt::run("qemu-img check -f vhdx " + vt::sh_quote(path));
        CHECK_MESSAGE(r.status == 0, r.output);
    }
    auto entry = vt::manifest_entry(*root, rel);
    auto ro = vt::open_host(reg, path);
    REQUIRE(ro.ok());
    CHECK(!ro->device->info().dirty);
    for (auto& x : *entry.get("data_extents")->as_array())
        CHECK(vt::sha256_range(*ro->device, *x.get("offset")->as_uint(), *x.get("length")->as_uint()) ==
              *x.get("sha256")->as_string());
}

TEST_CASE("corpus: differencing checkpoint without its parent") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string path = vt::unpack_corpus(*root, "real/dissect.hypervisor/differencing.avhdx.gz", tmp.path);
    auto r = vt::open_host(reg, path);
    REQUIRE(!r.ok());
    CHECK(r.error().code == ErrorCode::not_found);
    CHECK(r.error().message.find("Generation 1_49C4BAF3") != std::string::npos);
    auto fs = make_posix_file_system();
    OpenOptions o;
    o.no_backing = true;
    auto img = open_image(reg, *fs, path, o);
    REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
    CHECK(img->device->size() == 8ull << 30);
    auto ref = img->device->backing_reference();
    REQUIRE(ref);
    REQUIRE(!ref->names.empty());
    CHECK(ref->names[0].find('\\') == std::string::npos);
    CHECK(ref->names[0].find(".avhdx") != std::string::npos);
    auto info = img->device->info();
    CHECK(info.cluster_size == 2u << 20);
    REQUIRE(info.backing_filename);
    // Without the parent the unallocated parts read as zeros and the allocated ones are readable.
    auto m = map_extent(*img->device, 0, 1ull << 30);
    REQUIRE(m.ok());
    auto chk = img->format->check(*img->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}

TEST_CASE("qemu-made images with qemu-io writes read identically") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    for (std::string opts : {"block_size=1M", "block_size=8M,block_state_zero=off", "subformat=fixed,block_size=2M"}) {
        INFO(opts);
        std::string img = tmp / "q.vhdx";
        REQUIRE(vt::run("qemu-img create -f vhdx -o " + opts + " " + img + " 40M").status == 0);
        auto w = vt::run("qemu-io -f vhdx -c 'write -P 0xab 0 64k' -c 'write -P 0x5c 1536k 3M' -c 'write -P 0x11 "
                         "40894464 512' " + img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        auto want = vt::qemu_read_raw(img, "vhdx", tmp.path);
        auto dev = vt::open_host(reg, img);
        REQUIRE(dev.ok());
        CHECK(vt::read_all(*dev->device) == want);
        auto chk = dev->format->check(*dev->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 0);
        std::filesystem::remove(img);
    }
}

namespace {
// Apply the same writes to a vdisk VHDX and a raw file, then let qemu-img check and compare them.
// full=false: qemu-img compare would read every byte (qemu's vhdx driver reports all of it as data), so
// large images are checked with qemu-io pattern reads of each write (constant fills) and its surroundings.
void write_and_compare(const std::string& opts, uint64_t size,
                       const std::vector<std::pair<uint64_t, std::vector<uint8_t>>>& writes, bool full = true) {
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    CreateOptions co;
    co.size = size;
    co.values = *parse_option_list(opts);
    auto dev = create_image(reg, *fs, "out.vhdx", "vhdx", co);
    REQUIRE_MESSAGE(dev.ok(), (dev.ok() ? "" : dev.error().to_string()));
    CreateOptions ro;
    ro.size = size;
    auto raw = create_image(reg, *fs, "ref.raw", "raw", ro);
    REQUIRE(raw.ok());
    for (auto& [off, data] : writes) {
        REQUIRE((*dev)->write(off, data).ok());
        REQUIRE((*raw)->write(off, data).ok());
    }
    REQUIRE((*dev)->close().ok());
    REQUIRE((*raw)->close().ok());
    dev->reset();
    raw->reset();
    auto c = vt::run("qemu-img check -f vhdx " + tmp / "out.vhdx");
    CHECK_MESSAGE(c.status == 0, c.output);
    if (full) {
        auto cmp = vt::run("qemu-img compare -f vhdx -F raw " + tmp / "out.vhdx" + " " + tmp / "ref.raw");
        CHECK_MESSAGE(cmp.status == 0, cmp.output);
    } else {
        std::string cmds;
        for (auto& [off, data] : writes) {
            cmds += " -c 'read -P " + std::to_string(data[0]) + " " + std::to_string(off) + " " +
                    std::to_string(data.size()) + "'";
            cmds += " -c 'read -P 0 " + std::to_string(off - 65536) + " 65536'";
        }
        auto r = vt::run("qemu-io -f vhdx" + cmds + " " + tmp / "out.vhdx");
        CHECK_MESSAGE((r.status == 0 && r.output.find("verification failed") == std::string::npos), r.output);
    }
    auto info = vt::run("qemu-img info --output=json " + tmp / "out.vhdx");
    CHECK(info.output.find("\"virtual-size\": " + std::to_string(size)) != std::string::npos);
    if (vt::have("vhdiinfo")) {
        auto v = vt::run("vhdiinfo " + tmp / "out.vhdx");
        CHECK_MESSAGE(v.status == 0, v.output);
    }
    // And vdisk reads its own image back.
    auto back = vt::open_host(reg, tmp / "out.vhdx");
    REQUIRE(back.ok());
    {
        // format-specific against libyal (its identifier is the data write GUID) and qemu-img's block size.
        auto inf = back->device->info();
        REQUIRE(inf.format_specific.get("data"));
        const Json& d = *inf.format_specific.get("data");
        CHECK(info.output.find("\"cluster-size\": " + std::to_string(*d.get("block-size")->as_uint())) !=
              std::string::npos);
        CHECK(*d.get("allocated-blocks")->as_uint() > 0);
        if (vt::have("vhdiinfo")) {
            auto v = vt::run("vhdiinfo " + tmp / "out.vhdx");
            CHECK(v.output.find("Identifier\t\t: " + *d.get("data-write-guid")->as_string()) != std::string::npos);
        }
    }
    auto chk = back->format->check(*back->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
    for (auto& [off, data] : writes) {
        auto got = read_dev(*back->device, off, data.size());
        (void)got;
    }
}
}  // namespace

TEST_CASE("create and write: dynamic, fixed, block_state_zero=off, unaligned writes") {
    if (!vt::need_qemu()) return;
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> w = {
        {0, vt::pattern(65536, 1)},
        {3 * MiB - 100, vt::pattern(300, 2)},          // unaligned, crosses a block boundary
        {9 * MiB, vt::pattern(2 * MiB + 512, 3)},      // several blocks
        {0, vt::pattern(512, 4)},                      // rewrite an allocated block
        {24 * MiB - 512, vt::pattern(512, 5)},         // last sector
    };
    write_and_compare("block_size=1M", 24 * MiB, w);
    write_and_compare("", 24 * MiB, w);
    write_and_compare("block_state_zero=off,log_size=2M", 24 * MiB, w);
    write_and_compare("subformat=fixed,block_size=4M", 24 * MiB, w);
}

TEST_CASE("create: > 4 GiB sparse image with data past 4 GiB") {
    if (!vt::need_qemu()) return;
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> w = {
        {(5ull << 30) + 12345 * 512, bytes_of(70000, 0x77)},
        {(6ull << 30) - 4096, bytes_of(4096, 0x88)},
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

// Convert `from` (format `fmt`) into a VHDX with 1 MiB blocks through the library.
static void convert_to_vhdx_1m(const Registry& reg, FileSystem& fs, const std::string& from, const std::string& fmt,
                               const std::string& to) {
    OpenOptions o;
    o.format = fmt;
    auto src = open_image(reg, fs, from, o);
    REQUIRE(src.ok());
    ConvertOptions co;
    co.output_format = "vhdx";
    co.create.values = *parse_option_list("block_size=1M");
    auto st = convert(reg, *src->device, fs, to, co);
    REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().to_string()));
}

TEST_CASE("convert raw to vhdx matches under qemu-img compare; rewrite of a qemu image rotates GUIDs") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    auto data = vt::pattern(3 * MiB, 9);
    std::fill(data.begin() + MiB, data.begin() + 2 * MiB, 0);
    vt::write_file(tmp / "src.raw", data);
    convert_to_vhdx_1m(reg, *fs, "src.raw", "raw", "dst.vhdx");
    auto cmp = vt::run("qemu-img compare -f raw -F vhdx " + tmp / "src.raw" + " " + tmp / "dst.vhdx");
    CHECK_MESSAGE(cmp.status == 0, cmp.output);
    CHECK(vt::run("qemu-img check -f vhdx " + tmp / "dst.vhdx").status == 0);

    // Open a qemu-made image read-write, write, close: qemu sees the data, headers changed.
    std::string q = tmp / "q.vhdx";
    REQUIRE(vt::run("qemu-img create -f vhdx -o block_size=1M " + q + " 20M").status == 0);
    auto before = vt::read_file(q);
    {
        auto rw = vt::open_host(reg, q, "", true);
        REQUIRE(rw.ok());
        REQUIRE(rw->device->write(5 * MiB + 512, bytes_of(8192, 0xcd)).ok());
        REQUIRE(rw->device->close().ok());
    }
    auto after = vt::read_file(q);
    // DataWriteGuid (header offset 32) changed in the header with the larger sequence number.
    auto cur = [](const std::vector<uint8_t>& b) {
        return le64(b, (128 << 10) + 8) > le64(b, (64 << 10) + 8) ? size_t(128 << 10) : size_t(64 << 10);
    };
    CHECK(std::memcmp(before.data() + cur(before) + 32, after.data() + cur(after) + 32, 16) != 0);
    auto r = vt::run("qemu-io -f vhdx -c 'read -P 0xcd 5243392 8192' -c 'read -P 0 0 5243392' " + q);
    CHECK_MESSAGE((r.status == 0 && r.output.find("Pattern verification failed") == std::string::npos), r.output);
    CHECK(vt::run("qemu-img check -f vhdx " + q).status == 0);
}

// ---------------------------------------------------------------------------------------------------------
// The log (MS-VHDX 2.3), with entries built by hand.
namespace {
struct LogFixture {
    std::vector<uint8_t> img = small_image(16 * MiB, {{0, bytes_of(MiB, 0x11)}});
    uint64_t host = block_host(img, 0);
    std::vector<uint8_t> sector(uint8_t v) { return bytes_of(4096, v); }
    void place(size_t log_pos, const std::vector<uint8_t>& e) {
        for (size_t i = 0; i < e.size(); ++i) img[MiB + (log_pos + i) % MiB] = e[i];
    }
};
}  // namespace

TEST_CASE("log: read-only open applies the active sequence in memory, read-write replays it") {
    LogFixture f;
    auto e = log_entry(5, 0, kGuid, {{f.host, f.sector(0x22)}}, {{f.host + 8192, 8192}}, f.img.size(), f.img.size());
    f.place(0, e);
    set_log_guid(f.img, kGuid);
    {
        MemoryFileSystem fs;
        auto ro = open_mem(fs, f.img);
        REQUIRE_MESSAGE(ro.ok(), (ro.ok() ? "" : ro.error().to_string()));
        CHECK(ro->device->info().dirty);
        CHECK(read_dev(*ro->device, 0, 4096) == f.sector(0x22));
        CHECK(read_dev(*ro->device, 4096, 4096) == f.sector(0x11));
        CHECK(read_dev(*ro->device, 8192, 8192) == bytes_of(8192, 0));
        CHECK(read_dev(*ro->device, 16384, 4096) == f.sector(0x11));
        CHECK(fs.content("img.vhdx") == f.img);  // nothing written
    }
    MemoryFileSystem fs;
    {
        auto rw = open_mem(fs, f.img, true);
        REQUIRE_MESSAGE(rw.ok(), (rw.ok() ? "" : rw.error().to_string()));
        CHECK(!rw->device->info().dirty);
        CHECK(read_dev(*rw->device, 0, 4096) == f.sector(0x22));
        REQUIRE(rw->device->close().ok());
    }
    auto replayed = *fs.content("img.vhdx");
    for (size_t at : {size_t(64 << 10), size_t(128 << 10)})
        CHECK(std::all_of(replayed.begin() + at + 48, replayed.begin() + at + 64, [](uint8_t b) { return b == 0; }));
    MemoryFileSystem fs2;
    auto again = open_mem(fs2, replayed);
    REQUIRE(again.ok());
    CHECK(!again->device->info().dirty);
    CHECK(read_dev(*again->device, 0, 4096) == f.sector(0x22));
    CHECK(read_dev(*again->device, 8192, 8192) == bytes_of(8192, 0));
    if (vt::need_qemu()) {
        vt::TempDir tmp;
        vt::write_file(tmp / "r.vhdx", replayed);
        auto c = vt::run("qemu-img check -f vhdx " + tmp / "r.vhdx");
        CHECK_MESSAGE(c.status == 0, c.output);
        auto raw = vt::qemu_read_raw(tmp / "r.vhdx", "vhdx", tmp.path);
        CHECK(raw == vt::read_all(*again->device));
    }
}

TEST_CASE("log: active sequence selection, wrap-around and garbage") {
    auto first_sectors = [](const std::vector<uint8_t>& img) {
        MemoryFileSystem fs;
        auto ro = open_mem(fs, img);
        REQUIRE_MESSAGE(ro.ok(), (ro.ok() ? "" : ro.error().to_string()));
        auto b = read_dev(*ro->device, 0, 8192);
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
        for (size_t at : {size_t(64 << 10), size_t(128 << 10)}) put64(h.img, at + 72, 1ull << 40);
        fix_headers(h.img);
        CHECK(open_error(h.img) == ErrorCode::corrupt);
        OpenOptions o;
        o.limits.max_metadata_bytes = 64 << 10;
        LogFixture k;
        set_log_guid(k.img, kGuid);
        CHECK(open_error(k.img, o) == ErrorCode::limit_exceeded);
    }
}

// ---------------------------------------------------------------------------------------------------------
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
        CHECK(open_error(patched([](auto& b) { b[(64 << 10) + 20] ^= 1; b[(128 << 10)] = 'x'; })) == ErrorCode::corrupt);
        // One bad header is fine: the other one is used.
        MemoryFileSystem fs;
        CHECK(open_mem(fs, patched([](auto& b) { b[(64 << 10) + 20] ^= 1; })).ok());
    }
    SUBCASE("header version") {
        CHECK(open_error(patched([](auto& b) { put16(b, (64 << 10) + 66, 2); put16(b, (128 << 10) + 66, 2); fix_headers(b); })) ==
              ErrorCode::unsupported);
    }
    SUBCASE("region table") {
        CHECK(open_error(patched([](auto& b) { put32(b, (192 << 10) + 8, 100000); put32(b, (256 << 10) + 8, 100000); fix_regions(b); })) ==
              ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { b[(192 << 10) + 30] ^= 1; b[(256 << 10) + 30] ^= 1; })) == ErrorCode::corrupt);
        // BAT region past the end of the file.
        CHECK(open_error(patched([](auto& b) { for (size_t t : {192u << 10, 256u << 10}) put64(b, t + 16 + 16, 1ull << 40); fix_regions(b); })) ==
              ErrorCode::corrupt);
        // Unknown required region.
        CHECK(open_error(patched([](auto& b) { for (size_t t : {192u << 10, 256u << 10}) b[t + 16] ^= 0xff; fix_regions(b); })) ==
              ErrorCode::unsupported);
        // Misaligned region.
        CHECK(open_error(patched([](auto& b) { for (size_t t : {192u << 10, 256u << 10}) put64(b, t + 16 + 16, 3 * MiB + 4096); fix_regions(b); })) ==
              ErrorCode::corrupt);
    }
    SUBCASE("metadata") {
        CHECK(open_error(patched([](auto& b) { put16(b, kMeta + 10, 60000); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { b[kMeta] = 'x'; })) == ErrorCode::corrupt);
        for (uint32_t bs : {0u, 4096u, 3u << 20, 512u << 20, 0x80000000u})
            CHECK(open_error(patched([&](auto& b) { put32(b, kItems, bs); })) == ErrorCode::corrupt);
        for (uint32_t ls : {0u, 1024u, 8192u})
            CHECK(open_error(patched([&](auto& b) { put32(b, kItems + 32, ls); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { put32(b, kItems + 36, 1000); })) == ErrorCode::corrupt);
        for (uint64_t vs : {0ull, ~0ull, ~0ull - 511, (64ull << 40) + 512, 1000ull})
            CHECK(open_error(patched([&](auto& b) { put64(b, kItems + 8, vs); })) == ErrorCode::corrupt);
        // 64 TiB with 1 MiB blocks needs a 512 MiB BAT; the region holds 1 MiB.
        CHECK(open_error(patched([](auto& b) { put64(b, kItems + 8, 64ull << 40); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { b[kItems + 4] |= 2; })) == ErrorCode::corrupt);  // has-parent, no locator
        // Item outside the region, oversized item, unknown required item, missing item.
        CHECK(open_error(patched([](auto& b) { put32(b, kMeta + 32 + 16, 0xfffff0); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { put32(b, kMeta + 32 + 20, 2 * MiB); })) == ErrorCode::corrupt);
        CHECK(open_error(patched([](auto& b) { b[kMeta + 32 + 32 * 3] ^= 0xff; })) == ErrorCode::unsupported);
        CHECK(open_error(patched([](auto& b) { b[kMeta + 32] ^= 0xff; b[kMeta + 32 + 24] = 0; })) == ErrorCode::corrupt);
    }
    SUBCASE("duplicate metadata item") {
        CHECK(open_error(patched([](auto& b) {
                  std::memcpy(b.data() + kMeta + 32 + 32 * 5, b.data() + kMeta + 32, 32);
                  put16(b, kMeta + 10, 6);
              })) == ErrorCode::corrupt);
    }
    SUBCASE("BAT limit") {
        OpenOptions o;
        o.limits.max_metadata_bytes = 64;
        CHECK(open_error(base, o) == ErrorCode::limit_exceeded);
    }
}

TEST_CASE("BAT entries past EOF, overlapping or invalid: reads fail cleanly and check reports them") {
    auto base = small_image(16 * MiB, {{0, bytes_of(MiB, 1)}, {MiB, bytes_of(MiB, 2)}});
    auto reg = make_reg();
    auto run = [&](std::vector<uint8_t> img, uint64_t read_at, uint64_t expect_corruptions) {
        MemoryFileSystem fs;
        auto r = open_mem(fs, img);
        REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().to_string()));
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
        CHECK(read_dev(*r->device, 5 * MiB, 16) == bytes_of(16, 0));
    };
    {
        auto img = base;
        put64(img, kBat + 8, (1ull << 40) | 6);  // block 1 far past EOF
        run(img, MiB, 1);
    }
    {
        auto img = base;
        put64(img, kBat + 8, (img.size() - MiB / 2) | 6);  // block 1 straddles EOF (1 MiB units: clamp)
        put64(img, kBat + 8, ((img.size() >> 20) << 20) | 6);
        run(img, MiB, 1);
    }
    {
        auto img = base;
        put64(img, kBat + 16, 5);  // invalid state
        run(img, 2 * MiB, 1);
    }
    {
        auto img = base;
        put64(img, kBat + 16, 7);  // partially present in a non-differencing image
        run(img, 2 * MiB, 2);
    }
    {
        auto img = base;
        put64(img, kBat + 16, (2 * MiB) | 6);  // points at the metadata region
        MemoryFileSystem fs;
        auto r = open_mem(fs, img);
        REQUIRE(r.ok());
        auto chk = r->format->check(*r->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 1);
        REQUIRE(!chk->messages.empty());
        CHECK(chk->messages[0].find("overlaps") != std::string::npos);
        put64(img, kBat + 16, block_host(img, 0) | 6);  // shares block 0's space
        fs.add("img.vhdx", img);
        auto r2 = open_image(reg, fs, "img.vhdx", {});
        REQUIRE(r2.ok());
        auto chk2 = r2->format->check(*r2->device, RepairMode::none);
        REQUIRE(chk2.ok());
        CHECK(chk2->corruptions == 1);
    }
}

// ---------------------------------------------------------------------------------------------------------
// A differencing image built by hand from a vdisk-made one: parent locator, PARTIALLY_PRESENT block with a
// sector bitmap, FULLY_PRESENT, ZERO and NOT_PRESENT blocks.
namespace {

void put_utf16(std::vector<uint8_t>& b, size_t at, const std::string& s) {
    for (size_t i = 0; i < s.size(); ++i) put16(b, at + 2 * i, static_cast<uint8_t>(s[i]));
}

std::vector<uint8_t> parent_locator(const std::vector<std::pair<std::string, std::string>>& kv) {
    static const uint8_t type[16] = {0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
                                     0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13};
    size_t strings = 20 + 12 * kv.size();
    size_t total = strings;
    for (auto& [k, v] : kv) total += 2 * (k.size() + v.size());
    std::vector<uint8_t> b(total, 0);
    std::memcpy(b.data(), type, 16);
    put16(b, 18, static_cast<uint16_t>(kv.size()));
    size_t at = strings;
    for (size_t i = 0; i < kv.size(); ++i) {
        size_t e = 20 + 12 * i;
        put32(b, e, static_cast<uint32_t>(at));
        put16(b, e + 8, static_cast<uint16_t>(2 * kv[i].first.size()));
        put_utf16(b, at, kv[i].first);
        at += 2 * kv[i].first.size();
        put32(b, e + 4, static_cast<uint32_t>(at));
        put16(b, e + 10, static_cast<uint16_t>(2 * kv[i].second.size()));
        put_utf16(b, at, kv[i].second);
        at += 2 * kv[i].second.size();
    }
    return b;
}

std::string data_write_guid(const std::vector<uint8_t>& img) {
    size_t cur = le64(img, (128 << 10) + 8) > le64(img, (64 << 10) + 8) ? (128 << 10) : (64 << 10);
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
        auto loc = parent_locator({{"parent_linkage", linkage}, {"relative_path", ".\\sub\\..\\parent.vhdx"},
                                   {"absolute_win32_path", "C:\\vms\\parent.vhdx"}});
        std::memcpy(child.data() + kItems + 64, loc.data(), loc.size());
        size_t e = kMeta + 32 + 32 * 5;
        std::memcpy(child.data() + e, "\x2d\x5f\xd3\xa8\x0b\xb3\x4d\x45\xab\xf7\xd3\xd8\x48\x34\xab\x0c", 16);
        put32(child, e + 16, (64 << 10) + 64);
        put32(child, e + 20, static_cast<uint32_t>(loc.size()));
        put32(child, e + 24, 4);
        put16(child, kMeta + 10, 6);
        // Block 0 partially present with a bitmap marking sectors 0-7 and 100; block 1 fully present;
        // block 2 zero; the rest not present (from the parent).
        uint64_t h0 = child.size(), h1 = h0 + MiB, sb = h1 + MiB;
        child.resize(sb + MiB, 0);
        std::memcpy(child.data() + h0, q.data(), MiB);
        std::memcpy(child.data() + h1, r.data(), MiB);
        child[sb] = 0xff;
        child[sb + 100 / 8] |= 1 << (100 % 8);
        put64(child, kBat + 0, h0 | 7);
        put64(child, kBat + 8, h1 | 6);
        put64(child, kBat + 16, 2);
        put64(child, kBat + 4096 * 8, sb | 6);
        expect = parent_data;
        std::memcpy(expect.data(), q.data(), 4096);
        std::memcpy(expect.data() + 100 * 512, q.data() + 100 * 512, 512);
        std::memcpy(expect.data() + MiB, r.data(), MiB);
        std::fill(expect.begin() + 2 * MiB, expect.begin() + 3 * MiB, 0);
    }
    Result<OpenedImage> open(MemoryFileSystem& fs, OpenOptions o = {}) {
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
    REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
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
        CHECK(read_dev(*img->device, MiB, 4096) == std::vector<uint8_t>(f.r.begin(), f.r.begin() + 4096));
        auto st = img->device->write(0, bytes_of(512, 1));
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
            REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
            auto w = vt::pattern(1024, 30);
            REQUIRE(img->device->write(200 * 512, w).ok());           // partially present block
            REQUIRE(img->device->write(5 * MiB + 512, w).ok());       // not present: copy up from the parent
            REQUIRE(img->device->write_zeroes(6 * MiB, MiB).ok());    // whole not-present block -> ZERO
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

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("random corruption of structures: clean errors or bounded reads") {
    LogFixture f;
    auto e = log_entry(5, 0, kGuid, {{f.host, f.sector(0x22)}}, {{f.host + 8192, 8192}}, 0, 0);
    f.place(0, e);
    set_log_guid(f.img, kGuid);
    const auto base = f.img;
    uint32_t seed = 12345;
    auto rnd = [&] { seed = seed * 1103515245 + 12345; return seed >> 8; };
    // Where the structures are: headers, region tables, log entry, metadata table and items, BAT.
    const std::vector<std::pair<size_t, size_t>> areas = {
        {64 << 10, 96}, {128 << 10, 96}, {192 << 10, 96}, {256 << 10, 96}, {MiB, 12288},
        {kMeta, 256}, {kItems, 64}, {kBat, 64}};
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
            fix_headers(img);
            fix_regions(img);
        }
        MemoryFileSystem fs;
        fs.add("img.vhdx", img);
        vdisk::fuzz::exercise(reg, fs, "img.vhdx", vdisk::fuzz::fuzz_options("vhdx"), 1 << 20);
    }
}

TEST_CASE("4096-byte logical sectors: reads and read-modify-write") {
    auto img = small_image(16 * MiB, {{0, vt::pattern(2 * MiB, 40)}});
    put32(img, kItems + 32, 4096);
    put32(img, kItems + 36, 4096);
    MemoryFileSystem fs;
    auto expect = vt::pattern(2 * MiB, 40);
    expect.resize(16 * MiB, 0);
    {
        auto rw = open_mem(fs, img, true);
        REQUIRE_MESSAGE(rw.ok(), (rw.ok() ? "" : rw.error().to_string()));
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

TEST_CASE("log: a log full of plausible entry headers is bounded work") {
    LogFixture f;
    for (size_t pos = 0; pos < MiB; pos += 4096) {
        std::vector<uint8_t> h(64, 0);
        put32(h, 0, 0x65676f6c);
        put32(h, 8, static_cast<uint32_t>(MiB));
        put64(h, 16, 1 + pos / 4096);
        std::memcpy(h.data() + 32, kGuid, 16);
        f.place(pos, h);
    }
    set_log_guid(f.img, kGuid);
    CHECK(open_error(f.img) == ErrorCode::corrupt);
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
        REQUIRE(rw->device->write((6ull << 30) - 4096, bytes_of(4096, 0x4d)).ok());
        REQUIRE(rw->device->close().ok());
    }
    auto info = vt::run("qemu-img info --output=json " + img);
    CHECK(info.output.find("\"virtual-size\": 6442450944") != std::string::npos);
    CHECK(vt::run("qemu-img check -f vhdx " + img).status == 0);
    auto r = vt::run("qemu-io -f vhdx -c 'read -P 0x3c 10M 512K' -c 'read -P 0 10752K 512K' -c 'read -P 0 11M 1M' "
                     "-c 'read -P 0x4d 6442446848 4096' " + img);
    CHECK_MESSAGE((r.status == 0 && r.output.find("verification failed") == std::string::npos), r.output);
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
        if (std::string(name) == "parent.vhdx") REQUIRE((*dev)->write(voff, bytes_of(65536, 0x5a)).ok());
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
    put32(child, e + 16, (64 << 10) + 64);
    put32(child, e + 20, static_cast<uint32_t>(loc.size()));
    put16(child, kMeta + 10, 6);
    uint64_t host = (child.size() + MiB - 1) / MiB * MiB, sb = host + bs;
    put64(child, kBat + 21 * 8, host | 7);
    put64(child, kBat + 33 * 8, sb | 6);
    vt::write_file(tmp / "child.vhdx", child);
    std::filesystem::resize_file(tmp / "child.vhdx", sb + MiB);
    {
        auto f = fs->open("child.vhdx", Access::read_write);
        REQUIRE(f.ok());
        REQUIRE((*f)->write_at(host, bytes_of(4096, 0xc1)).ok());
        std::vector<uint8_t> bits(1, 0xff);  // sectors 0-7 of block 20 = bits 4 * 524288 .. +7
        REQUIRE((*f)->write_at(sb + 4 * 524288 / 8, bits).ok());
    }
    auto img = vt::open_host(reg, tmp / "child.vhdx");
    REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
    CHECK(read_dev(*img->device, voff, 4096) == bytes_of(4096, 0xc1));
    CHECK(read_dev(*img->device, voff + 4096, 61440) == bytes_of(61440, 0x5a));
    CHECK(read_dev(*img->device, voff + 65536, 4096) == bytes_of(4096, 0));
    CHECK(read_dev(*img->device, voff - 4096, 4096) == bytes_of(4096, 0));
    auto x = img->device->block_status(voff, bs);
    REQUIRE(x.ok());
    CHECK(x->kind == ExtentKind::data);
    CHECK(x->length == 4096);
    CHECK(*x->host_offset == host);
    auto chk = img->format->check(*img->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}

TEST_CASE("check -r all resets unusable BAT entries on a writable image") {
    auto img = small_image(16 * MiB, {{0, bytes_of(MiB, 1)}, {MiB, bytes_of(MiB, 2)}});
    put64(img, kBat + 8, (1ull << 40) | 6);   // past EOF
    put64(img, kBat + 16, 5);                 // invalid state
    put64(img, kBat + 24, 2 | (1ull << 5));   // reserved bit
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
    CHECK(read_dev(*r->device, 0, 16) == bytes_of(16, 1));
    CHECK(read_dev(*r->device, MiB, 16) == bytes_of(16, 0));
    CHECK(read_dev(*r->device, 2 * MiB, 16) == bytes_of(16, 0));
}

// ---------------------------------------------------------------------------------------------------------
// Metadata through the log: vdisk's own entries, crash states, and what qemu-img makes of them.
namespace {

bool log_guids_clear(const std::vector<uint8_t>& img) {
    for (size_t at : {size_t(64 << 10), size_t(128 << 10)})
        if (!std::all_of(img.begin() + at + 48, img.begin() + at + 64, [](uint8_t b) { return b == 0; })) return false;
    return true;
}
std::vector<uint8_t> read_head(const std::string& path, size_t n) {
    std::vector<uint8_t> head(n);
    auto f = make_posix_file_system()->open(path, Access::read_only);
    REQUIRE(f.ok());
    REQUIRE(read_exact(**f, 0, head).ok());
    return head;
}
bool log_guids_clear(const std::string& path) { return log_guids_clear(read_head(path, 192 << 10)); }
// The LogGuid of the current header (zero: the log is empty).
std::vector<uint8_t> current_log_guid(const std::vector<uint8_t>& img) {
    size_t cur = le64(img, (128 << 10) + 8) > le64(img, (64 << 10) + 8) ? (128 << 10) : (64 << 10);
    return std::vector<uint8_t>(img.begin() + cur + 48, img.begin() + cur + 64);
}
bool guid_is_zero_bytes(const std::vector<uint8_t>& g) {
    return std::all_of(g.begin(), g.end(), [](uint8_t b) { return b == 0; });
}

// Files opened or created through it tell `on_sync` about every sync and `on_write` about every write (or
// hole punched: `data` null) before it happens, with the number of log entries written so far: writes into
// the log region that start with an entry signature. Snapshots taken there are the states a crash can leave.
class CrashFs final : public FileSystem {
public:
    using SyncHook = std::function<void(File& f, int entries)>;
    using WriteHook = std::function<void(File& f, int entries, uint64_t off, uint64_t len, const uint8_t* data)>;
    CrashFs(FileSystem& base, uint64_t log_begin, uint64_t log_end) : base_(base), log_begin_(log_begin), log_end_(log_end) {}
    SyncHook on_sync;
    WriteHook on_write;

    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override {
        VDISK_ASSIGN(auto f, base_.open(name, access));
        return std::unique_ptr<File>(std::make_unique<Wrapped>(std::move(f), *this));
    }
    Result<std::unique_ptr<File>> create(std::string_view name, bool exclusive) override {
        VDISK_ASSIGN(auto f, base_.create(name, exclusive));
        return std::unique_ptr<File>(std::make_unique<Wrapped>(std::move(f), *this));
    }
    Status rename(std::string_view a, std::string_view b) override { return base_.rename(a, b); }
    Status remove(std::string_view n) override { return base_.remove(n); }
    bool exists(std::string_view n) override { return base_.exists(n); }
    Result<std::vector<std::string>> list(std::string_view dir) override { return base_.list(dir); }

private:
    class Wrapped final : public File {
    public:
        Wrapped(std::unique_ptr<File> f, CrashFs& fs) : f_(std::move(f)), fs_(fs) {}
        Result<size_t> read_at(uint64_t o, std::span<uint8_t> b) override { return f_->read_at(o, b); }
        Status write_at(uint64_t o, std::span<const uint8_t> b) override {
            if (fs_.on_write) fs_.on_write(*f_, entries_, o, b.size(), b.data());
            if (o >= fs_.log_begin_ && o < fs_.log_end_ && b.size() >= 4 && std::memcmp(b.data(), "loge", 4) == 0)
                ++entries_;
            return f_->write_at(o, b);
        }
        Result<uint64_t> size() override { return f_->size(); }
        Status resize(uint64_t n) override { return f_->resize(n); }
        Status sync() override {
            VDISK_TRY(f_->sync());
            if (fs_.on_sync) fs_.on_sync(*f_, entries_);
            return ok();
        }
        Status punch_hole(uint64_t o, uint64_t n) override {
            if (fs_.on_write) fs_.on_write(*f_, entries_, o, n, nullptr);
            return f_->punch_hole(o, n);
        }
        Status allocate(uint64_t o, uint64_t n) override { return f_->allocate(o, n); }
        Result<std::optional<DataRange>> next_data(uint64_t o) override { return f_->next_data(o); }
        std::optional<uint64_t> allocated_size() override { return f_->allocated_size(); }
        const std::string& name() const override { return f_->name(); }
        FileIdentity identity() const override { return f_->identity(); }

    private:
        std::unique_ptr<File> f_;
        CrashFs& fs_;
        int entries_ = 0;
    };
    FileSystem& base_;
    uint64_t log_begin_, log_end_;
};

// The order a commit must keep (default layout, log at 1 MiB): the payload synced before the entry that
// references it, the entry synced before its pages are written in place.
struct OrderCheck {
    uint64_t log_end = 2 * MiB;
    bool payload_unsynced = false, entry_unsynced = false;
    int payload_before_entry = 0, applied_before_entry = 0;
    void write(uint64_t off, const uint8_t* data, uint64_t len) {
        bool in_log = off >= MiB && off < log_end, in_headers = off < MiB;
        if (in_log && data && len >= 4 && std::memcmp(data, "loge", 4) == 0 && payload_unsynced) ++payload_before_entry;
        if (!in_log && !in_headers) {
            if (entry_unsynced) ++applied_before_entry;
            payload_unsynced = true;
        }
        if (in_log) entry_unsynced = true;
    }
    void sync() { payload_unsynced = entry_unsynced = false; }
    void require_kept() const {
        CHECK_MESSAGE(payload_before_entry == 0, "log entry written before the payload was synced");
        CHECK_MESSAGE(applied_before_entry == 0, "metadata applied before its log entry was synced");
    }
};

std::vector<uint8_t> file_bytes(File& f) {
    auto n = f.size();
    REQUIRE(n.ok());
    std::vector<uint8_t> b(static_cast<size_t>(*n));
    REQUIRE(read_exact(f, 0, b).ok());
    return b;
}

// Where the newest log entry with the current LogGuid starts in a snapshot (relative to the log), or -1.
long find_entry(const std::vector<uint8_t>& img, uint64_t log_len = MiB) {
    auto guid = current_log_guid(img);
    long best = -1;
    uint64_t best_seq = 0;
    for (uint64_t pos = 0; pos < log_len; pos += 4096)
        if (le32(img, MiB + pos) == 0x65676f6c && std::memcmp(img.data() + MiB + pos + 32, guid.data(), 16) == 0 &&
            le64(img, MiB + pos + 16) > best_seq) {
            best = static_cast<long>(pos);
            best_seq = le64(img, MiB + pos + 16);
        }
    return best;
}

}  // namespace

TEST_CASE("log writes: vdisk-written images have an empty log after close, qemu-img check and compare agree") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    // A qemu-made source whose writes span three BAT pages (1 MiB blocks: 512 entries a page).
    std::string src = tmp / "src.vhdx";
    REQUIRE(vt::run("qemu-img create -f vhdx -o block_size=1M " + src + " 1200M").status == 0);
    auto w = vt::run("qemu-io -f vhdx -c 'write -P 0xa1 0 3M' -c 'write -P 0xb2 600M 1536K' -c 'write -P 0xc3 1100M 512' "
                     "-c 'write -P 0xd4 1199M 1M' " + src);
    REQUIRE_MESSAGE(w.status == 0, w.output);
    convert_to_vhdx_1m(reg, *fs, "src.vhdx", "vhdx", "dst.vhdx");
    CHECK(log_guids_clear(tmp / "dst.vhdx"));
    auto c = vt::run("qemu-img check -f vhdx " + tmp / "dst.vhdx");
    CHECK_MESSAGE(c.status == 0, c.output);
    auto cmp = vt::run("qemu-img compare -f vhdx -F vhdx " + src + " " + tmp / "dst.vhdx");
    CHECK_MESSAGE(cmp.status == 0, cmp.output);

    // Writes through the library into a fresh image, with flushes in between: every flush leaves the log
    // empty again (qemu-img refuses read-only opens of an image whose log holds entries).
    CreateOptions co;
    co.size = 1200 * MiB;
    co.values = *parse_option_list("block_size=1M");
    auto dev = create_image(reg, *fs, "w.vhdx", "vhdx", co);
    REQUIRE(dev.ok());
    CreateOptions ro;
    ro.size = co.size;
    auto raw = create_image(reg, *fs, "w.raw", "raw", ro);
    REQUIRE(raw.ok());
    uint32_t seed = 1;
    for (uint64_t off : std::vector<uint64_t>{0, 700 * MiB + 4096, 5 * MiB - 512, 1100 * MiB, 300 * MiB, 1200 * MiB - 8192}) {
        auto data = vt::pattern(8192, seed++);
        REQUIRE((*dev)->write(off, data).ok());
        REQUIRE((*raw)->write(off, data).ok());
        if (seed % 2) {
            REQUIRE((*dev)->flush().ok());
            CHECK(log_guids_clear(tmp / "w.vhdx"));
            auto info = vt::run("qemu-img info -f vhdx " + tmp / "w.vhdx");
            CHECK_MESSAGE(info.status == 0, info.output);
        }
    }
    REQUIRE((*dev)->write_zeroes(900 * MiB, 2 * MiB).ok());
    REQUIRE((*raw)->write_zeroes(900 * MiB, 2 * MiB).ok());
    // Growing logs the new BAT entries and then the size item.
    REQUIRE((*dev)->resize(1300 * MiB).ok());
    REQUIRE((*raw)->resize(1300 * MiB).ok());
    auto tail = vt::pattern(4096, 99);
    REQUIRE((*dev)->write(1250 * MiB, tail).ok());
    REQUIRE((*raw)->write(1250 * MiB, tail).ok());
    REQUIRE((*dev)->close().ok());
    REQUIRE((*raw)->close().ok());
    CHECK(log_guids_clear(tmp / "w.vhdx"));
    c = vt::run("qemu-img check -f vhdx " + tmp / "w.vhdx");
    CHECK_MESSAGE(c.status == 0, c.output);
    cmp = vt::run("qemu-img compare -f vhdx -F raw " + tmp / "w.vhdx" + " " + tmp / "w.raw");
    CHECK_MESSAGE(cmp.status == 0, cmp.output);
}

namespace {
struct Fill {
    uint64_t off;
    size_t len;
    uint8_t v;
};
std::string qemu_reads(const std::vector<Fill>& fills, bool expect_zero) {
    std::string cmds;
    for (auto& f : fills)
        cmds += " -c 'read -P " + std::to_string(expect_zero ? 0 : f.v) + " " + std::to_string(f.off) + " " +
                std::to_string(f.len) + "'";
    return cmds;
}
// qemu-img check -r all replays a pending log (qemu refuses read-only opens while one is pending); then
// qemu-io must read `now` and zeros in `absent`.
void qemu_replays_to(const std::vector<uint8_t>& img, const std::vector<Fill>& now, const std::vector<Fill>& absent) {
    vt::TempDir tmp;
    std::string p = tmp / "s.vhdx";
    vt::write_file(p, img);
    auto c = vt::run("qemu-img check -r all -f vhdx " + p);
    CHECK_MESSAGE(c.status == 0, c.output);
    // Nothing left to replay: a read-only open works. (With LogGuid set but no valid entry qemu leaves the
    // GUID alone, so the header itself is not the test.)
    auto info = vt::run("qemu-img info -f vhdx " + p);
    CHECK_MESSAGE(info.status == 0, info.output);
    auto r = vt::run("qemu-io -f vhdx" + qemu_reads(now, false) + qemu_reads(absent, true) + " " + p);
    CHECK_MESSAGE((r.status == 0 && r.output.find("verification failed") == std::string::npos), r.output);
    auto k = vt::run("qemu-img check -f vhdx " + p);
    CHECK_MESSAGE(k.status == 0, k.output);
}
bool reads_as(BlockDevice& dev, const Fill& f, bool zero) {
    return read_dev(dev, f.off, f.len) == bytes_of(f.len, zero ? 0 : f.v);
}
}  // namespace

TEST_CASE("log crash states: before the entry is flushed the old metadata, after it the new, for vdisk and qemu") {
    // 2 GiB with 1 MiB blocks: the BAT entries of blocks 0, 700 and 1500 lie in three different pages.
    auto reg = make_reg();
    MemoryFileSystem mem;
    CrashFs fs(mem, MiB, 2 * MiB);
    CreateOptions co;
    co.size = 2ull << 30;
    co.values = *parse_option_list("block_size=1M");
    auto dev = create_image(reg, fs, "img.vhdx", "vhdx", co);
    REQUIRE(dev.ok());
    const Fill a{0, 65536, 0x11}, b{700 * MiB + 4096, 8192, 0x22}, c{1500 * MiB, MiB, 0x33};
    REQUIRE((*dev)->write(a.off, bytes_of(a.len, a.v)).ok());
    REQUIRE((*dev)->flush().ok());
    // From here on, every write and sync of the commit that makes b and c visible is a possible crash point.
    // Ordered states: everything written so far reached the disk. Unordered ones: what the last sync made
    // durable plus just the write about to happen (the disk may persist unsynced writes in any order).
    struct State {
        std::vector<uint8_t> img;
        int entries;
        bool at_sync;
        bool ordered = true;
    };
    std::vector<State> states;
    std::vector<uint8_t> durable = *mem.content("img.vhdx");
    OrderCheck order;
    fs.on_write = [&](File& f, int n, uint64_t off, uint64_t len, const uint8_t* data) {
        states.push_back({file_bytes(f), n, false});
        bool in_log = off >= MiB && off < 2 * MiB;
        bool entry = in_log && data && len >= 4 && std::memcmp(data, "loge", 4) == 0;
        auto alone = durable;
        if (alone.size() < off + len) alone.resize(off + len, 0);
        if (data) std::memcpy(alone.data() + off, data, len);
        else std::fill_n(alone.begin() + static_cast<std::ptrdiff_t>(off), len, 0);
        states.push_back({std::move(alone), n + (entry ? 1 : 0), false, false});
        order.write(off, data, len);
    };
    fs.on_sync = [&](File& f, int n) {
        durable = file_bytes(f);
        states.push_back({durable, n, true});
        order.sync();
    };
    REQUIRE((*dev)->write(b.off, bytes_of(b.len, b.v)).ok());
    REQUIRE((*dev)->write(c.off, bytes_of(c.len, c.v)).ok());
    REQUIRE((*dev)->close().ok());
    dev->reset();
    fs.on_write = nullptr;
    fs.on_sync = nullptr;
    order.require_kept();
    REQUIRE(states.size() > 8);
    CHECK(log_guids_clear(states.back().img));

    // The state right after the entry is flushed, before any page of it is applied.
    int dirty = -1;
    for (size_t i = 0; i < states.size(); ++i)
        if (states[i].at_sync && states[i].entries == 2) {
            dirty = static_cast<int>(i);
            break;
        }
    REQUIRE(dirty >= 0);
    const auto& d = states[static_cast<size_t>(dirty)].img;
    REQUIRE(find_entry(d) >= 0);
    REQUIRE((le64(d, kBat + 700 * 8) & 7) != 6);  // the BAT on disk does not have the new blocks yet

    bool seen_new = false;
    for (size_t i = 0; i < states.size(); ++i) {
        INFO("state " << i << (states[i].at_sync ? " (sync)" : states[i].ordered ? " (before a write)" : " (one write)"));
        const auto& img = states[i].img;
        bool is_new;
        {
            MemoryFileSystem m;
            auto ro = open_mem(m, img);
            REQUIRE_MESSAGE(ro.ok(), (ro.ok() ? "" : ro.error().to_string()));
            CHECK(reads_as(*ro->device, a, false));
            is_new = reads_as(*ro->device, b, false);
            CHECK(reads_as(*ro->device, b, !is_new));
            CHECK(reads_as(*ro->device, c, !is_new));
            CHECK(m.content("img.vhdx") == img);
        }
        // New exactly when the entry made it to the disk or its pages did (after which LogGuid is cleared);
        // among the ordered states, once new stays new.
        bool bat_new = (le64(img, kBat + 700 * 8) & 7) == 6 && (le64(img, kBat + 1500 * 8) & 7) == 6;
        CHECK(is_new == (find_entry(img) >= 0 || bat_new));
        if (states[i].ordered) {
            CHECK(is_new == (states[i].entries == 2 && (i >= static_cast<size_t>(dirty))));
            CHECK((!seen_new || is_new));
            seen_new = seen_new || is_new;
        }
        // Read-write: replayed into the file, the log emptied, and the same content after reopening.
        MemoryFileSystem m;
        {
            auto rw = open_mem(m, img, true);
            REQUIRE(rw.ok());
            REQUIRE(rw->device->close().ok());
        }
        auto replayed = *m.content("img.vhdx");
        CHECK(guid_is_zero_bytes(current_log_guid(replayed)));
        MemoryFileSystem m2;
        auto again = open_mem(m2, replayed);
        REQUIRE(again.ok());
        CHECK(reads_as(*again->device, b, !is_new));
        CHECK(reads_as(*again->device, c, !is_new));
        auto chk = again->format->check(*again->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 0);
        // qemu replays whatever log the crash left (qemu-img check -r all), for every state with one.
        if (!guid_is_zero_bytes(current_log_guid(img)) && vt::need_qemu()) {
            if (is_new) qemu_replays_to(img, {a, b, c}, {});
            else qemu_replays_to(img, {a}, {b, c});
        }
    }
    CHECK(seen_new);

    if (vt::need_qemu()) {
        // qemu-img agrees that the dirty state has a log to replay: it refuses to open it read-only.
        vt::TempDir tmp;
        vt::write_file(tmp / "d.vhdx", d);
        auto info = vt::run("qemu-img convert -O raw " + tmp / "d.vhdx" + " " + tmp / "d.raw");
        CHECK_MESSAGE(info.status != 0, info.output);
    }

    SUBCASE("an entry with a bad checksum or torn off at its end is ignored: the old state reads") {
        long pos = find_entry(d);
        uint32_t len = le32(d, MiB + static_cast<size_t>(pos) + 8);
        REQUIRE(len >= 8192);
        for (int variant = 0; variant < 3; ++variant) {
            INFO("variant " << variant);
            auto img = d;
            size_t at = MiB + static_cast<size_t>(pos);
            if (variant == 0) img[at + 4096 + 100] ^= 1;                          // a data sector's byte
            if (variant == 1) std::fill_n(img.begin() + at + len - 4096, 4096, 0);  // last sector never written
            // A descriptor's file offset. qemu rejects the whole image then (it validates descriptors before
            // the checksum), so this one is for vdisk only.
            if (variant == 2) img[at + 64 + 16] ^= 0x10;
            {
                MemoryFileSystem m;
                auto ro = open_mem(m, img);
                REQUIRE(ro.ok());
                CHECK(!ro->device->info().dirty);
                CHECK(reads_as(*ro->device, a, false));
                CHECK(reads_as(*ro->device, b, true));
                CHECK(reads_as(*ro->device, c, true));
            }
            MemoryFileSystem m;
            {
                auto rw = open_mem(m, img, true);
                REQUIRE(rw.ok());
                CHECK(reads_as(*rw->device, b, true));
                REQUIRE(rw->device->close().ok());
            }
            CHECK(guid_is_zero_bytes(current_log_guid(*m.content("img.vhdx"))));
            if (variant < 2 && vt::need_qemu()) qemu_replays_to(img, {a}, {b, c});
        }
    }
}

TEST_CASE("log wraps within a session: entries straddle the end of the buffer; vdisk and qemu replay the newest") {
    // 200 GiB of 1 MiB blocks (sparse on the host). Each commit gathers one entry's worth of dirty BAT pages
    // (126, one descriptor sector): block k of page 0, which every commit rewrites, plus 125 pages of their
    // own. Entries are 127 sectors; in the 256-sector default log the third one wraps around the end.
    auto reg = make_reg();
    vt::TempDir tmp;
    auto host = make_posix_file_system(tmp.path);
    CrashFs fs(*host, MiB, 2 * MiB);
    CreateOptions co;
    co.size = 200ull << 30;
    co.values = *parse_option_list("block_size=1M");
    auto dev = create_image(reg, fs, "big.vhdx", "vhdx", co);
    REQUIRE(dev.ok());
    std::vector<Fill> fills;
    uint64_t page = 1;
    bool taken = false;
    OrderCheck order;  // the later commits of the session have no header update whose sync would hide a gap
    fs.on_write = [&](File&, int, uint64_t off, uint64_t len, const uint8_t* data) { order.write(off, data, len); };
    fs.on_sync = [&](File&, int entries) {
        order.sync();
        if (entries == 3 && !taken) {
            taken = true;
            auto r = vt::run("cp --sparse=always " + tmp / "big.vhdx" + " " + tmp / "snap.vhdx");
            CHECK_MESSAGE(r.status == 0, r.output);
        }
    };
    std::vector<Fill> after;  // written after the snapshot's entry: not visible in it
    for (uint64_t k = 0; k < 4; ++k) {
        auto& into = k < 3 ? fills : after;
        Fill f{k * MiB + 512 * k, 4096, static_cast<uint8_t>(0x40 + k)};
        REQUIRE((*dev)->write(f.off, bytes_of(f.len, f.v)).ok());
        into.push_back(f);
        for (int j = 0; j < (k < 3 ? 125 : 10); ++j, ++page) {
            Fill g{page * 512 * MiB + 8192, 4096, static_cast<uint8_t>(0x80 | (page % 127))};
            REQUIRE((*dev)->write(g.off, bytes_of(g.len, g.v)).ok());
            into.push_back(g);
        }
    }
    REQUIRE(taken);
    REQUIRE((*dev)->close().ok());
    dev->reset();
    order.require_kept();
    CHECK(log_guids_clear(tmp / "big.vhdx"));

    auto snap = read_head(tmp / "snap.vhdx", 2 * MiB);  // headers and log
    // The entry that was flushed last starts near the end of the log and continues at its start.
    long pos = find_entry(snap);
    REQUIRE(pos > 0);
    uint32_t len = le32(snap, MiB + static_cast<size_t>(pos) + 8);
    CHECK(static_cast<uint64_t>(pos) + len > MiB);
    snap = {};

    auto verify = [&](BlockDevice& d) {
        for (auto& f : fills) REQUIRE(reads_as(d, f, false));
        for (auto& f : after) REQUIRE(reads_as(d, f, true));
    };
    {
        auto ro = vt::open_host(reg, tmp / "snap.vhdx");
        REQUIRE_MESSAGE(ro.ok(), (ro.ok() ? "" : ro.error().to_string()));
        CHECK(ro->device->info().dirty);
        verify(*ro->device);
    }
    REQUIRE(vt::run("cp --sparse=always " + tmp / "snap.vhdx" + " " + tmp / "rw.vhdx").status == 0);
    {
        auto rw = vt::open_host(reg, tmp / "rw.vhdx", "", true);
        REQUIRE(rw.ok());
        verify(*rw->device);
        REQUIRE(rw->device->close().ok());
    }
    CHECK(log_guids_clear(tmp / "rw.vhdx"));
    if (vt::need_qemu()) {
        std::string p = tmp / "snap.vhdx";
        CHECK(vt::run("qemu-img info -f vhdx " + p).status != 0);  // pending log: refused read-only
        auto c = vt::run("qemu-img check -r all -f vhdx " + p);
        CHECK_MESSAGE(c.status == 0, c.output);
        CHECK(log_guids_clear(p));
        auto r = vt::run("qemu-io -f vhdx" + qemu_reads(fills, false) + qemu_reads(after, true) + " " + p);
        CHECK_MESSAGE((r.status == 0 && r.output.find("verification failed") == std::string::npos),
                      r.output.substr(0, 2000));
        auto q = vt::run("qemu-io -f vhdx" + qemu_reads(fills, false) + qemu_reads(after, false) + " " + tmp / "big.vhdx");
        CHECK_MESSAGE((q.status == 0 && q.output.find("verification failed") == std::string::npos),
                      q.output.substr(0, 2000));
        CHECK(vt::run("qemu-img check -f vhdx " + tmp / "big.vhdx").status == 0);
    }
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
    REQUIRE_MESSAGE(ro.ok(), (ro.ok() ? "" : ro.error().to_string()));
    auto& budget = *ro->device->budget();
    CHECK(budget.work_done() >= n);          // the descriptors were counted once, at open
    CHECK(budget.memory_used() >= n * 32);   // and the replay is charged
    uint64_t before = budget.noted();
    std::vector<uint8_t> buf(4096);
    for (uint64_t off = 0; off < ro->device->size(); off += buf.size()) REQUIRE(ro->device->read(off, buf).ok());
    CHECK(read_dev(*ro->device, 0, 4096) == f.sector(0x22));
    CHECK(read_dev(*ro->device, 4096, 4096) == f.sector(0x11));
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

TEST_CASE("create logical_sector_size=4096 (4Kn): written, read back, vhdiinfo sees 4096-byte sectors") {
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system();
    std::string img = tmp / "k.vhdx";
    CreateOptions co;
    co.size = 64 * MiB;
    co.values = {{"logical_sector_size", "4096"}};
    auto dev = create_image(reg, *fs, img, "vhdx", co);
    REQUIRE_MESSAGE(dev.ok(), (dev.ok() ? "" : dev.error().to_string()));
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
    put32(child, e + 16, (64 << 10) + 64);
    put32(child, e + 20, static_cast<uint32_t>(loc.size()));
    put16(child, kMeta + 10, 6);
    const uint64_t host = (child.size() + MiB - 1) / MiB * MiB, sb = host + size;
    child.resize(sb + MiB, 0);
    std::memcpy(child.data() + host, mine.data(), size);
    std::vector<uint8_t> expect = parent_data;
    for (uint64_t s = 0; s < sectors; ++s) {
        if (!present(s)) continue;
        child[sb + s / 8] |= static_cast<uint8_t>(1 << (s % 8));
        std::memcpy(expect.data() + s * 512, mine.data() + s * 512, 512);
    }
    put64(child, kBat, host | 7);          // PARTIALLY_PRESENT
    put64(child, kBat + 128 * 8, sb | 6);  // chunk ratio 2^23 * 512 / 32 MiB = 128: the bitmap entry
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
