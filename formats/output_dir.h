#pragma once
// The rules for the directory an artifact is written to (docs/cli.md "convert"): what --force may
// replace, what a stale OUT.partial-PID is, and the atomic renames that commit an artifact.
#include <functional>
#include <string>
#include <vector>

namespace sf {

// Names of the files an artifact writer creates; nothing else is ever deleted by one.
bool is_artifact_file_name(const std::string& name);

// Empty when `dir` is an existing artifact --force may replace: a real directory (not a symbolic
// link) holding a shardforge manifest.json, and only regular files that manifest lists. Otherwise
// says why not.
std::string why_not_replaceable(const std::string& dir);

// Refuses (Error) when `out` is, or contains, one of `inputs`: replacing it would destroy the source.
void refuse_output_holding_inputs(const std::string& out, const std::vector<std::string>& inputs);

// Looks at OUT.partial-PID siblings: refuses when PID is alive (another conversion is writing OUT);
// removes one whose process is gone when it holds only files a writer creates; reports each on stderr.
void handle_stale_partials(const std::string& out);

// Deletes `dir` when it holds only regular files whose names `allowed` accepts (a flat directory we wrote).
// Returns false, deleting nothing, otherwise.
bool remove_flat_dir(const std::string& dir, const std::function<bool(const std::string&)>& allowed);

// renameat2 wrappers: return 0 or an errno.
int rename_no_replace(const std::string& from, const std::string& to);
int rename_exchange(const std::string& a, const std::string& b);

}  // namespace sf
