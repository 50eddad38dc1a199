"""Memory for the copies a write call makes, used again once nothing refers to it.

A write call copies what it is given (the caller may reuse its buffer once the call
returns), in the caller's thread: the copy is time a model waits. Copying into new
memory costs the kernel a page fault on the first touch of every page: on the 2-core
machines we measure on, a 1x32x512x512 float32 sample (32 MiB) took 9.8 ms to copy into
new memory and 2.5 ms into memory touched before. numpy takes arrays this large straight
from the kernel and gives them back when freed, so every copy would pay the faults
again. A :class:`Recycler` keeps the memory of the copies the writer is done with, up to
the context's budget of data in flight, and copies into it.

A block is lent again only once nothing refers to it: every array cut from a block (the
units being stored, encoded or reduced, and any view of those) has the block as its
``base``, so the block's reference count tells whether one is alive. Nothing has to give
a block back, and a block still being read is never written over. What a free block's
count reads is measured on a probe when the recycler is made (interpreters differ in the
references they borrow); where counts are not exact (a free-threaded build) nothing is
kept and every copy gets new memory.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["Recycler"]

#: Copies smaller than this are made in new memory: their page faults cost little.
SMALLEST = 1 << 20
#: Blocks are sized in steps of this, so units of nearby sizes (tiles at the edges) share them.
STEP = 1 << 20


class Recycler:
    """Blocks of memory for copies, kept and lent again (see the module docstring).

    Parameters
    ----------
    limit
        Bytes of blocks kept at most (the budget of data in flight: more is never in
        use at once, but for one block past it).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        # The count of a block held by the list alone, read as every later check reads it.
        self._blocks: list[np.ndarray] = [np.empty(0, np.uint8)]
        self._free_count = self._refs(0)
        self._blocks.clear()
        self._exact = getattr(sys, "_is_gil_enabled", lambda: True)()
        #: Copies of ``SMALLEST`` bytes or more that found no free block (new memory).
        self.misses = 0

    @property
    def kept(self) -> int:
        """Bytes of blocks kept, lent or free."""
        return sum(block.nbytes for block in self._blocks)

    def copy(self, data: np.ndarray) -> np.ndarray:
        """A C-ordered copy of ``data``, in a free block where one fits."""
        block = self._lend(data.nbytes) if data.nbytes >= SMALLEST and self._exact else None
        if block is None:
            self.misses += data.nbytes >= SMALLEST
            return np.array(data, order="C", copy=True)
        out = block[: data.nbytes].view(data.dtype).reshape(data.shape)
        np.copyto(out, data, casting="no")
        return out

    def trim(self) -> None:
        """Keep no block (an output closed: nothing may come soon).

        Free blocks' memory goes back now; a block still in use, when its last array is
        done with it (the threads that stored an output's last units may hold them a
        moment after it closed).
        """
        with self._lock:
            self._blocks = []

    def _refs(self, k: int) -> int:
        return sys.getrefcount(self._blocks[k])

    def _free(self, k: int) -> bool:
        # Referred to as the probe was, by the list alone: no array uses it.
        return self._refs(k) == self._free_count

    def _lend(self, nbytes: int) -> np.ndarray | None:
        size = -(-nbytes // STEP) * STEP
        with self._lock:
            free = [k for k in range(len(self._blocks)) if self._free(k)]
            fits = [k for k in free if self._blocks[k].nbytes >= nbytes]
            if fits:
                return self._blocks[min(fits, key=lambda k: self._blocks[k].nbytes)]
            kept = sum(block.nbytes for block in self._blocks)
            # Free blocks too small to use are given back to make room for one that fits.
            for k in sorted(free, reverse=True):
                if kept + size <= self.limit:
                    break
                kept -= self._blocks.pop(k).nbytes
            if kept + size > self.limit and kept:
                return None  # as much as the budget is lent already: a copy of its own
            block = np.empty(size, dtype=np.uint8)
            self._blocks.append(block)
            return block
