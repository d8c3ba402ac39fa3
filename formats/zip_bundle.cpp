#include "formats/zip_bundle.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <cstring>
#include <set>

#include "core/error.h"
#include "core/messages.h"
#include "core/sha256.h"
#include "core/zip_archive.h"
#include "formats/manifest.h"

namespace sf {

namespace {

constexpr char kLocalMagic[4] = {'P', 'K', 3, 4};
constexpr uint32_t kUnixOs = 3;

// Whether the first local header of the open file `fd` names manifest.json.
bool first_entry_is_manifest(int fd) {
  uint8_t h[30 + 13];
  if (::pread(fd, h, sizeof h, 0) != ssize_t(sizeof h) || std::memcmp(h, kLocalMagic, 4) != 0) return false;
  const unsigned name_len = unsigned(h[26] | h[27] << 8);
  return name_len == std::strlen(kManifestName) && std::memcmp(h + 30, kManifestName, name_len) == 0;
}

bool libzip_lists_manifest(const std::string& path) {
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_RDONLY, &err);
  if (!za) return false;
  const bool yes = zip_name_locate(za, kManifestName, 0) >= 0;
  zip_discard(za);
  return yes;
}

// The names a bundle may hold: manifest.json, and the plain names a manifest may list
// (check_artifact_file_name), without backslashes, which some unzip tools take for directories.
void check_entry_name(const std::string& zip, const std::string& name) {
  if (name == kManifestName) return;
  const std::string shown = "entry '" + printable(name) + "'";
  if (name.find('\\') != std::string::npos)
    fail_file(zip, shown + " contains a backslash: a bundle's entries are plain file names");
  try {
    check_artifact_file_name(name, zip, shown);
  } catch (const Error&) {
    fail_file(zip, shown + " is not a plain file name (absolute, a directory, '..' or empty): a bundle's entries "
                   "are the artifact's files, by name");
  }
}

// A Unix entry says what it is in its mode bits; a symbolic link (or a directory, a device) is
// refused: unzip would create it, and a bundle holds regular files only.
void check_entry_type(const std::string& zip, const ZipEntry& e) {
  if (e.made_by_os != kUnixOs) return;
  const uint32_t type = (e.external_attributes >> 16) & S_IFMT;
  if (type == S_IFLNK) fail_file(zip, "entry '" + printable(e.name) + "' is a symbolic link; a bundle holds regular files only");
  if (type != 0 && type != S_IFREG) fail_file(zip, "entry '" + printable(e.name) + "' is not a regular file");
}

}  // namespace

bool is_zip_bundle(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  char magic[4] = {};
  const bool zip = ::pread(fd, magic, 4, 0) == 4 && std::memcmp(magic, kLocalMagic, 4) == 0;
  const bool first = zip && first_entry_is_manifest(fd);
  ::close(fd);
  return first || (zip && libzip_lists_manifest(path));
}

ZipBundleFiles::ZipBundleFiles(const std::string& path) : path_(path) {
  const ZipArchive za(path);  // the archive itself: libzip's checks and the central directory walk
  map_ = std::make_shared<MappedFile>(*za.file());  // the same open file, not the path again
  if (map_->size() != za.file_size()) fail_file(path, "changed while it was read");
  for (const ZipEntry& e : za.entries()) {
    check_entry_name(path, e.name);
    if (!by_name_.emplace(e.name, entries_.size()).second)
      fail_file(path, "entry '" + printable(e.name) + "' appears twice");
    check_entry_type(path, e);
    // Stored only: an entry is read in place, and nothing inflates (no zip bombs).
    if (!e.stored)
      fail_file(path, "entry '" + printable(e.name) + "' is " + (e.method == 0 ? "encrypted" : "compressed (method " + std::to_string(e.method) + ")") +
                          "; a bundle's entries are stored as they are");
    entries_.push_back({e.name, e.data_offset, e.size});
  }
  const auto m = by_name_.find(kManifestName);
  if (m == by_name_.end()) fail_file(path, "not an artifact bundle: it has no manifest.json entry");
  const Entry& me = entries_[m->second];
  if (me.size > kMaxManifestBytes) fail_file(path_of(kManifestName), "is larger than 64 MiB");
  manifest_ = parse_manifest(std::string(reinterpret_cast<const char*>(map_->data() + me.offset), size_t(me.size)),
                             path_of(kManifestName));
  // Exactly the files the manifest lists, with its sizes.
  if (!manifest_.contains("files") || !manifest_["files"].is_array())
    fail_file(path_of(kManifestName), "has no file list");
  std::set<std::string> listed = {kManifestName};
  for (const auto& f : manifest_["files"]) {
    const std::string name = f["path"].get<std::string>();  // checked by parse_manifest
    listed.insert(name);
    const auto it = by_name_.find(name);
    if (it == by_name_.end()) fail_file(path, "entry '" + name + "' is listed in the manifest but missing");
    const bool has_size = f.contains("bytes") && f["bytes"].is_number_unsigned();
    if (!has_size || f["bytes"].get<uint64_t>() != entries_[it->second].size)
      fail_file(path, "entry '" + name + "' holds " + std::to_string(entries_[it->second].size) +
                          " bytes; the manifest says " + (has_size ? f["bytes"].dump() : std::string("nothing")));
  }
  for (const auto& e : entries_)
    if (!listed.count(e.name)) fail_file(path, "entry '" + printable(e.name) + "' is not listed in the manifest");
  // Aligned, so a .shard's 64-byte tensor alignment holds in the map, as the writer made it.
  for (const auto& e : entries_)
    if (e.offset % kBundleAlign)
      fail_file(path, "entry '" + e.name + "' starts at byte " + std::to_string(e.offset) + ", not at a multiple of " +
                          std::to_string(kBundleAlign) + " (a bundle's entries are aligned for mapping in place)");
}

const ZipBundleFiles::Entry& ZipBundleFiles::entry(const std::string& name) const {
  const auto it = by_name_.find(name);
  if (it == by_name_.end()) fail_file(path_of(name), "missing from the bundle");
  return entries_[it->second];
}

FileBytes ZipBundleFiles::map(const std::string& name) const {
  const Entry& e = entry(name);
  return {map_->data() + e.offset, size_t(e.size), map_};
}

std::string ZipBundleFiles::local_path(const std::string& name) const {
  const auto it = local_paths_.find(name);
  if (it != local_paths_.end()) return it->second;
  if (!extracted_) extracted_ = std::make_unique<PrivateTempFiles>("zip");
  const FileBytes b = map(name);
  return local_paths_[name] = extracted_->add(name, b.data, b.size);
}

Artifact open_zip_bundle(const std::string& path) { return Artifact(std::make_shared<const ZipBundleFiles>(path)); }

std::vector<std::string> verify_zip_bundle(const std::string& path) {
  std::shared_ptr<const ZipBundleFiles> files;
  try {
    files = std::make_shared<const ZipBundleFiles>(path);
  } catch (const Error& e) {
    return {e.message()};
  }
  std::vector<std::string> problems;
  const json manifest = files->manifest();
  for (const auto& f : manifest["files"]) {
    const std::string name = f["path"].get<std::string>();
    const FileBytes b = files->map(name);
    if (!f.contains("sha256") || f["sha256"] != json(sha256_hex(b.data, b.size)))
      problems.push_back(files->path_of(name) + ": sha256 differs from the manifest");
  }
  if (problems.empty()) {
    try {
      Artifact a(files);
    } catch (const Error& e) {
      problems.push_back(e.message());
    }
  }
  return problems;
}

}  // namespace sf
