"""CAREamics' prediction stream: ngff-writer's drop-in strategy against cache-then-write.

S samples of 1x16x512x512 float32 predictions of one image (axes ``SCZYX``, ``data_idx``
0, source ``"array"``) arrive as decollated batches of 4 ``ImageRegionData``, untiled (one
prediction per sample, ``PatchSpecs``) or tiled (256x256 tiles with overlap 32 in YX, the
whole Z: 9 tiles per sample, ``TileSpecs``), and are written by

``ngff-writer``      ``OmeZarrWriteStrategy(chunks=...)``: ``write_batch`` per batch, then
                     ``finalize()``; nothing is cached per image. Its default
                     ``pyramid="auto"`` also builds two lower levels, which the cache
                     does not: memory, not speed, is what this compares
``careamics-cache``  what CAREamics' strategies do: cache every prediction of a ``data_idx``;
                     when all S samples (all tiles) arrived, ``np.stack`` them (untiled) or
                     stitch them into a full float32 canvas (tiled), then one zarr write

Both write zarr v3 with the same chunks (1x1x16x256x256) and codec (Blosc zstd-3 +
shuffle). Each run is a fresh subprocess; its peak RSS is ``VmHWM`` (from
``/proc/self/status``), reported absolute and over the baseline taken after imports and
sample-generator setup. Timed: the ``write_batch`` calls and ``finalize`` (the model's
output arrays are made outside the timer). MB = 10**6 bytes. After measuring, each worker
reads back the last sample and checks it is bit-identical to the prediction (``ok``).

Expected: ngff-writer's peak is flat in S; the cache grows by about two samples per
sample (the cached predictions plus the stacked copy or canvas).

Usage::

    python benchmarks/bench_careamics.py                      # S = 8, 16, 32; tiled and untiled
    python benchmarks/bench_careamics.py --samples 8,16 --variants tiled --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    CHUNKS,
    MB,
    Timer,
    current_rss,
    library_fingerprint,
    library_lines,
    peak_rss,
    run_repeats,
    run_worker,
    zarr_codec,
)
from _common import median as _median

from ngff_writer.careamics import ImageRegionData

SAMPLE = (1, 16, 512, 512)  # C Z Y X of one prediction
TILE, OVERLAP = (16, 256, 256), (0, 32, 32)  # Z Y X
BATCH = 4
ENGINES = ("ngff-writer", "careamics-cache")
VARIANTS = ("tiled", "untiled")


# ---- the prediction stream ------------------------------------------------------------------
def stream(n: int, variant: str, source: Any) -> Iterator[ImageRegionData]:
    """Every prediction in CAREamics' order; ``data`` is a fresh array, as a model returns."""
    from ngff_writer.tiling import tiles as tile_grid

    space = SAMPLE[1:]
    shape = (n, *SAMPLE)
    common = dict(source="array", data_shape=shape, dtype="float32", axes="SCZYX", target_axes="SCZYX",
                  original_data_shape=shape, additional_metadata={})
    tiles = list(tile_grid(space, TILE, OVERLAP))
    for s in range(n):
        sample = source.sample(s)
        if variant == "untiled":
            spec = {"data_idx": 0, "sample_idx": s, "coords": (0, 0, 0), "patch_size": space}
            yield ImageRegionData(sample.copy(), region_spec=spec, **common)
            continue
        for tile in tiles:
            spec = {"data_idx": 0, "sample_idx": s, "coords": tile.start, "patch_size": tile.size,
                    "crop_coords": tile.crop_start, "crop_size": tile.crop_size,
                    "stitch_coords": tile.stitch_start, "total_tiles": len(tiles) * n}
            yield ImageRegionData(sample[(slice(None), *tile.region)].copy(), region_spec=spec, **common)


def batched(preds: Iterator[ImageRegionData]) -> Iterator[list[ImageRegionData]]:
    batch = []
    for p in preds:
        batch.append(p)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- the CAREamics-style strategy -----------------------------------------------------------
class CacheThenWrite:
    """CAREamics' approach: cache per ``data_idx`` until complete, assemble, write once."""

    def __init__(self) -> None:
        self.cache: dict[int, list[ImageRegionData]] = {}

    def write_batch(self, dirpath: Path, predictions: list[ImageRegionData]) -> None:
        for p in predictions:
            self.cache.setdefault(int(p.region_spec["data_idx"]), []).append(p)
        for idx in list(self.cache):
            preds = self.cache[idx]
            first = preds[0]
            total = first.region_spec.get("total_tiles", first.data_shape[0])
            if len(preds) == total:
                self._write(dirpath / f"array_{idx}.zarr", preds)
                del self.cache[idx]

    @staticmethod
    def _write(path: Path, preds: list[ImageRegionData]) -> None:
        import numpy as np
        import zarr

        first = preds[0]
        if "crop_coords" in first.region_spec:  # stitch every tile into a full canvas
            image = np.zeros((first.data_shape[0], *first.data.shape[:1], *first.data_shape[2:]),
                             dtype=np.float32)
            for p in preds:
                spec = p.region_spec
                crop = tuple(slice(c, c + k) for c, k in zip(spec["crop_coords"], spec["crop_size"]))
                dest = tuple(slice(c, c + k) for c, k in zip(spec["stitch_coords"], spec["crop_size"]))
                image[(spec["sample_idx"], slice(None), *dest)] = p.data[(slice(None), *crop)]
        else:
            image = np.stack([p.data for p in sorted(preds, key=lambda p: p.region_spec["sample_idx"])])
        arr = zarr.create_array(str(path), shape=image.shape, dtype="float32", chunks=CHUNKS,
                                compressors=zarr_codec("default"), fill_value=0, zarr_format=3)
        arr[:] = image


# ---- worker -------------------------------------------------------------------------------
def worker(engine: str, variant: str, n: int, out: Path) -> dict:
    """Run one engine on one stream in this (fresh) process and return its measurements."""
    import numpy as np
    import zarr
    from _samples import SampleSource

    import ngff_writer
    from ngff_writer.careamics import OmeZarrWriteStrategy

    source = SampleSource(SAMPLE, noise=0.01, seed=0)
    source.sample(0)  # make the buffer resident before the baseline
    source.rng = np.random.default_rng(1)
    baseline = current_rss()
    strategy: Any = OmeZarrWriteStrategy(chunks=CHUNKS) if engine == "ngff-writer" else CacheThenWrite()
    timer = Timer()
    t0 = time.perf_counter()
    for batch in batched(stream(n, variant, source)):
        with timer:
            strategy.write_batch(out, batch)
    if engine == "ngff-writer":
        with timer:
            incomplete = strategy.finalize()
        assert not incomplete, incomplete
    wall = time.perf_counter() - t0
    peak = peak_rss()

    # After measuring: the last sample reads back bit-identical (source.buf still holds it).
    if engine == "ngff-writer":
        with ngff_writer.open_output(out / "array_0.ome.zarr", mode="r") as o:
            complete = o[""].progress().complete
        arr = zarr.open_array(out / "array_0.ome.zarr" / "0", mode="r")
    else:
        complete = True
        arr = zarr.open_array(out / "array_0.zarr", mode="r")
    ok = complete and arr.shape == (n, *SAMPLE) and bool(np.array_equal(arr[n - 1], source.buf))
    nbytes = n * source.nbytes
    return {"engine": engine, "variant": variant, "samples": n, "bytes": nbytes,
            "write_s": timer.total, "wall_s": wall, "mb_s": nbytes / MB / timer.total,
            "peak_rss_mb": peak / MB, "baseline_rss_mb": baseline / MB,
            "peak_over_baseline_mb": (peak - baseline) / MB, "verified": ok, **library_fingerprint()}


# ---- orchestration ------------------------------------------------------------------------
def run_one(engine: str, variant: str, n: int, root: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"{engine}-{variant}-{n}-", dir=root)) / "out"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--variant", variant,
           "--samples", str(n), "--path", str(out)]
    return run_worker(cmd, out, f"{engine} {variant} (S={n})")


def summarize(results: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["variant"], r["engine"], r["samples"]), []).append(r)
    table = []
    for (variant, engine, n), rows in sorted(groups.items(), key=lambda kv: (
            VARIANTS.index(kv[0][0]), ENGINES.index(kv[0][1]), kv[0][2])):
        table.append({
            "variant": variant, "engine": engine, "samples": n, "repeats": len(rows),
            "image_mb": rows[0]["bytes"] / MB,
            "write_s": _median(rows, "write_s"), "mb_s": _median(rows, "mb_s"),
            "peak_rss_mb": _median(rows, "peak_rss_mb"),
            "peak_over_baseline_mb": _median(rows, "peak_over_baseline_mb"),
            "verified": all(r["verified"] for r in rows),
        })
    return table


def print_table(table: list[dict], repeats: int) -> None:
    head = (f"{'variant':<9}{'engine':<17}{'S':>4}{'image MB':>10}{'time s':>8}{'MB/s':>8}"
            f"{'peak RSS':>10}{'peak-base':>11}{'ok':>4}")
    print(f"\nprediction {SAMPLE} float32 per sample; tiles {TILE[1:]} overlap {OVERLAP[1:]}; "
          f"batches of {BATCH}; chunks {CHUNKS}; repeats={repeats} (medians; MB = 1e6 bytes)")
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['variant']:<9}{r['engine']:<17}{r['samples']:>4}{r['image_mb']:>10.0f}"
              f"{r['write_s']:>8.2f}{r['mb_s']:>8.0f}{r['peak_rss_mb']:>10.0f}"
              f"{r['peak_over_baseline_mb']:>11.0f}{'y' if r['verified'] else 'N':>4}")


def growth(table: list[dict]) -> list[str]:
    """Peak growth per extra sample between the smallest and largest S, per engine and variant."""
    lines = []
    sample_mb = 4 * SAMPLE[0] * SAMPLE[1] * SAMPLE[2] * SAMPLE[3] / MB
    for variant in VARIANTS:
        for engine in ENGINES:
            rows = sorted((r for r in table if (r["variant"], r["engine"]) == (variant, engine)),
                          key=lambda r: r["samples"])
            if len(rows) < 2:
                continue
            a, b = rows[0], rows[-1]
            slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["samples"] - a["samples"])
            lines.append(f"{variant:<9}{engine:<17} peak S={a['samples']} {a['peak_rss_mb']:.0f} MB -> "
                         f"S={b['samples']} {b['peak_rss_mb']:.0f} MB: {slope:+.1f} MB per sample "
                         f"({slope / sample_mb:.2f} x one sample of {sample_mb:.1f} MB)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", default="8,16,32", help="comma-separated values of S")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--settle", type=float, default=1.0, help="pause (after a sync) between runs")
    p.add_argument("--tmpdir", default=None, help="where outputs go (local disk; deleted)")
    p.add_argument("--json", default=None, help="save raw results and the summary here")
    p.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, args.variant, int(args.samples), Path(args.path))))
        return 0

    samples = [int(s) for s in args.samples.split(",")]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if set(variants) - set(VARIANTS) or set(engines) - set(ENGINES):
        p.error(f"choose variants from {VARIANTS} and engines from {ENGINES}")
    tasks = [(e, v, n) for v in variants for n in samples for e in engines]
    print(f"{len(tasks)} runs x {args.repeats} repeats", flush=True)
    results = run_repeats(
        tasks, args, "careamics", lambda t, root: run_one(*t, root),
        lambda rep, t, r: (f"  repeat {rep} {t[1]:<8} {t[0]:<16} S={t[2]:<3} {r['write_s']:6.2f} s  "
                           f"peak RSS {r['peak_rss_mb']:6.0f} MB (base {r['baseline_rss_mb']:.0f})"))
    table = summarize(results)
    print_table(table, args.repeats)
    print()
    for line in growth(table):
        print(line)
    _, lib = library_lines(results)
    for line in lib:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "summary": table}, indent=2))
    return 0 if all(r["verified"] for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
