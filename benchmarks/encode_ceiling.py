"""How fast can two cores encode the benchmark's predictions? The ceiling of any writer.

Encodes the chunks of one 1x32x512x512 float32 sample (chunks 16x256x256, Blosc zstd-3
with byte shuffle, as ``bench_samples.py`` writes them) with numcodecs directly, on one
thread and on two threads at once, and reports MB/s of raw data; then a copy and a
fill-value scan (what zarr does per chunk besides encoding) for scale. Nothing is stored:
a writer that stores too can at best reach the two-thread figure on a 2-core machine.

    python benchmarks/encode_ceiling.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numcodecs
import numpy as np
from _samples import SampleSource
from numcodecs import blosc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
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


if __name__ == "__main__":
    main()
