// SPDX-License-Identifier: Apache-2.0
// vhdx: headers, log replay (in memory, read-only), region table, metadata, BAT and sector bitmaps.
//
// The smallest VHDX is 4 MiB, nearly all zeros (its regions are 1 MiB aligned), and libFuzzer slows down with
// input size. Inputs are therefore a compact form of the file: the first 320 KiB (identifier, both headers,
// both region tables) are placed at 0, the next 4 KiB at 2 MiB (the start of the BAT where qemu-img puts it),
// the next 72 KiB at 3 MiB (metadata table and items) and the rest at 4 MiB (a payload block); everything
// else reads as zeros. A fuzzed region table can still point anywhere in the file. fuzz/smoke.sh cuts its
// VHDX seed (about 460 KiB) out of a qemu-img image this way. The file is served in place from the input
// (no 4 MiB buffer per execution).
#include <cstring>

#include "builtin_formats.hpp"
#include "exercise.hpp"
#include "registry.hpp"
#include "fuzz_mutator.hpp"

namespace {
constexpr size_t K = 1024, M = 1024 * K;
struct Part {
    size_t file_offset, length;  // length 0: the rest of the input
};
constexpr Part kParts[] = {{0, 320 * K}, {2 * M, 4 * K}, {3 * M, 72 * K}, {4 * M, 0}};

// The expanded file, read-only, reading straight from the input's parts.
class CompactFile final : public vdisk::File {
public:
    CompactFile(const uint8_t* data, size_t size) : name_("image.vhdx") {
        size_t in = 0;
        for (const Part& p : kParts) {
            if (in >= size) break;
            size_t n = p.length ? std::min(p.length, size - in) : size - in;
            segs_.push_back({p.file_offset, data + in, n});
            size_ = std::max<uint64_t>(size_, p.file_offset + n);
            in += n;
        }
        if (size > kParts[0].length) size_ = std::max<uint64_t>(size_, 4 * M);
    }
    vdisk::Result<size_t> read_at(uint64_t off, std::span<uint8_t> buf) override {
        if (off >= size_) return size_t(0);
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size_ - off));
        std::memset(buf.data(), 0, n);
        for (const Seg& s : segs_) {
            uint64_t a = std::max<uint64_t>(off, s.at), b = std::min<uint64_t>(off + n, s.at + s.len);
            if (a < b) std::memcpy(buf.data() + (a - off), s.data + (a - s.at), b - a);
        }
        return n;
    }
    vdisk::Status write_at(uint64_t, std::span<const uint8_t>) override { return denied(); }
    vdisk::Result<uint64_t> size() override { return size_; }
    vdisk::Status resize(uint64_t) override { return denied(); }
    vdisk::Status sync() override { return vdisk::ok(); }
    const std::string& name() const override { return name_; }
    vdisk::FileIdentity identity() const override { return vdisk::FileIdentity{1, 1}; }

private:
    static vdisk::Error denied() { return vdisk::make_error(vdisk::ErrorCode::read_only, "fuzz input is read-only"); }
    struct Seg {
        uint64_t at;
        const uint8_t* data;
        size_t len;
    };
    std::vector<Seg> segs_;
    uint64_t size_ = 0;
    std::string name_;
};

// One file, read-only; everything else does not exist.
class CompactFs final : public vdisk::FileSystem {
public:
    CompactFs(const uint8_t* data, size_t size) : data_(data), size_(size) {}
    vdisk::Result<std::unique_ptr<vdisk::File>> open(std::string_view name, vdisk::Access) override {
        if (name != "image.vhdx") return vdisk::make_error(vdisk::ErrorCode::not_found, "no such file");
        return std::unique_ptr<vdisk::File>(std::make_unique<CompactFile>(data_, size_));
    }
    vdisk::Result<std::unique_ptr<vdisk::File>> create(std::string_view, bool) override {
        return vdisk::make_error(vdisk::ErrorCode::read_only, "fuzz file system is read-only");
    }
    vdisk::Status rename(std::string_view, std::string_view) override {
        return vdisk::make_error(vdisk::ErrorCode::read_only, "fuzz file system is read-only");
    }
    vdisk::Status remove(std::string_view) override {
        return vdisk::make_error(vdisk::ErrorCode::read_only, "fuzz file system is read-only");
    }
    bool exists(std::string_view name) override { return name == "image.vhdx"; }

private:
    const uint8_t* data_;
    size_t size_;
};
}  // namespace

VDISK_FUZZ_CHECKSUM_MUTATOR

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    CompactFs fs(data, size);
    const auto reg = vdisk::testlib::registry_of(vdisk::make_raw_format, vdisk::make_vhdx_format);
    vdisk::testlib::exercise(reg, fs, "image.vhdx", vdisk::testlib::fuzz_options("vhdx"), 256u << 10, size);
    return 0;
}
