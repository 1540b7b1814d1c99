// SPDX-License-Identifier: Apache-2.0
// OVF packages as sources: OVAs built here with tar (ustar, gnu and pax formats), an OVF descriptor and
// streamOptimized VMDKs written by vdisk and qemu-img, stored plain, gzip'd and chunked; results checked with
// qemu-img compare, and hostile descriptors/archives refused with exact error kinds.
#include <cstring>
#include <filesystem>
#include <fstream>

#include "support.hpp"
#include "io/archive_files.hpp"
#include "vdisk/appliance.hpp"

namespace {

struct DiskEntry {
    std::string href, extra_file_attrs, capacity_attrs;
};

std::string ovf(const std::vector<DiskEntry>& disks, const std::string& doctype = "") {
    std::string refs, section;
    for (size_t i = 0; i < disks.size(); ++i) {
        std::string id = std::to_string(i + 1);
        refs += "    <File ovf:href=\"" + disks[i].href + "\" ovf:id=\"file" + id + "\" " + disks[i].extra_file_attrs +
                "/>\n";
        section += "    <Disk " + disks[i].capacity_attrs + " ovf:diskId=\"vmdisk" + id + "\" ovf:fileRef=\"file" + id +
                   "\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n";
    }
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + doctype +
           "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" "
           "xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\">\n  <References>\n" +
           refs + "  </References>\n  <DiskSection>\n    <Info>Virtual disk information</Info>\n" + section +
           "  </DiskSection>\n  <VirtualSystem ovf:id=\"vm\"><Info>A virtual machine</Info></VirtualSystem>\n</Envelope>\n";
}

void write_text(const std::string& path, const std::string& s) { std::ofstream(path, std::ios::binary) << s; }

// Two sources: a 40 MiB pattern (bigger than the gzip reader's 16 MiB checkpoint spacing) with holes, and a
// small 3 MiB one.
void make_sources(const vt::TempDir& t) {
    std::vector<uint8_t> big(40u << 20, 0);
    auto p = vt::pattern(12u << 20, 5);
    std::copy(p.begin(), p.end(), big.begin());
    std::copy(p.begin(), p.begin() + (9u << 20), big.begin() + (30u << 20));
    vt::write_file(t / "big.raw", big);
    std::vector<uint8_t> small(3u << 20, 0);
    auto q = vt::pattern(1u << 20, 6);
    std::copy(q.begin(), q.end(), small.begin() + (1u << 20));
    vt::write_file(t / "small.raw", small);
}

}  // namespace

TEST_CASE("OVA: info lists the disks, convert reads plain, gzip'd and chunked members out of the tar") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    make_sources(t);
    // disk1: vdisk's streamOptimized; disk2: qemu-img's, gzip'd; disk3: vdisk's, split into 5 MB chunks.
    vt::sh(vt::in_dir(t, vt::tool() + " convert -O vmdk -o subformat=streamOptimized big.raw disk1.vmdk"));
    vt::sh(
        vt::in_dir(t,
                   "qemu-img convert -O vmdk -o subformat=streamOptimized small.raw disk2.vmdk && gzip -k disk2.vmdk"));
    // disk4: the OVF spec's way, compressed content under the plain name (bigger than one checkpoint spacing).
    vt::sh(vt::in_dir(t, "gzip -c disk1.vmdk > disk4.vmdk"));
    REQUIRE(std::filesystem::file_size(t / "disk1.vmdk") > (16u << 20));
    vt::sh(
        vt::in_dir(t, "cp disk1.vmdk disk3.vmdk && split -b 5000000 -d -a 9 disk3.vmdk disk3.vmdk. && rm disk3.vmdk"));
    write_text(t / "app.ovf",
               ovf({{"disk1.vmdk", "", "ovf:capacity=\"40\" ovf:capacityAllocationUnits=\"byte * 2^20\""},
                    {"disk2.vmdk.gz", "ovf:compression=\"gzip\"", "ovf:capacity=\"3145728\""},
                    {"disk3.vmdk", "ovf:chunkSize=\"5000000\"",
                     "ovf:capacity=\"40\" ovf:capacityAllocationUnits=\"MegaBytes\""},
                    {"disk4.vmdk", "ovf:compression=\"gzip\"", "ovf:capacity=\"41943040\""}}));
    size_t chunks = 0;
    for (auto& de : std::filesystem::directory_iterator(t.path))
        if (de.path().filename().string().rfind("disk3.vmdk.", 0) == 0) ++chunks;
    REQUIRE(chunks >= 2);
    for (std::string fmt : {"ustar", "gnu", "pax"}) {
        INFO("tar --format=" << fmt);
        vt::sh(vt::in_dir(t, "rm -f app.ova && tar --format=" + fmt +
                                 " -cf app.ova app.ovf disk1.vmdk disk2.vmdk.gz disk3.vmdk.0* disk4.vmdk"));
        auto r = vt::run(vt::in_dir(t, vt::tool() + " info app.ova"));
        REQUIRE_MESSAGE(r.status == 0, r.output);
        CHECK(r.output.find(
                  "[0] vmdisk1: file disk1.vmdk, capacity 40 MiB (41943040 bytes), format vmdk streamOptimized") !=
              std::string::npos);
        CHECK(r.output.find("[1] vmdisk2: file disk2.vmdk.gz, capacity 3 MiB (3145728 bytes)") != std::string::npos);
        CHECK(r.output.find(" gzip\n") != std::string::npos);
        CHECK(r.output.find("[2] vmdisk3: file disk3.vmdk, capacity 40 MiB") != std::string::npos);
        CHECK(r.output.find("in " + std::to_string(chunks) + " chunks") != std::string::npos);
        CHECK(r.output.find("create type: streamOptimized") != std::string::npos);
        const char* want[] = {"big.raw", "small.raw", "big.raw", "big.raw"};
        for (int d = 0; d < 4; ++d) {
            INFO("disk " << d);
            std::string out = "d" + std::to_string(d) + ".qcow2";
            std::string disk = d == 0 ? "" : " --disk " + std::to_string(d);
            vt::sh(vt::in_dir(t, vt::tool() + " convert" + disk + " app.ova -O qcow2 " + out));
            vt::sh(vt::in_dir(t, "qemu-img check -q " + out + " && qemu-img compare -q " + want[d] + " " + out));
            std::filesystem::remove(t / out);
        }
    }
    // The JSON lists the same, and the selected disk's own info.
    auto r = vt::run(vt::in_dir(t, vt::tool() + " info --disk 1 --output=json app.ova"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    vdisk::Json parsed;
    REQUIRE(vdisk::Json::parse(r.output, parsed));
    auto* j = &parsed;
    CHECK(*j->get("format")->as_string() == "ova");
    CHECK(*j->get("descriptor")->as_string() == "app.ovf");
    REQUIRE(j->get("disks")->as_array()->size() == 4);
    CHECK(*(*j->get("disks")->as_array())[1].get("compression")->as_string() == "gzip");
    CHECK(*(*j->get("disks")->as_array())[2].get("chunks")->as_uint() == chunks);
    CHECK(*j->get("disk")->get("virtual-size")->as_uint() == (3u << 20));
    // The disk asked for must exist.
    r = vt::run(vt::in_dir(t, vt::tool() + " convert --disk 4 app.ova -O qcow2 x.qcow2"));
    CHECK(r.status == 1);
    CHECK(r.output.find("disk 4 asked for; the appliance has 4") != std::string::npos);
    // Every operation takes the OVA as its source: hash equals qemu-img's reading of the disk itself.
    r = vt::run(vt::in_dir(t, vt::tool() + " hash app.ova && " + vt::tool() +
                                  " hash --disk 1 app.ova; sha256sum big.raw small.raw"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    auto lines = r.output;
    auto word = [&](size_t n) {
        size_t p = 0;
        for (size_t i = 0; i < n; ++i) p = lines.find('\n', p) + 1;
        return lines.substr(p, 64);
    };
    CHECK(word(0) == word(2));  // disk 0 is big.raw
    CHECK(word(1) == word(3));  // disk 1 is small.raw
}

TEST_CASE("OVA: the library reads the tar in place, through a window of the file") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    make_sources(t);
    vt::sh(vt::in_dir(t, "qemu-img convert -O vmdk -o subformat=streamOptimized small.raw d.vmdk"));
    write_text(t / "a.ovf", ovf({{"d.vmdk", "", "ovf:capacity=\"3\" ovf:capacityAllocationUnits=\"byte * 2^20\""}}));
    vt::sh(vt::in_dir(t, "tar -cf a.ova a.ovf d.vmdk"));
    auto reg = vdisk::Registry::builtin();
    auto fs = vdisk::make_posix_file_system(t.path);
    vdisk::OpenOptions o;
    o.untrusted = true;  // references stay inside the tar: allowed
    auto app = vdisk::read_appliance(*fs, "a.ova", o);
    REQUIRE_MESSAGE(app.ok(), vt::error_text(app));
    CHECK(app->archive);
    REQUIRE(app->disks.size() == 1);
    CHECK(app->disks[0].format == "vmdk");
    CHECK(app->disks[0].stored_bytes == std::filesystem::file_size(t / "d.vmdk"));
    auto img = vdisk::open_image(reg, *fs, "a.ova", o);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    CHECK(std::string(img->format->name()) == "vmdk");
    CHECK(vt::read_all(*img->device) == vt::read_file(t / "small.raw"));
    // Writing is refused: an appliance is a source.
    o.read_write = true;
    auto w = vdisk::open_image(reg, *fs, "a.ova", o);
    REQUIRE(!w.ok());
    CHECK(w.error().code == vdisk::ErrorCode::read_only);
}

TEST_CASE("OVF: a bare descriptor with its files beside it, which untrusted mode refuses to follow") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    make_sources(t);
    vt::sh(vt::in_dir(t, "mkdir pkg && qemu-img convert -O vmdk -o subformat=streamOptimized small.raw pkg/disk.vmdk"));
    write_text(t / "pkg/vm.ovf",
               ovf({{"disk.vmdk", "", "ovf:capacity=\"3\" ovf:capacityAllocationUnits=\"byte * 2^20\""}}));
    vt::sh(vt::in_dir(t, vt::tool() + " convert pkg/vm.ovf -O vdi out.vdi && qemu-img compare -q small.raw out.vdi"));
    auto r = vt::run(vt::in_dir(t, vt::tool() + " convert --untrusted pkg/vm.ovf -O qcow2 u.qcow2"));
    CHECK(r.status == 1);
    CHECK(r.output.find("untrusted OVF descriptor refers to the file 'disk.vmdk'") != std::string::npos);
    CHECK(!std::filesystem::exists(t / "u.qcow2"));
}

TEST_CASE("OVA: hostile descriptors and archives fail with exact error kinds") {
    vt::TempDir t;
    auto fs = vdisk::make_posix_file_system(t.path);
    vdisk::OpenOptions o;
    std::vector<uint8_t> vmdk(4096, 0);
    vt::write_file(t / "d.vmdk", vmdk);
    auto expect = [&](const std::string& ovf_text, vdisk::ErrorCode code, const std::string& words,
                      const std::string& members = "d.vmdk") {
        write_text(t / "x.ovf", ovf_text);
        std::filesystem::remove(t / "x.ova");
        vt::sh(vt::in_dir(t, "tar --format=ustar -cf x.ova x.ovf " + members));
        auto r = vdisk::read_appliance(*fs, "x.ova", o);
        REQUIRE(!r.ok());
        INFO(r.error().to_string());
        CHECK(r.error().code == code);
        CHECK(r.error().message.find(words) != std::string::npos);
    };
    const std::string cap = "ovf:capacity=\"1\"";
    expect(ovf({{"../d.vmdk", "", cap}}), vdisk::ErrorCode::access_denied, "outside the appliance");
    expect(ovf({{"/etc/passwd", "", cap}}), vdisk::ErrorCode::access_denied, "outside the appliance");
    expect(ovf({{"http://example.com/d.vmdk", "", cap}}), vdisk::ErrorCode::access_denied, "outside the appliance");
    expect(ovf({{"missing.vmdk", "", cap}}), vdisk::ErrorCode::not_found, "'missing.vmdk' not found in the archive");
    expect(ovf({{"d.vmdk", "ovf:chunkSize=\"100\"", cap}}), vdisk::ErrorCode::not_found, "d.vmdk.000000000");
    expect(ovf({{"d.vmdk", "", "ovf:capacity=\"99999999999999999999\""}}), vdisk::ErrorCode::invalid_format,
           "capacity");
    expect(ovf({{"d.vmdk", "", "ovf:capacity=\"1\" ovf:capacityAllocationUnits=\"byte * 2^70\""}}),
           vdisk::ErrorCode::invalid_format, "capacity");
    expect(ovf({{"d.vmdk", "", "ovf:capacity=\"4\" ovf:capacityAllocationUnits=\"byte * 2^62\""}}),
           vdisk::ErrorCode::invalid_format, "capacity");
    // Entity expansion ("billion laughs") is never attempted.
    expect(ovf({{"d.vmdk", "", cap}}, "<!DOCTYPE Envelope [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>\n"),
           vdisk::ErrorCode::invalid_format, "entities");
    expect("<?xml version=\"1.0\"?><Envelope><References><File ovf:href=", vdisk::ErrorCode::invalid_format,
           "malformed OVF descriptor");
    expect(ovf({}), vdisk::ErrorCode::invalid_format, "declares no disk");
    // Appended a second time (tar -r): two members of one name.
    expect(ovf({{"d.vmdk", "", cap}}), vdisk::ErrorCode::corrupt, "two members named 'd.vmdk'",
           "d.vmdk && tar --format=ustar -rf x.ova d.vmdk");
    // A damaged tar header after the descriptor: the checksum catches it, with its offset.
    write_text(t / "x.ovf", ovf({{"d.vmdk", "", cap}}));
    vt::sh(vt::in_dir(t, "rm -f x.ova && tar --format=ustar -cf x.ova x.ovf d.vmdk"));
    auto bytes = vt::read_file(t / "x.ova");
    size_t second = 512 + (std::filesystem::file_size(t / "x.ovf") + 511) / 512 * 512;
    bytes[second + 124] ^= 0x01;  // the size field of d.vmdk's header
    vt::write_file(t / "x.ova", bytes);
    auto r = vdisk::read_appliance(*fs, "x.ova", o);
    REQUIRE(!r.ok());
    CHECK(r.error().code == vdisk::ErrorCode::corrupt);
    CHECK(r.error().message.find("checksum") != std::string::npos);
    CHECK(r.error().offset == second);
    // A member claiming more bytes than the archive has (checksum fixed up, so only the size is wrong).
    bytes = vt::read_file(t / "x.ova");
    bytes[second + 124] ^= 0x01;
    std::memcpy(bytes.data() + second + 124, "77777777777", 11);
    std::memset(bytes.data() + second + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < 512; ++i) sum += bytes[second + i];
    std::snprintf(reinterpret_cast<char*>(bytes.data() + second + 148), 8, "%06o", sum);
    vt::write_file(t / "x.ova", bytes);
    r = vdisk::read_appliance(*fs, "x.ova", o);
    REQUIRE(!r.ok());
    CHECK(r.error().code == vdisk::ErrorCode::corrupt);
    CHECK(r.error().message.find("runs past the end of the file") != std::string::npos);
}

TEST_CASE("gzip member: random reads, forward and backward, equal the plain bytes") {
    vt::TempDir t;
    // 40 MiB: two resume points (every 16 MiB of output); two gzip members back to back, as `cat a.gz b.gz`.
    auto plain = vt::pattern(40u << 20, 33);
    std::fill(plain.begin() + (5u << 20), plain.begin() + (9u << 20), 0);
    vt::write_file(t / "a", std::vector<uint8_t>(plain.begin(), plain.begin() + (25u << 20)));
    vt::write_file(t / "b", std::vector<uint8_t>(plain.begin() + (25u << 20), plain.end()));
    vt::sh(vt::in_dir(t, "gzip -1 -c a > x.gz && gzip -1 -c b >> x.gz"));
    auto fs = vdisk::make_posix_file_system(t.path);
    auto f = fs->open("x.gz", vdisk::Access::read_only);
    REQUIRE(f.ok());
    std::shared_ptr<vdisk::File> base(std::move(*f));
    REQUIRE(vdisk::looks_gzip(*base));
    auto gz = vdisk::make_gzip_file(base, "x.gz");
    auto sz = gz->size();
    REQUIRE(sz.ok());
    CHECK(*sz == plain.size());
    std::vector<uint8_t> buf(300000);
    const uint64_t offsets[] = {39u << 20,         0,         (16u << 20) - 7,     1000, (33u << 20) + 5,
                                (25u << 20) - 100, 20u << 20, (40u << 20) - 300000};
    for (uint64_t off : offsets) {
        INFO("offset " << off);
        auto n = gz->read_at(off, buf);
        REQUIRE(n.ok());
        REQUIRE(*n == buf.size());
        CHECK(std::equal(buf.begin(), buf.end(), plain.begin() + static_cast<std::ptrdiff_t>(off)));
    }
    // Past the end: short, then nothing.
    auto n = gz->read_at((40u << 20) - 10, buf);
    REQUIRE(n.ok());
    CHECK(*n == 10);
    n = gz->read_at(40u << 20, buf);
    REQUIRE(n.ok());
    CHECK(*n == 0);
    // A truncated stream is corrupt, not short.
    auto bytes = vt::read_file(t / "x.gz");
    bytes.resize(bytes.size() / 2);
    vt::write_file(t / "cut.gz", bytes);
    auto c = fs->open("cut.gz", vdisk::Access::read_only);
    REQUIRE(c.ok());
    auto cut = vdisk::make_gzip_file(std::shared_ptr<vdisk::File>(std::move(*c)), "cut.gz");
    auto s2 = cut->size();
    REQUIRE(!s2.ok());
    CHECK(s2.error().code == vdisk::ErrorCode::corrupt);
}
