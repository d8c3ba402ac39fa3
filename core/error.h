#pragma once
// One error type for everything a user can cause (bad input, failed check). The CLI turns it into
// a one-line message and exit code 1; anything else escaping is a bug.
#include <stdexcept>
#include <string>

namespace sf {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// "FILE: problem" - every message about a file names the file first.
[[noreturn]] void fail(const std::string& message);
[[noreturn]] void fail_file(const std::string& path, const std::string& problem);

}  // namespace sf
