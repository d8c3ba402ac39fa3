#pragma once
// Read-only memory map of a whole file: artifacts are executed in place from their maps (sources
// are read with pread instead, see core/input_file.h). A fault from the file shrinking under the
// map is reported as a one-line error naming it (core/map_fault.h).
#include <cstddef>
#include <cstdint>
#include <string>

namespace sf {

class InputFile;

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  // Maps a file already open (the one a reader has checked, not whatever its path names by now).
  explicit MappedFile(const InputFile& file);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fault_slot_ = -1;  // core/map_fault.h
};

}  // namespace sf
