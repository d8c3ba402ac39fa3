#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/dtype.h"

namespace sf {
namespace {

float bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

TEST(DType, F16RoundTripsEveryFiniteHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads
    EXPECT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << std::hex << h;
  }
}

TEST(DType, F16RoundsToNearestEven) {
  // 1 + 2^-11 lies exactly between 1 and the next half (1 + 2^-10): ties go to the even mantissa.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds past the largest half: infinity
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // half of it: tie to even zero
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DType, Bf16RoundsToNearestEvenNotTruncation) {
  EXPECT_EQ(f32_to_bf16(bits(0x3f808000)), 0x3f80);  // tie, even stays
  EXPECT_EQ(f32_to_bf16(bits(0x3f818000)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(f32_to_bf16(bits(0x3f80ffff)), 0x3f81);  // truncation would give 0x3f80
  EXPECT_EQ(f32_to_bf16(bits(0x3f807fff)), 0x3f80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(bf16_to_f32(0x4049), bits(0x40490000));
}

TEST(DType, ConvertsEveryIntegerType) {
  const uint8_t i16[] = {0xff, 0xff, 0x02, 0x00};  // -1, 2
  float out[2];
  convert_to_f32(DType::I16, i16, 2, out);
  EXPECT_EQ(out[0], -1.0f);
  EXPECT_EQ(out[1], 2.0f);
  const uint8_t b[] = {0, 1};
  convert_to_f32(DType::Bool, b, 2, out);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_EQ(dtype_from_torch_storage("BFloat16Storage"), DType::BF16);
  EXPECT_FALSE(dtype_from_torch_storage("ComplexFloatStorage").has_value());
}

}  // namespace
}  // namespace sf
