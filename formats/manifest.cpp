#include "formats/manifest.h"

#include "core/error.h"
#include "core/fs_util.h"
#include "core/json_util.h"
#include "core/sha256.h"
#include "shardforge_version.h"

namespace sf {

namespace {

std::string manifest_digest(json manifest) {
  manifest.erase(kManifestHashKey);
  const std::string text = manifest.dump();  // compact; nlohmann's objects keep their keys sorted
  return sha256_hex(text.data(), text.size());
}

// Every place a manifest names a file, so a new field cannot escape the check by being forgotten.
void check_file_names(const json& m, const std::string& path) {
  if (m.contains("units")) {
    const json& units = m["units"];
    if (!units.is_object()) fail_file(path, "units is not an object");
    if (units.contains("embedding")) {
      if (!units["embedding"].is_object()) fail_file(path, "units.embedding is not an object");
      check_artifact_file_name(units["embedding"].value("file", json()), path, "units.embedding.file");
    }
    if (units.contains("blocks")) {
      if (!units["blocks"].is_array()) fail_file(path, "units.blocks is not a list");
      for (const auto& b : units["blocks"]) check_artifact_file_name(b, path, "units.blocks[]");
    }
    if (units.contains("head")) check_artifact_file_name(units["head"], path, "units.head");
    if (units.contains("positions")) check_artifact_file_name(units["positions"], path, "units.positions");
  }
  if (m.contains("tokenizer") && !m["tokenizer"].is_null()) {
    const json& t = m["tokenizer"];
    if (!t.is_object()) fail_file(path, "tokenizer is not an object");
    if (!t.contains("files") || !t["files"].is_array() || t["files"].empty())
      fail_file(path, "tokenizer.files is not a list of files");
    for (const auto& f : t["files"]) {
      if (!f.is_object()) fail_file(path, "tokenizer.files[] entry is not an object");
      check_artifact_file_name(f.value("name", json()), path, "tokenizer.files[].name");
    }
  }
  if (m.contains("vocab_map")) {
    if (!m["vocab_map"].is_object()) fail_file(path, "vocab_map is not an object");
    check_artifact_file_name(m["vocab_map"].value("file", json()), path, "vocab_map.file");
  }
  if (m.contains("onnx")) {  // --format onnx: its graphs and data file
    const json& o = m["onnx"];
    if (!o.is_object() || !o.contains("graphs") || !o["graphs"].is_array()) fail_file(path, "onnx.graphs is not a list");
    for (const auto& g : o["graphs"]) check_artifact_file_name(g, path, "onnx.graphs[]");
    check_artifact_file_name(o.value("data", json()), path, "onnx.data");
  }
  if (m.contains("files")) {
    if (!m["files"].is_array()) fail_file(path, "files is not a list");
    for (const auto& f : m["files"]) {
      if (!f.is_object()) fail_file(path, "files[] entry is not an object");
      check_artifact_file_name(f.value("path", json()), path, "files[].path");
    }
  }
}

}  // namespace

json manifest_header() {
  return {{"format", kArtifactFormat}, {"format_version", kArtifactVersion}, {"tool_version", SHARDFORGE_VERSION}};
}

json seal_manifest(json manifest) {
  manifest[kManifestHashKey] = manifest_digest(manifest);
  return manifest;
}

std::string check_artifact_file_name(const json& name, const std::string& where, const std::string& field) {
  if (!name.is_string()) fail_file(where, field + " is not a file name");
  const std::string s = name.get<std::string>();
  const char* problem = s.empty()                                ? "is empty"
                        : s.find('/') != std::string::npos       ? "contains '/'"
                        : s.find('\0') != std::string::npos      ? "contains a NUL byte"
                        : s == "." || s == ".."                  ? "is not a file name"
                        : s == kManifestName                     ? "names the manifest itself"
                                                                 : nullptr;
  if (problem)
    fail_file(where, field + " " + json(s).dump(-1, ' ', false, json::error_handler_t::replace) + " " + problem +
                         ": files must be plain names inside the artifact directory");
  return s;
}

json read_manifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifestName;
  if (!file_exists(path)) fail_file(dir, "not an artifact: manifest.json is missing");
  return parse_manifest(read_file(path, kMaxManifestBytes), path);
}

json parse_manifest(const std::string& text, const std::string& path) {
  const json m = parse_json(text, path);
  if (!m.is_object() || m.value("format", json()) != json(kArtifactFormat)) fail_file(path, "not a shardforge manifest");
  if (m.value("format_version", json(0)) != json(kArtifactVersion))
    fail_file(path, "artifact format version " + m.value("format_version", json(0)).dump() +
                        " is not supported (this shardforge reads version " + std::to_string(kArtifactVersion) +
                        "; convert the source again)");
  if (!m.contains(kManifestHashKey) || !m[kManifestHashKey].is_string())
    fail_file(path, "has no manifest_sha256: cannot check that the manifest is intact");
  if (m[kManifestHashKey].get<std::string>() != manifest_digest(m))
    fail_file(path, "manifest_sha256 differs from the manifest's content (edited or damaged)");
  check_file_names(m, path);
  return m;
}

}  // namespace sf
