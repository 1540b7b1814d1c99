// SPDX-License-Identifier: Apache-2.0
// Which zlib settings compress qcow2 clusters fastest at qemu-img's size? qemu inflates zlib clusters with a
// 4 KiB window (windowBits -12), so only encoders that can limit their window qualify; this sweeps zlib's.
//
// usage: vdisk_deflate_tune RAW_IMAGE [CLUSTERS] [LEVEL,MEMLEVEL[,GOOD,LAZY,NICE,CHAIN]]...
// Samples CLUSTERS (default 800) non-zero 64 KiB clusters spread over the allocated ranges of RAW_IMAGE
// (SEEK_DATA), compresses each with every configuration, and prints the compressed fraction, the size
// against qemu-img's own setting (level 6, memLevel 9) and the speed in MB/s of CPU time (thread CPU time,
// so a loaded machine changes the figures less than wall time would).
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

namespace {
constexpr size_t kCluster = 64 * 1024;

struct Config {
    int level = 6, mem = 9, good = -1, lazy = 0, nice = 0, chain = 0;
    std::string name;
};

struct Outcome {
    size_t bytes = 0;
    double cpu_seconds = 0;
};

double thread_cpu() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

std::vector<std::vector<unsigned char>> sample_clusters(int fd, size_t wanted) {
    std::vector<off_t> starts;
    for (off_t at = 0;;) {
        const off_t data = lseek(fd, at, SEEK_DATA);
        if (data < 0) break;
        const off_t hole = lseek(fd, data, SEEK_HOLE);
        for (off_t c = data / static_cast<off_t>(kCluster) * static_cast<off_t>(kCluster); c < hole;
             c += static_cast<off_t>(kCluster))
            starts.push_back(c);
        at = hole;
    }
    const size_t step = std::max<size_t>(1, starts.size() / std::max<size_t>(1, wanted));
    std::vector<std::vector<unsigned char>> out;
    for (size_t i = 0; i < starts.size() && out.size() < wanted; i += step) {
        std::vector<unsigned char> c(kCluster);
        if (pread(fd, c.data(), kCluster, starts[i]) != static_cast<ssize_t>(kCluster)) continue;
        if (std::any_of(c.begin(), c.end(), [](unsigned char b) { return b != 0; })) out.push_back(std::move(c));
    }
    return out;
}

Outcome run(const Config& cfg, const std::vector<std::vector<unsigned char>>& clusters) {
    z_stream zs{};
    if (deflateInit2(&zs, cfg.level, Z_DEFLATED, -12, cfg.mem, Z_DEFAULT_STRATEGY) != Z_OK) return {};
    std::vector<unsigned char> out(kCluster);
    Outcome o;
    const double t0 = thread_cpu();
    for (const auto& c : clusters) {
        deflateReset(&zs);  // resets the tuning too, so tune after it
        if (cfg.good >= 0) deflateTune(&zs, cfg.good, cfg.lazy, cfg.nice, cfg.chain);
        zs.next_in = const_cast<unsigned char*>(c.data());
        zs.avail_in = kCluster;
        zs.next_out = out.data();
        zs.avail_out = kCluster;
        // a cluster deflate cannot shrink is stored whole, as qemu-img stores it
        o.bytes += deflate(&zs, Z_FINISH) == Z_STREAM_END ? kCluster - zs.avail_out : kCluster;
    }
    o.cpu_seconds = thread_cpu() - t0;
    deflateEnd(&zs);
    return o;
}
}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s RAW_IMAGE [CLUSTERS] [LEVEL,MEMLEVEL[,GOOD,LAZY,NICE,CHAIN]]...\n", argv[0]);
        return 2;
    }
    const int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        std::perror(argv[1]);
        return 1;
    }
    const auto clusters = sample_clusters(fd, argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 800);
    close(fd);
    if (clusters.empty()) {
        std::fprintf(stderr, "%s: no allocated non-zero clusters\n", argv[1]);
        return 1;
    }
    std::vector<Config> configs;
    for (int i = 3; i < argc; ++i) {
        Config c;
        c.name = argv[i];
        if (std::sscanf(argv[i], "%d,%d,%d,%d,%d,%d", &c.level, &c.mem, &c.good, &c.lazy, &c.nice, &c.chain) < 2) {
            std::fprintf(stderr, "bad configuration %s\n", argv[i]);
            return 2;
        }
        configs.push_back(c);
    }
    if (configs.empty())
        for (const char* n : {"5,8", "4,9", "4,8", "4,7", "3,8"}) {
            Config c;
            c.name = n;
            std::sscanf(n, "%d,%d", &c.level, &c.mem);
            configs.push_back(c);
        }
    const double input = static_cast<double>(clusters.size() * kCluster);
    Config qemu;
    qemu.name = "6,9 (qemu-img)";
    const Outcome base = run(qemu, clusters);
    std::printf("%zu clusters of 64 KiB from %s\n%-22s %9s %9s %9s\n", clusters.size(), argv[1], "level,memLevel",
                "fraction", "vs qemu", "MB/s CPU");
    auto line = [&](const Config& c, const Outcome& o) {
        std::printf("%-22s %9.4f %+8.2f%% %9.1f\n", c.name.c_str(), static_cast<double>(o.bytes) / input,
                    100.0 * (static_cast<double>(o.bytes) / static_cast<double>(base.bytes) - 1.0),
                    input / o.cpu_seconds / 1e6);
    };
    line(qemu, base);
    for (const auto& c : configs) line(c, run(c, clusters));
}
