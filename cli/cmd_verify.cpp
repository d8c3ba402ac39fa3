// verify ARTIFACT: checksums and structure.
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "core/error.h"
#include "formats/artifact_readers.h"
#include "validators/artifact_tokenizer.h"

namespace sf::cli {

namespace {
struct VerifyOpts {
  std::string dir;
  bool json_out = false;
};

int run_verify(const VerifyOpts& o) {
  set_current_input(o.dir);
  const ArtifactReader& reader = reader_for(o.dir);
  auto problems = reader.verify(o.dir);
  // Its files are intact; they must also be a tokenizer of their kind that fits the model. An ONNX
  // export, whose graphs verify checked, is not opened for running (Unsupported): no tokenizer check.
  if (problems.empty()) {
    try {
      open_artifact_tokenizer(reader.open(o.dir));
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::Unsupported) problems.push_back(e.message());
    }
  }
  if (o.json_out) {
    print_json({{"artifact", o.dir}, {"ok", problems.empty()}, {"problems", problems}});
  } else if (problems.empty()) {
    std::cout << o.dir << ": OK\n";
  } else {
    for (const auto& p : problems) std::cerr << "shardforge: verify: " << printable(p) << "\n";
  }
  return problems.empty() ? 0 : 1;
}
}  // namespace

void add_verify(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<VerifyOpts>();
  auto* c = app.add_subcommand("verify", "Check an artifact's files against its manifest (sizes, sha256, structure) and open its tokenizer");
  c->add_option("artifact", o->dir, "artifact: a directory or a file (docs/cli.md)")->required();
  c->add_flag("--json", o->json_out, "print one JSON object");
  c->callback([o, &exit_code] { exit_code = run_verify(*o); });
}

}  // namespace sf::cli
