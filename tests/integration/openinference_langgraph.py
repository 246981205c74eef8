# mypy: disable-error-code="import-not-found"
# (`make typecheck` runs in the main venv, which has none of these packages.)
"""OpenInference + LangGraph beside SessionSpanProcessor, with the real PyPI packages (issue 11).

Run by scripts/check-coexistence.sh in its own venv (langgraph, langchain-core and
openinference-instrumentation-langchain are not the service's packages); not named test_* so the
main venv's pytest does not collect it. A fake chat model answers: no network.

OpenInference writes its own `session.id` (a LangGraph `thread_id`, or `using_session`) and
`user.id` on its spans after they start, over the processor's stamp. What Langfuse reads first,
`langfuse.session.id` and `langfuse.user.id`, must still be the bound ones on every span, the
trace name and tags ours, and each overwritten `session.id` counted in `session_conflicts`.
Prints a summary per run; exits non-zero naming the span and attribute on any failure.
"""

from __future__ import annotations

import asyncio
import collections
import operator
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Annotated, Any, TypedDict

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from openinference.instrumentation import using_session, using_user
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import sessiontrace
from sessiontrace.attributes import (
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_TAGS,
    LANGFUSE_USER_ID,
    SESSION_ID,
    USER_ID,
)

THREAD_ID = "thread-raw-key-123"
# The session the app derives from its conversation key: never the raw key itself.
SESSION = sessiontrace.derive_user_session_id("acme", THREAD_ID)
USER = "alice"
TRACE_NAME = "chat"
TAGS = ("web",)
# What Langfuse reads first, as the bound session stamps it: ours on every span, whatever else
# wrote session.id and user.id.
EXPECTED = {
    LANGFUSE_SESSION_ID: SESSION,
    LANGFUSE_USER_ID: USER,
    LANGFUSE_TRACE_NAME: TRACE_NAME,
    LANGFUSE_TRACE_TAGS: TAGS,
}
OI_SESSION = "oi-session"
OI_USER = "oi-user"


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


class FanOutState(TypedDict):
    question: str
    answers: Annotated[list[str], operator.add]


def _model() -> FakeListChatModel:
    return FakeListChatModel(responses=["fake answer one", "fake answer two"])


def chat_graph(*, checkpointer: bool = True) -> Any:
    """agent (the fake chat model) then a plain post-processing node."""
    model = _model()

    def agent(state: ChatState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def finish(state: ChatState) -> dict[str, Any]:
        return {}

    builder = StateGraph(ChatState)
    builder.add_node("agent", agent)
    builder.add_node("finish", finish)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=InMemorySaver() if checkpointer else None)


def fan_out_graph() -> Any:
    """Two branches in the same superstep (LangGraph runs them on its thread pool), then a join."""
    model = _model()

    def ask(label: str, state: FanOutState) -> dict[str, Any]:
        reply = model.invoke([HumanMessage(f"{label}: {state['question']}")])
        return {"answers": [f"{label}={reply.content}"]}

    def branch_a(state: FanOutState) -> dict[str, Any]:
        return ask("a", state)

    def branch_b(state: FanOutState) -> dict[str, Any]:
        return ask("b", state)

    def join(state: FanOutState) -> dict[str, Any]:
        return {}

    builder = StateGraph(FanOutState)
    builder.add_node("branch_a", branch_a)
    builder.add_node("branch_b", branch_b)
    builder.add_node("join", join)
    builder.add_edge(START, "branch_a")
    builder.add_edge(START, "branch_b")
    builder.add_edge(["branch_a", "branch_b"], "join")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=InMemorySaver())


@contextmanager
def openinference_identity() -> Iterator[None]:
    with using_session(OI_SESSION), using_user(OI_USER):
        yield


CONFIG = {"configurable": {"thread_id": THREAD_ID}}
CHAT_INPUT = {"messages": [HumanMessage("hello")]}


def run_chat() -> Any:
    return chat_graph().invoke(CHAT_INPUT, config=CONFIG)


def run_chat_without_thread() -> Any:
    # No checkpointer, no thread_id: what OpenInference writes comes from using_session alone.
    return chat_graph(checkpointer=False).invoke(CHAT_INPUT)


def run_fan_out() -> Any:
    result = fan_out_graph().invoke({"question": "q", "answers": []}, config=CONFIG)
    if len(result["answers"]) != 2:
        raise AssertionError(f"fan-out graph ran {result['answers']!r}, expected two branches")
    return result


def run_chat_async() -> Any:
    return asyncio.run(chat_graph().ainvoke(CHAT_INPUT, config=CONFIG))


class Failures:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.messages.append(message)


def _describe(span: ReadableSpan) -> str:
    attributes = dict(span.attributes or {})
    keys = (SESSION_ID, USER_ID, LANGFUSE_SESSION_ID, LANGFUSE_USER_ID, LANGFUSE_TRACE_NAME,
            LANGFUSE_TRACE_TAGS)
    shown = {key: attributes.get(key) for key in keys}
    return f"span {span.name!r} (kind {attributes.get('openinference.span.kind')}) {shown}"


def check_run(
    label: str,
    run: Callable[[], Any],
    identity: Callable[[], AbstractContextManager[Any]],
    processor: sessiontrace.SessionSpanProcessor,
    exporter: InMemorySpanExporter,
    failures: Failures,
) -> dict[str, Any]:
    """Run one graph inside bind_session and check every span it exported."""
    exporter.clear()
    conflicts_before = processor.session_conflicts
    missing_before = processor.spans_without_session
    with sessiontrace.bind_session(session_id=SESSION, user_id=USER, trace_name=TRACE_NAME,
                                   tags=TAGS):
        with identity():
            run()
    spans: Sequence[ReadableSpan] = exporter.get_finished_spans()
    conflicts = processor.session_conflicts - conflicts_before
    missing = processor.spans_without_session - missing_before

    failures.check(len(spans) > 0, f"{label}: no span was exported")
    overwritten_sessions: collections.Counter[str] = collections.Counter()
    overwritten_users: collections.Counter[str] = collections.Counter()
    for span in spans:
        attributes = dict(span.attributes or {})
        wrong = [key for key, value in EXPECTED.items() if attributes.get(key) != value]
        failures.check(not wrong, f"{label}: {_describe(span)}: {', '.join(wrong)} not the "
                                  f"bound {[EXPECTED[key] for key in wrong]}")
        session = attributes.get(SESSION_ID)
        if session != SESSION:
            overwritten_sessions[repr(session)] += 1
        user = attributes.get(USER_ID)
        if user != USER:
            overwritten_users[repr(user)] += 1
    trace_ids = {span.context.trace_id for span in spans if span.context is not None}
    failures.check(len(trace_ids) == 1,
                   f"{label}: the run's spans are in {len(trace_ids)} traces, expected one")
    differing = sum(overwritten_sessions.values())
    failures.check(conflicts == differing,
                   f"{label}: session_conflicts counted {conflicts}, but {differing} spans "
                   f"ended with a session.id other than {SESSION!r}: {dict(overwritten_sessions)}")
    failures.check(missing == 0, f"{label}: {missing} spans ended without a session")
    return {
        "run": label,
        "spans": len(spans),
        "names": collections.Counter(span.name for span in spans),
        "session_overwritten": dict(overwritten_sessions),
        "user_overwritten": dict(overwritten_users),
        "conflicts": conflicts,
    }


def main() -> int:
    exporter = InMemorySpanExporter()
    processor = sessiontrace.SessionSpanProcessor(strict=True)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    failures = Failures()
    runs: list[tuple[str, Callable[[], Any], Callable[[], AbstractContextManager[Any]]]] = [
        ("1 thread_id", run_chat, nullcontext),
        ("2 thread_id + using_session/using_user", run_chat, openinference_identity),
        ("2b using_session/using_user, no thread_id", run_chat_without_thread,
         openinference_identity),
        ("3 fan-out, two branches", run_fan_out, nullcontext),
        ("4 ainvoke", run_chat_async, nullcontext),
    ]
    results = []
    try:
        for label, run, identity in runs:
            results.append(check_run(label, run, identity, processor, exporter, failures))
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    overwritten = sum(sum(result["session_overwritten"].values()) for result in results)
    failures.check(overwritten > 0,
                   "no span's session.id was overwritten: OpenInference no longer writes its "
                   "own session.id, so session_conflicts was not exercised (update the README)")
    print(f"bound: session.id={SESSION!r} user.id={USER!r} trace name={TRACE_NAME!r} "
          f"tags={list(TAGS)}")
    for result in results:
        print(f"run {result['run']}: {result['spans']} spans, "
              f"session.id overwritten on {sum(result['session_overwritten'].values())} "
              f"{result['session_overwritten']}, user.id overwritten on "
              f"{sum(result['user_overwritten'].values())} {result['user_overwritten']}, "
              f"session_conflicts counted {result['conflicts']}")
        print(f"    spans: {dict(result['names'])}")
    if failures.messages:
        print(f"FAILED: {len(failures.messages)} checks", file=sys.stderr)
        for message in failures.messages:
            print(f"  {message}", file=sys.stderr)
        return 1
    print("openinference_langgraph: langfuse.session.id, langfuse.user.id, trace name and tags "
          "are the bound ones on every span; every overwritten session.id was counted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
