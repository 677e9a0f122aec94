#include "ptguard/sim/tlb_model.hpp"

#include <algorithm>
#include <cstdio>

namespace ptguard::sim {

namespace {

std::string hex(u64 v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

constexpr u64 kSwBits = u64{0xf} << 55;  // bits 58:55, ignored by the MMU (D8.3.1)

// Whether [a, a + an) and [b, b + bn) share an address.
bool overlaps(u64 a, u64 an, u64 b, u64 bn) { return a <= b + (bn - 1) && b <= a + (an - 1); }

}  // namespace

void TlbModel::fill(int stage, u16 vmid, arch::Granule g, const Translation& t) {
  auto add = [&](const Entry& e) {
    if (std::find(entries_.begin(), entries_.end(), e) == entries_.end()) entries_.push_back(e);
  };
  for (const WalkStep& st : t.walk) {
    if (st.kind != arch::DescKind::table) continue;
    const u64 span = arch::level_size(g, st.level);
    add(Entry{stage, stage == 2 ? vmid : u16{0}, false, st.level, t.input_address & ~(span - 1), span, st.desc});
  }
  if (!t.ok()) return;
  add(Entry{stage, stage == 2 ? vmid : u16{0}, true, t.level, t.input_address & ~(t.block_size - 1), t.block_size,
            t.descriptor});
}

template <typename Pred>
void TlbModel::erase_if(Pred pred) {
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(), pred), entries_.end());
}

void TlbModel::apply(const Event& e) {
  if (e.kind != EventKind::tlbi) return;
  const bool range = arch::is_range(e.tlbi_op);
  const u64 first = e.addr;
  const u64 n = range ? e.size : 1;
  const int hint = e.level;
  // An entry of `stage` (and the event's VMID at stage 2) the address or range touches: a leaf
  // of the hinted level if there is a hint; walk-cache entries only if `walk` and there is no
  // hint (a TTL hint says where the leaves are: a walk entry may survive it, which is why a
  // removed table's span is invalidated without one; Linux 36e008323926).
  auto by_addr = [&](int stage, bool walk) {
    return [=](const Entry& x) {
      if (x.stage != stage || (stage == 2 && x.vmid != e.vmid)) return false;
      if (!overlaps(x.ia, x.size, first, n)) return false;
      if (!x.leaf) return walk && hint == arch::kTlbiLevelUnknown;  // a hint names leaves only
      return hint == arch::kTlbiLevelUnknown || hint == x.level;
    };
  };
  switch (e.tlbi_op) {
    case arch::Tlbi::ipas2e1is:
    case arch::Tlbi::ripas2e1is: erase_if(by_addr(2, true)); break;
    case arch::Tlbi::vmalls12e1is:
      erase_if([&](const Entry& x) { return x.stage == 2 && x.vmid == e.vmid; });
      break;
    case arch::Tlbi::vmalle1is: break;  // stage-1 EL1&0 entries: not modelled
    case arch::Tlbi::vae2is:
    case arch::Tlbi::rvae2is: erase_if(by_addr(1, true)); break;
    case arch::Tlbi::vale2is:
    case arch::Tlbi::rvale2is: erase_if(by_addr(1, false)); break;
    case arch::Tlbi::alle2is:
      erase_if([](const Entry& x) { return x.stage == 1; });
      break;
  }
}

void TlbModel::apply(const EventView& ev) {
  for (const Event& e : ev) apply(e);
}

namespace {

template <typename Walk>
std::vector<TlbModel::Entry> stale_of(const std::vector<TlbModel::Entry>& entries, int stage, u16 vmid, Walk walk) {
  std::vector<TlbModel::Entry> out;
  for (const TlbModel::Entry& x : entries) {
    if (x.stage != stage || (stage == 2 && x.vmid != vmid)) continue;
    const Translation t = walk(x.ia);
    bool agrees = false;
    if (x.leaf) {
      agrees = (t.ok() || t.fault == FaultKind::permission) && t.level == x.level && ((t.descriptor ^ x.desc) & ~kSwBits) == 0;
    } else {
      for (const WalkStep& st : t.walk)
        if (st.level == x.level) agrees = st.kind == arch::DescKind::table && st.desc == x.desc;
    }
    if (!agrees) out.push_back(x);
  }
  return out;
}

}  // namespace

std::vector<TlbModel::Entry> TlbModel::stale(const PhysMem& mem, const Stage2Regs& regs, u16 vmid,
                                             const ImplChoices& impl) const {
  return stale_of(entries_, 2, vmid, [&](u64 ia) { return translate_stage2(mem, regs, ia, Access::read, false, impl); });
}

std::vector<TlbModel::Entry> TlbModel::stale(const PhysMem& mem, const Stage1Regs& regs, const ImplChoices& impl) const {
  return stale_of(entries_, 1, 0, [&](u64 va) { return translate_stage1_el2(mem, regs, va, Access::read, impl); });
}

std::string to_string(const TlbModel::Entry& e) {
  std::string s = "stage " + std::to_string(e.stage);
  if (e.stage == 2) s += " vmid " + std::to_string(e.vmid);
  s += e.leaf ? " leaf" : " table";
  s += " level " + std::to_string(e.level) + " [" + hex(e.ia) + ", +" + hex(e.size) + ") desc " + hex(e.desc);
  return s;
}

}  // namespace ptguard::sim
