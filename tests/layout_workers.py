"""Bodies of the spawned writers of test_labels.py and test_plate.py (importable by children)."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np

import ngff_writer as nw

PLATE = {"rows": 2, "columns": 3, "wells": [("A", "1"), ("A", "3"), ("B", "2")], "fields": 2,
         "shape": (2, 40, 48), "axes": "cyx", "dtype": "uint16", "chunks": (1, 16, 16)}


def field_data(row: str, column: str, field: int) -> np.ndarray:
    """What every writer writes into one field: the same bytes whoever writes it."""
    seed = (ord(row) * 100 + int(column)) * 10 + field
    return np.random.default_rng(seed).integers(0, 4000, PLATE["shape"]).astype(np.uint16)


def write_plate_fields(root: str, rank: int, world: int, barrier: mp.synchronize.Barrier) -> None:
    """Declare the plate (every writer at once) and write every ``world``-th field, tile by tile."""
    barrier.wait(timeout=60)
    with nw.open_output(root, mode="a") as out:
        plate = out.create_plate("plate", PLATE["rows"], PLATE["columns"], PLATE["shape"], PLATE["axes"],
                                 PLATE["dtype"], wells=PLATE["wells"], fields=PLATE["fields"],
                                 chunks=PLATE["chunks"], exist_ok=True)
        fields = [(r, c, f) for r, c in plate.wells for f in range(PLATE["fields"])]
        for r, c, f in fields[rank::world]:
            image, data = plate.field(r, c, f), field_data(r, c, f)
            for y in range(0, 40, 20):  # two regions per field: tiles, not whole samples
                image.write_region(0, data[:, y:y + 20], (y, 0))


def add_label(root: str, name: str, barrier: mp.synchronize.Barrier) -> None:
    """Declare one label of the image ``raw`` at the same moment as other writers, and fill it."""
    barrier.wait(timeout=60)
    with nw.open_output(root, mode="a") as out:
        label = out.create_labels("raw", name, "uint16", colors={1: "FF0000"})
        for s in range(label.n_samples):
            label.write_sample(s, np.full(label.spec.layout.sample_shape, len(name), np.uint16))


def series_data(index: int) -> np.ndarray:
    """Series ``index`` of the collection tests: 2 samples of 48 x 40."""
    return np.random.default_rng(index).random((2, 48, 40), dtype=np.float32)


def write_series(root: str, indices: list[int], barrier: mp.synchronize.Barrier) -> None:
    """Declare and write some series of a collection while another writer does the others."""
    barrier.wait(timeout=60)
    with nw.open_output(root, mode="a") as out:
        for i in indices:
            image = out.create_series(i, (2, 48, 40), "syx", title=f"source_{i}.tif", chunks=(1, 16, 16))
            for s, sample in enumerate(series_data(i)):
                image.write_sample(s, sample)
