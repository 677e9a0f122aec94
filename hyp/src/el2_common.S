// EL2 routines that ptguard's hypervisor (hyp/src/boot.S) and the EL2 test image
// (tests/el2/image/boot.S) both need: the MMU switch, the SMC to the firmware and semihosting.
// Arm ARM DDI 0487K.a, D24.2 (SCTLR_EL2, TCR_EL2, MAIR_EL2, TTBR0_EL2), C5.5 (TLBI ALLE2); the
// Arm semihosting specification (HLT #0xF000 on AArch64; SYS_WRITE0 = 0x04, SYS_EXIT = 0x18).
  .text

// void el2_mmu_switch(u64 tcr, u64 mair, u64 ttbr0, u64 sctlr): from identity-mapped code, stage
// 1 off (SCTLR_EL2.M = 0), new TCR_EL2 / MAIR_EL2 / TTBR0_EL2, every EL2 TLB entry of this CPU
// invalidated, then SCTLR_EL2 written whole (QEMU resets it to 0).
  .global el2_mmu_switch
el2_mmu_switch:
  mrs x4, sctlr_el2
  bic x4, x4, #1
  msr sctlr_el2, x4
  isb
  msr mair_el2, x1
  msr tcr_el2, x0
  msr ttbr0_el2, x2
  isb
  tlbi alle2
  dsb ish
  isb
  msr sctlr_el2, x3
  isb
  ret

// u64 hyp_smc(u64 x0, u64 x1, u64 x2, u64 x3): an SMC to the firmware (QEMU's PSCI), result
// in x0 (C6.2 SMC; SMC Calling Convention, Arm DEN 0028). SMCCC lets the callee change
// x4-x17: they are caller-saved in the AAPCS64 already. The hypervisor relays the host's PSCI
// calls with it; the test image starts its secondary CPUs with it (PSCI CPU_ON).
  .global hyp_smc
hyp_smc:
  smc #0
  ret

// void el2_clear_bss(void): zeroes [__bss_start, __bss_end) (both 8-byte aligned by the linker
// scripts). A leaf that touches only x0 and x1: callable before the stack is set, with the MMU
// off.
  .global el2_clear_bss
el2_clear_bss:
  ldr x0, =__bss_start
  ldr x1, =__bss_end
1:cmp x0, x1
  b.hs 2f
  str xzr, [x0], #8
  b 1b
2:ret

// void semihost_write0(const char* s): SYS_WRITE0, the string to QEMU's semihosting console.
  .global semihost_write0
semihost_write0:
  mov x1, x0
  mov w0, #0x04
  hlt #0xf000
  ret

// [[noreturn]] void semihost_exit(u64 status): SYS_EXIT with ADP_Stopped_ApplicationExit
// (0x20026), so QEMU exits with `status`.
  .global semihost_exit
semihost_exit:
  sub sp, sp, #16
  mov x1, #0x0026
  movk x1, #0x2, lsl #16
  stp x1, x0, [sp]
  mov x1, sp
  mov w0, #0x18
  hlt #0xf000
  b .
