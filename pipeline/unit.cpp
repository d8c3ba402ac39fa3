#include "pipeline/unit.h"

#include "core/error.h"

namespace sf {

Unit Unit::make(const ModelDesc& desc, UnitKind kind, int64_t index) {
  Unit u;
  u.kind = kind;
  u.index = index;
  for (auto& s : unit_tensors(desc, kind, index)) u.tensors.push_back(UnitTensor{std::move(s), {}, {}, false, false});
  return u;
}

EncodedTensor& UnitTensor::start_encoding(QType type, size_t group) {
  encoded.name = spec.name;
  encoded.type = type;
  encoded.group = group;
  encoded.shape = spec.shape;
  encoded.data.clear();
  return encoded;
}

EncodedUnit Unit::take_encoded() {
  EncodedUnit e;
  e.kind = kind;
  e.index = index;
  for (auto& t : tensors) {
    if (!t.has_encoded) fail("pipeline: tensor " + t.spec.name + " reached the writer unquantized (no quantize stage?)");
    e.tensors.push_back(std::move(t.encoded));
    t.has_encoded = false;
  }
  return e;
}

}  // namespace sf
