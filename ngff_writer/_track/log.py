"""The completion log: which write units of an image are stored, kept in the store itself.

Every writer appends *records* (a box of write units of one level, stored) to a log of
its own, under ``<image>/ngff_writer/log/`` (:mod:`ngff_writer._declare.bookkeeping`). Records are
batched: a writer keeps the records of data it has stored in memory and commits them
as one immutable *segment* ``<writer>-<seq>.json`` when the batch is full, when the
oldest has waited ``commit_interval`` seconds (the engine's committer thread sees to
it), and on ``flush``/``close``/``finalize``. A segment also holds the summed
statistics of its level-0 data (:mod:`ngff_writer._ngff.stats`).

Why this shape:

- **No shared document.** zarr rewrites documents whole, so two writers updating one
  document lose each other's updates; segment names are unique per writer, so writers
  never collide, need no lock and no listing to write.
- **Cost independent of the job's size.** A write costs an in-memory append; the
  completion test a write makes reads this writer's own view (:class:`Coverage`), and
  other writers' segments are read only when that view says the image may be complete,
  or on ``flush``/``close``/``finalize``/``progress``, and then only the segments not
  read before (segments never change).
- **Few objects.** A writer merges its own segments as they accumulate (``fanout`` of
  one size into one of the next, as log-structured stores compact), so it keeps
  O(log n) segments for n commits and each record is rewritten O(log n) times. A merged
  segment names the ones it replaces, and readers drop those even if a crash left them.
  When the image is final its log is folded into a checkpoint in the bookkeeping group's
  attributes and deleted.
- **Crash safety.** A record is committed only after its data is stored, so the log
  never lists a unit that is not stored. A killed writer loses the records it had not
  committed yet (at most ``commit_interval`` seconds of writes); writing that data again
  is an accepted retry.
- **The image it writes to.** Before each commit a writer reads the image's
  declaration: if the image was deleted or declared anew (``mode="w"``, ``overwrite``)
  the writer stops with :class:`~ngff_writer.errors.ImageReplacedError` instead of
  recording units into an image that does not hold them.
- **Heartbeats.** A writer of an image that is not final keeps a small document
  ``writers/<writer>.json`` with the time, host and process, rewritten every
  ``HEARTBEAT`` seconds and deleted when it closes, so that replacing an output can
  tell a live writer from a crashed one (:func:`live_writers`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from zarr.abc.store import Store

from .._declare.bookkeeping import Identity, ImageKeys
from .._declare.grid import Box, box_slices, grid_shape
from .._declare.spec import ImageSpec, Layout
from .._ngff.stats import Summary, merge_channels
from .._storage.stores import (
    delete_keys,
    describe,
    get_many,
    list_prefix,
    loads,
    node_attributes,
    oversized,
    process_exists,
    put_json,
    refuse_links,
    repair_hint,
    sync_to_disk,
)
from ..errors import CorruptError, ImageReplacedError, StoreError

__all__ = ["HEARTBEAT", "LIVE_FOR", "Coverage", "Ledger", "Segment", "live_writers", "samples_done"]

#: A segment's document has not changed since bookkeeping format 2 (ngff-writer 0.2).
SEGMENT_FORMAT = 2
#: Records a writer holds before committing them (a segment of ~100-200 kB).
BATCH = 4096
#: Segments of one size a writer merges into one of the next.
FANOUT = 8
#: Seconds between a live writer's heartbeats.
HEARTBEAT = 10.0
#: A heartbeat younger than this many seconds is a live writer's (unless its process is
#: known gone): three beats missed, with room for a slow store.
LIVE_FOR = 45.0


class Coverage:
    """Which write units of each level are known to be stored.

    Parameters
    ----------
    spec
        The image (gives each level's grid of write units).
    """

    def __init__(self, spec: ImageSpec) -> None:
        self.grids = [np.zeros(grid_shape(g.shape, g.unit), bool) for g in spec.levels]
        self.counts = [0] * len(self.grids)

    def add(self, level: int, box: Box) -> bool:
        """Mark ``box`` stored; True if it held a unit not known stored before."""
        view = self.grids[level][box_slices(box)]
        new = view.size - int(np.count_nonzero(view))
        if new:
            view[...] = True
            self.counts[level] += new
        return bool(new)

    def add_rows(self, level: int, rows: np.ndarray) -> None:
        """Mark many boxes stored at once (rows of start then stop, as the log stores them)."""
        n = rows.shape[1] // 2
        grid = self.grids[level]
        single = (rows[:, n:] - rows[:, :n] == 1).all(axis=1)
        grid[tuple(rows[single, :n].T)] = True  # one unit each: set them all in one go
        for row in rows[~single].tolist():
            grid[tuple(slice(a, b) for a, b in zip(row[:n], row[n:], strict=True))] = True
        self.counts[level] = int(np.count_nonzero(grid))

    def covers(self, level: int, box: Box) -> bool:
        """True when every unit of ``box`` is known stored."""
        return bool(self.grids[level][box_slices(box)].all())

    def complete(self, level: int) -> bool:
        """True when every unit of the level is known stored."""
        return self.counts[level] == self.grids[level].size

    def fill(self) -> None:
        """Mark everything stored (the image is final)."""
        for level, grid in enumerate(self.grids):
            grid[...] = True
            self.counts[level] = grid.size


@dataclasses.dataclass
class Segment:
    """One batch of records of one writer, as stored in the log.

    Attributes
    ----------
    name
        ``<writer>-<seq>``; the object is ``log/<name>.json``.
    records
        Per level, one row per record: the box's start then stop (grid indices).
    stats
        Per channel, the summed statistics of the segment's level-0 records (None if it
        has none).
    replaces
        Segments whose records this one holds (they are garbage once it exists).
    tier
        How many merges made it (in the writer's memory only).
    image
        The id of the image's declaration it was written for (None before ids existed):
        readers skip segments of another declaration, whatever their timing.
    """

    name: str
    records: dict[int, np.ndarray]
    stats: list[Summary] | None
    replaces: tuple[str, ...] = ()
    tier: int = 0
    image: str | None = None

    @property
    def writer(self) -> str:
        """The writer that made this segment."""
        return self.name.rsplit("-", 1)[0]

    def to_json(self) -> dict[str, Any]:
        """The stored document."""
        doc = {
            "format": SEGMENT_FORMAT,
            "records": {str(level): rows.tolist() for level, rows in self.records.items()},
            "stats": None if self.stats is None else [s.to_json() for s in self.stats],
            "replaces": list(self.replaces),
        }
        return doc if self.image is None else {**doc, "image": self.image}

    @classmethod
    def from_json(cls, name: str, doc: Any, ndim: int) -> Segment:
        """Parse a stored segment; ``ValueError`` when it is not one this version can read."""
        if not isinstance(doc, dict) or doc.get("format") != SEGMENT_FORMAT:
            raise ValueError(f"not a format-{SEGMENT_FORMAT} log segment")
        try:
            records = {}
            for level, rows in doc["records"].items():
                array = np.asarray(rows, dtype=np.int64).reshape(-1, 2 * ndim)
                records[int(level)] = array
            stats = None if doc["stats"] is None else [Summary.from_json(s) for s in doc["stats"]]
            replaces = tuple(str(r) for r in doc["replaces"])
            image = doc.get("image")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed log segment: {exc}") from exc
        return cls(name, records, stats, replaces, image=image if isinstance(image, str) else None)


def _merge(name: str, group: Sequence[Segment], replaces: Iterable[str], tier: int,
           n_channels: int, image: str | None) -> Segment:
    records: dict[int, list[np.ndarray]] = {}
    for seg in group:
        for level, rows in seg.records.items():
            records.setdefault(level, []).append(rows)
    stats = [s.stats for s in group if s.stats is not None]
    return Segment(
        name,
        {level: np.concatenate(parts) for level, parts in records.items()},
        merge_channels(stats, n_channels) if stats else None,
        tuple(replaces),
        tier,
        image,
    )


class Ledger:
    """One writer's (or reader's) view of an image's log.

    Parameters
    ----------
    store
        The output store.
    spec
        The image.
    path
        Where the image is in this store (default: the name it was declared under; an
        image's own directory opened as a store has it at "").
    identity
        The declaration this handle writes to (its id is checked before every commit).
    batch, fanout
        Records per commit at most, and segments merged at once (see the module docstring).
    """

    def __init__(self, store: Store, spec: ImageSpec, path: str | None = None, *,
                 identity: Identity | None = None, batch: int = BATCH, fanout: int = FANOUT) -> None:
        self.store = store
        self.spec = spec
        self.identity = identity or Identity()
        self.keys = ImageKeys(spec.name if path is None else path, spec.zarr_format)
        self.coverage = Coverage(spec)
        self.writer = uuid.uuid4().hex[:16]
        self._batch = batch
        self._fanout = fanout
        self._ndim = len(spec.layout.shape)
        self._lock = threading.Lock()  # coverage and pending records
        self._commit_lock = threading.Lock()  # one commit (and compaction) at a time
        self._pending: dict[int, list[list[int]]] = {}
        #: Sync the store's data to disk before each commit (the context's ``durable``).
        self.durable = True
        self._pending_stats: list[list[Summary]] = []
        self._then: list[Callable[[], None]] = []  # to run once the pending records are committed
        self._n_pending = 0
        self._since: float | None = None
        self._seq = 0
        self._own: list[Segment] = []
        self._undeleted: set[str] = set()
        self._read: dict[str, Segment] = {}  # other writers' segments, by name
        self._listed: set[str] = set()  # other writers' segments in the latest listing
        #: True once a segment read before disappeared with nothing replacing it: the
        #: image was finalized (its log deleted) meanwhile.
        self.vanished = False
        self._sealed = False
        #: Set once the image was found deleted or declared anew under this writer; every
        #: later commit (and every write of its handle) raises it.
        self.replaced: ImageReplacedError | None = None
        self._beat_at: float | None = None  # monotonic time of the last heartbeat; None: not beating
        #: True once the background committer told a failed commit (see commit_due).
        self.warned = False

    # ---- writing -----------------------------------------------------------------------
    def record(self, level: int, box: Box, stats: list[Summary] | None = None,
               then: Callable[[], None] | None = None) -> bool:
        """Add a record of ``box`` (stored) to the next commit; call after the data is stored.

        ``then`` runs once the record is committed (and not before): deleting the fragments
        a unit was completed from must wait until the log says the unit is stored, or a
        writer killed in between would leave a stored but unrecorded unit whose parts are gone.

        Returns False, recording nothing, when every unit of the box is already known
        stored (a retry): its statistics are then not counted twice (``then`` still waits
        for the next commit).
        """
        with self._lock:
            if then is not None:
                self._then.append(then)
            if not self.coverage.add(level, box):
                return False
            self._pending.setdefault(level, []).append([*box[0], *box[1]])
            if stats is not None:
                self._pending_stats.append(stats)
            self._n_pending += 1
            if self._since is None:
                self._since = time.monotonic()
            full = self._n_pending >= self._batch
        if full:
            self.commit()
        return True

    def seal(self) -> None:
        """The image is final: drop pending records and never commit again (its log is gone)."""
        with self._commit_lock, self._lock:
            self._drop()
        self._beat_at = None  # finalizing deletes every heartbeat

    def _drop(self) -> None:
        self._sealed = True
        self._pending, self._pending_stats, self._n_pending, self._since = {}, [], 0, None
        self._then = []

    def due(self, interval: float) -> bool:
        """True when records have waited ``interval`` seconds or more."""
        since = self._since
        return (since is not None and time.monotonic() - since >= interval) or bool(self._then)

    @property
    def pending(self) -> int:
        """Records not committed yet."""
        return self._n_pending

    def _name(self) -> str:
        self._seq += 1
        return f"{self.writer}-{self._seq:06d}"

    def commit(self) -> None:
        """Store the pending records as one segment, then merge own segments as needed.

        Raises
        ------
        StoreError
            The segment could not be stored; its records stay pending for the next commit.
        """
        with self._commit_lock:
            with self._lock:
                if self._sealed:
                    return
                then, self._then = self._then, []
                if not self._n_pending:
                    self._run(then)  # their records were committed already (or by others)
                    return
                pending, stats = self._pending, self._pending_stats
                self._pending, self._pending_stats, self._n_pending, self._since = {}, [], 0, None
            records = {level: np.asarray(rows, dtype=np.int64).reshape(-1, 2 * self._ndim)
                       for level, rows in pending.items()}
            n_channels = self.spec.n_channels
            segment = Segment(self._name(), records, merge_channels(stats, n_channels) if stats else None,
                              image=self.identity.id)
            try:
                self.check_identity()
                if self.durable:  # the data these records claim reaches the disk before they do
                    sync_to_disk(self.store)
                put_json(self.store, self.keys.segment(segment.name), segment.to_json())
            except ImageReplacedError:
                with self._lock:  # its records describe data the image no longer holds
                    self._drop()
                raise
            except StoreError:
                with self._lock:  # keep them for the next commit
                    for level, rows in pending.items():
                        self._pending.setdefault(level, [])[:0] = rows
                    self._pending_stats[:0] = stats
                    self._then[:0] = then
                    self._n_pending += sum(len(r) for r in pending.values())
                    self._since = self._since or time.monotonic()
                raise
            self._own.append(segment)
            self._run(then)
            self._compact()

    # ---- the image it writes to, and heartbeats ----------------------------------------------
    def check_identity(self) -> bool:
        """Raise :class:`ImageReplacedError` if the image's declaration is not this handle's any more.

        Returns True when the image is final (its declaration holds the checkpoint).
        """
        if self.replaced is not None:
            raise self.replaced
        node = node_attributes(self.store, self.keys.group)
        found = Identity.of(node[1]) if node is not None and "spec" in node[1] else None
        if node is not None and found is not None and found.id == self.identity.id:
            return "final" in node[1]
        if found is None:
            what = "deleted"
        else:
            what = (f"declared anew (fingerprint {found.fingerprint!r}; this writer's: "
                    f"{self.identity.fingerprint!r})")
        self.replaced = ImageReplacedError(
            f"image {self.keys.image!r} in {describe(self.store)} was {what} while this writer wrote to "
            "it (mode='w' or overwrite=True elsewhere); what this writer stored since is not part of it. "
            "Open the output again to write the image anew."
        )
        raise self.replaced

    def start_beating(self) -> None:
        """Write this writer's first heartbeat (after checking the image is still the one declared)."""
        if self._beat_at is None and not self._sealed:
            self.check_identity()
            # Its records, fragments and heartbeats go under the bookkeeping group: never
            # through a link to somewhere else.
            refuse_links(self.store, self.keys.group, f"writing image {self.keys.image or '/'!r}")
            self._beat()

    def beat_due(self) -> bool:
        """True when this writer beats and its last heartbeat is ``HEARTBEAT`` seconds old."""
        at = self._beat_at
        return at is not None and not self._sealed and time.monotonic() - at >= HEARTBEAT

    def beat(self) -> None:
        """Check the image is still this handle's, then renew the heartbeat (none once it is final)."""
        if self.check_identity():
            self.stop_beating()
        else:
            self._beat()

    def _beat(self) -> None:
        put_json(self.store, self.keys.heartbeat(self.writer),
                 {"time": time.time(), "host": socket.gethostname(), "pid": os.getpid()})
        self._beat_at = time.monotonic()

    def stop_beating(self) -> None:
        """Delete this writer's heartbeat (it closes, or the image is final)."""
        if self._beat_at is not None:
            self._beat_at = None
            delete_keys(self.store, [self.keys.heartbeat(self.writer)])

    def _run(self, actions: list[Callable[[], None]]) -> None:
        for action in actions:
            try:
                action()
            except StoreError as exc:
                # What is left is scratch data (fragments) that finalizing sweeps.
                warnings.warn(f"ngff-writer: cleaning up after a commit failed ({exc}); finalizing "
                              "removes what is left", RuntimeWarning, stacklevel=3)

    def _compact(self) -> None:
        while True:
            tiers = Counter(s.tier for s in self._own)
            tier = next((t for t in sorted(tiers) if tiers[t] >= self._fanout), None)
            if tier is None:
                return
            group = [s for s in self._own if s.tier == tier][: self._fanout]
            names = [s.name for s in group]
            merged = _merge(self._name(), group, [*names, *sorted(self._undeleted)], tier + 1,
                            self.spec.n_channels, self.identity.id)
            put_json(self.store, self.keys.segment(merged.name), merged.to_json())
            self._own = [s for s in self._own if s.name not in names] + [merged]
            self._undeleted.clear()
            try:
                delete_keys(self.store, [self.keys.segment(n) for n in names])
            except StoreError as exc:
                # Readers skip them (the merged segment names them); the next merge retries.
                self._undeleted.update(names)
                warnings.warn(f"ngff-writer: could not delete merged log segments ({exc})",
                              RuntimeWarning, stacklevel=2)

    # ---- reading -----------------------------------------------------------------------
    def _list(self) -> set[str]:
        # The log folder holds a few segments (each writer merges its own): walking it for
        # links costs as much as the listing below.
        refuse_links(self.store, self.keys.log, f"reading the log of image {self.keys.image or '/'!r}")
        start = len(self.keys.log) + 1
        names = set()
        for key in list_prefix(self.store, self.keys.log + "/"):
            name = key[start:]
            # A store's temporary file of a segment being written ends otherwise.
            if name.endswith(".json") and "/" not in name:
                names.add(name[:-5])
        return names

    def refresh(self) -> None:
        """Read the segments other writers committed since the last refresh.

        Raises
        ------
        CorruptError
            A segment cannot be read (``ngff-writer repair`` drops it).
        """
        mine = f"{self.writer}-"
        for _ in range(4):
            listed = {n for n in self._list() if not n.startswith(mine)}
            new = sorted(listed - self._read.keys())
            raw = get_many(self.store, [self.keys.segment(n) for n in new], documents=True)
            gone = False
            for name in new:
                data = raw[self.keys.segment(name)]
                if data is None:  # merged away (or finalized) since the listing: list again
                    gone = True
                    listed.discard(name)
                    continue
                self._apply(self._parse(name, data))
            self._listed = listed
            replaced = {r for n in listed if n in self._read for r in self._read[n].replaces}
            for name in set(self._read) - listed:
                self.vanished = self.vanished or name not in replaced
                del self._read[name]
            if not gone:
                return

    def _parse(self, name: str, data: bytes) -> Segment:
        key = self.keys.segment(name)
        try:
            return Segment.from_json(name, loads(data), self._ndim)
        except ValueError as exc:  # json's errors are ValueErrors too
            raise CorruptError(f"log segment {key} in {describe(self.store)} is unreadable "
                               f"({len(data)} bytes: {exc}); {repair_hint(self.store)}",
                               key=key) from exc

    def _of_this_image(self, segment: Segment) -> bool:
        # A segment of an earlier declaration of this image (its writer was still running
        # when the image was replaced) says nothing of this one's data.
        return None in (segment.image, self.identity.id) or segment.image == self.identity.id

    def _apply(self, segment: Segment) -> None:
        self._read[segment.name] = segment
        if not self._of_this_image(segment):
            return
        with self._lock:
            for level, rows in segment.records.items():
                self.coverage.add_rows(level, rows)

    def complete(self, level: int = 0) -> bool:
        """True when every unit of ``level`` is known stored (own records and those read)."""
        return self.coverage.complete(level)

    def live(self) -> list[Segment]:
        """Own committed segments and the others' that no segment replaces (after :meth:`refresh`)."""
        others = [self._read[n] for n in sorted(self._listed) if n in self._read]
        segments = [*self._own, *others]
        replaced = {r for s in segments for r in s.replaces}
        return [s for s in segments if s.name not in replaced and self._of_this_image(s)]

    def summaries(self) -> list[Summary]:
        """Per channel, the statistics of every level-0 record in the live segments."""
        stats = [s.stats for s in self.live() if s.stats is not None]
        return merge_channels(stats, self.spec.n_channels)


def live_writers(store: Store, keys: ImageKeys, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The heartbeats of the image's live writers (see the module docstring), oldest first.

    A heartbeat counts when it is younger than ``LIVE_FOR`` seconds, unless it names a
    process of this host that no longer exists (a writer killed a moment ago). Each entry
    holds ``writer``, ``host``, ``pid`` and ``age`` (seconds). Writers in ``exclude``
    (this process's own handles) are left out.
    """
    skip = set(exclude)
    prefix = keys.writers + "/"
    names = [k for k in list_prefix(store, prefix) if k.endswith(".json") and "/" not in k[len(prefix):]]
    # One too large to be a heartbeat is not one (and is never read).
    names = [k for k in names if k[len(prefix):-5] not in skip and not oversized(store, k)]
    found = []
    now, host = time.time(), socket.gethostname()
    for key, raw in get_many(store, names).items():
        if raw is None:
            continue  # gone since the listing
        try:
            beat = loads(raw)
            age, pid = now - float(beat["time"]), int(beat["pid"])
            where = str(beat["host"])
        except (ValueError, TypeError, KeyError):
            continue  # half-written or foreign: not a heartbeat
        if age > LIVE_FOR or (where == host and not process_exists(pid)):
            continue
        found.append({"writer": key[len(prefix):-5], "host": where, "pid": pid, "age": max(age, 0.0)})
    return sorted(found, key=lambda b: -b["age"])


def samples_done(layout: Layout, covered: np.ndarray) -> np.ndarray:
    """Boolean per sample: every write unit of the sample is stored.

    Vectorised over the unit grid (no per-sample loop): write units are one entry long
    along sample axes (and divide ``T`` when ``s`` is merged into ``t``), so a sample is
    done when its units along every other axis are.
    """
    indexed = layout.indexed
    others = tuple(i for i in range(covered.ndim) if i not in indexed)
    reduced = np.asarray(covered.all(axis=others)) if others else covered
    if not indexed:
        return np.array([bool(reduced)])
    if layout.merged:
        if "t" in layout.sample_axes:
            return reduced.reshape(-1)  # sample k is entry k of the merged t
        return np.asarray(reduced.reshape(layout.sample_grid[0], -1).all(axis=1))
    names = [layout.axes[i] for i in indexed]
    return reduced.transpose([names.index(a) for a in layout.sample_axes]).reshape(-1)


def commit_due(ledger: Ledger, interval: float) -> None:
    """Commit ``ledger``'s records if the oldest waited ``interval`` s; renew its heartbeat if due.

    For the background committer: a failure is told once as a warning and the records
    stay pending (the writer's next flush or close raises it); an image replaced under
    this writer makes every later write of it raise :class:`ImageReplacedError`.
    """
    try:
        if ledger.due(interval):
            ledger.commit()
        if ledger.beat_due():
            ledger.beat()
    except ImageReplacedError as exc:
        if ledger.replaced is exc and not getattr(exc, "_told", False):
            exc._told = True  # type: ignore[attr-defined]  # told once, whichever thread sees it
            warnings.warn(f"ngff-writer: {exc}", RuntimeWarning, stacklevel=1)
    except StoreError as exc:
        if not ledger.warned:
            ledger.warned = True
            warnings.warn(f"ngff-writer: committing log records failed ({exc}); retrying",
                          RuntimeWarning, stacklevel=1)
