// pack ARTIFACT_DIR -o FILE.zip: an artifact directory as one zip bundle (the bytes --format zip
// writes for the same conversion). unpack FILE.zip -o DIR: the bundle's files as an artifact
// directory. Each checks its input completely first (verify) and writes through the sink of its
// output (formats/zip_sink.h, formats/artifact_writer.h): nothing is at -o unless it all worked.
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "core/error.h"
#include "formats/artifact_readers.h"
#include "formats/artifact_writer.h"
#include "formats/manifest.h"
#include "formats/zip_bundle.h"
#include "formats/zip_sink.h"

namespace sf::cli {

namespace {

struct PackOpts {
  std::string in, out;
  bool force = false;
};

// A reader's problems as one error: the first names the file and what is wrong.
void require_intact(const ArtifactReader& reader, const std::string& path) {
  const auto problems = reader.verify(path);
  if (problems.empty()) return;
  fail(problems.front() + (problems.size() > 1 ? " (and " + std::to_string(problems.size() - 1) + " more problems; "
                                                     "shardforge verify lists them)" : std::string()));
}

// The manifest as a sink's commit takes it: without what the sink adds ("files", the seal).
json unsealed(json m) {
  m.erase("files");
  m.erase(kManifestHashKey);
  return m;
}

int pack(const PackOpts& o) {
  set_current_input(o.in);
  const ArtifactReader& reader = reader_for(o.in);
  if (std::string(reader.name) != "shards")
    fail_file(o.in, std::string("is ") + reader.description + "; pack takes an artifact directory (--format shards)");
  require_intact(reader, o.in);
  const json m = read_manifest(o.in);
  if (m.contains("onnx")) fail_file(o.in, "is an ONNX export; pack takes the artifact directories of --format shards");
  ZipSink sink({o.out, o.force, {o.in}, ""});
  for (const auto& f : m["files"]) {
    const std::string name = f["path"].get<std::string>();
    sink.copy_file(name, o.in + "/" + name);
  }
  // What was copied must be what was verified (a file changed in between would be packed with its
  // new checksum, and the bundle would verify).
  if (sink.files() != m["files"]) fail_file(o.in, "changed while it was packed; nothing was written");
  sink.commit(unsealed(m));
  std::cout << o.out << ": packed " << m["files"].size() << " files\n";
  return 0;
}

int unpack(const PackOpts& o) {
  set_current_input(o.in);
  if (!is_zip_bundle(o.in)) fail_file(o.in, "is not a zip bundle of an artifact (a zip with a manifest.json entry)");
  require_intact(reader_for(o.in), o.in);
  const ZipBundleFiles bundle(o.in);
  const json m = bundle.manifest();
  ArtifactWriter w({o.out, o.force, {o.in}, ""});
  for (const auto& f : m["files"]) {
    const std::string name = f["path"].get<std::string>();
    const FileBytes b = bundle.map(name);
    w.write_bytes(name, b.data, b.size);
  }
  w.commit(unsealed(m));
  std::cout << o.out << ": unpacked " << m["files"].size() << " files\n";
  return 0;
}

}  // namespace

void add_pack(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<PackOpts>();
  auto* c = app.add_subcommand("pack", "Write an artifact directory as one zip bundle (what --format zip writes)");
  c->add_option("artifact", o->in, "artifact directory")->required();
  c->add_option("-o,--out", o->out, "the .zip file to write")->required();
  c->add_flag("--force", o->force, "replace OUT only if it is a zip bundle");
  c->callback([o, &exit_code] { exit_code = pack(*o); });
}

void add_unpack(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<PackOpts>();
  auto* c = app.add_subcommand("unpack", "Write a zip bundle's files as an artifact directory");
  c->add_option("bundle", o->in, "zip bundle (--format zip, pack)")->required();
  c->add_option("-o,--out", o->out, "the artifact directory to write")->required();
  c->add_flag("--force", o->force, "replace OUT only if it is an artifact directory");
  c->callback([o, &exit_code] { exit_code = unpack(*o); });
}

}  // namespace sf::cli
