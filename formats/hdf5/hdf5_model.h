#pragma once
// An HDF5 container (convert --format hdf5) opened as an artifact. Only the paths the layout names
// are opened, each through a hard link (soft and external links are refused, so no link is ever
// followed out of the file or around a cycle); every dataset's type, dimensions and storage are
// checked against the model the manifest describes before anything is allocated, and datasets with
// filters, external or virtual storage are refused. Tensors are reassembled from their datasets, one
// at a time, into a mapped temporary file without a name (formats/temp_files.h) that the Artifact
// owns: opening reads every tensor once and takes one tensor's memory, and the views are file maps
// that low-memory execution (--resident-blocks) can release and re-read. The temporary file needs
// the tensors' bytes of free space under $TMPDIR (or /tmp).
#include <string>
#include <vector>

#include "formats/artifact.h"

namespace sf {

// A regular file starting with HDF5's signature (\x89HDF\r\n\x1a\n) at offset 0.
bool is_hdf5_file(const std::string& path);

// For execution: structure, shapes and the manifest's own checksum (no dataset hashing).
Artifact open_hdf5_model(const std::string& path);

// Everything open checks, plus every dataset's sha256 and every tensor's (as the shard stores it)
// against their attributes, and the files' against the manifest. Throws Error naming the file.
void check_hdf5_file(const std::string& path);

// check_hdf5_file's problem as a list (empty: intact), for verify.
std::vector<std::string> verify_hdf5(const std::string& path);

}  // namespace sf
