#!/usr/bin/env python3
"""Side-by-side loopback relay comparison: popmesh (io_uring worker) vs popmesh-plain-relay
(recvmmsg/sendmmsg), same traffic, same run.

The relay under test is pinned to one core (--sut-core), the sender and sinks to the other
(--load-core). For each case it runs both relays in turn, alternating the order over --rounds
rounds, and reports per relay:

  * CPU time per relayed packet at a fixed offered rate (--rate), from the relay's threads'
    /proc/<pid>/task/*/schedstat (ns of on-CPU time, user + system);
  * throughput at an unpaced offered load (skipped with --no-peak), and packets relayed per
    CPU-second there
    (the capacity of one core when the load generator cannot saturate the relay).

Medians over rounds are printed with the ratio plain/popmesh (> 1 means popmesh is better).
Everything is bounded: each run lasts --duration seconds plus a short drain.

Usage: python3 perf/relay_compare.py [--duration 4] [--rounds 3] [--rate 50000] [--size 200]
                                    [--fanout 1 --fanout 4] [--json perf/out/relay_compare.json]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
INGRESS_PORT = 47000
SINK_BASE = 47100
ADMIN = "127.0.0.1:47900"


def build(extra_packages=(), low_priority=False):
    """cargo build --release of the binaries used here; low_priority: nice 19, one job
    (a shared machine)."""
    cmd = ["cargo", "build", "--release", "--quiet", "-p", "popmesh-dataplane", "-p", "popmesh-perf"]
    for p in extra_packages:
        cmd += ["-p", p]
    if low_priority:
        cmd = ["nice", "-n", "19"] + cmd + ["-j", "1"]
    subprocess.run(cmd, cwd=ROOT, check=True)


def cpu_ns(pid):
    """On-CPU nanoseconds of every thread of pid (user + system)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def thread_cpu_ns(pid, comm):
    """On-CPU nanoseconds of the thread of pid whose name (/proc/.../comm) is comm, or None."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != comm:
                    continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                return int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return None


def http_get(path):
    with urllib.request.urlopen(f"http://{ADMIN}{path}", timeout=2) as r:
        return r.read().decode()


def metric_sum(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def popmesh_config(path, sut_core, fanout, coalesce, gso=True):
    subs = ", ".join(f'"127.0.0.1:{SINK_BASE + i}"' for i in range(fanout))
    with open(path, "w") as f:
        f.write(
            f"""
[admin]
listen = "{ADMIN}"
[log]
level = "warn"
[media]
backend = "uring"
cores = [{sut_core}]
# Wait in the kernel as soon as the queue is empty: CPU time then measures work, not spinning.
[media.idle]
spin_polls = 0
max_wait = "1ms"
coalesce = "{coalesce}"
[media.uring]
gso = {str(gso).lower()}
[[media.ports]]
name = "in"
bind = "127.0.0.1:{INGRESS_PORT}"
[[sessions]]
name = "compare"
ingress = "127.0.0.1:{INGRESS_PORT}"
subscribers = [{subs}]
"""
        )


def start_relay(kind, args, fanout, tmp, log=None):
    """log: a file for popmesh-dataplane's stderr (default: inherited)."""
    if kind == "popmesh":
        cfg = os.path.join(tmp, "popmesh.toml")
        popmesh_config(cfg, args.sut_core, fanout, args.coalesce, not getattr(args, "no_gso", False))
        p = subprocess.Popen([os.path.join(BIN, "popmesh-dataplane"), "--config", cfg], stderr=log)
        deadline = time.time() + 15
        while True:
            try:
                if http_get("/readyz").startswith("ready"):
                    break
            except OSError:
                pass
            if p.poll() is not None or time.time() > deadline:
                p.kill()
                p.wait()
                raise RuntimeError("popmesh-dataplane did not become ready")
            time.sleep(0.05)
        return p
    cmd = [
        os.path.join(BIN, "popmesh-plain-relay"),
        "--listen", f"127.0.0.1:{INGRESS_PORT}",
        # Outlives the sender by a little; it then exits by itself and writes its JSON.
        "--duration", str(args.duration + 2),
        "--core", str(args.sut_core),
        "--json", os.path.join(tmp, "plain.json"),
    ]
    for i in range(fanout):
        cmd += ["--to", f"127.0.0.1:{SINK_BASE + i}"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    # It prints "listening ADDR" once its socket is bound.
    line = p.stdout.readline()
    if "listening" not in line:
        raise RuntimeError(f"plain relay did not start: {line!r}")
    return p


def relayed_in(kind, p, tmp):
    """Packets the relay received, from its own counters."""
    if kind == "popmesh":
        return metric_sum(http_get("/metrics"), "popmesh_media_rx_packets_total")
    return None  # read from its JSON after it exits


def stop_relay(kind, p, tmp):
    if kind == "popmesh":
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
        return None
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    try:
        with open(os.path.join(tmp, "plain.json")) as f:
            return json.load(f)["packets_in"]
    except (OSError, ValueError, KeyError):
        return None


def one_run(kind, args, fanout, rate, tmp):
    sink_json = os.path.join(tmp, "sink.json")
    sink_cmd = ["taskset", "-c", str(args.load_core), os.path.join(BIN, "popmesh-rtp"), "sink",
                "--duration", str(args.duration + 4), "--idle-exit", "1", "--json", sink_json]
    for i in range(fanout):
        sink_cmd += ["--listen", f"127.0.0.1:{SINK_BASE + i}"]
    sink = subprocess.Popen(sink_cmd, stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    relay = start_relay(kind, args, fanout, tmp)
    try:
        c0 = cpu_ns(relay.pid)
        t0 = time.time()
        subprocess.run(
            ["taskset", "-c", str(args.load_core), os.path.join(BIN, "popmesh-rtp"), "send",
             "--to", f"127.0.0.1:{INGRESS_PORT}", "--rate", str(rate), "--size", str(args.size),
             "--streams", "1", "--duration", str(args.duration), "--batch", "32",
             "--json", os.path.join(tmp, "send.json")],
            check=True, stdout=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # let the relay drain
        c1 = cpu_ns(relay.pid)
        wall = time.time() - t0
        pkts_in = relayed_in(kind, relay, tmp)
    finally:
        plain_in = stop_relay(kind, relay, tmp)
    sink.wait(timeout=args.duration + 10)
    pkts_in = pkts_in if pkts_in is not None else plain_in
    with open(sink_json) as f:
        sink_report = json.load(f)
    with open(os.path.join(tmp, "send.json")) as f:
        sent = json.load(f)["packets"]
    delivered = sink_report["total"]["packets"]
    cpu = c1 - c0
    relayed = (pkts_in or 0)
    return {
        "sent": sent,
        "relayed_in": relayed,
        "delivered": delivered,
        "cpu_s": cpu / 1e9,
        "wall_s": wall,
        "cpu_ns_per_pkt": cpu / relayed if relayed else None,
        "delivered_pps": delivered / fanout / args.duration,
        "pkts_per_cpu_s": relayed / (cpu / 1e9) if cpu else None,
        "latency_p50_us": (sink_report["total"].get("latency_us") or {}).get("p50_us"),
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=50000, help="fixed offered rate, packets/s")
    ap.add_argument("--size", type=int, default=200, help="RTP packet size, bytes")
    ap.add_argument("--fanout", type=int, action="append", help="subscribers (repeatable)")
    ap.add_argument("--coalesce", default="50us",
                    help="popmesh media.idle.coalesce (interrupt moderation window)")
    ap.add_argument("--no-gso", action="store_true",
                    help="popmesh media.uring.gso = false (one sendmsg per datagram)")
    ap.add_argument("--sut-core", type=int, default=1)
    ap.add_argument("--load-core", type=int, default=0)
    ap.add_argument("--no-peak", action="store_true", help="skip the unpaced runs")
    ap.add_argument("--json", default=os.path.join(ROOT, "perf", "out", "relay_compare.json"))
    args = ap.parse_args()
    fanouts = args.fanout or [1, 4]
    build()
    results = []
    with tempfile.TemporaryDirectory(prefix="popmesh-compare-") as tmp:
        for fanout in fanouts:
            for label, rate in [("fixed", args.rate)] + ([] if args.no_peak else [("peak", 0)]):
                runs = {"popmesh": [], "plain": []}
                for r in range(args.rounds):
                    order = ["popmesh", "plain"] if r % 2 == 0 else ["plain", "popmesh"]
                    for kind in order:
                        res = one_run(kind, args, fanout, rate, tmp)
                        runs[kind].append(res)
                        print(f"fanout {fanout} {label:5} round {r} {kind:7}: "
                              f"in {res['relayed_in']:.0f} delivered {res['delivered']} "
                              f"cpu {res['cpu_s']:.3f}s "
                              f"{(res['cpu_ns_per_pkt'] or 0):.0f} ns/pkt", flush=True)
                summary = {}
                for kind, rs in runs.items():
                    summary[kind] = {k: median([x[k] for x in rs]) for k in rs[0]}
                results.append({"fanout": fanout, "load": label, "rate": rate,
                                "size": args.size, "median": summary, "runs": runs})
    print()
    print(f"{'case':24} {'metric':18} {'popmesh':>12} {'plain':>12} {'plain/popmesh':>14}")
    for res in results:
        case = f"fanout {res['fanout']}, {res['load']}" + (f" {res['rate']}pps" if res["rate"] else "")
        pm, pl = res["median"]["popmesh"], res["median"]["plain"]
        for metric in ["cpu_ns_per_pkt", "delivered_pps", "pkts_per_cpu_s", "latency_p50_us"]:
            a, b = pm.get(metric), pl.get(metric)
            if metric in ("cpu_ns_per_pkt", "latency_p50_us"):
                ratio = (b / a) if a and b else None
            else:
                ratio = (a / b) if a and b else None
            fmt = lambda v: "-" if v is None else f"{v:,.0f}"
            print(f"{case:24} {metric:18} {fmt(a):>12} {fmt(b):>12} "
                  f"{'-' if ratio is None else f'{ratio:.2f}x':>14}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=2)
    print(f"\nwrote {args.json}")
    print("ratio > 1: popmesh better (less CPU per packet, more packets per second or per CPU-second)")


if __name__ == "__main__":
    sys.exit(main())
