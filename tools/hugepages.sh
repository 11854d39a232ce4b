#!/usr/bin/env bash
# Reserves 2 MiB hugepages for DPDK and mounts hugetlbfs; safe to run again.
#
#   tools/hugepages.sh            # at least 512 pages (1 GiB)
#   HUGEPAGES=2048 tools/hugepages.sh
#
# Only raises the reservation, never lowers one an operator set. Needs root.
set -euo pipefail

want=${HUGEPAGES:-512}
mnt=${HUGEPAGE_MOUNT:-/dev/hugepages}
nr=/proc/sys/vm/nr_hugepages

if [[ $(id -u) -ne 0 ]]; then
  echo "hugepages: need root to reserve hugepages; run: sudo $0" >&2
  exit 1
fi
have=$(cat "$nr")
if ((have < want)); then
  echo "$want" > "$nr"
  have=$(cat "$nr")
  if ((have < want)); then
    # The kernel reserves what it can find contiguous; fragmented memory gives fewer.
    echo "hugepages: asked for $want 2 MiB pages, the kernel reserved $have" \
         "(memory is fragmented; reserve at boot with hugepages=$want on the kernel command line)" >&2
  fi
fi
if ! grep -qs " $mnt hugetlbfs " /proc/mounts; then
  mkdir -p "$mnt"
  mount -t hugetlbfs nodev "$mnt"
fi
echo "hugepages: $(cat "$nr") x 2 MiB reserved, $(grep HugePages_Free /proc/meminfo | awk '{print $2}') free, hugetlbfs at $mnt"
