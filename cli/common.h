#pragma once
// Shared by the subcommands: how each registers itself, and output helpers.
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace sf::cli {

using json = nlohmann::json;

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

void print_json(const json& j);
// Messages may quote names read from a file. Keep them one printable line: valid UTF-8 passes,
// control characters and invalid bytes become \xNN.
std::string printable(const std::string& s);
std::string human_bytes(uint64_t n);
// A plain-text table with columns padded to the widest cell.
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
std::string fmt(const char* format, double v);

}  // namespace sf::cli
