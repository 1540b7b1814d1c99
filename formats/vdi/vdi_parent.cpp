// SPDX-License-Identifier: Apache-2.0
// Finding the parent of a differencing VDI.
//
// A differencing VDI records its parent only as the parent's creation UUID; VirtualBox maps UUIDs to
// files through its media registry, which a copied VM folder does not carry. What the folder does carry
// is VirtualBox's layout: the base image in the VM folder, differencing images in VM/Snapshots/. So the
// parent is looked for among the .vdi files of the image's directory, its Snapshots subdirectory and its
// parent directory, reading only each candidate's header. The generic opener then opens the match as the
// backing image, and check_backing_identity() verifies both UUIDs as for a parent named by the caller.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstring>

#include "util/bytes.hpp"
#include "util/endian.hpp"
#include "vdi_internal.hpp"

namespace vdisk::vdi {
namespace {

// Bounds the work a directory full of .vdi files can cause (each costs an open and a 512-byte read).
constexpr size_t kMaxCandidates = 256;
constexpr size_t kProbeBytes = 512;

bool has_vdi_suffix(std::string_view name) {
    if (name.size() <= 4) return false;
    std::string_view tail = name.substr(name.size() - 4);
    return tail[0] == '.' && std::tolower(static_cast<unsigned char>(tail[1])) == 'v' &&
           std::tolower(static_cast<unsigned char>(tail[2])) == 'd' &&
           std::tolower(static_cast<unsigned char>(tail[3])) == 'i';
}

// The creation UUID of a VDI header in `head`, or nullptr when `head` is not a VDI of a known version.
const uint8_t* creation_uuid(std::span<const uint8_t> head) {
    if (head.size() < kProbeBytes) return nullptr;
    if (util::load_le<uint32_t>(head.data() + offsetof(PreHeader, signature)) != kSignature) return nullptr;
    switch (util::load_le<uint32_t>(head.data() + offsetof(PreHeader, version)) >> 16) {
        case 0: return head.data() + kHeaderOffset + offsetof(Header0, uuid_create);
        case 1: return head.data() + kHeaderOffset + offsetof(Header1, uuid_create);
        default: return nullptr;
    }
}

std::string shown(const std::string& dir) { return dir.empty() ? "." : dir; }

struct Place {
    std::string dir;     // as a FileSystem name ("" is the root)
    std::string prefix;  // how a file there is named relative to the image
};

struct Match {
    std::string ref;
    std::string name;
    FileIdentity id;
};

}  // namespace

Result<ParentLink> find_parent(const File& self, const Meta& m, const OpenContext& ctx) {
    ParentLink link;
    if (!m.is_diff()) return link;
    if (ctx.options().untrusted) {
        link.note = "untrusted mode does not search for it";
        return link;
    }
    if (ctx.options().no_backing) {
        link.note = "the backing chain was not opened";
        link.layer_only = true;
        return link;
    }
    if (!ctx.options().backing_override.empty()) return link;  // the generic opener attaches the named one

    const std::string image = resolve_reference("", ctx.image_name());
    const std::string dir(dir_name(image));
    std::vector<Place> places;
    places.push_back({dir, ""});
    places.push_back({dir.empty() ? "Snapshots" : (dir.back() == '/' ? dir : dir + "/") + "Snapshots", "Snapshots/"});
    std::string up = resolve_reference(image, "..");
    if (up == ".") up.clear();
    if (up != dir) places.push_back({std::move(up), "../"});

    const std::string want = util::guid_to_string(m.uuid_linkage);
    const FileIdentity self_id = self.identity();
    std::vector<Match> matches;
    std::string looked;  // "'a', 'a/Snapshots' (none), ..." for the message when nothing matches
    size_t examined = 0;
    bool capped = false;
    std::vector<uint8_t> head(kProbeBytes);
    for (const Place& place : places) {
        looked += (looked.empty() ? "'" : ", '") + shown(place.dir) + "'";
        auto names = ctx.fs().list(place.dir);
        if (!names) {
            // A missing Snapshots folder is normal; anything else is worth telling the user.
            if (names.error().code != ErrorCode::not_found) looked += " (" + names.error().message + ")";
            continue;
        }
        for (const std::string& name : *names) {
            if (!has_vdi_suffix(base_name(name))) continue;
            if (examined == kMaxCandidates) {
                capped = true;
                break;
            }
            ++examined;
            auto f = ctx.fs().open(name, Access::read_only);
            if (!f) continue;  // unreadable files cannot be the parent we could open anyway
            FileIdentity id = (*f)->identity();
            if (id == self_id) continue;
            auto n = (*f)->read_at(0, head);
            if (!n || *n < kProbeBytes) continue;
            const uint8_t* uuid = creation_uuid(head);
            if (!uuid || std::memcmp(uuid, m.uuid_linkage, 16) != 0) continue;
            // The same file reached twice (a directory listed under two names) is one parent.
            if (std::any_of(matches.begin(), matches.end(), [&](const Match& x) { return x.id == id; })) continue;
            matches.push_back({place.prefix + std::string(base_name(name)), name, id});
        }
        if (capped) break;
    }
    if (matches.size() > 1)
        return make_error(ErrorCode::invalid_argument, "the parent uuid " + want + " is the creation uuid of both '" +
                                                           matches[0].name + "' and '" + matches[1].name +
                                                           "'; name the parent with --parent FILE");
    if (matches.size() == 1) {
        link.found = std::move(matches[0].ref);
        return link;
    }
    link.note = "no .vdi file with creation uuid " + want + " in " + looked;
    if (capped) link.note += " (only the first " + std::to_string(kMaxCandidates) + " .vdi files were read)";
    return link;
}

}  // namespace vdisk::vdi
