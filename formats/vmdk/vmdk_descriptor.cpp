// SPDX-License-Identifier: Apache-2.0
// VMDK text descriptor ("Disk DescriptorFile"): parsing and rendering.
//
// The descriptor is hand-edited text in the wild: comments, CRLF line ends, optional quotes and any key case
// are accepted. Lines that address data (extent lines) are parsed strictly: a bad sector count or offset is
// an error rather than a guess.
#include <algorithm>
#include <cctype>
#include <charconv>

#include "util/checked.hpp"
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

std::string_view unquote(std::string_view v) {
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') return v.substr(1, v.size() - 2);
    return v;
}

std::optional<uint64_t> parse_dec(std::string_view s) {
    uint64_t v = 0;
    if (s.empty()) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

std::optional<uint32_t> parse_hex32(std::string_view s) {
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s.remove_prefix(2);
    uint32_t v = 0;
    if (s.empty()) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

// Split an extent line into tokens; a double-quoted token may hold spaces.
std::optional<std::vector<std::string_view>> tokenize(std::string_view line) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
        if (i >= line.size()) break;
        if (line[i] == '"') {
            size_t end = line.find('"', i + 1);
            if (end == std::string_view::npos) return std::nullopt;
            out.push_back(line.substr(i + 1, end - i - 1));
            i = end + 1;
        } else {
            size_t end = i;
            while (end < line.size() && line[end] != ' ' && line[end] != '\t') ++end;
            out.push_back(line.substr(i, end - i));
            i = end;
        }
        if (out.size() > 8) return std::nullopt;
    }
    return out;
}

std::optional<ExtentAccess> parse_access(std::string_view t) {
    if (t == "RW") return ExtentAccess::rw;
    if (t == "RDONLY") return ExtentAccess::rdonly;
    if (t == "NOACCESS") return ExtentAccess::noaccess;
    return std::nullopt;
}

Error line_error(ErrorCode code, size_t lineno, const std::string& msg) {
    return make_error(code, "descriptor line " + std::to_string(lineno) + ": " + msg);
}

Result<ExtentLine> parse_extent(std::string_view line, size_t lineno) {
    auto toks = tokenize(line);
    if (!toks) return line_error(ErrorCode::corrupt, lineno, "malformed extent line '" + std::string(line) + "'");
    auto& t = *toks;
    if (t.size() < 3) return line_error(ErrorCode::corrupt, lineno, "extent line has too few fields");
    ExtentLine e;
    e.access = *parse_access(t[0]);
    auto sectors = parse_dec(t[1]);
    if (!sectors)
        return line_error(ErrorCode::corrupt, lineno,
                          "extent sector count '" + std::string(t[1]) + "' is not a number");
    e.sectors = *sectors;
    std::string_view type = t[2];
    if (type == "SPARSE") e.type = ExtentType::sparse;
    else if (type == "FLAT") e.type = ExtentType::flat;
    else if (type == "ZERO") e.type = ExtentType::zero;
    else if (type == "VMFS") e.type = ExtentType::vmfs;
    else if (type == "VMFSSPARSE") e.type = ExtentType::vmfssparse;
    else if (type == "SESPARSE") e.type = ExtentType::sesparse;
    else return line_error(ErrorCode::unsupported, lineno, "extent type '" + std::string(type) + "' is not supported");
    if (e.type == ExtentType::zero) {
        if (t.size() > 3) return line_error(ErrorCode::corrupt, lineno, "ZERO extent with a file name");
        return e;
    }
    if (t.size() < 4) return line_error(ErrorCode::corrupt, lineno, "extent line without a file name");
    e.name = std::string(t[3]);
    // An empty name is legal only in a descriptor embedded in a sparse file, where the extent is that file
    // whatever it is called (FreeBSD's mkimg writes ""); the opener refuses it in a descriptor file.
    if (t.size() >= 5) {
        if (e.type != ExtentType::flat && e.type != ExtentType::vmfs)
            return line_error(ErrorCode::corrupt, lineno, "only FLAT and VMFS extents take an offset");
        auto off = parse_dec(t[4]);
        if (!off)
            return line_error(ErrorCode::corrupt, lineno, "extent offset '" + std::string(t[4]) + "' is not a number");
        e.offset = *off;
    }
    if (t.size() > 5) return line_error(ErrorCode::corrupt, lineno, "extent line has trailing fields");
    return e;
}

}  // namespace

std::string_view to_string(ExtentType t) noexcept {
    switch (t) {
        case ExtentType::sparse: return "SPARSE";
        case ExtentType::flat: return "FLAT";
        case ExtentType::zero: return "ZERO";
        case ExtentType::vmfs: return "VMFS";
        case ExtentType::vmfssparse: return "VMFSSPARSE";
        case ExtentType::sesparse: return "SESPARSE";
    }
    return "?";
}

const std::string* Descriptor::ddb_value(std::string_view key) const {
    for (auto& [k, v] : ddb)
        if (iequals(k, key)) return &v;
    return nullptr;
}

bool looks_like_descriptor(std::string_view head) noexcept {
    // Skip a UTF-8 byte order mark and leading blank lines.
    if (head.substr(0, 3) == "\xEF\xBB\xBF") head.remove_prefix(3);
    size_t i = head.find_first_not_of(" \t\r\n");
    if (i == std::string_view::npos) return false;
    head.remove_prefix(i);
    return head.substr(0, 21) == "# Disk DescriptorFile" || head.substr(0, 20) == "# Disk DescriptorFil";
}

Result<Descriptor> parse_descriptor(std::string_view text, const Limits& limits) {
    if (auto nul = text.find('\0'); nul != std::string_view::npos) text = text.substr(0, nul);
    if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
    Descriptor d;
    bool have_create_type = false;
    uint64_t total = 0;
    size_t lineno = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view raw = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        ++lineno;
        std::string_view line = trim(raw);
        if (line.empty() || line.front() == '#') continue;
        // An extent line starts with an access mode followed by blank space.
        size_t sp = line.find_first_of(" \t");
        if (sp != std::string_view::npos && parse_access(line.substr(0, sp))) {
            if (d.extents.size() >= limits.max_extents)
                return make_error(ErrorCode::limit_exceeded,
                                  "descriptor has more than " + std::to_string(limits.max_extents) + " extents");
            VDISK_ASSIGN(auto e, parse_extent(line, lineno));
            auto t = util::add<uint64_t>(total, e.sectors);
            if (!t || *t > (UINT64_MAX >> 9))
                return line_error(ErrorCode::corrupt, lineno, "extent sizes overflow the disk size");
            total = *t;
            d.extents.push_back(std::move(e));
            continue;
        }
        size_t eq = line.find('=');
        if (eq == std::string_view::npos) continue;  // unknown free text: tolerated
        std::string_view key = trim(line.substr(0, eq));
        std::string_view value = unquote(trim(line.substr(eq + 1)));
        if (iequals(key, "version")) {
            auto v = parse_dec(value);
            if (!v || *v > 0xffffffffu)
                return line_error(ErrorCode::corrupt, lineno, "version '" + std::string(value) + "' is not a number");
            d.version = static_cast<uint32_t>(*v);
        } else if (iequals(key, "CID")) {
            auto v = parse_hex32(value);
            if (!v) return line_error(ErrorCode::corrupt, lineno, "CID '" + std::string(value) + "' is not hex");
            d.cid = *v;
        } else if (iequals(key, "parentCID")) {
            auto v = parse_hex32(value);
            if (!v) return line_error(ErrorCode::corrupt, lineno, "parentCID '" + std::string(value) + "' is not hex");
            d.parent_cid = *v;
        } else if (iequals(key, "createType")) {
            d.create_type = std::string(value);
            have_create_type = true;
        } else if (iequals(key, "parentFileNameHint")) {
            d.parent_hint = std::string(value);
        } else if (key.size() > 4 && iequals(key.substr(0, 4), "ddb.")) {
            d.ddb.emplace_back(std::string(key), std::string(value));
        }
    }
    if (!have_create_type) return make_error(ErrorCode::corrupt, "descriptor has no createType");
    return d;
}

std::string render_descriptor(const Descriptor& d) {
    auto hex8 = [](uint32_t v) {
        char b[16];
        auto [p, ec] = std::to_chars(b, b + sizeof b, v, 16);
        (void)ec;
        return std::string(b, p);
    };
    std::string s = "# Disk DescriptorFile\n";
    s += "version=" + std::to_string(d.version) + "\n";
    s += "CID=" + hex8(d.cid) + "\n";
    s += "parentCID=" + hex8(d.parent_cid) + "\n";
    s += "createType=\"" + d.create_type + "\"\n";
    if (d.parent_hint) s += "parentFileNameHint=\"" + *d.parent_hint + "\"\n";
    s += "\n# Extent description\n";
    for (auto& e : d.extents) {
        s += e.access == ExtentAccess::rw ? "RW " : e.access == ExtentAccess::rdonly ? "RDONLY " : "NOACCESS ";
        s += std::to_string(e.sectors) + " " + std::string(to_string(e.type));
        if (e.type != ExtentType::zero) {
            s += " \"" + e.name + "\"";
            if (e.type == ExtentType::flat || e.type == ExtentType::vmfs) s += " " + std::to_string(e.offset);
        }
        s += "\n";
    }
    s += "\n# The Disk Data Base\n#DDB\n\n";
    for (auto& [k, v] : d.ddb) s += k + " = \"" + v + "\"\n";
    return s;
}

}  // namespace vdisk::vmdk
