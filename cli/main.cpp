// shardforge: one binary, one subcommand per file in cli/. Exit codes: 0 success, 1 failure (bad
// input, failed check), 2 usage error. Every failure is one line on stderr, "shardforge: error: ...".
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/common.h"
#include "core/error.h"
#include "shardforge_version.h"

namespace {

constexpr sf::cli::Command kCommands[] = {
    {"inspect", sf::cli::add_inspect}, {"convert", sf::cli::add_convert}, {"verify", sf::cli::add_verify},
    {"run", sf::cli::add_run},         {"eval", sf::cli::add_eval},       {"bench", sf::cli::add_bench},
    {"compare", sf::cli::add_compare}, {"pack", sf::cli::add_pack},       {"unpack", sf::cli::add_unpack},
};

void print_error(const std::string& message) {
  std::fprintf(stderr, "shardforge: error: %s\n", sf::cli::printable(message).c_str());
}

// CLI11 messages may span lines; the contract is one line.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// "run" or "eval ppl": the subcommands parsed before a parse error, to say where it happened.
std::string parsed_path(const CLI::App& app) {
  std::string path;
  for (const CLI::App* a = &app; !a->get_subcommands().empty();) {
    a = a->get_subcommands().front();
    path += (path.empty() ? "" : " ") + a->get_name();
  }
  return path;
}

CLI::App* find_subcommand(CLI::App* parent, const std::string& name) {
  const auto found = parent->get_subcommands([&](CLI::App* s) { return s->get_name() == name; });
  return found.empty() ? nullptr : found.front();
}

std::string command_list(CLI::App* parent) {
  std::string names;
  for (const CLI::App* s : parent->get_subcommands({})) names += (names.empty() ? "" : ", ") + s->get_name();
  return names;
}

// `shardforge help [CMD [SUB]]` is `shardforge [CMD [SUB]] --help`, after checking each word names a
// command (an unknown one is a usage error, not the top-level help). Any other first word that is
// not an option must name a command.
std::vector<std::string> rewrite_arguments(CLI::App& app, int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const bool help = !args.empty() && args[0] == "help";
  if (help) args.erase(args.begin());
  CLI::App* cur = &app;
  for (size_t i = 0; i < args.size() && (help || i == 0) && args[i][0] != '-'; ++i) {
    CLI::App* sub = find_subcommand(cur, args[i]);
    if (!sub) {
      if (cur == &app || help)
        sf::fail_usage("unknown command '" + std::string(cur == &app ? "" : cur->get_name() + " ") + args[i] +
                       "' (commands: " + command_list(cur) + ")");
      break;
    }
    cur = sub;
  }
  if (help) args.push_back("--help");
  return args;
}

// An empty value ("", as a script with an unset variable passes) would otherwise mean "no file",
// thread count 0 or "use the default" without a word. Only the prompt may be empty.
void refuse_empty_values(const CLI::App* app) {
  for (const CLI::App* sub : app->get_subcommands()) {
    for (const CLI::Option* opt : sub->get_options()) {
      if (opt->count() == 0 || opt->get_name() == "--prompt") continue;
      for (const std::string& v : opt->results())
        if (v.empty()) throw CLI::ValidationError(opt->get_name(), "needs a value, got an empty one");
    }
    refuse_empty_values(sub);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shardforge " SHARDFORGE_VERSION
               ": convert LLM checkpoints into quantized per-block artifacts and measure what it cost"};
  app.name("shardforge");
  app.set_version_flag("--version", SHARDFORGE_VERSION);
  app.require_subcommand(1);
  app.footer("'shardforge help COMMAND' (or COMMAND --help) shows a command's options.");
  int exit_code = 0;
  for (const auto& c : kCommands) c.add(app, exit_code);
  app.parse_complete_callback([&app] { refuse_empty_values(&app); });
  try {
    std::vector<std::string> args = rewrite_arguments(app, argc, argv);
    std::reverse(args.begin(), args.end());  // CLI11 takes the arguments last-first
    app.parse(args);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    const std::string where = parsed_path(app);
    print_error((where.empty() ? "" : where + ": ") + one_line(e.what()) + " (see 'shardforge help" +
                (where.empty() ? "" : " " + where) + "')");
    return 2;
  } catch (const sf::Error& e) {
    print_error(e.message());
    return e.kind() == sf::ErrorKind::Usage ? 2 : 1;
  } catch (const std::bad_alloc&) {
    const std::string& input = sf::cli::current_input();
    print_error((input.empty() ? "" : input + ": ") + "out of memory");
    return 1;
  } catch (const std::exception& e) {
    const std::string& input = sf::cli::current_input();
    print_error((input.empty() ? "" : input + ": ") + e.what());
    return 1;
  }
  return exit_code;
}
