#pragma once
// Where a layout of an artifact's files is written (the "shards" layout: formats/shard_format.cpp):
// a directory (ArtifactWriter) or a zip bundle (ZipSink, formats/zip_sink.h). A sink takes files
// whole or streamed, hashes each as it comes and lists it in the manifest's "files" in the order
// written, and commits: manifest.json, a read-back with the container's reader, an atomic rename.
// Nothing is in place at OUT until commit succeeds.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf {

using json = nlohmann::json;

class ArtifactSink {
 public:
  virtual ~ArtifactSink() = default;
  virtual void write_bytes(const std::string& name, const void* data, size_t n) = 0;
  void write_file(const std::string& name, const std::vector<uint8_t>& bytes) { write_bytes(name, bytes.data(), bytes.size()); }
  virtual void copy_file(const std::string& name, const std::string& src_path) = 0;
  // A file written in pieces as units arrive (a format's one data file), one at a time: hashed as
  // it is written, listed in "files" when ended. append returns the offset the bytes start at;
  // pad_to adds zero bytes up to a multiple of `alignment`.
  virtual void begin_stream(const std::string& name) = 0;
  virtual uint64_t append(const void* data, size_t n) = 0;
  virtual uint64_t stream_size() const = 0;
  virtual void end_stream() = 0;
  void pad_to(uint64_t alignment) {
    static const uint8_t zeros[4096] = {};
    while (stream_size() % alignment != 0)
      append(zeros, size_t(std::min<uint64_t>(sizeof zeros, alignment - stream_size() % alignment)));
  }
  // Adds "files" and manifest_sha256, writes manifest.json, reads the artifact back (with the
  // container's reader, or `read_back`, given the temporary path, for a layout that reader does
  // not open), puts it in place. Returns the manifest as written.
  virtual json commit(json manifest, const std::function<void(const std::string& tmp)>& read_back = nullptr) = 0;
};

}  // namespace sf
