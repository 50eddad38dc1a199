"""``s3://`` URLs open on obstore's client when their options allow it, on s3fs otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore, ObjectStore

import ngff_writer as nw
from ngff_writer._output.validate import validate_image
from ngff_writer._storage.stores import base_store, open_store

SAMPLES = np.random.default_rng(11).random((6, 32, 32), dtype=np.float32)


def _client(url: str, options: dict | None) -> type:
    return type(base_store(open_store(url, "r", options)))


def test_credentials_and_endpoint_open_on_obstore(s3):
    url = s3.url("x.zarr")
    assert _client(url, s3.storage_options) is ObjectStore
    flat = {"key": "testing", "secret": "testing", "endpoint_url": s3.endpoint}  # s3fs takes it here too
    assert _client(url, flat) is ObjectStore


@pytest.mark.parametrize("options", [
    pytest.param({"config_kwargs": {"max_pool_connections": 10}}, id="an s3fs-only option"),
    pytest.param({"s3_additional_kwargs": {"ServerSideEncryption": "AES256"}}, id="request arguments"),
    pytest.param(None, id="credentials from the environment or a profile"),
])
def test_other_options_keep_the_url_on_s3fs(s3, options):
    base = {"client_kwargs": {"endpoint_url": s3.endpoint}}
    if options is not None:
        base = {**s3.storage_options, **options}
    assert _client(s3.url("x.zarr"), base) is FsspecStore


def test_a_public_bucket_opens_unsigned_on_obstore(s3):
    assert _client(s3.url("x.zarr"), {"anon": True, "client_kwargs": {"endpoint_url": s3.endpoint}}) \
        is ObjectStore


def test_an_export_moves_between_the_two_clients(s3):
    url = s3.url("both.zarr")
    with nw.open_output(url, mode="w", storage_options=s3.storage_options) as out:  # obstore
        assert type(base_store(out.store)) is ObjectStore
        img = out.create_image("p", SAMPLES.shape, "syx", chunks=(1, 16, 16))
        for s in range(3):
            img.write_sample(s, SAMPLES[s])
    with nw.open_output(url, mode="a", storage_options=s3.fsspec_options) as out:  # s3fs resumes
        assert type(base_store(out.store)) is FsspecStore
        img = out["p"]
        assert img.progress().done == 3
        for s in range(3, len(SAMPLES)):
            img.write_sample(s, SAMPLES[s])
        assert img.complete
    for options in (s3.storage_options, s3.fsspec_options):
        with nw.open_output(url, mode="r", storage_options=options) as out:
            assert validate_image(out.store, "p", out["p"]).ok
        level0 = zarr.open_array(FsspecStore.from_url(f"{url}/p/0", storage_options=options, read_only=True))
        np.testing.assert_array_equal(level0[:], SAMPLES)
