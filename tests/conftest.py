"""Shared fixtures: real stores on disk (pytest's tmp_path), small reference data."""

from __future__ import annotations

import numpy as np
import pytest


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
