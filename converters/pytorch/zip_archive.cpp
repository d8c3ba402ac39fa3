#include "converters/pytorch/zip_archive.h"

#include <zip.h>

#include <cstring>

#include "core/error.h"

namespace sf {

namespace {
uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t u32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t u64(const uint8_t* p) { return uint64_t(u32(p)) | uint64_t(u32(p + 4)) << 32; }
}  // namespace

ZipArchive::ZipArchive(const std::string& path) : path_(path) {
  map_ = std::make_shared<MappedFile>(path);  // also proves the file exists and is regular
  int err = 0;
  za_.reset(zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err));
  if (!za_) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    std::string why = zip_error_strerror(&ze);
    zip_error_fini(&ze);
    if (err == ZIP_ER_NOZIP) why = "not a zip archive";
    fail_file(path, why);
  }
  const zip_int64_t n = zip_get_num_entries(za_.get(), 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za_.get(), zip_uint64_t(i), 0, &st) != 0) fail_file(path, "unreadable zip entry " + std::to_string(i));
    ZipEntry e;
    e.name = st.name ? st.name : "";
    e.index = zip_uint64_t(i);
    e.size = st.size;
    e.stored = st.comp_method == ZIP_CM_STORE && (st.encryption_method == ZIP_EM_NONE);
    entries_.push_back(std::move(e));
  }
  locate_stored_entries();
}

void ZipArchive::Closer::operator()(zip* z) const { zip_discard(z); }

// libzip does not expose where an entry's bytes start, so walk the central directory (which
// libzip has already validated) to the local headers.
void ZipArchive::locate_stored_entries() {
  const uint8_t* d = map_->data();
  const size_t n = map_->size();
  auto bad = [&](const char* what) { fail_file(path_, std::string("malformed zip: ") + what); };
  if (n < 22) bad("too short");
  size_t eocd = SIZE_MAX;
  const size_t lowest = n > 65557 ? n - 65557 : 0;
  for (size_t p = n - 22 + 1; p-- > lowest;)
    if (u32(d + p) == 0x06054b50) { eocd = p; break; }
  if (eocd == SIZE_MAX) bad("no end of central directory");
  uint64_t count = u16(d + eocd + 10), cd_off = u32(d + eocd + 16);
  if (count == 0xffff || cd_off == 0xffffffffu) {
    if (eocd < 20 || u32(d + eocd - 20) != 0x07064b50) bad("zip64 locator missing");
    const uint64_t z = u64(d + eocd - 20 + 8);
    if (z + 56 > n || u32(d + z) != 0x06064b50) bad("zip64 end record missing");
    count = u64(d + z + 32);
    cd_off = u64(d + z + 48);
  }
  if (count != entries_.size()) bad("entry count differs from the central directory");
  uint64_t p = cd_off;
  for (auto& e : entries_) {
    if (p + 46 > n || u32(d + p) != 0x02014b50) bad("central directory entry");
    const uint16_t name_len = u16(d + p + 28), extra_len = u16(d + p + 30), comment_len = u16(d + p + 32);
    if (p + 46 + name_len + extra_len > n) bad("central directory entry overruns the file");
    uint64_t usize = u32(d + p + 24), csize = u32(d + p + 20), lho = u32(d + p + 42);
    const uint8_t* x = d + p + 46 + name_len;
    for (const uint8_t* xe = x + extra_len; x + 4 <= xe;) {
      const uint16_t id = u16(x), len = u16(x + 2);
      const uint8_t* f = x + 4;
      if (id == 0x0001) {
        if (usize == 0xffffffffu && f + 8 <= xe) { usize = u64(f); f += 8; }
        if (csize == 0xffffffffu && f + 8 <= xe) { csize = u64(f); f += 8; }
        if (lho == 0xffffffffu && f + 8 <= xe) { lho = u64(f); f += 8; }
      }
      x += 4 + len;
    }
    if (std::string(reinterpret_cast<const char*>(d + p + 46), name_len) != e.name) bad("entry names out of order");
    if (e.stored) {
      if (lho + 30 > n || u32(d + lho) != 0x04034b50) bad("local header");
      e.data_offset = lho + 30 + u16(d + lho + 26) + u16(d + lho + 28);
      if (e.data_offset + e.size > n || usize != e.size) bad(("entry " + e.name + " overruns the file").c_str());
    }
    p += 46 + name_len + extra_len + comment_len;
  }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

std::vector<uint8_t> ZipArchive::read(const ZipEntry& e) const {
  std::vector<uint8_t> out(e.size);
  if (e.size == 0) return out;
  if (e.stored) {
    std::memcpy(out.data(), map_->data() + e.data_offset, e.size);
    return out;
  }
  zip_file_t* f = zip_fopen_index(za_.get(), e.index, 0);
  if (!f) fail_file(path_, "cannot open zip entry " + e.name + ": " + zip_strerror(za_.get()));
  const zip_int64_t got = e.size ? zip_fread(f, out.data(), e.size) : 0;
  const bool ok = got == zip_int64_t(e.size);
  std::string why = ok ? "" : zip_file_strerror(f);
  zip_fclose(f);
  if (!ok) fail_file(path_, "zip entry " + e.name + " is damaged: " + why);
  return out;
}

}  // namespace sf
