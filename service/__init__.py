"""sessiontrace service: the FastAPI app, its graphs, store and CLI (`python -m service`)."""
