"""An S3 endpoint that stops answering or dies: bounded waits, a StoreError, then resume.

Each test runs its own moto server (it is paused or killed). What is bounded here is not
a speed but a hang: every failing call must come back, as a StoreError, long before the
outage ends (the endpoint stays paused until then).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import zarr

import ngff_writer as nw
from ngff_writer.testing import LocalS3

SAMPLES = np.random.default_rng(3).random((12, 64, 64), dtype=np.float32)
BOUND = 120  # seconds: far more than 2 s x 2 attempts + pauses; a hang would exceed it


def _open(s3: LocalS3, kind: str, path: str, bucket: str, mode: str = "a") -> nw.Output:
    options = {"timeout": 2.0, "retries": 1}
    if kind == "fsspec":
        return nw.open_output(f"s3://{bucket}/{path}", mode=mode, storage_options=s3.fsspec_options,
                              **options)
    return nw.open_output(s3.obstore(path, bucket), mode=mode, **options)


def _within(bound: float, call) -> BaseException | None:
    """Run ``call`` in a thread; fail the test if it has not returned after ``bound`` seconds."""
    outcome: list[BaseException | None] = []

    def body() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"still waiting after {bound} s: the writer hangs"
    return outcome[0]


def _write_all(out: nw.Output, start: int) -> None:
    img = out["s"]
    for i in range(start, len(SAMPLES)):
        img.write_sample(i, SAMPLES[i])
    img.flush()


@pytest.mark.parametrize("kind", ["fsspec", "obstore"])
def test_a_paused_endpoint_raises_store_error_then_the_export_resumes(kind):
    with LocalS3() as s3:
        bucket = s3.bucket()
        out = _open(s3, kind, "o.zarr", bucket, mode="w")
        out.create_image("s", SAMPLES.shape, "syx", chunks=(1, 32, 32))
        for i in range(4):
            out["s"].write_sample(i, SAMPLES[i])
        out["s"].flush()
        os.kill(s3.process.pid, signal.SIGSTOP)  # the endpoint stops answering
        try:
            error = _within(BOUND, lambda: _write_all(out, 4))
        finally:
            os.kill(s3.process.pid, signal.SIGCONT)
        assert isinstance(error, nw.StoreError) and isinstance(error, OSError)
        assert "failed" in str(error)
        # After the outage: the same process writes again what is pending, and completes.
        _write_all(out, 4)
        out.close()
        with _open(s3, kind, "o.zarr", bucket, mode="r") as ro:
            assert ro["s"].progress().complete
        stored = zarr.open_array(s3.obstore("o.zarr", bucket), path="s/0", mode="r")[:]
        np.testing.assert_array_equal(stored, SAMPLES)


@pytest.mark.parametrize("kind", ["fsspec", "obstore"])
def test_a_dead_endpoint_raises_store_error(kind):
    s3 = LocalS3()
    s3.start()
    try:
        bucket = s3.bucket()
        out = _open(s3, kind, "o.zarr", bucket, mode="w")
        out.create_image("s", SAMPLES.shape, "syx", chunks=(1, 32, 32))
        out["s"].write_sample(0, SAMPLES[0])
        out["s"].flush()
        s3.process.kill()  # the endpoint is gone
        s3.process.wait()
        started = time.monotonic()
        error = _within(BOUND, lambda: _write_all(out, 1))
        assert isinstance(error, nw.StoreError) and error.__cause__ is not None
        print(f"\n{kind}: StoreError after {time.monotonic() - started:.1f} s: {error}")
        out._abandon()  # its endpoint is gone: closing it at exit would only wait for timeouts
    finally:
        s3.stop()
