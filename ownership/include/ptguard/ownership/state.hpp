// Page states: who owns a page and who may touch it, kept in the tables themselves.
//
// The ownership layer gives two software bits (SW0..SW1, reserved through the engine's typed
// layout) a meaning, and uses the owner field of invalid entries (arch/descriptor.hpp):
//
// | entry at component C          | sw | state of the page at C                                |
// |-------------------------------|----|-------------------------------------------------------|
// | valid                         | 00 | owned: C owns it and maps it; nobody else maps it     |
// | valid                         | 01 | shared-owned: C owns it, maps it, and has shared it   |
// | valid                         | 10 | shared-borrowed: C maps a page another one owns       |
// | valid                         | 11 | borrowed: C maps a page lent to it exclusively        |
// | invalid, empty                | -- | no page (in the host's table: owned by the host, not  |
// |                               |    | faulted in yet: the host's table is filled lazily)    |
// | invalid, owner X, sw 00       | 00 | no page: X owns it (host's table only)                |
// | invalid, owner B, sw 11       | 11 | lent: C owns it but lent it to B and cannot reach it  |
// | invalid, poisoned             | -- | poisoned: taken back from a live guest (guest only)   |
//
// The 11 encoding is the one the seed reserved for lending: the borrower maps the page with 11,
// the owner keeps an annotation naming the borrower with 11, so the owner's fault on it is
// refused (EPERM). Owner ids: host 0, hypervisor 1, guests from 2 up (arch::kMaxOwnerId).
#pragma once

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/pgtable/prot.hpp"

namespace ptguard::ownership {

/// The two software bits the ownership layer reserves in every table it keeps.
using PageStateField = pgtable::SwField<0, 2>;
/// The software-bit layout of the ownership layer's tables (one user: the page state).
using Layout = pgtable::SwLayout<PageStateField>;

/// The state of a page at one component (the rows of the table above).
enum class PageState : u8 {
  owned = 0b00,
  shared_owned = 0b01,
  shared_borrowed = 0b10,
  borrowed = 0b11,  ///< mapped by the borrower of a lent page (valid entry, sw 11)
  lent = 0x10,      ///< the owner's side of a lent page (invalid entry, sw 11)
  none = 0x11,      ///< no page (not mapped; for the host: owned by someone else)
  poisoned = 0x12,  ///< taken back from a live guest by a forced reclaim
};

[[nodiscard]] constexpr const char* name(PageState s) {
  switch (s) {
    case PageState::owned: return "owned";
    case PageState::shared_owned: return "shared-owned";
    case PageState::shared_borrowed: return "shared-borrowed";
    case PageState::borrowed: return "borrowed";
    case PageState::lent: return "lent";
    case PageState::none: return "none";
    case PageState::poisoned: return "poisoned";
  }
  return "?";
}

/// Component ids, as written in owner annotations.
using ComponentId = arch::OwnerId;
inline constexpr ComponentId kHostId = 0;
inline constexpr ComponentId kHypId = 1;
inline constexpr ComponentId kFirstGuestId = 2;
inline constexpr ComponentId kMaxGuestId = static_cast<ComponentId>(arch::kMaxOwnerId);

// One named constructor (the software bits) and one predicate per state, so no call site
// spells a mask.
[[nodiscard]] constexpr u8 sw_owned() { return PageStateField::put(0, 0b00); }
[[nodiscard]] constexpr u8 sw_shared_owned() { return PageStateField::put(0, 0b01); }
[[nodiscard]] constexpr u8 sw_shared_borrowed() { return PageStateField::put(0, 0b10); }
[[nodiscard]] constexpr u8 sw_borrowed() { return PageStateField::put(0, 0b11); }
[[nodiscard]] constexpr u8 sw_lent() { return PageStateField::put(0, 0b11); }

/// The annotation the host's table holds for a page owned by `owner` (donated to it).
[[nodiscard]] constexpr u64 annotation_owned_by(ComponentId owner) {
  return arch::InvalidDesc::annotation(owner, sw_owned()).raw();
}
/// The annotation the owner's table holds for a page it lent to `borrower`.
[[nodiscard]] constexpr u64 annotation_lent_to(ComponentId borrower) {
  return arch::InvalidDesc::annotation(borrower, sw_lent()).raw();
}
/// The entry left at a guest address whose page was taken back from the live guest.
[[nodiscard]] constexpr u64 annotation_poisoned() {
  return arch::InvalidDesc::annotation(kHostId, 0).with_poisoned(true).raw();
}

/// The state an entry of a component's table says the page is in (valid: from its software
/// bits; invalid: from the annotation).
[[nodiscard]] constexpr PageState state_of(u64 entry) {
  if (arch::DescValid::get(entry)) return static_cast<PageState>(PageStateField::get(static_cast<u8>(arch::DescSw::get(entry))));
  const arch::InvalidDesc inv(entry);
  if (inv.is_poisoned()) return PageState::poisoned;
  if (PageStateField::get(inv.sw()) == 0b11) return PageState::lent;
  return PageState::none;
}

[[nodiscard]] constexpr bool is_owned(u64 e) { return state_of(e) == PageState::owned && arch::DescValid::get(e); }
[[nodiscard]] constexpr bool is_shared_owned(u64 e) { return state_of(e) == PageState::shared_owned; }
[[nodiscard]] constexpr bool is_shared_borrowed(u64 e) { return state_of(e) == PageState::shared_borrowed; }
[[nodiscard]] constexpr bool is_borrowed(u64 e) { return state_of(e) == PageState::borrowed; }
[[nodiscard]] constexpr bool is_lent(u64 e) { return state_of(e) == PageState::lent; }
[[nodiscard]] constexpr bool is_poisoned(u64 e) { return state_of(e) == PageState::poisoned; }
/// An invalid entry naming `owner` as the page's owner (the host's view of a donated page).
[[nodiscard]] constexpr bool is_owned_by(u64 e, ComponentId owner) { return e == annotation_owned_by(owner); }

static_assert(state_of(annotation_lent_to(7)) == PageState::lent);
static_assert(state_of(annotation_owned_by(kHypId)) == PageState::none);
static_assert(state_of(0) == PageState::none);
static_assert(state_of(annotation_poisoned()) == PageState::poisoned);
static_assert(arch::InvalidDesc(annotation_lent_to(0xffff'fff0u)).owner() == 0xffff'fff0u);

}  // namespace ptguard::ownership
