"""Files per TB on disk, and S3 requests per GB, of the default layout against one file per chunk.

Issue "Exports that fit HPC filesystems": a large image's default layout must make at most
10,000 files per TB of predictions (level 0 and pyramid), counted on a scaled-down image
and extrapolated per byte; on S3, requests per GB must fall by the ratio of object sizes.

Part 1, local disk. For each sample shape (``--shapes``; default the issue's
1x32x1024x1024 float32, 128 MiB, and ``bench_samples``' 1x32x512x512, 32 MiB), S samples
(``--samples``; default: enough for 1 GiB of level 0, so that the default shards) are
written with the default pyramid, once with the default layout and once with
``shards=None`` (one file per chunk, the layout before the default changed). Files of
each level are counted (everything but ``zarr.json``; the bookkeeping is gone once the
image is final) and extrapolated per byte of level 0:
``files per TB = data files * 1e12 / level-0 bytes`` (TB = 10^12 bytes of predictions,
the pyramid's files included; the few metadata files do not grow with the image).

Part 2, moto's S3 server on 127.0.0.1 (``--s3-samples`` samples of the first shape; 16 of
128 MiB make 2 GiB, so the default shards): requests the server receives from
``open_output`` to ``close()``, by kind, per GB of level 0; and the mean size of a stored
data object.

Usage::

    python benchmarks/bench_files.py                     # both shapes, local and S3
    python benchmarks/bench_files.py --shapes 1x32x1024x1024 --no-s3 --json files.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ngff_writer as nw
from ngff_writer._declare.shards import SHARD_MIN_IMAGE_BYTES
from ngff_writer._declare.spec import parse_image_spec

TB = 1e12
GB = 1e9
TARGET_FILES_PER_TB = 10_000
LAYOUTS = ("default", "chunks")


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


def _source(shape: tuple[int, ...]) -> Any:
    """The benchmarks' prediction-like samples, made into one reused buffer (written
    copies are the writer's, so that its peak RSS is its own)."""
    from _samples import SampleSource

    source = SampleSource(shape, noise=0.01, seed=0)
    source.sample(0)
    return source


def write(root: Any, shape: tuple[int, ...], n: int, layout: str,
          storage_options: dict[str, Any] | None = None, source: Any = None) -> dict[str, Any]:
    """Write ``n`` samples of ``shape`` with ``layout``; return the image's layout and timing."""
    full = (n, *shape)
    source = source or _source(shape)
    t0 = time.perf_counter()
    with nw.open_output(root, mode="w", storage_options=storage_options) as out:
        img = out.create_image("pred", full, "sczyx", shards="auto" if layout == "default" else None)
        for i in range(n):
            img.write_sample(i, source.sample(i))
    seconds = time.perf_counter() - t0
    with nw.open_output(root, mode="r", storage_options=storage_options) as out:
        img = out["pred"]
        assert img.is_final, "the image did not complete"
        spec = img.spec
    return {"shards": spec.shards, "chunks": spec.chunks, "levels": len(spec.levels),
            "level0_bytes": math.prod(full) * 4, "write_s": seconds}


def count_files(image: Path, levels: int) -> list[int]:
    """Files per level, but for the level's ``zarr.json``."""
    return [sum(1 for p in (image / str(k)).rglob("*") if p.is_file() and p.name != "zarr.json")
            for k in range(levels)]


def _measured(root: str, shape: tuple[int, ...], n: int, layout: str) -> dict[str, Any]:
    """:func:`write` in this (fresh) process, with its peak RSS over the baseline before it."""
    from _common import MB, current_rss, peak_rss, reset_peak_rss

    source = _source(shape)  # its buffer is in the baseline
    reset_peak_rss()
    baseline = current_rss()
    info = write(root, shape, n, layout, source=source)
    return {**info, "peak_over_baseline_mb": (peak_rss() - baseline) / MB}


def local(shapes: list[tuple[int, ...]], samples: int | None, tmp: Path) -> list[dict[str, Any]]:
    import multiprocessing as mp

    rows = []
    ctx = mp.get_context("spawn")  # a fresh process per run: its own peak RSS
    for shape in shapes:
        # 1 GiB at least (the default shards), and every level's shards whole: files are
        # then extrapolated from full shards only.
        gather = parse_image_spec("p", (1 << 20, *shape), "sczyx").shard_samples or (1,)
        n = samples or max(-(-SHARD_MIN_IMAGE_BYTES // (math.prod(shape) * 4)), *gather)
        for layout in LAYOUTS:
            root = tmp / f"{layout}.zarr"
            with ctx.Pool(1) as pool:
                info = pool.apply(_measured, (str(root), shape, n, layout))
            files = count_files(root / "pred", info["levels"])
            shutil.rmtree(root)
            per_tb = sum(files) * TB / info["level0_bytes"]
            rows.append({"shape": shape, "samples": n, "layout": layout, "files": files,
                         "files_per_tb": per_tb, **info})
            mb_s = info["level0_bytes"] / 1e6 / info["write_s"]
            print(f"  {'x'.join(map(str, shape))} S={n} {layout:<8} files per level {files} -> "
                  f"{per_tb:,.0f} per TB  ({info['write_s']:.1f} s, {mb_s:.0f} MB/s, peak RSS "
                  f"+{info['peak_over_baseline_mb']:.0f} MB)", flush=True)
    return rows


def s3(shape: tuple[int, ...], n: int) -> list[dict[str, Any]]:
    from ngff_writer.testing import LocalS3

    rows = []
    with LocalS3() as server:
        for layout in LAYOUTS:
            url = server.url(f"{layout}.zarr")
            with server.requests() as counts:
                info = write(url, shape, n, layout, server.fsspec_options)
            import s3fs

            fs = s3fs.S3FileSystem(**server.storage_options)
            objects = [k for k in fs.find(url) if not k.endswith("zarr.json") and "/pred/" in k]
            sizes = [fs.size(k) for k in objects]
            total = sum(counts.values())
            rows.append({"shape": shape, "samples": n, "layout": layout, "requests": dict(counts),
                         "requests_per_gb": total * GB / info["level0_bytes"],
                         "objects": len(objects), "mean_object_mib": sum(sizes) / len(sizes) / 2**20,
                         **info})
            print(f"  S3 {'x'.join(map(str, shape))} S={n} {layout:<7} {total} requests "
                  f"({dict(counts)}), {len(objects)} data objects of {rows[-1]['mean_object_mib']:.1f} "
                  f"MiB on average", flush=True)
    return rows


def verdict(rows: list[dict[str, Any]], s3_rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        by = {r["layout"]: r for r in rows if r["shape"] == shape}
        d, c = by["default"], by["chunks"]
        met = d["files_per_tb"] <= TARGET_FILES_PER_TB
        level0 = d["files"][0] * TB / d["level0_bytes"]
        fewer = c["files_per_tb"] / d["files_per_tb"]
        lines.append(f"{'x'.join(map(str, shape))}: default layout {d['files_per_tb']:,.0f} files per TB "
                     f"(level 0: {level0:,.0f}; shards {d['shards']}) vs {c['files_per_tb']:,.0f} one "
                     f"file per chunk, {fewer:.1f}x fewer -> {'met' if met else 'NOT met'} "
                     f"(<= {TARGET_FILES_PER_TB:,})")
    if s3_rows:
        by = {r["layout"]: r for r in s3_rows}
        big, small = by["default"], by["chunks"]
        def uploads(r: dict[str, Any]) -> float:  # PUT, and POST: multipart uploads' start and end
            return (r["requests"].get("PUT", 0) + r["requests"].get("POST", 0)) * GB / r["level0_bytes"]

        lines.append(f"S3 uploads (PUT + POST): {uploads(big):,.0f} per GB with the default layout vs "
                     f"{uploads(small):,.0f} with one object per chunk: {uploads(small) / uploads(big):.1f}x "
                     "fewer (objects over s3fs's part size go up in several parts)")
        lines.append(f"S3: {big['requests_per_gb']:,.0f} requests per GB with the default layout vs "
                     f"{small['requests_per_gb']:,.0f} with one object per chunk: "
                     f"{small['requests_per_gb'] / big['requests_per_gb']:.1f}x fewer; mean data object "
                     f"{big['mean_object_mib']:.1f} vs {small['mean_object_mib']:.1f} MiB "
                     f"({big['mean_object_mib'] / small['mean_object_mib']:.1f}x)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="1x32x1024x1024,1x32x512x512",
                   help="sample shapes CxZxYxX, comma-separated")
    p.add_argument("--samples", type=int, default=None, help="samples per image (default: 1 GiB)")
    p.add_argument("--s3-samples", type=int, default=16, help="samples of the S3 part")
    p.add_argument("--no-s3", action="store_true", help="skip the S3 part")
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    shapes = [_dims(s) for s in args.shapes.split(",") if s]
    tmp = Path(tempfile.mkdtemp(prefix="ngff-bench-files-", dir=args.tmpdir))
    try:
        print("local disk: default layout vs one file per chunk, default pyramid", flush=True)
        rows = local(shapes, args.samples, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s3_rows = [] if args.no_s3 else s3(shapes[0], args.s3_samples)
    print()
    for line in verdict(rows, s3_rows):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"local": rows, "s3": s3_rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
