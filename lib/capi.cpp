// SPDX-License-Identifier: Apache-2.0
// The C API (include/vdisk/vdisk.h) over the C++ API.
//
// Handles are validated against a table of live handles, so a NULL or closed handle is an error and not a
// crash. Each call pins its handle (a count of calls in flight) while it runs; vdisk_close removes the
// handle from the table first, so no new call can pin it, then waits for the pinned calls to finish
// before it destroys the device. Errors are stored per thread, as libnbd does.
#include "vdisk/vdisk.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <unordered_set>

#include "vdisk/vdisk.hpp"

struct vdisk_image {
    std::unique_ptr<vdisk::FileSystem> fs;
    vdisk::Registry registry;
    vdisk::OpenedImage image;
    std::string name;
    std::string format_name;
    // Calls in flight; guarded by the table's mutex, signalled through its condition variable.
    unsigned users = 0;
};

namespace {

using vdisk::ErrorCode;

// ---- per-thread error state ----------------------------------------------------------------------------
struct LastError {
    bool set = false;
    int code = 0;
    std::string line, message, file, format;
    std::optional<uint64_t> offset;
};
thread_local LastError last_error;

int code_of(ErrorCode c) {
    switch (c) {
        case ErrorCode::io: return VDISK_E_IO;
        case ErrorCode::invalid_format: return VDISK_E_INVALID_FORMAT;
        case ErrorCode::unsupported: return VDISK_E_UNSUPPORTED;
        case ErrorCode::corrupt: return VDISK_E_CORRUPT;
        case ErrorCode::out_of_range: return VDISK_E_OUT_OF_RANGE;
        case ErrorCode::not_found: return VDISK_E_NOT_FOUND;
        case ErrorCode::access_denied: return VDISK_E_ACCESS_DENIED;
        case ErrorCode::limit_exceeded: return VDISK_E_LIMIT_EXCEEDED;
        case ErrorCode::read_only: return VDISK_E_READ_ONLY;
        case ErrorCode::invalid_argument: return VDISK_E_INVALID_ARGUMENT;
        default: break;  // kinds added to the C++ API later (cancelled, ...) map by name below
    }
    if (vdisk::to_string(c) == "cancelled") return VDISK_E_CANCELLED;
    return VDISK_E_INTERNAL;
}

int fail(const vdisk::Error& e, int code) {
    LastError& le = last_error;
    le.set = true;
    le.code = code;
    le.message = e.message;
    le.file = e.file;
    le.format = e.format;
    le.offset = e.offset;
    le.line = e.to_string();
    return code;
}
int fail(const vdisk::Error& e) { return fail(e, code_of(e.code)); }
int fail(int code, std::string message) {
    vdisk::Error e;
    e.message = std::move(message);
    return fail(e, code);
}
int fail_invalid(const char* fn, const char* what) {
    return fail(VDISK_E_INVALID_ARGUMENT, std::string(fn) + ": " + what);
}

// Run `body` with C++ exceptions (allocation failure, a bug) turned into error codes: none may cross into C.
template <typename F>
auto guarded(F&& body, decltype(body()) on_error) noexcept -> decltype(body()) {
    try {
        return body();
    } catch (const std::bad_alloc&) {
        fail(VDISK_E_NO_MEMORY, "out of memory");
    } catch (const std::exception& ex) {
        fail(VDISK_E_INTERNAL, std::string("internal error: ") + ex.what());
    } catch (...) {
        fail(VDISK_E_INTERNAL, "internal error");
    }
    return on_error;
}

// ---- the table of live handles -------------------------------------------------------------------------
struct Table {
    std::mutex mu;
    std::condition_variable idle;
    std::unordered_set<const vdisk_image*> live;
};
Table& table() {
    static Table* t = new Table;  // never destroyed: handles may be closed from static destructors
    return *t;
}

// Pins a handle for the duration of one call.
class Pin {
public:
    Pin(vdisk_image* img, const char* fn) : img_(nullptr) {
        if (!img) {
            fail_invalid(fn, "NULL handle");
            return;
        }
        Table& t = table();
        std::lock_guard lock(t.mu);
        if (!t.live.count(img)) {
            fail_invalid(fn, "handle is closed or was never opened");
            return;
        }
        ++img->users;
        img_ = img;
    }
    ~Pin() {
        if (!img_) return;
        Table& t = table();
        std::lock_guard lock(t.mu);
        if (--img_->users == 0) t.idle.notify_all();
    }
    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;
    explicit operator bool() const { return img_ != nullptr; }
    vdisk::BlockDevice& dev() const { return *img_->image.device; }
    vdisk_image* operator->() const { return img_; }

private:
    vdisk_image* img_;
};

vdisk_image* register_handle(std::unique_ptr<vdisk_image> h) {
    Table& t = table();
    std::lock_guard lock(t.mu);
    t.live.insert(h.get());
    return h.release();
}

vdisk::OpenOptions open_options(const char* format, unsigned flags, const vdisk_limits* limits) {
    vdisk::OpenOptions o;
    o.format = format ? format : "";
    o.read_write = (flags & VDISK_OPEN_READ_WRITE) != 0;
    o.untrusted = (flags & VDISK_OPEN_UNTRUSTED) != 0;
    o.no_backing = (flags & VDISK_OPEN_NO_BACKING) != 0;
    if (limits) {
        if (limits->max_chain_depth) o.limits.max_chain_depth = limits->max_chain_depth;
        if (limits->max_extents) o.limits.max_extents = limits->max_extents;
        if (limits->max_snapshots) o.limits.max_snapshots = limits->max_snapshots;
        if (limits->max_metadata_bytes) o.limits.max_metadata_bytes = limits->max_metadata_bytes;
        if (limits->max_cache_bytes) o.limits.max_cache_bytes = limits->max_cache_bytes;
        if (limits->max_descriptor_bytes) o.limits.max_descriptor_bytes = limits->max_descriptor_bytes;
    }
    return o;
}

vdisk_extent to_c(const vdisk::Extent& e) {
    vdisk_extent x{};
    x.offset = e.offset;
    x.length = e.length;
    x.kind = e.kind == vdisk::ExtentKind::data   ? VDISK_EXTENT_DATA
             : e.kind == vdisk::ExtentKind::zero ? VDISK_EXTENT_ZERO
                                                 : VDISK_EXTENT_UNALLOCATED;
    x.compressed = e.compressed;
    x.has_host_offset = e.host_offset.has_value();
    x.host_offset = e.host_offset.value_or(0);
    return x;
}

vdisk_extent to_c(const vdisk::MappedExtent& m) {
    vdisk_extent x{};
    x.offset = m.offset;
    x.length = m.length;
    x.kind = m.zero ? VDISK_EXTENT_ZERO : m.data ? VDISK_EXTENT_DATA : VDISK_EXTENT_UNALLOCATED;
    x.compressed = m.compressed;
    x.has_host_offset = m.host_offset.has_value();
    x.host_offset = m.host_offset.value_or(0);
    x.depth = m.depth;
    return x;
}

int status_at(vdisk::BlockDevice& dev, uint64_t offset, uint64_t max_length, unsigned flags, vdisk_extent* out) {
    if (flags & VDISK_STATUS_CHAIN) {
        auto m = vdisk::map_extent(dev, offset, max_length);
        if (!m) return fail(m.error());
        *out = to_c(*m);
    } else {
        auto e = dev.block_status(offset, max_length);
        if (!e) return fail(e.error());
        *out = to_c(*e);
    }
    return 0;
}

char* dup_string(const std::string& s) {
    char* p = static_cast<char*>(std::malloc(s.size() + 1));
    if (!p) return nullptr;
    std::memcpy(p, s.c_str(), s.size() + 1);
    return p;
}

}  // namespace

extern "C" {

VDISK_API const char* vdisk_version(void) { return VDISK_VERSION_STRING; }
VDISK_API int vdisk_version_number(void) { return VDISK_VERSION_NUMBER; }

VDISK_API const char* vdisk_get_error(void) { return last_error.set ? last_error.line.c_str() : nullptr; }
VDISK_API int vdisk_get_error_code(void) { return last_error.set ? last_error.code : 0; }
VDISK_API const char* vdisk_get_error_message(void) { return last_error.message.c_str(); }
VDISK_API const char* vdisk_get_error_file(void) { return last_error.file.c_str(); }
VDISK_API const char* vdisk_get_error_format(void) { return last_error.format.c_str(); }
VDISK_API int vdisk_get_error_offset(uint64_t* offset) {
    if (!last_error.set || !last_error.offset) return 0;
    if (offset) *offset = *last_error.offset;
    return 1;
}

VDISK_API const char* vdisk_error_name(int code) {
    switch (code) {
        case VDISK_OK: return "ok";
        case VDISK_E_IO: return "io";
        case VDISK_E_INVALID_FORMAT: return "invalid_format";
        case VDISK_E_UNSUPPORTED: return "unsupported";
        case VDISK_E_CORRUPT: return "corrupt";
        case VDISK_E_OUT_OF_RANGE: return "out_of_range";
        case VDISK_E_NOT_FOUND: return "not_found";
        case VDISK_E_ACCESS_DENIED: return "access_denied";
        case VDISK_E_LIMIT_EXCEEDED: return "limit_exceeded";
        case VDISK_E_READ_ONLY: return "read_only";
        case VDISK_E_INVALID_ARGUMENT: return "invalid_argument";
        case VDISK_E_CANCELLED: return "cancelled";
        case VDISK_E_NO_MEMORY: return "no_memory";
        case VDISK_E_INTERNAL: return "internal";
        default: return "unknown";
    }
}

VDISK_API void vdisk_free(void* ptr) { std::free(ptr); }

VDISK_API vdisk_image* vdisk_open_limits(const char* path, const char* format, unsigned flags,
                                         const vdisk_limits* limits) {
    return guarded(
        [&]() -> vdisk_image* {
            if (!path) return fail_invalid("vdisk_open", "NULL path"), nullptr;
            if (flags & ~(VDISK_OPEN_READ_WRITE | VDISK_OPEN_UNTRUSTED | VDISK_OPEN_NO_BACKING))
                return fail_invalid("vdisk_open", "unknown flags"), nullptr;
            if (limits && limits->reserved)
                return fail_invalid("vdisk_open", "vdisk_limits.reserved must be 0"), nullptr;
            auto h = std::make_unique<vdisk_image>();
            h->fs = vdisk::make_posix_file_system();
            h->registry = vdisk::Registry::builtin();
            h->name = path;
            auto img = vdisk::open_image(h->registry, *h->fs, h->name, open_options(format, flags, limits));
            if (!img) return fail(img.error()), nullptr;
            h->image = std::move(*img);
            h->format_name = h->image.device->info().format;
            return register_handle(std::move(h));
        },
        nullptr);
}

VDISK_API vdisk_image* vdisk_open(const char* path, const char* format, unsigned flags) {
    return vdisk_open_limits(path, format, flags, nullptr);
}

VDISK_API vdisk_image* vdisk_create(const char* path, const char* format, uint64_t size, const char* options) {
    return guarded(
        [&]() -> vdisk_image* {
            if (!path) return fail_invalid("vdisk_create", "NULL path"), nullptr;
            if (!format || !*format) return fail_invalid("vdisk_create", "no format given"), nullptr;
            auto h = std::make_unique<vdisk_image>();
            h->fs = vdisk::make_posix_file_system();
            h->registry = vdisk::Registry::builtin();
            h->name = path;
            vdisk::CreateOptions co;
            if (size) co.size = size;
            if (options && *options) {
                auto values = vdisk::parse_option_list(options);
                if (!values) return fail(values.error()), nullptr;
                co.values = std::move(*values);
            }
            auto fmt = h->registry.lookup(format);
            if (!fmt) return fail(fmt.error()), nullptr;
            auto dev = vdisk::create_image(h->registry, *h->fs, h->name, format, std::move(co));
            if (!dev) return fail(dev.error()), nullptr;
            h->image.device = std::move(*dev);
            h->image.format = *fmt;
            h->format_name = h->image.device->info().format;
            return register_handle(std::move(h));
        },
        nullptr);
}

VDISK_API int vdisk_close(vdisk_image* img) {
    if (!img) return fail_invalid("vdisk_close", "NULL handle");
    Table& t = table();
    {
        std::unique_lock lock(t.mu);
        if (!t.live.erase(img)) return fail_invalid("vdisk_close", "handle is closed or was never opened");
        t.idle.wait(lock, [&] { return img->users == 0; });
    }
    std::unique_ptr<vdisk_image> owned(img);
    return guarded(
        [&]() -> int {
            auto st = owned->image.device->close();
            // Chain layers below were opened read-only; closing the top is what finishes the image.
            owned.reset();
            if (!st) return fail(st.error());
            return 0;
        },
        VDISK_E_INTERNAL);
}

VDISK_API int64_t vdisk_size(vdisk_image* img) {
    Pin p(img, "vdisk_size");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    return static_cast<int64_t>(p.dev().size());
}

VDISK_API const char* vdisk_format(vdisk_image* img) {
    Pin p(img, "vdisk_format");
    if (!p) return nullptr;
    return p->format_name.c_str();
}

VDISK_API int vdisk_is_read_only(vdisk_image* img) {
    Pin p(img, "vdisk_is_read_only");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    return p.dev().read_only() ? 1 : 0;
}

VDISK_API int vdisk_pread(vdisk_image* img, void* buf, size_t count, uint64_t offset) {
    Pin p(img, "vdisk_pread");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    if (!buf && count) return fail_invalid("vdisk_pread", "NULL buffer");
    return guarded(
        [&]() -> int {
            auto st = p.dev().read(offset, {static_cast<uint8_t*>(buf), count});
            return st ? 0 : fail(st.error());
        },
        VDISK_E_INTERNAL);
}

VDISK_API int vdisk_pwrite(vdisk_image* img, const void* buf, size_t count, uint64_t offset) {
    Pin p(img, "vdisk_pwrite");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    if (!buf && count) return fail_invalid("vdisk_pwrite", "NULL buffer");
    return guarded(
        [&]() -> int {
            auto st = p.dev().write(offset, {static_cast<const uint8_t*>(buf), count});
            return st ? 0 : fail(st.error());
        },
        VDISK_E_INTERNAL);
}

VDISK_API int vdisk_write_zeroes(vdisk_image* img, uint64_t offset, uint64_t length, unsigned flags) {
    Pin p(img, "vdisk_write_zeroes");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    if (flags & ~VDISK_ZERO_MAY_UNMAP) return fail_invalid("vdisk_write_zeroes", "unknown flags");
    return guarded(
        [&]() -> int {
            auto st = p.dev().write_zeroes(offset, length, (flags & VDISK_ZERO_MAY_UNMAP) != 0);
            return st ? 0 : fail(st.error());
        },
        VDISK_E_INTERNAL);
}

VDISK_API int vdisk_discard(vdisk_image* img, uint64_t offset, uint64_t length) {
    Pin p(img, "vdisk_discard");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    return guarded(
        [&]() -> int {
            auto st = p.dev().discard(offset, length);
            return st ? 0 : fail(st.error());
        },
        VDISK_E_INTERNAL);
}

VDISK_API int vdisk_flush(vdisk_image* img) {
    Pin p(img, "vdisk_flush");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    return guarded(
        [&]() -> int {
            auto st = p.dev().flush();
            return st ? 0 : fail(st.error());
        },
        VDISK_E_INTERNAL);
}

VDISK_API int vdisk_block_status(vdisk_image* img, uint64_t offset, uint64_t max_length, unsigned flags,
                                 vdisk_extent* out) {
    Pin p(img, "vdisk_block_status");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    if (!out) return fail_invalid("vdisk_block_status", "NULL result pointer");
    if (flags & ~VDISK_STATUS_CHAIN) return fail_invalid("vdisk_block_status", "unknown flags");
    if (max_length == 0) return fail_invalid("vdisk_block_status", "zero length");
    return guarded([&]() -> int { return status_at(p.dev(), offset, max_length, flags, out); }, VDISK_E_INTERNAL);
}

VDISK_API int vdisk_extents(vdisk_image* img, uint64_t offset, uint64_t length, unsigned flags, vdisk_extent_fn fn,
                            void* opaque) {
    Pin p(img, "vdisk_extents");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    if (!fn) return fail_invalid("vdisk_extents", "NULL callback");
    if (flags & ~VDISK_STATUS_CHAIN) return fail_invalid("vdisk_extents", "unknown flags");
    return guarded(
        [&]() -> int {
            uint64_t size = p.dev().size();
            if (offset > size || length > size - offset)
                return fail(VDISK_E_OUT_OF_RANGE, "vdisk_extents: range is outside the device");
            uint64_t end = offset + length;
            while (offset < end) {
                vdisk_extent x;
                if (int rc = status_at(p.dev(), offset, end - offset, flags, &x); rc < 0) return rc;
                if (int rc = fn(opaque, &x); rc != 0) return rc;
                offset += x.length;
            }
            return 0;
        },
        VDISK_E_INTERNAL);
}

VDISK_API char* vdisk_info_json(vdisk_image* img) {
    Pin p(img, "vdisk_info_json");
    if (!p) return nullptr;
    return guarded(
        [&]() -> char* {
            char* s = dup_string(vdisk::info_json(p.dev(), p->name).dump(4));
            if (!s) fail(VDISK_E_NO_MEMORY, "out of memory");
            return s;
        },
        nullptr);
}

VDISK_API int vdisk_check(vdisk_image* img, int repair, vdisk_check_result* out) {
    Pin p(img, "vdisk_check");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    if (repair < VDISK_REPAIR_NONE || repair > VDISK_REPAIR_ALL) return fail_invalid("vdisk_check", "bad repair mode");
    if (!p->image.format) return fail(VDISK_E_UNSUPPORTED, "vdisk_check: format unknown");
    return guarded(
        [&]() -> int {
            auto mode = repair == VDISK_REPAIR_ALL     ? vdisk::RepairMode::all
                        : repair == VDISK_REPAIR_LEAKS ? vdisk::RepairMode::leaks
                                                       : vdisk::RepairMode::none;
            auto r = p->image.format->check(p.dev(), mode);
            if (!r) return fail(r.error());
            if (out) {
                out->corruptions = r->corruptions;
                out->leaks = r->leaks;
                out->check_errors = r->check_errors;
                out->corruptions_fixed = r->corruptions_fixed;
                out->leaks_fixed = r->leaks_fixed;
            }
            return 0;
        },
        VDISK_E_INTERNAL);
}

VDISK_API int vdisk_convert(vdisk_image* src, const char* dest_path, const char* format, const char* options,
                            unsigned flags, vdisk_progress_fn progress, void* opaque) {
    Pin p(src, "vdisk_convert");
    if (!p) return VDISK_E_INVALID_ARGUMENT;
    if (!dest_path) return fail_invalid("vdisk_convert", "NULL destination");
    if (!format || !*format) return fail_invalid("vdisk_convert", "no output format given");
    if (flags & ~VDISK_CONVERT_COMPRESS) return fail_invalid("vdisk_convert", "unknown flags");
    return guarded(
        [&]() -> int {
            vdisk::ConvertOptions co;
            co.output_format = format;
            co.compress = (flags & VDISK_CONVERT_COMPRESS) != 0;
            if (options && *options) {
                auto values = vdisk::parse_option_list(options);
                if (!values) return fail(values.error());
                co.create.values = std::move(*values);
            }
            // The callback cancels through its return value; the engine polls ConvertOptions::cancel.
            std::atomic<bool> cancel{false};
            co.cancel = &cancel;
            if (progress)
                co.progress = [&](uint64_t done, uint64_t total) {
                    if (!cancel.load() && progress(opaque, done, total) != 0) cancel.store(true);
                };
            auto st = vdisk::convert(p->registry, p.dev(), *p->fs, dest_path, co);
            if (!st) {
                if (cancel.load()) return fail(st.error(), VDISK_E_CANCELLED);
                return fail(st.error());
            }
            if (cancel.load()) {
                // The request came after the engine had queued its last chunk, so it finished anyway. A
                // cancel must mean the same thing every time: no target, VDISK_E_CANCELLED.
                (void)p->fs->remove(dest_path);
                return fail(VDISK_E_CANCELLED, "conversion cancelled");
            }
            return 0;
        },
        VDISK_E_INTERNAL);
}

}  // extern "C"
