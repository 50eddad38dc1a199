"""Many images in one store as a collection: the bioformats2raw layout viewers read.

NGFF 0.4 and 0.5 define no collection of images (one is proposed for a later version).
The layout readers understand today is bioformats2raw's: the root's attributes say
``"bioformats2raw.layout": 3``, images are the groups ``0``, ``1``, ... (series), and an
``OME`` group holds the ``series`` list and ``METADATA.ome.xml`` naming each series and its
size. napari-ome-zarr opens such a root as all its series; ome-zarr-models validates it.
ome-zarr-models advises against writing new bioformats2raw groups since a successor will
replace them; until one exists it is the only layout a viewer opens as a whole, and
every series stays an ordinary image a reader can open alone.

Series are declared with :meth:`ngff_writer.Output.create_series`, by index (a CAREamics
``data_idx``), from any number of writers; the list and the OME-XML are kept by
:func:`ngff_writer._ngff.registry.register`, so writers adding series at once lose none.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from zarr.abc.store import Store

from .._declare.spec import ImageSpec
from .._storage.stores import join, list_dir, node_attributes, put_bytes, write_group
from .metadata import WRITER_KEY, checked, read_writer_attrs, spec_of
from .registry import register

__all__ = ["LAYOUT_KEY", "OME_GROUP", "SeriesList", "mark_collection", "register_series"]

LAYOUT_KEY = "bioformats2raw.layout"
OME_GROUP = "OME"
_OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
# OME-XML pixel types; OME has no 64-bit integers, so those are declared "double", the
# one type whose range holds them (the XML only describes: the data stay 64-bit integers).
_PIXEL_TYPES = {"uint8": "uint8", "int8": "int8", "uint16": "uint16", "int16": "int16",
                "uint32": "uint32", "int32": "int32", "float32": "float", "float64": "double",
                "bool": "bit", "uint64": "double", "int64": "double"}


def _root_layout(attributes: dict[str, Any], version: str) -> dict[str, Any]:
    if version == "0.5":
        ome = attributes.get("ome", {})
        return {**attributes, "ome": {**ome, "version": "0.5", LAYOUT_KEY: 3}}
    return {**attributes, LAYOUT_KEY: 3}


def mark_collection(store: Store, version: str) -> None:
    """Give the output root the bioformats2raw layout key (idempotent; other keys kept)."""
    node = node_attributes(store, "")
    attributes = node[1] if node else {}
    marked = _root_layout(attributes, version)
    if marked != attributes:
        fmt = 3 if version == "0.5" else 2
        write_group(store, "", fmt, checked(marked, "collection", version))


def _summary(spec: ImageSpec) -> dict[str, Any]:
    """What the OME-XML says of a series: its title, OME sizes and pixel type."""
    size = dict(zip(spec.layout.axes, spec.layout.shape, strict=True))
    # The sample axis has no OME dimension: its samples count as time points.
    return {"title": spec.title or spec.name, "type": _PIXEL_TYPES[spec.np_dtype.name],
            "sizes": {"X": size["x"], "Y": size["y"], "Z": size.get("z", 1), "C": size.get("c", 1),
                      "T": size.get("t", 1) * size.get("s", 1)}}


def ome_xml(series: dict[str, dict[str, Any]]) -> bytes:
    """OME-XML naming every series (``Image:<index>``) with its sizes and pixel type."""
    ET.register_namespace("", _OME_NS)
    root = ET.Element(f"{{{_OME_NS}}}OME")
    for index in sorted(series, key=int):
        summary = series[index]
        image = ET.SubElement(root, f"{{{_OME_NS}}}Image", ID=f"Image:{index}", Name=summary["title"])
        sizes = {f"Size{k}": str(v) for k, v in summary["sizes"].items()}
        pixels = ET.SubElement(image, f"{{{_OME_NS}}}Pixels", {
            "ID": f"Pixels:{index}", "DimensionOrder": "XYZCT", "Type": summary["type"],
            "BigEndian": "false", **sizes})
        ET.SubElement(pixels, f"{{{_OME_NS}}}MetadataOnly")
    xml: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return xml


def _series_list(attributes: dict[str, Any]) -> list[Any]:
    """The ``OME`` group's series list: under ``ome`` in NGFF 0.5, at the top in 0.4.

    A 0.5 collection written by an earlier ngff-writer keeps its list at the top, as 0.4
    does: it is still read (and moved under ``ome`` when the list is next written).
    """
    ome = attributes.get("ome")
    listed = ome.get("series") if isinstance(ome, dict) else None
    if listed is None:
        listed = attributes.get("series")
    return listed if isinstance(listed, list) else []


def _with_series(attributes: dict[str, Any], series: list[str], version: str) -> dict[str, Any]:
    if version == "0.5":
        # NGFF 0.5 (its ome.schema): {"ome": {"version": "0.5", "series": [...]}}.
        rest = {k: v for k, v in attributes.items() if k != "series"}
        ome = attributes.get("ome")
        return {**rest, "ome": {**(ome if isinstance(ome, dict) else {}), "version": "0.5", "series": series}}
    return {**attributes, "series": series}


def register_series(store: Store, version: str) -> list[str]:
    """Make the ``OME`` group's ``series`` list and OME-XML name every series in the root.

    The OME group keeps each listed series' summary beside the list, so a call reads the
    declaration of new series only: declaring N series costs O(N) reads, not O(N^2).
    """
    summaries: dict[str, dict[str, Any]] = {}

    def listed(attributes: dict[str, Any]) -> set[str]:
        block = attributes.get(WRITER_KEY, {})
        summaries.update(block.get("series", {}) if isinstance(block, dict) else {})
        return {str(s) for s in _series_list(attributes)} & set(summaries)

    def present() -> set[str]:
        for child in list_dir(store, ""):
            if child.isdigit() and child not in summaries:
                node = node_attributes(store, child)
                block = read_writer_attrs(node[1]) if node else None
                if block is not None:  # else still being declared: its writer registers it
                    summaries[child] = _summary(spec_of(block, child, ""))
        return set(summaries)

    def document(entries: set[str], attributes: dict[str, Any]) -> dict[str, Any]:
        return {**_with_series(attributes, sorted(entries, key=int), version),
                WRITER_KEY: {"series": {e: summaries[e] for e in entries}}}

    def write_xml(entries: set[str]) -> None:
        put_bytes(store, join(OME_GROUP, "METADATA.ome.xml"), ome_xml({e: summaries[e] for e in entries}))

    fmt = 3 if version == "0.5" else 2
    return sorted(register(store, OME_GROUP, fmt, present, listed, document, write_xml), key=int)


class SeriesList:
    """The series an output declared since the collection's list last named them.

    See ``Output.create_series``: the list is rewritten in batches that double, and at close.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.version: str | None = None
        self.pending = 0  # declared since the list was last written
        self.listed = 0  # how many the list named then

    def add(self, version: str) -> None:
        if self.version is None:
            mark_collection(self.store, version)
            self.version = version
        # The list and the OME-XML name every series, so rewriting them costs O(series).
        # Rewritten each time the series declared since reach the number the list held
        # (1, 2, 4, 8...) and at close(), declaring N series costs O(N) in all; each
        # series is an image readers can open alone from the start.
        self.pending += 1
        if self.pending >= max(1, self.listed):
            self.register()

    def register(self) -> None:
        if self.pending and self.version is not None:
            self.listed = len(register_series(self.store, self.version))
            self.pending = 0
