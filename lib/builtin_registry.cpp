// SPDX-License-Identifier: Apache-2.0
// The explicit list of built-in formats. Probing scores decide between formats, so the order only
// matters for ties; raw scores 1 and is the last resort. A format is one folder plus one line here
// (VDISK_HAVE_* come from the VDISK_FORMATS build option).
#include "builtin_formats.hpp"

namespace vdisk {

Registry Registry::builtin() {
    Registry r;
#ifdef VDISK_HAVE_QCOW2
    r.add(make_qcow2_format());
#endif
#ifdef VDISK_HAVE_QCOW
    r.add(make_qcow_format());
#endif
#ifdef VDISK_HAVE_VMDK
    r.add(make_vmdk_format());
#endif
#ifdef VDISK_HAVE_VHD
    r.add(make_vhd_format());
#endif
#ifdef VDISK_HAVE_VHDX
    r.add(make_vhdx_format());
#endif
#ifdef VDISK_HAVE_VDI
    r.add(make_vdi_format());
#endif
    r.add(make_raw_format());
    return r;
}

}  // namespace vdisk
