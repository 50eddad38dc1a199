"""Showing an output in a web viewer that works offline: neuroglancer on 127.0.0.1.

neuroglancer's Python package bundles its built client and a server for it, and a static
file server with the CORS headers a browser needs to read the arrays, so nothing is
fetched from the internet; it reads OME-Zarr 0.4 and 0.5 multiscales itself. This module
only arranges them: one server for the files below PATH, the viewer with one layer per
image, and a contrast range from each image's omero window.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._ngff.describe import ImageInfo

__all__ = ["Viewing", "serve"]


@dataclass
class Viewing:
    """A running viewer: its URL, and the servers to stop."""

    url: str
    _viewer: Any
    _files: Any

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (the viewer's page stops updating), waiting ``timeout`` seconds at most.

        Stopping a server waits for the browser's open connections (neuroglancer's
        websocket), which a connected page may keep open: Ctrl-C must end the command all
        the same. Both servers run in daemon threads, so whatever is still closing when
        the wait ends does not keep the process alive.
        """
        import neuroglancer

        def stop_both() -> None:
            self._files.stop()
            neuroglancer.stop()

        stopping = threading.Thread(target=stop_both, name="ngff-writer-view-stop", daemon=True)
        stopping.start()
        stopping.join(timeout)


def _shader(info: ImageInfo) -> str | None:
    windows = [c.window for c in info.channels if c.window and {"start", "end"} <= c.window.keys()]
    if not windows:
        return None
    start, end = float(windows[0]["start"]), float(windows[0]["end"])
    return (f"#uicontrol invlerp normalized(range=[{start!r}, {end!r}])\n"
            "void main() { emitGrayscale(normalized()); }\n")


# NGFF's unit names, in neuroglancer's base units (metres, seconds).
_UNITS = {"nanometer": ("m", 1e-9), "micrometer": ("m", 1e-6), "millimeter": ("m", 1e-3),
          "centimeter": ("m", 1e-2), "meter": ("m", 1.0), "angstrom": ("m", 1e-10),
          "millisecond": ("s", 1e-3), "second": ("s", 1.0), "minute": ("s", 60.0),
          "hour": ("s", 3600.0)}


def _coordinate_space(neuroglancer: Any, info: ImageInfo) -> Any:
    """The image's axes as neuroglancer's global dimensions (the channel axis stays local)."""
    scale = info.levels[0].scale or (1.0,) * len(info.axes)
    names, units, scales = [], [], []
    for axis, unit, step in zip(info.axes, info.units, scale):
        if axis == "c":
            continue
        base, factor = _UNITS.get(unit or "", ("", 1.0))
        names.append(axis)
        units.append(base)
        scales.append(step * factor)
    return neuroglancer.CoordinateSpace(names=names, units=units, scales=scales)


def serve(root: Path, images: Sequence[ImageInfo], *, port: int = 0) -> Viewing:
    """Serve the local directory ``root`` and open a neuroglancer viewer of ``images``.

    Parameters
    ----------
    root
        The directory whose files are served (read-only, on 127.0.0.1).
    images
        The images to show, their paths relative to ``root``; the first is visible,
        the others are layers to switch on.
    port
        The viewer's port (0: any free one).
    """
    try:
        import neuroglancer
        from neuroglancer.static_file_server import StaticFileServer
    except ImportError as exc:
        raise ImportError("`ngff-writer view` needs neuroglancer: pip install 'ngff-writer[view]'") from exc
    # zarr reads a chunk that is not stored as the fill value: the client asks for every
    # chunk of a half-written (or empty) image, and tornado would log each 404 as a warning,
    # a flood on the terminal (and, into a pipe nobody reads, a writer blocked on it).
    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    neuroglancer.set_server_bind_address("127.0.0.1", bind_port=port)
    files = StaticFileServer(static_dir=str(root), bind_address="127.0.0.1", daemon=True)
    viewer = neuroglancer.Viewer()
    with viewer.txn() as state:
        for k, info in enumerate(images):
            source = f"zarr://{files.url}/{info.path}" if info.path else f"zarr://{files.url}"
            layer = neuroglancer.ImageLayer(source=source)
            shader = _shader(info)
            if shader:
                layer.shader = shader
            name = info.path or Path(root).name
            state.layers[name] = layer
            state.layers[name].visible = k == 0
        if images:
            # Space axes on screen, whatever their order among s, t, c: neuroglancer would
            # otherwise show the first two dimensions (a plane across samples). Naming
            # them needs the coordinate space up front, before the client reads the data.
            state.dimensions = _coordinate_space(neuroglancer, images[0])
            state.display_dimensions = [a for a in ("x", "y", "z") if a in images[0].axes]
            first = images[0]
            state.position = [n / 2 for a, n in zip(first.axes, first.levels[0].shape) if a != "c"]
        state.layout = "xy"
    return Viewing(url=viewer.get_viewer_url(), _viewer=viewer, _files=files)
