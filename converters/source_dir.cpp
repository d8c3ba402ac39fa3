#include "converters/source_dir.h"

#include <algorithm>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/input_file.h"
#include "core/json_util.h"

namespace sf {

namespace fs = std::filesystem;

std::vector<fs::path> directory_entries(const std::string& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) out.push_back(it->path());
  if (ec) fail_file(dir, "cannot list the directory: " + ec.message(), ErrorKind::IO);
  std::sort(out.begin(), out.end());
  return out;
}

std::string parent_dir(const std::string& file) {
  const fs::path parent = fs::path(file).parent_path();
  return parent.empty() ? "." : parent.string();
}

void load_source_config(SourceModel& m, const std::string& dir, const std::string& file) {
  const bool had_args = m.config_kind == "model_args";
  if (present(dir + "/config.json")) {
    m.config = read_json_file(dir + "/config.json");
    m.config_kind = "hf_config";
    if (present(dir + "/params.json"))
      m.warnings.push_back(dir + "/params.json is ignored: config.json beside it states the hyper-parameters");
  } else if (present(dir + "/params.json")) {
    m.config = read_json_file(dir + "/params.json");
    m.config_kind = "params_json";
  }
  if (had_args && m.config_kind != "model_args")
    m.warnings.push_back(file + ": the checkpoint's own model_args are ignored: " +
                         (m.config_kind == "hf_config" ? "config.json" : "params.json") +
                         " beside it states the hyper-parameters");
}

// The tokenizer beside the checkpoint: tokenizer.model, else the one *.model file in the directory
// (llama2.c keeps tok512.model beside stories260K.pt), else GPT-2's vocab.json with merges.txt
// (tokenizer_path is then the vocab.json). Several, or none: a warning, and no tokenizer.
void find_tokenizer(SourceModel& m, const std::string& dir) {
  // Only regular files are taken: SentencePiece would block reading a FIFO, or read a device.
  auto take = [&](const std::vector<std::string>& paths) {
    try {
      for (const auto& path : paths) InputFile check(path);
      m.tokenizer_path = paths.front();
    } catch (const Error& e) {
      m.tokenizer_warning = e.message() + "; not taken as the tokenizer";
    }
  };
  if (present(dir + "/tokenizer.model")) return take({dir + "/tokenizer.model"});
  std::vector<std::string> found;
  for (const auto& p : directory_entries(dir))
    if (std::error_code ec; p.extension() == ".model" && !fs::is_directory(p, ec)) found.push_back(p.string());
  if (found.size() == 1) return take({found[0]});
  if (found.empty() && present(dir + "/vocab.json") && present(dir + "/merges.txt"))
    return take({dir + "/vocab.json", dir + "/merges.txt"});
  if (found.empty()) {
    m.tokenizer_warning = "no tokenizer beside the checkpoint in " + dir +
                          " (tokenizer.model, one *.model file, or vocab.json with merges.txt); the artifact will "
                          "have none unless --tokenizer names one";
    return;
  }
  std::string names;
  for (const auto& f : found) names += (names.empty() ? "" : ", ") + fs::path(f).filename().string();
  m.tokenizer_warning = "several tokenizers beside the checkpoint in " + dir + " (" + names +
                        "); none was taken: name one with --tokenizer";
}

}  // namespace sf
