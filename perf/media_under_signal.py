#!/usr/bin/env python3
"""Media throughput with and without signaling load: the media lane (popmesh-dataplane, io_uring,
one worker pinned to --media-core) relays the same RTP load in two phases, alternating order over
--rounds rounds:

  * quiet:  only the media load (popmesh-rtp send -> popmesh-dataplane -> popmesh-rtp sink);
  * loaded: the same while popmesh-signal-bench --lane-only drives the signaling lane (mutual TLS
    on both legs, open-loop HTTP/2 at --signal-rate requests/s) with its lane pinned to
    --signal-core.

The signaling lane must never sit on a media core. On a 2-CPU machine the only other CPU is the
load generators' (CPU 0), so the lane, its upstream service, its HTTP/2 load and the RTP sender
and sink all share CPU 0 while the media worker has CPU 1 to itself. A drop in the loaded phase
can therefore come from the sender being starved (it then offers fewer packets: see sent_pps)
rather than from the media lane; the fixed-rate figures separate the two, the unpaced (peak)
figures cannot and are labelled as generator-limited.

Per phase: packets sent (sender's JSON), received and transmitted by the daemon (/metrics),
delivered (sink's JSON), loss, one-way latency P50/P99 (sink), the media worker thread's CPU ns
per packet (thread `media-0`, /proc/<pid>/task/*/schedstat over the send window), and, loaded
only, the signaling requests completed per second with their P50/P99. Medians over rounds are
printed side by side with the delta and the per-round spread (max - min), which is the noise to
judge a delta against. Every process is bounded and killed on exit.

Usage: python3 perf/media_under_signal.py [--duration 4] [--rounds 3] [--rate 50000 [--rate N]]
                                         [--size 200] [--signal-rate 2000] [--no-peak]
                                         [--json perf/out/media_under_signal.json]
"""

import argparse
import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import relay_compare as rc

# Ports apart from relay_compare.py's, so both can run on one machine; rc's helpers (config,
# /metrics, /readyz) read these module globals when called.
rc.INGRESS_PORT = 47200
rc.SINK_BASE = 47300
rc.ADMIN = "127.0.0.1:47901"
MEDIA_THREAD = "media-0"  # popmesh-dataplane names worker N `media-N`
SIGNAL_BIN = os.path.join(rc.BIN, "popmesh-signal-bench")
SETTLE_S = 0.5  # after the signaling load starts (and in quiet, for symmetry) before sending

CHILDREN = []


def spawn(cmd, **kw):
    CHILDREN[:] = [c for c in CHILDREN if c.poll() is None]
    p = subprocess.Popen(cmd, **kw)
    CHILDREN.append(p)
    return p


def kill_children():
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    CHILDREN.clear()


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def start_signal_load(args, tmp):
    """popmesh-signal-bench --lane-only on --signal-core; returns once its load starts."""
    out = open(os.path.join(tmp, "signal.json"), "w")
    err_path = os.path.join(tmp, "signal.err")
    err = open(err_path, "w")
    cmd = ["taskset", "-c", str(args.signal_core), SIGNAL_BIN, "--lane-only", "--json",
           "--lane-core", str(args.signal_core), "--load-core", str(args.load_core),
           "--rate", str(args.signal_rate), "--rounds", "1", "--websockets", "0",
           # Covers the settle time, the send, the drain and the counter reads.
           "--duration", str(args.duration + 2)]
    p = spawn(cmd, stdout=out, stderr=err)
    out.close()
    err.close()
    deadline = time.time() + 30
    while True:
        with open(err_path) as f:
            if "lane-only: load starts" in f.read():
                return p
        if p.poll() is not None or time.time() > deadline:
            with open(err_path) as f:
                raise RuntimeError(f"popmesh-signal-bench did not start: {f.read()!r}")
        time.sleep(0.02)


def finish_signal_load(p, args, tmp):
    try:
        p.wait(timeout=args.duration + 20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise RuntimeError("popmesh-signal-bench did not finish")
    if p.returncode != 0:
        with open(os.path.join(tmp, "signal.err")) as f:
            raise RuntimeError(f"popmesh-signal-bench failed: {f.read()!r}")
    with open(os.path.join(tmp, "signal.json")) as f:
        return json.load(f)


def media_counters():
    m = rc.http_get("/metrics")
    return {
        "rx": rc.metric_sum(m, "popmesh_media_rx_packets_total"),
        "tx": rc.metric_sum(m, "popmesh_media_tx_packets_total"),
        "drops": rc.metric_sum(m, "popmesh_media_drops_total"),
    }


def one_run(phase, args, rate, tmp):
    sink_json = os.path.join(tmp, "sink.json")
    send_json = os.path.join(tmp, "send.json")
    for f in (sink_json, send_json):
        if os.path.exists(f):
            os.remove(f)
    # Long enough for the signaling bench to start; --idle-exit ends it once the sender stops.
    sink = spawn(["taskset", "-c", str(args.load_core), os.path.join(rc.BIN, "popmesh-rtp"), "sink",
                  "--listen", f"127.0.0.1:{rc.SINK_BASE}", "--duration", str(args.duration + 40),
                  "--idle-exit", "1", "--json", sink_json], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    # The daemon's start-up warnings (CPU 1 not isolated, IRQs on it) go to a log file.
    log_path = os.path.join(tmp, f"dataplane-{phase}.log")
    with open(log_path, "w") as log:
        try:
            relay = rc.start_relay("popmesh", args, 1, tmp, log=log)
        except RuntimeError:
            with open(log_path) as f:
                sys.stderr.write(f.read())
            raise
    CHILDREN.append(relay)
    sig = None
    try:
        if phase == "loaded":
            sig = start_signal_load(args, tmp)
        time.sleep(SETTLE_S)
        before = media_counters()
        w0 = rc.thread_cpu_ns(relay.pid, MEDIA_THREAD)
        p0 = rc.cpu_ns(relay.pid)
        send = spawn(["taskset", "-c", str(args.load_core), os.path.join(rc.BIN, "popmesh-rtp"),
                      "send", "--to", f"127.0.0.1:{rc.INGRESS_PORT}", "--rate", str(rate),
                      "--size", str(args.size), "--streams", "1", "--duration", str(args.duration),
                      "--batch", "32", "--json", send_json], stdout=subprocess.DEVNULL)
        if send.wait(timeout=args.duration + 10) != 0:
            raise RuntimeError("popmesh-rtp send failed")
        time.sleep(0.3)  # let the relay drain
        w1 = rc.thread_cpu_ns(relay.pid, MEDIA_THREAD)
        p1 = rc.cpu_ns(relay.pid)
        after = media_counters()
        signal_report = finish_signal_load(sig, args, tmp) if sig else None
    finally:
        rc.stop_relay("popmesh", relay, tmp)
        if sig is not None and sig.poll() is None:
            sig.kill()
            sig.wait()
    sink.wait(timeout=args.duration + 45)
    with open(sink_json) as f:
        sink_total = json.load(f)["total"]
    with open(send_json) as f:
        sent_report = json.load(f)
    if w0 is None or w1 is None:
        raise RuntimeError(f"no thread named {MEDIA_THREAD} in popmesh-dataplane")
    sent = sent_report["packets"]
    send_s = sent_report["duration_s"] or args.duration
    rx = after["rx"] - before["rx"]
    tx = after["tx"] - before["tx"]
    delivered = sink_total["packets"]
    lat = sink_total.get("latency_us") or {}
    worker_ns = w1 - w0
    res = {
        "sent": sent,
        "sent_pps": sent_report["achieved_pps"],
        "daemon_rx": rx,
        "daemon_tx": tx,
        "daemon_drops": after["drops"] - before["drops"],
        "delivered": delivered,
        "relayed_pps": tx / send_s,
        "delivered_pps": delivered / send_s,
        "lost_before_daemon": sent - rx,
        "loss_pct": 100.0 * (sent - delivered) / sent if sent else None,
        "sink_seq_loss": sink_total["loss"],
        "latency_p50_us": lat.get("p50_us"),
        "latency_p99_us": lat.get("p99_us"),
        "worker_cpu_ns_per_pkt": worker_ns / rx if rx else None,
        "worker_cpu_pct": 100.0 * worker_ns / 1e9 / send_s,
        "daemon_cpu_ns_per_pkt": (p1 - p0) / rx if rx else None,
    }
    if signal_report is not None:
        res.update({
            "signal_requests_ok": signal_report["requests_ok"],
            "signal_errors": signal_report["errors"],
            "signal_rps": signal_report["completed_rps"],
            "signal_p50_us": signal_report["lane_p50_us"],
            "signal_p99_us": signal_report["lane_p99_us"],
            "signal_lane_cpu_pct": signal_report["lane_cpu_percent"],
        })
    return res


ROWS = [
    ("sent_pps", "{:,.0f}"), ("relayed_pps", "{:,.0f}"), ("delivered_pps", "{:,.0f}"),
    ("loss_pct", "{:.3f}"), ("lost_before_daemon", "{:,.0f}"), ("daemon_drops", "{:,.0f}"),
    ("latency_p50_us", "{:,.1f}"), ("latency_p99_us", "{:,.1f}"),
    ("worker_cpu_ns_per_pkt", "{:,.0f}"), ("worker_cpu_pct", "{:.1f}"),
    ("signal_rps", "{:,.0f}"), ("signal_p50_us", "{:,.0f}"), ("signal_p99_us", "{:,.0f}"),
    ("signal_errors", "{:,.0f}"), ("signal_lane_cpu_pct", "{:.1f}"),
]


def spread(values):
    values = [v for v in values if v is not None]
    return max(values) - min(values) if len(values) > 1 else None


def print_table(results):
    fmt_v = lambda v, f: "-" if v is None else f.format(v)
    print(f"{'case':22} {'metric':22} {'quiet':>11} {'loaded':>11} {'delta':>10} {'delta%':>8} "
          f"{'spread q':>10} {'spread l':>10}")
    for res in results:
        case = res["case"]
        q, l = res["median"]["quiet"], res["median"]["loaded"]
        for metric, f in ROWS:
            a, b = q.get(metric), l.get(metric)
            if a is None and b is None:
                continue
            delta = b - a if a is not None and b is not None else None
            pct = 100.0 * delta / a if delta is not None and a else None
            sq = spread([r.get(metric) for r in res["runs"]["quiet"]])
            sl = spread([r.get(metric) for r in res["runs"]["loaded"]])
            print(f"{case:22} {metric:22} {fmt_v(a, f):>11} {fmt_v(b, f):>11} "
                  f"{fmt_v(delta, f if metric != 'loss_pct' else '{:+.3f}'):>10} "
                  f"{'-' if pct is None else f'{pct:+.1f}':>8} {fmt_v(sq, f):>10} {fmt_v(sl, f):>10}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=4, help="seconds of media load per phase")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, action="append",
                    help="fixed offered media rate, packets/s (repeatable; default 50000)")
    ap.add_argument("--size", type=int, default=200, help="RTP packet size, bytes")
    ap.add_argument("--no-peak", action="store_true", help="skip the unpaced runs")
    ap.add_argument("--signal-rate", type=int, default=2000, help="signaling requests/s")
    ap.add_argument("--coalesce", default="50us",
                    help="popmesh media.idle.coalesce (interrupt moderation window)")
    ap.add_argument("--media-core", type=int, default=1)
    ap.add_argument("--signal-core", type=int, default=0,
                    help="signaling lane CPU (never the media core)")
    ap.add_argument("--load-core", type=int, default=0, help="RTP sender, sink, HTTP/2 load")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--json", default=os.path.join(rc.ROOT, "perf", "out", "media_under_signal.json"))
    args = ap.parse_args()
    if args.signal_core == args.media_core:
        ap.error("--signal-core must not be the media core")
    args.sut_core = args.media_core  # what rc.start_relay reads
    rates = args.rate or [50000]
    cases = [(f"fixed {r} pps", r) for r in rates]
    if not args.no_peak:
        cases.append(("peak (generator-bound)", 0))
    atexit.register(kill_children)
    signal.signal(signal.SIGTERM, on_signal)
    if not args.no_build:
        rc.build(["popmesh-signal-bench"], low_priority=True)
    print(f"media worker on CPU {args.media_core}; signaling lane on CPU {args.signal_core}, "
          f"sharing it with the RTP sender/sink and the HTTP/2 load (CPU {args.load_core})",
          flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="popmesh-media-signal-") as tmp:
        for label, rate in cases:
            runs = {"quiet": [], "loaded": []}
            for r in range(args.rounds):
                order = ["quiet", "loaded"] if r % 2 == 0 else ["loaded", "quiet"]
                for phase in order:
                    res = one_run(phase, args, rate, tmp)
                    runs[phase].append(res)
                    line = (f"{label:22} round {r} {phase:6}: sent {res['sent_pps']:,.0f} pps, "
                            f"relayed {res['relayed_pps']:,.0f} pps, loss {res['loss_pct']:.3f}%, "
                            f"P50/P99 {res['latency_p50_us'] or 0:.1f}/{res['latency_p99_us'] or 0:.1f} us, "
                            f"worker {res['worker_cpu_ns_per_pkt'] or 0:.0f} ns/pkt")
                    if phase == "loaded":
                        line += (f" | signal {res['signal_rps']:,.0f} req/s "
                                 f"({res['signal_requests_ok']} ok, {res['signal_errors']} err), "
                                 f"P50/P99 {res['signal_p50_us']:.0f}/{res['signal_p99_us']:.0f} us")
                    print(line, flush=True)
            summary = {ph: {k: rc.median([x.get(k) for x in rs]) for k in rs[0]}
                       for ph, rs in runs.items()}
            summary["quiet"].update({k: None for k in summary["loaded"] if k not in summary["quiet"]})
            results.append({"case": label, "rate": rate, "size": args.size,
                            "median": summary, "runs": runs})
    print()
    print_table(results)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=2)
    print(f"\nwrote {args.json}")
    print("medians over rounds; delta = loaded - quiet; spread = max - min over rounds of that phase")
    return 0


if __name__ == "__main__":
    sys.exit(main())
