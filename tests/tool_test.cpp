// SPDX-License-Identifier: Apache-2.0
// The vdisk tool against qemu-img on raw images: info, map, convert, create, compare, check, resize, errors.
#include <filesystem>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

uint64_t allocated(const std::string& path) {
    auto r = run("stat -c %b " + sh_quote(path));
    return std::stoull(r.output) * 512;
}

// A sparse raw file with data at a few places and holes between.
std::string make_sparse_raw(const vt::TempDir& t) {
    std::string p = t / "sparse.raw";
    REQUIRE(run("truncate -s 16M " + sh_quote(p)).status == 0);
    auto data = vt::pattern(200000, 3);
    for (uint64_t off : {uint64_t(0), uint64_t(5) << 20, (uint64_t(16) << 20) - 200000}) {
        REQUIRE(run("true").status == 0);
        std::FILE* f = std::fopen(p.c_str(), "r+b");
        REQUIRE(f);
        std::fseek(f, static_cast<long>(off), SEEK_SET);
        std::fwrite(data.data(), 1, data.size(), f);
        std::fclose(f);
    }
    return p;
}
}  // namespace

TEST_CASE("info --output=json of a sparse raw file") {
    vt::TempDir t;
    std::string p = make_sparse_raw(t);
    auto r = run(vt::tool() + " info --output=json " + sh_quote(p));
    REQUIRE(r.status == 0);
    vdisk::Json j;
    REQUIRE_MESSAGE(vdisk::Json::parse(r.output, j), r.output);
    CHECK(*j.get("virtual-size")->as_uint() == 16u << 20);
    CHECK(*j.get("format")->as_string() == "raw");
    CHECK(*j.get("actual-size")->as_uint() == allocated(p));
    CHECK(*j.get("dirty-flag")->as_bool() == false);
    if (vt::need_qemu()) {
        auto q = run("qemu-img info --output=json " + sh_quote(p));
        vdisk::Json qj;
        REQUIRE(vdisk::Json::parse(q.output, qj));
        CHECK(*qj.get("virtual-size")->as_uint() == *j.get("virtual-size")->as_uint());
        CHECK(*qj.get("actual-size")->as_uint() == *j.get("actual-size")->as_uint());
    }
}

TEST_CASE("map --output=json agrees with qemu-img on data runs and holes") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string p = make_sparse_raw(t);
    auto ours = run(vt::tool() + " map --output=json " + sh_quote(p));
    auto theirs = run("qemu-img map -f raw --output=json " + sh_quote(p));
    REQUIRE(ours.status == 0);
    REQUIRE(theirs.status == 0);
    CHECK(ours.output == theirs.output);
    auto ours_h = run(vt::tool() + " map " + sh_quote(p));
    auto theirs_h = run("qemu-img map -f raw " + sh_quote(p));
    CHECK(ours_h.output == theirs_h.output);
}

TEST_CASE("convert -O raw reproduces a sparse raw image byte for byte and stays sparse") {
    vt::TempDir t;
    std::string p = make_sparse_raw(t);
    std::string out = t / "copy.raw";
    auto r = run(vt::tool() + " convert -O raw " + sh_quote(p) + " " + sh_quote(out));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    CHECK(vt::read_file(p) == vt::read_file(out));
    CHECK(allocated(out) <= allocated(p));
    if (vt::need_qemu()) CHECK(run("qemu-img compare -f raw -F raw " + sh_quote(p) + " " + sh_quote(out)).status == 0);
    // No temporary files are left beside the target.
    int files = 0;
    for (auto& e : std::filesystem::directory_iterator(t.path)) files += e.is_regular_file();
    CHECK(files == 2);
}

TEST_CASE("create -f raw with preallocation") {
    vt::TempDir t;
    std::string full = t / "full.raw", off = t / "off.raw";
    REQUIRE(run(vt::tool() + " create -f raw -o preallocation=full " + sh_quote(full) + " 3M").status == 0);
    CHECK(std::filesystem::file_size(full) == 3u << 20);
    CHECK(allocated(full) >= 3u << 20);
    REQUIRE(run(vt::tool() + " create -f raw " + sh_quote(off) + " 1G").status == 0);
    CHECK(std::filesystem::file_size(off) == 1u << 30);
    CHECK(allocated(off) < (1u << 20));
    auto bad = run(vt::tool() + " create -f raw -o preallocation=maybe " + sh_quote(t / "x.raw") + " 1M");
    CHECK(bad.status == 1);
    CHECK(bad.output.find("preallocation") != std::string::npos);
    CHECK(!std::filesystem::exists(t / "x.raw"));
}

TEST_CASE("unknown format names and bad input give one clear line and exit 1") {
    vt::TempDir t;
    std::string p = make_sparse_raw(t);
    auto r = run(vt::tool() + " convert -O qcow3 " + sh_quote(p) + " " + sh_quote(t / "o"));
    CHECK(r.status == 1);
    CHECK(r.output.find("unknown format 'qcow3'") != std::string::npos);
    CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
    CHECK(!std::filesystem::exists(t / "o"));
    auto r2 = run(vt::tool() + " info -f nonsense " + sh_quote(p));
    CHECK(r2.status == 1);
    auto r3 = run(vt::tool() + " info " + sh_quote(t / "missing.img"));
    CHECK(r3.status == 1);
    CHECK(r3.output.find("missing.img") != std::string::npos);
    auto r4 = run(vt::tool() + " frobnicate");
    CHECK(r4.status == 1);
    auto r5 = run(vt::tool() + " info --untrusted " + sh_quote(p));
    CHECK(r5.status == 1);
    CHECK(r5.output.find("-f raw") != std::string::npos);
    CHECK(run(vt::tool() + " info --untrusted -f raw " + sh_quote(p)).status == 0);
}

TEST_CASE("compare exit codes follow qemu-img") {
    vt::TempDir t;
    std::string a = make_sparse_raw(t);
    std::string b = t / "b.raw";
    REQUIRE(run("cp --sparse=always " + sh_quote(a) + " " + sh_quote(b)).status == 0);
    auto same = run(vt::tool() + " compare " + sh_quote(a) + " " + sh_quote(b));
    CHECK(same.status == 0);
    CHECK(same.output == "Images are identical.\n");
    REQUIRE(run("printf 'X' | dd of=" + sh_quote(b) + " bs=1 seek=9000000 conv=notrunc 2>/dev/null").status == 0);
    auto diff = run(vt::tool() + " compare " + sh_quote(a) + " " + sh_quote(b));
    CHECK(diff.status == 1);
    if (vt::need_qemu()) {
        auto q = run("qemu-img compare -f raw -F raw " + sh_quote(a) + " " + sh_quote(b));
        CHECK(diff.output == q.output);
    }
    CHECK(run(vt::tool() + " compare " + sh_quote(a) + " " + sh_quote(t / "nope")).status == 2);
}

TEST_CASE("resize grows, and shrinks only with --shrink") {
    vt::TempDir t;
    std::string p = make_sparse_raw(t);
    REQUIRE(run(vt::tool() + " resize " + sh_quote(p) + " +1M").status == 0);
    CHECK(std::filesystem::file_size(p) == 17u << 20);
    CHECK(run(vt::tool() + " resize " + sh_quote(p) + " 8M").status == 1);
    CHECK(run(vt::tool() + " resize --shrink " + sh_quote(p) + " 8M").status == 0);
    CHECK(std::filesystem::file_size(p) == 8u << 20);
}

TEST_CASE("check on raw reports that the format has no checks (exit 63, as qemu-img)") {
    vt::TempDir t;
    std::string p = make_sparse_raw(t);
    CHECK(run(vt::tool() + " check " + sh_quote(p)).status == 63);
}

TEST_CASE("sample writes a deterministic pattern") {
    vt::TempDir t;
    REQUIRE(run(vt::tool() + " sample -q " + sh_quote(t / "a.raw") + " 8M").status == 0);
    REQUIRE(run(vt::tool() + " sample -q " + sh_quote(t / "b.raw") + " 8M").status == 0);
    auto a = vt::read_file(t / "a.raw");
    CHECK(a.size() == 8u << 20);
    CHECK(a == vt::read_file(t / "b.raw"));
    CHECK(a[510] == 0x55);
    CHECK(a[511] == 0xaa);
    CHECK(a.back() == 0xee);
}

TEST_CASE("convert to - streams the image to stdout") {
    vt::TempDir t;
    std::string p = make_sparse_raw(t);
    auto r = run(vt::tool() + " convert -O raw " + sh_quote(p) + " - > " + sh_quote(t / "streamed.raw"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    CHECK(vt::read_file(p) == vt::read_file(t / "streamed.raw"));
}
