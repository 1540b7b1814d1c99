// SPDX-License-Identifier: Apache-2.0
// rebase and commit for the formats with backing files other than qcow2: VMDK (parentFileNameHint and
// parentCID), VHD (locators and parent unique id), VHDX (parent locator and parent_linkage) and VDI (parent
// UUIDs). Contents are read by vdisk and, where they follow these chains, by qemu-img (VMDK) and libvhdi
// (pyvhdi for VHD and VHDX); the links are read by vhdiinfo, qemu-img info and from the VDI header bytes.
#include <cstring>
#include <filesystem>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

std::string V() { return sh_quote(vt::tool_path()); }

void sh(const std::string& cmd) {
    auto r = run(cmd);
    REQUIRE_MESSAGE(r.status == 0, std::string(cmd + ": " + r.output));
}

std::string qemu_name(const std::string& fmt) { return fmt == "vhd" ? "vpc" : fmt; }

std::vector<uint8_t> vdisk_read(const std::string& img) {
    auto dev = vt::open_host(vdisk::Registry::builtin(), img);
    REQUIRE_MESSAGE(dev.ok(), (dev.ok() ? "" : dev.error().to_string()));
    return vt::read_all(*dev->device);
}

std::string backing_of(const std::string& img) {
    auto r = run(V() + " info --output=json " + sh_quote(img));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    vdisk::Json j;
    REQUIRE(vdisk::Json::parse(r.output, j));
    auto* b = j.get("backing-filename");
    return b ? *b->as_string() : "";
}

bool have_pyvhdi() {
    bool ok = run("/usr/bin/python3 -c 'import pyvhdi'").status == 0;
    if (!ok) {
        if (vt::in_ci()) FAIL("pyvhdi (python3-libvhdi) is missing");
        else MESSAGE("pyvhdi (python3-libvhdi) is missing; libvhdi reading skipped");
    }
    return ok;
}

std::vector<uint8_t> pyvhdi_read(const std::string& parent, const std::string& child, const std::string& dir) {
    std::string out = dir + "/pyvhdi.raw";
    sh("/usr/bin/python3 -c " +
       sh_quote("import pyvhdi, sys\n"
                "p = pyvhdi.file()\n"
                "p.open(sys.argv[1])\n"
                "c = pyvhdi.file()\n"
                "c.open(sys.argv[2])\n"
                "c.set_parent(p)\n"
                "open(sys.argv[3], 'wb').write(c.read_buffer_at_offset(c.get_media_size(), 0))\n") +
       " " + sh_quote(parent) + " " + sh_quote(child) + " " + sh_quote(out));
    auto d = vt::read_file(out);
    std::filesystem::remove(out);
    return d;
}

std::string vhdi_field(const std::string& img, const std::string& field) {
    auto r = run("vhdiinfo " + sh_quote(img));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    auto at = r.output.find(field);
    REQUIRE_MESSAGE(at != std::string::npos, r.output);
    at = r.output.find(": ", at);
    return r.output.substr(at + 2, 36);
}

// dir/b1 (0x11 at 0..2M), dir/b2 (0x21 at 1M..4M), dir/top over b1 with its own writes (4 KiB-aligned, which
// libvhdi reads right). Returns top's own writes as (offset, bytes).
std::vector<std::pair<uint64_t, std::vector<uint8_t>>> make_chain(const std::string& dir, const std::string& fmt) {
    auto q = [&](const std::string& n) { return sh_quote(dir + "/" + n + "." + fmt); };
    // VHDX blocks of 1 MiB (the child takes its parent's), so the top does not hold all that b1 and b2 differ in.
    const std::string opts = fmt == "vhdx" ? " -o block_size=1M" : "";
    sh(V() + " create -q -f " + fmt + opts + " " + q("b1") + " 16M");
    sh("qemu-io -f " + qemu_name(fmt) + " -c 'write -P 0x11 0 2M' " + q("b1") + " >/dev/null");
    sh(V() + " create -q -f " + fmt + opts + " " + q("b2") + " 16M");
    sh("qemu-io -f " + qemu_name(fmt) + " -c 'write -P 0x21 1M 3M' " + q("b2") + " >/dev/null");
    sh("cd " + sh_quote(dir) + " && " + V() + " create -q -f " + fmt + " -b b1." + fmt + " top." + fmt);
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> own = {{512 * 1024, vt::pattern(64 * 1024, 1)},
                                                                  {7 * kMiB, vt::pattern(4096, 2)}};
    auto img = vt::open_host(vdisk::Registry::builtin(), dir + "/top." + fmt, fmt, true);
    REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
    for (auto& [off, data] : own) REQUIRE(img->device->write(off, data).ok());
    REQUIRE(img->device->close().ok());
    return own;
}

std::vector<uint8_t> overlay(std::vector<uint8_t> base,
                             const std::vector<std::pair<uint64_t, std::vector<uint8_t>>>& own) {
    for (auto& [off, data] : own) std::memcpy(base.data() + off, data.data(), data.size());
    return base;
}

// Contents of `top` read alone over `below`: what top holds itself (per its block status; whole blocks or
// grains copied up from its old parent when it was written, so `held` gives their contents) and `below`
// everywhere else.
std::vector<uint8_t> over(const std::string& top, const std::vector<uint8_t>& held, std::vector<uint8_t> below) {
    vdisk::OpenOptions o;
    o.no_backing = true;
    static auto fs = vdisk::make_posix_file_system();
    auto img = vdisk::open_image(vdisk::Registry::builtin(), *fs, top, o);
    REQUIRE(img.ok());
    for (uint64_t off = 0; off < img->device->size();) {
        auto e = img->device->block_status(off, img->device->size() - off);
        REQUIRE(e.ok());
        if (e->kind != vdisk::ExtentKind::unallocated)
            std::memcpy(below.data() + off, held.data() + off, static_cast<size_t>(e->length));
        off += e->length;
    }
    return below;
}

// What an external reader makes of `top` over `parent` (nothing when no such reader exists for the format).
std::optional<std::vector<uint8_t>> external_read(const std::string& fmt, const std::string& top,
                                                  const std::string& parent, const std::string& dir) {
    if (fmt == "vmdk") return vt::qemu_read_raw(top, "vmdk", dir);  // qemu follows parentFileNameHint
    if ((fmt == "vhd" || fmt == "vhdx") && have_pyvhdi()) return pyvhdi_read(parent, top, dir);
    return std::nullopt;
}

// The parent identity the child records matches `parent` as an outside reader sees it.
void check_link(const std::string& fmt, const std::string& top, const std::string& parent) {
    if (fmt == "vhd" || fmt == "vhdx") {
        CHECK(vhdi_field(top, "Parent identifier") == vhdi_field(parent, "\tIdentifier"));
    } else if (fmt == "vdi") {
        auto c = vt::read_file(top), p = vt::read_file(parent);
        CHECK(c[0x4c] == 4);
        CHECK(std::memcmp(c.data() + 0x1a8, p.data() + 0x188, 32) == 0);  // creation and modification UUIDs
    } else {
        auto r = run("qemu-img info " + sh_quote(top));
        CHECK_MESSAGE(r.output.find("backing file: " + std::string(vdisk::base_name(parent))) != std::string::npos,
                      r.output);
        sh("qemu-img check -q " + sh_quote(top));
    }
}

}  // namespace

TEST_CASE("rebase vmdk, vhd, vhdx and vdi: safe keeps the contents, -u only relinks, -b '' detaches") {
    if (!vt::need_qemu()) return;
    for (std::string fmt : {"vmdk", "vhd", "vhdx", "vdi"}) {
        CAPTURE(fmt);
        vt::TempDir t;
        auto own = make_chain(t.path, fmt);
        const std::string top = t / ("top." + fmt), b1 = t / ("b1." + fmt), b2 = t / ("b2." + fmt);
        const auto b1_raw = vdisk_read(b1), b2_raw = vdisk_read(b2);
        const auto original = overlay(b1_raw, own);
        REQUIRE(vdisk_read(top) == original);

        // Safe: what differs between b1 and b2 is copied into top first; top reads the same over b2.
        sh(V() + " rebase -b b2." + fmt + " -F " + fmt + " " + sh_quote(top));
        CHECK(backing_of(top).find("b2." + fmt) != std::string::npos);
        CHECK(vdisk_read(top) == original);
        check_link(fmt, top, b2);
        if (auto ext = external_read(fmt, top, b2, t.path)) CHECK(*ext == original);
        sh(V() + " check " + sh_quote(top));

        // Unsafe on a fresh chain: only the link changes, top's own data now shows over b2.
        vt::TempDir u;
        make_chain(u.path, fmt);
        const std::string utop = u / ("top." + fmt), ub2 = u / ("b2." + fmt);
        const auto before = vdisk_read(utop);
        sh(V() + " rebase -u -b b2." + fmt + " " + sh_quote(utop));
        const auto relinked = over(utop, before, vdisk_read(ub2));
        CHECK(relinked != before);
        CHECK(vdisk_read(utop) == relinked);
        check_link(fmt, utop, ub2);
        if (auto ext = external_read(fmt, utop, ub2, u.path)) CHECK(*ext == relinked);

        // No backing file: safe mode copies the rest in first (a VHDX keeps its parent: refused).
        auto r = run(V() + " rebase -b '' " + sh_quote(top));
        if (fmt == "vhdx") {
            CHECK(r.status != 0);
            CHECK_MESSAGE(r.output.find("removing the parent of a differencing VHDX is not supported") !=
                              std::string::npos,
                          r.output);
            continue;
        }
        REQUIRE_MESSAGE(r.status == 0, r.output);
        CHECK(backing_of(top).empty());
        std::filesystem::remove(b2);  // nothing may still read it
        CHECK(vdisk_read(top) == original);
        if (fmt != "vdi") CHECK(vt::qemu_read_raw(top, qemu_name(fmt), t.path) == original);
        sh(V() + " check " + sh_quote(top));
    }
}

TEST_CASE("commit vmdk, vhd, vhdx and vdi: the base gets the top's data and the top still opens on it") {
    if (!vt::need_qemu()) return;
    for (std::string fmt : {"vmdk", "vhd", "vhdx", "vdi"}) {
        CAPTURE(fmt);
        vt::TempDir t;
        auto own = make_chain(t.path, fmt);
        const std::string top = t / ("top." + fmt), b1 = t / ("b1." + fmt);
        const auto expect = overlay(vdisk_read(b1), own);
        sh(V() + " commit " + sh_quote(top));
        // The base as qemu-img reads it alone (VDI, VHD, VHDX and VMDK bases are plain images).
        CHECK(vt::qemu_read_raw(b1, qemu_name(fmt), t.path) == expect);
        // Writing the base changed its identity (CID, DataWriteGuid, modification UUID): the top was re-linked.
        CHECK(vdisk_read(top) == expect);
        check_link(fmt, top, b1);
        if (auto ext = external_read(fmt, top, b1, t.path)) CHECK(*ext == expect);
        sh(V() + " check " + sh_quote(top));
    }
}

TEST_CASE("rebase across formats and of images that cannot take a parent is refused") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    for (std::string fmt : {"vmdk", "vhd", "vhdx", "vdi"}) make_chain(t.path, fmt);
    sh(V() + " create -q -f vhdx " + sh_quote(t / "plain.vhdx") + " 16M");
    sh(V() + " create -q -f vhd -o subformat=fixed " + sh_quote(t / "fixed.vhd") + " 16M");
    struct Case {
        std::string args, message;
    };
    for (const Case& c : std::vector<Case>{
             {"-u -b b1.vdi top.vhd", "a VHD's parent must be a VHD"},
             {"-u -b b1.vhd top.vhdx", "a VHDX's parent must be a VHDX"},
             {"-u -b b1.vhdx top.vdi", "a VDI's parent must be a VDI"},
             {"-u -b b1.vhd top.vmdk", "a VMDK's parent must be a VMDK"},
             {"-u -b b1.vhdx plain.vhdx", "giving a parent to a VHDX that has none is not supported"},
             {"-u -b b1.vhd fixed.vhd", "a fixed VHD holds every sector itself"},
         }) {
        CAPTURE(c.args);
        std::string img = c.args.substr(c.args.rfind(' ') + 1);
        auto before = vt::sha256_file(t / img);
        auto r = run("cd " + sh_quote(t.path) + " && " + V() + " rebase " + c.args);
        CHECK(r.status != 0);
        CHECK_MESSAGE(r.output.find(c.message) != std::string::npos, r.output);
        CHECK(vt::sha256_file(t / img) == before);
    }
}
