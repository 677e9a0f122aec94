// Model-based property test of the ownership layer: random sequences of every transition, host
// faults, guest creation, teardown and reclaim, and forced reclaims, over 48 pages of a small
// machine (SmallEnv: 4 MiB of RAM), three guests and a few guest addresses, against an abstract
// model written from the header's documented semantics (page -> owner and state at each
// component, counts, the guest and guest address it is at; per guest, address -> page, state,
// permissions). After every step: the exact result (success or the exact error), every page's
// state at the host and the hypervisor and its PageMeta, every modelled guest address, the
// invariant checker, the reference MMU at the touched pages, and, for a failed step, that no
// entry of any table changed.
//
// The model decides where the host's fault handler maps a block: the 2 MiB block around the
// address when every entry in it is empty (the engine frees a table whose last entry goes, so
// no empty table is left to force pages), else the page alone. After a successful step, a
// 2 MiB block whose pages are all the host's alone again, not all of them empty, is mapped
// whole (the transition that gave back its last page rebuilt the block).
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "model.hpp"
#include "ptguard/sim/access_check.hpp"

// model_pa52_test.cpp compiles this file once more with PTGUARD_MODEL_PA52 = 1: the same
// property on BasicSmallEnv<true>, the machine above 2^51 on a CPU with FEAT_LPA2 (its guests'
// addresses above 2^51 too), as OwnershipModelPa52.*.
#ifndef PTGUARD_MODEL_PA52
#define PTGUARD_MODEL_PA52 0
#define PTGUARD_MODEL_SUITE OwnershipModel
#else
#define PTGUARD_MODEL_SUITE OwnershipModelPa52
#endif

namespace ptguard::test {
namespace {

using Env = BasicSmallEnv<PTGUARD_MODEL_PA52 != 0>;

using PS = PageState;
using pgtable::Perm;
constexpr u64 kPg = Env::kPage;
constexpr u64 kRam = Env::kRam;
constexpr u64 kRamEnd = Env::kRam + Env::kRamSize;
constexpr u64 kPagesPerBlock = (u64{2} << 20) / kPg;
constexpr ComponentId kGuestIds[] = {2, 3, 4};
constexpr u64 kIpaSmall = Env::kHigh + 0x1000'0000;  ///< 16 page-sized guest address slots from here
constexpr u64 kIpaBig = Env::kHigh + 0x4000'0000;    ///< a 2 MiB-aligned guest address for whole-block transitions
constexpr unsigned kSlots = 16;

using Res = std::optional<Error>;  // nullopt: success

// Uniform in [lo, hi) whatever the test case's size (rc::gen::inRange scales with it).
template <typename T>
T uniform(T lo, T hi) {
  return *rc::gen::resize(100, rc::gen::inRange<T>(lo, hi));
}

// ---- the abstract model -------------------------------------------------------------------

struct MPage {
  PS host = PS::owned;
  ComponentId owner = kHostId;  ///< the host's annotation (none: the owner; lent: the borrower)
  bool mapped = false;          ///< host-owned and faulted in (its entry is valid)
  PS hyp = PS::none;
  u32 shares = 0;
  u16 pins = 0;
  bool ffa = false, relinq = false;
  ComponentId guest = 0;
  u64 gipa = 0;
  bool empty_entry() const { return host == PS::owned && !mapped; }
};

struct MEntry {
  u64 pa = 0;
  PS state = PS::none;  ///< owned, shared_owned, shared_borrowed, borrowed or poisoned
  Perm perm = pgtable::kPermNone;
  bool young = true;
};

struct MGuest {
  bool alive = true;
  std::map<u64, MEntry> map;  ///< ipa -> entry (absent: empty)
};

struct Model {
  std::vector<MPage> pages = std::vector<MPage>(Env::kRamPages);
  std::map<ComponentId, MGuest> guests;
  std::set<u64> mmio_mapped;

  Model() {
    for (u64 i = 0; i < Env::kCarvePages; ++i) {
      pages[i].host = PS::none;
      pages[i].owner = kHypId;
      pages[i].hyp = PS::owned;
    }
  }
  static u64 idx(u64 pa) { return (pa - kRam) / kPg; }
  MPage& at(u64 pa) { return pages[idx(pa)]; }
  MGuest* guest(ComponentId id) {
    auto it = guests.find(id);
    return it == guests.end() ? nullptr : &it->second;
  }

  // [pa, pa + n pages) must be memory: EINVAL for n == 0, a misaligned address or a range that
  // mixes memory and anything else; EPERM for MMIO or nothing.
  static Res range(u64 pa, u64 n) {
    if (n == 0 || pa % kPg != 0) return Error::einval;
    const u64 end = pa + n * kPg;
    if (pa >= kRam && end <= kRamEnd) return {};
    if (pa < kRamEnd && kRam < end) return Error::einval;
    return Error::eperm;
  }
  static bool valid_perm(Perm p) { return p != pgtable::kPermNone && (p & ~pgtable::kPermRWX) == 0; }

  template <typename F>
  Res each(u64 pa, u64 n, F&& f) {
    for (u64 i = 0; i < n; ++i)
      if (Res r = f(at(pa + i * kPg)); r) return r;
    return {};
  }
  bool hyp_shared(const MPage& p) const {
    return p.host == PS::shared_owned && p.hyp == PS::shared_borrowed && !p.ffa && p.shares == 0;
  }
  void to_owned(MPage& p, bool mapped) {
    const u16 pins = p.pins;
    p = MPage{};
    p.mapped = mapped;
    p.pins = pins;
  }

  // -- host <-> hypervisor, secure world
  Res share_hyp(u64 pa, u64 n) {
    if (Res r = range(pa, n)) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res {
          if (p.host != PS::owned || p.hyp != PS::none) return Error::eperm;
          return {};
        }))
      return r;
    each(pa, n, [](MPage& p) -> Res { p.host = PS::shared_owned; p.hyp = PS::shared_borrowed; return {}; });
    return {};
  }
  Res unshare_hyp(u64 pa, u64 n) {
    if (Res r = range(pa, n)) return r;
    if (Res r = each(pa, n, [&](MPage& p) -> Res { return hyp_shared(p) ? Res{} : Error::eperm; })) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res { return p.pins ? Error::ebusy : Res{}; })) return r;
    each(pa, n, [&](MPage& p) -> Res { to_owned(p, true); return {}; });
    return {};
  }
  Res pin(u64 pa, u64 n) {
    if (Res r = range(pa, n)) return r;
    if (Res r = each(pa, n, [&](MPage& p) -> Res { return hyp_shared(p) ? Res{} : Error::eperm; })) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res { return p.pins == 0xffff ? Error::ebusy : Res{}; })) return r;
    each(pa, n, [](MPage& p) -> Res { ++p.pins; return {}; });
    return {};
  }
  Res unpin(u64 pa, u64 n) {
    if (Res r = range(pa, n)) return r;
    if (Res r = each(pa, n, [&](MPage& p) -> Res { return hyp_shared(p) && p.pins ? Res{} : Error::eperm; }))
      return r;
    each(pa, n, [](MPage& p) -> Res { --p.pins; return {}; });
    return {};
  }
  Res donate_hyp(u64 pa, u64 n) {
    if (Res r = range(pa, n)) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res {
          return p.host == PS::owned && p.hyp == PS::none ? Res{} : Error::eperm;
        }))
      return r;
    each(pa, n, [](MPage& p) -> Res { p.host = PS::none; p.owner = kHypId; p.mapped = false; p.hyp = PS::owned; return {}; });
    return {};
  }
  Res hyp_donate_host(u64 pa, u64 n) {
    if (Res r = range(pa, n)) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res {
          return p.host == PS::none && p.owner == kHypId && p.hyp == PS::owned ? Res{} : Error::eperm;
        }))
      return r;
    if (idx(pa) < Env::kCarvePages) return Error::eperm;  // the carve-out is never given back
    each(pa, n, [&](MPage& p) -> Res { to_owned(p, false); return {}; });
    return {};
  }
  Res share_ffa(u64 pa, u64 n) {
    if (Res r = range(pa, n)) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res { return p.host == PS::owned ? Res{} : Error::eperm; })) return r;
    each(pa, n, [](MPage& p) -> Res { p.host = PS::shared_owned; p.ffa = true; return {}; });
    return {};
  }
  Res unshare_ffa(u64 pa, u64 n) {
    if (Res r = range(pa, n)) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res { return p.host == PS::shared_owned && p.ffa ? Res{} : Error::eperm; }))
      return r;
    each(pa, n, [&](MPage& p) -> Res { to_owned(p, true); return {}; });
    return {};
  }

  // -- host -> guests
  // The guest a call names: EINVAL if there is none, EPERM once torn down (the documented
  // order: the guest, its life, then the arguments, the states, the memcaches).
  Res live(ComponentId id) {
    MGuest* g = guest(id);
    if (!g) return Error::einval;
    if (!g->alive) return Error::eperm;
    return {};
  }
  // The checks every transition into a guest makes, in the documented order.
  Res into_guest(u64 pa, u64 n, ComponentId id, u64 ipa, Perm perm) {
    if (Res r = live(id)) return r;
    MGuest* g = guest(id);
    if (!valid_perm(perm)) return Error::einval;
    if (Res r = range(pa, n)) return r;
    for (u64 i = 0; i < n; ++i)
      if (g->map.count(ipa + i * kPg)) return Error::eperm;
    return {};
  }
  Res share_guest(u64 pa, u64 n, ComponentId id, u64 ipa, Perm perm) {
    if (Res r = into_guest(pa, n, id, ipa, perm)) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res {
          if (p.host == PS::owned) return {};
          if (p.host == PS::shared_owned && p.shares > 0 && !p.ffa) return p.shares == 0xffff'ffffu ? Error::ebusy : Res{};
          return Error::eperm;
        }))
      return r;
    MGuest& g = guests[id];
    for (u64 i = 0; i < n; ++i) {
      MPage& p = at(pa + i * kPg);
      p.host = PS::shared_owned;
      ++p.shares;
      g.map[ipa + i * kPg] = MEntry{pa + i * kPg, PS::shared_borrowed, perm, true};
    }
    return {};
  }
  Res unshare_guest(ComponentId id, u64 ipa, u64 n) {
    if (Res r = live(id)) return r;
    if (n == 0) return Error::einval;
    MGuest* g = guest(id);
    for (u64 i = 0; i < n; ++i) {
      auto it = g->map.find(ipa + i * kPg);
      if (it == g->map.end()) return Error::enoent;
      if (it->second.state != PS::shared_borrowed) return Error::eperm;
    }
    for (u64 i = 0; i < n; ++i) {
      auto it = g->map.find(ipa + i * kPg);
      MPage& p = at(it->second.pa);
      if (--p.shares == 0) to_owned(p, true);
      g->map.erase(it);
    }
    return {};
  }
  Res donate_or_lend(u64 pa, u64 n, ComponentId id, u64 ipa, Perm perm, bool lend) {
    if (Res r = into_guest(pa, n, id, ipa, perm)) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res { return p.host == PS::owned ? Res{} : Error::eperm; })) return r;
    MGuest& g = guests[id];
    for (u64 i = 0; i < n; ++i) {
      MPage& p = at(pa + i * kPg);
      p.host = lend ? PS::lent : PS::none;
      p.owner = id;
      p.mapped = false;
      p.guest = id;
      p.gipa = ipa + i * kPg;
      p.relinq = false;
      g.map[ipa + i * kPg] = MEntry{pa + i * kPg, lend ? PS::borrowed : PS::owned, perm, true};
    }
    return {};
  }
  // Each guest address in [ipa, +n) holds state `want` (poisoned: EHWPOISON; else EPERM).
  static Res guest_has(const MGuest& g, u64 ipa, u64 n, PS want) {
    for (u64 i = 0; i < n; ++i) {
      auto it = g.map.find(ipa + i * kPg);
      if (it != g.map.end() && it->second.state == PS::poisoned) return Error::ehwpoison;
      if (it == g.map.end() || it->second.state != want) return Error::eperm;
    }
    return {};
  }
  Res guest_share_host(ComponentId id, u64 ipa, u64 n, bool share) {
    MGuest* g = guest(id);
    if (!g) return Error::einval;
    if (!g->alive) return Error::eperm;
    if (Res r = guest_has(*g, ipa, n, share ? PS::owned : PS::shared_owned)) return r;
    for (u64 i = 0; i < n; ++i) {
      MEntry& en = g->map[ipa + i * kPg];
      MPage& p = at(en.pa);
      en.state = share ? PS::shared_owned : PS::owned;
      p.host = share ? PS::shared_borrowed : PS::none;
      p.owner = share ? kHostId : id;
    }
    return {};
  }
  Res relinquish(ComponentId id, u64 ipa, u64 n) {
    if (Res r = live(id)) return r;
    if (n == 0) return Error::einval;
    MGuest* g = guest(id);
    if (Res r = guest_has(*g, ipa, n, PS::borrowed)) return r;
    for (u64 i = 0; i < n; ++i) {
      auto it = g->map.find(ipa + i * kPg);
      at(it->second.pa).relinq = true;
      g->map.erase(it);
    }
    return {};
  }
  Res reclaim_lent(u64 pa, u64 n) {
    if (Res r = range(pa, n)) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res { return p.host == PS::lent ? Res{} : Error::eperm; })) return r;
    if (Res r = each(pa, n, [](MPage& p) -> Res { return p.relinq ? Res{} : Error::ebusy; })) return r;
    each(pa, n, [&](MPage& p) -> Res { to_owned(p, false); return {}; });
    return {};
  }
  Res create(ComponentId id) {
    if (guest(id)) return Error::eexist;
    guests[id] = MGuest{};
    return {};
  }
  Res teardown(ComponentId id) {
    MGuest* g = guest(id);
    if (!g) return Error::einval;
    if (!g->alive) return Error::eperm;
    g->alive = false;
    for (auto it = g->map.begin(); it != g->map.end();) {
      if (it->second.state == PS::borrowed) {
        at(it->second.pa).relinq = true;
        it = g->map.erase(it);
      } else {
        ++it;
      }
    }
    return {};
  }
  Res reclaim(ComponentId id, std::vector<u64>* scrubbed) {
    MGuest* g = guest(id);
    if (!g) return Error::einval;
    if (g->alive) return Error::eperm;
    for (u64 i = 0; i < pages.size(); ++i) {
      MPage& p = pages[i];
      if (p.guest != id || p.host == PS::lent) continue;
      if (!((p.host == PS::none && p.owner == id) || p.host == PS::shared_borrowed)) continue;
      scrubbed->push_back(kRam + i * kPg);
      to_owned(p, false);
    }
    for (auto& [ipa, en] : g->map) {
      if (en.state != PS::shared_borrowed) continue;
      MPage& p = at(en.pa);
      if (p.shares > 0 && --p.shares == 0) to_owned(p, true);
    }
    guests.erase(id);
    return {};
  }
  // One page of a torn-down guest: the guest's entry goes; its own pages (donated, or shared
  // back) are scrubbed and the host's (not mapped: faulted in again later); a share from the
  // host ends, and at the last one the page is the host's alone (mapped, as after an unshare).
  Res reclaim_page(ComponentId id, u64 ipa, std::vector<u64>* scrubbed) {
    MGuest* g = guest(id);
    if (!g) return Error::einval;
    if (g->alive) return Error::eperm;
    if (ipa % kPg != 0) return Error::einval;
    auto it = g->map.find(ipa);
    if (it == g->map.end()) return Error::enoent;
    const MEntry en = it->second;
    switch (en.state) {
      case PS::poisoned: return Error::ehwpoison;
      case PS::owned:
      case PS::shared_owned:
        scrubbed->push_back(en.pa);
        to_owned(at(en.pa), false);
        break;
      case PS::shared_borrowed: {
        MPage& p = at(en.pa);
        if (--p.shares == 0) to_owned(p, true);
        break;
      }
      default: return Error::eperm;  // borrowed: relinquished at teardown, never here
    }
    g->map.erase(it);
    return {};
  }
  Res force_reclaim(u64 pa) {
    if (Res r = range(pa, 1)) return r;
    MPage& p = at(pa);
    MGuest* g = p.guest >= kFirstGuestId ? guest(p.guest) : nullptr;
    if (!g || !g->alive || p.host != PS::none || p.owner != p.guest) return Error::eperm;
    g->map[p.gipa] = MEntry{0, PS::poisoned, pgtable::kPermNone, false};
    to_owned(p, false);
    return {};
  }

  // -- permissions of pages shared with a guest
  Res relax(ComponentId id, u64 ipa, Perm perm) {
    if (Res r = live(id)) return r;
    MGuest* g = guest(id);
    if (Res r = guest_has(*g, ipa, 1, PS::shared_borrowed)) return r;
    auto it = g->map.find(ipa);
    it->second.perm = static_cast<Perm>(it->second.perm | perm);
    return {};
  }
  Res wrprotect(ComponentId id, u64 ipa, u64 n) {
    if (Res r = live(id)) return r;
    if (n == 0) return Error::einval;
    MGuest* g = guest(id);
    if (Res r = guest_has(*g, ipa, n, PS::shared_borrowed)) return r;
    for (u64 i = 0; i < n; ++i) {
      MEntry& en = g->map[ipa + i * kPg];
      en.perm = static_cast<Perm>(en.perm & ~pgtable::kPermW);
    }
    return {};
  }
  Res mkyoung(ComponentId id, u64 ipa) {
    if (Res r = live(id)) return r;
    MGuest* g = guest(id);
    if (Res r = guest_has(*g, ipa, 1, PS::shared_borrowed)) return r;
    auto it = g->map.find(ipa);
    it->second.young = true;
    return {};
  }
  Res young(ComponentId id, u64 ipa, u64 n, bool clear, bool* any) {
    if (Res r = live(id)) return r;
    if (n == 0) return Error::einval;
    MGuest* g = guest(id);
    if (Res r = guest_has(*g, ipa, n, PS::shared_borrowed)) return r;
    *any = false;
    for (u64 i = 0; i < n; ++i) {
      MEntry& en = g->map[ipa + i * kPg];
      *any = *any || en.young;
      if (clear) en.young = false;
    }
    return {};
  }

  // -- host blocks rebuilt: a block whose pages are all host-owned (default state), some of them
  // mapped, is one block again: every page mapped. (All empty: the engine freed the table when
  // its last entry went, and the next fault maps the block.)
  void rebuild_blocks() {
    for (u64 first = 0; first < pages.size(); first += kPagesPerBlock) {
      bool all_owned = true, any_mapped = false;
      for (u64 i = first; i < first + kPagesPerBlock; ++i) {
        all_owned = all_owned && pages[i].host == PS::owned;
        any_mapped = any_mapped || pages[i].mapped;
      }
      if (all_owned && any_mapped)
        for (u64 i = first; i < first + kPagesPerBlock; ++i) pages[i].mapped = true;
    }
  }

  // -- the host's stage-2 fault
  Res fault(u64 addr) {
    const u64 page = addr & ~(kPg - 1);
    if (addr >= Env::kGic && addr < Env::kGic + Env::kGicSize) {
      if (mmio_mapped.count(page)) return Error::eagain;
      mmio_mapped.insert(page);
      return {};
    }
    if (addr < kRam || addr >= kRamEnd) return Error::einval;
    MPage& p = at(page);
    if (p.host == PS::shared_owned || p.host == PS::shared_borrowed || (p.host == PS::owned && p.mapped))
      return Error::eagain;
    if (p.host != PS::owned) return Error::eperm;
    const u64 first = idx(page) / kPagesPerBlock * kPagesPerBlock;
    bool all_empty = true;
    for (u64 i = first; i < first + kPagesPerBlock; ++i) all_empty = all_empty && pages[i].empty_entry();
    if (all_empty) {
      for (u64 i = first; i < first + kPagesPerBlock; ++i) pages[i].mapped = true;
      return {};
    }
    // Inside a last-level table: the aligned contiguous run around the page when all of it is
    // empty (mapped whole, with the Contiguous bit), else the page.
    const u64 run = arch::contiguous_entries(arch::Granule::k4K, arch::kLastLevel);
    const u64 r0 = idx(page) / run * run;
    bool run_empty = true;
    for (u64 i = r0; i < r0 + run; ++i) run_empty = run_empty && pages[i].empty_entry();
    if (run_empty) {
      for (u64 i = r0; i < r0 + run; ++i) pages[i].mapped = true;
    } else {
      p.mapped = true;
    }
    return {};
  }
};

// ---- the operations -------------------------------------------------------------------------

enum class Op : u8 {
  share_hyp, unshare_hyp, pin, unpin, donate_hyp, hyp_donate_host, share_ffa, unshare_ffa, share_guest,
  unshare_guest, donate_guest, lend_guest, guest_share_host, guest_unshare_host, relinquish, reclaim_lent, create,
  teardown, reclaim, force_reclaim, fault, relax, wrprotect, mkyoung, young, reclaim_page, kCount
};
const char* const kOpNames[] = {
    "share_hyp", "unshare_hyp", "pin", "unpin", "donate_hyp", "hyp_donate_host", "share_ffa", "unshare_ffa",
    "share_guest", "unshare_guest", "donate_guest", "lend_guest", "guest_share_host", "guest_unshare_host",
    "relinquish", "reclaim_lent", "create", "teardown", "reclaim", "force_reclaim", "fault", "relax", "wrprotect",
    "mkyoung", "young", "reclaim_page"};

struct Step {
  Op op;
  u64 pa = 0, n = 1, ipa = 0;
  ComponentId id = 2;
  Perm perm = pgtable::kPermRW;
  bool clear = false;
  std::string str() const {
    std::ostringstream o;
    o << kOpNames[static_cast<unsigned>(op)] << "(pa 0x" << std::hex << pa << " n " << std::dec << n << " guest "
      << id << " ipa 0x" << std::hex << ipa << " perm " << unsigned{perm} << ")";
    return o.str();
  }
};

// The pages the test works on: two of the carve-out, pages in both 2 MiB blocks, and the last
// pages of RAM (next to the host's MMIO).
std::vector<u64> page_set() {
  std::vector<u64> v;
  for (u64 i : {14, 15}) v.push_back(i);
  for (u64 i = 16; i < 32; ++i) v.push_back(i);
  for (u64 i = 512; i < 536; ++i) v.push_back(i);
  for (u64 i = Env::kRamPages - 6; i < Env::kRamPages; ++i) v.push_back(i);
  return v;
}

Step gen_step(const std::vector<u64>& pages, Model& m) {
  Step s;
  // Every operation, guest lifetime ones less often (a torn-down guest refuses most).
  static const std::vector<Op> ops = [] {
    std::vector<Op> v;
    for (int k = 0; k < static_cast<int>(Op::kCount); ++k) {
      const Op o = static_cast<Op>(k);
      const int w = o == Op::teardown || o == Op::reclaim_page ? 1 : o == Op::reclaim || o == Op::create ? 2 : 4;
      for (int i = 0; i < w; ++i) v.push_back(o);
    }
    return v;
  }();
  s.op = ops[uniform<std::size_t>(0, ops.size())];
  // A torn-down guest still holding pages is given them back a page at a time, now and then,
  // before a whole reclaim takes the rest (as a host that needs a few pages first would).
  if (std::any_of(m.guests.begin(), m.guests.end(), [](const auto& g) { return !g.second.alive && !g.second.map.empty(); }) &&
      uniform<int>(0, 100) < 50)
    s.op = Op::reclaim_page;
  const int pick = uniform<int>(0, 100);
  if (pick < 88) {
    s.pa = kRam + pages[uniform<std::size_t>(0, pages.size())] * kPg;
  } else {
    const u64 odd[] = {Env::kGic, Env::kNowhere, Env::kUart, kRam - kPg, kRamEnd - kPg, kRam + 20 * kPg + 8};
    s.pa = odd[uniform<int>(0, 6)];
  }
  const int nn = uniform<int>(0, 100);
  s.n = nn < 70 ? 1 : nn < 85 ? 2 : nn < 97 ? 3 : 0;
  s.id = kGuestIds[uniform<int>(0, 3)];
  s.ipa = kIpaSmall + uniform<u64>(0, kSlots) * kPg;
  const Perm perms[] = {pgtable::kPermR, pgtable::kPermRW, pgtable::kPermRX, pgtable::kPermRWX, pgtable::kPermRW,
                        pgtable::kPermNone};
  s.perm = perms[uniform<int>(0, 6)];
  s.clear = *rc::gen::arbitrary<bool>();
  // Now and then a whole 2 MiB block into a guest, at a 2 MiB-aligned address; and later ops on
  // single pages inside it.
  const bool into_guest = s.op == Op::share_guest || s.op == Op::donate_guest || s.op == Op::lend_guest;
  if (into_guest && uniform<int>(0, 100) < 8) {
    s.pa = Env::kBlock1;
    s.n = kPagesPerBlock;
    s.ipa = kIpaBig;
  } else if (!into_guest && s.op != Op::relax && s.op != Op::mkyoung && s.op != Op::young &&
             uniform<int>(0, 100) < 15) {
    // (relax and the young bit act on whole leaves: the model keeps them to page-sized ones)
    s.ipa = kIpaBig + uniform<u64>(0, 4) * kPg;
    s.pa = Env::kBlock1 + uniform<u64>(0, 4) * kPg;
  }
  // Most of the time, aim at something the model says is there, so that the transitions that
  // need a particular state meet it.
  const bool on_guest_address = s.op == Op::unshare_guest || s.op == Op::guest_share_host ||
                                s.op == Op::guest_unshare_host || s.op == Op::relinquish || s.op == Op::relax ||
                                s.op == Op::wrprotect || s.op == Op::mkyoung || s.op == Op::young ||
                                s.op == Op::reclaim_page;
  auto wants = [&](const MPage& p) {
    switch (s.op) {
      case Op::unshare_hyp: case Op::pin: case Op::unpin: return p.hyp == PS::shared_borrowed;
      case Op::hyp_donate_host: return p.hyp == PS::owned;
      case Op::unshare_ffa: return p.ffa;
      case Op::reclaim_lent: return p.host == PS::lent;
      case Op::force_reclaim: return p.host == PS::none && p.owner >= kFirstGuestId;
      case Op::share_guest: return p.shares > 0;
      default: return false;
    }
  };
  if (on_guest_address && uniform<int>(0, 100) < (s.op == Op::reclaim_page ? 90 : 70)) {
    std::vector<std::pair<ComponentId, u64>> entries;
    // A page reclaim aims at a torn-down guest's addresses (any page of a 2 MiB block too: the
    // first one splits it), poisoned ones included.
    const bool dead_only = s.op == Op::reclaim_page && std::any_of(m.guests.begin(), m.guests.end(), [](const auto& g) {
                             return !g.second.alive && !g.second.map.empty();
                           });
    for (auto& [id, g] : m.guests)
      for (auto& [ipa, en] : g.map)
        if ((!dead_only || !g.alive) &&
            (ipa < kIpaBig + 8 * kPg || s.op == Op::wrprotect || s.op == Op::relinquish ||
             s.op == Op::unshare_guest || s.op == Op::guest_share_host || s.op == Op::guest_unshare_host ||
             s.op == Op::reclaim_page))
          entries.emplace_back(id, ipa);
    if (!entries.empty()) {
      const auto& [id, ipa] = entries[uniform<std::size_t>(0, entries.size())];
      s.id = id;
      s.ipa = ipa;
      if ((s.op == Op::relax || s.op == Op::mkyoung || s.op == Op::young) && ipa >= kIpaBig) s.ipa = kIpaSmall;
    }
  } else if (uniform<int>(0, 100) < 70) {
    std::vector<u64> taken;
    for (u64 i : pages)
      if (wants(m.pages[i])) taken.push_back(kRam + i * kPg);
    if (!taken.empty()) s.pa = taken[uniform<std::size_t>(0, taken.size())];
  }
  return s;
}

struct Harness {
  Env e;
  Model m;
  std::vector<std::string> errors;

  Res to_res(const Status& st) { return st ? Res{} : Res{st.error()}; }

  Res run_real(const Step& s, bool* young) {
    auto& mp = e.mp;
    switch (s.op) {
      case Op::share_hyp: return to_res(mp.host_share_hyp(s.pa, s.n));
      case Op::unshare_hyp: return to_res(mp.host_unshare_hyp(s.pa, s.n));
      case Op::pin: return to_res(mp.hyp_pin_shared(s.pa, s.n));
      case Op::unpin: return to_res(mp.hyp_unpin_shared(s.pa, s.n));
      case Op::donate_hyp: return to_res(mp.host_donate_hyp(s.pa, s.n));
      case Op::hyp_donate_host: return to_res(mp.hyp_donate_host(s.pa, s.n));
      case Op::share_ffa: return to_res(mp.host_share_ffa(s.pa, s.n));
      case Op::unshare_ffa: return to_res(mp.host_unshare_ffa(s.pa, s.n));
      case Op::share_guest: return to_res(mp.host_share_guest(s.pa, s.n, s.id, s.ipa, s.perm));
      case Op::unshare_guest: return to_res(mp.host_unshare_guest(s.id, s.ipa, s.n));
      case Op::donate_guest: return to_res(mp.host_donate_guest(s.pa, s.n, s.id, s.ipa));
      case Op::lend_guest: return to_res(mp.host_lend_guest(s.pa, s.n, s.id, s.ipa, s.perm));
      case Op::guest_share_host: return to_res(mp.guest_share_host(s.id, s.ipa, s.n));
      case Op::guest_unshare_host: return to_res(mp.guest_unshare_host(s.id, s.ipa, s.n));
      case Op::relinquish: return to_res(mp.guest_relinquish(s.id, s.ipa, s.n));
      case Op::reclaim_lent: return to_res(mp.host_reclaim_lent(s.pa, s.n));
      case Op::create: {
        const Status st = mp.create_guest(s.id, static_cast<u16>(s.id));
        if (st) e.topup(s.id);
        return to_res(st);
      }
      case Op::teardown: return to_res(mp.teardown_guest(s.id));
      case Op::reclaim: return to_res(mp.reclaim_guest(s.id));
      case Op::force_reclaim: return to_res(mp.host_force_reclaim(s.pa));
      case Op::fault: return to_res(mp.host_handle_fault(s.pa));
      case Op::relax: return to_res(mp.guest_relax_perms(s.id, s.ipa, s.perm));
      case Op::wrprotect: return to_res(mp.guest_wrprotect(s.id, s.ipa, s.n));
      case Op::mkyoung: return to_res(mp.guest_mkyoung(s.id, s.ipa));
      case Op::reclaim_page: return to_res(mp.reclaim_guest_page(s.id, s.ipa));
      case Op::young: {
        const Result<bool> r = mp.guest_test_clear_young(s.id, s.ipa, s.n, s.clear);
        if (r) *young = *r;
        return r ? Res{} : Res{r.error()};
      }
      case Op::kCount: break;
    }
    return Error::einval;
  }

  Res run_model(const Step& s, bool* young, std::vector<u64>* scrubbed) {
    switch (s.op) {
      case Op::share_hyp: return m.share_hyp(s.pa, s.n);
      case Op::unshare_hyp: return m.unshare_hyp(s.pa, s.n);
      case Op::pin: return m.pin(s.pa, s.n);
      case Op::unpin: return m.unpin(s.pa, s.n);
      case Op::donate_hyp: return m.donate_hyp(s.pa, s.n);
      case Op::hyp_donate_host: return m.hyp_donate_host(s.pa, s.n);
      case Op::share_ffa: return m.share_ffa(s.pa, s.n);
      case Op::unshare_ffa: return m.unshare_ffa(s.pa, s.n);
      case Op::share_guest: return m.share_guest(s.pa, s.n, s.id, s.ipa, s.perm);
      case Op::unshare_guest: return m.unshare_guest(s.id, s.ipa, s.n);
      case Op::donate_guest: return m.donate_or_lend(s.pa, s.n, s.id, s.ipa, pgtable::kPermRWX, false);
      case Op::lend_guest: return m.donate_or_lend(s.pa, s.n, s.id, s.ipa, s.perm, true);
      case Op::guest_share_host:
      case Op::guest_unshare_host: {
        if (!m.guest(s.id)) return Error::einval;
        if (!m.guest(s.id)->alive) return Error::eperm;
        if (s.n == 0) return Error::einval;
        return m.guest_share_host(s.id, s.ipa, s.n, s.op == Op::guest_share_host);
      }
      case Op::relinquish:
        return m.relinquish(s.id, s.ipa, s.n);
      case Op::reclaim_lent: return m.reclaim_lent(s.pa, s.n);
      case Op::create: return m.create(s.id);
      case Op::teardown: return m.teardown(s.id);
      case Op::reclaim: return m.reclaim(s.id, scrubbed);
      case Op::force_reclaim: return m.force_reclaim(s.pa);
      case Op::fault: return m.fault(s.pa);
      case Op::relax: return m.relax(s.id, s.ipa, s.perm);
      case Op::wrprotect:
        return m.wrprotect(s.id, s.ipa, s.n);
      case Op::mkyoung: return m.mkyoung(s.id, s.ipa);
      case Op::young:
        return m.young(s.id, s.ipa, s.n, s.clear, young);
      case Op::reclaim_page: return m.reclaim_page(s.id, s.ipa, scrubbed);
      case Op::kCount: break;
    }
    return Error::einval;
  }

  // The guest addresses the test compares: the small slots (and a little past them), and the
  // first pages of the 2 MiB slot plus a sample of the rest.
  static const std::vector<u64>& ipas() {
    static const std::vector<u64> v = [] {
      std::vector<u64> r;
      for (u64 i = 0; i < kSlots + 3; ++i) r.push_back(kIpaSmall + i * kPg);
      for (u64 i = 0; i < 8; ++i) r.push_back(kIpaBig + i * kPg);
      for (u64 i = 8; i < kPagesPerBlock; i += 61) r.push_back(kIpaBig + i * kPg);
      return r;
    }();
    return v;
  }

  std::string compare() {
    std::ostringstream o;
    for (u64 i = 0; i < Env::kRamPages; ++i) {
      const u64 pa = kRam + i * kPg;
      const MPage& p = m.pages[i];
      const PageMeta& r = e.mp.page_meta(pa);
      const u8 flags = static_cast<u8>((p.ffa ? kMetaFfa : 0) | (p.relinq ? kMetaRelinquished : 0));
      if (e.mp.host_state(pa) != p.host || e.mp.host_annotation_owner(pa) != p.owner || e.mp.hyp_state(pa) != p.hyp ||
          r.guest_shares != p.shares || r.hyp_pins != p.pins || r.flags != flags || r.guest != p.guest ||
          r.guest_ipa != p.gipa) {
        o << "page 0x" << std::hex << pa << std::dec << ": model host " << name(p.host) << "/" << p.owner << " hyp "
          << name(p.hyp) << " shares " << p.shares << " pins " << p.pins << " flags " << unsigned{flags} << " guest "
          << p.guest << " ipa 0x" << std::hex << p.gipa << std::dec << "; real host " << name(e.mp.host_state(pa))
          << "/" << e.mp.host_annotation_owner(pa) << " hyp " << name(e.mp.hyp_state(pa)) << " shares "
          << r.guest_shares << " pins " << r.hyp_pins << " flags " << unsigned{r.flags} << " guest " << r.guest
          << " ipa 0x" << std::hex << r.guest_ipa;
        return o.str();
      }
      // Whether the host's entry is valid (the model's fault decisions rest on it).
      const auto leaf = e.mp.host_table().lookup(pa);
      const bool valid = leaf && arch::DescValid::get(leaf->entry);
      const bool want_valid = p.host == PS::shared_owned || p.host == PS::shared_borrowed || (p.host == PS::owned && p.mapped);
      if (valid != want_valid) {
        o << "page 0x" << std::hex << pa << ": host entry valid " << valid << ", model " << want_valid;
        return o.str();
      }
    }
    for (ComponentId id : kGuestIds) {
      const MGuest* g = m.guest(id);
      const auto* rg = e.mp.guest(id);
      if ((g == nullptr) != (rg == nullptr) || (g && g->alive != rg->alive)) {
        o << "guest " << id << " existence or liveness differs";
        return o.str();
      }
      if (!g) continue;
      for (u64 ipa : ipas()) {
        auto it = g->map.find(ipa);
        const PS want = it == g->map.end() ? PS::none : it->second.state;
        if (e.mp.guest_state(id, ipa) != want) {
          o << "guest " << id << " ipa 0x" << std::hex << ipa << ": model " << name(want) << ", real "
            << name(e.mp.guest_state(id, ipa));
          return o.str();
        }
      }
    }
    return {};
  }

  // The reference MMU at a page: host and hypervisor from the model, and every live guest's
  // modelled mapping of it, plus the step's own guest addresses when empty or poisoned.
  std::string access(u64 pa, const Step& s) {
    if (pa < kRam || pa >= kRamEnd) return {};
    MPage& p = m.at(pa);
    std::vector<GuestExpect> gs;
    for (auto& [id, g] : m.guests) {
      if (!g.alive) continue;
      for (auto& [ipa, en] : g.map)
        if (en.state != PS::poisoned && en.pa == pa) gs.push_back({id, ipa, en.state, en.perm});
    }
    if (const MGuest* g = m.guest(s.id); g && g->alive) {
      for (u64 i = 0; i < std::min<u64>(s.n, 4); ++i) {
        auto it = g->map.find(s.ipa + i * kPg);
        if (it == g->map.end() || it->second.state == PS::poisoned)
          gs.push_back({s.id, s.ipa + i * kPg, it == g->map.end() ? PS::none : PS::poisoned});
      }
    }
    bool faulted = false;
    const auto r = access_matches(e, pa, p.host, p.hyp, gs, &faulted);
    if (faulted) {
      const Res fr = m.fault(pa);  // the fault handler ran: the model maps what it would
      if (fr) return "model refused a fault the handler took";
    }
    return r ? std::string{} : std::string(r.message());
  }

  std::string step(const Step& s) {
    // Guests' memcaches: full, or exactly what the layer's own bound says this step needs; the
    // host's and the hypervisor's sometimes drained, so the layer's own top-up must suffice.
    const bool exact = uniform<int>(0, 100) < 30;
    for (ComponentId id : kGuestIds) {
      auto* g = e.mp.guest(id);
      if (!g) continue;
      if (exact && id == s.id && s.n > 0) {
        g->mc.drain(*e.plat);
        if (!g->mc.topup(*e.plat, g->table.max_pages_needed(s.ipa, s.n * kPg))) return "topup";
      } else if (!g->mc.topup(*e.plat, 16)) {
        return "topup";
      }
    }
    if (uniform<int>(0, 100) < 30) {
      e.mp.host_memcache().drain(*e.plat);
      e.mp.hyp_memcache().drain(*e.plat);
    }
    const std::vector<ComponentId> ids(std::begin(kGuestIds), std::end(kGuestIds));
    const Snapshot before = snapshot(e, ids, ipas());
    const u64 first = s.pa >= kRam && s.pa < kRamEnd ? s.pa & ~(kPg - 1) : 0;
    if (first) e.set_byte(first + 9, 0x3c);
    // Before a reclaim, mark every page the model says the guest holds, to see which get
    // scrubbed.
    std::vector<u64> marked;
    if (s.op == Op::reclaim)
      for (u64 i = 0; i < Env::kRamPages; ++i)
        if (m.pages[i].guest == s.id) {
          marked.push_back(kRam + i * kPg);
          e.set_byte(kRam + i * kPg + 9, 0x3c);
        }
    // Before a page reclaim, the page the model says the guest maps there (and its neighbour,
    // which must keep its contents).
    if (s.op == Op::reclaim_page)
      if (const MGuest* g = m.guest(s.id))
        if (auto it = g->map.find(s.ipa); it != g->map.end() && it->second.state != PS::poisoned)
          for (u64 pa : {it->second.pa, it->second.pa + kPg})
            if (pa < kRamEnd) {
              marked.push_back(pa);
              e.set_byte(pa + 9, 0x3c);
            }
    bool young_real = false, young_model = false;
    std::vector<u64> scrubbed;
    const Res real = run_real(s, &young_real);
    const Res want = run_model(s, &young_model, &scrubbed);
    if (!want) m.rebuild_blocks();
    auto nm = [](const Res& r) { return r ? name(*r) : "ok"; };
    if (real != want) return std::string("result ") + nm(real) + ", model " + nm(want);
    if (!real && s.op == Op::young && young_real != young_model) return "young bit differs";
    if (real) {
      if (auto r = same(before, snapshot(e, ids, ipas())); !r) return std::string("failed step changed: ") + r.message();
    }
    if (std::string c = compare(); !c.empty()) return c;
    if (auto r = invariants_hold(e.mp); !r) return std::string("invariants: ") + r.message();
    if (!e.plat->violations().empty()) return "platform violation: " + e.plat->violations().front().what;
    if (e.plat->fixmap_pa()) return "fixmap left mapped";
    // Scrubbing: a forced reclaim or a reclaim zeroes exactly the pages it takes back.
    if (first && !real) {
      const bool scrub = (s.op == Op::force_reclaim) ||
                         std::find(scrubbed.begin(), scrubbed.end(), first) != scrubbed.end();
      if (e.byte(first + 9) != (scrub ? 0 : 0x3c)) return scrub ? "not scrubbed" : "scrubbed";
    }
    for (u64 pa : marked) {
      const bool scrub = std::find(scrubbed.begin(), scrubbed.end(), pa) != scrubbed.end();
      if (e.byte(pa + 9) != (scrub ? 0 : 0x3c)) return scrub ? "reclaim did not scrub a page" : "reclaim scrubbed a page it keeps";
    }
    // The reference MMU at the touched pages (the first few of a range).
    for (u64 i = 0; i < std::min<u64>(std::max<u64>(s.n, 1), 4); ++i)
      if (std::string a = access(first + i * kPg, s); !a.empty()) return "access: " + a;
    if (std::string c = compare(); !c.empty()) return "after the access check: " + c;
    return {};
  }
};

RC_GTEST_PROP(PTGUARD_MODEL_SUITE, RandomTransitionSequencesMatchTheModel, ()) {
  Harness h;
  const std::vector<u64> pages = page_set();
  // Start with two guests most of the time.
  for (ComponentId id : {ComponentId{2}, ComponentId{3}}) {
    RC_ASSERT(h.e.mp.create_guest(id, static_cast<u16>(id)).has_value());
    RC_ASSERT(!h.m.create(id));
  }
  const int steps = uniform<int>(1, 80);
  for (int i = 0; i < steps; ++i) {
    const Step s = gen_step(pages, h.m);
    const std::string err = h.step(s);
    if (!err.empty()) RC_FAIL("step " + std::to_string(i) + " " + s.str() + ": " + err);
  }
  // At the end, the reference MMU over every page of the machine (the steps checked only the
  // pages they touched).
  if (const auto p = sim::check_access_against_states(h.e.mem, h.e.mp)) RC_FAIL("whole-machine access check: " + *p);
}

#if !PTGUARD_MODEL_PA52
// The whole-machine check passes on a busy machine and names a table entry that lets a
// component reach what its state denies.
TEST(AccessCheck, ReportsAnEntryThatBreaksIsolation) {
  Env e;
  e.add_guest(2);
  const u64 pa = Env::kBlock1;
  ASSERT_TRUE(e.mp.host_handle_fault(pa));
  ASSERT_TRUE(e.mp.host_share_hyp(pa, 2));
  ASSERT_TRUE(e.mp.host_donate_guest(pa + 4 * kPg, 2, 2, 0x10'0000));
  ASSERT_TRUE(e.mp.host_lend_guest(pa + 8 * kPg, 1, 2, 0x20'0000, pgtable::kPermR));
  ASSERT_TRUE(e.mp.host_share_guest(pa + 12 * kPg, 1, 2, 0x30'0000, pgtable::kPermRW));
  EXPECT_EQ(sim::check_access_against_states(e.mem, e.mp), std::nullopt);
  // The hypervisor's entry for the first shared page rewritten to point at the donated page
  // (what a wrong output address in a transition would leave): the hypervisor would reach a
  // guest's page while its state says it borrows the shared one.
  const u64 va = e.mp.hyp_va(pa), donated = pa + 4 * kPg;
  struct V {
    static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
    u64 va, oa;
    Status leaf(pgtable::VisitCtx& x) {
      if (x.addr == va && x.level == arch::kLastLevel)
        *x.ptep = (x.old & ~arch::leaf_address_mask(Granule::k4K, arch::kLastLevel)) | oa;
      return {};
    }
  } v{va, donated};
  ASSERT_TRUE(e.mp.hyp_table().walk(va, va + kPg, v));
  const auto p = sim::check_access_against_states(e.mem, e.mp);
  ASSERT_TRUE(p.has_value());
  EXPECT_NE(p->find("hypervisor 1 at pa 0x"), std::string::npos) << *p;
  EXPECT_NE(p->find("maps the wrong page"), std::string::npos) << *p;
}
#endif

}  // namespace
}  // namespace ptguard::test
