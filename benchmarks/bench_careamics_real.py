"""CAREamics 0.3.5 itself: memory and time of its own writers against ngff-writer's route.

One tiny N2V model (trained for 2 steps, not timed) predicts the same TIFF files, tiled,
in four ways, each in a fresh process, interleaved over repeats:

``in-memory``        ``careamist.predict(...)``: CAREamics keeps every prediction and
                     returns them (no file): the reference of what prediction itself costs
``careamics-tiff``   ``careamist.predict_to_disk(write_type="tiff")``: CAREamics' tiff writer
``careamics-zarr``   ``careamist.predict_to_disk(write_type="zarr")``: CAREamics' zarr writer
``ngff-writer``      ``ngff_writer.careamics.predict_to_ome_zarr``: CAREamics' trainer, model
                     and datamodule, its writer callback streaming into OME-Zarr (with the
                     default pyramid), no prediction kept in memory

Reported: wall time of the prediction call, and peak RSS above the RSS just before it (the
peak is reset with ``/proc/self/clear_refs`` after training), medians over repeats.

Usage::

    python benchmarks/bench_careamics_real.py                 # 4 files of 16x512x512, 3 repeats
    python benchmarks/bench_careamics_real.py --files 8 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ENGINES = ("in-memory", "careamics-tiff", "careamics-zarr", "ngff-writer")
TILE = {"tile_size": (128, 128), "tile_overlap": (32, 32), "batch_size": 8}


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def worker(engine: str, raw: Path, out: Path) -> dict:
    import numpy as np
    from careamics import CAREamist
    from careamics.config import create_n2v_config

    config = create_n2v_config(experiment_name="bench", data_type="tiff", axes="SYX",
                               patch_size=(64, 64), batch_size=8, num_epochs=1, num_steps=2,
                               n_val_patches=2)
    config.training_config.trainer_params.update(accelerator="cpu", devices=1)
    files = sorted(raw.glob("*.tif"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        careamist = CAREamist(config, work_dir=out / "work", enable_progress_bar=False)
        careamist.train(train_data=files[0])
        # Warm up the prediction path on a small array (imports, first-call costs).
        careamist.predict(np.zeros((1, 128, 128), np.float32), axes="SYX", data_type="array")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _rss_kb("VmRSS:")
        t0 = time.perf_counter()
        predict = dict(axes="SYX", data_type="tiff", **TILE)
        if engine == "in-memory":
            kept, _ = careamist.predict(files, **predict)
            assert len(kept) == len(files)
        elif engine.startswith("careamics-"):
            careamist.predict_to_disk(files, prediction_dir=out / "pred",
                                      write_type=engine.split("-")[1], **predict)
        else:
            from ngff_writer.careamics import predict_to_ome_zarr

            written = predict_to_ome_zarr(careamist, files, out / "pred", predict=predict)
            assert len(written) == len(files)
        seconds = time.perf_counter() - t0
    peak = _rss_kb("VmHWM:")
    stored = sum(p.stat().st_size for p in (out / "pred").rglob("*") if p.is_file()) \
        if (out / "pred").exists() else 0
    return {"engine": engine, "seconds": seconds, "peak_over_base_mb": (peak - base) / 1024,
            "stored_mb": stored / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--samples", type=int, default=16, help="samples per file")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--json", help="save the runs here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.raw), Path(args.out))))
        return 0

    import numpy as np
    import tifffile

    engines = args.engines.split(",")
    root = Path(tempfile.mkdtemp(prefix="bench-careamics-"))
    raw = root / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for k in range(args.files):
        image = rng.normal(0.5, 0.1, (args.samples, args.size, args.size)).astype(np.float32)
        tifffile.imwrite(raw / f"img_{k}.tif", image)
    mb = args.files * args.samples * args.size * args.size * 4 / 1e6
    print(f"{args.files} TIFF files of {args.samples}x{args.size}x{args.size} float32 ({mb:.0f} MB), "
          f"tiles {TILE['tile_size']} overlap {TILE['tile_overlap']}; {args.repeats} repeats", flush=True)
    runs = []
    for rep in range(args.repeats):
        order = engines[rep % len(engines):] + engines[:rep % len(engines)]
        for engine in order:
            out = root / f"{engine}-{rep}"
            cmd = [sys.executable, __file__, "--worker", engine, "--raw", str(raw), "--out", str(out)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{engine} failed")
            r = json.loads(done.stdout.strip().splitlines()[-1]) | {"repeat": rep}
            runs.append(r)
            print(f"  repeat {rep} {engine:<15} {r['seconds']:6.1f} s  peak over base "
                  f"{r['peak_over_base_mb']:7.0f} MB  stored {r['stored_mb']:6.0f} MB", flush=True)
    print(f"\n{'engine':<16}{'seconds':>9}{'x in-memory':>13}{'peak MB over base':>19}{'stored MB':>11}")
    ref = statistics.median(r["seconds"] for r in runs if r["engine"] == "in-memory") \
        if "in-memory" in engines else None
    for engine in engines:
        rows = [r for r in runs if r["engine"] == engine]
        sec = statistics.median(r["seconds"] for r in rows)
        peak = statistics.median(r["peak_over_base_mb"] for r in rows)
        stored = statistics.median(r["stored_mb"] for r in rows)
        ratio = f"{sec / ref:.2f}" if ref else "-"
        print(f"{engine:<16}{sec:>9.1f}{ratio:>13}{peak:>19.0f}{stored:>11.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
