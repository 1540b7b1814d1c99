// SPDX-License-Identifier: Apache-2.0
// Micro benchmarks on the memory file system: zero detection, compression, read paths per format,
// and the convert engine. Run: build/.../bench/vdisk_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "util/bytes.hpp"
#include "vdisk/vdisk.hpp"

namespace {

std::vector<uint8_t> noise(size_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    std::mt19937 rng(seed);
    for (auto& b : v) b = static_cast<uint8_t>(rng() & 0x3f);  // compressible-ish, like real data
    return v;
}

void BM_IsZero(benchmark::State& st) {
    std::vector<uint8_t> buf(1 << 20, 0);
    for (auto _ : st) benchmark::DoNotOptimize(vdisk::util::is_zero(buf));
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(buf.size()));
}
BENCHMARK(BM_IsZero);

void BM_DeflateCluster(benchmark::State& st) {
    auto data = noise(64 * 1024, 1);
    std::string out;
    for (auto _ : st) benchmark::DoNotOptimize(vdisk::util::deflate_into(data, out, true, 6, data.size()));
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(data.size()));
}
BENCHMARK(BM_DeflateCluster);

// The probe that lets convert -c skip deflate on data it cannot shrink: random bytes (the probe's worst
// case: it must scan) and compressible bytes (it stops at the histogram).
void BM_IncompressibleProbe(benchmark::State& st) {
    std::vector<uint8_t> data(64 * 1024);
    std::mt19937 rng(4);
    for (auto& b : data) b = static_cast<uint8_t>(st.range(0) ? rng() : rng() & 0x3f);
    for (auto _ : st) benchmark::DoNotOptimize(vdisk::util::likely_incompressible(data, 4096));
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(data.size()));
}
BENCHMARK(BM_IncompressibleProbe)->Arg(1)->Arg(0);

// CRC-32C as VHDX uses it (4 KiB headers and log entries, 64 KiB+ metadata): the dispatching crc32c (SSE4.2
// when the CPU has it), the slicing-by-8 table fallback, and the hardware path on its own.
void BM_Crc32c(benchmark::State& st) {
    auto data = noise(static_cast<size_t>(st.range(0)), 2);
    for (auto _ : st) benchmark::DoNotOptimize(vdisk::util::crc32c(data));
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(data.size()));
}
BENCHMARK(BM_Crc32c)->Arg(4096)->Arg(64 * 1024);

void BM_Crc32cTable(benchmark::State& st) {
    auto data = noise(static_cast<size_t>(st.range(0)), 2);
    for (auto _ : st) benchmark::DoNotOptimize(vdisk::util::crc32c_table(data));
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(data.size()));
}
BENCHMARK(BM_Crc32cTable)->Arg(4096)->Arg(64 * 1024);

void BM_Crc32cHardware(benchmark::State& st) {
    auto data = noise(static_cast<size_t>(st.range(0)), 2);
    if (!vdisk::util::crc32c_hardware({})) {
        st.SkipWithError("no SSE4.2 on this CPU");
        return;
    }
    for (auto _ : st) benchmark::DoNotOptimize(vdisk::util::crc32c_hardware(data));
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(data.size()));
}
BENCHMARK(BM_Crc32cHardware)->Arg(4096)->Arg(64 * 1024);

// A 256 MiB image of the given format in memory, a quarter of it written with data, made by vdisk.
struct Fixture {
    vdisk::Registry reg = vdisk::Registry::builtin();
    vdisk::MemoryFileSystem fs;
    bool ok = false;
    explicit Fixture(const std::string& fmt) {
        vdisk::CreateOptions co;
        co.size = 256ull << 20;
        auto dev = vdisk::create_image(reg, fs, "img", fmt, co);
        if (!dev) return;
        auto data = noise(1 << 20, 3);
        for (uint64_t off = 0; off < *co.size; off += 4ull << 20)
            if (!(*dev)->write(off, data)) return;
        ok = (*dev)->close().ok();
    }
};

void BM_Read4k(benchmark::State& st, const std::string& fmt) {
    Fixture fx(fmt);
    if (!fx.ok) {
        st.SkipWithError(("cannot create " + fmt).c_str());
        return;
    }
    auto img = vdisk::open_image(fx.reg, fx.fs, "img", {});
    if (!img) {
        st.SkipWithError(img.error().to_string().c_str());
        return;
    }
    std::vector<uint8_t> buf(4096);
    std::mt19937_64 rng(7);
    const uint64_t blocks = img->device->size() / 4096;
    for (auto _ : st) {
        uint64_t off = (rng() % blocks) * 4096;
        if (!img->device->read(off, buf)) st.SkipWithError("read failed");
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * 4096);
}
BENCHMARK_CAPTURE(BM_Read4k, raw, std::string("raw"));
BENCHMARK_CAPTURE(BM_Read4k, qcow2, std::string("qcow2"));
BENCHMARK_CAPTURE(BM_Read4k, vmdk, std::string("vmdk"));
BENCHMARK_CAPTURE(BM_Read4k, vhdx, std::string("vhdx"));
BENCHMARK_CAPTURE(BM_Read4k, vhd, std::string("vhd"));
BENCHMARK_CAPTURE(BM_Read4k, vdi, std::string("vdi"));

void BM_Convert(benchmark::State& st, const std::string& from, const std::string& to, bool compress) {
    Fixture fx(from);
    if (!fx.ok) {
        st.SkipWithError(("cannot create " + from).c_str());
        return;
    }
    auto img = vdisk::open_image(fx.reg, fx.fs, "img", {});
    if (!img) {
        st.SkipWithError(img.error().to_string().c_str());
        return;
    }
    for (auto _ : st) {
        vdisk::ConvertOptions co;
        co.output_format = to;
        co.compress = compress;
        auto r = vdisk::convert(fx.reg, *img->device, fx.fs, "out", co);
        if (!r) st.SkipWithError(r.error().to_string().c_str());
        (void)fx.fs.remove("out");
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(img->device->size() / 4));
}
BENCHMARK_CAPTURE(BM_Convert, raw_to_raw, std::string("raw"), std::string("raw"), false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Convert, vmdk_to_qcow2, std::string("vmdk"), std::string("qcow2"), false)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Convert, raw_to_qcow2_c, std::string("raw"), std::string("qcow2"), true)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
