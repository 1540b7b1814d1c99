// SPDX-License-Identifier: Apache-2.0
// Hostile-image regression suite across every format, through the tool as a user runs it. Each malformed
// image is generated here from a valid qemu-img image (truncations at structure boundaries, zero / huge /
// all-ones fields, scrambled metadata), plus the hostile images of the shared corpus, loops and over-deep
// chains, and path escapes. Each must end cleanly: exit status 1 with one line naming the file, or exit 0
// with a reading; never a crash or sanitizer report, within seconds, with bounded memory.
#include <filesystem>
#include <fstream>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

using Outcome = vt::MeasuredRun;

// Run the tool with a wall-clock limit, recording peak RSS (GNU time) — ASan reserves too much address
// space for `ulimit -v`, so memory is bounded by measurement instead.
Outcome run_tool(const std::string& args, const std::string& rss_file) {
    return vt::run_measured("timeout -s KILL 30", vt::tool() + " " + args, rss_file);
}

// `other_name`: a second file the error may name instead (convert's target: a 152 TiB raw target is refused by
// the host file system, and that error rightly names the target).
void expect_clean(const Outcome& o, const std::string& what, const std::string& file_name,
                  const std::string& other_name = "") {
    INFO(what << ": exit " << o.status << ", output: " << o.output);
    // 63: `check` of a format that has none (qcow v1), as qemu-img exits.
    const bool no_check = o.status == 63 && o.output.find("does not support checks") != std::string::npos;
    CHECK((o.status == 0 || o.status == 1 || no_check));
    CHECK(o.output.find("AddressSanitizer") == std::string::npos);
    CHECK(o.output.find("runtime error") == std::string::npos);
    CHECK(o.rss_kib < 1024 * 1024);  // 1 GiB, sanitizer shadow included
    if (o.status == 1) {
        // The error is the last line; it names the file.
        std::string out = o.output;
        while (!out.empty() && out.back() == '\n') out.pop_back();
        std::string last = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
        CHECK(last.rfind("vdisk: ", 0) == 0);
        CHECK((last.find(file_name) != std::string::npos ||
               (!other_name.empty() && last.find(other_name) != std::string::npos)));
    }
}

using vt::patch_file;

struct Base {
    std::string fmt;               // vdisk name
    std::string qfmt;              // qemu-img name
    std::string opts;              // qemu-img create options
    std::vector<uint64_t> fields;  // offsets of header fields worth breaking
};

// Header field offsets from each format's specification: sizes, offsets, counts, table locations.
const std::vector<Base>& bases() {
    static const std::vector<Base> b = {
        {"qcow2", "qcow2", "cluster_size=4096", {4, 8, 16, 20, 24, 32, 36, 40, 48, 56, 60, 64, 72, 96, 100}},
        {"vmdk", "vmdk", "", {4, 8, 12, 20, 28, 36, 44, 48, 56, 64}},
        {"vhd", "vpc", "", {512 + 8, 512 + 16, 512 + 28, 512 + 32, 512 + 36, 40, 48, 56}},
        {"vhdx",
         "vhdx",
         "block_size=1M",
         {65536 + 8, 65536 + 16, 131072 + 8, 196608 + 8, 196608 + 16, 196608 + 32, 196608 + 48, 196608 + 64}},
        {"vdi", "vdi", "", {64, 68, 72, 76, 340, 344, 352, 368, 372, 376, 384}},
    };
    return b;
}

}  // namespace

TEST_CASE("malformed images of every format end cleanly (generated: truncations and broken fields)") {
    if (!vt::need_qemu() || !vt::have("qemu-io")) return;
    vt::TempDir t;
    int cases = 0;
    for (auto& b : bases()) {
        std::string base = t / ("base." + b.fmt);
        auto c = run("qemu-img create -q -f " + b.qfmt + (b.opts.empty() ? "" : " -o " + b.opts) + " " +
                     sh_quote(base) + " 64M");
        REQUIRE_MESSAGE(c.status == 0, c.output);
        REQUIRE(run("qemu-io -f " + b.qfmt + " -c 'write -P 0x5a 0 256k' -c 'write -P 0xa5 40M 64k' " + sh_quote(base))
                    .status == 0);
        uint64_t size = std::filesystem::file_size(base);
        std::vector<std::pair<std::string, std::function<void(const std::string&)>>> mutations;
        for (uint64_t cut : {uint64_t(0), uint64_t(1), uint64_t(100), uint64_t(511), uint64_t(512), uint64_t(4096),
                             uint64_t(65536), size / 2, size - 512, size - 1}) {
            if (cut >= size) continue;
            mutations.emplace_back("truncated to " + std::to_string(cut),
                                   [cut](const std::string& p) { std::filesystem::resize_file(p, cut); });
        }
        for (uint64_t off : b.fields) {
            if (off + 8 > size) continue;
            for (uint8_t v : {uint8_t(0x00), uint8_t(0xff), uint8_t(0x7f)})
                mutations.emplace_back("field at " + std::to_string(off) + " := " + std::to_string(v) + "s",
                                       [off, v](const std::string& p) {
                                           patch_file(p, off, std::vector<uint8_t>(8, v));
                                       });
        }
        mutations.emplace_back("metadata scrambled", [](const std::string& p) {
            auto junk = vt::pattern(3 * 4096, 99);
            patch_file(p, 4096, junk);
        });
        for (size_t i = 0; i < mutations.size(); ++i) {
            std::string p = t / ("m" + std::to_string(i) + "." + b.fmt);
            std::filesystem::copy_file(base, p, std::filesystem::copy_options::overwrite_existing);
            mutations[i].second(p);
            std::string what = b.fmt + " " + mutations[i].first;
            // -f pins the format so the damage reaches the parser instead of falling back to raw.
            auto info = run_tool("info -f " + b.fmt + " " + sh_quote(p), t / "rss");
            expect_clean(info, what + " (info)", p);
            auto conv = run_tool("convert -f " + b.fmt + " -O raw " + sh_quote(p) + " " + sh_quote(t / "out.raw"),
                                 t / "rss");
            expect_clean(conv, what + " (convert)", p);
            if (conv.status == 1)
                CHECK_MESSAGE(!std::filesystem::exists(t / "out.raw"), what << ": failed convert left a target");
            std::filesystem::remove(t / "out.raw");
            std::filesystem::remove(p);
            ++cases;
        }
    }
    MESSAGE(cases << " malformed images checked");
    CHECK(cases >= 60);
}

TEST_CASE("hostile images of the shared corpus end cleanly") {
    auto root = vt::need_corpus();
    if (!root) return;
    vt::TempDir t;
    auto m = vt::corpus_manifest(*root);
    int n = 0;
    for (auto& e : *m.get("hostile")->as_array()) {
        std::string rel = *e.get("file")->as_string();
        std::string p = vt::unpack_corpus(*root, rel, t.path);
        for (const char* cmd : {"info", "map --output=json"}) {
            auto o = run_tool(std::string(cmd) + " " + sh_quote(p), t / "rss");
            expect_clean(o, rel + " (" + cmd + ")", p);
        }
        // check reports damage as its own output with qemu-img's exit codes (2 corruptions, 3 leaks,
        // 63 no check for the format); it must still end cleanly and boundedly.
        auto c = run_tool("check " + sh_quote(p), t / "rss");
        INFO(rel << " (check): exit " << c.status << ", output: " << c.output);
        CHECK((c.status <= 3 || c.status == 63));
        CHECK(c.output.find("AddressSanitizer") == std::string::npos);
        CHECK(c.output.find("runtime error") == std::string::npos);
        CHECK(c.rss_kib < 1024 * 1024);
        auto o = run_tool("convert -O raw " + sh_quote(p) + " " + sh_quote(t / "out.raw"), t / "rss");
        expect_clean(o, rel + " (convert)", p, t / "out.raw");
        std::filesystem::remove(t / "out.raw");
        auto u = run_tool("info --untrusted " + sh_quote(p), t / "rss");
        expect_clean(u, rel + " (info --untrusted)", p);
        ++n;
    }
    CHECK(n >= 10);
}

TEST_CASE("backing chains that loop or go too deep are refused") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    // A qcow2 whose backing file is itself (qemu-img 7.2 hangs on this one).
    std::string self = t / "self.qcow2";
    REQUIRE(run("qemu-img create -q -f qcow2 " + sh_quote(self) + " 16M").status == 0);
    REQUIRE(run("qemu-img rebase -u -f qcow2 -F qcow2 -b self.qcow2 " + sh_quote(self)).status == 0);
    auto o = run_tool("info " + sh_quote(self), t / "rss");
    CHECK(o.status == 1);
    CHECK(o.output.find("loop") != std::string::npos);
    // a -> b -> a
    std::string a = t / "a.qcow2", b = t / "b.qcow2";
    REQUIRE(run("qemu-img create -q -f qcow2 " + sh_quote(a) + " 16M").status == 0);
    REQUIRE(run("qemu-img create -q -f qcow2 -F qcow2 -b a.qcow2 " + sh_quote(b)).status == 0);
    REQUIRE(run("qemu-img rebase -u -f qcow2 -F qcow2 -b b.qcow2 " + sh_quote(a)).status == 0);
    o = run_tool("convert -O raw " + sh_quote(b) + " " + sh_quote(t / "o.raw"), t / "rss");
    CHECK(o.status == 1);
    CHECK(o.output.find("loop") != std::string::npos);
    CHECK(!std::filesystem::exists(t / "o.raw"));
    // 20 layers: deeper than the default limit of 16.
    REQUIRE(run("qemu-img create -q -f qcow2 " + sh_quote(t / "l0.qcow2") + " 16M").status == 0);
    for (int i = 1; i <= 20; ++i)
        REQUIRE(run("qemu-img create -q -f qcow2 -F qcow2 -b l" + std::to_string(i - 1) + ".qcow2 " +
                    sh_quote(t / ("l" + std::to_string(i) + ".qcow2")))
                    .status == 0);
    o = run_tool("info " + sh_quote(t / "l20.qcow2"), t / "rss");
    CHECK(o.status == 1);
    CHECK(o.output.find("deeper than 16") != std::string::npos);
    CHECK(run_tool("info " + sh_quote(t / "l12.qcow2"), t / "rss").status == 0);
}

TEST_CASE("untrusted mode refuses every external reference - path escapes are reported") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::filesystem::create_directory(t / "in");
    REQUIRE(run("qemu-img create -q -f qcow2 " + sh_quote(t / "base.qcow2") + " 16M").status == 0);
    REQUIRE(run("qemu-img create -q -f qcow2 -F qcow2 -b ../base.qcow2 " + sh_quote(t / "in/top.qcow2")).status == 0);
    auto o = run_tool("info --untrusted " + sh_quote(t / "in/top.qcow2"), t / "rss");
    CHECK(o.status == 1);
    CHECK(o.output.find("../base.qcow2") != std::string::npos);
    o = run_tool("convert --untrusted -O raw " + sh_quote(t / "in/top.qcow2") + " " + sh_quote(t / "x.raw"), t / "rss");
    CHECK(o.status == 1);
    CHECK(o.output.find("refusing") != std::string::npos);
    CHECK(!std::filesystem::exists(t / "x.raw"));
    // Trusted mode follows the relative name, resolved against the image's directory.
    CHECK(run_tool("info " + sh_quote(t / "in/top.qcow2"), t / "rss").status == 0);
    // A VMDK descriptor whose flat extent names a host file (CVE-2022-47951's shape).
    {
        std::ofstream d(t / "evil.vmdk");
        d << "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
             "RW 8 FLAT \"/etc/passwd\" 0\n";
    }
    o = run_tool("info --untrusted " + sh_quote(t / "evil.vmdk"), t / "rss");
    CHECK(o.status == 1);
    CHECK(o.output.find("/etc/passwd") != std::string::npos);
    o = run_tool("convert --untrusted -O raw " + sh_quote(t / "evil.vmdk") + " " + sh_quote(t / "y.raw"), t / "rss");
    CHECK(o.status == 1);
    CHECK(!std::filesystem::exists(t / "y.raw"));
}
