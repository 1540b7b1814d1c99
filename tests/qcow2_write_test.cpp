// SPDX-License-Identifier: Apache-2.0
// qcow2 writing: everything vdisk writes must pass `qemu-img check` and compare equal to a reference.
#include <cstring>
#include <random>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

Registry make_reg() { return vt::registry_of(make_raw_format, make_qcow2_format); }

// qemu-img check must find no corruption and no leak.
void expect_clean(const std::string& img) {
    auto r = vt::run("qemu-img check --output=json -f qcow2 " + img);
    INFO(r.output);
    REQUIRE(r.status == 0);
    Json j;
    REQUIRE(Json::parse(r.output, j));
    CHECK(j.get("corruptions") == nullptr);
    CHECK(j.get("leaks") == nullptr);
    CHECK(*j.get("check-errors")->as_uint() == 0);
}

// vdisk's own check agrees: nothing leaked, nothing corrupt.
void expect_vdisk_clean(const Registry& reg, const std::string& img) {
    auto opened = vt::open_host(reg, img, "qcow2");
    REQUIRE(opened.ok());
    auto r = opened->format->check(*opened->device, RepairMode::none);
    REQUIRE_MESSAGE(r.ok(), vt::error_text(r));
    CHECK(r->corruptions == 0);
    CHECK(r->leaks == 0);
}

void expect_equal(const std::string& img, const std::string& raw) {
    auto r = vt::run("qemu-img compare -f qcow2 -F raw " + img + " " + raw);
    INFO(r.output);
    CHECK(r.status == 0);
}

CreateOptions opts_from(const std::string& list, uint64_t size) {
    CreateOptions o;
    o.size = size;
    if (!list.empty()) o.values = *parse_option_list(list);
    return o;
}

// Random writes, zero writes and discards, mirrored into `ref`.
void exercise(BlockDevice& dev, std::vector<uint8_t>& ref, uint32_t seed) {
    std::mt19937_64 rng(seed);
    uint64_t size = dev.size();
    for (int i = 0; i < 40; ++i) {
        uint64_t len = 1 + rng() % 150000;
        uint64_t off = rng() % size;
        len = std::min(len, size - off);
        int op = static_cast<int>(rng() % 6);
        if (op < 4) {
            auto data = vt::pattern(static_cast<size_t>(len), static_cast<uint32_t>(rng()));
            auto st = dev.write(off, data);
            REQUIRE_MESSAGE(st.ok(), vt::error_text(st));
            std::copy(data.begin(), data.end(), ref.begin() + static_cast<std::ptrdiff_t>(off));
        } else if (op == 4) {
            auto st = dev.write_zeroes(off, len, rng() % 2);
            REQUIRE_MESSAGE(st.ok(), vt::error_text(st));
            std::fill_n(ref.begin() + static_cast<std::ptrdiff_t>(off), len, 0);
        } else {
            // Discard only whole clusters here so the reference stays exact: qcow2 drops them to zero.
            REQUIRE(dev.discard(off, len).ok());
            uint64_t cs = *dev.info().cluster_size;
            uint64_t a = (off + cs - 1) / cs * cs, b = off + len == size ? size : (off + len) / cs * cs;
            if (a < b)
                std::fill(ref.begin() + static_cast<std::ptrdiff_t>(a), ref.begin() + static_cast<std::ptrdiff_t>(b),
                          0);
        }
    }
}

}  // namespace

TEST_CASE("qcow2 create + random writes pass qemu-img check and compare") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    struct Variant {
        const char* opts;
        uint64_t size;
    };
    const Variant variants[] = {
        {"", 8 << 20},
        {"compat=0.10", (6 << 20) + 1000},
        {"cluster_size=512,refcount_bits=64", 3 << 20},
        {"cluster_size=4096,refcount_bits=1", 5 << 20},
        {"cluster_size=1024,refcount_bits=2", 4 << 20},
        {"extended_l2=on,cluster_size=32k", 7 << 20},
        {"lazy_refcounts=on,refcount_bits=8,compression_type=zstd", 4 << 20},
        {"cluster_size=2M,refcount_bits=32", 9 << 20},
        {"compat=0.10,cluster_size=512", 2 << 20},
    };
    int n = 0;
    for (auto& v : variants) {
        INFO(std::string(v.opts));
        std::string name = "w" + std::to_string(n++) + ".qcow2";
        auto dev = create_image(reg, *fs, name, "qcow2", opts_from(v.opts, v.size));
        REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
        std::vector<uint8_t> ref(v.size, 0);
        exercise(**dev, ref, static_cast<uint32_t>(n));
        CHECK(vt::read_all(**dev) == ref);
        REQUIRE((*dev)->close().ok());
        dev->reset();
        vt::write_file(tmp / (name + ".raw"), ref);
        expect_clean(tmp / name);
        expect_vdisk_clean(reg, tmp / name);
        expect_equal(tmp / name, tmp / (name + ".raw"));
        if (std::string(v.opts).find("extended_l2") == std::string::npos &&
            std::string(v.opts).find("zstd") == std::string::npos) {
            auto q = vt::run("qcowinfo " + tmp / name);  // libyal's reader as a second opinion
            CHECK_MESSAGE(q.status == 0, q.output);
        }
        // Reopen read-write and write some more: the allocator must find its way in an existing image.
        auto again = vt::open_host(reg, tmp / name, "qcow2", true);
        REQUIRE(again.ok());
        exercise(*again->device, ref, static_cast<uint32_t>(100 + n));
        REQUIRE(again->device->close().ok());
        again->device.reset();
        vt::write_file(tmp / (name + ".raw"), ref);
        expect_clean(tmp / name);
        expect_equal(tmp / name, tmp / (name + ".raw"));
    }
}

TEST_CASE("qcow2 writes into qemu-made images, with copy-on-write from the backing file") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    vt::sh("qemu-img create -q -f qcow2 " + tmp / "base.qcow2" + " 4M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 0x5a 0 4M' " + tmp / "base.qcow2");
    vt::sh("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 " + tmp / "top.qcow2");
    vt::sh("qemu-io -f qcow2 -c 'write -P 0x77 1M 100k' " + tmp / "top.qcow2");
    auto img = vt::open_host(reg, tmp / "top.qcow2", "", true);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    auto& dev = *img->device;
    std::vector<uint8_t> ref = vt::read_all(dev);
    auto data = vt::pattern(3000, 9);
    REQUIRE(dev.write(70000, data).ok());
    std::copy(data.begin(), data.end(), ref.begin() + 70000);
    REQUIRE(dev.write_zeroes(2 << 20, 65536 * 2).ok());
    std::fill_n(ref.begin() + (2 << 20), 65536 * 2, 0);
    REQUIRE(dev.write(1024 * 1024 + 5, data).ok());
    std::copy(data.begin(), data.end(), ref.begin() + 1024 * 1024 + 5);
    CHECK(vt::read_all(dev) == ref);
    REQUIRE(dev.close().ok());
    img->device.reset();
    vt::write_file(tmp / "ref.raw", ref);
    expect_clean(tmp / "top.qcow2");
    expect_equal(tmp / "top.qcow2", tmp / "ref.raw");
}

TEST_CASE("qcow2 compressed output (convert -c) with zlib and zstd passes check and compare") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::vector<uint8_t> src(5 << 20, 0);
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>((i / 333) * 7);
    auto noise = vt::pattern(300000, 3);  // incompressible part: stored uncompressed
    std::copy(noise.begin(), noise.end(), src.begin() + (2 << 20));
    std::fill(src.begin() + (4 << 20), src.end(), 0);
    src.resize(src.size() - 1234);  // the last cluster is partial
    vt::write_file(tmp / "src.raw", src);
    auto fs = make_posix_file_system(tmp.path);
    for (const char* o : {"", "compression_type=zstd", "cluster_size=4096", "compat=0.10"}) {
        INFO(std::string(o));
        auto in = vt::open_host(reg, tmp / "src.raw", "raw");
        REQUIRE(in.ok());
        ConvertOptions co;
        co.output_format = "qcow2";
        co.compress = true;
        co.threads = 2;
        if (*o) co.create.values = *parse_option_list(o);
        auto st = convert(reg, *in->device, *fs, "c.qcow2", co);
        REQUIRE_MESSAGE(st.ok(), vt::error_text(st));
        expect_clean(tmp / "c.qcow2");
        expect_vdisk_clean(reg, tmp / "c.qcow2");
        expect_equal(tmp / "c.qcow2", tmp / "src.raw");
        auto out = vt::open_host(reg, tmp / "c.qcow2");
        REQUIRE(out.ok());
        auto e = out->device->block_status(0, 65536);
        REQUIRE(e.ok());
        CHECK(e->compressed);
        CHECK(vt::read_all(*out->device) == src);
        if (std::string(o).find("zstd") == std::string::npos) {  // libqcow does not know zstd
            auto q = vt::run("qcowinfo " + tmp / "c.qcow2");
            CHECK_MESSAGE(q.status == 0, q.output);
        }
    }
}

TEST_CASE("qcow2 preallocation modes") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    for (const char* p : {"metadata", "falloc", "full"}) {
        INFO(std::string(p));
        std::string name = std::string("p_") + p + ".qcow2";
        auto dev = create_image(reg, *fs, name, "qcow2",
                                opts_from(std::string("preallocation=") + p, (3 << 20) + 4096));
        REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
        auto e = (*dev)->block_status(0, 1 << 20);
        REQUIRE(e.ok());
        CHECK(e->kind == ExtentKind::data);
        auto data = vt::pattern(5000, 1);
        REQUIRE((*dev)->write(1 << 20, data).ok());
        REQUIRE((*dev)->close().ok());
        dev->reset();
        expect_clean(tmp / name);
        std::vector<uint8_t> ref((3 << 20) + 4096, 0);
        std::copy(data.begin(), data.end(), ref.begin() + (1 << 20));
        vt::write_file(tmp / "ref.raw", ref);
        expect_equal(tmp / name, tmp / "ref.raw");
    }
}

TEST_CASE("qcow2 resize: grow the L1 table, shrink only over unallocated clusters") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    auto dev = create_image(reg, *fs, "r.qcow2", "qcow2", opts_from("cluster_size=512", 1 << 20));
    REQUIRE(dev.ok());
    auto& d = **dev;
    auto data = vt::pattern(70000, 4);
    REQUIRE(d.write(1000, data).ok());
    REQUIRE(d.resize(64 << 20).ok());
    REQUIRE(d.write((64 << 20) - 70000, data).ok());
    auto st = d.resize(1 << 20);
    REQUIRE(!st.ok());
    CHECK(st.error().code == ErrorCode::unsupported);
    REQUIRE(d.write_zeroes((32 << 20), 32 << 20).ok());
    REQUIRE(d.resize(2 << 20).ok());
    REQUIRE(d.close().ok());
    dev->reset();
    std::vector<uint8_t> ref(2 << 20, 0);
    std::copy(data.begin(), data.end(), ref.begin() + 1000);
    vt::write_file(tmp / "ref.raw", ref);
    expect_clean(tmp / "r.qcow2");
    expect_equal(tmp / "r.qcow2", tmp / "ref.raw");
    auto q = vt::run("qemu-img info --output=json " + tmp / "r.qcow2");
    CHECK(q.output.find("\"virtual-size\": 2097152") != std::string::npos);
}

TEST_CASE("qcow2 virtual size above 4 GiB") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    uint64_t size = 6ull << 30;
    auto dev = create_image(reg, *fs, "big.qcow2", "qcow2", opts_from("", size));
    REQUIRE(dev.ok());
    auto empty = (*dev)->block_status(0, size);
    REQUIRE(empty.ok());
    CHECK(empty->kind == ExtentKind::unallocated);
    CHECK(empty->length == size);  // whole L2 ranges at a time, not cluster by cluster
    auto data = vt::pattern(200000, 5);
    uint64_t at = (5ull << 30) + 12345;
    REQUIRE((*dev)->write(at, data).ok());
    REQUIRE((*dev)->write(size - 100, std::span<const uint8_t>(data.data(), 100)).ok());
    REQUIRE((*dev)->close().ok());
    dev->reset();
    expect_clean(tmp / "big.qcow2");
    vt::sh("truncate -s " + std::to_string(size) + " " + tmp / "big.raw");
    vt::sh("qemu-io -f raw -c 'write -P 0 0 1' " + tmp / "big.raw");
    auto raw = vt::open_host(reg, tmp / "big.raw", "raw", true);
    REQUIRE(raw.ok());
    REQUIRE(raw->device->write(at, data).ok());
    REQUIRE(raw->device->write(size - 100, std::span<const uint8_t>(data.data(), 100)).ok());
    REQUIRE(raw->device->close().ok());
    raw->device.reset();
    expect_equal(tmp / "big.qcow2", tmp / "big.raw");
}

TEST_CASE("qcow2 overlay created with backing_file: create attaches the backing, writes copy on write") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    vt::sh("qemu-img create -q -f qcow2 " + tmp / "base.qcow2" + " 2M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 0x3c 0 2M' " + tmp / "base.qcow2");
    auto fs = make_posix_file_system(tmp.path);
    auto dev = create_image(reg, *fs, "ov.qcow2", "qcow2",
                            opts_from("backing_file=base.qcow2,backing_fmt=qcow2", 2 << 20));
    REQUIRE_MESSAGE(dev.ok(), vt::error_text(dev));
    REQUIRE((*dev)->backing() != nullptr);
    auto data = vt::pattern(1000, 8);
    // A partial-cluster write right after create: the rest of the cluster comes from the backing file.
    REQUIRE((*dev)->write(5000, data).ok());
    REQUIRE((*dev)->close().ok());
    dev->reset();
    std::vector<uint8_t> ref(2 << 20, 0x3c);
    std::copy(data.begin(), data.end(), ref.begin() + 5000);
    vt::write_file(tmp / "ref.raw", ref);
    expect_clean(tmp / "ov.qcow2");
    expect_equal(tmp / "ov.qcow2", tmp / "ref.raw");
    auto info = vt::run("qemu-img info --output=json " + tmp / "ov.qcow2");
    CHECK(info.output.find("\"backing-filename-format\": \"qcow2\"") != std::string::npos);
    // A writable overlay opened with no_backing refuses copy-on-write instead of inventing zeros.
    OpenOptions o;
    o.read_write = true;
    o.no_backing = true;
    auto bare = open_image(reg, *fs, "ov.qcow2", o);
    REQUIRE(bare.ok());
    auto st = bare->device->write(70000, data);
    REQUIRE(!st.ok());
    CHECK(st.error().code == ErrorCode::unsupported);
}

TEST_CASE("qcow2 writes to an image with internal snapshots copy shared L2 tables and clusters") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    std::string img = tmp / "snap.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + img + " 4M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 3M 200k' " + img);
    vt::sh("qemu-img snapshot -c s1 " + img);
    vt::sh("qemu-img convert -f qcow2 -O raw -l snapshot.name=s1 " + img + " " + tmp / "s1_before.raw");
    {
        auto opened = vt::open_host(reg, img, "qcow2", true);
        REQUIRE(opened.ok());
        auto& dev = *opened->device;
        std::vector<uint8_t> ref = vt::read_all(dev);
        auto data = vt::pattern(100000, 12);
        REQUIRE(dev.write(30000, data).ok());
        std::copy(data.begin(), data.end(), ref.begin() + 30000);
        REQUIRE(dev.write_zeroes(3 << 20, 65536, false).ok());
        std::fill_n(ref.begin() + (3 << 20), 65536, 0);
        REQUIRE(dev.discard(512 << 10, 128 << 10).ok());
        std::fill_n(ref.begin() + (512 << 10), 128 << 10, 0);
        CHECK(vt::read_all(dev) == ref);
        REQUIRE(dev.close().ok());
        vt::write_file(tmp / "ref.raw", ref);
    }
    expect_clean(img);
    expect_vdisk_clean(reg, img);
    expect_equal(img, tmp / "ref.raw");
    vt::sh("qemu-img convert -f qcow2 -O raw -l snapshot.name=s1 " + img + " " + tmp / "s1_after.raw");
    CHECK(vt::read_file(tmp / "s1_before.raw") == vt::read_file(tmp / "s1_after.raw"));
}
