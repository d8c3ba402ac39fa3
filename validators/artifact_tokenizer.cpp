#include "validators/artifact_tokenizer.h"

#include "core/error.h"
#include "formats/manifest.h"

namespace sf {

namespace {

// The tokenizer files of a GGUF, an HDF5 file or a zip bundle are extracted to a private temporary
// directory (formats/temp_files.h) that is gone by the time an error is shown: messages name the
// container and where the file is in it (the GGUF's key, the HDF5 dataset, the bundle's entry),
// `place` + the file's name.
std::string container_labels(std::string message, const Artifact& artifact, const std::string& place) {
  const ArtifactTokenizer& t = artifact.tokenizer();
  for (const auto& path : t.paths) {
    const std::string label = artifact.dir() + place + path.substr(path.rfind('/') + 1);
    for (size_t at = message.find(path); at != std::string::npos; at = message.find(path, at + label.size()))
      message.replace(at, path.size(), label);
  }
  return message;
}

}  // namespace

std::unique_ptr<Tokenizer> open_artifact_tokenizer(const Artifact& artifact) {
  const ArtifactTokenizer& t = artifact.tokenizer();
  if (t.kind.empty()) return nullptr;
  const bool gguf = artifact.manifest().value("format", "") == "gguf";
  const bool hdf5 = artifact.manifest().value("container", "") == "hdf5";
  // A bundle's files are not beside its path: it is a file, not a directory.
  const bool zip = !gguf && !hdf5 && !t.paths.empty() && t.paths[0].rfind(artifact.dir() + "/", 0) != 0;
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = open_tokenizer(t.kind, t.paths,
                         gguf   ? artifact.dir() + ": shardforge.tokenizer.kind"
                         : hdf5 ? artifact.dir() + ": the manifest attribute's tokenizer"
                                : artifact.dir() + (zip ? ":" : "/") + kManifestName);
  } catch (const Error& e) {
    if (!gguf && !hdf5 && !zip) throw;
    throw Error(container_labels(e.message(), artifact, gguf ? ": shardforge.tokenizer.file." : hdf5 ? ": /files/" : ":"),
                e.kind());
  }
  const VocabMap* map = artifact.vocab_map();
  const int64_t vocab = map ? map->old_size() : artifact.desc().vocab_size;
  if (tok->vocab_size() > vocab)
    fail_file(artifact.dir(), "its tokenizer has " + std::to_string(tok->vocab_size()) + " pieces but the model only " +
                                  std::to_string(vocab) + (map ? " source ids" : " embeddings"));
  return tok;
}

}  // namespace sf
