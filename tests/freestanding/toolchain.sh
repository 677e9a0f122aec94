# Sourced by tests/freestanding/check.sh and tests/el2/image/build.sh: the one place that says
# how the freestanding layers are compiled for EL2 (the flags the EL2 issue names), so the link
# check and the QEMU image cannot drift apart.
#   $cxx                       the aarch64 compiler (PTGUARD_AARCH64_CXX overrides)
#   freestanding_flags         the compile flags
#   require_cxx LABEL          exit 1 with a message if the compiler is missing
#   no_static_constructors ELF LABEL   exit 1 if the image has .init_array/.ctors
cxx=${PTGUARD_AARCH64_CXX:-aarch64-linux-gnu-g++}
freestanding_flags=(-std=c++23 -O2 -Wall -Wextra -Werror -ffreestanding -fno-exceptions -fno-rtti
                    -fno-threadsafe-statics -mgeneral-regs-only -mstrict-align -mno-outline-atomics
                    -fno-asynchronous-unwind-tables -fno-stack-protector -fno-pie)

require_cxx() {
  if ! command -v "$cxx" >/dev/null; then
    echo "$1: $cxx not found (scripts/install-deps.sh test installs it)" >&2
    exit 1
  fi
}

# Nothing runs static constructors at EL2: an image must not need any.
no_static_constructors() {
  if aarch64-linux-gnu-objdump -h "$1" | grep -qE '\.(init_array|ctors)'; then
    echo "$2: static constructors (.init_array/.ctors) in $1" >&2
    exit 1
  fi
}
