// ptguard's hypervisor: boots an unmodified Linux as the host at EL1 behind a lazily filled
// stage 2, on QEMU's virt board (`-M virt,virtualization=on,gic-version=3 -cpu max`).
//
// Boot (primary CPU, MMU off): read the host's device tree (its memory, MMIO, CPUs, the
// /reserved-memory no-map node that must cover the carve-out, the PSCI conduit), set up the
// ownership layer over El2Platform (the host's stage 2 starts empty but for the carve-out's
// owner annotation), map the hypervisor's own image at EL2, print what it found on the UART,
// then set the CPU's EL2 registers (host_regs.hpp) and ERET to the kernel Image at EL1h with
// x0 = the device tree. From then on the UART is the host's and the hypervisor never touches
// it; its own report goes out through semihosting at SYSTEM_OFF / SYSTEM_RESET.
//
// Traps from the host: stage-2 aborts go to MemProtect::host_handle_fault, which takes the
// library's own host lock (the largest block its region allows; an address the host does not own gets a
// synchronous external abort injected, inject.hpp); SMCs and HVCs go through the PSCI relay
// (psci.hpp), and every other function ID gets SMCCC NOT_SUPPORTED. Secondary CPUs exist only
// through the relay's CPU_ON, which enters them at hyp_cpu_entry so that each passes through
// the same EL2 set-up before it reaches the host's entry point.
//
// Built with -DPTGUARD_HYP_UNPROTECT_CANARY (tests/hyp/linux_host.sh's negative run only),
// the carve-out the library protects stops one page short of the one the device tree reserves:
// the canary page the host's probe reads becomes ordinary host memory. That build exists to
// show that the test's carve-out check can fail; nothing else uses it.
#include "layout.h"
#include "ptguard/arch/aarch64/insn.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/hyp/fdt.hpp"
#include "ptguard/hyp/host_regs.hpp"
#include "ptguard/hyp/inject.hpp"
#include "ptguard/hyp/line.hpp"
#include "ptguard/hyp/machine_fdt.hpp"
#include "ptguard/hyp/psci.hpp"
#include "ptguard/ownership/mem_protect.hpp"
#include "ptguard/pgtable/el2_platform.hpp"

using namespace ptguard;
using namespace ptguard::hyp;
namespace a64 = ptguard::arch::aarch64;
using arch::Granule;

struct PerCpu;

/// What a CPU entering at hyp_cpu_entry is given (its x0): read with the MMU, and so the data
/// cache, off, so each is a whole cache-line-aligned block of its own that the writer cleans to
/// the point of coherency. CPU_ON and CPU_SUSPEND have one each: a racing CPU_ON for a CPU
/// that is suspending must not change where the suspend resumes. boot.S reads stack_top at
/// offset 0.
struct alignas(64) BootArgs {
  u64 stack_top = 0;
  PerCpu* cpu = nullptr;
  u64 host_entry = 0;  ///< where the CPU enters the host
  u64 host_ctx = 0;    ///< the host's x0 there
};
static_assert(__builtin_offsetof(BootArgs, stack_top) == 0 && sizeof(BootArgs) == 64);

// The per-CPU data.
struct PerCpu {
  BootArgs on_args;       ///< CPU_ON's
  BootArgs suspend_args;  ///< CPU_SUSPEND's (written by this CPU only)
  u64 stack_top = 0;
  u64 index = 0;
  u64 mpidr = 0;          ///< from the device tree: what CPU_ON is forwarded with
  u32 boot_state = 0;     ///< kCpuOff / kCpuPending / kCpuOn (atomic)
  u32 pad = 0;
  // Counters, written by this CPU only.
  u64 faults = 0;          ///< stage-2 aborts that host_handle_fault mapped
  u64 blocks = 0;          ///< of those, mapped with a block
  u64 pages = 0;           ///< of those, mapped with a page
  u64 retried = 0;         ///< EAGAIN: another CPU mapped it first
  u64 aborts = 0;          ///< synchronous external aborts injected (memory the host does not own)
  u64 unhandled = 0;       ///< aborts that were neither mapped nor refused by the rules
  u64 psci = 0;            ///< PSCI calls relayed or answered
  u64 not_supported = 0;   ///< SMC/HVC answered NOT_SUPPORTED
  u64 undefs = 0;          ///< other traps, answered with an Undefined Instruction exception
};

extern "C" {
[[noreturn]] void hyp_enter_host(u64 entry, u64 arg0, u64 spsr, u64 stack_top);
u64 hyp_smc(u64 x0, u64 x1, u64 x2, u64 x3);
void el2_mmu_switch(u64 tcr, u64 mair, u64 ttbr0, u64 sctlr);
void semihost_write0(const char* s);
[[noreturn]] void semihost_exit(u64 status);
void hyp_cpu_entry();
[[noreturn]] void hyp_park();
extern char __image_start[], __text_end[], __rodata_end[], __image_end[];
}

namespace {

constexpr Granule G = Granule::k4K;
constexpr u64 kPage = arch::page_size(G);
using Plat = pgtable::El2Platform<G>;
using MP = ownership::MemProtect<G, Plat, 1>;

constexpr unsigned kMaxCpus = HostMachine::kMaxCpus;
constexpr u64 kStackSize = 16 * 1024;
constexpr u64 kMaxMemory = u64{3} << 30;  ///< the per-page array covers this much RAM
constexpr u64 kPoolSize = u64{4} << 20;   ///< table pages: host stage 2 and EL2 stage 1
constexpr u64 kCanaryPa = HYP_CARVEOUT_BASE + HYP_CARVEOUT_SIZE - kPage;
constexpr u64 kCanary = 0x5054'4755'4152'4421ull;  // "PTGUARD!"
/// The hypervisor's linear map: physical address pa at EL2 VA pa + kHypVaOffset (the library
/// maps the carve-out there read-write at set-up, and what the host shares or donates later).
/// The image itself runs at VA == PA with its own permissions (text read-execute, read-only
/// data, data), so turning the MMU on needs no jump.
constexpr u64 kHypVaOffset = u64{0x1000} << 32;
/// An EL2 VA for the fixmap, away from the identity map and the linear map.
constexpr u64 kFixmapVa = u64{0x7f00} << 32;

constexpr u32 kCpuOff = 0, kCpuPending = 1, kCpuOn = 2;

// ---- state ----------------------------------------------------------------------------------
alignas(16) u8 g_stacks[kMaxCpus][kStackSize];
PerCpu g_cpu[kMaxCpus];
HostMachine g_hm;
Plat g_plat;
MP g_mp;
alignas(4096) u8 g_pool[kPoolSize];
u32 g_pool_counts[kPoolSize / kPage];
ownership::PageMeta g_meta[kMaxMemory / kPage];
u32 g_scratch[kMaxMemory / kPage];
InjectFeatures g_inject{};
HostCpu g_hostcpu{};
u64 g_s1_tcr = 0, g_s1_mair = 0, g_ttbr0 = 0, g_vtcr = 0, g_vttbr = 0;
bool g_fwb = false;
bool g_uart_ok = true;  ///< false once the host runs: the UART is its
/// A number chosen at boot and printed on the UART before the host runs, then on every line of
/// the report. The host can write to the semihosting console too (QEMU allows HLT #0xF000 at
/// EL1, and EL2 cannot trap it) but cannot know this number (it is in the carve-out, and the
/// UART's past output is gone), so a reader accepts only report lines that carry it.
u64 g_report_key = 0;

// ---- output: the UART before the host runs, semihosting after --------------------------------
constexpr u64 kUart = 0x0900'0000;  // PL011 on QEMU virt; used only before the device tree is read
void uart_putc(char c) {
  volatile u32* const uart = reinterpret_cast<volatile u32*>(kUart);
  while (uart[0x18 / 4] & (1u << 5)) {  // UARTFR.TXFF
  }
  uart[0] = static_cast<u8>(c);
}
void say(const Line& l) {
  if (g_uart_ok) {
    for (const char* s = l.buf; *s; ++s) uart_putc(*s);
    uart_putc('\n');
  } else {
    Line t;
    t.str("[").hex(g_report_key).str("] ").str(l.buf).str("\n");
    semihost_write0(t.buf);
  }
}
[[noreturn]] void die(const Line& l) {
  Line t;
  t.str("ptguard-hyp: FATAL: ").str(l.buf);
  say(t);
  semihost_exit(3);
}
[[noreturn]] void die(const char* what, Error e) {
  Line l;
  l.str(what).str(": ").str(name(e));
  die(l);
}

PerCpu* this_cpu() { return reinterpret_cast<PerCpu*>(PTGUARD_MRS("tpidr_el2")); }

/// Cleans and invalidates [p, p + n) to the point of coherency, line by line (CTR_EL0.DminLine
/// [19:16]: log2 of the smallest data cache line in words; D7.5), then DSB ISH: what a CPU with
/// its MMU off (non-cacheable accesses) reads must be in memory, not only in a cache.
void clean_to_poc(const void* p, u64 n) {
  const u64 line = u64{4} << arch::Field<19, 16>::get(PTGUARD_MRS("ctr_el0"));
  const u64 a = reinterpret_cast<u64>(p);
  for (u64 x = a & ~(line - 1); x < a + n; x += line) asm volatile("dc civac, %0" ::"r"(x) : "memory");
  a64::dsb_ish();
}

// ---- per-CPU EL2 set-up: the same on every CPU, primary and secondaries --------------------
void cpu_setup(PerCpu* c) {
  PTGUARD_MSR("tpidr_el2", reinterpret_cast<u64>(c));
  // The hypervisor's own stage 1 (identity map of its image, built by the library).
  constexpr u64 kSctlrEl2 = (u64{1} << 29) | (u64{1} << 28) | (u64{1} << 23) | (u64{1} << 22) |
                            (u64{1} << 18) | (u64{1} << 16) | (u64{1} << 11) | (u64{1} << 5) |
                            (u64{1} << 4) | (u64{1} << 12) | (u64{1} << 3) | (u64{1} << 2) | 1;
  el2_mmu_switch(g_s1_tcr, g_s1_mair, g_ttbr0, kSctlrEl2);
  // The host's stage 2 and the registers of host_regs.hpp.
  PTGUARD_MSR("vtcr_el2", g_vtcr);
  PTGUARD_MSR("vttbr_el2", g_vttbr);
  PTGUARD_MSR("cptr_el2", host_cptr_el2(g_hostcpu));
  PTGUARD_MSR("mdcr_el2", host_mdcr_el2(g_hostcpu));
  PTGUARD_MSR("hstr_el2", kHostHstrEl2);
  PTGUARD_MSR("cnthctl_el2", kHostCnthctlEl2);
  PTGUARD_MSR("cntvoff_el2", kHostCntvoffEl2);
  PTGUARD_MSR("cnthp_ctl_el2", 0);  // the EL2 timer stays off
  if (g_hostcpu.gic_sysregs()) {
    PTGUARD_MSR("S3_4_C12_C9_5", kHostIccSreEl2);  // ICC_SRE_EL2
    PTGUARD_MSR("S3_4_C12_C11_0", 0);              // ICH_HCR_EL2: no virtual CPU interface
  }
  if (g_hostcpu.fgt()) {
    // FEAT_FGT: nothing trapped, except that the "n" bits of the SME registers must be 1 for
    // EL1 to reach them (HFGRTR/HFGWTR_EL2 nSMPRI_EL1 [54], nTPIDR2_EL0 [55]).
    PTGUARD_MSR("S3_4_C1_C1_4", host_hfgxtr_el2(g_hostcpu));  // HFGRTR_EL2
    PTGUARD_MSR("S3_4_C1_C1_5", host_hfgxtr_el2(g_hostcpu));  // HFGWTR_EL2
    PTGUARD_MSR("S3_4_C1_C1_6", 0);                           // HFGITR_EL2
    PTGUARD_MSR("S3_4_C3_C1_4", 0);                           // HDFGRTR_EL2
    PTGUARD_MSR("S3_4_C3_C1_5", 0);                           // HDFGWTR_EL2
  }
  if (g_hostcpu.hcx()) PTGUARD_MSR("S3_4_C1_C2_2", kHostHcrxEl2);  // HCRX_EL2
  if (g_hostcpu.spe()) PTGUARD_MSR("S3_4_C9_C9_0", 0);  // PMSCR_EL2: no profiling of EL2
  if (g_hostcpu.trf()) PTGUARD_MSR("S3_4_C1_C2_1", 0);  // TRFCR_EL2: no tracing of EL2
  PTGUARD_MSR("vpidr_el2", PTGUARD_MRS("midr_el1"));
  PTGUARD_MSR("vmpidr_el2", PTGUARD_MRS("mpidr_el1"));
  PTGUARD_MSR("sctlr_el1", kHostSctlrEl1Reset);
  a64::isb();
  if (g_hostcpu.sve()) PTGUARD_MSR("S3_4_C1_C2_0", kHostZcrEl2);  // ZCR_EL2 (after CPTR_EL2.TZ = 0)
  if (g_hostcpu.sme()) PTGUARD_MSR("S3_4_C1_C2_6", kHostSmcrEl2);  // SMCR_EL2
  PTGUARD_MSR("hcr_el2", host_hcr_el2(g_hostcpu, g_fwb));
  a64::isb();
  // Nothing this CPU cached for EL1&0 or EL2 before (a previous life, the firmware) survives.
  asm volatile("tlbi alle1\n dsb nsh\n isb" ::: "memory");
}

[[noreturn]] void enter_host(PerCpu* c, u64 entry, u64 arg) {
  hyp_enter_host(entry, arg, kHostEntrySpsr, c->stack_top);
}

// ---- the host's stage-2 aborts ------------------------------------------------------------
void deliver(const InjectedAbort& a) {
  PTGUARD_MSR("esr_el1", a.esr_el1);
  PTGUARD_MSR("far_el1", a.far_el1);
  PTGUARD_MSR("elr_el1", a.elr_el1);
  PTGUARD_MSR("spsr_el1", a.spsr_el1);
  PTGUARD_MSR("elr_el2", a.elr_el2);
  PTGUARD_MSR("spsr_el2", a.spsr_el2);
}
void inject_abort(u64 esr) {
  deliver(make_sea(esr, PTGUARD_MRS("far_el2"), PTGUARD_MRS("elr_el2"), PTGUARD_MRS("spsr_el2"),
                   PTGUARD_MRS("sctlr_el1"), PTGUARD_MRS("vbar_el1"), g_inject));
}

void host_abort(PerCpu* c, u64 esr) {
  const u64 fsc = IssFsc::get(esr);
  // DFSC/IFSC 0b0001LL: translation fault at level LL; 0b101011: level -1 (FEAT_LPA2). These
  // are the faults of an empty stage-2 entry: HPFAR_EL2.FIPA [43:4] holds IPA[51:12].
  const bool translation = (fsc & 0x3c) == 0x04 || fsc == 0x2b;
  // Permission faults are the rules working (the host wrote a page it may only read), and
  // address-size faults (0b0000LL, 0b101001 at level -1) an IPA beyond the host's IPA space:
  // both refused. Anything else (an access-flag fault: the library sets AF in every entry it
  // writes) is unexpected.
  const bool refused = (fsc & 0x3c) == 0x0c || (fsc & 0x3c) == 0x00 || fsc == 0x29;
  if (fsc == 0x30) {
    // TLB conflict abort (D8.16): this CPU's TLB holds overlapping entries. Drop its stage-1
    // and stage-2 entries for the host and retry.
    asm volatile("tlbi vmalls12e1\n dsb nsh\n isb" ::: "memory");
    ++c->retried;
    return;
  }
  if (translation) {
    // HPFAR_EL2.FIPA gives the faulting page; FAR_EL2's low bits may be UNKNOWN (FnV) or
    // belong to another address (a stage-1 walk's), and the handler needs only the page.
    const u64 ipa = arch::Field<43, 4>::get(PTGUARD_MRS("hpfar_el2")) << 12;
    // The library takes its host lock (every CPU faults into the host's stage 2) and says
    // which level it mapped while it still holds it.
    int level = arch::kLastLevel;
    const Status st = g_mp.host_handle_fault(ipa, &level);
    if (st) {
      ++c->faults;
      ++(level < arch::kLastLevel ? c->blocks : c->pages);
      return;  // ERET retries the access
    }
    if (st.error() == Error::eagain) {
      ++c->retried;  // another CPU mapped it meanwhile
      return;
    }
    // EPERM: a page the host does not own (the carve-out, memory given away); EINVAL: no
    // memory or MMIO there. Anything else (ENOMEM) is the hypervisor failing the host.
    if (st.error() != Error::eperm && st.error() != Error::einval) ++c->unhandled;
  } else if (!refused) {
    ++c->unhandled;
  }
  ++c->aborts;
  inject_abort(esr);
}

// ---- SMC / HVC: the PSCI relay ------------------------------------------------------------
void report(const char* why);

i64 psci_cpu_on(u64 fid, u64 mpidr, u64 entry, u64 ctx) {
  const int idx = g_hm.cpu_index(mpidr);
  if (idx < 0) return psci::kInvalidParams;
  PerCpu* t = &g_cpu[idx];
  u32 expected = kCpuOff;
  if (!__atomic_compare_exchange_n(&t->boot_state, &expected, kCpuPending, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    return expected == kCpuOn ? psci::kAlreadyOn : psci::kOnPending;
  t->on_args.host_entry = entry;
  t->on_args.host_ctx = ctx;
  clean_to_poc(&t->on_args, sizeof t->on_args);
  // The firmware gets the device tree's MPIDR of the CPU whose slot was claimed (not the
  // host's register, whose other bits a firmware might read differently), and the
  // hypervisor's entry.
  const i64 r = static_cast<i64>(hyp_smc(fid, t->mpidr, reinterpret_cast<u64>(&hyp_cpu_entry),
                                         reinterpret_cast<u64>(&t->on_args)));
  if (r != psci::kSuccess) {
    // Release only the claim made here: a refused CPU_OFF may have set the slot ON meanwhile.
    u32 pending = kCpuPending;
    __atomic_compare_exchange_n(&t->boot_state, &pending, kCpuOff, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  }
  return r;
}

void host_call(PerCpu* c, u64* x, bool smc) {
  const psci::Action act = psci::classify(x[0], smc, g_hm.psci_smc);
  if (act == psci::Action::not_supported) {
    ++c->not_supported;
    x[0] = static_cast<u64>(psci::kSmcccNotSupported);
    return;
  }
  ++c->psci;
  const u64 fid = x[0];
  const u64 a1 = psci::arg(fid, x[1]), a2 = psci::arg(fid, x[2]), a3 = psci::arg(fid, x[3]);
  switch (act) {
    case psci::Action::forward: {
      // A CPU going off may be started again by CPU_ON: mark it off before it goes. If CPU_OFF
      // returns at all, the firmware refused it (DENIED) and this CPU still runs.
      const bool off = fid == psci::kCpuOff;
      if (off) __atomic_store_n(&c->boot_state, kCpuOff, __ATOMIC_RELEASE);
      x[0] = hyp_smc(fid, a1, a2, a3);
      if (off) __atomic_store_n(&c->boot_state, kCpuOn, __ATOMIC_RELEASE);
      return;
    }
    case psci::Action::cpu_on:
      x[0] = static_cast<u64>(psci_cpu_on(fid, a1, a2, a3));
      return;
    case psci::Action::cpu_suspend:
      // Always the hypervisor's entry: only the firmware knows whether power_state powers the
      // CPU down (psci.hpp). A standby state simply returns here.
      c->suspend_args.host_entry = a2;
      c->suspend_args.host_ctx = a3;
      clean_to_poc(&c->suspend_args, sizeof c->suspend_args);
      x[0] = hyp_smc(fid, a1, reinterpret_cast<u64>(&hyp_cpu_entry), reinterpret_cast<u64>(&c->suspend_args));
      return;
    case psci::Action::system_off:
    case psci::Action::system_reset:
      report(act == psci::Action::system_off ? "SYSTEM_OFF" : "SYSTEM_RESET");
      x[0] = hyp_smc(fid, 0, 0, 0);
      return;
    case psci::Action::features:
      x[0] = psci::features(a1) == psci::FeaturesAnswer::ask_firmware ? hyp_smc(fid, a1, 0, 0)
                                                                        : static_cast<u64>(psci::kNotSupported);
      return;
    case psci::Action::not_supported:
      return;
  }
}

// ---- the report -----------------------------------------------------------------------------
/// Counts the valid leaves of a table by level (a read-only walker visitor, walker.hpp).
struct LeafCounter {
  u64 n[4] = {};
  // Writes no entry: the walker may read ahead (its u64 counts would otherwise order a store
  // before every entry load, walker.hpp).
  static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitReadOnly; }
  Status leaf(pgtable::VisitCtx& ctx) {
    if (arch::DescValid::get(ctx.old) && ctx.level >= 0 && ctx.level <= 3) ++n[ctx.level];
    return {};
  }
};

/// PerCpu's counters in the order the report prints them, under the names it prints
/// (tests/hyp/linux_host.sh reads them by name).
struct Counter {
  const char* name;
  u64 PerCpu::*field;
};
constexpr Counter kCounters[] = {
    {"faults", &PerCpu::faults},   {"blocks", &PerCpu::blocks},       {"pages", &PerCpu::pages},
    {"retried", &PerCpu::retried}, {"aborts", &PerCpu::aborts},       {"unhandled", &PerCpu::unhandled},
    {"psci", &PerCpu::psci},       {"not-supported", &PerCpu::not_supported}, {"undef", &PerCpu::undefs},
};
constexpr unsigned kNumCounters = sizeof kCounters / sizeof kCounters[0];

void report(const char* why) {
  // No lock of its own: the walk and the invariant check take the library's locks (other CPUs
  // may still be faulting). The per-CPU counts are read as they are.
  Line h;
  h.str("ptguard-hyp: report at ").str(why);
  say(h);
  u64 total[kNumCounters] = {};
  for (unsigned i = 0; i < g_hm.n_cpus; ++i) {
    Line l;
    l.str("ptguard-hyp: cpu ").dec(i);
    for (unsigned k = 0; k < kNumCounters; ++k) {
      const u64 v = g_cpu[i].*kCounters[k].field;
      l.str(" ").str(kCounters[k].name).str(" ").dec(v);
      total[k] += v;
    }
    say(l);
  }
  Line t;
  t.str("ptguard-hyp: total");
  for (unsigned k = 0; k < kNumCounters; ++k) t.str(" ").str(kCounters[k].name).str(" ").dec(total[k]);
  say(t);
  // What the host's stage 2 holds now: leaves by level.
  LeafCounter leaves;
  const Status walked = g_mp.walk_host_table(leaves);
  Line s;
  s.str("ptguard-hyp: stage2 leaves l1 ").dec(leaves.n[1]).str(" l2 ").dec(leaves.n[2]).str(" l3 ").dec(leaves.n[3]);
  if (!walked) s.str(" (walk failed: ").str(name(walked.error())).str(")");
  say(s);
  const u64 canary = *reinterpret_cast<volatile u64*>(kCanaryPa);
  Line k;
  k.str("ptguard-hyp: canary ").hex(canary).str(canary == kCanary ? " intact" : " CHANGED");
  say(k);
  typename MP::Violation v{};
  Line inv;
  inv.str("ptguard-hyp: invariants ");
  if (g_mp.check_invariants(g_scratch, &v)) {
    inv.str("hold");
  } else {
    inv.str("BROKEN: ").str(v.what).str(" at pa ").hex(v.pa);
  }
  say(inv);
}

}  // namespace

extern "C" [[noreturn]] void hyp_panic_exception(u64 kind, u64 esr, u64 elr, u64 far) {
  g_uart_ok = false;  // the host may own the UART by now: semihosting only
  Line l;
  l.str("unexpected exception ").dec(kind).str(" esr ").hex(esr).str(" elr ").hex(elr).str(" far ").hex(far);
  die(l);
}

/// A synchronous exception from the host; `x` is its x0..x30, restored on return.
extern "C" void hyp_host_trap(u64* x) {
  PerCpu* c = this_cpu();
  const u64 esr = PTGUARD_MRS("esr_el2");
  switch (EsrEc::get(esr)) {
    case 0x17:  // SMC from AArch64 (trapped by HCR_EL2.TSC): ELR_EL2 is the SMC itself (D1.3.2)
      PTGUARD_MSR("elr_el2", PTGUARD_MRS("elr_el2") + 4);
      PTGUARD_MSR("spsr_el2", spsr_after_skip(PTGUARD_MRS("spsr_el2")));
      host_call(c, x, true);
      return;
    case 0x16:  // HVC from AArch64: ELR_EL2 is already the next instruction
      host_call(c, x, false);
      return;
    case kEcIabtLow:
    case kEcDabtLow:
      host_abort(c, esr);
      return;
    default:
      // Nothing else is configured to trap; whatever it is, the host gets an Undefined
      // Instruction exception rather than the power to stop the hypervisor.
      ++c->undefs;
      deliver(make_undef(esr, PTGUARD_MRS("elr_el2"), PTGUARD_MRS("spsr_el2"), PTGUARD_MRS("sctlr_el1"),
                         PTGUARD_MRS("vbar_el1"), g_inject));
      return;
  }
}

/// A CPU started by the relay's CPU_ON (or back from a power-down suspend), x0 = its BootArgs.
extern "C" [[noreturn]] void hyp_cpu_main(BootArgs* a) {
  PerCpu* c = a->cpu;
  const u64 entry = a->host_entry;
  const u64 ctx = a->host_ctx;
  // The firmware must have started the CPU the slot belongs to: two CPUs on one stack and one
  // PerCpu would corrupt both. Anything else parks here, never reaching the host.
  constexpr u64 kAff = 0xff'00ff'ffffull;
  if ((PTGUARD_MRS("mpidr_el1") & kAff) != (c->mpidr & kAff)) hyp_park();
  cpu_setup(c);
  __atomic_store_n(&c->boot_state, kCpuOn, __ATOMIC_RELEASE);
  enter_host(c, entry, ctx);
}

extern "C" [[noreturn]] void hyp_main() {
  Line banner;
  banner.str("ptguard-hyp: ptguard hypervisor, carve-out ").hex(HYP_CARVEOUT_BASE).str("+").hex(HYP_CARVEOUT_SIZE);
  say(banner);

  // The machine, from the host's device tree.
  const Result<Fdt> fdt = Fdt::open(reinterpret_cast<const void*>(HOST_DTB_PA), HOST_DTB_MAX);
  if (!fdt) die("device tree at HOST_DTB_PA", fdt.error());
  if (Status st = describe_machine(*fdt, kPage, &g_hm); !st) die("device tree", st.error());
  for (unsigned i = 0; i < g_hm.n_memory; ++i) {
    Line l;
    l.str("ptguard-hyp: memory ").hex(g_hm.memory[i].base).str("+").hex(g_hm.memory[i].size);
    say(l);
  }
  for (unsigned i = 0; i < g_hm.n_mmio; ++i) {
    Line l;
    l.str("ptguard-hyp: mmio ").hex(g_hm.mmio[i].base).str("+").hex(g_hm.mmio[i].size);
    say(l);
  }
  for (unsigned i = 0; i < g_hm.n_withheld; ++i) {
    Line l;
    l.str("ptguard-hyp: withheld (DMA-capable) ").hex(g_hm.withheld[i].base).str("+").hex(g_hm.withheld[i].size);
    say(l);
  }
  {
    Line l;
    l.str("ptguard-hyp: cpus ").dec(g_hm.n_cpus).str(", psci ").str(g_hm.psci_smc ? "smc" : g_hm.psci_hvc ? "hvc" : "none");
    say(l);
  }
  if (!g_hm.reserved_nomap_covers(HYP_CARVEOUT_BASE, HYP_CARVEOUT_SIZE)) {
    Line l;
    l.str("the device tree does not reserve the carve-out (/reserved-memory, no-map)");
    die(l);
  }
  if (!g_hm.psci_smc) {
    Line l;
    l.str("the host's PSCI conduit is not SMC: the relay needs HCR_EL2.TSC to see CPU_ON");
    die(l);
  }
  if (g_hm.n_cpus == 0 || g_hm.n_cpus > kMaxCpus) die("device tree: cpus", Error::e2big);
  u64 mem_total = 0;
  for (unsigned i = 0; i < g_hm.n_memory; ++i) mem_total += g_hm.memory[i].pages(kPage) * kPage;
  if (mem_total > kMaxMemory) die("device tree: more memory than the per-page array covers", Error::e2big);

  // CPU features.
  const u64 mmfr0 = PTGUARD_MRS("id_aa64mmfr0_el1"), mmfr1 = PTGUARD_MRS("id_aa64mmfr1_el1");
  const u64 mmfr2 = PTGUARD_MRS("id_aa64mmfr2_el1"), ctr = PTGUARD_MRS("ctr_el0");
  const u64 isar0 = PTGUARD_MRS("id_aa64isar0_el1");  // FEAT_TLBIRANGE: range invalidation
  const arch::CpuFeatures cpu = arch::CpuFeatures::from_id_regs(mmfr0, mmfr1, mmfr2, ctr, isar0);
  g_hostcpu = HostCpu{PTGUARD_MRS("id_aa64pfr0_el1"), PTGUARD_MRS("id_aa64pfr1_el1"), PTGUARD_MRS("id_aa64dfr0_el1"), 0,
                      mmfr0, mmfr1};
  if (g_hostcpu.pmuv3()) g_hostcpu.pmcr = PTGUARD_MRS("pmcr_el0");  // UNDEFINED without PMUv3
  g_inject = InjectFeatures{arch::Field<23, 20>::get(mmfr1) != 0, g_hostcpu.ssbs(), g_hostcpu.mte()};
  // The report key (g_report_key): RNDR where FEAT_RNG has it (ID_AA64ISAR0_EL1.RNDR [63:60]),
  // mixed with the counter either way.
  u64 key = PTGUARD_MRS("cntpct_el0") * 0x9e37'79b9'7f4a'7c15ull;
  if (arch::Field<63, 60>::get(isar0) != 0) key ^= PTGUARD_MRS("S3_3_C2_C4_0");  // RNDR
  g_report_key = key | 1;

  // The library.
  Plat::Config pc;
  pc.pool_pa = reinterpret_cast<u64>(g_pool);
  pc.pool_size = kPoolSize;
  pc.counts = g_pool_counts;
  pc.va_offset = 0;  // the pool is in the image's bss: reached at VA == PA, MMU on or off
  pc.linear_pa = reinterpret_cast<u64>(__image_start);
  pc.linear_size = reinterpret_cast<u64>(__image_end) - pc.linear_pa;
  pc.have_ttl = arch::Field<51, 48>::get(mmfr2) != 0;
  g_plat.init(pc);
#if defined(PTGUARD_HYP_UNPROTECT_CANARY)
  constexpr u64 kProtected = HYP_CARVEOUT_SIZE - kPage;  // the negative test's build only
#else
  constexpr u64 kProtected = HYP_CARVEOUT_SIZE;
#endif
  const ownership::MachineDesc md{std::span<const ownership::Region>(g_hm.memory, g_hm.n_memory),
                                  std::span<const ownership::MmioRegion>(g_hm.mmio, g_hm.n_mmio),
                                  ownership::Region{HYP_CARVEOUT_BASE, kProtected}, kHypVaOffset};
  if (Status st = g_mp.init(g_plat, md, g_meta, cpu); !st) die("MemProtect::init", st.error());

  using pgtable::Prot;
  const u64 img = reinterpret_cast<u64>(__image_start), text_end = reinterpret_cast<u64>(__text_end);
  const u64 ro_end = reinterpret_cast<u64>(__rodata_end), img_end = reinterpret_cast<u64>(__image_end);
  const Prot rx{pgtable::kPermRX, arch::MemType::normal_wb, 0};
  const Prot ro{pgtable::kPermR, arch::MemType::normal_wb, 0};
  const Prot rw{pgtable::kPermRW, arch::MemType::normal_wb, 0};
  if (Status st = g_mp.hyp_map_private(img, text_end - img, img, rx); !st) die("map text", st.error());
  if (Status st = g_mp.hyp_map_private(text_end, ro_end - text_end, text_end, ro); !st) die("map rodata", st.error());
  if (Status st = g_mp.hyp_map_private(ro_end, img_end - ro_end, ro_end, rw); !st) die("map data", st.error());
  if (Status st = g_mp.hyp_map_private(kCanaryPa, kPage, kCanaryPa, rw); !st) die("map canary", st.error());
  // The fixmap: map a page there once so its last-level table exists, then give the entry to
  // the platform (which clears it).
  if (Status st = g_mp.hyp_map_private(kFixmapVa, kPage, img, rw); !st) die("map fixmap", st.error());
  u64* slot = pgtable::fixmap_slot<G>(g_plat, g_mp.hyp_table().root_pa(), g_mp.hyp_config().start_level, kFixmapVa,
                                      g_mp.hyp_config().oa);
  if (slot == nullptr) die("fixmap slot", Error::enoent);
  g_plat.set_fixmap(kFixmapVa, slot, g_mp.hyp_config().oa);
  g_mp.finalize();

  *reinterpret_cast<volatile u64*>(kCanaryPa) = kCanary;

  g_s1_tcr = g_mp.hyp_config().tcr;
  g_s1_mair = g_mp.hyp_config().mair;
  g_ttbr0 = arch::make_ttbr0_el2(g_mp.hyp_config(), g_mp.hyp_table().root_pa());
  g_vtcr = g_mp.host_config().vtcr;
  g_fwb = g_mp.host_config().fwb;
  g_vttbr = arch::make_vttbr(g_mp.host_config(), g_mp.host_table().root_pa(), MP::kHostVmid);
  g_plat.set_vttbr(MP::kHostVmid, g_vttbr);

  const u64 mpidr = PTGUARD_MRS("mpidr_el1");
  const int me = g_hm.cpu_index(mpidr);
  if (me < 0) die("the boot CPU's MPIDR is not in /cpus", Error::einval);
  for (unsigned i = 0; i < g_hm.n_cpus; ++i) {
    g_cpu[i].index = i;
    g_cpu[i].mpidr = g_hm.cpu_mpidr[i];
    g_cpu[i].stack_top = reinterpret_cast<u64>(g_stacks[i] + kStackSize);
    for (BootArgs* a : {&g_cpu[i].on_args, &g_cpu[i].suspend_args}) {
      a->stack_top = g_cpu[i].stack_top;
      a->cpu = &g_cpu[i];
    }
  }
  PerCpu* c = &g_cpu[me];
  c->boot_state = kCpuOn;
  {
    Line l;
    l.str("ptguard-hyp: vtcr_el2 ").hex(g_vtcr).str(" hcr_el2 ").hex(host_hcr_el2(g_hostcpu, g_fwb));
    l.str(" cptr_el2 ").hex(host_cptr_el2(g_hostcpu)).str(" mdcr_el2 ").hex(host_mdcr_el2(g_hostcpu));
    say(l);
    Line k;
    k.str("ptguard-hyp: report key ").hex(g_report_key);
    say(k);
    Line e;
    e.str("ptguard-hyp: entering the host at ").hex(HOST_KERNEL_PA).str(" with the device tree at ").hex(HOST_DTB_PA);
#if defined(PTGUARD_HYP_UNPROTECT_CANARY)
    e.str(" (UNPROTECTED canary build)");
#endif
    say(e);
  }
  g_uart_ok = false;  // the host's from here on
  cpu_setup(c);
  enter_host(c, HOST_KERNEL_PA, HOST_DTB_PA);
}
