// SPDX-License-Identifier: Apache-2.0
// VDI backend: corpus images, qemu interop (read, create, write, check), differencing, malformed input.
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "util/bytes.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

constexpr uint64_t MiB = 1ull << 20;
constexpr uint64_t GiB = 1ull << 30;

// Header field offsets (pre-header 72 bytes + VDIHEADER1).
constexpr size_t kVersion = 0x44, kHeaderSize = 0x48, kType = 0x4c, kOffBmap = 0x154, kOffData = 0x158,
                 kSectorSz = 0x168, kDiskSize = 0x170, kBlockSize = 0x178, kBlockExtra = 0x17c, kBlocks = 0x180,
                 kAllocated = 0x184, kUuidCreate = 0x188, kUuidModify = 0x198, kUuidLink = 0x1a8,
                 kUuidParentModify = 0x1b8;

Registry make_reg() { return vt::registry_of(make_raw_format, make_vdi_format); }

void verify(const std::string& rel) {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    vt::verify_manifest_entry(reg, *root, vt::manifest_entry(*root, rel), tmp.path, "vdi");
}

uint32_t le32(const std::vector<uint8_t>& b, size_t at) { uint32_t v; std::memcpy(&v, b.data() + at, 4); return v; }
void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); }
void put64(std::vector<uint8_t>& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); }

Result<OpenedImage> open_mem(const Registry& reg, MemoryFileSystem& fs, const std::string& name, bool rw = false,
                             Limits limits = {}) {
    OpenOptions o;
    o.read_write = rw;
    o.limits = limits;
    return open_image(reg, fs, name, o);
}

// A dynamic image made by vdisk with writes applied, as bytes.
std::vector<uint8_t> small_image(uint64_t size, std::vector<std::pair<uint64_t, std::vector<uint8_t>>> writes,
                                 bool is_static = false) {
    auto reg = make_reg();
    MemoryFileSystem fs;
    CreateOptions co;
    co.size = size;
    if (is_static) co.set("static", "on");
    auto dev = create_image(reg, fs, "x.vdi", "vdi", co);
    REQUIRE(dev.ok());
    for (auto& [off, data] : writes) REQUIRE((*dev)->write(off, data).ok());
    REQUIRE((*dev)->close().ok());
    return *fs.content("x.vdi");
}

}  // namespace

TEST_CASE("corpus: qemu-written dynamic image with a leading hole") { verify("real/dissect.hypervisor/basic.vdi.gz"); }
TEST_CASE("corpus: VirtualBox 8 GiB dynamic image") { verify("real/pyvbox/TestHD.vdi.xz"); }
TEST_CASE("corpus: Sun VirtualBox image with no block allocated") { verify("real/pyvbox/TestHD-2009.vdi.xz"); }

TEST_CASE("probe, info and block status of a qemu-made image") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "q.vdi";
    REQUIRE(vt::run("qemu-img create -f vdi " + img + " 10M").status == 0);
    auto w = vt::run("qemu-io -f vdi -c 'write -P 0xab 1M 64k' -c 'write -P 0x5c 3584k 1M' -c 'write -P 0x11 "
                     "10484736 512' " + img);
    REQUIRE_MESSAGE(w.status == 0, w.output);
    auto want = vt::qemu_read_raw(img, "vdi", tmp.path);
    auto dev = vt::open_host(reg, img);
    REQUIRE(dev.ok());
    CHECK(std::string(dev->format->name()) == "vdi");
    CHECK(vt::read_all(*dev->device) == want);
    auto info = dev->device->info();
    CHECK(info.virtual_size == 10 * MiB);
    CHECK(info.cluster_size == 1 * MiB);
    const Json* data = info.format_specific.get("data");
    REQUIRE(data);
    CHECK(*data->get("image-type")->as_string() == "normal");
    CHECK(*data->get("block-size")->as_uint() == 1 * MiB);
    CHECK(*data->get("blocks-allocated")->as_uint() == 4);
    // qemu-img info shows the same UUID (it prints none, but the file has it in Microsoft byte order).
    auto bytes = vt::read_file(img);
    CHECK(*data->get("uuid")->as_string() == util::guid_to_string(bytes.data() + kUuidCreate));
    // Block 0 is free, block 1 allocated (slot 0), blocks 3 and 4 allocated in consecutive slots.
    auto e = dev->device->block_status(0, 10 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::unallocated);
    CHECK(e->length == 1 * MiB);
    e = dev->device->block_status(1 * MiB + 4096, 10 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::data);
    CHECK(e->length == 1 * MiB - 4096);
    CHECK(e->host_offset == le32(bytes, kOffData) + 4096);
    e = dev->device->block_status(3 * MiB, 10 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::data);
    CHECK(e->length == 2 * MiB);  // slots 1 and 2 are contiguous
    auto chk = dev->format->check(*dev->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}

namespace {
// Apply the same writes to a vdisk VDI and a raw file, then let qemu-img check and compare them.
void write_and_compare(bool is_static, uint64_t size, const std::vector<std::pair<uint64_t, std::vector<uint8_t>>>& writes,
                       const std::vector<std::pair<uint64_t, uint64_t>>& zeroes = {}, bool full = true) {
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    CreateOptions co;
    co.size = size;
    co.set("static", is_static ? "on" : "off");
    auto dev = create_image(reg, *fs, "out.vdi", "vdi", co);
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    CreateOptions ro;
    ro.size = size;
    auto raw = create_image(reg, *fs, "ref.raw", "raw", ro);
    REQUIRE(raw.ok());
    for (auto& [off, data] : writes) {
        REQUIRE((*dev)->write(off, data).ok());
        REQUIRE((*raw)->write(off, data).ok());
    }
    for (auto& [off, len] : zeroes) {
        REQUIRE((*dev)->write_zeroes(off, len).ok());
        REQUIRE((*raw)->write_zeroes(off, len, false).ok());
    }
    REQUIRE((*dev)->close().ok());
    REQUIRE((*raw)->close().ok());
    dev->reset();
    raw->reset();
    auto c = vt::run("qemu-img check -f vdi " + tmp / "out.vdi");
    CHECK_MESSAGE(c.status == 0, c.output);
    if (full) {
        auto cmp = vt::run("qemu-img compare -f vdi -F raw " + tmp / "out.vdi" + " " + tmp / "ref.raw");
        CHECK_MESSAGE(cmp.status == 0, cmp.output);
    } else {
        std::string cmds;
        for (auto& [off, data] : writes) {
            cmds += " -c 'read -P " + std::to_string(data[0]) + " " + std::to_string(off) + " " +
                    std::to_string(data.size()) + "'";
            cmds += " -c 'read -P 0 " + std::to_string(off - 65536) + " 65536'";
        }
        auto r = vt::run("qemu-io -f vdi" + cmds + " " + tmp / "out.vdi");
        CHECK_MESSAGE((r.status == 0 && r.output.find("verification failed") == std::string::npos), r.output);
    }
    auto info = vt::run("qemu-img info --output=json " + tmp / "out.vdi");
    CHECK(info.output.find("\"virtual-size\": " + std::to_string(size)) != std::string::npos);
    auto back = vt::open_host(reg, tmp / "out.vdi");
    REQUIRE(back.ok());
    auto chk = back->format->check(*back->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}
}  // namespace

TEST_CASE("create and write: dynamic, unaligned writes, zero marking") {
    if (!vt::need_qemu()) return;
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> w = {
        {0, vt::pattern(65536, 1)},
        {3 * MiB - 100, vt::pattern(300, 2)},      // unaligned, crosses a block boundary
        {9 * MiB, vt::pattern(2 * MiB + 512, 3)},  // several blocks
        {5 * MiB, vt::bytes(1 * MiB, 0)},               // zeros allocate nothing
        {16 * MiB - 512, vt::pattern(512, 4)},     // the last sector
    };
    write_and_compare(false, 16 * MiB, w);
    // Zeroing whole blocks marks them ZERO, partial ones write zeros; later writes reuse freed slots.
    write_and_compare(false, 16 * MiB, w, {{9 * MiB, 1 * MiB}, {10 * MiB + 100, 4096}, {0, 1 * MiB}});
    // A size that is not a whole number of blocks.
    write_and_compare(false, 5 * MiB + 512 * 3, {{5 * MiB, vt::pattern(1536, 9)}, {4 * MiB, vt::pattern(99, 8)}});
}

TEST_CASE("create and write: static image") {
    if (!vt::need_qemu()) return;
    write_and_compare(true, 8 * MiB, {{100, vt::pattern(5000, 5)}, {7 * MiB, vt::pattern(1 * MiB, 6)}},
                      {{7 * MiB, 1 * MiB}});
    auto bytes = small_image(4 * MiB, {}, true);
    CHECK(le32(bytes, kType) == 2);
    CHECK(le32(bytes, kAllocated) == 4);
    for (uint32_t i = 0; i < 4; ++i) CHECK(le32(bytes, le32(bytes, kOffBmap) + i * 4) == i);
}

TEST_CASE("create: > 4 GiB sparse dynamic image with data past 4 GiB") {
    if (!vt::need_qemu()) return;
    write_and_compare(false, 6 * GiB,
                      {{1 * MiB, vt::bytes(65536, 0x11)}, {4 * GiB + 3 * MiB, vt::bytes(70000, 0x22)}, {6 * GiB - 8192, vt::bytes(8192, 0x33)}},
                      {}, false);
}

TEST_CASE("zero marking and discard write 0xfffffffe entries; freed slots are reused") {
    auto reg = make_reg();
    MemoryFileSystem fs;
    fs.add("a.vdi", small_image(4 * MiB, {{0, vt::bytes(2 * MiB, 0x44)}, {2 * MiB, vt::bytes(2 * MiB, 0x55)}}));
    auto img = open_mem(reg, fs, "a.vdi", true);
    REQUIRE(img.ok());
    auto& dev = *img->device;
    REQUIRE(dev.write_zeroes(1 * MiB, 1 * MiB).ok());
    REQUIRE(dev.discard(0, 1 * MiB + 512).ok());  // only block 0 is whole
    auto e = dev.block_status(0, 4 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::zero);
    CHECK(e->length == 2 * MiB);
    CHECK(vt::read_range(dev, 0, 2 * MiB) == vt::bytes(2 * MiB, 0));
    // write_zeroes without unmap keeps the block allocated.
    REQUIRE(dev.write_zeroes(2 * MiB, 1 * MiB, false).ok());
    e = dev.block_status(2 * MiB, 4 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::data);
    REQUIRE(dev.write(0, vt::bytes(4096, 0x66)).ok());  // reuses a freed slot
    REQUIRE(dev.close().ok());
    auto bytes = *fs.content("a.vdi");
    uint32_t bm = le32(bytes, kOffBmap);
    CHECK(le32(bytes, bm + 4) == 0xfffffffe);
    CHECK(le32(bytes, bm) < 4);
    CHECK(le32(bytes, kAllocated) == 3);
    CHECK(bytes.size() <= le32(bytes, kOffData) + 4 * MiB);
    auto again = open_mem(reg, fs, "a.vdi");
    REQUIRE(again.ok());
    auto got = vt::read_range(*again->device, 0, 4 * MiB);
    CHECK(std::vector<uint8_t>(got.begin(), got.begin() + 4096) == vt::bytes(4096, 0x66));
    CHECK(std::all_of(got.begin() + 4096, got.begin() + 3 * MiB, [](uint8_t b) { return b == 0; }));
    CHECK(std::all_of(got.begin() + 3 * MiB, got.end(), [](uint8_t b) { return b == 0x55; }));
    auto chk = again->format->check(*again->device, RepairMode::none);
    REQUIRE(chk.ok());
    CHECK(chk->corruptions == 0);
}

TEST_CASE("convert raw to vdi matches under qemu-img compare") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto data = vt::pattern(3 * MiB, 7);
    std::fill(data.begin() + MiB, data.begin() + 2 * MiB, 0);
    vt::write_file(tmp / "src.raw", data);
    auto fs = make_posix_file_system(tmp.path);
    OpenOptions ro;
    ro.format = "raw";
    auto src = open_image(reg, *fs, "src.raw", ro);
    REQUIRE(src.ok());
    ConvertOptions co;
    co.output_format = "vdi";
    auto s = convert(reg, *src->device, *fs, "out.vdi", co);
    REQUIRE_MESSAGE(s.ok(), vt::error_text(s));
    auto c = vt::run("qemu-img check -f vdi " + tmp / "out.vdi");
    CHECK_MESSAGE(c.status == 0, c.output);
    auto cmp = vt::run("qemu-img compare -f vdi -F raw " + tmp / "out.vdi" + " " + tmp / "src.raw");
    CHECK_MESSAGE(cmp.status == 0, cmp.output);
    auto bytes = vt::read_file(tmp / "out.vdi");
    CHECK(le32(bytes, kAllocated) == 2);  // the zero megabyte was not written
}

TEST_CASE("non-default block size, block extra data and a version 0 header") {
    auto reg = make_reg();
    // 3 MiB disk in 512 KiB blocks with 512 bytes of extra data in front of each block; slots in reverse.
    const uint32_t bs = 512 * 1024, extra = 512, blocks = 6;
    std::vector<uint8_t> img(0x400, 0);
    std::memcpy(img.data(), "<<< test >>>\n", 13);
    put32(img, 0x40, 0xbeda107f);
    put32(img, kVersion, 0x00010001);
    put32(img, kHeaderSize, 0x190);
    put32(img, kType, 1);
    put32(img, kOffBmap, 0x200);
    put32(img, kOffData, 0x400);
    put32(img, kSectorSz, 512);
    put64(img, kDiskSize, 3 * MiB);
    put32(img, kBlockSize, bs);
    put32(img, kBlockExtra, extra);
    put32(img, kBlocks, blocks);
    put32(img, kAllocated, 3);
    uint32_t map[blocks] = {2, 0xffffffff, 1, 0xfffffffe, 0, 0xffffffff};
    for (uint32_t i = 0; i < blocks; ++i) put32(img, 0x200 + i * 4, map[i]);
    img.resize(0x400 + 3 * (bs + extra), 0xee);  // extra areas hold junk that must not show
    for (uint32_t slot = 0; slot < 3; ++slot)
        std::fill_n(img.begin() + 0x400 + slot * (bs + extra) + extra, bs, uint8_t(0x10 + slot));
    MemoryFileSystem fs;
    fs.add("b.vdi", img);
    auto dev = open_mem(reg, fs, "b.vdi");
    REQUIRE(dev.ok());
    auto all = vt::read_all(*dev->device);
    std::vector<uint8_t> want(3 * MiB, 0);
    std::fill_n(want.begin(), bs, 0x12);
    std::fill_n(want.begin() + 2 * bs, bs, 0x11);
    std::fill_n(want.begin() + 4 * bs, bs, 0x10);
    CHECK(all == want);
    auto e = dev->device->block_status(4 * bs, 3 * MiB);
    REQUIRE(e.ok());
    CHECK(e->host_offset == 0x400 + extra);
    CHECK(dev->device->info().cluster_size == bs);

    // Writing with extra data: a new block's slot is extra + block, appended after the last slot.
    auto rw = open_mem(reg, fs, "b.vdi", true);
    REQUIRE(rw.ok());
    REQUIRE(rw->device->write(1 * bs + 4096, vt::bytes(4096, 0x77)).ok());
    REQUIRE(rw->device->close().ok());
    auto bytes = *fs.content("b.vdi");
    CHECK(le32(bytes, 0x204) == 3);
    CHECK(le32(bytes, kAllocated) == 4);
    auto back = open_mem(reg, fs, "b.vdi");
    REQUIRE(back.ok());
    auto blk = vt::read_range(*back->device, bs, bs);
    CHECK(std::count(blk.begin(), blk.end(), 0x77) == 4096);
    CHECK(std::count(blk.begin(), blk.end(), 0) == bs - 4096);
    CHECK(vt::read_range(*back->device, 0, bs) == vt::bytes(bs, 0x12));

    // Version 0: no offsets, map right after the 348-byte header, data right after the map.
    std::vector<uint8_t> v0(72 + 348, 0);
    put32(v0, 0x40, 0xbeda107f);
    put32(v0, kVersion, 0x00000000);
    put32(v0, 72, 1);                    // type
    put64(v0, 72 + 8 + 256 + 16, 2 * MiB);  // disk size
    put32(v0, 72 + 288, 1 * MiB);        // block size
    put32(v0, 72 + 292, 2);              // blocks
    put32(v0, 72 + 296, 1);              // allocated
    v0.resize(v0.size() + 8, 0);
    put32(v0, 420, 0xffffffff);
    put32(v0, 424, 0);
    v0.resize(v0.size() + MiB, 0x3c);
    fs.add("v0.vdi", v0);
    auto d0 = open_mem(reg, fs, "v0.vdi");
    REQUIRE_MESSAGE(d0.ok(), vt::error_text(d0));
    CHECK(vt::read_range(*d0->device, 0, MiB) == vt::bytes(MiB, 0));
    CHECK(vt::read_range(*d0->device, MiB, MiB) == vt::bytes(MiB, 0x3c));
    CHECK(*d0->device->info().format_specific.get("data")->get("version")->as_string() == "0.0");
    auto d0w = open_mem(reg, fs, "v0.vdi", true);
    REQUIRE_FALSE(d0w.ok());
    CHECK(d0w.error().code == ErrorCode::unsupported);
}

TEST_CASE("differencing: parent by uuid, not_found without it, copy-up writes") {
    auto reg = make_reg();
    MemoryFileSystem fs;
    auto parent = small_image(4 * MiB, {{0, vt::bytes(4 * MiB, 0xaa)}});
    fs.add("p.vdi", parent);
    auto child = small_image(4 * MiB, {{1 * MiB, vt::bytes(1 * MiB, 0xcc)}});
    put32(child, kType, 4);
    std::memcpy(child.data() + kUuidLink, parent.data() + kUuidCreate, 16);
    std::memcpy(child.data() + kUuidParentModify, parent.data() + kUuidModify, 16);
    put32(child, le32(child, kOffBmap) + 8, 0xfffffffe);  // block 2 discarded: zeros, not the parent
    fs.add("c.vdi", child);

    std::vector<std::string> refs;
    OpenOptions ro;
    ro.references = &refs;
    ro.untrusted = true;  // nothing is opened, so untrusted mode has nothing to refuse
    auto c = open_image(reg, fs, "c.vdi", ro);
    REQUIRE(c.ok());
    REQUIRE(refs.size() == 1);
    CHECK(refs[0] == "parent uuid '" + util::guid_to_string(parent.data() + kUuidCreate) + "'");
    CHECK_FALSE(c->device->backing_reference().has_value());
    CHECK(vt::read_range(*c->device, 1 * MiB, MiB) == vt::bytes(MiB, 0xcc));
    CHECK(vt::read_range(*c->device, 2 * MiB, MiB) == vt::bytes(MiB, 0));
    std::vector<uint8_t> buf(4096);
    auto r = c->device->read(0, buf);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::not_found);
    CHECK(r.error().message.find("parent") != std::string::npos);
    // Block status fails too: mapping the chain would otherwise take the parent's blocks for zeros.
    auto e = c->device->block_status(0, 4 * MiB);
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == ErrorCode::not_found);
    CHECK(c->device->block_status(MiB, 4 * MiB).ok());  // the child's own block
    CHECK(*c->device->info().format_specific.get("data")->get("image-type")->as_string() == "diff");

    auto p = open_mem(reg, fs, "p.vdi");
    REQUIRE(p.ok());
    REQUIRE(c->device->attach_backing(std::move(p->device)).ok());
    auto all = vt::read_all(*c->device);
    CHECK(std::vector<uint8_t>(all.begin(), all.begin() + MiB) == vt::bytes(MiB, 0xaa));
    CHECK(std::vector<uint8_t>(all.begin() + MiB, all.begin() + 2 * MiB) == vt::bytes(MiB, 0xcc));
    CHECK(std::vector<uint8_t>(all.begin() + 2 * MiB, all.begin() + 3 * MiB) == vt::bytes(MiB, 0));
    CHECK(std::vector<uint8_t>(all.begin() + 3 * MiB, all.end()) == vt::bytes(MiB, 0xaa));

    // Copy-up: a partial write to a parent block materialises the rest of it from the parent.
    OpenOptions alone;  // the parent beside the image is not searched for
    alone.no_backing = true;
    alone.read_write = true;
    auto cw = open_image(reg, fs, "c.vdi", alone);
    REQUIRE(cw.ok());
    auto r2 = cw->device->write(3 * MiB, vt::bytes(512, 0x01));
    REQUIRE_FALSE(r2.ok());  // no parent attached yet
    CHECK(r2.error().code == ErrorCode::not_found);
    auto p2 = open_mem(reg, fs, "p.vdi");
    REQUIRE(cw->device->attach_backing(std::move(p2->device)).ok());
    REQUIRE(cw->device->write(3 * MiB, vt::bytes(512, 0x01)).ok());
    REQUIRE(cw->device->write_zeroes(0, MiB).ok());  // a whole parent block becomes ZERO
    REQUIRE(cw->device->close().ok());
    auto c2 = open_mem(reg, fs, "c.vdi");
    REQUIRE(c2.ok());
    auto blk = vt::read_range(*c2->device, 3 * MiB, MiB);  // allocated now: readable without the parent
    CHECK(std::vector<uint8_t>(blk.begin(), blk.begin() + 512) == vt::bytes(512, 0x01));
    CHECK(std::vector<uint8_t>(blk.begin() + 512, blk.end()) == vt::bytes(MiB - 512, 0xaa));
    CHECK(vt::read_range(*c2->device, 0, MiB) == vt::bytes(MiB, 0));

    // Parent identity: wrong creation uuid, stale modification uuid, a non-diff image.
    auto bad = child;
    bad[kUuidLink] ^= 1;
    fs.add("bad.vdi", bad);
    auto b = open_mem(reg, fs, "bad.vdi");
    REQUIRE(b.ok());
    auto pp = open_mem(reg, fs, "p.vdi");
    auto s = b->device->attach_backing(std::move(pp->device));
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == ErrorCode::corrupt);
    auto stale = child;
    stale[kUuidParentModify] ^= 1;
    fs.add("stale.vdi", stale);
    auto found_stale = open_mem(reg, fs, "stale.vdi");  // p.vdi is found beside it, and refused
    REQUIRE_FALSE(found_stale.ok());
    CHECK(found_stale.error().code == ErrorCode::corrupt);
    CHECK(found_stale.error().message.find("modified") != std::string::npos);
    alone.read_write = false;
    auto st = open_image(reg, fs, "stale.vdi", alone);
    REQUIRE(st.ok());
    pp = open_mem(reg, fs, "p.vdi");
    s = st->device->attach_backing(std::move(pp->device));
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == ErrorCode::corrupt);
    OpenOptions force;
    force.force_parent_mismatch = true;
    auto f = open_image(reg, fs, "stale.vdi", force);
    REQUIRE(f.ok());
    CHECK(f->device->backing() != nullptr);
    CHECK(vt::read_range(*f->device, 0, MiB) == vt::bytes(MiB, 0xaa));
    auto normal = open_mem(reg, fs, "p.vdi");
    pp = open_mem(reg, fs, "p.vdi");
    s = normal->device->attach_backing(std::move(pp->device));
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == ErrorCode::invalid_argument);
}

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
        {"count", [](std::vector<uint8_t>& b) { put32(b, kAllocated, 2); }, 1},
        {"duplicate", [&](std::vector<uint8_t>& b) { put32(b, bm + 4, 0); }, 1},
        {"range", [&](std::vector<uint8_t>& b) { put32(b, bm + 12, 9); put32(b, kAllocated, 3); }, 1},
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
                CHECK(vt::run("qemu-img check -f vdi " + tmp / "c.vdi").status == 0);
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
        {"bad signature", [](auto& b) { put32(b, 0x40, 0x12345678); }, ErrorCode::invalid_format},
        {"version 2.0", [](auto& b) { put32(b, kVersion, 0x00020000); }, ErrorCode::unsupported},
        {"header size small", [](auto& b) { put32(b, kHeaderSize, 0x100); }, ErrorCode::corrupt},
        {"blocks_in_image huge", [](auto& b) { put32(b, kBlocks, 0x7fffffff); }, ErrorCode::limit_exceeded},
        {"blocks_in_image special", [](auto& b) { put32(b, kBlocks, 0xffffffff); }, ErrorCode::corrupt},
        {"block size 0", [](auto& b) { put32(b, kBlockSize, 0); }, ErrorCode::corrupt},
        {"block size odd", [](auto& b) { put32(b, kBlockSize, 1000); }, ErrorCode::corrupt},
        {"block size 1 GiB", [](auto& b) { put32(b, kBlockSize, 1u << 30); }, ErrorCode::unsupported},
        {"map offset past EOF", [](auto& b) { put32(b, kOffBmap, 0x10000000); }, ErrorCode::corrupt},
        {"map offset in header", [](auto& b) { put32(b, kOffBmap, 0x100); }, ErrorCode::corrupt},
        {"data overlaps map", [&](auto& b) { put32(b, kOffData, bm + 4); }, ErrorCode::corrupt},
        {"disk size near 2^64", [](auto& b) { put64(b, kDiskSize, ~0ull - 511); }, ErrorCode::corrupt},
        {"disk size past map", [](auto& b) { put64(b, kDiskSize, 5 * MiB); }, ErrorCode::corrupt},
        {"sector size 0", [](auto& b) { put32(b, kSectorSz, 0); }, ErrorCode::corrupt},
        {"sector size 4096", [](auto& b) { put32(b, kSectorSz, 4096); }, ErrorCode::unsupported},
        {"undo type", [](auto& b) { put32(b, kType, 3); }, ErrorCode::unsupported},
        {"unknown type", [](auto& b) { put32(b, kType, 9); }, ErrorCode::corrupt},
        {"allocated > blocks", [](auto& b) { put32(b, kAllocated, 5); }, ErrorCode::corrupt},
        {"block extra huge", [](auto& b) { put32(b, kBlockExtra, 0x80000000); }, ErrorCode::unsupported},
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
        put32(img, bm + 8, 200);  // block 2 -> slot 200, far past the end
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
        CHECK(chk->corruptions == 2);  // out of range (>= blocks_in_image) and the count
        put32(img, bm + 8, 0xfffffffd);  // the largest slot number: no overflow, no long scan
        fs.add("m3.vdi", img);
        auto d3 = open_mem(reg, fs, "m3.vdi");
        REQUIRE(d3.ok());
        r = d3->device->read(2 * MiB, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == ErrorCode::corrupt);
        put32(img, bm + 8, 3);         // in range but past EOF
        put32(img, kAllocated, 2);
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
        put32(img, bm + 8, 0);
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
    auto rnd = [&] { seed = seed * 1103515245 + 12345; return seed >> 8; };
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

// ---- Finding the parent of a differencing image beside it --------------------------------------------

namespace {

// `child` (a normal image's bytes) turned into a differencing image of `parent`.
std::vector<uint8_t> as_diff_of(std::vector<uint8_t> child, const std::vector<uint8_t>& parent) {
    put32(child, kType, 4);
    std::memcpy(child.data() + kUuidLink, parent.data() + kUuidCreate, 16);
    std::memcpy(child.data() + kUuidParentModify, parent.data() + kUuidModify, 16);
    return child;
}

// A base with a pattern everywhere and a child that rewrote part of block 1 (so block 1 is the child's:
// the pattern in [1 MiB + 4 KiB, +8 KiB), zeros around it) and discarded block 3 (zeros).
struct Chain {
    std::vector<uint8_t> base, diff, want;
};
Chain make_chain(std::vector<uint8_t> base = {}) {
    Chain c;
    c.base = base.empty() ? small_image(4 * MiB, {{0, vt::pattern(4 * MiB, 1)}}) : std::move(base);
    c.diff = as_diff_of(small_image(4 * MiB, {{MiB + 4096, vt::pattern(8192, 2)}}), c.base);
    put32(c.diff, le32(c.diff, kOffBmap) + 12, 0xfffffffe);
    return c;
}
std::vector<uint8_t> overlay(std::vector<uint8_t> base_content) {
    std::fill_n(base_content.begin() + MiB, MiB, 0);
    auto p = vt::pattern(8192, 2);
    std::copy(p.begin(), p.end(), base_content.begin() + MiB + 4096);
    std::fill_n(base_content.begin() + 3 * MiB, MiB, 0);
    return base_content;
}

// Counts what an open asks of the file system.
class CountingFs final : public FileSystem {
public:
    explicit CountingFs(FileSystem& base) : base_(base) {}
    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override {
        ++opens;
        return base_.open(name, access);
    }
    Result<std::unique_ptr<File>> create(std::string_view name, bool exclusive) override {
        return base_.create(name, exclusive);
    }
    Status rename(std::string_view from, std::string_view to) override { return base_.rename(from, to); }
    Status remove(std::string_view name) override { return base_.remove(name); }
    bool exists(std::string_view name) override { return base_.exists(name); }
    Result<std::vector<std::string>> list(std::string_view dir) override {
        ++lists;
        return base_.list(dir);
    }
    int opens = 0, lists = 0;

private:
    FileSystem& base_;
};

}  // namespace

TEST_CASE("FileSystem::list: memory, posix (relative_only stays inside), staging, the entry cap") {
    MemoryFileSystem mem;
    mem.add("b.vdi", {1});
    mem.add("a.txt", {2});
    mem.add("d/x.vdi", {3});
    mem.add("d/e/y.vdi", {4});
    mem.add("../up.vdi", {5});
    auto l = mem.list("");
    REQUIRE(l.ok());
    CHECK(*l == std::vector<std::string>{"a.txt", "b.vdi"});
    l = mem.list("d");
    REQUIRE(l.ok());
    CHECK(*l == std::vector<std::string>{"d/x.vdi"});
    l = mem.list("d/");
    REQUIRE(l.ok());
    CHECK(*l == std::vector<std::string>{"d/x.vdi"});
    l = mem.list("..");
    REQUIRE(l.ok());
    CHECK(*l == std::vector<std::string>{"../up.vdi"});
    l = mem.list("nothing");
    REQUIRE(l.ok());
    CHECK(l->empty());

    // Staged files show under their final names, not their temporary ones.
    {
        StagingFileSystem staging(mem);
        REQUIRE(staging.create("d/new.vdi").ok());
        CHECK(mem.list("d")->size() == 2);  // the temporary file exists in the base
        l = staging.list("d");
        REQUIRE(l.ok());
        CHECK(*l == std::vector<std::string>{"d/new.vdi", "d/x.vdi"});
    }
    CHECK(*mem.list("d") == std::vector<std::string>{"d/x.vdi"});  // aborted: removed

    // A directory with more regular files than the cap is refused rather than listed without bound.
    MemoryFileSystem big;
    for (size_t i = 0; i <= FileSystem::kMaxListEntries; ++i) big.add("many/f" + std::to_string(i), {});
    auto bl = big.list("many");
    REQUIRE_FALSE(bl.ok());
    CHECK(bl.error().code == ErrorCode::limit_exceeded);
    REQUIRE(big.remove("many/f0").ok());
    bl = big.list("many");
    REQUIRE(bl.ok());
    CHECK(bl->size() == FileSystem::kMaxListEntries);

    vt::TempDir tmp;
    namespace fs = std::filesystem;
    fs::create_directories(tmp / "root/sub/deeper");
    vt::write_file(tmp / "root/a.vdi", {1});
    vt::write_file(tmp / "root/z.txt", {2});
    vt::write_file(tmp / "root/sub/s.vdi", {3});
    vt::write_file(tmp / "outside.vdi", {4});
    fs::create_symlink("a.vdi", tmp / "root/link.vdi");
    fs::create_symlink("sub", tmp / "root/dirlink");
    fs::create_symlink("missing", tmp / "root/dangling.vdi");
    auto pfs = make_posix_file_system(tmp / "root", NamePolicy::relative_only);
    auto pl = pfs->list("");
    REQUIRE_MESSAGE(pl.ok(), vt::error_text(pl));
    CHECK(*pl == std::vector<std::string>{"a.vdi", "link.vdi", "z.txt"});  // no directories, no dangling link
    pl = pfs->list("sub");
    REQUIRE(pl.ok());
    CHECK(*pl == std::vector<std::string>{"sub/s.vdi"});
    for (const char* bad : {"..", "../root", "sub/../..", "/etc"}) {
        INFO(bad);
        pl = pfs->list(bad);
        REQUIRE_FALSE(pl.ok());
        CHECK(pl.error().code == ErrorCode::access_denied);
    }
    pl = pfs->list("nope");
    REQUIRE_FALSE(pl.ok());
    CHECK(pl.error().code == ErrorCode::not_found);
    auto any = make_posix_file_system(tmp / "root", NamePolicy::any);
    pl = any->list("..");
    REQUIRE(pl.ok());
    CHECK(*pl == std::vector<std::string>{"../outside.vdi"});
    pl = any->list(tmp.path);
    REQUIRE(pl.ok());
    CHECK(*pl == std::vector<std::string>{tmp / "outside.vdi"});
    // Names from list() open through the same file system.
    auto subl = any->list("sub");
    REQUIRE(subl.ok());
    for (auto& n : *subl) CHECK(any->open(n, Access::read_only).ok());
}

TEST_CASE("differencing: the parent beside the image is found by uuid and read byte for byte") {
    auto reg = make_reg();
    auto c = make_chain();
    MemoryFileSystem fs;
    fs.add("vm/base.vdi", c.base);
    fs.add("vm/child.vdi", c.diff);
    std::vector<std::string> refs;
    OpenOptions o;
    o.references = &refs;
    auto img = open_image(reg, fs, "vm/child.vdi", o);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    REQUIRE(img->device->backing() != nullptr);
    CHECK(vt::read_all(*img->device) == overlay(vt::pattern(4 * MiB, 1)));
    auto ref = img->device->backing_reference();
    REQUIRE(ref.has_value());
    CHECK(ref->names == std::vector<std::string>{"base.vdi"});
    auto info = img->device->info();
    CHECK(info.backing_filename == std::optional<std::string>("base.vdi"));
    CHECK(std::find(refs.begin(), refs.end(), "backing file 'base.vdi'") != refs.end());
    auto e = img->device->block_status(0, 4 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::unallocated);  // this layer's view; the parent supplies the data

    // Writing through: copy-up from the found parent.
    o.read_write = true;
    auto rw = open_image(reg, fs, "vm/child.vdi", o);
    REQUIRE_MESSAGE(rw.ok(), vt::error_text(rw));
    REQUIRE(rw->device->write(2 * MiB + 100, vt::bytes(10, 0x77)).ok());
    REQUIRE(rw->device->close().ok());
    OpenOptions alone;
    alone.no_backing = true;
    auto solo = open_image(reg, fs, "vm/child.vdi", alone);
    REQUIRE(solo.ok());
    CHECK(solo->device->backing() == nullptr);
    auto layer = solo->device->block_status(0, 4 * MiB);  // this layer alone: the parent's blocks are unallocated
    REQUIRE(layer.ok());
    CHECK(layer->kind == ExtentKind::unallocated);
    auto blk = vt::read_range(*solo->device, 2 * MiB, MiB);
    auto want = vt::pattern(4 * MiB, 1);
    std::fill_n(want.begin() + 2 * MiB + 100, 10, 0x77);
    CHECK(blk == std::vector<uint8_t>(want.begin() + 2 * MiB, want.begin() + 3 * MiB));
}

TEST_CASE("differencing: VirtualBox layout, base in the VM folder and diffs in Snapshots/ (host files)") {
    auto reg = make_reg();
    vt::TempDir tmp;
    namespace fs = std::filesystem;
    fs::create_directories(tmp / "VM/Snapshots");
    std::vector<uint8_t> base, base_content;
    if (vt::have("qemu-img") && vt::have("qemu-io")) {
        // A base qemu-img wrote; qemu-img's reading of it is the reference.
        REQUIRE(vt::run("qemu-img create -q -f vdi " + tmp / "VM/disk.vdi" + " 4M").status == 0);
        auto w = vt::run("qemu-io -f vdi -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 2M 2M' " + tmp / "VM/disk.vdi");
        REQUIRE_MESSAGE(w.status == 0, w.output);
        base = vt::read_file(tmp / "VM/disk.vdi");
        base_content = vt::qemu_read_raw(tmp / "VM/disk.vdi", "vdi", tmp.path);
    } else {
        base = small_image(4 * MiB, {{0, vt::pattern(4 * MiB, 1)}});
        vt::write_file(tmp / "VM/disk.vdi", base);
        base_content = vt::pattern(4 * MiB, 1);
    }
    auto c = make_chain(base);
    const std::string snap1 = "{" + util::guid_to_string(c.diff.data() + kUuidCreate) + "}.vdi";
    vt::write_file(tmp / "VM/Snapshots" + "/" + snap1, c.diff);
    // A second snapshot on top of the first, beside it.
    auto top = as_diff_of(small_image(4 * MiB, {{3 * MiB, vt::bytes(4096, 0x99)}}), c.diff);
    vt::write_file(tmp / "VM/Snapshots/top.vdi", top);
    auto want1 = overlay(base_content);
    auto want2 = want1;
    std::fill_n(want2.begin() + 3 * MiB, MiB, 0);
    std::fill_n(want2.begin() + 3 * MiB, 4096, 0x99);

    auto one = vt::open_host(reg, tmp / "VM/Snapshots" + "/" + snap1);
    REQUIRE_MESSAGE(one.ok(), vt::error_text(one));
    CHECK(one->device->info().backing_filename == std::optional<std::string>("../disk.vdi"));
    CHECK(vt::read_all(*one->device) == want1);

    auto two = vt::open_host(reg, tmp / "VM/Snapshots/top.vdi");
    REQUIRE_MESSAGE(two.ok(), vt::error_text(two));
    REQUIRE(two->device->backing() != nullptr);
    REQUIRE(two->device->backing()->backing() != nullptr);
    CHECK(two->device->info().backing_filename == std::optional<std::string>(snap1));
    CHECK(vt::read_all(*two->device) == want2);

    // Relative names through a file system rooted at the VM folder; a parent named by the caller for the
    // top image does not stop the layer below from finding its own.
    auto rooted = make_posix_file_system(tmp / "VM", NamePolicy::relative_only);
    OpenOptions o;
    o.backing_override = snap1;
    auto named = open_image(reg, *rooted, "Snapshots/top.vdi", o);
    REQUIRE_MESSAGE(named.ok(), vt::error_text(named));
    CHECK(vt::read_all(*named->device) == want2);

    // The base opened alone is what qemu-img reads.
    auto b = vt::open_host(reg, tmp / "VM/disk.vdi");
    REQUIRE(b.ok());
    CHECK(vt::read_all(*b->device) == base_content);
}

TEST_CASE("differencing: two files with the parent's uuid are an error naming both") {
    auto reg = make_reg();
    auto c = make_chain();
    MemoryFileSystem fs;
    fs.add("base.vdi", c.base);
    fs.add("Snapshots/base-copy.vdi", c.base);
    fs.add("child.vdi", c.diff);
    auto img = open_mem(reg, fs, "child.vdi");
    REQUIRE_FALSE(img.ok());
    CHECK(img.error().code == ErrorCode::invalid_argument);
    CHECK(img.error().message.find("'base.vdi'") != std::string::npos);
    CHECK(img.error().message.find("'Snapshots/base-copy.vdi'") != std::string::npos);
    CHECK(img.error().message.find("--parent") != std::string::npos);
    // Naming one resolves it.
    OpenOptions o;
    o.backing_override = "base.vdi";
    auto named = open_image(reg, fs, "child.vdi", o);
    REQUIRE_MESSAGE(named.ok(), vt::error_text(named));
    CHECK(vt::read_all(*named->device) == overlay(vt::pattern(4 * MiB, 1)));
}

TEST_CASE("differencing: no parent beside the image, untrusted mode, many decoys") {
    auto reg = make_reg();
    auto c = make_chain();
    std::vector<uint8_t> buf(4096);

    SUBCASE("no candidate: the read of a parent block says where it looked and suggests --parent") {
        MemoryFileSystem fs;
        fs.add("vm/child.vdi", c.diff);
        fs.add("vm/other.vdi", small_image(4 * MiB, {}));
        auto img = open_mem(reg, fs, "vm/child.vdi");
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        CHECK(img->device->backing() == nullptr);
        CHECK_FALSE(img->device->backing_reference().has_value());
        CHECK(vt::read_range(*img->device, MiB + 4096, 8192) == vt::pattern(8192, 2));  // the child's own block
        auto r = img->device->read(0, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == ErrorCode::not_found);
        const std::string& m = r.error().message;
        CHECK(m.find("--parent") != std::string::npos);
        CHECK(m.find(util::guid_to_string(c.base.data() + kUuidCreate)) != std::string::npos);
        CHECK(m.find("'vm', 'vm/Snapshots', '.'") != std::string::npos);
        // Converting must fail the same way rather than write zeros for the parent's blocks.
        ConvertOptions co;
        co.output_format = "raw";
        auto conv = convert(reg, *img->device, fs, "out.raw", co);
        REQUIRE_FALSE(conv.ok());
        CHECK(conv.error().code == ErrorCode::not_found);
        CHECK(conv.error().message.find("--parent") != std::string::npos);
        CHECK_FALSE(fs.exists("out.raw"));
    }
    SUBCASE("untrusted: nothing is searched, the parent uuid is reported") {
        MemoryFileSystem mem;
        mem.add("base.vdi", c.base);
        mem.add("child.vdi", c.diff);
        CountingFs fs(mem);
        std::vector<std::string> refs;
        OpenOptions o;
        o.untrusted = true;
        o.references = &refs;
        auto img = open_image(reg, fs, "child.vdi", o);
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        CHECK(fs.lists == 0);
        CHECK(fs.opens == 1);
        CHECK(img->device->backing() == nullptr);
        CHECK(refs == std::vector<std::string>{"parent uuid '" + util::guid_to_string(c.base.data() + kUuidCreate) + "'"});
        auto r = img->device->read(0, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == ErrorCode::not_found);
        CHECK(r.error().message.find("untrusted") != std::string::npos);
        // Naming the parent in untrusted mode is refused, as for any other format.
        o.backing_override = "base.vdi";
        auto named = open_image(reg, fs, "child.vdi", o);
        REQUIRE_FALSE(named.ok());
        CHECK(named.error().code == ErrorCode::access_denied);
        // no_backing does not search either.
        OpenOptions nb;
        nb.no_backing = true;
        fs.lists = 0;
        REQUIRE(open_image(reg, fs, "child.vdi", nb).ok());
        CHECK(fs.lists == 0);
    }
    SUBCASE("a folder full of other files and decoy .vdi files; the parent's suffix in capitals") {
        MemoryFileSystem fs;
        for (int i = 0; i < 1500; ++i) fs.add("vm/log" + std::to_string(i) + ".txt", {1, 2, 3});
        std::vector<uint8_t> head(c.base.begin(), c.base.begin() + 512);
        for (int i = 0; i < 40; ++i) {
            auto decoy = head;  // a VDI header with another creation uuid
            decoy[kUuidCreate] ^= static_cast<uint8_t>(i + 1);
            fs.add("vm/decoy" + std::to_string(i) + ".vdi", decoy);
        }
        fs.add("vm/short.vdi", {1, 2, 3});                          // too short for a header
        fs.add("vm/junk.vdi", vt::pattern(4096, 3));                // no signature
        fs.add("vm/.vdi", head);                                    // no name before the suffix
        fs.add("vm/dir.vdi/inner.txt", {1});                        // a directory named like an image
        fs.add("vm/BASE.VDI", c.base);
        fs.add("vm/Snapshots/child.vdi", c.diff);
        auto img = open_mem(reg, fs, "vm/Snapshots/child.vdi");
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        CHECK(img->device->backing_reference()->names == std::vector<std::string>{"../BASE.VDI"});
        CHECK(vt::read_all(*img->device) == overlay(vt::pattern(4 * MiB, 1)));
    }
    SUBCASE("more .vdi files than are read: the parent past the cap is not found, and the message says so") {
        MemoryFileSystem fs;
        std::vector<uint8_t> head(c.base.begin(), c.base.begin() + 512);
        head[kUuidCreate] ^= 0xff;
        for (int i = 0; i < 300; ++i) fs.add("a" + std::to_string(1000 + i) + ".vdi", head);
        fs.add("zz.vdi", c.base);
        fs.add("child.vdi", c.diff);
        auto img = open_mem(reg, fs, "child.vdi");
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        auto r = img->device->read(0, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message.find("first 256") != std::string::npos);
    }
    SUBCASE("a differencing image whose parent uuid is its own: itself is skipped, a copy of it loops") {
        MemoryFileSystem fs;
        auto self = c.diff;
        std::memcpy(self.data() + kUuidLink, self.data() + kUuidCreate, 16);
        fs.add("self.vdi", self);
        auto img = open_mem(reg, fs, "self.vdi");
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        CHECK(img->device->backing() == nullptr);
        fs.add("copy.vdi", self);
        auto loop = open_mem(reg, fs, "self.vdi");
        REQUIRE_FALSE(loop.ok());
        CHECK(loop.error().code == ErrorCode::corrupt);
        CHECK(loop.error().message.find("loop") != std::string::npos);
    }
}

TEST_CASE("resize: the block map grows over moved blocks, shrinking compacts slots; qemu-img reads and checks") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    for (std::string st : {"off", "on"}) {
        CAPTURE(st);
        std::string img = tmp / ("r-" + st + ".vdi");
        REQUIRE(vt::run("qemu-img create -q -f vdi -o static=" + st + " " + img + " 100M").status == 0);
        auto w = vt::run("qemu-io -f vdi -c 'write -P 0x11 0 3M' -c 'write -P 0x22 99M 1M' -c 'write -P 0x44 40M 1M' " +
                         img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        auto before = vt::qemu_read_raw(img, "vdi", tmp.path);
        {
            auto dev = vt::open_host(reg, img, "vdi", true);
            REQUIRE(dev.ok());
            // 1124 blocks need 4.4 KiB of map: more than the 4 KiB before the data area, so slot 0 moves.
            auto s = dev->device->resize(100 * MiB + GiB);
            REQUIRE_MESSAGE(s.ok(), s.error().to_string());
            REQUIRE(dev->device->close().ok());
        }
        auto chk = vt::run("qemu-img check -f vdi " + img);
        CHECK_MESSAGE(chk.status == 0, chk.output);
        auto after = vt::qemu_read_raw(img, "vdi", tmp.path);
        REQUIRE(after.size() == 100 * MiB + GiB);
        CHECK(std::equal(before.begin(), before.end(), after.begin()));
        CHECK(std::all_of(after.begin() + static_cast<std::ptrdiff_t>(before.size()), after.end(),
                          [](uint8_t b) { return b == 0; }));
        w = vt::run("qemu-io -f vdi -c 'write -P 0x33 1000M 1M' " + img);
        REQUIRE_MESSAGE(w.status == 0, w.output);
        {
            auto dev = vt::open_host(reg, img, "vdi", true);
            REQUIRE(dev.ok());
            CHECK(vt::read_range(*dev->device, 1000 * MiB, 512)[0] == 0x33);
            REQUIRE(dev->device->resize(50 * MiB).ok());
            REQUIRE(dev->device->close().ok());
        }
        chk = vt::run("qemu-img check -f vdi " + img);
        CHECK_MESSAGE(chk.status == 0, chk.output);
        auto shrunk = vt::qemu_read_raw(img, "vdi", tmp.path);
        REQUIRE(shrunk.size() == 50 * MiB);
        CHECK(std::equal(shrunk.begin(), shrunk.end(), before.begin()));
    }
}

TEST_CASE("create -o uuid: the creation UUID is the one given, as VirtualBox prints it") {
    auto reg = make_reg();
    MemoryFileSystem fs;
    const std::string id = "6a1f3b52-9c0d-4e8f-a1b2-c3d4e5f60718";
    CreateOptions co;
    co.size = 4 * MiB;
    co.values = {{"uuid", id}};
    auto dev = create_image(reg, fs, "u.vdi", "vdi", co);
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    REQUIRE((*dev)->close().ok());
    auto img = open_mem(reg, fs, "u.vdi");
    REQUIRE(img.ok());
    CHECK(img->device->info().uuid.value_or("") == id);
    // The header holds it in VirtualBox's (Microsoft GUID) byte layout: first group little-endian.
    std::vector<uint8_t> head(512);
    auto f = fs.open("u.vdi", Access::read_only);
    REQUIRE(f.ok());
    REQUIRE((*f)->read_at(0, head).ok());
    CHECK(head[kUuidCreate] == 0x52);
    CHECK(head[kUuidCreate + 3] == 0x6a);
    CHECK(head[kUuidCreate + 8] == 0xa1);
}
