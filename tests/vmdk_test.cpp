// SPDX-License-Identifier: Apache-2.0
// VMDK backend: corpus images, qemu-img interop (every subformat both ways), chains, info, check.
#include <cstring>
#include <filesystem>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

Registry make_reg() { return vt::registry_of(make_raw_format, make_vmdk_format); }

void verify(const std::string& rel, const std::string& open_name = "") {
    vt::verify_corpus_image(make_reg(), rel, "vmdk", open_name);
}

}  // namespace

TEST_CASE("corpus: dfvfs ext2 monolithicSparse") { verify("real/dfvfs/ext2.vmdk.xz"); }
TEST_CASE("corpus: VMware streamOptimized 16 GiB (footer GD)") { verify("real/qemu-iotests/iotest-version3.vmdk.bz2"); }
TEST_CASE("corpus: go-vmdk-parser streamOptimized") { verify("real/go-vmdk-parser/vmdk-streamoptimized.img.xz"); }
TEST_CASE("corpus: seSparse with descriptor") {
    verify("real/dissect.hypervisor/sesparse.vmdk.gz", "sesparse-descriptor.vmdk");
}

TEST_CASE("multi-extent: a compressed grain cut short by its extent's end reads up to that end only") {
    // Extent 1: the first 100 sectors of a streamOptimized file whose first grain (64 KiB) holds data; extent 2:
    // a flat file. The grain's bytes past sector 100 belong to no extent and must not show through.
    auto reg = make_reg();
    MemoryFileSystem fs;
    const auto grain = vt::pattern(65536, 3), flat = vt::pattern(1 << 20, 9);
    {
        CreateOptions co;
        co.size = 1 << 20;
        co.set("subformat", "streamOptimized");
        auto d = create_image(reg, fs, "s.vmdk", "vmdk", co);
        REQUIRE(d.ok());
        REQUIRE((*d)->write(0, grain).ok());
        REQUIRE((*d)->close().ok());
    }
    fs.add("f.raw", flat);
    const std::string text =
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        "createType=\"custom\"\nRW 100 SPARSE \"s.vmdk\"\nRW 2048 FLAT \"f.raw\" 0\n";
    fs.add("d.vmdk", std::vector<uint8_t>(text.begin(), text.end()));
    auto img = open_image(reg, fs, "d.vmdk", {});
    REQUIRE(img.ok());
    BlockDevice& dev = *img->device;
    const size_t cut = 100 * 512;
    REQUIRE(dev.size() == cut + flat.size());
    std::vector<uint8_t> all(dev.size()), expect(grain.begin(), grain.begin() + cut);
    expect.insert(expect.end(), flat.begin(), flat.end());
    REQUIRE(dev.read(0, all).ok());
    CHECK(all == expect);
    // Small reads across the cut, and the unit the map reports for the first extent.
    std::vector<uint8_t> piece(64);
    REQUIRE(dev.read(cut - 32, piece).ok());
    CHECK(std::equal(piece.begin(), piece.end(), expect.begin() + cut - 32));
    auto unit = dev.map_stored(cut - 1, 1);
    REQUIRE(unit.ok());
    CHECK(unit->kind == StoredKind::compressed);
    CHECK(unit->offset == 0);
    CHECK(unit->length == cut);
    auto st = dev.block_status(0, dev.size());
    REQUIRE(st.ok());
    CHECK(st->length == cut);
    CHECK(st->compressed);
}
