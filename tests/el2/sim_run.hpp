// The EL2 scenario run in the simulator: the same steps as the EL2 image (scenario.hpp), the
// same ownership layer over SimPlatform, and, for every access, the reference MMU's
// prediction of what the hardware does: where the image's EL1 code takes a fault to EL2, the
// reference MMU reports the fault; where the host's fault handler maps memory lazily, so does
// this run, and translates again. Reads and writes that translate go to simulated memory, so
// the values read are predicted too.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "el2/scenario.hpp"
#include "ptguard/ownership/mem_protect.hpp"
#include "ptguard/sim/ref_mmu.hpp"
#include "ptguard/sim/sim_platform.hpp"

namespace ptguard::el2test {

/// QEMU 7.2 `-cpu max`'s ID_AA64MMFR0/1/2_EL1, CTR_EL0 and ID_AA64ISAR0_EL1, as the image
/// prints them; the simulator-only test uses these (the QEMU test uses what the image printed).
/// ISAR0.TLB (bits 59:56) is 0b0010: FEAT_TLBIRANGE.
struct IdRegs {
  u64 mmfr0 = 0x3231'0201'126ull, mmfr1 = 0x110'1021'1122ull, mmfr2 = 0x1021'0110'1001'1011ull, ctr = 0x8444'c004ull;
  u64 isar0 = 0x1221'1111'1021'2120ull;
  [[nodiscard]] arch::CpuFeatures features() const {
    return arch::CpuFeatures::from_id_regs(mmfr0, mmfr1, mmfr2, ctr, isar0);
  }
};

[[nodiscard]] inline Fault to_fault(sim::FaultKind k) {
  switch (k) {
    case sim::FaultKind::none: return Fault::none;
    case sim::FaultKind::translation: return Fault::translation;
    case sim::FaultKind::access_flag: return Fault::access_flag;
    case sim::FaultKind::permission: return Fault::permission;
    case sim::FaultKind::address_size: return Fault::address_size;
    case sim::FaultKind::external_abort: return Fault::external_abort;
  }
  return Fault::other;
}

/// One run (a variant of scenario.hpp). Lines are what the image prints for the same granule ("check ..." and
/// "invariants ..."); `problems` lists what the simulator itself objects to (a platform
/// violation, a prediction that rests on an UNPREDICTABLE choice).
template <unsigned V>
class SimRun {
 public:
  static constexpr Variant kRun = kVariants[V];
  static constexpr arch::Granule G = kRun.granule;
  using MP = ownership::MemProtect<G, sim::SimPlatform, kGuestSlots>;
  static constexpr u64 kPage = arch::page_size(G);

  explicit SimRun(const arch::CpuFeatures& cpu) : cpu_(run_cpu(cpu, kRun)) {
    ok(mem_.add_region(kRam, kRamSize), "RAM");
    ok(mem_.add_region(kUart, kUartSize), "UART");
    plat_.emplace(mem_, pool_pa(V), kPoolSize, kPage);
    ok(mem_.write(kHostCode, kEl1Code.w, sizeof(kEl1Code.w)) ? Status{} : fail(Error::einval), "EL1 code");
    meta_.resize(kMemorySize / kPage);
    const ownership::MachineDesc m{memory_, mmio_, ownership::Region{kCarveout, kCarveoutEnd - kCarveout}, kHypVaOffset};
    ok(mp_.init(*plat_, m, meta_, cpu_), "MemProtect::init");
    mp_.finalize();
    // The machine's DS at each stage, which the platform decodes range TLBIs with (FEAT_LPA2).
    plat_->set_regime_ds(2, mp_.host_config().oa.ds());
    plat_->set_regime_ds(1, mp_.hyp_config().oa.ds());
  }

  /// Runs every step; returns the lines.
  std::vector<std::string> run() {
    std::vector<std::string> lines;
    for (unsigned i = 0; i < kSteps; ++i) {
      const Step& s = kScenario[i];
      const Outcome o = step(s);
      Line l;
      format_check(l, kRun.name, i, s, o);
      lines.emplace_back(l.buf);
    }
    std::vector<u32> scratch(kMemorySize / kPage);
    typename MP::Violation v{};
    Line inv;
    inv.str("invariants ").str(kRun.name).str(": ");
    if (mp_.check_invariants(scratch, &v))
      inv.str("hold");
    else
      inv.str("BROKEN: ").str(v.what).str(" at pa ").hex(v.pa);
    lines.emplace_back(inv.buf);
    for (const auto& viol : plat_->violations()) problems.push_back("platform violation: " + viol.what);
    return lines;
  }

  std::vector<std::string> problems;
  /// The ownership layer the run set up.
  [[nodiscard]] const MP& mp() const { return mp_; }

 private:
  void ok(const Status& st, const char* what) {
    if (!st) problems.push_back(std::string(what) + ": " + name(st.error()));
  }

  sim::Translation stage2(ComponentId who, u64 ipa, sim::Access a) {
    const auto& c = mp_.host_config();
    const auto& t = who == ownership::kHostId ? mp_.host_table() : mp_.guest(who)->table;
    sim::Translation r = sim::translate_stage2(mem_, sim::Stage2Regs{c.vtcr, arch::make_vttbr(c, t.root_pa(), t.vmid()), c.fwb, cpu_.xnx}, ipa, a,
                                                false, sim::impl_choices_of(cpu_));
    note(r, ipa);
    // With VTCR_EL2.HA the MMU sets a leaf's access flag in memory on an access that
    // succeeds; the reference MMU says so and leaves the write to its user.
    if (r.ok() && r.af_set_by_hw && !r.walk.empty()) {
      const sim::WalkStep& leaf = r.walk.back();
      if (!mem_.write64(leaf.desc_pa, leaf.desc | arch::S2Af::kMask)) problems.push_back("AF update outside memory");
    }
    return r;
  }
  void note(const sim::Translation& t, u64 addr) {
    if (t.unpredictable) {
      char b[64];
      std::snprintf(b, sizeof b, " (at 0x%llx)", static_cast<unsigned long long>(addr));
      problems.push_back("prediction rests on an UNPREDICTABLE choice: " + std::string(t.note) + b);
    }
  }

  // An EL1 access by `who`, with the host's stage-2 faults handled as the image handles them
  // (translation faults go to host_handle_fault; if it maps the page the access is retried).
  sim::Translation el1_access(ComponentId who, u64 ipa, sim::Access a) {
    sim::Translation t = stage2(who, ipa, a);
    for (unsigned retries = 0; who == ownership::kHostId && t.fault == sim::FaultKind::translation && retries < 4; ++retries) {
      if (!mp_.host_handle_fault(ipa)) break;
      t = stage2(who, ipa, a);
    }
    return t;
  }

  static Outcome fault_of(Outcome::Kind k, const sim::Translation& t, u64 addr) {
    Outcome o{};
    o.kind = k;
    o.fault = to_fault(t.fault);
    o.level = t.level;
    o.addr = addr;
    return o;
  }

  Outcome step(const Step& s) {
    Outcome o{};
    if (s.who == Actor::hyp) {
      const auto& c = mp_.hyp_config();
      const u64 va = mp_.hyp_va(s.addr);
      const sim::Translation t = sim::translate_stage1_el2(
          mem_, sim::Stage1Regs{c.tcr, c.mair, arch::make_ttbr0_el2(c, mp_.hyp_table().root_pa())}, va,
          s.op == Op::read ? sim::Access::read : sim::Access::write, sim::impl_choices_of(cpu_));
      note(t, va);
      if (!t.ok()) return fault_of(Outcome::faulted, t, va);
      return data(s, t.output_address);
    }
    const ComponentId gid = guest_id(s.who);
    if (gid != 0 && !guest_runs(mp_, gid)) {
      o.kind = Outcome::not_run;
      return o;
    }
    // The stub is fetched first, as the image's EL1 code is.
    const u64 code = gid != 0 ? kGuestCode : kHostCode;
    const u64 stub = code + (s.op == Op::call    ? kStubCall
                             : s.op == Op::read  ? kStubRead
                             : s.op == Op::write ? kStubWrite
                                                 : kStubExec);
    const sim::Translation f = el1_access(gid, stub, sim::Access::exec);
    if (!f.ok()) return fault_of(Outcome::fetch_fault, f, stub);
    if (s.op == Op::call) {
      o.kind = Outcome::ret;
      o.value = dispatch(mp_, *plat_, gid, call_regs(s));
      return o;
    }
    const sim::Access a = s.op == Op::read ? sim::Access::read : s.op == Op::write ? sim::Access::write : sim::Access::exec;
    const sim::Translation t = el1_access(gid, s.addr, a);
    if (!t.ok()) return fault_of(Outcome::faulted, t, s.addr);
    if (s.op == Op::exec) {
      // The fetch succeeds; the image's EL1 code then runs what is there, which the scenario
      // makes HVC #1 (anything else would be an EL1 exception in the image).
      u64 word = 0;
      if (!mem_.read64(t.output_address & ~u64{7}, &word) || static_cast<u32>(word >> (8 * (t.output_address & 4))) != kLanding)
        problems.push_back("an exec step's target does not hold HVC #1");
      o.kind = Outcome::ok;
      return o;
    }
    return data(s, t.output_address);
  }

  Outcome data(const Step& s, u64 pa) {
    Outcome o{};
    o.kind = Outcome::ok;
    if (s.op == Op::read) {
      if (!mem_.read64(pa, &o.value)) problems.push_back("read of unbacked memory");
    } else if (!mem_.write64(pa, s.value)) {
      problems.push_back("write to unbacked memory");
    }
    return o;
  }

  arch::CpuFeatures cpu_;
  sim::PhysMem mem_;
  std::optional<sim::SimPlatform> plat_;
  const ownership::Region memory_[1] = {{kMemory, kMemorySize}};
  const ownership::MmioRegion mmio_[1] = {{kUart, kUartSize, true}};
  std::vector<ownership::PageMeta> meta_;
  MP mp_;
};

/// A 52-bit run (scenario.hpp, kVariants52[V] and steps52) in the simulator: the same table
/// built by the same code (build_vm52) on SimPlatform over the same pool, and the reference MMU
/// configured as the CPU the image read: its PA size (52 on QEMU's -cpu max; FEAT_LPA with 64K)
/// and FEAT_LPA2 (ImplChoices::lpa2, from ID_AA64MMFR0_EL1.TGran4/16(_2)), so that VTCR_EL2.DS,
/// SL2/SL0 and the walk from level -1 are the reference MMU's own reading, not the library's.
template <unsigned V>
class SimRun52 {
 public:
  static constexpr Variant52 kRun = kVariants52[V];
  static constexpr arch::Granule G = kRun.granule;
  static constexpr Steps52 kSteps = steps52(kRun);
  using Table = Table52<G, sim::SimPlatform>;

  explicit SimRun52(const arch::CpuFeatures& cpu) : cpu_(cpu) {
    impl_.pa_bits = cpu.pa_bits > 52 ? 52 : cpu.pa_bits;
    impl_.lpa2 = cpu.supports_52bit(arch::Granule::k4K, 2) || cpu.supports_52bit(arch::Granule::k16K, 2);
    ok(mem_.add_region(kRam, kRamSize), "RAM");
    plat_.emplace(mem_, pool52_pa(G), pool52_size(G), arch::page_size(G));
    ok(mem_.write(kHostCode, kEl1Code.w, sizeof(kEl1Code.w)) ? Status{} : fail(Error::einval), "EL1 code");
    ok(mem_.write64(kData52, kValue52) && mem_.write64(kData52 + kSlot, 0) ? Status{} : fail(Error::einval), "data");
    const Result<arch::Stage2Config> cfg = config52(kRun, cpu_);
    if (!cfg) {
      ok(fail(cfg.error()), "make_stage2_config");
      return;
    }
    cfg_ = *cfg;
    plat_->set_regime_ds(2, cfg_.oa.ds());  // VTCR_EL2.DS: how range TLBIs are decoded
    ok(build_vm52<G>(*plat_, kRun, cfg_, table_, mc_), "build_vm52");
  }
  ~SimRun52() {
    if (table_.valid()) table_.destroy();
    mc_.drain(*plat_);
  }

  [[nodiscard]] const arch::Stage2Config& config() const { return cfg_; }

  /// Runs every step; returns the lines ("check 4K-lpa2 ...").
  std::vector<std::string> run() {
    std::vector<std::string> lines;
    if (!table_.valid()) return lines;
    for (unsigned i = 0; i < kSteps52; ++i) {
      const Step& s = kSteps.s[i];
      const Outcome o = step(s);
      Line l;
      format_check(l, kRun.name, i, s, o);
      lines.emplace_back(l.buf);
    }
    for (const auto& viol : plat_->violations()) problems.push_back("platform violation: " + viol.what);
    return lines;
  }

  std::vector<std::string> problems;

 private:
  void ok(const Status& st, const char* what) {
    if (!st) problems.push_back(std::string(what) + ": " + name(st.error()));
  }

  sim::Translation stage2(u64 ipa, sim::Access a) {
    const sim::Stage2Regs regs{cfg_.vtcr, arch::make_vttbr(cfg_, table_.root_pa(), kVmid52), cfg_.fwb, cpu_.xnx};
    sim::Translation r = sim::translate_stage2(mem_, regs, ipa, a, false, impl_);
    if (r.unpredictable) problems.push_back("prediction rests on an UNPREDICTABLE choice: " + std::string(r.note));
    // VTCR_EL2.HA: the access flag the MMU would set (as SimRun::stage2).
    if (r.ok() && r.af_set_by_hw && !r.walk.empty()) {
      const sim::WalkStep& leaf = r.walk.back();
      if (!mem_.write64(leaf.desc_pa, leaf.desc | arch::S2Af::kMask)) problems.push_back("AF update outside memory");
    }
    return r;
  }

  static Outcome fault_of(Outcome::Kind k, const sim::Translation& t, u64 addr) {
    Outcome o{};
    o.kind = k;
    o.fault = to_fault(t.fault);
    o.level = t.level;
    o.addr = addr;
    return o;
  }

  // As SimRun::step for an EL1 access with no fault handler: the stub's fetch, then the access.
  Outcome step(const Step& s) {
    const u64 stub = kRun.ipa + (s.op == Op::read ? kStubRead : s.op == Op::write ? kStubWrite : kStubExec);
    const sim::Translation f = stage2(stub, sim::Access::exec);
    if (!f.ok()) return fault_of(Outcome::fetch_fault, f, stub);
    const sim::Access a = s.op == Op::read ? sim::Access::read : s.op == Op::write ? sim::Access::write : sim::Access::exec;
    const sim::Translation t = stage2(s.addr, a);
    if (!t.ok()) return fault_of(Outcome::faulted, t, s.addr);
    Outcome o{};
    o.kind = Outcome::ok;
    if (s.op == Op::exec) {
      u64 word = 0;
      if (!mem_.read64(t.output_address & ~u64{7}, &word) || static_cast<u32>(word >> (8 * (t.output_address & 4))) != kLanding)
        problems.push_back("an exec step's target does not hold HVC #1");
    } else if (s.op == Op::read) {
      if (!mem_.read64(t.output_address, &o.value)) problems.push_back("read of unbacked memory");
    } else if (!mem_.write64(t.output_address, s.value)) {
      problems.push_back("write to unbacked memory");
    }
    return o;
  }

  arch::CpuFeatures cpu_;
  sim::ImplChoices impl_;
  sim::PhysMem mem_;
  std::optional<sim::SimPlatform> plat_;
  arch::Stage2Config cfg_{};
  Table table_;
  pgtable::Memcache mc_;
};

}  // namespace ptguard::el2test
