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

void decode_table(u64 raw, const DecodeContext& ctx, Decoded& d) {
  const TableDesc t(raw);
  d.summary = fmt::format("stage-{} table descriptor, level {}, next table at {:#x}", ctx.stage,
                          ctx.level, t.next_table(ctx.granule));
  d.fields.push_back({"next-level table address", fmt::format("47:{}", page_shift(ctx.granule)),
                      t.next_table(ctx.granule), ""});
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
  if (raw & bit_range(page_shift(ctx.granule) - 1, 12))
    d.problems.push_back("table address bits below the granule are RES0");
  if (raw & bit_range(51, 48)) d.problems.push_back("bits 51:48 are RES0 without FEAT_LPA/LPA2");
}

// `reserved`: a block where none may be; its address is shown at page granularity.
void decode_leaf(u64 raw, const DecodeContext& ctx, Decoded& d, bool reserved = false) {
  const Granule g = ctx.granule;
  const int oa_level = reserved ? kLastLevel : ctx.level;
  const u64 oa = raw & leaf_address_mask(g, oa_level);
  const bool page = ctx.level == kLastLevel;
  d.summary = fmt::format("stage-{} {} descriptor, level {}, maps {:#x} ({} bytes)", ctx.stage,
                          page ? "page" : "block", ctx.level, oa, level_size(g, ctx.level));
  d.fields.push_back({"output address", fmt::format("47:{}", level_shift(g, oa_level)), oa, ""});
  if (ctx.stage == 1) {
    const u64 mair = ctx.mair ? ctx.mair : kMairEl2;
    const u8 idx = static_cast<u8>(S1AttrIndx::get(raw));
    d.fields.push_back(field<S1AttrIndx>("AttrIndx", raw, fmt::format("MAIR_EL2.Attr{} = {:#04x}: {}", idx,
                                                                   mair_attr(mair, idx), describe(decode_mair_attr(mair_attr(mair, idx))))));
    d.fields.push_back(field<S1Ns>("NS", raw, "ignored for Non-secure accesses"));
    const u64 ap = S1Ap::get(raw);
    d.fields.push_back(field<S1Ap>("AP[2:1]", raw, (ap & 0b10) ? "read-only" : "read-write"));
    if (!(ap & 0b01)) d.problems.push_back("AP[1] is RES1 in the EL2 regime (one Exception level)");
    d.fields.push_back(field<S1Sh>("SH", raw, sh_name(S1Sh::get(raw))));
    d.fields.push_back(field<S1Af>("AF", raw, yes_no(S1Af::get(raw), "accessed", "not accessed: first access faults")));
    d.fields.push_back(field<S1Ng>("nG", raw, "RES0 at EL2 (no ASIDs)"));
    d.fields.push_back(field<S1Gp>("GP", raw, yes_no(S1Gp::get(raw), "BTI guarded", "not guarded")));
    d.fields.push_back(field<S1Dbm>("DBM", raw, yes_no(S1Dbm::get(raw), "dirty bit modifier", "-")));
    d.fields.push_back(field<S1Contiguous>("Contiguous", raw, yes_no(S1Contiguous::get(raw), "part of a contiguous set", "-")));
    d.fields.push_back(field<S1Pxn>("PXN", raw, "RES0 at EL2"));
    d.fields.push_back(field<S1Xn>("XN", raw, yes_no(S1Xn::get(raw), "execute-never", "executable")));
    if (S1Sh::get(raw) == 0b01) d.problems.push_back("SH = 0b01 is reserved");
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
    d.fields.push_back(field<S2Sh>("SH", raw, sh_name(S2Sh::get(raw))));
    d.fields.push_back(field<S2Af>("AF", raw, yes_no(S2Af::get(raw), "accessed", "not accessed: first access faults")));
    d.fields.push_back(field<S2Dbm>("DBM", raw, yes_no(S2Dbm::get(raw), "dirty bit modifier", "-")));
    d.fields.push_back(field<S2Contiguous>("Contiguous", raw, yes_no(S2Contiguous::get(raw), "part of a contiguous set", "-")));
    const char* xn[] = {"executable at EL1 and EL0", "not executable at EL1 (FEAT_XNX)", "execute-never",
                        "not executable at EL0 (FEAT_XNX)"};
    d.fields.push_back(field<S2Xn>("XN[1:0]", raw, xn[S2Xn::get(raw)]));
    if (S2Sh::get(raw) == 0b01) d.problems.push_back("SH = 0b01 is reserved");
    if (a.reserved) d.problems.push_back("reserved MemAttr encoding");
    if (a.device && S2Xn::get(raw) != 0b10) d.problems.push_back("executable device memory");
    if (raw & Bit<11>::kMask) d.problems.push_back("bit 11 is RES0 at stage 2");
  }
  d.fields.push_back(field<DescSw>("software bits", raw, sw_meaning(DescSw::get(raw))));
  if (!reserved)
    d.fields.push_back(field<Field<56, 55>>("page state (SW1:SW0)", raw,
                                            fmt::format("ownership layer: {}", ownership::name(ownership::state_of(raw)))));
  d.fields.push_back(field<Field<62, 59>>("PBHA / ignored", raw, ""));
  // Bit 16 of a block is nT (FEAT_BBM), not part of the address.
  if (!page && !reserved && (raw & bit_range(level_shift(g, ctx.level) - 1, 12)) & ~Bit<16>::kMask)
    d.problems.push_back("output-address bits below the block size are RES0");
  if (page && g == Granule::k16K && (raw & bit_range(13, 12)))
    d.problems.push_back("bits 13:12 of a 16K page descriptor are RES0 (without FEAT_LPA2)");
  if (page && g == Granule::k64K && (raw & bit_range(15, 12)))
    d.problems.push_back("bits 15:12 of a 64K page descriptor are OA[51:48], RES0 without FEAT_LPA");
  if (raw & bit_range(49, 48)) d.problems.push_back("bits 49:48 are RES0 without FEAT_LPA2");
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

Decoded decode_descriptor(u64 raw, const DecodeContext& ctx) {
  Decoded d;
  d.kind = classify(raw, ctx.granule, ctx.level);
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
                                                : fmt::format("level {} cannot hold a block with the {} granule",
                                                              ctx.level, granule_name(ctx.granule)));
      break;
  }
  return d;
}

}  // namespace ptguard::tools
