"""Per-write cost against the number of samples S, bookkeeping objects, status time and S3.

The requirements (issue "Scale"): the cost of one write must not depend on how many
samples the image has. Over a stream of S = 1,000 / 10,000 / 100,000 samples of 64x64
float32 (one ``write_sample`` each), the mean time of the last 10% of writes is within
1.2x of the first 10%, ngff-writer's per-write time is at most plain zarr-python's, and
fewer than 1,000 bookkeeping objects exist at any time at S = 100,000 (one once final);
``progress()`` of such an image, on a read-only handle, takes under a second on local disk.

Engines (each run in its own fresh subprocess; all runs interleaved in one session):

``ngff-writer``      S samples of 64x64 float32, axes ``syx``, chunks 1x64x64, ``pyramid=None``:
                     ``write_sample(i, x)`` per sample, then ``close``
``zarr``             the same array with zarr-python: ``arr[i] = x`` per sample
``tensorstore``      the same array with tensorstore (zarr3 driver, file kvstore):
                     ``arr[i].write(x).result()`` per sample
``ngff-tiles``       one ``yx`` image of 5120x5120 with 16x16 chunks (102,400 chunks) written as
                     CAREamics tiles of 200x200, overlap 48, row-major (1,156 ``write_tile``
                     calls). ngff-writer only: per-tile writes with zarr or tensorstore
                     read-modify-write ~90 partial chunks per tile (``bench_tiles.py`` compares them
                     at a size where that finishes)
``ngff-writer-s3``   the 2 GiB stream of ``bench_samples.py`` (S samples of 1x32x512x512, chunks
                     1x1x16x256x256) into moto's S3 server on 127.0.0.1, through an fsspec URL
``ngff-writer-s3-fsspec`` the same stream with an s3fs-only option, which keeps the URL on s3fs
                     (``ngff-writer-s3`` opens on obstore's client when it is installed)
``tensorstore-s3``   the same stream with tensorstore's ``s3`` kvstore

Every engine uses the same codec (Blosc zstd-3 + shuffle by default). Each write is timed
on its own; only the write calls (and ngff-writer's ``close``) are timed. The first and the
last 10% are taken before the final write, which for ngff-writer also finalizes the image
(waits for the stores in flight, writes the final metadata, deletes the log): that write
and ``close`` are shown apart (``final s``) and counted in the total. ``ms/write`` is the
total over S. Every ~1% of writes (not timed) the ngff-writer workers count the files
under the image's ``ngff_writer/`` (``bk``) and the segments in its ``ngff_writer/log/``;
halfway and after the run they time a status read on a fresh read-only handle
(``open_output(path, mode="r")`` + ``["img"]`` = open, ``.progress()``). S3 runs each get a
fresh moto server (it keeps objects in memory); moto is Python and shares the 2 cores, so
its MB/s say how the writers compare, not what real S3 gives.

Usage::

    python benchmarks/bench_scale.py --quick                  # S = 1,000 and 5,000; small tiles; S3 S=8
    python benchmarks/bench_scale.py --plot docs/scale.png    # S = 1k, 10k, 100k; 3 repeats
    python benchmarks/bench_scale.py --engines ngff-writer,zarr --sizes 1000,100000 --repeats 1
    python benchmarks/bench_scale.py --from-json scale.json --plot docs/scale.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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
    run_repeats,
    run_worker,
    summary_row,
    tensorstore_spec,
    zarr_codec,
)

LOCAL_ENGINES = ("ngff-writer", "zarr", "tensorstore")
TILES = "ngff-tiles"
S3_ENGINES = ("ngff-writer-s3", "ngff-writer-s3-fsspec", "tensorstore-s3")
ENGINES = (*LOCAL_ENGINES, TILES, *S3_ENGINES)
SIZES, QUICK_SIZES = "1000,10000,100000", "1000,5000"
SMALL = (64, 64)  # one sample of the scale stream (y, x)
SMALL_CHUNKS = (1, 64, 64)
TILE_SIDE, QUICK_TILE_SIDE = 5120, 1280
NAME = "img"
TAIL = 0.1  # first / last fraction of the writes compared
CHECKS = 100  # bookkeeping counts per run (every ~1% of writes)
DRIFT_LIMIT = 1.2
BOOKKEEPING_LIMIT = 1000
STATUS_LIMIT_S = 1.0


# ---- what a worker records ------------------------------------------------------------------
def per_write(times: Any) -> dict[str, Any]:
    """First/last 10% (before the final write), median, and 100 bin means of per-write times."""
    import numpy as np

    body = times[:-1] if len(times) > 1 else times
    k = max(1, int(len(body) * TAIL))
    first, last = float(body[:k].mean()), float(body[-k:].mean())
    bins = np.array_split(times, min(CHECKS, len(times)))
    return {
        "first_ms": first * 1e3,
        "last_ms": last * 1e3,
        "drift": last / first,
        "median_ms": float(np.median(times)) * 1e3,
        "max_ms": float(times.max()) * 1e3,
        "final_write_s": float(times[-1]),
        "bins_ms": [float(b.mean()) * 1e3 for b in bins],
    }


def count_files(root: Path) -> int:
    """Files under ``root`` (0 if it does not exist)."""
    return sum(len(files) for _, _, files in os.walk(root))


class Bookkeeping:
    """Files under an image's ``ngff_writer/`` and segments in its ``log/``, sampled in a run."""

    def __init__(self, image: Path, writes: int) -> None:
        self.group = image / "ngff_writer"
        self.every = max(1, writes // CHECKS)
        self.trace: list[tuple[int, int, int]] = []  # (writes done, files, log segments)

    def count(self, done: int) -> None:
        log = self.group / "log"
        segments = sum(n.endswith(".json") for n in os.listdir(log)) if log.is_dir() else 0
        self.trace.append((done, count_files(self.group), segments))

    def tick(self, done: int) -> None:
        if done % self.every == 0:
            self.count(done)

    def counters(self) -> dict[str, Any]:
        self.count(self.trace[-1][0] if self.trace else 0)  # once more, after close
        peak = max(self.trace, key=lambda t: t[1])
        return {"bk_peak": peak[1], "bk_peak_at": peak[0],
                "log_peak": max(t[2] for t in self.trace),
                "bk_end": self.trace[-1][1], "log_end": self.trace[-1][2],
                "bk_trace": self.trace}


def status_time(root: str, storage_options: dict | None = None, name: str = NAME) -> dict[str, Any]:
    """Time a status read on a fresh read-only handle: open (output + image), then progress()."""
    import ngff_writer as nw

    t0 = time.perf_counter()
    out = nw.open_output(root, mode="r", storage_options=storage_options)
    img = out[name]
    t1 = time.perf_counter()
    p = img.progress()
    t2 = time.perf_counter()
    out.close()
    return {"open_s": t1 - t0, "progress_s": t2 - t1, "done": p.done, "total": p.total,
            "blocks_done": p.blocks_done, "blocks_total": p.blocks_total, "complete": p.complete}


def timed_loop(n: int, make: Callable[[int], Any], write: Callable[[int, Any], None],
               timer: Timer, after: Callable[[int], None] | None = None) -> tuple[Any, Any]:
    """Call ``write(i, make(i))`` for i < n, timing each write; ``after(i + 1)`` untimed.
    Returns the per-write seconds and a copy of the last item made."""
    import numpy as np

    times = np.empty(n)
    last = None
    for i in range(n):
        x = make(i)
        if i == n - 1:
            last = x.copy()
        before = timer.total
        with timer:
            write(i, x)
        times[i] = timer.total - before
        if after is not None:
            after(i + 1)
    return times, last


# ---- local sample stream (S samples of 64x64) -----------------------------------------------
def small_source(noise: float) -> Any:
    from _samples import SampleSource

    return SampleSource((1, 1, *SMALL), noise=noise, seed=0)


def run_local(engine: str, path: Path, n: int, codec: str, source: Any, timer: Timer) -> dict:
    import numpy as np

    shape = (n, *SMALL)
    counters: dict[str, Any] = {}
    after = None
    finish: Callable[[], None] = lambda: None  # noqa: E731
    if engine == "ngff-writer":
        import ngff_writer as nw

        out = nw.open_output(str(path), mode="w")
        img = out.create_image(NAME, shape=shape, axes="syx", dtype="float32", chunks=SMALL_CHUNKS,
                               compressor=codec, pyramid=None)
        write = img.write_sample
        bk = Bookkeeping(path / NAME, n)
        bk.count(0)

        def after(done: int) -> None:
            bk.tick(done)
            if done == n // 2:
                counters["status_mid"] = status_time(str(path))

        finish = out.close
    elif engine == "zarr":
        import zarr

        arr = zarr.create_array(str(path), shape=shape, dtype="float32", chunks=SMALL_CHUNKS,
                                compressors=zarr_codec(codec), fill_value=0, zarr_format=3)

        def write(i: int, x: Any) -> None:
            arr[i] = x
    else:
        import tensorstore as ts

        spec = tensorstore_spec(path, shape, codec)
        spec["metadata"]["chunk_grid"]["configuration"]["chunk_shape"] = list(SMALL_CHUNKS)
        tarr = ts.open(spec, create=True, delete_existing=True).result()

        def write(i: int, x: Any) -> None:
            tarr[i].write(x).result()

    times, last = timed_loop(n, lambda i: source.sample(i)[0, 0], write, timer, after)
    before = timer.total
    with timer:
        finish()
    stats = per_write(times)
    stats["final_write_s"] += timer.total - before  # the finalizing write, plus close
    counters.update(stats, close_s=timer.total - before, files=count_files(path),
                    ms_per_write=timer.total / n * 1e3)
    if engine == "ngff-writer":
        counters.update(bk.counters())
    np.save(path.parent / "last.npy", last)
    return counters


def verify_local(engine: str, path: Path, n: int) -> dict[str, Any]:
    """The last sample reads back bit-identical; (ngff-writer) the final image's status."""
    import numpy as np

    want = np.load(path.parent / "last.npy")
    info: dict[str, Any] = {}
    if engine == "ngff-writer":
        info["status_end"] = status_time(str(path))
        info["complete"] = info["status_end"]["complete"]
        path = path / NAME / "0"
    if engine == "tensorstore":
        import tensorstore as ts

        got = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}).result()[
            n - 1].read().result()
    else:
        import zarr

        got = zarr.open_array(str(path), mode="r")[n - 1]
    info["verified"] = bool(np.array_equal(got, want)) and info.get("complete", True)
    return info


# ---- tiles: one image of ~100,000 chunks -----------------------------------------------------
def tile_image(side: int, noise: float) -> Any:
    """A ``side`` x ``side`` prediction-like image, assembled from 512x512 generated blocks."""
    import numpy as np
    from _samples import SampleSource

    block = 512
    source = SampleSource((1, 1, block, block), noise=noise, seed=0)
    image = np.empty((side, side), np.float32)
    k = 0
    for y in range(0, side, block):
        for x in range(0, side, block):
            part = source.sample(k)[0, 0]
            k += 1
            image[y:y + block, x:x + block] = part[:side - y, :side - x]
    return image


def run_tiles(path: Path, image: Any, codec: str, chunk: int, tile: int, overlap: int,
              timer: Timer) -> dict:
    import ngff_writer as nw
    from ngff_writer.tiling import tiles

    side = image.shape[0]
    geometry = list(tiles(image.shape, (tile, tile), (overlap, overlap)))
    out = nw.open_output(str(path), mode="w")
    img = out.create_image(NAME, shape=image.shape, axes="yx", dtype="float32", chunks=(chunk, chunk),
                           compressor=codec, pyramid=None)
    bk = Bookkeeping(path / NAME, len(geometry))
    bk.count(0)
    counters: dict[str, Any] = {"max_buffered_mb": 0.0}

    def write(i: int, data: Any) -> None:
        t = geometry[i]
        img.write_tile(0, data, crop_start=t.crop_start, crop_size=t.crop_size, stitch_start=t.stitch_start)

    def after(done: int) -> None:
        if done % bk.every == 0:
            bk.count(done)
            counters["max_buffered_mb"] = max(counters["max_buffered_mb"], img.buffered_bytes / MB)
        if done == len(geometry) // 2:
            counters["status_mid"] = status_time(str(path))

    # A model hands over a fresh array per tile: cut a copy (not timed).
    times, _ = timed_loop(len(geometry), lambda i: image[geometry[i].region].copy(), write, timer, after)
    before = timer.total
    with timer:
        out.close()
    stats = per_write(times)
    stats["final_write_s"] += timer.total - before
    counters.update(stats, close_s=timer.total - before, files=count_files(path), tiles=len(geometry),
                    chunks=(-(-side // chunk)) ** 2, ms_per_write=timer.total / len(geometry) * 1e3,
                    **bk.counters())
    return counters


def verify_tiles(path: Path, image: Any) -> dict[str, Any]:
    import numpy as np
    import zarr

    status = status_time(str(path))
    got = zarr.open_array(str(path / NAME / "0"), mode="r")[...]
    return {"status_end": status, "complete": status["complete"],
            "verified": bool(np.array_equal(got, image)) and status["complete"]}


# ---- S3: the 2 GiB stream into moto ------------------------------------------------------------
def s3_kvstore(bucket: str, endpoint: str) -> dict[str, Any]:
    """tensorstore's ``s3`` kvstore at ``s3://bucket/out.zarr/`` on ``endpoint`` (credentials from
    the environment)."""
    return {"driver": "s3", "bucket": bucket, "path": "out.zarr/", "endpoint": endpoint,
            "aws_region": "us-east-1", "aws_credentials": {"type": "environment"}}


def run_s3(engine: str, port: int, bucket: str, n: int, codec: str, source: Any, timer: Timer) -> dict:
    from ngff_writer.testing import LocalS3

    s3 = LocalS3(port)  # the parent's server: only its address and options are used here
    shape = (n, *SAMPLE_SHAPE)
    if engine.startswith("ngff-writer-s3"):
        import ngff_writer as nw

        options = s3.fsspec_options if engine.endswith("fsspec") else s3.storage_options
        out = nw.open_output(f"s3://{bucket}/out.zarr", mode="w", storage_options=options)
        img = out.create_image("pred", shape=shape, axes="sczyx", dtype="float32", chunks=CHUNKS,
                               compressor=codec, pyramid=None)
        write, finish = img.write_sample, out.close
    else:
        import tensorstore as ts

        spec = tensorstore_spec(Path("unused"), shape, codec)
        spec["kvstore"] = s3_kvstore(bucket, s3.endpoint)
        arr = ts.open(spec, create=True, delete_existing=True).result()

        def write(i: int, x: Any) -> None:
            arr[i].write(x).result()

        def finish() -> None:
            pass

    times, last = timed_loop(n, source.sample, write, timer)
    with timer:
        finish()
    source.last = last
    return per_write(times)


def verify_s3(engine: str, port: int, bucket: str, n: int, source: Any) -> dict[str, Any]:
    import numpy as np
    import s3fs
    import zarr

    from ngff_writer.testing import LocalS3

    options = LocalS3(port).storage_options
    info: dict[str, Any] = {}
    url = f"s3://{bucket}/out.zarr"
    if engine.startswith("ngff-writer-s3"):
        info["status_end"] = status_time(url, options, "pred")
        info["complete"] = info["status_end"]["complete"]
        url += "/pred/0"
    got = zarr.open_array(url, mode="r", storage_options=options)[n - 1]
    stored = s3fs.S3FileSystem(**options).du(f"{bucket}/out.zarr")
    info.update(disk_bytes=stored, ratio_compression=n * source.nbytes / max(stored, 1),
                verified=bool(np.array_equal(got, source.last)) and info.get("complete", True))
    return info


# ---- worker ----------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> dict:
    """Run one engine in this (fresh) process and return its measurements."""
    import numpy  # noqa: F401  (imported before the baseline, like every engine's modules)

    engine, path = args.worker, Path(args.path)
    if engine.startswith("tensorstore"):
        os.environ["AWS_ACCESS_KEY_ID"] = os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
        import tensorstore  # noqa: F401
    import zarr  # noqa: F401
    if engine.startswith("ngff"):
        import ngff_writer  # noqa: F401
    if engine in LOCAL_ENGINES:
        n, source = args.size, small_source(args.noise)
        result = measure(engine, n, args.codec, path, source,
                         lambda timer: run_local(engine, path, n, args.codec, source, timer),
                         lambda: verify_local(engine, path, n))
    elif engine == TILES:
        image = tile_image(args.tile_side, args.noise)

        class Whole:  # measure() counts bytes as samples x nbytes: one sample, the image
            nbytes = image.nbytes

        result = measure(engine, 1, args.codec, path, Whole,
                         lambda timer: run_tiles(path, image, args.codec, args.tile_chunk, args.tile,
                                                 args.overlap, timer),
                         lambda: verify_tiles(path, image))
    else:
        n, source = args.samples, resident_source(args.noise)
        result = measure(engine, n, args.codec, path, source,
                         lambda timer: run_s3(engine, args.port, args.bucket, n, args.codec, source, timer),
                         lambda: verify_s3(engine, args.port, args.bucket, n, source))
    result["size"] = args.size
    return result


# ---- orchestration ---------------------------------------------------------------------------
def run_one(engine: str, size: int, args: argparse.Namespace, root: Path) -> dict:
    path = Path(tempfile.mkdtemp(prefix=f"{engine}-{size}-", dir=root)) / "out.zarr"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--size", str(size),
           "--samples", str(args.samples), "--codec", args.codec, "--noise", str(args.noise),
           "--tile-side", str(args.tile_side), "--tile-chunk", str(args.tile_chunk),
           "--tile", str(args.tile), "--overlap", str(args.overlap), "--path", str(path)]
    if engine not in S3_ENGINES:
        return run_worker(cmd, path, f"{engine} ({size})")
    from ngff_writer.testing import LocalS3

    with LocalS3() as s3:  # a fresh server per run: moto holds every object in memory
        cmd += ["--port", str(s3.port), "--bucket", s3.bucket()]
        return run_worker(cmd, path, f"{engine} (S={size})")


def tasks_of(args: argparse.Namespace, engines: list[str]) -> list[tuple[str, int]]:
    tasks = [(e, s) for s in args.size_list for e in engines if e in LOCAL_ENGINES]
    if TILES in engines:
        tasks.append((TILES, (-(-args.tile_side // args.tile_chunk)) ** 2))
    tasks += [(e, args.samples) for e in engines if e in S3_ENGINES]
    return tasks


def progress_line(rep: int, r: dict) -> str:
    head = f"  repeat {rep} {r['engine']:<15} {r['size']:>7}  "
    if r["engine"] in S3_ENGINES:
        return head + f"{r['mb_s']:7.1f} MB/s  {r['write_s']:.1f} s  ok={r['verified']}"
    bk = f"  bk peak {r['bk_peak']}" if "bk_peak" in r else ""
    return head + (f"{r['write_s']:7.1f} s  {r['ms_per_write']:.3f} ms/write  first {r['first_ms']:.3f} "
                   f"last {r['last_ms']:.3f} (x{r['drift']:.2f}){bk}  ok={r['verified']}")


def _med(rows: list[dict], path: str) -> float | None:
    """Median of a (possibly nested, ``a.b``) key over the rows that have it."""
    values = []
    for r in rows:
        v: Any = r
        for k in path.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            values.append(v)
    return statistics.median(values) if values else None


def summarize(results: list[dict], engines: list[str]) -> list[dict]:
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["engine"], r["size"]), []).append(r)
    table = []
    for (engine, size), rows in sorted(groups.items(), key=lambda kv: (engines.index(kv[0][0]), kv[0][1])):
        row = {**summary_row(rows), "size": size}
        for key in ("ms_per_write", "first_ms", "last_ms", "drift", "median_ms", "final_write_s", "files",
                    "status_mid.open_s", "status_mid.progress_s", "status_end.open_s",
                    "status_end.progress_s", "tiles", "chunks", "max_buffered_mb"):
            row[key] = _med(rows, key)
        for key in ("bk_peak", "log_peak", "bk_end", "log_end"):  # worst repeat
            values = [r[key] for r in rows if key in r]
            row[key] = max(values) if values else None
        if engine in LOCAL_ENGINES and ("zarr", size) in groups:
            row["x_zarr"] = row["ms_per_write"] / median(groups[("zarr", size)], "ms_per_write")
        if engine in S3_ENGINES and ("tensorstore-s3", size) in groups:
            row["x_tensorstore"] = row["mb_s_median"] / median(groups[("tensorstore-s3", size)], "mb_s")
        table.append(row)
    return table


def _f(v: Any, fmt: str, width: int) -> str:
    return f"{'-' if v is None else format(v, fmt):>{width}}"


def print_tables(table: list[dict], args: argparse.Namespace) -> None:
    local = [r for r in table if r["engine"] in LOCAL_ENGINES]
    if local:
        print(f"\nS samples of {SMALL[0]}x{SMALL[1]} float32, chunks {SMALL_CHUNKS}, pyramid=None, "
              f"codec={args.codec}; repeats={args.repeats}, medians (bk: worst repeat)")
        print("ms/write = total / S; first/last = mean ms of the first/last 10% of writes before the "
              "final one; final s = final write + close; bk = files under img/ngff_writer/")
        head = (f"{'engine':<12}{'S':>8}{'total s':>9}{'ms/write':>9}{'x zarr':>7}{'first':>8}{'last':>8}"
                f"{'last/1st':>9}{'median':>8}{'final s':>8}{'files':>8}{'bk peak':>8}{'log pk':>7}"
                f"{'bk end':>7}{'RSS MB':>7}{'ok':>3}")
        print(head)
        print("-" * len(head))
        for r in local:
            print(f"{r['engine']:<12}{r['size']:>8}{r['write_s_median']:>9.2f}{r['ms_per_write']:>9.3f}"
                  f"{_f(r.get('x_zarr'), '.2f', 7)}{r['first_ms']:>8.3f}{r['last_ms']:>8.3f}"
                  f"{r['drift']:>9.2f}{r['median_ms']:>8.3f}{r['final_write_s']:>8.3f}{r['files']:>8.0f}"
                  f"{_f(r['bk_peak'], 'd', 8)}{_f(r['log_peak'], 'd', 7)}{_f(r['bk_end'], 'd', 7)}"
                  f"{r['peak_rss_mb_median']:>7.0f}{'y' if r['verified'] else 'N':>3}")
    tiles = [r for r in table if r["engine"] == TILES]
    for r in tiles:
        side, chunk = args.tile_side, args.tile_chunk
        print(f"\nTiles: one yx image of {side}x{side} float32, chunks {chunk}x{chunk} "
              f"({r['chunks']:.0f} chunks), tiles {args.tile}x{args.tile} overlap {args.overlap} "
              f"row-major ({r['tiles']:.0f} write_tile calls), ngff-writer only")
        head = (f"{'engine':<12}{'total s':>9}{'ms/tile':>9}{'first':>8}{'last':>8}{'last/1st':>9}"
                f"{'median':>8}{'final s':>8}{'files':>8}{'bk peak':>8}{'log pk':>7}{'bk end':>7}"
                f"{'max buf MB':>11}{'ok':>3}")
        print(head)
        print("-" * len(head))
        print(f"{r['engine']:<12}{r['write_s_median']:>9.2f}{r['ms_per_write']:>9.2f}{r['first_ms']:>8.2f}"
              f"{r['last_ms']:>8.2f}{r['drift']:>9.2f}{r['median_ms']:>8.2f}{r['final_write_s']:>8.3f}"
              f"{r['files']:>8.0f}{_f(r['bk_peak'], 'd', 8)}{_f(r['log_peak'], 'd', 7)}"
              f"{_f(r['bk_end'], 'd', 7)}{r['max_buffered_mb']:>11.1f}{'y' if r['verified'] else 'N':>3}")
    status = [r for r in table
              if r.get("status_end.progress_s") is not None and r["engine"] in ("ngff-writer", TILES)]
    if status:
        print("\nStatus on a fresh read-only handle, seconds (open = open_output(path, 'r')['img'], "
              "then .progress()); halfway through the run and after it")
        head = f"{'image':<22}{'open mid':>10}{'prog mid':>10}{'open end':>10}{'prog end':>10}"
        print(head)
        print("-" * len(head))
        for r in status:
            what = f"{r['size']} samples" if r["engine"] == "ngff-writer" else f"tiles ({r['size']} chunks)"
            print(f"{what:<22}" + "".join(_f(r[k], ".4f", 10) for k in (
                "status_mid.open_s", "status_mid.progress_s", "status_end.open_s", "status_end.progress_s")))
    s3 = [r for r in table if r["engine"] in S3_ENGINES]
    if s3:
        gb = s3[0]["size"] * 4 * 32 * 512 * 512 / 2**30
        print(f"\nS3 (moto on 127.0.0.1, a fresh server per run): S={s3[0]['size']} samples of "
              f"{SAMPLE_SHAPE} float32 ({gb:.2f} GiB), chunks {CHUNKS}; MB = 1e6 bytes")
        head = f"{'engine':<16}{'MB/s med':>9}{'(min-max)':>12}{'x ts':>7}{'total s':>9}{'stored MB':>10}" \
               f"{'ratio':>7}{'ok':>3}"
        print(head)
        print("-" * len(head))
        for r in s3:
            rng = f"({r['mb_s_min']:.0f}-{r['mb_s_max']:.0f})"
            print(f"{r['engine']:<16}{r['mb_s_median']:>9.1f}{rng:>12}{_f(r.get('x_tensorstore'), '.2f', 7)}"
                  f"{r['write_s_median']:>9.1f}{r['disk_mb_median']:>10.0f}{r['compression_ratio']:>7.2f}"
                  f"{'y' if r['verified'] else 'N':>3}")


def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def verdict(table: list[dict], results: list[dict]) -> list[str]:
    lines = []

    def fmt(ps: list[float]) -> str:
        return ", ".join(f"{p:.3f}" for p in ps)

    by = {(r["engine"], r["size"]): r for r in table}
    sizes = sorted({r["size"] for r in table if r["engine"] == "ngff-writer"})
    for s in sizes:
        r = by[("ngff-writer", s)]
        drifts = [x["drift"] for x in results if x["engine"] == "ngff-writer" and x["size"] == s]
        lines.append(f"ngff-writer S={s}: last/first 10% = {r['drift']:.2f} (per repeat: {fmt(drifts)}) -> "
                     f"{_pf(r['drift'] <= DRIFT_LIMIT)} (<= {DRIFT_LIMIT})")
        # paired() compares MB/s: zarr's over ngff-writer's is ngff-writer's time over zarr's.
        ps = [p for p in paired([x for x in results if x["size"] == s], "zarr", "ngff-writer")]
        if ps:
            ratio = statistics.median(ps)
            lines.append(f"ngff-writer S={s}: per-write time / zarr's = {ratio:.3f} (per repeat: {fmt(ps)}) "
                         f"-> {_pf(ratio <= 1.0)} (<= 1.0)")
    if sizes:
        s = sizes[-1]
        r = by[("ngff-writer", s)]
        lines.append(f"ngff-writer S={s}: bookkeeping files at most {r['bk_peak']} during the run "
                     f"(log segments at most {r['log_peak']}) -> {_pf(r['bk_peak'] < BOOKKEEPING_LIMIT)} "
                     f"(< {BOOKKEEPING_LIMIT}); {r['bk_end']} once final (1 expected)")
        t = r["status_end.progress_s"]
        lines.append(f"ngff-writer S={s}: progress() of the final image {t:.4f} s (open "
                     f"{r['status_end.open_s']:.4f} s; halfway {r['status_mid.progress_s']:.4f} s) -> "
                     f"{_pf(max(t, r['status_mid.progress_s']) < STATUS_LIMIT_S)} (< {STATUS_LIMIT_S} s)")
    for (engine, s), r in by.items():
        if engine == TILES:
            lines.append(f"{TILES} ({r['chunks']:.0f} chunks, {r['tiles']:.0f} tiles): last/first 10% = "
                         f"{r['drift']:.2f} -> {_pf(r['drift'] <= DRIFT_LIMIT)} (<= {DRIFT_LIMIT}); "
                         f"bookkeeping files at most {r['bk_peak']} -> "
                         f"{_pf(r['bk_peak'] < BOOKKEEPING_LIMIT)}; {r['bk_end']} once final; progress() "
                         f"{r['status_end.progress_s']:.4f} s (halfway {r['status_mid.progress_s']:.4f} s)")
        if engine in ("zarr", "tensorstore"):
            lines.append(f"{engine} S={s}: last/first 10% = {r['drift']:.2f} (for comparison)")
    for mine in ("ngff-writer-s3", "ngff-writer-s3-fsspec"):
        ps = paired(results, mine, "tensorstore-s3")
        if ps:
            lines.append(f"S3 throughput {mine} / tensorstore = {statistics.median(ps):.3f} "
                         f"(per repeat: {fmt(ps)})")
    bad = sorted({f"{r['engine']} ({r['size']})" for r in results if not r["verified"]})
    if bad:
        lines.append(f"WARNING: read-back check failed for {', '.join(bad)}")
    return lines


# ---- plot -------------------------------------------------------------------------------------
COLORS = {"ngff-writer": "tab:blue", "zarr": "tab:orange", "tensorstore": "tab:green"}


def plot(table: list[dict], results: list[dict], out: str, note: str = "") -> None:
    """ms/write against S (log x) per engine; ngff-writer's bookkeeping files during each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5.6))
    for engine in LOCAL_ENGINES:
        rows = sorted((r for r in table if r["engine"] == engine), key=lambda r: r["size"])
        if not rows:
            continue
        s = [r["size"] for r in rows]
        c = COLORS[engine]
        ax.plot(s, [r["ms_per_write"] for r in rows], "-", color=c, label=f"{engine}: total / S")
        ax.plot(s, [r["first_ms"] for r in rows], "o", mfc="none", color=c, label=f"{engine}: first 10%")
        ax.plot(s, [r["last_ms"] for r in rows], "s", color=c, label=f"{engine}: last 10%")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("samples S (64x64 float32, one write each)")
    ax.set_ylabel("ms per write (median of repeats)")
    ax.set_title("Per-write time against S")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    for r in results:
        if r.get("repeat") != 0 or "bk_trace" not in r:
            continue
        trace = r["bk_trace"][:-1]  # the last count is after close
        total = trace[-1][0] or 1
        label = f"{r['size']} samples" if r["engine"] == "ngff-writer" else f"tiles ({r['size']} chunks)"
        style = "-" if r["engine"] == "ngff-writer" else "--"
        bx.plot([100 * t[0] / total for t in trace], [t[1] for t in trace], style, label=label)
    bx.axhline(BOOKKEEPING_LIMIT, color="red", lw=0.8, ls=":", label=f"target < {BOOKKEEPING_LIMIT}")
    bx.set_yscale("log")
    bx.set_xlabel("% of writes done")
    bx.set_ylabel("files under img/ngff_writer/")
    bx.set_title("ngff-writer bookkeeping files during the run (repeat 0)")
    bx.grid(True, which="both", alpha=0.3)
    bx.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    if note:
        fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot saved to {out}")


def plot_note(args: dict, results: list[dict]) -> str:
    libs = sorted({r["lib_hash"] for r in results})
    return (f"codec {args['codec']}, {args['repeats']} repeat(s), outputs under "
            f"{args['tmpdir'] or tempfile.gettempdir()}, ngff_writer sources {', '.join(libs)}")


def main(argv: list[str] | None = None) -> int:
    p = arguments(__doc__, ENGINES)
    p.add_argument("--s3-samples", dest="samples", type=int,
                   help="samples of the S3 stream (same as --samples: 64; --quick: 8)")
    p.add_argument("--sizes", default=None, help=f"values of S ({SIZES}; --quick: {QUICK_SIZES})")
    p.add_argument("--tile-side", type=int, default=None,
                   help=f"side of the tiled yx image ({TILE_SIDE}; --quick: {QUICK_TILE_SIDE})")
    p.add_argument("--tile-chunk", type=int, default=16, help="chunk side of the tiled image")
    p.add_argument("--tile", type=int, default=200, help="tile size in y and x")
    p.add_argument("--overlap", type=int, default=48, help="tile overlap in y and x")
    p.add_argument("--plot", default=None, help="save the plot (PNG) here")
    p.add_argument("--from-json", default=None, help="print and plot a saved --json run instead of running")
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--bucket", help=argparse.SUPPRESS)
    args, engines = parse(p, argv, ENGINES)
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.tile_side = args.tile_side or (QUICK_TILE_SIDE if args.quick else TILE_SIDE)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        for key in ("codec", "repeats", "tile_side", "tile_chunk", "tile", "overlap"):
            setattr(args, key, saved["args"][key])
        results, table = saved["results"], saved["summary"]
        args.json = None
        report(args, results, table, lambda: print_tables(table, args), verdict(table, results))
        if args.plot:
            plot(table, results, args.plot, plot_note(saved["args"], results))
        return 0
    tasks = tasks_of(args, engines)
    local = [e for e in engines if e in LOCAL_ENGINES]
    parts = [f"S = {args.sizes} ({', '.join(local)})"] if local else []
    if TILES in engines:
        parts.append(f"tiles {args.tile_side}x{args.tile_side}")
    if any(e in S3_ENGINES for e in engines):
        parts.append(f"S3 S={args.samples}")
    print(f"{len(tasks)} runs x {args.repeats} repeats: {'; '.join(parts)}", flush=True)
    results = run_repeats(tasks, args, "scale", lambda t, root: run_one(*t, args, root),
                          lambda rep, t, r: progress_line(rep, r), announce_root=True)
    table = summarize(results, engines)
    report(args, results, table, lambda: print_tables(table, args), verdict(table, results))
    if args.plot:
        plot(table, results, args.plot, plot_note(vars(args), results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
