// Shared walkers and the hardware access-flag race (docs/concurrency.md, "Shared walkers for
// guest faults" and "In-place updates"):
//   - the MMU setting AF between the engine's read of an entry and its write is not lost, on
//     every in-place path (relax_perms, wrprotect's per-entry loop and its whole-run path, a
//     map that changes permissions in place); with HA off, or an entry whose AF is already
//     set, the engine stores as before (no compare-and-swap);
//   - Walk::shared: a change made from a value that is no longer there is EAGAIN and writes
//     nothing; test_and_clear_young retries instead;
//   - guest faults from two threads on one page: each call succeeds or is EAGAIN, and once
//     the EAGAINs are retried the page has the union of the permissions asked for.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <thread>
#include <vector>

#include "ownership/env.hpp"
#include "ptguard/pgtable/table.hpp"
#include "ptguard/sim/sim_platform.hpp"

namespace ptguard::test {
namespace {

using namespace ptguard::arch;
using namespace ptguard::pgtable;

// A platform that stands in for the MMU's hardware access-flag update (FEAT_HAFDBS): the first
// time the engine writes the armed entry, by store or by compare-and-swap, the "MMU" sets its
// AF just before (an access through the entry by another CPU, between the engine's read of
// the entry and its write). It counts the compare-and-swaps.
struct HwAfPlatform : sim::SimPlatform {
  using SimPlatform::SimPlatform;
  u64* armed = nullptr;
  int cas_calls = 0;
  void hardware_sets_af(u64* ptep) {
    if (ptep != armed) return;
    __atomic_fetch_or(ptep, S2Af::kMask, __ATOMIC_RELAXED);
    armed = nullptr;
  }
  void write_desc(u64* ptep, u64 v) {
    hardware_sets_af(ptep);
    SimPlatform::write_desc(ptep, v);
  }
  bool cmpxchg_desc(u64* ptep, u64 expected, u64 v) {
    ++cas_calls;
    hardware_sets_af(ptep);
    return SimPlatform::cmpxchg_desc(ptep, expected, v);
  }
};
static_assert(Platform<HwAfPlatform>);

constexpr u64 kPoolBase = 0x4000'0000, kPoolSize = u64{64} << 20;
constexpr u64 kPg = 4096;
constexpr u64 kIpa = u64{1} << 30;  // its own level-1 entry: a last-level table of its own
constexpr u64 kPa = u64{2} << 30;

struct AfEnv {
  sim::PhysMem mem;
  std::optional<HwAfPlatform> plat;
  Memcache mc;
  using S2 = Stage2Table<Granule::k4K, HwAfPlatform>;
  S2 t;

  explicit AfEnv(bool ha, const TableOptions& opt = {}) {
    EXPECT_TRUE(mem.add_region(kPoolBase, kPoolSize));
    EXPECT_TRUE(mem.add_region(kPa, u64{1} << 30));
    plat.emplace(mem, kPoolBase, kPoolSize, kPg);
    CpuFeatures cpu = CpuFeatures::modern();
    cpu.hw_access_flag = ha;
    auto cfg = make_stage2_config(Granule::k4K, 40, cpu);
    EXPECT_TRUE(cfg.has_value());
    auto tt = S2::create_stage2(*plat, *cfg, 1, opt);
    EXPECT_TRUE(tt.has_value());
    t = std::move(*tt);
    EXPECT_EQ(t.hw_access_flag(), ha);
    EXPECT_TRUE(mc.topup(*plat, 16));
  }
  ~AfEnv() {
    mc.drain(*plat);
    (void)t.flush_tlb();
    t.destroy();
  }
  // `n` pages mapped read-write at kIpa, then aged (AF 0) as the host's reclaim would.
  void map_old(u64 n) {
    ASSERT_TRUE(t.map(kIpa, n * kPg, kPa, Prot{kPermRW, MemType::normal_wb, 0}, mc));
    ASSERT_TRUE(*t.test_and_clear_young(kIpa, n * kPg, true));
    for (u64 i = 0; i < n; ++i) ASSERT_FALSE(S2Af::get(entry(i)));
  }
  u64* ptep(u64 i) {
    struct V {
      static constexpr unsigned visits() { return kVisitLeaf; }
      u64* out = nullptr;
      Status leaf(VisitCtx& x) {
        out = x.ptep;
        return {};
      }
    } v;
    EXPECT_TRUE(t.walk(kIpa + i * kPg, kIpa + (i + 1) * kPg, v));
    return v.out;
  }
  u64 entry(u64 i) { return __atomic_load_n(ptep(i), __ATOMIC_RELAXED); }
};

TEST(HwAccessFlag, RelaxPermsKeepsAnAfTheMmuSetsBetweenReadAndWrite) {
  AfEnv e(true);
  e.map_old(1);
  e.plat->armed = e.ptep(0);
  ASSERT_TRUE(e.t.relax_perms(kIpa, Prot{kPermX, MemType::normal_wb, 0}));
  EXPECT_EQ(e.plat->armed, nullptr);  // the "MMU" did set AF in between
  EXPECT_TRUE(S2Af::get(e.entry(0)));
  EXPECT_TRUE(Stage2::executable(e.entry(0)));
  EXPECT_TRUE(e.plat->violations().empty());
}

TEST(HwAccessFlag, WrprotectKeepsAnAfTheMmuSetsOnOnePageAndOnAWholeRun) {
  for (const u64 n : {u64{1}, u64{64}}) {  // one page: the per-entry loop; 64: the whole-run path
    SCOPED_TRACE(n);
    AfEnv e(true);
    e.map_old(n);
    e.plat->armed = e.ptep(n / 2);
    ASSERT_TRUE(e.t.wrprotect(kIpa, n * kPg, e.mc));
    EXPECT_EQ(e.plat->armed, nullptr);
    for (u64 i = 0; i < n; ++i) {
      EXPECT_FALSE(S2ApWrite::get(e.entry(i))) << i;
      EXPECT_EQ(S2Af::get(e.entry(i)), i == n / 2) << i;  // only the page the MMU used is young
    }
  }
}

TEST(HwAccessFlag, WithoutHaOrWithAfSetTheEngineStoresWithoutCompareAndSwap) {
  {
    AfEnv e(false);  // HA off: AF changes only by software, under the caller's lock
    e.map_old(64);
    ASSERT_TRUE(e.t.wrprotect(kIpa, 64 * kPg, e.mc));
    ASSERT_TRUE(e.t.relax_perms(kIpa, Prot{kPermW, MemType::normal_wb, 0}));
    EXPECT_EQ(e.plat->cas_calls, 0);
  }
  {
    AfEnv e(true);  // HA on, AF already 1: the MMU leaves the entry alone
    ASSERT_TRUE(e.t.map(kIpa, 64 * kPg, kPa, Prot{kPermRW, MemType::normal_wb, 0}, e.mc));
    ASSERT_TRUE(e.t.wrprotect(kIpa, 64 * kPg, e.mc));
    ASSERT_TRUE(e.t.relax_perms(kIpa, Prot{kPermW, MemType::normal_wb, 0}));
    EXPECT_EQ(e.plat->cas_calls, 0);
  }
}

TEST(SharedWalk, AChangeFromAValueNoLongerThereIsEagainAndWritesNothing) {
  AfEnv e(true);
  e.map_old(1);
  e.plat->armed = e.ptep(0);  // the MMU sets AF between the shared walker's read and its CAS
  EXPECT_EQ(e.t.relax_perms<Walk::shared>(kIpa, Prot{kPermX, MemType::normal_wb, 0}).error(), Error::eagain);
  EXPECT_TRUE(S2Af::get(e.entry(0)));
  EXPECT_FALSE(Stage2::executable(e.entry(0)));  // nothing of the failed change was written
  ASSERT_TRUE(e.t.relax_perms<Walk::shared>(kIpa, Prot{kPermX, MemType::normal_wb, 0}));  // the retry
  EXPECT_TRUE(Stage2::executable(e.entry(0)));
  ASSERT_TRUE(*e.t.test_and_clear_young<Walk::shared>(kIpa, kPg, true));
  e.plat->armed = e.ptep(0);
  EXPECT_EQ(e.t.mkyoung<Walk::shared>(kIpa).error(), Error::eagain);  // lost to the MMU ...
  EXPECT_TRUE(S2Af::get(e.entry(0)));                                 // ... which set it
  EXPECT_TRUE(e.t.mkyoung<Walk::shared>(kIpa));
  // A check that refuses the leaf stops the operation before anything changes.
  const auto refuse = [](u64) -> Status { return fail(Error::eperm); };
  EXPECT_EQ(e.t.relax_perms<Walk::shared>(kIpa, Prot{kPermW, MemType::normal_wb, 0}, TlbPolicy::invalidate, refuse)
                .error(),
            Error::eperm);
  EXPECT_EQ((e.t.test_and_clear_young<Walk::shared>(kIpa, kPg, true, TlbPolicy::invalidate, refuse).error()),
            Error::eperm);
  EXPECT_TRUE(S2Af::get(e.entry(0)));
  EXPECT_EQ(e.t.mkyoung<Walk::shared>(kIpa + kPg).error(), Error::enoent);
  EXPECT_TRUE(e.plat->violations().empty());
}

// Two of a guest's CPUs fault on the same page at once, one asking for write, the other for
// execute. Each call succeeds or is EAGAIN (its compare-and-swap lost); the loser retries, as
// the guest would on taking the fault again, and the page ends with read, write and execute.
// A shared walker that stored instead of swapping could return success for both and lose one.
// A shared walker cannot break a contiguous run (no break-before-make under the shared side),
// so a table with TableOptions::contiguous refuses shared walks (EOPNOTSUPP) before reading
// anything; the exclusive side changes the same entry, breaking its run first.
TEST(SharedWalk, ATableWithContiguousRunsRefusesSharedWalks) {
  TableOptions opt;
  opt.contiguous = true;
  AfEnv e(false, opt);
  ASSERT_TRUE(e.t.map(kIpa, 16 * kPg, kPa, Prot{kPermR, MemType::normal_wb, 0}, e.mc));
  ASSERT_TRUE(S2Contiguous::get(e.entry(3)));  // a run formed
  const u64 before = e.entry(3);
  const Prot rw{kPermRW, MemType::normal_wb, 0};
  EXPECT_EQ(e.t.relax_perms<Walk::shared>(kIpa + 3 * kPg, rw).error(), Error::eopnotsupp);
  EXPECT_EQ(e.t.mkyoung<Walk::shared>(kIpa + 3 * kPg).error(), Error::eopnotsupp);
  EXPECT_EQ(e.t.test_and_clear_young<Walk::shared>(kIpa, kPg, true).error(), Error::eopnotsupp);
  EXPECT_EQ(e.entry(3), before);
  ASSERT_TRUE(e.t.relax_perms(kIpa + 3 * kPg, rw));
  EXPECT_TRUE(S2ApWrite::get(e.entry(3)));
  EXPECT_FALSE(S2Contiguous::get(e.entry(3)));
  EXPECT_FALSE(S2Contiguous::get(e.entry(0)));  // the whole run was broken
  EXPECT_TRUE(e.plat->violations().empty());
}

TEST(SharedWalk, ConcurrentRelaxOfOnePageEndsWithTheUnionOfThePermissions) {
  OwnEnv e;
  auto& mp = e.mp;
  constexpr ComponentId g = kFirstGuestId;
  constexpr u64 M = OwnEnv::kMem;
  ASSERT_TRUE(mp.create_guest(g, 1));
  ASSERT_TRUE(mp.topup_guest_memcache(g, 16));
  constexpr int kRounds = 300;
  int eagain = 0;
  for (int r = 0; r < kRounds; ++r) {
    ASSERT_TRUE(mp.host_share_guest(M, 1, g, 0, kPermR));
    std::barrier start(2);
    std::atomic<int> bad{0}, lost{0};
    auto fault = [&](Perm perm) {
      start.arrive_and_wait();
      Status st = mp.guest_relax_perms(g, 0, perm);
      if (!st && st.error() == Error::eagain) {
        lost.fetch_add(1);
        st = mp.guest_relax_perms(g, 0, perm);
      }
      if (!st) bad.fetch_add(1);
    };
    std::thread a(fault, kPermW), b(fault, kPermX);
    a.join();
    b.join();
    ASSERT_EQ(bad.load(), 0) << "round " << r;
    eagain += lost.load();
    const Result<Leaf> l = mp.guest(g)->table.lookup(0);
    ASSERT_TRUE(l);
    const Prot p = Stage2::decode(l->entry, mp.guest(g)->table.fwb());
    ASSERT_EQ(p.perm, kPermRWX) << "round " << r;
    const Status un = mp.host_unshare_guest(g, 0, 1);
    ASSERT_TRUE(un) << name(un.error());
    ASSERT_TRUE(mp.topup_guest_memcache(g, 16));  // the unmap freed the tables the share took
  }
  RecordProperty("eagain", eagain);
  EXPECT_TRUE(invariants_hold(mp));
  EXPECT_TRUE(e.plat->violations().empty());
}

}  // namespace
}  // namespace ptguard::test
