"""A faithful stand-in of CAREamics' prediction stream, for tests (no careamics, no torch).

CAREamics (shared/reference/careamics.md) hands its write strategy decollated batches:
lists of ``ImageRegionData`` whose ``data`` is one prediction ``C (Z) Y X`` and whose
``region_spec`` is a ``PatchSpecs`` (whole image) or ``TileSpecs`` (one tile) dict. This
module builds such streams from an input array and its axes string:

- :func:`careamics_reshape` moves the axes to ``S T C Z Y X``, merges S and T into one
  sample axis (``s * T + t``) and adds ``C = 1`` if missing, giving ``data_shape``;
- :func:`model` maps ``C_in`` input channels to ``C_out`` output channels, pixelwise (so a
  tile's prediction equals the same crop of the whole image's prediction, bit for bit);
- :func:`predictions` yields every prediction of an image, untiled or tiled with the
  geometry of ``tests/tiling.py``, in CAREamics' order (sample, then row-major tiles);
- :func:`stitch` and :func:`blend` rebuild the per-sample predictions in memory (crop and
  weighted-blend references), and :func:`expected_output` lays them out as the output
  OME-Zarr stores them (axes ``t s c z y x`` minus absent ones; ``s`` merged into ``t`` as
  ``s * T + t`` when S, T, C and Z are all present, see ``ngff_writer/_declare/spec.py``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tiling import tile_specs

__all__ = [
    "ArrayLike",
    "ImageRegionData",
    "Source",
    "batches",
    "blend",
    "careamics_reshape",
    "expected_output",
    "interleave",
    "model",
    "predictions",
    "stitch",
    "stored_axes",
    "zarr_uri",
]


class ImageRegionData(NamedTuple):
    """CAREamics' ``ImageRegionData``: same field names, same positional order."""

    data: Any
    source: str
    data_shape: tuple[int, ...]
    dtype: str
    axes: str
    target_axes: str
    original_data_shape: tuple[int, ...]
    region_spec: dict[str, Any]
    additional_metadata: dict[str, Any]


class ArrayLike:
    """Not a numpy array, but ``np.asarray`` takes it (as it takes a CPU tensor)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self._array if dtype is None else self._array.astype(dtype)


# ---- CAREamics' data model ---------------------------------------------------------------------
def careamics_reshape(array: np.ndarray, axes: str) -> np.ndarray:
    """``array`` with ``axes`` (any order of STCZYX) as CAREamics holds it: ``S C (Z) Y X``.

    S and T are merged s-major (sample ``s * T + t``); C is 1 when the input has none.
    """
    axes = axes.upper()
    assert array.ndim == len(axes), (array.shape, axes)
    present = [a for a in "STCZYX" if a in axes]
    moved = np.transpose(array, [axes.index(a) for a in present])
    size = dict(zip(present, moved.shape, strict=True))
    shape = [size.get("S", 1) * size.get("T", 1), size.get("C", 1)]
    shape += [size[a] for a in "ZYX" if a in size]
    return moved.reshape(shape)  # S before T: the merged index is s * T + t


def model(x: np.ndarray, c_out: int, dtype: Any = np.float32) -> np.ndarray:
    """A stand-in network: ``C_in (Z) Y X`` to ``c_out (Z) Y X``, pixel by pixel.

    Only exactly rounded elementwise operations, so predicting a tile gives the same
    crop of the whole image's prediction bit for bit.
    """
    x = np.asarray(x, dtype=dtype)
    out = np.empty((c_out, *x.shape[1:]), dtype=dtype)
    for o in range(c_out):
        acc = np.zeros(x.shape[1:], dtype=dtype)
        for i in range(x.shape[0]):
            acc = acc + x[i] * dtype_cast(dtype, 0.5 + 0.25 * o - 0.125 * i)
        out[o] = acc * acc * dtype_cast(dtype, 0.01) + dtype_cast(dtype, o)
    return out


def dtype_cast(dtype: Any, value: float) -> Any:
    return np.dtype(dtype).type(value)


@dataclass
class Source:
    """One input image as CAREamics' dataset would see it.

    Attributes
    ----------
    array
        The input in its original axes order.
    axes
        Its axes string, e.g. ``"YXS"`` or ``"STCZYX"``.
    source
        A file path string, ``"array"``, or a zarr URI ``file:///abs/x.zarr/raw/0``.
    data_idx
        Index of the image in the dataset.
    c_out
        Channels the model predicts.
    """

    array: np.ndarray
    axes: str
    source: str
    data_idx: int
    c_out: int
    additional_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> np.ndarray:
        """The input as CAREamics holds it: ``S C (Z) Y X``."""
        return careamics_reshape(self.array, self.axes)

    @property
    def n_samples(self) -> int:
        return self.data.shape[0]

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.data.shape[2:]


def _region_ints(values: Sequence[int], as_array: bool) -> Any:
    """Coordinates as a tuple, or as an int64 array (as decollated tensors arrive)."""
    return np.asarray(values, dtype=np.int64) if as_array else tuple(int(v) for v in values)


def predictions(
    src: Source,
    *,
    patch: Sequence[int] | None = None,
    overlap: Sequence[int] | None = None,
    dtype: Any = np.float32,
    noise: float = 0.0,
    seed: int = 0,
    mixed_types: bool = True,
    pad: str | None = None,
) -> list[ImageRegionData]:
    """Every prediction of ``src`` in CAREamics' order: sample, then tiles row-major.

    Parameters
    ----------
    patch, overlap
        Tile size and overlap per space axis ((Z)YX); None: untiled (``PatchSpecs``).
    dtype
        Dtype of the predictions.
    noise
        Standard deviation of a per-tile perturbation, so that overlaps disagree (blend).
    mixed_types
        Give some predictions as :class:`ArrayLike` data and int64-array coordinates.
    pad
        As CAREamics 0.3.5 does for an image smaller than the patch along an axis: tiles
        zero-padded to the patch size there, ``"end"`` (after the data) or ``"both"``
        (split around it), the crop coordinates pointing at the data inside.
    """
    data = src.data
    axes = src.axes.upper()
    rng = np.random.default_rng(seed + 7919 * src.data_idx)
    common = dict(
        source=src.source, data_shape=tuple(data.shape), dtype=str(src.array.dtype), axes=axes,
        target_axes=axes, original_data_shape=tuple(src.array.shape),
        additional_metadata=dict(src.additional_metadata),
    )
    out: list[ImageRegionData] = []
    spatial = src.spatial
    tiles = None if patch is None else list(tile_specs(spatial, patch, overlap or (0,) * len(patch)))
    for sample in range(data.shape[0]):
        if tiles is None:
            regions: list[Any] = [None]
        else:
            regions = tiles
        for tile in regions:
            k = len(out)
            as_array = mixed_types and k % 3 == 1
            if tile is None:
                spec: dict[str, Any] = {
                    "data_idx": src.data_idx, "sample_idx": sample,
                    "coords": _region_ints((0,) * len(spatial), as_array),
                    "patch_size": _region_ints(spatial, as_array),
                }
                pred = model(data[sample], src.c_out, dtype)
            else:
                box = tuple(slice(a, a + n) for a, n in zip(tile.tile_start, tile.tile_size, strict=True))
                pred = model(data[(sample, slice(None), *box)], src.c_out, dtype)
                if noise:
                    pred = (pred + rng.normal(0, noise, pred.shape)).astype(dtype)
                before = [0] * len(spatial)
                if pad:
                    extra = [max(0, q - t) for q, t in zip(patch, tile.tile_size, strict=True)]
                    before = [e // 2 if pad == "both" else 0 for e in extra]
                    pred = np.pad(pred, [(0, 0)] + [(b, e - b) for b, e in zip(before, extra, strict=True)])
                spec = {
                    "data_idx": src.data_idx, "sample_idx": sample,
                    "coords": _region_ints([a - b for a, b in zip(tile.tile_start, before, strict=True)],
                                           as_array),
                    "patch_size": _region_ints(pred.shape[1:], as_array),
                    "crop_coords": _region_ints(
                        [a + b for a, b in zip(tile.crop_coords, before, strict=True)], as_array),
                    "crop_size": _region_ints(tile.crop_size, as_array),
                    "stitch_coords": _region_ints(tile.stitch_coords, as_array),
                    "total_tiles": len(tiles) * data.shape[0],
                }
            payload = ArrayLike(pred) if mixed_types and k % 3 == 2 else pred
            out.append(ImageRegionData(data=payload, region_spec=spec, **common))
    return out


# ---- arrival order -----------------------------------------------------------------------------
def interleave(streams: Sequence[list[ImageRegionData]], seed: int) -> list[ImageRegionData]:
    """Predictions of several images mixed in a random order."""
    everything = [p for stream in streams for p in stream]
    random.Random(seed).shuffle(everything)
    return everything


def batches(preds: Sequence[ImageRegionData], seed: int, max_size: int = 5) -> Iterator[list]:
    """Split a stream into decollated batches of random sizes ``1..max_size``."""
    rnd = random.Random(seed)
    i = 0
    while i < len(preds):
        n = rnd.randint(1, max_size)
        yield list(preds[i:i + n])
        i += n


# ---- references --------------------------------------------------------------------------------
def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in np.asarray(v).reshape(-1))


def _canvas(preds: Sequence[ImageRegionData], dtype: Any) -> np.ndarray:
    first = preds[0]
    c_out = np.asarray(first.data).shape[0]
    return np.zeros((first.data_shape[0], c_out, *first.data_shape[2:]), dtype=dtype)


def stitch(preds: Sequence[ImageRegionData]) -> np.ndarray:
    """In-memory stitch of one image's predictions (crop mode): ``N C (Z) Y X``, N = S*T."""
    out = None
    for p in preds:
        data = np.asarray(p.data)
        if out is None:
            out = _canvas(preds, data.dtype)
        spec = p.region_spec
        if "crop_coords" in spec:
            crop = tuple(slice(a, a + n) for a, n in
                         zip(_ints(spec["crop_coords"]), _ints(spec["crop_size"]), strict=True))
            dest = tuple(slice(a, a + n) for a, n in
                         zip(_ints(spec["stitch_coords"]), _ints(spec["crop_size"]), strict=True))
            out[(int(spec["sample_idx"]), slice(None), *dest)] = data[(slice(None), *crop)]
        else:
            dest = tuple(slice(a, a + n) for a, n in zip(_ints(spec["coords"]), data.shape[1:], strict=True))
            out[(int(spec["sample_idx"]), slice(None), *dest)] = data
    assert out is not None
    return out


def blend(preds: Sequence[ImageRegionData], overlap: Sequence[int], ramp: str = "cosine") -> np.ndarray:
    """In-memory weighted blend of one image's tiles (float64): ``N C (Z) Y X``."""
    from ngff_writer._write.blend import tile_weights

    total = _canvas(preds, np.float64)
    weight = np.zeros((total.shape[0], *total.shape[2:]), np.float64)
    space = total.shape[2:]
    for p in preds:
        data = np.asarray(p.data, dtype=np.float64)
        spec = p.region_spec
        start = _ints(spec["coords"])
        size = data.shape[1:]
        w = tile_weights(start, size, space, overlap, ramp)
        box = tuple(slice(a, a + n) for a, n in zip(start, size, strict=True))
        s = int(spec["sample_idx"])
        total[(s, slice(None), *box)] += w * data
        weight[(s, *box)] += w
    return total / weight[:, None]


def _sizes(axes: str, original_shape: Sequence[int]) -> tuple[int, int]:
    axes = axes.upper()
    n_s = original_shape[axes.index("S")] if "S" in axes else 1
    n_t = original_shape[axes.index("T")] if "T" in axes else 1
    return n_s, n_t


def stored_axes(axes: str, c_out: int) -> str:
    """Axes of the output image as stored: ``t s c z y x`` minus absent ones.

    ``c`` is kept when the input has C or the model predicts several channels; ``s`` is
    merged into ``t`` when that would make six axes.
    """
    axes = axes.upper()
    keep = {"t": "T" in axes, "s": "S" in axes, "c": c_out > 1 or "C" in axes,
            "z": "Z" in axes, "y": True, "x": True}
    letters = "".join(a for a in "tsczyx" if keep[a])
    if len(letters) > 5:
        letters = letters.replace("s", "")
    return letters


def expected_output(per_sample: np.ndarray, axes: str, original_shape: Sequence[int]) -> np.ndarray:
    """Lay ``N C (Z) Y X`` predictions (N = S*T, s-major) out as the output image stores them."""
    n_s, n_t = _sizes(axes, original_shape)
    assert per_sample.shape[0] == n_s * n_t
    c_out = per_sample.shape[1]
    letters = stored_axes(axes, c_out)
    if "S" in axes.upper() and "s" not in letters:  # merged: t index s * T + t
        return per_sample
    full = per_sample.reshape(n_s, n_t, *per_sample.shape[1:])  # s t c (z) y x
    full = np.moveaxis(full, 1, 0)  # t s c (z) y x
    drop = tuple(i for i, a in enumerate("tsc") if a not in letters)
    return full.reshape([n for i, n in enumerate(full.shape) if i not in drop])


def zarr_uri(path: Path, inner: str) -> str:
    """A CAREamics zarr source: ``file:///abs/path/exp.zarr/<inner>``."""
    return Path(path).resolve().as_uri() + "/" + inner.strip("/")
