"""Predict with a trained CAREamist straight into OME-Zarr (CAREamics 0.3.5 itself).

Trains a tiny Noise2Void model for a few steps on synthetic noise (so that it runs in
seconds on a CPU), then predicts two images, tiled, with ``predict_to_ome_zarr``: each
image streams into ``OUT/array_<i>.ome.zarr`` as its tiles arrive, with a pyramid and
contrast windows, instead of being stitched in memory and written at the end.

    pip install 'ngff-writer[careamics]'
    python examples/careamist_to_ome_zarr.py OUT
    ngff-writer status OUT

Each run trains anew, so its weights differ from the last run's: a second run into the
same OUT is refused (``OutputExistsError`` naming both fingerprints) before anything is
predicted, unless ``--overwrite``, which replaces the images. The same model predicting
again would skip the complete images instead.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="directory for the .ome.zarr outputs")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the images a model trained earlier predicted in OUT")
    args = parser.parse_args(argv)

    from careamics import CAREamist
    from careamics.config import create_n2v_config

    from ngff_writer.careamics import predict_to_ome_zarr

    rng = np.random.default_rng(0)
    config = create_n2v_config(experiment_name="tiny", data_type="array", axes="SYX",
                               patch_size=(32, 32), batch_size=8, num_epochs=1, num_steps=2,
                               n_val_patches=2)
    config.training_config.trainer_params.update(accelerator="cpu", devices=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CAREamics' advice about a model this small
        careamist = CAREamist(config, work_dir=f"{args.out}/training", enable_progress_bar=False)
        careamist.train(train_data=rng.random((4, 64, 64), dtype=np.float32))
        images = [rng.random((3, 96, 128), dtype=np.float32) for _ in range(2)]
        written = predict_to_ome_zarr(
            careamist, images, args.out,
            predict={"axes": "SYX", "data_type": "array", "tile_size": (32, 32),
                     "tile_overlap": (8, 8)},
            tile_mode="blend",  # average the overlaps; the default "crop" matches CAREamics exactly
            overwrite=args.overwrite,
        )
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
