#include "core/error.h"

namespace sf {

void fail(const std::string& message) { throw Error(message); }

void fail_file(const std::string& path, const std::string& problem) {
  throw Error(path + ": " + problem);
}

}  // namespace sf
