"""Command line: ``python -m cognitionos_kit demo | status | run EXPERIMENT.yaml | report RUN_ID | rebuild | serve |
users | tokens``."""

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
    run = sub.add_parser("run", help="run an experiment defined in YAML (cached, budgeted, with a report)")
    run.add_argument("experiment", help="experiment YAML file")
    run.add_argument("--home", default=None)
    run.add_argument("--concurrency", type=int, default=None, help="calls in flight (default: YAML run.concurrency or 8)")
    run.add_argument("--budget", type=float, default=None, help="stop before spending more than this many USD")
    run.add_argument("--executor", choices=["local", "ray"], default=None)
    run.add_argument("--no-cache", action="store_true", help="bypass the response cache (no reads, no writes)")
    run.add_argument("--refresh", action="store_true", help="send every call again and store the new answers")
    run.add_argument("--no-progress", action="store_true")
    report = sub.add_parser("report", help="rewrite a run's HTML report and print its path")
    report.add_argument("run_id")
    report.add_argument("--home", default=None)
    report.add_argument("--standalone", action="store_true", help="embed plotly.js: one file that opens anywhere (4.7 MB)")
    rebuild = sub.add_parser("rebuild", help="rebuild a damaged ledger database from its journals (the old file is kept)")
    rebuild.add_argument("--home", default=None, help="data folder (default: $COGNITIONOS_HOME or ./data)")
    rebuild.add_argument("--memory", action="store_true", help="rebuild the memory database (memory.duckdb) as well")
    _server_parsers(sub)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        run_demo(home=args.home, live=args.live)
        return 0
    if args.command == "status":
        from .kit import Kit

        print(json.dumps(Kit(args.home).status(), indent=2))
        return 0
    if args.command in ("run", "report", "rebuild", "serve", "users", "tokens"):
        from .core.errors import KitError

        try:
            if args.command in ("serve", "users", "tokens"):
                return _server(args)
            return _run(args) if args.command == "run" else _report(args) if args.command == "report" else _rebuild(args)
        except (KitError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    parser.print_help(sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    """Exit 0 when every cell completed, 3 when a budget stopped the run, 1 when cells failed."""
    from pathlib import Path

    import yaml

    from .experiments import Experiment
    from .kit import Kit

    exp = Experiment.from_yaml(args.experiment)
    opts = (yaml.safe_load(Path(args.experiment).read_text(encoding="utf-8")) or {}).get("run") or {}
    cache = False if args.no_cache else "refresh" if args.refresh else opts.get("cache", True)
    kit = Kit(args.home, server=False)  # runs and reports read the local data folder
    run = kit.run(
        exp,
        concurrency=args.concurrency or opts.get("concurrency", 8),
        budget_usd=args.budget if args.budget is not None else opts.get("budget_usd"),
        executor=args.executor or opts.get("executor", "local"),
        cache=cache,
        progress=not args.no_progress,
    )
    kit.close()
    print(run)
    print(run.summary.to_string(index=False))
    if run.stopped_reason:
        print(f"stopped: {run.stopped_reason}")
    print(f"run: {run.run_id}")
    print(f"report: {run.report_path}")
    t = run.manifest["totals"]
    return 3 if run.stopped_reason else 1 if t["errors"] else 0


def _report(args: argparse.Namespace) -> int:
    from .experiments import load_run
    from .experiments.report import write_report
    from .kit import Kit

    kit = Kit(args.home, server=False)  # runs and reports read the local data folder
    run = load_run(kit, args.run_id)
    print(run)
    print(run.summary.to_string(index=False))
    print(f"report: {write_report(run, standalone=args.standalone)}")
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    """Move the database aside, rebuild it from the archived and live journals, say where each went."""
    from .core.config import load_settings
    from .storage.ledger import Ledger

    home = load_settings(args.home).home
    stores = [("ledger", Ledger(home).store)]
    if (home / "log_journal").exists():
        from .storage.textlog import TextLog

        stores.append(("text log", TextLog(home).store))
    if args.memory:
        from .memory.store import EventLog

        stores.append(("memory", EventLog(home).store))
    for what, store in stores:
        n = store.rebuild()
        kept = f"; the old file is kept as {store.kept_as}" if store.kept_as else ""
        print(f"rebuilt the {what} database {store.db_path} from the journals in {store.journal_dir}: {n} rows{kept}")
    return 0


def _server_parsers(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the team server (HTTP, bearer tokens) on a data folder")
    serve.add_argument("--home", default=None)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--no-docs", action="store_true", help="no /docs page and no /openapi.json")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="URL",
                       help="let web pages from this origin (e.g. https://lab.example.org) call the server; repeatable")
    serve.add_argument("--allow-register", action="store_true",
                       help="self-service: /auth/register, /auth/login (throttled), /auth/refresh, /auth/logout")
    serve.add_argument("--access-ttl", type=float, default=900.0, metavar="SECONDS",
                       help="lifetime of a login's access token (default 900)")
    serve.add_argument("--refresh-ttl", type=float, default=14 * 86400.0, metavar="SECONDS",
                       help="lifetime of a login's refresh token (default 14 days)")
    serve.add_argument("--registrations-per-hour", type=int, default=20, metavar="N",
                       help="self-service registrations allowed per client address per hour (default 20)")
    users = sub.add_parser("users", help="the team server's users: add, list")
    users_sub = users.add_subparsers(dest="action", required=True)
    add = users_sub.add_parser("add", help="add a user (their name is the user_id of their calls)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may read every user's usage and spend")
    add.add_argument("--home", default=None)
    users_sub.add_parser("list").add_argument("--home", default=None)
    tokens = sub.add_parser("tokens", help="the team server's API tokens: create, revoke, list")
    tokens_sub = tokens.add_subparsers(dest="action", required=True)
    create = tokens_sub.add_parser("create", help="a new token for a user; printed once, as the last line")
    create.add_argument("name")
    create.add_argument("--expires-in-days", type=float, default=None, help="default: until revoked")
    create.add_argument("--home", default=None)
    revoke = tokens_sub.add_parser("revoke", help="revoke a token (the token, or its cok_ prefix)")
    revoke.add_argument("token")
    revoke.add_argument("--home", default=None)
    listing = tokens_sub.add_parser("list", help="every token's prefix, user and state (never the token)")
    listing.add_argument("--user", default=None)
    listing.add_argument("--home", default=None)


def _server(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from .server.app import serve
        from .server.session_routes import SelfService

        self_service = (SelfService(args.access_ttl, args.refresh_ttl, registrations_per_address=args.registrations_per_hour)
                        if args.allow_register else None)
        serve(args.home, host=args.host, port=args.port, docs=not args.no_docs, self_service=self_service,
              cors_origins=args.cors_origin)
        return 0
    from .core.config import load_settings
    from .server import Accounts, admin

    accounts = Accounts(load_settings(args.home).home)
    try:
        if args.command == "users":
            lines = admin.add_user(accounts, args.name, admin=args.admin) if args.action == "add" else admin.list_users(accounts)
        elif args.action == "create":
            lines = admin.create_token(accounts, args.name, expires_in_days=args.expires_in_days)
        elif args.action == "revoke":
            lines = admin.revoke_token(accounts, args.token)
        else:
            lines = admin.list_tokens(accounts, args.user)
    finally:
        accounts.close()
    print("\n".join(lines))
    return 0
