"""A prediction loop: does writing overlap the model, and how does the loop compare to tensorstore?

Issue #24's "GPU-shaped" loop. A model produces S samples one after another (32 of
1x32x512x512 float32 by default, CAREamics-shaped) and a writer stores each one, with the
default pyramid, as it arrives. A writer that works in the background while the model
computes the next sample makes the loop as long as the slower of the two; a writer that
holds the caller makes it their sum. Scenarios (``--scenarios``):

``gpu``        the model is ``time.sleep(T)`` per sample: a GPU computing while the CPU is
               free. T = (max(writer-alone medians) - the hand-over's time) / S, so the
               model's total equals the slower writer's time alone (where overlap matters most)
``cpu``        the model is numpy work on one core for about T per sample (small FFTs in a
               Python loop: it holds the GIL part of the time), calibrated once
``tiles``      as ``gpu``, but each sample arrives as CAREamics tiles (32x200x200, overlap
               48 in y and x: 16 per 512x512 sample, crop mode); T from the tiles' writer-alone
               times
``careamics``  the real route: a tiny CAREamics N2V model (trained for 2 steps, not timed)
               predicts an array, tiled, and CAREamics' writer callback hands the
               predictions to the writer

After each model step the model hands over a fresh output array (one pass over the
sample, as a device-to-host copy would): the pool of 4 generated samples plus an offset
per sample, so every sample differs and nothing is overwritten while a writer holds it.

Engines, each in its own fresh subprocess, every run writing to a fresh directory:

``ngff-writer``  ``ngff_writer.careamics.OmeZarrWriteStrategy()`` with its defaults (chunks,
                 codec, ``pyramid="auto"``): ``write_batch`` with each model step's
                 records, ``finalize()`` at the end; for ``careamics``,
                 ``predict_to_ome_zarr``. At 1 GiB or more (the default S and shape), the
                 default layout shards: one shard per sample
``ngff-chunks``  the same with ``shards=None`` (one file per chunk), so that the sharded
                 default is compared with the unsharded layout in the same run (gpu, cpu and
                 tiles scenarios)
``ngff-volatile``  the same in ``Context(durable=False)``: no sync to disk before each
                 commit, the cost of the default's durability in the same run (not run
                 unless named in ``--engines``)
``tensorstore``  zarr3 arrays with the metadata ngff-writer's arrays get (copied from its
                 ``zarr.json`` files: shape, chunks, codecs, fill value) at every level;
                 per sample, level 0 is written from the array and each level below from a
                 ``ts.downsample(..., "mean")`` view of the level above, all asynchronously,
                 at most ``--in-flight`` (2) samples of write futures pending (the oldest are
                 awaited before a third starts). Tiles go into one transaction per sample
                 (level 0, then the levels read back from it inside the transaction),
                 committed asynchronously under the same limit. For ``careamics``: a write
                 strategy of the same kind (tiles are stitched into the sample, which is
                 written once complete) driven by CAREamics' own callback

Measured, in this order, medians over ``--repeats`` interleaved repeats:

1. writer alone: the loop with no model work (only the hand-over), per engine. For
   ``careamics``: the predictions CAREamics produced (captured once) fed to the writer
   as the callback would;
2. model alone: the loop with no writer;
3. the loop: model and writer together, wall time from the first step to the writer's
   final close.

Overlap efficiency = max(model alone, writer alone) / loop: 1.0 is perfect overlap, ~0.5
for a writer that blocks the model while it stores when the two take equal time.
Per pair = loop(tensorstore) / loop(ngff-writer) within each repeat (>1: ngff-writer's loop
is shorter). Targets: efficiency >= 0.9 and ngff-writer's loop >= 1.2x tensorstore's
(per-pair median >= 1.2). After each run the worker checks its output: the last
sample's level 0 bit-identical to what the model produced, the levels below within float32
rounding of a 2x2 mean, the first sample present too, ngff-writer's image complete.

Usage::

    python benchmarks/bench_overlap.py --quick                  # smoke run: S=4, small samples, 1 repeat
    python benchmarks/bench_overlap.py --scenarios gpu,cpu,tiles  # 32 x 1x32x512x512, 3 repeats
    python benchmarks/bench_overlap.py --scenarios careamics --json ca.json
    python benchmarks/bench_overlap.py --scenarios gpu --keep-freed  # glibc keeps freed memory
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    MB,
    current_rss,
    interleaved,
    library_fingerprint,
    library_lines,
    peak_rss,
    reset_peak_rss,
    settle,
    warm_page_cache,
)

SCENARIOS = ("gpu", "cpu", "tiles", "careamics")
ENGINES = ("ngff-writer", "ngff-chunks", "tensorstore")
ALL_ENGINES = (*ENGINES, "ngff-volatile")
#: Engines of the careamics scenario (the layout comparison is the synthetic scenarios').
CAREAMICS_ENGINES = ("ngff-writer", "tensorstore")
#: The shards issue's bar: the sharded default's loop within 10% of the unsharded one's.
TARGET_SHARDED = 0.9
MODEL = "model"  # the pseudo-engine of the model-alone runs
POOL = 4  # distinct generated samples the model's outputs are made from
TARGET_EFFICIENCY = 0.9
TARGET_RATIO = 1.2
IMAGE = "array_0"  # both writers' output name (CAREamics' name for an in-memory source)
#: CAREamics' tiny N2V model: base filters of its UNet (32 by CAREamics' default).
CAREAMICS_FILTERS = 8


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


# ---- tile geometry (CAREamics' rule, shared/reference/careamics.md) ------------------------------
@dataclass(frozen=True)
class Tile:
    """One tile of a ``(z, y, x)`` sample: where it is cut, and its valid part."""

    start: tuple[int, ...]  # (z, y, x) in the sample
    size: tuple[int, ...]
    crop_start: tuple[int, ...]  # relative to the tile
    crop_size: tuple[int, ...]
    stitch_start: tuple[int, ...]  # in the sample

    @property
    def region(self) -> tuple[slice, ...]:
        """The tile in the sample, ``(c, z, y, x)``."""
        return (slice(None), *(slice(a, a + n) for a, n in zip(self.start, self.size, strict=True)))

    @property
    def crop(self) -> tuple[slice, ...]:
        """The valid part in the tile, ``(c, z, y, x)``."""
        return (slice(None), *(slice(a, a + n) for a, n in zip(self.crop_start, self.crop_size,
                                                                 strict=True)))

    @property
    def stitch(self) -> tuple[slice, ...]:
        """Where the valid part lands in the sample, ``(c, z, y, x)``."""
        return (slice(None), *(slice(a, a + n) for a, n in zip(self.stitch_start, self.crop_size,
                                                                 strict=True)))


def _axis_tiles(n: int, patch: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """``(start, size, valid_start, valid_end)`` of each tile along one axis.

    Tiles start every ``patch - overlap`` while they end before the axis does, and one
    more ends at the axis' end. Each keeps its middle: the first from 0, the last up to
    the end, every other from ``overlap // 2`` into it to ``overlap // 2`` before its
    end; the last one's valid part starts where the previous one's stopped.
    """
    if n <= patch:
        return [(0, n, 0, n)]
    step = patch - overlap
    starts = [*range(0, n - patch, step), n - patch]
    out, valid_start = [], 0
    for k, start in enumerate(starts):
        valid_end = n if k == len(starts) - 1 else start + patch - overlap // 2
        out.append((start, patch, valid_start, valid_end))
        valid_start = valid_end
    return out


def sample_tiles(space: Sequence[int], patch: Sequence[int], overlap: Sequence[int]) -> list[Tile]:
    """Every tile of a sample of ``space`` (z, y, x), row-major; checks they cover it once."""
    import itertools

    import numpy as np

    per_axis = [_axis_tiles(n, p, o) for n, p, o in zip(space, patch, overlap, strict=True)]
    tiles = [Tile(tuple(a[0] for a in combo), tuple(a[1] for a in combo),
                  tuple(a[2] - a[0] for a in combo), tuple(a[3] - a[2] for a in combo),
                  tuple(a[2] for a in combo))
             for combo in itertools.product(*per_axis)]
    count = np.zeros(tuple(space), np.uint8)
    for t in tiles:
        count[t.stitch[1:]] += 1
    if not (count == 1).all():
        raise AssertionError("the tiles' valid parts do not cover the sample exactly once")
    return tiles


# ---- the model -------------------------------------------------------------------------------
_FFT_SIDE = 128


def cpu_work(iterations: int) -> None:
    """Numpy work on one core: small FFTs in a Python loop (the GIL is held between calls)."""
    import numpy as np

    a = np.linspace(0.0, 1.0, _FFT_SIDE * _FFT_SIDE).reshape(_FFT_SIDE, _FFT_SIDE)
    for _ in range(iterations):
        a = np.fft.irfft2(np.fft.rfft2(a), s=a.shape)


def calibrate_cpu_work(seconds: float = 1.0) -> float:
    """Iterations of :func:`cpu_work` per second, on an otherwise idle process (best of 3)."""
    cpu_work(20)
    rates = []
    for _ in range(3):
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            cpu_work(50)
            k += 50
        rates.append(k / (time.perf_counter() - t0))
    return max(rates)


class Model:
    """Produces sample ``i``: the model's work (``"sleep"``, ``"cpu"`` or none), then a fresh
    output array (whole, or cut into ``tiles``) made from a pool of generated samples."""

    def __init__(self, shape: tuple[int, ...], noise: float, work: str | None, seconds: float,
                 iterations: int, tiles: list[Tile] | None) -> None:
        import numpy as np
        from _samples import SampleSource

        source = SampleSource(shape, noise=noise, seed=0)
        self.pool = [source.sample(k).copy() for k in range(POOL)]
        self.work, self.seconds, self.iterations, self.tiles = work, seconds, iterations, tiles
        self.np = np

    def offset(self, i: int) -> Any:
        return self.np.float32(i * 1e-3)

    def expected(self, i: int) -> Any:
        """Sample ``i`` as the model hands it over (whole)."""
        return self.pool[i % POOL] + self.offset(i)

    def __call__(self, i: int) -> list[tuple[Any, Tile | None]]:
        if self.work == "sleep":
            time.sleep(self.seconds)
        elif self.work == "cpu":
            cpu_work(self.iterations)
        base, off = self.pool[i % POOL], self.offset(i)
        if self.tiles is None:
            return [(base + off, None)]  # a fresh array: the hand-over
        return [(base[t.region] + off, t) for t in self.tiles]


# ---- the output's layout, from ngff-writer ---------------------------------------------------
def read_layout(image: Path) -> dict[str, Any]:
    """Levels of an OME-Zarr image as written: each array's metadata, and the factors that
    make each level from the one above (over the axes after the first, the sample axis)."""
    group = json.loads((image / "zarr.json").read_text())
    ome = group["attributes"].get("ome", group["attributes"])
    datasets = ome["multiscales"][0]["datasets"]
    keep = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs",
            "dimension_names")
    levels, scales = [], []
    for d in datasets:
        meta = json.loads((image / d["path"] / "zarr.json").read_text())
        levels.append({"path": d["path"], "metadata": {k: meta[k] for k in keep if k in meta}})
        scales.append(next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale"))
    factors = [[round(b / a) for a, b in zip(scales[k - 1][1:], scales[k][1:], strict=True)]
               for k in range(1, len(scales))]
    return {"levels": levels, "factors": factors}


def probe_layout(records: list[Any]) -> dict[str, Any]:
    """What ngff-writer's strategy declares for these records: write them into a scratch
    directory with ``OmeZarrWriteStrategy()`` and read the image's metadata back."""
    from ngff_writer.careamics import OmeZarrWriteStrategy

    scratch = Path(tempfile.mkdtemp(prefix="ngff-bench-overlap-probe-"))
    try:
        strategy = OmeZarrWriteStrategy()
        strategy.write_batch(scratch, records)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the image is incomplete, on purpose
            strategy.finalize()
        return read_layout(scratch / f"{IMAGE}.ome.zarr")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---- writers ---------------------------------------------------------------------------------
def _records(n: int, shape: tuple[int, ...], i: int,
             parts: list[tuple[Any, Tile | None]]) -> list[Any]:
    """CAREamics' records (``ImageRegionData``) of one model step of sample ``i``."""
    from ngff_writer.careamics import ImageRegionData

    full = (n, *shape)
    common = dict(source="array", data_shape=full, dtype="float32", axes="SCZYX",
                  target_axes="SCZYX", original_data_shape=full, additional_metadata={})
    out = []
    for data, t in parts:
        spec: dict[str, Any] = {"data_idx": 0, "sample_idx": i}
        if t is None:
            spec.update(coords=(0, 0, 0), patch_size=tuple(shape[1:]))
        else:
            spec.update(coords=t.start, patch_size=t.size, crop_coords=t.crop_start,
                        crop_size=t.crop_size, stitch_coords=t.stitch_start,
                        total_tiles=len(parts) * n)
        out.append(ImageRegionData(data, region_spec=spec, **common))
    return out


class NgffWriter:
    """``OmeZarrWriteStrategy()``: ``write_batch`` per model step, ``finalize()`` at the end.
    Engine ``ngff-chunks``: ``OmeZarrWriteStrategy(shards=None)``."""

    def __init__(self, out: Path, n: int, shape: tuple[int, ...], engine: str = "ngff-writer") -> None:
        import ngff_writer as nw
        from ngff_writer.careamics import OmeZarrWriteStrategy

        self.out, self.n, self.shape = out, n, shape
        self.context = nw.Context(durable=False) if engine == "ngff-volatile" else None
        self.strategy = OmeZarrWriteStrategy(shards=None if engine == "ngff-chunks" else "auto",
                                             context=self.context)

    def write(self, i: int, parts: list[tuple[Any, Tile | None]]) -> None:
        self.strategy.write_batch(self.out, _records(self.n, self.shape, i, parts))

    def close(self) -> None:
        incomplete = self.strategy.finalize()
        if self.context is not None:
            self.context.close()
        if incomplete:
            raise AssertionError(f"incomplete after the loop: {incomplete}")


class TensorstoreWriter:
    """The same levels with tensorstore, asynchronously, at most ``in_flight`` samples pending."""

    def __init__(self, path: Path, layout: dict[str, Any], in_flight: int,
                 tiles: str = "txn") -> None:
        import tensorstore as ts

        self.ts = ts
        self.arrays = [ts.open({"driver": "zarr3", "kvstore": {"driver": "file",
                                                               "path": str(path / lv["path"])},
                                "metadata": lv["metadata"]},
                               create=True, delete_existing=True).result()
                       for lv in layout["levels"]]
        self.factors = layout["factors"]
        self.in_flight = in_flight
        self.tiles = tiles
        self.pending: deque[list[Any]] = deque()
        self.most_pending = 0

    def _make_room(self) -> None:
        while len(self.pending) >= self.in_flight:
            for future in self.pending.popleft():
                future.result()

    def _levels(self, i: int, level0: Any, txn: Any = None) -> list[Any]:
        """Write every level below 0 of sample ``i`` from ``level0`` (a TensorStore view),
        each from a mean-downsampled view of the level above."""
        ts, futures, view = self.ts, [], level0
        for array, factors in zip(self.arrays[1:], self.factors, strict=True):
            view = ts.downsample(view, factors, "mean")
            target = array if txn is None else array.with_transaction(txn)
            futures.append(target[i].write(view))
        return futures

    def write_sample(self, i: int, x: Any) -> None:
        self._make_room()
        futures = [self.arrays[0][i].write(x, can_reference_source_data_indefinitely=True)]
        futures += self._levels(i, self.ts.array(x))
        self.pending.append(futures)
        self.most_pending = max(self.most_pending, len(self.pending))

    def write_tiles(self, i: int, parts: list[tuple[Any, Tile]]) -> None:
        """Each tile's valid part into one transaction, then the levels read from level 0
        inside it; the transaction's commit is what stays in flight. With ``tiles="stitch"``:
        the valid parts copied into one sample array, written as a sample."""
        if self.tiles == "stitch":
            import numpy as np

            first = parts[0][0]
            sample = np.empty(self.arrays[0].shape[1:], first.dtype)
            for data, t in parts:
                sample[t.stitch] = data[t.crop]
            self.write_sample(i, sample)
            return
        self._make_room()
        txn = self.ts.Transaction()
        level0 = self.arrays[0].with_transaction(txn)
        staged = [level0[(i, *t.stitch)].write(data[t.crop]) for data, t in parts]
        for future in staged:  # staged in the transaction: what the levels read
            future.result()
        for future in self._levels(i, level0[i], txn):
            future.result()
        self.pending.append([txn.commit_async()])
        self.most_pending = max(self.most_pending, len(self.pending))

    def write(self, i: int, parts: list[tuple[Any, Tile | None]]) -> None:
        if parts[0][1] is None:
            self.write_sample(i, parts[0][0])
        else:
            self.write_tiles(i, parts)  # type: ignore[arg-type]

    def close(self) -> None:
        while self.pending:
            for future in self.pending.popleft():
                future.result()


# ---- checks ----------------------------------------------------------------------------------
def _mean_down(a: Any, factors: Sequence[int]) -> Any:
    """Mean over blocks of ``factors`` (one per axis of ``a``; sizes divisible), float32."""
    import numpy as np

    shape, axes = [], []
    for k, (n, f) in enumerate(zip(a.shape, factors, strict=True)):
        shape += [n // f, f]
        axes.append(2 * k + 1)
    return a.reshape(shape).mean(axis=tuple(axes), dtype=np.float64).astype(a.dtype)


def verify(image: Path, layout: dict[str, Any], n: int, expected: Callable[[int], Any],
           complete: bool | None) -> dict[str, Any]:
    """The first and last samples at level 0 bit-identical, the last one's levels below
    within float32 rounding of the mean of the level above, every level's shape the
    layout's; ``complete`` (ngff-writer's own flag, or None) must not be False."""
    import numpy as np
    import zarr

    ok, worst = True, 0.0
    for i in sorted({0, n - 1}):
        want = np.asarray(expected(i))
        for k, lv in enumerate(layout["levels"]):
            arr = zarr.open_array(str(image / lv["path"]), mode="r")
            ok = ok and list(arr.shape) == lv["metadata"]["shape"]
            if k:
                want = _mean_down(want, layout["factors"][k - 1])
            got = np.asarray(arr[i])
            if k == 0:
                ok = ok and bool(np.array_equal(got, want))
            elif i == n - 1:
                worst = max(worst, float(np.abs(got - want).max()))
                ok = ok and bool(np.allclose(got, want, rtol=1e-5, atol=1e-6))
    return {"verified": bool(ok and complete is not False), "complete": complete,
            "max_abs_error": worst}


def _one_sample(layout: dict[str, Any]) -> dict[str, Any]:
    """``layout`` for an image of one sample."""
    levels = [{"path": lv["path"], "metadata": {**lv["metadata"],
                                                "shape": [1, *lv["metadata"]["shape"][1:]]}}
              for lv in layout["levels"]]
    return {"levels": levels, "factors": layout["factors"]}


def warm_up(engine: str, scratch: Path, layout: dict[str, Any], batch: list[Any]) -> None:
    """Write one sample with ``engine`` into ``scratch`` and delete it, before anything is
    timed: the library's first-use imports, its threads, tensorstore's context. ``batch``
    is a whole sample (the synthetic scenarios) or CAREamics records (written to an image
    of their own shape, left incomplete)."""
    try:
        if engine.startswith("ngff"):
            from ngff_writer.careamics import OmeZarrWriteStrategy

            if hasattr(batch[0], "region_spec"):
                strategy = OmeZarrWriteStrategy()
                strategy.write_batch(scratch, batch)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # incomplete, on purpose
                    strategy.finalize()
            else:
                writer = NgffWriter(scratch, 1, tuple(batch[0].shape), engine)
                writer.write(0, [(batch[0], None)])
                writer.close()
        elif engine == "tensorstore":
            if hasattr(batch[0], "region_spec"):
                strategy = TensorstoreStrategy(layout, 2)
                strategy.write_batch(scratch, batch)
                strategy.finalize()
            else:
                ts_writer = TensorstoreWriter(scratch / "warm.zarr", _one_sample(layout), 2)
                ts_writer.write(0, [(batch[0], None)])
                ts_writer.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ngff_complete(image: Path) -> bool:
    import ngff_writer as nw

    with nw.open_output(str(image), mode="r") as out:
        return bool(out[""].progress().complete)


# ---- workers: gpu, cpu, tiles ----------------------------------------------------------------
def synthetic_worker(task: dict[str, Any]) -> dict[str, Any]:
    """One run of one engine (or the model alone) in this fresh process."""
    import numpy  # noqa: F401  (imported before the baseline, like every engine's modules)
    import zarr  # noqa: F401

    engine, phase = task["engine"], task["phase"]
    if engine == "tensorstore":
        import tensorstore  # noqa: F401
    elif engine.startswith("ngff"):
        import ngff_writer.careamics  # noqa: F401
    shape, n = tuple(task["shape"]), task["samples"]
    tiles = None
    if task["kind"] == "tiles":
        space = shape[1:]
        patch = (space[0], *(min(task["tile"], s) for s in space[1:]))
        tiles = sample_tiles(space, patch, (0, task["overlap"], task["overlap"]))
    work = None if phase == "alone" else {"gpu": "sleep", "tiles": "sleep", "cpu": "cpu"}[task["scenario"]]
    model = Model(shape, task["noise"], work, task["seconds"], task["iterations"], tiles)
    out = Path(task["path"])
    layout = task["layout"]
    if engine != MODEL:
        warm_up(engine, out.parent / "warm-up", layout, [model.expected(0)])
    reset_peak_rss()  # the generator's and the warm-up's buffers, freed by now, are not the loop's
    baseline = current_rss()

    t0 = time.perf_counter()
    model_s = 0.0
    writer: Any = None
    if engine.startswith("ngff"):
        writer = NgffWriter(out, n, shape, engine)
    elif engine == "tensorstore":
        writer = TensorstoreWriter(out / f"{IMAGE}.zarr", layout, task["in_flight"],
                                   task["ts_tiles"])
    for i in range(n):
        m0 = time.perf_counter()
        parts = model(i)
        model_s += time.perf_counter() - m0
        if writer is not None:
            writer.write(i, parts)
        del parts
    if writer is not None:
        writer.close()
    loop_s = time.perf_counter() - t0
    peak = peak_rss()

    info: dict[str, Any] = {"verified": True, "complete": None, "max_abs_error": 0.0}
    if engine.startswith("ngff"):
        image = out / f"{IMAGE}.ome.zarr"
        info = verify(image, layout, n, model.expected, _ngff_complete(image))
        info["files"] = sum(1 for p in image.rglob("*") if p.is_file())
    elif engine == "tensorstore":
        info = verify(out / f"{IMAGE}.zarr", layout, n, model.expected, None)
        info["most_pending"] = writer.most_pending
    return {"scenario": task["scenario"], "kind": task["kind"], "engine": engine, "phase": phase,
            "samples": n, "loop_s": loop_s, "model_in_loop_s": model_s,
            "peak_rss_mb": peak / MB, "baseline_rss_mb": baseline / MB,
            "peak_over_baseline_mb": (peak - baseline) / MB, **info, **library_fingerprint()}


def probe_worker(task: dict[str, Any]) -> dict[str, Any]:
    """The layout ngff-writer gives the synthetic scenarios' image (one record suffices)."""
    import numpy as np

    shape, n = tuple(task["shape"]), task["samples"]
    return probe_layout(_records(n, shape, 0, [(np.zeros(shape, np.float32), None)]))


# ---- workers: careamics ----------------------------------------------------------------------
def _careamics_axes(shape: tuple[int, ...]) -> str:
    return "SZYX" if len(shape) == 4 else "SYX"


def _torch_threads(task: dict[str, Any]) -> None:
    """Torch's intra-op threads for the model (``--careamics-threads``; 0: torch's default)."""
    import torch

    if task["careamics_threads"] > 0:
        torch.set_num_threads(task["careamics_threads"])


def _quiet() -> None:
    import logging

    warnings.simplefilter("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "careamics"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _careamics_data(shape: tuple[int, ...], noise: float) -> Any:
    """The image CAREamics predicts: S samples of (Z,) Y, X, generated like the others."""
    import numpy as np
    from _samples import SampleSource

    space = shape[1:]
    source = SampleSource((1, *([1] if len(space) == 2 else []), *space), noise=noise, seed=0)
    return np.stack([source.sample(i).reshape(space).copy() for i in range(shape[0])])


class CaptureStrategy:
    """Keeps CAREamics' decollated batches (for the writer-alone replay)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def set_source_base(self, source_base: Any) -> None:
        pass

    def write_batch(self, dirpath: Path, predictions: list[Any]) -> None:
        self.batches.append(list(predictions))


class NullStrategy(CaptureStrategy):
    """Drops every prediction: the model alone."""

    def write_batch(self, dirpath: Path, predictions: list[Any]) -> None:
        pass

    def finalize(self) -> list[str]:
        return []


class TensorstoreStrategy:
    """A CAREamics write strategy on tensorstore: each record (or, tiled, each sample once
    its tiles are stitched) goes to a :class:`TensorstoreWriter` of ngff-writer's layout."""

    def __init__(self, layout: dict[str, Any], in_flight: int) -> None:
        self.layout, self.in_flight = layout, in_flight
        self.writer: TensorstoreWriter | None = None
        self.canvas: dict[int, list[Any]] = {}  # sample -> [array, tiles still missing]

    def set_source_base(self, source_base: Any) -> None:
        pass

    def write_batch(self, dirpath: Path, predictions: list[Any]) -> None:
        import numpy as np

        for p in predictions:
            spec = p.region_spec
            if self.writer is None:
                self.writer = TensorstoreWriter(Path(dirpath) / f"{IMAGE}.zarr", self.layout,
                                                self.in_flight)
            data = np.asarray(p.data)
            stored_ndim = len(self.layout["levels"][0]["metadata"]["shape"]) - 1
            if data.ndim > stored_ndim:  # a single channel the image does not keep
                data = data[0]
            sample = int(spec["sample_idx"])
            if "crop_coords" not in spec:
                self.writer.write_sample(sample, data)
                continue
            lead = data.ndim - len(spec["crop_coords"])
            crop = (slice(None),) * lead + tuple(
                slice(a, a + k) for a, k in zip(spec["crop_coords"], spec["crop_size"], strict=True))
            stitch = (slice(None),) * lead + tuple(
                slice(a, a + k) for a, k in zip(spec["stitch_coords"], spec["crop_size"], strict=True))
            if sample not in self.canvas:
                per_sample = int(spec["total_tiles"]) // int(p.data_shape[0])
                shape = self.layout["levels"][0]["metadata"]["shape"][1:]
                self.canvas[sample] = [np.empty(shape, data.dtype), per_sample]
            entry = self.canvas[sample]
            entry[0][stitch] = data[crop]
            entry[1] -= 1
            if entry[1] == 0:
                self.writer.write_sample(sample, self.canvas.pop(sample)[0])

    def finalize(self) -> list[str]:
        if self.writer is not None:
            self.writer.close()
        return [str(s) for s in self.canvas]


def _careamist(task: dict[str, Any], work: Path) -> Any:
    from careamics import CAREamist

    return CAREamist(checkpoint_path=task["checkpoint"], work_dir=work, enable_progress_bar=False)


def _careamics_predict_options(task: dict[str, Any]) -> dict[str, Any]:
    shape = tuple(task["careamics_shape"])
    return {"axes": _careamics_axes(shape), "data_type": "array",
            "tile_size": tuple(task["careamics_tile"]), "tile_overlap": tuple(task["careamics_overlap"]),
            "batch_size": task["careamics_batch"]}


def _predict_with(careamist: Any, data: Any, options: dict[str, Any], strategy: Any,
                  out: Path) -> None:
    """CAREamics' prediction route without keeping predictions: the CAREamist's trainer,
    model and prediction datamodule, its writer callback handing batches to ``strategy``."""
    from careamics.lightning.data import CareamicsDataModule
    from careamics.models import get_model_constraints

    options = dict(options)
    config = careamist.config
    data_config = config.data_config.convert_mode(
        new_mode="predicting", new_patch_size=options.pop("tile_size"),
        overlap_size=options.pop("tile_overlap"), new_batch_size=options.pop("batch_size"),
        new_data_type=options.pop("data_type"), new_axes=options.pop("axes"))
    datamodule = CareamicsDataModule(data_config=data_config, pred_data=data,
                                     model_constraints=get_model_constraints(config.algorithm_config.model))
    writer = careamist.prediction_writer
    writer.write_strategy = strategy
    writer.dirpath = out.resolve()
    writer.enable_writing(True)
    try:
        careamist.trainer.predict(model=careamist.model, datamodule=datamodule,
                                  return_predictions=False)
    finally:
        writer.enable_writing(False)


def careamics_prepare(task: dict[str, Any]) -> dict[str, Any]:
    """Train the tiny model once, save it, capture its predictions, probe ngff-writer's layout."""
    import pickle

    import numpy as np
    import torch
    from careamics import CAREamist
    from careamics.config import create_n2v_config

    _quiet()
    _torch_threads(task)
    root = Path(task["root"])
    shape = tuple(task["careamics_shape"])
    space = shape[1:]
    patch = tuple(min(8 if k == 0 and len(space) == 3 else 32, s) for k, s in enumerate(space))
    config = create_n2v_config(experiment_name="overlap", data_type="array",
                               axes=_careamics_axes(shape), patch_size=patch, batch_size=4,
                               num_epochs=1, num_steps=2, n_val_patches=2)
    config.algorithm_config.model.num_channels_init = CAREAMICS_FILTERS
    config.training_config.trainer_params.update(accelerator="cpu", devices=1)
    torch.manual_seed(0)
    data = _careamics_data(shape, task["noise"])
    np.save(root / "careamics_input.npy", data)
    careamist = CAREamist(config, work_dir=root / "train", enable_progress_bar=False)
    careamist.train(train_data=data[: min(2, len(data))])
    checkpoint = root / "careamics_model.ckpt"
    careamist.trainer.save_checkpoint(checkpoint)

    careamist = _careamist({"checkpoint": str(checkpoint)}, root / "capture")
    capture = CaptureStrategy()
    t0 = time.perf_counter()
    _predict_with(careamist, data, _careamics_predict_options(task), capture, root / "capture")
    seconds = time.perf_counter() - t0
    with open(root / "careamics_records.pkl", "wb") as f:
        pickle.dump(capture.batches, f)
    layout = probe_layout(capture.batches[0])
    return {"checkpoint": str(checkpoint), "input": str(root / "careamics_input.npy"),
            "records": str(root / "careamics_records.pkl"), "layout": layout,
            "batches": len(capture.batches),
            "records_per_batch": max(len(b) for b in capture.batches), "capture_s": seconds,
            "tiles": sum(len(b) for b in capture.batches)}


def _stitched(batches: list[list[Any]], sample: int, shape: Sequence[int]) -> Any:
    """Sample ``sample`` of the captured predictions, stitched (crop mode) into ``shape``."""
    import numpy as np

    out = np.zeros(shape, np.float32)
    for batch in batches:
        for p in batch:
            spec = p.region_spec
            if int(spec["sample_idx"]) != sample:
                continue
            data = np.asarray(p.data)
            if data.ndim > len(shape):
                data = data[0]
            if "crop_coords" not in spec:
                out[...] = data
                continue
            lead = data.ndim - len(spec["crop_coords"])
            crop = (slice(None),) * lead + tuple(
                slice(a, a + k) for a, k in zip(spec["crop_coords"], spec["crop_size"], strict=True))
            stitch = (slice(None),) * lead + tuple(
                slice(a, a + k) for a, k in zip(spec["stitch_coords"], spec["crop_size"], strict=True))
            out[stitch] = data[crop]
    return out


def careamics_worker(task: dict[str, Any]) -> dict[str, Any]:
    """One CAREamics run: writer alone (replay), model alone, or the loop, in this process."""
    import pickle

    import numpy as np

    engine, phase = task["engine"], task["phase"]
    _quiet()
    _torch_threads(task)
    if engine == "tensorstore":
        import tensorstore  # noqa: F401
    from ngff_writer.careamics import OmeZarrWriteStrategy, predict_to_ome_zarr

    out = Path(task["path"])
    layout = task["layout"]
    with open(task["records"], "rb") as f:
        captured = pickle.load(f)
    careamist = data = None
    if phase != "alone":
        careamist = _careamist(task, out.parent / "work")
        data = np.load(task["input"])
        # First-call costs of prediction (imports, allocator), before anything is timed.
        shape = tuple(task["careamics_shape"])
        small = np.zeros((1, *shape[1:]), np.float32)
        _predict_with(careamist, small, {**_careamics_predict_options(task)}, NullStrategy(),
                      out.parent / "warmup")
    options = _careamics_predict_options(task)
    if engine != MODEL:
        warm_up(engine, out.parent / "warm-up", layout, captured[0])
    reset_peak_rss()  # training's and the warm-ups' memory are not the loop's
    baseline = current_rss()

    t0 = time.perf_counter()
    if phase == "alone":
        strategy: Any = (OmeZarrWriteStrategy() if engine == "ngff-writer"
                         else TensorstoreStrategy(layout, task["in_flight"]))
        strategy.set_source_base(None)
        for batch in captured:
            strategy.write_batch(out, batch)
        incomplete = strategy.finalize()
        if incomplete:
            raise AssertionError(f"incomplete after the replay: {incomplete}")
    elif engine == "ngff-writer":
        predict_to_ome_zarr(careamist, data, out, predict=options)
    else:
        strategy = NullStrategy() if engine == MODEL else TensorstoreStrategy(layout, task["in_flight"])
        _predict_with(careamist, data, options, strategy, out)
        strategy.finalize()
    loop_s = time.perf_counter() - t0
    peak = peak_rss()

    info: dict[str, Any] = {"verified": True, "complete": None, "max_abs_error": 0.0}
    if engine != MODEL:
        level0 = layout["levels"][0]["metadata"]["shape"]
        n = level0[0]

        def expected(i: int) -> Any:
            return _stitched(captured, i, level0[1:])

        if engine == "ngff-writer":
            image = out / f"{IMAGE}.ome.zarr"
            info = verify(image, layout, n, expected, _ngff_complete(image))
        else:
            info = verify(out / f"{IMAGE}.zarr", layout, n, expected, None)
    return {"scenario": "careamics", "kind": "careamics", "engine": engine, "phase": phase,
            "samples": int(task["careamics_shape"][0]), "loop_s": loop_s,
            "model_in_loop_s": None, "peak_rss_mb": peak / MB, "baseline_rss_mb": baseline / MB,
            "peak_over_baseline_mb": (peak - baseline) / MB, **info, **library_fingerprint()}


def calibrate_worker(task: dict[str, Any]) -> dict[str, Any]:
    return {"iterations_per_s": calibrate_cpu_work()}


WORKERS = {"synthetic": synthetic_worker, "probe": probe_worker, "calibrate": calibrate_worker,
           "careamics-prepare": careamics_prepare, "careamics": careamics_worker}


# ---- orchestration ---------------------------------------------------------------------------
# glibc told to keep what the process frees (no mmap'd blocks, no trimming of its heap), so a
# fresh array reuses pages the process touched before. On a VM whose kernel reports free
# pages to the host (Firecracker here: "page_reporting"), a page freed for ~2 s is given back
# and its next first touch faults on the host, ~2.4 s per GB; that cost lands on whichever
# thread allocates next, most often the model's hand-over (benchmarks/README.md).
KEEP_FREED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def spawn(task: dict[str, Any], root: Path) -> dict[str, Any]:
    """Run ``task`` in a fresh subprocess (its spec in a file under ``root``); return its JSON.
    With ``task["keep_freed"]`` the process's allocator keeps freed memory (``KEEP_FREED``)."""
    spec = Path(tempfile.mkstemp(prefix="task-", suffix=".json", dir=root)[1])
    spec.write_text(json.dumps(task))
    env = {**os.environ, **(KEEP_FREED if task.get("keep_freed") else {})}
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)],
                              capture_output=True, text=True, check=False, env=env)
    finally:
        spec.unlink(missing_ok=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise RuntimeError(f"worker {task['worker']} {task.get('engine', '')} "
                           f"{task.get('scenario', '')} {task.get('phase', '')} failed "
                           f"with code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_tasks(tasks: list[dict[str, Any]], args: argparse.Namespace, root: Path,
              warm_bytes: int) -> list[dict]:
    """Every task ``args.repeats`` times, interleaved and rotated, each in a fresh process
    writing under its own directory (deleted afterwards); warm page cache before a run that
    writes (``--memory warm``), sync and settle after each."""
    results = []
    for rep, task in interleaved(tasks, args.repeats):
        run_dir = Path(tempfile.mkdtemp(prefix=f"{task['scenario']}-{task['engine']}-", dir=root))
        if args.memory == "warm" and task["engine"] != MODEL:
            warm_page_cache(run_dir, warm_bytes)
        load = os.getloadavg()[0]
        try:
            r = spawn({**task, "path": str(run_dir / "out"), "keep_freed": args.keep_freed}, root)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        settle(args.settle)
        r["repeat"] = rep
        r["load_before"] = load
        results.append(r)
        extra = "" if r["model_in_loop_s"] is None or task["engine"] == MODEL \
            else f" (model {r['model_in_loop_s']:5.2f} s in it)"
        label = task["scenario"] if task["phase"] == "loop" else task["kind"]
        print(f"  repeat {rep} {label:<9} {r['phase']:<5} {task['engine']:<11} "
              f"{r['loop_s']:7.2f} s{extra}  peak RSS +{r['peak_over_baseline_mb']:.0f} MB  "
              f"{'ok' if r['verified'] else 'NOT VERIFIED'}", flush=True)
    return results


def _median(rows: list[dict], key: str = "loop_s") -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _select(results: list[dict], **match: Any) -> list[dict]:
    return [r for r in results if all(r.get(k) == v for k, v in match.items())]


def per_pair(results: list[dict], scenario: str, other: str = "tensorstore") -> list[float]:
    """loop(other) / loop(ngff-writer) in each repeat that ran both."""
    out = []
    loops = _select(results, scenario=scenario, phase="loop")
    for rep in sorted({r["repeat"] for r in loops}):
        a = _select(loops, repeat=rep, engine="ngff-writer")
        b = _select(loops, repeat=rep, engine=other)
        if a and b:
            out.append(b[0]["loop_s"] / a[0]["loop_s"])
    return out


def summarize(results: list[dict], scenarios: list[str], engines: list[str],
              model_seconds: dict[str, float]) -> list[dict]:
    table = []
    for scenario in scenarios:
        kind = "samples" if scenario in ("gpu", "cpu") else scenario
        model = _median(_select(results, scenario=scenario, engine=MODEL, phase="loop"))
        for engine in engines:
            alone_rows = _select(results, kind=kind, engine=engine, phase="alone")
            loop_rows = _select(results, scenario=scenario, engine=engine, phase="loop")
            alone, loop = _median(alone_rows), _median(loop_rows)
            row: dict[str, Any] = {
                "scenario": scenario, "engine": engine, "writer_alone_s": alone, "model_s": model,
                "model_step_s": model_seconds.get(scenario), "loop_s": loop,
                "model_in_loop_s": _median(loop_rows, "model_in_loop_s"),
                "repeats": len(loop_rows),
                "efficiency": (max(model or 0.0, alone or 0.0) / loop) if loop else None,
                "peak_over_baseline_mb": _median(loop_rows, "peak_over_baseline_mb"),
                "verified": all(r["verified"] for r in alone_rows + loop_rows),
            }
            if engine == "ngff-writer":
                ratios = per_pair(results, scenario)
                row["per_pair"] = ratios
                row["ratio"] = statistics.median(ratios) if ratios else None
                # No loop is shorter than the model alone or the writer alone, so no writer
                # can beat tensorstore's loop by more than this in the run: the target's reach.
                other = _median(_select(results, scenario=scenario, engine="tensorstore", phase="loop"))
                floor = max(model or 0.0, alone or 0.0)
                row["ratio_ceiling"] = other / floor if other and floor else None
                vs_chunks = per_pair(results, scenario, "ngff-chunks")
                row["per_pair_chunks"] = vs_chunks
                row["vs_chunks"] = statistics.median(vs_chunks) if vs_chunks else None
                vs_volatile = per_pair(results, scenario, "ngff-volatile")
                row["per_pair_volatile"] = vs_volatile
                row["vs_volatile"] = statistics.median(vs_volatile) if vs_volatile else None
            if engine.startswith("ngff"):
                row["files"] = _median(loop_rows, "files")
            if loop_rows or alone_rows:
                table.append(row)
    return table


def print_table(table: list[dict]) -> None:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = (f"{'scenario':<10}{'engine':<13}{'writer alone':>13}{'model':>8}{'loop':>8}"
            f"{'efficiency':>11}{'ts/ngff':>9}{'chunks/ngff':>12}{'model in loop':>14}{'peak+ MB':>9}"
            f"{'files':>7}{'ok':>4}")
    print("(seconds, medians; efficiency = max(model, writer alone) / loop; ts/ngff = median of "
          "the per-repeat loop(tensorstore) / loop(ngff-writer); chunks/ngff = the same for "
          "ngff-chunks (one file per chunk) over the default layout; peak+ = peak RSS over the "
          "post-import baseline in the loop; files = files of the output)")
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['scenario']:<10}{r['engine']:<13}{f(r['writer_alone_s'], '.2f'):>13}"
              f"{f(r['model_s'], '.2f'):>8}{f(r['loop_s'], '.2f'):>8}{f(r['efficiency'], '.2f'):>11}"
              f"{f(r.get('ratio'), '.2f'):>9}{f(r.get('vs_chunks'), '.2f'):>12}"
              f"{f(r['model_in_loop_s'], '.2f'):>14}{f(r['peak_over_baseline_mb'], '.0f'):>9}"
              f"{f(r.get('files'), '.0f'):>7}{'y' if r['verified'] else 'N':>4}")


def verdict(table: list[dict]) -> list[str]:
    lines = []
    for r in table:
        if r["engine"] != "ngff-writer":
            continue
        if r["efficiency"] is not None:
            met = r["efficiency"] >= TARGET_EFFICIENCY
            lines.append(f"{r['scenario']}: ngff-writer overlap efficiency {r['efficiency']:.2f} -> "
                         f"{'met' if met else 'NOT met'} (>= {TARGET_EFFICIENCY})")
        if r.get("ratio") is not None:
            met = r["ratio"] >= TARGET_RATIO
            lines.append(f"{r['scenario']}: loop(tensorstore) / loop(ngff-writer) {r['ratio']:.2f} "
                         f"(per repeat: {', '.join(f'{v:.2f}' for v in r['per_pair'])}) -> "
                         f"{'met' if met else 'NOT met'} (>= {TARGET_RATIO})")
            if r.get("ratio_ceiling") is not None:
                lines.append(f"{r['scenario']}:   the most any writer could reach in this run: "
                             f"loop(tensorstore) / max(model alone, ngff-writer alone) = "
                             f"{r['ratio_ceiling']:.2f}")
        if r.get("vs_chunks") is not None:
            met = r["vs_chunks"] >= TARGET_SHARDED
            lines.append(f"{r['scenario']}: loop(one file per chunk) / loop(default layout) "
                         f"{r['vs_chunks']:.2f} (per repeat: "
                         f"{', '.join(f'{v:.2f}' for v in r['per_pair_chunks'])}) -> "
                         f"{'met' if met else 'NOT met'} (>= {TARGET_SHARDED})")
        if r.get("vs_volatile") is not None:
            lines.append(f"{r['scenario']}: loop(durable=False) / loop(default, durable) "
                         f"{r['vs_volatile']:.2f} (per repeat: "
                         f"{', '.join(f'{v:.2f}' for v in r['per_pair_volatile'])})")
        if r["scenario"] == "gpu" and r["peak_over_baseline_mb"] is not None:
            lines.append(f"gpu: ngff-writer peak RSS over its baseline in the loop "
                         f"{r['peak_over_baseline_mb']:.0f} MB (median)")
    bad = sorted({(r["scenario"], r["engine"]) for r in table if not r["verified"]})
    if bad:
        lines.append("WARNING: output check failed for " + ", ".join(f"{s} {e}" for s, e in bad))
    return lines


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=None, help="samples S (32; --quick: 4)")
    p.add_argument("--shape", default=None, help="sample shape CxZxYxX (1x32x512x512; --quick: 1x16x256x256)")
    p.add_argument("--repeats", type=int, default=None, help="repeats (3; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: S=4, small samples, 1 repeat")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--in-flight", type=int, default=2, help="tensorstore: samples of write futures pending")
    p.add_argument("--ts-tiles", choices=("txn", "stitch"), default="txn",
                   help="tensorstore in the tiles scenario: txn = tiles written into one "
                        "transaction per sample; stitch = copied into a sample array first")
    p.add_argument("--tile", type=int, default=200, help="tiles scenario: tile size in y and x")
    p.add_argument("--overlap", type=int, default=48, help="tiles scenario: overlap in y and x")
    p.add_argument("--careamics-shape", default=None,
                   help="careamics: the predicted image SxZxYxX (4x16x256x256; --quick: 2x16x64x64)")
    p.add_argument("--careamics-tile", default=None,
                   help="careamics: tile_size ZxYxX, square in YX (16x128x128; --quick: 16x32x32)")
    p.add_argument("--careamics-overlap", default=None,
                   help="careamics: tile_overlap ZxYxX (0x32x32; --quick: 0x8x8)")
    p.add_argument("--careamics-batch", type=int, default=2, help="careamics: batch size")
    p.add_argument("--careamics-threads", type=int, default=1,
                   help="careamics: torch threads of the model (1; 0 = torch's default, one "
                        "per core): see benchmarks/README.md")
    p.add_argument("--noise", type=float, default=0.01, help="noise std of the samples")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to pause (after a sync) between runs")
    p.add_argument("--memory", choices=("warm", "as-is"), default="warm",
                   help="warm: before every run that writes, write and delete a scratch file as "
                        "large as the stream (see benchmarks/README.md); as-is: don't")
    p.add_argument("--keep-freed", action="store_true",
                   help="every run (each engine and the model) with glibc keeping freed memory "
                        "(MALLOC_MMAP_MAX_=0, no trim): takes a VM's free-page reporting out of "
                        "the measurement (see benchmarks/README.md)")
    p.add_argument("--tmpdir", default=None, help="where outputs go (local disk; deleted)")
    p.add_argument("--json", default=None, help="save raw results and the summary here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    q = args.quick
    args.samples = args.samples or (4 if q else 32)
    args.repeats = args.repeats or (1 if q else 3)
    args.shape = _dims(args.shape or ("1x16x256x256" if q else "1x32x512x512"))
    args.careamics_shape = _dims(args.careamics_shape or ("2x16x64x64" if q else "4x16x256x256"))
    args.careamics_tile = _dims(args.careamics_tile or ("16x32x32" if q else "16x128x128"))
    args.careamics_overlap = _dims(args.careamics_overlap or ("0x8x8" if q else "0x32x32"))
    if len(args.shape) != 4:
        p.error("--shape is CxZxYxX")
    if len(args.careamics_shape) not in (3, 4) or \
            len(args.careamics_tile) != len(args.careamics_shape) - 1 or \
            len(args.careamics_overlap) != len(args.careamics_tile):
        p.error("--careamics-shape is Sx(Z)xYxX, --careamics-tile and --careamics-overlap (Z)xYxX")
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
    if set(args.scenario_list) - set(SCENARIOS) or set(args.engine_list) - set(ALL_ENGINES):
        p.error(f"choose scenarios from {SCENARIOS} and engines from {ALL_ENGINES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        task = json.loads(Path(args.worker).read_text())
        print(json.dumps(WORKERS[task["worker"]](task)))
        return 0

    scenarios, engines = args.scenario_list, args.engine_list
    if "careamics" in scenarios and importlib.util.find_spec("careamics") is None:
        print("scenario careamics skipped: CAREamics is not installed (pip install -e '.[careamics]')")
        scenarios = [s for s in scenarios if s != "careamics"]
    synthetic = [s for s in scenarios if s != "careamics"]
    n, shape = args.samples, tuple(args.shape)
    sample_bytes = 4 * math.prod(shape)
    root = Path(tempfile.mkdtemp(prefix="ngff-bench-overlap-", dir=args.tmpdir))
    results: list[dict] = []
    info: dict[str, Any] = {}
    model_seconds: dict[str, float] = {}
    common = {"samples": n, "shape": list(shape), "noise": args.noise, "in_flight": args.in_flight,
              "tile": args.tile, "overlap": args.overlap, "ts_tiles": args.ts_tiles}
    try:
        if synthetic:
            print(f"scenarios {','.join(synthetic)}: S={n} x {shape} float32 "
                  f"({n * sample_bytes / 2**30:.2f} GiB of level 0), engines {','.join(engines)}, "
                  f"{args.repeats} repeats"
                  + (", glibc keeping freed memory (--keep-freed)" if args.keep_freed else ""),
                  flush=True)
            layout = spawn({"worker": "probe", **common}, root)
            info["layout"] = layout
            print("  layout (ngff-writer's defaults): " + "; ".join(
                f"level {lv['path']} {lv['metadata']['shape']} blocks "
                f"{lv['metadata']['chunk_grid']['configuration']['chunk_shape']}"
                + (" (shards)" if any(c.get("name") == "sharding_indexed"
                                      for c in lv["metadata"].get("codecs", [])) else "")
                for lv in layout["levels"]), flush=True)
            base = {"worker": "synthetic", **common, "layout": layout, "seconds": 0.0, "iterations": 0}
            kinds = sorted({"samples" if s in ("gpu", "cpu") else "tiles" for s in synthetic},
                           key=["samples", "tiles"].index)
            # 1. each engine's writer alone: no model work, only the hand-over; and the
            # hand-over alone (no writer), which the model's total includes too.
            print("writer alone (and the hand-over alone):", flush=True)
            alone = [{**base, "scenario": "gpu" if k == "samples" else "tiles", "kind": k,
                      "engine": e, "phase": "alone"} for k in kinds for e in (*engines, MODEL)]
            results += run_tasks(alone, args, root, n * sample_bytes)
            handover = {k: _median(_select(results, kind=k, engine=MODEL, phase="alone")) or 0.0
                        for k in kinds}
            info["handover_s"] = handover
            # T makes the model's total (S x T plus the hand-over) the slower writer's time.
            step = {k: max(0.0, max(_median(_select(results, kind=k, engine=e, phase="alone")) or 0.0
                                    for e in engines) - handover[k]) / n for k in kinds}
            iterations = 0
            if "cpu" in synthetic:
                rate = spawn({"worker": "calibrate"}, root)["iterations_per_s"]
                iterations = max(1, round(step["samples"] * rate))
                info["cpu_iterations_per_s"] = rate
                info["cpu_iterations_per_sample"] = iterations
            for s in synthetic:
                model_seconds[s] = step["samples" if s in ("gpu", "cpu") else "tiles"]
            print("model step T: " + ", ".join(f"{s} {model_seconds[s] * 1e3:.0f} ms" for s in synthetic)
                  + (f" (cpu: {iterations} FFT iterations)" if "cpu" in synthetic else "")
                  + "; hand-over alone: " + ", ".join(f"{k} {handover[k]:.2f} s" for k in kinds),
                  flush=True)
            # 2. and 3. the model alone, and the loop of each engine.
            print("model alone and the loop:", flush=True)
            loops = [{**base, "scenario": s, "kind": "samples" if s in ("gpu", "cpu") else "tiles",
                      "engine": e, "phase": "loop", "seconds": model_seconds[s],
                      "iterations": iterations} for s in synthetic for e in (MODEL, *engines)]
            results += run_tasks(loops, args, root, n * sample_bytes)
        if "careamics" in scenarios:
            cshape = tuple(args.careamics_shape)
            threads = args.careamics_threads or "torch's default"
            print(f"scenario careamics: CAREamics N2V ({CAREAMICS_FILTERS} base filters) predicting "
                  f"{cshape} float32, tiles {args.careamics_tile} overlap {args.careamics_overlap}, "
                  f"batches of {args.careamics_batch}, torch threads: {threads}", flush=True)
            ctask = {"careamics_shape": list(cshape), "careamics_tile": list(args.careamics_tile),
                     "careamics_overlap": list(args.careamics_overlap),
                     "careamics_batch": args.careamics_batch,
                     "careamics_threads": args.careamics_threads, "noise": args.noise,
                     "in_flight": args.in_flight}
            prep = spawn({"worker": "careamics-prepare", "root": str(root), **ctask}, root)
            info["careamics"] = prep
            print(f"  trained; {prep['tiles']} predictions in {prep['batches']} batches "
                  f"(captured in {prep['capture_s']:.1f} s)", flush=True)
            cbase = {"worker": "careamics", **ctask, "scenario": "careamics", "kind": "careamics",
                     "layout": prep["layout"], "checkpoint": prep["checkpoint"],
                     "input": prep["input"], "records": prep["records"]}
            cbytes = 4 * math.prod(cshape)
            print("writer alone (CAREamics' predictions replayed):", flush=True)
            cengines = [e for e in engines if e in CAREAMICS_ENGINES]
            results += run_tasks([{**cbase, "engine": e, "phase": "alone"} for e in cengines],
                                 args, root, cbytes)
            print("model alone and the loop:", flush=True)
            results += run_tasks([{**cbase, "engine": e, "phase": "loop"} for e in (MODEL, *cengines)],
                                 args, root, cbytes)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    table = summarize(results, scenarios, engines, model_seconds)
    lines = verdict(table)
    libs, lib_lines = library_lines(results)
    loads = [r["load_before"] for r in results]
    if loads:
        lib_lines.append(f"machine load (1-min average before each run): median "
                         f"{statistics.median(loads):.1f}, max {max(loads):.1f} on "
                         f"{os.cpu_count()} cores")
        if statistics.median(loads) > (os.cpu_count() or 1) + 0.5:
            lib_lines.append("WARNING: other processes kept the machine busy: the timings "
                             "are not reliable")
    print()
    for line in lib_lines:
        print(line)
    print()
    print_table(table)
    print()
    for line in lines:
        print(line)
    if args.json:
        saved = {k: v for k, v in vars(args).items() if k != "worker"}
        Path(args.json).write_text(json.dumps(
            {"args": saved, "library": libs, "info": info, "model_step_s": model_seconds,
             "results": results, "summary": table, "verdict": lines}, indent=2, default=str))
    return 0 if all(r["verified"] for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
