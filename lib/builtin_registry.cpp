// The explicit list of built-in formats, in probing order (cheap, specific magics first; raw last).
// A format is one folder plus one line here.
#include "builtin_formats.hpp"

namespace vdisk {

Registry Registry::builtin() {
    Registry r;
    r.add(make_raw_format());
    return r;
}

}  // namespace vdisk
