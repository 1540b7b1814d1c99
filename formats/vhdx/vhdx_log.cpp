// SPDX-License-Identifier: Apache-2.0
// VHDX metadata log (MS-VHDX 2.3): finding the active sequence, replaying it into the file, or applying it
// in memory for read-only opens (qemu-img refuses those; the image's true content needs the replay).
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <map>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vhdx_internal.hpp"

namespace vdisk::vhdx {
namespace {

// No valid VHDX is larger than 64 TiB of payload plus its metadata; a log that claims a bigger file is
// hostile, not big.
constexpr uint64_t kMaxLogFileOffset = 128 * TiB;
constexpr uint64_t kMaxLogGrowth = 16 * GiB;

struct ParsedEntry {
    uint64_t sequence = 0;
    uint32_t length = 0;
    uint32_t tail = 0;
    uint64_t flushed = 0;
    uint64_t last = 0;
    std::vector<LogWrite> writes;
    Charge charge;  // what the writes hold
};

class LogScanner {
public:
    // `crc_budget`: bytes of entries it checksums at most (a hostile log can put "loge" in every sector).
    LogScanner(const std::vector<uint8_t>& log, const Guid& guid, std::shared_ptr<Budget> budget, uint64_t crc_budget)
        : budget_(std::move(budget)), log_(log), guid_(guid), crc_budget_(crc_budget) {}

    // Copy `len` bytes starting at log position `pos`, wrapping around the circular buffer.
    void gather(uint64_t pos, uint64_t len, uint8_t* out) const {
        uint64_t n = log_.size();
        while (len) {
            uint64_t p = pos % n;
            uint64_t k = std::min(len, n - p);
            std::memcpy(out, log_.data() + p, k);
            out += k;
            pos += k;
            len -= k;
        }
    }

    // The entry at `pos`, or nullopt when it is not a valid entry of this log (2.3.1 validity rules).
    std::optional<ParsedEntry> parse(uint64_t pos) {
        const uint64_t n = log_.size();
        LogEntryHeader h;
        std::memcpy(&h, log_.data() + pos, sizeof h);  // pos is sector aligned: the header never wraps
        if (h.signature.value() != kLogEntrySignature) return std::nullopt;
        uint32_t len = h.entry_length.value();
        if (len == 0 || len % kLogSectorSize || len > n) return std::nullopt;
        if (h.tail.value() % kLogSectorSize || h.tail.value() >= n) return std::nullopt;
        if (!guid_eq(h.log_guid, guid_) || h.sequence_number.value() == 0) return std::nullopt;
        uint64_t dcount = h.descriptor_count.value();
        uint64_t desc_bytes = util::align_up(sizeof(LogEntryHeader) + dcount * sizeof(LogDescriptor), kLogSectorSize)
                                  .value_or(UINT64_MAX);
        if (desc_bytes > len) return std::nullopt;
        if (h.last_file_offset.value() > kMaxLogFileOffset || h.flushed_file_offset.value() > kMaxLogFileOffset)
            return std::nullopt;
        // A hostile log can put "loge" in every sector with a huge length; bound the checksumming work.
        if (crc_budget_ < len) {
            budget_exhausted_ = true;
            return std::nullopt;
        }
        crc_budget_ -= len;
        // Parsed descriptors become writes held in memory (one per zero descriptor, 4 KiB per data sector):
        // charge them before they exist.
        ParsedEntry out;
        if (budget_) {
            auto w = budget_->work(dcount, "VHDX log descriptors");
            auto c = w ? Charge::make(budget_, dcount * sizeof(LogWrite) + len, "VHDX log descriptors")
                       : Result<Charge>(std::move(w).error());
            if (!c) {
                budget_exhausted_ = true;
                limit_error_ = std::move(c).error();
                return std::nullopt;
            }
            out.charge = std::move(*c);
        }
        std::vector<uint8_t> e(len);
        gather(pos, len, e.data());
        if (crc_with_hole(e, offsetof(LogEntryHeader, checksum)) != h.checksum.value()) return std::nullopt;

        out.sequence = h.sequence_number.value();
        out.length = len;
        out.tail = h.tail.value();
        out.flushed = h.flushed_file_offset.value();
        out.last = h.last_file_offset.value();
        uint64_t data_sector = desc_bytes;
        for (uint64_t i = 0; i < dcount; ++i) {
            LogDescriptor d;
            std::memcpy(&d, e.data() + sizeof(LogEntryHeader) + i * sizeof(LogDescriptor), sizeof d);
            if (d.sequence_number.value() != out.sequence) return std::nullopt;
            uint64_t off = d.file_offset.value();
            if (off % kLogSectorSize) return std::nullopt;
            LogWrite w;
            w.offset = off;
            if (d.signature.value() == kZeroDescSignature) {
                w.length = d.leading_bytes.value();
                if (w.length == 0 || w.length % kLogSectorSize) return std::nullopt;
            } else if (d.signature.value() == kDataDescSignature) {
                if (data_sector + kLogSectorSize > len) return std::nullopt;
                LogDataSector s;
                std::memcpy(&s, e.data() + data_sector, sizeof s);
                data_sector += kLogSectorSize;
                uint64_t seq = (uint64_t(s.sequence_high.value()) << 32) | s.sequence_low.value();
                if (s.signature.value() != kDataSectorSignature || seq != out.sequence) return std::nullopt;
                // The sector's first 8 and last 4 bytes live in the descriptor (the data sector keeps its
                // signature and sequence halves there instead).
                w.length = kLogSectorSize;
                w.data.resize(kLogSectorSize);
                util::store_le<uint64_t>(w.data.data(), d.leading_bytes.value());
                std::memcpy(w.data.data() + 8, s.data, sizeof s.data);
                util::store_le<uint32_t>(w.data.data() + 8 + sizeof s.data, d.trailing_bytes.value());
            } else {
                return std::nullopt;
            }
            auto end = util::add(w.offset, w.length);
            if (!end || *end > kMaxLogFileOffset) return std::nullopt;
            out.writes.push_back(std::move(w));
        }
        return out;
    }

    bool budget_exhausted() const { return budget_exhausted_; }
    const std::optional<Error>& limit_error() const { return limit_error_; }

private:
    std::shared_ptr<Budget> budget_;
    std::optional<Error> limit_error_;
    const std::vector<uint8_t>& log_;
    Guid guid_;
    uint64_t crc_budget_ = 0;
    bool budget_exhausted_ = false;
};

// The active sequence (2.3.2): of the sequences whose head's tail names one of their entries, the one with the
// highest head sequence number, from that entry on; empty when there is none. `log_off` is where errors point.
Result<std::vector<ParsedEntry>> find_active(LogScanner& sc, uint64_t log_len, uint64_t log_off) {
    std::vector<ParsedEntry> best;
    uint64_t pos = 0;
    while (pos < log_len) {
        auto first = sc.parse(pos);
        if (!first) {
            if (sc.limit_error()) return *sc.limit_error();
            if (sc.budget_exhausted())
                return make_error(ErrorCode::corrupt, "log scan gave up: too many invalid entries or descriptors")
                    .at(log_off);
            pos += kLogSectorSize;
            continue;
        }
        // Follow entries with consecutive sequence numbers (2.3.2 "log sequence").
        std::vector<ParsedEntry> seq;
        std::vector<uint64_t> starts;
        uint64_t at = pos, covered = 0;
        std::optional<ParsedEntry> cur = std::move(first);
        while (cur) {
            covered += cur->length;
            starts.push_back(at);
            seq.push_back(std::move(*cur));
            if (covered >= log_len) break;
            at = (at + seq.back().length) % log_len;
            cur = sc.parse(at);
            if (cur && cur->sequence != seq.back().sequence + 1) cur.reset();
        }
        // Valid when the head's tail names an entry of the sequence; replay starts there.
        const ParsedEntry& head = seq.back();
        const auto tail = std::find(starts.begin(), starts.end(), head.tail);
        if (tail != starts.end() && (best.empty() || head.sequence > best.back().sequence))
            best.assign(std::make_move_iterator(seq.begin() + (tail - starts.begin())),
                        std::make_move_iterator(seq.end()));
        if (pos + covered >= log_len) break;
        pos += std::max<uint64_t>(covered, kLogSectorSize);
    }
    return best;
}

// The writes of the active sequence, checked against the file they replay into.
Result<LogReplay> make_replay(std::vector<ParsedEntry>& best, uint64_t file_size, uint64_t log_off,
                              const std::shared_ptr<Budget>& budget) {
    LogReplay r;
    uint64_t bytes = 0;
    for (auto& e : best)
        for (auto& w : e.writes) bytes += sizeof(LogWrite) + w.data.size();
    VDISK_ASSIGN(r.charge, Charge::make(budget, bytes, "VHDX log replay"));
    r.flushed_file_offset = best.back().flushed;
    r.last_file_offset = best.back().last;
    r.head_sequence = best.back().sequence;
    r.entries = static_cast<uint32_t>(best.size());
    if (r.flushed_file_offset > file_size)
        return make_error(ErrorCode::corrupt, "file is shorter (" + hex(file_size) +
                                                  ") than the log's flushed file offset " + hex(r.flushed_file_offset))
            .at(log_off);
    // The log may grow the file (blocks allocated just before a crash), but not without bound: replay
    // would otherwise turn a hostile LastFileOffset into terabytes of file.
    if (r.last_file_offset > file_size && r.last_file_offset - file_size > kMaxLogGrowth)
        return make_error(ErrorCode::corrupt, "log's last file offset " + hex(r.last_file_offset) +
                                                  " is far past the end of the file (" + hex(file_size) + ")")
            .at(log_off);
    uint64_t limit = std::max(file_size, r.last_file_offset);
    for (auto& e : best)
        for (auto& w : e.writes) {
            if (w.offset + w.length > limit)
                return make_error(ErrorCode::corrupt, "log descriptor writes [" + hex(w.offset) + ", +" +
                                                          hex(w.length) + ") past the file's last offset " + hex(limit))
                    .at(log_off);
            if (w.offset < kHeaderSectionSize)
                return make_error(ErrorCode::corrupt, "log descriptor targets the header section at " + hex(w.offset))
                    .at(log_off);
            r.writes.push_back(std::move(w));
        }
    return r;
}

}  // namespace

Status check_log_region(const Header& h, uint64_t file_size, uint64_t at) {
    const uint64_t off = h.log_offset.value(), len = h.log_length.value();
    if (len == 0 || len % MiB)
        return make_error(ErrorCode::corrupt, "log length " + hex(len) + " is not a non-zero multiple of 1 MiB").at(at);
    if (off < kHeaderSectionSize || off % MiB)
        return make_error(ErrorCode::corrupt,
                          "log offset " + hex(off) + " is not 1 MiB aligned past the header section")
            .at(at);
    if (!util::range_within(off, len, file_size))
        return make_error(ErrorCode::corrupt, "log region [" + hex(off) + ", +" + hex(len) +
                                                  ") extends past end of file (" + hex(file_size) + ")")
            .at(at);
    return ok();
}

Result<LogReplay> read_log(File& file, const Header& header, uint64_t file_size, const Limits& limits,
                           const std::shared_ptr<Budget>& budget) {
    uint64_t log_off = header.log_offset.value();
    uint64_t log_len = header.log_length.value();
    VDISK_TRY(check_log_region(header, file_size, log_off));
    if (log_len > limits.max_metadata_bytes)
        return make_error(ErrorCode::limit_exceeded, "log of " + hex(log_len) + " bytes exceeds the metadata limit")
            .at(log_off);
    VDISK_ASSIGN(Charge log_charge, Charge::make(budget, log_len, "VHDX log"));
    std::vector<uint8_t> log(static_cast<size_t>(log_len));
    VDISK_TRY(read_exact(file, log_off, log, "VHDX log"));
    LogScanner sc(log, header.log_guid, budget, 8 * log_len + 16 * MiB);
    VDISK_ASSIGN(std::vector<ParsedEntry> best, find_active(sc, log_len, log_off));
    if (best.empty()) return LogReplay{};
    log = {};
    log_charge.reset();
    return make_replay(best, file_size, log_off, budget);
}

Status replay_into(File& file, const LogReplay& log, uint64_t file_size) {
    if (file_size < log.last_file_offset) VDISK_TRY(file.resize(log.last_file_offset));
    for (const auto& w : log.writes) {
        if (!w.data.empty()) VDISK_TRY(file.write_at(w.offset, w.data));
        else VDISK_TRY(file.punch_hole(w.offset, w.length));  // reads as zeros, without writing them
    }
    return file.sync();
}

namespace {

class OverlayFile final : public File {
public:
    OverlayFile(std::unique_ptr<File> base, LogReplay log, uint64_t base_size, std::shared_ptr<Budget> budget)
        : base_(std::move(base)), log_(std::move(log)), base_size_(base_size), budget_(std::move(budget)) {
        size_ = std::max(base_size_, log_.last_file_offset);
        for (auto& w : log_.writes) size_ = std::max(size_, w.offset + w.length);
    }

    // Index the writes in replay order: later writes hide what they cover of earlier ones, so the map
    // holds only what a read can see, as disjoint pieces.
    Status build() {
        VDISK_TRY(budget_->work(log_.writes.size(), "VHDX log overlay"));
        for (const auto& w : log_.writes) {
            put(w.offset, w.offset + w.length, w.data.empty() ? nullptr : w.data.data());
            VDISK_TRY(index_charge_.resize(pieces_.size() * kPieceBytes, "VHDX log overlay index"));
        }
        return ok();
    }

    Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
        if (offset >= size_) return size_t(0);
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size_ - offset));
        auto part = buf.first(n);
        VDISK_TRY(read_zero_fill(*base_, offset, part));
        uint64_t end = offset + n;
        auto it = pieces_.upper_bound(offset);
        if (it != pieces_.begin()) --it;
        uint64_t visited = 0;
        for (; it != pieces_.end() && it->first < end; ++it) {
            ++visited;
            uint64_t s = std::max(offset, it->first), e = std::min(end, it->second.end);
            if (s >= e) continue;
            uint8_t* dst = part.data() + (s - offset);
            if (!it->second.data) std::memset(dst, 0, e - s);
            else std::memcpy(dst, it->second.data + (s - it->first), e - s);
        }
        budget_->note(visited);
        return n;
    }
    Status write_at(uint64_t, std::span<const uint8_t>) override {
        return make_error(ErrorCode::read_only, "VHDX with an unreplayed log is open read-only");
    }
    Result<uint64_t> size() override { return size_; }
    Status resize(uint64_t) override {
        return make_error(ErrorCode::read_only, "VHDX with an unreplayed log is open read-only");
    }
    Status sync() override { return ok(); }
    std::optional<uint64_t> allocated_size() override { return base_->allocated_size(); }
    const std::string& name() const override { return base_->name(); }
    FileIdentity identity() const override { return base_->identity(); }

private:
    struct Piece {
        uint64_t end;
        const uint8_t* data;  // bytes of [start, end); null: zeros
    };
    static constexpr uint64_t kPieceBytes = 64;  // a map node, roughly

    static const uint8_t* advance(const uint8_t* d, uint64_t n) { return d ? d + n : nullptr; }

    void put(uint64_t s, uint64_t e, const uint8_t* d) {
        auto it = pieces_.lower_bound(s);
        if (it != pieces_.begin()) {
            auto p = std::prev(it);
            if (p->second.end > s) {
                Piece old = p->second;
                p->second.end = s;
                if (old.end > e) pieces_.emplace(e, Piece{old.end, advance(old.data, e - p->first)});
            }
        }
        it = pieces_.lower_bound(s);
        while (it != pieces_.end() && it->first < e) {
            if (it->second.end > e) {
                Piece old = it->second;
                uint64_t start = it->first;
                pieces_.erase(it);
                pieces_.emplace(e, Piece{old.end, advance(old.data, e - start)});
                break;
            }
            it = pieces_.erase(it);
        }
        pieces_.emplace(s, Piece{e, d});
    }

    std::unique_ptr<File> base_;
    LogReplay log_;
    uint64_t base_size_;
    uint64_t size_;
    std::shared_ptr<Budget> budget_;
    std::map<uint64_t, Piece> pieces_;
    Charge index_charge_ = Charge::make(budget_, 0, "VHDX log overlay index").value();
};

}  // namespace

Result<std::unique_ptr<File>> make_overlay(std::unique_ptr<File> base, LogReplay log, uint64_t base_size,
                                           const std::shared_ptr<Budget>& budget) {
    auto f = std::make_unique<OverlayFile>(std::move(base), std::move(log), base_size, budget);
    VDISK_TRY(f->build());
    return std::unique_ptr<File>(std::move(f));
}

}  // namespace vdisk::vhdx
