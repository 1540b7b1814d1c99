// SPDX-License-Identifier: Apache-2.0
// OVF packages as sources: the tar index (ustar, GNU long names, pax path/size records), the OVF descriptor
// (read with expat: a maintained, fuzzed parser; DOCTYPEs with entity declarations are refused outright so
// no entity expansion can happen), and a FileSystem that shows the selected disk as one file, whatever
// its storage (a tar member window, chunks joined, gzip inflated on the fly).
#include "vdisk/appliance.hpp"

#include <expat.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>

#include "io/archive_files.hpp"
#include "open_internal.hpp"
#include "util/checked.hpp"

namespace vdisk {
namespace {

constexpr size_t kBlock = 512;
constexpr size_t kMaxLongName = 64u << 10;  // GNU 'L' and pax 'x' records
constexpr uint32_t kMaxChunks = 100000;

Error bad(ErrorCode c, std::string m, std::string_view file, std::optional<uint64_t> off = std::nullopt) {
    Error e = make_error(c, "ova: " + std::move(m));
    e.file = std::string(file);
    e.format = "ova";
    if (off) e.offset = *off;
    return e;
}

bool ends_with_ci(std::string_view s, std::string_view suffix) {
    if (s.size() < suffix.size()) return false;
    for (size_t i = 0; i < suffix.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])) != suffix[i]) return false;
    return true;
}

// ---- tar ---------------------------------------------------------------------------------------------

struct Member {
    std::string name;
    uint64_t offset = 0;  // of the data
    uint64_t size = 0;
};

std::optional<uint64_t> tar_number(const uint8_t* p, size_t n) {
    if (p[0] & 0x80) {                          // GNU base-256 for sizes >= 8 GiB
        if (p[0] != 0x80) return std::nullopt;  // negative or absurd
        uint64_t v = 0;
        for (size_t i = 1; i < n; ++i) {
            if (v >> 56) return std::nullopt;
            v = (v << 8) | p[i];
        }
        return v;
    }
    uint64_t v = 0;
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == 0)) ++i;
    bool any = false;
    for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) {
        if (v >> 60) return std::nullopt;
        v = v * 8 + static_cast<uint64_t>(p[i] - '0');
        any = true;
    }
    for (; i < n; ++i)
        if (p[i] != ' ' && p[i] != 0) return std::nullopt;
    if (!any) return std::nullopt;
    return v;
}

bool tar_checksum_ok(const uint8_t* h) {
    auto want = tar_number(h + 148, 8);
    if (!want) return false;
    uint64_t sum = 0;
    for (size_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : h[i];
    return sum == *want;
}

std::string cstr(const uint8_t* p, size_t n) {
    size_t len = 0;
    while (len < n && p[len]) ++len;
    return std::string(reinterpret_cast<const char*>(p), len);
}

std::string clean_member_name(std::string n) {
    while (n.rfind("./", 0) == 0) n.erase(0, 2);
    return n;
}

// The name in a header's name field, behind its ustar prefix when it has one.
std::string header_name(const uint8_t* h) {
    std::string name = cstr(h, 100);
    if (std::memcmp(h + 257, "ustar", 5) != 0) return name;
    std::string prefix = cstr(h + 345, 155);
    return prefix.empty() ? name : prefix + "/" + name;
}

// Digits only: the value, or nothing when the string is empty, holds another character, or the value would
// pass `cap` before another digit.
std::optional<uint64_t> decimal(std::string_view s, uint64_t cap) {
    if (s.empty()) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9' || v > cap) return std::nullopt;
        v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    return v;
}

// What GNU 'L' and pax 'x' records say about the member after them.
struct Pending {
    std::string name;
    std::optional<uint64_t> size;
};

// pax records: "LEN key=value\n" ...; path= and size= are the ones that matter here.
void read_pax(std::string_view rec, Pending& next) {
    for (size_t p = 0; p < rec.size();) {
        size_t sp = rec.find(' ', p);
        if (sp == std::string_view::npos) break;
        auto len = static_cast<size_t>(decimal(rec.substr(p, sp - p), kMaxLongName).value_or(0));
        if (len <= sp - p + 1 || p + len > rec.size()) break;
        std::string_view kv = rec.substr(sp + 1, len - (sp - p) - 2);  // without the newline
        if (kv.starts_with("path=")) next.name = kv.substr(5);
        if (auto v = kv.starts_with("size=") ? decimal(kv.substr(5), (UINT64_MAX - 9) / 10) : std::nullopt)
            next.size = v;
        p += len;
    }
}

Result<std::string> read_string(File& f, uint64_t offset, uint64_t size, std::string_view what) {
    std::string s(static_cast<size_t>(size), '\0');
    VDISK_TRY(read_exact(f, offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(s.data()), s.size()), what));
    return s;
}

// One validated header: the member's type, where its bytes start, how many (a pax size= overrides the
// field), and where the next header is.
struct TarEntry {
    char type = 0;
    uint64_t data = 0, size = 0, next = 0;
};

Result<TarEntry> tar_entry(File& f, uint64_t fsize, uint64_t pos, const std::array<uint8_t, kBlock>& h,
                           const Pending& pending) {
    if (!tar_checksum_ok(h.data()))
        return bad(ErrorCode::corrupt, "tar header checksum mismatch at " + hex(pos), f.name(), pos);
    auto size = tar_number(h.data() + 124, 12);
    if (!size) return bad(ErrorCode::corrupt, "tar header at " + hex(pos) + " has a bad size field", f.name(), pos);
    const uint64_t data = pos + kBlock, sz = pending.size.value_or(*size);
    auto padded = util::add<uint64_t>(sz, uint64_t{kBlock - 1});
    auto next = padded ? util::add<uint64_t>(data, *padded / kBlock * kBlock) : std::nullopt;
    if (!next || data + sz > fsize)
        return bad(ErrorCode::corrupt,
                   "tar member at " + hex(pos) + " (" + std::to_string(sz) + " bytes) runs past the end of the file (" +
                       std::to_string(fsize) + ")",
                   f.name(), pos);
    return TarEntry{static_cast<char>(h[156]), data, sz, *next};
}

// A GNU long name ('L') or pax ('x') record: the name (and size) of the member after it.
Status read_name_record(File& f, uint64_t pos, const TarEntry& e, Pending& next) {
    if (e.size > kMaxLongName)
        return bad(ErrorCode::limit_exceeded, "tar name record too long at " + hex(pos), f.name(), pos);
    VDISK_ASSIGN(std::string rec, read_string(f, e.data, e.size, "tar record"));
    if (e.type == 'L') next.name = rec.substr(0, rec.find('\0'));
    else read_pax(rec, next);
    return ok();
}

// The regular files of a tar, in order. `stop_after_first` ends at the first regular file (probing).
Result<std::vector<Member>> index_tar(File& f, bool stop_after_first) {
    VDISK_ASSIGN(uint64_t fsize, f.size());
    std::vector<Member> out;
    std::array<uint8_t, kBlock> h{};
    Pending pending;
    uint32_t headers = 0;
    auto too_many = [&] {
        return bad(ErrorCode::limit_exceeded, "more than " + std::to_string(kMaxTarMembers) + " tar members", f.name());
    };
    for (uint64_t pos = 0; pos + kBlock <= fsize;) {
        VDISK_TRY(read_exact(f, pos, h, "tar header"));
        if (std::all_of(h.begin(), h.end(), [](uint8_t b) { return b == 0; })) break;  // end of archive
        if (++headers > 2 * kMaxTarMembers) return too_many();
        VDISK_ASSIGN(TarEntry e, tar_entry(f, fsize, pos, h, pending));
        if (e.type == 'L' || e.type == 'x') {
            VDISK_TRY(read_name_record(f, pos, e, pending));
            pos = e.next;
            continue;
        }
        if (e.type == '0' || e.type == '\0' || e.type == '7') {
            std::string name = pending.name.empty() ? header_name(h.data()) : pending.name;
            out.push_back(Member{clean_member_name(name), e.data, e.size});
            if (out.size() > kMaxTarMembers) return too_many();
            if (stop_after_first) break;
        }
        pending = {};
        pos = e.next;
    }
    return out;
}

// ---- OVF -----------------------------------------------------------------------------------------------

struct OvfFile {
    std::string id, href, compression;
    std::optional<uint64_t> size;
    uint64_t chunk_size = 0;
};
struct OvfDisk {
    std::string id, file_ref, capacity, units, format;
    std::optional<uint64_t> populated;
};
struct OvfParse {
    std::vector<OvfFile> files;
    std::vector<OvfDisk> disks;
    bool has_envelope = false;
    std::string problem;  // set by a handler that stopped the parser
    XML_Parser parser = nullptr;
};

std::string_view local_name(const XML_Char* n) {
    std::string_view s(n);
    auto bar = s.rfind('|');
    return bar == std::string_view::npos ? s : s.substr(bar + 1);
}

std::optional<uint64_t> parse_u64(std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    if (s.empty() || s.size() > 20) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        auto m = util::mul<uint64_t>(v, uint64_t{10});
        if (!m) return std::nullopt;
        auto a = util::add<uint64_t>(*m, static_cast<uint64_t>(c - '0'));
        if (!a) return std::nullopt;
        v = *a;
    }
    return v;
}

void XMLCALL on_start(void* ud, const XML_Char* name, const XML_Char** attrs) {
    auto& p = *static_cast<OvfParse*>(ud);
    auto el = local_name(name);
    if (el == "Envelope") p.has_envelope = true;
    if (el != "File" && el != "Disk") return;
    if (p.files.size() >= kMaxApplianceDisks || p.disks.size() >= kMaxApplianceDisks) {
        p.problem = "more than " + std::to_string(kMaxApplianceDisks) + " File or Disk elements";
        XML_StopParser(p.parser, XML_FALSE);
        return;
    }
    std::map<std::string, std::string, std::less<>> a;
    for (size_t i = 0; attrs[i] && attrs[i + 1]; i += 2) a[std::string(local_name(attrs[i]))] = attrs[i + 1];
    auto get = [&](const char* k) {
        auto it = a.find(k);
        return it == a.end() ? std::string() : it->second;
    };
    if (el == "File") {
        OvfFile f{get("id"), get("href"), get("compression"), parse_u64(get("size")),
                  parse_u64(get("chunkSize")).value_or(0)};
        p.files.push_back(std::move(f));
    } else {
        OvfDisk d{get("diskId"),   get("fileRef"),
                  get("capacity"), get("capacityAllocationUnits"),
                  get("format"),   parse_u64(get("populatedSize"))};
        p.disks.push_back(std::move(d));
    }
}

void XMLCALL on_entity(void* ud, const XML_Char*, int, const XML_Char*, int, const XML_Char*, const XML_Char*,
                       const XML_Char*, const XML_Char*) {
    auto& p = *static_cast<OvfParse*>(ud);
    p.problem = "the descriptor declares XML entities (refused: no OVF needs them)";
    XML_StopParser(p.parser, XML_FALSE);
}

Result<OvfParse> parse_ovf(std::string_view xml, std::string_view file) {
    OvfParse p;
    XML_Parser parser = XML_ParserCreateNS(nullptr, '|');
    if (!parser) return bad(ErrorCode::io, "cannot create an XML parser", file);
    p.parser = parser;
    XML_SetUserData(parser, &p);
    XML_SetStartElementHandler(parser, on_start);
    XML_SetEntityDeclHandler(parser, on_entity);
    XML_SetParamEntityParsing(parser, XML_PARAM_ENTITY_PARSING_NEVER);
    auto rc = XML_Parse(parser, xml.data(), static_cast<int>(xml.size()), XML_TRUE);
    std::string err;
    if (!p.problem.empty()) err = p.problem;
    else if (rc != XML_STATUS_OK)
        err = std::string("malformed OVF descriptor: ") + XML_ErrorString(XML_GetErrorCode(parser)) + " at line " +
              std::to_string(XML_GetCurrentLineNumber(parser));
    XML_ParserFree(parser);
    if (!err.empty()) return bad(ErrorCode::invalid_format, err, file);
    if (!p.has_envelope) return bad(ErrorCode::invalid_format, "the descriptor has no OVF Envelope element", file);
    return p;
}

// "byte * 2^30", "byte", "byte*1024", and the OVF 0.9 words.
std::optional<uint64_t> unit_bytes(std::string u) {
    u.erase(std::remove(u.begin(), u.end(), ' '), u.end());
    for (auto& c : u) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (u.empty() || u == "byte" || u == "bytes") return 1;
    if (u == "kilobytes" || u == "kb") return uint64_t{1} << 10;
    if (u == "megabytes" || u == "mb") return uint64_t{1} << 20;
    if (u == "gigabytes" || u == "gb") return uint64_t{1} << 30;
    if (u.rfind("byte*2^", 0) == 0) {
        auto e = parse_u64(u.substr(7));
        if (!e || *e > 62) return std::nullopt;
        return uint64_t{1} << *e;
    }
    if (u.rfind("byte*", 0) == 0) return parse_u64(u.substr(5));
    return std::nullopt;
}

std::string format_from_url(std::string_view url) {
    std::string u(url);
    for (auto& c : u) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    static constexpr std::pair<std::string_view, const char*> kWords[] = {{"vmdk", "vmdk"}, {"vhdx", "vhdx"},
                                                                          {"vhd", "vhd"},   {"qcow", "qcow2"},
                                                                          {"vdi", "vdi"},   {"raw", "raw"}};
    for (auto [word, format] : kWords)
        if (u.find(word) != std::string::npos) return format;
    return "";
}

bool unsafe_href(std::string_view h) {
    return h.empty() || h.find("://") != std::string_view::npos || h.rfind("file:", 0) == 0 || escapes_directory(h);
}

// ---- the appliance as a file system ----------------------------------------------------------------

struct Source {
    Appliance app;
    std::string name;                                    // the .ova / .ovf as given
    std::shared_ptr<File> tar;                           // archive only
    std::vector<Member> members;                         // archive only
    std::map<std::string, size_t, std::less<>> by_name;  // member name -> index (names are unique)
    FileSystem* base = nullptr;                          // bare .ovf: the files beside it
    OpenOptions options;

    const Member* member(std::string_view n) const {
        auto it = by_name.find(n);
        return it == by_name.end() ? nullptr : &members[it->second];
    }
    // A stored piece by name: a tar member window, or the file beside the .ovf.
    Result<std::shared_ptr<File>> piece(const std::string& n) const {
        if (app.archive) {
            const Member* m = member(n);
            if (!m) return bad(ErrorCode::not_found, "'" + n + "' is not a member of the archive", name);
            return std::shared_ptr<File>(make_window_file(tar, m->offset, m->size, name + "/" + n));
        }
        VDISK_ASSIGN(auto f, base->open(resolve_reference(name, n), Access::read_only));
        return std::shared_ptr<File>(std::move(f));
    }
    bool piece_exists(std::string_view n) const {
        return app.archive ? member(n) != nullptr : base->exists(resolve_reference(name, n));
    }
    Result<uint64_t> piece_size(const std::string& n) const {
        if (app.archive) return member(n) ? member(n)->size : 0;
        VDISK_ASSIGN(auto f, piece(n));
        return f->size();
    }
};

class ApplianceFileSystem final : public FileSystem {
public:
    ApplianceFileSystem(std::shared_ptr<Source> src, size_t disk) : src_(std::move(src)), disk_(disk) {}
    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override {
        if (access != Access::read_only) return bad(ErrorCode::read_only, "an appliance is opened read-only", name);
        const ApplianceDisk& d = src_->app.disks[disk_];
        if (name == d.href) {
            std::vector<std::shared_ptr<File>> parts;
            for (auto& p : d.pieces) {
                VDISK_ASSIGN(auto f, src_->piece(p));
                parts.push_back(std::move(f));
            }
            std::shared_ptr<File> joined;
            if (parts.size() == 1) joined = parts[0];
            else {
                VDISK_ASSIGN(auto c, make_concat_file(std::move(parts), src_->name + "/" + d.href));
                joined = std::move(c);
            }
            if (d.compression == "gzip" || (ends_with_ci(d.href, ".gz") && looks_gzip(*joined)))
                return make_gzip_file(joined, src_->name + "/" + d.href);
            if (!d.compression.empty())
                return bad(ErrorCode::unsupported, "compression '" + d.compression + "' of '" + d.href + "'",
                           src_->name);
            return std::unique_ptr<File>(std::make_unique<SharedFile>(joined));
        }
        // Other names an image inside may refer to (a VMDK descriptor's extents): members of the archive,
        // or files beside the .ovf.
        if (src_->app.archive) {
            VDISK_ASSIGN(auto f, src_->piece(std::string(name)));
            return std::unique_ptr<File>(std::make_unique<SharedFile>(f));
        }
        return src_->base->open(resolve_reference(src_->name, name), access);
    }
    Result<std::unique_ptr<File>> create(std::string_view name, bool) override {
        return bad(ErrorCode::read_only, "cannot create files inside an appliance", name);
    }
    Status rename(std::string_view from, std::string_view) override {
        return bad(ErrorCode::read_only, "cannot rename inside an appliance", from);
    }
    Status remove(std::string_view name) override {
        return bad(ErrorCode::read_only, "cannot remove inside an appliance", name);
    }
    bool exists(std::string_view name) override {
        return name == src_->app.disks[disk_].href || src_->piece_exists(name);
    }

private:
    // A File that shares ownership of another (the joined disk is also referenced by this FS's opens).
    class SharedFile final : public File {
    public:
        explicit SharedFile(std::shared_ptr<File> f) : f_(std::move(f)) {}
        Result<size_t> read_at(uint64_t o, std::span<uint8_t> b) override { return f_->read_at(o, b); }
        Status write_at(uint64_t o, std::span<const uint8_t> b) override { return f_->write_at(o, b); }
        Result<uint64_t> size() override { return f_->size(); }
        Status resize(uint64_t s) override { return f_->resize(s); }
        Status sync() override { return f_->sync(); }
        Result<std::optional<DataRange>> next_data(uint64_t o) override { return f_->next_data(o); }
        const std::string& name() const override { return f_->name(); }
        FileIdentity identity() const override { return f_->identity(); }

    private:
        std::shared_ptr<File> f_;
    };
    std::shared_ptr<Source> src_;
    size_t disk_;
};

enum class Kind { none, ova, ovf };

Result<Kind> sniff(File& f) {
    // 4 KiB: ovftool and others put a comment (generator, licence) before the Envelope element.
    std::array<uint8_t, 4096> h{};
    VDISK_ASSIGN(size_t n, f.read_at(0, h));
    if (n >= kBlock && tar_checksum_ok(h.data())) {
        auto first = index_tar(f, true);
        if (first && !first->empty() && ends_with_ci((*first)[0].name, ".ovf")) return Kind::ova;
        return Kind::none;
    }
    // XML: an Envelope element near the start (after the declaration and comments).
    std::string_view s(reinterpret_cast<const char*>(h.data()), n);
    size_t i = 0;
    if (s.substr(0, 3) == "\xef\xbb\xbf") i = 3;
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i < s.size() && s[i] == '<') {
        // The root element: <Envelope or <ovf:Envelope (any prefix).
        for (size_t p = s.find("Envelope", i); p != std::string_view::npos; p = s.find("Envelope", p + 1))
            if (p > 0 && (s[p - 1] == '<' || s[p - 1] == ':')) return Kind::ovf;
    }
    return Kind::none;
}

// The descriptor's bytes: the archive's first member, or the whole .ovf.
Result<std::string> read_descriptor(File& f, uint64_t offset, uint64_t size, std::string_view name) {
    if (size > kMaxOvfBytes)
        return bad(ErrorCode::limit_exceeded,
                   "OVF descriptor of " + std::to_string(size) + " bytes (cap " + std::to_string(kMaxOvfBytes) + ")",
                   name);
    return read_string(f, offset, size, "OVF descriptor");
}

// The stored pieces of a disk: every chunk (href.000000000, ...) present, in order, or the one file.
Status find_pieces(const Source& src, ApplianceDisk& ad, std::string_view name) {
    if (!ad.chunk_size) {
        if (!src.piece_exists(ad.href))
            return bad(ErrorCode::not_found,
                       "disk '" + ad.disk_id + "': file '" + ad.href + "' not found" +
                           (src.app.archive ? " in the archive" : " beside the descriptor"),
                       name);
        ad.pieces.push_back(ad.href);
        return ok();
    }
    for (uint32_t i = 0; i < kMaxChunks; ++i) {
        char suffix[16];
        std::snprintf(suffix, sizeof suffix, ".%09u", i);
        std::string n = ad.href + suffix;
        if (!src.piece_exists(n)) break;
        ad.pieces.push_back(n);
    }
    if (ad.pieces.empty())
        return bad(ErrorCode::not_found, "disk '" + ad.disk_id + "': chunk '" + ad.href + ".000000000' not found",
                   name);
    return ok();
}

// One Disk element, joined with the File it names and checked against the rules for references.
Result<ApplianceDisk> read_disk(const Source& src, const OvfParse& ovf, const OvfDisk& d, std::string_view name) {
    ApplianceDisk ad;
    ad.disk_id = d.id;
    auto f = std::find_if(ovf.files.begin(), ovf.files.end(), [&](const OvfFile& x) { return x.id == d.file_ref; });
    if (d.file_ref.empty() || f == ovf.files.end())
        return bad(ErrorCode::invalid_format,
                   "disk '" + d.id + "' names file '" + d.file_ref + "', which the References section does not list",
                   name);
    ad.href = f->href;
    if (unsafe_href(ad.href))
        return bad(ErrorCode::access_denied,
                   "disk '" + d.id + "' refers to '" + ad.href + "', outside the appliance (absolute, '..' or a URL)",
                   name);
    if (!src.app.archive && src.options.references)
        src.options.references->push_back("appliance file '" + ad.href + "'");
    if (!src.app.archive && src.options.untrusted)
        return bad(ErrorCode::access_denied,
                   "untrusted OVF descriptor refers to the file '" + ad.href +
                       "'; refusing to open it (give the disk itself)",
                   name);
    auto units = unit_bytes(d.units);
    auto cap = parse_u64(d.capacity);
    auto bytes = (units && cap) ? util::mul<uint64_t>(*cap, *units) : std::nullopt;
    if (!bytes)
        return bad(ErrorCode::invalid_format,
                   "disk '" + d.id + "' has capacity '" + d.capacity + "' in units '" + d.units + "'", name);
    ad.capacity = *bytes;
    ad.populated_size = d.populated;
    ad.format_url = d.format;
    ad.format = format_from_url(d.format);
    ad.compression = f->compression == "identity" ? std::string() : f->compression;
    ad.chunk_size = f->chunk_size;
    VDISK_TRY(find_pieces(src, ad, name));
    for (auto& p : ad.pieces) {
        VDISK_ASSIGN(uint64_t s, src.piece_size(p));
        ad.stored_bytes += s;
    }
    return ad;
}

Result<std::shared_ptr<Source>> load(FileSystem& fs, std::string_view name, const std::shared_ptr<File>& file,
                                     const OpenOptions& options) {
    auto src = std::make_shared<Source>();
    src->name = std::string(name);
    src->options = options;
    VDISK_ASSIGN(Kind kind, sniff(*file));
    if (kind == Kind::none)
        return bad(ErrorCode::invalid_format, "not an OVA (tar with an .ovf first) or OVF descriptor", name);
    std::string xml;
    if (kind == Kind::ova) {
        src->app.archive = true;
        src->tar = file;
        VDISK_ASSIGN(src->members, index_tar(*file, false));
        const Member& d = src->members.front();
        src->app.descriptor = d.name;
        VDISK_ASSIGN(xml, read_descriptor(*file, d.offset, d.size, name));
        // Two members of one name would make "the" disk ambiguous; a packer never writes that.
        for (size_t i = 0; i < src->members.size(); ++i)
            if (!src->by_name.emplace(src->members[i].name, i).second)
                return bad(ErrorCode::corrupt, "the archive holds two members named '" + src->members[i].name + "'",
                           name);
    } else {
        src->base = &fs;
        src->app.descriptor = std::string(base_name(name));
        VDISK_ASSIGN(uint64_t sz, file->size());
        VDISK_ASSIGN(xml, read_descriptor(*file, 0, sz, name));
    }
    VDISK_ASSIGN(OvfParse ovf, parse_ovf(xml, name));
    for (auto& d : ovf.disks) {
        VDISK_ASSIGN(ApplianceDisk ad, read_disk(*src, ovf, d, name));
        src->app.disks.push_back(std::move(ad));
    }
    if (src->app.disks.empty()) return bad(ErrorCode::invalid_format, "the OVF descriptor declares no disk", name);
    return src;
}

}  // namespace

Result<bool> is_appliance(FileSystem& fs, std::string_view name) {
    VDISK_ASSIGN(auto f, fs.open(name, Access::read_only));
    VDISK_ASSIGN(Kind k, sniff(*f));
    return k != Kind::none;
}

Result<Appliance> read_appliance(FileSystem& fs, std::string_view name, const OpenOptions& options) {
    VDISK_ASSIGN(auto f, fs.open(name, Access::read_only));
    VDISK_ASSIGN(auto src, load(fs, name, std::shared_ptr<File>(std::move(f)), options));
    return src->app;
}

namespace {

Result<OpenedImage> open_disk(const Registry& registry, FileSystem& fs, std::string_view name,
                              const std::shared_ptr<File>& file, size_t index, const OpenOptions& options) {
    if (options.read_write) return bad(ErrorCode::read_only, "an appliance is opened read-only", name);
    VDISK_ASSIGN(auto src, load(fs, name, file, options));
    if (index >= src->app.disks.size())
        return bad(ErrorCode::not_found,
                   "disk " + std::to_string(index) + " asked for; the appliance has " +
                       std::to_string(src->app.disks.size()) + " (numbered from 0)",
                   name);
    ApplianceFileSystem afs(src, index);
    OpenOptions inner = options;
    // The disk is a file of the appliance, not another file: untrusted rules apply to what it refers to.
    auto r = detail::open_image_direct(registry, afs, src->app.disks[index].href, inner);
    if (!r) {
        Error e = std::move(r).error();
        if (e.file.empty()) e.file = std::string(name) + "/" + src->app.disks[index].href;
        return e;
    }
    return r;
}

}  // namespace

Result<OpenedImage> open_appliance_disk(const Registry& registry, FileSystem& fs, std::string_view name, size_t index,
                                        const OpenOptions& options) {
    if (options.read_write) return bad(ErrorCode::read_only, "an appliance is opened read-only", name);
    VDISK_ASSIGN(auto f, fs.open(name, Access::read_only));
    return open_disk(registry, fs, name, std::shared_ptr<File>(std::move(f)), index, options);
}

bool detail::looks_like_appliance(File& file) {
    auto k = sniff(file);
    return k && *k != Kind::none;
}

Result<OpenedImage> detail::open_appliance_file(const Registry& registry, FileSystem& fs, std::string_view name,
                                                std::unique_ptr<File> file, const OpenOptions& options) {
    return open_disk(registry, fs, name, std::shared_ptr<File>(std::move(file)), options.appliance_disk, options);
}

}  // namespace vdisk
