// SPDX-License-Identifier: Apache-2.0
// Digests of virtual content: a feeder (convert's writer, or hash_device's extent walk) hands pieces to one
// hasher thread per algorithm through a small pool of buffers. OpenSSL does the hashing (SHA-NI, AVX2 where
// the CPU has them); a hand-written digest would be slower and one more thing to get wrong.
#include "vdisk/hash.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

namespace vdisk {
namespace {

// Pieces are copied in blocks of this size; kMaxBuffers of them bound the sink's memory (16 MiB) whatever
// the image size, and are enough to keep a reader and the hashers busy at the same time.
constexpr size_t kBlock = 2u << 20;
constexpr size_t kMaxBuffers = 8;
// Zero runs cost no buffer, so their count is capped separately to keep a lagging hasher's queue small.
constexpr size_t kMaxQueued = 64;

// Holes are hashed from this; static storage, so it costs no memory until touched and is shared by all.
const std::array<uint8_t, 1u << 20> kZeros{};

const EVP_MD* evp_of(HashAlgorithm a) {
    switch (a) {
        case HashAlgorithm::sha256: return EVP_sha256();
        case HashAlgorithm::sha1: return EVP_sha1();
        case HashAlgorithm::md5: return EVP_md5();
    }
    return nullptr;
}

struct Piece {
    std::shared_ptr<std::vector<uint8_t>> buf;  // null: a zero run of `length` bytes
    uint64_t length = 0;
};

}  // namespace

Result<HashAlgorithm> parse_hash_algorithm(std::string_view name) {
    std::string n;
    for (char c : name)
        if (c != '-' && c != '_') n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (n == "sha256") return HashAlgorithm::sha256;
    if (n == "sha1") return HashAlgorithm::sha1;
    if (n == "md5") return HashAlgorithm::md5;
    return make_error(ErrorCode::invalid_argument,
                      "unknown hash algorithm '" + std::string(name) + "' (known: sha256, sha1, md5)");
}

std::string_view hash_algorithm_name(HashAlgorithm a) noexcept {
    switch (a) {
        case HashAlgorithm::sha256: return "sha256";
        case HashAlgorithm::sha1: return "sha1";
        case HashAlgorithm::md5: return "md5";
    }
    return "?";
}

std::string_view hash_algorithm_tag(HashAlgorithm a) noexcept {
    switch (a) {
        case HashAlgorithm::sha256: return "SHA256";
        case HashAlgorithm::sha1: return "SHA1";
        case HashAlgorithm::md5: return "MD5";
    }
    return "?";
}

struct HashSink::Impl {
    struct Worker {
        HashAlgorithm algorithm;
        std::deque<Piece> queue;
        std::thread thread;
        Status status;
        std::string hex;
    };
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Worker> workers;
    std::vector<std::unique_ptr<std::vector<uint8_t>>> free;
    size_t allocated = 0;
    bool closing = false;  // no more pieces: workers drain their queue and stop
    bool abandon = false;  // destroyed without finish(): workers drop what is queued
    bool finished = false;
    uint64_t next = 0;

    void run(Worker& w) {
        EVP_MD_CTX* ctx = EVP_MD_CTX_new();
        bool good = ctx && EVP_DigestInit_ex(ctx, evp_of(w.algorithm), nullptr) == 1;
        bool dropped = false;
        for (;;) {
            Piece p;
            {
                std::unique_lock l(mu);
                cv.wait(l, [&] { return !w.queue.empty() || closing; });
                if (w.queue.empty()) break;
                p = std::move(w.queue.front());
                w.queue.pop_front();
                cv.notify_all();
                if (abandon) dropped = true;
            }
            if (!good || dropped) continue;
            if (p.buf) {
                good = EVP_DigestUpdate(ctx, p.buf->data(), static_cast<size_t>(p.length)) == 1;
            } else {
                for (uint64_t left = p.length; left > 0 && good;) {
                    size_t n = static_cast<size_t>(std::min<uint64_t>(left, kZeros.size()));
                    good = EVP_DigestUpdate(ctx, kZeros.data(), n) == 1;
                    left -= n;
                }
            }
            // `p` releases its buffer here, outside the lock (the buffer's deleter takes it).
        }
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (dropped) {
            // Nobody will ask for this digest.
        } else if (good && EVP_DigestFinal_ex(ctx, md, &len) == 1) {
            static const char digits[] = "0123456789abcdef";
            for (unsigned i = 0; i < len; ++i) {
                w.hex += digits[md[i] >> 4];
                w.hex += digits[md[i] & 15];
            }
        } else {
            w.status = make_error(ErrorCode::io,
                                  "libcrypto: " + std::string(hash_algorithm_name(w.algorithm)) + " digest failed");
        }
        EVP_MD_CTX_free(ctx);
    }

    // A pooled buffer of kBlock bytes; back in the pool once every hasher has dropped it.
    std::shared_ptr<std::vector<uint8_t>> acquire() {
        std::unique_lock l(mu);
        cv.wait(l, [&] { return !free.empty() || allocated < kMaxBuffers; });
        std::vector<uint8_t>* raw;
        if (!free.empty()) {
            raw = free.back().release();
            free.pop_back();
        } else {
            raw = new std::vector<uint8_t>(kBlock);
            ++allocated;
        }
        return std::shared_ptr<std::vector<uint8_t>>(raw, [this](std::vector<uint8_t>* v) {
            std::lock_guard g(mu);
            free.emplace_back(v);
            cv.notify_all();
        });
    }

    void push(const Piece& p) {
        std::unique_lock l(mu);
        cv.wait(l, [&] {
            return std::all_of(workers.begin(), workers.end(), [](auto& w) { return w.queue.size() < kMaxQueued; });
        });
        for (auto& w : workers) w.queue.push_back(p);
        next += p.length;
        cv.notify_all();
    }

    Status expect(uint64_t offset) const {
        if (finished) return make_error(ErrorCode::invalid_argument, "hash: content after finish()");
        if (offset != next)
            return make_error(ErrorCode::invalid_argument, "hash: content piece at " + std::to_string(offset) +
                                                               ", expected " + std::to_string(next));
        return ok();
    }

    void stop() {
        {
            std::lock_guard l(mu);
            closing = true;
            cv.notify_all();
        }
        for (auto& w : workers)
            if (w.thread.joinable()) w.thread.join();
    }
};

HashSink::HashSink(std::span<const HashAlgorithm> algorithms) : impl_(std::make_unique<Impl>()) {
    impl_->workers.resize(algorithms.size());
    for (size_t i = 0; i < algorithms.size(); ++i) impl_->workers[i].algorithm = algorithms[i];
    for (auto& w : impl_->workers) w.thread = std::thread([this, &w] { impl_->run(w); });
}

HashSink::~HashSink() {
    if (!impl_->finished) {
        {
            std::lock_guard l(impl_->mu);
            impl_->abandon = true;
        }
        impl_->stop();
    }
}

Status HashSink::data(uint64_t offset, std::span<const uint8_t> bytes) {
    VDISK_TRY(impl_->expect(offset));
    while (!bytes.empty()) {
        size_t n = std::min(bytes.size(), kBlock);
        auto buf = impl_->acquire();
        std::memcpy(buf->data(), bytes.data(), n);
        impl_->push(Piece{std::move(buf), n});
        bytes = bytes.subspan(n);
    }
    return ok();
}

Status HashSink::zeros(uint64_t offset, uint64_t length) {
    VDISK_TRY(impl_->expect(offset));
    if (length) impl_->push(Piece{nullptr, length});
    return ok();
}

Status HashSink::feed_from(BlockDevice& device, uint64_t offset, uint64_t length) {
    VDISK_TRY(impl_->expect(offset));
    while (length > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(length, kBlock));
        auto buf = impl_->acquire();
        VDISK_TRY(device.read(offset, std::span<uint8_t>(buf->data(), n)));
        impl_->push(Piece{std::move(buf), n});
        offset += n;
        length -= n;
    }
    return ok();
}

uint64_t HashSink::received() const noexcept {
    std::lock_guard l(impl_->mu);
    return impl_->next;
}

Result<std::vector<Digest>> HashSink::finish() {
    if (impl_->finished) return make_error(ErrorCode::invalid_argument, "hash: finish() called twice");
    impl_->stop();
    impl_->finished = true;
    std::vector<Digest> out;
    for (auto& w : impl_->workers) {
        if (!w.status) return w.status.error();
        out.push_back(Digest{w.algorithm, w.hex});
    }
    return out;
}

Result<std::vector<Digest>> hash_device(BlockDevice& device, std::span<const HashAlgorithm> algorithms,
                                        const HashOptions& options) {
    if (algorithms.empty()) return make_error(ErrorCode::invalid_argument, "hash: no algorithm given");
    HashSink sink(algorithms);
    const uint64_t size = device.size();
    for (uint64_t off = 0; off < size;) {
        if (options.cancel && options.cancel->load()) return make_error(ErrorCode::io, "hashing cancelled");
        VDISK_ASSIGN(MappedExtent m, map_extent(device, off, size - off));
        if (m.length == 0) return make_error(ErrorCode::corrupt, "hash: empty extent at " + std::to_string(off));
        // Data goes in steps of 64 MiB so that cancel and progress are seen during long data extents.
        const uint64_t len = m.data ? std::min<uint64_t>(m.length, 64u << 20) : m.length;
        if (m.data) VDISK_TRY(sink.feed_from(device, off, len));
        else VDISK_TRY(sink.zeros(off, len));
        off += len;
        VDISK_TRY(options.progress(off, size));
    }
    return sink.finish();
}

}  // namespace vdisk
