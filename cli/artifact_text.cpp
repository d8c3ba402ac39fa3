#include "cli/artifact_text.h"

#include "converters/architectures/architecture.h"
#include "core/error.h"
#include "core/messages.h"

namespace sf::cli {

std::unique_ptr<ModelTokenizer> open_text_tokenizer(const Artifact& artifact) {
  if (const char* why = tokenizer_not_reproduced(artifact.desc().family)) {
    // Stored by a shardforge that still took ChatGLM's tokenizer.model: its ids are not the model's.
    if (!artifact.tokenizer().kind.empty())
      warn(artifact.dir() + ": its tokenizer is not used: " + why + ", which shardforge does not implement");
    return nullptr;
  }
  return ModelTokenizer::open(artifact);
}

void fail_no_tokenizer(const Artifact& artifact, const std::string& alternative) {
  const char* why = tokenizer_not_reproduced(artifact.desc().family);
  fail_file(artifact.dir(), std::string("artifact has no tokenizer") +
                                (why ? std::string(": ") + why + ", which shardforge does not implement; "
                                     : std::string(" (convert with --tokenizer FILE); ")) +
                                alternative);
}

}  // namespace sf::cli
