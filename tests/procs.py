"""Running test bodies in real, spawned processes."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import pytest

TIMEOUT = 120


def run_children(*jobs: tuple[Any, tuple[Any, ...]]) -> list[int]:
    """Start one spawned process per ``(target, args)``, wait for all, return exit codes."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for target, args in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT)
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
            pytest.fail(f"child {p.pid} did not finish within {TIMEOUT}s")
        codes.append(p.exitcode)
    return codes
