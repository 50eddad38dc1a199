"""How fast can two cores encode the benchmark's predictions? The ceiling of any writer.

Encodes the chunks of one 1x32x512x512 float32 sample (chunks 16x256x256, Blosc zstd-3
with byte shuffle, as ``bench_samples.py`` writes them) with numcodecs directly, on one
thread and on two threads at once, and reports MB/s of raw data; then a copy and a
fill-value scan (what zarr does per chunk besides encoding) for scale. Nothing is stored:
a writer that stores too can at best reach the two-thread figure on a 2-core machine.

Then the other ceiling, what storing takes (``--disk-mb``, 0 to skip): encoded bytes
written with ``pwrite`` in 4 MiB pieces into 32 MiB files, as a shard per sample is, after
a ``sync`` and a pause, twice: left in the page cache as any buffered writer leaves them,
and handed back as ngff-writer does (each file given to the library's own
``WrittenFiles`` when finished: write-back started, its pages dropped 64 MiB later). The
first 256 MB and the rest are timed apart: on a VM whose host takes freed memory back, the
page cache's appetite for memory nobody touched lately, not the disk, sets the rest's rate.

    python benchmarks/encode_ceiling.py [--repeats 5] [--disk-mb 1400] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numcodecs
import numpy as np
from _samples import SampleSource
from numcodecs import blosc

from ngff_writer._storage.pagecache import WrittenFiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--disk-mb", type=int, default=1400, help="MB written per disk repeat (0: skip)")
    parser.add_argument("--dir", default=None, help="where the disk test writes (default: a temporary dir)")
    args = parser.parse_args()
    blosc.use_threads = False  # as in a writer's worker threads: one thread per call
    codec = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)
    source = SampleSource()
    samples = [source.sample(i)[0].copy() for i in range(4)]
    chunks = [np.ascontiguousarray(s[z:z + 16, y:y + 256, x:x + 256]) for s in samples
              for z in (0, 16) for y in (0, 256) for x in (0, 256)]
    nbytes = sum(c.nbytes for c in chunks)

    def rate(run) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        return nbytes / statistics.median(times) / 1e6

    one = rate(lambda: [codec.encode(c) for c in chunks])
    with ThreadPoolExecutor(2) as pool:
        two = rate(lambda: list(pool.map(codec.encode, chunks)))
    copy = rate(lambda: [c.copy() for c in chunks])
    scan = rate(lambda: [bool(np.all(c == 0)) for c in chunks])
    ratio = nbytes / sum(len(codec.encode(c)) for c in chunks)
    print(f"{nbytes / 1e6:.0f} MB of predictions, Blosc zstd-3 shuffle, ratio {ratio:.3f}; "
          f"medians of {args.repeats}")
    print(f"encode, 1 thread : {one:7.0f} MB/s")
    print(f"encode, 2 threads: {two:7.0f} MB/s  ({two / one:.2f}x one thread)")
    print(f"copy             : {copy:7.0f} MB/s")
    print(f"fill-value scan  : {scan:7.0f} MB/s")
    if args.disk_mb:
        payload = b"".join(codec.encode(c) for c in chunks)[: 4 << 20]
        for release, name in ((False, "left cached"), (True, "handed back")):
            runs = [disk_rate(payload, args.disk_mb, args.dir, release) for _ in range(min(args.repeats, 3))]
            first = statistics.median(r[0] for r in runs)
            rest = statistics.median(r[1] for r in runs)
            print(f"store, {name}, first 256 MB: {first:7.0f} MB/s")
            each = ", ".join(f"{r[1]:.0f}" for r in runs)
            print(f"store, {name}, the rest    : {rest:7.0f} MB/s  (per repeat: {each}; "
                  f"{args.disk_mb} MB each, medians of {len(runs)})")


def disk_rate(payload: bytes, total_mb: int, where: str | None, release: bool) -> tuple[float, float]:
    """MB/s of pwrites of ``payload`` into 32 MiB files: over the first 256 MB, and after.

    ``release``: each finished file goes to a ``WrittenFiles`` (else it is closed, cached).
    """
    written = WrittenFiles(release=True)
    os.sync()
    time.sleep(3)  # what earlier writes left dirty is on disk: each repeat starts alike
    root = Path(tempfile.mkdtemp(prefix="disk-ceiling-", dir=where))
    piece = len(payload)

    def finish(fd: int) -> None:
        if release:
            written.hand_over(fd, per_file * piece)
        else:
            os.close(fd)

    per_file = (32 << 20) // piece
    pieces = max(2, (total_mb << 20) // piece)
    split = max(1, (256 << 20) // piece)
    try:
        start = time.perf_counter()
        at_split = start
        fd = -1
        for i in range(pieces):
            if i % per_file == 0:
                if fd >= 0:
                    finish(fd)
                fd = os.open(root / f"shard-{i // per_file}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.pwrite(fd, payload, (i % per_file) * piece)
            if i + 1 == split:
                at_split = time.perf_counter()
        finish(fd)
        end = time.perf_counter()
    finally:
        written.release_all()
        shutil.rmtree(root)
    first_mb = min(split, pieces) * piece / 1e6
    rest_mb = max(pieces - split, 0) * piece / 1e6
    return first_mb / (at_split - start), (rest_mb / (end - at_split)) if rest_mb else float("nan")


if __name__ == "__main__":
    main()
