// SPDX-License-Identifier: Apache-2.0
// Several devices read as one (convert with several sources, as qemu-img concatenates them).
#include <algorithm>

#include "vdisk/vdisk.hpp"

namespace vdisk {
namespace {

uint64_t total_size(const std::vector<BlockDevice*>& parts) {
    uint64_t n = 0;
    for (auto* p : parts) n += p->size();  // each size fits the host's files; the sum is checked by the caller
    return n;
}

class ConcatDevice final : public BlockDevice {
public:
    explicit ConcatDevice(std::vector<BlockDevice*> parts)
        : BlockDevice(total_size(parts), true), parts_(std::move(parts)) {
        uint64_t at = 0;
        for (auto* p : parts_) {
            starts_.push_back(at);
            at += p->size();
        }
    }

    std::vector<File*> files() const override {
        std::vector<File*> out;
        for (auto* p : parts_)
            for (auto* f : p->files()) out.push_back(f);
        return out;
    }

protected:
    Status do_read(uint64_t offset, std::span<uint8_t> buf) override {
        size_t done = 0;
        while (done < buf.size()) {
            auto [i, within] = locate(offset + done);
            size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size() - done, parts_[i]->size() - within));
            VDISK_TRY(parts_[i]->read(within, buf.subspan(done, n)));
            done += n;
        }
        return ok();
    }

    // The whole chain of the part answers: data, or zeros (a part's unallocated ranges read as zeros here,
    // since the parts have no backing in common).
    Result<Extent> do_block_status(uint64_t offset, uint64_t max_len) override {
        auto [i, within] = locate(offset);
        VDISK_ASSIGN(MappedExtent m, map_extent(*parts_[i], within, std::min(max_len, parts_[i]->size() - within)));
        Extent e;
        e.offset = offset;
        e.length = m.length;
        e.kind = m.data ? ExtentKind::data : ExtentKind::zero;
        e.compressed = m.compressed;
        return e;
    }

    ImageInfo do_info() const override {
        ImageInfo inf;
        inf.format = "concat";
        inf.virtual_size = size();
        return inf;
    }

private:
    std::pair<size_t, uint64_t> locate(uint64_t off) const {
        auto it = std::upper_bound(starts_.begin(), starts_.end(), off);
        size_t i = static_cast<size_t>(it - starts_.begin()) - 1;
        while (parts_[i]->size() == 0) ++i;  // empty parts hold no offsets
        return {i, off - starts_[i]};
    }
    std::vector<BlockDevice*> parts_;
    std::vector<uint64_t> starts_;
};

}  // namespace

std::unique_ptr<BlockDevice> make_concat_device(std::vector<BlockDevice*> parts) {
    return std::make_unique<ConcatDevice>(std::move(parts));
}

}  // namespace vdisk
