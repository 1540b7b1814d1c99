// SPDX-License-Identifier: Apache-2.0
// vdisk — what one opened image (and one chain) may cost: memory held and table entries walked.
//
// A hostile image is small on disk and asks for much: a table that names one cluster a billion times, a
// thousand snapshots sharing one huge L1, a million log descriptors. Per-table caps alone let such an image
// multiply its cost (raw bytes plus decoded copies, one cap per extent, one per snapshot). A Budget is
// charged instead for everything sized by the file, whatever structure holds it, and counts every entry a
// walk visits, zero entries included. Exceeding either limit is a limit_exceeded error naming the structure.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>

#include "vdisk/error.hpp"

namespace vdisk {

class VDISK_API Budget {
public:
    /// `parent`: the chain's budget, charged as well (may be null).
    Budget(uint64_t memory_limit, uint64_t work_limit, std::shared_ptr<Budget> parent = nullptr)
        : memory_limit_(memory_limit), work_limit_(work_limit), parent_(std::move(parent)) {}
    Budget(const Budget&) = delete;
    Budget& operator=(const Budget&) = delete;

    /// Reserve `bytes` for `what` ("L1 table", "snapshot names", ...). On limit_exceeded nothing is
    /// charged. Thread-safe.
    Status charge(uint64_t bytes, std::string_view what);
    /// Give back bytes charged earlier (here and in the parent).
    void release(uint64_t bytes) noexcept;
    /// Count `units` of work (table entries visited, characters decoded) spent on `what`; limit_exceeded
    /// once the total passes the work limit. Thread-safe.
    Status work(uint64_t units, std::string_view what);
    /// Count work that is bounded per request by construction (entries looked at while serving a read):
    /// recorded for measurement, never refused.
    void note(uint64_t units) noexcept { noted_.fetch_add(units, std::memory_order_relaxed); }

    uint64_t memory_used() const noexcept { return used_.load(std::memory_order_relaxed); }
    uint64_t memory_peak() const noexcept { return peak_.load(std::memory_order_relaxed); }
    uint64_t memory_limit() const noexcept { return memory_limit_; }
    uint64_t work_done() const noexcept { return work_.load(std::memory_order_relaxed); }
    uint64_t work_limit() const noexcept { return work_limit_; }
    uint64_t noted() const noexcept { return noted_.load(std::memory_order_relaxed); }
    const std::shared_ptr<Budget>& parent() const noexcept { return parent_; }

private:
    Status charge_here(uint64_t bytes, std::string_view what);
    uint64_t memory_limit_;
    uint64_t work_limit_;
    std::shared_ptr<Budget> parent_;
    std::atomic<uint64_t> used_{0};
    std::atomic<uint64_t> peak_{0};
    std::atomic<uint64_t> work_{0};
    std::atomic<uint64_t> noted_{0};
};

/// Bytes charged to a budget for as long as this object lives (moveable, released on destruction or
/// reset). Resizing goes through resize(), which charges or releases the difference.
class VDISK_API Charge {
public:
    Charge() = default;
    Charge(const Charge&) = delete;
    Charge& operator=(const Charge&) = delete;
    Charge(Charge&& o) noexcept : budget_(std::move(o.budget_)), bytes_(std::exchange(o.bytes_, 0)) {}
    Charge& operator=(Charge&& o) noexcept {
        if (this != &o) {
            reset();
            budget_ = std::move(o.budget_);
            bytes_ = std::exchange(o.bytes_, 0);
        }
        return *this;
    }
    ~Charge() { reset(); }

    /// Charge `bytes` to `budget` (replacing what this object held).
    static Result<Charge> make(const std::shared_ptr<Budget>& budget, uint64_t bytes, std::string_view what);
    /// Hold `bytes` in total from now on, charging or releasing the difference.
    Status resize(uint64_t bytes, std::string_view what);
    /// Leave the bytes charged for the rest of the budget's life (tables the device keeps until it dies).
    void keep() noexcept {
        budget_.reset();
        bytes_ = 0;
    }
    void reset() noexcept {
        if (budget_ && bytes_) budget_->release(bytes_);
        bytes_ = 0;
    }
    uint64_t bytes() const noexcept { return bytes_; }
    const std::shared_ptr<Budget>& budget() const noexcept { return budget_; }

private:
    std::shared_ptr<Budget> budget_;
    uint64_t bytes_ = 0;
};

}  // namespace vdisk
