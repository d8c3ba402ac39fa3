#include "formats/zip_sink.h"

#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/input_file.h"
#include "core/sha256.h"
#include "formats/manifest.h"
#include "formats/zip_bundle.h"

namespace sf {

namespace {

// 1980-01-01 00:00, the first DOS date: the bytes do not depend on when or where they were made.
constexpr zip_uint16_t kDosTime = 0, kDosDate = (0 << 9) | (1 << 5) | 1;
constexpr zip_uint32_t kEntryMode = 0100644;  // a regular file, rw-r--r--
constexpr uint64_t kLocalHeaderBytes = 30, kExtraHeaderBytes = 4, kZip64LocalExtraBytes = 20;

std::string libzip_problem(zip_t* za) { return zip_strerror(za); }

// Bytes of padding extra-field data that put an entry's data, after a local header of
// `header_bytes` (fixed part, name, other extra fields) starting at `at`, on a kBundleAlign
// boundary. At least 2: the field starts with the alignment as a u16.
uint16_t align_padding(uint64_t at, uint64_t header_bytes) {
  const uint64_t before = at + header_bytes + kExtraHeaderBytes + 2;
  return uint16_t(2 + (kBundleAlign - before % kBundleAlign) % kBundleAlign);
}

}  // namespace

const OutputFileKind kZipBundleKind = {"zip bundle", "zip", is_zip_bundle};

ZipSink::ZipSink(const OutputTarget& target) : out_(target, kZipBundleKind) {}

ZipSink::~ZipSink() {
  if (stream_) std::fclose(stream_);
}

void ZipSink::write_bytes(const std::string& name, const void* data, size_t n) {
  begin_stream(name);
  append(data, n);
  end_stream();
}

void ZipSink::copy_file(const std::string& name, const std::string& src_path) {
  const InputFile in(src_path);
  begin_stream(name);
  std::vector<uint8_t> buf(size_t(std::min<uint64_t>(in.size(), uint64_t(4) << 20)));
  for (uint64_t at = 0; at < in.size();) {
    const size_t n = size_t(std::min<uint64_t>(buf.size(), in.size() - at));
    in.read_at(at, buf.data(), n);
    append(buf.data(), n);
    at += n;
  }
  end_stream();
}

void ZipSink::begin_stream(const std::string& name) {
  if (stream_) fail_file(out_.path(), "another file is being written (" + stream_name_ + ")");
  if (name == kManifestName) fail_file(out_.path(), "manifest.json is written by commit");
  for (const auto& w : written_)
    if (w.name == name) fail_file(out_.path(), name + " written twice");
  const std::string side = out_.side_path("." + name);
  stream_ = std::fopen(side.c_str(), "wbx");  // x: exclusive, never opens what another process made
  if (!stream_) fail_file(side, "cannot create: " + std::string(std::strerror(errno)));
  stream_name_ = name;
  stream_bytes_ = 0;
  stream_hash_ = std::make_unique<Sha256>();
  written_.push_back({name, side, 0});
}

uint64_t ZipSink::append(const void* data, size_t n) {
  if (!stream_) fail("zip sink: append without a file being written");
  const uint64_t at = stream_bytes_;
  if (n > 0 && std::fwrite(data, 1, n, stream_) != n) fail_file(written_.back().side, "write failed (disk full?)");
  stream_hash_->update(data, n);
  stream_bytes_ += n;
  return at;
}

void ZipSink::end_stream() {
  if (!stream_) fail("zip sink: no file being written");
  const bool ok = std::fflush(stream_) == 0;
  std::fclose(stream_);
  stream_ = nullptr;
  if (!ok) fail_file(written_.back().side, "write failed (disk full?)");
  written_.back().size = stream_bytes_;
  files_.push_back({{"path", stream_name_}, {"bytes", stream_bytes_}, {"sha256", stream_hash_->hex_digest()}});
  stream_hash_.reset();
}

void ZipSink::write_zip(const std::string& manifest_text) {
  const std::string& tmp = out_.temp_path();
  int err = 0;
  zip_t* za = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_EXCL, &err);
  if (!za) {
    zip_error_t e;
    zip_error_init_with_code(&e, err);
    const std::string why = zip_error_strerror(&e);
    zip_error_fini(&e);
    fail_file(tmp, "cannot create: " + why);
  }
  auto give_up = [&](const std::string& what) {
    const std::string why = libzip_problem(za);
    zip_discard(za);
    fail_file(tmp, what + ": " + why);
  };
  uint64_t at = 0;  // where the next local header starts
  auto add = [&](const std::string& name, zip_source_t* src, uint64_t size) {
    if (!src) give_up("cannot add " + name);
    const zip_int64_t idx = zip_file_add(za, name.c_str(), src, 0);
    if (idx < 0) {
      zip_source_free(src);
      give_up("cannot add " + name);
    }
    const zip_uint64_t i = zip_uint64_t(idx);
    // libzip writes a zip64 extra field into the local header of an entry of 4 GiB or more.
    const uint64_t header = kLocalHeaderBytes + name.size() + (size >= 0xffffffffu ? kZip64LocalExtraBytes : 0);
    const uint16_t pad = align_padding(at, header);
    std::vector<zip_uint8_t> field(pad, 0);
    field[0] = uint8_t(kBundleAlign & 0xff), field[1] = uint8_t(kBundleAlign >> 8);
    if (zip_set_file_compression(za, i, ZIP_CM_STORE, 0) != 0 || zip_file_set_dostime(za, i, kDosTime, kDosDate, 0) != 0 ||
        zip_file_set_external_attributes(za, i, 0, ZIP_OPSYS_UNIX, kEntryMode << 16) != 0 ||
        zip_file_extra_field_set(za, i, kAlignExtraId, ZIP_EXTRA_FIELD_NEW, field.data(), pad, ZIP_FL_LOCAL) != 0)
      give_up("cannot set up entry " + name);
    at += header + kExtraHeaderBytes + pad + size;
  };
  add(kManifestName, zip_source_buffer(za, manifest_text.data(), manifest_text.size(), 0), manifest_text.size());
  for (const auto& w : written_) add(w.name, zip_source_file(za, w.side.c_str(), 0, -1), w.size);
  if (zip_close(za) != 0) give_up("cannot write the zip bundle (disk full?)");
}

json ZipSink::commit(json manifest, const std::function<void(const std::string& tmp)>& read_back) {
  if (stream_) end_stream();
  manifest["files"] = files_;
  manifest = seal_manifest(std::move(manifest));
  const std::string text = manifest.dump(2) + "\n";  // as ArtifactWriter writes it: unpack gives the same file
  write_zip(text);
  out_.commit([&](const std::string& tmp) {
    if (read_back) return read_back(tmp);
    const auto problems = verify_zip_bundle(tmp);
    if (!problems.empty()) fail(problems.front());
  });
  return manifest;
}

}  // namespace sf
