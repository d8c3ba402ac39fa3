#include "core/mapped_file.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/input_file.h"
#include "core/map_fault.h"

namespace sf {

MappedFile::MappedFile(const std::string& path) : MappedFile(InputFile(path)) {}  // regular files only; never blocks

MappedFile::MappedFile(const InputFile& f) : path_(f.path()) {
  const std::string& path = path_;
  size_ = size_t(f.size());
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, f.fd(), 0);
    if (p == MAP_FAILED) fail_file(path, std::string("cannot map: ") + std::strerror(errno), ErrorKind::IO);
    data_ = static_cast<const uint8_t*>(p);
    fault_slot_ = register_map(data_, size_, path);
  }
}

MappedFile::~MappedFile() {
  unregister_map(fault_slot_);
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace sf
