"""The public API is pinned: a change to it is a deliberate change to this list."""

import ngff_writer


def test_public_names():
    assert sorted(ngff_writer.__all__) == sorted([
        "Blend", "BufferFullError", "ClosedError", "Context", "CorruptError", "DirectLocalStore",
        "DuplicateImageError",
        "FormatVersionError", "Image", "ImageFinalizedError", "ImageNotFinalError", "ImageReplacedError",
        "ImageSpec",
        "InvalidAxesError", "InvalidChunksError", "LossyCastError", "MetadataError", "NgffWriterError",
        "NotAnOutputError", "NotOursError", "Output",
        "OutputExistsError", "OutputInUseError", "OutputNotFoundError", "OverlapError", "Plate",
        "PlateProgress", "Progress", "Pyramid", "ReadOnlyError",
        "SampleIndexError", "ShapeMismatchError", "SpecError", "SpecMismatchError", "StoreError",
        "UnclosedOutputWarning", "UnknownImageError", "UnsupportedDtypeError", "WriteError", "__version__",
        "default_context", "open_output",
        "repair_output", "write_image",
    ])
    for name in ngff_writer.__all__:
        assert hasattr(ngff_writer, name)


def test_errors_share_one_base_and_builtin_mixins():
    errors = [getattr(ngff_writer, n) for n in ngff_writer.__all__ if n.endswith("Error")]
    assert all(issubclass(e, ngff_writer.NgffWriterError) for e in errors)
    assert issubclass(ngff_writer.OutputExistsError, FileExistsError)
    assert issubclass(ngff_writer.SampleIndexError, IndexError)
    assert issubclass(ngff_writer.ShapeMismatchError, ValueError)
    assert issubclass(ngff_writer.UnknownImageError, KeyError)
    assert issubclass(ngff_writer.CorruptError, ngff_writer.StoreError)
    assert issubclass(ngff_writer.FormatVersionError, OSError)
    assert issubclass(ngff_writer.NotAnOutputError, ngff_writer.StoreError)
    assert issubclass(ngff_writer.NotOursError, ngff_writer.OutputExistsError)
    assert issubclass(ngff_writer.ImageReplacedError, ngff_writer.StoreError)
    assert issubclass(ngff_writer.UnclosedOutputWarning, UserWarning)


def test_core_imports_no_edge_module():
    import subprocess
    import sys

    code = ("import sys, ngff_writer; bad = [m for m in ('ngff_writer.cli', 'ngff_writer.cli._demo', "
            "'rich', 'napari') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


#: The modules a user imports, and what each offers; everything else is internal.
PUBLIC_MODULES = {
    "ngff_writer.careamics": ["ImageRegionData", "OmeZarrWriteStrategy", "attach", "model_fingerprint",
                              "output_path", "predict_to_ome_zarr"],
    "ngff_writer.lightning": ["FinalizePredictions", "OmeZarrPredictionWriter"],
    "ngff_writer.dask": ["aligned_chunks", "store_blocks", "to_image"],
    "ngff_writer.tiling": ["Tile", "tile_starts", "tiles"],
    "ngff_writer.testing": ["LocalS3", "abandon"],
    "ngff_writer.reading": ["ChannelInfo", "ImageInfo", "LevelInfo", "Validation", "describe_image",
                            "validate_image"],
    "ngff_writer.cli": ["EXIT_NO_IMAGE", "EXIT_PROBLEM", "EXIT_STORE", "EXIT_USAGE", "cli", "main"],
}


def test_public_modules_offer_their_names():
    import importlib

    for module, names in PUBLIC_MODULES.items():
        found = importlib.import_module(module)
        assert sorted(found.__all__) == sorted(names), module
        assert all(hasattr(found, name) for name in names), module


def test_every_other_module_is_internal():
    # A module is public only by being listed above (or being the package, its errors and
    # version): every other one sits under a name with a leading underscore.
    from pathlib import Path

    import ngff_writer

    root = Path(ngff_writer.__file__).parent
    public = {m.removeprefix("ngff_writer.").replace(".", "/") for m in PUBLIC_MODULES}
    public |= {"__init__", "errors", "_version", "cli/__init__", "cli/__main__"}
    exposed = []
    for path in root.rglob("*.py"):
        name = path.relative_to(root).with_suffix("").as_posix()
        if name not in public and not any(part.startswith("_") for part in name.split("/")):
            exposed.append(name)
    assert not exposed, f"modules neither public nor underscored: {sorted(exposed)}"
