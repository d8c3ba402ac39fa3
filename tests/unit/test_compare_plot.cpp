// compare --plot's axes for degenerate inputs: perplexities equal up to an ulp or two with no
// standard error (--ctx 2 --chunks 1) once made the Y axis's tick loop spin forever, growing memory.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <limits>
#include <regex>
#include <set>
#include <thread>

#include "cli/compare_plot.h"

namespace sf::cli {
namespace {

CompareRow row(const std::string& scheme, double bits, double ppl, double stderr_) {
  CompareRow r;
  r.scheme = scheme;
  r.bits_per_weight = bits;
  r.ppl = ppl;
  r.ppl_stderr = stderr_;
  return r;
}

// The plot, or a failed test instead of a hung one: the old loop never returned.
std::string plot_within_seconds(const std::vector<CompareRow>& rows, int seconds = 20) {
  auto done = std::make_shared<std::promise<std::string>>();
  std::future<std::string> result = done->get_future();
  std::thread([rows, done] { done->set_value(compare_plot_svg(rows, "caption")); }).detach();
  if (result.wait_for(std::chrono::seconds(seconds)) != std::future_status::ready) {
    std::fprintf(stderr, "compare_plot_svg did not return within %d s\n", seconds);
    std::abort();  // the thread cannot be stopped; end the run rather than hang it
  }
  return result.get();
}

// The text of every tick label inside <g class="NAME-axis">.
std::vector<std::string> tick_labels(const std::string& svg, const std::string& axis) {
  const size_t begin = svg.find("<g class=\"" + axis + "-axis\">");
  const size_t end = svg.find("</g>", begin);
  EXPECT_NE(begin, std::string::npos);
  const std::string group = svg.substr(begin, end - begin);
  std::vector<std::string> out;
  const std::regex tick("<text class=\"tick\"[^>]*>([^<]*)</text>");
  for (auto it = std::sregex_iterator(group.begin(), group.end(), tick); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1]);
  return out;
}

std::vector<double> point_ys(const std::string& svg) {
  std::vector<double> out;
  const std::regex cy("<circle class=\"point[^>]* cy=\"([^\"]+)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), cy); it != std::sregex_iterator(); ++it)
    out.push_back(std::stod((*it)[1]));
  return out;
}

void expect_readable_y_axis(const std::string& svg) {
  const std::vector<std::string> ticks = tick_labels(svg, "y");
  EXPECT_GE(ticks.size(), 2u);
  EXPECT_LE(ticks.size(), 12u);
  EXPECT_EQ(std::set<std::string>(ticks.begin(), ticks.end()).size(), ticks.size()) << "repeated tick labels";
  for (double y : point_ys(svg)) {
    EXPECT_TRUE(std::isfinite(y));
    EXPECT_GE(y, 60.0);   // kTop
    EXPECT_LE(y, 400.0);  // kBottom
  }
}

TEST(ComparePlot, PerplexitiesAnUlpApartWithoutStderrGiveOneValueAxis) {
  const double ppl = 7.123456789;
  for (int ulps : {1, 2, 3}) {
    double other = ppl;
    for (int i = 0; i < ulps; ++i) other = std::nextafter(other, 100.0);
    const std::string svg = plot_within_seconds({row("f32", 32, ppl, 0), row("q8_0", 8.5, other, 0)});
    expect_readable_y_axis(svg);
  }
}

TEST(ComparePlot, NotANumberStderrCountsAsNone) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double ppl = 1234.5;
  const std::string svg = plot_within_seconds(
      {row("f32", 32, ppl, nan), row("f16", 16, std::nextafter(ppl, 0.0), nan), row("q4_0", 4.5, ppl, 0)});
  expect_readable_y_axis(svg);
}

TEST(ComparePlot, DistinctPerplexitiesStillGetNiceTicks) {
  const std::string svg = plot_within_seconds({row("f32", 32, 10.0, 0.5), row("q4_0", 4.5, 12.0, 0.5)});
  const std::vector<std::string> ticks = tick_labels(svg, "y");
  // Range 9.5 .. 12.5 plus 8% each side: the 1-2-5 step near a fifth of it is 1.
  EXPECT_EQ(ticks, (std::vector<std::string>{"10", "11", "12"}));
}

TEST(ComparePlot, XAxisIsBoundedForEqualAndExtremeSizes) {
  const double inf = std::numeric_limits<double>::infinity();
  for (double bits : {4.5, 0.0, 1e-300, 1e300, inf}) {
    const std::string svg = plot_within_seconds({row("a", bits, 5.0, 0.1), row("b", bits, 5.5, 0.1)});
    const std::vector<std::string> ticks = tick_labels(svg, "x");
    EXPECT_LE(ticks.size(), 64u) << bits;
    EXPECT_EQ(svg.find("nan"), std::string::npos) << bits;
    EXPECT_EQ(svg.find("inf"), std::string::npos) << bits;
  }
}

}  // namespace
}  // namespace sf::cli
