#!/usr/bin/env python3
"""Self-checks of the batch oracles (bench/oracle), standard library only.

    python3 bench/oracle/test_oracles.py
    python3 -m unittest bench/oracle/test_oracles.py

Checks the answers bench/WORKLOADS.md states, properties of the generators that
can be checked by hand, the queries against brute-force versions on small
inputs, and the command-line scripts' output format. Takes a few seconds.
"""
import json
import os
import subprocess
import sys
import unittest
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import workloads as w  # noqa: E402


def script(*args):
    """Runs one of the oracle scripts; returns its stdout lines."""
    done = subprocess.run([sys.executable, os.path.join(HERE, args[0])] + [str(a) for a in args[1:]],
                          capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


class KnownAnswers(unittest.TestCase):
    """The examples WORKLOADS.md states (first 300,000 orders)."""

    def test_orders_window_300000(self):
        self.assertEqual(script("orders.py", 300_000), ["outputs=24 checksum=-6933334737448946781"])

    def test_orders_payments_300000(self):
        self.assertEqual(script("payments.py", 300_000), ["outputs=32 checksum=2425711992606558013"])


class Arithmetic(unittest.TestCase):
    def test_mix_is_splitmix64(self):
        # The first outputs of SplitMix64 seeded with 0 are mix(0), mix(0x9E3779B97F4A7C15), ...
        self.assertEqual(w.mix(0), 0xE220A8397B1DCDAF)
        self.assertEqual(w.mix(0x9E3779B97F4A7C15), 0x6E789E6AA1B965F4)
        self.assertTrue(all(0 <= w.mix(n) <= w.U64 for n in (1, 2**63, w.U64)))

    def test_checksum_wraps_and_is_signed(self):
        self.assertEqual(w.checksum([]), 0)
        self.assertEqual(w.to_signed(w.U64), -1)
        self.assertEqual(w.to_signed(1 << 63), -(1 << 63))
        h = [5, 7, 11]
        self.assertEqual(w.checksum(h), w.to_signed(sum(map(w.mix, h))))
        self.assertEqual(w.checksum(h), w.checksum(reversed(h)))  # order-independent
        self.assertEqual(w.report(h), "outputs=3 checksum=%d" % w.checksum(h))


class Orders(unittest.TestCase):
    N = 20_000

    def test_duplicate_rule(self):
        resent = 0
        for n in range(self.N):
            o = w.order(n)
            if w.is_resent(n):
                resent += 1
                self.assertEqual(o, w.order(n - 1), n)
            else:
                self.assertEqual(o.order_id, "ORD-%d" % n)
        self.assertFalse(w.is_resent(0))
        self.assertAlmostEqual(resent / self.N, 0.02, delta=0.005)

    def test_fields_in_range(self):
        for n in range(self.N):
            if w.is_resent(n):
                continue
            o = w.order(n)
            self.assertIn(o.region, w.REGIONS)
            self.assertTrue(10 <= o.amount <= 1000)
            self.assertTrue(w.T0 + n - 4999 <= o.time <= w.T0 + n)

    def test_windows_by_hand(self):
        # Brute force: every order's (region, minute) key, counted and summed directly.
        n = 3000
        rows = w.orders_window(n)
        expected = {}
        for o in map(w.order, range(n)):
            key = (o.region, o.time // 60_000 * 60_000)
            c, s = expected.get(key, (0, 0))
            expected[key] = (c + 1, s + o.amount)
        self.assertEqual({(r, st): (c, s) for r, st, c, s in rows}, expected)
        self.assertEqual(sum(row[2] for row in rows), n)

    def test_dedup_counts_each_order_id_once(self):
        n = 5000
        distinct = len({w.order(i).order_id for i in range(n)})
        self.assertLess(distinct, n)
        self.assertEqual(sum(row[2] for row in w.orders_window(n, dedup=True)), distinct)

    def test_json_output(self):
        lines = script("orders.py", 5000, "--dedup", "--json")
        self.assertEqual(len(lines), 2)
        rows = json.loads(lines[0])
        self.assertEqual([list(r) for r in rows], [["region", "window_start", "count", "sum"]] * len(rows))
        keys = [(r["window_start"], r["region"]) for r in rows]
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(lines[1], w.answer("orders-dedup", 5000))
        self.assertEqual(script("orders.py", 5000), [w.answer("orders-window", 5000)])


    def test_sliding_by_buckets_is_sliding_by_windows(self):
        # Small windows (sizes are multiples of the slide), so that the direct way stays quick; and the real ones.
        for size, slide in ((60_000, 10_000), (60_000, 20_000)):
            self.assertEqual(w.orders_sliding(self.N, size, slide), w.orders_sliding_by_window(self.N, size, slide))
        rows = w.orders_sliding(self.N)
        self.assertEqual(rows, w.orders_sliding_by_window(self.N))
        # Every order is in 360 windows.
        self.assertEqual(sum(row[2] for row in rows), 360 * self.N)

class Payments(unittest.TestCase):
    N = 20_000

    def test_about_093_n_payments(self):
        paid = [p for p in map(w.payment, range(self.N)) if p is not None]
        # 98% of orders are not re-sent, 95% of those are paid: 0.931 N.
        self.assertAlmostEqual(len(paid) / self.N, 0.931, delta=0.01)

    def test_payment_follows_its_order(self):
        for n in range(self.N):
            p = w.payment(n)
            if p is None:
                continue
            self.assertFalse(w.is_resent(n))
            o = w.order(n)
            self.assertEqual((p.order_id, p.amount), (o.order_id, o.amount))
            self.assertTrue(o.time + 1000 <= p.time <= o.time + 120_999)
        self.assertIsNone(w.payment(next(n for n in range(1, self.N) if w.is_resent(n))))

    def test_join_against_all_pairs(self):
        # Brute force over every (order, payment) pair.
        n = 1500
        orders = [w.order(i) for i in range(n)]
        payments = [p for p in map(w.payment, range(n)) if p is not None]
        expected = Counter()
        amounts = Counter()
        for o in orders:
            for p in payments:
                if o.order_id == p.order_id and o.time <= p.time <= o.time + 120_000:
                    key = (o.region, p.time - p.time % 60_000)
                    expected[key] += 1
                    amounts[key] += o.amount
        rows = w.orders_payments(n)
        self.assertEqual({(r, st): (c, s) for r, st, c, s in rows},
                         {k: (expected[k], amounts[k]) for k in expected})
        joined = sum(expected.values())
        # Re-sent copies join too; a few payments come later than 2 minutes and do not.
        self.assertTrue(0.9 * len(payments) < joined < 1.05 * len(payments))


class Bids(unittest.TestCase):
    N = 20_000

    def test_fields_in_range(self):
        hot = 0
        for n in range(self.N):
            b = w.bid(n)
            block = n // 50
            self.assertTrue(1000 + 3 * block - 99 <= b.auction <= 1000 + 3 * block)
            hot += b.auction % 100 == 0
            self.assertTrue(1000 + block - min(1000, block + 1) < b.bidder <= 1000 + block)
            self.assertTrue(100 <= b.price < 100_100)
            self.assertIn(b.channel, w.CHANNELS)
            self.assertTrue(w.T0 + n // 10 - 1999 <= b.time <= w.T0 + n // 10)
            self.assertTrue(40 <= len(b.extra) < 100)
        self.assertGreater(hot / self.N, 0.5)  # half go to the hot auction, a few more by chance

    def test_best_per_window_ties(self):
        rows = w.best_per_window([(10, 5, 3), (10, 4, 3), (10, 6, 2), (20, 9, 1), (20, 8, 0)])
        self.assertEqual(rows, [(10, 4, 3), (20, 9, 1)])

    def test_q5_by_hand(self):
        n = 30_000
        bids = list(map(w.bid, range(n)))
        ends = {b.time - b.time % 2000 + 2000 + k * 2000 for b in bids for k in range(5)}
        expected = []
        for end in sorted(ends):
            counts = Counter(b.auction for b in bids if end - 10_000 <= b.time < end)
            top = max(counts.values())
            expected.append((end, min(a for a, c in counts.items() if c == top), top))
        self.assertEqual(w.q5(n), expected)

    def test_q7_by_hand(self):
        n = 30_000
        bids = list(map(w.bid, range(n)))
        expected = []
        for end in sorted({b.time - b.time % 10_000 + 10_000 for b in bids}):
            inside = [b for b in bids if end - 10_000 <= b.time < end]
            top = max(b.price for b in inside)
            expected.append((end, min(b.auction for b in inside if b.price == top), top))
        self.assertEqual(w.q7(n), expected)

    def test_stateless_queries(self):
        n = 5000
        bids = list(map(w.bid, range(n)))
        self.assertEqual(script("bids.py", "q0", n), [w.report(b.auction + b.price for b in bids)])
        self.assertEqual(script("bids.py", "q1", n), [w.report(b.auction * 31 + int(b.price * 0.908) for b in bids)])
        kept = [b for b in bids if b.auction % 123 == 0]
        self.assertTrue(kept)
        self.assertEqual(script("bids.py", "q2", n), [w.report(b.auction * 31 + b.price for b in kept)])


class CommandLine(unittest.TestCase):
    def test_zero_events(self):
        self.assertEqual(script("orders.py", 0), ["outputs=0 checksum=0"])
        self.assertEqual(script("payments.py", 0), ["outputs=0 checksum=0"])
        self.assertEqual(script("bids.py", "q5", 0), ["outputs=0 checksum=0"])

    def test_bad_arguments_are_refused(self):
        for args in (["bids.py", "q3", "10"], ["orders.py"], ["orders.py", "ten"], ["payments.py", "-1"]):
            done = subprocess.run([sys.executable, os.path.join(HERE, args[0])] + args[1:], capture_output=True, text=True)
            self.assertNotEqual(done.returncode, 0, args)
            self.assertIn("usage:", done.stderr, args)


if __name__ == "__main__":
    unittest.main()
