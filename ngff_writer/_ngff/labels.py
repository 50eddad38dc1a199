"""Label images (segmentations): their declaration beside an image, and the ``labels`` list.

A label image is an image like any other (declared, written, tracked and finalized by
the same modules) whose spec carries a :class:`~ngff_writer._declare.spec.Label`: integer data,
``image-label`` metadata instead of contrast windows, a ``"mode"`` or ``"nearest"``
pyramid and no blending. One that segments an image lives at ``<image>/labels/<name>``
with the image's grid: the same axes but the channel, the same chunks, scale and
pyramid levels (NGFF asks a label to have as many levels as its image), so every level
of the label lies on the same pixels as that level of the image.

The image's ``labels`` group lists its label images, kept by
:func:`ngff_writer._ngff.registry.register` so that writers declaring labels at once lose
none of each other's.
"""

from __future__ import annotations

from typing import Any

from zarr.abc.store import Store

from .._declare.spec import ImageSpec
from .._storage.stores import join, list_dir, node_attributes
from .metadata import labels_attributes, read_writer_attrs
from .registry import register

__all__ = ["LABELS_GROUP", "label_declaration", "register_label"]

LABELS_GROUP = "labels"


def label_declaration(parent: ImageSpec, path: str) -> dict[str, Any]:
    """Keyword arguments of ``create_image`` that put a label on ``parent``'s grid.

    The channel axis is left out (a label holds one value per pixel), unless the image
    stores ``s`` merged into ``t`` (six declared axes): the label then keeps a channel
    of size 1 so that its stored axes stay the image's.
    """
    keep_c = parent.layout.merged
    axes = "".join(a for a in parent.axes if a != "c" or keep_c)

    def per_axis(values: tuple[Any, ...] | None, c_value: Any) -> tuple[Any, ...] | None:
        if values is None:
            return None
        return tuple(c_value if a == "c" else v for a, v in zip(parent.axes, values, strict=True)
                     if a != "c" or keep_c)

    pyramid = None
    if parent.pyramid is not None:
        pyramid = {"levels": parent.pyramid.levels, "factors": parent.pyramid.factors}
    return {
        "name": path,
        "shape": per_axis(parent.shape, 1),
        "axes": axes,
        "sample_axes": parent.sample_axes,
        "chunks": per_axis(parent.chunks, 1),
        "shards": per_axis(parent.shards, 1),
        "scale": per_axis(parent.scale, 1.0),
        "translation": per_axis(parent.translation, 0.0),
        "units": {a: u for a, u in zip(parent.axes, parent.units, strict=True) if u and a != "c"},
        "ngff_version": parent.ngff_version,
        "pyramid": pyramid,
    }


def register_label(store: Store, image: str, version: str) -> list[str]:
    """Make the ``labels`` list of ``image`` name every label image below it; return the list."""
    group = join(image, LABELS_GROUP)

    def present() -> set[str]:
        found = set()
        for child in list_dir(store, group):
            node = node_attributes(store, join(group, child))
            if node is not None and read_writer_attrs(node[1]) is not None:
                found.add(child)
        return found

    def listed(attributes: dict[str, Any]) -> set[str]:
        ome = attributes.get("ome", attributes)
        return set(ome.get("labels", [])) if isinstance(ome, dict) else set()

    def document(entries: set[str], attributes: dict[str, Any]) -> dict[str, Any]:
        return {**attributes, **labels_attributes(sorted(entries), version)}

    fmt = 3 if version == "0.5" else 2
    return sorted(register(store, group, fmt, present, listed, document))
