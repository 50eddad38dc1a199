"""Declaring images in an output: a new image, the same job continued, or one replaced.

:class:`Images` holds an output's image handles, one per name, found in the store on
first use (an image declared by this or any other process) or made when declared. What a
declaration means when the name exists is decided here, before anything is written
(the guide's "Re-running, retraining, crashes" has the table):

- nothing there: the arrays are allocated and the skeleton metadata written
  (:mod:`ngff_writer._write.allocate`); the first of several writers declaring at once
  wins, and the others continue its image if it is the same job;
- the same job (the same settings, and the same fingerprint or none given): the image
  is continued, with ``exist_ok`` or ``overwrite``;
- another job's data or other settings: refused with a typed error, or replaced with
  ``overwrite`` (only what ngff-writer wrote, never while another writer is writing it).

The handle (:class:`ngff_writer.Output`) parses what the user passes into an
:class:`~ngff_writer.ImageSpec` and hands it here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .._declare.bookkeeping import GROUP, Identity, ImageKeys, check_format
from .._declare.spec import ImageSpec
from .._ngff.discover import find_images
from .._ngff.labels import LABELS_GROUP
from .._ngff.metadata import STATUS_COMPLETE, read_writer_attrs
from .._storage.stores import describe, is_temporary, list_dir, node_attributes
from .._track.ownership import check_replaceable, delete_contents
from .._write.allocate import allocate_image, declaration_of, declare
from ..errors import (
    DuplicateImageError,
    ImageReplacedError,
    OutputExistsError,
    SpecError,
    SpecMismatchError,
    StoreError,
)
from .closing import Closer
from .image import Image, Owner

__all__ = ["Images", "check_fingerprint"]


def _same_spec(image: Image, spec: ImageSpec, how: str) -> Image:
    """``image`` if it was declared as ``spec`` says; SpecMismatchError if not.

    The name is not compared: an image's own directory opened as an output has it at "",
    whatever name it was declared under.
    """
    diff = _differences(image.spec, spec)
    if diff:
        raise SpecMismatchError(f"image {spec.name!r} {how} with other settings ({', '.join(diff)})"
                                + _levels_hint(image.spec, spec))
    return image


def _levels_hint(found: ImageSpec, spec: ImageSpec) -> str:
    """Why a re-run of a script written for ngff-writer 0.2 may ask for one level fewer.

    0.2 read ``pyramid=N`` as N levels below level 0; "levels" now counts level 0 too, so
    the same call asks for one level fewer than the image it made has.
    """
    have, want = len(found.levels), len(spec.levels)
    if have != want + 1 or set(_differences(found, spec)) - {"pyramid", "shard_samples"}:
        return ""
    return (f": it has {have} levels and this call asks for {want}. Since ngff-writer 0.3, "
            f"pyramid=N counts level 0 (0.2 built N levels below it): pass pyramid={have} to "
            "continue it")


def _differences(found: ImageSpec, spec: ImageSpec) -> list[str]:
    """The settings in which two declarations differ, but for the name."""
    # Compared as JSON: a NaN fill value equals itself there.
    mine, theirs = spec.to_json(), found.to_json()
    mine.pop("name")
    theirs.pop("name")
    return [k for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)]


def _same_job(image: Image, spec: ImageSpec, fingerprint: str | None, how: str) -> Image:
    """``image`` if it holds this job's data: the same fingerprint (or none given) and settings.

    Raises
    ------
    OutputExistsError
        Another fingerprint (another model, other inputs or parameters): its data is not
        this job's, and writing on would mix the two.
    SpecMismatchError
        Other settings.
    """
    if fingerprint is not None and image.fingerprint != fingerprint:
        raise OutputExistsError(
            f"image {spec.name!r} {how} with data of another job: its fingerprint is "
            f"{image.fingerprint!r}, this job's {fingerprint!r}. Pass overwrite=True to replace it, "
            "or write to another path"
        )
    return _same_spec(image, spec, how)


def check_fingerprint(fingerprint: Any) -> str | None:
    """``fingerprint`` if it can name a job (None, or a non-empty string); SpecError if not."""
    if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint.strip()):
        raise SpecError(f"fingerprint must be a non-empty string naming what produces the data, "
                        f"got {fingerprint!r}")
    return fingerprint


class Images:
    """The images of one output, one handle per name: found, declared, continued or replaced.

    Parameters
    ----------
    owner
        The output the handles belong to.
    closer
        What closes the output; a replaced image's pipeline is taken off it.
    ngff_version
        The output's NGFF version (an image at its root must have it).
    """

    def __init__(self, owner: Owner, closer: Closer, ngff_version: str) -> None:
        self.owner = owner
        self.store = owner.store
        self.closer = closer
        self.ngff_version = ngff_version
        self._handles: dict[str, Image] = {}

    def forget(self) -> None:
        """Drop every handle (the output closed, or its images repaired): found anew on use."""
        self._handles.clear()

    def opened(self) -> list[Image]:
        """The handles made so far (by declaring, or finding, an image)."""
        return list(self._handles.values())

    def names(self) -> list[str]:
        """Every image in the store, complete or not."""
        return find_images(self.store)

    def find(self, name: str) -> Image | None:
        """The image at ``name``, or None where there is none."""
        if name in self._handles:
            return self._handles[name]
        node = node_attributes(self.store, name)
        block = read_writer_attrs(node[1]) if node else None
        if block is None:
            return None
        where = f"image {name!r} in {describe(self.store)}"
        fmt = check_format(block, where)
        declared = declaration_of(block, where, describe(self.store))
        image = Image(self.owner, declared.spec, final=block.get("status") == STATUS_COMPLETE, fmt=fmt,
                      path=name, identity=declared.identity)
        self._handles[name] = image
        return image

    def declare(self, spec: ImageSpec, exist_ok: bool, fingerprint: str | None = None,
                overwrite: bool = False, auto_shards: bool = False) -> Image:
        """Declare ``spec``, or continue or replace the image there (see ``Output.create_image``).

        ``auto_shards``: the shards were ngff-writer's choice, not the user's. An image
        stored with other shards (by a version with another default) is then continued
        as it is stored: the layout is not the job, and resuming must not fail on it.
        """
        check_fingerprint(fingerprint)
        existing = self.find(spec.name)
        if existing is not None and auto_shards:
            spec = dataclasses.replace(spec, shards=existing.spec.shards,
                                       shard_samples=existing.spec.shard_samples)
        if existing is not None:
            this_job = (fingerprint is not None and existing.fingerprint == fingerprint
                        and not _differences(existing.spec, spec))
            if overwrite and not this_job:
                if not self._replace(existing):  # replaced meanwhile by another writer
                    return self.declare(spec, exist_ok, fingerprint, overwrite)
            elif not (exist_ok or overwrite):
                raise DuplicateImageError(
                    f"image {spec.name!r} already exists in {describe(self.store)}; pass "
                    "exist_ok=True to resume it"
                )
            else:
                return _same_job(existing, spec, fingerprint, "exists")
        self._check_place(spec)
        # Another writer (a DDP rank, a cluster worker) may declare the same image at the
        # same time: the declaration created first is the one that counts, and the arrays
        # are made from it (see ngff_writer._write.allocate).
        declared = declare(self.store, spec, fingerprint)
        how = "was declared at the same time by another writer"
        if declared.spec.to_json() != spec.to_json() or declared.identity.fingerprint != fingerprint:
            _same_job(Image(self.owner, declared.spec, final=False, identity=declared.identity), spec,
                      fingerprint, how)
        allocate_image(self.store, declared)
        self._handles.pop(spec.name, None)
        image = self.find(spec.name)
        if image is None:
            raise StoreError(f"image {spec.name!r} was declared but cannot be read back from "
                             f"{describe(self.store)}")
        return _same_job(image, spec, fingerprint, how)

    def _replace(self, image: Image) -> bool:
        """Delete ``image`` (ours only, no live writer) to declare it anew; False if it changed meanwhile."""
        name = image.name
        own = [i._ledger.writer for i in self._handles.values() if i._writer is not None]
        found = check_replaceable(self.store, name, exclude=own,
                                  what=f"overwrite=True on image {name or '.'!r}")
        keys = ImageKeys(name, image.spec.zarr_format)
        node = node_attributes(self.store, keys.group)
        current = Identity.of(node[1]) if node else Identity()
        for cached in [n for n in self._handles if n == name or n.startswith(f"{name}/") or not name]:
            old = self._handles.pop(cached)
            if old._writer is not None:
                self.closer.pipelines.remove(old._writer)
                old._writer.retire()
            old._ledger.replaced = ImageReplacedError(
                f"image {cached!r} was replaced by this output (overwrite=True); use the new handle")
        if current.id != image._ledger.identity.id:
            return False  # another writer replaced it first: that is the image to continue
        delete_contents(self.store, found, name)
        return True

    def _check_place(self, spec: ImageSpec) -> None:
        # What is already at the image's place must be nothing, or what a writer
        # declaring the same image right now leaves while it allocates (a group zarr
        # made implicitly for the level arrays, those arrays, the bookkeeping group),
        # or that image itself once declared: never a user's group or another image.
        if spec.name == "":
            if [name for name in self.names() if name]:
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
        parts = spec.name.split("/")
        # The one place an image may hold another: its labels, at <image>/labels/<name>.
        labels_of = "/".join(parts[:-2]) if len(parts) >= 2 and parts[-2] == LABELS_GROUP else None
        if labels_of is not None and spec.label is None:
            raise DuplicateImageError(f"{spec.name!r}: only label images go in an image's "
                                      f"{LABELS_GROUP!r} group (use create_labels)")
        if any(self.find("/".join(parts[:k])) is not None
               for k in range(1, len(parts)) if "/".join(parts[:k]) != labels_of):
            raise DuplicateImageError(f"{spec.name!r} would be inside another image")
        if self.find("") is not None and labels_of != "":
            raise DuplicateImageError(f"the output root is an image; {spec.name!r} cannot go inside it")

    def _being_declared(self, spec: ImageSpec, attributes: dict[str, Any]) -> bool:
        if attributes and read_writer_attrs(attributes) is None:
            return False
        ours = {level.path for level in spec.levels} | {GROUP}
        # A writer declaring it right now may be renaming a temporary file into place.
        children = {c for c in list_dir(self.store, spec.name) if not is_temporary(c)}
        children -= {"zarr.json", ".zgroup", ".zattrs"}
        if not children <= ours:
            raise DuplicateImageError(f"{spec.name!r} is already a group that is not an image "
                                      f"(it holds {sorted(children - ours)})")
        # A writer declaring it now makes arrays there; a group (an image declared as
        # "<name>/0", say) is someone's, and its level arrays cannot go there.
        groups = sorted(c for c in children - {GROUP}
                        if node_attributes(self.store, f"{spec.name}/{c}" if spec.name else c) is not None)
        if groups:
            raise DuplicateImageError(f"{spec.name!r} holds groups {groups} where its level arrays "
                                      "would go: it is not an image")
        return True
