#!/usr/bin/env bash
# Installs what popmesh needs on a fresh Debian bookworm machine; safe to run again.
# Used by tools/test.sh (and so by CI). Needs root for apt; skips what is already present.
set -euo pipefail

# Debian packages the build, tests and perf scripts use.
APT_PACKAGES=(pkg-config procps iproute2 util-linux curl iputils-ping nftables ethtool)
# DPDK (22.11 LTS in bookworm) for the kernel-bypass backend, and libclang for its bindgen.
# POPMESH_NO_DPDK=1 skips them: the workspace then builds and tests without the DPDK backend.
if [[ ${POPMESH_NO_DPDK:-0} != 1 ]]; then
  APT_PACKAGES+=(dpdk dpdk-dev libdpdk-dev libclang-dev)
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: need root to install ${missing[*]} (or install them yourself)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "bootstrap: $tool not found; install the Rust toolchain with rustfmt and clippy" >&2; exit 1; }
done
if ! command -v cargo-nextest >/dev/null; then
  echo "bootstrap: installing cargo-nextest from crates.io"
  cargo install --locked cargo-nextest
fi

# io_uring must be allowed for the media workers (kernel.io_uring_disabled = 0).
if [[ -r /proc/sys/kernel/io_uring_disabled ]] && [[ $(cat /proc/sys/kernel/io_uring_disabled) != 0 ]]; then
  echo "bootstrap: io_uring is disabled (kernel.io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled));" \
       "enable it with: sysctl -w kernel.io_uring_disabled=0" >&2
  exit 1
fi
if [[ ${POPMESH_NO_DPDK:-0} != 1 ]]; then
  bash "$(dirname "$0")/hugepages.sh"
fi
echo "bootstrap: ok"
