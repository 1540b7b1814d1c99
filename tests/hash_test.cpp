// SPDX-License-Identifier: Apache-2.0
// vdisk hash / convert --hash / HashSink: digests of the virtual content must equal those of qemu-img's raw
// reading (qemu-img convert -O raw, then sha256sum/sha1sum/md5sum), on every format, through chains, and
// against the shared corpus' recorded whole-image SHA-256.
#include <openssl/evp.h>

#include <filesystem>
#include <map>

#include "support.hpp"
#include "vdisk/hash.hpp"

namespace {

// First word of a command's output (the digest of `sha256sum FILE`).
std::string first_word(const std::string& s) { return s.substr(0, s.find_first_of(" \n")); }

// qemu-img's raw reading of `img`, digested by coreutils.
std::string oracle(const std::string& img, const std::string& fmt, const std::string& dir, const char* sum) {
    std::string raw = dir + "/oracle.raw";
    auto r = vt::run("qemu-img convert -f " + fmt + " -O raw " + vt::sh_quote(img) + " " + vt::sh_quote(raw) + " && " +
                     sum + " " + vt::sh_quote(raw));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    std::filesystem::remove(raw);
    return first_word(r.output);
}

// A raw image with data, a hole and a run of written zeros.
std::string make_source(const vt::TempDir& t) {
    std::string src = t / "src.raw";
    auto data = vt::pattern(3u << 20, 7);
    std::fill(data.begin() + (1u << 20), data.begin() + (2u << 20), 0);  // zeros inside data
    std::vector<uint8_t> img(24u << 20, 0);
    std::copy(data.begin(), data.end(), img.begin() + (5u << 20) + 4096 + 512);
    auto tail = vt::pattern(70000, 9);
    std::copy(tail.begin(), tail.end(), img.end() - 70000);
    vt::write_file(src, img);
    // Punch the untouched megabytes so the raw source has real holes too.
    vt::run("fallocate -d " + vt::sh_quote(src));
    return src;
}

// A device of `size` bytes whose first `data_len` bytes are a pattern and the rest a zero extent; it
// counts the bytes it is asked to read.
class CountingDevice : public vdisk::BlockDevice {
public:
    CountingDevice(uint64_t size, uint64_t data_len) : BlockDevice(size, true), data_(vt::pattern(data_len, 3)) {}
    uint64_t bytes_read = 0;
    const std::vector<uint8_t>& data() const { return data_; }
    std::vector<vdisk::File*> files() const override { return {}; }

protected:
    vdisk::Status do_read(uint64_t off, std::span<uint8_t> buf) override {
        bytes_read += buf.size();
        for (size_t i = 0; i < buf.size(); ++i) buf[i] = off + i < data_.size() ? data_[off + i] : 0;
        return vdisk::ok();
    }
    vdisk::Result<vdisk::Extent> do_block_status(uint64_t off, uint64_t max_len) override {
        vdisk::Extent e;
        e.offset = off;
        if (off < data_.size()) {
            e.kind = vdisk::ExtentKind::data;
            e.length = std::min<uint64_t>(max_len, data_.size() - off);
        } else {
            e.kind = vdisk::ExtentKind::zero;
            e.length = max_len;
        }
        return e;
    }
    vdisk::ImageInfo do_info() const override {
        vdisk::ImageInfo i;
        i.format = "counting";
        i.virtual_size = size();
        return i;
    }

private:
    std::vector<uint8_t> data_;
};

std::string openssl_hex(const EVP_MD* md, const std::vector<uint8_t>& a, uint64_t zeros_after) {
    EVP_MD_CTX* c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, md, nullptr);
    EVP_DigestUpdate(c, a.data(), a.size());
    std::vector<uint8_t> z(1u << 20, 0);
    for (uint64_t left = zeros_after; left;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(left, z.size()));
        EVP_DigestUpdate(c, z.data(), n);
        left -= n;
    }
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(c, out, &len);
    EVP_MD_CTX_free(c);
    std::string hex;
    char b[3];
    for (unsigned i = 0; i < len; ++i) {
        std::snprintf(b, sizeof b, "%02x", out[i]);
        hex += b;
    }
    return hex;
}

}  // namespace

TEST_CASE("vdisk hash equals qemu-img's raw reading digested by coreutils, on every format") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    const std::string want256 = oracle(src, "raw", t.path, "sha256sum");
    struct Case {
        const char* name;
        const char* fmt;
        const char* opts;
    } cases[] = {
        {"a.raw", "raw", ""},
        {"a.qcow2", "qcow2", "-o cluster_size=65536"},
        {"c.qcow2", "qcow2", "-c"},
        {"a.vmdk", "vmdk", ""},
        {"s.vmdk", "vmdk", "-o subformat=streamOptimized"},
        {"f.vmdk", "vmdk", "-o subformat=monolithicFlat"},
        {"d.vhd", "vpc", ""},
        {"f.vhd", "vpc", "-o subformat=fixed"},
        {"a.vhdx", "vhdx", ""},
        {"a.vdi", "vdi", ""},
    };
    for (auto& c : cases) {
        INFO(c.name);
        std::string img = t / c.name;
        auto r = vt::run("qemu-img convert -O " + std::string(c.fmt) + " " + c.opts + " " + vt::sh_quote(src) + " " +
                         vt::sh_quote(img));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        // qemu-img's reading of the image itself: a VHD's size is rounded up to its CHS geometry, so its
        // content is the source plus zeros; every other format holds exactly the source.
        const std::string w256 = oracle(img, c.fmt, t.path, "sha256sum");
        const std::string w1 = oracle(img, c.fmt, t.path, "sha1sum");
        const std::string w5 = oracle(img, c.fmt, t.path, "md5sum");
        if (std::string(c.fmt) != "vpc") CHECK(w256 == want256);
        else CHECK(w256 != want256);
        r = vt::run(vt::tool() + " hash " + vt::sh_quote(img));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        CHECK(r.output == w256 + "  " + img + "\n");
        // All three at once, each on its own thread, in the order asked.
        r = vt::run(vt::tool() + " hash --algo md5 --algo sha1,sha256 " + vt::sh_quote(img));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        CHECK(r.output ==
              "MD5 (" + img + ") = " + w5 + "\nSHA1 (" + img + ") = " + w1 + "\nSHA256 (" + img + ") = " + w256 + "\n");
    }
}

TEST_CASE("vdisk hash follows backing chains as qemu-img reads them") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    REQUIRE(vt::run("qemu-img convert -O qcow2 " + vt::sh_quote(src) + " " + vt::sh_quote(t / "base.qcow2")).status ==
            0);
    REQUIRE(vt::run("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 " + vt::sh_quote(t / "top.qcow2")).status == 0);
    auto io = vt::run("qemu-io -c 'write -P 0x5a 6M 1M' -c 'write -z 5M 512k' " + vt::sh_quote(t / "top.qcow2"));
    REQUIRE_MESSAGE(io.status == 0, io.output);
    auto r = vt::run(vt::tool() + " hash --algo sha1 " + vt::sh_quote(t / "top.qcow2"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    CHECK(first_word(r.output) == oracle(t / "top.qcow2", "qcow2", t.path, "sha1sum"));
    CHECK(first_word(r.output) != oracle(t / "base.qcow2", "qcow2", t.path, "sha1sum"));
}

TEST_CASE("vdisk hash matches the corpus' recorded whole-image SHA-256") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto m = vt::corpus_manifest(*root);
    std::map<std::string, std::unique_ptr<vt::TempDir>> dirs;
    int checked = 0;
    for (auto& e : *m.get("real")->as_array()) {
        auto* sha = e.get("sha256");
        auto* vs = e.get("virtual_size");
        if (!sha || !sha->as_string() || !vs || !vs->as_uint()) continue;
        // Every zero byte is hashed (that is what a digest of the disk means), so the 10-136 GiB images of
        // the corpus would take minutes each; the rest covers every format.
        if (*vs->as_uint() > (2ull << 30)) continue;
        std::string rel = *e.get("file")->as_string();
        if (rel.find("data-file.bin") != std::string::npos) continue;  // the data file of data-file.qcow2
        std::string folder = rel.substr(0, rel.rfind('/'));
        auto& dir = dirs[folder];
        if (!dir) {
            dir = std::make_unique<vt::TempDir>();
            for (auto& de : std::filesystem::directory_iterator(*root + "/" + folder))
                vt::unpack_corpus(*root, folder + "/" + de.path().filename().string(), dir->path);
        }
        std::string base = rel.substr(rel.rfind('/') + 1);
        for (std::string ext : {".xz", ".bz2", ".gz"})
            if (base.size() > ext.size() && base.ends_with(ext)) base.resize(base.size() - ext.size());
        if (base == "sesparse.vmdk") base = "sesparse-descriptor.vmdk";
        std::string path = *dir / base;
        INFO(rel);
        auto r = vt::run(vt::tool() + " hash " + vt::sh_quote(path));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        CHECK(first_word(r.output) == *sha->as_string());
        ++checked;
    }
    CHECK(checked >= 20);
}

TEST_CASE("holes are hashed without being read") {
    CountingDevice dev(96u << 20, 3u << 20);
    std::vector<vdisk::HashAlgorithm> algos{vdisk::HashAlgorithm::sha256, vdisk::HashAlgorithm::md5};
    auto d = vdisk::hash_device(dev, algos);
    REQUIRE(d.ok());
    CHECK(dev.bytes_read == (3u << 20));
    REQUIRE(d->size() == 2);
    CHECK((*d)[0].algorithm == vdisk::HashAlgorithm::sha256);
    CHECK((*d)[0].hex == openssl_hex(EVP_sha256(), dev.data(), 93u << 20));
    CHECK((*d)[1].hex == openssl_hex(EVP_md5(), dev.data(), 93u << 20));
}

TEST_CASE("HashSink refuses pieces out of order and after finish") {
    std::vector<vdisk::HashAlgorithm> algos{vdisk::HashAlgorithm::sha1};
    vdisk::HashSink sink(algos);
    std::vector<uint8_t> b(100, 1);
    REQUIRE(sink.data(0, b).ok());
    auto st = sink.data(50, b);
    REQUIRE(!st.ok());
    CHECK(st.error().code == vdisk::ErrorCode::invalid_argument);
    REQUIRE(sink.zeros(100, 28).ok());
    CHECK(sink.received() == 128);
    auto d = sink.finish();
    REQUIRE(d.ok());
    std::vector<uint8_t> want(b);
    CHECK((*d)[0].hex == openssl_hex(EVP_sha1(), want, 28));
    CHECK(!sink.zeros(128, 1).ok());
    CHECK(!sink.finish().ok());
    CHECK(!vdisk::parse_hash_algorithm("crc32").ok());
    CHECK(vdisk::parse_hash_algorithm("SHA-256").ok());
}

TEST_CASE("convert --hash digests the source in the same pass, plain and compressed copies") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    REQUIRE(vt::run("qemu-img convert -O qcow2 " + vt::sh_quote(src) + " " + vt::sh_quote(t / "src.qcow2")).status ==
            0);
    const std::string want256 = oracle(src, "raw", t.path, "sha256sum");
    const std::string want5 = oracle(src, "raw", t.path, "md5sum");
    for (std::string target : {"-O qcow2", "-O qcow2 -c", "-O vmdk -o subformat=streamOptimized", "-O vhdx"}) {
        INFO(target);
        auto r = vt::run(vt::in_dir(t, vt::tool() + " convert " + target +
                                           " --hash sha256 --hash md5 --hash-file sums src.qcow2 out.img"));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        std::string lines = "SHA256 (src.qcow2) = " + want256 + "\nMD5 (src.qcow2) = " + want5 + "\n";
        CHECK(r.output == lines);
        auto f = vt::read_file(t / "sums");
        CHECK(std::string(f.begin(), f.end()) == lines);
        vt::expect_qemu_compare(src, t / "out.img");
        std::filesystem::remove(t / "out.img");
    }
    // A raw target: the line names the target, so sha256sum -c verifies what was written.
    auto r = vt::run(
        vt::in_dir(t, vt::tool() + " convert -O raw --hash-file sums src.qcow2 out.raw && sha256sum -c sums"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    CHECK(r.output.find(want256 + "  out.raw\n") == 0);
    CHECK(r.output.find("out.raw: OK") != std::string::npos);
    // To stdout: the digests go to stderr, the image to the pipe.
    r = vt::run(vt::in_dir(
        t, vt::tool() +
               " convert -O vmdk -o subformat=streamOptimized --hash sha1 src.qcow2 - 2>err >pipe.vmdk && cat err"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    CHECK(r.output == oracle(src, "raw", t.path, "sha1sum") + "  src.qcow2\n");
    vt::expect_qemu_compare(src, t / "pipe.vmdk");
    // Bad algorithm: refused before anything is written.
    r = vt::run(vt::in_dir(t, vt::tool() + " convert -O qcow2 --hash crc32 src.qcow2 x.qcow2"));
    CHECK(r.status == 1);
    CHECK(r.output.find("unknown hash algorithm 'crc32'") != std::string::npos);
    CHECK(!std::filesystem::exists(t / "x.qcow2"));
}
