#include "cli/compare_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace sf::cli {

namespace {

// The canvas and the plot area inside it, in SVG user units (pixels).
constexpr double kWidth = 760, kHeight = 480;
constexpr double kLeft = 80, kRight = 600, kTop = 60, kBottom = 400;
constexpr double kCharWidth = 7, kLabelHeight = 13;  // a 12px sans-serif label, estimated

std::string num(double v, const char* format = "%.2f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters are not allowed in XML 1.0 text: a name never has them, a path might.
        if (static_cast<unsigned char>(c) < 0x20) out += '?';
        else out += c;
    }
  }
  return out;
}

// 1, 2 or 5 times a power of ten, about range / target.
double nice_step(double range, int target) {
  const double raw = range / target;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (raw <= m * p) return m * p;
  return 10 * p;
}

struct Box {
  double x0, y0, x1, y1;
  bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

// Bits per weight on a log2 axis: f32 at 32 and int4 near 4 both stay readable.
struct XAxis {
  double lo, hi;  // log2 of the ends
  double px(double bits) const { return kLeft + (std::log2(bits) - lo) / (hi - lo) * (kRight - kLeft); }
  std::vector<double> ticks() const {
    std::vector<double> all, powers;
    for (int k = int(std::floor(lo)); k <= int(std::ceil(hi)); ++k)
      for (double m : {1.0, 1.5}) {
        const double v = m * std::exp2(k);
        if (std::log2(v) >= lo && std::log2(v) <= hi) (m == 1.0 ? powers : all).push_back(v);
      }
    if (powers.size() >= 5) return powers;  // else 6, 12, 24 too: int4's 4.5 bits get a tick near them
    all.insert(all.end(), powers.begin(), powers.end());
    std::sort(all.begin(), all.end());
    return all;
  }
};

// More ticks than any sane axis has: a bound on the loop whatever the range turns out to be.
constexpr int kMaxTicks = 64;

struct YAxis {
  double lo, hi;
  double py(double ppl) const { return kBottom - (ppl - lo) / (hi - lo) * (kBottom - kTop); }
  // By integer index, not `v += step`: a step below the spacing of doubles near v would leave v
  // where it is and the loop would never end.
  std::vector<double> ticks() const {
    const double step = nice_step(hi - lo, 5);
    std::vector<double> t;
    if (!(std::isfinite(step) && step > 0)) return t;
    const double first = std::ceil(lo / step) * step;
    for (int i = 0; i < kMaxTicks; ++i) {
      const double v = first + i * step;
      if (!(v <= hi + step * 1e-9)) break;
      t.push_back(v);
    }
    return t;
  }
  // Enough decimals that neighbouring ticks differ.
  const char* format() const {
    const double step = nice_step(hi - lo, 5);
    return step >= 1 ? "%.0f" : step >= 0.1 ? "%.1f" : step >= 0.01 ? "%.2f" : step >= 0.001 ? "%.3f" : "%.4f";
  }
};

XAxis x_axis(const std::vector<CompareRow>& rows) {
  double lo = 1e300, hi = -1e300;
  for (const auto& r : rows) {
    lo = std::min(lo, std::log2(r.bits_per_weight));
    hi = std::max(hi, std::log2(r.bits_per_weight));
  }
  const double pad = std::max(0.15, (hi - lo) * 0.06);
  return {lo - pad, hi + pad};
}

YAxis y_axis(const std::vector<CompareRow>& rows) {
  double lo = 1e300, hi = -1e300;
  for (const auto& r : rows) {
    lo = std::min(lo, r.ppl - r.ppl_stderr);
    hi = std::max(hi, r.ppl + r.ppl_stderr);
  }
  // Perplexities a few ulps apart (equal up to rounding, no standard error) are one value: padding
  // their difference would make an axis narrower than the doubles on it can resolve.
  const bool one_value = !(hi - lo > 1e-9 * std::max(1.0, std::fabs(hi)));
  const double pad = one_value ? std::max(0.01, std::fabs(hi) * 1e-3) : (hi - lo) * 0.08;
  return {lo - pad, hi + pad};
}

// Places each label beside its point where it covers no other label, point or the axes: right of
// the point, then left, then further up or down. Schemes of equal size (f16 and bf16, int4:g32 and
// q4_0) sit on one vertical line, so their labels must be moved apart.
std::vector<Box> place_labels(const std::vector<CompareRow>& rows, const std::vector<double>& px,
                              const std::vector<double>& py, std::vector<Box> taken) {
  std::vector<Box> labels(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) taken.push_back({px[i] - 5, py[i] - 5, px[i] + 5, py[i] + 5});
  std::vector<size_t> order(rows.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return py[a] < py[b]; });
  for (size_t i : order) {
    const double w = kCharWidth * double(rows[i].scheme.size()) + 4;
    Box best{};
    int best_hits = -1;
    for (double dy : {-4.0, 14.0, -18.0, 28.0, -32.0, 42.0, -46.0, 56.0}) {
      for (double dx : {8.0, -8.0, 24.0, -24.0}) {  // right, left, then past a neighbour's error bar
        const double x0 = dx > 0 ? px[i] + dx : px[i] + dx - w;
        const Box b{x0, py[i] + dy - kLabelHeight + 3, x0 + w, py[i] + dy + 3};
        int hits = (b.x0 < kLeft || b.x1 > kWidth - 4 || b.y0 < kTop - 20 || b.y1 > kBottom) ? 100 : 0;
        for (const Box& t : taken) hits += b.overlaps(t);
        if (best_hits < 0 || hits < best_hits) best = b, best_hits = hits;
      }
      if (best_hits == 0) break;  // the first free place, right before left, nearest first
    }
    labels[i] = best;
    taken.push_back(best);
  }
  return labels;
}

}  // namespace

std::string compare_plot_svg(const std::vector<CompareRow>& measured, const std::string& caption) {
  // compare refuses a non-finite perplexity; a size of 0 or a standard error that is not a number
  // (one scored token) must not break the axes either.
  std::vector<CompareRow> rows = measured;
  for (auto& r : rows) {
    // Bounded both ways: the X axis has a tick per power of two between the ends.
    if (!(r.bits_per_weight > 0.01)) r.bits_per_weight = 0.01;
    if (!(r.bits_per_weight < 1e6)) r.bits_per_weight = 1e6;
    if (!(r.ppl_stderr >= 0 && std::isfinite(r.ppl_stderr))) r.ppl_stderr = 0;
  }
  const XAxis xa = x_axis(rows);
  const YAxis ya = y_axis(rows);
  std::vector<double> px, py;
  for (const auto& r : rows) {
    px.push_back(xa.px(r.bits_per_weight));
    py.push_back(ya.py(r.ppl));
  }
  const std::string reference_label = rows[0].scheme + " reference";
  const Box reference_box{kRight + 4, py[0] - 10, kRight + 8 + kCharWidth * double(reference_label.size()), py[0] + 6};
  std::vector<Box> fixed = {reference_box};  // what labels must not cover besides the points
  for (size_t i = 0; i < rows.size(); ++i)  // error bars, so no label crosses another scheme's
    fixed.push_back({px[i] - 4, ya.py(rows[i].ppl + rows[i].ppl_stderr), px[i] + 4, ya.py(rows[i].ppl - rows[i].ppl_stderr)});
  const std::vector<Box> labels = place_labels(rows, px, py, fixed);

  std::ostringstream s;
  s << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
    << "\" viewBox=\"0 0 " << kWidth << " " << kHeight << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<title>perplexity against bits per weight</title>\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text class=\"title\" x=\"" << kLeft << "\" y=\"24\" font-size=\"14\">perplexity against size, "
    << xml_escape(rows[0].scheme) << " the reference</text>\n"
    << "<text class=\"caption\" x=\"" << kLeft << "\" y=\"42\" fill=\"#555\">" << xml_escape(caption) << "</text>\n";

  // Grid, axes, ticks.
  s << "<g class=\"y-axis\">\n";
  for (double v : ya.ticks()) {
    const double y = ya.py(v);
    s << "<line x1=\"" << kLeft << "\" y1=\"" << num(y) << "\" x2=\"" << kRight << "\" y2=\"" << num(y)
      << "\" stroke=\"#e4e4e4\"/>\n"
      << "<line x1=\"" << kLeft - 5 << "\" y1=\"" << num(y) << "\" x2=\"" << kLeft << "\" y2=\"" << num(y)
      << "\" stroke=\"black\"/>\n"
      << "<text class=\"tick\" x=\"" << kLeft - 8 << "\" y=\"" << num(y + 4) << "\" text-anchor=\"end\">"
      << num(v, ya.format()) << "</text>\n";
  }
  s << "<line x1=\"" << kLeft << "\" y1=\"" << kTop << "\" x2=\"" << kLeft << "\" y2=\"" << kBottom
    << "\" stroke=\"black\"/>\n"
    << "<text class=\"axis-title\" transform=\"translate(22," << (kTop + kBottom) / 2
    << ") rotate(-90)\" text-anchor=\"middle\">perplexity (± standard error)</text>\n</g>\n";
  s << "<g class=\"x-axis\">\n";
  for (double v : xa.ticks()) {
    const double x = xa.px(v);
    s << "<line x1=\"" << num(x) << "\" y1=\"" << kBottom << "\" x2=\"" << num(x) << "\" y2=\"" << kBottom + 5
      << "\" stroke=\"black\"/>\n"
      << "<text class=\"tick\" x=\"" << num(x) << "\" y=\"" << kBottom + 19 << "\" text-anchor=\"middle\">"
      << num(v, v == std::floor(v) ? "%.0f" : "%.1f") << "</text>\n";
  }
  s << "<line x1=\"" << kLeft << "\" y1=\"" << kBottom << "\" x2=\"" << kRight << "\" y2=\"" << kBottom
    << "\" stroke=\"black\"/>\n"
    << "<text class=\"axis-title\" x=\"" << (kLeft + kRight) / 2 << "\" y=\"" << kBottom + 42
    << "\" text-anchor=\"middle\">bits per weight (log scale; smaller is left)</text>\n</g>\n";

  // The reference: a dashed line at its perplexity, named at the right end.
  const double ry = py[0];
  s << "<g class=\"reference\">\n<line x1=\"" << kLeft << "\" y1=\"" << num(ry) << "\" x2=\"" << kRight << "\" y2=\""
    << num(ry) << "\" stroke=\"#c0392b\" stroke-dasharray=\"5,4\"/>\n"
    << "<text class=\"reference-label\" x=\"" << kRight + 6 << "\" y=\"" << num(ry + 4) << "\" fill=\"#c0392b\">"
    << xml_escape(reference_label) << "</text>\n</g>\n";

  // Points: error bar, marker, label (with a leader line when moved off the point).
  for (size_t i = 0; i < rows.size(); ++i) {
    const CompareRow& r = rows[i];
    const std::string name = xml_escape(r.scheme);
    const std::string colour = i == 0 ? "#c0392b" : "#1f4e9c";
    const double y0 = ya.py(r.ppl - r.ppl_stderr), y1 = ya.py(r.ppl + r.ppl_stderr);
    s << "<line class=\"errorbar\" x1=\"" << num(px[i]) << "\" y1=\"" << num(y0) << "\" x2=\"" << num(px[i])
      << "\" y2=\"" << num(y1) << "\" stroke=\"" << colour << "\"/>\n";
    for (double y : {y0, y1})
      s << "<line class=\"errorbar\" x1=\"" << num(px[i] - 4) << "\" y1=\"" << num(y) << "\" x2=\""
        << num(px[i] + 4) << "\" y2=\"" << num(y) << "\" stroke=\"" << colour << "\"/>\n";
    s << "<circle class=\"point" << (i == 0 ? " reference" : "") << "\" data-scheme=\"" << name
      << "\" data-bits-per-weight=\"" << num(r.bits_per_weight, "%.6g") << "\" data-ppl=\"" << num(r.ppl, "%.9g")
      << "\" data-ppl-stderr=\"" << num(r.ppl_stderr, "%.9g") << "\" cx=\"" << num(px[i]) << "\" cy=\""
      << num(py[i]) << "\" r=\"4\" fill=\"" << colour << "\"><title>" << name << ": "
      << num(r.bits_per_weight) << " bits per weight, PPL " << num(r.ppl, "%.4f") << " ± "
      << num(r.ppl_stderr, "%.4f") << "</title></circle>\n";
    const Box& b = labels[i];
    const bool right = b.x0 > px[i];
    const double anchor_x = right ? b.x0 : b.x1, text_y = b.y1 - 3;
    if (std::fabs(text_y - 4 - py[i]) > 10 || std::fabs(anchor_x - px[i]) > 12)
      s << "<line class=\"leader\" x1=\"" << num(px[i]) << "\" y1=\"" << num(py[i]) << "\" x2=\""
        << num(anchor_x + (right ? -1 : 1)) << "\" y2=\"" << num(text_y - 4) << "\" stroke=\"#999\"/>\n";
    s << "<text class=\"label\" data-label-for=\"" << name << "\" x=\"" << num(b.x0 + 2) << "\" y=\""
      << num(text_y) << "\">" << name << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace sf::cli
