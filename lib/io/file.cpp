// SPDX-License-Identifier: Apache-2.0
// Generic File defaults and name helpers.
#include <algorithm>
#include <cstring>
#include <vector>

#include "vdisk/io.hpp"

namespace vdisk {

Status File::punch_hole(uint64_t offset, uint64_t len) {
    static constexpr size_t kChunk = 1 << 20;
    std::vector<uint8_t> zeros(static_cast<size_t>(std::min<uint64_t>(len, kChunk)));
    while (len > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(len, zeros.size()));
        VDISK_TRY(write_at(offset, std::span<const uint8_t>(zeros.data(), n)));
        offset += n;
        len -= n;
    }
    return ok();
}

Status File::allocate(uint64_t, uint64_t) { return ok(); }

Result<std::vector<std::string>> FileSystem::list(std::string_view dir) {
    Error e = make_error(ErrorCode::unsupported, "this file system cannot list directories");
    e.file = std::string(dir);
    return e;
}

Result<FileStat> FileSystem::stat(std::string_view name) {
    FileStat st;
    st.resolved = std::string(name);
    if (!exists(name)) return st;
    st.kind = FileKind::regular;
    VDISK_ASSIGN(auto f, open(name, Access::read_only));
    VDISK_ASSIGN(st.size, f->size());
    return st;
}

Status FileSystem::copy_attributes(std::string_view, std::string_view) { return ok(); }

Result<std::unique_ptr<FileSystem>> FileSystem::open_stream(std::string_view name) {
    Error e = make_error(ErrorCode::unsupported, "this file system cannot write to devices or pipes");
    e.file = std::string(name);
    return e;
}

Result<std::optional<DataRange>> File::next_data(uint64_t offset) {
    VDISK_ASSIGN(uint64_t sz, size());
    if (offset >= sz) return std::optional<DataRange>{};
    return std::optional<DataRange>(DataRange{offset, sz});
}

Status read_exact(File& f, uint64_t offset, std::span<uint8_t> buf, std::string_view what) {
    VDISK_ASSIGN(size_t n, f.read_at(offset, buf));
    if (n != buf.size()) {
        Error e = make_error(ErrorCode::corrupt, std::string(what) + " truncated: wanted " +
                                                     std::to_string(buf.size()) + " bytes at " + hex(offset) +
                                                     ", file ends after " + std::to_string(n));
        e.file = f.name();
        e.offset = offset;
        return e;
    }
    return ok();
}

Status read_zero_fill(File& f, uint64_t offset, std::span<uint8_t> buf) {
    VDISK_ASSIGN(size_t n, f.read_at(offset, buf));
    // memset, not std::fill: under UBSan (the fuzz and test builds) clang leaves std::fill a byte loop.
    if (n < buf.size()) std::memset(buf.data() + n, 0, buf.size() - n);
    return ok();
}

std::string_view dir_name(std::string_view name) {
    auto pos = name.rfind('/');
    if (pos == std::string_view::npos) return {};
    if (pos == 0) return name.substr(0, 1);
    return name.substr(0, pos);
}

std::string_view base_name(std::string_view name) {
    auto pos = name.rfind('/');
    return pos == std::string_view::npos ? name : name.substr(pos + 1);
}

static std::string normalise(std::string_view path) {
    bool absolute = !path.empty() && path[0] == '/';
    std::vector<std::string_view> parts;
    size_t i = 0;
    while (i <= path.size()) {
        size_t j = path.find('/', i);
        if (j == std::string_view::npos) j = path.size();
        std::string_view part = path.substr(i, j - i);
        if (part.empty() || part == ".") {
        } else if (part == "..") {
            if (!parts.empty() && parts.back() != "..") parts.pop_back();
            else if (!absolute) parts.push_back(part);
        } else {
            parts.push_back(part);
        }
        i = j + 1;
    }
    std::string out = absolute ? "/" : "";
    for (size_t k = 0; k < parts.size(); ++k) {
        if (k) out += '/';
        out += parts[k];
    }
    if (out.empty()) out = ".";
    return out;
}

std::string resolve_reference(std::string_view referrer, std::string_view ref) {
    if (!ref.empty() && ref[0] == '/') return normalise(ref);
    std::string_view dir = dir_name(referrer);
    if (dir.empty()) return normalise(ref);
    std::string joined(dir);
    joined += '/';
    joined += ref;
    return normalise(joined);
}

bool escapes_directory(std::string_view name) {
    if (!name.empty() && name[0] == '/') return true;
    std::string n = normalise(name);
    return n == ".." || n.rfind("../", 0) == 0;
}

}  // namespace vdisk
