// The freestanding link check's program: it calls into every freestanding layer with values
// the compiler cannot see, so that what the layers need at link time is really linked.
#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/error.hpp"
#include "ptguard/arch/granule.hpp"
#include "ptguard/arch/maintenance.hpp"
#include "ptguard/arch/memattr.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/ownership/mem_protect.hpp"
#include "ptguard/pgtable/table.hpp"

using namespace ptguard;
using namespace ptguard::arch;

namespace {
volatile u64 g_input = 0x4000'0000;
volatile unsigned g_bits = 40;
volatile u64 g_sink;

void exercise_arch() {
  const u64 pa = g_input;
  const Granule g = kAllGranules[pa % 3];
  const Result<Stage2Config> s2 = make_stage2_config(g, g_bits, CpuFeatures::modern());
  g_sink = s2.has_value() ? s2->vtcr : static_cast<u64>(code(s2.error()));
  const Result<Stage1Config> s1 = make_stage1_config(g, g_bits, CpuFeatures{});
  g_sink = s1 ? s1->tcr : 0;
  const S2Leaf leaf = S2Leaf::make(g, kLastLevel, pa)
                          .with_memattr(s2_memattr(MemType::normal_wb, true))
                          .with_read(true)
                          .with_write(true)
                          .with_sh(Shareability::inner)
                          .with_af(true);
  g_sink = static_cast<u64>(classify(leaf.raw(), g, kLastLevel));
  g_sink = decode_s2_memattr(leaf.memattr(), true).device;
  const InvalidDesc inv = InvalidDesc::annotation(static_cast<OwnerId>(pa), 3);
  g_sink = inv.owner() + inv.sw();
  g_sink = reinterpret_cast<u64>(name(static_cast<Error>(pa & 0x7f)));
  g_sink = make_vttbr(pa, 7);
}
// A platform as a hypervisor would write one: a static pool of pages, a bump allocator with a
// free list, counts in an array, plain stores, and maintenance reduced to counters.
struct StaticPlatform {
  static constexpr u64 kPages = 64;
  alignas(65536) static inline u64 pool[kPages][512];
  static inline u32 counts[kPages];
  static inline u64 free_list[kPages];
  static inline u32 nfree = 0;
  static inline u32 next = 0;
  volatile u64 maintenance = 0;

  u64 page_size() { return 4096; }
  Result<u64> alloc_pages(unsigned order) {
    const u32 n = 1u << order;
    if (order == 0 && nfree > 0) {
      const u64 pa = free_list[--nfree];
      counts[index(pa)] = 1;
      return pa;
    }
    while (next % n) ++next;
    if (next + n > kPages) return fail(Error::enomem);
    const u64 pa = reinterpret_cast<u64>(&pool[next][0]);
    for (u32 i = 0; i < n; ++i) counts[next + i] = 1;
    next += n;
    return pa;
  }
  void free_pages(u64 pa, unsigned) {
    __builtin_memset(reinterpret_cast<void*>(pa), 0, 4096);
    free_list[nfree++] = pa;
  }
  static u32 index(u64 pa) { return static_cast<u32>((pa - reinterpret_cast<u64>(&pool[0][0])) / 4096); }
  u64* phys_to_virt(u64 pa) { return reinterpret_cast<u64*>(pa); }
  u64 virt_to_phys(const u64* p) { return reinterpret_cast<u64>(p); }
  void get_page(u64 pa) { ++counts[index(pa)]; }
  u32 put_page(u64 pa) {
    const u32 c = --counts[index(pa)];
    if (c == 0) free_pages(pa & ~u64{4095}, 0);
    return c;
  }
  u32 page_count(u64 pa) { return counts[index(pa)]; }
  void write_desc(u64* p, u64 v) { *static_cast<volatile u64*>(p) = v; }
  void tlbi(Tlbi, u16, u64, int) { maintenance = maintenance + 1; }
  void tlbi_range(Tlbi, u16, const arch::TlbiRange&) { maintenance = maintenance + 1; }
  void barrier(Barrier) { maintenance = maintenance + 1; }
  void cache_op(CacheOp, u64, u64) { maintenance = maintenance + 1; }
  void* fixmap_map(u64 pa) { return reinterpret_cast<void*>(pa); }
  void fixmap_unmap() {}
  bool in_page_pool(u64 pa) const { return pa - reinterpret_cast<u64>(&pool[0][0]) < kPages * 4096; }
};
static_assert(Platform<StaticPlatform>);

void exercise_pgtable() {
  using namespace ptguard::pgtable;
  StaticPlatform plat;
  const u64 base = reinterpret_cast<u64>(&StaticPlatform::pool[0][0]) & ~((u64{1} << 30) - 1);
  CpuFeatures cpu;
  cpu.fwb = g_input & 1;
  auto s2cfg = make_stage2_config(Granule::k4K, g_bits, cpu);
  if (!s2cfg) return;
  auto s2 = Stage2Table<Granule::k4K, StaticPlatform>::create_stage2(plat, *s2cfg, 1);
  if (!s2) return;
  Memcache mc;
  if (!mc.topup(plat, 8)) return;
  const u64 ipa = g_input;
  g_sink = s2->map(ipa, 0x20'0000, base, Prot{kPermRW}, mc).has_value();
  g_sink = s2->set_owner(ipa + 0x20'0000, 0x1000, 2, 1, mc).has_value();
  g_sink = s2->wrprotect(ipa, 0x1000, mc).has_value();
  g_sink = s2->relax_perms(ipa, Prot{kPermRW}).has_value();
  g_sink = s2->mkyoung(ipa).has_value();
  g_sink = s2->test_and_clear_young(ipa, 0x1000, true).has_value();
  g_sink = s2->split(ipa, 0x20'0000, mc, true).has_value();
  if (auto l = s2->lookup(ipa)) g_sink = l->entry;
  g_sink = s2->unmap(ipa, 0x40'0000, mc).has_value();
  s2->destroy();
  auto s1cfg = make_stage1_config(Granule::k4K, g_bits, cpu);
  auto s1 = Stage1Table<Granule::k4K, StaticPlatform>::create_stage1(plat, *s1cfg);
  if (!s1) return;
  g_sink = s1->map(ipa, 0x1000, base, Prot{kPermRX}, mc).has_value();
  g_sink = s1->unmap(ipa, 0x1000, mc).has_value();
  s1->destroy();
  mc.drain(plat);
}
void exercise_ownership() {
  using namespace ptguard::ownership;
  StaticPlatform plat;
  static const Region memory[] = {{0x4000'0000, 0x40'0000}};
  static const MmioRegion mmio[] = {{0x0900'0000, 0x1000, true}};
  static PageMeta meta[0x400];
  const MachineDesc m{memory, mmio, Region{0x4000'0000, 0x1'0000}, u64{0xffff} << 32};
  static MemProtect<Granule::k4K, StaticPlatform, 4> mp;
  if (!mp.init(plat, m, meta, CpuFeatures{})) return;
  mp.finalize();
  const u64 pa = 0x4010'0000 + (g_input & 0xf000);
  g_sink = mp.host_handle_fault(pa).has_value();
  g_sink = mp.host_share_hyp(pa, 1).has_value();
  g_sink = mp.hyp_pin_shared(pa, 1).has_value();
  g_sink = mp.hyp_unpin_shared(pa, 1).has_value();
  g_sink = mp.host_unshare_hyp(pa, 1).has_value();
  g_sink = mp.host_donate_hyp(pa, 1).has_value();
  g_sink = mp.hyp_donate_host(pa, 1).has_value();
  g_sink = mp.host_share_ffa(pa, 1).has_value();
  g_sink = mp.host_unshare_ffa(pa, 1).has_value();
  g_sink = static_cast<u64>(mp.host_state(pa));
  if (!mp.create_guest(2, 1)) return;
  if (!mp.guest(2)->mc.topup(plat, 4)) return;
  g_sink = mp.host_share_guest(pa, 1, 2, 0, pgtable::kPermRW).has_value();
  g_sink = mp.host_unshare_guest(2, 0, 1).has_value();
  g_sink = mp.host_donate_guest(pa, 1, 2, 0).has_value();
  g_sink = mp.guest_share_host(2, 0, 1).has_value();
  g_sink = mp.guest_unshare_host(2, 0, 1).has_value();
  g_sink = mp.host_force_reclaim(pa).has_value();
  g_sink = mp.host_lend_guest(pa + 0x1000, 1, 2, 0x1000, pgtable::kPermRW).has_value();
  g_sink = mp.guest_relinquish(2, 0x1000, 1).has_value();
  g_sink = mp.host_reclaim_lent(pa + 0x1000, 1).has_value();
  g_sink = mp.guest_wrprotect(2, 0, 1).has_value();
  g_sink = mp.guest_relax_perms(2, 0, pgtable::kPermW).has_value();
  g_sink = mp.guest_mkyoung(2, 0).has_value();  // shared side: RwLock, compare-and-swap
  g_sink = mp.guest_test_clear_young(2, 0, 1, true).has_value();
  g_sink = mp.teardown_guest(2).has_value();
  g_sink = mp.reclaim_guest(2).has_value();
  static u32 scratch[0x400];
  typename decltype(mp)::Violation v;
  g_sink = mp.check_invariants(scratch, &v);
}
}  // namespace

extern "C" [[noreturn]] void _start() {
  exercise_arch();
  exercise_pgtable();
  exercise_ownership();
  for (;;) {
  }
}
