// shardforge: one binary, one subcommand per file in cli/. Exit codes: 0 success, 1 failure (bad
// input, failed check), 2 usage error.
#include <cstdio>
#include <iostream>
#include <string>

#include "cli/common.h"
#include "core/error.h"
#include "shardforge_version.h"

namespace {

constexpr sf::cli::Command kCommands[] = {
    {"inspect", sf::cli::add_inspect}, {"convert", sf::cli::add_convert}, {"verify", sf::cli::add_verify},
    {"run", sf::cli::add_run},         {"eval", sf::cli::add_eval},       {"bench", sf::cli::add_bench},
    {"compare", sf::cli::add_compare},
};
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shardforge " SHARDFORGE_VERSION
               ": convert LLM checkpoints into quantized per-block artifacts and measure what it cost"};
  app.set_version_flag("--version", SHARDFORGE_VERSION);
  app.require_subcommand(1);
  int exit_code = 0;
  for (const auto& c : kCommands) c.add(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  } catch (const sf::Error& e) {
    std::fprintf(stderr, "shardforge: error: %s\n", sf::cli::printable(e.message()).c_str());
    return e.kind() == sf::ErrorKind::Usage ? 2 : 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "shardforge: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shardforge: error: %s\n", sf::cli::printable(e.what()).c_str());
    return 1;
  }
  return exit_code;
}
