"""Write S samples of 1x32x512x512 float32 plus two pyramid levels (2x2 mean in y and x).

What it answers: what a multiscale image costs with ngff-writer, which reduces every
stored chunk into the levels below while it writes (no read-back), next to writers that
build the levels after level 0 is written (reading it back) or from an in-memory copy.

Engines (each run in its own fresh subprocess, writing to a fresh directory on local disk):

``ngff-writer``       ``create_image(..., pyramid={"levels": 3})``, ``write_sample`` per sample
``ngff-writer-flat``  the same with ``pyramid=None``: what the levels add
``zarr+dask``         zarr ``arr[i] = x`` per sample, then per level ``da.coarsen(np.mean)``
                      of the level above (read back from the store) and ``da.to_zarr``
``tensorstore``       zarr3 driver; per sample: write level 0, and each level from
                      ``ts.downsample(..., "mean")`` of the sample in memory
``ome-zarr-py``       keep every sample, ``np.stack``, then ``ome_zarr.writer.write_image``
                      with ``scale_factors=(2, 4)`` and ``method=local_mean``

Every engine uses the same chunks (level chunks clipped to the level), codec and levels
(512 -> 256 -> 128 in y and x). ngff-writer and ome-zarr-py also write OME-NGFF metadata;
zarr+dask and tensorstore write bare arrays. Timed: the write calls, the pyramid building
and the final close (sample generation is not). Throughput counts level-0 bytes only.
Each worker then checks the last sample at every level against a 2x2 mean computed here
with numpy (``ok``; float32 tolerance, as engines sum in different orders).

Usage::

    python benchmarks/bench_pyramid.py --quick                # smoke run: S=8, 1 repeat
    python benchmarks/bench_pyramid.py                        # S=64, 3 repeats, all engines
    python benchmarks/bench_pyramid.py --engines ngff-writer,zarr+dask --json pyr.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    CHUNKS,
    SAMPLE_SHAPE,
    Timer,
    arguments,
    measure,
    paired,
    parse,
    report,
    resident_source,
    rss_when_doubled,
    run_repeats,
    run_worker,
    summary_row,
    tensorstore_levels,
    zarr_codec,
)
from _common import median as _median

ENGINES = ("ngff-writer", "ngff-writer-flat", "zarr+dask", "tensorstore", "ome-zarr-py")
LEVELS = 3  # level 0 and two below, each halving y and x


def _shape(n: int, level: int = 0) -> tuple[int, ...]:
    c, z, y, x = SAMPLE_SHAPE
    return (n, c, z, y >> level, x >> level)


def _chunks(level: int) -> tuple[int, ...]:
    return tuple(min(c, s) for c, s in zip(CHUNKS, _shape(1, level), strict=True))


def _mean2(a: Any) -> Any:
    """2x2 mean over the last two axes (the reference, and what the others compute)."""
    import numpy as np

    *lead, y, x = a.shape
    return a.reshape(*lead, y // 2, 2, x // 2, 2).mean(axis=(-3, -1), dtype=np.float64).astype(a.dtype)


# ---- workers --------------------------------------------------------------------------------
def run_ngff_writer(path: Path, n: int, codec: str, source: Any, timer: Timer,
                    levels: int = LEVELS) -> None:
    import ngff_writer as nw

    out = nw.open_output(str(path), mode="w")
    img = out.create_image("pred", shape=_shape(n), axes="sczyx", dtype="float32",
                           chunks=CHUNKS, compressor=codec,
                           pyramid={"levels": levels} if levels > 1 else None)
    for i in range(n):
        sample = source.sample(i)
        with timer:
            img.write_sample(i, sample)
    with timer:
        out.close()


def run_ngff_writer_flat(path: Path, n: int, codec: str, source: Any, timer: Timer) -> None:
    run_ngff_writer(path, n, codec, source, timer, levels=1)


def _zarr_levels(path: Path, n: int, codec: str) -> list[Any]:
    import zarr

    return [zarr.create_array(str(path / str(k)), shape=_shape(n, k), dtype="float32",
                              chunks=_chunks(k), compressors=zarr_codec(codec), fill_value=0,
                              zarr_format=3) for k in range(LEVELS)]


def run_zarr_dask(path: Path, n: int, codec: str, source: Any, timer: Timer) -> None:
    import dask.array as da
    import numpy as np

    arrays = _zarr_levels(path, n, codec)
    for i in range(n):
        sample = source.sample(i)
        with timer:
            arrays[0][i] = sample
    with timer:
        for k in range(1, LEVELS):
            above = da.from_zarr(arrays[k - 1])
            level = da.coarsen(np.mean, above, {3: 2, 4: 2}).astype(np.float32)
            da.to_zarr(level.rechunk(_chunks(k)), arrays[k])


def run_tensorstore(path: Path, n: int, codec: str, source: Any, timer: Timer) -> None:
    write = tensorstore_levels(path, n, LEVELS, codec)
    for i in range(n):
        sample = source.sample(i)
        with timer:
            write(i, sample)


def run_ome_zarr_py(path: Path, n: int, codec: str, source: Any, timer: Timer) -> None:
    import numpy as np
    import zarr
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image

    cache = []
    for i in range(n):
        sample = source.sample(i)
        with timer:
            cache.append(sample.copy())  # a model returns a fresh array per sample
    with timer:
        stacked = np.stack(cache)
        del cache[:]
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        # "sczyx" is not an NGFF axes order; S goes where time goes (the first axis).
        write_image(stacked, group, scale_factors=(2, 4), method=Methods.LOCAL_MEAN,
                    axes="tczyx", storage_options={"chunks": CHUNKS,
                                                   "compressor": zarr_codec(codec)})
    del stacked


RUNNERS = {
    "ngff-writer": run_ngff_writer,
    "ngff-writer-flat": run_ngff_writer_flat,
    "zarr+dask": run_zarr_dask,
    "tensorstore": run_tensorstore,
    "ome-zarr-py": run_ome_zarr_py,
}


def _verify(engine: str, path: Path, n: int, source: Any) -> dict:
    """Check every level of the last sample against a 2x2 mean of a regenerated copy."""
    import numpy as np
    import zarr

    info: dict[str, Any] = {}
    levels = 1 if engine == "ngff-writer-flat" else LEVELS
    if engine.startswith("ngff-writer"):
        import ngff_writer as nw

        with nw.open_output(str(path), mode="r") as out:
            info["complete"] = out["pred"].complete
        path = path / "pred"
    source.rng = np.random.default_rng(1)  # replay the noise offsets
    for i in range(n):
        want = source.sample(i).copy()
    paths = [str(k) for k in range(levels)]
    if engine == "ome-zarr-py":  # its dataset paths are its own choice: read them
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
        paths = [d["path"] for d in attrs["ome"]["multiscales"][0]["datasets"]]
    ok, worst = len(paths) == levels, 0.0
    for k, name in enumerate(paths):
        arr = zarr.open_array(str(path / name), mode="r")
        # Chunks as stored, clipped to the level (ome-zarr-py keeps level 0's chunk shape).
        stored = tuple(min(c, s) for c, s in zip(arr.chunks, arr.shape, strict=True))
        ok = ok and arr.shape == _shape(n, k) and stored == _chunks(k)
        if k == 0:
            info["codecs"] = [c.to_dict() for c in arr.metadata.codecs]
        else:
            want = _mean2(want)
        got = np.asarray(arr[n - 1])
        worst = max(worst, float(np.abs(got - want).max()))
        ok = ok and bool(np.allclose(got, want, rtol=1e-5, atol=1e-6))
        ok = ok and (k > 0 or bool(np.array_equal(got, want)))  # level 0 is exact
    info["verified"] = bool(ok and info.get("complete", True))
    info["max_abs_error"] = worst
    return info


def worker(engine: str, n: int, codec: str, path: Path, noise: float) -> dict:
    """Run one engine in this (fresh) process and return its measurements."""
    import numpy  # noqa: F401  (imported before the baseline, like every engine's modules)
    import zarr  # noqa: F401

    if engine == "tensorstore":
        import tensorstore  # noqa: F401
    elif engine == "zarr+dask":
        import dask.array  # noqa: F401
    elif engine == "ome-zarr-py":
        import ome_zarr.writer  # noqa: F401
    else:
        import ngff_writer  # noqa: F401
    source = resident_source(noise)
    return measure(engine, n, codec, path, source,
                   lambda timer: RUNNERS[engine](path, n, codec, source, timer),
                   lambda: _verify(engine, path, n, source))


# ---- orchestration --------------------------------------------------------------------------
def run_one(engine: str, n: int, args: argparse.Namespace, root: Path) -> dict:
    path = Path(tempfile.mkdtemp(prefix=f"{engine.replace('+', '-')}-", dir=root)) / "out.zarr"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine,
           "--samples", str(n), "--codec", args.codec, "--noise", str(args.noise),
           "--path", str(path)]
    return run_worker(cmd, path, f"{engine} (S={n})")


def summarize(results: list[dict], engines: list[str]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["engine"], []).append(r)
    medians = {e: _median(rows, "mb_s") for e, rows in groups.items()}
    table = []
    for engine in [e for e in engines if e in groups]:
        rows = groups[engine]
        row = {**summary_row(rows), "max_abs_error": max(r["max_abs_error"] for r in rows)}
        for ref in ("ngff-writer-flat", "zarr+dask"):
            if ref in medians:
                row[f"vs_{ref}"] = medians[engine] / medians[ref]
        table.append(row)
    return table


def print_table(table: list[dict], args: argparse.Namespace) -> None:
    head = (f"{'engine':<18}{'MB/s med':>10}{'(min-max)':>14}{'x flat':>8}{'x dask':>8}"
            f"{'peak RSS':>10}{'peak-base':>10}{'disk MB':>9}{'max err':>10}{'ok':>4}")
    print(f"\ncodec={args.codec}  S={args.samples} x {SAMPLE_SHAPE} float32  chunks={CHUNKS}  "
          f"levels 0-{LEVELS - 1} (2x2 mean)  repeats={args.repeats}  (MB = 1e6 bytes; medians)")
    print(head)
    print("-" * len(head))
    for r in table:
        flat = f"{r['vs_ngff-writer-flat']:.2f}" if "vs_ngff-writer-flat" in r else "-"
        dask = f"{r['vs_zarr+dask']:.2f}" if "vs_zarr+dask" in r else "-"
        rng = f"({r['mb_s_min']:.0f}-{r['mb_s_max']:.0f})"
        print(f"{r['engine']:<18}{r['mb_s_median']:>10.1f}{rng:>14}{flat:>8}{dask:>8}"
              f"{r['peak_rss_mb_median']:>10.0f}{r['peak_over_baseline_mb_median']:>10.0f}"
              f"{r['disk_mb_median']:>9.0f}{r['max_abs_error']:>10.1e}"
              f"{'y' if r['verified'] else 'N':>4}")


def verdict(results: list[dict], engines: list[str]) -> list[str]:
    lines = []
    if "ngff-writer" not in engines:
        return lines
    for other in [e for e in engines if e != "ngff-writer"]:
        ratios = paired(results, "ngff-writer", other)
        if ratios:
            lines.append(f"throughput ngff-writer / {other}: median of paired repeats "
                         f"{statistics.median(ratios):.2f} "
                         f"({', '.join(f'{v:.2f}' for v in ratios)})")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = arguments(__doc__, ENGINES)
    p.add_argument("--also-double", action="store_true",
                   help="then run ngff-writer once at 2x samples: its extra peak RSS must not grow")
    args, engines = parse(p, argv, ENGINES)
    if args.worker:
        print(json.dumps(worker(args.worker, args.samples, args.codec, Path(args.path), args.noise)))
        return 0
    n = args.samples
    print(f"{len(engines)} engines x {args.repeats} repeats; "
          f"{n * 4 * 32 * 512 * 512 / 2**30:.1f} GiB of level 0 per run", flush=True)
    results = run_repeats(
        engines, args, "pyramid", lambda e, root: run_one(e, n, args, root),
        lambda rep, e, r: (f"  repeat {rep} {e:<18} {r['mb_s']:7.1f} MB/s  peak RSS "
                           f"{r['peak_rss_mb']:6.0f} MB  {r['write_s']:.1f} s  "
                           f"{'ok' if r['verified'] else 'NOT VERIFIED'}"))
    table = summarize(results, engines)
    lines = verdict(results, engines)
    if args.also_double and "ngff-writer" in engines:
        lines.append(rss_when_doubled(args, "ngff-writer", results,
                                      lambda k, root: run_one("ngff-writer", k, args, root)))
    report(args, results, table, lambda: print_table(table, args), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
