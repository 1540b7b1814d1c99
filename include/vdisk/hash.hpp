// SPDX-License-Identifier: Apache-2.0
// vdisk — digests of a disk's virtual content (what `qemu-img convert -O raw IMG - | sha256sum` hashes),
// computed with OpenSSL's libcrypto.
//
//   std::vector<vdisk::HashAlgorithm> algos{vdisk::HashAlgorithm::sha256};
//   auto d = vdisk::hash_device(*img->device, algos);   // d->front().hex
//
// Any conversion can hash what it copies in the same pass: give ConvertOptions::content_sink a HashSink.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vdisk/vdisk.hpp"

namespace vdisk {

enum class HashAlgorithm { sha256, sha1, md5 };

/// "sha256", "sha1", "md5" (also "sha-256", "SHA256", ...); invalid_argument naming the choices otherwise.
Result<HashAlgorithm> parse_hash_algorithm(std::string_view name);
/// Lower-case name as sha256sum's family spells it: "sha256", "sha1", "md5".
std::string_view hash_algorithm_name(HashAlgorithm a) noexcept;
/// The tag `sha256sum --tag` prints: "SHA256", "SHA1", "MD5".
std::string_view hash_algorithm_tag(HashAlgorithm a) noexcept;

/// A receiver of a device's whole virtual content in increasing offset order: every byte from 0 to the
/// end exactly once, either as bytes (data) or as a run that reads as zeros (zeros). `offset` is where the
/// piece starts; a sink may reject a piece that does not start where the previous one ended.
class ContentSink {
public:
    virtual ~ContentSink() = default;
    virtual Status data(uint64_t offset, std::span<const uint8_t> bytes) = 0;
    virtual Status zeros(uint64_t offset, uint64_t length) = 0;
};

struct Digest {
    HashAlgorithm algorithm = HashAlgorithm::sha256;
    std::string hex;  ///< lower-case
};

/// A ContentSink that digests what it receives with one or more algorithms, each on its own thread. data()
/// copies the bytes into one of a few pooled buffers and returns (blocking only while all are in use), so
/// the caller's loop overlaps the hashing; zeros() costs hashing time (a shared zero buffer) but no memory.
/// Pieces must arrive without gaps or overlaps (invalid_argument otherwise). Not thread-safe: one feeder.
class HashSink : public ContentSink {
public:
    explicit HashSink(std::span<const HashAlgorithm> algorithms);
    ~HashSink() override;
    HashSink(const HashSink&) = delete;
    HashSink& operator=(const HashSink&) = delete;

    Status data(uint64_t offset, std::span<const uint8_t> bytes) override;
    Status zeros(uint64_t offset, uint64_t length) override;
    /// Read [offset, offset+length) of `device` straight into the sink's buffers and feed it (data() without
    /// the copy). `offset` must be the next expected offset.
    Status feed_from(BlockDevice& device, uint64_t offset, uint64_t length);
    /// Wait for every hasher and return the digests in the order the algorithms were given. Call once;
    /// later pieces are rejected.
    Result<std::vector<Digest>> finish();
    /// Bytes received so far (the next expected offset).
    uint64_t received() const noexcept;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

struct HashOptions {
    ProgressFn progress;                        ///< (bytes hashed, device size)
    const std::atomic<bool>* cancel = nullptr;  ///< set to true to stop (an io error "hashing cancelled")
};

/// Digest the whole virtual content of `device` (through its backing chain). Ranges that read as zeros in
/// every layer are not read; the hashers see them from a shared zero buffer. Memory is bounded by the
/// sink's buffer pool, whatever the image size.
Result<std::vector<Digest>> hash_device(BlockDevice& device, std::span<const HashAlgorithm> algorithms,
                                        const HashOptions& options = {});

}  // namespace vdisk
