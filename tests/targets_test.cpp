// SPDX-License-Identifier: Apache-2.0
// convert into what admins point it at — block devices (loop devices), symbolic links, existing files with
// their owners, modes and links, pipes — and every qemu-img convert flag, each against qemu-img on the same
// input.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "support.hpp"

using vt::run;
using vt::sh_quote;

namespace {

struct stat stat_of(const std::string& p) {
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    return st;
}

bool temp_left(const std::string& dir) { return run("ls -A " + sh_quote(dir) + " | grep -q vdisk-").status == 0; }

// A raw source of 64 MiB: data with holes and short zero runs inside, so sparseness rules show.
std::string make_source(const vt::TempDir& t) {
    std::string p = t / "src.raw";
    vt::sh("truncate -s 64M " + sh_quote(p));
    vt::sh(
        "qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0 64k 8k' -c 'write -P 0x11 5M 3M' "
        "-c 'write -P 0x22 40M 100k' -c 'write -P 0x33 63M 1M' " +
        sh_quote(p));
    return p;
}

// A loop device over a file filled with stale bytes (what an old LV holds), detached on destruction.
struct LoopDevice {
    std::string dev;
    std::string backing;
    LoopDevice(const vt::TempDir& t, const std::string& size) {
        backing = t / ("loop-" + size + ".img");
        vt::sh("truncate -s " + size + " " + sh_quote(backing));
        vt::sh("tr '\\0' '\\253' < /dev/zero | head -c $(stat -c %s " + sh_quote(backing) + ") > " + sh_quote(backing));
        auto r = run("losetup -f --show " + sh_quote(backing));
        if (r.status == 0) dev = r.output.substr(0, r.output.find('\n'));
    }
    ~LoopDevice() {
        if (!dev.empty()) (void)run("losetup -d " + dev);
    }
    explicit operator bool() const { return !dev.empty(); }
};

bool can_loop() {
    if (::geteuid() != 0 || !vt::have("losetup")) {
        MESSAGE("skipped: loop devices need root and losetup");
        return false;
    }
    return true;
}

}  // namespace

TEST_CASE("convert onto a block device: raw, qcow2 and vhdx written in place and read back by qemu-img") {
    if (!vt::need_qemu() || !can_loop()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    LoopDevice loop(t, "64M");
    if (!loop) {
        MESSAGE("skipped: no loop device could be attached");
        return;
    }
    for (std::string fmt : {"raw", "qcow2", "vhdx"}) {
        CAPTURE(fmt);
        auto r = run(vt::tool() + " convert -O " + fmt + " " + sh_quote(src) + " " + loop.dev);
        REQUIRE_MESSAGE(r.status == 0, r.output);
        CHECK(S_ISBLK(stat_of(loop.dev).st_mode));  // still the device node, not a file
        auto c = run("qemu-img compare -f raw -F " + fmt + " " + sh_quote(src) + " " + loop.dev);
        CHECK_MESSAGE(c.status == 0, c.output);
        if (fmt != "raw") {
            auto k = run("qemu-img check -f " + fmt + " " + loop.dev);
            CHECK_MESSAGE(k.status == 0, k.output);
        }
    }
    // The stale bytes under the raw image's holes were zeroed: the device reads exactly as the source.
    vt::sh(vt::tool() + " convert -O raw " + sh_quote(src) + " " + loop.dev);
    CHECK(run("cmp " + sh_quote(src) + " " + loop.dev).status == 0);
    // -n onto the device, as qemu-img -n.
    vt::sh("qemu-img convert -n -O raw " + sh_quote(src) + " " + loop.dev);
    vt::sh(vt::tool() + " convert -n -O raw " + sh_quote(src) + " " + loop.dev);
    CHECK(run("cmp " + sh_quote(src) + " " + loop.dev).status == 0);
}

TEST_CASE("convert onto a block device that is too small fails naming both sizes and writes nothing") {
    if (!vt::need_qemu() || !can_loop()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    LoopDevice loop(t, "16M");
    if (!loop) return;
    auto before = vt::sha256_file(loop.backing);
    auto r = run(vt::tool() + " convert -O raw " + sh_quote(src) + " " + loop.dev);
    CHECK(r.status == 1);
    CHECK(r.output.find("67108864") != std::string::npos);
    CHECK(r.output.find("16777216") != std::string::npos);
    CHECK(r.output.find(loop.dev) != std::string::npos);
    CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
    CHECK(vt::sha256_file(loop.backing) == before);
    CHECK(S_ISBLK(stat_of(loop.dev).st_mode));
}

TEST_CASE("convert through a symbolic link writes the file it leads to - the link stays a link") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    vt::sh("mkdir " + sh_quote(t / "real"));
    REQUIRE(::symlink("real/disk.qcow2", (t / "link.qcow2").c_str()) == 0);
    // Dangling link: the file is created where it points, as qemu-img (open through the link) does.
    vt::sh(vt::tool() + " convert -O qcow2 " + sh_quote(src) + " " + sh_quote(t / "link.qcow2"));
    CHECK(S_ISLNK(stat_of(t / "link.qcow2").st_mode));
    CHECK(S_ISREG(stat_of(t / "real/disk.qcow2").st_mode));
    vt::expect_qemu_compare(src, t / "real/disk.qcow2");
    // Existing link target: rewritten, link intact, and no temporary file left anywhere.
    vt::sh(vt::tool() + " convert -O raw " + sh_quote(src) + " " + sh_quote(t / "link.qcow2"));
    CHECK(S_ISLNK(stat_of(t / "link.qcow2").st_mode));
    CHECK(run("cmp " + sh_quote(src) + " " + sh_quote(t / "real/disk.qcow2")).status == 0);
    CHECK_FALSE(temp_left(t.path));
    CHECK_FALSE(temp_left(t / "real"));
}

TEST_CASE("convert over an existing file keeps its owner, group and mode - hard links and xattrs keep the inode") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    std::string dst = t / "owned.qcow2";
    vt::sh("touch " + sh_quote(dst) + " && chmod 640 " + sh_quote(dst));
    if (::geteuid() == 0) vt::sh("chown nobody:nogroup " + sh_quote(dst));
    const auto before = stat_of(dst);
    vt::sh(vt::tool() + " convert -O qcow2 " + sh_quote(src) + " " + sh_quote(dst));
    const auto after = stat_of(dst);
    CHECK(after.st_uid == before.st_uid);
    CHECK(after.st_gid == before.st_gid);
    CHECK((after.st_mode & 07777) == 0640);
    vt::expect_qemu_compare(src, dst);

    // A second link: written in place (the inode and the other name see the new image), as qemu-img does.
    std::string other = t / "other-name.qcow2";
    REQUIRE(::link(dst.c_str(), other.c_str()) == 0);
    const auto ino = stat_of(dst).st_ino;
    vt::sh(vt::tool() + " convert -O raw " + sh_quote(src) + " " + sh_quote(dst));
    CHECK(stat_of(dst).st_ino == ino);
    CHECK(run("cmp " + sh_quote(src) + " " + sh_quote(other)).status == 0);

    // Extended attributes (ACLs, security labels) cannot be carried over by a rename: in place.
    std::string x = t / "xattr.raw";
    vt::sh("touch " + sh_quote(x));
    if (run("python3 -c 'import os,sys; os.setxattr(sys.argv[1], \"user.vdisk\", b\"1\")' " + sh_quote(x)).status ==
        0) {
        const auto xi = stat_of(x).st_ino;
        vt::sh(vt::tool() + " convert -O raw " + sh_quote(src) + " " + sh_quote(x));
        CHECK(stat_of(x).st_ino == xi);
        CHECK(
            run("python3 -c 'import os,sys; assert os.getxattr(sys.argv[1], \"user.vdisk\") == b\"1\"' " + sh_quote(x))
                .status == 0);
        CHECK(run("cmp " + sh_quote(src) + " " + sh_quote(x)).status == 0);
    }
}

TEST_CASE("an unprivileged user converts into a writable file in a directory it cannot write, as with qemu-img") {
    if (!vt::need_qemu()) return;
    if (::geteuid() != 0 || !vt::have("setpriv")) {
        MESSAGE("skipped: needs root to switch to an unprivileged user");
        return;
    }
    vt::TempDir t;
    std::string src = make_source(t);
    std::string dir = t / "ro";
    vt::sh("mkdir " + sh_quote(dir) + " && chmod 755 " + sh_quote(t.path) + " " + sh_quote(dir) + " && chmod 644 " +
           sh_quote(src));
    std::string dst = dir + "/disk.raw";
    vt::sh("touch " + sh_quote(dst) + " && chown nobody " + sh_quote(dst));
    auto as_nobody = [&](const std::string& cmd) {
        return run("setpriv --reuid=nobody --regid=nogroup --clear-groups " + cmd);
    };
    if (as_nobody(vt::tool() + " --version").status != 0) {
        MESSAGE("skipped: the built tool is not reachable by user nobody");
        return;
    }
    auto q = as_nobody("qemu-img convert -O raw " + sh_quote(src) + " " + sh_quote(dst));
    REQUIRE_MESSAGE(q.status == 0, q.output);
    vt::sh("truncate -s 0 " + sh_quote(dst));
    auto r = as_nobody(vt::tool() + " convert -O raw " + sh_quote(src) + " " + sh_quote(dst));
    CHECK_MESSAGE(r.status == 0, r.output);
    CHECK(run("cmp " + sh_quote(src) + " " + sh_quote(dst)).status == 0);
    CHECK(stat_of(dst).st_uid != 0);
}

TEST_CASE("SIGINT, SIGTERM and SIGHUP stop a convert cleanly: exit 128+n, target untouched, no temporary file") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = t / "rnd.raw";
    vt::sh("head -c 24M /dev/urandom > " + sh_quote(src));
    std::string dst = t / "keep.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(dst) + " 1M");
    const auto before = vt::sha256_file(dst);
    int n = 0;
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
        // Rate-limited to ~8 s so that each signal lands mid-copy, at a different point each time.
        for (int delay_ms : {150, 700}) {
            CAPTURE(sig);
            CAPTURE(delay_ms);
            auto r = run("(" + vt::tool() + " convert -r 3M -O qcow2 " + sh_quote(src) + " " + sh_quote(dst) +
                         " & pid=$!; sleep " + std::to_string(delay_ms / 1000.0) + "; kill -" + std::to_string(sig) +
                         " $pid; wait $pid)");
            CHECK(r.status == 128 + sig);
            CHECK(r.output.find("interrupted") != std::string::npos);
            CHECK(vt::sha256_file(dst) == before);
            CHECK_FALSE(temp_left(t.path));
            ++n;
        }
    }
    CHECK(n == 6);
}

TEST_CASE("convert -S: 0 allocates everything and larger sizes leave only long zero runs sparse, as qemu-img") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    // Where each file holds data (SEEK_DATA/SEEK_HOLE): block counts also include the file system's own
    // extent blocks, which differ between two equally sparse files.
    auto blocks = [&](const std::string& p) {
        return run("python3 -c 'import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY); end=os.fstat(fd).st_size; o=0\n"
                   "while o<end:\n    try: d=os.lseek(fd,o,os.SEEK_DATA)\n    except OSError: break\n"
                   "    o=os.lseek(fd,d,os.SEEK_HOLE); print(d,o)' " +
                   sh_quote(p))
            .output;
    };
    for (std::string s : {"0", "4k", "64k", "1M"}) {
        CAPTURE(s);
        vt::sh("qemu-img convert -S " + s + " -O raw " + sh_quote(src) + " " + sh_quote(t / "q.raw"));
        vt::sh(vt::tool() + " convert -S " + s + " -O raw " + sh_quote(src) + " " + sh_quote(t / "v.raw"));
        CHECK(run("cmp " + sh_quote(t / "q.raw") + " " + sh_quote(t / "v.raw")).status == 0);
        CHECK(blocks(t / "v.raw") == blocks(t / "q.raw"));
    }
    // qcow2 with -S 0: every cluster allocated, as qemu-img's.
    vt::sh("qemu-img convert -S 0 -O qcow2 " + sh_quote(src) + " " + sh_quote(t / "q.qcow2"));
    vt::sh(vt::tool() + " convert -S 0 -O qcow2 " + sh_quote(src) + " " + sh_quote(t / "v.qcow2"));
    vt::expect_qemu_compare(src, t / "v.qcow2");
    auto map_data = [&](const std::string& p) {
        return run("qemu-img map --output=json " + sh_quote(p) + " | grep -c '\"data\": true'").output;
    };
    CHECK(map_data(t / "v.qcow2") == map_data(t / "q.qcow2"));
    auto bad = run(vt::tool() + " convert -S 1000 -O raw " + sh_quote(src) + " " + sh_quote(t / "x.raw"));
    CHECK(bad.status == 1);
    CHECK(bad.output.find("multiples of 512") != std::string::npos);
}

TEST_CASE("convert -t none / -T none / writethrough / unsafe give qemu-img's content") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    for (std::string mode : {"none", "directsync", "writethrough", "unsafe", "writeback"}) {
        CAPTURE(mode);
        auto r = run(vt::tool() + " convert -t " + mode + " -T " + mode + " -O qcow2 " + sh_quote(src) + " " +
                     sh_quote(t / "c.qcow2"));
        if (r.status != 0 && r.output.find("O_DIRECT") != std::string::npos) {
            MESSAGE("O_DIRECT refused by this file system: " << r.output);
            continue;
        }
        REQUIRE_MESSAGE(r.status == 0, r.output);
        vt::expect_qemu_compare(src, t / "c.qcow2");
        vt::expect_qemu_check(t / "c.qcow2");
    }
    auto bad = run(vt::tool() + " convert -t bogus -O raw " + sh_quote(src) + " " + sh_quote(t / "x.raw"));
    CHECK(bad.status == 1);
    CHECK(bad.output.find("Invalid cache option: bogus") != std::string::npos);
}

TEST_CASE("convert -B writes only what differs from the backing file, -n writes into an existing image") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    std::string base = t / "base.qcow2";
    // The base holds part of the source and other data where the source has zeros.
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(base) + " 64M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 0x11 5M 3M' -c 'write -P 0x77 20M 2M' -c 'write -P 0x5a 0 64k' " +
           sh_quote(base));
    for (std::string flags : {"", "-c "}) {
        CAPTURE(flags);
        std::string out = t / "overlay.qcow2", qout = t / "qoverlay.qcow2";
        vt::sh(vt::tool() + " convert " + flags + "-B base.qcow2 -F qcow2 -O qcow2 " + sh_quote(src) + " " +
               sh_quote(out));
        vt::sh("qemu-img convert " + flags + "-B base.qcow2 -F qcow2 -O qcow2 " + sh_quote(src) + " " + sh_quote(qout));
        auto info = run("qemu-img info --output=json " + sh_quote(out)).output;
        CHECK(info.find("\"backing-filename\": \"base.qcow2\"") != std::string::npos);
        vt::expect_qemu_compare(src, out);
        vt::expect_qemu_check(out);
        // Nothing of the 3 MiB the base already holds is copied: the overlay is no larger than qemu-img's.
        auto alloc = [&](const std::string& p) {
            return run("qemu-img map --output=json " + sh_quote(p) +
                       " | python3 -c 'import json,sys; print(sum(e[\"length\"] for e in json.load(sys.stdin) if e[\"depth\"]==0 and e[\"present\"]))'")
                .output;
        };
        CHECK(std::stoull(alloc(out)) <= std::stoull(alloc(qout)));
    }
    // -n: an existing image full of other data; zeros of the source are zeroed in it.
    std::string ex = t / "existing.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(ex) + " 64M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 0x99 0 64M' " + sh_quote(ex));
    vt::sh(vt::tool() + " convert -n -O qcow2 " + sh_quote(src) + " " + sh_quote(ex));
    vt::expect_qemu_compare(src, ex);
    vt::expect_qemu_check(ex);
    // --target-is-zero on a fresh (zero) image: the same content; without -n it is refused as by qemu-img.
    std::string z = t / "zero.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(z) + " 64M");
    vt::sh(vt::tool() + " convert -n --target-is-zero -O qcow2 " + sh_quote(src) + " " + sh_quote(z));
    vt::expect_qemu_compare(src, z);
    auto r = run(vt::tool() + " convert --target-is-zero -O qcow2 " + sh_quote(src) + " " + sh_quote(z));
    CHECK(r.status == 1);
    CHECK(r.output.find("requires use of -n") != std::string::npos);
    // -n into a smaller or missing target fails as qemu-img does.
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(t / "small.qcow2") + " 1M");
    CHECK(run(vt::tool() + " convert -n -O qcow2 " + sh_quote(src) + " " + sh_quote(t / "small.qcow2")).status == 1);
    CHECK(run(vt::tool() + " convert -n -O qcow2 " + sh_quote(src) + " " + sh_quote(t / "missing.qcow2")).status == 1);
}

TEST_CASE("convert with several sources concatenates them as qemu-img does - -W -c gives the same image") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    std::string q2 = t / "b.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(q2) + " 3M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 0x42 1M 1M' " + sh_quote(q2));
    vt::sh("qemu-img convert -O raw " + sh_quote(src) + " " + sh_quote(q2) + " " + sh_quote(src) + " " +
           sh_quote(t / "q.raw"));
    vt::sh(vt::tool() + " convert -O qcow2 " + sh_quote(src) + " " + sh_quote(q2) + " " + sh_quote(src) + " " +
           sh_quote(t / "v.qcow2"));
    CHECK(run("qemu-img compare -f raw -F qcow2 " + sh_quote(t / "q.raw") + " " + sh_quote(t / "v.qcow2")).status == 0);
    vt::sh(vt::tool() + " convert -W -c -m 2 -O qcow2 " + sh_quote(src) + " " + sh_quote(t / "w.qcow2"));
    vt::expect_qemu_compare(src, t / "w.qcow2");
    vt::expect_qemu_check(t / "w.qcow2");
}

TEST_CASE("convert to a pipe refuses a format that cannot stream before writing a byte - character devices take raw") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string src = make_source(t);
    // vdisk's stderr through a file: run()'s own 2>&1 would apply to wc alone
    const std::string err = t / "err";
    auto r = run(vt::tool() + " convert -O qcow2 " + sh_quote(src) + " - 2>" + sh_quote(err) + " | wc -c; cat " +
                 sh_quote(err));
    CHECK(r.output.find("0\n") != std::string::npos);
    CHECK(r.output.find("written strictly forward") != std::string::npos);
    auto n = run(vt::tool() + " convert -O raw " + sh_quote(src) + " /dev/null");
    CHECK_MESSAGE(n.status == 0, n.output);
    CHECK(S_ISCHR(stat_of("/dev/null").st_mode));
    CHECK(run(vt::tool() + " convert -O vhdx " + sh_quote(src) + " /dev/null").status == 1);
    // A FIFO: raw streamed through it byte for byte.
    std::string fifo = t / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    auto f = run("(cat " + sh_quote(fifo) + " > " + sh_quote(t / "via-fifo.raw") + " &) ; " + vt::tool() +
                 " convert -O raw " + sh_quote(src) + " " + sh_quote(fifo) + " && sleep 0.5 && cmp " + sh_quote(src) +
                 " " + sh_quote(t / "via-fifo.raw"));
    CHECK_MESSAGE(f.status == 0, f.output);
}

TEST_CASE("errors name the user's target, never the temporary file") {
    vt::TempDir t;
    std::string src = t / "s.raw";
    vt::sh("head -c 4M /dev/urandom > " + sh_quote(src));
    // A 1 MiB file size limit makes the write fail with EFBIG.
    auto r = run("trap '' XFSZ; ulimit -f 1024; " + vt::tool() + " convert -O raw " + sh_quote(src) + " " +
                 sh_quote(t / "big.raw"));
    CHECK(r.status == 1);
    CHECK(r.output.find("big.raw") != std::string::npos);
    CHECK(r.output.find("big.raw.vdisk-") == std::string::npos);
    CHECK_FALSE(temp_left(t.path));
}

TEST_CASE("check -r leaks repairs, checks again and exits as qemu-img does") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    std::string img = t / "l.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(img) + " 4M");
    vt::sh("qemu-io -f qcow2 -c 'write -P 1 0 300k' -c 'discard 64k 128k' " + sh_quote(img));
    // Mark two free clusters used: two leaks.
    vt::write_file(t / "leak.py", {});
    std::string py =
        "import struct,sys\n"
        "b=bytearray(open(sys.argv[1],'rb').read())\n"
        "rt=struct.unpack('>Q',b[48:56])[0]; rb=struct.unpack('>Q',b[rt:rt+8])[0]; n=0\n"
        "for c in range(len(b)//65536):\n"
        "    if n<2 and struct.unpack('>H',b[rb+2*c:rb+2*c+2])[0]==0:\n"
        "        b[rb+2*c:rb+2*c+2]=struct.pack('>H',1); n+=1\n"
        "open(sys.argv[1],'wb').write(b)\n";
    vt::write_file(t / "leak.py", std::vector<uint8_t>(py.begin(), py.end()));
    vt::sh("python3 " + sh_quote(t / "leak.py") + " " + sh_quote(img));
    vt::sh("cp " + sh_quote(img) + " " + sh_quote(t / "q.qcow2"));
    CHECK(run(vt::tool() + " check " + sh_quote(img)).status == 3);
    // Standard output only: both print their findings on stderr (qemu-img adds "Repairing ..." lines).
    auto q = run("(qemu-img check -r leaks " + sh_quote(t / "q.qcow2") + " 2>/dev/null)");
    auto v = run("(" + vt::tool() + " check -r leaks " + sh_quote(img) + " 2>/dev/null)");
    CHECK(v.status == q.status);
    CHECK(v.status == 0);
    CHECK(v.output == q.output);
    auto j = run(vt::tool() + " check --output=json " + sh_quote(img));
    CHECK(j.status == 0);
}

TEST_CASE("resize accepts a negative size as its last argument, as qemu-img") {
    if (!vt::need_qemu()) return;
    vt::TempDir t;
    vt::sh("qemu-img create -q -f raw " + sh_quote(t / "a.raw") + " 64M");
    vt::sh("qemu-img create -q -f raw " + sh_quote(t / "b.raw") + " 64M");
    vt::sh("qemu-img resize -q -f raw --shrink " + sh_quote(t / "a.raw") + " -10M");
    vt::sh(vt::tool() + " resize -q -f raw --shrink " + sh_quote(t / "b.raw") + " -10M");
    CHECK(stat_of(t / "a.raw").st_size == stat_of(t / "b.raw").st_size);
    CHECK(stat_of(t / "b.raw").st_size == (54ll << 20));
    vt::sh(vt::tool() + " resize -q -f raw --preallocation=full " + sh_quote(t / "b.raw") + " +8M");
    vt::sh("qemu-img resize -q -f raw --preallocation=full " + sh_quote(t / "a.raw") + " +8M");
    CHECK(stat_of(t / "b.raw").st_blocks == stat_of(t / "a.raw").st_blocks);
}

TEST_CASE("every qemu-img 7.2 flag vdisk does not implement is refused in one line, never ignored") {
    vt::TempDir t;
    std::string src = t / "s.raw";
    vt::sh("truncate -s 1M " + sh_quote(src));
    const std::vector<std::string> refused = {
        "convert -C -O raw {S} {D}",
        "convert --bitmaps -O raw {S} {D}",
        "convert --skip-broken-bitmaps -O raw {S} {D}",
        "convert --object secret,id=a,data=b -O raw {S} {D}",
        "info --object secret,id=a,data=b {S}",
        "check --object secret,id=a,data=b {S}",
        "map --object secret,id=a,data=b {S}",
        "create --object x -f raw {D} 1M",
        "compare --object x {S} {S}",
        "resize --object x {S} 2M",
        "bench -w {S}",
        "bench -n {S}",
        "bench -i native {S}",
        "bench -d 4 {S}",
        "bench --pattern=1 {S}",
        "bench --flush-interval=1 {S}",
        "bench --no-drain {S}",
        "convert -F qcow2 -O raw {S} {D}",
        "resize --preallocation=bogus {S} 2M",
    };
    for (auto cmd : refused) {
        CAPTURE(cmd);
        for (auto [k, v] :
             std::vector<std::pair<std::string, std::string>>{{"{S}", sh_quote(src)}, {"{D}", sh_quote(t / "d.raw")}})
            for (size_t p; (p = cmd.find(k)) != std::string::npos;) cmd.replace(p, k.size(), v);
        auto r = run(vt::tool() + " " + cmd);
        CHECK(r.status == (cmd.rfind("compare", 0) == 0 ? 2 : 1));  // compare's errors exit 2, as qemu-img's
        CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
        CHECK_FALSE(run("test -e " + sh_quote(t / "d.raw")).status == 0);
    }
    // -o help lists each option once.
    for (std::string fmt : {"qcow2", "vmdk", "raw", "vhd", "vhdx", "vdi"}) {
        auto h = run(vt::tool() + " create -f " + fmt + " -o help");
        CHECK(h.status == 0);
        size_t count = 0;
        for (size_t p = 0; (p = h.output.find("\n  size ", p)) != std::string::npos; ++p) ++count;
        CHECK_MESSAGE(count == 1, fmt << ": " << h.output);
    }
    // Per-command help explains every option.
    auto help = run(vt::tool() + " convert --help");
    for (std::string opt :
         {"-n ", "--target-is-zero", "-B BACKING", "-S SIZE", "-t CACHE", "-W ", "-r RATE", "--salvage"})
        CHECK_MESSAGE(help.output.find(opt) != std::string::npos, opt);
}

TEST_CASE("image locks as qemu's: an image qemu uses is refused unless -U, and qemu cannot write what vdisk reads") {
    if (!vt::need_qemu() || !vt::have("qemu-io")) return;
    vt::TempDir t;
    std::string img = t / "busy.qcow2";
    vt::sh("qemu-img create -q -f qcow2 " + sh_quote(img) + " 16M");
    // qemu-io keeps the image open read-write (as a running VM does) for a few seconds.
    auto r = run("(qemu-io -f qcow2 -c 'sleep 3000' " + sh_quote(img) + " & sleep 0.7; " + vt::tool() + " info " +
                 sh_quote(img) + "; echo \"info=$?\"; " + vt::tool() + " info -U " + sh_quote(img) +
                 " >/dev/null; echo \"shared=$?\"; " + vt::tool() + " convert -n -O qcow2 " + sh_quote(img) + " " +
                 sh_quote(img) + "2 ; wait)");
    CHECK(r.output.find("info=1") != std::string::npos);
    CHECK(r.output.find("Failed to get shared \"write\" lock") != std::string::npos);
    CHECK(r.output.find("shared=0") != std::string::npos);
    // The other way round: while vdisk reads a source, qemu-io cannot open it for writing.
    std::string src = t / "rnd.raw";
    vt::sh("head -c 8M /dev/urandom > " + sh_quote(src));
    auto w = run("(" + vt::tool() + " convert -r 2M -O raw " + sh_quote(src) + " " + sh_quote(t / "out.raw") +
                 " & sleep 0.7; qemu-io -f raw -c 'write 0 4k' " + sh_quote(src) + "; echo \"qemu=$?\"; wait)");
    CHECK(w.output.find("Failed to get \"write\" lock") != std::string::npos);
    CHECK(w.output.find("qemu=1") != std::string::npos);
    CHECK(run("cmp " + sh_quote(src) + " " + sh_quote(t / "out.raw")).status == 0);
}
