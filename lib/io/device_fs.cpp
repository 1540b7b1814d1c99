// SPDX-License-Identifier: Apache-2.0
// A FileSystem whose one file is an existing block device, presented to a format as a new empty file.
#include <algorithm>
#include <memory>

#include "io/device_fs.hpp"

namespace vdisk {
namespace {

// Formats are written as if into a fresh file: its size starts at 0 and grows with writes and resizes,
// and whatever was never written reads as zeros. On the device the stale bytes are still there, so every
// range the format skips (a gap before a write, the tail at sync) is zeroed on the device before the file
// is called done, unless the caller knows the device already reads as zeros. Nothing past the image's end
// is touched, and the device is never truncated or replaced.
struct DeviceState {
    std::unique_ptr<File> dev;
    uint64_t capacity = 0;
    uint64_t logical = 0;  // the size the format sees
    uint64_t written = 0;  // below this the device holds what the format wrote (or zeroed); above it, stale
    bool known_zero = false;
};

class FreshDeviceFile final : public File {
public:
    explicit FreshDeviceFile(std::shared_ptr<DeviceState> s) : s_(std::move(s)) {}

    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
        if (offset >= s_->logical) return size_t{0};
        const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), s_->logical - offset));
        size_t real = 0;
        if (offset < s_->written) {
            real = static_cast<size_t>(std::min<uint64_t>(n, s_->written - offset));
            VDISK_TRY(read_exact(*s_->dev, offset, buf.subspan(0, real), "device"));
        }
        std::fill(buf.begin() + static_cast<std::ptrdiff_t>(real), buf.begin() + static_cast<std::ptrdiff_t>(n), 0);
        return n;
    }

    Status write_at(uint64_t offset, std::span<const uint8_t> buf) override {
        const uint64_t end = offset + buf.size();
        VDISK_TRY(fits(end));
        if (offset > s_->written) VDISK_TRY(zero(s_->written, offset - s_->written));
        VDISK_TRY(s_->dev->write_at(offset, buf));
        s_->written = std::max(s_->written, end);
        s_->logical = std::max(s_->logical, end);
        return ok();
    }

    Result<uint64_t> size() override { return s_->logical; }

    Status resize(uint64_t new_size) override {
        VDISK_TRY(fits(new_size));
        s_->logical = new_size;
        s_->written = std::min(s_->written, new_size);
        return ok();
    }

    Status sync() override {
        if (s_->logical > s_->written) {
            VDISK_TRY(zero(s_->written, s_->logical - s_->written));
            s_->written = s_->logical;
        }
        return s_->dev->sync();
    }

    Status punch_hole(uint64_t offset, uint64_t len) override {
        if (offset >= s_->written) return ok();  // reads as zeros already, and will be zeroed on the device
        return s_->dev->punch_hole(offset, std::min(len, s_->written - offset));
    }

    Status allocate(uint64_t offset, uint64_t len) override {
        VDISK_TRY(fits(offset + len));
        s_->logical = std::max(s_->logical, offset + len);
        return ok();
    }

    const std::string& name() const override { return s_->dev->name(); }
    FileIdentity identity() const override { return s_->dev->identity(); }

private:
    Status fits(uint64_t end) const {
        if (end <= s_->capacity) return ok();
        Error e = make_error(ErrorCode::out_of_range, "the device is too small for this image: it needs at least " +
                                                          std::to_string(end) + " bytes, the device holds " +
                                                          std::to_string(s_->capacity));
        e.file = s_->dev->name();
        return e;
    }
    Status zero(uint64_t offset, uint64_t len) {
        if (s_->known_zero || len == 0) return ok();
        return s_->dev->punch_hole(offset, len);
    }
    std::shared_ptr<DeviceState> s_;
};

class DeviceFileSystem final : public FileSystem {
public:
    DeviceFileSystem(FileSystem& base, std::string name, uint64_t capacity, bool known_zero)
        : base_(base), name_(std::move(name)), capacity_(capacity), known_zero_(known_zero) {}

    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override {
        if (name == name_ && s_) return std::unique_ptr<File>(new FreshDeviceFile(s_));
        return base_.open(name, access);
    }
    Result<std::unique_ptr<File>> create(std::string_view name, bool) override {
        if (name != name_) {
            Error e = make_error(ErrorCode::unsupported,
                                 "the target is a block device, which holds one file; this "
                                 "output also needs '" +
                                     std::string(name) + "'");
            e.file = name_;
            return e;
        }
        VDISK_ASSIGN(auto dev, base_.open(name_, Access::read_write));
        s_ = std::make_shared<DeviceState>();
        s_->dev = std::move(dev);
        s_->capacity = capacity_;
        s_->known_zero = known_zero_;
        return std::unique_ptr<File>(new FreshDeviceFile(s_));
    }
    Status rename(std::string_view, std::string_view) override {
        return make_error(ErrorCode::unsupported, "a block device target cannot be renamed");
    }
    Status remove(std::string_view) override { return ok(); }  // a device is never removed
    bool exists(std::string_view name) override { return name == name_ ? s_ != nullptr : base_.exists(name); }

private:
    FileSystem& base_;
    std::string name_;
    uint64_t capacity_;
    bool known_zero_;
    std::shared_ptr<DeviceState> s_;
};

}  // namespace

std::unique_ptr<FileSystem> make_device_file_system(FileSystem& base, std::string name, uint64_t capacity,
                                                    bool known_zero) {
    return std::make_unique<DeviceFileSystem>(base, std::move(name), capacity, known_zero);
}

}  // namespace vdisk
