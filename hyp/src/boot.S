// ptguard's hypervisor: entry points, exception vectors and the switches between EL2 and the
// host at EL1. Everything else is C++ (main.cpp).
// References: Arm ARM DDI 0487K.a, D1.3.1 (VBAR_EL2 vector table: 16 entries of 0x80 bytes,
// 2 KiB aligned), D1.3.2 (exception entry: ELR_EL2, SPSR_EL2, ESR_EL2), C6.2 (ERET, SMC,
// HLT), and the Arm semihosting specification (HLT #0xF000 on AArch64; SYS_WRITE0 = 0x04,
// SYS_EXIT = 0x18).

// struct BootArgs (main.cpp): the first field is the CPU's stack top.
#define BOOTARGS_STACK_TOP 0
// SCTLR_EL2 with the MMU and caches off, little-endian, no alignment checks: the RES1 bits 29,
// 28, 23, 22, 18, 16, 11, 5, 4 (D24.2 SCTLR_EL2, E2H == 0). EE and A reset to values the
// architecture leaves to the implementation: set them before the first memory access.
#define SCTLR_EL2_MMU_OFF 0x30c50830
// The trap frame: x0..x30 and one pad word, 16-byte aligned.
#define FRAME_SIZE (32 * 8)

  .section .text.boot, "ax"
  .global _start
_start:
  // The primary CPU, started by QEMU's loader at EL2 with the MMU off.
  ldr x1, =SCTLR_EL2_MMU_OFF
  msr sctlr_el2, x1
  isb
  mrs x0, CurrentEL
  cmp x0, #(2 << 2)
  b.ne not_el2
  bl el2_clear_bss             // no stack needed: a leaf
  ldr x1, =hyp_boot_stack_top   // until hyp_enter_host moves to the CPU's own stack
  mov sp, x1
  adr x1, hyp_vectors
  msr vbar_el2, x1
  isb
  bl hyp_main                  // never returns: it enters the host
  b hyp_halt
not_el2:
  mov x0, #2
  bl semihost_exit

// A secondary CPU (PSCI CPU_ON from the relay) or a CPU back from a power-down suspend: at EL2
// with the MMU off, x0 = its struct BootArgs. SCTLR_EL2, the stack and vectors first, then C++.
  .text
  .global hyp_cpu_entry
hyp_cpu_entry:
  ldr x1, =SCTLR_EL2_MMU_OFF
  msr sctlr_el2, x1
  isb
  ldr x1, [x0, #BOOTARGS_STACK_TOP]
  mov sp, x1
  adr x1, hyp_vectors
  msr vbar_el2, x1
  isb
  bl hyp_cpu_main              // never returns
  b hyp_halt

// [[noreturn]] void hyp_park(): a CPU that must not run anything, forever.
  .global hyp_park
hyp_park:
hyp_halt:
  msr daifset, #0xf
  wfi
  b hyp_halt

// [[noreturn]] void hyp_enter_host(u64 entry, u64 arg0, u64 spsr, u64 stack_top): ERET to
// the host at EL1 with x0 = arg0 and every other general-purpose register zero (the arm64 boot
// protocol wants x1..x3 zero; the rest must not leak the hypervisor's values). SP_EL2 is reset
// to the CPU's stack top: every trap from the host starts on an empty stack.
  .global hyp_enter_host
hyp_enter_host:
  mov sp, x3
  msr elr_el2, x0
  msr spsr_el2, x2
  mov x0, x1
  mov x1, xzr
  mov x2, xzr
  mov x3, xzr
  mov x4, xzr
  mov x5, xzr
  mov x6, xzr
  mov x7, xzr
  mov x8, xzr
  mov x9, xzr
  mov x10, xzr
  mov x11, xzr
  mov x12, xzr
  mov x13, xzr
  mov x14, xzr
  mov x15, xzr
  mov x16, xzr
  mov x17, xzr
  mov x18, xzr
  mov x19, xzr
  mov x20, xzr
  mov x21, xzr
  mov x22, xzr
  mov x23, xzr
  mov x24, xzr
  mov x25, xzr
  mov x26, xzr
  mov x27, xzr
  mov x28, xzr
  mov x29, xzr
  mov x30, xzr
  isb
  eret

// hyp_smc, el2_mmu_switch, semihost_write0 and semihost_exit: el2_common.S.

// A synchronous exception from the host (EL1 or EL0, AArch64): save x0..x30 on this CPU's EL2
// stack, let hyp_host_trap (main.cpp) handle it (it may change the saved registers, ELR_EL2 and
// SPSR_EL2), restore and return to the host.
lower_sync:
  sub sp, sp, #FRAME_SIZE
  stp x0, x1, [sp, #0]
  stp x2, x3, [sp, #16]
  stp x4, x5, [sp, #32]
  stp x6, x7, [sp, #48]
  stp x8, x9, [sp, #64]
  stp x10, x11, [sp, #80]
  stp x12, x13, [sp, #96]
  stp x14, x15, [sp, #112]
  stp x16, x17, [sp, #128]
  stp x18, x19, [sp, #144]
  stp x20, x21, [sp, #160]
  stp x22, x23, [sp, #176]
  stp x24, x25, [sp, #192]
  stp x26, x27, [sp, #208]
  stp x28, x29, [sp, #224]
  str x30, [sp, #240]
  mov x0, sp
  bl hyp_host_trap
  ldp x0, x1, [sp, #0]
  ldp x2, x3, [sp, #16]
  ldp x4, x5, [sp, #32]
  ldp x6, x7, [sp, #48]
  ldp x8, x9, [sp, #64]
  ldp x10, x11, [sp, #80]
  ldp x12, x13, [sp, #96]
  ldp x14, x15, [sp, #112]
  ldp x16, x17, [sp, #128]
  ldp x18, x19, [sp, #144]
  ldp x20, x21, [sp, #160]
  ldp x22, x23, [sp, #176]
  ldp x24, x25, [sp, #192]
  ldp x26, x27, [sp, #208]
  ldp x28, x29, [sp, #224]
  ldr x30, [sp, #240]
  add sp, sp, #FRAME_SIZE
  eret

// Anything else is a hypervisor bug or a host doing what HCR_EL2 does not route here:
// hyp_panic (main.cpp) reports it through semihosting and stops QEMU with status 3.
unexpected:
  mrs x1, esr_el2
  mrs x2, elr_el2
  mrs x3, far_el2
  bl hyp_panic_exception
  b hyp_halt

  .macro vector target, kind
  .balign 0x80
  mov x0, #\kind
  b \target
  .endm

// VBAR_EL2 (D1.3.1): current EL with SP_EL0, current EL with SP_ELx, lower EL AArch64,
// lower EL AArch32; each sync, IRQ, FIQ, SError.
  .balign 2048
hyp_vectors:
  vector unexpected, 0
  vector unexpected, 1
  vector unexpected, 2
  vector unexpected, 3
  vector unexpected, 4
  vector unexpected, 5
  vector unexpected, 6
  vector unexpected, 7
  .balign 0x80
  b lower_sync
  vector unexpected, 9
  vector unexpected, 10
  vector unexpected, 11
  vector unexpected, 12
  vector unexpected, 13
  vector unexpected, 14
  vector unexpected, 15

  .bss
  .balign 16
  .skip 16384
hyp_boot_stack_top:
