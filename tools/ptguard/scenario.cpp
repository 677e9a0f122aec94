#include "scenario.hpp"

#include <fmt/format.h>
#include <fmt/ostream.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "ownership_map.hpp"

namespace ptguard::tools {

using namespace ptguard::ownership;

// ---------------------------------------------------------------------------------------------
// Statements
// ---------------------------------------------------------------------------------------------

enum class Op {
  // machine description (before boot)
  ram, mmio, carveout, pool, hyp_offset, cpu, boot,
  // set-up
  finalize, setup_share_hyp, hyp_map_private,
  // host <-> hypervisor, secure world
  host_share_hyp, host_unshare_hyp, hyp_pin_shared, hyp_unpin_shared, host_donate_hyp, hyp_donate_host,
  host_share_ffa, host_unshare_ffa,
  // guests
  create_guest, guest_memcache, host_share_guest, host_unshare_guest, host_donate_guest, guest_share_host,
  guest_unshare_host, host_lend_guest, guest_relinquish, host_reclaim_lent, teardown_guest, reclaim_guest,
  guest_reclaim_page, host_force_reclaim, guest_relax_perms, guest_wrprotect, guest_test_young, guest_mkyoung,
  // faults and accesses
  host_fault, access, fail_alloc,
  // assertions and output
  page, guest_page, invariants, map, svg, echo,
};

struct Expect {
  enum Kind { ok, error, fault, young, old } kind = ok;
  Error err = Error::einval;
  std::optional<sim::FaultKind> fault_kind;
  std::optional<int> level;
  std::optional<u64> pa;
  std::string text;
};

struct PageCheck {
  enum What { host, hyp, guest, owner, pins, shares, secure } what = host;
  ComponentId guest_id = 0;
  PageState state = PageState::none;
  u64 value = 0;
  std::string text;
};

struct Statement {
  Op op{};
  int line = 0;
  std::string text;  // the operation as written (without the expectation and comment)
  u64 pa = 0, size = 0, ipa = 0, value = 0;
  ComponentId guest = 0;
  pgtable::Perm perm = pgtable::kPermRWX;
  ComponentId who = kHostId;  // access: the component
  sim::Access access = sim::Access::read;
  bool flag = false;          // boot setup, mmio hyp, test-young clear, access va, map/page range given
  bool fault_in = true;
  std::optional<u32> pages;   // guest-memcache
  std::string str;            // mmio name, echo text, svg path
  std::vector<PageCheck> checks;
  PageState state = PageState::none;  // guest-page
  int fail_mode = 0;                  // fail-alloc: 0 off, 1 nth, 2 after
  std::optional<Expect> expect;
};

// A number: decimal or 0x hex, '_' separators, an optional size suffix K, M, G, T.
std::optional<u64> parse_number(const std::string& s, std::string* why) {
  std::string t;
  for (char c : s)
    if (c != '_' && c != '\'') t += c;
  if (t.empty()) {
    *why = "expected a number";
    return std::nullopt;
  }
  u64 mult = 1;
  const char last = static_cast<char>(std::toupper(static_cast<unsigned char>(t.back())));
  const bool hex = t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X');
  if (!hex || last == 'K' || last == 'M' || last == 'G' || last == 'T') {
    switch (last) {
      case 'K': mult = u64{1} << 10; break;
      case 'M': mult = u64{1} << 20; break;
      case 'G': mult = u64{1} << 30; break;
      case 'T': mult = u64{1} << 40; break;
      default: break;
    }
    if (mult != 1 && !hex) t.pop_back();
    if (mult != 1 && hex) mult = 1;  // 0x...G is not a hex digit: caught below
  }
  u64 v = 0;
  std::size_t i = 0;
  const unsigned base = hex ? 16 : 10;
  if (hex) i = 2;
  if (i >= t.size()) {
    *why = fmt::format("'{}' is not a number", s);
    return std::nullopt;
  }
  for (; i < t.size(); ++i) {
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(t[i])));
    unsigned d;
    if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
    else if (hex && c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
    else {
      *why = fmt::format("'{}' is not a number (decimal, 0x hex, optional K/M/G/T suffix)", s);
      return std::nullopt;
    }
    if (v > (~u64{0} - d) / base) {
      *why = fmt::format("'{}' does not fit in 64 bits", s);
      return std::nullopt;
    }
    v = v * base + d;
  }
  if (mult != 1 && v > ~u64{0} / mult) {
    *why = fmt::format("'{}' does not fit in 64 bits", s);
    return std::nullopt;
  }
  return v * mult;
}

namespace {

bool is_machine_op(Op op) {
  return op == Op::ram || op == Op::mmio || op == Op::carveout || op == Op::pool || op == Op::hyp_offset || op == Op::cpu;
}

// ---------------------------------------------------------------------------------------------
// Lexing and parsing
// ---------------------------------------------------------------------------------------------

struct Token {
  std::string text;
  int col = 0;  // 1-based
};

struct ParseError {
  int col;
  int len;
  std::string msg;
};

std::vector<Token> tokenize(std::string_view line) {
  std::vector<Token> out;
  std::size_t i = 0;
  while (i < line.size()) {
    if (line[i] == '#') break;
    if (std::isspace(static_cast<unsigned char>(line[i])) != 0) {
      ++i;
      continue;
    }
    const std::size_t b = i;
    while (i < line.size() && line[i] != '#' && std::isspace(static_cast<unsigned char>(line[i])) == 0) ++i;
    out.push_back(Token{std::string(line.substr(b, i - b)), static_cast<int>(b) + 1});
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool looks_numeric(const std::string& s) { return !s.empty() && std::isdigit(static_cast<unsigned char>(s[0])) != 0; }

std::optional<PageState> parse_state(const std::string& s) {
  static const std::pair<const char*, PageState> kStates[] = {
      {"owned", PageState::owned},         {"shared-owned", PageState::shared_owned},
      {"shared-borrowed", PageState::shared_borrowed}, {"lent", PageState::lent},
      {"borrowed", PageState::borrowed},   {"none", PageState::none},
      {"poisoned", PageState::poisoned},   {"-", PageState::none}};
  for (const auto& [n, st] : kStates)
    if (s == n) return st;
  return std::nullopt;
}

std::optional<Error> parse_errno(const std::string& s) {
  static const Error kAll[] = {Error::eperm,  Error::enoent, Error::eagain, Error::enomem,     Error::ebusy,
                               Error::eexist, Error::einval, Error::erange, Error::e2big,      Error::eopnotsupp,
                               Error::ehwpoison};
  for (Error e : kAll)
    if (s == name(e)) return e;
  return std::nullopt;
}

std::optional<sim::FaultKind> parse_fault_kind(const std::string& s) {
  if (s == "translation") return sim::FaultKind::translation;
  if (s == "permission") return sim::FaultKind::permission;
  if (s == "access-flag") return sim::FaultKind::access_flag;
  if (s == "address-size") return sim::FaultKind::address_size;
  if (s == "external-abort") return sim::FaultKind::external_abort;
  return std::nullopt;
}

struct OpName {
  const char* name;
  Op op;
};
constexpr OpName kOps[] = {
    {"ram", Op::ram},
    {"mmio", Op::mmio},
    {"carveout", Op::carveout},
    {"pool", Op::pool},
    {"hyp-offset", Op::hyp_offset},
    {"cpu", Op::cpu},
    {"boot", Op::boot},
    {"finalize", Op::finalize},
    {"setup-share-hyp", Op::setup_share_hyp},
    {"hyp-map-private", Op::hyp_map_private},
    {"host-share-hyp", Op::host_share_hyp},
    {"host-unshare-hyp", Op::host_unshare_hyp},
    {"hyp-pin-shared", Op::hyp_pin_shared},
    {"hyp-pin", Op::hyp_pin_shared},
    {"hyp-unpin-shared", Op::hyp_unpin_shared},
    {"hyp-unpin", Op::hyp_unpin_shared},
    {"host-donate-hyp", Op::host_donate_hyp},
    {"hyp-donate-host", Op::hyp_donate_host},
    {"host-share-ffa", Op::host_share_ffa},
    {"host-unshare-ffa", Op::host_unshare_ffa},
    {"create-guest", Op::create_guest},
    {"guest-memcache", Op::guest_memcache},
    {"host-share-guest", Op::host_share_guest},
    {"host-unshare-guest", Op::host_unshare_guest},
    {"host-donate-guest", Op::host_donate_guest},
    {"guest-share-host", Op::guest_share_host},
    {"guest-unshare-host", Op::guest_unshare_host},
    {"host-lend-guest", Op::host_lend_guest},
    {"guest-relinquish", Op::guest_relinquish},
    {"host-reclaim-lent", Op::host_reclaim_lent},
    {"teardown-guest", Op::teardown_guest},
    {"reclaim-guest", Op::reclaim_guest},
    {"guest-reclaim-page", Op::guest_reclaim_page},
    {"host-force-reclaim", Op::host_force_reclaim},
    {"guest-relax-perms", Op::guest_relax_perms},
    {"guest-wrprotect", Op::guest_wrprotect},
    {"guest-test-young", Op::guest_test_young},
    {"guest-test-clear-young", Op::guest_test_young},
    {"guest-mkyoung", Op::guest_mkyoung},
    {"host-fault", Op::host_fault},
    {"access", Op::access},
    {"fail-alloc", Op::fail_alloc},
    {"page", Op::page},
    {"invariants", Op::invariants},
    {"map", Op::map},
    {"svg", Op::svg},
    {"echo", Op::echo},
};

// A closest-name suggestion for an unknown operation.
std::string suggest(const std::string& w) {
  std::size_t best = 99;
  const char* out = nullptr;
  for (const OpName& o : kOps) {
    const std::string n = o.name;
    // Levenshtein distance.
    std::vector<std::size_t> prev(n.size() + 1), cur(n.size() + 1);
    for (std::size_t j = 0; j <= n.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= w.size(); ++i) {
      cur[0] = i;
      for (std::size_t j = 1; j <= n.size(); ++j)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (w[i - 1] == n[j - 1] ? 0 : 1)});
      std::swap(prev, cur);
    }
    if (prev[n.size()] < best) {
      best = prev[n.size()];
      out = o.name;
    }
  }
  if (out != nullptr && best <= 4) return fmt::format(" (did you mean '{}'?)", out);
  return "";
}

class LineParser {
 public:
  LineParser(const std::vector<Token>& toks, std::size_t end, int line_len)
      : toks_(toks), end_(end), line_len_(line_len) {}

  [[nodiscard]] bool done() const { return i_ >= end_; }
  [[nodiscard]] const Token* peek() const { return done() ? nullptr : &toks_[i_]; }
  const Token& next(const char* what) {
    if (done()) throw ParseError{line_len_ + 1, 1, fmt::format("expected {}", what)};
    return toks_[i_++];
  }
  // An optional filler word ("to", "at", "with") for readability.
  void filler(const char* w) {
    if (!done() && lower(toks_[i_].text) == w) ++i_;
  }
  bool keyword(const char* w) {
    if (!done() && lower(toks_[i_].text) == w) {
      ++i_;
      return true;
    }
    return false;
  }
  u64 number(const char* what) {
    const Token& t = next(what);
    std::string why;
    const std::optional<u64> v = parse_number(t.text, &why);
    if (!v) throw ParseError{t.col, static_cast<int>(t.text.size()), fmt::format("{}: {}", what, why)};
    return *v;
  }
  // A size in bytes ("16K", "0x4000", "4 pages"): a whole, non-zero number of pages.
  u64 size_value(const Token& t, u64 v) {
    if (keyword("pages") || keyword("page")) {
      if (v == 0 || v > (~u64{0} >> 12)) throw ParseError{t.col, static_cast<int>(t.text.size()), "bad page count"};
      return v * World::kPage;
    }
    if (v == 0 || v % World::kPage != 0)
      throw ParseError{t.col, static_cast<int>(t.text.size()),
                       fmt::format("size '{}' is not a whole number of 4K pages (write e.g. 8K or '2 pages')", t.text)};
    return v;
  }
  u64 size(const char* what) {
    const std::size_t at = i_;
    const u64 v = number(what);
    return size_value(toks_[at], v);
  }
  // An optional size: present when the next word is a number.
  u64 opt_size() {
    if (done() || !looks_numeric(toks_[i_].text)) return World::kPage;
    return size("a size");
  }
  ComponentId guest() {
    const Token& t = next("a guest (guest:N)");
    return guest_of(t);
  }
  static ComponentId guest_of(const Token& t) {
    const std::string s = lower(t.text);
    if (s.rfind("guest:", 0) != 0)
      throw ParseError{t.col, static_cast<int>(t.text.size()),
                       fmt::format("'{}' is not a guest (write guest:N, N from 2)", t.text)};
    std::string why;
    const std::optional<u64> v = parse_number(s.substr(6), &why);
    if (!v || *v < kFirstGuestId || *v > kMaxGuestId)
      throw ParseError{t.col, static_cast<int>(t.text.size()),
                       fmt::format("'{}': guest ids run from 2 to {:#x}", t.text, kMaxGuestId)};
    return static_cast<ComponentId>(*v);
  }
  static bool is_guest(const Token& t) { return lower(t.text).rfind("guest:", 0) == 0; }
  // A component: host, hyp, guest:N.
  ComponentId component() {
    const Token& t = next("a component (host, hyp or guest:N)");
    const std::string s = lower(t.text);
    if (s == "host") return kHostId;
    if (s == "hyp") return kHypId;
    if (is_guest(t)) return guest_of(t);
    throw ParseError{t.col, static_cast<int>(t.text.size()),
                     fmt::format("unknown component '{}' (host, hyp or guest:N)", t.text)};
  }
  static std::optional<pgtable::Perm> perm_of(const std::string& s0) {
    const std::string s = lower(s0);
    if (s == "none" || s == "---") return pgtable::kPermNone;
    u8 p = 0;
    for (char c : s) {
      if (c == 'r') p |= pgtable::kPermR;
      else if (c == 'w') p |= pgtable::kPermW;
      else if (c == 'x') p |= pgtable::kPermX;
      else if (c == '-') continue;
      else return std::nullopt;
    }
    if (s.empty()) return std::nullopt;
    return static_cast<pgtable::Perm>(p);
  }
  pgtable::Perm perm() {
    const Token& t = next("permissions (r, rw, rx, rwx)");
    const std::optional<pgtable::Perm> p = perm_of(t.text);
    if (!p) throw ParseError{t.col, static_cast<int>(t.text.size()),
                             fmt::format("'{}' is not a permission (r, rw, rx, rwx, ...)", t.text)};
    return *p;
  }
  std::optional<pgtable::Perm> opt_perm() {
    if (done()) return std::nullopt;
    const std::optional<pgtable::Perm> p = perm_of(toks_[i_].text);
    if (p) ++i_;
    return p;
  }
  void end() {
    if (!done()) {
      const Token& t = toks_[i_];
      throw ParseError{t.col, static_cast<int>(t.text.size()), fmt::format("unexpected '{}'", t.text)};
    }
  }
  [[nodiscard]] std::size_t pos() const { return i_; }
  [[nodiscard]] const Token& at(std::size_t k) const { return toks_[k]; }

 private:
  const std::vector<Token>& toks_;
  std::size_t i_ = 1;
  std::size_t end_;
  int line_len_;
};

void check_range(const Token& t, u64 base, u64 size) {
  if (base + size < base)
    throw ParseError{t.col, static_cast<int>(t.text.size()),
                     fmt::format("range {:#x} + {:#x} runs past the end of the address space", base, size)};
}

Expect parse_expect(const std::vector<Token>& toks, std::size_t from, int line_len) {
  Expect e;
  if (from >= toks.size()) throw ParseError{line_len + 1, 1, "expected an outcome after 'expect' (ok, EPERM, fault ...)"};
  for (std::size_t k = from; k < toks.size(); ++k) e.text += (k == from ? "" : " ") + toks[k].text;
  const Token& t = toks[from];
  std::size_t k = from + 1;
  const auto more = [&](const char* what) -> const Token& {
    if (k >= toks.size()) throw ParseError{line_len + 1, 1, fmt::format("expected {}", what)};
    return toks[k++];
  };
  const std::string w = lower(t.text);
  if (w == "ok") {
    e.kind = Expect::ok;
  } else if (w == "young" || w == "old") {
    e.kind = w == "young" ? Expect::young : Expect::old;
  } else if (w == "fault") {
    e.kind = Expect::fault;
    if (k < toks.size() && lower(toks[k].text) != "level") {
      const Token& f = toks[k++];
      e.fault_kind = parse_fault_kind(lower(f.text));
      if (!e.fault_kind)
        throw ParseError{f.col, static_cast<int>(f.text.size()),
                         fmt::format("unknown fault kind '{}' (translation, permission, access-flag, address-size, "
                                     "external-abort)",
                                     f.text)};
    }
  } else if (const std::optional<Error> err = parse_errno(t.text)) {
    e.kind = Expect::error;
    e.err = *err;
  } else {
    throw ParseError{t.col, static_cast<int>(t.text.size()),
                     fmt::format("unknown outcome '{}' (ok, an errno name like EPERM, fault ..., young, old)", t.text)};
  }
  while (k < toks.size()) {
    const Token& kw = toks[k++];
    const std::string s = lower(kw.text);
    std::string why;
    if (s == "level" && (e.kind == Expect::fault || e.kind == Expect::ok)) {
      const Token& n = more("a level (0-3)");
      const std::optional<u64> v = parse_number(n.text, &why);
      if (!v || *v > 3) throw ParseError{n.col, static_cast<int>(n.text.size()), "a level is 0, 1, 2 or 3"};
      e.level = static_cast<int>(*v);
    } else if (s == "pa" && e.kind == Expect::ok) {
      const Token& n = more("an address");
      const std::optional<u64> v = parse_number(n.text, &why);
      if (!v) throw ParseError{n.col, static_cast<int>(n.text.size()), why};
      e.pa = *v;
    } else {
      throw ParseError{kw.col, static_cast<int>(kw.text.size()), fmt::format("unexpected '{}' in the expectation", kw.text)};
    }
  }
  return e;
}

void parse_page_checks(LineParser& p, Statement& s) {
  if (p.done()) throw ParseError{0, 1, "expected what to check, e.g. host=owned hyp=none pins=0"};
  while (!p.done()) {
    const Token& t = p.next("a check");
    const std::size_t eq = t.text.find('=');
    if (eq == std::string::npos)
      throw ParseError{t.col, static_cast<int>(t.text.size()),
                       fmt::format("'{}': write key=value (host=owned, hyp=shared-borrowed, guest:2=none, owner=host, "
                                   "pins=1, shares=2, secure=none)",
                                   t.text)};
    const std::string key = lower(t.text.substr(0, eq)), val = lower(t.text.substr(eq + 1));
    const int vcol = t.col + static_cast<int>(eq) + 1;
    const int vlen = std::max(1, static_cast<int>(val.size()));
    PageCheck c;
    c.text = t.text;
    const auto state = [&]() {
      const std::optional<PageState> st = parse_state(val);
      if (!st)
        throw ParseError{vcol, vlen,
                         fmt::format("unknown state '{}' (owned, shared-owned, shared-borrowed, lent, borrowed, none, "
                                     "poisoned)",
                                     val)};
      return *st;
    };
    std::string why;
    if (key == "host") {
      c.what = PageCheck::host;
      c.state = state();
    } else if (key == "hyp") {
      c.what = PageCheck::hyp;
      c.state = state();
    } else if (key == "secure" || key == "ffa") {
      c.what = PageCheck::secure;
      if (val == "yes" || val == "shared-borrowed") c.value = 1;
      else if (val == "no" || val == "none" || val == "-") c.value = 0;
      else throw ParseError{vcol, vlen, "secure= takes shared-borrowed or none (ffa= yes or no)"};
    } else if (key.rfind("guest:", 0) == 0) {
      c.what = PageCheck::guest;
      c.guest_id = LineParser::guest_of(Token{t.text.substr(0, eq), t.col});
      c.state = state();
    } else if (key == "owner") {
      c.what = PageCheck::owner;
      if (val == "host") c.value = kHostId;
      else if (val == "hyp") c.value = kHypId;
      else c.value = LineParser::guest_of(Token{val, vcol});
    } else if (key == "pins" || key == "shares") {
      c.what = key == "pins" ? PageCheck::pins : PageCheck::shares;
      const std::optional<u64> v = parse_number(val, &why);
      if (!v) throw ParseError{vcol, vlen, why};
      c.value = *v;
    } else {
      throw ParseError{t.col, static_cast<int>(eq),
                       fmt::format("unknown key '{}' (host, hyp, guest:N, secure, owner, pins, shares)", key)};
    }
    s.checks.push_back(c);
  }
}

// Parses one line's tokens (without the expectation) into `s`.
void parse_statement(const std::vector<Token>& toks, std::size_t end, int line_len, Statement& s) {
  const Token& head = toks[0];
  const std::string w = lower(head.text);
  const OpName* found = nullptr;
  for (const OpName& o : kOps)
    if (w == o.name) found = &o;
  if (found == nullptr)
    throw ParseError{head.col, static_cast<int>(head.text.size()),
                     fmt::format("unknown operation '{}'{}", head.text, suggest(w))};
  s.op = found->op;
  LineParser p(toks, end, line_len);
  const auto pa_range = [&](const char* what) {
    const std::size_t at = p.pos();
    s.pa = p.number(what);
    s.size = p.opt_size();
    check_range(p.at(at), s.pa, s.size);
  };
  const auto ipa_range = [&]() {
    s.guest = p.guest();
    p.filler("at");
    const std::size_t at = p.pos();
    s.ipa = p.number("a guest address (IPA)");
    s.size = p.opt_size();
    check_range(p.at(at), s.ipa, s.size);
  };
  switch (s.op) {
    case Op::ram:
    case Op::carveout:
    case Op::pool: {
      const std::size_t at = p.pos();
      s.pa = p.number("a base address");
      s.size = p.size("a size");
      check_range(p.at(at), s.pa, s.size);
      break;
    }
    case Op::mmio: {
      const std::size_t at = p.pos();
      s.pa = p.number("a base address");
      s.size = p.size("a size");
      check_range(p.at(at), s.pa, s.size);
      while (!p.done()) {
        const Token& t = p.next("a name or 'hyp'");
        if (lower(t.text) == "hyp") s.flag = true;
        else if (s.str.empty()) s.str = t.text;
        else throw ParseError{t.col, static_cast<int>(t.text.size()), fmt::format("unexpected '{}'", t.text)};
      }
      break;
    }
    case Op::hyp_offset: {
      // "-VALUE" is 2^64 - VALUE: VA = PA + offset modulo 2^64, so RAM above the 48-bit VA (a
      // 52-bit machine's) maps below it.
      const Token* t = p.peek();
      if (t != nullptr && t->text.size() > 1 && t->text[0] == '-') {
        std::string why;
        const std::optional<u64> v = parse_number(t->text.substr(1), &why);
        if (!v) throw ParseError{t->col, static_cast<int>(t->text.size()), fmt::format("the hypervisor's VA offset: {}", why)};
        (void)p.next("");
        s.value = u64{0} - *v;
      } else {
        s.value = p.number("the hypervisor's VA offset");
      }
      break;
    }
    case Op::cpu: {
      // cpu pa-bits N [no-lpa2]: the CPU's PARange and, at 52, whether it has FEAT_LPA2/LPA.
      const Token& k = p.next("'pa-bits'");
      if (lower(k.text) != "pa-bits")
        throw ParseError{k.col, static_cast<int>(k.text.size()), fmt::format("unknown cpu property '{}' (write `cpu pa-bits N`)", k.text)};
      const Token& n = p.next("a PA size in bits");
      std::string why;
      const std::optional<u64> v = parse_number(n.text, &why);
      // ID_AA64MMFR0_EL1.PARange's sizes (D24.2): 32, 36, 40, 42, 44, 48, 52.
      if (!v || (*v != 32 && *v != 36 && *v != 40 && *v != 42 && *v != 44 && *v != 48 && *v != 52))
        throw ParseError{n.col, static_cast<int>(n.text.size()),
                         fmt::format("'{}' is not a PA size the architecture defines (32, 36, 40, 42, 44, 48 or 52)", n.text)};
      s.value = *v;
      s.flag = true;  // FEAT_LPA2 / FEAT_LPA with a 52-bit PA
      if (p.keyword("no-lpa2")) {
        if (*v != 52) throw ParseError{n.col, static_cast<int>(n.text.size()), "no-lpa2 means something only with pa-bits 52"};
        s.flag = false;
      }
      break;
    }
    case Op::boot: s.flag = p.keyword("setup"); break;
    case Op::finalize:
    case Op::invariants: break;
    case Op::setup_share_hyp:
    case Op::host_share_hyp:
    case Op::host_unshare_hyp:
    case Op::hyp_pin_shared:
    case Op::hyp_unpin_shared:
    case Op::host_donate_hyp:
    case Op::hyp_donate_host:
    case Op::host_share_ffa:
    case Op::host_unshare_ffa:
    case Op::host_reclaim_lent: pa_range("a physical address"); break;
    case Op::hyp_map_private: {
      s.ipa = p.number("a hypervisor virtual address");
      s.size = p.size("a size");
      p.filler("to");
      s.pa = p.number("a physical address");
      s.perm = p.opt_perm().value_or(pgtable::kPermRW);
      s.flag = p.keyword("device");
      break;
    }
    case Op::host_force_reclaim:
    case Op::host_fault: s.pa = p.number("a physical address"); break;
    case Op::create_guest:
      s.guest = p.guest();
      s.value = s.guest;
      if (p.keyword("vmid")) {
        const Token& t = *p.peek();
        s.value = p.number("a VMID");
        if (s.value > 0xffff) throw ParseError{t.col, static_cast<int>(t.text.size()), "a VMID has 16 bits"};
      }
      break;
    case Op::guest_memcache: {
      s.guest = p.guest();
      if (!p.keyword("auto")) {
        const Token& t = *(p.peek() != nullptr ? p.peek() : &toks[0]);
        const u64 v = p.number("a page count or 'auto'");
        if (v > 1'000'000) throw ParseError{t.col, static_cast<int>(t.text.size()), "at most 1000000 pages"};
        s.pages = static_cast<u32>(v);
        p.keyword("pages");
      }
      break;
    }
    case Op::host_share_guest:
    case Op::host_lend_guest:
    case Op::host_donate_guest: {
      pa_range("a physical address");
      p.filler("to");
      s.guest = p.guest();
      p.filler("at");
      const std::size_t at = p.pos();
      s.ipa = p.number("a guest address (IPA)");
      check_range(p.at(at), s.ipa, s.size);
      if (s.op != Op::host_donate_guest) s.perm = p.opt_perm().value_or(pgtable::kPermRWX);
      break;
    }
    case Op::host_unshare_guest:
    case Op::guest_share_host:
    case Op::guest_unshare_host:
    case Op::guest_relinquish:
    case Op::guest_wrprotect: ipa_range(); break;
    case Op::guest_test_young:
      ipa_range();
      s.flag = w == "guest-test-clear-young" || p.keyword("clear");
      break;
    case Op::teardown_guest:
    case Op::reclaim_guest: s.guest = p.guest(); break;
    case Op::guest_relax_perms:
      s.guest = p.guest();
      p.filler("at");
      s.ipa = p.number("a guest address (IPA)");
      s.perm = p.perm();
      break;
    case Op::guest_reclaim_page:
    case Op::guest_mkyoung:
      s.guest = p.guest();
      p.filler("at");
      s.ipa = p.number("a guest address (IPA)");
      break;
    case Op::access: {
      s.who = p.component();
      const Token& t = p.next("read, write or exec");
      const std::string a = lower(t.text);
      if (a == "read" || a == "r") s.access = sim::Access::read;
      else if (a == "write" || a == "w") s.access = sim::Access::write;
      else if (a == "exec" || a == "x" || a == "fetch") s.access = sim::Access::exec;
      else throw ParseError{t.col, static_cast<int>(t.text.size()), fmt::format("'{}': read, write or exec", t.text)};
      if (s.who == kHypId) s.flag = p.keyword("va");
      s.pa = p.number("an address");
      if (s.who == kHostId && p.keyword("no-fault-in")) s.fault_in = false;
      break;
    }
    case Op::fail_alloc: {
      if (p.keyword("off")) {
        s.fail_mode = 0;
      } else {
        s.fail_mode = p.keyword("after") ? 2 : 1;
        s.value = p.number("an allocation count");
      }
      break;
    }
    case Op::page: {
      const Token* t = p.peek();
      if (t != nullptr && LineParser::is_guest(*t)) {
        s.op = Op::guest_page;
        ipa_range();
        const Token& st = p.next("a state");
        const std::optional<PageState> ps = parse_state(lower(st.text));
        if (!ps)
          throw ParseError{st.col, static_cast<int>(st.text.size()),
                           fmt::format("unknown state '{}' (owned, shared-owned, shared-borrowed, borrowed, none, "
                                       "poisoned)",
                                       st.text)};
        s.state = *ps;
        break;
      }
      pa_range("a physical address");
      try {
        parse_page_checks(p, s);
      } catch (ParseError& e) {
        if (e.col == 0) e.col = line_len + 1;
        throw;
      }
      break;
    }
    case Op::map:
      if (!p.done()) {
        pa_range("a physical address");
        s.flag = true;
      }
      break;
    case Op::svg: s.str = p.next("a file name").text; break;
    case Op::echo:
      // The rest of the line, as written.
      while (!p.done()) s.str += (s.str.empty() ? "" : " ") + p.next("text").text;
      break;
    case Op::guest_page: break;
  }
  p.end();
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

struct Outcome {
  enum Kind { ok, error, fault, young, old, checked } kind = ok;
  Error err = Error::einval;
  sim::Translation t;
  std::string shown;                  // the result as printed
  std::vector<std::string> failures;  // page checks that failed
  std::string note;                   // extra (the fault handler's answer)
};

Outcome from_status(const Status& st) {
  Outcome o;
  if (st) {
    o.kind = Outcome::ok;
    o.shown = "ok";
  } else {
    o.kind = Outcome::error;
    o.err = st.error();
    o.shown = name(st.error());
  }
  return o;
}

std::string perm_string(bool r, bool w, bool x) {
  return fmt::format("{}{}{}", r ? 'r' : '-', w ? 'w' : '-', x ? 'x' : '-');
}

Outcome from_access(const World::Access& a) {
  Outcome o;
  o.t = a.t;
  if (a.t.ok()) {
    o.kind = Outcome::ok;
    o.shown = fmt::format("ok pa {:#x} level {} {}", a.t.output_address, a.t.level,
                          perm_string(a.t.readable, a.t.writable, a.t.executable));
  } else {
    o.kind = Outcome::fault;
    o.shown = fmt::format("fault {} level {}", sim::name(a.t.fault), a.t.level);
  }
  if (a.fault_in) {
    o.note = *a.fault_in ? "faulted in" : fmt::format("host fault handler: {}", name(a.fault_in->error()));
  }
  return o;
}

bool matches(const Expect& e, const Outcome& o) {
  switch (e.kind) {
    case Expect::ok:
      if (!(o.kind == Outcome::ok || o.kind == Outcome::young || o.kind == Outcome::old || o.kind == Outcome::checked))
        return false;
      if (e.pa && o.t.output_address != *e.pa) return false;
      if (e.level && o.t.level != *e.level) return false;
      return true;
    case Expect::error: return o.kind == Outcome::error && o.err == e.err;
    case Expect::fault:
      if (o.kind != Outcome::fault) return false;
      if (e.fault_kind && o.t.fault != *e.fault_kind) return false;
      if (e.level && o.t.level != *e.level) return false;
      return true;
    case Expect::young: return o.kind == Outcome::young;
    case Expect::old: return o.kind == Outcome::old;
  }
  return false;
}

// What one page looks like before and after a step, for "what changed".
struct Snap {
  bool valid = false;
  PageView v;
  std::optional<PageState> guest;  // at the step's guest address
};

Snap snap(World& w, const Statement& s, u64 pa, bool have_pa) {
  Snap out;
  if (have_pa && (w.is_memory(pa) || w.mmio_at(pa) != nullptr)) {
    out.valid = true;
    out.v = w.view(pa);
  }
  if (s.guest != 0 && w.mp().guest(s.guest) != nullptr) out.guest = w.mp().guest_state(s.guest, s.ipa);
  return out;
}

std::string diff(const Snap& a, const Snap& b, ComponentId guest) {
  std::vector<std::string> parts;
  const auto st = [&](const char* who, PageState x, PageState y) {
    if (x != y) parts.push_back(fmt::format("{} {}→{}", who, name(x), name(y)));
  };
  if (a.valid && b.valid) {
    st("host", a.v.host, b.v.host);
    st("hyp", a.v.hyp, b.v.hyp);
    if (a.v.ffa != b.v.ffa) parts.push_back(fmt::format("secure {}→{}", a.v.ffa ? "shared-borrowed" : "none",
                                                        b.v.ffa ? "shared-borrowed" : "none"));
  }
  if (a.guest && b.guest) st(component_name(guest).c_str(), *a.guest, *b.guest);
  else if (!a.guest && b.guest) parts.push_back(fmt::format("{} created", component_name(guest)));
  if (a.valid && b.valid) {
    if (a.v.owner != b.v.owner)
      parts.push_back(fmt::format("owner {}→{}", component_name(a.v.owner), component_name(b.v.owner)));
    if (a.v.pins != b.v.pins) parts.push_back(fmt::format("pins {}→{}", a.v.pins, b.v.pins));
    if (a.v.shares != b.v.shares) parts.push_back(fmt::format("guest shares {}→{}", a.v.shares, b.v.shares));
  }
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

// Pages per owner of all memory, from the host's table (cheap: one walk, range by range), or
// the error of a walk that failed.
Result<std::map<ComponentId, u64>> owner_pages(const World& w) {
  std::map<ComponentId, u64> out;
  struct V {
    static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
    std::map<ComponentId, u64>* out;
    Status leaf(pgtable::VisitCtx& x) {
      ComponentId owner = kHostId;
      if (!arch::DescValid::get(x.old) && x.old != 0 && state_of(x.old) != PageState::lent)
        owner = arch::InvalidDesc(x.old).owner();
      (*out)[owner] += (x.end - x.addr) / World::kPage;
      return {};
    }
  } v{&out};
  for (const Region& r : w.spec().memory)
    if (Status st = walk_clipped(w.mp().host_table(), r.base, r.size, v); !st) return fail(st.error());
  return out;
}

std::string owner_diff(const std::map<ComponentId, u64>& a, const std::map<ComponentId, u64>& b) {
  std::string out;
  std::map<ComponentId, bool> ids;
  for (const auto& [k, v] : a) ids[k] = true;
  for (const auto& [k, v] : b) ids[k] = true;
  for (const auto& [id, _] : ids) {
    const u64 x = a.contains(id) ? a.at(id) : 0, y = b.contains(id) ? b.at(id) : 0;
    if (x != y) out += fmt::format("{}{} owns {}→{} pages", out.empty() ? "" : ", ", component_name(id), x, y);
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Scenario::Scenario() = default;
Scenario::~Scenario() = default;

bool Scenario::parse(std::string_view text, const std::string& name, std::ostream& err) {
  name_ = name;
  stmts_.clear();
  int line_no = 0;
  bool booted = false;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = nl + 1;
    ++line_no;
    const std::vector<Token> toks = tokenize(line);
    if (toks.empty()) {
      if (nl == text.size()) break;
      continue;
    }
    auto s = std::make_unique<Statement>();
    s->line = line_no;
    try {
      std::size_t end = toks.size();
      for (std::size_t k = 1; k < toks.size(); ++k)
        if (lower(toks[k].text) == "expect" && lower(toks[0].text) != "echo") {
          end = k;
          break;
        }
      const int len = end < toks.size() ? toks[end].col - 2 : static_cast<int>(line.size());
      if (end < toks.size()) s->expect = parse_expect(toks, end + 1, static_cast<int>(line.size()));
      parse_statement(toks, end, len, *s);
      const std::size_t text_end =
          end < toks.size() ? static_cast<std::size_t>(toks[end].col - 1) : toks.back().col - 1 + toks.back().text.size();
      std::string t(line.substr(static_cast<std::size_t>(toks[0].col - 1), text_end - (toks[0].col - 1)));
      while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back())) != 0) t.pop_back();
      s->text = t;
      if (is_machine_op(s->op) && booted)
        throw ParseError{toks[0].col, static_cast<int>(toks[0].text.size()),
                         "the machine is described before it boots: move this line above the first operation"};
      if (s->op == Op::boot) {
        if (booted) throw ParseError{toks[0].col, static_cast<int>(toks[0].text.size()), "the machine has booted already"};
      }
      if (!is_machine_op(s->op)) booted = true;
      if (s->expect && (s->op == Op::page || s->op == Op::guest_page || s->op == Op::echo || s->op == Op::map ||
                        s->op == Op::svg || is_machine_op(s->op)))
        throw ParseError{toks[end].col, 6, "this line states no outcome to expect (page and invariants lines are checks)"};
    } catch (const ParseError& e) {
      err << fmt::format("{}:{}:{}: error: {}\n", name, line_no, e.col, e.msg);
      err << "  " << line << "\n";
      err << "  " << std::string(static_cast<std::size_t>(std::max(0, e.col - 1)), ' ')
          << std::string(static_cast<std::size_t>(std::max(1, e.len)), '^') << "\n";
      return false;
    }
    stmts_.push_back(std::move(s));
    if (nl == text.size()) break;
  }
  return true;
}

ScenarioResult Scenario::run(const ScenarioOptions& opts, std::ostream& out, std::ostream& err) {
  ScenarioResult res;
  MachineSpec spec;
  bool described = false;
  world_.reset();
  const auto failure = [&](const Statement& s, const std::string& what) {
    ++res.failures;
    const std::string msg = fmt::format("{}:{}: FAILED: {}\n    {}\n", name_, s.line, s.text, what);
    out << msg;
  };
  const auto boot = [&](const Statement& s, bool finalize) -> bool {
    if (!described) spec = opts.default_machine;
    if (opts.table_pool_base) {
      const u64 size = opts.table_pool_size ? *opts.table_pool_size
                       : spec.pool.size != 0  ? spec.pool.size
                                              : spec.carveout.size;
      spec.pool = Region{*opts.table_pool_base, size};
    }
    std::string why;
    world_ = World::create(spec, &why);
    if (!world_) {
      err << fmt::format("{}:{}: error: the machine cannot boot: {}\n", name_, s.line, why);
      res.exit_code = 2;
      return false;
    }
    if (finalize) world_->mp().finalize();
    if (!opts.quiet) {
      std::string mem;
      for (const Region& r : world_->spec().memory) mem += fmt::format("{} at {:#x}, ", size_name(r.size), r.base);
      // A 52-bit machine says so (its tables are in the 52-bit format: docs/ownership.md).
      const bool pa52 = World::MP::uses_52bit(world_->spec().cpu);
      out << fmt::format("{}machine: ram {}carve-out {} at {:#x}, {} MMIO region(s){}{}\n",
                         opts.line_numbers ? "      " : "", mem,
                         size_name(world_->spec().carveout.size), world_->spec().carveout.base,
                         world_->spec().mmio.size(), pa52 ? ", 52-bit PA (FEAT_LPA2)" : "",
                         finalize ? "; protected mode on" : "; in set-up");
    }
    return true;
  };

  const std::size_t total = stmts_.size();
  std::size_t text_width = 20;
  for (const std::unique_ptr<Statement>& st : stmts_)
    if (st->op != Op::echo) text_width = std::max(text_width, std::min<std::size_t>(st->text.size(), 60));
  std::size_t done = 0;
  for (const std::unique_ptr<Statement>& sp : stmts_) {
    const Statement& s = *sp;
    ++res.statements;
    if (opts.progress && (++done & 0x3fff) == 0)
      std::cerr << fmt::format("\r{}: {}/{} operations ({}%)", name_, done, total, done * 100 / total) << std::flush;
    // The machine description.
    if (is_machine_op(s.op)) {
      if (!described) {
        spec = MachineSpec{};
        spec.mmio.clear();
        described = true;
      }
      switch (s.op) {
        case Op::ram: spec.memory.push_back(Region{s.pa, s.size}); break;
        case Op::mmio: spec.mmio.push_back(MmioSpec{s.pa, s.size, s.str, s.flag}); break;
        case Op::carveout: spec.carveout = Region{s.pa, s.size}; break;
        case Op::pool: spec.pool = Region{s.pa, s.size}; break;
        case Op::hyp_offset: spec.hyp_va_offset = s.value; break;
        case Op::cpu:
          spec.cpu = s.value == 52 && s.flag ? arch::CpuFeatures::modern_52bit() : arch::CpuFeatures::modern();
          spec.cpu.pa_bits = static_cast<unsigned>(s.value);
          break;
        default: break;
      }
      continue;
    }
    if (s.op == Op::boot) {
      if (!boot(s, !s.flag)) return res;
      continue;
    }
    if (!world_ && !boot(s, true)) return res;
    World& w = *world_;
    auto& mp = w.mp();
    sim::EventLog& log = w.plat().log();
    log.clear();

    // The page the step is about (for "what changed").
    u64 focus = s.pa;
    bool have_focus = false;
    switch (s.op) {
      case Op::host_share_guest: case Op::host_lend_guest: case Op::host_donate_guest: case Op::setup_share_hyp:
      case Op::host_share_hyp: case Op::host_unshare_hyp: case Op::hyp_pin_shared: case Op::hyp_unpin_shared:
      case Op::host_donate_hyp: case Op::hyp_donate_host: case Op::host_share_ffa: case Op::host_unshare_ffa:
      case Op::host_reclaim_lent: case Op::host_force_reclaim: case Op::host_fault:
        have_focus = true;
        break;
      case Op::host_unshare_guest: case Op::guest_share_host: case Op::guest_unshare_host: case Op::guest_relinquish:
      case Op::guest_wrprotect: case Op::guest_relax_perms: case Op::guest_mkyoung: case Op::guest_reclaim_page:
        if (const std::optional<u64> pa = w.guest_pa(s.guest, s.ipa)) {
          focus = *pa;
          have_focus = true;
        }
        break;
      default: break;
    }
    const bool whole_guest = s.op == Op::teardown_guest || s.op == Op::reclaim_guest;
    const Snap before = snap(w, s, focus, have_focus);
    Result<std::map<ComponentId, u64>> owners_before;
    if (whole_guest) owners_before = owner_pages(w);
    // Guest memcaches: topped up before a transition into the guest (unless set by hand).
    switch (s.op) {
      case Op::host_share_guest: case Op::host_lend_guest: case Op::host_donate_guest: case Op::host_unshare_guest:
      case Op::guest_share_host: case Op::guest_unshare_host: case Op::guest_relinquish: case Op::guest_wrprotect:
        w.prepare_guest(s.guest, s.ipa, s.size);
        break;
      case Op::host_force_reclaim:
        if (w.is_memory(s.pa)) {
          const PageMeta& m = mp.page_meta(s.pa);
          if (m.guest != 0) w.prepare_guest(m.guest, m.guest_ipa, World::kPage);
        }
        break;
      default: break;
    }
    const sim::EventLog::Mark mark = log.mark();
    const u64 n = s.size / World::kPage;
    Outcome o;
    std::string printed;  // extra output after the line (map)
    switch (s.op) {
      case Op::finalize:
        mp.finalize();
        o = from_status({});
        break;
      case Op::setup_share_hyp: o = from_status(mp.setup_share_hyp(s.pa, n)); break;
      case Op::hyp_map_private:
        o = from_status(mp.hyp_map_private(
            s.ipa, s.size, s.pa,
            pgtable::Prot{s.perm, s.flag ? arch::MemType::device_ngnre : arch::MemType::normal_wb, 0}));
        break;
      case Op::host_share_hyp: o = from_status(mp.host_share_hyp(s.pa, n)); break;
      case Op::host_unshare_hyp: o = from_status(mp.host_unshare_hyp(s.pa, n)); break;
      case Op::hyp_pin_shared: o = from_status(mp.hyp_pin_shared(s.pa, n)); break;
      case Op::hyp_unpin_shared: o = from_status(mp.hyp_unpin_shared(s.pa, n)); break;
      case Op::host_donate_hyp: o = from_status(mp.host_donate_hyp(s.pa, n)); break;
      case Op::hyp_donate_host: o = from_status(mp.hyp_donate_host(s.pa, n)); break;
      case Op::host_share_ffa: o = from_status(mp.host_share_ffa(s.pa, n)); break;
      case Op::host_unshare_ffa: o = from_status(mp.host_unshare_ffa(s.pa, n)); break;
      case Op::create_guest: o = from_status(w.create_guest(s.guest, static_cast<u16>(s.value))); break;
      case Op::guest_memcache: o = from_status(w.set_guest_memcache(s.guest, s.pages)); break;
      case Op::host_share_guest: o = from_status(mp.host_share_guest(s.pa, n, s.guest, s.ipa, s.perm)); break;
      case Op::host_unshare_guest: o = from_status(mp.host_unshare_guest(s.guest, s.ipa, n)); break;
      case Op::host_donate_guest: o = from_status(mp.host_donate_guest(s.pa, n, s.guest, s.ipa)); break;
      case Op::guest_share_host: o = from_status(mp.guest_share_host(s.guest, s.ipa, n)); break;
      case Op::guest_unshare_host: o = from_status(mp.guest_unshare_host(s.guest, s.ipa, n)); break;
      case Op::host_lend_guest: o = from_status(mp.host_lend_guest(s.pa, n, s.guest, s.ipa, s.perm)); break;
      case Op::guest_relinquish: o = from_status(mp.guest_relinquish(s.guest, s.ipa, n)); break;
      case Op::host_reclaim_lent: o = from_status(mp.host_reclaim_lent(s.pa, n)); break;
      case Op::teardown_guest: o = from_status(mp.teardown_guest(s.guest)); break;
      case Op::reclaim_guest: o = from_status(w.reclaim_guest(s.guest)); break;
      case Op::guest_reclaim_page: o = from_status(mp.reclaim_guest_page(s.guest, s.ipa)); break;
      case Op::host_force_reclaim: o = from_status(mp.host_force_reclaim(s.pa)); break;
      case Op::guest_relax_perms: o = from_status(mp.guest_relax_perms(s.guest, s.ipa, s.perm)); break;
      case Op::guest_wrprotect: o = from_status(mp.guest_wrprotect(s.guest, s.ipa, n)); break;
      case Op::guest_test_young: {
        const Result<bool> r = mp.guest_test_clear_young(s.guest, s.ipa, n, s.flag);
        if (!r) {
          o = from_status(fail(r.error()));
        } else {
          o.kind = *r ? Outcome::young : Outcome::old;
          o.shown = *r ? "young" : "old";
        }
        break;
      }
      case Op::guest_mkyoung: o = from_status(mp.guest_mkyoung(s.guest, s.ipa)); break;
      case Op::host_fault: o = from_status(mp.host_handle_fault(s.pa)); break;
      case Op::access: {
        if (s.who == kHostId) {
          o = from_access(w.host_access(s.pa, s.access, s.fault_in));
        } else if (s.who == kHypId) {
          o = from_access(w.hyp_access(s.flag ? s.pa : mp.hyp_va(s.pa), s.access));
        } else {
          const Result<World::Access> a = w.guest_access(s.who, s.pa, s.access);
          o = a ? from_access(*a) : from_status(fail(a.error()));
        }
        break;
      }
      case Op::fail_alloc:
        if (s.fail_mode == 0) w.plat().allocator().clear_fault_injection();
        else if (s.fail_mode == 1) w.plat().allocator().fail_nth(s.value);
        else w.plat().allocator().fail_after(s.value);
        o = from_status({});
        break;
      case Op::invariants: {
        const std::string v = w.check_invariants();
        if (v.empty()) {
          o = from_status({});
          o.kind = Outcome::checked;
          o.shown = "every invariant holds";
        } else {
          o.kind = Outcome::checked;
          o.shown = "broken";
          o.failures.push_back("invariant broken: " + v);
        }
        ++res.expectations;
        break;
      }
      case Op::page: {
        o.kind = Outcome::checked;
        ++res.expectations;
        for (u64 pa = s.pa; pa < s.pa + s.size && o.failures.empty(); pa += World::kPage) {
          const bool mem = w.is_memory(pa);
          const PageView v = w.view(pa);
          for (const PageCheck& c : s.checks) {
            std::string got;
            bool okc = true;
            switch (c.what) {
              case PageCheck::host: okc = v.host == c.state; got = name(v.host); break;
              case PageCheck::hyp: okc = v.hyp == c.state; got = name(v.hyp); break;
              case PageCheck::secure: okc = v.ffa == (c.value != 0); got = v.ffa ? "shared-borrowed" : "none"; break;
              case PageCheck::owner: okc = v.owner == c.value; got = component_name(v.owner); break;
              case PageCheck::pins: okc = mem && v.pins == c.value; got = mem ? std::to_string(v.pins) : "(not memory)"; break;
              case PageCheck::shares:
                okc = mem && v.shares == c.value;
                got = mem ? std::to_string(v.shares) : "(not memory)";
                break;
              case PageCheck::guest: {
                PageState gs = PageState::none;
                if (mem && v.guest == c.guest_id && mp.guest(c.guest_id) != nullptr) {
                  gs = mp.guest_state(c.guest_id, mp.page_meta(pa).guest_ipa);
                  if (gs == PageState::poisoned) gs = PageState::none;
                } else {
                  // Shared with it by the host: look for the page in its table.
                  const World::MP::Guest* g = mp.guest(c.guest_id);
                  if (g != nullptr && g->table.valid()) {
                    struct V {
                      static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
                      u64 pa;
                      const arch::OaFormat* fmt;  // the guest table's address format
                      PageState found = PageState::none;
                      Status leaf(pgtable::VisitCtx& x) {
                        if (!arch::DescValid::get(x.old)) return {};
                        const u64 oa = fmt->decode(x.old, arch::level_shift(World::kGranule, x.level));
                        const u64 first = oa + (x.addr - x.base);
                        if (pa >= first && pa < first + (x.end - x.addr)) {
                          found = state_of(x.old);
                          return fail(Error::eexist);  // stop
                        }
                        return {};
                      }
                    } vis{pa, &g->table.oa_format()};
                    // EEXIST is the visitor's own stop signal (found); any other error is the
                    // walk's, and the check cannot be answered.
                    const Status ws = g->table.walk(0, u64{1} << g->table.ia_bits(), vis);
                    if (!ws && ws.error() != Error::eexist) {
                      o.failures.push_back(fmt::format("page {:#x}: {}'s table walk failed: {}", pa,
                                                       component_name(c.guest_id), name(ws.error())));
                      continue;
                    }
                    gs = vis.found;
                  }
                }
                okc = gs == c.state;
                got = name(gs);
                break;
              }
            }
            if (!okc)
              o.failures.push_back(
                  fmt::format("page {:#x}: expected {}, got {}", pa, c.text, got));
          }
        }
        o.shown = o.failures.empty() ? "as stated" : "differs";
        break;
      }
      case Op::guest_page: {
        o.kind = Outcome::checked;
        ++res.expectations;
        for (u64 ipa = s.ipa; ipa < s.ipa + s.size && o.failures.empty(); ipa += World::kPage) {
          const PageState gs = mp.guest_state(s.guest, ipa);
          if (gs != s.state)
            o.failures.push_back(fmt::format("{} at {:#x}: expected {}, got {}", component_name(s.guest), ipa,
                                             name(s.state), name(gs)));
        }
        o.shown = o.failures.empty() ? "as stated" : "differs";
        break;
      }
      case Op::map: {
        OwnershipMap m = build_map(w);
        if (s.flag) m = clip_map(m, s.pa, s.size);
        printed = map_text(m);
        o.kind = Outcome::checked;
        o.shown = fmt::format("{} ranges", m.rows.size());
        break;
      }
      case Op::svg: {
        const OwnershipMap m = build_map(w);
        std::ofstream f(s.str);
        f << map_svg(m, fmt::format("ptguard ownership map: {}", name_));
        f.close();
        if (!f) {
          err << fmt::format("{}:{}: error: cannot write '{}'\n", name_, s.line, s.str);
          res.exit_code = 2;
          return res;
        }
        o.kind = Outcome::checked;
        o.shown = fmt::format("wrote {}", s.str);
        break;
      }
      case Op::echo:
        if (!opts.quiet) out << "\n" << s.str << "\n";
        continue;
      default: break;
    }
    const sim::EventView ev = log.since(mark);
    // What changed.
    std::string changes;
    if (o.kind == Outcome::ok || o.kind == Outcome::young || o.kind == Outcome::old) {
      const Snap after = snap(w, s, focus, have_focus);
      changes = diff(before, after, s.guest);
      if (whole_guest) {
        const Result<std::map<ComponentId, u64>> owners_after = owner_pages(w);
        const std::string od = owners_before && owners_after
                                   ? owner_diff(*owners_before, *owners_after)
                                   : fmt::format("owners unknown: host table walk failed: {}",
                                                 name(owners_before ? owners_after.error() : owners_before.error()));
        if (!od.empty()) changes += (changes.empty() ? "" : ", ") + od;
        // Pages, not fixmap mappings: reclaim_guest maps the first page once to try the fixmap
        // before it changes anything, then again to scrub it.
        std::set<u64> scrubbed_pages;
        for (const sim::Event& e : ev)
          if (e.kind == sim::EventKind::fixmap_map) scrubbed_pages.insert(e.pa);
        const std::size_t scrubbed = scrubbed_pages.size();
        if (scrubbed != 0) changes += fmt::format("{}{} pages scrubbed", changes.empty() ? "" : ", ", scrubbed);
      }
      if (s.op == Op::guest_reclaim_page && ev.count(sim::EventKind::fixmap_map) != 0)
        changes += fmt::format("{}scrubbed", changes.empty() ? "" : ", ");
      if (s.op == Op::teardown_guest)
        changes = fmt::format("{} stopped{}", component_name(s.guest), changes.empty() ? "" : ", " + changes);
      if (n > 1 && !changes.empty() && !whole_guest) changes += fmt::format(" ({} pages)", n);
    }
    if (!o.note.empty()) changes = o.note + (changes.empty() ? "" : ", " + changes);
    const std::size_t writes = ev.count(sim::EventKind::write), tlbis = ev.count(sim::EventKind::tlbi);
    if (o.kind == Outcome::error) {
      changes = writes == 0 ? "refused, nothing changed" : fmt::format("refused, but {} table writes!", writes);
    } else if (writes + tlbis != 0) {
      changes += fmt::format("{}{} write{}, {} TLBI{}", changes.empty() ? "" : "; ", writes, writes == 1 ? "" : "s",
                             tlbis, tlbis == 1 ? "" : "s");
    }
    // The expectation.
    bool failed = false;
    std::string failure_text;
    if (s.expect && !matches(*s.expect, o)) {
      failed = true;
      failure_text = fmt::format("expected {}, got {}", s.expect->text, o.shown);
    }
    if (s.expect) ++res.expectations;
    if (!opts.quiet) {
      const std::string mark_text = failed || !o.failures.empty() ? "FAIL" : (s.expect ? "pass" : "");
      if (opts.line_numbers) out << fmt::format("{:>5} ", s.line);
      out << fmt::format("{:<{}} {:<10} {}{}\n", s.text, text_width, o.shown,
                         mark_text.empty() ? "" : "[" + mark_text + "] ", changes);
      if (!printed.empty()) out << printed;
      if (opts.trace && !ev.empty()) {
        std::istringstream lines(ev.format());
        for (std::string l; std::getline(lines, l);) out << "        | " << l << "\n";
      }
    }
    if (failed) failure(s, failure_text);
    for (const std::string& f : o.failures) failure(s, f);
    if (opts.check) {
      const std::string v = w.check_invariants();
      if (!v.empty()) failure(s, "--check: invariant broken after this step: " + v);
    }
  }
  if (opts.progress && total >= 0x4000) std::cerr << "\r" << std::string(60, ' ') << "\r" << std::flush;
  if (res.failures != 0 && res.exit_code == 0) res.exit_code = 1;
  if (opts.summary) {
    out << fmt::format("{}: {} operations, {} checks, {} failed\n", name_, res.statements, res.expectations,
                       res.failures);
  }
  return res;
}

bool read_scenario_file(const std::string& path, std::string* text, std::string* shown, std::ostream& err) {
  *shown = path;
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    *text = ss.str();
    *shown = "<stdin>";
    return true;
  }
  std::error_code ec;
  std::ifstream f(path, std::ios::binary);
  if (!f || std::filesystem::is_directory(path, ec)) {
    err << fmt::format("{}: error: cannot read the file{}\n", path,
                       std::filesystem::is_directory(path, ec) ? " (a directory)" : "");
    return false;
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  *text = ss.str();
  return true;
}

ScenarioResult run_scenario_file(const std::string& path, const ScenarioOptions& opts, std::ostream& out,
                                 std::ostream& err) {
  std::string text, shown;
  if (!read_scenario_file(path, &text, &shown, err)) return ScenarioResult{2, 0, 0, 0};
  Scenario s;
  if (!s.parse(text, shown, err)) return ScenarioResult{2, 0, 0, 0};
  return s.run(opts, out, err);
}

}  // namespace ptguard::tools
