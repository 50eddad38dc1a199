"""Predict a large image in overlapping tiles and stream every tile into OME-Zarr.

No tile cache, no full-size canvas: each tile's valid part goes into the image as it
arrives; chunks are assembled in memory only until they are whole, then stored once.
The pyramid (``"auto"``: 700 x 900 in 256 x 256 chunks gets levels of 350 x 450 and
175 x 225) is built the same way, from each chunk as it is stored: no chunk is read
back. ``--blend`` averages the overlaps with cosine weights instead of cropping them.

    python examples/tiled_prediction.py out.zarr
    python examples/tiled_prediction.py out.zarr --blend
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import ngff_writer as nw
from ngff_writer.tiling import tiles

SHAPE = (2, 1, 700, 900)  # s c y x: two large 2-D images
TILE, OVERLAP = (256, 256), (32, 32)


def model(tile: np.ndarray) -> np.ndarray:
    """A stand-in network: a smooth response to the tile."""
    return np.tanh(tile).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--blend", action="store_true", help="blend overlaps instead of cropping")
    args = parser.parse_args(argv)

    raw = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    blend = {"tile_size": TILE, "overlap": OVERLAP, "ramp": "cosine"} if args.blend else None
    with nw.open_output(args.out, mode="w") as out:
        image = out.create_image("prediction", SHAPE, "scyx", chunks=(1, 1, 256, 256),
                                 scale={"y": 0.2, "x": 0.2}, units="micrometer", blend=blend)
        for s in range(SHAPE[0]):
            for t in tiles(SHAPE[2:], TILE, OVERLAP):  # CAREamics' layout, row-major
                prediction = model(raw[(s, slice(None), *t.region)])
                image.write_tile(s, prediction, crop_start=t.crop_start, crop_size=t.crop_size,
                                 stitch_start=t.stitch_start)
        progress = image.progress()
        print(f"{image.name}: {progress.blocks_done}/{progress.blocks_total} chunks stored, "
              f"{'complete' if progress.complete else 'in progress'}, {progress.levels} levels "
              f"({', '.join('x'.join(map(str, image.level(k).shape[-2:])) for k in range(image.n_levels))}); "
              f"memory held for partial chunks now: {image.buffered_bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
