// SPDX-License-Identifier: Apache-2.0
// Platform import rules, lint, and GCE's disk.raw-in-a-tar.gz container (see targets.hpp).
#include "vdisk/targets.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "util/endian.hpp"
#include "vdisk/hash.hpp"

namespace vdisk {
namespace {

constexpr uint64_t kMiB = 1ull << 20, kGiB = 1ull << 30, kTiB = 1ull << 40;

const std::vector<CloudTarget>& table() {
    static const std::vector<CloudTarget> t = {
        {"azure",
         "Microsoft Azure",
         "vhd",
         {{"azure", "on"}},
         "",
         "fixed VHD (not VHDX, not dynamic), virtual size a whole number of MiB, at most 32767 GiB (2 TiB for a "
         "generation 1 OS disk)",
         "https://learn.microsoft.com/azure/virtual-machines/linux/create-upload-generic#general-linux-installation-notes"},
        {"aws",
         "AWS VM Import/Export",
         "vmdk",
         {{"subformat", "streamOptimized"}},
         "",
         "streamOptimized VMDK, VHD/VHDX (fixed or dynamic), raw or OVA; volumes at most 16 TiB",
         "https://docs.aws.amazon.com/vm-import/latest/userguide/prerequisites.html"},
        {"gce",
         "Google Compute Engine",
         "raw",
         {},
         "tar.gz",
         "a raw image named disk.raw inside a gzip'd tar (tar --format=oldgnu -Sczf), size a whole number of GiB",
         "https://cloud.google.com/compute/docs/import/import-existing-image"},
        {"esxi",
         "VMware ESXi",
         "vmdk",
         {{"subformat", "monolithicFlat"}, {"adapter_type", "lsilogic"}},
         "",
         "a flat VMDK (descriptor plus -flat extent: monolithicFlat or vmfs); hosted sparse VMDKs need "
         "vmkfstools -i first; at most 62 TiB",
         "https://kb.vmware.com/s/article/1028042 (hosted vs. ESXi disks), VMware Virtual Disk Format 5.0"},
        {"hyperv",
         "Microsoft Hyper-V",
         "vhdx",
         {},
         "",
         "VHDX (generation 2 VMs boot only from VHDX; VHD only for generation 1), at most 64 TiB",
         "https://learn.microsoft.com/windows-server/virtualization/hyper-v/plan/should-i-create-a-generation-1-or-2-virtual-machine-in-hyper-v"},
        {"virtualbox",
         "Oracle VirtualBox",
         "vdi",
         {},
         "",
         "VDI is native; VMDK, VHD, HDD, QED and QCOW are also attached (the manual's list)",
         "https://www.virtualbox.org/manual/ch05.html#vdidetails"},
        {"proxmox",
         "Proxmox VE",
         "qcow2",
         {},
         "",
         "qcow2 on file storage (qm disk import converts anything qemu-img reads); one standalone file",
         "https://pve.proxmox.com/pve-docs/qm.1.html (qm disk import)"},
    };
    return t;
}

struct VhdFooter {
    bool found = false;
    uint32_t disk_type = 0;
    uint64_t current_size = 0;
};

VhdFooter vhd_footer(FileSystem& fs, std::string_view name) {
    VhdFooter v;
    auto f = fs.open(name, Access::read_only);
    if (!f) return v;
    auto sz = (*f)->size();
    if (!sz || *sz < 512) return v;
    std::array<uint8_t, 512> b{};
    if (!read_exact(**f, *sz - 512, b)) return v;
    size_t at = 0;
    if (std::memcmp(b.data(), "conectix", 8) != 0) {
        // Old writers put a 511-byte footer at the very end.
        if (std::memcmp(b.data() + 1, "conectix", 8) != 0) return v;
        at = 1;
    }
    v.found = true;
    v.disk_type = util::load_be<uint32_t>(b.data() + at + 60);
    v.current_size = util::load_be<uint64_t>(b.data() + at + 48);
    return v;
}

// The first tar header inside a gzip'd file: name and size of the first member, when it is one.
struct TarGzHead {
    bool gzip = false;
    bool tar = false;
    std::string name;
    uint64_t size = 0;
};

TarGzHead targz_head(FileSystem& fs, std::string_view name) {
    TarGzHead h;
    auto f = fs.open(name, Access::read_only);
    if (!f) return h;
    std::array<uint8_t, 64u << 10> in{};
    auto got = (*f)->read_at(0, in);
    if (!got || *got < 18 || in[0] != 0x1f || in[1] != 0x8b) return h;
    h.gzip = true;
    std::array<uint8_t, 512> hdr{};
    z_stream z{};
    if (inflateInit2(&z, 15 + 16) != Z_OK) return h;
    z.next_in = in.data();
    z.avail_in = static_cast<uInt>(*got);
    z.next_out = hdr.data();
    z.avail_out = static_cast<uInt>(hdr.size());
    int rc = inflate(&z, Z_SYNC_FLUSH);
    const bool full = z.avail_out == 0;
    inflateEnd(&z);
    if ((rc != Z_OK && rc != Z_STREAM_END) || !full) return h;
    unsigned sum = 0;
    for (size_t i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : hdr[i];
    unsigned want = 0;
    for (size_t i = 148; i < 156 && hdr[i] >= '0' && hdr[i] <= '7'; ++i) want = want * 8 + (hdr[i] - '0');
    if (sum != want) return h;
    h.tar = true;
    h.name.assign(reinterpret_cast<const char*>(hdr.data()), strnlen(reinterpret_cast<const char*>(hdr.data()), 100));
    if (hdr[124] & 0x80) {
        for (size_t i = 128; i < 136; ++i) h.size = (h.size << 8) | hdr[i];
    } else {
        for (size_t i = 124; i < 136 && hdr[i] >= '0' && hdr[i] <= '7'; ++i) h.size = h.size * 8 + (hdr[i] - '0');
    }
    return h;
}

std::string size_text(uint64_t b) {
    if (b % kGiB == 0) return std::to_string(b / kGiB) + " GiB";
    if (b % kMiB == 0) return std::to_string(b / kMiB) + " MiB";
    return std::to_string(b) + " bytes";
}

std::string q(std::string_view s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += "'\\''";
        else out += c;
    }
    return out + "'";
}

std::string stem(std::string_view name) {
    std::string b(base_name(name));
    auto dot = b.rfind('.');
    if (dot != std::string::npos && dot > 0) b.resize(dot);
    return b;
}

// One lint run: what every target's rules look at, and how they report (the fixing command by default).
struct Linter {
    FileSystem& fs;
    std::string_view name;
    LintReport& r;
    std::string fix, create_type;

    void add(std::string rule, std::string problem, bool refused, const std::string& how = {}) {
        r.findings.push_back(LintFinding{std::move(rule), std::move(problem), refused, how.empty() ? fix : how});
    }
    // Over a platform's size limit: refused, and only shrinking what is inside fixes it.
    bool over_limit(uint64_t vs, uint64_t max, const std::string& limit, const std::string& below) {
        if (vs <= max) return false;
        add("size-limit", "virtual size " + size_text(vs) + " exceeds " + limit, true,
            "shrink the file system and partitions below " + below + ", then vdisk resize --shrink");
        return true;
    }

    void azure() {
        VhdFooter v = r.format == "vhd" ? vhd_footer(fs, name) : VhdFooter{};
        if (r.format != "vhd") add("format", "format " + r.format + ": Azure accepts fixed VHD only", true);
        else if (v.found && v.disk_type != 2)
            add("vhd-type",
                std::string("a ") +
                    (v.disk_type == 3   ? "dynamic"
                     : v.disk_type == 4 ? "differencing"
                                        : "non-fixed") +
                    " VHD: Azure accepts fixed VHDs only",
                true);
        const uint64_t vs = v.found ? v.current_size : r.virtual_size;
        if (vs % kMiB)
            add("size-alignment",
                "virtual size " + std::to_string(vs) + " bytes is not a whole number of MiB (" +
                    std::to_string(vs % kMiB) + " bytes over " + size_text(vs / kMiB * kMiB) + ")",
                true);
        if (!over_limit(vs, 32767 * kGiB, "Azure's 32767 GiB disk limit", "32767 GiB") && vs > 2 * kTiB)
            add("os-disk-size",
                "virtual size " + size_text(vs) +
                    " is over 2 TiB: usable as a data disk or a "
                    "generation 2 OS disk, not a generation 1 OS disk",
                false, "use it as a data disk or with generation 2");
    }
    void aws() {
        bool ok_fmt = r.format == "raw" || r.format == "vhd" || r.format == "vhdx" ||
                      (r.format == "vmdk" && create_type == "streamOptimized");
        if (!ok_fmt)
            add("format",
                r.format == "vmdk" ? "a " + create_type + " VMDK: VM Import takes VMDKs in streamOptimized form only"
                                   : "format " + r.format + ": VM Import takes VMDK (streamOptimized), VHD/VHDX or raw",
                true);
        over_limit(r.virtual_size, 16 * kTiB, "VM Import's 16 TiB volume limit", "16 TiB");
    }
    void gce() {
        TarGzHead g = r.format == "raw" ? targz_head(fs, name) : TarGzHead{};
        uint64_t disk_size = r.virtual_size;
        if (g.gzip) {
            // The upload itself: a gzip'd tar whose first member must be disk.raw.
            const std::string repack = "tar -xzf " + q(name) + " && vdisk convert --target gce " +
                                       q(g.name.empty() ? "DISK" : g.name) + " disk.tar.gz";
            if (!g.tar) add("container", "a gzip file that does not hold a tar archive", true);
            else if (g.name != "disk.raw")
                add("file-name", "the archive's first member is '" + g.name + "'; Compute Engine reads 'disk.raw'",
                    true, repack);
            if (g.tar && g.size % kGiB)
                add("size-alignment", "disk.raw holds " + std::to_string(g.size) + " bytes, not a whole number of GiB",
                    true, repack);
            disk_size = g.size;
            r.format = "tar.gz";
            r.virtual_size = g.size;
        } else if (r.format != "raw") {
            add("format", "format " + r.format + ": Compute Engine imports a raw disk.raw inside a .tar.gz", true);
        } else {
            add("container", "a bare raw file: Compute Engine wants it as disk.raw inside a gzip'd tar", true);
        }
        if (disk_size % kGiB && !(g.gzip && g.tar))  // a tar's member size was reported above, with its fix
            add("size-alignment",
                "virtual size " + std::to_string(disk_size) + " bytes is not a whole number of GiB (" +
                    "convert --target gce pads disk.raw with zeros to " + size_text((disk_size / kGiB + 1) * kGiB) +
                    ")",
                true);
    }
    void esxi() {
        bool flat = r.format == "vmdk" && (create_type == "monolithicFlat" || create_type == "vmfs");
        if (!flat)
            add("format",
                r.format == "vmdk" ? "a " + create_type +
                                         " VMDK: ESXi runs flat VMDKs (monolithicFlat/vmfs); "
                                         "hosted sparse disks need vmkfstools -i"
                                   : "format " + r.format + ": ESXi runs VMDK disks",
                true);
        over_limit(r.virtual_size, 62 * kTiB, "ESXi's 62 TiB VMDK limit", "62 TiB");
    }
    void hyperv() {
        if (r.format == "vhd")
            add("format", "a VHD: Hyper-V attaches it to generation 1 VMs only; generation 2 needs VHDX", false);
        else if (r.format != "vhdx")
            add("format", "format " + r.format + ": Hyper-V attaches VHDX (and VHD for generation 1)", true);
        over_limit(r.virtual_size, 64 * kTiB, "the VHDX limit of 64 TiB", "64 TiB");
    }
    void virtualbox() {
        if (r.format == "vdi") return;
        bool attachable = r.format == "vmdk" || r.format == "vhd" || r.format == "qcow2";
        add("format",
            "format " + r.format +
                (attachable ? ": VirtualBox attaches it, but VDI is its native format"
                            : ": VirtualBox does not attach this format"),
            !attachable);
    }
    void proxmox() {
        if (r.format != "qcow2")
            add("format", "format " + r.format + ": qm disk import converts it, but qcow2 is what file storage keeps",
                false);
    }
};

}  // namespace

std::span<const CloudTarget> cloud_targets() { return table(); }

Result<const CloudTarget*> find_cloud_target(std::string_view name) {
    for (auto& t : table())
        if (t.name == name) return &t;
    std::string names;
    for (auto& t : table()) names += (names.empty() ? "" : ", ") + std::string(t.name);
    return make_error(ErrorCode::not_found, "unknown target '" + std::string(name) + "' (known: " + names + ")");
}

bool LintReport::refused() const {
    return std::any_of(findings.begin(), findings.end(), [](const LintFinding& f) { return f.refused; });
}

Result<LintReport> lint_image(FileSystem& fs, std::string_view name, const OpenedImage& image, const CloudTarget& t) {
    LintReport r;
    r.target = &t;
    r.image = std::string(name);
    BlockDevice& dev = *image.device;
    const ImageInfo info = dev.info();
    r.format = image.format ? std::string(image.format->name()) : info.format;
    r.virtual_size = dev.size();
    const std::string ext = t.container == "tar.gz" ? ".tar.gz"
                            : t.format == "vhd"     ? ".vhd"
                                                    : "." + std::string(t.format);
    std::string out = stem(name) + ext;
    if (out == base_name(name)) out = stem(name) + "-" + std::string(t.name) + ext;  // never overwrite the input
    Linter l{fs, name, r, "vdisk convert --target " + std::string(t.name) + " " + q(name) + " " + q(out), ""};
    if (auto* d = info.format_specific.get("data"))
        if (auto* c = d->get("create-type"); c && c->as_string()) l.create_type = *c->as_string();

    // Every platform imports one self-contained file: a backing chain would be silently missing.
    if (info.backing_filename)
        l.add("backing-file",
              "the image has a backing file '" + *info.backing_filename +
                  "': the platform imports one file, without its chain",
              true);
    static constexpr std::pair<std::string_view, void (Linter::*)()> kRules[] = {
        {"azure", &Linter::azure},    {"aws", &Linter::aws},       {"gce", &Linter::gce},
        {"esxi", &Linter::esxi},      {"hyperv", &Linter::hyperv}, {"virtualbox", &Linter::virtualbox},
        {"proxmox", &Linter::proxmox}};
    for (auto& [target, rules] : kRules)
        if (t.name == target) (l.*rules)();
    return r;
}

namespace {

// A content sink that writes a gzip stream of: tar header for disk.raw, the content, padding, end blocks.
class GzipTarSink final : public ContentSink {
public:
    GzipTarSink(File& out, uint64_t size) : out_(out), size_(size) {}
    ~GzipTarSink() override {
        if (live_) deflateEnd(&z_);
    }
    Status start() {
        live_ = deflateInit2(&z_, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK;
        if (!live_) return make_error(ErrorCode::io, "gzip: deflateInit2 failed");
        // Old GNU header ("ustar  \0"), as tar --format=oldgnu writes and GCE's instructions ask for; sizes of
        // 8 GiB and more in base-256.
        std::array<uint8_t, 512> h{};
        std::memcpy(h.data(), "disk.raw", 8);
        std::memcpy(h.data() + 100, "0000644", 7);
        std::memcpy(h.data() + 108, "0000000", 7);
        std::memcpy(h.data() + 116, "0000000", 7);
        if (size_ < (1ull << 33)) {
            std::snprintf(reinterpret_cast<char*>(h.data() + 124), 12, "%011llo",
                          static_cast<unsigned long long>(size_));
        } else {
            h[124] = 0x80;
            for (int i = 0; i < 8; ++i) h[135 - i] = static_cast<uint8_t>(size_ >> (8 * i));
        }
        std::memcpy(h.data() + 136, "00000000000", 11);
        h[156] = '0';
        std::memcpy(h.data() + 257, "ustar  ", 8);
        std::memset(h.data() + 148, ' ', 8);
        unsigned sum = 0;
        for (uint8_t b : h) sum += b;
        std::snprintf(reinterpret_cast<char*>(h.data() + 148), 8, "%06o", sum);
        h[155] = ' ';
        return deflate_bytes(h, Z_NO_FLUSH);
    }
    Status data(uint64_t, std::span<const uint8_t> bytes) override { return deflate_bytes(bytes, Z_NO_FLUSH); }
    Status zeros(uint64_t, uint64_t length) override {
        static const std::array<uint8_t, 1u << 16> z{};
        while (length) {
            size_t n = static_cast<size_t>(std::min<uint64_t>(length, z.size()));
            VDISK_TRY(deflate_bytes(std::span<const uint8_t>(z.data(), n), Z_NO_FLUSH));
            length -= n;
        }
        return ok();
    }
    Status finish() {
        VDISK_TRY(zeros(0, (512 - size_ % 512) % 512 + 1024));  // member padding, then two end blocks
        return deflate_bytes({}, Z_FINISH);
    }

private:
    Status deflate_bytes(std::span<const uint8_t> in, int flush) {
        z_.next_in = const_cast<Bytef*>(in.data());
        z_.avail_in = static_cast<uInt>(in.size());
        for (;;) {
            z_.next_out = buf_.data();
            z_.avail_out = static_cast<uInt>(buf_.size());
            int rc = deflate(&z_, flush);
            if (rc == Z_STREAM_ERROR) return make_error(ErrorCode::io, "gzip: deflate failed");
            size_t n = buf_.size() - z_.avail_out;
            if (n) {
                VDISK_TRY(out_.write_at(pos_, std::span<const uint8_t>(buf_.data(), n)));
                pos_ += n;
            }
            if (flush == Z_FINISH ? rc == Z_STREAM_END : (z_.avail_in == 0 && z_.avail_out != 0)) break;
        }
        return ok();
    }
    File& out_;
    uint64_t size_;
    z_stream z_{};
    bool live_ = false;
    uint64_t pos_ = 0;
    std::array<uint8_t, 256u << 10> buf_{};
};

// Fans one content stream out to two sinks (the tarball and a caller's hash).
class TeeSink final : public ContentSink {
public:
    TeeSink(ContentSink& a, ContentSink* b) : a_(a), b_(b) {}
    Status data(uint64_t o, std::span<const uint8_t> d) override {
        VDISK_TRY(a_.data(o, d));
        return b_ ? b_->data(o, d) : ok();
    }
    Status zeros(uint64_t o, uint64_t n) override {
        VDISK_TRY(a_.zeros(o, n));
        return b_ ? b_->zeros(o, n) : ok();
    }

private:
    ContentSink& a_;
    ContentSink* b_;
};

// One step of disk.raw from `off`: up to a buffer of data, or a whole run of zeros; returns its length.
Result<uint64_t> stream_extent(BlockDevice& source, ContentSink& sink, uint64_t off, std::span<uint8_t> buf) {
    VDISK_ASSIGN(MappedExtent m, map_extent(source, off, source.size() - off));
    if (!m.data) {
        VDISK_TRY(sink.zeros(off, m.length));
        return m.length;
    }
    auto b = buf.first(static_cast<size_t>(std::min<uint64_t>(m.length, buf.size())));
    VDISK_TRY(source.read(off, b));
    VDISK_TRY(sink.data(off, b));
    return uint64_t{b.size()};
}

}  // namespace

Status write_gce_tarball(BlockDevice& source, FileSystem& fs, std::string_view dest_name,
                         const ConvertOptions& options) {
    StagingFileSystem stage(fs);
    VDISK_ASSIGN(auto file, stage.create(dest_name));
    // Compute Engine wants a whole number of GiB: disk.raw is the source followed by zeros up to the next one.
    const uint64_t size = source.size();
    const uint64_t padded = (size + kGiB - 1) / kGiB * kGiB;
    auto gz = std::make_unique<GzipTarSink>(*file, padded);
    VDISK_TRY(gz->start());
    TeeSink tee(*gz, options.content_sink);
    std::vector<uint8_t> buf(4u << 20);
    for (uint64_t off = 0; off < size;) {
        if (options.cancel && options.cancel->load()) return make_error(ErrorCode::io, "conversion cancelled");
        VDISK_ASSIGN(uint64_t len, stream_extent(source, tee, off, buf));
        off += len;
        VDISK_TRY(options.progress(off, size));
    }
    VDISK_TRY(gz->zeros(size, padded - size));
    VDISK_TRY(gz->finish());
    gz.reset();
    VDISK_TRY(file->sync());
    file.reset();
    return stage.commit();
}

}  // namespace vdisk
