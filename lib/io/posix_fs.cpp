// FileSystem over the host: positional I/O, SEEK_DATA/SEEK_HOLE, fallocate hole punching.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
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

class PosixFile final : public File {
public:
    PosixFile(int fd, std::string name, bool read_only) : fd_(fd), name_(std::move(name)), read_only_(read_only) {
        struct stat st {};
        if (::fstat(fd_, &st) == 0) id_ = FileIdentity{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    }
    ~PosixFile() override { ::close(fd_); }

    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
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

    Status punch_hole(uint64_t offset, uint64_t len) override {
        if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                        static_cast<off_t>(len)) == 0)
            return ok();
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
        std::unique_lock lock(ra_mu_);
        auto serve = [&]() -> std::optional<size_t> {
            if (ra_.empty() || offset < ra_start_ || offset - ra_start_ >= ra_.size()) return std::nullopt;
            size_t at = static_cast<size_t>(offset - ra_start_);
            size_t n = std::min(buf.size(), ra_.size() - at);
            if (n < buf.size() && ra_.size() == kReadAhead) return std::nullopt;  // crosses the window's end
            std::memcpy(buf.data(), ra_.data() + at, n);
            last_end_ = offset + n;
            return n;
        };
        if (auto n = serve()) return *n;
        if (offset != last_end_) {  // not sequential: no read-ahead
            last_end_ = offset + buf.size();
            // Random small reads from several threads must not queue behind one another's pread.
            lock.unlock();
            return read_direct(offset, buf);
        }
        ra_.resize(kReadAhead);
        auto got = read_direct(offset, ra_);
        if (!got) {
            ra_.clear();
            return got;
        }
        ra_.resize(*got);
        ra_start_ = offset;
        if (auto n = serve()) return *n;
        return size_t{0};
    }

    int fd_;
    std::string name_;
    FileIdentity id_;
    bool read_only_;
    std::mutex ra_mu_, wb_mu_;
    uint64_t wb_lo_ = UINT64_MAX, wb_hi_ = 0, wb_pending_ = 0;
    std::vector<uint8_t> ra_;
    uint64_t ra_start_ = 0;
    uint64_t last_end_ = UINT64_MAX;
};

class PosixFileSystem final : public FileSystem {
public:
    PosixFileSystem(std::string root, NamePolicy policy) : root_(std::move(root)), policy_(policy) {}

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
        int flags = (access == Access::read_write ? O_RDWR : O_RDONLY) | O_CLOEXEC;
        int fd = ::open(p.c_str(), flags);
        if (fd < 0) return os_error(errno, "open", std::string(name));
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            ::close(fd);
            return os_error(EISDIR, "open", std::string(name));
        }
        return std::unique_ptr<File>(new PosixFile(fd, std::string(name), access != Access::read_write));
    }

    Result<std::unique_ptr<File>> create(std::string_view name, bool exclusive) override {
        VDISK_ASSIGN(std::string p, host_path(name));
        int flags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | (exclusive ? O_EXCL : 0);
        int fd = ::open(p.c_str(), flags, 0644);
        if (fd < 0) return os_error(errno, "create", std::string(name));
        return std::unique_ptr<File>(new PosixFile(fd, std::string(name), false));
    }

    Status rename(std::string_view from, std::string_view to) override {
        VDISK_ASSIGN(std::string a, host_path(from));
        VDISK_ASSIGN(std::string b, host_path(to));
        if (::rename(a.c_str(), b.c_str()) != 0) return os_error(errno, "rename to " + std::string(to), std::string(from));
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

private:
    std::string root_;
    NamePolicy policy_;
};

}  // namespace

std::unique_ptr<FileSystem> make_posix_file_system(std::string root, NamePolicy policy) {
    return std::make_unique<PosixFileSystem>(std::move(root), policy);
}

}  // namespace vdisk
