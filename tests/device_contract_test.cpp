// SPDX-License-Identifier: Apache-2.0
// The map-first device contract (include/vdisk/block_device.hpp): a backend that only answers
// do_map_stored (+ inflate_unit) gets reads, zero fill, backing fall-through, the missing-backing refusal,
// merging and block status from the generic layer. Also the small shared helpers that came with it:
// Error::at, Result::value() on an error, the UTF-16 decoder, the unit splitter.
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <random>

#include "support.hpp"
#include "util/units.hpp"
#include "util/utf16.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

constexpr uint64_t kUnit = 4096;

// One piece of the toy layout, in virtual order. Compressed pieces are exactly one unit, unit-aligned.
struct Piece {
    StoredKind kind;
    uint64_t length;
    uint64_t host = 0;  // data/compressed: where the bytes are in the host file
};

// A backend that knows its layout only as a list of pieces and answers the one question.
class ToyDevice : public BlockDevice {
public:
    ToyDevice(std::unique_ptr<File> file, std::vector<Piece> pieces, uint64_t size)
        : BlockDevice(size, true), file_(std::move(file)), pieces_(std::move(pieces)) {}
    std::vector<File*> files() const override { return {file_.get()}; }
    bool refuse_without_backing = false;
    uint64_t fail_from = UINT64_MAX;  // map errors from here on (a bad table entry)
    mutable std::atomic<int> inflations{0};
    std::atomic<int> maps{0};

    Status inflate_unit(const StoredExtent& unit, std::span<const uint8_t> stored,
                        std::span<uint8_t> out) const override {
        ++inflations;
        if (stored.size() != out.size()) return make_error(ErrorCode::corrupt, "toy unit size").at(unit.host_offset);
        for (size_t i = 0; i < out.size(); ++i) out[i] = stored[i] ^ 0x5a;
        return ok();
    }

protected:
    Result<StoredExtent> do_map_stored(uint64_t offset, uint64_t max_len) override {
        ++maps;
        if (offset >= fail_from) return make_error(ErrorCode::corrupt, "toy: bad entry").at(offset);
        uint64_t start = 0;
        for (const Piece& p : pieces_) {
            if (offset < start + p.length) {
                StoredExtent s;
                s.kind = p.kind;
                if (p.kind == StoredKind::compressed) {
                    s.offset = start;
                    s.length = p.length;
                    s.file = file_.get();
                    s.host_offset = p.host;
                    s.host_length = p.length;
                    return s;
                }
                s.offset = offset;
                s.length = std::min(max_len, start + p.length - offset);
                if (p.kind == StoredKind::data) {
                    s.file = file_.get();
                    s.host_offset = p.host + (offset - start);
                }
                return s;
            }
            start += p.length;
        }
        return make_error(ErrorCode::corrupt, "toy: offset past the layout");
    }
    Status missing_backing_error() const override {
        if (!refuse_without_backing) return ok();
        return make_error(ErrorCode::unsupported, "toy: backing file not attached");
    }
    ImageInfo do_info() const override {
        ImageInfo i;
        i.format = "toy";
        i.virtual_size = size();
        return i;
    }

private:
    std::unique_ptr<File> file_;
    std::vector<Piece> pieces_;
};

// A backend that answers neither question: the generic layer must refuse, not recurse forever.
class BrokenDevice : public BlockDevice {
public:
    BrokenDevice() : BlockDevice(kUnit, true) {}
    std::vector<File*> files() const override { return {}; }

protected:
    ImageInfo do_info() const override { return {}; }
};

// A writable device that stores compressed chunks (to see the generic checks in front of the hook).
class ChunkDevice : public BlockDevice {
public:
    ChunkDevice(bool read_only) : BlockDevice(3 * kUnit + 512, read_only) {}
    std::vector<File*> files() const override { return {}; }
    uint64_t compress_granularity() const override { return kUnit; }
    int stored = 0;

protected:
    Result<Extent> do_block_status(uint64_t offset, uint64_t max_len) override {
        Extent e;
        e.offset = offset;
        e.length = max_len;
        e.kind = ExtentKind::zero;
        return e;
    }
    Status do_write_compressed_chunk(uint64_t, std::span<const uint8_t>, uint64_t) override {
        ++stored;
        return ok();
    }
    ImageInfo do_info() const override { return {}; }
};

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    std::mt19937 rng(seed);
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    return v;
}

// The toy image: host file with data pieces and XOR-"compressed" units; the expected virtual content is
// built independently from the same pieces.
struct Toy {
    MemoryFileSystem fs;
    std::vector<Piece> pieces;
    std::vector<uint8_t> expected;  // what read() must return with the backing attached
    std::vector<uint8_t> backing;   // the backing device's content
    uint64_t size = 0;

    Toy() {
        std::vector<uint8_t> host(16 * kUnit, 0);
        backing = pattern(12 * kUnit, 7);
        auto put = [&](uint64_t at, const std::vector<uint8_t>& bytes) {
            std::copy(bytes.begin(), bytes.end(), host.begin() + static_cast<std::ptrdiff_t>(at));
        };
        auto d1 = pattern(2 * kUnit, 1);  // data, two runs contiguous on the host
        auto d2 = pattern(kUnit, 2);
        auto c1 = pattern(kUnit, 3);  // compressed unit contents
        auto c2 = pattern(kUnit, 4);
        auto d3 = pattern(kUnit + 1000, 5);  // data not contiguous with d2, odd length (ends the device)
        put(0, d1);
        put(2 * kUnit, d2);
        std::vector<uint8_t> z1(c1), z2(c2);
        for (auto& b : z1) b ^= 0x5a;
        for (auto& b : z2) b ^= 0x5a;
        put(6 * kUnit, z1);
        put(7 * kUnit, z2);
        put(9 * kUnit, d3);
        pieces = {{StoredKind::data, 2 * kUnit, 0},           {StoredKind::data, kUnit, 2 * kUnit},
                  {StoredKind::zero, kUnit + 512, 0},         {StoredKind::unallocated, 2 * kUnit - 512, 0},
                  {StoredKind::compressed, kUnit, 6 * kUnit}, {StoredKind::compressed, kUnit, 7 * kUnit},
                  {StoredKind::unallocated, kUnit, 0},        {StoredKind::data, kUnit + 1000, 9 * kUnit}};
        for (auto& p : pieces) size += p.length;
        expected.insert(expected.end(), d1.begin(), d1.end());
        expected.insert(expected.end(), d2.begin(), d2.end());
        expected.insert(expected.end(), kUnit + 512, 0);
        uint64_t at = expected.size();
        expected.insert(expected.end(), backing.begin() + static_cast<std::ptrdiff_t>(at),
                        backing.begin() + static_cast<std::ptrdiff_t>(at + 2 * kUnit - 512));
        expected.insert(expected.end(), c1.begin(), c1.end());
        expected.insert(expected.end(), c2.begin(), c2.end());
        at = expected.size();
        expected.insert(expected.end(), backing.begin() + static_cast<std::ptrdiff_t>(at),
                        backing.begin() + static_cast<std::ptrdiff_t>(at + kUnit));
        expected.insert(expected.end(), d3.begin(), d3.end());
        REQUIRE(expected.size() == size);
        fs.add("toy.img", host);
        fs.add("base.img", backing);
    }
    std::unique_ptr<ToyDevice> open(bool with_backing) {
        auto f = fs.open("toy.img", Access::read_only);
        REQUIRE(f);
        auto dev = std::make_unique<ToyDevice>(std::move(*f), pieces, size);
        if (with_backing) {
            auto reg = Registry::builtin();
            OpenOptions o;
            o.format = "raw";
            auto b = open_image(reg, fs, "base.img", o);
            REQUIRE(b);
            REQUIRE(dev->attach_backing(std::move(b->device)));
        }
        return dev;
    }
};

}  // namespace

TEST_CASE("map-first: reads of every kind equal the independently built content at random ranges") {
    Toy toy;
    auto dev = toy.open(true);
    std::vector<uint8_t> all(toy.size);
    REQUIRE(dev->read(0, all));
    CHECK(all == toy.expected);
    std::mt19937_64 rng(42);
    for (int i = 0; i < 2000; ++i) {
        uint64_t off = rng() % toy.size;
        uint64_t len = 1 + rng() % std::min<uint64_t>(toy.size - off, 3 * kUnit);
        std::vector<uint8_t> buf(len, 0xee);
        REQUIRE(dev->read(off, buf));
        REQUIRE(std::equal(buf.begin(), buf.end(), toy.expected.begin() + static_cast<std::ptrdiff_t>(off)));
    }
}

TEST_CASE("map-first: block status is derived from the same map, merging contiguous data") {
    Toy toy;
    auto dev = toy.open(true);
    struct Want {
        uint64_t offset, length;
        ExtentKind kind;
        bool compressed;
    };
    // The two data pieces are contiguous on the host (0..3 units): one extent. Compressed units merge.
    std::vector<Want> want = {{0, 3 * kUnit, ExtentKind::data, false},
                              {3 * kUnit, kUnit + 512, ExtentKind::zero, false},
                              {4 * kUnit + 512, 2 * kUnit - 512, ExtentKind::unallocated, false},
                              {6 * kUnit, 2 * kUnit, ExtentKind::data, true},
                              {8 * kUnit, kUnit, ExtentKind::unallocated, false},
                              {9 * kUnit, kUnit + 1000, ExtentKind::data, false}};
    uint64_t off = 0;
    for (const auto& w : want) {
        auto e = dev->block_status(off, toy.size);
        REQUIRE(e);
        CHECK(e->offset == w.offset);
        CHECK(e->length == w.length);
        CHECK(e->kind == w.kind);
        CHECK(e->compressed == w.compressed);
        if (w.kind == ExtentKind::data && !w.compressed) {
            REQUIRE(e->host_offset);
            CHECK(e->file == dev->files()[0]);
        }
        off += e->length;
    }
    CHECK(off == toy.size);
    // Starting inside a compressed unit reports from the offset asked about, clipped to max_len.
    auto mid = dev->block_status(6 * kUnit + 100, 50);
    REQUIRE(mid);
    CHECK(mid->offset == 6 * kUnit + 100);
    CHECK(mid->length == 50);
    CHECK(mid->compressed);
}

TEST_CASE("map-first: small reads walking one compressed unit inflate it once") {
    Toy toy;
    auto dev = toy.open(false);
    for (uint64_t p = 6 * kUnit; p < 7 * kUnit; p += 512) {
        std::vector<uint8_t> buf(512);
        REQUIRE(dev->read(p, buf));
        REQUIRE(std::equal(buf.begin(), buf.end(), toy.expected.begin() + static_cast<std::ptrdiff_t>(p)));
    }
    CHECK(dev->inflations.load() == 1);
    // A whole-unit read decodes straight into the caller's buffer.
    std::vector<uint8_t> unit(kUnit);
    REQUIRE(dev->read(7 * kUnit, unit));
    CHECK(dev->inflations.load() == 2);
}

TEST_CASE("map-first: unallocated without a backing reads zeros, or is refused when the backend says so") {
    Toy toy;
    auto dev = toy.open(false);
    std::vector<uint8_t> buf(kUnit, 0xee);
    REQUIRE(dev->read(8 * kUnit, buf));
    CHECK(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; }));
    dev->refuse_without_backing = true;
    auto st = dev->read(8 * kUnit, buf);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::unsupported);
    CHECK(st.error().file == "toy.img");  // the generic layer names the layer's main file
    // Ranges that never fall through are still readable.
    REQUIRE(dev->read(0, buf));
}

TEST_CASE("map-first: a piece that fails to map ends a merge: the good run first, the error on the next call") {
    Toy toy;
    auto dev = toy.open(true);
    dev->fail_from = 2 * kUnit;  // the second data piece, host-contiguous with the first
    auto e = dev->block_status(0, toy.size);
    REQUIRE(e);
    CHECK(e->kind == ExtentKind::data);
    CHECK(e->length == 2 * kUnit);
    auto bad = dev->block_status(2 * kUnit, toy.size - 2 * kUnit);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == ErrorCode::corrupt);
    REQUIRE(bad.error().offset);
    CHECK(*bad.error().offset == 2 * kUnit);
    std::vector<uint8_t> head(2 * kUnit);
    REQUIRE(dev->read(0, head));
    CHECK(std::equal(head.begin(), head.end(), toy.expected.begin()));
    std::vector<uint8_t> across(3 * kUnit);
    auto st = dev->read(0, across);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::corrupt);
}

TEST_CASE("map-first: a backend answering neither question is refused, not recursed into") {
    BrokenDevice dev;
    std::vector<uint8_t> buf(512);
    auto st = dev.read(0, buf);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::unsupported);
    auto e = dev.block_status(0, 512);
    REQUIRE_FALSE(e);
    CHECK(e.error().code == ErrorCode::unsupported);
}

TEST_CASE("write_compressed_chunk is checked like write before the backend sees it") {
    ChunkDevice ro(true);
    std::vector<uint8_t> packed(100, 1);
    auto st = ro.write_compressed_chunk(0, packed, kUnit);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::read_only);

    ChunkDevice dev(false);
    auto bad = dev.write_compressed_chunk(512, packed, kUnit);  // not aligned to the granule
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == ErrorCode::invalid_argument);
    bad = dev.write_compressed_chunk(0, packed, kUnit / 2);  // not a whole granule, not the device's end
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == ErrorCode::invalid_argument);
    bad = dev.write_compressed_chunk(3 * kUnit, packed, kUnit);  // past the end
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == ErrorCode::out_of_range);
    bad = dev.write_compressed_chunk(0, {}, kUnit);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == ErrorCode::invalid_argument);
    CHECK(dev.stored == 0);
    REQUIRE(dev.write_compressed_chunk(0, packed, kUnit));
    REQUIRE(dev.write_compressed_chunk(3 * kUnit, packed, 512));  // the last, short granule
    CHECK(dev.stored == 2);
    REQUIRE(dev.close());
    bad = dev.write_compressed_chunk(kUnit, packed, kUnit);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == ErrorCode::invalid_argument);
}

TEST_CASE("check is a device operation: unsupported by default, repair needs a writable image") {
    Toy toy;
    auto dev = toy.open(false);
    auto r = dev->check(RepairMode::none);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::unsupported);
    auto rr = dev->check(RepairMode::all);
    REQUIRE_FALSE(rr);
    CHECK(rr.error().code == ErrorCode::read_only);
}

TEST_CASE("the opener refuses a snapshot for formats without internal snapshots, naming both") {
    MemoryFileSystem fs;
    fs.add("disk.img", std::vector<uint8_t>(1 << 16, 0));
    auto reg = Registry::builtin();
    // On the heap: GCC 12 warns (maybe-uninitialized, a false positive) about a stack copy's SSO buffer.
    auto o = std::make_unique<OpenOptions>();
    o->format = "raw";
    o->snapshot = "s1";
    auto r = open_image(reg, fs, "disk.img", *o);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::unsupported);
    CHECK(r.error().message.find("'s1'") != std::string::npos);
    CHECK(r.error().file == "disk.img");
    const Format* q = reg.find("qcow2");
    REQUIRE(q);
    CHECK(q->has_internal_snapshots());
    CHECK_FALSE(reg.find("vmdk")->has_internal_snapshots());
}

TEST_CASE("Error::at records the offset and Result::value() on an error aborts with the message") {
    Error e = make_error(ErrorCode::corrupt, "bad table").at(0x1234);
    REQUIRE(e.offset);
    CHECK(*e.offset == 0x1234);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // The child: stderr to /dev/null so the test log stays readable.
        FILE* devnull = std::freopen("/dev/null", "w", stderr);
        (void)devnull;
        std::signal(SIGABRT, SIG_DFL);  // doctest's crash handler would report instead of dying
        Result<int> bad = make_error(ErrorCode::io, "no disk");
        volatile int v = bad.value();
        (void)v;
        _exit(0);  // not reached when value() aborts
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGABRT);
}

TEST_CASE("UTF-16 decoder: byte orders, surrogate pairs, unpaired surrogates, NUL handling") {
    using util::Utf16Nul;
    using util::Utf16Order;
    // "A", U+00E9, U+20AC, U+1F600 (pair), then a lone high surrogate, "B", NUL, "C".
    std::vector<uint16_t> units = {0x41, 0xe9, 0x20ac, 0xd83d, 0xde00, 0xd800, 0x42, 0x0, 0x43};
    std::vector<uint8_t> le, be;
    for (uint16_t u : units) {
        le.push_back(static_cast<uint8_t>(u));
        le.push_back(static_cast<uint8_t>(u >> 8));
        be.push_back(static_cast<uint8_t>(u >> 8));
        be.push_back(static_cast<uint8_t>(u));
    }
    const std::string head =
        "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbd"
        "B";
    CHECK(util::utf16_to_utf8(le, Utf16Order::little, Utf16Nul::ends) == head);
    CHECK(util::utf16_to_utf8(be, Utf16Order::big, Utf16Nul::ends) == head);
    CHECK(util::utf16_to_utf8(le, Utf16Order::little, Utf16Nul::kept) == head + std::string(1, '\0') + "C");
    // A trailing odd byte is ignored; a lone low surrogate at the end is replaced.
    std::vector<uint8_t> odd = {0x41, 0x00, 0x00, 0xdc, 0x7f};
    CHECK(util::utf16_to_utf8(odd, Utf16Order::little, Utf16Nul::kept) == "A\xef\xbf\xbd");
    // Round trip through the encoder.
    std::u16string w = util::utf8_to_utf16("x\xc3\xa9\xf0\x9f\x98\x80");
    CHECK(w == std::u16string{u'x', 0xe9, 0xd83d, 0xde00});
    CHECK(util::utf8_to_utf16("\xff") == std::u16string{0xfffd});
}

TEST_CASE("for_each_unit splits a range at unit boundaries, in order, and stops at the first error") {
    std::vector<util::UnitPiece> got;
    REQUIRE(util::for_each_unit(1000, 5000, 4096, [&](const util::UnitPiece& p) -> Status {
        got.push_back(p);
        return ok();
    }));
    REQUIRE(got.size() == 2);
    CHECK(got[0].index == 0);
    CHECK(got[0].in_unit == 1000);
    CHECK(got[0].length == 3096);
    CHECK(got[0].done == 0);
    CHECK(got[1].index == 1);
    CHECK(got[1].in_unit == 0);
    CHECK(got[1].length == 1904);
    CHECK(got[1].done == 3096);
    int calls = 0;
    auto st = util::for_each_unit(0, 3 * 512, 512, [&](const util::UnitPiece&) -> Status {
        ++calls;
        return calls == 2 ? Status(make_error(ErrorCode::io, "stop")) : ok();
    });
    REQUIRE_FALSE(st);
    CHECK(calls == 2);
}
