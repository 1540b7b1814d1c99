/* SPDX-License-Identifier: Apache-2.0 */
/* vdisk C API example: open any image, print what it is and how much of it is allocated (through the whole
 * backing chain), then convert it to qcow2 with a progress line.
 *
 *   cc -std=c11 vdisk_example.c $(pkg-config --cflags --libs vdisk-c) -o vdisk_example
 *   ./vdisk_example disk.vmdk disk.qcow2
 */
#include <inttypes.h>
#include <stdio.h>

#include <vdisk/vdisk.h>

static int count_data(void *opaque, const vdisk_extent *e) {
    if (e->kind == VDISK_EXTENT_DATA) *(uint64_t *)opaque += e->length;
    return 0;
}

static int show_progress(void *opaque, uint64_t done, uint64_t total) {
    (void)opaque;
    fprintf(stderr, "\r%5.1f%%", total ? 100.0 * (double)done / (double)total : 100.0);
    return 0; /* non-zero would cancel */
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SRC DST.qcow2\n", argv[0]);
        return 2;
    }
    vdisk_image *img = vdisk_open(argv[1], NULL, VDISK_OPEN_READ_ONLY);
    if (!img) {
        fprintf(stderr, "%s\n", vdisk_get_error());
        return 1;
    }
    int64_t size = vdisk_size(img);
    uint64_t data = 0;
    if (size < 0 || vdisk_extents(img, 0, (uint64_t)size, VDISK_STATUS_CHAIN, count_data, &data) < 0) {
        fprintf(stderr, "%s\n", vdisk_get_error());
        vdisk_close(img);
        return 1;
    }
    printf("%s %" PRId64 " bytes, %" PRIu64 " bytes of data\n", vdisk_format(img), size, data);
    int rc = vdisk_convert(img, argv[2], "qcow2", NULL, 0, show_progress, NULL);
    fprintf(stderr, "\n");
    if (rc < 0) fprintf(stderr, "%s\n", vdisk_get_error());
    vdisk_close(img);
    return rc < 0 ? 1 : 0;
}
