#pragma once
// How run and eval get from text to an artifact's token ids: the artifact's tokenizer through its
// vocabulary map, with the family's say in it. For a family whose tokenizer shardforge does not
// reproduce (converters/architectures/architecture.h: tokenizer_not_reproduced, e.g. ChatGLM) no
// tokenizer is used, even one an earlier shardforge stored, and the messages say why and point to
// --ids.
#include <memory>
#include <string>

#include "formats/artifact.h"
#include "validators/model_tokenizer.h"

namespace sf::cli {

// Null when the artifact has none (or one that is not used: a warning says so).
std::unique_ptr<ModelTokenizer> open_text_tokenizer(const Artifact& artifact);
// The one line for an artifact without a usable tokenizer; `alternative` says what to do instead
// ("pass the prompt as token ids with --ids").
[[noreturn]] void fail_no_tokenizer(const Artifact& artifact, const std::string& alternative);

}  // namespace sf::cli
