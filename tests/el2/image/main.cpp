// The mini-hypervisor: ptguard at EL2 under QEMU (`-M virt,virtualization=on -cpu max`).
//
// For each run of the scenario (each granule the CPU supports, 4K, 16K and 64K, and 4K once
// more with FEAT_S2FWB left off) it sets the machine up with the ownership
// layer over El2Platform, builds and switches to its own stage-1 EL2 tables, sets the host's
// stage-2, and runs the scenario of ../scenario.hpp: every transition is a hypercall (HVC #0)
// made by an EL1 program, every access is made by EL1 code (the host, or a guest on its own
// stage-2 and VMID) or by the hypervisor itself, and the fault, if any, is read from ESR_EL2,
// HPFAR_EL2 and FAR_EL2. One UART line per check; semihosting SYS_EXIT 0 if all passed.
//
// Then the 52-bit runs (scenario.hpp, kVariants52; Run52 below): per granule, EL1 code on a
// stage-2 of IPAs above 2^48 (FEAT_LPA2 with 4K from level -1 and with 16K, FEAT_LPA with 64K)
// that the engine builds directly, on VMID kVmid52, with the host's stage-2 registers restored
// after each.
//
// The EL1 programs are the stubs of the EL1 code page (scenario.hpp, kEl1Code): the
// hypervisor loads their registers, enters one with ERET, and the stub reports with HVC #1.
// The host's stage-2 faults go to MemProtect::host_handle_fault, which maps host memory
// lazily; a fault it refuses is a forbidden access, reported as such.
//
// Then the SMP phase (docs/concurrency.md, "Tests"), on the machine of the last run, after its
// scenario: CPU 0 starts CPUs 1-3 with PSCI CPU_ON (however many the board has: with -smp 1
// it runs alone), each switches to the same EL2 stage-1 tables, and all of them, released
// together, run kSmpRounds host stubs that call the ownership layer directly on one shared,
// overlapping range of pages (host faults, share/unshare with the hypervisor, pin + access +
// unpin, donate to the hypervisor and back), and each also cycles a guest of its own and
// uses the one fixmap slot of El2Platform directly and through cache_op (see "the SMP phase"
// below). Before the host stubs, all CPUs run kSmpSharedRounds rounds in step on one guest that
// CPU 0 set up (smp_shared_round below): the guest's own faults under the shared side of its
// lock, racing with each other and with write-protects, unshares and shares of the same guest
// (exclusive side); at the end CPU 0 checks every page's final entry, runs the invariant
// checker and reclaims the guest. Refusals the layer documents (EPERM, EBUSY, EAGAIN, ENOENT) on the shared range are
// counted; any other error, any error of a guest cycle, a pinned page that the hypervisor
// cannot write and read back, a pattern not read back through the fixmap or a reclaimed page
// not zero, is a failure; so is a CPU that completed no guest cycle or fixmap hold. CPU 0 then runs the invariant checker and prints one
// `smp:` line per CPU and `smp: invariants hold`; any failure makes the exit status 1.
#include <utility>

#include "ptguard/arch/aarch64/insn.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/hyp/psci.hpp"
#include "ptguard/ownership/mem_protect.hpp"
#include "ptguard/pgtable/el2_platform.hpp"
#include "../scenario.hpp"

using namespace ptguard;
using namespace ptguard::el2test;
namespace a64 = ptguard::arch::aarch64;
using arch::Granule;

struct El1Frame {
  u64 x[31];
  u64 elr;
  u64 spsr;
};
static_assert(sizeof(El1Frame) == 264);

extern "C" {
[[noreturn]] void semihost_exit(u64 status);
void el2_mmu_switch(u64 tcr, u64 mair, u64 ttbr0, u64 sctlr);
u64 hyp_probe_read(u64 va, u64* out);
u64 hyp_probe_write(u64 va, u64 value);
u64 el1_run(El1Frame* f);
u64 hyp_smc(u64 x0, u64 x1, u64 x2, u64 x3);
void el2_secondary_entry();
[[noreturn]] void el2_park();
extern u64 probe_syndrome[2];
extern char __image_start[], __text_end[], __rodata_end[], __image_end[];
}

// The EL1 code page, linked at kHostCode (link.ld).
__attribute__((section(".el1"), used)) const El1Code el1_code = kEl1Code;

namespace {

// ---- system register values ---------------------------------------------------------------------

/// SCTLR_EL2 with HCR_EL2.E2H = 0 (D24.2 SCTLR_EL2): the RES1 bits 29, 28, 23, 22, 18, 16, 11,
/// 5 and 4; M (0) stage-1 translation on; C (2) data accesses cacheable; SA (3) stack alignment
/// check; I (12) instruction fetches cacheable. A (1), WXN (19) and EE (25, little-endian)
/// stay 0. QEMU resets SCTLR_EL2 to 0, so the whole value is written.
constexpr u64 kSctlrEl2Res1 = (u64{1} << 29) | (u64{1} << 28) | (u64{1} << 23) | (u64{1} << 22) |
                              (u64{1} << 18) | (u64{1} << 16) | (u64{1} << 11) | (u64{1} << 5) |
                              (u64{1} << 4);
constexpr u64 kSctlrEl2 = kSctlrEl2Res1 | (u64{1} << 12) | (u64{1} << 3) | (u64{1} << 2) | (u64{1} << 0);

/// SCTLR_EL1 for the EL1 programs (D24.2 SCTLR_EL1): stage 1 off (M = 0), caches off (C = 0,
/// I = 0), with the bits that are RES1 without later features set as Armv8.0 requires: 29
/// (LSMAOE), 28 (nTLSMD), 23 (SPAN), 22 (EIS), 20 (TSCXT), 11 (EOS). With M = 0 every EL1 data
/// access is Device-nGnRnE at stage 1 and its VA is its IPA, so FAR_EL2 holds the IPA.
constexpr u64 kSctlrEl1MmuOff = (u64{1} << 29) | (u64{1} << 28) | (u64{1} << 23) | (u64{1} << 22) |
                                (u64{1} << 20) | (u64{1} << 11);

/// SPSR_EL2 for entering EL1: M[3:0] = 0b0101 (EL1h), D, A, I, F masked (bits 9:6).
constexpr u64 kSpsrEl1h = 0x3c5;

/// HCR_EL2 (D24.2 HCR_EL2): VM (0) stage-2 translation for EL1&0; RW (31) EL1 is AArch64; FWB
/// (46) when the library's stage-2 configuration says the CPU has FEAT_S2FWB (its MemAttr
/// encodings assume it). E2H (34) and TGE (27) stay 0: a non-VHE hypervisor.
constexpr u64 kHcrVm = arch::HcrVm::kMask;
constexpr u64 kHcrRw = u64{1} << 31;
constexpr u64 kHcrFwb = arch::HcrFwb::kMask;

// ESR_EL2.EC values (D24.2 ESR_EL2).
constexpr u64 kEcHvc64 = 0x16;
constexpr u64 kEcIabtLow = 0x20;
constexpr u64 kEcDabtLow = 0x24;

// ---- UART (PL011 UARTDR at +0, UARTFR.TXFF bit 5 at +0x18) ----------------------------------------
void putc(char c) {
  volatile u32* const uart = reinterpret_cast<volatile u32*>(kUart);
  while (uart[0x18 / 4] & (1u << 5)) {
  }
  uart[0] = static_cast<u8>(c);
}
void puts(const char* s) {
  while (*s) putc(*s++);
}
void println(const Line& l) {
  puts(l.buf);
  putc('\n');
}

// ---- the run of one EL1 step ----------------------------------------------------------------------
struct Run {
  Actor who = Actor::host;
  Op op = Op::read;
  ComponentId caller = 0;
  u64 target = 0;  ///< an exec step's branch target
  unsigned retries = 0;
  Outcome out{};
  void* ctx = nullptr;
  u64 (*hvc)(void* ctx, ComponentId caller, const CallRegs& r) = nullptr;
  bool (*host_fault)(void* ctx, u64 ipa) = nullptr;
};
Run g_run;
El1Frame g_frame;
unsigned g_checks = 0, g_failed = 0;

// ---- the SMP phase ------------------------------------------------------------------------------
// What is safe to call from several CPUs at once: every transition (MemProtect takes its own
// locks) over an El2Platform whose page pool and fixmap have locks of their own. The phase runs
// on the last run's machine, 4K without FEAT_S2FWB, where the fixmap is busiest: the scrubbing
// transitions (reclaim_guest*, host_force_reclaim) zero pages through it under the hypervisor
// lock, and cache_op() borrows it for every page outside the platform's linear range (the
// carve-out; all host and guest memory is outside it), which a guest's stage 2 without FWB
// does when it maps or unmaps a page, under the guest lock alone. Besides the host <->
// hypervisor stubs, each CPU cycles a guest of its own (create, donate two pages it filled
// with a pattern, share one and relax it to executable, force-reclaim one donated page,
// unshare, teardown and reclaim) and checks through the fixmap that both donated pages came
// back zeroed; it also holds the fixmap itself over a page of its own, writes a pattern, has
// cache_op swap another page in and out and invalidate the instruction cache, and reads the
// pattern back; and it calls cache_op on the shared range with no lock, as a guest-fault path
// would. A refused fixmap, a pattern not read back or a page not zeroed is a failure.
constexpr unsigned kSmpCpus = 4;        ///< boot.S SMP_CPUS: one stack slot each
/// Host stubs per CPU. A contended lock hand-over costs milliseconds under TCG: 4 x 300 take
/// about 12 s on a busy 2-core host, in either TCG mode.
constexpr unsigned kSmpRounds = 300;
constexpr u64 kSmpBase = 0x4300'0000;   ///< host memory no step of the scenario touches
constexpr unsigned kSmpPages = 16;      ///< pages (of the run's granule) every CPU works on
static_assert(kSmpBase >= host_page(64) && kSmpBase + kSmpPages * 0x1'0000 <= kMemory + kMemorySize);
/// Each CPU's guest pages (kSmpGuestPages 64 KiB slots) and its own fixmap page (one slot).
constexpr u64 kSmpGuestBase = 0x4320'0000;
constexpr unsigned kSmpGuestPages = 3;
constexpr u64 kSmpFixBase = 0x4340'0000;
constexpr ComponentId kSmpGuestId = 10;  ///< CPU i's guest: id 10 + i, VMID 8 + i
constexpr u16 kSmpGuestVmid = 8;
static_assert(kSmpBase + kSmpPages * 0x1'0000 <= kSmpGuestBase);
static_assert(kSmpGuestBase + kSmpCpus * kSmpGuestPages * 0x1'0000 <= kSmpFixBase);
static_assert(kSmpFixBase + kSmpCpus * 0x1'0000 <= kMemory + kMemorySize);

// The guest all CPUs use at once (smp_shared_round below): set up by CPU 0 before the CPUs are
// released, every host page of it shared read-only (one 64 KiB slot each). The "A" pages, one
// per round, only ever gain permissions and change their access flag under the shared side:
// each must end read-write-execute. The "B" pages, kSmpSharedBPerCpu per CPU, are
// write-protected, unshared and shared again by their CPU (exclusive side) while another CPU
// relaxes, ages and makes young the same pages (shared side).
constexpr ComponentId kSmpSharedId = 20;
constexpr u16 kSmpSharedVmid = 12;  ///< not the per-CPU guests' 8-11
/// Rounds per CPU, and "A" pages (one per round). About 50 ms a round under TCG on a busy
/// 2-core host (two barriers, a TLBI broadcast per relax and age): 16 keep the phase under 1 s.
constexpr unsigned kSmpSharedRounds = 16;
constexpr unsigned kSmpSharedBPerCpu = 2;
constexpr unsigned kSmpSharedAf = 3;  ///< test-and-clear-young + mkyoung pairs per CPU and round
constexpr unsigned kSmpSharedB = kSmpCpus * kSmpSharedBPerCpu;
constexpr u64 kSmpSharedBase = 0x4350'0000;  ///< host pages: the A pages, then the B pages
constexpr u64 kSmpSharedIpa = 0x9000'0000;   ///< their guest addresses, in the same order
static_assert(kSmpFixBase + kSmpCpus * 0x1'0000 <= kSmpSharedBase);
static_assert(kSmpSharedBase + (kSmpSharedRounds + kSmpSharedB) * 0x1'0000 <= kMemory + kMemorySize);

/// One CPU's outcomes, on a cache line of its own (only that CPU writes it, until it is done).
struct alignas(64) SmpCounts {
  u64 ops = 0, ok = 0, eperm = 0, ebusy = 0, eagain = 0, enoent = 0, accesses = 0, other = 0;
  u64 guest_cycles = 0;   ///< guests created, used and reclaimed whole
  u64 fixmap_holds = 0;   ///< fixmap held, pattern written and read back
  u64 cache_ops = 0;      ///< cache_op calls on the shared range, no lock held
  unsigned guest_step = 0;
  // The shared guest (smp_shared_round): its shared-side calls (relax, mkyoung,
  // test-and-clear-young; each EAGAIN retry counts as a call too), the EAGAINs among them, the
  // refusals of a B page its owner had unshared (EPERM), and the exclusive-side calls.
  u64 sh_ops = 0, sh_eagain = 0, sh_refused = 0, excl_ops = 0;
  const char* first_other = nullptr;  ///< what went wrong first (a stub's name)
  Error first_error = Error::einval;
};

/// The machine the phase runs on (the last run's): its stub and its checker.
struct SmpMachine {
  void (*stub)(unsigned cpu, u64 r, SmpCounts& c) = nullptr;
  bool (*check)(Line& l) = nullptr;
  bool (*shared_setup)(Line& l) = nullptr;  ///< the shared guest, on CPU 0 before the release
  void (*shared_round)(unsigned cpu, unsigned cpus, unsigned round, SmpCounts& c) = nullptr;
  bool (*shared_check)(Line& l) = nullptr;  ///< its final entries and the invariants, then reclaimed
};
SmpMachine g_smp;
SmpCounts g_smp_counts[kSmpCpus];
u32 g_smp_arrived = 0, g_smp_go = 0, g_smp_done = 0;  // __atomic only
u32 g_smp_cpus = 1;                                   // written before g_smp_go
u32 g_smp_bar_count = 0, g_smp_bar_gen = 0;           // smp_barrier, __atomic only
u64 g_smp_shared_ms = 0;                              // the shared-guest rounds, CPU 0's clock

/// Waits until all `cpus` CPUs arrived (a counter and a generation: reusable at once).
void smp_barrier(unsigned cpus) {
  const u32 gen = __atomic_load_n(&g_smp_bar_gen, __ATOMIC_ACQUIRE);
  if (__atomic_add_fetch(&g_smp_bar_count, 1, __ATOMIC_ACQ_REL) == cpus) {
    __atomic_store_n(&g_smp_bar_count, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&g_smp_bar_gen, gen + 1, __ATOMIC_RELEASE);
    return;
  }
  while (__atomic_load_n(&g_smp_bar_gen, __ATOMIC_ACQUIRE) == gen) pgtable::cpu_relax();
}

/// xorshift64 (Marsaglia): each CPU's own deterministic sequence.
u64 xorshift(u64& x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

void smp_count(SmpCounts& c, const Status& st, const char* what) {
  ++c.ops;
  if (st) {
    ++c.ok;
    return;
  }
  switch (st.error()) {
    case Error::eperm: ++c.eperm; return;
    case Error::ebusy: ++c.ebusy; return;
    case Error::eagain: ++c.eagain; return;
    case Error::enoent: ++c.enoent; return;
    default: break;
  }
  if (c.other++ == 0) {
    c.first_other = what;
    c.first_error = st.error();
  }
}

/// A step that must succeed: any error is a failure, refusals included.
void smp_must(SmpCounts& c, const Status& st, const char* what) {
  ++c.ops;
  if (st) {
    ++c.ok;
    return;
  }
  if (c.other++ == 0) {
    c.first_other = what;
    c.first_error = st.error();
  }
}

/// The physical counter (CNTPCT_EL0, D12.1), for the phase's time limits.
u64 now_ticks() {
  a64::isb();
  return PTGUARD_MRS("cntpct_el0");
}

/// The rounds of one CPU, released by g_smp_go: the shared guest's rounds first, all CPUs in
/// step (a barrier after each, so they work on the same page at the same time), then the host
/// stubs.
void smp_run(unsigned cpu) {
  SmpCounts& c = g_smp_counts[cpu];
  const unsigned cpus = __atomic_load_n(&g_smp_cpus, __ATOMIC_RELAXED);
  const u64 t0 = now_ticks();
  for (unsigned r = 0; r < kSmpSharedRounds; ++r) {
    g_smp.shared_round(cpu, cpus, r, c);
    smp_barrier(cpus);
  }
  if (cpu == 0) g_smp_shared_ms = (now_ticks() - t0) * 1000 / PTGUARD_MRS("cntfrq_el0");
  u64 x = 0x9e37'79b9'7f4a'7c15ull * (cpu + 1);
  for (unsigned i = 0; i < kSmpRounds; ++i) g_smp.stub(cpu, xorshift(x), c);
}
/// Waits until *v reaches `want` or `seconds` pass; whether it did.
bool wait_for(const u32* v, u32 want, u64 seconds) {
  const u64 end = now_ticks() + seconds * PTGUARD_MRS("cntfrq_el0");
  while (__atomic_load_n(v, __ATOMIC_ACQUIRE) < want) {
    if (now_ticks() > end) return false;
    pgtable::cpu_relax();
  }
  return true;
}

}  // namespace

/// What a secondary CPU reads with its MMU off (boot.S SMP_*): one cache line, cleaned to the
/// point of coherency by CPU 0 before CPU_ON (the secondary's reads bypass the cache).
struct alignas(64) SmpBoot {
  u64 tcr, mair, ttbr0, sctlr;  // el2_mmu_switch's arguments, CPU 0's values
  u64 vtcr, vttbr;              // the host's stage 2 (TLBI IPAS2E1IS acts on VTTBR_EL2's VMID)
};
static_assert(sizeof(SmpBoot) == 64);
extern "C" {
SmpBoot el2_smp_boot;
}

/// A secondary CPU once its MMU is on and it has its stack (boot.S el2_secondary_entry).
extern "C" [[noreturn]] void el2_secondary_main(u64 cpu) {
  PTGUARD_MSR("vtcr_el2", el2_smp_boot.vtcr);
  PTGUARD_MSR("vttbr_el2", el2_smp_boot.vttbr);
  a64::isb();
  __atomic_fetch_add(&g_smp_arrived, 1, __ATOMIC_ACQ_REL);
  while (__atomic_load_n(&g_smp_go, __ATOMIC_ACQUIRE) == 0) pgtable::cpu_relax();
  smp_run(static_cast<unsigned>(cpu));
  __atomic_fetch_add(&g_smp_done, 1, __ATOMIC_RELEASE);
  el2_park();
}

extern "C" [[noreturn]] void el2_panic(u64 esr, u64 elr, u64 far) {
  Line l;
  l.str("panic: unexpected exception at EL2 esr ").hex(esr).str(" elr ").hex(elr).str(" far ").hex(far);
  println(l);
  semihost_exit(1);
}

/// A synchronous exception from EL1: 0 to return to EL1, 1 when the step is over.
extern "C" u64 el2_lower_trap(El1Frame* f) {
  const u64 esr = PTGUARD_MRS("esr_el2");
  const u64 ec = esr >> 26;
  Outcome& o = g_run.out;
  if (ec == kEcHvc64) {
    const u64 imm = esr & 0xffff;
    if (imm == kHvcCall) {
      const CallRegs r{{f->x[0], f->x[1], f->x[2], f->x[3], f->x[4], f->x[5]}};
      f->x[0] = g_run.hvc(g_run.ctx, g_run.caller, r);
      return 0;
    }
    if (imm == kHvcDone) {
      o.kind = g_run.op == Op::call ? Outcome::ret : Outcome::ok;
      o.value = g_run.op == Op::call ? f->x[0] : g_run.op == Op::read ? f->x[1] : 0;
      return 1;
    }
    o.kind = Outcome::el1_exception;
    return 1;
  }
  if (ec == kEcDabtLow || ec == kEcIabtLow) {
    int level = 0;
    const Fault kind = decode_fsc(esr & 0x3f, &level);
    const u64 far = PTGUARD_MRS("far_el2");
    // HPFAR_EL2.FIPA (bits [43:4]) holds IPA[51:12] for translation, access-flag and
    // address-size faults; for permission faults it may be UNKNOWN on hardware, so the IPA
    // is taken from FAR_EL2, which holds it while EL1 runs with stage 1 off.
    const u64 hpfar = PTGUARD_MRS("hpfar_el2");
    const u64 ipa = kind == Fault::permission ? far : (arch::Field<43, 4>::get(hpfar) << 12) | (far & 0xfff);
    if (g_run.who == Actor::host && kind == Fault::translation && g_run.retries < 4) {
      ++g_run.retries;
      if (g_run.host_fault(g_run.ctx, ipa)) return 0;  // mapped lazily: retry the access
    }
    // An instruction abort is the step's own access only for an exec step at its target;
    // anywhere else the stub itself could not be fetched.
    const bool own = ec == kEcDabtLow || (g_run.op == Op::exec && f->elr == g_run.target);
    o.kind = own ? Outcome::faulted : Outcome::fetch_fault;
    o.fault = kind;
    o.level = level;
    o.addr = ipa;
    return 1;
  }
  o.kind = Outcome::unexpected;
  o.value = esr;
  return 1;
}

namespace {

/// El2Platform counting the TLBIs the engine asks of it, for the `tlbi` line after each run:
/// how many range TLBIs (FEAT_TLBIRANGE), how many of them for a DS = 1 regime (FEAT_LPA2:
/// BaseADDR in 64 KiB units, arch::TlbiRange::ds), how many by address. Relaxed atomics: the
/// SMP phase shares the last run's platform (its counts are not printed).
struct TlbiCounts {
  u64 range = 0;
  u64 range_ds = 0;
  u64 by_addr = 0;
};
template <Granule G>
struct CountingPlatform : pgtable::El2Platform<G> {
  TlbiCounts n;
  void tlbi(arch::Tlbi op, u16 vmid, u64 addr, int level) {
    if (op == arch::Tlbi::ipas2e1is || op == arch::Tlbi::vae2is || op == arch::Tlbi::vale2is)
      __atomic_fetch_add(&n.by_addr, 1, __ATOMIC_RELAXED);
    pgtable::El2Platform<G>::tlbi(op, vmid, addr, level);
  }
  void tlbi_range(arch::Tlbi op, u16 vmid, const arch::TlbiRange& r) {
    __atomic_fetch_add(&n.range, 1, __ATOMIC_RELAXED);
    if (r.ds) __atomic_fetch_add(&n.range_ds, 1, __ATOMIC_RELAXED);
    pgtable::El2Platform<G>::tlbi_range(op, vmid, r);
  }
};
/// "tlbi <run>: range <n> ds <m> by-address <k>" (not compared with the simulator).
void print_tlbi_counts(const char* run, const TlbiCounts& n) {
  Line l;
  l.str("tlbi ").str(run).str(": range ").dec(n.range).str(" ds ").dec(n.range_ds).str(" by-address ").dec(n.by_addr);
  println(l);
}

template <unsigned V>
struct Hyp {
  static constexpr Variant kRun = kVariants[V];
  static constexpr Granule G = kRun.granule;
  using Plat = CountingPlatform<G>;
  using MP = ownership::MemProtect<G, Plat, kGuestSlots>;
  static constexpr u64 kPage = arch::page_size(G);

  static inline Plat plat;
  static inline MP mp;
  static inline u32 counts[kPoolSize / kPage];
  static inline ownership::PageMeta meta[kMemorySize / kPage];
  static inline u32 scratch[kMemorySize / kPage];
  static inline u64 host_vttbr = 0;

  static u64 hvc(void*, ComponentId caller, const CallRegs& r) {
    const u64 ret = dispatch(mp, plat, caller, r);
    if (ret == 0 && static_cast<Call>(r.x[0]) == Call::create_guest) {
      const auto* g = mp.guest(static_cast<ComponentId>(r.x[1]));
      plat.set_vttbr(g->table.vmid(), arch::make_vttbr(mp.host_config(), g->table.root_pa(), g->table.vmid()));
    }
    return ret;
  }
  static bool host_fault(void*, u64 ipa) { return mp.host_handle_fault(ipa).has_value(); }

  static Outcome run_el1(const Step& s) {
    Outcome none{};
    const ComponentId gid = guest_id(s.who);
    if (gid != 0 && !guest_runs(mp, gid)) {
      none.kind = Outcome::not_run;
      return none;
    }
    g_run = Run{s.who, s.op, gid, s.addr, 0, Outcome{}, nullptr, &hvc, &host_fault};
    El1Frame& f = g_frame;
    f = El1Frame{};
    const u64 code = gid != 0 ? kGuestCode : kHostCode;
    if (s.op == Op::call) {
      const CallRegs r = call_regs(s);
      for (int i = 0; i < 6; ++i) f.x[i] = r.x[i];
      f.elr = code + kStubCall;
    } else {
      f.x[0] = s.addr;
      f.x[1] = s.value;
      f.elr = code + (s.op == Op::read ? kStubRead : s.op == Op::write ? kStubWrite : kStubExec);
    }
    f.spsr = kSpsrEl1h;
    PTGUARD_MSR("sctlr_el1", kSctlrEl1MmuOff);
    PTGUARD_MSR("vbar_el1", code);
    if (gid != 0) {
      const auto* g = mp.guest(gid);
      PTGUARD_MSR("vttbr_el2", arch::make_vttbr(mp.host_config(), g->table.root_pa(), g->table.vmid()));
    }
    a64::isb();
    el1_run(&f);
    if (gid != 0) {
      PTGUARD_MSR("vttbr_el2", host_vttbr);
      a64::isb();
    }
    return g_run.out;
  }

  /// A range invalidation of the hypervisor's stage 1 that QEMU can judge: the host shares a
  /// run of pages with the hypervisor starting one page past a 64 KiB boundary (4K, 16K), the
  /// hypervisor reads each (its TLB may now hold them), the host unshares them (the hypervisor
  /// unmaps them: TLBI VALE2IS for the pages before the next 64 KiB boundary, then TLBI RVALE2IS
  /// from it, with DS = 1 where the tables are 52-bit), and every page must then fault at EL2.
  /// This runs the DS = 1 stage-1 range path on QEMU's MMU, but it is not a sensitive oracle:
  /// QEMU 7.2 still faults every page when the engine is mutated to encode the range without DS
  /// or to start it off the 64 KiB boundary (measured; its TLB flushes more than it is asked
  /// to), so the simulator's TLB model (tests/pgtable/tlbi_range_lpa2_test.cpp) and the `tlbi`
  /// counts below are what catch those. One check line.
  static void unshare_by_range() {
    const u64 per64 = kSlot / kPage;  // 16, 4 or 1
    const u64 pa0 = host_page(32) + (per64 > 1 ? kPage : 0);
    const u64 n = per64 > 1 ? 2 * per64 - 1 : 2;  // at 4K: 15 by address and one range
    Line l;
    l.str("unshared ").str(kRun.name).str(" pages ").dec(n).str(" from pa ").hex(pa0).str(": ");
    bool ok = true;
    // A page shared in the same last-level table keeps the table (and so the runs' own
    // invalidation, not the emptied table's span) through the unshare.
    const u64 keep = host_page(40);
    if (Status st = mp.host_share_hyp(keep, 1); !st) {
      l.str("share ").str(name(st.error()));
      ok = false;
    }
    if (Status st = mp.host_share_hyp(pa0, n); ok && !st) {
      l.str("share ").str(name(st.error()));
      ok = false;
    }
    u64 value = 0;
    for (u64 i = 0; ok && i < n; ++i) {
      if (hyp_probe_read(mp.hyp_va(pa0 + i * kPage), &value) != 0) {
        l.str("not mapped after share at pa ").hex(pa0 + i * kPage);
        ok = false;
      }
    }
    if (Status st = mp.host_unshare_hyp(pa0, n); ok && !st) {
      l.str("unshare ").str(name(st.error()));
      ok = false;
    }
    for (u64 i = 0; ok && i < n; ++i) {
      if (hyp_probe_read(mp.hyp_va(pa0 + i * kPage), &value) == 0) {
        l.str("STILL MAPPED at pa ").hex(pa0 + i * kPage);
        ok = false;
      }
    }
    if (Status st = mp.host_unshare_hyp(keep, 1); ok && !st) {
      l.str("unshare ").str(name(st.error()));
      ok = false;
    }
    if (ok) l.str("all fault after unshare");
    println(l);
    ++g_checks;
    if (!ok) ++g_failed;
  }

  static Outcome run_hyp(const Step& s) {
    Outcome o{};
    const u64 va = mp.hyp_va(s.addr);
    u64 value = 0;
    const u64 faulted = s.op == Op::read ? hyp_probe_read(va, &value) : hyp_probe_write(va, s.value);
    if (!faulted) {
      o.kind = Outcome::ok;
      o.value = value;
      return o;
    }
    o.kind = Outcome::faulted;
    o.fault = decode_fsc(probe_syndrome[0] & 0x3f, &o.level);
    o.addr = probe_syndrome[1];
    return o;
  }

  // ---- the SMP phase's host stub and checker (g_smp) ----

  /// One host stub: an ownership-layer call chosen by `r` on 1-4 pages of the shared range.
  /// Several CPUs run these at once on the same pages; the layer's locks serialise them.
  static void smp_stub(unsigned cpu, u64 r, SmpCounts& c) {
    const u64 k = (r >> 8) % kSmpPages;
    u64 n = 1 + (r >> 16) % 4;
    if (k + n > kSmpPages) n = kSmpPages - k;
    const u64 pa = kSmpBase + k * kPage;
    switch (r % 10) {
      case 7: return smp_guest_step(cpu, c);
      case 8: return smp_fixmap_hold(cpu, r, c);
      case 9: {
        // As a guest-fault path would, under no lock of the fixmap's: the platform takes it.
        plat.cache_op(arch::CacheOp::dc_civac, pa, n * kPage);
        plat.cache_op(arch::CacheOp::ic_ivau, pa, kPage);
        ++c.cache_ops;
        return smp_count(c, {}, "cache_op");
      }
      case 0:
      case 1: return smp_count(c, mp.host_handle_fault(pa + ((r >> 24) % kPage & ~u64{7})), "host_handle_fault");
      case 2: return smp_count(c, mp.host_share_hyp(pa, n), "host_share_hyp");
      case 3: return smp_count(c, mp.host_unshare_hyp(pa, n), "host_unshare_hyp");
      case 4: {
        const Status st = mp.hyp_pin_shared(pa, 1);
        smp_count(c, st, "hyp_pin_shared");
        if (!st) return;
        // Pinned, the page stays shared and mapped at EL2 until this CPU unpins it (a stub
        // unpins only the pin it took): the hypervisor's write and read through its mapping
        // must work, on a word of this CPU's own. A fault would be el2_panic's (exit 1).
        volatile u64* const w = reinterpret_cast<volatile u64*>(mp.hyp_va(pa) + cpu * 8);
        *w = r;
        ++c.accesses;
        if (*w != r) smp_count(c, fail(Error::eexist), "pinned page read back");
        return smp_count(c, mp.hyp_unpin_shared(pa, 1), "hyp_unpin_shared");
      }
      case 5: return smp_count(c, mp.host_donate_hyp(pa, n), "host_donate_hyp");
      default: return smp_count(c, mp.hyp_donate_host(pa, n), "hyp_donate_host");
    }
  }

  /// Fills the page at `pa` with words from `seed` through the fixmap (the host does not map
  /// it at EL2), with a clean of another page through the fixmap in between (cache_op swaps
  /// it in and out while this CPU holds the slot), and reads the words back; whether all of
  /// them came back. `seed` 0 checks that the page is zero instead of writing it.
  static bool smp_fixmap_page(u64 pa, u64 seed, u64 other) {
    auto* const w = static_cast<volatile u64*>(plat.fixmap_map(pa));
    if (w == nullptr) return false;
    // The whole page, written and read back twice: the longer this CPU uses the slot, the
    // likelier another CPU's cache_op overlaps it (and would swap the page under it, were
    // cache_op to borrow the slot without the lock).
    constexpr u64 kWords = kPage / 8;
    const auto want = [seed](u64 i) { return seed != 0 ? seed + i : 0; };
    bool same = true;
    for (unsigned pass = 0; pass < 2; ++pass) {
      if (seed != 0)
        for (u64 i = 0; i < kWords; ++i) w[i] = want(i);
      if (pass == 0) {
        plat.cache_op(arch::CacheOp::dc_civac, other, kPage);  // swapped in and out: ours
        plat.cache_op(arch::CacheOp::ic_ivau, pa, 64);         // the page we hold: through the slot
      }
      for (u64 i = 0; i < kWords; ++i) same = same && w[i] == want(i);
    }
    if (plat.fixmap_map(other) != nullptr) same = false;  // nested use is refused
    plat.fixmap_unmap();
    return same;
  }

  /// The fixmap held by this CPU over a page of its own: the pattern must come back, whatever
  /// the other CPUs do with the fixmap meanwhile.
  static void smp_fixmap_hold(unsigned cpu, u64 r, SmpCounts& c) {
    const u64 pa = kSmpFixBase + cpu * 0x1'0000;
    const u64 other = kSmpBase + ((r >> 8) % kSmpPages) * kPage;
    if (!smp_fixmap_page(pa, r | 1, other)) return smp_count(c, fail(Error::eexist), "fixmap page read back");
    ++c.fixmap_holds;
    return smp_count(c, {}, "fixmap");
  }

  /// One step of this CPU's guest cycle. Each step's transitions must succeed (the pages and
  /// the guest are this CPU's alone); the scrubs must leave the donated pages zero.
  static void smp_guest_step(unsigned cpu, SmpCounts& c) {
    const ComponentId id = static_cast<ComponentId>(kSmpGuestId + cpu);
    const u16 vmid = static_cast<u16>(kSmpGuestVmid + cpu);
    const auto page = [cpu](unsigned i) { return kSmpGuestBase + (cpu * kSmpGuestPages + i) * 0x1'0000; };
    const auto ipa = [](unsigned i) { return guest_page(1 + i); };
    const u64 other = kSmpBase + cpu * kPage;
    const unsigned step = c.guest_step;
    c.guest_step = (step + 1) % 6;
    switch (step) {
      case 0: {
        Status st = mp.create_guest(id, vmid);
        if (st) {
          const auto* g = mp.guest(id);
          plat.set_vttbr(vmid, arch::make_vttbr(mp.host_config(), g->table.root_pa(), vmid));
          st = mp.topup_guest_memcache(id, 16);
        }
        return smp_must(c, st, "create_guest");
      }
      case 1:
        // Two pages the host filled (a pattern the scrubs must remove), donated: without FWB
        // the guest table's map cleans each through the fixmap, under host and guest locks.
        for (unsigned i = 0; i < 2; ++i) {
          if (!smp_fixmap_page(page(i), (u64{cpu} << 56) | (i + 1), other))
            return smp_count(c, fail(Error::eexist), "guest page fill");
          if (Status st = mp.host_donate_guest(page(i), 1, id, ipa(i)); !st) return smp_must(c, st, "host_donate_guest");
        }
        return smp_count(c, {}, "host_donate_guest");
      case 2: {
        // Shared, then made executable by the guest lock alone: an IC IVAU of memory outside
        // the linear range, while other CPUs hold the fixmap.
        if (Status st = mp.host_share_guest(page(2), 1, id, ipa(2), pgtable::kPermRW); !st) return smp_must(c, st, "host_share_guest");
        const Status st = mp.guest_relax_perms(id, ipa(2), pgtable::kPermRWX);
        return smp_must(c, st, "guest_relax_perms");
      }
      case 3:
        // Scrubbed through the fixmap (and cleaned: cache_op on the page this CPU holds).
        if (Status st = mp.host_force_reclaim(page(0)); !st) return smp_must(c, st, "host_force_reclaim");
        if (!smp_fixmap_page(page(0), 0, other)) return smp_count(c, fail(Error::eexist), "force-reclaimed page not zero");
        return smp_count(c, {}, "host_force_reclaim");
      case 4: {
        const Status st = mp.host_unshare_guest(id, ipa(2), 1);
        return smp_must(c, st, "host_unshare_guest");
      }
      default:
        if (Status st = mp.teardown_guest(id); !st) return smp_must(c, st, "teardown_guest");
        if (Status st = mp.reclaim_guest(id); !st) return smp_must(c, st, "reclaim_guest");
        if (!smp_fixmap_page(page(1), 0, other)) return smp_count(c, fail(Error::eexist), "reclaimed page not zero");
        ++c.guest_cycles;
        return smp_count(c, {}, "reclaim_guest");
    }
  }

  // ---- the shared guest: every CPU at once on one guest (g_smp.shared_*) ----

  static constexpr u64 sh_pa(unsigned i) { return kSmpSharedBase + i * 0x1'0000; }
  static constexpr u64 sh_ipa(unsigned i) { return kSmpSharedIpa + i * 0x1'0000; }
  /// Per B page (index from 0): whether its CPU left it shared, and its next exclusive step.
  /// Only that CPU writes them; CPU 0 reads them once every CPU is done (g_smp_done).
  static inline bool b_shared[kSmpSharedB];
  static inline unsigned b_step[kSmpSharedB];

  static void sh_fail(SmpCounts& c, const Status& st, const char* what) {
    if (st) return;
    if (c.other++ == 0) {
      c.first_other = what;
      c.first_error = st.error();
    }
  }
  /// A shared-side call, called again while it is EAGAIN (another CPU changed the entry
  /// between its read and its compare-and-swap: the guest would take the fault again).
  template <class F>
  static Status sh_retry(SmpCounts& c, F&& f) {
    for (unsigned t = 0;; ++t) {
      ++c.sh_ops;
      const Status st = f();
      if (st || st.error() != Error::eagain || t == 1000) return st;
      ++c.sh_eagain;
    }
  }
  /// A shared-side call on a B page, which its CPU may have unshared meanwhile: EPERM counted.
  static void sh_may(SmpCounts& c, const Status& st, const char* what) {
    if (!st && st.error() == Error::eperm) {
      ++c.sh_refused;
      return;
    }
    sh_fail(c, st, what);
  }

  /// CPU 0, before the CPUs are released: the guest, every page shared with it read-only.
  static bool smp_shared_setup(Line& l) {
    constexpr ComponentId id = kSmpSharedId;
    Status st = mp.create_guest(id, kSmpSharedVmid);
    if (st) {
      const auto* g = mp.guest(id);
      plat.set_vttbr(kSmpSharedVmid, arch::make_vttbr(mp.host_config(), g->table.root_pa(), kSmpSharedVmid));
    }
    for (unsigned i = 0; st && i < kSmpSharedRounds + kSmpSharedB; ++i) {
      st = mp.topup_guest_memcache(id, 8);
      if (st) st = mp.host_share_guest(sh_pa(i), 1, id, sh_ipa(i), pgtable::kPermR);
    }
    for (unsigned j = 0; j < kSmpSharedB; ++j) {
      b_shared[j] = true;
      b_step[j] = 0;
    }
    l.str("smp: shared guest ").dec(id).str(" vmid ").dec(kSmpSharedVmid).str(" pages ");
    l.dec(kSmpSharedRounds).str(" + ").dec(kSmpSharedB).str(" set up: ").str(st ? "ok" : name(st.error()));
    return static_cast<bool>(st);
  }

  /// Round `r` of one CPU on the shared guest (all CPUs run round r at once):
  ///  - A page r: four roles, one per CPU (all four on one CPU with -smp 1): relax to write,
  ///    relax to execute (each retried on EAGAIN until it is done, and done once in the whole
  ///    phase: a permission a lost update drops stays lost, for the final check to see), or
  ///    neither; then every role kSmpSharedAf times test-and-clear-young and mkyoung; every
  ///    call must succeed (EAGAIN retried). Then a barrier: the A page's calls meet only each
  ///    other, the exclusive side's wait for them;
  ///  - this CPU's B page (r % 2): its next exclusive step, write-protect, unshare, or top up
  ///    the memcache and share read-only again; each must succeed;
  ///  - the next CPU's B page (r % 2), which that CPU changes in this round: relax to execute
  ///    or write, mkyoung, test-and-clear-young, each ok or EPERM (unshared at that moment).
  static void smp_shared_round(unsigned cpu, unsigned cpus, unsigned r, SmpCounts& c) {
    constexpr ComponentId id = kSmpSharedId;
    using pgtable::kPermRW;
    using pgtable::kPermRX;
    const u64 a = sh_ipa(r);
    for (unsigned j = cpu; j < 4; j += cpus) {
      const unsigned role = (j + r) % 4;
      if (role == 0) sh_fail(c, sh_retry(c, [&] { return mp.guest_relax_perms(id, a, kPermRW); }), "relax A W");
      if (role == 1) sh_fail(c, sh_retry(c, [&] { return mp.guest_relax_perms(id, a, kPermRX); }), "relax A X");
      // Every role then ages the page and makes it young again, kSmpSharedAf times: each a
      // compare-and-swap of the same entry (AF) while the relaxes above swap in W and X.
      for (unsigned k = 0; k < kSmpSharedAf; ++k) {
        ++c.sh_ops;
        const Result<bool> y = mp.guest_test_clear_young(id, a, 1, true);
        if (!y) sh_fail(c, fail(y.error()), "test_clear_young A");
        sh_fail(c, sh_retry(c, [&] { return mp.guest_mkyoung(id, a); }), "mkyoung A");
      }
    }
    smp_barrier(cpus);  // the A page's round over: the exclusive side's turn
    const unsigned own = cpu * kSmpSharedBPerCpu + r % kSmpSharedBPerCpu;
    const u64 own_ipa = sh_ipa(kSmpSharedRounds + own);
    ++c.excl_ops;
    switch (b_step[own]++ % 3) {
      case 0: sh_fail(c, mp.guest_wrprotect(id, own_ipa, 1), "guest_wrprotect B"); break;
      case 1: {
        const Status st = mp.host_unshare_guest(id, own_ipa, 1);
        sh_fail(c, st, "host_unshare_guest B");
        if (st) b_shared[own] = false;
        break;
      }
      default: {
        Status st = mp.topup_guest_memcache(id, 8);
        sh_fail(c, st, "topup_guest_memcache B");
        if (!st) break;
        ++c.excl_ops;
        st = mp.host_share_guest(sh_pa(kSmpSharedRounds + own), 1, id, own_ipa, pgtable::kPermR);
        sh_fail(c, st, "host_share_guest B");
        if (st) b_shared[own] = true;
        break;
      }
    }
    const unsigned next = ((cpu + 1) % cpus) * kSmpSharedBPerCpu + r % kSmpSharedBPerCpu;
    const u64 b = sh_ipa(kSmpSharedRounds + next);
    const pgtable::Perm p = (r / 2) % 2 ? kPermRW : kPermRX;
    sh_may(c, sh_retry(c, [&] { return mp.guest_relax_perms(id, b, p); }), "relax B");
    sh_may(c, sh_retry(c, [&] { return mp.guest_mkyoung(id, b); }), "mkyoung B");
    ++c.sh_ops;
    const Result<bool> y = mp.guest_test_clear_young(id, b, 1, true);
    sh_may(c, y ? Status{} : fail(y.error()), "test_clear_young B");
  }

  /// CPU 0, once every CPU is done: every page's final entry as the rounds imply (A pages
  /// mapped to their page, shared-borrowed, read-write-execute; B pages as their CPU left
  /// them: shared and mapped to their page with read permission, or unmapped and the host's),
  /// the invariant checker with the guest live, then teardown and reclaim.
  static bool smp_shared_check(Line& l) {
    constexpr ComponentId id = kSmpSharedId;
    const auto* g = mp.guest(id);
    if (g == nullptr) {
      l.str("smp: shared guest: FAILED: no guest");
      return false;
    }
    unsigned a_ok = 0, b_ok = 0;
    const char* bad = nullptr;
    u64 bad_ipa = 0, bad_e = 0;
    for (unsigned i = 0; i < kSmpSharedRounds + kSmpSharedB; ++i) {
      const bool is_a = i < kSmpSharedRounds;
      const u64 ipa = sh_ipa(i), pa = sh_pa(i);
      const Result<pgtable::Leaf> lf = g->table.lookup(ipa);
      const u64 e = lf ? lf->entry : ~u64{0};
      const char* why = nullptr;
      if (!lf) {
        why = "lookup failed";
      } else if (!is_a && !b_shared[i - kSmpSharedRounds]) {
        if (arch::DescValid::get(e)) why = "unshared page still mapped";
        else if (mp.host_state(pa) != ownership::PageState::owned) why = "unshared page not the host's";
      } else if (!arch::DescValid::get(e)) {
        why = "not mapped";
      } else if (g->table.output_address(*lf) + (ipa - lf->base) != pa) {
        why = "maps the wrong page";
      } else if (mp.guest_state(id, ipa) != ownership::PageState::shared_borrowed) {
        why = "not shared-borrowed";
      } else {
        const arch::S2Leaf d(e);
        const bool x = arch::S2Xn::get(e) == static_cast<u64>(arch::S2XnKind::exec);
        if (!d.readable()) why = "read permission lost";
        else if (is_a && !d.writable()) why = "write permission lost";
        else if (is_a && !x) why = "execute permission lost";
      }
      if (why == nullptr) {
        ++(is_a ? a_ok : b_ok);
      } else if (bad == nullptr) {
        bad = why;
        bad_ipa = ipa;
        bad_e = e;
      }
    }
    typename MP::Violation v{};
    const bool inv = mp.check_invariants(scratch, &v);
    Status st = mp.teardown_guest(id);
    if (st) st = mp.reclaim_guest(id);
    Line p;
    p.str("smp: shared guest: A pages rwx ").dec(a_ok).str("/").dec(kSmpSharedRounds).str(", B pages as left ");
    p.dec(b_ok).str("/").dec(kSmpSharedB).str(", invariants ").str(inv ? "hold" : "BROKEN: ");
    if (!inv) p.str(v.what).str(" at pa ").hex(v.pa);
    p.str(", reclaim ").str(st ? "ok" : name(st.error()));
    println(p);
    const bool ok = bad == nullptr && inv && st;
    l.str("smp: shared guest final check ").str(ok ? "passed" : "FAILED");
    if (bad != nullptr) l.str(": first wrong: ").str(bad).str(" at ipa ").hex(bad_ipa).str(" entry ").hex(bad_e);
    return ok;
  }

  /// The invariant checker (it takes every lock) once the CPUs are done.
  static bool smp_check(Line& l) {
    typename MP::Violation v{};
    if (mp.check_invariants(scratch, &v)) {
      l.str("smp: invariants hold");
      return true;
    }
    l.str("smp: invariants BROKEN: ").str(v.what).str(" at pa ").hex(v.pa);
    return false;
  }

  static void fail_setup(const char* what, const Status& st) {
    Line l;
    l.str("setup ").str(kRun.name).str(": ").str(what).str(": ").str(st ? "ok" : name(st.error()));
    println(l);
    ++g_failed;
  }

  static void run(arch::CpuFeatures cpu, bool have_ttl) {
    cpu = run_cpu(cpu, kRun);  // less what the run turns off (scenario.hpp)
    typename Plat::Config pc;
    pc.pool_pa = pool_pa(V);
    pc.pool_size = kPoolSize;
    pc.counts = counts;
    pc.va_offset = 0;  // the pools are mapped at their physical addresses
    pc.linear_pa = kCarveout;
    pc.linear_size = kCarveoutEnd - kCarveout;
    pc.have_ttl = have_ttl;
    plat.init(pc);

    static const ownership::Region memory[] = {{kMemory, kMemorySize}};
    static const ownership::MmioRegion mmio[] = {{kUart, kUartSize, true}};
    const ownership::MachineDesc m{memory, mmio, ownership::Region{kCarveout, kCarveoutEnd - kCarveout}, kHypVaOffset};
    if (Status st = mp.init(plat, m, meta, cpu); !st) return fail_setup("MemProtect::init", st);

    // The hypervisor's own mappings at their physical addresses: text read-execute, read-only
    // data read-only, data/bss/stack and the table pools read-write, the UART as device memory.
    using pgtable::Prot;
    const u64 img = reinterpret_cast<u64>(__image_start), text_end = reinterpret_cast<u64>(__text_end);
    const u64 ro_end = reinterpret_cast<u64>(__rodata_end), img_end = reinterpret_cast<u64>(__image_end);
    // (The pools end with the 52-bit runs' pools and data pages, which they write through this map.)
    const u64 pools = pool_pa(0), pools_end = kPoolsEnd;
    const Prot rx{pgtable::kPermRX, arch::MemType::normal_wb, 0};
    const Prot ro{pgtable::kPermR, arch::MemType::normal_wb, 0};
    const Prot rw{pgtable::kPermRW, arch::MemType::normal_wb, 0};
    const Prot dev{pgtable::kPermRW, arch::MemType::device_ngnre, 0};
    if (Status st = mp.hyp_map_private(img, text_end - img, img, rx); !st) return fail_setup("map text", st);
    if (Status st = mp.hyp_map_private(text_end, ro_end - text_end, text_end, ro); !st) return fail_setup("map rodata", st);
    if (Status st = mp.hyp_map_private(ro_end, img_end - ro_end, ro_end, rw); !st) return fail_setup("map data", st);
    if (Status st = mp.hyp_map_private(pools, pools_end - pools, pools, rw); !st) return fail_setup("map pools", st);
    if (Status st = mp.hyp_map_private(kUart, kUartSize, kUart, dev); !st) return fail_setup("map uart", st);
    // The fixmap: map a page there once so the last-level table exists, then hand its entry
    // to the platform (which clears it).
    if (Status st = mp.hyp_map_private(kFixmapVa, kPage, kCarveout, rw); !st) return fail_setup("map fixmap", st);
    const auto& s1 = mp.hyp_config();
    u64* slot = pgtable::fixmap_slot<G>(plat, mp.hyp_table().root_pa(), s1.start_level, kFixmapVa, s1.oa);
    if (slot == nullptr) return fail_setup("fixmap slot", fail(Error::enoent));
    plat.set_fixmap(kFixmapVa, slot, s1.oa);
    mp.finalize();

    // Stage 1: the library's TCR_EL2 and MAIR_EL2, TTBR0_EL2 at the table's root.
    el2_mmu_switch(s1.tcr, s1.mair, arch::make_ttbr0_el2(mp.hyp_config(), mp.hyp_table().root_pa()), kSctlrEl2);

    // Stage 2: the host on VMID 0; stale entries of VMIDs used by the previous granule's run
    // are dropped (TLBI ALLE1IS).
    const auto& s2 = mp.host_config();
    host_vttbr = arch::make_vttbr(mp.host_config(), mp.host_table().root_pa(), 0);
    plat.set_vttbr(0, host_vttbr);
    PTGUARD_MSR("vtcr_el2", s2.vtcr);
    PTGUARD_MSR("vttbr_el2", host_vttbr);
    PTGUARD_MSR("hcr_el2", kHcrVm | kHcrRw | (s2.fwb ? kHcrFwb : 0));
    a64::isb();
    a64::tlbi_alle1is();
    a64::dsb_ish();
    a64::isb();

    Line l;
    l.str("run ").str(kRun.name).str(" tcr_el2 ").hex(s1.tcr).str(" mair_el2 ").hex(s1.mair);
    l.str(" vtcr_el2 ").hex(s2.vtcr).str(" hcr_el2 ").hex(PTGUARD_MRS("hcr_el2"));
    println(l);

    for (unsigned i = 0; i < kSteps; ++i) {
      const Step& s = kScenario[i];
      const Outcome o = s.who == Actor::hyp ? run_hyp(s) : run_el1(s);
      Line c;
      format_check(c, kRun.name, i, s, o);
      println(c);
      ++g_checks;
      if (!meets(s, o)) ++g_failed;
    }
    typename MP::Violation v{};
    Line inv;
    inv.str("invariants ").str(kRun.name).str(": ");
    if (mp.check_invariants(scratch, &v)) {
      inv.str("hold");
    } else {
      inv.str("BROKEN: ").str(v.what).str(" at pa ").hex(v.pa);
      ++g_failed;
    }
    println(inv);
    unshare_by_range();
    print_tlbi_counts(kRun.name, plat.n);

    // The SMP phase runs on this machine if no later run replaces it: its stubs, and the
    // registers a secondary CPU needs to use the same tables.
    g_smp = SmpMachine{&smp_stub, &smp_check, &smp_shared_setup, &smp_shared_round, &smp_shared_check};
    const u64 ttbr0 = arch::make_ttbr0_el2(mp.hyp_config(), mp.hyp_table().root_pa());
    el2_smp_boot = SmpBoot{s1.tcr, s1.mair, ttbr0, kSctlrEl2, s2.vtcr, host_vttbr};
  }
};

template <unsigned V>
void run_variant(const arch::CpuFeatures& cpu, bool have_ttl) {
  constexpr Variant r = kVariants[V];
  if (!cpu.supports(r.granule, 1) || !cpu.supports(r.granule, 2)) {
    Line s;
    s.str("run ").str(r.name).str(" not supported: skipped");
    println(s);
    return;
  }
  Hyp<V>::run(cpu, have_ttl);
}
template <unsigned... V>
void run_variants(const arch::CpuFeatures& cpu, bool have_ttl, std::integer_sequence<unsigned, V...>) {
  (run_variant<V>(cpu, have_ttl), ...);
}

// ---- the 52-bit runs (scenario.hpp, kVariants52 and steps52) -----------------------------------
// After the granule runs, on the last run's EL2 stage-1 (which maps the runs' pools and kData52):
// per granule, a stage-2 of 52-bit IPAs built by the engine on a platform of its own, entered
// with VMID kVmid52 for each step, then the host's stage-2 registers back.
u64 no_hvc(void*, ComponentId, const CallRegs&) { return to_ret(Error::einval); }

template <unsigned V>
struct Run52 {
  static constexpr Variant52 kRun = kVariants52[V];
  static constexpr Granule G = kRun.granule;
  static constexpr u64 kPage = arch::page_size(G);
  using Plat = CountingPlatform<G>;
  static constexpr u64 kCode = kRun.ipa;  ///< the EL1 code page's IPA
  static constexpr Steps52 kSteps = steps52(kRun);

  static inline Plat plat;
  static inline u32 counts[pool52_size(G) / kPage];
  static inline Table52<G, Plat> table;
  static inline pgtable::Memcache mc;

  /// One EL1 step on the 52-bit stage-2 (its VTCR_EL2 and VTTBR_EL2 are loaded): as
  /// Hyp::run_el1 with stage 1 off, so the stub's address and the step's are IPAs above 2^48.
  static Outcome run_el1(const Step& s) {
    g_run = Run{s.who, s.op, 0, s.addr, 0, Outcome{}, nullptr, &no_hvc, nullptr};
    El1Frame& f = g_frame;
    f = El1Frame{};
    f.x[0] = s.addr;
    f.x[1] = s.value;
    f.elr = kCode + (s.op == Op::read ? kStubRead : s.op == Op::write ? kStubWrite : kStubExec);
    f.spsr = kSpsrEl1h;
    PTGUARD_MSR("sctlr_el1", kSctlrEl1MmuOff);
    PTGUARD_MSR("vbar_el1", kCode);
    a64::isb();
    el1_run(&f);
    return g_run.out;
  }

  static void fail_setup(const char* what, const Status& st) {
    Line l;
    l.str("setup ").str(kRun.name).str(": ").str(what).str(": ").str(st ? "ok" : name(st.error()));
    println(l);
    ++g_failed;
  }

  static void run(const arch::CpuFeatures& cpu, bool have_ttl) {
    if (!supports_run52(kRun, cpu)) {
      Line s;
      s.str("run ").str(kRun.name).str(" not supported: skipped");
      println(s);
      return;
    }
    typename Plat::Config pc;
    pc.pool_pa = pool52_pa(G);
    pc.pool_size = pool52_size(G);
    pc.counts = counts;
    pc.va_offset = 0;  // mapped at its physical address, as the other pools
    pc.linear_pa = kCarveout;
    pc.linear_size = kCarveoutEnd - kCarveout;
    pc.have_ttl = have_ttl;
    plat.init(pc);
    const Result<arch::Stage2Config> cfg = config52(kRun, cpu);
    if (!cfg) return fail_setup("make_stage2_config", fail(cfg.error()));
    if (Status st = build_vm52<G>(plat, kRun, *cfg, table, mc); !st) return fail_setup("build_vm52", st);
    // VTTBR_EL2 with the 52-bit BADDR layout (BADDR[51:48] in bits [5:2]) that PS = 52 selects.
    const u64 vttbr = arch::make_vttbr(*cfg, table.root_pa(), kVmid52);
    plat.set_vttbr(kVmid52, vttbr);
    *reinterpret_cast<volatile u64*>(kData52) = kValue52;
    *reinterpret_cast<volatile u64*>(kData52 + kSlot) = 0;

    // The host's stage-2 registers, back after the run. HCR_EL2.FWB as this configuration says
    // (the stage-2 MemAttr encodings depend on it): the last granule run may have left it 0.
    const u64 host_vtcr = PTGUARD_MRS("vtcr_el2"), host_vttbr = PTGUARD_MRS("vttbr_el2");
    const u64 host_hcr = PTGUARD_MRS("hcr_el2");
    a64::dsb_ish();  // the table's and the data's stores before the first walk (B2.3)
    PTGUARD_MSR("vtcr_el2", cfg->vtcr);
    PTGUARD_MSR("vttbr_el2", vttbr);
    PTGUARD_MSR("hcr_el2", kHcrVm | kHcrRw | (cfg->fwb ? kHcrFwb : 0));
    a64::isb();
    Line l;
    l.str("run ").str(kRun.name).str(" vtcr_el2 ").hex(cfg->vtcr).str(" vttbr_el2 ").hex(vttbr);
    l.str(" hcr_el2 ").hex(PTGUARD_MRS("hcr_el2")).str(" start level ");
    if (cfg->geometry.start_level < 0) l.str("-");
    l.dec(static_cast<u64>(cfg->geometry.start_level < 0 ? -cfg->geometry.start_level : cfg->geometry.start_level));
    println(l);

    for (unsigned i = 0; i < kSteps52; ++i) {
      const Step& s = kSteps.s[i];
      const Outcome o = run_el1(s);
      Line c;
      format_check(c, kRun.name, i, s, o);
      println(c);
      ++g_checks;
      if (!meets(s, o)) ++g_failed;
    }

    // A range invalidation on the 52-bit table: unmap [ipa + kSlot, ipa + 3 * kSlot), which
    // holds the read-only and the read-write page (both read by the steps above, so the TLB may
    // hold them): with FEAT_TLBIRANGE one TLBI RIPAS2E1IS over the run between them (with
    // DS = 1 for 4K and 16K: BaseADDR in 64 KiB units; the run starts at a 64 KiB boundary).
    // Both pages must then fault. Judged here, not compared with the simulator (and, as in
    // unshare_by_range, QEMU's MMU would not notice a wrongly scaled range: the stage-2 TLBI
    // VMALLE1IS that follows drops QEMU's combined entries anyway).
    plat.n = TlbiCounts{};
    if (Status st = table.unmap(kCode + kSlot, 2 * kSlot, mc); !st) return fail_setup("unmap", st);
    for (const u64 ipa : {kCode + kSlot, kCode + 2 * kSlot}) {
      const Step s = read(Actor::vm52, ipa, kTranslation);
      const Outcome o = run_el1(s);
      Line c;
      c.str("unmapped ").str(kRun.name).str(" ipa ").hex(ipa).str(meets(s, o) ? " faults" : " STILL MAPPED");
      println(c);
      ++g_checks;
      if (!meets(s, o)) ++g_failed;
    }
    print_tlbi_counts(kRun.name, plat.n);

    // VMID kVmid52 is done: TLBI VMALLS12E1IS for it (flush_tlb, while VTTBR_EL2 still holds
    // it), so no entry of this table (nor of this VTCR_EL2 and FWB, which a TLB may cache)
    // outlives it; the next run reuses the VMID.
    if (Status st = table.flush_tlb(); !st) return fail_setup("flush_tlb", st);
    PTGUARD_MSR("vtcr_el2", host_vtcr);
    PTGUARD_MSR("vttbr_el2", host_vttbr);
    PTGUARD_MSR("hcr_el2", host_hcr);
    a64::isb();
    table.destroy();
    mc.drain(plat);
  }
};
template <unsigned... V>
void run52_all(const arch::CpuFeatures& cpu, bool have_ttl, std::integer_sequence<unsigned, V...>) {
  (Run52<V>::run(cpu, have_ttl), ...);
}

/// The SMP phase (see the top of the file); whether it passed. CPU 0, after the scenario.
bool smp_phase() {
  namespace psci = hyp::psci;
  if (g_smp.stub == nullptr) {
    puts("smp: FAILED: no run was set up\n");
    return false;
  }
  // The secondaries read el2_smp_boot with their data cache off.
  a64::dc_cvac_range(reinterpret_cast<u64>(&el2_smp_boot), sizeof el2_smp_boot);
  // CPU_ON (PSCI, Arm DEN 0022, 5.1.4: x1 the target's MPIDR, x2 its entry point, x3 the
  // context id it gets in x0) over SMC, QEMU's conduit with virtualization=on. QEMU's virt
  // board gives CPU i the affinity Aff0 = i (up to 8 CPUs); INVALID_PARAMETERS means the
  // board has no such CPU (-smp 1): the phase runs on the CPUs it has.
  unsigned cpus = 1;
  for (; cpus < kSmpCpus; ++cpus) {
    const u64 entry = reinterpret_cast<u64>(&el2_secondary_entry);
    const ptguard::i64 r = static_cast<ptguard::i64>(hyp_smc(psci::kCpuOn64, cpus, entry, cpus));
    if (r == psci::kInvalidParams) break;
    if (r != psci::kSuccess) {
      Line l;
      l.str("smp: FAILED: PSCI CPU_ON of cpu ").dec(cpus).str(" returned ").hex(static_cast<u64>(r));
      println(l);
      return false;
    }
  }
  Line l;
  l.str("smp: cpus ").dec(cpus).str(" rounds ").dec(kSmpRounds).str(" pages ").dec(kSmpPages);
  println(l);
  if (!wait_for(&g_smp_arrived, cpus - 1, 10)) {
    Line f;
    f.str("smp: FAILED: ").dec(__atomic_load_n(&g_smp_arrived, __ATOMIC_ACQUIRE)).str(" of ").dec(cpus - 1);
    println(f.str(" secondary CPUs arrived in 10 s"));
    return false;
  }
  __atomic_store_n(&g_smp_cpus, cpus, __ATOMIC_RELAXED);  // published by g_smp_go's release
  {
    Line sg;
    const bool set_up = g_smp.shared_setup(sg);
    println(sg);
    if (!set_up) return false;
  }
  const u64 t0 = now_ticks();
  __atomic_store_n(&g_smp_go, 1, __ATOMIC_RELEASE);
  smp_run(0);
  if (!wait_for(&g_smp_done, cpus - 1, 60)) {
    Line f;
    f.str("smp: FAILED: ").dec(__atomic_load_n(&g_smp_done, __ATOMIC_ACQUIRE)).str(" of ").dec(cpus - 1);
    println(f.str(" secondary CPUs finished in 60 s"));
    return false;
  }
  const u64 ms = (now_ticks() - t0) * 1000 / PTGUARD_MRS("cntfrq_el0");
  bool ok = true;
  for (unsigned i = 0; i < cpus; ++i) {
    const SmpCounts& c = g_smp_counts[i];
    Line p;
    p.str("smp: cpu ").dec(i).str(" ops ").dec(c.ops).str(" ok ").dec(c.ok).str(" eperm ").dec(c.eperm);
    p.str(" ebusy ").dec(c.ebusy).str(" eagain ").dec(c.eagain).str(" enoent ").dec(c.enoent);
    p.str(" accesses ").dec(c.accesses).str(" guests ").dec(c.guest_cycles).str(" fixmap ").dec(c.fixmap_holds);
    p.str(" cache_ops ").dec(c.cache_ops).str(" other ").dec(c.other);
    if (c.other != 0) p.str(" (first: ").str(c.first_other).str(" ").str(name(c.first_error)).str(")");
    println(p);
    Line q;
    q.str("smp: guest cpu ").dec(i).str(" shared ").dec(c.sh_ops).str(" eagain ").dec(c.sh_eagain);
    q.str(" refused ").dec(c.sh_refused).str(" exclusive ").dec(c.excl_ops);
    println(q);
    if (c.other != 0 || c.ops < kSmpRounds || c.guest_cycles == 0 || c.fixmap_holds == 0) ok = false;
    if (c.sh_ops == 0 || c.excl_ops == 0) ok = false;
  }
  Line sc;
  if (!g_smp.shared_check(sc)) ok = false;
  println(sc);
  Line inv;
  if (!g_smp.check(inv)) ok = false;
  println(inv);
  Line t;
  t.str("smp: ").str(ok ? "passed" : "FAILED").str(" in ").dec(ms).str(" ms (shared guest ").dec(g_smp_shared_ms).str(" ms)");
  println(t);
  return ok;
}

}  // namespace

extern "C" void el2_main() {
  puts("ptguard EL2 mini-hypervisor\n");
  const u64 mmfr0 = PTGUARD_MRS("id_aa64mmfr0_el1"), mmfr1 = PTGUARD_MRS("id_aa64mmfr1_el1");
  const u64 mmfr2 = PTGUARD_MRS("id_aa64mmfr2_el1"), ctr = PTGUARD_MRS("ctr_el0");
  const u64 isar0 = PTGUARD_MRS("id_aa64isar0_el1");  // TLB, bits 59:56: FEAT_TLBIRANGE
  Line l;
  l.str("cpu mmfr0 ").hex(mmfr0).str(" mmfr1 ").hex(mmfr1).str(" mmfr2 ").hex(mmfr2).str(" ctr ").hex(ctr);
  l.str(" isar0 ").hex(isar0);
  println(l);
  const arch::CpuFeatures cpu = arch::CpuFeatures::from_id_regs(mmfr0, mmfr1, mmfr2, ctr, isar0);
  const bool have_ttl = arch::Field<51, 48>::get(mmfr2) != 0;  // ID_AA64MMFR2_EL1.TTL
  run_variants(cpu, have_ttl, std::make_integer_sequence<unsigned, kNumVariants>{});
  run52_all(cpu, have_ttl, std::make_integer_sequence<unsigned, kNumVariants52>{});
  Line s;
  s.str("summary ").dec(g_checks).str(" checks, ").dec(g_failed).str(" failed");
  println(s);
  const bool smp_ok = smp_phase();
  semihost_exit(g_failed == 0 && smp_ok ? 0 : 1);
}
