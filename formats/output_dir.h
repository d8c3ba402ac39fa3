#pragma once
// The rules for where shardforge writes (docs/cli.md): the directory an artifact is written to
// ("convert": what --force may replace, what a stale OUT.partial-PID is, the atomic renames that
// commit an artifact) and a file a command writes beside its work (compare --out, run --logits).
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace sf {

// Names of the files an artifact writer creates; nothing else is ever deleted by one.
bool is_artifact_file_name(const std::string& name);

// Empty when `dir` is an existing artifact --force may replace: a real directory (not a symbolic
// link) whose manifest.json passes read_manifest (format, version, manifest_sha256, file names),
// holding only regular files that manifest lists. Otherwise says why not.
std::string why_not_replaceable(const std::string& dir);

// Refuses (Error) when `out` is, or contains, one of `inputs`: replacing it would destroy the source.
void refuse_output_holding_inputs(const std::string& out, const std::vector<std::string>& inputs);

// Looks at OUT.partial-PID siblings that are real directories (a symbolic link or anything else of
// that name is never a leftover of ours: reported, left alone): refuses when PID is alive (another
// conversion is writing OUT); removes one whose process is gone when it holds only files a writer
// creates; reports each on stderr.
void handle_stale_partials(const std::string& out);

// Deletes `dir` when it is a real directory (a symbolic link is never followed) holding only regular
// files whose names `allowed` accepts (a flat directory we wrote). Returns false, deleting nothing,
// otherwise.
bool remove_flat_dir(const std::string& dir, const std::function<bool(const std::string&)>& allowed);

// The rule for a file a command writes a report or a dump to (compare --out, run --logits), checked
// before any work so that an hour of computing never ends in a refusal or in destroying something:
// `path` must not exist or be a plain regular file (not a symbolic link, directory, device, FIFO or
// socket, not hard-linked elsewhere); it must not be or lie inside any of `inputs` (what the command
// reads, or a directory it writes), nor inside an artifact directory (one holding manifest.json);
// its directory must exist and be writable. Fails (Error naming `path` and the reason) otherwise.
void check_report_path(const std::string& path, const std::vector<std::string>& inputs);

// Opens `path` (already through check_report_path) for writing from its start, without following a
// symbolic link or waiting for a FIFO's reader, and refuses what it opened unless it is a plain
// regular file: whatever was put at `path` since the check is never written through. Truncates only
// then. The caller closes the FILE.
FILE* open_report_file(const std::string& path);

// renameat2 wrappers: return 0 or an errno.
int rename_no_replace(const std::string& from, const std::string& to);
int rename_exchange(const std::string& a, const std::string& b);

}  // namespace sf
