"""Development stack: a local sink that enforces Langfuse's OTLP contract, reports, processes.

Nothing here is a Langfuse replacement; it exists so the collector path can be run and tested
on one machine without a Langfuse instance.
"""

__all__: list[str] = []
