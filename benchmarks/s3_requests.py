"""S3 requests per image, by kind: the current ngff_writer against an earlier commit.

Writes one small image (S samples of 64x64 float32, axes ``syx``, chunks 1x64x64,
``pyramid=None``) with one writer into moto's S3 server on 127.0.0.1, then reads its
status from a fresh read-only handle, and counts the HTTP requests the server receives in
each phase, by kind (GET, PUT, LIST, HEAD, DELETE, POST; ``LocalS3.requests()``):

``open``    ``open_output(url, mode="w")`` + ``create_image(...)``
``write``   S ``write_sample`` calls + ``close()`` (the image finalizes on its last sample)
``status``  in a new process: ``open_output(url, mode="r")[name].progress()``

Each version runs in its own subprocess with ``PYTHONPATH`` pointing at it: the
``ngff_writer`` this script imports (the current one) and a ``git archive`` of
``--old`` (6d09e27 by default: the last commit before the batched log, which kept one zarr
group per record). The server is started here, so the old version needs no ``testing``
module; the phases are separated by the child waiting on its stdin. After the status
read the bucket is listed (not counted): objects left, and how many are bookkeeping
(under ``<image>/ngff_writer/``). moto records request bodies, so keep S small.

Usage::

    python benchmarks/s3_requests.py                          # S=64, fsspec URL, current vs 6d09e27
    python benchmarks/s3_requests.py --via fsspec,obstore --samples 256 --json req.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KINDS = ("GET", "PUT", "LIST", "HEAD", "DELETE", "POST")
PHASES = ("open", "write", "status")
NAME = "img"
SIDE = 64
REGION = "us-east-1"


# ---- child: one version, one phase at a time ------------------------------------------------
def _root(via: str, bucket: str, endpoint: str) -> tuple[Any, dict | None]:
    """What to pass to open_output: an fsspec URL and its options, or a zarr ObjectStore."""
    if via == "fsspec":
        options = {"key": "testing", "secret": "testing",
                   "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION}}
        return f"s3://{bucket}/out.zarr", options
    from obstore.store import S3Store
    from zarr.storage import ObjectStore

    store = S3Store(bucket, prefix="out.zarr", endpoint=endpoint, access_key_id="testing",
                    secret_access_key="testing", region=REGION, client_options={"allow_http": True})
    return ObjectStore(store), None


def _step(message: str) -> None:
    """Tell the parent a phase is over and wait until it has read the counts."""
    print(message, flush=True)
    sys.stdin.readline()


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from _common import library_fingerprint
    from _samples import SampleSource

    import ngff_writer as nw

    root, options = _root(args.via, args.bucket, args.endpoint)
    if args.child == "write":
        source = SampleSource((1, 1, SIDE, SIDE), seed=0)
        out = nw.open_output(root, mode="w", storage_options=options)
        img = out.create_image(NAME, shape=(args.samples, SIDE, SIDE), axes="syx", dtype="float32",
                               chunks=(1, SIDE, SIDE), pyramid=None)
        _step("open done")
        for i in range(args.samples):
            img.write_sample(i, source.sample(i)[0, 0])
        out.close()
        print(json.dumps(library_fingerprint()), flush=True)
    else:
        out = nw.open_output(root, mode="r", storage_options=options)
        p = out[NAME].progress()
        out.close()
        print(json.dumps({"done": p.done, "total": p.total, "complete": p.complete}), flush=True)


# ---- parent ------------------------------------------------------------------------------------
def _spawn(version: str, phase: str, via: str, bucket: str, endpoint: str, samples: int) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", phase, "--via", via,
           "--bucket", bucket, "--endpoint", endpoint, "--samples", str(samples)]
    env = {**os.environ, "PYTHONPATH": version}
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"child failed with code {proc.returncode}")
    return line.strip()


def run_version(s3: Any, label: str, version: str, via: str, samples: int) -> dict[str, Any]:
    """Count the requests of each phase for one version; list what the image left."""
    import s3fs

    bucket = s3.bucket()
    counts: dict[str, dict[str, int]] = {}
    proc = _spawn(version, "write", via, bucket, s3.endpoint, samples)
    with s3.requests() as c:
        _line(proc)  # "open done"
    counts["open"] = dict(c)
    with s3.requests() as c:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        lib = json.loads(_line(proc))
        if proc.wait() != 0:
            raise RuntimeError(f"{label}: writer failed with code {proc.returncode}")
    counts["write"] = dict(c)
    with s3.requests() as c:
        proc = _spawn(version, "status", via, bucket, s3.endpoint, samples)
        status = json.loads(_line(proc))
        if proc.wait() != 0:
            raise RuntimeError(f"{label}: status failed with code {proc.returncode}")
    counts["status"] = dict(c)
    keys = s3fs.S3FileSystem(**s3.storage_options).find(f"{bucket}/out.zarr")
    bookkeeping = [k for k in keys if f"/{NAME}/ngff_writer/" in k]
    return {"version": label, "via": via, "samples": samples, "counts": counts, "status": status,
            "objects": len(keys), "bookkeeping_objects": len(bookkeeping),
            "bookkeeping_keys": bookkeeping[:20], **lib}


def print_table(rows: list[dict]) -> None:
    s = rows[0]["samples"]
    print(f"\nRequests to moto's S3 server, by kind: one image of {s} samples of {SIDE}x{SIDE} float32, "
          f"chunks 1x{SIDE}x{SIDE}, pyramid=None, one writer")
    print("open = open_output(w) + create_image; write = write_sample x S + close; "
          "status = open_output(r)[name].progress() in a new process")
    head = (f"{'version':<22}{'via':<8}{'phase':<8}" + "".join(f"{k:>7}" for k in KINDS)
            + f"{'total':>7}{'per sample':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        for phase in (*PHASES, "writes"):
            if phase == "writes":  # open + write: everything the writer sent
                c = {k: r["counts"]["open"].get(k, 0) + r["counts"]["write"].get(k, 0) for k in KINDS}
            else:
                c = r["counts"][phase]
            total = sum(c.get(k, 0) for k in KINDS)
            per = f"{total / s:.2f}" if phase in ("write", "writes") else ""
            print(f"{r['version']:<22}{r['via']:<8}{phase:<8}" + "".join(f"{c.get(k, 0):>7}" for k in KINDS)
                  + f"{total:>7}{per:>11}")
        ok = r["status"]["complete"] and r["status"]["done"] == s
        print(f"{'':<22}{'':<8}objects left {r['objects']} (bookkeeping {r['bookkeeping_objects']}); "
              f"status {r['status']['done']}/{r['status']['total']} complete={r['status']['complete']}"
              f"{'' if ok else '  WARNING: not complete'}")
        print("-" * len(head))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=64, help="samples of the image (64)")
    p.add_argument("--old", default="6d09e27", help="the earlier commit to compare with (6d09e27)")
    p.add_argument("--current", default=None,
                   help="directory holding the current ngff_writer package (default: the one imported here)")
    p.add_argument("--via", default="fsspec", help="fsspec and/or obstore, comma-separated (fsspec)")
    p.add_argument("--json", default=None, help="save the counts here")
    p.add_argument("--child", choices=("write", "status"), help=argparse.SUPPRESS)
    p.add_argument("--bucket", help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import ngff_writer
    from ngff_writer.testing import LocalS3

    current = args.current or str(Path(ngff_writer.__file__).resolve().parent.parent)
    vias = [v.strip() for v in args.via.split(",") if v.strip()]
    if set(vias) - {"fsspec", "obstore"}:
        p.error("--via takes fsspec and/or obstore")
    tmp = Path(tempfile.mkdtemp(prefix="ngff-old-"))
    rows = []
    try:
        repo = HERE.parent
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", args.old], check=True,
                             capture_output=True, text=True).stdout.strip()
        archive = subprocess.run(["git", "-C", str(repo), "archive", args.old, "ngff_writer"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        versions = [(f"{sha} (before)", str(tmp)), ("current", current)]
        with LocalS3() as s3:
            for via in vias:
                for label, path in versions:
                    r = run_version(s3, label, path, via, args.samples)
                    rows.append(r)
                    print(f"  {label:<20} {via:<8} done ({r['lib_path']}, sources {r['lib_hash']})",
                          flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
