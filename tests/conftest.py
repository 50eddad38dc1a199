"""Shared fixtures: real stores on disk (pytest's tmp_path), small reference data.

Every test closes the outputs it opens: :func:`_outputs_closed` fails a test that
leaves one open (a test that simulates a crash uses :func:`ngff_writer.testing.abandon`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

import ngff_writer._output.closing as closing

# Outputs the garbage collector closed (their closers), recorded so a test that opens an
# output and drops it unclosed is caught even when it is collected before the test ends.
# Each output's finalizer calls the _dropped it found when the output was opened.
_DROPPED: list[closing.Closer] = []
_gc_close = closing._dropped


def _record_drop(closer: closing.Closer) -> None:
    _DROPPED.append(closer)
    _gc_close(closer)


closing._dropped = _record_drop

_CALL_FAILED = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "drops_outputs: the test drops outputs unclosed on purpose, for the garbage "
        "collector to close (it must collect them before it ends)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


def _where(closer: closing.Closer, root: str) -> str:
    filename, line = closer.opened_at
    try:
        filename = os.path.relpath(filename, root)
    except ValueError:  # another drive
        pass
    return f"{closer.where} opened at {filename}:{line}"


@pytest.fixture(autouse=True)
def _outputs_closed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves open an output it opened; close them for it.

    Autouse, so set up before (and torn down after) the test's other function-scoped
    fixtures, and after module- and session-scoped ones: outputs those hold are open
    before the test starts and are theirs, not the test's.
    """
    before = {key: finalizer.peek()[2][0] for key, finalizer in list(closing._LEFT_OPEN.items())
              if finalizer.peek() is not None}
    first_drop = len(_DROPPED)
    yield

    def new(closer: closing.Closer) -> bool:
        return before.get(id(closer)) is not closer

    root = str(request.config.rootpath)
    left, errors = [], []
    for key, finalizer in list(closing._LEFT_OPEN.items()):
        alive = finalizer.peek()
        if alive is None or not new(alive[2][0]):
            continue
        out, closer = alive[0], alive[2][0]
        left.append(_where(closer, root))
        try:
            out.close()
        except Exception as exc:  # told below; the test fails either way
            errors.append(f"closing {closer.where}: {type(exc).__name__}: {exc}")
        finally:
            finalizer.detach()
            closing._LEFT_OPEN.pop(key, None)
    dropped = [_where(c, root) for c in _DROPPED[first_drop:] if new(c)]
    del _DROPPED[first_drop:]
    for thread in list(closing._closing):  # what the garbage collector closes ends here
        thread.join(timeout=60)
    if request.node.stash.get(_CALL_FAILED, False):
        return  # failed already: an exception may well have skipped the close
    if request.node.get_closest_marker("drops_outputs"):
        dropped = []
    problems = [f"left open (closed now): {w}" for w in left]
    problems += [f"dropped without close() (the garbage collector closed it): {w}" for w in dropped]
    if problems or errors:
        pytest.fail("the test did not close every output it opened; use `with open_output(...) as out:`, "
                    "out.close(), or ngff_writer.testing.abandon(out) for a simulated crash:\n  "
                    + "\n  ".join(problems + errors), pytrace=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(params=["0.4", "0.5"])
def ngff_version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def s3():
    """A real S3 endpoint (moto's server) on 127.0.0.1 for the whole session."""
    from ngff_writer.testing import LocalS3

    with LocalS3() as server:
        yield server
