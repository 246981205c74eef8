"""Governance schedules in Temporal: `schedules sync|list|run` and the firing worker."""

from service.temporal._activity import FIRING_SPAN, FiringActivity
from service.temporal._client import TemporalError, connect
from service.temporal._commands import list_command, run_command, sync_command, temporal_target
from service.temporal._firing import FIRE_ACTIVITY, FIRING_WORKFLOW, MANAGED_BY, Firing
from service.temporal._firings import (
    FiringFailed,
    StartedFiring,
    failure_message,
    firing_outcome,
    last_firing,
    trigger_firing,
)
from service.temporal._schedules import (
    SyncResult,
    describe_schedule,
    managed_schedule_ids,
    sync_schedules,
    temporal_schedule,
)
from service.temporal._views import schedule_views
from service.temporal._worker import run_worker, worker_tracer_provider
from service.temporal._workflow import HEARTBEAT_TIMEOUT, SCHEDULED_START_TIME, GovernanceFiring

__all__ = [
    "FIRE_ACTIVITY",
    "FIRING_SPAN",
    "FIRING_WORKFLOW",
    "HEARTBEAT_TIMEOUT",
    "MANAGED_BY",
    "SCHEDULED_START_TIME",
    "Firing",
    "FiringActivity",
    "FiringFailed",
    "GovernanceFiring",
    "StartedFiring",
    "SyncResult",
    "TemporalError",
    "connect",
    "describe_schedule",
    "failure_message",
    "firing_outcome",
    "last_firing",
    "list_command",
    "managed_schedule_ids",
    "run_command",
    "run_worker",
    "schedule_views",
    "sync_command",
    "sync_schedules",
    "temporal_schedule",
    "temporal_target",
    "trigger_firing",
    "worker_tracer_provider",
]
