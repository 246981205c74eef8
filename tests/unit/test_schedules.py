import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from service.schemas import RunRequest
from service.schedules import (
    DEFAULT_CATCHUP_WINDOW,
    ScheduleFileError,
    check_graphs,
    configured_schedules,
    idempotency_key,
    load_schedules,
    parse_schedules,
)

VALID = """
schedules:
  - id: governance:community
    cron: "0 9 * * 1-5"
    timezone: Europe/Paris
    graph: builtin:governance-review
    grant: grant-1
    input:
      messages:
        - {role: user, content: "Review the community guidelines"}
  - id: governance:nightly
    cron: "*/15 * * * *"
    graph: builtin:chat
    grant: grant-2
    input: {messages: [{role: user, content: "hi"}]}
"""


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "governance:community",
        "cron": "0 9 * * *",
        "graph": "builtin:chat",
        "grant": "grant-1",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_valid_file_loads_with_utc_as_default_timezone(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(VALID)
    community, nightly = load_schedules(path)
    assert community.id == "governance:community"
    assert community.timezone == "Europe/Paris"
    assert community.graph == "builtin:governance-review"
    assert nightly.timezone == "UTC"
    assert nightly.input.messages[0].content == "hi"
    assert not community.paused and community.catchup_window == DEFAULT_CATCHUP_WINDOW


def test_next_fire_respects_the_schedule_timezone(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(VALID)
    community, nightly = load_schedules(path)
    monday_7_utc = dt.datetime(2026, 11, 23, 7, 0, tzinfo=dt.UTC)
    # 09:00 in Paris in November is 08:00 UTC.
    assert community.next_fire_after(monday_7_utc) == dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
    assert nightly.next_fire_after(monday_7_utc) == dt.datetime(2026, 11, 23, 7, 15, tzinfo=dt.UTC)


def test_idempotency_key_is_schedule_and_iso_utc_firing_time() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    moment = dt.datetime(2026, 11, 23, 9, 0, 0, 123, tzinfo=paris)
    assert idempotency_key("governance:community", moment) == "governance:community:2026-11-23T08:00:00Z"


@pytest.mark.parametrize(
    ("bad_entry", "message"),
    [
        (entry(id=None), "schedule #1: field 'id' is required"),
        (entry(cron="0 9 * *"), "schedule 'governance:community': field 'cron' must be 5 cron fields"),
        (entry(cron="61 * * * *"), "field 'cron'"),
        (entry(timezone="Mars/Olympus"), "schedule 'governance:community': field 'timezone'"),
        (entry(graph="chat"), "field 'graph' must be 'provider:name'"),
        (entry(grant=""), "field 'grant' is required"),
        (entry(input={"messages": []}), "field 'input'"),
        (entry(input={"messages": [{"role": "user"}]}), "field 'input'"),
        ("just a string", "schedule #1: expected a mapping"),
        (entry(id="caf\u00e9"), "schedule 'caf\u00e9': field 'id' must be 1 to 200 printable ASCII"),
        (entry(timezon="Europe/Paris"), "field 'timezon' is not a schedule field"),
        (entry(grant="g" * 129), "field 'grant' must be 1 to 128 printable ASCII"),
        (entry(input={"messages": [{"role": "robot", "content": "hi"}]}),
         "field 'input' is invalid: messages.0.role"),
        (entry(input={"messages": [{"role": "user", "content": "hi"}], "temperature": 1}),
         "field 'input' is invalid: temperature"),
        (entry(catchup_window=5), "field 'catchup_window' must be at least 10 seconds"),
        (entry(catchup_window="soon"), "field 'catchup_window' is invalid"),
        (entry(paused="sometimes"), "field 'paused' is invalid"),
    ],
)
def test_malformed_entries_name_the_schedule_and_field(bad_entry: Any, message: str) -> None:
    with pytest.raises(ScheduleFileError, match=message.replace("*", r"\*")):
        parse_schedules({"schedules": [bad_entry]})


def test_duplicate_schedule_ids_are_refused() -> None:
    with pytest.raises(ScheduleFileError, match="'governance:community': field 'id' is duplicated"):
        parse_schedules({"schedules": [entry(), entry()]})


def test_file_without_schedules_list_is_refused() -> None:
    with pytest.raises(ScheduleFileError, match="top-level 'schedules:' list"):
        parse_schedules({"schedules": {"id": "x"}})
    with pytest.raises(ScheduleFileError, match="top-level 'schedules:' list"):
        parse_schedules(["not", "a", "mapping"])


def test_invalid_yaml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("schedules: [\n")
    with pytest.raises(ScheduleFileError, match="broken.yaml.*not valid YAML"):
        load_schedules(broken)
    with pytest.raises(ScheduleFileError, match="cannot read schedules file.*missing.yaml"):
        load_schedules(tmp_path / "missing.yaml")


def test_a_schedule_naming_an_unregistered_graph_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(VALID)

    with pytest.raises(ScheduleFileError, match=(
        r"schedules.yaml: schedule 'governance:community': field 'graph' names unknown graph "
        r"'builtin:governance-review'; known graphs: builtin:chat"
    )):
        configured_schedules(path, known_graphs=("builtin:chat",))
    check_graphs(load_schedules(path), ("builtin:chat", "builtin:governance-review"))


def test_without_a_schedules_file_there_are_no_schedules() -> None:
    assert configured_schedules(None, known_graphs=()) == []


def test_paused_and_catchup_window_are_read_as_written() -> None:
    (schedule,) = parse_schedules(
        {"schedules": [entry(paused=True, catchup_window="PT5M")]}
    )

    assert schedule.paused is True
    assert schedule.catchup_window == dt.timedelta(minutes=5)


def test_the_run_request_of_a_firing_is_the_routes_own_model_with_the_entrys_input() -> None:
    (schedule,) = parse_schedules({"schedules": [entry(
        input={"messages": [{"role": "user", "content": "review"}], "model": "gpt-4o-mini"},
    )]})
    paris = dt.timezone(dt.timedelta(hours=1))

    request = schedule.run_request(dt.datetime(2026, 11, 23, 9, 0, tzinfo=paris))

    assert isinstance(request, RunRequest)
    assert request.input is schedule.input  # validated once, kept, not re-parsed
    assert request.model_dump(mode="json", by_alias=True, exclude_none=True) == {
        "executionGrantId": "grant-1",
        "scheduleId": "governance:community",
        "scheduledFor": "2026-11-23T08:00:00Z",
        "input": {"messages": [{"role": "user", "content": "review"}], "model": "gpt-4o-mini"},
    }
