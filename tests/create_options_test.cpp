// SPDX-License-Identifier: Apache-2.0
// Create options that shape the file rather than the disk: VMDK grain_size for the sparse subformats (read
// back by qemu-img and libvmdk, the header field checked) and preallocation=off|falloc|full for the flat
// VMDK subformats, fixed VHD and static VDI (allocated blocks; full leaves no unwritten extent, as true thick
// provisioning means; qemu-img reads zeros).
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

bool have_pyvmdk() {
    bool ok = run("/usr/bin/python3 -c 'import pyvmdk'").status == 0;
    if (!ok) {
        if (vt::in_ci()) FAIL("pyvmdk (python3-libvmdk) is missing");
        else MESSAGE("pyvmdk (python3-libvmdk) is missing; libvmdk reading skipped");
    }
    return ok;
}

std::vector<uint8_t> pyvmdk_read(const std::string& img, const std::string& dir) {
    std::string out = dir + "/pyvmdk.raw";
    sh("/usr/bin/python3 -c " +
       sh_quote("import pyvmdk, sys\n"
                "h = pyvmdk.handle()\n"
                "h.open(sys.argv[1])\n"
                "h.open_extent_data_files()\n"
                "open(sys.argv[2], 'wb').write(h.read_buffer_at_offset(h.get_media_size(), 0))\n") +
       " " + sh_quote(img) + " " + sh_quote(out));
    auto data = vt::read_file(out);
    std::filesystem::remove(out);
    return data;
}

uint64_t le64(const std::vector<uint8_t>& b, size_t at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | b.at(at + i);
    return v;
}

uint64_t allocated_bytes(const std::string& path) {
    auto r = run("stat -c %b " + sh_quote(path));
    REQUIRE(r.status == 0);
    return std::stoull(r.output) * 512;
}

// Extents of the file that are reserved but never written (fallocate); -1 when filefrag cannot tell.
int unwritten_extents(const std::string& path) {
    auto r = run("filefrag -v " + sh_quote(path));
    if (r.status != 0) return -1;
    int n = 0;
    for (size_t at = 0; (at = r.output.find("unwritten", at)) != std::string::npos; ++at) ++n;
    return n;
}

}  // namespace

TEST_CASE("vmdk grain_size: every sparse subformat, read back by qemu-img and libvmdk") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    const std::string src = t / "src.qcow2";
    sh("qemu-img create -q -f qcow2 " + sh_quote(src) + " 40M");
    sh("qemu-io -c 'write -P 0x33 100k 3M' -c 'write -P 0x44 30M 5k' -c 'write -P 0x55 40956k 4k' " + sh_quote(src) +
       " >/dev/null");
    auto expect = vt::qemu_read_raw(src, "qcow2", t.path);
    const bool libvmdk = have_pyvmdk();
    for (std::string sub : {"monolithicSparse", "twoGbMaxExtentSparse", "streamOptimized"}) {
        for (uint64_t grain : {8192ull, 65536ull, 1ull << 20}) {
            CAPTURE(sub);
            CAPTURE(grain);
            const std::string img = t / "g.vmdk";
            sh(V() + " convert -O vmdk -o subformat=" + sub + ",grain_size=" + std::to_string(grain) + " " +
               sh_quote(src) + " " + sh_quote(img));
            // The grain size (sectors) in the sparse extent header at offset 20.
            auto head = vt::read_file(sub == "twoGbMaxExtentSparse" ? t / "g-s001.vmdk" : img);
            CHECK(le64(head, 20) == grain / 512);
            sh("qemu-img compare -q " + sh_quote(src) + " " + sh_quote(img));
            if (sub != "streamOptimized") sh("qemu-img check -q " + sh_quote(img));
            sh("vmdkinfo " + sh_quote(img) + " >/dev/null");
            if (libvmdk) CHECK(pyvmdk_read(img, t.path) == expect);
            // vdisk reads what it wrote, through its own reader.
            auto dev = vt::open_host(vdisk::Registry::builtin(), img);
            REQUIRE(dev.ok());
            CHECK(vt::read_all(*dev->device) == expect);
            CHECK(dev->device->info().cluster_size == grain);
            for (auto& f : std::filesystem::directory_iterator(t.path))
                if (f.path().filename().string().rfind('g', 0) == 0) std::filesystem::remove(f.path());
        }
    }
    // An image made by create with small grains takes qemu's writes (grain allocation in our layout).
    const std::string img = t / "w.vmdk";
    sh(V() + " create -q -f vmdk -o grain_size=16k " + sh_quote(img) + " 8M");
    sh("qemu-io -f vmdk -c 'write -P 0x66 12k 40k' -c 'write -P 0x67 7M 1k' " + sh_quote(img) + " >/dev/null");
    sh("qemu-img check -q " + sh_quote(img));
    auto q = run("qemu-io -f vmdk -c 'read -P 0x66 12k 40k' -c 'read -P 0x67 7M 1k' -c 'read -P 0 52k 64k' " +
                 sh_quote(img));
    CHECK_MESSAGE(q.output.find("Pattern verification failed") == std::string::npos, q.output);
    if (libvmdk) {
        auto data = pyvmdk_read(img, t.path);
        REQUIRE(data.size() == 8 * kMiB);
        CHECK(data[12 * 1024] == 0x66);
        CHECK(data[52 * 1024 - 1] == 0x66);
        CHECK(data[52 * 1024] == 0);
        CHECK(data[7 * kMiB] == 0x67);
    }
}

TEST_CASE("vmdk grain_size and preallocation: values and subformats that do not fit are refused") {
    vt::TempDir t;
    struct Case {
        std::string opts, message;
    };
    for (const Case& c : std::vector<Case>{
             {"grain_size=4k", "power of two from 8k to 1M"},
             {"grain_size=24k", "power of two from 8k to 1M"},
             {"grain_size=2M", "power of two from 8k to 1M"},
             {"subformat=monolithicFlat,grain_size=64k", "grain_size applies to sparse subformats"},
             {"preallocation=full", "preallocation applies to monolithicFlat and twoGbMaxExtentFlat"},
             {"subformat=monolithicFlat,preallocation=thick", "preallocation must be off, falloc or full"},
         }) {
        CAPTURE(c.opts);
        auto r = run(V() + " create -q -f vmdk -o " + c.opts + " " + sh_quote(t / "x.vmdk") + " 8M");
        CHECK(r.status != 0);
        CHECK_MESSAGE(r.output.find(c.message) != std::string::npos, r.output);
        CHECK(!std::filesystem::exists(t / "x.vmdk"));
        CHECK(!std::filesystem::exists(t / "x-flat.vmdk"));
    }
}

TEST_CASE("preallocation=off|falloc|full: flat VMDKs, fixed VHD and static VDI") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    struct Kind {
        std::string fmt, qfmt, opts, data_file;  // data_file: the file holding the disk's bytes
    };
    const uint64_t size = 16 * kMiB;
    for (const Kind& k : std::vector<Kind>{{"vmdk", "vmdk", "subformat=monolithicFlat", "d-flat.vmdk"},
                                           {"vmdk", "vmdk", "subformat=twoGbMaxExtentFlat", "d-f001.vmdk"},
                                           {"vhd", "vpc", "subformat=fixed", "d.vhd"},
                                           {"vdi", "vdi", "static=on", "d.vdi"}}) {
        for (std::string mode : {"off", "falloc", "full"}) {
            CAPTURE(k.fmt);
            CAPTURE(k.opts);
            CAPTURE(mode);
            const std::string img = t / ("d." + k.fmt);
            auto r = run(V() + " create -q -f " + k.fmt + " -o " + k.opts + ",preallocation=" + mode + " " +
                         sh_quote(img) + " 16M");
            // A static VDI's blocks are all mapped whatever the mode; off leaves them a sparse file.
            REQUIRE_MESSAGE(r.status == 0, r.output);
            sh("sync " + sh_quote(t / k.data_file));
            uint64_t allocated = allocated_bytes(t / k.data_file);
            if (mode == "off") {
                CHECK(allocated < kMiB);
            } else {
                CHECK(allocated >= size);
                int unwritten = unwritten_extents(t / k.data_file);
                // full writes the zeros (no extent left reserved-but-unwritten); falloc only reserves.
                if (mode == "full") CHECK(unwritten == 0);
            }
            sh("truncate -s 16M " + sh_quote(t / "zero.raw"));
            sh("qemu-img compare -q -f " + k.qfmt + " -F raw " + sh_quote(img) + " " + sh_quote(t / "zero.raw"));
            if (k.fmt == "vmdk") sh("vmdkinfo " + sh_quote(img) + " >/dev/null");
            for (auto& f : std::filesystem::directory_iterator(t.path)) std::filesystem::remove(f.path());
        }
    }
}
