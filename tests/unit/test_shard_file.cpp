#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "formats/artifact_writer.h"
#include "formats/manifest.h"
#include "formats/shard_file.h"

namespace sf {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("sf-unit-" + std::to_string(::getpid()) + "-" + name)).string();
}

void write(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::vector<EncodedTensor> sample_tensors() {
  EncodedTensor norm{"blocks.0.attn_norm.weight", QType::F32, 0, {5}, std::vector<uint8_t>(20, 1)};
  EncodedTensor q{"blocks.0.attn.q.weight", QType::Int4Sym, 32, {3, 40}, {}};
  q.data.assign(3 * qtype_traits(QType::Int4Sym).row_bytes(40, 32), 7);
  EncodedTensor i8{"blocks.0.attn.k.weight", QType::Int8, 0, {2, 3}, std::vector<uint8_t>(2 * 7, 9)};
  return {norm, q, i8};
}

TEST(ShardFile, RoundTripsAndAlignsEveryTensor) {
  const auto tensors = sample_tensors();
  const std::string path = temp_path("a.shard");
  write(path, encode_shard("block_000", tensors));
  ShardFile f(path);
  EXPECT_EQ(f.unit(), "block_000");
  ASSERT_EQ(f.tensors().size(), 3u);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& v = f.tensors()[i];
    EXPECT_EQ(v.name, tensors[i].name);
    EXPECT_EQ(v.type, tensors[i].type);
    EXPECT_EQ(v.shape, tensors[i].shape);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % 64, 0u);
    EXPECT_EQ(std::vector<uint8_t>(v.data, v.data + v.nbytes), tensors[i].data);
  }
  EXPECT_EQ(f.find("blocks.0.attn.q.weight")->group, 32u);
  EXPECT_EQ(f.find("nope"), nullptr);
  std::remove(path.c_str());
}

TEST(ShardFile, SameInputSameBytes) {
  EXPECT_EQ(encode_shard("u", sample_tensors()), encode_shard("u", sample_tensors()));
}

TEST(ShardFile, RejectsDamage) {
  const auto good = encode_shard("block_000", sample_tensors());
  const std::string path = temp_path("bad.shard");
  auto expect_error = [&](std::vector<uint8_t> bytes, const std::string& needle) {
    write(path, bytes);
    try {
      ShardFile f(path);
      ADD_FAILURE() << "accepted a damaged shard (" << needle << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind(path, 0), 0u) << "message must start with the file name";
    }
  };
  auto b = good;
  b[0] = 'X';
  expect_error(b, "bad magic");
  b = good;
  b[8] = 9;
  expect_error(b, "version 9");
  expect_error(std::vector<uint8_t>(good.begin(), good.end() - 10), "outside the data area");
  expect_error(std::vector<uint8_t>(good.begin(), good.begin() + 40), "header runs past");
  b = good;
  b[17] = '#';  // inside the JSON
  expect_error(b, "invalid JSON");
  // A negative size: the header is valid JSON, the number is not a size.
  const std::string text(good.begin(), good.end());
  const size_t at = text.find("\"nbytes\":20");
  ASSERT_NE(at, std::string::npos);
  b = good;
  b[at + 9] = '-';
  b[at + 10] = '1';
  expect_error(b, "'nbytes' is -1, outside [0, ");
  std::remove(path.c_str());
}

// The writer reads back what it wrote before putting it in place: an artifact the reader would
// refuse is never committed, and the temporary directory goes away with the files it wrote.
TEST(ArtifactWriter, DoesNotCommitWhatDoesNotReadBack) {
  namespace fs = std::filesystem;
  const std::string out = temp_path("unreadable-artifact");
  {
    ArtifactWriter w(OutputTarget{out, false, {}, ""});
    w.write_file("embedding.bin", std::vector<uint8_t>(16, 0));
    json m = manifest_header();  // no model, no units: not an artifact the reader accepts
    try {
      w.commit(m);
      ADD_FAILURE() << "committed an artifact that does not read back";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("does not read back"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".partial-" + std::to_string(::getpid())));
}

TEST(Manifest, SealedManifestRoundTripsAndEditsAreCaught) {
  namespace fs = std::filesystem;
  const std::string dir = temp_path("manifest-dir");
  fs::create_directories(dir);
  auto write_manifest = [&](const json& m) { std::ofstream(dir + "/manifest.json") << m.dump(2); };
  json m = manifest_header();
  m["tokenizer"] = {{"kind", "gpt2_bpe"}, {"files", {{{"name", "vocab.json"}}, {{"name", "merges.txt"}}}}};
  m["summary"] = {{"bits_per_weight", 5.0937}};
  write_manifest(seal_manifest(m));
  EXPECT_EQ(read_manifest(dir)["tokenizer"]["files"][1]["name"], "merges.txt");
  json edited = seal_manifest(m);
  edited["tokenizer"]["files"][1]["name"] = "other.txt";
  write_manifest(edited);
  EXPECT_THROW(read_manifest(dir), Error);
  for (const char* bad : {"../../etc/passwd", "a/b", "", "..", "manifest.json"}) {
    m["tokenizer"]["files"][1]["name"] = bad;
    write_manifest(seal_manifest(m));  // integrity holds: the path rule alone must refuse it
    try {
      read_manifest(dir);
      ADD_FAILURE() << "accepted tokenizer.files[].name " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tokenizer.files[].name"), std::string::npos) << e.what();
    }
  }
  for (const json& bad : {json("tokenizer.model"), json{{"kind", "sentencepiece"}}, json{{"files", json::array()}},
                          json{{"files", {"tokenizer.model"}}}}) {
    m["tokenizer"] = bad;
    write_manifest(seal_manifest(m));
    EXPECT_THROW(read_manifest(dir), Error) << bad.dump();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sf
