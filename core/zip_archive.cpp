#include "core/zip_archive.h"

#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/checked.h"
#include "core/error.h"

namespace sf {

namespace {
uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t u32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t u64(const uint8_t* p) { return uint64_t(u32(p)) | uint64_t(u32(p + 4)) << 32; }

constexpr uint32_t kEocdSig = 0x06054b50, kLocatorSig = 0x07064b50, kEocd64Sig = 0x06064b50;
constexpr uint32_t kCentralSig = 0x02014b50, kLocalSig = 0x04034b50;
constexpr uint64_t kEocdSize = 22, kLocatorSize = 20, kEocd64Size = 56, kCentralSize = 46, kLocalSize = 30;
constexpr uint64_t kMaxComment = 0xffff;
// A torch checkpoint holds one entry per storage: a million is far beyond any real one.
constexpr uint64_t kMaxEntries = uint64_t(1) << 20;
constexpr uint64_t kMaxCentralDirectory = uint64_t(256) << 20;
constexpr size_t kInflateChunk = size_t(16) << 20;

// libzip's error codes in our words (its own strings include "No error" and worse).
std::string open_problem(int code) {
  switch (code) {
    case ZIP_ER_NOZIP: return "not a zip archive";
    case ZIP_ER_INCONS: return "damaged zip archive: its directory and its entries disagree";
    case ZIP_ER_MEMORY: return "out of memory while opening the zip archive";
    case ZIP_ER_READ:
    case ZIP_ER_SEEK: return "read error while opening the zip archive";
    case ZIP_ER_EXISTS: return "two entries have the same name";
    case ZIP_ER_MULTIDISK: return "multi-part zip archives are not supported";
    case ZIP_ER_COMPNOTSUPP: return "zip archive uses an unsupported compression method";
    case ZIP_ER_ENCRNOTSUPP:
    case ZIP_ER_NOPASSWD: return "encrypted zip archives are not supported";
    default: return "damaged zip archive";
  }
}
std::string read_problem(int code) {
  switch (code) {
    case ZIP_ER_CRC: return "its checksum does not match (damaged data)";
    case ZIP_ER_ZLIB:
    case ZIP_ER_COMPRESSED_DATA: return "its compressed data is corrupt";
    case ZIP_ER_MEMORY: return "out of memory while inflating it";
    case ZIP_ER_READ:
    case ZIP_ER_SEEK:
    case ZIP_ER_EOF: return "the file ends inside it";
    case ZIP_ER_COMPNOTSUPP: return "it uses an unsupported compression method";
    default: return "it is damaged";
  }
}
}  // namespace

ZipArchive::ZipArchive(const std::string& path) : path_(path) {
  file_ = std::make_shared<InputFile>(path);  // regular files only; never blocks
  // libzip reads the same open file (not the path again, which could by now name another one).
  const int fd = ::dup(file_->fd());
  if (fd < 0) fail_file(path, "cannot open: out of file descriptors", ErrorKind::IO);
  int err = 0;
  za_.reset(zip_fdopen(fd, ZIP_CHECKCONS, &err));
  if (!za_) {
    ::close(fd);  // zip_fdopen leaves the descriptor open when it fails
    fail_file(path, open_problem(err));
  }
  walk_central_directory();
}

void ZipArchive::Closer::operator()(zip* z) const { zip_discard(z); }

void ZipArchive::walk_central_directory() {
  const uint64_t n = file_->size();
  auto bad = [&](const std::string& what) { fail_file(path_, "malformed zip archive: " + what); };
  if (n < kEocdSize) bad("too short to be a zip archive");

  // The end-of-central-directory record: the one whose comment ends exactly at the end of the
  // file. A second candidate (a record hidden in the comment) makes the archive ambiguous.
  const uint64_t tail_len = std::min<uint64_t>(n, kEocdSize + kMaxComment);
  std::vector<uint8_t> tail(tail_len);
  file_->read_at(n - tail_len, tail.data(), tail.size());
  uint64_t eocd = UINT64_MAX;
  int candidates = 0;
  for (uint64_t p = tail_len - kEocdSize + 1; p-- > 0;) {
    if (u32(&tail[p]) != kEocdSig) continue;
    if (p + kEocdSize + u16(&tail[p + 20]) != tail_len) continue;
    ++candidates;
    eocd = p;
  }
  if (candidates == 0) bad("no end-of-central-directory record ends the file");
  if (candidates > 1) bad("several end-of-central-directory records (one hidden in the archive comment)");
  const uint8_t* e = &tail[eocd];
  const uint64_t eocd_off = n - tail_len + eocd;
  if (u16(e + 4) != 0 || u16(e + 6) != 0 || u16(e + 8) != u16(e + 10)) bad("multi-part archives are not supported");
  uint64_t count = u16(e + 10), cd_size = u32(e + 12), cd_off = u32(e + 16);
  uint64_t cd_end_limit = eocd_off;  // the central directory lies before this
  uint8_t loc[kLocatorSize];
  const bool has_locator = eocd_off >= kLocatorSize &&
                           (file_->read_at(eocd_off - kLocatorSize, loc, sizeof loc), u32(loc) == kLocatorSig);
  if (has_locator) {
    const uint64_t z = u64(loc + 8);
    if (!range_within(z, kEocd64Size, eocd_off - kLocatorSize)) bad("zip64 end record lies outside the file");
    uint8_t r[kEocd64Size];
    file_->read_at(z, r, sizeof r);
    if (u32(r) != kEocd64Sig) bad("zip64 end record missing");
    const uint64_t count_disk = u64(r + 24);
    count = u64(r + 32);
    cd_size = u64(r + 40);
    cd_off = u64(r + 48);
    if (count_disk != count) bad("multi-part archives are not supported");
    cd_end_limit = z;
  } else if (count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
    bad("zip64 locator missing");
  }
  if (count > kMaxEntries) bad("more than " + std::to_string(kMaxEntries) + " entries");
  if (cd_size > kMaxCentralDirectory) bad("central directory larger than " + std::to_string(kMaxCentralDirectory) + " bytes");
  if (!range_within(cd_off, cd_size, cd_end_limit)) bad("central directory lies outside the file");

  const zip_int64_t libzip_count = zip_get_num_entries(za_.get(), 0);
  if (libzip_count < 0 || uint64_t(libzip_count) != count)
    bad("entry count differs between the central directory and the archive as a whole");

  std::vector<uint8_t> cd(cd_size);
  file_->read_at(cd_off, cd.data(), cd.size());
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // [local header, end of data) of each entry
  uint64_t p = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const std::string rec = "central directory record " + std::to_string(i);
    if (!range_within(p, kCentralSize, cd_size) || u32(&cd[p]) != kCentralSig) bad(rec + " is missing or truncated");
    const uint8_t* c = &cd[p];
    const uint16_t flags = u16(c + 8), method = u16(c + 10);
    const uint64_t name_len = u16(c + 28), extra_len = u16(c + 30), comment_len = u16(c + 32);
    const uint64_t rec_len = kCentralSize + name_len + extra_len + comment_len;
    if (!range_within(p, rec_len, cd_size)) bad(rec + " overruns the central directory");
    uint64_t usize = u32(c + 24), csize = u32(c + 20), lho = u32(c + 42);
    // zip64 extra field: the 64-bit values, in this order, for each 32-bit field that is saturated.
    const uint8_t* x = c + kCentralSize + name_len;
    for (uint64_t off = 0; off + 4 <= extra_len;) {
      const uint16_t id = u16(x + off), len = u16(x + off + 2);
      if (!range_within(off + 4, len, extra_len)) bad(rec + " has a malformed extra field");
      if (id == 0x0001) {
        const uint8_t* f = x + off + 4;
        uint64_t left = len;
        for (uint64_t* v : {&usize, &csize, &lho}) {
          if (*v != 0xffffffffu) continue;
          if (left < 8) bad(rec + " has a truncated zip64 field");
          *v = u64(f);
          f += 8;
          left -= 8;
        }
      }
      off += 4 + len;
    }
    ZipEntry en;
    en.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);
    en.index = i;
    en.size = usize;
    en.comp_size = csize;
    en.method = method;
    en.stored = method == 0 && !(flags & 1);
    en.header_offset = lho;
    en.made_by_os = c[5];
    en.external_attributes = u32(c + 38);

    // libzip must see the same entry.
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za_.get(), i, ZIP_FL_ENC_RAW, &st) != 0) bad("entry " + std::to_string(i) + " is unreadable");
    const bool same = (st.valid & ZIP_STAT_NAME) && st.name && en.name == st.name && (st.valid & ZIP_STAT_SIZE) &&
                      st.size == usize && (st.valid & ZIP_STAT_COMP_SIZE) && st.comp_size == csize &&
                      (st.valid & ZIP_STAT_COMP_METHOD) && st.comp_method == method;
    zip_uint8_t os = 0;
    zip_uint32_t attributes = 0;
    const bool same_attributes = zip_file_get_external_attributes(za_.get(), i, 0, &os, &attributes) == 0 &&
                                 os == en.made_by_os && attributes == en.external_attributes;
    if (!same || !same_attributes)
      bad("entry " + std::to_string(i) + " differs between the central directory and the archive as a whole");
    if (flags & 1) bad("entry " + en.name + " is encrypted");
    if (method == 0 && usize != csize) bad("stored entry " + en.name + " states two different sizes");
    if (method == 8 && usize > checked_mul(csize, kMaxDeflateRatio, path_) + 64)
      bad("entry " + en.name + " claims " + std::to_string(usize) + " bytes from " + std::to_string(csize) +
          " compressed bytes, more than deflate can produce");

    // Its local header must name it too, and its data must lie before the central directory.
    if (!range_within(lho, kLocalSize, cd_off)) bad("local header of " + en.name + " lies outside the file");
    uint8_t lh[kLocalSize];
    file_->read_at(lho, lh, sizeof lh);
    if (u32(lh) != kLocalSig) bad("local header of " + en.name + " is missing");
    const uint64_t lname = u16(lh + 26), lextra = u16(lh + 28);
    if (lname != name_len || u16(lh + 8) != method) bad("local header of " + en.name + " disagrees with the central directory");
    std::string local_name(lname, '\0');
    if (!range_within(lho + kLocalSize, lname + lextra, cd_off)) bad("local header of " + en.name + " overruns the file");
    file_->read_at(lho + kLocalSize, local_name.data(), local_name.size());
    if (local_name != en.name) bad("local header of " + en.name + " names another entry");
    en.data_offset = lho + kLocalSize + lname + lextra;
    if (!range_within(en.data_offset, csize, cd_off)) bad("entry " + en.name + " overruns the file");
    spans.emplace_back(lho, en.data_offset + csize);
    entries_.push_back(std::move(en));
    p += rec_len;
  }
  if (p != cd_size) bad("central directory holds more than its entries");
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) bad("two entries overlap");
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

void ZipArchive::read_stored(const ZipEntry& e, uint64_t offset, void* dst, size_t n) const {
  if (!e.stored) fail_file(path_, "zip entry " + e.name + " is compressed and cannot be read in place");
  if (!range_within(offset, n, e.size))
    fail_file(path_, "read of " + std::to_string(n) + " bytes at " + std::to_string(offset) + " lies outside zip entry " +
                         e.name + " (" + std::to_string(e.size) + " bytes)");
  file_->read_at(e.data_offset + offset, dst, n);  // in the file: checked when the archive was opened
}

std::vector<uint8_t> ZipArchive::read(const ZipEntry& e) const {
  std::vector<uint8_t> out;
  if (e.size == 0) return out;
  if (e.stored) {
    out.resize(size_t(e.size));
    read_stored(e, 0, out.data(), out.size());
    return out;
  }
  if (e.method != 8)
    fail_file(path_, "zip entry " + e.name + " uses compression method " + std::to_string(e.method) +
                         "; only stored and deflated entries are read");
  zip_file_t* f = zip_fopen_index(za_.get(), e.index, 0);
  if (!f) fail_file(path_, "cannot open zip entry " + e.name + ": " + read_problem(zip_error_code_zip(zip_get_error(za_.get()))));
  std::string why;
  try {
    // Grows a chunk at a time: memory follows the bytes that really inflate, not the declared size.
    while (out.size() < e.size) {
      const size_t want = size_t(std::min<uint64_t>(kInflateChunk, e.size - out.size()));
      const size_t have = out.size();
      out.resize(have + want);
      const zip_int64_t got = zip_fread(f, out.data() + have, want);
      if (got < 0) {
        why = read_problem(zip_error_code_zip(zip_file_get_error(f)));
        break;
      }
      out.resize(have + size_t(got));
      if (got == 0) {
        why = "it inflates to fewer bytes than its directory states";
        break;
      }
    }
  } catch (const std::bad_alloc&) {
    why = "out of memory while inflating it";
  }
  zip_fclose(f);
  if (!why.empty()) fail_file(path_, "zip entry " + e.name + " cannot be read: " + why);
  return out;
}

}  // namespace sf
