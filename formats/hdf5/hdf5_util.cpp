#include "formats/hdf5/hdf5_util.h"

#include <mutex>

#include "core/error.h"
#include "core/messages.h"

namespace sf::h5 {

void silence_library() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

namespace {

herr_t take_innermost(unsigned n, const H5E_error2_t* e, void* out) {
  if (n == 0 && e && e->desc) *static_cast<std::string*>(out) = e->desc;
  return 0;
}

}  // namespace

std::string library_error() {
  std::string innermost;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_innermost, &innermost);
  H5Eclear2(H5E_DEFAULT);
  return printable(innermost);
}

void fail_h5(const std::string& path, const std::string& what) {
  const std::string why = library_error();
  fail_file(path, why.empty() ? what : what + " (HDF5: " + why + ")");
}

Id check(hid_t id, herr_t (*close)(hid_t), const std::string& path, const std::string& what) {
  if (id < 0) fail_h5(path, what);
  return Id(id, close);
}

void check(herr_t status, const std::string& path, const std::string& what) {
  if (status < 0) fail_h5(path, what);
}

size_t elem_size(Elem e) {
  switch (e) {
    case Elem::F32: case Elem::I32: return 4;
    case Elem::F16: case Elem::U16: return 2;
    case Elem::I8: case Elem::U8: return 1;
  }
  return 1;
}

Id elem_type(Elem e) {
  switch (e) {
    case Elem::F32: return Id(H5Tcopy(H5T_IEEE_F32LE), H5Tclose);
    case Elem::U16: return Id(H5Tcopy(H5T_STD_U16LE), H5Tclose);
    case Elem::I8: return Id(H5Tcopy(H5T_STD_I8LE), H5Tclose);
    case Elem::U8: return Id(H5Tcopy(H5T_STD_U8LE), H5Tclose);
    case Elem::I32: return Id(H5Tcopy(H5T_STD_I32LE), H5Tclose);
    case Elem::F16: {
      // binary16 from a copy of binary32: sign bit 15, exponent bits 10-14 (bias 15), mantissa 0-9.
      Id t(H5Tcopy(H5T_IEEE_F32LE), H5Tclose);
      H5Tset_fields(t, 15, 10, 5, 0, 10);
      H5Tset_precision(t, 16);
      H5Tset_size(t, 2);
      H5Tset_ebias(t, 15);
      return t;
    }
  }
  return Id();
}

namespace {

Id string_type(size_t size) {
  Id t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t, size);
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

void put(hid_t obj, const char* name, hid_t type, hid_t space, const void* data, const std::string& path) {
  Id a = check(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, path,
               std::string("cannot create attribute ") + name);
  check(H5Awrite(a, type, data), path, std::string("cannot write attribute ") + name);
}

// "cannot read attribute NAME of /blocks/000/blocks.0.attn.q.weight": where the object was opened.
std::string label(hid_t obj, const char* name, const char* what) {
  char buf[512] = {};
  const ssize_t n = H5Iget_name(obj, buf, sizeof buf);
  return std::string(what) + " attribute " + name + (n > 0 ? " of " + printable(buf) : std::string());
}

// The attribute `name` opened, or an invalid Id when absent.
Id open_attr(hid_t obj, const char* name, const std::string& path) {
  const htri_t exists = H5Aexists(obj, name);
  if (exists < 0) fail_h5(path, label(obj, name, "cannot look for"));
  if (exists == 0) return Id();
  return check(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose, path, label(obj, name, "cannot open"));
}

// Number of elements of a scalar (1) or one-dimensional attribute; Error for anything else.
hsize_t attr_count(hid_t attr, const char* name, const std::string& path, bool scalar) {
  Id space = check(H5Aget_space(attr), H5Sclose, path, std::string("attribute ") + name + " has no dataspace");
  const H5S_class_t cls = H5Sget_simple_extent_type(space);
  if (scalar) {
    if (cls != H5S_SCALAR) fail_file(path, label(attr, name, "the") + " is not a single value");
    return 1;
  }
  hsize_t dims[1] = {0};
  if (cls != H5S_SIMPLE || H5Sget_simple_extent_ndims(space) != 1 || H5Sget_simple_extent_dims(space, dims, nullptr) != 1)
    fail_file(path, label(attr, name, "the") + " is not a list");
  return dims[0];
}

}  // namespace

void put_string(hid_t obj, const char* name, const std::string& value, const std::string& path) {
  Id t = string_type(std::max<size_t>(1, value.size()));
  Id space(H5Screate(H5S_SCALAR), H5Sclose);
  std::string padded = value;
  padded.resize(std::max<size_t>(1, value.size()), '\0');
  put(obj, name, t, space, padded.data(), path);
}

void put_int(hid_t obj, const char* name, int64_t value, const std::string& path) {
  Id space(H5Screate(H5S_SCALAR), H5Sclose);
  Id t(H5Tcopy(H5T_STD_I64LE), H5Tclose);
  put(obj, name, t, space, &value, path);
}

void put_ints(hid_t obj, const char* name, const std::vector<int64_t>& values, const std::string& path) {
  const hsize_t n = values.size();
  Id space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Id t(H5Tcopy(H5T_STD_I64LE), H5Tclose);
  put(obj, name, t, space, values.data(), path);
}

std::optional<std::string> get_string(hid_t obj, const char* name, const std::string& path, size_t max_bytes) {
  Id a = open_attr(obj, name, path);
  if (a.get() < 0) return std::nullopt;
  attr_count(a, name, path, true);
  Id t = check(H5Aget_type(a), H5Tclose, path, std::string("attribute ") + name + " has no type");
  if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) != 0)
    fail_file(path, label(obj, name, "the") + " is not a fixed-length string");
  const size_t size = H5Tget_size(t);
  if (size == 0 || size > max_bytes)
    fail_file(path, label(obj, name, "the") + " is " + std::to_string(size) + " bytes (at most " +
                        std::to_string(max_bytes) + ")");
  std::string s(size, '\0');
  // Read as stored (ASCII or UTF-8, any padding): no conversion path is needed.
  check(H5Aread(a, t, s.data()), path, label(obj, name, "cannot read"));
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

std::optional<int64_t> get_int(hid_t obj, const char* name, const std::string& path) {
  Id a = open_attr(obj, name, path);
  if (a.get() < 0) return std::nullopt;
  attr_count(a, name, path, true);
  Id t = check(H5Aget_type(a), H5Tclose, path, std::string("attribute ") + name + " has no type");
  if (H5Tget_class(t) != H5T_INTEGER) fail_file(path, label(obj, name, "the") + " is not an integer");
  int64_t v = 0;
  check(H5Aread(a, H5T_NATIVE_INT64, &v), path, label(obj, name, "cannot read"));
  return v;
}

std::optional<std::vector<int64_t>> get_ints(hid_t obj, const char* name, const std::string& path, size_t max_count) {
  Id a = open_attr(obj, name, path);
  if (a.get() < 0) return std::nullopt;
  const hsize_t n = attr_count(a, name, path, false);
  Id t = check(H5Aget_type(a), H5Tclose, path, std::string("attribute ") + name + " has no type");
  if (H5Tget_class(t) != H5T_INTEGER) fail_file(path, label(obj, name, "the") + " is not a list of integers");
  if (n > max_count) fail_file(path, label(obj, name, "the") + " has " + std::to_string(n) + " values");
  std::vector<int64_t> v(static_cast<size_t>(n));
  if (n) check(H5Aread(a, H5T_NATIVE_INT64, v.data()), path, label(obj, name, "cannot read"));
  return v;
}

}  // namespace sf::h5
