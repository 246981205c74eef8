"""`python -m service`: administration commands, each printing one JSON object."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from service.config import Settings, get_settings
from service.graphs import default_registry
from service.schedules import Schedule, configured_schedules
from service.store import (
    Database,
    StoreError,
    create_billing_account,
    create_grant,
    create_user,
    revoke_grant,
)
from service.store import set_account_mask_content

__all__ = ["main"]

Command = Callable[[argparse.Namespace, Settings], dict[str, Any] | None]


class CliError(Exception):
    """A command failed in a way the user can fix; the message says how."""


class _JsonArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _print_error(f"{self.prog}: {message}")
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 1 on a failed command, 2 on bad usage."""
    args = _parser().parse_args(argv)
    # Log lines (what a command changed, what the server does) go to stderr;
    # stdout keeps its one JSON object.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = get_settings()
        result = args.command(args, settings)
    except (CliError, StoreError, ValueError, ValidationError) as exc:
        _print_error(str(exc))
        return 1
    if result is not None:
        print(json.dumps(result), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _JsonArgumentParser(prog="python -m service", description=__doc__)
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    accounts = groups.add_parser("accounts", help="billing accounts").add_subparsers(
        dest="action", required=True
    )
    create = accounts.add_parser("create", help="create a billing account")
    create.add_argument("--billing-account", required=True)
    create.add_argument(
        "--mask-content", action="store_true",
        help="spans of its runs record payload hashes only, never text",
    )
    create.set_defaults(command=_accounts_create)
    update = accounts.add_parser(
        "update", help="change a billing account's settings (the change is logged)"
    )
    update.add_argument("--billing-account", required=True)
    update.add_argument(
        "--mask-content", action=argparse.BooleanOptionalAction, required=True,
        help="--mask-content: spans of its runs record payload hashes only; "
        "--no-mask-content: they record scrubbed text again",
    )
    update.set_defaults(command=_accounts_update)

    users = groups.add_parser("users", help="users and their API keys").add_subparsers(
        dest="action", required=True
    )
    create = users.add_parser("create", help="create a user; prints its API key once")
    create.add_argument("--billing-account", required=True)
    create.add_argument("--user", required=True)
    create.set_defaults(command=_users_create)

    grants = groups.add_parser("grants", help="execution grants").add_subparsers(
        dest="action", required=True
    )
    create = grants.add_parser("create", help="let the scheduler run graphs for a user")
    create.add_argument("--billing-account", required=True)
    create.add_argument("--user", required=True)
    create.add_argument("--graph", required=True, action="append", dest="graphs")
    create.add_argument("--expires-at", type=_aware_datetime, default=None,
                        help="ISO-8601 time; UTC when it has no offset")
    create.set_defaults(command=_grants_create)
    revoke = grants.add_parser("revoke", help="revoke a grant")
    revoke.add_argument("grant_id", metavar="GRANT_ID")
    revoke.set_defaults(command=_grants_revoke)

    schedules = groups.add_parser(
        "schedules", help="the schedules of SCHEDULES_FILE"
    ).add_subparsers(dest="action", required=True)
    listing = schedules.add_parser("list", help="each schedule with its next firing time")
    listing.set_defaults(command=_schedules_list)
    fire = schedules.add_parser(
        "run", help="fire one schedule now, through the service at SERVICE_URL"
    )
    fire.add_argument("schedule_id", metavar="ID")
    fire.add_argument("--scheduled-for", type=_aware_datetime, default=None,
                      help="the firing to run (it names the idempotency key); default: now")
    fire.set_defaults(command=_schedules_run)

    serve = groups.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(command=_serve)
    return parser


def _database(settings: Settings) -> Database:
    database = Database.from_url(settings.database_url)
    database.migrate()
    return database


def _accounts_create(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    account = create_billing_account(
        _database(settings), args.billing_account, mask_content=args.mask_content
    )
    return {
        "billingAccountId": account.id,
        "createdAt": account.created_at.isoformat(),
        "maskContent": account.mask_content,
    }


def _accounts_update(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    account, previous = set_account_mask_content(
        _database(settings), args.billing_account, mask_content=args.mask_content
    )
    return {
        "billingAccountId": account.id,
        "maskContent": account.mask_content,
        "previousMaskContent": previous,
    }


def _users_create(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    new = create_user(
        _database(settings), billing_account_id=args.billing_account, user_id=args.user
    )
    return {
        "userId": new.user.id,
        "billingAccountId": new.user.billing_account_id,
        "apiKey": new.api_key,
    }


def _grants_create(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    known = default_registry().ids
    unknown = [graph for graph in args.graphs if graph not in known]
    if unknown:
        raise CliError(f"unknown graph(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if args.expires_at is not None and args.expires_at <= dt.datetime.now(dt.UTC):
        raise CliError(f"--expires-at {args.expires_at.isoformat()} is in the past")
    grant = create_grant(
        _database(settings), billing_account_id=args.billing_account, user_id=args.user,
        graphs=args.graphs, expires_at=args.expires_at,
    )
    return {
        "grantId": grant.id,
        "billingAccountId": grant.billing_account_id,
        "userId": grant.user_id,
        "graphs": list(grant.graphs),
        "expiresAt": None if grant.expires_at is None else grant.expires_at.isoformat(),
    }


def _grants_revoke(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    grant = revoke_grant(_database(settings), args.grant_id)
    assert grant.revoked_at is not None
    return {"grantId": grant.id, "revokedAt": grant.revoked_at.isoformat()}


def _schedules_list(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "schedulesFile": None if settings.schedules_file is None else str(settings.schedules_file),
        "schedulerEnabled": settings.scheduler_enabled,
        "schedules": [
            {
                "id": schedule.id,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "graph": schedule.graph,
                "grant": schedule.grant,
                "nextFireAt": _utc_text(schedule.next_fire_after(now)),
            }
            for schedule in _schedules(settings)
        ],
    }


def _schedules_run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Fire one schedule through the internal route, as the embedded scheduler would."""
    import asyncio

    import httpx

    from service.scheduler import fire_once

    schedules = {schedule.id: schedule for schedule in _schedules(settings)}
    schedule = schedules.get(args.schedule_id)
    if schedule is None:
        known = ", ".join(schedules) or "none"
        raise CliError(
            f"no schedule {args.schedule_id!r} in SCHEDULES_FILE "
            f"({settings.schedules_file or 'unset'}); known schedules: {known}"
        )
    if not settings.scheduler_api_token.get_secret_value():
        raise CliError("SCHEDULER_API_TOKEN is not set: the internal route refuses every run")
    scheduled_for = args.scheduled_for or dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        response = asyncio.run(fire_once(settings, schedule, scheduled_for))
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the service at SERVICE_URL={settings.service_url} "
            f"({type(exc).__name__}: {exc or 'no answer'}); is it running?"
        ) from None
    try:
        answer: Any = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict):
        detail = answer.get("message") if isinstance(answer, dict) else response.text[:300]
        raise CliError(
            f"the service at {settings.service_url} answered {response.status_code} "
            f"firing schedule {schedule.id!r}: {detail}"
        )
    if answer.get("ok") is not True:
        # The run started and failed: its outcome is final (a repeat replays it).
        raise CliError(
            f"schedule {schedule.id!r} ran and failed: {answer.get('error')} "
            f"(runId {answer.get('runId')}, traceId {answer.get('traceId')}, "
            f"sessionId {answer.get('sessionId')})"
        )
    return answer


def _schedules(settings: Settings) -> list[Schedule]:
    return configured_schedules(settings.schedules_file, known_graphs=default_registry().ids)


def _utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    """Serve until interrupted; its one JSON line announces the address."""
    import uvicorn

    from service.main import create_app

    # Checked here too, so a bad file is one JSON error, not a failed lifespan.
    _schedules(settings)
    app = create_app(settings)
    print(json.dumps({"serving": f"http://{args.host}:{args.port}"}), flush=True)
    # reset_contextvars: each request task starts from an empty context, never
    # from the one a previous request on the connection left (service.trace_boundary).
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, reset_contextvars=True)


def _aware_datetime(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _print_error(message: str) -> None:
    print(json.dumps({"error": message}), file=sys.stderr, flush=True)
