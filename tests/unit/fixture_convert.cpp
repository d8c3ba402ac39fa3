#include "fixture_convert.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "pipeline/convert.h"

namespace sf::test {

std::string convert_fixture(const std::string& name, const std::string& scheme, const std::string& prefix,
                            const std::string& must_hold) {
  const char* d = std::getenv("SF_FIXTURES");
  if (!d) return "";
  const std::filesystem::path src = std::filesystem::path(d) / name;
  if (!std::filesystem::is_directory(src)) return "";
  if (!must_hold.empty() && !std::filesystem::is_regular_file(src / must_hold)) return "";
  const std::string out =
      (std::filesystem::temp_directory_path() / (prefix + name + scheme + std::to_string(::getpid()))).string();
  ConvertOptions opt;
  opt.source = src.string();
  opt.out = out;
  opt.scheme = scheme;
  opt.force = true;
  opt.progress = false;
  convert(opt);
  return out;
}

}  // namespace sf::test
