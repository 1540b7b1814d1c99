// SPDX-License-Identifier: Apache-2.0
// In-memory FileSystem: several named files, for tests, fuzzers and benchmarks.
#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "vdisk/io.hpp"

namespace vdisk {
namespace {

// Writes beyond this size fail: a fuzzed image must not make the memory file system allocate without bound.
constexpr uint64_t kMaxMemoryFileSize = 4ull << 30;

struct Node {
    std::vector<uint8_t> data;
    uint64_t id = 0;
};

class MemoryFile final : public File {
public:
    MemoryFile(std::shared_ptr<Node> node, std::string name, bool writable)
        : node_(std::move(node)), name_(std::move(name)), writable_(writable) {}

    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
        const auto& d = node_->data;
        if (offset >= d.size()) return size_t{0};
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), d.size() - offset));
        if (n) std::memcpy(buf.data(), d.data() + offset, n);
        return n;
    }

    Status write_at(uint64_t offset, std::span<const uint8_t> buf) override {
        if (!writable_) return error(ErrorCode::read_only, "file opened read-only");
        if (offset > kMaxMemoryFileSize || buf.size() > kMaxMemoryFileSize - offset)
            return error(ErrorCode::limit_exceeded, "memory file would exceed " + hex(kMaxMemoryFileSize) + " bytes");
        auto& d = node_->data;
        if (offset + buf.size() > d.size()) d.resize(static_cast<size_t>(offset + buf.size()));
        if (!buf.empty()) std::memcpy(d.data() + offset, buf.data(), buf.size());
        return ok();
    }

    Result<uint64_t> size() override { return static_cast<uint64_t>(node_->data.size()); }

    Status resize(uint64_t new_size) override {
        if (!writable_) return error(ErrorCode::read_only, "file opened read-only");
        if (new_size > kMaxMemoryFileSize)
            return error(ErrorCode::limit_exceeded, "memory file would exceed " + hex(kMaxMemoryFileSize) + " bytes");
        node_->data.resize(static_cast<size_t>(new_size));
        return ok();
    }

    Status sync() override { return ok(); }

    Status punch_hole(uint64_t offset, uint64_t len) override {
        if (!writable_) return error(ErrorCode::read_only, "file opened read-only");
        auto& d = node_->data;
        if (offset >= d.size()) return ok();
        uint64_t end = std::min<uint64_t>(d.size(), offset + std::min<uint64_t>(len, d.size()));
        std::fill(d.begin() + static_cast<std::ptrdiff_t>(offset), d.begin() + static_cast<std::ptrdiff_t>(end), 0);
        return ok();
    }

    std::optional<uint64_t> allocated_size() override { return node_->data.size(); }
    const std::string& name() const override { return name_; }
    FileIdentity identity() const override { return FileIdentity{0xffffffff, node_->id}; }

private:
    Error error(ErrorCode c, std::string msg) const {
        Error e = make_error(c, std::move(msg));
        e.file = name_;
        return e;
    }
    std::shared_ptr<Node> node_;
    std::string name_;
    bool writable_;
};

std::string key_of(std::string_view name) {
    // "./a" and "a" are the same file; resolve_reference folds the rest.
    return resolve_reference("", name);
}

}  // namespace

struct MemoryFileSystem::Impl {
    std::map<std::string, std::shared_ptr<Node>> files;
    uint64_t next_id = 1;
    mutable std::mutex mu;
};

MemoryFileSystem::MemoryFileSystem() : impl_(std::make_unique<Impl>()) {}
MemoryFileSystem::~MemoryFileSystem() = default;

Result<std::unique_ptr<File>> MemoryFileSystem::open(std::string_view name, Access access) {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->files.find(key_of(name));
    if (it == impl_->files.end()) {
        Error e = make_error(ErrorCode::not_found, "open: No such file or directory");
        e.file = std::string(name);
        return e;
    }
    return std::unique_ptr<File>(new MemoryFile(it->second, std::string(name), access == Access::read_write));
}

Result<std::unique_ptr<File>> MemoryFileSystem::create(std::string_view name, bool exclusive) {
    std::lock_guard lock(impl_->mu);
    auto key = key_of(name);
    auto it = impl_->files.find(key);
    if (it != impl_->files.end() && exclusive) {
        Error e = make_error(ErrorCode::access_denied, "create: File exists");
        e.file = std::string(name);
        return e;
    }
    auto node = std::make_shared<Node>();
    node->id = impl_->next_id++;
    impl_->files[key] = node;
    return std::unique_ptr<File>(new MemoryFile(node, std::string(name), true));
}

Status MemoryFileSystem::rename(std::string_view from, std::string_view to) {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->files.find(key_of(from));
    if (it == impl_->files.end()) {
        Error e = make_error(ErrorCode::not_found, "rename: No such file or directory");
        e.file = std::string(from);
        return e;
    }
    auto node = it->second;
    impl_->files.erase(it);
    impl_->files[key_of(to)] = node;
    return ok();
}

Status MemoryFileSystem::remove(std::string_view name) {
    std::lock_guard lock(impl_->mu);
    if (impl_->files.erase(key_of(name)) == 0) {
        Error e = make_error(ErrorCode::not_found, "remove: No such file or directory");
        e.file = std::string(name);
        return e;
    }
    return ok();
}

bool MemoryFileSystem::exists(std::string_view name) {
    std::lock_guard lock(impl_->mu);
    return impl_->files.count(key_of(name)) != 0;
}

Result<std::vector<std::string>> MemoryFileSystem::list(std::string_view dir) {
    std::lock_guard lock(impl_->mu);
    std::string want = key_of(dir);
    if (want == ".") want.clear();  // the root, which is how dir_name() names it
    std::string prefix(dir);
    if (!prefix.empty() && prefix.back() != '/') prefix += '/';
    std::vector<std::string> out;
    for (auto& [k, v] : impl_->files) {
        if (dir_name(k) != want) continue;
        if (out.size() == kMaxListEntries) {
            Error e = make_error(ErrorCode::limit_exceeded,
                                 "directory holds more than " + std::to_string(kMaxListEntries) + " files");
            e.file = std::string(dir);
            return e;
        }
        out.push_back(prefix + std::string(base_name(k)));
    }
    return out;  // the map keeps keys sorted, and one directory's keys share their prefix
}

void MemoryFileSystem::add(std::string_view name, std::vector<uint8_t> content) {
    std::lock_guard lock(impl_->mu);
    auto node = std::make_shared<Node>();
    node->id = impl_->next_id++;
    node->data = std::move(content);
    impl_->files[key_of(name)] = std::move(node);
}

std::optional<std::vector<uint8_t>> MemoryFileSystem::content(std::string_view name) const {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->files.find(key_of(name));
    if (it == impl_->files.end()) return std::nullopt;
    return it->second->data;
}

std::vector<std::string> MemoryFileSystem::names() const {
    std::lock_guard lock(impl_->mu);
    std::vector<std::string> out;
    for (auto& [k, v] : impl_->files) out.push_back(k);
    return out;
}

}  // namespace vdisk
