"""Top heap sites at the peak, from `heaptrack_print -p` output on stdin.

Every backtrace is charged to its innermost frame in the gateway's own source
(`gateway/src/...`), so a line names the gateway code that made the allocation (the type
allocated is the frame below it). usage: top-sites.py CONNECTIONS [LIMIT] < peaks.txt
"""

import re
import sys
from collections import defaultdict

SIZE = re.compile(r"^\s*([0-9.]+)([KMGB]?) (?:peak memory )?consumed over (\d+) calls from")
AT = re.compile(r"^\s+at (\S+):(\d+)")


def to_bytes(n, unit):
    return float(n) * {"": 1, "B": 1, "K": 1e3, "M": 1e6, "G": 1e9}[unit]


def main():
    conns = max(int(sys.argv[1]), 1)
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    sites = defaultdict(lambda: [0.0, 0])  # site -> [bytes, calls]
    entries = []  # (bytes, calls, frames) of each backtrace
    current = None
    for line in sys.stdin:
        m = SIZE.match(line)
        if m:
            top = "peak memory" in line
            current = [to_bytes(m.group(1), m.group(2)), int(m.group(3)), []]
            if top:
                common = current[2]
                current = None
                top_frames = common
                continue
            current[2] = list(top_frames)
            entries.append(current)
            continue
        m = AT.match(line)
        if m:
            target = current[2] if current is not None else top_frames
            target.append((m.group(1), int(m.group(2)), prev))
        prev = line.strip()
    for size, calls, frames in entries:
        ours = [f for f in frames if f[0].startswith("gateway/src/")]
        site = f"{ours[0][0]}:{ours[0][1]} ({ours[0][2][:60]})" if ours else "(outside the gateway's code)"
        sites[site][0] += size
        sites[site][1] += calls
    print("| peak bytes | bytes / connection | allocations | innermost gateway frame |")
    print("|---:|---:|---:|---|")
    for site, (size, calls) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:limit]:
        print(f"| {size:,.0f} | {size / conns:,.0f} | {calls:,} | `{site}` |")


prev = ""
top_frames = []
main()
