// SPDX-License-Identifier: Apache-2.0
// raw: the file is the disk. Allocation comes from the host's SEEK_DATA/SEEK_HOLE.
#include <algorithm>
#include <vector>

#include "util/checked.hpp"
#include "vdisk/format.hpp"

namespace vdisk {
namespace {

class RawDevice final : public BlockDevice {
public:
    RawDevice(std::unique_ptr<File> file, uint64_t size, bool read_only)
        : BlockDevice(size, read_only), file_(std::move(file)) {}

    std::vector<File*> files() const override { return {file_.get()}; }
    uint64_t write_granularity() const override { return 1; }

protected:
    Status do_read(uint64_t offset, std::span<uint8_t> buf) override { return read_zero_fill(*file_, offset, buf); }
    Status do_write(uint64_t offset, std::span<const uint8_t> buf) override { return file_->write_at(offset, buf); }
    Status do_write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) override {
        if (may_unmap) return file_->punch_hole(offset, len);
        return BlockDevice::do_write_zeroes(offset, len, may_unmap);
    }
    Status do_discard(uint64_t offset, uint64_t len) override { return file_->punch_hole(offset, len); }
    Status do_flush() override { return file_->sync(); }
    Status do_resize(uint64_t new_size) override {
        VDISK_TRY(file_->resize(new_size));
        set_size(new_size);
        return ok();
    }
    Result<Extent> do_block_status(uint64_t offset, uint64_t max_len) override {
        Extent e;
        e.offset = offset;
        VDISK_ASSIGN(auto range, file_->next_data(offset));
        if (range && range->start <= offset) {
            e.kind = ExtentKind::data;
            e.length = std::min(max_len, range->end - offset);
            e.file = file_.get();
            e.host_offset = offset;
        } else {
            // A hole still maps to the same place in the file (qemu-img map reports its offset too).
            e.kind = ExtentKind::zero;
            e.length = range ? std::min(max_len, range->start - offset) : max_len;
            e.file = file_.get();
            e.host_offset = offset;
        }
        return e;
    }
    ImageInfo do_info() const override {
        ImageInfo i;
        i.format = "raw";
        i.virtual_size = size();
        return i;
    }

private:
    std::unique_ptr<File> file_;
};

constexpr OptionSpec kOptions[] = {
    {"preallocation", "off (sparse), falloc (reserve space) or full (write zeros)"},
};

class RawFormat final : public Format {
public:
    std::string_view name() const noexcept override { return "raw"; }
    int probe(std::span<const uint8_t>, std::span<const uint8_t>, uint64_t) const noexcept override { return 1; }

    Result<std::unique_ptr<BlockDevice>> open(std::unique_ptr<File> file, const OpenContext& ctx) const override {
        VDISK_ASSIGN(uint64_t size, file->size());
        return std::unique_ptr<BlockDevice>(new RawDevice(std::move(file), size, !ctx.options().read_write));
    }

    std::span<const OptionSpec> create_options() const noexcept override { return kOptions; }
    bool can_stream(const CreateOptions& opts) const noexcept override {
        // Preallocation asks for allocated blocks, which a pipe does not have; off is the default.
        auto p = opts.get("preallocation");
        return !p || *p == "off";
    }

    // Every byte of the virtual disk is a byte of the file, allocated or not (qemu-img's raw_measure).
    Result<MeasureResult> measure(const CreateOptions&, const MeasureSource& src) const override {
        MeasureResult r;
        uint64_t bytes = src.virtual_size;
        if (!src.has_image) {
            auto up = util::align_up(bytes, 512);
            if (!up) return make_error(ErrorCode::invalid_argument, "size " + std::to_string(bytes) + " is too large");
            bytes = *up;
        }
        r.required = r.fully_allocated = bytes;
        return r;
    }

    Result<std::unique_ptr<BlockDevice>> create(const CreateOptions& opts, const OpenContext& ctx) const override {
        std::string prealloc = opts.get("preallocation").value_or("off");
        if (prealloc != "off" && prealloc != "falloc" && prealloc != "full")
            return make_error(ErrorCode::invalid_argument,
                              "preallocation must be off, falloc or full, not '" + prealloc + "'");
        uint64_t size = *opts.size;
        VDISK_ASSIGN(auto file, ctx.fs().create(ctx.image_name()));
        VDISK_TRY(file->resize(size));
        if (prealloc == "falloc") {
            VDISK_TRY(file->allocate(0, size));
        } else if (prealloc == "full") {
            std::vector<uint8_t> zeros(1 << 20, 0);
            for (uint64_t off = 0; off < size; off += zeros.size()) {
                auto n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), size - off));
                VDISK_TRY(file->write_at(off, std::span<const uint8_t>(zeros.data(), n)));
            }
        }
        return std::unique_ptr<BlockDevice>(new RawDevice(std::move(file), size, false));
    }
};

}  // namespace

std::unique_ptr<Format> make_raw_format() { return std::make_unique<RawFormat>(); }

}  // namespace vdisk
