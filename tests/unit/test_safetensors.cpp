// The safetensors reader over files the tests lay out byte by byte: values of every float dtype,
// what real writers add (metadata, padding, empty tensors), headers that lie, and sharded indexes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "converters/reader_registry.h"
#include "converters/safetensors/safetensors_file.h"
#include "converters/safetensors/safetensors_reader.h"
#include "core/error.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A file: header length, header, data.
std::string file_bytes(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

template <typename T>
std::string raw(std::initializer_list<T> values) {
  std::string s;
  for (T v : values) s.append(reinterpret_cast<const char*>(&v), sizeof v);
  return s;
}

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("sf-st-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  // The message read_safetensors refuses the file with ("" when it accepts it).
  std::string refusal(const std::string& header, const std::string& data) {
    const std::string p = write("bad.safetensors", file_bytes(header, data));
    try {
      read_safetensors(p);
    } catch (const Error& e) {
      EXPECT_EQ(e.message().rfind(p + ": ", 0), 0u) << "does not name the file first: " << e.message();
      return e.message();
    }
    return "";
  }
  fs::path dir_;
};

TEST_F(Safetensors, ReadsEveryFloatDtypeInPlace) {
  // f16 0x3c00 = 1, 0xc000 = -2; bf16 0x3f80 = 1, 0x4040 = 3; data laid out out of header order.
  const std::string data = raw<float>({1.5f, -2.25f, 3, 4}) + raw<uint16_t>({0x3c00, 0xc000}) +
                           raw<uint16_t>({0x3f80, 0x4040}) + raw<int64_t>({-7, 9}) + raw<uint8_t>({1, 0});
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"bf16":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]},)"
      R"("f32":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"f16":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},)"
      R"("i64":{"dtype":"I64","shape":[1,2],"data_offsets":[24,40]},"b":{"dtype":"BOOL","shape":[2],"data_offsets":[40,42]},)"
      R"("empty":{"dtype":"F32","shape":[0,5],"data_offsets":[42,42]}}   )";  // padded with spaces
  const auto t = read_safetensors(write("ok.safetensors", file_bytes(header, data)));
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(t.at("f32").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.at("f32").to_f32(), (std::vector<float>{1.5f, -2.25f, 3, 4}));
  EXPECT_EQ(t.at("f16").to_f32(), (std::vector<float>{1, -2}));
  EXPECT_EQ(t.at("bf16").to_f32(), (std::vector<float>{1, 3}));
  EXPECT_EQ(t.at("i64").to_f32(), (std::vector<float>{-7, 9}));
  EXPECT_EQ(t.at("b").to_f32(), (std::vector<float>{1, 0}));
  EXPECT_TRUE(t.at("empty").to_f32().empty());
}

TEST_F(Safetensors, ReadsTwiceAfterGivingPagesBack) {
  // A tensor of many pages at an unaligned offset: each read drops the pages it copied, and the
  // next read must fault them in from the file again, unchanged.
  const size_t n = 300000;
  std::string data(3, 'x');
  for (size_t i = 0; i < n; ++i) data += raw<float>({float(i) * 0.5f});
  const std::string header = R"({"w":{"dtype":"F32","shape":[300000],"data_offsets":[3,1200003]},)"
                             R"("pad":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})";
  const auto t = read_safetensors(write("big.safetensors", file_bytes(header, data)));
  for (int round = 0; round < 2; ++round) {
    const auto v = t.at("w").to_f32();
    ASSERT_EQ(v.size(), n);
    for (size_t i = 0; i < n; i += 997) ASSERT_EQ(v[i], float(i) * 0.5f) << "round " << round << " element " << i;
    EXPECT_EQ(v[n - 1], float(n - 1) * 0.5f);
  }
}

TEST_F(Safetensors, FileTruncatedWhileMappedIsOneErrorLine) {
  // Read in place from a map: a file that shrinks under it would raise SIGBUS, which must end the
  // run with the usual one line naming the file and exit 1 (core/map_fault.h), not a crash.
  std::string data;
  for (int i = 0; i < 4096; ++i) data += raw<float>({float(i)});
  const std::string p =
      write("shrinks.safetensors", file_bytes(R"({"w":{"dtype":"F32","shape":[4096],"data_offsets":[0,16384]}})", data));
  EXPECT_EXIT(
      {
        const auto t = read_safetensors(p);
        fs::resize_file(p, 64);
        t.at("w").to_f32();
        std::exit(0);
      },
      ::testing::ExitedWithCode(1), "error: " + p + ": file was truncated or replaced while it was being read");
}

TEST_F(Safetensors, RefusesHeadersThatLie) {
  const std::string d16(16, '\0');
  struct Case {
    std::string header, needle;
  };
  const Case cases[] = {
      {R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", "lie past the end of the data (16 bytes)"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
       "tensors a and b overlap"},
      {R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", "F32 x [3] is 12 bytes but data_offsets [0, 16] hold 16"},
      {R"({"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}})", "negative"},
      {R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", "overflows"},
      {R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,16]}})", "overflows"},
      {R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,16]}})", "past 64-bit"},
      {R"({"w":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})", "overflows"},
      {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[18446744073709551615,16]}})", "end before they begin"},
      {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,-16]}})", "negative"},
      {R"({"w":{"dtype":"F8_E4M3","shape":[16],"data_offsets":[0,16]}})", "dtype F8_E4M3 is not one"},
      {R"({"w":{"dtype":"F32","shape":[4]}})", "data_offsets is missing"},
      {R"({"w":{"shape":[4],"data_offsets":[0,16]}})", "dtype is missing"},
      {R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", "shape is missing or not a list"},
      {R"({"w":7})", "not an object"},
      {R"({"__metadata__":{"k":[1]}})", "__metadata__ entry k is not a string"},
      {R"({"__metadata__":[]})", "__metadata__ is not a map"},
      {R"([1,2])", "not a JSON object"},
      {R"( {})", "not a JSON object"},
      {R"({"w":)", "invalid JSON"},
      {"{\"a\":" + std::string(200, '[') + std::string(200, ']') + "}", "deeper than"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.header.substr(0, 80));
    const std::string e = refusal(c.header, d16);
    EXPECT_NE(e.find(c.needle), std::string::npos) << e;
  }
}

TEST_F(Safetensors, RefusesLengthsThatLie) {
  auto error = [&](const std::string& bytes) {
    try {
      read_safetensors(write("len.safetensors", bytes));
    } catch (const Error& e) {
      return e.message();
    }
    return std::string();
  };
  EXPECT_NE(error(le64(uint64_t(1) << 60) + "{}").find("is more than the 100 MiB allowed"), std::string::npos);
  EXPECT_NE(error(le64(64) + "{}").find("runs past the end of the file (10 bytes)"), std::string::npos);
  EXPECT_NE(error("\x02\0\0").find("too short"), std::string::npos);
  EXPECT_NE(error("").find("too short"), std::string::npos);
}

TEST_F(Safetensors, ProbesByNameAndHeaderShape) {
  const std::string good = file_bytes(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x");
  EXPECT_TRUE(safetensors_probe(write("weights", good)));  // no extension: the header says so
  EXPECT_TRUE(safetensors_probe(write("x.safetensors", "anything")));
  EXPECT_FALSE(safetensors_probe(write("model.pt", std::string("PK\3\4", 4) + std::string(60, '\0'))));
  EXPECT_FALSE(safetensors_probe(write("pytorch_model.bin.index.json", R"({"weight_map": {}})")));
  EXPECT_TRUE(safetensors_probe(dir_.string()));  // it now holds x.safetensors
}

// A sharded checkpoint whose tensor names follow no family's pattern, one shard of them unlisted.
TEST_F(Safetensors, ShardedIndexTakesAnyNames) {
  write("a.safetensors", file_bytes(R"({"x.y.z":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", raw<float>({1, 2})));
  write("b.safetensors",
        file_bytes(R"({"with space":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},)"
                   R"("\u00fcmlaut":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
                   raw<uint16_t>({0x4040}) + "z"));
  write("model.safetensors.index.json", R"({"metadata":{"total_size":10},"weight_map":{"x.y.z":"a.safetensors",)"
                                        R"("with space":"b.safetensors","\u00fcmlaut":"b.safetensors"}})");
  const auto src = open_source(dir_.string());
  EXPECT_EQ(src->format, "safetensors");
  ASSERT_EQ(src->tensors.size(), 3u);
  EXPECT_EQ(src->tensors.at("x.y.z").to_f32(), (std::vector<float>{1, 2}));
  EXPECT_EQ(src->tensors.at("with space").to_f32(), (std::vector<float>{3}));
  EXPECT_EQ(src->tensors.at("\xc3\xbcmlaut").to_f32(), (std::vector<float>{float('z')}));
  ASSERT_EQ(src->files.size(), 2u);
  EXPECT_EQ(fs::path(src->files[1]).filename(), "b.safetensors");
  EXPECT_TRUE(src->warnings.empty());
}

TEST_F(Safetensors, ShardedIndexRefusals) {
  write("a.safetensors", file_bytes(R"({"p":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                    R"("q":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "ab"));
  write("b.safetensors", file_bytes(R"({"r":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "c"));
  auto error = [&](const std::string& index) {
    write("model.safetensors.index.json", index);
    try {
      open_source(dir_.string());
    } catch (const Error& e) {
      return e.message();
    }
    return std::string();
  };
  EXPECT_EQ(error(R"({"weight_map":{"p":"a.safetensors","q":"a.safetensors","r":"b.safetensors"}})"), "");
  EXPECT_NE(error(R"({"weight_map":{"p":"a.safetensors","q":"a.safetensors","r":"a.safetensors"}})")
                .find("a.safetensors: lacks tensor r"),
            std::string::npos);
  EXPECT_NE(error(R"({"weight_map":{"p":"a.safetensors","q":"c.safetensors","r":"b.safetensors"}})")
                .find("a.safetensors: holds tensor q, which"),
            std::string::npos);
  // A tensor a shard holds but the index does not list is refused, as it would be in a single file.
  const std::string unlisted = error(R"({"weight_map":{"p":"a.safetensors","r":"b.safetensors"}})");
  EXPECT_NE(unlisted.find("a.safetensors: holds tensor q, which"), std::string::npos) << unlisted;
  EXPECT_NE(unlisted.find("model.safetensors.index.json does not list"), std::string::npos) << unlisted;
  EXPECT_NE(error(R"({"weight_map":{"p":"../a.safetensors"}})").find("outside the directory"), std::string::npos);
  EXPECT_NE(error(R"({"weight_map":{"p":""}})").find("outside the directory"), std::string::npos);
  EXPECT_NE(error(R"({"weight_map":{"p":1}})").find("not a file name"), std::string::npos);
  EXPECT_NE(error(R"([1])").find("no weight_map"), std::string::npos);
}

}  // namespace
}  // namespace sf
