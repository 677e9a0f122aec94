// Typed bit fields of 64-bit architectural values (descriptors, system registers).
//
// Every field of a descriptor or register is declared once as a Field<Hi, Lo> next to the Arm
// ARM section that defines it; code elsewhere reads and writes named fields and never spells a
// shift or a mask. Freestanding: constexpr only, no library beyond <cstdint>.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ptguard {

using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;
using i8 = std::int8_t;
using i64 = std::int64_t;

namespace arch {

/// A contiguous field [Hi:Lo] of a 64-bit value, as the Arm ARM writes it.
template <unsigned Hi, unsigned Lo>
struct Field {
  static_assert(Hi >= Lo && Hi < 64, "a field lies within 64 bits, high bit first");
  static constexpr unsigned kHi = Hi;
  static constexpr unsigned kLo = Lo;
  static constexpr unsigned kWidth = Hi - Lo + 1;
  /// The field's value mask before shifting (kWidth ones).
  static constexpr u64 kMax = kWidth == 64 ? ~u64{0} : (u64{1} << kWidth) - 1;
  /// The field's bits in place.
  static constexpr u64 kMask = kMax << Lo;

  /// The field's value, shifted down.
  [[nodiscard]] static constexpr u64 get(u64 raw) { return (raw & kMask) >> Lo; }
  /// `raw` with the field replaced by `value`; bits of `value` beyond the field are dropped.
  [[nodiscard]] static constexpr u64 put(u64 raw, u64 value) {
    return (raw & ~kMask) | ((value << Lo) & kMask);
  }
  /// The field holding `value`, all other bits zero.
  [[nodiscard]] static constexpr u64 make(u64 value) { return put(0, value); }
  /// Whether `value` can be stored in the field without losing bits.
  [[nodiscard]] static constexpr bool fits(u64 value) { return (value & ~kMax) == 0; }
};

/// A single bit [B].
template <unsigned B>
using Bit = Field<B, B>;

/// Mask of bits [hi:lo] for bounds computed at run time (hi may be 63, lo <= hi + 1; an empty
/// mask when lo == hi + 1).
[[nodiscard]] constexpr u64 bit_range(unsigned hi, unsigned lo) {
  if (lo > hi) return 0;
  const u64 upper = hi >= 63 ? ~u64{0} : (u64{1} << (hi + 1)) - 1;
  return upper & ~((u64{1} << lo) - 1);
}

static_assert(Field<58, 55>::kMask == 0x0780'0000'0000'0000ull);
static_assert(Field<63, 0>::kMask == ~u64{0});
static_assert(Bit<10>::put(0, 1) == 0x400);
static_assert(bit_range(47, 12) == 0x0000'ffff'ffff'f000ull);
static_assert(bit_range(11, 12) == 0);

}  // namespace arch
}  // namespace ptguard
