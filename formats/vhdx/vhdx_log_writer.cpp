// SPDX-License-Identifier: Apache-2.0
// Writing metadata through the VHDX log (MS-VHDX 2.3).
//
// Every change to a metadata region after create (BAT pages, the virtual disk size item) reaches its
// final place only through a log entry. One commit runs, in this order:
//   1. sync the file: payload blocks (and the file growth that holds them) become durable before any entry
//      that makes them reachable;
//   2. on the first commit since the log was last emptied, set a fresh LogGuid in the header (both slots,
//      alternately, each synced), so that entries of earlier sessions can never be taken for this one's;
//   3. write the entry, followed by one zeroed 4 KiB sector, and sync;
//   4. write the pages to their final offsets and sync.
// On flush and close, once every entry is applied, LogGuid is cleared again (retire()).
//
// Why a crash leaves a consistent image:
//   - before step 3's sync, no valid entry carries the current LogGuid (it is new, or every entry that has
//     it is already applied); the metadata on disk is the previous state, and at worst new payload blocks
//     past the old end of the file are unreferenced;
//   - from step 3's sync until LogGuid is cleared, a reader finds the entry (its CRC covers all of
//     it, a torn write does not validate) and replays it; its pages are whole 4 KiB images taken from the
//     in-memory metadata, so replaying it again over pages already written in step 4 is harmless. Entries
//     are applied before the next one is written, so the log never holds more than one entry that still
//     matters, and the circular buffer is always free to be overwritten ahead of the write position.
//     (Writing several entries before one sync would save syncs, but QEMU replays only the run whose first
//     entry has the highest sequence number: once such a group wraps around the end of the buffer, its
//     older entries would be skipped.)
//
// Readers differ in how they pick the entries to replay. The spec's rule (the highest head whose tail lies
// in its sequence) needs nothing special: each entry's tail names the entry itself. QEMU scans the buffer
// from its start, accepts the entry that follows the first one of a run without comparing sequence
// numbers, and replays the whole run. The zeroed sector after every entry ends each run at the newest
// entry, so QEMU never goes on into the older entries ahead of the write position (were one of those
// damaged, the run would stop there, with a stale page image replayed last).
#include <algorithm>
#include <cstddef>
#include <cstring>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "util/endian.hpp"
#include "vhdx_internal.hpp"

namespace vdisk::vhdx {
namespace {

// QEMU (7.2 and later alike) reads an entry's descriptor sectors into a buffer it does not advance between
// sectors, so it cannot replay an entry whose descriptors spill past the first sector: keep to the 126
// that fit beside the entry header. An entry is then at most 127 sectors (508 KiB).
constexpr uint64_t kMaxDescriptors = (kLogSectorSize - sizeof(LogEntryHeader)) / sizeof(LogDescriptor);

uint64_t entry_bytes(uint64_t descriptors, uint64_t data_sectors) {
    uint64_t head = sizeof(LogEntryHeader) + descriptors * sizeof(LogDescriptor);
    return util::div_round_up(head, kLogSectorSize) * kLogSectorSize + data_sectors * kLogSectorSize;
}

}  // namespace

LogWriter::LogWriter(File& file, ActiveHeader& hdr, uint64_t next_sequence)
    : file_(file),
      hdr_(hdr),
      seq_(next_sequence ? next_sequence : 1),
      log_offset_(hdr.h.log_offset.value()),
      log_length_(hdr.h.log_length.value()) {
    // Room for an entry plus the zeroed sector that ends it; validate() refuses logs below 1 MiB.
    entry_cap_ = log_length_ >= 2 * kLogSectorSize ? log_length_ - kLogSectorSize : 0;
    uint64_t n = std::min(kMaxDescriptors, entry_cap_ / kLogSectorSize);
    while (n && entry_bytes(n, n) > entry_cap_) --n;
    max_pages_ = n;
}

Status LogWriter::validate(uint64_t file_size, const std::pair<uint64_t, uint64_t> (&regions)[2]) const {
    const uint64_t hdr_at = hdr_.slot == 0 ? kHeader1Offset : kHeader2Offset;
    VDISK_TRY(check_log_region(hdr_.h, file_size, hdr_at));
    for (const auto& [off, len] : regions)
        if (log_offset_ < off + len && off < log_offset_ + log_length_)
            return make_error(ErrorCode::corrupt, "log region [" + hex(log_offset_) + ", +" + hex(log_length_) +
                                                      ") overlaps the region at " + hex(off))
                .at(hdr_at);
    return ok();
}

Status LogWriter::commit(std::span<const LogWrite> writes) {
    if (writes.empty()) return ok();
    if (!max_pages_)
        return make_error(ErrorCode::corrupt, "log of " + hex(log_length_) + " bytes cannot hold an entry");
    VDISK_TRY(file_.sync());
    if (!active()) {
        hdr_.h.log_guid = random_guid();
        VDISK_TRY(write_headers(file_, hdr_.h, hdr_.slot));
    }
    size_t i = 0;
    while (i < writes.size()) {
        size_t j = i;
        uint64_t descs = 0, data = 0;
        while (j < writes.size()) {
            uint64_t d = descs + 1, n = data + (writes[j].data.empty() ? 0 : 1);
            if (j > i && (d > kMaxDescriptors || entry_bytes(d, n) > entry_cap_)) break;
            descs = d;
            data = n;
            ++j;
        }
        auto part = writes.subspan(i, j - i);
        VDISK_TRY(write_entry(part, descs, data));
        VDISK_TRY(apply(part));
        i = j;
    }
    return ok();
}

Status LogWriter::write_entry(std::span<const LogWrite> writes, uint64_t descriptors, uint64_t data_sectors) {
    VDISK_ASSIGN(uint64_t file_size, file_.size());
    const uint64_t len = entry_bytes(descriptors, data_sectors);
    // The entry, then the zeroed sector that ends the run of valid entries (see the top of this file).
    std::vector<uint8_t> e(static_cast<size_t>(len + kLogSectorSize), 0);
    LogEntryHeader h{};
    h.signature = kLogEntrySignature;
    h.entry_length = static_cast<uint32_t>(len);
    // Every earlier entry is applied: replay starts at this one.
    h.tail = static_cast<uint32_t>(pos_);
    h.sequence_number = seq_;
    h.descriptor_count = static_cast<uint32_t>(descriptors);
    h.log_guid = hdr_.h.log_guid;
    // Payload and file growth were synced before the entry: the file is this long on disk.
    h.flushed_file_offset = file_size;
    h.last_file_offset = file_size;
    std::memcpy(e.data(), &h, sizeof h);

    size_t desc_at = sizeof(LogEntryHeader);
    size_t sector_at = static_cast<size_t>(entry_bytes(descriptors, 0));
    for (const auto& w : writes) {
        LogDescriptor d{};
        d.file_offset = w.offset;
        d.sequence_number = seq_;
        if (w.data.empty()) {
            d.signature = kZeroDescSignature;
            d.leading_bytes = w.length;  // ZeroLength
        } else {
            // 2.3.1.3: the sector's first 8 and last 4 bytes travel in the descriptor; the data sector keeps
            // its signature and the two halves of the sequence number in their place.
            d.signature = kDataDescSignature;
            d.leading_bytes = util::load_le<uint64_t>(w.data.data());
            d.trailing_bytes = util::load_le<uint32_t>(w.data.data() + kLogSectorSize - 4);
            LogDataSector s{};
            s.signature = kDataSectorSignature;
            s.sequence_high = static_cast<uint32_t>(seq_ >> 32);
            std::memcpy(s.data, w.data.data() + 8, sizeof s.data);
            s.sequence_low = static_cast<uint32_t>(seq_);
            std::memcpy(e.data() + sector_at, &s, sizeof s);
            sector_at += kLogSectorSize;
        }
        std::memcpy(e.data() + desc_at, &d, sizeof d);
        desc_at += sizeof d;
    }
    util::store_le<uint32_t>(e.data() + offsetof(LogEntryHeader, checksum),
                             util::crc32c(std::span<const uint8_t>(e.data(), static_cast<size_t>(len))));

    // The buffer is circular: an entry that reaches its end continues at its start.
    uint64_t first = std::min<uint64_t>(e.size(), log_length_ - pos_);
    VDISK_TRY(file_.write_at(log_offset_ + pos_, std::span<const uint8_t>(e.data(), static_cast<size_t>(first))));
    if (first < e.size())
        VDISK_TRY(file_.write_at(log_offset_, std::span<const uint8_t>(e.data() + first, e.size() - first)));
    VDISK_TRY(file_.sync());
    pos_ = (pos_ + len) % log_length_;
    ++seq_;
    return ok();
}

Status LogWriter::apply(std::span<const LogWrite> writes) {
    // Adjacent pages go out in one write.
    std::vector<uint8_t> run;
    uint64_t run_at = 0;
    auto put_run = [&]() -> Status {
        if (run.empty()) return ok();
        VDISK_TRY(file_.write_at(run_at, run));
        run.clear();
        return ok();
    };
    for (const auto& w : writes) {
        if (w.data.empty()) {
            VDISK_TRY(put_run());
            VDISK_TRY(file_.punch_hole(w.offset, w.length));
            continue;
        }
        if (!run.empty() && run_at + run.size() != w.offset) VDISK_TRY(put_run());
        if (run.empty()) run_at = w.offset;
        run.insert(run.end(), w.data.begin(), w.data.end());
    }
    VDISK_TRY(put_run());
    return file_.sync();
}

Status LogWriter::retire() {
    if (!active()) return ok();
    hdr_.h.log_guid = Guid{};
    return write_headers(file_, hdr_.h, hdr_.slot);
}

}  // namespace vdisk::vhdx
