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
:func:`ngff_writer.registry.register`, so writers adding series at once lose none.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from zarr.abc.store import Store

from .allocate import spec_of
from .ngff import checked, read_writer_attrs
from .registry import register
from .spec import ImageSpec
from .storage import join, list_dir, node_attributes, put_bytes, write_group

__all__ = ["LAYOUT_KEY", "OME_GROUP", "mark_collection", "register_series"]

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


def ome_xml(specs: list[ImageSpec]) -> bytes:
    """OME-XML naming every series (``Image:<index>``) with its sizes and pixel type."""
    ET.register_namespace("", _OME_NS)
    root = ET.Element(f"{{{_OME_NS}}}OME")
    for spec in sorted(specs, key=lambda s: int(s.name)):
        size = dict(zip(spec.layout.axes, spec.layout.shape, strict=True))
        # The sample axis has no OME dimension: its samples count as time points.
        size_t = size.get("t", 1) * (size.get("s", 1))
        image = ET.SubElement(root, f"{{{_OME_NS}}}Image", ID=f"Image:{spec.name}",
                              Name=spec.title or spec.name)
        pixels = ET.SubElement(
            image, f"{{{_OME_NS}}}Pixels", ID=f"Pixels:{spec.name}", DimensionOrder="XYZCT",
            Type=_PIXEL_TYPES[spec.np_dtype.name], SizeX=str(size["x"]), SizeY=str(size["y"]),
            SizeZ=str(size.get("z", 1)), SizeC=str(size.get("c", 1)), SizeT=str(size_t),
            BigEndian="false")
        ET.SubElement(pixels, f"{{{_OME_NS}}}MetadataOnly")
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def register_series(store: Store, version: str) -> list[str]:
    """Make the ``OME`` group's ``series`` list and OME-XML name every series in the root."""
    def present() -> set[str]:
        return {child for child in list_dir(store, "") if child.isdigit() and _spec(child) is not None}

    def _spec(path: str) -> ImageSpec | None:
        node = node_attributes(store, path)
        block = read_writer_attrs(node[1]) if node else None
        return spec_of(block, path, "") if block else None

    def listed(attributes: dict[str, Any]) -> set[str]:
        return {str(s) for s in attributes.get("series", [])}

    def document(entries: set[str], attributes: dict[str, Any]) -> dict[str, Any]:
        return {**attributes, "series": sorted(entries, key=int)}

    def write_xml(entries: set[str]) -> None:
        specs = [s for s in (_spec(e) for e in entries) if s is not None]
        put_bytes(store, join(OME_GROUP, "METADATA.ome.xml"), ome_xml(specs))

    fmt = 3 if version == "0.5" else 2
    return sorted(register(store, OME_GROUP, fmt, present, listed, document, write_xml), key=int)
