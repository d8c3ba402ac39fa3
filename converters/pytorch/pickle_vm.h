#pragma once
// An allow-listed interpreter for pickle protocols 2-5. It builds a tree of plain values; the only
// "calls" it can make are the functions in the AllowList it is given, which build values too.
// Any other global - os.system, builtins.eval, anything - stops the run with an Error naming it.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"

namespace sf::pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

enum class Kind { None, Bool, Int, Float, Str, Bytes, List, Tuple, Dict, Set, Global, Storage, Tensor };

// A torch storage as the persistent id names it: bytes live in the archive entry data/<key>.
struct StorageRef {
  std::string key;
  DType dtype = DType::U8;
  int64_t numel = 0;
};

struct TensorRef {
  std::shared_ptr<StorageRef> storage;
  int64_t offset = 0;
  std::vector<int64_t> shape, strides;
};

struct Value {
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                   // Str, Bytes, Global ("module.name")
  std::vector<ValuePtr> items;                     // List, Tuple, Set
  std::vector<std::pair<ValuePtr, ValuePtr>> dict; // Dict, in insertion order
  std::shared_ptr<StorageRef> storage;
  std::shared_ptr<TensorRef> tensor;

  const Value* get(const std::string& key) const;  // Dict lookup by string key
};

ValuePtr make(Kind k);
ValuePtr make_str(std::string s);
ValuePtr make_int(int64_t v);

using Callable = std::function<ValuePtr(const std::vector<ValuePtr>& args)>;
using PersistentLoad = std::function<ValuePtr(const ValuePtr& pid)>;

struct AllowList {
  std::map<std::string, Callable> callables;  // may be called by REDUCE / NEWOBJ
  std::set<std::string> names;                // may be named (type tags, dtypes), never called
};

// The unpickled tree. A pickle can build containers that hold themselves (a list appended to
// itself) and nestings as deep as the file is long; Tree owns every container and, when it goes,
// empties them one by one, so neither cycles leak nor deep nesting recurses.
class Tree {
 public:
  Tree() = default;
  Tree(Tree&&) = default;
  Tree& operator=(Tree&&) = default;
  ~Tree();
  ValuePtr root;
  std::vector<ValuePtr> containers;
};

// Runs the pickle in data[0, n). `where` prefixes every error ("model.pt: archive/data.pkl").
// Every value, container slot, memo entry and mark is accounted as it is made; a pickle needing
// more than memory_budget bytes stops with an Error before it gets them (a 10-million-deep tuple
// chain is a few megabytes of pickle but gigabytes of values).
inline constexpr uint64_t kDefaultMemoryBudget = uint64_t(1) << 30;
Tree run(const uint8_t* data, size_t n, const AllowList& allow, const PersistentLoad& persistent_load,
         const std::string& where, uint64_t memory_budget = kDefaultMemoryBudget);

}  // namespace sf::pickle
