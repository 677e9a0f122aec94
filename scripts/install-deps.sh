#!/usr/bin/env bash
# Installs the Debian packages ptguard needs for a given purpose, and only the missing ones.
#   scripts/install-deps.sh build|test|bench|demo|qemu|linux-host
# linux-host also fetches Debian's arm64 kernel and busybox for the Linux-host test (below).
# As root it runs apt-get; otherwise it prints the exact apt-get line and exits 1.
set -euo pipefail

purpose=${1:-test}

base=(cmake ninja-build g++ make)
case "$purpose" in
  demo)  pkgs=("${base[@]}" libfmt-dev libcli11-dev nlohmann-json3-dev) ;;
  test)  pkgs=("${base[@]}" libgtest-dev libgmock-dev librapidcheck-dev libfmt-dev libcli11-dev
               nlohmann-json3-dev g++-aarch64-linux-gnu qemu-system-arm libxml2-utils) ;;
  bench) pkgs=("${base[@]}" libbenchmark-dev libfmt-dev libcli11-dev nlohmann-json3-dev) ;;
  qemu)  pkgs=(g++-aarch64-linux-gnu qemu-system-arm) ;;
  linux-host) pkgs=(g++-aarch64-linux-gnu qemu-system-arm device-tree-compiler cpio) ;;
  build) pkgs=("${base[@]}") ;;
  *) echo "usage: $0 build|test|bench|demo|qemu|linux-host" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  # dpkg-query reports "install ok installed" only for a fully installed package.
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

# The Linux-host test's guest software: Debian's own arm64 kernel and busybox, downloaded (never
# installed) and unpacked under build/linux-host/ (PTGUARD_LINUX_HOST_DIR overrides), once.
fetch_linux_host() {
  local dir=${PTGUARD_LINUX_HOST_DIR:-$(cd "$(dirname "$0")/.." && pwd)/build/linux-host}
  [ -f "$dir/Image" ] && [ -x "$dir/busybox" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "the Linux-host test needs Debian's arm64 linux-image and busybox-static; run as root:" >&2
    echo "  $0 linux-host" >&2
    exit 1
  fi
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "Adding the arm64 architecture to dpkg (for apt-get download only)" >&2
    dpkg --add-architecture arm64
    apt-get update -qq
  fi
  # linux-image-arm64 is the metapackage: its dependency names the current kernel package.
  local kpkg
  kpkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$kpkg" ]; then
    apt-get update -qq
    kpkg=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  [ -n "$kpkg" ] || { echo "no arm64 linux-image package found" >&2; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  echo "Downloading $kpkg and busybox-static:arm64 (unpacked under $dir, not installed)" >&2
  (cd "$tmp" && apt-get download -qq "$kpkg" busybox-static:arm64 2>/dev/null)
  mkdir -p "$tmp/x" "$dir"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
  # Debian's arm64 vmlinuz is the uncompressed Image (with an EFI stub header); older ones
  # were gzip-compressed: take either.
  local vmlinuz
  vmlinuz=$(ls "$tmp"/x/boot/vmlinuz-* | head -1)
  if gzip -t "$vmlinuz" 2>/dev/null; then gzip -dc "$vmlinuz" > "$dir/Image"; else cp "$vmlinuz" "$dir/Image"; fi
  cp "$tmp/x/bin/busybox" "$dir/busybox"
  basename "$vmlinuz" | sed 's/^vmlinuz-//' > "$dir/kernel-version"
  rm -rf "$tmp"
}

if [ ${#missing[@]} -eq 0 ]; then
  [ "$purpose" = linux-host ] && fetch_linux_host
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "ptguard needs these Debian packages: ${missing[*]}" >&2
  echo "Run as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "Installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
[ "$purpose" = linux-host ] && fetch_linux_host
exit 0
