"""The layout the default gives large images, on the small images of the tests.

``shards="auto"`` shards images of 1 GiB or more (``ngff_writer._declare.shards``). Inside
:func:`large_default`, it treats every image as large: an image declared there gets the
very layout (level-0 shards of one sample, lower levels gathering samples) and the very
code path of a terabyte export. Writers in other processes continue the declared image
as it is stored, so only the declaring process needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

import ngff_writer._declare.shards as shards_module


@contextlib.contextmanager
def large_default(on: bool = True) -> Iterator[None]:
    """Declarations made inside get the default layout of large images (when ``on``)."""
    with pytest.MonkeyPatch.context() as patch:
        if on:
            patch.setattr(shards_module, "SHARD_MIN_IMAGE_BYTES", 0)
        yield
