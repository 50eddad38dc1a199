"""`ngff-writer view`: the output served on 127.0.0.1 and drawn by neuroglancer in Chromium.

The page is loaded in headless Chromium (Debian's package, which `.ci/run` installs) and a
screenshot tells whether the image is drawn: the middle of the view must hold the image's
texture, not a flat colour. An image declared but never written is the control: the same
check must find it flat.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ngff_writer as nw

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = str(Path(sys.executable).with_name("ngff-writer"))
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
# The flags a closed network and a root user need (see the machine's notes).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader"]


def screenshot(url: str, wait_s: float = 8.0) -> np.ndarray:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 700})
            page.goto(url)
            page.wait_for_timeout(wait_s * 1000)
            png = page.screenshot()
        finally:
            browser.close()
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def drawn_levels(shot: np.ndarray) -> int:
    """Distinct grey levels in the middle of the view, where the image is centred."""
    h, w = shot.shape
    middle = shot[h // 2 - 60: h // 2 + 60, w // 2 - 60: w // 2 + 60]
    return len(np.unique(middle))


@pytest.fixture
def served(tmp_path):
    """``ngff-writer view`` running on an output; yields a function of the image to show."""
    root = tmp_path / "o.zarr"
    rng = np.random.default_rng(0)
    with nw.open_output(root) as out:
        img = out.create_image("cells", (2, 256, 256), "syx", chunks=(1, 128, 128),
                               scale={"y": 0.5, "x": 0.5}, units="micrometer")
        # The layout the default gives large images: a shard per sample (here of 4 chunks).
        sharded = out.create_image("sharded", (2, 256, 256), "syx", chunks=(1, 128, 128),
                                   shards=(1, 256, 256))
        for i in range(2):
            data = rng.random((256, 256), dtype=np.float32)
            img.write_sample(i, data)
            sharded.write_sample(i, data)
        out.create_image("empty", (2, 256, 256), "syx", chunks=(1, 128, 128))
    procs = []

    def start(image: str) -> str:
        # stderr to a file: a pipe nobody reads until the end would block the server's
        # logging once full, and the command with it (a flaky teardown, once).
        log = open(tmp_path / f"view-{len(procs)}.log", "w+")  # closed below
        proc = subprocess.Popen([SCRIPT, "view", str(root), "--image", image, "--no-browser"],
                                stdout=subprocess.PIPE, stderr=log, text=True)
        procs.append((proc, log))
        line = proc.stdout.readline()
        assert line.startswith("neuroglancer: http://127.0.0.1:"), (line, _said(log))
        return line.split(" ", 1)[1].strip()

    yield start
    for proc, log in procs:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, _said(log)
        log.close()


def _said(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-3000:]


def test_view_draws_the_image_in_a_browser(served):
    shot = screenshot(served("cells"))
    assert drawn_levels(shot) > 100  # random data through a contrast window: many greys
    assert drawn_levels(screenshot(served("sharded"))) > 100  # neuroglancer reads the shards
    control = screenshot(served("empty"))
    assert drawn_levels(control) < 10  # nothing stored: a flat square


def test_view_refuses_what_it_cannot_show(tmp_path):
    missing = subprocess.run([SCRIPT, "view", str(tmp_path / "nothing"), "--no-browser"],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "no such path" in missing.stderr
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("a", (1, 8, 8), "syx")
    unknown = subprocess.run([SCRIPT, "view", str(root), "--image", "b", "--no-browser"],
                             capture_output=True, text=True, check=False)
    assert unknown.returncode == 2 and "no image 'b'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
