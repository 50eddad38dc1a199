"""The public face: an output, a store of images, opened with :func:`open_output`.

An :class:`Output` owns the store; it takes what a user declares, parses it into a spec
and hands it to its :class:`~ngff_writer._output.declare.Images`, which finds, declares,
continues or replaces the images (:mod:`ngff_writer._output.image`); it closes them.
Its images write through the threads of a :class:`~ngff_writer.Context`, which several
outputs may share. Data moves top-down through the subpackages these drive:
``_declare`` (the spec) → ``_write.allocate`` (declaration, arrays, skeleton metadata) →
``_write.checks`` (a sample or tile) → ``_write.pipeline`` (assemble whole chunks, hand
them to the ``_write.engine`` to store in the background, reduce each into the pyramid
level below) → ``_track`` (log records, after the data) → ``_write.finalize`` (final
metadata, once complete), with ``_ngff`` for the documents and ``_storage`` beneath.
Image data is held between calls only as chunks that tiles or pyramid levels cover in
part (bounded by ``max_buffer_bytes`` per level) and as the data in flight (the
context's budget); all progress lives in the store.

An output that is not closed is closed for the user: when it is dropped (garbage
collected), and at interpreter exit (the end of a script, ``sys.exit``, an uncaught
exception), with an :class:`~ngff_writer.errors.UnclosedOutputWarning`. Either way
everything its images were given is stored and recorded, as ``close()`` would. Only a
killed process loses what was in flight (see :func:`open_output`).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from zarr.abc.store import Store

from .._declare.spec import Blend, ImageSpec, Label, Pyramid, parse_image_spec, parse_label, parse_name
from .._ngff.collection import SeriesList
from .._ngff.discover import find_images
from .._ngff.labels import LABELS_GROUP, label_declaration, register_label
from .._ngff.metadata import WRITER_KEY
from .._ngff.plate import Plate, declare_plate, parse_plate, read_plate
from .._storage.stores import (
    Mode,
    StoreLike,
    describe,
    is_empty,
    join,
    node_attributes,
    open_store,
    write_group,
)
from .._track.ownership import check_replaceable, delete_contents
from .._version import __version__
from .._write.context import Context, check_setting, default_context
from .._write.pipeline import Pipeline
from ..errors import (
    ClosedError,
    DuplicateImageError,
    NotAnOutputError,
    NotOursError,
    OutputExistsError,
    OutputNotFoundError,
    ReadOnlyError,
    SpecError,
    UnknownImageError,
)
from .closing import Closer, track, untrack
from .declare import Images, check_fingerprint
from .image import Image, Progress

__all__ = ["Image", "Output", "Progress", "open_output"]


class Output:
    """A store of OME-Zarr images being written. Create with :func:`open_output`."""

    def __init__(self, store: Store, mode: Mode, ngff_version: str, max_buffer_bytes: int,
                 buffer_policy: str, context: Context, opened_at: tuple[str, int] = ("<unknown>", 0),
                 commit_interval: float | None = None, owns_context: bool = False) -> None:
        self.store = store
        self.buffer_policy = buffer_policy
        self.mode = mode
        self.ngff_version = ngff_version
        self.max_buffer_bytes = max_buffer_bytes
        #: The threads, in-flight budget and log committer this output writes with.
        self.context = context
        #: Seconds a log record may wait before it is committed (None: the context's).
        self.commit_interval = commit_interval
        self._closed = False
        self._series = SeriesList(store)
        self._closer = Closer(context, self._series, repr(self), writes=mode != "r", opened_at=opened_at,
                              owns_context=owns_context)
        self._images = Images(self, self._closer, ngff_version)
        # Closed if it is dropped unclosed, or at exit (see ngff_writer._output.closing).
        self._finalizer = track(self, self._closer)

    def __repr__(self) -> str:
        return f"Output({describe(self.store)!r}, mode={self.mode!r})"

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- state checks ----------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError(f"{self!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.mode == "r":
            raise ReadOnlyError(f"{self!r} was opened read-only")

    def _adopt(self, pipeline: Pipeline) -> None:
        """Close ``pipeline`` with this output (an image's, made on its first write)."""
        self._closer.pipelines.append(pipeline)

    def close(self) -> None:
        """Close the output. Incomplete images stay "in_progress", their progress kept.

        Waits for every background store, saves chunks that tiles covered only partly as
        fragments in the store (:meth:`Image.flush`), finalizes images that are complete
        and commits every log record (the context's threads go on for other outputs).
        Nothing written is lost
        and other writers can complete the fragments. An output that is not closed is
        closed this way when it is dropped or when the interpreter exits, with an
        :class:`~ngff_writer.UnclosedOutputWarning`.

        Raises
        ------
        NgffWriterError
            The first failure (a :class:`StoreError` for a failed store); the others, if
            any, are in its notes. The output is closed either way.
        """
        if self._closed:
            return
        self._closed = True
        untrack(self._closer, self._finalizer)
        try:
            self._closer.close()
        finally:
            self._images.forget()

    def _abandon(self) -> None:
        """Leave the output as a killed process would: never closed, not when dropped nor at exit."""
        untrack(self._closer, self._finalizer)
        self._closer.abandon()  # no more records, commits or heartbeats

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (or after its context closed it)."""
        return self._closed or self._closer.done

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
        shards: Sequence[int] | str | None = "auto",
        compressor: Any = "default",
        fill_value: float | int | bool = 0,
        scale: Mapping[str, float] | Sequence[float] | None = None,
        translation: Mapping[str, float] | Sequence[float] | None = None,
        units: str | Mapping[str, str] | None = None,
        channel_names: Sequence[str] | None = None,
        channel_colors: Sequence[str] | None = None,
        ngff_version: str | None = None,
        cast: str = "safe",
        window_percentiles: tuple[float, float] = (0.5, 99.5),
        blend: Blend | Mapping[str, Any] | None = None,
        pyramid: Pyramid | Mapping[str, Any] | int | str | None = "auto",
        title: str | None = None,
        exist_ok: bool = False,
        fingerprint: str | None = None,
        overwrite: bool = False,
    ) -> Image:
        """Declare an image: allocate its arrays and write in-progress OME metadata.

        No chunk data is written; viewers can open the image at once and see it fill.
        Declaring an image that exists is how a job is re-run or resumed, and the
        ``fingerprint`` decides what that means (the guide's "Re-running, retraining,
        crashes" has the table):

        - ``exist_ok=True`` and the same fingerprint, or none given: the same job. The
          image is returned as it is, and every write is a retry, also into a complete
          image (accepted; nothing changes).
        - another fingerprint: :class:`OutputExistsError` naming both, before anything
          is written; ``overwrite=True`` replaces the image instead.

        Parameters
        ----------
        name
            Path of the image in the output, e.g. ``"pred"`` or ``"plate/a1.ome.zarr"``.
        shape
            Size of each axis, in ``axes`` order.
        axes
            Letters of ``t c z y x`` and the sample axis ``s``, in any order (e.g.
            ``"sczyx"``, ``"yxs"``). Data is written in this order, and stored in NGFF's
            (``t c z y x``, ``s`` before ``c``): ``"xyz"`` is stored as ``zyx``, which is what
            ``image.array`` and other readers show. The guide's "Axes, chunks, shards and
            codecs" says how ``s`` is stored.
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
            Shard shape in ``axes`` order (NGFF 0.5 only), a multiple of ``chunks`` and 1
            along ``s``; None for one file per chunk. Default ``"auto"``: images of 1 GiB or
            more in NGFF 0.5 get one shard of at most 128 MiB per sample (fewer, larger
            files on clusters and object stores); smaller ones and NGFF 0.4 keep chunks.
            The guide's "Axes, chunks, shards and codecs" has the rule and its measurements.
        compressor
            ``"default"`` (Blosc zstd-3 + shuffle), ``"blosc-lz4"``, ``"zstd"``, ``"gzip"``,
            None, or a zarr / numcodecs codec.
        fill_value
            Value of never-written pixels.
        scale
            Physical pixel size per axis: a mapping such as ``{"z": 2.0, "y": 0.5}`` or a
            sequence in ``axes`` order. Default 1.
        translation
            Where the image lies in a larger space (a region of interest, a mosaic tile, a
            crop): the physical position of the centre of its first pixel along the time
            and space axes, as ``scale`` takes it (``{"y": 1024.0, "x": 512.0}``). Default
            0. Written as NGFF ``coordinateTransformations`` on every level, each level's
            following from the reduction (a mean moves it to the centre of the block).
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
            a number of levels counting level 0 (``3``: level 0 and two below it), ``{"levels":
            3, "factors": {"z": 2, "y": 2, "x": 2}, "method": "mean" | "nearest"}``, a
            :class:`Pyramid`, or None (or 1) for level 0 only.
            Explicit levels need chunks that are multiples of the factors along reduced axes.
        title
            The image's name for viewers (NGFF multiscales ``name``; a layer's name in
            napari); default: the last segment of ``name``.
        exist_ok
            If the image exists with the same settings, return it (resume) instead of raising.
        fingerprint
            What produces the data (e.g. a hash of the model's weights, the inputs and the
            parameters), stored with the image; see above. ``Image.fingerprint`` reads it.
        overwrite
            Replace the image if it exists, unless it holds this very job (the same settings
            and the same fingerprint, which is then continued). Only an ngff-writer image
            with no live writer is replaced; its labels go with it.

        Raises
        ------
        SpecError
            (and its subclasses) for a declaration that cannot be stored.
        DuplicateImageError
            The name exists and neither ``exist_ok`` nor ``overwrite`` is given.
        OutputExistsError
            The image holds another job's data (another fingerprint).
        SpecMismatchError
            The name exists with other settings.
        NotOursError, OutputInUseError
            ``overwrite=True`` on an image holding what ngff-writer did not write, or
            being written by a live writer.
        """
        self._check_writable()
        spec = parse_image_spec(
            name, shape, axes, dtype, sample_axes=sample_axes, chunks=chunks, shards=shards,
            compressor=compressor, fill_value=fill_value, scale=scale, translation=translation,
            units=units, channel_names=channel_names, channel_colors=channel_colors,
            ngff_version=ngff_version or self.ngff_version, cast=cast,
            window_percentiles=window_percentiles, blend=blend, pyramid=pyramid, title=title,
        )
        return self._images.declare(spec, exist_ok, fingerprint, overwrite,
                                    auto_shards=isinstance(shards, str))

    def create_labels(
        self,
        image: str | Image | None,
        name: str,
        dtype: Any = "uint32",
        *,
        colors: Mapping[int, Any] | None = None,
        properties: Mapping[int, Mapping[str, Any]] | None = None,
        pyramid_method: str = "mode",
        shape: Sequence[int] | None = None,
        axes: str | None = None,
        compressor: Any = "default",
        cast: str = "safe",
        exist_ok: bool = False,
        fingerprint: str | None = None,
        overwrite: bool = False,
        **image_options: Any,
    ) -> Image:
        """Declare a label image (a segmentation), beside an image or on its own.

        With an ``image``, the label lives at ``<image>/labels/<name>``, on the image's
        grid: its axes but the channel, its chunks, scale and pyramid levels; the image's
        ``labels`` list names it (also when several writers add labels at once). Without
        one, pass ``shape``, ``axes`` and any option of :meth:`create_image` and the label
        image is declared at ``name``. Either way it is written like an image, sample by
        sample or tile by tile (crop mode) and finalizes itself once complete.

        ``colors`` and ``properties``, when both are given, must name the same label
        values (NGFF's rule, which ome-zarr-models enforces): ``colors={1: "FF0000"}``
        with ``properties={2: {...}}`` is refused with a :class:`SpecError`.

        Parameters
        ----------
        image
            The image the labels segment (its name or handle), or None for a standalone
            label image.
        name
            The label's name under ``labels/`` (one path segment), or its full path
            when standalone.
        dtype
            An integer type (``uint8`` ... ``int64``).
        colors
            Label value -> color (``"FF0000"``, ``"FF000080"`` or 3-4 ints 0-255).
        properties
            Label value -> a JSON mapping shown with that label (``{"class": "nucleus"}``).
        pyramid_method
            ``"mode"`` (most frequent value of each block; default) or ``"nearest"``
            (first pixel, cheaper). Never a mean: it would invent labels.
        shape, axes, **image_options
            Standalone labels only: as :meth:`create_image` takes them.
        compressor, cast, exist_ok, fingerprint, overwrite
            As for :meth:`create_image` (the fingerprint names what segmented).

        Raises
        ------
        UnsupportedDtypeError
            ``dtype`` is not an integer type.
        SpecError
            Bad colors or properties, ``blend`` asked for, a mean pyramid, or the
            geometry options given with an ``image``.
        UnknownImageError
            No image of that name.
        DuplicateImageError, OutputExistsError, SpecMismatchError, NotOursError, OutputInUseError
            As for :meth:`create_image`.
        """
        self._check_writable()
        if image is None:
            label = parse_label(colors, properties, source=None)
            if shape is None or axes is None:
                raise SpecError("a standalone label image needs shape and axes")
            pyramid = image_options.pop("pyramid", "auto")
            if isinstance(pyramid, (int, str)) and not isinstance(pyramid, bool):
                pyramid = {"levels": pyramid, "method": pyramid_method}
            elif isinstance(pyramid, Mapping):
                pyramid = {"method": pyramid_method, **pyramid}
            spec = self._parse_label_spec(label, name, shape, axes, dtype, compressor, cast,
                                          pyramid=pyramid, **image_options)
            return self._images.declare(spec, exist_ok, fingerprint, overwrite)
        if shape is not None or axes is not None or image_options:
            raise SpecError("labels of an image take its grid: shape, axes, chunks, scale and "
                            f"pyramid levels cannot be given (got {sorted(image_options)})")
        parent = image if isinstance(image, Image) else self.image(image)
        if parent.spec.label is not None:
            raise SpecError(f"{parent.name!r} is a label image; labels belong to an image")
        if not isinstance(name, str) or "/" in name.strip("/") or not name.strip("/"):
            raise SpecError(f"label name {name!r}: one path segment such as 'nuclei'")
        declaration = label_declaration(parent.spec, join(parent.name, LABELS_GROUP, name.strip("/")))
        if declaration["pyramid"] is not None:
            declaration["pyramid"]["method"] = pyramid_method
        label = parse_label(colors, properties)
        spec = self._parse_label_spec(label, dtype=dtype, compressor=compressor, cast=cast,
                                      **declaration)
        created = self._images.declare(spec, exist_ok, fingerprint, overwrite)
        register_label(self.store, parent.name, parent.spec.ngff_version)
        return created

    def create_series(
        self,
        index: int,
        shape: Sequence[int],
        axes: str,
        dtype: Any = "float32",
        *,
        title: str | None = None,
        exist_ok: bool = False,
        **image_options: Any,
    ) -> Image:
        """Declare image ``index`` of a collection: many images in this one store.

        The output root takes the bioformats2raw layout (the guide's "Layouts"):
        series ``0``, ``1``, ... are images, listed with their titles and sizes in
        ``OME/METADATA.ome.xml``, which napari opens as one collection. Series may be
        declared in any order by any number of writers; number them from 0 without gaps
        (readers stop at the first missing index). The list names a new series at once
        while it is short, then in batches that double, and every series once the output
        that declared it is closed.

        Parameters
        ----------
        index
            The series number (e.g. CAREamics' ``data_idx``); the image's path is ``str(index)``.
        shape, axes, dtype, **image_options
            As :meth:`create_image` takes them (``fingerprint`` and ``overwrite`` too).
        title
            The series' name in viewers and in the OME-XML (e.g. its source file).
        exist_ok
            As for :meth:`create_image`.
        """
        self._check_writable()
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise SpecError(f"series index must be an int >= 0, got {index!r}")
        version = image_options.pop("ngff_version", None) or self.ngff_version
        root = node_attributes(self.store, "")
        if root is not None and root[0] != (3 if version == "0.5" else 2):
            raise SpecError(f"a collection's series share the root's NGFF version; the root is "
                            f"zarr format {root[0]}, got ngff_version {version!r}")
        if self._images.find("") is not None:
            raise DuplicateImageError("the output root is an image; it cannot hold a collection")
        image = self.create_image(str(index), shape, axes, dtype, title=title, ngff_version=version,
                                  exist_ok=exist_ok, **image_options)
        self._series.add(version)
        return image

    def create_plate(
        self,
        name: str,
        rows: int | Sequence[str],
        columns: int | Sequence[str],
        shape: Sequence[int],
        axes: str,
        dtype: Any = "float32",
        *,
        wells: Sequence[tuple[str, str]] | None = None,
        fields: int = 1,
        acquisitions: int | Sequence[Mapping[str, Any]] | None = None,
        exist_ok: bool = False,
        fingerprint: str | None = None,
        overwrite: bool = False,
        **image_options: Any,
    ) -> Plate:
        """Declare an HCS plate: every field of every well an image, all declared at once.

        Each field is an ordinary image at ``<name>/<row>/<column>/<field>`` (get it with
        :meth:`Plate.field`, write its samples or tiles as usual; any process can). The
        plate is complete when all its fields are (:meth:`Plate.progress`).

        Parameters
        ----------
        name
            The plate's path in the output.
        rows, columns
            A count (rows named ``A, B, ...``, columns ``1, 2, ...``) or the names.
        shape, axes, dtype, **image_options
            One field's image, as :meth:`create_image` takes it. ``translation`` places every
            field alike, or each field of a well apart: ``{0: {"y": 0, "x": 0}, 1: {"y": 0,
            "x": 2048.0}}`` (keys: field index; a field not named is at 0).
        wells
            ``(row, column)`` pairs that hold fields; default: every row and column.
        fields
            Field images per well.
        acquisitions
            A count or NGFF acquisition entries (``{"id": 0, "name": "day 1"}``); fields
            cycle through them (field ``i`` belongs to acquisition ``i % len``).
        exist_ok
            Return the plate when it exists with the same settings (resume, or several
            writers declaring it at once).
        fingerprint, overwrite
            For every field image, as :meth:`create_image` takes them: a field holding
            another job's data is refused, or replaced with ``overwrite=True``.

        Raises
        ------
        SpecError
            Bad rows, columns, wells, fields or acquisitions, or a bad field declaration.
        DuplicateImageError
            The plate exists and neither ``exist_ok`` nor ``overwrite`` is given, or something
            else is at ``name``.
        OutputExistsError
            A field holds another job's data.
        SpecMismatchError
            It exists with other settings.
        """
        self._check_writable()
        layout = parse_plate(parse_name(name), rows, columns, wells, fields, acquisitions)
        if not layout.name:
            raise SpecError("a plate needs a name (it cannot be the output root)")
        version = image_options.get("ngff_version") or self.ngff_version
        image_options["ngff_version"] = version
        # One translation for every field, or one per field index ({0: ..., 1: ...}).
        translation = image_options.pop("translation", None)
        per_field = isinstance(translation, Mapping) and bool(translation) and all(
            isinstance(k, int) and not isinstance(k, bool) for k in translation)
        if per_field and not set(translation) <= set(range(layout.fields)):
            raise SpecError(f"translation: fields are 0-{layout.fields - 1}, got {sorted(translation)}")

        def field_translation(path: str) -> Any:
            return translation.get(int(path.rsplit("/", 1)[1])) if per_field else translation

        specs = {path: parse_image_spec(path, shape, axes, dtype, translation=field_translation(path),
                                        **image_options)
                 for path in layout.field_paths()}
        check_fingerprint(fingerprint)
        existing = read_plate(self.store, layout.name)
        if existing is not None and not (exist_ok or overwrite):
            raise DuplicateImageError(f"plate {layout.name!r} already exists in {describe(self.store)}; "
                                      "pass exist_ok=True to resume it")
        declare_plate(self.store, layout, version,
                      lambda path: self._images.declare(specs[path], True, fingerprint, overwrite))
        return Plate(self, layout)

    def plate(self, name: str) -> Plate:
        """The plate ``name`` (declared by this or any other process)."""
        self._check_open()
        layout = read_plate(self.store, parse_name(name))
        if layout is None:
            raise UnknownImageError(f"no plate {name!r} in {describe(self.store)}")
        return Plate(self, layout)

    def _parse_label_spec(self, label: Label, name: str, shape: Sequence[int], axes: str,
                          dtype: Any, compressor: Any, cast: str, **options: Any) -> ImageSpec:
        options.setdefault("ngff_version", self.ngff_version)
        return parse_image_spec(name, shape, axes, dtype, compressor=compressor, cast=cast,
                                label=label, **options)

    # ---- find ----------------------------------------------------------------------
    def image(self, name: str) -> Image:
        """Return the image ``name`` (declared by this or any earlier/other process)."""
        self._check_open()
        image = self._images.find(parse_name(name))
        if image is None:
            raise UnknownImageError(f"no image {name!r} in {describe(self.store)}")
        return image

    __getitem__ = image

    def __contains__(self, name: str) -> bool:
        return self._images.find(parse_name(name)) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.images())

    def images(self) -> list[str]:
        """Names of every image in the output, complete or not (read from the store).

        Images whose metadata is damaged are listed too; reading them raises
        :class:`CorruptError` (``repair()`` fixes what it can).
        """
        self._check_open()
        return self._images.names()

    def repair(self) -> dict[str, list[str]]:
        """Repair every image's damaged bookkeeping or metadata (see :func:`~ngff_writer.repair_output`).

        Returns what was done, per image. Afterwards a resumed run completes every image
        (writing again what repair found missing).
        """
        self._check_writable()
        from .repair import repair_output  # repair sits above this module

        self._images.forget()
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


def _refuse_home(root: StoreLike) -> None:
    """``mode="w"`` never empties a filesystem root or a home directory, whatever they hold."""
    if isinstance(root, (str, Path)) and "://" not in str(root):
        path = Path(str(root).removeprefix("file://")).expanduser().resolve()
        if path == Path(path.anchor) or path == Path.home().resolve():
            raise NotOursError(f"mode='w' on {path} would empty a filesystem root or a home directory; "
                               "nothing was deleted. Give the output a folder of its own",
                               entries=(str(path),))


def open_output(
    root: StoreLike,
    mode: Mode = "w-",
    *,
    ngff_version: str | None = None,
    storage_options: dict[str, Any] | None = None,
    max_buffer_bytes: int = 1 << 30,
    buffer_policy: str = "spill",
    context: Context | None = None,
    workers: int | None = None,
    commit_interval: float | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    force: bool = False,
) -> Output:
    """Open an output: a directory (or any zarr store) that holds OME-Zarr images.

    Parameters
    ----------
    root
        A local path (the default kind), a URL such as ``"s3://bucket/out.zarr"``, or a
        :class:`zarr.abc.store.Store`.
    mode
        ``"w-"`` create, refusing existing data (default); ``"w"`` replace an
        ngff-writer output (or create one in an empty or new folder): anything else at
        ``root`` (a user's files, another tool's zarr) is refused with
        :class:`NotOursError` before anything is deleted, and so is an output a live
        writer is writing unless ``force``; ``"a"`` reopen to append or resume (created if
        empty); ``"r"`` read-only, for status.
    ngff_version
        Default NGFF version of images declared in this output (``"0.5"`` or ``"0.4"``).
        Default: the version of the output's root when it exists (an output created for
        0.4 stays 0.4 when reopened), else ``"0.5"``.
    storage_options
        Options for fsspec URLs (credentials, endpoint).
    max_buffer_bytes
        Cap on memory holding partly covered chunks, per resolution level of an image,
        while regions/tiles (and the pyramid levels below them) are assembled (default 1 GiB).
    buffer_policy
        Past ``max_buffer_bytes``: ``"spill"`` saves the oldest partial chunks as fragments
        in the store (no chunk is read back); ``"error"`` raises ``BufferFullError``.
    context
        The threads, budget of data in flight, log committer and remote-store settings
        to write with (:class:`Context`), shared with other outputs opened with it.
        Default: :func:`default_context`, made on first use and closed at interpreter exit.
    workers
        Give this output a context of its own with this many threads storing chunks in
        the background (closed with the output). Default: the context's.
    commit_interval
        Seconds at most between a chunk being stored and its record being committed to
        the image's log: what a killed writer can lose (writing it again resumes).
        Default: the context's (1 s).
    timeout, retries
        For remote stores (URLs, obstore): seconds one store call may take, and further
        attempts after a timeout or a lost connection (0.5 s, 1 s, 2 s... apart), before a
        :class:`StoreError` is raised; a store that stops answering never blocks a writer
        longer than that. Local directories are not affected. Default: the context's
        (60 s, 3).
    force
        With ``mode="w"``: replace the output even while a writer appears to be writing
        it (its heartbeat is younger than 45 s; a writer killed on this machine is seen
        gone at once). That writer then fails with :class:`ImageReplacedError`. Never
        overrides the refusal to delete what ngff-writer did not write.

    Notes
    -----
    An output that is not closed is closed when it is dropped and at interpreter exit
    (with an :class:`UnclosedOutputWarning`): everything written to it is stored and
    recorded. A process that is killed (``kill -9``, a lost node) loses only what was in
    flight, all of it written again by a resumed run: records of the last
    ``commit_interval`` seconds, the data in flight (at most the context's
    ``inflight_bytes``, 80 MiB by default),
    and parts of chunks held in memory (at most ``max_buffer_bytes`` per image).

    Raises
    ------
    OutputExistsError
        ``mode="w-"`` and the store holds data.
    NotOursError
        ``mode="w"`` on data ngff-writer did not write (a subclass of OutputExistsError).
    OutputInUseError
        ``mode="w"`` on an output a live writer is writing, without ``force``.
    OutputNotFoundError
        ``mode="r"`` and there is no output.
    NotAnOutputError
        The store holds data but no ngff-writer image (``"a"``, ``"r"``). The root may be
        an output, one image in it, a single-image store, or any directory or group with
        images below it (a plain directory of ``*.ome.zarr`` stores, say): ``images()``
        lists them by their paths relative to ``root``.
    StoreError
        The store cannot be reached or read.
    """
    if mode not in ("w-", "w", "a", "r"):
        raise SpecError(f"mode must be 'w-', 'w', 'a' or 'r', got {mode!r}")
    if ngff_version is not None and str(ngff_version) not in ("0.4", "0.5"):
        raise SpecError(f"ngff_version must be '0.4' or '0.5', got {ngff_version!r}")
    if buffer_policy not in ("spill", "error"):
        raise SpecError(f"buffer_policy must be 'spill' or 'error', got {buffer_policy!r}")
    if not isinstance(max_buffer_bytes, int) or max_buffer_bytes < 0:
        raise SpecError(f"max_buffer_bytes must be an int >= 0, got {max_buffer_bytes!r}")
    if context is not None and not isinstance(context, Context):
        raise SpecError(f"context must be an ngff_writer.Context, got {type(context).__name__}")
    base = context if context is not None else default_context()
    base._check_open()
    for name, value in (("workers", workers), ("commit_interval", commit_interval),
                        ("timeout", timeout), ("retries", retries)):
        if value is not None:
            check_setting(name, value)
    timeout = base.timeout if timeout is None else float(timeout)
    retries = base.retries if retries is None else retries
    if mode == "r" and isinstance(root, (str, Path)) and "://" not in str(root):
        if not Path(root).exists():
            raise OutputNotFoundError(f"no output at {root}")
    if mode == "w":
        _refuse_home(root)
    store = open_store(root, mode, storage_options, timeout=timeout, retries=retries)
    empty = is_empty(store)
    where = describe(store)
    if mode == "w-" and not empty:
        raise OutputExistsError(
            f"{where} already holds data; open it with mode='a' to resume or mode='w' to replace it"
        )
    if mode == "w" and not empty:
        delete_contents(store, check_replaceable(store, "", force=force))
        empty = True
    if empty:
        if mode == "r":
            raise OutputNotFoundError(f"no output at {where}")
        fmt = 2 if str(ngff_version) == "0.4" else 3
        write_group(store, "", fmt, {WRITER_KEY: {"output": 1, "version": __version__}})
    else:
        # An output root, one image, or any directory or group holding images (the
        # CAREamics layout: a plain directory of single-image stores).
        root_node = node_attributes(store, "")
        if (root_node is None or WRITER_KEY not in root_node[1]) and not find_images(store):
            raise NotAnOutputError(f"{where} holds data that is not an ngff-writer output "
                                   "(no ngff-writer image was found in it)")
        if ngff_version is None and root_node is not None:
            ngff_version = "0.5" if root_node[0] == 3 else "0.4"
    ngff_version = ngff_version or "0.5"
    own = False
    if workers is not None and workers != base.store_threads:  # threads of its own, ended with the output
        own = True
        base = Context(store_threads=workers, encode_threads=base.encode_threads,
                       inflight_bytes=base.inflight_bytes, commit_interval=base.commit_interval,
                       timeout=base.timeout, retries=base.retries, nice=base.nice, durable=base.durable)
    caller = sys._getframe(1)
    return Output(store, mode, str(ngff_version), int(max_buffer_bytes), buffer_policy, base,
                  opened_at=(caller.f_code.co_filename, caller.f_lineno),
                  commit_interval=None if commit_interval is None else float(commit_interval),
                  owns_context=own)
