// SPDX-License-Identifier: Apache-2.0
// Shared between the VHDX sources: the parsed image description, the log, the device.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <string>
#include <vector>

#include "util/bytes.hpp"
#include "vdisk/format.hpp"
#include "vhdx_layout.hpp"

namespace vdisk::vhdx {

inline bool guid_eq(const Guid& a, const Guid& b) { return std::memcmp(a.b, b.b, sizeof a.b) == 0; }
inline bool guid_is_zero(const Guid& g) { return guid_eq(g, Guid{}); }
/// "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" in upper case, the form parent_linkage values use.
std::string guid_text(const Guid& g);
Guid random_guid();
/// CRC-32C of `buf` with the 4 bytes at `checksum_at` taken as zero.
uint32_t crc_with_hole(std::span<const uint8_t> buf, size_t checksum_at);

/// One change the log makes to the file: `length` bytes at `offset`, either `data` (4 KiB) or zeros.
struct LogWrite {
    uint64_t offset = 0;
    uint64_t length = 0;
    std::vector<uint8_t> data;  // empty: zeros
};

/// The active log sequence, ready to replay.
struct LogReplay {
    std::vector<LogWrite> writes;  ///< in replay order
    Charge charge;                 ///< the writes' memory
    uint64_t flushed_file_offset = 0;
    uint64_t last_file_offset = 0;
    uint64_t head_sequence = 0;
    uint32_t entries = 0;
};

/// The log region a header names must be 1 MiB granular, past the header section and inside the file;
/// `at` is where errors point.
Status check_log_region(const Header& h, uint64_t file_size, uint64_t at);
/// Parse the log region named by a header whose LogGuid is non-zero. An empty result (no entries)
/// means no valid sequence was found: per 2.3.3 there is then nothing to replay.
/// The log region, each parsed entry and the replay are charged to `budget`.
Result<LogReplay> read_log(File& file, const Header& header, uint64_t file_size, const Limits& limits,
                           const std::shared_ptr<Budget>& budget);
/// Write the replay into the file, extending it to last_file_offset; syncs.
Status replay_into(File& file, const LogReplay& log, uint64_t file_size);
/// A read-only view of `base` with the replay applied in memory: the device's file, so its metadata reads
/// and the data extents its map names are read through it. Reads see the log's sectors; the size is at
/// least last_file_offset.
/// The writes are indexed once (an interval map of what is visible), so a read looks only at the pieces it
/// overlaps; the index and the replay stay charged to `budget`, and each piece a read visits is noted there.
Result<std::unique_ptr<File>> make_overlay(std::unique_ptr<File> base, LogReplay log, uint64_t base_size,
                                           const std::shared_ptr<Budget>& budget);

/// The header we act on, and which slot (0/1) it came from.
struct ActiveHeader {
    Header h;
    int slot = 0;
};

/// Writes metadata changes through the log (2.3) and applies them; see vhdx_log_writer.cpp for the
/// ordering and why it is crash consistent. `hdr` is the device's header: LogGuid is set in it (and on
/// disk) while the log holds entries and cleared by retire().
class LogWriter {
public:
    LogWriter(File& file, ActiveHeader& hdr, uint64_t next_sequence);
    /// Refuse a log region that cannot be written: misplaced, past the end of the file, or overlapping the
    /// BAT or metadata region (a hostile header must not turn log writes into metadata overwrites).
    Status validate(uint64_t file_size, const std::pair<uint64_t, uint64_t> (&regions)[2]) const;
    /// Data pages one entry carries at most: the bound on metadata pages kept dirty in memory.
    uint64_t max_data_pages() const { return max_pages_; }
    /// Make `writes` (4 KiB pages with data, or 4 KiB-multiple zero ranges, sorted, not overlapping)
    /// durable through one log entry (several when they do not fit one), then apply them in place.
    Status commit(std::span<const LogWrite> writes);
    /// Clear LogGuid once every entry is applied (flush, close): the log is empty again.
    Status retire();
    bool active() const { return !guid_is_zero(hdr_.h.log_guid); }
    uint64_t next_sequence() const { return seq_; }

private:
    Status write_entry(std::span<const LogWrite> writes, uint64_t descriptors, uint64_t data_sectors);
    Status apply(std::span<const LogWrite> writes);

    File& file_;
    ActiveHeader& hdr_;
    uint64_t seq_;
    uint64_t log_offset_;
    uint64_t log_length_;
    uint64_t entry_cap_ = 0;  // bytes
    uint64_t max_pages_ = 0;
    uint64_t pos_ = 0;  // where the next entry starts, relative to the log
};

/// Everything open() learns from the headers, regions and metadata.
struct Geometry {
    uint64_t virtual_size = 0;
    uint32_t block_size = 0;
    uint32_t logical_sector = 512;
    uint32_t physical_sector = 512;
    bool leave_allocated = false;
    bool has_parent = false;
    Guid page83{};
    uint64_t chunk_ratio = 0;
    uint64_t data_blocks = 0;
    uint64_t bitmap_blocks = 0;
    uint64_t bat_entries = 0;
    uint64_t bat_offset = 0;
    uint64_t bat_length = 0;
    uint64_t metadata_offset = 0;
    uint64_t metadata_length = 0;
    uint64_t size_item_offset = 0;  // file offset of the virtual disk size item (for resize)
    // Parent locator values, already converted to '/' separators.
    std::string parent_linkage, parent_linkage2, relative_path, volume_path, absolute_win32_path;
};

/// Which BAT index holds payload block `block`, and which holds the sector bitmap of its chunk.
inline uint64_t payload_index(const Geometry& g, uint64_t block) { return block + block / g.chunk_ratio; }
inline uint64_t bitmap_index(const Geometry& g, uint64_t block) {
    return (block / g.chunk_ratio) * (g.chunk_ratio + 1) + g.chunk_ratio;
}

/// What a device is made from: the opened or created image, after open has validated its structure.
struct DeviceState {
    std::unique_ptr<File> file;  ///< the image, or the read-only log replay view of it (`overlay`)
    bool overlay = false;        ///< the log was replayed in memory, not into the file (read-only)
    ActiveHeader hdr;
    Geometry geo;
    std::vector<uint64_t> bat;
    bool read_only = true;
    bool fresh = false;         ///< just created: the first write need not rotate the write GUIDs
    uint64_t log_sequence = 1;  ///< the next log entry's sequence (one past a log replayed at open)
};
std::unique_ptr<BlockDevice> make_device(DeviceState state);

/// The active header and geometry of a device made by make_device (nullptr for any other device): create
/// reads a parent's identity through them.
const Header* device_header(const BlockDevice& dev);
const Geometry* device_geometry(const BlockDevice& dev);

/// The parent locator key/values a child records for a parent whose DataWriteGuid is given.
std::vector<std::pair<std::string, std::string>> locator_values(const Guid& parent_data_write_guid,
                                                                const util::ParentNames& names);
/// A metadata region (table and items) with its parent locator item replaced by one holding `kv`, placed after
/// every item in use; unsupported when the region has no room for it.
Result<std::vector<uint8_t>> replace_parent_locator(std::vector<uint8_t> region,
                                                    const std::vector<std::pair<std::string, std::string>>& kv);

/// Serialise a header into 4 KiB with its checksum.
void encode_header(const Header& h, uint8_t* out);
/// Write the header as the spec's update procedure asks: the stale slot first, flush, then the other, so
/// one valid header exists at every moment. `h.sequence_number` is the sequence of the current one.
Status write_headers(File& file, Header& h, int& current_slot);

}  // namespace vdisk::vhdx
