"""Zero-code setup: the `sessiontrace` distro that `opentelemetry-instrument` loads.

Its base class comes with opentelemetry-instrumentation (`sessiontrace[instrument]`), the
package that provides `opentelemetry-instrument` and is the only one that loads this
module; `import sessiontrace` never does.
"""

from __future__ import annotations

import os

# distro.py opens with `# type: ignore`, which hides its names from mypy.
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_CONFIGURATOR

__all__ = ["SessionTraceDistro"]


class SessionTraceDistro(BaseDistro):  # type: ignore[misc]
    """Selects the `sessiontrace` configurator unless `OTEL_PYTHON_CONFIGURATOR` names one.

    `opentelemetry-instrument` configures the distro, then runs the configurator that
    variable names (else the first one installed: with opentelemetry-distro beside this
    package, either), then loads the instrumentations.
    """

    def _configure(self, **kwargs: object) -> None:
        os.environ.setdefault(OTEL_PYTHON_CONFIGURATOR, "sessiontrace")
