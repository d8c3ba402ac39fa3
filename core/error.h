#pragma once
// One error type for everything a user can cause. Its kind tells the CLI which exit code to use
// (usage errors exit 2, everything else 1) and lets probing readers tell "not mine" from "mine but
// broken". The message keeps every byte (what() would stop at a NUL quoted from a file).
#include <stdexcept>
#include <string>

namespace sf {

enum class ErrorKind {
  Invalid,      // bad input or a failed check: a damaged file, inconsistent values (exit 1)
  Unsupported,  // well-formed but not something shardforge handles (exit 1)
  Usage,        // a bad option or argument on the command line or in a pipeline file (exit 2)
  IO,           // the system refused: cannot create, disk full, out of memory (exit 1)
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorKind kind = ErrorKind::Invalid)
      : std::runtime_error(message), message_(message), kind_(kind) {}
  const std::string& message() const { return message_; }
  ErrorKind kind() const { return kind_; }

 private:
  std::string message_;
  ErrorKind kind_;
};

// "FILE: problem" - every message about a file names the file first.
[[noreturn]] void fail(const std::string& message, ErrorKind kind = ErrorKind::Invalid);
[[noreturn]] void fail_file(const std::string& path, const std::string& problem, ErrorKind kind = ErrorKind::Invalid);
// A bad option or argument: exit code 2.
[[noreturn]] void fail_usage(const std::string& message);

}  // namespace sf
