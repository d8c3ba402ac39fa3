#pragma once
// manifest.json: the record of what an artifact is and how it was made (docs/format.md).
#include <string>

#include <nlohmann/json.hpp>

namespace sf {

using json = nlohmann::json;

inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kArtifactFormat = "shardforge";
inline constexpr int kArtifactVersion = 3;
inline constexpr const char* kManifestHashKey = "manifest_sha256";

// The fields every manifest starts with: format, format_version, tool_version.
json manifest_header();

// Adds manifest_sha256: the sha256 of the compact dump (sorted keys) of the manifest without it.
json seal_manifest(json manifest);

// Parses OUT/manifest.json and checks, before anyone opens a file it names: format, version,
// integrity (manifest_sha256), and that every file it names is a plain name inside the artifact
// directory (check_artifact_file_name). Throws Error naming the file.
json read_manifest(const std::string& dir);
// The same checks on a manifest's text read from elsewhere (a zip bundle's entry), named `path`.
json parse_manifest(const std::string& text, const std::string& path);
inline constexpr uint64_t kMaxManifestBytes = uint64_t(64) << 20;

// The one rule for file names in a manifest: a non-empty plain name (no '/', no NUL, not "." or
// "..") other than manifest.json. Throws Error naming `where` otherwise; returns the name.
std::string check_artifact_file_name(const json& name, const std::string& where, const std::string& field);

}  // namespace sf
