"""Scale: the bookkeeping costs the same at the last write as at the first.

20,000 small samples, and an image of 20,480 chunks written as unaligned tiles. The
strict proof counts what each fifth of the writes asks of the store (deterministic):
the last fifth may not ask more than the first. Per-write times are compared too, as a
ratio of the two fifths, with a bound that only quadratic growth would cross (the
machines are noisy; ``benchmarks/bench_scale.py`` measures times properly).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import ClassVar

import numpy as np
import pytest
from tiling import tile_specs
from zarr.storage import LocalStore, WrapperStore

import ngff_writer as nw
from ngff_writer._track.log import FANOUT


class OpCounter(WrapperStore):
    """Counts the store calls that touch ngff-writer's bookkeeping, by kind."""

    ops: ClassVar[Counter[str]] = Counter()

    def _count(self, kind: str, key: str) -> None:
        if "ngff_writer" in key:
            # A writer checks its image's declaration before each commit and heartbeat:
            # once per object it writes (counted apart: not a read per write).
            if kind == "get" and key.endswith(("ngff_writer/zarr.json", "ngff_writer/.zattrs")):
                kind = "check"
            type(self).ops[kind] += 1

    async def get(self, key, prototype, byte_range=None):
        self._count("get", key)
        return await self._store.get(key, prototype, byte_range)

    async def set(self, key, value):
        self._count("set", key)
        return await self._store.set(key, value)

    def list_prefix(self, prefix):
        self._count("list", prefix)
        return self._store.list_prefix(prefix)

    def list_dir(self, prefix):
        self._count("list", prefix)
        return self._store.list_dir(prefix)

    async def delete(self, key):
        self._count("delete", key)
        return await self._store.delete(key)


def _fifths(n: int) -> tuple[range, range]:
    # The last write, which completes and finalizes the image (once), is in neither.
    return range(0, n // 5), range(n - 1 - n // 5, n - 1)


def _compare(ops: dict[str, Counter[str]]) -> None:
    # Nothing is listed or read per write; what is written (commits, by time and by count,
    # and merges of a writer's segments: one write and FANOUT deletes) does not grow.
    for kind in ("get", "list"):
        assert ops["last"][kind] <= ops["first"][kind], kind
    assert ops["last"]["check"] <= ops["last"]["set"] + 1  # + a commit caught mid-way by the count
    one_merge = 1 + FANOUT
    writes = Counter({k: n for k, n in ops["last"].items() if k != "check"})
    assert writes.total() <= ops["first"].total() + one_merge + 2


def _log_objects(root) -> int:
    log = root / "i" / "ngff_writer" / "log"
    return sum(1 for p in log.iterdir()) if log.exists() else 0


def test_twenty_thousand_samples(tmp_path):
    n = 20_000
    root = tmp_path / "o.zarr"
    data = np.random.default_rng(0).random((16, 64, 64), dtype=np.float32)
    first, last = _fifths(n)
    seconds: dict[str, float] = {}
    ops: dict[str, Counter[str]] = {}
    most_logs = 0
    with nw.open_output(OpCounter(LocalStore(root))) as out:
        img = out.create_image("i", (n, 64, 64), "syx", pyramid=None)
        for i in range(n):
            # Writes return before their stores: a fifth is timed and counted from a wait
            # for the stores before it (a read of the handle) to a wait for its own.
            if i in (first.start, last.start):
                assert img.buffered_units >= 0
                OpCounter.ops = Counter()
                start = time.perf_counter()
            img.write_sample(i, data[i % 16])
            if i + 1 in (first.stop, last.stop):
                assert img.buffered_units >= 0
                fifth = "first" if i < last.start else "last"
                seconds[fifth] = time.perf_counter() - start
                ops[fifth] = Counter(OpCounter.ops)  # a copy
            if i % 1000 == 999 and i + 1 < n:
                most_logs = max(most_logs, _log_objects(root))
        assert img.progress().complete  # the last write finalized it
    # The log is batched (< 1,000 objects) and folded away when the image is final.
    assert 0 < most_logs < 1000
    assert _log_objects(root) == 0
    assert sorted(p.name for p in (root / "i" / "ngff_writer").iterdir()) == ["zarr.json"]
    print(f"\nbookkeeping store calls, first fifth {dict(ops['first'])}, last fifth {dict(ops['last'])}")
    _compare(ops)
    early, late = seconds["first"] / len(first), seconds["last"] / len(last)
    ratio = late / early
    print(f"ms per write: first fifth {early * 1e3:.3f}, last {late * 1e3:.3f} (ratio {ratio:.2f})")
    assert ratio < 3.0


@pytest.mark.parametrize("order", ["row-major", "shuffled"])
def test_an_image_of_twenty_thousand_chunks_as_tiles(tmp_path, order):
    shape, chunk = (2048, 2560), 16  # 128 x 160 = 20,480 chunks
    root = tmp_path / "o.zarr"
    specs = list(tile_specs(shape, (200, 200), (48, 48)))
    if order == "shuffled":
        np.random.default_rng(1).shuffle(specs)
    tile = np.random.default_rng(2).random((200, 200), dtype=np.float32)
    first, last = _fifths(len(specs))
    ops: dict[str, Counter[str]] = {}
    most_logs = 0
    with nw.open_output(OpCounter(LocalStore(root))) as out:
        img = out.create_image("i", shape, "yx", chunks=(chunk, chunk), pyramid=None)
        for k, t in enumerate(specs):
            # Writes return before their stores: a read of the handle (buffered_units) waits
            # for them, so the log is looked at, and store calls counted, per tile written.
            if k % 20 == 19:
                assert img.buffered_units >= 0
                most_logs = max(most_logs, _log_objects(root))
            if k == len(specs) // 2:
                # Records are committed every commit_interval (1 s) or 4,096 at a time, and
                # the whole loop may take less than that: between the fifths, wait for the
                # committer (up to 30 s), so the log is seen written while the image fills.
                deadline = time.monotonic() + 30
                while not _log_objects(root) and time.monotonic() < deadline:
                    time.sleep(0.05)
                most_logs = max(most_logs, _log_objects(root))
            if k in (first.start, last.start):
                assert img.buffered_units >= 0
                OpCounter.ops = Counter()
            img.write_tile(0, tile, crop_start=t.crop_coords, crop_size=t.crop_size,
                           stitch_start=t.stitch_coords)
            if k + 1 in (first.stop, last.stop):
                assert img.buffered_units >= 0
                ops["first" if k < last.start else "last"] = Counter(OpCounter.ops)  # a copy
    assert 0 < most_logs < 1000
    with nw.open_output(root, mode="r") as out:
        progress = out["i"].progress()
    assert progress.complete and progress.blocks_total == 20_480
    print(f"\nbookkeeping store calls, first fifth {dict(ops['first'])}, last fifth {dict(ops['last'])}")
    _compare(ops)
