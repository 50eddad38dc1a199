"""Where a test writes: local disk, or a real S3 endpoint through an ``s3://`` URL.

``fsspec``: the URL with options only s3fs understands, so it opens on s3fs; ``obstore``: the
URL with plain credentials and endpoint, which open on obstore's client (:mod:`ngff_writer._storage.s3`).
A store object built by the caller is tested in ``test_storage`` and ``test_faults``.

A *target* is a small picklable tuple, so spawned child processes can open the same
output as the test that made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

import ngff_writer as nw
from ngff_writer.testing import LocalS3

KINDS = ("local", "fsspec", "obstore")
S3_KINDS = ("fsspec", "obstore")


def make_target(kind: str, tmp_path: Path, s3: LocalS3 | None, name: str = "out.zarr") -> tuple:
    """A fresh, empty place to write an output."""
    if kind == "local":
        return ("local", str(tmp_path / name))
    assert s3 is not None
    bucket = s3.bucket()
    return (kind, s3.port, bucket, name)


def store_of(target: tuple, read_only: bool = False) -> Any:
    """What :func:`ngff_writer.open_output` takes for ``target`` (and its storage options)."""
    kind = target[0]
    if kind == "local":
        return target[1], None
    _, port, bucket, path = target
    s3 = LocalS3(port)
    url = f"s3://{bucket}/{path}"
    return url, (s3.fsspec_options if kind == "fsspec" else s3.storage_options)


def open_target(target: tuple, mode: str = "a", **kwargs: Any) -> nw.Output:
    root, options = store_of(target, read_only=mode == "r")
    return nw.open_output(root, mode=mode, storage_options=options, **kwargs)


def read_level(target: tuple, image: str, level: int) -> np.ndarray:
    """A level of an image, read back with plain zarr."""
    root, options = store_of(target, read_only=True)
    if isinstance(root, str) and root.startswith("s3://"):
        root = zarr.storage.FsspecStore.from_url(root, storage_options=options, read_only=True)
    return zarr.open_array(root, path=f"{image}/{level}", mode="r")[...]


def bookkeeping_keys(target: tuple, image: str) -> list[str]:
    """Every object under the image's bookkeeping group."""
    from ngff_writer._storage.stores import list_prefix, open_store

    root, options = store_of(target, read_only=True)
    store = open_store(root, "r", options)
    return list_prefix(store, f"{image}/ngff_writer/" if image else "ngff_writer/")
