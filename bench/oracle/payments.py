#!/usr/bin/env python3
"""orders-payments of bench/WORKLOADS.md, answered exactly in batch.

usage: payments.py EVENTS

Generates orders 0 .. EVENTS-1 and the payments of those order numbers, joins
every order (re-sent duplicates included) with the payment of its order_id paid
within [order time, order time + 2 min], and counts the joined rows and sums the
order amounts per order region and one-minute window of the payment time.
Prints `outputs=N checksum=C`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402

USAGE = "usage: payments.py EVENTS"


def main(argv):
    if len(argv) != 1:
        sys.exit(USAGE)
    print(workloads.answer("orders-payments", workloads.parse_events(argv[0], USAGE)))


if __name__ == "__main__":
    main(sys.argv[1:])
