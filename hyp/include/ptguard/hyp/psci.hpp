// What the hypervisor does with each SMC or HVC the host makes: the PSCI relay and SMCCC's
// "not supported" for everything else.
//
// Facts (Arm DEN 0022 "Power State Coordination Interface" 1.1, 5.1 function IDs and 5.2 return
// codes; Arm DEN 0028 "SMC Calling Convention" 1.4, 2.5 function identifiers and 7.1
// NOT_SUPPORTED): a function ID's bit 31 says fast call, bit 30 the 64-bit convention (SMC64),
// bits 29:24 the owning service (4: standard secure service, which PSCI is); an unknown
// function returns NOT_SUPPORTED (-1) in w0/x0, and the caller goes on.
//
// The relay's rule: a host CPU may run only behind the hypervisor's stage 2, so the calls that
// start a CPU at an address the host names (CPU_ON, CPU_SUSPEND's power-down entry) are
// forwarded with the hypervisor's own entry point substituted; that entry sets the CPU up at EL2
// first and then enters the host's address at EL1. CPU_SUSPEND always gets the hypervisor's
// entry, whatever its power_state says: only the firmware knows whether a state powers the CPU
// down (the original and the extended StateID formats put StateType in different bits), and a
// CPU that resumed at a host address would run at EL2. Calls that only report or stop something are
// forwarded as they are. Every other PSCI call is answered NOT_SUPPORTED without reaching the
// firmware (SYSTEM_SUSPEND, CPU_FREEZE, MEM_PROTECT, ... would let the host resume or change
// memory behind the hypervisor's back), and PSCI_FEATURES reports exactly that set. Freestanding.
#pragma once

#include "ptguard/arch/bits.hpp"

namespace ptguard::hyp::psci {

// Function IDs (DEN 0022 5.1): 32-bit forms 0x8400_00xx, 64-bit forms 0xC400_00xx.
inline constexpr u32 kVersion = 0x8400'0000;
inline constexpr u32 kCpuSuspend32 = 0x8400'0001, kCpuSuspend64 = 0xC400'0001;
inline constexpr u32 kCpuOff = 0x8400'0002;
inline constexpr u32 kCpuOn32 = 0x8400'0003, kCpuOn64 = 0xC400'0003;
inline constexpr u32 kAffinityInfo32 = 0x8400'0004, kAffinityInfo64 = 0xC400'0004;
inline constexpr u32 kMigrateInfoType = 0x8400'0006;
inline constexpr u32 kSystemOff = 0x8400'0008;
inline constexpr u32 kSystemReset = 0x8400'0009;
inline constexpr u32 kFeatures = 0x8400'000A;

// Return codes (DEN 0022 5.2.2), as the signed values the host reads in x0.
inline constexpr i64 kSuccess = 0;
inline constexpr i64 kNotSupported = -1;
inline constexpr i64 kInvalidParams = -2;
inline constexpr i64 kDenied = -3;
inline constexpr i64 kAlreadyOn = -4;
inline constexpr i64 kOnPending = -5;
inline constexpr i64 kInternalFailure = -6;

/// SMCCC's NOT_SUPPORTED (DEN 0028 7.1): the answer to any function ID nobody implements.
inline constexpr i64 kSmcccNotSupported = -1;

/// What the hypervisor does with a call.
enum class Action : u8 {
  forward,         ///< pass to the firmware unchanged (VERSION, AFFINITY_INFO, CPU_OFF, ...)
  cpu_on,          ///< forward with the hypervisor's entry point and context substituted
  cpu_suspend,     ///< the same, for the power-down case of CPU_SUSPEND
  system_off,      ///< report, then forward (the machine stops)
  system_reset,    ///< report, then forward
  features,        ///< answer PSCI_FEATURES from the relay's own list
  not_supported,   ///< answer -1 without calling anything
};

/// The action for the function ID in w0 of an SMC from the host (`smc` true) or an HVC. PSCI
/// is relayed only on the conduit the device tree gives the host (`psci_conduit_smc`): on the
/// other one a PSCI ID is just an unknown call.
[[nodiscard]] constexpr Action classify(u64 x0, bool smc, bool psci_conduit_smc) {
  // SMCCC 2.5: a function ID is 32 bits; the upper half of x0 is ignored for SMC32 IDs but an
  // SMC64 ID with junk above bit 31 is not a valid call. Compare the whole register.
  if (x0 > 0xffff'ffffu) return Action::not_supported;
  if (smc != psci_conduit_smc) return Action::not_supported;
  switch (static_cast<u32>(x0)) {
    case kVersion:
    case kCpuOff:
    case kAffinityInfo32:
    case kAffinityInfo64:
    case kMigrateInfoType: return Action::forward;
    case kCpuOn32:
    case kCpuOn64: return Action::cpu_on;
    case kCpuSuspend32:
    case kCpuSuspend64: return Action::cpu_suspend;
    case kSystemOff: return Action::system_off;
    case kSystemReset: return Action::system_reset;
    case kFeatures: return Action::features;
    default: return Action::not_supported;
  }
}

/// What PSCI_FEATURES(fid) gets (DEN 0022 5.15): NOT_SUPPORTED for a call the relay refuses;
/// otherwise the firmware's own answer (`ask_firmware`), because only the firmware knows its
/// feature flags (CPU_SUSPEND's power_state format among them: the relay must not guess it).
enum class FeaturesAnswer : u8 { not_supported, ask_firmware };
[[nodiscard]] constexpr FeaturesAnswer features(u64 queried) {
  return classify(queried, true, true) == Action::not_supported ? FeaturesAnswer::not_supported
                                                                  : FeaturesAnswer::ask_firmware;
}

/// Whether a function ID uses the SMC32/HVC32 convention (bit 30 clear, DEN 0028 2.5): its
/// arguments are the low 32 bits of x1..x7, and the upper halves must be ignored (so the
/// relay and the firmware cannot read different values).
[[nodiscard]] constexpr bool is_32bit_call(u64 fid) { return ((fid >> 30) & 1) == 0; }
/// An argument as the call's convention defines it.
[[nodiscard]] constexpr u64 arg(u64 fid, u64 x) { return is_32bit_call(fid) ? (x & 0xffff'ffffu) : x; }

}  // namespace ptguard::hyp::psci
