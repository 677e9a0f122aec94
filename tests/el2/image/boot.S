// Boot, exception vectors and the EL2 <-> EL1 switch of the mini-hypervisor.
// Registers and offsets: Arm ARM DDI 0487K.a, D1.3 (exception entry, VBAR_EL2 vector offsets),
// C5.2 (system registers), D24.2 (SCTLR_EL2, ESR_EL2, ELR_EL2, SPSR_EL2).

// struct El1Frame { u64 x[31]; u64 elr; u64 spsr; }  (image/main.cpp)
#define FRAME_ELR 248
#define FRAME_SPSR 256

  .section .text.boot, "ax"
  .global _start
_start:
  // QEMU virt with virtualization=on and no secure=on starts the -kernel image at EL2.
  mrs x0, CurrentEL
  cmp x0, #(2 << 2)
  b.ne not_el2
  ldr x0, =__stack_top
  mov sp, x0
  bl el2_clear_bss
  adr x0, el2_vectors
  msr vbar_el2, x0
  isb
  bl el2_main
  mov x0, #1
  bl semihost_exit
not_el2:
  mov x0, #1
  bl semihost_exit

// semihost_exit, el2_mmu_switch and hyp_smc: hyp/src/el2_common.S, shared with ptguard's
// hypervisor.
  .text

// struct SmpBoot (main.cpp): what a secondary CPU reads with its MMU (and so its data cache)
// off, cleaned to the point of coherency by CPU 0 before PSCI CPU_ON.
#define SMP_TCR 0
#define SMP_MAIR 8
#define SMP_TTBR0 16
#define SMP_SCTLR 24
// Each secondary CPU's EL2 stack (main.cpp kSmpCpus slots; slot 0, CPU 0's, is unused: CPU 0
// runs on __stack_top).
#define SMP_STACK_SIZE 0x8000
#define SMP_CPUS 4
// SCTLR_EL2 with the MMU and caches off, little-endian, no alignment checks: the RES1 bits 29,
// 28, 23, 22, 18, 16, 11, 5, 4 (D24.2 SCTLR_EL2, E2H == 0). EE resets to an IMPLEMENTATION
// DEFINED value: set it before the first memory access, as hyp/src/boot.S does.
#define SCTLR_EL2_MMU_OFF 0x30c50830

// A secondary CPU, started by CPU 0 with PSCI CPU_ON (main.cpp smp_phase): at EL2 with the
// MMU off, x0 = the context id, its index 1..3. It switches to CPU 0's stage-1 tables before
// it touches memory through the cache (el2_mmu_switch is a leaf that needs no stack), then
// takes its own stack and calls el2_secondary_main(index), which does not return.
  .global el2_secondary_entry
el2_secondary_entry:
  ldr x1, =SCTLR_EL2_MMU_OFF
  msr sctlr_el2, x1
  isb
  cmp x0, #SMP_CPUS
  b.hs el2_park
  cbz x0, el2_park
  mov x19, x0
  adr x1, el2_vectors
  msr vbar_el2, x1
  isb
  adrp x9, el2_smp_boot
  add x9, x9, :lo12:el2_smp_boot
  ldr x0, [x9, #SMP_TCR]
  ldr x1, [x9, #SMP_MAIR]
  ldr x2, [x9, #SMP_TTBR0]
  ldr x3, [x9, #SMP_SCTLR]
  bl el2_mmu_switch
  adrp x1, el2_cpu_stacks
  add x1, x1, :lo12:el2_cpu_stacks
  add x2, x19, #1
  mov x3, #SMP_STACK_SIZE
  madd x1, x2, x3, x1   // the top of slot x19
  mov sp, x1
  mov x0, x19
  bl el2_secondary_main
  // [[noreturn]] void el2_park(): a CPU with nothing more to do, forever (it never takes an
  // interrupt: PSTATE.DAIF masks them all).
  .global el2_park
el2_park:
  msr daifset, #0xf
1:wfe
  b 1b

// u64 hyp_probe_read(u64 va, u64* out) / u64 hyp_probe_write(u64 va, u64 value): one access
// at EL2 that may fault; 0 if it completed, 1 if it faulted (the vector records ESR_EL2 and
// FAR_EL2 in probe_syndrome and resumes at probe_fixup).
  .global hyp_probe_read
hyp_probe_read:
probe_ld:
  ldr x2, [x0]
  str x2, [x1]
  mov x0, #0
  ret
  .global hyp_probe_write
hyp_probe_write:
probe_st:
  str x1, [x0]
  mov x0, #0
  ret
probe_fixup:
  mov x0, #1
  ret

// u64 el1_run(El1Frame* f): enters EL1 with the frame's registers, ELR and SPSR; returns when
// the trap handler (el2_lower_trap) says the EL1 step is over. Callee-saved registers and the
// stack pointer are kept in el2_saved_sp's frame meanwhile.
  .global el1_run
el1_run:
  stp x29, x30, [sp, #-96]!
  stp x19, x20, [sp, #16]
  stp x21, x22, [sp, #32]
  stp x23, x24, [sp, #48]
  stp x25, x26, [sp, #64]
  stp x27, x28, [sp, #80]
  mov x9, sp
  adrp x10, el2_saved_sp
  str x9, [x10, :lo12:el2_saved_sp]
  msr tpidr_el2, x0
  b el1_resume

// Restores the EL1 frame at TPIDR_EL2 and returns to EL1.
el1_resume:
  mrs x0, tpidr_el2
  ldr x2, [x0, #FRAME_ELR]
  msr elr_el2, x2
  ldr x2, [x0, #FRAME_SPSR]
  msr spsr_el2, x2
  ldp x2, x3, [x0, #16]
  ldp x4, x5, [x0, #32]
  ldp x6, x7, [x0, #48]
  ldp x8, x9, [x0, #64]
  ldp x10, x11, [x0, #80]
  ldp x12, x13, [x0, #96]
  ldp x14, x15, [x0, #112]
  ldp x16, x17, [x0, #128]
  ldp x18, x19, [x0, #144]
  ldp x20, x21, [x0, #160]
  ldp x22, x23, [x0, #176]
  ldp x24, x25, [x0, #192]
  ldp x26, x27, [x0, #208]
  ldp x28, x29, [x0, #224]
  ldr x30, [x0, #240]
  ldp x0, x1, [x0]
  eret

// Synchronous exception from EL1 (AArch64): save the frame, let el2_lower_trap decide.
lower_sync:
  stp x0, x1, [sp, #-16]!
  mrs x0, tpidr_el2
  stp x2, x3, [x0, #16]
  stp x4, x5, [x0, #32]
  stp x6, x7, [x0, #48]
  stp x8, x9, [x0, #64]
  stp x10, x11, [x0, #80]
  stp x12, x13, [x0, #96]
  stp x14, x15, [x0, #112]
  stp x16, x17, [x0, #128]
  stp x18, x19, [x0, #144]
  stp x20, x21, [x0, #160]
  stp x22, x23, [x0, #176]
  stp x24, x25, [x0, #192]
  stp x26, x27, [x0, #208]
  stp x28, x29, [x0, #224]
  str x30, [x0, #240]
  ldp x2, x3, [sp], #16
  stp x2, x3, [x0]
  mrs x2, elr_el2
  str x2, [x0, #FRAME_ELR]
  mrs x2, spsr_el2
  str x2, [x0, #FRAME_SPSR]
  bl el2_lower_trap
  cbz x0, el1_resume
  // The step is over: back to el1_run's caller.
  adrp x10, el2_saved_sp
  ldr x9, [x10, :lo12:el2_saved_sp]
  mov sp, x9
  ldp x19, x20, [sp, #16]
  ldp x21, x22, [sp, #32]
  ldp x23, x24, [sp, #48]
  ldp x25, x26, [sp, #64]
  ldp x27, x28, [sp, #80]
  ldp x29, x30, [sp], #96
  ret

// Synchronous exception at EL2: a probe's fault is recorded and skipped; anything else is a
// hypervisor bug (el2_panic prints ESR/ELR/FAR and exits 1).
current_sync:
  mrs x16, elr_el2
  adr x17, probe_ld
  cmp x16, x17
  b.eq 1f
  adr x17, probe_st
  cmp x16, x17
  b.eq 1f
  mrs x0, esr_el2
  mrs x1, elr_el2
  mrs x2, far_el2
  bl el2_panic
1:adrp x16, probe_syndrome
  add x16, x16, :lo12:probe_syndrome
  mrs x17, esr_el2
  str x17, [x16]
  mrs x17, far_el2
  str x17, [x16, #8]
  adr x17, probe_fixup
  msr elr_el2, x17
  eret

other_exception:
  mrs x0, esr_el2
  mrs x1, elr_el2
  mrs x2, far_el2
  bl el2_panic

// VBAR_EL2: 16 entries of 0x80 bytes, 2 KiB aligned (D1.3.1 "Exception vectors").
  .balign 2048
el2_vectors:
  .balign 0x80   // current EL, SP_EL0: sync, irq, fiq, serror
  b other_exception
  .balign 0x80
  b other_exception
  .balign 0x80
  b other_exception
  .balign 0x80
  b other_exception
  .balign 0x80   // current EL, SP_ELx
  b current_sync
  .balign 0x80
  b other_exception
  .balign 0x80
  b other_exception
  .balign 0x80
  b other_exception
  .balign 0x80   // lower EL, AArch64
  b lower_sync
  .balign 0x80
  b other_exception
  .balign 0x80
  b other_exception
  .balign 0x80
  b other_exception
  .balign 0x80   // lower EL, AArch32
  b other_exception
  .balign 0x80
  b other_exception
  .balign 0x80
  b other_exception
  .balign 0x80
  b other_exception

  .bss
  .balign 16
  .global el2_saved_sp
el2_saved_sp: .skip 8
  .global probe_syndrome
probe_syndrome: .skip 16
  .balign 16
el2_cpu_stacks: .skip SMP_STACK_SIZE * SMP_CPUS
