#!/usr/bin/env python3
"""Side-by-side DPDK forwarding comparison: dpdk-testpmd vs popmesh on identical input.

Input is a pcap of RTP-over-UDP/IPv4 Ethernet frames (--flows publishers, --size byte RTP
packets) replayed forever by DPDK's net_pcap driver (infinite_rx=1); each forwarder polls that
one port on one forwarding core (--core) and sends back out of it (net_pcap without a tx file
drops what it is given, so transmit costs only the driver's free). The EAL main thread of each
sits on --main-core.

Cases, run in turn and repeated --rounds times, alternating order:

  * testpmd --forward-mode=5tswap: swaps MACs, IPs and UDP ports (less work than a relay);
  * testpmd --forward-mode=io: forwards untouched (the driver's ceiling);
  * popmesh relay: every flow a session with one subscriber: parse, flow lookup, source latch,
    RTP sequence/jitter accounting, MAC/IP/port/TTL rewrite with incremental checksums;
  * popmesh fan-out 8: every flow replicated to 8 subscribers (egress packets/s reported).

Rates come from each tool's own counters over a steady window (testpmd's --stats-period
Tx-pps lines; popmesh's popmesh_media_tx_packets_total sampled over the window). Medians over
rounds are printed with ratio popmesh/testpmd-5tswap, and written as JSON (--json).

Usage: python3 perf/dpdk_compare.py [--duration 8] [--rounds 3] [--flows 1024] [--size 200] [--veth]

A/B of two popmesh builds on the same replay: --cases popmesh_relay --skip-build
--dataplane OLD_BINARY, then the same with the new one, alternating (the rate moves 10-30%
between runs on a VM, so compare runs made side by side).
"""

import argparse
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from relay_compare import metric_sum  # same exposition parsing as the io_uring comparison

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATAPLANE = os.path.join(ROOT, "target", "release", "popmesh-dataplane")
ADMIN = "127.0.0.1:47950"
APPLIANCE_IP = (10, 201, 1, 1)
PUBLISHER_IP = (10, 201, 1, 2)
SUBSCRIBER_NET = "10.201.9"
INGRESS_BASE = 40000
MAC_SELF = bytes.fromhex("020000000101")
MAC_PEER = bytes.fromhex("020000000102")


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def rtp_frame(i, flows, size):
    """Frame i: flow i % flows, RTP packet of `size` bytes (12-byte header + payload)."""
    flow = i % flows
    seq = i // flows
    src, dst = bytes(PUBLISHER_IP), bytes(APPLIANCE_IP)
    rtp = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, (seq * 3000) & 0xFFFFFFFF, 0x1000 + flow)
    rtp += bytes((seq + k) & 0xFF for k in range(max(0, size - 12)))
    ulen = 8 + len(rtp)
    udp = struct.pack("!HHHH", 20000 + flow, INGRESS_BASE + flow, ulen, 0) + rtp
    pseudo = src + dst + struct.pack("!BBH", 0, 17, ulen)
    udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, i & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return MAC_SELF + MAC_PEER + b"\x08\x00" + ip + udp


def write_pcap(path, flows, size, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(frames):
            fr = rtp_frame(i, flows, size)
            f.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)))
            f.write(fr)


def eal_common(prefix, args):
    mem = ["--no-huge", "-m", "1024"] if args.no_huge else ["-m", "512"]
    return ["--file-prefix", prefix, "--no-pci", *mem]


def run_testpmd(mode, pcap, args):
    cmd = [
        "dpdk-testpmd",
        "-l", f"{args.main_core},{args.core}",
        *eal_common("pmcmp-testpmd", args),
        "--vdev", f"net_pcap0,rx_pcap={pcap},infinite_rx=1",
        "--",
        "--no-mlockall",
        f"--forward-mode={mode}",
        "--port-topology=loop",
        "--nb-cores=1",
        "--burst=32",
        "--total-num-mbufs=16384",
        "--stats-period", "1",
        "-a",
    ]
    # With --stats-period testpmd prints rates every second until SIGINT.
    with subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as p:
        time.sleep(args.duration)
        p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
    rates = [int(x) for x in re.findall(r"Tx-pps:\s+(\d+)", out)]
    # Drop the first two seconds (start-up, caches) and the last (partial).
    steady = rates[2:-1] if len(rates) > 4 else rates
    if not steady:
        sys.exit(f"testpmd {mode}: no rate lines in its output:\n{out[-2000:]}")
    return statistics.median(steady)


def popmesh_head(args, hugepages, memory_mb, prefix, vdevs):
    """The common part of every popmesh config here: one busy-polling worker on --core."""
    vdev_list = ", ".join(f'"{v}"' for v in vdevs)
    return [
        f'[admin]\nlisten = "{ADMIN}"\n[log]\nlevel = "warn"\n',
        f"[media]\nbackend = \"dpdk\"\ncores = [{args.core}]\nburst = 32\n"
        f"max_flows = {max(1024, args.flows * 2)}\n",
        "[media.idle]\nspin_polls = 1000000\n",
        f"[media.dpdk]\nmain_core = {args.main_core}\nhugepages = {str(hugepages).lower()}\n"
        f"memory_mb = {memory_mb}\nfile_prefix = \"{prefix}\"\nvdevs = [{vdev_list}]\n"
        "exception_tap = false\n",
    ]


def popmesh_config(path, pcap, fanout, args):
    a = ".".join(map(str, APPLIANCE_IP))
    lines = popmesh_head(
        args,
        not args.no_huge,
        1024 if args.no_huge else 512,
        "pmcmp-popmesh",
        [f"net_pcap0,rx_pcap={pcap},infinite_rx=1"],
    ) + [
        f'[[media.ports]]\nname = "p0"\nbind = "{a}:{INGRESS_BASE}"\ndevice = "net_pcap0"\n'
        f'gateway_mac = "02:00:00:00:00:fe"\n',
    ]
    for flow in range(args.flows):
        subs = ", ".join(
            f'"{SUBSCRIBER_NET}.{1 + k}:{5000 + flow}"' for k in range(fanout)
        )
        lines.append(
            f'[[sessions]]\nname = "f{flow}"\ningress = "{a}:{INGRESS_BASE + flow}"\n'
            f"subscribers = [{subs}]\n"
        )
    with open(path, "w") as f:
        f.write("\n".join(lines))


def tx_now():
    with urllib.request.urlopen(f"http://{ADMIN}/metrics", timeout=2) as r:
        text = r.read().decode()
    return metric_sum(text, "popmesh_media_tx_packets_total"), time.monotonic()


def run_popmesh(pcap, fanout, args, tmp):
    cfg = os.path.join(tmp, f"popmesh-fanout{fanout}.toml")
    popmesh_config(cfg, pcap, fanout, args)
    p = subprocess.Popen(
        [args.dataplane, "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        return sample_rate(p, args, tx_now)
    finally:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def sample_rate(p, args, read):
    """Median per-second rate of the counter `read` returns, after a 2 s warm-up."""
    deadline = time.monotonic() + 30
    while True:
        try:
            read()
            break
        except (OSError, subprocess.CalledProcessError):
            if p.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"popmesh did not start:\n{p.stderr.read()[-3000:]}")
            time.sleep(0.1)
    time.sleep(2)
    samples = [read()]
    for _ in range(max(1, int(args.duration) - 3)):
        time.sleep(1)
        samples.append(read())
    rates = [(b[0] - a[0]) / (b[1] - a[1]) for a, b in zip(samples, samples[1:])]
    return statistics.median(rates)


# --- the veth lab -----------------------------------------------------------------------------
#
#   pmcg (generator)            pmcs (system under test)                 pmck (sink)
#   net_pcap replay --io-->  g0 ==veth== s0 [SUT port 0]  [SUT port 1] s1 ==veth== k0 (nft drop)
#
# The generator is a second testpmd forwarding the same pcap (infinite_rx) into g0 with
# net_af_xdp; it and its EAL main thread share --main-core. The SUT (testpmd io, testpmd 5tswap,
# or popmesh relaying every flow to one subscriber behind s1) drives s0 and s1 with net_af_xdp
# on --core; its rate is what it transmits on s1.

VETH_NS = ("pmcg", "pmcs", "pmck")


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def veth_lab_up():
    veth_lab_down()
    g, s_, k = VETH_NS
    for ns in VETH_NS:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", g, "link", "add", "g0", "type", "veth", "peer", "name", "s0", "netns", s_)
    sh("ip", "-n", s_, "link", "add", "s1", "type", "veth", "peer", "name", "k0", "netns", k)
    for ns, dev in ((g, "g0"), (s_, "s0"), (s_, "s1"), (k, "k0")):
        sh("ip", "-n", ns, "link", "set", dev, "up")
    sh("ip", "-n", k, "link", "set", "k0", "address", "02:00:00:00:00:fe")
    rules = (
        "table netdev sink {\n"
        "  chain in { type filter hook ingress device k0 priority 0; policy drop; }\n"
        "}\n"
    )
    subprocess.run(["ip", "netns", "exec", k, "nft", "-f", "-"], input=rules, text=True, check=True)


def veth_lab_down():
    for ns in VETH_NS:
        sh("ip", "netns", "del", ns, check=False)


def start_generator(pcap, args):
    g = VETH_NS[0]
    cmd = [
        "ip", "netns", "exec", g, "dpdk-testpmd",
        "--lcores", f"0@{args.main_core},1@{args.main_core}",
        "--file-prefix", "pmcmp-gen", "--no-pci", "--no-huge", "-m", "512",
        "--vdev", f"net_pcap0,rx_pcap={pcap},infinite_rx=1",
        "--vdev", "net_af_xdp0,iface=g0",
        "--", "--no-mlockall", "--forward-mode=io", "--port-topology=paired", "--nb-cores=1",
        "--total-num-mbufs=16384", "--stats-period", "1", "-a",
    ]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_testpmd_veth(mode, args):
    s_ = VETH_NS[1]
    cmd = [
        "ip", "netns", "exec", s_, "dpdk-testpmd",
        "-l", f"{args.main_core},{args.core}",
        "--file-prefix", "pmcmp-sut", "--no-pci", "--no-huge", "-m", "512",
        "--vdev", "net_af_xdp0,iface=s0", "--vdev", "net_af_xdp1,iface=s1",
        "--", "--no-mlockall", f"--forward-mode={mode}", "--port-topology=paired",
        "--nb-cores=1", "--burst=32", "--total-num-mbufs=16384", "--stats-period", "1", "-a",
    ]
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as p:
        time.sleep(args.duration)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    # Port 1 (s1) is the second stats block each second: its Tx-pps is the forwarded rate.
    rates = [int(x) for x in re.findall(r"Tx-pps:\s+(\d+)", out)][1::2]
    steady = rates[2:-1] if len(rates) > 4 else rates
    if not steady:
        sys.exit(f"testpmd {mode} (veth): no rate lines:\n{out[-2000:]}")
    return statistics.median(steady)


def run_popmesh_veth(args, tmp):
    a = ".".join(map(str, APPLIANCE_IP))
    cfg = os.path.join(tmp, "popmesh-veth.toml")
    lines = popmesh_head(
        args, False, 512, "pmcmp-sut", ["net_af_xdp0,iface=s0", "net_af_xdp1,iface=s1"]
    ) + [
        f'[[media.ports]]\nname = "in"\nbind = "{a}:{INGRESS_BASE}"\ndevice = "net_af_xdp0"\n'
        'gateway_mac = "02:00:00:00:00:fd"\n',
        f'[[media.ports]]\nname = "out"\nbind = "{SUBSCRIBER_NET}.254:{INGRESS_BASE}"\n'
        'device = "net_af_xdp1"\ngateway_mac = "02:00:00:00:00:fe"\n',
    ]
    for flow in range(args.flows):
        lines.append(
            f'[[sessions]]\nname = "f{flow}"\ningress = "{a}:{INGRESS_BASE + flow}"\n'
            f'subscribers = [{{ addr = "{SUBSCRIBER_NET}.1:{5000 + flow}", egress = "out" }}]\n'
        )
    with open(cfg, "w") as f:
        f.write("\n".join(lines))
    p = subprocess.Popen(["ip", "netns", "exec", VETH_NS[1], args.dataplane, "--config", cfg],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        return sample_rate(p, args, lambda: port_tx_in_ns("out"))
    finally:
        stop(p)


def port_tx_in_ns(port):
    """popmesh_dpdk_port_tx_packets_total of `port`, read inside the SUT namespace."""
    out = sh("ip", "netns", "exec", VETH_NS[1], "curl", "-sf", f"http://{ADMIN}/metrics").stdout
    total = 0.0
    for line in out.splitlines():
        if line.startswith("popmesh_dpdk_port_tx_packets_total{") and f'port="{port}"' in line \
                and 'kind="media"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total, time.monotonic()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flows", type=int, default=1024)
    ap.add_argument("--size", type=int, default=200, help="RTP packet bytes (header + payload)")
    ap.add_argument("--core", type=int, default=1, help="forwarding core")
    ap.add_argument("--main-core", type=int, default=0, help="EAL main thread core")
    ap.add_argument("--no-huge", action="store_true", help="run both without hugepages")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--only-veth", action="store_true", help="run only the veth lab cases")
    ap.add_argument("--veth", action="store_true",
                    help="also run the veth lab (root: namespaces, net_af_xdp)")
    ap.add_argument("--dataplane", default=DATAPLANE,
                    help="popmesh-dataplane binary to run (default: this tree's release build)")
    ap.add_argument("--cases", default="5tswap,io,popmesh_relay,popmesh_fanout8",
                    help="comma-separated replay cases to run (default: all four)")
    ap.add_argument("--json", default=os.path.join(ROOT, "perf", "out", "dpdk_compare.json"))
    args = ap.parse_args()
    args.veth = args.veth or args.only_veth
    selected = [c for c in args.cases.split(",") if c]
    unknown = set(selected) - {"5tswap", "io", "popmesh_relay", "popmesh_fanout8"}
    if unknown:
        ap.error(f"--cases: unknown case(s) {', '.join(sorted(unknown))}")

    if not args.skip_build:
        subprocess.run(
            ["cargo", "build", "--release", "--quiet", "-p", "popmesh-dataplane"], cwd=ROOT, check=True
        )
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    results = {"5tswap": [], "io": [], "popmesh_relay": [], "popmesh_fanout8": []}
    if args.veth:
        results.update({"veth_5tswap": [], "veth_io": [], "veth_popmesh_relay": []})
    with tempfile.TemporaryDirectory(prefix="popmesh-dpdk-compare-") as tmp:
        pcap = os.path.join(tmp, "rtp.pcap")
        # Several packets per flow so sequence numbers advance as in a real stream.
        write_pcap(pcap, args.flows, args.size, args.flows * 4)
        cases = [
            ("5tswap", lambda: run_testpmd("5tswap", pcap, args)),
            ("io", lambda: run_testpmd("io", pcap, args)),
            ("popmesh_relay", lambda: run_popmesh(pcap, 1, args, tmp)),
            ("popmesh_fanout8", lambda: run_popmesh(pcap, 8, args, tmp)),
        ]
        cases = [c for c in cases if c[0] in selected]
        for k in ("5tswap", "io", "popmesh_relay", "popmesh_fanout8"):
            if args.only_veth or k not in selected:
                del results[k]
        if args.only_veth:
            cases = []
        for r in range(args.rounds if cases else 0):
            order = cases if r % 2 == 0 else list(reversed(cases))
            for name, run in order:
                rate = run()
                results[name].append(rate)
                print(f"round {r + 1}: {name:20} {rate / 1e6:7.3f} Mpps", flush=True)
        if args.veth:
            veth_cases = [
                ("veth_5tswap", lambda: run_testpmd_veth("5tswap", args)),
                ("veth_io", lambda: run_testpmd_veth("io", args)),
                ("veth_popmesh_relay", lambda: run_popmesh_veth(args, tmp)),
            ]
            veth_lab_up()
            gen = start_generator(pcap, args)
            try:
                time.sleep(2)
                for r in range(args.rounds):
                    order = veth_cases if r % 2 == 0 else list(reversed(veth_cases))
                    for name, run in order:
                        rate = run()
                        results[name].append(rate)
                        print(f"round {r + 1}: {name:20} {rate / 1e6:7.3f} Mpps", flush=True)
            finally:
                stop(gen)
                veth_lab_down()

    med = {k: statistics.median(v) for k, v in results.items()}
    print()
    print(f"{'case':18} {'median Mpps':>12}")
    for k, v in med.items():
        print(f"{k:18} {v / 1e6:12.3f}")
    ratio = None
    if {"5tswap", "io", "popmesh_relay", "popmesh_fanout8"} <= med.keys():
        ratio = med["popmesh_relay"] / med["5tswap"]
        print(f"\npopmesh relay / testpmd 5tswap = {ratio:.2f}x (goal >= 0.90x)")
        print(f"popmesh relay / testpmd io     = {med['popmesh_relay'] / med['io']:.2f}x")
        print(f"popmesh fan-out 8 egress       = {med['popmesh_fanout8'] / 1e6:.3f} Mpps")
    if args.veth:
        print(f"veth lab: popmesh relay / testpmd 5tswap = "
              f"{med['veth_popmesh_relay'] / med['veth_5tswap']:.2f}x, / io = "
              f"{med['veth_popmesh_relay'] / med['veth_io']:.2f}x")
    with open(args.json, "w") as f:
        json.dump(
            {
                "args": vars(args),
                "rounds": results,
                "median_pps": med,
                "relay_vs_5tswap": ratio,
                "kernel": os.uname().release,
            },
            f,
            indent=2,
        )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
