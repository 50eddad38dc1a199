"""One image of an output: writing samples, regions, tiles and blocks; progress; finalizing.

An :class:`Image` hands what it is given, checked (:mod:`ngff_writer._write.checks`) and copied,
to its pipeline (:mod:`ngff_writer._write.pipeline`), which stores it in the background; it
reads its progress from the log (:mod:`ngff_writer._track.log`) without writing anything, and
becomes final (:mod:`ngff_writer._write.finalize`) once the write that completes it is stored,
on ``flush``/``close``, or on :meth:`Image.finalize`: never on a read.

Writing into a complete image is a retry of the job that made it (the output checked the
fingerprint when the image was opened): the data is checked as any write, then dropped.
The arrays an image hands out are read-only: a write there would escape the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import zarr
from zarr.abc.store import Store

from .._declare.bookkeeping import CONTINUES_FROM, FORMAT, Identity, check_format
from .._declare.spec import ImageSpec
from .._ngff.edits import Edits, parse_edits
from .._ngff.metadata import STATUS_COMPLETE, read_writer_attrs
from .._storage.stores import describe, join, node_attributes, read_only_array, sweep_temporary
from .._track.log import LIVE_FOR, Ledger, samples_done
from .._write.allocate import declaration_of
from .._write.checks import (
    block_regions,
    check_blend_tile,
    check_index,
    crop_tile,
    prepare_block,
    prepare_region,
    slot,
    tile_start_of,
    unpad_tile,
)
from .._write.context import Context
from .._write.pipeline import Pipeline
from ..errors import (
    FormatVersionError,
    ImageReplacedError,
    ShapeMismatchError,
    SpecError,
    WriteError,
)
from ..tiling import Tile
from .edit import edit_final

__all__ = ["Image", "Progress"]


class Owner(Protocol):
    """What an image needs of the output it belongs to (:class:`ngff_writer.Output`)."""

    store: Store
    context: Context
    commit_interval: float | None
    max_buffer_bytes: int
    buffer_policy: str

    @property
    def mode(self) -> str: ...

    def _check_open(self) -> None: ...

    def _check_writable(self) -> None: ...

    def _adopt(self, pipeline: Pipeline) -> None: ...


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far an image is, read from the store.

    Attributes
    ----------
    name
        Image path inside the output.
    done, total
        Samples fully stored, and samples in the image.
    complete
        True once the image is final (every block stored and metadata finalized).
    pending
        Indices of samples not fully stored yet.
    blocks_done, blocks_total
        Stored write units (chunks, or shards when sharded) and their total.
    finalized_at
        When the image became final (ISO 8601, UTC), or None.
    levels
        Resolution levels, level 0 included.
    title
        The image's title (a collection's source name), or None.
    """

    name: str
    done: int
    total: int
    complete: bool
    pending: tuple[int, ...]
    blocks_done: int
    blocks_total: int
    finalized_at: str | None = None
    levels: int = 1
    title: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry ``ngff-writer status --json`` prints for this image."""
        entry = {"path": self.name, "complete": self.complete, "done": self.done,
                 "total": self.total, "blocks_done": self.blocks_done, "blocks_total": self.blocks_total,
                 "levels": self.levels}
        return {**entry, "title": self.title} if self.title else entry


class Image:
    """One OME-Zarr image of an output, from :meth:`Output.create_image` or ``output[name]``."""

    def __init__(self, output: Owner, spec: ImageSpec, final: bool, fmt: int = FORMAT,
                 path: str | None = None, identity: Identity | None = None) -> None:
        self._output = output
        self.spec = spec
        self._seen_final = final
        self._format = fmt
        # Where it is in this store: the name it was declared under, or "" when its own
        # directory was opened as the output.
        self._ledger = Ledger(output.store, spec, path, identity=identity)
        self._writer: Pipeline | None = None
        self._arrays: dict[int, zarr.Array[Any]] = {}

    @property
    def _final(self) -> bool:
        return self._seen_final or (self._writer is not None and self._writer.final)

    def __repr__(self) -> str:
        return (f"Image({self.name!r}, axes={self.spec.axes!r}, shape={self.spec.shape}, "
                f"dtype={self.spec.dtype})")

    @property
    def name(self) -> str:
        """Path of the image inside the output ("" when the output is the image itself)."""
        return self._ledger.keys.image

    @property
    def n_samples(self) -> int:
        """Number of samples (the length of ``s``; 1 without it)."""
        return self.spec.layout.n_samples

    @property
    def fingerprint(self) -> str | None:
        """What produced the image's data, as its declaration says (None: not given)."""
        return self._ledger.identity.fingerprint

    @property
    def n_levels(self) -> int:
        """Number of resolution levels, level 0 included (``pyramid=N`` gives N)."""
        return len(self.spec.levels)

    @property
    def array(self) -> zarr.Array[Any]:
        """The full-resolution zarr array, in stored axis order, read-only (opened on first use)."""
        return self.level(0)

    def level(self, k: int) -> zarr.Array[Any]:
        """The zarr array of resolution level ``k`` (0: full resolution), in stored axis order.

        The array is read-only: writing into it raises :class:`~ngff_writer.ReadOnlyError`
        (write through :meth:`write_sample`, :meth:`write_block`... so the image tracks it).
        On a handle that has written, the stores it has in flight are waited for first (and
        reduced into the levels below), so what it wrote is readable at every level but for
        chunks only partly covered yet. Reading never stores anything nor raises a failed
        store (the next write, ``flush`` or ``close`` does).
        """
        self._output._check_open()
        if not isinstance(k, int) or not 0 <= k < self.n_levels:
            raise IndexError(f"image {self.name!r} has levels 0 to {self.n_levels - 1}, not {k!r}")
        if self._writer is not None:
            self._writer.wait()
        if k not in self._arrays:
            self._arrays[k] = read_only_array(self._output.store, join(self.name, self.spec.levels[k].path))
        return self._arrays[k]

    # ---- write ---------------------------------------------------------------------
    def write_sample(self, index: int, data: Any, *, copy: bool = True) -> None:
        """Store one sample into its slot; finalize the image if it was the last.

        Parameters
        ----------
        index
            Sample index along ``s`` (0 when the image has no ``s`` axis).
        data
            The sample: an array (or anything ``np.asarray`` takes) with the image's axes
            minus ``s``, in declared order. Converted to the image dtype by the image's
            ``cast`` rule (:meth:`Output.create_image`). Writing a sample again overwrites it (a retry).
        copy
            True (default): the call copies ``data``, so the caller may change or reuse it as
            soon as the call returns. False hands ``data`` over: the writer stores from it in
            the background, without a copy, and the caller must not write into it (nor into
            the buffer it views) until :meth:`flush` or the output's ``close`` returns.
            Saves the caller the copy (2.5-10 ms for a 32 MiB sample here), as tensorstore's
            ``can_reference_source_data_indefinitely`` does.

        Raises
        ------
        SampleIndexError, ShapeMismatchError, LossyCastError
            Bad input; nothing is stored.
        ClosedError, ReadOnlyError
            The output no longer takes writes.
        ImageReplacedError
            The image was deleted or declared anew since this handle opened it.
        StoreError
            A store failed (this one, or one still in flight from an earlier call).

        Notes
        -----
        The sample is copied and stored in the background: the call returns at once,
        unless the context's budget of data in flight is spent, when it waits for earlier
        stores (see :class:`~ngff_writer.Context`). A store that failed in the
        background raises :class:`StoreError` from a later call (a write, ``flush`` or
        ``close``); writing the same sample again then stores it. Into a complete image,
        a write is a retry of the job that made it: checked, then dropped.
        """
        self._check_can_write()
        self._check_not_blend("write_sample")
        data = np.asarray(data)
        self._write(*prepare_region(self.spec, index, data), source=data, copy=copy)

    def write_region(self, index: int, data: Any, start: Sequence[int], *, copy: bool = True) -> None:
        """Store part of a sample: ``data`` lands at ``start`` (one value per space axis).

        ``data`` has the sample's axes (declared order, no ``s``), full along ``t``/``c``
        and any size along the space axes. Parts of chunks are assembled in memory and
        each chunk is stored once, whole, when it is fully covered: no chunk is ever read
        back (the guide's "Tiles" page). A region written again is a retry; two
        different regions that overlap raise ``OverlapError``. ``copy`` as in
        :meth:`write_sample`.
        """
        self._check_can_write()
        self._check_not_blend("write_region")
        data = np.asarray(data)
        self._write(*prepare_region(self.spec, index, data, start), source=data, copy=copy)

    def write_block(self, data: Any, start: Sequence[int], *, copy: bool = True) -> None:
        """Store a block of the whole image: ``data`` lands at ``start``, one value per declared axis.

        Unlike :meth:`write_region`, a block may span several samples and any part of every
        axis (``s``, ``t`` and ``c`` included), as the chunks of a dask array do (see
        :mod:`ngff_writer.dask`). Chunks it covers entirely are stored at once, parts of the
        others assembled as for tiles; a block written again is a retry. ``copy`` as in
        :meth:`write_sample`.

        Raises
        ------
        ShapeMismatchError, LossyCastError
            Bad input; nothing is stored.
        WriteError
            The image blends tiles (write it with :meth:`write_tile`).
        """
        self._check_can_write()
        self._check_not_blend("write_block")
        data = np.asarray(data)
        for region, block in prepare_block(self.spec, data, start):
            self._write(region, block, source=data, copy=copy)

    def write_tile(self, index: int, tile: Any, *, crop_start: Sequence[int] | None = None,
                   crop_size: Sequence[int] | None = None, stitch_start: Sequence[int] | None = None,
                   tile_start: Sequence[int] | None = None, copy: bool = True) -> None:
        """Store an overlapping tile (space axes in declared order, e.g. ``(z, y, x)``).

        Crop mode (default): pass CAREamics' triple; the valid part
        ``tile[..., crop_start:crop_start + crop_size]`` lands at ``stitch_start``, as
        :meth:`write_region` would store it.

        Blend mode (image declared with ``blend=``): the whole tile is averaged with its
        neighbours, weighted by ramps across the overlaps. The tile starts at
        ``tile_start``, or at ``stitch_start - crop_start`` when given the triple; it must be
        a tile of the declared grid. Each chunk is stored once every tile touching it arrived.
        ``copy`` as in :meth:`write_sample` (parts of chunks are copied into the chunks
        being assembled either way).
        """
        self._check_can_write()
        blend = self.spec.blend
        tile = np.asarray(tile)
        if blend is None:
            if crop_start is None or crop_size is None or stitch_start is None:
                raise ShapeMismatchError(
                    f"image {self.name!r} is in crop mode: pass crop_start, crop_size and stitch_start"
                )
            data = crop_tile(self.spec, tile, crop_start, crop_size)
            self._write(*prepare_region(self.spec, index, data, stitch_start), source=tile, copy=copy)
            return
        start = tile_start_of(self.spec, tile_start, crop_start, stitch_start)
        given = tile
        tile, start = unpad_tile(self.spec, tile, start)
        region, block = prepare_region(self.spec, index, tile, start)
        check_blend_tile(self.spec, region)
        spatial = [i for i, a in enumerate(self.spec.layout.axes) if a in "zyx"]
        self._write(region, block, part_id=tuple(region[ax].start for ax in spatial), source=given,
                    copy=copy)

    def _check_not_blend(self, method: str) -> None:
        if self.spec.blend is not None:
            raise WriteError(
                f"image {self.name!r} blends tiles: write it with write_tile, not {method}"
            )

    def _check_can_write(self) -> None:
        self._output._check_writable()
        if self._ledger.replaced is not None:
            raise self._ledger.replaced
        self._check_format()

    def _check_format(self) -> None:
        if self._format < CONTINUES_FROM and not self._final:
            raise FormatVersionError(
                f"image {self.name!r} was written by ngff-writer 0.1 (bookkeeping format "
                f"{self._format}) and is not complete; finish it with that version "
                "(pip install 'ngff-writer==0.1.*') or write it anew"
            )

    def _get_writer(self) -> Pipeline:
        if self._writer is None:
            # What other writers and earlier runs stored, so this one skips it.
            self._ledger.refresh()
            out = self._output
            self._writer = Pipeline(out.context, out.store, self.spec, self._ledger,
                                    out.max_buffer_bytes, out.buffer_policy,  # type: ignore[arg-type]
                                    final=self._final, commit_interval=out.commit_interval)
            out._adopt(self._writer)  # closed with the output, also when it is dropped or at exit
        return self._writer

    def _write(self, region: tuple[slice, ...], block: np.ndarray, part_id: tuple[int, ...] | None = None,
               *, source: np.ndarray, copy: bool) -> None:
        # The one write path (see ngff_writer._write.pipeline): whole units only, stored in the
        # background and recorded after their data; each level feeds the next; the image
        # is finalized once the write that completes it is stored.
        if self._final:
            return  # a retry of the job that completed it: nothing to change
        # Stored after the call returns: copied, unless converting it made a copy already
        # or the caller handed it over.
        self._get_writer().add(region, block, part_id,
                               copy=copy and np.may_share_memory(block, source))

    def flush(self) -> None:
        """Store what this writer holds: partial chunks as fragments, pending log records.

        Called by :meth:`Output.close`. After every writer has flushed, every chunk that
        all writers together covered, at every resolution level, is stored and recorded,
        and the image is final if that is all of it.
        """
        self._output._check_writable()
        if self._final:
            return
        self._check_format()
        writer = self._get_writer()
        writer.flush()
        self._ledger.commit()
        writer.finish()

    @property
    def buffered_bytes(self) -> int:
        """Bytes of partly covered chunks held in memory, over every level."""
        return self._writer.buffered_bytes if self._writer is not None else 0

    @property
    def buffered_units(self) -> int:
        """Write units partly covered and held in memory (not yet stored), over every level."""
        return self._writer.buffered_units if self._writer is not None else 0

    # ---- track ---------------------------------------------------------------------
    def progress(self) -> Progress:
        """Read this image's progress from the store (sees every writer's records; writes nothing)."""
        self._output._check_open()
        if self._ledger.replaced is not None:
            raise self._ledger.replaced
        if not self._final:
            self._check_format()
            if self._writer is not None:
                self._writer.wait()  # count what this handle has written
            self._ledger.refresh()
        # Read after the log: a finalizer marks the image complete before it deletes the log.
        attrs = node_attributes(self._output.store, self.name)
        block = read_writer_attrs(attrs[1]) if attrs else None
        if block is None or Identity.of(block).id != self._ledger.identity.id:
            if block is not None and self._writer is None:
                self._follow(block)  # a handle that only reads reads the image there now
                return self.progress()
            # A writer never reports on another image under its name (see ngff_writer._track.log).
            gone = "deleted" if block is None else "declared anew"
            raise ImageReplacedError(f"image {self.name!r} in {describe(self._output.store)} was {gone} "
                                     "since this handle opened it; open the output again")
        final = bool(block.get("status") == STATUS_COMPLETE)
        if final:
            covered = np.ones_like(self._ledger.coverage.grids[0])
        else:
            covered = self._ledger.coverage.grids[0].copy()
        done = samples_done(self.spec.layout, covered)
        return Progress(
            name=self.name,
            done=int(done.sum()),
            total=int(done.size),
            complete=final,
            pending=tuple(int(i) for i in np.flatnonzero(~done)),
            blocks_done=int(np.count_nonzero(covered)),
            blocks_total=int(covered.size),
            finalized_at=block.get("finalized_at") if block else None,
            levels=self.n_levels,
            title=self.spec.title,
        )

    def _follow(self, block: dict[str, Any]) -> None:
        """Read the image declared anew under this name from now on (a handle that never wrote)."""
        where = f"image {self.name!r} in {describe(self._output.store)}"
        self._format = check_format(block, where)
        declared = declaration_of(block, where, describe(self._output.store))
        self.spec = declared.spec
        self._ledger = Ledger(self._output.store, declared.spec, self.name, identity=declared.identity)
        self._seen_final = block.get("status") == STATUS_COMPLETE
        self._arrays.clear()

    def pending_samples(self) -> list[int]:
        """Indices of samples not yet stored, for resuming: skip everything else."""
        return list(self.progress().pending)

    def pending_tiles(self, index: int, tiles: Iterable[Tile]) -> list[Tile]:
        """The tiles of sample ``index`` that still touch a chunk no writer has stored.

        For resuming a tiled prediction without predicting every tile again::

            for t in img.pending_tiles(i, ngff_writer.tiling.tiles(shape, (256, 256), (48, 48))):
                img.write_tile(i, model(t), crop_start=t.crop_start, crop_size=t.crop_size,
                               stitch_start=t.stitch_start)

        A tile counts by its valid part (``stitch_start``, ``crop_size``) in crop mode and
        as a whole (``start``, ``size``) in blend mode. Reads the log like :meth:`progress`
        and writes nothing. Sending a tile that is not pending does no harm (a retry).
        """
        check_index(self.spec, index)
        tiles = list(tiles)
        blend = self.spec.blend is not None
        regions = [[slot(self.spec, index, *((t.start, t.size) if blend else (t.stitch_start, t.crop_size)))]
                   for t in tiles]
        return [t for t, stored in zip(tiles, self._stored(regions), strict=True) if not stored]

    def pending_blocks(self, blocks: Iterable[tuple[Sequence[int], Sequence[int]]]
                       ) -> list[tuple[Sequence[int], Sequence[int]]]:
        """The blocks ``(start, shape)`` of the image (every declared axis) not stored yet.

        A block counts as stored when every chunk it touches is. Reads like :meth:`progress`
        and writes nothing; :mod:`ngff_writer.dask` uses it to compute only what is missing.
        """
        blocks = list(blocks)
        regions = [block_regions(self.spec, start, shape) for start, shape in blocks]
        return [b for b, stored in zip(blocks, self._stored(regions), strict=True) if not stored]

    def _stored(self, regions: list[list[tuple[slice, ...]]]) -> list[bool]:
        """For each list of stored-array regions: is every unit they touch stored?"""
        if self.progress().complete:  # reads the log once
            return [True] * len(regions)
        covered = self._ledger.coverage.grids[0]
        unit = self.spec.write_unit

        def units(region: tuple[slice, ...]) -> tuple[slice, ...]:
            return tuple(slice(r.start // u, -(-r.stop // u)) for r, u in zip(region, unit, strict=True))

        return [all(covered[units(region)].all() for region in group) for group in regions]

    @property
    def complete(self) -> bool:
        """True once the image is final (read from the store)."""
        return self.progress().complete

    @property
    def is_final(self) -> bool:
        """True once this handle has seen the image final (no store read; waits for its own stores)."""
        if self._writer is not None:
            self._writer.wait()
        return self._final

    # ---- display metadata of a final image -------------------------------------------
    def set_channels(self, names: Sequence[str] | None = None, colors: Sequence[str] | None = None,
                     windows: Sequence[tuple[float, float] | None] | None = None) -> None:
        """Rename channels, change their colors or display windows, in the final image's metadata.

        What is not given stays as it is. The edit is checked by ome-zarr-models before
        anything is written, changes only the image's metadata (never its arrays, nor
        its declaration: a re-run of the job that made it still matches), and is kept
        by a later ``finalize`` or ``repair``.

        Parameters
        ----------
        names
            One name per channel (the omero ``label`` viewers show).
        colors
            One 6-digit hex color per channel (``"FF00FF"``).
        windows
            One ``(start, end)`` display range per channel (napari's contrast limits), or
            None for a channel whose window stays.

        Raises
        ------
        SpecError
            Not one value per channel, a bad color or window, or a label image.
        ImageNotFinalError
            The image is still being written.
        ReadOnlyError, ClosedError
            The output does not take writes.
        """
        self._edit(parse_edits(self.spec, names=names, colors=colors, windows=windows))

    def set_title(self, title: str) -> None:
        """Set the image's name for viewers (NGFF ``multiscales`` name) in its final metadata.

        As :meth:`set_channels`: checked first, metadata only, kept by later writes of it.
        """
        if title is None:
            raise SpecError("title must be a non-empty string, got None")
        self._edit(parse_edits(self.spec, title=title))

    def _edit(self, edits: Edits) -> None:
        self._output._check_writable()
        if self._writer is not None:
            self._writer.wait()  # what this handle wrote may be what makes it final
        edit_final(self._output.store, self.spec, self._ledger.keys, self._ledger.identity, edits)

    # ---- finalize ------------------------------------------------------------------
    def finalize(self) -> bool:
        """Finalize now if every block is stored (idempotent).

        Also completes every chunk that saved fragments cover, whoever saved them (a
        crashed writer may have left a chunk's last parts without storing it), and, once
        the image is final, deletes the temporary files writers killed mid-write left in
        a local directory: those whose process is gone, or unchanged for 45 s (the image
        does this itself when it becomes final; call it again later for the rest).

        Returns
        -------
        bool
            True if the image is complete and final; False if samples are missing (it
            stays "in_progress" with its progress intact).
        """
        self._output._check_writable()
        if not self._final:
            self._check_format()
            writer = self._get_writer()
            writer.flush(sweep=True)
            writer.finish()
        if self._final:
            sweep_temporary(self._output.store, self.name, idle=LIVE_FOR)
        return self._final
