"""Swap CAREamics' TIFF/zarr prediction writer for streamed OME-Zarr, in three lines.

With CAREamics, tiled predictions are cached per image and stitched in memory before
one file is written. ``OmeZarrWriteStrategy`` takes the same decollated predictions
(``ImageRegionData``) and stores each tile as it arrives, so memory stays flat however
many samples an image has::

    # before
    writer = PredictionWriterCallback(dirpath, write_strategy=<CAREamics' TIFF or zarr strategy>)
    trainer = Trainer(callbacks=[writer])

    # after
    from ngff_writer.careamics import OmeZarrWriteStrategy
    from ngff_writer.lightning import FinalizePredictions

    strategy = OmeZarrWriteStrategy()  # or tile_mode="blend", tile_overlap=(32, 32)
    writer = PredictionWriterCallback(dirpath, write_strategy=strategy)
    trainer = Trainer(callbacks=[writer, FinalizePredictions(strategy)])

``FinalizePredictions`` finalizes the images when prediction ends (also under DDP), and
fingerprints the job when it starts (the model's weights and prediction settings): a re-run
of the same job continues and changes nothing, a retrained model's run is refused unless
``OmeZarrWriteStrategy(overwrite=True)``.
Each image gets pyramid levels (``pyramid="auto"``), built as the tiles arrive, so napari
can zoom out of an image while it is still being predicted.
Outputs: ``dirpath/<source dir relative to the sources' common base>/<stem>.ome.zarr``.

This script needs neither CAREamics nor torch: it simulates what the callback does
(tiled prediction of two time-lapse TIFF "files", batches of 4 tiles, a model that
predicts 2 channels from 1) and drives the strategy exactly as CAREamics would; the
fingerprint FinalizePredictions would compute is given by hand (``MODEL``). Run it twice
into the same OUT_DIR: the second run is the same job and changes nothing::

    python examples/careamics_swap.py OUT_DIR [--blend]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ngff_writer import open_output
from ngff_writer.careamics import ImageRegionData, OmeZarrWriteStrategy
from ngff_writer.tiling import tiles

TILE, OVERLAP = (128, 128), (32, 32)
SOURCES = ("raw/day1/embryo.tif", "raw/day2/embryo.tif")  # same stem, kept apart by their dirs
SHAPE = (3, 300, 420)  # T Y X
MODEL = "stand-in model v1"  # what FinalizePredictions derives from the weights and settings


def raw_image(idx: int) -> np.ndarray:
    """The input image ``idx`` (T Y X)."""
    return np.random.default_rng(idx).normal(100, 20, SHAPE).astype(np.uint16)


def model(x: np.ndarray) -> np.ndarray:
    """A stand-in network: 1 input channel to 2 output channels, pixel by pixel."""
    x = x.astype(np.float32) / np.float32(100)
    return np.stack([np.tanh(x), x * x])


def prediction_stream(base: Path) -> list[ImageRegionData]:
    """Every tile prediction, in CAREamics' order: image, sample, row-major tiles."""
    grid = list(tiles(SHAPE[1:], TILE, OVERLAP))  # CAREamics' tile layout, row-major
    stream = []
    for idx, source in enumerate(SOURCES):
        raw = raw_image(idx)
        data_shape = (SHAPE[0], 1, *SHAPE[1:])  # S C Y X: T becomes the sample axis, C = 1
        for t in range(SHAPE[0]):
            for tile in grid:
                spec = {"data_idx": idx, "sample_idx": t, "coords": tile.start, "patch_size": tile.size,
                        "crop_coords": tile.crop_start, "crop_size": tile.crop_size,
                        "stitch_coords": tile.stitch_start, "total_tiles": len(grid) * SHAPE[0]}
                stream.append(ImageRegionData(model(raw[(t, *tile.region)]), str(base / source), data_shape,
                                              "uint16", "TYX", "TYX", SHAPE, spec, {}))
    return stream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="directory for the predictions (CAREamics' dirpath)")
    parser.add_argument("--blend", action="store_true", help="blend tile overlaps instead of cropping")
    args = parser.parse_args(argv)

    out = Path(args.out)
    base = out.parent / "inputs"  # where the (simulated) source files live
    kw = {"tile_mode": "blend", "tile_overlap": OVERLAP} if args.blend else {}
    strategy = OmeZarrWriteStrategy(fingerprint=f"{MODEL}, {kw or 'crop'}", **kw)
    strategy.set_source_base(base / "raw")  # the callback does this in setup()
    stream = prediction_stream(base)
    for i in range(0, len(stream), 4):  # write_on_batch_end, one decollated batch at a time
        strategy.write_batch(out, stream[i:i + 4])
    incomplete = strategy.finalize()  # FinalizePredictions does this at the end of predict
    for path in sorted(out.rglob("*.ome.zarr")):
        with open_output(path, mode="r") as o:
            print(f"{path.relative_to(out)}: {o[''].progress().levels} resolution levels")
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
