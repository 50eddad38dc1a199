"""Predict a large image in overlapping tiles and stream every tile into OME-Zarr.

No tile cache, no full-size canvas: each tile's valid part goes into the image as it
arrives; chunks are assembled in memory only until they are whole, then stored once.
The pyramid (``"auto"``: 700 x 900 in 256 x 256 chunks gets levels of 350 x 450 and
175 x 225) is built the same way, from each chunk as it is stored: no chunk is read
back. ``--blend`` averages the overlaps with cosine weights instead of cropping them.

``--crash-after N`` kills the process after N tiles (no cleanup, as a real crash);
``--resume`` then reopens the output and predicts only the tiles that still touch a
chunk no writer has stored (``Image.pending_tiles``).

    python examples/tiled_prediction.py out.zarr
    python examples/tiled_prediction.py out.zarr --blend
    python examples/tiled_prediction.py out.zarr --crash-after 20   # dies half-way
    python examples/tiled_prediction.py out.zarr --resume           # predicts the rest
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--crash-after", type=int, default=None, help="die after N tiles")
    parser.add_argument("--resume", action="store_true", help="predict only the tiles still needed")
    args = parser.parse_args(argv)

    raw = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    blend = {"tile_size": TILE, "overlap": OVERLAP, "ramp": "cosine"} if args.blend else None
    with nw.open_output(args.out, mode="a" if args.resume else "w") as out:
        image = out.create_image("prediction", SHAPE, "scyx", chunks=(1, 1, 256, 256),
                                 scale={"y": 0.2, "x": 0.2}, units="micrometer", blend=blend,
                                 exist_ok=args.resume)
        sent = 0
        for s in range(SHAPE[0]):
            todo = tiles(SHAPE[2:], TILE, OVERLAP)  # CAREamics' layout, row-major
            if args.resume:
                todo = image.pending_tiles(s, todo)
            for t in todo:
                prediction = model(raw[(s, slice(None), *t.region)])
                image.write_tile(s, prediction, crop_start=t.crop_start, crop_size=t.crop_size,
                                 stitch_start=t.stitch_start)
                sent += 1
                if sent == args.crash_after:
                    print(f"crashing after {sent} tiles", file=sys.stderr)
                    os._exit(3)  # no close, no flush: what was in memory is lost
        print(f"{sent} tiles predicted")
        progress = image.progress()
        print(f"{image.name}: {progress.blocks_done}/{progress.blocks_total} chunks stored, "
              f"{'complete' if progress.complete else 'in progress'}, {progress.levels} levels "
              f"({', '.join('x'.join(map(str, image.level(k).shape[-2:])) for k in range(image.n_levels))}); "
              f"memory held for partial chunks now: {image.buffered_bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
