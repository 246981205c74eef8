"""Schedule declarations: a YAML file of cron schedules, validated at start-up."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import ValidationError

from service.schemas import RunInputBody

__all__ = [
    "Schedule",
    "ScheduleFileError",
    "check_graphs",
    "configured_schedules",
    "idempotency_key",
    "load_schedules",
    "parse_schedules",
]

_GRAPH_ID_PARTS = 2
_FIELDS = ("id", "cron", "timezone", "graph", "grant", "input")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")
# The idempotency key `{id}:{YYYY-MM-DDTHH:MM:SSZ}` must stay within the route's 255.
_MAX_SCHEDULE_ID = 200
_MAX_GRANT_ID = 128


class ScheduleFileError(ValueError):
    """The schedules file is malformed; the message names the schedule and the field."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """One declared schedule: fire `graph` with `input` under `grant` on `cron`."""

    id: str
    cron: str
    timezone: str
    graph: str
    grant: str
    input: Mapping[str, Any]

    def next_fire_after(self, moment: dt.datetime) -> dt.datetime:
        """The first firing strictly after `moment`, as an aware UTC datetime."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        fire: dt.datetime = croniter(self.cron, local).get_next(dt.datetime)
        return fire.astimezone(dt.UTC)


def idempotency_key(schedule_id: str, scheduled_for: dt.datetime) -> str:
    """`{scheduleId}:{scheduledFor as ISO-8601 UTC}`: one key per firing."""
    utc = scheduled_for.astimezone(dt.UTC).replace(microsecond=0)
    return f"{schedule_id}:{utc.strftime('%Y-%m-%dT%H:%M:%SZ')}"


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
        schedule = _parse_entry(entry, f"{source}: schedule #{index + 1}")
        if schedule.id in seen:
            raise ScheduleFileError(f"{source}: schedule {schedule.id!r}: field 'id' is duplicated")
        seen.add(schedule.id)
        schedules.append(schedule)
    return schedules


def _parse_entry(entry: Any, where: str) -> Schedule:
    if not isinstance(entry, Mapping):
        raise ScheduleFileError(f"{where}: expected a mapping with id, cron, graph, grant, input")
    schedule_id = entry.get("id")
    if not isinstance(schedule_id, str) or not schedule_id.strip():
        raise ScheduleFileError(f"{where}: field 'id' is required (a non-empty string)")
    where = f"{where.rsplit(': ', 1)[0]}: schedule {schedule_id!r}"
    if not _PRINTABLE_ASCII.fullmatch(schedule_id) or len(schedule_id) > _MAX_SCHEDULE_ID:
        raise ScheduleFileError(
            f"{where}: field 'id' must be 1 to {_MAX_SCHEDULE_ID} printable ASCII characters"
        )
    unknown = sorted(str(name) for name in entry if name not in _FIELDS)
    if unknown:
        raise ScheduleFileError(
            f"{where}: field {unknown[0]!r} is not a schedule field "
            f"(expected {', '.join(_FIELDS)})"
        )
    cron = _required_str(entry, "cron", where)
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ScheduleFileError(f"{where}: field 'cron' must be 5 cron fields, got {cron!r}")
    timezone = entry.get("timezone", "UTC")
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleFileError(
            f"{where}: field 'timezone' must be an IANA zone such as 'Europe/Paris', "
            f"got {timezone!r}"
        ) from None
    graph = _required_str(entry, "graph", where)
    if len(graph.split(":")) != _GRAPH_ID_PARTS or not all(graph.split(":")):
        raise ScheduleFileError(f"{where}: field 'graph' must be 'provider:name', got {graph!r}")
    grant = _required_str(entry, "grant", where)
    if not _PRINTABLE_ASCII.fullmatch(grant) or len(grant) > _MAX_GRANT_ID:
        raise ScheduleFileError(
            f"{where}: field 'grant' must be 1 to {_MAX_GRANT_ID} printable ASCII characters"
        )
    run_input = entry.get("input")
    if not isinstance(run_input, Mapping) or not _valid_messages(run_input.get("messages")):
        raise ScheduleFileError(
            f"{where}: field 'input' must be {{'messages': [{{'role': ..., 'content': ...}}]}}"
        )
    try:
        # The route's own model: an input the route would refuse stops start-up instead.
        RunInputBody.model_validate(run_input)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_input=False)[:3]
        )
        raise ScheduleFileError(f"{where}: field 'input' is invalid: {problems}") from None
    return Schedule(
        id=schedule_id, cron=cron, timezone=str(timezone), graph=graph, grant=grant,
        input=dict(run_input),
    )


def _required_str(entry: Mapping[str, Any], name: str, where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ScheduleFileError(f"{where}: field {name!r} is required (a non-empty string)")
    return value.strip()


def _valid_messages(messages: Any) -> bool:
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        return False
    return all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    )
