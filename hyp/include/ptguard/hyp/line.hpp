// A fixed-size line of text for a program with no libc: the hypervisor's and the EL2 test's
// console output (strings, hexadecimal and decimal numbers). Freestanding.
#pragma once

#include "ptguard/arch/bits.hpp"

namespace ptguard::hyp {

/// A fixed-size text buffer (no libc).
struct Line {
  static constexpr unsigned kMax = 200;
  char buf[kMax + 1] = {};
  unsigned len = 0;
  Line& str(const char* s) {
    while (*s && len < kMax) buf[len++] = *s++;
    buf[len] = 0;
    return *this;
  }
  Line& hex(u64 v) {
    char t[19] = "0x";
    int n = 0;
    char d[16];
    do {
      d[n++] = "0123456789abcdef"[v & 0xf];
      v >>= 4;
    } while (v && n < 16);
    int i = 2;
    while (n) t[i++] = d[--n];
    t[i] = 0;
    return str(t);
  }
  Line& dec(u64 v) {
    char d[21];
    int n = 0;
    do {
      d[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v);
    char t[21];
    int i = 0;
    while (n) t[i++] = d[--n];
    t[i] = 0;
    return str(t);
  }
};

}  // namespace ptguard::hyp
