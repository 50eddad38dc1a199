"""Helpers shared by the ``bench_*.py`` scripts.

Memory (``VmHWM`` / ``VmRSS``), the imported library's fingerprint and git state, the codec
presets expressed for zarr-python and tensorstore, a summing timer, one worker's
measurement, and the orchestration pieces: one fresh worker subprocess per run,
interleaved and rotated repeats, and a ``sync`` + settle pause between runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

SAMPLE_SHAPE = (1, 32, 512, 512)
#: The two chunk shapes the Performance issue asks for (z, y, x): the project's default
#: and CAREamics' (``OmeZarrWriteStrategy``'s default for 3-D predictions).
CHUNK_CHOICES = {"16x256x256": (16, 256, 256), "32x128x256": (32, 128, 256)}


def _chosen_chunks() -> tuple[int, ...]:
    # Read at import, before any script binds CHUNKS, from ``--chunks`` on the command line
    # or, in a worker subprocess, from the environment its orchestrator set.
    argv = sys.argv
    name = argv[argv.index("--chunks") + 1] if "--chunks" in argv[:-1] else None
    name = name or os.environ.get("NGFF_BENCH_CHUNKS", "16x256x256")
    if name not in CHUNK_CHOICES:
        raise SystemExit(f"--chunks must be one of {sorted(CHUNK_CHOICES)}, not {name!r}")
    os.environ["NGFF_BENCH_CHUNKS"] = name
    return (1, 1, *CHUNK_CHOICES[name])


CHUNKS = _chosen_chunks()
CODECS = ("default", "blosc-lz4", "zstd")
MB = 1e6
#: The Performance issue's bound on a writer's peak RSS over its post-import baseline, in MB.
EXTRA_RSS_MB = 150


# ---- memory ---------------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss() -> float:
    """Resident set size of this process now, in bytes."""
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024.0
    import psutil

    return float(psutil.Process().memory_info().rss)


def peak_rss() -> float:
    """High-water resident set size of this process, in bytes."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        if sys.platform == "darwin":
            kb //= 1024  # bytes there
    return kb * 1024.0


def reset_peak_rss() -> bool:
    """Reset this process's high-water resident set (``VmHWM``) to its RSS now, so that
    :func:`peak_rss` reports the peak from here on (Linux ``/proc/self/clear_refs``).
    Returns False where that is not possible; the peak then covers the whole process."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---- what is measured -----------------------------------------------------------------------
def library_fingerprint() -> dict[str, str]:
    """Where ngff_writer is imported from and a hash of its sources (to catch edits mid-run)."""
    import hashlib

    import ngff_writer

    pkg = Path(ngff_writer.__file__).parent
    h = hashlib.sha1()
    for f in sorted(pkg.rglob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return {"lib_path": str(pkg), "lib_hash": h.hexdigest()[:12]}


def git_state(pkg: str) -> str:
    """``<commit>[+uncommitted changes]`` of the repository holding ``pkg``, if any."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", pkg, *a], capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--", ".")
    return commit + (" + uncommitted changes" if dirty else "")


def library_lines(results: list[dict]) -> tuple[list[tuple[str, str]], list[str]]:
    """The distinct (path, hash) of ngff_writer seen by the workers, and lines describing them."""
    libs = sorted({(r["lib_path"], r["lib_hash"]) for r in results})
    lines = [f"ngff_writer from {libs[0][0]} ({git_state(libs[0][0])}), sources {libs[0][1]}"]
    if len(libs) > 1:
        lines.append(f"WARNING: the library changed during the run ({len(libs)} versions): "
                     "results are not comparable")
    return libs, lines


def disk_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---- codecs ---------------------------------------------------------------------------------
def zarr_codec(name: str) -> Any:
    """The zarr v3 codec that ngff-writer's preset ``name`` stands for."""
    from zarr.codecs import BloscCodec, ZstdCodec

    return {
        "default": lambda: BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
        "blosc-lz4": lambda: BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        "zstd": lambda: ZstdCodec(level=3),
    }[name]()


def tensorstore_codecs(name: str) -> list[dict[str, Any]]:
    """The same codec chain in tensorstore's zarr3 JSON."""
    raw = {"name": "bytes", "configuration": {"endian": "little"}}
    comp = {
        "default": {"name": "blosc", "configuration": {
            "cname": "zstd", "clevel": 3, "shuffle": "shuffle", "typesize": 4, "blocksize": 0}},
        "blosc-lz4": {"name": "blosc", "configuration": {
            "cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 4, "blocksize": 0}},
        "zstd": {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
    }[name]
    return [raw, comp]


def tensorstore_spec(path: Path, shape: Sequence[int], codec: str) -> dict[str, Any]:
    """A zarr3 / file-kvstore spec with the benchmark chunks and ``codec``."""
    return {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path)},
        "metadata": {
            "shape": list(shape),
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNKS)}},
            "chunk_key_encoding": {"name": "default"},
            "codecs": tensorstore_codecs(codec),
            "fill_value": 0,
        },
    }


def tensorstore_levels(path: Path, n: int, levels: int, codec: str) -> Callable[[int, Any], None]:
    """Open tensorstore arrays for ``levels`` levels (level 0 and 2x2 means below) of ``n`` samples.

    Returns ``write(i, sample)``: stores the sample at level 0 and, computed with
    ``ts.downsample`` while level 0 is written, its reductions at every level below; it
    returns once all of them are stored. Chunks are the benchmark's, cut to each level's shape.
    """
    import tensorstore as ts

    shape = (n, *SAMPLE_SHAPE)
    arrays = []
    for k in range(levels):
        level_shape = (*shape[:-2], shape[-2] >> k, shape[-1] >> k)
        spec = tensorstore_spec(path / str(k), level_shape, codec)
        spec["metadata"]["chunk_grid"]["configuration"]["chunk_shape"] = [
            min(c, s) for c, s in zip(CHUNKS, level_shape, strict=True)]
        arrays.append(ts.open(spec, create=True, delete_existing=True).result())

    def write(i: int, sample: Any) -> None:
        pending = [arrays[0][i].write(sample)]
        level = sample
        for k in range(1, levels):
            level = ts.downsample(ts.array(level), [1, 1, 2, 2], "mean").read().result()
            pending.append(arrays[k][i].write(level))
        for future in pending:
            future.result()

    return write


# ---- timing ---------------------------------------------------------------------------------
class Timer:
    """Sum of the wall time of the timed blocks."""

    def __init__(self) -> None:
        self.total = 0.0
        self.calls = 0

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.total += time.perf_counter() - self._t0
        self.calls += 1


def resident_source(noise: float) -> Any:
    """The benchmark samples' generator, its buffer touched (so it counts in the baseline)."""
    import numpy as np
    from _samples import SampleSource

    source = SampleSource(SAMPLE_SHAPE, noise=noise, seed=0)
    source.sample(0)
    source.rng = np.random.default_rng(1)  # sample(0) drew noise offsets: start over
    return source


def measure(engine: str, n: int, codec: str, path: Path, source: Any,
            run: Callable[[Timer], dict[str, Any] | None],
            verify: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one engine in this worker process and return what every benchmark reports.

    ``run(timer)`` writes ``n`` samples of ``source`` to ``path``, timing with ``timer``
    what counts, and may return counters of its own; ``verify()`` then checks the output.
    The memory baseline is taken here: after the caller's imports and source setup.
    """
    baseline = current_rss()
    timer = Timer()
    t0 = time.perf_counter()
    counters = run(timer) or {}
    wall = time.perf_counter() - t0
    peak = peak_rss()
    nbytes = n * source.nbytes
    size = disk_bytes(path)
    return {
        "engine": engine,
        "samples": n,
        "codec": codec,
        "bytes": nbytes,
        "write_s": timer.total,
        "wall_s": wall,
        "mb_s": nbytes / MB / timer.total,
        "peak_rss_mb": peak / MB,
        "baseline_rss_mb": baseline / MB,
        "peak_over_baseline_mb": (peak - baseline) / MB,
        "disk_bytes": size,
        "ratio_compression": nbytes / max(size, 1),
        **counters,
        **library_fingerprint(),
        **verify(),
    }


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summary_row(rows: list[dict]) -> dict[str, Any]:
    """What every benchmark's table says of the repeats of one engine (and S)."""
    return {
        "engine": rows[0]["engine"],
        "samples": rows[0]["samples"],
        "repeats": len(rows),
        "mb_s_median": median(rows, "mb_s"),
        "mb_s_min": min(r["mb_s"] for r in rows),
        "mb_s_max": max(r["mb_s"] for r in rows),
        "write_s_median": median(rows, "write_s"),
        "peak_rss_mb_median": median(rows, "peak_rss_mb"),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rows),
        "baseline_rss_mb_median": median(rows, "baseline_rss_mb"),
        "peak_over_baseline_mb_median": median(rows, "peak_over_baseline_mb"),
        "peak_over_baseline_mb_max": max(r["peak_over_baseline_mb"] for r in rows),
        "disk_mb_median": median(rows, "disk_bytes") / MB,
        "compression_ratio": median(rows, "ratio_compression"),
        "verified": all(r["verified"] for r in rows),
    }


def paired(results: list[dict], a: str, b: str, samples: int | None = None) -> list[float]:
    """Throughput of engine ``a`` over ``b`` within each repeat that ran both (back to back,
    so the machine's drift cancels), optionally at ``samples`` only."""
    out = []
    for rep in sorted({r["repeat"] for r in results}):
        run = [r for r in results if r["repeat"] == rep
               and (samples is None or r["samples"] == samples)]
        x = [r["mb_s"] for r in run if r["engine"] == a]
        y = [r["mb_s"] for r in run if r["engine"] == b]
        if x and y:
            out.append(x[0] / y[0])
    return out


# ---- orchestration --------------------------------------------------------------------------
def arguments(doc: str, engines: Sequence[str]) -> argparse.ArgumentParser:
    """The options every streaming benchmark takes (a script adds its own)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=None, help="samples per run (64; --quick: 8)")
    p.add_argument("--repeats", type=int, default=None, help="repeats (3; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 samples, 1 repeat")
    p.add_argument("--engines", default=",".join(engines))
    p.add_argument("--codec", choices=CODECS, default="default")
    p.add_argument("--noise", type=float, default=0.01, help="noise std of the samples")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to pause (after a sync) between runs")
    p.add_argument("--chunks", choices=sorted(CHUNK_CHOICES), default="16x256x256",
                   help="chunk shape (z x y x x) of every engine")
    p.add_argument("--memory", choices=("warm", "as-is"), default="warm",
                   help="warm: before every run, write and delete a scratch file as large as "
                        "the stream, so every engine starts from just-freed page-cache memory; "
                        "as-is: start from whatever the previous run left")
    p.add_argument("--tmpdir", default=None, help="where outputs go (local disk; deleted)")
    p.add_argument("--json", default=None, help="save raw results and the summary here")
    p.add_argument("--worker", choices=engines, help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None,
          engines: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv``, fill the ``--quick``-dependent defaults; return the engines to run."""
    args = p.parse_args(argv)
    if args.samples is None:
        args.samples = 8 if args.quick else 64
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    chosen = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(chosen) - set(engines)
    if unknown:
        p.error(f"unknown engines {sorted(unknown)}; choose from {tuple(engines)}")
    return args, chosen


def run_worker(cmd: list[str], path: Path, label: str) -> dict:
    """Run one worker subprocess, delete its output directory (``path.parent``) afterwards and
    return the JSON object it printed last."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"worker {label} failed with code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interleaved(tasks: list[Any], repeats: int) -> Iterator[tuple[int, Any]]:
    """``(repeat, task)`` interleaved (A B C, A B C, ...) and rotated by one each repeat
    (A B C, B C A, ...) so that no task always follows the same one."""
    for rep in range(repeats):
        k = rep % len(tasks)
        for task in tasks[k:] + tasks[:k]:
            yield rep, task


def run_repeats(tasks: list[Any], args: Any, name: str, run: Callable[[Any, Path], dict],
                line: Callable[[int, Any, dict], str] | None = None,
                announce_root: bool = False) -> list[dict]:
    """Run every task ``args.repeats`` times, :func:`interleaved`, and return the results.

    Each run is ``run(task, root)`` under one temporary root (``args.tmpdir``), deleted at
    the end whatever happens; the page cache settles after each run (``args.settle``), the
    result gets its ``"repeat"``, and ``line(repeat, task, result)`` is printed.
    """
    results: list[dict] = []
    root = Path(tempfile.mkdtemp(prefix=f"ngff-bench-{name}-", dir=args.tmpdir))
    if announce_root:
        print(f"outputs under {root} (deleted after each run)", flush=True)
    try:
        for rep, task in interleaved(tasks, args.repeats):
            if getattr(args, "memory", "as-is") == "warm":
                warm_page_cache(root, args.samples * 4 * math.prod(SAMPLE_SHAPE))
            r = run(task, root)
            settle(args.settle)
            r["repeat"] = rep
            results.append(r)
            if line is not None:
                print(line(rep, task, r), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def rss_when_doubled(args: Any, engine: str, results: list[dict],
                     run: Callable[[int, Path], dict]) -> str:
    """Run ``engine`` once more at twice ``args.samples`` and compare its extra peak RSS.

    ``run(n, root)`` runs the engine at ``n`` samples under ``root``. Returns the line
    "extra peak RSS at S (median of the repeats) -> at 2S" for the verdict: a writer's
    memory must stay within ``EXTRA_RSS_MB`` and not grow with the number of samples.
    """
    n = args.samples
    doubled = argparse.Namespace(**{**vars(args), "samples": 2 * n, "repeats": 1})
    (r,) = run_repeats([2 * n], doubled, "double", run)
    at_n = median([x for x in results if x["engine"] == engine], "peak_over_baseline_mb")
    at_2n = r["peak_over_baseline_mb"]
    ok = max(at_n, at_2n) <= EXTRA_RSS_MB
    return (f"{engine}: extra peak RSS S={n} {at_n:.0f} MB (median) -> S={2 * n} {at_2n:.0f} MB "
            f"({at_2n - at_n:+.0f} MB) -> {'PASS' if ok else 'FAIL'} (<= {EXTRA_RSS_MB} MB at both)")


def warm_page_cache(root: Path, nbytes: int) -> None:
    """Write ``nbytes`` through the page cache into a scratch file, delete it, flush.

    Why: on these VMs the kernel's cost to copy written data into the page cache depends on
    where its pages come from. Pages just freed (a deleted output) are cheap; pages the
    guest has not touched for a while cost 2-3x more (measured: tensorstore's 2 GiB stream
    spent 1.0 core-second in the kernel after a buffered run, 3.2 after a direct-I/O one).
    Without this, a writer that bypasses the page cache would hand its successor the
    expensive state. Starting every run from the cheap state favours page-cache writers,
    which keeps a comparison against them conservative.
    """
    block = os.urandom(16 << 20)
    scratch = root / "warm.scratch"
    with open(scratch, "wb") as f:
        for _ in range(max(1, nbytes // len(block))):
            f.write(block)
    scratch.unlink()
    os.sync()


def settle(seconds: float) -> None:
    """Flush page-cache writeback of the previous run, then pause."""
    os.sync()  # the deleted output's writeback should not land in the next run
    time.sleep(seconds)


def report(args: Any, results: list[dict], table: list[dict], show_table: Callable[[], None],
           verdict_lines: list[str]) -> None:
    """Print the library versions, the table and the verdict; save everything as JSON if asked."""
    libs, lib_lines = library_lines(results)
    print()
    for line in lib_lines:
        print(line)
    show_table()
    print()
    for line in verdict_lines:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "library": libs, "results": results, "summary": table,
             "verdict": verdict_lines},
            indent=2))
