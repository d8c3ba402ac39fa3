#include "validators/artifact_tokenizer.h"

#include "core/error.h"
#include "formats/manifest.h"

namespace sf {

namespace {

// The tokenizer files of a GGUF or a zip bundle are extracted to a private temporary directory
// (formats/temp_files.h) that is gone by the time an error is shown: messages name the container
// and where the file is in it (the GGUF's key, the bundle's entry).
std::string container_labels(std::string message, const Artifact& artifact, bool gguf) {
  const ArtifactTokenizer& t = artifact.tokenizer();
  for (const auto& path : t.paths) {
    const std::string name = path.substr(path.rfind('/') + 1);
    const std::string label = gguf ? artifact.dir() + ": shardforge.tokenizer.file." + name : artifact.dir() + ":" + name;
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
  // A bundle's files are not beside its path: it is a file, not a directory.
  const bool in_file = gguf || (!t.paths.empty() && t.paths[0].rfind(artifact.dir() + "/", 0) != 0);
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = open_tokenizer(t.kind, t.paths,
                         gguf ? artifact.dir() + ": shardforge.tokenizer.kind"
                              : artifact.dir() + (in_file ? ":" : "/") + kManifestName);
  } catch (const Error& e) {
    if (!in_file) throw;
    throw Error(container_labels(e.message(), artifact, gguf), e.kind());
  }
  const VocabMap* map = artifact.vocab_map();
  const int64_t vocab = map ? map->old_size() : artifact.desc().vocab_size;
  if (tok->vocab_size() > vocab)
    fail_file(artifact.dir(), "its tokenizer has " + std::to_string(tok->vocab_size()) + " pieces but the model only " +
                                  std::to_string(vocab) + (map ? " source ids" : " embeddings"));
  return tok;
}

}  // namespace sf
