#include "world.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace ptguard::tools {

using namespace ptguard::ownership;

namespace {
constexpr u64 kGiB = u64{1} << 30, kMiB = u64{1} << 20;
}

MachineSpec MachineSpec::small() {
  MachineSpec s;
  s.memory = {{0x4000'0000, kGiB}};
  s.mmio = {{0x0800'0000, 0x1'0000, "gic", false}, {0x0900'0000, 0x1000, "uart", true}};
  s.carveout = {0x4000'0000, 64 * kMiB};
  return s;
}

MachineSpec MachineSpec::large() {
  MachineSpec s = small();
  s.memory = {{0x4000'0000, 4 * kGiB}};
  return s;
}

std::string component_name(ComponentId id) {
  if (id == kHostId) return "host";
  if (id == kHypId) return "hyp";
  return fmt::format("guest:{}", id);
}

std::unique_ptr<World> World::create(const MachineSpec& spec, std::string* why) {
  std::unique_ptr<World> w(new World());
  w->spec_ = spec;
  std::sort(w->spec_.memory.begin(), w->spec_.memory.end(),
            [](const Region& a, const Region& b) { return a.base < b.base; });
  std::sort(w->spec_.mmio.begin(), w->spec_.mmio.end(),
            [](const MmioSpec& a, const MmioSpec& b) { return a.base < b.base; });
  const MachineSpec& s = w->spec_;
  if (s.memory.empty()) {
    *why = "the machine has no memory (add a `ram BASE SIZE` line)";
    return nullptr;
  }
  // What the CPU can address (docs/ownership.md, "52-bit addresses"): a region past it is refused
  // here with the reason, rather than as init's bare EINVAL.
  const bool pa52 = MP::uses_52bit(s.cpu);
  const unsigned pa_bits = std::min(s.cpu.pa_bits, pa52 ? arch::kMaxOaBits52 : arch::kMaxOaBits);
  const auto past_pa = [&](u64 base, u64 size, const char* what) {
    if (base + size >= base && base + size <= (u64{1} << pa_bits)) return false;
    const char* hint = pa52 || pa_bits < 48          ? ""
                       : s.cpu.pa_bits >= arch::kMaxOaBits52 ? " (the CPU has PARange 52 bits but not FEAT_LPA2: its tables stay 48-bit)"
                                                             : " (a 52-bit machine needs `cpu pa-bits 52`: FEAT_LPA2)";
    *why = fmt::format("{} {:#x} {:#x} lies past the CPU's {}-bit physical addresses{}", what, base, size, pa_bits, hint);
    return true;
  };
  for (const Region& r : s.memory)
    if (past_pa(r.base, r.size, "ram")) return nullptr;
  for (const MmioSpec& m : s.mmio)
    if (past_pa(m.base, m.size, "mmio")) return nullptr;
  for (const Region& r : s.memory) {
    if (Status st = w->mem_.add_region(r.base, r.size); !st) {
      *why = fmt::format("ram {:#x} {:#x}: {}", r.base, r.size, name(st.error()));
      return nullptr;
    }
    w->regions_.push_back(r);
  }
  for (const MmioSpec& m : s.mmio) {
    if (Status st = w->mem_.add_region(m.base, m.size); !st) {
      *why = fmt::format("mmio {:#x} {:#x}: {} (overlapping, unaligned or empty)", m.base, m.size, name(st.error()));
      return nullptr;
    }
    w->mmio_.push_back(MmioRegion{m.base, m.size, m.hyp});
  }
  const Region pool = s.pool.size != 0 ? s.pool : s.carveout;
  if (pool.size == 0) {
    *why = "no table pool: give `pool BASE SIZE` or a `carveout` (which holds the pool)";
    return nullptr;
  }
  // A pool outside every ram and mmio region is memory only the hypervisor has (the ownership
  // layer never hears of it, so the host can never own it): back it on its own. A pool must not
  // straddle a region's edge.
  bool inside = false, touches = false;
  const auto overlaps = [&](u64 base, u64 size) { return pool.base < base + size && base < pool.end(); };
  for (const Region& r : s.memory) {
    inside = inside || (pool.base >= r.base && pool.end() <= r.end() && pool.end() > pool.base);
    touches = touches || overlaps(r.base, r.size);
  }
  for (const MmioSpec& m : s.mmio) {
    if (overlaps(m.base, m.size)) {
      *why = fmt::format("pool {:#x} {:#x} overlaps the MMIO region at {:#x}", pool.base, pool.size, m.base);
      return nullptr;
    }
  }
  if (!inside && touches) {
    *why = fmt::format("pool {:#x} {:#x} straddles the edge of ram: put it inside ram (in the carve-out) or "
                       "outside every region",
                       pool.base, pool.size);
    return nullptr;
  }
  if (!inside) {
    if (Status st = w->mem_.add_region(pool.base, pool.size); !st) {
      *why = fmt::format("pool {:#x} {:#x}: {} (it must be page-aligned and not wrap)", pool.base, pool.size,
                         name(st.error()));
      return nullptr;
    }
  }
  Result<sim::SimPlatform> plat = sim::SimPlatform::create(w->mem_, pool.base, pool.size, kPage);
  if (!plat) {
    *why = fmt::format("pool {:#x} {:#x}: {} (it must be page-aligned)", pool.base, pool.size, name(plat.error()));
    return nullptr;
  }
  w->plat_ = std::make_unique<sim::SimPlatform>(std::move(*plat));
  const MachineDesc desc{w->regions_, w->mmio_, s.carveout, s.hyp_va_offset};
  w->meta_.resize(memory_pages(desc, kPage));
  w->scratch_.resize(w->meta_.size());
  w->mp_ = std::make_unique<MP>();
  if (Status st = w->mp_->init(*w->plat_, desc, w->meta_, s.cpu); !st) {
    *why = fmt::format("setting up the ownership layer failed: {} (regions must be sorted, disjoint, page-aligned; "
                       "the carve-out inside ram; pa + hyp-offset (modulo 2^64) of ram and the hypervisor's mmio inside "
                       "the 48-bit EL2 VA space: ram above 2^48 needs a negative offset, `hyp-offset -0x...`)",
                       name(st.error()));
    return nullptr;
  }
  return w;
}

bool World::is_memory(u64 pa) const {
  for (const Region& r : regions_)
    if (r.contains(pa)) return true;
  return false;
}

const MmioSpec* World::mmio_at(u64 pa) const {
  for (const MmioSpec& m : spec_.mmio)
    if (pa - m.base < m.size) return &m;
  return nullptr;
}

void World::prepare_guest(ComponentId id, u64 ipa, u64 size) {
  if (manual_memcache_.contains(id)) return;
  MP::Guest* g = mp_->guest(id);
  if (g == nullptr || !g->table.valid()) return;
  const u32 need = g->table.max_pages_needed(ipa, size == 0 ? kPage : size);
  (void)g->mc.topup(*plat_, need);
}

Status World::set_guest_memcache(ComponentId id, std::optional<u32> pages) {
  MP::Guest* g = mp_->guest(id);
  if (g == nullptr) return fail(Error::einval);
  if (!pages) {
    manual_memcache_.erase(id);
    return {};
  }
  manual_memcache_[id] = *pages;
  while (g->mc.size() > *pages) {
    const Result<u64> pa = g->mc.pop(*plat_);
    if (!pa) break;
    plat_->free_pages(*pa, 0);
  }
  return g->mc.topup(*plat_, *pages);
}

World::Access World::host_access(u64 pa, sim::Access a, bool fault_in) {
  const auto& c = mp_->host_config();
  const sim::Stage2Regs regs{c.vtcr, arch::make_vttbr(c, mp_->host_table().root_pa(), 0), c.fwb};
  Access out;
  out.t = sim::translate_stage2(mem_, regs, pa, a, false, impl());
  if (fault_in && out.t.fault == sim::FaultKind::translation) {
    out.fault_in = mp_->host_handle_fault(pa);
    if (*out.fault_in) out.t = sim::translate_stage2(mem_, regs, pa, a, false, impl());
  }
  return out;
}

World::Access World::hyp_access(u64 va, sim::Access a) const {
  const auto& c = mp_->hyp_config();
  const sim::Stage1Regs regs{c.tcr, c.mair, arch::make_ttbr0_el2(c, mp_->hyp_table().root_pa())};
  return Access{sim::translate_stage1_el2(mem_, regs, va, a, impl()), std::nullopt};
}

Result<World::Access> World::guest_access(ComponentId id, u64 ipa, sim::Access a) const {
  const MP::Guest* g = mp_->guest(id);
  if (g == nullptr || !g->table.valid()) return fail(Error::einval);
  const auto& c = mp_->host_config();
  const sim::Stage2Regs regs{c.vtcr, arch::make_vttbr(c, g->table.root_pa(), g->table.vmid()), c.fwb};
  return Access{sim::translate_stage2(mem_, regs, ipa, a, false, impl()), std::nullopt};
}

PageView World::view(u64 pa) const {
  PageView v;
  v.memory = is_memory(pa);
  v.mmio = mmio_at(pa) != nullptr;
  v.host = mp_->host_state(pa);
  v.hyp = mp_->hyp_state(pa);
  if (v.host == PageState::none) {
    v.owner = mp_->host_annotation_owner(pa);
    // MMIO given to the hypervisor, or memory nobody has: annotated; anything else unowned.
  } else {
    v.owner = kHostId;
  }
  if (v.memory) {
    const PageMeta& m = mp_->page_meta(pa);
    v.ffa = (m.flags & kMetaFfa) != 0;
    v.pins = m.hyp_pins;
    v.shares = m.guest_shares;
    v.guest = m.guest;
    if (v.host == PageState::shared_borrowed) v.owner = m.guest;
  } else if (!v.mmio) {
    v.host = PageState::none;
    v.owner = kHostId;
  }
  return v;
}

std::optional<u64> World::guest_pa(ComponentId id, u64 ipa) const {
  const MP::Guest* g = mp_->guest(id);
  if (g == nullptr || !g->table.valid()) return std::nullopt;
  const Result<pgtable::Leaf> l = g->table.lookup(ipa);
  if (!l || !arch::DescValid::get(l->entry)) return std::nullopt;
  const u64 oa = g->table.output_address(*l);
  return oa + ((ipa & ~(kPage - 1)) - l->base);
}

std::vector<ComponentId> World::guests() const { return guests_; }

Status World::create_guest(ComponentId id, u16 vmid) {
  Status st = mp_->create_guest(id, vmid);
  if (st) {
    guests_.insert(std::upper_bound(guests_.begin(), guests_.end(), id), id);
  }
  return st;
}

Status World::reclaim_guest(ComponentId id) {
  Status st = mp_->reclaim_guest(id);
  if (st) {
    std::erase(guests_, id);
    manual_memcache_.erase(id);
  }
  return st;
}

std::string World::check_invariants() const {
  MP::Violation v;
  if (mp_->check_invariants(scratch_, &v)) return {};
  return fmt::format("{} at pa {:#x} ({})", v.what, v.pa, component_name(v.who));
}

}  // namespace ptguard::tools
