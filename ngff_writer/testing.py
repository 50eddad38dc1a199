"""Test helpers: a real S3 endpoint on 127.0.0.1, and a writer that dies without a trace.

:func:`abandon` leaves an output as a killed process leaves it (the stores that landed
stay, nothing is closed, not even at exit), for testing how a job resumes after a crash
without killing a process.

:class:`LocalS3` starts moto's S3 server in a child process on a free local port and
hands out buckets, fsspec URLs with their ``storage_options``, and obstore-backed zarr
stores for them. ngff-writer's own tests and benchmarks use it; so can yours::

    with LocalS3() as s3:
        url, options = s3.url("exports"), s3.storage_options
        with ngff_writer.open_output(url, storage_options=options) as out:
            ...

Needs the test extra (``pip install 'ngff-writer[test]'``: moto's server, s3fs, obstore).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

__all__ = ["LocalS3", "abandon"]

_CREDENTIALS = {"key": "testing", "secret": "testing"}
_REGION = "us-east-1"


def abandon(output: Any, commit: bool = True) -> None:
    """Drop ``output`` as a killed process would, in this process.

    Waits for the stores in flight (a killed process's may or may not have landed; here
    they have), commits the log records if ``commit`` (a writer killed right after its
    committer ran) and stops its committer and heartbeats. The output is then never
    closed: not when it is dropped, nor at exit. Its writers' heartbeats stay, as a killed
    process's do, and name this live process: replacing the output needs ``force=True``.
    """
    for image in output._images.opened():
        image.progress()  # its stores in flight land
    if commit:
        for pipeline in output._closer.pipelines:
            pipeline.ledger.commit()
    output._abandon()


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entries(text: str) -> Iterator[dict[str, Any]]:
    # The recording is JSON objects one after another, not always one per line.
    decoder, position = json.JSONDecoder(), 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return
        entry, position = decoder.raw_decode(text, position)
        yield entry


class LocalS3:
    """moto's S3 server on 127.0.0.1, in a child process; a context manager.

    Parameters
    ----------
    port
        Port to listen on; a free one by default.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        #: The server's working directory, a temporary one (moto writes its request
        #: recording, ``moto_recording``, in there), removed by :meth:`stop`.
        self.workdir: str | None = None

    def __enter__(self) -> LocalS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it answers."""
        try:
            import moto.server  # noqa: F401 - only checks that the server is installed
        except ImportError as exc:
            raise ImportError("LocalS3 needs moto's server: pip install 'ngff-writer[test]'") from exc
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        # moto writes files into its working directory (the request recording): a temporary
        # one, not the caller's.
        self.workdir = tempfile.mkdtemp(prefix="ngff-writer-moto-")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto's S3 server did not start on {self.endpoint}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (its buckets are gone with it) and remove its working directory."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _api(self, verb: str) -> bytes:
        method = "GET" if verb == "download" else "POST"
        request = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{verb}-recording",
                                         method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body: bytes = response.read()
        return body

    @contextlib.contextmanager
    def requests(self) -> Iterator[Counter[str]]:
        """Count the HTTP requests the server receives inside the block, by kind.

        Kinds: ``GET``, ``PUT``, ``DELETE``, ``HEAD``, ``LIST`` (a bucket listing) and
        ``POST`` (batch deletes, multipart uploads). moto records request bodies too, so
        keep the block to small amounts of data.
        """
        counts: Counter[str] = Counter()
        self._api("reset")
        self._api("start")
        try:
            yield counts
        finally:
            self._api("stop")
            for entry in _entries(self._api("download").decode()):
                if "/moto-api/" in entry["url"]:
                    continue
                query = urllib.parse.urlsplit(entry["url"]).query
                listing = entry["method"] == "GET" and ("list-type" in query or "prefix=" in query)
                counts["LIST" if listing else entry["method"]] += 1
            self._api("reset")

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options that reach this endpoint (a URL opens on obstore when it is
        installed, see :mod:`ngff_writer._storage.s3`)."""
        return {**_CREDENTIALS,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": _REGION}}

    @property
    def fsspec_options(self) -> dict[str, Any]:
        """:attr:`storage_options` plus an s3fs-only setting, so that a URL opens on s3fs."""
        return {**self.storage_options, "config_kwargs": {"max_pool_connections": 10}}

    def bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        import s3fs

        name = name or f"b-{uuid.uuid4().hex[:12]}"
        fs = s3fs.S3FileSystem(**self.storage_options)
        fs.call_s3("create_bucket", Bucket=name)  # fs.mkdir sends a region moto refuses
        return name

    def url(self, path: str, bucket: str | None = None) -> str:
        """``s3://<bucket>/<path>`` in a new bucket (or the given one)."""
        return f"s3://{bucket or self.bucket()}/{path}"

    def obstore(self, path: str, bucket: str | None = None) -> Any:
        """A zarr ``ObjectStore`` over obstore's S3 client, rooted at ``path`` in a bucket."""
        from obstore.store import S3Store
        from zarr.storage import ObjectStore

        store = S3Store(bucket or self.bucket(), prefix=path, endpoint=self.endpoint,
                        access_key_id="testing", secret_access_key="testing", region=_REGION,
                        client_options={"allow_http": True})
        return ObjectStore(store)
