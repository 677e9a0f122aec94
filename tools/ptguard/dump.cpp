#include "dump.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "decode.hpp"
#include "ownership_map.hpp"
#include "ptguard/pgtable/walker.hpp"

namespace ptguard::tools {

using namespace ptguard::ownership;

namespace {

}  // namespace

const char* shareability_name(u64 sh) {
  switch (sh) {
    case 0b00: return "NSH";
    case 0b10: return "OSH";
    case 0b11: return "ISH";
    default: return "SH=01";  // reserved
  }
}

std::string memory_name(const arch::MemAttrs& a) {
  if (a.reserved) return "reserved";
  if (a.from_stage1) return "S1-passthrough";
  if (a.device) {
    switch (a.device_kind) {
      case arch::DeviceKind::ngnrne: return "Device-nGnRnE";
      case arch::DeviceKind::ngnre: return "Device-nGnRE";
      case arch::DeviceKind::ngre: return "Device-nGRE";
      case arch::DeviceKind::gre: return "Device-GRE";
    }
  }
  const auto c = [](arch::Cacheability x) {
    return x == arch::Cacheability::write_back ? "WB" : x == arch::Cacheability::write_through ? "WT" : "NC";
  };
  if (a.inner == a.outer) return fmt::format("Normal-{}", c(a.inner));
  return fmt::format("Normal-i{}-o{}", c(a.inner), c(a.outer));
}

namespace {

// What one descriptor says, as a row of one entry.
// `oa`: the table's address format; `sh0`: the register's SH0, the leaves' shareability when
// the format has no SH field (DS = 1: Arm ARM D8.3.1).
DumpRow describe_entry(u64 e, int level, int stage, bool fwb, u64 mair, const arch::OaFormat& oa, u64 sh0) {
  DumpRow r;
  r.level = level;
  r.valid = arch::DescValid::get(e);
  r.entries = 1;
  r.state = name(state_of(e));
  if (!r.valid) {
    const arch::InvalidDesc inv(e);
    if (inv.is_locked()) r.annotation = "locked";
    else if (inv.is_poisoned()) r.annotation = "poisoned";
    else if (state_of(e) == PageState::lent) r.annotation = "borrower " + component_name(inv.owner());
    else if (!inv.is_empty()) r.annotation = "owner " + component_name(inv.owner());
    return r;
  }
  r.block = level < arch::kLastLevel;
  r.oa = oa.decode(e, arch::level_shift(World::kGranule, level));
  if (stage == 2) {
    r.perms = fmt::format("{}{}{}", arch::S2ApRead::get(e) ? 'r' : '-', arch::S2ApWrite::get(e) ? 'w' : '-',
                          (arch::S2Xn::get(e) & 0b10) ? '-' : 'x');
    r.memtype = memory_name(arch::decode_s2_memattr(static_cast<u8>(arch::S2MemAttr::get(e)), fwb));
    r.sh = shareability_name(oa.leaf_has_sh() ? arch::S2Sh::get(e) : sh0);
    r.af = arch::S2Af::get(e);
    r.contiguous = arch::S2Contiguous::get(e);
  } else {
    // EL2 without VHE: one privilege level; AP[2] is read-only, XN execute-never.
    r.perms = fmt::format("r{}{}", (arch::S1Ap::get(e) & 0b10) ? '-' : 'w', arch::S1Xn::get(e) ? '-' : 'x');
    r.memtype = memory_name(arch::decode_mair_attr(arch::mair_attr(mair, static_cast<unsigned>(arch::S1AttrIndx::get(e)))));
    r.sh = shareability_name(oa.leaf_has_sh() ? arch::S1Sh::get(e) : sh0);
    r.af = arch::S1Af::get(e);
    r.contiguous = arch::S1Contiguous::get(e);
  }
  return r;
}

bool same_attrs(const DumpRow& a, const DumpRow& b) {
  return a.level == b.level && a.valid == b.valid && a.perms == b.perms && a.memtype == b.memtype && a.sh == b.sh &&
         a.af == b.af && a.contiguous == b.contiguous && a.state == b.state && a.annotation == b.annotation;
}

struct Collector {
  static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
  std::vector<DumpRow>* rows;
  int stage;
  bool fwb;
  u64 mair;
  bool empty;
  arch::OaFormat oa;  // the table's address format
  u64 sh0;            // TCR_EL2/VTCR_EL2.SH0
  // The last entry's value and level: runs of identical invalid entries skip describe_entry().
  u64 last_entry = 0;
  int last_level = -1;
  Status leaf(pgtable::VisitCtx& x) {
    if (x.old == 0 && !empty) return {};
    std::vector<DumpRow>& v = *rows;
    if (!v.empty() && v.back().end == x.addr) {
      DumpRow& b = v.back();
      const bool same_invalid = !arch::DescValid::get(x.old) && x.old == last_entry && x.level == last_level;
      if (same_invalid) {
        b.end = x.end;
        ++b.entries;
        return {};
      }
      DumpRow r = describe_entry(x.old, x.level, stage, fwb, mair, oa, sh0);
      if (same_attrs(b, r) && (!r.valid || b.oa + b.size() == r.oa + (x.addr - x.base))) {
        b.end = x.end;
        ++b.entries;
        last_entry = x.old;
        last_level = x.level;
        return {};
      }
    }
    DumpRow r = describe_entry(x.old, x.level, stage, fwb, mair, oa, sh0);
    r.start = x.addr;
    r.end = x.end;
    if (r.valid) r.oa += x.addr - x.base;
    v.push_back(std::move(r));
    last_entry = x.old;
    last_level = x.level;
    return {};
  }
};

}  // namespace

Result<TableDump> dump_table(const World& w, ComponentId id, bool empty) {
  const World::MP& mp = w.mp();
  TableDump d;
  d.component = id;
  std::vector<DumpRow> rows;
  const bool fwb = mp.host_config().fwb;
  if (id == kHypId) {
    const auto& t = mp.hyp_table();
    d.stage = 1;
    d.root = t.root_pa();
    d.root_pages = t.root_pages();
    d.start_level = t.start_level();
    d.ia_bits = t.ia_bits();
    d.oa_bits = t.oa_format().oa_bits();
    Collector c{&rows, 1, false, mp.hyp_config().mair, empty, t.oa_format(), arch::TcrSh0::get(mp.hyp_config().tcr)};
    if (Status st = t.walk(0, u64{1} << t.ia_bits(), c); !st) return fail(st.error());
  } else {
    const World::MP::S2* t = nullptr;
    if (id == kHostId) {
      t = &mp.host_table();
    } else {
      const World::MP::Guest* g = mp.guest(id);
      if (g == nullptr || !g->table.valid()) return fail(Error::einval);
      t = &g->table;
      d.alive = g->alive;
    }
    d.stage = 2;
    d.root = t->root_pa();
    d.root_pages = t->root_pages();
    d.start_level = t->start_level();
    d.ia_bits = t->ia_bits();
    d.vmid = t->vmid();
    d.oa_bits = t->oa_format().oa_bits();
    Collector c{&rows, 2, fwb, 0, empty, t->oa_format(), arch::TcrSh0::get(mp.host_config().vtcr)};
    if (Status st = t->walk(0, u64{1} << t->ia_bits(), c); !st) return fail(st.error());
  }
  d.rows = std::move(rows);
  return d;
}

namespace {
const char* level_kind(const DumpRow& r) {
  if (!r.valid) return "invalid";
  return r.block ? "block" : "page";
}
}  // namespace

std::string dump_text(const TableDump& d) {
  std::string o;
  const bool s2 = d.stage == 2;
  // A 52-bit output address is named with its feature: FEAT_LPA2's DS = 1 (4K, 16K) or FEAT_LPA (64K).
  const std::string oa = d.oa_bits == 52 ? fmt::format(", 52-bit PA ({})", d.granule == arch::Granule::k64K ? "FEAT_LPA" : "DS = 1")
                                         : std::string();
  o += fmt::format("---[ {} {}: {} granule, root {:#x}{}, start level {}, {}-bit {}{}{} ]---\n",
                   component_name(d.component), s2 ? "stage-2" : "stage-1 EL2", granule_name(d.granule), d.root,
                   d.root_pages > 1 ? fmt::format(" ({} concatenated tables)", d.root_pages) : "", d.start_level,
                   d.ia_bits, s2 ? "IPA" : "VA", oa, s2 ? fmt::format(", VMID {}", d.vmid) : "");
  if (!d.alive) o += "---[ torn down: its pages wait to be reclaimed ]---\n";
  // The PA column fits a 48-bit address ("0xffffffffffff"), or a 52-bit one.
  const std::size_t pa_w = d.oa_bits == 52 ? 16 : 14;
  o += fmt::format("{:<37} {:>8} {:>3} {:<7} {:<{}} {:<4} {:<13} {:<11} {:<15} {}\n", s2 ? "IPA range" : "VA range",
                   "size", "lvl", "kind", "PA", pa_w, "perm", "memory", "flags", "state", "annotation");
  for (const DumpRow& r : d.rows) {
    std::string flags;
    if (r.valid) {
      flags = r.sh;
      if (r.af) flags += " AF";
      if (r.contiguous) flags += " CONT";
    }
    std::string line = fmt::format(
        "{:#018x}-{:#018x} {:>8} {:>3} {:<7} {:<{}} {:<4} {:<13} {:<11} {:<15} {}", r.start, r.end, size_name(r.size()),
        fmt::format("L{}", r.level), level_kind(r), r.valid ? fmt::format("{:#x}", r.oa) : "-", pa_w,
        r.valid ? r.perms : "-", r.valid ? r.memtype : "-", r.valid ? flags : "-", r.state,
        r.annotation.empty() ? "-" : r.annotation);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    o += line + "\n";
  }
  if (d.rows.empty()) o += "(no entries: nothing mapped, nothing annotated)\n";
  return o;
}

std::string dump_json(const TableDump& d) {
  using nlohmann::ordered_json;
  ordered_json j;
  j["component"] = component_name(d.component);
  j["stage"] = d.stage;
  j["granule"] = granule_name(d.granule);
  j["root"] = fmt::format("{:#x}", d.root);
  j["root_tables"] = d.root_pages;
  j["start_level"] = d.start_level;
  j["ia_bits"] = d.ia_bits;
  j["oa_bits"] = d.oa_bits;
  if (d.stage == 2) j["vmid"] = d.vmid;
  j["alive"] = d.alive;
  ordered_json rows = ordered_json::array();
  for (const DumpRow& r : d.rows) {
    ordered_json x;
    x["start"] = fmt::format("{:#x}", r.start);
    x["end"] = fmt::format("{:#x}", r.end);
    x["size"] = r.size();
    x["level"] = r.level;
    x["kind"] = level_kind(r);
    x["entries"] = r.entries;
    if (r.valid) {
      x["pa"] = fmt::format("{:#x}", r.oa);
      x["perms"] = r.perms;
      x["memory"] = r.memtype;
      x["shareability"] = r.sh;
      x["af"] = r.af;
      x["contiguous"] = r.contiguous;
    }
    x["state"] = r.state;
    x["annotation"] = r.annotation.empty() ? ordered_json(nullptr) : ordered_json(r.annotation);
    rows.push_back(std::move(x));
  }
  j["ranges"] = std::move(rows);
  return j.dump(2) + "\n";
}

}  // namespace ptguard::tools
