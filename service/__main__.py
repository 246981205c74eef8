"""Entry point of `python -m service`."""

import logging
import os
import sys

from service.cli import main

code = main()
if "temporalio.bridge.temporal_sdk_bridge" in sys.modules:
    # Temporal's Rust runtime keeps threads that can abort CPython's finalization
    # ("PyGILState_Release: thread state ... must be current", temporalio/sdk-python#300):
    # once the command's output is flushed, end the process without it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
