#pragma once
// Artifacts by container. Every command that takes an artifact (inspect, verify, run, eval, bench,
// compare) opens it through this table, so a container a writer produces is readable everywhere
// once its reader has a row here. Each reader recognises its container cheaply (magic bytes, a
// directory's manifest), opens it for execution (every tensor a view the executor reads), and checks
// it completely for `verify` (checksums and structure).
#include <string>
#include <vector>

#include "formats/artifact.h"

namespace sf {

struct ArtifactReader {
  const char* name;
  const char* description;
  bool (*recognises)(const std::string& path);
  Artifact (*open)(const std::string& path);
  // Every problem found (empty: intact). Never throws for a damaged artifact.
  std::vector<std::string> (*verify)(const std::string& path);
};

// In the order they are asked.
const std::vector<ArtifactReader>& artifact_readers();
// The first reader that recognises `path`; the artifact directory's when none does, so a wrong path
// is explained by its messages (no manifest.json, ...).
const ArtifactReader& reader_for(const std::string& path);
// Whether some reader recognises `path` (inspect tells artifacts from sources by this).
bool is_artifact(const std::string& path);

// reader_for(path).open(path).
Artifact open_model(const std::string& path);

}  // namespace sf
