// Simulated physical memory: a sparse arena that backs the physical-address ranges a user
// declares, so that tables, guest pages and the reference MMU all work on physical addresses.
//
// Each declared region gets one zero-filled host allocation (the host OS commits pages only
// when touched, so declaring 4 GiB of RAM costs nothing until it is written). Looking up a
// physical address is a short search over the regions, with the last hit cached.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "ptguard/arch/error.hpp"

namespace ptguard::sim {

class PhysMem {
 public:
  PhysMem() = default;
  PhysMem(const PhysMem&) = delete;
  PhysMem& operator=(const PhysMem&) = delete;
  ~PhysMem();

  /// Backs [base, base + size) with zeroed memory.
  /// Errors: EINVAL if base or size is not 4 KiB-aligned, size is zero or the range wraps;
  /// EEXIST if it overlaps a region already declared; ENOMEM if the host cannot reserve it.
  Status add_region(u64 base, u64 size);

  /// Whether every byte of [pa, pa + size) is backed.
  [[nodiscard]] bool backed(u64 pa, u64 size = 1) const;

  /// Host pointer to the byte at `pa`, valid for the rest of its region; nullptr if unbacked.
  [[nodiscard]] std::byte* ptr(u64 pa);
  [[nodiscard]] const std::byte* ptr(u64 pa) const;

  /// The 64-bit little-endian word at an 8-byte aligned `pa`; false if unbacked or unaligned.
  [[nodiscard]] bool read64(u64 pa, u64* out) const;
  /// Writes a 64-bit word; false (and nothing written) if unbacked or unaligned.
  [[nodiscard]] bool write64(u64 pa, u64 value);

  /// Copies bytes in or out; false (and nothing copied) if any byte is unbacked.
  [[nodiscard]] bool read(u64 pa, void* dst, u64 size) const;
  [[nodiscard]] bool write(u64 pa, const void* src, u64 size);
  /// Sets [pa, pa + size) to zero; false if any byte is unbacked.
  [[nodiscard]] bool zero(u64 pa, u64 size);

  struct Region {
    u64 base;
    u64 size;
  };
  /// The declared regions, in ascending address order.
  [[nodiscard]] std::vector<Region> regions() const;

 private:
  struct Backing {
    u64 base;
    u64 size;
    std::byte* host;
  };
  [[nodiscard]] const Backing* find(u64 pa, u64 size) const;
  template <typename Fn>
  bool for_each_piece(u64 pa, u64 size, Fn&& fn) const;

  std::vector<Backing> regions_;  // sorted by base
  mutable std::size_t last_hit_ = 0;
};

}  // namespace ptguard::sim
