// SPDX-License-Identifier: Apache-2.0
// Memory and work accounting per image and per chain.
#include "vdisk/budget.hpp"

#include "vdisk/format.hpp"

namespace vdisk {

namespace {
std::string mib(uint64_t bytes) {
    if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
    return std::to_string(bytes) + " bytes";
}
}  // namespace

Status Budget::charge_here(uint64_t bytes, std::string_view what) {
    uint64_t cur = used_.load(std::memory_order_relaxed);
    for (;;) {
        if (bytes > memory_limit_ || cur > memory_limit_ - bytes)
            return make_error(ErrorCode::limit_exceeded,
                              std::string(what) + " needs " + mib(bytes) + " of memory; with the " + mib(cur) +
                                  " already held that exceeds the memory limit of " + mib(memory_limit_));
        if (used_.compare_exchange_weak(cur, cur + bytes, std::memory_order_relaxed)) break;
    }
    uint64_t now = cur + bytes, peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {}
    return ok();
}

Status Budget::charge(uint64_t bytes, std::string_view what) {
    if (bytes == 0) return ok();
    auto st = charge_here(bytes, what);
    if (!st) {
        Error e = std::move(st).error();
        if (parent_) e.message += " for one image";
        return e;
    }
    if (parent_) {
        auto st = parent_->charge(bytes, what);
        if (!st) {
            used_.fetch_sub(bytes, std::memory_order_relaxed);
            Error e = std::move(st).error();
            e.message += " for the whole backing chain";
            return e;
        }
    }
    return ok();
}

void Budget::release(uint64_t bytes) noexcept {
    if (bytes == 0) return;
    uint64_t cur = used_.load(std::memory_order_relaxed);
    while (!used_.compare_exchange_weak(cur, cur >= bytes ? cur - bytes : 0, std::memory_order_relaxed)) {}
    if (parent_) parent_->release(bytes);
}

Status Budget::work(uint64_t units, std::string_view what) {
    uint64_t before = work_.fetch_add(units, std::memory_order_relaxed);
    if (before + units > work_limit_ || before + units < before)
        return make_error(ErrorCode::limit_exceeded, std::string(what) + ": more than " + std::to_string(work_limit_) +
                                                         " table entries to visit for one image (work limit)");
    return ok();
}

Result<Charge> Charge::make(const std::shared_ptr<Budget>& budget, uint64_t bytes, std::string_view what) {
    Charge c;
    c.budget_ = budget;
    VDISK_TRY(c.resize(bytes, what));
    return c;
}

Status Charge::resize(uint64_t bytes, std::string_view what) {
    if (!budget_) {
        bytes_ = bytes;
        return ok();
    }
    if (bytes > bytes_) {
        VDISK_TRY(budget_->charge(bytes - bytes_, what));
    } else if (bytes < bytes_) {
        budget_->release(bytes_ - bytes);
    }
    bytes_ = bytes;
    return ok();
}

std::shared_ptr<Budget> make_chain_budget(const Limits& limits) {
    return std::make_shared<Budget>(limits.max_chain_memory, UINT64_MAX);
}

std::shared_ptr<Budget> make_image_budget(const OpenOptions& options, std::shared_ptr<Budget> chain) {
    const Limits& l = options.limits;
    uint64_t mem = l.max_image_memory, work = l.max_work;
    if (options.untrusted) {
        mem = std::min(mem, l.max_untrusted_memory);
        work = std::min(work, l.max_untrusted_work);
    }
    return std::make_shared<Budget>(mem, work, std::move(chain));
}

OpenContext::OpenContext(FileSystem& fs, std::string image_name, const OpenOptions& options)
    : fs_(fs), name_(std::move(image_name)), options_(options), budget_(make_image_budget(options)) {}

}  // namespace vdisk
