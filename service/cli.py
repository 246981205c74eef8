"""`python -m service`: administration commands, each printing one JSON object."""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import gc
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError

from service.config import Settings, get_settings
from service.graphs import default_registry
from service.idempotency import IdempotencyPolicy, prune_finished_keys
from service.schedules import Schedule, configured_schedules, utc_text
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
_T = TypeVar("_T")


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
    listing = schedules.add_parser(
        "list", help="each schedule with its next firing time (with TEMPORAL_ADDRESS: "
        "Temporal's view, paused and last firing included)"
    )
    listing.set_defaults(command=_schedules_list)
    fire = schedules.add_parser(
        "run", help="fire one schedule now: through the service at SERVICE_URL, or with "
        "TEMPORAL_ADDRESS by triggering its Temporal schedule"
    )
    fire.add_argument("schedule_id", metavar="ID")
    fire.add_argument("--scheduled-for", type=_aware_datetime, default=None,
                      help="the firing to run (it names the idempotency key); default: now. "
                      "Not with TEMPORAL_ADDRESS: Temporal sets the firing time")
    fire.add_argument("--no-wait", action="store_true",
                      help="with TEMPORAL_ADDRESS: print the firing's workflow once started, "
                      "without waiting for its run")
    fire.set_defaults(command=_schedules_run)
    sync = schedules.add_parser(
        "sync", help="with TEMPORAL_ADDRESS: create or update one Temporal schedule per "
        "entry, delete the managed ones that left the file"
    )
    sync.set_defaults(command=_schedules_sync)

    worker = groups.add_parser(
        "worker", help="with TEMPORAL_ADDRESS: run the firings of the Temporal schedules"
    )
    worker.set_defaults(command=_worker)

    idempotency = groups.add_parser(
        "idempotency", help="the idempotency keys of the internal runs route"
    ).add_subparsers(dest="action", required=True)
    prune = idempotency.add_parser(
        "prune", help="delete finished keys older than IDEMPOTENCY_RETENTION_HOURS (0: none)"
    )
    prune.set_defaults(command=_idempotency_prune)

    serve = groups.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(command=_serve)
    return parser


def _database(settings: Settings) -> Database:
    # Migrated like the service's; its connections are closed when the command exits.
    database = Database.from_url(settings.database_url, pool_size=settings.database_pool_size)
    atexit.register(database.close)
    database.migrate()
    return database


def _idempotency_prune(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Delete finished idempotency keys older than IDEMPOTENCY_RETENTION_HOURS, as the service
    does hourly; pending keys stay."""
    policy = IdempotencyPolicy.from_settings(settings)
    now = dt.datetime.now(dt.UTC)
    pruned = prune_finished_keys(_database(settings), policy, now=now)
    return {
        "pruned": pruned,
        "retentionHours": settings.idempotency_retention_hours,
        "finishedBefore": None if policy.retention is None else utc_text(now - policy.retention),
    }


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
    if settings.temporal_address is not None:
        return _temporal_schedules_list(settings)
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
                "nextFireAt": utc_text(schedule.next_fire_after(now)),
            }
            for schedule in _schedules(settings)
        ],
    }


def _schedules_run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Fire one schedule through the internal route, as the embedded scheduler would."""
    import asyncio

    import httpx

    from service.scheduler import fire_once

    schedule = _schedule(settings, args.schedule_id)
    if settings.temporal_address is not None:
        return _temporal_schedules_run(args, settings, schedule)
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
    _check_ran(schedule, answer)
    return answer


def _check_ran(schedule: Schedule, answer: dict[str, Any]) -> None:
    if answer.get("ok") is not True:
        # The run started and failed: its outcome is final (a repeat replays it).
        raise CliError(
            f"schedule {schedule.id!r} ran and failed: {answer.get('error')} "
            f"(runId {answer.get('runId')}, traceId {answer.get('traceId')}, "
            f"sessionId {answer.get('sessionId')})"
        )


def _temporal_schedules_list(settings: Settings) -> dict[str, Any]:
    from service.temporal import list_command

    return _in_temporal(list_command(settings, _schedules(settings)))


def _temporal_schedules_run(
    args: argparse.Namespace, settings: Settings, schedule: Schedule
) -> dict[str, Any]:
    """Trigger the schedule in Temporal; the firing's run outcome (or its workflow, --no-wait)."""
    from service.temporal import run_command

    if args.scheduled_for is not None:
        raise CliError(
            "--scheduled-for cannot be used with TEMPORAL_ADDRESS: Temporal sets the firing "
            "time of a triggered schedule (now)"
        )
    answer = _in_temporal(run_command(settings, schedule, wait=not args.no_wait))
    if not args.no_wait:
        _check_ran(schedule, answer)
    return answer


def _schedules_sync(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Make the Temporal schedules match SCHEDULES_FILE."""
    from service.temporal import sync_command

    if settings.temporal_address is None:
        raise CliError(
            "TEMPORAL_ADDRESS is not set: `schedules sync` writes the schedules of "
            "SCHEDULES_FILE to Temporal (host:port of its frontend)"
        )
    if settings.schedules_file is None:
        # An unset file is not an empty one: syncing it would delete every managed schedule.
        raise CliError(
            "SCHEDULES_FILE is not set: nothing to sync (a file with `schedules: []` "
            "removes every schedule sync manages)"
        )
    return _in_temporal(sync_command(settings, _schedules(settings)))


def _worker(args: argparse.Namespace, settings: Settings) -> None:
    """Run firings until interrupted; its one JSON line announces the task queue."""
    from service.temporal import run_worker, temporal_target, worker_tracer_provider

    if settings.temporal_address is None:
        raise CliError(
            "TEMPORAL_ADDRESS is not set: the worker runs the firings of Temporal schedules "
            "(host:port of its frontend); without Temporal, SCHEDULER_ENABLED=true fires them "
            "from the service"
        )
    provider = worker_tracer_provider(settings)

    def started() -> None:
        print(json.dumps({"worker": temporal_target(settings)}), flush=True)

    try:
        _in_temporal(run_worker(
            settings, tracer=provider.get_tracer("service.temporal"), started=started
        ))
    finally:
        provider.shutdown()


def _in_temporal(work: Coroutine[Any, Any, _T]) -> _T:
    """Run `work`; a Temporal failure the operator can act on becomes a CliError."""
    import asyncio

    from temporalio.service import RPCError

    from service.temporal import TemporalError

    try:
        return asyncio.run(work)
    except TemporalError as exc:
        raise CliError(str(exc)) from None
    except RPCError as exc:
        raise CliError(f"Temporal refused the request: {exc} ({exc.status.name})") from None


def _schedules(settings: Settings) -> list[Schedule]:
    return configured_schedules(settings.schedules_file, known_graphs=default_registry().ids)


def _schedule(settings: Settings, schedule_id: str) -> Schedule:
    schedules = {schedule.id: schedule for schedule in _schedules(settings)}
    schedule = schedules.get(schedule_id)
    if schedule is None:
        known = ", ".join(schedules) or "none"
        raise CliError(
            f"no schedule {schedule_id!r} in SCHEDULES_FILE "
            f"({settings.schedules_file or 'unset'}); known schedules: {known}"
        )
    return schedule


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    """Serve until interrupted; its one JSON line announces the address."""
    import uvicorn

    from service.main import create_app

    # Checked here too, so a bad file is one JSON error, not a failed lifespan.
    _schedules(settings)
    app = create_app(settings)
    # What is loaded by now (modules, the app) lives as long as the process: out of the
    # collector's full passes, which walk the whole heap each time enough objects have
    # aged, as the spans waiting for their export batch do (bench/results/changes.md).
    gc.collect()
    gc.freeze()
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
