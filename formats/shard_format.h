#pragma once
#include "formats/format_registry.h"

namespace sf {

// The "shards" format: embedding.bin, block_NNN.shard, head.shard, manifest.json.
std::unique_ptr<FormatWriter> make_shard_writer(const OutputTarget& target, const ModelDesc& desc);
// The same files as one zip bundle (formats/zip_bundle.h), -o naming the file.
std::unique_ptr<FormatWriter> make_zip_bundle_writer(const OutputTarget& target, const ModelDesc& desc);

}  // namespace sf
