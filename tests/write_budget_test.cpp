// SPDX-License-Identifier: Apache-2.0
// Memory that grows while writing is charged to the image's budget like memory held after open: tables a
// resize grows (qcow2 L1, VHD and VHDX BAT, VDI block map), the tables and caches of a newly created image
// (qcow2 L1 and L2/refcount caches, VHD/VHDX BAT, VDI block map, VMDK grain directories).
// Each image is created here (sparse files in a temporary directory), reopened read-write with a small
// memory budget, grown until the budget must refuse, and the refusal must be limit_exceeded naming the
// structure, with the budget never above its cap. A smaller growth must succeed and be charged: without
// the charge the budget would not move.
#include "support.hpp"

using namespace vdisk;

namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

struct Grown {
    std::unique_ptr<FileSystem> fs;
    Registry reg = Registry::builtin();
};

void create(Grown& g, const std::string& name, const std::string& fmt, uint64_t size,
            const std::vector<std::pair<std::string, std::string>>& opts = {}) {
    CreateOptions co;
    co.size = size;
    for (auto& [k, v] : opts) co.set(k, v);
    auto dev = create_image(g.reg, *g.fs, name, fmt, co);
    REQUIRE_MESSAGE(dev.ok(), (dev.ok() ? "" : dev.error().to_string()));
    REQUIRE((*dev)->write(0, std::vector<uint8_t>(4096, 0x5a)).ok());
    REQUIRE((*dev)->close().ok());
}

OpenedImage open_rw(Grown& g, const std::string& name, uint64_t memory) {
    OpenOptions o;
    o.read_write = true;
    o.limits.max_image_memory = memory;
    auto img = open_image(g.reg, *g.fs, name, o);
    REQUIRE_MESSAGE(img.ok(), (img.ok() ? "" : img.error().to_string()));
    return std::move(*img);
}

// Grow `name` past what `cap` bytes of budget can hold (refused, nothing changes), then by `ok_size`
// (charged at least `min_charge` more bytes).
void grow_until_refused(const std::string& fmt, uint64_t size, uint64_t cap, uint64_t too_big, uint64_t ok_size,
                        uint64_t min_charge, const std::string& structure,
                        const std::vector<std::pair<std::string, std::string>>& opts = {}) {
    vt::TempDir tmp;
    Grown g;
    g.fs = make_posix_file_system(tmp.path);
    const std::string name = "img." + fmt;
    create(g, name, fmt, size, opts);
    auto img = open_rw(g, name, cap);
    BlockDevice& dev = *img.device;
    const Budget& b = *dev.budget();
    REQUIRE(b.memory_limit() == cap);
    const uint64_t before = b.memory_used(), size0 = dev.size();  // VHD rounds the size to its geometry
    CHECK(before <= cap);

    auto st = dev.resize(too_big);
    REQUIRE_FALSE(st.ok());
    CHECK_MESSAGE(st.error().code == ErrorCode::limit_exceeded, st.error().to_string());
    CHECK_MESSAGE(st.error().message.find(structure) != std::string::npos, st.error().to_string());
    CHECK(b.memory_used() <= cap);
    CHECK(b.memory_peak() <= cap);
    CHECK(b.memory_used() == before);  // a refused growth holds nothing
    CHECK(dev.size() == size0);

    REQUIRE_MESSAGE(dev.resize(ok_size).ok(), "growing to " << ok_size);
    CHECK(dev.size() >= ok_size);
    CHECK_MESSAGE(b.memory_used() >= before + min_charge, "used " << b.memory_used() << " before " << before);
    CHECK(b.memory_used() <= cap);
    std::vector<uint8_t> buf(4096);
    REQUIRE(dev.read(0, buf).ok());
    CHECK(buf[0] == 0x5a);
    REQUIRE(dev.write(ok_size - 4096, buf).ok());
    REQUIRE(dev.close().ok());
}

}  // namespace

TEST_CASE("qcow2 resize charges the grown L1 table and refuses past the budget") {
    // 4 KiB clusters: one L1 entry per 2 MiB. 512 GiB needs a 2 MiB L1, 16 GiB a 64 KiB one.
    grow_until_refused("qcow2", 1 * GiB, 1 * MiB, 512 * GiB, 16 * GiB, 56 * KiB, "L1 table",
                       {{"cluster_size", "4096"}});
}

TEST_CASE("vhd resize charges the grown BAT and refuses past the budget") {
    // 2 MiB blocks: 1 TiB needs 512Ki entries (2 MiB), 32 GiB 16Ki entries (64 KiB).
    grow_until_refused("vhd", 1 * GiB, 1 * MiB, 1024 * GiB, 32 * GiB, 56 * KiB, "BAT");
}

TEST_CASE("vdi resize charges the grown block map and refuses past the budget") {
    // 1 MiB blocks: 1 TiB needs 1Mi entries (4 MiB), 16 GiB 16Ki entries (64 KiB); the on-disk copy of the
    // map reaches the data area, which starts on a whole 1 MiB slot.
    grow_until_refused("vdi", 1 * GiB, 4 * MiB, 1024 * GiB, 16 * GiB, 56 * KiB, "VDI block map");
}

TEST_CASE("vhdx resize charges the grown BAT and refuses past the budget") {
    // 1 MiB blocks (chunk ratio 4096): the 1 MiB BAT region holds 128Ki entries; 120 GiB needs ~123Ki
    // entries (960 KiB), 10 GiB 10242 entries (80 KiB).
    grow_until_refused("vhdx", 1 * GiB, 512 * KiB, 120 * GiB, 10 * GiB, 56 * KiB, "VHDX BAT", {{"block_size", "1M"}});
}

TEST_CASE("a new qcow2 image charges its L1 table and the tables its writes cache") {
    vt::TempDir tmp;
    Grown g;
    g.fs = make_posix_file_system(tmp.path);
    CreateOptions co;
    co.size = 64 * GiB;
    co.set("cluster_size", "4096");  // 32Ki L1 entries: 256 KiB
    auto dev = create_image(g.reg, *g.fs, "new.qcow2", "qcow2", co);
    REQUIRE(dev.ok());
    const Budget& b = *(*dev)->budget();
    CHECK(b.memory_used() >= 256 * KiB);
    const uint64_t after_create = b.memory_used();
    // Writes 1 GiB apart allocate one L2 table each, held in the L2 cache.
    for (uint64_t i = 0; i < 16; ++i) REQUIRE((*dev)->write(i * GiB, std::vector<uint8_t>(4096, 1)).ok());
    CHECK(b.memory_used() >= after_create + 16 * 4 * KiB);
    CHECK(b.memory_used() <= b.memory_limit());
    REQUIRE((*dev)->close().ok());
}

TEST_CASE("new vhd, vdi, vhdx and vmdk images charge their tables like opened ones") {
    struct Case {
        const char* fmt;
        uint64_t size;
        uint64_t table_bytes;
        std::vector<std::pair<std::string, std::string>> opts;
    };
    for (const Case& c : {Case{"vhd", 64 * GiB, 32 * KiB * 4, {}}, Case{"vdi", 64 * GiB, 64 * KiB * 4, {}},
                          Case{"vhdx", 64 * GiB, 64 * KiB * 8, {{"block_size", "1M"}}},
                          Case{"vmdk", 64 * GiB, 2 * 2048 * 8, {}}}) {  // grain directory and its copy
        CAPTURE(c.fmt);
        vt::TempDir tmp;
        Grown g;
        g.fs = make_posix_file_system(tmp.path);
        CreateOptions co;
        co.size = c.size;
        for (auto& [k, v] : c.opts) co.set(k, v);
        auto dev = create_image(g.reg, *g.fs, std::string("new.") + c.fmt, c.fmt, co);
        REQUIRE(dev.ok());
        CHECK((*dev)->budget()->memory_used() >= c.table_bytes);
        REQUIRE((*dev)->close().ok());
    }
}

TEST_CASE("sparse vmdk writes across many grain tables stay within a small budget") {
    vt::TempDir tmp;
    Grown g;
    g.fs = make_posix_file_system(tmp.path);
    create(g, "img.vmdk", "vmdk", 64 * GiB);
    const uint64_t cap = 256 * KiB;  // the directories of 64 GiB take 2 x 2048 x 8 = 32 KiB
    auto img = open_rw(g, "img.vmdk", cap);
    BlockDevice& dev = *img.device;
    // Every 32 MiB a new grain table (4 KiB on disk, 4 KiB decoded): 512 of them would need 2 MiB cached.
    for (uint64_t i = 0; i < 512; ++i) REQUIRE(dev.write(i * 32 * MiB, std::vector<uint8_t>(4096, 2)).ok());
    CHECK(dev.budget()->memory_peak() <= cap);
    CHECK(dev.budget()->memory_used() > 32 * KiB);
    std::vector<uint8_t> buf(4096);
    REQUIRE(dev.read(511 * 32 * MiB, buf).ok());
    CHECK(buf[0] == 2);
    REQUIRE(dev.close().ok());
}
