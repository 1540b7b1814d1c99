// SPDX-License-Identifier: Apache-2.0
// VDI differencing images: the parent by uuid, copy-up writes, parent identity checks, and finding the parent
// beside the image (FileSystem::list, VirtualBox's Snapshots/ layout, duplicates, decoys, untrusted mode).
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "util/bytes.hpp"

#include "builtin_formats.hpp"
#include "forwarding.hpp"
#include "support.hpp"
#include "vdi_helpers.hpp"

using namespace vdisk;
using namespace vdi_test;

TEST_CASE("differencing: parent by uuid, not_found without it, copy-up writes") {
    auto reg = make_reg();
    MemoryFileSystem fs;
    auto parent = small_image(4 * MiB, {{0, vt::bytes(4 * MiB, 0xaa)}});
    fs.add("p.vdi", parent);
    auto child = small_image(4 * MiB, {{1 * MiB, vt::bytes(1 * MiB, 0xcc)}});
    put_le32(child, kType, 4);
    std::memcpy(child.data() + kUuidLink, parent.data() + kUuidCreate, 16);
    std::memcpy(child.data() + kUuidParentModify, parent.data() + kUuidModify, 16);
    put_le32(child, le32(child, kOffBmap) + 8, 0xfffffffe);  // block 2 discarded: zeros, not the parent
    fs.add("c.vdi", child);

    std::vector<std::string> refs;
    OpenOptions ro;
    ro.references = &refs;
    ro.untrusted = true;  // nothing is opened, so untrusted mode has nothing to refuse
    auto c = open_image(reg, fs, "c.vdi", ro);
    REQUIRE(c.ok());
    REQUIRE(refs.size() == 1);
    CHECK(refs[0] == "parent uuid '" + util::guid_to_string(parent.data() + kUuidCreate) + "'");
    CHECK_FALSE(c->device->backing_reference().has_value());
    CHECK(vt::read_range(*c->device, 1 * MiB, MiB) == vt::bytes(MiB, 0xcc));
    CHECK(vt::read_range(*c->device, 2 * MiB, MiB) == vt::bytes(MiB, 0));
    std::vector<uint8_t> buf(4096);
    auto r = c->device->read(0, buf);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::not_found);
    CHECK(r.error().message.find("parent") != std::string::npos);
    // Block status fails too: mapping the chain would otherwise take the parent's blocks for zeros.
    auto e = c->device->block_status(0, 4 * MiB);
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == ErrorCode::not_found);
    CHECK(c->device->block_status(MiB, 4 * MiB).ok());  // the child's own block
    CHECK(*c->device->info().format_specific.get("data")->get("image-type")->as_string() == "diff");

    auto p = open_mem(reg, fs, "p.vdi");
    REQUIRE(p.ok());
    REQUIRE(c->device->attach_backing(std::move(p->device)).ok());
    auto all = vt::read_all(*c->device);
    CHECK(std::vector<uint8_t>(all.begin(), all.begin() + MiB) == vt::bytes(MiB, 0xaa));
    CHECK(std::vector<uint8_t>(all.begin() + MiB, all.begin() + 2 * MiB) == vt::bytes(MiB, 0xcc));
    CHECK(std::vector<uint8_t>(all.begin() + 2 * MiB, all.begin() + 3 * MiB) == vt::bytes(MiB, 0));
    CHECK(std::vector<uint8_t>(all.begin() + 3 * MiB, all.end()) == vt::bytes(MiB, 0xaa));

    // Copy-up: a partial write to a parent block materialises the rest of it from the parent.
    OpenOptions alone;  // the parent beside the image is not searched for
    alone.no_backing = true;
    alone.read_write = true;
    auto cw = open_image(reg, fs, "c.vdi", alone);
    REQUIRE(cw.ok());
    auto r2 = cw->device->write(3 * MiB, vt::bytes(512, 0x01));
    REQUIRE_FALSE(r2.ok());  // no parent attached yet
    CHECK(r2.error().code == ErrorCode::not_found);
    auto p2 = open_mem(reg, fs, "p.vdi");
    REQUIRE(cw->device->attach_backing(std::move(p2->device)).ok());
    REQUIRE(cw->device->write(3 * MiB, vt::bytes(512, 0x01)).ok());
    REQUIRE(cw->device->write_zeroes(0, MiB).ok());  // a whole parent block becomes ZERO
    REQUIRE(cw->device->close().ok());
    auto c2 = open_mem(reg, fs, "c.vdi");
    REQUIRE(c2.ok());
    auto blk = vt::read_range(*c2->device, 3 * MiB, MiB);  // allocated now: readable without the parent
    CHECK(std::vector<uint8_t>(blk.begin(), blk.begin() + 512) == vt::bytes(512, 0x01));
    CHECK(std::vector<uint8_t>(blk.begin() + 512, blk.end()) == vt::bytes(MiB - 512, 0xaa));
    CHECK(vt::read_range(*c2->device, 0, MiB) == vt::bytes(MiB, 0));

    // Parent identity: wrong creation uuid, stale modification uuid, a non-diff image.
    auto bad = child;
    bad[kUuidLink] ^= 1;
    fs.add("bad.vdi", bad);
    auto b = open_mem(reg, fs, "bad.vdi");
    REQUIRE(b.ok());
    auto pp = open_mem(reg, fs, "p.vdi");
    auto s = b->device->attach_backing(std::move(pp->device));
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == ErrorCode::corrupt);
    auto stale = child;
    stale[kUuidParentModify] ^= 1;
    fs.add("stale.vdi", stale);
    auto found_stale = open_mem(reg, fs, "stale.vdi");  // p.vdi is found beside it, and refused
    REQUIRE_FALSE(found_stale.ok());
    CHECK(found_stale.error().code == ErrorCode::corrupt);
    CHECK(found_stale.error().message.find("modified") != std::string::npos);
    alone.read_write = false;
    auto st = open_image(reg, fs, "stale.vdi", alone);
    REQUIRE(st.ok());
    pp = open_mem(reg, fs, "p.vdi");
    s = st->device->attach_backing(std::move(pp->device));
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == ErrorCode::corrupt);
    OpenOptions force;
    force.force_parent_mismatch = true;
    auto f = open_image(reg, fs, "stale.vdi", force);
    REQUIRE(f.ok());
    CHECK(f->device->backing() != nullptr);
    CHECK(vt::read_range(*f->device, 0, MiB) == vt::bytes(MiB, 0xaa));
    auto normal = open_mem(reg, fs, "p.vdi");
    pp = open_mem(reg, fs, "p.vdi");
    s = normal->device->attach_backing(std::move(pp->device));
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == ErrorCode::invalid_argument);
}

// ---- Finding the parent of a differencing image beside it --------------------------------------------

namespace {

// `child` (a normal image's bytes) turned into a differencing image of `parent`.
std::vector<uint8_t> as_diff_of(std::vector<uint8_t> child, const std::vector<uint8_t>& parent) {
    put_le32(child, kType, 4);
    std::memcpy(child.data() + kUuidLink, parent.data() + kUuidCreate, 16);
    std::memcpy(child.data() + kUuidParentModify, parent.data() + kUuidModify, 16);
    return child;
}

// A base with a pattern everywhere and a child that rewrote part of block 1 (so block 1 is the child's:
// the pattern in [1 MiB + 4 KiB, +8 KiB), zeros around it) and discarded block 3 (zeros).
struct Chain {
    std::vector<uint8_t> base, diff, want;
};
Chain make_chain(std::vector<uint8_t> base = {}) {
    Chain c;
    c.base = base.empty() ? small_image(4 * MiB, {{0, vt::pattern(4 * MiB, 1)}}) : std::move(base);
    c.diff = as_diff_of(small_image(4 * MiB, {{MiB + 4096, vt::pattern(8192, 2)}}), c.base);
    put_le32(c.diff, le32(c.diff, kOffBmap) + 12, 0xfffffffe);
    return c;
}
std::vector<uint8_t> overlay(std::vector<uint8_t> base_content) {
    std::fill_n(base_content.begin() + MiB, MiB, 0);
    auto p = vt::pattern(8192, 2);
    std::copy(p.begin(), p.end(), base_content.begin() + MiB + 4096);
    std::fill_n(base_content.begin() + 3 * MiB, MiB, 0);
    return base_content;
}

// Counts what an open asks of the file system.
class CountingFs final : public testlib::ForwardingFs {
public:
    using ForwardingFs::ForwardingFs;
    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override {
        ++opens;
        return base().open(name, access);
    }
    Result<std::vector<std::string>> list(std::string_view dir) override {
        ++lists;
        return base().list(dir);
    }
    int opens = 0, lists = 0;
};

}  // namespace

TEST_CASE("FileSystem::list: memory, posix (relative_only stays inside), staging, the entry cap") {
    MemoryFileSystem mem;
    mem.add("b.vdi", {1});
    mem.add("a.txt", {2});
    mem.add("d/x.vdi", {3});
    mem.add("d/e/y.vdi", {4});
    mem.add("../up.vdi", {5});
    auto l = mem.list("");
    REQUIRE(l.ok());
    CHECK(*l == std::vector<std::string>{"a.txt", "b.vdi"});
    l = mem.list("d");
    REQUIRE(l.ok());
    CHECK(*l == std::vector<std::string>{"d/x.vdi"});
    l = mem.list("d/");
    REQUIRE(l.ok());
    CHECK(*l == std::vector<std::string>{"d/x.vdi"});
    l = mem.list("..");
    REQUIRE(l.ok());
    CHECK(*l == std::vector<std::string>{"../up.vdi"});
    l = mem.list("nothing");
    REQUIRE(l.ok());
    CHECK(l->empty());

    // Staged files show under their final names, not their temporary ones.
    {
        StagingFileSystem staging(mem);
        REQUIRE(staging.create("d/new.vdi").ok());
        CHECK(mem.list("d")->size() == 2);  // the temporary file exists in the base
        l = staging.list("d");
        REQUIRE(l.ok());
        CHECK(*l == std::vector<std::string>{"d/new.vdi", "d/x.vdi"});
    }
    CHECK(*mem.list("d") == std::vector<std::string>{"d/x.vdi"});  // aborted: removed

    // A directory with more regular files than the cap is refused rather than listed without bound.
    MemoryFileSystem big;
    for (size_t i = 0; i <= FileSystem::kMaxListEntries; ++i) big.add("many/f" + std::to_string(i), {});
    auto bl = big.list("many");
    REQUIRE_FALSE(bl.ok());
    CHECK(bl.error().code == ErrorCode::limit_exceeded);
    REQUIRE(big.remove("many/f0").ok());
    bl = big.list("many");
    REQUIRE(bl.ok());
    CHECK(bl->size() == FileSystem::kMaxListEntries);

    vt::TempDir tmp;
    namespace fs = std::filesystem;
    fs::create_directories(tmp / "root/sub/deeper");
    vt::write_file(tmp / "root/a.vdi", {1});
    vt::write_file(tmp / "root/z.txt", {2});
    vt::write_file(tmp / "root/sub/s.vdi", {3});
    vt::write_file(tmp / "outside.vdi", {4});
    fs::create_symlink("a.vdi", tmp / "root/link.vdi");
    fs::create_symlink("sub", tmp / "root/dirlink");
    fs::create_symlink("missing", tmp / "root/dangling.vdi");
    auto pfs = make_posix_file_system(tmp / "root", NamePolicy::relative_only);
    auto pl = pfs->list("");
    REQUIRE_MESSAGE(pl.ok(), vt::error_text(pl));
    CHECK(*pl == std::vector<std::string>{"a.vdi", "link.vdi", "z.txt"});  // no directories, no dangling link
    pl = pfs->list("sub");
    REQUIRE(pl.ok());
    CHECK(*pl == std::vector<std::string>{"sub/s.vdi"});
    for (const char* bad : {"..", "../root", "sub/../..", "/etc"}) {
        INFO(bad);
        pl = pfs->list(bad);
        REQUIRE_FALSE(pl.ok());
        CHECK(pl.error().code == ErrorCode::access_denied);
    }
    pl = pfs->list("nope");
    REQUIRE_FALSE(pl.ok());
    CHECK(pl.error().code == ErrorCode::not_found);
    auto any = make_posix_file_system(tmp / "root", NamePolicy::any);
    pl = any->list("..");
    REQUIRE(pl.ok());
    CHECK(*pl == std::vector<std::string>{"../outside.vdi"});
    pl = any->list(tmp.path);
    REQUIRE(pl.ok());
    CHECK(*pl == std::vector<std::string>{tmp / "outside.vdi"});
    // Names from list() open through the same file system.
    auto subl = any->list("sub");
    REQUIRE(subl.ok());
    for (auto& n : *subl) CHECK(any->open(n, Access::read_only).ok());
}

TEST_CASE("differencing: the parent beside the image is found by uuid and read byte for byte") {
    auto reg = make_reg();
    auto c = make_chain();
    MemoryFileSystem fs;
    fs.add("vm/base.vdi", c.base);
    fs.add("vm/child.vdi", c.diff);
    std::vector<std::string> refs;
    OpenOptions o;
    o.references = &refs;
    auto img = open_image(reg, fs, "vm/child.vdi", o);
    REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
    REQUIRE(img->device->backing() != nullptr);
    CHECK(vt::read_all(*img->device) == overlay(vt::pattern(4 * MiB, 1)));
    auto ref = img->device->backing_reference();
    REQUIRE(ref.has_value());
    CHECK(ref->names == std::vector<std::string>{"base.vdi"});
    auto info = img->device->info();
    CHECK(info.backing_filename == std::optional<std::string>("base.vdi"));
    CHECK(std::find(refs.begin(), refs.end(), "backing file 'base.vdi'") != refs.end());
    auto e = img->device->block_status(0, 4 * MiB);
    REQUIRE(e.ok());
    CHECK(e->kind == ExtentKind::unallocated);  // this layer's view; the parent supplies the data

    // Writing through: copy-up from the found parent.
    o.read_write = true;
    auto rw = open_image(reg, fs, "vm/child.vdi", o);
    REQUIRE_MESSAGE(rw.ok(), vt::error_text(rw));
    REQUIRE(rw->device->write(2 * MiB + 100, vt::bytes(10, 0x77)).ok());
    REQUIRE(rw->device->close().ok());
    OpenOptions alone;
    alone.no_backing = true;
    auto solo = open_image(reg, fs, "vm/child.vdi", alone);
    REQUIRE(solo.ok());
    CHECK(solo->device->backing() == nullptr);
    auto layer = solo->device->block_status(0, 4 * MiB);  // this layer alone: the parent's blocks are unallocated
    REQUIRE(layer.ok());
    CHECK(layer->kind == ExtentKind::unallocated);
    auto blk = vt::read_range(*solo->device, 2 * MiB, MiB);
    auto want = vt::pattern(4 * MiB, 1);
    std::fill_n(want.begin() + 2 * MiB + 100, 10, 0x77);
    CHECK(blk == std::vector<uint8_t>(want.begin() + 2 * MiB, want.begin() + 3 * MiB));
}

TEST_CASE("differencing: VirtualBox layout, base in the VM folder and diffs in Snapshots/ (host files)") {
    auto reg = make_reg();
    vt::TempDir tmp;
    namespace fs = std::filesystem;
    fs::create_directories(tmp / "VM/Snapshots");
    std::vector<uint8_t> base, base_content;
    if (vt::have("qemu-img") && vt::have("qemu-io")) {
        // A base qemu-img wrote; qemu-img's reading of it is the reference.
        REQUIRE(vt::run("qemu-img create -q -f vdi " + tmp / "VM/disk.vdi" + " 4M").status == 0);
        auto w = vt::run("qemu-io -f vdi -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 2M 2M' " + tmp / "VM/disk.vdi");
        REQUIRE_MESSAGE(w.status == 0, w.output);
        base = vt::read_file(tmp / "VM/disk.vdi");
        base_content = vt::qemu_read_raw(tmp / "VM/disk.vdi", "vdi", tmp.path);
    } else {
        base = small_image(4 * MiB, {{0, vt::pattern(4 * MiB, 1)}});
        vt::write_file(tmp / "VM/disk.vdi", base);
        base_content = vt::pattern(4 * MiB, 1);
    }
    auto c = make_chain(base);
    const std::string snap1 = "{" + util::guid_to_string(c.diff.data() + kUuidCreate) + "}.vdi";
    vt::write_file(tmp / "VM/Snapshots" + "/" + snap1, c.diff);
    // A second snapshot on top of the first, beside it.
    auto top = as_diff_of(small_image(4 * MiB, {{3 * MiB, vt::bytes(4096, 0x99)}}), c.diff);
    vt::write_file(tmp / "VM/Snapshots/top.vdi", top);
    auto want1 = overlay(base_content);
    auto want2 = want1;
    std::fill_n(want2.begin() + 3 * MiB, MiB, 0);
    std::fill_n(want2.begin() + 3 * MiB, 4096, 0x99);

    auto one = vt::open_host(reg, tmp / "VM/Snapshots" + "/" + snap1);
    REQUIRE_MESSAGE(one.ok(), vt::error_text(one));
    CHECK(one->device->info().backing_filename == std::optional<std::string>("../disk.vdi"));
    CHECK(vt::read_all(*one->device) == want1);

    auto two = vt::open_host(reg, tmp / "VM/Snapshots/top.vdi");
    REQUIRE_MESSAGE(two.ok(), vt::error_text(two));
    REQUIRE(two->device->backing() != nullptr);
    REQUIRE(two->device->backing()->backing() != nullptr);
    CHECK(two->device->info().backing_filename == std::optional<std::string>(snap1));
    CHECK(vt::read_all(*two->device) == want2);

    // Relative names through a file system rooted at the VM folder; a parent named by the caller for the
    // top image does not stop the layer below from finding its own.
    auto rooted = make_posix_file_system(tmp / "VM", NamePolicy::relative_only);
    OpenOptions o;
    o.backing_override = snap1;
    auto named = open_image(reg, *rooted, "Snapshots/top.vdi", o);
    REQUIRE_MESSAGE(named.ok(), vt::error_text(named));
    CHECK(vt::read_all(*named->device) == want2);

    // The base opened alone is what qemu-img reads.
    auto b = vt::open_host(reg, tmp / "VM/disk.vdi");
    REQUIRE(b.ok());
    CHECK(vt::read_all(*b->device) == base_content);
}

TEST_CASE("differencing: two files with the parent's uuid are an error naming both") {
    auto reg = make_reg();
    auto c = make_chain();
    MemoryFileSystem fs;
    fs.add("base.vdi", c.base);
    fs.add("Snapshots/base-copy.vdi", c.base);
    fs.add("child.vdi", c.diff);
    auto img = open_mem(reg, fs, "child.vdi");
    REQUIRE_FALSE(img.ok());
    CHECK(img.error().code == ErrorCode::invalid_argument);
    CHECK(img.error().message.find("'base.vdi'") != std::string::npos);
    CHECK(img.error().message.find("'Snapshots/base-copy.vdi'") != std::string::npos);
    CHECK(img.error().message.find("--parent") != std::string::npos);
    // Naming one resolves it.
    OpenOptions o;
    o.backing_override = "base.vdi";
    auto named = open_image(reg, fs, "child.vdi", o);
    REQUIRE_MESSAGE(named.ok(), vt::error_text(named));
    CHECK(vt::read_all(*named->device) == overlay(vt::pattern(4 * MiB, 1)));
}

TEST_CASE("differencing: no parent beside the image, untrusted mode, many decoys") {
    auto reg = make_reg();
    auto c = make_chain();
    std::vector<uint8_t> buf(4096);

    SUBCASE("no candidate: the read of a parent block says where it looked and suggests --parent") {
        MemoryFileSystem fs;
        fs.add("vm/child.vdi", c.diff);
        fs.add("vm/other.vdi", small_image(4 * MiB, {}));
        auto img = open_mem(reg, fs, "vm/child.vdi");
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        CHECK(img->device->backing() == nullptr);
        CHECK_FALSE(img->device->backing_reference().has_value());
        CHECK(vt::read_range(*img->device, MiB + 4096, 8192) == vt::pattern(8192, 2));  // the child's own block
        auto r = img->device->read(0, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == ErrorCode::not_found);
        const std::string& m = r.error().message;
        CHECK(m.find("--parent") != std::string::npos);
        CHECK(m.find(util::guid_to_string(c.base.data() + kUuidCreate)) != std::string::npos);
        CHECK(m.find("'vm', 'vm/Snapshots', '.'") != std::string::npos);
        // Converting must fail the same way rather than write zeros for the parent's blocks.
        ConvertOptions co;
        co.output_format = "raw";
        auto conv = convert(reg, *img->device, fs, "out.raw", co);
        REQUIRE_FALSE(conv.ok());
        CHECK(conv.error().code == ErrorCode::not_found);
        CHECK(conv.error().message.find("--parent") != std::string::npos);
        CHECK_FALSE(fs.exists("out.raw"));
    }
    SUBCASE("untrusted: nothing is searched, the parent uuid is reported") {
        MemoryFileSystem mem;
        mem.add("base.vdi", c.base);
        mem.add("child.vdi", c.diff);
        CountingFs fs(mem);
        std::vector<std::string> refs;
        OpenOptions o;
        o.untrusted = true;
        o.references = &refs;
        auto img = open_image(reg, fs, "child.vdi", o);
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        CHECK(fs.lists == 0);
        CHECK(fs.opens == 1);
        CHECK(img->device->backing() == nullptr);
        CHECK(refs ==
              std::vector<std::string>{"parent uuid '" + util::guid_to_string(c.base.data() + kUuidCreate) + "'"});
        auto r = img->device->read(0, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == ErrorCode::not_found);
        CHECK(r.error().message.find("untrusted") != std::string::npos);
        // Naming the parent in untrusted mode is refused, as for any other format.
        o.backing_override = "base.vdi";
        auto named = open_image(reg, fs, "child.vdi", o);
        REQUIRE_FALSE(named.ok());
        CHECK(named.error().code == ErrorCode::access_denied);
        // no_backing does not search either.
        OpenOptions nb;
        nb.no_backing = true;
        fs.lists = 0;
        REQUIRE(open_image(reg, fs, "child.vdi", nb).ok());
        CHECK(fs.lists == 0);
    }
    SUBCASE("a folder full of other files and decoy .vdi files; the parent's suffix in capitals") {
        MemoryFileSystem fs;
        for (int i = 0; i < 1500; ++i) fs.add("vm/log" + std::to_string(i) + ".txt", {1, 2, 3});
        std::vector<uint8_t> head(c.base.begin(), c.base.begin() + 512);
        for (int i = 0; i < 40; ++i) {
            auto decoy = head;  // a VDI header with another creation uuid
            decoy[kUuidCreate] ^= static_cast<uint8_t>(i + 1);
            fs.add("vm/decoy" + std::to_string(i) + ".vdi", decoy);
        }
        fs.add("vm/short.vdi", {1, 2, 3});            // too short for a header
        fs.add("vm/junk.vdi", vt::pattern(4096, 3));  // no signature
        fs.add("vm/.vdi", head);                      // no name before the suffix
        fs.add("vm/dir.vdi/inner.txt", {1});          // a directory named like an image
        fs.add("vm/BASE.VDI", c.base);
        fs.add("vm/Snapshots/child.vdi", c.diff);
        auto img = open_mem(reg, fs, "vm/Snapshots/child.vdi");
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        CHECK(img->device->backing_reference()->names == std::vector<std::string>{"../BASE.VDI"});
        CHECK(vt::read_all(*img->device) == overlay(vt::pattern(4 * MiB, 1)));
    }
    SUBCASE("more .vdi files than are read: the parent past the cap is not found, and the message says so") {
        MemoryFileSystem fs;
        std::vector<uint8_t> head(c.base.begin(), c.base.begin() + 512);
        head[kUuidCreate] ^= 0xff;
        for (int i = 0; i < 300; ++i) fs.add("a" + std::to_string(1000 + i) + ".vdi", head);
        fs.add("zz.vdi", c.base);
        fs.add("child.vdi", c.diff);
        auto img = open_mem(reg, fs, "child.vdi");
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        auto r = img->device->read(0, buf);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message.find("first 256") != std::string::npos);
    }
    SUBCASE("a differencing image whose parent uuid is its own: itself is skipped, a copy of it loops") {
        MemoryFileSystem fs;
        auto self = c.diff;
        std::memcpy(self.data() + kUuidLink, self.data() + kUuidCreate, 16);
        fs.add("self.vdi", self);
        auto img = open_mem(reg, fs, "self.vdi");
        REQUIRE_MESSAGE(img.ok(), vt::error_text(img));
        CHECK(img->device->backing() == nullptr);
        fs.add("copy.vdi", self);
        auto loop = open_mem(reg, fs, "self.vdi");
        REQUIRE_FALSE(loop.ok());
        CHECK(loop.error().code == ErrorCode::corrupt);
        CHECK(loop.error().message.find("loop") != std::string::npos);
    }
}
