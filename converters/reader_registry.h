#pragma once
// Readers by name. Each entry says whether it recognises a path and how to open it; `convert`
// and `inspect` go through open_source() and never name a reader themselves.
#include <memory>
#include <string>
#include <vector>

#include "converters/source_model.h"

namespace sf {

struct ReaderEntry {
  const char* name;
  bool (*probe)(const std::string& path);  // cheap: magic bytes or file names
  std::unique_ptr<SourceModel> (*open)(const std::string& path);
};

const std::vector<ReaderEntry>& readers();
// Opens with the named reader, or the first whose probe accepts the path when format is "auto".
std::unique_ptr<SourceModel> open_source(const std::string& path, const std::string& format = "auto");

}  // namespace sf
