#include "cli/common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "core/error.h"

namespace sf::cli {

namespace {
// %.15g prints 1000000 as "1000000" and 0.5 as "0.5": bounds as a user would type them.
std::string number(double v) { return fmt("%.15g", v); }
}  // namespace

size_t max_threads() {
  const size_t hw = std::max(1u, std::thread::hardware_concurrency());
  return std::min<size_t>(4 * hw, 256);
}

size_t resolve_threads(int64_t requested) {
  if (requested < 0)
    fail_usage("-t/--threads " + std::to_string(requested) + ": must be 0 (all cores) or a positive thread count");
  const size_t limit = max_threads();
  if (uint64_t(requested) > limit) {
    warn("-t/--threads " + std::to_string(requested) + " is more than this machine can use; using " +
         std::to_string(limit) + " (4 x " + std::to_string(std::max(1u, std::thread::hardware_concurrency())) +
         " cores, at most 256)");
    return limit;
  }
  return size_t(requested);
}

CLI::Option* add_threads_option(CLI::App* c, size_t& threads) {
  return c->add_option_function<int64_t>(
      "-t,--threads", [&threads](const int64_t& v) { threads = resolve_threads(v); },
      "worker threads (0 = all cores; at most " + std::to_string(max_threads()) + " here)");
}

CLI::Validator within(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& in) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(in.c_str(), &end);
        if (in.empty() || end != in.c_str() + in.size()) return "'" + in + "' is not a number";
        if (!std::isfinite(v) || v < lo || v > hi)
          return in + " is out of range: must be " + number(lo) + " to " + number(hi);
        return std::string();
      },
      number(lo) + ".." + number(hi));
}

void check_context(const ModelDesc& m, const std::string& artifact, int64_t positions, const std::string& what,
                   bool allow_long) {
  const std::string n = std::to_string(positions) + " positions (" + what + ")";
  if (positions > kMaxContext)
    fail_usage(artifact + ": " + n + " is more than the " + std::to_string(kMaxContext) +
               " positions shardforge supports");
  if (m.max_seq <= 0 || positions <= m.max_seq) return;
  const std::string limit = "the model's context length of " + std::to_string(m.max_seq);
  // A learned position table has a row per position and nothing past it: no flag runs further.
  if (m.positional == PositionalKind::Learned)
    fail_usage(artifact + ": " + n + " is more than " + limit + ", the rows of its learned position table");
  if (!allow_long) fail_usage(artifact + ": " + n + " is more than " + limit + " (--allow-long-context runs past it)");
  warn(artifact + ": " + n + " is more than " + limit + "; results past it are not meaningful");
}

CLI::Option* add_allow_long_context(CLI::App* c, bool& allow) {
  return c->add_flag("--allow-long-context", allow,
                     "run past the model's context length (max_seq) instead of refusing; results there are "
                     "not meaningful");
}

CLI::Option* add_resident_blocks(CLI::App* c, int64_t& n) {
  return c->add_option("--resident-blocks", n,
                       "keep at most N blocks' weights in memory and read the others from the artifact's files as "
                       "each forward pass reaches them (0 = all resident; the output is the same)")
      ->check(within(0, 1e9));
}

namespace {
std::string& input_slot() {
  static std::string path;
  return path;
}
}  // namespace

void set_current_input(const std::string& path) { input_slot() = path; }
const std::string& current_input() { return input_slot(); }


// Invalid UTF-8 quoted from a damaged file is replaced rather than aborting the output.
void print_json(const json& j) { std::cout << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n"; }



void for_each_list_item(const std::vector<std::string>& values,
                        const std::function<void(const std::string& item, const std::string& value)>& fn) {
  for (const std::string& v : values) {
    size_t start = 0;
    for (;;) {
      const size_t comma = std::min(v.find(',', start), v.size());
      fn(v.substr(start, comma - start), v);
      if (comma == v.size()) break;
      start = comma + 1;
    }
  }
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", v, units[u]);
  return buf;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

namespace {
// Display width of UTF-8 text: code points, not bytes ("±" is one column).
size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}
}  // namespace

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size());
  for (size_t i = 0; i < header.size(); ++i) w[i] = width(header[i]);
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], width(r[i]));
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < w.size(); ++i) {
      std::string c = i < r.size() ? r[i] : "";
      c.append(w[i] - std::min(w[i], width(c)), ' ');
      s += (i ? "  " : "") + c;
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    std::cout << s << "\n";
  };
  line(header);
  std::vector<std::string> rule;
  for (size_t x : w) rule.push_back(std::string(x, '-'));
  line(rule);
  for (const auto& r : rows) line(r);
}

}  // namespace sf::cli
