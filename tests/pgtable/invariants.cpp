#include "invariants.hpp"

#include <cstdio>
#include <set>
#include <sstream>

namespace ptguard::pgtest {

using arch::DescKind;
using arch::Granule;
using arch::kLastLevel;
using sim::Event;
using sim::EventKind;

std::string hex(u64 v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string join(const std::vector<std::string>& lines, std::size_t max_lines) {
  std::string out;
  std::size_t n = 0;
  for (const std::string& l : lines) {
    if (n++ == max_lines) {
      out += "... (" + std::to_string(lines.size() - max_lines) + " more)\n";
      break;
    }
    out += l;
    out += '\n';
  }
  return out;
}

namespace {

bool is_table_entry(const Geometry& geo, u64 e, int level) {
  return level < kLastLevel && arch::classify(e, geo.g, level) == DescKind::table;
}

u64 ia_limit(const Geometry& geo) { return geo.ia_bits >= 64 ? ~u64{0} : u64{1} << geo.ia_bits; }

void reach_page(sim::SimPlatform& p, const Geometry& geo, u64 pa, int level, u64 base, u64 parent,
                std::set<u64>& seen, Reach& r) {
  if (!seen.insert(pa).second) {
    r.errors.push_back("table page " + hex(pa) + " reachable twice (again from entry " + hex(parent) + ")");
    return;
  }
  if (!p.allocator().allocated(pa)) {
    r.errors.push_back("table page " + hex(pa) + " (level " + std::to_string(level) + ", IA " + hex(base) +
                       ") is not allocated");
    return;
  }
  r.pages.push_back(TablePage{pa, level, base, parent});
  const u64* t = p.phys_to_virt(pa);
  const u64 n = arch::entries_per_table(geo.g);
  const u64 lsize = arch::level_size(geo.g, level);
  for (u64 i = 0; i < n; ++i) {
    const u64 e = t[i];
    const u64 ia = base + i * lsize;
    if (e == 0) continue;
    if (ia >= ia_limit(geo)) {
      r.errors.push_back("entry " + hex(pa + 8 * i) + " beyond the IA size is " + hex(e));
      continue;
    }
    const DescKind k = arch::classify(e, geo.g, level);
    if (k == DescKind::reserved) {
      r.errors.push_back("reserved encoding " + hex(e) + " at " + hex(pa + 8 * i) + " level " +
                         std::to_string(level));
    } else if (k == DescKind::table) {
      reach_page(p, geo, arch::TableDesc(e).next_table(geo.g, geo.oa), level + 1, ia, pa + 8 * i, seen, r);
    }
  }
}

}  // namespace

Reach reachable(sim::SimPlatform& p, const Geometry& geo) {
  Reach r;
  std::set<u64> seen;
  for (unsigned i = 0; i < geo.root_pages; ++i) {
    reach_page(p, geo, geo.root_pa + i * geo.page(), geo.start_level, i * geo.root_page_span(), 0, seen, r);
  }
  return r;
}

std::vector<std::string> check_structure(sim::SimPlatform& p, const Geometry& geo, u64 other_pages) {
  Reach r = reachable(p, geo);
  std::vector<std::string> errors = std::move(r.errors);
  const u64 n = arch::entries_per_table(geo.g);
  for (const TablePage& tp : r.pages) {
    const u64* t = p.phys_to_virt(tp.pa);
    u32 used = 0;
    for (u64 i = 0; i < n; ++i) used += t[i] != 0 ? 1 : 0;
    const u32 count = p.page_count(tp.pa);
    if (count != used + 1) {
      errors.push_back("table page " + hex(tp.pa) + " (level " + std::to_string(tp.level) + ", IA " + hex(tp.base) +
                       ") has refcount " + std::to_string(count) + ", expected 1 + " + std::to_string(used));
    }
    if (tp.parent_desc != 0 && used == 0) {
      errors.push_back("empty table page " + hex(tp.pa) + " (level " + std::to_string(tp.level) + ", IA " +
                       hex(tp.base) + ") left linked");
    }
  }
  const u64 outstanding = p.allocator().stats().outstanding;
  if (outstanding != r.pages.size() + other_pages) {
    errors.push_back("allocator outstanding " + std::to_string(outstanding) + " != " + std::to_string(r.pages.size()) +
                     " reachable table pages + " + std::to_string(other_pages) + " held elsewhere (leak or double use)");
  }
  for (const sim::Violation& v : p.violations()) errors.push_back("platform violation: " + sim::to_string(v));
  return errors;
}

Snapshot snapshot(sim::SimPlatform& p, const Geometry& geo) {
  Snapshot s;
  Reach r = reachable(p, geo);
  const u64 n = arch::entries_per_table(geo.g);
  for (const TablePage& tp : r.pages) {
    const u64* t = p.phys_to_virt(tp.pa);
    s.pages.emplace_back(tp.pa, std::vector<u64>(t, t + n));
  }
  s.shape = std::move(r.pages);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Model.
// ---------------------------------------------------------------------------------------------

bool State::same_attrs(const State& o) const {
  if (kind != o.kind) return false;
  switch (kind) {
    case Kind::empty: return true;
    case Kind::annot: return owner == o.owner && sw == o.sw;
    case Kind::mapped: return perm == o.perm && type == o.type && sw == o.sw;
  }
  return false;
}

namespace {
const char* type_name(arch::MemType t) {
  switch (t) {
    case arch::MemType::normal_wb: return "wb";
    case arch::MemType::normal_nc: return "nc";
    case arch::MemType::device_ngnre: return "nGnRE";
    case arch::MemType::device_ngnrne: return "nGnRnE";
  }
  return "?";
}
std::string perm_str(u8 p) {
  std::string s;
  s += (p & pgtable::kPermR) ? 'r' : '-';
  s += (p & pgtable::kPermW) ? 'w' : '-';
  s += (p & pgtable::kPermX) ? 'x' : '-';
  return s;
}
}  // namespace

std::string to_string(const State& s) {
  switch (s.kind) {
    case Kind::empty: return "empty";
    case Kind::annot: return "owner " + std::to_string(s.owner) + " sw " + std::to_string(s.sw);
    case Kind::mapped:
      return "-> " + hex(s.pa) + " " + perm_str(s.perm) + " " + type_name(s.type) + " sw " + std::to_string(s.sw);
  }
  return "?";
}

std::string to_string(const Run& r) { return "[" + hex(r.start) + ", " + hex(r.end) + ") " + to_string(r.st); }

void Model::cut(u64 x) {
  auto it = m_.upper_bound(x);
  if (it == m_.begin()) return;
  --it;
  Run& r = it->second;
  if (r.start >= x || r.end <= x) return;
  Run right{x, r.end, r.st};
  if (right.st.kind == Kind::mapped) right.st.pa += x - r.start;
  r.end = x;
  m_.emplace(x, right);
}

void Model::normalize() {
  auto it = m_.begin();
  while (it != m_.end()) {
    auto next = std::next(it);
    if (next == m_.end()) break;
    Run& a = it->second;
    const Run& b = next->second;
    const bool merge = a.end == b.start && a.st.same_attrs(b.st) &&
                       (a.st.kind != Kind::mapped || b.st.pa == a.st.pa + (a.end - a.start));
    if (merge) {
      a.end = b.end;
      m_.erase(next);
    } else {
      it = next;
    }
  }
}

void Model::set(u64 a, u64 b, const State& s) {
  cut(a);
  cut(b);
  m_.erase(m_.lower_bound(a), m_.lower_bound(b));
  if (s.kind != Kind::empty) m_.emplace(a, Run{a, b, s});
  normalize();
}

void Model::modify(u64 a, u64 b, const std::function<void(State&)>& f) {
  cut(a);
  cut(b);
  for (auto it = m_.lower_bound(a); it != m_.end() && it->first < b;) {
    f(it->second.st);
    if (it->second.st.kind == Kind::empty || (it->second.st.kind == Kind::annot && it->second.st.owner == 0 &&
                                              it->second.st.sw == 0)) {
      it = m_.erase(it);
    } else {
      ++it;
    }
  }
  normalize();
}

State Model::at(u64 addr) const {
  auto it = m_.upper_bound(addr);
  if (it == m_.begin()) return State{};
  --it;
  const Run& r = it->second;
  if (addr >= r.end) return State{};
  State s = r.st;
  if (s.kind == Kind::mapped) s.pa += addr - r.start;
  return s;
}

std::vector<Run> Model::runs_in(u64 a, u64 b) const {
  std::vector<Run> out;
  auto it = m_.upper_bound(a);
  if (it != m_.begin()) --it;
  for (; it != m_.end() && it->first < b; ++it) {
    Run r = it->second;
    if (r.end <= a) continue;
    if (r.start < a) {
      if (r.st.kind == Kind::mapped) r.st.pa += a - r.start;
      r.start = a;
    }
    if (r.end > b) r.end = b;
    out.push_back(r);
  }
  return out;
}

std::vector<Run> Model::runs() const {
  std::vector<Run> out;
  out.reserve(m_.size());
  for (const auto& [k, r] : m_) out.push_back(r);
  return out;
}

Model Model::from_sorted(const std::vector<Run>& runs) {
  Model m;
  std::vector<Run> merged;
  for (const Run& r : runs) {
    if (!merged.empty()) {
      Run& a = merged.back();
      if (a.end == r.start && a.st.same_attrs(r.st) &&
          (a.st.kind != Kind::mapped || r.st.pa == a.st.pa + (a.end - a.start))) {
        a.end = r.end;
        continue;
      }
    }
    merged.push_back(r);
  }
  for (const Run& r : merged) m.m_.emplace(r.start, r);
  return m;
}

std::vector<std::string> diff(const Model& expected, const Model& actual, std::size_t max_lines) {
  std::vector<std::string> out;
  // Walk both run lists over every boundary.
  std::set<u64> cuts;
  for (const Run& r : expected.runs()) {
    cuts.insert(r.start);
    cuts.insert(r.end);
  }
  for (const Run& r : actual.runs()) {
    cuts.insert(r.start);
    cuts.insert(r.end);
  }
  std::vector<u64> c(cuts.begin(), cuts.end());
  for (std::size_t i = 0; i + 1 < c.size() && out.size() < max_lines; ++i) {
    const State e = expected.at(c[i]);
    const State a = actual.at(c[i]);
    const bool same = e.same_attrs(a) && (e.kind != Kind::mapped || e.pa == a.pa);
    if (!same) {
      out.push_back("at [" + hex(c[i]) + ", " + hex(c[i + 1]) + "): model " + to_string(e) + ", table " +
                    to_string(a));
    }
  }
  if (out.empty() && expected.runs().size() != actual.runs().size()) out.push_back("run lists differ");
  return out;
}

State decode_entry(const Geometry& geo, u64 e, int level, std::vector<std::string>* errors) {
  auto err = [&](const std::string& what) {
    errors->push_back(what + " in entry " + hex(e) + " at level " + std::to_string(level));
  };
  if (!arch::DescValid::get(e)) {
    if (e == 0) return State{};
    const arch::InvalidDesc d(e);
    if (d.reserved_bits() != 0) err("reserved annotation bits");
    if (d.is_locked()) err("locked marker left");
    if (d.is_poisoned()) err("poison marker");
    if (geo.stage == 1) err("annotation at stage 1");
    return State::annotation(d.owner(), d.sw());
  }
  const DescKind k = arch::classify(e, geo.g, level);
  if (k != DescKind::block && k != DescKind::page) {
    err("not a leaf");
    return State{};
  }
  // The output address in the table's format; with DS = 1 bits [9:8] are OA[51:50], not SH.
  const u64 oa_mask = geo.oa.descriptor_bits(arch::level_shift(geo.g, level));
  const bool has_sh = geo.oa.leaf_has_sh();
  State s;
  s.kind = Kind::mapped;
  s.pa = geo.oa.decode(e, arch::level_shift(geo.g, level));
  s.sw = static_cast<u8>(arch::DescSw::get(e));
  const u64 common = arch::DescValid::kMask | arch::DescTypeBit::kMask | arch::DescSw::kMask | oa_mask;
  if (geo.stage == 2) {
    // The Contiguous bit (TableOptions::contiguous): whether its run is well formed is the
    // reference MMU's to say (check_translations).
    const u64 allowed = common | arch::S2MemAttr::kMask | arch::S2Ap::kMask | (has_sh ? arch::S2Sh::kMask : 0) |
                        arch::S2Af::kMask | arch::S2Xn::kMask | arch::S2Contiguous::kMask;
    if ((e & ~allowed) != 0) err("stray bits " + hex(e & ~allowed));
    if (has_sh && arch::S2Sh::get(e) != static_cast<u64>(arch::Shareability::inner)) err("SH not inner-shareable");
    if (!arch::S2Af::get(e)) err("AF clear");
    u8 perm = 0;
    if (arch::S2ApRead::get(e)) perm |= pgtable::kPermR;
    if (arch::S2ApWrite::get(e)) perm |= pgtable::kPermW;
    const u64 xn = arch::S2Xn::get(e);
    if (xn == static_cast<u64>(arch::S2XnKind::exec)) {
      perm |= pgtable::kPermX;
    } else if (xn != static_cast<u64>(arch::S2XnKind::xn)) {
      err("XN encoding " + std::to_string(xn));
    }
    s.perm = perm;
    const u64 ma = arch::S2MemAttr::get(e);
    bool found = false;
    for (arch::MemType t : {arch::MemType::normal_wb, arch::MemType::normal_nc, arch::MemType::device_ngnre,
                            arch::MemType::device_ngnrne}) {
      if (arch::s2_memattr(t, geo.fwb) == ma) {
        s.type = t;
        found = true;
      }
    }
    if (!found) err("unknown MemAttr " + std::to_string(ma));
  } else {
    const u64 allowed = common | arch::S1AttrIndx::kMask | arch::S1Ap::kMask | (has_sh ? arch::S1Sh::kMask : 0) |
                        arch::S1Af::kMask | arch::S1Xn::kMask;
    if ((e & ~allowed) != 0) err("stray bits " + hex(e & ~allowed));
    if (has_sh && arch::S1Sh::get(e) != static_cast<u64>(arch::Shareability::inner)) err("SH not inner-shareable");
    if (!arch::S1Af::get(e)) err("AF clear");
    u8 perm = pgtable::kPermR;
    const u64 ap = arch::S1Ap::get(e);
    if (ap == static_cast<u64>(arch::S1ApEl2::rw)) {
      perm |= pgtable::kPermW;
    } else if (ap != static_cast<u64>(arch::S1ApEl2::ro)) {
      err("AP encoding " + std::to_string(ap));
    }
    if (!arch::S1Xn::get(e)) perm |= pgtable::kPermX;
    s.perm = perm;
    const u64 idx = arch::S1AttrIndx::get(e);
    bool found = false;
    for (arch::MemType t : {arch::MemType::normal_wb, arch::MemType::normal_nc, arch::MemType::device_ngnre,
                            arch::MemType::device_ngnrne}) {
      if (arch::attr_index(t) == idx) {
        s.type = t;
        found = true;
      }
    }
    if (!found) err("unknown AttrIndx " + std::to_string(idx));
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Reference MMU.
// ---------------------------------------------------------------------------------------------

std::vector<std::string> check_translations(const sim::PhysMem& mem, const Geometry& geo, const Model& model,
                                            const std::vector<u64>& addrs, const LookupFn& lookup) {
  std::vector<std::string> out;
  for (u64 addr : addrs) {
    if (addr >= ia_limit(geo)) continue;
    const State s = model.at(addr);
    for (sim::Access acc : {sim::Access::read, sim::Access::write, sim::Access::exec}) {
      const sim::Translation t =
          geo.stage == 2
              ? sim::translate_stage2(mem, sim::Stage2Regs{geo.tcr, geo.vttbr(), geo.fwb}, addr, acc, false, geo.impl())
              : sim::translate_stage1_el2(mem, sim::Stage1Regs{geo.tcr, geo.mair, geo.ttbr0()}, addr, acc, geo.impl());
      auto where_s = [&] {
        return std::string(sim::name(acc)) + " at " + hex(addr) + " (model: " + to_string(s) +
               "): reference MMU says " + sim::to_string(t);
      };
      // A leaf with the Contiguous bit whose run breaks the rules (Arm ARM D8.6.1) is never a
      // correct table, whatever it translates to.
      if (t.contiguous_misprogrammed) out.push_back("misprogrammed contiguous run, " + where_s());
      if (s.kind != Kind::mapped) {
        if (t.fault != sim::FaultKind::translation) {
          out.push_back("expected a translation fault, " + where_s());
          continue;
        }
        if (acc != sim::Access::read) continue;
        const Result<pgtable::Leaf> leaf = lookup(addr);
        const u64 want = s.kind == Kind::annot ? arch::InvalidDesc::annotation(s.owner, s.sw).raw() : 0;
        if (!leaf) {
          out.push_back("lookup failed at " + hex(addr) + ": " + name(leaf.error()));
        } else if (leaf->entry != want || leaf->level != t.level) {
          out.push_back("lookup at " + hex(addr) + " gives entry " + hex(leaf->entry) + " level " +
                        std::to_string(leaf->level) + ", want " + hex(want) + " at the faulting level " +
                        std::to_string(t.level));
        }
        continue;
      }
      const bool allowed = acc == sim::Access::read    ? (s.perm & pgtable::kPermR) != 0
                           : acc == sim::Access::write ? (s.perm & pgtable::kPermW) != 0
                                                       : (s.perm & pgtable::kPermX) != 0;
      if (allowed) {
        if (!t.ok()) {
          out.push_back("expected success, " + where_s());
          continue;
        }
        if (t.output_address != s.pa) out.push_back("wrong output address, " + where_s());
      } else if (t.fault != sim::FaultKind::permission) {
        out.push_back("expected a permission fault, " + where_s());
        continue;
      }
      arch::MemType mt{};
      const bool exact = arch::to_mem_type(t.attrs, &mt);
      if (!exact || mt != s.type) out.push_back("wrong memory type, " + where_s());
      if (t.sh != arch::Shareability::inner) out.push_back("not inner-shareable, " + where_s());
      if (t.sw != s.sw) out.push_back("wrong software bits, " + where_s());
      const bool r = (s.perm & pgtable::kPermR) != 0;
      const bool w = (s.perm & pgtable::kPermW) != 0;
      const bool x = (s.perm & pgtable::kPermX) != 0;
      if (t.readable != r || t.writable != w || t.executable != x) out.push_back("wrong permissions, " + where_s());
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Events.
// ---------------------------------------------------------------------------------------------

namespace {

struct Pending {
  enum class Why : u8 { broken, perm } why;
  u64 desc;
  u64 ia;
  u64 size;
  int level;
  bool was_table;
  u64 old_value;
  std::size_t at;  // event index
  bool dsb_st = false;   // a DSB after the write
  bool tlbi = false;     // a TLBI covering the entry (after that DSB)
  bool dsb1 = false;     // a DSB ISH after it
  bool tlbi_s1 = false;  // TLBI VMALLE1IS after that (or VMALLS12E1IS as the covering TLBI)
  bool dsb2 = false;     // a DSB ISH after it
  u64 covered_to = 0;    // range TLBIs so far cover [ia, covered_to) (pieces go up in address)
  [[nodiscard]] bool done() const { return dsb_st && tlbi && dsb1 && tlbi_s1 && dsb2; }
  [[nodiscard]] std::string missing() const {
    if (!dsb_st) return "DSB ISHST";
    if (!tlbi)
      return was_table ? "TLBI of the table entry's whole span (by range, or the whole VMID/EL2)"
                       : "TLBI covering the address";
    if (!dsb1) return "DSB ISH after the TLBI";
    if (!tlbi_s1) return "TLBI VMALLE1IS";
    return "DSB ISH after TLBI VMALLE1IS";
  }
};

struct PageInfo {
  int level;
  u64 base;
  u64 parent_page;  // 0 for root pages
  long unlinked_by = -1;
};

class Checker {
 public:
  Checker(const Geometry& geo, const std::vector<TablePage>& before, const EventCheckOptions& opt)
      : geo_(geo), opt_(opt) {
    for (const TablePage& tp : before) {
      const u64 parent_page = tp.parent_desc & ~(geo.page() - 1);
      pages_[tp.pa] = PageInfo{tp.level, tp.base, tp.parent_desc == 0 ? 0 : parent_page, -1};
    }
  }

  void run(const sim::EventView& ev) {
    for (std::size_t i = 0; i < ev.size(); ++i) {
      const Event& e = ev[i];
      switch (e.kind) {
        case EventKind::write: on_write(e, i); break;
        case EventKind::tlbi: on_tlbi(e); break;
        case EventKind::barrier: on_barrier(e); break;
        case EventKind::free: on_free(e); break;
        default: break;
      }
    }
    for (const Pending& p : pending_) {
      if (p.done()) continue;
      if (p.why == Pending::Why::perm) {
        if (opt_.tlbi_deferred) continue;
        out_.push_back("permission reduction at " + hex(p.desc) + " (IA " + hex(p.ia) + ", " + hex(p.old_value) +
                       ") not invalidated before the operation ended (missing " + p.missing() + ")");
      } else {
        out_.push_back("valid->invalid at " + hex(p.desc) + " (IA " + hex(p.ia) + ", level " +
                       std::to_string(p.level) + ", was " + hex(p.old_value) +
                       ") not invalidated before the operation ended (missing " + p.missing() + ")");
      }
    }
  }

  std::vector<std::string> out_;

 private:
  bool is_table(u64 e, int level) const { return is_table_entry(geo_, e, level); }

  // Bits of a valid leaf that may change on a live entry.
  u64 inplace_mask() const {
    if (geo_.stage == 2) return arch::S2Ap::kMask | arch::S2Xn::kMask | arch::S2Af::kMask | arch::DescSw::kMask;
    return arch::DescSw::kMask;
  }
  bool same_translation(u64 a, u64 b, int level) const {
    const bool ta = is_table(a, level);
    const bool tb = is_table(b, level);
    if (ta || tb) return a == b;
    return ((a ^ b) & ~inplace_mask()) == 0;
  }
  bool reduces(u64 o, u64 n) const {
    if (geo_.stage == 2) {
      const bool lr = arch::S2ApRead::get(o) && !arch::S2ApRead::get(n);
      const bool lw = arch::S2ApWrite::get(o) && !arch::S2ApWrite::get(n);
      // Execution per Exception level (FEAT_XNX, Arm ARM D8.4.2): losing it at EL1 or at EL0.
      const u64 xo = arch::S2Xn::get(o), xn = arch::S2Xn::get(n);
      const bool lx = (arch::s2_exec_el1(xo) && !arch::s2_exec_el1(xn)) ||
                      (arch::s2_exec_el0(xo) && !arch::s2_exec_el0(xn));
      return lr || lw || lx;
    }
    return false;
  }

  void mark_subtree(u64 page, long rec) {
    // The page and every known page below it.
    std::vector<u64> work{page};
    while (!work.empty()) {
      const u64 pg = work.back();
      work.pop_back();
      auto it = pages_.find(pg);
      if (it == pages_.end()) continue;
      it->second.unlinked_by = rec;
      for (auto& [pa, info] : pages_)
        if (info.parent_page == pg && info.unlinked_by == -1) work.push_back(pa);
    }
  }

  void on_write(const Event& e, std::size_t i) {
    const u64 page = e.pa & ~(geo_.page() - 1);
    auto it = pages_.find(page);
    if (it == pages_.end() || it->second.unlinked_by != -1) return;  // not (or no longer) live
    const PageInfo info = it->second;
    const int level = info.level;
    const u64 lsize = arch::level_size(geo_.g, level);
    const u64 ia = info.base + ((e.pa - page) / 8) * lsize;
    const u64 o = e.old_value;
    const u64 n = e.value;
    const bool ov = arch::DescValid::get(o);
    const bool nv = arch::DescValid::get(n);
    auto where = [&] {
      return hex(e.pa) + " (IA " + hex(ia) + ", level " + std::to_string(level) + "): " + hex(o) + " -> " + hex(n);
    };
    if (ov && nv) {
      if (!same_translation(o, n, level)) {
        out_.push_back("BBM valid->valid at " + where());
      } else if (reduces(o, n)) {
        pending_.push_back(Pending{Pending::Why::perm, e.pa, ia, lsize, level, false, o, i});
        active_.push_back(pending_.size() - 1);
      }
    } else if (ov && !nv) {
      const bool was_table = is_table(o, level);
      pending_.push_back(Pending{Pending::Why::broken, e.pa, ia, lsize, level, was_table, o, i});
      active_.push_back(pending_.size() - 1);
      broken_[e.pa] = pending_.size() - 1;
      if (was_table) mark_subtree(arch::TableDesc(o).next_table(geo_.g, geo_.oa), static_cast<long>(pending_.size() - 1));
    } else if (!ov && nv) {
      auto b = broken_.find(e.pa);
      if (b != broken_.end()) {
        const Pending& rec = pending_[b->second];
        if (geo_.stage == 1) {
          out_.push_back("stage-1 BBM (valid->invalid->valid) at " + where() + ", was " + hex(rec.old_value));
        } else if (!same_translation(rec.old_value, n, level) && !rec.done()) {
          out_.push_back("BBM incomplete at " + where() + " (was " + hex(rec.old_value) + "): missing " +
                         rec.missing() + " before the new entry");
        }
      }
      if (is_table(n, level)) {
        const u64 child = arch::TableDesc(n).next_table(geo_.g, geo_.oa);
        auto c = pages_.find(child);
        if (c != pages_.end() && c->second.unlinked_by == -1) {
          out_.push_back("table page " + hex(child) + " linked twice, at " + where());
        }
        pages_[child] = PageInfo{level + 1, ia, page, -1};
      }
    }
  }

  // Whether TLBI `e` completes the invalidation `p` waits for. By address: the address inside
  // the leaf, the level hint the leaf's or none. By range (FEAT_TLBIRANGE; D8.14): a leaf is
  // removed by a range that overlaps it with a matching or no TTL; a table entry's span must be
  // covered whole by ranges of any level (RIPAS2E1IS, RVAE2IS; not RVALE2IS, which leaves
  // walk-cache entries) with no TTL, one piece or consecutive pieces (`p.covered_to` grows).
  bool covers(Pending& p, const Event& e) const {
    const bool level_ok = e.level == arch::kTlbiLevelUnknown || e.level == p.level;
    const bool range_any_level = e.tlbi_op == arch::Tlbi::ripas2e1is || e.tlbi_op == arch::Tlbi::rvae2is;
    if (arch::is_range(e.tlbi_op) && (geo_.stage == 2) == (e.tlbi_op == arch::Tlbi::ripas2e1is)) {
      const u64 first = sim::tlbi_first(e), last = sim::tlbi_last(e);
      if (!p.was_table) return level_ok && first <= p.ia + (p.size - 1) && last >= p.ia;
      if (!range_any_level || e.level != arch::kTlbiLevelUnknown) return false;
      if (p.covered_to < p.ia) p.covered_to = p.ia;
      if (first <= p.covered_to && last >= p.covered_to) p.covered_to = last + 1;
      return last == ~u64{0} || p.covered_to >= p.ia + p.size;
    }
    if (geo_.stage == 2) {
      if (e.tlbi_op == arch::Tlbi::vmalls12e1is) return true;
      if (e.tlbi_op == arch::Tlbi::ipas2e1is && !p.was_table) {
        return e.addr >= p.ia && e.addr - p.ia < p.size && level_ok;
      }
      return false;
    }
    if (e.tlbi_op == arch::Tlbi::alle2is) return true;
    // VALE2IS: leaf entries only, which is all a leaf (page or block) can leave behind.
    if ((e.tlbi_op == arch::Tlbi::vae2is || e.tlbi_op == arch::Tlbi::vale2is) && !p.was_table) {
      return e.addr >= p.ia && e.addr - p.ia < p.size && level_ok;
    }
    return false;
  }

  void on_tlbi(const Event& e) {
    if (geo_.stage == 2) {
      const bool s2op = e.tlbi_op == arch::Tlbi::ipas2e1is || e.tlbi_op == arch::Tlbi::ripas2e1is ||
                        e.tlbi_op == arch::Tlbi::vmalle1is || e.tlbi_op == arch::Tlbi::vmalls12e1is;
      if (!s2op) out_.push_back("EL2 TLBI " + sim::to_string(e) + " on a stage-2 table");
      if (s2op && e.vmid != geo_.vmid)
        out_.push_back(sim::to_string(e) + ": wrong VMID (table's is " + std::to_string(geo_.vmid) + ")");
    } else {
      const bool el2 = e.tlbi_op == arch::Tlbi::vae2is || e.tlbi_op == arch::Tlbi::vale2is ||
                       e.tlbi_op == arch::Tlbi::alle2is || e.tlbi_op == arch::Tlbi::rvae2is ||
                       e.tlbi_op == arch::Tlbi::rvale2is;
      if (!el2) out_.push_back("stage-2 TLBI " + sim::to_string(e) + " on a stage-1 EL2 table");
    }
    for (std::size_t idx : active_) {
      Pending& p = pending_[idx];
      if (p.done() || !p.dsb_st) continue;
      if (!p.tlbi && covers(p, e)) {
        p.tlbi = true;
        const bool all = e.tlbi_op == arch::Tlbi::vmalls12e1is || geo_.stage == 1;
        if (all) p.tlbi_s1 = true;
      } else if (p.tlbi && p.dsb1 && !p.tlbi_s1 &&
                 (e.tlbi_op == arch::Tlbi::vmalle1is || e.tlbi_op == arch::Tlbi::vmalls12e1is)) {
        p.tlbi_s1 = true;
      }
    }
  }

  void on_barrier(const Event& e) {
    const bool dsb = e.barrier_op == arch::Barrier::dsb_ishst || e.barrier_op == arch::Barrier::dsb_ish ||
                     e.barrier_op == arch::Barrier::dsb_sy;
    const bool full = e.barrier_op == arch::Barrier::dsb_ish || e.barrier_op == arch::Barrier::dsb_sy;
    if (!dsb) return;
    std::size_t keep = 0;
    for (std::size_t idx : active_) {
      if (!pending_[idx].done()) active_[keep++] = idx;
    }
    active_.resize(keep);
    for (std::size_t idx : active_) {
      Pending& p = pending_[idx];
      if (p.done()) continue;
      if (!p.dsb_st) {
        p.dsb_st = true;
      } else if (p.tlbi && !p.dsb1) {
        if (full) {
          p.dsb1 = true;
          if (p.tlbi_s1) p.dsb2 = true;  // VMALLS12E1IS (or EL2): one DSB completes both
        }
      } else if (p.tlbi_s1 && !p.dsb2 && full) {
        p.dsb2 = true;
      }
    }
  }

  void on_free(const Event& e) {
    const u64 n = u64{1} << e.order;
    for (u64 k = 0; k < n; ++k) {
      const u64 pa = e.pa + k * geo_.page();
      auto it = pages_.find(pa);
      if (it == pages_.end()) continue;
      const PageInfo info = it->second;
      if (info.unlinked_by == -1) {
        out_.push_back("free of live table page " + hex(pa) + " (level " + std::to_string(info.level) + ", IA " +
                       hex(info.base) + ")");
      } else {
        const Pending& p = pending_[static_cast<std::size_t>(info.unlinked_by)];
        if (!(p.tlbi && p.dsb1)) {
          out_.push_back("free before TLBI at " + hex(pa) + " (table page of level " + std::to_string(info.level) +
                         ", IA " + hex(info.base) + ", unlinked at " + hex(p.desc) + "; missing " + p.missing() +
                         ")");
        }
      }
      pages_.erase(it);
    }
  }

  Geometry geo_;
  EventCheckOptions opt_;
  std::map<u64, PageInfo> pages_;
  std::vector<Pending> pending_;
  std::vector<std::size_t> active_;  // indices of pending_ not yet done (compacted at barriers)
  std::map<u64, std::size_t> broken_;
};

}  // namespace

std::vector<std::string> check_events(const Geometry& geo, const std::vector<TablePage>& before,
                                      const sim::EventView& ev, const EventCheckOptions& opt) {
  Checker c(geo, before, opt);
  c.run(ev);
  return std::move(c.out_);
}

// ---------------------------------------------------------------------------------------------
// Operations.
// ---------------------------------------------------------------------------------------------

std::string outcome(const std::optional<Error>& e) { return e ? name(*e) : "success"; }

std::string to_string(const Op& op) {
  std::ostringstream os;
  os << op;
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Op& op) {
  auto prot = [&] {
    return perm_str(op.prot.perm) + " " + type_name(op.prot.type) + " sw " + std::to_string(op.prot.sw);
  };
  switch (op.kind) {
    case OpKind::map:
      os << "map(" << hex(op.addr) << ", " << hex(op.size) << ", pa " << hex(op.pa) << ", " << prot()
         << (op.replace ? ", replace" : "") << ")";
      break;
    case OpKind::unmap:
      if (op.by_ref) {
        os << "unmap_page(lookup_page(" << hex(op.addr) << "))";
      } else {
        os << "unmap(" << hex(op.addr) << ", " << hex(op.size) << ")";
      }
      break;
    case OpKind::set_owner:
      os << "set_owner(" << hex(op.addr) << ", " << hex(op.size) << ", owner " << op.owner << ", sw "
         << unsigned{op.sw} << ")";
      break;
    case OpKind::wrprotect: os << "wrprotect(" << hex(op.addr) << ", " << hex(op.size) << ")"; break;
    case OpKind::relax: os << "relax_perms(" << hex(op.addr) << ", " << prot() << ")"; break;
    case OpKind::split:
      os << "split(" << hex(op.addr) << ", " << hex(op.size) << (op.to_pages ? ", to pages" : "") << ")";
      break;
  }
  return os;
}

namespace {

u64 pick(Rng& r, std::initializer_list<std::pair<u64, u64>> weighted) {
  u64 total = 0;
  for (const auto& [w, v] : weighted) total += w;
  u64 x = r.below(total);
  for (const auto& [w, v] : weighted) {
    if (x < w) return v;
    x -= w;
  }
  return weighted.begin()->second;
}

pgtable::Prot gen_prot(Rng& r, int stage) {
  pgtable::Prot p;
  if (stage == 2) {
    p.perm = static_cast<pgtable::Perm>(pick(r, {{3, pgtable::kPermR},
                                                {6, pgtable::kPermRW},
                                                {2, pgtable::kPermRX},
                                                {2, pgtable::kPermRWX},
                                                {1, pgtable::kPermNone},
                                                {1, pgtable::kPermW},
                                                {1, pgtable::kPermX}}));
  } else {
    p.perm = static_cast<pgtable::Perm>(pick(r, {{4, pgtable::kPermR},
                                                {6, pgtable::kPermRW},
                                                {3, pgtable::kPermRX},
                                                {1, pgtable::kPermRWX},
                                                {1, pgtable::kPermW}}));
  }
  p.type = static_cast<arch::MemType>(pick(r, {{14, static_cast<u64>(arch::MemType::normal_wb)},
                                              {2, static_cast<u64>(arch::MemType::normal_nc)},
                                              {2, static_cast<u64>(arch::MemType::device_ngnre)},
                                              {1, static_cast<u64>(arch::MemType::device_ngnrne)}}));
  p.sw = static_cast<u8>(pick(r, {{6, 0}, {6, r.below(16)}, {1, 16}}));
  return p;
}

}  // namespace

Space make_space(const Geometry& geo, int where, bool cheap) {
  Space sp;
  sp.g = geo.g;
  sp.stage = geo.stage;
  sp.page = geo.page();
  const bool k4 = geo.g == Granule::k4K;
  sp.big = arch::level_size(geo.g, k4 ? 1 : 2);
  sp.small = arch::level_size(geo.g, 2);
  sp.nbig = geo.g == Granule::k16K ? 6 : 3;
  sp.cheap = cheap;
  const u64 window = sp.nbig * sp.big;
  const u64 lim = u64{1} << geo.ia_bits;
  switch (where) {
    case 1: sp.base = lim - window; break;
    case 2:
      sp.base = geo.root_pages > 1 ? geo.root_page_span() - (sp.nbig / 2) * sp.big : 5 * sp.big;
      break;
    default: sp.base = sp.big; break;
  }
  sp.pa_off = ((geo.oa.hi_field != 0 ? kHighRam : u64{1} << 40) + 3 * sp.big) - sp.base;  // wraps: pa = addr + pa_off
  sp.pa_top = u64{1} << geo.pa_bits;
  return sp;
}

Op gen_op(Rng& r, const Space& sp) {
  Op op;
  if (sp.stage == 2) {
    op.kind = static_cast<OpKind>(pick(r, {{35, static_cast<u64>(OpKind::map)},
                                          {12, static_cast<u64>(OpKind::unmap)},
                                          {14, static_cast<u64>(OpKind::set_owner)},
                                          {10, static_cast<u64>(OpKind::wrprotect)},
                                          {10, static_cast<u64>(OpKind::relax)},
                                          {8, static_cast<u64>(OpKind::split)}}));
  } else {
    op.kind = r.chance(2, 3) ? OpKind::map : OpKind::unmap;
  }
  const u64 smalls = sp.big / sp.small;       // small blocks per big one
  const u64 pages = sp.small / sp.page;       // pages per small block
  const bool two_levels = sp.small != sp.big;
  // Address: big-block index, then small-block and page offsets, each often zero (aligned).
  u64 addr = sp.base + r.below(sp.nbig) * sp.big;
  if (two_levels) addr += pick(r, {{4, 0}, {1, smalls - 1}, {5, r.below(smalls)}}) * sp.small;
  addr += pick(r, {{5, 0}, {4, r.below(pages)}, {1, pages - 1}}) * sp.page;
  // Size: big blocks, small blocks, pages.
  u64 size = pick(r, {{6, 0}, {3, 1}, {1, 2}}) * sp.big;
  if (two_levels) size += pick(r, {{4, 0}, {4, r.below(4)}, {2, r.below(smalls)}}) * sp.small;
  size += pick(r, {{4, 0}, {5, r.below(8)}, {1, pages - 1}}) * sp.page;
  if (sp.cheap) size %= 2 * sp.small;
  if (size == 0) size = sp.page;
  // Output address: usually the window's usual offset (so re-mapping often has the same
  // translation), sometimes shifted by a page, a small or a big block.
  const u64 delta = pick(r, {{13, 0}, {2, sp.small}, {2, sp.page}, {2, sp.big}});
  op.pa = addr + sp.pa_off + delta;
  // Page-sized mappings of a whole big block are slow with 4K pages: keep those small.
  const bool page_aligned_only = ((addr | op.pa) & (sp.small - 1)) != 0;
  if (page_aligned_only && size > 8 * sp.small) size = size % (8 * sp.small) + sp.page;
  op.size = size;
  op.addr = addr;
  if (r.chance(1, 40)) op.pa = sp.pa_top - sp.page;  // past the PA size (unless one page)
  op.prot = gen_prot(r, sp.stage);
  op.replace = sp.stage == 2 && r.chance(1, 3);
  op.owner = static_cast<u32>(pick(r, {{4, 1}, {3, 2}, {1, 3}, {2, 0}, {1, arch::kMaxOwnerId}}));
  op.sw = static_cast<u8>(pick(r, {{3, 0}, {6, r.below(16)}, {1, 16}}));
  op.to_pages = r.chance(1, 3) && (op.size <= 8 * sp.small || sp.small == sp.big);
  if (op.kind == OpKind::relax) {
    op.addr = addr + r.below(sp.page);
    op.prot.sw = r.chance(1, 8) ? static_cast<u8>(1 + r.below(15)) : 0;
    op.prot.perm = static_cast<pgtable::Perm>(1 + r.below(7));
  }
  // A third of the unmaps are of one page, half of those through lookup_page() and
  // unmap_page() (the reclaim's path), which must do what unmap() does.
  if (op.kind == OpKind::unmap && r.chance(1, 3)) {
    op.size = sp.page;
    op.by_ref = r.chance(1, 2);
  }
  // Occasionally an invalid range.
  switch (r.below(60)) {
    case 0: op.addr += sp.page / 2; break;
    case 1: op.size = 0; break;
    case 2: op.size += sp.page / 4; break;
    case 3: op.pa += sp.page / 2; break;
    default: break;
  }
  // lookup_page() takes any address in a page; only a well-formed one-page unmap goes that way.
  if (op.by_ref && (op.size != sp.page || (op.addr & (sp.page - 1)) != 0)) op.by_ref = false;
  return op;
}

namespace {
std::optional<Error> range_error(const Geometry& geo, u64 a, u64 s) {
  const u64 page = geo.page();
  if (s == 0 || ((a | s) & (page - 1)) != 0) return Error::einval;
  if (a + s < a) return Error::einval;
  if (a + s > (u64{1} << geo.ia_bits)) return Error::erange;
  return std::nullopt;
}
std::optional<Error> output_error(const Geometry& geo, u64 pa, u64 s) {
  if ((pa & (geo.page() - 1)) != 0 || pa + s < pa) return Error::einval;
  if (pa + s > (u64{1} << geo.pa_bits)) return Error::erange;
  return std::nullopt;
}
}  // namespace

std::optional<Error> apply_stage2(Model& m, const Op& op, const Geometry& geo, const LeafOf& leaf_of) {
  const u64 a = op.addr;
  const u64 b = op.addr + op.size;
  switch (op.kind) {
    case OpKind::map: {
      if (auto e = range_error(geo, a, op.size)) return e;
      if (auto e = output_error(geo, op.pa, op.size)) return e;
      if (op.prot.executable() && op.prot.type != arch::MemType::normal_wb) return Error::einval;
      if (op.prot.sw >= 16) return Error::einval;
      for (const Run& r : m.runs_in(a, b)) {
        if (r.st.kind != Kind::mapped) continue;
        const bool same = r.st.pa == op.pa + (r.start - a) && r.st.type == op.prot.type;
        if (!same && !op.replace) return Error::eexist;
      }
      m.set(a, b, State::mapping(op.pa, op.prot.perm, op.prot.type, op.prot.sw));
      return std::nullopt;
    }
    case OpKind::unmap:
      if (auto e = range_error(geo, a, op.size)) return e;
      m.set(a, b, State{});
      return std::nullopt;
    case OpKind::set_owner:
      // (The order of the two checks is the engine's choice; it checks the annotation first.)
      if (op.owner > arch::kMaxOwnerId || op.sw >= 16) return Error::einval;
      if (auto e = range_error(geo, a, op.size)) return e;
      m.set(a, b, State::annotation(op.owner, op.sw));
      return std::nullopt;
    case OpKind::wrprotect:
      if (auto e = range_error(geo, a, op.size)) return e;
      m.modify(a, b, [](State& s) {
        if (s.kind == Kind::mapped) s.perm = static_cast<u8>(s.perm & ~pgtable::kPermW);
      });
      return std::nullopt;
    case OpKind::relax: {
      if (op.addr >> geo.ia_bits) return Error::erange;
      if (op.prot.sw != 0) return Error::einval;
      const State s = m.at(op.addr);
      if (s.kind != Kind::mapped) return Error::enoent;
      if (op.prot.executable() && s.type != arch::MemType::normal_wb) return Error::einval;
      const auto [base, size] = leaf_of(op.addr);
      const u8 add = static_cast<u8>(op.prot.perm & pgtable::kPermRWX);
      m.modify(base, base + size, [add](State& st) { st.perm = static_cast<u8>(st.perm | add); });
      return std::nullopt;
    }
    case OpKind::split:
      if (auto e = range_error(geo, a, op.size)) return e;
      return std::nullopt;
  }
  return Error::einval;
}

std::optional<Error> apply_stage1(Model& m, const Op& op, const Geometry& geo,
                                  const std::vector<std::pair<u64, u64>>& leaves) {
  const u64 a = op.addr;
  const u64 b = op.addr + op.size;
  if (auto e = range_error(geo, a, op.size)) return e;
  if (op.kind == OpKind::map) {
    if (auto e = output_error(geo, op.pa, op.size)) return e;
    if (op.replace) return Error::einval;
    const pgtable::Prot& p = op.prot;
    if (!p.readable() || (p.writable() && p.executable()) || (p.executable() && arch::is_device(p.type)) ||
        p.sw >= 16)
      return Error::einval;
  } else if (op.kind != OpKind::unmap) {
    return Error::eopnotsupp;
  }
  for (const auto& [base, size] : leaves) {
    if (base + size <= a || base >= b) continue;
    const u64 x = base > a ? base : a;
    const u64 y = base + size < b ? base + size : b;
    const bool full = x == base && y == base + size;
    if (op.kind == OpKind::unmap) {
      if (!full) return Error::einval;
      continue;
    }
    const State old = m.at(x);
    const bool same_oa = old.pa == op.pa + (x - a);
    const bool same_type = old.perm == op.prot.perm && old.type == op.prot.type;
    if (same_oa && same_type) {
      if (old.sw == op.prot.sw || full) continue;
      return Error::einval;
    }
    return full ? Error::eexist : Error::einval;
  }
  if (op.kind == OpKind::map) {
    m.set(a, b, State::mapping(op.pa, op.prot.perm, op.prot.type, op.prot.sw));
  } else {
    m.set(a, b, State{});
  }
  return std::nullopt;
}

}  // namespace ptguard::pgtest
