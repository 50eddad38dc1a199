"""Export predictions of several images, sample by sample, and resume after a crash.

Run it twice: the first run "crashes" half-way (``--crash-after``), the second run
reopens the output, skips every sample already stored and completes the images.

    python examples/predict_and_resume.py out.zarr --crash-after 5
    python examples/predict_and_resume.py out.zarr
    ngff-writer status out.zarr
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import ngff_writer as nw

IMAGES = {"fish_01": 6, "fish_02": 4}  # image name -> number of samples (S)
SAMPLE_SHAPE = (2, 16, 128, 128)  # c z y x predicted per sample


def model(raw: np.ndarray) -> np.ndarray:
    """A stand-in network: two output channels from one input channel."""
    return np.stack([raw, np.sqrt(np.abs(raw))]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--crash-after", type=int, default=None, help="stop after N samples")
    args = parser.parse_args(argv)

    # mode="a" creates the output on the first run and reopens it on the next ones.
    with nw.open_output(args.out, mode="a") as out:
        # Declare every image first: each is valid OME-Zarr, viewable while it fills.
        images = [
            out.create_image(
                name, (n_samples, *SAMPLE_SHAPE), "sczyx", "float32",
                scale={"z": 2.0, "y": 0.4, "x": 0.4}, units="micrometer",
                channel_names=["signal", "confidence"], channel_colors=["00FF00", "FF00FF"],
                # One level below full resolution (64 x 64), built as samples arrive; a
                # 128 x 128 plane fits in one chunk, so "auto" would build none.
                pyramid=1,
                exist_ok=True,  # same settings as last time: resume instead of refusing
            )
            for name, n_samples in IMAGES.items()
        ]
        written = 0
        for image in images:
            for index in image.pending_samples():  # everything already stored is skipped
                raw = np.random.default_rng(index).normal(size=SAMPLE_SHAPE[1:]).astype(np.float32)
                image.write_sample(index, model(raw))
                written += 1
                if args.crash_after is not None and written >= args.crash_after:
                    print(f"simulated crash after {written} samples", file=sys.stderr)
                    return 1
        for progress in out.status():
            print(f"{progress.name}: {progress.done}/{progress.total} samples, {progress.levels} levels, "
                  f"{'complete' if progress.complete else 'in progress'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
