#include <gtest/gtest.h>

#include <string>

#include "converters/pytorch/pickle_vm.h"
#include "converters/pytorch/torch_checkpoint.h"
#include "core/error.h"

namespace sf::pickle {
namespace {

Tree run_bytes(const std::string& p) {
  return run(reinterpret_cast<const uint8_t*>(p.data()), p.size(), torch_allow_list(), nullptr, "test.pkl");
}

std::string error_of(const std::string& p) {
  try {
    run_bytes(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Bytes as Python's pickle (protocol 2) writes {'a': [1, 2.5, 'x'], 'b': (True, None)}.
const unsigned char kPlainBytes[] = {
    0x80, 0x02, '}', 'q', 0x00, '(', 'X', 0x01, 0x00, 0x00, 0x00, 'a', 'q', 0x01, ']', 'q', 0x02, '(', 'K', 0x01,
    'G', '@', 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 'X', 0x01, 0x00, 0x00, 0x00, 'x', 'q', 0x03, 'e', 'X',
    0x01, 0x00, 0x00, 0x00, 'b', 'q', 0x04, 0x88, 'N', 0x86, 'q', 0x05, 'u', '.'};
const std::string kPlain(reinterpret_cast<const char*>(kPlainBytes), sizeof kPlainBytes);

TEST(PickleVM, ReadsPlainContainers) {
  Tree t = run_bytes(kPlain);
  const ValuePtr& v = t.root;
  ASSERT_EQ(v->kind, Kind::Dict);
  const Value* a = v->get("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->items.size(), 3u);
  EXPECT_EQ(a->items[0]->i, 1);
  EXPECT_DOUBLE_EQ(a->items[1]->f, 2.5);
  EXPECT_EQ(a->items[2]->s, "x");
  const Value* b = v->get("b");
  ASSERT_EQ(b->kind, Kind::Tuple);
  EXPECT_TRUE(b->items[0]->b);
  EXPECT_EQ(b->items[1]->kind, Kind::None);
}

TEST(PickleVM, ReadsNegativeAndWideIntegers) {
  // LONG1 with 8 bytes: -2^40;  BININT: -5
  const std::string p = std::string("\x80\x02(\x8a\x08\x00\x00\x00\x00\x00\xff\xff\xffJ\xfb\xff\xff\xfft.", 20);
  Tree t = run_bytes(p);
  const ValuePtr& v = t.root;
  EXPECT_EQ(v->items[0]->i, -(int64_t(1) << 40));
  EXPECT_EQ(v->items[1]->i, -5);
}

TEST(PickleVM, SelfContainingListsAndDeepNestingAreSafe) {
  // l = []; l.append(l)  ->  ] q0 h0 a .
  Tree t = run_bytes(std::string("\x80\x02]q\x00h\x00" "a.", 9));
  ASSERT_EQ(t.root->items.size(), 1u);
  EXPECT_EQ(t.root->items[0].get(), t.root.get());
  EXPECT_TRUE(sf::pickle_to_json(*t.root).is_array());  // the cycle becomes null, not a hang
  // 200000 nested lists, each appended into the one below: destroying them must not recurse.
  std::string deep = "\x80\x02";
  for (int i = 0; i < 200000; ++i) deep += "]";
  for (int i = 0; i < 199999; ++i) deep += "a";
  deep += ".";
  Tree d = run_bytes(deep);
  EXPECT_EQ(d.root->kind, Kind::List);
}

TEST(PickleVM, RejectsGlobalsOffTheListByName) {
  EXPECT_NE(error_of("\x80\x02" "cos\nsystem\n(X\x02\x00\x00\x00lstR.").find("'os.system'"), std::string::npos);
  EXPECT_NE(error_of("\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93.").find("'builtins.eval'"), std::string::npos);
}

TEST(PickleVM, RejectsCallsOfNamesThatMayNotBeCalled) {
  EXPECT_NE(error_of("\x80\x02" "ctorch\nFloatStorage\n)R.").find("may be named but not called"), std::string::npos);
}

TEST(PickleVM, RejectsMalformedStreams) {
  EXPECT_NE(error_of("\x80\x02]q\x00(K\x01").find("truncated"), std::string::npos);      // no STOP
  EXPECT_NE(error_of("\x80\x02h\x07.").find("never stored"), std::string::npos);           // BINGET unknown
  EXPECT_NE(error_of("\x80\x02K\x01K\x02.").find("STOP with 2"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02" "a.").find("underflow"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02I1\n.").find("unsupported pickle opcode"), std::string::npos);  // protocol-0 INT
  EXPECT_NE(error_of("\x80\x09N.").find("unsupported pickle protocol"), std::string::npos);
  EXPECT_NE(error_of(std::string("\x80\x02X\xff\xff\xff\x7f", 7)).find("past the end"), std::string::npos);
}

TEST(PickleVM, ErrorsNameTheFile) {
  EXPECT_EQ(error_of("\x80\x02h\x07.").rfind("test.pkl: ", 0), 0u);
}

TEST(PickleVM, MemoryIsAccountedBeforeItIsTaken) {
  // A 100k-deep tuple chain: about 25 MB of values from 100 kB of pickle.
  const std::string chain = "\x80\x02)" + std::string(100000, '\x85') + ".";
  EXPECT_NO_THROW(run_bytes(chain));
  std::string why;
  try {
    run(reinterpret_cast<const uint8_t*>(chain.data()), chain.size(), torch_allow_list(), nullptr, "test.pkl",
        uint64_t(1) << 20);
  } catch (const Error& e) {
    why = e.message();
  }
  EXPECT_NE(why.find("bytes of memory allowed"), std::string::npos) << why;
  // Marks and memo entries count too.
  const std::string marks = "\x80\x02" + std::string(200000, '(');
  try {
    run(reinterpret_cast<const uint8_t*>(marks.data()), marks.size(), torch_allow_list(), nullptr, "test.pkl",
        uint64_t(1) << 20);
    ADD_FAILURE() << "200000 marks fit in 1 MiB";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("memory"), std::string::npos) << e.message();
  }
}

TEST(PickleVM, RebuildFromTypeV2WrapsOnlyThePlainRebuilders) {
  const std::string f = "ctorch._tensor\n_rebuild_from_type_v2\nq\x01" "ctorch\nTensor\nq\x02";
  // f(f, Tensor, (f, Tensor, (), {}), {})
  const std::string nested = "\x80\x02" + f + "h\x01(h\x01h\x02(h\x01h\x02)}t}tR.";
  EXPECT_NE(error_of(nested).find("may not be called through it"), std::string::npos) << error_of(nested);
}

TEST(PickleVM, MetadataDepthIsBounded) {
  // {'a': {'a': ... }} 64 and 100000 levels deep: the first converts, the second is refused
  // (pickle_to_json recurses once per level).
  for (const size_t depth : {kMaxMetadataDepth - 1, size_t(100000)}) {
    std::string p = "\x80\x02}";
    for (size_t i = 0; i < depth; ++i) p += std::string("X\x01\x00\x00\x00" "a}", 7);
    p += std::string(depth, 's') + ".";
    Tree t = run_bytes(p);
    if (depth < kMaxMetadataDepth) {
      EXPECT_NO_THROW(pickle_to_json(*t.root));
    } else {
      try {
        pickle_to_json(*t.root);
        ADD_FAILURE() << "no error for depth " << depth;
      } catch (const Error& e) {
        EXPECT_NE(e.message().find("deeper than 64"), std::string::npos) << e.message();
      }
    }
  }
}

}  // namespace
}  // namespace sf::pickle
