// SPDX-License-Identifier: Apache-2.0
// Core library: errors, JSON, names, memory/staging file systems, the generic BlockDevice layer.
#include <cstring>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "util/bytes.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

TEST_CASE("error renders file, format, message and offset on one line") {
    Error e = make_error(ErrorCode::corrupt, "L2 entry 0x1234 points past end of file\n(0x50000)");
    e.file = "a.qcow2";
    e.format = "qcow2";
    e.offset = 0x30000;
    CHECK(e.to_string() == "a.qcow2: qcow2: L2 entry 0x1234 points past end of file (0x50000) (at offset 0x30000)");
    CHECK(to_string(ErrorCode::limit_exceeded) == "limit_exceeded");
}

TEST_CASE("Result carries values and errors") {
    Result<int> a = 5;
    REQUIRE(a);
    CHECK(*a == 5);
    Result<int> b = make_error(ErrorCode::io, "x");
    CHECK(!b);
    CHECK(b.error().code == ErrorCode::io);
    auto f = [](bool fail) -> Result<std::string> {
        if (fail) return make_error(ErrorCode::not_found, "nope");
        return std::string("yes");
    };
    auto g = [&](bool fail) -> Status {
        VDISK_ASSIGN(std::string s, f(fail));
        CHECK(s == "yes");
        return ok();
    };
    CHECK(g(false).ok());
    CHECK(g(true).error().code == ErrorCode::not_found);
}

TEST_CASE("parse_size accepts qemu-img's suffixes and rejects garbage") {
    CHECK(*parse_size("512") == 512);
    CHECK(*parse_size("10G") == 10ull << 30);
    CHECK(*parse_size("512M") == 512ull << 20);
    CHECK(*parse_size("1.5k") == 1536);
    CHECK(*parse_size("2T") == 2ull << 40);
    CHECK(!parse_size(""));
    CHECK(!parse_size("G"));
    CHECK(!parse_size("12Q"));
    CHECK(!parse_size("99999999999999999999"));
    CHECK(!parse_size("16E"));
}

TEST_CASE("option lists split on commas with ,, as an escaped comma") {
    auto r = parse_option_list("subformat=streamOptimized,backing_file=a,,b.vmdk");
    REQUIRE(r);
    REQUIRE(r->size() == 2);
    CHECK((*r)[1].second == "a,b.vmdk");
    CHECK(!parse_option_list("novalue"));
}

TEST_CASE("JSON round trip") {
    Json j = Json::object();
    j.set("virtual-size", uint64_t(1) << 40).set("format", "qcow2").set("dirty-flag", false);
    j.set("list", Json::array().push(1).push("a\"b"));
    std::string text = j.dump();
    Json back;
    REQUIRE(Json::parse(text, back));
    CHECK(back.dump() == text);
    CHECK(*back.get("virtual-size")->as_uint() == (uint64_t(1) << 40));
    Json bad;
    std::string err;
    CHECK(!Json::parse("{\"a\": [1, 2", bad, &err));
    CHECK(!err.empty());
    std::string deep(100, '[');
    CHECK(!Json::parse(deep, bad));
}

TEST_CASE("reference resolution stays relative to the referring image") {
    CHECK(resolve_reference("dir/top.qcow2", "base.qcow2") == "dir/base.qcow2");
    CHECK(resolve_reference("dir/top.qcow2", "../base.qcow2") == "base.qcow2");
    CHECK(resolve_reference("top.qcow2", "/abs/base.qcow2") == "/abs/base.qcow2");
    CHECK(resolve_reference("a/b/c", "./d/../e") == "a/b/e");
    CHECK(escapes_directory("../x"));
    CHECK(escapes_directory("/etc/passwd"));
    CHECK(escapes_directory("a/../../x"));
    CHECK(!escapes_directory("a/../x"));
}

TEST_CASE("memory file system") {
    MemoryFileSystem fs;
    fs.add("a.img", {1, 2, 3});
    auto f = fs.open("a.img", Access::read_only);
    REQUIRE(f);
    uint8_t buf[8] = {};
    auto n = (*f)->read_at(1, buf);
    REQUIRE(n);
    CHECK(*n == 2);
    CHECK(buf[0] == 2);
    CHECK((*f)->write_at(0, std::span<const uint8_t>(buf, 1)).error().code == ErrorCode::read_only);
    CHECK(fs.open("missing", Access::read_only).error().code == ErrorCode::not_found);
    auto w = fs.create("b.img");
    REQUIRE(w);
    // A hostile size must not make the memory file system allocate without bound.
    CHECK((*w)->write_at(uint64_t(1) << 62, std::span<const uint8_t>(buf, 1)).error().code ==
          ErrorCode::limit_exceeded);
    CHECK((*f)->identity() != (*w)->identity());
    CHECK(read_exact(**f, 2, std::span<uint8_t>(buf, 4), "header").error().code == ErrorCode::corrupt);
}

TEST_CASE("staging file system publishes on commit and leaves nothing on abort") {
    MemoryFileSystem fs;
    {
        StagingFileSystem st(fs);
        auto f = st.create("out.img");
        REQUIRE(f);
        CHECK((*f)->write_at(0, std::vector<uint8_t>{9}).ok());
        CHECK(!fs.exists("out.img"));
        CHECK(fs.names().size() == 1);
    }
    CHECK(fs.names().empty());
    {
        StagingFileSystem st(fs);
        auto f = st.create("out.img");
        REQUIRE(f);
        CHECK((*f)->write_at(0, std::vector<uint8_t>{9}).ok());
        f->reset();
        REQUIRE(st.commit().ok());
    }
    REQUIRE(fs.content("out.img"));
    CHECK(fs.content("out.img")->at(0) == 9);
    CHECK(fs.names().size() == 1);
}

TEST_CASE("BlockDevice checks bounds and read-only state before the backend") {
    Registry reg;
    reg.add(make_raw_format());
    MemoryFileSystem fs;
    fs.add("disk.raw", std::vector<uint8_t>(4096, 0xab));
    auto img = open_image(reg, fs, "disk.raw", {});
    REQUIRE(img);
    auto& dev = *img->device;
    CHECK(dev.size() == 4096);
    std::vector<uint8_t> buf(16);
    CHECK(dev.read(4090, buf).error().code == ErrorCode::out_of_range);
    CHECK(dev.read(UINT64_MAX - 4, buf).error().code == ErrorCode::out_of_range);
    CHECK(dev.write(0, buf).error().code == ErrorCode::read_only);
    CHECK(dev.block_status(4096, 1).error().code == ErrorCode::out_of_range);
    REQUIRE(dev.read(4080, buf).ok());
    CHECK(buf[15] == 0xab);
}

TEST_CASE("probe: raw is the last resort, untrusted mode never guesses raw") {
    Registry reg;
    reg.add(make_raw_format());
    MemoryFileSystem fs;
    fs.add("x", std::vector<uint8_t>(512, 0));
    auto f = fs.open("x", Access::read_only);
    REQUIRE(f);
    auto p = reg.probe(**f);
    REQUIRE(p);
    CHECK((*p)->name() == "raw");
    OpenOptions o;
    o.untrusted = true;
    auto img = open_image(reg, fs, "x", o);
    REQUIRE(!img);
    CHECK(img.error().code == ErrorCode::invalid_format);
    o.format = "raw";
    CHECK(open_image(reg, fs, "x", o).ok());
    CHECK(reg.lookup("nope").error().code == ErrorCode::not_found);
}

TEST_CASE("create rejects options the format does not declare") {
    Registry reg;
    reg.add(make_raw_format());
    MemoryFileSystem fs;
    CreateOptions co;
    co.size = 1 << 20;
    co.set("cluster_size", "65536");
    auto r = create_image(reg, fs, "x.raw", "raw", co);
    REQUIRE(!r);
    CHECK(r.error().code == ErrorCode::invalid_argument);
    CHECK(r.error().message.find("cluster_size") != std::string::npos);
    CHECK(!fs.exists("x.raw"));
}

TEST_CASE("unaligned writes are read-modify-written by the generic layer") {
    Registry reg;
    reg.add(make_raw_format());
    MemoryFileSystem fs;
    CreateOptions co;
    co.size = 8192;
    auto dev = create_image(reg, fs, "w.raw", "raw", co);
    REQUIRE(dev);
    auto data = vt::pattern(1000, 7);
    REQUIRE((*dev)->write(100, data).ok());
    REQUIRE((*dev)->write_zeroes(150, 10).ok());
    std::vector<uint8_t> back(1000);
    REQUIRE((*dev)->read(100, back).ok());
    std::fill(data.begin() + 50, data.begin() + 60, 0);
    CHECK(back == data);
}

TEST_CASE("safety report: raw needs -f raw, MBR partitions must fit the disk") {
    Registry reg;
    reg.add(make_raw_format());
    MemoryFileSystem fs;
    std::vector<uint8_t> disk(1 << 20, 0);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    uint8_t* e = disk.data() + 446;
    e[4] = 0x83;  // Linux
    e[8] = 2048 & 0xff;
    e[9] = 2048 >> 8;  // start 2048
    e[12] = 0;
    e[13] = 0x04;  // 1024 sectors: ends at 3072 > 2048 sectors of the disk
    fs.add("bad.raw", disk);
    e[13] = 0x02;  // 512 sectors starting at 2048: still past 2048 sectors
    e[9] = 0x04;   // start 1024, 512 sectors: inside
    fs.add("good.raw", disk);
    Limits lim;
    Json unknown = safety_report(reg, fs, "good.raw", "", lim);
    CHECK(*unknown.get("verdict")->as_string() == "unsafe");
    Json good = safety_report(reg, fs, "good.raw", "raw", lim);
    CHECK(*good.get("verdict")->as_string() == "safe");
    CHECK(*good.get("virtual-size")->as_uint() == (1u << 20));
    Json bad = safety_report(reg, fs, "bad.raw", "raw", lim);
    CHECK(*bad.get("verdict")->as_string() == "unsafe");
    CHECK(bad.dump().find("MBR partition 1 ends past the end of the disk") != std::string::npos);
    Json missing = safety_report(reg, fs, "nope.raw", "raw", lim);
    CHECK(*missing.get("verdict")->as_string() == "unsafe");
}

TEST_CASE("backing_override is refused in untrusted mode") {
    Registry reg;
    reg.add(make_raw_format());
    MemoryFileSystem fs;
    fs.add("top.raw", std::vector<uint8_t>(512, 1));
    fs.add("base.raw", std::vector<uint8_t>(512, 2));
    OpenOptions o;
    o.format = "raw";
    o.backing_override = "base.raw";
    auto img = open_image(reg, fs, "top.raw", o);
    REQUIRE(img);
    REQUIRE(img->device->backing() != nullptr);
    CHECK(img->device->backing()->size() == 512);
    o.untrusted = true;
    auto refused = open_image(reg, fs, "top.raw", o);
    REQUIRE(!refused);
    CHECK(refused.error().code == ErrorCode::access_denied);
    o.untrusted = false;
    o.backing_override = "top.raw";  // itself: a loop
    auto loop = open_image(reg, fs, "top.raw", o);
    REQUIRE(!loop);
    CHECK(loop.error().code == ErrorCode::corrupt);
}

TEST_CASE("posix read-ahead: small sequential, random and end-of-file reads return the file's bytes") {
    vt::TempDir tmp;
    // A file that is not a multiple of the read-ahead window, with a position-dependent pattern.
    const size_t size = (600 << 10) + 123;
    std::vector<uint8_t> bytes(size);
    for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
    auto fs = make_posix_file_system(tmp.path);
    {
        auto f = fs->create("f.bin", true);
        REQUIRE(f);
        REQUIRE((*f)->write_at(0, bytes));
    }
    auto f = fs->open("f.bin", Access::read_only);
    REQUIRE(f);
    auto check = [&](uint64_t off, size_t len) {
        std::vector<uint8_t> buf(len, 0xee);
        auto n = (*f)->read_at(off, buf);
        REQUIRE(n);
        size_t want = off >= size ? 0 : std::min<size_t>(len, size - static_cast<size_t>(off));
        REQUIRE(*n == want);
        CHECK(std::memcmp(buf.data(), bytes.data() + std::min<uint64_t>(off, size), want) == 0);
    };
    // Sequential 3000-byte reads cross every window boundary at odd places and end in a short read.
    for (uint64_t off = 0; off < size + 3000; off += 3000) check(off, 3000);
    // Random small reads, reads straddling the last window, and a large read bypassing the buffer.
    for (uint64_t off : {500000ull, 7ull, 262143ull, 262144ull, 524287ull, 614000ull, 614399ull, 614400ull})
        check(off, 4096);
    check(1000, 300000);
    check(size - 1, 1);
    check(size, 16);
}

TEST_CASE("incompressibility probe agrees with deflate") {
    std::vector<uint8_t> rnd(65536);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (auto& b : rnd) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b = static_cast<uint8_t>(x >> 32);
    }
    std::vector<uint8_t> out;
    // Random data: the probe says so, and deflate indeed cannot shrink it below one byte less.
    CHECK(util::likely_incompressible(rnd, 4096));
    CHECK_FALSE(util::deflate_into(rnd, out, true, 6, rnd.size() - 1));
    // Text-like data (a skewed histogram) and zeros compress.
    std::vector<uint8_t> text(65536);
    for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<uint8_t>('a' + rnd[i] % 16);
    CHECK_FALSE(util::likely_incompressible(text, 4096));
    CHECK(util::deflate_into(text, out, true, 6, text.size() - 1));
    CHECK_FALSE(util::likely_incompressible(std::vector<uint8_t>(65536, 0), 4096));
    // A flat histogram with a long repeat: compressible only when the repeat is within the window.
    // (zlib's 32 KiB window reaches back a little less than 32 KiB: repeat at 16 KiB.)
    std::vector<uint8_t> twice(rnd.begin(), rnd.begin() + 16384);
    twice.insert(twice.end(), rnd.begin(), rnd.begin() + 16384);
    twice.insert(twice.end(), rnd.begin() + 16384, rnd.begin() + 49152);
    CHECK_FALSE(util::likely_incompressible(twice, 32768));
    CHECK(util::deflate_into(twice, out, false, 6, twice.size() - 1));
    CHECK(util::likely_incompressible(twice, 4096));
    CHECK_FALSE(util::deflate_into(twice, out, true, 6, twice.size() - 1));
    // Short repeats scattered through random data (every 1 KiB, 64 bytes copied from 512 bytes back).
    std::vector<uint8_t> sprinkled = rnd;
    for (size_t at = 1024; at + 64 <= sprinkled.size(); at += 1024)
        std::memcpy(&sprinkled[at], &sprinkled[at - 512], 64);
    CHECK_FALSE(util::likely_incompressible(sprinkled, 4096));
}
