"""Stream a segmentation model's output as labels beside the image it segments.

Each tile goes through a model that returns two things: a denoised tile (stored in the
image ``cells``) and a label tile (stored in ``cells/labels/nuclei``): 0 for background,
1..N for nuclei. Both are written tile by tile, in crop mode, and each finalizes itself
when its last chunk is stored. The label's pyramid keeps the most frequent label of each
2x2 block ("mode"), so zooming out never shows a label value no pixel has. Open the
result in napari: the image comes with a Labels layer.

    python examples/segment_to_labels.py out.zarr
    napari --plugin napari-ome-zarr out.zarr/cells
"""

from __future__ import annotations

import argparse

import numpy as np

import ngff_writer as nw
from ngff_writer.tiling import tiles

SHAPE = (3, 512, 640)  # s y x: three fields of view
TILE, OVERLAP = (128, 128), (16, 16)
CENTERS = [(np.random.default_rng(s).uniform(20, [492, 620], size=(25, 2))) for s in range(SHAPE[0])]


def microscope(sample: int) -> np.ndarray:
    """A noisy image of 25 round nuclei."""
    yy, xx = np.mgrid[:SHAPE[1], :SHAPE[2]]
    image = np.zeros(SHAPE[1:], np.float32)
    for cy, cx in CENTERS[sample]:
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 8.0**2))
    return image + np.random.default_rng(sample).normal(0, 0.2, SHAPE[1:]).astype(np.float32)


def model(tile: np.ndarray, start: tuple[int, int], sample: int) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in network: smoothed intensities, and each bright pixel labelled by its nucleus."""
    denoised = np.clip(tile, 0, None).astype(np.float32)
    yy, xx = np.mgrid[start[0]:start[0] + tile.shape[0], start[1]:start[1] + tile.shape[1]]
    centers = CENTERS[sample]
    distance = (yy[..., None] - centers[:, 0]) ** 2 + (xx[..., None] - centers[:, 1]) ** 2
    labels = (np.argmin(distance, axis=-1) + 1).astype(np.uint16)
    labels[np.min(distance, axis=-1) > 12.0**2] = 0
    return denoised, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    args = parser.parse_args(argv)

    with nw.open_output(args.out, mode="w") as out:
        image = out.create_image("cells", SHAPE, "syx", chunks=(1, 128, 128),
                                 scale={"y": 0.65, "x": 0.65}, units="micrometer")
        nuclei = out.create_labels(image, "nuclei", "uint16",
                                   colors={k: (40 * k % 256, 255 - 9 * k, 120, 255) for k in range(1, 26)},
                                   properties={k: {"nucleus": k} for k in range(1, 26)})
        for s in range(SHAPE[0]):
            raw = microscope(s)
            for t in tiles(SHAPE[1:], TILE, OVERLAP):
                box = tuple(slice(a, a + n) for a, n in zip(t.start, t.size, strict=True))
                denoised, labels = model(raw[box], t.start, s)
                where = {"crop_start": t.crop_start, "crop_size": t.crop_size, "stitch_start": t.stitch_start}
                image.write_tile(s, denoised, **where)
                nuclei.write_tile(s, labels, **where)
        for p in out.status():
            print(f"{p.name}: {p.done}/{p.total} samples, {'complete' if p.complete else 'in progress'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
