"""The deployment environment: one value, fit for Langfuse, that nothing else contradicts."""

from __future__ import annotations

import re

from opentelemetry.sdk.environment_variables import OTEL_RESOURCE_ATTRIBUTES
from opentelemetry.sdk.resources import OTELResourceDetector

__all__ = ["MAX_ENVIRONMENT_LENGTH", "resolve_environment", "validate_environment"]

# Langfuse's rule for an environment name, as its ingestion schema writes it
# (langfuse/langfuse packages/shared/src/server/ingestion/types.ts at 0391b9a2,
# PublicEnvironmentName: `z.string().max(40).regex(/^(?!langfuse)[a-z0-9-_]+$/)`; the
# `langfuse` prefix is kept for Langfuse's own internal environments). Its OTLP path does not
# refuse a value outside the rule but rewrites it (lowercased, cut to 40, `langfuse-` stripped,
# else `default`: shared/LANGFUSE_OTLP_CONTRACT.md), so traces would land under an environment
# nobody configured.
MAX_ENVIRONMENT_LENGTH = 40
_ENVIRONMENT = re.compile(rf"(?!langfuse)[a-z0-9_-]{{1,{MAX_ENVIRONMENT_LENGTH}}}")
_RULE = (
    f"use 1 to {MAX_ENVIRONMENT_LENGTH} characters of a-z, 0-9, '_' and '-', "
    "not starting with 'langfuse' (Langfuse's rule for environments)"
)

# The resource keys that name the environment: the current semantic convention, and the
# older one some deployments still set.
_RESOURCE_KEYS = ("deployment.environment.name", "deployment.environment")


def validate_environment(value: str, *, setting: str = "environment") -> str:
    """`value` when it is a valid Langfuse environment; ValueError naming `setting` otherwise."""
    if not _ENVIRONMENT.fullmatch(value):
        raise ValueError(f"{setting}={value!r} is not a valid Langfuse environment: {_RULE}")
    return value


def resolve_environment(configured: str | None, *, setting: str = "environment") -> str | None:
    """The environment the spans will carry, checked; ValueError naming both sources otherwise.

    `configured` (named `setting` in messages) must be a valid Langfuse environment. When
    `OTEL_RESOURCE_ATTRIBUTES` also names one (`deployment.environment.name` or the older
    `deployment.environment`), it must be the same value: the resource would otherwise say one
    environment while the application's tags and checks say another. Refused, not reconciled,
    since neither side can tell which one the operator meant.
    """
    if configured is not None:
        validate_environment(configured, setting=setting)
    # Parsed exactly as the SDK parses it for the resource (split, strip, URL-decode).
    detected = OTELResourceDetector().detect().attributes
    named = {key: str(detected[key]) for key in _RESOURCE_KEYS if key in detected}
    for key, value in named.items():
        source = f"{OTEL_RESOURCE_ATTRIBUTES} {key}"
        if configured is not None and value != configured:
            raise ValueError(
                f"{setting}={configured!r} contradicts {source}={value!r}: spans would say "
                f"{value!r} while {setting} says {configured!r}; set the same value in both, "
                f"or remove {key} from {OTEL_RESOURCE_ATTRIBUTES}"
            )
        validate_environment(value, setting=source)
    if len(set(named.values())) > 1:
        listed = ", ".join(f"{key}={value!r}" for key, value in named.items())
        raise ValueError(f"{OTEL_RESOURCE_ATTRIBUTES} names two environments: {listed}")
    return configured if configured is not None else next(iter(named.values()), None)
