#pragma once
// Shared by the subcommands: how each registers itself, the options several of them take (thread
// count, bounded numbers, context length), and output helpers.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/messages.h"
#include "core/model_desc.h"

namespace sf::cli {

using json = nlohmann::json;
using sf::printable;  // core/messages.h
using sf::warn;

// Each subcommand file defines one of these; main.cpp lists them in a table.
struct Command {
  const char* name;
  void (*add)(CLI::App& app, int& exit_code);
};

void add_inspect(CLI::App& app, int& exit_code);
void add_convert(CLI::App& app, int& exit_code);
void add_verify(CLI::App& app, int& exit_code);
void add_run(CLI::App& app, int& exit_code);
void add_eval(CLI::App& app, int& exit_code);
void add_bench(CLI::App& app, int& exit_code);
void add_compare(CLI::App& app, int& exit_code);
void add_pack(CLI::App& app, int& exit_code);    // cli/cmd_pack.cpp
void add_unpack(CLI::App& app, int& exit_code);

// ---- thread counts ----
// The most worker threads a command starts: 4 x the hardware concurrency, and never more than 256.
// More only adds start-up time and memory; the work is split by rows, not by threads.
size_t max_threads();
// A -t/--threads value as a thread count: 0 = all cores; negative is a usage error; above
// max_threads() is clamped, with one warning line on stderr.
size_t resolve_threads(int64_t requested);
// Registers "-t,--threads" on a subcommand; `threads` receives resolve_threads(value).
CLI::Option* add_threads_option(CLI::App* c, size_t& threads);

// ---- bounded numbers ----
// A validator accepting a finite number in [lo, hi]; the message states the bounds (CLI11's
// PositiveNumber says "in range 0 to 1.797e308") and nan/inf are refused.
CLI::Validator within(double lo, double hi);
inline constexpr int64_t kMaxGenerate = 1'000'000;  // -n of run and bench, -p of bench
inline constexpr int64_t kMaxChunks = int64_t(1) << 30;

// ---- context length ----
// Positions no command goes past, whatever the model says: the KV cache and score buffers grow
// with it, and 2^20 positions is far beyond every model shardforge reads.
inline constexpr int64_t kMaxContext = int64_t(1) << 20;
// Refuses (usage error naming the artifact and the model's limit) `positions` beyond the model's
// context length (ModelDesc::max_seq; 0 = unknown, then only kMaxContext applies). With
// allow_long, goes on past max_seq with one warning line; kMaxContext is never exceeded.
// `what` says where the number came from, e.g. "prompt (5 tokens) + -n 100".
void check_context(const ModelDesc& m, const std::string& artifact, int64_t positions, const std::string& what,
                   bool allow_long);
// Registers --allow-long-context on a subcommand.
CLI::Option* add_allow_long_context(CLI::App* c, bool& allow);
// --resident-blocks N: keep at most N blocks in memory, stream the others (executor/unit_stream.h).
CLI::Option* add_resident_blocks(CLI::App* c, int64_t& n);

// ---- the file being processed ----
// Each command records its main input, so that main() can name it when memory runs out.
void set_current_input(const std::string& path);
const std::string& current_input();

void print_json(const json& j);
// Calls fn(item, value) for each comma-separated item of each value of a list option ("64,512", or
// the option given several times), empty items included, so the caller decides what is an error.
void for_each_list_item(const std::vector<std::string>& values,
                        const std::function<void(const std::string& item, const std::string& value)>& fn);
std::string human_bytes(uint64_t n);
// A plain-text table with columns padded to the widest cell.
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
std::string fmt(const char* format, double v);

}  // namespace sf::cli
