"""The scheduler against the real app: one session per schedule, overlap skipped, bad files refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import (
    SCHEDULER_TOKEN,
    GatedProvider,
    Seed,
    app_client,
    run_spans,
    spans_of_trace,
    wait_for,
)
from service.config import Settings
from service.main import create_app
from service.scheduler import Scheduler, embedded_scheduler
from service.schedules import Schedule, ScheduleFileError
from service.store import Database
from sessiontrace import derive_schedule_session_id
from sessiontrace.attributes import (
    LANGFUSE_TRACE_METADATA_PREFIX,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_TAGS,
    SESSION_ID,
    USER_ID,
)

MONDAY = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
TUESDAY = MONDAY + dt.timedelta(days=1)


def schedule(schedule_id: str, grant: str, cron: str = "0 9 * * 1-5") -> Schedule:
    return Schedule.model_validate({
        "id": schedule_id, "cron": cron, "timezone": "Europe/Paris",
        "graph": "builtin:governance-review", "grant": grant,
        "input": {"messages": [{"role": "user", "content": "review the week"}]},
    })


def fire_all(
    app_settings: tuple[Settings, TracerProvider], schedules: list[Schedule],
    firings: list[tuple[str, dt.datetime]], llm: GatedProvider | None = None,
) -> list[httpx.Response | None]:
    settings, tracer_provider = app_settings
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=llm)

    async def scenario() -> list[httpx.Response | None]:
        async with app_client(app) as client:
            scheduler = Scheduler(schedules, client=client, token=SCHEDULER_TOKEN)
            return [await scheduler.fire(schedule_id, moment) for schedule_id, moment in firings]

    return asyncio.run(scenario())


@pytest.fixture
def app_settings(settings: Settings, tracer_provider: TracerProvider) -> tuple[Settings, TracerProvider]:
    return settings, tracer_provider


def test_one_schedule_fired_twice_gives_two_traces_in_one_session_and_another_schedule_another(
    app_settings: tuple[Settings, TracerProvider], seed: Seed, exporter: InMemorySpanExporter
) -> None:
    community = schedule("governance:community", seed.acme_grant)
    billing = schedule("governance:billing", seed.acme_grant)

    responses = fire_all(app_settings, [community, billing], [
        (community.id, MONDAY), (community.id, TUESDAY), (billing.id, MONDAY),
    ])

    monday, tuesday, other = (_ok(response) for response in responses)
    assert monday["sessionId"] == tuesday["sessionId"] == derive_schedule_session_id(
        "acme", "governance:community"
    )
    assert monday["traceId"] != tuesday["traceId"]
    assert other["sessionId"] == derive_schedule_session_id("acme", "governance:billing")
    assert other["sessionId"] != monday["sessionId"]
    for run in (monday, tuesday, other):
        identities = {((s.attributes or {}).get(SESSION_ID), (s.attributes or {}).get(USER_ID))
                      for s in spans_of_trace(exporter, run["traceId"])}
        assert identities == {(run["sessionId"], "alice")}


def test_a_firing_repeated_for_the_same_time_is_answered_from_its_record_not_run_again(
    app_settings: tuple[Settings, TracerProvider], seed: Seed, exporter: InMemorySpanExporter
) -> None:
    community = schedule("governance:community", seed.acme_grant)

    first, again = fire_all(app_settings, [community], [(community.id, MONDAY)] * 2)

    assert _ok(first) == _ok(again)
    assert len(run_spans(exporter)) == 1


def test_a_scheduled_trace_carries_trigger_schedule_grant_and_time_as_metadata_schedule_as_tag(
    app_settings: tuple[Settings, TracerProvider], seed: Seed, exporter: InMemorySpanExporter
) -> None:
    community = schedule("governance:community", seed.acme_grant)

    (response,) = fire_all(app_settings, [community], [(community.id, MONDAY)])

    run = _ok(response)
    (agent,) = [s for s in spans_of_trace(exporter, run["traceId"])
                if s.name == "invoke_agent builtin:governance-review"]
    attributes = agent.attributes or {}
    metadata = {key.removeprefix(LANGFUSE_TRACE_METADATA_PREFIX): value
                for key, value in attributes.items()
                if key.startswith(LANGFUSE_TRACE_METADATA_PREFIX)}
    assert metadata["trigger"] == "schedule"
    assert metadata["schedule_id"] == "governance:community"
    assert metadata["grant_id"] == seed.acme_grant
    assert metadata["scheduled_for"] == "2026-11-23T08:00:00+00:00"
    assert metadata["run_id"] == run["runId"]
    tags = attributes[LANGFUSE_TRACE_TAGS]
    assert isinstance(tags, tuple)
    assert {"schedule", "builtin:governance-review", "schedule:governance:community"} <= set(tags)
    # A grant is metadata, not a tag: tags are a short list to filter by.
    assert not [tag for tag in tags if tag.startswith("grant:")]
    assert attributes[LANGFUSE_TRACE_NAME] == "builtin:governance-review"


def test_a_firing_is_skipped_while_the_previous_run_of_its_schedule_is_still_running(
    settings: Settings, tracer_provider: TracerProvider, seed: Seed,
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
) -> None:
    llm = GatedProvider()
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=llm)
    community = schedule("governance:community", seed.acme_grant)
    billing = schedule("governance:billing", seed.acme_grant)

    async def scenario() -> tuple[httpx.Response | None, ...]:
        async with app_client(app) as client:
            scheduler = Scheduler([community, billing], client=client, token=SCHEDULER_TOKEN)
            monday = asyncio.create_task(scheduler.fire(community.id, MONDAY))
            await wait_for(lambda: llm.calls == 1, timeout=10)
            overlapping = await scheduler.fire(community.id, TUESDAY)
            # Another schedule is not held back by this one's run.
            other = asyncio.create_task(scheduler.fire(billing.id, TUESDAY))
            await wait_for(lambda: llm.calls == 2, timeout=10)
            llm.release.set()
            return await monday, overlapping, await other

    with caplog.at_level(logging.WARNING, logger="service.scheduler"):
        monday, overlapping, other = asyncio.run(scenario())

    assert _ok(monday)["ok"] is True and _ok(other)["ok"] is True
    assert overlapping is None
    assert len(run_spans(exporter)) == 2
    assert any("governance:community" in r.getMessage() and "skipped" in r.getMessage()
               for r in caplog.records)


def test_the_scheduler_fires_each_cron_time_through_the_real_app(
    settings: Settings, tracer_provider: TracerProvider, seed: Seed,
    exporter: InMemorySpanExporter,
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider)
    every_five = schedule("governance:community", seed.acme_grant, cron="*/5 * * * *")
    now = [MONDAY - dt.timedelta(seconds=30)]
    sleeps = [0]

    async def scenario() -> None:
        async with app_client(app) as client:
            async def virtual_sleep(seconds: float) -> None:
                # Virtual time moves on only once the firing before this sleep has its answer.
                await wait_for(lambda: len(run_spans(exporter)) >= sleeps[0]
                               and not scheduler.in_flight, timeout=10)
                sleeps[0] += 1
                now[0] += dt.timedelta(seconds=seconds)

            scheduler = Scheduler([every_five], client=client, token=SCHEDULER_TOKEN,
                                  clock=lambda: now[0], sleep=virtual_sleep)
            loop = asyncio.create_task(scheduler.run_forever())
            await wait_for(lambda: len(run_spans(exporter)) >= 2, timeout=10)
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    asyncio.run(scenario())

    runs = run_spans(exporter)[:2]
    scheduled = [(s.attributes or {})[f"{LANGFUSE_TRACE_METADATA_PREFIX}scheduled_for"]
                 for s in runs]
    assert scheduled == ["2026-11-23T08:00:00+00:00", "2026-11-23T08:05:00+00:00"]
    assert len({(s.attributes or {})[SESSION_ID] for s in runs}) == 1


MALFORMED = {
    "bad-yaml": ("schedules: [\n", "not valid YAML"),
    "bad-cron": (
        "schedules:\n  - {id: governance:community, cron: '0 9 * *', graph: builtin:chat,\n"
        "     grant: g, input: {messages: [{role: user, content: hi}]}}\n",
        "schedule 'governance:community': field 'cron'",
    ),
    "unknown-graph": (
        "schedules:\n  - {id: governance:community, cron: '0 9 * * *', graph: builtin:nope,\n"
        "     grant: g, input: {messages: [{role: user, content: hi}]}}\n",
        "schedule 'governance:community': field 'graph' names unknown graph 'builtin:nope'",
    ),
    "bad-role": (
        "schedules:\n  - {id: governance:community, cron: '0 9 * * *', graph: builtin:chat,\n"
        "     grant: g, input: {messages: [{role: robot, content: hi}]}}\n",
        "schedule 'governance:community': field 'input' is invalid: messages.0.role",
    ),
}


@pytest.mark.parametrize(("text", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_schedules_file_stops_start_up_naming_the_schedule_and_field(
    settings: Settings, tracer_provider: TracerProvider, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(text)
    app = create_app(settings.model_copy(update={"schedules_file": path}),
                     tracer_provider=tracer_provider)

    with pytest.raises(ScheduleFileError, match=message.replace("*", r"\*")), TestClient(app):
        pass


def test_a_missing_schedules_file_stops_start_up(
    settings: Settings, tracer_provider: TracerProvider, tmp_path: Path
) -> None:
    app = create_app(settings.model_copy(update={"schedules_file": tmp_path / "missing.yaml"}),
                     tracer_provider=tracer_provider)

    with pytest.raises(ScheduleFileError, match="cannot read schedules file"), TestClient(app):
        pass


def test_the_lifespan_runs_the_scheduler_only_when_enabled(
    settings: Settings, tracer_provider: TracerProvider, seed: Seed,
    write_schedules: Callable[..., Path],
) -> None:
    path = write_schedules(seed.acme_grant)
    for enabled in (False, True):
        configured = settings.model_copy(
            update={"schedules_file": path, "scheduler_enabled": enabled}
        )
        app = create_app(configured, tracer_provider=tracer_provider)
        with TestClient(app):
            running = app.state.scheduler
            if enabled:
                assert isinstance(running, Scheduler)
                assert [s.id for s in running.schedules] == ["governance:community"]
            else:
                assert running is None
        assert app.state.scheduler is None


def test_the_embedded_scheduler_runs_in_the_background_and_is_cancelled_on_exit(
    settings: Settings, database: Database, seed: Seed, caplog: pytest.LogCaptureFixture,
) -> None:
    enabled = settings.model_copy(update={"scheduler_enabled": True})
    schedules = [schedule("governance:community", seed.acme_grant),
                 schedule("governance:stale", seed.revoked_grant)]

    async def scenario() -> tuple[bool, bool]:
        async with embedded_scheduler(enabled, schedules, database=database) as scheduler:
            assert scheduler is not None
            (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "sessiontrace-scheduler"]
            await asyncio.sleep(0)
            running = not task.done()
        return running, task.cancelled()

    with caplog.at_level(logging.WARNING, logger="service.scheduler"):
        running, cancelled = asyncio.run(scenario())

    assert running and cancelled
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("governance:stale" in w and "grant_revoked" in w for w in warnings)
    assert not any("governance:community" in w for w in warnings)


@pytest.fixture
def write_schedules(tmp_path: Path) -> Callable[..., Path]:
    def write(grant: str, schedule_id: str = "governance:community") -> Path:
        path = tmp_path / "schedules.yaml"
        path.write_text(
            "schedules:\n"
            f"  - id: {schedule_id}\n"
            "    cron: '0 9 * * 1-5'\n"
            "    timezone: Europe/Paris\n"
            "    graph: builtin:governance-review\n"
            f"    grant: {grant}\n"
            "    input: {messages: [{role: user, content: review the week}]}\n"
        )
        return path

    return write


def _ok(response: httpx.Response | None) -> dict[str, Any]:
    assert response is not None, "the firing was skipped"
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
