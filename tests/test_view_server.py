"""What `ngff-writer view` serves, asked of its own servers over HTTP (no browser needed).

`view` serves the files below PATH to the neuroglancer client: read-only, on 127.0.0.1,
under a random token, never a file outside PATH (by `..`, an encoded `..`, an absolute
path, or a symbolic link inside PATH pointing out). The server is the one `view` runs
(:func:`ngff_writer.cli._view.serve`, with the arguments the command gives it), and every
refusal is checked against a canary outside the output whose bytes must never come back.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

import ngff_writer as nw
from ngff_writer.reading import describe_image

pytest.importorskip("neuroglancer")
CANARY = b"canary: a user's file outside the output"
SCRIPT = str(Path(sys.executable).with_name("ngff-writer"))


@pytest.fixture
def files(tmp_path):
    """The running servers of `view` on an output holding links out; yields (base URL, root)."""
    from ngff_writer.cli._view import serve

    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("p", (2, 16, 16), "syx")
        img.write_sample(0, np.ones((16, 16), np.float32))
    outside = tmp_path / "users-folder"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(CANARY)
    os.symlink(outside, root / "p" / "linked-folder")
    os.symlink(outside / "secret.txt", root / "linked-file")
    with nw.open_output(root, mode="r") as out:
        infos = [describe_image(out.store, "p")]
    viewing = serve(root.resolve(), infos)
    try:
        yield viewing, root
    finally:
        viewing.stop()


def ask(url: str, method: str = "GET", path: str | None = None) -> tuple[int, bytes]:
    """One request, its path sent as given (http.client does not normalise it)."""
    parts = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, parts.path if path is None else path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_files_below_the_output_are_served(files):
    viewing, root = files
    status, body = ask(f"{viewing._files.url}/p/zarr.json")
    assert status == 200 and body == (root / "p" / "zarr.json").read_bytes()


@pytest.mark.parametrize("path", [
    "/../users-folder/secret.txt",
    "/%2e%2e/users-folder/secret.txt",
    "/p/%2E%2E/%2E%2E/users-folder/secret.txt",
    "/p/..%2f..%2fusers-folder%2fsecret.txt",
    "/p/linked-folder/secret.txt",
    "/linked-file",
    "/{outside}/secret.txt",
    "/%2F{outside_quoted}%2Fsecret.txt",
])
def test_nothing_outside_the_output_is_served(files, tmp_path, path):
    viewing, _ = files
    outside = str(tmp_path / "users-folder").lstrip("/")
    path = path.format(outside=outside, outside_quoted=urllib.parse.quote(outside, safe=""))
    token = urllib.parse.urlparse(viewing._files.url).path
    status, body = ask(viewing._files.url, path=token + path)
    assert status in (400, 403, 404), (path, status)
    assert CANARY not in body


def test_only_under_the_token(files):
    viewing, _ = files
    parts = urllib.parse.urlparse(viewing._files.url)
    base = f"http://127.0.0.1:{parts.port}"
    for path in ("/p/zarr.json", "/0000000000000000000000000000000000000000/p/zarr.json", "/"):
        status, _ = ask(base, path=path)
        assert status == 404, path
    assert len(parts.path.strip("/")) >= 32  # a random token, not a guessable name


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH"])
def test_read_only(files, method):
    viewing, root = files
    before = (root / "p" / "zarr.json").read_bytes()
    status, _ = ask(f"{viewing._files.url}/p/zarr.json", method=method)
    assert status == 405
    assert (root / "p" / "zarr.json").read_bytes() == before
    status, _ = ask(f"{viewing._files.url}/p/new-file", method=method)
    assert status == 405 and not (root / "p" / "new-file").exists()


def _other_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: only a route is chosen
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_both_servers_listen_on_loopback_only(files):
    viewing, _ = files
    ports = [urllib.parse.urlparse(u).port for u in (viewing._files.url, viewing.url)]
    for url in (viewing._files.url, viewing.url):
        assert urllib.parse.urlparse(url).hostname == "127.0.0.1"
    other = _other_address()
    if other is None:
        pytest.skip("this machine has no address but loopback")
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=3).close()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_stops_the_command_however_it_was_started(tmp_path, stop):
    """A job started with '&' in a script ignores Ctrl-C from birth; `view` stops all the same."""
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("p", (2, 16, 16), "syx").write_sample(0, np.ones((16, 16), np.float32))

    def as_a_background_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([SCRIPT, "view", str(root), "--no-browser"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, preexec_fn=as_a_background_job)
    try:
        assert proc.stdout.readline().startswith("neuroglancer: http://127.0.0.1:")
        proc.send_signal(stop)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tgkill and /proc are Linux's")
def test_ctrl_c_stops_the_command_whichever_thread_the_kernel_gives_it_to(tmp_path):
    """The kernel delivers a process's signal to any thread that does not block it; one
    that reached a server thread left `view` running (seen in CI at a test's teardown)."""
    import ctypes

    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("p", (2, 16, 16), "syx").write_sample(0, np.ones((16, 16), np.float32))
    proc = subprocess.Popen([SCRIPT, "view", str(root), "--no-browser"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().startswith("neuroglancer: http://127.0.0.1:")
        others = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert others  # the servers' threads
        tgkill = 234 if os.uname().machine == "x86_64" else 131  # aarch64
        assert ctypes.CDLL(None, use_errno=True).syscall(tgkill, proc.pid, max(others),
                                                         signal.SIGINT) == 0
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
