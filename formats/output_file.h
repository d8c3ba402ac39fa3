#pragma once
// One output file written safely, for the formats whose artifact is a single file (GGUF, and any
// container a writer fills by path). The target is checked before any work (-o must name a file,
// not a directory; an existing file is replaced only with --force and only when it is a file of
// the same format); the writer fills OUT.partial-PID (creating it exclusively) and any side files
// OUT.partial-PID.SUFFIX; commit() reads the result back and renames it into place atomically
// (renameat2: RENAME_NOREPLACE, or RENAME_EXCHANGE under --force). A run that fails or dies leaves
// nothing at OUT; the destructor removes what this run created.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "formats/artifact_writer.h"

namespace sf {

struct OutputFileKind {
  const char* format;  // as named in messages: "GGUF"
  const char* option;  // the --format value: "gguf"
  bool (*is_one)(const std::string& path);  // the magic check: what --force may replace
};

class OutputFile {
 public:
  OutputFile(const OutputTarget& target, const OutputFileKind& kind);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  const std::string& path() const { return out_; }
  // OUT.partial-PID: the writer creates it exclusively (O_EXCL, ZIP_EXCL, H5F_ACC_EXCL); it is
  // removed unless commit() succeeds.
  const std::string& temp_path() const { return tmp_; }
  // OUT.partial-PID + suffix: a scratch file, always removed by the destructor.
  std::string side_path(const std::string& suffix);
  // The writer has closed temp_path; read_back opens it with the format's reader and throws Error
  // when it does not read back. Then renames it into place and syncs the directory.
  void commit(const std::function<void(const std::string& temp)>& read_back);

 private:
  void put_in_place();
  std::string why_not_replaceable(const std::string& path) const;
  std::string out_, tmp_;
  std::vector<std::string> sides_;
  bool force_;
  OutputFileKind kind_;
  bool committed_ = false;
};

// pwrite all of [p, p+n) at off; Error naming `path` (disk full?) otherwise.
void write_at(int fd, const void* p, size_t n, uint64_t off, const std::string& path);
// Copies n bytes from `in` at in_off to `out` at out_off (copy_file_range; read/write where the
// file system cannot).
void copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t n, const std::string& path);

}  // namespace sf
