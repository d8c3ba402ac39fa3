#include "validators/artifact_tokenizer.h"

#include "core/error.h"
#include "formats/manifest.h"

namespace sf {

namespace {

// A GGUF's tokenizer files are extracted to a private temporary directory (gguf_model.cpp) that is
// gone by the time an error is shown: its messages name the GGUF and the key holding each file.
std::string gguf_labels(std::string message, const Artifact& artifact) {
  const ArtifactTokenizer& t = artifact.tokenizer();
  for (const auto& path : t.paths) {
    const std::string label = artifact.dir() + ": shardforge.tokenizer.file." + path.substr(path.rfind('/') + 1);
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
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = open_tokenizer(t.kind, t.paths,
                         gguf ? artifact.dir() + ": shardforge.tokenizer.kind" : artifact.dir() + "/" + kManifestName);
  } catch (const Error& e) {
    if (!gguf) throw;
    throw Error(gguf_labels(e.message(), artifact), e.kind());
  }
  const VocabMap* map = artifact.vocab_map();
  const int64_t vocab = map ? map->old_size() : artifact.desc().vocab_size;
  if (tok->vocab_size() > vocab)
    fail_file(artifact.dir(), "its tokenizer has " + std::to_string(tok->vocab_size()) + " pieces but the model only " +
                                  std::to_string(vocab) + (map ? " source ids" : " embeddings"));
  return tok;
}

}  // namespace sf
