"""The default layout: shards for large images, so that an export fits a cluster's file quota.

Parallel filesystems (Lustre, GPFS) cap each user's files, often near 10^6, and object
stores charge per request. Unsharded 4 MiB chunks of float32 predictions make about
333,000 files per TB; a shard holds many chunks in one file. ``shards="auto"`` (the
default of :meth:`ngff_writer.Output.create_image`) picks:

- no shards below :data:`SHARD_MIN_IMAGE_BYTES` of level 0, or in NGFF 0.4 (zarr v2
  has no sharding): small images stay one file per chunk, which any tool can read;
- otherwise, one shard per sample at level 0: the sample's extent along every other
  axis, in whole chunks, halved along the axis with the most chunks until at most
  :data:`SHARD_MAX_BYTES`; no shards where that leaves one chunk per shard;
- below level 0, a sample is 4x smaller at each level (``y`` and ``x`` halved), so a
  level's shard gathers as many samples as make it no larger than level 0's
  (:func:`gathered`): 4 at level 1, 16 at level 2... Without that, every level would add
  as many files as level 0 has.

A level-0 shard never spans two samples: it is stored whole, at once, by the writer of
its sample, so several writers never write the same file and none reads one back. A
lower level's shard is filled as the samples' reductions arrive, a chunk at a time, into
its temporary file (``ShardBuffer`` in :mod:`ngff_writer._write.assemble`, ``ShardSink``
in :mod:`ngff_writer._write.encode`), as tiles fill a level-0 shard: a writer holds the
chunks a part covers only in part, never a shard. Several writers sharing one hand their
parts over as fragments to the writer that completes it. Chunks stay what they were (at
most 4 MiB), so a viewer still reads small pieces. The measurements behind the sizes are
in ``benchmarks/README.md`` ("Shards").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["SHARD_MAX_BYTES", "SHARD_MIN_IMAGE_BYTES", "auto_shards", "gathered", "layout_reason"]

#: Images whose level 0 holds fewer bytes keep one file per chunk: 1 GiB of 4 MiB chunks
#: is 256 files, which no quota feels.
SHARD_MIN_IMAGE_BYTES = 1 << 30
#: Largest default shard: objects of 64-128 MiB keep files per TB under 10,000 (for samples
#: of 128 MiB or more). Larger shards would save few files more, and a store that is not a
#: local directory (S3) keeps a shard being filled in memory, encoded, until it is put.
SHARD_MAX_BYTES = 128 << 20


def auto_shards(axes: str, shape: Sequence[int], sample_axes: str, chunks: Sequence[int],
                itemsize: int, ngff_version: str, start: Sequence[int] | None = None
                ) -> tuple[int, ...] | None:
    """Shards ``"auto"`` picks, in declared axis order, or None to store chunks only.

    Parameters
    ----------
    axes, shape, sample_axes, chunks, itemsize, ngff_version
        The declaration (declared axis order).
    start
        The block to start from instead of one sample (``to_image`` passes a dask
        block, 1 along ``s``). It is then only halved where it splits evenly, so every
        block stays whole shards.
    """
    # SHARD_MIN_IMAGE_BYTES is read at call time: tests/layouts.py lowers it.
    if ngff_version != "0.5" or math.prod(shape) * itemsize < SHARD_MIN_IMAGE_BYTES:
        return None
    if start is None:
        start = [1 if a in sample_axes else n for a, n in zip(axes, shape, strict=True)]
    # Counted in chunks, so that the shard stays a multiple of them (zarr's rule).
    per_chunk = [-(-min(b, n) // c) for b, n, c in zip(start, shape, chunks, strict=True)]
    chunk_bytes = math.prod(chunks) * itemsize
    while math.prod(per_chunk) * chunk_bytes > SHARD_MAX_BYTES:
        fits = [k for k, m in enumerate(per_chunk) if m > 1 and (m % 2 == 0 or start is None)]
        if not fits:
            break
        # The most chunks first, the outermost of equals: shards stay slabs of whole planes.
        k = max(fits, key=lambda i: (per_chunk[i], -i))
        per_chunk[k] = -(-per_chunk[k] // 2)
    if math.prod(per_chunk) == 1:
        return None
    return tuple(m * c for m, c in zip(per_chunk, chunks, strict=True))


def gathered(units: Sequence[Sequence[int]], itemsize: int) -> tuple[int, ...] | None:
    """Samples per shard of each level below 0, None when every level keeps one.

    ``units`` are every level's shard (level 0 first), one sample each: each lower level
    gathers as many samples as fit in level 0's shard. They are gathered along the last
    sample axis (``t`` of ``"st"``), where consecutive samples lie.
    """
    top = math.prod(units[0]) * itemsize
    out = tuple(max(1, top // (math.prod(u) * itemsize)) for u in units[1:])
    return out if any(g > 1 for g in out) else None


def layout_reason(shards: Sequence[int] | None, shape: Sequence[int], itemsize: int,
                  ngff_version: str) -> str:
    """One line saying why an image is, or is not, sharded (``ngff-writer info`` prints it)."""
    size = math.prod(shape) * itemsize
    if shards is not None:
        return (f"sharded: {math.prod(shards) * itemsize / 2**20:.0f} MiB shards, one file each "
                f"(the default for images of {SHARD_MIN_IMAGE_BYTES >> 30} GiB or more)")
    if ngff_version != "0.5":
        return "one file per chunk: NGFF 0.4 (zarr v2) has no shards"
    if size < SHARD_MIN_IMAGE_BYTES:
        return (f"one file per chunk: below {SHARD_MIN_IMAGE_BYTES >> 30} GiB, the default "
                "does not shard")
    return "one file per chunk: declared without shards, or a sample is one chunk"
