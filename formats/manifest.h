#pragma once
// manifest.json: the record of what an artifact is and how it was made (docs/format.md).
#include <string>

#include <nlohmann/json.hpp>

namespace sf {

using json = nlohmann::json;

inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kArtifactFormat = "shardforge";
inline constexpr int kArtifactVersion = 1;

// The fields every manifest starts with: format, format_version, tool_version.
json manifest_header();
// Parses OUT/manifest.json and checks format and version; throws Error naming the file.
json read_manifest(const std::string& dir);

}  // namespace sf
