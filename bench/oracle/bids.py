#!/usr/bin/env python3
"""The Nexmark-shaped bid queries of bench/WORKLOADS.md, answered exactly in batch.

usage: bids.py QUERY EVENTS      QUERY: q0 | q1 | q2 | q5 | q7

Runs QUERY over bids 0 .. EVENTS-1 and prints `outputs=N checksum=C`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402

BID_QUERIES = ("q0", "q1", "q2", "q5", "q7")
USAGE = "usage: bids.py QUERY EVENTS      QUERY: " + " | ".join(BID_QUERIES)


def main(argv):
    if len(argv) != 2 or argv[0] not in BID_QUERIES:
        sys.exit(USAGE)
    print(workloads.answer(argv[0], workloads.parse_events(argv[1], USAGE)))


if __name__ == "__main__":
    main(sys.argv[1:])
