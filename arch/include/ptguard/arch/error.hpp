// The one error type of the whole library, and the result type every operation returns.
//
// The errors are the kernel's errno names, with the kernel's numbers, so that a hypervisor
// developer recognises them and an EL2 hypercall handler can return `-code(e)` in x0 exactly as
// pKVM does. They are spelled in lower case in code (`Error::eperm`) because <cerrno> defines
// EPERM and friends as macros in every hosted program, which would rewrite an enumerator of the
// same name; `name()` gives the upper-case spelling that the tool prints.
//
// Freestanding: std::expected is usable without exceptions as long as nobody calls value()
// (which throws); use has_value(), operator* and error(). The freestanding link check in
// `make test` fails if value() slips into a freestanding layer.
#pragma once

#include <expected>

#include "ptguard/arch/bits.hpp"

namespace ptguard {

/// Every failure the library reports. The meaning of each is documented at the operation that
/// returns it; the list below gives the general sense.
enum class Error : u8 {
  eperm = 1,         ///< EPERM: not permitted in the current state (a wrong ownership state).
  enoent = 2,        ///< ENOENT: nothing there (no mapping to change or to unshare).
  eagain = 11,       ///< EAGAIN: someone else got there first; try again.
  enomem = 12,       ///< ENOMEM: out of table pages (memcache or allocator empty).
  ebusy = 16,        ///< EBUSY: the page is in use (pinned, or a counter is saturated).
  eexist = 17,       ///< EEXIST: a different mapping is already there.
  einval = 22,       ///< EINVAL: invalid argument (alignment, range, combination).
  erange = 34,       ///< ERANGE: an address beyond the configured input or output size.
  e2big = 7,         ///< E2BIG: a range larger than the mapping it must match.
  eopnotsupp = 95,   ///< EOPNOTSUPP: the CPU lacks a feature the request needs.
  ehwpoison = 133,    ///< EHWPOISON: the page was poisoned (taken back from a live guest).
};

/// The upper-case errno spelling ("EPERM"), as the kernel and the tool write it.
[[nodiscard]] constexpr const char* name(Error e) {
  switch (e) {
    case Error::eperm: return "EPERM";
    case Error::enoent: return "ENOENT";
    case Error::eagain: return "EAGAIN";
    case Error::enomem: return "ENOMEM";
    case Error::ebusy: return "EBUSY";
    case Error::eexist: return "EEXIST";
    case Error::einval: return "EINVAL";
    case Error::erange: return "ERANGE";
    case Error::e2big: return "E2BIG";
    case Error::eopnotsupp: return "EOPNOTSUPP";
    case Error::ehwpoison: return "EHWPOISON";
  }
  return "E?";
}

/// The kernel's positive errno number (the enumerators carry arm64 Linux's numbers).
[[nodiscard]] constexpr int code(Error e) { return static_cast<int>(e); }

/// The result of an operation that produces a T or fails with an Error.
template <typename T>
using Result = std::expected<T, Error>;

/// The result of an operation that produces nothing but may fail.
using Status = std::expected<void, Error>;

/// Shorthand for returning a failure: `return fail(Error::einval);`
[[nodiscard]] constexpr std::unexpected<Error> fail(Error e) { return std::unexpected<Error>(e); }

}  // namespace ptguard
