// The machine the host runs on, read from its device tree: memory, MMIO, CPUs, reserved memory
// and the PSCI conduit. The hypervisor builds its ownership::MachineDesc from this, so that it
// protects exactly the memory and devices the host is told about, wherever the board puts them.
//
// What counts as MMIO: the translated `reg` of every enabled node (2.3.4 `status`) other than
// memory nodes, /cpus, /chosen, /aliases and /reserved-memory, plus the CPU-side windows of the
// `ranges` of every PCI host bridge (device_type "pci": BARs are assigned inside them at run
// time). Regions are rounded out to whole pages and merged where they touch, because two
// devices that share a page (QEMU's virtio-mmio transports are 512 bytes apart) share its
// stage-2 entry.
//
// Withheld: devices the host could program to write memory behind the stage 2 (bus masters
// that take physical addresses from their registers, with no SMMU in between): QEMU's fw_cfg
// with its DMA interface ("qemu,fw-cfg-mmio") and a GICv3 ITS ("arm,gic-v3-its", whose tables
// live at addresses the host writes into GITS_BASER<n>). They are not the host's MMIO: an
// access faults and the host gets an external abort. (The GICv3 redistributors' LPI tables are
// the same kind of DMA; they exist only with an ITS: boot QEMU with its=off, docs/linux-host.md.)
// Freestanding.
#pragma once

#include "ptguard/hyp/fdt.hpp"
#include "ptguard/ownership/machine.hpp"

namespace ptguard::hyp {

struct HostMachine {
  static constexpr unsigned kMaxMemory = 8, kMaxMmio = 64, kMaxCpus = 16, kMaxReserved = 8;
  ownership::Region memory[kMaxMemory]{};  ///< sorted by base
  unsigned n_memory = 0;
  ownership::MmioRegion mmio[kMaxMmio]{};  ///< sorted, page-rounded, merged; all the host's
  unsigned n_mmio = 0;
  u64 cpu_mpidr[kMaxCpus]{};  ///< the `reg` of each /cpus/cpu node: its MPIDR affinity fields
  unsigned n_cpus = 0;
  ownership::Region reserved_nomap[kMaxReserved]{};  ///< /reserved-memory children with no-map
  unsigned n_reserved_nomap = 0;
  static constexpr unsigned kMaxWithheld = 8;
  ownership::Region withheld[kMaxWithheld]{};  ///< DMA-capable devices kept from the host
  unsigned n_withheld = 0;
  bool psci_smc = false;  ///< /psci `method` is "smc" (false: "hvc" or no PSCI node)
  bool psci_hvc = false;

  /// The CPU index of an MPIDR (affinity fields Aff3..Aff0 compared), or -1.
  [[nodiscard]] int cpu_index(u64 mpidr) const {
    constexpr u64 kAff = 0xff'00ff'ffffull;  // Aff3 [39:32], Aff2..Aff0 [23:0]
    for (unsigned i = 0; i < n_cpus; ++i)
      if ((cpu_mpidr[i] & kAff) == (mpidr & kAff)) return static_cast<int>(i);
    return -1;
  }
  /// Whether [base, base + size) lies inside one /reserved-memory no-map region.
  [[nodiscard]] bool reserved_nomap_covers(u64 base, u64 size) const {
    for (unsigned i = 0; i < n_reserved_nomap; ++i)
      if (reserved_nomap[i].contains(base, size)) return true;
    return false;
  }
};

namespace detail {

template <class R>
void sort_by_base(R* r, unsigned n) {
  for (unsigned i = 1; i < n; ++i) {
    const R x = r[i];
    unsigned j = i;
    while (j > 0 && r[j - 1].base > x.base) {
      r[j] = r[j - 1];
      --j;
    }
    r[j] = x;
  }
}

}  // namespace detail

/// Whether a node is a bus master the hypervisor cannot police (see the header comment).
[[nodiscard]] inline bool dma_capable(const FdtNode& n) {
  const FdtProp c = n.prop("compatible");
  return c.has_string("qemu,fw-cfg-mmio") || c.has_string("arm,gic-v3-its");
}

/// Reads `fdt` into `out`. EINVAL: a malformed blob, no memory node, a region that wraps, MMIO
/// overlapping memory, a memory node overlapping another, #address-cells over 3 or #size-cells
/// over 2 where a `reg` is read; E2BIG: more regions or CPUs than HostMachine holds. `page` (a power of two) is the page size MMIO is rounded to.
[[nodiscard]] inline Status describe_machine(const Fdt& fdt, u64 page, HostMachine* out) {
  HostMachine& m = *out;
  m = HostMachine{};
  Error err{};
  bool failed = false;
  auto bad = [&](Error e) {
    if (!failed) err = e;
    failed = true;
  };
  auto add_mmio = [&](u64 base, u64 size) {
    if (size == 0) return;
    if (base + size < base) return bad(Error::einval);
    if (m.n_mmio == HostMachine::kMaxMmio) return bad(Error::e2big);
    const u64 b = base & ~(page - 1), e = (base + size + page - 1) & ~(page - 1);
    m.mmio[m.n_mmio++] = ownership::MmioRegion{b, e - b, false};
  };
  const Status walked = fdt.walk([&](const FdtPath& path) {
    const int k = path.depth - 1;
    const FdtNode& n = path.node[k];
    if (k == 0) return;
    const char* top = path.node[1].name;
    // Subtrees that hold no devices of the host's.
    if (str_eq(top, "chosen") || str_eq(top, "aliases")) return;
    if (str_eq(top, "cpus")) {
      if (k == 2 && n.prop("device_type").is_string("cpu")) {
        if (m.n_cpus == HostMachine::kMaxCpus) return bad(Error::e2big);
        const FdtProp reg = n.prop("reg");
        const u32 ac = path.address_cells(1);
        if (!reg.present() || ac == 0 || ac > 2) return bad(Error::einval);
        m.cpu_mpidr[m.n_cpus++] = reg.cells(0, ac);
      }
      return;
    }
    if (k == 1 && str_eq(n.name, "psci")) {
      const FdtProp method = n.prop("method");
      m.psci_smc = method.is_string("smc");
      m.psci_hvc = method.is_string("hvc");
      return;
    }
    if (!n.enabled()) return;
    const u32 ac = path.address_cells(k - 1), sc = path.size_cells(k - 1);
    const FdtProp reg = n.prop("reg");
    if (reg.present() && (ac > 3 || sc > 2)) return bad(Error::einval);
    const u32 entry = (ac + sc) * 4;
    const bool withheld = dma_capable(n);
    const bool memory = k == 1 && n.prop("device_type").is_string("memory");
    const bool reserved = str_eq(top, "reserved-memory");
    if (reserved && k == 1) return;  // the container: its children are the regions
    for (u32 off = 0; reg.present() && entry != 0 && off + entry <= reg.size; off += entry) {
      const u64 child = reg.cells(off / 4, ac), size = reg.cells(off / 4 + ac, sc);
      u64 base = 0;
      if (!path.translate(k - 1, child, &base)) break;
      if (size == 0) continue;
      if (base + size < base) return bad(Error::einval);
      if (memory) {
        if (m.n_memory == HostMachine::kMaxMemory) return bad(Error::e2big);
        m.memory[m.n_memory++] = ownership::Region{base, size};
      } else if (reserved) {
        if (!n.has("no-map")) continue;
        if (m.n_reserved_nomap == HostMachine::kMaxReserved) return bad(Error::e2big);
        m.reserved_nomap[m.n_reserved_nomap++] = ownership::Region{base, size};
      } else if (withheld) {
        if (m.n_withheld == HostMachine::kMaxWithheld) return bad(Error::e2big);
        m.withheld[m.n_withheld++] = ownership::Region{base, size};
      } else {
        add_mmio(base, size);
      }
    }
    if (n.prop("device_type").is_string("pci")) {
      // ranges: PCI address (3 cells), CPU address (the bus's parent cells), size (2 cells).
      const FdtProp r = n.prop("ranges");
      const u32 pac = path.address_cells(k), psc = path.size_cells(k);
      if (r.present() && (pac > 3 || psc > 2)) return bad(Error::einval);
      const u32 e = (pac + ac + psc) * 4;
      for (u32 off = 0; r.present() && e != 0 && off + e <= r.size; off += e) {
        const u64 cpu = r.cells(off / 4 + pac, ac), size = r.cells(off / 4 + pac + ac, psc);
        u64 base = 0;
        if (path.translate(k - 1, cpu, &base)) add_mmio(base, size);
      }
    }
  });
  if (!walked) return walked;
  if (failed) return fail(err);
  if (m.n_memory == 0) return fail(Error::einval);

  detail::sort_by_base(m.memory, m.n_memory);
  for (unsigned i = 1; i < m.n_memory; ++i)
    if (m.memory[i].base < m.memory[i - 1].end()) return fail(Error::einval);
  detail::sort_by_base(m.reserved_nomap, m.n_reserved_nomap);

  // Merge MMIO regions that overlap or touch (after rounding, touching means sharing no page
  // but adjacent: merging those too keeps the list short and changes nothing the host sees).
  detail::sort_by_base(m.mmio, m.n_mmio);
  unsigned w = 0;
  for (unsigned i = 0; i < m.n_mmio; ++i) {
    if (w > 0 && m.mmio[i].base <= m.mmio[w - 1].base + m.mmio[w - 1].size) {
      const u64 end = m.mmio[i].base + m.mmio[i].size;
      if (end > m.mmio[w - 1].base + m.mmio[w - 1].size) m.mmio[w - 1].size = end - m.mmio[w - 1].base;
    } else {
      m.mmio[w++] = m.mmio[i];
    }
  }
  m.n_mmio = w;
  // A withheld device must not share a page with the host's MMIO: the page's one stage-2 entry
  // would give the host both.
  for (unsigned i = 0; i < m.n_mmio; ++i) {
    for (unsigned j = 0; j < m.n_withheld; ++j) {
      const ownership::Region& r = m.withheld[j];
      if (m.mmio[i].base < r.end_page(page) && r.first_page(page) < m.mmio[i].base + m.mmio[i].size)
        return fail(Error::einval);
    }
  }
  for (unsigned i = 0; i < m.n_mmio; ++i) {
    for (unsigned j = 0; j < m.n_memory; ++j) {
      const ownership::Region& r = m.memory[j];
      const u64 mb = r.first_page(page), me = r.end_page(page);
      if (m.mmio[i].base < me && mb < m.mmio[i].base + m.mmio[i].size) return fail(Error::einval);
    }
  }
  return {};
}

}  // namespace ptguard::hyp
