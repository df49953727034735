"""Command line: `python -m tests.e2e.replay up|down --config ...` (see __init__)."""

from __future__ import annotations

import argparse
import json
import sys

from components.plan.stack_config import override_arg
from tests.e2e.replay import engine
from tests.e2e.replay.errors import ReplayError
from tests.e2e.replay.stack import down, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.replay",
                                     description="Replay a stack on the local Docker engine "
                                                 "as pulumi-docker would apply it.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, help="stack file, e.g. config/Pulumi.dev.yaml")
        if name == "up":
            p.add_argument("--set", action="append", type=override_arg, default=[],
                           metavar="PATH=VALUE",
                           help="set a synapse:* value (YAML) at a config path: workers.rooms=8")
            p.add_argument("--preview", action="store_true", help="print the plan, apply nothing")
        else:
            p.add_argument("--delete-data", action="store_true",
                           help="also delete the data volumes and the stack's secrets "
                                "(what `make destroy-data` does)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up" and args.preview:
            engine.up(args.config, dict(args.set), dry_run=True)
        elif args.command == "up":
            deployed = up(args.config, dict(args.set))
            print(json.dumps({"nginxUrl": deployed.nginx_url,
                              "federationUrl": deployed.federation_url,
                              "serverName": deployed.server_name,
                              "containers": deployed.containers,
                              "plan": deployed.plan.counts(),
                              "secondsToHealthy": round(deployed.seconds_to_healthy, 1)},
                             indent=1))
        else:
            down(args.config, delete_data=args.delete_data)
    except ReplayError as e:
        print(f"replay: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
