#include "converters/pytorch/pickle_vm.h"

#include <cstring>

#include "core/error.h"

namespace sf::pickle {

ValuePtr make(Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}
ValuePtr make_str(std::string s) {
  auto v = make(Kind::Str);
  v->s = std::move(s);
  return v;
}
ValuePtr make_int(int64_t x) {
  auto v = make(Kind::Int);
  v->i = x;
  return v;
}

const Value* Value::get(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (const auto& [k, v] : dict)
    if (k->kind == Kind::Str && k->s == key) return v.get();
  return nullptr;
}

Tree::~Tree() {
  for (auto& c : containers) {
    c->items.clear();
    c->dict.clear();
  }
}

namespace {

constexpr size_t kMaxStack = 1 << 20;
constexpr size_t kMaxMemo = 1 << 24;
// What each thing costs, roughly as the allocator sees it (an overestimate is only stricter).
constexpr uint64_t kValueCost = sizeof(Value) + 32;   // the Value and its shared_ptr control block
constexpr uint64_t kSlotCost = sizeof(ValuePtr);      // one item of a list, tuple or set
constexpr uint64_t kPairCost = 2 * sizeof(ValuePtr);  // one dict entry
constexpr uint64_t kMemoCost = 64;                    // a std::map node
constexpr uint64_t kOwnedCost = 64;                   // Tree::containers slot + owned_ set node
constexpr uint64_t kMarkCost = sizeof(size_t);

class Machine {
 public:
  Machine(const uint8_t* d, size_t n, const AllowList& a, const PersistentLoad& pl, const std::string& w,
          uint64_t budget)
      : p_(d), end_(d + n), allow_(a), pload_(pl), where_(w), budget_(budget) {}

  Tree run() {
    for (;;) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: proto_ = byte(); if (proto_ < 2 || proto_ > 5) error("unsupported pickle protocol " + std::to_string(proto_)); break;
        case 0x95: take(8); break;                                 // FRAME: a length hint only
        case '}': push(make(Kind::Dict)); break;
        case ']': push(make(Kind::List)); break;
        case ')': push(make(Kind::Tuple)); break;
        case 0x8f: push(make(Kind::Set)); break;                   // EMPTY_SET
        case '(': charge(kMarkCost); marks_.push_back(stack_.size()); break;
        case 'X': push(make_str(string_of(le(4)))); break;          // BINUNICODE
        case 0x8c: push(make_str(string_of(byte()))); break;        // SHORT_BINUNICODE
        case 0x8d: push(make_str(string_of(le(8)))); break;         // BINUNICODE8
        case 'C': push_bytes(byte()); break;                        // SHORT_BINBYTES
        case 'B': push_bytes(le(4)); break;                         // BINBYTES
        case 0x8e: push_bytes(le(8)); break;                        // BINBYTES8
        case 0x96: push_bytes(le(8)); break;                        // BYTEARRAY8
        case 'J': push(make_int(int32_t(uint32_t(le(4))))); break;  // BININT
        case 'K': push(make_int(byte())); break;                    // BININT1
        case 'M': push(make_int(int64_t(le(2)))); break;            // BININT2
        case 0x8a: push(make_int(long_of(byte()))); break;          // LONG1
        case 0x8b: push(make_int(long_of(le(4)))); break;           // LONG4
        case 'G': push_float(); break;                              // BINFLOAT
        case 'N': push(make(Kind::None)); break;
        case 0x88: case 0x89: { auto v = make(Kind::Bool); v->b = op == 0x88; push(std::move(v)); break; }
        case 't': { auto v = make(Kind::Tuple); v->items = pop_mark(); push(std::move(v)); break; }
        case 0x85: case 0x86: case 0x87: {                          // TUPLE1..3
          const size_t k = op - 0x84u;
          need(k);
          auto v = make(Kind::Tuple);
          v->items.assign(stack_.end() - long(k), stack_.end());
          stack_.resize(stack_.size() - k);
          push(std::move(v));
          break;
        }
        case 'l': { auto v = make(Kind::List); v->items = pop_mark(); push(std::move(v)); break; }
        case 'a': { auto x = pop(); charge(kSlotCost); list_top()->items.push_back(x); break; }
        case 'e': { auto xs = pop_mark(); charge(xs.size() * kSlotCost); auto& l = list_top()->items; l.insert(l.end(), xs.begin(), xs.end()); break; }
        case 0x90: { auto xs = pop_mark(); charge(xs.size() * kSlotCost); auto s = top(); if (s->kind != Kind::Set) error("ADDITEMS on a non-set"); s->items.insert(s->items.end(), xs.begin(), xs.end()); break; }
        case 0x91: { auto v = make(Kind::Set); v->items = pop_mark(); push(std::move(v)); break; }  // FROZENSET
        case 'd': { auto xs = pop_mark(); auto v = make(Kind::Dict); add_pairs(v, xs); push(std::move(v)); break; }
        case 's': { auto val = pop(); auto key = pop(); charge(kPairCost); dict_top()->dict.emplace_back(key, val); break; }
        case 'u': { auto xs = pop_mark(); charge(xs.size() / 2 * kPairCost); add_pairs(dict_top(), xs); break; }
        case 'q': memo_put(byte()); break;                          // BINPUT
        case 'r': memo_put(le(4)); break;                           // LONG_BINPUT
        case 0x94: memo_put(memo_.size()); break;                   // MEMOIZE
        case 'h': push(memo_get(byte())); break;                    // BINGET
        case 'j': push(memo_get(le(4))); break;                     // LONG_BINGET
        case 'c': { std::string m = line(); std::string n = line(); push(global(m, n)); break; }
        case 0x93: {                                                // STACK_GLOBAL
          auto n = pop(), m = pop();
          if (m->kind != Kind::Str || n->kind != Kind::Str) error("STACK_GLOBAL needs two strings");
          push(global(m->s, n->s));
          break;
        }
        case 'R': { auto args = pop(); auto fn = pop(); push(call(fn, args, "REDUCE")); break; }
        case 0x81: { auto args = pop(); auto cls = pop(); push(call(cls, args, "NEWOBJ")); break; }
        case 0x92: {                                                // NEWOBJ_EX
          auto kwargs = pop(); auto args = pop(); auto cls = pop();
          if (kwargs->kind != Kind::Dict || !kwargs->dict.empty()) error("NEWOBJ_EX with keyword arguments is not allowed");
          push(call(cls, args, "NEWOBJ_EX"));
          break;
        }
        case 'b': build(); break;
        case 'Q': { auto pid = pop(); if (!pload_) error("persistent id without a loader"); push(pload_(pid)); break; }
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;
        case '.': {
          if (stack_.size() != 1) error("STOP with " + std::to_string(stack_.size()) + " values on the stack");
          tree_.root = stack_.back();
          return std::move(tree_);
        }
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          error(std::string("unsupported pickle opcode ") + buf + " (only protocols 2-5 without extensions are read)");
        }
      }
    }
  }

 private:
  [[noreturn]] void error(const std::string& what) {
    fail(where_ + ": " + what + " at byte " + std::to_string(pos()));
  }
  size_t pos() const { return size_t(p_ - start_); }
  const uint8_t* take(size_t n) {
    if (size_t(end_ - p_) < n) error("pickle is truncated");
    const uint8_t* q = p_;
    p_ += n;
    return q;
  }
  uint8_t byte() { return *take(1); }
  uint64_t le(size_t n) {
    const uint8_t* q = take(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(q[i]) << (8 * i);
    return v;
  }
  std::string string_of(uint64_t n) {
    if (n > uint64_t(end_ - p_)) error("string runs past the end of the pickle");
    const uint8_t* q = take(size_t(n));
    return std::string(reinterpret_cast<const char*>(q), size_t(n));
  }
  void push_bytes(uint64_t n) {
    auto v = make(Kind::Bytes);
    v->s = string_of(n);
    push(std::move(v));
  }
  int64_t long_of(uint64_t n) {
    if (n > 8) error("integer wider than 64 bits");
    if (n == 0) return 0;
    const uint8_t* q = take(size_t(n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(q[i]) << (8 * i);
    if (n < 8 && (q[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return int64_t(v);
  }
  void push_float() {
    const uint8_t* q = take(8);
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = bits << 8 | q[i];  // big-endian
    auto v = make(Kind::Float);
    std::memcpy(&v->f, &bits, 8);
    push(std::move(v));
  }
  std::string line() {
    const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p_, '\n', size_t(end_ - p_)));
    if (!nl) error("GLOBAL name is not terminated");
    std::string s(reinterpret_cast<const char*>(p_), size_t(nl - p_));
    p_ = nl + 1;
    return s;
  }
  // Accounts n more bytes of memory, refusing the pickle past its budget.
  void charge(uint64_t n) {
    if (n > budget_ - used_)
      error("unpickling needs more than the " + std::to_string(budget_) + " bytes of memory allowed for this file");
    used_ += n;
  }
  void push(ValuePtr v) {
    if (stack_.size() >= kMaxStack) error("pickle stack too deep");
    // Only this argument holds a value that was just made (by an opcode or an allow-listed call):
    // it is accounted once, here. Values pushed again (memo, DUP) are already paid for.
    if (v.use_count() == 1)
      charge(kValueCost + v->s.size() + v->items.size() * kSlotCost + v->dict.size() * kPairCost +
             (v->tensor ? sizeof(TensorRef) + (v->tensor->shape.size() + v->tensor->strides.size()) * 8 : 0));
    const Kind k = v->kind;
    if ((k == Kind::List || k == Kind::Tuple || k == Kind::Dict || k == Kind::Set) && !owned_.count(v.get())) {
      charge(kOwnedCost);
      owned_.insert(v.get());
      tree_.containers.push_back(v);
    }
    stack_.push_back(std::move(v));
  }
  void need(size_t k) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() < floor + k) error("pickle stack underflow");
  }
  ValuePtr pop() {
    need(1);
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  ValuePtr top() {
    need(1);
    return stack_.back();
  }
  std::vector<ValuePtr> pop_mark() {
    if (marks_.empty()) error("pickle MARK missing");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> xs(stack_.begin() + long(m), stack_.end());
    stack_.resize(m);
    return xs;
  }
  ValuePtr list_top() {
    auto l = top();
    if (l->kind != Kind::List) error("APPEND on a non-list");
    return l;
  }
  ValuePtr dict_top() {
    auto d = top();
    if (d->kind != Kind::Dict) error("SETITEM on a non-dict");
    return d;
  }
  void add_pairs(const ValuePtr& d, const std::vector<ValuePtr>& xs) {
    if (xs.size() % 2) error("odd number of items for a dict");
    for (size_t i = 0; i < xs.size(); i += 2) d->dict.emplace_back(xs[i], xs[i + 1]);
  }
  void memo_put(uint64_t idx) {
    if (idx >= kMaxMemo) error("memo index too large");
    charge(kMemoCost);
    memo_[idx] = top();
  }
  ValuePtr memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) error("memo entry " + std::to_string(idx) + " was never stored");
    return it->second;
  }
  ValuePtr global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    if (!allow_.callables.count(full) && !allow_.names.count(full))
      error("pickle names global '" + full + "', which is not on the allow-list; nothing was executed");
    auto v = make(Kind::Global);
    v->s = full;
    return v;
  }
  ValuePtr call(const ValuePtr& fn, const ValuePtr& args, const char* op) {
    if (fn->kind != Kind::Global) error(std::string(op) + " on a value that is not a global");
    auto it = allow_.callables.find(fn->s);
    if (it == allow_.callables.end())
      error(std::string(op) + " calls '" + fn->s + "', which may be named but not called; nothing was executed");
    if (args->kind != Kind::Tuple) error(std::string(op) + " arguments are not a tuple");
    try {
      return it->second(args->items);
    } catch (const Error& e) {
      error(fn->s + ": " + e.message());
    }
  }
  // BUILD sets an object's state. Only plain containers are built here (an OrderedDict carrying
  // torch's _metadata attribute); their state is recorded nowhere, since nothing here needs it.
  void build() {
    auto state = pop();
    auto obj = top();
    const bool empty_state = state->kind == Kind::None || (state->kind == Kind::Dict && state->dict.empty());
    if (obj->kind == Kind::Dict && (state->kind == Kind::Dict || state->kind == Kind::None)) return;
    if (obj->kind == Kind::Tensor && empty_state) return;
    error("BUILD on a value of this kind is not allowed");
  }

  const uint8_t* p_;
  const uint8_t* start_ = p_;
  const uint8_t* end_;
  const AllowList& allow_;
  const PersistentLoad& pload_;
  const std::string& where_;
  int proto_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, ValuePtr> memo_;
  Tree tree_;  // owns every container, also on error (its destructor breaks cycles)
  std::set<const Value*> owned_;
  uint64_t budget_;
  uint64_t used_ = 0;
};

}  // namespace

Tree run(const uint8_t* data, size_t n, const AllowList& allow, const PersistentLoad& persistent_load,
         const std::string& where, uint64_t memory_budget) {
  Machine m(data, n, allow, persistent_load, where, memory_budget);
  return m.run();
}

}  // namespace sf::pickle
