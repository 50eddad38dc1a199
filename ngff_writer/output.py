"""The public face: an output (a store of images) and its images.

Data moves top-down through the modules this one drives:
``spec`` (declare) → ``allocate`` (declaration, arrays, skeleton metadata) → ``write``
(checks a sample or tile) → ``engine`` (assemble whole chunks, store them in the
background, reduce each into the pyramid level below) → ``track`` (log records, after
the data) → ``finalize`` (final metadata, once complete). Image data is held between
calls only as chunks that tiles or pyramid levels cover in part (bounded by
``max_buffer_bytes`` per level) and as the jobs the engine lets run ahead; all progress
lives in the store.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from ._version import __version__
from .allocate import allocate_image, declare, spec_of
from .bookkeeping import FORMAT, GROUP, check_format
from .discover import find_images
from .engine import Engine, ImageWriter
from .errors import (
    ClosedError,
    DuplicateImageError,
    FormatVersionError,
    ImageFinalizedError,
    OutputExistsError,
    OutputNotFoundError,
    ReadOnlyError,
    ShapeMismatchError,
    SpecError,
    SpecMismatchError,
    StoreError,
    UnknownImageError,
    WriteError,
)
from .finalize import finalize_image, read_checkpoint
from .ngff import STATUS_COMPLETE, WRITER_KEY, read_writer_attrs
from .spec import Blend, ImageSpec, Pyramid, parse_image_spec, parse_name
from .storage import (
    Mode,
    StoreLike,
    clear,
    describe,
    is_empty,
    join,
    list_dir,
    node_attributes,
    open_array,
    open_store,
    sweep_temporary,
    write_group,
)
from .tiling import Tile
from .track import Ledger, samples_done
from .write import (
    block_regions,
    check_blend_tile,
    check_index,
    crop_tile,
    prepare_block,
    prepare_region,
    slot,
    tile_start_of,
)

__all__ = ["Image", "Output", "Progress", "open_output"]


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
        Resolution levels: 1 + the pyramid levels.
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

    def to_json(self) -> dict[str, Any]:
        """The entry ``ngff-writer status --json`` prints for this image."""
        return {"path": self.name, "complete": self.complete, "done": self.done,
                "total": self.total, "levels": self.levels}


class Image:
    """One OME-Zarr image of an output, from :meth:`Output.create_image` or ``output[name]``."""

    def __init__(self, output: Output, spec: ImageSpec, final: bool, fmt: int = FORMAT) -> None:
        self._output = output
        self.spec = spec
        self._final = final
        self._format = fmt
        self._ledger = Ledger(output.store, spec)
        self._writer: ImageWriter | None = None
        self._arrays: dict[int, zarr.Array] = {}
        #: True when this handle wrote to the image before it became final: later writes
        #: of the same stream (a resumed loop sending everything again) are skipped.
        self._streamed = False

    def __repr__(self) -> str:
        return (f"Image({self.name!r}, axes={self.spec.axes!r}, shape={self.spec.shape}, "
                f"dtype={self.spec.dtype})")

    @property
    def name(self) -> str:
        """Path of the image inside the output."""
        return self.spec.name

    @property
    def n_samples(self) -> int:
        """Number of samples (the length of ``s``; 1 without it)."""
        return self.spec.layout.n_samples

    @property
    def n_levels(self) -> int:
        """Number of resolution levels: 1 + the pyramid levels."""
        return len(self.spec.levels)

    @property
    def array(self) -> zarr.Array:
        """The full-resolution zarr array, in stored axis order (opened on first use)."""
        return self.level(0)

    def level(self, k: int) -> zarr.Array:
        """The zarr array of resolution level ``k`` (0: full resolution), in stored axis order.

        On a handle that has written, the stores it has in flight are waited for first (and
        reduced into the levels below), so what it wrote is readable at every level but for
        chunks only partly covered yet. A store that failed raises :class:`StoreError` here.
        """
        self._output._check_open()
        if not isinstance(k, int) or not 0 <= k < self.n_levels:
            raise IndexError(f"image {self.name!r} has levels 0 to {self.n_levels - 1}, not {k!r}")
        if self._writer is not None:
            self._output.engine.drain(0, 0)
            return self._writer.levels[k].array()
        if k not in self._arrays:
            mode = "r" if self._output.mode == "r" else "r+"
            self._arrays[k] = open_array(self._output.store, join(self.name, self.spec.levels[k].path), mode)
        return self._arrays[k]

    # ---- write ---------------------------------------------------------------------
    def write_sample(self, index: int, data: Any) -> None:
        """Store one sample into its slot; finalize the image if it was the last.

        Parameters
        ----------
        index
            Sample index along ``s`` (0 when the image has no ``s`` axis).
        data
            The sample: an array (or anything ``np.asarray`` takes) with the image's axes
            minus ``s``, in declared order. Converted to the image dtype by the rule in
            :mod:`ngff_writer.write`. Writing a sample again overwrites it (a retry).

        Samples up to 8 MiB are copied and stored in the background (the call returns at
        once); larger ones are stored before the call returns. A store that failed in the
        background raises :class:`StoreError` from a later call (a write, ``flush`` or
        ``close``); writing the same sample again then stores it.

        Raises
        ------
        SampleIndexError, ShapeMismatchError, LossyCastError
            Bad input; nothing is stored.
        ImageFinalizedError
            The image was final before this handle wrote to it. (Writes that come after this
            handle's own writes completed it are retries of a resumed stream: skipped.)
        ClosedError, ReadOnlyError
            The output no longer takes writes.
        StoreError
            A store failed (this one, or one still in flight from an earlier call).
        """
        self._check_can_write()
        self._check_not_blend("write_sample")
        self._write(*prepare_region(self.spec, index, data))

    def write_region(self, index: int, data: Any, start: Sequence[int]) -> None:
        """Store part of a sample: ``data`` lands at ``start`` (one value per space axis).

        ``data`` has the sample's axes (declared order, no ``s``), full along ``t``/``c``
        and any size along the space axes. Parts of chunks are assembled in memory and
        each chunk is stored once, whole, when it is fully covered: no chunk is ever read
        back (see :mod:`ngff_writer.assemble`). A region written again is a retry; two
        different regions that overlap raise ``OverlapError``.
        """
        self._check_can_write()
        self._check_not_blend("write_region")
        self._write(*prepare_region(self.spec, index, data, start))

    def write_block(self, data: Any, start: Sequence[int]) -> None:
        """Store a block of the whole image: ``data`` lands at ``start``, one value per declared axis.

        Unlike :meth:`write_region`, a block may span several samples and any part of every
        axis (``s``, ``t`` and ``c`` included), as the chunks of a dask array do (see
        :mod:`ngff_writer.dask`). Chunks it covers entirely are stored at once, parts of the
        others assembled as for tiles; a block written again is a retry.

        Raises
        ------
        ShapeMismatchError, LossyCastError
            Bad input; nothing is stored.
        WriteError
            The image blends tiles (write it with :meth:`write_tile`).
        """
        self._check_can_write()
        self._check_not_blend("write_block")
        for region, block in prepare_block(self.spec, data, start):
            self._write(region, block)

    def write_tile(self, index: int, tile: Any, *, crop_start: Sequence[int] | None = None,
                   crop_size: Sequence[int] | None = None, stitch_start: Sequence[int] | None = None,
                   tile_start: Sequence[int] | None = None) -> None:
        """Store an overlapping tile (space axes in declared order, e.g. ``(z, y, x)``).

        Crop mode (default): pass CAREamics' triple; the valid part
        ``tile[..., crop_start:crop_start + crop_size]`` lands at ``stitch_start``, as
        :meth:`write_region` would store it.

        Blend mode (image declared with ``blend=``): the whole tile is averaged with its
        neighbours, weighted by ramps across the overlaps. The tile starts at
        ``tile_start``, or at ``stitch_start - crop_start`` when given the triple; it must be
        a tile of the declared grid. Each chunk is stored once every tile touching it arrived.
        """
        self._check_can_write()
        blend = self.spec.blend
        if blend is None:
            if crop_start is None or crop_size is None or stitch_start is None:
                raise ShapeMismatchError(
                    f"image {self.name!r} is in crop mode: pass crop_start, crop_size and stitch_start"
                )
            data = crop_tile(self.spec, tile, crop_start, crop_size)
            self._write(*prepare_region(self.spec, index, data, stitch_start))
            return
        start = tile_start_of(self.spec, tile_start, crop_start, stitch_start)
        region, block = prepare_region(self.spec, index, tile, start)
        check_blend_tile(self.spec, region)
        spatial = [i for i, a in enumerate(self.spec.layout.axes) if a in "zyx"]
        self._write(region, block, part_id=tuple(region[ax].start for ax in spatial))

    def _check_not_blend(self, method: str) -> None:
        if self.spec.blend is not None:
            raise WriteError(
                f"image {self.name!r} blends tiles: write it with write_tile, not {method}"
            )

    def _check_can_write(self) -> None:
        self._output._check_writable()
        if self._final and not self._streamed:
            raise ImageFinalizedError(f"image {self.name!r} is complete and final")
        self._check_format()

    def _check_format(self) -> None:
        if self._format != FORMAT and not self._final:
            raise FormatVersionError(
                f"image {self.name!r} was written by ngff-writer 0.1 (bookkeeping format "
                f"{self._format}) and is not complete; finish it with that version "
                "(pip install 'ngff-writer==0.1.*') or write it anew"
            )

    def _get_writer(self) -> ImageWriter:
        if self._writer is None:
            # What other writers and earlier runs stored, so this one skips it.
            self._ledger.refresh()
            out = self._output
            self._writer = ImageWriter(out.engine, out.store, self.spec, self._ledger,
                                       out.max_buffer_bytes, out.buffer_policy)  # type: ignore[arg-type]
        return self._writer

    def _write(self, region: tuple[slice, ...], block: np.ndarray, part_id: tuple[int, ...] | None = None
               ) -> None:
        # The one write path (see ngff_writer.engine): whole units only, stored in the
        # background and recorded after their data; each level feeds the next.
        if self._final:
            return  # completed by this handle's own stream: what comes after is a retry
        writer = self._get_writer()
        writer.add(region, block, part_id)
        if writer.all_handed:  # every unit of level 0 stored or on its way: maybe complete
            self._finalize_if_complete()

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
        self._output.engine.drain(0, 0)
        self._get_writer().flush()
        self._ledger.commit()
        self._finalize_if_complete()

    @property
    def buffered_bytes(self) -> int:
        """Bytes of partly covered chunks held in memory, over every level."""
        return self._writer.buffered_bytes if self._writer is not None else 0

    @property
    def buffered_units(self) -> int:
        """Write units partly covered and held in memory (not yet stored), over every level."""
        return self._writer.buffered_units if self._writer is not None else 0

    def _finalize_if_complete(self) -> bool:
        # The one place an image becomes final: on a write that hands its last unit to the
        # engine, and on flush/close/finalize. Never on a read.
        if self._final:
            return True
        ledger = self._ledger
        self._output.engine.drain(0, 0)
        ledger.commit()
        ledger.refresh()
        if not ledger.complete(0):
            # Another writer may have finalized it meanwhile (and deleted the log this view
            # missed): then adopt that, which also sweeps what this writer committed since.
            if read_checkpoint(self._output.store, self.spec) is None:
                return False
        else:
            # Level 0 is stored, so pyramid units this writer holds in part can only be
            # completed with other writers' parts: hand them over (fragments), then
            # finalizing builds whatever is still missing from the level above.
            self._get_writer().flush(start=1)
            ledger.commit()
            ledger.refresh()
        finalize_image(self._output.store, self.spec, ledger, self.level)
        self._final = True
        self._streamed = self._writer is not None and self._writer.started
        return True

    # ---- track ---------------------------------------------------------------------
    def progress(self) -> Progress:
        """Read this image's progress from the store (sees every writer's records; writes nothing)."""
        self._output._check_open()
        if not self._final:
            self._check_format()
            self._output.engine.wait()  # count what this handle has written
            self._ledger.refresh()
        # Read after the log: a finalizer marks the image complete before it deletes the log.
        attrs = node_attributes(self._output.store, self.name)
        block = read_writer_attrs(attrs[1]) if attrs else None
        final = bool(block and block.get("status") == STATUS_COMPLETE)
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
        )

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
        """True once this handle has seen the image final (no store read)."""
        return self._final

    # ---- finalize ------------------------------------------------------------------
    def finalize(self) -> bool:
        """Finalize now if every block is stored (idempotent).

        Also completes every chunk that saved fragments cover, whoever saved them (a
        crashed writer may have left a chunk's last parts without storing it), and, once
        the image is final, deletes the temporary files writers killed mid-write left in
        a local directory (the one step that walks every chunk file).

        Returns
        -------
        bool
            True if the image is complete and final; False if samples are missing (it
            stays "in_progress" with its progress intact).
        """
        self._output._check_writable()
        if not self._final:
            self._check_format()
            self._output.engine.drain(0, 0)
            self._get_writer().flush(sweep=True)
            self._finalize_if_complete()
        if self._final:
            sweep_temporary(self._output.store, self.name)
        return self._final


def _same_spec(image: Image, spec: ImageSpec, how: str) -> Image:
    """``image`` if it was declared as ``spec`` says; SpecMismatchError if not."""
    # Compared as JSON: a NaN fill value equals itself there.
    mine, theirs = spec.to_json(), image.spec.to_json()
    if mine != theirs:
        diff = [k for k in mine if mine[k] != theirs.get(k)]
        raise SpecMismatchError(f"image {spec.name!r} {how} with other settings ({', '.join(diff)})")
    return image


class Output:
    """A store of OME-Zarr images being written. Create with :func:`open_output`."""

    def __init__(self, store: Store, mode: Mode, ngff_version: str, max_buffer_bytes: int,
                 buffer_policy: str, engine: Engine) -> None:
        self.store = store
        self.buffer_policy = buffer_policy
        self.mode = mode
        self.ngff_version = ngff_version
        self.max_buffer_bytes = max_buffer_bytes
        #: The worker threads, in-flight limit and log committer of this output.
        self.engine = engine
        self._images: dict[str, Image] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"Output({describe(self.store)!r}, mode={self.mode!r})"

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- state checks ----------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.mode == "r":
            raise ReadOnlyError(f"{self!r} was opened read-only")

    def close(self) -> None:
        """Close the output. Incomplete images stay "in_progress", their progress kept.

        Waits for every background store, saves chunks that tiles covered only partly as
        fragments in the store (:meth:`Image.flush`), commits every log record and stops
        the engine's threads. Nothing written is lost and other writers can complete the
        fragments.

        Raises
        ------
        NgffWriterError
            The first failure (a :class:`StoreError` for a failed store); the others, if
            any, are in its notes. The output is closed either way.
        """
        if self._closed:
            return
        errors: list[Exception] = []
        if self.mode != "r":
            for image in self._images.values():
                try:
                    if image._writer is not None and image._writer.started:
                        image.flush()
                except Exception as exc:  # raised below, after every image
                    errors.append(exc)
        try:
            self.engine.close()
            self.engine.commit_all()
        except Exception as exc:
            errors.append(exc)
        self._closed = True
        self._images.clear()
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"also, closing {self!r}: {type(other).__name__}: {other}")
            raise errors[0]

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    # ---- declare -------------------------------------------------------------------
    def create_image(
        self,
        name: str,
        shape: Sequence[int],
        axes: str,
        dtype: Any = "float32",
        *,
        sample_axes: str | None = None,
        chunks: Sequence[int] | None = None,
        shards: Sequence[int] | None = None,
        compressor: Any = "default",
        fill_value: float | int | bool = 0,
        scale: Mapping[str, float] | Sequence[float] | None = None,
        units: str | Mapping[str, str] | None = None,
        channel_names: Sequence[str] | None = None,
        channel_colors: Sequence[str] | None = None,
        ngff_version: str | None = None,
        cast: str = "safe",
        window_percentiles: tuple[float, float] = (0.5, 99.5),
        blend: Blend | Mapping[str, Any] | None = None,
        pyramid: Pyramid | Mapping[str, Any] | int | str | None = "auto",
        exist_ok: bool = False,
    ) -> Image:
        """Declare an image: allocate its arrays and write in-progress OME metadata.

        No chunk data is written; viewers can open the image at once and see it fill.

        Parameters
        ----------
        name
            Path of the image in the output, e.g. ``"pred"`` or ``"plate/a1.ome.zarr"``.
        shape
            Size of each axis, in ``axes`` order.
        axes
            Letters of ``t c z y x`` and the sample axis ``s``, in any order (e.g.
            ``"sczyx"``, ``"yxs"``). See :mod:`ngff_writer.spec` for how ``s`` is stored.
        dtype
            Stored data type (bool, integer or float).
        sample_axes
            Axes a sample is one entry of: ``"s"`` (the default when declared), ``"t"`` (one
            sample per time point) or ``"st"`` (one per (s, t) pair, numbered
            ``s * T + t``, as CAREamics merges them).
        chunks
            Chunk shape in ``axes`` order; must be 1 along ``s``. Default: 1 along
            ``t s c``, spatial axes halved until a chunk is at most 4 MiB.
        shards
            Shard shape in ``axes`` order (NGFF 0.5 only), a multiple of ``chunks``.
        compressor
            ``"default"`` (Blosc zstd-3 + shuffle), ``"blosc-lz4"``, ``"zstd"``, ``"gzip"``,
            None, or a zarr / numcodecs codec.
        fill_value
            Value of never-written pixels.
        scale
            Physical pixel size per axis: a mapping such as ``{"z": 2.0, "y": 0.5}`` or a
            sequence in ``axes`` order. Default 1.
        units
            A unit for every space axis (``"micrometer"``, ``"nm"``...) or a mapping per axis.
        channel_names, channel_colors
            One name and one hex color (``"FF00FF"``) per channel.
        ngff_version
            ``"0.5"`` (zarr v3) or ``"0.4"`` (zarr v2). Default: the output's.
        cast
            Dtype conversion allowed on write: ``"safe"`` (default), ``"same_kind"``, ``"unsafe"``.
        window_percentiles
            Percentiles of the data used as the display window at finalize.
        blend
            Tiles are blended instead of cropped: ``{"tile_size": (256, 256), "overlap":
            (32, 32), "ramp": "cosine"}`` (space axes in declared order), see :class:`Blend`.
        pyramid
            Lower-resolution levels, built while the image is written (no re-read):
            ``"auto"`` (default: halve ``y`` and ``x`` until a plane fits in one chunk),
            a number of levels, ``{"levels": 3, "factors": {"z": 2, "y": 2, "x": 2},
            "method": "mean" | "nearest"}``, a :class:`Pyramid`, or None for level 0 only.
            Explicit levels need chunks that are multiples of the factors along reduced axes.
        exist_ok
            If the image exists with the same settings, return it (resume) instead of raising.

        Raises
        ------
        SpecError
            (and its subclasses) for a declaration that cannot be stored.
        DuplicateImageError
            The name exists and ``exist_ok`` is False.
        SpecMismatchError
            The name exists with other settings.
        """
        self._check_writable()
        spec = parse_image_spec(
            name, shape, axes, dtype, sample_axes=sample_axes, chunks=chunks, shards=shards,
            compressor=compressor, fill_value=fill_value, scale=scale, units=units,
            channel_names=channel_names, channel_colors=channel_colors,
            ngff_version=ngff_version or self.ngff_version, cast=cast,
            window_percentiles=window_percentiles, blend=blend, pyramid=pyramid,
        )
        existing = self._read_image(spec.name)
        if existing is not None:
            if not exist_ok:
                raise DuplicateImageError(
                    f"image {spec.name!r} already exists in {describe(self.store)}; pass "
                    "exist_ok=True to resume it"
                )
            return _same_spec(existing, spec, "exists")
        self._check_place(spec)
        # Another writer (a DDP rank, a cluster worker) may declare the same image at the
        # same time: the declaration created first is the one that counts, and the arrays
        # are made from it (see ngff_writer.allocate).
        declared = declare(self.store, spec)
        if declared.to_json() != spec.to_json():
            _same_spec(Image(self, declared, final=False), spec,
                       "was declared at the same time by another writer")
        allocate_image(self.store, declared)
        self._images.pop(spec.name, None)
        image = self._read_image(spec.name)
        if image is None:
            raise StoreError(f"image {spec.name!r} was declared but cannot be read back from "
                             f"{describe(self.store)}")
        return _same_spec(image, spec, "was declared at the same time by another writer")

    def _check_place(self, spec: ImageSpec) -> None:
        # What is already at the image's place must be nothing, or what a writer
        # declaring the same image right now leaves while it allocates (a group zarr
        # made implicitly for the level arrays, those arrays, the bookkeeping group),
        # or that image itself once declared: never a user's group or another image.
        if spec.name == "":
            if [name for name in self.images() if name]:
                raise DuplicateImageError("the output root can be an image only in an output with no image")
            root_format = node_attributes(self.store, "")
            if root_format is not None and root_format[0] != spec.zarr_format:
                raise SpecError(
                    f"the output root is zarr format {root_format[0]}; an image at the root needs "
                    f"the output's NGFF version ({self.ngff_version!r}), got {spec.ngff_version!r}"
                )
            return
        node = node_attributes(self.store, spec.name)
        if node is not None and not self._being_declared(spec, node[1]):
            raise DuplicateImageError(f"{spec.name!r} is already a group that is not an image")
        if any(self._read_image("/".join(spec.name.split("/")[:k])) is not None
               for k in range(1, spec.name.count("/") + 1)):
            raise DuplicateImageError(f"{spec.name!r} would be inside another image")
        if self._read_image("") is not None:
            raise DuplicateImageError(f"the output root is an image; {spec.name!r} cannot go inside it")

    def _being_declared(self, spec: ImageSpec, attributes: dict[str, Any]) -> bool:
        if attributes and read_writer_attrs(attributes) is None:
            return False
        ours = {level.path for level in spec.levels} | {GROUP}
        children = set(list_dir(self.store, spec.name)) - {"zarr.json", ".zgroup", ".zattrs"}
        return children <= ours

    # ---- find ----------------------------------------------------------------------
    def _read_image(self, name: str) -> Image | None:
        if name in self._images:
            return self._images[name]
        node = node_attributes(self.store, name)
        block = read_writer_attrs(node[1]) if node else None
        if block is None:
            return None
        where = f"image {name!r} in {describe(self.store)}"
        fmt = check_format(block, where)
        image = Image(self, spec_of(block, where, describe(self.store)),
                      final=block.get("status") == STATUS_COMPLETE, fmt=fmt)
        self._images[name] = image
        return image

    def image(self, name: str) -> Image:
        """Return the image ``name`` (declared by this or any earlier/other process)."""
        self._check_open()
        image = self._read_image(parse_name(name))
        if image is None:
            raise UnknownImageError(f"no image {name!r} in {describe(self.store)}")
        return image

    __getitem__ = image

    def __contains__(self, name: str) -> bool:
        return self._read_image(parse_name(name)) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.images())

    def images(self) -> list[str]:
        """Names of every image in the output, complete or not (read from the store).

        Images whose metadata is damaged are listed too; reading them raises
        :class:`CorruptError` (``repair()`` fixes what it can).
        """
        self._check_open()
        return find_images(self.store)

    def repair(self) -> dict[str, list[str]]:
        """Repair every image's damaged bookkeeping or metadata (see :mod:`ngff_writer.repair`).

        Returns what was done, per image. Afterwards a resumed run completes every image
        (writing again what repair found missing).
        """
        self._check_writable()
        from .repair import repair_output  # repair sits above this module

        self._images.clear()
        return repair_output(self.store)

    # ---- write / track / finalize ----------------------------------------------------
    def write_sample(self, name: str, index: int, data: Any) -> None:
        """Shortcut for ``output[name].write_sample(index, data)``."""
        self.image(name).write_sample(index, data)

    def status(self) -> list[Progress]:
        """Progress of every image in the output."""
        return [self.image(name).progress() for name in self.images()]

    def finalize(self) -> list[str]:
        """Finalize every complete image; return (and warn about) the incomplete ones."""
        self._check_writable()
        incomplete = [name for name in self.images() if not self.image(name).finalize()]
        if incomplete:
            warnings.warn(
                f"{len(incomplete)} image(s) are incomplete and stay in progress: "
                + ", ".join(incomplete),
                stacklevel=2,
            )
        return incomplete


def open_output(
    root: StoreLike,
    mode: Mode = "w-",
    *,
    ngff_version: str = "0.5",
    storage_options: dict[str, Any] | None = None,
    max_buffer_bytes: int = 1 << 30,
    buffer_policy: str = "spill",
    workers: int = 2,
    commit_interval: float = 1.0,
    timeout: float = 60.0,
    retries: int = 3,
) -> Output:
    """Open an output: a directory (or any zarr store) that holds OME-Zarr images.

    Parameters
    ----------
    root
        A local path (the default kind), a URL such as ``"s3://bucket/out.zarr"``, or a
        :class:`zarr.abc.store.Store`.
    mode
        ``"w-"`` create, refusing existing data (default); ``"w"`` create, deleting
        what is there; ``"a"`` reopen to append or resume (created if empty);
        ``"r"`` read-only, for status.
    ngff_version
        Default NGFF version of images declared in this output (``"0.5"`` or ``"0.4"``).
    storage_options
        Options for fsspec URLs (credentials, endpoint).
    max_buffer_bytes
        Cap on memory holding partly covered chunks per image while regions/tiles are
        assembled (default 1 GiB).
    buffer_policy
        Past ``max_buffer_bytes``: ``"spill"`` saves the oldest partial chunks as fragments
        in the store (no chunk is read back); ``"error"`` raises ``BufferFullError``.
    workers
        Threads that store chunks in the background (each stores a batch of queued chunks
        per call into zarr); ``close()`` stops them.
    commit_interval
        Seconds at most between a chunk being stored and its record being committed to
        the image's log: what a killed writer can lose (writing it again resumes).
    timeout, retries
        For remote stores (URLs, obstore): seconds one store call may take, and further
        attempts after a timeout or a lost connection (0.5 s, 1 s, 2 s... apart), before a
        :class:`StoreError` is raised; a store that stops answering never blocks a writer
        longer than that. Local directories are not affected.

    Raises
    ------
    OutputExistsError
        ``mode="w-"`` and the store holds data.
    OutputNotFoundError
        ``mode="r"`` and there is no output.
    StoreError
        The store holds data that is not an ngff-writer output (``"a"``, ``"r"``).
    """
    if mode not in ("w-", "w", "a", "r"):
        raise SpecError(f"mode must be 'w-', 'w', 'a' or 'r', got {mode!r}")
    if str(ngff_version) not in ("0.4", "0.5"):
        raise SpecError(f"ngff_version must be '0.4' or '0.5', got {ngff_version!r}")
    if buffer_policy not in ("spill", "error"):
        raise SpecError(f"buffer_policy must be 'spill' or 'error', got {buffer_policy!r}")
    if not isinstance(max_buffer_bytes, int) or max_buffer_bytes < 0:
        raise SpecError(f"max_buffer_bytes must be an int >= 0, got {max_buffer_bytes!r}")
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise SpecError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise SpecError(f"retries must be an int >= 0, got {retries!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"workers must be an int >= 1, got {workers!r}")
    if not isinstance(commit_interval, (int, float)) or not commit_interval > 0:
        raise SpecError(f"commit_interval must be a number of seconds > 0, got {commit_interval!r}")
    if mode == "r" and isinstance(root, (str, Path)) and "://" not in str(root):
        if not Path(root).exists():
            raise OutputNotFoundError(f"no output at {root}")
    store = open_store(root, mode, storage_options, timeout=float(timeout), retries=retries)
    empty = is_empty(store)
    where = describe(store)
    if mode == "w-" and not empty:
        raise OutputExistsError(
            f"{where} already holds data; open it with mode='a' to resume or mode='w' to replace it"
        )
    if mode == "w" and not empty:
        clear(store)
        empty = True
    if empty:
        if mode == "r":
            raise OutputNotFoundError(f"no output at {where}")
        fmt = 3 if str(ngff_version) == "0.5" else 2
        write_group(store, "", fmt, {WRITER_KEY: {"output": 1, "version": __version__}})
    else:
        root_node = node_attributes(store, "")
        if root_node is None or WRITER_KEY not in root_node[1]:
            raise StoreError(f"{where} holds data that is not an ngff-writer output")
    engine = Engine(workers=workers, commit_interval=float(commit_interval))
    return Output(store, mode, str(ngff_version), int(max_buffer_bytes), buffer_policy, engine)
