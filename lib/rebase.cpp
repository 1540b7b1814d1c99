// SPDX-License-Identifier: Apache-2.0
// rebase and commit: moving data between the layers of a backing chain (qemu-img rebase / commit).
#include <algorithm>
#include <vector>

#include "util/bytes.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {

namespace {

OpenOptions open_options(const std::string& format, bool read_write, bool no_backing) {
    OpenOptions o;
    o.read_write = read_write;
    o.format = format;
    o.no_backing = no_backing;
    return o;
}

bool share_a_file(BlockDevice& x, BlockDevice& y) {
    for (File* f : x.files())
        for (File* t : y.files())
            if (f->identity() == t->identity()) return true;
    return false;
}

// What `chain` reads at [off, off + out.size()): zeros past a backing image's end, and without one at all.
Status read_chain(BlockDevice* chain, uint64_t off, std::span<uint8_t> out) {
    std::fill(out.begin(), out.end(), 0);
    if (!chain || off >= chain->size()) return ok();
    return chain->read(off, out.first(static_cast<size_t>(std::min<uint64_t>(out.size(), chain->size() - off))));
}

// Safe mode: every range the image leaves to its backing and the old and new chains read differently is
// written into the image with the old chain's bytes.
Status keep_old_contents(BlockDevice& dev, BlockDevice* new_chain, const RebaseOptions& options) {
    const uint64_t size = dev.size();
    std::vector<uint8_t> a(static_cast<size_t>(options.chunk_size)), b(a.size());
    for (uint64_t off = 0; off < size;) {
        VDISK_ASSIGN(Extent e, dev.block_status(off, std::min<uint64_t>(options.chunk_size, size - off)));
        if (e.kind == ExtentKind::unallocated) {
            auto n = static_cast<size_t>(e.length);
            auto old_bytes = std::span<uint8_t>(a.data(), n), new_bytes = std::span<uint8_t>(b.data(), n);
            VDISK_TRY(read_chain(dev.backing(), off, old_bytes));
            VDISK_TRY(read_chain(new_chain, off, new_bytes));
            if (!std::equal(old_bytes.begin(), old_bytes.end(), new_bytes.begin()))
                VDISK_TRY(dev.write(off, old_bytes));
        }
        off += e.length;
        VDISK_TRY(options.progress(off, size));
    }
    return dev.flush();
}

}  // namespace

Status rebase(const Registry& registry, FileSystem& fs, std::string_view image, const RebaseOptions& options) {
    // Unsafe mode must work when the old backing file is gone (the usual reason to use it).
    VDISK_ASSIGN(OpenedImage top,
                 open_image(registry, fs, image, open_options(options.image_format, true, options.unsafe)));
    if (!top.device->backing_reference() && options.backing.empty() && options.unsafe) return top.device->close();
    std::optional<OpenedImage> nb;
    if (!options.backing.empty()) {
        const OpenOptions bo = open_options(options.backing_format, false, false);
        VDISK_ASSIGN(nb, open_image(registry, fs, resolve_reference(image, options.backing), bo));
        if (share_a_file(*nb->device, *top.device))
            return make_error(ErrorCode::invalid_argument, "an image cannot be its own backing file");
    }
    BlockDevice* new_chain = nb ? nb->device.get() : nullptr;
    if (!options.unsafe) VDISK_TRY(keep_old_contents(*top.device, new_chain, options));
    std::string fmt = options.backing_format;
    if (fmt.empty() && nb) fmt = std::string(nb->format->name());
    VDISK_TRY(top.device->set_backing_reference(options.backing, fmt, new_chain));
    return top.device->close();
}

namespace {

// Writing into a base may change the identity the layer above it records (a VMDK's CID, a VHDX's
// DataWriteGuid, a VDI's modification UUID): when that layer's own check no longer accepts the base, its
// reference is rewritten to the same name with the base's new identity.
Status relink(const Registry& registry, FileSystem& fs, const std::string& upper, const std::string& upper_format,
              const std::string& base, const std::string& base_format) {
    VDISK_ASSIGN(OpenedImage up, open_image(registry, fs, upper, open_options(upper_format, true, true)));
    auto ref = up.device->backing_reference();
    const OpenOptions bo = open_options(base_format, false, true);
    VDISK_ASSIGN(OpenedImage probe, open_image(registry, fs, base, bo));
    if (up.device->attach_backing(std::move(probe.device))) return up.device->close();
    // A layer that records no name for its base (VDI: UUIDs only) is given the base's name as seen from it.
    std::string name = ref && !ref->names.empty() ? ref->names[0] : util::relative_name(upper, base).value_or(base);
    VDISK_ASSIGN(OpenedImage b, open_image(registry, fs, base, bo));
    VDISK_TRY(up.device->set_backing_reference(name, ref ? ref->format : std::string(), b.device.get()));
    return up.device->close();
}

// The names of the chain's layers as open resolved them (the image first), and the depth of the layer to
// commit into: the one `base` names, or the image's backing file.
struct Chain {
    std::vector<std::string> names;
    uint32_t base_depth = 1;
    BlockDevice* base = nullptr;  // as the read-only chain has it
};

Result<Chain> walk_chain(FileSystem& fs, std::string_view image, BlockDevice* d, const std::string& base) {
    Chain c{{std::string(image)}, 1, d->backing()};
    std::optional<FileIdentity> want;
    if (!base.empty())
        if (auto f = fs.open(resolve_reference(image, base), Access::read_only)) want = (*f)->identity();
    bool found = base.empty();
    for (uint32_t depth = 1; d->backing(); ++depth, d = d->backing()) {
        auto ref = d->backing_reference();
        const bool named = ref && !ref->names.empty();
        c.names.push_back(named ? resolve_reference(c.names.back(), ref->names[0]) : std::string());
        auto files = d->backing()->files();
        if (!found && ((want && !files.empty() && files[0]->identity() == *want) || (named && ref->names[0] == base))) {
            c.base_depth = depth;
            c.base = d->backing();
            found = true;
        }
    }
    if (!found) return make_error(ErrorCode::not_found, "'" + base + "' is not in the backing chain of the image");
    return c;
}

Status copy_extent(BlockDevice& top, BlockDevice& dst, const MappedExtent& m, std::span<uint8_t> buf) {
    if (m.zero || !m.data) return dst.write_zeroes(m.offset, m.length, false);
    auto part = buf.first(static_cast<size_t>(m.length));
    VDISK_TRY(top.read(m.offset, part));
    return dst.write(m.offset, part);
}

// Ranges some layer above the base holds (data, or zeros written there) are copied down.
Status copy_down(BlockDevice& top, BlockDevice& dst, uint32_t base_depth, const CommitOptions& options) {
    const uint64_t size = top.size();
    if (dst.size() < size) VDISK_TRY(dst.resize(size));
    std::vector<uint8_t> buf(static_cast<size_t>(options.chunk_size));
    for (uint64_t off = 0; off < size;) {
        VDISK_ASSIGN(MappedExtent m, map_extent(top, off, std::min<uint64_t>(options.chunk_size, size - off)));
        if (m.present && m.depth < base_depth) VDISK_TRY(copy_extent(top, dst, m, buf));
        off += m.length;
        VDISK_TRY(options.progress(off, size));
    }
    return ok();
}

}  // namespace

Status commit(const Registry& registry, FileSystem& fs, std::string_view image, const CommitOptions& options) {
    // The chain is opened read-only to find the base; the base is then reopened read-write on its own.
    VDISK_ASSIGN(OpenedImage top, open_image(registry, fs, image, open_options(options.image_format, false, false)));
    if (!top.device->backing())
        return make_error(ErrorCode::invalid_argument, "image has no backing file to commit to");
    VDISK_ASSIGN(const Chain chain, walk_chain(fs, image, top.device.get(), options.base));
    const uint32_t base_depth = chain.base_depth;
    std::string base_format(chain.base->info().format);
    if (base_format == "vpc") base_format = "vhd";
    VDISK_ASSIGN(OpenedImage base,
                 open_image(registry, fs, chain.names[base_depth], open_options(base_format, true, false)));
    VDISK_TRY(copy_down(*top.device, *base.device, base_depth, options));
    VDISK_TRY(base.device->close());
    base.device.reset();
    top.device.reset();
    VDISK_TRY(relink(registry, fs, chain.names[base_depth - 1], base_depth == 1 ? options.image_format : std::string(),
                     chain.names[base_depth], base_format));
    if (options.keep_top) return ok();
    // Empty the image: whole-range discard drops its clusters where the format supports it.
    VDISK_ASSIGN(OpenedImage rw, open_image(registry, fs, image, open_options(options.image_format, true, true)));
    VDISK_TRY(rw.device->discard(0, rw.device->size()));
    return rw.device->close();
}

}  // namespace vdisk
