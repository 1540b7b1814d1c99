// SPDX-License-Identifier: Apache-2.0
#include "support.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace vt {

TempDir::TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/vdisk-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) FAIL("mkdtemp failed: " << std::strerror(errno));
    path = buf.data();
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
}

std::string sh_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += "'\\''";
        else out += c;
    }
    return out + "'";
}

CmdResult run(const std::string& cmd) {
    CmdResult r;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return r;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
    int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

MeasuredRun run_measured(const std::string& prefix, const std::string& cmd, const std::string& rss_file) {
    auto r = run(prefix + (prefix.empty() ? "" : " ") + "/usr/bin/time -f %M -o " + sh_quote(rss_file) + " " + cmd);
    MeasuredRun m{r.status, r.output, 0};
    std::ifstream f(rss_file);
    std::string line, last;
    while (std::getline(f, line))
        if (!line.empty()) last = line;
    if (!last.empty() && std::isdigit(static_cast<unsigned char>(last[0]))) m.rss_kib = std::stoull(last);
    return m;
}

bool in_ci() {
    const char* ci = std::getenv("CI");
    return ci && std::string(ci) == "true";
}

bool have(const std::string& program) {
    bool found = run("command -v " + sh_quote(program) + " >/dev/null").status == 0;
    if (!found) {
        if (in_ci()) FAIL_CHECK(program << " is not installed (required under CI=true)");
        else MESSAGE("skipped: " << program << " is not installed");
    }
    return found;
}

bool need_qemu() { return have("qemu-img"); }

std::optional<std::string> corpus_root() {
    if (const char* env = std::getenv("VDISK_CORPUS"); env && *env) {
        if (std::filesystem::exists(std::string(env) + "/manifest.json")) return std::string(env);
        return std::nullopt;
    }
    std::string p = std::string(VDISK_SOURCE_DIR) + "/../shared/corpus";
    if (std::filesystem::exists(p + "/manifest.json")) return std::filesystem::canonical(p).string();
    return std::nullopt;
}

std::optional<std::string> need_corpus() {
    auto r = corpus_root();
    if (!r) {
        if (in_ci()) FAIL_CHECK("the shared corpus (../shared/corpus) is missing (required under CI=true)");
        else MESSAGE("skipped: the shared corpus ../shared/corpus is not present in this clone");
    }
    return r;
}

std::string unpack_corpus(const std::string& root, const std::string& rel, const std::string& dir) {
    std::string src = root + "/" + rel;
    std::string base = rel.substr(rel.rfind('/') + 1);
    std::string tool;
    auto strip = [&](const char* ext, const char* t) {
        size_t n = std::strlen(ext);
        if (base.size() > n && base.compare(base.size() - n, n, ext) == 0) {
            base.resize(base.size() - n);
            tool = t;
            return true;
        }
        return false;
    };
    if (!strip(".xz", "xz -dc") && !strip(".bz2", "bzip2 -dc") && !strip(".gz", "gzip -dc")) tool = "cat";
    std::string out = dir + "/" + base;
    auto r = run(tool + " " + sh_quote(src) + " > " + sh_quote(out));
    REQUIRE_MESSAGE(r.status == 0, "unpacking " << rel << ": " << r.output);
    return out;
}

vdisk::Json corpus_manifest(const std::string& root) {
    auto bytes = read_file(root + "/manifest.json");
    vdisk::Json j;
    std::string err;
    REQUIRE_MESSAGE(vdisk::Json::parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), j,
                                       &err),
                    "manifest.json: " << err);
    return j;
}

// ---- SHA-256 (FIPS 180-4), for comparing contents with the manifest ---------------------------------
namespace {
struct Sha256 {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint8_t block[64];
    size_t fill = 0;
    uint64_t total = 0;
    static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
    void compress(const uint8_t* p) {
        static constexpr uint32_t k[64] = {0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
                                           0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
                                           0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
                                           0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
                                           0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
                                           0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
                                           0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
                                           0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
                                           0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
                                           0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
                                           0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
        uint32_t w[64];
        for (int i = 0; i < 16; ++i)
            w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
        for (int i = 16; i < 64; ++i) {
            uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; ++i) {
            uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
            uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
        h[5] += f;
        h[6] += g;
        h[7] += hh;
    }
    void update(const uint8_t* p, size_t n) {
        total += n;
        if (fill) {
            size_t take = std::min(n, 64 - fill);
            std::memcpy(block + fill, p, take);
            fill += take;
            p += take;
            n -= take;
            if (fill == 64) {
                compress(block);
                fill = 0;
            }
        }
        while (n >= 64) {
            compress(p);
            p += 64;
            n -= 64;
        }
        if (n) {
            std::memcpy(block, p, n);
            fill = n;
        }
    }
    std::string final_hex() {
        uint64_t bits = total * 8;
        uint8_t pad = 0x80;
        update(&pad, 1);
        uint8_t z = 0;
        while (fill != 56) update(&z, 1);
        uint8_t len[8];
        for (int i = 0; i < 8; ++i) len[i] = uint8_t(bits >> (56 - 8 * i));
        update(len, 8);
        char out[65];
        for (int i = 0; i < 8; ++i) std::snprintf(out + 8 * i, 9, "%08x", h[i]);
        return out;
    }
};
}  // namespace

std::string sha256_hex(const uint8_t* data, size_t len) {
    Sha256 s;
    s.update(data, len);
    return s.final_hex();
}

std::string sha256_range(vdisk::BlockDevice& dev, uint64_t offset, uint64_t len) {
    Sha256 s;
    std::vector<uint8_t> buf(4 << 20);
    while (len) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(len, buf.size()));
        auto r = dev.read(offset, std::span<uint8_t>(buf.data(), n));
        REQUIRE_MESSAGE(r.ok(), "read at " << offset << ": " << (r.ok() ? "" : r.error().to_string()));
        s.update(buf.data(), n);
        offset += n;
        len -= n;
    }
    return s.final_hex();
}

std::string sha256_file(const std::string& path) {
    auto r = run("sha256sum " + sh_quote(path));
    REQUIRE(r.status == 0);
    return r.output.substr(0, 64);
}

std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE_MESSAGE(f.good(), "cannot read " << path);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void write_file(const std::string& path, const std::vector<uint8_t>& data) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    REQUIRE_MESSAGE(f.good(), "cannot write " << path);
}

vdisk::Result<vdisk::OpenedImage> open_host(const vdisk::Registry& reg, const std::string& path,
                                            const std::string& format, bool read_write) {
    static auto fs = vdisk::make_posix_file_system();
    vdisk::OpenOptions o;
    o.format = format;
    o.read_write = read_write;
    return vdisk::open_image(reg, *fs, path, o);
}

std::vector<uint8_t> qemu_read_raw(const std::string& path, const std::string& format, const std::string& tmpdir) {
    std::string out = tmpdir + "/qemu-read.raw";
    auto r = run("qemu-img convert -f " + format + " -O raw " + sh_quote(path) + " " + sh_quote(out));
    REQUIRE_MESSAGE(r.status == 0, "qemu-img convert failed: " << r.output);
    auto data = read_file(out);
    std::filesystem::remove(out);
    return data;
}

void expect_qemu_check(const std::string& path, const std::string& qemu_format) {
    auto r = run("qemu-img check " + (qemu_format.empty() ? "" : "-f " + qemu_format + " ") + sh_quote(path));
    CHECK_MESSAGE(r.status == 0, "qemu-img check " << path << ": " << r.output);
}

void expect_qemu_compare(const std::string& a, const std::string& b, const std::string& format_a,
                         const std::string& format_b) {
    auto r = run("qemu-img compare " + (format_a.empty() ? "" : "-f " + format_a + " ") +
                 (format_b.empty() ? "" : "-F " + format_b + " ") + sh_quote(a) + " " + sh_quote(b));
    CHECK_MESSAGE(r.status == 0, "qemu-img compare " << a << " " << b << ": " << r.output);
}

void expect_qemu_reads_prefix(const std::string& path, const std::string& format, const std::vector<uint8_t>& prefix,
                              uint64_t size, const std::string& tmpdir) {
    const std::string ref = tmpdir + "/prefix-ref.raw";
    {
        std::ofstream out(ref, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(prefix.data()), static_cast<std::streamsize>(prefix.size()));
    }
    std::filesystem::resize_file(ref, size);
    expect_qemu_compare(ref, path, "raw", format);
    auto info = run("qemu-img info --output=json -f " + format + " " + sh_quote(path));
    CHECK_MESSAGE(info.output.find("\"virtual-size\": " + std::to_string(size) + ",") != std::string::npos,
                  "virtual size is not " << size << ": " << info.output);
    std::filesystem::remove(ref);
}

void expect_qemu_io_reads(const std::string& path, const std::string& qemu_format, const std::string& commands) {
    auto r = run("qemu-io -f " + qemu_format + " " + commands + " " + sh_quote(path));
    CHECK_MESSAGE((r.status == 0 && r.output.find("failed") == std::string::npos), r.output.substr(0, 2000));
}

std::vector<uint8_t> read_all(vdisk::BlockDevice& dev) {
    std::vector<uint8_t> out(static_cast<size_t>(dev.size()));
    auto r = dev.read(0, out);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().to_string()));
    return out;
}

std::vector<uint8_t> pattern(size_t len, uint32_t seed) {
    std::vector<uint8_t> v(len);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[i] = static_cast<uint8_t>(x);
    }
    return v;
}

std::string tool_path() { return VDISK_TOOL_PATH; }

std::string tool() { return sh_quote(tool_path()); }

std::string sh(const std::string& cmd) {
    auto r = run(cmd);
    REQUIRE_MESSAGE(r.status == 0, cmd << "\n" << r.output);
    return r.output;
}

std::string in_dir(const TempDir& dir, const std::string& cmd) { return "cd " + sh_quote(dir.path) + " && " + cmd; }

std::vector<uint8_t> read_range(vdisk::BlockDevice& dev, uint64_t offset, size_t len) {
    std::vector<uint8_t> b(len);
    auto s = dev.read(offset, b);
    REQUIRE_MESSAGE(s.ok(), "read at " << offset << " (+" << len << "): " << error_text(s));
    return b;
}

std::vector<uint8_t> created_image(const vdisk::Registry& reg, const std::string& format, uint64_t size,
                                   const Writes& writes, const std::string& options, const std::string& file_name) {
    vdisk::MemoryFileSystem fs;
    vdisk::CreateOptions co;
    co.size = size;
    if (!options.empty()) {
        auto kv = vdisk::parse_option_list(options);
        REQUIRE_MESSAGE(kv.ok(), options << ": " << error_text(kv));
        co.values = *kv;
    }
    const std::string name = file_name.empty() ? "image." + format : file_name;
    auto dev = vdisk::create_image(reg, fs, name, format, co);
    REQUIRE_MESSAGE(dev.ok(), error_text(dev));
    for (const auto& w : writes) REQUIRE_MESSAGE((*dev)->write(w.first, w.second).ok(), "write at " << w.first);
    REQUIRE((*dev)->close().ok());
    dev->reset();
    return *fs.content(name);
}

namespace {
void require_field(const std::vector<uint8_t>& b, size_t at, int width) {
    REQUIRE_MESSAGE((width >= 1 && width <= 8 && at <= b.size() && b.size() - at >= size_t(width)),
                    "field of " << width << " bytes at " << at << " is outside the " << b.size() << "-byte image");
}
}  // namespace

uint64_t get_le(const std::vector<uint8_t>& b, size_t at, int width) {
    require_field(b, at, width);
    uint64_t v = 0;
    for (int i = width - 1; i >= 0; --i) v = (v << 8) | b[at + size_t(i)];
    return v;
}

uint64_t get_be(const std::vector<uint8_t>& b, size_t at, int width) {
    require_field(b, at, width);
    uint64_t v = 0;
    for (int i = 0; i < width; ++i) v = (v << 8) | b[at + size_t(i)];
    return v;
}

void put_le(std::vector<uint8_t>& b, size_t at, uint64_t v, int width) {
    require_field(b, at, width);
    for (int i = 0; i < width; ++i) b[at + size_t(i)] = static_cast<uint8_t>(v >> (8 * i));
}

void put_be(std::vector<uint8_t>& b, size_t at, uint64_t v, int width) {
    require_field(b, at, width);
    for (int i = 0; i < width; ++i) b[at + size_t(i)] = static_cast<uint8_t>(v >> (8 * (width - 1 - i)));
}

void patch_file(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
    if (!std::filesystem::exists(path)) std::ofstream(path, std::ios::binary).close();
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    REQUIRE_MESSAGE(f.good(), "cannot write " << bytes.size() << " bytes at " << offset << " of " << path);
}

void verify_corpus_image(const vdisk::Registry& reg, const std::string& rel, const std::string& expect_format,
                         const std::string& open_name) {
    auto root = need_corpus();
    if (!root) return;
    TempDir tmp;
    verify_manifest_entry(reg, *root, manifest_entry(*root, rel), tmp.path, expect_format, open_name);
}

Written write_and_compare(const vdisk::Registry& reg, const WriteCompare& c) {
    INFO(c.format << " -o " << c.options << ", " << c.size << " bytes");
    Written w;
    w.dir = std::make_unique<TempDir>();
    const std::string dir = w.dir->path;
    auto fs = vdisk::make_posix_file_system(dir);
    vdisk::CreateOptions co;
    co.size = c.size;
    if (!c.options.empty()) {
        auto kv = vdisk::parse_option_list(c.options);
        REQUIRE_MESSAGE(kv.ok(), error_text(kv));
        co.values = *kv;
    }
    const std::string name = "out." + c.format;
    w.path = dir + "/" + name;
    const std::string ref_path = dir + "/ref.raw";
    auto dev = vdisk::create_image(reg, *fs, name, c.format, co);
    REQUIRE_MESSAGE(dev.ok(), error_text(dev));
    w.created_size = (*dev)->size();
    vdisk::CreateOptions ro;
    ro.size = w.created_size;
    auto raw = vdisk::create_image(reg, *fs, "ref.raw", "raw", ro);
    REQUIRE_MESSAGE(raw.ok(), error_text(raw));
    // (named pairs, not structured bindings: doctest's message lambdas cannot capture those under clang)
    for (const auto& wr : c.writes) {
        REQUIRE_MESSAGE((*dev)->write(wr.first, wr.second).ok(), "write at " << wr.first);
        REQUIRE((*raw)->write(wr.first, wr.second).ok());
    }
    for (const auto& z : c.zeroes) {
        REQUIRE_MESSAGE((*dev)->write_zeroes(z.first, z.second).ok(), "write_zeroes at " << z.first);
        REQUIRE((*raw)->write_zeroes(z.first, z.second, false).ok());
    }
    // Read back before closing, through the same devices (table updates may still sit in caches).
    for (const auto& wr : c.writes)
        CHECK_MESSAGE(read_range(**dev, wr.first, wr.second.size()) == read_range(**raw, wr.first, wr.second.size()),
                      "before close, at " << wr.first);
    REQUIRE((*dev)->close().ok());
    REQUIRE((*raw)->close().ok());
    dev->reset();
    raw->reset();

    if (c.qemu_check) expect_qemu_check(w.path, c.qemu_format);
    if (c.full_compare) {
        expect_qemu_compare(w.path, ref_path, c.qemu_format, "raw");
    } else {
        std::string cmds;
        for (auto& [off, data] : c.writes) {
            cmds += " -c 'read -P " + std::to_string(data[0]) + " " + std::to_string(off) + " " +
                    std::to_string(data.size()) + "'";
            if (c.zeros_before_writes) cmds += " -c 'read -P 0 " + std::to_string(off - 65536) + " 65536'";
        }
        expect_qemu_io_reads(w.path, c.qemu_format, cmds);
    }
    auto info = run("qemu-img info --output=json -f " + c.qemu_format + " " + sh_quote(w.path));
    REQUIRE_MESSAGE(info.status == 0, info.output);
    w.qemu_info = info.output;
    CHECK(info.output.find("\"virtual-size\": " + std::to_string(w.created_size)) != std::string::npos);
    if (!c.libyal_info.empty() && have(c.libyal_info)) {
        auto v = run(c.libyal_info + " " + sh_quote(w.path));
        CHECK_MESSAGE(v.status == 0, v.output);
    }
    // vdisk reads its own image back as the reference reads, and its check finds nothing.
    auto back = open_host(reg, w.path);
    REQUIRE_MESSAGE(back.ok(), error_text(back));
    auto ref = open_host(reg, ref_path, "raw");
    REQUIRE_MESSAGE(ref.ok(), error_text(ref));
    for (const auto& wr : c.writes)
        CHECK_MESSAGE(read_range(*back->device, wr.first, wr.second.size()) ==
                          read_range(*ref->device, wr.first, wr.second.size()),
                      "after reopening, at " << wr.first);
    for (const auto& z : c.zeroes)
        CHECK_MESSAGE(read_range(*back->device, z.first, z.second) == read_range(*ref->device, z.first, z.second),
                      "zeroed range after reopening, at " << z.first);
    auto chk = back->format->check(*back->device, vdisk::RepairMode::none);
    REQUIRE_MESSAGE(chk.ok(), error_text(chk));
    CHECK_MESSAGE(chk->corruptions == 0, (chk->messages.empty() ? "" : chk->messages.front()));
    w.back = std::move(*back);
    return w;
}

}  // namespace vt

namespace vt {

vdisk::Json manifest_entry(const std::string& root, const std::string& rel) {
    auto m = corpus_manifest(root);
    for (const char* section : {"real", "hostile"}) {
        if (auto* arr = m.get(section) ? m.get(section)->as_array() : nullptr)
            for (auto& e : *arr)
                if (auto* f = e.get("file"); f && f->as_string() && *f->as_string() == rel) return e;
    }
    FAIL("no manifest entry for " << rel);
    return {};
}

void verify_manifest_entry(const vdisk::Registry& reg, const std::string& root, const vdisk::Json& entry,
                           const std::string& dir, const std::string& expect_format, const std::string& open_name) {
    std::string rel = *entry.get("file")->as_string();
    INFO("corpus image " << rel);
    // Unpack the whole folder: chains, data files and descriptors refer to their neighbours by name.
    std::string folder = rel.substr(0, rel.rfind('/'));
    // Already unpacked into this directory (several entries of one folder share it): reuse.
    for (auto& de : std::filesystem::directory_iterator(root + "/" + folder)) {
        std::string fn = de.path().filename().string();
        std::string plain = fn.substr(0, fn.rfind('.'));
        if (!std::filesystem::exists(dir + "/" + plain) && !std::filesystem::exists(dir + "/" + fn))
            unpack_corpus(root, folder + "/" + fn, dir);
    }
    std::string base = rel.substr(rel.rfind('/') + 1);
    for (const char* ext : {".xz", ".bz2", ".gz"})
        if (base.size() > std::strlen(ext) && base.compare(base.size() - std::strlen(ext), std::strlen(ext), ext) == 0)
            base.resize(base.size() - std::strlen(ext));
    std::string path = dir + "/" + (open_name.empty() ? base : open_name);
    auto img = open_host(reg, path);
    REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
    CHECK(std::string(img->format->name()) == expect_format);
    auto& dev = *img->device;
    CHECK(dev.size() == *entry.get("virtual_size")->as_uint());
    std::vector<std::pair<uint64_t, uint64_t>> extents;
    if (auto* arr = entry.get("data_extents")->as_array())
        for (auto& x : *arr) {
            uint64_t off = *x.get("offset")->as_uint(), len = *x.get("length")->as_uint();
            CHECK_MESSAGE(sha256_range(dev, off, len) == *x.get("sha256")->as_string(),
                          "data extent at " << off << " (+" << len << ")");
            extents.emplace_back(off, off + len);
        }
    // Everything outside the recorded extents reads as zeros.
    std::vector<uint8_t> buf(1 << 20);
    uint64_t off = 0;
    size_t next = 0;
    while (off < dev.size()) {
        while (next < extents.size() && extents[next].second <= off) ++next;
        if (next < extents.size() && extents[next].first <= off) {
            off = extents[next].second;
            continue;
        }
        uint64_t limit = next < extents.size() ? extents[next].first : dev.size();
        auto m = vdisk::map_extent(dev, off, std::min<uint64_t>(limit - off, buf.size()));
        REQUIRE_MESSAGE(m.ok(), (m.ok() ? "" : m.error().to_string()));
        if (m->data) {
            auto r = dev.read(off, std::span<uint8_t>(buf.data(), m->length));
            REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().to_string()));
            bool zero = std::all_of(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(m->length),
                                    [](uint8_t b) { return b == 0; });
            CHECK_MESSAGE(zero, "non-zero data outside the recorded extents at " << off);
            if (!zero) return;
        }
        off += m->length;
    }
}

}  // namespace vt
