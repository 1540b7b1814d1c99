// SPDX-License-Identifier: Apache-2.0
// Rewriting a VMDK's descriptor (rebase): the parent is named by parentFileNameHint and identified by
// parentCID, the CID the parent's descriptor had when the link was made; check_backing compares them.
#include "vmdk_internal.hpp"

namespace vdisk::vmdk {

Status VmdkDevice::write_descriptor(const Descriptor& d) {
    if (!desc_file_) return make_error(ErrorCode::unsupported, "this VMDK has no descriptor vdisk can rewrite");
    std::string text = render_descriptor(d);
    if (desc_room_) {
        // Embedded: the text must fit the sectors the header gives it; the rest is blanked.
        if (text.size() > desc_room_)
            return make_error(ErrorCode::unsupported, "the new descriptor (" + std::to_string(text.size()) +
                                                          " bytes) does not fit the embedded descriptor area (" +
                                                          std::to_string(desc_room_) + " bytes)");
        text.resize(static_cast<size_t>(desc_room_), '\0');
    } else {
        VDISK_TRY(desc_file_->resize(text.size()));
    }
    VDISK_TRY(desc_file_->write_at(desc_at_, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()),
                                                                      text.size())));
    return desc_file_->sync();
}

Status VmdkDevice::set_backing_reference(const std::string& name, const std::string& format, BlockDevice* new_backing) {
    if (read_only()) return make_error(ErrorCode::read_only, "device is read-only");
    Descriptor d = desc_;
    if (name.empty()) {
        d.parent_hint.reset();
        d.parent_cid = 0xffffffffu;
    } else {
        if (!format.empty() && format != "vmdk")
            return make_error(ErrorCode::invalid_argument,
                              "a VMDK's parent must be a VMDK, not " + format + " (cross-format chains are refused)");
        for (const DiskExtent& e : extents_)
            if (e.type == ExtentType::flat || e.kind == StoreKind::flat)
                return make_error(ErrorCode::invalid_argument,
                                  "a VMDK with flat extents holds every sector itself and cannot have a parent");
        // The hint is a quoted descriptor value.
        if (name.find_first_of("\"\r\n") != std::string::npos)
            return make_error(ErrorCode::invalid_argument, "a VMDK parent name cannot contain quotes or line breaks");
        d.parent_hint = name;
        d.parent_cid = 0xffffffffu;
        if (new_backing) {
            auto* p = dynamic_cast<VmdkDevice*>(new_backing);
            if (!p)
                return make_error(ErrorCode::invalid_argument, "a VMDK's parent must be a VMDK, not " +
                                                                   new_backing->info().format +
                                                                   " (cross-format chains are refused)");
            d.parent_cid = p->descriptor().cid;
        }
    }
    VDISK_TRY(write_descriptor(d));
    desc_ = std::move(d);
    return ok();
}

}  // namespace vdisk::vmdk
