"""Exporting dask arrays: the threaded scheduler and a real distributed.LocalCluster (processes),
on local disk and on S3; blocks that do not match chunks; workers killed mid-run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from layouts import large_default
from targets import make_target, read_level, store_of

import ngff_writer as nw
from ngff_writer.dask import aligned_chunks, store_blocks, to_image

distributed = pytest.importorskip("distributed")

SHAPE = (6, 2, 8, 100, 90)  # s c z y x
AXES = "sczyx"


def raw(chunks=(2, 1, 3, 40, 50)) -> da.Array:
    # From one numpy array: the same values however it is cut into blocks.
    return da.from_array(np.random.default_rng(0).random(SHAPE, dtype=np.float32), chunks=chunks)


def model(block: np.ndarray) -> np.ndarray:
    return np.sqrt(block) + 1.0


def slow_model(block: np.ndarray) -> np.ndarray:
    time.sleep(0.25)  # long enough to kill a worker in the middle
    return model(block)


def predictions(fn=model, chunks=(2, 1, 3, 40, 50)) -> da.Array:
    return da.map_blocks(fn, raw(chunks), dtype=np.float32)


#: Blocks that still cut chunks (1, 1, 4, 32, 32) everywhere, but fewer of them (48).
FEWER = (2, 1, 4, 50, 45)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return predictions().compute(scheduler="sync")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, truth) -> list[bytes]:
    """Every level of the image written sample by sample, in one process."""
    root = tmp_path_factory.mktemp("ref") / "ref.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("img", SHAPE, AXES, chunks=(1, 1, 4, 32, 32))
        for s in range(SHAPE[0]):
            img.write_sample(s, truth[s])
    return [zarr.open_array(root / "img" / str(k))[:].tobytes() for k in range(img.n_levels)]


def levels(target: tuple) -> list[bytes]:
    with _open(target) as out:
        n = out["img"].n_levels
        assert out["img"].progress().complete
    return [read_level(target, "img", k).tobytes() for k in range(n)]


def _open(target: tuple, mode: str = "r") -> nw.Output:
    root, options = store_of(target, read_only=mode == "r")
    return nw.open_output(root, mode=mode, storage_options=options)


def _export(target: tuple, array: da.Array, chunks=(1, 1, 4, 32, 32), **kw):
    root, options = store_of(target)
    return to_image(array, root, "img", AXES, storage_options=options, chunks=chunks, **kw)


def test_aligned_chunks_divide_the_blocks():
    a = da.zeros((64, 2, 32, 512, 512), chunks=(8, 2, 32, 512, 512), dtype=np.float32)
    assert aligned_chunks(a, "sczyx") == (1, 2, 32, 128, 128)  # 1 along s, 4 MiB


def test_threaded_scheduler_unaligned_blocks(tmp_path, truth, reference):
    target = make_target("local", tmp_path, None)
    with dask.config.set(scheduler="threads"):
        progress = _export(target, predictions())
    assert progress.complete and progress.done == SHAPE[0]
    assert levels(target) == reference
    keys = list((tmp_path / "out.zarr" / "img" / "ngff_writer").rglob("*"))
    assert [k.name for k in keys] == ["zarr.json"]  # no fragment or log left


def test_default_chunks_follow_the_blocks(tmp_path, truth):
    root = tmp_path / "o.zarr"
    with dask.config.set(scheduler="threads"):
        progress = to_image(predictions(), root, "img", AXES)
    assert progress.complete
    assert zarr.open_array(root / "img" / "0").chunks == (1, 1, 3, 40, 50)
    np.testing.assert_array_equal(zarr.open_array(root / "img" / "0")[:], truth)


def test_a_rerun_computes_only_the_blocks_not_stored(tmp_path, truth, reference):
    target = make_target("local", tmp_path, None)
    root, options = store_of(target)
    with nw.open_output(root, mode="w") as out:
        img = out.create_image("img", SHAPE, AXES, chunks=(1, 1, 4, 32, 32))
        img.write_block(truth[:2], (0, 0, 0, 0, 0))  # the first row of blocks: stored already
    export = store_blocks(predictions(), root, "img", storage_options=options)
    stores = [k for k in dict(export.__dask_graph__()) if str(k).startswith("ngff-store")]
    assert len(stores) == predictions().npartitions - predictions().blocks[:1].npartitions
    with dask.config.set(scheduler="threads"):
        assert export.compute().complete
    assert levels(target) == reference


# ---- a real cluster --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=":0") as c:
        yield c


def _assert_sharded(target: tuple) -> None:
    """``to_image``'s default for large images where the blocks cut the chunks: a shard per
    sample, at every level (tasks do not gather samples: each would leave its part of a
    shared shard as a fragment)."""
    assert target[0] == "local"
    root = Path(target[1])
    assert zarr.open_array(root / "img" / "0").shards == (1, 2, 8, 128, 96)
    assert zarr.open_array(root / "img" / "1").shards == (1, 2, 8, 64, 64)


@pytest.mark.parametrize("kind", ["local", "fsspec", "obstore", "local-sharded"])
def test_local_cluster(tmp_path, request, kind, cluster, reference):
    kind, _, layout = kind.partition("-")
    target = make_target(kind, tmp_path, request.getfixturevalue("s3") if kind != "local" else None)
    # On S3, chunks that follow the blocks (no fragment); locally, blocks that cut chunks
    # (and, sharded, blocks that cut shards: workers meet in fragments at every level).
    chunks = None if kind != "local" else (1, 1, 4, 32, 32)
    with distributed.Client(cluster), large_default(layout == "sharded"):
        progress = _export(target, predictions(), chunks=chunks)
    assert progress.complete
    assert levels(target) == reference
    if layout == "sharded":
        _assert_sharded(target)


@pytest.mark.parametrize("kind", ["local", "fsspec", "local-sharded"])
def test_killed_worker_and_restarted_cluster_then_resubmit(tmp_path, request, kind, reference):
    kind, _, layout = kind.partition("-")
    target = make_target(kind, tmp_path, request.getfixturevalue("s3") if kind != "local" else None)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c, distributed.Client(c) as client:
        # 1. SIGKILL one worker process in the middle: dask runs its tasks again elsewhere.
        with large_default(layout == "sharded"):
            export = _export(target, predictions(slow_model, FEWER), compute=False)
        future = client.compute(export)
        _wait_for_blocks(target, 4)
        pids = client.run(os.getpid)
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        assert future.result(timeout=300).complete
        assert levels(target) == reference
        if layout == "sharded":
            _assert_sharded(target)

    target = make_target(kind, tmp_path / "again", request.getfixturevalue("s3") if kind != "local" else None)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c, distributed.Client(c) as client:
        # 2. Restart the whole cluster in the middle: the job fails; submitted again, it
        # computes only what is missing and completes with the same bytes.
        with large_default(layout == "sharded"):
            export = _export(target, predictions(slow_model, FEWER), compute=False)
        future = client.compute(export)
        _wait_for_blocks(target, 4)
        client.restart()
        with pytest.raises(Exception):  # noqa: B017 - cancelled or killed, as distributed reports it
            future.result(timeout=300)
        with _open(target) as out:
            done_before = out["img"].progress().blocks_done
        assert 0 < done_before
        assert _export(target, predictions(slow_model, FEWER), compute=False).compute().complete
        assert levels(target) == reference
        if layout == "sharded":
            _assert_sharded(target)


def _wait_for_blocks(target: tuple, blocks: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with _open(target) as out:
                if out["img"].progress().blocks_done >= blocks:
                    return
        except (nw.UnknownImageError, nw.StoreError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"fewer than {blocks} units stored after {timeout} s")


def test_store_blocks_checks_the_shape(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("img", (2, 8, 8), "syx")
    with pytest.raises(nw.ShapeMismatchError, match="shape"):
        store_blocks(da.zeros((3, 8, 8), dtype=np.float32), root, "img")


def test_another_array_is_another_job(tmp_path, truth):
    root = tmp_path / "o.zarr"
    small = dict(chunks=(1, 1, 4, 32, 32), pyramid=None)
    with dask.config.set(scheduler="threads"):
        assert to_image(predictions(), root, "img", AXES, **small).complete
        stored = zarr.open_array(root / "img" / "0")[:]
        # The same array again (built anew, as a re-run builds it): the same job, nothing to do.
        export = store_blocks(predictions(), root, "img")
        assert not [k for k in dict(export.__dask_graph__()) if str(k).startswith("ngff-store")]
        assert to_image(predictions(), root, "img", AXES, **small).complete
        # Another array (a retrained model, here * 5): refused before anything is computed.
        with pytest.raises(nw.OutputExistsError, match="dask:"):
            to_image(predictions() * 5, root, "img", AXES, **small)
        np.testing.assert_array_equal(zarr.open_array(root / "img" / "0")[:], stored)
        # ... unless asked: then it replaces the image.
        assert to_image(predictions() * 5, root, "img", AXES, overwrite=True, **small).complete
    np.testing.assert_allclose(zarr.open_array(root / "img" / "0")[:], truth * 5, rtol=1e-6)
    with nw.open_output(root, mode="r") as out:
        assert out["img"].fingerprint.startswith("dask:")
