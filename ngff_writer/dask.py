"""Export a dask array of predictions into an OME-Zarr image, block by block, on any dask scheduler.

::

    import dask.array as da
    from ngff_writer.dask import to_image

    prediction = da.map_blocks(model, raw, dtype="float32")   # lazy: nothing computed yet
    to_image(prediction, "predictions.zarr", "embryo", axes="sczyx", chunks=(1, 1, 16, 256, 256))

How the graph is made, and why:

- **One store task per block, one finishing task.** Each block of the array is computed
  where dask schedules it and stored right there, through the image's normal write path
  (:meth:`ngff_writer.Image.write_block`: whole chunks only, records after the data).
  Nothing but a count travels back to the client, and no task sees the whole array.
- **Blocks need not match chunks.** A block's partial chunks are saved as fragments
  before its task ends, and whichever worker saves the last part of a chunk stores it,
  as several processes writing tiles do. The finishing task completes what is left and
  finalizes the image (pyramid levels, windows).
- **A task is durable when it is done.** Its data, fragments and log records are in
  the store before the task reports success, so a worker that dies later loses nothing.
- **A re-run computes only what is missing.** The client reads the image's log once and
  builds store tasks only for blocks with a chunk not yet stored; dask then drops the
  prediction tasks of every other block. After a crash (a killed worker, a restarted
  cluster, a failed job), call :func:`to_image` again.
- **Another array is another job.** The image records dask's token of the array (its
  graph: the inputs and the functions that make it) as its fingerprint. Calling
  :func:`to_image` again with the same array continues (or does nothing if it is
  complete); with another one (``a * 5``, a retrained model in ``map_blocks``) it raises
  :class:`~ngff_writer.OutputExistsError` before computing anything, unless
  ``overwrite=True``, which replaces the image.

Each worker process keeps one open output per image it writes (one writer, so the log
stays a few objects per worker however many blocks there are); store tasks on it take
turns (a lock), while the output's own threads overlap encoding and I/O. Any dask
scheduler works: the threaded one (the default for arrays), processes, or a
``distributed.Client`` (``LocalCluster(processes=True)`` or a real cluster). For S3 pass
a URL and ``storage_options`` (or a picklable zarr store) that workers can use.

Needs ``dask`` (a dependency of ngff-writer); ``distributed`` for clusters.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

import numpy as np

from ._declare.shards import auto_shards
from ._declare.spec import parse_sample_axes
from ._output.handle import Output, Progress, open_output
from ._storage.stores import StoreLike

__all__ = ["aligned_chunks", "store_blocks", "to_image"]

try:
    import dask.array as da
    import dask.base
    from dask.delayed import delayed
except ImportError as exc:  # pragma: no cover - dask is a dependency
    raise ImportError("ngff_writer.dask needs dask: pip install dask") from exc

_lock = threading.Lock()  # one task at a time on a worker process's outputs
_open: dict[tuple[str, str], Output] = {}  # (output, job) -> this process's open output


def _key(root: StoreLike) -> str:
    return root if isinstance(root, str) else f"{type(root).__name__}:{root}"


def _output(root: StoreLike, storage_options: dict[str, Any] | None, job: str) -> Output:
    """This process's open output for ``job``; outputs of earlier jobs are closed."""
    key = (_key(root), job)
    out = _open.get(key)
    if out is None:
        for old in [k for k in _open if k[0] == key[0]]:
            _open.pop(old).close()
        out = _open[key] = open_output(root, mode="a", storage_options=storage_options)
    return out


def _store(root: StoreLike, storage_options: dict[str, Any] | None, job: str, name: str,
           start: tuple[int, ...], block: np.ndarray) -> int:
    """Store one block, durably (data, fragments, records), and return its size."""
    with _lock:
        out = _output(root, storage_options, job)
        image = out[name]
        image.write_block(block, start)
        image.flush()  # partial chunks to fragments, records committed: done means durable
    return int(block.size)


def _finish(root: StoreLike, storage_options: dict[str, Any] | None, job: str, name: str,
            *stored: int) -> Progress:
    """Complete what fragments hold, finalize if everything is stored, report progress."""
    with _lock:
        leftover = _open.pop((_key(root), job), None)
        if leftover is not None:
            leftover.close()
    with open_output(root, mode="a", storage_options=storage_options) as out:
        image = out[name]
        image.flush()
        image.finalize()
        return image.progress()


#: Chunks of the default size stop being halved below this many bytes (as ngff-writer's own default).
_CHUNK_BYTES = 4 << 20


def aligned_chunks(array: da.Array, axes: str) -> tuple[int, ...]:
    """Image chunks that divide the array's blocks: its chunk shape, 1 along ``s``, space axes
    halved (while even) until a chunk is at most 4 MiB."""
    chunks = {a: (1 if a == "s" else int(n)) for a, n in zip(axes.lower(), array.chunksize, strict=True)}
    space = [a for a in axes.lower() if a in "zyx"]
    while np.prod(list(chunks.values())) * array.dtype.itemsize > _CHUNK_BYTES:
        even = [a for a in space if chunks[a] % 2 == 0]
        if not even:
            break
        largest = max(even, key=lambda a: chunks[a])
        chunks[largest] //= 2
    return tuple(chunks[a] for a in axes.lower())


def _block_shards(array: da.Array, axes: str, out: Output, name: str,
                  declaration: dict[str, Any]) -> tuple[int, ...] | None:
    """The default shards of ``to_image``: the array's blocks (1 along ``s``), whole.

    Each block is then whole shards (``auto_shards`` only halves it where it splits
    evenly), so each task stores its own files and none goes through fragments. An image
    stored with other shards (an older version's default) is continued as it is.
    """
    if name in out.images():
        return out.image(name).spec.shards
    chunks = declaration["chunks"]  # to_image set it when the user did not
    block: list[int] | None = [1 if a == "s" else int(n)
                               for a, n in zip(axes.lower(), array.chunksize, strict=True)]
    if any(b % c for b, c in zip(block or (), chunks, strict=True)):
        block = None  # chunks the user chose that do not divide the blocks: one per sample
    sample_axes = parse_sample_axes(declaration.get("sample_axes"), axes.lower())
    return auto_shards(axes.lower(), array.shape, sample_axes, chunks, array.dtype.itemsize,
                       out.ngff_version, start=block)


def _blocks(array: da.Array) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``(block index, start, shape)`` of every block of ``array``."""
    offsets = [np.cumsum((0, *c[:-1])).tolist() for c in array.chunks]
    out = []
    for idx in itertools.product(*(range(n) for n in array.numblocks)):
        start = tuple(int(offsets[d][i]) for d, i in enumerate(idx))
        shape = tuple(int(array.chunks[d][i]) for d, i in enumerate(idx))
        out.append((idx, start, shape))
    return out


def store_blocks(array: da.Array, root: StoreLike, name: str, *,
                 storage_options: dict[str, Any] | None = None) -> Any:
    """A lazy export of ``array`` into the declared image ``name``: a ``dask.delayed`` object.

    Only the blocks not stored yet get a task (the log is read now, once). Computing the
    result stores them and returns the image's :class:`~ngff_writer.Progress`. The image
    must exist with the array's shape (see :func:`to_image`, which declares it).
    """
    with open_output(root, mode="r", storage_options=storage_options) as out:
        image = out[name]
        if tuple(image.spec.shape) != tuple(array.shape):
            from .errors import ShapeMismatchError

            raise ShapeMismatchError(f"image {name!r} has shape {image.spec.shape}; the array has "
                                     f"shape {array.shape} (axes {image.spec.axes!r})")
        blocks = _blocks(array)
        pending = {(tuple(start), tuple(shape))
                   for start, shape in image.pending_blocks([(start, shape) for _, start, shape in blocks])}
    job = uuid.uuid4().hex
    parts = array.to_delayed(optimize_graph=False)  # culled when computed: unneeded blocks drop out
    store = delayed(_store, pure=False)
    stored = [store(root, storage_options, job, name, start, parts[idx],
                    dask_key_name=f"ngff-store-{job}-{k}")
              for k, (idx, start, shape) in enumerate(blocks) if (start, shape) in pending]
    return delayed(_finish, pure=False)(root, storage_options, job, name, *stored,
                                             dask_key_name=f"ngff-finish-{job}")


def to_image(array: da.Array, root: StoreLike, name: str, axes: str, *,
             storage_options: dict[str, Any] | None = None, ngff_version: str = "0.5",
             compute: bool = True, fingerprint: str | None = None, overwrite: bool = False,
             **declaration: Any) -> Any:
    """Declare the image ``name`` for ``array`` (or resume it) and store every block not stored yet.

    Parameters
    ----------
    array
        The predictions, e.g. ``da.map_blocks(model, raw)``: axes as ``axes`` says, in that
        order (``s`` for samples, as :meth:`ngff_writer.Output.create_image` takes them).
    root
        The output (created if missing): a path, a URL or a store workers can reach.
    name
        The image's path in the output ("" for an output that is the image).
    axes
        The array's axes, e.g. ``"sczyx"``.
    storage_options
        For URLs (``s3://...``): credentials and endpoint, used on every worker.
    ngff_version
        Of a new output.
    compute
        Compute now (with the current scheduler or ``distributed`` client) and return the
        image's :class:`~ngff_writer.Progress`; False returns the ``dask.delayed`` object.
    fingerprint
        What produces the array; default ``"dask:" + dask.base.tokenize(array)``, dask's
        deterministic token of its graph. Pass your own where that token is not stable
        across runs (an array built from unseeded random data, say): every run would
        otherwise look like another job.
    overwrite
        Replace the image when it holds another array's data (see the module docstring).
    **declaration
        Passed to ``create_image`` (``chunks``, ``pyramid``, ``scale``, ``units``,
        ``channel_names``...). The dtype is the array's. Without ``chunks``, the image's
        chunks are the array's (1 along ``s``), halved along space axes until at most 4 MiB:
        every block is then whole chunks, and no chunk goes through fragments.

    Raises
    ------
    OutputExistsError
        The image holds another array's data (another fingerprint) and ``overwrite`` is False.
    SpecMismatchError
        The image exists with other settings.
    """
    auto = isinstance(declaration.get("shards", "auto"), str)
    if declaration.get("chunks") is None and (auto or declaration.get("shards") is None):
        declaration["chunks"] = aligned_chunks(array, axes)
    if fingerprint is None:
        fingerprint = f"dask:{dask.base.tokenize(array)}"
    with open_output(root, mode="a", storage_options=storage_options, ngff_version=ngff_version) as out:
        if auto:
            declaration["shards"] = _block_shards(array, axes, out, name, declaration)
        out.create_image(name, array.shape, axes, array.dtype, exist_ok=True, fingerprint=fingerprint,
                         overwrite=overwrite, **declaration)
    export = store_blocks(array, root, name, storage_options=storage_options)
    return export.compute() if compute else export
