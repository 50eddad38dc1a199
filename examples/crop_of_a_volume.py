"""Export arrays in hand in one call: a crop of a volume placed where it lies, and the volume.

A region of interest of a larger volume is denoised in memory (numpy) and written with
``write_image`` at its place in the volume (``translation``); the whole volume, denoised
lazily block by block (dask), goes beside it. Each call streams its array in blocks with
its pyramid, and a second run changes nothing. Open both in napari or neuroglancer:

    python examples/crop_of_a_volume.py out.zarr
    ngff-writer info out.zarr
"""

from __future__ import annotations

import argparse

import dask.array as da
import numpy as np

import ngff_writer as nw

SCALE = {"z": 2.0, "y": 0.5, "x": 0.5}  # micrometers per pixel
ROI = (slice(16, 48), slice(128, 384), slice(192, 448))  # z y x, in pixels of the volume


def volume() -> np.ndarray:
    """A noisy 64 x 512 x 512 volume of smooth structure."""
    z, y, x = np.meshgrid(*(np.linspace(0, 1, n, dtype=np.float32) for n in (64, 512, 512)), indexing="ij")
    signal = np.sin(6 * np.pi * x) * np.cos(4 * np.pi * y) * np.exp(-z)
    return signal + np.random.default_rng(0).normal(0, 0.3, signal.shape).astype(np.float32)


def denoise(block: np.ndarray) -> np.ndarray:
    """A stand-in network: a 3x3 mean in y and x."""
    padded = np.pad(block, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return sum(padded[:, dy:dy + block.shape[1], dx:dx + block.shape[2]]
               for dy in range(3) for dx in range(3)) / np.float32(9)


def denoised_lazily(raw: np.ndarray) -> da.Array:
    """The volume denoised block by block (each block on its own, as a tiled network would)."""
    return da.from_array(raw, chunks=(16, 256, 512)).map_blocks(denoise, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="output store, e.g. out.zarr")
    args = parser.parse_args(argv)
    raw = volume()

    # The crop, in memory: placed at the physical position of its first pixel.
    place = {a: s.start * SCALE[a] for a, s in zip("zyx", ROI, strict=True)}
    roi = nw.write_image(args.out, denoise(raw[ROI]), "zyx", name="roi", scale=SCALE, translation=place,
                         units="micrometer", fingerprint="mean3x3 roi")
    # The whole volume, lazily: dask computes and stores it block by block.
    whole = nw.write_image(args.out, denoised_lazily(raw), "zyx", name="volume", scale=SCALE,
                           units="micrometer")
    for name, progress in (("roi", roi), ("volume", whole)):
        print(f"{name}: {'complete' if progress.complete else 'incomplete'}, {progress.levels} levels")
    return 0 if roi.complete and whole.complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
