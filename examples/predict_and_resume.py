"""Export predictions of several images, sample by sample; resume after a crash, re-run, retrain.

The first run crashes half-way (``--crash-after``: an exception in the loop); the second
reopens the output, skips every sample already stored and completes the images; a third
finds nothing to do. A retrained model (``--model v2``) is another job: refused before
anything is written, unless ``--overwrite`` replaces the images.

    python examples/predict_and_resume.py out.zarr --crash-after 5
    python examples/predict_and_resume.py out.zarr
    python examples/predict_and_resume.py out.zarr                       # nothing to do
    python examples/predict_and_resume.py out.zarr --model v2            # refused
    python examples/predict_and_resume.py out.zarr --model v2 --overwrite
    ngff-writer status out.zarr
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import ngff_writer as nw

IMAGES = {"fish_01": 6, "fish_02": 4}  # image name -> number of samples (S)
SAMPLE_SHAPE = (2, 16, 128, 128)  # c z y x predicted per sample


#: Stand-in networks by version: two output channels from one input channel.
GAIN = {"v1": 1.0, "v2": 3.0}


def model(raw: np.ndarray, version: str) -> np.ndarray:
    return np.stack([raw * GAIN[version], np.sqrt(np.abs(raw))]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--crash-after", type=int, default=None, help="crash after N samples")
    parser.add_argument("--model", default="v1", choices=sorted(GAIN), help="the model's version")
    parser.add_argument("--overwrite", action="store_true", help="replace images of another model")
    args = parser.parse_args(argv)

    # mode="a" creates the output on the first run and reopens it on the next ones.
    try:
        return export(args)
    except nw.OutputExistsError as exc:  # another model's images: nothing was written
        print(f"refused: {exc}", file=sys.stderr)
        return 2


def export(args: argparse.Namespace) -> int:
    # Each write_sample copies the sample and returns while it is stored in the background:
    # the model computes the next one meanwhile. The context holds the threads and the
    # budget of data in flight (here 64 MiB, a few samples); its threads end with it.
    with nw.Context(inflight_bytes=64 << 20) as context, \
            nw.open_output(args.out, mode="a", context=context) as out:
        # Declare every image first: each is valid OME-Zarr, viewable while it fills.
        images = [
            out.create_image(
                name, (n_samples, *SAMPLE_SHAPE), "sczyx", "float32",
                scale={"z": 2.0, "y": 0.4, "x": 0.4}, units="micrometer",
                channel_names=["signal", "confidence"], channel_colors=["00FF00", "FF00FF"],
                # One level below full resolution (64 x 64), built as samples arrive; a
                # 128 x 128 plane fits in one chunk, so "auto" would build none.
                pyramid=2,
                exist_ok=True,  # same settings as last time: resume instead of refusing
                # What makes the data (in a real job: a hash of the weights and settings).
                # The same one: this job again. Another: refused, or replaced if asked.
                fingerprint=f"stand-in model {args.model}",
                overwrite=args.overwrite,
            )
            for name, n_samples in IMAGES.items()
        ]
        written = 0
        for image in images:
            for index in image.pending_samples():  # everything already stored is skipped
                raw = np.random.default_rng(index).normal(size=SAMPLE_SHAPE[1:]).astype(np.float32)
                image.write_sample(index, model(raw, args.model))
                written += 1
                if args.crash_after is not None and written >= args.crash_after:
                    # What was written is kept however the run ends (with or without close()).
                    raise RuntimeError(f"simulated crash after {written} samples")
        print(f"{written} samples predicted")
        for progress in out.status():
            print(f"{progress.name}: {progress.done}/{progress.total} samples, {progress.levels} levels, "
                  f"{'complete' if progress.complete else 'in progress'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
