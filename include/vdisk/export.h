/* SPDX-License-Identifier: Apache-2.0 */
/* vdisk — symbol visibility. The library is built with -fvisibility=hidden; only declarations marked
 * VDISK_API are exported from libvdisk.so (and a linker version script pins the C symbols to VDISK_0).
 * Usable from C and C++. */
#ifndef VDISK_EXPORT_H
#define VDISK_EXPORT_H

#if defined(_WIN32) || defined(__CYGWIN__)
#define VDISK_API
#elif defined(__GNUC__) || defined(__clang__)
#define VDISK_API __attribute__((visibility("default")))
#else
#define VDISK_API
#endif

#endif
