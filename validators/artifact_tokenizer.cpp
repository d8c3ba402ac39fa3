#include "validators/artifact_tokenizer.h"

#include "core/error.h"
#include "formats/manifest.h"

namespace sf {

namespace {

// A GGUF's or an HDF5 file's tokenizer files are extracted to a private temporary directory
// (gguf_model.cpp, hdf5_model.cpp) that is gone by the time an error is shown: its messages name the
// container and where in it each file is (the GGUF key, the HDF5 dataset).
std::string container_labels(std::string message, const Artifact& artifact, const std::string& place) {
  const ArtifactTokenizer& t = artifact.tokenizer();
  for (const auto& path : t.paths) {
    const std::string label = artifact.dir() + ": " + place + path.substr(path.rfind('/') + 1);
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
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = open_tokenizer(t.kind, t.paths,
                         gguf   ? artifact.dir() + ": shardforge.tokenizer.kind"
                         : hdf5 ? artifact.dir() + ": the manifest attribute's tokenizer"
                                : artifact.dir() + "/" + kManifestName);
  } catch (const Error& e) {
    if (!gguf && !hdf5) throw;
    throw Error(container_labels(e.message(), artifact, gguf ? "shardforge.tokenizer.file." : "/files/"), e.kind());
  }
  const VocabMap* map = artifact.vocab_map();
  const int64_t vocab = map ? map->old_size() : artifact.desc().vocab_size;
  if (tok->vocab_size() > vocab)
    fail_file(artifact.dir(), "its tokenizer has " + std::to_string(tok->vocab_size()) + " pieces but the model only " +
                                  std::to_string(vocab) + (map ? " source ids" : " embeddings"));
  return tok;
}

}  // namespace sf
