// The reference MMU against the ownership layer's page states, over the whole machine.
//
// MemProtect::check_invariants() (freestanding, in ownership/) checks that the tables agree
// with each other and with the page array. This hosted check adds the independent judge: for
// every page of memory it asks the reference MMU (ref_mmu.hpp, which shares no walking code
// with pgtable/) what the host, the hypervisor and every guest can actually do, and compares
// that with what the page's state at each of them allows:
//  - the host: a page it owns or borrows is readable, writable and executable at its own
//    address (identity map), or not mapped yet with an empty entry, so that its fault handler
//    will map it; any other page faults at translation and its entry is annotated (non-zero),
//    so that the handler refuses it;
//  - the hypervisor: a page it owns or borrows translates from its VA (PA + offset) to that PA
//    with the state's software bits, a page shared with it is writable and never executable;
//    any other page faults at translation;
//  - each guest: every address its table maps translates to the page recorded there with the
//    entry's state bits, and a guest reaches only pages in a state that lets it (owned,
//    shared-owned, shared-borrowed, borrowed); poisoned and empty addresses fault.
// It does not run the fault handler (it changes nothing), so it can run after any step.
#pragma once

#include <cinttypes>
#include <cstdio>
#include <optional>
#include <string>

#include "ptguard/ownership/state.hpp"
#include "ptguard/sim/ref_mmu.hpp"

namespace ptguard::sim {

namespace detail {
inline std::string access_problem(const char* who, unsigned id, u64 pa, const char* what, const Translation& t) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %u at pa 0x%" PRIx64 ": %s (", who, id, pa, what);
  return std::string(buf) + to_string(t) + ")";
}
}  // namespace detail

/// The first disagreement between the reference MMU and the page states of `mp` (a
/// MemProtect), or nothing. `mem` is the simulated memory the tables live in.
template <typename MP>
[[nodiscard]] std::optional<std::string> check_access_against_states(const PhysMem& mem, const MP& mp) {
  using ownership::PageState;
  constexpr u64 kPage = MP::kPage;
  const auto& hc = mp.host_config();
  const Stage2Regs host_regs{hc.vtcr, arch::make_vttbr(hc, mp.host_table().root_pa(), 0), hc.fwb};
  const auto& yc = mp.hyp_config();
  const Stage1Regs hyp_regs{yc.tcr, yc.mair, arch::make_ttbr0_el2(yc, mp.hyp_table().root_pa())};
  // The MMU of the CPU the layer was set up for: 52-bit addresses where it has them.
  const ImplChoices impl = impl_choices_of(mp.cpu());
  // A valid entry's state is its software bits (state.hpp): owned 00 ... borrowed 11.
  auto sw_of = [](PageState s) -> u8 { return static_cast<u8>(static_cast<u8>(s) & 3); };

  for (const ownership::Region& r : mp.machine().memory) {
    for (u64 pa = r.first_page(kPage); pa < r.end_page(kPage); pa += kPage) {
      // Host.
      const PageState hs = mp.host_state(pa);
      const bool host_may = hs == PageState::owned || hs == PageState::shared_owned || hs == PageState::shared_borrowed;
      const Translation t = translate_stage2(mem, host_regs, pa, Access::read, false, impl);
      if (t.ok()) {
        if (!host_may) return detail::access_problem("host", 0, pa, "reaches a page its state denies it", t);
        if (t.output_address != pa) return detail::access_problem("host", 0, pa, "not an identity map", t);
        if ((t.sw & 3) != sw_of(hs)) return detail::access_problem("host", 0, pa, "software bits do not match", t);
        for (Access a : {Access::write, Access::exec}) {
          const Translation u = translate_stage2(mem, host_regs, pa, a, false, impl);
          if (!u.ok()) return detail::access_problem("host", 0, pa, "cannot write or execute its memory", u);
        }
      } else {
        if (t.fault != FaultKind::translation)
          return detail::access_problem("host", 0, pa, "a fault other than translation", t);
        const Result<pgtable::Leaf> l = mp.host_table().lookup(pa);
        const bool empty = l && l->entry == 0;
        if (host_may && !empty)
          return detail::access_problem("host", 0, pa, "may access the page but its fault handler would refuse", t);
        if (!host_may && empty)
          return detail::access_problem("host", 0, pa, "its fault handler would map a page it may not access", t);
      }
      // Hypervisor.
      const PageState ys = mp.hyp_state(pa);
      const bool hyp_may = ys == PageState::owned || ys == PageState::shared_borrowed;
      const Translation y = translate_stage1_el2(mem, hyp_regs, mp.hyp_va(pa), Access::read, impl);
      if (y.ok()) {
        if (!hyp_may) return detail::access_problem("hypervisor", 1, pa, "reaches a page it neither owns nor borrows", y);
        if (y.output_address != pa) return detail::access_problem("hypervisor", 1, pa, "maps the wrong page", y);
        if ((y.sw & 3) != sw_of(ys)) return detail::access_problem("hypervisor", 1, pa, "software bits do not match", y);
        if (ys == PageState::shared_borrowed) {
          const Translation w = translate_stage1_el2(mem, hyp_regs, mp.hyp_va(pa), Access::write, impl);
          if (!w.ok()) return detail::access_problem("hypervisor", 1, pa, "cannot write a page shared with it", w);
          const Translation x = translate_stage1_el2(mem, hyp_regs, mp.hyp_va(pa), Access::exec, impl);
          if (x.ok()) return detail::access_problem("hypervisor", 1, pa, "can execute a page the host shares", x);
        }
      } else if (hyp_may || y.fault != FaultKind::translation) {
        return detail::access_problem("hypervisor", 1, pa, "cannot reach a page it owns or borrows", y);
      }
    }
  }

  // Guests: every entry of every guest table, a page at a time.
  for (const auto& slot : mp.guests()) {
    if (!slot.used) continue;
    const auto* g = &slot;
    const unsigned id = g->id;
    const Stage2Regs regs{hc.vtcr, arch::make_vttbr(hc, g->table.root_pa(), g->table.vmid()), hc.fwb};
    std::optional<std::string> problem;
    struct V {
      // Reads the entries and, through the reference MMU, the const PhysMem: writes no entry.
      static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitReadOnly; }
      const PhysMem* mem;
      const Stage2Regs* regs;
      const ImplChoices* impl;
      const arch::OaFormat* oa;  // the guest table's address format
      unsigned id;
      std::optional<std::string>* problem;
      Status leaf(pgtable::VisitCtx& x) {
        if (x.old == 0) return {};
        const bool valid = arch::DescValid::get(x.old);
        for (u64 ipa = x.addr; ipa < x.end; ipa += kPage) {
          const Translation u = translate_stage2(*mem, *regs, ipa, Access::read, false, *impl);
          if (!valid) {
            if (u.fault != FaultKind::translation)
              *problem = detail::access_problem("guest", id, ipa, "reaches an annotated address", u);
          } else {
            const u64 pa = oa->decode(x.old, arch::level_shift(MP::S2::kGranule, x.level)) + (ipa - x.base);
            const PageState s = ownership::state_of(x.old);
            if (!u.ok())
              *problem = detail::access_problem("guest", id, ipa, "cannot read a page it maps", u);
            else if (u.output_address != pa)
              *problem = detail::access_problem("guest", id, ipa, "the MMU reads another page", u);
            else if (s == PageState::none || s == PageState::poisoned || s == PageState::lent)
              *problem = detail::access_problem("guest", id, ipa, "maps a page in a state that denies it", u);
          }
          if (problem->has_value()) return fail(Error::einval);
        }
        return {};
      }
    } v{&mem, &regs, &impl, &g->table.oa_format(), id, &problem};
    (void)g->table.walk(0, u64{1} << g->table.ia_bits(), v);
    if (problem) return problem;
  }
  return std::nullopt;
}

}  // namespace ptguard::sim
