// SPDX-License-Identifier: Apache-2.0
// Window, concatenation and random-access gzip Files (see archive_files.hpp).
#include "io/archive_files.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>

namespace vdisk {
namespace {

Error read_only_error(const std::string& name) {
    Error e = make_error(ErrorCode::read_only, "a file inside an appliance is read-only");
    e.file = name;
    return e;
}

// Distinct members of one archive need distinct identities for the chain-loop check.
FileIdentity derived_identity(const FileIdentity& base, uint64_t salt) {
    return FileIdentity{base.device ^ 0x4f5641ull, base.inode * 0x100000001b3ull + salt + 1};
}

class WindowFile final : public File {
public:
    WindowFile(std::shared_ptr<File> base, uint64_t offset, uint64_t length, std::string name)
        : base_(std::move(base)), offset_(offset), length_(length), name_(std::move(name)) {}
    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
        if (offset >= length_) return size_t{0};
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), length_ - offset));
        VDISK_ASSIGN(size_t got, base_->read_at(offset_ + offset, buf.first(n)));
        return got;
    }
    Status write_at(uint64_t, std::span<const uint8_t>) override { return read_only_error(name_); }
    Result<uint64_t> size() override { return length_; }
    Status resize(uint64_t) override { return read_only_error(name_); }
    Status sync() override { return ok(); }
    const std::string& name() const override { return name_; }
    FileIdentity identity() const override { return derived_identity(base_->identity(), offset_); }

private:
    std::shared_ptr<File> base_;
    uint64_t offset_, length_;
    std::string name_;
};

class ConcatFile final : public File {
public:
    ConcatFile(std::vector<std::shared_ptr<File>> parts, std::vector<uint64_t> starts, std::string name)
        : parts_(std::move(parts)), starts_(std::move(starts)), name_(std::move(name)) {}
    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
        size_t done = 0;
        while (done < buf.size() && offset < starts_.back()) {
            // The part holding `offset`: the last start <= offset.
            size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), offset) - starts_.begin()) -
                       1;
            uint64_t in_part = offset - starts_[i];
            size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size() - done, starts_[i + 1] - offset));
            VDISK_ASSIGN(size_t got, parts_[i]->read_at(in_part, buf.subspan(done, n)));
            done += got;
            offset += got;
            if (got < n) break;  // a part shrank since creation
        }
        return done;
    }
    Status write_at(uint64_t, std::span<const uint8_t>) override { return read_only_error(name_); }
    Result<uint64_t> size() override { return starts_.back(); }
    Status resize(uint64_t) override { return read_only_error(name_); }
    Status sync() override { return ok(); }
    const std::string& name() const override { return name_; }
    FileIdentity identity() const override { return derived_identity(parts_.front()->identity(), 0x636f6e63); }

private:
    std::vector<std::shared_ptr<File>> parts_;
    std::vector<uint64_t> starts_;  // parts_.size() + 1 entries; back() is the total size
    std::string name_;
};

// Random access into a gzip stream. One live inflate stream moves forward; reads behind it restart from a
// checkpoint (inflateCopy of the stream at a known output offset) taken during the first pass.
class GzipFile final : public File {
public:
    GzipFile(std::shared_ptr<File> in, std::string name, size_t max_checkpoints)
        : in_(std::move(in)), name_(std::move(name)), max_checkpoints_(max_checkpoints) {}
    ~GzipFile() override {
        if (live_) inflateEnd(&cur_.z);
        for (auto& c : checkpoints_) inflateEnd(&c->z);
    }

    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
        std::lock_guard l(mu_);
        VDISK_TRY(ensure_size());
        if (offset >= total_) return size_t{0};
        size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), total_ - offset));
        VDISK_TRY(seek(offset));
        size_t done = 0;
        while (done < want) {
            VDISK_ASSIGN(size_t n, produce(buf.subspan(done, want - done), false));
            if (n == 0) return corrupt("gzip stream ended early at " + std::to_string(cur_.out));
            done += n;
        }
        return done;
    }
    Status write_at(uint64_t, std::span<const uint8_t>) override { return read_only_error(name_); }
    Result<uint64_t> size() override {
        std::lock_guard l(mu_);
        VDISK_TRY(ensure_size());
        return total_;
    }
    Status resize(uint64_t) override { return read_only_error(name_); }
    Status sync() override { return ok(); }
    const std::string& name() const override { return name_; }
    FileIdentity identity() const override { return derived_identity(in_->identity(), 0x677a); }

private:
    static constexpr uint64_t kSpacing = 16u << 20;
    struct State {
        z_stream z{};
        uint64_t in = 0;   // compressed bytes consumed (file offset of the next input byte)
        uint64_t out = 0;  // decompressed bytes produced
        bool end = false;  // the last member ended and no input follows
    };

    Error corrupt(const std::string& m) const {
        Error e = make_error(ErrorCode::corrupt, "gzip: " + m);
        e.file = name_;
        return e;
    }

    Status start() {
        if (live_) inflateEnd(&cur_.z);
        cur_ = State{};
        live_ = inflateInit2(&cur_.z, 15 + 16) == Z_OK;
        if (!live_) return corrupt("inflateInit2 failed");
        return ok();
    }

    // Decompress into `out` (or discard when `skip`): returns bytes produced; 0 only at the end.
    Result<size_t> produce(std::span<uint8_t> out, bool) {
        if (cur_.end) return size_t{0};
        cur_.z.next_out = out.data();
        cur_.z.avail_out = static_cast<uInt>(std::min<size_t>(out.size(), 1u << 30));
        const uInt asked = cur_.z.avail_out;
        while (cur_.z.avail_out == asked) {
            // Feed input from the file where this stream stands (inflate keeps no pointer into inbuf_ across
            // calls once avail_in is 0; a restored checkpoint starts with avail_in 0).
            if (cur_.z.avail_in == 0) {
                VDISK_ASSIGN(size_t got, in_->read_at(cur_.in, inbuf_));
                if (got == 0) {
                    cur_.end = true;
                    return corrupt("truncated (compressed data ends at " + std::to_string(cur_.in) + ")");
                }
                cur_.z.next_in = inbuf_.data();
                cur_.z.avail_in = static_cast<uInt>(got);
                cur_.in += got;
            }
            int rc = inflate(&cur_.z, Z_NO_FLUSH);
            if (rc == Z_STREAM_END) {
                // Another member may follow (concatenated gzip files are one file to gunzip).
                uint64_t next_in = cur_.in - cur_.z.avail_in;
                std::array<uint8_t, 2> magic{};
                VDISK_ASSIGN(size_t got, in_->read_at(next_in, magic));
                if (got < 2 || magic[0] != 0x1f || magic[1] != 0x8b) {
                    cur_.end = true;
                    break;
                }
                inflateReset(&cur_.z);
            } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
                return corrupt(std::string("inflate: ") + (cur_.z.msg ? cur_.z.msg : "error") +
                               " near compressed offset " + std::to_string(cur_.in));
            }
        }
        size_t n = asked - cur_.z.avail_out;
        cur_.out += n;
        return n;
    }

    // A checkpoint must not refer to inbuf_: drop pending input back to the file position.
    void take_checkpoint() {
        if (checkpoints_.size() >= max_checkpoints_) return;
        // zlib's state points back at its z_stream, so a checkpoint lives at a fixed address.
        auto c = std::make_unique<State>();
        c->in = cur_.in - cur_.z.avail_in;
        c->out = cur_.out;
        if (inflateCopy(&c->z, &cur_.z) != Z_OK) return;
        c->z.next_in = nullptr;
        c->z.avail_in = 0;
        checkpoints_.push_back(std::move(c));
    }

    // Move the live stream to output offset `target`.
    Status seek(uint64_t target) {
        if (!live_ || target < cur_.out) {
            // Resume from the last checkpoint at or before target, else from the start.
            auto it = std::upper_bound(checkpoints_.begin(), checkpoints_.end(), target,
                                       [](uint64_t t, const std::unique_ptr<State>& c) { return t < c->out; });
            if (it == checkpoints_.begin()) {
                VDISK_TRY(start());
            } else {
                State& c = **(it - 1);
                if (live_) inflateEnd(&cur_.z);
                cur_ = State{};
                live_ = inflateCopy(&cur_.z, &c.z) == Z_OK;
                if (!live_) return corrupt("inflateCopy failed");
                cur_.in = c.in;
                cur_.out = c.out;
                cur_.z.next_in = nullptr;
                cur_.z.avail_in = 0;
            }
        }
        while (cur_.out < target) {
            size_t n = static_cast<size_t>(std::min<uint64_t>(scratch_.size(), target - cur_.out));
            VDISK_ASSIGN(size_t got, produce(std::span<uint8_t>(scratch_.data(), n), true));
            if (got == 0) return corrupt("stream ended before " + std::to_string(target));
        }
        return ok();
    }

    // The first pass: decompress everything once, recording checkpoints, to learn the size.
    Status ensure_size() {
        if (sized_) return ok();
        VDISK_TRY(start());
        uint64_t next_cp = kSpacing;
        for (;;) {
            // Checkpoints are taken between produce() calls: there inflate has consumed whole input reads.
            size_t n = static_cast<size_t>(std::min<uint64_t>(scratch_.size(), next_cp - cur_.out));
            VDISK_ASSIGN(size_t got, produce(std::span<uint8_t>(scratch_.data(), n), true));
            if (got == 0) break;
            if (cur_.out == next_cp) {
                take_checkpoint();
                next_cp += kSpacing;
            }
        }
        total_ = cur_.out;
        sized_ = true;
        return ok();
    }

    std::shared_ptr<File> in_;
    std::string name_;
    size_t max_checkpoints_;
    std::mutex mu_;  // read_at may be called from several threads; the stream is one
    State cur_;
    bool live_ = false;
    bool sized_ = false;
    uint64_t total_ = 0;
    std::vector<std::unique_ptr<State>> checkpoints_;
    std::array<uint8_t, 64 << 10> inbuf_{};
    std::array<uint8_t, 256 << 10> scratch_{};
};

}  // namespace

std::unique_ptr<File> make_window_file(std::shared_ptr<File> base, uint64_t offset, uint64_t length, std::string name) {
    return std::make_unique<WindowFile>(std::move(base), offset, length, std::move(name));
}

Result<std::unique_ptr<File>> make_concat_file(std::vector<std::shared_ptr<File>> parts, std::string name) {
    if (parts.empty()) return make_error(ErrorCode::invalid_argument, "no parts to concatenate");
    std::vector<uint64_t> starts{0};
    for (auto& p : parts) {
        VDISK_ASSIGN(uint64_t s, p->size());
        if (s > UINT64_MAX - starts.back()) return make_error(ErrorCode::out_of_range, "parts too large");
        starts.push_back(starts.back() + s);
    }
    return std::unique_ptr<File>(std::make_unique<ConcatFile>(std::move(parts), std::move(starts), std::move(name)));
}

std::unique_ptr<File> make_gzip_file(std::shared_ptr<File> compressed, std::string name, size_t max_checkpoints) {
    return std::make_unique<GzipFile>(std::move(compressed), std::move(name), max_checkpoints);
}

bool looks_gzip(File& f) {
    std::array<uint8_t, 3> m{};
    auto r = f.read_at(0, m);
    return r && *r == 3 && m[0] == 0x1f && m[1] == 0x8b && m[2] == 8;
}

}  // namespace vdisk
