"""Export a dask array of predictions on a dask.distributed cluster, and resume it.

A stand-in model runs with ``dask.array.map_blocks`` on a ``LocalCluster`` of two worker
processes; each block is stored by the worker that computed it (whole chunks, log records
after the data). Run it twice to see a re-run compute only what was not stored:

    python examples/dask_cluster.py out.zarr --fail-from 5   # the model fails on samples 5-7
    python examples/dask_cluster.py out.zarr                 # computes samples 5-7 only
    ngff-writer status out.zarr

For S3, give an ``s3://`` URL and ``--endpoint`` (credentials from the environment).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any

import dask.array as da
import numpy as np

from ngff_writer.dask import to_image

SHAPE = (8, 2, 16, 256, 256)  # s c z y x
BLOCKS = (1, 1, 8, 128, 128)  # the dask blocks; the image gets the same chunks


def model(block: np.ndarray, block_info: dict[Any, Any] | None = None, fail_from: int | None = None,
          calls: str | None = None) -> np.ndarray:
    """A stand-in network, which fails on samples from ``fail_from`` on (as a lost node would)."""
    sample = block_info[0]["array-location"][0][0] if block_info else 0
    if fail_from is not None and sample >= fail_from:
        raise RuntimeError(f"the node predicting sample {sample} went away")
    if calls:  # for the tests: which blocks were computed
        with open(calls, "a") as f:
            f.write(f"{sample}\n")
    return np.tanh(block).astype(np.float32)


def predictions(fail_from: int | None = None, calls: str | None = None) -> da.Array:
    raw = da.from_array(np.random.default_rng(0).normal(size=SHAPE).astype(np.float32), chunks=BLOCKS)
    return da.map_blocks(partial(model, fail_from=fail_from, calls=calls), raw, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output directory, or an s3:// URL")
    parser.add_argument("--fail-from", type=int, default=None, help="the model fails from this sample on")
    parser.add_argument("--endpoint", default=None, help="S3 endpoint URL, for an s3:// output")
    parser.add_argument("--calls", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = {"client_kwargs": {"endpoint_url": args.endpoint}} if args.endpoint else None

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster):
        try:
            # dask's token of the graph would tell the failing run from the re-run (its
            # fail_from differs); the model is the same, so name it: the same job goes on.
            progress = to_image(predictions(args.fail_from, args.calls), args.out, "embryo", "sczyx",
                                fingerprint="stand-in model: tanh",
                                storage_options=options, scale={"z": 2.0, "y": 0.4, "x": 0.4},
                                units="micrometer", channel_names=["nuclei", "membranes"])
        except RuntimeError as exc:
            print(f"the export failed ({exc}); what was stored stays: run it again", file=sys.stderr)
            return 1
    print(f"embryo: {progress.done}/{progress.total} samples, "
          f"{'complete' if progress.complete else 'in progress'}, {progress.levels} levels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
