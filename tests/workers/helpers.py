"""Helpers of the worker tests that run a worker in this process."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

from sweep.workers import loop
from sweep.workers.single import StopFlag


def work_within(seconds: float, **kwargs: Any) -> loop.WorkSummary:
    """``loop.work`` in a thread, stopped (and the test failed) if it has not returned within ``seconds``: a worker
    that waits "busy" for ever is the failure, not a hung test run."""
    stop, out = StopFlag(), {}
    thread = threading.Thread(target=lambda: out.update(s=loop.work(stop=stop, poll=0.2, **kwargs)), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        stop.set(signal.SIGTERM)
        thread.join(60)
        pytest.fail(f"the worker was still waiting after {seconds} s")
    assert "s" in out, "the worker raised"
    return out["s"]
