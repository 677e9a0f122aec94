#!/usr/bin/env bash
# Freestanding check: compile the freestanding layers (arch/, pgtable/, ownership/) for aarch64
# exactly as they are built for EL2, and link them -nostdlib -static into a program that
# exercises them, with nothing provided but memset, memcpy, memmove, memcmp (mem.cpp) and
# libgcc. A compile alone would miss symbols that only the link asks for (std::expected::value()
# pulling in abort, a static guard, a libstdc++ helper).
#   check.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
out=$2
mkdir -p "$out"
cxx=${PTGUARD_AARCH64_CXX:-aarch64-linux-gnu-g++}
if ! command -v "$cxx" >/dev/null; then
  echo "freestanding check: $cxx not found (scripts/install-deps.sh test installs it)" >&2
  exit 1
fi

flags=(-std=c++23 -O2 -Wall -Wextra -Werror -ffreestanding -fno-exceptions -fno-rtti
       -fno-threadsafe-statics -mgeneral-regs-only -mstrict-align -mno-outline-atomics
       -fno-asynchronous-unwind-tables -fno-stack-protector -fno-pie)
includes=()
sources=("$src/tests/freestanding/main.cpp" "$src/tests/freestanding/mem.cpp")
for layer in arch pgtable ownership; do
  [ -d "$src/$layer/include" ] && includes+=(-I "$src/$layer/include")
  [ -d "$src/$layer/src" ] && sources+=($(find "$src/$layer/src" -name '*.cpp' | sort))
done

objs=()
for s in "${sources[@]}"; do
  o="$out/$(echo "${s#$src/}" | tr / _).o"
  "$cxx" "${flags[@]}" "${includes[@]}" -c "$s" -o "$o"
  objs+=("$o")
done
"$cxx" -nostdlib -static -no-pie -Wl,-e,_start -o "$out/freestanding.elf" "${objs[@]}" -lgcc

# Nothing runs static constructors at EL2: the image must not need any.
if aarch64-linux-gnu-objdump -h "$out/freestanding.elf" | grep -qE '\.(init_array|ctors)'; then
  echo "freestanding check: the image has static constructors (.init_array/.ctors)" >&2
  exit 1
fi

# The link above fails on any undefined symbol; list what the image holds for the log.
n=$(aarch64-linux-gnu-nm "$out/freestanding.elf" | wc -l)
echo "freestanding check: linked ${#sources[@]} sources into $out/freestanding.elf ($n symbols)"
