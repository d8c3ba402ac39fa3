#include "core/error.h"

namespace sf {

void fail(const std::string& message, ErrorKind kind) { throw Error(message, kind); }

void fail_file(const std::string& path, const std::string& problem, ErrorKind kind) {
  throw Error(path + ": " + problem, kind);
}

void fail_usage(const std::string& message) { throw Error(message, ErrorKind::Usage); }

}  // namespace sf
