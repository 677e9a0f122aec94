// A reader of flattened device trees (the Devicetree Specification v0.4, chapter 5 "Flattened
// Devicetree (DTB) Format"): what the hypervisor needs to learn the machine it runs on from the
// blob the boot loader gives the host, instead of addresses compiled in.
//
// The blob is big-endian: a 40-byte header (5.2), a structure block of 32-bit tokens (5.4:
// FDT_BEGIN_NODE + name, FDT_PROP + length + name offset + value, FDT_END_NODE, FDT_NOP,
// FDT_END; each item padded to 4 bytes) and a strings block of property names. A node's
// properties come before its subnodes (5.4.2), so when a child is visited every property of
// its ancestors is known: `#address-cells`, `#size-cells` and `ranges` of the parent bus, which
// say how to read the child's `reg` and translate it to a CPU physical address (2.3.5, 2.3.8).
//
// Everything is bounds-checked against the blob's size: a malformed blob is EINVAL, never a
// read past its end (the blob comes from outside the hypervisor). Freestanding; no heap.
#pragma once

#include "ptguard/arch/bits.hpp"
#include "ptguard/arch/error.hpp"

namespace ptguard::hyp {

/// Big-endian 32-bit load from unaligned memory.
[[nodiscard]] constexpr u32 be32(const u8* p) {
  return (u32{p[0]} << 24) | (u32{p[1]} << 16) | (u32{p[2]} << 8) | u32{p[3]};
}

[[nodiscard]] constexpr bool str_eq(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}
/// Whether the first `max` bytes at `a` hold the NUL-terminated string `b` (never reads past
/// `max` bytes of `a`: a strings block need not be terminated).
[[nodiscard]] constexpr bool str_eq_bounded(const char* a, u64 max, const char* b) {
  u64 i = 0;
  for (; i < max && b[i] != 0; ++i)
    if (a[i] != b[i]) return false;
  return i < max && a[i] == 0 && b[i] == 0;
}
/// Whether `s` starts with `prefix`.
[[nodiscard]] constexpr bool starts_with(const char* s, const char* prefix) {
  while (*prefix && *s == *prefix) ++s, ++prefix;
  return *prefix == 0;
}

/// A property's value: `size` bytes at `data` (inside the blob).
struct FdtProp {
  const u8* data = nullptr;
  u32 size = 0;
  [[nodiscard]] constexpr bool present() const { return data != nullptr; }
  /// The i-th 32-bit cell (0 past the end).
  [[nodiscard]] constexpr u32 cell(u32 i) const {
    return (u64{i} + 1) * 4 <= size ? be32(data + u64{i} * 4) : 0;
  }
  /// `n` cells from cell `i` as one number (n is 1 or 2; more cells keep the low 64 bits).
  [[nodiscard]] constexpr u64 cells(u32 i, u32 n) const {
    u64 v = 0;
    for (u32 k = 0; k < n; ++k) v = (v << 32) | cell(i + k);
    return v;
  }
  /// Whether the value is the string `s` (a string property ends with its NUL).
  [[nodiscard]] constexpr bool is_string(const char* s) const {
    if (size == 0 || data[size - 1] != 0) return false;
    return str_eq(reinterpret_cast<const char*>(data), s);
  }
  /// Whether the value, a list of NUL-terminated strings (`compatible`), holds `s`.
  [[nodiscard]] constexpr bool has_string(const char* s) const {
    if (size == 0 || data[size - 1] != 0) return false;
    for (u32 i = 0; i < size;) {
      const char* item = reinterpret_cast<const char*>(data + i);
      if (str_eq(item, s)) return true;
      while (i < size && data[i] != 0) ++i;
      ++i;
    }
    return false;
  }
};

/// A node being visited: its name ("memory@40000000"), depth (the root is 0) and properties.
struct FdtNode {
  const char* name = "";
  int depth = 0;
  // Where the node's properties start in the structure block, and the blob (for lookups).
  const u8* props = nullptr;
  const u8* struct_end = nullptr;
  const char* strings = nullptr;
  u32 strings_size = 0;

  /// The property called `pname`, or one that is not present().
  [[nodiscard]] FdtProp prop(const char* pname) const {
    const u8* p = props;
    while (p + 4 <= struct_end) {
      const u32 tok = be32(p);
      if (tok == kNop) {
        p += 4;
        continue;
      }
      if (tok != kProp || p + 12 > struct_end) break;
      const u32 len = be32(p + 4), nameoff = be32(p + 8);
      const u8* value = p + 12;
      if (len > static_cast<u64>(struct_end - value) || nameoff >= strings_size) break;
      if (str_eq_bounded(strings + nameoff, strings_size - nameoff, pname)) return FdtProp{value, len};
      p = value + ((len + 3) & ~3u);
    }
    return {};
  }
  /// Whether the node has the property (a boolean property like `no-map` has no value).
  [[nodiscard]] bool has(const char* pname) const { return prop(pname).present(); }
  /// A node whose `status` is absent or "okay" (2.3.4); "disabled" devices are not the host's.
  [[nodiscard]] bool enabled() const {
    const FdtProp s = prop("status");
    return !s.present() || s.is_string("okay") || s.is_string("ok");
  }

  static constexpr u32 kBeginNode = 1, kEndNode = 2, kProp = 3, kNop = 4, kEnd = 9;
};

/// A node's ancestors as the walk sees them, root first: the cells and ranges of each bus.
struct FdtPath {
  static constexpr int kMaxDepth = 16;
  FdtNode node[kMaxDepth];
  int depth = 0;  ///< entries in node[] (the visited node is node[depth - 1])

  /// The `#address-cells` / `#size-cells` a node at index i's children use (2.3.5: 2 and 1 when
  /// absent).
  [[nodiscard]] u32 address_cells(int i) const {
    const FdtProp p = node[i].prop("#address-cells");
    return p.present() ? p.cell(0) : 2;
  }
  [[nodiscard]] u32 size_cells(int i) const {
    const FdtProp p = node[i].prop("#size-cells");
    return p.present() ? p.cell(0) : 1;
  }

  /// Translates `addr`, an address in the bus of node[i]'s children, to a CPU physical address
  /// through the `ranges` of node[i] and every ancestor bus (2.3.8). False where a bus has no
  /// `ranges` (its children are not memory-mapped: CPUs, I2C devices) or no range holds it.
  [[nodiscard]] bool translate(int i, u64 addr, u64* out) const {
    for (int b = i; b > 0; --b) {
      const FdtProp r = node[b].prop("ranges");
      if (!r.present()) return false;
      if (r.size == 0) continue;  // identity
      const u32 ca = address_cells(b), pa = address_cells(b - 1), sc = size_cells(b);
      const u32 entry = ca + pa + sc;
      if (entry == 0 || ca > 3 || pa > 2 || sc > 2) return false;
      bool found = false;
      for (u32 e = 0; (e + 1) * entry * 4 <= r.size; ++e) {
        // A PCI child address has 3 cells, the first being flags: compare the low two.
        const u32 skip = ca > 2 ? ca - 2 : 0;
        const u64 child = r.cells(e * entry + skip, ca - skip);
        const u64 parent = r.cells(e * entry + ca, pa);
        const u64 size = r.cells(e * entry + ca + pa, sc);
        if (addr - child < size) {
          addr = parent + (addr - child);
          found = true;
          break;
        }
      }
      if (!found) return false;
    }
    *out = addr;
    return true;
  }
};

/// A validated blob.
class Fdt {
 public:
  static constexpr u32 kMagic = 0xd00d'feed;
  static constexpr u32 kHeaderSize = 40;

  /// Checks the header (5.2) of the blob at `blob`, which must lie in `max_size` readable
  /// bytes. EINVAL: wrong magic, a version this reader does not know (last_comp_version > 17 or
  /// version < 16), or blocks outside the blob's totalsize; E2BIG: totalsize > max_size.
  [[nodiscard]] static Result<Fdt> open(const void* blob, u64 max_size) {
    const u8* b = static_cast<const u8*>(blob);
    if (max_size < kHeaderSize || be32(b) != kMagic) return fail(Error::einval);
    const u32 total = be32(b + 4), off_struct = be32(b + 8), off_strings = be32(b + 12);
    const u32 version = be32(b + 20), last_comp = be32(b + 24);
    const u32 size_strings = be32(b + 32), size_struct = be32(b + 36);
    if (total > max_size) return fail(Error::e2big);
    if (version < 16 || last_comp > 17 || total < kHeaderSize) return fail(Error::einval);
    if (off_struct > total || size_struct > total - off_struct) return fail(Error::einval);
    if (off_strings > total || size_strings > total - off_strings) return fail(Error::einval);
    if ((off_struct & 3) != 0) return fail(Error::einval);
    Fdt f;
    f.blob_ = b;
    f.total_ = total;
    f.struct_ = b + off_struct;
    f.struct_size_ = size_struct;
    f.strings_ = reinterpret_cast<const char*>(b + off_strings);
    f.strings_size_ = size_strings;
    return f;
  }

  [[nodiscard]] u32 total_size() const { return total_; }
  [[nodiscard]] const u8* data() const { return blob_; }

  /// Calls `visit(const FdtPath&)` for every node, parents before children; path.node[path.depth
  /// - 1] is the node. EINVAL for a malformed structure block (bad token, a name or property
  /// running past the block, unbalanced nodes, deeper than FdtPath::kMaxDepth).
  template <class F>
  [[nodiscard]] Status walk(F&& visit) const {
    FdtPath path;
    const u8* p = struct_;
    const u8* const end = struct_ + struct_size_;
    bool done = false;
    bool root_seen = false;
    while (!done) {
      if (p + 4 > end) return fail(Error::einval);
      const u32 tok = be32(p);
      p += 4;
      switch (tok) {
        case FdtNode::kBeginNode: {
          if (path.depth == FdtPath::kMaxDepth || (path.depth == 0 && root_seen)) return fail(Error::einval);
          const char* name = reinterpret_cast<const char*>(p);
          const u8* q = p;
          while (q < end && *q != 0) ++q;
          if (q == end) return fail(Error::einval);
          p = p + (((q - p) + 1 + 3) & ~static_cast<decltype(q - p)>(3));
          if (p > end) return fail(Error::einval);
          FdtNode& n = path.node[path.depth];
          n = FdtNode{name, path.depth, p, end, strings_, strings_size_};
          ++path.depth;
          root_seen = true;
          visit(static_cast<const FdtPath&>(path));
          break;
        }
        case FdtNode::kEndNode:
          if (path.depth == 0) return fail(Error::einval);
          --path.depth;
          break;
        case FdtNode::kProp: {
          if (p + 8 > end) return fail(Error::einval);
          const u32 len = be32(p);
          p += 8;
          if (len > static_cast<u64>(end - p)) return fail(Error::einval);
          p += (len + 3) & ~3u;
          if (p > end) return fail(Error::einval);
          break;
        }
        case FdtNode::kNop:
          break;
        case FdtNode::kEnd:
          done = true;
          break;
        default:
          return fail(Error::einval);
      }
    }
    if (path.depth != 0 || !root_seen) return fail(Error::einval);
    return {};
  }

 private:
  const u8* blob_ = nullptr;
  u32 total_ = 0;
  const u8* struct_ = nullptr;
  u32 struct_size_ = 0;
  const char* strings_ = nullptr;
  u32 strings_size_ = 0;
};

}  // namespace ptguard::hyp
