#pragma once
// convert --format hdf5: one .h5 file (docs/format.md, "HDF5 container").
#include <memory>

#include "formats/format_registry.h"

namespace sf {

std::unique_ptr<FormatWriter> make_hdf5_writer(const OutputTarget& target, const ModelDesc& desc);

}  // namespace sf
