#include "formats/manifest.h"

#include "core/error.h"
#include "core/fs_util.h"
#include "core/json_util.h"
#include "shardforge_version.h"

namespace sf {

json manifest_header() {
  return {{"format", kArtifactFormat}, {"format_version", kArtifactVersion}, {"tool_version", SHARDFORGE_VERSION}};
}

json read_manifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifestName;
  if (!file_exists(path)) fail_file(dir, "not an artifact: manifest.json is missing");
  const json m = read_json_file(path);
  if (!m.is_object() || m.value("format", "") != kArtifactFormat) fail_file(path, "not a shardforge manifest");
  if (m.value("format_version", 0) != kArtifactVersion)
    fail_file(path, "artifact format version " + m.value("format_version", json(0)).dump() + " is not supported");
  return m;
}

}  // namespace sf
