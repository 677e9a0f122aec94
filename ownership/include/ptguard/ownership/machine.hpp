// The machine the ownership layer protects: its memory and MMIO regions, the hypervisor's
// carve-out and where the hypervisor maps physical memory; and the per-page array that holds
// what does not fit in a table entry.
#pragma once

#include <span>

#include "ptguard/arch/error.hpp"
#include "ptguard/ownership/state.hpp"

namespace ptguard::ownership {

struct Region {
  u64 base;
  u64 size;
  [[nodiscard]] constexpr bool contains(u64 a) const { return a - base < size; }
  /// Whether [a, a + n) lies inside the region.
  [[nodiscard]] constexpr bool contains(u64 a, u64 n) const {
    return a >= base && n <= size && a - base <= size - n;
  }
  [[nodiscard]] constexpr u64 end() const { return base + size; }
  /// The pages the region touches, [first_page(p), end_page(p)) for page size p: a region's
  /// edges need not be page-aligned (firmware memory maps are not always), and a page it only
  /// partly covers is still memory the host may fault in.
  [[nodiscard]] constexpr u64 first_page(u64 page) const { return base & ~(page - 1); }
  [[nodiscard]] constexpr u64 end_page(u64 page) const { return (end() + page - 1) & ~(page - 1); }
  [[nodiscard]] constexpr u64 pages(u64 page) const { return (end_page(page) - first_page(page)) / page; }
  [[nodiscard]] constexpr bool touches_page(u64 pa, u64 page) const {
    return pa >= first_page(page) && pa < end_page(page);
  }
};

struct MmioRegion {
  u64 base;
  u64 size;
  bool hyp = false;  ///< given to the hypervisor (its UART, say); otherwise the host's
  [[nodiscard]] constexpr Region region() const { return Region{base, size}; }
};

/// The input to setting up (MemProtect::check_machine lists what init accepts; EINVAL
/// otherwise). Memory regions must be sorted, must not share a page with each other or with
/// MMIO, and must lie inside the physical-address range; MMIO regions must not share a page with
/// each other. Memory and host-MMIO edges need not be page-aligned: a partly covered page is
/// one the host may fault in (Linux had to learn this), but no transition takes it (a
/// transition's range must lie inside one region). The hypervisor's MMIO and the carve-out are
/// mapped or annotated whole at set-up, so they must be page-aligned; every page of memory and
/// of the hypervisor's MMIO must have an EL2 address (PA + hyp_va_offset modulo 2^64 inside the
/// EL2 table's VA range, not wrapping inside a region: memory above the 48-bit VA, on a 52-bit
/// CPU, uses a "negative" offset).
struct MachineDesc {
  std::span<const Region> memory;
  std::span<const MmioRegion> mmio;
  Region hyp_carveout;  ///< memory the hypervisor owns from the start (inside `memory`)
  u64 hyp_va_offset;    ///< the hypervisor's VA of physical address pa is pa + hyp_va_offset (mod 2^64)
};

/// What the ownership layer keeps per page of memory, beside the tables.
struct PageMeta {
  u32 guest_shares = 0;   ///< guests the host shares this page with
  u16 hyp_pins = 0;       ///< times the hypervisor pinned it (shared with it)
  u8 flags = 0;           ///< kMetaFfa, kMetaRelinquished
  u8 reserved = 0;
  ComponentId guest = 0;  ///< the guest that owns or borrows it (0: none)
  /// Not this page's: MemProtect's block rebuild keeps here, for the block-sized range of the
  /// host's stage-2 whose first page has index (this index) x (entries per table), the index
  /// of an entry of the table under it (low half: a 2 MiB range's last-level table; high half:
  /// a 1 GiB range's) that was last found not in the default state, and checks it first. A
  /// hint only: checked before it is trusted, so any value is safe.
  u32 rebuild_hint = 0;
  u64 guest_ipa = 0;      ///< where that guest maps it
};
inline constexpr u8 kMetaFfa = 1u << 0;           ///< shared with the secure world
inline constexpr u8 kMetaRelinquished = 1u << 1;  ///< a lent page its borrower gave up

/// Pages of memory a description holds (the size of the PageMeta array it needs).
[[nodiscard]] constexpr u64 memory_pages(const MachineDesc& m, u64 page_size) {
  u64 n = 0;
  for (const Region& r : m.memory) n += r.pages(page_size);
  return n;
}

}  // namespace ptguard::ownership
