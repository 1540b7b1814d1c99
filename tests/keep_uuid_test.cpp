// SPDX-License-Identifier: Apache-2.0
// convert --keep-uuid and create -o uuid=: the target carries the source's identity. UUIDs are read back
// independently of vdisk where a tool shows them (vhdiinfo for VHD) and from the header bytes otherwise
// (VDI creation UUID at 0x188, VHDX Page 83 data in the metadata region), in the GUID layout those formats use.
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

std::string V() { return sh_quote(vt::tool_path()); }

void sh(const std::string& cmd) {
    auto r = run(cmd);
    REQUIRE_MESSAGE(r.status == 0, std::string(cmd + ": " + r.output));
}

// Microsoft GUID layout (first three fields little-endian) as text.
std::string guid_at(const std::vector<uint8_t>& b, size_t off) {
    REQUIRE(b.size() >= off + 16);
    const uint8_t* g = b.data() + off;
    char s[40];
    std::snprintf(s, sizeof s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", g[3], g[2], g[1],
                  g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
    return s;
}

std::string vdi_uuid(const std::string& path) { return guid_at(vt::read_file(path), 0x188); }

// What vhdiinfo prints as the image's identifier (VHD: the footer's unique id).
std::string vhdi_identifier(const std::string& path) {
    auto r = run("vhdiinfo " + sh_quote(path));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    auto at = r.output.find("Identifier\t\t: ");
    REQUIRE(at != std::string::npos);
    return r.output.substr(at + 14, 36);
}

// VHDX Page 83 data: found through the metadata table (item GUID BEE4A3... stored mixed-endian).
std::string vhdx_page83(const std::string& path) {
    auto b = vt::read_file(path);
    static const uint8_t kPage83[16] = {0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
                                        0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46};
    // The metadata region is the one whose table starts with "metadata"; vdisk puts it after the log.
    for (size_t region = 1u << 20; region + 65536 <= b.size(); region += 1u << 20) {
        if (std::memcmp(b.data() + region, "metadata", 8) != 0) continue;
        uint16_t count = static_cast<uint16_t>(b[region + 10] | (b[region + 11] << 8));
        for (size_t i = 0; i < count; ++i) {
            size_t e = region + 32 + i * 32;
            if (std::memcmp(b.data() + e, kPage83, 16) != 0) continue;
            uint32_t off = static_cast<uint32_t>(b[e + 16] | (b[e + 17] << 8) | (b[e + 18] << 16) | (b[e + 19] << 24));
            return guid_at(b, region + off);
        }
    }
    FAIL("no Page 83 item in " << path);
    return "";
}

std::string info_uuid(const std::string& img) {
    auto r = run(V() + " info --output=json " + sh_quote(img));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    vdisk::Json j;
    REQUIRE(vdisk::Json::parse(r.output, j));
    auto* fs = j.get("format-specific");
    REQUIRE(fs != nullptr);
    auto* d = fs->get("data");
    for (const char* k : {"uuid", "page83-data"})
        if (auto* u = d->get(k)) return *u->as_string();
    return "";
}

}  // namespace

TEST_CASE("convert --keep-uuid: vdi, vhd and vhdx targets carry the source's identity") {
    if (!vt::need_qemu() || !vt::have("vhdiinfo")) return;
    vt::TempDir t;
    // A VDI made by qemu-img (its own random creation UUID) with data.
    sh("qemu-img create -q -f vdi " + sh_quote(t / "src.vdi") + " 16M");
    sh("qemu-io -f vdi -c 'write -P 0x5a 1M 2M' " + sh_quote(t / "src.vdi") + " >/dev/null");
    const std::string id = vdi_uuid(t / "src.vdi");

    // vdi -> vhd: libvhdi sees the same identifier.
    sh(V() + " convert -q --keep-uuid -O vhd " + sh_quote(t / "src.vdi") + " " + sh_quote(t / "a.vhd"));
    CHECK(vhdi_identifier(t / "a.vhd") == id);
    sh("qemu-img compare -q -f vdi -F vpc " + sh_quote(t / "src.vdi") + " " + sh_quote(t / "a.vhd"));
    // vhd -> vhdx: the Page 83 data (the disk identifier).
    sh(V() + " convert -q --keep-uuid -O vhdx " + sh_quote(t / "a.vhd") + " " + sh_quote(t / "b.vhdx"));
    CHECK(vhdx_page83(t / "b.vhdx") == id);
    CHECK(info_uuid(t / "b.vhdx") == id);
    // vhdx -> vdi: back to a creation UUID, in VirtualBox's layout.
    sh(V() + " convert -q --keep-uuid -O vdi " + sh_quote(t / "b.vhdx") + " " + sh_quote(t / "c.vdi"));
    CHECK(vdi_uuid(t / "c.vdi") == id);
    sh("qemu-img compare -q -f vdi -F vdi " + sh_quote(t / "src.vdi") + " " + sh_quote(t / "c.vdi"));
    // Without the flag the identity is new.
    sh(V() + " convert -q -O vdi " + sh_quote(t / "src.vdi") + " " + sh_quote(t / "d.vdi"));
    CHECK(vdi_uuid(t / "d.vdi") != id);
}

TEST_CASE("convert --keep-uuid is refused where there is no UUID to keep or to store") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    sh("qemu-img create -q -f vdi " + sh_quote(t / "src.vdi") + " 4M");
    sh("qemu-img create -q -f raw " + sh_quote(t / "src.raw") + " 4M");
    sh("qemu-img create -q -f vhdx " + sh_quote(t / "exists.vhdx") + " 4M");
    struct Case {
        std::string args, message;
    };
    for (const Case& c : std::vector<Case>{
             {"-O qcow2 src.vdi out.qcow2", "qcow2 images record no UUID to keep"},
             {"-O vhd src.raw out.vhd", "src.raw (raw) records no UUID"},
             {"-O vhd -o uuid=6f2b1a44-9d1e-4c57-8f0a-0d1e2f3a4b5c src.vdi out.vhd", "both set the target's UUID"},
             {"-n -O vhdx src.vdi exists.vhdx", "applies to a new target"},
             {"-O vhd src.vdi src.vdi out.vhd", "needs a single source"},
         }) {
        CAPTURE(c.args);
        auto r = run("cd " + sh_quote(t.path) + " && " + V() + " convert --keep-uuid " + c.args);
        CHECK(r.status != 0);
        CHECK_MESSAGE(r.output.find(c.message) != std::string::npos, r.output);
        CHECK(!std::filesystem::exists(t / "out.qcow2"));
        CHECK(!std::filesystem::exists(t / "out.vhd"));
    }
    auto r = run("cat /dev/null | " + V() + " convert --keep-uuid -O vhd - " + sh_quote(t / "out.vhd"));
    CHECK(r.status != 0);
}

TEST_CASE("create -o uuid= for vhdx: the Page 83 data is the UUID given") {
    vt::TempDir t;
    const std::string id = "0b5cd6a1-7e2f-4a3b-9c8d-1e2f3a4b5c6d";
    sh(V() + " create -q -f vhdx -o uuid=" + id + " " + sh_quote(t / "a.vhdx") + " 8M");
    CHECK(vhdx_page83(t / "a.vhdx") == id);
    CHECK(info_uuid(t / "a.vhdx") == id);
    if (vt::need_qemu()) sh("qemu-img check -q " + sh_quote(t / "a.vhdx"));
    auto r = run(V() + " create -q -f vhdx -o uuid=nonsense " + sh_quote(t / "b.vhdx") + " 8M");
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.output.find("is not a UUID") != std::string::npos, r.output);
}
