#pragma once
// The zip bundle's sink (formats/zip_bundle.h has the layout and its reader): files are written to
// side files beside OUT (OUT.partial-PID.NAME), hashed as they come, so memory stays one file's
// worth; at commit libzip writes OUT.partial-PID with manifest.json first and then the files in the
// order written, every entry stored, with a fixed time and mode, each local header padded (extra
// field kAlignExtraId) so the entry's data starts at a multiple of kBundleAlign. The same files in
// the same order give the same bytes. The result is read back and verified (every data offset
// aligned, every sha256) before OutputFile renames it into place.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "formats/artifact_sink.h"
#include "formats/artifact_writer.h"
#include "formats/output_file.h"

namespace sf {

class Sha256;

// What OutputFile needs to know of a bundle: --force replaces only another bundle.
extern const OutputFileKind kZipBundleKind;

class ZipSink : public ArtifactSink {
 public:
  explicit ZipSink(const OutputTarget& target);
  ~ZipSink() override;

  void write_bytes(const std::string& name, const void* data, size_t n) override;
  void copy_file(const std::string& name, const std::string& src_path) override;
  void begin_stream(const std::string& name) override;
  uint64_t append(const void* data, size_t n) override;
  uint64_t stream_size() const override { return stream_bytes_; }
  void end_stream() override;
  // The read-back without `read_back` is verify_zip_bundle (checksums included).
  json commit(json manifest, const std::function<void(const std::string& tmp)>& read_back = nullptr) override;
  // The "files" entries so far: path, bytes and sha256 of what was written.
  const json& files() const { return files_; }

 private:
  void write_zip(const std::string& manifest_text);
  OutputFile out_;
  struct Written {
    std::string name, side;
    uint64_t size;
  };
  std::vector<Written> written_;
  json files_ = json::array();
  FILE* stream_ = nullptr;
  std::string stream_name_;
  uint64_t stream_bytes_ = 0;
  std::unique_ptr<Sha256> stream_hash_;
};

}  // namespace sf
