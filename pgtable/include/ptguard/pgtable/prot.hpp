// What a mapping grants (permissions, memory type) and the software bits it carries, in the
// engine's terms; the regimes (regime.hpp) turn a Prot into descriptor bits and back.
//
// The software bits (58:55 of a block or page descriptor, and of ptguard's annotations) have
// no meaning to the engine. A user gives them one by declaring fields in a layout:
//
//   using PageState = SwField<0, 2>;        // SW0..SW1: the ownership layer's page state
//   using TlbHint   = SwField<2, 2>;        // SW2..SW3: another user's
//   using Layout    = SwLayout<PageState, TlbHint>;
//
// A layout in which two fields claim the same bit does not compile, and a table declared with a
// layout only accepts the fields of that layout (Table::sw<Field>(value)).
#pragma once

#include <type_traits>

#include "ptguard/arch/bits.hpp"
#include "ptguard/arch/memattr.hpp"

namespace ptguard::pgtable {

/// Access permissions of a mapping.
enum Perm : u8 {
  kPermNone = 0,
  kPermR = 1u << 0,
  kPermW = 1u << 1,
  kPermX = 1u << 2,
  kPermRW = kPermR | kPermW,
  kPermRX = kPermR | kPermX,
  kPermRWX = kPermR | kPermW | kPermX,
};

[[nodiscard]] constexpr Perm operator|(Perm a, Perm b) { return static_cast<Perm>(u8(a) | u8(b)); }

/// Number of software bits (SW0..SW3).
inline constexpr unsigned kSwBits = 4;

/// Protections of a mapping: permissions, memory type and software bits (raw SW0..SW3 value;
/// set them through a layout's fields).
struct Prot {
  Perm perm = kPermNone;
  arch::MemType type = arch::MemType::normal_wb;
  u8 sw = 0;

  [[nodiscard]] constexpr bool readable() const { return perm & kPermR; }
  [[nodiscard]] constexpr bool writable() const { return perm & kPermW; }
  [[nodiscard]] constexpr bool executable() const { return perm & kPermX; }
  [[nodiscard]] constexpr Prot with_sw(u8 v) const { return Prot{perm, type, v}; }
  [[nodiscard]] constexpr Prot with_perm(Perm p) const { return Prot{p, type, sw}; }
  friend constexpr bool operator==(const Prot&, const Prot&) = default;
};

/// `Width` software bits starting at SW`Lo`.
template <unsigned Lo, unsigned Width>
struct SwField {
  static_assert(Width >= 1 && Lo + Width <= kSwBits, "a software-bit field lies within SW0..SW3");
  static constexpr unsigned kLo = Lo;
  static constexpr unsigned kWidth = Width;
  static constexpr u8 kMax = static_cast<u8>((1u << Width) - 1);
  static constexpr u8 kMask = static_cast<u8>(kMax << Lo);
  [[nodiscard]] static constexpr u8 get(u8 sw) { return static_cast<u8>((sw & kMask) >> Lo); }
  [[nodiscard]] static constexpr u8 put(u8 sw, u8 value) {
    return static_cast<u8>((sw & ~kMask) | ((value << Lo) & kMask));
  }
};

namespace detail {
template <typename... Fields>
constexpr bool disjoint() {
  const u8 masks[] = {0, Fields::kMask...};
  u8 seen = 0;
  for (u8 m : masks) {
    if ((seen & m) != 0) return false;
    seen = static_cast<u8>(seen | m);
  }
  return true;
}
template <typename F, typename... Fields>
constexpr bool one_of() {
  return (std::is_same_v<F, Fields> || ...);
}
}  // namespace detail

/// The software-bit fields a table's users have reserved. Two fields claiming one bit is a
/// compile-time error.
template <typename... Fields>
struct SwLayout {
  static_assert(detail::disjoint<Fields...>(),
                "two users claim the same software bit: their SwFields overlap");
  /// The bits some field reserves.
  static constexpr u8 kReserved = static_cast<u8>((0 | ... | Fields::kMask));
  template <typename F>
  static constexpr bool kContains = detail::one_of<F, Fields...>();
};

/// A table whose software bits nobody uses.
using NoSwLayout = SwLayout<>;

}  // namespace ptguard::pgtable
