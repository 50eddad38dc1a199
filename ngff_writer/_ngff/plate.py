"""HCS plates: rows x columns of wells, each holding field images, declared at once.

A plate is a group ``<plate>/<row>/<column>/<field>``: NGFF's ``plate`` block on the
plate group, a ``well`` block on each well, and every field an ordinary image of the
output (written sample by sample or tile by tile, tracked and finalized like any). All
fields share one declaration (shape, axes, dtype, chunks...), as the fields of one
acquisition do.

:func:`declare_plate` creates every field image first, then each well's metadata, then
the plate's, so a reader that finds the plate finds everything it names. Writers
declaring the same plate at once all write the same documents (JSON built from the same
arguments); one with other settings meets the stored plate or field declarations and
gets :class:`SpecMismatchError`. A plate is complete when all its fields are: its
status is read from theirs, never stored, so it cannot disagree with them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zarr.abc.store import Store

from .._storage.stores import field_of, join, node_attributes, write_group
from ..errors import SpecError, SpecMismatchError, UnknownImageError
from .metadata import plate_attributes, well_attributes

__all__ = ["Plate", "PlateLayout", "PlateProgress", "declare_plate", "parse_plate", "read_plate"]

_NAME = re.compile(r"^[A-Za-z0-9]+$")


@dataclasses.dataclass(frozen=True)
class PlateLayout:
    """Where a plate's fields are (derived from its arguments or read from its metadata).

    Attributes
    ----------
    name
        The plate's path in the output.
    rows, columns
        Row and column names, in plate order.
    wells
        ``(row, column)`` of every well that holds fields.
    fields
        Field images per well (over every acquisition).
    acquisitions
        NGFF acquisition entries (``{"id": 0, "name": ...}``), possibly empty.
    """

    name: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    wells: tuple[tuple[str, str], ...]
    fields: int
    acquisitions: tuple[dict[str, Any], ...] = ()

    def field_path(self, row: str, column: str, field: int) -> str:
        """Path of one field image in the output."""
        return join(self.name, str(row), str(column), str(field))

    def field_paths(self) -> list[str]:
        """Every field image, well by well."""
        return [self.field_path(r, c, f) for r, c in self.wells for f in range(self.fields)]

    def progress(self, complete: Mapping[str, bool]) -> PlateProgress:
        """The plate's progress, given which field images (by path) are complete."""
        wells = [[complete.get(self.field_path(r, c, f), False) for f in range(self.fields)]
                 for r, c in self.wells]
        return PlateProgress(self.name, sum(all(w) for w in wells), len(wells),
                             sum(map(sum, wells)), len(wells) * self.fields)

    def acquisition_of(self, field: int) -> int | None:
        """The acquisition id of field ``field`` (fields cycle through the acquisitions)."""
        if not self.acquisitions:
            return None
        return int(self.acquisitions[field % len(self.acquisitions)]["id"])


def _names(value: int | Sequence[str], what: str, make: Callable[[int], str]) -> tuple[str, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise SpecError(f"plate {what}: need at least one, got {value}")
        return tuple(make(i) for i in range(value))
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise SpecError(f"plate {what}: a count or a sequence of names, got {value!r}")
    names = tuple(str(v) for v in value)
    bad = [n for n in names if not _NAME.match(n)]
    if bad or not names or len(set(names)) != len(names):
        raise SpecError(f"plate {what}: names must be distinct, letters and digits only (NGFF); got "
                        f"{list(names)}")
    return names


def _row_name(i: int) -> str:
    # A..Z, then AA, AB... as plate readers label rows past 26.
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(ord("A") + r) + name
    return name


def parse_plate(name: str, rows: int | Sequence[str], columns: int | Sequence[str],
                wells: Sequence[tuple[str, str]] | None, fields: int,
                acquisitions: int | Sequence[Mapping[str, Any]] | None) -> PlateLayout:
    """Check a plate's arguments; see :meth:`ngff_writer.Output.create_plate`."""
    row_t = _names(rows, "rows", _row_name)
    col_t = _names(columns, "columns", lambda i: str(i + 1))
    if wells is None:
        well_t = tuple((r, c) for r in row_t for c in col_t)
    else:
        well_t = tuple((str(r), str(c)) for r, c in wells)
        bad = [w for w in well_t if w[0] not in row_t or w[1] not in col_t]
        if bad or not well_t or len(set(well_t)) != len(well_t):
            raise SpecError(f"plate wells: distinct (row, column) pairs of the plate's rows and "
                            f"columns; got {bad or list(well_t)}")
    if isinstance(fields, bool) or not isinstance(fields, int) or fields < 1:
        raise SpecError(f"plate fields: an int >= 1 per well, got {fields!r}")
    if acquisitions is None:
        acq: tuple[dict[str, Any], ...] = ()
    elif isinstance(acquisitions, bool):
        raise SpecError(f"plate acquisitions: a number or a list of mappings with an 'id', "
                        f"got {acquisitions!r}")
    elif isinstance(acquisitions, int):
        acq = tuple({"id": i} for i in range(acquisitions))
    else:
        acq = tuple(dict(a) for a in acquisitions)
        if any(not isinstance(a.get("id"), int) or a["id"] < 0 for a in acq):
            raise SpecError("plate acquisitions: each needs an int 'id' >= 0")
    if acq and fields % len(acq):
        raise SpecError(f"plate fields ({fields}) must be a multiple of the acquisitions ({len(acq)}): "
                        "fields cycle through them")
    return PlateLayout(name, row_t, col_t, well_t, fields, acq)


def declare_plate(store: Store, layout: PlateLayout, version: str,
                  declare_field: Callable[[str], object]) -> None:
    """Declare every field (``declare_field(path)``), then the wells' and plate's metadata."""
    fmt = 3 if version == "0.5" else 2
    plate = plate_attributes(layout.name.rsplit("/", 1)[-1], layout.rows, layout.columns, layout.wells,
                             layout.fields, layout.acquisitions, version)
    node = node_attributes(store, layout.name)
    if node is not None and node[1] and node[1] != plate:
        raise SpecMismatchError(f"plate {layout.name!r} exists with other rows, columns, wells, "
                                "fields or acquisitions")
    for path in layout.field_paths():
        declare_field(path)  # also checks the settings of a plate that exists
    if node is not None and node[1] == plate:
        return  # written last, so its wells are written too
    fields = [str(f) for f in range(layout.fields)]
    acquisition = [layout.acquisition_of(f) for f in range(layout.fields)]
    well = well_attributes(fields, acquisition, version)
    for r, c in layout.wells:
        write_group(store, join(layout.name, r), fmt, {})
        write_group(store, join(layout.name, r, c), fmt, well)
    write_group(store, layout.name, fmt, plate)


def read_plate(store: Store, name: str) -> PlateLayout | None:
    """The layout of the plate at ``name``, or None if there is none."""
    node = node_attributes(store, name)
    if node is None:
        return None
    attributes = node[1]
    ome = attributes.get("ome", attributes)
    block = ome.get("plate") if isinstance(ome, dict) else None
    if not isinstance(block, dict):
        return None
    key = join(name, "zarr.json")
    # Another tool's document, or a damaged one: every field is checked before use.
    with field_of(key, "plate.rows"):
        rows = tuple(_named(r) for r in _entries(block, "rows"))
    with field_of(key, "plate.columns"):
        columns = tuple(_named(c) for c in _entries(block, "columns"))
    with field_of(key, "plate.wells"):
        wells = tuple((rows[_index(w, "rowIndex", rows)], columns[_index(w, "columnIndex", columns)])
                      for w in _entries(block, "wells"))
    with field_of(key, "plate.field_count"):
        fields = block.get("field_count", 1)
        if isinstance(fields, bool) or not isinstance(fields, int) or fields < 1:
            raise TypeError(f"{fields!r} is not a count of fields")
    with field_of(key, "plate.acquisitions"):
        acquisitions = tuple(_entries(block, "acquisitions", required=False))
    return PlateLayout(name, rows, columns, wells, fields, acquisitions)


def _entries(block: dict[str, Any], field: str, required: bool = True) -> list[dict[str, Any]]:
    """``block[field]``: a list of objects (TypeError or KeyError when it is not one)."""
    value = block[field] if required else block.get(field, [])
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise TypeError(f"{field} is not a list of objects: {str(value)[:80]}")
    return value


def _named(entry: dict[str, Any]) -> str:
    name = entry.get("name")
    if not isinstance(name, str):
        raise TypeError(f"{str(entry)[:80]} has no name")
    return name


def _index(well: dict[str, Any], field: str, names: tuple[str, ...]) -> int:
    value = well.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
        raise IndexError(f"{field} {value!r} is not one of 0 to {len(names) - 1}")
    return value


@dataclasses.dataclass(frozen=True)
class PlateProgress:
    """How far a plate is, read from its fields.

    Attributes
    ----------
    name
        The plate's path in the output.
    wells_done, wells_total
        Wells whose fields are all complete, and all wells.
    fields_done, fields_total
        Complete field images, and all of them.
    complete
        Every field is complete and final.
    """

    name: str
    wells_done: int
    wells_total: int
    fields_done: int
    fields_total: int

    @property
    def complete(self) -> bool:
        """True when every field image is complete."""
        return self.fields_done == self.fields_total

    def to_json(self) -> dict[str, Any]:
        """The entry ``ngff-writer status --json`` prints for this plate."""
        return {"path": self.name, "complete": self.complete, "wells_done": self.wells_done,
                "wells_total": self.wells_total, "fields_done": self.fields_done,
                "fields_total": self.fields_total}


class Plate:
    """A plate of an output, from :meth:`Output.create_plate` or :meth:`Output.plate`."""

    def __init__(self, output: Any, layout: PlateLayout) -> None:
        self._output = output
        self.layout = layout

    def __repr__(self) -> str:
        return (f"Plate({self.name!r}, rows={len(self.layout.rows)}, columns={len(self.layout.columns)}, "
                f"wells={len(self.layout.wells)}, fields={self.layout.fields})")

    @property
    def name(self) -> str:
        """The plate's path in the output."""
        return self.layout.name

    @property
    def wells(self) -> list[tuple[str, str]]:
        """``(row, column)`` of every well."""
        return list(self.layout.wells)

    def field(self, row: str, column: str | int, field: int = 0) -> Any:
        """The image of one field (an :class:`ngff_writer.Image`: write it as any image).

        Raises
        ------
        UnknownImageError
            No such well or field in the plate.
        """
        well = (str(row), str(column))
        if well not in self.layout.wells or not (isinstance(field, int) and 0 <= field < self.layout.fields):
            raise UnknownImageError(f"plate {self.name!r} has no field {field!r} in well {well}: wells "
                                    f"{len(self.layout.wells)}, fields 0-{self.layout.fields - 1}")
        return self._output.image(self.layout.field_path(*well, field))

    def images(self) -> list[str]:
        """Paths of every field image in the output."""
        return self.layout.field_paths()

    def progress(self) -> PlateProgress:
        """Read every field's progress from the store (writes nothing)."""
        return self.layout.progress({p: self._output.image(p).progress().complete
                                     for p in self.layout.field_paths()})

    def finalize(self) -> bool:
        """Finalize every complete field; True when the whole plate is."""
        return all([self._output.image(p).finalize() for p in self.layout.field_paths()])


def plates_among(store: Store, image_paths: Sequence[str]) -> list[str]:
    """The plates that images at ``image_paths`` are fields of (each plate once, sorted)."""
    candidates = {p.rsplit("/", 3)[0] for p in image_paths if p.count("/") >= 3}
    return sorted(c for c in candidates if read_plate(store, c) is not None)
