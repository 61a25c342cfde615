"""A test hook, and nothing else: stop a worker at a named point of a trial's life so a test can SIGKILL it there.

``SWEEP_TEST_PAUSE_AT=<point>`` makes the worker, on reaching that point the first time, write its PID to
the file ``SWEEP_TEST_PAUSE_FILE`` and block until it is killed (``tests/workers/test_crashpoints.py``).
With ``SWEEP_TEST_RELEASE_FILE`` it blocks only until that file exists, handling signals meanwhile: a test
can signal a worker at a known point of its trial, then let it go on (``tests/workers/test_loop.py``).
Unset (always, outside the tests) it costs one dictionary lookup. Points: ``after_ask``, ``after_suggest``,
``mid_epoch``, ``before_tell``, ``after_tell``, ``mid_refit``.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["pause_at"]


def pause_at(point: str) -> None:
    if os.environ.get("SWEEP_TEST_PAUSE_AT") != point:
        return
    os.environ.pop("SWEEP_TEST_PAUSE_AT")  # once: the test kills this process at the first one
    marker = os.environ["SWEEP_TEST_PAUSE_FILE"]
    part = f"{marker}.{os.getpid()}.tmp"  # a file of its own: the tasks of one array share the marker
    with open(part, "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))
    os.replace(part, marker)  # the test sees the whole PID or nothing
    release = os.environ.get("SWEEP_TEST_RELEASE_FILE")
    if release is None:
        threading.Event().wait()  # until SIGKILL
        return
    while not os.path.exists(release):  # the main thread's signal handlers run between these short sleeps
        time.sleep(0.02)
