// SPDX-License-Identifier: Apache-2.0
// Every real image of the shared corpus, read through the full library (all formats, probing), checked
// against the SHA-256 that qemu-img 7.2's reading recorded in manifest.json; and converted to qcow2 and
// back by the tool, checked with qemu-img compare.
#include <filesystem>
#include <map>
#include <memory>

#include "support.hpp"

namespace {

// vdisk's format name for the manifest's qemu_img_format.
std::string our_name(const std::string& q) {
    if (q == "vpc") return "vhd";
    if (q.rfind("vmdk", 0) == 0) return "vmdk";
    return q;
}

}  // namespace

TEST_CASE("real images read exactly as qemu-img reads them") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = vdisk::Registry::builtin();
    auto m = vt::corpus_manifest(*root);
    int checked = 0;
    std::map<std::string, std::unique_ptr<vt::TempDir>> dirs;  // one per corpus folder, unpacked once
    for (auto& e : *m.get("real")->as_array()) {
        auto* sha = e.get("sha256");
        auto* q = e.get("qemu_img_format");
        if (!sha || !sha->as_string() || !q || !q->as_string()) continue;  // no recorded reading (parent missing)
        std::string rel = *e.get("file")->as_string();
        std::string open_name;
        if (rel.find("sesparse.vmdk") != std::string::npos) open_name = "sesparse-descriptor.vmdk";
        if (rel.find("data-file.bin") != std::string::npos) continue;  // the data file of data-file.qcow2
        auto& dir = dirs[rel.substr(0, rel.rfind('/'))];
        if (!dir) dir = std::make_unique<vt::TempDir>();
        vt::verify_manifest_entry(reg, *root, e, dir->path, our_name(*q->as_string()), open_name);
        ++checked;
    }
    CHECK(checked >= 25);
}

TEST_CASE("images whose parent is missing fail with a clear error naming it") {
    auto root = vt::need_corpus();
    if (!root) return;
    vt::TempDir t;
    for (const char* rel : {"real/dfvfs/fat-differential.vhd.xz", "real/dissect.hypervisor/differencing.avhdx.gz"}) {
        std::string p = vt::unpack_corpus(*root, rel, t.path);
        auto r = vt::run(vt::sh_quote(vt::tool_path()) + " info " + vt::sh_quote(p));
        INFO(rel << ": " << r.output);
        CHECK(r.status == 1);
        CHECK(r.output.find("not found") != std::string::npos);
    }
}
