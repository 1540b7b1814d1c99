// SPDX-License-Identifier: Apache-2.0
// vdisk — what each virtualization or cloud platform accepts for import, and a lint of an image against it.
//
// Each rule is taken from the platform's published import documentation (the `source` of each target; the
// README's table cites them). convert --target picks the output format and options; lint reports every
// rule an image breaks, with the command that fixes it.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vdisk/vdisk.hpp"

namespace vdisk {

struct CloudTarget {
    std::string_view name;      ///< what users type: azure aws gce esxi hyperv virtualbox proxmox
    std::string_view platform;  ///< "Microsoft Azure"
    std::string_view format;    ///< output format convert --target writes
    std::vector<std::pair<std::string, std::string>> options;  ///< its -o values
    std::string_view container;  ///< "" or "tar.gz": GCE wants disk.raw inside a gzip'd tar
    std::string_view summary;    ///< the rules in one line
    std::string_view source;     ///< where the rules are published
};

/// Every target, in a fixed order.
std::span<const CloudTarget> cloud_targets();
/// A target by name; not_found listing the names otherwise.
Result<const CloudTarget*> find_cloud_target(std::string_view name);

struct LintFinding {
    std::string rule;     ///< short name: "format", "size-alignment", "size-limit", "backing-file", ...
    std::string problem;  ///< what is wrong, with the values
    bool refused = true;  ///< the platform rejects the image (else: a warning)
    std::string fix;      ///< the command line that fixes it
};

struct LintReport {
    const CloudTarget* target = nullptr;
    std::string image;
    std::string format;  ///< the image's format as opened
    uint64_t virtual_size = 0;
    std::vector<LintFinding> findings;
    bool refused() const;
};

/// Check the image `name` (opened as `image`, whose main file is read for format details such as a VHD's
/// disk type) against `target`'s rules. Every rule is checked; none stops the others.
Result<LintReport> lint_image(FileSystem& fs, std::string_view name, const OpenedImage& image,
                              const CloudTarget& target);

/// GCE's import container: `dest_name` becomes a gzip'd tar holding one member, disk.raw, with the virtual
/// content of `source` padded with zeros to a whole GiB (old GNU tar header, as `tar --format=oldgnu` writes). Written
/// under a temporary name and renamed into place on success, like convert(). options.content_sink and progress are
/// honoured.
Status write_gce_tarball(BlockDevice& source, FileSystem& fs, std::string_view dest_name,
                         const ConvertOptions& options);

}  // namespace vdisk
