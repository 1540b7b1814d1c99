// SPDX-License-Identifier: Apache-2.0
// qcow2 reading: byte-exact against qemu-img's reading, block status, info, corpus images.
#include <algorithm>
#include <cstring>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

Registry make_reg() { return vt::registry_of(make_raw_format, make_qcow2_format); }

// Read the image with vdisk and with qemu-img and require identical bytes.
void expect_same_as_qemu(const Registry& reg, const std::string& path, const std::string& dir) {
    auto img = vt::open_host(reg, path);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    CHECK(std::string(img->format->name()) == "qcow2");
    auto mine = vt::read_all(*img->device);
    auto theirs = vt::qemu_read_raw(path, "qcow2", dir);
    REQUIRE(mine.size() == theirs.size());
    CHECK_MESSAGE(mine == theirs, "content differs from qemu-img for " << path);
}

// Fill an image through qemu-io with data, zeros and discards at cluster-unaligned places.
std::string io_script(uint64_t size) {
    std::string s;
    auto add = [&](const std::string& c) { s += " -c " + vt::sh_quote(c); };
    add("write -P 0x11 0 4097");
    add("write -P 0x22 " + std::to_string(size / 3) + " 70000");
    add("write -z " + std::to_string(size / 3 + 4096) + " 8192");
    add("write -P 0x33 " + std::to_string(size - 5000) + " 5000");
    add("write -P 0x44 " + std::to_string(size / 2 + 512) + " 131072");
    add("discard " + std::to_string(size / 2 + 65536) + " 65536");
    return s;
}

}  // namespace

TEST_CASE("qcow2 reads what qemu-io wrote: versions, cluster sizes, refcount widths, extended L2") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    struct Variant {
        const char* opts;
        uint64_t size;
    };
    const Variant variants[] = {
        {"compat=0.10", 4 << 20},
        {"compat=1.1", 4 << 20},
        {"compat=1.1,cluster_size=512,refcount_bits=1", 1 << 20},
        {"compat=1.1,cluster_size=4096,refcount_bits=2", 3 << 20},
        {"compat=1.1,cluster_size=16384,refcount_bits=4,extended_l2=on", 4 << 20},
        {"compat=1.1,cluster_size=2M,refcount_bits=64", 9 << 20},
        {"compat=0.10,cluster_size=1024", (2 << 20) + 1536},
        {"compat=1.1,refcount_bits=8,extended_l2=on,lazy_refcounts=on", (5 << 20) + 512},
        {"compat=1.1,refcount_bits=32,cluster_size=32768", 6 << 20},
    };
    int n = 0;
    for (auto& v : variants) {
        std::string img = tmp / ("v" + std::to_string(n++) + ".qcow2");
        INFO(v.opts);
        vt::sh("qemu-img create -q -f qcow2 -o " + std::string(v.opts) + " " + img + " " + std::to_string(v.size));
        vt::sh("qemu-io -f qcow2" + io_script(v.size) + " " + img);
        expect_same_as_qemu(reg, img, tmp.path);
    }
}

TEST_CASE("qcow2 compressed clusters: zlib and zstd, and qemu-img convert -c output") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto data = vt::pattern(3 << 20, 7);
    // Compressible: repeat short runs.
    for (size_t i = 0; i < data.size(); ++i)
        data[i] = static_cast<uint8_t>((i / 97) & 0xff) ^ ((i % 4096 < 64) ? data[i] : 0);
    std::fill(data.begin() + (1 << 20), data.begin() + (1 << 20) + 200000, 0);
    vt::write_file(tmp / "src.raw", data);
    for (const char* ct : {"zlib", "zstd"}) {
        for (const char* cs : {"65536", "4096", "2M"}) {
            std::string img = tmp / (std::string(ct) + cs + ".qcow2");
            INFO(ct << " " << cs);
            vt::sh("qemu-img convert -c -f raw -O qcow2 -o compression_type=" + std::string(ct) +
                   ",cluster_size=" + cs + " " + tmp / "src.raw" + " " + img);
            expect_same_as_qemu(reg, img, tmp.path);
            auto opened = vt::open_host(reg, img);
            REQUIRE(opened.ok());
            auto e = opened->device->block_status(0, 1 << 20);
            REQUIRE(e.ok());
            CHECK(e->compressed);
            CHECK(*opened->device->info().format_specific.get("data")->get("compression-type")->as_string() == ct);
        }
    }
}

TEST_CASE("qcow2 block status reports qemu-img map's host offsets") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "m.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + img + " 8M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 1 1M 128k' -c 'write -P 2 0 64k' -c 'write -z 4M 64k' " + img);
    auto opened = vt::open_host(reg, img);
    REQUIRE(opened.ok());
    auto& dev = *opened->device;
    auto a = dev.block_status(0, dev.size());
    REQUIRE(a.ok());
    CHECK(a->kind == ExtentKind::data);
    CHECK(a->length == 65536);
    auto b = dev.block_status(1 << 20, dev.size() - (1 << 20));
    REQUIRE(b.ok());
    CHECK(b->kind == ExtentKind::data);
    CHECK(b->length == 131072);
    auto z = dev.block_status(4 << 20, 1 << 20);
    REQUIRE(z.ok());
    CHECK(z->kind == ExtentKind::zero);
    CHECK(z->length == 65536);
    auto u = dev.block_status(65536, 1 << 20);
    REQUIRE(u.ok());
    CHECK(u->kind == ExtentKind::unallocated);
    CHECK(u->length == (1 << 20) - 65536);
    auto map = vt::run("qemu-img map --output=json -f qcow2 " + img);
    REQUIRE(map.status == 0);
    Json j;
    REQUIRE(Json::parse(map.output, j));
    for (auto& x : *j.as_array()) {
        if (!*x.get("data")->as_bool()) continue;
        uint64_t start = *x.get("start")->as_uint();
        auto e = dev.block_status(start, *x.get("length")->as_uint());
        REQUIRE(e.ok());
        REQUIRE(e->host_offset);
        CHECK(*e->host_offset == *x.get("offset")->as_uint());
    }
}

TEST_CASE("qcow2 info matches qemu-img's format-specific data") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    const char* variants[] = {"compat=0.10", "compat=1.1,lazy_refcounts=on,refcount_bits=8",
                              "compat=1.1,extended_l2=on,compression_type=zstd"};
    int n = 0;
    for (auto* v : variants) {
        std::string img = tmp / ("i" + std::to_string(n++) + ".qcow2");
        vt::sh("qemu-img create -q -f qcow2 -o " + std::string(v) + " " + img + " 1M");
        auto q = vt::run("qemu-img info --output=json " + img);
        Json qj;
        REQUIRE(Json::parse(q.output, qj));
        auto opened = vt::open_host(reg, img);
        REQUIRE(opened.ok());
        auto inf = opened->device->info();
        CHECK(inf.format_specific.dump() == qj.get("format-specific")->dump());
        CHECK(*inf.cluster_size == *qj.get("cluster-size")->as_uint());
    }
}

TEST_CASE("qcow2 backing file name and format come from the header and its extension") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    vt::sh("qemu-img create -q -f qcow2 " + tmp / "base.qcow2" + " 2M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 0x5a 0 2M' " + tmp / "base.qcow2");
    vt::sh("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 " + tmp / "top.qcow2");
    vt::sh("qemu-io -f qcow2 -c 'write -P 0x77 100k 3000' -c 'write -z 1M 64k' " + tmp / "top.qcow2");
    auto opened = vt::open_host(reg, tmp / "top.qcow2");
    REQUIRE(opened.ok());
    auto ref = opened->device->backing_reference();
    REQUIRE(ref);
    CHECK(ref->names[0] == "base.qcow2");
    CHECK(ref->format == "qcow2");
    CHECK(opened->device->backing() != nullptr);
    expect_same_as_qemu(reg, tmp / "top.qcow2", tmp.path);
}

TEST_CASE("qcow2 internal snapshots are listed and readable by id or name") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "s.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + img + " 4M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 1 0 1M' " + img);
    vt::sh("qemu-img snapshot -c first " + img);
    vt::sh("qemu-io -f qcow2 -c 'write -P 2 512k 1M' " + img);
    vt::sh("qemu-img snapshot -c second " + img);
    vt::sh("qemu-io -f qcow2 -c 'write -P 3 0 64k' " + img);
    auto opened = vt::open_host(reg, img);
    REQUIRE(opened.ok());
    auto inf = opened->device->info();
    REQUIRE(inf.snapshots.size() == 2);
    CHECK(inf.snapshots[0].name == "first");
    CHECK(inf.snapshots[1].id == "2");
    expect_same_as_qemu(reg, img, tmp.path);
    for (const char* which : {"first", "2"}) {
        OpenOptions o;
        o.snapshot = which;
        auto fs = make_posix_file_system();
        auto s = open_image(reg, *fs, img, o);
        REQUIRE_MESSAGE(s.ok(), vt::error_text(s));
        auto mine = vt::read_all(*s->device);
        std::string out = tmp / (std::string("snap_") + which + ".raw");
        vt::sh("qemu-img convert -f qcow2 -O raw -l snapshot." + std::string(which[0] == '2' ? "id=2" : "name=first") +
               " " + img + " " + out);
        CHECK(mine == vt::read_file(out));
    }
    OpenOptions o;
    o.snapshot = "nope";
    auto fs = make_posix_file_system();
    auto s = open_image(reg, *fs, img, o);
    REQUIRE(!s.ok());
    CHECK(s.error().code == ErrorCode::not_found);
}

namespace {
void verify_corpus(const char* rel) { vt::verify_corpus_image(make_reg(), rel, "qcow2"); }
}  // namespace

TEST_CASE("qcow2 corpus: dfvfs ext2") { verify_corpus("real/dfvfs/ext2.qcow2.xz"); }
TEST_CASE("qcow2 corpus: dfvfs windows volume") { verify_corpus("real/dfvfs/windows_volume.qcow2.xz"); }
TEST_CASE("qcow2 corpus: dissect basic (zlib)") { verify_corpus("real/dissect.hypervisor/basic.qcow2.gz"); }
TEST_CASE("qcow2 corpus: dissect basic (zstd)") { verify_corpus("real/dissect.hypervisor/basic-zstd.qcow2.gz"); }
TEST_CASE("qcow2 corpus: dissect external data file") { verify_corpus("real/dissect.hypervisor/data-file.qcow2.gz"); }
TEST_CASE("qcow2 corpus: dissect backing chain of three") {
    verify_corpus("real/dissect.hypervisor/backing-chain-1.qcow2.gz");
}

TEST_CASE("qcow2 corpus snapshot image: per-snapshot hashes") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto entry = vt::manifest_entry(*root, "real/dissect.hypervisor/snapshot.qcow2.gz");
    vt::verify_manifest_entry(reg, *root, entry, tmp.path, "qcow2");
    std::string path = tmp / "snapshot.qcow2";
    auto fs = make_posix_file_system();
    auto* snaps = entry.get("snapshots")->as_object();
    REQUIRE(snaps);
    REQUIRE(snaps->size() == 2);
    for (auto& [id, s] : *snaps) {
        OpenOptions o;
        o.snapshot = id;
        auto img = open_image(reg, *fs, path, o);
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        auto& dev = *img->device;
        CHECK(dev.size() == *s.get("virtual_size")->as_uint());
        uint64_t covered = 0;
        for (auto& x : *s.get("data_extents")->as_array()) {
            uint64_t off = *x.get("offset")->as_uint(), len = *x.get("length")->as_uint();
            CHECK(vt::sha256_range(dev, off, len) == *x.get("sha256")->as_string());
            covered = std::max(covered, off + len);
        }
        // Past the recorded data the snapshot reads as zeros: check what is mapped as data there.
        std::vector<uint8_t> buf(1 << 20);
        for (uint64_t off = covered; off < dev.size();) {
            auto m = map_extent(dev, off, std::min<uint64_t>(buf.size(), dev.size() - off));
            REQUIRE(m.ok());
            if (m->data) {
                REQUIRE(dev.read(off, std::span<uint8_t>(buf.data(), m->length)).ok());
                CHECK(std::all_of(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(m->length),
                                  [](uint8_t b) { return b == 0; }));
            }
            off += m->length;
        }
    }
}

TEST_CASE("qcow2 hostile corpus images fail cleanly or stay bounded") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string json = vt::unpack_corpus(*root, "hostile/containerized-data-importer/invalid-qcow-large-json.img.xz",
                                         tmp.path);
    auto img = vt::open_host(reg, json);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    CHECK(img->device->info().snapshots.size() == 65536);
    auto all = vt::read_all(*img->device);
    CHECK(all.size() == img->device->size());
    {
        auto fs = make_posix_file_system();
        OpenOptions o;
        o.limits.max_snapshots = 1000;
        auto limited = open_image(reg, *fs, json, o);
        REQUIRE(!limited.ok());
        CHECK(limited.error().code == ErrorCode::limit_exceeded);
    }
    std::string v1 = vt::unpack_corpus(*root, "hostile/containerized-data-importer/invalid-qcow-large-size.img.xz",
                                       tmp.path);
    auto fs = make_posix_file_system();
    OpenOptions o;
    o.format = "qcow2";
    auto r = open_image(reg, *fs, v1, o);
    REQUIRE(!r.ok());
    CHECK(r.error().code == ErrorCode::unsupported);
    auto probed = vt::open_host(reg, v1);  // probing does not claim qcow version 1 as qcow2
    if (probed.ok()) CHECK(std::string(probed->format->name()) == "raw");
}
