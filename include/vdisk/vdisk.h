/* SPDX-License-Identifier: Apache-2.0 */
/* vdisk — the C API: open, read, write, map, inspect, check and convert virtual disk images (raw, qcow2,
 * vmdk, vhd/vpc, vhdx, vdi) from C and from any language with a C FFI (Go cgo, Python ctypes/cffi, Rust).
 *
 *   vdisk_image *img = vdisk_open("disk.vmdk", NULL, VDISK_OPEN_READ_ONLY);
 *   if (!img) { fprintf(stderr, "%s\n", vdisk_get_error()); return 1; }
 *   char buf[4096];
 *   if (vdisk_pread(img, buf, sizeof buf, 0) < 0) fprintf(stderr, "%s\n", vdisk_get_error());
 *   vdisk_close(img);
 *
 * Conventions (libnbd's):
 * - Functions returning int return 0 (or a non-negative count) on success and a negative VDISK_E_* code on
 *   failure; functions returning a pointer return NULL on failure. After a failure, vdisk_get_error() and
 *   the other getters describe it; they are thread-local, so each thread sees its own last error.
 * - Misuse never crashes: a NULL handle, a handle already closed, NULL buffers or bad flags give
 *   VDISK_E_INVALID_ARGUMENT. (A pointer that was never a handle at all is not detected beyond that.)
 * - Threads: vdisk_pread, vdisk_block_status and vdisk_extents on one handle may run from many threads at
 *   once; writes, flushes and discards on a handle are serialized by the library. vdisk_close waits for
 *   calls in flight on the handle, and later calls fail cleanly (so a callback must not close the handle
 *   whose call invoked it: that close would wait for itself).
 * - Paths are host paths, resolved against the working directory; references inside images (backing
 *   files, extents) are resolved relative to the image that names them.
 * - No exception or abort crosses this API. Memory this API returns is released with vdisk_free().
 */
#ifndef VDISK_H
#define VDISK_H

#include <stddef.h>
#include <stdint.h>

#include "vdisk/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version -------------------------------------------------------------------------------------------- */
#define VDISK_VERSION_MAJOR 0
#define VDISK_VERSION_MINOR 1
#define VDISK_VERSION_PATCH 0
#define VDISK_VERSION_STRING "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH, for #if comparisons. */
#define VDISK_VERSION_NUMBER (VDISK_VERSION_MAJOR * 10000 + VDISK_VERSION_MINOR * 100 + VDISK_VERSION_PATCH)

/* The version of the library actually loaded ("0.1.0"); compare with VDISK_VERSION_STRING. */
VDISK_API const char *vdisk_version(void);
/* The loaded library's VDISK_VERSION_NUMBER. */
VDISK_API int vdisk_version_number(void);

/* ---- errors --------------------------------------------------------------------------------------------- */
#define VDISK_OK 0
#define VDISK_E_IO (-1)                /* the operating system failed a read, write or open */
#define VDISK_E_INVALID_FORMAT (-2)    /* the bytes are not this format (bad magic or signature) */
#define VDISK_E_UNSUPPORTED (-3)       /* a valid feature vdisk does not implement */
#define VDISK_E_CORRUPT (-4)           /* recognised, but a structure is inconsistent or out of range */
#define VDISK_E_OUT_OF_RANGE (-5)      /* a request outside the device */
#define VDISK_E_NOT_FOUND (-6)         /* a file, snapshot or format that does not exist */
#define VDISK_E_ACCESS_DENIED (-7)     /* forbidden by policy (untrusted mode) */
#define VDISK_E_LIMIT_EXCEEDED (-8)    /* a configured cap would be exceeded */
#define VDISK_E_READ_ONLY (-9)         /* a write to a read-only image */
#define VDISK_E_INVALID_ARGUMENT (-10) /* bad argument: NULL or closed handle, bad option, bad flags */
#define VDISK_E_CANCELLED (-11)        /* the progress callback asked to stop */
#define VDISK_E_NO_MEMORY (-12)        /* out of memory */
#define VDISK_E_INTERNAL (-13)         /* anything else (a newer library's error kind, a bug) */

/* The last error recorded on the calling thread (a failed call records one; a successful call leaves it):
 * one line naming file, format, structure and offset where known, or NULL when no call has failed yet.
 * Valid until the thread's next failing vdisk call. */
VDISK_API const char *vdisk_get_error(void);
/* Its code (VDISK_E_*), 0 when none. */
VDISK_API int vdisk_get_error_code(void);
/* The message alone, the file and the format involved ("" when unknown). */
VDISK_API const char *vdisk_get_error_message(void);
VDISK_API const char *vdisk_get_error_file(void);
VDISK_API const char *vdisk_get_error_format(void);
/* 1 and *offset set when the error has a byte offset in vdisk_get_error_file(), else 0. */
VDISK_API int vdisk_get_error_offset(uint64_t *offset);
/* Stable short name of a code ("corrupt", "io", ...); "unknown" for others. Never NULL. */
VDISK_API const char *vdisk_error_name(int code);

/* Release memory returned by this API (JSON strings). NULL is fine. */
VDISK_API void vdisk_free(void *ptr);

/* ---- opening -------------------------------------------------------------------------------------------- */
typedef struct vdisk_image vdisk_image;

#define VDISK_OPEN_READ_ONLY 0u
#define VDISK_OPEN_READ_WRITE 1u
/* Open no file but the one named (backing files, extents, data files are an error); raw only when the
 * format is given; use this for images from strangers. */
#define VDISK_OPEN_UNTRUSTED 2u
/* Do not open the backing chain (one layer only; reads of unallocated ranges return zeros). */
#define VDISK_OPEN_NO_BACKING 4u

/* Caps on what a hostile image can make the library do; 0 in a field keeps the default. */
typedef struct vdisk_limits {
    uint32_t max_chain_depth;      /* backing layers below the top image (default 16) */
    uint32_t max_extents;          /* VMDK extent lines (4096) */
    uint32_t max_snapshots;        /* qcow2 internal snapshots (65536) */
    uint32_t reserved;             /* must be 0 */
    uint64_t max_metadata_bytes;   /* tables held in memory per image (512 MiB) */
    uint64_t max_cache_bytes;      /* metadata caches per image (32 MiB) */
    uint64_t max_descriptor_bytes; /* VMDK text descriptors (1 MiB) */
} vdisk_limits;

/* Open an image. `format` NULL or "" probes ("raw", "qcow2", "vmdk", "vhd"/"vpc", "vhdx", "vdi"); flags
 * are VDISK_OPEN_*. Returns NULL on error. */
VDISK_API vdisk_image *vdisk_open(const char *path, const char *format, unsigned flags);
/* The same with limits (NULL: defaults). */
VDISK_API vdisk_image *vdisk_open_limits(const char *path, const char *format, unsigned flags,
                                         const vdisk_limits *limits);
/* Create a new image `path` of `size` bytes (0: take the size from the backing_file option) in `format` with
 * qemu-img's -o options ("cluster_size=65536,compat=1.1", ",," escapes a comma; NULL or "" for none),
 * and return it open read-write. Close it to finish writing. */
VDISK_API vdisk_image *vdisk_create(const char *path, const char *format, uint64_t size, const char *options);

/* Finish writing (footers, metadata), flush and release the handle. Returns the status of finishing; the
 * handle is gone either way. Waits for calls in flight on other threads. NULL is an error, not a crash. */
VDISK_API int vdisk_close(vdisk_image *img);

/* ---- I/O -------------------------------------------------------------------------------------------------- */
/* Virtual size in bytes, or a negative VDISK_E_* code. */
VDISK_API int64_t vdisk_size(vdisk_image *img);
/* Format name ("qcow2"; VHD is "vpc" as qemu-img names it), or NULL. Valid while the handle is open. */
VDISK_API const char *vdisk_format(vdisk_image *img);
/* 1 read-only, 0 writable, negative on error. */
VDISK_API int vdisk_is_read_only(vdisk_image *img);

/* Read `count` bytes at `offset` (through the backing chain). 0 or a negative code. */
VDISK_API int vdisk_pread(vdisk_image *img, void *buf, size_t count, uint64_t offset);
/* Write `count` bytes at `offset`; unaligned edges are read-modified-written. */
VDISK_API int vdisk_pwrite(vdisk_image *img, const void *buf, size_t count, uint64_t offset);
/* Make [offset, offset+length) read as zeros; with VDISK_ZERO_MAY_UNMAP the space may be deallocated. */
#define VDISK_ZERO_MAY_UNMAP 1u
VDISK_API int vdisk_write_zeroes(vdisk_image *img, uint64_t offset, uint64_t length, unsigned flags);
/* Hint that a range is unused (content afterwards unspecified). */
VDISK_API int vdisk_discard(vdisk_image *img, uint64_t offset, uint64_t length);
/* Make written data durable. */
VDISK_API int vdisk_flush(vdisk_image *img);

/* ---- allocation status ---------------------------------------------------------------------------------- */
#define VDISK_EXTENT_DATA 0 /* stored data: read it */
#define VDISK_EXTENT_ZERO 1 /* reads as zeros (zero cluster, hole) */
#define VDISK_EXTENT_UNALLOCATED                                                  \
    2 /* not in this layer (one layer) / in no layer (chain): reads fall through, \
         or read as zeros at the bottom of the chain */

typedef struct vdisk_extent {
    uint64_t offset;      /* virtual offset */
    uint64_t length;      /* bytes, > 0 */
    int kind;             /* VDISK_EXTENT_* */
    int compressed;       /* data stored compressed (no host offset) */
    int has_host_offset;  /* host_offset is meaningful */
    uint32_t depth;       /* VDISK_STATUS_CHAIN: the layer that answered (0 = top); else 0 */
    uint64_t host_offset; /* where the data starts in the layer's file */
} vdisk_extent;

/* Ask the whole chain (the topmost layer that has the range answers) instead of the top layer only. */
#define VDISK_STATUS_CHAIN 1u

/* The extent at `offset`, at most `max_length` bytes long (clamped to the end). */
VDISK_API int vdisk_block_status(vdisk_image *img, uint64_t offset, uint64_t max_length, unsigned flags,
                                 vdisk_extent *out);
/* Called for each extent in order; return 0 to continue, non-zero to stop (vdisk_extents then returns
 * that value). */
typedef int (*vdisk_extent_fn)(void *opaque, const vdisk_extent *extent);
/* Walk [offset, offset+length) extent by extent. Returns 0, the callback's non-zero value, or an error. */
VDISK_API int vdisk_extents(vdisk_image *img, uint64_t offset, uint64_t length, unsigned flags, vdisk_extent_fn fn,
                            void *opaque);

/* ---- inspection, check, convert --------------------------------------------------------------------------- */
/* What `vdisk info --output=json` prints for the top layer (qemu-img's field names), as a NUL-terminated
 * string to release with vdisk_free(); NULL on error. */
VDISK_API char *vdisk_info_json(vdisk_image *img);

typedef struct vdisk_check_result {
    uint64_t corruptions;
    uint64_t leaks;
    uint64_t check_errors;
    uint64_t corruptions_fixed;
    uint64_t leaks_fixed;
} vdisk_check_result;
#define VDISK_REPAIR_NONE 0
#define VDISK_REPAIR_LEAKS 1 /* needs a read-write handle */
#define VDISK_REPAIR_ALL 2
/* Consistency check of the top layer (qemu-img check's numbers). VDISK_E_UNSUPPORTED when the format has
 * none. `out` may be NULL. */
VDISK_API int vdisk_check(vdisk_image *img, int repair, vdisk_check_result *out);

/* Progress: bytes done and total. Return 0 to go on, non-zero to cancel (the convert then fails with
 * VDISK_E_CANCELLED and leaves no target behind). Called from the converting thread. */
typedef int (*vdisk_progress_fn)(void *opaque, uint64_t done, uint64_t total);
#define VDISK_CONVERT_COMPRESS 1u /* -c: compressed clusters/grains where the format has them */
/* Copy every byte of `src` (through its chain) into a new image `dest_path` in `format` with -o `options`
 * (NULL or "": none). The target is written under a temporary name and renamed into place only on
 * success. `progress` may be NULL. */
VDISK_API int vdisk_convert(vdisk_image *src, const char *dest_path, const char *format, const char *options,
                            unsigned flags, vdisk_progress_fn progress, void *opaque);

#ifdef __cplusplus
}
#endif

#endif /* VDISK_H */
