"""Where ngff-writer keeps its own objects inside an image, and their format version.

Everything the writer needs besides the image's arrays and OME metadata lives under one
group of the image, ``<image>/ngff_writer/``::

    ngff_writer/                      a zarr group: its attributes are the declaration
                                      {"format", "spec", "version", "fingerprint", "id"},
                                      created once, and once the image is final its
                                      "final" checkpoint
    ngff_writer/log/<writer>-<seq>.json           batches of records (deleted when final)
    ngff_writer/fragments/<level>/<unit>/<writer>-<seq>.npz
                                      parts of write units (deleted once their unit is stored)
    ngff_writer/writers/<writer>.json a live writer's heartbeat (deleted when it closes)

A final image keeps only the group (a valid, empty zarr group with attributes), so tools
that walk the hierarchy find nothing else. While an image fills, ``log/`` and
``fragments/`` hold plain objects, which a deep walk of the hierarchy with zarr reports
as "not recognized as a component of a Zarr hierarchy"; viewers never walk that deep.

``FORMAT`` is the version of this layout and of the documents in it. Version 1
(ngff-writer 0.1) kept one zarr group per record under ``ngff_writer/done/``. The
declaration's ``fingerprint`` and ``id`` (:class:`Identity`) came later within format 2:
an image declared without them reads as having neither. Version 3 (ngff-writer 0.3)
counts level 0 in the spec's pyramid ``levels``, as every other count of levels does;
a format-2 spec is read by adding one, and a format-2 image can be continued.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from .._version import __version__
from ..errors import CorruptError, FormatVersionError

__all__ = ["CONTINUES_FROM", "FORMAT", "GROUP", "Identity", "ImageKeys", "check_format"]

#: Version of the bookkeeping layout and documents written by this ngff-writer.
FORMAT = 3
#: The oldest format of an unfinished image this ngff-writer continues (format 1 had
#: another layout of records).
CONTINUES_FROM = 2
#: Name of the bookkeeping group inside every image (reserved: no image may be called so).
GROUP = "ngff_writer"


@dataclasses.dataclass(frozen=True)
class Identity:
    """What produced an image, and which declaration of it a handle writes to.

    Attributes
    ----------
    fingerprint
        The caller's name for what produces the data (model weights, inputs,
        parameters), or None when it gave none. Two jobs with the same fingerprint are
        the same job: writing again is a retry.
    id
        Unique to one declaration of the image: an image deleted and declared again has
        another id, so a writer can tell that the image it writes to was replaced. None
        for images declared before ids existed.
    """

    fingerprint: str | None = None
    id: str | None = None

    @classmethod
    def new(cls, fingerprint: str | None) -> Identity:
        """The identity of a declaration made now."""
        return cls(fingerprint, uuid.uuid4().hex)

    @classmethod
    def of(cls, block: dict[str, Any]) -> Identity:
        """The identity a declaration (or an image's ``ngff_writer`` block) records."""
        fingerprint, ident = block.get("fingerprint"), block.get("id")
        return cls(fingerprint if isinstance(fingerprint, str) else None,
                   ident if isinstance(ident, str) else None)

    def to_json(self) -> dict[str, Any]:
        """The fields stored beside the spec (none that are unset)."""
        return {k: v for k, v in (("fingerprint", self.fingerprint), ("id", self.id)) if v is not None}


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


@dataclasses.dataclass(frozen=True)
class ImageKeys:
    """The store keys of one image's bookkeeping.

    Parameters
    ----------
    image
        Path of the image group in the store ("" for an image at the root).
    zarr_format
        The image's zarr format (2 for NGFF 0.4, 3 for 0.5).
    """

    image: str
    zarr_format: int

    @property
    def group(self) -> str:
        """The bookkeeping group."""
        return _join(self.image, GROUP)

    @property
    def declaration(self) -> str:
        """The document created once, atomically where the store allows, to declare the image.

        It is the group's attributes document (``zarr.json`` in format 3, ``.zattrs`` in
        format 2), so the declaration is readable as the group's attributes.
        """
        return _join(self.group, "zarr.json" if self.zarr_format == 3 else ".zattrs")

    @property
    def log(self) -> str:
        """Prefix of the log segments (no trailing slash)."""
        return _join(self.group, "log")

    def segment(self, name: str) -> str:
        """Key of the log segment ``name`` (``<writer>-<seq>``)."""
        return f"{self.log}/{name}.json"

    @property
    def writers(self) -> str:
        """Prefix of the live writers' heartbeats (no trailing slash)."""
        return _join(self.group, "writers")

    def heartbeat(self, writer: str) -> str:
        """Key of writer ``writer``'s heartbeat."""
        return f"{self.writers}/{writer}.json"

    def fragments(self, level: int | None = None) -> str:
        """Prefix of every fragment, or of one level's."""
        base = _join(self.group, "fragments")
        return base if level is None else f"{base}/{level}"

    def unit(self, level: int, idx: tuple[int, ...]) -> str:
        """Prefix of the fragments of one write unit."""
        return f"{self.fragments(level)}/{'.'.join(map(str, idx))}"


def check_format(block: dict[str, Any], where: str) -> int:
    """The bookkeeping format of a declaration or an image's ``ngff_writer`` block.

    Version 1 had no ``format`` field. Raises :class:`FormatVersionError` for a format this
    version cannot read (a newer ngff-writer wrote it), :class:`CorruptError` for nonsense.
    """
    fmt = block.get("format", 1)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise CorruptError(f"{where}: bookkeeping format {fmt!r} is not a version number", key=where)
    if fmt > FORMAT:
        raise FormatVersionError(
            f"{where} was written by ngff-writer {block.get('version', '?')} with bookkeeping format "
            f"{fmt}; this ngff-writer ({__version__}) reads formats up to {FORMAT}: upgrade "
            "ngff-writer to read or continue it"
        )
    return fmt
