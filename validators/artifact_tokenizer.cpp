#include "validators/artifact_tokenizer.h"

#include "core/error.h"
#include "formats/manifest.h"

namespace sf {

std::unique_ptr<Tokenizer> open_artifact_tokenizer(const Artifact& artifact) {
  const ArtifactTokenizer& t = artifact.tokenizer();
  if (t.kind.empty()) return nullptr;
  auto tok = open_tokenizer(t.kind, t.paths, artifact.dir() + "/" + kManifestName);
  const VocabMap* map = artifact.vocab_map();
  const int64_t vocab = map ? map->old_size() : artifact.desc().vocab_size;
  if (tok->vocab_size() > vocab)
    fail_file(artifact.dir(), "its tokenizer has " + std::to_string(tok->vocab_size()) + " pieces but the model only " +
                                  std::to_string(vocab) + (map ? " source ids" : " embeddings"));
  return tok;
}

}  // namespace sf
