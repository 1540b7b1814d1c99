// SPDX-License-Identifier: Apache-2.0
// rebase and commit: moving data between the layers of a backing chain (qemu-img rebase / commit).
#include <algorithm>
#include <vector>

#include "util/bytes.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {

Status rebase(const Registry& registry, FileSystem& fs, std::string_view image, const RebaseOptions& options) {
    OpenOptions oo;
    oo.read_write = true;
    oo.format = options.image_format;
    // Unsafe mode must work when the old backing file is gone (the usual reason to use it).
    oo.no_backing = options.unsafe;
    VDISK_ASSIGN(OpenedImage top, open_image(registry, fs, image, oo));
    if (!top.device->backing_reference() && options.backing.empty() && options.unsafe) return top.device->close();
    std::optional<OpenedImage> nb;
    if (!options.backing.empty()) {
        OpenOptions bo;
        bo.format = options.backing_format;
        auto b = open_image(registry, fs, resolve_reference(image, options.backing), bo);
        if (!b) return std::move(b).error();
        nb = std::move(*b);
        for (File* f : nb->device->files())
            for (File* t : top.device->files())
                if (f->identity() == t->identity())
                    return make_error(ErrorCode::invalid_argument, "an image cannot be its own backing file");
    }
    if (!options.unsafe) {
        BlockDevice& dev = *top.device;
        BlockDevice* old_chain = dev.backing();
        BlockDevice* new_chain = nb ? nb->device.get() : nullptr;
        const uint64_t size = dev.size();
        std::vector<uint8_t> a(static_cast<size_t>(options.chunk_size)), b(a.size());
        for (uint64_t off = 0; off < size;) {
            VDISK_ASSIGN(Extent e, dev.block_status(off, std::min<uint64_t>(options.chunk_size, size - off)));
            if (e.kind == ExtentKind::unallocated) {
                auto n = static_cast<size_t>(e.length);
                auto old_bytes = std::span<uint8_t>(a.data(), n), new_bytes = std::span<uint8_t>(b.data(), n);
                std::fill(old_bytes.begin(), old_bytes.end(), 0);
                std::fill(new_bytes.begin(), new_bytes.end(), 0);
                // Past a backing image's end both read zeros.
                if (old_chain && off < old_chain->size())
                    VDISK_TRY(old_chain->read(off, old_bytes.first(static_cast<size_t>(
                                                       std::min<uint64_t>(n, old_chain->size() - off)))));
                if (new_chain && off < new_chain->size())
                    VDISK_TRY(new_chain->read(off, new_bytes.first(static_cast<size_t>(
                                                       std::min<uint64_t>(n, new_chain->size() - off)))));
                if (!std::equal(old_bytes.begin(), old_bytes.end(), new_bytes.begin()))
                    VDISK_TRY(dev.write(off, old_bytes));
            }
            off += e.length;
            VDISK_TRY(options.progress(off, size));
        }
        VDISK_TRY(dev.flush());
    }
    std::string fmt = options.backing_format;
    if (fmt.empty() && nb) fmt = std::string(nb->format->name());
    VDISK_TRY(top.device->set_backing_reference(options.backing, fmt, nb ? nb->device.get() : nullptr));
    return top.device->close();
}

namespace {

// Writing into a base may change the identity the layer above it records (a VMDK's CID, a VHDX's
// DataWriteGuid, a VDI's modification UUID): when that layer's own check no longer accepts the base, its
// reference is rewritten to the same name with the base's new identity.
Status relink(const Registry& registry, FileSystem& fs, const std::string& upper, const std::string& upper_format,
              const std::string& base, const std::string& base_format) {
    OpenOptions uo;
    uo.read_write = true;
    uo.no_backing = true;
    uo.format = upper_format;
    VDISK_ASSIGN(OpenedImage up, open_image(registry, fs, upper, uo));
    auto ref = up.device->backing_reference();
    OpenOptions bo;
    bo.format = base_format;
    bo.no_backing = true;
    VDISK_ASSIGN(OpenedImage probe, open_image(registry, fs, base, bo));
    if (up.device->attach_backing(std::move(probe.device))) return up.device->close();
    // A layer that records no name for its base (VDI: UUIDs only) is given the base's name as seen from it.
    std::string name = ref && !ref->names.empty() ? ref->names[0] : util::relative_name(upper, base).value_or(base);
    VDISK_ASSIGN(OpenedImage b, open_image(registry, fs, base, bo));
    VDISK_TRY(up.device->set_backing_reference(name, ref ? ref->format : std::string(), b.device.get()));
    return up.device->close();
}

}  // namespace

Status commit(const Registry& registry, FileSystem& fs, std::string_view image, const CommitOptions& options) {
    // The chain is opened read-only to find the base; the base is then reopened read-write on its own.
    OpenOptions oo;
    oo.format = options.image_format;
    VDISK_ASSIGN(OpenedImage top, open_image(registry, fs, image, oo));
    if (!top.device->backing())
        return make_error(ErrorCode::invalid_argument, "image has no backing file to commit to");
    // Walk the chain, naming each layer as open resolved it.
    std::vector<std::string> names{std::string(image)};
    uint32_t base_depth = 1;
    {
        BlockDevice* d = top.device.get();
        std::string name(image);
        uint32_t depth = 0;
        bool found = options.base.empty();
        while (d->backing()) {
            auto ref = d->backing_reference();
            std::string next = ref && !ref->names.empty() ? resolve_reference(name, ref->names[0]) : std::string();
            ++depth;
            names.push_back(next);
            if (!found) {
                FileIdentity want{};
                auto f = fs.open(resolve_reference(image, options.base), Access::read_only);
                if (f) want = (*f)->identity();
                bool same = (f && !d->backing()->files().empty() && d->backing()->files()[0]->identity() == want) ||
                            (ref && !ref->names.empty() && ref->names[0] == options.base);
                if (same) {
                    base_depth = depth;
                    found = true;
                }
            }
            d = d->backing();
            name = next;
        }
        if (!found)
            return make_error(ErrorCode::not_found, "'" + options.base + "' is not in the backing chain of the image");
    }
    BlockDevice* base_ro = top.device.get();
    for (uint32_t i = 0; i < base_depth; ++i) base_ro = base_ro->backing();
    std::string base_format(base_ro->info().format);
    if (base_format == "vpc") base_format = "vhd";
    OpenOptions bo;
    bo.read_write = true;
    bo.format = base_format;
    VDISK_ASSIGN(OpenedImage base, open_image(registry, fs, names[base_depth], bo));
    BlockDevice& dst = *base.device;
    const uint64_t size = top.device->size();
    if (dst.size() < size) VDISK_TRY(dst.resize(size));
    std::vector<uint8_t> buf(static_cast<size_t>(options.chunk_size));
    for (uint64_t off = 0; off < size;) {
        VDISK_ASSIGN(MappedExtent m, map_extent(*top.device, off, std::min<uint64_t>(options.chunk_size, size - off)));
        // Ranges some layer above the base holds (data, or zeros written there) are copied down.
        if (m.present && m.depth < base_depth) {
            auto part = std::span<uint8_t>(buf.data(), static_cast<size_t>(m.length));
            if (m.zero || !m.data) {
                VDISK_TRY(dst.write_zeroes(off, m.length, false));
            } else {
                VDISK_TRY(top.device->read(off, part));
                VDISK_TRY(dst.write(off, part));
            }
        }
        off += m.length;
        VDISK_TRY(options.progress(off, size));
    }
    VDISK_TRY(dst.close());
    base.device.reset();
    top.device.reset();
    VDISK_TRY(relink(registry, fs, names[base_depth - 1], base_depth == 1 ? options.image_format : std::string(),
                     names[base_depth], base_format));
    if (options.keep_top) return ok();
    // Empty the image: whole-range discard drops its clusters where the format supports it.
    OpenOptions to;
    to.read_write = true;
    to.format = options.image_format;
    to.no_backing = true;
    VDISK_ASSIGN(OpenedImage rw, open_image(registry, fs, image, to));
    VDISK_TRY(rw.device->discard(0, rw.device->size()));
    return rw.device->close();
}

}  // namespace vdisk
