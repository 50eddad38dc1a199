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
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from layouts import large_default

import ngff_writer as nw

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = str(Path(sys.executable).with_name("ngff-writer"))
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
# The flags a closed network and a root user need (see the machine's notes).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader"]


def screenshot(url: str, wait_s: float = 8.0, fetched: dict | None = None,
               until: Callable[[dict], bool] | None = None) -> np.ndarray:
    """The page drawn after ``wait_s``; ``fetched`` gets what the page read: (url, range) -> bytes.

    With ``until``, the wait goes on (60 s at most) until ``until(fetched)`` holds: a busy
    machine slows the client down, and a check of what it read must not race it.
    """
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 700})
            if fetched is not None:
                def record(route):  # passes each read of chunk data on, keeping what was answered
                    answer = route.fetch()
                    if answer.ok and route.request.method == "GET":  # not the HEADs asking sizes
                        fetched[(route.request.url, route.request.headers.get("range"))] = answer.body()
                    route.fulfill(response=answer)

                page.route("**/c/**", record)  # zarr v3's chunk keys, not the client's own files
            page.goto(url)
            page.wait_for_timeout(wait_s * 1000)
            deadline = time.monotonic() + 60
            while until is not None and not until(fetched or {}) and time.monotonic() < deadline:
                page.wait_for_timeout(500)
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
        # The layout the default gives large images (a shard per sample, lower levels
        # gathering samples), on an image small enough for a browser test.
        with large_default():
            sharded = out.create_image("sharded", (2, 512, 512), "syx", chunks=(1, 128, 128))
        for i in range(2):
            data = rng.random((256, 256), dtype=np.float32)
            img.write_sample(i, data)
            sharded.write_sample(i, np.tile(data, (2, 2)))
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
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # the command prints its threads' stacks
            time.sleep(2)
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, _said(log)
        log.close()


def _said(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-3000:]


def test_view_draws_the_image_in_a_browser(served):
    shot = screenshot(served("cells"))
    assert drawn_levels(shot) > 100  # random data through a contrast window: many greys
    control = screenshot(served("empty"))
    assert drawn_levels(control) < 10  # nothing stored: a flat square


def test_neuroglancer_reads_the_sharded_default_at_every_level(served, tmp_path):
    """neuroglancer draws the sharded default, from the very bytes stored, at every level.

    The browser's reads are recorded: for each level, the shard's index and inner chunks
    in ranged requests. Each answer must be the stored file's bytes at that range and, for
    the data, exactly one inner chunk the shard's index lists. Together with the drawn
    screenshot (the client decoded them) and zarr-python reading the same files equal to
    what was written, neuroglancer is shown the written data at every level.
    """
    import zarr

    image = tmp_path / "o.zarr" / "sharded"
    levels = zarr.open_group(image, mode="r")
    assert len(list(levels.array_keys())) == 3
    assert all(levels[k].shards is not None for k in levels.array_keys())  # the default sharded them
    def every_level(fetched: dict) -> bool:  # each level's index and a chunk: two ranged reads
        ranged = Counter(url.split("/sharded/", 1)[1][0] for url, span in fetched if span)
        return all(ranged[level] >= 2 for level in "012")

    fetched: dict = {}
    assert drawn_levels(screenshot(served("sharded"), fetched=fetched, until=every_level)) > 100

    seen_levels = set()
    for (url, span), body in fetched.items():
        key = url.split("/sharded/", 1)[1]
        level = key.split("/", 1)[0]
        stored = (image / key).read_bytes()
        if span is None:
            assert body == stored
            continue
        first, last = (int(v) for v in span.removeprefix("bytes=").split("-"))
        assert body == stored[first:last + 1], (key, span)
        array = levels[level]
        inner = int(np.prod([s // c for s, c in zip(array.shards, array.chunks)]))
        index_bytes = inner * 16 + 4  # (offset, length) per inner chunk, and a CRC32C
        entries = np.frombuffer(stored[-index_bytes:-4], "<u8").reshape(inner, 2)
        if first == len(stored) - index_bytes:
            continue  # the index itself
        assert [first, last - first + 1] in entries.tolist(), (key, span)
        seen_levels.add(level)
    assert seen_levels == {"0", "1", "2"}  # it read chunk data of every level through the shards

    rng = np.random.default_rng(0)  # the fixture's draws, in its order
    written = np.stack([np.tile(rng.random((256, 256), dtype=np.float32), (2, 2)) for _ in range(2)])
    np.testing.assert_array_equal(levels["0"][:], written)
    for k in ("1", "2"):  # each level the 2x2 mean of the one above
        above = levels[str(int(k) - 1)][:]
        s, y, x = above.shape
        np.testing.assert_allclose(levels[k][:], above.reshape(s, y // 2, 2, x // 2, 2).mean((2, 4)),
                                   rtol=1e-6)


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
