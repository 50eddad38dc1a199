"""A demo export: a fake model predicts on synthetic images, ngff-writer streams the output.

Used by ``ngff-writer demo`` and by the README's first command. It exercises the public
API only, the way a prediction loop would: declare every image, then write samples in
the order a shuffled data loader delivers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._output.handle import open_output

__all__ = ["DEMO_IMAGES", "DemoImage", "fake_model", "run_demo", "synthetic_input"]


@dataclass(frozen=True)
class DemoImage:
    """One image of the demo: its declaration and the model's channel names."""

    name: str
    axes: str
    shape: tuple[int, ...]
    channels: tuple[str, ...] = ()
    chunks: tuple[int, ...] | None = None


# The default pyramid ("auto") halves y and x until a plane fits in one chunk: the 3-D
# embryo (chunks of 128 x 256 pixels) and the 2-D tissue (chunks of 256 x 256) get a
# level below full resolution; the small time-lapse fits in one chunk and gets none.
DEMO_IMAGES = (
    DemoImage("embryo_3d", "sczyx", (6, 2, 24, 256, 256), ("nuclei", "membranes")),
    DemoImage("tissue_2d", "syx", (8, 512, 512), chunks=(1, 256, 256)),
    DemoImage("timelapse", "tczyx", (5, 1, 12, 192, 192), ("denoised",)),
)


def synthetic_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A noisy raw sample: bright blobs on a dark background (spatial axes only)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    image = np.zeros(shape, dtype=np.float32)
    for _ in range(12):
        centre = [rng.uniform(0, n) for n in shape]
        radius = rng.uniform(4, max(6.0, min(shape) / 6))
        d2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
        image += np.exp(-d2 / (2 * radius**2)).astype(np.float32)
    return image + rng.normal(0, 0.3, shape).astype(np.float32)


def fake_model(raw: np.ndarray, n_channels: int) -> np.ndarray:
    """Stand-in for a denoising network: a separable box blur per output channel."""
    out = []
    for c in range(n_channels):
        smooth = raw
        width = 3 + 2 * c
        kernel = np.ones(width, dtype=np.float32) / width
        for axis in range(raw.ndim):
            smooth = np.apply_along_axis(np.convolve, axis, smooth, kernel, mode="same")
        out.append(smooth.astype(np.float32))
    return np.stack(out)


def _sample_arrays(image: DemoImage) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (sample index, prediction) in shuffled order, as a data loader might."""
    axes, shape = image.axes, image.shape
    n = shape[axes.index("s")] if "s" in axes else 1
    sample_axes = axes.replace("s", "")
    sample_shape = tuple(shape[axes.index(a)] for a in sample_axes)
    spatial = tuple(shape[axes.index(a)] for a in sample_axes if a in "zyx")
    n_channels = shape[axes.index("c")] if "c" in axes else 1
    n_time = shape[axes.index("t")] if "t" in axes else 1
    for index in np.random.default_rng(7).permutation(n):
        frames = [fake_model(synthetic_input(spatial, seed=int(index) * 31 + t), n_channels)
                  for t in range(n_time)]
        pred = np.stack(frames)  # t c (z) y x
        if "t" not in sample_axes:
            pred = pred[0]
        if "c" not in sample_axes:
            pred = pred[:, 0] if "t" in sample_axes else pred[0]
        yield int(index), pred.reshape(sample_shape)


def run_demo(out_path: str | Path, *, overwrite: bool = False, show_progress: bool = True) -> list[str]:
    """Write the demo export to ``out_path`` and return the image names.

    Parameters
    ----------
    out_path
        Directory to create.
    overwrite
        Replace an existing directory instead of refusing.
    show_progress
        Draw a rich progress bar.
    """
    from rich.progress import Progress as Bar

    out = open_output(out_path, mode="w" if overwrite else "w-")
    with out, Bar(disable=not show_progress, transient=False) as bar:
        images = []
        for spec in DEMO_IMAGES:
            kw: dict[str, Any] = {"channel_names": spec.channels} if spec.channels else {}
            if spec.chunks is not None:
                kw["chunks"] = spec.chunks
            images.append(out.create_image(
                spec.name, spec.shape, spec.axes, "float32",
                scale={"z": 2.0, "y": 0.65, "x": 0.65} if "z" in spec.axes else {"y": 0.65, "x": 0.65},
                units="micrometer", **kw,
            ))
        total = sum(img.n_samples for img in images)
        task = bar.add_task("predicting", total=total)
        for spec, img in zip(DEMO_IMAGES, images, strict=True):
            for index, prediction in _sample_arrays(spec):
                img.write_sample(index, prediction)
                bar.advance(task)
        return [img.name for img in images]
