#include "formats/artifact_writer.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/sha256.h"

namespace sf {

namespace fs = std::filesystem;

ArtifactWriter::ArtifactWriter(std::string out_dir, bool force) : out_(std::move(out_dir)) {
  while (out_.size() > 1 && out_.back() == '/') out_.pop_back();
  std::error_code ec;
  if (fs::exists(out_, ec) && !force) fail_file(out_, "already exists (use --force to replace it)");
  tmp_ = out_ + ".partial-" + std::to_string(::getpid());
  fs::remove_all(tmp_, ec);
  if (!fs::create_directories(tmp_, ec)) fail_file(tmp_, "cannot create directory: " + ec.message());
}

ArtifactWriter::~ArtifactWriter() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

namespace {
void write_all(const std::string& path, const void* data, size_t n) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail_file(path, "cannot create");
  const bool ok = std::fwrite(data, 1, n, f) == n && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) fail_file(path, "write failed (disk full?)");
}
}  // namespace

void ArtifactWriter::write_file(const std::string& name, const std::vector<uint8_t>& bytes) {
  write_all(tmp_ + "/" + name, bytes.data(), bytes.size());
  files_.push_back({{"path", name}, {"bytes", bytes.size()}, {"sha256", sha256_hex(bytes.data(), bytes.size())}});
}

void ArtifactWriter::copy_file(const std::string& name, const std::string& src_path) {
  const std::string text = read_text_file(src_path);
  write_file(name, std::vector<uint8_t>(text.begin(), text.end()));
}

json ArtifactWriter::commit(json manifest) {
  manifest["files"] = files_;
  const std::string text = manifest.dump(2) + "\n";
  write_all(tmp_ + "/manifest.json", text.data(), text.size());
  std::error_code ec;
  if (fs::exists(out_, ec)) {
    // --force: move the old artifact aside first so a failed rename loses nothing.
    const std::string old = out_ + ".old-" + std::to_string(::getpid());
    fs::rename(out_, old, ec);
    if (ec) fail_file(out_, "cannot move the existing directory aside: " + ec.message());
    fs::rename(tmp_, out_, ec);
    if (ec) {
      fs::rename(old, out_);
      fail_file(out_, "cannot rename the new artifact into place: " + ec.message());
    }
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp_, out_, ec);
    if (ec) fail_file(out_, "cannot rename the new artifact into place: " + ec.message());
  }
  committed_ = true;
  return manifest;
}

}  // namespace sf
