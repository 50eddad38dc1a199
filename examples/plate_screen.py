"""Write an HCS plate from several processes: every field of every well an image.

The plate (2 rows x 3 columns, 2 fields per well) is declared by every worker at once
(``exist_ok=True``: the same declaration, written once); each worker then predicts and
writes its share of the fields. The plate is complete when all its fields are; napari
opens it as one stitched image and ``ngff-writer status`` shows it well by well.

    python examples/plate_screen.py plate.zarr --workers 2
    ngff-writer status plate.zarr
    napari --plugin napari-ome-zarr plate.zarr/screen
"""

from __future__ import annotations

import argparse
import multiprocessing as mp

import numpy as np

import ngff_writer as nw

ROWS, COLUMNS, FIELDS = ["A", "B"], ["1", "2", "3"], 2
FIELD_SHAPE = (2, 256, 256)  # c y x


def predict(row: str, column: str, field: int) -> np.ndarray:
    """A stand-in model's output for one field: two channels."""
    rng = np.random.default_rng([ord(row), int(column), field])
    return rng.gamma(2.0, 100.0, FIELD_SHAPE).astype(np.uint16)


def worker(out_path: str, rank: int, workers: int) -> None:
    with nw.open_output(out_path, mode="a") as out:
        plate = out.create_plate("screen", ROWS, COLUMNS, FIELD_SHAPE, "cyx", "uint16", fields=FIELDS,
                                 chunks=(1, 128, 128), channel_names=["DAPI", "GFP"],
                                 channel_colors=["0000FF", "00FF00"], exist_ok=True)
        fields = [(r, c, f) for r, c in plate.wells for f in range(FIELDS)]
        for r, c, f in fields[rank::workers]:
            plate.field(r, c, f).write_sample(0, predict(r, c, f))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with nw.open_output(args.out, mode="w"):
        pass  # an empty output every worker then opens with mode="a"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(args.out, k, args.workers)) for k in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        return 1
    with nw.open_output(args.out, mode="r") as out:
        progress = out.plate("screen").progress()
    print(f"plate screen: {progress.wells_done}/{progress.wells_total} wells, "
          f"{progress.fields_done}/{progress.fields_total} fields complete")
    return 0 if progress.complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
