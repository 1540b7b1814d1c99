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
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "forwarding.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk::testlib {

/// Tight limits so a fuzzed header cannot make one input expensive. Inputs are at most 1 MiB (smoke.sh's
/// -max_len), so no table an input can hold whole needs more than 1 MiB, and 64Ki entries walked per image
/// is twice what the most demanding seed needs (28Ki to open and check the corpus's 16 GiB VMDK). What a
/// mutant that walks up to the limit costs is proportional to it: with 4Mi entries such mutants took
/// 25-60 ms each (qcow2, VDI); a VMDK check spends about half a microsecond per entry.
inline OpenOptions fuzz_options(std::string_view format) {
    OpenOptions o;
    o.format = std::string(format);
    o.limits.max_metadata_bytes = 1u << 20;
    o.limits.max_cache_bytes = 1u << 20;
    o.limits.max_descriptor_bytes = 64u << 10;
    o.limits.max_extents = 64;
    o.limits.max_chain_depth = 4;
    o.limits.max_snapshots = 256;
    o.limits.max_l1_bytes = 1u << 20;
    o.limits.max_snapshot_table_bytes = 1u << 20;
    o.limits.max_image_memory = 8u << 20;
    o.limits.max_chain_memory = 16u << 20;
    o.limits.max_work = 1u << 16;
    o.limits.max_untrusted_memory = 8u << 20;
    o.limits.max_untrusted_work = 1u << 16;
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
        // The library refuses work past its limit; counting far past it means some walk did not ask. (One
        // refused request may overshoot by a table's entries: 1 MiB of metadata holds at most 256Ki.)
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

/// The input itself as one or more read-only files, served in place: no copy of up to 1 MiB (and no fresh
/// pages to fault in) per execution, and ASan still sees every read past the input's end.
class InputFs final : public FileSystem {
public:
    void add(std::string name, std::span<const uint8_t> bytes) { files_.push_back({std::move(name), bytes}); }
    Result<std::unique_ptr<File>> open(std::string_view name, Access) override {
        const std::string key = resolve_reference("", name);
        for (size_t i = 0; i < files_.size(); ++i)
            if (files_[i].name == key) return std::unique_ptr<File>(std::make_unique<InputFile>(files_[i], i + 1));
        Error e = make_error(ErrorCode::not_found, "open: No such file or directory");
        e.file = std::string(name);
        return e;
    }
    Result<std::unique_ptr<File>> create(std::string_view, bool) override { return denied(); }
    Status rename(std::string_view, std::string_view) override { return denied(); }
    Status remove(std::string_view) override { return denied(); }
    bool exists(std::string_view name) override {
        const std::string key = resolve_reference("", name);
        return std::any_of(files_.begin(), files_.end(), [&](const Entry& f) { return f.name == key; });
    }
    Result<std::vector<std::string>> list(std::string_view dir) override {
        std::string want = resolve_reference("", dir);
        if (want == ".") want.clear();
        std::string prefix(dir);
        if (!prefix.empty() && prefix.back() != '/') prefix += '/';
        std::vector<std::string> out;
        for (const Entry& f : files_)
            if (dir_name(f.name) == want) out.push_back(prefix + std::string(base_name(f.name)));
        std::sort(out.begin(), out.end());
        return out;
    }

private:
    struct Entry {
        std::string name;
        std::span<const uint8_t> bytes;
    };
    class InputFile final : public File {
    public:
        InputFile(Entry e, uint64_t id) : e_(std::move(e)), id_(id) {}
        Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
            if (offset >= e_.bytes.size()) return size_t(0);
            size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), e_.bytes.size() - offset));
            std::memcpy(buf.data(), e_.bytes.data() + offset, n);
            return n;
        }
        Status write_at(uint64_t, std::span<const uint8_t>) override { return denied(); }
        Result<uint64_t> size() override { return uint64_t(e_.bytes.size()); }
        Status resize(uint64_t) override { return denied(); }
        Status sync() override { return ok(); }
        const std::string& name() const override { return e_.name; }
        FileIdentity identity() const override { return FileIdentity{1, id_}; }

    private:
        Entry e_;
        uint64_t id_;
    };
    static Error denied() { return make_error(ErrorCode::read_only, "fuzz input is read-only"); }
    std::vector<Entry> files_;
};

/// Open `name` and use it as the commands do: info (JSON), map (block_status over the device, large ones in
/// windows), reads of what the map reports, compare with itself (small devices), then the format's check.
/// Reads take the
/// start of every extent and a read across its end into the next one, up to `read_budget` bytes in all:
/// what a read costs in the sanitized build is mostly per byte (copies, zero fills), the code it reaches
/// is per extent and per boundary (a compressed cluster is inflated whole for any part of it), so 4 KiB at
/// each place reaches what whole extents did at a fraction of the cost.
inline void exercise(const Registry& reg, FileSystem& mem, std::string_view name, const OpenOptions& o,
                     uint64_t read_budget = 256u << 10, uint64_t input_size = UINT64_MAX) {
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
    std::vector<uint8_t> buf(4096);
    auto read = [&](uint64_t at, uint64_t len) {
        len = std::min<uint64_t>({len, buf.size(), read_budget});
        if (!len) return;
        (void)dev.read(at, std::span<uint8_t>(buf.data(), len));
        ++ib.reads;
        read_budget -= len;
    };
    // Map and read the first 64 MiB, then 16 windows of 4 MiB spread over the rest, the last one at the
    // end. A format's block status walks its tables entry by entry, so mapping all of a large sparse
    // device costs per grain: the corpus's 16 GiB VMDK took 150 ms per execution to map whole.
    constexpr uint64_t kHead = 64u << 20, kWindow = 4u << 20, kWindows = 16;
    unsigned steps = 0;
    auto walk = [&](uint64_t off, uint64_t end) {
        end = std::min(end, dev.size());
        while (off < end && steps++ < 1024) {
            auto m = map_extent(dev, off, end - off);
            if (!m) return;
            read(off, m->length);
            off += m->length;
            if (off < dev.size() && off >= 512) read(off - 512, 1024);
        }
    };
    walk(0, kHead);
    if (dev.size() > kHead + kWindow)
        for (uint64_t k = 1; k <= kWindows; ++k) {
            uint64_t at = (kHead + (dev.size() - kHead - kWindow) / kWindows * k) & ~uint64_t{4095};
            walk(at, at + kWindow);
        }
    // Reads at the very end and at an odd offset, made whatever the map's reads took.
    read_budget = std::max<uint64_t>(read_budget, 4096 + 777);
    if (dev.size() >= 4096) read(dev.size() - 4096, 4096);
    if (dev.size() > 777) read(dev.size() / 2 - 1, 777);
    ib.check_device(dev);
    // compare walks both devices' block status and reads what is allocated: only for small devices (the
    // seeds are 1 MiB), where it cannot turn into a read of the whole virtual size.
    if (dev.size() <= (1u << 20)) {
        (void)compare(dev, dev);
        ib.reads += dev.size() / 4096 + 1;
    }
    if (img->format) {
        auto c = img->format->check(dev, RepairMode::none);
        if (c && c->messages.size() > max_check_messages)
            ib.over("check messages", c->messages.size(), max_check_messages);
    }
    ib.check_device(dev);
}

/// exercise() on one file holding `data` (served in place), named `name`, with fuzz_options.
inline void exercise_bytes(const Registry& reg, std::string_view name, const uint8_t* data, size_t size,
                           std::string_view format, uint64_t read_budget = 256u << 10) {
    InputFs fs;
    fs.add(std::string(name), {data, size});
    exercise(reg, fs, name, fuzz_options(format), read_budget, size);
}

}  // namespace vdisk::testlib
