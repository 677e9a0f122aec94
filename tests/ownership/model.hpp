// Helpers shared by the transition matrix, the model-based test and the fault-injection test:
//  - SmallEnv: a small simulated machine (4 MiB of RAM, so check_invariants and full-state
//    snapshots are cheap), whose table pool lies outside the memory the ownership layer
//    tracks (the host cannot reach it and the invariant walk skips it);
//  - Snapshot: every page's entries (raw, with their level) at the host and the hypervisor, its
//    PageMeta, and the guests' entries at given addresses, to prove "nothing changed";
//  - access_matches(): what the reference MMU lets the host (after its fault handler), the
//    hypervisor and each guest do with a page, against the state a test expects.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "env.hpp"

namespace ptguard::test {

inline const char* errname(const Status& st) { return st ? "ok" : name(st.error()); }

/// 4 MiB of RAM at 0x8000_0000 (two 2 MiB blocks; the hypervisor's carve-out is its first 16
/// pages), host MMIO right after it (so a range can mix memory and MMIO), the hypervisor's
/// UART, and a 16 MiB table pool at 0x4000_0000 that is backed but not memory of the machine.
/// With Pa52, the same machine moved up by kHigh = 0xf_0000_0000_0000 (above 2^51: every
/// table holds OA[51:48], only the 52-bit descriptor format can) on a CPU with a 52-bit PA and
/// FEAT_LPA2, the hypervisor's 48-bit VA reaching it through a negative offset
/// (docs/ownership.md, "52-bit addresses").
template <bool Pa52 = false>
struct BasicSmallEnv {
  static constexpr u64 kHigh = Pa52 ? 0xf'0000'0000'0000ull : 0;
  static constexpr u64 kPage = 4096;
  static constexpr u64 kPool = kHigh + 0x4000'0000, kPoolSize = u64{16} << 20;
  static constexpr u64 kRam = kHigh + 0x8000'0000, kRamSize = u64{4} << 20;
  static constexpr u64 kRamPages = kRamSize / kPage;
  static constexpr u64 kCarve = kRam, kCarvePages = 16;
  static constexpr u64 kBlock1 = kRam + (u64{2} << 20);  ///< the 2 MiB block with no carve-out
  static constexpr u64 kGic = kRam + kRamSize, kGicSize = 0x1'0000;  ///< host MMIO after RAM
  static constexpr u64 kUart = kHigh + 0x0900'0000;                   ///< the hypervisor's MMIO
  static constexpr u64 kNowhere = kHigh + 0x7000'0000'0000;           ///< no region at all
  static constexpr u64 kHypOffset = OwnEnv::kHypOffset - kHigh;       ///< modulo 2^64
  static constexpr CpuFeatures kCpu = Pa52 ? CpuFeatures::modern_52bit() : CpuFeatures::modern();

  using MP = OwnEnv::MP;

  sim::PhysMem mem;
  std::optional<sim::SimPlatform> plat;
  std::vector<Region> regions{{kRam, kRamSize}};
  std::vector<MmioRegion> mmio{{kUart, 0x1000, true}, {kGic, kGicSize, false}};
  std::vector<PageMeta> meta;
  MP mp;

  explicit BasicSmallEnv(bool finalize = true) {
    EXPECT_TRUE(mem.add_region(kPool, kPoolSize));
    EXPECT_TRUE(mem.add_region(kRam, kRamSize));
    EXPECT_TRUE(mem.add_region(kGic, kGicSize));
    EXPECT_TRUE(mem.add_region(kUart, 0x1000));
    plat.emplace(mem, kPool, kPoolSize, kPage);
    const MachineDesc m{regions, mmio, Region{kCarve, kCarvePages * kPage}, kHypOffset};
    meta.resize(memory_pages(m, kPage));
    const Status st = mp.init(*plat, m, meta, kCpu);
    EXPECT_TRUE(st.has_value()) << errname(st);
    if (st) {  // the regimes' DS, as the hardware would read range TLBI operands with it
      plat->set_regime_ds(2, mp.host_config().oa.ds());
      plat->set_regime_ds(1, mp.hyp_config().oa.ds());
    }
    if (finalize) mp.finalize();
  }

  /// Creates a guest (on the lowest VMID no guest holds: ids need not fit a VMID) with a
  /// memcache of `mc_pages` pages.
  void add_guest(ComponentId id, u32 mc_pages = 16) {
    const auto held = [this](u16 v) {
      for (const auto& g : mp.guests())
        if (g.used && g.table.vmid() == v) return true;
      return false;
    };
    u16 vmid = 1;
    while (held(vmid)) ++vmid;
    ASSERT_TRUE(mp.create_guest(id, vmid));
    ASSERT_TRUE(mp.guest(id)->mc.topup(*plat, mc_pages));
  }
  /// Refills a live or dead guest's memcache to at least `n` pages (nothing if it is gone).
  void topup(ComponentId id, u32 n = 16) {
    if (auto* g = mp.guest(id)) {
      ASSERT_TRUE(g->mc.topup(*plat, n));
    }
  }

  sim::Translation host_access(u64 pa, sim::Access a = sim::Access::read) const {
    const auto& c = mp.host_config();
    return sim::translate_stage2(mem, sim::Stage2Regs{c.vtcr, make_vttbr(c, mp.host_table().root_pa(), 0), c.fwb}, pa, a,
                                 false, sim::impl_choices_of(kCpu));
  }
  sim::Translation hyp_access(u64 pa, sim::Access a = sim::Access::read) const {
    const auto& c = mp.hyp_config();
    return sim::translate_stage1_el2(mem, sim::Stage1Regs{c.tcr, c.mair, make_ttbr0_el2(c, mp.hyp_table().root_pa())},
                                     mp.hyp_va(pa), a, sim::impl_choices_of(kCpu));
  }
  sim::Translation guest_access(ComponentId id, u64 ipa, sim::Access a = sim::Access::read) const {
    const auto* g = mp.guest(id);
    const auto& c = mp.host_config();
    return sim::translate_stage2(mem, sim::Stage2Regs{c.vtcr, make_vttbr(c, g->table.root_pa(), g->table.vmid()), c.fwb},
                                 ipa, a, false, sim::impl_choices_of(kCpu));
  }

  u8 byte(u64 pa) const {
    u8 v = 0xee;
    EXPECT_TRUE(mem.read(pa, &v, 1));
    return v;
  }
  void set_byte(u64 pa, u8 v) { ASSERT_TRUE(mem.write(pa, &v, 1)); }
};

using SmallEnv = BasicSmallEnv<false>;

// ---- snapshots ---------------------------------------------------------------------------

struct EntrySnap {
  u64 entry = 0;
  int level = -9;
  friend bool operator==(const EntrySnap&, const EntrySnap&) = default;
};
inline EntrySnap entry_snap(const Result<pgtable::Leaf>& l) {
  if (!l) return EntrySnap{~u64{0}, -1};
  return EntrySnap{l->entry, l->level};
}

struct PageSnap {
  EntrySnap host, hyp;
  PageMeta meta;
  friend bool operator==(const PageSnap& a, const PageSnap& b) {
    return a.host == b.host && a.hyp == b.hyp && a.meta.guest_shares == b.meta.guest_shares &&
           a.meta.hyp_pins == b.meta.hyp_pins && a.meta.flags == b.meta.flags && a.meta.guest == b.meta.guest &&
           a.meta.guest_ipa == b.meta.guest_ipa;
  }
};

struct GuestSnap {
  ComponentId id = 0;
  bool exists = false, alive = false;
  u32 mc = 0;
  std::vector<EntrySnap> entries;  ///< at the addresses asked for
  friend bool operator==(const GuestSnap&, const GuestSnap&) = default;
};

/// Everything a failed transition must leave as it was.
struct Snapshot {
  std::vector<PageSnap> pages;  ///< every page of RAM
  std::vector<GuestSnap> guests;
};

template <typename E>
Snapshot snapshot(const E& e, std::span<const ComponentId> guests, std::span<const u64> ipas) {
  Snapshot s;
  s.pages.reserve(E::kRamPages);
  for (u64 i = 0; i < E::kRamPages; ++i) {
    const u64 pa = E::kRam + i * E::kPage;
    s.pages.push_back(PageSnap{entry_snap(e.mp.host_table().lookup(pa)),
                               entry_snap(e.mp.hyp_table().lookup(e.mp.hyp_va(pa))), e.mp.page_meta(pa)});
  }
  for (ComponentId id : guests) {
    GuestSnap g;
    g.id = id;
    if (const auto* gp = e.mp.guest(id)) {
      g.exists = true;
      g.alive = gp->alive;
      g.mc = gp->mc.size();
      for (u64 ipa : ipas) g.entries.push_back(entry_snap(gp->table.lookup(ipa)));
    }
    s.guests.push_back(std::move(g));
  }
  return s;
}

/// Equal, or the first difference (`skip`: a page to ignore, e.g. the one a transition moved).
inline ::testing::AssertionResult same(const Snapshot& a, const Snapshot& b, std::optional<u64> skip_index = {},
                                       bool compare_guests = true) {
  for (std::size_t i = 0; i < a.pages.size() && i < b.pages.size(); ++i) {
    if (skip_index && i == *skip_index) continue;
    if (!(a.pages[i] == b.pages[i])) {
      const PageSnap &x = a.pages[i], &y = b.pages[i];
      char buf[400];
      std::snprintf(buf, sizeof buf,
                    "page #%zu changed: host %llx@L%d -> %llx@L%d, hyp %llx@L%d -> %llx@L%d, "
                    "meta shares %u->%u pins %u->%u flags %u->%u guest %u->%u ipa %llx->%llx",
                    i, (unsigned long long)x.host.entry, x.host.level, (unsigned long long)y.host.entry,
                    y.host.level, (unsigned long long)x.hyp.entry, x.hyp.level, (unsigned long long)y.hyp.entry,
                    y.hyp.level, x.meta.guest_shares, y.meta.guest_shares, unsigned{x.meta.hyp_pins},
                    unsigned{y.meta.hyp_pins}, unsigned{x.meta.flags}, unsigned{y.meta.flags}, x.meta.guest,
                    y.meta.guest, (unsigned long long)x.meta.guest_ipa, (unsigned long long)y.meta.guest_ipa);
      return ::testing::AssertionFailure() << buf;
    }
  }
  if (compare_guests) {
    for (std::size_t g = 0; g < a.guests.size() && g < b.guests.size(); ++g) {
      const GuestSnap &x = a.guests[g], &y = b.guests[g];
      if (x.exists != y.exists || x.alive != y.alive)
        return ::testing::AssertionFailure() << "guest " << x.id << " existence/liveness changed";
      if (x.mc != y.mc)
        return ::testing::AssertionFailure() << "guest " << x.id << " memcache " << x.mc << " -> " << y.mc;
      for (std::size_t i = 0; i < x.entries.size() && i < y.entries.size(); ++i)
        if (!(x.entries[i] == y.entries[i]))
          return ::testing::AssertionFailure() << "guest " << x.id << " entry #" << i << " changed: 0x" << std::hex
                                               << x.entries[i].entry << " -> 0x" << y.entries[i].entry;
    }
  }
  return ::testing::AssertionSuccess();
}

/// Every page's state (not its entries: a neighbour's empty entry may move a level, or a host
/// block be split, without any state changing): host state and annotation owner, hypervisor
/// state, PageMeta.
struct StateSnap {
  PageState host, hyp;
  ComponentId owner;
  PageMeta meta;
};
template <typename E>
std::vector<StateSnap> states(const E& e) {
  std::vector<StateSnap> v;
  v.reserve(E::kRamPages);
  for (u64 i = 0; i < E::kRamPages; ++i) {
    const u64 pa = E::kRam + i * E::kPage;
    v.push_back(StateSnap{e.mp.host_state(pa), e.mp.hyp_state(pa), e.mp.host_annotation_owner(pa), e.mp.page_meta(pa)});
  }
  return v;
}
/// The same states on every page except `skip`.
inline ::testing::AssertionResult same_states(const std::vector<StateSnap>& a, const std::vector<StateSnap>& b,
                                              std::optional<u64> skip_index = {}) {
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (skip_index && i == *skip_index) continue;
    const StateSnap &x = a[i], &y = b[i];
    if (x.host != y.host || x.hyp != y.hyp || x.owner != y.owner || x.meta.guest_shares != y.meta.guest_shares ||
        x.meta.hyp_pins != y.meta.hyp_pins || x.meta.flags != y.meta.flags || x.meta.guest != y.meta.guest ||
        x.meta.guest_ipa != y.meta.guest_ipa)
      return ::testing::AssertionFailure() << "page #" << i << " changed: host " << name(x.host) << " -> "
                                           << name(y.host) << ", hyp " << name(x.hyp) << " -> " << name(y.hyp);
  }
  return ::testing::AssertionSuccess();
}

// ---- what the reference MMU lets each component do ------------------------------------------

/// A guest mapping a test expects: guest `id` at `ipa` holds the page in `state` with `perm`
/// (owned and shared-owned pages are the guest's own: RWX).
struct GuestExpect {
  ComponentId id;
  u64 ipa;
  PageState state;
  pgtable::Perm perm = pgtable::kPermNone;
};

inline bool host_may_access(PageState s) {
  return s == PageState::owned || s == PageState::shared_owned || s == PageState::shared_borrowed;
}
inline bool hyp_may_access(PageState s) { return s == PageState::owned || s == PageState::shared_borrowed; }
inline bool guest_maps(PageState s) {
  return s == PageState::owned || s == PageState::shared_owned || s == PageState::shared_borrowed ||
         s == PageState::borrowed;
}
/// The software-bit value of a valid entry in state `s`.
inline u8 sw_of(PageState s) { return static_cast<u8>(s); }

/// Checks, with the reference MMU, that the host, the hypervisor and the guests in `guests` can
/// access `pa` exactly as the expected states allow, and write (and execute) exactly as their
/// permissions allow. The host is checked after its fault handler has run: a host access to a
/// page it may access but has not faulted in must be mapped by host_handle_fault (which this
/// calls, so it may map a block); to a page it may not access, the handler refuses with EPERM.
/// `*faulted` (if given) is set when the handler mapped something.
template <typename E>
::testing::AssertionResult access_matches(E& e, u64 pa, PageState host, PageState hyp,
                                          std::span<const GuestExpect> guests, bool* faulted = nullptr) {
  using sim::Access;
  using sim::FaultKind;
  auto fail = [&](const char* who, const char* what, const sim::Translation& t) {
    return ::testing::AssertionFailure() << who << " at pa 0x" << std::hex << pa << ": " << what << " ("
                                         << sim::to_string(t) << ")";
  };
  if (faulted) *faulted = false;
  // Host.
  sim::Translation t = e.host_access(pa, Access::read);
  if (!t.ok()) {
    if (t.fault != FaultKind::translation) return fail("host", "a fault other than translation", t);
    const Status st = e.mp.host_handle_fault(pa);
    if (host_may_access(host)) {
      if (!st) return ::testing::AssertionFailure() << "host fault handler refused pa 0x" << std::hex << pa << ": "
                                                    << errname(st) << " although the host may access it";
      if (faulted) *faulted = true;
    } else if (st || st.error() != Error::eperm) {
      return ::testing::AssertionFailure() << "host fault handler on pa 0x" << std::hex << pa << " gave "
                                           << errname(st) << ", want EPERM (state " << name(host) << ")";
    }
    t = e.host_access(pa, Access::read);
  }
  if (host_may_access(host)) {
    if (!t.ok()) return fail("host", "cannot read a page it may access", t);
    if (t.output_address != pa) return fail("host", "not an identity map", t);
    if ((t.sw & 3) != sw_of(host)) return fail("host", "software bits do not match the state", t);
    const sim::Translation w = e.host_access(pa, Access::write);
    if (!w.ok()) return fail("host", "cannot write its memory", w);
    const sim::Translation x = e.host_access(pa, Access::exec);
    if (!x.ok()) return fail("host", "cannot execute its memory", x);
  } else {
    for (Access a : {Access::read, Access::write, Access::exec}) {
      const sim::Translation u = e.host_access(pa, a);
      if (u.fault != FaultKind::translation) return fail("host", "reaches a page it may not access", u);
    }
  }
  // Hypervisor.
  const sim::Translation y = e.hyp_access(pa, Access::write);
  if (hyp_may_access(hyp)) {
    if (!y.ok()) return fail("hyp", "cannot write a page it owns or borrows", y);
    if (y.output_address != pa) return fail("hyp", "maps the wrong page", y);
    if ((y.sw & 3) != sw_of(hyp)) return fail("hyp", "software bits do not match the state", y);
    const sim::Translation x = e.hyp_access(pa, Access::exec);
    if (x.fault != FaultKind::permission) return fail("hyp", "can execute data", x);
  } else {
    const sim::Translation r = e.hyp_access(pa, Access::read);
    if (y.fault != FaultKind::translation || r.fault != FaultKind::translation)
      return fail("hyp", "reaches a page it neither owns nor borrows", r);
  }
  // Guests.
  for (const GuestExpect& g : guests) {
    if (e.mp.guest(g.id) == nullptr) return ::testing::AssertionFailure() << "guest " << g.id << " does not exist";
    if (!guest_maps(g.state)) {
      for (Access a : {Access::read, Access::write, Access::exec}) {
        const sim::Translation u = e.guest_access(g.id, g.ipa, a);
        if (u.fault != FaultKind::translation) return fail("guest", "reaches an address it has no page at", u);
      }
      continue;
    }
    const pgtable::Perm perm =
        g.state == PageState::owned || g.state == PageState::shared_owned ? pgtable::kPermRWX : g.perm;
    const struct {
      Access a;
      pgtable::Perm need;
    } checks[] = {{Access::read, pgtable::kPermR}, {Access::write, pgtable::kPermW}, {Access::exec, pgtable::kPermX}};
    for (const auto& c : checks) {
      const sim::Translation u = e.guest_access(g.id, g.ipa, c.a);
      const bool want = (perm & c.need) != 0;
      if (want && !u.ok()) return fail("guest", "denied an access its permissions allow", u);
      if (!want && u.fault != FaultKind::permission) return fail("guest", "allowed an access its permissions deny", u);
      if (u.ok() && u.output_address != pa) return fail("guest", "maps another page", u);
      if (u.ok() && (u.sw & 3) != sw_of(g.state)) return fail("guest", "software bits do not match the state", u);
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace ptguard::test
