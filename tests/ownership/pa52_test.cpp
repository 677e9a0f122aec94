// The ownership layer on a CPU with 52-bit physical addresses (FEAT_LPA2 with the 4K granule):
// RAM above 2^48, so every table holds addresses only the 52-bit descriptor format can (OA[49:48]
// in place, OA[51:50] in bits [9:8]: Arm ARM D8.3.1). Transitions of such pages, checked by the
// reference MMU with the CPU's 52-bit implementation choices and by the access checker; and a
// 48-bit CPU refusing the same machine.
#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "ptguard/ownership/mem_protect.hpp"
#include "ptguard/sim/access_check.hpp"
#include "ptguard/sim/ref_mmu.hpp"
#include "ptguard/sim/sim_platform.hpp"
#include "ownership/env.hpp"

namespace ptguard::test {
namespace {

// 1 GiB of RAM at 0xf_0000_4000_0000: OA bits 51:48 all set, so a descriptor read in the 48-bit
// format (or with SH in bits [9:8]) names another page. Its first 80 MiB are the carve-out, which
// holds the table pool; the hypervisor's UART sits just below the RAM; the host's GIC is low.
// The hypervisor's VA stays 48-bit: VA = PA - kRam + 2^47 (a "negative" offset, modulo 2^64).
struct Env52 {
  static constexpr u64 kRam = 0x000f'0000'4000'0000ull, kRamSize = u64{1} << 30;
  static constexpr u64 kCarve = kRam, kCarveSize = u64{80} << 20;
  static constexpr u64 kPool = kCarve + (u64{16} << 20), kPoolSize = u64{64} << 20;
  static constexpr u64 kUart = kRam - 0x1000'0000, kGic = 0x0800'0000;
  static constexpr u64 kHypOffset = (u64{1} << 47) - kRam;
  static constexpr u64 kPage = 4096;
  static constexpr u64 kMem = kRam + (u64{128} << 20);  // host memory the tests use
  using MP = MemProtect<Granule::k4K, sim::SimPlatform>;

  sim::PhysMem mem;
  std::optional<sim::SimPlatform> plat;
  std::vector<Region> regions{{kRam, kRamSize}};
  std::vector<MmioRegion> mmio{{kGic, 0x1'0000, false}, {kUart, 0x1000, true}};
  std::vector<PageMeta> meta;
  MP mp;
  Status init_status;

  explicit Env52(const CpuFeatures& cpu = CpuFeatures::modern_52bit()) {
    EXPECT_TRUE(mem.add_region(kRam, kRamSize));
    EXPECT_TRUE(mem.add_region(kGic, 0x1'0000));
    EXPECT_TRUE(mem.add_region(kUart, 0x1000));
    plat.emplace(mem, kPool, kPoolSize, kPage);
    const MachineDesc m{regions, mmio, Region{kCarve, kCarveSize}, kHypOffset};
    meta.resize(memory_pages(m, kPage));
    init_status = mp.init(*plat, m, meta, cpu);
    if (init_status) {  // the regimes' DS, as the hardware would read range TLBI operands with it
      plat->set_regime_ds(2, mp.host_config().oa.ds());
      plat->set_regime_ds(1, mp.hyp_config().oa.ds());
    }
    if (init_status) mp.finalize();
  }

  [[nodiscard]] sim::ImplChoices impl() const { return sim::impl_choices_of(mp.cpu()); }
  [[nodiscard]] sim::Translation stage2(u64 root, u16 vmid, u64 ipa, sim::Access a) const {
    const auto& c = mp.host_config();
    return sim::translate_stage2(mem, sim::Stage2Regs{c.vtcr, make_vttbr(c, root, vmid), c.fwb}, ipa, a, false, impl());
  }
  [[nodiscard]] sim::Translation host_access(u64 pa, sim::Access a = sim::Access::read) const {
    return stage2(mp.host_table().root_pa(), 0, pa, a);
  }
  [[nodiscard]] sim::Translation guest_access(ComponentId id, u64 ipa, sim::Access a = sim::Access::read) const {
    const auto* g = mp.guest(id);
    return stage2(g->table.root_pa(), g->table.vmid(), ipa, a);
  }
  [[nodiscard]] sim::Translation hyp_access(u64 pa, sim::Access a = sim::Access::read) const {
    const auto& c = mp.hyp_config();
    return sim::translate_stage1_el2(mem, sim::Stage1Regs{c.tcr, c.mair, make_ttbr0_el2(c, mp.hyp_table().root_pa())},
                                     mp.hyp_va(pa), a, impl());
  }
  // Everything the checks know: the invariants and the reference MMU against the page states.
  ::testing::AssertionResult consistent() const {
    if (auto r = invariants_hold(mp); !r) return r;
    if (const auto p = sim::check_access_against_states(mem, mp)) return ::testing::AssertionFailure() << *p;
    return ::testing::AssertionSuccess();
  }
};

constexpr ComponentId kG1 = 2;

TEST(Pa52, TheTablesUseTheCpusFiftyTwoBitSupport) {
  Env52 e;
  ASSERT_TRUE(e.init_status) << name(e.init_status.error());
  EXPECT_TRUE(Env52::MP::uses_52bit(e.mp.cpu()));
  const Stage2Config& h = e.mp.host_config();
  EXPECT_EQ(h.geometry.ia_bits, 52u) << "the host's identity map covers the 52-bit PA space";
  EXPECT_EQ(h.geometry.start_level, -1) << "4K with a 52-bit IPA starts at level -1";
  EXPECT_EQ(h.pa_bits, 52u);
  EXPECT_EQ(h.oa, kOa52Ds);
  EXPECT_TRUE(TcrDs::get(h.vtcr));
  const Stage1Config& y = e.mp.hyp_config();
  EXPECT_EQ(y.ia_bits, 48u) << "the hypervisor's VA stays 48-bit";
  EXPECT_EQ(y.start_level, 0);
  EXPECT_EQ(y.pa_bits, 52u);
  EXPECT_EQ(y.oa, kOa52Ds);
  EXPECT_TRUE(TcrDs::get(y.tcr));
  EXPECT_EQ(e.mp.host_table().oa_format(), kOa52Ds);
  EXPECT_TRUE(e.consistent());
}

TEST(Pa52, HostFaultsInPagesAboveTwoToThe48) {
  Env52 e;
  ASSERT_TRUE(e.init_status);
  const u64 pa = Env52::kMem + 0x1234'5000;
  EXPECT_EQ(e.host_access(pa).fault, sim::FaultKind::translation);
  int level = 99;
  ASSERT_TRUE(e.mp.host_handle_fault(pa, &level));
  EXPECT_EQ(level, 2) << "a 2 MiB block (the carve-out shares the GiB, so no level-1 block)";
  const sim::Translation t = e.host_access(pa, sim::Access::write);
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_EQ(t.output_address, pa);
  EXPECT_EQ(t.walk.front().level, -1);
  // The leaf holds OA[51:50] in bits [9:8]: read as 48-bit it would name another page.
  const u64 leaf = t.walk.back().desc;
  EXPECT_NE(leaf & leaf_address_mask(Granule::k4K, t.level), pa & ~(t.block_size - 1));
  EXPECT_EQ(kOa52Ds.decode(leaf, level_shift(Granule::k4K, t.level)), pa & ~(t.block_size - 1));
  EXPECT_TRUE(e.consistent());
}

TEST(Pa52, ShareAndDonateToTheHypervisor) {
  Env52 e;
  ASSERT_TRUE(e.init_status);
  const u64 pa = Env52::kMem + 0x20'0000;
  ASSERT_TRUE(e.mp.host_handle_fault(pa));
  ASSERT_TRUE(e.mp.host_share_hyp(pa, 2));
  EXPECT_EQ(e.mp.host_state(pa), PageState::shared_owned);
  EXPECT_EQ(e.mp.hyp_state(pa + Env52::kPage), PageState::shared_borrowed);
  const sim::Translation y = e.hyp_access(pa + Env52::kPage, sim::Access::write);
  ASSERT_TRUE(y.ok()) << to_string(y);
  EXPECT_EQ(y.output_address, pa + Env52::kPage);
  EXPECT_LT(e.mp.hyp_va(pa), u64{1} << 48);
  EXPECT_TRUE(e.consistent());
  ASSERT_TRUE(e.mp.host_unshare_hyp(pa, 2));
  // A donation: the host loses the page (annotated), the hypervisor maps it.
  ASSERT_TRUE(e.mp.host_donate_hyp(pa + 4 * Env52::kPage, 1));
  EXPECT_EQ(e.host_access(pa + 4 * Env52::kPage).fault, sim::FaultKind::translation);
  EXPECT_EQ(e.mp.host_handle_fault(pa + 4 * Env52::kPage).error(), Error::eperm);
  const sim::Translation d = e.hyp_access(pa + 4 * Env52::kPage);
  ASSERT_TRUE(d.ok()) << to_string(d);
  EXPECT_EQ(d.output_address, pa + 4 * Env52::kPage);
  EXPECT_TRUE(e.consistent());
  ASSERT_TRUE(e.mp.hyp_donate_host(pa + 4 * Env52::kPage, 1));
  EXPECT_TRUE(e.consistent());
}

TEST(Pa52, GuestsGetFiftyTwoBitIpasAndPages) {
  Env52 e;
  ASSERT_TRUE(e.init_status);
  ASSERT_TRUE(e.mp.create_guest(kG1, 1));
  ASSERT_TRUE(e.mp.guest(kG1)->mc.topup(*e.plat, 32));
  EXPECT_EQ(e.mp.guest(kG1)->table.ia_bits(), 52u);
  const u64 pa = Env52::kMem + 0x40'0000;
  const u64 ipa = 0x000a'0000'0000'3000ull;  // an IPA above 2^48 too
  ASSERT_TRUE(e.mp.host_donate_guest(pa, 1, kG1, ipa));
  const sim::Translation g = e.guest_access(kG1, ipa, sim::Access::write);
  ASSERT_TRUE(g.ok()) << to_string(g);
  EXPECT_EQ(g.output_address, pa);
  EXPECT_EQ(e.mp.guest_state(kG1, ipa), PageState::owned);
  EXPECT_EQ(e.host_access(pa).fault, sim::FaultKind::translation);
  EXPECT_TRUE(e.consistent());
  // Lend and share too, then take everything back through the guest's teardown.
  ASSERT_TRUE(e.mp.host_share_guest(pa + Env52::kPage, 1, kG1, ipa + Env52::kPage, pgtable::kPermRW));
  ASSERT_TRUE(e.mp.host_lend_guest(pa + 2 * Env52::kPage, 1, kG1, ipa + 2 * Env52::kPage, pgtable::kPermRW));
  EXPECT_EQ(e.guest_access(kG1, ipa + 2 * Env52::kPage).output_address, pa + 2 * Env52::kPage);
  EXPECT_TRUE(e.consistent());
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  ASSERT_TRUE(e.mp.reclaim_guest(kG1));
  ASSERT_TRUE(e.mp.host_handle_fault(pa));
  EXPECT_EQ(e.host_access(pa).output_address, pa);
  EXPECT_TRUE(e.consistent());
}

TEST(Pa52, AFortyEightBitCpuRefusesTheMachine) {
  // Without 52-bit support the host's IPA space ends at 2^48: RAM above it is EINVAL, and the
  // layer allocates nothing.
  for (const CpuFeatures& cpu : {CpuFeatures::modern(), [] {
                                   CpuFeatures c = CpuFeatures::modern_52bit();
                                   c.lpa_s2[static_cast<unsigned>(Granule::k4K)] = false;  // PARange 52, no LPA2 at stage 2
                                   return c;
                                 }()}) {
    EXPECT_FALSE(Env52::MP::uses_52bit(cpu));
    Env52 e(cpu);
    ASSERT_FALSE(e.init_status);
    EXPECT_EQ(e.init_status.error(), Error::einval);
  }
}

TEST(Pa52, FortyEightBitMachinesKeepTheFortyEightBitFormat) {
  // The same CPU features without FEAT_LPA2 keep every table in the 48-bit format, whatever
  // PARange says (OwnEnv is the usual 48-bit machine).
  OwnEnv e;
  EXPECT_EQ(e.mp.host_config().oa, kOa48);
  EXPECT_EQ(e.mp.hyp_config().oa, kOa48);
  EXPECT_EQ(e.mp.host_config().geometry.ia_bits, 48u);
}

TEST(Pa52, TheHypervisorsVaMustFitFortyEightBits) {
  // A linear offset that leaves the RAM's EL2 addresses above 2^48 is EINVAL, as is one that
  // wraps inside the region.
  const std::vector<Region> ram{{Env52::kRam, Env52::kRamSize}};
  const MachineDesc high{ram, {}, Region{Env52::kCarve, Env52::kCarveSize}, 0};
  EXPECT_EQ(Env52::MP::check_machine(high, 52, 48).error(), Error::einval);
  const MachineDesc wraps{ram, {}, Region{Env52::kCarve, Env52::kCarveSize}, u64{0} - Env52::kRam - 0x1000};
  EXPECT_EQ(Env52::MP::check_machine(wraps, 52, 48).error(), Error::einval);
  const MachineDesc ok{ram, {}, Region{Env52::kCarve, Env52::kCarveSize}, Env52::kHypOffset};
  EXPECT_TRUE(Env52::MP::check_machine(ok, 52, 48));
}

}  // namespace
}  // namespace ptguard::test
