// SPDX-License-Identifier: Apache-2.0
// The convert engine as a library sees it: cancellation (flag, progress callback, exceptions) at every
// point leaves no temporary file and the old target untouched; --salvage against qemu-img's on the same
// unreadable sector; several sources; existing targets and backing files on the memory file system.
#include <atomic>
#include <stdexcept>

#include "forwarding.hpp"
#include "support.hpp"

using namespace vdisk;

namespace {

// A file that fails every read touching [bad_from, bad_to), as a disk with unreadable sectors does.
class FailingFile final : public testlib::ForwardingFile {
public:
    FailingFile(std::unique_ptr<File> f, uint64_t from, uint64_t to)
        : ForwardingFile(std::move(f)), from_(from), to_(to) {}
    Result<size_t> read_at(uint64_t off, std::span<uint8_t> buf) override {
        if (off < to_ && off + buf.size() > from_) {
            Error e = make_error(ErrorCode::io, "read: Input/output error");
            e.file = name();
            e.offset = off;
            return e;
        }
        return inner().read_at(off, buf);
    }

private:
    uint64_t from_, to_;
};

class FailingFs final : public testlib::ForwardingFs {
public:
    FailingFs(FileSystem& base, std::string name, uint64_t from, uint64_t to)
        : ForwardingFs(base), name_(std::move(name)), from_(from), to_(to) {}
    Result<std::unique_ptr<File>> open(std::string_view n, Access a) override {
        VDISK_ASSIGN(auto f, base().open(n, a));
        if (n != name_) return f;
        return std::unique_ptr<File>(new FailingFile(std::move(f), from_, to_));
    }

private:
    std::string name_;
    uint64_t from_, to_;
};

std::unique_ptr<BlockDevice> open_mem(const Registry& reg, FileSystem& fs, const std::string& name,
                                      const std::string& fmt = "") {
    OpenOptions o;
    o.format = fmt;
    auto img = open_image(reg, fs, name, o);
    REQUIRE_MESSAGE(img, (img ? "" : img.error().to_string()));
    return std::move(img->device);
}

}  // namespace

TEST_CASE("cancelling at any point (flag, progress returning false, progress throwing) leaves the target as it was") {
    auto reg = Registry::builtin();
    MemoryFileSystem fs;
    fs.add("src.raw", vt::pattern(24u << 20, 7));
    const std::vector<uint8_t> old = {'o', 'l', 'd'};
    auto src = open_mem(reg, fs, "src.raw", "raw");
    for (std::string fmt : {"qcow2", "vmdk", "vhdx", "raw"}) {
        // Count the progress steps of a full run, then stop at each of them in turn.
        ConvertOptions co;
        co.output_format = fmt;
        co.chunk_size = 1u << 20;
        int steps = 0;
        co.progress = [&](uint64_t, uint64_t) { ++steps; };
        fs.add("out.img", old);
        REQUIRE(convert(reg, *src, fs, "full.img", co));
        REQUIRE(steps > 3);
        for (int stop_at = 1; stop_at <= steps; stop_at += std::max(1, steps / 6)) {
            for (int how = 0; how < 3; ++how) {
                CAPTURE(fmt);
                CAPTURE(stop_at);
                CAPTURE(how);
                int n = 0;
                std::atomic<bool> cancel{false};
                ConvertOptions c = co;
                if (how == 0) {
                    c.cancel = &cancel;
                    c.progress = [&](uint64_t, uint64_t) {
                        if (++n == stop_at) cancel = true;
                    };
                } else if (how == 1) {
                    c.progress = [&](uint64_t, uint64_t) { return ++n < stop_at; };
                } else {
                    c.progress = [&](uint64_t, uint64_t) {
                        if (++n == stop_at) throw std::runtime_error("callback failed");
                    };
                }
                auto st = convert(reg, *src, fs, "out.img", c);
                if (st) {
                    // The last step reports completion after the data is written: nothing is left to stop.
                    CHECK(stop_at == steps);
                    fs.add("out.img", old);
                    continue;
                }
                CHECK(st.error().code == ErrorCode::cancelled);
                CHECK(fs.content("out.img") == old);
                CHECK(fs.names() == std::vector<std::string>{"full.img", "out.img", "src.raw"});
            }
        }
        REQUIRE(fs.remove("full.img"));
    }
}

TEST_CASE("--salvage writes zeros for the unreadable sector and reports it, as qemu-img's --salvage does") {
    if (!vt::need_qemu()) return;
    auto reg = Registry::builtin();
    vt::TempDir t;
    auto data = vt::pattern(1u << 20, 11);
    vt::write_file(t / "sv.raw", data);
    // qemu-img on the same input: blkdebug fails every read touching sector 100.
    auto q = vt::run(
        vt::in_dir(t,
                   "qemu-img convert --salvage -O raw 'json:{\"driver\":\"raw\",\"file\":"
                   "{\"driver\":\"blkdebug\",\"inject-error\":[{\"event\":\"none\",\"sector\":100,\"once\":false}],"
                   "\"image\":{\"driver\":\"file\",\"filename\":\"sv.raw\"}}}' q.raw"));
    REQUIRE_MESSAGE(q.status == 0, q.output);
    MemoryFileSystem mem;
    mem.add("sv.raw", data);
    FailingFs fs(mem, "sv.raw", 100 * 512, 101 * 512);
    auto src = open_mem(reg, fs, "sv.raw", "raw");
    ConvertOptions co;
    co.output_format = "raw";
    auto st = convert(reg, *src, mem, "plain.raw", co);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::io);
    co.salvage = true;
    std::vector<std::pair<uint64_t, uint64_t>> reported;
    co.on_salvaged = [&](uint64_t off, uint64_t len, const Error& e) {
        CHECK(e.code == ErrorCode::io);
        reported.emplace_back(off, len);
    };
    REQUIRE(convert(reg, *src, mem, "v.raw", co));
    CHECK(reported == std::vector<std::pair<uint64_t, uint64_t>>{{51200, 512}});
    CHECK(*mem.content("v.raw") == vt::read_file(t / "q.raw"));
}

TEST_CASE("several sources read as one device, then -n and -B on the memory file system") {
    auto reg = Registry::builtin();
    MemoryFileSystem fs;
    auto a = vt::pattern(3u << 20, 1), b = vt::pattern(1u << 20, 2);
    fs.add("a.raw", a);
    fs.add("b.raw", b);
    fs.add("empty.raw", {});
    auto da = open_mem(reg, fs, "a.raw", "raw");
    auto db = open_mem(reg, fs, "b.raw", "raw");
    auto de = open_mem(reg, fs, "empty.raw", "raw");
    auto cat = make_concat_device({da.get(), de.get(), db.get(), da.get()});
    REQUIRE(cat->size() == 7u << 20);
    auto all = vt::read_all(*cat);
    std::vector<uint8_t> want = a;
    want.insert(want.end(), b.begin(), b.end());
    want.insert(want.end(), a.begin(), a.end());
    CHECK(all == want);
    ConvertOptions co;
    co.output_format = "qcow2";
    REQUIRE(convert(reg, *cat, fs, "cat.qcow2", co));
    auto out = open_mem(reg, fs, "cat.qcow2");
    CHECK(vt::read_all(*out) == want);

    // -n: the existing image is rewritten; what the source has as zeros is zeroed in it.
    std::vector<uint8_t> zeros_then_b(7u << 20, 0);
    std::copy(b.begin(), b.end(), zeros_then_b.begin() + (2u << 20));
    fs.add("zb.raw", zeros_then_b);
    auto zb = open_mem(reg, fs, "zb.raw", "raw");
    ConvertOptions n;
    n.output_format = "qcow2";
    n.existing_target = true;
    REQUIRE(convert(reg, *zb, fs, "cat.qcow2", n));
    out = open_mem(reg, fs, "cat.qcow2");
    CHECK(vt::read_all(*out) == zeros_then_b);

    // -B: an overlay of cat.qcow2 that reads as zb.raw.
    fs.add("base.raw", want);
    ConvertOptions bo;
    bo.output_format = "qcow2";
    bo.backing_file = "base.raw";
    bo.backing_format = "raw";
    REQUIRE(convert(reg, *zb, fs, "ov.qcow2", bo));
    auto ov = open_mem(reg, fs, "ov.qcow2");
    REQUIRE(ov->backing() != nullptr);
    CHECK(vt::read_all(*ov) == zeros_then_b);
}
