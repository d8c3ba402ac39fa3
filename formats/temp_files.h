#pragma once
// Files written to a private temporary directory (mkdtemp under $TMPDIR, mode 0700), for readers
// that open files by name (the tokenizers) when an artifact's files live inside one container file
// (a GGUF file, a zip bundle). Everything is removed with this object.
#include <cstddef>
#include <string>
#include <vector>

namespace sf {

class PrivateTempFiles {
 public:
  // `what` names the container in the directory's name (shardforge-WHAT-XXXXXX) and in messages.
  explicit PrivateTempFiles(std::string what) : what_(std::move(what)) {}
  ~PrivateTempFiles();
  PrivateTempFiles(const PrivateTempFiles&) = delete;
  PrivateTempFiles& operator=(const PrivateTempFiles&) = delete;

  // Writes DIR/name (a plain file name, created exclusively: the same name twice is an error) and
  // returns its path. The directory is made on the first call.
  std::string add(const std::string& name, const void* data, size_t n);

 private:
  std::string what_, dir_;
  std::vector<std::string> paths_;
};

}  // namespace sf
