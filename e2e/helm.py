#!/usr/bin/env python3
"""`helm install`, `helm upgrade` and `helm uninstall`, as the e2e's user runs them.

There is no `helm` binary on this machine (TESTING.md): this is the real Helm
engine, Helm's Go SDK through `helm-python-sdk`, behind the few commands and
flags of the Helm CLI that the README's Kubernetes section uses, so the e2e
reads as the commands a user types:

    e2e/helm.py install weir charts/weir-operator --namespace weir-system --create-namespace -f values.yaml
    e2e/helm.py upgrade weir charts/weir-operator --namespace weir-system -f values.yaml --set logLevel=debug
    e2e/helm.py uninstall weir --namespace weir-system
    e2e/helm.py status weir --namespace weir-system

The cluster is the one of $KUBECONFIG. Prints the release's name, revision and
status on success; a failure prints Helm's error and exits 1.
"""

import argparse
import os
import sys

import helm_python as helm
import yaml


def merged(base, extra):
    """Values merged as Helm merges `-f` files: maps deeply, everything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def values_of(args):
    values = {}
    for path in args.values or []:
        with open(path) as f:
            values = merged(values, yaml.safe_load(f) or {})
    for assignment in args.set or []:
        values = merged(values, helm.parse_set_string(assignment))
    return values


def main():
    parser = argparse.ArgumentParser(prog="helm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("install", "upgrade"):
        command = commands.add_parser(name)
        command.add_argument("release")
        command.add_argument("chart")
        command.add_argument("-f", "--values", action="append", help="a values file (repeatable)")
        command.add_argument("--set", action="append", help="KEY=VALUE (repeatable)")
        command.add_argument("--timeout", type=int, default=120, help="seconds")
        if name == "install":
            command.add_argument("--create-namespace", action="store_true")
    for name in ("uninstall", "status"):
        commands.add_parser(name).add_argument("release")
    for command in commands.choices.values():
        command.add_argument("-n", "--namespace", default="default")
    args = parser.parse_args()

    config = helm.Config(kubeconfig_path=os.environ.get("KUBECONFIG"), namespace=args.namespace)
    try:
        if args.command == "install":
            release = config.install(args.chart, args.release, values_of(args), namespace=args.namespace,
                                     create_namespace=args.create_namespace, timeout=args.timeout)
        elif args.command == "upgrade":
            release = config.upgrade(args.chart, args.release, values_of(args), namespace=args.namespace,
                                     timeout=args.timeout)
        elif args.command == "uninstall":
            release = config.uninstall(args.release)
            release = release.get("release", release)
        else:
            release = config.status(args.release)
    except helm.HelmError as e:
        sys.exit(f"helm {args.command} {args.release}: {e}")
    print(f"NAME: {release.get('name', args.release)}  NAMESPACE: {args.namespace}  "
          f"REVISION: {release.get('revision', '?')}  STATUS: {release.get('status', 'uninstalled')}")


if __name__ == "__main__":
    main()
