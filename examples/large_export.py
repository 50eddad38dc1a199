"""A large export for a cluster filesystem: the default layout stores it in shards.

Predictions of 1x32x1024x1024 float32 (128 MiB a sample, as CAREamics makes them for a
3-D stack) are written one sample at a time into an image of ``--samples`` samples. At
1 GiB or more the image is sharded by default: one file per sample at full resolution, and
below, files gathering 4, 16 and 64 samples. The script prints the files each level holds
and the files a terabyte of such predictions would make, with and without shards.

The export keeps no more memory than its data in flight: each file's pages in the page
cache are handed back once it is on disk, so a terabyte export evicts nothing other jobs
cached. ``--keep-cached`` leaves them cached (``Context(keep_cached=True)``), for a job
that reads its output right back.

Run::

    python examples/large_export.py large.zarr                 # 16 samples: 2 GiB, ~15 s
    python examples/large_export.py large.zarr --samples 64    # every level's shards whole
    python examples/large_export.py large.zarr --no-shards     # one file per chunk, to compare
    python examples/large_export.py large.zarr --keep-cached   # leave the files in the page cache
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import ngff_writer as nw

SAMPLE = (1, 32, 1024, 1024)  # c z y x


def predict(i: int) -> np.ndarray:
    """A stand-in for a network's output: smooth in y and x, different for every sample."""
    y = np.linspace(0, 4 * np.pi, SAMPLE[2], dtype=np.float32)[:, None]
    x = np.linspace(0, 4 * np.pi, SAMPLE[3], dtype=np.float32)[None, :]
    plane = np.sin(y + 0.1 * i) * np.cos(x)
    z = np.linspace(0.5, 1.5, SAMPLE[1], dtype=np.float32)[:, None, None]
    return (z * plane)[None]


def files_per_level(image: Path, levels: int) -> list[int]:
    """Stored files of each level (its zarr.json left out)."""
    return [sum(1 for p in (image / str(k)).rglob("*") if p.is_file() and p.name != "zarr.json")
            for k in range(levels)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--no-shards", action="store_true", help="one file per chunk (shards=None)")
    p.add_argument("--keep-cached", action="store_true", help="leave written files in the page cache")
    args = p.parse_args(argv)

    shape = (args.samples, *SAMPLE)
    with nw.Context(keep_cached=args.keep_cached) as ctx, \
            nw.open_output(args.output, mode="a", context=ctx) as out:
        img = out.create_image("pred", shape, "sczyx", exist_ok=True,
                               shards=None if args.no_shards else "auto")
        for i in img.pending_samples():
            img.write_sample(i, predict(i))
        spec = img.spec
    files = files_per_level(Path(args.output) / "pred", len(spec.levels))
    level0 = np.prod(shape) * 4
    print(f"shards {spec.shards}, lower levels gather {spec.shard_samples} samples per shard")
    print(f"files per level: {files}; about {sum(files) * 1e12 / level0:,.0f} files per TB of "
          "such predictions (a level's last shard may be partly filled: more samples, a better guess)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
