"""The driver of bench/chaos.sh: one sink's run (see there).

Starts an S3 server (moto) and, for the postgres sink, a PostgreSQL server;
a JobManager and three TaskManagers of orders-window; SIGKILLs them at
random moments, starting each again at once; checks the committed output
against the oracle; prints the table row of the report (`table: | ... |`)
and exits non-zero when a row was lost or duplicated.
"""

import argparse
import collections
import glob
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

JOB = "chaos"
TASKMANAGERS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(message):
    print(f"chaos: {message}", file=sys.stderr, flush=True)


class Services:
    """The S3 server and, when asked, a PostgreSQL server; stopped at the end."""

    def __init__(self, work, postgres):
        self.procs = []
        self.s3_port = free_port()
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.procs.append(subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(self.s3_port)],
                                           stdout=subprocess.DEVNULL, stderr=open(f"{work}/moto.log", "w")))
        import boto3
        for _ in range(100):
            try:
                boto3.client("s3", endpoint_url=self.s3_url(), region_name="us-east-1",
                             aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket="chaos")
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise SystemExit("chaos: the S3 server did not start")
        self.pg_url = self.start_postgres(work) if postgres else None

    def s3_url(self):
        return f"http://127.0.0.1:{self.s3_port}"

    def start_postgres(self, work):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not bins:
            raise SystemExit("chaos: no PostgreSQL server binaries (apt-get install postgresql)")
        self.pg_bin = os.path.dirname(bins[-1])
        # Its own directory: the postgres user cannot traverse the (private) work directory.
        data, port = tempfile.mkdtemp(prefix="weir-chaos-pg."), free_port()
        self.pg_data = data
        user = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        if user:
            os.chown(data, *[int(subprocess.check_output(["id", f, "postgres"])) for f in ("-u", "-g")])
        subprocess.run([f"{self.pg_bin}/initdb", "-A", "trust", "-U", "weir", "-E", "UTF8", "--no-sync", "-D", f"{data}/db"],
                       check=True, stdout=subprocess.DEVNULL, **user)
        self.procs.append(subprocess.Popen(
            [f"{self.pg_bin}/postgres", "-D", f"{data}/db", "-p", str(port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={data}", "-c", "max_prepared_transactions=64", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=open(f"{data}/postgres.log", "w"), **user))
        self.pg_port = port
        for _ in range(300):
            if self.psql("SELECT 1") is not None:
                return f"postgres://weir@127.0.0.1:{port}/postgres"
            time.sleep(0.1)
        raise SystemExit("chaos: PostgreSQL did not start")

    def psql(self, sql):
        r = subprocess.run([f"{self.pg_bin}/psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "weir",
                            "-d", "postgres", "-At", "-F", "\t", "-c", sql], capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None

    def stop(self):
        for p in self.procs:
            p.terminate()
            p.wait()
        if self.pg_url:
            shutil.rmtree(self.pg_data, ignore_errors=True)


class Cluster:
    """A JobManager and its TaskManagers, each started again as soon as it is killed."""

    def __init__(self, weir, work, pipeline, services):
        self.rpc, self.rest = free_port(), free_port()
        secret = f"{work}/secret"
        with open(secret, "w") as f:
            f.write(secrets.token_hex(32))
        self.env = dict(os.environ, AWS_ENDPOINT_URL=services.s3_url(), AWS_ACCESS_KEY_ID="test",
                        AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1", WEIR_S3_PATH_STYLE="true")
        self.commands = {
            "jobmanager": [weir, "jobmanager", "--pipeline", pipeline, "--parallelism", str(TASKMANAGERS),
                           "--checkpoint-dir", "s3://chaos/checkpoints", "--checkpoint-interval", "1s",
                           "--bind", "127.0.0.1", "--rpc-port", str(self.rpc), "--rest-port", str(self.rest),
                           "--restart-strategy", "exponential:200ms:2s:unlimited", "--auth-secret-file", secret],
        }
        for i in range(TASKMANAGERS):
            self.commands[f"taskmanager-{i}"] = [
                weir, "taskmanager", "--jobmanager", f"127.0.0.1:{self.rpc}", "--slots", "1", "--bind", "127.0.0.1",
                "--id", f"tm-{i}", "--connect-timeout", "10m", "--auth-secret-file", secret]
        self.work, self.procs = work, {}
        for name in self.commands:
            self.start(name)

    def start(self, name):
        out = open(f"{self.work}/{name}.log", "a")
        self.procs[name] = subprocess.Popen(self.commands[name], env=self.env, stdout=subprocess.DEVNULL, stderr=out)

    def kill(self, name):
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()
        self.start(name)

    def job(self):
        try:
            url = f"http://127.0.0.1:{self.rest}/v1/jobs/{JOB}"
            return json.load(urllib.request.urlopen(url, timeout=2))
        except Exception:
            return {}

    def running(self):
        j = self.job()
        return j.get("state") == "running" and len(j.get("taskmanagers", [])) == TASKMANAGERS, j

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def pipeline(work, sink, events, rate, services):
    if sink == "file":
        target = f"{{ type: file, path: {work}/out }}"
    else:
        target = (f'{{ type: postgres, url: "{services.pg_url}", table: order_stats, '
                  "key: [region, window_start], guarantee: exactly-once }")
    path = f"{work}/{JOB}.yaml"
    with open(path, "w") as f:
        f.write(f"name: {JOB}\nsource:\n  type: datagen\n  workload: orders\n  count: {events}\n  rate: {rate}\n"
                "  watermark: { field: time, out_of_orderness: 5s }\n"
                "steps:\n  - key_by: region\n  - window: { type: tumbling, size: 1m }\n"
                "  - aggregate: { count: count(), sum: sum(amount) }\n"
                f"sink: {target}\n")
    return path


def committed(work, sink, services):
    """The committed rows as (region, window_start, count, sum)."""
    if sink == "file":
        out, rows = f"{work}/out", []
        for name in os.listdir(out) if os.path.isdir(out) else []:
            if name.startswith("part-"):
                with open(os.path.join(out, name)) as f:
                    rows += [(r["region"], r["window_start"], r["count"], r["sum"]) for r in map(json.loads, f)]
        return rows
    text = services.psql("SELECT region, window_start, count, sum FROM order_stats") or ""
    return [(r, int(w), int(c), int(s)) for r, w, c, s in (line.split("\t") for line in text.splitlines())]


def main():
    a = argparse.ArgumentParser()
    for flag in ("weir", "repo", "work", "sink"):
        a.add_argument(f"--{flag}", required=True)
    for flag in ("kills", "rate", "seed"):
        a.add_argument(f"--{flag}", type=int, required=True)
    args = a.parse_args()
    os.makedirs(args.work)
    rng = random.Random(args.seed)
    # Enough orders to outlast the kills (a kill every 4 s or so), then a little more.
    events = args.rate * (args.kills * 4 + 20)
    services = Services(args.work, args.sink == "postgres")
    cluster = Cluster(args.weir, args.work, pipeline(args.work, args.sink, events, args.rate, services), services)
    try:
        recoveries, victims = chaos(cluster, rng, args.kills)
        deadline = time.time() + events / args.rate + 600
        jm = cluster.procs["jobmanager"]
        while jm.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        if jm.returncode != 0:
            raise SystemExit(f"chaos: the job did not finish (JobManager exit {jm.returncode}); see {args.work}")
    finally:
        cluster.stop()
    expected = oracle_rows(args.repo, os.path.dirname(args.work), events)
    want = collections.Counter((r["region"], r["window_start"], r["count"], r["sum"]) for r in expected)
    got = collections.Counter(committed(args.work, args.sink, services))
    services.stop()
    lost, duplicated = sum((want - got).values()), sum((got - want).values())
    times = sorted(recoveries)
    jms = sum(1 for v in victims if v == "jobmanager")
    p90 = times[int(0.9 * (len(times) - 1))] if times else 0
    log(f"{args.sink}: {len(victims)} kills ({jms} JobManager), {sum(got.values())} rows, {lost} lost, "
        f"{duplicated} duplicated, downtime {sum(times):.1f} s, kill to running {[round(t, 2) for t in times]}")
    median = statistics.median(times) if times else 0
    print(f"table: | {args.sink} | {len(victims)} ({jms} / {len(victims) - jms}) | {lost} | {duplicated} | "
          f"{sum(times):.1f} s | {median:.2f} / {p90:.2f} / {max(times, default=0):.2f} s |")
    if lost or duplicated:
        sys.exit(1)


def oracle_rows(repo, cache_dir, events):
    """The oracle's orders-window rows for `events` orders (computed once per run of chaos.sh: it takes minutes)."""
    cache = f"{cache_dir}/oracle-{events}.json"
    if not os.path.exists(cache):
        oracle = os.environ.get("WEIR_ORACLE_DIR", f"{repo}/bench/oracle") + "/orders.py"
        out = subprocess.run([sys.executable, oracle, str(events), "--json"], check=True, capture_output=True, text=True)
        with open(cache, "w") as f:
            f.write(out.stdout.splitlines()[0])
    with open(cache) as f:
        return json.load(f)


def chaos(cluster, rng, kills):
    """Kills `kills` processes at random moments; the seconds from each kill to the job running again."""
    recoveries, victims = [], []
    wait_running(cluster, 120)
    for k in range(kills):
        time.sleep(rng.uniform(1, 3))
        if cluster.procs["jobmanager"].poll() is not None:
            log(f"the job ended after {k} kills")
            break
        victim = "jobmanager" if rng.random() < 0.2 else f"taskmanager-{rng.randrange(TASKMANAGERS)}"
        restarts = cluster.job().get("restarts", 0)
        t0 = time.time()
        cluster.kill(victim)
        wait_running(cluster, 180, None if victim == "jobmanager" else restarts)
        recoveries.append(time.time() - t0)
        victims.append(victim)
    return recoveries, victims


def wait_running(cluster, limit, restarts_before=None):
    """Until the job runs on every TaskManager (after one more restart than `restarts_before`, if given)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        ok, job = cluster.running()
        if ok and (restarts_before is None or job.get("restarts", 0) > restarts_before):
            return
        if cluster.procs["jobmanager"].poll() is not None:
            return
        time.sleep(0.02)
    raise SystemExit(f"chaos: the job did not run again within {limit} s; see {cluster.work}")


if __name__ == "__main__":
    main()
