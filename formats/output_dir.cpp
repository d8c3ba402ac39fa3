#include "formats/output_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

#include "core/error.h"
#include "core/messages.h"
#include "core/fs_util.h"
#include "core/json_util.h"
#include "formats/manifest.h"
#include "formats/vocab_map.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

// Entries of a directory, without following symbolic links inside it; false when it cannot be listed.
struct Entry {
  std::string name;
  bool regular;
  bool directory;  // a real directory, not a symbolic link to one
};
bool list_dir_fd(int fd, std::vector<Entry>& out) {
  const int own = ::dup(fd);  // closedir closes the descriptor fdopendir was given; `fd` stays the caller's
  if (own < 0) return false;
  DIR* d = ::fdopendir(own);
  if (!d) {
    ::close(own);
    return false;
  }
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    const bool ok = ::fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    out.push_back({name, ok && S_ISREG(st.st_mode), ok && S_ISDIR(st.st_mode)});
  }
  ::closedir(d);
  return true;
}
bool list_dir(const std::string& dir, std::vector<Entry>& out) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = list_dir_fd(fd, out);
  ::close(fd);
  return ok;
}

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

bool process_alive(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

std::string parent_of(const std::string& path) {
  const std::string p = fs::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

// Absolute, with symbolic links in the existing part resolved: two names of one place compare equal.
fs::path resolved(const std::string& path, std::error_code& ec) {
  const fs::path a = fs::absolute(path, ec);
  return ec ? fs::path() : fs::weakly_canonical(a, ec);
}

// True when `inner` is `outer` or lies inside it (both resolved).
bool within(const fs::path& inner, const fs::path& outer) {
  auto [o, i] = std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end());
  return o == outer.end();
}

// Why an existing file may not be written over with a report; empty when it may. Writing through a
// link, a device or a FIFO would reach something else (or block forever); writing over a file with
// other hard links would change those too.
std::string why_not_overwritable(const struct stat& st) {
  if (S_ISLNK(st.st_mode)) return "is a symbolic link; not writing through it";
  if (S_ISDIR(st.st_mode)) return "is a directory";
  if (!S_ISREG(st.st_mode)) return "exists and is not a regular file (a device, FIFO or socket); not writing to it";
  if (st.st_nlink > 1) return "has other hard links, which writing it would change too; not writing to it";
  return "";
}

}  // namespace

bool is_artifact_file_name(const std::string& name) {
  // The tokenizer files are those of tokenizers/tokenizer_kinds.cpp (artifact_names).
  static const std::set<std::string> fixed = {kManifestName, "embedding.bin", "positions.shard", "head.shard", "tokenizer.model",
                                              "vocab.json", "merges.txt", kVocabMapName,
                                              "model.onnx", "model.onnx_data", "embedding.onnx", "head.onnx"};
  if (fixed.count(name)) return true;
  const std::string prefix = "block_";
  for (const std::string suffix : {".shard", ".onnx"})
    if (name.size() > prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        all_digits(name.substr(prefix.size(), name.size() - prefix.size() - suffix.size())))
      return true;
  return false;
}

std::string why_not_replaceable(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return "cannot be examined: " + std::string(std::strerror(errno));
  if (S_ISLNK(st.st_mode)) return "is a symbolic link, not an artifact; --force replaces only an artifact directory";
  if (!S_ISDIR(st.st_mode)) return "is not a directory; --force replaces only an artifact directory";
  // The full manifest checks: a file merely claiming to be ours must not let --force delete a directory.
  json m;
  try {
    m = read_manifest(dir);
  } catch (const Error& e) {
    return "is not a shardforge artifact (" + e.message() + "); --force replaces only an artifact";
  }
  std::set<std::string> listed = {kManifestName};
  if (m.contains("files") && m["files"].is_array())
    for (const auto& f : m["files"])
      if (f.is_object() && f.contains("path") && f["path"].is_string()) listed.insert(f["path"].get<std::string>());
  std::vector<Entry> entries;
  if (!list_dir(dir, entries)) return "cannot be listed: " + std::string(std::strerror(errno));
  for (const auto& e : entries)
    if (!e.regular || !listed.count(e.name))
      return "holds " + e.name + ", which is not part of the artifact; not replacing it (remove it yourself)";
  return "";
}

void refuse_output_holding_inputs(const std::string& out, const std::vector<std::string>& inputs) {
  std::error_code ec;
  const fs::path o = resolved(out, ec);
  if (ec) fail_file(out, "cannot resolve the output path: " + ec.message());
  for (const auto& in : inputs) {
    if (in.empty()) continue;
    std::error_code ec2;
    const fs::path i = resolved(in, ec2);
    if (ec2) continue;
    if (within(i, o))
      fail_file(out, i == o ? "is an input of this conversion; refusing to write over it"
                            : "contains " + in + ", an input of this conversion; refusing to write over it");
  }
}

void check_report_path(const std::string& path, const std::vector<std::string>& inputs) {
  if (path.empty()) return;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    const std::string why = why_not_overwritable(st);
    if (!why.empty()) fail_file(path, why);
  }
  std::error_code ec;
  const fs::path p = resolved(path, ec);
  if (ec) fail_file(path, "cannot resolve the path: " + ec.message());
  for (const auto& in : inputs) {
    if (in.empty()) continue;
    std::error_code ec2;
    const fs::path i = resolved(in, ec2);
    if (!ec2 && within(p, i))
      fail_file(path, p == i ? "is a file this command reads; not writing over it"
                             : "lies inside " + in + ", which this command reads or writes; not writing there");
  }
  const std::string dir = p.parent_path().string();
  struct stat ds {};
  if (::stat(dir.c_str(), &ds) != 0 || !S_ISDIR(ds.st_mode)) fail_file(path, "cannot be written: " + dir + " is not a directory");
  if (::access(dir.c_str(), W_OK) != 0) fail_file(path, "cannot be written: " + dir + " is not writable");
  if (::lstat((dir + "/" + kManifestName).c_str(), &ds) == 0)
    fail_file(path, "lies inside " + dir + ", an artifact directory (it holds " + kManifestName +
                        "); not writing there");
}

FILE* open_report_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO with no reader fails (ENXIO) instead of waiting forever.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    fail_file(path, err == ELOOP  ? "is a symbolic link; not writing through it"
                    : err == ENXIO ? "exists and is not a regular file (a FIFO or socket); not writing to it"
                                   : "cannot create: " + std::string(std::strerror(err)));
  }
  struct stat st {};
  std::string why = ::fstat(fd, &st) == 0 ? why_not_overwritable(st) : "cannot be examined: " + std::string(std::strerror(errno));
  if (why.empty() && (::ftruncate(fd, 0) != 0 || ::fcntl(fd, F_SETFL, 0) != 0))
    why = "cannot be written: " + std::string(std::strerror(errno));
  FILE* f = why.empty() ? ::fdopen(fd, "wb") : nullptr;
  if (!f) {
    ::close(fd);
    fail_file(path, why.empty() ? "cannot be written: " + std::string(std::strerror(errno)) : why);
  }
  return f;
}

void handle_stale_partials(const std::string& out) {
  const std::string parent = parent_of(out), base = fs::path(out).filename().string() + ".partial-";
  std::vector<Entry> entries;
  if (!list_dir(parent, entries)) return;
  for (const auto& e : entries) {
    if (e.name.compare(0, base.size(), base) != 0 || !all_digits(e.name.substr(base.size()))) continue;
    const pid_t pid = pid_t(std::stol(e.name.substr(base.size())));
    const std::string path = parent + "/" + e.name;
    // Only a real directory can be one a conversion left: a symbolic link of that name points at
    // something else (perhaps another artifact), which must never be deleted or waited for.
    if (!e.directory) {
      warn(path + " is named like a conversion's partial directory but is not a directory (a symbolic link?): "
           "left alone");
      continue;
    }
    if (pid != ::getpid() && process_alive(pid))
      fail_file(path, "process " + std::to_string(pid) + " is writing " + out +
                          " (another conversion?); not starting a second one (if no conversion is running, "
                          "remove this directory)");
    if (remove_flat_dir(path, is_artifact_file_name))
      warn("removed " + path + ", left by a conversion that stopped (process " + std::to_string(pid) + " is gone)");
    else
      warn(path + " was left by a conversion that stopped (process " + std::to_string(pid) +
           " is gone), but holds files shardforge does not write: not removed");
  }
}

bool remove_flat_dir(const std::string& dir, const std::function<bool(const std::string&)>& allowed) {
  // O_NOFOLLOW: a symbolic link is refused here, and the files deleted are those of the directory
  // examined (unlinkat on its descriptor), even if `dir` is renamed meanwhile.
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  std::vector<Entry> entries;
  bool ok = list_dir_fd(fd, entries);
  for (const auto& e : entries)
    if (!e.regular || !allowed(e.name)) ok = false;
  if (ok)
    for (const auto& e : entries) ::unlinkat(fd, e.name.c_str(), 0);
  ::close(fd);
  return ok && ::rmdir(dir.c_str()) == 0;
}

int rename_no_replace(const std::string& from, const std::string& to) {
  return ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0 ? 0 : errno;
}

int rename_exchange(const std::string& a, const std::string& b) {
  return ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0 ? 0 : errno;
}

}  // namespace sf
