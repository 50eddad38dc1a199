"""Candidate default compressors on prediction-like float32 data, written through ngff-writer.

For each candidate, 16 samples of 1x32x512x512 float32 (smooth structure + mild noise,
``_samples.SampleSource``) are written with ``write_sample`` into a fresh output on local
disk (chunks 1x1x16x256x256). Reported per candidate (medians over interleaved repeats):

- write MB/s: sample bytes / summed wall time of the ``write_sample`` calls and ``close``
- read MB/s: sample bytes / time to read every sample back with zarr (one call per sample)
- ratio: sample bytes / bytes of the stored chunks (metadata and ledger excluded)

MB = 10**6 bytes. This documents why Blosc zstd-3 + shuffle is the default.

Usage::

    python benchmarks/codecs.py [--samples 16] [--repeats 3] [--noise 0.01] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

import ngff_writer as nw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _samples import SampleSource

SAMPLE_SHAPE = (1, 32, 512, 512)
CHUNKS = (1, 1, 16, 256, 256)
MB = 1e6


def candidates() -> list[tuple[str, Any]]:
    """(label, ``compressor=`` argument) of every candidate.

    Blosc instances pass ``typesize=4`` explicitly: an instance without it serialises as
    ``typesize: 1`` (zarr 3.4.2 ``to_dict``), which makes byte-shuffle a no-op once the
    instance goes through ``create_image`` (presets are not affected).
    """
    return [
        ("blosc-zstd-1 shuffle", BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=4)),
        ("blosc-zstd-3 shuffle (default)", "default"),
        ("blosc-zstd-5 shuffle", BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=4)),
        ("blosc-lz4-5 shuffle", "blosc-lz4"),
        ("zstd-3", "zstd"),
        ("gzip-5", "gzip"),
        ("none", None),
    ]


def run(compressor: Any, n: int, source: SampleSource, root: Path) -> dict[str, float]:
    path = Path(tempfile.mkdtemp(dir=root)) / "out.zarr"
    try:
        out = nw.open_output(str(path), mode="w")
        img = out.create_image("pred", shape=(n, *SAMPLE_SHAPE), axes="sczyx",
                               dtype="float32", chunks=CHUNKS, compressor=compressor, pyramid=None)
        write_s = 0.0
        for i in range(n):
            sample = source.sample(i)
            t0 = time.perf_counter()
            img.write_sample(i, sample)
            write_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        out.close()
        write_s += time.perf_counter() - t0

        chunk_dir = path / "pred" / "0" / "c"
        stored = sum(f.stat().st_size for f in chunk_dir.rglob("*") if f.is_file())
        arr = zarr.open_array(str(path / "pred" / "0"), mode="r")
        codec = arr.metadata.codecs[-1].to_dict() if compressor is not None else None
        t0 = time.perf_counter()
        for i in range(n):
            np.asarray(arr[i])
        read_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    nbytes = n * source.nbytes
    return {"write_mb_s": nbytes / MB / write_s, "read_mb_s": nbytes / MB / read_s,
            "ratio": nbytes / stored, "stored_mb": stored / MB, "codec": codec}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--noise", type=float, default=0.01, help="noise std of the samples")
    p.add_argument("--tmpdir", default=None, help="where outputs go (local disk; deleted)")
    p.add_argument("--json", default=None, help="save raw results and the summary here")
    args = p.parse_args(argv)

    source = SampleSource(SAMPLE_SHAPE, noise=args.noise, seed=0)
    cands = candidates()
    raw: dict[str, list[dict[str, float]]] = {label: [] for label, _ in cands}
    root = Path(tempfile.mkdtemp(prefix="ngff-codecs-", dir=args.tmpdir))
    try:
        for rep in range(args.repeats):  # interleaved across candidates
            for label, comp in cands:
                r = run(comp, args.samples, source, root)
                raw[label].append(r)
                print(f"  repeat {rep} {label:<32} write {r['write_mb_s']:7.1f} MB/s  "
                      f"read {r['read_mb_s']:7.1f} MB/s  ratio {r['ratio']:.3f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in raw[label])

    default = "blosc-zstd-3 shuffle (default)"
    summary = [{
        "codec": label,
        "write_mb_s": med(label, "write_mb_s"),
        "read_mb_s": med(label, "read_mb_s"),
        "ratio": med(label, "ratio"),
        "stored_mb": med(label, "stored_mb"),
        "write_vs_default": med(label, "write_mb_s") / med(default, "write_mb_s"),
    } for label, _ in cands]

    gib = args.samples * 4 * np.prod(SAMPLE_SHAPE) / 2**30
    print(f"\n{args.samples} samples of {SAMPLE_SHAPE} float32 ({gib:.2f} GiB), chunks {CHUNKS}, "
          f"noise {args.noise}, medians of {args.repeats} (MB = 1e6 bytes)")
    head = (f"{'codec':<32}{'write MB/s':>11}{'x default':>10}{'read MB/s':>11}"
            f"{'ratio':>8}{'stored MB':>11}")
    print(head)
    print("-" * len(head))
    for s in summary:
        print(f"{s['codec']:<32}{s['write_mb_s']:>11.1f}{s['write_vs_default']:>10.2f}"
              f"{s['read_mb_s']:>11.1f}{s['ratio']:>8.3f}{s['stored_mb']:>11.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "raw": raw, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
