"""Write S samples of 1x32x512x512 float32 as overlapping, unaligned YX tiles.

The requirement (issue): unaligned 200x200 tiles with overlap on the 64x1x32x512x512
float32 data reach at least 0.9x of the library's own per-sample throughput, measured in
the same run next to plain zarr-python tile writes (about 0.25x today).

Tiles follow CAREamics' geometry (``ngff_writer.tiling``, ``shared/reference/careamics.md``):
per sample 4x4 tiles of 32x200x200 (full z, one channel), overlap 48 in y and x, each
cut from the generated sample (a fresh copy, like a model's output) and written with its
valid part only (crop mode). The valid parts tile the sample exactly, so the stored image
must equal the samples bit for bit. Chunks 1x1x16x256x256: every tile boundary is
unaligned and most chunks are covered by 2-4 tiles.

Engines (each run in its own fresh subprocess, writing to a fresh directory on local disk):

``ngff-samples``           ``write_sample(i, x)`` per sample: the reference (1.0)
``ngff-tiles``             ``write_tile(i, tile, crop_start=, crop_size=, stitch_start=)``,
                           tiles row-major per sample, samples in order
``ngff-tiles-shuffled``    the same, tiles of each sample in a random order
``zarr-tiles``             ``arr[i, :, z0:z1, y0:y1, x0:x1] = valid`` per tile (default
                           pipeline; partial chunks are read, merged and rewritten)
``tensorstore-tiles``      zarr3 driver, ``arr[...].write(valid).result()`` per tile
``tensorstore-tiles-txn``  the same writes inside one transaction per sample, committed
                           at the end of the sample (partial chunks merged in memory)

Only the write calls (plus ``close`` for ngff-writer, the commits for the transaction
engine) are timed; tile cutting and sample generation are not. Throughput is
``S * sample bytes / timed seconds`` in MB/s (MB = 10**6 bytes). Peak RSS is the worker's
``VmHWM``; "max buf" is the largest ``Image.buffered_bytes`` seen after any write (tile
parts held in memory until their chunk is whole).

Usage::

    python benchmarks/bench_tiles.py                 # 64 samples, 3 repeats, all engines
    python benchmarks/bench_tiles.py --quick         # 8 samples, 1 repeat (smoke run)
    python benchmarks/bench_tiles.py --engines ngff-samples,ngff-tiles --repeats 5 --json r.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    CHUNKS,
    MB,
    SAMPLE_SHAPE,
    Timer,
    arguments,
    measure,
    median,
    paired,
    parse,
    report,
    resident_source,
    rss_when_doubled,
    run_repeats,
    run_worker,
    summary_row,
    tensorstore_spec,
    zarr_codec,
)

ENGINES = ("ngff-samples", "ngff-tiles", "ngff-tiles-shuffled", "zarr-tiles",
           "tensorstore-tiles", "tensorstore-tiles-txn")
REFERENCE = "ngff-samples"
BASELINE = "zarr-tiles"
TARGET = "ngff-tiles"
REQUIRED_RATIO = 0.9
SHUFFLE_SEED = 2


# ---- tile geometry: CAREamics' layout, from ngff_writer.tiling -------------------------------
@dataclass(frozen=True)
class Tile:
    """One tile of a ``(z, y, x)`` sample: where to cut it, and its valid part."""

    cut: tuple[slice, ...]  # the tile in the sample, (c, z, y, x)
    crop_start: tuple[int, ...]  # (z, y, x), relative to the tile
    crop_size: tuple[int, ...]
    stitch_start: tuple[int, ...]  # (z, y, x), in the sample

    @property
    def crop(self) -> tuple[slice, ...]:
        """The valid part in the tile, (c, z, y, x)."""
        return (slice(None), *(slice(a, a + n) for a, n in zip(self.crop_start, self.crop_size)))

    @property
    def stitch(self) -> tuple[slice, ...]:
        """Where the valid part lands in the sample, (c, z, y, x)."""
        return (slice(None), *(slice(a, a + n) for a, n in zip(self.stitch_start, self.crop_size)))


def sample_tiles(space: tuple[int, ...], patch: tuple[int, ...], overlap: tuple[int, ...]) -> list[Tile]:
    """Every tile of a sample with space shape ``space`` (z, y, x), row-major."""
    from ngff_writer.tiling import tiles

    return [Tile((slice(None), *t.region), t.crop_start, t.crop_size, t.stitch_start)
            for t in tiles(space, patch, overlap)]


def check_geometry(tiles: list[Tile], space: tuple[int, ...]) -> None:
    """The valid parts cover the sample exactly once (so the stitched sample is the sample)."""
    import numpy as np

    count = np.zeros(space, np.uint8)
    for t in tiles:
        count[t.stitch[1:]] += 1
    if not (count == 1).all():
        raise AssertionError("tile valid parts do not cover the sample exactly once")


# ---- engines --------------------------------------------------------------------------------
def _shape(n: int) -> tuple[int, ...]:
    return (n, *SAMPLE_SHAPE)


class Engine:
    """One writer: ``write_tile`` per tile (or ``write_sample``), ``end_sample``, ``close``."""

    per_sample = False  # write whole samples instead of tiles
    shuffled = False

    def write_sample(self, i: int, sample: Any) -> None:
        raise NotImplementedError

    def write_tile(self, i: int, tile: Any, t: Tile) -> None:
        raise NotImplementedError

    def end_sample(self, i: int) -> None:
        pass

    def close(self) -> None:
        pass

    def buffered_bytes(self) -> int | None:
        return None


class NgffEngine(Engine):
    def __init__(self, path: Path, n: int, codec: str) -> None:
        import ngff_writer as nw

        self.out = nw.open_output(str(path), mode="w")
        # No pyramid: the other engines write level 0 only (bench_pyramid.py measures levels).
        self.img = self.out.create_image("pred", shape=_shape(n), axes="sczyx", dtype="float32",
                                         chunks=CHUNKS, compressor=codec, pyramid=None)

    def write_sample(self, i: int, sample: Any) -> None:
        self.img.write_sample(i, sample)

    def write_tile(self, i: int, tile: Any, t: Tile) -> None:
        self.img.write_tile(i, tile, crop_start=t.crop_start, crop_size=t.crop_size,
                            stitch_start=t.stitch_start)

    def close(self) -> None:
        self.out.close()

    def buffered_bytes(self) -> int | None:
        return self.img.buffered_bytes


class NgffSamples(NgffEngine):
    per_sample = True


class NgffTilesShuffled(NgffEngine):
    shuffled = True


class ZarrTiles(Engine):
    def __init__(self, path: Path, n: int, codec: str) -> None:
        import zarr

        self.arr = zarr.create_array(str(path), shape=_shape(n), dtype="float32", chunks=CHUNKS,
                                     compressors=zarr_codec(codec), fill_value=0, zarr_format=3)

    def write_tile(self, i: int, tile: Any, t: Tile) -> None:
        self.arr[(i, *t.stitch)] = tile[t.crop]


class TensorstoreTiles(Engine):
    def __init__(self, path: Path, n: int, codec: str) -> None:
        import tensorstore as ts

        self.arr = ts.open(tensorstore_spec(path, _shape(n), codec), create=True,
                           delete_existing=True).result()

    def write_tile(self, i: int, tile: Any, t: Tile) -> None:
        self.arr[(i, *t.stitch)].write(tile[t.crop]).result()


class TensorstoreTilesTxn(TensorstoreTiles):
    def __init__(self, path: Path, n: int, codec: str) -> None:
        super().__init__(path, n, codec)
        self.txn: Any = None

    def write_tile(self, i: int, tile: Any, t: Tile) -> None:
        import tensorstore as ts

        if self.txn is None:
            self.txn = ts.Transaction()
        self.arr.with_transaction(self.txn)[(i, *t.stitch)].write(tile[t.crop]).result()

    def end_sample(self, i: int) -> None:
        if self.txn is not None:
            self.txn.commit_async().result()
            self.txn = None


ENGINE_CLASSES: dict[str, type[Engine]] = {
    "ngff-samples": NgffSamples,
    "ngff-tiles": NgffEngine,
    "ngff-tiles-shuffled": NgffTilesShuffled,
    "zarr-tiles": ZarrTiles,
    "tensorstore-tiles": TensorstoreTiles,
    "tensorstore-tiles-txn": TensorstoreTilesTxn,
}


def run_engine(engine: Engine, n: int, tiles: list[Tile], source: Any, timer: Timer) -> dict:
    """Write ``n`` samples through ``engine``; time only its calls. Returns counters."""
    import numpy as np

    order_rng = np.random.default_rng(SHUFFLE_SEED)
    max_buffered = 0
    writes = 0
    for i in range(n):
        sample = source.sample(i)
        if engine.per_sample:
            with timer:
                engine.write_sample(i, sample)
            writes += 1
            continue
        order = list(range(len(tiles)))
        if engine.shuffled:
            order_rng.shuffle(order)
        for k in order:
            t = tiles[k]
            tile = sample[t.cut].copy()  # a model hands over a fresh array per tile
            with timer:
                engine.write_tile(i, tile, t)
            writes += 1
            buffered = engine.buffered_bytes()
            if buffered is not None:
                max_buffered = max(max_buffered, buffered)
        with timer:
            engine.end_sample(i)
    with timer:
        engine.close()
    return {"writes": writes,
            "max_buffered_mb": max_buffered / MB if engine.buffered_bytes() is not None else None}


def _verify(engine: str, path: Path, n: int, source: Any) -> dict:
    """After measuring: the last sample reads back bit-identical to a regenerated copy (the
    valid parts tile it exactly), and (ngff-writer) the image is complete."""
    import numpy as np
    import zarr

    info: dict[str, Any] = {}
    if engine.startswith("ngff"):
        import ngff_writer as nw

        with nw.open_output(str(path), mode="r") as out:
            info["complete"] = out["pred"].complete
        path = path / "pred" / "0"
    arr = zarr.open_array(str(path), mode="r")
    got = np.asarray(arr[n - 1])
    source.rng = np.random.default_rng(1)  # replay the noise offsets
    for i in range(n):
        want = source.sample(i)
    info["verified"] = bool(np.array_equal(got, want)) and info.get("complete", True)
    return info


def worker(engine: str, n: int, codec: str, path: Path, noise: float, tile: int,
           overlap: int) -> dict:
    """Run one engine in this (fresh) process and return its measurements."""
    import numpy  # noqa: F401  (imported before the baseline, like every engine's modules)

    if engine.startswith("tensorstore"):
        import tensorstore  # noqa: F401
    else:
        import zarr  # noqa: F401
    if engine.startswith("ngff"):
        import ngff_writer  # noqa: F401
    space = SAMPLE_SHAPE[1:]
    tiles = sample_tiles(space, (space[0], tile, tile), (0, overlap, overlap))
    check_geometry(tiles, space)
    source = resident_source(noise)

    def run(timer: Timer) -> dict:
        counters = run_engine(ENGINE_CLASSES[engine](path, n, codec), n, tiles, source, timer)
        return {"tile": tile, "overlap": overlap, "tiles_per_sample": len(tiles), **counters}

    return measure(engine, n, codec, path, source, run, lambda: _verify(engine, path, n, source))


# ---- orchestration --------------------------------------------------------------------------
def run_one(engine: str, args: argparse.Namespace, root: Path, n: int | None = None) -> dict:
    n = args.samples if n is None else n
    path = Path(tempfile.mkdtemp(prefix=f"{engine}-{n}-", dir=root)) / "out.zarr"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine,
           "--samples", str(n), "--codec", args.codec, "--noise", str(args.noise),
           "--tile", str(args.tile), "--overlap", str(args.overlap), "--path", str(path)]
    return run_worker(cmd, path, f"{engine} (S={n})")


def summarize(results: list[dict], engines: list[str]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["engine"], []).append(r)
    refs = {k: median(groups[k], "mb_s") for k in (REFERENCE, BASELINE) if k in groups}
    table = []
    for engine in sorted(groups, key=engines.index):
        rows = groups[engine]
        bufs = [r["max_buffered_mb"] for r in rows if r["max_buffered_mb"] is not None]
        row = {**summary_row(rows), "writes": rows[0]["writes"],
               "max_buffered_mb": max(bufs) if bufs else None}
        for key, ref in refs.items():
            row[f"x_{key}"] = row["mb_s_median"] / ref
        table.append(row)
    return table


def print_table(table: list[dict], args: argparse.Namespace, tiles_per_sample: int) -> None:
    head = (f"{'engine':<23}{'MB/s med':>9}{'(min-max)':>12}{'x ngff-s':>9}{'x zarr-t':>9}"
            f"{'peak RSS':>9}{'-base':>7}{'max buf':>8}{'ratio':>6}{'ok':>3}")
    print(f"\ncodec={args.codec}  S={args.samples} x {SAMPLE_SHAPE} float32  chunks={CHUNKS}  "
          f"tiles {args.tile}x{args.tile} overlap {args.overlap} ({tiles_per_sample}/sample)  "
          f"repeats={args.repeats}")
    print("(MB = 1e6 bytes; medians; x = ratio of medians; RSS = absolute VmHWM; "
          "-base = over post-import baseline; max buf = max Image.buffered_bytes)")
    print(head)
    print("-" * len(head))
    for r in table:
        def x(key: str, r: dict = r) -> str:
            return f"{r[key]:.2f}" if key in r else "-"
        rng = f"({r['mb_s_min']:.0f}-{r['mb_s_max']:.0f})"
        buf = f"{r['max_buffered_mb']:.0f}" if r["max_buffered_mb"] is not None else "-"
        print(f"{r['engine']:<23}{r['mb_s_median']:>9.1f}{rng:>12}{x('x_' + REFERENCE):>9}"
              f"{x('x_' + BASELINE):>9}{r['peak_rss_mb_median']:>9.0f}"
              f"{r['peak_over_baseline_mb_median']:>7.0f}{buf:>8}{r['compression_ratio']:>6.2f}"
              f"{'y' if r['verified'] else 'N':>3}")


def verdict(results: list[dict]) -> list[str]:
    """The requirement on the per-repeat paired ratios (both engines ran back to back, so
    machine-wide slowdowns largely cancel), plus informational ratios."""
    lines = []

    def fmt(ps: list[float]) -> str:
        return ", ".join(f"{p:.3f}" for p in ps)

    for a, b in [(TARGET, BASELINE), ("ngff-tiles-shuffled", REFERENCE), (BASELINE, REFERENCE)]:
        ps = paired(results, a, b)
        if ps:
            lines.append(f"{a} / {b} = {statistics.median(ps):.3f} (per repeat: {fmt(ps)})")
    ps = paired(results, TARGET, REFERENCE)
    if ps:
        ratio = statistics.median(ps)
        lines.append(f"{TARGET} / {REFERENCE} = {ratio:.3f} -> "
                     f"{'PASS' if ratio >= REQUIRED_RATIO else 'FAIL'} (>= {REQUIRED_RATIO}; "
                     f"median of per-repeat ratios: {fmt(ps)})")
    bad = sorted({r["engine"] for r in results if not r["verified"]})
    if bad:
        lines.append(f"WARNING: read-back check failed for {', '.join(bad)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = arguments(__doc__, ENGINES)
    p.add_argument("--tile", type=int, default=200, help="tile size in y and x")
    p.add_argument("--overlap", type=int, default=48, help="tile overlap in y and x")
    p.add_argument("--also-double", action="store_true",
                   help=f"then run {TARGET} once at 2x samples: its extra peak RSS must not grow")
    args, engines = parse(p, argv, ENGINES)
    if args.worker:
        print(json.dumps(worker(args.worker, args.samples, args.codec, Path(args.path), args.noise,
                                args.tile, args.overlap)))
        return 0
    n = args.samples
    gb = n * 4 * 32 * 512 * 512 / 2**30
    print(f"{len(engines)} runs x {args.repeats} repeats; {gb:.1f} GiB per run at S={n}",
          flush=True)
    def line(rep: int, engine: str, r: dict) -> str:
        buf = f"{r['max_buffered_mb']:6.0f}" if r["max_buffered_mb"] is not None else "     -"
        return (f"  repeat {rep} {engine:<22} {r['mb_s']:7.1f} MB/s  "
                f"peak RSS {r['peak_rss_mb']:6.0f} MB (base {r['baseline_rss_mb']:.0f})  "
                f"max buf {buf} MB  {r['write_s']:.1f} s  "
                f"{'ok' if r['verified'] else 'MISMATCH'}")

    results = run_repeats(engines, args, "tiles", lambda e, root: run_one(e, args, root), line)
    table = summarize(results, engines)
    tiles_per_sample = results[0]["tiles_per_sample"]
    lines = verdict(results)
    if args.also_double and TARGET in engines:
        lines.append(rss_when_doubled(args, TARGET, results, lambda n, root: run_one(TARGET, args, root, n)))
    report(args, results, table, lambda: print_table(table, args, tiles_per_sample), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
