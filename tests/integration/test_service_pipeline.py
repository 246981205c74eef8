"""The real service exports through the real collector to the capture endpoint, under Langfuse's
contract; and it keeps serving when the collector is down.

service (OTLP/HTTP) -> bin/otelcol (otel-collector.yaml) -> development sink, each a process.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from devstack.delivery import wait_for_sink
from devstack.demo import DemoAccount, RunResult, fire_demo_runs
from devstack.processes import free_port, wait_until
from devstack.report import sessions_report
from devstack.stack import CollectorHandle, ServiceHandle, SinkHandle

pytestmark = pytest.mark.integration

HEX_TRACE_ID = re.compile(r"[0-9a-f]{32}")
HEX_SPAN_ID = re.compile(r"[0-9a-f]{16}")
SPAN_KIND_SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind
# The OTLP/HTTP exporter's warning when it cannot reach the collector and will retry.
EXPORT_WARNING = re.compile(r"WARNING opentelemetry\.exporter\.\S+: Transient error .* spans? batch")
CollectorFactory = Callable[..., CollectorHandle]
ServiceFactory = Callable[..., ServiceHandle]


def fire(service: ServiceHandle, account: DemoAccount) -> list[RunResult]:
    """One user chat and two governance runs of one schedule; each must answer 200."""
    with httpx.Client(base_url=service.url, timeout=30) as client:
        return fire_demo_runs(client, account, scheduler_token=service.scheduler_token)


def test_every_span_of_user_and_governance_runs_arrives_with_its_session_and_user(
    sink: SinkHandle, collector: CollectorHandle, service: ServiceHandle, demo_account: DemoAccount
) -> None:
    runs = fire(service, demo_account)

    by_trace = wait_for_sink(sink, collector, [run.trace_id for run in runs], timeout=30)
    user_run, first_governance, second_governance = runs
    assert first_governance.session_id == second_governance.session_id
    assert user_run.session_id != first_governance.session_id
    assert user_run.session_id.startswith("ba:demo:")
    assert first_governance.session_id.startswith("gov:demo:")
    for run in runs:
        spans = by_trace[run.trace_id]
        assert len(spans) >= 3, f"{run.label}: only {[span['name'] for span in spans]}"
        [root] = [span for span in spans if span["parent_span_id"] is None]
        assert root["kind"] == SPAN_KIND_SERVER and root["name"].startswith("POST /api/")
        for span in spans:
            assert_langfuse_contract(span)
            attributes = span["attributes"]
            assert attributes["session.id"] == run.session_id, (run.label, span["name"])
            assert attributes["user.id"] == demo_account.user_id, (run.label, span["name"])
    # Nothing else reached the endpoint: the service sends no span outside a run.
    report = sessions_report(sink.db)
    assert report.spans_without_session == 0
    assert report.total_spans == sum(len(spans) for spans in by_trace.values())
    assert sorted((s.session_id, s.traces, s.users) for s in report.sessions) == [
        (user_run.session_id, 1, (demo_account.user_id,)),
        (first_governance.session_id, 2, (demo_account.user_id,)),
    ]


def test_the_service_keeps_answering_while_the_collector_is_down_and_new_runs_arrive_once_back(
    sink: SinkHandle,
    collector_factory: CollectorFactory,
    service_factory: ServiceFactory,
    demo_account: DemoAccount,
) -> None:
    otlp_port = free_port()  # nothing listens here until the collector starts below
    # A short export timeout so the SDK gives up on the unreachable collector quickly.
    service = service_factory(
        otlp_endpoint=f"http://127.0.0.1:{otlp_port}", OTEL_EXPORTER_OTLP_TIMEOUT="2"
    )

    # Each run answers 200 with its session (fire raises on anything else).
    runs_while_down = fire(service, demo_account)

    wait_until(
        lambda: EXPORT_WARNING.search(service.log()),
        30,
        message=lambda: f"the SDK's export warning in the service log\n{service.log()[-3000:]}",
    )
    assert "Exception in ASGI application" not in service.log()
    assert len({run.session_id for run in runs_while_down}) == 2
    assert service.process.running()

    collector = collector_factory(OTELCOL_OTLP_HTTP_PORT=str(otlp_port))
    runs_after = fire(service, demo_account)

    by_trace = wait_for_sink(sink, collector, [run.trace_id for run in runs_after], timeout=30)
    for run in runs_after:
        assert by_trace[run.trace_id], f"{run.label}: no span arrived"
        for span in by_trace[run.trace_id]:
            assert span["attributes"]["session.id"] == run.session_id


def assert_langfuse_contract(span: Mapping[str, Any]) -> None:
    """Hex ids and the request headers Langfuse requires, as the sink recorded them."""
    assert HEX_TRACE_ID.fullmatch(span["trace_id"]), span["trace_id"]
    assert HEX_SPAN_ID.fullmatch(span["span_id"]), span["span_id"]
    assert span["auth_ok"] is True, "Basic auth with the configured keys"
    assert span["content_type"] == "application/x-protobuf"
    assert span["content_encoding"] == "gzip"
    assert span["ingestion_version"] == "4"
