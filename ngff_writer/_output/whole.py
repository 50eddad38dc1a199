"""One call for an array in hand: :func:`write_image`.

A numpy array (or anything ``np.asarray`` takes) is declared as an image and handed to
the write path in blocks of whole write units, about :data:`BLOCK_BYTES` each, which are
stored, reduced for the pyramid and recorded as any write is: memory beyond the array
stays bounded by the context's budget, and a call after a crash writes only the blocks not
stored yet. A dask array goes to :func:`ngff_writer.dask.to_image`, which computes and
stores its blocks where dask runs them.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from .._declare.spec import ImageSpec
from .._storage.stores import StoreLike
from .._write.context import Context
from .handle import Progress, open_output

__all__ = ["BLOCK_BYTES", "write_image"]

#: About how many bytes each block handed to the write path holds (whole units, so
#: never less than one unit): a sample of the benchmarks' size, well inside the budget.
BLOCK_BYTES = 32 << 20


def _blocks(spec: ImageSpec) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(start, shape)`` of blocks of whole write units covering the image, C order.

    A block grows from one unit along the last axes first (to the axis' end) while it
    stays within :data:`BLOCK_BYTES`, so its rows are long runs of the array's memory.
    """
    unit = list(spec.shards or spec.chunks)
    itemsize = spec.np_dtype.itemsize
    for axis in reversed(range(len(unit))):
        per_unit = math.prod(unit) * itemsize
        times = max(1, min(-(-spec.shape[axis] // unit[axis]), BLOCK_BYTES // per_unit))
        grown = min(spec.shape[axis], unit[axis] * times)
        if grown < spec.shape[axis]:
            unit[axis] = grown
            break
        unit[axis] = spec.shape[axis]
    starts = [range(0, n, b) for n, b in zip(spec.shape, unit, strict=True)]
    return [(start, tuple(min(b, n - s) for s, b, n in zip(start, unit, spec.shape, strict=True)))
            for start in itertools.product(*starts)]


def _bar(total: int, label: str, show: bool | None) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    # In a terminal the bar goes when done; elsewhere (asked for in a log) it is printed
    # once, at the end, as rich does where it cannot redraw.
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, transient=console.is_terminal,
                    disable=not (console.is_terminal if show is None else show))
    return bars, bars.add_task(label, total=total)


def write_image(
    target: StoreLike,
    array: Any,
    axes: str,
    *,
    name: str = "",
    fingerprint: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    storage_options: dict[str, Any] | None = None,
    ngff_version: str = "0.5",
    context: Context | None = None,
    **declaration: Any,
) -> Progress:
    """Write ``array`` as one OME-Zarr image, with its pyramid; resume it if it is partly there.

    The one call for an array in hand (ome-zarr-py's ``write_image``): it declares the
    image, streams the array into it in blocks of whole chunks, builds the pyramid on the
    way, and finalizes it. Called again after a crash, it writes only what is missing; on
    a complete image of the same array it does nothing.

    Parameters
    ----------
    target
        The output: a path, a URL (``s3://...``) or a zarr store. Created if missing.
    array
        A numpy array (or anything ``np.asarray`` takes), or a dask array (then
        :func:`ngff_writer.dask.to_image` does the work, on the current scheduler).
    axes
        The array's axes, e.g. ``"zyx"`` or ``"sczyx"`` (``s``: samples), in its order.
    name
        The image's path in the output; default ``""``: the output is the image.
    fingerprint
        What made the array. Default: a token of its content (dask's ``tokenize``, which
        reads the whole array once; for a dask array, of its graph), so that a call with
        other data on an existing image is refused rather than mixed in.
    overwrite
        Replace an image that holds other data (only what ngff-writer wrote; see
        :meth:`~ngff_writer.Output.create_image`).
    progress
        Show a progress bar on stderr; default: when stderr is a terminal.
    storage_options, ngff_version, context
        As :func:`~ngff_writer.open_output` takes them (``ngff_version`` for a new output).
    **declaration
        Passed to :meth:`~ngff_writer.Output.create_image`: ``chunks``, ``shards``,
        ``pyramid``, ``scale``, ``translation``, ``units``, ``channel_names``, ``dtype``...
        (default dtype: the array's).

    Returns
    -------
    Progress
        The image's progress, read from the store: complete unless a write failed.

    Raises
    ------
    OutputExistsError
        The image holds other data (another fingerprint) and ``overwrite`` is False.
    SpecMismatchError
        The image exists with other settings.
    ShapeMismatchError, SpecError, InvalidAxesError
        ``array`` and ``axes`` (or the declaration) do not make an image; nothing is written.
    """
    import dask.array as da
    import dask.base

    if isinstance(array, da.Array):
        from ..dask import to_image

        if context is not None:
            raise TypeError("write_image(context=...) applies to numpy arrays; a dask array is "
                            "written by its scheduler's workers, each with its default context")
        return to_image(array, target, name, axes, storage_options=storage_options,  # type: ignore[no-any-return]
                        ngff_version=ngff_version, fingerprint=fingerprint, overwrite=overwrite,
                        **declaration)
    data = np.asarray(array)
    dtype = declaration.pop("dtype", data.dtype)
    if fingerprint is None:
        fingerprint = f"array:{dask.base.tokenize(data)}"
    with open_output(target, mode="a", storage_options=storage_options, ngff_version=ngff_version,
                     context=context) as out:
        image = out.create_image(name, data.shape, axes, dtype, exist_ok=True, fingerprint=fingerprint,
                                 overwrite=overwrite, **declaration)
        pending = image.pending_blocks(_blocks(image.spec))
        bars, task = _bar(len(pending), name or str(target), progress)
        with bars:
            for start, shape in pending:
                block = data[tuple(slice(s, s + n) for s, n in zip(start, shape, strict=True))]
                # The caller's array outlives this call, which stores everything before it
                # returns: nothing to copy.
                image.write_block(block, start, copy=False)
                bars.advance(task)
        image.flush()
    with open_output(target, mode="r", storage_options=storage_options) as done:
        return done.image(name).progress()

