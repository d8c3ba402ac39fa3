#include "formats/shard_file.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_util.h"

namespace sf {

namespace {
size_t align_to_shard(size_t v) { return (v + kShardAlign - 1) / kShardAlign * kShardAlign; }
void put_u32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
}  // namespace

TensorView make_view(const std::string& where, const std::string& name, QType type, size_t group,
                     const std::vector<int64_t>& shape, const uint8_t* data, size_t nbytes) {
  TensorView v{name, type, group, shape, data, nbytes, 0};
  if (shape.empty() || shape.size() > 2) fail_file(where, "tensor " + name + " must have 1 or 2 dimensions");
  for (int64_t d : shape)
    if (d <= 0) fail_file(where, "tensor " + name + " has a non-positive dimension");
  const auto& tr = qtype_traits(type);
  if (tr.grouped && (group < 2 || group % 2)) fail_file(where, "tensor " + name + " has a bad group size");
  v.row_bytes = tr.row_bytes(size_t(v.cols()), group);
  if (size_t(v.rows()) * v.row_bytes != nbytes)
    fail_file(where, "tensor " + name + " holds " + std::to_string(nbytes) + " bytes, its type and shape need " +
                         std::to_string(size_t(v.rows()) * v.row_bytes));
  return v;
}

std::vector<uint8_t> encode_shard(const std::string& unit, const std::vector<EncodedTensor>& tensors) {
  // Offsets depend on the header length, which depends on the offsets' digits: fix the header
  // length first with a generous reservation, then pad the JSON with spaces to it.
  auto table = [&](size_t data_start) {
    json list = json::array();
    size_t off = data_start;
    for (const auto& t : tensors) {
      off = align_to_shard(off);
      json e = {{"name", t.name}, {"type", qtype_traits(t.type).name}, {"shape", t.shape},
                {"offset", off}, {"nbytes", t.data.size()}};
      if (qtype_traits(t.type).grouped) e["group"] = t.group;
      list.push_back(e);
      off += t.data.size();
    }
    return std::make_pair(json{{"unit", unit}, {"tensors", list}}.dump(), off);
  };
  size_t data_start = align_to_shard(16 + table(0).first.size() + 16 * tensors.size() + 64);
  auto [header, end] = table(data_start);
  header.resize(data_start - 16, ' ');
  std::vector<uint8_t> out(end, 0);
  std::memcpy(out.data(), kShardMagic, 8);
  put_u32(out, 8, kShardVersion);
  put_u32(out, 12, uint32_t(header.size()));
  std::memcpy(out.data() + 16, header.data(), header.size());
  size_t off = data_start;
  for (const auto& t : tensors) {
    off = align_to_shard(off);
    std::memcpy(out.data() + off, t.data.data(), t.data.size());
    off += t.data.size();
  }
  return out;
}

ShardFile::ShardFile(const std::string& path) : ShardFile(path, std::make_shared<MappedFile>(path)) {}

ShardFile::ShardFile(const std::string& path, std::shared_ptr<MappedFile> map)
    : ShardFile(path, map->data(), map->size(), map) {}

ShardFile::ShardFile(const std::string& path, const uint8_t* d, size_t n, std::shared_ptr<const void> keep)
    : keep_(std::move(keep)) {
  if (n < 16 || std::memcmp(d, kShardMagic, 8) != 0) fail_file(path, "not a shardforge .shard file (bad magic)");
  if (get_u32(d + 8) != kShardVersion)
    fail_file(path, "shard format version " + std::to_string(get_u32(d + 8)) + " is not supported");
  const size_t hlen = get_u32(d + 12);
  if (16 + hlen > n) fail_file(path, "header runs past the end of the file (truncated?)");
  json h;
  try {
    h = parse_json(std::string(reinterpret_cast<const char*>(d + 16), hlen), path);
    unit_ = h.at("unit").get<std::string>();
    size_t prev_end = 16 + hlen;
    for (const auto& e : h.at("tensors")) {
      const std::string name = e.at("name").get<std::string>();
      const auto type = qtype_from_name(e.at("type").get<std::string>());
      if (!type) fail_file(path, "tensor " + name + " has unknown type " + e.at("type").dump());
      const size_t off = size_t(json_int(e, "offset", path, 0)), nb = size_t(json_int(e, "nbytes", path, 0));
      if (off % kShardAlign) fail_file(path, "tensor " + name + " is not 64-byte aligned");
      if (off < prev_end || off > n || nb > n - off) fail_file(path, "tensor " + name + " lies outside the data area (truncated?)");
      prev_end = off + nb;
      const size_t group = e.contains("group") ? size_t(json_int(e, "group", path, 0, 1 << 30)) : 0;
      tensors_.push_back(make_view(path, name, *type, group, json_int_list(e, "shape", path), d + off, nb));
    }
  } catch (const json::exception& e) {
    fail_file(path, std::string("malformed shard header: ") + e.what());
  }
}

const TensorView* ShardFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace sf
