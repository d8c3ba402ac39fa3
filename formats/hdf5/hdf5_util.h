#pragma once
// Small helpers over HDF5's C API shared by the HDF5 writer and reader: identifiers closed by RAII,
// the library's own error printing silenced (every failure becomes one sf::Error line naming the
// file, with the innermost message of HDF5's error stack), the element types the layout uses, and
// string / integer attributes. HDF5 is Debian's libhdf5 (1.10, serial).
#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sf::h5 {

// An HDF5 identifier and the function that closes it.
class Id {
 public:
  Id() = default;
  Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Id() { reset(); }
  Id(Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = H5I_INVALID_HID; }
  Id& operator=(Id&& o) noexcept {
    if (this != &o) reset(), id_ = o.id_, close_ = o.close_, o.id_ = H5I_INVALID_HID;
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  // Closes now and reports whether the close succeeded (a file's close writes its metadata).
  bool close() {
    const bool ok = id_ < 0 || close_(id_) >= 0;
    id_ = H5I_INVALID_HID;
    return ok;
  }

 private:
  void reset() {
    if (id_ >= 0) close_(id_);
    id_ = H5I_INVALID_HID;
  }
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*close_)(hid_t) = nullptr;
};

// Turns HDF5's automatic error printing off, once per process: its multi-line stack would break the
// one-line rule. Called before any other HDF5 call of this program.
void silence_library();
// The innermost description on HDF5's error stack ("truncated file: eof = ..."), made printable, or
// "" when the stack is empty. Clears the stack.
std::string library_error();

// Throws Error naming `path`: "what (HDF5: innermost message)".
[[noreturn]] void fail_h5(const std::string& path, const std::string& what);
// The id when valid, else fail_h5.
Id check(hid_t id, herr_t (*close)(hid_t), const std::string& path, const std::string& what);
void check(herr_t status, const std::string& path, const std::string& what);

// Element types of the datasets, little-endian. f16 is IEEE binary16 in the layout h5py reads as
// numpy float16; bf16 is stored as uint16 (HDF5 has no bfloat16), its attribute "type" says so.
enum class Elem : uint8_t { F32, F16, U16, I8, U8, I32 };
size_t elem_size(Elem e);
Id elem_type(Elem e);  // a new type id (a copy: closing it is always right)

// Attributes. Strings are fixed-length UTF-8 (no NUL inside), which h5py reads as bytes.
void put_string(hid_t obj, const char* name, const std::string& value, const std::string& path);
void put_int(hid_t obj, const char* name, int64_t value, const std::string& path);
void put_ints(hid_t obj, const char* name, const std::vector<int64_t>& values, const std::string& path);
// Readers: nullopt when the attribute is absent; Error when it exists with another type or shape,
// or is longer than max_bytes (checked before anything is allocated).
std::optional<std::string> get_string(hid_t obj, const char* name, const std::string& path, size_t max_bytes);
std::optional<int64_t> get_int(hid_t obj, const char* name, const std::string& path);
std::optional<std::vector<int64_t>> get_ints(hid_t obj, const char* name, const std::string& path, size_t max_count);

}  // namespace sf::h5
