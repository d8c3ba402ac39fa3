#include <gtest/gtest.h>

#include <string>

#include "core/sha256.h"

namespace sf {
namespace {

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // FIPS 180-2 appendix B.3: one million 'a', fed in pieces that straddle the 64-byte blocks.
  Sha256 million;
  const std::string piece(999, 'a');
  for (int i = 0; i < 1001; ++i) million.update(piece.data(), piece.size());  // 999 999 bytes
  million.update(piece.data(), 1);
  EXPECT_EQ(million.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShot) {
  std::string s(1000003, 'a');
  for (size_t i = 0; i < s.size(); ++i) s[i] = char('a' + i % 26);
  Sha256 h;
  for (size_t i = 0; i < s.size(); i += 777) h.update(s.data() + i, std::min<size_t>(777, s.size() - i));
  EXPECT_EQ(h.hex_digest(), sha256_hex(s.data(), s.size()));
}

}  // namespace
}  // namespace sf
