// Memory types and their encodings: MAIR_EL2 attribute bytes for stage 1 (DDI 0487K.a D8.6.1,
// and the MAIR_EL2 register description), and the stage-2 MemAttr field with and without
// FEAT_S2FWB (D8.6.5 "Stage 2 memory type and Cacheability attributes when FEAT_S2FWB is
// disabled" / "... enabled").
#pragma once

#include "ptguard/arch/bits.hpp"
#include "ptguard/arch/descriptor.hpp"

namespace ptguard::arch {

/// The memory types the library maps.
enum class MemType : u8 {
  normal_wb,      ///< Normal, inner and outer write-back (read/write-allocate)
  normal_nc,      ///< Normal, inner and outer non-cacheable
  device_ngnre,   ///< Device-nGnRE (MMIO)
  device_ngnrne,  ///< Device-nGnRnE (strongly ordered MMIO)
};

[[nodiscard]] constexpr bool is_device(MemType t) {
  return t == MemType::device_ngnre || t == MemType::device_ngnrne;
}
/// Whether the data cache holds lines of this type (so mapping it may need cache maintenance).
[[nodiscard]] constexpr bool is_cacheable(MemType t) { return t == MemType::normal_wb; }

// ---------------------------------------------------------------------------------------------
// Decoded attributes, as the reference MMU and the tool report them.
// ---------------------------------------------------------------------------------------------
enum class Cacheability : u8 { non_cacheable, write_through, write_back };
enum class DeviceKind : u8 { ngnrne = 0b00, ngnre = 0b01, ngre = 0b10, gre = 0b11 };

struct MemAttrs {
  bool device = false;                          ///< Device memory (else Normal)
  DeviceKind device_kind = DeviceKind::ngnrne;  ///< meaningful when device
  Cacheability inner = Cacheability::non_cacheable;
  Cacheability outer = Cacheability::non_cacheable;
  bool from_stage1 = false;  ///< FWB 0b111: the stage-1 attributes pass through unchanged
  bool reserved = false;     ///< a reserved or UNPREDICTABLE encoding

  friend constexpr bool operator==(const MemAttrs&, const MemAttrs&) = default;
};

/// The MemType the attributes describe, if they describe one of ours exactly.
[[nodiscard]] constexpr bool to_mem_type(const MemAttrs& a, MemType* out) {
  if (a.reserved || a.from_stage1) return false;
  if (a.device) {
    if (a.device_kind == DeviceKind::ngnre) { *out = MemType::device_ngnre; return true; }
    if (a.device_kind == DeviceKind::ngnrne) { *out = MemType::device_ngnrne; return true; }
    return false;
  }
  if (a.inner == Cacheability::write_back && a.outer == Cacheability::write_back) {
    *out = MemType::normal_wb;
    return true;
  }
  if (a.inner == Cacheability::non_cacheable && a.outer == Cacheability::non_cacheable) {
    *out = MemType::normal_nc;
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Stage 1: MAIR_EL2 (Attr<n> is bits [8n+7:8n]).
// ---------------------------------------------------------------------------------------------

/// MAIR attribute bytes: 0b0000dd00 Device (dd = DeviceKind); 0booooiiii Normal with outer
/// oooo and inner iiii: 0b0100 non-cacheable, 0b11RW write-back non-transient, 0b10RW
/// write-through non-transient.
inline constexpr u8 kMairNormalWb = 0xff;     ///< Normal, WB RW-allocate, inner and outer
inline constexpr u8 kMairNormalNc = 0x44;     ///< Normal, non-cacheable, inner and outer
inline constexpr u8 kMairDeviceNgnre = 0x04;  ///< Device-nGnRE
inline constexpr u8 kMairDeviceNgnrne = 0x00; ///< Device-nGnRnE

/// The AttrIndx the library uses for each memory type; MAIR_EL2 holds the matching byte.
[[nodiscard]] constexpr u8 attr_index(MemType t) {
  switch (t) {
    case MemType::normal_wb: return 0;
    case MemType::normal_nc: return 1;
    case MemType::device_ngnre: return 2;
    case MemType::device_ngnrne: return 3;
  }
  return 0;
}

/// MAIR_EL2 value with the library's memory types at their attr_index() slots.
inline constexpr u64 kMairEl2 = u64{kMairNormalWb} << (8 * 0) | u64{kMairNormalNc} << (8 * 1) |
                                u64{kMairDeviceNgnre} << (8 * 2) |
                                u64{kMairDeviceNgnrne} << (8 * 3);

/// The attribute byte for AttrIndx `index` in a MAIR value.
[[nodiscard]] constexpr u8 mair_attr(u64 mair, unsigned index) {
  return static_cast<u8>(mair >> (8 * (index & 7)));
}

[[nodiscard]] constexpr Cacheability mair_nibble_cacheability(u8 nibble, bool* reserved) {
  switch (nibble >> 2) {
    case 0b01:
      if (nibble == 0b0100) return Cacheability::non_cacheable;
      return Cacheability::write_back;  // 0b01RW (RW != 00): write-back transient
    case 0b00: return Cacheability::write_through;  // 0b00RW (RW != 00): write-through transient
    case 0b10: return Cacheability::write_through;
    case 0b11: return Cacheability::write_back;
  }
  *reserved = true;
  return Cacheability::non_cacheable;
}

/// Decodes a MAIR attribute byte.
[[nodiscard]] constexpr MemAttrs decode_mair_attr(u8 attr) {
  MemAttrs a;
  const u8 outer = attr >> 4, inner = attr & 0xf;
  if (outer == 0) {
    a.device = true;
    a.device_kind = static_cast<DeviceKind>((inner >> 2) & 3);
    a.reserved = (inner & 0b11) != 0;  // 0b0000ddxx with xx != 00 is UNPREDICTABLE
    return a;
  }
  if (inner == 0) {  // 0bxxxx0000 with xxxx != 0: UNPREDICTABLE (0xf0 is FEAT_MTE tagged)
    a.reserved = true;
    return a;
  }
  a.outer = mair_nibble_cacheability(outer, &a.reserved);
  a.inner = mair_nibble_cacheability(inner, &a.reserved);
  return a;
}

// ---------------------------------------------------------------------------------------------
// Stage 2: the MemAttr field, bits [5:2] of a block or page descriptor.
// ---------------------------------------------------------------------------------------------

/// MemAttr without FWB: [3:2] outer (00 Device, 01 NC, 10 WT, 11 WB); [1:0] inner for Normal
/// (01 NC, 10 WT, 11 WB; 00 reserved), or the Device kind when [3:2] = 00.
/// MemAttr with FWB: bit 5 (MemAttr[3]) is RES0; MemAttr[2] = 0: Device, [1:0] its kind;
/// MemAttr[2] = 1: [1:0] = 01 Normal NC, 10 Normal WB, 11 the stage-1 attributes, 00 reserved.
[[nodiscard]] constexpr u8 s2_memattr(MemType t, bool fwb) {
  if (fwb) {
    switch (t) {
      case MemType::normal_wb: return 0b0110;
      case MemType::normal_nc: return 0b0101;
      case MemType::device_ngnre: return 0b0001;
      case MemType::device_ngnrne: return 0b0000;
    }
  }
  switch (t) {
    case MemType::normal_wb: return 0b1111;
    case MemType::normal_nc: return 0b0101;
    case MemType::device_ngnre: return 0b0001;
    case MemType::device_ngnrne: return 0b0000;
  }
  return 0;
}

[[nodiscard]] constexpr Cacheability s2_cacheability(u8 two_bits) {
  return two_bits == 0b11 ? Cacheability::write_back
         : two_bits == 0b10 ? Cacheability::write_through
                            : Cacheability::non_cacheable;
}

/// Decodes a stage-2 MemAttr field (4 bits) for HCR_EL2.FWB = `fwb`.
[[nodiscard]] constexpr MemAttrs decode_s2_memattr(u8 memattr, bool fwb) {
  MemAttrs a;
  if (fwb) {
    a.reserved = (memattr & 0b1000) != 0;  // bit 5 is RES0 under FWB
    if ((memattr & 0b100) == 0) {
      a.device = true;
      a.device_kind = static_cast<DeviceKind>(memattr & 0b11);
      return a;
    }
    switch (memattr & 0b11) {
      case 0b01: a.inner = a.outer = Cacheability::non_cacheable; break;
      case 0b10: a.inner = a.outer = Cacheability::write_back; break;
      case 0b11: a.from_stage1 = true; break;
      default: a.reserved = true; break;
    }
    return a;
  }
  const u8 outer = memattr >> 2, inner = memattr & 0b11;
  if (outer == 0) {
    a.device = true;
    a.device_kind = static_cast<DeviceKind>(inner);
    return a;
  }
  if (inner == 0) a.reserved = true;
  a.outer = s2_cacheability(outer);
  a.inner = s2_cacheability(inner);
  return a;
}

static_assert(kMairEl2 == 0x0004'44ffull);
static_assert(decode_mair_attr(kMairNormalWb).inner == Cacheability::write_back);
static_assert(decode_mair_attr(kMairDeviceNgnre).device);
static_assert(decode_s2_memattr(s2_memattr(MemType::normal_wb, false), false).outer ==
              Cacheability::write_back);
static_assert(decode_s2_memattr(s2_memattr(MemType::normal_wb, true), true).inner ==
              Cacheability::write_back);
static_assert(decode_s2_memattr(s2_memattr(MemType::device_ngnre, true), true).device_kind ==
              DeviceKind::ngnre);

// A stage-2 4 KiB page at 0x8000_0000, read-write, normal write-back, inner-shareable, AF set:
// valid|page 0b11, MemAttr 0b1111 (bits 5:2 = 0x3c), S2AP 0b11 (0xc0), SH 0b11 (0x300), AF
// (0x400). With FEAT_S2FWB the MemAttr is 0b0110 (0x18) instead.
static_assert(S2Leaf::page<Granule::k4K>(0x8000'0000)
                  .with_memattr(s2_memattr(MemType::normal_wb, false))
                  .with_read(true)
                  .with_write(true)
                  .with_sh(Shareability::inner)
                  .with_af(true)
                  .raw() == 0x8000'07ffull);
static_assert(S2Leaf::page<Granule::k4K>(0x8000'0000)
                  .with_memattr(s2_memattr(MemType::normal_wb, true))
                  .with_read(true)
                  .with_write(true)
                  .with_sh(Shareability::inner)
                  .with_af(true)
                  .raw() == 0x8000'07dbull);

}  // namespace ptguard::arch
