"""Schedule declarations: a YAML file of cron schedules, each entry validated once into a `Schedule`.

An entry is validated at start-up (or by the CLI) and kept typed from then on: its input is
the route's own `RunInputBody`, and the request a firing sends is built by `run_request`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import ErrorDetails

from service.schemas import RunInputBody, RunRequest

__all__ = [
    "DEFAULT_CATCHUP_WINDOW",
    "MIN_CATCHUP_WINDOW",
    "Schedule",
    "ScheduleFileError",
    "check_graphs",
    "configured_schedules",
    "idempotency_key",
    "load_schedules",
    "parse_schedules",
    "utc_text",
]

_GRAPH_ID_PARTS = 2
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")
# The idempotency key `{id}:{YYYY-MM-DDTHH:MM:SSZ}` must stay within the route's 255.
_MAX_SCHEDULE_ID = 200
_MAX_GRANT_ID = 128
# How late a firing missed while Temporal was down may still start (Temporal schedules only).
DEFAULT_CATCHUP_WINDOW = dt.timedelta(hours=1)
MIN_CATCHUP_WINDOW = dt.timedelta(seconds=10)  # Temporal refuses anything shorter


class ScheduleFileError(ValueError):
    """The schedules file is malformed; the message names the schedule and the field."""


class Schedule(BaseModel):
    """One declared schedule: fire `graph` with `input` under `grant` on `cron` in `timezone`.

    `paused` and `catchup_window` are kept by Temporal schedules; the embedded scheduler
    does not fire a paused schedule and never catches up.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    cron: str
    timezone: str = "UTC"
    graph: str
    grant: str
    input: RunInputBody
    paused: bool = False
    catchup_window: dt.timedelta = DEFAULT_CATCHUP_WINDOW

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is required (a non-empty string)")
        if not _PRINTABLE_ASCII.fullmatch(value) or len(value) > _MAX_SCHEDULE_ID:
            raise ValueError(f"must be 1 to {_MAX_SCHEDULE_ID} printable ASCII characters")
        return value

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        cron = value.strip()
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ValueError(f"must be 5 cron fields, got {value!r}")
        return cron

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"must be an IANA zone such as 'Europe/Paris', got {value!r}"
            ) from None
        return value

    @field_validator("graph")
    @classmethod
    def _check_graph(cls, value: str) -> str:
        graph = value.strip()
        if not graph:
            raise ValueError("is required (a non-empty string)")
        parts = graph.split(":")
        if len(parts) != _GRAPH_ID_PARTS or not all(parts):
            raise ValueError(f"must be 'provider:name', got {value!r}")
        return graph

    @field_validator("grant")
    @classmethod
    def _check_grant(cls, value: str) -> str:
        grant = value.strip()
        if not grant:
            raise ValueError("is required (a non-empty string)")
        if not _PRINTABLE_ASCII.fullmatch(grant) or len(grant) > _MAX_GRANT_ID:
            raise ValueError(f"must be 1 to {_MAX_GRANT_ID} printable ASCII characters")
        return grant

    @field_validator("catchup_window")
    @classmethod
    def _check_catchup_window(cls, value: dt.timedelta) -> dt.timedelta:
        if value < MIN_CATCHUP_WINDOW:
            raise ValueError(
                f"must be at least {MIN_CATCHUP_WINDOW.total_seconds():g} seconds "
                f"(Temporal's minimum), got {value.total_seconds():g}"
            )
        return value

    def next_fire_after(self, moment: dt.datetime) -> dt.datetime:
        """The first firing strictly after `moment`, as an aware UTC datetime."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        fire: dt.datetime = croniter(self.cron, local).get_next(dt.datetime)
        return fire.astimezone(dt.UTC)

    def run_request(self, scheduled_for: dt.datetime) -> RunRequest:
        """The body of the internal runs request that fires this schedule for `scheduled_for`."""
        return RunRequest(
            execution_grant_id=self.grant,
            schedule_id=self.id,
            scheduled_for=scheduled_for.astimezone(dt.UTC),
            input=self.input,
        )


_FIELDS = tuple(Schedule.model_fields)


def utc_text(moment: dt.datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ`: a firing time as keys and answers write it (whole seconds, UTC)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def idempotency_key(schedule_id: str, scheduled_for: dt.datetime) -> str:
    """`{scheduleId}:{scheduledFor as ISO-8601 UTC}`: one key per firing."""
    return f"{schedule_id}:{utc_text(scheduled_for)}"


def load_schedules(path: str | Path) -> list[Schedule]:
    """Read and validate the schedules file at `path`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScheduleFileError(f"cannot read schedules file {str(file)!r}: {exc.strerror}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScheduleFileError(f"schedules file {str(file)!r} is not valid YAML: {exc}") from exc
    return parse_schedules(document, source=str(file))


def configured_schedules(path: Path | None, *, known_graphs: Collection[str]) -> list[Schedule]:
    """The schedules of the SCHEDULES_FILE `path` (none when unset), each naming a known graph."""
    if path is None:
        return []
    schedules = load_schedules(path)
    check_graphs(schedules, known_graphs, source=str(path))
    return schedules


def check_graphs(
    schedules: Sequence[Schedule], known_graphs: Collection[str], *, source: str = "<schedules>"
) -> None:
    """ScheduleFileError unless every schedule's graph is one of `known_graphs`."""
    for schedule in schedules:
        if schedule.graph not in known_graphs:
            raise ScheduleFileError(
                f"{source}: schedule {schedule.id!r}: field 'graph' names unknown graph "
                f"{schedule.graph!r}; known graphs: {', '.join(sorted(known_graphs))}"
            )


def parse_schedules(document: Any, *, source: str = "<schedules>") -> list[Schedule]:
    """Validate a parsed schedules document (`{"schedules": [...]}`)."""
    if document is None:
        return []
    if not isinstance(document, Mapping) or not isinstance(document.get("schedules", []), list):
        raise ScheduleFileError(f"{source}: expected a top-level 'schedules:' list")
    schedules: list[Schedule] = []
    seen: set[str] = set()
    for index, entry in enumerate(document.get("schedules") or []):
        schedule = _parse_entry(entry, source=source, number=index + 1)
        if schedule.id in seen:
            raise ScheduleFileError(f"{source}: schedule {schedule.id!r}: field 'id' is duplicated")
        seen.add(schedule.id)
        schedules.append(schedule)
    return schedules


def _parse_entry(entry: Any, *, source: str, number: int) -> Schedule:
    if not isinstance(entry, Mapping):
        raise ScheduleFileError(
            f"{source}: schedule #{number}: expected a mapping with id, cron, graph, grant, input"
        )
    schedule_id = entry.get("id")
    named = isinstance(schedule_id, str) and schedule_id.strip()
    where = f"{source}: schedule {schedule_id!r}" if named else f"{source}: schedule #{number}"
    try:
        return Schedule.model_validate(dict(entry))
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors(include_input=False)[:3])
        raise ScheduleFileError(f"{where}: {problems}") from None


def _problem(error: ErrorDetails) -> str:
    """One validation error as `field 'name' <what is wrong>`."""
    field, *inner = [str(part) for part in error["loc"]] or ["?"]
    kind = error["type"]
    if kind == "missing" and not inner:
        return f"field {field!r} is required"
    if kind == "extra_forbidden" and not inner:
        return f"field {field!r} is not a schedule field (expected {', '.join(_FIELDS)})"
    if kind == "value_error" and not inner:
        return f"field {field!r} {error.get('ctx', {}).get('error', error['msg'])}"
    where = f"{'.'.join(inner)}: " if inner else ""
    return f"field {field!r} is invalid: {where}{error['msg']}"
