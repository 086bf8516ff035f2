#!/usr/bin/env python3
"""The e2e's Prometheus: the committed scrape configuration, and every query of the dashboard.

    e2e/prometheus.py config monitoring/prometheus.yml OUT.yml --token-file F
        writes the committed configuration with what a Prometheus outside the
        cluster needs to reach the API server (KUBE_API, KUBE_CA; the token of
        the ServiceAccount of monitoring/prometheus-rbac.yaml), and a 2 s scrape
        interval so the e2e need not wait; nothing else changes.

    e2e/prometheus.py targets URL
        waits until Prometheus scrapes a JobManager and the operator; prints
        the targets that are up.

    e2e/prometheus.py check URL monitoring/grafana/weir-dashboard.json --set namespace=default --set job=NAME [--row T] [--skip-row T]
        runs every PromQL query of the dashboard (its variables' queries too)
        as Grafana would, with the variables set (of the rows titled T only,
        or but those); prints each panel and the series it got, and fails
        naming every panel whose query returned none.
"""

import argparse
import json
import os
import sys
import time
import urllib.parse
import urllib.request

import yaml


def config(args):
    with open(args.committed) as f:
        conf = yaml.safe_load(f)
    conf.setdefault("global", {}).update(scrape_interval="2s", evaluation_interval="2s")
    for job in conf["scrape_configs"]:
        for sd in job.get("kubernetes_sd_configs", []):
            sd.update(api_server=os.environ["KUBE_API"],
                      authorization={"credentials_file": args.token_file},
                      tls_config={"ca_file": os.environ["KUBE_CA"]})
    with open(args.out, "w") as f:
        yaml.safe_dump(conf, f)


def api(url, path, **params):
    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=10) as response:
        answer = json.load(response)
    if answer.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {answer}")
    return answer["data"]


def targets(args):
    deadline = time.time() + args.seconds
    while True:
        try:
            active = api(args.url, "targets", state="active")["activeTargets"]
        except OSError:
            active = []
        up = [t for t in active if t["health"] == "up"]
        if any(t["labels"].get("component") == "jobmanager" for t in up) \
                and any(t["labels"].get("namespace") == "weir-system" for t in up):
            for t in up:
                print(f'{t["labels"].get("namespace")}/{t["labels"].get("pod")} {t["scrapeUrl"]}')
            return
        if time.time() > deadline:
            sys.exit("Prometheus does not scrape a JobManager and the operator: "
                     + json.dumps([(t["scrapeUrl"], t["health"], t.get("lastError")) for t in active]))
        time.sleep(1)


def substituted(expr, variables):
    """The query Grafana sends: variables replaced, the longest names first."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    return expr


def failed_queries(url, dashboard, variables, verbose, rows=(), skip=()):
    """Runs every query of the dashboard (of `rows` only, when given; not of
    `skip`); returns what returned no data."""
    failures, seen = [], 0
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        definition = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        # label_values(SELECTOR, LABEL): the values of LABEL on the series SELECTOR matches.
        selector, label = definition[len("label_values("):-1].rsplit(",", 1)
        values = api(url, f"label/{label.strip()}/values", **{"match[]": substituted(selector, variables)})
        if verbose:
            print(f"variable {var['name']}: {values}")
        if variables.get(var["name"]) not in values:
            failures.append(f"variable {var['name']} does not offer {variables.get(var['name'])!r}: {values}")
    row = None
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            row = panel["title"]
        if (rows and row not in rows) or row in skip:
            continue
        for target in panel.get("targets", []):
            expr = substituted(target["expr"], variables)
            series = api(url, "query", query=expr)["result"]
            seen += 1
            if verbose:
                print(f"{panel['title']}: {len(series)} series ({expr})")
            if not series:
                failures.append(f"{panel['title']!r} returned no data: {expr}")
    return failures, seen


def check(args):
    """Until every query returns data (a dashboard fills in as a job runs), or the time is up."""
    with open(args.dashboard) as f:
        dashboard = json.load(f)
    variables = {"__rate_interval": "30s", "__interval": "2s"}
    variables.update(kv.split("=", 1) for kv in args.set or [])
    deadline = time.time() + args.seconds
    while True:
        failures, seen = failed_queries(args.url, dashboard, variables, False, args.row or (), args.skip_row or ())
        if not failures or time.time() > deadline:
            break
        time.sleep(2)
    failed_queries(args.url, dashboard, variables, True, args.row or (), args.skip_row or ())
    if failures:
        sys.exit("\n".join(failures))
    print(f"all {seen} queries returned data")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("config")
    c.add_argument("committed")
    c.add_argument("out")
    c.add_argument("--token-file", required=True)
    t = commands.add_parser("targets")
    t.add_argument("url")
    t.add_argument("--seconds", type=int, default=60)
    k = commands.add_parser("check")
    k.add_argument("url")
    k.add_argument("dashboard")
    k.add_argument("--set", action="append", help="VARIABLE=VALUE")
    k.add_argument("--seconds", type=int, default=60)
    k.add_argument("--row", action="append", help="only the panels of this row (repeatable)")
    k.add_argument("--skip-row", action="append", help="not the panels of this row (repeatable)")
    args = parser.parse_args()
    {"config": config, "targets": targets, "check": check}[args.command](args)


if __name__ == "__main__":
    main()
