#!/usr/bin/env bash
# Installs the Debian packages ptguard needs for a given purpose, and only the missing ones.
#   scripts/install-deps.sh build|test|bench|demo|qemu
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
  build) pkgs=("${base[@]}") ;;
  *) echo "usage: $0 build|test|bench|demo|qemu" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  # dpkg-query reports "install ok installed" only for a fully installed package.
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

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
