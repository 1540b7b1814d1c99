// SPDX-License-Identifier: Apache-2.0
// FileSystem over the host: positional I/O, SEEK_DATA/SEEK_HOLE, fallocate hole punching.
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "vdisk/io.hpp"

namespace vdisk {
namespace {

Error os_error(int err, std::string_view what, const std::string& name) {
    ErrorCode code = ErrorCode::io;
    if (err == ENOENT) code = ErrorCode::not_found;
    else if (err == EACCES || err == EPERM || err == EEXIST) code = ErrorCode::access_denied;
    Error e = make_error(code, std::string(what) + ": " + std::strerror(err));
    e.file = name;
    return e;
}

// Files this process holds QEMU locks on, by identity. OFD locks of one process conflict with each other
// just as with another process's, but one command may open a file twice (commit: the base as a backing
// layer, then to write into it): the second open of a file we already hold takes its locks without testing
// for conflicts, as qemu reopening an image with other permissions does.
struct LockTable {
    std::mutex mu;
    std::map<std::pair<uint64_t, uint64_t>, int> held;
};

class PosixFile final : public File {
public:
    PosixFile(int fd, std::string name, bool read_only, PosixOptions opts = {})
        : fd_(fd), name_(std::move(name)), read_only_(read_only), opts_(opts) {
        struct stat st {};
        if (::fstat(fd_, &st) == 0) {
            id_ = FileIdentity{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
            block_device_ = S_ISBLK(st.st_mode);
        }
    }
    ~PosixFile() override {
        ::close(fd_);
        if (locks_) {
            std::lock_guard l(locks_->mu);
            if (--locks_->held[{id_.device, id_.inode}] <= 0) locks_->held.erase({id_.device, id_.inode});
        }
    }
    // Registered in `table` as holding this file's locks (released on destruction).
    void hold_locks(std::shared_ptr<LockTable> table) { locks_ = std::move(table); }

    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
        if (opts_.direct) return read_aligned(offset, buf);
        if (read_only_ && buf.size() <= kSmallRead) return read_small(offset, buf);
        return read_direct(offset, buf);
    }

    Result<size_t> read_direct(uint64_t offset, std::span<uint8_t> buf) {
        size_t done = 0;
        while (done < buf.size()) {
            ssize_t n = ::pread(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                Error e = os_error(errno, "read", name_);
                e.offset = offset + done;
                return e;
            }
            if (n == 0) break;
            done += static_cast<size_t>(n);
        }
        return done;
    }

    Status write_at(uint64_t offset, std::span<const uint8_t> buf) override {
        if (opts_.direct) {
            VDISK_TRY(write_aligned(offset, buf));
        } else {
            VDISK_TRY(write_plain(offset, buf));
        }
        if (opts_.write_through) return sync();
        return ok();
    }

    Status write_plain(uint64_t offset, std::span<const uint8_t> buf) {
        size_t done = 0;
        while (done < buf.size()) {
            ssize_t n = ::pwrite(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                Error e = os_error(errno, "write", name_);
                e.offset = offset + done;
                return e;
            }
            done += static_cast<size_t>(n);
        }
        start_writeback(offset, buf.size());
        return ok();
    }

    Result<uint64_t> size() override {
        struct stat st {};
        if (::fstat(fd_, &st) != 0) return os_error(errno, "stat", name_);
        if (S_ISBLK(st.st_mode)) {
            off_t end = ::lseek(fd_, 0, SEEK_END);
            if (end < 0) return os_error(errno, "seek", name_);
            return static_cast<uint64_t>(end);
        }
        return static_cast<uint64_t>(st.st_size);
    }

    Status resize(uint64_t new_size) override {
        if (::ftruncate(fd_, static_cast<off_t>(new_size)) != 0) return os_error(errno, "truncate", name_);
        return ok();
    }

    Status sync() override {
        if (::fdatasync(fd_) != 0 && errno != EINVAL && errno != EROFS) return os_error(errno, "sync", name_);
        return ok();
    }

    // Zeroing without writing zeros where the host can: a hole in a file; on a block device the kernel
    // turns PUNCH_HOLE into a discard that guarantees zeros and ZERO_RANGE into the device's write-zeroes
    // command (or its own zero writes). Anything else: written zeros.
    Status punch_hole(uint64_t offset, uint64_t len) override {
        if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                        static_cast<off_t>(len)) == 0)
            return ok();
        if (::fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                        static_cast<off_t>(len)) == 0)
            return ok();
        if (block_device_) {
            uint64_t range[2] = {offset, len};
            if (::ioctl(fd_, BLKZEROOUT, range) == 0) return ok();
        }
        return File::punch_hole(offset, len);
    }

    Status allocate(uint64_t offset, uint64_t len) override {
        int r = ::posix_fallocate(fd_, static_cast<off_t>(offset), static_cast<off_t>(len));
        if (r != 0 && r != EOPNOTSUPP && r != EINVAL) return os_error(r, "fallocate", name_);
        return ok();
    }

    Result<std::optional<DataRange>> next_data(uint64_t offset) override {
        VDISK_ASSIGN(uint64_t sz, size());
        if (offset >= sz) return std::optional<DataRange>{};
        off_t d = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
        if (d < 0) {
            if (errno == ENXIO) return std::optional<DataRange>{};
            return File::next_data(offset);  // no SEEK_DATA support: all data
        }
        off_t h = ::lseek(fd_, d, SEEK_HOLE);
        if (h < 0) h = static_cast<off_t>(sz);
        return std::optional<DataRange>(DataRange{static_cast<uint64_t>(d), static_cast<uint64_t>(h)});
    }

    std::optional<uint64_t> allocated_size() override {
        struct stat st {};
        if (::fstat(fd_, &st) != 0) return std::nullopt;
        return static_cast<uint64_t>(st.st_blocks) * 512;
    }

    const std::string& name() const override { return name_; }
    FileIdentity identity() const override { return id_; }

private:
    // O_DIRECT wants the buffer, offset and length aligned to the device's logical block; 4096 covers
    // 512-byte and 4K-native storage alike. Callers of File may ask for any range, so direct files go
    // through an aligned bounce buffer of at most kBounce bytes at a time.
    static constexpr uint64_t kAlign = 4096;
    static constexpr uint64_t kBounce = 4u << 20;
    struct FreeDeleter {
        void operator()(uint8_t* p) const { std::free(p); }
    };
    using Bounce = std::unique_ptr<uint8_t, FreeDeleter>;
    static Bounce bounce(size_t n) {
        void* p = nullptr;
        if (::posix_memalign(&p, kAlign, n) != 0) return nullptr;
        return Bounce(static_cast<uint8_t*>(p));
    }

    Result<size_t> read_aligned(uint64_t offset, std::span<uint8_t> buf) {
        size_t done = 0;
        Bounce b = bounce(kBounce);
        if (!b) return os_error(ENOMEM, "read", name_);
        while (done < buf.size()) {
            const uint64_t pos = offset + done;
            const uint64_t start = pos & ~(kAlign - 1);
            const uint64_t want = std::min<uint64_t>(kBounce,
                                                     ((pos + (buf.size() - done) + kAlign - 1) & ~(kAlign - 1)) -
                                                         start);
            VDISK_ASSIGN(size_t got, read_direct(start, std::span<uint8_t>(b.get(), static_cast<size_t>(want))));
            if (got <= pos - start) break;  // end of file
            size_t n = std::min<size_t>(got - static_cast<size_t>(pos - start), buf.size() - done);
            std::memcpy(buf.data() + done, b.get() + (pos - start), n);
            done += n;
            if (got < want) break;
        }
        return done;
    }

    Status write_aligned(uint64_t offset, std::span<const uint8_t> buf) {
        Bounce b = bounce(kBounce);
        if (!b) return os_error(ENOMEM, "write", name_);
        VDISK_ASSIGN(uint64_t old_size, size());
        size_t done = 0;
        while (done < buf.size()) {
            const uint64_t pos = offset + done;
            const uint64_t start = pos & ~(kAlign - 1);
            const uint64_t end = std::min<uint64_t>(start + kBounce,
                                                    (pos + (buf.size() - done) + kAlign - 1) & ~(kAlign - 1));
            const size_t n = static_cast<size_t>(std::min<uint64_t>(end - pos, buf.size() - done));
            std::span<uint8_t> blk(b.get(), static_cast<size_t>(end - start));
            // Partial blocks at either edge keep the bytes around the caller's range.
            if (pos != start || pos + n != end) {
                std::memset(blk.data(), 0, blk.size());
                VDISK_TRY(read_direct(start, blk));
            }
            std::memcpy(blk.data() + (pos - start), buf.data() + done, n);
            VDISK_TRY(write_plain(start, blk));
            done += n;
        }
        // A write ending inside a block wrote the whole block: give a regular file back its true length.
        const uint64_t want_size = std::max(old_size, offset + buf.size());
        if (!block_device_) {
            VDISK_ASSIGN(uint64_t now, size());
            if (now > want_size && ::ftruncate(fd_, static_cast<off_t>(want_size)) != 0)
                return os_error(errno, "truncate", name_);
        }
        return ok();
    }

    // Small sequential reads of a read-only file (a library reading 4 KiB at a time, qemu-img bench's
    // pattern) are served from a read-ahead window: on this kind of machine a system call costs more than
    // the lookup and copy together. Random small reads and large reads go straight to pread, so converts
    // (which read in large windows) pay nothing for it. Writable files never buffer: no staleness to manage.
    // Large outputs (a convert writes gigabytes) are made durable at the end by one flush, which then waits
    // for the whole file to reach the disk. Asking the kernel to start writing back every 32 MiB as it is
    // written lets the disk work while the conversion still reads and compresses; it never waits and
    // changes no data, and the final flush is what guarantees durability.
    static constexpr uint64_t kWritebackChunk = 32ull << 20;
    void start_writeback(uint64_t offset, size_t len) {
        std::lock_guard lock(wb_mu_);
        wb_lo_ = std::min(wb_lo_, offset);
        wb_hi_ = std::max(wb_hi_, offset + len);
        wb_pending_ += len;
        if (wb_pending_ < kWritebackChunk) return;
        (void)::sync_file_range(fd_, static_cast<off_t>(wb_lo_), static_cast<off_t>(wb_hi_ - wb_lo_),
                                SYNC_FILE_RANGE_WRITE);
        wb_lo_ = UINT64_MAX;
        wb_hi_ = 0;
        wb_pending_ = 0;
    }

    static constexpr size_t kSmallRead = 16 << 10;
    static constexpr size_t kReadAhead = 256 << 10;

    Result<size_t> read_small(uint64_t offset, std::span<uint8_t> buf) {
        // A random read (neither where the last one ended nor inside the window) goes to pread without taking
        // the lock: small random reads from several threads must not queue behind one another. The hints are
        // read unlocked; a stale one only sends a read down the other path, which is just as correct.
        const auto relaxed = std::memory_order_relaxed;
        if (offset != last_end_.load(relaxed) &&
            (offset < win_start_.load(relaxed) || offset >= win_end_.load(relaxed))) {
            last_end_.store(offset + buf.size(), relaxed);
            return read_direct(offset, buf);
        }
        std::unique_lock lock(ra_mu_);
        auto serve = [&]() -> std::optional<size_t> {
            if (ra_.empty() || offset < ra_start_ || offset - ra_start_ >= ra_.size()) return std::nullopt;
            size_t at = static_cast<size_t>(offset - ra_start_);
            size_t n = std::min(buf.size(), ra_.size() - at);
            if (n < buf.size() && ra_.size() == kReadAhead) return std::nullopt;  // crosses the window's end
            std::memcpy(buf.data(), ra_.data() + at, n);
            last_end_.store(offset + n, relaxed);
            return n;
        };
        if (auto n = serve()) return *n;
        if (offset != last_end_.load(relaxed)) {  // not sequential: no read-ahead
            last_end_.store(offset + buf.size(), relaxed);
            lock.unlock();
            return read_direct(offset, buf);
        }
        win_end_.store(0, relaxed);
        ra_.resize(kReadAhead);
        auto got = read_direct(offset, ra_);
        if (!got) {
            ra_.clear();
            return got;
        }
        ra_.resize(*got);
        ra_start_ = offset;
        win_start_.store(offset, relaxed);
        win_end_.store(offset + *got, relaxed);
        if (auto n = serve()) return *n;
        return size_t{0};
    }

    int fd_;
    std::string name_;
    FileIdentity id_;
    bool read_only_;
    PosixOptions opts_;
    bool block_device_ = false;
    std::shared_ptr<LockTable> locks_;
    std::mutex ra_mu_, wb_mu_;
    uint64_t wb_lo_ = UINT64_MAX, wb_hi_ = 0, wb_pending_ = 0;
    std::vector<uint8_t> ra_;  // the read-ahead window, under ra_mu_
    uint64_t ra_start_ = 0;
    // Unlocked hints for read_small: where the last small read ended and what the window covers. Their own
    // cache line: every reader writes last_end_.
    alignas(64) std::atomic<uint64_t> last_end_{UINT64_MAX};
    std::atomic<uint64_t> win_start_{0}, win_end_{0};
};

// QEMU's image locking protocol (block/file-posix.c): one byte per permission at 100 + bit says "I hold it",
// one at 200 + bit says "I do not let others hold it". Both are shared (read) locks on open file
// descriptions, so they vanish when the descriptor is closed or the process dies. Permission bits:
// consistent read, write, write unchanged, resize.
constexpr off_t kLockPermBase = 100, kLockSharedBase = 200;
constexpr const char* kPermNames[] = {"consistent read", "write", "write unchanged", "resize"};
constexpr unsigned kPermRead = 1, kPermWrite = 2, kPermWriteUnchanged = 4, kPermResize = 8, kPermAll = 15;

Status apply_qemu_locks(int fd, bool read_write, const std::string& name, bool test_conflicts) {
    // What qemu-img itself asks for: a reader needs consistent reads and lets nobody write or resize; a
    // writer also writes and resizes, and lets others only read or write unchanged data.
    const unsigned perm = read_write ? (kPermRead | kPermWrite | kPermResize) : kPermRead;
    const unsigned shared = kPermRead | kPermWriteUnchanged;
    auto lock_byte = [&](off_t off) {
        struct flock fl {};
        fl.l_type = F_RDLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = off;
        fl.l_len = 1;
        return ::fcntl(fd, F_OFD_SETLK, &fl) == 0 || errno == EINVAL || errno == ENOLCK;  // no lock support: go on
    };
    auto someone_holds = [&](off_t off) {
        struct flock fl {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = off;
        fl.l_len = 1;
        return ::fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    };
    auto conflict = [&](const std::string& what) {
        Error e = make_error(ErrorCode::access_denied, "Failed to get " + what +
                                                           " lock: is another process using the image? (-U opens it "
                                                           "without locks)");
        e.file = name;
        return e;
    };
    for (unsigned bit = 0; bit < 4; ++bit) {
        const unsigned p = 1u << bit;
        if ((perm & p) && !lock_byte(kLockPermBase + bit)) return conflict(std::string("\"") + kPermNames[bit] + "\"");
        if (!(shared & p) && !lock_byte(kLockSharedBase + bit))
            return conflict(std::string("shared \"") + kPermNames[bit] + "\"");
    }
    for (unsigned bit = 0; test_conflicts && bit < 4; ++bit) {
        const unsigned p = 1u << bit;
        // Someone refuses to share what we hold, or holds what we refuse to share.
        if ((perm & p) && someone_holds(kLockSharedBase + bit))
            return conflict(std::string("\"") + kPermNames[bit] + "\"");
        if (!(shared & p) && (kPermAll & p) && someone_holds(kLockPermBase + bit))
            return conflict(std::string("shared \"") + kPermNames[bit] + "\"");
    }
    return ok();
}

class PosixFileSystem final : public FileSystem {
public:
    PosixFileSystem(std::string root, NamePolicy policy, PosixOptions opts)
        : root_(std::move(root)), policy_(policy), opts_(opts) {}

    int open_flags() const { return O_CLOEXEC | (opts_.direct ? O_DIRECT : 0); }

    Error open_error(int err, std::string_view what, std::string_view name) const {
        if (err == EINVAL && opts_.direct)
            return os_error(err,
                            std::string(what) +
                                " with O_DIRECT (cache mode none/directsync; the file system "
                                "refuses it: use another cache mode)",
                            std::string(name));
        return os_error(err, what, std::string(name));
    }

    Result<std::string> host_path(std::string_view name) const {
        if (name.empty()) return make_error(ErrorCode::invalid_argument, "empty file name");
        if (name.find('\0') != std::string_view::npos)
            return make_error(ErrorCode::invalid_argument, "file name contains a NUL byte");
        if (policy_ == NamePolicy::relative_only && escapes_directory(name)) {
            Error e = make_error(ErrorCode::access_denied, "name leaves the image directory");
            e.file = std::string(name);
            return e;
        }
        if (root_.empty() || name[0] == '/') return std::string(name);
        return root_ + "/" + std::string(name);
    }

    Result<std::unique_ptr<File>> open(std::string_view name, Access access) override {
        VDISK_ASSIGN(std::string p, host_path(name));
        int flags = (access == Access::read_write ? O_RDWR : O_RDONLY) | open_flags();
        int fd = ::open(p.c_str(), flags);
        if (fd < 0) return open_error(errno, "open", name);
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            ::close(fd);
            return os_error(EISDIR, "open", std::string(name));
        }
        const bool lock = opts_.lock && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
        if (lock)
            if (auto l = lock_file(fd, st, access == Access::read_write, name); !l) {
                ::close(fd);
                return std::move(l).error();
            }
        auto f = std::make_unique<PosixFile>(fd, std::string(name), access != Access::read_write, opts_);
        if (lock) f->hold_locks(locks_);
        return std::unique_ptr<File>(std::move(f));
    }

    // Take the locks; test for conflicts unless this process holds the file already. Counts the holder.
    Status lock_file(int fd, const struct stat& st, bool read_write, std::string_view name) {
        std::lock_guard l(locks_->mu);
        auto key = std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
        VDISK_TRY(apply_qemu_locks(fd, read_write, std::string(name), locks_->held.count(key) == 0));
        ++locks_->held[key];
        return ok();
    }

    Result<std::unique_ptr<File>> create(std::string_view name, bool exclusive) override {
        VDISK_ASSIGN(std::string p, host_path(name));
        // Truncation waits for the locks: a file another process uses is refused, not emptied first.
        int flags = O_RDWR | O_CREAT | open_flags() | (exclusive ? O_EXCL : 0);
        int fd = ::open(p.c_str(), flags, 0644);
        if (fd < 0) return open_error(errno, "create", name);
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            int err = errno;
            ::close(fd);
            return os_error(err, "stat", std::string(name));
        }
        if (opts_.lock)
            if (auto l = lock_file(fd, st, true, name); !l) {
                ::close(fd);
                return std::move(l).error();
            }
        auto f = std::make_unique<PosixFile>(fd, std::string(name), false, opts_);
        if (opts_.lock) f->hold_locks(locks_);
        if (S_ISREG(st.st_mode) && st.st_size != 0 && ::ftruncate(fd, 0) != 0)
            return os_error(errno, "truncate", std::string(name));  // `f` closes the descriptor
        return std::unique_ptr<File>(std::move(f));
    }

    Status rename(std::string_view from, std::string_view to) override {
        VDISK_ASSIGN(std::string a, host_path(from));
        VDISK_ASSIGN(std::string b, host_path(to));
        if (::rename(a.c_str(), b.c_str()) != 0)
            return os_error(errno, "rename to " + std::string(to), std::string(from));
        return ok();
    }

    Status remove(std::string_view name) override {
        VDISK_ASSIGN(std::string p, host_path(name));
        if (::unlink(p.c_str()) != 0) return os_error(errno, "remove", std::string(name));
        return ok();
    }

    bool exists(std::string_view name) override {
        auto p = host_path(name);
        if (!p) return false;
        struct stat st {};
        return ::stat(p->c_str(), &st) == 0;
    }

    Result<std::vector<std::string>> list(std::string_view dir) override {
        if (dir.find('\0') != std::string_view::npos)
            return make_error(ErrorCode::invalid_argument, "directory name contains a NUL byte");
        std::string p;
        if (dir.empty()) {
            p = root_.empty() ? "." : root_;
        } else {
            VDISK_ASSIGN(p, host_path(dir));
        }
        DIR* d = ::opendir(p.c_str());
        if (!d) return os_error(errno, "list", std::string(dir));
        std::string prefix(dir);
        if (!prefix.empty() && prefix.back() != '/') prefix += '/';
        std::vector<std::string> out;
        std::optional<Error> err;
        for (;;) {
            errno = 0;
            struct dirent* e = ::readdir(d);
            if (!e) {
                if (errno != 0) err = os_error(errno, "list", std::string(dir));
                break;
            }
            std::string_view n(e->d_name);
            if (n == "." || n == "..") continue;
            bool regular = e->d_type == DT_REG;
            if (e->d_type == DT_LNK || e->d_type == DT_UNKNOWN) {
                // Follow links: open() would follow them too.
                struct stat sb {};
                regular = ::fstatat(::dirfd(d), e->d_name, &sb, 0) == 0 && S_ISREG(sb.st_mode);
            }
            if (!regular) continue;
            if (out.size() == kMaxListEntries) {
                err = make_error(ErrorCode::limit_exceeded,
                                 "directory holds more than " + std::to_string(kMaxListEntries) + " files");
                err->file = std::string(dir);
                break;
            }
            out.push_back(prefix + std::string(n));
        }
        ::closedir(d);
        if (err) return std::move(*err);
        std::sort(out.begin(), out.end());
        return out;
    }

    Result<FileStat> stat(std::string_view name) override {
        VDISK_ASSIGN(std::string p, host_path(name));
        FileStat out;
        // Follow links one step at a time (a dangling link names the file a writer creates through it).
        struct stat st {};
        bool found = true;
        for (int hops = 0;; ++hops) {
            if (::lstat(p.c_str(), &st) != 0) {
                if (errno != ENOENT) return os_error(errno, "stat", std::string(name));
                found = false;
                break;
            }
            if (!S_ISLNK(st.st_mode)) break;
            if (hops == 40) return os_error(ELOOP, "stat", std::string(name));
            std::string link(4096, '\0');
            ssize_t n = ::readlink(p.c_str(), link.data(), link.size());
            if (n < 0) return os_error(errno, "readlink", std::string(name));
            link.resize(static_cast<size_t>(n));
            if (link.empty()) return os_error(ENOENT, "readlink", std::string(name));
            if (link[0] == '/') {
                p = link;
            } else {
                auto slash = p.rfind('/');
                p = (slash == std::string::npos ? std::string() : p.substr(0, slash + 1)) + link;
            }
        }
        // Back to this file system's names: strip the root; anything else is an absolute name.
        if (!root_.empty() && p.rfind(root_ + "/", 0) == 0) out.resolved = p.substr(root_.size() + 1);
        else out.resolved = p;
        if (policy_ == NamePolicy::relative_only && escapes_directory(out.resolved)) {
            Error e = make_error(ErrorCode::access_denied, "symbolic link leads out of the directory: " + p);
            e.file = std::string(name);
            return e;
        }
        if (!found) return out;
        out.size = static_cast<uint64_t>(st.st_size);
        if (S_ISREG(st.st_mode)) out.kind = FileKind::regular;
        else if (S_ISBLK(st.st_mode)) out.kind = FileKind::block_device;
        else if (S_ISCHR(st.st_mode)) out.kind = FileKind::char_device;
        else if (S_ISFIFO(st.st_mode)) out.kind = FileKind::fifo;
        else if (S_ISDIR(st.st_mode)) out.kind = FileKind::directory;
        else out.kind = FileKind::other;
        if (out.kind == FileKind::block_device) {
            int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                off_t end = ::lseek(fd, 0, SEEK_END);
                if (end > 0) out.size = static_cast<uint64_t>(end);
                ::close(fd);
            }
        }
        out.replaceable = out.kind == FileKind::regular && replaceable(p, st);
        return out;
    }

    Status copy_attributes(std::string_view from, std::string_view to) override {
        VDISK_ASSIGN(std::string a, host_path(from));
        VDISK_ASSIGN(std::string b, host_path(to));
        struct stat st {};
        if (::stat(a.c_str(), &st) != 0) return os_error(errno, "stat", std::string(from));
        if (::chown(b.c_str(), st.st_uid, st.st_gid) != 0) return os_error(errno, "chown", std::string(to));
        // After chown: it clears set-id bits, which chmod then restores.
        if (::chmod(b.c_str(), st.st_mode & 07777) != 0) return os_error(errno, "chmod", std::string(to));
        return ok();
    }

    Result<std::unique_ptr<FileSystem>> open_stream(std::string_view name) override {
        VDISK_ASSIGN(std::string p, host_path(name));
        int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return os_error(errno, "open", std::string(name));
        return make_stream_file_system(fd, std::string(name), true);
    }

private:
    // Renaming a new file over an existing one keeps the name but not the inode: hard links keep the old
    // content, and whatever chown/chmod cannot copy (extended attributes: ACLs, security labels) is lost;
    // a directory we may not write forbids the rename altogether. Those files are written in place.
    static bool replaceable(const std::string& p, const struct stat& st) {
        if (st.st_nlink != 1) return false;
        auto slash = p.rfind('/');
        std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
        if (::access(dir.c_str(), W_OK | X_OK) != 0) return false;
        ssize_t x = ::listxattr(p.c_str(), nullptr, 0);
        if (x > 0) return false;
        if (::geteuid() == 0) return true;
        if (st.st_uid != ::geteuid()) return false;
        if (st.st_gid == ::getegid()) return true;
        std::vector<gid_t> groups(static_cast<size_t>(std::max(0, ::getgroups(0, nullptr))));
        int n = ::getgroups(static_cast<int>(groups.size()), groups.data());
        return n > 0 && std::find(groups.begin(), groups.begin() + n, st.st_gid) != groups.begin() + n;
    }

    std::string root_;
    NamePolicy policy_;
    PosixOptions opts_;
    std::shared_ptr<LockTable> locks_ = std::make_shared<LockTable>();
};

}  // namespace

std::unique_ptr<FileSystem> make_posix_file_system(std::string root, NamePolicy policy, PosixOptions options) {
    return std::make_unique<PosixFileSystem>(std::move(root), policy, options);
}

}  // namespace vdisk
