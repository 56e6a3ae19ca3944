// Memory the core is about to need, checked before it is allocated. A computation whose
// working set cannot fit is refused with its estimate (OutOfMemory, a std::bad_alloc the
// binding turns into MemoryError), instead of being killed by the kernel part-way through;
// an allocation the system refuses anyway is reported with what it was for and its size.
#pragma once

#include <cstddef>
#include <new>
#include <string>

namespace fastsas {

class OutOfMemory : public std::bad_alloc {
 public:
  explicit OutOfMemory(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// "1.3 GiB", "512 MiB": sizes in messages.
std::string format_bytes(double bytes);

// Bytes this process may still allocate: the system's MemAvailable (Linux; unknown elsewhere)
// or the limit given to set_memory_limit, whichever is smaller. A negative value: unknown.
double available_memory();

// A cap on available_memory() (bytes; 0 removes it). Makes refusals deterministic in tests,
// and lets a user keep fastsas inside a share of a machine.
void set_memory_limit(double bytes);
double memory_limit();

// Whether `bytes` more can be allocated now (always true when the available memory is unknown
// or the request is small enough not to be worth a look).
bool memory_fits(double bytes);

// Throws OutOfMemory when `bytes` more cannot be allocated now. `what` says what needs it
// ("the second moments of Moments(dim=14000)"); `fix` what the user can do about it.
void require_memory(const std::string& what, double bytes, const std::string& fix);

// Runs `allocate` and reports a refused allocation as OutOfMemory naming `what` and `bytes`.
template <class F>
auto allocating(const std::string& what, double bytes, F&& allocate) -> decltype(allocate()) {
  try {
    return allocate();
  } catch (const OutOfMemory&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw OutOfMemory("fastsas: the system refused " + format_bytes(bytes) + " for " + what +
                      " (out of memory)");
  }
}

}  // namespace fastsas
