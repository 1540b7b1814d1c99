// SPDX-License-Identifier: Apache-2.0
// The concurrency contract of BlockDevice: read and block_status of one open image from many threads at once
// give what one thread gets (qemu-img's reading is the reference), and writes from several threads are
// serialized by the library (the result passes qemu-img check and reads back as written). Small metadata
// caches force evictions while other threads use the tables. Built for ThreadSanitizer with VDISK_TSAN=ON.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "support.hpp"

using namespace vdisk;

namespace {

constexpr unsigned kThreads = 8;

unsigned iterations() {
    // Fewer under ThreadSanitizer: the point there is the interleavings, not volume.
    if (const char* s = std::getenv("VDISK_THREADS_ITERATIONS")) return static_cast<unsigned>(std::atoi(s));
#if defined(__SANITIZE_THREAD__)
    return 150;
#else
    return 4000;
#endif
}

// Write a scattered pattern with qemu-io: data at many offsets, some zero ranges.
void fill_image(const std::string& path, const std::string& fmt) {
    std::string cmd = "qemu-io -f " + fmt;
    for (unsigned i = 0; i < 40; ++i) {
        uint64_t off = (uint64_t(i) * 769 % 61) * (512 << 10) + (i % 7) * 4096;
        cmd += " -c 'write -q -P " + std::to_string(1 + i) + " " + std::to_string(off) + " " +
               std::to_string((i % 5 + 1) * 12288) + "'";
    }
    cmd += " -c 'write -q -z 9437184 131072' " + vt::sh_quote(path);
    auto r = vt::run(cmd);
    REQUIRE_MESSAGE(r.status == 0, r.output);
}

struct Case {
    std::string name, fmt, create_opts, convert_opts;
};

// Hammer `dev` from kThreads threads: random reads compared with `ref`, block_status compared with what a
// second, single-threaded device answers and with the reference bytes.
void hammer(BlockDevice& dev, BlockDevice& single, const std::vector<uint8_t>& ref) {
    REQUIRE(dev.size() == ref.size());
    std::mutex single_mu;
    std::atomic<unsigned> bad_reads{0}, bad_status{0}, errors{0};
    std::string first_error;
    std::mutex err_mu;
    auto record = [&](const Error& e) {
        std::lock_guard lock(err_mu);
        if (first_error.empty()) first_error = e.to_string();
        ++errors;
    };
    const unsigned iters = iterations();
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937_64 rng(1234 + t);
            std::vector<uint8_t> buf;
            for (unsigned i = 0; i < iters; ++i) {
                uint64_t len = (rng() % 32 + 1) * 512 * ((i % 11 == 0) ? 8 : 1);
                len = std::min<uint64_t>(len, dev.size());
                uint64_t off = rng() % (dev.size() - len + 1);
                if (i % 3) off &= ~uint64_t(511);
                if (i % 4 == 3) {
                    auto e = dev.block_status(off, len);
                    if (!e) {
                        record(e.error());
                        continue;
                    }
                    Result<Extent> s = [&] {
                        std::lock_guard lock(single_mu);
                        return single.block_status(off, len);
                    }();
                    if (!s) {
                        record(s.error());
                        continue;
                    }
                    if (e->length != s->length || e->kind != s->kind || e->host_offset != s->host_offset) ++bad_status;
                    auto first = ref.begin() + static_cast<long>(off);
                    auto last = first + static_cast<long>(e->length);
                    if (e->kind == ExtentKind::zero && !std::all_of(first, last, [](uint8_t b) { return b == 0; }))
                        ++bad_status;
                    continue;
                }
                buf.assign(static_cast<size_t>(len), 0xee);
                auto st = dev.read(off, buf);
                if (!st) {
                    record(st.error());
                    continue;
                }
                if (std::memcmp(buf.data(), ref.data() + off, buf.size()) != 0) ++bad_reads;
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK_MESSAGE(errors.load() == 0, first_error);
    CHECK(bad_reads.load() == 0);
    CHECK(bad_status.load() == 0);
}

}  // namespace

TEST_CASE("threads: concurrent reads and block status of every format match one thread's") {
    if (!vt::need_qemu()) return;
    const std::vector<Case> cases = {
        {"raw", "raw", "", ""},
        {"qcow2", "qcow2", "-o cluster_size=4096", ""},
        {"qcow2 compressed", "qcow2", "", "-c -o cluster_size=4096"},
        {"qcow2 extended l2", "qcow2", "-o extended_l2=on,cluster_size=65536", ""},
        {"vmdk", "vmdk", "", ""},
        {"vmdk streamOptimized", "vmdk", "", "-o subformat=streamOptimized"},
        {"vhd", "vpc", "", ""},
        {"vhdx", "vhdx", "-o block_size=1M", ""},
        {"vdi", "vdi", "", ""},
        {"qcow (version 1)", "qcow", "", ""},
        {"qcow (version 1) compressed", "qcow", "", "qemu-io write -c"},
    };
    vt::TempDir dir;
    auto reg = Registry::builtin();
    for (const auto& c : cases) {
        SUBCASE(c.name.c_str()) {
            std::string img = dir / "img";
            std::string src = dir / "src";
            if (c.convert_opts == "qemu-io write -c") {
                // qemu-img 7.2 cannot convert -c into qcow version 1; qemu-io compresses cluster by cluster.
                REQUIRE(vt::run("qemu-img create -q -f qcow " + img + " 32M").status == 0);
                std::string cmd = "qemu-io -f qcow";
                for (unsigned i = 0; i < 48; ++i)
                    cmd += " -c 'write -q -c -P " + std::to_string(1 + i) + " " +
                           std::to_string((uint64_t(i) * 769 % 61) * (512 << 10) + (i % 5) * 4096) + " 4k'";
                cmd += " -c 'write -q -P 0x70 20M 64k' " + vt::sh_quote(img);
                auto r = vt::run(cmd);
                REQUIRE_MESSAGE(r.status == 0, r.output);
            } else if (c.convert_opts.empty()) {
                auto r = vt::run("qemu-img create -q -f " + c.fmt + " " + c.create_opts + " " + img + " 32M");
                REQUIRE_MESSAGE(r.status == 0, r.output);
                fill_image(img, c.fmt);
            } else {
                REQUIRE(vt::run("qemu-img create -q -f qcow2 " + src + " 32M").status == 0);
                fill_image(src, "qcow2");
                auto r = vt::run("qemu-img convert -f qcow2 -O " + c.fmt + " " + c.convert_opts + " " + src + " " +
                                 img);
                REQUIRE_MESSAGE(r.status == 0, r.output);
            }
            auto ref = vt::qemu_read_raw(img, c.fmt, dir.path);
            // A tiny cache budget makes the qcow2 L2 / VMDK grain-table caches evict while others read.
            OpenOptions o;
            o.format = c.fmt == "vpc" ? "vhd" : c.fmt;
            o.limits.max_cache_bytes = 16 << 10;
            auto fs = make_posix_file_system();
            auto dev = open_image(reg, *fs, img, o);
            REQUIRE_MESSAGE(dev, dev.error().to_string());
            auto single = open_image(reg, *fs, img, o);
            REQUIRE(single);
            hammer(*dev->device, *single->device, ref);
        }
    }
}

TEST_CASE("threads: reads through a backing chain from many threads") {
    if (!vt::need_qemu()) return;
    vt::TempDir dir;
    std::string base = dir / "base.qcow2", top = dir / "top.qcow2";
    REQUIRE(vt::run("qemu-img create -q -f qcow2 " + base + " 32M").status == 0);
    fill_image(base, "qcow2");
    REQUIRE(vt::run("qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 " + top).status == 0);
    REQUIRE(vt::run("qemu-io -f qcow2 -c 'write -q -P 0x77 1M 3M' -c 'write -q -z 20M 1M' " + top).status == 0);
    auto ref = vt::qemu_read_raw(top, "qcow2", dir.path);
    auto reg = Registry::builtin();
    OpenOptions o;
    o.limits.max_cache_bytes = 16 << 10;
    auto fs = make_posix_file_system();
    auto dev = open_image(reg, *fs, top, o);
    REQUIRE(dev);
    auto single = open_image(reg, *fs, top, o);
    REQUIRE(single);
    hammer(*dev->device, *single->device, ref);
}

TEST_CASE("threads: writes from several threads are serialized, readers run alongside") {
    if (!vt::need_qemu()) return;
    vt::TempDir dir;
    auto reg = Registry::builtin();
    auto fs = make_posix_file_system();
    for (std::string fmt : {"qcow2", "vmdk", "vhdx", "vdi", "vhd"}) {
        CAPTURE(fmt);
        std::string img = dir / ("w." + fmt);
        CreateOptions co;
        co.size = 16 << 20;
        auto created = create_image(reg, *fs, img, fmt, co);
        REQUIRE_MESSAGE(created, created.error().to_string());
        BlockDevice& dev = **created;
        constexpr unsigned kWriters = 4, kBlocks = 24;
        constexpr uint64_t kBlock = 40960;  // not a multiple of clusters: exercises read-modify-write
        std::atomic<bool> done{false};
        std::atomic<unsigned> errors{0};
        std::vector<std::thread> threads;
        for (unsigned w = 0; w < kWriters; ++w)
            threads.emplace_back([&, w] {
                std::vector<uint8_t> buf(kBlock, static_cast<uint8_t>(0x10 + w));
                for (unsigned b = w; b < kBlocks * kWriters; b += kWriters)
                    if (!dev.write(b * (kBlock + 4096), buf)) ++errors;
            });
        std::vector<std::thread> readers;
        for (unsigned r = 0; r < 4; ++r)
            readers.emplace_back([&] {
                std::vector<uint8_t> buf(8192);
                uint64_t off = 0;
                while (!done.load()) {
                    // Reads and block status must neither fail nor crash while writes change the metadata.
                    if (!dev.read(off, buf)) ++errors;
                    if (!dev.block_status(off, 1 << 20)) ++errors;
                    off = (off + 12288) % ((16 << 20) - buf.size());
                }
            });
        for (auto& t : threads) t.join();
        done = true;
        for (auto& t : readers) t.join();
        CHECK(errors.load() == 0);
        REQUIRE(dev.close());
        created->reset();
        auto chk = vt::run("qemu-img check -q " + vt::sh_quote(img));
        if (fmt != "vhd") CHECK_MESSAGE(chk.status == 0, chk.output);  // qemu-img has no check for vpc
        auto raw = vt::qemu_read_raw(img, fmt == "vhd" ? "vpc" : fmt, dir.path);
        REQUIRE(raw.size() >= (16u << 20));
        unsigned wrong = 0;
        for (unsigned b = 0; b < kBlocks * kWriters; ++b) {
            uint8_t want = static_cast<uint8_t>(0x10 + b % kWriters);
            uint64_t at = b * (kBlock + 4096);
            for (uint64_t i = 0; i < kBlock; i += 512) wrong += raw[at + i] != want;
            for (uint64_t i = kBlock; i < kBlock + 4096; i += 512) wrong += raw[at + i] != 0;
        }
        CHECK(wrong == 0);
    }
}
