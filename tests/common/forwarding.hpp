// SPDX-License-Identifier: Apache-2.0
// A file and a file system that pass every required operation to another one, for tests and fuzz targets
// that watch or disturb some of them (count reads, fail reads in a range, snapshot at each sync): derive,
// override what is watched, and the rest goes through unchanged. Only the pure virtual operations are
// forwarded; an optional one (list, punch_hole, next_data ...) keeps the base class's behaviour unless the
// derived class forwards it too.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "vdisk/io.hpp"

namespace vdisk::testlib {

class ForwardingFile : public File {
public:
    explicit ForwardingFile(std::unique_ptr<File> inner) : inner_(std::move(inner)) {}
    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override { return inner_->read_at(offset, buf); }
    Status write_at(uint64_t offset, std::span<const uint8_t> buf) override { return inner_->write_at(offset, buf); }
    Result<uint64_t> size() override { return inner_->size(); }
    Status resize(uint64_t n) override { return inner_->resize(n); }
    Status sync() override { return inner_->sync(); }
    const std::string& name() const override { return inner_->name(); }
    FileIdentity identity() const override { return inner_->identity(); }

protected:
    File& inner() { return *inner_; }

private:
    std::unique_ptr<File> inner_;
};

class ForwardingFs : public FileSystem {
public:
    explicit ForwardingFs(FileSystem& base) : base_(base) {}
    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override {
        return base_.open(name, access);
    }
    Result<std::unique_ptr<File>> create(std::string_view name, bool exclusive = false) override {
        return base_.create(name, exclusive);
    }
    Status rename(std::string_view from, std::string_view to) override { return base_.rename(from, to); }
    Status remove(std::string_view name) override { return base_.remove(name); }
    bool exists(std::string_view name) override { return base_.exists(name); }

protected:
    FileSystem& base() { return base_; }

private:
    FileSystem& base_;
};

}  // namespace vdisk::testlib
