// SPDX-License-Identifier: Apache-2.0
// StagingFileSystem: created files live under temporary names until commit().
#include <algorithm>
#include <random>

#include "vdisk/io.hpp"

namespace vdisk {
namespace {

// A staged file under its temporary name, reporting errors under the name the user gave: "disk.qcow2:
// write: No space left on device", not ".disk.qcow2.vdisk-1f2e...".
class StagedFile final : public File {
public:
    StagedFile(std::unique_ptr<File> f, std::string temp, std::string final_name)
        : f_(std::move(f)), temp_(std::move(temp)), final_(std::move(final_name)) {}
    Result<size_t> read_at(uint64_t o, std::span<uint8_t> b) override { return fix(f_->read_at(o, b)); }
    Status write_at(uint64_t o, std::span<const uint8_t> b) override { return fix(f_->write_at(o, b)); }
    Result<uint64_t> size() override { return fix(f_->size()); }
    Status resize(uint64_t n) override { return fix(f_->resize(n)); }
    Status sync() override { return fix(f_->sync()); }
    Status punch_hole(uint64_t o, uint64_t n) override { return fix(f_->punch_hole(o, n)); }
    Status allocate(uint64_t o, uint64_t n) override { return fix(f_->allocate(o, n)); }
    Result<std::optional<DataRange>> next_data(uint64_t o) override { return fix(f_->next_data(o)); }
    std::optional<uint64_t> allocated_size() override { return f_->allocated_size(); }
    const std::string& name() const override { return final_; }
    FileIdentity identity() const override { return f_->identity(); }

private:
    template <typename R>
    R fix(R r) const {
        if (!r && (r.error().file == temp_ || r.error().file.empty())) r.error().file = final_;
        return r;
    }
    std::unique_ptr<File> f_;
    std::string temp_, final_;
};

}  // namespace

StagingFileSystem::StagingFileSystem(FileSystem& base) : base_(base) {}

StagingFileSystem::~StagingFileSystem() {
    if (!done_) abort();
}

const StagingFileSystem::Staged* StagingFileSystem::find(std::string_view final_name) const {
    for (auto& s : staged_)
        if (s.final_name == final_name) return &s;
    return nullptr;
}

Result<std::unique_ptr<File>> StagingFileSystem::open(std::string_view name, Access access) {
    if (auto* s = find(name)) {
        VDISK_ASSIGN(auto f, base_.open(s->temp_name, access));
        return std::unique_ptr<File>(new StagedFile(std::move(f), s->temp_name, s->final_name));
    }
    return base_.open(name, access);
}

Result<std::unique_ptr<File>> StagingFileSystem::create(std::string_view name, bool exclusive) {
    if (auto* s = find(name)) {
        VDISK_ASSIGN(auto f, base_.create(s->temp_name, false));
        return std::unique_ptr<File>(new StagedFile(std::move(f), s->temp_name, s->final_name));
    }
    if (exclusive && base_.exists(name)) {
        Error e = make_error(ErrorCode::access_denied, "create: File exists");
        e.file = std::string(name);
        return e;
    }
    std::random_device rd;
    for (int attempt = 0; attempt < 16; ++attempt) {
        std::string dir(dir_name(name));
        std::string temp = (dir.empty() ? "" : dir + "/") + "." + std::string(base_name(name)) + ".vdisk-" +
                           hex(rd() ^ (uint64_t(rd()) << 32)).substr(2);
        auto f = base_.create(temp, true);
        if (!f) {
            if (f.error().code == ErrorCode::access_denied && base_.exists(temp)) continue;
            return std::move(f).error();
        }
        staged_.push_back(Staged{std::string(name), temp});
        return std::unique_ptr<File>(new StagedFile(std::move(*f), temp, std::string(name)));
    }
    return make_error(ErrorCode::io, "could not find a free temporary name beside " + std::string(name));
}

Status StagingFileSystem::rename(std::string_view from, std::string_view to) { return base_.rename(from, to); }
Status StagingFileSystem::remove(std::string_view name) {
    for (auto it = staged_.begin(); it != staged_.end(); ++it)
        if (it->final_name == name) {
            auto r = base_.remove(it->temp_name);
            staged_.erase(it);
            return r;
        }
    return base_.remove(name);
}
bool StagingFileSystem::exists(std::string_view name) { return find(name) != nullptr || base_.exists(name); }

Result<std::vector<std::string>> StagingFileSystem::list(std::string_view dir) {
    VDISK_ASSIGN(auto names, base_.list(dir));
    std::string prefix(dir);
    if (!prefix.empty() && prefix.back() != '/') prefix += '/';
    std::vector<std::string> out;
    out.reserve(names.size());
    for (auto& n : names) {
        const std::string key = resolve_reference("", n);
        auto s = std::find_if(staged_.begin(), staged_.end(),
                              [&](const Staged& st) { return resolve_reference("", st.temp_name) == key; });
        out.push_back(s == staged_.end() ? std::move(n) : prefix + std::string(base_name(s->final_name)));
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

Status StagingFileSystem::commit(bool sync) {
    auto named = [](Error e, const Staged& s) {
        if (e.file == s.temp_name || e.file.empty()) e.file = s.final_name;
        return e;
    };
    for (auto& s : staged_) {
        if (sync) {
            auto f = base_.open(s.temp_name, Access::read_write);
            if (!f) return named(std::move(f).error(), s);
            if (auto st = (*f)->sync(); !st) return named(std::move(st).error(), s);
        }
        // Replacing an existing file: the new one takes over its owner, group and mode.
        if (base_.exists(s.final_name))
            if (auto st = base_.copy_attributes(s.final_name, s.temp_name); !st) return named(std::move(st).error(), s);
    }
    for (auto& s : staged_)
        if (auto st = base_.rename(s.temp_name, s.final_name); !st) return named(std::move(st).error(), s);
    staged_.clear();
    done_ = true;
    return ok();
}

void StagingFileSystem::abort() {
    for (auto& s : staged_) (void)base_.remove(s.temp_name);
    staged_.clear();
    done_ = true;
}

}  // namespace vdisk
