"""Where the CPU goes while a writer streams the 2 GiB benchmark samples: a perf profile.

Runs one writer (``ngff-writer``, ``ngff-direct`` or ``tensorstore``) in a child process
under ``perf record``, skipping its setup (imports, array creation) with ``perf record -D``,
and prints the CPU samples of the timed stream grouped by where they ran: the codec
(c-blosc/zstd, inside ``blosc*.so`` or ``_tensorstore*.so``), the kernel, libc, the Python
interpreter and numpy, then the top symbols. Needs Linux ``perf`` (root, or
``perf_event_paranoid`` <= 1).

Usage::

    python benchmarks/profile_stream.py --engine ngff-writer
    python benchmarks/profile_stream.py --engine tensorstore --chunks 32x128x256 --top 30
    python benchmarks/profile_stream.py --engine tensorstore --levels 3   # as bench_pyramid.py

The sample is generated once and written ``--samples`` times (the stream of
``bench_samples.py``, without regenerating), from warm memory (see ``_common.warm_page_cache``).
"""

from __future__ import annotations

import argparse
import collections
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import CHUNK_CHOICES, CHUNKS, SAMPLE_SHAPE, resident_source, tensorstore_levels, warm_page_cache

_STARTED = time.monotonic()
#: perf starts recording this long after the child starts; the child streams half a second
#: later. A sleeping process costs no CPU samples, so the wait adds nothing to the profile.
DELAY = 5.0
GROUPS = (("codec (blosc/zstd)", ("blosc", "_tensorstore")), ("kernel", ("kernel",)),
          ("libc", ("libc",)), ("Python interpreter", ("libpython",)), ("numpy", ("_multiarray",)))


def child(engine: str, n: int, path: Path, levels: int) -> None:
    """Set up, pause, stream ``n`` samples (and ``levels`` 2x2-mean levels); print the throughput."""
    source = resident_source(0.01)
    sample = source.sample(0)
    shape = (n, *SAMPLE_SHAPE)
    if engine == "tensorstore":
        write_levels = tensorstore_levels(path, n, levels, "default")  # as bench_pyramid.py

        def write(i: int) -> None:
            write_levels(i, sample)

        def finish() -> None:
            pass
    else:
        import ngff_writer as nw

        out = nw.open_output(nw.DirectLocalStore(path) if engine == "ngff-direct" else path, mode="w")
        img = out.create_image("pred", shape=shape, axes="sczyx", dtype="float32", chunks=CHUNKS,
                               pyramid={"levels": levels} if levels > 1 else None)

        def write(i: int) -> None:
            img.write_sample(i, sample)

        finish = out.close
    ready = time.monotonic() - _STARTED
    if ready > DELAY:
        print(f"warning: setup took {ready:.1f} s > {DELAY} s: the profile includes some of it",
              file=sys.stderr)
    time.sleep(max(0.0, DELAY + 0.5 - ready))
    t0 = time.perf_counter()
    for i in range(n):
        write(i)
    finish()
    seconds = time.perf_counter() - t0
    print(f"{engine}: {n * sample.nbytes / seconds / 1e6:.0f} MB/s over {seconds:.2f} s", flush=True)
    time.sleep(1.0)  # perf may still be recording; stay out of the next phase


def report(data: Path, top: int) -> None:
    by_dso: collections.Counter[str] = collections.Counter()
    by_sym: collections.Counter[str] = collections.Counter()
    out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso,sym",
                          "-F", "sample,dso,sym"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit():
            count, dso, sym = int(parts[0]), parts[1], parts[2]
            by_dso[dso] += count
            by_sym[sym.strip()] += count
    total = sum(by_dso.values())
    print(f"\nCPU samples of the stream (all threads): {total:,}")
    grouped = 0
    for name, keys in GROUPS:
        count = sum(c for dso, c in by_dso.items() if any(k in dso for k in keys))
        grouped += count
        print(f"  {name:<22}{count:>9,}  {100 * count / max(total, 1):5.1f}%")
    print(f"  {'other':<22}{total - grouped:>9,}  {100 * (total - grouped) / max(total, 1):5.1f}%")
    print(f"\ntop {top} symbols:")
    for sym, count in by_sym.most_common(top):
        print(f"  {count:>8,}  {sym}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=("ngff-writer", "ngff-direct", "tensorstore"), default="ngff-writer")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--chunks", choices=sorted(CHUNK_CHOICES), default="16x256x256")
    p.add_argument("--levels", type=int, default=1, help="2x2-mean pyramid levels, level 0 included")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.engine, args.samples, Path(args.path), args.levels)
        return 0
    if shutil.which("perf") is None:
        p.error("Linux perf is needed (apt-get install linux-perf)")
    root = Path(tempfile.mkdtemp(prefix="ngff-profile-", dir=args.tmpdir))
    try:
        warm_page_cache(root, args.samples * 4 * math.prod(SAMPLE_SHAPE))
        data = root / "perf.data"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--engine", args.engine,
               "--samples", str(args.samples), "--levels", str(args.levels), "--path", str(root / "out.zarr")]
        subprocess.run(["perf", "record", "-q", "-D", str(int(DELAY * 1000)), "-o", str(data),
                        "--", *cmd], check=True)
        report(data, args.top)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
