#include "formats/output_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <functional>
#include <set>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/json_util.h"
#include "formats/manifest.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

// Entries of a directory, without following symbolic links; empty when it cannot be listed.
struct Entry {
  std::string name;
  bool regular;
};
bool list_dir(const std::string& dir, std::vector<Entry>& out) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return false;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    const bool ok = ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    out.push_back({name, ok && S_ISREG(st.st_mode)});
  }
  ::closedir(d);
  return true;
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

}  // namespace

bool is_artifact_file_name(const std::string& name) {
  static const std::set<std::string> fixed = {kManifestName, "embedding.bin", "head.shard", "tokenizer.model"};
  if (fixed.count(name)) return true;
  const std::string prefix = "block_", suffix = ".shard";
  return name.size() > prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
         all_digits(name.substr(prefix.size(), name.size() - prefix.size() - suffix.size()));
}

std::string why_not_replaceable(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return "cannot be examined: " + std::string(std::strerror(errno));
  if (S_ISLNK(st.st_mode)) return "is a symbolic link, not an artifact; --force replaces only an artifact directory";
  if (!S_ISDIR(st.st_mode)) return "is not a directory; --force replaces only an artifact directory";
  const std::string mpath = dir + "/" + kManifestName;
  json m;
  try {
    m = read_json_file(mpath);
  } catch (const Error&) {
    return "is not a shardforge artifact (no readable manifest.json); --force replaces only an artifact";
  }
  if (!m.is_object() || m.value("format", json()) != json(kArtifactFormat))
    return "is not a shardforge artifact (manifest.json is not ours); --force replaces only an artifact";
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
  const fs::path o = fs::weakly_canonical(fs::absolute(out, ec), ec);
  if (ec) fail_file(out, "cannot resolve the output path: " + ec.message());
  for (const auto& in : inputs) {
    if (in.empty()) continue;
    std::error_code ec2;
    const fs::path i = fs::weakly_canonical(fs::absolute(in, ec2), ec2);
    if (ec2) continue;
    auto [oi, ii] = std::mismatch(o.begin(), o.end(), i.begin(), i.end());
    if (oi == o.end())
      fail_file(out, i == o ? "is an input of this conversion; refusing to write over it"
                            : "contains " + in + ", an input of this conversion; refusing to write over it");
  }
}

void handle_stale_partials(const std::string& out) {
  const std::string parent = parent_of(out), base = fs::path(out).filename().string() + ".partial-";
  std::vector<Entry> entries;
  if (!list_dir(parent, entries)) return;
  for (const auto& e : entries) {
    if (e.name.compare(0, base.size(), base) != 0 || !all_digits(e.name.substr(base.size()))) continue;
    const pid_t pid = pid_t(std::stol(e.name.substr(base.size())));
    const std::string path = parent + "/" + e.name;
    if (pid != ::getpid() && process_alive(pid))
      fail_file(path, "process " + std::to_string(pid) + " is writing " + out +
                          " (another conversion?); not starting a second one (if no conversion is running, "
                          "remove this directory)");
    if (remove_flat_dir(path, is_artifact_file_name))
      std::cerr << "shardforge: note: removed " << path << ", left by a conversion that stopped (process " << pid
                << " is gone)\n";
    else
      std::cerr << "shardforge: warning: " << path << " was left by a conversion that stopped (process " << pid
                << " is gone), but holds files shardforge does not write: not removed\n";
  }
}

bool remove_flat_dir(const std::string& dir, const std::function<bool(const std::string&)>& allowed) {
  std::vector<Entry> entries;
  if (!list_dir(dir, entries)) return false;
  for (const auto& e : entries)
    if (!e.regular || !allowed(e.name)) return false;
  for (const auto& e : entries) ::unlink((dir + "/" + e.name).c_str());
  return ::rmdir(dir.c_str()) == 0;
}

int rename_no_replace(const std::string& from, const std::string& to) {
  return ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0 ? 0 : errno;
}

int rename_exchange(const std::string& a, const std::string& b) {
  return ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0 ? 0 : errno;
}

}  // namespace sf
