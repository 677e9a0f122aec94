// Shared helpers of the engine's model-based, fault-injection and break-before-make tests:
//
//   - Geometry: what a checker needs to know of a table (granule, stage, root, registers).
//   - reachable() / check_structure() / snapshot(): structural invariants read straight from
//     simulated memory (every table page reachable once, refcount = 1 + non-empty entries, no
//     empty table left behind, allocator accounting, well-formed entries).
//   - Model: a plain page -> state model (empty / annotation / mapping) kept as runs, and
//     model_of_table(), which rebuilds one from a full Table::walk by decoding the entries'
//     bits itself; diff() compares two.
//   - check_translations(): asks the reference MMU about sampled addresses and compares its
//     answers with the model.
//   - check_events(): a break-before-make and TLB-invalidation checker over the event log of
//     one operation, one readable line per violation ("BBM valid->valid at 0x...").
//
// None of this uses the engine's own decisions: entries are decoded from arch/ bit fields and
// the model implements the documented semantics independently.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <ostream>
#include <string>
#include <vector>

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/error.hpp"
#include "ptguard/arch/granule.hpp"
#include "ptguard/arch/memattr.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/pgtable/table.hpp"
#include "ptguard/sim/event_log.hpp"
#include "ptguard/sim/phys_mem.hpp"
#include "ptguard/sim/ref_mmu.hpp"
#include "ptguard/sim/sim_platform.hpp"

namespace ptguard::pgtest {

std::string hex(u64 v);

/// What the checkers need to know about one table.
struct Geometry {
  arch::Granule g = arch::Granule::k4K;
  int stage = 2;
  int start_level = 0;
  unsigned root_pages = 1;
  u64 root_pa = 0;
  unsigned ia_bits = 0;
  unsigned pa_bits = 48;
  u16 vmid = 0;
  bool fwb = false;
  u64 tcr = 0;  ///< VTCR_EL2 (stage 2) or TCR_EL2 (stage 1)
  u64 mair = arch::kMairEl2;
  /// How descriptors hold addresses (a 52-bit format for FEAT_LPA2 / FEAT_LPA tables).
  arch::OaFormat oa = arch::kOa48;

  /// VTTBR_EL2 / TTBR0_EL2 for the root (the 52-bit BADDR layout with a 52-bit PA size).
  [[nodiscard]] u64 vttbr() const { return arch::ttbr_baddr(root_pa, pa_bits == 52) | arch::VttbrVmid::make(vmid); }
  [[nodiscard]] u64 ttbr0() const { return arch::ttbr_baddr(root_pa, pa_bits == 52); }
  /// The reference MMU's CPU: the default, or with a 52-bit table FEAT_LPA2 and a 52-bit PA.
  [[nodiscard]] sim::ImplChoices impl() const {
    sim::ImplChoices c;
    if (oa.hi_field != 0) {
      c.pa_bits = 52;
      c.lpa2 = true;
    }
    return c;
  }

  [[nodiscard]] u64 page() const { return arch::page_size(g); }
  /// Input addresses one root page covers.
  [[nodiscard]] u64 root_page_span() const {
    return u64{arch::entries_per_table(g)} * arch::level_size(g, start_level);
  }
};

template <typename T>
Geometry geometry_of(const T& t, u64 tcr) {
  Geometry geo;
  geo.g = T::kGranule;
  geo.stage = T::kStage2 ? 2 : 1;
  geo.start_level = t.start_level();
  geo.root_pages = t.root_pages();
  geo.root_pa = t.root_pa();
  geo.ia_bits = t.ia_bits();
  geo.pa_bits = t.pa_bits();
  geo.vmid = t.vmid();
  geo.fwb = t.fwb();
  geo.tcr = tcr;
  geo.oa = t.oa_format();
  return geo;
}

// ---------------------------------------------------------------------------------------------
// Structure.
// ---------------------------------------------------------------------------------------------

/// One table page reached from the root.
struct TablePage {
  u64 pa;
  int level;
  u64 base;         ///< first input address it covers
  u64 parent_desc;  ///< physical address of the entry pointing to it (0 for a root page)
};

struct Reach {
  std::vector<TablePage> pages;
  std::vector<std::string> errors;
};

/// Every table page reachable from the root (root pages first), with structural errors found on
/// the way: a page reached twice, a page not allocated, a block where none may be, an entry
/// with bits outside its format, a reserved encoding.
Reach reachable(sim::SimPlatform& p, const Geometry& geo);

/// Structural invariants: reachable() errors, per-page refcount == 1 + non-empty entries (root
/// pages too), no reachable non-root table without a non-empty entry, allocator outstanding ==
/// reachable pages + `other_pages` (pages held by memcaches and other tables), no violations
/// recorded by the platform.
std::vector<std::string> check_structure(sim::SimPlatform& p, const Geometry& geo, u64 other_pages);

/// The contents of every reachable table page (and its address), for "unchanged" checks.
struct Snapshot {
  std::vector<std::pair<u64, std::vector<u64>>> pages;
  std::vector<TablePage> shape;  ///< reachable(...).pages, for check_events
  [[nodiscard]] bool same_contents(const Snapshot& o) const { return pages == o.pages; }
};
Snapshot snapshot(sim::SimPlatform& p, const Geometry& geo);

// ---------------------------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------------------------

enum class Kind : u8 { empty, annot, mapped };

/// What one page (or a run of pages) holds.
struct State {
  Kind kind = Kind::empty;
  u32 owner = 0;  ///< annot
  u8 sw = 0;      ///< annot and mapped
  u64 pa = 0;     ///< mapped: output address of the first page of the run
  u8 perm = 0;    ///< mapped: pgtable::Perm bits
  arch::MemType type = arch::MemType::normal_wb;

  [[nodiscard]] static State annotation(u32 owner, u8 sw) {
    State s;
    s.kind = (owner == 0 && sw == 0) ? Kind::empty : Kind::annot;
    s.owner = owner;
    s.sw = sw;
    return s;
  }
  [[nodiscard]] static State mapping(u64 pa, u8 perm, arch::MemType type, u8 sw) {
    State s;
    s.kind = Kind::mapped;
    s.pa = pa;
    s.perm = perm;
    s.type = type;
    s.sw = sw;
    return s;
  }
  /// Same attributes (ignoring pa).
  [[nodiscard]] bool same_attrs(const State& o) const;
};

struct Run {
  u64 start;
  u64 end;
  State st;
};
std::string to_string(const State& s);
std::string to_string(const Run& r);

/// page -> State, as non-empty runs (absent = empty), kept normalised (adjacent equal runs,
/// mappings contiguous in output address, merged), so two models compare with runs() ==.
class Model {
 public:
  /// [a, b) becomes `s` (for a mapping, s.pa is the output address of a).
  void set(u64 a, u64 b, const State& s);
  /// Calls f(State&) for every non-empty run piece inside [a, b) (pieces are cut at a and b).
  void modify(u64 a, u64 b, const std::function<void(State&)>& f);
  /// The state of the page holding `addr` (for a mapping, pa is that page's output address).
  [[nodiscard]] State at(u64 addr) const;
  /// Non-empty runs overlapping [a, b), clipped to it, pa adjusted.
  [[nodiscard]] std::vector<Run> runs_in(u64 a, u64 b) const;
  [[nodiscard]] std::vector<Run> runs() const;
  [[nodiscard]] bool empty() const { return m_.empty(); }
  /// Builds a model from runs in ascending address order (they may be unmerged).
  static Model from_sorted(const std::vector<Run>& runs);

 private:
  void cut(u64 x);
  void normalize();
  std::map<u64, Run> m_;
};

/// Readable differences between an expected and an actual model (empty if equal).
std::vector<std::string> diff(const Model& expected, const Model& actual, std::size_t max_lines = 6);

/// Decodes one leaf (valid block/page or invalid entry) into a State, checking every bit is
/// one the engine may write: SH inner, AF set, a known memory type and XN encoding, no stray
/// bits; annotations with no reserved bits. Errors are appended to `errors`.
State decode_entry(const Geometry& geo, u64 desc, int level, std::vector<std::string>* errors);

/// The model a table holds, from a full read-only Table::walk.
template <typename T>
Model model_of_table(const T& t, const Geometry& geo, std::vector<std::string>* errors) {
  struct V {
    // Decodes, writes no entry: the table every step is compared with the model through is read
    // by the walker's read-ahead path (which the model test's kVisitReadOnly property checks
    // against the per-leaf one).
    static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitReadOnly; }
    const Geometry* geo;
    std::vector<std::string>* errors;
    std::vector<Run> runs;
    Status leaf(pgtable::VisitCtx& x) {
      if (x.old == 0) return {};
      State s = decode_entry(*geo, x.old, x.level, errors);
      if (s.kind == Kind::empty) return {};
      if (s.kind == Kind::mapped) s.pa += x.addr - x.base;
      runs.push_back(Run{x.addr, x.end, s});
      return {};
    }
  } v{&geo, errors, {}};
  const u64 end = geo.ia_bits >= 64 ? ~u64{0} : u64{1} << geo.ia_bits;
  if (Status st = t.walk(0, end, v); !st) errors->push_back(std::string("walk failed: ") + name(st.error()));
  return Model::from_sorted(v.runs);
}

// ---------------------------------------------------------------------------------------------
// The reference MMU.
// ---------------------------------------------------------------------------------------------

/// For each address (any byte address inside the IA space), translates a read, a write and an
/// instruction fetch through the reference MMU and compares with the model: output address,
/// permissions (Permission faults exactly where the model forbids), memory type,
/// shareability, software bits; Translation faults for empty and annotated pages, whose entry
/// `lookup` must return (the annotation, at the faulting level).
using LookupFn = std::function<Result<pgtable::Leaf>(u64)>;
std::vector<std::string> check_translations(const sim::PhysMem& mem, const Geometry& geo, const Model& model,
                                            const std::vector<u64>& addrs, const LookupFn& lookup);

// ---------------------------------------------------------------------------------------------
// Events.
// ---------------------------------------------------------------------------------------------

struct EventCheckOptions {
  /// The operation was asked to leave TLB invalidation of permission reductions to the caller.
  bool tlbi_deferred = false;
};

/// Checks the events of one operation (`ev`, from EventLog::mark() before it to its end) on a
/// table whose pages before the operation were `before` (reachable(...).pages):
///   - no valid->valid write changing the output address, memory type, shareability or
///     block/table-ness (stage 1: anything but the software bits);
///   - a descriptor made valid again after being broken within the operation only after
///     DSB ISHST; TLBI covering it; DSB ISH; TLBI VMALLE1IS (or VMALLS12E1IS); DSB ISH
///     (stage 1: never at all);
///   - a table page freed only after it was unlinked and the invalidation covering its range
///     completed (VMALLS12E1IS / ALLE2IS then DSB ISH);
///   - every valid->invalid change, and every permission reduction (unless deferred),
///     invalidated by the end of the operation;
///   - TLBIs for the table's VMID, level hints that match the entry.
std::vector<std::string> check_events(const Geometry& geo, const std::vector<TablePage>& before,
                                      const sim::EventView& ev, const EventCheckOptions& opt = {});

/// Joins lines for a failure message.
std::string join(const std::vector<std::string>& lines, std::size_t max_lines = 20);

// ---------------------------------------------------------------------------------------------
// Operations, their generator and the model's semantics.
// ---------------------------------------------------------------------------------------------

enum class OpKind : u8 { map, unmap, set_owner, wrprotect, relax, split };

struct Op {
  OpKind kind = OpKind::map;
  u64 addr = 0;
  u64 size = 0;
  u64 pa = 0;
  pgtable::Prot prot{};
  bool replace = false;
  u32 owner = 0;
  u8 sw = 0;
  bool to_pages = false;
  bool by_ref = false;  ///< unmap of one page: lookup_page(addr), then unmap_page() of what it found
};
std::ostream& operator<<(std::ostream& os, const Op& op);
std::string to_string(const Op& op);

/// The address window random operations work in.
struct Space {
  arch::Granule g;
  int stage = 2;
  u64 base = 0;    ///< window start (aligned to `big`)
  u64 big = 0;     ///< largest block size
  u64 small = 0;   ///< next block size down (== big if the granule has one block level)
  u64 page = 0;
  u64 nbig = 1;    ///< window size in `big` units
  u64 pa_off = 0;  ///< usual output address minus input address (aligned to `big`)
  u64 pa_top = u64{1} << 48;  ///< the output-address size (2^pa_bits), for the "past it" edge
  bool cheap = false;  ///< keep ranges small (fault injection: few pages per operation)
};

/// The window for a table: where = 0 near the bottom of the IA space, 1 at its very top (so
/// ranges can run past it), 2 across the boundary between two pages of a concatenated root.
/// With a 52-bit table the usual output addresses lie above 2^50 (kHighRam).
Space make_space(const Geometry& geo, int where, bool cheap = false);

/// Any source of randomness: below(n) in [0, n).
struct Rng {
  virtual ~Rng() = default;
  virtual u64 below(u64 n) = 0;
  bool chance(u64 num, u64 den) { return below(den) < num; }
};

/// A random operation in the window: aligned and unaligned to blocks, inside and across
/// blocks, with occasional invalid arguments (unaligned, zero, past the IA or PA size,
/// unencodable prot, owner or software bits out of range).
Op gen_op(Rng& r, const Space& sp);

/// Stage-2 semantics (table.hpp's documentation, implemented independently): the expected
/// error, or nullopt and `m` updated. `leaf_of(addr)` gives the [base, size) of the leaf that
/// maps addr (relax_perms acts on the whole leaf).
using LeafOf = std::function<std::pair<u64, u64>(u64)>;
std::optional<Error> apply_stage2(Model& m, const Op& op, const Geometry& geo, const LeafOf& leaf_of);

/// Stage-1 EL2 semantics (map and unmap); `leaves` are the valid leaves [base, size) before
/// the operation, in address order.
std::optional<Error> apply_stage1(Model& m, const Op& op, const Geometry& geo,
                                  const std::vector<std::pair<u64, u64>>& leaves);

/// Error or success, for messages.
std::string outcome(const std::optional<Error>& e);

// ---------------------------------------------------------------------------------------------
// A simulated machine with one table, its model, and a step that checks everything.
// ---------------------------------------------------------------------------------------------

inline constexpr u64 kRam = 0x4000'0000;
inline constexpr u64 kPool = 64ull << 20;
inline constexpr u64 kMappedRam = u64{1} << 40;
inline constexpr u64 kMappedRamSize = 16ull << 30;
/// With a 52-bit table (World's pa52): the memory mapped above 2^50 (OA[51:50] = 0b10).
inline constexpr u64 kHighRam = u64{0xb} << 48;
inline constexpr u64 kHighRamSize = kMappedRamSize;

template <typename T>
class World {
 public:
  static constexpr arch::Granule G = T::kGranule;
  static constexpr bool kStage2 = T::kStage2;

  /// `arm` runs on the platform before the table is created (fault injection).
  /// `pa52`: 52-bit addresses (a CPU with FEAT_LPA2 and FEAT_LPA, WalkOptions::pa_52bit).
  World(unsigned ia_bits, bool fwb, const pgtable::TableOptions& opt = {}, u16 vmid = 7,
        const std::function<void(sim::SimPlatform&)>& arm = {}, bool pa52 = false) {
    if (!mem.add_region(kRam, kPool)) throw std::runtime_error("add_region");
    // The memory the tables map (cache maintenance without FWB reaches it); reserved, never
    // touched.
    if (!mem.add_region(kMappedRam, kMappedRamSize)) throw std::runtime_error("add_region");
    if (!mem.add_region((u64{1} << 48) - (1ull << 20), 1ull << 20)) throw std::runtime_error("add_region");
    if (pa52) {
      if (!mem.add_region(kHighRam, kHighRamSize)) throw std::runtime_error("add_region");
      if (!mem.add_region((u64{1} << 52) - (1ull << 20), 1ull << 20)) throw std::runtime_error("add_region");
    }
    plat.emplace(mem, kRam, kPool, arch::page_size(G));
    if (arm) arm(*plat);
    arch::CpuFeatures cpu = pa52 ? arch::CpuFeatures::modern_52bit() : arch::CpuFeatures::modern();
    cpu.fwb = fwb;
    arch::WalkOptions wopt;
    wopt.pa_52bit = pa52;
    if constexpr (kStage2) {
      const auto cfg = arch::make_stage2_config(G, ia_bits, cpu, wopt);
      if (!cfg) throw std::runtime_error("stage2 config");
      create_status = create(*cfg, vmid, opt);
      tcr = cfg->vtcr;
    } else {
      const auto cfg = arch::make_stage1_config(G, ia_bits, cpu, wopt);
      if (!cfg) throw std::runtime_error("stage1 config");
      create_status = create1(*cfg, opt);
      tcr = cfg->tcr;
    }
    if (t) geo = geometry_of(*t, tcr);
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  sim::PhysMem mem;
  std::optional<sim::SimPlatform> plat;
  std::optional<T> t;
  Status create_status;
  u64 tcr = 0;
  Geometry geo;
  Model model;
  std::vector<std::string> trace;  ///< the operations so far, for failure messages
  u64 sample_seed = 0x9e37'79b9'7f4a'7c15ull;

  /// Pages the operation may take: exactly pages_needed_for_map() for a map, otherwise
  /// max_pages_needed() (0 for a range the engine will refuse).
  [[nodiscard]] u32 pages_for(const Op& op) const {
    if (op.kind == OpKind::relax) return 0;
    const u64 lim = u64{1} << geo.ia_bits;
    if (op.size == 0 || ((op.addr | op.size) & (geo.page() - 1)) != 0 || op.addr + op.size < op.addr ||
        op.addr + op.size > lim)
      return 0;
    if (op.kind == OpKind::map) {
      const Result<u32> n = t->pages_needed_for_map(op.addr, op.size, op.pa, op.prot, pgtable::MapOptions{op.replace});
      return n ? *n : 0;
    }
    return t->max_pages_needed(op.addr, op.size);
  }

  /// Runs `op` on the table.
  Status run(const Op& op, pgtable::Memcache& mc) {
    switch (op.kind) {
      case OpKind::map: return t->map(op.addr, op.size, op.pa, op.prot, mc, pgtable::MapOptions{op.replace});
      case OpKind::unmap: {
        if (!op.by_ref) return t->unmap(op.addr, op.size, mc);
        const Result<pgtable::PageRef> ref = t->lookup_page(op.addr);
        if (!ref) return fail(ref.error());
        return t->unmap_page(*ref, mc);
      }
      default: break;
    }
    if constexpr (kStage2) {
      switch (op.kind) {
        case OpKind::set_owner: return t->set_owner(op.addr, op.size, op.owner, op.sw, mc);
        case OpKind::wrprotect: return t->wrprotect(op.addr, op.size, mc);
        case OpKind::relax: return t->relax_perms(op.addr, op.prot);
        case OpKind::split: return t->split(op.addr, op.size, mc, op.to_pages);
        default: break;
      }
    }
    return fail(Error::eopnotsupp);
  }

  [[nodiscard]] std::vector<std::pair<u64, u64>> valid_leaves() const {
    struct V {
      // Writes no entry.
      static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitReadOnly; }
      std::vector<std::pair<u64, u64>> out;
      Status leaf(pgtable::VisitCtx& x) {
        if (arch::DescValid::get(x.old)) out.emplace_back(x.base, arch::level_size(G, x.level));
        return {};
      }
    } v;
    (void)t->walk(0, u64{1} << geo.ia_bits, v);
    return v.out;
  }

  /// The model's expectation for `op` (model updated on success).
  std::optional<Error> expect(Model& m, const Op& op) const {
    if constexpr (kStage2) {
      const sim::PhysMem& cmem = mem;
      const Geometry& g = geo;
      return apply_stage2(m, op, geo, [&cmem, &g](u64 addr) {
        const sim::Translation tr = sim::translate_stage2(cmem, sim::Stage2Regs{g.tcr, g.vttbr(), g.fwb}, addr,
                                                          sim::Access::read, false, g.impl());
        const u64 bs = tr.block_size != 0 ? tr.block_size : g.page();
        return std::pair<u64, u64>{addr & ~(bs - 1), bs};
      });
    } else {
      return apply_stage1(m, op, geo, valid_leaves());
    }
  }

  /// Everything checked after a step: the table against the model (full walk and reference
  /// MMU at `extra` and sampled addresses) and the structure, with `other_pages` held outside
  /// the table (memcaches).
  std::vector<std::string> check(const std::vector<u64>& extra, u64 other_pages) {
    std::vector<std::string> errors;
    const Model actual = model_of_table(*t, geo, &errors);
    for (std::string& d : diff(model, actual)) errors.push_back("walk vs model: " + d);
    std::vector<u64> addrs = extra;
    const std::vector<Run> runs = model.runs();
    const std::size_t stride = runs.size() / 24 + 1;
    for (std::size_t i = 0; i < runs.size(); i += stride) {
      addrs.push_back(runs[i].start);
      addrs.push_back(runs[i].end - 1);
      addrs.push_back(runs[i].end);
    }
    const u64 lim = u64{1} << geo.ia_bits;
    for (int i = 0; i < 6; ++i) {
      sample_seed ^= sample_seed << 13;
      sample_seed ^= sample_seed >> 7;
      sample_seed ^= sample_seed << 17;
      addrs.push_back(sample_seed % lim);
    }
    const T* tp = &*t;
    for (std::string& e : check_translations(mem, geo, model, addrs, [tp](u64 a) { return tp->lookup(a); }))
      errors.push_back(std::move(e));
    for (std::string& e : check_structure(*plat, geo, other_pages)) errors.push_back(std::move(e));
    return errors;
  }

  /// Runs one operation with `mc` (already filled by the caller) and checks everything. With
  /// `enomem_ok`, an ENOMEM where the model expects success is accepted if the table is
  /// unchanged (nothing written, memcache untouched): returns false (not applied).
  bool step(const Op& op, pgtable::Memcache& mc, std::vector<std::string>& errors, bool enomem_ok = false,
            u64 other_pages = 0) {
    trace.push_back(to_string(op));
    Model next = model;
    const std::optional<Error> want = expect(next, op);
    const Snapshot before = snapshot(*plat, geo);
    const std::vector<TablePage>& pages = before.shape;
    const u32 need = op.kind == OpKind::map ? pages_for(op) : 0;
    const u32 max_need = pages_for(op);
    const u32 mc_before = mc.size();
    const auto mark = plat->log().mark();
    const Status st = run(op, mc);
    const sim::EventView ev = plat->log().since(mark);
    const std::optional<Error> got = st ? std::nullopt : std::optional<Error>(st.error());
    const bool applied = !(enomem_ok && got == Error::enomem && !want);
    if (!applied) {
      if (mc_before >= max_need && max_need > 0 && op.kind != OpKind::map)
        errors.push_back("ENOMEM although the memcache held max_pages_needed = " + std::to_string(max_need));
      if (op.kind == OpKind::map && mc_before >= need)
        errors.push_back("ENOMEM although the memcache held pages_needed_for_map = " + std::to_string(need));
    } else if (got != want) {
      errors.push_back("result " + outcome(got) + ", model expects " + outcome(want));
    }
    if (got) {
      if (!snapshot(*plat, geo).same_contents(before)) errors.push_back("failed operation changed the table");
      if (ev.count(sim::EventKind::write) != 0)
        errors.push_back("failed operation wrote " + std::to_string(ev.count(sim::EventKind::write)) +
                         " descriptors");
      if (ev.count(sim::EventKind::tlbi) != 0 || ev.count(sim::EventKind::free) != 0)
        errors.push_back("failed operation invalidated or freed");
      if (mc.size() != mc_before) errors.push_back("failed operation took pages from the memcache");
    } else {
      const u32 used = mc_before - mc.size();
      if (op.kind == OpKind::map && used != need)
        errors.push_back("map took " + std::to_string(used) + " pages, pages_needed_for_map said " +
                         std::to_string(need));
      if (used > max_need)
        errors.push_back("took " + std::to_string(used) + " pages, max_pages_needed said " +
                         std::to_string(max_need));
    }
    // Identical content where nothing needs rewriting: nothing written, nothing invalidated.
    const bool no_change = diff(model, next).empty();
    const bool must_be_silent = (op.kind == OpKind::map && !op.replace) || op.kind == OpKind::wrprotect ||
                                op.kind == OpKind::relax;
    if (!got && no_change && must_be_silent &&
        (ev.count(sim::EventKind::write) != 0 || ev.count(sim::EventKind::tlbi) != 0)) {
      errors.push_back("no-op " + to_string(op) + " wrote " + std::to_string(ev.count(sim::EventKind::write)) +
                       " descriptors and issued " + std::to_string(ev.count(sim::EventKind::tlbi)) + " TLBIs");
    }
    if (applied && want == got) model = std::move(next);
    for (std::string& e : check_events(geo, pages, ev)) errors.push_back("events: " + e);
    std::vector<u64> extra;
    if (op.kind != OpKind::relax) {
      for (u64 a : {op.addr, op.addr + op.size - 1, op.addr - 1, op.addr + op.size}) extra.push_back(a);
    } else {
      extra.push_back(op.addr);
    }
    for (std::string& e : check(extra, mc.size() + other_pages)) errors.push_back(std::move(e));
    return applied;
  }

 private:
  template <typename Cfg>
  Status create(const Cfg& cfg, u16 vmid, const pgtable::TableOptions& opt) {
    auto r = T::create_stage2(*plat, cfg, vmid, opt);
    if (!r) return fail(r.error());
    t.emplace(std::move(*r));
    return {};
  }
  template <typename Cfg>
  Status create1(const Cfg& cfg, const pgtable::TableOptions& opt) {
    auto r = T::create_stage1(*plat, cfg, opt);
    if (!r) return fail(r.error());
    t.emplace(std::move(*r));
    return {};
  }
};

}  // namespace ptguard::pgtest
