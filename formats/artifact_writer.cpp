#include "formats/artifact_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/messages.h"
#include "core/fs_util.h"
#include "core/sha256.h"
#include "formats/artifact.h"
#include "formats/manifest.h"
#include "formats/output_dir.h"

namespace sf {

namespace fs = std::filesystem;

namespace {
bool exists_no_follow(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void sync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

ArtifactWriter::ArtifactWriter(const OutputTarget& target) : out_(target.dir), force_(target.force) {
  while (out_.size() > 1 && out_.back() == '/') out_.pop_back();
  refuse_output_holding_inputs(out_, target.inputs);
  if (exists_no_follow(out_)) {
    if (!force_) fail_file(out_, "already exists (use --force to replace an artifact)");
    const std::string why = why_not_replaceable(out_);
    if (!why.empty()) fail_file(out_, why);
  }
  const std::string parent = fs::path(out_).parent_path().string();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) fail_file(parent, "cannot create directory: " + ec.message());
  handle_stale_partials(out_);
  tmp_ = out_ + ".partial-" + std::to_string(::getpid());
  if (::mkdir(tmp_.c_str(), 0755) != 0) fail_file(tmp_, "cannot create directory: " + std::string(std::strerror(errno)));
  created_ = true;
}

ArtifactWriter::~ArtifactWriter() {
  if (stream_) std::fclose(stream_);
  if (!created_ || committed_) return;
  for (const auto& name : written_) ::unlink((tmp_ + "/" + name).c_str());
  ::rmdir(tmp_.c_str());  // fails, keeping it, if someone else put a file there
}

void ArtifactWriter::write_all(const std::string& name, const void* data, size_t n) {
  const std::string path = tmp_ + "/" + name;
  if (std::find(written_.begin(), written_.end(), name) != written_.end()) fail_file(path, "written twice");
  FILE* f = std::fopen(path.c_str(), "wbx");  // x: exclusive, never opens what another process made
  if (!f) fail_file(path, "cannot create: " + std::string(std::strerror(errno)));
  written_.push_back(name);
  const bool ok = std::fwrite(data, 1, n, f) == n && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) fail_file(path, "write failed (disk full?)");
}

void ArtifactWriter::write_bytes(const std::string& name, const void* data, size_t n) {
  write_all(name, data, n);
  files_.push_back({{"path", name}, {"bytes", n}, {"sha256", sha256_hex(data, n)}});
}

void ArtifactWriter::copy_file(const std::string& name, const std::string& src_path) {
  const std::string text = read_file(src_path);
  write_file(name, std::vector<uint8_t>(text.begin(), text.end()));
}

void ArtifactWriter::begin_stream(const std::string& name) {
  if (stream_) fail_file(tmp_ + "/" + name, "another file is being written (" + stream_name_ + ")");
  const std::string path = tmp_ + "/" + name;
  if (std::find(written_.begin(), written_.end(), name) != written_.end()) fail_file(path, "written twice");
  stream_ = std::fopen(path.c_str(), "wbx");
  if (!stream_) fail_file(path, "cannot create: " + std::string(std::strerror(errno)));
  written_.push_back(name);
  stream_name_ = name;
  stream_bytes_ = 0;
  stream_hash_ = std::make_unique<Sha256>();
}

uint64_t ArtifactWriter::append(const void* data, size_t n) {
  if (!stream_) fail("artifact writer: append without a file being written");
  const uint64_t at = stream_bytes_;
  if (std::fwrite(data, 1, n, stream_) != n) fail_file(tmp_ + "/" + stream_name_, "write failed (disk full?)");
  stream_hash_->update(data, n);
  stream_bytes_ += n;
  return at;
}

void ArtifactWriter::end_stream() {
  if (!stream_) fail("artifact writer: no file being written");
  const bool ok = std::fflush(stream_) == 0 && ::fsync(fileno(stream_)) == 0;
  std::fclose(stream_);
  stream_ = nullptr;
  if (!ok) fail_file(tmp_ + "/" + stream_name_, "write failed (disk full?)");
  files_.push_back({{"path", stream_name_}, {"bytes", stream_bytes_}, {"sha256", stream_hash_->hex_digest()}});
  stream_hash_.reset();
}

json ArtifactWriter::commit(json manifest, const std::function<void(const std::string& dir)>& read_back) {
  if (stream_) end_stream();
  manifest["files"] = files_;
  manifest = seal_manifest(std::move(manifest));
  const std::string text = manifest.dump(2) + "\n";
  write_all(kManifestName, text.data(), text.size());
  // Read back what was written, so convert never puts in place an artifact verify would refuse.
  try {
    if (read_back) {
      read_back(tmp_);
    } else {
      const Artifact readback(tmp_);
    }
  } catch (const Error& e) {
    fail_file(out_, std::string("the artifact written does not read back, so it was not put in place: ") + e.message());
  }
  put_in_place();
  sync_dir(fs::path(out_).parent_path().empty() ? "." : fs::path(out_).parent_path().string());
  return manifest;
}

void ArtifactWriter::put_in_place() {
  int err = rename_no_replace(tmp_, out_);
  if (err == 0) {
    committed_ = true;
    return;
  }
  if (err != EEXIST && err != ENOTEMPTY) fail_file(out_, "cannot rename the new artifact into place: " + std::string(std::strerror(err)));
  if (!force_) fail_file(out_, "appeared while converting (another conversion?); left untouched, the new artifact is discarded");
  // --force: what is there now must still be an artifact; swap atomically, then delete the old one
  // (now at tmp_) only if it still is one.
  std::string why = why_not_replaceable(out_);
  if (!why.empty()) fail_file(out_, why);
  err = rename_exchange(tmp_, out_);
  if (err != 0) fail_file(out_, "cannot exchange the new artifact with the old one: " + std::string(std::strerror(err)));
  committed_ = true;
  why = why_not_replaceable(tmp_);
  if (why.empty() && remove_flat_dir(tmp_, [](const std::string&) { return true; })) return;
  warn(tmp_ + ": the replaced directory " + (why.empty() ? "could not be removed" : why) + "; left in place");
}

}  // namespace sf
