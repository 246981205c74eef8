"""CPU per store call and per request: a new SQLite connection per call (the store before issue 12)
against the kept per-thread connection (now), side by side in one run.

Both variants run the same code; the "new connection" one closes the database after each
transaction, so every call opens a connection again, as the store used to. Rounds alternate
between the variants; each figure is the median over rounds of process CPU time (all threads)
per call or request. Requests go in process through the app's ASGI interface (no HTTP server,
no network), with tracing on (an in-memory exporter, cleared each round) and the offline LLM.

    .venv/bin/python bench/store_calls.py            # about a minute
    .venv/bin/python bench/store_calls.py --quick    # a few seconds: checks it runs
    .venv/bin/python bench/store_calls.py --postgres # also the kept Postgres pool (initdb needed)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.config import Settings  # noqa: E402
from service.main import create_app  # noqa: E402
from service.services import Services  # noqa: E402
from service.store import (  # noqa: E402
    Database,
    authenticate_user,
    create_billing_account,
    create_grant,
    create_user,
)
from service.store.database import Connection  # noqa: E402
from sessiontrace import configure_tracing  # noqa: E402

TOKEN = "bench-scheduler-token-0123456789"


class NewConnectionPerCall(Database):
    """The store before issue 12: every transaction on a connection of its own."""

    @contextmanager
    def connect(
        self, *, write: bool = False, busy_timeout: float | None = None
    ) -> Iterator[Connection]:
        try:
            with super().connect(write=write, busy_timeout=busy_timeout) as connection:
                yield connection
        finally:
            self.close()


def cpu_per_call(work: Callable[[], object], calls: int) -> float:
    """Process CPU seconds per call of `work`."""
    started = time.process_time()
    for _ in range(calls):
        work()
    return (time.process_time() - started) / calls


async def cpu_per_request(send: Callable[[int], Awaitable[object]], requests: int) -> float:
    started = time.process_time()
    for index in range(requests):
        await send(index)
    return (time.process_time() - started) / requests


def seed(database: Database) -> tuple[str, str]:
    """An account, a user and a grant; the user's API key and the grant id."""
    database.migrate()
    create_billing_account(database, "acme")
    api_key = create_user(database, billing_account_id="acme", user_id="alice").api_key
    grant = create_grant(database, billing_account_id="acme", user_id="alice",
                         graphs=["builtin:chat", "builtin:governance-review"]).id
    return api_key, grant


def store_calls(url: str, api_key: str, *, rounds: int, calls: int) -> dict[str, list[float]]:
    variants: dict[str, Database] = {
        "new connection per call": NewConnectionPerCall(Path(url.removeprefix("sqlite:///"))),
        "kept connection": Database.from_url(url),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, database in variants.items():
            results[name].append(cpu_per_call(lambda: authenticate_user(database, api_key), calls))
    for database in variants.values():
        database.close()
    return results


@asynccontextmanager
async def running_app(
    settings: Settings,
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = configure_tracing(service_name="bench", exporter=exporter, batch=False)
    app = create_app(settings, tracer_provider=provider)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield app, client, exporter
    provider.shutdown()


async def requests(
    settings: Settings, api_key: str, grant: str, *, rounds: int, count: int
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    async with running_app(settings) as (app, client, exporter):
        services: Services = app.state.services
        path = Path(settings.database_url.removeprefix("sqlite:///"))
        databases = {"new connection per call": NewConnectionPerCall(path),
                     "kept connection": services.database}
        chat = {"graphId": "builtin:chat", "messages": [{"role": "user", "content": "hi"}]}
        review = {"executionGrantId": grant,
                  "input": {"messages": [{"role": "user", "content": "review"}]}}
        counter = iter(range(10**9))

        async def send_chat(_: int) -> object:
            response = await client.post("/api/v1/ai/chat", json=chat,
                                         headers={"Authorization": f"Bearer {api_key}"})
            assert response.status_code == 200, response.text
            return response

        async def send_run(_: int) -> object:
            key = f"bench-{next(counter)}"
            response = await client.post(
                "/api/internal/graphs/builtin:governance-review/runs", json=review,
                headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": key},
            )
            assert response.status_code == 200 and response.json()["ok"], response.text
            return response

        for _ in range(rounds):
            for name, database in databases.items():
                app.state.services = replace(services, database=database)
                for kind, send in (("chat request", send_chat), ("governance run", send_run)):
                    results.setdefault(f"{kind}, {name}", []).append(
                        await cpu_per_request(send, count)
                    )
                    exporter.clear()
        app.state.services = services
        databases["new connection per call"].close()
    return results


def postgres_store_calls(*, rounds: int, calls: int) -> dict[str, list[float]]:
    from devstack.postgres import start_postgres

    with start_postgres() as server:
        url = server.create_database("bench")
        with Database.from_url(url) as database:
            api_key, _ = seed(database)
            return {"kept Postgres pool": [
                cpu_per_call(lambda: authenticate_user(database, api_key), calls)
                for _ in range(rounds)
            ]}


def report(title: str, results: dict[str, list[float]], unit: float, unit_name: str) -> None:
    print(f"\n{title}")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"  {name:<48} {value / unit:8.1f} {unit_name}")
    for kind in ("", "chat request, ", "governance run, "):
        fresh = medians.get(f"{kind}new connection per call")
        kept = medians.get(f"{kind}kept connection")
        if fresh and kept:
            print(f"  {(kind or 'store call, ') + 'new / kept':<48} {fresh / kept:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few calls: checks that it runs")
    parser.add_argument("--postgres", action="store_true", help="also the kept Postgres pool")
    args = parser.parse_args()
    rounds, calls, count = (2, 50, 5) if args.quick else (7, 2000, 150)
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/bench.db"
        with Database.from_url(url) as database:
            api_key, grant = seed(database)
        calls_result = store_calls(url, api_key, rounds=rounds, calls=calls)
        settings = Settings(database_url=url, scheduler_api_token=SecretStr(TOKEN),
                            deploy_environment="bench", _env_file=None)  # type: ignore[call-arg]
        request_result = asyncio.run(requests(settings, api_key, grant, rounds=rounds, count=count))
    print(f"rounds {rounds}; {calls} store calls and {count} requests of each kind per round "
          "and variant; median over rounds of process CPU time")
    report("authenticate_user (one store call: the user and its account's masking)",
           calls_result, 1e-6, "µs CPU")
    report("in-process requests (chat: 1 store call; governance run: 4)",
           request_result, 1e-3, "ms CPU")
    if args.postgres:
        report("authenticate_user on Postgres (client CPU only; the server's is not counted)",
               postgres_store_calls(rounds=rounds, calls=calls), 1e-6, "µs CPU")


if __name__ == "__main__":
    main()
