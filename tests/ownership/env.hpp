// A simulated machine for ownership tests: 1 GiB of RAM at 0x4000_0000 (its first 80 MiB the
// hypervisor's carve-out, which holds the 64 MiB table pool), a UART and an interrupt
// controller as MMIO, the UART given to the hypervisor.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "ptguard/ownership/mem_protect.hpp"
#include "ptguard/sim/ref_mmu.hpp"
#include "ptguard/sim/sim_platform.hpp"

namespace ptguard::test {

using namespace ptguard::arch;
using namespace ptguard::ownership;

/// The machine over platform `Plat` (a SimPlatform, or a test's platform derived from it),
/// with `RamSize` bytes of RAM (at least the carve-out and 64 MiB more; the whole-machine
/// checks take time in proportion).
template <typename Plat, u64 RamSize = (u64{1} << 30)>
struct BasicOwnEnv {
  static constexpr u64 kRam = 0x4000'0000, kRamSize = RamSize;
  // The carve-out holds the table pool (its last 64 MiB): table pages must lie where the host
  // cannot reach them, which the invariant checker verifies.
  static constexpr u64 kCarve = kRam, kCarveSize = u64{80} << 20;
  static constexpr u64 kPool = kCarve + (u64{16} << 20), kPoolSize = u64{64} << 20;
  static constexpr u64 kUart = 0x0900'0000, kGic = 0x0800'0000;
  static constexpr u64 kHypOffset = u64{0xffff} << 32;  // hyp VA = PA + this (inside 48 bits)
  static constexpr u64 kPage = 4096;
  // Host memory the tests use: after the pool and carve-out.
  static constexpr u64 kMem = kRam + (u64{128} << 20);

  using MP = MemProtect<Granule::k4K, Plat>;

  sim::PhysMem mem;
  std::optional<Plat> plat;
  std::vector<Region> regions{{kRam, kRamSize}};
  std::vector<MmioRegion> mmio{{kGic, 0x1'0000, false}, {kUart, 0x1000, true}};
  std::vector<PageMeta> meta;
  MP mp;

  explicit BasicOwnEnv(bool finalize = true) {
    EXPECT_TRUE(mem.add_region(kRam, kRamSize));
    EXPECT_TRUE(mem.add_region(kGic, 0x1'0000));
    EXPECT_TRUE(mem.add_region(kUart, 0x1000));
    plat.emplace(mem, kPool, kPoolSize, kPage);
    const MachineDesc m{regions, mmio, Region{kCarve, kCarveSize}, kHypOffset};
    meta.resize(memory_pages(m, kPage));
    const Status st = mp.init(*plat, m, meta, CpuFeatures::modern());
    EXPECT_TRUE(st.has_value()) << (st ? "" : name(st.error()));
    if (st) {  // the regimes' DS, as the hardware would read range TLBI operands with it
      plat->set_regime_ds(2, mp.host_config().oa.ds());
      plat->set_regime_ds(1, mp.hyp_config().oa.ds());
    }
    if (finalize) mp.finalize();
  }

  sim::Translation host_access(u64 pa, sim::Access a = sim::Access::read) const {
    const auto& c = mp.host_config();
    return sim::translate_stage2(mem, sim::Stage2Regs{c.vtcr, make_vttbr(mp.host_table().root_pa(), 0), c.fwb}, pa, a);
  }
  sim::Translation hyp_access(u64 pa, sim::Access a = sim::Access::read) const {
    const auto& c = mp.hyp_config();
    return sim::translate_stage1_el2(mem, sim::Stage1Regs{c.tcr, c.mair, make_ttbr0_el2(mp.hyp_table().root_pa())},
                                     mp.hyp_va(pa), a);
  }
};

using OwnEnv = BasicOwnEnv<sim::SimPlatform>;

}  // namespace ptguard::test

namespace ptguard::test {

/// Asserts the ownership layer's invariants hold (gtest failure with the first violation).
template <typename MP>
::testing::AssertionResult invariants_hold(const MP& mp) {
  std::vector<u32> scratch(memory_pages(mp.machine(), MP::kPage));
  typename MP::Violation v;
  if (mp.check_invariants(scratch, &v)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << v.what << " at pa 0x" << std::hex << v.pa << " (component " << std::dec
                                       << v.who << ")";
}

}  // namespace ptguard::test
