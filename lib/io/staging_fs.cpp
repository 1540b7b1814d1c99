// StagingFileSystem: created files live under temporary names until commit().
#include <algorithm>
#include <random>

#include "vdisk/io.hpp"

namespace vdisk {

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
        return f;
    }
    return base_.open(name, access);
}

Result<std::unique_ptr<File>> StagingFileSystem::create(std::string_view name, bool exclusive) {
    if (auto* s = find(name)) return base_.create(s->temp_name, false);
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
        return f;
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

Status StagingFileSystem::commit() {
    for (auto& s : staged_) {
        VDISK_ASSIGN(auto f, base_.open(s.temp_name, Access::read_write));
        VDISK_TRY(f->sync());
    }
    for (auto& s : staged_) VDISK_TRY(base_.rename(s.temp_name, s.final_name));
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
