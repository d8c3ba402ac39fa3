#pragma once
// What every reader finds beside its checkpoint, in the directory holding it: the hyper-parameters
// (config.json or params.json) and the tokenizer. One place, so every container reads them alike.
#include <filesystem>
#include <string>
#include <vector>

#include "converters/source_model.h"

namespace sf {

// The directory's entries, sorted; throws Error naming it when it cannot be listed.
std::vector<std::filesystem::path> directory_entries(const std::string& dir);
// The directory holding a file ("." for a bare name).
std::string parent_dir(const std::string& file);

// config.json (Hugging Face) or params.json (Meta) beside the checkpoint, in that order of
// preference, replacing model_args the checkpoint carried (with a warning saying which won).
// `file` is the checkpoint the warnings name.
void load_source_config(SourceModel& m, const std::string& dir, const std::string& file);

// The tokenizer beside the checkpoint: tokenizer.model, else the one *.model file in the directory.
// Several, or none: m.tokenizer_warning says so, and no tokenizer is taken.
void find_tokenizer(SourceModel& m, const std::string& dir);

}  // namespace sf
