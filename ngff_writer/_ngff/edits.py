"""Edits of a final image's display metadata: channel names, colors, windows, title.

What an image is declared with (and what its statistics give) makes its metadata; an
edit is laid over that each time the metadata is written. Edits live in the image's
checkpoint beside its statistics (see :mod:`ngff_writer._write.finalize`), so a later
``finalize`` or ``repair``, which write the metadata again, keep them. The declaration
itself is not changed: a re-run of the job that made the image still matches it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from .._declare.spec import ImageSpec, parse_channel_colors, parse_channel_names, parse_title
from ..errors import SpecError

__all__ = ["Edits", "apply_edits", "parse_edits"]

Window = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Edits:
    """What replaces the declared display metadata; None: nothing edited there.

    ``windows`` holds one ``(start, end)`` or None (kept) per channel.
    """

    channel_names: tuple[str, ...] | None = None
    channel_colors: tuple[str, ...] | None = None
    windows: tuple[Window | None, ...] | None = None
    title: str | None = None

    def merged(self, newer: Edits) -> Edits:
        """These edits with ``newer`` laid over them (a window of None keeps the older one)."""
        windows = self.windows
        if newer.windows is not None:
            older = self.windows or (None,) * len(newer.windows)
            windows = tuple(n if n is not None else o for n, o in zip(newer.windows, older, strict=True))
        return Edits(newer.channel_names or self.channel_names, newer.channel_colors or self.channel_colors,
                     windows, newer.title or self.title)

    def to_json(self) -> dict[str, Any]:
        """The edits as JSON (only what was edited)."""
        out: dict[str, Any] = {}
        if self.channel_names is not None:
            out["channel_names"] = list(self.channel_names)
        if self.channel_colors is not None:
            out["channel_colors"] = list(self.channel_colors)
        if self.windows is not None:
            out["windows"] = [None if w is None else list(w) for w in self.windows]
        if self.title is not None:
            out["title"] = self.title
        return out

    @classmethod
    def from_json(cls, data: Any) -> Edits:
        """Edits read back from :meth:`to_json` (none for None or an empty object)."""
        if not data:
            return cls()
        windows = data.get("windows")
        return cls(
            tuple(data["channel_names"]) if data.get("channel_names") is not None else None,
            tuple(data["channel_colors"]) if data.get("channel_colors") is not None else None,
            None if windows is None else tuple(None if w is None else (float(w[0]), float(w[1]))
                                               for w in windows),
            data.get("title"),
        )


def _windows(windows: Any, n: int) -> tuple[Window | None, ...]:
    if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence) or len(windows) != n:
        raise SpecError(f"windows: expected {n} (start, end) pairs (or None to keep one), got {windows!r}")
    out: list[Window | None] = []
    for w in windows:
        if w is None:
            out.append(None)
            continue
        try:
            start, end = (float(v) for v in w)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"windows: {w!r} is not a (start, end) pair of numbers") from exc
        if not (math.isfinite(start) and math.isfinite(end) and start < end):
            raise SpecError(f"windows: a window needs finite start < end, got {(start, end)}")
        out.append((start, end))
    return tuple(out)


def parse_edits(spec: ImageSpec, *, names: Any = None, colors: Any = None, windows: Any = None,
                title: Any = None) -> Edits:
    """Check edits against the image (one per channel); raise :class:`SpecError` before any write."""
    channelled = names is not None or colors is not None or windows is not None
    if channelled and spec.label is not None:
        raise SpecError(f"{spec.name!r} is a label image: it has no channels to name, color or window "
                        "(its colors are per label value, declared with create_labels)")
    n = spec.n_channels
    return Edits(
        None if names is None else parse_channel_names(names, spec.axes, spec.shape, spec.name),
        None if colors is None else parse_channel_colors(colors, spec.axes, spec.shape),
        None if windows is None else _windows(windows, n),
        parse_title(title),
    )


def apply_edits(ome: dict[str, Any], edits: Edits) -> None:
    """Lay ``edits`` over an image's OME metadata (``multiscales`` and ``omero``), in place."""
    if edits.title is not None:
        ome["multiscales"][0]["name"] = edits.title
    channels = ome.get("omero", {}).get("channels")
    if not channels:
        return
    for k, channel in enumerate(channels):
        if edits.channel_names is not None:
            channel["label"] = edits.channel_names[k]
        if edits.channel_colors is not None:
            channel["color"] = edits.channel_colors[k]
        window = edits.windows[k] if edits.windows is not None else None
        if window is not None:
            old = channel["window"]
            # The data range stays what the statistics found, widened to hold the display range.
            channel["window"] = {"min": min(old["min"], window[0]), "max": max(old["max"], window[1]),
                                 "start": window[0], "end": window[1]}
