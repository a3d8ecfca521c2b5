"""Command line: ``python -m cognitionos_kit demo | status``."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cognitionos_kit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the offline showcase and write a report under the data folder")
    demo.add_argument("--home", default=None, help="data folder (default: $COGNITIONOS_HOME or ./data)")
    demo.add_argument("--live", action="store_true", help="use real providers when keys are set")
    status = sub.add_parser("status", help="print what the kit would use right now (no keys shown)")
    status.add_argument("--home", default=None)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        run_demo(home=args.home, live=args.live)
        return 0
    if args.command == "status":
        from .kit import Kit

        print(json.dumps(Kit(args.home).status(), indent=2))
        return 0
    parser.print_help(sys.stderr)
    return 2
