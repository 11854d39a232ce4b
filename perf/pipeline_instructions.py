#!/usr/bin/env python3
"""Instructions per packet of the media pipeline, counted by valgrind (callgrind), not timed.

Time on this kind of VM moves 10-30% between runs; an instruction count does not, so small
changes to the pipeline can be compared exactly. Each case runs the `pipeline_instructions`
example twice under callgrind, with and without its `Pipeline::process` calls, and reports
(difference of total instructions) / packets. It says nothing about cache misses: use the
criterion bench (`cargo bench -p popmesh-media --bench pipeline`) for large tables.

Usage: python3 perf/pipeline_instructions.py [--bursts 20000] [--flows 1024] [--json FILE]
Needs valgrind (`apt-get install valgrind`).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "target", "release", "examples", "pipeline_instructions")
CASES = [("ethernet", 1), ("datagram", 1), ("ethernet", 8), ("datagram", 8)]


def instructions(args, framing, subscribers, skip):
    cmd = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        EXAMPLE, framing, str(subscribers), str(args.bursts), str(args.flows),
    ]
    if skip:
        cmd.append("skip")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    m = re.search(r"refs:\s+([\d,]+)", out)
    if not m:
        sys.exit(f"no instruction count in valgrind's output:\n{out[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bursts", type=int, default=20000, help="bursts of 32 packets per run")
    ap.add_argument("--flows", type=int, default=1024)
    ap.add_argument("--json", default=os.path.join(ROOT, "perf", "out", "pipeline_instructions.json"))
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "popmesh-media",
         "--example", "pipeline_instructions"],
        cwd=ROOT, check=True,
    )
    packets = args.bursts * 32
    results = {}
    print(f"{'case':24} {'instructions/packet':>20}")
    for framing, subscribers in CASES:
        with_process = instructions(args, framing, subscribers, False)
        without = instructions(args, framing, subscribers, True)
        per_packet = (with_process - without) / packets
        name = f"{framing} fan-out {subscribers}"
        results[name] = per_packet
        print(f"{name:24} {per_packet:20.1f}", flush=True)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"flows": args.flows, "bursts": args.bursts, "per_packet": results}, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
