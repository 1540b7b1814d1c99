// SPDX-License-Identifier: Apache-2.0
// A one-file FileSystem over a pipe or stdout, written strictly forward.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "vdisk/io.hpp"

namespace vdisk {
namespace {

struct Stream {
    int fd;
    std::string name;
    uint64_t written = 0;
    uint64_t length = 0;  // logical size: resize() grows it, the zeros are written at sync()
    bool created = false;
    bool close_fd = false;
    ~Stream() {
        if (close_fd) ::close(fd);
    }
};

class StreamFile final : public File {
public:
    explicit StreamFile(std::shared_ptr<Stream> s) : s_(std::move(s)) {}

    Result<size_t> read_at(uint64_t, std::span<uint8_t>) override {
        return error(ErrorCode::unsupported, "the output is a pipe: it cannot be read back");
    }

    Status write_at(uint64_t offset, std::span<const uint8_t> buf) override {
        if (offset < s_->written) {
            Error e = error(ErrorCode::invalid_argument,
                            "this output format cannot be streamed: it writes behind the stream position (" +
                                hex(offset) + " < " + hex(s_->written) + ")");
            e.offset = offset;
            return e;
        }
        if (offset > s_->written) {
            std::vector<uint8_t> zeros(static_cast<size_t>(std::min<uint64_t>(offset - s_->written, 1 << 20)), 0);
            while (s_->written < offset) {
                size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), offset - s_->written));
                VDISK_TRY(put(std::span<const uint8_t>(zeros.data(), n)));
            }
        }
        return put(buf);
    }

    Result<uint64_t> size() override { return std::max(s_->written, s_->length); }
    Status resize(uint64_t new_size) override {
        if (new_size < s_->written) return error(ErrorCode::invalid_argument, "a stream cannot shrink");
        s_->length = new_size;
        return ok();
    }
    // The trailing zeros of a file that was extended but not written to its end.
    Status sync() override {
        if (s_->length > s_->written) return write_at(s_->length, {});
        return ok();
    }
    const std::string& name() const override { return s_->name; }
    FileIdentity identity() const override { return FileIdentity{0xfffffffe, static_cast<uint64_t>(s_->fd)}; }

private:
    Status put(std::span<const uint8_t> buf) {
        size_t done = 0;
        while (done < buf.size()) {
            ssize_t n = ::write(s_->fd, buf.data() + done, buf.size() - done);
            if (n < 0) {
                if (errno == EINTR) continue;
                return error(ErrorCode::io, std::string("write: ") + std::strerror(errno));
            }
            done += static_cast<size_t>(n);
        }
        s_->written += buf.size();
        return ok();
    }
    Error error(ErrorCode c, std::string m) const {
        Error e = make_error(c, std::move(m));
        e.file = s_->name;
        return e;
    }
    std::shared_ptr<Stream> s_;
};

class StreamFileSystem final : public FileSystem {
public:
    StreamFileSystem(int fd, std::string name, bool close_fd) : s_(std::make_shared<Stream>()) {
        s_->fd = fd;
        s_->name = std::move(name);
        s_->close_fd = close_fd;
    }
    bool is_stream() const override { return true; }
    Result<FileStat> stat(std::string_view name) override {
        FileStat st;
        st.kind = FileKind::fifo;
        st.resolved = std::string(name);
        return st;
    }

    Result<std::unique_ptr<File>> open(std::string_view name, Access) override {
        if (!s_->created) return make_error(ErrorCode::not_found, "no such file in a stream: " + std::string(name));
        return std::unique_ptr<File>(new StreamFile(s_));
    }
    Result<std::unique_ptr<File>> create(std::string_view name, bool) override {
        if (s_->created)
            return make_error(ErrorCode::unsupported,
                              "this output needs more than one file ('" + std::string(name) + "'); a pipe holds one");
        s_->created = true;
        return std::unique_ptr<File>(new StreamFile(s_));
    }
    Status rename(std::string_view, std::string_view) override { return ok(); }
    Status remove(std::string_view) override { return ok(); }
    bool exists(std::string_view) override { return false; }

private:
    std::shared_ptr<Stream> s_;
};

}  // namespace

std::unique_ptr<FileSystem> make_stream_file_system(int fd, std::string display_name, bool close_fd) {
    return std::make_unique<StreamFileSystem>(fd, std::move(display_name), close_fd);
}

}  // namespace vdisk
