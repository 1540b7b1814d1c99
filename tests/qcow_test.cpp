// SPDX-License-Identifier: Apache-2.0
// qcow (version 1): images qemu-img creates and qemu-io writes read byte for byte as qemu-img reads them;
// backing chains, compressed clusters, map against qemu-img's; malformed headers fail with exact codes.
#include <algorithm>
#include <cstring>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

Registry make_reg() { return vt::registry_of(make_qcow2_format, make_qcow_format, make_raw_format); }

using vt::put_be32;
using vt::put_be64;

// A qcow image written by qemu: base with two runs, an overlay with a third.
std::string make_chain(const vt::TempDir& tmp) {
    std::string base = tmp / "base.qcow", top = tmp / "top.qcow";
    vt::sh("qemu-img create -q -f qcow " + vt::sh_quote(base) + " 8M");
    vt::sh("qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x22 3M 64k' -c 'write -P 0x44 8388096 512' " +
           vt::sh_quote(base) + " >/dev/null");
    vt::sh("qemu-img create -q -f qcow -b base.qcow -F qcow " + vt::sh_quote(top));
    vt::sh("qemu-io -c 'write -P 0x33 512k 1M' -c 'write -P 0x55 5000 3000' " + vt::sh_quote(top) + " >/dev/null");
    return top;
}

}  // namespace

TEST_CASE("qcow v1: probed (not raw), chain read byte for byte as qemu-img reads it") {
    if (!vt::need_qemu()) return;
    vt::TempDir tmp;
    std::string top = make_chain(tmp);
    auto reg = make_reg();
    auto img = vt::open_host(reg, top);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    CHECK(std::string(img->format->name()) == "qcow");
    CHECK(img->device->size() == 8u << 20);
    REQUIRE(img->device->backing() != nullptr);
    auto info = img->device->info();
    CHECK(info.format == "qcow");
    CHECK(info.backing_filename.value_or("") == "base.qcow");
    CHECK(info.cluster_size.has_value());
    auto ours = vt::read_all(*img->device);
    auto theirs = vt::qemu_read_raw(top, "qcow", tmp.path);
    REQUIRE(ours.size() == theirs.size());
    CHECK(ours == theirs);
    CHECK(ours[0] == 0x11);
    CHECK(ours[(512 << 10) + 1] == 0x33);
    CHECK(ours[5000] == 0x55);

    // Compressed clusters: qemu-io writes them one cluster at a time (qemu-img 7.2's convert -c -O qcow fails).
    std::string c = tmp / "c.qcow";
    vt::sh("qemu-img create -q -f qcow " + vt::sh_quote(c) + " 1M");
    vt::sh(
        "qemu-io -c 'write -c -P 0x66 0 4k' -c 'write -c -P 0x67 4k 4k' -c 'write -c -P 0 64k 4k' "
        "-c 'write -P 0x68 128k 4k' " +
        vt::sh_quote(c) + " >/dev/null");
    auto ci = vt::open_host(reg, c);
    REQUIRE_MESSAGE(ci.ok(), vt::error_text(ci));
    auto st = ci->device->block_status(0, 64 << 10);
    REQUIRE(st.ok());
    CHECK(st->kind == ExtentKind::data);
    CHECK(st->compressed);
    CHECK(st->length == 8192);
    auto cours = vt::read_all(*ci->device);
    CHECK(cours == vt::qemu_read_raw(c, "qcow", tmp.path));
    CHECK(cours[4096] == 0x67);
    CHECK(cours[128 << 10] == 0x68);
}

TEST_CASE("qcow v1: map and info match qemu-img, convert through the tool") {
    if (!vt::need_qemu()) return;
    vt::TempDir tmp;
    std::string top = make_chain(tmp);
    auto ours = vt::run(vt::tool_path() + " map --output=json " + vt::sh_quote(top));
    auto theirs = vt::run("qemu-img map --output=json " + vt::sh_quote(top));
    REQUIRE(ours.status == 0);
    CHECK(ours.output == theirs.output);
    auto out = vt::run(vt::tool_path() + " info " + vt::sh_quote(top));
    CHECK(out.output.find("file format: qcow\n") != std::string::npos);
    vt::sh(vt::tool_path() + " convert -O qcow2 " + vt::sh_quote(top) + " " + vt::sh_quote(tmp / "out.qcow2"));
    vt::sh("qemu-img compare -f qcow -F qcow2 " + vt::sh_quote(top) + " " + vt::sh_quote(tmp / "out.qcow2"));
    // Writes are refused with a clear error, not attempted.
    auto rw = vt::open_host(make_reg(), top, "", true);
    REQUIRE(!rw.ok());
    CHECK(rw.error().code == ErrorCode::unsupported);
}

TEST_CASE("qcow v1: a 516-byte header claiming 152 TiB opens as qemu-img opens it, holding no table") {
    auto root = vt::need_corpus();
    if (!root) return;
    vt::TempDir tmp;
    auto reg = make_reg();
    std::string f = vt::unpack_corpus(*root, "hostile/containerized-data-importer/invalid-qcow-large-size.img.xz",
                                      tmp.path);
    auto img = vt::open_host(reg, f);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    CHECK(std::string(img->format->name()) == "qcow");
    CHECK(img->device->size() == 167125767422464ull);
    std::vector<uint8_t> buf(1 << 20, 0xff);
    REQUIRE(img->device->read(img->device->size() - buf.size(), buf).ok());
    CHECK(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; }));
    // Named as qcow2, it is refused as the other format it is.
    auto as2 = vt::open_host(reg, f, "qcow2");
    REQUIRE(!as2.ok());
    CHECK(as2.error().code == ErrorCode::unsupported);
    CHECK(as2.error().message.find("qcow version 1") != std::string::npos);
}

TEST_CASE("qcow v1: malformed headers and tables") {
    if (!vt::need_qemu()) return;
    vt::TempDir tmp;
    std::string good = tmp / "g.qcow";
    vt::sh("qemu-img create -q -f qcow " + vt::sh_quote(good) + " 4M");
    vt::sh("qemu-io -c 'write -P 0x11 0 64k' " + vt::sh_quote(good) + " >/dev/null");
    auto orig = vt::read_file(good);
    auto reg = make_reg();
    auto try_open = [&](const std::vector<uint8_t>& bytes) {
        vt::write_file(tmp / "bad.qcow", bytes);
        return vt::open_host(reg, tmp / "bad.qcow", "qcow");
    };
    {
        auto b = orig;
        b[32] = 20;  // cluster_bits
        auto r = try_open(b);
        REQUIRE(!r.ok());
        CHECK(r.error().code == ErrorCode::corrupt);
        CHECK(r.error().offset == 32u);
    }
    {
        auto b = orig;
        put_be32(b, 36, 1);  // AES
        auto r = try_open(b);
        REQUIRE(!r.ok());
        CHECK(r.error().code == ErrorCode::unsupported);
    }
    {
        auto b = orig;
        put_be32(b, 36, 7);
        auto r = try_open(b);
        REQUIRE(!r.ok());
        CHECK(r.error().code == ErrorCode::corrupt);
    }
    {
        auto b = orig;
        put_be32(b, 16, 5000);  // backing name length
        put_be64(b, 8, 48);
        auto r = try_open(b);
        REQUIRE(!r.ok());
        CHECK(r.error().code == ErrorCode::corrupt);
    }
    {
        // The first L2 table pointing past the end of the file: open works, the read names the table.
        auto b = orig;
        uint64_t l1 = 0;
        for (int i = 0; i < 8; ++i) l1 = (l1 << 8) | b[40 + i];
        put_be64(b, static_cast<size_t>(l1), 1ull << 40);
        auto r = try_open(b);
        REQUIRE(r.ok());
        std::vector<uint8_t> buf(512);
        auto st = r->device->read(0, buf);
        REQUIRE(!st.ok());
        CHECK(st.error().code == ErrorCode::corrupt);
    }
}
