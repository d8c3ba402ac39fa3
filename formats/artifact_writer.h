#pragma once
// Writes an artifact directory safely: everything goes into a temporary sibling directory
// (OUT.partial-PID), every file is hashed as it is written, manifest.json is written last, the
// result is read back with the artifact reader, and only then is the directory renamed into place
// atomically: without --force only if OUT does not exist (renameat2 RENAME_NOREPLACE), with --force
// by exchanging it with an existing artifact (RENAME_EXCHANGE). A run that dies midway leaves no
// directory with a manifest; nothing the writer did not create is ever deleted.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/artifact_sink.h"

namespace sf {

class Sha256;

struct OutputTarget {
  std::string dir;
  bool force = false;                // replace an existing artifact (never anything else)
  std::vector<std::string> inputs;   // what the conversion reads: OUT may not be or contain any
  std::string split;                 // --split: how a format that can divides its output (onnx: "blocks")
};

class ArtifactWriter : public ArtifactSink {
 public:
  // Checks the target (docs/cli.md "convert"), handles stale OUT.partial-PID siblings, creates ours.
  explicit ArtifactWriter(const OutputTarget& target);
  ~ArtifactWriter();  // removes the files it wrote and its temporary directory unless commit() succeeded
  ArtifactWriter(const ArtifactWriter&) = delete;
  ArtifactWriter& operator=(const ArtifactWriter&) = delete;

  // ArtifactSink (formats/artifact_sink.h).
  void write_bytes(const std::string& name, const void* data, size_t n) override;
  void copy_file(const std::string& name, const std::string& src_path) override;
  void begin_stream(const std::string& name) override;
  uint64_t append(const void* data, size_t n) override;
  uint64_t stream_size() const override { return stream_bytes_; }
  void end_stream() override;
  // The read-back without `read_back` opens the directory with the artifact reader.
  json commit(json manifest, const std::function<void(const std::string& dir)>& read_back = nullptr) override;
  const std::string& out_dir() const { return out_; }

 private:
  void write_all(const std::string& name, const void* data, size_t n);
  void put_in_place();
  std::string out_, tmp_;
  bool force_;
  std::vector<std::string> written_;  // names in tmp_: the only files the destructor removes
  json files_ = json::array();
  std::string stream_name_;
  FILE* stream_ = nullptr;
  uint64_t stream_bytes_ = 0;
  std::unique_ptr<Sha256> stream_hash_;
  bool created_ = false, committed_ = false;
};

}  // namespace sf
