#include "formats/artifact_files.h"

#include "core/input_file.h"
#include "core/mapped_file.h"
#include "formats/manifest.h"

namespace sf {

nlohmann::json DirectoryFiles::manifest() const { return read_manifest(dir_); }

uint64_t DirectoryFiles::size(const std::string& name) const { return InputFile(path_of(name)).size(); }

FileBytes DirectoryFiles::map(const std::string& name) const {
  auto m = std::make_shared<MappedFile>(path_of(name));
  return {m->data(), m->size(), m};
}

}  // namespace sf
