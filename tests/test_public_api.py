"""The public API is pinned: a change to it is a deliberate change to this list."""

import ngff_writer


def test_public_names():
    assert sorted(ngff_writer.__all__) == sorted([
        "Blend", "BufferFullError", "ClosedError", "Context", "CorruptError", "DirectLocalStore",
        "DuplicateImageError",
        "FormatVersionError", "Image", "ImageFinalizedError", "ImageReplacedError", "ImageSpec",
        "InvalidAxesError", "InvalidChunksError", "LossyCastError", "MetadataError", "NgffWriterError",
        "NotAnOutputError", "NotOursError", "Output",
        "OutputExistsError", "OutputInUseError", "OutputNotFoundError", "OverlapError", "Plate",
        "PlateProgress", "Progress", "Pyramid", "ReadOnlyError",
        "SampleIndexError", "ShapeMismatchError", "SpecError", "SpecMismatchError", "StoreError",
        "UnclosedOutputWarning", "UnknownImageError", "UnsupportedDtypeError", "WriteError", "__version__",
        "default_context", "open_output",
        "repair_output",
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

    code = ("import sys, ngff_writer; bad = [m for m in ('ngff_writer.cli', 'ngff_writer.demo', "
            "'rich', 'napari') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
