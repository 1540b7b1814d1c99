// SPDX-License-Identifier: Apache-2.0
// Thread scaling of reads from one open image: 4 KiB random reads at 1, 2 and 4 threads sharing one
// BlockDevice (the concurrency contract in block_device.hpp). Items/s is the figure to compare across
// thread counts (real time). Images: a 256 MiB qcow2 (64 KiB clusters, every cluster written, so reads hit
// data and the L2 cache) as a host file (page cache, pread) and in memory (no system calls: the library's
// own locking is all that limits scaling), and the same for vmdk.
// Run: build/.../bench/vdisk_threads_bench
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "vdisk/vdisk.hpp"

namespace {

constexpr uint64_t kSize = 256ull << 20;

struct Image {
    vdisk::Registry reg = vdisk::Registry::builtin();
    std::unique_ptr<vdisk::FileSystem> fs;
    std::unique_ptr<vdisk::BlockDevice> dev;
    std::string dir;

    Image(const std::string& fmt, bool host) {
        if (host) {
            char tmpl[] = "/tmp/vdisk-threads-bench-XXXXXX";
            if (!mkdtemp(tmpl)) return;
            dir = tmpl;
            fs = vdisk::make_posix_file_system(dir);
        } else {
            fs = std::make_unique<vdisk::MemoryFileSystem>();
        }
        vdisk::CreateOptions co;
        co.size = kSize;
        auto created = vdisk::create_image(reg, *fs, "img", fmt, co);
        if (!created) return;
        std::vector<uint8_t> chunk(1 << 20);
        std::mt19937 rng(7);
        for (uint64_t off = 0; off < kSize; off += chunk.size()) {
            for (auto& b : chunk) b = static_cast<uint8_t>(rng());
            if (!(*created)->write(off, chunk)) return;
        }
        if (!(*created)->close()) return;
        created->reset();
        vdisk::OpenOptions o;
        auto opened = vdisk::open_image(reg, *fs, "img", o);
        if (opened) dev = std::move(opened->device);
    }
    ~Image() {
        dev.reset();
        if (!dir.empty()) (void)std::system(("rm -rf '" + dir + "'").c_str());
    }
};

Image& image(const std::string& fmt, bool host) {
    // Built once per case before the threads start (function-local statics initialise thread-safely).
    static Image qcow2_host("qcow2", true), qcow2_mem("qcow2", false), vmdk_host("vmdk", true), vmdk_mem("vmdk", false);
    if (fmt == "qcow2") return host ? qcow2_host : qcow2_mem;
    return host ? vmdk_host : vmdk_mem;
}

void BM_RandomRead4k(benchmark::State& st, const std::string& fmt, bool host) {
    Image& img = image(fmt, host);
    if (!img.dev) {
        st.SkipWithError("could not build the image");
        return;
    }
    std::mt19937_64 rng(static_cast<uint64_t>(st.thread_index()) * 7919 + 1);
    std::vector<uint8_t> buf(4096);
    for (auto _ : st) {
        uint64_t off = (rng() % (kSize / 4096)) * 4096;
        if (!img.dev->read(off, buf)) st.SkipWithError("read failed");
        benchmark::DoNotOptimize(buf.data());
    }
    st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * 4096);
}

BENCHMARK_CAPTURE(BM_RandomRead4k, qcow2_file, std::string("qcow2"), true)->ThreadRange(1, 4)->UseRealTime();
BENCHMARK_CAPTURE(BM_RandomRead4k, qcow2_memory, std::string("qcow2"), false)->ThreadRange(1, 4)->UseRealTime();
BENCHMARK_CAPTURE(BM_RandomRead4k, vmdk_file, std::string("vmdk"), true)->ThreadRange(1, 4)->UseRealTime();
BENCHMARK_CAPTURE(BM_RandomRead4k, vmdk_memory, std::string("vmdk"), false)->ThreadRange(1, 4)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
