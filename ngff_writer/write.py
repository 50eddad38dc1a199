"""Checks and shapes a sample so it can be stored straight into its slot.

Every check runs before anything is stored: a refused write changes nothing.

Dtype rule: data is converted to the image dtype when numpy's ``np.can_cast`` allows it
under the image's ``cast`` setting. The default, ``"safe"``, accepts only conversions
that keep every value (``uint8 → float32``, ``float32 → float64``) and raises
:class:`~ngff_writer.errors.LossyCastError` for the rest (``float64 → float32``,
``float → int``). ``cast="same_kind"`` also allows narrowing within a kind
(``float64 → float32``); ``cast="unsafe"`` allows anything, as ``ndarray.astype`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import LossyCastError, SampleIndexError, ShapeMismatchError, UnsupportedDtypeError
from .spec import ImageSpec

__all__ = ["check_index", "prepare_sample"]


def check_index(spec: ImageSpec, index: Any) -> int:
    """Return ``index`` as an int in ``[0, n_samples)`` or raise :class:`SampleIndexError`."""
    n = spec.layout.n_samples
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise SampleIndexError(f"image {spec.name!r}: sample index must be an int, got {index!r}")
    if not 0 <= index < n:
        raise SampleIndexError(
            f"image {spec.name!r}: sample index {index} is out of range [0, {n})"
        )
    return int(index)


def cast_to(spec: ImageSpec, data: np.ndarray) -> np.ndarray:
    """Convert ``data`` to the image dtype under the image's casting rule."""
    target = spec.np_dtype
    if data.dtype == target:
        return data
    if data.dtype.kind not in "buif":
        raise UnsupportedDtypeError(f"image {spec.name!r}: cannot store {data.dtype} data")
    if not np.can_cast(data.dtype, target, casting=spec.cast):
        raise LossyCastError(
            f"image {spec.name!r}: converting {data.dtype} to {target} may lose values "
            f"(cast={spec.cast!r}); convert it yourself or declare the image with "
            "cast='same_kind' or cast='unsafe'"
        )
    return data.astype(target, casting=spec.cast)


def prepare_sample(spec: ImageSpec, index: Any, data: Any) -> tuple[int, np.ndarray]:
    """Validate a sample and return ``(index, block)``, block in stored order.

    The block has the shape of the sample's region of the stored array
    (:meth:`~ngff_writer.spec.Layout.sample_region`), the sample axis included.
    """
    layout = spec.layout
    index = check_index(spec, index)
    array = np.asarray(data)
    if array.shape != layout.sample_shape:
        raise ShapeMismatchError(
            f"image {spec.name!r}: a sample must have shape {layout.sample_shape} "
            f"(axes {spec.axes.replace('s', '')!r}), got {array.shape}"
        )
    array = cast_to(spec, array)
    block = array.transpose(layout.sample_perm)
    if layout.sample_axis is not None and not layout.merged:
        block = np.expand_dims(block, layout.sample_axis)
    return index, block
