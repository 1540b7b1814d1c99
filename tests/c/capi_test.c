/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of the C API, written in C (C11, -Wall -Wextra -pedantic -Werror). qemu-img and qemu-io are the
 * oracles: they write the images vdisk reads and check the images vdisk writes.
 * usage: capi_test [CASE]   (no argument: every case) */
#define _POSIX_C_SOURCE 200809L /* NOLINT(bugprone-reserved-identifier): the POSIX feature-test macro */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vdisk/vdisk.h>

static int failures = 0;
static char dir[64];

#define CHECK(cond)                                                                                 \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, #cond, \
                    vdisk_get_error() ? vdisk_get_error() : "(none)");                              \
            ++failures;                                                                             \
        }                                                                                           \
    } while (0)

static const char *path(const char *name) {
    static char buf[4][256];
    static int n = 0;
    char *p = buf[n++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* Run a shell command; returns its exit status. */
static int sh(const char *fmt, ...) {
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* ---- cases ---------------------------------------------------------------------------------------------- */

static void test_version(void) {
    CHECK(strcmp(vdisk_version(), VDISK_VERSION_STRING) == 0);
    CHECK(vdisk_version_number() == VDISK_VERSION_NUMBER);
    CHECK(VDISK_VERSION_NUMBER == VDISK_VERSION_MAJOR * 10000 + VDISK_VERSION_MINOR * 100 + VDISK_VERSION_PATCH);
}

static void test_misuse(void) {
    char buf[16];
    vdisk_extent x;
    CHECK(vdisk_close(NULL) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_get_error_code() == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_get_error() != NULL && strstr(vdisk_get_error(), "NULL handle") != NULL);
    CHECK(vdisk_pread(NULL, buf, sizeof buf, 0) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_pwrite(NULL, buf, sizeof buf, 0) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_write_zeroes(NULL, 0, 1, 0) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_discard(NULL, 0, 1) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_flush(NULL) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_size(NULL) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_format(NULL) == NULL);
    CHECK(vdisk_is_read_only(NULL) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_block_status(NULL, 0, 1, 0, &x) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_extents(NULL, 0, 1, 0, NULL, NULL) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_info_json(NULL) == NULL);
    CHECK(vdisk_check(NULL, 0, NULL) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_convert(NULL, "x", "raw", NULL, 0, NULL, NULL) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_open(NULL, NULL, 0) == NULL && vdisk_get_error_code() == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_create(NULL, "qcow2", 1 << 20, NULL) == NULL);
    vdisk_free(NULL);
    CHECK(strcmp(vdisk_error_name(VDISK_E_CORRUPT), "corrupt") == 0);
    CHECK(strcmp(vdisk_error_name(12345), "unknown") == 0);

    /* A closed handle: every call fails cleanly, and closing again too. */
    CHECK(sh("qemu-img create -q -f qcow2 %s 1M", path("m.qcow2")) == 0);
    vdisk_image *img = vdisk_open(path("m.qcow2"), NULL, VDISK_OPEN_READ_ONLY);
    CHECK(img != NULL);
    if (!img) return;
    CHECK(vdisk_open(path("m.qcow2"), NULL, 0x80) == NULL && vdisk_get_error_code() == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_pread(img, NULL, 1, 0) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_block_status(img, 0, 1, 0x40, &x) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_close(img) == 0);
    CHECK(vdisk_pread(img, buf, sizeof buf, 0) == VDISK_E_INVALID_ARGUMENT);
    CHECK(strstr(vdisk_get_error(), "closed") != NULL);
    CHECK(vdisk_size(img) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_close(img) == VDISK_E_INVALID_ARGUMENT);
}

static void test_errors(void) {
    /* Missing file. */
    CHECK(vdisk_open(path("missing.qcow2"), NULL, 0) == NULL);
    CHECK(vdisk_get_error_code() == VDISK_E_NOT_FOUND);
    /* A qcow2 whose L1 table lies past the end of the file: corrupt, with file and offset. */
    CHECK(sh("qemu-img create -q -f qcow2 %s 64M", path("bad.qcow2")) == 0);
    /* l1_table_offset is the big-endian u64 at byte 40 of the header. */
    CHECK(sh("printf '\\000\\000\\000\\001\\000\\000\\000\\000' | dd of=%s bs=1 seek=40 conv=notrunc status=none",
             path("bad.qcow2")) == 0);
    CHECK(vdisk_open(path("bad.qcow2"), NULL, 0) == NULL);
    CHECK(vdisk_get_error_code() == VDISK_E_CORRUPT);
    CHECK(strstr(vdisk_get_error_file(), "bad.qcow2") != NULL);
    CHECK(strcmp(vdisk_get_error_format(), "qcow2") == 0);
    CHECK(strstr(vdisk_get_error(), "bad.qcow2") != NULL);
    /* Unknown format name. */
    CHECK(vdisk_open(path("bad.qcow2"), "nosuchformat", 0) == NULL);
    CHECK(vdisk_get_error_code() == VDISK_E_NOT_FOUND);
    /* Out of range and read-only errors through a good handle. */
    CHECK(sh("qemu-img create -q -f qcow2 %s 1M", path("ro.qcow2")) == 0);
    vdisk_image *img = vdisk_open(path("ro.qcow2"), "qcow2", VDISK_OPEN_READ_ONLY);
    CHECK(img != NULL);
    if (!img) return;
    char buf[512] = {0};
    CHECK(vdisk_pread(img, buf, sizeof buf, 1 << 20) == VDISK_E_OUT_OF_RANGE);
    CHECK(vdisk_pwrite(img, buf, sizeof buf, 0) == VDISK_E_READ_ONLY);
    CHECK(vdisk_is_read_only(img) == 1);
    CHECK(vdisk_close(img) == 0);
}

static void test_write_then_qemu_reads(void) {
    vdisk_image *img = vdisk_create(path("w.qcow2"), "qcow2", 8 << 20, "cluster_size=65536,lazy_refcounts=off");
    CHECK(img != NULL);
    if (!img) return;
    CHECK(vdisk_is_read_only(img) == 0);
    CHECK(strcmp(vdisk_format(img), "qcow2") == 0);
    CHECK(vdisk_size(img) == 8 << 20);
    static unsigned char buf[65536];
    memset(buf, 0x5a, sizeof buf);
    CHECK(vdisk_pwrite(img, buf, sizeof buf, 1 << 20) == 0);
    CHECK(vdisk_pwrite(img, buf, 1000, 3 * 65536 + 7) == 0); /* unaligned: read-modify-write */
    CHECK(vdisk_write_zeroes(img, (1 << 20) + 4096, 4096, 0) == 0);
    CHECK(vdisk_pwrite(img, buf, sizeof buf, 4 << 20) == 0);
    CHECK(vdisk_discard(img, 4 << 20, 65536) == 0);
    CHECK(vdisk_flush(img) == 0);
    CHECK(vdisk_close(img) == 0);
    CHECK(sh("qemu-img check -q %s", path("w.qcow2")) == 0);
    CHECK(sh("qemu-io -f qcow2 -c 'read -q -P 0x5a 1M 4k' -c 'read -q -P 0 1052672 4k' -c 'read -q -P 0x5a 1056768 56k'"
             " -c 'read -q -P 0 196608 7' -c 'read -q -P 0x5a 196615 1000' -c 'read -q -P 0 197615 1000'"
             " %s | grep -q Pattern && exit 1 || exit 0",
             path("w.qcow2")) == 0);
    /* The same bytes read back through vdisk. */
    img = vdisk_open(path("w.qcow2"), NULL, VDISK_OPEN_READ_ONLY);
    CHECK(img != NULL);
    if (!img) return;
    static unsigned char back[8192];
    CHECK(vdisk_pread(img, back, sizeof back, 1 << 20) == 0);
    CHECK(back[0] == 0x5a && back[4095] == 0x5a && back[4096] == 0 && back[8191] == 0);
    CHECK(vdisk_close(img) == 0);
    /* Creating with a bad option names it. */
    CHECK(vdisk_create(path("x.qcow2"), "qcow2", 1 << 20, "no_such_option=1") == NULL);
    CHECK(vdisk_get_error_code() == VDISK_E_INVALID_ARGUMENT);
    CHECK(strstr(vdisk_get_error(), "no_such_option") != NULL);
}

struct collected {
    vdisk_extent e[64];
    int n;
};
static int collect(void *opaque, const vdisk_extent *e) {
    struct collected *c = opaque;
    if (c->n < 64) c->e[c->n++] = *e;
    return 0;
}
static int stop_after_one(void *opaque, const vdisk_extent *e) {
    (void)e;
    ++*(int *)opaque;
    return 7;
}

static void test_extents(void) {
    /* base: data at 1M (64k); overlay: data at 0 (64k) and a zero cluster at 1M+64k. */
    CHECK(sh("qemu-img create -q -f qcow2 %s 4M && qemu-io -f qcow2 -c 'write -q -P 1 1M 64k' %s", path("base.qcow2"),
             path("base.qcow2")) == 0);
    CHECK(sh("cd %s && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 && qemu-io -f qcow2 "
             "-c 'write -q -P 2 0 64k' -c 'write -q -z 1114112 64k' top.qcow2",
             dir) == 0);
    vdisk_image *img = vdisk_open(path("top.qcow2"), NULL, VDISK_OPEN_READ_ONLY);
    CHECK(img != NULL);
    if (!img) return;
    struct collected one = {0}, chain = {0};
    CHECK(vdisk_extents(img, 0, 4 << 20, 0, collect, &one) == 0);
    /* This layer: data [0,64k), unallocated [64k,1M+64k), zero [1M+64k, +64k), unallocated to the end. */
    CHECK(one.n == 4);
    CHECK(one.e[0].kind == VDISK_EXTENT_DATA && one.e[0].offset == 0 && one.e[0].length == 65536 &&
          one.e[0].has_host_offset);
    CHECK(one.e[1].kind == VDISK_EXTENT_UNALLOCATED && one.e[1].length == (1 << 20));
    CHECK(one.e[2].kind == VDISK_EXTENT_ZERO && one.e[2].offset == 1114112 && one.e[2].length == 65536);
    CHECK(one.e[3].kind == VDISK_EXTENT_UNALLOCATED && one.e[3].offset + one.e[3].length == (4 << 20));
    /* Whole chain: the base's data at 1M shows up at depth 1. */
    CHECK(vdisk_extents(img, 0, 4 << 20, VDISK_STATUS_CHAIN, collect, &chain) == 0);
    int found_base = 0;
    for (int i = 0; i < chain.n; ++i)
        if (chain.e[i].offset == (1 << 20) && chain.e[i].kind == VDISK_EXTENT_DATA && chain.e[i].depth == 1 &&
            chain.e[i].length == 65536)
            found_base = 1;
    CHECK(found_base);
    /* One extent at a time, clamped to max_length. */
    vdisk_extent x;
    CHECK(vdisk_block_status(img, 4096, 100, 0, &x) == 0);
    CHECK(x.offset == 4096 && x.length == 100 && x.kind == VDISK_EXTENT_DATA);
    CHECK(vdisk_block_status(img, 4 << 20, 1, 0, &x) == VDISK_E_OUT_OF_RANGE);
    /* A callback's non-zero return stops the walk and is returned. */
    int calls = 0;
    CHECK(vdisk_extents(img, 0, 4 << 20, 0, stop_after_one, &calls) == 7 && calls == 1);
    /* Reads through the chain. */
    unsigned char b[2];
    CHECK(vdisk_pread(img, b, 1, 0) == 0 && b[0] == 2);
    CHECK(vdisk_pread(img, b, 1, 1 << 20) == 0 && b[0] == 1);
    CHECK(vdisk_pread(img, b, 1, 1114112) == 0 && b[0] == 0);
    CHECK(vdisk_close(img) == 0);
    /* Untrusted: the backing reference is refused; one layer opens without the chain. */
    CHECK(vdisk_open(path("top.qcow2"), "qcow2", VDISK_OPEN_UNTRUSTED) == NULL);
    CHECK(vdisk_get_error_code() == VDISK_E_ACCESS_DENIED);
    img = vdisk_open(path("top.qcow2"), "qcow2", VDISK_OPEN_NO_BACKING);
    CHECK(img != NULL);
    if (img) {
        CHECK(vdisk_pread(img, b, 1, 1 << 20) == 0 && b[0] == 0);
        CHECK(vdisk_close(img) == 0);
    }
}

static void test_info_check(void) {
    CHECK(sh("qemu-img create -q -f qcow2 -o cluster_size=4096 %s 2M", path("i.qcow2")) == 0);
    vdisk_image *img = vdisk_open(path("i.qcow2"), NULL, VDISK_OPEN_READ_ONLY);
    CHECK(img != NULL);
    if (!img) return;
    char *json = vdisk_info_json(img);
    CHECK(json != NULL);
    if (json) {
        CHECK(strstr(json, "\"format\": \"qcow2\"") != NULL);
        CHECK(strstr(json, "\"virtual-size\": 2097152") != NULL);
        CHECK(strstr(json, "\"cluster-size\": 4096") != NULL);
        vdisk_free(json);
    }
    vdisk_check_result r;
    memset(&r, 0xff, sizeof r);
    CHECK(vdisk_check(img, VDISK_REPAIR_NONE, &r) == 0);
    CHECK(r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0);
    CHECK(vdisk_check(img, 9, &r) == VDISK_E_INVALID_ARGUMENT);
    CHECK(vdisk_close(img) == 0);
    /* A leaked cluster: refcount 1, referenced by nothing. qemu-img check agrees (exit 3: leaks). */
    CHECK(sh("qemu-img create -q -f qcow2 %s 2M && qemu-io -f qcow2 -c 'write -q 0 64k' -c 'discard -q 0 64k' %s",
             path("leak.qcow2"), path("leak.qcow2")) == 0);
    int qemu_rc = sh("qemu-img check -q %s >/dev/null 2>&1", path("leak.qcow2"));
    img = vdisk_open(path("leak.qcow2"), NULL, VDISK_OPEN_READ_ONLY);
    CHECK(img != NULL);
    if (img) {
        CHECK(vdisk_check(img, VDISK_REPAIR_NONE, &r) == 0);
        CHECK((r.leaks > 0) == (qemu_rc == 3));
        CHECK(vdisk_close(img) == 0);
    }
}

static int cancel_now(void *opaque, uint64_t done, uint64_t total) {
    (void)done;
    (void)total;
    ++*(int *)opaque;
    return 1;
}
static int count_progress(void *opaque, uint64_t done, uint64_t total) {
    uint64_t *last = opaque;
    if (done < last[0] || done > total) last[1] = 1; /* not monotonic or beyond the total */
    last[0] = done;
    last[2] = total;
    return 0;
}

static void test_convert(void) {
    CHECK(sh("qemu-img create -q -f vmdk %s 32M && "
             "qemu-io -f vmdk -c 'write -q -P 0x33 0 3M' -c 'write -q -P 0x44 20M 1M' %s",
             path("src.vmdk"), path("src.vmdk")) == 0);
    vdisk_image *img = vdisk_open(path("src.vmdk"), NULL, VDISK_OPEN_READ_ONLY);
    CHECK(img != NULL);
    if (!img) return;
    /* Cancelled by the callback's return value: an error, and no target left behind. */
    int calls = 0;
    CHECK(vdisk_convert(img, path("cancel.qcow2"), "qcow2", NULL, 0, cancel_now, &calls) == VDISK_E_CANCELLED);
    CHECK(calls >= 1);
    CHECK(vdisk_get_error_code() == VDISK_E_CANCELLED);
    CHECK(!exists(path("cancel.qcow2")));
    /* Completed: progress is monotonic and ends at the total; qemu-img sees the same content. */
    uint64_t prog[3] = {0, 0, 0};
    CHECK(vdisk_convert(img, path("out.vhdx"), "vhdx", "block_size=1M", 0, count_progress, prog) == 0);
    CHECK(prog[1] == 0 && prog[0] == 32u << 20 && prog[2] == 32u << 20);
    CHECK(sh("qemu-img compare -q -f vmdk -F vhdx %s %s", path("src.vmdk"), path("out.vhdx")) == 0);
    CHECK(vdisk_convert(img, path("out.qcow2"), "qcow2", NULL, VDISK_CONVERT_COMPRESS, NULL, NULL) == 0);
    CHECK(sh("qemu-img compare -q -f vmdk -F qcow2 %s %s && qemu-img check -q %s", path("src.vmdk"), path("out.qcow2"),
             path("out.qcow2")) == 0);
    CHECK(vdisk_convert(img, path("bad.out"), "nosuchformat", NULL, 0, NULL, NULL) == VDISK_E_NOT_FOUND);
    CHECK(vdisk_close(img) == 0);
}

struct test_case {
    const char *name;
    void (*fn)(void);
};
static const struct test_case cases[] = {
    {"version", test_version}, {"misuse", test_misuse},
    {"errors", test_errors},   {"write", test_write_then_qemu_reads},
    {"extents", test_extents}, {"info_check", test_info_check},
    {"convert", test_convert},
};

int main(int argc, char **argv) {
    strcpy(dir, "/tmp/vdisk-capi-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    int ran = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
        int before = failures;
        cases[i].fn();
        printf("%s: %s\n", cases[i].name, failures == before ? "ok" : "FAILED");
        ++ran;
    }
    sh("rm -rf %s", dir);
    if (!ran) {
        fprintf(stderr, "no such case\n");
        return 2;
    }
    return failures ? 1 : 0;
}
