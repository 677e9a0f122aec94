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
/// attribute encoding may set in a block or page descriptor. With FEAT_LPA2's DS = 1, bits [9:8]
/// among them are OA[51:50] instead (Arm ARM D8.3.1): the table masks them out (arch::OaFormat).
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

  /// The Prot a valid leaf grants. kPermX for XN[1:0] = 0b00 only (executable at EL1 and EL0,
  /// what encode() writes for kPermX). A MemAttr that is none of ours decodes as normal_wb, and
  /// an XN of FEAT_XNX's one-level encodings (0b01: EL0 only; 0b11: EL1 only) without kPermX,
  /// with `*exact` cleared.
  [[nodiscard]] static constexpr Prot decode(u64 leaf, bool fwb, bool* exact = nullptr) {
    const arch::S2Leaf d(leaf);
    Prot p;
    u8 perm = 0;
    if (d.readable()) perm |= kPermR;
    if (d.writable()) perm |= kPermW;
    const u64 xn = arch::S2Xn::get(leaf);
    if (xn == static_cast<u64>(arch::S2XnKind::exec)) perm |= kPermX;
    const bool xn_ours = xn == static_cast<u64>(arch::S2XnKind::exec) || xn == static_cast<u64>(arch::S2XnKind::xn);
    p.perm = static_cast<Perm>(perm);
    arch::MemType t = arch::MemType::normal_wb;
    const bool ok = arch::to_mem_type(arch::decode_s2_memattr(d.memattr(), fwb), &t);
    if (exact) *exact = ok && xn_ours;
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

  /// Whether a valid leaf lets EL1 / EL0 execute from it, XN[1:0] read as FEAT_XNX defines it
  /// (Arm ARM D8.4.2, stage 2 XN[1:0]: 00 both, 01 EL0 only, 10 neither, 11 EL1 only). Without
  /// FEAT_XNX bit 53 is RES0 and the engine never sets it, so both read bit 54 alone then.
  [[nodiscard]] static constexpr bool executable_el1(u64 leaf) { return arch::s2_exec_el1(arch::S2Xn::get(leaf)); }
  [[nodiscard]] static constexpr bool executable_el0(u64 leaf) { return arch::s2_exec_el0(arch::S2Xn::get(leaf)); }
  /// Whether some Exception level may execute from the leaf (XN[1:0] != 0b10).
  [[nodiscard]] static constexpr bool executable(u64 leaf) { return executable_el1(leaf) || executable_el0(leaf); }

  /// Whether going from `old_leaf` to `new_leaf` lets an Exception level execute that could not
  /// before (then the instruction cache is invalidated for it, unless CTR_EL0.DIC). Per level:
  /// 0b11 -> 0b00 gains EL0 even though EL1 could already execute.
  [[nodiscard]] static constexpr bool gains_exec(u64 old_leaf, u64 new_leaf) {
    return (!executable_el1(old_leaf) && executable_el1(new_leaf)) ||
           (!executable_el0(old_leaf) && executable_el0(new_leaf));
  }

  /// Whether going from `old_leaf` to `new_leaf` removes a permission (then the TLB must be
  /// invalidated; adding permissions needs no invalidation, the MMU refetches on a fault).
  /// Execution is judged per Exception level: a value that forbids it at a level where the old
  /// one allowed it reduces, whatever the other level gains (0b11 -> 0b01 takes EL1's away).
  [[nodiscard]] static constexpr bool reduces_perms(u64 old_leaf, u64 new_leaf) {
    const bool lost_r = arch::S2ApRead::get(old_leaf) && !arch::S2ApRead::get(new_leaf);
    const bool lost_w = arch::S2ApWrite::get(old_leaf) && !arch::S2ApWrite::get(new_leaf);
    const bool lost_x = (executable_el1(old_leaf) && !executable_el1(new_leaf)) ||
                        (executable_el0(old_leaf) && !executable_el0(new_leaf));
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
  [[nodiscard]] static constexpr bool gains_exec(u64 old_leaf, u64 new_leaf) {
    return !executable(old_leaf) && executable(new_leaf);
  }

  [[nodiscard]] static constexpr bool reduces_perms(u64 old_leaf, u64 new_leaf) {
    const bool lost_w = arch::S1Leaf(old_leaf).writable() && !arch::S1Leaf(new_leaf).writable();
    const bool lost_x = !arch::S1Leaf(old_leaf).xn() && arch::S1Leaf(new_leaf).xn();
    return lost_w || lost_x;
  }
};

}  // namespace ptguard::pgtable
