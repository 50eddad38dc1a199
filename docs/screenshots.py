"""Make the README's screenshots: the demo export in neuroglancer (``ngff-writer view``) and napari.

Usage (from the repository, after ``bash dev.sh demo``)::

    .venv/bin/pip install -e '.[test]' pyqt6        # napari needs a Qt binding
    xvfb-run -a .venv/bin/python docs/screenshots.py [demo-output]   # Debian's xvfb, Mesa GL

Writes ``docs/view-neuroglancer.png`` (headless Debian Chromium driven by playwright,
``/usr/bin/chromium``) and ``docs/view-napari.png`` (napari with Qt offscreen, the
napari-ome-zarr reader), both of ``embryo_3d``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGE = "embryo_3d"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader"]


def neuroglancer_shot(out: Path, target: Path) -> None:
    from playwright.sync_api import sync_playwright

    script = Path(sys.executable).with_name("ngff-writer")
    proc = subprocess.Popen([str(script), "view", str(out), "--image", IMAGE, "--no-browser"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split(" ", 1)[1].strip()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(url)
            page.wait_for_timeout(8000)
            page.screenshot(path=str(target))
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def napari_shot(out: Path, target: Path) -> None:
    # Qt offscreen has no OpenGL context for vispy: run this script under xvfb-run instead.
    import napari

    viewer = napari.Viewer(show=False)
    try:
        viewer.open(str(out / IMAGE), plugin="napari-ome-zarr")
        viewer.dims.set_point(viewer.dims.ndim - 3, viewer.dims.range[-3].stop / 2)  # middle z
        viewer.reset_view()
        viewer.window.resize(900, 600)
        viewer.screenshot(path=str(target), canvas_only=False, flash=False)
    finally:
        viewer.close()


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-output").resolve()
    if not (out / IMAGE).exists():
        subprocess.run([str(Path(sys.executable).with_name("ngff-writer")), "demo", str(out),
                        "--quiet", "--overwrite"], check=True)
    neuroglancer_shot(out, HERE / "view-neuroglancer.png")
    napari_shot(out, HERE / "view-napari.png")
    print(f"wrote {HERE / 'view-neuroglancer.png'} and {HERE / 'view-napari.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
