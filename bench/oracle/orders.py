#!/usr/bin/env python3
"""orders-window / orders-dedup / orders-sliding of bench/WORKLOADS.md, answered exactly in batch.

usage: orders.py EVENTS [--dedup | --sliding] [--json]

Counts orders and sums their amounts per region and one-minute tumbling window
of event time, over orders 0 .. EVENTS-1 (with --dedup, only the first order of
each order_id counts; with --sliding, in 1-hour windows sliding by 10 s). Prints `outputs=N checksum=C`; with --json, first a line
holding the rows as a JSON list of {"region", "window_start", "count", "sum"},
sorted by (window_start, region).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402

USAGE = "usage: orders.py EVENTS [--dedup | --sliding] [--json]"


def main(argv):
    flags = {a for a in argv if a.startswith("--")}
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) != 1 or not flags <= {"--dedup", "--sliding", "--json"} or {"--dedup", "--sliding"} <= flags:
        sys.exit(USAGE)
    events = workloads.parse_events(positional[0], USAGE)
    if "--sliding" in flags:
        rows = workloads.orders_sliding(events)
    else:
        rows = workloads.orders_window(events, dedup="--dedup" in flags)
    if "--json" in flags:
        keys = ("region", "window_start", "count", "sum")
        print(json.dumps([dict(zip(keys, row)) for row in rows]))
    print(workloads.report(map(workloads.region_hash, rows)))


if __name__ == "__main__":
    main(sys.argv[1:])
