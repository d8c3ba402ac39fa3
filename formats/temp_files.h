#pragma once
// Temporary files for readers whose container cannot hand out what they need in place.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sf {

// Files written to a private temporary directory (mkdtemp under $TMPDIR, mode 0700), for readers
// that open files by name (the tokenizers) when an artifact's files live inside one container file
// (a GGUF file, a zip bundle, an HDF5 file). Everything is removed with this object.
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

// Byte blocks appended to a temporary file that has no name (created under $TMPDIR on the first
// block and unlinked at once, so nothing is left behind however the process ends), then mapped read-only: for a reader
// whose tensors must be reassembled before they can be run (HDF5 splits a quantized row into
// datasets). The blocks then live in the kernel's page cache, not in memory the process filled, so
// low-memory execution can release and re-read them (executor/unit_stream.h), and reassembling a
// model takes one tensor's memory.
class MappedTempStore {
 public:
  static constexpr size_t kAlign = 64;  // every block starts at a multiple of this, as in a shard
  // `what` names the container in messages.
  explicit MappedTempStore(std::string what);
  ~MappedTempStore();
  MappedTempStore(const MappedTempStore&) = delete;
  MappedTempStore& operator=(const MappedTempStore&) = delete;

  // Appends n bytes at the next aligned offset and returns it. Only before map().
  uint64_t append(const void* data, size_t n);
  // Maps everything appended; at() is valid from then on, for the life of this object.
  void map();
  const uint8_t* at(uint64_t offset) const { return base_ + offset; }

 private:
  std::string what_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint8_t* base_ = nullptr;
};

}  // namespace sf
