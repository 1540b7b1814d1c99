// SPDX-License-Identifier: Apache-2.0
// convert --target and lint --target: each platform's output checked with qemu-img (format, subformat,
// content) and by lint itself; lint's findings on images each platform refuses, with exact rules and exit codes.
#include <filesystem>

#include "support.hpp"

namespace {

// 10,000,000 bytes: not a whole MiB (Azure) nor GiB (GCE).
void make_source(const vt::TempDir& t) {
    std::vector<uint8_t> img(10000000, 0);
    auto p = vt::pattern(3000000, 21);
    std::copy(p.begin(), p.end(), img.begin() + 1000000);
    vt::write_file(t / "src.raw", img);
    vt::sh(vt::in_dir(t, "qemu-img convert -O qcow2 src.raw src.qcow2"));
}

}  // namespace

TEST_CASE("convert --target writes what each platform imports, and lint accepts it") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    make_source(t);
    struct Case {
        const char* target;
        const char* out;
        const char* qemu_format;
        const char* create_type;  // VMDK createType expected in the descriptor, or ""
    } cases[] = {
        {"azure", "a.vhd", "vpc", ""},
        {"aws", "a.vmdk", "vmdk", "streamOptimized"},
        {"esxi", "e.vmdk", "vmdk", "monolithicFlat"},
        {"hyperv", "a.vhdx", "vhdx", ""},
        {"virtualbox", "a.vdi", "vdi", ""},
        {"proxmox", "a.qcow2", "qcow2", ""},
    };
    for (auto& c : cases) {
        INFO(c.target);
        vt::sh(vt::in_dir(t, vt::tool() + " convert --target " + c.target + " src.qcow2 " + c.out));
        // qemu-img probes a fixed VHD as raw (its footer is at the end), so the format is named.
        auto r = vt::run(vt::in_dir(t, "qemu-img info --output=json -f " + std::string(c.qemu_format) + " " + c.out));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        CHECK(r.output.find("\"format\": \"" + std::string(c.qemu_format) + "\"") != std::string::npos);
        if (*c.create_type)
            CHECK(r.output.find("\"create-type\": \"" + std::string(c.create_type) + "\"") != std::string::npos);
        // Same content (a VHD rounded up to a whole MiB holds zeros past the source's end).
        vt::sh(vt::in_dir(t, "qemu-img compare -q -f raw -F " + std::string(c.qemu_format) + " src.raw " + c.out));
        r = vt::run(vt::in_dir(t, vt::tool() + " lint --target " + c.target + " " + c.out));
        CHECK_MESSAGE(r.status == 0, r.output);
        CHECK(r.output.find("error") == std::string::npos);
    }
    // Azure: the footer says fixed (disk type 2) and a whole-MiB current size.
    auto vhd = vt::read_file(t / "a.vhd");
    REQUIRE(vhd.size() > 512);
    const uint8_t* f = vhd.data() + vhd.size() - 512;
    CHECK(std::string(reinterpret_cast<const char*>(f), 8) == "conectix");
    CHECK(f[63] == 2);
    uint64_t cur = 0;
    for (int i = 48; i < 56; ++i) cur = cur << 8 | f[i];
    CHECK(cur == 10u << 20);
    // GCE: disk.raw in a gzip'd tar, padded to a whole GiB; tar is the oracle for the container.
    vt::sh(vt::in_dir(t, vt::tool() + " convert --target gce --hash sha256 src.qcow2 disk.tar.gz"));
    auto r = vt::run(vt::in_dir(t, "tar -tvzf disk.tar.gz"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    CHECK(r.output.find(" 1073741824 ") != std::string::npos);
    CHECK(r.output.find("disk.raw\n") != std::string::npos);
    vt::sh(vt::in_dir(t, "mkdir x && tar -C x -xzf disk.tar.gz && qemu-img compare -q src.raw x/disk.raw"));
    r = vt::run(vt::in_dir(t, vt::tool() + " lint --target gce disk.tar.gz"));
    CHECK_MESSAGE(r.status == 0, r.output);
}

TEST_CASE("lint reports every broken rule with its fix, exit 1 when the platform would refuse") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    make_source(t);
    vt::sh(vt::in_dir(t, "qemu-img convert -O vpc -o subformat=fixed,force_size=on src.raw odd.vhd"));
    vt::sh(vt::in_dir(t, "qemu-img convert -O vpc src.raw dyn.vhd"));
    vt::sh(vt::in_dir(t, "qemu-img convert -O vmdk src.raw sparse.vmdk"));
    vt::sh(vt::in_dir(t, "qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 top.qcow2"));
    struct Case {
        const char* target;
        const char* image;
        int status;
        std::vector<std::string> expect;
    } cases[] = {
        {"azure",
         "src.qcow2",
         1,
         {"[format] format qcow2: Azure accepts fixed VHD only", "[size-alignment]",
          "fix: vdisk convert --target azure 'src.qcow2' 'src.vhd'"}},
        {"azure",
         "odd.vhd",
         1,
         {"[size-alignment] virtual size 10000384 bytes is not a whole number of MiB",
          "fix: vdisk convert --target azure 'odd.vhd' 'odd-azure.vhd'"}},
        {"azure", "dyn.vhd", 1, {"[vhd-type] a dynamic VHD: Azure accepts fixed VHDs only"}},
        {"aws", "sparse.vmdk", 1, {"a monolithicSparse VMDK: VM Import takes VMDKs in streamOptimized form only"}},
        {"aws", "src.raw", 0, {}},
        {"gce", "src.raw", 1, {"[container]", "[size-alignment]"}},
        {"esxi", "sparse.vmdk", 1, {"hosted sparse disks need vmkfstools -i"}},
        {"hyperv", "dyn.vhd", 0, {"warning [format] a VHD: Hyper-V attaches it to generation 1 VMs only"}},
        {"virtualbox", "src.qcow2", 0, {"warning [format] format qcow2: VirtualBox attaches it"}},
        {"proxmox", "top.qcow2", 1, {"[backing-file] the image has a backing file 'src.qcow2'"}},
    };
    for (auto& c : cases) {
        INFO(c.target << " " << c.image);
        auto r = vt::run(vt::in_dir(t, vt::tool() + " lint --target " + c.target + " " + c.image));
        INFO(r.output);
        CHECK(r.status == c.status);
        for (auto& e : c.expect) CHECK(r.output.find(e) != std::string::npos);
        if (c.expect.empty()) CHECK(r.output.find("accepted (rules: ") != std::string::npos);
    }
    // A disk.raw inside a .tar.gz that is not a whole number of GiB: one finding, naming the member.
    vt::sh(vt::in_dir(t, "cp src.raw disk.raw && tar --format=oldgnu -Sczf odd.tar.gz disk.raw && rm disk.raw"));
    auto odd = vt::run(vt::in_dir(t, vt::tool() + " lint --target gce odd.tar.gz"));
    CHECK(odd.status == 1);
    CHECK_MESSAGE(odd.output.find("[size-alignment] disk.raw holds") != std::string::npos, odd.output);
    CHECK_MESSAGE(odd.output.find("[size-alignment]") == odd.output.rfind("[size-alignment]"), odd.output);
    // JSON: one finding per rule, a verdict, the source of the rules.
    auto r = vt::run(vt::in_dir(t, vt::tool() + " lint --target azure --output=json src.qcow2"));
    CHECK(r.status == 1);
    vdisk::Json j;
    REQUIRE(vdisk::Json::parse(r.output, j));
    CHECK(*j.get("verdict")->as_string() == "refused");
    CHECK(j.get("findings")->as_array()->size() == 2);
    CHECK(j.get("rules-source")->as_string()->find("learn.microsoft.com") != std::string::npos);
    // Conflicts and unknown targets are refused before anything is written.
    r = vt::run(vt::in_dir(t, vt::tool() + " convert --target azure -O qcow2 src.raw x.qcow2"));
    CHECK(r.status == 1);
    CHECK(r.output.find("--target azure writes vhd, not -O qcow2") != std::string::npos);
    r = vt::run(vt::in_dir(t, vt::tool() + " lint --target openstack src.raw"));
    CHECK(r.status == 1);
    CHECK(r.output.find("unknown target 'openstack'") != std::string::npos);
    CHECK(!std::filesystem::exists(t / "x.qcow2"));
}
