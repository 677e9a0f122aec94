// The simulated machine's Platform (see sim_platform.hpp).
#include "ptguard/sim/sim_platform.hpp"

#include <cstdio>
#include <string>

namespace ptguard::sim {

namespace {

std::string hex(u64 v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string hex_ptr(const void* p) { return hex(reinterpret_cast<std::uintptr_t>(p)); }

}  // namespace

SimPlatform::SimPlatform(PhysMem& mem, u64 pool_base, u64 pool_size, u64 page_size)
    : mem_(&mem),
      alloc_(mem, pool_base, pool_size, page_size),
      pool_base_(pool_base),
      pool_bytes_(pool_size),
      pool_host_(mem.ptr(pool_base)),
      pool_host_addr_(reinterpret_cast<std::uintptr_t>(pool_host_)) {
  // The pool lies in one region (PhysMem::backed may also accept a range over adjacent
  // regions, whose host mappings are not contiguous): keep the fast paths to that region.
  for (const PhysMem::Region& r : mem.regions()) {
    if (pool_base >= r.base && pool_base - r.base < r.size) {
      const u64 room = r.size - (pool_base - r.base);
      if (room < pool_bytes_) pool_bytes_ = room;
    }
  }
  refresh_host_ranges();
}

Result<SimPlatform> SimPlatform::create(PhysMem& mem, u64 pool_base, u64 pool_size,
                                        u64 page_size) {
  if (const Status s = PageAllocator::check(mem, pool_base, pool_size, page_size); !s) {
    return fail(s.error());
  }
  return SimPlatform(mem, pool_base, pool_size, page_size);
}

void SimPlatform::refresh_host_ranges() {
  host_ranges_.clear();
  for (const PhysMem::Region& r : mem_->regions()) {
    host_ranges_.push_back(
        HostRange{reinterpret_cast<std::uintptr_t>(mem_->ptr(r.base)), r.base, r.size});
  }
}

Result<u64> SimPlatform::alloc_pages(unsigned order) {
  const std::lock_guard guard(mu_.m);
  const Result<u64> r = alloc_.alloc(order);
  if (r) {
    log_.record(Event::alloc(*r, order, alloc_.page_size() << order));
  } else {
    log_.record(Event::alloc_fail(order, r.error()));
  }
  return r;
}

void SimPlatform::free_pages(u64 pa, unsigned order) {
  const std::lock_guard guard(mu_.m);
  if (alloc_.free(pa, order)) {
    log_.record(Event::free(pa, order, alloc_.page_size() << order, alloc_.poison_on_free(),
                            PageAllocator::kFreePoison));
  }
}

u64* SimPlatform::phys_to_virt_slow(u64 pa) {
  if (pa % 8 != 0) {
    alloc_.report(ViolationKind::misaligned, pa, "phys_to_virt of " + hex(pa) + ": not 8-byte aligned");
    return nullptr;
  }
  std::byte* p = mem_->ptr(pa);
  if (p == nullptr) {
    alloc_.report(ViolationKind::unbacked, pa, "phys_to_virt of " + hex(pa) + ": not backed");
    return nullptr;
  }
  return reinterpret_cast<u64*>(p);
}

u64 SimPlatform::virt_to_phys_slow(const u64* ptr) {
  const auto p = reinterpret_cast<std::uintptr_t>(ptr);
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (const HostRange& r : host_ranges_) {
      if (p - r.host < r.size) return r.base + (p - r.host);
    }
    refresh_host_ranges();  // regions may have been added since
  }
  alloc_.report(ViolationKind::bad_pointer, 0,
                "virt_to_phys of " + hex_ptr(ptr) + ": not a pointer into simulated memory");
  return kBadPa;
}

void SimPlatform::get_page(u64 pa) {
  const std::lock_guard guard(mu_.m);
  if (alloc_.get(pa) && log_refcounts_) log_.record(Event::get_page(pa, alloc_.count(pa)));
}

u32 SimPlatform::put_page(u64 pa) {
  const std::lock_guard guard(mu_.m);
  const std::optional<PageAllocator::Block> block = alloc_.block_containing(pa);
  const Result<u32> r = alloc_.put(pa);
  if (!r) return 0;
  if (log_refcounts_) log_.record(Event::put_page(pa, *r));
  if (*r == 0 && block && !alloc_.allocated(pa)) {
    log_.record(Event::free(block->pa, block->order, alloc_.page_size() << block->order,
                            alloc_.poison_on_free(), PageAllocator::kFreePoison));
  }
  return *r;
}

void SimPlatform::write_desc(u64* ptep, u64 value) {
  const std::lock_guard guard(mu_.m);
  if (reinterpret_cast<std::uintptr_t>(ptep) % 8 != 0) {
    alloc_.report(ViolationKind::misaligned, 0,
                  "write_desc to " + hex_ptr(ptep) + ": not 8-byte aligned (nothing written)");
    return;
  }
  const auto p = reinterpret_cast<std::uintptr_t>(ptep);
  u64 pa;
  if (p - pool_host_addr_ < pool_bytes_) {
    pa = pool_base_ + (p - pool_host_addr_);
  } else {
    pa = virt_to_phys_slow(ptep);  // reports bad_pointer itself
    if (pa == kBadPa) return;
  }
  if (alloc_.in_pool(pa) && !alloc_.allocated(pa)) {
    alloc_.report(ViolationKind::write_to_free_page, pa,
                  "write_desc to " + hex(pa) + " (" + hex(value) +
                      "), in a free table page (written all the same)");
  }
  const u64 old = *ptep;
  *ptep = value;
  log_.record(Event::write(pa, old, value));
}

bool SimPlatform::cmpxchg_desc(u64* ptep, u64 expected, u64 value) {
  const std::lock_guard guard(mu_.m);
  if (reinterpret_cast<std::uintptr_t>(ptep) % 8 != 0) {
    alloc_.report(ViolationKind::misaligned, 0,
                  "cmpxchg_desc to " + hex_ptr(ptep) + ": not 8-byte aligned (nothing written)");
    return false;
  }
  const auto p = reinterpret_cast<std::uintptr_t>(ptep);
  u64 pa;
  if (p - pool_host_addr_ < pool_bytes_) {
    pa = pool_base_ + (p - pool_host_addr_);
  } else {
    pa = virt_to_phys_slow(ptep);  // reports bad_pointer itself
    if (pa == kBadPa) return false;
  }
  if (alloc_.in_pool(pa) && !alloc_.allocated(pa)) {
    alloc_.report(ViolationKind::write_to_free_page, pa,
                  "cmpxchg_desc to " + hex(pa) + " (" + hex(value) +
                      "), in a free table page (carried out all the same)");
  }
  // Atomic even under the mutex: shared walkers (and a test standing in for the MMU's
  // access-flag update) read and change entries without it.
  const u64 old = expected;
  if (!__atomic_compare_exchange_n(ptep, &expected, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return false;
  log_.record(Event::write(pa, old, value));
  return true;
}

void SimPlatform::tlbi(arch::Tlbi op, u16 vmid, u64 addr, int level) {
  const std::lock_guard guard(mu_.m);
  if (level != arch::kTlbiLevelUnknown && (level < 0 || level > 3)) {
    alloc_.report(ViolationKind::bad_argument, addr,
                  std::string(arch::name(op)) + " with level hint " + std::to_string(level) +
                      " (0..3 or kTlbiLevelUnknown)");
  }
  if (arch::is_range(op)) {
    alloc_.report(ViolationKind::bad_argument, addr,
                  std::string(arch::name(op)) + " through tlbi(): a range form has no size (tlbi_range)");
  }
  log_.record(Event::tlbi(op, vmid, addr, level));
}

void SimPlatform::tlbi_range(arch::Tlbi op, u16 vmid, const arch::TlbiRange& r) {
  const std::lock_guard guard(mu_.m);
  const u64 page = alloc_.page_size();
  std::string why;
  if (!arch::is_range(op)) why = "not a range form";
  else if ((r.addr & (page - 1)) != 0) why = "address not aligned to the page size";
  else if (r.scale > 3) why = "SCALE " + std::to_string(r.scale) + " (0..3)";
  else if (r.num > 31) why = "NUM " + std::to_string(r.num) + " (0..31)";
  else if (r.level != arch::kTlbiLevelUnknown && (r.level < 1 || r.level > 3))
    why = "level hint " + std::to_string(r.level) + " (1..3 or kTlbiLevelUnknown)";
  // What the hardware does with it: Xt as El2Platform builds it, read back with the DS of the
  // regime the TLBI targets (BaseADDR in 64 KiB units with DS = 1, 4K and 16K; maintenance.hpp).
  const arch::Granule g = page == 4096 ? arch::Granule::k4K : page == 16384 ? arch::Granule::k16K : arch::Granule::k64K;
  const int set = op == arch::Tlbi::ripas2e1is ? ds_s2_ : ds_s1_;
  const bool regime_ds = set < 0 ? r.ds : set == 1;
  arch::TlbiRange hw = r;
  if (why.empty()) {
    if (arch::tlbi_range_ds_applies(g, true) && r.ds != regime_ds) {
      why = std::string("built for DS = ") + (r.ds ? "1" : "0") + ", the regime has DS = " + (regime_ds ? "1" : "0");
    } else if (arch::tlbi_range_ds_applies(g, regime_ds) && (r.addr & (arch::kTlbiRangeDsAlign - 1)) != 0) {
      why = "address not aligned to 64 KiB with DS = 1 (BaseADDR counts 64 KiB units)";
    }
    hw = arch::decode_tlbi_range(arch::tlbi_range_operand(g, r), regime_ds).range;
    if (hw.addr != r.addr) why += (why.empty() ? "" : ": ") + std::string("the hardware's range starts at ") + hex(hw.addr);
  }
  if (!why.empty()) {
    alloc_.report(ViolationKind::bad_argument, r.addr,
                  std::string(arch::name(op)) + " range at " + hex(r.addr) + ": " + why);
  }
  log_.record(Event::tlbi_range(op, vmid, hw, page));
}

void SimPlatform::cache_op(arch::CacheOp op, u64 pa, u64 size) {
  const std::lock_guard guard(mu_.m);
  if (!mem_->backed(pa, size)) {
    alloc_.report(ViolationKind::unbacked, pa,
                  std::string(arch::name(op)) + " over [" + hex(pa) + ", +" + hex(size) +
                      "): not backed");
  }
  log_.record(Event::cache(op, pa, size));
}

void* SimPlatform::fixmap_map(u64 pa) {
  const std::thread::id self = std::this_thread::get_id();
  if (fixmap_holder_.load() == self) {  // only this thread writes its own id there
    const std::lock_guard guard(mu_.m);
    alloc_.report(ViolationKind::fixmap_busy, pa,
                  "fixmap_map of " + hex(pa) + " while " + hex(fixmap_pa_.value_or(0)) +
                      " is mapped by this thread (one slot; refused)");
    return nullptr;
  }
  fixmap_slot_.m.lock();  // another thread's use ends with its fixmap_unmap
  const std::lock_guard guard(mu_.m);
  const u64 page = pa & ~(alloc_.page_size() - 1);
  if (!mem_->backed(page, alloc_.page_size())) {
    alloc_.report(ViolationKind::unbacked, pa, "fixmap_map of " + hex(pa) + ": page not backed");
    fixmap_slot_.m.unlock();
    return nullptr;
  }
  fixmap_pa_ = pa;
  fixmap_holder_.store(self);
  log_.record(Event::fixmap_map(pa));
  return mem_->ptr(pa);
}

void SimPlatform::fixmap_unmap() {
  if (fixmap_holder_.load() != std::this_thread::get_id()) {
    const std::lock_guard guard(mu_.m);
    alloc_.report(ViolationKind::fixmap_not_mapped, 0, "fixmap_unmap with nothing mapped by this thread");
    return;
  }
  {
    const std::lock_guard guard(mu_.m);
    fixmap_pa_.reset();
    fixmap_holder_.store(std::thread::id{});
    log_.record(Event::fixmap_unmap());
  }
  fixmap_slot_.m.unlock();
}

namespace {
// The lock-order checker's per-thread record: bit r set while this thread holds a lock of rank
// r, and every rank taken since the last reset (ranks above 63 share bit 63).
thread_local u64 t_ranks_held = 0;
thread_local u64 t_ranks_taken = 0;
thread_local u64 t_ranks_taken_shared = 0;
u64 rank_bit(unsigned rank) { return u64{1} << (rank > 63 ? 63 : rank); }
}  // namespace

void SimPlatform::lock_order_acquire(unsigned rank) {
  const u64 bit = rank_bit(rank);
  // Legal only if every rank held is below this one: no held bit at or above `bit`.
  if ((t_ranks_held & ~(bit - 1)) != 0) {
    lock_order_violations_.n.fetch_add(1);
    std::string held;
    for (unsigned r = 0; r < 64; ++r)
      if ((t_ranks_held >> r) & 1) held += (held.empty() ? "" : ", ") + std::to_string(r);
    const std::lock_guard guard(mu_.m);
    alloc_.report(ViolationKind::lock_order, 0,
                  "lock of rank " + std::to_string(rank) + " taken while holding ranks {" + held +
                      "} (the order is host 0, hypervisor 1, guests 2+)");
  }
  t_ranks_held |= bit;
  t_ranks_taken |= bit;
}

void SimPlatform::lock_order_acquire_shared(unsigned rank) {
  // The same rule as for the exclusive side (ownership/locking.hpp); recorded apart as well.
  lock_order_acquire(rank);
  t_ranks_taken_shared |= rank_bit(rank);
}

void SimPlatform::lock_order_release(unsigned rank) { t_ranks_held &= ~rank_bit(rank); }

u64 SimPlatform::lock_ranks_held() { return t_ranks_held; }
u64 SimPlatform::lock_ranks_taken() { return t_ranks_taken; }
u64 SimPlatform::lock_ranks_taken_shared() { return t_ranks_taken_shared; }
void SimPlatform::reset_lock_ranks_taken() {
  t_ranks_taken = 0;
  t_ranks_taken_shared = 0;
}

}  // namespace ptguard::sim
