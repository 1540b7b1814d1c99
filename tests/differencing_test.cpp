// SPDX-License-Identifier: Apache-2.0
// Differencing images made by `vdisk create -f vhd|vhdx|vdi -b PARENT`: the parent written by qemu-io, the
// child written through vdisk, the chain read back by vdisk and by libvhdi (pyvhdi, which follows VHD and
// VHDX parents), the child's own blocks by qemu-img where it can read them (VHD: qemu ignores the parent;
// VDI: a copy with the parent link cleared), byte for byte against the expected contents.
#include <cstring>
#include <filesystem>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

constexpr uint64_t kMiB = 1ull << 20;
// Asked for at create; a VHD rounds it up to a CHS geometry, so sizes below are the parent's as read.
constexpr uint64_t kAsked = 24 * kMiB;

std::string V() { return sh_quote(vt::tool_path()); }

void sh(const std::string& cmd) {
    auto r = run(cmd);
    REQUIRE_MESSAGE(r.status == 0, std::string(cmd + ": " + r.output));
}

std::string qemu_name(const std::string& fmt) { return fmt == "vhd" ? "vpc" : fmt; }

// The Debian interpreter carries python3-libvhdi; another python3 first on PATH may not.
bool have_pyvhdi() {
    bool ok = run("/usr/bin/python3 -c 'import pyvhdi'").status == 0;
    if (!ok) {
        if (vt::in_ci()) FAIL("pyvhdi (python3-libvhdi) is missing");
        else MESSAGE("pyvhdi (python3-libvhdi) is missing; libvhdi reading skipped");
    }
    return ok;
}

// libvhdi's reading of a chain, base first, every layer given its parent with set_parent.
std::vector<uint8_t> pyvhdi_read(const std::vector<std::string>& chain, const std::string& dir) {
    std::string out = dir + "/pyvhdi.raw";
    std::string script =
        "import pyvhdi, sys\n"
        "layers = []  # every layer stays referenced: pyvhdi does not keep a parent alive\n"
        "for name in sys.argv[2:]:\n"
        "    f = pyvhdi.file()\n"
        "    f.open(name)\n"
        "    if layers: f.set_parent(layers[-1])\n"
        "    layers.append(f)\n"
        "top = layers[-1]\n"
        "open(sys.argv[1], 'wb').write(top.read_buffer_at_offset(top.get_media_size(), 0))\n";
    std::string cmd = "/usr/bin/python3 -c " + sh_quote(script) + " " + sh_quote(out);
    for (auto& c : chain) cmd += " " + sh_quote(c);
    sh(cmd);
    auto data = vt::read_file(out);
    std::filesystem::remove(out);
    return data;
}

struct Write {
    uint64_t offset;
    size_t length;
    uint32_t seed;
};

// Writes into the child through vdisk (its chain attached), applied to `expect` too.
void write_child(const vdisk::Registry& reg, const std::string& path, const std::string& fmt,
                 const std::vector<Write>& writes, std::vector<uint8_t>& expect) {
    auto img = vt::open_host(reg, path, fmt, true);
    REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
    REQUIRE(img->device->backing() != nullptr);
    for (const Write& w : writes) {
        auto data = vt::pattern(w.length, w.seed);
        REQUIRE(img->device->write(w.offset, data).ok());
        std::memcpy(expect.data() + w.offset, data.data(), data.size());
    }
    auto st = img->device->close();
    REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().to_string()));
}

vdisk::Json info_json(const std::string& img) {
    auto r = run(V() + " info --output=json " + sh_quote(img));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    vdisk::Json j;
    REQUIRE(vdisk::Json::parse(r.output, j));
    return j;
}

std::string backing_of(const std::string& img) {
    auto j = info_json(img);
    auto* b = j.get("backing-filename");
    return b ? *b->as_string() : "";
}

// Parent and child in `dir`: the parent 24 MiB with data from qemu-io, the child made by vdisk with the
// parent named as given (`backing`), written partly over the parent's data (sector-sized pieces inside a
// block the parent holds, whole blocks, and past the parent's data). Returns the expected child contents.
// libvhdi 20210425 misreads a VHD sector bitmap byte with a set bit followed by clear ones (it shifts without
// masking), so chains it reads get 4 KiB-aligned writes (whole bitmap bytes), as Windows writes them.
std::vector<uint8_t> make_chain(const vdisk::Registry& reg, const vt::TempDir& t, const std::string& fmt,
                                const std::string& backing, bool page_aligned) {
    const std::string parent = t / ("p." + fmt), child = t / ("c." + fmt);
    sh(V() + " create -q -f " + fmt + " " + sh_quote(parent) + " 24M");
    sh("qemu-io -f " + qemu_name(fmt) + " -c 'write -P 0x11 0 3M' -c 'write -P 0x22 9M 1536k' " + sh_quote(parent) +
       " >/dev/null");
    auto expect = vt::qemu_read_raw(parent, qemu_name(fmt), t.path);
    REQUIRE(expect.size() >= kAsked);
    const uint64_t size = expect.size();
    sh("cd " + sh_quote(t.path) + " && " + V() + " create -q -f " + fmt + " -b " + sh_quote(backing) + " c." + fmt);
    if (page_aligned)
        write_child(reg, child, fmt,
                    {{4096, 4096, 1},
                     {kMiB + 4096, 8192, 2},
                     {9 * kMiB + 4096 * 100, 3 * 4096, 3},
                     {16 * kMiB, 2 * kMiB, 4},
                     {size - 4096, 4096, 5}},
                    expect);
    else
        write_child(reg, child, fmt,
                    {{512 * 3, 512, 1},
                     {kMiB + 4096, 8192, 2},
                     {9 * kMiB + 512 * 1000, 3 * 512, 3},
                     {16 * kMiB, 2 * kMiB, 4},
                     {size - 4096, 4096, 5}},
                    expect);
    return expect;
}

}  // namespace

TEST_CASE("differencing create: vhd, vhdx and vdi children read back by vdisk, libvhdi and qemu-img") {
    if (!vt::need_qemu()) return;
    const auto reg = vdisk::Registry::builtin();
    for (std::string fmt : {"vhd", "vhdx", "vdi"}) {
        for (bool absolute : {false, true}) {
            CAPTURE(fmt);
            CAPTURE(absolute);
            vt::TempDir t;
            const std::string parent = t / ("p." + fmt), child = t / ("c." + fmt);
            // VHD: the relative chain gets sector-sized writes (read by vdisk and qemu-img), the absolute one
            // page-aligned writes (read by libvhdi too).
            const bool aligned = fmt != "vhd" || absolute;
            auto expect = make_chain(reg, t, fmt, absolute ? parent : "p." + fmt, aligned);
            const uint64_t size = expect.size();

            // vdisk: the size is the parent's, the backing file is shown, the chain reads as expected.
            auto j = info_json(child);
            CHECK(*j.get("virtual-size")->as_uint() == size);
            std::string shown = backing_of(child);
            CHECK_MESSAGE(shown.find("p." + fmt) != std::string::npos, shown);
            {
                auto img = vt::open_host(reg, child);
                REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
                CHECK(std::string(img->format->name()) == fmt);
                CHECK(vt::read_all(*img->device) == expect);
            }
            sh(V() + " convert -O raw " + sh_quote(child) + " " + sh_quote(t / "flat.raw"));
            CHECK(vt::read_file(t / "flat.raw") == expect);
            sh(V() + " check " + sh_quote(child));

            if (fmt == "vhd" || fmt == "vhdx") {
                // libvhdi follows the parent the child names: identity and contents.
                auto pi = run("vhdiinfo " + sh_quote(parent));
                auto ci = run("vhdiinfo " + sh_quote(child));
                REQUIRE(pi.status == 0);
                REQUIRE_MESSAGE(ci.status == 0, ci.output);
                CHECK(ci.output.find("Differential") != std::string::npos);
                auto id_at = pi.output.find("Identifier\t\t: ");
                REQUIRE(id_at != std::string::npos);
                std::string parent_id = pi.output.substr(id_at + 14, 36);
                CHECK_MESSAGE(ci.output.find("Parent identifier\t: " + parent_id) != std::string::npos, ci.output);
                if (aligned && have_pyvhdi()) CHECK(pyvhdi_read({parent, child}, t.path) == expect);
            }
            if (fmt == "vhd") {
                // qemu-img reads a differencing VHD without its parent: the sectors the child wrote show.
                auto own = vt::qemu_read_raw(child, "vpc", t.path);
                REQUIRE(own.size() == size);
                for (auto [off, len] : std::vector<std::pair<uint64_t, uint64_t>>{
                         {aligned ? 4096 : 512 * 3, aligned ? 4096 : 512}, {16 * kMiB, 2 * kMiB}, {size - 4096, 4096}})
                    CHECK(std::memcmp(own.data() + off, expect.data() + off, len) == 0);
            }
            if (fmt == "vdi") {
                // The link as VirtualBox writes it: type 4, the parent's creation UUID and its modification
                // UUID at the time (header fields at 0x1a8 and 0x1b8, the parent's at 0x188 and 0x198).
                auto pb = vt::read_file(parent), cb = vt::read_file(child);
                REQUIRE(cb.size() > 0x1c8);
                CHECK(cb[0x4c] == 4);
                CHECK(std::memcmp(cb.data() + 0x1a8, pb.data() + 0x188, 16) == 0);
                CHECK(std::memcmp(cb.data() + 0x1b8, pb.data() + 0x198, 16) == 0);
                // qemu-img refuses differencing VDIs; with the link cleared it reads the child's own blocks,
                // which must each hold the whole expected block (copied up from the parent) or nothing.
                auto r = run("qemu-img info " + sh_quote(child));
                CHECK(r.status != 0);
                std::vector<uint8_t> plain = cb;
                plain[0x4c] = 1;
                std::memset(plain.data() + 0x1a8, 0, 32);
                vt::write_file(t / "plain.vdi", plain);
                auto own = vt::qemu_read_raw(t / "plain.vdi", "vdi", t.path);
                REQUIRE(own.size() == size);
                int copied = 0;
                for (uint64_t b = 0; b < size; b += kMiB) {
                    bool is_zero = std::all_of(own.begin() + b, own.begin() + b + kMiB,
                                               [](uint8_t x) { return x == 0; });
                    bool same = std::equal(own.begin() + b, own.begin() + b + kMiB, expect.begin() + b);
                    CHECK_MESSAGE((is_zero || same), "block at " << b);
                    copied += !is_zero;
                }
                CHECK(copied == 6);  // blocks 0, 1, 9, 16, 17, 23
            }
        }
    }
}

TEST_CASE("differencing create: a grandchild reads through two layers") {
    if (!vt::need_qemu()) return;
    const auto reg = vdisk::Registry::builtin();
    for (std::string fmt : {"vhd", "vhdx", "vdi"}) {
        CAPTURE(fmt);
        vt::TempDir t;
        auto expect = make_chain(reg, t, fmt, "p." + fmt, true);
        const std::string gc = t / ("g." + fmt);
        sh("cd " + sh_quote(t.path) + " && " + V() + " create -q -f " + fmt + " -b c." + fmt + " g." + fmt);
        write_child(reg, gc, fmt, {{2 * kMiB - 4096, 8192, 7}, {9 * kMiB, 4096, 8}}, expect);
        auto img = vt::open_host(reg, gc);
        REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
        CHECK(vt::read_all(*img->device) == expect);
        if (fmt != "vdi" && have_pyvhdi())
            CHECK(pyvhdi_read({t / ("p." + fmt), t / ("c." + fmt), gc}, t.path) == expect);
    }
}

TEST_CASE("differencing create: cross-format parents and options that do not apply are refused") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    sh(V() + " create -q -f vdi " + sh_quote(t / "p.vdi") + " 8M");
    sh(V() + " create -q -f vhd " + sh_quote(t / "p.vhd") + " 8M");
    struct Case {
        std::string args, message;
    };
    for (const Case& c : std::vector<Case>{
             {"-f vhd -b p.vdi -F vdi c.vhd", "parent must be a VHD, not vdi"},
             {"-f vhd -b p.vdi c.vhd", "is not a usable VHD"},
             {"-f vhdx -b p.vhd -F vpc c.vhdx", "parent must be a VHDX, not vpc"},
             {"-f vhdx -b p.vhd c.vhdx", "is not a usable VHDX"},
             {"-f vdi -b p.vhd -F vhd c.vdi", "parent must be a VDI, not vhd"},
             {"-f vdi -b p.vhd c.vdi", "is not a usable VDI"},
             {"-f vhd -o subformat=fixed -b p.vhd c.vhd", "differencing VHD is dynamic"},
             {"-f vdi -o static=on -b p.vdi c.vdi", "cannot be static"},
         }) {
        CAPTURE(c.args);
        auto r = run("cd " + sh_quote(t.path) + " && " + V() + " create -q " + c.args);
        CHECK(r.status != 0);
        CHECK_MESSAGE(r.output.find(c.message) != std::string::npos, r.output);
        CHECK(!std::filesystem::exists(t / "c.vhd"));
        CHECK(!std::filesystem::exists(t / "c.vhdx"));
        CHECK(!std::filesystem::exists(t / "c.vdi"));
    }
    // -F naming the child's own format (or its alias) is accepted.
    sh("cd " + sh_quote(t.path) + " && " + V() + " create -q -f vhd -b p.vhd -F vpc c.vhd");
    CHECK(backing_of(t / "c.vhd") == "p.vhd");
}
