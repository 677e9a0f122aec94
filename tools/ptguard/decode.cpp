#include "decode.hpp"

#include <fmt/format.h>

#include "ptguard/arch/memattr.hpp"
#include "ptguard/ownership/state.hpp"

namespace ptguard::tools {

using namespace arch;

const char* granule_name(Granule g) {
  switch (g) {
    case Granule::k4K: return "4K";
    case Granule::k16K: return "16K";
    case Granule::k64K: return "64K";
  }
  return "?";
}

const char* kind_name(DescKind k) {
  switch (k) {
    case DescKind::invalid: return "invalid";
    case DescKind::table: return "table";
    case DescKind::block: return "block";
    case DescKind::page: return "page";
    case DescKind::reserved: return "reserved";
  }
  return "?";
}

namespace {

const char* cache_name(Cacheability c) {
  switch (c) {
    case Cacheability::non_cacheable: return "NC";
    case Cacheability::write_through: return "WT";
    case Cacheability::write_back: return "WB";
  }
  return "?";
}

const char* device_name(DeviceKind d) {
  switch (d) {
    case DeviceKind::ngnrne: return "Device-nGnRnE";
    case DeviceKind::ngnre: return "Device-nGnRE";
    case DeviceKind::ngre: return "Device-nGRE";
    case DeviceKind::gre: return "Device-GRE";
  }
  return "?";
}

const char* sh_name(u64 sh) {
  switch (sh) {
    case 0b00: return "non-shareable";
    case 0b01: return "reserved";
    case 0b10: return "outer shareable";
    default: return "inner shareable";
  }
}

template <typename F>
DecodedField field(const char* name, u64 raw, std::string meaning = {}) {
  const std::string bits = F::kHi == F::kLo ? fmt::format("{}", F::kHi) : fmt::format("{}:{}", F::kHi, F::kLo);
  return DecodedField{name, bits, F::get(raw), std::move(meaning)};
}

std::string yes_no(u64 v, const char* yes, const char* no) { return v ? yes : no; }

std::string sw_meaning(u64 sw) {
  if (sw == 0) return "none set";
  std::string s;
  for (unsigned i = 0; i < 4; ++i)
    if (sw & (1u << i)) s += fmt::format("{}SW{}", s.empty() ? "" : " ", i);
  return s;
}

// The address format the context reads (arch::OaFormat: 48-bit, DS = 1, or FEAT_LPA's 64K).
OaFormat format_of(const DecodeContext& ctx) { return oa_format(ctx.granule, ctx.oa_bits == 52); }

// The address fields of a table, block or page descriptor from bit `lo` up, as the Arm ARM
// names them (D8.3.1.1, D8.3.1.2): the bits kept in place, then the moved top bits.
// `whole` is the meaning of the first: the address assembled, with 52-bit formats.
void address_fields(u64 raw, const DecodeContext& ctx, unsigned lo, const char* name, const char* top_name,
                    std::string whole, Decoded& d) {
  const OaFormat f = format_of(ctx);
  const unsigned in_place_top = f == kOa52Ds ? 49 : 47;
  d.fields.push_back({name, fmt::format("{}:{}", in_place_top, lo), raw & bit_range(in_place_top, lo),
                      f == kOa48 ? std::string() : std::move(whole)});
  if (f == kOa52Ds) {
    d.fields.push_back({fmt::format("{}[51:50]", top_name), "9:8", Field<9, 8>::get(raw),
                        fmt::format("address bits 51:50 (FEAT_LPA2, DS = 1){}",
                                    ctx.level == kLastLevel || DescTypeBit::get(raw) == 0
                                        ? ": no SH field, shareability is VTCR_EL2/TCR_EL2.SH0's"
                                        : "")});
  } else if (f == kOa52Lpa64) {
    d.fields.push_back({fmt::format("{}[51:48]", top_name), "15:12", Field<15, 12>::get(raw),
                        "address bits 51:48 (FEAT_LPA, 64K granule)"});
  }
}

void decode_table(u64 raw, const DecodeContext& ctx, Decoded& d) {
  const TableDesc t(raw);
  const OaFormat f = format_of(ctx);
  const u64 next = t.next_table(ctx.granule, f);
  d.summary = fmt::format("stage-{} table descriptor, level {}, next table at {:#x}", ctx.stage, ctx.level, next);
  address_fields(raw, ctx, page_shift(ctx.granule), "next-level table address", "NLTA",
                 fmt::format("with NLTA[51:{}]: next table at {:#x}", f == kOa52Ds ? 50 : 48, next), d);
  if (ctx.stage == 1) {
    d.fields.push_back(field<TableNs>("NSTable", raw, "ignored for Non-secure accesses"));
    d.fields.push_back(field<TableAp>("APTable", raw,
                                      t.ap_table_ro() ? "no writes at lower levels" : "no limit"));
    d.fields.push_back(field<TableXn>("XNTable", raw, yes_no(t.xn_table(), "no execution at lower levels", "no limit")));
    d.fields.push_back(field<TablePxn>("PXNTable", raw, "RES0 at EL2"));
    if (TablePxn::get(raw)) d.problems.push_back("PXNTable is RES0 in the EL2 regime");
    if (TableAp::get(raw) & 1) d.problems.push_back("APTable[0] is RES0 in the EL2 regime");
  } else if (raw & bit_range(63, 59)) {
    d.problems.push_back("bits 63:59 of a stage-2 table descriptor are RES0");
  }
  // Bits between 12 and the granule are RES0 unless the format keeps the address's top there
  // (FEAT_LPA's 64K NLTA[51:48] in bits 15:12).
  if (raw & bit_range(page_shift(ctx.granule) - 1, 12) & ~f.hi_field)
    d.problems.push_back("table address bits below the granule are RES0");
  if (f == kOa48) {
    if (raw & bit_range(51, 48)) d.problems.push_back("bits 51:48 are RES0 without FEAT_LPA/LPA2");
  } else if (raw & bit_range(50, 48) & ~f.in_place) {
    d.problems.push_back(f == kOa52Ds ? "bit 50 of a table descriptor is RES0 (DS = 1)"
                                      : "bits 50:48 of a 64K table descriptor are RES0 (FEAT_LPA keeps NLTA[51:48] in 15:12)");
  }
}

// `reserved`: a block where none may be; its address is shown at page granularity.
void decode_leaf(u64 raw, const DecodeContext& ctx, Decoded& d, bool reserved = false) {
  const Granule g = ctx.granule;
  const OaFormat f = format_of(ctx);
  const int oa_level = reserved ? kLastLevel : ctx.level;
  const u64 oa = f.decode(raw, level_shift(g, oa_level));
  const bool page = ctx.level == kLastLevel;
  d.summary = fmt::format("stage-{} {} descriptor, level {}, maps {:#x} ({} bytes)", ctx.stage,
                          page ? "page" : "block", ctx.level, oa, level_size(g, ctx.level));
  address_fields(raw, ctx, level_shift(g, oa_level), "output address", "OA",
                 fmt::format("with OA[51:{}]: {:#x}", f == kOa52Ds ? 50 : 48, oa), d);
  if (ctx.stage == 1) {
    const u64 mair = ctx.mair ? ctx.mair : kMairEl2;
    const u8 idx = static_cast<u8>(S1AttrIndx::get(raw));
    d.fields.push_back(field<S1AttrIndx>("AttrIndx", raw, fmt::format("MAIR_EL2.Attr{} = {:#04x}: {}", idx,
                                                                   mair_attr(mair, idx), describe(decode_mair_attr(mair_attr(mair, idx))))));
    d.fields.push_back(field<S1Ns>("NS", raw, "ignored for Non-secure accesses"));
    const u64 ap = S1Ap::get(raw);
    d.fields.push_back(field<S1Ap>("AP[2:1]", raw, (ap & 0b10) ? "read-only" : "read-write"));
    if (!(ap & 0b01)) d.problems.push_back("AP[1] is RES1 in the EL2 regime (one Exception level)");
    if (f.leaf_has_sh()) d.fields.push_back(field<S1Sh>("SH", raw, sh_name(S1Sh::get(raw))));
    d.fields.push_back(field<S1Af>("AF", raw, yes_no(S1Af::get(raw), "accessed", "not accessed: first access faults")));
    d.fields.push_back(field<S1Ng>("nG", raw, "RES0 at EL2 (no ASIDs)"));
    d.fields.push_back(field<S1Gp>("GP", raw, yes_no(S1Gp::get(raw), "BTI guarded", "not guarded")));
    d.fields.push_back(field<S1Dbm>("DBM", raw, yes_no(S1Dbm::get(raw), "dirty bit modifier", "-")));
    d.fields.push_back(field<S1Contiguous>("Contiguous", raw, yes_no(S1Contiguous::get(raw), "part of a contiguous set", "-")));
    d.fields.push_back(field<S1Pxn>("PXN", raw, "RES0 at EL2"));
    d.fields.push_back(field<S1Xn>("XN", raw, yes_no(S1Xn::get(raw), "execute-never", "executable")));
    if (f.leaf_has_sh() && S1Sh::get(raw) == 0b01) d.problems.push_back("SH = 0b01 is reserved");
    if (S1Pxn::get(raw)) d.problems.push_back("PXN is RES0 in the EL2 regime");
    if (!(ap & 0b10) && !S1Xn::get(raw)) d.problems.push_back("writable and executable (W^X)");
    if (decode_mair_attr(mair_attr(mair, idx)).device && !S1Xn::get(raw))
      d.problems.push_back("executable device memory");
  } else {
    const MemAttrs a = decode_s2_memattr(static_cast<u8>(S2MemAttr::get(raw)), ctx.fwb);
    d.fields.push_back(field<S2MemAttr>("MemAttr", raw, fmt::format("{} (FWB {})", describe(a), ctx.fwb ? "on" : "off")));
    const u64 s2ap = S2Ap::get(raw);
    const char* ap = s2ap == 0b11 ? "read-write" : s2ap == 0b01 ? "read-only" : s2ap == 0b10 ? "write-only" : "no access";
    d.fields.push_back(field<S2Ap>("S2AP", raw, ap));
    if (f.leaf_has_sh()) d.fields.push_back(field<S2Sh>("SH", raw, sh_name(S2Sh::get(raw))));
    d.fields.push_back(field<S2Af>("AF", raw, yes_no(S2Af::get(raw), "accessed", "not accessed: first access faults")));
    d.fields.push_back(field<S2Dbm>("DBM", raw, yes_no(S2Dbm::get(raw), "dirty bit modifier", "-")));
    d.fields.push_back(field<S2Contiguous>("Contiguous", raw, yes_no(S2Contiguous::get(raw), "part of a contiguous set", "-")));
    const char* xn[] = {"executable at EL1 and EL0", "not executable at EL1 (FEAT_XNX)", "execute-never",
                        "not executable at EL0 (FEAT_XNX)"};
    d.fields.push_back(field<S2Xn>("XN[1:0]", raw, xn[S2Xn::get(raw)]));
    if (f.leaf_has_sh() && S2Sh::get(raw) == 0b01) d.problems.push_back("SH = 0b01 is reserved");
    if (a.reserved) d.problems.push_back("reserved MemAttr encoding");
    if (a.device && S2Xn::get(raw) != 0b10) d.problems.push_back("executable device memory");
    if (raw & Bit<11>::kMask) d.problems.push_back("bit 11 is RES0 at stage 2");
  }
  d.fields.push_back(field<DescSw>("software bits", raw, sw_meaning(DescSw::get(raw))));
  if (!reserved)
    d.fields.push_back(field<Field<56, 55>>("page state (SW1:SW0)", raw,
                                            fmt::format("ownership layer: {}", ownership::name(ownership::state_of(raw)))));
  d.fields.push_back(field<Field<62, 59>>("PBHA / ignored", raw, ""));
  // Bit 16 of a block is nT (FEAT_BBM), not part of the address; with FEAT_LPA's 64K format
  // bits 15:12 are OA[51:48].
  if (!page && !reserved && (raw & bit_range(level_shift(g, ctx.level) - 1, 12)) & ~Bit<16>::kMask & ~f.hi_field)
    d.problems.push_back("output-address bits below the block size are RES0");
  if (page && g == Granule::k16K && (raw & bit_range(13, 12)))
    d.problems.push_back(f == kOa48 ? "bits 13:12 of a 16K page descriptor are RES0 (without FEAT_LPA2)"
                                    : "bits 13:12 of a 16K page descriptor are RES0");
  if (page && g == Granule::k64K && f == kOa48 && (raw & bit_range(15, 12)))
    d.problems.push_back("bits 15:12 of a 64K page descriptor are OA[51:48], RES0 without FEAT_LPA");
  if (raw & bit_range(49, 48) & ~f.in_place)
    d.problems.push_back(f == kOa48 ? "bits 49:48 are RES0 without FEAT_LPA2"
                                    : "bits 49:48 of a 64K descriptor are RES0 (FEAT_LPA keeps OA[51:48] in 15:12)");
}

std::string owner_name(u64 id) {
  if (id == ownership::kHostId) return "host";
  if (id == ownership::kHypId) return "hyp";
  return fmt::format("guest:{}", id);
}

void decode_invalid(u64 raw, Decoded& d) {
  const InvalidDesc inv(raw);
  if (inv.is_empty()) {
    d.summary = "invalid (empty): not mapped, owned by the table's owner";
    return;
  }
  const ownership::PageState st = ownership::state_of(raw);
  const std::string who = owner_name(inv.owner());
  std::string meaning;
  if (inv.is_poisoned()) meaning = "poisoned: the page was taken back from a live guest";
  else if (inv.is_locked()) meaning = "locked: break-before-make in progress";
  else if (st == ownership::PageState::lent) meaning = fmt::format("lent: this table's owner lent the page to {}", who);
  else meaning = fmt::format("owned by {}", who);
  d.summary = fmt::format("invalid, annotated: {}", meaning);
  d.fields.push_back(field<InvOwner>("owner id", raw,
                                     fmt::format("{} ({})", who, st == ownership::PageState::lent ? "the borrower" : "the owner")));
  d.fields.push_back(field<DescSw>("software bits", raw, sw_meaning(inv.sw())));
  d.fields.push_back(field<Field<56, 55>>("page state (SW1:SW0)", raw,
                                          fmt::format("ownership layer: {}", ownership::name(st))));
  d.fields.push_back(field<InvLocked>("locked", raw, yes_no(inv.is_locked(), "break-before-make in progress", "-")));
  d.fields.push_back(field<InvPoisoned>("poisoned", raw, yes_no(inv.is_poisoned(), "page taken back from a live guest", "-")));
  if (inv.reserved_bits())
    d.problems.push_back(fmt::format("bits {:#x} are not part of a ptguard annotation", inv.reserved_bits()));
}

}  // namespace

std::string describe(const MemAttrs& a) {
  if (a.from_stage1) return "stage-1 attributes pass through";
  std::string s = a.device ? device_name(a.device_kind)
                           : fmt::format("Normal inner {} outer {}", cache_name(a.inner), cache_name(a.outer));
  if (a.reserved) s += " (reserved encoding)";
  return s;
}

bool block_allowed_at(Granule g, int level, unsigned oa_bits) {
  if (block_allowed(g, level)) return true;
  // D8.3.1 "Block descriptor": with DS = 1 (FEAT_LPA2) a 4K level-0 and a 16K level-1 block;
  // with FEAT_LPA and a 52-bit PA a 64K level-1 block. Level -1 has table descriptors only.
  if (oa_bits != 52) return false;
  return g == Granule::k4K ? level == 0 : level == 1;
}

std::string check_context(const DecodeContext& ctx) {
  if (ctx.stage != 1 && ctx.stage != 2) return fmt::format("stage {} is not 1 or 2", ctx.stage);
  if (ctx.oa_bits != 48 && ctx.oa_bits != 52) return fmt::format("a {}-bit output address is not 48 or 52", ctx.oa_bits);
  if (ctx.level < -1 || ctx.level > kLastLevel) return fmt::format("level {} is not -1 to 3", ctx.level);
  // D8.2: only a 52-bit input with the 4K granule (FEAT_LPA2, DS = 1) needs a level -1 lookup.
  if (ctx.level == -1 && (ctx.granule != Granule::k4K || ctx.oa_bits != 52))
    return "level -1 exists only with the 4K granule and 52-bit addresses (FEAT_LPA2, DS = 1): add --granule 4K --oa-bits 52";
  return {};
}

Decoded decode_descriptor(u64 raw, const DecodeContext& ctx) {
  Decoded d;
  // arch::classify() is the 48-bit rule ptguard writes by; a decoder reads as the MMU would.
  d.kind = !DescValid::get(raw)        ? DescKind::invalid
           : DescTypeBit::get(raw)      ? (ctx.level == kLastLevel ? DescKind::page : DescKind::table)
           : block_allowed_at(ctx.granule, ctx.level, ctx.oa_bits) ? DescKind::block
                                                                   : DescKind::reserved;
  switch (d.kind) {
    case DescKind::invalid: decode_invalid(raw, d); break;
    case DescKind::table: decode_table(raw, ctx, d); break;
    case DescKind::block:
    case DescKind::page: decode_leaf(raw, ctx, d); break;
    case DescKind::reserved:
      decode_leaf(raw, ctx, d, true);
      d.problems.clear();  // a reserved encoding has no attributes to check
      d.summary = fmt::format("reserved: bits[1:0] = 0b01 at level {} ({} granule) - the MMU takes a translation fault",
                              ctx.level, granule_name(ctx.granule));
      d.problems.insert(d.problems.begin(),
                        ctx.level == kLastLevel ? "a block descriptor cannot be at level 3"
                        : ctx.level == -1       ? std::string("level -1 holds table descriptors only (FEAT_LPA2): no blocks")
                                                : fmt::format("level {} cannot hold a block with the {} granule{}",
                                                              ctx.level, granule_name(ctx.granule),
                                                              ctx.oa_bits == 52 ? " (even with 52-bit addresses)" : ""));
      break;
  }
  return d;
}

}  // namespace ptguard::tools
