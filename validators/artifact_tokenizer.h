#pragma once
// The tokenizer an artifact carries (manifest "tokenizer": its kind and files), opened by kind.
#include <memory>

#include "formats/artifact.h"
#include "tokenizers/tokenizer_kinds.h"

namespace sf {

// nullptr when the artifact has none. A tokenizer with more pieces than the model has embeddings
// (than the source had, for a trimmed artifact: its ids are mapped, validators/model_tokenizer.h)
// is refused: the ids it makes would index past the embedding.
std::unique_ptr<Tokenizer> open_artifact_tokenizer(const Artifact& artifact);

}  // namespace sf
