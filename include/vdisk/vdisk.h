/* SPDX-License-Identifier: Apache-2.0 */
#ifndef VDISK_H
#define VDISK_H
#include "vdisk/export.h"
#ifdef __cplusplus
extern "C" {
#endif
VDISK_API const char* vdisk_version(void);
#ifdef __cplusplus
}
#endif
#endif
