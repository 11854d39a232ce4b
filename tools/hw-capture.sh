#!/usr/bin/env bash
# Copies the sysfs/procfs files popmesh-hw reads into a directory (or a tarball), keeping the
# layout and the symlinks, so that `popmesh hw show|check|plan --root DIR` sees the machine as
# it is. Use it to make a test fixture or attach it to a bug report. Needs no root (a few IRQ
# files may be unreadable without it; they are then left out, as on a VM).
#
# Usage: tools/hw-capture.sh DIR            capture into DIR (created; must not exist)
#        tools/hw-capture.sh --tar FILE     capture into a gzipped tarball
#
# Only these are copied (keep in step with hw/src/read.rs):
#   proc/cmdline proc/meminfo proc/interrupts proc/net/route proc/net/if_inet6
#   proc/irq/N/{smp,effective}_affinity_list   for the NICs' IRQs only
#   sys/devices/system/cpu/{online,possible,present,isolated,nohz_full}
#   sys/devices/system/cpu/cpuN/topology/{physical_package_id,core_id,thread_siblings_list,core_cpus_list}
#   sys/devices/system/node/nodeN/{cpulist,meminfo,hugepages/*/{nr,free}_hugepages}
#   sys/kernel/mm/hugepages/*/{nr,free}_hugepages
#   sys/bus/pci/devices/ADDR for network controllers (class 0x02....): class vendor device
#     numa_node local_cpulist driver(link) msi_irqs/
#   sys/class/net/IFACE: address mtu speed operstate queues/{rx,tx}-N device(link)
# Review proc/cmdline before sharing a capture: some boot loaders put tokens there.
set -euo pipefail

usage() { sed -n '2,9p' "$0" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
tar_out=""
if [[ $1 == --tar ]]; then
    [[ $# -eq 2 ]] || usage
    tar_out="$2"
    out="$(mktemp -d)/capture"
else
    [[ $# -eq 1 ]] || usage
    out="$1"
    [[ ! -e $out ]] || { echo "hw-capture.sh: $out exists; give a new directory" >&2; exit 2; }
fi
src="${HW_CAPTURE_SRC:-}"   # read from another root (testing the script on a fixture)
mkdir -p "$out"

# file PATH: copy a file's content to the same real path under $out. A file the kernel refuses
# to read (speed of a down link: EINVAL) is left out, which is what popmesh-hw expects.
file() {
    local p="$src$1" real rel
    [[ -e $p ]] || return 0
    if [[ $1 == /proc/* ]]; then
        # /proc/net is a link to /proc/self/net: keep the path as written.
        rel="$1"
    else
        real="$(realpath "$p")"
        rel="${real#"$src"}"
    fi
    mkdir -p "$out$(dirname "$rel")"
    if ! cat "$p" > "$out$rel" 2>/dev/null; then
        rm -f "$out$rel"
    fi
}

# link PATH: recreate a symlink (same relative target) at its real location under $out.
link() {
    local p="$src$1" parent rel
    [[ -L $p ]] || return 0
    parent="$(realpath "$(dirname "$p")")"
    rel="${parent#"$src"}/$(basename "$p")"
    mkdir -p "$out${rel%/*}"
    ln -sfn "$(readlink "$p")" "$out$rel"
}

# dir PATH: an (empty) directory whose existence is the information (queues/rx-0, cpuN);
# .keep lets it survive git.
dir() {
    local p="$src$1" real rel
    [[ -d $p ]] || return 0
    real="$(realpath "$p")"
    rel="${real#"$src"}"
    mkdir -p "$out$rel"
    [[ -n "$(ls -A "$out$rel")" ]] || : > "$out$rel/.keep"
}

for f in /proc/cmdline /proc/meminfo /proc/interrupts /proc/net/route /proc/net/if_inet6; do
    file "$f"
done

cpu=/sys/devices/system/cpu
for f in online possible present isolated nohz_full; do file "$cpu/$f"; done
for c in "$src$cpu"/cpu[0-9]*; do
    c="${c#"$src"}"
    dir "$c"
    for f in physical_package_id core_id thread_siblings_list core_cpus_list; do
        file "$c/topology/$f"
    done
done

for n in "$src"/sys/devices/system/node/node[0-9]*; do
    [[ -d $n ]] || continue
    n="${n#"$src"}"
    file "$n/cpulist"
    file "$n/meminfo"
    for h in "$src$n"/hugepages/hugepages-*; do
        [[ -d $h ]] || continue
        h="${h#"$src"}"
        file "$h/nr_hugepages"
        file "$h/free_hugepages"
    done
done
for h in "$src"/sys/kernel/mm/hugepages/hugepages-*; do
    [[ -d $h ]] || continue
    h="${h#"$src"}"
    file "$h/nr_hugepages"
    file "$h/free_hugepages"
done

irqs=()
pci_names=()
for d in "$src"/sys/bus/pci/devices/*; do
    [[ -e $d ]] || continue
    class="$(cat "$d/class" 2>/dev/null || true)"
    [[ $class == 0x02* ]] || continue
    d="${d#"$src"}"
    link "$d"
    for f in class vendor device numa_node local_cpulist; do file "$d/$f"; done
    link "$(realpath "$src$d" | sed "s|^$src||")/driver"
    if [[ -d $src$d/msi_irqs ]]; then
        for m in "$src$d"/msi_irqs/*; do
            [[ -e $m ]] || continue
            file "${m#"$src"}"
            irqs+=("$(basename "$m")")
        done
    fi
    pci_names+=("$(basename "$d")")
done

ifaces=()
for i in "$src"/sys/class/net/*; do
    [[ -e $i ]] || continue
    name="$(basename "$i")"
    ifaces+=("$name")
    i="${i#"$src"}"
    link "$i"
    for f in address mtu speed operstate; do file "$i/$f"; done
    for q in "$src$i"/queues/*; do
        [[ -d $q ]] && dir "${q#"$src"}"
    done
    real="$(realpath "$src$i")"
    if [[ -L $real/device ]]; then
        link "${real#"$src"}/device"
        dir "$(realpath "$real/device" | sed "s|^$src||")"
    fi
done

# IRQs named after an interface or a PCI address (legacy interrupts, drivers without msi_irqs).
if [[ -r $src/proc/interrupts ]]; then
    while read -r number rest; do
        number="${number%:}"
        [[ $number =~ ^[0-9]+$ ]] || continue
        for n in "${ifaces[@]}" "${pci_names[@]:-}"; do
            [[ -n $n && $n != lo ]] || continue
            if [[ $rest == *"$n-"* || $rest == *"@pci:$n"* || $rest == *"$n:"* ]]; then
                irqs+=("$number")
            fi
        done
    done < "$src/proc/interrupts"
fi
for n in $(printf '%s\n' "${irqs[@]:-}" | sort -un); do
    file "/proc/irq/$n/smp_affinity_list"
    file "/proc/irq/$n/effective_affinity_list"
done

if [[ -n $tar_out ]]; then
    tar -czf "$tar_out" -C "$out" .
    rm -rf "$(dirname "$out")"
    echo "hw-capture.sh: wrote $tar_out (unpack and pass the directory to popmesh hw show --root)" >&2
else
    echo "hw-capture.sh: captured $(find "$out" -type f | wc -l) files into $out; try: popmesh hw show --root $out" >&2
fi
