#include "formats/output_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/messages.h"
#include "formats/output_dir.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

std::string errno_text() { return std::strerror(errno); }

// Whether process `pid` runs shardforge: a live PID alone may have been reused by any program
// since the conversion that left the file stopped. Its command name (/proc/PID/comm) is the
// executable's file name; unreadable (no /proc) counts as shardforge, the careful answer.
bool is_shardforge(pid_t pid) {
  const int fd = ::open(("/proc/" + std::to_string(pid) + "/comm").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT;
  char buf[32] = {};
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return true;
  std::string comm(buf, size_t(n));
  if (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm.rfind("shardforge", 0) == 0;
}

// OUT.partial-PID[.SUFFIX] siblings: another conversion's while PID lives (refused, as for
// artifact directories), a killed one's otherwise (reported and left: a regular file of that name
// could be anyone's).
void check_partial_siblings(const std::string& out) {
  const fs::path p(out);
  const std::string dir = p.parent_path().empty() ? "." : p.parent_path().string();
  const std::string base = p.filename().string() + ".partial-";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.compare(0, base.size(), base) != 0) continue;
    std::string pid = name.substr(base.size());
    pid.resize(std::min(pid.size(), pid.find('.')));
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t id = pid_t(std::stol(pid));
    if (id == ::getpid()) continue;
    if ((::kill(id, 0) == 0 || errno == EPERM) && is_shardforge(id))
      fail_file(e.path().string(), "process " + pid + " is writing " + out + " (another conversion?); not starting a "
                                   "second one (if no conversion is running, remove this file)");
    warn(e.path().string() + " was left by a conversion that stopped (process " + pid +
         " is gone or is not shardforge); left in place");
  }
}

// The rename is durable once the directory holding OUT is synced.
void sync_parent(const std::string& out) {
  const std::string dir = fs::path(out).parent_path().empty() ? "." : fs::path(out).parent_path().string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

OutputFile::OutputFile(const OutputTarget& target, const OutputFileKind& kind)
    : out_(target.dir), force_(target.force), kind_(kind) {
  refuse_output_holding_inputs(out_, target.inputs);
  // -o dir/ (or an existing directory) would only fail after converting: refused before anything
  // is created.
  struct stat st {};
  const std::string leaf = fs::path(out_).filename().string();
  if (leaf.empty() || leaf == "." || leaf == ".." || (::stat(out_.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
    fail_usage(out_ + ": -o names a directory; with --format " + kind.option + " give the file's name");
  if (::lstat(out_.c_str(), &st) == 0) {
    if (!force_) fail_file(out_, std::string("already exists (use --force to replace a ") + kind.format + " file)");
    if (std::string why = why_not_replaceable(out_); !why.empty()) fail_file(out_, why);
  }
  const std::string parent = fs::path(out_).parent_path().string();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) fail_file(parent, "cannot create directory: " + ec.message());
  check_partial_siblings(out_);
  tmp_ = out_ + ".partial-" + std::to_string(::getpid());
}

OutputFile::~OutputFile() {
  for (const auto& s : sides_) ::unlink(s.c_str());
  if (!committed_) ::unlink(tmp_.c_str());  // a name with our PID: ours, or nothing
}

std::string OutputFile::side_path(const std::string& suffix) {
  sides_.push_back(tmp_ + suffix);
  return sides_.back();
}

// Empty when `path` (which exists) may be replaced by --force: a regular file, not a symbolic
// link, with no other hard links, of this format. Otherwise why not.
std::string OutputFile::why_not_replaceable(const std::string& path) const {
  const std::string only = std::string("; --force replaces only a ") + kind_.format + " file";
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "cannot be examined: " + errno_text();
  if (S_ISLNK(st.st_mode)) return "is a symbolic link" + only;
  if (!S_ISREG(st.st_mode)) return "is not a regular file" + only;
  if (st.st_nlink > 1) return "has other hard links; not replacing it";
  return kind_.is_one(path) ? "" : std::string("is not a ") + kind_.format + " file" + only;
}

void OutputFile::commit(const std::function<void(const std::string& temp)>& read_back) {
  const int fd = ::open(tmp_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) fail_file(tmp_, "cannot reopen what was written: " + errno_text());
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) fail_file(tmp_, "write failed: " + errno_text() + " (disk full?)");
  // Read back what was written, so convert never puts in place a file its own reader refuses.
  try {
    read_back(tmp_);
  } catch (const Error& e) {
    fail_file(out_, std::string("the ") + kind_.format + " file written does not read back, so it was not put in place: " +
                        e.message());
  }
  put_in_place();
  sync_parent(out_);
}

void OutputFile::put_in_place() {
  int err = rename_no_replace(tmp_, out_);
  if (err == 0) {
    committed_ = true;
    return;
  }
  if (err != EEXIST)
    fail_file(out_, std::string("cannot rename the new ") + kind_.format + " file into place: " + std::strerror(err));
  if (!force_) fail_file(out_, "appeared while converting (another conversion?); left untouched, the new file is discarded");
  if (std::string why = why_not_replaceable(out_); !why.empty()) fail_file(out_, why);
  err = rename_exchange(tmp_, out_);
  if (err != 0) fail_file(out_, std::string("cannot exchange the new file with the old one: ") + std::strerror(err));
  committed_ = true;
  // The old file is now at tmp_: delete it only if it still is one of ours.
  if (why_not_replaceable(tmp_).empty()) ::unlink(tmp_.c_str());
  else warn(tmp_ + ": the replaced file changed meanwhile; left in place");
}

void write_at(int fd, const void* data, size_t n, uint64_t off, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, off_t(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail_file(path, "write failed: " + errno_text() + " (disk full?)");
    p += w, n -= size_t(w), off += uint64_t(w);
  }
}

void copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t n, const std::string& path) {
  while (n > 0) {
    loff_t a = loff_t(in_off), b = loff_t(out_off);
    const ssize_t c = ::copy_file_range(in, &a, out, &b, size_t(std::min<uint64_t>(n, 1u << 30)), 0);
    if (c < 0 && errno == EINTR) continue;
    if (c > 0) {
      in_off += uint64_t(c), out_off += uint64_t(c), n -= uint64_t(c);
      continue;
    }
    if (c == 0) fail_file(path, "the temporary data file ended early");
    if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
      fail_file(path, "write failed: " + errno_text() + " (disk full?)");
    std::vector<uint8_t> buf(size_t(std::min<uint64_t>(n, 1u << 20)));
    while (n > 0) {
      const size_t k = size_t(std::min<uint64_t>(n, buf.size()));
      const ssize_t r = ::pread(in, buf.data(), k, off_t(in_off));
      if (r <= 0) fail_file(path, "cannot read back the temporary data file: " + errno_text());
      write_at(out, buf.data(), size_t(r), out_off, path);
      in_off += uint64_t(r), out_off += uint64_t(r), n -= uint64_t(r);
    }
  }
}

}  // namespace sf
