// SPDX-License-Identifier: Apache-2.0
// Opening images with their backing chains, and creating images.
#include <algorithm>

#include "open_internal.hpp"
#include "vdisk/appliance.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {

std::string_view version() noexcept { return VDISK_VERSION_STRING; }

namespace {

struct ChainState {
    std::vector<FileIdentity> seen;
    std::shared_ptr<Budget> budget;  // every layer's budget is charged here too
    bool allow_appliance = true;     // the top file may be an OVF package (not a disk inside one)
};

Result<OpenedImage> open_layer(const Registry& reg, FileSystem& fs, const std::string& name, const OpenOptions& options,
                               std::string_view format_name, uint32_t depth, bool writable, ChainState& chain);

// Open the image below `dev` (the layer named `name` at `depth`) and attach it, recursively.
Status open_backing(const Registry& reg, FileSystem& fs, const std::string& name, BlockDevice& dev,
                    const OpenOptions& options, uint32_t depth, ChainState& chain) {
    auto ref = dev.backing_reference();
    if (depth == 0 && !options.backing_override.empty()) ref = BackingReference{{options.backing_override}, {}};
    if (!ref || ref->names.empty()) return ok();
    if (options.references) options.references->push_back("backing file '" + ref->names[0] + "'");
    if (options.untrusted)
        return make_error(ErrorCode::access_denied,
                          "untrusted image has a backing file '" + ref->names[0] + "'; refusing to open it");
    if (depth + 1 > options.limits.max_chain_depth)
        return make_error(ErrorCode::limit_exceeded, "backing chain deeper than " +
                                                         std::to_string(options.limits.max_chain_depth) +
                                                         " images (at '" + ref->names[0] + "')");
    std::string chosen;
    for (auto& cand : ref->names) {
        if (cand.empty()) continue;
        std::string resolved = resolve_reference(name, cand);
        if (fs.exists(resolved)) {
            chosen = resolved;
            break;
        }
    }
    if (chosen.empty()) {
        std::string list;
        for (auto& c : ref->names) list += (list.empty() ? "'" : ", '") + c + "'";
        return make_error(ErrorCode::not_found, "backing file not found: " + list);
    }
    VDISK_ASSIGN(auto parent, open_layer(reg, fs, chosen, options, ref->format, depth + 1, false, chain));
    return dev.attach_backing(std::move(parent.device), options.force_parent_mismatch);
}

Result<OpenedImage> open_layer(const Registry& reg, FileSystem& fs, const std::string& name, const OpenOptions& options,
                               std::string_view format_name, uint32_t depth, bool writable, ChainState& chain) {
    auto file_r = fs.open(name, writable ? Access::read_write : Access::read_only);
    if (!file_r) return std::move(file_r).error();
    auto file = std::move(*file_r);
    FileIdentity id = file->identity();
    if (std::find(chain.seen.begin(), chain.seen.end(), id) != chain.seen.end()) {
        Error e = make_error(ErrorCode::corrupt, "backing chain loops: '" + name + "' is already part of the chain");
        e.file = name;
        return e;
    }
    chain.seen.push_back(id);

    // An OVF package (.ova tar or .ovf descriptor) stands for one of its disks; a given format means the
    // caller knows what the file is. Decided from the file already open, so nothing else is opened.
    if (depth == 0 && format_name.empty() && chain.allow_appliance && detail::looks_like_appliance(*file))
        return detail::open_appliance_file(reg, fs, name, std::move(file), options);

    const Format* fmt = nullptr;
    if (!format_name.empty()) {
        VDISK_ASSIGN(fmt, reg.lookup(format_name));
    } else {
        auto p = reg.probe(*file, !options.untrusted);
        if (!p) {
            Error e = std::move(p).error();
            if (options.untrusted && e.code == ErrorCode::invalid_format)
                e.message += " (untrusted mode never guesses raw: give -f raw)";
            return std::move(e).in(name);
        }
        fmt = *p;
    }

    if (depth == 0 && !options.snapshot.empty() && !fmt->has_internal_snapshots())
        return make_error(ErrorCode::unsupported, std::string(fmt->name()) +
                                                      " images have no internal snapshots (snapshot '" +
                                                      options.snapshot + "' asked for)")
            .in(name, fmt->name());
    OpenOptions layer_opts = options;
    layer_opts.read_write = writable;
    if (depth > 0) {
        layer_opts.snapshot.clear();
        // The override names the top image's parent only; a lower layer finds its own (VDI searches for it).
        layer_opts.backing_override.clear();
    }
    if (!chain.budget) chain.budget = make_chain_budget(options.limits);
    OpenContext ctx(fs, name, layer_opts, make_image_budget(layer_opts, chain.budget));
    auto dev_r = fmt->open(std::move(file), ctx);
    if (!dev_r) return std::move(dev_r).error().in(name, fmt->name());
    auto dev = std::move(*dev_r);
    dev->set_budget(ctx.budget());
    // Extent files of this layer count too: a chain that comes back to one of them is a loop.
    auto files = dev->files();
    for (size_t i = 1; i < files.size(); ++i) chain.seen.push_back(files[i]->identity());

    if (options.no_backing && options.references) {
        if (auto ref = dev->backing_reference(); ref && !ref->names.empty())
            options.references->push_back("backing file '" + ref->names[0] + "'");
    }
    if (!options.no_backing) {
        auto st = open_backing(reg, fs, name, *dev, options, depth, chain);
        if (!st) return std::move(st).error().in(name, fmt->name());
    }
    return OpenedImage{std::move(dev), fmt};
}

}  // namespace

Result<OpenedImage> detail::open_image_direct(const Registry& registry, FileSystem& fs, std::string_view name,
                                              const OpenOptions& options) {
    ChainState chain;
    chain.allow_appliance = false;
    return open_layer(registry, fs, std::string(name), options, options.format, 0, options.read_write, chain);
}

Result<OpenedImage> open_image(const Registry& registry, FileSystem& fs, std::string_view name,
                               const OpenOptions& options) {
    ChainState chain;
    return open_layer(registry, fs, std::string(name), options, options.format, 0, options.read_write, chain);
}

Status validate_create_options(const Format& fmt, const CreateOptions& opts) {
    auto table = fmt.create_options();
    for (const auto& kv : opts.values) {
        const std::string& k = kv.first;
        bool known = std::any_of(table.begin(), table.end(), [&](const OptionSpec& s) { return s.name == k; });
        if (!known) {
            std::string names;
            for (auto& s : table) names += (names.empty() ? "" : ", ") + std::string(s.name);
            return make_error(ErrorCode::invalid_argument, std::string(fmt.name()) + " does not support option '" + k +
                                                               "' (supported: " + (names.empty() ? "none" : names) +
                                                               ")");
        }
    }
    return ok();
}

Result<std::unique_ptr<BlockDevice>> create_image(const Registry& registry, FileSystem& fs, std::string_view name,
                                                  std::string_view format, CreateOptions opts) {
    VDISK_ASSIGN(const Format* fmt, registry.lookup(format));
    VDISK_TRY(validate_create_options(*fmt, opts));
    if (!opts.size && !opts.attach_backing)
        return make_error(ErrorCode::invalid_argument, "image size is required when the backing file is not opened");
    if (!opts.size) {
        auto backing = opts.get("backing_file");
        if (!backing)
            return make_error(ErrorCode::invalid_argument,
                              "image size is required (or a backing_file to take it from)");
        OpenOptions bo;
        bo.format = opts.get("backing_fmt").value_or("");
        std::string resolved = resolve_reference(name, *backing);
        auto b = open_image(registry, fs, resolved, bo);
        if (!b) return std::move(b).error();
        opts.size = b->device->size();
    }
    OpenOptions oo;
    oo.read_write = true;
    OpenContext ctx(fs, std::string(name), oo);
    auto dev = fmt->create(opts, ctx);
    if (!dev) return std::move(dev).error().in(name, fmt->name());
    (*dev)->set_budget(ctx.budget());
    if (!opts.attach_backing) return dev;
    // A new overlay reads (and copies on write) through its backing chain from its first write on.
    ChainState chain;
    for (File* f : (*dev)->files()) chain.seen.push_back(f->identity());
    auto st = open_backing(registry, fs, std::string(name), **dev, oo, 0, chain);
    if (!st) return std::move(st).error().in(name, fmt->name());
    return dev;
}

}  // namespace vdisk
