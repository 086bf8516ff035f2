#!/usr/bin/env python3
"""Batch reference implementation of the workloads in bench/WORKLOADS.md.

Everything here is computed the slow, direct way: generate every event from its
number, put it in every window it belongs to, and pick the answers out of
plain dictionaries. Nothing streams, nothing is approximated, so the result is
the exact answer a streaming engine must reproduce.

The thin scripts next to this file (orders.py, payments.py, bids.py) are the
command-line entry points the tests and benchmark scripts call; this module can
also be run directly:

    workloads.py QUERY EVENTS        QUERY: one of QUERIES below

Python 3 standard library only.
"""
import sys
from collections import Counter, namedtuple

# ---------------------------------------------------------------------------
# Arithmetic: 64-bit wrapping integers, as in WORKLOADS.md.

U64 = (1 << 64) - 1
T0 = 1_700_000_000_000  # epoch milliseconds

REGIONS = ("north", "south", "east", "west")
CHANNELS = ("Google", "Facebook", "Baidu", "Apple")

PAYMENT_SALT = 0x2545F4914F6CDD1D
BID_SALT = 0x5851F42D4C957F2D

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
SLIDE_MS = 10_000  # orders-sliding's slide
PAY_WINDOW_MS = 120_000  # a payment joins an order up to 2 min after it


def mix(z):
    """SplitMix64 finaliser over unsigned 64-bit integers."""
    z = (z + 0x9E3779B97F4A7C15) & U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & U64
    return z ^ (z >> 31)


def to_signed(x):
    """An unsigned 64-bit value read as a two's-complement signed one."""
    x &= U64
    return x - (1 << 64) if x >> 63 else x


def checksum(hashes):
    """The run checksum: wrapping sum of mix(h) over the row hashes, signed."""
    total = 0
    for h in hashes:
        total = (total + mix(h & U64)) & U64
    return to_signed(total)


def report(hashes):
    """The `outputs=N checksum=C` line for a list of row hashes."""
    hashes = list(hashes)
    return "outputs=%d checksum=%d" % (len(hashes), checksum(hashes))


# ---------------------------------------------------------------------------
# Stream `orders`.

Order = namedtuple("Order", "order_id region amount time")


def is_resent(n):
    """Whether order number n repeats order n - 1 (a re-sent duplicate)."""
    return n > 0 and (mix(n) >> 20) % 100 < 2


def order(n):
    """Order number n. A re-sent duplicate is the whole earlier order again."""
    while is_resent(n):
        n -= 1
    r = mix(n)
    return Order(
        order_id="ORD-%d" % n,
        region=REGIONS[r % 4],
        amount=10 + (r >> 8) % 991,
        time=T0 + n - (r >> 32) % 5000,
    )


# ---------------------------------------------------------------------------
# Stream `payments`: at most one per order number.

Payment = namedtuple("Payment", "order_id amount time")


def payment(n, the_order=None):
    """The payment generated for order number n, or None when there is none.
    `the_order`, if given, is order(n), already computed."""
    if is_resent(n):
        return None
    q = mix(n ^ PAYMENT_SALT)
    if q % 100 < 5:
        return None
    o = the_order or order(n)
    return Payment(o.order_id, o.amount, o.time + 1000 + (q >> 8) % PAY_WINDOW_MS)


# ---------------------------------------------------------------------------
# Stream `bids`.

Bid = namedtuple("Bid", "auction bidder price channel time extra")


def bid(n):
    """Bid number n."""
    r = mix(n)
    s = mix(n ^ BID_SALT)
    block = n // 50
    newest = 1000 + 3 * block
    if r & 1 == 0:
        auction = newest // 100 * 100  # the hot auction of this block
    else:
        auction = newest - (r >> 1) % 100
    return Bid(
        auction=auction,
        bidder=1000 + block - (r >> 16) % min(1000, block + 1),
        price=100 + (r >> 32) % 100_000,
        channel=CHANNELS[s % 4],
        time=T0 + n // 10 - (s >> 8) % 2000,
        extra="x" * (40 + (s >> 24) % 60),
    )


# ---------------------------------------------------------------------------
# Queries. Each returns the output rows; *_hash gives a row's hash.


def window_start(t, size):
    """Start of the epoch-aligned window of `size` ms holding time t."""
    return t - t % size


def region_rows(counts, sums):
    """Rows (region, window_start, count, sum), sorted by (window_start, region)."""
    keys = sorted(counts, key=lambda k: (k[1], k[0]))
    return [(region, start, counts[(region, start)], sums[(region, start)]) for region, start in keys]


def region_hash(row):
    region, start, count, total = row
    return REGIONS.index(region) * 31 + start * 7 + count * 3 + total


def orders_window(events, dedup=False):
    """orders-window (or orders-dedup): per region, 1-minute count and sum(amount)."""
    counts, sums, seen = Counter(), Counter(), set()
    for n in range(events):
        o = order(n)
        if dedup:
            if o.order_id in seen:
                continue
            seen.add(o.order_id)
        key = (o.region, window_start(o.time, MINUTE_MS))
        counts[key] += 1
        sums[key] += o.amount
    return region_rows(counts, sums)


def orders_sliding(events, size=HOUR_MS, slide=SLIDE_MS):
    """orders-sliding: per region, count and sum(amount) in 1-hour windows sliding by 10 s.

    Sums per (region, slide-long bucket) first, then adds up each window's
    buckets: the same rows as assigning every order to its size/slide windows,
    at a cost that does not grow with size/slide (`orders_sliding_by_window`
    does it the direct way, for the tests). `size` is a multiple of `slide`."""
    counts, sums = Counter(), Counter()
    for n in range(events):
        o = order(n)
        key = (o.region, window_start(o.time, slide))
        counts[key] += 1
        sums[key] += o.amount
    window_counts, window_sums = Counter(), Counter()
    for (region, bucket), count in counts.items():
        for start in range(bucket, bucket - size, -slide):
            window_counts[(region, start)] += count
            window_sums[(region, start)] += sums[(region, bucket)]
    return region_rows(window_counts, window_sums)


def orders_sliding_by_window(events, size=HOUR_MS, slide=SLIDE_MS):
    """orders-sliding computed by assigning each order to every window holding it."""
    counts, sums = Counter(), Counter()
    for n in range(events):
        o = order(n)
        newest = window_start(o.time, slide)
        for start in range(newest, newest - size, -slide):
            counts[(o.region, start)] += 1
            sums[(o.region, start)] += o.amount
    return region_rows(counts, sums)


def orders_payments(events):
    """orders-payments: interval join of orders and payments, windowed on the payment time."""
    orders = [order(n) for n in range(events)]
    by_id = {}
    for o in orders:
        by_id.setdefault(o.order_id, []).append(o)
    counts, sums = Counter(), Counter()
    for n in range(events):
        p = payment(n, orders[n])
        if p is None:
            continue
        for o in by_id[p.order_id]:
            if o.time <= p.time <= o.time + PAY_WINDOW_MS:
                key = (o.region, window_start(p.time, MINUTE_MS))
                counts[key] += 1
                sums[key] += o.amount
    return region_rows(counts, sums)


def q0(events):
    return [(b.auction, b.price) for b in map(bid, range(events))]


def q0_hash(row):
    return row[0] + row[1]


def q1(events):
    return [(b.auction, int(b.price * 0.908)) for b in map(bid, range(events))]


def q1_hash(row):
    return row[0] * 31 + row[1]


def q2(events):
    return [(b.auction, b.price) for b in map(bid, range(events)) if b.auction % 123 == 0]


q2_hash = q1_hash


def best_per_window(candidates):
    """From (window_end, auction, value) triples, per window_end the one with the
    largest value, ties going to the smaller auction id; sorted by window_end."""
    best = {}
    for end, auction, value in candidates:
        cur = best.get(end)
        if cur is None or (-value, auction) < (-cur[1], cur[0]):
            best[end] = (auction, value)
    return [(end, a, v) for end, (a, v) in sorted(best.items())]


def q5(events, size=10_000, slide=2_000):
    """Hot items: per sliding window (10 s, every 2 s), the auction with the most bids."""
    per_window = Counter()
    for b in map(bid, range(events)):
        newest_start = window_start(b.time, slide)
        for start in range(newest_start, newest_start - size, -slide):
            per_window[(start + size, b.auction)] += 1
    return best_per_window((end, a, c) for (end, a), c in per_window.items())


def q7(events, size=10_000):
    """Highest bid per tumbling 10 s window."""
    return best_per_window((window_start(b.time, size) + size, b.auction, b.price) for b in map(bid, range(events)))


def end_auction_hash(row):
    end, auction, value = row
    return end * 31 + auction * 7 + value


# name -> (rows function, row hash)
QUERIES = {
    "orders-window": (orders_window, region_hash),
    "orders-dedup": (lambda events: orders_window(events, dedup=True), region_hash),
    "orders-sliding": (orders_sliding, region_hash),
    "orders-payments": (orders_payments, region_hash),
    "q0": (q0, q0_hash),
    "q1": (q1, q1_hash),
    "q2": (q2, q2_hash),
    "q5": (q5, end_auction_hash),
    "q7": (q7, end_auction_hash),
}


def answer(query, events):
    """The `outputs=N checksum=C` line of `query` over `events` events."""
    rows, row_hash = QUERIES[query]
    return report(map(row_hash, rows(events)))


# ---------------------------------------------------------------------------
# Command line helpers for the thin scripts.


def parse_events(text, usage):
    try:
        events = int(text)
    except ValueError:
        events = -1
    if events < 0:
        sys.exit("%s\nEVENTS must be a non-negative integer, not %r" % (usage, text))
    return events


def main(argv):
    usage = "usage: workloads.py QUERY EVENTS   (QUERY: %s)" % " | ".join(QUERIES)
    if len(argv) != 2 or argv[0] not in QUERIES:
        sys.exit(usage)
    print(answer(argv[0], parse_events(argv[1], usage)))


if __name__ == "__main__":
    main(sys.argv[1:])
