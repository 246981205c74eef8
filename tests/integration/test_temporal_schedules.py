"""Governance schedules in Temporal, as real processes: the project's bin/temporal dev server, the
service (on the conftest's DATABASE_URL), `python -m service schedules ...` and `worker`.

One dev server for the session; each test gets a namespace of its own, so schedule ids such as
`governance:alpha` never meet another test's.
"""

from __future__ import annotations

import datetime as dt
import gzip
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    WorkflowFailureError,
)
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from llm_stub import LLMStub
from temporal_deployment import TASK_QUEUE, Deployment, governance_entry
from devstack.demo import GOVERNANCE_GRAPH, DemoAccount
from devstack.processes import free_port, wait_until
from devstack.stack import CollectorHandle, ServiceHandle, SinkHandle
from service.schedules import Schedule, parse_schedules
from service.schemas import RunResponse
from service.store import Database, IdempotencyStatus, get_idempotency_record
from service.temporal import (
    FIRING_SPAN,
    FIRING_WORKFLOW,
    MANAGED_BY,
    StartedFiring,
    describe_schedule,
    firing_outcome,
    temporal_schedule,
    trigger_firing,
)
from sessiontrace import derive_schedule_session_id

pytestmark = pytest.mark.integration

ServiceFactory = Callable[..., ServiceHandle]
CollectorFactory = Callable[..., CollectorHandle]


# --- sync ----------------------------------------------------------------------------------------


def test_sync_creates_each_entry_with_overlap_skip_and_deletes_only_its_own_that_left_the_file(
    deployment: Deployment,
) -> None:
    deployment.write(
        "schedules:\n"
        + governance_entry("governance:alpha", "grant-a")
        + governance_entry(
            "governance:beta", "grant-b", cron="30 6 * * 1-5",
            extra="    timezone: Europe/Paris\n    paused: true\n    catchup_window: 300\n",
        )
    )
    manual = Schedule.model_validate({
        "id": "governance:manual", "cron": "0 1 * * *", "graph": GOVERNANCE_GRAPH,
        "grant": "grant-m", "input": {"messages": [{"role": "user", "content": "hi"}]},
    })

    async def create_unmanaged(client: Client) -> None:
        await client.create_schedule(
            manual.id, temporal_schedule(manual, task_queue=TASK_QUEUE)
        )

    deployment.temporal_client(create_unmanaged)

    synced = deployment.ok("schedules", "sync")

    assert synced["created"] == ["governance:alpha", "governance:beta"]
    assert synced["deleted"] == [] and synced["updated"] == []
    alpha, beta = deployment.temporal_client(_describe("governance:alpha", "governance:beta"))
    assert alpha.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
    assert alpha.schedule.policy.catchup_window is not None
    assert alpha.schedule.policy.catchup_window.total_seconds() == 3600  # the default
    assert alpha.schedule.state.paused is False
    assert {(t.hour, t.minute) for t in alpha.info.next_action_times} == {(9, 0)}
    action = alpha.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == FIRING_WORKFLOW and action.task_queue == TASK_QUEUE
    assert beta.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
    assert beta.schedule.state.paused is True
    assert beta.schedule.spec.time_zone_name == "Europe/Paris"
    assert beta.schedule.policy.catchup_window is not None
    assert beta.schedule.policy.catchup_window.total_seconds() == 300
    assert deployment.temporal_client(_memo("governance:beta"))["managedBy"] == MANAGED_BY
    # Listing is eventually consistent; removal below must find beta in it.
    wait_until(lambda: _listed(deployment) >= {"governance:alpha", "governance:beta"},
               timeout=30, message="the synced schedules in Temporal's list")

    deployment.write(
        "schedules:\n" + governance_entry("governance:alpha", "grant-a", extra="    paused: true\n")
    )
    synced = deployment.ok("schedules", "sync")

    assert synced["updated"] == ["governance:alpha"] and synced["deleted"] == ["governance:beta"]
    alpha, beta, kept = deployment.temporal_client(
        _describe("governance:alpha", "governance:beta", "governance:manual")
    )
    assert beta is None
    assert kept is not None  # not sync's: left alone
    assert alpha is not None and alpha.schedule.state.paused is True


def test_sync_changes_nothing_when_an_entry_would_take_over_a_schedule_it_does_not_manage(
    deployment: Deployment,
) -> None:
    deployment.write("schedules:\n" + governance_entry("governance:alpha", "grant-a"))
    deployment.ok("schedules", "sync")
    foreign = Schedule.model_validate({
        "id": "governance:foreign", "cron": "0 1 * * *", "graph": GOVERNANCE_GRAPH,
        "grant": "grant-f", "input": {"messages": [{"role": "user", "content": "hi"}]},
    })

    async def create_unmanaged(client: Client) -> None:
        await client.create_schedule(foreign.id, temporal_schedule(foreign, task_queue=TASK_QUEUE))

    deployment.temporal_client(create_unmanaged)
    deployment.write(
        "schedules:\n"
        + governance_entry("governance:alpha", "grant-a", extra="    paused: true\n")
        + governance_entry("governance:foreign", "grant-f")
    )

    message = deployment.failed("schedules", "sync")

    assert "schedule 'governance:foreign' exists in Temporal" in message
    assert "sync leaves it alone" in message
    (alpha,) = deployment.temporal_client(_describe("governance:alpha"))
    assert alpha is not None and alpha.schedule.state.paused is False  # not updated either


def test_sync_refuses_without_a_schedules_file_rather_than_delete_every_schedule(
    deployment: Deployment,
) -> None:
    message = deployment.failed("schedules", "sync", SCHEDULES_FILE="")

    assert "SCHEDULES_FILE is not set" in message


# --- firings -------------------------------------------------------------------------------------


@dataclass
class OpsCapture:
    """The operations backend: an OTLP/HTTP endpoint keeping every span, links included."""

    url: str
    spans: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Any]:
        with self.lock:
            return list(self.spans)


@pytest.fixture
def ops_capture() -> Iterator[OpsCapture]:
    port = free_port()
    capture = OpsCapture(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest.FromString(body)
            with capture.lock:
                for resource_spans in request.resource_spans:
                    service = {a.key: a.value.string_value
                               for a in resource_spans.resource.attributes}["service.name"]
                    for scope_spans in resource_spans.scope_spans:
                        capture.spans.extend((service, span) for span in scope_spans.spans)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield capture
    server.shutdown()
    server.server_close()


def test_each_trigger_through_two_workers_is_one_run_in_the_schedules_session(
    deployment: Deployment,
    service_factory: ServiceFactory,
    collector_factory: CollectorFactory,
    sink: SinkHandle,
    ops_capture: OpsCapture,
    demo_account: DemoAccount,
) -> None:
    collector = collector_factory(OPS_OTLP_ENDPOINT=ops_capture.url)
    deployment.service = service_factory(otlp_endpoint=collector.otlp_http_url)
    deployment.write("schedules:\n" + governance_entry("governance:alpha", demo_account.grant_id))
    deployment.ok("schedules", "sync")
    for _ in range(2):
        deployment.start_worker(otlp_endpoint=collector.otlp_http_url)

    answers = [deployment.ok("schedules", "run", "governance:alpha") for _ in range(3)]

    session = derive_schedule_session_id(demo_account.billing_account_id, "governance:alpha")
    assert all(answer["ok"] is True for answer in answers)
    assert {answer["sessionId"] for answer in answers} == {session}
    assert len({answer["runId"] for answer in answers}) == 3
    assert len({answer["workflowId"] for answer in answers}) == 3
    (listed,) = deployment.ok("schedules", "list")["schedules"]
    assert listed["paused"] is False and listed["firings"] == 3
    assert listed["lastFiring"]["status"] == "COMPLETED"
    assert listed["lastFiring"]["runId"] == answers[-1]["runId"]
    database = Database.from_url(deployment.service.database_url)
    for answer in answers:
        record = get_idempotency_record(database, f"governance:alpha:{answer['scheduledFor']}")
        assert record is not None and record.status is IdempotencyStatus.FINISHED
        assert record.attempts == 1 and record.response is not None
        assert record.response["runId"] == answer["runId"]
    # Langfuse: one trace per run, each in the alpha session; the workers' spans never get there.
    run_traces = {answer["traceId"] for answer in answers}
    grouped = _wait_for_sink(sink, collector, run_traces)
    for spans in grouped.values():
        assert {span["attributes"].get("langfuse.session.id") for span in spans} == {session}
    assert not [s for s in sink.spans()
                if s["resource_attributes"].get("service.name", "").endswith("-worker")]
    # Operations: each firing's span, in a trace of its own, linked from its run's root span.
    firings = _wait_for_firing_spans(ops_capture, count=3)
    assert {span.trace_id.hex() for span in firings}.isdisjoint(run_traces)
    roots = [span for service, span in ops_capture.received()
             if service != "sessiontrace-worker" and span.trace_id.hex() in run_traces
             and not span.parent_span_id]
    assert len(roots) == 3
    linked = {(link.trace_id.hex(), link.span_id.hex()) for root in roots for link in root.links}
    assert linked == {(span.trace_id.hex(), span.span_id.hex()) for span in firings}


def test_a_worker_killed_mid_firing_is_retried_by_another_and_the_key_keeps_it_to_one_run(
    deployment: Deployment,
    service_factory: ServiceFactory,
    demo_account: DemoAccount,
    llm_stub: LLMStub,
) -> None:
    deployment.service = service_factory(
        otlp_endpoint=f"http://127.0.0.1:{free_port()}", OTEL_SDK_DISABLED="true",
        LLM_BASE_URL=llm_stub.url, LLM_MODEL="stub-model",
    )
    deployment.write("schedules:\n" + governance_entry("governance:alpha", demo_account.grant_id))
    deployment.ok("schedules", "sync")
    first = deployment.start_worker()
    started = deployment.ok("schedules", "run", "governance:alpha", "--no-wait")
    wait_until(lambda: llm_stub.calls == 1, timeout=60, message="the run's first LLM call")
    # Overlap SKIP: no second firing of the schedule while this one runs.
    assert "overlap policy is SKIP" in deployment.failed("schedules", "run", "governance:alpha")

    first.kill()  # its activity is waiting for the run's answer
    deployment.start_worker()
    firing = StartedFiring(
        schedule_id="governance:alpha", workflow_id=started["workflowId"], run_id=None,
        scheduled_for=dt.datetime.fromisoformat(started["scheduledFor"]),
    )
    # After the heartbeat timeout the new worker retries: the key's run still goes, so 409.
    wait_until(lambda: "HTTP409" in deployment.temporal_client(_pending_failure(firing)),
               timeout=120, interval=1, message="a retry answered 409 while the run went on")
    llm_stub.release.set()
    outcome = deployment.temporal_client(lambda client: firing_outcome(client, firing))

    assert outcome.ok is True
    assert llm_stub.calls == 2  # one run: governance-review calls the LLM twice
    record = get_idempotency_record(
        Database.from_url(deployment.service.database_url),
        f"governance:alpha:{started['scheduledFor']}",
    )
    assert record is not None and record.status is IdempotencyStatus.FINISHED
    assert record.attempts == 1 and record.response is not None
    assert record.response["runId"] == outcome.run_id


def test_a_refused_firing_fails_at_once_without_retry(
    deployment: Deployment, service_factory: ServiceFactory, demo_account: DemoAccount,
) -> None:
    deployment.service = service_factory(
        otlp_endpoint=f"http://127.0.0.1:{free_port()}", OTEL_SDK_DISABLED="true"
    )
    # 403: a grant that does not exist; 404: a graph the service no longer has (the entry was
    # synced by an older release), so it is created here without the CLI's graph check.
    deployment.write("schedules:\n" + governance_entry("governance:refused", "grant-missing"))
    deployment.ok("schedules", "sync")
    (gone,) = parse_schedules(yaml.safe_load(
        "schedules:\n" + governance_entry("governance:gone", demo_account.grant_id,
                                          graph="builtin:retired")
    ))

    async def create_gone(client: Client) -> None:
        await client.create_schedule(gone.id, temporal_schedule(gone, task_queue=TASK_QUEUE))

    deployment.temporal_client(create_gone)
    deployment.start_worker()

    message = deployment.failed("schedules", "run", "governance:refused")

    assert "answered 403" in message and "grant_not_found" in message
    assert "not retried" in message
    for schedule_id, status in (("governance:refused", 403), ("governance:gone", 404)):
        error = deployment.temporal_client(_fire_and_fail(schedule_id))
        assert isinstance(error.cause, ActivityError)
        assert error.cause.retry_state is RetryState.NON_RETRYABLE_FAILURE
        assert isinstance(error.cause.cause, ApplicationError)
        assert error.cause.cause.type == f"HTTP{status}" and error.cause.cause.non_retryable
    attempts = "".join(worker.log() for worker in deployment.workers).count("HTTP Request: POST")
    assert attempts == 3  # one per firing
    (refused,) = deployment.ok("schedules", "list")["schedules"]
    assert refused["lastFiring"]["status"] == "FAILED"
    assert "answered 403" in refused["lastFiring"]["error"]


def test_the_service_refuses_the_embedded_scheduler_together_with_temporal(
    deployment: Deployment,
) -> None:
    deployment.write("schedules: []\n")

    message = deployment.failed("serve", "--port", "1", SCHEDULER_ENABLED="true")

    assert "SCHEDULER_ENABLED=true and TEMPORAL_ADDRESS are both set" in message


# --- helpers -------------------------------------------------------------------------------------


def _describe(*schedule_ids: str) -> Callable[[Client], Awaitable[list[Any]]]:
    async def describe(client: Client) -> list[Any]:
        return [await describe_schedule(client, schedule_id) for schedule_id in schedule_ids]

    return describe


def _memo(schedule_id: str) -> Callable[[Client], Awaitable[dict[str, Any]]]:
    async def memo(client: Client) -> dict[str, Any]:
        description = await client.get_schedule_handle(schedule_id).describe()
        return dict(await description.memo())

    return memo


def _listed(deployment: Deployment) -> set[str]:
    async def listed(client: Client) -> set[str]:
        return {schedule.id async for schedule in await client.list_schedules()}

    return deployment.temporal_client(listed)


def _pending_failure(firing: StartedFiring) -> Callable[[Client], Awaitable[str]]:
    """The last failure of the firing's pending activity: its type and message."""

    async def failure(client: Client) -> str:
        description = await client.get_workflow_handle(firing.workflow_id).describe()
        return " ".join(
            f"{pending.last_failure.application_failure_info.type} {pending.last_failure.message}"
            for pending in description.raw_description.pending_activities
        )

    return failure


def _fire_and_fail(schedule_id: str) -> Callable[[Client], Awaitable[WorkflowFailureError]]:
    async def fire(client: Client) -> WorkflowFailureError:
        firing = await trigger_firing(client, schedule_id)
        handle = client.get_workflow_handle(firing.workflow_id, result_type=RunResponse)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        return failed.value

    return fire


def _wait_for_sink(
    sink: SinkHandle, collector: CollectorHandle, trace_ids: set[str]
) -> dict[str, list[Any]]:
    from devstack.delivery import wait_for_sink

    return {trace: list(spans) for trace, spans in
            wait_for_sink(sink, collector, trace_ids).items()}


def _wait_for_firing_spans(capture: OpsCapture, *, count: int) -> list[Any]:
    def firings() -> list[Any]:
        return [span for service, span in capture.received()
                if service == "sessiontrace-worker" and span.name == FIRING_SPAN]

    wait_until(lambda: len(firings()) >= count, timeout=60,
               message=lambda: f"{count} firing spans at the ops endpoint, got {len(firings())}")
    return firings()
