// Translation regimes as types: each turns a Prot into the attribute bits of a block or page
// descriptor and back, and says which bits may change on a live entry without
// break-before-make. There is no run-time switch on "which stage am I".
//
//   Stage2     IPA -> PA for the host and guests (VTTBR_EL2/VTCR_EL2)
//   Stage1El2  the hypervisor's own VA -> PA, the non-VHE EL2 regime (TTBR0_EL2/TCR_EL2)
#pragma once

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/error.hpp"
#include "ptguard/arch/memattr.hpp"
#include "ptguard/pgtable/prot.hpp"

namespace ptguard::pgtable {

/// Descriptor bits that are neither the output address nor the type bits: everything an
/// attribute encoding may set in a block or page descriptor.
inline constexpr u64 kLeafAttrMask = arch::bit_range(11, 2) | arch::bit_range(63, 50);

struct Stage2 {
  static constexpr int kStage = 2;

  /// Attribute bits for `prot` (AF set; SH inner-shareable; software bits as given).
  /// Errors: EINVAL for executable device or non-cacheable memory (Linux refuses both), or a
  /// software-bit value wider than SW0..SW3.
  [[nodiscard]] static constexpr Result<u64> encode(const Prot& prot, bool fwb) {
    if (prot.executable() && prot.type != arch::MemType::normal_wb) return fail(Error::einval);
    if (prot.sw >= (1u << kSwBits)) return fail(Error::einval);
    u64 attr = 0;
    attr = arch::S2MemAttr::put(attr, arch::s2_memattr(prot.type, fwb));
    attr = arch::S2ApRead::put(attr, prot.readable());
    attr = arch::S2ApWrite::put(attr, prot.writable());
    attr = arch::S2Sh::put(attr, static_cast<u64>(arch::Shareability::inner));
    attr = arch::S2Af::put(attr, 1);
    attr = arch::S2Xn::put(attr, static_cast<u64>(prot.executable() ? arch::S2XnKind::exec
                                                                     : arch::S2XnKind::xn));
    attr = arch::DescSw::put(attr, prot.sw);
    return attr;
  }

  /// The Prot a valid leaf grants. A MemAttr that is none of ours decodes as normal_wb with
  /// `*exact` cleared.
  [[nodiscard]] static constexpr Prot decode(u64 leaf, bool fwb, bool* exact = nullptr) {
    const arch::S2Leaf d(leaf);
    Prot p;
    u8 perm = 0;
    if (d.readable()) perm |= kPermR;
    if (d.writable()) perm |= kPermW;
    if ((arch::S2Xn::get(leaf) & 0b10) == 0) perm |= kPermX;
    p.perm = static_cast<Perm>(perm);
    arch::MemType t = arch::MemType::normal_wb;
    const bool ok = arch::to_mem_type(arch::decode_s2_memattr(d.memattr(), fwb), &t);
    if (exact) *exact = ok;
    p.type = t;
    p.sw = d.sw();
    return p;
  }

  /// Bits that may change on a live leaf without break-before-make: permissions, the access
  /// flag and the software bits. Anything else (output address, memory type, shareability,
  /// block size) is a new translation.
  static constexpr u64 kPermMask = arch::S2Ap::kMask | arch::S2Xn::kMask;
  static constexpr u64 kExecMask = arch::S2Xn::kMask;
  static constexpr u64 kInPlaceMask = kPermMask | arch::S2Af::kMask | arch::DescSw::kMask;

  /// Whether a valid leaf lets EL1 execute from it: XN[1] (bit 54) clear (Arm ARM D8.4.2,
  /// stage 2 XN[1:0]); decode() says the same, this reads one bit for the hot paths.
  [[nodiscard]] static constexpr bool executable(u64 leaf) { return (arch::S2Xn::get(leaf) & 0b10) == 0; }

  /// Whether going from `old_leaf` to `new_leaf` removes a permission (then the TLB must be
  /// invalidated; adding permissions needs no invalidation, the MMU refetches on a fault).
  [[nodiscard]] static constexpr bool reduces_perms(u64 old_leaf, u64 new_leaf) {
    const bool lost_r = arch::S2ApRead::get(old_leaf) && !arch::S2ApRead::get(new_leaf);
    const bool lost_w = arch::S2ApWrite::get(old_leaf) && !arch::S2ApWrite::get(new_leaf);
    const bool lost_x = (arch::S2Xn::get(old_leaf) & 0b10) == 0 && (arch::S2Xn::get(new_leaf) & 0b10) != 0;
    return lost_r || lost_w || lost_x;
  }
};

struct Stage1El2 {
  static constexpr int kStage = 1;

  /// Attribute bits for `prot` (AttrIndx per arch::attr_index, AF set, SH inner-shareable).
  /// Errors: EINVAL without read permission (AP[1] is RES1 at EL2: a valid mapping is always
  /// readable, so "no read" cannot be encoded), for write together with execute, for execute
  /// with device memory, or a software-bit value wider than SW0..SW3.
  [[nodiscard]] static constexpr Result<u64> encode(const Prot& prot, bool /*fwb*/ = false) {
    if (!prot.readable()) return fail(Error::einval);
    if (prot.writable() && prot.executable()) return fail(Error::einval);
    if (prot.executable() && arch::is_device(prot.type)) return fail(Error::einval);
    if (prot.sw >= (1u << kSwBits)) return fail(Error::einval);
    u64 attr = 0;
    attr = arch::S1AttrIndx::put(attr, arch::attr_index(prot.type));
    attr = arch::S1Ap::put(attr, static_cast<u64>(prot.writable() ? arch::S1ApEl2::rw : arch::S1ApEl2::ro));
    attr = arch::S1Sh::put(attr, static_cast<u64>(arch::Shareability::inner));
    attr = arch::S1Af::put(attr, 1);
    attr = arch::S1Xn::put(attr, !prot.executable());
    attr = arch::DescSw::put(attr, prot.sw);
    return attr;
  }

  /// The Prot a valid leaf grants, under the library's MAIR_EL2.
  [[nodiscard]] static constexpr Prot decode(u64 leaf, bool /*fwb*/ = false, bool* exact = nullptr) {
    const arch::S1Leaf d(leaf);
    Prot p;
    u8 perm = kPermR;
    if (d.writable()) perm |= kPermW;
    if (!d.xn()) perm |= kPermX;
    p.perm = static_cast<Perm>(perm);
    arch::MemType t = arch::MemType::normal_wb;
    const bool ok = arch::to_mem_type(arch::decode_mair_attr(arch::mair_attr(arch::kMairEl2, d.attr_index())), &t);
    if (exact) *exact = ok;
    p.type = t;
    p.sw = d.sw();
    return p;
  }

  /// At EL2 only the software bits may change on a live mapping (Linux refuses the rest).
  static constexpr u64 kPermMask = arch::S1Ap::kMask | arch::S1Xn::kMask;
  static constexpr u64 kExecMask = arch::S1Xn::kMask;
  static constexpr u64 kInPlaceMask = arch::DescSw::kMask;

  /// Whether a valid leaf lets EL2 execute from it: XN (bit 54) clear (Arm ARM D8.4.2).
  [[nodiscard]] static constexpr bool executable(u64 leaf) { return !arch::S1Leaf(leaf).xn(); }

  [[nodiscard]] static constexpr bool reduces_perms(u64 old_leaf, u64 new_leaf) {
    const bool lost_w = arch::S1Leaf(old_leaf).writable() && !arch::S1Leaf(new_leaf).writable();
    const bool lost_x = !arch::S1Leaf(old_leaf).xn() && arch::S1Leaf(new_leaf).xn();
    return lost_w || lost_x;
  }
};

}  // namespace ptguard::pgtable
