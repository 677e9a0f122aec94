/* Where things live when ptguard's hypervisor boots Linux on QEMU's virt board: the one place
   that says it. Read by the hypervisor (C++ and assembly), its linker script (through the C
   preprocessor) and tests/hyp/linux_host.sh (which loads the images at these addresses and
   writes the carve-out into the device tree's /reserved-memory). RAM is what the device tree
   says; these addresses must lie in it (the hypervisor checks, and refuses to start the host
   otherwise). */
#ifndef PTGUARD_HYP_LAYOUT_H
#define PTGUARD_HYP_LAYOUT_H

/* The hypervisor's carve-out: its image, stacks, page metadata and table pool. 32 MiB at the
   top of 2 GiB of RAM from 0x4000_0000; 2 MiB aligned so the host's blocks stop at its edge. */
#define HYP_CARVEOUT_BASE 0xBE000000
#define HYP_CARVEOUT_SIZE 0x02000000

/* The host's images, placed by QEMU's generic loader: the kernel Image at a 2 MiB-aligned
   address (Documentation/arch/arm64/booting.rst), its device tree and initramfs above it. */
#define HOST_KERNEL_PA 0x40200000
#define HOST_DTB_PA 0x48000000
#define HOST_DTB_MAX 0x00200000
#define HOST_INITRD_PA 0x48200000

#endif
