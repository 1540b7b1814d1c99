// SPDX-License-Identifier: Apache-2.0
// Compressed images in and out: qcow2 zlib and zstd clusters, streamOptimized VMDK grains. Everything vdisk
// writes must decode with qemu-img (compare + check; qemu inflates qcow2 zlib clusters with a 4 KiB window),
// everything qemu-img writes must convert back bit for bit, the map-first contract (map_stored +
// inflate_unit) must agree with read(), and converting a compressed image must not grow memory with its size.
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "support.hpp"
#include "vdisk/vdisk.hpp"

using vt::run;
using vt::sh_quote;

namespace {

// What system disks hold, in 160 KiB pieces so compressed and stored clusters interleave and units straddle
// the convert reader's windows: text with long-range repeats (beyond 4 KiB, so qcow2's window matters),
// random bytes, zeros, and binary-like data with short repeats.
std::vector<uint8_t> mixed_disk(size_t size) {
    std::vector<uint8_t> img(size);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    auto next = [&] {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        return x;
    };
    const size_t piece = 160u << 10;
    for (size_t p = 0; p * piece < img.size(); ++p) {
        uint8_t* b = img.data() + p * piece;
        size_t n = std::min(piece, img.size() - p * piece);
        switch (p % 4) {
            case 0:
                for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>("the quick brown fox jumps\n"[next() % 26]);
                for (size_t at = 9000; at + 3000 <= n; at += 12000) std::memcpy(b + at, b + at - 8500, 3000);
                break;
            case 1:
                for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(next() >> 24);
                break;
            case 2: break;
            case 3:
                for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>((next() >> 40) & 15);
                for (size_t at = 1024; at + 100 <= n; at += 700) std::memcpy(b + at, b + at - 500, 100);
                break;
        }
    }
    return img;
}

struct Codec {
    std::string name, opts, fmt;  // vdisk/qemu-img convert options producing it, qemu-img's format name
};
const std::vector<Codec> kCodecs = {
    {"qcow2 zlib", "-O qcow2 -c", "qcow2"},
    {"qcow2 zstd", "-O qcow2 -c -o compression_type=zstd", "qcow2"},
    {"qcow2 zlib 4 KiB clusters", "-O qcow2 -c -o cluster_size=4096", "qcow2"},
    {"vmdk streamOptimized", "-O vmdk -o subformat=streamOptimized", "vmdk"},
};

// Peak RSS (KiB) of a shell command run as a child; the status too.
std::pair<int, long> run_measured(const std::string& cmd) {
    pid_t pid = fork();
    if (pid == 0) {
        // Sanitizer builds: ASan's quarantine of freed memory is not the program's; keep it small.
        ::setenv("ASAN_OPTIONS", "quarantine_size_mb=1:thread_local_quarantine_size_kb=64", 1);
        execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    int status = 0;
    struct rusage ru {};
    wait4(pid, &status, 0, &ru);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ru.ru_maxrss};
}

}  // namespace

TEST_CASE("compressed: vdisk's output decodes with qemu-img and round-trips for every codec") {
    if (!vt::need_qemu()) return;
    auto reg = vdisk::Registry::builtin();
    if (!reg.find("vmdk") || !reg.find("qcow2")) return;
    vt::TempDir t;
    auto img = mixed_disk((20u << 20) + 12345 * 512);  // not a cluster multiple: the last unit is partial
    std::string src = t / "src.raw";
    vt::write_file(src, img);
    const std::string tool = sh_quote(vt::tool_path());
    for (auto& c : kCodecs) {
        INFO(c.name);
        std::string ours = t / "ours.img", theirs = t / "theirs.img", back = t / "back.raw";
        auto r = run(tool + " convert -f raw " + c.opts + " " + sh_quote(src) + " " + sh_quote(ours));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        REQUIRE(run("qemu-img convert -f raw " + c.opts + " " + sh_quote(src) + " " + sh_quote(theirs)).status == 0);
        auto cmp = run("qemu-img compare -f raw -F " + c.fmt + " " + sh_quote(src) + " " + sh_quote(ours));
        CHECK_MESSAGE(cmp.status == 0, cmp.output);
        auto chk = run("qemu-img check -f " + c.fmt + " " + sh_quote(ours));
        CHECK_MESSAGE(chk.status == 0, chk.output);
        // The faster encoders stay within 2 % of qemu-img's size (the goal of issue 18) and do compress.
        double mine = static_cast<double>(std::filesystem::file_size(ours));
        double qemu = static_cast<double>(std::filesystem::file_size(theirs));
        MESSAGE(c.name << ": vdisk " << mine << " bytes, qemu-img " << qemu);
        CHECK(mine <= qemu * 1.02);
        CHECK(mine < static_cast<double>(img.size()) * 0.7);
        // Back through vdisk's parallel inflating reader, one thread and several: the same bytes.
        for (const char* m : {"1", "3"}) {
            std::filesystem::remove(back);
            r = run(tool + " convert -m " + m + " -f " + c.fmt + " -O raw " + sh_quote(ours) + " " + sh_quote(back));
            REQUIRE_MESSAGE(r.status == 0, r.output);
            auto got = vt::read_file(back);
            got.resize(img.size());  // raw output of a sparse tail may be shorter on some file systems
            CHECK_MESSAGE(got == img, "round trip with -m " << m);
        }
    }
}

TEST_CASE("compressed: images qemu-img writes convert back exactly, whatever the thread count") {
    if (!vt::need_qemu()) return;
    auto reg = vdisk::Registry::builtin();
    if (!reg.find("vmdk") || !reg.find("qcow2")) return;
    vt::TempDir t;
    auto img = mixed_disk(12u << 20);
    std::string src = t / "src.raw";
    vt::write_file(src, img);
    const std::string tool = sh_quote(vt::tool_path());
    for (auto& c : kCodecs) {
        INFO(c.name);
        std::string theirs = t / "theirs.img";
        std::filesystem::remove(theirs);
        REQUIRE(run("qemu-img convert -f raw " + c.opts + " " + sh_quote(src) + " " + sh_quote(theirs)).status == 0);
        // Into an uncompressed qcow2 (the OVA import case), into raw (the cloud image case), and compressed to
        // compressed (units inflated on the compression workers).
        struct Out {
            const char* fmt;
            const char* opts;
        };
        for (const Out& out :
             {Out{"qcow2", ""}, Out{"raw", ""}, Out{"qcow2", "-c"}, Out{"vmdk", "-o subformat=streamOptimized"}}) {
            for (const char* m : {"1", "4"}) {
                INFO(out.fmt << " " << out.opts << " -m " << m);
                std::string dst = t / (std::string("dst.") + out.fmt);
                std::filesystem::remove(dst);
                auto r = run(tool + " convert -m " + m + " -f " + c.fmt + " -O " + out.fmt + " " + out.opts + " " +
                             sh_quote(theirs) + " " + sh_quote(dst));
                REQUIRE_MESSAGE(r.status == 0, r.output);
                auto cmp = run("qemu-img compare -f " + c.fmt + " -F " + out.fmt + " " + sh_quote(theirs) + " " +
                               sh_quote(dst));
                CHECK_MESSAGE(cmp.status == 0, cmp.output);
            }
        }
        // And the library reads them as qemu-img does.
        auto opened = vt::open_host(reg, theirs);
        REQUIRE(opened.ok());
        CHECK(vt::read_all(*opened->device) == img);
    }
}

TEST_CASE("compressed: map_stored and inflate_unit agree with read()") {
    if (!vt::need_qemu()) return;
    auto reg = vdisk::Registry::builtin();
    if (!reg.find("vmdk") || !reg.find("qcow2")) return;
    vt::TempDir t;
    auto img = mixed_disk(6u << 20);
    std::string src = t / "src.raw";
    vt::write_file(src, img);
    for (auto& c : kCodecs) {
        INFO(c.name);
        std::string z = t / "z.img";
        std::filesystem::remove(z);
        REQUIRE(run("qemu-img convert -f raw " + c.opts + " " + sh_quote(src) + " " + sh_quote(z)).status == 0);
        auto opened = vt::open_host(reg, z);
        REQUIRE(opened.ok());
        auto& dev = *opened->device;
        size_t units = 0, plain = 0;
        for (uint64_t off = 0; off < dev.size();) {
            auto m = dev.map_stored(off, dev.size() - off);
            REQUIRE_MESSAGE(m.ok(), m.error().to_string());
            if (m->kind == vdisk::StoredKind::compressed) {
                ++units;
                REQUIRE(m->file != nullptr);
                CHECK(m->offset <= off);
                std::vector<uint8_t> stored(m->host_length), unit(m->length);
                REQUIRE(vdisk::read_zero_fill(*m->file, m->host_offset, stored).ok());
                REQUIRE(dev.inflate_unit(*m, stored, unit).ok());
                uint64_t n = std::min(m->offset + m->length, dev.size()) - m->offset;
                CHECK(std::memcmp(unit.data(), img.data() + m->offset, n) == 0);
                // A damaged stream is a corrupt error, not garbage.
                stored.assign(stored.size(), 0xff);
                auto bad = dev.inflate_unit(*m, stored, unit);
                REQUIRE_FALSE(bad.ok());
                CHECK(bad.error().code == vdisk::ErrorCode::corrupt);
                off = m->offset + m->length;
            } else {
                CHECK(m->offset == off);
                if (m->kind == vdisk::StoredKind::data) ++plain;
                off += m->length;
            }
        }
        CHECK(units > 10);                       // the text pieces were stored compressed
        if (c.fmt == "qcow2") CHECK(plain > 0);  // random pieces were stored as they are
    }
    // A backend without compressed units answers from block_status and inflates nothing.
    auto raw = vt::open_host(reg, src, "raw");
    REQUIRE(raw.ok());
    auto m = raw->device->map_stored(0, 1 << 20);
    REQUIRE(m.ok());
    CHECK(m->kind == vdisk::StoredKind::data);
    CHECK(m->offset == 0);
    std::vector<uint8_t> out(4096);
    CHECK(raw->device->inflate_unit(*m, {}, out).error().code == vdisk::ErrorCode::unsupported);
    CHECK(raw->device->map_stored(raw->device->size(), 1).error().code == vdisk::ErrorCode::out_of_range);
}

TEST_CASE("compressed: a cluster that does not inflate fails the conversion and leaves nothing") {
    if (!vt::need_qemu()) return;
    auto reg = vdisk::Registry::builtin();
    if (!reg.find("qcow2")) return;
    vt::TempDir t;
    auto img = mixed_disk(4u << 20);
    std::string src = t / "src.raw", z = t / "z.qcow2";
    vt::write_file(src, img);
    REQUIRE(run("qemu-img convert -f raw -O qcow2 -c " + sh_quote(src) + " " + sh_quote(z)).status == 0);
    // Find the third compressed cluster and overwrite its stored bytes.
    uint64_t host = 0;
    {
        auto opened = vt::open_host(reg, z);
        REQUIRE(opened.ok());
        int seen = 0;
        for (uint64_t off = 0; off < opened->device->size() && !host;) {
            auto m = opened->device->map_stored(off, opened->device->size() - off);
            REQUIRE(m.ok());
            if (m->kind == vdisk::StoredKind::compressed && ++seen == 3) host = m->host_offset;
            off = m->offset + m->length;
        }
    }
    REQUIRE(host != 0);
    auto bytes = vt::read_file(z);
    std::memset(bytes.data() + host, 0xff, 64);
    vt::write_file(z, bytes);
    for (const char* m : {"1", "4"}) {
        for (const char* out : {"-O raw", "-O qcow2 -c"}) {
            INFO(out << " -m " << m);
            auto r = run(sh_quote(vt::tool_path()) + " convert -m " + std::string(m) + " " + out + " " + sh_quote(z) +
                         " " + sh_quote(t / "out.img"));
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.output.find("does not decompress") != std::string::npos, r.output);
            CHECK(!std::filesystem::exists(t / "out.img"));
        }
    }
}

TEST_CASE("compressed: converting a compressed image does not grow memory with its size") {
    if (!vt::need_qemu() || !vt::have("qemu-io")) return;
    auto reg = vdisk::Registry::builtin();
    if (!reg.find("vmdk") || !reg.find("qcow2")) return;
    vt::TempDir t;
    // 320 MiB of compressible data: far more than the reader may hold (a few windows of 2 MiB plus their
    // stored bytes), far less than would hide a per-image buffer.
    auto img = mixed_disk(320u << 20);
    std::string src = t / "big.raw";
    vt::write_file(src, img);
    img.clear();
    img.shrink_to_fit();
    const std::string tool = sh_quote(vt::tool_path());
    for (auto& c : {kCodecs[0], kCodecs[3]}) {
        INFO(c.name);
        std::string z = t / "big.z", back = t / "back.raw";
        std::filesystem::remove(z);
        auto [st1, rss1] = run_measured(tool + " convert -f raw " + c.opts + " " + sh_quote(src) + " " + sh_quote(z));
        REQUIRE(st1 == 0);
        std::filesystem::remove(back);
        auto [st2,
              rss2] = run_measured(tool + " convert -f " + c.fmt + " -O raw " + sh_quote(z) + " " + sh_quote(back));
        REQUIRE(st2 == 0);
        MESSAGE(c.name << ": peak RSS compressing " << rss1 << " KiB, inflating " << rss2 << " KiB");
        CHECK(rss1 < 96 * 1024);
        CHECK(rss2 < 96 * 1024);
        CHECK(run("cmp -s " + sh_quote(src) + " " + sh_quote(back)).status == 0);
        std::filesystem::remove(back);
        std::filesystem::remove(z);
    }
}
