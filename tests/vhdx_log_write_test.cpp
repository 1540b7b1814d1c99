// SPDX-License-Identifier: Apache-2.0
// The VHDX log as vdisk writes it: metadata updates go through the log, every crash point of a commit
// leaves the old or the new state (for vdisk and for qemu), and entries wrap around the end of the log.
#include <algorithm>
#include <cstring>
#include <functional>

#include "builtin_formats.hpp"
#include "forwarding.hpp"
#include "support.hpp"
#include "vhdx_helpers.hpp"

using namespace vdisk;
using namespace vhdx_test;

// Metadata through the log: vdisk's own entries, crash states, and what qemu-img makes of them.
namespace {

bool log_guids_clear(const std::vector<uint8_t>& img) {
    for (size_t at : {size_t(64 << 10), size_t(128 << 10)})
        if (!std::all_of(img.begin() + at + 48, img.begin() + at + 64, [](uint8_t b) { return b == 0; })) return false;
    return true;
}
std::vector<uint8_t> read_head(const std::string& path, size_t n) {
    std::vector<uint8_t> head(n);
    auto f = make_posix_file_system()->open(path, Access::read_only);
    REQUIRE(f.ok());
    REQUIRE(read_exact(**f, 0, head).ok());
    return head;
}
bool log_guids_clear(const std::string& path) { return log_guids_clear(read_head(path, 192 << 10)); }
// The LogGuid of the current header (zero: the log is empty).
std::vector<uint8_t> current_log_guid(const std::vector<uint8_t>& img) {
    size_t cur = current_header(img);
    return std::vector<uint8_t>(img.begin() + cur + 48, img.begin() + cur + 64);
}
bool guid_is_zero_bytes(const std::vector<uint8_t>& g) {
    return std::all_of(g.begin(), g.end(), [](uint8_t b) { return b == 0; });
}

// Files opened or created through it tell `on_sync` about every sync and `on_write` about every write (or
// hole punched: `data` null) before it happens, with the number of log entries written so far: writes into
// the log region that start with an entry signature. Snapshots taken there are the states a crash can leave.
class CrashFs final : public testlib::ForwardingFs {
public:
    using SyncHook = std::function<void(File& f, int entries)>;
    using WriteHook = std::function<void(File& f, int entries, uint64_t off, uint64_t len, const uint8_t* data)>;
    CrashFs(FileSystem& base, uint64_t log_begin, uint64_t log_end)
        : ForwardingFs(base), log_begin_(log_begin), log_end_(log_end) {}
    SyncHook on_sync;
    WriteHook on_write;

    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override {
        VDISK_ASSIGN(auto f, base().open(name, access));
        return std::unique_ptr<File>(std::make_unique<Wrapped>(std::move(f), *this));
    }
    Result<std::unique_ptr<File>> create(std::string_view name, bool exclusive) override {
        VDISK_ASSIGN(auto f, base().create(name, exclusive));
        return std::unique_ptr<File>(std::make_unique<Wrapped>(std::move(f), *this));
    }
    Result<std::vector<std::string>> list(std::string_view dir) override { return base().list(dir); }

private:
    class Wrapped final : public testlib::ForwardingFile {
    public:
        Wrapped(std::unique_ptr<File> f, CrashFs& fs) : ForwardingFile(std::move(f)), fs_(fs) {}
        Status write_at(uint64_t o, std::span<const uint8_t> b) override {
            if (fs_.on_write) fs_.on_write(inner(), entries_, o, b.size(), b.data());
            if (o >= fs_.log_begin_ && o < fs_.log_end_ && b.size() >= 4 && std::memcmp(b.data(), "loge", 4) == 0)
                ++entries_;
            return inner().write_at(o, b);
        }
        Status sync() override {
            VDISK_TRY(inner().sync());
            if (fs_.on_sync) fs_.on_sync(inner(), entries_);
            return ok();
        }
        Status punch_hole(uint64_t o, uint64_t n) override {
            if (fs_.on_write) fs_.on_write(inner(), entries_, o, n, nullptr);
            return inner().punch_hole(o, n);
        }
        Status allocate(uint64_t o, uint64_t n) override { return inner().allocate(o, n); }
        Result<std::optional<DataRange>> next_data(uint64_t o) override { return inner().next_data(o); }
        std::optional<uint64_t> allocated_size() override { return inner().allocated_size(); }

    private:
        CrashFs& fs_;
        int entries_ = 0;
    };
    uint64_t log_begin_, log_end_;
};

// The order a commit must keep (default layout, log at 1 MiB): the payload synced before the entry that
// references it, the entry synced before its pages are written in place.
struct OrderCheck {
    uint64_t log_end = 2 * MiB;
    bool payload_unsynced = false, entry_unsynced = false;
    int payload_before_entry = 0, applied_before_entry = 0;
    void write(uint64_t off, const uint8_t* data, uint64_t len) {
        bool in_log = off >= MiB && off < log_end, in_headers = off < MiB;
        if (in_log && data && len >= 4 && std::memcmp(data, "loge", 4) == 0 && payload_unsynced) ++payload_before_entry;
        if (!in_log && !in_headers) {
            if (entry_unsynced) ++applied_before_entry;
            payload_unsynced = true;
        }
        if (in_log) entry_unsynced = true;
    }
    void sync() { payload_unsynced = entry_unsynced = false; }
    void require_kept() const {
        CHECK_MESSAGE(payload_before_entry == 0, "log entry written before the payload was synced");
        CHECK_MESSAGE(applied_before_entry == 0, "metadata applied before its log entry was synced");
    }
};

std::vector<uint8_t> file_bytes(File& f) {
    auto n = f.size();
    REQUIRE(n.ok());
    std::vector<uint8_t> b(static_cast<size_t>(*n));
    REQUIRE(read_exact(f, 0, b).ok());
    return b;
}

// Where the newest log entry with the current LogGuid starts in a snapshot (relative to the log), or -1.
long find_entry(const std::vector<uint8_t>& img, uint64_t log_len = MiB) {
    auto guid = current_log_guid(img);
    long best = -1;
    uint64_t best_seq = 0;
    for (uint64_t pos = 0; pos < log_len; pos += 4096)
        if (le32(img, MiB + pos) == 0x65676f6c && std::memcmp(img.data() + MiB + pos + 32, guid.data(), 16) == 0 &&
            le64(img, MiB + pos + 16) > best_seq) {
            best = static_cast<long>(pos);
            best_seq = le64(img, MiB + pos + 16);
        }
    return best;
}

}  // namespace

TEST_CASE("log writes: vdisk-written images have an empty log after close, qemu-img check and compare agree") {
    if (!vt::need_qemu()) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    auto fs = make_posix_file_system(tmp.path);
    // A qemu-made source whose writes span three BAT pages (1 MiB blocks: 512 entries a page).
    std::string src = tmp / "src.vhdx";
    REQUIRE(vt::run("qemu-img create -f vhdx -o block_size=1M " + src + " 1200M").status == 0);
    auto w = vt::run(
        "qemu-io -f vhdx -c 'write -P 0xa1 0 3M' -c 'write -P 0xb2 600M 1536K' -c 'write -P 0xc3 1100M 512' "
        "-c 'write -P 0xd4 1199M 1M' " +
        src);
    REQUIRE_MESSAGE(w.status == 0, w.output);
    convert_to_vhdx_1m(reg, *fs, "src.vhdx", "vhdx", "dst.vhdx");
    CHECK(log_guids_clear(tmp / "dst.vhdx"));
    vt::expect_qemu_check(tmp / "dst.vhdx", "vhdx");
    vt::expect_qemu_compare(src, tmp / "dst.vhdx", "vhdx", "vhdx");

    // Writes through the library into a fresh image, with flushes in between: every flush leaves the log
    // empty again (qemu-img refuses read-only opens of an image whose log holds entries).
    CreateOptions co;
    co.size = 1200 * MiB;
    co.values = *parse_option_list("block_size=1M");
    auto dev = create_image(reg, *fs, "w.vhdx", "vhdx", co);
    REQUIRE(dev.ok());
    CreateOptions ro;
    ro.size = co.size;
    auto raw = create_image(reg, *fs, "w.raw", "raw", ro);
    REQUIRE(raw.ok());
    uint32_t seed = 1;
    for (uint64_t off :
         std::vector<uint64_t>{0, 700 * MiB + 4096, 5 * MiB - 512, 1100 * MiB, 300 * MiB, 1200 * MiB - 8192}) {
        auto data = vt::pattern(8192, seed++);
        REQUIRE((*dev)->write(off, data).ok());
        REQUIRE((*raw)->write(off, data).ok());
        if (seed % 2) {
            REQUIRE((*dev)->flush().ok());
            CHECK(log_guids_clear(tmp / "w.vhdx"));
            auto info = vt::run("qemu-img info -f vhdx " + tmp / "w.vhdx");
            CHECK_MESSAGE(info.status == 0, info.output);
        }
    }
    REQUIRE((*dev)->write_zeroes(900 * MiB, 2 * MiB).ok());
    REQUIRE((*raw)->write_zeroes(900 * MiB, 2 * MiB).ok());
    // Growing logs the new BAT entries and then the size item.
    REQUIRE((*dev)->resize(1300 * MiB).ok());
    REQUIRE((*raw)->resize(1300 * MiB).ok());
    auto tail = vt::pattern(4096, 99);
    REQUIRE((*dev)->write(1250 * MiB, tail).ok());
    REQUIRE((*raw)->write(1250 * MiB, tail).ok());
    REQUIRE((*dev)->close().ok());
    REQUIRE((*raw)->close().ok());
    CHECK(log_guids_clear(tmp / "w.vhdx"));
    vt::expect_qemu_check(tmp / "w.vhdx", "vhdx");
    vt::expect_qemu_compare(tmp / "w.vhdx", tmp / "w.raw", "vhdx", "raw");
}

namespace {
struct Fill {
    uint64_t off;
    size_t len;
    uint8_t v;
};
std::string qemu_reads(const std::vector<Fill>& fills, bool expect_zero) {
    std::string cmds;
    for (auto& f : fills)
        cmds += " -c 'read -P " + std::to_string(expect_zero ? 0 : f.v) + " " + std::to_string(f.off) + " " +
                std::to_string(f.len) + "'";
    return cmds;
}
// qemu-img check -r all replays a pending log (qemu refuses read-only opens while one is pending); then
// qemu-io must read `now` and zeros in `absent`.
void qemu_replays_to(const std::vector<uint8_t>& img, const std::vector<Fill>& now, const std::vector<Fill>& absent) {
    vt::TempDir tmp;
    std::string p = tmp / "s.vhdx";
    vt::write_file(p, img);
    auto c = vt::run("qemu-img check -r all -f vhdx " + p);
    CHECK_MESSAGE(c.status == 0, c.output);
    // Nothing left to replay: a read-only open works. (With LogGuid set but no valid entry qemu leaves the
    // GUID alone, so the header itself is not the test.)
    auto info = vt::run("qemu-img info -f vhdx " + p);
    CHECK_MESSAGE(info.status == 0, info.output);
    vt::expect_qemu_io_reads(p, "vhdx", qemu_reads(now, false) + qemu_reads(absent, true));
    vt::expect_qemu_check(p, "vhdx");
}
bool reads_as(BlockDevice& dev, const Fill& f, bool zero) {
    return vt::read_range(dev, f.off, f.len) == vt::bytes(f.len, zero ? 0 : f.v);
}
}  // namespace

TEST_CASE("log crash states: before the entry is flushed the old metadata, after it the new, for vdisk and qemu") {
    // 2 GiB with 1 MiB blocks: the BAT entries of blocks 0, 700 and 1500 lie in three different pages.
    auto reg = make_reg();
    MemoryFileSystem mem;
    CrashFs fs(mem, MiB, 2 * MiB);
    CreateOptions co;
    co.size = 2ull << 30;
    co.values = *parse_option_list("block_size=1M");
    auto dev = create_image(reg, fs, "img.vhdx", "vhdx", co);
    REQUIRE(dev.ok());
    const Fill a{0, 65536, 0x11}, b{700 * MiB + 4096, 8192, 0x22}, c{1500 * MiB, MiB, 0x33};
    REQUIRE((*dev)->write(a.off, vt::bytes(a.len, a.v)).ok());
    REQUIRE((*dev)->flush().ok());
    // From here on, every write and sync of the commit that makes b and c visible is a possible crash point.
    // Ordered states: everything written so far reached the disk. Unordered ones: what the last sync made
    // durable plus just the write about to happen (the disk may persist unsynced writes in any order).
    struct State {
        std::vector<uint8_t> img;
        int entries;
        bool at_sync;
        bool ordered = true;
    };
    std::vector<State> states;
    std::vector<uint8_t> durable = *mem.content("img.vhdx");
    OrderCheck order;
    fs.on_write = [&](File& f, int n, uint64_t off, uint64_t len, const uint8_t* data) {
        states.push_back({file_bytes(f), n, false});
        bool in_log = off >= MiB && off < 2 * MiB;
        bool entry = in_log && data && len >= 4 && std::memcmp(data, "loge", 4) == 0;
        auto alone = durable;
        if (alone.size() < off + len) alone.resize(off + len, 0);
        if (data) std::memcpy(alone.data() + off, data, len);
        else std::fill_n(alone.begin() + static_cast<std::ptrdiff_t>(off), len, 0);
        states.push_back({std::move(alone), n + (entry ? 1 : 0), false, false});
        order.write(off, data, len);
    };
    fs.on_sync = [&](File& f, int n) {
        durable = file_bytes(f);
        states.push_back({durable, n, true});
        order.sync();
    };
    REQUIRE((*dev)->write(b.off, vt::bytes(b.len, b.v)).ok());
    REQUIRE((*dev)->write(c.off, vt::bytes(c.len, c.v)).ok());
    REQUIRE((*dev)->close().ok());
    dev->reset();
    fs.on_write = nullptr;
    fs.on_sync = nullptr;
    order.require_kept();
    REQUIRE(states.size() > 8);
    CHECK(log_guids_clear(states.back().img));

    // The state right after the entry is flushed, before any page of it is applied.
    int dirty = -1;
    for (size_t i = 0; i < states.size(); ++i)
        if (states[i].at_sync && states[i].entries == 2) {
            dirty = static_cast<int>(i);
            break;
        }
    REQUIRE(dirty >= 0);
    const auto& d = states[static_cast<size_t>(dirty)].img;
    REQUIRE(find_entry(d) >= 0);
    REQUIRE((le64(d, kBat + 700 * 8) & 7) != 6);  // the BAT on disk does not have the new blocks yet

    bool seen_new = false;
    for (size_t i = 0; i < states.size(); ++i) {
        INFO("state " << i
                      << (states[i].at_sync   ? " (sync)"
                          : states[i].ordered ? " (before a write)"
                                              : " (one write)"));
        const auto& img = states[i].img;
        bool is_new;
        {
            MemoryFileSystem m;
            auto ro = open_mem(m, img);
            REQUIRE_MESSAGE(ro.ok(), vt::error_text(ro));
            CHECK(reads_as(*ro->device, a, false));
            is_new = reads_as(*ro->device, b, false);
            CHECK(reads_as(*ro->device, b, !is_new));
            CHECK(reads_as(*ro->device, c, !is_new));
            CHECK(m.content("img.vhdx") == img);
        }
        // New exactly when the entry made it to the disk or its pages did (after which LogGuid is cleared);
        // among the ordered states, once new stays new.
        bool bat_new = (le64(img, kBat + 700 * 8) & 7) == 6 && (le64(img, kBat + 1500 * 8) & 7) == 6;
        CHECK(is_new == (find_entry(img) >= 0 || bat_new));
        if (states[i].ordered) {
            CHECK(is_new == (states[i].entries == 2 && (i >= static_cast<size_t>(dirty))));
            CHECK((!seen_new || is_new));
            seen_new = seen_new || is_new;
        }
        // Read-write: replayed into the file, the log emptied, and the same content after reopening.
        MemoryFileSystem m;
        {
            auto rw = open_mem(m, img, true);
            REQUIRE(rw.ok());
            REQUIRE(rw->device->close().ok());
        }
        auto replayed = *m.content("img.vhdx");
        CHECK(guid_is_zero_bytes(current_log_guid(replayed)));
        MemoryFileSystem m2;
        auto again = open_mem(m2, replayed);
        REQUIRE(again.ok());
        CHECK(reads_as(*again->device, b, !is_new));
        CHECK(reads_as(*again->device, c, !is_new));
        auto chk = again->format->check(*again->device, RepairMode::none);
        REQUIRE(chk.ok());
        CHECK(chk->corruptions == 0);
        // qemu replays whatever log the crash left (qemu-img check -r all), for every state with one.
        if (!guid_is_zero_bytes(current_log_guid(img)) && vt::need_qemu()) {
            if (is_new) qemu_replays_to(img, {a, b, c}, {});
            else qemu_replays_to(img, {a}, {b, c});
        }
    }
    CHECK(seen_new);

    if (vt::need_qemu()) {
        // qemu-img agrees that the dirty state has a log to replay: it refuses to open it read-only.
        vt::TempDir tmp;
        vt::write_file(tmp / "d.vhdx", d);
        auto info = vt::run("qemu-img convert -O raw " + tmp / "d.vhdx" + " " + tmp / "d.raw");
        CHECK_MESSAGE(info.status != 0, info.output);
    }

    SUBCASE("an entry with a bad checksum or torn off at its end is ignored: the old state reads") {
        long pos = find_entry(d);
        uint32_t len = le32(d, MiB + static_cast<size_t>(pos) + 8);
        REQUIRE(len >= 8192);
        for (int variant = 0; variant < 3; ++variant) {
            INFO("variant " << variant);
            auto img = d;
            size_t at = MiB + static_cast<size_t>(pos);
            if (variant == 0) img[at + 4096 + 100] ^= 1;                            // a data sector's byte
            if (variant == 1) std::fill_n(img.begin() + at + len - 4096, 4096, 0);  // last sector never written
            // A descriptor's file offset. qemu rejects the whole image then (it validates descriptors before
            // the checksum), so this one is for vdisk only.
            if (variant == 2) img[at + 64 + 16] ^= 0x10;
            {
                MemoryFileSystem m;
                auto ro = open_mem(m, img);
                REQUIRE(ro.ok());
                CHECK(!ro->device->info().dirty);
                CHECK(reads_as(*ro->device, a, false));
                CHECK(reads_as(*ro->device, b, true));
                CHECK(reads_as(*ro->device, c, true));
            }
            MemoryFileSystem m;
            {
                auto rw = open_mem(m, img, true);
                REQUIRE(rw.ok());
                CHECK(reads_as(*rw->device, b, true));
                REQUIRE(rw->device->close().ok());
            }
            CHECK(guid_is_zero_bytes(current_log_guid(*m.content("img.vhdx"))));
            if (variant < 2 && vt::need_qemu()) qemu_replays_to(img, {a}, {b, c});
        }
    }
}

TEST_CASE("log wraps within a session: entries straddle the end of the buffer - vdisk and qemu replay the newest") {
    // 200 GiB of 1 MiB blocks (sparse on the host). Each commit gathers one entry's worth of dirty BAT pages
    // (126, one descriptor sector): block k of page 0, which every commit rewrites, plus 125 pages of their
    // own. Entries are 127 sectors; in the 256-sector default log the third one wraps around the end.
    auto reg = make_reg();
    vt::TempDir tmp;
    auto host = make_posix_file_system(tmp.path);
    CrashFs fs(*host, MiB, 2 * MiB);
    CreateOptions co;
    co.size = 200ull << 30;
    co.values = *parse_option_list("block_size=1M");
    auto dev = create_image(reg, fs, "big.vhdx", "vhdx", co);
    REQUIRE(dev.ok());
    std::vector<Fill> fills;
    uint64_t page = 1;
    bool taken = false;
    OrderCheck order;  // the later commits of the session have no header update whose sync would hide a gap
    fs.on_write = [&](File&, int, uint64_t off, uint64_t len, const uint8_t* data) { order.write(off, data, len); };
    fs.on_sync = [&](File&, int entries) {
        order.sync();
        if (entries == 3 && !taken) {
            taken = true;
            auto r = vt::run("cp --sparse=always " + tmp / "big.vhdx" + " " + tmp / "snap.vhdx");
            CHECK_MESSAGE(r.status == 0, r.output);
        }
    };
    std::vector<Fill> after;  // written after the snapshot's entry: not visible in it
    for (uint64_t k = 0; k < 4; ++k) {
        auto& into = k < 3 ? fills : after;
        Fill f{k * MiB + 512 * k, 4096, static_cast<uint8_t>(0x40 + k)};
        REQUIRE((*dev)->write(f.off, vt::bytes(f.len, f.v)).ok());
        into.push_back(f);
        for (int j = 0; j < (k < 3 ? 125 : 10); ++j, ++page) {
            Fill g{page * 512 * MiB + 8192, 4096, static_cast<uint8_t>(0x80 | (page % 127))};
            REQUIRE((*dev)->write(g.off, vt::bytes(g.len, g.v)).ok());
            into.push_back(g);
        }
    }
    REQUIRE(taken);
    REQUIRE((*dev)->close().ok());
    dev->reset();
    order.require_kept();
    CHECK(log_guids_clear(tmp / "big.vhdx"));

    auto snap = read_head(tmp / "snap.vhdx", 2 * MiB);  // headers and log
    // The entry that was flushed last starts near the end of the log and continues at its start.
    long pos = find_entry(snap);
    REQUIRE(pos > 0);
    uint32_t len = le32(snap, MiB + static_cast<size_t>(pos) + 8);
    CHECK(static_cast<uint64_t>(pos) + len > MiB);
    snap = {};

    auto verify = [&](BlockDevice& d) {
        for (auto& f : fills) REQUIRE(reads_as(d, f, false));
        for (auto& f : after) REQUIRE(reads_as(d, f, true));
    };
    {
        auto ro = vt::open_host(reg, tmp / "snap.vhdx");
        REQUIRE_MESSAGE(ro.ok(), vt::error_text(ro));
        CHECK(ro->device->info().dirty);
        verify(*ro->device);
    }
    REQUIRE(vt::run("cp --sparse=always " + tmp / "snap.vhdx" + " " + tmp / "rw.vhdx").status == 0);
    {
        auto rw = vt::open_host(reg, tmp / "rw.vhdx", "", true);
        REQUIRE(rw.ok());
        verify(*rw->device);
        REQUIRE(rw->device->close().ok());
    }
    CHECK(log_guids_clear(tmp / "rw.vhdx"));
    if (vt::need_qemu()) {
        std::string p = tmp / "snap.vhdx";
        CHECK(vt::run("qemu-img info -f vhdx " + p).status != 0);  // pending log: refused read-only
        auto c = vt::run("qemu-img check -r all -f vhdx " + p);
        CHECK_MESSAGE(c.status == 0, c.output);
        CHECK(log_guids_clear(p));
        vt::expect_qemu_io_reads(p, "vhdx", qemu_reads(fills, false) + qemu_reads(after, true));
        vt::expect_qemu_io_reads(tmp / "big.vhdx", "vhdx", qemu_reads(fills, false) + qemu_reads(after, false));
        vt::expect_qemu_check(tmp / "big.vhdx", "vhdx");
    }
}
