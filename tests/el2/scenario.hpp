// The EL2 scenario: one table of steps (ownership transitions made by hypercalls, and the
// accesses the host, the hypervisor and the guests try after each), written once and compiled
// both into the EL2 image that runs under QEMU (tests/el2/image/) and into the hosted test
// that runs it in the simulator and asks the reference MMU (tests/el2/scenario_test.cpp).
//
// Both sides describe each step and its outcome with format_check(), one line per check, so
// the hosted test compares QEMU's MMU with the reference MMU line by line.
//
// Freestanding: no library beyond what ptguard's freestanding layers use.
#pragma once

#include "ptguard/arch/error.hpp"
#include "ptguard/arch/granule.hpp"
#include "ptguard/hyp/line.hpp"
#include "ptguard/ownership/mem_protect.hpp"

namespace ptguard::el2test {

using ownership::ComponentId;
using i64 = long long;

// ---- the machine (QEMU virt, -m 512M) ---------------------------------------------------------
inline constexpr u64 kRam = 0x4000'0000;
inline constexpr u64 kRamSize = u64{512} << 20;
/// What the machine description gives the ownership layer: the first 64 MiB of RAM.
inline constexpr u64 kMemory = kRam;
inline constexpr u64 kMemorySize = u64{64} << 20;
inline constexpr u64 kUart = 0x0900'0000;  ///< PL011, the hypervisor's
/// The UART's MMIO region: 64 KiB (a page of any granule; the next device is at 0x0901_0000).
inline constexpr u64 kUartSize = 0x1'0000;
/// The hypervisor's carve-out: its image (linked at 0x4008_0000) and its table pools.
inline constexpr u64 kCarveout = 0x4008'0000;
inline constexpr u64 kCarveoutEnd = 0x4200'0000;
inline constexpr u64 kImageEnd = 0x4040'0000;  ///< the image must end before this
/// The runs of the scenario: each granule, and the 4K granule once more as on an older CPU:
/// FEAT_S2FWB left unused (HCR_EL2.FWB = 0: the other stage-2 MemAttr encodings, and the cache
/// maintenance the engine and the scrub then do by VA through the hypervisor's fixmap),
/// FEAT_TLBIRANGE too (invalidation by page, or of the whole VMID, instead of by range), and
/// FEAT_LPA2 (48-bit tables; QEMU's `-cpu max` has it, so the 4K run has 52-bit tables, a
/// level -1 host stage 2 and DS = 1 at both stages: docs/ownership.md "52-bit addresses").
///
/// The 16K run keeps 48-bit tables too: QEMU 7.2 reports FEAT_LPA2 for 16K at stage 2, but its
/// stage-2 walk refuses to start at level 0 with the 16K granule (its check_s2_mmu_setup
/// rejects level 0 for 16K whatever VTCR_EL2.DS says), while a 52-bit 16K IPA needs exactly
/// that start (VTCR_EL2.SL0 = 0b11 with DS = 1, Arm ARM D24.2 VTCR_EL2.SL0): every host access
/// would fault at level 0. The simulator's run does the same, so the two still compare.
struct Variant {
  arch::Granule granule;
  bool fwb_off;
  bool tlbi_range_off;
  bool lpa_off;
  const char* name;
};
inline constexpr Variant kVariants[] = {
    {arch::Granule::k4K, false, false, false, "4K"},
    {arch::Granule::k16K, false, false, true, "16K"},
    {arch::Granule::k64K, false, false, false, "64K"},
    {arch::Granule::k4K, true, true, true, "4K-nofwb"},
};
/// The CPU a run gives the ownership layer: what the ID registers say, less what the run turns
/// off (kVariants).
[[nodiscard]] constexpr arch::CpuFeatures run_cpu(arch::CpuFeatures cpu, const Variant& v) {
  if (v.fwb_off) cpu.fwb = false;                // FEAT_S2FWB is opt-in (HCR_EL2.FWB): leave it off
  if (v.tlbi_range_off) cpu.tlbi_range = false;  // as on a CPU without FEAT_TLBIRANGE
  if (v.lpa_off) {                               // as without FEAT_LPA2 / FEAT_LPA: 48-bit tables
    for (unsigned g = 0; g < 3; ++g) cpu.lpa_s1[g] = cpu.lpa_s2[g] = false;
  }
  return cpu;
}
inline constexpr unsigned kNumVariants = sizeof(kVariants) / sizeof(kVariants[0]);
/// One 6 MiB table pool per run (each 1 MiB aligned: a 16-page root of 64K pages).
inline constexpr u64 kPoolSize = u64{6} << 20;
[[nodiscard]] constexpr u64 pool_pa(unsigned variant) { return 0x4040'0000 + variant * kPoolSize; }
static_assert(pool_pa(kNumVariants) <= kCarveoutEnd);
/// The hypervisor maps memory shared with or donated to it at pa + kHypVaOffset.
inline constexpr u64 kHypVaOffset = u64{0x1000} << 32;
/// Its fixmap slot.
inline constexpr u64 kFixmapVa = u64{0x2000} << 32;

/// Host memory the scenario uses: 64 KiB slots (a page of any granule), slot 0 holding the EL1
/// code (linked there by the image; see image/el1.S).
inline constexpr u64 kSlot = 0x1'0000;
inline constexpr u64 kHost = 0x4200'0000;
[[nodiscard]] constexpr u64 host_page(unsigned k) { return kHost + k * kSlot; }
inline constexpr u64 kHostCode = host_page(0);
/// Guest IPAs the scenario uses (the guest's code is the host's code page shared read-execute).
inline constexpr u64 kGuestIpa = 0x8000'0000;
[[nodiscard]] constexpr u64 guest_page(unsigned k) { return kGuestIpa + k * kSlot; }
inline constexpr u64 kGuestCode = guest_page(0);
/// Guest slots of the image's and the simulator's MemProtect: the scenario's two guests, and in
/// the image's SMP phase one guest per CPU (4) and the guest all CPUs share at once.
inline constexpr unsigned kGuestSlots = 8;
/// RAM QEMU has but the machine description does not give anyone.
inline constexpr u64 kOutside = kMemory + kMemorySize;

/// The EL1 code page: the EL1 vector table at offset 0 (every entry reports to EL2 with
/// HVC #2), then the stubs the hypervisor enters with ELR_EL2. HVC #1 reports a stub's result,
/// HVC #0 is a hypercall. An exec step branches to a page that must hold HVC #1 (kLanding).
inline constexpr u64 kStubRead = 0x800;   ///< ldr x1, [x0]; hvc #1
inline constexpr u64 kStubWrite = 0x808;  ///< str x1, [x0]; hvc #1
inline constexpr u64 kStubCall = 0x810;   ///< hvc #0; hvc #1
inline constexpr u64 kStubExec = 0x818;   ///< br x0
inline constexpr u16 kHvcCall = 0, kHvcDone = 1, kHvcEl1Exception = 2;

// ---- steps ----------------------------------------------------------------------------------
/// vm52: the EL1 program of the 52-bit run (kSteps52), on a stage-2 of its own that is not the
/// ownership layer's (a table built directly with the engine: build_vm52).
enum class Actor : u8 { host, hyp, guest2, guest3, vm52 };
[[nodiscard]] constexpr ComponentId guest_id(Actor a) { return a == Actor::guest2 ? 2 : a == Actor::guest3 ? 3 : 0; }
[[nodiscard]] constexpr bool is_guest(Actor a) { return guest_id(a) != 0; }

enum class Op : u8 { read, write, call, exec };

/// Hypercall function numbers (x0). Host calls: x1 pa, x2 pages, x3 guest id, x4 guest IPA,
/// x5 permissions (or the VMID for create_guest); on a guest (create, teardown, reclaim,
/// unshare, and the permission and young-bit operations on what the host shares with it): x1
/// the guest id, x4 its IPA, x5 permissions or "clear". Guest calls: x1 IPA, x2 pages.
enum class Call : u8 {
  none = 0,
  share_hyp = 1, unshare_hyp, donate_hyp, hyp_donate_host, hyp_pin, hyp_unpin, share_ffa, unshare_ffa,
  create_guest, share_guest, unshare_guest, donate_guest, lend_guest, reclaim_lent, teardown_guest,
  reclaim_guest, force_reclaim, guest_wrprotect, guest_relax_perms, guest_test_clear_young, guest_mkyoung,
  guest_share_host = 32, guest_unshare_host, guest_relinquish,
};

[[nodiscard]] constexpr const char* name(Call c) {
  switch (c) {
    case Call::none: return "none";
    case Call::share_hyp: return "host_share_hyp";
    case Call::unshare_hyp: return "host_unshare_hyp";
    case Call::donate_hyp: return "host_donate_hyp";
    case Call::hyp_donate_host: return "hyp_donate_host";
    case Call::hyp_pin: return "hyp_pin_shared";
    case Call::hyp_unpin: return "hyp_unpin_shared";
    case Call::share_ffa: return "host_share_ffa";
    case Call::unshare_ffa: return "host_unshare_ffa";
    case Call::create_guest: return "create_guest";
    case Call::share_guest: return "host_share_guest";
    case Call::unshare_guest: return "host_unshare_guest";
    case Call::donate_guest: return "host_donate_guest";
    case Call::lend_guest: return "host_lend_guest";
    case Call::reclaim_lent: return "host_reclaim_lent";
    case Call::teardown_guest: return "teardown_guest";
    case Call::reclaim_guest: return "reclaim_guest";
    case Call::force_reclaim: return "host_force_reclaim";
    case Call::guest_wrprotect: return "guest_wrprotect";
    case Call::guest_relax_perms: return "guest_relax_perms";
    case Call::guest_test_clear_young: return "guest_test_clear_young";
    case Call::guest_mkyoung: return "guest_mkyoung";
    case Call::guest_share_host: return "guest_share_host";
    case Call::guest_unshare_host: return "guest_unshare_host";
    case Call::guest_relinquish: return "guest_relinquish";
  }
  return "?";
}

/// Whether a host hypercall's x1 names a guest (not a physical address).
[[nodiscard]] constexpr bool x1_is_guest(Call c) {
  switch (c) {
    case Call::create_guest:
    case Call::teardown_guest:
    case Call::reclaim_guest:
    case Call::unshare_guest:
    case Call::guest_wrprotect:
    case Call::guest_relax_perms:
    case Call::guest_test_clear_young:
    case Call::guest_mkyoung: return true;
    default: return false;
  }
}

/// What a step must do. Faults name only the kind here: the level is the MMU's business and
/// is compared between QEMU and the reference MMU, not written in the table.
struct Expect {
  enum Kind : u8 { ok, ok_value, ret, translation, permission, not_run } kind = ok;
  u64 value = 0;  ///< ok_value: the word read; ret: x0 (0, a count, or -errno)
};
inline constexpr Expect kOk{Expect::ok, 0};
[[nodiscard]] constexpr Expect reads(u64 v) { return Expect{Expect::ok_value, v}; }
[[nodiscard]] constexpr Expect ret(Error e) { return Expect{Expect::ret, static_cast<u64>(-static_cast<long long>(code(e)))}; }
[[nodiscard]] constexpr Expect returns(u64 x0) { return Expect{Expect::ret, x0}; }
inline constexpr Expect kRetOk{Expect::ret, 0};
inline constexpr Expect kTranslation{Expect::translation, 0};
inline constexpr Expect kPermission{Expect::permission, 0};
inline constexpr Expect kNotRun{Expect::not_run, 0};

struct Step {
  Actor who;
  Op op;
  Call call;
  u64 addr;   ///< read/write: the PA (host, hypervisor) or IPA (guest); call: x1
  u64 value;  ///< write: the word written
  u64 x2, x3, x4, x5;
  Expect expect;
};

[[nodiscard]] constexpr Step read(Actor who, u64 addr, Expect e) { return Step{who, Op::read, Call::none, addr, 0, 0, 0, 0, 0, e}; }
/// An instruction fetch from `addr`, which must hold kLanding (HVC #1) if the fetch may succeed.
[[nodiscard]] constexpr Step exec(Actor who, u64 addr, Expect e) { return Step{who, Op::exec, Call::none, addr, 0, 0, 0, 0, 0, e}; }
[[nodiscard]] constexpr Step write(Actor who, u64 addr, u64 v, Expect e) {
  return Step{who, Op::write, Call::none, addr, v, 0, 0, 0, 0, e};
}
/// A host hypercall on one page.
[[nodiscard]] constexpr Step host_call(Call c, u64 pa, Expect e, u64 guest = 0, u64 ipa = 0, u64 x5 = 0) {
  return Step{Actor::host, Op::call, c, pa, 0, 1, guest, ipa, x5, e};
}
/// A host hypercall on a guest (create, teardown, reclaim: x1 is the guest id).
[[nodiscard]] constexpr Step guest_op(Call c, u64 id, Expect e, u64 vmid = 0) {
  return Step{Actor::host, Op::call, c, id, 0, 0, 0, 0, vmid, e};
}
/// A guest's own hypercall on one page of its IPA space.
[[nodiscard]] constexpr Step guest_call(Actor g, Call c, u64 ipa, Expect e) {
  return Step{g, Op::call, c, ipa, 0, 1, 0, 0, 0, e};
}

/// HVC #1 as a doubleword a host step writes (A64 encoding: 0xd4000002 | imm16 << 5).
inline constexpr u64 kLanding = 0xd400'0022u;

inline constexpr u64 kRX = pgtable::kPermRX, kR = pgtable::kPermR, kRW = pgtable::kPermRW;

using enum Actor;
using enum Call;

/// The scenario. Host pages are 64 KiB slots from 0x4200_0000 (slot 0 is the EL1 code); guest
/// IPAs are slots from 0x8000_0000 (slot 0 the code, shared read-execute by the host).
inline constexpr Step kScenario[] = {
    // The host's own memory, faulted in lazily; what it has no right to.
    write(host, host_page(1), 0x1111, kOk),
    read(host, host_page(1), reads(0x1111)),
    read(host, kUart, kTranslation),                // the hypervisor's UART
    read(host, kCarveout, kTranslation),            // the hypervisor's image
    write(host, pool_pa(0), 1, kTranslation),  // a table pool
    read(host, kOutside, kTranslation),             // RAM given to nobody
    read(hyp, host_page(1), kTranslation),          // the hypervisor does not map host memory
    // Host <-> hypervisor: share, pin, unshare.
    host_call(share_hyp, host_page(2), kRetOk),
    write(host, host_page(2), 0x2222, kOk),
    read(hyp, host_page(2), reads(0x2222)),
    write(hyp, host_page(2), 0x2223, kOk),
    read(host, host_page(2), reads(0x2223)),
    host_call(share_hyp, host_page(2), ret(Error::eperm)),
    host_call(hyp_pin, host_page(2), kRetOk),
    host_call(unshare_hyp, host_page(2), ret(Error::ebusy)),
    host_call(hyp_unpin, host_page(2), kRetOk),
    host_call(unshare_hyp, host_page(2), kRetOk),
    read(hyp, host_page(2), kTranslation),
    read(host, host_page(2), reads(0x2223)),
    host_call(unshare_hyp, host_page(2), ret(Error::eperm)),
    // Host -> hypervisor donation and back.
    write(host, host_page(3), 0x3333, kOk),
    host_call(donate_hyp, host_page(3), kRetOk),
    read(host, host_page(3), kTranslation),
    write(host, host_page(3), 0x3, kTranslation),
    read(hyp, host_page(3), reads(0x3333)),
    write(hyp, host_page(3), 0x3334, kOk),
    host_call(share_hyp, host_page(3), ret(Error::eperm)),
    host_call(hyp_donate_host, host_page(3), kRetOk),
    read(hyp, host_page(3), kTranslation),
    read(host, host_page(3), reads(0x3334)),
    // Shared with the secure world: the host keeps access, nobody else may share it.
    host_call(share_ffa, host_page(4), kRetOk),
    host_call(share_hyp, host_page(4), ret(Error::eperm)),
    write(host, host_page(4), 0x4444, kOk),
    host_call(unshare_ffa, host_page(4), kRetOk),
    host_call(share_hyp, pool_pa(0), ret(Error::eperm)),
    host_call(donate_hyp, kUart, ret(Error::eperm)),
    // Guests: two, each on its own VMID, both running the host's code page read-execute.
    guest_op(create_guest, 2, kRetOk, 1),
    guest_op(create_guest, 2, ret(Error::eexist), 1),
    guest_op(create_guest, 3, kRetOk, 2),
    host_call(share_guest, kHostCode, kRetOk, 2, kGuestCode, kRX),
    host_call(share_guest, kHostCode, kRetOk, 3, kGuestCode, kRX),
    // Donation to guest 2: the host loses the page, guest 2 sees the host's data, guest 3 not.
    write(host, host_page(5), 0x5555, kOk),
    host_call(donate_guest, host_page(5), kRetOk, 2, guest_page(1)),
    read(host, host_page(5), kTranslation),
    read(guest2, guest_page(1), reads(0x5555)),
    write(guest2, guest_page(1), 0x5556, kOk),
    read(guest3, guest_page(1), kTranslation),
    read(guest2, guest_page(2), kTranslation),
    host_call(share_guest, host_page(5), ret(Error::eperm), 3, guest_page(1), kRW),
    host_call(donate_hyp, host_page(5), ret(Error::eperm)),
    write(guest2, kGuestCode + 0x8, 0, kPermission),  // its code page is read-execute
    // A read-only share with guest 2.
    write(host, host_page(6), 0x6666, kOk),
    host_call(share_guest, host_page(6), kRetOk, 2, guest_page(2), kR),
    read(guest2, guest_page(2), reads(0x6666)),
    write(guest2, guest_page(2), 0x6, kPermission),
    write(host, host_page(6), 0x6667, kOk),
    read(guest2, guest_page(2), reads(0x6667)),
    host_call(share_guest, host_page(6), kRetOk, 3, guest_page(2), kRW),
    write(guest3, guest_page(2), 0x6668, kOk),
    read(guest2, guest_page(2), reads(0x6668)),
    // Guest 3's permissions and access flag on that page, changed by the host.
    host_call(guest_wrprotect, 3, kRetOk, 0, guest_page(2)),
    write(guest3, guest_page(2), 0x6669, kPermission),
    read(guest3, guest_page(2), reads(0x6668)),
    host_call(guest_relax_perms, 3, kRetOk, 0, guest_page(2), kRW),
    write(guest3, guest_page(2), 0x6668, kOk),
    host_call(guest_test_clear_young, 3, returns(1), 0, guest_page(2), 1),
    host_call(guest_test_clear_young, 3, returns(0), 0, guest_page(2), 0),
    read(guest3, guest_page(2), reads(0x6668)),  // the MMU sets the access flag (VTCR_EL2.HA)
    host_call(guest_test_clear_young, 3, returns(1), 0, guest_page(2), 0),
    host_call(guest_mkyoung, 3, kRetOk, 0, guest_page(2)),
    host_call(guest_relax_perms, 2, ret(Error::eperm), 0, guest_page(1), kRW),  // not shared
    host_call(share_hyp, host_page(6), ret(Error::eperm)),
    // Guest 2 shares its page back with the host, then takes it back.
    guest_call(guest2, guest_share_host, guest_page(1), kRetOk),
    read(host, host_page(5), reads(0x5556)),
    write(host, host_page(5), 0x5557, kOk),
    read(guest2, guest_page(1), reads(0x5557)),
    guest_call(guest2, guest_share_host, guest_page(1), ret(Error::eperm)),
    guest_call(guest2, guest_unshare_host, guest_page(1), kRetOk),
    read(host, host_page(5), kTranslation),
    guest_call(guest3, guest_share_host, guest_page(1), ret(Error::eperm)),
    // Lending to guest 2: the host keeps ownership but loses access until it reclaims.
    write(host, host_page(7), 0x7777, kOk),
    host_call(lend_guest, host_page(7), kRetOk, 2, guest_page(4), kRW),
    read(host, host_page(7), kTranslation),
    read(guest2, guest_page(4), reads(0x7777)),
    write(guest2, guest_page(4), 0x7778, kOk),
    host_call(reclaim_lent, host_page(7), ret(Error::ebusy)),
    guest_call(guest2, guest_relinquish, guest_page(4), kRetOk),
    read(guest2, guest_page(4), kTranslation),
    read(host, host_page(7), kTranslation),
    host_call(reclaim_lent, host_page(7), kRetOk),
    read(host, host_page(7), reads(0x7778)),
    // Unsharing: guest 3 loses the page, guest 2 keeps it.
    host_call(unshare_guest, 3, kRetOk, 0, guest_page(2)),
    read(guest3, guest_page(2), kTranslation),
    read(guest2, guest_page(2), reads(0x6668)),
    host_call(unshare_guest, 3, ret(Error::enoent), 0, guest_page(2)),
    // A forced reclaim from live guest 2: the page is scrubbed, the guest's IPA poisoned.
    write(host, host_page(8), 0x8888, kOk),
    host_call(donate_guest, host_page(8), kRetOk, 2, guest_page(5)),
    write(guest2, guest_page(5), 0x8889, kOk),
    host_call(force_reclaim, host_page(8), kRetOk),
    read(guest2, guest_page(5), kTranslation),
    read(host, host_page(8), reads(0)),
    guest_call(guest2, guest_share_host, guest_page(5), ret(Error::ehwpoison)),
    // Teardown of guest 2 and reclaim: its donated page reads as zeros, shared pages return.
    // Instruction fetches: stage-2 execute permissions.
    write(host, host_page(10), kLanding, kOk),
    exec(host, host_page(10), kOk),
    exec(host, kCarveout, kTranslation),
    host_call(share_guest, host_page(10), kRetOk, 2, guest_page(6), kR),
    exec(guest2, guest_page(6), kPermission),          // shared without execute
    read(guest2, guest_page(6), reads(kLanding)),
    host_call(unshare_guest, 2, kRetOk, 0, guest_page(6)),
    host_call(donate_guest, host_page(10), kRetOk, 2, guest_page(6)),
    exec(guest2, guest_page(6), kOk),                  // its own page: RWX
    exec(guest2, guest_page(2), kPermission),          // shared read-only
    exec(guest3, guest_page(6), kTranslation),
    guest_op(reclaim_guest, 2, ret(Error::eperm)),
    guest_op(teardown_guest, 2, kRetOk),
    read(guest2, guest_page(1), kNotRun),
    read(host, host_page(5), kTranslation),
    guest_op(reclaim_guest, 2, kRetOk),
    read(host, host_page(5), reads(0)),
    write(host, host_page(5), 0x5, kOk),
    read(host, host_page(6), reads(0x6668)),
    host_call(share_hyp, host_page(6), kRetOk),
    read(hyp, host_page(6), reads(0x6668)),
    host_call(unshare_hyp, host_page(6), kRetOk),
    // Guest 3 is still there, on its own VMID, and still runs.
    read(guest3, guest_page(1), kTranslation),
    host_call(donate_guest, host_page(9), kRetOk, 3, guest_page(1)),
    write(guest3, guest_page(1), 0x9999, kOk),
    guest_op(teardown_guest, 3, kRetOk),
    guest_op(reclaim_guest, 3, kRetOk),
    read(host, host_page(9), reads(0)),
    read(host, host_page(10), reads(0)),
    read(host, kHostCode + kStubCall, reads(0xd4000022d4000002ull)),  // hvc #1; hvc #0 (little-endian)
};
inline constexpr unsigned kSteps = sizeof(kScenario) / sizeof(kScenario[0]);

// ---- the 52-bit runs (FEAT_LPA2, FEAT_LPA) ------------------------------------------------------
// Three more runs, after the granule runs: EL1 code on a stage-2 of IPAs above 2^48 with PS =
// 0b110 (52-bit PAs), one per granule, each from make_stage2_config and make_vttbr(cfg, ...):
//   4K-lpa2   FEAT_LPA2, 52-bit IPA: VTCR_EL2.DS = 1 (OA[51:50] in descriptor bits [9:8], TxSZ
//             down to 12), T0SZ = 12, the walk starting at level -1 (SL2 = 1, SL0 = 0b00; the
//             level -1 table resolves IA[51:48]);
//   16K-lpa2  FEAT_LPA2, 51-bit IPA: DS = 1, T0SZ = 13, the walk starting at level 1 with 16
//             concatenated tables. Not 52 bits: that walk starts at level 0 (SL0 = 0b11, legal
//             with DS = 1), which QEMU 7.2 refuses with a level 0 translation fault on every
//             access (its check_s2_mmu_setup rejected any 16K level-0 start; rewritten for 8.0);
//             the reference MMU and the simulator tests (tests/pgtable/lpa2_test.cpp) cover it;
//   64K-lpa   FEAT_LPA, 52-bit IPA: OA[51:48] in descriptor bits [15:12], the walk starting at
//             level 1 with one 1024-entry table.
// QEMU's virt board has no RAM above 2^48 (it starts at 0x4000_0000), so the IPAs are above
// 2^48 and the PAs in the carve-out's RAM: every walk goes through the top of a 51- or 52-bit
// input space, but every output address fits in 48 bits. Each table is built by the engine
// directly (no ownership layer: MemProtect's host and guests are 48-bit), the same way on both
// sides (build_vm52), on a pool of its own in the carve-out.
inline constexpr u16 kVmid52 = 5;  ///< not the host's 0, the guests' 1 and 2, nor the SMP phase's 8-12
struct Variant52 {
  arch::Granule granule;
  unsigned ia_bits;
  u64 ipa;        ///< the first IPA of the pages it maps (the EL1 code page): top of the space
  u64 root_hole;  ///< an IPA whose root-table entry is empty
  const char* name;
};
inline constexpr Variant52 kVariants52[] = {
    // IA[51:48] = 0xf: the last level -1 entry; 0x8: an empty one.
    {arch::Granule::k4K, 52, 0x000f'0000'0000'0000ull, 0x0008'0000'0000'0000ull, "4K-lpa2"},
    // IA[50:48] = 0b111: concatenated table 14 of 16 at level 1; bit 50 alone: table 8.
    {arch::Granule::k16K, 51, 0x0007'0000'0000'0000ull, 0x0004'0000'0000'0000ull, "16K-lpa2"},
    // IA[51:42] = 960 of the level-1 table's 1024 entries; 512 is empty.
    {arch::Granule::k64K, 52, 0x000f'0000'0000'0000ull, 0x0008'0000'0000'0000ull, "64K-lpa"},
};
inline constexpr unsigned kNumVariants52 = sizeof(kVariants52) / sizeof(kVariants52[0]);
/// The runs' table pools, after the granule runs' pools, inside the carve-out, aligned to
/// 2^kMaxOrder pages as El2Platform wants: 64K 16 pages (1 MiB), 16K 32 pages (512 KiB: the
/// 16-page concatenated root and the tables under it), 4K 16 pages (64 KiB). The root and two
/// paths down take at most 23 pages (16K), the others 9.
inline constexpr u64 kPools52 = pool_pa(kNumVariants);
[[nodiscard]] constexpr u64 pool52_size(arch::Granule g) {
  return (g == arch::Granule::k16K ? 32 : 16) * arch::page_size(g);
}
[[nodiscard]] constexpr u64 pool52_pa(arch::Granule g) {
  return kPools52 + (g == arch::Granule::k64K ? 0 : g == arch::Granule::k16K ? 0x10'0000 : 0x18'0000);
}
static_assert(kPools52 % pool52_size(arch::Granule::k64K) == 0);
static_assert(pool52_pa(arch::Granule::k16K) == pool52_pa(arch::Granule::k64K) + pool52_size(arch::Granule::k64K));
static_assert(pool52_pa(arch::Granule::k4K) == pool52_pa(arch::Granule::k16K) + pool52_size(arch::Granule::k16K));
/// Two 64 KiB slots of data pages (a page of any granule each), shared by the runs in turn.
inline constexpr u64 kData52 = kPools52 + 0x20'0000;
static_assert(pool52_pa(arch::Granule::k4K) + pool52_size(arch::Granule::k4K) <= kData52);
/// The end of what the hypervisor maps of its carve-out beyond its image (pools and data).
inline constexpr u64 kPoolsEnd = kData52 + 2 * kSlot;
static_assert(kPoolsEnd <= kCarveoutEnd);
/// Just above 2^48: another path from the root.
inline constexpr u64 kIpa49 = (u64{1} << 48) + kSlot;
/// The word the hypervisor (and the simulator) writes into the read-only page before each run.
inline constexpr u64 kValue52 = 0x5200'0000'0000'052aull;

struct Map52 {
  u64 ipa;
  u64 pa;
  pgtable::Perm perm;
};
struct Maps52 {
  Map52 m[4];
};
/// What run `v` maps, one page each: the EL1 code page (kHostCode) read-execute at the run's
/// first IPA, a read-only and a read-write data page after it, and the read-write page again
/// read-only just above 2^48.
[[nodiscard]] constexpr Maps52 maps52(const Variant52& v) {
  return Maps52{{{v.ipa, kHostCode, pgtable::kPermRX},
                 {v.ipa + kSlot, kData52, pgtable::kPermR},
                 {v.ipa + 2 * kSlot, kData52 + kSlot, pgtable::kPermRW},
                 {kIpa49, kData52 + kSlot, pgtable::kPermR}}};
}

inline constexpr unsigned kSteps52 = 14;
struct Steps52 {
  Step s[kSteps52];
};
/// The steps of run `v`; the EL1 code runs from v.ipa.
[[nodiscard]] constexpr Steps52 steps52(const Variant52& v) {
  const u64 b = v.ipa;
  return Steps52{{
      read(vm52, b + kSlot, reads(kValue52)),
      write(vm52, b + kSlot, 0x52, kPermission),
      write(vm52, b + 2 * kSlot, 0x5252, kOk),
      read(vm52, b + 2 * kSlot, reads(0x5252)),
      read(vm52, kIpa49, reads(0x5252)),  // the same page, through another root entry
      write(vm52, kIpa49, 0x49, kPermission),
      exec(vm52, b + kStubRead + 4, kOk),  // the code page's hvc #1 (kLanding)
      exec(vm52, b + 2 * kSlot, kPermission),  // read-write, not executable
      read(vm52, b + 3 * kSlot, kTranslation),  // an empty entry of the last-level table
      read(vm52, b + (u64{1} << 21), kTranslation),  // 4K: of the level-2 table
      read(vm52, b + (u64{1} << 30), kTranslation),  // 4K: of the level-1 table
      read(vm52, b + (u64{1} << 39), kTranslation),  // 4K: of the level-0 table
      read(vm52, v.root_hole, kTranslation),  // an empty root entry
      read(vm52, kData52, kTranslation),  // below 2^48: root entry 0, empty too
  }};
}
/// The level each fault step must report, per run of kVariants52 (both MMUs; checked by
/// Scenario.Runs52MeetExpectationsAtTheirLevels); 0 for the steps that do not fault. A 4K
/// level-3 table spans 2 MiB, a 16K one 32 MiB and a 64K one 512 MiB; the roots resolve
/// IA[51:48] (4K, level -1), IA[50:36] (16K, level 1, concatenated) and IA[51:42] (64K, level 1).
inline constexpr int kLevels52[kNumVariants52][kSteps52] = {
    {0, 3, 0, 0, 0, 3, 0, 3, 3, 2, 1, 0, -1, -1},
    {0, 3, 0, 0, 0, 3, 0, 3, 3, 3, 2, 1, 1, 1},
    {0, 3, 0, 0, 0, 3, 0, 3, 3, 3, 2, 2, 1, 1},
};

/// Whether the CPU can run `v`: the granule at stage 2 with 52-bit addresses (FEAT_LPA2 for 4K
/// and 16K, FEAT_LPA for 64K) and a 52-bit PARange.
[[nodiscard]] constexpr bool supports_run52(const Variant52& v, const arch::CpuFeatures& cpu) {
  return cpu.supports(v.granule, 2) && cpu.supports_52bit(v.granule, 2) && cpu.pa_bits >= 52;
}
/// Its stage-2 configuration: make_stage2_config at v.ia_bits with 52-bit output addresses
/// (implied above 48 bits of IPA; asked for anyway, so that PS and DS never depend on it).
[[nodiscard]] constexpr Result<arch::Stage2Config> config52(const Variant52& v, const arch::CpuFeatures& cpu) {
  arch::WalkOptions opt;
  opt.pa_52bit = true;
  return arch::make_stage2_config(v.granule, v.ia_bits, cpu, opt);
}

template <arch::Granule G, typename Plat>
using Table52 = pgtable::Stage2Table<G, Plat>;

/// Builds run `v`'s table into `t` on `plat` (its pool): maps52(v), one page each, with Normal
/// write-back memory. `mc` keeps what it was topped up with and not used.
template <arch::Granule G, typename Plat>
[[nodiscard]] Status build_vm52(Plat& plat, const Variant52& v, const arch::Stage2Config& cfg, Table52<G, Plat>& t,
                                pgtable::Memcache& mc) {
  constexpr u64 kPage = arch::page_size(G);
  Result<Table52<G, Plat>> r = Table52<G, Plat>::create_stage2(plat, cfg, kVmid52);
  if (!r) return fail(r.error());
  t = static_cast<Table52<G, Plat>&&>(*r);
  for (const Map52& m : maps52(v).m) {
    if (Status st = mc.topup(plat, t.max_pages_needed(m.ipa, kPage)); !st) return st;
    const pgtable::Prot prot{m.perm, arch::MemType::normal_wb, 0};
    if (Status st = t.map(m.ipa, kPage, m.pa, prot, mc); !st) return st;
  }
  return {};
}

/// x0..x5 of a step's hypercall.
struct CallRegs {
  u64 x[6];
};
[[nodiscard]] constexpr CallRegs call_regs(const Step& s) {
  return CallRegs{{static_cast<u64>(s.call), s.addr, s.x2, s.x3, s.x4, s.x5}};
}

// ---- the EL1 code page ------------------------------------------------------------------------
// A64 encodings (C6.2): HVC #imm is 0xd4000002 | imm << 5; LDR Xt, [Xn] 0xf9400000 | Xn << 5 | Xt;
// STR Xt, [Xn] 0xf9000000 | Xn << 5 | Xt; BR Xn 0xd61f0000 | Xn << 5.
[[nodiscard]] constexpr u32 a64_hvc(u16 imm) { return 0xd400'0002u | u32{imm} << 5; }
inline constexpr u32 kA64LdrX1X0 = 0xf940'0001u;
inline constexpr u32 kA64StrX1X0 = 0xf900'0001u;
inline constexpr u32 kA64BrX0 = 0xd61f'0000u;  ///< BR Xn: 0xd61f0000 | Xn << 5

/// The EL1 code page's first bytes, as words: the image places them at kHostCode, the
/// simulator writes them into its memory there.
struct El1Code {
  static constexpr unsigned kWords = (kStubExec + 4) / 4;
  u32 w[kWords];
};
[[nodiscard]] constexpr El1Code make_el1_code() {
  El1Code c{};
  for (unsigned v = 0; v < 16; ++v) c.w[v * 0x80 / 4] = a64_hvc(kHvcEl1Exception);  // VBAR_EL1 + 0x80 * n
  c.w[kStubRead / 4] = kA64LdrX1X0;
  c.w[kStubRead / 4 + 1] = a64_hvc(kHvcDone);
  c.w[kStubWrite / 4] = kA64StrX1X0;
  c.w[kStubWrite / 4 + 1] = a64_hvc(kHvcDone);
  c.w[kStubCall / 4] = a64_hvc(kHvcCall);
  c.w[kStubCall / 4 + 1] = a64_hvc(kHvcDone);
  c.w[kStubExec / 4] = kA64BrX0;
  return c;
}
inline constexpr El1Code kEl1Code = make_el1_code();
static_assert(a64_hvc(1) == kLanding);

// ---- outcomes -----------------------------------------------------------------------------------
/// MMU fault kinds, named as the reference MMU names them (sim::FaultKind).
enum class Fault : u8 { none, translation, access_flag, permission, address_size, external_abort, other };
[[nodiscard]] constexpr const char* name(Fault f) {
  switch (f) {
    case Fault::none: return "none";
    case Fault::translation: return "translation";
    case Fault::access_flag: return "access flag";
    case Fault::permission: return "permission";
    case Fault::address_size: return "address size";
    case Fault::external_abort: return "external abort";
    case Fault::other: return "other";
  }
  return "?";
}
/// The fault kind and level an abort's DFSC/IFSC reports (ESR_ELx.ISS[5:0], D24.2 ESR_EL2:
/// 0b0000LL address size, 0b0001LL translation, 0b0010LL access flag, 0b0011LL permission,
/// level LL; 0b010000 synchronous External abort, 0b0101LL on a table walk at level LL). The
/// level -1 lookup (FEAT_LPA2, 4K with a 52-bit input address) has codes of its own, outside
/// the LL pattern: 0b101001 address size fault, 0b101011 translation fault, 0b010011
/// synchronous External abort on the walk, all at level -1 (there is no access-flag or
/// permission fault at level -1: it holds no leaf).
constexpr Fault decode_fsc(u64 fsc, int* level) {
  switch (fsc) {
    case 0b101001: *level = -1; return Fault::address_size;
    case 0b101011: *level = -1; return Fault::translation;
    case 0b010011: *level = -1; return Fault::external_abort;
    default: break;
  }
  *level = static_cast<int>(fsc & 3);
  switch (fsc >> 2) {
    case 0b0000: return Fault::address_size;
    case 0b0001: return Fault::translation;
    case 0b0010: return Fault::access_flag;
    case 0b0011: return Fault::permission;
    case 0b0101: return Fault::external_abort;
    default: *level = 0; return Fault::other;
  }
}

/// What happened at one step.
struct Outcome {
  enum Kind : u8 {
    ok,            ///< the access completed (value: what a read returned)
    ret,           ///< the hypercall returned (value: 0 or -errno)
    faulted,       ///< the access faulted to EL2
    fetch_fault,   ///< the EL1 stub could not even be fetched
    not_run,       ///< a guest that no longer runs
    el1_exception, ///< EL1 took an exception of its own (value: ESR_EL1 is not read; 0)
    unexpected,    ///< any other trap (value: ESR_EL2)
  } kind = ok;
  u64 value = 0;
  Fault fault = Fault::none;
  int level = 0;
  u64 addr = 0;  ///< the faulting IPA (stage 2) or VA (the hypervisor's stage 1)
};

/// Whether an outcome is what the step expects.
[[nodiscard]] constexpr bool meets(const Step& s, const Outcome& o) {
  const bool access_addr_ok = o.addr == (s.who == Actor::hyp ? s.addr + kHypVaOffset : s.addr);
  switch (s.expect.kind) {
    case Expect::ok: return o.kind == Outcome::ok;
    case Expect::ok_value: return o.kind == Outcome::ok && o.value == s.expect.value;
    case Expect::ret: return o.kind == Outcome::ret && o.value == s.expect.value;
    case Expect::translation: return o.kind == Outcome::faulted && o.fault == Fault::translation && access_addr_ok;
    case Expect::permission: return o.kind == Outcome::faulted && o.fault == Fault::permission && access_addr_ok;
    case Expect::not_run: return o.kind == Outcome::not_run;
  }
  return false;
}

// ---- one line per check -------------------------------------------------------------------------
/// A fixed-size text buffer (no libc): hyp/line.hpp, shared with the hypervisor.
using hyp::Line;

[[nodiscard]] constexpr const char* actor_name(Actor a) {
  switch (a) {
    case Actor::host: return "host";
    case Actor::hyp: return "hyp";
    case Actor::guest2: return "guest2";
    case Actor::guest3: return "guest3";
    case Actor::vm52: return "vm52";
  }
  return "?";
}
/// x0 of a hypercall: "EPERM" for -EPERM, else the number.
inline Line& ret_text(Line& l, u64 x0) {
  const auto v = static_cast<i64>(x0);
  if (v < 0) return l.str(name(static_cast<Error>(-v)));
  return l.dec(x0);
}

/// "check 4K #12 host write 0x42010000 0x1111 -> ok [pass]" (`run` names the variant)
inline void format_check(Line& l, const char* run, unsigned idx, const Step& s, const Outcome& o) {
  l.str("check ").str(run).str(" #").dec(idx).str(" ").str(actor_name(s.who)).str(" ");
  if (s.op == Op::read) {
    l.str("read ").hex(s.addr);
  } else if (s.op == Op::write) {
    l.str("write ").hex(s.addr).str(" ").hex(s.value);
  } else if (s.op == Op::exec) {
    l.str("exec ").hex(s.addr);
  } else {
    l.str("hvc ").str(name(s.call)).str("(").hex(s.addr);
    if (s.who == Actor::host && s.call != Call::create_guest && s.call != Call::teardown_guest &&
        s.call != Call::reclaim_guest)
      l.str(", ").dec(s.x2).str(", ").dec(s.x3).str(", ").hex(s.x4).str(", ").dec(s.x5);
    l.str(")");
  }
  l.str(" -> ");
  switch (o.kind) {
    case Outcome::ok:
      l.str("ok");
      if (s.op == Op::read) l.str(" ").hex(o.value);
      break;
    case Outcome::ret: ret_text(l.str("ret "), o.value); break;
    case Outcome::faulted:
    case Outcome::fetch_fault:
      l.str(o.kind == Outcome::fetch_fault ? "fetch fault " : "fault ").str(name(o.fault)).str(" level ");
      if (o.level < 0) l.str("-");  // level -1 (FEAT_LPA2)
      l.dec(static_cast<u64>(o.level < 0 ? -o.level : o.level));
      l.str(s.who == Actor::hyp ? " va " : " ipa ").hex(o.addr);
      break;
    case Outcome::not_run: l.str("not run"); break;
    case Outcome::el1_exception: l.str("EL1 exception"); break;
    case Outcome::unexpected: l.str("unexpected trap esr ").hex(o.value); break;
  }
  l.str(meets(s, o) ? " [pass]" : " [FAIL]");
}

// ---- the hypercall handler, shared ------------------------------------------------------------

/// Pages a new guest's memcache is filled with (the host gives them in pKVM; here the
/// hypervisor's pool does).
inline constexpr u32 kGuestMemcachePages = 8;

[[nodiscard]] constexpr u64 to_ret(Error e) { return static_cast<u64>(-static_cast<i64>(code(e))); }
[[nodiscard]] constexpr u64 to_ret(const Status& st) { return st ? 0 : to_ret(st.error()); }
[[nodiscard]] constexpr u64 to_ret(const Result<bool>& r) { return r ? u64{*r} : to_ret(r.error()); }

/// Serves hypercall `r` from `caller` (the host, or a guest) with the ownership layer, as the
/// EL2 image does on HVC #0 and the simulator does for the same step. Returns 0 or -errno (as
/// a u64, the x0 the caller sees).
template <typename MP, typename Plat>
[[nodiscard]] u64 dispatch(MP& mp, Plat& plat, ComponentId caller, const CallRegs& r) {
  const u64 a = r.x[1], n = r.x[2], ipa = r.x[4];
  const auto id = static_cast<ComponentId>(r.x[3]);
  const auto perm = static_cast<pgtable::Perm>(r.x[5]);
  const auto call = static_cast<Call>(r.x[0]);
  if (caller != ownership::kHostId) {
    switch (call) {
      case Call::guest_share_host: return to_ret(mp.guest_share_host(caller, a, n));
      case Call::guest_unshare_host: return to_ret(mp.guest_unshare_host(caller, a, n));
      case Call::guest_relinquish: return to_ret(mp.guest_relinquish(caller, a, n));
      default: return to_ret(Error::einval);
    }
  }
  switch (call) {
    case Call::share_hyp: return to_ret(mp.host_share_hyp(a, n));
    case Call::unshare_hyp: return to_ret(mp.host_unshare_hyp(a, n));
    case Call::donate_hyp: return to_ret(mp.host_donate_hyp(a, n));
    case Call::hyp_donate_host: return to_ret(mp.hyp_donate_host(a, n));
    case Call::hyp_pin: return to_ret(mp.hyp_pin_shared(a, n));
    case Call::hyp_unpin: return to_ret(mp.hyp_unpin_shared(a, n));
    case Call::share_ffa: return to_ret(mp.host_share_ffa(a, n));
    case Call::unshare_ffa: return to_ret(mp.host_unshare_ffa(a, n));
    case Call::create_guest: {
      const auto gid = static_cast<ComponentId>(a);
      Status st = mp.create_guest(gid, static_cast<u16>(r.x[5]));
      if (st) st = mp.guest(gid)->mc.topup(plat, kGuestMemcachePages);
      return to_ret(st);
    }
    case Call::share_guest: return to_ret(mp.host_share_guest(a, n, id, ipa, perm));
    case Call::unshare_guest: return to_ret(mp.host_unshare_guest(static_cast<ComponentId>(a), ipa, 1));
    case Call::donate_guest: return to_ret(mp.host_donate_guest(a, n, id, ipa));
    case Call::lend_guest: return to_ret(mp.host_lend_guest(a, n, id, ipa, perm));
    case Call::reclaim_lent: return to_ret(mp.host_reclaim_lent(a, n));
    case Call::teardown_guest: return to_ret(mp.teardown_guest(static_cast<ComponentId>(a)));
    case Call::reclaim_guest: return to_ret(mp.reclaim_guest(static_cast<ComponentId>(a)));
    case Call::force_reclaim: return to_ret(mp.host_force_reclaim(a));
    case Call::guest_wrprotect: return to_ret(mp.guest_wrprotect(static_cast<ComponentId>(a), ipa, n));
    case Call::guest_relax_perms: return to_ret(mp.guest_relax_perms(static_cast<ComponentId>(a), ipa, perm));
    case Call::guest_test_clear_young:
      return to_ret(mp.guest_test_clear_young(static_cast<ComponentId>(a), ipa, n, r.x[5] != 0));
    case Call::guest_mkyoung: return to_ret(mp.guest_mkyoung(static_cast<ComponentId>(a), ipa));
    default: return to_ret(Error::einval);
  }
}

/// Whether guest `id` exists and runs.
template <typename MP>
[[nodiscard]] bool guest_runs(MP& mp, ComponentId id) {
  const auto* g = mp.guest(id);
  return g != nullptr && g->alive;
}

}  // namespace ptguard::el2test
