/* SPDX-License-Identifier: Apache-2.0 */
/* nbdkit-vdisk-plugin: serve any image vdisk reads (raw, qcow2, vmdk, vhd/vpc, vhdx, vdi) over NBD, through
 * the C API.
 *
 *   nbdkit vdisk file=disk.vmdk [format=vmdk] [untrusted=1]      (add -r to serve read-only)
 *
 * One image is opened for the whole server (at the first connection: read-only when nbdkit runs with -r or
 * the image cannot be written) and shared by every connection; the library lets reads and block status run
 * in parallel and serializes writes, so the thread model is PARALLEL. Because all connections share one
 * handle, a flush on any connection covers the writes completed on all of them: multi-conn is safe and
 * advertised. The image is closed (footers, metadata, flush) when nbdkit unloads the plugin. */
#define _POSIX_C_SOURCE 200809L /* NOLINT(bugprone-reserved-identifier): the POSIX feature-test macro */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/vdisk.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static char *filename;
static char *format;
static int untrusted;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static vdisk_image *image;

static void vdisk_plugin_unload(void) {
    if (image && vdisk_close(image) < 0) nbdkit_error("closing %s: %s", filename, vdisk_get_error());
    image = NULL;
    free(filename);
    free(format);
}

static int vdisk_plugin_config(const char *key, const char *value) {
    if (strcmp(key, "file") == 0) {
        free(filename);
        filename = nbdkit_realpath(value);
        return filename ? 0 : -1;
    }
    if (strcmp(key, "format") == 0) {
        free(format);
        format = strdup(value);
        if (!format) {
            nbdkit_error("strdup: %m");
            return -1;
        }
        return 0;
    }
    if (strcmp(key, "untrusted") == 0) {
        int r = nbdkit_parse_bool(value);
        if (r < 0) return -1;
        untrusted = r;
        return 0;
    }
    nbdkit_error("unknown parameter '%s'", key);
    return -1;
}

static int vdisk_plugin_config_complete(void) {
    if (!filename) {
        nbdkit_error("the file parameter is required (file=IMAGE)");
        return -1;
    }
    return 0;
}

#define vdisk_plugin_config_help                                                           \
    "file=<IMAGE>     (required) The disk image (raw, qcow2, vmdk, vhd/vpc, vhdx, vdi).\n" \
    "format=<FMT>               Its format (default: probe).\n"                            \
    "untrusted=<BOOL>           Open no other file (backing, extents) and use tighter limits."

/* Errors: the library's message, and an errno the NBD client understands. */
static int fail(void) {
    int code = vdisk_get_error_code();
    nbdkit_error("%s", vdisk_get_error() ? vdisk_get_error() : "vdisk error");
    switch (code) {
        case VDISK_E_READ_ONLY: nbdkit_set_error(EROFS); break;
        case VDISK_E_OUT_OF_RANGE:
        case VDISK_E_INVALID_ARGUMENT: nbdkit_set_error(EINVAL); break;
        case VDISK_E_LIMIT_EXCEEDED: nbdkit_set_error(ENOSPC); break;
        case VDISK_E_NO_MEMORY: nbdkit_set_error(ENOMEM); break;
        case VDISK_E_UNSUPPORTED: nbdkit_set_error(EOPNOTSUPP); break;
        default: nbdkit_set_error(EIO); break;
    }
    return -1;
}

static void *vdisk_plugin_open(int readonly) {
    pthread_mutex_lock(&open_lock);
    if (!image) {
        unsigned flags = untrusted ? VDISK_OPEN_UNTRUSTED : 0;
        if (!readonly) image = vdisk_open(filename, format, flags | VDISK_OPEN_READ_WRITE);
        /* A file we may not write (permissions, a format vdisk only reads) is still served read-only. */
        if (!image && (readonly || vdisk_get_error_code() == VDISK_E_READ_ONLY ||
                       vdisk_get_error_code() == VDISK_E_ACCESS_DENIED || vdisk_get_error_code() == VDISK_E_IO ||
                       vdisk_get_error_code() == VDISK_E_UNSUPPORTED))
            image = vdisk_open(filename, format, flags);
        if (!image) fail();
    }
    vdisk_image *h = image;
    pthread_mutex_unlock(&open_lock);
    return h;
}

static int64_t vdisk_plugin_get_size(void *handle) {
    int64_t r = vdisk_size(handle);
    return r < 0 ? fail() : r;
}

static int vdisk_plugin_can_write(void *handle) {
    int r = vdisk_is_read_only(handle);
    return r < 0 ? fail() : !r;
}

static int vdisk_plugin_can_multi_conn(void *handle) {
    (void)handle;
    return 1;
}

static int vdisk_plugin_can_flush(void *handle) {
    (void)handle;
    return 1;
}

static int vdisk_plugin_can_trim(void *handle) { return vdisk_plugin_can_write(handle); }
static int vdisk_plugin_can_zero(void *handle) { return vdisk_plugin_can_write(handle); }
static int vdisk_plugin_can_fua(void *handle) {
    (void)handle;
    return NBDKIT_FUA_EMULATE;
}
static int vdisk_plugin_can_extents(void *handle) {
    (void)handle;
    return 1;
}

static int vdisk_plugin_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags) {
    (void)flags;
    return vdisk_pread(handle, buf, count, offset) < 0 ? fail() : 0;
}

static int vdisk_plugin_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset, uint32_t flags) {
    (void)flags; /* FUA is emulated by nbdkit with a flush */
    return vdisk_pwrite(handle, buf, count, offset) < 0 ? fail() : 0;
}

static int vdisk_plugin_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags) {
    unsigned zf = (flags & NBDKIT_FLAG_MAY_TRIM) ? VDISK_ZERO_MAY_UNMAP : 0;
    return vdisk_write_zeroes(handle, offset, count, zf) < 0 ? fail() : 0;
}

static int vdisk_plugin_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags) {
    (void)flags;
    return vdisk_discard(handle, offset, count) < 0 ? fail() : 0;
}

static int vdisk_plugin_flush(void *handle, uint32_t flags) {
    (void)flags;
    return vdisk_flush(handle) < 0 ? fail() : 0;
}

/* Allocation through the whole chain: data, or a hole that reads as zeros. */
static int vdisk_plugin_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                                struct nbdkit_extents *extents) {
    uint64_t end = offset + count;
    /* Enough to answer a request well; nbdkit asks again for the rest. */
    for (int n = 0; offset < end && n < 1024; ++n) {
        vdisk_extent x;
        if (vdisk_block_status(handle, offset, end - offset, VDISK_STATUS_CHAIN, &x) < 0) return fail();
        uint32_t type = x.kind == VDISK_EXTENT_DATA ? 0 : NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
        if (nbdkit_add_extent(extents, x.offset, x.length, type) < 0) return -1;
        offset += x.length;
        if (flags & NBDKIT_FLAG_REQ_ONE) break;
    }
    return 0;
}

static struct nbdkit_plugin plugin = {
    .name = "vdisk",
    .longname = "vdisk: qcow2, vmdk, vhd, vhdx, vdi and raw images",
    .version = VDISK_VERSION_STRING,
    .description = "Serve a virtual disk image of any format vdisk supports.",
    .unload = vdisk_plugin_unload,
    .config = vdisk_plugin_config,
    .config_complete = vdisk_plugin_config_complete,
    .config_help = vdisk_plugin_config_help,
    .magic_config_key = "file",
    .open = vdisk_plugin_open,
    .get_size = vdisk_plugin_get_size,
    .can_write = vdisk_plugin_can_write,
    .can_flush = vdisk_plugin_can_flush,
    .can_trim = vdisk_plugin_can_trim,
    .can_zero = vdisk_plugin_can_zero,
    .can_fua = vdisk_plugin_can_fua,
    .can_extents = vdisk_plugin_can_extents,
    .can_multi_conn = vdisk_plugin_can_multi_conn,
    .pread = vdisk_plugin_pread,
    .pwrite = vdisk_plugin_pwrite,
    .zero = vdisk_plugin_zero,
    .trim = vdisk_plugin_trim,
    .flush = vdisk_plugin_flush,
    .extents = vdisk_plugin_extents,
    .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN(plugin)
