// SPDX-License-Identifier: Apache-2.0
// Shared by the libFuzzer targets and the test suites (random-corruption cases run the same body on
// patched images). The body of the libFuzzer targets: open an image from an in-memory file system and exercise every
// path a user reaches (info, map, read, compare, check) with bounded work. Any crash, sanitizer report,
// hang or unbounded allocation is a bug; so is an input that costs far more than its size warrants, which
// the per-input budget below turns into a crash libFuzzer reports (issue 13: tiny images that cost
// gigabytes or minutes without ever crashing).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "forwarding.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk::testlib {

/// Tight limits so a fuzzed header cannot make one input expensive.
inline OpenOptions fuzz_options(std::string_view format) {
    OpenOptions o;
    o.format = std::string(format);
    o.limits.max_metadata_bytes = 8u << 20;
    o.limits.max_cache_bytes = 4u << 20;
    o.limits.max_descriptor_bytes = 64u << 10;
    o.limits.max_extents = 64;
    o.limits.max_chain_depth = 4;
    o.limits.max_snapshots = 256;
    o.limits.max_l1_bytes = 4u << 20;
    o.limits.max_snapshot_table_bytes = 1u << 20;
    o.limits.max_image_memory = 32u << 20;
    o.limits.max_chain_memory = 64u << 20;
    o.limits.max_work = 1u << 22;
    o.limits.max_untrusted_memory = 32u << 20;
    o.limits.max_untrusted_work = 1u << 22;
    return o;
}

/// What one input may cost, whatever the library's own limits say: bytes read from the memory file system
/// (a walk that re-reads one table a thousand times shows here), pieces of a log overlay visited per read
/// (a per-read scan shows here) and the work the image's budget counted. libFuzzer's -malloc_limit_mb
/// (smoke.sh) catches single huge allocations (state sized by references instead of by the file).
struct InputBudget {
    uint64_t input_size = 0;
    uint64_t bytes_read = 0;
    uint64_t reads = 0;

    uint64_t read_allowance() const { return 64 * input_size + (256u << 20); }
    void over(const char* what, uint64_t value, uint64_t limit) const {
        std::fprintf(stderr, "vdisk fuzz: input of %llu bytes exceeds the per-input budget: %s %llu > %llu\n",
                     (unsigned long long)input_size, what, (unsigned long long)value, (unsigned long long)limit);
        __builtin_trap();
    }
    void check_device(const BlockDevice& dev) const {
        const Budget& b = *dev.budget();
        // The library refuses work past its limit; counting far past it means some walk did not ask.
        if (b.work_done() > b.work_limit() + (1u << 20) && b.work_limit() != UINT64_MAX)
            over("work", b.work_done(), b.work_limit());
        if (b.memory_peak() > b.memory_limit()) over("memory", b.memory_peak(), b.memory_limit());
        if (b.noted() > 4096 * (reads + 16)) over("pieces visited by reads", b.noted(), 4096 * (reads + 16));
        if (bytes_read > read_allowance()) over("bytes read", bytes_read, read_allowance());
    }
};

/// A file that counts what is read through it into an InputBudget.
class CountingFile final : public ForwardingFile {
public:
    CountingFile(std::unique_ptr<File> f, InputBudget& b) : ForwardingFile(std::move(f)), b_(b) {}
    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
        b_.bytes_read += buf.size();
        if (b_.bytes_read > b_.read_allowance()) b_.over("bytes read", b_.bytes_read, b_.read_allowance());
        return inner().read_at(offset, buf);
    }

private:
    InputBudget& b_;
};

/// A file system whose files count their reads.
class CountingFs final : public ForwardingFs {
public:
    CountingFs(FileSystem& fs, InputBudget& b) : ForwardingFs(fs), b_(b) {}
    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override {
        VDISK_ASSIGN(auto f, base().open(name, access));
        return std::unique_ptr<File>(std::make_unique<CountingFile>(std::move(f), b_));
    }
    Result<std::vector<std::string>> list(std::string_view dir) override { return base().list(dir); }

private:
    InputBudget& b_;
};

/// Open `name` and use it as the commands do: info (JSON), map (block_status over the whole device), read
/// up to `read_budget` bytes of what the map reports, compare with itself (small devices), then the
/// format's check. The read budget is small on purpose: coverage comes from many different inputs, and a
/// mutated header declaring terabytes of compressed data would otherwise make one input cost tens of
/// milliseconds of inflating.
inline void exercise(const Registry& reg, FileSystem& mem, std::string_view name, const OpenOptions& o,
                     uint64_t read_budget = 1u << 20, uint64_t input_size = UINT64_MAX) {
    InputBudget ib;
    ib.input_size = input_size;
    if (input_size == UINT64_MAX) {
        ib.input_size = 0;
        if (auto f = mem.open(name, Access::read_only))
            if (auto n = (*f)->size()) ib.input_size = *n;
    }
    CountingFs fs(mem, ib);
    auto img = open_image(reg, fs, name, o);
    if (!img) {
        (void)img.error().to_string();
        return;
    }
    BlockDevice& dev = *img->device;
    (void)info_json(dev, name).dump();
    std::vector<uint8_t> buf(64 * 1024);
    uint64_t off = 0;
    unsigned steps = 0;
    while (off < dev.size() && steps++ < 1024) {
        auto m = map_extent(dev, off, 1ull << 30);
        if (!m) break;
        uint64_t n = std::min<uint64_t>({m->length, buf.size(), read_budget});
        if (n && read_budget) {
            (void)dev.read(off, std::span<uint8_t>(buf.data(), n));
            ++ib.reads;
            read_budget -= n;
        }
        off += m->length;
    }
    // Reads at the very end and at odd offsets.
    if (dev.size() >= 4096) (void)dev.read(dev.size() - 4096, std::span<uint8_t>(buf.data(), 4096));
    if (dev.size() > 777) (void)dev.read(dev.size() / 2 - 1, std::span<uint8_t>(buf.data(), 777));
    ib.reads += 2;
    ib.check_device(dev);
    // compare walks both devices' block status and reads what is allocated: only for small devices (the
    // seeds are 1 MiB), where it cannot turn into a read of the whole virtual size.
    if (dev.size() <= (1u << 20)) {
        (void)compare(dev, dev);
        ib.reads += dev.size() / 4096 + 1;
    }
    if (img->format) {
        auto c = img->format->check(dev, RepairMode::none);
        if (c && c->messages.size() > max_check_messages) ib.over("check messages", c->messages.size(), max_check_messages);
    }
    ib.check_device(dev);
}

/// exercise() on one file holding `data`, named `name`, on a fresh memory file system, with fuzz_options.
inline void exercise_bytes(const Registry& reg, std::string_view name, const uint8_t* data, size_t size,
                           std::string_view format, uint64_t read_budget = 1u << 20) {
    MemoryFileSystem fs;
    fs.add(std::string(name), std::vector<uint8_t>(data, data + size));
    exercise(reg, fs, name, fuzz_options(format), read_budget);
}

}  // namespace vdisk::testlib
